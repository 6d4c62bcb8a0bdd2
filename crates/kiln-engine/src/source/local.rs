//! Local directories (the build context): scanned once per solve into a content manifest whose
//! checksum is the source's cache key, copied into a layer only when that key is new. COPY
//! cache keys use the checksum of just the paths they select, so editing one file re-runs only
//! the steps that read it.

use crate::fsutil::resolve_in_root;
use crate::glob;
use kiln_dockerfile::dockerignore::DockerIgnore;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("invalid exclude patterns for local {name:?}: {reason}")]
    Patterns { name: String, reason: String },
    #[error("reading build context {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to calculate checksum of ref: \"{path}\": not found")]
    NotFound { path: String },
}

/// One entry of a scanned directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { digest: [u8; 32] },
    Symlink { target: String },
}

#[derive(Debug, Clone)]
pub struct LocalEntry {
    pub kind: EntryKind,
    pub mode: u32,
}

/// A scanned local directory: what is included, and its checksum.
#[derive(Debug)]
pub struct LocalSnapshot {
    pub root: PathBuf,
    /// Relative paths (no leading `/`), sorted; parents come before children.
    pub entries: BTreeMap<String, LocalEntry>,
    pub checksum: String,
    /// Total size of the included regular files.
    pub bytes: u64,
}

/// Digests of files hashed before, by path and stat fingerprint (device, inode, size, mtime,
/// ctime). Any write to a file, or a new file renamed over it, changes its ctime, so a hit is
/// the same content: an unchanged context is not read again. Kept in memory by the engine.
#[derive(Default)]
pub struct HashCache {
    files: Mutex<HashMap<PathBuf, (Fingerprint, [u8; 32])>>,
}

type Fingerprint = (u64, u64, u64, i64, i64, i64, i64);

/// Bound on remembered files (about 200 bytes each, so about 13 MiB); past it the cache starts
/// over. A shared builder sees new context paths without end: this keeps its memory flat.
const HASH_CACHE_MAX: usize = 1 << 16;

impl HashCache {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Fingerprint, [u8; 32])>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn digest(&self, path: &Path, meta: &fs::Metadata, buf: &mut Vec<u8>) -> io::Result<[u8; 32]> {
        let fingerprint = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        );
        if let Some((seen, digest)) = self.files().get(path) {
            if *seen == fingerprint {
                return Ok(*digest);
            }
        }
        let digest = hash_file(path, buf)?;
        let mut map = self.files();
        if map.len() >= HASH_CACHE_MAX {
            map.clear();
        }
        map.insert(path.to_path_buf(), (fingerprint, digest));
        Ok(digest)
    }
}

/// Whether the context path `rel` is wanted by the include (follow) path `inc`, a pattern of
/// Go's `filepath.Match` per component as fsutil reads them: `rel` matches it, lies below a
/// match, or is a directory on the way to one.
fn included(inc: &str, rel: &str, is_dir: bool) -> bool {
    let (want, have): (Vec<&str>, Vec<&str>) = (inc.split('/').collect(), rel.split('/').collect());
    let n = want.len().min(have.len());
    (0..n).all(|i| glob::path_match(want[i], have[i])) && (have.len() >= want.len() || is_dir)
}

/// The include paths plus the targets of the symlinks they name, as fsutil's `FollowLinks`
/// does for `local.followpaths`: `COPY link /x` needs the link's target too (repeatedly, for
/// links to links, and for links on the way to a path). Targets outside `root` are left out.
fn follow_links(root: &Path, mut includes: Vec<String>) -> Vec<String> {
    let mut i = 0;
    while i < includes.len() && includes.len() < 4096 {
        let pattern: Vec<String> = includes[i].split('/').map(str::to_string).collect();
        // Every existing path matching a prefix of the pattern, component by component.
        let mut level: Vec<PathBuf> = vec![PathBuf::new()];
        for (depth, part) in pattern.iter().enumerate() {
            let mut next = Vec::new();
            for dir in &level {
                let Ok(entries) = fs::read_dir(root.join(dir)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !glob::path_match(part, &name) {
                        continue;
                    }
                    let rel = dir.join(&name);
                    let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                    if is_link {
                        if let Ok(target) = fs::read_link(root.join(&rel)) {
                            // Absolute targets are read within the context; `..` stops at it.
                            let joined = dir.join(&target).to_string_lossy().into_owned();
                            let cleaned = crate::fsutil::clean_abs(&joined);
                            let mut followed = cleaned.trim_start_matches('/').to_string();
                            let rest = &pattern[depth + 1..];
                            if !rest.is_empty() {
                                followed = format!("{followed}/{}", rest.join("/"));
                            }
                            if !followed.is_empty() && !includes.contains(&followed) {
                                includes.push(followed);
                            }
                        }
                    }
                    next.push(rel);
                }
            }
            level = next;
        }
        i += 1;
    }
    includes
}

