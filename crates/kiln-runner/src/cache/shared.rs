//! The cache's operations, between the HTTP handlers and the index and files.
//!
//! State ownership: the index is one plain value behind one `std::sync::Mutex`, only ever held
//! for in-memory work (never across an `.await`); file I/O happens outside it. Saves go through
//! `save_lock` and snapshot the index only once they hold it, so saves can't land out of order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::http::ApiError;
use super::index::{Entry, Index};
use super::range::ByteRange;
use super::store::{ChunkError, Store};
use super::CacheStats;

/// Reservations idle longer than this are dropped with their parts (act's rule).
const RESERVATION_IDLE: Duration = Duration::from_secs(5 * 60);
/// Chunk writes and commits running at once; more wait their turn.
const CONCURRENT_WRITES: usize = 8;

pub struct Shared {
    store: Store,
    index: Mutex<Index>,
    save_lock: tokio::sync::Mutex<()>,
    /// Uses (hits, downloads) not yet saved; saved by the next GC rather than per hit.
    uses_unsaved: AtomicBool,
    /// sha256(token) → repository. Hashing keeps lookups from leaking token bytes by timing.
    jobs: RwLock<HashMap<[u8; 32], String>>,
    base_url: String,
    max_size: u64,
    writes: Semaphore,
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Shared {
    pub fn new(store: Store, index: Index, base_url: String, max_size: u64) -> Shared {
        Shared {
            store,
            index: Mutex::new(index),
            save_lock: tokio::sync::Mutex::new(()),
            uses_unsaved: AtomicBool::new(false),
            jobs: RwLock::new(HashMap::new()),
            base_url,
            max_size,
            writes: Semaphore::new(CONCURRENT_WRITES),
        }
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent (every method finishes its
        // edits before it can panic), so a poisoned lock is safe to keep using.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register_job(&self, token: &str, repository: &str) {
        let mut jobs = self.jobs.write().unwrap_or_else(|p| p.into_inner());
        jobs.insert(token_digest(token), repository.to_owned());
    }

    pub fn revoke_job(&self, token: &str) {
        let mut jobs = self.jobs.write().unwrap_or_else(|p| p.into_inner());
        jobs.remove(&token_digest(token));
    }

    /// The repository of the job holding `token`, if it is registered.
    pub fn repository_for(&self, token: &str) -> Option<String> {
        let jobs = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        jobs.get(&token_digest(token)).cloned()
    }

    pub fn stats(&self) -> CacheStats {
        let index = self.index();
        CacheStats {
            entries: index.entry_count(),
            bytes: index.total_bytes(),
        }
    }

    pub fn archive_location(&self, entry: &Entry) -> String {
        format!(
            "{}_apis/artifactcache/artifacts/{}?sig={}",
            self.base_url, entry.id, entry.download_secret
        )
    }

    pub fn lookup(&self, repository: &str, keys: &[&str], version: &str) -> Option<Entry> {
        let hit = self.index().lookup(repository, keys, version);
        if hit.is_some() {
            self.uses_unsaved.store(true, Ordering::Relaxed);
        }
        hit
    }

    /// Reserves and saves the index at once, so that an id is never handed out twice even across
    /// a crash: a job still uploading to a reservation cut by a restart must not land its chunks
    /// in someone else's.
    pub async fn reserve(
        &self,
        repository: &str,
        key: &str,
        version: &str,
        size: Option<u64>,
    ) -> Result<u64, ApiError> {
        let id = self.index().reserve(
            repository,
            key,
            version,
            size,
            self.max_size,
            Instant::now(),
        )?;
        tracing::debug!(id, repository, key, "cache reserved");
        self.save().await;
        Ok(id)
    }

    pub async fn upload_chunk<S, E>(
        &self,
        repository: &str,
        id: u64,
        range: ByteRange,
        body: S,
    ) -> Result<(), ApiError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.index()
            .check_chunk(id, repository, range, Instant::now())?;
        let _permit = self.writes.acquire().await.expect("never closed");
        let path = self
            .store
            .write_chunk(id, range, body)
            .await
            .map_err(|e| match e {
                ChunkError::Io { .. } => ApiError::internal(e),
                _ => ApiError::bad_request(e),
            })?;
        if !self.index().record_chunk(id, range, Instant::now()) {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::bad_request(format!(
                "cache {id}: reservation ended while the chunk was uploading"
            )));
        }
        Ok(())
    }

    pub async fn commit(&self, repository: &str, id: u64, size: u64) -> Result<(), ApiError> {
        let plan = self.index().begin_commit(id, repository, size);
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                let reserved = self.index().is_reserved(id);
                if !reserved {
                    self.store.remove_upload(id).await;
                }
                return Err(e.into());
            }
        };
        let permit = self.writes.acquire().await.expect("never closed");
        if let Err(e) = self.store.assemble(id, &plan).await {
            self.index().abort_reservation(id);
            tracing::error!(id, error = %e, "assembling cache entry failed");
            return Err(ApiError::internal(e));
        }
        drop(permit);
        let secret = uuid::Uuid::new_v4().simple().to_string();
        self.index().finish_commit(id, plan.size, secret);
        tracing::info!(id, repository, size = plan.size, "cache entry committed");
        self.collect_garbage().await;
        Ok(())
    }

    /// The entry and its blob for a download URL, if `secret` is the entry's; counts as a use.
    pub fn open_download(&self, id: u64, secret: &str) -> Option<(Entry, std::path::PathBuf)> {
        let mut index = self.index();
        let valid = index
            .entry(id)
            .is_some_and(|e| same_secret(&e.download_secret, secret));
        if !valid {
            return None;
        }
        let entry = index.touch(id)?;
        self.uses_unsaved.store(true, Ordering::Relaxed);
        Some((entry, self.store.blob_path(id)))
    }

    /// Drops idle reservations and stray parts, evicts above `max_size`, saves the index.
    pub async fn collect_garbage(&self) {
        let (expired, evicted) = {
            let mut index = self.index();
            let expired = index.expire_reservations(Instant::now(), RESERVATION_IDLE);
            (expired, index.evict(self.max_size))
        };
        for id in &expired {
            tracing::info!(id, "dropping idle cache reservation");
            self.store.remove_upload(*id).await;
        }
        let stray = self
            .store
            .stray_uploads(|id| self.index().is_reserved(id))
            .await;
        for id in stray {
            self.store.remove_upload(id).await;
        }
        for entry in &evicted {
            tracing::info!(
                id = entry.id,
                key = entry.key,
                size = entry.size,
                "evicting cache entry"
            );
        }
        // Save before removing blobs: a crash in between leaves orphan blobs (cleaned at start),
        // never entries without blobs.
        self.save().await;
        for entry in &evicted {
            self.store.remove_blob(entry).await;
        }
    }

    pub async fn save_if_dirty(&self) {
        if self.uses_unsaved.load(Ordering::Relaxed) {
            self.save().await;
        }
    }

    async fn save(&self) {
        let _guard = self.save_lock.lock().await;
        self.uses_unsaved.store(false, Ordering::Relaxed);
        let file = self.index().to_file();
        if let Err(e) = self.store.save_index(&file).await {
            self.uses_unsaved.store(true, Ordering::Relaxed);
            tracing::error!(error = %e, "saving cache index failed");
        }
    }
}
