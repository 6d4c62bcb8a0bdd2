//! Turning snapshots into layers: from an overlayfs upper directory, or from the difference of
//! two full trees (the copying snapshotter's lower and upper).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::write::read_xattrs;
use super::{Compression, LayerBlob, LayerError, LayerWriter};
use crate::store::ContentStore;

const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// A layer holding the changes recorded in an overlayfs upper directory: char device 0:0
/// becomes a `.wh.` entry, an opaque directory gets a `.wh..wh..opq` entry, and overlay's
/// private xattrs are left out.
pub fn write_layer_from_overlay_upper(
    upper: &Path,
    store: &ContentStore,
    compression: Compression,
) -> Result<LayerBlob, LayerError> {
    let mut w = LayerWriter::new(store, compression)?;
    w.add_overlay_upper(upper)?;
    w.finish()
}

/// A layer that turns tree `lower` into tree `upper`: new and changed entries are added,
/// removed ones become whiteouts. Files count as changed when type, mode, owner, xattrs,
/// symlink target, size or mtime differ; when mtimes agree only to the second (a file system
/// that truncates them), contents are compared.
pub fn write_layer_from_diff(
    lower: &Path,
    upper: &Path,
    store: &ContentStore,
    compression: Compression,
) -> Result<LayerBlob, LayerError> {
    let mut w = LayerWriter::new(store, compression)?;
    w.add_diff(lower, upper)?;
    w.finish()
}

fn rel_str(rel: &Path) -> Result<&str, LayerError> {
    rel.to_str().ok_or_else(|| LayerError::InvalidPath {
        path: rel.display().to_string(),
        reason: "file names must be UTF-8 to be written into a layer",
    })
}

fn has_xattr_y(path: &Path, names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| matches!(xattr::get(path, n), Ok(Some(v)) if v == b"y" || v.is_empty() && n.contains("whiteout")))
}

impl LayerWriter {
    /// Adds everything in an overlayfs upper directory (see [`write_layer_from_overlay_upper`]).
    pub fn add_overlay_upper(&mut self, upper: &Path) -> Result<(), LayerError> {
        for entry in walkdir::WalkDir::new(upper).min_depth(1) {
            let entry = entry.map_err(|e| LayerError::Io {
                path: e.path().unwrap_or(upper).to_path_buf(),
                source: e.into(),
            })?;
            let path = entry.path();
            let rel = rel_str(path.strip_prefix(upper).unwrap_or(path))?;
            let meta = entry.metadata().map_err(|e| LayerError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
            let ft = meta.file_type();
            let whiteout = (ft.is_char_device() && meta.rdev() == 0)
                || (ft.is_file() && meta.len() == 0 && has_xattr_y(path, &WHITEOUT_XATTRS));
            if whiteout {
                self.add_whiteout(rel)?;
            } else {
                self.add_path(rel, path)?;
                if ft.is_dir() && has_xattr_y(path, &OPAQUE_XATTRS) {
                    self.add_opaque(rel)?;
                }
            }
        }
        Ok(())
    }

    /// Adds the difference from tree `lower` to tree `upper` (see [`write_layer_from_diff`]).
    pub fn add_diff(&mut self, lower: &Path, upper: &Path) -> Result<(), LayerError> {
        self.diff_dir(lower, upper, Path::new(""), true)
    }

    /// Walks one directory of both trees in step. `lower_is_dir` is false when the lower side
    /// has no directory here, so everything below is new.
    fn diff_dir(
        &mut self,
        lower: &Path,
        upper: &Path,
        rel: &Path,
        lower_is_dir: bool,
    ) -> Result<(), LayerError> {
        let udir = upper.join(rel);
        let ldir = lower.join(rel);
        let uchildren = list(&udir)?;
        let lchildren = if lower_is_dir {
            list(&ldir)?
        } else {
            BTreeMap::new()
        };
        for name in lchildren.keys() {
            if !uchildren.contains_key(name) {
                self.add_whiteout(rel_str(&rel.join(name))?)?;
            }
        }
        for (name, umeta) in &uchildren {
            let child_rel = rel.join(name);
            let upath = upper.join(&child_rel);
            let lmeta = lchildren.get(name);
            let same_type = lmeta.is_some_and(|l| l.file_type() == umeta.file_type());
            let changed = match lmeta {
                Some(l) if same_type => differs(&lower.join(&child_rel), l, &upath, umeta)?,
                _ => true,
            };
            if changed {
                self.add_path(rel_str(&child_rel)?, &upath)?;
            }
            if umeta.is_dir() {
                self.diff_dir(lower, upper, &child_rel, same_type)?;
            }
        }
        Ok(())
    }
}

fn list(dir: &Path) -> Result<BTreeMap<OsString, Metadata>, LayerError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(LayerError::io(dir))? {
        let entry = entry.map_err(LayerError::io(dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(LayerError::io(&path))?;
        out.insert(entry.file_name(), meta);
    }
    Ok(out)
}

/// Whether two entries of the same type differ (the continuity `sameFile` rules).
fn differs(lpath: &Path, l: &Metadata, upath: &Path, u: &Metadata) -> Result<bool, LayerError> {
    if l.mode() != u.mode() || l.uid() != u.uid() || l.gid() != u.gid() || l.rdev() != u.rdev() {
        return Ok(true);
    }
    if read_xattrs(lpath) != read_xattrs(upath) {
        return Ok(true);
    }
    if l.is_dir() {
        return Ok(false);
    }
    if l.file_type().is_symlink() {
        let lt = fs::read_link(lpath).map_err(LayerError::io(lpath))?;
        let ut = fs::read_link(upath).map_err(LayerError::io(upath))?;
        return Ok(lt != ut);
    }
    if l.size() != u.size() || l.mtime() != u.mtime() {
        return Ok(true);
    }
    match (l.mtime_nsec(), u.mtime_nsec()) {
        (0, 0) if l.is_file() && l.size() > 0 => Ok(!same_content(lpath, upath)?),
        (a, b) => Ok(a != b),
    }
}

fn same_content(a: &Path, b: &Path) -> Result<bool, LayerError> {
    let mut ra = BufReader::new(File::open(a).map_err(LayerError::io(a))?);
    let mut rb = BufReader::new(File::open(b).map_err(LayerError::io(b))?);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut ra, &mut ba).map_err(LayerError::io(a))?;
        let nb = read_full(&mut rb, &mut bb).map_err(LayerError::io(b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
