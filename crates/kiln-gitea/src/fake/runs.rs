//! Runs and their jobs: inserting a run (`services/actions/run.go` `InsertRun`), claiming a job
//! for a runner (`models/actions/task.go` `CreateTaskForRunner`, `services/actions/task.go`
//! `PickTask`), cancelling (`models/actions/run.go` `CancelJobs`, `task.go` `StopTask`) and the
//! job emitter after a job finished (`EmitJobsIfReadyByRun`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::context::{self, DEFAULT_SHA};
use super::emitter::{self, ResolverJob};
use super::jobparser::{self, ParseOptions};
use super::state::{now_secs, random_hex, Db, RpcError, TaskRow};
use super::yaml::Y;
use super::{JobRecord, JobStatus, QueuedRun, StepRecord, TaskRecord};
use crate::proto::{self, Result as Outcome};
use crate::{json_to_struct, Code};

/// An `ActionRun`.
pub(crate) struct RunRow {
    pub id: i64,
    /// `run_number`: the repository's run counter.
    pub index: i64,
    pub workflow_file: String,
    pub event_name: String,
    pub event: Value,
    pub git_ref: String,
    pub sha: String,
    pub actor: String,
    pub repository: String,
    /// The test's `github` context keys.
    pub overrides: Map<String, Value>,
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
}

/// An `ActionRunJob`: what tests see of it, and the columns only the server reads.
pub(crate) struct JobRow {
    pub job: JobRecord,
    pub run_id: i64,
    pub attempt: i64,
    /// The payload's job has an `if:`.
    pub has_if: bool,
    /// Bumped on every change, like the `updated` column runners are served by.
    pub updated: u64,
}

/// `util.EllipsisDisplayString(s, limit)` (Gitea 1.24+; 1.22–1.23 used `SplitStringAtByteN`,
/// which cuts at `limit - 3` bytes the same way): CJK and other non-ASCII runes count twice, and
/// a cut string ends in `…`.
pub(crate) fn ellipsis_display_string(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let width = |c: char| if (c as u32) < 128 { 1 } else { 2 };
    let (mut pos, mut used, mut offset) = (0, 0, 0);
    for (i, c) in s.char_indices() {
        pos = i;
        if used + width(c) + 3 > limit {
            break;
        }
        used += width(c);
        offset += c.len_utf8();
    }
    if s.len() - pos <= 12 {
        let next: Vec<char> = s[pos..].chars().take(4).collect();
        let next_width: usize = next.iter().map(|c| width(*c)).sum();
        if next.len() <= 3 && used + next_width <= limit {
            return s.to_string();
        }
    }
    if limit < 3 {
        return s[..offset].to_string();
    }
    format!("{}…", &s[..offset])
}

/// Gitea's secret names: `^[A-Z_][A-Z0-9_]*$`, at most 50, not `GITEA_`/`GITHUB_`, upper-cased
/// on creation, and a value.
fn check_secret(name: &str, value: &str) -> Result<String, String> {
    let upper = name.to_uppercase();
    let valid = !upper.is_empty()
        && upper.len() <= 50
        && !upper.starts_with(|c: char| c.is_ascii_digit())
        && upper
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !upper.starts_with("GITEA_")
        && !upper.starts_with("GITHUB_")
        && !value.is_empty();
    if valid {
        Ok(upper)
    } else {
        Err(format!(
            "Gitea refuses a secret named {name:?} with that value"
        ))
    }
}

