//! The session tunnel: `Control/Session` is a bidirectional stream of byte messages on which,
//! with roles inverted, the *client* runs an HTTP/2 gRPC server and kiln is the HTTP/2 client.
//! Here the two streams become one byte pipe, and a tonic channel is dialled over it eagerly
//! (the client drops the connection if our preface does not come within 10 s).

use bollard_buildkit_proto::moby::buildkit::v1::BytesMessage;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Uri};

/// Messages from kiln to the client are kept well under the client's 4 MiB limit.
const CHUNK: usize = 256 * 1024;

/// Wire the incoming stream and an outgoing sender to a byte pipe. Returns kiln's end of the
/// pipe. The returned task handles end when either side closes.
pub fn pipe(
    mut incoming: tonic::Streaming<BytesMessage>,
    outgoing: mpsc::Sender<Result<BytesMessage, tonic::Status>>,
    on_client_end: impl FnOnce() + Send + 'static,
) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(1024 * 1024);
    let (read_half, mut write_half) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(msg) = incoming.next().await {
            let Ok(msg) = msg else { break };
            if write_half.write_all(&msg.data).await.is_err() {
                break;
            }
        }
        let _ = write_half.shutdown().await;
        // The client closed its side or went away: the session is over.
        on_client_end();
    });
    forward_reads(read_half, CHUNK, outgoing, |data| Ok(BytesMessage { data }));
    ours
}

/// Send what `read` yields, in messages of at most `chunk` bytes made by `wrap`, until it ends
/// or the receiver goes away (a task of its own).
pub(crate) fn forward_reads<R, T>(
    mut read: R,
    chunk: usize,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(Vec<u8>) -> T + Send + 'static,
) where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; chunk];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(wrap(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Dial a gRPC channel over `io` (once: a reconnect attempt fails instead of hanging).
pub async fn channel<IO>(io: IO) -> Result<Channel, tonic::transport::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let slot = Arc::new(Mutex::new(Some(io)));
    let connector = tower::service_fn(move |_: Uri| {
        let io = slot.lock().expect("slot").take();
        async move {
            io.map(TokioIo::new)
                .ok_or_else(|| std::io::Error::other("session connection is closed"))
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
}
