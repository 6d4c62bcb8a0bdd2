//! What the cache knows about its entries, in memory: complete entries (persisted) and open
//! reservations (not persisted). No I/O here; [`super::store`] reads and writes the files.
//!
//! The index is a JSON file replaced atomically (write temp, fsync, rename) rather than a redb
//! database: it holds one small record per entry (thousands at most, since `max_size` bounds the
//! blobs), lookups need the whole set in memory anyway for prefix matching and LRU eviction, the
//! server is its only writer, and a rename gives the same crash safety as a transaction while the
//! file stays readable by a person debugging a runner. Reservations are deliberately left out of
//! it: an upload cut by a restart cannot be resumed (the toolkit never retries a reservation), so
//! they are dropped and their parts removed at start.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::range::ByteRange;

/// Version of the index file layout; a file with another number is not read.
pub const INDEX_FORMAT: u32 = 1;

/// A complete, downloadable cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub repository: String,
    pub key: String,
    pub version: String,
    pub size: u64,
    /// Logical time of the last hit or download (from [`Index::clock`]), for LRU eviction.
    pub last_used: u64,
    /// Random hex that the download URL must carry: downloads are not authenticated (the
    /// toolkit sends no token), so the URL itself is the capability.
    pub download_secret: String,
}

/// The persisted form of the index.
#[derive(Debug, Serialize, Deserialize)]
pub struct IndexFile {
    pub format: u32,
    pub next_id: u64,
    pub clock: u64,
    pub entries: Vec<Entry>,
}

/// An upload in progress: `POST caches` made it, `PATCH` adds parts, `POST caches/:id` ends it.
#[derive(Debug)]
struct Reservation {
    repository: String,
    key: String,
    version: String,
    /// `cacheSize` from the reservation; `None` when the client did not say.
    size: Option<u64>,
    /// Stored parts, start offset → end offset (inclusive). A retried chunk replaces its part.
    parts: BTreeMap<u64, u64>,
    last_activity: Instant,
    committing: bool,
}

/// Why a request on the index was refused. All are the client's fault (400) except where noted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("cache {0}: not reserved")]
    NotReserved(u64),
    #[error("cache {key:?} version {version:?}: already exists")]
    AlreadyExists { key: String, version: String },
    #[error("cache {key:?} version {version:?}: another job is uploading it")]
    BeingUploaded { key: String, version: String },
    #[error("cache {id}: commit already in progress")]
    Committing { id: u64 },
    #[error("cache {id}: bytes {start}-{end} lie beyond the reserved size {size}")]
    BeyondReservedSize {
        id: u64,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("cache {key:?}: size {size} exceeds the cache's limit of {max} bytes")]
    TooLarge { key: String, size: u64, max: u64 },
    #[error("cache {id}: {problem}")]
    BadParts { id: u64, problem: String },
    #[error("cache {id}: committed size {claimed} but {actual} bytes were uploaded")]
    SizeMismatch { id: u64, claimed: u64, actual: u64 },
}

/// Everything the store needs to assemble an upload.
#[derive(Debug, PartialEq, Eq)]
pub struct CommitPlan {
    pub parts: Vec<ByteRange>,
    pub size: u64,
}

#[derive(Debug, Default)]
pub struct Index {
    next_id: u64,
    clock: u64,
    entries: BTreeMap<u64, Entry>,
    reservations: HashMap<u64, Reservation>,
}

impl Index {
    pub fn from_file(file: IndexFile) -> Index {
        let entries: BTreeMap<u64, Entry> = file.entries.into_iter().map(|e| (e.id, e)).collect();
        let after_last = entries.keys().next_back().map_or(1, |id| id + 1);
        let clock = entries.values().map(|e| e.last_used).max().unwrap_or(0);
        Index {
            next_id: file.next_id.max(after_last).max(1),
            clock: file.clock.max(clock),
            entries,
            reservations: HashMap::new(),
        }
    }

