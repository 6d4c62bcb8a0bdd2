//! Running a whole workflow locally (`kiln exec`): jobs planned by `needs`, matrices expanded,
//! job `if:` evaluated, `needs` outputs passed on. Each job runs through [`crate::exec::run_job`],
//! the same code the runner daemon uses for a job it gets from Gitea.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::exec::{self, ActionCache, Event, ExecConfig, JobResult, JobSpec, Outcome};
use crate::expr::{self, Contexts};
use crate::model::{self, BoolOrExpr, NumberOrExpr, Workflow};
use crate::reusable::{self, LocalWorkflows, WorkflowRef};

mod github;
use github::github_context;

/// What to run.
#[derive(Debug, Clone)]
pub struct LocalRun {
    pub workflow: Arc<Workflow>,
    /// Run only this job (and the jobs it needs).
    pub job: Option<String>,
    pub event_name: String,
    pub event: Value,
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    /// `--matrix key:value` filters: only combinations with these values run.
    pub matrix_filter: Vec<(String, String)>,
    /// The repository checkout the jobs run in.
    pub workspace: PathBuf,
    /// `github.server_url`.
    pub server_url: String,
    /// `runs-on` labels whose jobs run in a container of an image (`ubuntu-latest` →
    /// `node:20-bookworm`), like the `docker://` labels of a runner.
    pub platforms: Vec<(String, String)>,
}

/// A progress report of a workflow run.
#[derive(Debug, Clone)]
pub enum RunEvent {
    JobStarted {
        key: String,
        name: String,
    },
    Job {
        key: String,
        event: Event,
    },
    JobSkipped {
        key: String,
        name: String,
        reason: String,
    },
    JobFinished {
        key: String,
        name: String,
        result: Outcome,
        duration: Duration,
    },
}

/// Results of the jobs that ran, by job id.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub results: BTreeMap<String, (Outcome, BTreeMap<String, String>)>,
    pub success: bool,
    /// The `inputs` the jobs saw.
    pub inputs: Value,
}

/// The planner recurses into called workflows, so its futures are boxed.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What every job of a run shares, called workflows included.
struct RunShared {
    github: Value,
    vars: BTreeMap<String, String>,
    /// `--matrix` filters; they apply to the top-level workflow only.
    matrix_filter: Vec<(String, String)>,
    workspace: PathBuf,
    platforms: Vec<(String, String)>,
    config: ExecConfig,
    tx: mpsc::UnboundedSender<RunEvent>,
    /// Where `./` reusable workflows are read.
    local: LocalWorkflows,
    /// Where `owner/repo/…@ref` reusable workflows are cloned from.
    workflows_url: String,
    actions: ActionCache,
    /// Values every job masks besides its secrets (a runner task's tokens).
    masks: Vec<String>,
}

/// One workflow being run: the top-level one, or one called by a job.
struct Scope {
    workflow: Arc<Workflow>,
    job_filter: Option<String>,
    secrets: BTreeMap<String, String>,
    inputs: Value,
    /// Prefix of job keys and names (`caller/`), empty at the top.
    prefix: String,
    depth: usize,
}

/// Run the planned jobs stage by stage. Errors are problems with the workflow itself (a cycle, an
/// unknown job, a matrix that does not evaluate); job failures are in the summary.
pub async fn run_workflow(
    run: LocalRun,
    config: ExecConfig,
    tx: mpsc::UnboundedSender<RunEvent>,
    cancel: CancellationToken,
) -> Result<RunSummary, String> {
    let shared = Arc::new(RunShared {
        github: github_context(&run),
        vars: run.vars.clone(),
        matrix_filter: run.matrix_filter.clone(),
        workspace: run.workspace.clone(),
        platforms: run.platforms.clone(),
        actions: ActionCache::new(&config),
        workflows_url: config.default_actions_url.clone(),
        config,
        tx,
        local: LocalWorkflows::Workspace(run.workspace.clone()),
        masks: Vec::new(),
    });
    let scope = Scope {
        workflow: run.workflow.clone(),
        job_filter: run.job.clone(),
        secrets: run.secrets.clone(),
        inputs: run.workflow.inputs_for(&run.event_name, &run.event),
        prefix: String::new(),
        depth: 0,
    };
    run_scope(shared, scope, cancel).await
}

