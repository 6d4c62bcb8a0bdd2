//! Container mode through a Docker-compatible daemon (bollard): the job container, service
//! containers and Docker actions.
//!
//! The host directories a job uses (workspace, `RUNNER_TEMP`, tool cache, action cache, the job's
//! Docker config and build sockets) are bind-mounted into its containers **at the same paths**, so
//! every path kiln hands a step (`GITHUB_ENV`, a script file, an action's directory) means the
//! same on both sides and nothing is translated. Docker actions additionally see the workspace at
//! `/github/workspace`, as on GitHub.
//!
//! Everything kiln creates carries the labels [`OWNER_LABEL`] (the runner) and [`JOB_LABEL`] (the
//! job): a job removes its own containers and network when it ends, and a runner that crashed
//! removes what it left behind when it starts again ([`remove_leftovers`]).

pub(crate) mod action;
mod job;
pub mod options;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;

pub(crate) use job::JobContainer;

/// Label on every container and network kiln creates: which runner owns it.
pub const OWNER_LABEL: &str = "dev.kiln.owner";
/// Label on every container and network kiln creates: which job it belongs to.
pub const JOB_LABEL: &str = "dev.kiln.job";

/// How the runner reaches its Docker daemon and what it allows job containers to do
/// (act_runner's `container:` section).
#[derive(Clone)]
pub struct DockerConfig {
    /// `unix:///path`, `tcp://host:port`; empty uses `DOCKER_HOST`, then `/var/run/docker.sock`.
    pub host: String,
    /// Network of job and service containers: empty creates one network per job (services are
    /// reachable by their names), `host` shares the host's, anything else names a network.
    pub network: String,
    /// Job and service containers run privileged.
    pub privileged: bool,
    /// More `docker run` options for every job container.
    pub options: String,
    /// Globs of the volumes and host paths that `volumes:` and `-v` may mount; others are
    /// skipped with a warning.
    pub valid_volumes: Vec<String>,
    /// Pull images even when the daemon has them.
    pub force_pull: bool,
    /// Rebuild Dockerfile actions even when their image exists.
    pub force_rebuild: bool,
    /// Timeout of a single API request (not of pulls or running containers).
    pub timeout: Duration,
    /// Value of [`OWNER_LABEL`]: the runner's UUID, so several runners can share a daemon.
    pub owner: String,
    /// Builds Dockerfile actions; without one the daemon's own builder is used.
    pub builder: Option<Arc<dyn ImageBuilder>>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("host", &self.host)
            .field("network", &self.network)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: String::new(),
            network: String::new(),
            privileged: false,
            options: String::new(),
            valid_volumes: Vec::new(),
            force_pull: false,
            force_rebuild: false,
            timeout: Duration::from_secs(120),
            owner: "kiln".into(),
            builder: None,
        }
    }
}

impl DockerConfig {
    /// The daemon address actually used.
    pub fn address(&self) -> String {
        let host = self.host.trim();
        if !host.is_empty() && host != "-" {
            return host.to_string();
        }
        std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
    }

    /// Connect and agree on an API version (the daemon may be older than bollard).
    pub async fn connect(&self) -> Result<Docker, String> {
        let address = self.address();
        let address = if address.starts_with('/') {
            format!("unix://{address}")
        } else {
            address
        };
        let err =
            |e: bollard::errors::Error| format!("cannot reach the Docker daemon at {address}: {e}");
        let timeout = self.timeout.as_secs().max(1);
        let docker = if address.starts_with("unix://") {
            Docker::connect_with_unix(&address, timeout, bollard::API_DEFAULT_VERSION)
        } else if address.starts_with("tcp://") || address.starts_with("http://") {
            Docker::connect_with_http(&address, timeout, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(format!(
                "container.docker_host `{address}`: use unix:///path or tcp://host:port"
            ));
        }
        .map_err(err)?;
        docker.negotiate_version().await.map_err(err)
    }
}

/// Builds the image of a Dockerfile action and loads it into the job's daemon.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync {
    /// Build `dockerfile` with `context` as its context, tag it `tag` in `docker`. Progress goes
    /// to `log`.
    async fn build(
        &self,
        docker: &Docker,
        context: &Path,
        dockerfile: &Path,
        tag: &str,
        log: &mpsc::UnboundedSender<String>,
    ) -> Result<(), String>;
}

