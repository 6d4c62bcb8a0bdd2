//! The Gitea runner daemon: act_runner-compatible config and registration, polling with capacity,
//! task lifecycle, reporting with ack-based retry, cancellation, drain, metrics and the actions cache.

pub mod buildkit;
pub mod cache;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod labels;
pub mod metrics;
pub mod native;
pub mod register;
pub mod reporter;
pub mod task;

use std::path::Path;
use std::sync::Arc;

/// Start the built-in actions cache unless it is disabled or an external server is configured.
/// With no `cache.host` it listens on 127.0.0.1 only (host-mode jobs run on this machine).
pub async fn start_cache(
    config: &config::Config,
    state_dir: &Path,
    metrics: &Arc<metrics::Metrics>,
) -> Result<Option<Arc<dyn task::JobCache>>, String> {
    if !config.cache.enabled || !config.cache.external_server.is_empty() {
        return Ok(None);
    }
    let dir = config
        .cache
        .dir
        .clone()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| state_dir.join("actcache"));
    let (bind_ip, advertise) = if config.cache.host.is_empty() {
        ("127.0.0.1".to_string(), None)
    } else {
        ("0.0.0.0".to_string(), Some(config.cache.host.clone()))
    };
    let bind = format!("{bind_ip}:{}", config.cache.port)
        .parse()
        .map_err(|e| format!("cache.port: {e}"))?;
    let max_size = match &config.cache.max_size {
        Some(s) => parse_size(s).map_err(|e| format!("cache.max_size: {e}"))?,
        None => 10 << 30,
    };
    let server = cache::CacheServer::start(cache::CacheConfig {
        dir: dir.clone(),
        bind,
        advertise_host: advertise,
        max_size,
    })
    .await
    .map_err(|e| format!("actions cache in {}: {e}", dir.display()))?;
    let server = Arc::new(server);
    tracing::info!(url = %server.url(), dir = %dir.display(), "actions cache listening");
    {
        let s = server.clone();
        *metrics
            .cache_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(move || {
            let stats = s.stats();
            (stats.entries as u64, stats.bytes)
        }));
    }
    Ok(Some(server))
}

impl task::JobCache for cache::CacheServer {
    fn url(&self) -> String {
        cache::CacheServer::url(self)
    }
    fn register_job(&self, token: &str, repository: &str) {
        cache::CacheServer::register_job(self, token, repository)
    }
    fn revoke_job(&self, token: &str) {
        cache::CacheServer::revoke_job(self, token)
    }
}

/// `10GB`, `512MiB`, `1Gi`, `1024` (bytes): decimal and binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        u => return Err(format!("invalid size unit {u:?} in {s:?}")),
    };
    Ok((n * mult) as u64)
}
