//! One task from Gitea: its one-job workflow turned into a [`JobSpec`], run through the executor
//! that `kiln exec` uses, with every event reported back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_actions::exec::{self, CloneToken, ExecConfig, JobSpec, Outcome};
use kiln_actions::local::{run_caller_job, CallSources, RunEvent};
use kiln_actions::model::Workflow;
use kiln_actions::reusable::LocalWorkflows;
use kiln_gitea::{proto, Client};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::doors::JobDoors;
use crate::labels::{self, Label, Schema};
use crate::reporter::Reporter;

/// The actions cache as jobs see it.
pub trait JobCache: Send + Sync {
    /// `ACTIONS_CACHE_URL` (ends with `/`).
    fn url(&self) -> String;
    /// Let a job's runtime token use the cache, scoped to its repository.
    fn register_job(&self, token: &str, repository: &str);
    fn revoke_job(&self, token: &str);
}

/// What every task of this runner shares.
pub struct TaskEnv {
    pub client: Client,
    pub config: Arc<Config>,
    /// Executor settings; per task the actions URL and environment are added.
    pub exec: ExecConfig,
    /// The instance address from the registration.
    pub address: String,
    pub runner_name: String,
    pub version: String,
    pub labels: Vec<Label>,
    /// Parent of the per-task working directories.
    pub workdir_parent: PathBuf,
    pub cache: Option<Arc<dyn JobCache>>,
    /// From Declare (`X-Gitea-Actions-Capabilities`).
    pub capabilities: Vec<String>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The build engine behind each job's `BUILDKIT_HOST`.
    pub build: Option<Arc<crate::buildkit::BuildEngine>>,
}

/// A task ready to run.
struct Prepared {
    spec: JobSpec,
    exec: ExecConfig,
    steps: usize,
    runs_on: Vec<String>,
    task_dir: PathBuf,
    runtime_token: String,
    repository: String,
}

/// Run a task to the end and report it. `cancel` stops the job (daemon shutdown); Gitea's own
/// cancellation arrives through the reporter.
pub async fn run_task(
    env: Arc<TaskEnv>,
    task: proto::Task,
    cancel: CancellationToken,
    reporter: Reporter,
) -> Outcome {
    let received = std::time::Instant::now();
    let context = task
        .context
        .as_ref()
        .map(kiln_gitea::struct_to_json)
        .unwrap_or_else(|| json!({}));
    let text = |k: &str| {
        context
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    reporter.log(&format!(
        "{}(version:{}) received task {} of job {}, be triggered by event: {}",
        env.runner_name,
        env.version,
        task.id,
        text("job"),
        text("event_name")
    ));
    let job_cancel = cancel.child_token();
    let stop_reporting = CancellationToken::new();
    let report_loop = {
        let (r, job, stop) = (reporter.clone(), job_cancel.clone(), stop_reporting.clone());
        let interval = env
            .config
            .runner
            .log_report_interval
            .max(Duration::from_millis(100));
        tokio::spawn(async move { r.run(interval, job, stop).await })
    };

    let mut cleanup: Option<(PathBuf, String)> = None;
    let (result, outputs) = match prepare(&env, &task, &context) {
        Err(message) => {
            reporter.log(&format!("##[error]{message}"));
            (Outcome::Failure, BTreeMap::new())
        }
        Ok(mut prepared) => {
            reporter.set_steps(prepared.steps);
            cleanup = Some((prepared.task_dir.clone(), prepared.runtime_token.clone()));
            let job = format!("job-{}", task.id);
            match JobDoors::open(env.build.as_ref(), &job, &prepared.task_dir).await {
                Err(e) => {
                    reporter.log(&format!("##[error]{e}"));
                    (Outcome::Failure, BTreeMap::new())
                }
                Ok(doors) => {
                    for warning in &doors.warnings {
                        reporter.log(&format!("##[warning]{warning}"));
                    }
                    prepared.exec.env.extend(doors.env.clone());
                    if let Some(cache) = &env.cache {
                        cache.register_job(&prepared.runtime_token, &prepared.repository);
                    }
                    let result =
                        run_prepared(&env, prepared, &reporter, &job_cancel, received).await;
                    drop(doors);
                    result
                }
            }
        }
    };
    let result = if reporter.ended_by_server() && result != Outcome::Success {
        Outcome::Cancelled
    } else {
        result
    };
    reporter.finish(result, &outputs);
    stop_reporting.cancel();
    let _ = report_loop.await;
    if let Err(e) = reporter.close(env.config.runner.report_close_timeout).await {
        tracing::error!(task = task.id, error = %e, "giving up reporting the task");
    }
    if let Some((dir, token)) = cleanup {
        if let Some(cache) = &env.cache {
            cache.revoke_job(&token);
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot remove task directory");
        }
    }
    tracing::info!(task = task.id, %result, "task finished");
    result
}

async fn run_prepared(
    env: &TaskEnv,
    prepared: Prepared,
    reporter: &Reporter,
    job_cancel: &CancellationToken,
    received: std::time::Instant,
) -> (Outcome, BTreeMap<String, String>) {
    let mut prepared = prepared;
    let caller = prepared
        .spec
        .workflow
        .job(&prepared.spec.job_id)
        .is_some_and(|j| j.is_reusable());
    match labels::pick(&env.labels, &prepared.runs_on) {
        Some(Label {
            schema: Schema::Docker(image),
            ..
        }) => prepared.spec.container_image = Some(image.clone()),
        Some(_) => {}
        // A caller job has no runs-on of its own: its called jobs pick their platforms.
        None if caller => {}
        None => reporter.log(&format!(
            "##[warning]none of this runner's labels matches runs-on {:?}; running on the host",
            prepared.runs_on
        )),
    }
    match exec::job_condition(&prepared.spec) {
        Ok(true) => {}
        Ok(false) => {
            reporter.log("Skipping the job: its `if:` condition is false");
            return (Outcome::Skipped, BTreeMap::new());
        }
        Err(e) => {
            reporter.log(&format!("##[error]{e}"));
            return (Outcome::Failure, BTreeMap::new());
        }
    }
    if caller {
        return run_caller(env, prepared, reporter, job_cancel).await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let forward = {
        let (reporter, metrics) = (reporter.clone(), env.metrics.clone());
        tokio::spawn(async move {
            let mut first = true;
            while let Some(event) = rx.recv().await {
                if first && matches!(event, exec::Event::StepStarted { .. }) {
                    first = false;
                    let latency = received.elapsed();
                    tracing::debug!(?latency, "first step started");
                    metrics.job_started(latency);
                }
                reporter.handle(&event);
            }
        })
    };
    let timeout = env.config.runner.timeout;
    let timer = {
        let (job_cancel, reporter) = (job_cancel.clone(), reporter.clone());
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            reporter.log(&format!(
                "##[error]The job exceeded the runner's timeout of {timeout:?} and is cancelled"
            ));
            job_cancel.cancel();
        })
    };
    let result = exec::run_job(prepared.spec, prepared.exec, tx, job_cancel.clone()).await;
    timer.abort();
    let _ = forward.await;
    (result.result, result.outputs)
}

