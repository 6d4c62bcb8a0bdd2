//! Pulling a client's local directory (`--local context=DIR`) over the session: the daemon
//! calls `/moby.filesync.v1.FileSync/DiffCopy`, which the *client* serves, and receives the
//! tree with fsutil's DiffCopy protocol (`fsutil/send.go`, `receive.go`).
//!
//! The protocol, on one bidirectional stream of `fsutil.types.Packet`s:
//!
//! 1. The sender walks its tree (depth-first, names ascending bytewise, a directory before its
//!    contents) and sends one `STAT` per entry; a `STAT` without a stat ends the listing. The
//!    *n*-th `STAT` (0-based, every entry counts) has ID *n*. `Stat.mode` is Go's
//!    `os.FileMode` ([`mode`]), paths are relative and `/`-separated, a regular file whose
//!    `linkname` names an earlier entry is a hardlink.
//! 2. Meanwhile the receiver sends `REQ{id}` for each regular file whose content it wants (not
//!    hardlinks, not files it already has). The sender answers with `DATA{id, chunk}` packets
//!    (≤ 32 KiB) and an empty `DATA{id}` that ends the file; several files may interleave.
//! 3. When the listing has ended and every requested file is complete, the receiver sends
//!    `FIN`; the sender answers `FIN` and ends the call. `ERR{text}` from either side aborts.
//!
//! The daemon tells the client what to send through request metadata (`dir-name`,
//! `include-patterns`, `exclude-patterns`, `followpaths`; `B@v0.16.0:session/filesync/
//! filesync.go`); the filtering happens on the client.
//!
//! [`receive_dir`] keeps the destination between calls and requests only files whose size,
//! modification time or mode changed, then deletes what the listing no longer has — a warm
//! rebuild transfers only the edits. Every received path is checked before it touches the disk
//! (see `validate`): nothing is ever written outside the destination or through a symlink.
//!
//! The reverse direction, daemon as sender over `FileSend`, lives in [`super::filesend`] and
//! reuses [`send`].

mod disk;
pub mod mode;
mod receive;
pub(crate) mod send;
mod sys;
mod validate;

pub use receive::{receive, ReceiveOptions};

use bollard_buildkit_proto::moby::filesync::v1::file_sync_client::FileSyncClient;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

/// The gRPC method the client serves its directories on.
pub const DIFF_COPY_METHOD: &str = "/moby.filesync.v1.FileSync/DiffCopy";

// Request metadata keys (`B@v0.11.6` and `B@v0.16.0:session/filesync/filesync.go`).
const KEY_DIR_NAME: &str = "dir-name";
const KEY_INCLUDE_PATTERNS: &str = "include-patterns";
const KEY_EXCLUDE_PATTERNS: &str = "exclude-patterns";
const KEY_FOLLOW_PATHS: &str = "followpaths";
/// Only ≤ v0.12 clients read it (`B@v0.11.6`); harmless for newer ones.
const KEY_OVERRIDE_EXCLUDES: &str = "override-excludes";

/// Called as a transfer progresses: after each completed file, every 256 KiB, and once with
/// `done` at the end (also on failure). Runs on the transfer's thread: keep it cheap.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Encoded bytes of all packets so far — what BuildKit reports as "transferring
    /// context: 1.2MB" (`p.Size()` summed in `fsutil/receive.go`, `send.go`).
    pub bytes: u64,
    /// Files whose content was transferred so far.
    pub files: u64,
    /// The last report.
    pub done: bool,
}

/// What to ask the client for. Sent as gRPC metadata; the client's fsutil sender filters.
#[derive(Clone, Default)]
pub struct SyncOptions {
    /// The local's name: `context`, `dockerfile`, or any `--local NAME=`.
    pub dir_name: String,
    /// Send only paths matching these globs.
    pub include_patterns: Vec<String>,
    /// Skip paths matching these (`.dockerignore` syntax).
    pub exclude_patterns: Vec<String>,
    /// Send only these paths, the directories leading to them and symlink targets.
    pub follow_paths: Vec<String>,
    /// Legacy: make ≤ v0.12 clients ignore the excludes they were configured with.
    pub override_excludes: bool,
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncOptions")
            .field("dir_name", &self.dir_name)
            .field("include_patterns", &self.include_patterns)
            .field("exclude_patterns", &self.exclude_patterns)
            .field("follow_paths", &self.follow_paths)
            .field("override_excludes", &self.override_excludes)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The outcome of one transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries in the sender's listing.
    pub entries: u64,
    /// Regular files whose content was transferred.
    pub files_received: u64,
    /// Regular files kept from the previous sync because size, mtime and mode matched.
    pub files_unchanged: u64,
    /// File content bytes transferred.
    pub bytes_received: u64,
    /// Encoded bytes of all packets received.
    pub wire_bytes: u64,
    /// Entries deleted because the listing no longer has them (top-level ones only).
    pub removed: u64,
}

/// Why a transfer failed. Every variant says which path or packet it is about.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The client does not serve a directory under that name (or it does not exist).
    #[error("local directory {name:?} not found on the client: {message}")]
    NoSuchDir { name: String, message: String },
    #[error("{method} failed ({:?}): {}", .status.code(), .status.message())]
    Rpc {
        method: &'static str,
        status: tonic::Status,
    },
    /// The other side sent `ERR`.
    #[error("error from the client: {0}")]
    Peer(String),
    /// A listing entry that must not be written.
    #[error("rejected entry {path:?}: {reason}")]
    InvalidEntry { path: String, reason: String },
    /// A packet that breaks the protocol (unknown or unrequested ID, early end, …).
    #[error("invalid DiffCopy stream: {0}")]
    Protocol(String),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC metadata {key:?}: {reason}")]
    Metadata { key: String, reason: String },
    #[error("transfer task failed: {0}")]
    Task(String),
}

