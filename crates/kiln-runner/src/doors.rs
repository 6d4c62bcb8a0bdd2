//! The build doors of one job, the same under `kiln daemon` and `kiln exec`: a `BUILDKIT_HOST`
//! and a `DOCKER_HOST` socket forwarding to the build engine, and the job's own Docker config
//! (`DOCKER_CONFIG`), seeded from the runner user's, so that `docker login` or login-action in
//! one job reaches neither another job nor the user's own config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::buildkit::{BuildEngine, JobSocket};

/// What a job gets; dropping it closes the job's sockets.
pub struct JobDoors {
    /// `BUILDKIT_HOST`, `DOCKER_HOST` (when the engine serves the Docker API) and `DOCKER_CONFIG`.
    pub env: BTreeMap<String, String>,
    /// Doors that could not be opened, for the job's log (the job runs without them).
    pub warnings: Vec<String>,
    _sockets: Vec<JobSocket>,
}

impl JobDoors {
    /// Open the doors of job `name` (a short, unique, file-name-safe word) with its Docker
    /// config under `dir`. Without an engine the job gets only the Docker config.
    pub async fn open(
        engine: Option<&Arc<BuildEngine>>,
        name: &str,
        dir: &Path,
    ) -> Result<JobDoors, String> {
        let mut doors = JobDoors {
            env: BTreeMap::new(),
            warnings: Vec::new(),
            _sockets: Vec::new(),
        };
        let docker_config = dir.join("docker-config");
        std::fs::create_dir_all(&docker_config)
            .map_err(|e| format!("cannot create {}: {e}", docker_config.display()))?;
        if let Some(src) = user_docker_config().filter(|p| p.is_file()) {
            let _ = std::fs::copy(&src, docker_config.join("config.json"));
        }
        doors.env.insert(
            "DOCKER_CONFIG".into(),
            docker_config.to_string_lossy().into_owned(),
        );
        let Some(engine) = engine else {
            return Ok(doors);
        };
        match engine.job_socket(name).await {
            Ok(socket) => doors.add("BUILDKIT_HOST", socket),
            Err(e) => doors
                .warnings
                .push(format!("no BUILDKIT_HOST for this job: {e}")),
        }
        match engine.job_docker_socket(name).await {
            Some(Ok(socket)) => doors.add("DOCKER_HOST", socket),
            Some(Err(e)) => doors
                .warnings
                .push(format!("no DOCKER_HOST for this job: {e}")),
            None => {}
        }
        Ok(doors)
    }

    fn add(&mut self, var: &str, socket: JobSocket) {
        self.env.insert(var.into(), socket.address());
        self._sockets.push(socket);
    }
}

/// The runner user's `config.json`: `$DOCKER_CONFIG`, else `~/.docker`.
fn user_docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}
