//! Steps: pre, main and post stages with their conditions, `continue-on-error` and timeouts,
//! `uses:` resolved to JavaScript, composite, Docker or native actions with their inputs, and
//! composite actions' own steps. How a process runs is in `launch.rs`; Docker and native
//! actions in `delegated.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::actions::{ActionRef, LoadedAction};
use super::delegated::DockerStep;
use super::env::ActionIdentity;
use super::output::action_header;
use super::{Event, JobSpec, Outcome, Runner};
use crate::expr::{self, Contexts, Status};
use crate::model::{Action, NumberOrExpr, Runs, Step};
use crate::process::Exit;

/// Composite actions may nest; this bounds runaway recursion.
const MAX_DEPTH: usize = 10;

/// Where steps run: the job's steps, or the steps of one composite action.
pub(crate) struct Scope {
    /// The `steps` context of this scope.
    pub steps: Map<String, Value>,
    pub status: Status,
    /// The `inputs` context inside a composite action.
    pub inputs: Option<Value>,
    /// Environment layered over the job's (the `env:` of the step that called a composite action).
    pub env: BTreeMap<String, String>,
    /// The job step that output is attributed to.
    pub log_step: Option<usize>,
    /// `github.action_path` inside a composite action.
    pub action_path: Option<PathBuf>,
    pub depth: usize,
}

impl Scope {
    pub fn job() -> Scope {
        Scope {
            steps: Map::new(),
            status: Status::Success,
            inputs: None,
            env: BTreeMap::new(),
            log_step: None,
            action_path: None,
            depth: 0,
        }
    }
}

/// A JavaScript action's `post` to run when the job ends.
pub(crate) struct PostStep {
    pub display: String,
    pub action: LoadedAction,
    pub env: BTreeMap<String, String>,
    pub identity: ActionIdentity,
    pub state: BTreeMap<String, String>,
    /// A Docker action's `post-entrypoint` run.
    pub docker: Option<DockerStep>,
}

/// What running a process left behind.
pub(crate) struct ProcessResult {
    pub exit: Exit,
    pub outputs: BTreeMap<String, String>,
    pub state: BTreeMap<String, String>,
}

/// The result of a step's body.
pub(super) struct StepRun {
    pub outcome: Outcome,
    pub outputs: BTreeMap<String, String>,
}

impl StepRun {
    pub(super) fn failed() -> StepRun {
        StepRun {
            outcome: Outcome::Failure,
            outputs: BTreeMap::new(),
        }
    }
}

