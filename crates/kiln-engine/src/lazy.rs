//! Lazy layers: layers known by their blob, pulled and unpacked only when a step needs their
//! files.
//!
//! A base image's layers and the layers an imported cache names are not downloaded when the
//! image is resolved or the cache record is found, but registered here with the blob that
//! holds them. A build whose steps all come from an imported cache then downloads nothing: the
//! image it pushes names the same blobs, which the registry already has (or mounts from the
//! cache's repository). Steps that run, file operations and file exports unpack the layers they
//! mount first ([`SolveCtx::materialize`]); a blob that must be uploaded or written to a tar is
//! fetched on its own ([`SolveCtx::ensure_blob`]), without unpacking.
//!
//! The registry lives in memory: after a restart a cache record whose layers were never
//! unpacked is simply incomplete, and the step is taken from the import again or run.

use crate::cache::BlobRecord;
use crate::remote_cache::BlobStore;
use crate::snapshot::{Chain, LayerId};
use crate::solver::{SolveCtx, SolveError};
use futures::stream::{self, StreamExt, TryStreamExt};
use kiln_oci::reference::Reference;
use kiln_oci::{ContentStore, Digest, RegistryClient};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Where blobs come from: a lazy layer's, or an imported cache's.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// A repository on a registry (a base image's, or a registry cache's).
    Registry(Reference),
    /// A content store such as a client's local cache directory.
    Store(Arc<dyn BlobStore>),
}

impl Origin {
    /// The repository, for cross-repository mounts when the blob is pushed elsewhere.
    pub fn repository(&self) -> Option<String> {
        match self {
            Origin::Registry(r) => Some(r.repository_ref()),
            Origin::Store(_) => None,
        }
    }

    /// Whether the origin has the blob.
    pub async fn has(&self, registry: &RegistryClient, digest: &Digest) -> Result<bool, String> {
        match self {
            Origin::Registry(r) => registry
                .blob_exists(r, digest)
                .await
                .map_err(|e| e.to_string()),
            Origin::Store(store) => store.has(digest).await,
        }
    }

    /// A whole (small) blob, verified.
    pub async fn read(
        &self,
        registry: &RegistryClient,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        match self {
            Origin::Registry(r) => registry
                .fetch_blob_bytes(r, digest, limit)
                .await
                .map_err(|e| e.to_string()),
            Origin::Store(store) => store.read(digest, limit).await,
        }
    }

    /// Copy the blob into `content` (nothing to do when it is there).
    pub async fn fetch(
        &self,
        registry: &RegistryClient,
        digest: &Digest,
        content: &ContentStore,
    ) -> Result<(), String> {
        if content.has(digest) {
            return Ok(());
        }
        match self {
            Origin::Registry(r) => registry
                .fetch_blob(r, digest, content)
                .await
                .map_err(|e| e.to_string()),
            Origin::Store(store) => store.fetch(digest, content).await,
        }
    }
}

/// A layer not unpacked yet.
#[derive(Debug, Clone)]
pub(crate) struct LazyLayer {
    pub blob: BlobRecord,
    pub origin: Origin,
    /// When the layer was built (an imported layer's), kept as its directory's time.
    pub created: Option<i64>,
    /// What to call it in errors: `image busybox:latest` or `cache …`.
    pub what: String,
}

/// The engine's lazy layers, by layer id.
#[derive(Debug, Default)]
pub(crate) struct LazyLayers(Mutex<HashMap<LayerId, Arc<LazyLayer>>>);

impl LazyLayers {
    /// Register `id` unless it is registered already (the first origin wins).
    pub fn add(&self, id: &LayerId, layer: LazyLayer) {
        self.0
            .lock()
            .expect("lazy layers")
            .entry(id.clone())
            .or_insert_with(|| Arc::new(layer));
    }

    pub fn get(&self, id: &LayerId) -> Option<Arc<LazyLayer>> {
        self.0.lock().expect("lazy layers").get(id).cloned()
    }

    /// The lazy layer whose blob is `digest`.
    pub fn by_blob(&self, digest: &str) -> Option<Arc<LazyLayer>> {
        self.0
            .lock()
            .expect("lazy layers")
            .values()
            .find(|l| l.blob.digest == digest)
            .cloned()
    }