fn labels_of(y: &Option<Y>) -> Vec<String> {
    match y {
        Some(Y::Str(s)) => vec![s.clone()],
        Some(Y::Seq(items)) => items
            .iter()
            .filter_map(|i| match i {
                Y::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Db {
    /// `PrepareRunAndInsert` + `InsertRun`: the workflow is parsed with the run's context, each
    /// job and combination becomes a job row whose payload has its `needs:` erased
    /// (`SetJob(id, job.EraseNeeds())`); jobs with needs start blocked, the others waiting, and
    /// the tasks version is bumped once if any waits.
    pub fn insert_run(&mut self, queued: QueuedRun) -> Result<i64, String> {
        let mut secrets = BTreeMap::new();
        for (k, v) in &queued.secrets {
            secrets.insert(check_secret(k, v)?, v.clone());
        }
        let overrides = match queued.context {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => return Err(format!("context overrides must be an object, not {other}")),
        };
        let text = |k: &str, default: &str| {
            overrides
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        let run = RunRow {
            id: self.next_run_id,
            index: self.next_run_id,
            workflow_file: queued.workflow_file,
            event_name: queued.event_name,
            git_ref: text("ref", "refs/heads/main"),
            sha: text("sha", DEFAULT_SHA),
            actor: text("actor", "tester"),
            repository: text("repository", "owner/repo"),
            event: queued.event,
            overrides,
            secrets,
            vars: queued.vars,
        };
        let ctx = context::gitea_context(&self.base_url, &run, None);
        let inputs = (run.event_name == "workflow_dispatch")
            .then(|| run.event.get("inputs").cloned())
            .flatten();
        let opts = ParseOptions {
            github: Some(context::github_context(&ctx)),
            vars: run.vars.clone(),
            inputs,
        };
        let workflows = jobparser::parse(&queued.workflow_yaml, &opts)
            .map_err(|e| format!("parse workflow: {e}"))?;
        if workflows.is_empty() {
            return Err("the workflow has no jobs".into());
        }
        self.next_run_id += 1;
        let run_id = run.id;
        self.runs.push(run);
        let mut any_waiting = false;
        for mut single in workflows {
            let needs = single.job.needs();
            single.job.needs = None;
            let payload = single.marshal();
            let status = if needs.is_empty() {
                any_waiting = true;
                JobStatus::Waiting
            } else {
                JobStatus::Blocked
            };
            let updated = self.tick();
            self.jobs.push(JobRow {
                job: JobRecord {
                    id: self.next_job_id,
                    key: single.job_id.clone(),
                    name: ellipsis_display_string(&single.job.name, 255),
                    status,
                    needs,
                    runs_on: labels_of(&single.job.runs_on_out),
                    task_id: None,
                    payload,
                },
                run_id,
                attempt: 0,
                has_if: !single.job.if_value().is_empty(),
                updated,
            });
            self.next_job_id += 1;
        }
        if any_waiting {
            self.tasks_version += 1;
        }
        Ok(run_id)
    }

    fn tick(&mut self) -> u64 {
        self.update_seq += 1;
        self.update_seq
    }

    /// The jobs of a run in creation order.
    pub fn run_jobs(&self, run_id: i64) -> Vec<&JobRow> {
        self.jobs.iter().filter(|j| j.run_id == run_id).collect()
    }

    /// `CreateTaskForRunner`: the waiting job updated longest ago (then lowest id) whose labels
    /// the runner all has.
    pub fn pick_job(&self, labels: &[String]) -> Option<usize> {
        self.jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.job.status == JobStatus::Waiting && j.job.task_id.is_none())
            .filter(|(_, j)| j.job.runs_on.iter().all(|l| labels.contains(l)))
            .min_by_key(|(_, j)| (j.updated, j.job.id))
            .map(|(i, _)| i)
    }

    /// `CreateTaskForRunner` + `PickTask`: the job runs, its task gets one step row per step of
    /// the (re-parsed) payload, and the runner gets the payload, the context, secrets, variables
    /// and `needs`.
    pub fn claim(&mut self, pos: usize, runner_id: i64) -> Result<proto::Task, RpcError> {
        let parsed = jobparser::parse(&self.jobs[pos].job.payload, &ParseOptions::default())
            .map_err(|e| RpcError::new(Code::Internal, format!("parse workflow of job: {e}")))?;
        let [single] = parsed.as_slice() else {
            return Err(RpcError::new(
                Code::Internal,
                "workflow of job: not single workflow",
            ));
        };
        let steps = single
            .job
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| StepRecord {
                index,
                // Gitea 1.26 shows unnamed steps as `Run <first line>`; 1.22–1.25 store this.
                name: ellipsis_display_string(step.display(), 255),
                result: Outcome::Unspecified,
                log_index: 0,
                log_length: 0,
                started: None,
                stopped: None,
            })
            .collect();

        let task_id = self.next_task_id;
        self.next_task_id += 1;
        let token = random_hex(20);
        if let Some(r) = self.runners.iter_mut().find(|r| r.record.id == runner_id) {
            r.had_task = true;
        }
        let updated = self.tick();
        let job = &mut self.jobs[pos];
        job.attempt += 1;
        job.job.status = JobStatus::Running;
        job.job.task_id = Some(task_id);
        job.updated = updated;
        let job = &self.jobs[pos];
        let run = self
            .runs
            .iter()
            .find(|r| r.id == job.run_id)
            .expect("a job's run exists");

        let mut ctx = context::gitea_context(&self.base_url, run, Some(job));
        ctx.insert("token".into(), json!(token));
        ctx.insert(
            "gitea_runtime_token".into(),
            json!(format!("fake-runtime-token-{task_id}")),
        );
        let needs = if job.job.needs.is_empty() {
            BTreeMap::new()
        } else {
            let tasks = &self.tasks;
            let outputs_of = |t: i64| {
                tasks
                    .get(&t)
                    .map(|t| t.record.outputs.clone())
                    .unwrap_or_default()
            };
            context::find_task_needs(job, &self.run_jobs(job.run_id), outputs_of)
        };
        let task = proto::Task {
            id: task_id,
            workflow_payload: Some(job.job.payload.clone().into_bytes()),
            context: Some(json_to_struct(&Value::Object(ctx))),
            secrets: context::secrets_of_task(&token, &run.secrets),
            machine: String::new(),
            needs,
            vars: run.vars.clone(),
        };
        let job_id = job.job.id;
        self.tasks.insert(
            task_id,
            TaskRow {
                record: TaskRecord {
                    task_id,
                    token,
                    result: Outcome::Unspecified,
                    started: Some(now_secs()),
                    stopped: None,
                    steps,
                    outputs: BTreeMap::new(),
                    rows: Vec::new(),
                    archived: false,
                    update_task_calls: 0,
                },
                job_id,
                runner_id,
                runner_reported_final: false,
            },
        );
        Ok(task)
    }

    /// A task's final UpdateTask: its job takes the result, then the emitter runs.
    pub fn finish_job(&mut self, job_id: i64, result: proto::Result) {
        let Some(status) = JobStatus::from_result(result) else {
            return;
        };
        let updated = self.tick();
        let Some(job) = self.jobs.iter_mut().find(|j| j.job.id == job_id) else {
            return;
        };
        job.job.status = status;
        job.updated = updated;
        let run_id = job.run_id;
        self.emit_jobs(run_id);
    }

    /// `checkJobsOfRun`: blocked jobs whose needs are done become waiting (bumping the tasks
    /// version, as `UpdateRunJob` does for every job entering waiting) or skipped.
    pub fn emit_jobs(&mut self, run_id: i64) {
        let jobs: Vec<ResolverJob> = self
            .run_jobs(run_id)
            .into_iter()
            .map(|j| ResolverJob {
                id: j.job.id,
                key: j.job.key.clone(),
                status: j.job.status,
                needs: j.job.needs.clone(),
                has_if: j.has_if,
            })
            .collect();
        for (id, status) in emitter::resolve(&jobs) {
            let updated = self.tick();
            if let Some(job) = self.jobs.iter_mut().find(|j| j.job.id == id) {
                job.job.status = status;
                job.updated = updated;
            }
            if status == JobStatus::Waiting {
                self.tasks_version += 1;
            }
        }
    }

    /// `CancelJobs` then `EmitJobsIfReadyByJobs`: jobs not done yet are cancelled; a running one
    /// through `StopTask` (its task and unfinished steps become cancelled).
    pub fn cancel_jobs(&mut self, ids: &[i64]) {
        let now = now_secs();
        let mut runs = Vec::new();
        for &id in ids {
            let updated = self.tick();
            let Some(job) = self.jobs.iter_mut().find(|j| j.job.id == id) else {
                continue;
            };
            if job.job.status.is_done() {
                continue;
            }
            job.job.status = JobStatus::Cancelled;
            job.updated = updated;
            runs.push(job.run_id);
            let Some(task) = job.job.task_id.and_then(|t| self.tasks.get_mut(&t)) else {
                continue;
            };
            if task.record.result != Outcome::Unspecified {
                continue;
            }
            task.record.result = Outcome::Cancelled;
            task.record.stopped = Some(now);
            for step in task.record.steps.iter_mut() {
                if step.result == Outcome::Unspecified {
                    step.result = Outcome::Cancelled;
                    step.started.get_or_insert(now);
                    step.stopped = Some(now);
                }
            }
        }
        runs.sort_unstable();
        runs.dedup();
        for run_id in runs {
            self.emit_jobs(run_id);
        }
    }

    pub fn task_of_job(&self, job_id: i64) -> Option<&TaskRow> {
        let job = self.jobs.iter().find(|j| j.job.id == job_id)?;
        self.tasks.get(&job.job.task_id?)
    }

    pub fn job(&self, job_id: i64) -> Option<&JobRow> {
        self.jobs.iter().find(|j| j.job.id == job_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsis_like_gitea() {
        assert_eq!(ellipsis_display_string("short", 255), "short");
        let long = "x".repeat(300);
        let cut = ellipsis_display_string(&long, 255);
        assert_eq!(cut, format!("{}…", "x".repeat(252)));
        // A few runes over the limit in bytes but not in width stay whole.
        let wide = format!("{}é", "x".repeat(254));
        assert_eq!(
            ellipsis_display_string(&wide, 255).chars().last(),
            Some('…')
        );
        assert_eq!(ellipsis_display_string("abcdef", 5), "ab…");
    }

    #[test]
    fn secret_names_are_checked_like_gitea() {
        assert_eq!(check_secret("my_key", "v").unwrap(), "MY_KEY");
        assert!(check_secret("GITHUB_TOKEN", "v").is_err());
        assert!(check_secret("1A", "v").is_err());
        assert!(check_secret("A-B", "v").is_err());
        assert!(check_secret("A", "").is_err());
    }
}
