//! An on-disk content-addressed blob store: `blobs/sha256/<hex>` plus `ingest/` for writes in
//! progress. A blob appears under its digest name only after it was fully written, fsynced and
//! verified, by an atomic rename; a crash leaves at most a stray file in `ingest/`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Sha256Writer};

/// Errors of the content store. Each names the blob or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blob is not in the store.
    #[error("blob {0}: not found in content store")]
    NotFound(Digest),
    /// Written content did not hash to what the caller expected.
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the caller said the content was.
        expected: Digest,
        /// What the content actually hashed to.
        actual: Digest,
    },
    /// A file-system operation failed.
    #[error("content store {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A content-addressed blob store rooted at a directory. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a store at `dir`. Files a crash left in `ingest/` never
    /// appear as blobs.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = dir.as_ref().to_path_buf();
        for sub in ["blobs/sha256", "ingest"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(ContentStore { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let p = self.path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Opens the blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(digest.clone()),
            _ => io_err(&p)(e),
        })
    }

    /// Reads the whole blob.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(io_err(&self.path(digest)))?;
        Ok(buf)
    }

    /// Stores `bytes` and returns their digest.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::sha256(bytes);
        if self.has(&digest) {
            return Ok(digest);
        }
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(io_err(&w.path.clone()))?;
        Ok(w.commit(Some(&digest))?.0)
    }

    /// A writer for a new blob; call [`BlobWriter::commit`] when done. Dropping it uncommitted
    /// removes the temporary file.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let dir = self.root.join("ingest");
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        let path = tmp.path().to_path_buf();
        Ok(BlobWriter {
            store: self.clone(),
            inner: Sha256Writer::new(tmp),
            path,
        })
    }

    /// Removes the blob; absent blobs are not an error.
    pub fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        let p = self.path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Every blob with its size, sorted by digest.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(d) = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
            else {
                continue;
            };
            let meta = entry.metadata().map_err(io_err(&entry.path()))?;
            out.push((d, meta.len()));
        }
        out.sort();
        Ok(out)
    }
}

/// A blob being written: hashes as it goes into a temporary file under `ingest/`.
pub struct BlobWriter {
    store: ContentStore,
    inner: Sha256Writer<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    /// Verifies the content against `expected` (if given), fsyncs it and renames it into place.
    /// On mismatch the temporary file is removed and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let (tmp, digest, size) = self.inner.finish();
        if let Some(exp) = expected {
            if *exp != digest {
                return Err(StoreError::DigestMismatch {
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        tmp.as_file().sync_all().map_err(io_err(&self.path))?;
        let dest = self.store.path(&digest);
        if dest.exists() {
            return Ok((digest, size));
        }
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        // Make the rename itself durable.
        if let Some(parent) = dest.parent() {
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_blobs_are_stored_under_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.write_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::sha256(b"hello"));
        assert!(store.has(&d));
        assert_eq!(store.read(&d).unwrap(), b"hello");
        assert_eq!(store.size(&d).unwrap(), 5);
        assert!(store
            .path(&d)
            .ends_with(format!("blobs/sha256/{}", d.hex())));
        assert_eq!(store.list().unwrap(), vec![(d.clone(), 5)]);
        store.delete(&d).unwrap();
        assert!(!store.has(&d));
        assert!(matches!(store.read(&d), Err(StoreError::NotFound(_))));
        store.delete(&d).unwrap();
    }

    #[test]
    fn commit_with_wrong_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"actual content").unwrap();
        let wrong = Digest::sha256(b"other content");
        let err = w.commit(Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains("mismatch"), "{err}");
        assert!(!store.has(&wrong));
        assert!(!store.has(&Digest::sha256(b"actual content")));
        assert_eq!(store.list().unwrap(), vec![]);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn uncommitted_writer_leaves_no_blob_or_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        {
            let mut w = store.writer().unwrap();
            w.write_all(b"partial").unwrap();
            // Dropped without commit, as after an interrupted download.
        }
        assert_eq!(store.list().unwrap(), vec![]);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        let w = store.writer().unwrap();
        let (d, n) = w.commit(None).unwrap();
        assert_eq!((d, n), (Digest::sha256(b""), 0));
    }
}
