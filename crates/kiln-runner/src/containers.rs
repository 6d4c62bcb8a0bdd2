//! Container mode for the daemon: the executor's Docker settings from `container:` in
//! config.yaml, removal of what a crashed run left behind, and Dockerfile actions built by kiln's
//! own engine and loaded into the job's daemon.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::ImportImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use kiln_actions::exec::docker::{DockerConfig, ImageBuilder};
use tokio::sync::mpsc;

use crate::buildkit::BuildEngine;
use crate::config::Config;

/// The executor's Docker settings. `owner` labels everything the runner creates (its UUID).
pub fn docker_config(
    config: &Config,
    owner: &str,
    engine: Option<Arc<BuildEngine>>,
) -> DockerConfig {
    let c = &config.container;
    DockerConfig {
        host: c.docker_host.clone(),
        network: c.network.clone(),
        privileged: c.privileged,
        options: c.options.clone().unwrap_or_default(),
        valid_volumes: c.valid_volumes.clone(),
        force_pull: c.force_pull,
        force_rebuild: c.force_rebuild,
        timeout: if c.docker_timeout.is_zero() {
            Duration::from_secs(120)
        } else {
            c.docker_timeout
        },
        owner: owner.to_string(),
        builder: engine_builder(engine),
    }
}

/// Dockerfile actions built by kiln's engine, when it serves the Docker API.
pub fn engine_builder(engine: Option<Arc<BuildEngine>>) -> Option<Arc<dyn ImageBuilder>> {
    engine
        .filter(|e| e.docker_socket().is_some())
        .map(|engine| Arc::new(EngineBuilder { engine }) as Arc<dyn ImageBuilder>)
}

/// Builds with kiln's engine (through its Docker API) and loads the result into the job's daemon.
struct EngineBuilder {
    engine: Arc<BuildEngine>,
}

#[async_trait::async_trait]
impl ImageBuilder for EngineBuilder {
    async fn build(
        &self,
        target: &Docker,
        context: &Path,
        dockerfile: &Path,
        tag: &str,
        log: &mpsc::UnboundedSender<String>,
    ) -> Result<(), String> {
        self.engine.ready().await?;
        let socket = self
            .engine
            .docker_socket()
            .ok_or("the build engine does not serve the Docker API")?;
        let engine = Docker::connect_with_unix(
            &format!("unix://{}", socket.display()),
            600,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| format!("cannot reach kiln's build engine: {e}"))?
        .negotiate_version()
        .await
        .map_err(|e| format!("cannot reach kiln's build engine: {e}"))?;

        kiln_actions::exec::docker::build_with_daemon(&engine, context, dockerfile, tag, log)
            .await?;
        // Hand the image over: `docker save` from the engine into `docker load` of the daemon.
        let _ = log.send(format!("Loading {tag} into the Docker daemon"));
        let export = engine
            .export_image(tag)
            .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut loaded = target.import_image_stream(options, export, None);
        while let Some(item) = loaded.next().await {
            let info =
                item.map_err(|e| format!("cannot load {tag} into the Docker daemon: {e}"))?;
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(format!(
                    "cannot load {tag} into the Docker daemon: {message}"
                ));
            }
        }
        Ok(())
    }
}

/// With `container.require_docker`: wait until the daemon answers, up to `docker_timeout`.
pub async fn wait_for_docker(config: &DockerConfig) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + config.timeout;
    loop {
        match config.connect().await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("container.require_docker: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Remove containers and networks a previous run of this runner left (after a crash). Errors are
/// logged: a runner without Docker labels does not need a daemon.
pub async fn remove_leftovers(config: &DockerConfig, uses_docker: bool) {
    match kiln_actions::exec::docker::remove_leftovers(config).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "removed containers and networks left by an earlier run"
        ),
        Err(e) if uses_docker => {
            tracing::warn!(error = %e, "cannot check the Docker daemon for leftovers")
        }
        Err(e) => tracing::debug!(error = %e, "no Docker daemon"),
    }
}
