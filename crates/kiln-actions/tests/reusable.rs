//! Reusable workflows (`jobs.<id>.uses:`) through `kiln exec`'s planner: local and remote (git
//! daemon) called workflows, inputs with types and defaults, passed and inherited secrets,
//! outputs read by a later job, nested calls, matrix callers, and the errors GitHub gives.

mod common;

use common::Fixture;
use kiln_actions::exec::Outcome;
use kiln_oci::testing::{git, TestGitDaemon};

const CALLED: &str = r#"
on:
  workflow_call:
    inputs:
      name: { type: string, required: true }
      loud: { type: boolean, default: false }
      count: { type: number, default: 3 }
    secrets:
      token: { required: true }
    outputs:
      image:
        value: ${{ jobs.second.outputs.image }}
      first:
        value: ${{ jobs.first.result }}-${{ inputs.name }}
jobs:
  first:
    runs-on: x
    steps:
      - run: |
          echo "name=${{ inputs.name }} loud=${{ inputs.loud }} count=${{ inputs.count }}"
          echo "loud-is-bool=${{ inputs.loud == true }}"
          echo "token=${{ secrets.token }}"
  second:
    needs: first
    runs-on: x
    outputs:
      image: ${{ steps.tag.outputs.image }}
    steps:
      - id: tag
        run: echo "image=registry/${{ inputs.name }}:${{ github.event_name }}" >> "$GITHUB_OUTPUT"
"#;

fn write(f: &Fixture, path: &str, text: &str) {
    let p = f.repo().join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[tokio::test]
async fn local_reusable_workflow_with_inputs_secrets_outputs_and_matrix_callers() {
    let mut f = Fixture::new();
    f.secrets.insert("DEPLOY".into(), "s3cr3t-deploy".into());
    write(&f, ".gitea/workflows/build.yml", CALLED);
    let run = f
        .run(
            r#"
on: push
jobs:
  call:
    uses: ./.gitea/workflows/build.yml
    with:
      name: app
      loud: "true"
    secrets:
      token: ${{ secrets.DEPLOY }}
  matrix:
    strategy:
      matrix:
        n: [1, 2]
    uses: ./.gitea/workflows/build.yml
    with:
      name: n${{ matrix.n }}
    secrets: inherit
  after:
    needs: [call, matrix]
    runs-on: x
    steps:
      - run: echo "got ${{ needs.call.outputs.image }} ${{ needs.call.outputs.first }} ${{ needs.call.result }}"
"#,
        )
        .await;
    let log = run.log();
    assert!(run.summary.as_ref().unwrap().success, "{log}");
    assert!(run.has("call/first|name=app loud=true count=3"), "{log}");
    assert!(run.has("call/first|loud-is-bool=true"), "{log}");
    assert!(run.has("call/first|token=***"), "{log}");
    assert!(!log.contains("s3cr3t-deploy"), "{log}");
    assert_eq!(run.result("call"), Outcome::Success);
    assert_eq!(run.outputs("call")["image"], "registry/app:push", "{log}");
    assert!(
        run.has("after|got registry/app:push success-app success"),
        "{log}"
    );
    // Each combination of a matrix caller runs the whole called workflow with its own inputs;
    // `secrets: inherit` passes the caller's secrets (`token` is not among them, but
    // inherit satisfies required secrets as GitHub does).
    assert!(run.has("matrix (0)/first|name=n1"), "{log}");
    assert!(run.has("matrix (1)/first|name=n2"), "{log}");
}

#[tokio::test]
async fn nested_calls_and_failures_propagate() {
    let f = Fixture::new();
    write(
        &f,
        ".gitea/workflows/outer.yml",
        "on: workflow_call\njobs:\n  inner:\n    uses: ./.gitea/workflows/inner.yml\n    with: { fail: true }\n",
    );
    write(
        &f,
        ".gitea/workflows/inner.yml",
        "on:\n  workflow_call:\n    inputs:\n      fail: { type: boolean }\njobs:\n  work:\n    runs-on: x\n    steps:\n      - run: echo inner ran; test \"${{ inputs.fail }}\" != true\n",
    );
    let run = f
        .run(
            r#"
on: push
jobs:
  call:
    uses: ./.gitea/workflows/outer.yml
  cleanup:
    needs: call
    if: failure()
    runs-on: x
    steps:
      - run: echo cleaning up after ${{ needs.call.result }}
"#,
        )
        .await;
    let log = run.log();
    assert!(run.has("call/inner/work|inner ran"), "{log}");
    assert_eq!(run.result("call"), Outcome::Failure, "{log}");
    assert!(run.has("cleanup|cleaning up after failure"), "{log}");
}

#[tokio::test]
async fn bad_calls_fail_the_caller_with_the_reason() {
    let f = Fixture::new();
    write(&f, ".gitea/workflows/build.yml", CALLED);
    write(
        &f,
        ".gitea/workflows/push-only.yml",
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: 'true'}]\n",
    );
    for (uses, with, expected) in [
        (
            "./.gitea/workflows/build.yml",
            "{ name: x, nope: 1 }",
            "invalid input `nope`",
        ),
        (
            "./.gitea/workflows/build.yml",
            "{ loud: true }",
            "input `name` is required",
        ),
        (
            "./.gitea/workflows/push-only.yml",
            "{}",
            "has no `workflow_call`",
        ),
        (
            "./.gitea/workflows/missing.yml",
            "{}",
            "cannot read ./.gitea/workflows/missing.yml",
        ),
        (
            "org/repo/build.yml@v1",
            "{}",
            "is not a valid reusable workflow",
        ),
    ] {
        let yaml = format!(
            "on: push\njobs:\n  call:\n    uses: {uses}\n    with: {with}\n    secrets:\n      token: t\n"
        );
        let run = f.run(&yaml).await;
        let log = run.log();
        assert_eq!(run.result("call"), Outcome::Failure, "{uses}: {log}");
        assert!(run.has(expected), "{uses}: expected {expected:?} in\n{log}");
    }
}

