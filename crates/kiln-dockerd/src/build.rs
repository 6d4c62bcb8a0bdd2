//! `POST /build` in legacy mode: the context arrives as a tar, is unpacked into a temporary
//! directory and built with the engine's Dockerfile frontend exactly like `kiln build`; the
//! image goes into the local store under its tags. Progress is translated into the JSON
//! messages the CLI prints (`Step 1/3 : FROM …`, `Successfully built …`).

use crate::context::{inside_root, receive, unpack};
use crate::error::ApiError;
use crate::query::Query;
use crate::registry_auth::parse_config_header;
use crate::stream::Messages;
use crate::Shared;
use async_trait::async_trait;
use axum::extract::Request;
use axum::response::Response;
use kiln_engine::exporter::{Built, ImageOptions};
use kiln_engine::progress::{ProgressEvent, ProgressSender};
use kiln_engine::session::{Session, SessionError};
use kiln_oci::{CredentialSource, Reference, StaticCredentials};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

pub const BUILDKIT_UNSUPPORTED: &str =
    "kiln: the BuildKit mode of the classic docker build (version=2) is not supported by this \
     Docker API; use `docker buildx build` (the docker driver works here), set DOCKER_BUILDKIT=0 \
     for the legacy builder, or point buildctl at BUILDKIT_HOST";

/// The build parameters of a `POST /build` query.
#[derive(Debug, Clone, PartialEq)]
struct BuildParams {
    tags: Vec<Reference>,
    dockerfile: String,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    target: Option<String>,
    no_cache: bool,
    platform: Option<String>,
    quiet: bool,
    /// `kilnprogress=plain`: progress in buildctl's plain format instead of `Step n/m` lines.
    plain_progress: bool,
    /// `--cache-from` images, or buildx-style cache specs (`type=registry,ref=…`).
    cache_from: Vec<String>,
    /// `kilncacheto`: buildx-style `--cache-to` specs (kiln's own parameter; the Docker API has
    /// none).
    cache_to: Vec<String>,
    /// `kilnpush`: push a multi-platform result to the tags from the build itself (kiln's own
    /// parameter: the image store holds single-platform images, so `POST /images/…/push`
    /// cannot push an index).
    push: bool,
}

