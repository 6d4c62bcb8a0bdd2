//! The fake's public records and inputs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::proto;

/// A registered runner as the fake sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerRecord {
    /// Database id.
    pub id: i64,
    /// The runner's UUID (its `x-runner-uuid`).
    pub uuid: String,
    /// Registered name (cut to 255 bytes).
    pub name: String,
    /// Label names (as declared, else as registered).
    pub labels: Vec<String>,
    /// Version it registered or declared.
    pub version: String,
    /// Ephemeral runners get one task and are deleted once it is done.
    pub ephemeral: bool,
    /// Capabilities it announced.
    pub capabilities: Vec<String>,
}

/// A workflow run to create, as Gitea creates one when an event triggers a workflow.
///
/// The trigger (`on:`) is not matched against the event: the run is created regardless.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    /// The whole workflow file.
    pub workflow_yaml: String,
    /// The workflow file name: `github.workflow` (default `ci.yml`).
    pub workflow_file: String,
    /// The triggering event: `github.event_name` (default `push`).
    pub event_name: String,
    /// The event payload: `github.event` (default: a push to `refs/heads/main`).
    pub event: serde_json::Value,
    /// `github` context keys laid over what the fake generates. `ref`, `sha`, `actor` and
    /// `repository` also set the run's own values (so `ref_name`, `ref_type` and
    /// `repository_owner` follow).
    pub context: serde_json::Value,
    /// Repository secrets (names are upper-cased and checked as Gitea checks them).
    pub secrets: BTreeMap<String, String>,
    /// Repository variables.
    pub vars: BTreeMap<String, String>,
}

impl QueuedRun {
    /// A `push` run of `workflow_yaml` as `ci.yml`, with no secrets or variables.
    pub fn new(workflow_yaml: impl Into<String>) -> QueuedRun {
        QueuedRun {
            workflow_yaml: workflow_yaml.into(),
            workflow_file: "ci.yml".into(),
            event_name: "push".into(),
            event: super::context::default_event(),
            context: serde_json::Value::Object(Default::default()),
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
        }
    }
}

/// A shortcut for one job: its whole workflow is queued as a run (every job of it, as Gitea
/// would), and the job's first matrix combination is the one the caller follows.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// A whole workflow file.
    pub workflow_yaml: String,
    /// The YAML key of the job to follow.
    pub job_id: String,
    /// `github` context keys overriding the fake's defaults (see [`QueuedRun::context`]);
    /// `event_name`, `event` and `workflow` here also set the run's.
    pub context: serde_json::Value,
    /// Repository secrets.
    pub secrets: BTreeMap<String, String>,
    /// Repository variables.
    pub vars: BTreeMap<String, String>,
}

impl QueuedJob {
    /// Job `job_id` of `workflow_yaml`, with no secrets, variables or context overrides.
    pub fn new(workflow_yaml: impl Into<String>, job_id: impl Into<String>) -> QueuedJob {
        QueuedJob {
            workflow_yaml: workflow_yaml.into(),
            job_id: job_id.into(),
            context: serde_json::Value::Object(Default::default()),
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
        }
    }

    /// The run this job is queued as.
    pub(crate) fn into_run(self) -> QueuedRun {
        let mut run = QueuedRun::new(self.workflow_yaml);
        if let Some(e) = self.context.get("event_name").and_then(|v| v.as_str()) {
            run.event_name = e.to_string();
        }
        if let Some(e) = self.context.get("event").filter(|v| v.is_object()) {
            run.event = e.clone();
        }
        if let Some(w) = self.context.get("workflow").and_then(|v| v.as_str()) {
            run.workflow_file = w.to_string();
        }
        run.context = self.context;
        run.secrets = self.secrets;
        run.vars = self.vars;
        run
    }
}

