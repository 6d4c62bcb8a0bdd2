//! `kiln buildkitd --health-addr`: plain-HTTP /healthz and /readyz for Kubernetes probes.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn buildkitd_serves_health_and_readiness() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "SKIP buildkitd_serves_health_and_readiness: needs root (the engine opens its state)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["buildkitd", "--addr"])
        .arg(format!("unix://{}", dir.path().join("bk.sock").display()))
        .args(["--health-addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let ready = loop {
        if let Some(r) = get(port, "/readyz") {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no health endpoint");
        std::thread::sleep(Duration::from_millis(50));
    };
    let healthy = get(port, "/healthz").unwrap_or_default();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        ready.starts_with("HTTP/1.0 200") || ready.starts_with("HTTP/1.1 200"),
        "{ready}"
    );
    assert!(ready.ends_with("ready\n"), "{ready}");
    assert!(
        healthy.contains(" 200 ") && healthy.ends_with("ok\n"),
        "{healthy}"
    );
}
