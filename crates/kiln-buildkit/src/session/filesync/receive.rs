//! The receiving side of DiffCopy (fsutil's `receiver` and `DiskWriter`), for either role:
//! the daemon pulling a client's directory, or a FileSend target.
//!
//! An async pump moves packets from the stream to a blocking [`Writer`], which owns all file
//! system work. Files are written into a staging directory inside `dest` (same file system)
//! and renamed into place when complete, so an interrupted transfer never leaves a half file
//! under its real name. Directory modes and all mtimes are applied last: creating entries
//! changes a directory's mtime, and a read-only directory could not be filled.

use super::disk::{
    create_new, file_time, lstat, mtime_ns, remove_all, remove_if_dir, set_xattrs, Staging,
};
use super::mode::{self, Kind};
use super::validate::Listing;
use super::{sys, Progress, ProgressFn, SyncError, SyncStats};
use bollard_buildkit_proto::fsutil::types::packet::PacketType;
use bollard_buildkit_proto::fsutil::types::{Packet, Stat};
use futures::{Stream, StreamExt};
use prost::Message;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, Metadata};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Files requested but not yet complete. Bounds open descriptors and the sender's queue.
const MAX_IN_FLIGHT: usize = 32;
/// How often progress is reported while bytes flow.
const PROGRESS_EVERY: u64 = 256 * 1024;
/// After both FINs the sender should end the call at once; do not wait on it forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How a received tree is applied to `dest`.
#[derive(Clone, Default)]
pub struct ReceiveOptions {
    /// Keep entries of `dest` that the listing does not have (the client's `type=local`
    /// target merges); otherwise they are deleted.
    pub merge: bool,
    pub progress: Option<super::ProgressFn>,
}

/// Receives a tree from `incoming` into `dest`, sending REQ/FIN/ERR on `outgoing`. Returns
/// once the sender has answered FIN (the caller then ends its side of the call by dropping
/// `outgoing`). A stream error wins over the protocol error it causes.
pub async fn receive<S>(
    mut incoming: S,
    outgoing: mpsc::UnboundedSender<Packet>,
    dest: &Path,
    opts: &ReceiveOptions,
) -> Result<SyncStats, SyncError>
where
    S: Stream<Item = Result<Packet, tonic::Status>> + Unpin,
{
    let (tx, rx) = mpsc::channel::<Packet>(64);
    let dest = dest.to_path_buf();
    let opts = opts.clone();
    let errors = outgoing.clone();
    let mut writer = tokio::task::spawn_blocking(move || {
        let progress = opts.progress.clone();
        match Writer::new(dest, opts, outgoing) {
            Ok(mut w) => {
                let result = w.run(rx);
                w.report(true);
                result
            }
            Err(e) => {
                if let Some(cb) = progress {
                    cb(Progress {
                        bytes: 0,
                        files: 0,
                        done: true,
                    });
                }
                Err(e)
            }
        }
    });

    let mut tx = Some(tx);
    let mut stream_error = None;
    let joined = loop {
        tokio::select! {
            joined = &mut writer => break joined,
            item = incoming.next(), if tx.is_some() => match (item, &tx) {
                (Some(Ok(packet)), Some(to_writer)) => {
                    if to_writer.send(packet).await.is_err() {
                        tx = None;
                    }
                }
                (Some(Err(status)), _) => {
                    stream_error = Some(status);
                    tx = None;
                }
                _ => tx = None,
            },
        }
    };
    let result = joined.map_err(|e| SyncError::Task(e.to_string()))?;
    match (result, stream_error) {
        (Ok(stats), _) => {
            // The sender ends the call after its FIN; wait for that briefly.
            let drain = async { while let Some(Ok(_)) = incoming.next().await {} };
            if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
                tracing::debug!("DiffCopy sender did not end the call after FIN");
            }
            Ok(stats)
        }
        (Err(err), Some(status)) => {
            tracing::debug!(error = %err, "DiffCopy receive ended by a stream error");
            Err(SyncError::Rpc {
                method: "DiffCopy",
                status,
            })
        }
        (Err(err), None) => {
            if !matches!(err, SyncError::Peer(_)) {
                let _ = errors.send(Packet {
                    r#type: PacketType::PacketErr as i32,
                    data: err.to_string().into_bytes(),
                    ..Default::default()
                });
            }
            Err(err)
        }
    }
}

/// A requested file whose data is arriving.
struct Incoming {
    path: String,
    stat: Stat,
    tmp: PathBuf,
    file: Option<File>,
}

