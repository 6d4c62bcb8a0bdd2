//! Disk usage and pruning of the cache (`kiln du`, `kiln prune`).

use crate::snapshot::LayerId;
use crate::Engine;
use std::collections::{BTreeSet, HashMap, HashSet};

/// One cache record as shown by `kiln du`.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub id: String,
    pub description: String,
    /// Bytes of the layers this record added (not shared with a record below it).
    pub size: u64,
    pub last_used: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove everything, not only what is unused.
    pub all: bool,
    /// Keep the most recently used records up to this many bytes.
    pub keep_storage: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub records: usize,
    pub layers: usize,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("prune: {0}")]
pub struct PruneError(String);

impl PruneError {
    pub(crate) fn new(message: String) -> PruneError {
        PruneError(message)
    }
}

impl Engine {
    /// Every cache record with the size of the layer it adds on top of its inputs.
    pub fn disk_usage(&self) -> Result<Vec<UsageRecord>, PruneError> {
        let inner = self.inner();
        let results = inner
            .cache
            .all_results()
            .map_err(|e| PruneError(e.to_string()))?;
        let mut out = Vec::new();
        for (key, rec) in results {
            let size = rec
                .outputs
                .iter()
                .filter_map(|c| c.layers().last())
                .map(|l| inner.layers.size(l))
                .sum();
            out.push(UsageRecord {
                id: key,
                description: rec.description,
                size,
                last_used: rec.last_used,
            });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.last_used));
        Ok(out)
    }

    /// Remove cache records, then every layer, blob and cache mount nothing refers to any more.
    /// With neither `all` nor `keep_storage`, everything is removed as well: a CLI engine has no
    /// builds in flight while it prunes (it holds the state directory's lock).
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, PruneError> {
        let inner = self.inner();
        let e = |e: &dyn std::fmt::Display| PruneError(e.to_string());
        let mut results = inner.cache.all_results().map_err(|x| e(&x))?;
        results.sort_by_key(|r| std::cmp::Reverse(r.1.last_used));
        let mut keep_keys = BTreeSet::new();
        let blobs = inner.cache.all_blobs().map_err(|x| e(&x))?;
        if let (Some(limit), false) = (opts.keep_storage, opts.all) {
            // A layer costs its files and its compressed blobs in the content store.
            let stored: HashMap<String, u64> = inner
                .content
                .list()
                .map_err(|x| e(&x))?
                .into_iter()
                .map(|(d, size)| (d.to_string(), size))
                .collect();
            let mut blob_bytes: HashMap<&str, u64> = HashMap::new();
            for (key, rec) in &blobs {
                let layer = key.split('/').next().unwrap_or_default();
                *blob_bytes.entry(layer).or_default() +=
                    stored.get(&rec.digest).copied().unwrap_or(0);
            }
            let mut used = 0u64;
            let mut counted: HashSet<LayerId> = HashSet::new();
            for (key, rec) in &results {
                let mut size = 0;
                for l in rec.outputs.iter().flat_map(|c| c.layers()) {
                    if counted.insert(l.clone()) {
                        size += inner.layers.size(l) + blob_bytes.get(l.0.as_str()).unwrap_or(&0);
                    }
                }
                if used + size > limit {
                    break;
                }
                used += size;
                keep_keys.insert(key.clone());
            }
        }
        let remove_keys: Vec<String> = results
            .iter()
            .filter(|(k, _)| !keep_keys.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        let live: HashSet<LayerId> = results
            .iter()
            .filter(|(k, _)| keep_keys.contains(k))
            .flat_map(|(_, r)| r.outputs.iter().flat_map(|c| c.layers().iter().cloned()))
            .collect();
        let mut remove_blobs = Vec::new();
        let mut live_digests = BTreeSet::new();
        for (key, rec) in &blobs {
            let layer = key.split('/').next().unwrap_or_default();
            if live.contains(&LayerId(layer.to_string())) {
                live_digests.insert(rec.digest.clone());
            } else {
                remove_blobs.push(key.clone());
            }
        }
        inner
            .cache
            .remove(&remove_keys, &remove_blobs)
            .map_err(|x| e(&x))?;

        let mut report = PruneReport {
            records: remove_keys.len(),
            ..Default::default()
        };
        for id in inner.layers.list().map_err(|x| e(&x))? {
            if !live.contains(&id) {
                report.bytes += inner.layers.size(&id);
                inner.layers.remove(&id).map_err(|x| e(&x))?;
                report.layers += 1;
            }
        }
        // Every blob not backing a live layer goes, exported configs and manifests too, except
        // what an image store pins.
        let pinned = inner.pinned_content();
        for (digest, size) in inner.content.list().map_err(|x| e(&x))? {
            let d = digest.to_string();
            if !live_digests.contains(&d) && !pinned.contains(&d) {
                report.bytes += size;
                inner.content.delete(&digest).map_err(|x| e(&x))?;
            }
        }
        if keep_keys.is_empty() {
            let cache_mounts = inner.root.join("cache-mounts");
            if cache_mounts.exists() {
                report.bytes += crate::snapshot::dir_size(&cache_mounts);
                crate::snapshot::remove_tree(&cache_mounts).map_err(|x| e(&x))?;
            }
        }
        Ok(report)
    }
}