/// Build `dockerfile` with `context` as its context on a Docker API (a daemon's classic `/build`,
/// or kiln's own engine behind its Docker API) and tag it `tag`; build output goes to `log`.
pub async fn build_with_daemon(
    docker: &Docker,
    context: &Path,
    dockerfile: &Path,
    tag: &str,
    log: &mpsc::UnboundedSender<String>,
) -> Result<(), String> {
    let tar = {
        let dir = context.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut builder = tar::Builder::new(Vec::new());
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &dir)?;
            builder.into_inner()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot pack {}: {e}", context.display()))?
    };
    let name = dockerfile
        .strip_prefix(context)
        .unwrap_or(dockerfile)
        .to_string_lossy()
        .into_owned();
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile(&name)
        .t(tag)
        .rm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| format!("building the image failed: {}", api_error(&e)))?;
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(message);
        }
        if let Some(text) = info.stream {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let _ = log.send(line.to_string());
            }
        }
    }
    Ok(())
}

/// The daemon connection of one job and what the job created there.
pub(crate) struct Session {
    pub client: Docker,
    pub config: DockerConfig,
    /// Value of [`JOB_LABEL`].
    pub job_id: String,
    /// Containers to remove at the end, as (id, display name).
    pub containers: Vec<(String, String)>,
    /// The per-job network, when one was created.
    pub created_network: Option<String>,
    /// The network steps' containers join (`None`: the daemon's default).
    pub network: Option<String>,
    pub job: Option<JobContainer>,
}

impl Session {
    pub async fn open(config: &DockerConfig, job_id: &str) -> Result<Session, String> {
        let client = config.connect().await?;
        let network = match config.network.trim() {
            "" => None,
            n => Some(n.to_string()),
        };
        Ok(Session {
            client,
            config: config.clone(),
            job_id: job_id.to_string(),
            containers: Vec::new(),
            created_network: None,
            network,
            job: None,
        })
    }

    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (OWNER_LABEL.to_string(), self.config.owner.clone()),
            (JOB_LABEL.to_string(), self.job_id.clone()),
        ])
    }

    /// The per-job network, created on first use when the runner's network setting is empty.
    pub async fn job_network(&mut self) -> Result<Option<String>, String> {
        if self.network.is_some() || !self.config.network.trim().is_empty() {
            return Ok(self.network.clone());
        }
        let name = format!("{}-network", self.job_id);
        let request = bollard::models::NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(self.labels()),
            ..Default::default()
        };
        self.client
            .create_network(request)
            .await
            .map_err(|e| format!("cannot create the job network {name}: {e}"))?;
        self.created_network = Some(name.clone());
        self.network = Some(name.clone());
        Ok(Some(name))
    }

    /// Make sure the daemon has `image`, pulling it when missing (or always with `force_pull`).
    pub async fn ensure_image(
        &self,
        image: &str,
        credentials: Option<(String, String)>,
        log: &(dyn Fn(&str) + Sync),
    ) -> Result<(), String> {
        let reference = with_default_tag(image);
        if !self.config.force_pull && self.client.inspect_image(&reference).await.is_ok() {
            return Ok(());
        }
        log(&format!("Pulling image '{reference}'"));
        let credentials = credentials.map(|(username, password)| DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(registry_of(&reference)),
            ..Default::default()
        });
        let options = CreateImageOptionsBuilder::default()
            .from_image(&reference)
            .build();
        let mut stream = self.client.create_image(Some(options), None, credentials);
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    // Layer progress is noise in a CI log; keep the summary lines.
                    if let (Some(status), None) = (&info.status, &info.id) {
                        if *status != last {
                            log(status);
                            last = status.clone();
                        }
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "cannot pull image `{reference}`: {}",
                        api_error(&e)
                    ))
                }
            }
        }
        Ok(())
    }

    /// Remove a container (and its anonymous volumes).
    pub async fn remove_container(&self, id: &str) -> Result<(), String> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(api_error(&e)),
        }
    }

    /// Remove everything this job created. Problems are returned as warnings.
    pub async fn clean_up(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (id, name) in std::mem::take(&mut self.containers).into_iter().rev() {
            if let Err(e) = self.remove_container(&id).await {
                warnings.push(format!("cannot remove container {name}: {e}"));
            }
        }
        self.job = None;
        if let Some(network) = self.created_network.take() {
            if let Err(e) = self.client.remove_network(&network).await {
                warnings.push(format!(
                    "cannot remove network {network}: {}",
                    api_error(&e)
                ));
            }
        }
        warnings
    }

    /// Whether `source` (a host path or a volume name) may be mounted.
    pub fn volume_allowed(&self, source: &str) -> bool {
        self.config.valid_volumes.iter().any(|pattern| {
            globset::Glob::new(pattern)
                .map(|g| g.compile_matcher().is_match(source))
                .unwrap_or(false)
        })
    }
}

