//! How a step's process runs: a `run:` script (its header, shell and script file), a JavaScript
//! action under node, and the launch they share (on the host, in the job container or in an
//! action's container), with the output handled line by line and the env files read back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::actions::LoadedAction;
use super::docker::action::{run_action_container, ActionContainer};
use super::env::{resolve_container_shell, resolve_shell, which, ActionIdentity};
use super::output::{script_header, OutputHandler};
use super::step::{ProcessResult, Scope, StepRun};
use super::Runner;
use crate::envfile;
use crate::expr::{self, Contexts};
use crate::model::Step;
use crate::process::{self, Exit, ProcessSpec};

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_script(
        &mut self,
        step: &Step,
        run: &str,
        scope: &Scope,
        env: &BTreeMap<String, String>,
        ctx: &Contexts,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> StepRun {
        let log_step = scope.log_step;
        let script = match expr::interpolate(run, ctx) {
            Ok(s) => s,
            Err(e) => {
                self.out.log(log_step, &format!("##[error]run: {e}"));
                return StepRun::failed();
            }
        };
        let defaults = self.defaults.clone();
        let shell = step.shell.clone().or_else(|| {
            if scope.depth == 0 {
                defaults.shell.clone()
            } else {
                None
            }
        });
        let identity = ActionIdentity {
            action: step.id.clone().unwrap_or_else(|| "__run".into()),
            path: scope.action_path.clone(),
            ..Default::default()
        };
        let process_env = self.process_env(env, &identity);
        let in_container = self.docker.as_ref().and_then(|d| d.job.as_ref());
        let resolved = match in_container {
            Some(job) => resolve_container_shell(shell.as_deref(), &job.programs),
            None => resolve_shell(shell.as_deref(), &process_env),
        };
        let shell = match resolved {
            Ok(s) => s,
            Err(e) => {
                self.out.log(log_step, &format!("##[error]{e}"));
                return StepRun::failed();
            }
        };
        let working_dir = step.working_directory.clone().or_else(|| {
            if scope.depth == 0 {
                defaults.working_directory.clone()
            } else {
                None
            }
        });
        let cwd = match working_dir {
            Some(dir) => match expr::interpolate(&dir, ctx) {
                Ok(dir) => self.workspace.join(dir),
                Err(e) => {
                    self.out
                        .log(log_step, &format!("##[error]working-directory: {e}"));
                    return StepRun::failed();
                }
            },
            None => self.workspace.clone(),
        };
        // In a job container the directory may exist only there; the exec reports it if not.
        if in_container.is_none() && !cwd.is_dir() {
            self.out.log(
                log_step,
                &format!(
                    "##[error]working-directory {} does not exist",
                    cwd.display()
                ),
            );
            return StepRun::failed();
        }
        let script_path = self
            .temp
            .join(format!("{}{}", uuid::Uuid::new_v4(), shell.extension));
        if let Err(e) = std::fs::write(&script_path, &script) {
            self.out.log(
                log_step,
                &format!("##[error]cannot write {}: {e}", script_path.display()),
            );
            return StepRun::failed();
        }
        // The header act_runner and GitHub print: the script, the shell and the step's own env.
        if scope.depth == 0 {
            for row in script_header(&script, step, &shell.display, env) {
                self.out.log(log_step, &row);
            }
        }
        let script_arg = script_path.to_string_lossy().into_owned();
        let args = shell
            .args
            .iter()
            .map(|a| a.replace("{0}", &script_arg))
            .collect();
        let spec = ProcessSpec {
            program: shell.program.clone(),
            args,
            env: process_env,
            cwd,
        };
        let result = self.run_process(log_step, spec, timeout, cancel).await;
        let _ = std::fs::remove_file(&script_path);
        match result {
            Ok(r) => StepRun {
                outcome: self.exit_outcome(log_step, r.exit),
                outputs: r.outputs,
            },
            Err(e) => {
                self.out.log(log_step, &format!("##[error]{e}"));
                StepRun::failed()
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_node(
        &mut self,
        log_step: Option<usize>,
        loaded: &LoadedAction,
        script: &str,
        env: &BTreeMap<String, String>,
        identity: &ActionIdentity,
        state: &BTreeMap<String, String>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<ProcessResult, String> {
        let mut process_env = self.process_env(env, identity);
        for (k, v) in state {
            process_env.insert(format!("STATE_{k}"), v.clone());
        }
        let in_container = self.docker.as_ref().and_then(|d| d.job.as_ref());
        let node = match (in_container, &self.config.node) {
            (Some(job), _) => job.programs.get("node").map(PathBuf::from).ok_or_else(|| {
                format!(
                    "the action {} runs on {}, but the job container's image {} has no `node`; use an image with Node.js",
                    loaded.name,
                    loaded.action.runs.using(),
                    job.image
                )
            })?,
            (None, Some(node)) => node.clone(),
            (None, None) => which("node", &process_env).ok_or_else(|| {
                format!(
                    "the action {} runs on {}, but no `node` was found on PATH; install Node.js on the runner or set its path in the runner config",
                    loaded.name,
                    loaded.action.runs.using()
                )
            })?,
        };
        let entry = loaded.dir.join(script);
        if !entry.is_file() {
            return Err(format!("the action {} has no file {script}", loaded.name));
        }
        let spec = ProcessSpec {
            program: node,
            args: vec![entry.to_string_lossy().into_owned()],
            env: process_env,
            cwd: self.workspace.clone(),
        };
        self.run_process(log_step, spec, timeout, cancel).await
    }

    /// Run a process with fresh env files, handle its output line by line, then apply the files.
    /// It runs in the job container when the job has one, else on the host.
    pub(crate) async fn run_process(
        &mut self,
        log_step: Option<usize>,
        spec: ProcessSpec,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<ProcessResult, String> {
        self.run_launch(log_step, spec, None, timeout, cancel).await
    }

    /// [`Runner::run_process`], or with `action` a Docker action's container whose environment
    /// is `spec.env`.
    pub(crate) async fn run_launch(
        &mut self,
        log_step: Option<usize>,
        mut spec: ProcessSpec,
        action: Option<ActionContainer>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<ProcessResult, String> {
        let dir = self.temp.join("_runner_file_commands");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let id = uuid::Uuid::new_v4();
        let files: Vec<(&str, PathBuf)> = [
            ("GITHUB_ENV", "set_env"),
            ("GITHUB_OUTPUT", "set_output"),
            ("GITHUB_PATH", "add_path"),
            ("GITHUB_STATE", "save_state"),
            ("GITHUB_STEP_SUMMARY", "step_summary"),
        ]
        .into_iter()
        .map(|(var, name)| (var, dir.join(format!("{name}_{id}"))))
        .collect();
        for (var, path) in &files {
            std::fs::write(path, b"")
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            spec.env
                .insert(var.to_string(), path.to_string_lossy().into_owned());
        }
        let allow_unsecure = spec
            .env
            .get("ACTIONS_ALLOW_UNSECURE_COMMANDS")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let debug = spec.env.contains_key("RUNNER_DEBUG");
        let mut handler = OutputHandler::new(self.out.clone(), log_step, debug, allow_unsecure);
        let mut on_output = |data: &[u8]| {
            for line in handler.lines.push(data) {
                handler.line(&line);
            }
        };
        let tracking_id = uuid::Uuid::new_v4().to_string();
        let grace = self.config.kill_grace;
        let exit = match (&action, self.docker.as_mut()) {
            (Some(action), Some(session)) => {
                run_action_container(
                    session,
                    action,
                    &spec,
                    timeout,
                    cancel,
                    grace,
                    &mut on_output,
                )
                .await?
            }
            (Some(_), None) => return Err("no Docker daemon session for the action".into()),
            (None, Some(session)) if session.job.is_some() => {
                let job = session.job.as_ref().expect("checked");
                job.exec(
                    &session.client,
                    &spec,
                    &tracking_id,
                    timeout,
                    cancel,
                    grace,
                    &mut on_output,
                )
                .await?
            }
            (None, _) => process::run(&spec, &tracking_id, timeout, cancel, grace, &mut on_output)
                .await
                .map_err(|e| e.to_string())?,
        };
        if let Some(rest) = handler.lines.finish() {
            handler.line(&rest);
        }
        let mut result = ProcessResult {
            exit,
            outputs: handler.outputs,
            state: handler.state,
        };
        for (k, v) in handler.env {
            self.state.env.insert(k, v);
        }
        for p in handler.path {
            self.state.path.insert(0, p);
        }
        for (var, path) in &files {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let _ = std::fs::remove_file(path);
            if text.is_empty() {
                continue;
            }
            match *var {
                "GITHUB_PATH" => {
                    for p in envfile::parse_path_file(&text).into_iter().rev() {
                        self.state.path.insert(0, p);
                    }
                }
                "GITHUB_STEP_SUMMARY" => {
                    self.state.summary.push_str(&text);
                    if !text.ends_with('\n') {
                        self.state.summary.push('\n');
                    }
                }
                _ => match envfile::parse_key_values(&text) {
                    Ok(pairs) => {
                        for (k, v) in pairs {
                            match *var {
                                "GITHUB_ENV" => {
                                    self.state.env.insert(k, v);
                                }
                                "GITHUB_OUTPUT" => {
                                    result.outputs.insert(k, v);
                                }
                                _ => {
                                    result.state.insert(k, v);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        self.out.log(log_step, &format!("##[error]{var}: {e}"));
                        if result.exit.success() {
                            result.exit = Exit::Code(1);
                        }
                    }
                },
            }
        }
        self.state.ctx.set("env", json!(self.state.env));
        Ok(result)
    }
}
