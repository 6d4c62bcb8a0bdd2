//! `docker buildx` with its default docker driver against kiln's Docker API (`kiln buildkitd
//! --docker-addr`): the driver reaches BuildKit through `POST /grpc` and `POST /session`, and its
//! images land in kiln's image store (`docker images`) or in a registry. Needs the docker CLI and
//! the buildx plugin (KILN_TEST_BUILDX, `docker-buildx` on PATH, or /opt/buildx/docker-buildx);
//! without them the test prints a SKIP line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn buildx_plugin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_TEST_BUILDX") {
        return Some(p.into());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("docker-buildx"))
        .chain([PathBuf::from("/opt/buildx/docker-buildx")])
        .find(|p| p.is_file())
}

fn docker_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_TEST_DOCKER") {
        return Some(p.into());
    }
    ["/usr/local/bin/docker", "/usr/bin/docker"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `kiln buildkitd` serving the Docker API on a unix socket, killed on drop.
struct Engine {
    child: Child,
    docker_socket: PathBuf,
    log: PathBuf,
}

impl Engine {
    fn start(root: &Path, dir: &Path) -> Engine {
        Self::start_with(root, dir, &[])
    }

    fn start_with(root: &Path, dir: &Path, extra: &[String]) -> Engine {
        let docker_socket = dir.join("docker.sock");
        let log = dir.join("buildkitd.log");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["--root", root.to_str().unwrap()])
            .args(["--log", "kiln_buildkit=debug,kiln_dockerd=debug,info"])
            .args(["buildkitd", "--addr"])
            .arg(format!("unix://{}", dir.join("buildkit.sock").display()))
            .arg("--docker-addr")
            .arg(format!("unix://{}", docker_socket.display()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !docker_socket.exists() {
            assert!(Instant::now() < deadline, "buildkitd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Engine {
            child,
            docker_socket,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Docker {
    cli: PathBuf,
    config: tempfile::TempDir,
    host: String,
}

impl Docker {
    /// The CLI with the buildx plugin in a config directory of its own, on `engine`'s Docker API.
    fn with_buildx(cli: PathBuf, plugin: &Path, engine: &Engine) -> Docker {
        let config = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(config.path().join("cli-plugins")).unwrap();
        std::os::unix::fs::symlink(plugin, config.path().join("cli-plugins/docker-buildx"))
            .unwrap();
        Docker {
            cli,
            config,
            host: format!("unix://{}", engine.docker_socket.display()),
        }
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(&self.cli)
            .args(args)
            .current_dir(dir)
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_HOST", &self.host)
            .env_remove("DOCKER_BUILDKIT")
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn docker_buildx_with_the_docker_driver_builds_loads_and_pushes() {
    let test = "docker_buildx_with_the_docker_driver_builds_loads_and_pushes";
    let (Some(plugin), Some(cli)) = (buildx_plugin(), docker_cli()) else {
        println!("SKIP {test}: needs the docker CLI and the buildx plugin (KILN_TEST_BUILDX, docker-buildx on PATH or /opt/buildx/docker-buildx)");
        return;
    };
    let Some(env) = common::setup(test) else {
        return;
    };
    let engine = Engine::start(env.root.path(), env.work.path());
    let docker = Docker::with_buildx(cli, &plugin, &engine);
    let context = env.context(
        "buildx",
        &[
            (
                "Dockerfile",
                "FROM $BASE\nRUN echo from-buildx > /proof\nCOPY app.txt /app.txt\n",
            ),
            ("app.txt", "app\n"),
        ],
    );

    let out = docker.run(&context, &["buildx", "inspect"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("docker"), "{}", text(&out));

    // Load (the docker driver's default): the image is in kiln's store.
    let out = docker.run(
        &context,
        &[
            "buildx",
            "build",
            "--progress",
            "plain",
            "-t",
            "kiln-test/buildx:1",
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert!(
        text(&out).contains("RUN echo from-buildx"),
        "{}",
        text(&out)
    );
    let out = docker.run(&context, &["images", "kiln-test/buildx"]);
    assert!(text(&out).contains("kiln-test/buildx"), "{}", text(&out));

    // The same build again is cached; --push sends it to a registry.
    let image = env.image("buildx:2");
    let out = docker.run(
        &context,
        &[
            "buildx",
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &image,
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert!(text(&out).contains("CACHED"), "{}", text(&out));
    let config = env.config_of(&image);
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(|a| a.len()),
        Some(3),
        "{config}"
    );

    // A broken Dockerfile: buildx reports the error with the line, the engine keeps serving.
    let bad = env.context("bad", &[("Dockerfile", "FROM $BASE\nRUN exit 7\n")]);
    let out = docker.run(&bad, &["buildx", "build", "--progress", "plain", "."]);
    assert!(!out.status.success());
    assert!(text(&out).contains("exit 7"), "{}", text(&out));
    let out = docker.run(&context, &["buildx", "build", "-q", "."]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The classic docker CLI in BuildKit mode (`DOCKER_BUILDKIT=1` without buildx): `POST /session`
/// carries the context, `POST /build?version=2` builds, and progress comes back as BuildKit
/// status. Debian's docker.io (20.10) does this; newer CLIs insist on buildx and are skipped.
#[test]
fn classic_docker_build_in_buildkit_mode() {
    let test = "classic_docker_build_in_buildkit_mode";
    let Some(cli) = ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .find(|p| {
            let v = Command::new(p)
                .args(["version", "--format", "{{.Client.Version}}"])
                .output();
            v.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("20."))
        })
    else {
        println!("SKIP {test}: needs a docker CLI 20.10 (Debian's docker.io), which builds without buildx");
        return;
    };
    let Some(env) = common::setup(test) else {
        return;
    };
    let engine = Engine::start(env.root.path(), env.work.path());
    let docker = Docker {
        cli,
        config: tempfile::tempdir().unwrap(),
        host: format!("unix://{}", engine.docker_socket.display()),
    };
    let context = env.context(
        "classic",
        &[
            (
                "sub/Build.dockerfile",
                "FROM $BASE\nARG WHO\nRUN echo \"hello $WHO\" > /proof\nCOPY app.txt /app.txt\n",
            ),
            ("app.txt", "app\n"),
        ],
    );
    let image = env.image("classic:1");
    let run = |args: &[&str]| {
        let out = Command::new(&docker.cli)
            .args(args)
            .current_dir(&context)
            .env("DOCKER_CONFIG", docker.config.path())
            .env("DOCKER_HOST", &docker.host)
            .env("DOCKER_BUILDKIT", "1")
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };
    let (ok, out) = run(&[
        "build",
        "--progress",
        "plain",
        "-f",
        "sub/Build.dockerfile",
        "--build-arg",
        "WHO=classic",
        "-t",
        &image,
        ".",
    ]);
    assert!(ok, "{out}\n---\n{}", engine.log());
    assert!(out.contains("[2/3] RUN echo"), "{out}");
    let (ok, out) = run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(ok && out.contains("/classic:1"), "{out}");
    let (ok, out) = run(&["push", &image]);
    assert!(ok, "{out}");
    let config = env.config_of(&image);
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(|a| a.len()),
        Some(3),
        "{config}"
    );
    // A failing step fails the command with the step's error.
    let (ok, out) = run(&[
        "build",
        "--progress",
        "plain",
        "-f",
        "sub/Build.dockerfile",
        "--target",
        "nope",
        ".",
    ]);
    assert!(!ok);
    assert!(out.contains("nope"), "{out}");
}

/// `docker buildx create --driver remote` pointed at kiln's BuildKit socket (what a job does with
/// `BUILDKIT_HOST`): builds push to a registry, and `--load` lands in kiln's image store through
/// `docker load` on `DOCKER_HOST`.
#[test]
fn docker_buildx_with_the_remote_driver() {
    let test = "docker_buildx_with_the_remote_driver";
    let (Some(plugin), Some(cli)) = (buildx_plugin(), docker_cli()) else {
        println!("SKIP {test}: needs the docker CLI and the buildx plugin");
        return;
    };
    let Some(env) = common::setup(test) else {
        return;
    };
    let engine = Engine::start(env.root.path(), env.work.path());
    let docker = Docker::with_buildx(cli, &plugin, &engine);
    let context = env.context(
        "remote",
        &[(
            "Dockerfile",
            "FROM $BASE\nRUN echo via-remote-driver > /proof\n",
        )],
    );
    let buildkit = format!("unix://{}", env.work.path().join("buildkit.sock").display());
    let out = docker.run(
        &context,
        &[
            "buildx", "create", "--name", "kiln", "--driver", "remote", &buildkit,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = docker.run(&context, &["buildx", "inspect", "--bootstrap", "kiln"]);
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert!(text(&out).contains("remote"), "{}", text(&out));

    let image = env.image("remote:1");
    let cache = env.image("remote:cache");
    let cache_to = format!("type=registry,ref={cache},mode=max");
    let out = docker.run(
        &context,
        &[
            "buildx",
            "build",
            "--builder",
            "kiln",
            "--progress",
            "plain",
            "--push",
            "--cache-to",
            &cache_to,
            "-t",
            &image,
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert_eq!(
        env.config_of(&image)["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len()),
        Some(2)
    );
    // The cache went to the registry as a kiln cache manifest.
    let manifest = common::rt().block_on(async {
        let client = kiln_oci::RegistryClient::new(
            Default::default(),
            std::sync::Arc::new(kiln_oci::NoCredentials),
        );
        let (bytes, _, _) = client
            .get_manifest(&kiln_oci::Reference::parse(&cache).unwrap())
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    });
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    let out = docker.run(
        &context,
        &[
            "buildx",
            "build",
            "--builder",
            "kiln",
            "--load",
            "--progress",
            "plain",
            "--cache-from",
            &cache,
            "-t",
            "kiln-test/remote:1",
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert!(
        text(&out).contains(&format!("importing cache manifest from {cache}")),
        "{}",
        text(&out)
    );
    let out = docker.run(&context, &["images", "kiln-test/remote"]);
    assert!(text(&out).contains("kiln-test/remote"), "{}", text(&out));

    // `--build-context NAME=DIR`: buildx sends the directory as a local and `context:NAME`.
    let deps = env.context("deps", &[("lib.txt", "from a named context\n")]);
    let named = env.context(
        "named",
        &[(
            "Dockerfile",
            "FROM $BASE\nCOPY --from=deps /lib.txt /lib.txt\n",
        )],
    );
    let dest = env.work.path().join("named-out");
    let out = docker.run(
        &named,
        &[
            "buildx",
            "build",
            "--builder",
            "kiln",
            "--progress",
            "plain",
            "--build-context",
            &format!("deps={}", deps.display()),
            "-o",
            &format!("type=local,dest={}", dest.display()),
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("lib.txt")).unwrap(),
        "from a named context\n"
    );

    // `--platform a,b --push`: buildx gets one result per platform and kiln pushes an index.
    let base = env.image("multiarch:1");
    common::rt().block_on(kiln_oci::testing::push_busybox_index(
        &base,
        &["amd64", "arm64"],
    ));
    let multi = env.context(
        "multi",
        &[(
            "Dockerfile",
            &format!(
                "FROM --platform=$BUILDPLATFORM {base} AS build\nARG TARGETARCH\n\
                 RUN echo \"for $TARGETARCH\" > /arch\nFROM {base}\nCOPY --from=build /arch /arch\n"
            ),
        )],
    );
    let image = env.image("remote-multi:1");
    let out = docker.run(
        &multi,
        &[
            "buildx",
            "build",
            "--builder",
            "kiln",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--push",
            "-t",
            &image,
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert!(
        text(&out).contains("[linux/amd64->arm64 build 2/2] RUN"),
        "{}",
        text(&out)
    );
    assert_eq!(env.index_archs(&image), ["amd64", "arm64"]);
    for arch in ["amd64", "arm64"] {
        assert_eq!(env.file_for(&image, arch, "arch"), format!("for {arch}\n"));
    }
}

/// The shared builder as the issue shows it: `docker buildx create --driver remote` with client
/// certificates, over mutual TLS on TCP; then `buildx du`, `buildx prune` and a build that pushes.
#[test]
fn docker_buildx_remote_driver_over_mutual_tls() {
    let test = "docker_buildx_remote_driver_over_mutual_tls";
    let (Some(plugin), Some(cli)) = (buildx_plugin(), docker_cli()) else {
        println!("SKIP {test}: needs the docker CLI and the buildx plugin");
        return;
    };
    let Some(env) = common::setup(test) else {
        return;
    };
    let certs = env.work.path().join("certs");
    let made = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["certs", "--dir", certs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let c = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let engine = Engine::start_with(
        env.root.path(),
        env.work.path(),
        &[
            "--addr".into(),
            addr.clone(),
            "--tlscacert".into(),
            c("ca.pem"),
            "--tlscert".into(),
            c("cert.pem"),
            "--tlskey".into(),
            c("key.pem"),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let docker = Docker::with_buildx(cli, &plugin, &engine);
    let context = env.context(
        "tls",
        &[("Dockerfile", "FROM $BASE\nRUN echo over-mtls > /proof\n")],
    );
    let opts = format!(
        "cacert={},cert={},key={}",
        c("ca.pem"),
        c("client.pem"),
        c("client-key.pem")
    );
    let out = docker.run(
        &context,
        &[
            "buildx",
            "create",
            "--name",
            "remote-builder",
            "--driver",
            "remote",
            "--driver-opt",
            &opts,
            &addr,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = docker.run(
        &context,
        &["buildx", "inspect", "--bootstrap", "remote-builder"],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert!(text(&out).contains("running"), "{}", text(&out));

    let image = env.image("mtls:1");
    let out = docker.run(
        &context,
        &[
            "buildx",
            "build",
            "--builder",
            "remote-builder",
            "--progress",
            "plain",
            "-t",
            &image,
            "--push",
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n---\n{}",
        text(&out),
        engine.log()
    );
    assert!(text(&out).contains("RUN echo over-mtls"), "{}", text(&out));
    assert_eq!(
        env.config_of(&image)["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len()),
        Some(2)
    );

    let out = docker.run(&context, &["buildx", "du", "--builder", "remote-builder"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Total"), "{}", text(&out));
    let out = docker.run(
        &context,
        &[
            "buildx",
            "prune",
            "--builder",
            "remote-builder",
            "--all",
            "--force",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Total"), "{}", text(&out));

    // Without client certificates the builder is refused.
    let out = docker.run(
        &context,
        &[
            "buildx",
            "create",
            "--name",
            "no-certs",
            "--driver",
            "remote",
            "--driver-opt",
            &format!("cacert={}", c("ca.pem")),
            &addr,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = docker.run(&context, &["buildx", "inspect", "--bootstrap", "no-certs"]);
    assert!(!text(&out).contains("Status:    running"), "{}", text(&out));
}