impl SyncError {
    /// Whether the client said it has no such directory.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SyncError::NoSuchDir { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SyncError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Pulls the client's directory `opts.dir_name` into `dest` over `channel` (the session's
/// connection to the client). `dest` is created if missing; what it already holds is reused:
/// unchanged files are not requested again and entries the client no longer lists are
/// deleted. On error `dest` may hold a mix of old and new entries, but every file in it is
/// complete (files are written aside and renamed into place).
pub async fn receive_dir(
    channel: Channel,
    dest: &Path,
    opts: &SyncOptions,
) -> Result<SyncStats, SyncError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
    put_sync_metadata(request.metadata_mut(), opts)?;
    tracing::debug!(dir = %opts.dir_name, dest = %dest.display(), "FileSync/DiffCopy");
    let mut client = FileSyncClient::new(channel);
    let response = client
        .diff_copy(request)
        .await
        .map_err(|status| rpc_error(&opts.dir_name, status))?;
    let receive_opts = ReceiveOptions {
        merge: false,
        progress: opts.progress.clone(),
    };
    let result = receive(response.into_inner(), tx, dest, &receive_opts).await;
    match result {
        Err(SyncError::Rpc { status, .. }) => Err(rpc_error(&opts.dir_name, status)),
        other => other,
    }
}

fn rpc_error(dir_name: &str, status: tonic::Status) -> SyncError {
    // BuildKit answers NotFound "no access allowed to dir"; an older grpc-go may lose the code.
    if status.code() == tonic::Code::NotFound
        || status.message().contains("no access allowed to dir")
    {
        return SyncError::NoSuchDir {
            name: dir_name.to_string(),
            message: status.message().to_string(),
        };
    }
    SyncError::Rpc {
        method: DIFF_COPY_METHOD,
        status,
    }
}

/// Puts `opts` on a DiffCopy request the way BuildKit's `FSSync` does: lists only when not
/// empty, `dir-name` always.
fn put_sync_metadata(md: &mut MetadataMap, opts: &SyncOptions) -> Result<(), SyncError> {
    put_values(
        md,
        KEY_DIR_NAME,
        "dir-name-encoded",
        std::slice::from_ref(&opts.dir_name),
    )?;
    put_values(
        md,
        KEY_INCLUDE_PATTERNS,
        "include-patterns-encoded",
        &opts.include_patterns,
    )?;
    put_values(
        md,
        KEY_EXCLUDE_PATTERNS,
        "exclude-patterns-encoded",
        &opts.exclude_patterns,
    )?;
    put_values(
        md,
        KEY_FOLLOW_PATHS,
        "followpaths-encoded",
        &opts.follow_paths,
    )?;
    if opts.override_excludes {
        md.append(KEY_OVERRIDE_EXCLUDES, MetadataValue::from_static("true"));
    }
    Ok(())
}

/// Appends `values` under `key`. Like BuildKit ≥ v0.12 (`encodeOpts`), if any value cannot be
/// sent as is (non-ASCII; also control characters, which HTTP/2 forbids) all values of the key
/// are URL-query-escaped and `<key>-encoded: 1` is added. Clients before v0.12 do not decode.
fn put_values(
    md: &mut MetadataMap,
    key: &'static str,
    encoded_key: &'static str,
    values: &[String],
) -> Result<(), SyncError> {
    let plain = |v: &str| v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    let encode = !values.iter().all(|v| plain(v));
    for v in values {
        let text = if encode { query_escape(v) } else { v.clone() };
        let value = MetadataValue::try_from(text.as_str()).map_err(|e| SyncError::Metadata {
            key: key.to_string(),
            reason: format!("value {v:?}: {e}"),
        })?;
        md.append(key, value);
    }
    if encode {
        md.append(encoded_key, MetadataValue::from_static("1"));
    }
    Ok(())
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, the rest `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_escape_matches_go() {
        assert_eq!(query_escape("a b/ü*.go"), "a+b%2F%C3%BC%2A.go");
        assert_eq!(query_escape("Az09-_.~"), "Az09-_.~");
    }

    #[test]
    fn ascii_values_go_as_is_and_others_are_encoded() {
        let mut md = MetadataMap::new();
        let opts = SyncOptions {
            dir_name: "context".into(),
            include_patterns: vec!["src/**".into(), "ü".into()],
            exclude_patterns: vec!["*.log".into(), "!keep.log".into()],
            ..Default::default()
        };
        put_sync_metadata(&mut md, &opts).unwrap();
        assert_eq!(md.get("dir-name").unwrap(), "context");
        assert!(md.get("dir-name-encoded").is_none());
        let inc: Vec<_> = md.get_all("include-patterns").iter().collect();
        assert_eq!(inc, ["src%2F%2A%2A", "%C3%BC"]);
        assert_eq!(md.get("include-patterns-encoded").unwrap(), "1");
        let exc: Vec<_> = md.get_all("exclude-patterns").iter().collect();
        assert_eq!(exc, ["*.log", "!keep.log"]);
        assert!(md.get("followpaths").is_none());
        assert!(md.get("override-excludes").is_none());
    }
}