/// Where a runner's caller job finds the workflows it calls.
#[derive(Debug, Clone)]
pub struct CallSources {
    /// Where `./` workflows are read.
    pub local: LocalWorkflows,
    /// Where `owner/repo/…@ref` workflows are cloned from.
    pub workflows_url: String,
    /// `runs-on` labels whose jobs run in a container of an image.
    pub platforms: Vec<(String, String)>,
}

/// Run one job that calls a reusable workflow (`jobs.<id>.uses`), as the runner daemon gets it
/// from Gitea: the called workflow's jobs run here, in `needs` order, and the job's result and
/// outputs are those of the call. The job's own `if:` has been evaluated by the caller.
pub async fn run_caller_job(
    spec: JobSpec,
    config: ExecConfig,
    sources: CallSources,
    tx: mpsc::UnboundedSender<RunEvent>,
    cancel: CancellationToken,
) -> JobResult {
    let shared = Arc::new(RunShared {
        github: spec.github.clone(),
        vars: spec.vars.clone(),
        matrix_filter: Vec::new(),
        workspace: spec.workspace.clone(),
        platforms: sources.platforms,
        actions: ActionCache::new(&config),
        workflows_url: sources.workflows_url,
        config,
        tx,
        local: sources.local,
        masks: spec.masks.clone(),
    });
    let ctx = exec::job_contexts(&spec);
    let caller = Caller {
        workflow: spec.workflow.clone(),
        job_id: spec.job_id.clone(),
        key: spec.job_id.clone(),
        ctx,
        secrets: spec.secrets.clone(),
        depth: 0,
    };
    let (result, outputs) = call_workflow(shared, caller, cancel).await;
    JobResult {
        result,
        outputs,
        summary: String::new(),
    }
}

/// A job that calls a reusable workflow, with the contexts its `with:` and `secrets:` see.
struct Caller {
    workflow: Arc<Workflow>,
    job_id: String,
    /// The job's key in the run's events.
    key: String,
    ctx: Contexts,
    secrets: BTreeMap<String, String>,
    depth: usize,
}

