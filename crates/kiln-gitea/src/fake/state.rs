//! The fake's database and the server side of each RPC (§3.2–3.6), free of HTTP.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::workflow::ParsedJob;
use super::{QueuedJob, RunnerRecord, StepRecord, TaskRecord};
use crate::proto::{self, Result as Outcome};
use crate::{json_to_struct, Code};

/// Output limits Gitea enforces (§3.5).
const MAX_OUTPUT_KEY: usize = 255;
const MAX_OUTPUT_VALUE: usize = 1024 * 1024;

/// An RPC failure as the handler decided it; the HTTP layer picks the wire style.
#[derive(Debug, Clone)]
pub(crate) struct RpcError {
    pub code: Code,
    pub message: String,
    /// Gitea returns these with `errors.New`, so they always reach the wire as `unknown`.
    pub plain: bool,
}

impl RpcError {
    fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            plain: false,
        }
    }

    fn plain(message: impl Into<String>) -> RpcError {
        RpcError {
            code: Code::Unknown,
            message: message.into(),
            plain: true,
        }
    }
}

pub(crate) struct RunnerRow {
    pub record: RunnerRecord,
    pub token: String,
    /// Ephemeral runners get one task.
    pub had_task: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobStatus {
    Waiting,
    Running,
    Done,
}

struct JobRow {
    id: i64,
    job: QueuedJob,
    parsed: ParsedJob,
    status: JobStatus,
    task_id: Option<i64>,
}

pub(crate) struct TaskRow {
    pub record: TaskRecord,
    pub job_id: i64,
    pub runner_id: i64,
    /// The runner itself sent a final result (even if the server had already ended the task).
    pub runner_reported_final: bool,
}

pub(crate) struct Db {
    base_url: String,
    pub registration_token: String,
    pub runners: Vec<RunnerRow>,
    jobs: Vec<JobRow>,
    pub tasks: BTreeMap<i64, TaskRow>,
    next_runner_id: i64,
    next_job_id: i64,
    next_task_id: i64,
    /// The instance-wide tasks version: starts at 1, bumped whenever a job starts waiting.
    pub tasks_version: i64,
    /// How many times FetchTask looked for a job (as opposed to answering from the version gate).
    pub task_queries: usize,
    pub capabilities: Vec<String>,
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    while s.len() < bytes * 2 {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(bytes * 2);
    s
}

fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in uuid::Uuid::new_v4().into_bytes() {
            // 248 = 4 × 62: rejecting the rest keeps the choice uniform.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn secs(ts: &Option<proto::Timestamp>) -> Option<i64> {
    ts.as_ref().map(|t| t.seconds).filter(|s| *s > 0)
}

impl Db {
    pub fn new(base_url: String) -> Db {
        Db {
            base_url,
            registration_token: random_alnum(40),
            runners: Vec::new(),
            jobs: Vec::new(),
            tasks: BTreeMap::new(),
            next_runner_id: 1,
            next_job_id: 1,
            next_task_id: 1,
            tasks_version: 1,
            task_queries: 0,
            capabilities: Vec::new(),
        }
    }

    /// The interceptor: which runner do these headers name? (§1.4)
    pub fn authenticate(&self, uuid: Option<&str>, token: Option<&str>) -> Result<i64, RpcError> {
        let unregistered = || RpcError::new(Code::Unauthenticated, "unregistered runner");
        let uuid = uuid.ok_or_else(unregistered)?;
        let runner = self
            .runners
            .iter()
            .find(|r| r.record.uuid == uuid)
            .ok_or_else(unregistered)?;
        if Some(runner.token.as_str()) != token {
            return Err(unregistered());
        }
        Ok(runner.record.id)
    }

    fn runner_mut(&mut self, id: i64) -> Result<&mut RunnerRow, RpcError> {
        self.runners
            .iter_mut()
            .find(|r| r.record.id == id)
            .ok_or_else(|| RpcError::new(Code::Unauthenticated, "unregistered runner"))
    }