/// Remove the containers and networks a previous run of this runner (`owner`) left behind, e.g.
/// after a crash. Returns how many were removed.
pub async fn remove_leftovers(config: &DockerConfig) -> Result<usize, String> {
    let docker = config.connect().await?;
    let filter = HashMap::from([(
        "label".to_string(),
        vec![format!("{OWNER_LABEL}={}", config.owner)],
    )]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .map_err(|e| api_error(&e))?;
    let mut removed = 0;
    for c in containers {
        let Some(id) = c.id else { continue };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if docker.remove_container(&id, Some(options)).await.is_ok() {
            removed += 1;
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .map_err(|e| api_error(&e))?;
    for n in networks {
        let Some(name) = n.name else { continue };
        if docker.remove_network(&name).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The daemon's message without bollard's wrapping.
pub(crate) fn api_error(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        e => e.to_string(),
    }
}

/// `busybox` → `busybox:latest`; a tag or digest is kept (the API pulls every tag otherwise).
pub(crate) fn with_default_tag(image: &str) -> String {
    let image = image.trim();
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The registry host of an image reference (`docker.io` for Docker Hub names).
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "https://index.docker.io/v1/".to_string(),
    }
}

/// A name the daemon accepts for a container: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn container_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let mut name: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'k');
    }
    name.truncate(200);
    name
}

/// Host paths bind-mounted at the same place in a job's containers.
pub(crate) fn same_path_binds(paths: &[PathBuf]) -> Vec<String> {
    let mut binds: Vec<String> = Vec::new();
    for p in paths {
        let s = p.to_string_lossy().into_owned();
        if s.is_empty()
            || binds
                .iter()
                .any(|b| b.split(':').next() == Some(s.as_str()))
        {
            continue;
        }
        binds.push(format!("{s}:{s}"));
    }
    binds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(
            with_default_tag("127.0.0.1:5000/team/busybox"),
            "127.0.0.1:5000/team/busybox:latest"
        );
        assert_eq!(with_default_tag("node:20"), "node:20");
        assert_eq!(with_default_tag("a/b@sha256:00"), "a/b@sha256:00");
        assert_eq!(registry_of("127.0.0.1:5000/x:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/o/x:1"), "ghcr.io");
        assert_eq!(registry_of("library/x:1"), "https://index.docker.io/v1/");
        assert_eq!(container_name(&["kiln_1", "my svc"]), "kiln_1-my_svc");
        assert_eq!(container_name(&["_x"]), "k_x");
    }
}