/// Load the called workflow, bind its inputs and secrets, run its jobs and compute the
/// caller's outputs. Problems with the call fail the caller job with a log line.
fn call_workflow(
    shared: Arc<RunShared>,
    caller: Caller,
    cancel: CancellationToken,
) -> BoxFuture<(Outcome, BTreeMap<String, String>)> {
    Box::pin(async move {
        let log = |line: String| {
            let _ = shared.tx.send(RunEvent::Job {
                key: caller.key.clone(),
                event: Event::Log {
                    step: None,
                    time: std::time::SystemTime::now(),
                    line,
                },
            });
        };
        let fail = |message: String| {
            log(format!("##[error]{message}"));
            (Outcome::Failure, BTreeMap::new())
        };
        let job = caller
            .workflow
            .job(&caller.job_id)
            .expect("planned job exists");
        let file = &caller.workflow.file_name;
        let uses = job.uses.as_deref().unwrap_or_default();
        if caller.depth >= reusable::MAX_DEPTH {
            return fail(format!(
                "{file}: jobs.{}: reusable workflows nest deeper than {}",
                caller.job_id,
                reusable::MAX_DEPTH
            ));
        }
        let uses = match expr::interpolate(uses, &caller.ctx) {
            Ok(u) => u,
            Err(e) => return fail(format!("{file}: jobs.{}.uses: {e}", caller.job_id)),
        };
        let called = match WorkflowRef::parse(&uses, &shared.workflows_url) {
            Ok(r) => match reusable::load(&r, &shared.local, &shared.actions).await {
                Ok(w) => w,
                Err(e) => return fail(format!("{file}: jobs.{}: {e}", caller.job_id)),
            },
            Err(e) => return fail(format!("{file}: jobs.{}: {e}", caller.job_id)),
        };
        let call = called.on.workflow_call().cloned().unwrap_or_default();
        let bound = reusable::bind_inputs(&call, &job.with, &caller.ctx, &called.file_name)
            .and_then(|inputs| {
                reusable::bind_secrets(
                    &call,
                    &job.secrets,
                    &caller.secrets,
                    &caller.ctx,
                    &called.file_name,
                )
                .map(|secrets| (inputs, secrets))
            });
        let (inputs, secrets) = match bound {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let scope = Scope {
            workflow: Arc::new(called),
            job_filter: None,
            secrets,
            inputs: Value::Object(inputs),
            prefix: format!("{}/", caller.key),
            depth: caller.depth + 1,
        };
        let summary = match run_scope(shared.clone(), scope, cancel).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let results: Vec<Outcome> = summary.results.values().map(|(r, _)| *r).collect();
        let result = if results.contains(&Outcome::Failure) {
            Outcome::Failure
        } else if results.contains(&Outcome::Cancelled) {
            Outcome::Cancelled
        } else {
            Outcome::Success
        };
        let jobs: Map<String, Value> = summary
            .results
            .iter()
            .map(|(id, (r, o))| (id.clone(), json!({ "result": r.as_str(), "outputs": o })))
            .collect();
        let mut ctx = caller.ctx.clone();
        ctx.set("inputs", summary.inputs.clone());
        let (outputs, warnings) = reusable::caller_outputs(&call, Value::Object(jobs), &ctx);
        for w in warnings {
            log(format!("##[warning]{w}"));
        }
        (result, outputs)
    })
}

fn run_scope(
    shared: Arc<RunShared>,
    scope: Scope,
    cancel: CancellationToken,
) -> BoxFuture<Result<RunSummary, String>> {
    Box::pin(async move {
        let wf = scope.workflow.clone();
        let stages = model::plan(&wf, scope.job_filter.as_deref()).map_err(|e| e.to_string())?;
        let github = shared.github.clone();
        let mut summary = RunSummary {
            success: true,
            inputs: scope.inputs.clone(),
            ..Default::default()
        };
        let matrix_filter = if scope.depth == 0 {
            shared.matrix_filter.clone()
        } else {
            Vec::new()
        };
        for stage in stages {
            let mut handles = Vec::new();
            for job_id in stage {
                let job = wf
                    .job(&job_id)
                    .ok_or_else(|| format!("{}: no job `{job_id}`", wf.file_name))?;
                let needs = needs_context(&job.needs, &summary);
                let base = JobSpec {
                    workflow: wf.clone(),
                    job_id: job_id.clone(),
                    matrix: Map::new(),
                    strategy: json!({}),
                    github: github.clone(),
                    secrets: scope.secrets.clone(),
                    vars: shared.vars.clone(),
                    needs: needs.clone(),
                    inputs: scope.inputs.clone(),
                    workspace: shared.workspace.clone(),
                    container_image: job
                        .runs_on
                        .as_ref()
                        .map(|r| r.labels())
                        .unwrap_or_default()
                        .iter()
                        .find_map(|label| {
                            shared
                                .platforms
                                .iter()
                                .find(|(name, _)| name == label)
                                .map(|(_, image)| image.clone())
                        }),
                    masks: shared.masks.clone(),
                };
                let ctx = exec::job_contexts(&base);
                let name = format!(
                    "{}{}",
                    scope.prefix,
                    job.name.clone().unwrap_or_else(|| job_id.clone())
                );
                let condition = job.if_cond.clone().unwrap_or_default();
                match expr::evaluate_condition(&condition, &ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = shared.tx.send(RunEvent::JobSkipped {
                            key: format!("{}{job_id}", scope.prefix),
                            name,
                            reason: if condition.is_empty() {
                                "a job it needs did not succeed".into()
                            } else {
                                format!("`if: {condition}` is false")
                            },
                        });
                        summary
                            .results
                            .insert(job_id.clone(), (Outcome::Skipped, BTreeMap::new()));
                        continue;
                    }
                    Err(e) => return Err(format!("{}: jobs.{job_id}.if: {e}", wf.file_name)),
                }
                let combos = expand(&wf, &job_id, &ctx, &matrix_filter)?;
                let strategy = job.strategy.clone().unwrap_or_default();
                let fail_fast = match &strategy.fail_fast {
                    None => true,
                    Some(BoolOrExpr::Bool(b)) => *b,
                    Some(BoolOrExpr::Expr(e)) => expr::interpolate_value(e, &ctx)
                        .map(|v| expr::is_truthy(&v))
                        .unwrap_or(true),
                };
                let max_parallel = match &strategy.max_parallel {
                    None => combos.len().max(1),
                    Some(NumberOrExpr::Number(n)) => (*n as usize).max(1),
                    Some(NumberOrExpr::Expr(e)) => expr::interpolate_value(e, &ctx)
                        .ok()
                        .and_then(|v| v.as_f64())
                        .map(|n| (n as usize).max(1))
                        .unwrap_or(combos.len().max(1)),
                };
                let continue_on_error = match &job.continue_on_error {
                    None => false,
                    Some(BoolOrExpr::Bool(b)) => *b,
                    Some(BoolOrExpr::Expr(e)) => expr::interpolate_value(e, &ctx)
                        .map(|v| expr::is_truthy(&v))
                        .unwrap_or(false),
                };
                let key_order = job.matrix().map(|m| m.key_order()).unwrap_or_default();
                let has_matrix = job.matrix().is_some();
                let total = combos.len();
                let limiter = Arc::new(tokio::sync::Semaphore::new(max_parallel));
                let matrix_cancel = cancel.child_token();
                let mut job_handles = Vec::new();
                for (index, combo) in combos.into_iter().enumerate() {
                    let mut spec = base.clone();
                    spec.strategy = json!({
                        "fail-fast": fail_fast,
                        "job-index": index,
                        "job-total": total,
                        "max-parallel": max_parallel,
                    });
                    let mut display =
                        model::job_display_name(&job_id, job.name.as_deref(), &combo, &key_order);
                    spec.matrix = combo;
                    let mut combo_ctx = ctx.clone();
                    combo_ctx.set("matrix", Value::Object(spec.matrix.clone()));
                    combo_ctx.set("strategy", spec.strategy.clone());
                    if model::types::is_expression(&display) {
                        display = expr::interpolate(&display, &combo_ctx).unwrap_or(display);
                    }
                    let display = format!("{}{display}", scope.prefix);
                    let key = if has_matrix {
                        format!("{}{job_id} ({index})", scope.prefix)
                    } else {
                        format!("{}{job_id}", scope.prefix)
                    };
                    let caller = job.is_reusable().then(|| Caller {
                        workflow: wf.clone(),
                        job_id: job_id.clone(),
                        key: key.clone(),
                        ctx: combo_ctx,
                        secrets: scope.secrets.clone(),
                        depth: scope.depth,
                    });
                    let (shared, limiter, job_cancel) =
                        (shared.clone(), limiter.clone(), matrix_cancel.clone());
                    job_handles.push(tokio::spawn(async move {
                        let _permit = limiter.acquire_owned().await;
                        if job_cancel.is_cancelled() {
                            return (Outcome::Cancelled, BTreeMap::new());
                        }
                        let started = Instant::now();
                        let tx = shared.tx.clone();
                        let _ = tx.send(RunEvent::JobStarted {
                            key: key.clone(),
                            name: display.clone(),
                        });
                        let (result, outputs) = match caller {
                            Some(caller) => call_workflow(shared, caller, job_cancel.clone()).await,
                            None => {
                                let (etx, mut erx) = mpsc::unbounded_channel();
                                let forward = {
                                    let (tx, key) = (tx.clone(), key.clone());
                                    tokio::spawn(async move {
                                        while let Some(event) = erx.recv().await {
                                            let _ = tx.send(RunEvent::Job {
                                                key: key.clone(),
                                                event,
                                            });
                                        }
                                    })
                                };
                                let config = shared.config.clone();
                                let r = exec::run_job(spec, config, etx, job_cancel.clone()).await;
                                let _ = forward.await;
                                (r.result, r.outputs)
                            }
                        };
                        if result == Outcome::Failure && fail_fast {
                            job_cancel.cancel();
                        }
                        let _ = tx.send(RunEvent::JobFinished {
                            key,
                            name: display,
                            result,
                            duration: started.elapsed(),
                        });
                        (result, outputs)
                    }));
                }
                handles.push((job_id.clone(), continue_on_error, job_handles));
            }
            for (job_id, continue_on_error, job_handles) in handles {
                // A matrix job fails when any combination fails; outputs of the combinations are merged
                // in order, later ones winning, as GitHub does.
                let mut result = Outcome::Success;
                let mut outputs = BTreeMap::new();
                for h in job_handles {
                    let (r, o) = h.await.map_err(|e| e.to_string())?;
                    result = match (result, r) {
                        (Outcome::Failure, _) | (_, Outcome::Failure) => Outcome::Failure,
                        (Outcome::Cancelled, _) | (_, Outcome::Cancelled) => Outcome::Cancelled,
                        _ => Outcome::Success,
                    };
                    outputs.extend(o);
                }
                if result != Outcome::Success && !continue_on_error {
                    summary.success = false;
                }
                let reported = if result == Outcome::Failure && continue_on_error {
                    Outcome::Success
                } else {
                    result
                };
                summary.results.insert(job_id, (reported, outputs));
            }
        }
        Ok(summary)
    })
}