    fn remove(&self, id: &LayerId) {
        self.0.lock().expect("lazy layers").remove(id);
    }
}

/// Layers unpacked at once when a chain is materialized.
const UNPACK_CONCURRENCY: usize = 3;

impl SolveCtx {
    /// Whether layer `id` is on disk or can be fetched when needed.
    pub fn layer_available(&self, id: &LayerId) -> bool {
        self.engine.layers.exists(id) || self.engine.lazy.get(id).is_some()
    }

    /// Unpack every lazy layer of `chain`, reporting the downloads under `vertex`. `cancel`
    /// stops the downloads: the solve's token for its steps; an export after the solve has
    /// its own (the solve's is done with by then).
    pub async fn materialize(
        self: &Arc<Self>,
        vertex: &str,
        chain: &Chain,
        cancel: &CancellationToken,
    ) -> Result<(), SolveError> {
        let missing: Vec<LayerId> = chain
            .layers()
            .iter()
            .filter(|id| !self.engine.layers.exists(id))
            .cloned()
            .collect();
        stream::iter(missing)
            .map(|id| async move { self.materialize_layer(vertex, &id, cancel).await })
            .buffered(UNPACK_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn materialize_layer(
        self: &Arc<Self>,
        vertex: &str,
        id: &LayerId,
        cancel: &CancellationToken,
    ) -> Result<(), SolveError> {
        let engine = &self.engine;
        let Some(layer) = engine.lazy.get(id) else {
            if engine.layers.exists(id) {
                return Ok(());
            }
            return Err(SolveError::msg(format!(
                "layer {id} is neither unpacked nor known by its blob (was it pruned?)"
            )));
        };
        // Builds that need the same layer at once unpack it once (see source::image).
        let _pulling = engine
            .building(&format!("layer {}", layer.blob.diff_id))
            .await;
        if engine.layers.exists(id) {
            return Ok(());
        }
        let digest: Digest = layer
            .blob
            .digest
            .parse()
            .map_err(|e| SolveError::msg(format!("{}: {e}", layer.what)))?;
        let status = format!("sha256:{}", digest.hex());
        let size = layer.blob.size;
        self.progress.status(vertex, &status, 0, Some(size), false);
        let fetched = tokio::select! {
            r = self.fetch_lazy_blob(&layer, &digest) => r,
            _ = cancel.cancelled() => return Err(SolveError::canceled()),
        };
        fetched?;
        self.progress
            .status(vertex, &status, size, Some(size), false);
        crate::source::image::unpack_blob(
            self,
            id,
            &format!("{}: layer {digest}", layer.what),
            crate::source::image::compression_of(&layer.blob.media_type),
            layer.blob.clone(),
        )
        .await?;
        // An imported layer keeps its build time, so the image made from it is the same image.
        if let Some(t) = layer.created.and_then(|t| u64::try_from(t).ok()) {
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
            let dir = engine.layers.dir(id);
            if let Err(e) = std::fs::File::open(&dir).and_then(|f| f.set_modified(when)) {
                tracing::debug!(dir = %dir.display(), "setting the layer's time: {e}");
            }
        }
        engine.lazy.remove(id);
        self.progress
            .status(vertex, &status, size, Some(size), true);
        Ok(())
    }

    /// Make sure the blob `digest` is in the content store: a lazy layer's blob is fetched
    /// from its origin (without unpacking it). A blob the store lacks that no lazy layer names
    /// is an error.
    pub async fn ensure_blob(&self, digest: &Digest) -> Result<(), SolveError> {
        if self.engine.content.has(digest) {
            return Ok(());
        }
        let layer = self
            .engine
            .lazy
            .by_blob(&digest.to_string())
            .ok_or_else(|| SolveError::msg(format!("blob {digest} is not in the content store")))?;
        self.fetch_lazy_blob(&layer, digest).await
    }

    async fn fetch_lazy_blob(&self, layer: &LazyLayer, digest: &Digest) -> Result<(), SolveError> {
        layer
            .origin
            .fetch(&self.registry, digest, &self.engine.content)
            .await
            .map_err(|e| SolveError::msg(format!("{}: layer {digest}: {e}", layer.what)))
    }
}
