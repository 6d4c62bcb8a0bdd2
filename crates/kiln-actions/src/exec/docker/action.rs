//! Docker actions: `uses: docker://image` and `action.yml` with `runs.using: docker` (an image or
//! a Dockerfile that kiln builds). Each run is a fresh container with the workspace at
//! `/github/workspace`, removed when it ends.

use std::path::{Component, Path};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{LogsOptionsBuilder, StopContainerOptionsBuilder};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::job::{attach_network, create_and_start};
use super::{container_name, Session};
use crate::exec::Runner;
use crate::process::{sleep_until, Exit, ProcessSpec};

/// The container a Docker action step runs.
#[derive(Debug, Clone)]
pub(crate) struct ActionContainer {
    pub image: String,
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    /// Bind mounts (`host:container[:ro]`).
    pub binds: Vec<String>,
}

/// Where the workspace is inside a Docker action's container.
pub(crate) const ACTION_WORKSPACE: &str = "/github/workspace";

impl Runner {
    /// Bind mounts and environment overrides of a Docker action container.
    pub(crate) fn action_container_binds(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut binds = super::same_path_binds(&self.job_mounts());
        let workspace = self.workspace.to_string_lossy().into_owned();
        binds.push(format!("{workspace}:{ACTION_WORKSPACE}"));
        let home = self.temp.join("_github_home");
        let _ = std::fs::create_dir_all(&home);
        binds.push(format!("{}:/github/home", home.display()));
        let event = self.temp.join("event.json");
        if event.is_file() {
            binds.push(format!(
                "{}:/github/workflow/event.json:ro",
                event.display()
            ));
        }
        let env = vec![
            ("GITHUB_WORKSPACE".to_string(), ACTION_WORKSPACE.to_string()),
            ("HOME".to_string(), "/github/home".to_string()),
            (
                "GITHUB_EVENT_PATH".to_string(),
                "/github/workflow/event.json".to_string(),
            ),
        ];
        (binds, env)
    }

    /// The image of a `runs.using: docker` action: `docker://…` as is, a Dockerfile built (by
    /// kiln's engine when the runner has one) and tagged `kiln-action-<hash>`.
    pub(crate) async fn docker_action_image(
        &mut self,
        log_step: Option<usize>,
        action_dir: &Path,
        image: &str,
        remote: bool,
        cancel: &CancellationToken,
    ) -> Result<String, String> {
        if let Some(reference) = image.strip_prefix("docker://") {
            return Ok(reference.to_string());
        }
        let relative = Path::new(image);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(format!(
                "runs.image `{image}` must be a path inside the action"
            ));
        }
        let dockerfile = action_dir.join(relative);
        if !dockerfile.is_file() {
            return Err(format!(
                "runs.image: {} does not exist",
                dockerfile.display()
            ));
        }
        let context = dockerfile
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| action_dir.to_path_buf());
        let digest = Sha256::digest(dockerfile.to_string_lossy().as_bytes());
        let tag = format!("kiln-action-{}:latest", &hex::encode(digest)[..16]);
        let out = self.out.clone();
        let session = self.docker_session().await?;
        // A remote action's directory is one commit: its image can be reused. A local action
        // may have changed, so it is always built (the build cache keeps that cheap).
        if remote
            && !session.config.force_rebuild
            && session.client.inspect_image(&tag).await.is_ok()
        {
            return Ok(tag);
        }
        out.log(
            log_step,
            &format!("Building the action image from {}", dockerfile.display()),
        );
        let image_id = |i: bollard::models::ImageInspect| i.id;
        let previous = session
            .client
            .inspect_image(&tag)
            .await
            .ok()
            .and_then(image_id);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let result = {
            let build = build_image(session, &context, &dockerfile, &tag, tx);
            tokio::pin!(build);
            loop {
                tokio::select! {
                    Some(line) = rx.recv() => out.log(log_step, &line),
                    result = &mut build => break result,
                    _ = cancel.cancelled() => break Err("cancelled".to_string()),
                }
            }
        };
        while let Ok(line) = rx.try_recv() {
            out.log(log_step, &line);
        }
        result?;
        // A rebuilt local action leaves its previous image untagged: remove it, unless a
        // container still uses it.
        let current = session
            .client
            .inspect_image(&tag)
            .await
            .ok()
            .and_then(image_id);
        if let Some(old) = previous.filter(|old| Some(old) != current.as_ref()) {
            let _ = session
                .client
                .remove_image(
                    &old,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
        Ok(tag)
    }
}

async fn build_image(
    session: &Session,
    context: &Path,
    dockerfile: &Path,
    tag: &str,
    log: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<(), String> {
    if let Some(builder) = session.config.builder.clone() {
        return builder
            .build(&session.client, context, dockerfile, tag, &log)
            .await;
    }
    // No engine: the daemon's own builder.
    super::build_with_daemon(&session.client, context, dockerfile, tag, &log).await
}

/// Run an action container to its end, streaming its output. Timeout and cancellation stop it
/// (SIGTERM, then SIGKILL after `grace`).
pub(crate) async fn run_action_container(
    session: &mut Session,
    action: &ActionContainer,
    spec: &ProcessSpec,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    grace: Duration,
    mut on_output: impl FnMut(&[u8]),
) -> Result<Exit, String> {
    let short = uuid::Uuid::new_v4().simple().to_string();
    let name = container_name(&[&session.job_id, "action", &short[..8]]);
    let mut body = ContainerCreateBody {
        image: Some(action.image.clone()),
        entrypoint: action.entrypoint.clone().map(|e| vec![e]),
        cmd: (!action.args.is_empty()).then(|| action.args.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(ACTION_WORKSPACE.into()),
        labels: Some(session.labels()),
        host_config: Some(HostConfig {
            binds: Some(action.binds.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let network = session.network.clone();
    attach_network(&mut body, network.as_deref(), &[]);
    let id = create_and_start(session, &name, body).await?;
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = session.client.logs(&id, Some(options));
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut outcome = None;
    loop {
        tokio::select! {
            item = logs.next() => match item {
                Some(Ok(chunk)) => on_output(chunk.as_ref()),
                Some(Err(_)) | None => break,
            },
            _ = sleep_until(deadline), if outcome.is_none() => {
                outcome = Some(Exit::TimedOut);
                stop(session, &id, grace).await;
            }
            _ = cancel.cancelled(), if outcome.is_none() => {
                outcome = Some(Exit::Cancelled);
                stop(session, &id, grace).await;
            }
        }
    }
    let code = match session.client.wait_container(&id, None).next().await {
        Some(Ok(r)) => Some(r.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
        _ => session
            .client
            .inspect_container(&id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.exit_code),
    };
    let removed = session.remove_container(&id).await;
    if removed.is_ok() {
        session.containers.retain(|(c, _)| *c != id);
    }
    if let Some(outcome) = outcome {
        return Ok(outcome);
    }
    match code {
        Some(code) => Ok(Exit::Code(code as i32)),
        None => Err(format!("cannot tell how container {name} ended")),
    }
}

async fn stop(session: &Session, id: &str, grace: Duration) {
    let options = StopContainerOptionsBuilder::default()
        .t(grace.as_secs().max(1) as i32)
        .build();
    let _ = session.client.stop_container(id, Some(options)).await;
}