fn needs_context(needs: &[String], summary: &RunSummary) -> Value {
    let mut m = Map::new();
    for n in needs {
        let (result, outputs) = summary
            .results
            .get(n)
            .cloned()
            .unwrap_or((Outcome::Skipped, BTreeMap::new()));
        m.insert(
            n.clone(),
            json!({ "result": result.as_str(), "outputs": outputs }),
        );
    }
    Value::Object(m)
}

fn expand(
    wf: &Workflow,
    job_id: &str,
    ctx: &Contexts,
    filter: &[(String, String)],
) -> Result<Vec<Map<String, Value>>, String> {
    let job = wf.job(job_id).expect("planned job exists");
    let Some(matrix) = job.matrix() else {
        return Ok(vec![Map::new()]);
    };
    let err = |e: String| format!("{}: jobs.{job_id}.strategy.matrix: {e}", wf.file_name);
    let value = evaluate_strings(&matrix.to_value(), ctx).map_err(err)?;
    let combos = model::expand_matrix(&value, &matrix.key_order()).map_err(err)?;
    let combos: Vec<_> = combos
        .into_iter()
        .filter(|c| {
            filter
                .iter()
                .all(|(k, v)| c.get(k).is_none_or(|x| expr::to_display_string(x) == *v))
        })
        .collect();
    if combos.is_empty() {
        return Err(err(
            "no combination is left to run (check --matrix filters and exclude)".into(),
        ));
    }
    Ok(combos)
}

/// Evaluate every `${{ }}` string in a JSON value, keeping the types of whole-expression strings.
fn evaluate_strings(v: &Value, ctx: &Contexts) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if model::types::is_expression(s) => {
            expr::interpolate_value(s, ctx).map_err(|e| e.to_string())?
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| evaluate_strings(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, x) in o {
                m.insert(k.clone(), evaluate_strings(x, ctx)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}
