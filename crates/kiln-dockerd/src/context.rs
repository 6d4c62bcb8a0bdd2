//! Build contexts and image archives arrive as tar streams (plain or gzip). They are untrusted:
//! entries must stay inside the directory they are unpacked into.
//!
//! Rejected, with an error naming the entry: absolute paths, paths with `..`, hard links to
//! anything outside the archive, and symlinks whose relative target climbs above the root.
//! Absolute symlink targets are kept: like Docker, the engine resolves them inside the
//! context (or image) root, never on the host. Nothing is ever written through a symlink.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid tar entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error(
        "{what} is compressed with {format}; only plain and gzip-compressed tars are supported"
    )]
    Compression {
        what: &'static str,
        format: &'static str,
    },
    #[error("reading {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A reader over the archive with gzip undone.
pub fn decompressed(
    file: std::fs::File,
    what: &'static str,
) -> Result<Box<dyn Read>, ArchiveError> {
    let mut r = BufReader::new(file);
    let head = r
        .fill_buf()
        .map_err(|source| ArchiveError::Io { what, source })?
        .to_vec();
    let format = if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(r)));
    } else if head.starts_with(b"BZh") {
        "bzip2"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        return Ok(Box::new(r));
    };
    Err(ArchiveError::Compression { what, format })
}

/// A tar stream completed with the padding and end-of-archive blocks it may lack: the docker
/// CLI sends `-f` Dockerfiles from outside the context as a last entry without either.
struct EndPadded<R> {
    inner: R,
    read: u64,
    /// Zeros still to add once `inner` is exhausted.
    tail: Option<u64>,
}

impl<R: Read> EndPadded<R> {
    fn new(inner: R) -> Self {
        EndPadded {
            inner,
            read: 0,
            tail: None,
        }
    }
}

impl<R: Read> Read for EndPadded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.tail.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                return Ok(n);
            }
            let align = (512 - self.read % 512) % 512;
            self.tail = Some(align + 1024);
        }
        let left = self.tail.as_mut().expect("set above");
        let n = (*left).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *left -= n as u64;
        Ok(n)
    }
}

/// Unpack the tar (plain or gzip) in `archive` into `dest`, which must exist.
pub fn unpack(archive: &Path, dest: &Path, what: &'static str) -> Result<(), ArchiveError> {
    let io = |source| ArchiveError::Io { what, source };
    let file = std::fs::File::open(archive).map_err(io)?;
    let mut tar = tar::Archive::new(EndPadded::new(decompressed(file, what)?));
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(true);
    tar.set_unpack_xattrs(false);
    for entry in tar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason: String| ArchiveError::Unsafe {
            entry: raw.clone(),
            reason,
        };
        let path = entry.path().map_err(|e| unsafe_entry(e.to_string()))?;
        let rel = inside_root(&path).map_err(unsafe_entry)?;
        let kind = entry.header().entry_type();
        if kind.is_hard_link() || kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|e| unsafe_entry(e.to_string()))?
                .ok_or_else(|| unsafe_entry("link without a target".into()))?
                .into_owned();
            if kind.is_hard_link() {
                inside_root(&target).map_err(|r| {
                    unsafe_entry(format!(
                        "hard link to {} leaves the archive: {r}",
                        target.display()
                    ))
                })?;
            } else if target.is_relative() {
                let base = rel.parent().unwrap_or(Path::new(""));
                inside_root(&base.join(&target)).map_err(|_| {
                    unsafe_entry(format!(
                        "symlink to {} points outside the archive",
                        target.display()
                    ))
                })?;
            }
        }
        if matches!(
            kind,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        ) {
            // Device nodes and pipes have no place in a build context.
            continue;
        }
        let unpacked = entry
            .unpack_in(dest)
            .map_err(|e| unsafe_entry(e.to_string()))?;
        if !unpacked {
            return Err(unsafe_entry("path leaves the archive".into()));
        }
    }
    Ok(())
}

/// Write a request body to `path` as it arrives.
pub async fn receive(body: axum::body::Body, path: &Path, what: &str) -> Result<u64, String> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let fail = |e: &dyn std::fmt::Display| format!("receiving {what}: {e}");
    let mut file = tokio::fs::File::create(path).await.map_err(|e| fail(&e))?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| fail(&e))?;
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(|e| fail(&e))?;
    }
    file.flush().await.map_err(|e| fail(&e))?;
    Ok(size)
}

/// The path made relative and normalized, or why it leaves the root: absolute, or with a `..`
/// that climbs above it.
pub fn inside_root(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("path leaves the archive (\"..\")".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed".into())
            }
        }
    }
    // `a/../b` is harmless but unusual; reject any `..` so that no entry depends on order.
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("path leaves the archive (\"..\")".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entry<'a> = (&'a str, tar::EntryType, &'a str);

    fn tar_with(entries: &[Entry]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    // Bypass the tar crate's own checks: the archive is hostile on purpose.
                    let name = h.as_old_mut();
                    name.linkname[..data.len()].copy_from_slice(data.as_bytes());
                    name.name[..path.len()].copy_from_slice(path.as_bytes());
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
            }
        }
        b.finish().unwrap();
        f
    }

    #[test]
    fn hostile_entries_are_rejected_by_name() {
        use tar::EntryType::{Link, Regular, Symlink};
        let cases: Vec<(Vec<Entry>, &str)> = vec![
            (vec![("../evil", Regular, "x")], "\"../evil\""),
            (vec![("a/../../evil", Regular, "x")], "\"a/../../evil\""),
            (vec![("/etc/evil", Regular, "x")], "\"/etc/evil\""),
            (vec![("hl", Link, "../../etc/passwd")], "hard link"),
            (vec![("hl", Link, "/etc/passwd")], "hard link"),
            (vec![("sub/ln", Symlink, "../../etc")], "points outside"),
        ];
        for (entries, needle) in cases {
            let f = tar_with(&entries);
            let dest = tempfile::tempdir().unwrap();
            let err = unpack(f.path(), dest.path(), "build context")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{entries:?}: {err}");
        }
    }

    #[test]
    fn ordinary_contexts_unpack() {
        use tar::EntryType::{Regular, Symlink};
        let f = tar_with(&[
            ("Dockerfile", Regular, "FROM scratch\n"),
            ("./src/a.txt", Regular, "A"),
            ("abs", Symlink, "/usr/bin/env"),
            ("src/rel", Symlink, "a.txt"),
        ]);
        let dest = tempfile::tempdir().unwrap();
        unpack(f.path(), dest.path(), "build context").unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join("src/a.txt")).unwrap(),
            "A"
        );
        assert_eq!(
            std::fs::read_link(dest.path().join("abs")).unwrap(),
            Path::new("/usr/bin/env")
        );
    }

    #[test]
    fn a_last_entry_without_padding_is_accepted() {
        use tar::EntryType::Regular;
        let f = tar_with(&[("Dockerfile", Regular, "FROM scratch\n")]);
        // Cut the padding and the end-of-archive blocks, as the docker CLI does with `-f`.
        let bytes = std::fs::read(f.path()).unwrap();
        std::fs::write(f.path(), &bytes[..512 + 13]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        unpack(f.path(), dest.path(), "build context").unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join("Dockerfile")).unwrap(),
            "FROM scratch\n"
        );
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        use tar::EntryType::{Regular, Symlink};
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let f = tar_with(&[("out", Symlink, &target), ("out/pwned", Regular, "x")]);
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(f.path(), dest.path(), "build context").unwrap_err();
        assert!(err.to_string().contains("out/pwned"), "{err}");
        assert!(!outside.path().join("pwned").exists());
    }
}