    pub fn to_file(&self) -> IndexFile {
        IndexFile {
            format: INDEX_FORMAT,
            next_id: self.next_id.max(1),
            clock: self.clock,
            entries: self.entries.values().cloned().collect(),
        }
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    pub fn entry(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    pub fn is_reserved(&self, id: u64) -> bool {
        self.reservations.contains_key(&id)
    }

    /// Drops entries whose blob is missing or has the wrong size; returns how many went.
    pub fn retain_entries(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| keep(e));
        before - self.entries.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Finds the entry for a restore: for each key in order, an exact key match, else the newest
    /// entry whose key starts with it; only complete entries of `version` in `repository` count.
    /// A hit counts as a use.
    pub fn lookup(&mut self, repository: &str, keys: &[&str], version: &str) -> Option<Entry> {
        let found = keys.iter().find_map(|key| {
            let candidates = || {
                self.entries
                    .values()
                    .rev()
                    .filter(|e| e.repository == repository && e.version == version)
            };
            candidates()
                .find(|e| e.key == *key)
                .or_else(|| candidates().find(|e| e.key.starts_with(key)))
                .map(|e| e.id)
        })?;
        self.touch(found)
    }

    /// Marks an entry used now; returns it.
    pub fn touch(&mut self, id: u64) -> Option<Entry> {
        let now = self.tick();
        let entry = self.entries.get_mut(&id)?;
        entry.last_used = now;
        Some(entry.clone())
    }

    pub fn reserve(
        &mut self,
        repository: &str,
        key: &str,
        version: &str,
        size: Option<u64>,
        max_size: u64,
        now: Instant,
    ) -> Result<u64, IndexError> {
        let same = |r: &str, k: &str, v: &str| r == repository && k == key && v == version;
        if self
            .entries
            .values()
            .any(|e| same(&e.repository, &e.key, &e.version))
        {
            return Err(IndexError::AlreadyExists {
                key: key.into(),
                version: version.into(),
            });
        }
        if self
            .reservations
            .values()
            .any(|r| same(&r.repository, &r.key, &r.version))
        {
            return Err(IndexError::BeingUploaded {
                key: key.into(),
                version: version.into(),
            });
        }
        if let Some(size) = size.filter(|&s| s > max_size) {
            return Err(IndexError::TooLarge {
                key: key.into(),
                size,
                max: max_size,
            });
        }
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        self.reservations.insert(
            id,
            Reservation {
                repository: repository.into(),
                key: key.into(),
                version: version.into(),
                size,
                parts: BTreeMap::new(),
                last_activity: now,
                committing: false,
            },
        );
        Ok(id)
    }

    fn open_reservation(
        &mut self,
        id: u64,
        repository: &str,
    ) -> Result<&mut Reservation, IndexError> {
        match self.reservations.get_mut(&id) {
            Some(r) if r.repository == repository => {
                if r.committing {
                    Err(IndexError::Committing { id })
                } else {
                    Ok(r)
                }
            }
            // Another repository's reservation is reported exactly like a missing one.
            _ => Err(IndexError::NotReserved(id)),
        }
    }

    /// Checks that a chunk may be written before its body is read.
    pub fn check_chunk(
        &mut self,
        id: u64,
        repository: &str,
        range: ByteRange,
        now: Instant,
    ) -> Result<(), IndexError> {
        let reservation = self.open_reservation(id, repository)?;
        if let Some(size) = reservation.size {
            if range.end >= size {
                return Err(IndexError::BeyondReservedSize {
                    id,
                    start: range.start,
                    end: range.end,
                    size,
                });
            }
        }
        reservation.last_activity = now;
        Ok(())
    }

    /// Records a stored part; false when the reservation went away meanwhile (the caller then
    /// removes the part it wrote).
    pub fn record_chunk(&mut self, id: u64, range: ByteRange, now: Instant) -> bool {
        match self.reservations.get_mut(&id) {
            Some(r) if !r.committing => {
                r.parts.insert(range.start, range.end);
                r.last_activity = now;
                true
            }
            _ => false,
        }
    }

    /// Starts a commit: the parts must tile `0..size` exactly, and `size` must match the
    /// reservation. On error the reservation is dropped (like act: a failed commit leaves nothing).
    pub fn begin_commit(
        &mut self,
        id: u64,
        repository: &str,
        size: u64,
    ) -> Result<CommitPlan, IndexError> {
        let reservation = self.open_reservation(id, repository)?;
        let plan = plan_commit(id, reservation, size);
        match plan {
            Ok(_) => reservation.committing = true,
            Err(_) => {
                self.reservations.remove(&id);
            }
        }
        plan
    }

    /// Ends a commit whose blob is in place: the entry becomes visible and counts as just used.
    pub fn finish_commit(&mut self, id: u64, size: u64, download_secret: String) {
        let Some(r) = self.reservations.remove(&id) else {
            return;
        };
        let last_used = self.tick();
        self.entries.insert(
            id,
            Entry {
                id,
                repository: r.repository,
                key: r.key,
                version: r.version,
                size,
                last_used,
                download_secret,
            },
        );
    }

    pub fn abort_reservation(&mut self, id: u64) {
        self.reservations.remove(&id);
    }

    /// Drops reservations idle for longer than `idle` (commits in progress are left alone);
    /// returns their ids so their parts can be removed.
    pub fn expire_reservations(&mut self, now: Instant, idle: Duration) -> Vec<u64> {
        let expired: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, r)| !r.committing && now.duration_since(r.last_activity) > idle)
            .map(|(&id, _)| id)
            .collect();
        for id in &expired {
            self.reservations.remove(id);
        }
        expired
    }

