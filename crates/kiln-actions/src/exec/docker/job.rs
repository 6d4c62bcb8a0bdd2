//! The job container and its services: started in "Set up job", steps run in the job container
//! with `docker exec` semantics, everything removed when the job ends.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthStatusEnum, HostConfig, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::options::RunOptions;
use super::{api_error, container_name, same_path_binds, Session};
use crate::exec::{JobSpec, Runner};
use crate::expr;
use crate::model::Container;
use crate::process::{self, sleep_until, Exit, ProcessSpec, STEP_TRACKING_VAR};

/// The running job container.
pub(crate) struct JobContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The container's environment as its image and `env:` set it.
    pub env: BTreeMap<String, String>,
    /// Programs found in the container at start (`bash` → `/bin/bash`).
    pub programs: HashMap<String, String>,
}

/// A container as the workflow describes it, with expressions evaluated.
struct Resolved {
    image: String,
    env: Vec<String>,
    credentials: Option<(String, String)>,
    ports: Vec<String>,
    volumes: Vec<String>,
    options: RunOptions,
}

impl Runner {
    /// The image the job runs in: `jobs.<id>.container`, else the runner label's image.
    fn job_container_spec(&self, spec: &JobSpec) -> Option<Container> {
        let job = spec.workflow.job(&spec.job_id)?;
        match &job.container {
            Some(c) => Some(c.clone()),
            None => spec.container_image.as_ref().map(|image| Container {
                image: image.clone(),
                ..Container::default()
            }),
        }
    }

    /// Whether the job needs the Docker daemon from the start.
    pub(crate) fn needs_containers(&self, spec: &JobSpec) -> bool {
        let services = spec
            .workflow
            .job(&spec.job_id)
            .is_some_and(|j| !j.services.is_empty());
        services || self.job_container_spec(spec).is_some()
    }

    /// Open the daemon session of this job (once).
    pub(crate) async fn docker_session(&mut self) -> Result<&mut Session, String> {
        if self.docker.is_none() {
            let config = self.config.docker.clone().ok_or_else(|| {
                "this runner has no Docker daemon configured (container mode is off)".to_string()
            })?;
            self.docker = Some(Session::open(&config, &self.tracking_id).await?);
        }
        Ok(self.docker.as_mut().expect("just set"))
    }

