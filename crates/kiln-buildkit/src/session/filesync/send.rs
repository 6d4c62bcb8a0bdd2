//! The sending side of DiffCopy (fsutil's `sender`, `send.go`): list a directory as STAT
//! packets, then answer each REQ with the file's DATA. The daemon sends this way for
//! `--output type=local` (FileSend); clients send their contexts the same way.

use super::mode;
use super::{sys, Progress, ProgressFn, SyncError};
use bollard_buildkit_proto::fsutil::types::packet::PacketType;
use bollard_buildkit_proto::fsutil::types::{Packet, Stat};
use futures::{Stream, StreamExt};
use prost::Message;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// fsutil's sender reads files in 32 KiB chunks (`bufPool`); one DATA packet per chunk.
const CHUNK: usize = 32 * 1024;
/// After both FINs the receiver should end the call at once; do not wait on it forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One listed entry: its stat and, for regular files, where to read the content.
pub(crate) struct Entry {
    pub stat: Stat,
    pub source: Option<PathBuf>,
}

/// What a send transferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Entries listed.
    pub entries: u64,
    /// Files whose content the receiver requested and got.
    pub files_sent: u64,
    /// Encoded bytes of all packets sent.
    pub wire_bytes: u64,
}

/// Lists `src` the way fsutil's walker does: pre-order, names ascending bytewise, paths
/// relative and `/`-separated, Go modes, hardlinks (same device and inode) pointing at the
/// first path seen. Sockets are skipped (fsutil clears their type bit and then sends an
/// empty regular file instead, which helps nobody).
pub(crate) fn walk(src: &Path) -> Result<Vec<Entry>, SyncError> {
    let mut entries = Vec::new();
    let mut first_link: HashMap<(u64, u64), String> = HashMap::new();
    let walk = walkdir::WalkDir::new(src)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(src).to_path_buf();
            SyncError::io("walk", path, e.into())
        })?;
        let full = entry.path();
        let md = entry
            .metadata()
            .map_err(|e| SyncError::io("stat", full, e.into()))?;
        if md.file_type().is_socket() {
            tracing::debug!(path = %full.display(), "not sending a socket");
            continue;
        }
        let path = full
            .strip_prefix(src)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| SyncError::InvalidEntry {
                path: full.display().to_string(),
                reason: "file name is not UTF-8".into(),
            })?
            .to_string();
        let go_mode = mode::from_unix(md.mode());
        let kind = mode::kind(go_mode);
        let mut stat = Stat {
            path: path.clone(),
            mode: go_mode,
            uid: md.uid(),
            gid: md.gid(),
            size: if md.is_dir() { 0 } else { md.len() as i64 },
            mod_time: md
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
            ..Default::default()
        };
        match kind {
            mode::Kind::Symlink => {
                let target =
                    std::fs::read_link(full).map_err(|e| SyncError::io("readlink", full, e))?;
                stat.linkname = target
                    .to_str()
                    .ok_or_else(|| SyncError::InvalidEntry {
                        path: path.clone(),
                        reason: "symlink target is not UTF-8".into(),
                    })?
                    .to_string();
            }
            mode::Kind::BlockDevice | mode::Kind::CharDevice => {
                let (major, minor) = sys::split_dev(md.rdev());
                stat.devmajor = major.into();
                stat.devminor = minor.into();
            }
            // Like fsutil's `setUnixOpt`, the size stays the file's size for a hardlink.
            mode::Kind::File if md.nlink() > 1 => match first_link.get(&(md.dev(), md.ino())) {
                Some(first) => stat.linkname = first.clone(),
                None => {
                    first_link.insert((md.dev(), md.ino()), path.clone());
                }
            },
            _ => {}
        }
        load_xattrs(full, &mut stat);
        // Hardlinks too are requestable (`send.go` `walk`), though receivers link them.
        let source = mode::can_request_data(go_mode).then(|| full.to_path_buf());
        entries.push(Entry { stat, source });
    }
    Ok(entries)
}

/// Best effort, like fsutil's `loadXattr` (which only tolerates ENOTSUP).
fn load_xattrs(full: &Path, stat: &mut Stat) {
    let names = match xattr::list(full) {
        Ok(names) => names,
        Err(e) => {
            tracing::debug!(path = %full.display(), error = %e, "xattrs not listed");
            return;
        }
    };
    for name in names {
        let (Some(key), Ok(Some(value))) = (name.to_str(), xattr::get(full, &name)) else {
            continue;
        };
        stat.xattrs.insert(key.to_string(), value);
    }
}

/// A running send: a feeder task streams the listing at once (the receiver answers nothing,
/// not even response headers, before it has STATs), then the files it is asked for.
pub(crate) struct TreeSender {
    files: HashMap<u32, PathBuf>,
    requests: Option<mpsc::UnboundedSender<(u32, PathBuf)>>,
    feeder: JoinHandle<Result<SendStats, SyncError>>,
    out: mpsc::Sender<Packet>,
}

impl TreeSender {
    pub fn start(
        entries: Vec<Entry>,
        out: mpsc::Sender<Packet>,
        progress: Option<ProgressFn>,
    ) -> Self {
        let mut files = HashMap::new();
        let mut stats = Vec::with_capacity(entries.len());
        for (id, entry) in entries.into_iter().enumerate() {
            if let (Some(source), Ok(id)) = (entry.source, u32::try_from(id)) {
                files.insert(id, source);
            }
            stats.push(entry.stat);
        }
        let (requests, rx) = mpsc::unbounded_channel();
        let feeder = tokio::spawn(feed(stats, rx, out.clone(), progress));
        TreeSender {
            files,
            requests: Some(requests),
            feeder,
            out,
        }
    }

