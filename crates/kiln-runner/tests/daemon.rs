//! The daemon against the fake Gitea: registration, tasks, logs, results, capacity, cancellation,
//! drain, outages.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{final_task, job, step_rows, Runner};
use kiln_gitea::fake::{FakeGitea, Fault, QueuedJob};
use kiln_gitea::proto;
use kiln_runner::register::{register, RegisterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_runs_and_everything_is_reported() {
    let gitea = FakeGitea::start().await;
    let runner = Runner::registered(&gitea, &["linux:host"]).await;
    let mut j = job(
        r#"
name: CI
on: push
jobs:
  build:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - name: Say hello
        run: |
          echo "hello from ${{ github.repository }} token=${{ secrets.GITHUB_TOKEN }}"
          echo "secret is ${{ secrets.DEPLOY_KEY }}"
      - id: v
        run: echo "version=1.2.3" >> "$GITHUB_OUTPUT"
      - name: Soft failure
        run: exit 2
        continue-on-error: true
      - name: Skipped
        if: failure()
        run: echo never
"#,
        "build",
    );
    j.secrets
        .insert("DEPLOY_KEY".into(), "hunter2-secret".into());
    let id = gitea.queue_job(j);
    let (shutdown, handle) = runner.start();
    let task = final_task(&gitea, id, 60).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();

    let all = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Success, "{all}");
    assert!(task.archived, "the log was closed with no_more");
    assert_eq!(
        task.outputs.get("version").map(String::as_str),
        Some("1.2.3")
    );
    assert!(
        task.rows[0].contains("received task") && task.rows[0].contains("job build"),
        "{all}"
    );
    // A failed continue-on-error step is reported with its outcome, as act_runner does: red in
    // Gitea while the job succeeds.
    let results: Vec<proto::Result> = task.steps.iter().map(|s| s.result).collect();
    assert_eq!(
        results,
        vec![
            proto::Result::Success,
            proto::Result::Success,
            proto::Result::Failure,
            proto::Result::Skipped
        ]
    );
    let hello = step_rows(&task, 0).join("\n");
    assert!(hello.contains("hello from"), "{hello}");
    assert!(hello.contains("secret is ***"), "{hello}");
    assert!(
        !all.contains("hunter2-secret") && !all.contains(&task.token),
        "secrets leaked:\n{all}"
    );
    assert!(
        step_rows(&task, 2).join("\n").contains("exit code 2"),
        "{all}"
    );
    // The set-up section: act_runner's first and last rows.
    let setup = &task.rows[..task.steps[0].log_index as usize];
    assert_eq!(
        setup.last().map(String::as_str),
        Some("Complete job name: build"),
        "{all}"
    );
    // Each step opens with act_runner's header group.
    assert_eq!(
        step_rows(&task, 0)[0],
        "::group::Run echo \"hello from owner/repo token=***\"",
        "{all}"
    );
    // Step ranges are contiguous and in order; set-up rows come first, the job result last.
    let mut end = task.steps[0].log_index;
    assert!(end > 0);
    for s in &task.steps {
        assert_eq!(s.log_index, end, "{:?}", task.steps);
        end += s.log_length;
    }
    assert!(
        task.rows.last().unwrap().is_empty()
            || task.rows.iter().rev().take(3).any(|r| r == "Job succeeded"),
        "{all}"
    );
    assert!(task.stopped.is_some() && task.started.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_bounds_concurrent_jobs() {
    let gitea = FakeGitea::start().await;
    let mut runner = Runner::registered(&gitea, &["linux:host"]).await;
    runner.config.runner.capacity = 2;
    let log = runner.path("concurrency.log");
    let yaml = format!(
        "on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: |\n          echo start $(date +%s.%N) >> {l}\n          sleep 1.5\n          echo end $(date +%s.%N) >> {l}\n",
        l = log.display()
    );
    let ids: Vec<i64> = (0..3).map(|_| gitea.queue_job(job(&yaml, "j"))).collect();
    let (shutdown, handle) = runner.start();
    for id in &ids {
        assert_eq!(
            final_task(&gitea, *id, 60).await.result,
            proto::Result::Success
        );
    }
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    // Replay the start/end events: never more than two at once, and two did overlap.
    let mut events: Vec<(f64, i32)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let (kind, t) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), if kind == "start" { 1 } else { -1 })
        })
        .collect();
    events.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut max) = (0, 0);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    assert_eq!(max, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_from_gitea_kills_the_step() {
    let gitea = FakeGitea::start().await;
    let runner = Runner::registered(&gitea, &["linux:host"]).await;
    let marker = runner.path("survivor");
    let yaml = format!(
        "on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: |\n          (sleep 4; touch {m}) &\n          echo working\n          sleep 60\n      - run: echo not reached\n",
        m = marker.display()
    );
    let id = gitea.queue_job(job(&yaml, "j"));
    let (shutdown, handle) = runner.start();
    let started = Instant::now();
    loop {
        if gitea
            .task(id)
            .is_some_and(|t| t.rows.iter().any(|r| r.contains("working")))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the step never started: {:?}",
            gitea.task(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gitea.cancel(id);
    let task = final_task(&gitea, id, 60).await;
    assert_eq!(task.result, proto::Result::Cancelled);
    assert_eq!(
        task.steps[0].result,
        proto::Result::Cancelled,
        "{:?}",
        task.steps
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancellation took {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!marker.exists(), "a process of the cancelled step survived");
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_cancels() {
    let gitea = FakeGitea::start().await;
    let mut runner = Runner::registered(&gitea, &["linux:host"]).await;
    runner.config.runner.shutdown_timeout = Duration::from_secs(30);
    let short = gitea.queue_job(job("on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: sleep 1; echo finished\n", "j"));
    let (shutdown, handle) = runner.start();
    while gitea.task(short).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    // Queued after the shutdown began: must not be taken.
    let late = gitea.queue_job(job(
        "on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: echo late\n",
        "j",
    ));
    handle.await.unwrap().unwrap();
    assert_eq!(gitea.task(short).unwrap().result, proto::Result::Success);
    assert!(
        gitea.task(late).is_none(),
        "a task was taken during shutdown"
    );

    // With no grace the running job is cancelled and reported as such.
    runner.config.runner.shutdown_timeout = Duration::ZERO;
    let long = gitea.queue_job(job("on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: echo begun; sleep 60\n", "j"));
    let (shutdown, handle) = runner.start();
    let t0 = Instant::now();
    while !gitea
        .task(long)
        .is_some_and(|t| t.rows.iter().any(|r| r.contains("begun")))
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let task = gitea.task(long).unwrap();
    assert_eq!(task.result, proto::Result::Cancelled, "{:?}", task);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_and_duplicates_no_log_row() {
    let gitea = FakeGitea::start().await;
    let runner = Runner::registered(&gitea, &["linux:host"]).await;
    let outage = Duration::from_secs(60);
    // Prints a numbered line twice a second for longer than the outage lasts.
    let yaml = "on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: for i in $(seq 1 150); do echo \"line $i\"; sleep 0.5; done\n";
    let id = gitea.queue_job(job(yaml, "j"));
    let (shutdown, handle) = runner.start();
    let t0 = Instant::now();
    while !gitea
        .task(id)
        .is_some_and(|t| t.rows.iter().any(|r| r == "line 3"))
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gitea.set_fault(Fault::Outage);
    tokio::time::sleep(outage).await;
    gitea.set_fault(Fault::None);
    let task = final_task(&gitea, id, 120).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(task.result, proto::Result::Success);
    let lines: Vec<&String> = task
        .rows
        .iter()
        .filter(|r| r.starts_with("line "))
        .collect();
    let expected: Vec<String> = (1..=150).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected.iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_the_registration_and_bad_tasks_do_not_stop_the_daemon() {
    let gitea = FakeGitea::start().await;
    let runner = Runner::registered(&gitea, &["linux:host"]).await;
    let broken = gitea.queue_job(QueuedJob {
        // An unknown function in the second step: the job fails before its first step runs.
        workflow_yaml: "on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: echo first-step-ran\n      - run: echo ${{ noSuchFunction('x') }}\n"
            .into(),
        ..job("", "j")
    });
    let good = gitea.queue_job(job(
        "on: push\njobs:\n  j:\n    runs-on: linux\n    steps:\n      - run: echo fine\n",
        "j",
    ));
    for _ in 0..2 {
        let (shutdown, handle) = runner.start();
        let task = final_task(&gitea, broken, 30).await;
        assert_eq!(task.result, proto::Result::Failure);
        assert!(
            task.rows
                .iter()
                .any(|r| r.contains("Unrecognized function: 'noSuchFunction'")
                    && r.contains("jobs.j.steps[1].run")),
            "{:?}",
            task.rows
        );
        assert!(
            !task.rows.iter().any(|r| r == "first-step-ran"),
            "{:?}",
            task.rows
        );
        assert_eq!(
            final_task(&gitea, good, 30).await.result,
            proto::Result::Success
        );
        shutdown.cancel();
        handle.await.unwrap().unwrap();
    }
    assert_eq!(gitea.runners().len(), 1, "the restart registered again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error() {
    let gitea = FakeGitea::start().await;
    let dir = tempfile::tempdir().unwrap();
    let err = register(RegisterOptions {
        instance: gitea.url(),
        token: "not-a-token".into(),
        name: "x".into(),
        labels: vec![],
        ephemeral: false,
        file: dir.path().join(".runner"),
        insecure: false,
        version: "kiln-test".into(),
        ping_attempts: 1,
    })
    .await
    .unwrap_err();
    assert!(
        err.contains("registration failed") && err.contains("token"),
        "{err}"
    );
    assert!(!Path::new(&dir.path().join(".runner")).exists());

    let runner = Runner::registered(&gitea, &["linux:host"]).await;
    let registration = kiln_gitea::Registration::load(&runner.config.runner.file).unwrap();
    gitea.delete_runner(&registration.uuid);
    let (_shutdown, handle) = runner.start();
    let err = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.contains("run `kiln register` again"), "{err}");
}
