//! Whole runs through the Connect client: jobs claimed by a runner, finished with UpdateTask,
//! and the dependent jobs Gitea's job emitter then releases or skips.
#![cfg(feature = "fake")]

use std::time::Duration;

use kiln_gitea::fake::{FakeGitea, JobStatus, QueuedJob, QueuedRun};
use kiln_gitea::proto::{self, Result as Outcome};
use kiln_gitea::{struct_to_json, Client, ClientOptions};

async fn runner(gitea: &FakeGitea) -> Client {
    let client = Client::new(
        &gitea.url(),
        ClientOptions {
            version: "v0.0.0-test".into(),
            request_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let runner = client
        .register(proto::RegisterRequest {
            name: "runner".into(),
            token: gitea.registration_token(),
            labels: vec!["linux".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .runner
        .unwrap();
    client.with_credentials(&runner.uuid, &runner.token)
}

/// Claims the next task, if any.
async fn claim(client: &Client) -> Option<proto::Task> {
    client
        .fetch_task(
            proto::FetchTaskRequest { tasks_version: 0 },
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .task
}

/// The YAML key of a task's job (`github.job`).
fn key(task: &proto::Task) -> String {
    struct_to_json(task.context.as_ref().unwrap())["job"]
        .as_str()
        .unwrap()
        .to_string()
}

fn job_name(task: &proto::Task) -> String {
    let payload: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(task.workflow_payload.as_deref().unwrap()).unwrap();
    let jobs = payload["jobs"].as_mapping().unwrap();
    assert_eq!(jobs.len(), 1, "one job per task");
    jobs.values().next().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The runner's final UpdateTask.
async fn finish(client: &Client, task: &proto::Task, result: Outcome, outputs: &[(&str, &str)]) {
    client
        .update_task(proto::UpdateTaskRequest {
            state: Some(proto::TaskState {
                id: task.id,
                result: result as i32,
                stopped_at: Some(proto::now()),
                ..Default::default()
            }),
            outputs: outputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .unwrap();
}

fn statuses(gitea: &FakeGitea, run: i64) -> Vec<(String, JobStatus)> {
    gitea
        .run_jobs(run)
        .into_iter()
        .map(|j| (j.key, j.status))
        .collect()
}

fn need(task: &proto::Task, key: &str) -> (i32, Vec<(String, String)>) {
    let n = &task.needs[key];
    (n.result, n.outputs.clone().into_iter().collect())
}

const STEP: &str = "    runs-on: linux\n    steps:\n      - run: echo\n";

fn workflow(jobs: &[(&str, &str)]) -> String {
    let mut y = String::from("on: push\njobs:\n");
    for (name, extra) in jobs {
        y.push_str(&format!("  {name}:\n{extra}{STEP}"));
    }
    y
}

#[tokio::test]
async fn fetch_returns_queued_task_with_payload_context_and_secrets() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let mut job = QueuedJob::new(
        r#"
name: CI
on: push
jobs:
  prep:
    runs-on: linux
    outputs:
      out: ${{ steps.s.outputs.out }}
    steps:
      - id: s
        run: echo out=1 >> $GITHUB_OUTPUT
  build:
    needs: prep
    runs-on: linux
    steps:
      - run: echo ${{ needs.prep.outputs.out }}
"#,
        "build",
    );
    job.secrets.insert("MY_SECRET".into(), "s3cret".into());
    job.vars.insert("MY_VAR".into(), "v".into());
    job.context = serde_json::json!({"event_name": "workflow_dispatch"});
    let build = gitea.queue_job(job);
    assert_eq!(gitea.job(build).unwrap().status, JobStatus::Blocked);

    // `prep` runs first and finishes with an output; only then is `build` handed out.
    let prep = claim(&client).await.expect("prep");
    assert_eq!(
        struct_to_json(prep.context.as_ref().unwrap())["job"],
        "prep"
    );
    assert!(prep.needs.is_empty());
    assert!(claim(&client).await.is_none(), "build is still blocked");
    finish(&client, &prep, Outcome::Success, &[("out", "1")]).await;
    assert_eq!(gitea.job(build).unwrap().status, JobStatus::Waiting);

    let task = claim(&client).await.expect("task");
    let payload: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(task.workflow_payload.as_deref().unwrap()).unwrap();
    let jobs = payload.get("jobs").unwrap().as_mapping().unwrap();
    assert_eq!(jobs.len(), 1);
    let job = jobs.get("build").unwrap();
    assert!(
        job.get("needs").is_none(),
        "InsertRun erases needs from the payload"
    );
    assert_eq!(job["name"], "build");
    assert!(payload.get("on").is_some());

    let ctx = struct_to_json(task.context.as_ref().unwrap());
    let token = ctx["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 40);
    assert_eq!(ctx["event_name"], "workflow_dispatch");
    assert_eq!(ctx["repository"], "owner/repo");
    assert_eq!(ctx["job"], "build");
    assert_eq!(ctx["workflow"], "ci.yml");
    assert_eq!(ctx["run_attempt"], "1");
    assert_eq!(ctx["run_id"], ctx["run_number"]);
    assert_eq!(ctx["gitea_default_actions_url"], "https://github.com");
    assert_eq!(ctx["ref_protected"], false);
    assert_eq!(ctx["ref_name"], "main");
    assert_eq!(ctx["ref_type"], "branch");
    assert_eq!(task.secrets["GITHUB_TOKEN"], token);
    assert_eq!(task.secrets["GITEA_TOKEN"], token);
    assert_eq!(task.secrets["MY_SECRET"], "s3cret");
    assert_eq!(task.vars["MY_VAR"], "v");
    assert_eq!(task.needs.len(), 1);
    assert_eq!(task.needs["prep"].result, Outcome::Success as i32);
    assert_eq!(task.needs["prep"].outputs["out"], "1");
}

#[tokio::test]
async fn a_chain_runs_one_job_at_a_time() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let v0 = gitea.tasks_version();
    let run = gitea.queue_run(QueuedRun::new(workflow(&[
        ("a", ""),
        ("b", "    needs: a\n"),
        ("c", "    needs: [b]\n"),
    ])));
    assert_eq!(gitea.tasks_version(), v0 + 1, "one bump for the run");
    use JobStatus::*;
    assert_eq!(
        statuses(&gitea, run),
        [
            ("a".into(), Waiting),
            ("b".into(), Blocked),
            ("c".into(), Blocked)
        ]
    );
    let jobs = gitea.run_jobs(run);
    assert_eq!(jobs[1].needs, ["a"]);
    assert_eq!(jobs[2].needs, ["b"]);
    assert!(jobs.iter().all(|j| !j.payload.contains("needs")));

    for (expected, outputs) in [
        ("a", [("x", "1")]),
        ("b", [("y", "2")]),
        ("c", [("z", "3")]),
    ] {
        let task = claim(&client).await.expect("next job");
        assert_eq!(key(&task), expected);
        assert!(claim(&client).await.is_none(), "only {expected} is ready");
        match expected {
            "a" => assert!(task.needs.is_empty()),
            "b" => assert_eq!(need(&task, "a"), (1, vec![("x".into(), "1".into())])),
            _ => {
                // Only direct needs are sent.
                assert_eq!(task.needs.keys().collect::<Vec<_>>(), ["b"]);
                assert_eq!(need(&task, "b"), (1, vec![("y".into(), "2".into())]));
            }
        }
        finish(&client, &task, Outcome::Success, &outputs).await;
    }
    let done = gitea
        .wait_run(run, Duration::from_secs(5))
        .await
        .expect("the run is done");
    assert!(done.iter().all(|j| j.status == Success));
    assert_eq!(gitea.tasks_version(), v0 + 3, "b and c each bumped it");
}

#[tokio::test]
async fn fan_in_waits_for_every_need() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let run = gitea.queue_run(QueuedRun::new(workflow(&[
        ("a", ""),
        ("b", "    needs: a\n"),
        ("c", "    needs: a\n"),
        ("d", "    needs: [b, c]\n"),
    ])));
    let a = claim(&client).await.unwrap();
    let v = gitea.tasks_version();
    finish(&client, &a, Outcome::Success, &[]).await;
    assert_eq!(gitea.tasks_version(), v + 2, "b and c entered waiting");
    let first = claim(&client).await.unwrap();
    let second = claim(&client).await.unwrap();
    assert_eq!([key(&first), key(&second)], ["b", "c"]);
    finish(&client, &first, Outcome::Success, &[]).await;
    assert!(claim(&client).await.is_none(), "d still needs c");
    assert_eq!(gitea.run_jobs(run)[3].status, JobStatus::Blocked);
    finish(&client, &second, Outcome::Success, &[]).await;
    let d = claim(&client).await.expect("d");
    assert_eq!(key(&d), "d");
    assert_eq!(d.needs.keys().collect::<Vec<_>>(), ["b", "c"]);
}

#[tokio::test]
async fn a_failed_need_skips_a_job_unless_it_has_its_own_if() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let run = gitea.queue_run(QueuedRun::new(workflow(&[
        ("a", ""),
        ("plain", "    needs: a\n"),
        ("report", "    needs: a\n    if: failure()\n"),
    ])));
    let a = claim(&client).await.unwrap();
    finish(&client, &a, Outcome::Failure, &[("o", "v")]).await;
    use JobStatus::*;
    assert_eq!(
        statuses(&gitea, run),
        [
            ("a".into(), Failure),
            ("plain".into(), Skipped),
            ("report".into(), Waiting)
        ]
    );
    // The runner gets the job and decides on its `if:` with the failed need.
    let report = claim(&client).await.expect("report is sent");
    assert_eq!(key(&report), "report");
    assert_eq!(
        need(&report, "a"),
        (Outcome::Failure as i32, vec![("o".into(), "v".into())])
    );
    let payload = String::from_utf8(report.workflow_payload.clone().unwrap()).unwrap();
    assert!(payload.contains("if: failure()"), "{payload}");
    assert!(gitea.task(gitea.job_ids(run, "plain")[0]).is_none());
}

#[tokio::test]
async fn skips_cascade_and_a_skipped_need_is_sent_without_outputs() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let run = gitea.queue_run(QueuedRun::new(workflow(&[
        ("a", ""),
        ("b", "    needs: a\n"),
        ("c", "    needs: b\n"),
        ("d", "    needs: c\n    if: always()\n"),
    ])));
    let a = claim(&client).await.unwrap();
    finish(&client, &a, Outcome::Cancelled, &[]).await;
    use JobStatus::*;
    assert_eq!(
        statuses(&gitea, run),
        [
            ("a".into(), Cancelled),
            ("b".into(), Skipped),
            ("c".into(), Skipped),
            ("d".into(), Waiting)
        ]
    );
    let d = claim(&client).await.expect("d");
    // FindTaskNeeds includes a needed job that never got a task.
    assert_eq!(need(&d, "c"), (Outcome::Skipped as i32, vec![]));
}

#[tokio::test]
async fn matrix_needs_are_aggregated_and_outputs_merged() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let yaml = "on: push\njobs:\n  build:\n    strategy:\n      matrix:\n        n: [1, 2]\n    outputs:\n      one: x\n      two: y\n    runs-on: linux\n    steps:\n      - run: echo\n  deploy:\n    needs: build\n    if: always()\n    runs-on: linux\n    steps:\n      - run: echo\n";
    for (second, want) in [
        (Outcome::Success, Outcome::Success),
        (Outcome::Failure, Outcome::Failure),
    ] {
        let run = gitea.queue_run(QueuedRun::new(yaml));
        assert_eq!(gitea.job_ids(run, "build").len(), 2);
        let names: Vec<String> = gitea.run_jobs(run).into_iter().map(|j| j.name).collect();
        assert_eq!(names, ["build (1)", "build (2)", "deploy"]);
        let b1 = claim(&client).await.unwrap();
        let b2 = claim(&client).await.unwrap();
        assert_eq!([job_name(&b1), job_name(&b2)], ["build (1)", "build (2)"]);
        assert!(claim(&client).await.is_none(), "deploy waits for both");
        // Each combination sets one output and leaves the other empty (as a runner reports
        // job outputs whose step output was not set).
        finish(&client, &b1, Outcome::Success, &[("one", "1"), ("two", "")]).await;
        assert!(claim(&client).await.is_none());
        finish(&client, &b2, second, &[("one", ""), ("two", "2")]).await;
        let deploy = claim(&client).await.expect("deploy");
        assert_eq!(
            need(&deploy, "build"),
            (
                want as i32,
                vec![("one".into(), "1".into()), ("two".into(), "2".into())]
            )
        );
        finish(&client, &deploy, Outcome::Success, &[]).await;
        gitea.wait_run(run, Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test]
async fn cancelling_a_run_cancels_every_unfinished_job() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let run = gitea.queue_run(QueuedRun::new(workflow(&[
        ("a", ""),
        ("b", ""),
        ("c", "    needs: a\n"),
    ])));
    let a = claim(&client).await.unwrap();
    gitea.cancel_run(run);
    use JobStatus::*;
    assert_eq!(
        statuses(&gitea, run),
        [
            ("a".into(), Cancelled),
            ("b".into(), Cancelled),
            ("c".into(), Cancelled)
        ]
    );
    assert!(claim(&client).await.is_none());
    // The running task learns it on its next UpdateTask.
    let resp = client
        .update_task(proto::UpdateTaskRequest {
            state: Some(proto::TaskState {
                id: a.id,
                ..Default::default()
            }),
            outputs: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(resp.state.unwrap().result, Outcome::Cancelled as i32);
}

#[tokio::test]
async fn cancelling_a_needed_job_skips_its_dependents() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let run = gitea.queue_run(QueuedRun::new(workflow(&[
        ("a", ""),
        ("b", "    needs: a\n"),
    ])));
    let a = gitea.job_ids(run, "a")[0];
    gitea.cancel(a);
    assert_eq!(
        statuses(&gitea, run),
        [
            ("a".into(), JobStatus::Cancelled),
            ("b".into(), JobStatus::Skipped)
        ]
    );
    assert!(claim(&client).await.is_none());
    assert!(gitea.wait_run(run, Duration::from_secs(1)).await.is_some());
}

#[tokio::test]
async fn reusable_workflow_callers_are_sent_as_they_are() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let run = gitea.queue_run(QueuedRun::new(
        "on: push\njobs:\n  call:\n    uses: ./.gitea/workflows/build.yml\n    with:\n      package: service\n    secrets: inherit\n",
    ));
    let job = &gitea.run_jobs(run)[0];
    assert!(job.runs_on.is_empty(), "any runner may take it");
    let task = claim(&client).await.expect("the caller job");
    let payload: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(task.workflow_payload.as_deref().unwrap()).unwrap();
    let call = &payload["jobs"]["call"];
    assert_eq!(call["uses"], "./.gitea/workflows/build.yml");
    assert_eq!(call["with"]["package"], "service");
    assert_eq!(call["secrets"], "inherit");
    assert!(gitea.task(job.id).unwrap().steps.is_empty());
}

#[tokio::test]
async fn context_follows_the_run_and_the_test_overrides() {
    let gitea = FakeGitea::start().await;
    let client = runner(&gitea).await;
    let mut queued = QueuedRun::new(
        "on: pull_request\njobs:\n  t:\n    runs-on: ${{ github.event_name == 'pull_request' && 'linux' || 'other' }}\n    steps:\n      - run: echo\n",
    );
    queued.workflow_file = "pr.yaml".into();
    queued.event_name = "pull_request".into();
    queued.event = serde_json::json!({
        "pull_request": {"base": {"ref": "main", "label": "main", "sha": "b"}, "head": {"ref": "feature"}}
    });
    queued.context = serde_json::json!({"ref": "refs/pull/7/head", "actor": "alice"});
    gitea.queue_run(queued);
    let task = claim(&client)
        .await
        .expect("runs-on evaluated with the github context");
    let ctx = struct_to_json(task.context.as_ref().unwrap());
    assert_eq!(ctx["workflow"], "pr.yaml");
    assert_eq!(ctx["event_name"], "pull_request");
    assert_eq!(ctx["base_ref"], "main");
    assert_eq!(ctx["head_ref"], "feature");
    assert_eq!(ctx["ref"], "refs/pull/7/head");
    assert_eq!(ctx["ref_name"], "7");
    assert_eq!(ctx["ref_type"], "pull");
    assert_eq!(ctx["actor"], "alice");
    assert_eq!(ctx["triggering_actor"], "");
    assert_eq!(ctx["event"]["pull_request"]["head"]["ref"], "feature");
    assert!(ctx["gitea_runtime_token"].is_string());
}