    pub fn register(
        &mut self,
        req: proto::RegisterRequest,
    ) -> Result<proto::RegisterResponse, RpcError> {
        if req.token.is_empty() || req.name.is_empty() {
            return Err(RpcError::plain("missing runner token, name"));
        }
        if req.token != self.registration_token {
            return Err(RpcError::plain("runner registration token not found"));
        }
        let labels = if req.labels.is_empty() {
            req.agent_labels
        } else {
            req.labels
        };
        let mut name = req.name;
        if name.len() > 255 {
            let mut cut = 255;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        let record = RunnerRecord {
            id: self.next_runner_id,
            uuid: uuid::Uuid::new_v4().to_string(),
            name,
            labels,
            version: req.version,
            ephemeral: req.ephemeral,
            capabilities: req.capabilities,
        };
        self.next_runner_id += 1;
        let token = random_hex(20);
        let mut runner = wire_runner(&record);
        runner.token = token.clone();
        self.runners.push(RunnerRow {
            record,
            token,
            had_task: false,
        });
        Ok(proto::RegisterResponse {
            runner: Some(runner),
        })
    }

    pub fn declare(
        &mut self,
        runner_id: i64,
        req: proto::DeclareRequest,
    ) -> Result<proto::DeclareResponse, RpcError> {
        let row = self.runner_mut(runner_id)?;
        row.record.labels = req.labels;
        row.record.version = req.version;
        row.record.capabilities = req.capabilities;
        Ok(proto::DeclareResponse {
            runner: Some(wire_runner(&row.record)),
        })
    }

    pub fn queue_job(&mut self, job: QueuedJob, parsed: ParsedJob) -> i64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        self.jobs.push(JobRow {
            id,
            job,
            parsed,
            status: JobStatus::Waiting,
            task_id: None,
        });
        self.tasks_version += 1;
        id
    }

    pub fn fetch_task(
        &mut self,
        runner_id: i64,
        req: proto::FetchTaskRequest,
    ) -> Result<proto::FetchTaskResponse, RpcError> {
        let latest = self.tasks_version;
        let (names, used_up) = {
            let r = self.runner_mut(runner_id)?;
            (r.record.labels.clone(), r.record.ephemeral && r.had_task)
        };
        if req.tasks_version == latest || used_up {
            return Ok(proto::FetchTaskResponse {
                task: None,
                tasks_version: latest,
            });
        }
        self.task_queries += 1;
        let Some(pos) = self.jobs.iter().position(|j| {
            j.status == JobStatus::Waiting && j.job.runs_on.iter().all(|l| names.contains(l))
        }) else {
            return Ok(proto::FetchTaskResponse {
                task: None,
                tasks_version: latest,
            });
        };
        let task = self.claim(pos, runner_id);
        Ok(proto::FetchTaskResponse {
            task: Some(task),
            tasks_version: latest,
        })
    }

