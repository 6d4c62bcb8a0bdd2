//! kiln's build engine: executes BuildKit LLB with a content-addressed cache.
//!
//! The engine takes an LLB [`Definition`](bollard_buildkit_proto::pb::Definition) — from the
//! Dockerfile frontend, a `buildctl` client or anything else — and solves it: sources are
//! pulled or synced, exec ops run under runc, file ops are done in process, independent
//! vertices run in parallel, and every result is cached under a key derived from the op and
//! the content of its inputs. Exporters turn the result into an image (pushed or written as
//! an OCI/Docker tar), a directory or a tar.
//!
//! ```no_run
//! # async fn demo(def: bollard_buildkit_proto::pb::Definition,
//! #               session: std::sync::Arc<dyn kiln_engine::session::Session>) -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_engine::{Engine, EngineConfig, SolveOptions, progress::ProgressSender};
//! let engine = Engine::open(EngineConfig::new("/var/lib/kiln".into())).await?;
//! let solved = engine
//!     .solve(&def, SolveOptions::default(), session, ProgressSender::discard(), Default::default())
//!     .await?;
//! println!("{} layers", solved.chain().map(|c| c.layers().len()).unwrap_or(0));
//! # Ok(()) }
//! ```

pub mod cache;
pub mod executor;
pub mod exporter;
pub mod frontend;
pub mod fsutil;
pub mod gc;
mod glob;
mod lazy;
pub mod llb;
mod ops;
pub mod progress;
pub mod prune;
pub mod remote_cache;
pub mod session;
pub mod snapshot;
pub mod solver;
mod source;

/// Git repositories as build contexts (`kiln build https://host/repo.git#ref`).
pub mod git {
    pub use crate::source::git::{checkout_url, is_git_url};
}
mod sys;

use crate::cache::CacheDb;
use crate::executor::Runc;
use crate::progress::ProgressSender;
use crate::session::Session;
use crate::snapshot::{Chain, LayerStore};
use crate::solver::{SolveCtx, SolveError};
use async_trait::async_trait;
use bollard_buildkit_proto::pb;
use kiln_oci::registry::{RegistryClient, RegistryConfig};
use kiln_oci::ContentStore;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use solver::SolveError as Error;

/// Errors opening the engine's state directory.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state directory {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Cache(#[from] cache::CacheError),
    #[error("content store: {0}")]
    Content(#[from] kiln_oci::StoreError),
    #[error("runc not found: install runc (Debian package `runc`) or set the runc path")]
    NoRunc,
    #[error(
        "kiln's build engine needs root, or to run as root of a user namespace \
         (the kiln binary sets one up by itself when started as a normal user)"
    )]
    NotRoot,
}

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// State directory: cache database, layers, content store.
    pub root: PathBuf,
    /// Per-registry settings (plain HTTP, TLS verification).
    pub registry: RegistryConfig,
    /// The runc binary; found in `PATH` when unset.
    pub runc: Option<PathBuf>,
    /// How many exec/file ops may run at once. `None` (the default) sets no cap, as BuildKit's
    /// `max-parallelism` is unset by default: CI steps are often I/O-bound (downloads, `sleep`,
    /// waiting on services), so a CPU-count cap would turn a shared builder into a queue.
    pub max_parallelism: Option<usize>,
    /// overlayfs or the copying snapshotter; `None` picks overlayfs when it works.
    pub snapshotter: Option<snapshot::Snapshotter>,
    /// Keep the cache within this many bytes, collecting when no build is in flight (see
    /// [`gc`]); `None` keeps everything.
    pub gc_keep_storage: Option<u64>,
}

impl EngineConfig {
    pub fn new(root: PathBuf) -> EngineConfig {
        EngineConfig {
            root,
            registry: RegistryConfig::default(),
            runc: None,
            max_parallelism: None,
            snapshotter: None,
            gc_keep_storage: None,
        }
    }
}

/// Shared engine state. Exposed to the engine's modules; users hold an [`Engine`].
pub struct EngineInner {
    pub root: PathBuf,
    pub layers: LayerStore,
    pub cache: CacheDb,
    pub content: ContentStore,
    pub runc: Runc,
    /// Caps concurrent exec/file ops when `max_parallelism` is set (see [`EngineInner::exec_slot`]).
    exec_slots: Option<Arc<Semaphore>>,
    pub registry_config: RegistryConfig,
    cache_mount_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Steps being built, by cache key (see [`EngineInner::building`]).
    building: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Lists of content digests that prune must keep (see [`Engine::pin_content`]).
    content_roots: Mutex<Vec<ContentRoot>>,
    /// Blobs pushed so far (`host/repository@digest`): a repeated push skips their HEAD checks.
    pub(crate) pushed_blobs: Mutex<std::collections::HashSet<String>>,
    /// Digests of local files already read, so an unchanged context is not read again.
    pub(crate) file_hashes: source::local::HashCache,
    /// Layers known by their blob, unpacked when first needed (see [`lazy`]).
    pub(crate) lazy: lazy::LazyLayers,
    /// Garbage collection between builds (see [`gc`]).
    gc: gc::Collector,
    _lock: std::fs::File,
}

