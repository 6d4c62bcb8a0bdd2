//! The fake's database and the server side of each RPC (§3.2–3.6), free of HTTP.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::runs::{JobRow, RunRow};
use super::{RunnerRecord, TaskRecord};
use crate::proto::{self, Result as Outcome};
use crate::Code;

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
    pub(crate) fn new(code: Code, message: impl Into<String>) -> RpcError {
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

pub(crate) struct TaskRow {
    pub record: TaskRecord,
    pub job_id: i64,
    pub runner_id: i64,
    /// The runner itself sent a final result (even if the server had already ended the task).
    pub runner_reported_final: bool,
}

pub(crate) struct Db {
    pub base_url: String,
    pub registration_token: String,
    pub runners: Vec<RunnerRow>,
    pub runs: Vec<RunRow>,
    pub jobs: Vec<JobRow>,
    pub tasks: BTreeMap<i64, TaskRow>,
    next_runner_id: i64,
    pub next_run_id: i64,
    pub next_job_id: i64,
    pub next_task_id: i64,
    /// Source of `JobRow::updated`.
    pub update_seq: u64,
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

pub(crate) fn now_secs() -> i64 {
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
            runs: Vec::new(),
            jobs: Vec::new(),
            tasks: BTreeMap::new(),
            next_runner_id: 1,
            next_run_id: 1,
            next_job_id: 1,
            next_task_id: 1,
            update_seq: 0,
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
        let Some(pos) = self.pick_job(&names) else {
            return Ok(proto::FetchTaskResponse {
                task: None,
                tasks_version: latest,
            });
        };
        let task = self.claim(pos, runner_id)?;
        Ok(proto::FetchTaskResponse {
            task: Some(task),
            tasks_version: latest,
        })
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
            // The job takes the task's status; `EmitJobsIfReadyByRun` follows.
            self.finish_job(job_id, reported);
            // Gitea deletes an ephemeral runner once its task is done.
            self.runners
                .retain(|r| !(r.record.id == runner_id && r.record.ephemeral));
        }
        Ok(resp)
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
