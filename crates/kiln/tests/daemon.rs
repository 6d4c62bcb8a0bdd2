//! `kiln register` and `kiln daemon` as users run them, against the fake Gitea.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_gitea::fake::{FakeGitea, QueuedJob};
use kiln_gitea::proto;

fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("NO_COLOR", "1");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_run_a_job_and_stop_on_sigterm() {
    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "log:\n  level: info\nrunner:\n  file: {d}/.runner\n  fetch_interval: 100ms\n  shutdown_timeout: 30s\nhost:\n  workdir_parent: {d}/host\ncache:\n  dir: {d}/cache\nkiln:\n  metrics_addr: \"127.0.0.1:0\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();

    let out = kiln()
        .args([
            "register",
            "--no-interactive",
            "--instance",
            &gitea.url(),
            "--token",
            &gitea.registration_token(),
        ])
        .args([
            "--name",
            "ci-runner",
            "--labels",
            "linux:host,ubuntu-latest:docker://node:20",
        ])
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Runner registered successfully: ci-runner")
    );
    let runner: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(".runner")).unwrap()).unwrap();
    assert_eq!(
        runner["labels"],
        serde_json::json!(["linux:host", "ubuntu-latest:docker://node:20"])
    );
    assert_eq!(gitea.runners()[0].labels, vec!["linux", "ubuntu-latest"]);

    // A wrong registration token: a clear error and exit code 1.
    let out = kiln()
        .args([
            "register",
            "--no-interactive",
            "--instance",
            &gitea.url(),
            "--token",
            "wrong",
            "-c",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registration failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut daemon = kiln()
        .args(["daemon", "-c"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = gitea.queue_job(QueuedJob {
        workflow_yaml: "on: push\njobs:\n  build:\n    runs-on: linux\n    steps:\n      - run: echo \"cache at $ACTIONS_CACHE_URL\"; sleep 1\n".into(),
        job_id: "build".into(),
        context: serde_json::json!({}),
        secrets: BTreeMap::new(),
        vars: BTreeMap::new(),
    });
    // SIGTERM while the job runs: it is drained (finishes), then the daemon exits 0.
    let t0 = std::time::Instant::now();
    while !gitea
        .task(id)
        .is_some_and(|t| t.rows.iter().any(|r| r.contains("cache at http://")))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "job did not start: {:?}",
            gitea.task(id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        let status = daemon.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        daemon
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1);
    assert!(status.1.contains("shutting down"), "{}", status.1);
    assert_eq!(gitea.task(id).unwrap().result, proto::Result::Success);
}

#[test]
fn generate_config_prints_the_example() {
    let out = kiln().arg("generate-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("runner:") && text.contains("capacity: 1") && text.contains("kiln:"));
}

#[test]
fn a_config_with_wrong_types_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "runner:\n  capacity: [1, 2]\n").unwrap();
    let out = kiln().args(["daemon", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.yaml") && err.contains("runner.capacity"),
        "{err}"
    );

    std::fs::write(&config, "runner:\n  file: /nonexistent/.runner\n").unwrap();
    let out = kiln().args(["daemon", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `kiln register` first"));
}
