//! Applying a layer tar onto a directory.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use tar::EntryType;

use super::sys;
use super::{ApplyOptions, ApplyStats, LayerError, WhiteoutMode, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

const MAX_SYMLINK_HOPS: u32 = 40;

/// Extracts the layer tar read from `reader` onto `dest`, which may hold lower layers' content.
///
/// Safety rules: entry names must be relative and may not climb out with `..`; hardlink targets
/// likewise; symlinks in parent paths are resolved inside `dest` (never followed out of it),
/// and an existing symlink at an entry's own path is replaced, not written through.
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let mut applier = Applier {
        dest,
        opts,
        label: format!(
            "layer {}",
            opts.layer_name.as_deref().unwrap_or("(unnamed)")
        ),
        chown: opts.chown.unwrap_or_else(sys::is_root),
        kept: HashSet::new(),
        dirs: Vec::new(),
        stats: ApplyStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| applier.read_err(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| applier.read_err(e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        applier.entry(&mut entry, &name)?;
    }
    applier.finish()
}

struct Applier<'a> {
    dest: &'a Path,
    opts: &'a ApplyOptions,
    label: String,
    chown: bool,
    /// Paths written by this layer and all their ancestors: what an opaque marker keeps.
    kept: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set last, once their children exist.
    dirs: Vec<(PathBuf, u32, FileTime)>,
    stats: ApplyStats,
}

/// Splits a tar name into components that stay inside the root (see [`super::clean_entry_path`]).
fn clean(name: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let s = std::str::from_utf8(name).ok();
    match s {
        Some(s) => super::clean_entry_path(s).map(|v| v.into_iter().map(OsString::from).collect()),
        None => {
            if name.starts_with(b"/") {
                return Err("absolute path not allowed in a layer");
            }
            let mut parts: Vec<OsString> = Vec::new();
            for c in name.split(|b| *b == b'/') {
                match c {
                    b"" | b"." => {}
                    b".." => {
                        parts.pop().ok_or("path escapes the root")?;
                    }
                    c => parts.push(OsString::from_vec(c.to_vec())),
                }
            }
            Ok(parts)
        }
    }
}

impl Applier<'_> {
    fn read_err(&self, source: io::Error) -> LayerError {
        LayerError::Read {
            layer: self.label.clone(),
            source,
        }
    }

    fn bad(&self, entry: &str, reason: impl Into<String>) -> LayerError {
        LayerError::Entry {
            layer: self.label.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn ioe(&self, entry: &str) -> impl FnOnce(io::Error) -> LayerError + '_ {
        let entry = entry.to_string();
        move |source| LayerError::EntryIo {
            layer: self.label.clone(),
            entry,
            source,
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), LayerError> {
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = clean(&entry.path_bytes()).map_err(|r| self.bad(name, r))?;
        let Some((base, parents)) = comps.split_last() else {
            return Ok(()); // the root directory itself: its metadata belongs to the snapshot
        };
        let base_bytes = base.as_bytes();
        if base_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(name, parents, base_bytes);
        }

        let parent = self.resolve(parents, true).map_err(|r| self.bad(name, r))?;
        let target = parent.join(base);
        let existing = fs::symlink_metadata(&target).ok();
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| self.bad(name, format!("bad mode: {e}")))?;
        let mtime = header.mtime().unwrap_or(0);
        let mtime = FileTime::from_unix_time(mtime as i64, 0);
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);

        // Replace whatever is there unless both are directories (then it is merged).
        if let Some(m) = &existing {
            if !(kind == EntryType::Directory && m.is_dir()) {
                let r = if m.is_dir() {
                    fs::remove_dir_all(&target)
                } else {
                    fs::remove_file(&target)
                };
                r.map_err(self.ioe(name))?;
            }
        }

        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(self.ioe(name))?;
                self.stats.bytes += io::copy(entry, &mut f).map_err(self.ioe(name))?;
            }
            EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&target)
                        .map_err(self.ioe(name))?;
                }
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.bad(name, "symlink without target"))?;
                symlink(OsStr::from_bytes(&link), &target).map_err(self.ioe(name))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.bad(name, "hardlink without target"))?;
                let link_name = String::from_utf8_lossy(&link).into_owned();
                let lcomps = clean(&link)
                    .map_err(|r| self.bad(name, format!("hardlink target {link_name:?}: {r}")))?;
                let Some((lbase, lparents)) = lcomps.split_last() else {
                    return Err(self.bad(name, "hardlink to the root directory"));
                };
                let lparent = self
                    .resolve(lparents, false)
                    .map_err(|r| self.bad(name, format!("hardlink target {link_name:?}: {r}")))?;
                let source = lparent.join(lbase);
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_dir() => {
                        return Err(self.bad(
                            name,
                            format!("hardlink target {link_name:?} is a directory"),
                        ))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(self.bad(
                            name,
                            format!("hardlink target {link_name:?} does not exist"),
                        ))
                    }
                }
                fs::hard_link(&source, &target).map_err(self.ioe(name))?;
                // A hardlink shares the inode: its metadata is the target's.
                self.keep(&target);
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let node = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if let Err(e) = sys::mknod(&target, node, mode, major, minor) {
                    if e.kind() == io::ErrorKind::PermissionDenied && kind != EntryType::Fifo {
                        tracing::warn!(layer = %self.label, entry = %name, "skipping device node: not permitted here");
                        self.stats.skipped += 1;
                        return Ok(());
                    }
                    return Err(self.ioe(name)(e));
                }
            }
            other => {
                tracing::warn!(layer = %self.label, entry = %name, kind = ?other, "skipping unsupported tar entry type");
                self.stats.skipped += 1;
                return Ok(());
            }
        }

        if self.chown {
            let (u, g) = self.opts.id_map.unwrap_or_default().to_host(uid, gid);
            match std::os::unix::fs::lchown(&target, Some(u), Some(g)) {
                Ok(()) => {}
                // An id this user namespace does not map (rootless without subordinate ids):
                // the file keeps the namespace root as owner rather than failing the pull.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.stats.unmapped_owners += 1;
                }
                Err(e) => return Err(self.ioe(name)(e)),
            }
        }
        self.xattrs(entry, &target, name)?;
        if kind == EntryType::Directory {
            self.dirs.push((target.clone(), mode, mtime));
        } else {
            if kind != EntryType::Symlink {
                // After chown, which clears setuid/setgid bits.
                fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(self.ioe(name))?;
            }
            filetime::set_symlink_file_times(&target, mtime, mtime).map_err(self.ioe(name))?;
        }
        self.keep(&target);
        Ok(())
    }

    fn xattrs<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        name: &str,
    ) -> Result<(), LayerError> {
        let Some(exts) = entry.pax_extensions().map_err(self.ioe(name))? else {
            return Ok(());
        };
        let mut pairs = Vec::new();
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    pairs.push((attr.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        for (attr, value) in pairs {
            if let Err(e) = xattr::set(target, &attr, &value) {
                // Unprivileged or on a file system without xattrs: keep going like BuildKit.
                tracing::warn!(layer = %self.label, entry = %name, %attr, error = %e, "could not set xattr");
            }
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        name: &str,
        parents: &[OsString],
        base: &[u8],
    ) -> Result<(), LayerError> {
        self.stats.whiteouts += 1;
        let opaque_xattr = match self.opts.whiteout_mode {
            WhiteoutMode::Apply => None,
            WhiteoutMode::OverlayFs => Some("trusted.overlay.opaque"),
            WhiteoutMode::OverlayFsUserXattr => Some("user.overlay.opaque"),
        };
        let overlay = opaque_xattr.is_some();
        if base == WHITEOUT_OPAQUE.as_bytes() {
            let dir = self
                .resolve(parents, overlay)
                .map_err(|r| self.bad(name, r))?;
            if let Some(attr) = opaque_xattr {
                xattr::set(&dir, attr, b"y").map_err(self.ioe(name))?;
                self.keep(&dir);
            } else if dir.is_dir() {
                self.remove_unkept_children(&dir).map_err(self.ioe(name))?;
            }
            return Ok(());
        }
        let hidden = &base[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(self.bad(name, "invalid whiteout name"));
        }
        let parent = self
            .resolve(parents, overlay)
            .map_err(|r| self.bad(name, r))?;
        let target = parent.join(OsStr::from_bytes(hidden));
        if let Ok(m) = fs::symlink_metadata(&target) {
            let r = if m.is_dir() {
                fs::remove_dir_all(&target)
            } else {
                fs::remove_file(&target)
            };
            r.map_err(self.ioe(name))?;
        }
        if overlay {
            sys::mknod(&target, libc::S_IFCHR, 0, 0, 0).map_err(self.ioe(name))?;
            self.keep(&target);
        }
        Ok(())
    }

    /// Opaque directory in Apply mode: drop every lower entry that this layer did not write.
    fn remove_unkept_children(&self, dir: &Path) -> io::Result<()> {
        for child in fs::read_dir(dir)? {
            let path = child?.path();
            let meta = fs::symlink_metadata(&path)?;
            if self.kept.contains(&path) {
                if meta.is_dir() {
                    self.remove_unkept_children(&path)?;
                }
            } else if meta.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    fn keep(&mut self, path: &Path) {
        let mut p = path;
        while p != self.dest && self.kept.insert(p.to_path_buf()) {
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
    }

    /// Resolves parent components to a real directory inside `dest`, following symlinks as if
    /// `dest` were `/` (absolute targets restart at `dest`, `..` stops at it). With `create`,
    /// missing directories are made.
    fn resolve(&mut self, comps: &[OsString], create: bool) -> Result<PathBuf, String> {
        let mut resolved = self.dest.to_path_buf();
        let mut depth = 0usize;
        let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if depth > 0 {
                        resolved.pop();
                        depth -= 1;
                    }
                    continue;
                }
                _ => {}
            }
            let candidate = resolved.join(&c);
            match fs::symlink_metadata(&candidate) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err("too many levels of symbolic links".into());
                    }
                    let target = fs::read_link(&candidate).map_err(|e| e.to_string())?;
                    let tb = target.as_os_str().as_bytes();
                    if tb.starts_with(b"/") {
                        resolved = self.dest.to_path_buf();
                        depth = 0;
                    }
                    for part in tb.split(|b| *b == b'/').rev() {
                        queue.push_front(OsString::from_vec(part.to_vec()));
                    }
                }
                Ok(m) if m.is_dir() => {
                    resolved = candidate;
                    depth += 1;
                }
                Ok(_) => {
                    let rel = candidate.strip_prefix(self.dest).unwrap_or(&candidate);
                    return Err(format!(
                        "parent {:?} is not a directory",
                        rel.display().to_string()
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if create {
                        fs::DirBuilder::new()
                            .mode(0o755)
                            .create(&candidate)
                            .map_err(|e| e.to_string())?;
                        if self.chown {
                            let (u, g) = self.opts.id_map.unwrap_or_default().to_host(0, 0);
                            let _ = std::os::unix::fs::lchown(&candidate, Some(u), Some(g));
                        }
                        self.keep(&candidate);
                    }
                    resolved = candidate;
                    depth += 1;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(resolved)
    }

    fn finish(mut self) -> Result<ApplyStats, LayerError> {
        // Deepest first is not needed for modes, but mtimes must be set after all writes.
        for (path, mode, mtime) in self.dirs.drain(..).rev() {
            if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) || !path.exists() {
                continue; // replaced later in the same layer
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(LayerError::io(&path))?;
            filetime::set_symlink_file_times(&path, mtime, mtime).map_err(LayerError::io(&path))?;
        }
        Ok(self.stats)
    }
}
