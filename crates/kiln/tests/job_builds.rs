//! Build steps in jobs: a job of `kiln daemon` builds and pushes an image with real buildctl through
//! its own `BUILDKIT_HOST`; a second job on the same runner finds the steps cached.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_gitea::fake::{FakeGitea, QueuedJob};
use kiln_gitea::proto;

#[test]
fn jobs_build_with_buildctl_through_buildkit_host() {
    let Some(env) = common::setup("jobs_build_with_buildctl_through_buildkit_host") else {
        return;
    };
    let Some(buildctl) = common::buildctls().into_iter().last() else {
        println!("SKIP jobs_build_with_buildctl_through_buildkit_host: buildctl not found (KILN_TEST_BUILDCTL, PATH, /opt/buildkit-*/bin)");
        return;
    };
    let runner = BuildRunner::start(&env);

    let image = env.image("from-job:1");
    let workflow = format!(
        r#"
on: push
env:
  BUILDCTL: {buildctl}
jobs:
  image:
    runs-on: linux
    steps:
      - name: Write a Dockerfile
        run: |
          printf 'FROM {base}\nRUN echo built-in-a-job > /proof\nCOPY hello.txt /hello.txt\n' > Dockerfile
          echo hello > hello.txt
          echo "BUILDKIT_HOST=$BUILDKIT_HOST"
      - name: Build and push
        run: |
          "$BUILDCTL" --addr "$BUILDKIT_HOST" build --progress plain \
            --frontend dockerfile.v0 --local context=. --local dockerfile=. \
            --output type=image,name={image},push=true
"#,
        buildctl = buildctl.display(),
        base = env.base,
    );
    let task = runner.run(&workflow, "image", &[]);
    let rows = task.rows.join("\n");
    assert_eq!(
        task.result,
        proto::Result::Success,
        "{rows}\n---\n{}",
        runner.log()
    );
    assert!(
        rows.contains("BUILDKIT_HOST=unix://")
            && rows.contains(&format!("job-{}.sock", task.task_id)),
        "{rows}"
    );
    let config_json = env.config_of(&image);
    assert_eq!(
        config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len()),
        Some(3),
        "{config_json}"
    );

    // The same build in a second job: the engine's cache is shared by the runner's jobs.
    let task = runner.run(&workflow, "image", &[]);
    let rows = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Success, "{rows}");
    assert!(
        rows.contains("CACHED"),
        "no cached vertex in the second job:\n{rows}"
    );

    // SIGTERM: the daemon and its engine stop.
    let (status, log) = runner.stop();
    assert!(status.success(), "{log}");
}

const USER: &str = "ci-bot";
const PASSWORD: &str = "pa55-w0rd-for-tests";

/// A runner with its build engine, registered to a fake Gitea, for build-step tests.
struct BuildRunner {
    rt: tokio::runtime::Runtime,
    gitea: FakeGitea,
    daemon: std::process::Child,
    log: std::path::PathBuf,
    stopped: bool,
}

impl BuildRunner {
    fn start(env: &common::Env) -> BuildRunner {
        Self::start_with(env, "linux:host", "")
    }

