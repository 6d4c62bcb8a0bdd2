//! A throwaway Distribution registry for tests (feature `testing`): each [`TestRegistry`]
//! runs its own `docker-registry serve` on a free loopback port with storage in a temporary
//! directory, optionally with htpasswd basic auth, and is killed when dropped.
//!
//! ```no_run
//! let Some(reg) = kiln_oci::testing::TestRegistry::start() else { return }; // prints SKIP
//! let image = reg.reference("team/app:v1");
//! assert_eq!(image.registry, reg.host());
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::reference::Reference;

/// Where the registry binary is looked for unless `KILN_TEST_REGISTRY_BIN` names another.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry, stopped on drop.
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn registry_bin() -> Option<PathBuf> {
    let p = std::env::var_os("KILN_TEST_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(REGISTRY_BIN));
    p.is_file().then_some(p)
}

impl TestRegistry {
    /// Starts an anonymous registry, or prints `SKIP: docker-registry not installed` and returns
    /// `None` when the binary is missing. Panics if it is installed but does not come up.
    pub fn start() -> Option<TestRegistry> {
        Self::start_inner(None)
    }

    /// Starts a registry requiring basic auth (htpasswd, bcrypt) for `user`/`password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Option<TestRegistry> {
        Self::start_inner(Some((user, password)))
    }

    fn start_inner(auth: Option<(&str, &str)>) -> Option<TestRegistry> {
        let Some(bin) = registry_bin() else {
            eprintln!("SKIP: docker-registry not installed");
            return None;
        };
        let mut last_err = String::new();
        // A freed port can be taken by someone else before the registry binds it: retry.
        for _ in 0..3 {
            match Self::try_start(&bin, auth) {
                Ok(r) => return Some(r),
                Err(e) => last_err = e,
            }
        }
        panic!("test registry did not start: {last_err}");
    }

    fn try_start(bin: &Path, auth: Option<(&str, &str)>) -> Result<TestRegistry, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: kiln-test-registry\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash_with_result(password, 4)
                .map_err(|e| e.to_string())?
                .format_for_version(bcrypt::Version::TwoY);
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).map_err(|e| e.to_string())?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let mut reg = TestRegistry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Err(format!("registry exited with {status}: {}", reg.log()));
            }
            if probe(addr) {
                return Ok(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "registry did not answer GET /v2/ within 15s: {}",
            reg.log()
        ))
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A reference to `repo[:tag]` on this registry.
    pub fn reference(&self, repo: &str) -> Reference {
        Reference::parse(&format!("{}/{repo}", self.host())).expect("valid test reference")
    }

    /// The registry's storage (`docker/registry/v2/…` below it).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's own log (errors only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

/// True once `GET /v2/` gets an HTTP answer (200, or 401 with auth).
fn probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && (buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.0 401") || buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 401")))
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busybox rootfs: the static binary from Debian's busybox-static, its applets as symlinks, and
/// users root and `user` (1000).
pub fn busybox_rootfs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in ["bin", "etc", "tmp", "root", "home/user"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    std::os::unix::fs::chown(dir.join("home/user"), Some(1000), Some(1000)).unwrap();
}

/// Push a one-layer busybox image (see [`busybox_rootfs`]) for the host's platform to `name`,
/// anonymously or with basic auth.
pub async fn push_busybox(name: &str, auth: Option<(&str, &str)>) {
    push_busybox_with_cmd(name, auth, &["sh"]).await
}

/// [`push_busybox`] with another `Cmd` in the image config (a service that runs by itself).
pub async fn push_busybox_with_cmd(name: &str, auth: Option<(&str, &str)>, cmd: &[&str]) {
    let arch = crate::Platform::host().architecture;
    push_busybox_image(name, auth, cmd, &arch, true).await;
}

/// A multi-platform busybox: one image per architecture in `archs` (pushed by digest) under an
/// OCI index tagged `name`. Every image holds this host's busybox, whatever its config says:
/// for tests of builds whose steps for other platforms run no programs (cross-compiling
/// stages, `COPY`), which is what a machine without an emulator can build.
pub async fn push_busybox_index(name: &str, archs: &[&str]) {
    let r = Reference::parse(name).unwrap();
    let client = crate::RegistryClient::new(
        Default::default(),
        std::sync::Arc::new(crate::NoCredentials),
    );
    let mut manifests = Vec::new();
    for arch in archs {
        let (digest, size) = push_busybox_image(name, None, &["sh"], arch, false).await;
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest.to_string(),
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    client
        .push_manifest(
            &r,
            &serde_json::to_vec(&index).unwrap(),
            "application/vnd.oci.image.index.v1+json",
        )
        .await
        .unwrap();
}

/// Push one busybox image for `arch`: under `name`'s tag when `tagged`, else by digest.
/// Returns the manifest's digest and size.
async fn push_busybox_image(
    name: &str,
    auth: Option<(&str, &str)>,
    cmd: &[&str],
    arch: &str,
    tagged: bool,
) -> (crate::Digest, usize) {
    use crate::{Compression, ContentStore, LayerWriter};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let mut w = LayerWriter::new(&store, Compression::Gzip).unwrap();
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(&rootfs)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p
            .strip_prefix(&rootfs)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        w.add_path(&rel, &p).unwrap();
    }
    let layer = w.finish().unwrap();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "busybox-static rootfs"}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.write_bytes(&config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest.to_string(), "size": layer.size}],
    });
    let r = Reference::parse(name).unwrap();
    let creds: Arc<dyn crate::CredentialSource> = match auth {
        Some((u, p)) => Arc::new(crate::StaticCredentials::default().with(
            &r.registry,
            crate::Credentials {
                username: u.into(),
                password: p.into(),
            },
        )),
        None => Arc::new(crate::NoCredentials),
    };
    let client = crate::RegistryClient::new(Default::default(), creds);
    client
        .push_blob(&r, &layer.digest, &store, None)
        .await
        .unwrap();
    client
        .push_blob(&r, &config_digest, &store, None)
        .await
        .unwrap();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = crate::Digest::sha256(&bytes);
    let target = if tagged {
        r.clone()
    } else {
        Reference {
            tag: None,
            digest: Some(digest.clone()),
            ..r.clone()
        }
    };
    client
        .push_manifest(
            &target,
            &bytes,
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await
        .unwrap();
    (digest, bytes.len())
}