/// Scan `root`, applying `.dockerignore`-style `exclude` patterns and `include` (follow) paths.
pub fn scan(
    name: &str,
    root: &Path,
    include: &[String],
    exclude: &[String],
    hashes: &HashCache,
) -> Result<LocalSnapshot, LocalError> {
    let ignore = DockerIgnore::parse(&exclude.join("\n")).map_err(|e| LocalError::Patterns {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    let has_exceptions = exclude.iter().any(|p| p.trim_start().starts_with('!'));
    let includes: Vec<String> = include
        .iter()
        .map(|p| p.trim_start_matches('/').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty() && p != ".")
        .collect();
    let includes = follow_links(root, includes);
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| LocalError::Io { path, source }
    };

    let mut entries = BTreeMap::new();
    let mut bytes = 0;
    let mut buf = Vec::new();
    let mut walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter();
    while let Some(item) = walker.next() {
        let item = item.map_err(|e| LocalError::Io {
            path: e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk error")),
        })?;
        let rel = match item.path().strip_prefix(root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => continue,
        };
        let is_dir = item.file_type().is_dir();
        if !includes.is_empty() && !includes.iter().any(|inc| included(inc, &rel, is_dir)) {
            if is_dir {
                walker.skip_current_dir();
            }
            continue;
        }
        if ignore.is_excluded(&rel) {
            if is_dir && !has_exceptions {
                walker.skip_current_dir();
            }
            continue;
        }
        let meta = item.metadata().map_err(|e| LocalError::Io {
            path: item.path().display().to_string(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("stat error")),
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        let kind = if is_dir {
            EntryKind::Dir
        } else if item.file_type().is_symlink() {
            let target = fs::read_link(item.path()).map_err(io_err(item.path()))?;
            EntryKind::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if item.file_type().is_file() {
            bytes += meta.len();
            EntryKind::File {
                digest: hashes
                    .digest(item.path(), &meta, &mut buf)
                    .map_err(io_err(item.path()))?,
            }
        } else {
            // Sockets, fifos and devices are not build context.
            continue;
        };
        entries.insert(rel, LocalEntry { kind, mode });
    }
    // A directory kept only because an exception matched something inside it must exist.
    let mut checksum = Sha256::new();
    for (path, entry) in &entries {
        hash_entry(&mut checksum, path, entry);
    }
    Ok(LocalSnapshot {
        root: root.to_path_buf(),
        entries,
        checksum: format!("sha256:{}", hex::encode(checksum.finalize())),
        bytes,
    })
}

fn hash_entry(h: &mut Sha256, path: &str, entry: &LocalEntry) {
    h.update(path.as_bytes());
    h.update([0]);
    h.update(entry.mode.to_le_bytes());
    match &entry.kind {
        EntryKind::Dir => h.update(b"d"),
        EntryKind::File { digest } => {
            h.update(b"f");
            h.update(digest);
        }
        EntryKind::Symlink { target } => {
            h.update(b"l");
            h.update(target.as_bytes());
        }
    }
    h.update([0]);
}

/// `buf` is reused between files: zeroing a fresh buffer per file costs more than hashing a
/// small one.
fn hash_file(path: &Path, buf: &mut Vec<u8>) -> io::Result<[u8; 32]> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    buf.resize(256 * 1024, 0);
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

impl LocalSnapshot {
    /// Checksum of what a COPY of `src` would read: the matched paths and everything below
    /// them. Symlinks in `src` are resolved inside the context, never outside it.
    pub fn selection_checksum(
        &self,
        src: &str,
        allow_wildcard: bool,
        allow_empty: bool,
        follow_symlink: bool,
    ) -> Result<String, LocalError> {
        let matches = self.select(src, allow_wildcard, follow_symlink)?;
        if matches.is_empty() && !(allow_wildcard && allow_empty && glob::has_meta(src)) {
            return Err(LocalError::NotFound {
                path: src.to_string(),
            });
        }
        let mut h = Sha256::new();
        for m in &matches {
            h.update(m.as_bytes());
            h.update([1]);
            for (path, entry) in self.subtree(m) {
                hash_entry(&mut h, path, entry);
            }
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The relative paths `src` selects (after resolving symlinks inside the root).
    pub fn select(
        &self,
        src: &str,
        allow_wildcard: bool,
        follow_symlink: bool,
    ) -> Result<Vec<String>, LocalError> {
        let clean = crate::fsutil::clean_abs(src);
        let rel = clean.trim_start_matches('/').to_string();
        let candidates: Vec<String> = if allow_wildcard && glob::has_meta(&rel) {
            self.entries
                .keys()
                .filter(|p| glob::path_match(&rel, p))
                .cloned()
                .collect()
        } else {
            vec![rel]
        };
        let mut out = Vec::new();
        for c in candidates {
            let resolved = if c.is_empty() {
                String::new()
            } else {
                let host = resolve_in_root(&self.root, &c, follow_symlink).map_err(|e| {
                    LocalError::Io {
                        path: c.clone(),
                        source: e,
                    }
                })?;
                match host.strip_prefix(&self.root) {
                    Ok(r) => r.to_string_lossy().into_owned(),
                    Err(_) => continue,
                }
            };
            if resolved.is_empty() || self.entries.contains_key(&resolved) {
                out.push(resolved);
            }
        }
        Ok(out)
    }

    fn subtree<'a>(
        &'a self,
        rel: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a LocalEntry)> + 'a {
        let prefix = format!("{rel}/");
        self.entries
            .iter()
            .filter(move |(p, _)| rel.is_empty() || *p == rel || p.starts_with(&prefix))
    }

    /// Copy the included entries into `dest` (a new layer), owned by root like BuildKit's
    /// file sync does, keeping modes and modification times.
    ///
    /// With `link`, the root is kiln's own copy whose files are replaced and never rewritten
    /// (see [`crate::session::Session::local_dirs_are_private`]): a regular file that already
    /// has the owner the layer needs is hard-linked instead. Layers are never written after
    /// they are committed, so the two names can share an inode; creating inodes is most of
    /// the cost of a large context.
    pub fn copy_into(&self, dest: &Path, link: bool) -> Result<(), LocalError> {
        let chown = crate::sys::euid() == 0;
        let mut dirs = Vec::new();
        for (rel, entry) in &self.entries {
            let src = self.root.join(rel);
            let dst = dest.join(rel);
            let err = |source| LocalError::Io {
                path: src.display().to_string(),
                source,
            };
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(err)?;
            }
            match &entry.kind {
                EntryKind::Dir => {
                    fs::create_dir_all(&dst).map_err(err)?;
                    dirs.push((src.clone(), dst.clone(), entry.mode));
                }
                EntryKind::File { .. } if link && linkable(&src, chown) => {
                    if fs::hard_link(&src, &dst).is_err() {
                        // Another file system, or a link limit: copy after all.
                        copy_file(&src, &dst, entry.mode).map_err(err)?;
                    } else {
                        continue;
                    }
                }
                EntryKind::File { .. } => {
                    copy_file(&src, &dst, entry.mode).map_err(err)?;
                }
                EntryKind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &dst).map_err(err)?;
                }
            }
            if chown {
                let _ = std::os::unix::fs::lchown(&dst, Some(0), Some(0));
            }
        }
        // Directory modes and times last: writing children changes a directory's mtime.
        for (src, dst, mode) in dirs.into_iter().rev() {
            let _ = fs::set_permissions(&dst, fs::Permissions::from_mode(mode));
            copy_mtime(&src, &dst);
        }
        Ok(())
    }
}

fn copy_file(src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    fs::copy(src, dst)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    copy_mtime(src, dst);
    Ok(())
}

/// Whether `src` already has the owner a layer's copy would get (root's when kiln runs as
/// root; as is otherwise), so that a hard link is the same entry a copy would be.
fn linkable(src: &Path, as_root: bool) -> bool {
    !as_root || fs::symlink_metadata(src).is_ok_and(|m| m.uid() == 0 && m.gid() == 0)
}

fn copy_mtime(src: &Path, dst: &Path) {
    if let Ok(m) = fs::symlink_metadata(src) {
        let t = filetime::FileTime::from_unix_time(m.mtime(), m.mtime_nsec() as u32);
        let _ = filetime::set_symlink_file_times(dst, t, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("src/sub")).unwrap();
        fs::write(r.join("src/a.c"), "int a;").unwrap();
        fs::write(r.join("src/sub/b.c"), "int b;").unwrap();
        fs::write(r.join("README"), "hi").unwrap();
        fs::create_dir_all(r.join("node_modules/x")).unwrap();
        fs::write(r.join("node_modules/x/i.js"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("evil")).unwrap();
        dir
    }

    #[test]
    fn excluded_paths_are_not_scanned() {
        let dir = context();
        let snap = scan(
            "context",
            dir.path(),
            &[],
            &["node_modules".into()],
            &HashCache::default(),
        )
        .unwrap();
        assert!(snap.entries.contains_key("src/sub/b.c"));
        assert!(!snap.entries.keys().any(|k| k.starts_with("node_modules")));
    }

    #[test]
    fn selection_checksum_ignores_unrelated_files() {
        let dir = context();
        let before = scan("context", dir.path(), &[], &[], &HashCache::default()).unwrap();
        fs::write(dir.path().join("README"), "changed").unwrap();
        let after = scan("context", dir.path(), &[], &[], &HashCache::default()).unwrap();
        assert_ne!(before.checksum, after.checksum);
        let sel = |s: &LocalSnapshot| s.selection_checksum("src", false, false, true).unwrap();
        assert_eq!(sel(&before), sel(&after));
        let whole = |s: &LocalSnapshot| s.selection_checksum(".", false, false, true).unwrap();
        assert_ne!(whole(&before), whole(&after));
    }

    #[test]
    fn remembered_digests_notice_rewrites_that_keep_size_and_mtime() {
        let dir = context();
        let cache = HashCache::default();
        let file = dir.path().join("src/a.c");
        let before = scan("context", dir.path(), &[], &[], &cache).unwrap();
        let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&file).unwrap());
        fs::write(&file, "int b;").unwrap();
        filetime::set_file_mtime(&file, mtime).unwrap();
        let after = scan("context", dir.path(), &[], &[], &cache).unwrap();
        assert_ne!(before.checksum, after.checksum);
        let fresh = scan("context", dir.path(), &[], &[], &HashCache::default()).unwrap();
        assert_eq!(after.checksum, fresh.checksum);
        let again = scan("context", dir.path(), &[], &[], &cache).unwrap();
        assert_eq!(again.checksum, fresh.checksum);
    }

    #[test]
    fn wildcards_select_matching_files() {
        let dir = context();
        let snap = scan("context", dir.path(), &[], &[], &HashCache::default()).unwrap();
        assert_eq!(snap.select("src/*.c", true, true).unwrap(), vec!["src/a.c"]);
        assert!(snap
            .selection_checksum("*.nothing", true, true, true)
            .is_ok());
        assert!(snap
            .selection_checksum("*.nothing", true, false, true)
            .is_err());
    }

    #[test]
    fn symlink_out_of_the_context_is_not_found() {
        let dir = context();
        let snap = scan("context", dir.path(), &[], &[], &HashCache::default()).unwrap();
        let err = snap
            .selection_checksum("evil", false, false, true)
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn copy_into_keeps_modes() {
        let dir = context();
        fs::set_permissions(dir.path().join("README"), fs::Permissions::from_mode(0o751)).unwrap();
        let snap = scan("context", dir.path(), &[], &[], &HashCache::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        snap.copy_into(out.path(), false).unwrap();
        let m = fs::metadata(out.path().join("README")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o751);
        assert_eq!(
            fs::read_link(out.path().join("evil")).unwrap(),
            Path::new("/etc/passwd")
        );
    }
}
