//! Layer tars: applying them onto a directory (whiteouts, hardlinks, xattrs, ownership) and
//! building them deterministically from directories, overlayfs upper dirs or tree diffs.
//!
//! Whiteouts follow the OCI image spec: `.wh.<name>` deletes `<name>` from lower layers and
//! `.wh..wh..opq` hides a directory's lower content. Entry names must be relative and stay
//! inside the destination: absolute names and `..` escapes are rejected with an error naming
//! the entry. Symlinks met in a parent path are followed *within* the destination, like a
//! chroot would (an absolute target means the destination's root), so nothing is ever
//! written outside it.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::store::StoreError;

mod apply;
mod pgzip;
mod producers;
mod sys;
mod write;

pub use apply::apply_layer;
pub use producers::{write_layer_from_diff, write_layer_from_overlay_upper};
pub use write::LayerWriter;

/// Prefix of whiteout entries.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker entry.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// How whiteout entries are materialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete what they hide from `dest` (a flat, copied rootfs).
    #[default]
    Apply,
    /// Write overlayfs whiteouts: char device 0:0 for deleted names, xattr
    /// `trusted.overlay.opaque=y` for opaque directories. For preparing an overlay upper dir.
    OverlayFs,
    /// Like `OverlayFs` but with `user.overlay.opaque=y`, for overlay mounted with `userxattr`
    /// inside a user namespace (rootless).
    OverlayFsUserXattr,
}

/// A uid/gid shift between the image's ids and the host's (rootless user namespaces):
/// host id = image id + offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdMap {
    /// Added to every uid.
    pub uid_offset: u32,
    /// Added to every gid.
    pub gid_offset: u32,
}

impl IdMap {
    /// Image ids → host ids.
    pub fn to_host(&self, uid: u64, gid: u64) -> (u32, u32) {
        (
            (uid as u32).saturating_add(self.uid_offset),
            (gid as u32).saturating_add(self.gid_offset),
        )
    }

    /// Host ids → image ids (ids below the offset map to 0).
    pub fn to_image(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            uid.saturating_sub(self.uid_offset),
            gid.saturating_sub(self.gid_offset),
        )
    }
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// How whiteouts are written.
    pub whiteout_mode: WhiteoutMode,
    /// Optional uid/gid shift applied to ownership.
    pub id_map: Option<IdMap>,
    /// Name used in errors, usually the layer digest (`sha256:…`).
    pub layer_name: Option<String>,
    /// Change ownership of written files. `None` means "when running as root".
    pub chown: Option<bool>,
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries processed (including whiteouts).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers processed.
    pub whiteouts: u64,
    /// Entries skipped because they could not be created here (devices without privilege).
    pub skipped: u64,
    /// Entries whose owner could not be set because the id is not mapped here.
    pub unmapped_owners: u64,
}

/// Errors of layer application and creation. Entry errors name the layer and the entry:
/// `layer sha256:…: entry "../etc/passwd": path escapes the root`.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A tar entry is invalid or unsafe.
    #[error("{layer}: entry {entry:?}: {reason}")]
    Entry {
        /// `layer <name>`.
        layer: String,
        /// The entry's path as written in the tar.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// Writing a tar entry failed.
    #[error("{layer}: entry {entry:?}: {source}")]
    EntryIo {
        /// `layer <name>`.
        layer: String,
        /// The entry's path as written in the tar.
        entry: String,
        /// The cause.
        source: io::Error,
    },
    /// The tar stream itself is unreadable (truncated, corrupt compression).
    #[error("{layer}: reading tar: {source}")]
    Read {
        /// `layer <name>`.
        layer: String,
        /// The cause.
        source: io::Error,
    },
    /// A file-system operation outside a specific entry failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A path given to the layer writer is not a valid relative layer path.
    #[error("invalid layer path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LayerError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
        move |source| LayerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip at the default level (`…tar+gzip`), the most compatible choice.
    #[default]
    Gzip,
    /// zstd at level 3 (`…tar+zstd`).
    Zstd,
    /// Plain tar (`…tar`).
    None,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip => crate::media_types::OCI_LAYER_GZIP,
            Compression::Zstd => crate::media_types::OCI_LAYER_ZSTD,
            Compression::None => crate::media_types::OCI_LAYER_TAR,
        }
    }
}

/// A layer written into the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the compressed blob (what manifests reference).
    pub digest: Digest,
    /// Digest of the uncompressed tar (what image configs' `rootfs.diff_ids` list).
    pub diff_id: Digest,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// OCI layer media type.
    pub media_type: String,
}

/// Opens a layer file, detecting gzip, zstd or plain tar by its magic bytes.
pub fn open_layer(path: &Path) -> Result<Box<dyn Read + Send>, LayerError> {
    let file = File::open(path).map_err(LayerError::io(path))?;
    decompress(BufReader::new(file)).map_err(LayerError::io(path))
}

/// Wraps a buffered reader in the decompressor its first bytes call for.
pub fn decompress<R: io::BufRead + Send + 'static>(
    mut reader: R,
) -> io::Result<Box<dyn Read + Send>> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// Splits a tar entry name into safe components: `./` and empty parts are dropped, `..` is
/// resolved lexically and may not climb above the root, absolute names are refused.
pub(crate) fn clean_entry_path(name: &str) -> Result<Vec<String>, &'static str> {
    if name.starts_with('/') {
        return Err("absolute path not allowed in a layer");
    }
    if name.contains('\0') {
        return Err("path contains NUL");
    }
    let mut parts: Vec<String> = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("path escapes the root");
                }
            }
            c => parts.push(c.to_string()),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests;
