//! The runner under load: ten concurrent jobs on one `kiln daemon` (one engine), each building
//! an image through its `BUILDKIT_HOST` (the real `buildctl`) and another through its
//! `DOCKER_HOST` (the real docker CLI: `docker build`, `docker push`). The peer, in the same
//! run: the same ten scripts run directly against a real `buildkitd` and a real `dockerd` (no
//! runner in between, so kiln also pays for its runner here).
//!
//! `cargo bench -p kiln --bench jobs_load` as root. Needs runc, docker-registry, busybox-static,
//! the docker CLI and buildctl (`/opt/buildkit-current/bin`, see benches/README.md); the peer
//! also needs `buildkitd` there and `dockerd`. Missing pieces print SKIP lines.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_gitea::fake::{FakeGitea, QueuedRun};
use kiln_gitea::proto;

const JOBS: usize = 10;
const BUILDKIT: &str = "/opt/buildkit-current/bin";

/// The script of job `i`: one build through BUILDKIT_HOST and one through DOCKER_HOST, each
/// with a RUN no other build shares, a 200 KB context file and a push.
fn script(base: &str, registry: &str, name: &str) -> String {
    let token = format!("{name}-{}", std::process::id());
    format!(
        r#"set -e
mkdir -p a b
head -c 200000 /dev/urandom > a/blob
cp a/blob b/blob
printf 'FROM {base}\nRUN sleep 1 && echo {token}-a > /token\nCOPY blob /blob\n' > a/Dockerfile
printf 'FROM {base}\nRUN sleep 1 && echo {token}-b > /token\nCOPY blob /blob\n' > b/Dockerfile
buildctl --addr "$BUILDKIT_HOST" build --progress plain --frontend dockerfile.v0 --local context=a --local dockerfile=a --output type=image,name={registry}/jobs/{name}-a:latest,push=true,registry.insecure=true
docker build --network host -q -t {registry}/jobs/{name}-b:latest b
docker push -q {registry}/jobs/{name}-b:latest
"#
    )
}

fn status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// `pid` and its descendants whose command is `comm` (the runner and its engine, not the jobs'
/// processes).
fn tree(pid: u32, comm: &str) -> Vec<u32> {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head
            .split_once('(')
            .map(|x| x.1)
            .unwrap_or_default()
            .to_string();
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        parent.insert(p, (ppid, name));
    }
    let in_tree = |mut p: u32| loop {
        if p == pid {
            return true;
        }
        match parent.get(&p) {
            Some((pp, _)) if *pp != 0 => p = *pp,
            _ => return false,
        }
    };
    parent
        .iter()
        .filter(|(p, (_, name))| name == comm && in_tree(**p))
        .map(|(p, _)| *p)
        .collect()
}

/// Peak RSS and open fds of a process tree (summed over `tree`), sampled every 50 ms until
/// `peaks` is called.
struct Sampler {
    stop: Arc<AtomicBool>,
    rss: Arc<AtomicU64>,
    fds: Arc<AtomicU64>,
}

