//! A unary Connect client for Gitea's `/api/actions` endpoints.

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};

use crate::proto;

/// Response header of `Declare` listing server capabilities (newer Gitea).
pub const CAPABILITIES_HEADER: &str = "x-gitea-actions-capabilities";

const PROTO_CONTENT_TYPE: &str = "application/proto";

/// How the client reaches Gitea.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Extra trusted CA certificates (PEM, one or more), on top of the webpki roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Runner version, sent as `x-runner-version` and in the user agent.
    pub version: String,
    /// Deadline for every call except `fetch_task`, which takes its own.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            extra_ca_pem: None,
            version: concat!("kiln-", env!("CARGO_PKG_VERSION")).to_string(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct Credentials {
    uuid: HeaderValue,
    token: HeaderValue,
}

/// A Connect client for Gitea's runner API. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    address: Arc<str>,
    base: Arc<str>,
    version: HeaderValue,
    request_timeout: Duration,
    credentials: Option<Credentials>,
}

impl fmt::Debug for Client {
    // Hand-written so the runner token can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field(
                "uuid",
                &self
                    .credentials
                    .as_ref()
                    .map(|c| c.uuid.to_str().unwrap_or("?")),
            )
            .finish_non_exhaustive()
    }
}

/// The RPCs, with their paths below `<address>/api/actions`.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    Ping,
    Register,
    Declare,
    FetchTask,
    UpdateTask,
    UpdateLog,
}

impl Rpc {
    fn path(self) -> &'static str {
        match self {
            Rpc::Ping => "/ping.v1.PingService/Ping",
            Rpc::Register => "/runner.v1.RunnerService/Register",
            Rpc::Declare => "/runner.v1.RunnerService/Declare",
            Rpc::FetchTask => "/runner.v1.RunnerService/FetchTask",
            Rpc::UpdateTask => "/runner.v1.RunnerService/UpdateTask",
            Rpc::UpdateLog => "/runner.v1.RunnerService/UpdateLog",
        }
    }

    fn authenticated(self) -> bool {
        !matches!(self, Rpc::Ping | Rpc::Register)
    }
}