/// See [`Engine::client_insecure_warning`].
fn insecure_warning(config: &RegistryConfig, reference: &str) -> Option<String> {
    let host = kiln_oci::Reference::parse(reference).ok()?.registry;
    let allowed = kiln_oci::reference::is_loopback_host(&host)
        || config
            .hosts
            .get(&host)
            .is_some_and(|h| h.http || h.insecure);
    (!allowed).then(|| {
        format!(
            "registry.insecure=true for {host} is not honoured: kiln's config decides per host \
             (set [registry.\"{host}\"] http = true or insecure = true in kiln.toml)"
        )
    })
}

#[cfg(test)]
#[test]
fn client_insecure_requests_are_answered_by_the_config() {
    let mut config = RegistryConfig::default();
    assert_eq!(insecure_warning(&config, "127.0.0.1:5000/a:1"), None);
    let w = insecure_warning(&config, "registry.example:5000/a:1").unwrap();
    assert!(
        w.contains("[registry.\"registry.example:5000\"] http = true"),
        "{w}"
    );
    config.hosts.insert(
        "registry.example:5000".into(),
        kiln_oci::HostConfig {
            http: true,
            ..Default::default()
        },
    );
    assert_eq!(insecure_warning(&config, "registry.example:5000/a:1"), None);
}

/// Lists content digests that something outside the cache (an image store) still refers to.
pub type ContentRoot = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

impl EngineInner {
    /// Every digest some content root pins.
    pub fn pinned_content(&self) -> std::collections::HashSet<String> {
        let roots: Vec<ContentRoot> = self.content_roots.lock().expect("lock").clone();
        roots.iter().flat_map(|f| f()).collect()
    }
}

/// Held while a step with some cache key is built; see [`EngineInner::building`].
pub struct BuildingGuard {
    key: String,
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for BuildingGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.map.lock().expect("lock");
        // Nobody else waits for this key: forget it (the map holds one reference, we the other).
        if Arc::strong_count(&self.lock) <= 2 {
            map.remove(&self.key);
        }
    }
}

impl EngineInner {
    /// Wait until no other solve is building a step with this cache key, and hold that place.
    /// Concurrent builds (two jobs, two buildctl clients) that need the same step build it once:
    /// the second waits, then finds the first one's cache record.
    pub async fn building(&self, key: &str) -> BuildingGuard {
        let lock = self
            .building
            .lock()
            .expect("lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        BuildingGuard {
            key: key.to_string(),
            map: self.building.clone(),
            lock,
            guard: Some(guard),
        }
    }

    /// A place to run one exec/file op: waits only when `max_parallelism` caps them. Errors
    /// when the engine is shutting down.
    pub async fn exec_slot(&self) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, SolveError> {
        match &self.exec_slots {
            None => Ok(None),
            Some(slots) => slots
                .clone()
                .acquire_owned()
                .await
                .map(Some)
                .map_err(|_| SolveError::canceled()),
        }
    }

    /// The lock serializing `sharing=locked` cache mounts with this id.
    pub fn cache_mount_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.cache_mount_locks
            .lock()
            .expect("lock")
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

/// The build engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

/// Options of one solve.
#[derive(Debug, Clone, Default)]
pub struct SolveOptions {
    /// Re-run every exec and file op even when cached (sources are still reused).
    pub no_cache: bool,
    /// Images the frontend already resolved (by [`solver::resolve_key`]), so a build asks the
    /// registry once per image.
    pub resolved: HashMap<String, Arc<kiln_oci::ResolvedImage>>,
    /// Caches to take results from when the local cache misses (see [`remote_cache`]).
    pub cache_imports: Vec<Arc<remote_cache::ImportedCache>>,
}

/// The result of a solve, ready for export.
#[derive(Clone)]
pub struct Solved {
    chain: Option<Chain>,
    ctx: Arc<SolveCtx>,
}

impl Solved {
    /// The resulting filesystem; `None` for an empty result.
    pub fn chain(&self) -> Option<&Chain> {
        self.chain.as_ref()
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.ctx.registry
    }

