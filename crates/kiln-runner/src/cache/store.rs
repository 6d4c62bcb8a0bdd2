//! The cache's files. Layout under the configured dir:
//!
//! ```text
//! index.json          complete entries (see `index`), replaced atomically
//! blobs/<id>          one complete archive per entry
//! uploads/<id>/       parts of an open reservation, `<start>-<end>.part`
//! ```
//!
//! Every file that becomes visible under a final name was written under a temporary one and
//! renamed, so a crash leaves either the old or the new state plus temporaries, and `open`
//! removes everything the index does not vouch for.

use std::io;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use tokio::fs;
use tokio::io::AsyncWriteExt;

use super::index::{CommitPlan, Entry, Index, IndexFile, INDEX_FORMAT};
use super::range::ByteRange;
use super::CacheError;

const INDEX_FILE: &str = "index.json";

pub struct Store {
    root: PathBuf,
}

/// Why a chunk could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {start}-{end}: body has {got} bytes, Content-Range says {want}")]
    LengthMismatch {
        start: u64,
        end: u64,
        got: u64,
        want: u64,
    },
    #[error("chunk body: {0}")]
    Body(String),
    #[error("writing chunk {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens (or creates) the cache dir and returns the index, with orphans cleaned: parts of
    /// uploads cut by a restart, temporaries, blobs without an entry and entries without a
    /// (full-size) blob.
    pub async fn open(root: &Path) -> Result<(Store, Index), CacheError> {
        let store = Store {
            root: root.to_owned(),
        };
        for dir in [store.root.clone(), store.blobs_dir()] {
            fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        }
        let uploads = store.uploads_dir();
        match fs::remove_dir_all(&uploads).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&uploads)(e)),
            _ => {}
        }
        fs::create_dir_all(&uploads)
            .await
            .map_err(io_err(&uploads))?;

        let mut index = store.read_index().await?;
        let mut blob_sizes = std::collections::HashMap::new();
        let blobs = store.blobs_dir();
        let mut dir = fs::read_dir(&blobs).await.map_err(io_err(&blobs))?;
        while let Some(item) = dir.next_entry().await.map_err(io_err(&blobs))? {
            let path = item.path();
            let id = item
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            let len = item.metadata().await.map_err(io_err(&path))?.len();
            match id {
                Some(id) if index.entry(id).is_some() => {
                    blob_sizes.insert(id, len);
                }
                _ => {
                    tracing::info!(path = %path.display(), "removing orphaned cache file");
                    let _ = fs::remove_file(&path).await;
                }
            }
        }
        let dropped = index.retain_entries(|e| blob_sizes.get(&e.id) == Some(&e.size));
        if dropped > 0 {
            tracing::warn!(dropped, "cache entries without an intact blob were dropped");
            store.save_index(&index.to_file()).await?;
        }
        Ok((store, index))
    }

    fn index_path(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    fn upload_dir(&self, id: u64) -> PathBuf {
        self.uploads_dir().join(id.to_string())
    }

    pub fn blob_path(&self, id: u64) -> PathBuf {
        self.blobs_dir().join(id.to_string())
    }

    async fn read_index(&self) -> Result<Index, CacheError> {
        let path = self.index_path();
        let text = match fs::read(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let file: IndexFile =
            serde_json::from_slice(&text).map_err(|source| CacheError::Index {
                path: path.clone(),
                source,
            })?;
        if file.format != INDEX_FORMAT {
            return Err(CacheError::IndexFormat {
                path,
                found: file.format,
            });
        }
        Ok(Index::from_file(file))
    }

    /// Replaces the index file atomically.
    pub async fn save_index(&self, file: &IndexFile) -> Result<(), CacheError> {
        let path = self.index_path();
        let text = serde_json::to_vec_pretty(file).expect("index serializes");
        let temp = self.root.join(format!("{INDEX_FILE}.tmp"));
        write_synced(&temp, &text).await.map_err(io_err(&temp))?;
        fs::rename(&temp, &path).await.map_err(io_err(&path))?;
        sync_dir(&self.root).await;
        Ok(())
    }

    /// Streams one chunk's body into its part file; the body must be exactly `range.len()` bytes.
    pub async fn write_chunk<S, E>(
        &self,
        id: u64,
        range: ByteRange,
        mut body: S,
    ) -> Result<PathBuf, ChunkError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let dir = self.upload_dir(id);
        let final_path = dir.join(format!("{}-{}.part", range.start, range.end));
        let temp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ChunkError::Io { path, source }
        };
        fs::create_dir_all(&dir).await.map_err(io(&dir))?;
        let result = async {
            let mut file = fs::File::create(&temp).await.map_err(io(&temp))?;
            let want = range.len();
            let mut got = 0u64;
            while let Some(data) = body.next().await {
                let data = data.map_err(|e| ChunkError::Body(e.to_string()))?;
                got += data.len() as u64;
                if got > want {
                    break;
                }
                file.write_all(&data).await.map_err(io(&temp))?;
            }
            if got != want {
                return Err(ChunkError::LengthMismatch {
                    start: range.start,
                    end: range.end,
                    got,
                    want,
                });
            }
            file.flush().await.map_err(io(&temp))?;
            fs::rename(&temp, &final_path)
                .await
                .map_err(io(&final_path))
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&temp).await;
        }
        result.map(|()| final_path)
    }

    /// Concatenates the parts in offset order into the entry's blob, synced, then renamed into
    /// place; the parts are removed either way.
    pub async fn assemble(&self, id: u64, plan: &CommitPlan) -> Result<(), CacheError> {
        let dir = self.upload_dir(id);
        let temp = self.uploads_dir().join(format!("{id}.assembling"));
        let result = async {
            let mut out = fs::File::create(&temp).await.map_err(io_err(&temp))?;
            for part in &plan.parts {
                let path = dir.join(format!("{}-{}.part", part.start, part.end));
                let mut input = fs::File::open(&path).await.map_err(io_err(&path))?;
                let copied = tokio::io::copy(&mut input, &mut out)
                    .await
                    .map_err(io_err(&path))?;
                if copied != part.len() {
                    return Err(CacheError::Io {
                        path,
                        source: io::Error::other(format!(
                            "part has {copied} bytes, expected {}",
                            part.len()
                        )),
                    });
                }
            }
            out.sync_all().await.map_err(io_err(&temp))?;
            let blob = self.blob_path(id);
            fs::rename(&temp, &blob).await.map_err(io_err(&blob))?;
            sync_dir(&self.blobs_dir()).await;
            Ok(())
        }
        .await;
        let _ = fs::remove_file(&temp).await;
        self.remove_upload(id).await;
        result
    }

    pub async fn remove_upload(&self, id: u64) {
        let _ = fs::remove_dir_all(self.upload_dir(id)).await;
    }

    pub async fn remove_blob(&self, entry: &Entry) {
        if let Err(e) = fs::remove_file(self.blob_path(entry.id)).await {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(id = entry.id, error = %e, "removing evicted cache blob");
            }
        }
    }

    /// Upload dirs whose reservation is gone (a chunk that finished after its reservation
    /// expired or was committed): removed by the periodic sweep.
    pub async fn stray_uploads(&self, is_reserved: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut stray = Vec::new();
        let Ok(mut dir) = fs::read_dir(self.uploads_dir()).await else {
            return stray;
        };
        while let Ok(Some(item)) = dir.next_entry().await {
            let id = item
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id.filter(|&id| !is_reserved(id)) {
                stray.push(id);
            }
        }
        stray
    }
}

async fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path).await?;
    file.write_all(data).await?;
    file.sync_all().await
}

/// Makes a rename durable. Best effort: not every filesystem lets a directory be fsynced.
async fn sync_dir(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir).await {
        let _ = handle.sync_all().await;
    }
}
