//! The copying snapshotter, for where overlayfs can't be mounted (old kernels in a user
//! namespace, state dirs on filesystems overlay won't take as upper). A chain is materialized
//! by copying its layers in order, applying whiteouts; after the work, a walk comparing inode
//! and change time against the state before finds what changed, and that is written as an
//! overlay-format diff — so layers look the same whichever snapshotter made them.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// What a path looked like right after materializing: enough to spot any change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

pub type Manifest = HashMap<PathBuf, Stamp>;

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS
        .iter()
        .any(|x| matches!(xattr::get(path, x), Ok(Some(v)) if v == b"y"))
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copy one entry (not recursing) with its metadata.
fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata, chown: bool) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_dir() {
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(dst)?;
                fs::create_dir(dst)?;
            }
            Err(_) => fs::create_dir(dst)?,
        }
    } else {
        remove_any(dst)?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        } else if ft.is_file() {
            fs::copy(src, dst)?;
        } else {
            // Devices and fifos: recreate with mknod where allowed.
            let path =
                std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dst.as_os_str()))
                    .map_err(|_| io::Error::other("NUL in path"))?;
            // SAFETY: valid C string; mknod only creates the node.
            let rc = unsafe { libc::mknod(path.as_ptr(), meta.mode(), meta.rdev() as libc::dev_t) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    if chown {
        let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    }
    if !ft.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    crate::fsutil::copy_xattrs(src, dst);
    let mtime = filetime::FileTime::from_unix_time(meta.mtime(), meta.mtime_nsec() as u32);
    let _ = filetime::set_symlink_file_times(dst, mtime, mtime);
    Ok(())
}

/// Apply one overlay-format layer directory on top of `dest`.
pub fn apply_layer_dir(layer: &Path, dest: &Path) -> io::Result<()> {
    let chown = crate::sys::euid() == 0;
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(layer)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(layer).expect("under layer");
        let dst = dest.join(rel);
        let meta = entry.path().symlink_metadata()?;
        if is_whiteout(&meta) {
            remove_any(&dst)?;
            continue;
        }
        if meta.is_dir() && is_opaque(entry.path()) {
            remove_any(&dst)?;
        }
        copy_entry(entry.path(), &dst, &meta, chown)?;
        if meta.is_dir() {
            dirs.push((dst, meta));
        }
    }
    // Writing children changed the directories' times; restore them.
    for (dst, meta) in dirs.into_iter().rev() {
        let mtime = filetime::FileTime::from_unix_time(meta.mtime(), meta.mtime_nsec() as u32);
        let _ = filetime::set_symlink_file_times(&dst, mtime, mtime);
    }
    Ok(())
}

/// Record every path under `root`.
pub fn manifest(root: &Path) -> io::Result<Manifest> {
    let mut out = HashMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.map_err(io::Error::other)?;
        let m = entry.path().symlink_metadata()?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_path_buf();
        out.insert(
            rel,
            Stamp {
                ino: m.ino(),
                ctime: m.ctime(),
                ctime_nsec: m.ctime_nsec(),
            },
        );
    }
    Ok(out)
}

