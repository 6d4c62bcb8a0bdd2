//! `kiln build`: Dockerfile → engine → exporters, with buildx-like flags and output.

use crate::config::KilnConfig;
use crate::progress_ui::{self, ProgressMode};
use anyhow::{bail, Context};
use kiln_engine::exporter::ImageOptions;
use kiln_engine::progress::ProgressSender;
use kiln_engine::session::{LocalSession, SecretSource};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Build context directory.
    pub context: PathBuf,
    /// Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Image name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Build-time variable `KEY=VALUE` (or `KEY` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform `os/arch[/variant]`; several (comma-separated or repeated) build one
    /// image per platform under an index. RUN steps for another architecture need an emulator
    /// registered with binfmt_misc; cross-compiling stages (`FROM --platform=$BUILDPLATFORM`)
    /// need none.
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Do not use the cache for RUN/COPY steps.
    #[arg(long)]
    pub no_cache: bool,
    /// Image label `KEY=VALUE`; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Named context `NAME=VALUE` for `FROM NAME`, `COPY --from=NAME` or a stage named NAME:
    /// a directory, `docker-image://REF`, a git URL or an `https://` URL; repeatable.
    #[arg(long = "build-context")]
    pub build_contexts: Vec<String>,
    /// Secret for `RUN --mount=type=secret`: `id=ID,src=PATH` or `id=ID,env=VAR`.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// SSH agent for `RUN --mount=type=ssh`: `default` (the agent of SSH_AUTH_SOCK), `ID` or
    /// `ID=SOCKET`, as buildctl's `--ssh`.
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// Output: `type=image|oci|docker|local|tar[,name=…][,push=true][,dest=…]`, a directory
    /// (local), or `-` (tar to stdout).
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Shorthand for `--output=type=image,push=true` with the `-t` names.
    #[arg(long)]
    pub push: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Write build result metadata (image digest, names) as JSON to this file.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Print only the image digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Import build cache: `type=registry,ref=REF`, `type=local,src=DIR[,tag=T]`, or `REF`
    /// (an image with an inline cache, or a cache manifest); repeatable.
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Export build cache: `type=registry,ref=REF[,mode=min|max]`,
    /// `type=local,dest=DIR[,mode=…]` or `type=inline`; repeatable.
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Image { names: Vec<String>, push: bool },
    Oci { dest: String, names: Vec<String> },
    Docker { dest: String, names: Vec<String> },
    Local { dest: PathBuf },
    Tar { dest: String },
}

