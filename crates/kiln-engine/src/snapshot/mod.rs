//! Snapshots are chains of diff directories ("layers") in overlayfs upper-dir format: whiteouts
//! are 0:0 character devices and opaque directories carry `trusted.overlay.opaque=y`. A vertex
//! result is a [`Chain`]; running something on it mounts the chain as overlay lower dirs with a
//! fresh upper dir, which after the run *is* the new layer — no diffing needed, and image
//! layers are written straight from it.
//!
//! Where overlayfs can't be mounted, the copying snapshotter ([`native`]) produces the same
//! layers by materializing chains and diffing afterwards.
//!
//! Layer directories get short ids (16 hex digits) because overlay's option string is limited
//! to one page; with a short root path that allows well over a hundred layers per mount.

pub mod native;

use crate::sys;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one layer directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct LayerId(pub String);

impl LayerId {
    /// A layer id derived from a stable string (a cache key, a blob digest), so the same work
    /// lands in the same place and a crashed attempt is simply redone.
    pub fn derive(seed: &str) -> LayerId {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(seed.as_bytes());
        LayerId(hex::encode(&h[..8]))
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A filesystem state: layers from bottom to top. Empty = `scratch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chain(pub Vec<LayerId>);

impl Chain {
    pub fn scratch() -> Chain {
        Chain(Vec::new())
    }

    pub fn with(&self, top: LayerId) -> Chain {
        let mut layers = self.0.clone();
        layers.push(top);
        Chain(layers)
    }

    pub fn layers(&self) -> &[LayerId] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How chains become mounted filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshotter {
    /// overlayfs mounts (fast: nothing is copied).
    Overlay,
    /// Copies (works everywhere, costs a copy of the chain per step).
    Native,
}

impl std::str::FromStr for Snapshotter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "overlayfs" | "overlay" => Ok(Snapshotter::Overlay),
            "native" => Ok(Snapshotter::Native),
            other => Err(format!(
                "unknown snapshotter {other:?} (use overlayfs or native)"
            )),
        }
    }
}

/// Where layers live on disk.
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    seq: AtomicU64,
    snapshotter: Snapshotter,
    /// In a user namespace overlay must keep its metadata in `user.*` xattrs (`userxattr`).
    userxattr: bool,
}

impl LayerStore {
    /// Open the store; `snapshotter` `None` means overlayfs when a test mount works, else native.
    pub fn open(root: &Path, snapshotter: Option<Snapshotter>) -> io::Result<LayerStore> {
        fs::create_dir_all(root.join("l"))?;
        fs::create_dir_all(root.join("empty"))?;
        // Scratch space from a previous run is garbage: nothing refers to it.
        let tmp = root.join("tmp");
        if tmp.exists() {
            for entry in fs::read_dir(&tmp)? {
                let path = entry?.path();
                let _ = sys::unmount(&path.join("m"));
                let _ = fs::remove_dir_all(&path);
            }
        }
        fs::create_dir_all(&tmp)?;
        let mut store = LayerStore {
            root: root.to_path_buf(),
            seq: AtomicU64::new(0),
            snapshotter: snapshotter.unwrap_or(Snapshotter::Overlay),
            userxattr: sys::in_user_namespace(),
        };
        if snapshotter.is_none() {
            if let Err(e) = store.probe_overlay() {
                tracing::warn!(
                    "overlayfs is not usable under {} ({e}); using the copying snapshotter",
                    root.display()
                );
                store.snapshotter = Snapshotter::Native;
            }
        }
        Ok(store)
    }

    fn probe_overlay(&self) -> io::Result<()> {
        let pending = self.begin()?;
        let guard = self.mount_overlay_rw(&Chain::scratch(), &pending)?;
        std::fs::write(guard.path().join("probe"), b"")?;
        drop(guard);
        if !pending.diff().join("probe").exists() {
            return Err(io::Error::other("overlay upper dir stayed empty"));
        }
        Ok(())
    }

    pub fn snapshotter(&self) -> Snapshotter {
        self.snapshotter
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether layers use `user.overlay.*` xattrs (rootless) instead of `trusted.overlay.*`.
    pub fn userxattr(&self) -> bool {
        self.userxattr
    }

    pub fn dir(&self, id: &LayerId) -> PathBuf {
        self.root.join("l").join(&id.0)
    }

    pub fn exists(&self, id: &LayerId) -> bool {
        self.dir(id).is_dir()
    }

    /// A fresh scratch directory under the store (same filesystem, so commits are renames).
    pub fn scratch_dir(&self) -> io::Result<PathBuf> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Start a new layer: an empty upper dir plus overlay's work dir.
    pub fn begin(&self) -> io::Result<PendingLayer> {
        let dir = self.scratch_dir()?;
        fs::create_dir(dir.join("diff"))?;
        fs::create_dir(dir.join("work"))?;
        fs::create_dir(dir.join("m"))?;
        Ok(PendingLayer { dir })
    }

    /// Make a pending layer permanent under `id`. If another solve committed the same id
    /// meanwhile, that one wins (same key ⇒ same content) and ours is dropped.
    pub fn commit(&self, pending: PendingLayer, id: &LayerId) -> io::Result<LayerId> {
        let target = self.dir(id);
        if target.exists() {
            return Ok(id.clone());
        }
        let diff = pending.dir.join("diff");
        match fs::rename(&diff, &target) {
            Ok(()) => {}
            Err(_) if target.exists() => {}
            Err(e) => return Err(e),
        }
        // fsync the parent so the rename survives a crash before the cache record is written.
        if let Ok(d) = fs::File::open(self.root.join("l")) {
            let _ = d.sync_all();
        }
        Ok(id.clone())
    }

    pub fn remove(&self, id: &LayerId) -> io::Result<()> {
        let dir = self.dir(id);
        if dir.exists() {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// A new layer on top of `chain`, mounted writable: [`LayerStore::begin`] + [`LayerStore::mount_rw`].
    pub fn begin_on(&self, chain: &Chain) -> io::Result<(PendingLayer, RwMount)> {
        let pending = self.begin()?;
        let mount = self.mount_rw(chain, &pending)?;
        Ok((pending, mount))
    }

    /// Make `chain` writable at the pending layer's mount point. Call [`RwMount::finish`] when
    /// done: afterwards the pending layer's diff holds the changes.
    pub fn mount_rw(&self, chain: &Chain, pending: &PendingLayer) -> io::Result<RwMount> {
        match self.snapshotter {
            Snapshotter::Overlay => Ok(RwMount {
                kind: RwKind::Overlay(self.mount_overlay_rw(chain, pending)?),
                target: pending.mount_point(),
                diff: pending.diff(),
            }),
            Snapshotter::Native => {
                let target = pending.mount_point();
                self.materialize(chain, &target)?;
                Ok(RwMount {
                    kind: RwKind::Native {
                        before: native::manifest(&target)?,
                        userxattr: self.userxattr,
                    },
                    target,
                    diff: pending.diff(),
                })
            }
        }
    }

    fn materialize(&self, chain: &Chain, target: &Path) -> io::Result<()> {
        for id in chain.layers() {
            native::apply_layer_dir(&self.dir(id), target)?;
        }
        Ok(())
    }

    fn mount_overlay_rw(&self, chain: &Chain, pending: &PendingLayer) -> io::Result<MountGuard> {
        let lower = self.lowerdirs(chain);
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower,
            pending.diff().display(),
            pending.dir.join("work").display()
        );
        if self.userxattr {
            opts.push_str(",userxattr");
        }
        self.mount_with(&opts, pending.mount_point())
    }

    /// Mount `chain` read-only at a fresh scratch directory (a copy, for the native
    /// snapshotter; don't write to it either way).
    pub fn mount_ro(&self, chain: &Chain) -> io::Result<MountGuard> {
        let dir = self.scratch_dir()?;
        let target = dir.join("m");
        fs::create_dir(&target)?;
        if self.snapshotter == Snapshotter::Native {
            self.materialize(chain, &target)?;
            return Ok(MountGuard {
                target,
                cleanup: Some(dir),
                mounted: false,
            });
        }
        let guard = match chain.layers() {
            [] => {
                sys::bind_mount(&self.root.join("empty"), &target, true)?;
                MountGuard {
                    target,
                    cleanup: Some(dir),
                    mounted: true,
                }
            }
            [single] => {
                sys::bind_mount(&self.dir(single), &target, true)?;
                MountGuard {
                    target,
                    cleanup: Some(dir),
                    mounted: true,
                }
            }
            _ => {
                let mut opts = format!("lowerdir={}", self.lowerdirs(chain));
                if self.userxattr {
                    opts.push_str(",userxattr");
                }
                let mut g = self.mount_with(&opts, target)?;
                g.cleanup = Some(dir);
                g
            }
        };
        Ok(guard)
    }

    fn mount_with(&self, opts: &str, target: PathBuf) -> io::Result<MountGuard> {
        // One page is overlay's limit for the whole option string.
        if opts.len() > 4000 {
            return Err(io::Error::other(format!(
                "too many layers to mount at once ({} bytes of overlay options); \
                 use a shorter --root path",
                opts.len()
            )));
        }
        sys::mount_overlay(&target, opts)?;
        Ok(MountGuard {
            target,
            cleanup: None,
            mounted: true,
        })
    }

    fn lowerdirs(&self, chain: &Chain) -> String {
        if chain.is_empty() {
            return self.root.join("empty").display().to_string();
        }
        chain
            .layers()
            .iter()
            .rev()
            .map(|id| self.dir(id).display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Disk usage of one layer in bytes (apparent size of regular files).
    pub fn size(&self, id: &LayerId) -> u64 {
        dir_size(&self.dir(id))
    }

    /// Gives each directory of `upper` (a layer being made on `chain`) the times of the same
    /// directory below it when nothing but its times changed. BuildKit's differ (continuity's
    /// `sameFile`) does not compare directories' times, so a directory that only had entries
    /// added or removed (`/etc` after a mount stub came and went, `/` after `COPY f /f`) is not
    /// a change of its own: the image keeps the lower directory's time.
    pub fn keep_lower_dir_times(&self, chain: &Chain, upper: &Path) {
        use std::os::unix::fs::MetadataExt;
        let lowers: Vec<PathBuf> = chain.layers().iter().rev().map(|id| self.dir(id)).collect();
        let opaque = |p: &Path| {
            ["trusted.overlay.opaque", "user.overlay.opaque"]
                .iter()
                .any(|n| matches!(xattr::get(p, n), Ok(Some(v)) if v == b"y"))
        };
        for entry in walkdir::WalkDir::new(upper)
            .min_depth(1)
            .into_iter()
            .flatten()
        {
            if !entry.file_type().is_dir() || opaque(entry.path()) {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(upper) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let Some(lower) = lowers
                .iter()
                .find_map(|d| fs::symlink_metadata(d.join(rel)).ok())
            else {
                continue;
            };
            let same = lower.is_dir()
                && lower.mode() == meta.mode()
                && lower.uid() == meta.uid()
                && lower.gid() == meta.gid();
            if same {
                let _ = filetime::set_symlink_file_times(
                    entry.path(),
                    filetime::FileTime::from_last_access_time(&lower),
                    filetime::FileTime::from_last_modification_time(&lower),
                );
            }
        }
    }

    /// Fills a new directory `dest` with what `path` holds in `chain`, its own mode and owner
    /// included: a cache mount's starting content (`RUN --mount=type=cache,uid=…,mode=…`, or
    /// `from=` a stage), as BuildKit starts the cache from the mount's input.
    pub fn seed_from(&self, chain: &Chain, path: &str, dest: &Path) -> io::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let rel = path.trim_start_matches('/');
        let in_layer = |id: &LayerId| {
            if rel.is_empty() {
                self.dir(id)
            } else {
                self.dir(id).join(rel)
            }
        };
        for id in chain.layers() {
            let src = in_layer(id);
            if src.is_dir() {
                native::apply_layer_dir(&src, dest)?;
            }
        }
        if let Some(meta) = chain
            .layers()
            .iter()
            .rev()
            .find_map(|id| fs::symlink_metadata(in_layer(id)).ok())
            .filter(|m| m.is_dir())
        {
            fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            if sys::euid() == 0 {
                std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))?;
            }
        }
        Ok(())
    }

    /// All layer ids on disk.
    pub fn list(&self) -> io::Result<Vec<LayerId>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("l"))? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(LayerId(name.to_string()));
            }
        }
        Ok(out)
    }
}

/// A layer being written: `diff/` (overlay upper), `work/`, and a mount point `m/`.
#[derive(Debug)]
pub struct PendingLayer {
    dir: PathBuf,
}

impl PendingLayer {
    pub fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }

    pub fn mount_point(&self) -> PathBuf {
        self.dir.join("m")
    }
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        let _ = sys::unmount(&self.dir.join("m"));
        let _ = remove_tree(&self.dir);
    }
}

/// A writable view of a chain whose changes go to a pending layer.
#[derive(Debug)]
pub struct RwMount {
    target: PathBuf,
    diff: PathBuf,
    kind: RwKind,
}

#[derive(Debug)]
enum RwKind {
    Overlay(MountGuard),
    Native {
        before: native::Manifest,
        userxattr: bool,
    },
}

impl RwMount {
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Stop writing and leave the changes in the pending layer's diff directory.
    pub fn finish(self) -> io::Result<()> {
        match self.kind {
            RwKind::Overlay(guard) => {
                drop(guard);
                Ok(())
            }
            RwKind::Native { before, userxattr } => {
                native::write_diff(&self.target, &before, &self.diff, userxattr)?;
                remove_tree(&self.target)
            }
        }
    }
}

/// Unmounts (or, for copies, deletes) on drop.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    cleanup: Option<PathBuf>,
    mounted: bool,
}

impl MountGuard {
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = sys::unmount(&self.target) {
                tracing::warn!("unmount {}: {e}", self.target.display());
            }
        }
        if let Some(dir) = self.cleanup.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// `remove_dir_all` that first makes read-only directories writable (a RUN step may have
/// left `chmod 0555` dirs behind, which root can delete but a rootless engine cannot).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            use std::os::unix::fs::PermissionsExt;
            for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
                if entry.file_type().is_dir() {
                    let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
                }
            }
            fs::remove_dir_all(path).map_err(|_| first)
        }
    }
}

/// Bytes the regular files under `path` take.
///
/// A file with several hard links counts its size divided among them: layers share unchanged
/// files by hard link (see `ops::file`), and summed over every layer that shares it a file then
/// counts once, as it takes disk space once.
pub fn dir_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len().div_ceil(m.nlink().max(1)))
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hard_linked_files_count_once_across_the_directories_sharing_them() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("shared"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(a.join("shared"), b.join("shared")).unwrap();
        std::fs::write(a.join("own"), vec![0u8; 10]).unwrap();
        assert_eq!(super::dir_size(&a), 510);
        assert_eq!(super::dir_size(&b), 500);
        assert_eq!(super::dir_size(tmp.path()), 1010);
    }
}