struct Writer {
    dest: PathBuf,
    staging: Staging,
    out: mpsc::UnboundedSender<Packet>,
    merge: bool,
    progress: Option<ProgressFn>,
    last_progress: u64,
    root: bool,
    listing: Listing,
    /// Every listed path, to find stale entries.
    listed: HashSet<String>,
    next_id: u64,
    listing_done: bool,
    fin_sent: bool,
    wanted: VecDeque<(u32, String, Stat)>,
    in_flight: HashMap<u32, Incoming>,
    /// `(path, target)`, created when all data is in (they share the target's inode).
    hardlinks: Vec<(String, String)>,
    /// Directories with their final metadata, applied last.
    dirs: Vec<(String, Stat)>,
    stats: SyncStats,
}

impl Writer {
    fn new(
        dest: PathBuf,
        opts: ReceiveOptions,
        out: mpsc::UnboundedSender<Packet>,
    ) -> Result<Self, SyncError> {
        fs::create_dir_all(&dest).map_err(|e| SyncError::io("create directory", &dest, e))?;
        let staging = Staging::create(&dest)?;
        Ok(Writer {
            dest,
            staging,
            out,
            merge: opts.merge,
            progress: opts.progress,
            last_progress: 0,
            root: sys::is_root(),
            listing: Listing::default(),
            listed: HashSet::new(),
            next_id: 0,
            listing_done: false,
            fin_sent: false,
            wanted: VecDeque::new(),
            in_flight: HashMap::new(),
            hardlinks: Vec::new(),
            dirs: Vec::new(),
            stats: SyncStats::default(),
        })
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Packet>) -> Result<SyncStats, SyncError> {
        loop {
            let Some(packet) = rx.blocking_recv() else {
                return Err(SyncError::Protocol(
                    "the sender ended the stream before the transfer completed".into(),
                ));
            };
            self.stats.wire_bytes += packet.encoded_len() as u64;
            match PacketType::try_from(packet.r#type) {
                Ok(PacketType::PacketStat) => match packet.stat {
                    Some(stat) => self.on_stat(stat)?,
                    None if self.listing_done => {
                        return Err(SyncError::Protocol("listing ended twice".into()))
                    }
                    None => self.listing_done = true,
                },
                Ok(PacketType::PacketData) => self.on_data(packet.id, &packet.data)?,
                Ok(PacketType::PacketFin) if self.fin_sent => return Ok(self.stats),
                Ok(PacketType::PacketFin) => {
                    return Err(SyncError::Protocol(
                        "the sender sent FIN before the transfer completed".into(),
                    ))
                }
                Ok(PacketType::PacketErr) => {
                    return Err(SyncError::Peer(
                        String::from_utf8_lossy(&packet.data).into_owned(),
                    ))
                }
                // fsutil's receiver ignores what it does not expect (`receive.go` `run`).
                Ok(PacketType::PacketReq) | Err(_) => {
                    tracing::debug!(kind = packet.r#type, "ignoring unexpected packet");
                }
            }
            self.request_more()?;
            if self.listing_done
                && !self.fin_sent
                && self.wanted.is_empty()
                && self.in_flight.is_empty()
            {
                self.finish()?;
                self.send(PacketType::PacketFin, 0)?;
                self.fin_sent = true;
            }
            if self.stats.wire_bytes - self.last_progress >= PROGRESS_EVERY {
                self.report(false);
            }
        }
    }

    fn report(&mut self, done: bool) {
        self.last_progress = self.stats.wire_bytes;
        if let Some(cb) = &self.progress {
            cb(Progress {
                bytes: self.stats.wire_bytes,
                files: self.stats.files_received,
                done,
            });
        }
    }

    fn send(&self, kind: PacketType, id: u32) -> Result<(), SyncError> {
        let packet = Packet {
            r#type: kind as i32,
            id,
            ..Default::default()
        };
        self.out
            .send(packet)
            .map_err(|_| SyncError::Protocol("the connection to the sender is closed".into()))
    }

    fn request_more(&mut self) -> Result<(), SyncError> {
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some((id, path, stat)) = self.wanted.pop_front() else {
                break;
            };
            self.send(PacketType::PacketReq, id)?;
            let tmp = self.staging.path(&format!("f{id}"));
            self.in_flight.insert(
                id,
                Incoming {
                    path,
                    stat,
                    tmp,
                    file: None,
                },
            );
        }
        Ok(())
    }

