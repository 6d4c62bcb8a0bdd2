//! Running one job on the host: the code path shared by `kiln exec` and the runner daemon.
//!
//! A job runs in phases, as the GitHub runner does: *set up* (workspace, temp dirs, event file,
//! actions fetched), *pre* steps of JavaScript actions, the *main* steps in order, *post* steps in
//! reverse order, and *complete* (job outputs, orphan processes killed). Everything a job prints goes
//! through one [`Masker`] and leaves as [`Event`]s.

mod actions;
mod delegated;
pub mod docker;
mod env;
mod launch;
pub mod native;
mod output;
mod step;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::expr::{self, Contexts, Status};
use crate::mask::Masker;
use crate::model::{BoolOrExpr, NumberOrExpr, RunDefaults, Workflow};

pub use actions::{ActionCache, ActionRef, LoadedAction};
use step::Scope;

/// The result of a step or job, as Gitea and GitHub name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
    Cancelled,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Cancelled => "cancelled",
            Outcome::Skipped => "skipped",
        }
    }
}

impl From<Status> for Outcome {
    fn from(status: Status) -> Outcome {
        match status {
            Status::Success => Outcome::Success,
            Status::Failure => Outcome::Failure,
            Status::Cancelled => Outcome::Cancelled,
            Status::Skipped => Outcome::Skipped,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a running job reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// One masked output line. `step` is the index of the job step (in `jobs.<id>.steps`) the line
    /// belongs to; `None` for the job's set-up and completion sections, which also hold the output of
    /// actions' pre and post steps (Gitea shows those there).
    Log {
        step: Option<usize>,
        time: SystemTime,
        line: String,
    },
    StepStarted {
        step: usize,
        name: String,
    },
    /// `outcome` is what happened, `conclusion` what counts after `continue-on-error`.
    StepFinished {
        step: usize,
        outcome: Outcome,
        conclusion: Outcome,
        duration: Duration,
    },
}

/// Settings of the runner that are the same for every job.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Parent of the per-job temp dirs (`RUNNER_TEMP`).
    pub temp_dir: PathBuf,
    /// `RUNNER_TOOL_CACHE`.
    pub tool_cache: PathBuf,
    /// Where remote actions are cloned and kept per ref.
    pub action_cache: PathBuf,
    /// Base URL that `owner/repo@ref` actions are cloned from (Gitea's `DEFAULT_ACTIONS_URL`).
    pub default_actions_url: String,
    /// The `node` used for JavaScript actions; `None` looks for `node` on `PATH`.
    pub node: Option<PathBuf>,
    /// `RUNNER_NAME`.
    pub runner_name: String,
    /// Extra environment for every step (act_runner's `runner.envs`).
    pub env: BTreeMap<String, String>,
    /// How long a cancelled or timed-out step gets between SIGINT and SIGKILL.
    pub kill_grace: Duration,
    /// Skip TLS verification when cloning actions.
    pub insecure_actions: bool,
    /// The task token for clones from the Gitea instance (actions and reusable workflows of
    /// private repositories); never sent to another host.
    pub clone_token: Option<CloneToken>,
    /// The workspace is the local checkout the job came from (`kiln exec`): `actions/checkout` of
    /// the same repository is skipped, as `act` does.
    pub local_checkout: bool,
    /// Actions the runner performs itself (`docker/build-push-action` …).
    pub native: Option<std::sync::Arc<dyn native::NativeActions>>,
    /// The Docker daemon for job containers, services and Docker actions; `None` turns
    /// container mode off.
    pub docker: Option<docker::DockerConfig>,
}

impl ExecConfig {
    /// Defaults under one state directory.
    pub fn under(dir: &std::path::Path) -> ExecConfig {
        ExecConfig {
            temp_dir: dir.join("tmp"),
            tool_cache: dir.join("tool-cache"),
            action_cache: dir.join("actions"),
            default_actions_url: "https://github.com".into(),
            node: None,
            runner_name: "kiln".into(),
            env: BTreeMap::new(),
            kill_grace: crate::process::DEFAULT_GRACE,
            insecure_actions: false,
            clone_token: None,
            local_checkout: false,
            native: None,
            docker: None,
        }
    }
}

/// A token for git clones from one host, as basic auth `token:<token>`.
#[derive(Clone)]
pub struct CloneToken {
    /// The Gitea instance's address (`https://host[:port]`); the token goes to its host only.
    pub origin: String,
    pub token: String,
}

impl CloneToken {
    /// Whether a clone URL goes to this host and carries no credentials of its own (act_runner's
    /// `shouldCloneURLUseToken`).
    pub fn applies_to(&self, url: &str) -> bool {
        let host_of = |u: &str| -> Option<String> {
            let (_, rest) = u.split_once("://")?;
            let authority = rest.split('/').next()?;
            (!authority.contains('@')).then(|| authority.to_lowercase())
        };
        host_of(url).is_some_and(|h| Some(h) == host_of(&self.origin))
    }
}

impl std::fmt::Debug for CloneToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloneToken({}, ***)", self.origin)
    }
}

