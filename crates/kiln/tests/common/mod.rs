//! Shared set-up for end-to-end tests of the `kiln` binary: a real Distribution registry on a
//! loopback port, a busybox base image made from Debian's busybox-static and pushed with
//! kiln-oci, and a helper to run `kiln` with its own state directory.

#![allow(dead_code)]

pub mod buildkitd;

use kiln_oci::testing::TestRegistry;
use kiln_oci::{ContentStore, NoCredentials, Reference, RegistryClient};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

pub struct Env {
    pub registry: TestRegistry,
    pub root: tempfile::TempDir,
    pub work: tempfile::TempDir,
    /// `127.0.0.1:PORT/busybox:latest`
    pub base: String,
}

/// Everything a build test needs, or `None` (with a SKIP line) when this machine lacks it.
pub fn setup(test: &str) -> Option<Env> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP {test}: build tests need root (overlayfs and runc)");
        return None;
    }
    for tool in ["/usr/sbin/runc", "/bin/busybox"] {
        if !Path::new(tool).exists() {
            println!("SKIP {test}: {tool} not installed");
            return None;
        }
    }
    let registry = TestRegistry::start()?;
    let base = format!("{}/busybox:latest", registry.host());
    rt().block_on(push_busybox(&base));
    Some(Env {
        registry,
        root: tempfile::tempdir().expect("tempdir"),
        work: tempfile::tempdir().expect("tempdir"),
        base,
    })
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn push_busybox(name: &str) {
    kiln_oci::testing::push_busybox(name, None).await
}

impl Env {
    /// A build context directory with these files.
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.work.path().join(name);
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

    /// Run `kiln` with this test's state directory and plain progress.
    pub fn kiln(&self, args: &[&str]) -> Run {
        self.kiln_in(self.root.path(), args)
    }

    /// Run `kiln` with another state directory (another machine's cache, as it were).
    pub fn kiln_in(&self, root: &Path, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(root)
            .args(args)
            .env("DOCKER_CONFIG", self.work.path().join("docker-config"))
            .output()
            .expect("run kiln");
        Run(out)
    }

    /// `kiln build --progress plain` plus args, with a metadata file; returns the run.
    pub fn build(&self, context: &Path, extra: &[&str]) -> (Run, Option<serde_json::Value>) {
        self.build_in(self.root.path(), context, extra)
    }

    /// [`Env::build`] with another state directory.
    pub fn build_in(
        &self,
        root: &Path,
        context: &Path,
        extra: &[&str],
    ) -> (Run, Option<serde_json::Value>) {
        let meta = self.work.path().join("meta.json");
        let _ = fs::remove_file(&meta);
        let mut args = vec![
            "build",
            "--progress",
            "plain",
            "--metadata-file",
            meta.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(context.to_str().unwrap());
        let run = self.kiln_in(root, &args);
        let json = fs::read(&meta)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        (run, json)
    }

    /// Fetch an image's config from the registry.
    pub fn config_of(&self, name: &str) -> serde_json::Value {
        rt().block_on(async {
            let client = RegistryClient::new(Default::default(), Arc::new(NoCredentials));
            let img = client
                .resolve(
                    &Reference::parse(name).unwrap(),
                    &kiln_oci::Platform::host(),
                )
                .await
                .unwrap();
            serde_json::from_slice(&img.config_bytes).unwrap()
        })
    }

    /// Pull an image and unpack its layers into a directory.
    pub fn rootfs_of(&self, name: &str) -> tempfile::TempDir {
        self.rootfs_for(name, &kiln_oci::Platform::host())
    }

    /// The manifest (or index) `name` points at, with its media type.
    pub fn manifest_of(&self, name: &str) -> (serde_json::Value, String) {
        rt().block_on(async {
            let client = RegistryClient::new(Default::default(), Arc::new(NoCredentials));
            let (bytes, media_type, _) = client
                .get_manifest(&Reference::parse(name).unwrap())
                .await
                .unwrap();
            (serde_json::from_slice(&bytes).unwrap(), media_type)
        })
    }

    /// The architectures an OCI index `name` lists, in order (panics unless it is an index).
    pub fn index_archs(&self, name: &str) -> Vec<String> {
        let (index, media_type) = self.manifest_of(name);
        assert_eq!(
            media_type, "application/vnd.oci.image.index.v1+json",
            "{index}"
        );
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
            .collect()
    }

    /// The image config of `name` for linux/`arch` (from an index).
    pub fn config_for(&self, name: &str, arch: &str) -> serde_json::Value {
        rt().block_on(async {
            let client = RegistryClient::new(Default::default(), Arc::new(NoCredentials));
            let img = client
                .resolve(
                    &Reference::parse(name).unwrap(),
                    &kiln_oci::Platform::new("linux", arch, None),
                )
                .await
                .unwrap();
            serde_json::from_slice(&img.config_bytes).unwrap()
        })
    }

    /// A file of the linux/`arch` image of the index `name`.
    pub fn file_for(&self, name: &str, arch: &str, path: &str) -> String {
        let root = self.rootfs_for(name, &kiln_oci::Platform::new("linux", arch, None));
        fs::read_to_string(root.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The digest `name` resolves to in the registry (a manifest's or an index's).
    pub fn digest_of(&self, name: &str) -> String {
        rt().block_on(async {
            let client = RegistryClient::new(Default::default(), Arc::new(NoCredentials));
            let (_, _, digest) = client
                .get_manifest(&Reference::parse(name).unwrap())
                .await
                .unwrap();
            digest.to_string()
        })
    }

    /// The layer blobs of `name` that the content store of the state directory `root` holds:
    /// none when a build pushed the image without downloading its layers.
    pub fn layers_downloaded_into(&self, name: &str, root: &Path) -> Vec<String> {
        let (manifest, _) = self.manifest_of(name);
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .filter(|d| {
                let hex = d.trim_start_matches("sha256:");
                root.join("content/blobs/sha256").join(hex).exists()
            })
            .collect()
    }

    /// [`Env::rootfs_of`] the image for `platform` (from an index).
    pub fn rootfs_for(&self, name: &str, platform: &kiln_oci::Platform) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let client = RegistryClient::new(Default::default(), Arc::new(NoCredentials));
            let r = Reference::parse(name).unwrap();
            let img = client.resolve(&r, platform).await.unwrap();
            let store = ContentStore::open(self.work.path().join("pull-store")).unwrap();
            for l in img.manifest.layers() {
                let d: kiln_oci::Digest = l.digest().to_string().parse().unwrap();
                client.fetch_blob(&r, &d, &store).await.unwrap();
                let tar = kiln_oci::open_layer(&store.path(&d)).unwrap();
                kiln_oci::apply_layer(tar, out.path(), &Default::default()).unwrap();
            }
        });
        out
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn ok(&self) -> bool {
        self.0.status.success()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok(),
            "kiln failed:\n{}\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn assert_err_contains(&self, needle: &str) -> &Self {
        assert!(
            !self.ok(),
            "kiln unexpectedly succeeded:\n{}",
            self.stderr()
        );
        assert!(
            self.stderr().contains(needle),
            "expected {needle:?} in:\n{}",
            self.stderr()
        );
        self
    }
    /// How many vertices whose name contains `needle` were CACHED in plain output.
    pub fn cached(&self, needle: &str) -> bool {
        vertex_status(&self.stderr(), needle) == Some("CACHED")
    }
    pub fn ran(&self, needle: &str) -> bool {
        vertex_status(&self.stderr(), needle) == Some("DONE")
    }
}

/// In plain progress output, the final status of the vertex whose name contains `needle`.
fn vertex_status(out: &str, needle: &str) -> Option<&'static str> {
    let number = out.lines().find_map(|l| {
        let rest = l.strip_prefix('#')?;
        let (n, name) = rest.split_once(' ')?;
        name.contains(needle).then(|| n.to_string())
    })?;
    let prefix = format!("#{number} ");
    for l in out.lines().filter(|l| l.starts_with(&prefix)) {
        let s = &l[prefix.len()..];
        if s == "CACHED" {
            return Some("CACHED");
        }
        if s.starts_with("DONE") {
            return Some("DONE");
        }
        if s.starts_with("ERROR") {
            return Some("ERROR");
        }
    }
    None
}

