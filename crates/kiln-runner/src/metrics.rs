//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiln_actions::exec::Outcome;

use crate::reporter::Reporter;

/// Reads (entries, bytes) of the actions cache.
pub type CacheStatsFn = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Counters of the daemon.
#[derive(Default)]
pub struct Metrics {
    pub ready: AtomicBool,
    pub tasks_fetched: AtomicU64,
    pub fetch_errors: AtomicU64,
    finished: Mutex<BTreeMap<&'static str, u64>>,
    /// Task received → first step started: count, sum and max in seconds.
    job_start: Mutex<(u64, f64, f64)>,
    active: Mutex<Vec<Reporter>>,
    /// Entries and bytes of the actions cache, filled by whoever runs it.
    pub cache_stats: Mutex<Option<CacheStatsFn>>,
}

impl Metrics {
    pub fn started(&self, reporter: &Reporter) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reporter.clone());
    }

    pub fn finished(&self, reporter: &Reporter, result: Outcome) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = active.iter().position(|r| r.same(reporter)) {
            active.swap_remove(i);
        }
        *self
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(result.as_str())
            .or_default() += 1;
    }

    pub fn job_started(&self, latency: std::time::Duration) {
        let mut s = self.job_start.lock().unwrap_or_else(|e| e.into_inner());
        let secs = latency.as_secs_f64();
        s.0 += 1;
        s.1 += secs;
        s.2 = s.2.max(secs);
    }

    pub fn running(&self) -> usize {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let active = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let pending: usize = active.iter().map(Reporter::pending_rows).sum();
        let _ = writeln!(
            out,
            "# HELP kiln_jobs_running Jobs running now.\n# TYPE kiln_jobs_running gauge"
        );
        let _ = writeln!(out, "kiln_jobs_running {}", active.len());
        let _ = writeln!(out, "# HELP kiln_jobs_finished_total Jobs finished, by result.\n# TYPE kiln_jobs_finished_total counter");
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for result in ["success", "failure", "cancelled", "skipped"] {
            let _ = writeln!(
                out,
                "kiln_jobs_finished_total{{result=\"{result}\"}} {}",
                finished.get(result).unwrap_or(&0)
            );
        }
        let (count, sum, max) = *self.job_start.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP kiln_job_start_seconds Time from receiving a task to its first step running.\n# TYPE kiln_job_start_seconds summary");
        let _ = writeln!(
            out,
            "kiln_job_start_seconds_sum {sum}\nkiln_job_start_seconds_count {count}"
        );
        let _ = writeln!(out, "# HELP kiln_job_start_seconds_max Longest time from receiving a task to its first step.\n# TYPE kiln_job_start_seconds_max gauge");
        let _ = writeln!(out, "kiln_job_start_seconds_max {max}");
        let _ = writeln!(out, "# HELP kiln_tasks_fetched_total Tasks received from Gitea.\n# TYPE kiln_tasks_fetched_total counter");
        let _ = writeln!(
            out,
            "kiln_tasks_fetched_total {}",
            self.tasks_fetched.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP kiln_fetch_errors_total Failed FetchTask calls.\n# TYPE kiln_fetch_errors_total counter");
        let _ = writeln!(
            out,
            "kiln_fetch_errors_total {}",
            self.fetch_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP kiln_log_rows_pending Log rows not yet acknowledged by Gitea.\n# TYPE kiln_log_rows_pending gauge");
        let _ = writeln!(out, "kiln_log_rows_pending {pending}");
        if let Some(stats) = self
            .cache_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let (entries, bytes) = stats();
            let _ = writeln!(out, "# HELP kiln_actions_cache_entries Entries in the actions cache.\n# TYPE kiln_actions_cache_entries gauge");
            let _ = writeln!(out, "kiln_actions_cache_entries {entries}");
            let _ = writeln!(out, "# HELP kiln_actions_cache_bytes Bytes in the actions cache.\n# TYPE kiln_actions_cache_bytes gauge");
            let _ = writeln!(out, "kiln_actions_cache_bytes {bytes}");
        }
        out
    }
}

/// Serve the endpoints on `addr` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let m1 = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let m = metrics.clone();
                async move {
                    if m.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not declared to Gitea yet\n",
                        )
                    }
                }
            }),
        );
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok((local, handle))
}