/// Write what changed in `root` since `before` into `diff`, in overlay format.
pub fn write_diff(root: &Path, before: &Manifest, diff: &Path, userxattr: bool) -> io::Result<()> {
    let chown = crate::sys::euid() == 0;
    let opaque_attr = if userxattr {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    };
    let mut seen: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut dirs = Vec::new();
    let mut walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_path_buf();
        seen.insert(rel.clone());
        let m = entry.path().symlink_metadata()?;
        let now = Stamp {
            ino: m.ino(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        };
        let old = before.get(&rel);
        if old == Some(&now) {
            continue;
        }
        // Changed or new: make sure its parents exist in the diff, then copy it.
        ensure_parents(root, diff, &rel, chown)?;
        let dst = diff.join(&rel);
        copy_entry(entry.path(), &dst, &m, chown)?;
        if m.is_dir() {
            // A directory that is new here (or replaced) hides whatever was below it.
            let replaced = old.map(|o| o.ino != now.ino).unwrap_or(false);
            if replaced {
                xattr::set(&dst, opaque_attr, b"y")?;
                for child in walkdir::WalkDir::new(entry.path())
                    .min_depth(1)
                    .sort_by_file_name()
                {
                    let child = child.map_err(io::Error::other)?;
                    let crel = child
                        .path()
                        .strip_prefix(root)
                        .expect("under root")
                        .to_path_buf();
                    seen.insert(crel.clone());
                    let cm = child.path().symlink_metadata()?;
                    copy_entry(child.path(), &diff.join(&crel), &cm, chown)?;
                }
                walker.skip_current_dir();
            }
            dirs.push((dst, m));
        }
    }
    // Deleted paths become whiteouts; under a deleted directory only the top one is needed.
    let mut deleted: Vec<&PathBuf> = before.keys().filter(|p| !seen.contains(*p)).collect();
    deleted.sort();
    let mut last_dir: Option<&PathBuf> = None;
    for rel in deleted {
        if let Some(d) = last_dir {
            if rel.starts_with(d) {
                continue;
            }
        }
        ensure_parents(root, diff, rel, chown)?;
        let dst = diff.join(rel);
        remove_any(&dst)?;
        let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dst.as_os_str()))
            .map_err(|_| io::Error::other("NUL in path"))?;
        // SAFETY: valid C string; a 0:0 character device is overlay's whiteout.
        let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        last_dir = Some(rel);
    }
    for (dst, meta) in dirs.into_iter().rev() {
        let mtime = filetime::FileTime::from_unix_time(meta.mtime(), meta.mtime_nsec() as u32);
        let _ = filetime::set_symlink_file_times(&dst, mtime, mtime);
    }
    Ok(())
}

fn ensure_parents(root: &Path, diff: &Path, rel: &Path, chown: bool) -> io::Result<()> {
    let mut cur = PathBuf::new();
    if let Some(parent) = rel.parent() {
        for comp in parent.components() {
            cur.push(comp);
            let d = diff.join(&cur);
            if !d.exists() {
                let m = root.join(&cur).symlink_metadata()?;
                copy_entry(&root.join(&cur), &d, &m, chown)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_records_changes_additions_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let diff = dir.path().join("diff");
        fs::create_dir_all(root.join("keep/sub")).unwrap();
        fs::create_dir_all(root.join("gone/deep")).unwrap();
        fs::create_dir_all(&diff).unwrap();
        fs::write(root.join("keep/same"), "same").unwrap();
        fs::write(root.join("keep/sub/edit"), "old").unwrap();
        fs::write(root.join("gone/deep/x"), "x").unwrap();
        let before = manifest(&root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(root.join("keep/sub/edit"), "new").unwrap();
        fs::write(root.join("keep/added"), "added").unwrap();
        fs::remove_dir_all(root.join("gone")).unwrap();
        write_diff(&root, &before, &diff, false).unwrap();

        assert_eq!(
            fs::read_to_string(diff.join("keep/sub/edit")).unwrap(),
            "new"
        );
        assert_eq!(
            fs::read_to_string(diff.join("keep/added")).unwrap(),
            "added"
        );
        assert!(
            !diff.join("keep/same").exists(),
            "unchanged files are not in the diff"
        );
        let wh = fs::symlink_metadata(diff.join("gone")).unwrap();
        assert!(is_whiteout(&wh), "deleted directory becomes one whiteout");
        assert!(!diff.join("gone/deep").exists());
    }

    #[test]
    fn layers_apply_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let (l1, l2, out) = (
            dir.path().join("l1"),
            dir.path().join("l2"),
            dir.path().join("out"),
        );
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::write(l1.join("etc/a"), "a").unwrap();
        fs::write(l1.join("etc/b"), "b").unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::create_dir_all(&out).unwrap();
        let wh = std::ffi::CString::new(l2.join("etc/a").to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        if unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) } != 0 {
            eprintln!("SKIP: mknod of a whiteout needs privilege");
            return;
        }
        apply_layer_dir(&l1, &out).unwrap();
        apply_layer_dir(&l2, &out).unwrap();
        assert!(!out.join("etc/a").exists());
        assert_eq!(fs::read_to_string(out.join("etc/b")).unwrap(), "b");
    }
}
