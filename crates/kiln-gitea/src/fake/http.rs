//! Connect over HTTP for the fake: routing, codecs, the auth interceptor and fault injection.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;

use super::git_http;
use super::protojson::{FromJson, ToJson};
use super::state::RpcError;
use super::{Fault, Shared};
use crate::proto;
use crate::Code;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/actions/{service}/{method}", post(handle))
        .fallback(fallback)
        .with_state(shared)
}

/// Repository paths (`/<owner>/<repo>/…`) go to git; everything else is unknown.
async fn fallback(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    match git_http::route(req.uri().path()) {
        Some(route) => git_http::serve(&shared, route, req).await,
        None => (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Ping,
    Register,
    Declare,
    FetchTask,
    UpdateTask,
    UpdateLog,
}

impl Rpc {
    fn parse(service: &str, method: &str) -> Option<Rpc> {
        Some(match (service, method) {
            ("ping.v1.PingService", "Ping") => Rpc::Ping,
            ("runner.v1.RunnerService", "Register") => Rpc::Register,
            ("runner.v1.RunnerService", "Declare") => Rpc::Declare,
            ("runner.v1.RunnerService", "FetchTask") => Rpc::FetchTask,
            ("runner.v1.RunnerService", "UpdateTask") => Rpc::UpdateTask,
            ("runner.v1.RunnerService", "UpdateLog") => Rpc::UpdateLog,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Rpc::Ping => "Ping",
            Rpc::Register => "Register",
            Rpc::Declare => "Declare",
            Rpc::FetchTask => "FetchTask",
            Rpc::UpdateTask => "UpdateTask",
            Rpc::UpdateLog => "UpdateLog",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
        }
    }
}

/// What the fault settings say to do with one call.
enum Injected {
    Nothing,
    Outage,
    Fail,
    Delay(Duration),
    LoseReply,
}

fn injected_fault(shared: &Shared, rpc: Rpc) -> Injected {
    let mut fault = shared.fault.lock().unwrap_or_else(|e| e.into_inner());
    let lose = matches!(*fault, Fault::LoseReply { .. });
    match &mut *fault {
        Fault::Outage => Injected::Outage,
        Fault::Delay(d) => Injected::Delay(*d),
        Fault::Http500 { rpc: which, times } | Fault::LoseReply { rpc: which, times } => {
            if which.as_deref().is_some_and(|w| w != rpc.name()) {
                return Injected::Nothing;
            }
            let injected = if lose {
                Injected::LoseReply
            } else {
                Injected::Fail
            };
            if *times <= 1 {
                *fault = Fault::None;
            } else {
                *times -= 1;
            }
            injected
        }
        Fault::None | Fault::LegacyErrors(_) => Injected::Nothing,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(rpc) = Rpc::parse(&service, &method) else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    shared
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(rpc.name().to_string());
    let legacy = *shared
        .legacy_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner());

    let injected = injected_fault(&shared, rpc);
    let lose_reply = matches!(injected, Injected::LoseReply);
    match injected {
        Injected::Nothing | Injected::LoseReply => {}
        Injected::Outage => {
            return (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable\n").into_response()
        }
        Injected::Fail => {
            return connect_error(
                &RpcError {
                    code: Code::Internal,
                    message: "injected failure".into(),
                    plain: false,
                },
                false,
            )
        }
        Injected::Delay(d) => {
            let limit = header_str(&headers, "connect-timeout-ms")
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis);
            match limit {
                Some(limit) if d >= limit => {
                    tokio::time::sleep(limit).await;
                    let e = RpcError {
                        code: Code::DeadlineExceeded,
                        message: "the operation timed out".into(),
                        plain: false,
                    };
                    return connect_error(&e, false);
                }
                _ => tokio::time::sleep(d).await,
            }
        }
    }

    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let codec = match content_type.split(';').next().unwrap_or("").trim() {
        "application/proto" | "application/protobuf" => Codec::Proto,
        "application/json" => Codec::Json,
        other => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content-type {other:?}"),
            )
                .into_response()
        }
    };

    let result = match rpc {
        Rpc::Ping => decode::<proto::PingRequest>(codec, &body).and_then(|req| {
            encode(
                codec,
                &proto::PingResponse {
                    data: format!("Hello, {}!", req.data),
                },
            )
        }),
        Rpc::Register => decode::<proto::RegisterRequest>(codec, &body)
            .and_then(|req| shared.db().register(req))
            .and_then(|resp| encode(codec, &resp)),
        _ => {
            let runner_id = shared.db().authenticate(
                header_str(&headers, "x-runner-uuid"),
                header_str(&headers, "x-runner-token"),
            );
            runner_id.and_then(|id| authenticated(&shared, rpc, codec, id, &body))
        }
    };
    match result {
        Ok(_) if lose_reply => {
            (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable\n").into_response()
        }
        Ok(resp) => resp,
        Err(e) => connect_error(&e, legacy),
    }
}

fn authenticated(
    shared: &Shared,
    rpc: Rpc,
    codec: Codec,
    runner_id: i64,
    body: &[u8],
) -> Result<Response, RpcError> {
    let mut db = shared.db();
    match rpc {
        Rpc::Declare => {
            let resp = db.declare(runner_id, decode(codec, body)?)?;
            let mut out = encode(codec, &resp)?;
            if !db.capabilities.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&db.capabilities.join(",")) {
                    out.headers_mut().insert("x-gitea-actions-capabilities", v);
                }
            }
            Ok(out)
        }
        Rpc::FetchTask => encode(codec, &db.fetch_task(runner_id, decode(codec, body)?)?),
        Rpc::UpdateTask => encode(codec, &db.update_task(runner_id, decode(codec, body)?)?),
        Rpc::UpdateLog => encode(codec, &db.update_log(runner_id, decode(codec, body)?)?),
        Rpc::Ping | Rpc::Register => unreachable!("unauthenticated RPCs are handled by the caller"),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn decode<M: Message + Default + FromJson>(codec: Codec, body: &[u8]) -> Result<M, RpcError> {
    let bad = |e: String| RpcError {
        code: Code::InvalidArgument,
        message: format!("unmarshal message: {e}"),
        plain: false,
    };
    match codec {
        Codec::Proto => M::decode(body).map_err(|e| bad(e.to_string())),
        Codec::Json => {
            let v: serde_json::Value = if body.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?
            };
            M::from_json(&v).map_err(bad)
        }
    }
}

fn encode<M: Message + ToJson>(codec: Codec, msg: &M) -> Result<Response, RpcError> {
    let body = match codec {
        Codec::Proto => msg.encode_to_vec(),
        Codec::Json => msg.to_json().to_string().into_bytes(),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, codec.content_type())],
        body,
    )
        .into_response())
}

/// A Connect error body; in legacy style everything is `unknown` with gRPC-formatted text.
fn connect_error(e: &RpcError, legacy: bool) -> Response {
    let (code, message) = if e.plain {
        (Code::Unknown, e.message.clone())
    } else if legacy {
        (
            Code::Unknown,
            format!("rpc error: code = {:?} desc = {}", e.code, e.message),
        )
    } else {
        (e.code, e.message.clone())
    };
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"code": code.as_str(), "message": message});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