    /// Answers the receiver on `incoming` until the FIN handshake is done.
    pub async fn serve<S>(mut self, mut incoming: S) -> Result<SendStats, SyncError>
    where
        S: Stream<Item = Result<Packet, tonic::Status>> + Unpin,
    {
        let result = self.answer(&mut incoming).await;
        match result {
            Ok(stats) => {
                // Half-close, then wait for the receiver to end the call (it drains to EOF).
                drop(self.out);
                let drain = async {
                    while let Some(item) = incoming.next().await {
                        item?;
                    }
                    Ok::<(), tonic::Status>(())
                };
                match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
                    Ok(Ok(())) => Ok(stats),
                    Ok(Err(status)) => Err(SyncError::Rpc {
                        method: "DiffCopy",
                        status,
                    }),
                    Err(_) => {
                        tracing::debug!("DiffCopy receiver did not end the call after FIN");
                        Ok(stats)
                    }
                }
            }
            Err(err) => {
                self.feeder.abort();
                if !matches!(err, SyncError::Peer(_) | SyncError::Rpc { .. }) {
                    let _ = self.out.try_send(Packet {
                        r#type: PacketType::PacketErr as i32,
                        data: err.to_string().into_bytes(),
                        ..Default::default()
                    });
                }
                Err(err)
            }
        }
    }

    async fn answer<S>(&mut self, incoming: &mut S) -> Result<SendStats, SyncError>
    where
        S: Stream<Item = Result<Packet, tonic::Status>> + Unpin,
    {
        loop {
            let item = tokio::select! {
                item = incoming.next() => item,
                fed = &mut self.feeder => {
                    // The feeder only ends on its own when it failed.
                    let fed = fed.map_err(|e| SyncError::Task(e.to_string()))?;
                    fed?;
                    return Err(SyncError::Task("file sender stopped early".into()));
                }
            };
            let packet = match item {
                Some(Ok(packet)) => packet,
                Some(Err(status)) => {
                    return Err(SyncError::Rpc {
                        method: "DiffCopy",
                        status,
                    })
                }
                None => {
                    return Err(SyncError::Protocol(
                        "the receiver ended the stream before FIN".into(),
                    ))
                }
            };
            match PacketType::try_from(packet.r#type) {
                Ok(PacketType::PacketReq) => {
                    // Each file is sent once; a repeated or unknown ID is an error
                    // (`send.go` `queue`: "invalid file id").
                    let source = self.files.remove(&packet.id).ok_or_else(|| {
                        SyncError::Protocol(format!("invalid file id {}", packet.id))
                    })?;
                    if let Some(requests) = &self.requests {
                        let _ = requests.send((packet.id, source));
                    }
                }
                Ok(PacketType::PacketFin) => {
                    // Everything requested has been received; let the feeder finish.
                    self.requests = None;
                    let mut stats = (&mut self.feeder)
                        .await
                        .map_err(|e| SyncError::Task(e.to_string()))??;
                    let fin = Packet {
                        r#type: PacketType::PacketFin as i32,
                        ..Default::default()
                    };
                    stats.wire_bytes += fin.encoded_len() as u64;
                    self.out.send(fin).await.map_err(|_| closed())?;
                    return Ok(stats);
                }
                Ok(PacketType::PacketErr) => {
                    return Err(SyncError::Peer(
                        String::from_utf8_lossy(&packet.data).into_owned(),
                    ))
                }
                _ => tracing::debug!(kind = packet.r#type, "ignoring unexpected packet"),
            }
        }
    }
}

fn closed() -> SyncError {
    SyncError::Protocol("the connection to the receiver is closed".into())
}

async fn feed(
    stats: Vec<Stat>,
    mut requests: mpsc::UnboundedReceiver<(u32, PathBuf)>,
    out: mpsc::Sender<Packet>,
    progress: Option<ProgressFn>,
) -> Result<SendStats, SyncError> {
    let mut sent = SendStats::default();
    fn emit(packet: Packet, sent: &mut SendStats) -> Packet {
        sent.wire_bytes += packet.encoded_len() as u64;
        packet
    }
    for stat in stats {
        let packet = Packet {
            r#type: PacketType::PacketStat as i32,
            stat: Some(stat),
            ..Default::default()
        };
        sent.entries += 1;
        out.send(emit(packet, &mut sent))
            .await
            .map_err(|_| closed())?;
    }
    let end = Packet {
        r#type: PacketType::PacketStat as i32,
        ..Default::default()
    };
    out.send(emit(end, &mut sent)).await.map_err(|_| closed())?;

    while let Some((id, path)) = requests.recv().await {
        // A file that vanished is sent empty, as fsutil's `sendFile` does.
        match tokio::fs::File::open(&path).await {
            Ok(mut file) => {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = file
                        .read(&mut buf)
                        .await
                        .map_err(|e| SyncError::io("read", &path, e))?;
                    if n == 0 {
                        break;
                    }
                    let data = Packet {
                        r#type: PacketType::PacketData as i32,
                        id,
                        data: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    out.send(emit(data, &mut sent))
                        .await
                        .map_err(|_| closed())?;
                }
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "sending as empty"),
        }
        let end = Packet {
            r#type: PacketType::PacketData as i32,
            id,
            ..Default::default()
        };
        out.send(emit(end, &mut sent)).await.map_err(|_| closed())?;
        sent.files_sent += 1;
        if let Some(cb) = &progress {
            cb(Progress {
                bytes: sent.wire_bytes,
                files: sent.files_sent,
                done: false,
            });
        }
    }
    if let Some(cb) = &progress {
        cb(Progress {
            bytes: sent.wire_bytes,
            files: sent.files_sent,
            done: true,
        });
    }
    Ok(sent)
}