    /// Removes least recently used entries until the total is at most `max_size`.
    pub fn evict(&mut self, max_size: u64) -> Vec<Entry> {
        let mut total = self.total_bytes();
        let mut by_use: Vec<(u64, u64)> =
            self.entries.values().map(|e| (e.last_used, e.id)).collect();
        by_use.sort_unstable();
        let mut evicted = Vec::new();
        for (_, id) in by_use {
            if total <= max_size {
                break;
            }
            if let Some(entry) = self.entries.remove(&id) {
                total -= entry.size;
                evicted.push(entry);
            }
        }
        evicted
    }
}

fn plan_commit(id: u64, r: &Reservation, size: u64) -> Result<CommitPlan, IndexError> {
    let mut next = 0;
    let mut parts = Vec::with_capacity(r.parts.len());
    for (&start, &end) in &r.parts {
        if start != next {
            let problem = if start > next {
                format!("bytes {next}-{} were never uploaded", start - 1)
            } else {
                format!("chunk {start}-{end} overlaps the previous one")
            };
            return Err(IndexError::BadParts { id, problem });
        }
        parts.push(ByteRange { start, end });
        next = end + 1;
    }
    if next != size {
        return Err(IndexError::SizeMismatch {
            id,
            claimed: size,
            actual: next,
        });
    }
    if let Some(reserved) = r.size.filter(|&s| s != size) {
        return Err(IndexError::SizeMismatch {
            id,
            claimed: reserved,
            actual: next,
        });
    }
    Ok(CommitPlan { parts, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 30;

    fn complete(index: &mut Index, repo: &str, key: &str, version: &str, size: u64) -> u64 {
        let now = Instant::now();
        let id = index
            .reserve(repo, key, version, Some(size), MAX, now)
            .unwrap();
        if size > 0 {
            let range = ByteRange {
                start: 0,
                end: size - 1,
            };
            index.check_chunk(id, repo, range, now).unwrap();
            assert!(index.record_chunk(id, range, now));
        }
        index.begin_commit(id, repo, size).unwrap();
        index.finish_commit(id, size, format!("secret{id}"));
        id
    }

    #[test]
    fn exact_key_beats_newer_prefix_match() {
        let mut index = Index::default();
        let exact = complete(&mut index, "o/r", "linux-deps", "v1", 1);
        complete(&mut index, "o/r", "linux-deps-new", "v1", 1);
        let hit = index.lookup("o/r", &["linux-deps"], "v1").unwrap();
        assert_eq!(hit.id, exact);
    }

    #[test]
    fn prefix_match_takes_the_newest_and_first_key_wins() {
        let mut index = Index::default();
        complete(&mut index, "o/r", "linux-a", "v1", 1);
        let newer = complete(&mut index, "o/r", "linux-b", "v1", 1);
        let other = complete(&mut index, "o/r", "mac-a", "v1", 1);
        assert_eq!(index.lookup("o/r", &["linux-"], "v1").unwrap().id, newer);
        assert_eq!(
            index.lookup("o/r", &["mac", "linux"], "v1").unwrap().id,
            other
        );
        assert_eq!(
            index.lookup("o/r", &["win", "linux-a"], "v1").unwrap().key,
            "linux-a"
        );
        assert_eq!(index.lookup("o/r", &["linux"], "v2"), None);
        assert_eq!(index.lookup("o/other", &["linux"], "v1"), None);
    }

    #[test]
    fn commit_needs_contiguous_parts_of_the_reserved_size() {
        let now = Instant::now();
        let mut index = Index::default();
        let id = index.reserve("o/r", "k", "v", Some(10), MAX, now).unwrap();
        for (start, end) in [(0, 3), (6, 9)] {
            let range = ByteRange { start, end };
            index.check_chunk(id, "o/r", range, now).unwrap();
            index.record_chunk(id, range, now);
        }
        let err = index.begin_commit(id, "o/r", 10).unwrap_err();
        assert_eq!(
            err,
            IndexError::BadParts {
                id,
                problem: "bytes 4-5 were never uploaded".into()
            }
        );
        assert!(
            !index.is_reserved(id),
            "a failed commit drops the reservation"
        );
    }

    #[test]
    fn chunks_beyond_the_reserved_size_are_refused() {
        let now = Instant::now();
        let mut index = Index::default();
        let id = index.reserve("o/r", "k", "v", Some(10), MAX, now).unwrap();
        let err = index
            .check_chunk(id, "o/r", ByteRange { start: 5, end: 10 }, now)
            .unwrap_err();
        assert!(matches!(err, IndexError::BeyondReservedSize { .. }));
        let err = index
            .check_chunk(id, "x/y", ByteRange { start: 0, end: 1 }, now)
            .unwrap_err();
        assert_eq!(err, IndexError::NotReserved(id));
    }

    #[test]
    fn eviction_takes_least_recently_used_first() {
        let mut index = Index::default();
        let a = complete(&mut index, "o/r", "a", "v", 10);
        let b = complete(&mut index, "o/r", "b", "v", 10);
        let c = complete(&mut index, "o/r", "c", "v", 10);
        index.lookup("o/r", &["a"], "v").unwrap();
        let evicted: Vec<u64> = index.evict(20).into_iter().map(|e| e.id).collect();
        assert_eq!(evicted, vec![b]);
        assert!(index.entry(a).is_some() && index.entry(c).is_some());
    }

    #[test]
    fn idle_reservations_expire() {
        let start = Instant::now();
        let mut index = Index::default();
        let id = index.reserve("o/r", "k", "v", None, MAX, start).unwrap();
        let idle = Duration::from_secs(300);
        assert!(index.expire_reservations(start + idle, idle).is_empty());
        let later = start + idle + Duration::from_secs(1);
        assert_eq!(index.expire_reservations(later, idle), vec![id]);
    }

    #[test]
    fn ids_are_not_reused_after_reload() {
        let mut index = Index::default();
        let id = complete(&mut index, "o/r", "k", "v", 1);
        let reloaded = Index::from_file(index.to_file());
        let mut reloaded = reloaded;
        let next = reloaded
            .reserve("o/r", "k2", "v", None, MAX, Instant::now())
            .unwrap();
        assert!(next > id);
    }
}