    /// Start the services and the job container. Called in set-up; whatever was created is
    /// removed by the job's clean-up even when this fails.
    pub(crate) async fn start_containers(
        &mut self,
        spec: &JobSpec,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let job = spec.workflow.job(&spec.job_id).expect("checked in set-up");
        let file = spec.workflow.file_name.clone();
        let job_id = spec.job_id.clone();
        let container = match self.job_container_spec(spec) {
            Some(c) => Some(self.resolve_container(&c, &format!("jobs.{job_id}.container"))?),
            None => None,
        };
        // `container: ${{ matrix.image }}` that comes out empty runs on the host, as on GitHub.
        let container = container.filter(|c| !c.image.is_empty());
        let mut services = Vec::new();
        for (name, svc) in job.services.iter() {
            let resolved =
                self.resolve_container(svc, &format!("jobs.{job_id}.services.{name}"))?;
            if resolved.image.is_empty() {
                continue;
            }
            services.push((name.to_string(), resolved));
        }
        if container.is_none() && services.is_empty() {
            return Ok(());
        }
        let out = self.out.clone();
        let log = |line: &str| out.log(None, line);
        let mounts = self.job_mounts();
        let workspace = self.workspace.to_string_lossy().into_owned();
        let session = self
            .docker_session()
            .await
            .map_err(|e| format!("{file}: job `{job_id}` needs containers: {e}"))?;
        let network = session.job_network().await?;
        let host_network = network.as_deref() == Some("host");

        for (name, svc) in &services {
            log(&format!(
                "::group::Starting service container `{name}` ({})",
                svc.image
            ));
            session
                .ensure_image(&svc.image, svc.credentials.clone(), &log)
                .await
                .map_err(|e| format!("service `{name}`: {e}"))?;
            let mut body = ContainerCreateBody {
                image: Some(svc.image.clone()),
                env: Some(svc.env.clone()),
                labels: Some(session.labels()),
                host_config: Some(HostConfig {
                    privileged: Some(session.config.privileged),
                    ..Default::default()
                }),
                ..Default::default()
            };
            attach_network(&mut body, network.as_deref(), std::slice::from_ref(name));
            if !host_network {
                publish_ports(&mut body, &svc.ports)?;
            } else if !svc.ports.is_empty() {
                log(&format!(
                    "`ports` of service `{name}` are not needed: the service shares the host network"
                ));
            }
            let binds = self_volumes(session, &svc.volumes, &svc.options, &log);
            add_binds(&mut body, binds);
            svc.options.apply(&mut body);
            let cname = container_name(&[&session.job_id, name]);
            create_and_start(session, &cname, body)
                .await
                .map_err(|e| format!("service `{name}`: {e}"))?;
            log(&format!("Service `{name}` started as {cname}"));
            log("::endgroup::");
        }

        if let Some(c) = &container {
            log(&format!("::group::Starting job container ({})", c.image));
            session
                .ensure_image(&c.image, c.credentials.clone(), &log)
                .await
                .map_err(|e| format!("job container: {e}"))?;
            let runner_options = match session.config.options.trim() {
                "" => RunOptions::default(),
                text => RunOptions::parse(text)
                    .map_err(|e| format!("the runner's container.options: {e}"))?,
            };
            let mut body = ContainerCreateBody {
                image: Some(c.image.clone()),
                entrypoint: Some(vec!["tail".into()]),
                cmd: Some(vec!["-f".into(), "/dev/null".into()]),
                env: Some(c.env.clone()),
                working_dir: Some(workspace.clone()),
                labels: Some(session.labels()),
                host_config: Some(HostConfig {
                    binds: Some(same_path_binds(&mounts)),
                    privileged: Some(session.config.privileged),
                    ..Default::default()
                }),
                ..Default::default()
            };
            attach_network(&mut body, network.as_deref(), &[]);
            if !host_network {
                publish_ports(&mut body, &c.ports)?;
            }
            let binds = self_volumes(session, &c.volumes, &c.options, &log);
            add_binds(&mut body, binds);
            runner_options.apply(&mut body);
            c.options.apply(&mut body);
            let cname = container_name(&[&session.job_id, "job"]);
            let id = create_and_start(session, &cname, body)
                .await
                .map_err(|e| format!("job container: {e}"))?;
            let env = container_env(&session.client, &id).await;
            let programs = probe_programs(&session.client, &id).await;
            log(&format!("Job container {cname} is running"));
            log("::endgroup::");
            session.job = Some(JobContainer {
                id,
                name: cname,
                image: c.image.clone(),
                env,
                programs,
            });
        }

        for (name, _) in &services {
            let cname = container_name(&[&session.job_id, name]);
            wait_healthy(&session.client, name, &cname, cancel, &log).await?;
        }
        Ok(())
    }

    /// Evaluate the expressions of a container or service definition.
    fn resolve_container(&self, c: &Container, path: &str) -> Result<Resolved, String> {
        let ctx = &self.state.ctx;
        let eval = |value: &str, key: &str| {
            expr::interpolate(value, ctx).map_err(|e| format!("{path}.{key}: {e}"))
        };
        let image = eval(&c.image, "image")?.trim().to_string();
        let mut env = Vec::new();
        for (k, v) in c.env.iter() {
            env.push(format!("{k}={}", eval(v, &format!("env.{k}"))?));
        }
        let credentials = match &c.credentials {
            Some(cr) => {
                let user = eval(cr.username.as_deref().unwrap_or(""), "credentials.username")?;
                let password = eval(cr.password.as_deref().unwrap_or(""), "credentials.password")?;
                self.out.masker.add(&password);
                (!user.is_empty() || !password.is_empty()).then_some((user, password))
            }
            None => None,
        };
        let ports = c
            .ports
            .iter()
            .map(|p| eval(p, "ports"))
            .collect::<Result<_, _>>()?;
        let volumes = c
            .volumes
            .iter()
            .map(|v| eval(v, "volumes"))
            .collect::<Result<_, _>>()?;
        let options = match &c.options {
            Some(o) => RunOptions::parse(&eval(o, "options")?)
                .map_err(|e| format!("{path}.options: {e}"))?,
            None => RunOptions::default(),
        };
        Ok(Resolved {
            image,
            env,
            credentials,
            ports,
            volumes,
            options,
        })
    }

    /// Host paths a job's containers see at the same place.
    pub(crate) fn job_mounts(&self) -> Vec<std::path::PathBuf> {
        let mut paths = vec![
            self.workspace.clone(),
            self.temp.clone(),
            self.config.tool_cache.clone(),
            self.config.action_cache.clone(),
        ];
        if let Some(dir) = self.config.env.get("DOCKER_CONFIG") {
            paths.push(dir.into());
        }
        // The job's own build sockets (kiln's BuildKit API and Docker API).
        for var in ["BUILDKIT_HOST", "DOCKER_HOST"] {
            if let Some(path) = self
                .config
                .env
                .get(var)
                .and_then(|v| v.strip_prefix("unix://"))
            {
                paths.push(path.into());
            }
        }
        paths.retain(|p| p.exists());
        paths
    }
}

