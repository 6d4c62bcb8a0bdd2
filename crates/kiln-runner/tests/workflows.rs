//! Whole workflows through the daemon, with the fake Gitea handing out one job at a time as
//! Gitea does (needs erased from the payload, results and outputs in `Task.needs`, blocked jobs
//! released or skipped by the job emitter): chains, fan-in, failure-handling jobs, a matrix
//! feeding a later job, skipped needs, and a reusable-workflow caller.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Runner;
use kiln_gitea::fake::{FakeGitea, JobRecord, JobStatus, QueuedRun, TaskRecord};
use kiln_gitea::proto;

/// Queue a workflow run, let a runner of capacity 2 run it, and return every job and its task.
async fn run(yaml: &str) -> (FakeGitea, Vec<(JobRecord, Option<TaskRecord>)>) {
    let gitea = FakeGitea::start().await;
    let jobs = run_on(&gitea, QueuedRun::new(yaml)).await;
    (gitea, jobs)
}

async fn run_on(gitea: &FakeGitea, queued: QueuedRun) -> Vec<(JobRecord, Option<TaskRecord>)> {
    let mut runner = Runner::registered(gitea, &["linux:host"]).await;
    runner.config.runner.capacity = 2;
    let run_id = gitea.queue_run(queued);
    let (shutdown, handle) = runner.start();
    let jobs = gitea
        .wait_run(run_id, Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("the run did not finish: {:#?}", gitea.run_jobs(run_id)));
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    jobs.into_iter()
        .map(|j| {
            let task = gitea.task(j.id);
            (j, task)
        })
        .collect()
}

fn job<'a>(
    jobs: &'a [(JobRecord, Option<TaskRecord>)],
    name: &str,
) -> &'a (JobRecord, Option<TaskRecord>) {
    jobs.iter()
        .find(|(j, _)| j.name == name)
        .unwrap_or_else(|| panic!("no job named {name}: {:#?}", names(jobs)))
}

fn names(jobs: &[(JobRecord, Option<TaskRecord>)]) -> Vec<(String, JobStatus)> {
    jobs.iter()
        .map(|(j, _)| (j.name.clone(), j.status))
        .collect()
}