/// The `inputs` context of an action step.
pub(super) type ActionInputs = Map<String, Value>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runner {
    /// The contexts seen by expressions of a step in `scope` with environment `env`.
    pub(crate) fn contexts(&self, scope: &Scope, env: &BTreeMap<String, String>) -> Contexts {
        let mut ctx = self.state.ctx.clone();
        ctx.set("steps", Value::Object(scope.steps.clone()));
        if let Some(inputs) = &scope.inputs {
            ctx.set("inputs", inputs.clone());
        }
        ctx.set("env", json!(env));
        if let Some(path) = &scope.action_path {
            for name in ["github", "gitea"] {
                if let Some(Value::Object(g)) = ctx.values.get_mut(name) {
                    g.insert("action_path".into(), json!(path.to_string_lossy()));
                }
            }
        }
        ctx.status = scope.status;
        ctx
    }

    fn scope_env(&self, scope: &Scope) -> BTreeMap<String, String> {
        let mut env = self.state.env.clone();
        env.extend(scope.env.clone());
        env
    }

    /// Fetch every remote action the job's steps use, before any step runs (as the runner does in
    /// "Set up job"), so a missing action fails the job early with a clear message.
    pub(crate) async fn prepare_actions(&mut self, spec: &JobSpec) -> Result<(), String> {
        let job = spec.workflow.job(&spec.job_id).expect("job exists");
        let mut announced = false;
        for (index, step) in job.steps.iter().enumerate() {
            let Some(uses) = &step.uses else { continue };
            let step_name = step.display_name(index);
            let action = ActionRef::parse(uses, &self.config.default_actions_url).map_err(|e| {
                format!(
                    "{}: job `{}`, step `{step_name}`: {e}",
                    spec.workflow.file_name, spec.job_id
                )
            })?;
            if self.skips_checkout(&action, step)
                || self.native_for(&action, &self.state.env, step).is_some()
            {
                continue;
            }
            if let ActionRef::Remote { .. } = &action {
                // act_runner's rows: one header, then each action with the commit it resolved to.
                if !announced {
                    self.out.log(None, "Prepare all required actions");
                    announced = true;
                }
                let tree = self.actions.fetch(&action).await.map_err(|e| {
                    format!(
                        "{}: job `{}`, step `{step_name}`: {e}",
                        spec.workflow.file_name, spec.job_id
                    )
                })?;
                let sha = tree
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                self.out.log(
                    None,
                    &format!("Download action repository '{uses}' (SHA:{sha})"),
                );
            }
        }
        Ok(())
    }

    /// The pre step of a remote JavaScript action.
    pub(crate) async fn run_pre(
        &mut self,
        index: usize,
        step: &Step,
        scope: &Scope,
        cancel: &CancellationToken,
    ) {
        let Some(uses) = &step.uses else { return };
        let Ok(action_ref @ ActionRef::Remote { .. }) =
            ActionRef::parse(uses, &self.config.default_actions_url)
        else {
            return;
        };
        let Ok(loaded) = self.actions.load(&action_ref, &self.workspace).await else {
            return;
        };
        let (pre_if, node_pre, docker_pre) = match &loaded.action.runs {
            Runs::Node {
                pre: Some(pre),
                pre_if,
                ..
            } => (pre_if.clone(), Some(pre.clone()), None),
            Runs::Docker {
                pre_entrypoint: Some(entry),
                pre_if,
                ..
            } => (pre_if.clone(), None, Some(entry.clone())),
            _ => return,
        };
        let env = self.scope_env(scope);
        let ctx = self.contexts(scope, &env);
        let condition = pre_if.unwrap_or_else(|| "always()".into());
        match expr::evaluate_condition(&condition, &ctx) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                self.out
                    .log(None, &format!("##[error]pre-if of {uses}: {e}"));
                return;
            }
        }
        let display = format!("Pre {}", self.step_display(step, index, &ctx));
        self.out.log(None, &format!("::group::{display}"));
        let Ok((inputs_env, inputs)) = self.action_inputs(&loaded.action, step, &ctx) else {
            return;
        };
        let env = self.step_env(step, &env, &ctx).unwrap_or(env);
        let identity = self.identity(step, index, &action_ref, &loaded);
        if let Some(entrypoint) = docker_pre {
            let prepared = self
                .prepare_docker_action(
                    None,
                    &loaded,
                    &action_ref,
                    step,
                    &ctx,
                    &inputs,
                    inputs_env,
                    &env,
                    &display,
                    cancel,
                )
                .await;
            match prepared {
                Ok((container, env)) => {
                    let container = DockerStep {
                        entrypoint: Some(entrypoint),
                        ..container
                    };
                    self.run_docker_step(None, container, &env, &identity, None, cancel)
                        .await;
                }
                Err(e) => self.out.log(None, &format!("##[error]{e}")),
            }
            self.out.log(None, "::endgroup::");
            return;
        }
        let Some(pre) = node_pre else { return };
        let mut env = env;
        env.extend(inputs_env);
        let result = self
            .run_node(
                None,
                &loaded,
                &pre,
                &env,
                &identity,
                &BTreeMap::new(),
                None,
                cancel,
            )
            .await;
        self.out.log(None, "::endgroup::");
        match result {
            Ok(r) => {
                self.state.action_state.insert(index, r.state);
            }
            Err(e) => self.out.log(None, &format!("##[error]{e}")),
        }
    }

    /// A main step of the job: reports start and end and records the `steps` context.
    pub(crate) async fn run_main(
        &mut self,
        index: usize,
        step: &Step,
        scope: &mut Scope,
        cancel: &CancellationToken,
    ) {
        let started = Instant::now();
        let env = self.scope_env(scope);
        let ctx = self.contexts(scope, &env);
        let display = self.step_display(step, index, &ctx);
        self.out.send(Event::StepStarted {
            step: index,
            name: display.clone(),
        });
        scope.log_step = Some(index);
        let (outcome, conclusion) = self.run_step(index, step, scope, &display, cancel).await;
        scope.log_step = None;
        self.out.send(Event::StepFinished {
            step: index,
            outcome,
            conclusion,
            duration: started.elapsed(),
        });
    }

    /// Post steps registered by JavaScript actions; `post-if` defaults to `always()`.
    pub(crate) async fn run_post(
        &mut self,
        post: PostStep,
        scope: &Scope,
        cancel: &CancellationToken,
    ) {
        let (post_if, node_post) = match &post.action.action.runs {
            Runs::Node {
                post: Some(main),
                post_if,
                ..
            } => (post_if.clone(), Some(main.clone())),
            Runs::Docker { post_if, .. } if post.docker.is_some() => (post_if.clone(), None),
            _ => return,
        };
        let env = self.scope_env(scope);
        let ctx = self.contexts(scope, &env);
        let condition = post_if.unwrap_or_else(|| "always()".into());
        match expr::evaluate_condition(&condition, &ctx) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                self.out
                    .log(None, &format!("##[error]post-if of {}: {e}", post.display));
                return;
            }
        }
        self.out
            .log(None, &format!("::group::Post {}", post.display));
        if let Some(container) = post.docker.clone() {
            // Errors and the exit code are logged by the run itself.
            self.run_docker_step(None, container, &post.env, &post.identity, None, cancel)
                .await;
            self.out.log(None, "::endgroup::");
            return;
        }
        let Some(main) = node_post else { return };
        let result = self
            .run_node(
                None,
                &post.action,
                &main,
                &post.env,
                &post.identity,
                &post.state,
                None,
                cancel,
            )
            .await;
        self.out.log(None, "::endgroup::");
        match result {
            Ok(r) if !r.exit.success() => self.out.log(None, &format!("##[error]{}", r.exit)),
            Ok(_) => {}
            Err(e) => self.out.log(None, &format!("##[error]{e}")),
        }
    }

    pub(crate) fn step_display(&self, step: &Step, index: usize, ctx: &Contexts) -> String {
        match &step.name {
            Some(name) => expr::interpolate(name, ctx).unwrap_or_else(|_| name.clone()),
            None => step.display_name(index),
        }
    }

    /// Evaluate `if`, run the body, update the scope's status and `steps` context.
    fn run_step<'a>(
        &'a mut self,
        index: usize,
        step: &'a Step,
        scope: &'a mut Scope,
        display: &'a str,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, (Outcome, Outcome)> {
        Box::pin(async move {
            let env = self.scope_env(scope);
            let ctx = self.contexts(scope, &env);
            let log_step = scope.log_step;
            let condition = step.if_cond.clone().unwrap_or_default();
            let run = match expr::evaluate_condition(&condition, &ctx) {
                Err(e) => {
                    self.out.log(
                        log_step,
                        &format!("##[error]The step's `if` is invalid: {e}"),
                    );
                    Some(StepRun::failed())
                }
                Ok(false) => None,
                Ok(true) => {
                    // Steps inside a composite action get a group each; job steps have their own
                    // section in the log.
                    let nested = scope.depth > 0;
                    if nested {
                        self.out.log(log_step, &format!("::group::{display}"));
                    }
                    let run = self
                        .run_body(index, step, scope, display, &env, cancel)
                        .await;
                    if nested {
                        self.out.log(log_step, "::endgroup::");
                    }
                    Some(run)
                }
            };
            let (outcome, outputs, continue_on_error) = match run {
                None => (Outcome::Skipped, BTreeMap::new(), false),
                Some(run) => {
                    let step_env = self.step_env(step, &env, &ctx).unwrap_or(env.clone());
                    let ctx = self.contexts(scope, &step_env);
                    let coe = match self.eval_bool(&step.continue_on_error, &ctx) {
                        Ok(b) => b,
                        Err(e) => {
                            self.out
                                .log(log_step, &format!("##[error]continue-on-error: {e}"));
                            false
                        }
                    };
                    (run.outcome, run.outputs, coe)
                }
            };
            let conclusion = if outcome == Outcome::Failure && continue_on_error {
                Outcome::Success
            } else {
                outcome
            };
            match conclusion {
                Outcome::Failure if scope.status == Status::Success => {
                    scope.status = Status::Failure
                }
                Outcome::Cancelled => scope.status = Status::Cancelled,
                _ => {}
            }
            if let Some(id) = &step.id {
                scope.steps.insert(
                    id.clone(),
                    json!({ "outputs": outputs, "outcome": outcome.as_str(), "conclusion": conclusion.as_str() }),
                );
            }
            (outcome, conclusion)
        })
    }

    /// The step's own `env:`, interpolated, over `base`.
    fn step_env(
        &self,
        step: &Step,
        base: &BTreeMap<String, String>,
        ctx: &Contexts,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut env = base.clone();
        for (k, v) in step.env.iter() {
            let value = expr::interpolate(v, ctx).map_err(|e| format!("env.{k}: {e}"))?;
            env.insert(k.to_string(), value);
        }
        Ok(env)
    }

    async fn run_body(
        &mut self,
        index: usize,
        step: &Step,
        scope: &mut Scope,
        display: &str,
        base_env: &BTreeMap<String, String>,
        cancel: &CancellationToken,
    ) -> StepRun {
        let log_step = scope.log_step;
        let ctx = self.contexts(scope, base_env);
        let env = match self.step_env(step, base_env, &ctx) {
            Ok(env) => env,
            Err(e) => {
                self.out.log(log_step, &format!("##[error]{e}"));
                return StepRun::failed();
            }
        };
        let ctx = self.contexts(scope, &env);
        let timeout = match self.eval_timeout(&step.timeout_minutes, &ctx) {
            Ok(t) => t,
            Err(e) => {
                self.out
                    .log(log_step, &format!("##[error]timeout-minutes: {e}"));
                return StepRun::failed();
            }
        };
        if let Some(run) = &step.run {
            return self
                .run_script(step, run, scope, &env, &ctx, timeout, cancel)
                .await;
        }
        // A job step's action runs inside the group of its header, as with act_runner.
        let header = scope.depth == 0;
        if header {
            for row in action_header(step, &env) {
                self.out.log(log_step, &row);
            }
        }
        let run = self
            .run_uses(index, step, scope, display, &env, &ctx, timeout, cancel)
            .await;
        if header {
            self.out.log(log_step, "::endgroup::");
        }
        run
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_uses(
        &mut self,
        index: usize,
        step: &Step,
        scope: &mut Scope,
        display: &str,
        env: &BTreeMap<String, String>,
        ctx: &Contexts,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> StepRun {
        let log_step = scope.log_step;
        let uses = step.uses.as_deref().unwrap_or_default();
        let action_ref = match ActionRef::parse(uses, &self.config.default_actions_url) {
            Ok(r) => r,
            Err(e) => {
                self.out.log(log_step, &format!("##[error]{e}"));
                return StepRun::failed();
            }
        };
        if let ActionRef::Docker(image) = &action_ref {
            // `with: args` and `entrypoint` shape the container; every other input is INPUT_*.
            let mut env = env.clone();
            let (mut args, mut entrypoint) = (Vec::new(), None);
            for (k, v) in step.with.iter() {
                let value = match expr::interpolate(v, ctx) {
                    Ok(v) => v,
                    Err(e) => {
                        self.out.log(log_step, &format!("##[error]with.{k}: {e}"));
                        return StepRun::failed();
                    }
                };
                match k.to_ascii_lowercase().as_str() {
                    "args" => match shlex::split(&value) {
                        Some(words) => args = words,
                        None => {
                            self.out
                                .log(log_step, "##[error]with.args: unbalanced quotes");
                            return StepRun::failed();
                        }
                    },
                    "entrypoint" => entrypoint = Some(value),
                    _ => {
                        env.insert(input_var(k), value);
                    }
                }
            }
            let identity = ActionIdentity {
                action: step
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("__docker_{index}")),
                ..Default::default()
            };
            let container = DockerStep {
                display: display.to_string(),
                image: image.clone(),
                entrypoint,
                args,
            };
            return self
                .run_docker_step(log_step, container, &env, &identity, timeout, cancel)
                .await;
        }
        if let Some(native) = self.native_for(&action_ref, env, step) {
            return self
                .run_native(
                    native,
                    uses,
                    &action_ref,
                    step,
                    env,
                    ctx,
                    log_step,
                    timeout,
                    cancel,
                )
                .await;
        }
        if self.skips_checkout(&action_ref, step) {
            self.out.log(log_step, "Skipping actions/checkout: the job runs in the local checkout it was started from.");
            return StepRun {
                outcome: Outcome::Success,
                outputs: BTreeMap::new(),
            };
        }
        let loaded = match self.actions.load(&action_ref, &self.workspace).await {
            Ok(l) => l,
            Err(e) => {
                self.out.log(log_step, &format!("##[error]{e}"));
                return StepRun::failed();
            }
        };
        let (inputs_env, inputs) = match self.action_inputs(&loaded.action, step, ctx) {
            Ok(v) => v,
            Err(e) => {
                self.out.log(log_step, &format!("##[error]{e}"));
                return StepRun::failed();
            }
        };
        let identity = self.identity(step, index, &action_ref, &loaded);
        match &loaded.action.runs {
            Runs::Node { main, post, .. } => {
                let mut env = env.clone();
                env.extend(inputs_env.clone());
                let state = if scope.depth == 0 {
                    self.state
                        .action_state
                        .get(&index)
                        .cloned()
                        .unwrap_or_default()
                } else {
                    BTreeMap::new()
                };
                let result = self
                    .run_node(
                        log_step, &loaded, main, &env, &identity, &state, timeout, cancel,
                    )
                    .await;
                let run = match result {
                    Ok(r) => {
                        let outcome = self.exit_outcome(log_step, r.exit);
                        if post.is_some() && scope.depth == 0 {
                            let mut state = state;
                            state.extend(r.state);
                            self.state.posts.push(PostStep {
                                display: display.to_string(),
                                action: loaded.clone(),
                                env,
                                identity,
                                state,
                                docker: None,
                            });
                        }
                        StepRun {
                            outcome,
                            outputs: r.outputs,
                        }
                    }
                    Err(e) => {
                        self.out.log(log_step, &format!("##[error]{e}"));
                        StepRun::failed()
                    }
                };
                run
            }
            Runs::Composite { steps } => {
                if scope.depth + 1 > MAX_DEPTH {
                    self.out.log(log_step, &format!("##[error]Composite actions are nested more than {MAX_DEPTH} deep at `{uses}`"));
                    return StepRun::failed();
                }
                let mut inner = Scope {
                    steps: Map::new(),
                    status: Status::Success,
                    inputs: Some(Value::Object(inputs)),
                    env: {
                        let mut e = scope.env.clone();
                        for (k, _) in step.env.iter() {
                            if let Some(v) = env.get(k) {
                                e.insert(k.to_string(), v.clone());
                            }
                        }
                        e
                    },
                    log_step,
                    action_path: Some(loaded.dir.clone()),
                    depth: scope.depth + 1,
                };
                let composite_cancel = cancel.clone();
                let run_all = async {
                    for (i, inner_step) in steps.iter().enumerate() {
                        if composite_cancel.is_cancelled() && inner.status != Status::Cancelled {
                            inner.status = Status::Cancelled;
                        }
                        let ctx = self.contexts(&inner, &self.scope_env(&inner));
                        let name = self.step_display(inner_step, i, &ctx);
                        let _ = self
                            .run_step(i, inner_step, &mut inner, &name, &composite_cancel)
                            .await;
                    }
                };
                match timeout {
                    Some(t) => {
                        if tokio::time::timeout(t, run_all).await.is_err() {
                            self.out
                                .log(log_step, &format!("##[error]{}", Exit::TimedOut));
                            inner.status = Status::Failure;
                        }
                    }
                    None => run_all.await,
                }
                let env = self.scope_env(&inner);
                let ctx = self.contexts(&inner, &env);
                let mut outputs = BTreeMap::new();
                for (name, output) in loaded.action.outputs.iter() {
                    let Some(value) = &output.value else { continue };
                    match expr::interpolate(value, &ctx) {
                        Ok(v) => {
                            outputs.insert(name.to_string(), v);
                        }
                        Err(e) => self.out.log(
                            log_step,
                            &format!("##[warning]output `{name}` of {uses}: {e}"),
                        ),
                    }
                }
                let outcome = Outcome::from(inner.status);
                StepRun { outcome, outputs }
            }
            Runs::Docker {
                post_entrypoint, ..
            } => {
                let (container, env) = match self
                    .prepare_docker_action(
                        log_step,
                        &loaded,
                        &action_ref,
                        step,
                        ctx,
                        &inputs,
                        inputs_env,
                        env,
                        display,
                        cancel,
                    )
                    .await
                {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        self.out.log(log_step, &format!("##[error]{e}"));
                        return StepRun::failed();
                    }
                };
                if let (Some(post), 0) = (post_entrypoint, scope.depth) {
                    self.state.posts.push(PostStep {
                        display: display.to_string(),
                        action: loaded.clone(),
                        env: env.clone(),
                        identity: identity.clone(),
                        state: BTreeMap::new(),
                        docker: Some(DockerStep {
                            entrypoint: Some(post.clone()),
                            ..container.clone()
                        }),
                    });
                }
                self.run_docker_step(log_step, container, &env, &identity, timeout, cancel)
                    .await
            }
        }
    }

    /// `kiln exec` runs in the checkout it was started from: `actions/checkout` of that same
    /// repository has nothing to do.
    fn skips_checkout(&self, action: &ActionRef, step: &Step) -> bool {
        self.config.local_checkout
            && action.is_checkout()
            && !step.with.iter().any(|(k, _)| k == "repository")
    }

    pub(super) fn exit_outcome(&self, log_step: Option<usize>, exit: Exit) -> Outcome {
        match exit {
            Exit::Code(0) => Outcome::Success,
            Exit::Cancelled => {
                self.out.log(log_step, &format!("##[error]{exit}"));
                Outcome::Cancelled
            }
            exit => {
                self.out.log(log_step, &format!("##[error]{exit}"));
                Outcome::Failure
            }
        }
    }

    fn eval_timeout(
        &self,
        value: &Option<NumberOrExpr>,
        ctx: &Contexts,
    ) -> Result<Option<Duration>, String> {
        let minutes = match value {
            None => return Ok(None),
            Some(NumberOrExpr::Number(n)) => *n,
            Some(NumberOrExpr::Expr(e)) => {
                let v = expr::interpolate_value(e, ctx).map_err(|e| e.to_string())?;
                v.as_f64()
                    .or_else(|| expr::to_display_string(&v).trim().parse().ok())
                    .ok_or_else(|| format!("`{e}` is not a number"))?
            }
        };
        if !minutes.is_finite() || minutes <= 0.0 {
            return Err(format!("{minutes} is not a positive number of minutes"));
        }
        Ok(Some(Duration::from_secs_f64((minutes * 60.0).min(1e9))))
    }

    fn identity(
        &self,
        step: &Step,
        index: usize,
        action_ref: &ActionRef,
        loaded: &LoadedAction,
    ) -> ActionIdentity {
        let (repository, reference) = match action_ref {
            ActionRef::Remote {
                repo, reference, ..
            } => (repo.clone(), reference.clone()),
            _ => (String::new(), String::new()),
        };
        let action = match &step.id {
            Some(id) => id.clone(),
            None if repository.is_empty() => format!("__self_{index}"),
            None => format!("__{}", repository.replace('/', "_")),
        };
        ActionIdentity {
            action,
            path: Some(loaded.dir.clone()),
            repository,
            reference,
        }
    }

    /// `INPUT_*` variables and the `inputs` context of an action step: `with:` values, then the
    /// action's defaults (which may use expressions such as `${{ github.token }}`).
    fn action_inputs(
        &self,
        action: &Action,
        step: &Step,
        ctx: &Contexts,
    ) -> Result<(BTreeMap<String, String>, ActionInputs), String> {
        let mut env = BTreeMap::new();
        let mut inputs = Map::new();
        let mut given = BTreeMap::new();
        for (k, v) in step.with.iter() {
            let value = expr::interpolate(v, ctx).map_err(|e| format!("with.{k}: {e}"))?;
            given.insert(k.to_ascii_lowercase(), (k.to_string(), value));
        }
        for (name, input) in action.inputs.iter() {
            let value = match given.remove(&name.to_ascii_lowercase()) {
                Some((_, v)) => v,
                None => match &input.default {
                    Some(d) => expr::interpolate(d, ctx)
                        .map_err(|e| format!("default of input `{name}`: {e}"))?,
                    None => String::new(),
                },
            };
            env.insert(input_var(name), value.clone());
            inputs.insert(name.to_string(), json!(value));
        }
        for (_, (name, value)) in given {
            self.out.log(
                None,
                &format!(
                    "##[warning]Unexpected input '{name}' for {}",
                    step.uses.as_deref().unwrap_or("")
                ),
            );
            env.insert(input_var(&name), value.clone());
            inputs.insert(name, json!(value));
        }
        Ok((env, inputs))
    }
}

/// `INPUT_<NAME>`: upper case, spaces become underscores (hyphens stay, as in the runner).
pub(super) fn input_var(name: &str) -> String {
    format!("INPUT_{}", name.replace(' ', "_").to_uppercase())
}