impl BuildParams {
    fn from_query(q: &Query) -> Result<BuildParams, ApiError> {
        let bad = ApiError::BadRequest;
        let mut tags = Vec::new();
        for t in q.all("t").into_iter().filter(|t| !t.is_empty()) {
            let r = Reference::parse(t).map_err(|e| bad(format!("invalid tag: {e}")))?;
            if r.digest.is_some() {
                return Err(bad(format!(
                    "invalid tag {t:?}: a tag cannot carry a digest"
                )));
            }
            tags.push(r);
        }
        let json_map = |key: &str| -> Result<BTreeMap<String, String>, ApiError> {
            match q.get(key).filter(|v| !v.is_empty()) {
                None => Ok(BTreeMap::new()),
                Some(v) => {
                    let m: BTreeMap<String, Option<String>> = serde_json::from_str(v)
                        .map_err(|e| bad(format!("invalid {key} {v:?}: {e}")))?;
                    // A null value means "declared but unset" (`--build-arg NAME` with no env).
                    Ok(m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
                }
            }
        };
        let json_list = |key: &str| -> Result<Vec<String>, ApiError> {
            match q.get(key).filter(|v| !v.is_empty()) {
                None => Ok(Vec::new()),
                Some(v) => {
                    serde_json::from_str(v).map_err(|e| bad(format!("invalid {key} {v:?}: {e}")))
                }
            }
        };
        let nonempty = |key: &str| q.get(key).filter(|v| !v.is_empty()).map(str::to_string);
        Ok(BuildParams {
            tags,
            dockerfile: nonempty("dockerfile").unwrap_or_else(|| "Dockerfile".into()),
            build_args: json_map("buildargs")?,
            labels: json_map("labels")?,
            target: nonempty("target"),
            no_cache: q.flag("nocache"),
            platform: nonempty("platform"),
            quiet: q.flag("q"),
            plain_progress: q.get("kilnprogress") == Some("plain"),
            cache_from: json_list("cachefrom")?,
            cache_to: json_list("kilncacheto")?,
            push: q.flag("kilnpush"),
        })
    }
}

pub async fn build(api: &Arc<Shared>, query: &Query, req: Request) -> Result<Response, ApiError> {
    if query.get("version") == Some("2") {
        return session_build(api, query);
    }
    if let Some(remote) = query.get("remote").filter(|r| !r.is_empty()) {
        return Err(ApiError::BadRequest(format!(
            "remote build contexts are not supported (remote={remote:?}): send the context as a tar"
        )));
    }
    let params = BuildParams::from_query(query)?;
    let platforms = target_platforms(params.platform.as_deref())?;
    let header = req
        .headers()
        .get("X-Registry-Config")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let creds = parse_config_header(header.as_deref()).map_err(ApiError::BadRequest)?;
    let secrets = build_secrets(&req)?;

    let dir = tempfile::Builder::new()
        .prefix("context-")
        .tempdir_in(&api.tmp_dir)
        .map_err(|e| ApiError::Internal(format!("creating a directory for the context: {e}")))?;
    let archive = dir.path().join("context.tar");
    receive(req.into_body(), &archive, "build context")
        .await
        .map_err(ApiError::BadRequest)?;
    let context = dir.path().join("context");
    let unpacked = {
        let (archive, context) = (archive.clone(), context.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&context).map_err(|e| e.to_string())?;
            unpack(&archive, &context, "build context").map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    unpacked.map_err(|e| ApiError::BadRequest(format!("build context: {e}")))?;
    let _ = std::fs::remove_file(&archive);

    let dockerfile = inside_root(Path::new(&params.dockerfile)).map_err(|_| {
        ApiError::BadRequest(format!(
            "dockerfile {:?} is outside the build context: the Dockerfile must be inside the \
             context (the docker CLI sends one from elsewhere inside the context tar)",
            params.dockerfile
        ))
    })?;
    if !context.join(&dockerfile).is_file() {
        return Err(ApiError::BadRequest(format!(
            "Cannot locate specified Dockerfile: {}",
            params.dockerfile
        )));
    }

    let (messages, response) = Messages::response();
    let api = api.clone();
    tokio::spawn(async move {
        let cancel = CancellationToken::new();
        let job = BuildJob {
            context,
            dockerfile,
            platforms,
            creds,
            params,
            secrets,
        };
        tokio::select! {
            result = job.run(&api, &messages, cancel.clone()) => {
                if let Err(message) = result {
                    messages.error(&message);
                }
            }
            _ = messages.closed() => {
                tracing::info!("docker build client went away; cancelling the build");
                cancel.cancel();
            }
        }
        drop(messages);
        let _ = tokio::task::spawn_blocking(move || drop(dir)).await;
    });
    Ok(response)
}

/// `POST /build?version=2&session=…`: BuildKit mode of the classic CLI. The context comes over the
/// session the CLI opened with `POST /session`; progress goes back as `moby.buildkit.trace`
/// messages and the image id as `moby.image.id`, which the CLI renders like buildx.
fn session_build(api: &Arc<Shared>, query: &Query) -> Result<Response, ApiError> {
    let Some(door) = api.buildkit.get().cloned() else {
        return Err(ApiError::NotImplemented(BUILDKIT_UNSUPPORTED.into()));
    };
    let session = query
        .get("session")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::BadRequest("version=2 builds need a session".into()))?
        .to_string();
    let params = BuildParams::from_query(query)?;
    let mut attrs = std::collections::HashMap::new();
    attrs.insert("filename".to_string(), params.dockerfile.clone());
    for (k, v) in &params.build_args {
        attrs.insert(format!("build-arg:{k}"), v.clone());
    }
    for (k, v) in &params.labels {
        attrs.insert(format!("label:{k}"), v.clone());
    }
    if let Some(t) = &params.target {
        attrs.insert("target".into(), t.clone());
    }
    if params.no_cache {
        attrs.insert("no-cache".into(), String::new());
    }
    if let Some(p) = &params.platform {
        attrs.insert("platform".into(), p.clone());
    }
    let build = crate::SessionBuild {
        session,
        build_id: query.get("buildid").unwrap_or_default().to_string(),
        tags: params.tags.iter().map(|t| t.to_string()).collect(),
        frontend_attrs: attrs,
        cache_from: params.cache_from.clone(),
    };
    let (messages, response) = Messages::response();
    tokio::spawn(async move {
        use base64::Engine as _;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let trace = |messages: &Messages, bytes: Vec<u8>| {
            messages.send(json!({
                "id": "moby.buildkit.trace",
                "aux": base64::engine::general_purpose::STANDARD.encode(bytes),
            }))
        };
        let run = door.build(build, tx);
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                Some(bytes) = rx.recv() => trace(&messages, bytes),
                result = &mut run => break Some(result),
                _ = messages.closed() => break None,
            }
        };
        while let Ok(bytes) = rx.try_recv() {
            trace(&messages, bytes);
        }
        match result {
            Some(Ok(id)) => messages.send(json!({ "id": "moby.image.id", "aux": { "ID": id } })),
            Some(Err(e)) => messages.error(&e),
            None => tracing::info!("docker build client went away; the build is cancelled"),
        }
    });
    Ok(response)
}