/// A throwaway `dockerd` (Debian's docker.io) for container-mode tests: its own data root, exec
/// root and unix socket in a temporary directory, no bridge and no iptables rules, so containers
/// can use host networking only. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct TestDockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl TestDockerd {
    /// Start one, or print a SKIP line naming `test` and return `None` when this machine cannot
    /// (not root, no dockerd, or it does not come up).
    pub fn start(test: &str) -> Option<TestDockerd> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIP {test}: dockerd needs root");
            return None;
        }
        let bin = std::env::var_os("KILN_TEST_DOCKERD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/dockerd"));
        let bin = if bin.exists() {
            bin
        } else if Path::new("/usr/bin/dockerd").exists() {
            PathBuf::from("/usr/bin/dockerd")
        } else {
            println!("SKIP {test}: dockerd is not installed (Debian package docker.io)");
            return None;
        };
        // The exec root ends up in socket paths of containerd shims, which must stay short.
        let dir = tempfile::Builder::new()
            .prefix("kd")
            .tempdir_in("/tmp")
            .ok()?;
        let p = dir.path();
        let log = std::fs::File::create(p.join("dockerd.log")).ok()?;
        let child = Command::new(&bin)
            .arg(format!("--data-root={}", p.join("data").display()))
            .arg(format!("--exec-root={}", p.join("x").display()))
            .arg(format!("--pidfile={}", p.join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", p.join("d.sock").display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .arg(format!("--containerd-namespace=kiln{}", std::process::id()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().ok()?)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                println!("SKIP {test}: cannot start {}: {e}", bin.display());
                return None;
            }
        };
        let mut d = TestDockerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = d.child.try_wait() {
                println!(
                    "SKIP {test}: dockerd exited with {status}: {}",
                    d.log_tail()
                );
                return None;
            }
            if d.ping() {
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "SKIP {test}: dockerd did not answer within 60s: {}",
            d.log_tail()
        );
        None
    }

    /// `unix:///…/d.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// A raw `GET path` on the daemon's socket; the response body.
    pub fn get(&self, path: &str) -> Option<String> {
        use std::os::unix::net::UnixStream;
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: docker\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
    }

    fn ping(&self) -> bool {
        self.get("/_ping").is_some_and(|b| b.contains("OK"))
    }
}

impl Drop for TestDockerd {
    fn drop(&mut self) {
        // Containers of a failed test would keep mounts under the data root: remove them first.
        if let Some(list) = self.get("/containers/json?all=1") {
            if let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&list) {
                for c in items {
                    if let Some(id) = c.get("Id").and_then(|v| v.as_str()) {
                        use std::os::unix::net::UnixStream;
                        if let Ok(mut s) = UnixStream::connect(self.socket()) {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                            let _ = write!(s, "DELETE /containers/{id}?force=1&v=1 HTTP/1.0\r\nHost: docker\r\n\r\n");
                            let mut sink = String::new();
                            let _ = s.read_to_string(&mut sink);
                        }
                    }
                }
            }
        }
        // SAFETY: plain syscall on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut exited = false;
        while !exited && Instant::now() < deadline {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if !exited {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.unmount_all();
    }
}

impl TestDockerd {
    /// dockerd leaves mounts (its network namespace file) under its exec root; detach them so the
    /// temporary directory can go.
    fn unmount_all(&self) {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let root = self.dir.path().to_string_lossy().into_owned();
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            if let Ok(c) = std::ffi::CString::new(p) {
                // SAFETY: a valid C string; MNT_DETACH only detaches.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// A `git daemon` on 127.0.0.1 serving the repositories under a directory (`git://127.0.0.1:PORT/name`),
/// killed on drop.
pub struct TestGitDaemon {
    child: Child,
    port: u16,
}

impl TestGitDaemon {
    /// Serve `base` on a free loopback port (waits until the port answers).
    pub fn start(base: &Path) -> TestGitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Run git-daemon itself: `git daemon` would leave it behind as an orphan when killed.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = String::from_utf8(exec_path.stdout).unwrap();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        TestGitDaemon { child, port }
    }

    /// The daemon's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TestGitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `git args` in `dir` with a fixed author; panics when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}
