//! Build steps in jobs: a job of `kiln daemon` builds and pushes an image with real buildctl through
//! its own `BUILDKIT_HOST`; a second job on the same runner finds the steps cached.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_gitea::fake::{FakeGitea, QueuedJob};
use kiln_gitea::proto;

#[test]
fn jobs_build_with_buildctl_through_buildkit_host() {
    let Some(env) = common::setup("jobs_build_with_buildctl_through_buildkit_host") else {
        return;
    };
    let Some(buildctl) = common::buildctls().into_iter().last() else {
        println!("SKIP jobs_build_with_buildctl_through_buildkit_host: buildctl not found (KILN_TEST_BUILDCTL, PATH, /opt/buildkit-*/bin)");
        return;
    };
    let rt = common::rt();
    let gitea = rt.block_on(FakeGitea::start());
    let dir = env.work.path();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "runner:\n  file: {d}/.runner\n  fetch_interval: 100ms\n  shutdown_timeout: 60s\nhost:\n  workdir_parent: {d}/host\ncache:\n  enabled: false\nkiln:\n  metrics_addr: \"\"\n  state_dir: {root}\n  builder:\n    gc_keep_storage: 5GB\n",
            d = dir.display(),
            root = env.root.path().display()
        ),
    )
    .unwrap();
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let out = Command::new(kiln)
        .args([
            "register",
            "--no-interactive",
            "--instance",
            &gitea.url(),
            "--token",
            &gitea.registration_token(),
            "--labels",
            "linux:host",
            "-c",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let mut daemon = Command::new(kiln)
        .args(["daemon", "-c"])
        .arg(&config)
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();

    let image = env.image("from-job:1");
    let workflow = format!(
        r#"
on: push
env:
  BUILDCTL: {buildctl}
jobs:
  image:
    runs-on: linux
    steps:
      - name: Write a Dockerfile
        run: |
          printf 'FROM {base}\nRUN echo built-in-a-job > /proof\nCOPY hello.txt /hello.txt\n' > Dockerfile
          echo hello > hello.txt
          echo "BUILDKIT_HOST=$BUILDKIT_HOST"
      - name: Build and push
        run: |
          "$BUILDCTL" --addr "$BUILDKIT_HOST" build --progress plain \
            --frontend dockerfile.v0 --local context=. --local dockerfile=. \
            --output type=image,name={image},push=true
"#,
        buildctl = buildctl.display(),
        base = env.base,
    );
    let queue = || {
        gitea.queue_job(QueuedJob {
            workflow_yaml: workflow.clone(),
            job_id: "image".into(),
            runs_on: vec!["linux".into()],
            context: serde_json::json!({}),
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
            needs: BTreeMap::new(),
        })
    };
    let first = queue();
    let task = rt.block_on(gitea.wait_final(first, Duration::from_secs(300)));
    let daemon_log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let task = task.unwrap_or_else(|| panic!("job did not finish; daemon log:\n{}", daemon_log()));
    let rows = task.rows.join("\n");
    assert_eq!(
        task.result,
        proto::Result::Success,
        "{rows}\n---\n{}",
        daemon_log()
    );
    assert!(
        rows.contains("BUILDKIT_HOST=unix://")
            && rows.contains(&format!("job-{}.sock", task.task_id)),
        "{rows}"
    );
    let config_json = env.config_of(&image);
    assert_eq!(
        config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len()),
        Some(3),
        "{config_json}"
    );

    // The same build in a second job: the engine's cache is shared by the runner's jobs.
    let second = queue();
    let task = rt
        .block_on(gitea.wait_final(second, Duration::from_secs(300)))
        .expect("second job");
    let rows = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Success, "{rows}");
    assert!(
        rows.contains("CACHED"),
        "no cached vertex in the second job:\n{rows}"
    );

    // SIGTERM: the daemon and its engine stop.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{}", daemon_log());
}