fn kv_list(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("invalid value {part:?} in {s:?}: expected key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

pub fn parse_output(s: &str, tags: &[String], push_flag: bool) -> anyhow::Result<Output> {
    if s == "-" {
        return Ok(Output::Tar { dest: "-".into() });
    }
    if !s.contains('=') {
        return Ok(Output::Local {
            dest: PathBuf::from(s),
        });
    }
    let mut kv = kv_list(s)?;
    let typ = kv.remove("type").unwrap_or_else(|| "local".into());
    let names = || -> Vec<String> {
        match kv.get("name") {
            Some(n) => n
                .split(';')
                .map(str::to_string)
                .filter(|n| !n.is_empty())
                .collect(),
            None => tags.to_vec(),
        }
    };
    let dest = || -> anyhow::Result<String> {
        kv.get("dest")
            .cloned()
            .with_context(|| format!("output type {typ} needs dest=…"))
    };
    Ok(match typ.as_str() {
        "image" | "registry" => Output::Image {
            names: names(),
            push: typ == "registry"
                || push_flag
                || kv.get("push").map(|v| v == "true").unwrap_or(false),
        },
        "oci" => Output::Oci {
            dest: dest()?,
            names: names(),
        },
        "docker" => Output::Docker {
            dest: dest()?,
            names: names(),
        },
        "local" => Output::Local {
            dest: PathBuf::from(dest()?),
        },
        "tar" => Output::Tar { dest: dest()? },
        other => {
            bail!("unknown output type {other:?} (use image, registry, oci, docker, local or tar)")
        }
    })
}

fn parse_secret(s: &str) -> anyhow::Result<(String, SecretSource)> {
    let kv = kv_list(s)?;
    let id = kv
        .get("id")
        .cloned()
        .with_context(|| format!("--secret {s:?}: missing id="))?;
    if let Some(src) = kv.get("src").or(kv.get("source")) {
        return Ok((id, SecretSource::File(PathBuf::from(src))));
    }
    if let Some(env) = kv.get("env") {
        return Ok((id, SecretSource::Env(env.clone())));
    }
    // Like buildx: a secret with neither src nor env reads the env var named like the id.
    Ok((id.clone(), SecretSource::Env(id)))
}

fn platform_of(s: &str) -> anyhow::Result<kiln_dockerfile::Platform> {
    kiln_dockerfile::Platform::parse(s).map_err(|e| anyhow::anyhow!("--platform {s:?}: {e}"))
}

pub async fn run(args: BuildArgs, config: &KilnConfig, root: PathBuf) -> anyhow::Result<()> {
    // A git URL as the context is checked out first (kept until the build ends).
    let context_arg = args.context.to_string_lossy().into_owned();
    let mut _checkout = None;
    let mut args = args;
    if kiln_engine::git::is_git_url(&context_arg) {
        let dir = tempfile::tempdir().context("a directory for the git context")?;
        let dest = dir.path().join("context");
        let spec = context_arg.clone();
        let commit = tokio::task::spawn_blocking({
            let dest = dest.clone();
            move || kiln_engine::git::checkout_url(&spec, &dest)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("build context {context_arg}: {e}"))?;
        eprintln!("#0 using git context {context_arg} at {commit}");
        if let Some(f) = args.file.as_ref().filter(|f| f.is_relative()) {
            args.file = Some(dest.join(f));
        }
        args.context = dest;
        _checkout = Some(dir);
    }
    let context = args
        .context
        .canonicalize()
        .with_context(|| format!("build context {}", args.context.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let dockerfile = match &args.file {
        Some(f) if f.as_os_str() == "-" => {
            bail!("reading the Dockerfile from stdin is not supported yet")
        }
        Some(f) => f
            .canonicalize()
            .with_context(|| format!("Dockerfile {}", f.display()))?,
        None => context.join("Dockerfile"),
    };
    let dockerfile_dir = dockerfile
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| context.clone());
    let filename = dockerfile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());

    let host = kiln_oci::Platform::host();
    let build_platform = platform_of(&host.to_string())?;
    let mut target_platforms =
        kiln_dockerfile::Platform::parse_list(args.platform.iter().map(String::as_str))
            .map_err(|(p, e)| anyhow::anyhow!("--platform {p:?}: {e}"))?;
    if target_platforms.is_empty() {
        target_platforms.push(build_platform.clone());
    }
    let mut outputs: Vec<Output> = args
        .outputs
        .iter()
        .map(|o| parse_output(o, &args.tags, args.push))
        .collect::<anyhow::Result<_>>()?;
    if outputs.is_empty() && (args.push || !args.tags.is_empty()) {
        outputs.push(Output::Image {
            names: args.tags.clone(),
            push: args.push,
        });
    }

    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut secrets = BTreeMap::new();
    for s in &args.secrets {
        let (id, src) = parse_secret(s)?;
        secrets.insert(id, src);
    }

    let mut ssh = BTreeMap::new();
    for spec in &args.ssh {
        let (id, socket) = match spec.split_once('=') {
            Some((id, path)) => (id.to_string(), PathBuf::from(path)),
            None => (
                spec.clone(),
                std::env::var_os("SSH_AUTH_SOCK")
                    .map(PathBuf::from)
                    .with_context(|| {
                        format!("--ssh {spec}: SSH_AUTH_SOCK is not set; give the agent socket as {spec}=PATH")
                    })?,
            ),
        };
        if id.is_empty() {
            anyhow::bail!("--ssh {spec:?}: missing id");
        }
        ssh.insert(id, socket);
    }

    let mut locals = BTreeMap::from([
        ("context".to_string(), context.clone()),
        ("dockerfile".to_string(), dockerfile_dir),
    ]);
    let named_contexts = named_contexts(&args.build_contexts, &mut locals)?;
    let engine = config.open_engine(root).await?;
    let session = Arc::new(LocalSession {
        locals,
        secrets,
        docker_config: docker_config(),
        ssh,
    });

    let (progress, rx) = ProgressSender::channel();
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let printer = tokio::spawn(progress_ui::render(mode, rx));
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });

    let mut failed_at = None;
    let result = build(
        &engine,
        &args,
        session,
        &progress,
        &outputs,
        BuildInputs {
            cancel,
            filename: filename.clone(),
            target_platforms,
            build_platform,
            build_args,
            labels,
            named_contexts,
        },
        &mut failed_at,
    )
    .await;
    drop(progress);
    let _ = printer.await;
    // The CLI is the engine's only user (it holds the state directory's lock): collect now.
    if let Err(e) = engine.collect_garbage().await {
        eprintln!("WARNING: cache garbage collection: {e}");
    }
    if let (Err(e), None) = (&result, &failed_at) {
        // A Dockerfile that does not parse: quote its lines too, as buildx does.
        let line = kiln_engine::frontend::ErrorContext::parse_error_line(&e.to_string());
        if let (Some(line), Ok(text)) = (line, std::fs::read_to_string(&dockerfile)) {
            let step = format!("[internal] load build definition from {filename}");
            failed_at = Some(kiln_engine::frontend::ErrorContext::at_line(
                &step, &filename, &text, line,
            ));
        }
    }
    if let (Err(_), Some(context)) = (&result, &failed_at) {
        eprintln!("{context}");
    }
    let metadata = result.map_err(|e| anyhow::anyhow!("failed to solve: {e}"))?;
    if let Some(path) = &args.metadata_file {
        std::fs::write(path, serde_json::to_vec_pretty(&metadata)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(d) = metadata
        .get("containerimage.digest")
        .and_then(|d| d.as_str())
    {
        if args.quiet {
            println!("{d}");
        }
    }
    if outputs.is_empty() && !args.quiet {
        eprintln!(
            "WARNING: No output specified. Build result will only remain in the build cache. \
             To push the image to a registry use --push with -t, or use --output"
        );
    }
    Ok(())
}

struct BuildInputs {
    cancel: CancellationToken,
    filename: String,
    target_platforms: Vec<kiln_dockerfile::Platform>,
    build_platform: kiln_dockerfile::Platform,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    named_contexts: BTreeMap<String, kiln_dockerfile::NamedContext>,
}

/// `--build-context NAME=VALUE`, as buildx reads it: a URL or `docker-image://` reference as
/// such, anything else a directory served as the local `NAME`.
fn named_contexts(
    specs: &[String],
    locals: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<BTreeMap<String, kiln_dockerfile::NamedContext>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some((name, value)) = spec
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        else {
            anyhow::bail!("--build-context {spec:?}: expected NAME=VALUE");
        };
        if locals.contains_key(name) {
            anyhow::bail!("--build-context {name}: the name {name:?} is reserved");
        }
        let is_url = value.contains("://") || value.starts_with("git@");
        let named = if is_url {
            kiln_dockerfile::NamedContext::parse(name, value)
                .map_err(|e| anyhow::anyhow!("--build-context {}", e.message))?
        } else {
            let dir = PathBuf::from(value);
            if !dir.is_dir() {
                anyhow::bail!("--build-context {name}={value}: not a directory");
            }
            locals.insert(name.to_string(), dir);
            kiln_dockerfile::NamedContext::Local(name.to_string())
        };
        out.insert(name.to_string(), named);
    }
    Ok(out)
}

async fn build(
    engine: &kiln_engine::Engine,
    args: &BuildArgs,
    session: Arc<LocalSession>,
    progress: &ProgressSender,
    outputs: &[Output],
    inputs: BuildInputs,
    failed_at: &mut Option<kiln_engine::frontend::ErrorContext>,
) -> Result<serde_json::Map<String, serde_json::Value>, kiln_engine::Error> {
    let multi = inputs.target_platforms.len() > 1;
    let mut options = kiln_dockerfile::lower::LowerOptions {
        target: args.target.clone(),
        build_args: inputs.build_args,
        labels: inputs.labels,
        build_platform: inputs.build_platform,
        no_cache: args.no_cache,
        named_contexts: inputs.named_contexts,
        multi_platform: multi,
        ..Default::default()
    };
    options.context_name = "context".into();
    let req = kiln_engine::frontend::DockerfileRequest {
        filename: inputs.filename,
        options,
        ..Default::default()
    };
    let session: Arc<dyn kiln_engine::session::Session> = session;
    let cache = kiln_engine::remote_cache::CachePlan::from_csv(&args.cache_from, &args.cache_to)
        .map_err(kiln_engine::Error::msg)?;
    let insecure = cache
        .insecure_refs
        .iter()
        .filter_map(|r| engine.client_insecure_warning(r));
    for w in cache.warnings.iter().cloned().chain(insecure) {
        progress.warn(None, w);
    }
    let cache_imports = engine
        .import_caches(&cache.imports, session.clone(), progress)
        .await;
    let results = engine
        .solve_dockerfile(
            &req,
            &inputs.target_platforms,
            kiln_engine::SolveOptions {
                no_cache: args.no_cache,
                resolved: Default::default(),
                cache_imports,
            },
            session,
            progress,
            inputs.cancel.clone(),
        )
        .await
        .map_err(|f| {
            // Quote the Dockerfile lines of the failed step once progress output is done.
            *failed_at = f.context;
            f.error
        })?;

    let mut metadata = serde_json::Map::new();
    let mut image_opts = ImageOptions::new(None, kiln_oci::Platform::host());
    image_opts.inline_cache = cache.inline;
    let first = &results[0].solved;
    for out in outputs {
        match out {
            Output::Image { names, push } => {
                let built = engine
                    .build_images(&results, &image_opts, multi, progress)
                    .await?;
                if *push {
                    if names.is_empty() {
                        return Err(kiln_engine::Error::msg(
                            "--push needs an image name (-t NAME)",
                        ));
                    }
                    engine.push_built(first, &built, names, progress).await?;
                }
                record_image(&mut metadata, &built, names);
            }
            Output::Oci { dest, names } | Output::Docker { dest, names } => {
                let built = engine
                    .build_images(&results, &image_opts, multi, progress)
                    .await?;
                let docker = matches!(out, Output::Docker { .. });
                engine.ensure_blobs(first, &built).await?;
                let mut w = open_dest(dest)?;
                engine.write_built_tar(&built, names, docker, &mut w)?;
                record_image(&mut metadata, &built, names);
            }
            Output::Local { dest } => {
                engine.materialize_all(&results, progress).await?;
                engine.export_local_all(&results, dest)?
            }
            Output::Tar { dest } => {
                engine.materialize_all(&results, progress).await?;
                let mut w = open_dest(dest)?;
                engine.export_tar_all(&results, &mut w)?;
            }
        }
    }
    let solveds: Vec<&kiln_engine::Solved> = results.iter().map(|r| &r.solved).collect();
    for export in &cache.exports {
        engine.export_cache(&solveds, export, progress).await?;
    }
    Ok(metadata)
}

fn docker_config() -> kiln_oci::DockerConfigCredentials {
    match kiln_oci::DockerConfigCredentials::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("WARNING: ignoring Docker config: {e}");
            kiln_oci::DockerConfigCredentials::from_json(b"{}").expect("empty config parses")
        }
    }
}