fn target_platform(p: Option<&str>) -> Result<kiln_dockerfile::Platform, ApiError> {
    let host = kiln_oci::Platform::host().to_string();
    let text = p.unwrap_or(&host);
    kiln_dockerfile::Platform::parse(text)
        .map_err(|e| ApiError::BadRequest(format!("invalid platform {text:?}: {e}")))
}

/// `platform=linux/amd64,linux/arm64`: each platform once, in order; the host's when unset.
fn target_platforms(p: Option<&str>) -> Result<Vec<kiln_dockerfile::Platform>, ApiError> {
    let mut out = kiln_dockerfile::Platform::parse_list(p)
        .map_err(|(p, e)| ApiError::BadRequest(format!("invalid platform {p:?}: {e}")))?;
    if out.is_empty() {
        out.push(target_platform(None)?);
    }
    Ok(out)
}

/// The session of a tar-context build: the unpacked directory and the client's credentials.
struct ContextSession {
    locals: BTreeMap<String, PathBuf>,
    creds: StaticCredentials,
    secrets: BTreeMap<String, Vec<u8>>,
}

/// Secrets for `RUN --mount=type=secret`. The legacy API has no way to pass them, so kiln's own
/// native build-push-action sends them in `X-Kiln-Build-Secrets`: base64 of a JSON object
/// `{id: value}`. They live in memory for the build only.
fn build_secrets(req: &Request) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    use base64::Engine as _;
    let Some(value) = req.headers().get("X-Kiln-Build-Secrets") else {
        return Ok(BTreeMap::new());
    };
    let bad = || {
        ApiError::BadRequest(
            "X-Kiln-Build-Secrets: expected base64 of a JSON object of strings".into(),
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|_| bad())?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
}

#[async_trait]
impl Session for ContextSession {
    async fn local_dir(
        &self,
        name: &str,
        _include: &[String],
        _exclude: &[String],
        _progress: Option<kiln_engine::session::TransferProgress>,
    ) -> Result<PathBuf, SessionError> {
        self.locals
            .get(name)
            .cloned()
            .ok_or_else(|| SessionError::NoSuchLocal(name.to_string()))
    }

    /// The context is the build's own unpacked copy of the uploaded tar.
    fn local_dirs_are_private(&self) -> bool {
        true
    }

    async fn secret(&self, id: &str) -> Result<Vec<u8>, SessionError> {
        self.secrets
            .get(id)
            .cloned()
            .ok_or_else(|| SessionError::NoSuchSecret(id.to_string()))
    }

    async fn credentials(&self, host: &str) -> Option<kiln_oci::Credentials> {
        self.creds.credentials(host).await
    }
}

struct BuildJob {
    context: PathBuf,
    /// Relative to the context, checked to stay inside it.
    dockerfile: PathBuf,
    platforms: Vec<kiln_dockerfile::Platform>,
    creds: StaticCredentials,
    params: BuildParams,
    secrets: BTreeMap<String, Vec<u8>>,
}

