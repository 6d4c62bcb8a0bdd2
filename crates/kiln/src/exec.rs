//! `kiln exec`: run a workflow from a local checkout, without Gitea (like `act`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use kiln_actions::exec::{Event, ExecConfig, Outcome};
use kiln_actions::local::{LocalRun, RunEvent};
use kiln_actions::model::{self, Workflow};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Workflow file or directory. Default: .gitea/workflows, else .github/workflows.
    #[arg(short = 'W', long = "workflows")]
    workflows: Option<PathBuf>,
    /// Run only this job (and the jobs it needs).
    #[arg(short, long)]
    job: Option<String>,
    /// The event that triggers the run.
    #[arg(long, default_value = "push")]
    event: String,
    /// JSON payload of the event (`github.event`).
    #[arg(long)]
    event_file: Option<PathBuf>,
    /// A secret, `NAME=VALUE`, or `NAME` to take the value from kiln's environment.
    #[arg(short, long = "secret")]
    secrets: Vec<String>,
    /// A file of secrets, one `NAME=VALUE` per line (`#` comments, optional quotes).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// A configuration variable (`vars` context), `NAME=VALUE`.
    #[arg(long = "var")]
    vars: Vec<String>,
    /// A file of variables, one `NAME=VALUE` per line.
    #[arg(long)]
    var_file: Option<PathBuf>,
    /// Run only matrix combinations with this value, `key:value` (repeatable).
    #[arg(long = "matrix")]
    matrix: Vec<String>,
    /// List the jobs that would run, in stages, and exit.
    #[arg(short, long)]
    list: bool,
    /// The repository checkout to run in.
    #[arg(short = 'C', long, default_value = ".")]
    directory: PathBuf,
    /// Where `owner/repo@ref` actions are cloned from (Gitea's DEFAULT_ACTIONS_URL).
    #[arg(long, default_value = "https://github.com", env = "KILN_ACTIONS_URL")]
    actions_url: String,
    /// `github.server_url` of the run.
    #[arg(long, default_value = "https://github.com")]
    server_url: String,
    /// The node binary for JavaScript actions. Default: `node` on PATH.
    #[arg(long)]
    node: Option<PathBuf>,
    /// Directory for action clones, tool cache and temp files.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Run `actions/checkout` instead of using the local checkout as it is.
    #[arg(long)]
    no_local_checkout: bool,
    /// Run jobs whose `runs-on` names LABEL in a container of IMAGE, `LABEL=IMAGE` (repeatable;
    /// as act's `-P`). `container:`, `services:` and Docker actions need no flag.
    #[arg(short = 'P', long = "platform", value_name = "LABEL=IMAGE")]
    pub platforms: Vec<String>,
    /// The Docker daemon for containers. Default: DOCKER_HOST, else /var/run/docker.sock.
    #[arg(long, env = "KILN_DOCKER_HOST", default_value = "")]
    pub docker_host: String,
    /// Network of job and service containers: empty creates one per job, `host` shares the
    /// host's, anything else names a network.
    #[arg(long, default_value = "")]
    pub container_network: String,
    /// Seconds a cancelled step gets after SIGINT before it is killed.
    #[arg(long, default_value_t = 7.5)]
    kill_grace: f64,
    /// Give jobs none of the runner's build doors: BUILDKIT_HOST, DOCKER_HOST and DOCKER_CONFIG
    /// stay as they are in kiln's environment, and docker/* actions run as published.
    #[arg(long)]
    no_build_doors: bool,
}

/// Where the build engine of `kiln exec` keeps its cache: the state directory of `kiln build`.
pub struct EngineSettings {
    pub root: PathBuf,
    /// kiln.toml (`--config`), passed on to the engine.
    pub config: Option<PathBuf>,
    pub log: String,
}

pub fn run(args: ExecArgs, engine: EngineSettings) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new().context("starting runtime")?;
    runtime.block_on(run_async(args, engine))
}