impl Sampler {
    fn start(pid: u32, comm: &'static str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (rss, fd) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, r, f) = (stop.clone(), rss.clone(), fd.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let pids = tree(pid, comm);
                r.fetch_max(
                    pids.iter().map(|p| status(*p, "VmRSS")).sum(),
                    Ordering::Relaxed,
                );
                f.fetch_max(pids.iter().map(|p| fds(*p)).sum(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler { stop, rss, fds: fd }
    }

    /// (peak RSS KiB, peak open fds)
    fn peaks(&self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.rss.load(Ordering::Relaxed),
            self.fds.load(Ordering::Relaxed),
        )
    }
}

struct Row {
    who: &'static str,
    wall: f64,
    latencies: Vec<f64>,
    failures: usize,
    peak_rss_kib: u64,
    peak_fds: u64,
}

fn percentile(xs: &[f64], q: f64) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let k = ((q / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[k]
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn path_with_buildctl() -> String {
    format!(
        "{BUILDKIT}:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    )
}

fn kiln_jobs(rt: &tokio::runtime::Runtime, base: &str, registry: &str, dir: &Path) -> Row {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let gitea = rt.block_on(FakeGitea::start());
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "log:\n  level: warn\nrunner:\n  file: {d}/.runner\n  capacity: {JOBS}\n  fetch_interval: 100ms\nhost:\n  workdir_parent: {d}/host\ncache:\n  enabled: false\nkiln:\n  metrics_addr: \"\"\n  state_dir: {d}/state\n",
            d = dir.display()
        ),
    )
    .unwrap();
    common::register(kiln, &gitea, &config);
    let log = dir.join("daemon.log");
    let mut daemon = Command::new(kiln)
        .args(["daemon", "-c"])
        .arg(&config)
        .env("PATH", path_with_buildctl())
        .env("DOCKER_CONFIG", dir.join("runner-docker-config"))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let mut workflow = String::from("on: push\njobs:\n");
    for i in 0..JOBS {
        let body = script(base, registry, &format!("kiln-{i}"));
        workflow.push_str(&format!(
            "  j{i}:\n    runs-on: linux\n    steps:\n      - run: |\n"
        ));
        for line in body.lines() {
            workflow.push_str(&format!("          {line}\n"));
        }
    }
    let sampler = Sampler::start(daemon.id(), "kiln");
    let t0 = Instant::now();
    let run = gitea.queue_run(QueuedRun::new(workflow.as_str()));
    let ids: Vec<i64> = gitea.run_jobs(run).iter().map(|j| j.id).collect();
    let results: Vec<(f64, bool)> = rt.block_on(async {
        let waits = ids.iter().map(|id| {
            let gitea = &gitea;
            async move {
                let task = gitea.wait_final(*id, Duration::from_secs(600)).await;
                let ok = task.is_some_and(|t| t.result == proto::Result::Success);
                (t0.elapsed().as_secs_f64(), ok)
            }
        });
        futures::future::join_all(waits).await
    });
    let wall = t0.elapsed().as_secs_f64();
    let (peak_rss_kib, peak_fds) = sampler.peaks();
    let row = Row {
        who: "kiln daemon + its engine (jobs' BUILDKIT_HOST + DOCKER_HOST)",
        wall,
        latencies: results.iter().map(|r| r.0).collect(),
        failures: results.iter().filter(|r| !r.1).count(),
        peak_rss_kib,
        peak_fds,
    };
    if row.failures > 0 {
        eprintln!(
            "kiln: {} jobs failed; daemon log:\n{}",
            row.failures,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    row
}

/// The same scripts against a real buildkitd and dockerd, or `None` after a SKIP line.
fn peer_jobs(base: &str, registry: &str, dir: &Path) -> Option<Row> {
    let buildkitd = Path::new(BUILDKIT).join("buildkitd");
    if !buildkitd.is_file() {
        println!("SKIP peer: {} not found", buildkitd.display());
        return None;
    }
    let dockerd = kiln_oci::testing::TestDockerd::start("jobs_load peer")?;
    let sock = dir.join("bk.sock");
    let bkconf = dir.join("buildkitd.toml");
    std::fs::write(
        &bkconf,
        format!("[registry.\"{registry}\"]\n  http = true\n"),
    )
    .unwrap();
    let mut bk = Command::new(&buildkitd)
        .arg("--root")
        .arg(dir.join("bk-root"))
        .arg("--addr")
        .arg(format!("unix://{}", sock.display()))
        .args(["--oci-worker=true", "--containerd-worker=false", "--config"])
        .arg(&bkconf)
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("buildkitd.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let bk_sampler = Sampler::start(bk.id(), "buildkitd");
    let dockerd_pid = dockerd.pid();
    let dockerd_sampler = Sampler::start(dockerd_pid, "dockerd");
    let t0 = Instant::now();
    let children: Vec<(Child, PathBuf)> = (0..JOBS)
        .map(|i| {
            let work = dir.join(format!("peer-{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let out = work.join("out.log");
            let child = Command::new("bash")
                .args(["-c", &script(base, registry, &format!("peer-{i}"))])
                .current_dir(&work)
                .env("PATH", path_with_buildctl())
                .env("BUILDKIT_HOST", format!("unix://{}", sock.display()))
                .env("DOCKER_HOST", dockerd.host())
                .env("DOCKER_CONFIG", work.join(".docker"))
                .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
                .stderr(Stdio::from(
                    std::fs::File::create(work.join("err.log")).unwrap(),
                ))
                .spawn()
                .unwrap();
            (child, work)
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for (mut child, work) in children {
        let ok = child.wait().unwrap().success();
        latencies.push(t0.elapsed().as_secs_f64());
        if !ok {
            failures += 1;
            eprintln!(
                "peer job failed: {}",
                std::fs::read_to_string(work.join("err.log")).unwrap_or_default()
            );
        }
    }
    let ((bk_rss, bk_fds), (d_rss, d_fds)) = (bk_sampler.peaks(), dockerd_sampler.peaks());
    let row = Row {
        who: "buildkitd + dockerd (the scripts run directly)",
        wall: t0.elapsed().as_secs_f64(),
        latencies,
        failures,
        peak_rss_kib: bk_rss + d_rss,
        peak_fds: bk_fds + d_fds,
    };
    let _ = bk.kill();
    let _ = bk.wait();
    Some(row)
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP jobs_load: needs root (runc, overlayfs, dockerd)");
        return;
    }
    if !Path::new(BUILDKIT).join("buildctl").is_file() || which("docker").is_none() {
        println!("SKIP jobs_load: needs {BUILDKIT}/buildctl and the docker CLI");
        return;
    }
    let Some(registry) = kiln_oci::testing::TestRegistry::start() else {
        println!("SKIP jobs_load: no docker-registry");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = format!("{}/busybox:latest", registry.host());
    rt.block_on(kiln_oci::testing::push_busybox(&base, None));
    let dir = tempfile::tempdir().unwrap();
    let kiln_dir = dir.path().join("kiln");
    let peer_dir = dir.path().join("peer");
    std::fs::create_dir_all(&kiln_dir).unwrap();
    std::fs::create_dir_all(&peer_dir).unwrap();

    let mut rows = vec![kiln_jobs(&rt, &base, &registry.host(), &kiln_dir)];
    rows.extend(peer_jobs(&base, &registry.host(), &peer_dir));

    println!("\n{JOBS} concurrent jobs, each: buildctl build + docker build + docker push");
    println!("| builder | wall s | p50 s | p95 s | failures | peak RSS MiB | peak fds |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {} |",
            r.who,
            r.wall,
            percentile(&r.latencies, 50.0),
            percentile(&r.latencies, 95.0),
            r.failures,
            r.peak_rss_kib as f64 / 1024.0,
            r.peak_fds
        );
    }
    if let [k, p] = &rows[..] {
        println!(
            "kiln/peer: wall {:.2}, p95 {:.2}",
            k.wall / p.wall,
            percentile(&k.latencies, 95.0) / percentile(&p.latencies, 95.0)
        );
    }
}