    /// With these runner labels and more config.yaml (e.g. a `container:` section).
    fn start_with(env: &common::Env, labels: &str, extra_config: &str) -> BuildRunner {
        let rt = common::rt();
        let gitea = rt.block_on(FakeGitea::start());
        let dir = env.work.path();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "runner:\n  file: {d}/.runner\n  fetch_interval: 100ms\n  shutdown_timeout: 60s\nhost:\n  workdir_parent: {d}/host\ncache:\n  enabled: false\nkiln:\n  metrics_addr: \"\"\n  state_dir: {root}\n  builder:\n    gc_keep_storage: 5GB\n{extra_config}",
                d = dir.display(),
                root = env.root.path().display()
            ),
        )
        .unwrap();
        let kiln = env!("CARGO_BIN_EXE_kiln");
        let out = Command::new(kiln)
            .args([
                "register",
                "--no-interactive",
                "--instance",
                &gitea.url(),
                "--token",
                &gitea.registration_token(),
                "--labels",
                labels,
                "-c",
            ])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.join("daemon.log");
        let daemon = Command::new(kiln)
            .args(["daemon", "-c"])
            .arg(&config)
            .env("DOCKER_CONFIG", dir.join("runner-docker-config"))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        BuildRunner {
            rt,
            gitea,
            daemon,
            log,
            stopped: false,
        }
    }

    fn run(
        &self,
        workflow: &str,
        job: &str,
        secrets: &[(&str, &str)],
    ) -> kiln_gitea::fake::TaskRecord {
        let id = self.queue(workflow, job, secrets);
        self.wait(id)
    }

    fn wait(&self, id: i64) -> kiln_gitea::fake::TaskRecord {
        self.rt
            .block_on(self.gitea.wait_final(id, Duration::from_secs(300)))
            .unwrap_or_else(|| {
                panic!(
                    "job did not finish; daemon log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
    }

    fn queue(&self, workflow: &str, job: &str, secrets: &[(&str, &str)]) -> i64 {
        self.queue_with_vars(workflow, job, secrets, &[])
    }

    fn queue_with_vars(
        &self,
        workflow: &str,
        job: &str,
        secrets: &[(&str, &str)],
        vars: &[(&str, &str)],
    ) -> i64 {
        self.gitea.queue_job(QueuedJob {
            workflow_yaml: workflow.to_string(),
            job_id: job.into(),
            context: serde_json::json!({}),
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }
}

impl BuildRunner {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM the daemon and wait for it: its exit status and its log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let status = self.daemon.wait().unwrap();
        self.stopped = true;
        (status, self.log())
    }
}

impl Drop for BuildRunner {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
    }
}

#[test]
fn build_push_login_and_setup_buildx_actions_run_natively() {
    let Some(env) = common::setup("build_push_login_and_setup_buildx_actions_run_natively") else {
        return;
    };
    let Some(private) = kiln_oci::testing::TestRegistry::start_with_basic_auth(USER, PASSWORD)
    else {
        println!("SKIP build_push_login_and_setup_buildx_actions_run_natively: no registry with basic auth");
        return;
    };
    let runner = BuildRunner::start(&env);
    let image = format!("{}/native:1", private.host());
    let workflow = format!(
        r#"
on: push
jobs:
  docker:
    runs-on: linux
    steps:
      - name: Write the project
        run: |
          printf 'FROM {base}\nARG GREETING\nRUN --mount=type=secret,id=token test "$(cat /run/secrets/token)" = s3cret && echo "$GREETING" > /greeting\nCOPY app.txt /app.txt\n' > Dockerfile
          echo app > app.txt
      - name: Set up Docker Buildx
        id: buildx
        uses: docker/setup-buildx-action@v3
      - name: Login to the registry
        uses: docker/login-action@v3
        with:
          registry: {registry}
          username: ${{{{ secrets.REGISTRY_USER }}}}
          password: ${{{{ secrets.REGISTRY_PASSWORD }}}}
      - name: Build and push
        id: push
        uses: docker/build-push-action@v6
        with:
          context: .
          push: true
          tags: {image}
          build-args: |
            GREETING=hello from build-push-action
          secrets: |
            "token=s3cret"
          cache-from: type=registry,ref={registry}/native:buildcache
          cache-to: type=registry,ref={registry}/native:buildcache,mode=max
      - run: echo "digest=${{{{ steps.push.outputs.digest }}}} id=${{{{ steps.push.outputs.imageid }}}} builder=${{{{ steps.buildx.outputs.name }}}}"
"#,
        base = env.base,
        registry = private.host(),
    );
    let secrets = [("REGISTRY_USER", USER), ("REGISTRY_PASSWORD", PASSWORD)];
    let task = runner.run(&workflow, "docker", &secrets);
    let rows = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Success, "{rows}");
    assert!(rows.contains("Login Succeeded"), "{rows}");
    assert!(rows.contains("performed by kiln itself"), "{rows}");
    assert!(
        rows.lines()
            .any(|l| l.starts_with('#') && l.contains("] RUN")),
        "no buildctl-style progress:\n{rows}"
    );
    assert!(
        rows.contains("digest=sha256:")
            && rows.contains("id=sha256:")
            && rows.contains("builder=kiln"),
        "{rows}"
    );
    assert!(!rows.contains(PASSWORD), "password leaked:\n{rows}");
    // The cache went to the private registry with the job's login; the first time there was
    // none to import, which is a warning, not a failure.
    let cache = format!("{}/native:buildcache", private.host());
    assert!(
        rows.contains(&format!("exporting cache to {cache}")),
        "{rows}"
    );
    assert!(rows.contains(&format!("cache {cache} not used")), "{rows}");

    // Several platforms: the build pushes an index with the job's login.
    let multiarch = env.image("multiarch:1");
    common::rt().block_on(kiln_oci::testing::push_busybox_index(
        &multiarch,
        &["amd64", "arm64"],
    ));
    let multi_image = format!("{}/native-multi:1", private.host());
    let multi = format!(
        r#"
on: push
jobs:
  docker:
    runs-on: linux
    steps:
      - run: |
          printf 'FROM --platform=$BUILDPLATFORM {multiarch} AS build\nARG TARGETARCH\nRUN echo "for $TARGETARCH" > /arch\nFROM {multiarch}\nCOPY --from=build /arch /arch\n' > Dockerfile
      - uses: docker/login-action@v3
        with:
          registry: {registry}
          username: ${{{{ secrets.REGISTRY_USER }}}}
          password: ${{{{ secrets.REGISTRY_PASSWORD }}}}
      - id: push
        uses: docker/build-push-action@v6
        with:
          context: .
          platforms: linux/amd64,linux/arm64
          push: true
          tags: {multi_image}
      - run: echo "index=${{{{ steps.push.outputs.digest }}}}"
"#,
        registry = private.host(),
    );
    let task = runner.run(&multi, "docker", &secrets);
    let rows = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Success, "{rows}");
    let (index, media_type, digest) = common::rt().block_on(async {
        let r = kiln_oci::Reference::parse(&multi_image).unwrap();
        let creds = kiln_oci::StaticCredentials::default().with(
            &r.registry,
            kiln_oci::Credentials {
                username: USER.into(),
                password: PASSWORD.into(),
            },
        );
        kiln_oci::RegistryClient::new(Default::default(), std::sync::Arc::new(creds))
            .get_manifest(&r)
            .await
            .unwrap()
    });
    assert_eq!(
        media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(index["manifests"].as_array().map(|m| m.len()), Some(2));
    assert!(rows.contains(&format!("index={digest}")), "{rows}");

    // Wrong credentials: a clear error in the step log, and the job fails.
    let bad = workflow.replace("${{ secrets.REGISTRY_PASSWORD }}", "wrong-password");
    let task = runner.run(&bad, "docker", &secrets);
    let rows = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Failure, "{rows}");
    assert_eq!(task.steps[2].result, proto::Result::Failure, "{rows}");
}

