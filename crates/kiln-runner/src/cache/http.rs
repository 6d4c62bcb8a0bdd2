//! The HTTP face of the cache: routes, bearer authentication, JSON in and out.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::index::IndexError;
use super::range::{parse_content_range, parse_range, RangeRequest};
use super::shared::Shared;

/// Largest chunk a `PATCH` may carry; the toolkit sends 32 MiB.
pub const MAX_CHUNK: u64 = 64 << 20;
/// Longest key or version.
const MAX_KEY: usize = 512;
/// Largest JSON request body (reserve, commit).
const MAX_JSON: usize = 64 << 10;

type AppState = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_apis/artifactcache/cache", get(lookup))
        .route("/_apis/artifactcache/caches", post(reserve))
        .route(
            "/_apis/artifactcache/caches/{id}",
            post(commit).patch(upload),
        )
        .route("/_apis/artifactcache/artifacts/{id}", get(download))
        .route("/_apis/artifactcache/clean", post(clean))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_JSON))
        .with_state(shared)
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl ToString) -> ApiError {
        ApiError {
            status,
            message: message.to_string(),
        }
    }

    pub fn bad_request(message: impl ToString) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl ToString) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> ApiError {
        ApiError::bad_request(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = self.message, "cache request failed");
        } else {
            tracing::debug!(status = %self.status, error = self.message, "cache request refused");
        }
        json_response(self.status, &json!({ "error": self.message }))
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let content_type = HeaderValue::from_static("application/json; charset=utf-8");
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        value.to_string(),
    )
        .into_response()
}

fn empty_json() -> Response {
    json_response(StatusCode::OK, &json!({}))
}

/// A request from a registered job; extracting it is the authentication.
pub struct Job {
    repository: String,
}

impl FromRequestParts<Arc<Shared>> for Job {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Job, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let repository = token.and_then(|t| shared.repository_for(t));
        match repository {
            Some(repository) => Ok(Job { repository }),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or unknown bearer token",
            )),
        }
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

fn cache_id(path: Result<Path<u64>, PathRejection>) -> Result<u64, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("cache id: {e}")))
}

#[derive(Deserialize)]
struct LookupQuery {
    keys: String,
    version: String,
}

/// `GET _apis/artifactcache/cache?keys=k1,k2&version=v`
async fn lookup(
    State(shared): AppState,
    job: Job,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let keys: Vec<&str> = query
        .keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return Err(ApiError::bad_request("query: no keys"));
    }
    match shared.lookup(&job.repository, &keys, &query.version) {
        Some(entry) => Ok(json_response(
            StatusCode::OK,
            &json!({
                "result": "hit",
                "archiveLocation": shared.archive_location(&entry),
                "cacheKey": entry.key,
            }),
        )),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReserveRequest {
    key: String,
    version: String,
    #[serde(default)]
    cache_size: Option<i64>,
}

/// `POST _apis/artifactcache/caches` `{key, version, cacheSize}` → `{cacheId}`
async fn reserve(State(shared): AppState, job: Job, body: Bytes) -> Result<Response, ApiError> {
    let request: ReserveRequest = parse_json(&body)?;
    // GitHub's limits; a comma would make the key unreachable by lookups.
    if request.key.is_empty() || request.key.len() > MAX_KEY || request.key.contains(',') {
        return Err(ApiError::bad_request(format!(
            "key {:?}: must be 1 to {MAX_KEY} bytes, without commas",
            request.key
        )));
    }
    if request.version.len() > MAX_KEY {
        return Err(ApiError::bad_request(format!(
            "version: longer than {MAX_KEY} bytes"
        )));
    }
    // 0 or absent (or negative) means the client doesn't know the size yet.
    let size = request
        .cache_size
        .filter(|&s| s > 0)
        .map(|s| s.unsigned_abs());
    let id = shared
        .reserve(&job.repository, &request.key, &request.version, size)
        .await?;
    Ok(json_response(StatusCode::OK, &json!({ "cacheId": id })))
}

/// `PATCH _apis/artifactcache/caches/:id` with `Content-Range: bytes a-b/*`
async fn upload(
    State(shared): AppState,
    job: Job,
    id: Result<Path<u64>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = cache_id(id)?;
    let content_range = headers
        .get(header::CONTENT_RANGE)
        .ok_or_else(|| ApiError::bad_request("missing Content-Range"))?
        .to_str()
        .map_err(|_| ApiError::bad_request("Content-Range is not text"))?;
    let range = parse_content_range(content_range).map_err(ApiError::bad_request)?;
    if range.len() > MAX_CHUNK {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("chunk of {} bytes exceeds {MAX_CHUNK}", range.len()),
        ));
    }
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length != range.len() {
            return Err(ApiError::bad_request(format!(
                "Content-Length {length} does not match Content-Range {content_range:?}"
            )));
        }
    }
    shared
        .upload_chunk(&job.repository, id, range, body.into_data_stream())
        .await?;
    Ok(empty_json())
}

#[derive(Deserialize)]
struct CommitRequest {
    size: u64,
}

/// `POST _apis/artifactcache/caches/:id` `{size}`
async fn commit(
    State(shared): AppState,
    job: Job,
    id: Result<Path<u64>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = cache_id(id)?;
    let request: CommitRequest = parse_json(&body)?;
    shared.commit(&job.repository, id, request.size).await?;
    Ok(empty_json())
}

/// `POST _apis/artifactcache/clean`: accepted and ignored, as act does.
async fn clean(_job: Job) -> Response {
    empty_json()
}

#[derive(Deserialize)]
struct DownloadQuery {
    #[serde(default)]
    sig: String,
}

/// `GET _apis/artifactcache/artifacts/:id?sig=…`: no bearer token (the toolkit sends none); the
/// per-entry random `sig` is the authorization. Supports a single `Range`.
async fn download(
    State(shared): AppState,
    id: Result<Path<u64>, PathRejection>,
    query: Result<Query<DownloadQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such cache archive");
    let id = cache_id(id).map_err(|_| not_found())?;
    let sig = query.map(|Query(q)| q.sig).unwrap_or_default();
    let (entry, path) = shared.open_download(id, &sig).ok_or_else(not_found)?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let size = entry.size;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeRequest::Whole, |v| parse_range(v, size));
    let (status, start, len) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.len()),
        RangeRequest::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response());
        }
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(ApiError::internal)?;
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{size}", start + len - 1);
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("ascii"),
        );
    }
    Ok(response)
}
