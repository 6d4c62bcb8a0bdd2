//! A client for the OCI distribution API (Docker Registry v2): resolve and pull images, push
//! blobs and manifests, mount blobs across repositories, with token and basic auth, plain-HTTP
//! and insecure registries, and retries on transient failures.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::CredentialSource;
use crate::digest::Digest;
use crate::reference::{is_loopback_host, Reference};
use crate::store::StoreError;

mod auth;
mod pull;
mod push;

pub use pull::ResolvedImage;

/// Blobs larger than this are pushed in chunks (PATCH) rather than in one PUT.
pub const MONOLITHIC_PUSH_LIMIT: u64 = 32 * 1024 * 1024;
/// Size of each PATCH chunk of a chunked upload.
pub const PUSH_CHUNK_SIZE: u64 = 64 * 1024 * 1024;
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// How to reach one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    /// Use plain HTTP. Loopback hosts use HTTP even without this, like dockerd.
    pub http: bool,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Extra PEM CA certificates to trust for this host.
    pub ca_certs: Vec<PathBuf>,
}

/// Per-host settings, keyed by registry host as written in references (`myreg:5000`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Host settings.
    pub hosts: BTreeMap<String, HostConfig>,
}

/// Errors of registry operations. Each names the image, host or URL concerned and never
/// includes credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused access (401/403, or the token server refused the credentials).
    #[error("{action} access denied for {reference}: {reason}")]
    Unauthorized {
        /// The image or repository.
        reference: String,
        /// `pull` or `push`.
        action: &'static str,
        /// Why, e.g. `authorization failed`.
        reason: String,
    },
    /// The tag, manifest, blob or repository does not exist.
    #[error("{reference}: not found")]
    NotFound {
        /// What was asked for.
        reference: String,
    },
    /// The registry answered with an unexpected status (after retries for 5xx/429).
    #[error("registry error: {status} from {url}: {body}")]
    Server {
        /// HTTP status code.
        status: u16,
        /// The request URL.
        url: String,
        /// Start of the response body.
        body: String,
    },
    /// The registry could not be reached (after retries).
    #[error("cannot reach registry {host}: {source}")]
    Connect {
        /// The registry host.
        host: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// Downloaded content did not match its digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest that was asked for.
        expected: Digest,
        /// What the content hashed to.
        actual: Digest,
    },
    /// No manifest in the index fits the wanted platform.
    #[error("no matching manifest for {wanted} in {reference}; available platforms: {}", available.join(", "))]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// Platforms the index offers.
        available: Vec<String>,
    },
    /// The manifest, index or config is malformed or of an unsupported type.
    #[error("{reference}: invalid manifest: {reason}")]
    InvalidManifest {
        /// The image.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry broke the protocol (missing Location header, bad token response, …).
    #[error("registry protocol error from {url}: {reason}")]
    Protocol {
        /// The request URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Host configuration is unusable (unreadable CA file, …).
    #[error("registry host {host}: {reason}")]
    Config {
        /// The host.
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// The local content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a request needs access to, for token scopes and error messages.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// Token scopes, e.g. `repository:team/app:pull,push`.
    pub scopes: Vec<String>,
    /// `pull` or `push`.
    pub action: &'static str,
    /// Named in errors.
    pub reference: String,
}

impl Access {
    pub(crate) fn pull(r: &Reference) -> Access {
        Access {
            scopes: vec![format!("repository:{}:pull", r.repository)],
            action: "pull",
            reference: r.repository_ref(),
        }
    }

    pub(crate) fn push(r: &Reference) -> Access {
        Access {
            scopes: vec![format!("repository:{}:pull,push", r.repository)],
            action: "push",
            reference: r.repository_ref(),
        }
    }
}

/// A registry client. Cloning is cheap and clones share connections and cached tokens.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    creds: Arc<dyn CredentialSource>,
    /// One HTTP client per host (TLS settings differ per host).
    clients: Mutex<HashMap<String, reqwest::Client>>,
    auth: auth::AuthCache,
}

impl RegistryClient {
    /// A client with per-host `config`, asking `creds` when a registry wants authentication.
    pub fn new(config: RegistryConfig, creds: Arc<dyn CredentialSource>) -> Self {
        RegistryClient {
            inner: Arc::new(Inner {
                config,
                creds,
                clients: Mutex::new(HashMap::new()),
                auth: auth::AuthCache::default(),
            }),
        }
    }

    fn host_config(&self, host: &str) -> HostConfig {
        self.inner
            .config
            .hosts
            .get(host)
            .cloned()
            .unwrap_or_default()
    }

    /// `http://127.0.0.1:5000`, `https://registry-1.docker.io`, …
    pub fn base_url(&self, registry: &str) -> String {
        let api_host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let cfg = self.host_config(registry);
        let scheme = if cfg.http || is_loopback_host(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{api_host}")
    }

    pub(crate) fn url(&self, r: &Reference, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base_url(&r.registry), r.repository)
    }

    fn http(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        let mut clients = self.inner.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let cfg = self.host_config(host);
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(cfg.insecure);
        for path in &cfg.ca_certs {
            let pem = std::fs::read(path).map_err(|e| RegistryError::Config {
                host: host.to_string(),
                reason: format!("reading CA certificate {}: {e}", path.display()),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::Config {
                    host: host.to_string(),
                    reason: format!("parsing CA certificate {}: {e}", path.display()),
                })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| RegistryError::Config {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
        clients.insert(host.to_string(), client.clone());
        Ok(client)
    }

    /// Sends a request built by `build`, authenticating on demand (one 401 round trip per
    /// challenge) and retrying connection errors, 5xx and 429 with backoff.
    pub(crate) async fn send<F>(
        &self,
        registry: &str,
        access: &Access,
        build: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
    {
        let client = self.http(registry)?;
        let mut challenged = false;
        loop {
            let header = self.inner.auth.header(registry, &access.scopes);
            let resp = self
                .send_retrying(registry, || {
                    let rb = build(&client)?;
                    Ok(match &header {
                        Some(h) => rb.header(reqwest::header::AUTHORIZATION, h.as_str()),
                        None => rb,
                    })
                })
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(resp);
            }
            challenged = true;
            let Some(challenge) = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(auth::Challenge::parse)
            else {
                return Ok(resp);
            };
            self.authenticate(registry, access, &client, challenge)
                .await?;
        }
    }

    async fn send_retrying<F>(&self, registry: &str, build: F) -> Result<Response, RegistryError>
    where
        F: Fn() -> Result<RequestBuilder, RegistryError>,
    {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = build()?.send().await;
            let retry = match &result {
                Ok(r) => {
                    r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            };
            if !retry || attempt >= ATTEMPTS {
                return result.map_err(|source| RegistryError::Connect {
                    host: registry.to_string(),
                    source,
                });
            }
            match &result {
                Ok(r) => {
                    tracing::debug!(status = %r.status(), url = %r.url(), attempt, "retrying registry request")
                }
                Err(e) => tracing::debug!(error = %e, attempt, "retrying registry request"),
            }
            tokio::time::sleep(delay).await;
            delay *= 4;
            attempt += 1;
        }
    }
}

/// Reads the start of an error body for a message (bounded; bodies are untrusted).
pub(crate) async fn error_body(resp: Response) -> String {
    const LIMIT: usize = 1024;
    let mut out = Vec::new();
    let mut resp = resp;
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= LIMIT {
            out.truncate(LIMIT);
            break;
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Maps a failed response to an error naming `what` (the reference or blob asked for).
pub(crate) async fn status_error(resp: Response, access: &Access, what: &str) -> RegistryError {
    let status = resp.status();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
            reference: access.reference.clone(),
            action: access.action,
            reason: "authorization failed".to_string(),
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            reference: what.to_string(),
        },
        _ => {
            let url = resp.url().to_string();
            RegistryError::Server {
                status: status.as_u16(),
                url,
                body: error_body(resp).await,
            }
        }
    }
}
