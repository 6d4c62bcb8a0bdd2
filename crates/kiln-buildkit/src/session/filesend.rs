//! Sending build outputs back to the client: the daemon calls
//! `/moby.filesync.v1.FileSend/DiffCopy`, which the client serves when an output has a
//! client-side destination. One method, two payloads, chosen by the exporter
//! (`B@v0.16.0:session/filesync/filesync.go` `CopyToCaller`, `CopyFileWriter`):
//!
//! - `type=local,dest=DIR`: fsutil packets, the daemon is the DiffCopy *sender* and the client
//!   receives into DIR (merging, owners rewritten to the client user) — [`send_dir`].
//! - `type=tar`, `type=oci|docker` with a file or stdout: a plain byte stream of
//!   `BytesMessage`s, half-closed at the end — [`FileSendWriter`] / [`send_stream`]. The
//!   client may decline with `AlreadyExists`, which is not an error.
//!
//! Both carry `buildkit-attachable-exporter-id: <index of the exporter in the request>`
//! (v0.13+ clients keep one target per exporter; older ones ignore it). Byte streams also
//! carry `exporter-md-<key>` headers with the exporter's response. Sending packets to a file
//! target, or bytes to a directory target, fails to decode on the client.

use crate::session::filesync::send::{walk, TreeSender};
use crate::session::filesync::{ProgressFn, SyncError};
use bollard_buildkit_proto::moby::filesync::packet::file_send_client::FileSendClient as PacketClient;
use bollard_buildkit_proto::moby::filesync::v1::file_send_client::FileSendClient as BytesClient;
use bollard_buildkit_proto::moby::filesync::v1::BytesMessage;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;

pub use crate::session::filesync::send::SendStats;

/// The gRPC method the client serves output targets on.
pub const FILE_SEND_METHOD: &str = "/moby.filesync.v1.FileSend/DiffCopy";

const KEY_EXPORTER_ID: &str = "buildkit-attachable-exporter-id";
const KEY_EXPORTER_META_PREFIX: &str = "exporter-md-";
/// Bytes per message: well under the client's 4 MiB limit (BuildKit splits at 3 MiB).
const CHUNK: usize = 256 * 1024;

/// Options of a directory send.
#[derive(Clone, Default)]
pub struct SendOptions {
    /// Index of the exporter in the solve request (0 for single-output clients).
    pub exporter_id: u32,
    pub progress: Option<ProgressFn>,
}

/// Sends the tree at `src` to the client's `type=local` destination. The client requests
/// every file (it merges into its directory), so everything is transferred.
pub async fn send_dir(
    channel: Channel,
    src: &Path,
    opts: &SendOptions,
) -> Result<SendStats, SyncError> {
    let root = src.to_path_buf();
    let entries = tokio::task::spawn_blocking(move || walk(&root))
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
    tracing::debug!(src = %src.display(), entries = entries.len(), "FileSend/DiffCopy (directory)");
    let (tx, rx) = mpsc::channel(32);
    // The listing must flow while we wait for response headers: the client sends none
    // before its first REQ or FIN.
    let sender = TreeSender::start(entries, tx, opts.progress.clone());
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    put_exporter_id(request.metadata_mut(), opts.exporter_id);
    let response = PacketClient::new(channel)
        .diff_copy(request)
        .await
        .map_err(rpc_error)?;
    sender
        .serve(response.into_inner())
        .await
        .map_err(|e| match e {
            SyncError::Rpc { status, .. } => rpc_error(status),
            other => other,
        })
}

/// Options of a byte-stream send.
#[derive(Clone, Debug, Default)]
pub struct FileOptions {
    /// Index of the exporter in the solve request (0 for single-output clients).
    pub exporter_id: u32,
    /// Exporter response entries, sent as `exporter-md-<key>` headers (no client in range
    /// reads them; entries that are not valid headers are skipped).
    pub metadata: BTreeMap<String, String>,
}

/// How a byte-stream send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSendOutcome {
    /// The client stored `bytes` bytes.
    Written { bytes: u64 },
    /// The client declined the stream (`AlreadyExists`): nothing to do.
    Declined,
}

