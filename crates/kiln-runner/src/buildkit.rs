//! The build engine for jobs: one `kiln buildkitd` process per runner (it enters its own user
//! namespace for rootless runc, which the daemon itself must not do: host-mode jobs run as the real
//! user), and one unix socket per job (`BUILDKIT_HOST`) that forwards to it. All jobs share the
//! engine's cache.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// How to start the engine process.
#[derive(Debug, Clone)]
pub struct EngineCommand {
    /// The kiln binary.
    pub program: PathBuf,
    /// Arguments before `buildkitd` (`--root`, `--config`, `--log`).
    pub global_args: Vec<String>,
    /// Extra `--addr` values (the shared endpoint, e.g. `tcp://0.0.0.0:1235`).
    pub extra_addrs: Vec<String>,
    /// TLS flags for the extra addresses (`--tlscacert` …, or `--tls-from-env`).
    pub tls_args: Vec<String>,
    /// Also serve kiln's Docker API (the jobs' `DOCKER_HOST`).
    pub docker: bool,
    /// Forward container calls on that API to this daemon (`unix:///path`).
    pub docker_forward: Option<String>,
}

/// The engine process, started at once or on first use, and restarted if it dies.
pub struct BuildEngine {
    command: EngineCommand,
    socket: PathBuf,
    docker_socket: Option<PathBuf>,
    runtime_dir: PathBuf,
    stop: CancellationToken,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The outcome of the one start.
    started: tokio::sync::OnceCell<Result<(), String>>,
}

impl BuildEngine {
    /// Start the engine and wait until its socket answers.
    pub async fn start(command: EngineCommand) -> Result<Arc<BuildEngine>, String> {
        let engine = BuildEngine::on_demand(command)?;
        engine.ready().await?;
        Ok(engine)
    }

    /// An engine that starts when a job first connects to one of its sockets (`kiln exec`: most
    /// workflows never build an image, and those that do should not wait for it up front).
    pub fn on_demand(command: EngineCommand) -> Result<Arc<BuildEngine>, String> {
        let runtime_dir = runtime_dir()?;
        let socket = runtime_dir.join("engine.sock");
        let docker_socket = command.docker.then(|| runtime_dir.join("docker.sock"));
        Ok(Arc::new(BuildEngine {
            command,
            socket,
            docker_socket,
            runtime_dir,
            stop: CancellationToken::new(),
            supervisor: Mutex::new(None),
            started: tokio::sync::OnceCell::new(),
        }))
    }

    /// Start the engine unless it was started already, and wait until it answers. A failed start
    /// is not tried again: every caller gets its error.
    pub async fn ready(&self) -> Result<(), String> {
        self.started
            .get_or_init(|| self.spawn_supervised())
            .await
            .clone()
    }

    async fn spawn_supervised(&self) -> Result<(), String> {
        let (command, socket, docker_socket) = (
            self.command.clone(),
            self.socket.clone(),
            self.docker_socket.clone(),
        );
        let mut child = spawn(&command, &socket, docker_socket.as_deref())?;
        wait_ready(&socket, &mut child).await?;
        if let Some(d) = &docker_socket {
            wait_ready(d, &mut child).await?;
        }
        let stop = self.stop.clone();
        let handle = tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                tokio::select! {
                    status = child.wait() => {
                        tracing::error!(?status, "the build engine stopped; restarting it");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(60));
                        match spawn(&command, &socket, docker_socket.as_deref()) {
                            Ok(c) => child = c,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot restart the build engine");
                                continue;
                            }
                        }
                    }
                    _ = stop.cancelled() => {
                        if let Some(pid) = child.id() {
                            // SAFETY: plain syscall on our child's pid.
                            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                        }
                        if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                        return;
                    }
                }
            }
        });
        *self.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The engine's own Docker API socket, when it serves one (the engine may not be started
    /// yet: see [`BuildEngine::ready`]).
    pub fn docker_socket(&self) -> Option<&Path> {
        self.docker_socket.as_deref()
    }

    /// A BuildKit socket for one job, forwarding to the engine (started on the first
    /// connection). It is removed when the returned value drops.
    pub async fn job_socket(self: &Arc<Self>, name: &str) -> Result<JobSocket, String> {
        let path = self.runtime_dir.join(format!("{name}.sock"));
        JobSocket::bind(&path, self.clone(), self.socket.clone()).await
    }

    /// A Docker API socket for one job, if the engine serves the Docker API.
    pub async fn job_docker_socket(
        self: &Arc<Self>,
        name: &str,
    ) -> Option<Result<JobSocket, String>> {
        let target = self.docker_socket.clone()?;
        let path = self.runtime_dir.join(format!("{name}-docker.sock"));
        Some(JobSocket::bind(&path, self.clone(), target).await)
    }

    /// Stop the engine process (SIGTERM, then SIGKILL after 20 s).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// Sockets need short paths (108 bytes): a private directory under $XDG_RUNTIME_DIR or /tmp.
fn runtime_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("kiln-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
    Ok(dir)
}

fn spawn(
    command: &EngineCommand,
    socket: &Path,
    docker_socket: Option<&Path>,
) -> Result<tokio::process::Child, String> {
    let _ = std::fs::remove_file(socket);
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.global_args)
        .arg("buildkitd")
        .arg("--addr")
        .arg(format!("unix://{}", socket.display()));
    for addr in &command.extra_addrs {
        cmd.arg("--addr").arg(addr);
    }
    if let Some(d) = docker_socket {
        let _ = std::fs::remove_file(d);
        cmd.arg("--docker-addr")
            .arg(format!("unix://{}", d.display()));
        if let Some(forward) = &command.docker_forward {
            cmd.arg("--docker-forward").arg(forward);
        }
    }
    // KILN_CONFIG may point at the runner's config.yaml, which is not a kiln.toml.
    cmd.args(&command.tls_args)
        .env_remove("KILN_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The engine dies with the daemon even if the daemon is killed.
    // SAFETY: prctl in the child between fork and exec only sets its parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        format!(
            "cannot start the build engine {}: {e}",
            command.program.display()
        )
    })
}

async fn wait_ready(socket: &Path, child: &mut tokio::process::Child) -> Result<(), String> {
    for _ in 0..600 {
        if UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the build engine exited at start ({status}); see its log above"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the build engine did not listen on {} within 30 s",
        socket.display()
    ))
}

/// A job's `BUILDKIT_HOST` socket. Each connection is forwarded to the engine byte for byte.
pub struct JobSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl JobSocket {
    /// Listen on `path` and forward each connection to `target`, a socket of `engine`.
    async fn bind(
        path: &Path,
        engine: Arc<BuildEngine>,
        target: PathBuf,
    ) -> Result<JobSocket, String> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (engine, target) = (engine.clone(), target.clone());
                tokio::spawn(async move {
                    if let Err(e) = engine.ready().await {
                        tracing::warn!(error = %e, "the build engine is not available");
                        return;
                    }
                    match UnixStream::connect(&target).await {
                        Ok(mut engine) => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot reach the build engine"),
                    }
                });
            }
        });
        Ok(JobSocket {
            path: path.to_path_buf(),
            task,
        })
    }

    /// `unix:///…`, the value of `BUILDKIT_HOST`.
    pub fn address(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for JobSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