#[tokio::test]
async fn remote_reusable_workflow_from_a_git_server() {
    let mut f = Fixture::new();
    let work = f.dir.path().join("lib");
    std::fs::create_dir_all(work.join(".github/workflows")).unwrap();
    std::fs::write(work.join(".github/workflows/lib.yml"), CALLED).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "lib"]);
    git(&work, &["tag", "v1"]);
    let served = f.dir.path().join("served");
    std::fs::create_dir_all(served.join("org")).unwrap();
    git(
        f.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            served.join("org/lib.git").to_str().unwrap(),
        ],
    );
    let daemon = TestGitDaemon::start(&served);
    f.config.default_actions_url = format!("git://127.0.0.1:{}", daemon.port());
    let run = f
        .run(
            r#"
on: push
jobs:
  call:
    uses: org/lib/.github/workflows/lib.yml@v1
    with: { name: remote }
    secrets: { token: abc }
  after:
    needs: call
    runs-on: x
    steps:
      - run: echo "remote image ${{ needs.call.outputs.image }}"
"#,
        )
        .await;
    let log = run.log();
    assert!(run.summary.as_ref().unwrap().success, "{log}");
    assert!(
        run.has("call/first|name=remote loud=false count=3"),
        "{log}"
    );
    assert!(run.has("after|remote image registry/remote:push"), "{log}");
}

/// Newer Gitea expands a caller on the server and sends each called job as a `workflow_call`
/// event with the caller's inputs in the payload: declared inputs take their defaults and types
/// from the called workflow's `on.workflow_call`, as act's `getEvaluatorInputs` does.
#[test]
fn jobs_of_a_call_expanded_by_gitea_read_their_inputs_from_the_event() {
    let wf = kiln_actions::model::Workflow::parse_job_payload("build.yml", CALLED).unwrap();
    let event = serde_json::json!({"inputs": {"name": "from-gitea", "loud": "true"}});
    assert_eq!(
        wf.inputs_for("workflow_call", &event),
        serde_json::json!({"name": "from-gitea", "loud": true, "count": 3})
    );
    // Another event: the payload's inputs as they are.
    assert_eq!(
        wf.inputs_for("push", &event),
        serde_json::json!({"name": "from-gitea", "loud": "true"})
    );
    let dispatch = kiln_actions::model::Workflow::parse(
        "d.yml",
        "on:\n  workflow_dispatch:\n    inputs:\n      env: { default: staging }\n      dry: { type: boolean, default: true }\njobs:\n  a:\n    runs-on: x\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    assert_eq!(
        dispatch.inputs_for(
            "workflow_dispatch",
            &serde_json::json!({"inputs": {"dry": "false"}})
        ),
        serde_json::json!({"env": "staging", "dry": false})
    );
}