/// Streams `reader` to the client's file destination (`type=tar`, `oci`, `docker`).
pub async fn send_stream<R: AsyncRead + Unpin>(
    channel: Channel,
    mut reader: R,
    opts: &FileOptions,
) -> Result<FileSendOutcome, SyncError> {
    let mut writer = FileSendWriter::open(channel, opts);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| SyncError::io("read", "export stream", e))?;
        if n == 0 {
            break;
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            // The call ended early; `finish` reports why (or that the client declined).
            break;
        }
    }
    writer.finish().await
}

/// An `AsyncWrite` into the client's file destination. Writes are buffered into messages of
/// 256 KiB. Call [`finish`](Self::finish) at the end: it flushes, half-closes and waits for
/// the client to store the file. If a write fails with `BrokenPipe` the client ended the call;
/// `finish` then says why. Dropping the writer without `finish` cancels the call, so the
/// client never mistakes a partial stream for a complete file.
pub struct FileSendWriter {
    tx: PollSender<BytesMessage>,
    buf: Vec<u8>,
    written: u64,
    call: Option<JoinHandle<Result<bool, SyncError>>>,
}

impl FileSendWriter {
    /// Starts the call. It runs in its own task: the client answers only at the very end.
    pub fn open(channel: Channel, opts: &FileOptions) -> Self {
        let (tx, rx) = mpsc::channel::<BytesMessage>(4);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let md = request.metadata_mut();
        for (k, v) in &opts.metadata {
            let key = MetadataKey::from_bytes(format!("{KEY_EXPORTER_META_PREFIX}{k}").as_bytes());
            match (key, MetadataValue::try_from(v.as_str())) {
                (Ok(key), Ok(value)) => {
                    md.insert(key, value);
                }
                _ => tracing::debug!(key = %k, "exporter metadata is not a valid header; not sent"),
            }
        }
        put_exporter_id(md, opts.exporter_id);
        tracing::debug!(exporter = opts.exporter_id, "FileSend/DiffCopy (bytes)");
        let call = tokio::spawn(async move {
            let declined = |status: &tonic::Status| status.code() == tonic::Code::AlreadyExists;
            let mut stream = match BytesClient::new(channel).diff_copy(request).await {
                Ok(response) => response.into_inner(),
                Err(status) if declined(&status) => return Ok(true),
                Err(status) => return Err(rpc_error(status)),
            };
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(false),
                    Err(status) if declined(&status) => return Ok(true),
                    Err(status) => return Err(rpc_error(status)),
                }
            }
        });
        FileSendWriter {
            tx: PollSender::new(tx),
            buf: Vec::with_capacity(CHUNK),
            written: 0,
            call: Some(call),
        }
    }

    /// Flushes, half-closes and waits for the client's answer.
    pub async fn finish(mut self) -> Result<FileSendOutcome, SyncError> {
        let flushed = self.shutdown().await;
        let call = self.call.take();
        let declined = match call {
            Some(call) => call.await.map_err(|e| SyncError::Task(e.to_string()))??,
            None => false,
        };
        if declined {
            tracing::info!("the client declined the exported file (target exists)");
            return Ok(FileSendOutcome::Declined);
        }
        flushed.map_err(|e| SyncError::io("send", "export stream", e))?;
        Ok(FileSendOutcome::Written {
            bytes: self.written,
        })
    }

    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| call_ended())?;
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let len = data.len() as u64;
        self.tx
            .send_item(BytesMessage { data })
            .map_err(|_| call_ended())?;
        self.written += len;
        Poll::Ready(Ok(()))
    }
}

fn call_ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the client ended the FileSend call; finish() reports why",
    )
}

impl AsyncWrite for FileSendWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= CHUNK {
            ready!(this.poll_send_buf(cx))?;
        }
        let n = data.len().min(CHUNK - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_buf(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = ready!(this.poll_send_buf(cx));
        this.tx.close();
        Poll::Ready(flushed)
    }
}

impl Drop for FileSendWriter {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.abort();
        }
    }
}

fn put_exporter_id(md: &mut MetadataMap, id: u32) {
    md.insert(KEY_EXPORTER_ID, MetadataValue::from(id));
}

fn rpc_error(status: tonic::Status) -> SyncError {
    SyncError::Rpc {
        method: FILE_SEND_METHOD,
        status,
    }
}
