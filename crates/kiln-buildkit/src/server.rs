//! Listeners: `unix://PATH` and `tcp://HOST:PORT` (with TLS when configured), serving Control,
//! LLBBridge and health on each.

use crate::bridge::BridgeService;
use crate::control::ControlService;
use crate::daemon::Daemon;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
};
use bollard_buildkit_proto::moby::buildkit::v1::control_server::ControlServer;
use bollard_buildkit_proto::moby::buildkit::v1::frontend::llb_bridge_server::LlbBridgeServer;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

/// Go clients send and accept up to 16 MiB messages.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            Ok(Address::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp://") {
            Ok(Address::Tcp(a.to_string()))
        } else {
            Err(format!(
                "unsupported address {s:?}: use unix://PATH or tcp://HOST:PORT"
            ))
        }
    }
}

#[derive(Clone, Default)]
struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _r: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>,
    >;

    async fn watch(
        &self,
        _r: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first = HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        };
        use futures::StreamExt;
        let stream = futures::stream::iter([Ok(first)]).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list(
        &self,
        _r: Request<bollard_buildkit_proto::health::HealthListRequest>,
    ) -> Result<Response<bollard_buildkit_proto::health::HealthListResponse>, Status> {
        Err(Status::unimplemented("health list"))
    }
}

/// The gRPC services of the daemon.
pub fn router(daemon: Arc<Daemon>) -> Router {
    tonic::transport::Server::builder()
        .add_service(
            ControlServer::new(ControlService(daemon.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            LlbBridgeServer::new(BridgeService(daemon))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(HealthServer::new(HealthService))
}

/// Serve on a unix socket until `stop`.
pub async fn serve_unix(
    daemon: Arc<Daemon>,
    path: PathBuf,
    stop: CancellationToken,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    tracing::info!("listening on unix://{}", path.display());
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    router(daemon)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
        .map_err(std::io::Error::other)
}

/// Serve plain HTTP/2 on TCP (no TLS) until `stop`. Only for loopback or trusted networks.
pub async fn serve_tcp_plain(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!("listening on tcp://{} (no TLS)", listener.local_addr()?);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    router(daemon)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
        .map_err(std::io::Error::other)
}

/// Serve TLS (mutual when the acceptor has a CA) on TCP until `stop`. Failed handshakes are
/// logged by the acceptor and never stop the listener.
pub async fn serve_tcp_tls(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    acceptor: crate::tls::TlsAcceptor,
    stop: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(
        mutual = acceptor.requires_client_cert(),
        "listening on tcp://{} (TLS)",
        listener.local_addr()?
    );
    router(daemon)
        .serve_with_incoming_shutdown(
            crate::tls::incoming(listener, acceptor),
            stop.cancelled_owned(),
        )
        .await
        .map_err(std::io::Error::other)
}