/// The runner's build doors for a local run, as `kiln daemon` gives them to each job: one engine
/// (a `kiln buildkitd` child, started when a step first uses it) behind a `BUILDKIT_HOST` and a
/// `DOCKER_HOST` socket, a private `DOCKER_CONFIG`, the native docker/* actions, and Dockerfile
/// actions built by the engine.
async fn open_build_doors(
    args: &ExecArgs,
    settings: &EngineSettings,
    config: &mut ExecConfig,
    dir: &Path,
) -> anyhow::Result<(
    Arc<kiln_runner::buildkit::BuildEngine>,
    kiln_runner::doors::JobDoors,
)> {
    let mut global_args = vec![
        "--root".to_string(),
        settings.root.to_string_lossy().into_owned(),
        "--log".to_string(),
        settings.log.clone(),
    ];
    if let Some(c) = &settings.config {
        global_args.extend(["--config".to_string(), c.to_string_lossy().into_owned()]);
    }
    let docker = config.docker.clone().unwrap_or_default();
    let engine =
        kiln_runner::buildkit::BuildEngine::on_demand(kiln_runner::buildkit::EngineCommand {
            program: std::env::current_exe().context("finding the kiln binary")?,
            global_args,
            extra_addrs: Vec::new(),
            tls_args: Vec::new(),
            docker: true,
            // `docker run` in a step reaches the daemon given with --docker-host.
            docker_forward: (!args.docker_host.is_empty()).then(|| docker.address()),
        })
        .map_err(|e| anyhow::anyhow!(e))?;
    let doors = kiln_runner::doors::JobDoors::open(Some(&engine), "exec", dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    for warning in &doors.warnings {
        eprintln!("WARNING: {warning}");
    }
    config.env.extend(doors.env.clone());
    config.native = Some(Arc::new(kiln_runner::native::DockerActions));
    if let Some(d) = config.docker.as_mut() {
        d.builder = kiln_runner::containers::engine_builder(Some(engine.clone()));
    }
    Ok((engine, doors))
}

async fn run_async(args: ExecArgs, settings: EngineSettings) -> anyhow::Result<bool> {
    let repo = args
        .directory
        .canonicalize()
        .with_context(|| format!("{}", args.directory.display()))?;
    let workflows = load(&args, &repo)?;
    let event: serde_json::Value = match &args.event_file {
        Some(f) => {
            serde_json::from_slice(&std::fs::read(f).with_context(|| format!("{}", f.display()))?)
                .with_context(|| format!("{}: not valid JSON", f.display()))?
        }
        None => serde_json::json!({}),
    };
    let mut secrets = BTreeMap::new();
    if let Some(f) = &args.secret_file {
        secrets.extend(read_dotenv(f)?);
    }
    for s in &args.secrets {
        let (k, v) = match s.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (
                s.clone(),
                std::env::var(s)
                    .with_context(|| format!("--secret {s}: not set in the environment"))?,
            ),
        };
        secrets.insert(k, v);
    }
    let mut vars = BTreeMap::new();
    if let Some(f) = &args.var_file {
        vars.extend(read_dotenv(f)?);
    }
    for s in &args.vars {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--var {s}: expected NAME=VALUE"))?;
        vars.insert(k.to_string(), v.to_string());
    }
    let mut matrix_filter = Vec::new();
    for m in &args.matrix {
        let (k, v) = m
            .split_once(':')
            .with_context(|| format!("--matrix {m}: expected key:value"))?;
        matrix_filter.push((k.to_string(), v.to_string()));
    }

    // The workflows this event (and job) selects.
    let selected: Vec<Arc<Workflow>> = workflows
        .into_iter()
        .filter(|w| args.job.is_some() || w.on.has(&args.event))
        .filter(|w| args.job.as_ref().is_none_or(|j| w.job(j).is_some()))
        .map(Arc::new)
        .collect();
    if selected.is_empty() {
        match &args.job {
            Some(j) => bail!("no workflow has a job `{j}`"),
            None => bail!(
                "no workflow is triggered by `{}` (try --event or -j)",
                args.event
            ),
        }
    }
    if args.list {
        println!(
            "{:<6} {:<24} {:<32} {:<24} FILE",
            "STAGE", "JOB ID", "JOB NAME", "WORKFLOW"
        );
        for w in &selected {
            let stages = model::plan(w, args.job.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
            for (i, stage) in stages.iter().enumerate() {
                for id in stage {
                    let name = w
                        .job(id)
                        .and_then(|j| j.name.clone())
                        .unwrap_or_else(|| id.clone());
                    let wf_name = w.name.clone().unwrap_or_else(|| w.file_name.clone());
                    println!(
                        "{:<6} {:<24} {:<32} {:<24} {}",
                        i, id, name, wf_name, w.file_name
                    );
                }
            }
        }
        return Ok(true);
    }

    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("kiln/exec"),
    };
    let mut config = ExecConfig::under(&state_dir);
    config.default_actions_url = args.actions_url.clone();
    config.node = args.node.clone();
    config.local_checkout = !args.no_local_checkout;
    config.kill_grace = std::time::Duration::from_secs_f64(args.kill_grace.max(0.0));
    config.runner_name = "kiln-exec".into();
    config.docker = Some(kiln_actions::exec::docker::DockerConfig {
        host: args.docker_host.clone(),
        network: args.container_network.clone(),
        owner: format!("kiln-exec-{}", std::process::id()),
        ..Default::default()
    });
    let platforms: Vec<(String, String)> = args
        .platforms
        .iter()
        .map(|p| {
            let (label, image) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--platform `{p}`: expected LABEL=IMAGE"))?;
            Ok((
                label.trim().to_string(),
                image.trim().trim_start_matches("docker://").to_string(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;

    let doors_dir = state_dir.join(format!("run-{}", std::process::id()));
    let doors = if args.no_build_doors {
        None
    } else {
        Some(open_build_doors(&args, &settings, &mut config, &doors_dir).await?)
    };

    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("Interrupted: cancelling the run");
                cancel.cancel();
            }
        });
    }
    let mut ok = true;
    for wf in selected {
        let wf_name = wf.name.clone().unwrap_or_else(|| {
            let file = Path::new(&wf.file_name)
                .file_name()
                .and_then(|n| n.to_str());
            file.unwrap_or(&wf.file_name).to_string()
        });
        let run = LocalRun {
            workflow: wf.clone(),
            job: args.job.clone(),
            event_name: args.event.clone(),
            event: event.clone(),
            secrets: secrets.clone(),
            vars: vars.clone(),
            matrix_filter: matrix_filter.clone(),
            workspace: repo.clone(),
            server_url: args.server_url.clone(),
            platforms: platforms.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let printer = tokio::spawn(print_events(rx, wf_name.clone()));
        let result =
            kiln_actions::local::run_workflow(run, config.clone(), tx, cancel.clone()).await;
        let _ = printer.await;
        match result {
            Ok(summary) => ok &= summary.success,
            Err(e) => {
                eprintln!("ERROR: {e}");
                ok = false;
            }
        }
    }
    if let Some((engine, doors)) = doors {
        drop(doors);
        engine.shutdown().await;
        let _ = std::fs::remove_dir_all(&doors_dir);
    }
    Ok(ok)
}

/// Workflows from -W (a file or a directory) or the repository's workflow directory.
fn load(args: &ExecArgs, repo: &Path) -> anyhow::Result<Vec<Workflow>> {
    let path = match &args.workflows {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => repo.join(p),
        None => Workflow::find_dir(repo).with_context(|| {
            format!(
                "{}: no .gitea/workflows or .github/workflows directory (use -W)",
                repo.display()
            )
        })?,
    };
    if path.is_file() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("workflow.yml");
        return Ok(vec![
            Workflow::parse(name, &text).map_err(|e| anyhow::anyhow!("{e}"))?
        ]);
    }
    let workflows = model::load_workflows(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if workflows.is_empty() {
        bail!("{}: no workflow files (*.yml, *.yaml)", path.display());
    }
    Ok(workflows)
}

/// `NAME=VALUE` lines; blank lines and `#` comments skipped, `export ` and matching quotes removed.
fn read_dotenv(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("{}:{}: expected NAME=VALUE", path.display(), i + 1))?;
        let v = v.trim();
        let v = if v.len() >= 2
            && (v.starts_with('"') && v.ends_with('"') || v.starts_with('\'') && v.ends_with('\''))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.insert(k.trim().to_string(), v.replace("\\n", "\n"));
    }
    Ok(out)
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Print a run's events: one prefix per job, step starts and ends with timings, groups, errors.
async fn print_events(mut rx: mpsc::UnboundedReceiver<RunEvent>, workflow: String) {
    let style = Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut steps: BTreeMap<(String, usize), String> = BTreeMap::new();
    let stdout = std::io::stdout();
    while let Some(event) = rx.recv().await {
        let mut out = stdout.lock();
        match event {
            RunEvent::JobStarted { key, name } => {
                let _ = writeln!(
                    out,
                    "{} Start job",
                    style.paint("1;36", &format!("[{workflow}/{name}]"))
                );
                names.insert(key, name);
            }
            RunEvent::JobSkipped { name, reason, .. } => {
                let _ = writeln!(
                    out,
                    "{} Skipped: {reason}",
                    style.paint("1;36", &format!("[{workflow}/{name}]"))
                );
            }
            RunEvent::JobFinished {
                name,
                result,
                duration,
                ..
            } => {
                let (code, word) = match result {
                    Outcome::Success => ("1;32", "succeeded"),
                    Outcome::Failure => ("1;31", "failed"),
                    Outcome::Cancelled => ("1;33", "was cancelled"),
                    Outcome::Skipped => ("1;33", "was skipped"),
                };
                let _ = writeln!(
                    out,
                    "{} {} [{:.1}s]",
                    style.paint("1;36", &format!("[{workflow}/{name}]")),
                    style.paint(code, &format!("Job {word}")),
                    duration.as_secs_f64()
                );
            }
            RunEvent::Job { key, event } => {
                let name = names.get(&key).cloned().unwrap_or_else(|| key.clone());
                let prefix = style.paint("36", &format!("[{workflow}/{name}]"));
                match event {
                    Event::StepStarted {
                        step,
                        name: step_name,
                    } => {
                        let _ = writeln!(out, "{prefix} {} {step_name}", style.paint("1", "▶"));
                        steps.insert((key, step), step_name);
                    }
                    Event::StepFinished {
                        step,
                        outcome,
                        conclusion,
                        duration,
                    } => {
                        let step_name = steps.get(&(key, step)).cloned().unwrap_or_default();
                        let (code, mark) = match conclusion {
                            Outcome::Success if outcome == Outcome::Failure => {
                                ("33", "✗ (continue-on-error)")
                            }
                            Outcome::Success => ("32", "✓"),
                            Outcome::Failure => ("31", "✗"),
                            Outcome::Cancelled => ("33", "⊘ cancelled"),
                            Outcome::Skipped => ("2", "- skipped"),
                        };
                        let _ = writeln!(
                            out,
                            "{prefix} {} {step_name} [{:.1}s]",
                            style.paint(code, mark),
                            duration.as_secs_f64()
                        );
                    }
                    Event::Log { line, .. } => {
                        let Some(shown) = render_line(&style, line) else {
                            continue;
                        };
                        let _ = writeln!(out, "{prefix}   | {shown}");
                    }
                }
            }
        }
    }
}

/// How a log row is shown on the terminal: groups and annotations (in act_runner's `::name::`
/// form, which the executor writes, or kiln's own `##[name]` form) get a mark and a colour; the
/// end of a group and the command lines Gitea's UI hides show nothing.
fn render_line(style: &Style, line: String) -> Option<String> {
    let command = |name: &str| {
        line.strip_prefix(&format!("::{name}::"))
            .or_else(|| line.strip_prefix(&format!("##[{name}]")))
            .map(kiln_actions::commands::unescape_data)
    };
    if command("endgroup").is_some()
        || ["::add-matcher", "##[add-matcher]", "::remove-matcher"]
            .iter()
            .any(|p| line.starts_with(p))
    {
        return None;
    }
    Some(if let Some(g) = command("group") {
        style.paint("1", &format!("▸ {g}"))
    } else if let Some(e) = command("error") {
        style.paint("31", &format!("Error: {e}"))
    } else if let Some(w) = command("warning") {
        style.paint("33", &format!("Warning: {w}"))
    } else if let Some(n) = command("notice") {
        style.paint("34", &format!("Notice: {n}"))
    } else if let Some(d) = command("debug") {
        style.paint("2", &format!("Debug: {d}"))
    } else {
        line
    })
}