/// Join `network` (with aliases on user-defined networks).
pub(super) fn attach_network(
    body: &mut ContainerCreateBody,
    network: Option<&str>,
    aliases: &[String],
) {
    let Some(network) = network else { return };
    body.host_config
        .get_or_insert_with(Default::default)
        .network_mode = Some(network.to_string());
    let builtin = matches!(network, "host" | "bridge" | "none" | "default")
        || network.starts_with("container:");
    if !builtin && !aliases.is_empty() {
        body.networking_config = Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings {
                    aliases: Some(aliases.to_vec()),
                    ..Default::default()
                },
            )])),
        });
    }
}

/// `ports:` entries (`8080:80`, `80`, `127.0.0.1:8080:80/tcp`) as published ports.
fn publish_ports(body: &mut ContainerCreateBody, ports: &[String]) -> Result<(), String> {
    for port in ports {
        let parts: Vec<&str> = port.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h), *c),
            _ => return Err(format!("ports: `{port}` is not [ip:][host:]container")),
        };
        let key = if container.contains('/') {
            container.to_string()
        } else {
            format!("{container}/tcp")
        };
        body.exposed_ports
            .get_or_insert_with(Vec::new)
            .push(key.clone());
        body.host_config
            .get_or_insert_with(Default::default)
            .port_bindings
            .get_or_insert_with(Default::default)
            .insert(
                key,
                Some(vec![PortBinding {
                    host_ip: ip.map(str::to_string),
                    host_port: Some(host.unwrap_or("").to_string()),
                }]),
            );
    }
    Ok(())
}

/// `volumes:` and `-v` options that `valid_volumes` allows; the others are skipped with a
/// warning, as act_runner does.
fn self_volumes(
    session: &Session,
    volumes: &[String],
    options: &RunOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Vec<String> {
    let mut binds = Vec::new();
    for v in volumes.iter().chain(&options.volumes) {
        let source = v.split(':').next().unwrap_or_default();
        if !v.contains(':') {
            // An anonymous volume at a path: nothing from the host.
            binds.push(v.clone());
        } else if session.volume_allowed(source) {
            binds.push(v.clone());
        } else {
            log(&format!(
                "##[warning]volume `{v}` is skipped: `{source}` is not in the runner's container.valid_volumes"
            ));
        }
    }
    binds
}

fn add_binds(body: &mut ContainerCreateBody, binds: Vec<String>) {
    if binds.is_empty() {
        return;
    }
    body.host_config
        .get_or_insert_with(Default::default)
        .binds
        .get_or_insert_with(Vec::new)
        .extend(binds);
}

/// Create and start a container, recording it for clean-up.
pub(super) async fn create_and_start(
    session: &mut Session,
    name: &str,
    body: ContainerCreateBody,
) -> Result<String, String> {
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let created = session
        .client
        .create_container(Some(options), body)
        .await
        .map_err(|e| format!("cannot create container {name}: {}", api_error(&e)))?;
    session
        .containers
        .push((created.id.clone(), name.to_string()));
    session
        .client
        .start_container(&created.id, None)
        .await
        .map_err(|e| format!("cannot start container {name}: {}", api_error(&e)))?;
    Ok(created.id)
}

async fn container_env(docker: &Docker, id: &str) -> BTreeMap<String, String> {
    let Ok(info) = docker.inspect_container(id, None).await else {
        return BTreeMap::new();
    };
    info.config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Which shells and interpreters the container has.
async fn probe_programs(docker: &Docker, id: &str) -> HashMap<String, String> {
    let script = "for p in bash sh node python3 python pwsh; do command -v \"$p\" || true; done";
    let spec = ProcessSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::new(),
        cwd: "/".into(),
    };
    let container = JobContainer {
        id: id.to_string(),
        name: String::new(),
        image: String::new(),
        env: BTreeMap::new(),
        programs: HashMap::new(),
    };
    let mut output = Vec::new();
    let never = CancellationToken::new();
    let result = container
        .exec(
            docker,
            &spec,
            "probe",
            Some(Duration::from_secs(30)),
            &never,
            Duration::from_secs(1),
            |data| output.extend_from_slice(data),
        )
        .await;
    if result.is_err() {
        return HashMap::new();
    }
    String::from_utf8_lossy(&output)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .filter_map(|path| {
            let name = path.rsplit('/').next()?;
            Some((name.to_string(), path.to_string()))
        })
        .collect()
}

/// Wait until a service is healthy (services without a health check count as ready once
/// running). A service that stops or turns unhealthy fails the job with its last output.
async fn wait_healthy(
    docker: &Docker,
    service: &str,
    name: &str,
    cancel: &CancellationToken,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(), String> {
    let mut announced = false;
    loop {
        let info = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| format!("service `{service}`: {}", api_error(&e)))?;
        let state = info.state.unwrap_or_default();
        if state.running != Some(true) {
            let tail = container_logs(docker, name, 20).await;
            return Err(format!(
                "service `{service}` stopped with exit code {}{}",
                state.exit_code.unwrap_or(-1),
                tail
            ));
        }
        let health = state.health.and_then(|h| h.status);
        match health {
            None | Some(HealthStatusEnum::NONE) | Some(HealthStatusEnum::EMPTY) => return Ok(()),
            Some(HealthStatusEnum::HEALTHY) => {
                log(&format!("Service `{service}` is healthy"));
                return Ok(());
            }
            Some(HealthStatusEnum::UNHEALTHY) => {
                let tail = container_logs(docker, name, 20).await;
                return Err(format!("service `{service}` is unhealthy{tail}"));
            }
            Some(HealthStatusEnum::STARTING) => {
                if !announced {
                    log(&format!("Waiting for service `{service}` to be healthy"));
                    announced = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = cancel.cancelled() => return Err("cancelled while waiting for services".into()),
                }
            }
        }
    }
}

/// The last `lines` of a container's output, formatted for an error message.
pub(super) async fn container_logs(docker: &Docker, name: &str, lines: usize) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(name, Some(options));
    let mut text = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.extend_from_slice(chunk.as_ref());
    }
    let text = String::from_utf8_lossy(&text);
    if text.trim().is_empty() {
        String::new()
    } else {
        format!("; its last output:\n{}", text.trim_end())
    }
}