fn docker_cli() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("KILN_TEST_DOCKER") {
        return Some(p.into());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}

/// A docker CLI 20.10 (Debian's docker.io), which builds in BuildKit mode without buildx.
fn classic_docker_cli() -> Option<std::path::PathBuf> {
    ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
        .find(|p| {
            Command::new(p)
                .args(["version", "--format", "{{.Client.Version}}"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("20."))
        })
}

#[test]
fn docker_cli_in_a_job_builds_logs_in_and_pushes_through_docker_host() {
    let test = "docker_cli_in_a_job_builds_logs_in_and_pushes_through_docker_host";
    let Some(docker) = docker_cli() else {
        println!("SKIP {test}: docker CLI not found (KILN_TEST_DOCKER or PATH; Debian package docker.io)");
        return;
    };
    let Some(env) = common::setup(test) else {
        return;
    };
    let Some(private) = kiln_oci::testing::TestRegistry::start_with_basic_auth(USER, PASSWORD)
    else {
        println!("SKIP {test}: no registry with basic auth");
        return;
    };
    let runner = BuildRunner::start(&env);
    let image = format!("{}/from-docker-cli:1", private.host());
    let workflow = format!(
        r#"
on: push
env:
  DOCKER: {docker}
  DOCKER_CLASSIC: {classic}
jobs:
  docker:
    runs-on: linux
    steps:
      - run: |
          printf 'FROM {base}\nRUN echo via-docker-cli > /proof\n' > Dockerfile
          echo "DOCKER_HOST=$DOCKER_HOST"
      - name: docker login
        run: echo "${{{{ secrets.REGISTRY_PASSWORD }}}}" | "$DOCKER" login {registry} -u {user} --password-stdin
      - name: docker build and push
        run: |
          "$DOCKER" build -t {image} .
          "$DOCKER" images
          "$DOCKER" tag {image} {image}-copy
          "$DOCKER" push {image}
          "$DOCKER" rmi {image}-copy
      - name: containers are refused clearly
        run: "! \"$DOCKER\" run --rm {image} true 2> err.txt && cat err.txt"
      - name: the BuildKit mode of the classic CLI
        run: |
          if [ -n "$DOCKER_CLASSIC" ]; then
            DOCKER_BUILDKIT=1 "$DOCKER_CLASSIC" build --progress plain -t {image}-bk . 2>&1 | tee bk.txt
            grep -q 'via-docker-cli' bk.txt && echo "buildkit-mode-ok"
          else
            echo "buildkit-mode-ok (skipped: no docker CLI 20.10 here; newer CLIs use buildx for it)"
          fi
"#,
        docker = docker.display(),
        classic = classic_docker_cli()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "\"\"".into()),
        base = env.base,
        registry = private.host(),
        user = USER,
    );
    let task = runner.run(&workflow, "docker", &[("REGISTRY_PASSWORD", PASSWORD)]);
    let rows = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Success, "{rows}");
    assert!(
        rows.contains("DOCKER_HOST=unix://") && rows.contains("-docker.sock"),
        "{rows}"
    );
    assert!(rows.contains("Login Succeeded"), "{rows}");
    assert!(rows.contains("Successfully tagged"), "{rows}");
    assert!(rows.contains("digest: sha256:"), "{rows}");
    assert!(rows.contains("not supported"), "{rows}");
    assert!(rows.contains("buildkit-mode-ok"), "{rows}");
    assert!(!rows.contains(PASSWORD), "{rows}");
}