    fn on_stat(&mut self, stat: Stat) -> Result<(), SyncError> {
        if self.listing_done {
            return Err(SyncError::Protocol(format!(
                "STAT {:?} after the end of the listing",
                stat.path
            )));
        }
        let id = u32::try_from(self.next_id)
            .map_err(|_| SyncError::Protocol("more entries than IDs".into()))?;
        self.next_id += 1;
        self.stats.entries += 1;
        let path = stat.path.clone();
        let reject = |reason: String| SyncError::InvalidEntry {
            path: stat.path.clone(),
            reason,
        };
        let kind = mode::kind(stat.mode);
        if kind == Kind::Unsupported {
            return Err(reject(format!(
                "unsupported file type (mode {:#o})",
                stat.mode
            )));
        }
        let hardlink_to = (!matches!(kind, Kind::Dir | Kind::Symlink) && !stat.linkname.is_empty())
            .then_some(stat.linkname.as_str());
        let link_source = !matches!(kind, Kind::Dir | Kind::Symlink) && hardlink_to.is_none();
        self.listing
            .accept(&path, kind == Kind::Dir, link_source, hardlink_to)
            .map_err(reject)?;
        if path.split('/').next() == Some(self.staging.name.as_str()) {
            return Err(reject("collides with the staging directory".into()));
        }
        self.listed.insert(path.clone());

        let full = self.dest.join(&path);
        let existing = lstat(&full)?;
        match kind {
            Kind::Dir => {
                self.ensure_dir(&full, existing.as_ref())?;
                self.dirs.push((path, stat));
            }
            Kind::File if hardlink_to.is_some() => {
                remove_if_dir(&full, existing.as_ref())?;
                self.hardlinks.push((path, stat.linkname));
            }
            Kind::File => {
                if existing
                    .as_ref()
                    .is_some_and(|md| self.unchanged(md, &stat))
                {
                    self.stats.files_unchanged += 1;
                } else {
                    remove_if_dir(&full, existing.as_ref())?;
                    self.wanted.push_back((id, path, stat));
                }
            }
            Kind::Symlink | Kind::Fifo | Kind::BlockDevice | Kind::CharDevice => {
                if existing
                    .as_ref()
                    .is_some_and(|md| self.unchanged(md, &stat))
                    && (kind != Kind::Symlink
                        || fs::read_link(&full).is_ok_and(|t| t.as_os_str() == &*stat.linkname))
                {
                    return Ok(());
                }
                let tmp = self.staging.path(&format!("n{id}"));
                if kind == Kind::Symlink {
                    std::os::unix::fs::symlink(&stat.linkname, &tmp)
                        .map_err(|e| SyncError::io("create symlink", &full, e))?;
                } else {
                    let file_type = mode::unix_node_type(kind).unwrap_or_default();
                    let (major, minor) = (stat.devmajor as u32, stat.devminor as u32);
                    sys::mknod(&tmp, file_type, 0o600, major, minor)
                        .map_err(|e| SyncError::io("create device or fifo", &full, e))?;
                }
                self.apply_metadata(&tmp, &full, &stat, kind)?;
                remove_if_dir(&full, existing.as_ref())?;
                fs::rename(&tmp, &full).map_err(|e| SyncError::io("rename into", &full, e))?;
            }
            Kind::Unsupported => {}
        }
        Ok(())
    }

    /// Whether the entry on disk already is what `stat` describes, by fsutil's metadata
    /// differ (`diff_containerd.go` `sameFile`): size and mtime (not for directories), mode,
    /// and the owner when we could have applied it.
    fn unchanged(&self, md: &Metadata, stat: &Stat) -> bool {
        mode::from_unix(md.mode()) == stat.mode
            && md.len() as i64 == stat.size
            && mtime_ns(md) == stat.mod_time
            && (!self.root || (md.uid() == stat.uid && md.gid() == stat.gid))
            && (!matches!(mode::kind(stat.mode), Kind::BlockDevice | Kind::CharDevice)
                || sys::split_dev(md.rdev()) == (stat.devmajor as u32, stat.devminor as u32))
    }

