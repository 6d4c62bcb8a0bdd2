//! `kiln daemon`: declare, poll with capacity, run tasks, drain on shutdown.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kiln_actions::exec::ExecConfig;
use kiln_gitea::{proto, Client, ClientOptions, Code, Registration};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::labels::{self, Label};
use crate::metrics::Metrics;
use crate::reporter::Reporter;
use crate::task::{run_task, JobCache, TaskEnv};

pub struct DaemonOptions {
    pub config: Config,
    /// State directory (job working dirs, action clones, actions cache).
    pub state_dir: PathBuf,
    /// Run one task, then exit (`--once`; also what an ephemeral registration does).
    pub once: bool,
    pub version: String,
    /// The actions cache to offer jobs (started by the caller), if any.
    pub cache: Option<Arc<dyn JobCache>>,
    pub metrics: Arc<Metrics>,
    /// The build engine for the jobs' `BUILDKIT_HOST` (started by the caller), if any.
    pub build: Option<Arc<crate::buildkit::BuildEngine>>,
}

/// Run until `shutdown` is cancelled (then drain), or until a fatal error.
pub async fn run(options: DaemonOptions, shutdown: CancellationToken) -> Result<(), String> {
    let config = Arc::new(options.config);
    let file = &config.runner.file;
    let mut registration = Registration::load(file).map_err(|e| {
        format!(
            "cannot read the registration {}: {e}; run `kiln register` first",
            file.display()
        )
    })?;
    if !config.runner.labels.is_empty() && config.runner.labels != registration.labels {
        registration.labels = config.runner.labels.clone();
        registration
            .save(file)
            .map_err(|e| format!("cannot update {}: {e}", file.display()))?;
    }
    let runner_labels: Vec<Label> = registration
        .labels
        .iter()
        .map(|l| Label::parse(l))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let client = Client::new(
        &registration.address,
        ClientOptions {
            insecure: config.runner.insecure,
            extra_ca_pem: None,
            version: options.version.clone(),
            request_timeout: Duration::from_secs(30),
        },
    )
    .map_err(|e| format!("{}: {e}", registration.address))?
    .with_credentials(&registration.uuid, &registration.token);

    let capabilities = declare(&client, &registration, &options.version, &shutdown).await?;
    tracing::info!(
        runner = %registration.name,
        address = %registration.address,
        labels = ?labels::names(&registration.labels),
        capacity = config.capacity(),
        "declared to Gitea; waiting for tasks"
    );
    options.metrics.ready.store(true, Ordering::Relaxed);

    let workdir_parent = config
        .host
        .workdir_parent
        .clone()
        .unwrap_or_else(|| options.state_dir.join("host"));
    let mut exec = ExecConfig::under(&workdir_parent);
    exec.runner_name = registration.name.clone();
    exec.env = config.job_env().map_err(|e| e.to_string())?;
    exec.node = config
        .kiln
        .node
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    if config.kiln.native_actions {
        exec.native = Some(Arc::new(crate::native::DockerActions));
    }
    let docker =
        crate::containers::docker_config(&config, &registration.uuid, options.build.clone());
    let uses_docker = runner_labels
        .iter()
        .any(|l| matches!(l.schema, labels::Schema::Docker(_)));
    if config.container.require_docker {
        crate::containers::wait_for_docker(&docker).await?;
    }
    // Before any job can create containers again. A runner without docker:// labels may have
    // no daemon at all: it does not wait long for one.
    let uses_docker = uses_docker || config.container.require_docker;
    let cleanup = crate::containers::remove_leftovers(&docker, uses_docker);
    if uses_docker {
        cleanup.await;
    } else if tokio::time::timeout(Duration::from_secs(5), cleanup)
        .await
        .is_err()
    {
        tracing::debug!("no Docker daemon answered; not looking for leftovers");
    }
    exec.docker = Some(docker);
    let env = Arc::new(TaskEnv {
        client: client.clone(),
        config: config.clone(),
        exec,
        address: registration.address.clone(),
        runner_name: registration.name.clone(),
        version: options.version.clone(),
        labels: runner_labels,
        workdir_parent: workdir_parent.join("work"),
        cache: options.cache.clone(),
        capabilities,
        metrics: options.metrics.clone(),
        build: options.build.clone(),
    });

    let once = options.once || registration.ephemeral;
    let slots = Arc::new(tokio::sync::Semaphore::new(config.capacity()));
    let jobs_cancel = CancellationToken::new();
    let mut running = JoinSet::new();
    let mut tasks_version = 0i64;
    let mut interval = config.runner.fetch_interval;
    let mut fatal = None;
    let mut failing = false;
    loop {
        // Reap finished tasks so the set does not grow.
        while running.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let fetched = tokio::select! {
            r = client.fetch_task(proto::FetchTaskRequest { tasks_version }, config.runner.fetch_timeout) => r,
            _ = shutdown.cancelled() => break,
        };
        match fetched {
            Ok(response) => {
                if failing {
                    tracing::info!("Gitea answers again");
                    failing = false;
                }
                interval = config.runner.fetch_interval;
                if let Some(task) = response.task {
                    // More tasks may be waiting: the next poll must not be skipped by the version gate.
                    tasks_version = 0;
                    options
                        .metrics
                        .tasks_fetched
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(task = task.id, "task received");
                    let reporter = Reporter::new(client.clone(), task.id);
                    let (env, cancel, metrics) =
                        (env.clone(), jobs_cancel.clone(), options.metrics.clone());
                    running.spawn(async move {
                        let _permit = permit;
                        metrics.started(&reporter);
                        let result = run_task(env, task, cancel, reporter.clone()).await;
                        metrics.finished(&reporter, result);
                    });
                    if once {
                        break;
                    }
                    continue;
                }
                tasks_version = tasks_version.max(response.tasks_version);
                drop(permit);
            }
            Err(e) if e.is_unauthenticated() => {
                fatal = Some(format!(
                    "Gitea no longer accepts this runner ({e}); it was probably deleted: run `kiln register` again"
                ));
                break;
            }
            Err(e) => {
                drop(permit);
                options.metrics.fetch_errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, "cannot fetch tasks from Gitea; retrying with backoff");
                    failing = true;
                }
                interval = (interval * 2).min(
                    config
                        .runner
                        .fetch_interval_max
                        .max(config.runner.fetch_interval),
                );
                if e.code == Code::Unimplemented {
                    fatal = Some(format!(
                        "Gitea does not offer FetchTask at {}: {e}",
                        registration.address
                    ));
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => break,
        }
    }

    // Drain: no new tasks; running ones get `shutdown_timeout`, then they are cancelled and report.
    if !running.is_empty() {
        let grace = config.runner.shutdown_timeout;
        tracing::info!(tasks = running.len(), ?grace, "waiting for running tasks");
        let all_done = async { while running.join_next().await.is_some() {} };
        let in_time = if once && !shutdown.is_cancelled() {
            // --once / ephemeral: the task runs to its end unless a shutdown comes.
            tokio::select! {
                _ = all_done => true,
                _ = shutdown.cancelled() => false,
            }
        } else {
            tokio::time::timeout(grace, all_done).await.is_ok()
        };
        if !in_time {
            tracing::warn!("cancelling the tasks still running");
            jobs_cancel.cancel();
            while running.join_next().await.is_some() {}
        }
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Declare version and labels; retried while Gitea is unreachable.
async fn declare(
    client: &Client,
    registration: &Registration,
    version: &str,
    shutdown: &CancellationToken,
) -> Result<Vec<String>, String> {
    let mut delay = Duration::from_secs(1);
    loop {
        let request = proto::DeclareRequest {
            version: version.to_string(),
            labels: labels::names(&registration.labels),
            ..Default::default()
        };
        match client.declare(request).await {
            Ok((_, capabilities)) => return Ok(capabilities),
            Err(e) if e.code == Code::Unimplemented => {
                return Err(format!(
                    "{} does not support Declare: kiln needs Gitea 1.21 or newer ({e})",
                    registration.address
                ))
            }
            Err(e) if e.is_unauthenticated() => {
                return Err(format!(
                    "Gitea rejected this runner ({e}); it may have been deleted: run `kiln register` again"
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot declare the runner to Gitea");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err("stopped before Gitea answered".into()),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