#[test]
fn container_jobs_with_a_dockerfile_action_built_by_kiln() {
    let test = "container_jobs_with_a_dockerfile_action_built_by_kiln";
    let Some(env) = common::setup(test) else {
        return;
    };
    let Some(dockerd) = kiln_oci::testing::TestDockerd::start(test) else {
        return;
    };
    let runner = BuildRunner::start_with(
        &env,
        &format!("linux:host,ubuntu-latest:docker://{}", env.base),
        &format!(
            "container:\n  docker_host: {}\n  network: host\n",
            dockerd.host()
        ),
    );
    let workflow = format!(
        r#"
on: push
jobs:
  boxed:
    runs-on: ubuntu-latest
    steps:
      - name: In the job container
        run: |
          test ! -e /etc/debian_version && echo "running in the busybox job container"
          mkdir -p .kiln/hello
          printf 'name: hello\ninputs:\n  who: {{ required: true }}\noutputs:\n  said: {{ description: what }}\nruns:\n  using: docker\n  image: Dockerfile\n  args: ["via-args"]\n' > .kiln/hello/action.yml
          printf 'FROM {base}\nRUN echo baked-by-kiln > /baked\nCOPY entrypoint.sh /entrypoint.sh\nENTRYPOINT ["sh", "/entrypoint.sh"]\n' > .kiln/hello/Dockerfile
          printf 'echo "hello $INPUT_WHO $1 from $(cat /baked)"\necho "said=hello $INPUT_WHO" >> "$GITHUB_OUTPUT"\n' > .kiln/hello/entrypoint.sh
      - id: hello
        uses: ./.kiln/hello
        with:
          who: gitea
      - run: echo "the action said ${{{{ steps.hello.outputs.said }}}}"
"#,
        base = env.base,
    );
    let id = runner.queue(&workflow, "boxed", &[]);
    let task = runner.wait(id);
    let rows = task.rows.join("\n");
    assert_eq!(
        task.result,
        proto::Result::Success,
        "{rows}\n---\n{}",
        runner.log()
    );
    for needle in [
        "running in the busybox job container",
        "Building the action image from",
        "into the Docker daemon",
        "hello gitea via-args from baked-by-kiln",
        "the action said hello gitea",
    ] {
        assert!(rows.contains(needle), "missing `{needle}`:\n{rows}");
    }

    // Cancelled from Gitea while a step runs in the job container: the job ends cancelled and its
    // containers are gone.
    let sleeping = r#"
on: push
jobs:
  sleepy:
    runs-on: ubuntu-latest
    steps:
      - run: echo started; sleep 303
"#;
    let id = runner.queue(sleeping, "sleepy", &[]);
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
        let started = runner
            .gitea
            .task(id)
            .is_some_and(|t| t.rows.iter().any(|r| r.contains("started")));
        if started {
            break;
        }
    }
    runner.gitea.cancel(id);
    let task = runner.wait(id);
    assert_eq!(
        task.result,
        proto::Result::Cancelled,
        "{}",
        task.rows.join("\n")
    );
    let containers = dockerd.get("/containers/json?all=1").unwrap();
    assert_eq!(containers.trim(), "[]", "containers left: {containers}");
    let (status, log) = runner.stop();
    assert!(status.success(), "{log}");
}

