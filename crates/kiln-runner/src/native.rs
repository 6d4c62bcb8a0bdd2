//! `docker/build-push-action`, `docker/setup-buildx-action` and `docker/login-action`, performed by
//! the runner itself through the job's `DOCKER_HOST` (kiln's Docker API, backed by the same build
//! engine as `BUILDKIT_HOST`), so those workflows run unchanged without buildx or a Docker daemon.
//!
//! What maps: context, file, tags, push, load (built images are always in the runner's image
//! store), build-args, target, labels, no-cache, pull, platforms (several make an index, pushed
//! by the build itself with push: true), secrets; registry, username,
//! password, `cache-from`/`cache-to` (registry, local and inline caches; other types are a warning).
//! What does not: `outputs` other than image/registry/docker (a clear error). Credentials from login-action go to the job's `DOCKER_CONFIG`, as `docker login` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kiln_actions::exec::native::{NativeActions, NativeOutcome, NativeStep};
use kiln_actions::mask::url_encode;
use serde_json::{json, Value};

const BUILD_PUSH: &str = "docker/build-push-action";
const SETUP_BUILDX: &str = "docker/setup-buildx-action";
const LOGIN: &str = "docker/login-action";

#[derive(Debug, Default)]
pub struct DockerActions;

#[async_trait::async_trait]
impl NativeActions for DockerActions {
    fn handles(&self, repo: &str, _reference: &str) -> bool {
        matches!(repo, BUILD_PUSH | SETUP_BUILDX | LOGIN)
    }

    async fn run(&self, step: NativeStep) -> NativeOutcome {
        let log = step.log.clone();
        let result = match step.repo.as_str() {
            SETUP_BUILDX => Ok(setup_buildx(&step)),
            LOGIN => login(&step).await,
            BUILD_PUSH => build_push(&step).await,
            other => Err(format!("no native implementation of {other}")),
        };
        match result {
            Ok(outcome) => outcome,
            Err(e) => {
                for line in e.lines() {
                    let _ = log.send(format!("##[error]{line}"));
                }
                NativeOutcome::default()
            }
        }
    }
}

fn say(step: &NativeStep, line: impl Into<String>) {
    let _ = step.log.send(line.into());
}