    fn claim(&mut self, pos: usize, runner_id: i64) -> proto::Task {
        let task_id = self.next_task_id;
        self.next_task_id += 1;
        let token = random_hex(20);
        let base_url = self.base_url.clone();
        if let Ok(r) = self.runner_mut(runner_id) {
            r.had_task = true;
        }
        let job = &mut self.jobs[pos];
        job.status = JobStatus::Running;
        job.task_id = Some(task_id);

        let steps = job
            .parsed
            .step_names
            .iter()
            .enumerate()
            .map(|(index, name)| StepRecord {
                index,
                name: name.clone(),
                result: Outcome::Unspecified,
                log_index: 0,
                log_length: 0,
                started: None,
                stopped: None,
            })
            .collect();
        let record = TaskRecord {
            task_id,
            token: token.clone(),
            result: Outcome::Unspecified,
            started: Some(now_secs()),
            stopped: None,
            steps,
            outputs: BTreeMap::new(),
            rows: Vec::new(),
            archived: false,
            update_task_calls: 0,
        };
        let context = task_context(&base_url, job.id, &job.job, task_id, &token);
        let mut secrets = job.job.secrets.clone();
        secrets.insert("GITHUB_TOKEN".into(), token.clone());
        secrets.insert("GITEA_TOKEN".into(), token.clone());
        let needs = job
            .job
            .needs
            .iter()
            .map(|(k, (result, outputs))| {
                (
                    k.clone(),
                    proto::TaskNeed {
                        outputs: outputs.clone(),
                        result: *result as i32,
                    },
                )
            })
            .collect();
        let task = proto::Task {
            id: task_id,
            workflow_payload: Some(job.parsed.payload.clone()),
            context: Some(json_to_struct(&context)),
            secrets,
            machine: String::new(),
            needs,
            vars: job.job.vars.clone(),
        };
        let job_id = job.id;
        self.tasks.insert(
            task_id,
            TaskRow {
                record,
                job_id,
                runner_id,
                runner_reported_final: false,
            },
        );
        task
    }

    fn task_of_runner(&mut self, runner_id: i64, task_id: i64) -> Result<&mut TaskRow, RpcError> {
        let row = self
            .tasks
            .get_mut(&task_id)
            .ok_or_else(|| RpcError::new(Code::NotFound, format!("task {task_id} not found")))?;
        if row.runner_id != runner_id {
            return Err(RpcError::new(
                Code::PermissionDenied,
                "invalid runner for task",
            ));
        }
        Ok(row)
    }

    pub fn update_task(
        &mut self,
        runner_id: i64,
        req: proto::UpdateTaskRequest,
    ) -> Result<proto::UpdateTaskResponse, RpcError> {
        let state = req
            .state
            .ok_or_else(|| RpcError::new(Code::InvalidArgument, "missing task state"))?;
        let row = self.task_of_runner(runner_id, state.id)?;
        let task = &mut row.record;
        task.update_task_calls += 1;
        let reported = Outcome::from_wire(state.result);
        if reported != Outcome::Unspecified {
            row.runner_reported_final = true;
        }
        let mut finished_now = false;
        if task.result == Outcome::Unspecified {
            for step in task.steps.iter_mut() {
                let Some(s) = state.steps.iter().find(|s| s.id == step.index as i64) else {
                    continue;
                };
                step.log_index = s.log_index;
                step.log_length = s.log_length;
                step.started = secs(&s.started_at);
                step.stopped = secs(&s.stopped_at);
                step.result = Outcome::from_wire(s.result);
            }
            if reported != Outcome::Unspecified {
                task.result = reported;
                task.stopped = Some(secs(&state.stopped_at).unwrap_or_else(now_secs));
                finished_now = true;
            }
        }
        for (k, v) in req.outputs {
            if k.len() <= MAX_OUTPUT_KEY && v.len() <= MAX_OUTPUT_VALUE {
                task.outputs.entry(k).or_insert(v);
            }
        }
        let resp = proto::UpdateTaskResponse {
            state: Some(proto::TaskState {
                id: state.id,
                result: task.result as i32,
                ..Default::default()
            }),
            sent_outputs: task.outputs.keys().cloned().collect(),
        };
        if finished_now {
            let job_id = row.job_id;
            self.finish_job(job_id);
            // Gitea deletes an ephemeral runner once its task is done.
            self.runners
                .retain(|r| !(r.record.id == runner_id && r.record.ephemeral));
        }
        Ok(resp)
    }

    fn finish_job(&mut self, job_id: i64) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job_id) {
            j.status = JobStatus::Done;
        }
    }

