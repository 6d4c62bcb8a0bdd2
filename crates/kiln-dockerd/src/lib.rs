//! The subset of the Docker Engine API that CI jobs use — `docker build` (legacy builder),
//! `images`, `inspect`, `tag`, `rmi`, `push`, `login`, `save` and `load` — served on a unix
//! socket and mapped onto kiln's build engine and a small local image store. Containers are
//! not supported: those calls get a clear 501.
//!
//! ```no_run
//! # async fn demo(engine: kiln_engine::Engine) -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_dockerd::{DockerApi, DockerApiConfig};
//! let api = DockerApi::new(DockerApiConfig {
//!     engine,
//!     store_dir: "/var/lib/kiln/images".into(),
//! })
//! .await?;
//! // One socket per job; DOCKER_HOST=unix:///run/kiln/job-1/docker.sock
//! let handle = api.serve_unix("/run/kiln/job-1/docker.sock".as_ref()).await?;
//! // … the job runs `docker build -t registry:5000/app:1 . && docker push …` …
//! drop(handle); // stops serving and removes the socket
//! # Ok(()) }
//! ```

#![recursion_limit = "256"]

mod archive;
mod build;
mod context;
mod error;
mod forward;
mod images;
mod login;
mod push;
mod query;
mod registry_auth;
mod routes;
mod store;
mod stream;
mod system;

pub use error::ApiError;
pub use store::{ImageStore, StoreError};

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The Docker API version served (what `docker version` shows as the server's API version).
pub const API_VERSION: &str = "1.43";
/// The oldest API version clients may use.
pub const MIN_API_VERSION: &str = "1.24";

/// What the Docker API serves from.
pub struct DockerApiConfig {
    /// The build engine (cheap to clone; shared with the other doors).
    pub engine: kiln_engine::Engine,
    /// The local image store: names and image records. Blobs live in the engine's content store.
    pub store_dir: PathBuf,
}

/// State shared by every socket of one [`DockerApi`].
pub(crate) struct Shared {
    pub engine: kiln_engine::Engine,
    pub store: ImageStore,
    /// Build contexts and archives are unpacked here (same filesystem as the store).
    pub tmp_dir: PathBuf,
    /// Where `POST /grpc` and `POST /session` connections go, once set.
    pub buildkit: std::sync::OnceLock<Arc<dyn BuildkitDoor>>,
    /// A real Docker daemon's socket for the endpoints kiln does not serve, once set.
    pub forward: std::sync::OnceLock<PathBuf>,
}

/// A connection taken over from HTTP (`Upgrade: h2c`).
pub type Hijacked = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// The BuildKit API behind the hijacking endpoints dockerd offers: `POST /grpc` (the Control
/// API) and `POST /session` (a client session). `docker buildx` with the docker driver uses them.
#[async_trait::async_trait]
pub trait BuildkitDoor: Send + Sync {
    /// Serve the BuildKit API on `io` until it closes.
    async fn grpc(&self, io: Hijacked);
    /// Take `io` as a client session described by the `X-Docker-Expose-Session-*` headers.
    async fn session(&self, io: Hijacked, headers: &axum::http::HeaderMap);
    /// A `docker build` in BuildKit mode over the session the CLI opened; each status update goes
    /// to `status` as an encoded `moby.buildkit.v1.StatusResponse`. Returns the image id.
    /// Dropping the future cancels the build.
    async fn build(
        &self,
        build: SessionBuild,
        status: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    ) -> Result<String, String>;
}

/// A `POST /build?version=2` request, as Dockerfile frontend attributes.
#[derive(Debug, Clone, Default)]
pub struct SessionBuild {
    pub session: String,
    pub build_id: String,
    pub tags: Vec<String>,
    pub frontend_attrs: std::collections::HashMap<String, String>,
    /// `docker build --cache-from` images (registry caches, or images with an inline cache).
    pub cache_from: Vec<String>,
}

impl Shared {
    pub(crate) fn add_built_image(
        &self,
        image: &kiln_engine::exporter::BuiltImage,
        tags: &[kiln_oci::Reference],
    ) -> Result<String, String> {
        let id = image.config_digest.to_string();
        let record = store::ImageRecord {
            id: id.clone(),
            manifest: image.manifest_digest.to_string(),
            media_type: image.manifest_media_type.clone(),
            layer_sources: image
                .layers
                .iter()
                .filter_map(|l| Some((l.blob.digest.clone(), l.blob.source.clone()?)))
                .collect(),
            repo_digests: Default::default(),
            stored_at: store::now(),
        };
        self.store.add(record, tags).map_err(|e| e.to_string())?;
        Ok(id)
    }
}

/// A Docker Engine API server. Several sockets (one per job) may share one.
#[derive(Clone)]
pub struct DockerApi {
    shared: Arc<Shared>,
}

impl DockerApi {
    /// Open (or create) the image store.
    pub async fn new(config: DockerApiConfig) -> Result<DockerApi, StoreError> {
        let store = ImageStore::open(&config.store_dir)?;
        let tmp_dir = config.store_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|source| StoreError::Io {
            path: tmp_dir.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            engine: config.engine,
            store,
            tmp_dir,
            buildkit: Default::default(),
            forward: Default::default(),
        });
        // The engine's cache pruning must not take the blobs of stored images.
        let weak = Arc::downgrade(&shared);
        shared.engine.pin_content(move || {
            let Some(shared) = weak.upgrade() else {
                return Vec::new();
            };
            let content = &shared.engine.inner().content;
            let mut pins = Vec::new();
            for (image, _) in shared.store.list() {
                pins.push(image.manifest.clone());
                pins.push(image.id.clone());
                if let Ok(c) = store::read_content(content, &image) {
                    pins.extend(c.layers.into_iter().map(|(digest, _, _)| digest));
                }
            }
            pins
        });
        Ok(DockerApi { shared })
    }

    /// The engine behind the API.
    pub fn engine(&self) -> &kiln_engine::Engine {
        &self.shared.engine
    }

    /// The local image store.
    pub fn store(&self) -> &ImageStore {
        &self.shared.store
    }

    /// Forward container, exec, network, volume and pull calls to the Docker daemon listening on
    /// `socket` instead of refusing them (once; later calls are ignored). Jobs that can reach it
    /// can do anything that daemon can: give it only to trusted jobs.
    pub fn set_forward(&self, socket: PathBuf) {
        let _ = self.shared.forward.set(socket);
    }

    /// Send `/grpc` and `/session` connections to `door` (once; later calls are ignored).
    pub fn set_buildkit(&self, door: Arc<dyn BuildkitDoor>) {
        let _ = self.shared.buildkit.set(door);
    }

    /// Record a built image under `names` (`docker images` lists it). Returns its id.
    pub fn add_built_image(
        &self,
        image: &kiln_engine::exporter::BuiltImage,
        names: &[String],
    ) -> Result<String, String> {
        let tags = names
            .iter()
            .map(|n| {
                kiln_oci::Reference::parse(n).map_err(|e| format!("invalid image name {n:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.shared.add_built_image(image, &tags)
    }

    /// Serve on a unix socket until the returned handle is dropped. A stale socket file at
    /// `path` is replaced.
    pub async fn serve_unix(&self, path: &Path) -> std::io::Result<ServeHandle> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        let router = routes::router(self.shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!("docker API server stopped: {e}");
            }
        });
        Ok(ServeHandle {
            task,
            path: path.to_path_buf(),
        })
    }
}

/// A socket being served. Dropping it stops accepting connections and removes the socket
/// file; requests already in flight run to their end.
pub struct ServeHandle {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl ServeHandle {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
