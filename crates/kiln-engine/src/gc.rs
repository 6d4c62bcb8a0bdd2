//! Garbage collection while the engine serves builds.
//!
//! A long-running builder (`kiln buildkitd`, the runner's engine) must keep its state directory
//! within `gc_keep_storage` without a build ever losing a layer it is using. Every build holds a
//! [`BuildLease`] from its first step to its last export; a collection runs only while nobody
//! holds one. When the last lease of a busy spell is dropped, the engine collects in the
//! background, so a builder that is idle now and then stays within its budget. A builder that is
//! never idle collects at its next quiet moment: it never stops builds to collect.
//!
//! An explicit prune (`buildctl prune`, `kiln prune`) waits for the builds in flight to finish
//! (new ones wait behind it), then runs.

use crate::prune::{PruneError, PruneOptions, PruneReport};
use crate::Engine;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// The engine's collector: the gate between builds and collections, and the budget.
#[derive(Debug)]
pub(crate) struct Collector {
    gate: Arc<RwLock<()>>,
    in_flight: AtomicUsize,
    keep_storage: Option<u64>,
    collections: AtomicUsize,
}

impl Collector {
    pub(crate) fn new(keep_storage: Option<u64>) -> Collector {
        Collector {
            gate: Arc::new(RwLock::new(())),
            in_flight: AtomicUsize::new(0),
            keep_storage,
            collections: AtomicUsize::new(0),
        }
    }
}

/// Held by a build while it may use layers and blobs of the cache; see the module docs.
pub struct BuildLease {
    engine: Engine,
    guard: Option<OwnedRwLockReadGuard<()>>,
}

impl Drop for BuildLease {
    fn drop(&mut self) {
        self.guard.take();
        let gc = &self.engine.inner.gc;
        let last = gc.in_flight.fetch_sub(1, Ordering::AcqRel) == 1;
        if !last || gc.keep_storage.is_none() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let engine = self.engine.clone();
            rt.spawn(async move { engine.collect_when_idle().await });
        }
    }
}

impl Engine {
    /// Start using the cache for a build; collections wait until the lease is dropped.
    pub async fn lease(&self) -> BuildLease {
        let gc = &self.inner.gc;
        gc.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = gc.gate.clone().read_owned().await;
        BuildLease {
            engine: self.clone(),
            guard: Some(guard),
        }
    }

    /// How many collections (automatic or explicit) have run since the engine was opened.
    pub fn collections(&self) -> usize {
        self.inner.gc.collections.load(Ordering::Relaxed)
    }

    /// Prune with `opts` once no build holds a lease (builds that start meanwhile wait).
    pub async fn prune_exclusive(&self, opts: PruneOptions) -> Result<PruneReport, PruneError> {
        let guard = self.inner.gc.gate.clone().write_owned().await;
        self.prune_holding(guard, opts).await
    }

    /// Bring the cache within `gc_keep_storage` once no build holds a lease; `None` when no
    /// budget is configured.
    pub async fn collect_garbage(&self) -> Result<Option<PruneReport>, PruneError> {
        let Some(keep) = self.inner.gc.keep_storage else {
            return Ok(None);
        };
        self.prune_exclusive(keep_options(keep)).await.map(Some)
    }

    /// The background collection after a busy spell: skipped if a build started meanwhile
    /// (its own lease will bring the collection back when it ends).
    async fn collect_when_idle(&self) {
        let Some(keep) = self.inner.gc.keep_storage else {
            return;
        };
        let Ok(guard) = self.inner.gc.gate.clone().try_write_owned() else {
            return;
        };
        match self.prune_holding(guard, keep_options(keep)).await {
            Ok(r) if r.records + r.layers > 0 => tracing::info!(
                records = r.records,
                layers = r.layers,
                bytes = r.bytes,
                keep_storage = keep,
                "garbage collection"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("garbage collection failed: {e}"),
        }
    }

    async fn prune_holding(
        &self,
        guard: tokio::sync::OwnedRwLockWriteGuard<()>,
        opts: PruneOptions,
    ) -> Result<PruneReport, PruneError> {
        let engine = self.clone();
        let report = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            engine.prune(&opts)
        })
        .await
        .map_err(|e| PruneError::new(format!("the collection task failed: {e}")))?;
        self.inner.gc.collections.fetch_add(1, Ordering::Relaxed);
        report
    }
}

fn keep_options(keep: u64) -> PruneOptions {
    PruneOptions {
        all: false,
        keep_storage: Some(keep),
    }
}
