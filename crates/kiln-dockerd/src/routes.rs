//! Request routing. Docker puts image names (which contain `/` and `:`) in the middle of paths
//! (`/images/host:5000/team/app:1/json`), which route patterns cannot express, so one fallback
//! handler splits the path and calls a small handler per endpoint.

use crate::error::ApiError;
use crate::query::{decode_path, Query};
use crate::{archive, build, images, login, push, system, Shared};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// Everything about containers, which kiln does not run.
const CONTAINER_PREFIXES: &[&str] = &[
    "/containers",
    "/exec",
    "/networks",
    "/volumes",
    "/commit",
    "/swarm",
    "/services",
    "/nodes",
    "/tasks",
    "/secrets",
    "/configs",
    "/plugins",
];

pub const CONTAINERS_UNSUPPORTED: &str =
    "kiln: containers are not supported by this Docker API; only build, image and login calls \
     are (a runner can forward container calls to a real daemon: kiln.buildkit.docker_forward)";

async fn dispatch(State(api): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = strip_version(uri.path());
    let query = Query::parse(uri.query());
    tracing::debug!(%method, %uri, "docker API request");
    match route(&api, &method, path, query, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %uri, status = %e.status(), "docker API error: {e}");
            e.into_response()
        }
    }
}

/// `/v1.43/images/json` → `/images/json`; paths without a version pass through.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if let Some((major, minor)) = version.split_once('.') {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if digits(major) && digits(minor) {
                return if end == rest.len() { "/" } else { &rest[end..] };
            }
        }
    }
    path
}

async fn route(
    api: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: Query,
    req: Request,
) -> Result<Response, ApiError> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    match path {
        "/_ping" if get || post => return Ok(system::ping(method)),
        "/version" if get => return Ok(system::version()),
        "/info" if get => return Ok(system::info(api)),
        "/build" if post => return build::build(api, &query, req).await,
        "/auth" if post => return login::login(api, req).await,
        "/images/json" if get => return images::list(api, &query),
        "/images/load" if post => return archive::load(api, &query, req).await,
        "/images/get" if get => return archive::save(api, &query.all("names")).await,
        "/images/create" if post && api.forward.get().is_some() => {
            let socket = api.forward.get().expect("checked").clone();
            return crate::forward::forward(&socket, path, req).await;
        }
        "/images/create" if post => {
            return Err(ApiError::NotImplemented(
                "kiln: docker pull is not supported by this Docker API; `docker build` pulls \
                 base images itself"
                    .into(),
            ))
        }
        "/session" | "/grpc" if post => return hijack(api, path, req),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/images/") {
        return image_route(api, method, rest, query, req).await;
    }
    // Everything else (containers, exec, networks, volumes, events …) belongs to a real daemon,
    // when one is configured.
    if let Some(socket) = api.forward.get() {
        return crate::forward::forward(socket, path, req).await;
    }
    // Read (and drop) a small body before refusing, so that clients still writing it see the
    // answer rather than a reset connection.
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    if CONTAINER_PREFIXES
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Err(ApiError::NotImplemented(CONTAINERS_UNSUPPORTED.into()));
    }
    Err(ApiError::NotFound(format!(
        "page not found: kiln does not serve {method} {path}"
    )))
}

/// `/images/{name}/{json,history,tag,push,get}` and `DELETE /images/{name}`.
async fn image_route(
    api: &Arc<Shared>,
    method: &Method,
    rest: &str,
    query: Query,
    req: Request,
) -> Result<Response, ApiError> {
    let split = |suffix: &str| rest.strip_suffix(suffix).map(decode_path);
    match *method {
        Method::GET | Method::HEAD => {
            if let Some(name) = split("/json") {
                return images::inspect(api, &name);
            }
            if let Some(name) = split("/history") {
                return images::history(api, &name);
            }
            if let Some(name) = split("/get") {
                return archive::save(api, &[name.as_str()]).await;
            }
        }
        Method::POST => {
            if let Some(name) = split("/tag") {
                return images::tag(api, &name, &query);
            }
            if let Some(name) = split("/push") {
                return push::push(api, &name, &query, req.headers()).await;
            }
        }
        Method::DELETE => return images::remove(api, &decode_path(rest), &query),
        _ => {}
    }
    Err(ApiError::NotFound(format!(
        "page not found: kiln does not serve {method} /images/{rest}"
    )))
}

/// `POST /grpc` and `POST /session`: answer `101 Switching Protocols` and hand the connection to
/// the BuildKit API once hyper lets go of it.
fn hijack(api: &Arc<Shared>, path: &str, mut req: Request) -> Result<Response, ApiError> {
    use axum::http::header::{CONNECTION, UPGRADE};
    let Some(door) = api.buildkit.get().cloned() else {
        return Err(ApiError::NotImplemented(
            "kiln: this Docker API has no BuildKit API behind it".into(),
        ));
    };
    let protocol = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if protocol.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{path} needs a connection upgrade (Upgrade: h2c)"
        )));
    }
    let headers = req.headers().clone();
    let upgrade = hyper::upgrade::on(&mut req);
    let grpc = path == "/grpc";
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                if grpc {
                    door.grpc(io).await;
                } else {
                    door.session(io, &headers).await;
                }
            }
            Err(e) => tracing::warn!("upgrading the connection failed: {e}"),
        }
    });
    axum::http::Response::builder()
        .status(axum::http::StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, protocol)
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::strip_version;

    #[test]
    fn version_prefixes_are_optional() {
        assert_eq!(strip_version("/v1.43/images/json"), "/images/json");
        assert_eq!(strip_version("/v1.24/_ping"), "/_ping");
        assert_eq!(strip_version("/images/json"), "/images/json");
        assert_eq!(strip_version("/volumes"), "/volumes");
        assert_eq!(strip_version("/v1.41"), "/");
    }
}
