//! A fake Gitea that speaks the runner protocol like the real server (§3, §10), for tests.
//!
//! It serves the six Connect RPCs on `127.0.0.1`, keeps runners, queued jobs and tasks in
//! memory, and exposes hooks to queue jobs, cancel them, delete runners and inject faults.
//!
//! ```no_run
//! # async fn demo() {
//! use kiln_gitea::fake::{FakeGitea, QueuedJob};
//! let gitea = FakeGitea::start().await;
//! let job = gitea.queue_job(QueuedJob::new(
//!     "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n",
//!     "build",
//!     ["ubuntu-latest"],
//! ));
//! // … run a runner against gitea.url() …
//! let task = gitea.wait_final(job, std::time::Duration::from_secs(60)).await;
//! # }
//! ```

mod http;
mod protojson;
mod state;
mod workflow;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::proto;
use state::Db;

/// A registered runner as the fake sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerRecord {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    /// Label names (as declared, else as registered).
    pub labels: Vec<String>,
    pub version: String,
    pub ephemeral: bool,
    pub capabilities: Vec<String>,
}

/// A job to hand out to a runner.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// A whole workflow file; the payload is cut down to `job_id`.
    pub workflow_yaml: String,
    /// The YAML key of the job.
    pub job_id: String,
    /// Label names a runner must all have.
    pub runs_on: Vec<String>,
    /// `github` context keys overriding the fake's defaults.
    pub context: serde_json::Value,
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    /// Finished jobs this one needs: result and outputs.
    pub needs: BTreeMap<String, (proto::Result, BTreeMap<String, String>)>,
}

impl QueuedJob {
    pub fn new(
        workflow_yaml: impl Into<String>,
        job_id: impl Into<String>,
        runs_on: impl IntoIterator<Item = impl Into<String>>,
    ) -> QueuedJob {
        QueuedJob {
            workflow_yaml: workflow_yaml.into(),
            job_id: job_id.into(),
            runs_on: runs_on.into_iter().map(Into::into).collect(),
            context: serde_json::Value::Object(Default::default()),
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
            needs: BTreeMap::new(),
        }
    }
}

/// What the server holds about a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub task_id: i64,
    pub token: String,
    /// `Unspecified` while running.
    pub result: proto::Result,
    /// Unix seconds.
    pub started: Option<i64>,
    pub stopped: Option<i64>,
    pub steps: Vec<StepRecord>,
    pub outputs: BTreeMap<String, String>,
    /// Log row contents in index order.
    pub rows: Vec<String>,
    pub archived: bool,
    pub update_task_calls: usize,
}

impl TaskRecord {
    /// Rows of step `index` according to its reported `log_index`/`log_length`.
    pub fn step_rows(&self, index: usize) -> &[String] {
        let Some(step) = self.steps.get(index) else {
            return &[];
        };
        let start = (step.log_index.max(0) as usize).min(self.rows.len());
        let end = (start + step.log_length.max(0) as usize).min(self.rows.len());
        &self.rows[start..end]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub index: usize,
    /// Display name: `name`, `Run <first line of run>` or `Run <uses>`.
    pub name: String,
    pub result: proto::Result,
    pub log_index: i64,
    pub log_length: i64,
    pub started: Option<i64>,
    pub stopped: Option<i64>,
}

/// Misbehaviour to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Behave normally (does not change the error style).
    None,
    /// Every RPC gets a plain HTTP 503, as from a proxy in front of a down Gitea.
    Outage,
    /// The next `times` calls of `rpc` (a method name like `"UpdateLog"`; `None` = any) fail with
    /// HTTP 500 `internal`; afterwards the fault clears itself.
    Http500 { rpc: Option<String>, times: usize },
    /// Hold every reply this long; past the caller's `Connect-Timeout-Ms` the call is answered
    /// `deadline_exceeded` without having been handled.
    Delay(Duration),
    /// The next `times` calls of `rpc` (`None` = any) are handled in full, but the reply is lost:
    /// the caller sees HTTP 503. Models a response dropped by the network after the commit.
    LoseReply { rpc: Option<String>, times: usize },
    /// Old Gitea's error style: `unknown`/HTTP 500 with `rpc error: code = X desc = …` text.
    /// Kept independently of the other faults.
    LegacyErrors(bool),
}

pub(crate) struct Shared {
    db: Mutex<Db>,
    fault: Mutex<Fault>,
    legacy_errors: Mutex<bool>,
    calls: Mutex<Vec<String>>,
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge the other assertions.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake server; shuts down on drop.
pub struct FakeGitea {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitea {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGitea {
    /// Starts serving on `127.0.0.1` at a free port.
    pub async fn start() -> FakeGitea {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Gitea on loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            db: Mutex::new(Db::new(url.clone())),
            fault: Mutex::new(Fault::None),
            legacy_errors: Mutex::new(false),
            calls: Mutex::new(Vec::new()),
        });
        let app = http::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitea {
            url,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A valid instance-wide registration token (40 alphanumerics).
    pub fn registration_token(&self) -> String {
        self.shared.db().registration_token.clone()
    }

    pub fn runners(&self) -> Vec<RunnerRecord> {
        self.shared
            .db()
            .runners
            .iter()
            .map(|r| r.record.clone())
            .collect()
    }

    /// Queues a job (it starts waiting, bumping the tasks version). Returns the job id.
    ///
    /// Panics if the workflow does not parse or lacks `job.job_id`: that is a broken test.
    pub fn queue_job(&self, job: QueuedJob) -> i64 {
        let parsed = workflow::parse_job(&job.workflow_yaml, &job.job_id)
            .unwrap_or_else(|e| panic!("FakeGitea::queue_job: {e}"));
        self.shared.db().queue_job(job, parsed)
    }

    /// Snapshot of the task created for a job, once a runner claimed it.
    pub fn task(&self, job_id: i64) -> Option<TaskRecord> {
        self.shared
            .db()
            .task_of_job(job_id)
            .map(|t| t.record.clone())
    }

    /// Waits until the job's task is final and the runner is done with it: it reported a final
    /// result itself or closed the log. A task cancelled by the server counts only once the
    /// runner has caught up. `None` on timeout.
    pub async fn wait_final(&self, job_id: i64, timeout: Duration) -> Option<TaskRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = self.shared.db().task_of_job(job_id) {
                if t.record.result != proto::Result::Unspecified
                    && (t.runner_reported_final || t.record.archived)
                {
                    return Some(t.record.clone());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancels a job as a user would in the UI.
    pub fn cancel(&self, job_id: i64) {
        self.shared.db().cancel(job_id);
    }

    pub fn set_fault(&self, fault: Fault) {
        match fault {
            Fault::LegacyErrors(on) => {
                *self
                    .shared
                    .legacy_errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = on
            }
            other => *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = other,
        }
    }

    /// Removes a runner as an admin would; its credentials stop working at once.
    pub fn delete_runner(&self, uuid: &str) {
        self.shared.db().runners.retain(|r| r.record.uuid != uuid);
    }

    /// RPC method names received, in order (`"Ping"`, `"FetchTask"`, …).
    pub fn calls(&self) -> Vec<String> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current tasks version.
    pub fn tasks_version(&self) -> i64 {
        self.shared.db().tasks_version
    }

    /// How many FetchTask calls went past the version gate and looked for a job.
    pub fn task_queries(&self) -> usize {
        self.shared.db().task_queries
    }

    /// Capabilities announced in Declare's `X-Gitea-Actions-Capabilities` header (default none).
    pub fn set_capabilities(&self, caps: &[&str]) {
        self.shared.db().capabilities = caps.iter().map(|s| s.to_string()).collect();
    }
}