/// Inputs that are lists: one item per line, or comma-separated on one line (as the docker actions read them).
fn list(step: &NativeStep, key: &str) -> Vec<String> {
    let Some(text) = step.inputs.get(key) else {
        return Vec::new();
    };
    let items: Vec<&str> = if text.contains('\n') {
        text.lines().collect()
    } else {
        text.split(',').collect()
    };
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Inputs that are one item per line (values may contain commas: build-args, labels, secrets).
fn lines(step: &NativeStep, key: &str) -> Vec<String> {
    step.inputs
        .get(key)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn flag(step: &NativeStep, key: &str) -> bool {
    step.inputs
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn setup_buildx(step: &NativeStep) -> NativeOutcome {
    say(step, "kiln builds images itself: no buildx builder is created, build-push-action steps use kiln's engine.");
    let platform = format!("linux/{}", kiln_arch());
    let outputs = BTreeMap::from([
        ("name".to_string(), "kiln".to_string()),
        ("driver".to_string(), "remote".to_string()),
        ("platforms".to_string(), platform.clone()),
        ("nodes".to_string(), json!([{ "name": "kiln0", "endpoint": step.env.get("BUILDKIT_HOST").cloned().unwrap_or_default(), "status": "running", "platforms": platform }]).to_string()),
        ("flags".to_string(), String::new()),
    ]);
    NativeOutcome {
        success: true,
        outputs,
        env: BTreeMap::new(),
    }
}

fn kiln_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The job's Docker config directory (`DOCKER_CONFIG`, else `~/.docker`).
fn docker_config_dir(env: &BTreeMap<String, String>) -> PathBuf {
    match env.get("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env.get("HOME").cloned().unwrap_or_else(|| "/root".into()))
            .join(".docker"),
    }
}

/// The registry part of an image name, as Docker keys its config (`docker.io` → the index URL).
fn registry_of(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    if image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        first.to_string()
    } else {
        "https://index.docker.io/v1/".to_string()
    }
}

fn config_key(registry: &str) -> String {
    match registry.trim() {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        r => r.trim_end_matches('/').to_string(),
    }
}

async fn login(step: &NativeStep) -> Result<NativeOutcome, String> {
    let registry = config_key(
        step.inputs
            .get("registry")
            .map(String::as_str)
            .unwrap_or(""),
    );
    let username = step.inputs.get("username").cloned().unwrap_or_default();
    let password = step.inputs.get("password").cloned().unwrap_or_default();
    if username.is_empty() || password.is_empty() {
        return Err("docker/login-action: username and password are required".into());
    }
    say(step, format!("Logging in to {registry}..."));
    let docker = DockerClient::from_env(&step.env)?;
    let body = json!({ "username": username, "password": password, "serveraddress": registry });
    let (status, text) = docker.post_json("/auth", &body).await?;
    if status != 200 {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(text);
        return Err(format!("Error response from daemon: {message}"));
    }
    // Store the credentials like `docker login` does, in the job's Docker config.
    let dir = docker_config_dir(&step.env);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join("config.json");
    let mut config: Value = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    config["auths"][&registry] = json!({ "auth": auth });
    write_private(
        &file,
        &serde_json::to_vec_pretty(&config).unwrap_or_default(),
    )?;
    say(step, "Login Succeeded!");
    Ok(NativeOutcome {
        success: true,
        ..Default::default()
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(data)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The logins of the job's Docker config: registry → (user, password).
fn logins(env: &BTreeMap<String, String>) -> BTreeMap<String, (String, String)> {
    let config: Value = std::fs::read(docker_config_dir(env).join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    let Some(auths) = config.get("auths").and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    auths
        .iter()
        .filter_map(|(registry, entry)| {
            let decoded = entry
                .get("auth")
                .and_then(Value::as_str)
                .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                .and_then(|d| String::from_utf8(d).ok())?;
            let (u, p) = decoded.split_once(':')?;
            Some((registry.clone(), (u.to_string(), p.to_string())))
        })
        .collect()
}

/// The `X-Registry-Auth` header for pushing `image`, from the job's Docker config.
fn registry_auth(env: &BTreeMap<String, String>, image: &str) -> String {
    let registry = registry_of(image);
    let body = match logins(env).remove(&registry) {
        Some((u, p)) => json!({ "username": u, "password": p, "serveraddress": registry }),
        None => json!({}),
    };
    base64::engine::general_purpose::URL_SAFE.encode(body.to_string())
}

/// The `X-Registry-Config` header of a build: every login of the job, as the docker CLI sends
/// it, for private base images and cache imports and exports.
fn registry_config(env: &BTreeMap<String, String>) -> Option<String> {
    let logins = logins(env);
    if logins.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, Value> = logins
        .into_iter()
        .map(|(r, (u, p))| {
            let entry = json!({ "username": u, "password": p, "serveraddress": r });
            (r, entry)
        })
        .collect();
    Some(base64::engine::general_purpose::URL_SAFE.encode(Value::Object(map).to_string()))
}

async fn build_push(step: &NativeStep) -> Result<NativeOutcome, String> {
    let workspace = &step.workspace;
    let context_input = step.inputs.get("context").cloned().unwrap_or_default();
    let context = if context_input.is_empty() || context_input.contains("{{defaultContext}}") {
        workspace.clone()
    } else if context_input.contains("://") || context_input.starts_with("git@") {
        return Err(format!("context `{context_input}`: remote contexts are not supported by kiln's native build-push-action; check out the repository and use a path"));
    } else {
        workspace.join(&context_input)
    };
    let context = context
        .canonicalize()
        .map_err(|e| format!("context {}: {e}", context.display()))?;
    let file = match step.inputs.get("file").filter(|f| !f.is_empty()) {
        Some(f) => workspace.join(f),
        None => context.join("Dockerfile"),
    };
    let file = file
        .canonicalize()
        .map_err(|e| format!("file {}: {e}", file.display()))?;
    let dockerfile = file
        .strip_prefix(&context)
        .map_err(|_| {
            format!(
                "file {} is outside the build context {}",
                file.display(),
                context.display()
            )
        })?
        .to_string_lossy()
        .into_owned();
    let tags = list(step, "tags");
    let push = flag(step, "push");
    let platforms = list(step, "platforms");
    // Several platforms make an index, which the build pushes itself (kiln's image store keeps
    // single-platform images); without push it stays in the build cache, as with buildx.
    let multi = platforms.len() > 1;
    for output in lines(step, "outputs") {
        let kind = output
            .split(',')
            .find_map(|kv| kv.strip_prefix("type="))
            .unwrap_or(&output);
        if !matches!(kind, "image" | "registry" | "docker") {
            return Err(format!("outputs `{output}`: kiln's native build-push-action writes images only (type=image, registry or docker)"));
        }
    }
    if push && tags.is_empty() {
        return Err("push is true but no tags are given".into());
    }
    let mut build_args = serde_json::Map::new();
    for arg in lines(step, "build-args") {
        let (k, v) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        build_args.insert(k.to_string(), json!(v));
    }
    let mut labels = serde_json::Map::new();
    for l in lines(step, "labels") {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), json!(v));
    }
    let mut secrets = serde_json::Map::new();
    for s in lines(step, "secrets") {
        let (id, v) = s.split_once('=').ok_or_else(|| {
            format!(
                "secrets: `{}` is not id=value",
                s.split('=').next().unwrap_or("")
            )
        })?;
        secrets.insert(id.trim_matches('"').to_string(), json!(v.trim_matches('"')));
    }
    for s in lines(step, "secret-files") {
        let (id, path) = s.split_once('=').ok_or("secret-files: expected id=path")?;
        let path = workspace.join(path.trim_matches('"'));
        let value = std::fs::read_to_string(&path)
            .map_err(|e| format!("secret-files {id}: {}: {e}", path.display()))?;
        secrets.insert(id.to_string(), json!(value));
    }

    let docker = DockerClient::from_env(&step.env)?;
    let temp = PathBuf::from(
        step.env
            .get("RUNNER_TEMP")
            .cloned()
            .unwrap_or_else(|| std::env::temp_dir().to_string_lossy().into_owned()),
    );
    let tar_path = temp.join(format!("context-{}.tar", uuid::Uuid::new_v4()));
    let (files, bytes) = {
        let (context, tar_path) = (context.clone(), tar_path.clone());
        tokio::task::spawn_blocking(move || tar_context(&context, &tar_path))
            .await
            .map_err(|e| e.to_string())??
    };
    say(
        step,
        format!(
            "Sending build context to kiln: {files} files, {:.1} kB",
            bytes as f64 / 1000.0
        ),
    );
    let mut query: Vec<(String, String)> = vec![
        ("dockerfile".into(), dockerfile),
        ("buildargs".into(), Value::Object(build_args).to_string()),
        ("labels".into(), Value::Object(labels).to_string()),
        ("rm".into(), "1".into()),
        // Progress in buildctl's plain format, like the real action prints.
        ("kilnprogress".into(), "plain".into()),
    ];
    for t in &tags {
        query.push(("t".into(), t.clone()));
    }
    if let Some(target) = step.inputs.get("target").filter(|t| !t.is_empty()) {
        query.push(("target".into(), target.clone()));
    }
    if flag(step, "no-cache") {
        query.push(("nocache".into(), "1".into()));
    }
    if flag(step, "pull") {
        query.push(("pull".into(), "1".into()));
    }
    // Exported caches let other runners (a scaled set with ephemeral state) reuse the work.
    let cache_from = lines(step, "cache-from");
    if !cache_from.is_empty() {
        query.push(("cachefrom".into(), json!(cache_from).to_string()));
    }
    let cache_to = lines(step, "cache-to");
    if !cache_to.is_empty() {
        query.push(("kilncacheto".into(), json!(cache_to).to_string()));
    }
    if !platforms.is_empty() {
        query.push(("platform".into(), platforms.join(",")));
    }
    if multi && push {
        query.push(("kilnpush".into(), "1".into()));
    }
    let mut headers = vec![("Content-Type".to_string(), "application/x-tar".to_string())];
    if let Some(config) = registry_config(&step.env) {
        headers.push(("X-Registry-Config".into(), config));
    }
    if !secrets.is_empty() {
        headers.push((
            "X-Kiln-Build-Secrets".into(),
            base64::engine::general_purpose::STANDARD.encode(Value::Object(secrets).to_string()),
        ));
    }
    let result = docker
        .post_stream("/build", &query, &headers, Some(&tar_path), step)
        .await;
    let _ = std::fs::remove_file(&tar_path);
    let messages = result?;
    let image_id = messages
        .iter()
        .rev()
        .find_map(|m| m.pointer("/aux/ID").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or("the build did not report an image id")?;
    let mut digest = String::new();
    if multi && push {
        // The index the build pushed.
        digest = image_id.clone();
    } else if push {
        for tag in &tags {
            let (name, t) = split_tag(tag);
            let auth = registry_auth(&step.env, tag);
            let headers = vec![("X-Registry-Auth".to_string(), auth)];
            let path = format!("/images/{}/push", name);
            let messages = docker
                .post_stream(&path, &[("tag".into(), t)], &headers, None, step)
                .await?;
            if let Some(d) = messages
                .iter()
                .rev()
                .find_map(|m| m.pointer("/aux/Digest").and_then(Value::as_str))
            {
                if digest.is_empty() {
                    digest = d.to_string();
                }
            }
        }
    }
    let mut metadata = serde_json::Map::new();
    if !multi {
        metadata.insert("containerimage.config.digest".into(), json!(image_id));
    }
    if !digest.is_empty() {
        metadata.insert("containerimage.digest".into(), json!(digest));
    }
    if !tags.is_empty() {
        metadata.insert("image.name".into(), json!(tags.join(",")));
    }
    let outputs = BTreeMap::from([
        ("imageid".to_string(), image_id),
        ("digest".to_string(), digest),
        ("metadata".to_string(), Value::Object(metadata).to_string()),
    ]);
    Ok(NativeOutcome {
        success: true,
        outputs,
        env: BTreeMap::new(),
    })
}

fn split_tag(image: &str) -> (String, String) {
    let (name, digest) = image
        .split_once('@')
        .map(|(n, d)| (n, Some(d)))
        .unwrap_or((image, None));
    if digest.is_some() {
        return (name.to_string(), String::new());
    }
    match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
        _ => (name.to_string(), "latest".to_string()),
    }
}

/// Tar the context, leaving out what `.dockerignore` excludes (as the docker CLI does).
fn tar_context(context: &Path, out: &Path) -> Result<(usize, u64), String> {
    let ignore = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(text) => Some(
            kiln_dockerfile::dockerignore::DockerIgnore::parse(&text)
                .map_err(|e| format!(".dockerignore: {e}"))?,
        ),
        Err(_) => None,
    };
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    let mut count = 0;
    for entry in walkdir::WalkDir::new(context)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| format!("context: {e}"))?;
        let rel = entry
            .path()
            .strip_prefix(context)
            .expect("under the context")
            .to_string_lossy()
            .into_owned();
        if ignore.as_ref().is_some_and(|i| i.is_excluded(&rel))
            && rel != "Dockerfile"
            && rel != ".dockerignore"
        {
            continue;
        }
        tar.append_path_with_name(entry.path(), &rel)
            .map_err(|e| format!("context {rel}: {e}"))?;
        count += 1;
    }
    let writer = tar.into_inner().map_err(|e| e.to_string())?;
    let file = writer.into_inner().map_err(|e| e.to_string())?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((count, size))
}

/// A small Docker API client over the job's unix socket.
struct DockerClient {
    socket: PathBuf,
}

impl DockerClient {
    fn from_env(env: &BTreeMap<String, String>) -> Result<DockerClient, String> {
        let host = env.get("DOCKER_HOST").filter(|h| !h.is_empty()).ok_or(
            "no DOCKER_HOST for this job: the runner's build engine is not running (see the runner's log)",
        )?;
        let socket = host
            .strip_prefix("unix://")
            .ok_or_else(|| format!("DOCKER_HOST {host}: only unix:// sockets are supported"))?;
        Ok(DockerClient {
            socket: PathBuf::from(socket),
        })
    }

    async fn send(
        &self,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach kiln's Docker API at {}: {e}",
                    self.socket.display()
                )
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut uri = format!("http://docker/v1.41{path}");
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(
                &query
                    .iter()
                    .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        let mut request = hyper::Request::post(uri).header("Host", "docker");
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request.body(body).map_err(|e| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("Docker API: {e}"))
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, String), String> {
        let body = Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed();
        let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        let response = self.send(path, &[], &headers, body).await?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// POST with an optional file body; print the JSON message stream to the step log and return it.
    async fn post_stream(
        &self,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        file: Option<&Path>,
        step: &NativeStep,
    ) -> Result<Vec<Value>, String> {
        let body = match file {
            Some(f) => {
                let file = tokio::fs::File::open(f)
                    .await
                    .map_err(|e| format!("{}: {e}", f.display()))?;
                let stream = tokio_util::io::ReaderStream::new(file);
                use futures::StreamExt;
                BodyExt::boxed(StreamBody::new(stream.map(|chunk| chunk.map(Frame::data))))
            }
            None => Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        };
        let response = self.send(path, query, headers, body).await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut pending = Vec::new();
        let mut messages = Vec::new();
        let mut error = None;
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = step.cancel.cancelled() => return Err("cancelled".into()),
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| format!("Docker API: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                handle_message(&line, step, &mut messages, &mut error);
            }
        }
        if !pending.is_empty() {
            let rest = std::mem::take(&mut pending);
            handle_message(&rest, step, &mut messages, &mut error);
        }
        if status >= 400 {
            let text = messages
                .iter()
                .find_map(|m| m.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(text);
        }
        if let Some(e) = error {
            return Err(e);
        }
        Ok(messages)
    }
}

fn handle_message(
    line: &[u8],
    step: &NativeStep,
    messages: &mut Vec<Value>,
    error: &mut Option<String>,
) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        say(step, text);
        return;
    };
    if let Some(s) = value.get("stream").and_then(Value::as_str) {
        for l in s.trim_end_matches('\n').split('\n') {
            say(step, l);
        }
    }
    if let Some(s) = value.get("status").and_then(Value::as_str) {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .map(|i| format!("{i}: "))
            .unwrap_or_default();
        say(step, format!("{id}{s}"));
    }
    if let Some(e) = value.get("error").and_then(Value::as_str) {
        *error = Some(e.to_string());
    }
    messages.push(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            split_tag("127.0.0.1:5000/app:1.2"),
            ("127.0.0.1:5000/app".into(), "1.2".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app".into(), "latest".into())
        );
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("library/app"), "https://index.docker.io/v1/");
        assert_eq!(config_key("ghcr.io/"), "ghcr.io");
        assert_eq!(config_key(""), "https://index.docker.io/v1/");
    }
}
