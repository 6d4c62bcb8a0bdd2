//! `kiln buildkitd` as a child process and the real `buildctl` driving it, for the interop and
//! load tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `kiln buildkitd` on a unix socket, killed on drop.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    /// `tcp://127.0.0.1:PORT` and the certificate directory when serving mutual TLS.
    pub tls: Option<(String, PathBuf)>,
}

impl Daemon {
    pub fn start(root: &Path, dir: &Path) -> Daemon {
        Self::start_with(root, dir, false)
    }

    /// With `tls`, also listen on a loopback TCP port with mutual TLS (certs from `kiln certs`).
    pub fn start_with(root: &Path, dir: &Path, tls: bool) -> Daemon {
        Self::start_configured(root, dir, tls, None)
    }

    /// As [`Daemon::start_with`], reading kiln.toml from `config` when given.
    pub fn start_configured(root: &Path, dir: &Path, tls: bool, config: Option<&Path>) -> Daemon {
        let socket = dir.join("buildkit.sock");
        let log = std::fs::File::create(dir.join("buildkitd.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args([
            "--root",
            root.to_str().unwrap(),
            "--log",
            "kiln_buildkit=debug,kiln_engine=debug,info",
        ]);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(["buildkitd", "--addr"])
            .arg(format!("unix://{}", socket.display()));
        let mut tls_addr = None;
        if tls {
            let certs = dir.join("certs");
            let made = Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["certs", "--dir", certs.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("tcp://127.0.0.1:{port}");
            cmd.args(["--addr", &addr])
                .arg("--tlscacert")
                .arg(certs.join("ca.pem"))
                .arg("--tlscert")
                .arg(certs.join("cert.pem"))
                .arg("--tlskey")
                .arg(certs.join("key.pem"));
            tls_addr = Some((addr, certs));
        }
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "buildkitd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The TCP listener comes up right after the socket; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        Daemon {
            child,
            socket,
            tls: tls_addr,
        }
    }

    pub fn addr(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn buildctl(bin: &Path, daemon: &Daemon, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin)
        .arg("--addr")
        .arg(daemon.addr())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// `buildctl build --progress plain` of the Dockerfile in `ctx` (context and Dockerfile both
/// from `ctx`), plus `extra` arguments.
pub fn dockerfile_build(bin: &Path, daemon: &Daemon, ctx: &str, extra: &[&str]) -> Output {
    let (context, dockerfile) = (format!("context={ctx}"), format!("dockerfile={ctx}"));
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &context,
        "--local",
        &dockerfile,
    ];
    args.extend_from_slice(extra);
    buildctl(bin, daemon, &args, None)
}

/// `buildctl build` of the Dockerfile in `ctx` with a local output into `out`.
pub fn build_into_dir(bin: &Path, daemon: &Daemon, ctx: &str, out: &Path) -> Output {
    let output = format!("type=local,dest={}", out.display());
    dockerfile_build(bin, daemon, ctx, &["--output", &output])
}

/// `buildctl build` of the Dockerfile in `ctx` to `output`, with one cache flag and its value.
pub fn build_with_cache(
    bin: &Path,
    daemon: &Daemon,
    ctx: &str,
    output: &str,
    cache_flag: &str,
    cache_value: &str,
) -> Output {
    dockerfile_build(
        bin,
        daemon,
        ctx,
        &["--output", output, cache_flag, cache_value],
    )
}

/// Whether buildctl's plain progress shows the vertex named like `step` as CACHED.
pub fn step_cached(stderr: &str, step: &str) -> bool {
    let Some(line) = stderr.lines().find(|l| l.contains(step)) else {
        return false;
    };
    let n = line.split(' ').next().unwrap_or_default();
    stderr.lines().any(|l| l == format!("{n} CACHED"))
}

/// The buildctl clients and the build set-up a test needs, or `None` after a SKIP line.
pub fn prerequisites(test: &str) -> Option<(Vec<PathBuf>, super::Env)> {
    let bins = super::buildctls();
    if bins.is_empty() {
        println!("SKIP {test}: no buildctl (set KILN_TEST_BUILDCTL or put buildctl on PATH)");
        return None;
    }
    Some((bins, super::setup(test)?))
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
