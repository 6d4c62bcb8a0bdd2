//! The Gitea runner daemon: act_runner-compatible config and registration, polling with capacity,
//! task lifecycle, reporting with ack-based retry, cancellation, drain, metrics and the actions cache.

pub mod buildkit;
pub mod cache;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod doors;
pub mod labels;
pub mod metrics;
pub mod native;
pub mod register;
pub mod reporter;
pub mod task;

use std::path::Path;
use std::sync::Arc;

/// Start the built-in actions cache unless it is disabled or an external server is configured.
/// With no `cache.host` it listens on 127.0.0.1 only (host-mode jobs run on this machine), unless
/// the runner has `docker://` labels: then on every interface, advertising the host's address.
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
    let (bind_ip, advertise) = if !config.cache.host.is_empty() {
        ("0.0.0.0".to_string(), Some(config.cache.host.clone()))
    } else if runs_containers(config) {
        // Job containers cannot reach the host's loopback: as act_runner does, listen on every
        // interface and advertise the address of the host's default route.
        match outbound_ip() {
            Some(ip) => ("0.0.0.0".to_string(), Some(ip)),
            None => {
                tracing::warn!("cannot tell this host's address: job containers cannot reach the actions cache; set cache.host");
                ("127.0.0.1".to_string(), None)
            }
        }
    } else {
        ("127.0.0.1".to_string(), None)
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

/// Whether this runner's labels (from the config, else its `.runner` file) run jobs in containers.
fn runs_containers(config: &config::Config) -> bool {
    let labels = if config.runner.labels.is_empty() {
        kiln_gitea::Registration::load(&config.runner.file)
            .map(|r| r.labels)
            .unwrap_or_default()
    } else {
        config.runner.labels.clone()
    };
    labels.iter().any(|l| {
        matches!(
            labels::Label::parse(l).map(|l| l.schema),
            Ok(labels::Schema::Docker(_))
        )
    })
}

/// The local address of the default route, found without sending anything (a UDP `connect`
/// only selects the route).
fn outbound_ip() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then(|| ip.to_string())
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
