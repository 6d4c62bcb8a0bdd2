//! Shared set-up for the Docker API tests: a real Distribution registry with a busybox base
//! image (made from Debian's busybox-static, as in the `kiln` crate's tests), an engine in a
//! temporary state directory, a `DockerApi` on a unix socket, a raw HTTP client for that
//! socket, and a runner for the real `docker` CLI.

#![allow(dead_code)]

use kiln_dockerd::{DockerApi, DockerApiConfig, ServeHandle};
use kiln_oci::testing::TestRegistry;
use kiln_oci::{NoCredentials, Reference, RegistryClient};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

pub const DOCKER_CANDIDATES: &[&str] = &["/usr/local/bin/docker", "/usr/bin/docker"];

pub struct Env {
    pub registry: TestRegistry,
    /// `127.0.0.1:PORT/busybox:latest`
    pub base: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub api: DockerApi,
    handle: Option<ServeHandle>,
    pub rt: tokio::runtime::Runtime,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.handle.take();
    }
}

/// Everything a test needs, or `None` (with a SKIP line) when this machine lacks it.
pub fn setup(test: &str) -> Option<Env> {
    setup_with(test, TestRegistry::start)
}

pub fn setup_with(test: &str, registry: impl FnOnce() -> Option<TestRegistry>) -> Option<Env> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP {test}: the build engine needs root (overlayfs and runc)");
        return None;
    }
    for tool in ["/usr/sbin/runc", "/bin/busybox"] {
        if !Path::new(tool).exists() {
            println!("SKIP {test}: {tool} not installed");
            return None;
        }
    }
    let registry = registry()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let base = format!("{}/busybox:latest", registry.host());
    let (api, handle) = rt.block_on(async {
        let engine =
            kiln_engine::Engine::open(kiln_engine::EngineConfig::new(dir.path().join("engine")))
                .await
                .expect("engine");
        let api = DockerApi::new(DockerApiConfig {
            engine,
            store_dir: dir.path().join("images"),
        })
        .await
        .expect("docker api");
        let handle = api.serve_unix(&socket).await.expect("serve");
        (api, handle)
    });
    Some(Env {
        registry,
        base,
        dir,
        socket,
        api,
        handle: Some(handle),
        rt,
    })
}

impl Env {
    /// Push the busybox base image to `name` (anonymous, or with basic auth).
    pub fn push_busybox(&self, name: &str, auth: Option<(&str, &str)>) {
        self.rt.block_on(push_busybox(name, auth));
    }

    /// A build context directory with these files (`$BASE` is replaced by the base image).
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.path().join("work").join(name);
        for (path, content) in files {
            let p = dir.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content.replace("$BASE", &self.base)).unwrap();
        }
        dir
    }

    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.host())
    }

    /// One request on the socket; returns status, headers (lower-case names) and body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http(&self.socket, method, path, headers, body)
    }

    /// The manifest the registry has for `name`, with its media type.
    pub fn registry_manifest(&self, name: &str) -> (Vec<u8>, String) {
        self.rt.block_on(async {
            let client = RegistryClient::new(Default::default(), Arc::new(NoCredentials));
            let (bytes, media_type, _) = client
                .get_manifest(&Reference::parse(name).unwrap())
                .await
                .expect("manifest in registry");
            (bytes, media_type)
        })
    }

    /// Run the docker CLI against this socket, with the legacy builder and a private config.
    pub fn docker(&self, docker: &Path, args: &[&str], stdin: Option<&str>) -> Run {
        let config = self.dir.path().join("docker-config");
        fs::create_dir_all(&config).unwrap();
        let mut child = Command::new(docker)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", &config)
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker");
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        Run(out, format!("docker {}", args.join(" ")))
    }
}

/// The docker CLI, or `None` with a SKIP line.
pub fn docker_cli(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("KILN_TEST_DOCKER")
        .map(PathBuf::from)
        .into_iter()
        .chain(DOCKER_CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    if found.is_none() {
        println!("SKIP {test}: docker CLI not found");
    }
    found
}

pub struct Run(pub Output, pub String);

impl Run {
    pub fn ok(&self) -> bool {
        self.0.status.success()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok(),
            "{} failed:\n{}\n{}",
            self.1,
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn assert_err_contains(&self, needle: &str) -> &Self {
        assert!(
            !self.ok(),
            "{} unexpectedly succeeded:\n{}",
            self.1,
            self.stdout()
        );
        let all = format!("{}{}", self.stdout(), self.stderr());
        assert!(
            all.contains(needle),
            "{}: expected {needle:?} in:\n{all}",
            self.1
        );
        self
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The messages of a JSON stream (one object per line).
    pub fn messages(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client for a unix socket (`Connection: close`, chunked bodies).
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (and close) before reading the whole body; the answer still counts.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        rest = dechunk(&rest);
    }
    Response {
        status,
        headers,
        body: rest,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    out
}

use kiln_oci::testing::push_busybox;

/// A tar of these (path, content) files, built by hand so that hostile paths stay as given.
pub fn raw_tar(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}