fn record_image(
    metadata: &mut serde_json::Map<String, serde_json::Value>,
    built: &kiln_engine::exporter::Built,
    names: &[String],
) {
    metadata.insert(
        "containerimage.digest".into(),
        built.digest().to_string().into(),
    );
    if let Some(config) = built.config_digest() {
        metadata.insert(
            "containerimage.config.digest".into(),
            config.to_string().into(),
        );
    }
    if !names.is_empty() {
        metadata.insert("image.name".into(), names.join(",").into());
    }
}

fn open_dest(dest: &str) -> Result<Box<dyn std::io::Write>, kiln_engine::Error> {
    if dest == "-" {
        return Ok(Box::new(std::io::stdout().lock()));
    }
    let f = std::fs::File::create(dest)
        .map_err(|e| kiln_engine::Error::msg(format!("output {dest}: {e}")))?;
    Ok(Box::new(std::io::BufWriter::new(f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildx() {
        let tags = vec!["r/app:1".to_string()];
        let cases: Vec<(&str, Output)> = vec![
            (
                "type=image,name=a/b:1,push=true",
                Output::Image {
                    names: vec!["a/b:1".into()],
                    push: true,
                },
            ),
            (
                "type=registry",
                Output::Image {
                    names: tags.clone(),
                    push: true,
                },
            ),
            (
                "type=oci,dest=out.tar",
                Output::Oci {
                    dest: "out.tar".into(),
                    names: tags.clone(),
                },
            ),
            (
                "type=docker,dest=-",
                Output::Docker {
                    dest: "-".into(),
                    names: tags.clone(),
                },
            ),
            ("type=local,dest=out", Output::Local { dest: "out".into() }),
            ("out", Output::Local { dest: "out".into() }),
            ("-", Output::Tar { dest: "-".into() }),
            (
                "type=tar,dest=x.tar",
                Output::Tar {
                    dest: "x.tar".into(),
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_output(s, &tags, false).unwrap(), want, "{s}");
        }
        assert!(parse_output("type=bogus,dest=x", &tags, false).is_err());
        assert!(parse_output("type=oci", &tags, false).is_err());
    }
}