/// One job to run, with everything known before it starts.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub workflow: Arc<Workflow>,
    /// The job's key in `jobs:`.
    pub job_id: String,
    /// The matrix combination (empty when the job has no matrix).
    pub matrix: Map<String, Value>,
    /// The `strategy` context (`fail-fast`, `job-index`, `job-total`, `max-parallel`).
    pub strategy: Value,
    /// The `github` context without the job-specific fields (the executor adds `job`, `workspace`,
    /// `action*`); must include `event` and `event_name`.
    pub github: Value,
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    /// The `needs` context: `{ job: { result, outputs: {..} } }`.
    pub needs: Value,
    /// The `inputs` context (workflow_dispatch / workflow_call).
    pub inputs: Value,
    /// The checked-out repository the job works in (`GITHUB_WORKSPACE`).
    pub workspace: PathBuf,
    /// More values to mask in the output besides the secrets (runtime tokens).
    pub masks: Vec<String>,
    /// The image of the runner label the job was picked by (`ubuntu-latest:docker://…`): the
    /// job runs in a container of it unless it names its own `container:`. `None`: on the host.
    pub container_image: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub result: Outcome,
    pub outputs: BTreeMap<String, String>,
    /// Contents written to `GITHUB_STEP_SUMMARY`, in step order.
    pub summary: String,
}

/// Sends events; a closed receiver is ignored (the job still runs to the end).
#[derive(Clone)]
pub(crate) struct Emitter {
    tx: mpsc::UnboundedSender<Event>,
    pub masker: Masker,
}

impl Emitter {
    pub fn log(&self, step: Option<usize>, line: &str) {
        let line = self.masker.mask(line);
        let _ = self.tx.send(Event::Log {
            step,
            time: SystemTime::now(),
            line,
        });
    }
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }
}

/// The job's mutable state while steps run.
pub(crate) struct JobState {
    pub ctx: Contexts,
    /// The environment set by the workflow, the job and `GITHUB_ENV`.
    pub env: BTreeMap<String, String>,
    /// Directories from `GITHUB_PATH`, first = first on `PATH`.
    pub path: Vec<String>,
    pub summary: String,
    /// Post steps to run at the end, in the order they were registered.
    pub posts: Vec<step::PostStep>,
    /// `save-state` values of pre steps, by step index, for the main and post steps.
    pub action_state: std::collections::HashMap<usize, BTreeMap<String, String>>,
}

/// Run one job to the end. Never fails: every problem becomes log lines and a failed result.
pub async fn run_job(
    spec: JobSpec,
    config: ExecConfig,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) -> JobResult {
    let masker = Masker::new();
    for value in spec.secrets.values().chain(&spec.masks) {
        masker.add(value);
    }
    let out = Emitter { tx: events, masker };
    let started = Instant::now();
    let tracking_id = format!("kiln_{}", uuid::Uuid::new_v4().simple());
    let result = match Runner::set_up(&spec, &config, &out, &tracking_id).await {
        Ok(mut runner) => {
            if runner.needs_containers(&spec) {
                if let Err(message) = runner.start_containers(&spec, &cancel).await {
                    out.log(None, &format!("##[error]{message}"));
                    runner.complete(&spec).await;
                    return finish(
                        &out,
                        &tracking_id,
                        started,
                        JobResult {
                            result: Outcome::Failure,
                            outputs: BTreeMap::new(),
                            summary: String::new(),
                        },
                    );
                }
            }
            let timeout = runner.job_timeout(&spec);
            let job_cancel = cancel.child_token();
            let timer = {
                let job_cancel = job_cancel.clone();
                let out = out.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    out.log(None, &format!("##[error]The job running on runner has exceeded the maximum execution time of {} minutes.", timeout.as_secs() / 60));
                    job_cancel.cancel();
                })
            };
            let result = runner.run(&spec, &job_cancel).await;
            timer.abort();
            runner.complete(&spec).await;
            result
        }
        Err(message) => {
            out.log(None, &format!("##[error]{message}"));
            JobResult {
                result: Outcome::Failure,
                outputs: BTreeMap::new(),
                summary: String::new(),
            }
        }
    };
    finish(&out, &tracking_id, started, result)
}

