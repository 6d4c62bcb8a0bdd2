//! Building layer tars: deterministic (sorted entries, no user/group names, mtimes in whole
//! seconds), PAX records for long names, large ids and xattrs, hardlinks by inode.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{
    clean_entry_path, sys, Compression, IdMap, LayerBlob, LayerError, WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
};
use crate::digest::Sha256Writer;
use crate::store::{BlobWriter, ContentStore};

const USTAR_MAX_ID: u64 = 0o7777777;
const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// Builds one layer blob in the content store. Entries are collected first and written sorted
/// by path on [`LayerWriter::finish`], so the same inputs always give the same digest.
pub struct LayerWriter {
    store: ContentStore,
    compression: Compression,
    id_map: Option<IdMap>,
    entries: BTreeMap<String, Source>,
}

enum Source {
    Path(PathBuf),
    Whiteout,
}

/// Xattrs that describe the host or overlayfs internals rather than the image.
pub(crate) fn xattr_is_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name == b"security.selinux"
}

/// The image-relevant xattrs of `path`, sorted by name. Errors (no xattr support) mean none.
pub(crate) fn read_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = names
        .filter(|n| !xattr_is_private(n.as_bytes()))
        .filter_map(|n| {
            let key = n.to_str()?.to_string();
            let value = xattr::get(path, &n).ok()??;
            Some((key, value))
        })
        .collect();
    out.sort();
    out
}

impl LayerWriter {
    /// A writer producing a layer compressed with `compression` into `store`.
    pub fn new(store: &ContentStore, compression: Compression) -> Result<Self, LayerError> {
        Ok(LayerWriter {
            store: store.clone(),
            compression,
            id_map: None,
            entries: BTreeMap::new(),
        })
    }

    /// Subtracts this offset from file owners (files of a rootless user namespace).
    pub fn with_id_map(mut self, id_map: Option<IdMap>) -> Self {
        self.id_map = id_map;
        self
    }

    /// Number of entries added so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(rel: &str) -> Result<String, LayerError> {
        let parts = clean_entry_path(rel).map_err(|reason| LayerError::InvalidPath {
            path: rel.to_string(),
            reason,
        })?;
        Ok(parts.join("/"))
    }

    /// Adds the file, directory, symlink or device at `fs_path` as layer path `rel`
    /// (its metadata is read when the layer is written).
    pub fn add_path(&mut self, rel: &str, fs_path: &Path) -> Result<(), LayerError> {
        let key = Self::key(rel)?;
        if key.is_empty() {
            return Err(LayerError::InvalidPath {
                path: rel.to_string(),
                reason: "the root directory is not a layer entry",
            });
        }
        self.entries
            .insert(key, Source::Path(fs_path.to_path_buf()));
        Ok(())
    }

    /// Records that `rel` was deleted (a `.wh.<name>` entry).
    pub fn add_whiteout(&mut self, rel: &str) -> Result<(), LayerError> {
        let key = Self::key(rel)?;
        let (dir, base) = match key.rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), key.as_str()),
        };
        if base.is_empty() {
            return Err(LayerError::InvalidPath {
                path: rel.to_string(),
                reason: "cannot white out the root directory",
            });
        }
        self.entries
            .insert(format!("{dir}{WHITEOUT_PREFIX}{base}"), Source::Whiteout);
        Ok(())
    }

    /// Records that directory `dir_rel` hides its lower content (a `.wh..wh..opq` entry).
    pub fn add_opaque(&mut self, dir_rel: &str) -> Result<(), LayerError> {
        let key = Self::key(dir_rel)?;
        let name = if key.is_empty() {
            WHITEOUT_OPAQUE.to_string()
        } else {
            format!("{key}/{WHITEOUT_OPAQUE}")
        };
        self.entries.insert(name, Source::Whiteout);
        Ok(())
    }

    /// Writes the tar, compresses it into the store and returns the blob's identity.
    pub fn finish(self) -> Result<LayerBlob, LayerError> {
        let blob = self.store.writer()?;
        let ingest = self.store.root().join("ingest");
        let enc = Encoder::new(blob, self.compression).map_err(LayerError::io(&ingest))?;
        let mut builder = tar::Builder::new(Sha256Writer::new(enc));
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        for (name, source) in &self.entries {
            match source {
                Source::Whiteout => {
                    let mut h = Header::new_ustar();
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(0);
                    h.set_mtime(0);
                    h.set_uid(0);
                    h.set_gid(0);
                    write_name(&mut builder, &mut h, name.as_bytes(), Vec::new())
                        .map_err(LayerError::io(Path::new(name)))?;
                    builder
                        .append(&h, io::empty())
                        .map_err(LayerError::io(&ingest))?;
                }
                Source::Path(path) => {
                    self.append_path(&mut builder, &mut links, name, path)?;
                }
            }
        }
        let hashing = builder.into_inner().map_err(LayerError::io(&ingest))?;
        let (enc, diff_id, _) = hashing.finish();
        let blob = enc.finish().map_err(LayerError::io(&ingest))?;
        let (digest, size) = blob.commit(None)?;
        Ok(LayerBlob {
            digest,
            diff_id,
            size,
            media_type: self.compression.media_type().to_string(),
        })
    }

    fn append_path<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        links: &mut HashMap<(u64, u64), String>,
        name: &str,
        path: &Path,
    ) -> Result<(), LayerError> {
        let meta = fs::symlink_metadata(path).map_err(LayerError::io(path))?;
        let ft = meta.file_type();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut h = Header::new_ustar();
        let (uid, gid) = self
            .id_map
            .unwrap_or_default()
            .to_image(meta.uid(), meta.gid());
        for (key, id, set) in [
            ("uid", uid as u64, Header::set_uid as fn(&mut Header, u64)),
            ("gid", gid as u64, Header::set_gid),
        ] {
            if id > USTAR_MAX_ID {
                pax.push((key.to_string(), id.to_string().into_bytes()));
                set(&mut h, 0);
            } else {
                set(&mut h, id);
            }
        }
        h.set_mode(meta.mode() & 0o7777);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let mut entry_name = name.to_string();
        let mut data: Option<File> = None;
        let mut size = 0;
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            entry_name.push('/');
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            let target = fs::read_link(path).map_err(LayerError::io(path))?;
            set_link(&mut h, &mut pax, target.as_os_str().as_bytes());
        } else if ft.is_file() {
            let inode = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&inode) {
                    h.set_entry_type(EntryType::Link);
                    set_link(&mut h, &mut pax, first.as_bytes());
                    return self.append_entry(builder, h, &entry_name, pax, None, 0, path);
                }
                links.insert(inode, name.to_string());
            }
            h.set_entry_type(EntryType::Regular);
            size = meta.len();
            if size > USTAR_MAX_SIZE {
                pax.push(("size".into(), size.to_string().into_bytes()));
            } else {
                h.set_size(size);
            }
            data = Some(File::open(path).map_err(LayerError::io(path))?);
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let (major, minor) = sys::split_dev(meta.rdev());
            h.set_device_major(major).map_err(LayerError::io(path))?;
            h.set_device_minor(minor).map_err(LayerError::io(path))?;
        } else if ft.is_fifo() {
            h.set_entry_type(EntryType::Fifo);
        } else {
            // Sockets cannot be carried in a tar; Docker skips them too.
            tracing::debug!(path = %path.display(), "skipping socket");
            return Ok(());
        }
        for (k, v) in read_xattrs(path) {
            pax.push((format!("SCHILY.xattr.{k}"), v));
        }
        self.append_entry(builder, h, &entry_name, pax, data, size, path)
    }

    #[allow(clippy::too_many_arguments)]
    fn append_entry<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        mut h: Header,
        name: &str,
        pax: Vec<(String, Vec<u8>)>,
        data: Option<File>,
        size: u64,
        path: &Path,
    ) -> Result<(), LayerError> {
        write_name(builder, &mut h, name.as_bytes(), pax).map_err(LayerError::io(path))?;
        match data {
            Some(f) => builder.append(
                &h,
                ExactReader {
                    inner: f.take(size),
                    left: size,
                },
            ),
            None => builder.append(&h, io::empty()),
        }
        .map_err(LayerError::io(path))
    }
}