    /// Unpack the result's lazy layers (base image and imported layers not needed so far), for
    /// exports that read its files; downloads are reported under `vertex`.
    pub async fn materialize(&self, vertex: &str) -> Result<(), SolveError> {
        match &self.chain {
            Some(chain) => {
                let cancel = CancellationToken::new();
                self.ctx.materialize(vertex, chain, &cancel).await
            }
            None => Ok(()),
        }
    }

    /// Make sure the layer blobs `blobs` (of the result) are in the content store: lazy
    /// layers' blobs are fetched (see [`lazy`]).
    pub async fn ensure_blobs(&self, blobs: &[&cache::BlobRecord]) -> Result<(), SolveError> {
        for b in blobs {
            self.ctx.ensure_blob(&b.blob_digest()?).await?;
        }
        Ok(())
    }
}

/// Registry credentials come from the session (the client's Docker config, or a job's login).
struct SessionCredentials(Arc<dyn Session>);

#[async_trait]
impl kiln_oci::CredentialSource for SessionCredentials {
    async fn credentials(&self, host: &str) -> Option<kiln_oci::Credentials> {
        self.0.credentials(host).await
    }
}

impl Engine {
    /// Open (or create) the state directory. Waits while another kiln process holds it.
    pub async fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        let root = config.root.clone();
        let state = |source| EngineError::State {
            path: root.clone(),
            source,
        };
        if sys::euid() != 0 {
            return Err(EngineError::NotRoot);
        }
        std::fs::create_dir_all(&root).map_err(state)?;
        let lock = lock_root(&root).await.map_err(state)?;
        let runc = match config.runc.clone() {
            Some(p) => p,
            None => find_in_path("runc").ok_or(EngineError::NoRunc)?,
        };
        let layers = LayerStore::open(&root, config.snapshotter).map_err(state)?;
        let cache = CacheDb::open(&root.join("cache.redb"))?;
        let content = ContentStore::open(root.join("content"))?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                root: root.clone(),
                layers,
                cache,
                content,
                runc: Runc::new(runc, root.join("runc")),
                exec_slots: config
                    .max_parallelism
                    .map(|n| Arc::new(Semaphore::new(n.max(1)))),
                registry_config: config.registry,
                cache_mount_locks: Mutex::new(HashMap::new()),
                building: Arc::default(),
                content_roots: Mutex::new(Vec::new()),
                file_hashes: Default::default(),
                lazy: Default::default(),
                pushed_blobs: Default::default(),
                gc: gc::Collector::new(config.gc_keep_storage),
                _lock: lock,
            }),
        })
    }

    pub fn inner(&self) -> &Arc<EngineInner> {
        &self.inner
    }

    /// Keep the content digests `root` lists through every prune: an image store built on the
    /// engine's content store registers its images' manifests, configs and layers here.
    pub fn pin_content(&self, root: impl Fn() -> Vec<String> + Send + Sync + 'static) {
        self.inner
            .content_roots
            .lock()
            .expect("lock")
            .push(Arc::new(root));
    }

    /// What to tell a client that asked for `registry.insecure=true` on `reference`'s host when
    /// kiln's config allows neither plain HTTP nor unverified TLS there (loopback hosts need
    /// nothing). On a shared builder the daemon's config decides, not a request.
    pub fn client_insecure_warning(&self, reference: &str) -> Option<String> {
        insecure_warning(&self.inner.registry_config, reference)
    }

    /// A registry client that authenticates with the session's credentials.
    pub fn registry_client(&self, session: Arc<dyn Session>) -> RegistryClient {
        RegistryClient::new(
            self.inner.registry_config.clone(),
            Arc::new(SessionCredentials(session)),
        )
    }

    /// Solve an LLB definition.
    pub async fn solve(
        &self,
        def: &pb::Definition,
        opts: SolveOptions,
        session: Arc<dyn Session>,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> Result<Solved, SolveError> {
        let graph = llb::Graph::from_definition(def).map_err(|e| SolveError::msg(e.to_string()))?;
        let registry = self.registry_client(session.clone());
        let ctx = SolveCtx::new(
            self.inner.clone(),
            session,
            progress,
            cancel,
            registry,
            graph,
            opts,
        );
        // Unfinished vertex futures hold the context that memoizes them: unless the solve
        // succeeds, drop them explicitly (they release their mounts and containers as they go).
        let mut abandon = solver::AbandonOnDrop(Some(ctx.clone()));
        let chain = ctx.solve_root().await?;
        abandon.0 = None;
        Ok(Solved { chain, ctx })
    }
}

async fn lock_root(root: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("lock"))?;
    // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    tracing::info!("waiting for another kiln process using {}", root.display());
    tokio::task::spawn_blocking(move || {
        // SAFETY: as above; this blocking call runs on a blocking thread.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            Ok(file)
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