    /// Makes `full` a real, writable directory (its final mode is applied in `finish`).
    fn ensure_dir(&self, full: &Path, existing: Option<&Metadata>) -> Result<(), SyncError> {
        match existing {
            Some(md) if md.is_dir() => {
                if md.mode() & 0o700 != 0o700 {
                    let perm = fs::Permissions::from_mode((md.mode() | 0o700) & 0o7777);
                    fs::set_permissions(full, perm)
                        .map_err(|e| SyncError::io("make writable", full, e))?;
                }
                return Ok(());
            }
            Some(_) => fs::remove_file(full).map_err(|e| SyncError::io("remove", full, e))?,
            None => {}
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(full)
            .map_err(|e| SyncError::io("create directory", full, e))
    }

    fn on_data(&mut self, id: u32, data: &[u8]) -> Result<(), SyncError> {
        let Some(incoming) = self.in_flight.get_mut(&id) else {
            return Err(SyncError::Protocol(format!(
                "invalid file request {id}: DATA for a file that was not requested or has ended"
            )));
        };
        if data.is_empty() {
            let incoming = self.in_flight.remove(&id).ok_or_else(|| {
                SyncError::Protocol(format!("file {id} vanished from the transfer"))
            })?;
            self.complete(incoming)?;
            self.stats.files_received += 1;
            self.report(false);
            return Ok(());
        }
        let full = self.dest.join(&incoming.path);
        let file = match &mut incoming.file {
            Some(f) => f,
            None => incoming.file.insert(create_new(&incoming.tmp, &full)?),
        };
        file.write_all(data)
            .map_err(|e| SyncError::io("write", &full, e))?;
        self.stats.bytes_received += data.len() as u64;
        Ok(())
    }

    fn complete(&mut self, incoming: Incoming) -> Result<(), SyncError> {
        let full = self.dest.join(&incoming.path);
        let file = match incoming.file {
            Some(f) => f,
            None => create_new(&incoming.tmp, &full)?,
        };
        set_xattrs(&incoming.tmp, &incoming.stat);
        if self.root {
            std::os::unix::fs::fchown(&file, Some(incoming.stat.uid), Some(incoming.stat.gid))
                .map_err(|e| SyncError::io("chown", &full, e))?;
        }
        let perm = fs::Permissions::from_mode(mode::unix_permissions(incoming.stat.mode));
        file.set_permissions(perm)
            .map_err(|e| SyncError::io("chmod", &full, e))?;
        let t = file_time(incoming.stat.mod_time);
        filetime::set_file_handle_times(&file, Some(t), Some(t))
            .map_err(|e| SyncError::io("set times of", &full, e))?;
        drop(file);
        fs::rename(&incoming.tmp, &full).map_err(|e| SyncError::io("rename into", &full, e))
    }

    /// Owner, mode, xattrs and times of a non-regular entry, set before it is moved to `full`.
    fn apply_metadata(
        &self,
        path: &Path,
        full: &Path,
        stat: &Stat,
        kind: Kind,
    ) -> Result<(), SyncError> {
        set_xattrs(path, stat);
        if self.root {
            std::os::unix::fs::lchown(path, Some(stat.uid), Some(stat.gid))
                .map_err(|e| SyncError::io("chown", full, e))?;
        }
        // chmod follows symlinks; a symlink's own mode does not matter on Linux.
        if kind != Kind::Symlink {
            let perm = fs::Permissions::from_mode(mode::unix_permissions(stat.mode));
            fs::set_permissions(path, perm).map_err(|e| SyncError::io("chmod", full, e))?;
        }
        let t = file_time(stat.mod_time);
        filetime::set_symlink_file_times(path, t, t)
            .map_err(|e| SyncError::io("set times of", full, e))
    }

    /// After the last file: hardlinks, stale entries, then directory metadata deepest first.
    fn finish(&mut self) -> Result<(), SyncError> {
        for (i, (path, target)) in self.hardlinks.iter().enumerate() {
            let full = self.dest.join(path);
            let tmp = self.staging.path(&format!("h{i}"));
            fs::hard_link(self.dest.join(target), &tmp)
                .map_err(|e| SyncError::io("hardlink", &full, e))?;
            fs::rename(&tmp, &full).map_err(|e| SyncError::io("rename into", &full, e))?;
        }
        if !self.merge {
            self.remove_stale()?;
        }
        for (path, stat) in self.dirs.iter().rev() {
            let full = self.dest.join(path);
            self.apply_metadata(&full, &full, stat, Kind::Dir)?;
        }
        Ok(())
    }

    fn remove_stale(&mut self) -> Result<(), SyncError> {
        let mut stale = Vec::new();
        let mut walk = walkdir::WalkDir::new(&self.dest)
            .min_depth(1)
            .follow_links(false)
            .into_iter();
        while let Some(entry) = walk.next() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&self.dest).to_path_buf();
                SyncError::io("walk", path, e.into())
            })?;
            let rel = entry
                .path()
                .strip_prefix(&self.dest)
                .ok()
                .and_then(Path::to_str);
            let is_staging = rel == Some(self.staging.name.as_str());
            let keep = is_staging || rel.is_some_and(|r| self.listed.contains(r));
            if !keep {
                stale.push(entry.path().to_path_buf());
            }
            if entry.file_type().is_dir() && (is_staging || !keep) {
                walk.skip_current_dir();
            }
        }
        for path in stale {
            tracing::trace!(path = %path.display(), "removing stale entry");
            remove_all(&path).map_err(|e| SyncError::io("remove", &path, e))?;
            self.stats.removed += 1;
        }
        Ok(())
    }
}