/// Sets the link target, in a PAX `linkpath` record when it does not fit the header.
fn set_link(h: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, target: &[u8]) {
    if target.len() <= 100 {
        if let Some(u) = h.as_ustar_mut() {
            fill(&mut u.linkname, target);
        }
    } else {
        pax.push(("linkpath".into(), target.to_vec()));
        if let Some(u) = h.as_ustar_mut() {
            fill(&mut u.linkname, &target[..100]);
        }
    }
}

/// Puts `name` into the ustar name/prefix fields, or into a PAX `path` record if it does not
/// fit; then writes the PAX header (if any records) ahead of the entry and sets the checksum.
fn write_name<W: Write>(
    builder: &mut tar::Builder<W>,
    h: &mut Header,
    name: &[u8],
    mut pax: Vec<(String, Vec<u8>)>,
) -> io::Result<()> {
    let ustar = h
        .as_ustar_mut()
        .ok_or_else(|| io::Error::other("header is not ustar"))?;
    if name.len() <= 100 {
        fill(&mut ustar.name, name);
        fill(&mut ustar.prefix, b"");
    } else if let Some(split) = ustar_split(name) {
        fill(&mut ustar.prefix, &name[..split]);
        fill(&mut ustar.name, &name[split + 1..]);
    } else {
        pax.insert(0, ("path".into(), name.to_vec()));
        fill(&mut ustar.prefix, b"");
        fill(&mut ustar.name, &name[..100]);
    }
    if !pax.is_empty() {
        builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    h.set_cksum();
    Ok(())
}

/// Where to split a long name into ustar prefix (≤155) and name (≤100, non-empty).
fn ustar_split(name: &[u8]) -> Option<usize> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    (0..trimmed.len())
        .rev()
        .filter(|&i| trimmed[i] == b'/')
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && i + 1 < name.len())
}

fn fill(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// Fails instead of producing a corrupt tar when a file shrinks while being read.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being added to the layer",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

enum Encoder {
    Gzip(super::pgzip::ParallelGzip<BlobWriter>),
    Zstd(zstd::stream::write::Encoder<'static, BlobWriter>),
    Plain(BlobWriter),
}

impl Encoder {
    fn new(w: BlobWriter, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip => Encoder::Gzip(super::pgzip::ParallelGzip::new(w)),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
            Compression::None => Encoder::Plain(w),
        })
    }

    fn finish(self) -> io::Result<BlobWriter> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}