fn rows(task: &Option<TaskRecord>) -> String {
    task.as_ref().map(|t| t.rows.join("\n")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_and_fan_in_pass_outputs_between_jobs() {
    let (_gitea, jobs) = run(r#"
on: push
jobs:
  a:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=1.2.3" >> "$GITHUB_OUTPUT"
  b:
    needs: a
    runs-on: linux
    outputs:
      left: ${{ steps.l.outputs.left }}
    steps:
      - id: l
        run: echo "left=b-saw-${{ needs.a.outputs.version }}" >> "$GITHUB_OUTPUT"
  c:
    needs: [a]
    runs-on: linux
    outputs:
      right: c-${{ needs.a.result }}
    steps:
      - run: echo c ran
  d:
    needs: [b, c]
    runs-on: linux
    steps:
      - run: echo "d got ${{ needs.b.outputs.left }} and ${{ needs.c.outputs.right }} a=${{ needs.a.outputs.version }}"
"#)
    .await;
    for name in ["a", "b", "c", "d"] {
        let (j, t) = job(&jobs, name);
        assert_eq!(j.status, JobStatus::Success, "{name}: {}", rows(t));
    }
    let d = rows(&job(&jobs, "d").1);
    // `needs.a` is not among d's needs: only direct needs are in Task.needs, as on Gitea.
    assert!(d.contains("d got b-saw-1.2.3 and c-success a="), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_handling_jobs_run_or_are_skipped_as_on_gitea() {
    let (_gitea, jobs) = run(r#"
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo about to fail; exit 3
  plain:
    needs: build
    runs-on: linux
    steps:
      - run: echo plain must not run
  on-failure:
    needs: build
    if: failure()
    runs-on: linux
    steps:
      - run: echo "reporting ${{ needs.build.result }}"
  always:
    needs: build
    if: ${{ always() }}
    runs-on: linux
    steps:
      - run: echo always ran
  on-success:
    needs: build
    if: success()
    runs-on: linux
    steps:
      - run: echo on-success must not run
  after-skip:
    needs: plain
    if: failure()
    runs-on: linux
    steps:
      - run: echo after-skip must not run
"#)
    .await;
    let status = |name: &str| job(&jobs, name).0.status;
    assert_eq!(status("build"), JobStatus::Failure, "{:?}", names(&jobs));
    // No `if:`: Gitea skips it without sending it to a runner.
    assert_eq!(status("plain"), JobStatus::Skipped);
    assert!(
        job(&jobs, "plain").1.is_none(),
        "plain was sent to a runner"
    );
    // With an `if:` Gitea sends it, and the runner decides.
    assert_eq!(status("on-failure"), JobStatus::Success);
    assert!(rows(&job(&jobs, "on-failure").1).contains("reporting failure"));
    assert_eq!(status("always"), JobStatus::Success);
    let (on_success, task) = job(&jobs, "on-success");
    assert_eq!(on_success.status, JobStatus::Skipped, "{}", rows(task));
    assert!(task.is_some(), "on-success has an if: Gitea sends it");
    assert!(!rows(task).contains("must not run"));
    // A skipped need is neither success nor failure for failure() (act's jobFailure).
    let (after_skip, task) = job(&jobs, "after-skip");
    assert_eq!(after_skip.status, JobStatus::Skipped, "{}", rows(task));
    let skipped_steps: Vec<proto::Result> = task
        .as_ref()
        .map(|t| t.steps.iter().map(|s| s.result).collect())
        .unwrap_or_default();
    assert_eq!(skipped_steps, vec![proto::Result::Skipped]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_feeds_a_later_job() {
    let (_gitea, jobs) = run(r#"
on: push
jobs:
  build:
    strategy:
      matrix:
        arch: [amd64, arm64]
    runs-on: linux
    outputs:
      digest: ${{ steps.d.outputs.digest }}
      last: ${{ matrix.arch }}
    steps:
      - id: d
        run: echo "digest=sha-${{ matrix.arch }}" >> "$GITHUB_OUTPUT"
  publish:
    needs: build
    runs-on: linux
    steps:
      - run: echo "publish saw ${{ needs.build.result }} last=${{ needs.build.outputs.last }}"
"#)
    .await;
    for name in ["build (amd64)", "build (arm64)"] {
        let (j, t) = job(&jobs, name);
        assert_eq!(j.status, JobStatus::Success, "{name}: {}", rows(t));
        let task = t.as_ref().unwrap();
        let arch = name.trim_start_matches("build (").trim_end_matches(')');
        assert_eq!(task.outputs.get("last").map(String::as_str), Some(arch));
        assert_eq!(task.outputs["digest"], format!("sha-{arch}"));
    }
    // Gitea merges the combinations' outputs (mergeTwoOutputs): one value per name survives.
    let publish = rows(&job(&jobs, "publish").1);
    assert!(
        publish.contains("publish saw success last=amd64")
            || publish.contains("publish saw success last=arm64"),
        "{publish}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_matrix_combination_fails_the_need() {
    let (_gitea, jobs) = run(r#"
on: push
jobs:
  test:
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    runs-on: linux
    steps:
      - run: test ${{ matrix.n }} = 1
  report:
    needs: test
    if: always()
    runs-on: linux
    steps:
      - run: echo "tests ${{ needs.test.result }}"
"#)
    .await;
    assert_eq!(job(&jobs, "test (1)").0.status, JobStatus::Success);
    assert_eq!(job(&jobs, "test (2)").0.status, JobStatus::Failure);
    let report = rows(&job(&jobs, "report").1);
    assert!(report.contains("tests failure"), "{report}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with these files, committed (and tagged `v1`) and served by the fake Gitea as
/// `owner/name`; returns the commit.
fn serve(root: &Path, work: &Path, owner_name: &str, files: &[(&str, &str)]) -> String {
    let src = work.join(owner_name);
    for (path, text) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(&src, &["init", "-q"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "files"]);
    git(&src, &["tag", "v1"]);
    let bare = root.join(format!("{owner_name}.git"));
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(
        work,
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&src, &["rev-parse", "HEAD"])
}

const CALLED: &str = r#"
on:
  workflow_call:
    inputs:
      name: { type: string, required: true }
    secrets:
      token: { required: true }
    outputs:
      image:
        value: ${{ jobs.build.outputs.image }}
jobs:
  build:
    runs-on: linux
    outputs:
      image: ${{ steps.t.outputs.image }}
    steps:
      - run: echo "building ${{ inputs.name }} with token ${{ secrets.token }}"
      - id: t
        run: echo "image=registry/${{ inputs.name }}:1" >> "$GITHUB_OUTPUT"
"#;

/// Gitea up to 1.25 sends a job that calls a reusable workflow to the runner as it is written.
/// The called jobs run in the caller's task: a `./` workflow comes from the (private) repository
/// on the instance at the run's commit, cloned with the task token; a remote one from the
/// instance too; the caller's outputs reach a later job through Gitea.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusable_workflow_callers_run_their_called_jobs() {
    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (root, work) = (dir.path().join("repos"), dir.path().join("work"));
    let sha = serve(
        &root,
        &work,
        "owner/app",
        &[(".gitea/workflows/build.yml", CALLED)],
    );
    serve(
        &root,
        &work,
        "org/lib",
        &[(".github/workflows/lib.yml", CALLED)],
    );
    gitea.serve_repositories(&root);
    gitea.set_private("owner/app");

    let mut queued = QueuedRun::new(
        r#"
on: push
jobs:
  local:
    uses: ./.gitea/workflows/build.yml
    with:
      name: app
    secrets:
      token: ${{ secrets.DEPLOY }}
  remote:
    uses: org/lib/.github/workflows/lib.yml@v1
    with:
      name: lib
    secrets: inherit
  after:
    needs: [local, remote]
    runs-on: linux
    steps:
      - run: echo "got ${{ needs.local.outputs.image }} and ${{ needs.remote.outputs.image }}"
"#,
    );
    queued.context = serde_json::json!({ "sha": sha, "repository": "owner/app" });
    queued
        .secrets
        .insert("DEPLOY".into(), "deploy-s3cret".into());
    queued.secrets.insert("TOKEN".into(), "inherited".into());
    let jobs = run_on(&gitea, queued).await;

    let (local, task) = job(&jobs, "local");
    let log = rows(task);
    assert_eq!(local.status, JobStatus::Success, "{log}");
    assert!(log.contains("building app with token ***"), "{log}");
    assert!(!log.contains("deploy-s3cret"), "{log}");
    assert_eq!(
        task.as_ref()
            .unwrap()
            .outputs
            .get("image")
            .map(String::as_str),
        Some("registry/app:1")
    );
    let (remote, task) = job(&jobs, "remote");
    assert_eq!(remote.status, JobStatus::Success, "{}", rows(task));
    let after = rows(&job(&jobs, "after").1);
    assert!(
        after.contains("got registry/app:1 and registry/lib:1"),
        "{after}"
    );
    // The private repository was read with a running task's token.
    let requests = gitea.git_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/owner/app") && r.task_id.is_some() && r.status == 200),
        "{requests:#?}"
    );
}