/// One workflow using every build door (buildctl on `BUILDKIT_HOST`, the docker CLI on
/// `DOCKER_HOST`, the native build-push-action) runs the same under `kiln exec` and under the
/// daemon, and every image reaches the registry.
#[test]
fn every_build_door_works_the_same_under_kiln_exec_and_the_daemon() {
    let test = "every_build_door_works_the_same_under_kiln_exec_and_the_daemon";
    let Some(docker) = docker_cli() else {
        println!("SKIP {test}: docker CLI not found (KILN_TEST_DOCKER or PATH; Debian package docker.io)");
        return;
    };
    let Some(env) = common::setup(test) else {
        return;
    };
    let buildctl = common::buildctls().into_iter().last();
    if buildctl.is_none() {
        println!("SKIP {test} (buildctl part): buildctl not found (KILN_TEST_BUILDCTL, PATH, /opt/buildkit-*/bin)");
    }
    let image = env.image("doors");
    let workflow = format!(
        r#"
on: push
env:
  DOCKER: {docker}
  BUILDCTL: "{buildctl}"
  TAG: {image}:${{{{ vars.MODE }}}}
jobs:
  doors:
    runs-on: linux
    steps:
      - run: |
          printf 'FROM {base}\nRUN echo built-through-a-door > /proof\n' > Dockerfile
          echo "doors: BUILDKIT_HOST=$BUILDKIT_HOST DOCKER_HOST=$DOCKER_HOST"
          test -S "${{BUILDKIT_HOST#unix://}}" && test -S "${{DOCKER_HOST#unix://}}"
      - name: buildctl through BUILDKIT_HOST
        run: |
          if [ -z "$BUILDCTL" ]; then echo "no buildctl here"; exit 0; fi
          "$BUILDCTL" --addr "$BUILDKIT_HOST" build --frontend dockerfile.v0 \
            --local context=. --local dockerfile=. \
            --output type=image,name=$TAG-buildctl,push=true
      - name: docker CLI through DOCKER_HOST
        run: |
          "$DOCKER" build -t $TAG-docker .
          "$DOCKER" push $TAG-docker
      - name: the native build-push-action
        uses: docker/build-push-action@v6
        with:
          context: .
          push: true
          tags: ${{{{ env.TAG }}}}-action
"#,
        docker = docker.display(),
        buildctl = buildctl
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        base = env.base,
    );
    let pushed = |mode: &str| {
        let mut doors = vec!["docker", "action"];
        if buildctl.is_some() {
            doors.push("buildctl");
        }
        for door in doors {
            let config = env.config_of(&format!("{image}:{mode}-{door}"));
            assert_eq!(
                config["rootfs"]["diff_ids"].as_array().map(|a| a.len()),
                Some(2),
                "{mode}-{door}: {config}"
            );
        }
    };

    // Under the daemon.
    let runner = BuildRunner::start(&env);
    let id = runner.queue_with_vars(&workflow, "doors", &[], &[("MODE", "daemon")]);
    let task = runner.wait(id);
    let rows = task.rows.join("\n");
    assert_eq!(task.result, proto::Result::Success, "{rows}");
    pushed("daemon");
    let (status, log) = runner.stop();
    assert!(status.success(), "{log}");

    // Under kiln exec, from a checkout, with the engine started when a step first uses it.
    let checkout = env.work.path().join("checkout");
    std::fs::create_dir_all(checkout.join(".gitea/workflows")).unwrap();
    std::fs::write(checkout.join(".gitea/workflows/doors.yml"), &workflow).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(env.root.path().join("exec-builder"))
        .args(["exec", "--var", "MODE=exec", "--state-dir"])
        .arg(env.work.path().join("exec-state"))
        .arg("-C")
        .arg(&checkout)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", env.work.path().join("user-docker-config"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("doors: BUILDKIT_HOST=unix://") && stdout.contains("DOCKER_HOST=unix://"),
        "{stdout}"
    );
    assert!(stdout.contains("performed by kiln itself"), "{stdout}");
    pushed("exec");
}