/// Kill what the job left running and log its end.
fn finish(out: &Emitter, tracking_id: &str, started: Instant, result: JobResult) -> JobResult {
    let killed = crate::process::kill_tracked(crate::process::JOB_TRACKING_VAR, tracking_id);
    if killed > 0 {
        out.log(
            None,
            &format!("Cleaning up orphan processes: {killed} killed"),
        );
    }
    // act_runner's last row ("Job succeeded" / "Job failed"); the time goes to the trace log.
    tracing::debug!(result = %result.result, elapsed = ?started.elapsed(), "job finished");
    let word = match result.result {
        Outcome::Success => "succeeded",
        Outcome::Failure => "failed",
        Outcome::Cancelled => "cancelled",
        Outcome::Skipped => "skipped",
    };
    out.log(None, &format!("Job {word}"));
    result
}

pub(crate) struct Runner {
    pub config: ExecConfig,
    pub out: Emitter,
    pub state: JobState,
    /// The job's private temp dir (`RUNNER_TEMP`), removed at the end.
    pub temp: PathBuf,
    pub tracking_id: String,
    pub actions: ActionCache,
    pub workspace: PathBuf,
    /// `defaults.run` of the job, else of the workflow.
    pub defaults: RunDefaults,
    /// The Docker daemon session, once the job uses containers.
    pub docker: Option<docker::Session>,
}