    pub fn update_log(
        &mut self,
        runner_id: i64,
        req: proto::UpdateLogRequest,
    ) -> Result<proto::UpdateLogResponse, RpcError> {
        let row = self.task_of_runner(runner_id, req.task_id)?;
        let task = &mut row.record;
        let ack = task.rows.len() as i64;
        let end = req.index + req.rows.len() as i64;
        if req.rows.is_empty() || req.index > ack || end <= ack {
            return Ok(proto::UpdateLogResponse { ack_index: ack });
        }
        if task.archived {
            return Err(RpcError::new(
                Code::AlreadyExists,
                "log file has been archived",
            ));
        }
        let skip = (ack - req.index) as usize;
        task.rows
            .extend(req.rows.into_iter().skip(skip).map(|r| r.content));
        if req.no_more {
            task.archived = true;
        }
        Ok(proto::UpdateLogResponse {
            ack_index: task.rows.len() as i64,
        })
    }

    /// A user pressing "Cancel": waiting jobs never run, running tasks end as cancelled.
    pub fn cancel(&mut self, job_id: i64) {
        let Some(job) = self.jobs.iter_mut().find(|j| j.id == job_id) else {
            return;
        };
        if job.status == JobStatus::Done {
            return;
        }
        job.status = JobStatus::Done;
        let Some(task) = job.task_id.and_then(|t| self.tasks.get_mut(&t)) else {
            return;
        };
        let now = now_secs();
        task.record.result = Outcome::Cancelled;
        task.record.stopped = Some(now);
        for step in task.record.steps.iter_mut() {
            if step.result == Outcome::Unspecified {
                step.result = Outcome::Cancelled;
                step.stopped = Some(now);
            }
        }
    }

    pub fn task_of_job(&self, job_id: i64) -> Option<&TaskRow> {
        let job = self.jobs.iter().find(|j| j.id == job_id)?;
        self.tasks.get(&job.task_id?)
    }
}

fn wire_runner(r: &RunnerRecord) -> proto::Runner {
    proto::Runner {
        id: r.id,
        uuid: r.uuid.clone(),
        token: String::new(),
        name: r.name.clone(),
        status: proto::RunnerStatus::Unspecified as i32,
        agent_labels: Vec::new(),
        custom_labels: Vec::new(),
        version: r.version.clone(),
        labels: r.labels.clone(),
        ephemeral: r.ephemeral,
    }
}

/// The `github` context Gitea would send (§4.2), overlaid with the test's own keys.
fn task_context(
    base_url: &str,
    job_id: i64,
    job: &QueuedJob,
    task_id: i64,
    token: &str,
) -> serde_json::Value {
    let app_url = format!("{base_url}/");
    let mut ctx = json!({
        "action": "", "action_path": "", "action_ref": "", "action_repository": "",
        "action_status": "", "env": "", "path": "", "event_path": "", "graphql_url": "",
        "workspace": "", "retention_days": "",
        "actor": "tester",
        "triggering_actor": "tester",
        "api_url": format!("{app_url}api/v1"),
        "server_url": app_url,
        "base_ref": "",
        "head_ref": "",
        "event": {"ref": "refs/heads/main", "repository": {"full_name": "owner/repo"}},
        "event_name": "push",
        "job": job.job_id,
        "ref": "refs/heads/main",
        "ref_name": "main",
        "ref_type": "branch",
        "ref_protected": false,
        "repository": "owner/repo",
        "repository_owner": "owner",
        "repositoryUrl": format!("{base_url}/owner/repo"),
        "run_id": job_id.to_string(),
        "run_number": job_id.to_string(),
        "run_attempt": "1",
        "secret_source": "Actions",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "workflow": "ci.yml",
        "gitea_default_actions_url": "https://github.com",
    });
    let map = ctx.as_object_mut().expect("context is an object");
    if let serde_json::Value::Object(extra) = &job.context {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
    map.insert("token".into(), json!(token));
    map.insert(
        "gitea_runtime_token".into(),
        json!(format!("fake-runtime-token-{task_id}")),
    );
    ctx
}
