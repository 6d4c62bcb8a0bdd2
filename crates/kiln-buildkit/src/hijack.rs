//! BuildKit over hijacked Docker API connections, as dockerd offers it: `POST /grpc` upgraded to
//! h2c carries the Control API, and `POST /session` upgraded carries one client session, whose
//! `X-Docker-Expose-Session-*` values come as HTTP headers. The docker driver of `docker buildx`
//! (the default builder when `DOCKER_HOST` is set) uses both.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::daemon::Daemon;
use crate::session::{tunnel, OpenSession};

/// A hijacked connection; `closed` fires when whoever owns it drops it.
pub struct Hijacked<T> {
    io: T,
    _closed: DropGuard,
}

impl<T: AsyncRead + Unpin> AsyncRead for Hijacked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Hijacked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T> tonic::transport::server::Connected for Hijacked<T> {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

fn wrap<T>(io: T) -> (Hijacked<T>, CancellationToken) {
    let closed = CancellationToken::new();
    (
        Hijacked {
            io,
            _closed: closed.clone().drop_guard(),
        },
        closed,
    )
}

/// Serve the BuildKit API (Control, LLBBridge, health) on one hijacked connection until it
/// closes.
pub async fn serve_grpc<T>(daemon: Arc<Daemon>, io: T) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (io, closed) = wrap(io);
    // One connection, then the stream ends once it is gone, so the server returns.
    let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(io) }).chain(
        futures::stream::once(async move {
            closed.cancelled().await;
        })
        .filter_map(|()| async { None }),
    );
    crate::server::router(daemon)
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| e.to_string())
}

/// The session a `POST /session` announces in its headers.
#[derive(Debug, Clone, Default)]
pub struct SessionHeaders {
    pub id: String,
    pub name: String,
    pub shared_key: String,
    /// The gRPC methods the client serves.
    pub methods: Vec<String>,
}

/// Take a hijacked connection as the session `headers.id`: the client serves its gRPC services
/// (filesync, auth, secrets …) on it and kiln dials them, as over `Control/Session`. The session
/// is forgotten when the connection closes.
pub async fn attach_session<T>(
    daemon: &Daemon,
    io: T,
    headers: SessionHeaders,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    if headers.id.is_empty() {
        return Err("session without X-Docker-Expose-Session-Uuid".into());
    }
    let (io, closed) = wrap(io);
    let channel = tokio::time::timeout(Duration::from_secs(10), tunnel::channel(io))
        .await
        .map_err(|_| "session: the client did not answer HTTP/2".to_string())?
        .map_err(|e| format!("session: {e}"))?;
    let methods: BTreeSet<String> = headers
        .methods
        .iter()
        .map(|m| m.to_ascii_lowercase())
        .collect();
    daemon.sessions.add(OpenSession {
        id: headers.id.clone(),
        name: headers.name,
        shared_key: headers.shared_key,
        methods,
        channel,
        closed: Default::default(),
    });
    tracing::debug!(session = %headers.id, "session opened over /session");
    let sessions = daemon.sessions.clone();
    tokio::spawn(async move {
        closed.cancelled().await;
        tracing::debug!(session = %headers.id, "session connection closed");
        sessions.remove(&headers.id);
    });
    Ok(())
}

/// A classic `docker build` in BuildKit mode (`POST /build?version=2`): the CLI serves the
/// context over the session `session`, and reads progress as encoded `StatusResponse`s.
#[derive(Debug, Clone, Default)]
pub struct ClassicBuild {
    pub session: String,
    /// The CLI's build id (`buildid`), which `POST /build/cancel` names.
    pub build_id: String,
    /// `name` of the moby exporter: the tags.
    pub tags: Vec<String>,
    /// Dockerfile frontend attributes (`filename`, `build-arg:…`, `target` …).
    pub frontend_attrs: std::collections::HashMap<String, String>,
    /// `docker build --cache-from` references.
    pub cache_from: Vec<String>,
}

/// Run a [`ClassicBuild`]; every status update goes to `status` protobuf-encoded. Returns the
/// image id. Dropping the future cancels the build.
pub async fn classic_build(
    daemon: &Arc<Daemon>,
    build: ClassicBuild,
    status: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> Result<String, String> {
    use bollard_buildkit_proto::moby::buildkit::v1 as api;
    use prost::Message;
    let id = if build.build_id.is_empty() {
        uuid::Uuid::new_v4().simple().to_string()
    } else {
        build.build_id.clone()
    };
    let (history, live) = daemon.builds.get_or_create(&id).subscribe();
    let forward = tokio::spawn(async move {
        for resp in history {
            let _ = status.send(resp.encode_to_vec());
        }
        let Some(mut live) = live else { return };
        loop {
            match live.recv().await {
                Ok(resp) => {
                    let _ = status.send(resp.encode_to_vec());
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let mut attrs = std::collections::HashMap::new();
    if !build.tags.is_empty() {
        attrs.insert("name".to_string(), build.tags.join(","));
    }
    let request = api::SolveRequest {
        r#ref: id,
        frontend: "dockerfile.v0".into(),
        frontend_attrs: build.frontend_attrs,
        session: build.session,
        exporters: vec![api::Exporter {
            r#type: "moby".into(),
            attrs,
        }],
        cache: Some(api::CacheOptions {
            imports: build
                .cache_from
                .iter()
                .map(|r| api::CacheOptionsEntry {
                    r#type: "registry".into(),
                    attrs: HashMap::from([("ref".to_string(), r.clone())]),
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let result = daemon.solve(request).await;
    // The build is finished: its status stream ends, after the last updates.
    let _ = tokio::time::timeout(Duration::from_secs(5), forward).await;
    let response = result.map_err(|s| s.message().to_string())?;
    Ok(response
        .exporter_response
        .get("containerimage.config.digest")
        .cloned()
        .unwrap_or_default())
}