impl BuildJob {
    async fn run(
        self,
        api: &Shared,
        messages: &Messages,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        // Until the image is in the store (which pins it): a collection must not take its layers.
        let _lease = api.engine.lease().await;
        let (progress, rx) = ProgressSender::channel();
        let printer = tokio::spawn(print_progress(
            rx,
            messages.clone(),
            self.params.quiet,
            self.params.plain_progress,
        ));
        let result = self.solve(api, &progress, cancel).await;
        drop(progress);
        let _ = printer.await;
        let built = match result {
            Ok(built) => built,
            Err((message, lines)) => {
                if let (Some(lines), false) = (lines, self.params.quiet) {
                    messages.stream(lines);
                }
                return Err(message);
            }
        };

        let id = match &built {
            Built::Image(image) => api.add_built_image(image, &self.params.tags)?,
            // Pushed (or left in the build cache) by `solve`: the store keeps single images.
            Built::Index(index) => index.digest.to_string(),
        };
        messages.aux(json!({ "ID": id }));
        if self.params.quiet {
            messages.stream(format!("{id}\n"));
        } else {
            let short = &id.trim_start_matches("sha256:")[..12];
            messages.stream(format!("Successfully built {short}\n"));
            for t in &self.params.tags {
                messages.stream(format!("Successfully tagged {}\n", t.familiar()));
            }
        }
        Ok(())
    }

    /// Frontend, solve and image assembly, as `kiln build` does them. On failure, also the
    /// Dockerfile lines of the failed step, to show before the error.
    async fn solve(
        &self,
        api: &Shared,
        progress: &ProgressSender,
        cancel: CancellationToken,
    ) -> Result<Built, (String, Option<String>)> {
        let engine = &api.engine;
        let dockerfile_dir = self
            .context
            .join(self.dockerfile.parent().unwrap_or(Path::new("")));
        let filename = self
            .dockerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into());
        let session: Arc<dyn Session> = Arc::new(ContextSession {
            locals: BTreeMap::from([
                ("context".to_string(), self.context.clone()),
                ("dockerfile".to_string(), dockerfile_dir),
            ]),
            creds: self.creds.clone(),
            secrets: self.secrets.clone(),
        });
        let build_platform = target_platform(None).map_err(|e| (e.to_string(), None))?;
        let multi = self.platforms.len() > 1;
        let options = kiln_dockerfile::lower::LowerOptions {
            target: self.params.target.clone(),
            build_args: self.params.build_args.clone(),
            labels: self.params.labels.clone(),
            build_platform,
            target_platform: self.platforms[0].clone(),
            no_cache: self.params.no_cache,
            context_name: "context".into(),
            multi_platform: multi,
            ..Default::default()
        };
        let req = kiln_engine::frontend::DockerfileRequest {
            filename,
            options,
            ..Default::default()
        };
        let cache = kiln_engine::remote_cache::CachePlan::from_csv(
            &self.params.cache_from,
            &self.params.cache_to,
        )
        .map_err(|e| (e, None))?;
        for w in &cache.warnings {
            progress.warn(None, w.clone());
        }
        let cache_imports = engine
            .import_caches(&cache.imports, session.clone(), progress)
            .await;
        let results = engine
            .solve_dockerfile(
                &req,
                &self.platforms,
                kiln_engine::SolveOptions {
                    no_cache: self.params.no_cache,
                    resolved: Default::default(),
                    cache_imports,
                },
                session,
                progress,
                cancel,
            )
            .await
            .map_err(|f| (f.error.message, f.context.as_ref().map(error_context)))?;
        // Docker media types, as dockerd's own builder produces.
        let opts = ImageOptions {
            oci_mediatypes: false,
            inline_cache: cache.inline,
            ..ImageOptions::new(None, kiln_oci::Platform::host())
        };
        let built = engine
            .build_images(&results, &opts, multi, progress)
            .await
            .map_err(|e| (e.message, None))?;
        let first = &results[0].solved;
        match &built {
            // The image store (docker save, docker push) reads every blob from the content
            // store.
            Built::Image(_) => engine.ensure_blobs(first, &built).await,
            Built::Index(_) if self.params.push => {
                let names: Vec<String> = self.params.tags.iter().map(|t| t.to_string()).collect();
                engine.push_built(first, &built, &names, progress).await
            }
            Built::Index(_) => {
                progress.warn(
                    None,
                    "a multi-platform build is not kept in the image store: it remains in the \
                     build cache (push it with push: true)"
                        .to_string(),
                );
                Ok(())
            }
        }
        .map_err(|e| (e.message, None))?;
        let solveds: Vec<&kiln_engine::Solved> = results.iter().map(|r| &r.solved).collect();
        for export in &cache.exports {
            engine
                .export_cache(&solveds, export, progress)
                .await
                .map_err(|e| (e.message, None))?;
        }
        Ok(built)
    }
}

