//! Steps another party performs: Docker actions in a container of their image (built from
//! their Dockerfile when they have one), and the actions the runner implements natively.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::actions::{ActionRef, LoadedAction};
use super::docker::action::ActionContainer;
use super::env::ActionIdentity;
use super::step::{ActionInputs, StepRun};
use super::{Outcome, Runner};
use crate::expr::{self, Contexts};
use crate::model::{Runs, Step};
use crate::process::ProcessSpec;

/// The container of a Docker action step.
#[derive(Clone)]
pub(crate) struct DockerStep {
    pub display: String,
    pub image: String,
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
}

impl Runner {
    /// The container and environment of a `runs.using: docker` action step: its image (built
    /// when it is a Dockerfile), `runs.args` and `runs.env` with the `inputs` context, and the
    /// step's `with: args`/`entrypoint`, which win.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn prepare_docker_action(
        &mut self,
        log_step: Option<usize>,
        loaded: &LoadedAction,
        action_ref: &ActionRef,
        step: &Step,
        ctx: &Contexts,
        inputs: &ActionInputs,
        inputs_env: BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
        display: &str,
        cancel: &CancellationToken,
    ) -> Result<(DockerStep, BTreeMap<String, String>), String> {
        let Runs::Docker {
            image,
            entrypoint,
            args,
            env: action_env,
            ..
        } = &loaded.action.runs
        else {
            return Err(format!("{} is not a Docker action", loaded.name));
        };
        let uses = step.uses.as_deref().unwrap_or_default();
        let remote = matches!(action_ref, ActionRef::Remote { .. });
        let image = self
            .docker_action_image(log_step, &loaded.dir, image, remote, cancel)
            .await
            .map_err(|e| format!("Step `{display}` ({uses}): {e}"))?;
        let mut action_ctx = ctx.clone();
        action_ctx.set("inputs", Value::Object(inputs.clone()));
        let mut env = env.clone();
        env.extend(inputs_env);
        let mut resolved_args = Vec::new();
        for arg in args {
            resolved_args.push(
                expr::interpolate(arg, &action_ctx)
                    .map_err(|e| format!("runs.args of {uses}: {e}"))?,
            );
        }
        for (k, v) in action_env.iter() {
            let value = expr::interpolate(v, &action_ctx)
                .map_err(|e| format!("runs.env.{k} of {uses}: {e}"))?;
            env.insert(k.to_string(), value);
        }
        let mut entrypoint = entrypoint.clone();
        for (k, v) in step.with.iter() {
            let key = k.to_ascii_lowercase();
            if key != "args" && key != "entrypoint" {
                continue;
            }
            let value = expr::interpolate(v, ctx).map_err(|e| format!("with.{k}: {e}"))?;
            if key == "entrypoint" {
                entrypoint = Some(value);
            } else {
                resolved_args =
                    shlex::split(&value).ok_or("with.args: unbalanced quotes".to_string())?;
            }
        }
        Ok((
            DockerStep {
                display: display.to_string(),
                image,
                entrypoint,
                args: resolved_args,
            },
            env,
        ))
    }

    /// Run a Docker action's container: pulled if needed, with the job's mounts, the workspace at
    /// `/github/workspace`, and no environment from the host.
    pub(super) async fn run_docker_step(
        &mut self,
        log_step: Option<usize>,
        container: DockerStep,
        env: &BTreeMap<String, String>,
        identity: &ActionIdentity,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> StepRun {
        let DockerStep {
            display,
            image,
            entrypoint,
            args,
        } = container;
        let out = self.out.clone();
        let ready = match self.docker_session().await {
            Ok(session) => {
                session
                    .ensure_image(&image, None, &|line| out.log(log_step, line))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            self.out.log(
                log_step,
                &format!("##[error]Step `{display}` uses the Docker image `{image}`: {e}"),
            );
            return StepRun::failed();
        }
        let (binds, overrides) = self.action_container_binds();
        let mut process_env = self.process_env_over(BTreeMap::new(), env, identity);
        // The image's PATH applies, not the host's or the job container's.
        process_env.remove("PATH");
        process_env.extend(overrides);
        let spec = ProcessSpec {
            program: PathBuf::new(),
            args: Vec::new(),
            env: process_env,
            cwd: super::docker::action::ACTION_WORKSPACE.into(),
        };
        let action = ActionContainer {
            image,
            entrypoint,
            args,
            binds,
        };
        match self
            .run_launch(log_step, spec, Some(action), timeout, cancel)
            .await
        {
            Ok(r) => StepRun {
                outcome: self.exit_outcome(log_step, r.exit),
                outputs: r.outputs,
            },
            Err(e) => {
                self.out
                    .log(log_step, &format!("##[error]Step `{display}`: {e}"));
                StepRun::failed()
            }
        }
    }

    /// The native implementation of this action, unless `KILN_NATIVE_ACTIONS` is `false` for the step.
    pub(super) fn native_for(
        &self,
        action: &ActionRef,
        env: &BTreeMap<String, String>,
        step: &Step,
    ) -> Option<std::sync::Arc<dyn super::native::NativeActions>> {
        let ActionRef::Remote {
            repo,
            path,
            reference,
            ..
        } = action
        else {
            return None;
        };
        let native = self.config.native.clone()?;
        let off = |v: Option<&String>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let step_off = step
            .env
            .iter()
            .any(|(k, v)| k == super::native::SWITCH && v.trim().eq_ignore_ascii_case("false"));
        if step_off || off(env.get(super::native::SWITCH)) || !path.is_empty() {
            return None;
        }
        native
            .handles(&repo.to_ascii_lowercase(), reference)
            .then_some(native)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_native(
        &mut self,
        native: std::sync::Arc<dyn super::native::NativeActions>,
        uses: &str,
        action: &ActionRef,
        step: &Step,
        env: &BTreeMap<String, String>,
        ctx: &Contexts,
        log_step: Option<usize>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> StepRun {
        let ActionRef::Remote {
            repo, reference, ..
        } = action
        else {
            return StepRun::failed();
        };
        let mut inputs = BTreeMap::new();
        for (k, v) in step.with.iter() {
            match expr::interpolate(v, ctx) {
                Ok(v) => {
                    inputs.insert(k.to_ascii_lowercase(), v);
                }
                Err(e) => {
                    self.out.log(log_step, &format!("##[error]with.{k}: {e}"));
                    return StepRun::failed();
                }
            }
        }
        let identity = ActionIdentity {
            action: step
                .id
                .clone()
                .unwrap_or_else(|| format!("__{}", repo.replace('/', "_"))),
            path: None,
            repository: repo.clone(),
            reference: reference.clone(),
        };
        let process_env = self.process_env(env, &identity);
        self.out.log(
            log_step,
            &format!(
                "Run {uses} (performed by kiln itself; set {}: \"false\" to run the real action)",
                super::native::SWITCH
            ),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let native_step = super::native::NativeStep {
            uses: uses.to_string(),
            repo: repo.to_ascii_lowercase(),
            reference: reference.clone(),
            inputs,
            env: process_env,
            workspace: self.workspace.clone(),
            log: tx,
            cancel: cancel.clone(),
            timeout,
        };
        let run = native.run(native_step);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                Some(line) = rx.recv() => self.out.log(log_step, &line),
                outcome = &mut run => break outcome,
            }
        };
        while let Ok(line) = rx.try_recv() {
            self.out.log(log_step, &line);
        }
        for (k, v) in outcome.env {
            self.state.env.insert(k, v);
        }
        self.state.ctx.set("env", json!(self.state.env));
        let result = if outcome.success {
            Outcome::Success
        } else if cancel.is_cancelled() {
            Outcome::Cancelled
        } else {
            Outcome::Failure
        };
        StepRun {
            outcome: result,
            outputs: outcome.outputs,
        }
    }
}
