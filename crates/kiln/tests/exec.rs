//! `kiln exec` as users run it: exit codes, listing, output and error messages.

use std::path::Path;
use std::process::Command;

fn kiln(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("exec")
        .args(["--state-dir", dir.join(".state").to_str().unwrap()])
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo(workflows: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join(".gitea/workflows");
    std::fs::create_dir_all(&wf).unwrap();
    for (name, text) in workflows {
        std::fs::write(wf.join(name), text).unwrap();
    }
    dir
}

const CI: &str = r#"
name: CI
on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      artifact: ${{ steps.b.outputs.name }}
    steps:
      - uses: actions/checkout@v4
      - id: b
        run: echo "name=app-${{ github.event_name }}" >> "$GITHUB_OUTPUT"
  test:
    needs: build
    runs-on: ubuntu-latest
    strategy:
      matrix:
        shard: [1, 2]
    steps:
      - run: echo "testing ${{ needs.build.outputs.artifact }} shard ${{ matrix.shard }} with ${{ secrets.API_KEY }}"
"#;

#[test]
fn runs_a_workflow_and_lists_jobs() {
    let dir = repo(&[
        ("ci.yml", CI),
        (
            "release.yml",
            "on: release\njobs:\n  r:\n    runs-on: x\n    steps:\n      - run: echo release\n",
        ),
    ]);
    let (code, out, err) = kiln(dir.path(), &["--list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0      build"), "{out}");
    assert!(out.contains("1      test"), "{out}");
    assert!(
        !out.contains("release.yml"),
        "release is not triggered by push: {out}"
    );

    let (code, out, err) = kiln(dir.path(), &["-s", "API_KEY=key-123456"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Skipping actions/checkout"), "{out}");
    assert!(
        out.contains("[CI/test (1)]") && out.contains("[CI/test (2)]"),
        "{out}"
    );
    assert!(out.contains("testing app-push shard 2 with ***"), "{out}");
    assert!(!out.contains("key-123456"), "{out}");
    assert!(out.contains("Job succeeded"), "{out}");

    // One job, a matrix filter, another event.
    let (code, out, _) = kiln(
        dir.path(),
        &[
            "-j",
            "test",
            "--matrix",
            "shard:1",
            "--event",
            "pull_request",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("testing app-pull_request shard 1"), "{out}");
    assert!(!out.contains("shard 2"), "{out}");

    let (code, out, _) = kiln(dir.path(), &["--event", "release"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[release.yml/r]"), "{out}");
}

#[test]
fn failures_set_the_exit_code() {
    let dir = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - name: breaks\n        run: exit 7\n",
    )]);
    let (code, out, _) = kiln(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Process completed with exit code 7."), "{out}");
    assert!(out.contains("Job failed"), "{out}");
}

#[test]
fn bad_workflows_are_named() {
    let dir = repo(&[(
        "broken.yml",
        "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - rn: echo\n",
    )]);
    let (code, _, err) = kiln(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("broken.yml") && err.contains(":6:") && err.contains("unknown field `rn`"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = kiln(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no .gitea/workflows or .github/workflows"),
        "{err}"
    );

    let dir = repo(&[("ci.yml", CI)]);
    let (code, _, err) = kiln(dir.path(), &["-j", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no workflow has a job `nope`"), "{err}");
}

#[test]
fn platform_images_run_jobs_in_containers() {
    let test = "platform_images_run_jobs_in_containers";
    let Some(dockerd) = kiln_oci::testing::TestDockerd::start(test) else {
        return;
    };
    let Some(registry) = kiln_oci::testing::TestRegistry::start() else {
        return;
    };
    let image = format!("{}/busybox:latest", registry.host());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kiln_oci::testing::push_busybox(&image, None));
    let dir = repo(&[(
        "ci.yml",
        "on: push\njobs:\n  boxed:\n    runs-on: ubuntu-latest\n    steps:\n      - run: test ! -e /etc/debian_version && echo inside the busybox container\n",
    )]);
    let (code, out, err) = kiln(
        dir.path(),
        &[
            "-P",
            &format!("ubuntu-latest=docker://{image}"),
            "--docker-host",
            &dockerd.host(),
            "--container-network",
            "host",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("inside the busybox container"), "{out}");

    let (code, _, err) = kiln(dir.path(), &["-P", "no-equals-sign"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("expected LABEL=IMAGE"), "{err}");
}