impl Client {
    /// `address` is the instance URL as the user typed it (`https://gitea.example.com`, possibly
    /// with a sub-path). A trailing `/` is ignored.
    pub fn new(address: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let address = address.trim();
        let parsed = reqwest::Url::parse(address).map_err(|e| {
            ClientError::new(
                Code::InvalidArgument,
                format!("invalid Gitea address {address:?}: {e}"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::new(
                Code::InvalidArgument,
                format!("invalid Gitea address {address:?}: scheme must be http or https"),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(format!("kiln-runner/{}", options.version))
            .connect_timeout(Duration::from_secs(10))
            .danger_accept_invalid_certs(options.insecure);
        if let Some(pem) = &options.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ClientError::new(Code::InvalidArgument, format!("extra CA certificate: {e}"))
            })?;
            if certs.is_empty() {
                return Err(ClientError::new(
                    Code::InvalidArgument,
                    "extra CA certificate: no PEM certificate found",
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::new(Code::Internal, format!("building HTTP client: {e}")))?;
        let version = HeaderValue::from_str(&options.version).map_err(|_| {
            ClientError::new(
                Code::InvalidArgument,
                format!(
                    "runner version {:?} is not a valid header value",
                    options.version
                ),
            )
        })?;
        Ok(Client {
            http,
            address: address.into(),
            base: format!("{}/api/actions", address.trim_end_matches('/')).into(),
            version,
            request_timeout: options.request_timeout,
            credentials: None,
        })
    }

    /// A client that authenticates RunnerService calls as the given runner.
    pub fn with_credentials(&self, uuid: &str, token: &str) -> Client {
        let mut token = HeaderValue::from_str(token).unwrap_or(HeaderValue::from_static(""));
        token.set_sensitive(true);
        Client {
            credentials: Some(Credentials {
                uuid: HeaderValue::from_str(uuid).unwrap_or(HeaderValue::from_static("")),
                token,
            }),
            ..self.clone()
        }
    }

    /// The instance address as given to [`Client::new`].
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `ping.v1.PingService/Ping`; needs no credentials.
    pub async fn ping(&self, data: &str) -> Result<proto::PingResponse, ClientError> {
        let req = proto::PingRequest { data: data.into() };
        Ok(self.call(Rpc::Ping, &req, None).await?.0)
    }

    /// Registers a new runner with a registration token carried in `req.token`.
    pub async fn register(
        &self,
        req: proto::RegisterRequest,
    ) -> Result<proto::RegisterResponse, ClientError> {
        Ok(self.call(Rpc::Register, &req, None).await?.0)
    }

    /// Declares version and labels; also returns the `X-Gitea-Actions-Capabilities` values.
    pub async fn declare(
        &self,
        req: proto::DeclareRequest,
    ) -> Result<(proto::DeclareResponse, Vec<String>), ClientError> {
        let (resp, headers) = self.call(Rpc::Declare, &req, None).await?;
        let caps = headers
            .get_all(CAPABILITIES_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Ok((resp, caps))
    }

    /// Polls for a task. `timeout` is the fetch deadline (sent as `Connect-Timeout-Ms`); running
    /// into it is "no task", so it returns an empty response carrying the request's version.
    pub async fn fetch_task(
        &self,
        req: proto::FetchTaskRequest,
        timeout: Duration,
    ) -> Result<proto::FetchTaskResponse, ClientError> {
        let version = req.tasks_version;
        match self.call(Rpc::FetchTask, &req, Some(timeout)).await {
            Ok((resp, _)) => Ok(resp),
            Err(e) if e.code == Code::DeadlineExceeded => Ok(proto::FetchTaskResponse {
                task: None,
                tasks_version: version,
            }),
            Err(e) => Err(e),
        }
    }

    /// Reports task state and outputs; the reply carries cancellation and acknowledged outputs.
    pub async fn update_task(
        &self,
        req: proto::UpdateTaskRequest,
    ) -> Result<proto::UpdateTaskResponse, ClientError> {
        Ok(self.call(Rpc::UpdateTask, &req, None).await?.0)
    }

    /// Appends log rows; the reply's `ack_index` is how many rows the server holds.
    pub async fn update_log(
        &self,
        req: proto::UpdateLogRequest,
    ) -> Result<proto::UpdateLogResponse, ClientError> {
        Ok(self.call(Rpc::UpdateLog, &req, None).await?.0)
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        rpc: Rpc,
        req: &Req,
        deadline: Option<Duration>,
    ) -> Result<(Resp, HeaderMap), ClientError> {
        let url = format!("{}{}", self.base, rpc.path());
        let timeout = deadline.unwrap_or(self.request_timeout);
        let mut builder = self
            .http
            .post(&url)
            .timeout(timeout)
            .header(CONTENT_TYPE, PROTO_CONTENT_TYPE)
            .header("connect-protocol-version", "1")
            .header("x-runner-version", self.version.clone());
        if let Some(deadline) = deadline {
            builder = builder.header("connect-timeout-ms", deadline.as_millis().to_string());
        }
        if rpc.authenticated() {
            if let Some(c) = &self.credentials {
                builder = builder
                    .header("x-runner-uuid", c.uuid.clone())
                    .header("x-runner-token", c.token.clone());
            }
        }
        tracing::trace!(rpc = ?rpc, "gitea call");
        let resp = builder
            .body(req.encode_to_vec())
            .send()
            .await
            .map_err(|e| transport_error(rpc, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| transport_error(rpc, e))?;
        let body = decompress(&headers, body).map_err(|e| {
            ClientError::new(
                Code::Internal,
                format!("{rpc:?}: undecodable gzip response: {e}"),
            )
        })?;
        if !status.is_success() {
            return Err(ClientError::from_response(status.as_u16(), &body));
        }
        let msg = Resp::decode(body).map_err(|e| ClientError {
            code: Code::Internal,
            message: format!("{rpc:?}: undecodable response: {e}"),
            http_status: Some(status.as_u16()),
        })?;
        Ok((msg, headers))
    }
}

fn decompress(headers: &HeaderMap, body: Bytes) -> std::io::Result<Bytes> {
    let gzip = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out)?;
    Ok(out.into())
}

fn transport_error(rpc: Rpc, e: reqwest::Error) -> ClientError {
    // reqwest's own message is terse; the cause chain says what actually went wrong.
    let mut message = format!("{rpc:?}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let code = if e.is_timeout() {
        Code::DeadlineExceeded
    } else {
        Code::Unavailable
    };
    ClientError {
        code,
        message,
        http_status: None,
    }
}

/// Connect error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    const ALL: [Code; 16] = [
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The Connect wire name (`unauthenticated`, `already_exists`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// Parses a Connect wire name.
    pub fn from_connect(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Parses a gRPC status name as Go prints it (`Unauthenticated`, `AlreadyExists`, …).
    pub fn from_grpc_name(name: &str) -> Option<Code> {
        let name = if name == "Cancelled" {
            "Canceled"
        } else {
            name
        };
        Code::ALL.into_iter().find(|c| format!("{c:?}") == name)
    }

    /// The HTTP status a Connect server uses for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }

    /// The code a Connect client infers from an HTTP status when the body is not Connect JSON.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed RPC: the Connect code, the server's message and the HTTP status if one arrived.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    pub code: Code,
    pub message: String,
    pub http_status: Option<u16>,
}

impl ClientError {
    pub fn new(code: Code, message: impl Into<String>) -> ClientError {
        ClientError {
            code,
            message: message.into(),
            http_status: None,
        }
    }

    /// Builds the error for a non-200 reply: Connect JSON if the body is that, else the status table.
    pub fn from_response(status: u16, body: &[u8]) -> ClientError {
        #[derive(serde::Deserialize)]
        struct ConnectError {
            code: Option<String>,
            message: Option<String>,
        }
        if let Ok(ConnectError { code, message }) = serde_json::from_slice::<ConnectError>(body) {
            if let Some(code) = code.as_deref().and_then(Code::from_connect) {
                return ClientError {
                    code,
                    message: message.unwrap_or_default(),
                    http_status: Some(status),
                };
            }
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            format!("HTTP {status}")
        } else {
            let short: String = text.chars().take(200).collect();
            format!("HTTP {status}: {short}")
        };
        ClientError {
            code: Code::from_http_status(status),
            message,
            http_status: Some(status),
        }
    }

    /// The code the server meant: old Gitea wraps gRPC statuses as `unknown` with the text
    /// `rpc error: code = <Name> desc = <text>`; this unwraps them.
    pub fn effective_code(&self) -> Code {
        if self.code == Code::Unknown {
            if let Some(rest) = self
                .message
                .find("rpc error: code = ")
                .map(|i| &self.message[i + "rpc error: code = ".len()..])
            {
                let name = rest.split_whitespace().next().unwrap_or("");
                if let Some(code) = Code::from_grpc_name(name) {
                    return code;
                }
            }
        }
        self.code
    }

    /// The server rejected the runner's identity (deleted or never registered).
    pub fn is_unauthenticated(&self) -> bool {
        self.code == Code::Unauthenticated
            || self.effective_code() == Code::Unauthenticated
            || self.message.contains("unregistered runner")
    }

    /// Worth retrying: the server could not be reached, timed out or failed internally.
    pub fn is_transient(&self) -> bool {
        if self.is_unauthenticated() || self.is_archived() {
            return false;
        }
        matches!(
            self.effective_code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
        )
    }

    /// UpdateLog after the log was archived (task ended, zombie-stopped, …): retrying cannot help.
    pub fn is_archived(&self) -> bool {
        self.code == Code::AlreadyExists
            || self.effective_code() == Code::AlreadyExists
            || self.message.contains("log file has been archived")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_json_errors_keep_code_and_message() {
        let e = ClientError::from_response(
            401,
            br#"{"code":"unauthenticated","message":"unregistered runner"}"#,
        );
        assert_eq!(e.code, Code::Unauthenticated);
        assert_eq!(e.message, "unregistered runner");
        assert_eq!(e.http_status, Some(401));
        assert!(e.is_unauthenticated());
        assert!(!e.is_transient());
    }

    #[test]
    fn legacy_grpc_text_errors_are_unwrapped() {
        let e = ClientError::from_response(
            500,
            br#"{"code":"unknown","message":"rpc error: code = AlreadyExists desc = log file has been archived"}"#,
        );
        assert_eq!(e.code, Code::Unknown);
        assert_eq!(e.effective_code(), Code::AlreadyExists);
        assert!(e.is_archived());
        assert!(!e.is_transient());

        let e = ClientError::new(
            Code::Unknown,
            "rpc error: code = Unauthenticated desc = unregistered runner",
        );
        assert!(e.is_unauthenticated());
    }

    #[test]
    fn non_connect_bodies_fall_back_to_status_table() {
        let table = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (418, Code::Unknown),
        ];
        for (status, code) in table {
            let e = ClientError::from_response(status, b"<html>proxy says no</html>");
            assert_eq!(e.code, code, "status {status}");
            assert!(e.message.contains("proxy says no"));
        }
        let e = ClientError::from_response(502, b"");
        assert!(e.is_transient());
        assert_eq!(e.message, "HTTP 502");
    }

    #[test]
    fn code_names_round_trip() {
        for c in Code::ALL {
            assert_eq!(Code::from_connect(c.as_str()), Some(c));
            assert_eq!(Code::from_grpc_name(&format!("{c:?}")), Some(c));
        }
        assert_eq!(Code::from_connect("bogus"), None);
    }

    #[test]
    fn addresses_must_be_http_urls() {
        assert!(Client::new("gitea.example.com", ClientOptions::default()).is_err());
        assert!(Client::new("ftp://gitea.example.com", ClientOptions::default()).is_err());
        let c = Client::new("https://h.example/gitea/", ClientOptions::default()).unwrap();
        assert_eq!(&*c.base, "https://h.example/gitea/api/actions");
        assert_eq!(c.address(), "https://h.example/gitea/");
    }

    #[test]
    fn gzip_bodies_are_inflated() {
        use std::io::Write;
        let msg = proto::PingResponse {
            data: "hello".repeat(300),
        };
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&msg.encode_to_vec()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let body = decompress(&headers, enc.finish().unwrap().into()).unwrap();
        assert_eq!(proto::PingResponse::decode(body).unwrap(), msg);
        // Without the header the body is taken as is.
        let plain = Bytes::from_static(b"abc");
        assert_eq!(decompress(&HeaderMap::new(), plain.clone()).unwrap(), plain);
    }

    #[test]
    fn extra_ca_must_contain_a_certificate() {
        let options = ClientOptions {
            extra_ca_pem: Some(b"not a certificate".to_vec()),
            ..ClientOptions::default()
        };
        let err = Client::new("https://h.example", options).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains("extra CA"), "{err}");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = Client::new("https://h.example", ClientOptions::default())
            .unwrap()
            .with_credentials("u-1", "secret-token-value");
        let s = format!("{c:?}");
        assert!(s.contains("u-1"));
        assert!(!s.contains("secret-token-value"));
    }
}