/// A job's status (`models/actions/status.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting for the jobs it needs.
    Blocked,
    /// Ready for a runner.
    Waiting,
    /// A runner took it.
    Running,
    /// Finished successfully.
    Success,
    /// Finished with a failure.
    Failure,
    /// Cancelled by a user (or its task was).
    Cancelled,
    /// Never ran: a job it needs did not succeed (and it has no `if:`), or the runner skipped it.
    Skipped,
}

impl JobStatus {
    /// Success, failure, cancelled or skipped (`Status.IsDone`).
    pub fn is_done(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failure | JobStatus::Cancelled | JobStatus::Skipped
        )
    }

    /// Gitea's number for the status (the same as `Result` for the final ones).
    pub(crate) fn gitea_code(self) -> i32 {
        match self {
            JobStatus::Success => 1,
            JobStatus::Failure => 2,
            JobStatus::Cancelled => 3,
            JobStatus::Skipped => 4,
            JobStatus::Waiting => 5,
            JobStatus::Running => 6,
            JobStatus::Blocked => 7,
        }
    }

    /// The job status a final task result gives (`Status(state.Result)`).
    pub(crate) fn from_result(r: proto::Result) -> Option<JobStatus> {
        Some(match r {
            proto::Result::Unspecified => return None,
            proto::Result::Success => JobStatus::Success,
            proto::Result::Failure => JobStatus::Failure,
            proto::Result::Cancelled => JobStatus::Cancelled,
            proto::Result::Skipped => JobStatus::Skipped,
        })
    }
}

/// A job of a run (`ActionRunJob`): one per YAML job and matrix combination.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Database id (what [`super::FakeGitea::task`] and friends take).
    pub id: i64,
    /// The YAML key (`github.job`).
    pub key: String,
    /// Display name, with the matrix suffix (cut to 255 as Gitea does).
    pub name: String,
    /// Current status.
    pub status: JobStatus,
    /// Keys of the jobs it needs.
    pub needs: Vec<String>,
    /// Labels a runner must all have.
    pub runs_on: Vec<String>,
    /// Its task, once a runner took it.
    pub task_id: Option<i64>,
    /// The one-job workflow a runner gets.
    pub payload: String,
}

/// What the server holds about a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Task id.
    pub task_id: i64,
    /// The task token (40 hex).
    pub token: String,
    /// `Unspecified` while running.
    pub result: proto::Result,
    /// Unix seconds.
    pub started: Option<i64>,
    /// Unix seconds.
    pub stopped: Option<i64>,
    /// One per step of the job.
    pub steps: Vec<StepRecord>,
    /// Job outputs stored (first write wins).
    pub outputs: BTreeMap<String, String>,
    /// Log row contents in index order.
    pub rows: Vec<String>,
    /// The log was closed (`no_more`).
    pub archived: bool,
    /// How many UpdateTask calls it got.
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

/// A step row of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Position in the job's steps.
    pub index: usize,
    /// Display name as Gitea 1.22–1.25 store it: act's `Step.String()` (the `name`, else
    /// `uses`, else the whole `run` script, else the `id`), cut to 255.
    pub name: String,
    /// Reported result.
    pub result: proto::Result,
    /// First log row of the step.
    pub log_index: i64,
    /// Number of log rows of the step.
    pub log_length: i64,
    /// Unix seconds.
    pub started: Option<i64>,
    /// Unix seconds.
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
    Http500 {
        /// Method name, or any.
        rpc: Option<String>,
        /// How many calls fail.
        times: usize,
    },
    /// Hold every reply this long; past the caller's `Connect-Timeout-Ms` the call is answered
    /// `deadline_exceeded` without having been handled.
    Delay(Duration),
    /// The next `times` calls of `rpc` (`None` = any) are handled in full, but the reply is lost:
    /// the caller sees HTTP 503. Models a response dropped by the network after the commit.
    LoseReply {
        /// Method name, or any.
        rpc: Option<String>,
        /// How many replies are lost.
        times: usize,
    },
    /// Old Gitea's error style: `unknown`/HTTP 500 with `rpc error: code = X desc = …` text.
    /// Kept independently of the other faults.
    LegacyErrors(bool),
}
