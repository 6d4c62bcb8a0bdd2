//! The client against the fake Gitea: every RPC's semantics as a runner sees them.
#![cfg(feature = "fake")]

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_gitea::fake::{FakeGitea, Fault, QueuedJob};
use kiln_gitea::proto::{self, Result as Outcome};
use kiln_gitea::{Client, ClientOptions, Code};

const WORKFLOW: &str = r#"
name: CI
on: push
env:
  TOP: "1"
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Test
        run: cargo test
  lint:
    runs-on: [self-hosted, arm64]
    steps:
      - run: |
          cargo clippy
          echo done
"#;

fn options() -> ClientOptions {
    ClientOptions {
        version: "v0.0.0-test".into(),
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

async fn register(gitea: &FakeGitea, labels: &[&str]) -> Client {
    let client = Client::new(&gitea.url(), options()).unwrap();
    let resp = client
        .register(proto::RegisterRequest {
            name: "runner-1".into(),
            token: gitea.registration_token(),
            version: "v0.0.0-test".into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let runner = resp.runner.unwrap();
    client.with_credentials(&runner.uuid, &runner.token)
}

async fn fetch(client: &Client, version: i64) -> proto::FetchTaskResponse {
    client
        .fetch_task(
            proto::FetchTaskRequest {
                tasks_version: version,
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap()
}

/// Registers, queues `build` and claims it.
async fn running_task(gitea: &FakeGitea) -> (Client, i64, proto::Task) {
    let client = register(gitea, &["ubuntu-latest"]).await;
    let job = gitea.queue_job(QueuedJob::new(WORKFLOW, "build"));
    let task = fetch(&client, 0).await.task.expect("a task");
    (client, job, task)
}

fn row(content: &str) -> proto::LogRow {
    proto::LogRow {
        time: Some(proto::now()),
        content: content.into(),
    }
}

fn log(task_id: i64, index: i64, contents: &[&str], no_more: bool) -> proto::UpdateLogRequest {
    proto::UpdateLogRequest {
        task_id,
        index,
        rows: contents.iter().map(|c| row(c)).collect(),
        no_more,
    }
}

#[tokio::test]
async fn ping_answers_hello() {
    let gitea = FakeGitea::start().await;
    let client = Client::new(&gitea.url(), options()).unwrap();
    assert_eq!(client.ping("kiln").await.unwrap().data, "Hello, kiln!");
    assert_eq!(gitea.calls(), ["Ping"]);
}

#[tokio::test]
async fn register_with_good_token_creates_runner() {
    let gitea = FakeGitea::start().await;
    let client = Client::new(&format!("{}/", gitea.url()), options()).unwrap();
    let resp = client
        .register(proto::RegisterRequest {
            name: "r1".into(),
            token: gitea.registration_token(),
            version: "v1".into(),
            labels: vec!["ubuntu-latest".into()],
            ephemeral: true,
            capabilities: vec!["cancelling".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let runner = resp.runner.unwrap();
    assert_eq!(runner.name, "r1");
    assert_eq!(runner.token.len(), 40);
    assert!(runner.ephemeral);
    let runners = gitea.runners();
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0].uuid, runner.uuid);
    assert_eq!(runners[0].labels, ["ubuntu-latest"]);
    assert_eq!(runners[0].capabilities, ["cancelling"]);
    assert_eq!(gitea.registration_token().len(), 40);
}

#[tokio::test]
async fn register_with_bad_token_fails_clearly() {
    let gitea = FakeGitea::start().await;
    let client = Client::new(&gitea.url(), options()).unwrap();
    let err = client
        .register(proto::RegisterRequest {
            name: "r1".into(),
            token: "not-the-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message.contains("registration token not found"),
        "{err}"
    );
    assert!(!err.is_unauthenticated());
    assert!(gitea.runners().is_empty());
}

#[tokio::test]
async fn declare_replaces_labels_and_reports_capabilities() {
    let gitea = FakeGitea::start().await;
    gitea.set_capabilities(&["job-summary", "other"]);
    let client = register(&gitea, &["old"]).await;
    let (resp, caps) = client
        .declare(proto::DeclareRequest {
            version: "v2".into(),
            labels: vec!["ubuntu-latest".into(), "linux".into()],
            capabilities: vec![],
        })
        .await
        .unwrap();
    assert_eq!(resp.runner.unwrap().labels, ["ubuntu-latest", "linux"]);
    assert_eq!(caps, ["job-summary", "other"]);
    let r = &gitea.runners()[0];
    assert_eq!(r.version, "v2");
    assert_eq!(r.labels, ["ubuntu-latest", "linux"]);
}

#[tokio::test]
async fn tasks_version_gates_the_job_query() {
    let gitea = FakeGitea::start().await;
    let client = register(&gitea, &["ubuntu-latest"]).await;

    // Nothing queued: 0 gets the latest version, never 0.
    let first = fetch(&client, 0).await;
    assert!(first.task.is_none());
    assert_eq!(first.tasks_version, 1);
    assert_eq!(gitea.task_queries(), 1);

    // Same version: answered without looking for jobs.
    let again = fetch(&client, first.tasks_version).await;
    assert_eq!(again.tasks_version, 1);
    assert_eq!(gitea.task_queries(), 1);

    // Enqueueing bumps the version; an up-to-date poll with the old number finds the job.
    gitea.queue_job(QueuedJob::new(WORKFLOW, "build"));
    let stale = fetch(&client, 2).await;
    assert!(stale.task.is_none(), "version 2 is current, no query");
    let found = fetch(&client, first.tasks_version).await;
    assert!(found.task.is_some());
    assert_eq!(found.tasks_version, 2);

    // One job per call: the claimed job is not handed out again.
    assert!(fetch(&client, 0).await.task.is_none());
}

#[tokio::test]
async fn jobs_go_only_to_runners_with_every_label() {
    let gitea = FakeGitea::start().await;
    let client = register(&gitea, &["self-hosted"]).await;
    let lint = gitea.queue_job(QueuedJob::new(WORKFLOW, "lint"));
    assert_eq!(gitea.job(lint).unwrap().runs_on, ["self-hosted", "arm64"]);
    assert!(fetch(&client, 0).await.task.is_none());

    client
        .declare(proto::DeclareRequest {
            version: "v".into(),
            labels: vec!["self-hosted".into(), "arm64".into()],
            capabilities: vec![],
        })
        .await
        .unwrap();
    let task = fetch(&client, 0).await.task.expect("matching labels");
    let record = gitea.task(lint).unwrap();
    assert_eq!(record.task_id, task.id);
    assert_eq!(record.steps.len(), 1);
    // Gitea 1.22–1.25 name an unnamed step by act's Step.String(): the whole script.
    assert_eq!(record.steps[0].name, "cargo clippy\necho done\n");
}

#[tokio::test]
async fn update_task_copies_steps_and_acknowledges_outputs() {
    let gitea = FakeGitea::start().await;
    let (client, job, task) = running_task(&gitea).await;
    let record = gitea.task(job).unwrap();
    assert_eq!(
        record
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["actions/checkout@v4", "Test"]
    );

    let t0 = proto::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };
    let state = |result: Outcome, outputs: &[(&str, &str)]| proto::UpdateTaskRequest {
        state: Some(proto::TaskState {
            id: task.id,
            result: result as i32,
            started_at: Some(t0),
            stopped_at: (result != Outcome::Unspecified).then_some(proto::Timestamp {
                seconds: t0.seconds + 9,
                nanos: 0,
            }),
            steps: vec![
                proto::StepState {
                    id: 0,
                    result: Outcome::Success as i32,
                    started_at: Some(t0),
                    stopped_at: Some(t0),
                    log_index: 2,
                    log_length: 3,
                },
                proto::StepState {
                    id: 1,
                    result: result as i32,
                    started_at: Some(t0),
                    stopped_at: None,
                    log_index: 5,
                    log_length: 1,
                },
            ],
        }),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };

    let resp = client
        .update_task(state(Outcome::Unspecified, &[("a", "1")]))
        .await
        .unwrap();
    assert_eq!(resp.state.as_ref().unwrap().result, 0);
    assert_eq!(resp.state.as_ref().unwrap().id, task.id);
    assert_eq!(resp.sent_outputs, ["a"]);

    // First write wins; sent_outputs lists every stored key.
    let resp = client
        .update_task(state(Outcome::Success, &[("a", "changed"), ("b", "2")]))
        .await
        .unwrap();
    assert_eq!(resp.state.unwrap().result, Outcome::Success as i32);
    assert_eq!(resp.sent_outputs, ["a", "b"]);

    let record = gitea.wait_final(job, Duration::from_secs(1)).await.unwrap();
    assert_eq!(record.result, Outcome::Success);
    assert_eq!(record.outputs["a"], "1");
    assert_eq!(record.outputs["b"], "2");
    assert_eq!(record.stopped, Some(t0.seconds + 9));
    assert_eq!(record.steps[0].log_index, 2);
    assert_eq!(record.steps[0].log_length, 3);
    assert_eq!(record.steps[1].result, Outcome::Success);
    assert_eq!(record.update_task_calls, 2);

    // Final state is sticky.
    let resp = client
        .update_task(state(Outcome::Failure, &[]))
        .await
        .unwrap();
    assert_eq!(resp.state.unwrap().result, Outcome::Success as i32);
    assert_eq!(gitea.task(job).unwrap().result, Outcome::Success);
}

#[tokio::test]
async fn cancelled_task_replies_cancelled() {
    let gitea = FakeGitea::start().await;
    let (client, job, task) = running_task(&gitea).await;
    gitea.cancel(job);
    let resp = client
        .update_task(proto::UpdateTaskRequest {
            state: Some(proto::TaskState {
                id: task.id,
                ..Default::default()
            }),
            outputs: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert_eq!(resp.state.unwrap().result, Outcome::Cancelled as i32);
    let record = gitea.task(job).unwrap();
    assert!(record.steps.iter().all(|s| s.result == Outcome::Cancelled));
    // The runner has not caught up yet.
    assert!(gitea
        .wait_final(job, Duration::from_millis(50))
        .await
        .is_none());
    client
        .update_log(log(task.id, 0, &["cancelled"], true))
        .await
        .unwrap();
    assert!(gitea
        .wait_final(job, Duration::from_secs(1))
        .await
        .is_some());
}

#[tokio::test]
async fn update_log_acks_trims_overlap_and_ignores_gaps() {
    let gitea = FakeGitea::start().await;
    let (client, job, task) = running_task(&gitea).await;

    let ack = |r: proto::UpdateLogResponse| r.ack_index;
    assert_eq!(
        ack(client
            .update_log(log(task.id, 0, &["a", "b"], false))
            .await
            .unwrap()),
        2
    );
    // Overlap: rows already held are dropped.
    assert_eq!(
        ack(client
            .update_log(log(task.id, 1, &["b", "c"], false))
            .await
            .unwrap()),
        3
    );
    // Gap: nothing written, old ack repeated.
    assert_eq!(
        ack(client
            .update_log(log(task.id, 5, &["x"], false))
            .await
            .unwrap()),
        3
    );
    // All duplicates: same.
    assert_eq!(
        ack(client
            .update_log(log(task.id, 0, &["a"], false))
            .await
            .unwrap()),
        3
    );
    // Empty rows ignore no_more.
    assert_eq!(
        ack(client.update_log(log(task.id, 3, &[], true)).await.unwrap()),
        3
    );
    assert!(!gitea.task(job).unwrap().archived);

    // The final call with rows archives; later appends fail as archived.
    assert_eq!(
        ack(client
            .update_log(log(task.id, 3, &["d"], true))
            .await
            .unwrap()),
        4
    );
    let record = gitea.task(job).unwrap();
    assert!(record.archived);
    assert_eq!(record.rows, ["a", "b", "c", "d"]);
    let err = client
        .update_log(log(task.id, 4, &["e"], false))
        .await
        .unwrap_err();
    assert!(err.is_archived(), "{err}");
    assert!(!err.is_transient());
    assert_eq!(err.code, Code::AlreadyExists);
    // A duplicate resend after archiving is still just acked.
    assert_eq!(
        ack(client
            .update_log(log(task.id, 3, &["d"], true))
            .await
            .unwrap()),
        4
    );
}

#[tokio::test]
async fn archived_log_in_legacy_style_is_recognised() {
    let gitea = FakeGitea::start().await;
    let (client, _job, task) = running_task(&gitea).await;
    client
        .update_log(log(task.id, 0, &["a"], true))
        .await
        .unwrap();
    gitea.set_fault(Fault::LegacyErrors(true));
    let err = client
        .update_log(log(task.id, 1, &["b"], false))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unknown);
    assert_eq!(err.http_status, Some(500));
    assert!(err.is_archived(), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn wrong_credentials_are_unauthenticated_in_both_styles() {
    let gitea = FakeGitea::start().await;
    let good = register(&gitea, &["ubuntu-latest"]).await;
    let bad = good.with_credentials(&gitea.runners()[0].uuid, "0000");
    let err = fetch_err(&bad).await;
    assert_eq!(err.code, Code::Unauthenticated);
    assert_eq!(err.http_status, Some(401));
    assert!(err.is_unauthenticated());
    assert!(!err.is_transient());

    gitea.set_fault(Fault::LegacyErrors(true));
    let err = fetch_err(&bad).await;
    assert_eq!(err.code, Code::Unknown);
    assert!(err.message.contains("unregistered runner"), "{err}");
    assert!(err.is_unauthenticated());
    assert!(!err.is_transient());

    // A deleted runner's credentials stop working too.
    gitea.set_fault(Fault::LegacyErrors(false));
    fetch(&good, 0).await;
    gitea.delete_runner(&gitea.runners()[0].uuid);
    assert!(fetch_err(&good).await.is_unauthenticated());
}

async fn fetch_err(client: &Client) -> kiln_gitea::ClientError {
    client
        .fetch_task(
            proto::FetchTaskRequest { tasks_version: 0 },
            Duration::from_secs(5),
        )
        .await
        .unwrap_err()
}

#[tokio::test]
async fn outage_gives_transient_errors() {
    let gitea = FakeGitea::start().await;
    let client = register(&gitea, &["ubuntu-latest"]).await;
    gitea.set_fault(Fault::Outage);
    let err = fetch_err(&client).await;
    assert_eq!(err.code, Code::Unavailable);
    assert_eq!(err.http_status, Some(503));
    assert!(err.is_transient());
    assert!(!err.is_unauthenticated());
    let err = client.ping("x").await.unwrap_err();
    assert!(err.is_transient());

    gitea.set_fault(Fault::None);
    fetch(&client, 0).await;
}

#[tokio::test]
async fn unreachable_server_is_unavailable_with_reason() {
    let gitea = FakeGitea::start().await;
    let url = gitea.url();
    drop(gitea);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = Client::new(&url, options()).unwrap();
    let err = client.ping("x").await.unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert_eq!(err.http_status, None);
    assert!(err.is_transient());
    assert!(err.message.to_lowercase().contains("connect"), "{err}");
}

#[tokio::test]
async fn injected_500s_clear_after_their_count() {
    let gitea = FakeGitea::start().await;
    let client = register(&gitea, &["ubuntu-latest"]).await;
    gitea.set_fault(Fault::Http500 {
        rpc: Some("FetchTask".into()),
        times: 2,
    });
    client.ping("not affected").await.unwrap();
    for _ in 0..2 {
        let err = fetch_err(&client).await;
        assert_eq!(err.http_status, Some(500));
        assert!(err.is_transient());
    }
    fetch(&client, 0).await;
    assert_eq!(
        gitea.calls(),
        ["Register", "Ping", "FetchTask", "FetchTask", "FetchTask"]
    );
}

#[tokio::test]
async fn delay_beyond_fetch_timeout_is_an_empty_answer() {
    let gitea = FakeGitea::start().await;
    let client = register(&gitea, &["ubuntu-latest"]).await;
    let job = gitea.queue_job(QueuedJob::new(WORKFLOW, "build"));
    gitea.set_fault(Fault::Delay(Duration::from_secs(3)));
    let resp = client
        .fetch_task(
            proto::FetchTaskRequest { tasks_version: 7 },
            Duration::from_millis(200),
        )
        .await
        .unwrap();
    assert!(resp.task.is_none());
    assert_eq!(resp.tasks_version, 7);
    // The job was not claimed behind the runner's back.
    gitea.set_fault(Fault::None);
    assert!(gitea.task(job).is_none());
    assert!(fetch(&client, 0).await.task.is_some());
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let gitea = FakeGitea::start().await;
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/actions/runner.v1.RunnerService/FetchSingleTask",
            gitea.url()
        ))
        .header("content-type", "application/proto")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let err = kiln_gitea::ClientError::from_response(404, &resp.bytes().await.unwrap());
    assert_eq!(err.code, Code::Unimplemented);
}

#[tokio::test]
async fn json_requests_are_accepted() {
    let gitea = FakeGitea::start().await;
    let http = reqwest::Client::new();
    let base = format!("{}/api/actions", gitea.url());
    let resp: serde_json::Value = http
        .post(format!("{base}/runner.v1.RunnerService/Register"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"name": "j", "token": gitea.registration_token(), "labels": ["ubuntu-latest"]})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = resp["runner"]["uuid"].as_str().unwrap();
    let token = resp["runner"]["token"].as_str().unwrap();
    gitea.queue_job(QueuedJob::new(WORKFLOW, "build"));
    let resp: serde_json::Value = http
        .post(format!("{base}/runner.v1.RunnerService/FetchTask"))
        .header("content-type", "application/json")
        .header("x-runner-uuid", uuid)
        .header("x-runner-token", token)
        .body(r#"{"tasksVersion":"0"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["tasksVersion"], "2");
    assert!(resp["task"]["workflowPayload"].is_string());
    assert_eq!(resp["task"]["context"]["event_name"], "push");
}

#[tokio::test]
async fn ephemeral_runner_gets_one_task_and_is_removed_after_it() {
    let gitea = FakeGitea::start().await;
    let client = Client::new(&gitea.url(), options()).unwrap();
    let runner = client
        .register(proto::RegisterRequest {
            name: "eph".into(),
            token: gitea.registration_token(),
            labels: vec!["ubuntu-latest".into()],
            ephemeral: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .runner
        .unwrap();
    let client = client.with_credentials(&runner.uuid, &runner.token);
    gitea.queue_job(QueuedJob::new(WORKFLOW, "build"));
    gitea.queue_job(QueuedJob::new(WORKFLOW, "build"));
    let task = fetch(&client, 0).await.task.unwrap();
    assert!(fetch(&client, 0).await.task.is_none());
    client
        .update_task(proto::UpdateTaskRequest {
            state: Some(proto::TaskState {
                id: task.id,
                result: Outcome::Success as i32,
                ..Default::default()
            }),
            outputs: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert!(fetch_err(&client).await.is_unauthenticated());
}

#[tokio::test]
async fn lost_log_reply_is_recovered_by_resending_from_the_old_index() {
    let gitea = FakeGitea::start().await;
    let (client, job, task) = running_task(&gitea).await;
    gitea.set_fault(Fault::LoseReply {
        rpc: Some("UpdateLog".into()),
        times: 1,
    });
    let err = client
        .update_log(log(task.id, 0, &["a", "b"], false))
        .await
        .unwrap_err();
    assert!(err.is_transient());
    // The rows were stored; resending them with one more is trimmed to the new row.
    let ack = client
        .update_log(log(task.id, 0, &["a", "b", "c"], false))
        .await
        .unwrap()
        .ack_index;
    assert_eq!(ack, 3);
    assert_eq!(gitea.task(job).unwrap().rows, ["a", "b", "c"]);
}
