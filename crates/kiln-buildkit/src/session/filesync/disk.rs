//! File system helpers for receiving: the staging directory, removal that does not follow
//! symlinks, and Go-compatible times.

use super::SyncError;
use bollard_buildkit_proto::fsutil::types::Stat;
use filetime::FileTime;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A private directory inside `dest` where entries are built before being renamed into place.
pub(super) struct Staging {
    pub name: String,
    dir: PathBuf,
}

impl Staging {
    pub fn create(dest: &Path) -> Result<Self, SyncError> {
        let name = format!(".kiln-sync-{}", uuid::Uuid::new_v4().simple());
        let dir = dest.join(&name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| SyncError::io("create staging directory", &dir, e))?;
        Ok(Staging { name, dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = remove_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove staging directory");
        }
    }
}

pub(super) fn lstat(path: &Path) -> Result<Option<Metadata>, SyncError> {
    match fs::symlink_metadata(path) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SyncError::io("stat", path, e)),
    }
}

pub(super) fn remove_if_dir(full: &Path, existing: Option<&Metadata>) -> Result<(), SyncError> {
    if existing.is_some_and(Metadata::is_dir) {
        remove_all(full).map_err(|e| SyncError::io("remove", full, e))?;
    }
    Ok(())
}

/// Removes a file, symlink or whole tree without following symlinks; directories without
/// write or search permission are opened up first (when not running as root).
pub(super) fn remove_all(path: &Path) -> io::Result<()> {
    let md = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    if !md.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            for entry in walkdir::WalkDir::new(path).follow_links(false) {
                let entry = entry?;
                if entry.file_type().is_dir() {
                    let mode = entry.metadata()?.mode();
                    fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode | 0o700))?;
                }
            }
            fs::remove_dir_all(path)
        }
        r => r,
    }
}

pub(super) fn create_new(tmp: &Path, full: &Path) -> Result<File, SyncError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(|e| SyncError::io("create", full, e))
}

/// Best effort, like fsutil (`rewriteMetadata` ignores `Setxattr` errors): unprivileged
/// receivers cannot set `trusted.*` or `security.*`.
pub(super) fn set_xattrs(path: &Path, stat: &Stat) {
    for (name, value) in &stat.xattrs {
        if let Err(e) = xattr::set(path, name, value) {
            tracing::debug!(path = %stat.path, xattr = %name, error = %e, "xattr not set");
        }
    }
}

pub(super) fn mtime_ns(md: &Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

pub(super) fn file_time(ns: i64) -> FileTime {
    FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_mtimes_convert() {
        let t = file_time(-1);
        assert_eq!((t.unix_seconds(), t.nanoseconds()), (-1, 999_999_999));
        let t = file_time(1_700_000_000_123_456_789);
        assert_eq!(
            (t.unix_seconds(), t.nanoseconds()),
            (1_700_000_000, 123_456_789)
        );
    }
}
