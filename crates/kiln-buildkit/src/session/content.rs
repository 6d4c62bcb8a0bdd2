//! A client's content store over its session: containerd's `Content` service, which buildctl and
//! buildx serve for `--export-cache type=local,dest=DIR` and `--import-cache type=local,src=DIR`
//! (the directory stays on the client's machine). The store is chosen per call with the
//! `buildkit-attachable-store-id` header, `local:DIR` for those caches.
//!
//! `bollard-buildkit-proto` has no stubs for containerd's API, so the few messages used are
//! declared here, with their field numbers from containerd's `content.proto`.

use async_trait::async_trait;
use kiln_engine::remote_cache::BlobStore;
use kiln_oci::{ContentStore, Digest};
use std::collections::HashMap;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

const STORE_HEADER: &str = "buildkit-attachable-store-id";
const INFO: &str = "/containerd.services.content.v1.Content/Info";
const READ: &str = "/containerd.services.content.v1.Content/Read";
const WRITE: &str = "/containerd.services.content.v1.Content/Write";
/// Size of the data messages a blob is written in.
const CHUNK: usize = 1024 * 1024;

#[derive(Clone, PartialEq, prost::Message)]
struct InfoRequest {
    #[prost(string, tag = "1")]
    digest: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Info {
    #[prost(string, tag = "1")]
    digest: String,
    #[prost(int64, tag = "2")]
    size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InfoResponse {
    #[prost(message, optional, tag = "1")]
    info: Option<Info>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadContentRequest {
    #[prost(string, tag = "1")]
    digest: String,
    #[prost(int64, tag = "2")]
    offset: i64,
    #[prost(int64, tag = "3")]
    size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

/// containerd's `WriteAction`.
const STAT: i32 = 0;
const WRITE_DATA: i32 = 1;
const COMMIT: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
struct WriteContentRequest {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(string, tag = "2")]
    r#ref: String,
    #[prost(int64, tag = "3")]
    total: i64,
    #[prost(string, tag = "4")]
    expected: String,
    #[prost(int64, tag = "5")]
    offset: i64,
    #[prost(bytes = "vec", tag = "6")]
    data: Vec<u8>,
    #[prost(map = "string, string", tag = "7")]
    labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WriteContentResponse {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(int64, tag = "4")]
    offset: i64,
    #[prost(int64, tag = "5")]
    total: i64,
    #[prost(string, tag = "6")]
    digest: String,
}

/// One of the client's content stores.
#[derive(Clone)]
pub struct SessionContentStore {
    channel: Channel,
    store_id: String,
}

impl std::fmt::Debug for SessionContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client content store {}", self.store_id)
    }
}

impl SessionContentStore {
    pub fn new(channel: Channel, store_id: String) -> SessionContentStore {
        SessionContentStore { channel, store_id }
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, String> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut().insert(
            STORE_HEADER,
            self.store_id
                .parse()
                .map_err(|_| format!("invalid store id {:?}", self.store_id))?,
        );
        Ok(req)
    }

    async fn grpc(&self) -> Result<tonic::client::Grpc<Channel>, String> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        grpc.ready()
            .await
            .map_err(|e| format!("client session: {e}"))?;
        Ok(grpc)
    }

    fn status(&self, e: tonic::Status) -> String {
        format!("{} on the client: {}", self.store_id, e.message())
    }

    /// The blob's size in the client's store, `None` when it has no such blob.
    async fn size(&self, digest: &Digest) -> Result<Option<i64>, String> {
        let mut grpc = self.grpc().await?;
        let req = self.request(InfoRequest {
            digest: digest.to_string(),
        })?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(INFO);
        let codec: ProstCodec<InfoRequest, InfoResponse> = ProstCodec::default();
        match grpc.unary(req, path, codec).await {
            Ok(resp) => Ok(resp.into_inner().info.map(|i| i.size)),
            Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
            Err(e) => Err(self.status(e)),
        }
    }