impl Runner {
    async fn set_up(
        spec: &JobSpec,
        config: &ExecConfig,
        out: &Emitter,
        tracking_id: &str,
    ) -> Result<Runner, String> {
        let job = spec
            .workflow
            .job(&spec.job_id)
            .ok_or_else(|| format!("{}: no job `{}`", spec.workflow.file_name, spec.job_id))?;
        if (job.container.is_some() || !job.services.is_empty() || spec.container_image.is_some())
            && config.docker.is_none()
        {
            return Err(format!(
                "{}: job `{}` needs containers (`container`, `services` or a docker:// runner label), but container mode is off on this runner",
                spec.workflow.file_name, spec.job_id
            ));
        }
        let temp = config.temp_dir.join(tracking_id);
        for dir in [
            &temp,
            &config.tool_cache,
            &config.action_cache,
            &spec.workspace,
        ] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let event = spec
            .github
            .get("event")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let event_path = temp.join("event.json");
        std::fs::write(
            &event_path,
            serde_json::to_vec_pretty(&event).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", event_path.display()))?;

        let mut ctx = Contexts::default();
        let mut github = spec.github.clone();
        if let Some(g) = github.as_object_mut() {
            g.insert("job".into(), json!(spec.job_id));
            g.insert("workspace".into(), json!(spec.workspace.to_string_lossy()));
            g.insert("event_path".into(), json!(event_path.to_string_lossy()));
            g.entry("action").or_insert(json!(""));
            g.entry("workflow").or_insert(json!(spec
                .workflow
                .name
                .clone()
                .unwrap_or_else(|| spec.workflow.file_name.clone())));
        }
        if let Some(token) = github.get("token").and_then(Value::as_str) {
            out.masker.add(token);
        }
        ctx.set("github", github.clone());
        ctx.set("gitea", github);
        let mut secrets: Map<String, Value> = spec
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        if let Some(token) = spec.github.get("token").and_then(Value::as_str) {
            secrets.entry("GITHUB_TOKEN").or_insert(json!(token));
            secrets.entry("GITEA_TOKEN").or_insert(json!(token));
        }
        ctx.set("secrets", Value::Object(secrets));
        ctx.set("vars", json!(spec.vars));
        ctx.set("needs", spec.needs.clone());
        ctx.set("inputs", spec.inputs.clone());
        ctx.set("matrix", Value::Object(spec.matrix.clone()));
        ctx.set("strategy", spec.strategy.clone());
        ctx.set("steps", json!({}));
        ctx.set(
            "runner",
            json!({
                "os": "Linux",
                "arch": env::runner_arch(),
                "name": config.runner_name,
                "temp": temp.to_string_lossy(),
                "tool_cache": config.tool_cache.to_string_lossy(),
                "debug": if env::debug_enabled(spec) { "1" } else { "" },
            }),
        );
        ctx.set("job", json!({ "status": "success" }));
        ctx.workspace = Some(spec.workspace.clone());

        // Workflow env, then job env; each may use the contexts known so far, job env also `env`.
        let mut env_map = BTreeMap::new();
        for (k, v) in spec.workflow.env.iter() {
            let value = expr::interpolate(v, &ctx)
                .map_err(|e| format!("{}: env.{k}: {e}", spec.workflow.file_name))?;
            env_map.insert(k.to_string(), value);
        }
        ctx.set("env", json!(env_map));
        for (k, v) in job.env.iter() {
            let value = expr::interpolate(v, &ctx).map_err(|e| {
                format!(
                    "{}: jobs.{}.env.{k}: {e}",
                    spec.workflow.file_name, spec.job_id
                )
            })?;
            env_map.insert(k.to_string(), value);
        }
        ctx.set("env", json!(env_map));

        let run_defaults =
            |d: &Option<crate::model::Defaults>| d.as_ref().and_then(|d| d.run.clone());
        let (job_defaults, wf_defaults) = (
            run_defaults(&job.defaults),
            run_defaults(&spec.workflow.defaults),
        );
        let defaults = RunDefaults {
            shell: job_defaults
                .as_ref()
                .and_then(|d| d.shell.clone())
                .or_else(|| wf_defaults.as_ref().and_then(|d| d.shell.clone())),
            working_directory: job_defaults
                .as_ref()
                .and_then(|d| d.working_directory.clone())
                .or_else(|| {
                    wf_defaults
                        .as_ref()
                        .and_then(|d| d.working_directory.clone())
                }),
        };
        let actions = ActionCache::new(config);
        let mut runner = Runner {
            config: config.clone(),
            out: out.clone(),
            state: JobState {
                ctx,
                env: env_map,
                path: Vec::new(),
                summary: String::new(),
                posts: Vec::new(),
                action_state: Default::default(),
            },
            defaults,
            temp,
            tracking_id: tracking_id.to_string(),
            actions,
            workspace: spec.workspace.clone(),
            docker: None,
        };
        runner.prepare_actions(spec).await?;
        // The last row of the set-up section, as act_runner (and GitHub's runner) end it.
        let name = job.name.as_deref().unwrap_or(&spec.job_id);
        out.log(None, &format!("Complete job name: {name}"));
        Ok(runner)
    }

    fn job_timeout(&self, spec: &JobSpec) -> Duration {
        let job = spec.workflow.job(&spec.job_id).expect("checked in set-up");
        let minutes = match &job.timeout_minutes {
            None => 360.0,
            Some(NumberOrExpr::Number(n)) => *n,
            Some(NumberOrExpr::Expr(e)) => expr::interpolate_value(e, &self.state.ctx)
                .ok()
                .and_then(|v| {
                    v.as_f64()
                        .or_else(|| expr::to_display_string(&v).trim().parse().ok())
                })
                .unwrap_or(360.0),
        };
        Duration::from_secs_f64((minutes.max(0.0) * 60.0).min(1e9))
    }

    async fn run(&mut self, spec: &JobSpec, cancel: &CancellationToken) -> JobResult {
        let job = spec
            .workflow
            .job(&spec.job_id)
            .expect("checked in set-up")
            .clone();
        let mut scope = Scope::job();
        // Pre steps of JavaScript actions, in step order.
        for (index, step) in job.steps.iter().enumerate() {
            self.observe_cancel(&mut scope, cancel);
            self.run_pre(index, step, &scope, cancel).await;
        }
        for (index, step) in job.steps.iter().enumerate() {
            self.observe_cancel(&mut scope, cancel);
            self.run_main(index, step, &mut scope, cancel).await;
        }
        // Post steps in reverse order. They default to `always()`; after a cancellation they get a
        // fresh token so they can still clean up.
        self.observe_cancel(&mut scope, cancel);
        let posts = std::mem::take(&mut self.state.posts);
        let post_cancel = CancellationToken::new();
        for post in posts.into_iter().rev() {
            self.run_post(post, &scope, &post_cancel).await;
        }

        let env = self.state.env.clone();
        let ctx = self.contexts(&scope, &env);
        let mut outputs = BTreeMap::new();
        for (name, value) in job.outputs.iter() {
            match expr::interpolate(value, &ctx) {
                Ok(v) => {
                    outputs.insert(name.to_string(), v);
                }
                Err(e) => self.out.log(
                    None,
                    &format!("##[warning]jobs.{}.outputs.{name}: {e}", spec.job_id),
                ),
            }
        }
        JobResult {
            result: Outcome::from(scope.status),
            outputs,
            summary: std::mem::take(&mut self.state.summary),
        }
    }

    /// Notice a cancellation between steps, and keep `job.status` current.
    fn observe_cancel(&mut self, scope: &mut Scope, cancel: &CancellationToken) {
        if cancel.is_cancelled() {
            scope.status = Status::Cancelled;
        }
        let status = Outcome::from(scope.status).as_str();
        self.state.ctx.set("job", json!({ "status": status }));
    }

    async fn complete(&mut self, _spec: &JobSpec) {
        if let Some(mut session) = self.docker.take() {
            let names: Vec<String> = session.containers.iter().map(|(_, n)| n.clone()).collect();
            if !names.is_empty() {
                self.out
                    .log(None, &format!("Removing containers: {}", names.join(", ")));
            }
            for warning in session.clean_up().await {
                self.out.log(None, &format!("##[warning]{warning}"));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.temp) {
            tracing::debug!(dir = %self.temp.display(), error = %e, "cannot remove job temp dir");
        }
    }

    /// `continue-on-error` of a job or step.
    pub(crate) fn eval_bool(
        &self,
        value: &Option<BoolOrExpr>,
        ctx: &Contexts,
    ) -> Result<bool, String> {
        match value {
            None => Ok(false),
            Some(BoolOrExpr::Bool(b)) => Ok(*b),
            Some(BoolOrExpr::Expr(e)) => expr::interpolate_value(e, ctx)
                .map(|v| match v {
                    Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
                    v => expr::is_truthy(&v),
                })
                .map_err(|e| e.to_string()),
        }
    }
}

/// The status a job's `if:` sees, from the results in a `needs` context (`{ job: { result } }`):
/// cancelled when a needed job was cancelled, else failure when one failed, else skipped when one
/// was skipped (or has no result), else success.
fn needs_status(needs: &Value) -> Status {
    let results: Vec<&str> = needs
        .as_object()
        .map(|m| {
            m.values()
                .map(|n| n.get("result").and_then(Value::as_str).unwrap_or(""))
                .collect()
        })
        .unwrap_or_default();
    let any = |r: &str| results.iter().any(|x| x.eq_ignore_ascii_case(r));
    if any("cancelled") {
        Status::Cancelled
    } else if any("failure") {
        Status::Failure
    } else if results.iter().all(|r| r.eq_ignore_ascii_case("success")) {
        Status::Success
    } else {
        Status::Skipped
    }
}

/// The contexts of a job's own keys (`if`, `strategy`, `with`, `secrets` of a caller): no
/// `steps`, `env` or `runner` yet, and the status of the jobs it needs.
pub(crate) fn job_contexts(spec: &JobSpec) -> Contexts {
    let mut ctx = Contexts::default();
    ctx.set("github", spec.github.clone());
    ctx.set("gitea", spec.github.clone());
    ctx.set("needs", spec.needs.clone());
    ctx.set("vars", json!(spec.vars));
    ctx.set("inputs", spec.inputs.clone());
    ctx.set("secrets", json!(spec.secrets));
    ctx.set("matrix", Value::Object(spec.matrix.clone()));
    ctx.set("strategy", spec.strategy.clone());
    ctx.status = needs_status(&spec.needs);
    ctx
}

/// Evaluate the job's `if:` (default `success()`) against the results of the jobs it needs, as
/// given in `spec.needs` (`{ job: { result: "success" | "failure" | ... } }`).
pub fn job_condition(spec: &JobSpec) -> Result<bool, String> {
    let job = spec
        .workflow
        .job(&spec.job_id)
        .ok_or_else(|| format!("{}: no job `{}`", spec.workflow.file_name, spec.job_id))?;
    let ctx = job_contexts(spec);
    let condition = job.if_cond.clone().unwrap_or_default();
    expr::evaluate_condition(&condition, &ctx)
        .map_err(|e| format!("{}: jobs.{}.if: {e}", spec.workflow.file_name, spec.job_id))
}

#[cfg(test)]
mod tests {
    use super::CloneToken;

    #[test]
    fn clone_token_goes_to_the_instance_host_only() {
        let t = CloneToken {
            origin: "https://gitea.example:3000/".into(),
            token: "t".into(),
        };
        assert!(t.applies_to("https://gitea.example:3000/org/repo"));
        assert!(t.applies_to("http://GITEA.example:3000/org/repo"));
        assert!(!t.applies_to("https://gitea.example/org/repo"));
        assert!(!t.applies_to("https://github.com/org/repo"));
        assert!(!t.applies_to("https://user:pw@gitea.example:3000/org/repo"));
    }
}