impl JobContainer {
    /// Run `spec` in the container like [`process::run`] runs it on the host: output streamed as
    /// it comes, and on timeout or cancellation every process of the step (found by its tracking
    /// variable) gets SIGINT and, after `grace`, SIGKILL.
    #[allow(clippy::too_many_arguments)]
    pub async fn exec(
        &self,
        docker: &Docker,
        spec: &ProcessSpec,
        tracking_id: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        grace: Duration,
        mut on_output: impl FnMut(&[u8]),
    ) -> Result<Exit, String> {
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("{STEP_TRACKING_VAR}={tracking_id}"));
        let mut cmd = vec![spec.program.to_string_lossy().into_owned()];
        cmd.extend(spec.args.iter().cloned());
        let created = docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(env),
                    working_dir: Some(spec.cwd.to_string_lossy().into_owned()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot run {} in the job container: {}",
                    spec.program.display(),
                    api_error(&e)
                )
            })?;
        let started = docker.start_exec(&created.id, None).await.map_err(|e| {
            format!(
                "cannot run {} in the job container: {}",
                spec.program.display(),
                api_error(&e)
            )
        })?;
        let StartExecResults::Attached { mut output, .. } = started else {
            return Err("the daemon detached the step's process".into());
        };
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut outcome: Option<Exit> = None;
        // After a kill, stop waiting for the stream if the processes were not ours to kill.
        let mut give_up: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(chunk)) => on_output(chunk.as_ref()),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "exec stream ended with an error");
                        break;
                    }
                    None => break,
                },
                _ = sleep_until(deadline), if outcome.is_none() => {
                    outcome = Some(Exit::TimedOut);
                    process::stop_tracked(tracking_id, grace).await;
                    give_up = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                _ = cancel.cancelled(), if outcome.is_none() => {
                    outcome = Some(Exit::Cancelled);
                    process::stop_tracked(tracking_id, grace).await;
                    give_up = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                _ = sleep_until(give_up), if give_up.is_some() => {
                    tracing::warn!(container = %self.name, "the step's processes are not visible to kiln; they stop with the job container");
                    break;
                }
            }
        }
        if let Some(outcome) = outcome {
            return Ok(outcome);
        }
        let info = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| api_error(&e))?;
        match info.exit_code {
            Some(code) => Ok(Exit::Code(code as i32)),
            None => Err(format!(
                "the job container {} stopped while the step ran",
                self.name
            )),
        }
    }
}