    async fn next(
        &self,
        responses: &mut tonic::Streaming<WriteContentResponse>,
    ) -> Result<WriteContentResponse, String> {
        match responses.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(format!("{}: the client ended the write", self.store_id)),
            Err(e) => Err(self.status(e)),
        }
    }

    /// Stream the blob's bytes to `sink`, returning how many there were.
    async fn read_with(
        &self,
        digest: &Digest,
        mut sink: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<u64, String> {
        use futures::StreamExt;
        let mut grpc = self.grpc().await?;
        let req = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(READ);
        let codec: ProstCodec<ReadContentRequest, ReadContentResponse> = ProstCodec::default();
        let mut stream = grpc
            .server_streaming(req, path, codec)
            .await
            .map_err(|e| self.status(e))?
            .into_inner();
        let mut read: u64 = 0;
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|e| self.status(e))?;
            if msg.offset as u64 != read {
                return Err(format!(
                    "{}: blob {digest} arrived out of order",
                    self.store_id
                ));
            }
            sink(&msg.data)?;
            read += msg.data.len() as u64;
        }
        Ok(read)
    }
}

#[async_trait]
impl BlobStore for SessionContentStore {
    async fn has(&self, digest: &Digest) -> Result<bool, String> {
        Ok(self.size(digest).await?.is_some())
    }

    async fn read(&self, digest: &Digest, limit: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.read_with(digest, |data| {
            out.extend_from_slice(data);
            if out.len() > limit {
                return Err(format!("blob {digest} is larger than {limit} bytes"));
            }
            Ok(())
        })
        .await?;
        if Digest::sha256(&out) != *digest {
            return Err(format!("blob {digest}: content does not match its digest"));
        }
        Ok(out)
    }

    async fn fetch(&self, digest: &Digest, content: &ContentStore) -> Result<(), String> {
        use std::io::Write;
        let mut w = content.writer().map_err(|e| e.to_string())?;
        self.read_with(digest, |data| {
            w.write_all(data)
                .map_err(|e| format!("storing {digest}: {e}"))
        })
        .await?;
        w.commit(Some(digest))
            .map(|_| ())
            .map_err(|e| format!("blob {digest}: {e}"))
    }

    async fn write(&self, digest: &Digest, content: &ContentStore) -> Result<(), String> {
        if self.size(digest).await?.is_some() {
            return Ok(());
        }
        let total = content.size(digest).map_err(|e| e.to_string())? as i64;
        let path = content.path(digest);
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let reference = format!("kiln-{}", digest.hex());
        // The requests, produced as the client acknowledges each one.
        let mut grpc = self.grpc().await?;
        let req = self.request(tokio_stream::wrappers::ReceiverStream::new(rx))?;
        let first = WriteContentRequest {
            action: STAT,
            r#ref: reference.clone(),
            total,
            expected: digest.to_string(),
            ..Default::default()
        };
        tx.send(first)
            .await
            .map_err(|_| "client session closed".to_string())?;
        let codec: ProstCodec<WriteContentRequest, WriteContentResponse> = ProstCodec::default();
        let rpc = tonic::codegen::http::uri::PathAndQuery::from_static(WRITE);
        let mut responses = grpc
            .streaming(req, rpc, codec)
            .await
            .map_err(|e| self.status(e))?
            .into_inner();

        // A partial upload of the same ref restarts from where the client has it.
        let stat = self.next(&mut responses).await?;
        let mut offset = stat.offset.clamp(0, total);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            file.seek(std::io::SeekFrom::Start(offset as u64))
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut buf = vec![0u8; CHUNK];
            while offset < total {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if n == 0 {
                    return Err(format!("{}: shorter than its size", path.display()));
                }
                tx.send(WriteContentRequest {
                    action: WRITE_DATA,
                    r#ref: reference.clone(),
                    offset,
                    data: buf[..n].to_vec(),
                    ..Default::default()
                })
                .await
                .map_err(|_| "client session closed".to_string())?;
                let r = self.next(&mut responses).await?;
                offset += n as i64;
                if r.offset != offset {
                    return Err(format!(
                        "{}: the client is at offset {} of {digest}, not {offset}",
                        self.store_id, r.offset
                    ));
                }
            }
        }
        tx.send(WriteContentRequest {
            action: COMMIT,
            r#ref: reference,
            total,
            expected: digest.to_string(),
            offset,
            ..Default::default()
        })
        .await
        .map_err(|_| "client session closed".to_string())?;
        match responses.message().await {
            Ok(Some(r)) if r.digest.is_empty() || r.digest == digest.to_string() => Ok(()),
            Ok(Some(r)) => Err(format!(
                "{}: the client stored {} for {digest}",
                self.store_id, r.digest
            )),
            Ok(None) => Ok(()),
            // The blob arrived meanwhile (another export): that is success.
            Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(e) => Err(self.status(e)),
        }
    }
}
