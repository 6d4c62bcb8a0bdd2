//! `kiln`: a Gitea Actions runner with a built-in BuildKit-compatible image builder.
//! This binary only parses flags and wires the library crates together.

mod build;
mod buildkitd;
mod config;
mod exec;
mod progress_ui;
mod runner;
mod userns;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Gitea Actions runner with a built-in image builder"
)]
struct Cli {
    /// State directory (cache, layers, content). Default: /var/lib/kiln for root,
    /// $XDG_DATA_HOME/kiln otherwise.
    #[arg(long, global = true, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// Config file: act_runner's config.yaml for `register`/`daemon`; kiln.toml for the
    /// builder commands (default /etc/kiln/kiln.toml if it exists).
    #[arg(short = 'c', long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Log level filter (e.g. `info`, `kiln_engine=debug`).
    #[arg(long, global = true, env = "KILN_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::BuildArgs>),
    /// Serve BuildKit's gRPC API (for buildctl and docker buildx --driver remote).
    Buildkitd(buildkitd::BuildkitdArgs),
    /// Make a CA, a server certificate and a client certificate for the mTLS endpoint.
    Certs {
        /// Directory for ca.pem, cert.pem, key.pem, client.pem, client-key.pem.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Extra server names or IPs (the cluster names, localhost and 127.0.0.1 are always in).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity of the server and client certificates in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Common name of the client certificate.
        #[arg(long, default_value = "kiln-client")]
        client_cn: String,
        /// `files` writes PEM files; `env` prints the five BUILDKIT_*_PEM_B64 lines instead.
        #[arg(long, default_value = "files", value_parser = ["files", "env"])]
        format: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Run a workflow from a local checkout, without Gitea (like `act`).
    Exec(Box<exec::ExecArgs>),
    /// Register kiln as a runner of a Gitea instance (writes the `.runner` file).
    Register(runner::RegisterArgs),
    /// Run as a Gitea runner: poll for jobs and run them.
    Daemon(runner::DaemonArgs),
    /// Print an example runner config.yaml (act_runner's keys plus kiln's).
    GenerateConfig,
    /// Show the build cache's disk usage.
    Du {
        /// List every record.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Remove build cache.
    Prune {
        /// Remove all cache, not only unused records.
        #[arg(long)]
        all: bool,
        /// Keep the most recently used cache up to this size (e.g. 10GB, 512MiB).
        #[arg(long, value_parser = config::parse_size)]
        keep_storage: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Certs { .. } = &cli.command {
        return match certs(&cli.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ERROR: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // The runner commands run jobs as the invoking user, outside kiln's user namespace.
    let runner_result = match cli.command {
        Command::Register(args) => runner::register(args, cli.config.as_deref(), &cli.log),
        Command::Daemon(args) => runner::daemon(args, cli.config.as_deref(), cli.root.clone()),
        Command::GenerateConfig => {
            runner::generate_config();
            Ok(())
        }
        command => return main_with(Cli { command, ..cli }),
    };
    match runner_result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_with(cli: Cli) -> ExitCode {
    // Workflows run as the invoking user, outside kiln's user namespace.
    if let Command::Exec(args) = cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
            .with_writer(std::io::stderr)
            .init();
        let settings = exec::EngineSettings {
            root: cli
                .root
                .clone()
                .or_else(|| {
                    config::KilnConfig::load(cli.config.as_deref())
                        .ok()
                        .and_then(|c| c.root)
                })
                .unwrap_or_else(config::default_root),
            config: cli.config.clone(),
            log: cli.log.clone(),
        };
        return match exec::run(*args, settings) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("ERROR: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Before any thread starts: a user namespace can only be entered single-threaded.
    match userns::ensure_root() {
        Ok(userns::Role::Continue) => {}
        Ok(userns::Role::Exit(code)) => return code,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::KilnConfig::load(cli.config.as_deref())?;
    let root = cli
        .root
        .clone()
        .or(config.root.clone())
        .unwrap_or_else(config::default_root);
    match cli.command {
        Command::Build(args) => build::run(*args, &config, root).await,
        Command::Buildkitd(args) => buildkitd::run(args, &config, root).await,
        Command::Certs { .. }
        | Command::Exec(_)
        | Command::Register(_)
        | Command::Daemon(_)
        | Command::GenerateConfig => unreachable!("handled before the runtime starts"),
        Command::Du { verbose } => {
            let engine = config.open_engine(root).await?;
            let records = engine.disk_usage()?;
            let total: u64 = records.iter().map(|r| r.size).sum();
            if verbose {
                println!("{:<20} {:>10}  DESCRIPTION", "ID", "SIZE");
                for r in &records {
                    println!(
                        "{:<20} {:>10}  {}",
                        &r.id[7..26.min(r.id.len())],
                        config::human_size(r.size),
                        r.description
                    );
                }
            }
            println!("Records:\t{}", records.len());
            println!("Total:\t{}", config::human_size(total));
            Ok(())
        }
        Command::Prune { all, keep_storage } => {
            let engine = config.open_engine(root).await?;
            let report = engine.prune(&kiln_engine::prune::PruneOptions { all, keep_storage })?;
            println!(
                "Removed {} records and {} layers\nTotal:\t{}",
                report.records,
                report.layers,
                config::human_size(report.bytes)
            );
            Ok(())
        }
    }
}

/// `kiln certs`: needs no engine, no root and no runtime.
fn certs(cmd: &Command) -> anyhow::Result<()> {
    let Command::Certs {
        dir,
        sans,
        days,
        client_cn,
        format,
        force,
    } = cmd
    else {
        return Ok(());
    };
    let bundle = kiln_buildkit::certs::generate(&kiln_buildkit::certs::CertOptions {
        sans: sans.clone(),
        days: *days,
        client_cn: client_cn.clone(),
    })?;
    if format == "env" {
        print!("{}", bundle.env_lines());
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for path in bundle.write_files(dir, *force)? {
        println!("{}", path.display());
    }
    Ok(())
}