/// The failed step with its Dockerfile lines, like BuildKit prints them.
fn error_context(c: &kiln_engine::frontend::ErrorContext) -> String {
    let mut out = format!("ERROR: {}\n--------------------\n", c.step);
    for (n, text, failing) in &c.lines {
        let mark = if *failing { ">>>" } else { "   " };
        out.push_str(&format!(" {n:>3} | {mark} {text}\n"));
    }
    out.push_str(&format!(
        "--------------------\n{}:{}\n",
        c.filename, c.first_line
    ));
    out
}

/// `[2/3] RUN make` → `Step 2/3 : RUN make`; `[build 1/4] FROM …` keeps the stage name.
fn step_line(name: &str) -> Option<String> {
    let rest = name.strip_prefix('[')?;
    let (inside, text) = rest.split_once("] ")?;
    let mut words = inside.rsplitn(2, ' ');
    let counter = words.next()?;
    let (n, m) = counter.split_once('/')?;
    if n.parse::<u32>().is_err() || m.parse::<u32>().is_err() {
        return None;
    }
    Some(match words.next() {
        Some(stage) => format!("Step {n}/{m} : ({stage}) {text}\n"),
        None => format!("Step {n}/{m} : {text}\n"),
    })
}

/// Owns the translation of engine progress into build messages.
async fn print_progress(
    mut rx: UnboundedReceiver<ProgressEvent>,
    messages: Messages,
    quiet: bool,
    plain: bool,
) {
    let mut steps: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut renderer = kiln_engine::progress::PlainRenderer::new();
    while let Some(event) = rx.recv().await {
        if quiet {
            continue;
        }
        if plain {
            // kiln's own clients (the native build-push-action) ask for buildctl's format.
            let text = renderer.render(&event);
            if !text.is_empty() {
                messages.stream(text);
            }
            continue;
        }
        match event {
            ProgressEvent::VertexStarted { vertex, name, .. } => {
                if !seen.insert(vertex.clone()) {
                    continue;
                }
                if let Some(line) = step_line(&name) {
                    steps.insert(vertex);
                    messages.stream(line);
                }
            }
            ProgressEvent::VertexCached { vertex, .. } => {
                if steps.contains(&vertex) {
                    messages.stream(" ---> Using cache\n");
                }
            }
            ProgressEvent::Log { data, .. } => {
                messages.stream(String::from_utf8_lossy(&data).into_owned());
            }
            ProgressEvent::Warning { message, .. } => {
                messages.stream(format!("WARNING: {message}\n"));
            }
            ProgressEvent::VertexCompleted { .. } | ProgressEvent::Status { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_become_build_params() {
        let q = Query::parse(Some(
            "t=127.0.0.1%3A5000%2Fx%3A1&t=app&dockerfile=sub%2FDockerfile.dev\
             &buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&labels=%7B%22l%22%3A%22v%22%7D\
             &target=final&nocache=1&q=1&rm=1&forcerm=0&platform=linux%2Famd64",
        ));
        let p = BuildParams::from_query(&q).unwrap();
        assert_eq!(p.tags.len(), 2);
        assert_eq!(p.tags[0].to_string(), "127.0.0.1:5000/x:1");
        assert_eq!(p.tags[1].familiar(), "app:latest");
        assert_eq!(p.dockerfile, "sub/Dockerfile.dev");
        assert_eq!(p.build_args, BTreeMap::from([("A".into(), "1".into())]));
        assert_eq!(p.labels["l"], "v");
        assert_eq!(p.target.as_deref(), Some("final"));
        assert!(p.no_cache && p.quiet);
        assert_eq!(p.platform.as_deref(), Some("linux/amd64"));

        let q = Query::parse(Some("t=Bad%20Tag"));
        let err = BuildParams::from_query(&q).unwrap_err().to_string();
        assert!(err.contains("Bad Tag"), "{err}");
        let q = Query::parse(Some("buildargs=nope"));
        assert!(BuildParams::from_query(&q).is_err());
    }

    #[test]
    fn step_names_become_legacy_step_lines() {
        assert_eq!(
            step_line("[2/3] RUN make").as_deref(),
            Some("Step 2/3 : RUN make\n")
        );
        assert_eq!(
            step_line("[build 1/4] FROM busybox").as_deref(),
            Some("Step 1/4 : (build) FROM busybox\n")
        );
        assert_eq!(step_line("[internal] load metadata for x"), None);
        assert_eq!(step_line("exporting to image"), None);
    }
}
