//! Cache records: which filesystem state a cache key produced, and which blob a layer became.
//! Stored in redb (one file, ACID): a crash leaves either the old or the new record, never a
//! half-written one. Layer directories are committed *before* the record that names them, so
//! a record never points at a missing layer after a crash.

use crate::snapshot::{Chain, LayerId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("results");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("layer-blobs");

#[derive(Debug, thiserror::Error)]
#[error("cache database: {0}")]
pub struct CacheError(String);

fn err(e: impl std::fmt::Display) -> CacheError {
    CacheError(e.to_string())
}

/// What one cache key produced: one chain per op output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRecord {
    pub outputs: Vec<Chain>,
    pub description: String,
    pub created: u64,
    pub last_used: u64,
}

/// A layer turned into a compressed blob, so exports and pushes reuse it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobRecord {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    /// Repository the blob was pulled from (`host/repo`), for cross-repository mounts.
    #[serde(default)]
    pub source: Option<String>,
    /// The layer was built by a kiln and came here through an imported cache (so, unlike a
    /// base image's layer, it counts for the image's creation time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imported: bool,
}

impl BlobRecord {
    /// The blob's digest, parsed.
    pub fn blob_digest(&self) -> Result<kiln_oci::Digest, crate::solver::SolveError> {
        self.digest
            .parse()
            .map_err(|e| crate::solver::SolveError::msg(format!("layer blob {}: {e}", self.digest)))
    }
}

pub struct CacheDb {
    db: Database,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CacheDb {
    pub fn open(path: &Path) -> Result<CacheDb, CacheError> {
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(RESULTS).map_err(err)?;
        tx.open_table(BLOBS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(CacheDb { db })
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, CacheError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(table).map_err(err)?;
        let Some(v) = t.get(key).map_err(err)? else {
            return Ok(None);
        };
        // A record we cannot read is treated as absent: the work is redone, nothing breaks.
        Ok(serde_json::from_slice(v.value()).ok())
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(value).map_err(err)?;
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(table).map_err(err)?;
            t.insert(key, bytes.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub fn result(&self, key: &str) -> Result<Option<CacheRecord>, CacheError> {
        self.get(RESULTS, key)
    }

    pub fn put_result(&self, key: &str, record: &CacheRecord) -> Result<(), CacheError> {
        self.put(RESULTS, key, record)
    }

    /// Mark a record as used now. Not synced to disk on its own (a lost access time only makes
    /// GC slightly less exact), so a fully cached build does no fsync per step.
    pub fn touch(&self, key: &str) -> Result<(), CacheError> {
        let Some(mut rec) = self.result(key)? else {
            return Ok(());
        };
        rec.last_used = now();
        let bytes = serde_json::to_vec(&rec).map_err(err)?;
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(redb::Durability::None).map_err(err)?;
        {
            let mut t = tx.open_table(RESULTS).map_err(err)?;
            t.insert(key, bytes.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub fn blob(
        &self,
        layer: &LayerId,
        compression: &str,
    ) -> Result<Option<BlobRecord>, CacheError> {
        self.get(BLOBS, &format!("{}/{compression}", layer.0))
    }

    pub fn put_blob(
        &self,
        layer: &LayerId,
        compression: &str,
        record: &BlobRecord,
    ) -> Result<(), CacheError> {
        self.put(BLOBS, &format!("{}/{compression}", layer.0), record)
    }

    pub fn all_results(&self) -> Result<Vec<(String, CacheRecord)>, CacheError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(RESULTS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            if let Ok(rec) = serde_json::from_slice::<CacheRecord>(v.value()) {
                out.push((k.value().to_string(), rec));
            }
        }
        Ok(out)
    }

    pub fn all_blobs(&self) -> Result<Vec<(String, BlobRecord)>, CacheError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(BLOBS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            if let Ok(rec) = serde_json::from_slice::<BlobRecord>(v.value()) {
                out.push((k.value().to_string(), rec));
            }
        }
        Ok(out)
    }

    /// Delete result records and blob records in one transaction.
    pub fn remove(&self, results: &[String], blobs: &[String]) -> Result<(), CacheError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(RESULTS).map_err(err)?;
            for k in results {
                t.remove(k.as_str()).map_err(err)?;
            }
            let mut b = tx.open_table(BLOBS).map_err(err)?;
            for k in blobs {
                b.remove(k.as_str()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}