/// The buildctl binaries to test with: `KILN_TEST_BUILDCTL` (a PATH-style list), else the first on
/// PATH, else the clients built outside the repository under /opt/buildkit-*.
pub fn buildctls() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("KILN_TEST_BUILDCTL") {
        return std::env::split_paths(&list)
            .filter(|p| p.is_file())
            .collect();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path: Vec<PathBuf> = std::env::split_paths(&path)
        .map(|d| d.join("buildctl"))
        .filter(|p| p.is_file())
        .take(1)
        .collect();
    if !on_path.is_empty() {
        return on_path;
    }
    // Where the benchmark README says to build an old and a current client (outside the repo).
    [
        "/opt/buildkit-v0.11/bin/buildctl",
        "/opt/buildkit-current/bin/buildctl",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.is_file())
    .collect()
}

/// A real `ssh-agent` on a socket in a temporary directory, holding one fresh ed25519 key, and a
/// copy of the host's `ssh-add` with the libraries it needs, to run inside a build step:
/// `/ssh/ld.so --library-path /ssh /ssh/ssh-add -l` lists the key through the forwarded agent.
pub struct SshAgent {
    child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The key's fingerprint (`SHA256:…`), as `ssh-add -l` prints it.
    pub fingerprint: String,
}

impl SshAgent {
    pub fn start(test: &str) -> Option<SshAgent> {
        for tool in ["ssh-agent", "ssh-add", "ssh-keygen", "ldd"] {
            if which(tool).is_none() {
                println!("SKIP {test}: {tool} not installed (openssh-client)");
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "ssh-agent did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let key = dir.path().join("id_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(added.status.success(), "{added:?}");
        let listed = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(fingerprint.starts_with("SHA256:"), "{listed:?}");
        Some(SshAgent {
            child,
            dir,
            socket,
            fingerprint,
        })
    }

    /// Put `ssh-add`, the dynamic loader and the libraries `ldd` names into `dir` (flat).
    pub fn bundle_ssh_add(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        let ssh_add = which("ssh-add").unwrap();
        fs::copy(&ssh_add, dir.join("ssh-add")).unwrap();
        let ldd = Command::new("ldd").arg(&ssh_add).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let Some(path) = line
                .split("=>")
                .last()
                .and_then(|rest| rest.split_whitespace().next())
                .filter(|p| p.starts_with('/'))
            else {
                continue;
            };
            let name = Path::new(path).file_name().unwrap();
            let target = if name.to_string_lossy().starts_with("ld-linux") {
                dir.join("ld.so")
            } else {
                dir.join(name)
            };
            fs::copy(fs::canonicalize(path).unwrap(), target).unwrap();
        }
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
