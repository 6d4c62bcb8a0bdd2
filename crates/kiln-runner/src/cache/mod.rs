//! The actions cache server: the v1 `_apis/artifactcache` API that `actions/cache` (≤ v3, toolkit
//! cache protocol v1) talks to through `ACTIONS_CACHE_URL`, as act_runner embeds it, plus what
//! act leaves out: every API call needs a running job's bearer token, and entries are scoped to
//! the job's repository.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_runner::cache::CacheError> {
//! use kiln_runner::cache::{CacheConfig, CacheServer};
//! let server = CacheServer::start(CacheConfig {
//!     dir: "/var/lib/kiln/cache".into(),
//!     bind: "0.0.0.0:0".parse().unwrap(),
//!     advertise_host: Some("172.17.0.1".into()),
//!     max_size: 10 << 30,
//! })
//! .await?;
//! server.register_job("task-token", "owner/repo");
//! // Job env: ACTIONS_CACHE_URL=server.url(), ACTIONS_RUNTIME_TOKEN=task-token
//! server.revoke_job("task-token");
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod http;
mod index;
mod range;
mod shared;
mod store;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use shared::Shared;

/// How often garbage collection runs besides after each commit.
const GC_INTERVAL: Duration = Duration::from_secs(60);
/// How long `shutdown` waits for requests in flight before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where and how the cache server runs; built once by the runner's config.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// State: the index and the blobs. Created if missing.
    pub dir: PathBuf,
    /// Address to listen on, e.g. `0.0.0.0:0` for any port on every interface.
    pub bind: SocketAddr,
    /// Host that jobs use in `ACTIONS_CACHE_URL`. Default: the bound IP, or `127.0.0.1` when
    /// bound to an unspecified address (`0.0.0.0`, `::`).
    pub advertise_host: Option<String>,
    /// Total bytes of complete entries; above it the least recently used are evicted.
    pub max_size: u64,
}

/// Size of the cache, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: u64,
}

/// Why the cache server could not start or keep its state.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache: {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cache: listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cache index {path}: {source}")]
    Index {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cache index {path}: format {found} is not one this version reads")]
    IndexFormat { path: PathBuf, found: u32 },
}

/// A running cache server. Stops when dropped (without waiting) or by [`CacheServer::shutdown`].
pub struct CacheServer {
    shared: Arc<Shared>,
    url: String,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl CacheServer {
    pub async fn start(config: CacheConfig) -> Result<CacheServer, CacheError> {
        let (store, index) = store::Store::open(&config.dir).await?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| CacheError::Bind {
                addr: config.bind,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| CacheError::Bind {
            addr: config.bind,
            source,
        })?;
        let url = base_url(config.advertise_host.as_deref(), local);
        let shared = Arc::new(Shared::new(store, index, url.clone(), config.max_size));
        shared.collect_garbage().await;

        let cancel = CancellationToken::new();
        let app = http::router(shared.clone());
        let serve =
            axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
        let server = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "cache server stopped");
            }
        });
        let gc = tokio::spawn(collect_garbage_periodically(shared.clone(), cancel.clone()));
        tracing::info!(%local, url, dir = %config.dir.display(), "cache server listening");
        Ok(CacheServer {
            shared,
            url,
            cancel,
            tasks: vec![server, gc],
        })
    }

    /// The value for `ACTIONS_CACHE_URL`: `http://host:port/`, with the trailing slash the
    /// toolkit needs (it appends `_apis/...` directly).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Allows a running job: its bearer token (`ACTIONS_RUNTIME_TOKEN`) and the repository it
    /// belongs to. Entries are scoped per repository: a job never sees another repository's.
    pub fn register_job(&self, token: &str, repository: &str) {
        self.shared.register_job(token, repository);
    }

    pub fn revoke_job(&self, token: &str) {
        self.shared.revoke_job(token);
    }

    pub fn stats(&self) -> CacheStats {
        self.shared.stats()
    }

    /// Stops accepting requests, waits a little for those in flight, and saves the index.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        self.shared.save_if_dirty().await;
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn collect_garbage_periodically(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(GC_INTERVAL);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => shared.collect_garbage().await,
        }
    }
}

fn base_url(advertise_host: Option<&str>, local: SocketAddr) -> String {
    let host = match advertise_host {
        Some(host) if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
        Some(host) => host.to_owned(),
        None => match local.ip() {
            ip if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        },
    };
    format!("http://{host}:{}/", local.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_cases() {
        let cases: &[(Option<&str>, &str, &str)] = &[
            (None, "0.0.0.0:8088", "http://127.0.0.1:8088/"),
            (None, "[::]:8088", "http://127.0.0.1:8088/"),
            (None, "10.1.2.3:80", "http://10.1.2.3:80/"),
            (None, "[fd00::1]:80", "http://[fd00::1]:80/"),
            (Some("cache.lan"), "0.0.0.0:9", "http://cache.lan:9/"),
            (Some("fd00::2"), "0.0.0.0:9", "http://[fd00::2]:9/"),
        ];
        for (host, addr, want) in cases {
            assert_eq!(base_url(*host, addr.parse().unwrap()), *want);
        }
    }
}
