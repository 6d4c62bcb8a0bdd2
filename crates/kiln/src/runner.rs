//! `kiln register`, `kiln daemon` and `kiln generate-config`: kiln as a Gitea runner.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use kiln_runner::config::Config;
use kiln_runner::metrics::Metrics;
use tokio_util::sync::CancellationToken;

pub const VERSION: &str = concat!("kiln-", env!("CARGO_PKG_VERSION"));

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// Gitea instance URL, e.g. https://gitea.example.com
    #[arg(long)]
    instance: Option<String>,
    /// Registration token (Site/Org/Repo settings → Actions → Runners).
    #[arg(long)]
    token: Option<String>,
    /// Runner name. Default: the host name.
    #[arg(long)]
    name: Option<String>,
    /// Comma-separated labels, `name:host` or `name:docker://image`.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Don't ask; fail if something is missing.
    #[arg(long)]
    no_interactive: bool,
    /// Run one task, then unregister (Gitea ≥ 1.23).
    #[arg(long)]
    ephemeral: bool,
}

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Run one task, then exit.
    #[arg(long)]
    once: bool,
}

/// The runner config: `--config` (act_runner's config.yaml), else defaults.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let (config, warnings) = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in warnings {
        tracing::warn!("{w}");
        eprintln!("WARNING: {w}");
    }
    Ok(config)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kiln".into())
}

pub fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn register(args: RegisterArgs, config_path: Option<&Path>, log: &str) -> anyhow::Result<()> {
    init_logging(log, "text");
    let config = load_config(config_path)?;
    let ask = |prompt: &str| -> anyhow::Result<String> {
        print!("{prompt}");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    let instance = match args.instance {
        Some(i) => i,
        None if args.no_interactive => bail!("--instance is required with --no-interactive"),
        None => ask("Enter the Gitea instance URL (for example, https://gitea.com/):\n")?,
    };
    let token = match args.token {
        Some(t) => t,
        None if args.no_interactive => bail!("--token is required with --no-interactive"),
        None => ask("Enter the runner token:\n")?,
    };
    let name = match args.name {
        Some(n) => n,
        None if args.no_interactive => hostname(),
        None => {
            let host = hostname();
            let n = ask(&format!(
                "Enter the runner name (if set empty, use hostname: {host}):\n"
            ))?;
            if n.is_empty() {
                host
            } else {
                n
            }
        }
    };
    // Labels: config runner.labels > --labels > the defaults (as act_runner does).
    let labels = if !config.runner.labels.is_empty() {
        config.runner.labels.clone()
    } else if !args.labels.is_empty() || args.no_interactive {
        args.labels.clone()
    } else {
        let l = ask("Enter the runner labels, leave blank to use the default labels (comma-separated, for example, ubuntu-latest:docker://docker.gitea.com/runner-images:ubuntu-latest,linux:host):\n")?;
        l.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let registration = runtime
        .block_on(kiln_runner::register::register(
            kiln_runner::register::RegisterOptions {
                instance,
                token,
                name,
                labels,
                ephemeral: args.ephemeral,
                file: config.runner.file.clone(),
                insecure: config.runner.insecure,
                version: VERSION.into(),
                ping_attempts: 10,
            },
        ))
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "Runner registered successfully: {} (id {}), labels {}; saved to {}",
        registration.name,
        registration.id,
        registration.labels.join(","),
        config.runner.file.display()
    );
    Ok(())
}

pub fn daemon(
    args: DaemonArgs,
    config_path: Option<&Path>,
    root: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    init_logging(&config.log.level, &config.log.format);
    let state_dir = config
        .kiln
        .state_dir
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .or(root)
        .unwrap_or_else(crate::config::default_root);
    std::fs::create_dir_all(&state_dir).with_context(|| format!("{}", state_dir.display()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let metrics = Arc::new(Metrics::default());
        if !config.kiln.metrics_addr.is_empty() {
            let addr = config.kiln.metrics_addr.parse().with_context(|| {
                format!(
                    "kiln.metrics_addr `{}` is not host:port",
                    config.kiln.metrics_addr
                )
            })?;
            let (local, _) = kiln_runner::metrics::serve(addr, metrics.clone())
                .await
                .with_context(|| format!("serving /metrics on {addr}"))?;
            tracing::info!(%local, "serving /metrics, /healthz and /readyz");
        }
        let build = start_engine(&config, &state_dir).await;
        let cache = kiln_runner::start_cache(&config, &state_dir, &metrics)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let shutdown = CancellationToken::new();
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!(
                    "shutting down: no new tasks; running tasks get runner.shutdown_timeout"
                );
                shutdown.cancel();
            });
        }
        let result = kiln_runner::daemon::run(
            kiln_runner::daemon::DaemonOptions {
                config,
                state_dir,
                once: args.once,
                version: VERSION.into(),
                cache,
                metrics,
                build: build.clone(),
            },
            shutdown,
        )
        .await
        .map_err(|e| anyhow::anyhow!(e));
        if let Some(build) = build {
            build.shutdown().await;
        }
        result
    })
}

/// Start the build engine behind the jobs' `BUILDKIT_HOST` (a `kiln buildkitd` child process with
/// its own user namespace). A runner whose engine cannot start still runs jobs, without it.
async fn start_engine(
    config: &Config,
    state_dir: &Path,
) -> Option<Arc<kiln_runner::buildkit::BuildEngine>> {
    let section = &config.kiln.buildkit;
    if !section.enabled {
        return None;
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the kiln binary; jobs get no BUILDKIT_HOST");
            return None;
        }
    };
    let mut global_args = vec![
        "--root".to_string(),
        state_dir.join("builder").to_string_lossy().into_owned(),
        "--log".to_string(),
        if config.log.level.is_empty() {
            "info".into()
        } else {
            config.log.level.clone()
        },
    ];
    if let Some(builder) = &config.kiln.builder {
        let path = state_dir.join("builder.toml");
        let written = toml::to_string(builder)
            .map_err(|e| format!("kiln.builder cannot be written as kiln.toml: {e}"))
            .and_then(|text| {
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
            });
        match written {
            Ok(()) => {
                global_args.extend(["--config".to_string(), path.to_string_lossy().into_owned()])
            }
            Err(e) => {
                tracing::error!("{e}; jobs get no BUILDKIT_HOST");
                return None;
            }
        }
    }
    let mut tls_args = Vec::new();
    for (flag, value) in [
        ("--tlscacert", &section.tlscacert),
        ("--tlscert", &section.tlscert),
        ("--tlskey", &section.tlskey),
    ] {
        if let Some(v) = value {
            tls_args.extend([flag.to_string(), v.to_string_lossy().into_owned()]);
        }
    }
    if section.tls_from_env {
        tls_args.push("--tls-from-env".into());
    }
    let command = kiln_runner::buildkit::EngineCommand {
        program,
        global_args,
        extra_addrs: section.listen.clone(),
        tls_args,
        docker: section.docker,
        docker_forward: section.docker_forward.then(|| {
            let c = &config.container;
            kiln_actions::exec::docker::DockerConfig {
                host: c.docker_host.clone(),
                ..Default::default()
            }
            .address()
        }),
    };
    match kiln_runner::buildkit::BuildEngine::start(command).await {
        Ok(engine) => {
            tracing::info!(socket = %engine.socket().display(), "build engine ready; jobs get BUILDKIT_HOST");
            Some(engine)
        }
        Err(e) => {
            tracing::error!("{e}; jobs get no BUILDKIT_HOST");
            None
        }
    }
}

pub fn generate_config() {
    print!("{}", kiln_runner::config::EXAMPLE);
}
