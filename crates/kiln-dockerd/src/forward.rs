//! Forwarding to a real Docker daemon: when one is configured, the endpoints kiln does not serve
//! itself (containers, exec, networks, volumes, pulls) go to it unchanged, including hijacked
//! streams (`docker run` attaches with `Upgrade: tcp`). Builds, images and logins stay kiln's.

use std::path::Path;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::error::ApiError;

/// Send `req` to the daemon at `socket` and relay its answer. The API version prefix is dropped,
/// so the daemon answers in its own newest version (it may be older than the client).
pub async fn forward(socket: &Path, path: &str, mut req: Request) -> Result<Response, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::Internal(format!(
            "kiln: forwarding to the Docker daemon at {}: {e}",
            socket.display()
        ))
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| unavailable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("forwarded connection: {e}");
        }
    });
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = target
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{target}: {e}")))?;
    let upstream = hyper::Request::from_parts(parts, body);
    let mut response = sender
        .send_request(upstream)
        .await
        .map_err(|e| unavailable(&e))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(unavailable(
                &"the daemon upgraded a connection nobody asked to upgrade",
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, daemon)) => {
                    let (mut client, mut daemon) = (TokioIo::new(client), TokioIo::new(daemon));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                }
                Err(e) => tracing::debug!("forwarded upgrade failed: {e}"),
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, axum::body::Body::empty()));
    }
    Ok(response.map(axum::body::Body::new))
}