/// A job calling a reusable workflow, as older Gitea sends it (newer Gitea expands the call on
/// the server and sends the called jobs instead): the called workflow's jobs run here, one after
/// another by their `needs`, all in the job's log, as act_runner runs them. `./` workflows come
/// from the repository on the instance at the run's commit, `owner/repo/…@ref` ones from the
/// instance too.
async fn run_caller(
    env: &TaskEnv,
    prepared: Prepared,
    reporter: &Reporter,
    job_cancel: &CancellationToken,
) -> (Outcome, BTreeMap<String, String>) {
    let address = env.address.trim_end_matches('/').to_string();
    let sha = prepared
        .spec
        .github
        .get("sha")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let sources = CallSources {
        local: LocalWorkflows::Repository {
            url: format!("{address}/{}", prepared.repository),
            repo: prepared.repository.clone(),
            sha,
        },
        workflows_url: address,
        platforms: env
            .labels
            .iter()
            .filter_map(|l| match &l.schema {
                Schema::Docker(image) => Some((l.name.clone(), image.clone())),
                _ => None,
            })
            .collect(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let forward = {
        let reporter = reporter.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match event {
                    RunEvent::JobStarted { name, .. } => {
                        reporter.log(&format!("Job {name} started"))
                    }
                    RunEvent::JobSkipped { name, reason, .. } => {
                        reporter.log(&format!("Job {name} skipped: {reason}"))
                    }
                    RunEvent::JobFinished { name, result, .. } => {
                        reporter.log(&format!("Job {name} finished: {result}"))
                    }
                    RunEvent::Job {
                        event: exec::Event::Log { time, line, .. },
                        ..
                    } => reporter.handle(&exec::Event::Log {
                        step: None,
                        time,
                        line,
                    }),
                    RunEvent::Job { .. } => {}
                }
            }
        })
    };
    let result = run_caller_job(
        prepared.spec,
        prepared.exec,
        sources,
        tx,
        job_cancel.clone(),
    )
    .await;
    let _ = forward.await;
    (result.result, result.outputs)
}

