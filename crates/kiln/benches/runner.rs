//! Runner benchmark: job start latency (task received → first step running) and idle RSS of
//! `kiln daemon`, against the fake Gitea. Targets: ≤ 200 ms and ≤ 30 MiB.
//!
//! `cargo bench -p kiln --bench runner` (prints a table; no assertions).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_gitea::fake::{FakeGitea, QueuedJob};

const JOBS: usize = 20;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn get(url: &str) -> String {
    // A minimal HTTP/1.0 GET, to keep the bench free of client dependencies.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = tokio::net::TcpStream::connect(host).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[tokio::main]
async fn main() {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "log:\n  level: warn\nrunner:\n  file: {d}/.runner\n  fetch_interval: 50ms\nhost:\n  workdir_parent: {d}/host\ncache:\n  dir: {d}/cache\nkiln:\n  metrics_addr: \"127.0.0.1:{port}\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    common::register(kiln, &gitea, &config);
    let mut daemon = Command::new(kiln)
        .args(["daemon", "-c"])
        .arg(&config)
        .spawn()
        .unwrap();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let t0 = Instant::now();
    while !get(&format!("http://127.0.0.1:{port}/readyz"))
        .await
        .contains("ready")
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "daemon not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = rss_kib(daemon.id());

    let mut wall = Vec::new();
    for _ in 0..JOBS {
        let start = Instant::now();
        let id = gitea.queue_job(QueuedJob {
            workflow_yaml:
                "on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: 'true'\n"
                    .into(),
            job_id: "j".into(),
            context: serde_json::json!({}),
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
        });
        gitea
            .wait_final(id, Duration::from_secs(60))
            .await
            .expect("job finished");
        wall.push(start.elapsed());
    }
    let busy_rss = rss_kib(daemon.id());
    let m = get(&metrics_url).await;
    let count = metric(&m, "kiln_job_start_seconds_count");
    let sum = metric(&m, "kiln_job_start_seconds_sum");
    let max = metric(&m, "kiln_job_start_seconds_max");
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    wall.sort();
    let ms = |d: f64| d * 1000.0;
    println!("kiln runner benchmark ({JOBS} one-step jobs against the fake Gitea)");
    println!("{:<44} {:>10} {:>10}", "measure", "value", "target");
    println!(
        "{:<44} {:>8.1}ms {:>8}ms",
        "job start latency, mean (task → first step)",
        ms(sum / count),
        200
    );
    println!(
        "{:<44} {:>8.1}ms {:>8}ms",
        "job start latency, max",
        ms(max),
        200
    );
    println!(
        "{:<44} {:>8.1}ms {:>10}",
        "queue → final result, median (incl. polling)",
        wall[wall.len() / 2].as_secs_f64() * 1000.0,
        "-"
    );
    println!(
        "{:<44} {:>7.1}MiB {:>7}MiB",
        "idle RSS of kiln daemon",
        idle_rss as f64 / 1024.0,
        30
    );
    println!(
        "{:<44} {:>7.1}MiB {:>10}",
        "RSS after the jobs",
        busy_rss as f64 / 1024.0,
        "-"
    );
}