/// Turn the task into a job spec. Errors name what is wrong with the payload.
fn prepare(env: &TaskEnv, task: &proto::Task, context: &Value) -> Result<Prepared, String> {
    let payload = task
        .workflow_payload
        .as_deref()
        .ok_or("the task has no workflow payload")?;
    let payload = std::str::from_utf8(payload)
        .map_err(|_| "the task's workflow payload is not UTF-8".to_string())?;
    let file = context
        .get("workflow")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("workflow.yml")
        .to_string();
    let workflow = Workflow::parse_job_payload(&file, payload)
        .map_err(|e| format!("invalid workflow in task {}: {e}", task.id))?;
    if workflow.jobs.len() != 1 {
        return Err(format!(
            "the task's workflow has {} jobs; Gitea sends exactly one",
            workflow.jobs.len()
        ));
    }
    let (job_id, job) = {
        let (id, job) = workflow.jobs.iter().next().expect("one job");
        (id.to_string(), job.clone())
    };
    let matrix: Map<String, Value> = match job.matrix() {
        Some(m) => m
            .expand_literal()
            .ok()
            .and_then(|c| c.into_iter().next())
            .unwrap_or_default(),
        None => Map::new(),
    };
    let strategy = job.strategy.clone().unwrap_or_default();
    let strategy_ctx = json!({
        "fail-fast": true,
        "job-index": strategy.job_index.clone().unwrap_or(json!(0)),
        "job-total": strategy.job_total.clone().unwrap_or(json!(1)),
        "max-parallel": 1,
    });

    let address = env.address.trim_end_matches('/').to_string();
    let secrets: BTreeMap<String, String> = task
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vars: BTreeMap<String, String> = task
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let token = secrets
        .get("GITEA_TOKEN")
        .or_else(|| secrets.get("GITHUB_TOKEN"))
        .cloned()
        .or_else(|| {
            context
                .get("token")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut github = context.clone();
    if let Some(g) = github.as_object_mut() {
        g.insert("server_url".into(), json!(address));
        g.insert("api_url".into(), json!(format!("{address}/api/v1")));
        g.insert("graphql_url".into(), json!(""));
        g.insert("token".into(), json!(token));
        g.insert("job".into(), json!(job_id));
        g.remove("gitea_runtime_token");
    }
    let mut needs = Map::new();
    for (id, need) in &task.needs {
        let result = proto::Result::try_from(need.result).unwrap_or(proto::Result::Unspecified);
        let result = match result {
            proto::Result::Success => "success",
            proto::Result::Failure => "failure",
            proto::Result::Cancelled => "cancelled",
            proto::Result::Skipped => "skipped",
            proto::Result::Unspecified => "",
        };
        let outputs: BTreeMap<&String, &String> = need.outputs.iter().collect();
        needs.insert(id.clone(), json!({ "result": result, "outputs": outputs }));
    }
    let inputs = workflow.inputs_for(
        context
            .get("event_name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        context.get("event").unwrap_or(&Value::Null),
    );
    let repository = context
        .get("repository")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or("unknown/repository")
        .to_string();
    let safe_repo: String = repository
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '/' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .replace("..", "_");
    let task_dir = env.workdir_parent.join(task.id.to_string());
    let workspace = task_dir.join(&safe_repo);
    std::fs::create_dir_all(&workspace)
        .map_err(|e| format!("cannot create {}: {e}", workspace.display()))?;

    let runtime_token = context
        .get("gitea_runtime_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| token.clone());
    let mut exec = env.exec.clone();
    let mut actions_url = context
        .get("gitea_default_actions_url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .unwrap_or("https://github.com")
        .trim_end_matches('/')
        .to_string();
    if actions_url == "https://github.com" && !env.config.runner.github_mirror.is_empty() {
        actions_url = env
            .config
            .runner
            .github_mirror
            .trim_end_matches('/')
            .to_string();
    }
    exec.default_actions_url = actions_url;
    exec.insecure_actions = env.config.runner.insecure;
    exec.clone_token = Some(CloneToken {
        origin: address.clone(),
        token: token.clone(),
    });
    exec.local_checkout = false;
    exec.env
        .insert("GITEA_ACTIONS_RUNNER_VERSION".into(), env.version.clone());
    exec.env.insert(
        "ACTIONS_RUNTIME_URL".into(),
        format!("{address}/api/actions_pipeline/"),
    );
    exec.env
        .insert("ACTIONS_RESULTS_URL".into(), address.clone());
    exec.env
        .insert("ACTIONS_RUNTIME_TOKEN".into(), runtime_token.clone());
    if let Some(run_id) = context.get("run_id").and_then(Value::as_str) {
        exec.env.insert("GITEA_RUN_ID".into(), run_id.to_string());
    }
    if !env.capabilities.is_empty() {
        exec.env.insert(
            "GITEA_ACTIONS_CAPABILITIES".into(),
            env.capabilities.join(","),
        );
    }
    if !env.config.cache.external_server.is_empty() {
        exec.env.insert(
            "ACTIONS_CACHE_URL".into(),
            env.config.cache.external_server.clone(),
        );
    } else if let Some(cache) = &env.cache {
        exec.env.insert("ACTIONS_CACHE_URL".into(), cache.url());
    }
    let runs_on = job.runs_on.as_ref().map(|r| r.labels()).unwrap_or_default();
    let steps = job.steps.len();
    let spec = JobSpec {
        workflow: Arc::new(workflow),
        job_id,
        matrix,
        strategy: strategy_ctx,
        github,
        secrets,
        vars,
        needs: Value::Object(needs),
        inputs,
        workspace,
        masks: vec![runtime_token.clone(), token],
        container_image: None,
    };
    Ok(Prepared {
        spec,
        exec,
        steps,
        runs_on,
        task_dir,
        runtime_token,
        repository,
    })
}
