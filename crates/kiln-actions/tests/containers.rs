//! Container mode end to end: a real dockerd (Debian's docker.io, started per test with its own
//! data root and socket, no bridge, host networking only) pulling a busybox image from a real
//! registry on 127.0.0.1.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::Fixture;
use kiln_actions::exec::docker::{remove_leftovers, DockerConfig, OWNER_LABEL};
use kiln_actions::exec::Outcome;
use kiln_oci::testing::{push_busybox, push_busybox_with_cmd, TestDockerd, TestRegistry};

struct Env {
    dockerd: TestDockerd,
    _registry: TestRegistry,
    /// `127.0.0.1:PORT/busybox:latest`
    busybox: String,
    registry_host: String,
    fixture: Fixture,
}

async fn setup(test: &str) -> Option<Env> {
    let dockerd = TestDockerd::start(test)?;
    if !std::path::Path::new("/bin/busybox").exists() {
        println!("SKIP {test}: /bin/busybox not installed (busybox-static)");
        return None;
    }
    let registry = TestRegistry::start()?;
    let busybox = format!("{}/busybox:latest", registry.host());
    push_busybox(&busybox, None).await;
    let mut fixture = Fixture::new();
    fixture.config.docker = Some(DockerConfig {
        host: dockerd.host(),
        network: "host".into(),
        owner: format!("kiln-test-{test}"),
        ..Default::default()
    });
    fixture.platforms = vec![("ubuntu-latest".into(), busybox.clone())];
    Some(Env {
        registry_host: registry.host(),
        dockerd,
        _registry: registry,
        busybox,
        fixture,
    })
}

impl Env {
    /// Names of the daemon's containers, running or not.
    fn containers(&self) -> Vec<String> {
        let list = self.dockerd.get("/containers/json?all=1").expect("list");
        let items: serde_json::Value = serde_json::from_str(&list).unwrap();
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Names"][0].as_str().unwrap_or("").to_string())
            .collect()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_job_runs_in_its_container_beside_a_healthy_service() {
    let Some(env) = setup("a_job_runs_in_its_container_beside_a_healthy_service").await else {
        return;
    };
    // The service: busybox httpd serving /etc on a loopback port (host network).
    let port = free_port();
    let web = format!("{}/web:1", env.registry_host);
    let listen = format!("127.0.0.1:{port}");
    push_busybox_with_cmd(&web, None, &["httpd", "-f", "-p", &listen, "-h", "/etc"]).await;
    std::fs::write(
        env.fixture.repo().join("from-host.txt"),
        "hello from the host\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    container:
      image: {busybox}
      env: {{ IN_CONTAINER: "yes" }}
    services:
      web:
        image: {web}
        options: >-
          --health-cmd "wget -q -O /dev/null http://{listen}/passwd"
          --health-interval 1s --health-retries 30
    steps:
      - id: probe
        run: |
          test ! -e /etc/debian_version && echo "no debian here: a busybox container"
          echo "env says $IN_CONTAINER, shell $0"
          cat from-host.txt
          wget -q -O - http://{listen}/passwd | head -1
          echo "made in the container" > from-container.txt
          echo "where=$PWD" >> "$GITHUB_OUTPUT"
          echo "LATER=from-env-file" >> "$GITHUB_ENV"
      - run: echo "next step sees $LATER and ${{{{ steps.probe.outputs.where }}}}"
"#,
        busybox = env.busybox
    );
    let run = env.fixture.run(&yaml).await;
    assert_eq!(run.result("test"), Outcome::Success, "{}", run.log());
    for needle in [
        "no debian here: a busybox container",
        "env says yes, shell",
        "hello from the host",
        "root:x:0:0:root",
        "Service `web` is healthy",
        "next step sees from-env-file and ",
        "Removing containers:",
    ] {
        assert!(run.has(needle), "missing `{needle}`:\n{}", run.log());
    }
    assert_eq!(
        std::fs::read_to_string(env.fixture.repo().join("from-container.txt")).unwrap(),
        "made in the container\n"
    );
    assert!(
        env.containers().is_empty(),
        "left behind: {:?}",
        env.containers()
    );
}

#[tokio::test]
async fn docker_actions_and_a_failing_container_step() {
    let Some(env) = setup("docker_actions_and_a_failing_container_step").await else {
        return;
    };
    let action_dir = env.fixture.repo().join(".github/actions/greet");
    std::fs::create_dir_all(&action_dir).unwrap();
    std::fs::write(
        action_dir.join("action.yml"),
        format!(
            r#"
name: greet
inputs:
  who: {{ default: nobody }}
outputs:
  greeting: {{ description: the greeting }}
runs:
  using: docker
  image: docker://{busybox}
  entrypoint: sh
  post-entrypoint: echo
  args: ["-c", "echo \"hello ${{{{ inputs.who }}}} in $PWD, home $HOME\"; echo greeting=hi-$INPUT_WHO >> $GITHUB_OUTPUT; ls /github/workspace"]
"#,
            busybox = env.busybox
        ),
    )
    .unwrap();
    std::fs::write(env.fixture.repo().join("marker.txt"), "x").unwrap();
    let yaml = format!(
        r#"
on: push
jobs:
  host:
    runs-on: self-hosted
    steps:
      - uses: docker://{busybox}
        with:
          args: sh -c "echo image action says $INPUT_WORD"
          word: moin
      - id: greet
        uses: ./.github/actions/greet
        with: {{ who: kiln }}
      - run: echo "output ${{{{ steps.greet.outputs.greeting }}}}"
  boxed:
    runs-on: ubuntu-latest
    steps:
      - run: echo before; exit 3
      - run: echo never
"#,
        busybox = env.busybox
    );
    let run = env.fixture.run(&yaml).await;
    assert_eq!(run.result("host"), Outcome::Success, "{}", run.log());
    for needle in [
        "host|image action says moin",
        "host|hello kiln in /github/workspace, home /github/home",
        "host|marker.txt",
        "host|output hi-kiln",
        // post-entrypoint: the same image and args, `echo` as the entrypoint.
        "host|::group::Post Run ./.github/actions/greet",
        "host|-c echo \"hello kiln in",
    ] {
        assert!(run.has(needle), "missing `{needle}`:\n{}", run.log());
    }
    assert_eq!(run.result("boxed"), Outcome::Failure, "{}", run.log());
    assert!(run.has("boxed|before"), "{}", run.log());
    assert!(
        run.has("boxed|##[error]Process completed with exit code 3."),
        "{}",
        run.log()
    );
    assert!(!run.has("boxed|never"), "{}", run.log());
    assert!(env.containers().is_empty(), "{:?}", env.containers());
}

#[tokio::test]
async fn a_missing_image_names_the_step() {
    let Some(env) = setup("a_missing_image_names_the_step").await else {
        return;
    };
    let missing = format!("{}/does-not-exist:1", env.registry_host);
    let yaml = format!(
        r#"
on: push
jobs:
  action:
    runs-on: self-hosted
    steps:
      - name: Use a missing image
        uses: docker://{missing}
  container:
    runs-on: self-hosted
    container: {missing}
    steps:
      - run: echo never
"#
    );
    let run = env.fixture.run(&yaml).await;
    assert_eq!(run.result("action"), Outcome::Failure);
    assert!(
        run.has(&format!(
            "action|##[error]Step `Use a missing image` uses the Docker image `{missing}`: cannot pull image `{missing}`"
        )),
        "{}",
        run.log()
    );
    assert_eq!(run.result("container"), Outcome::Failure);
    assert!(
        run.has(&format!(
            "container|##[error]job container: cannot pull image `{missing}`"
        )),
        "{}",
        run.log()
    );
    assert!(!run.has("never"));
}

#[tokio::test]
async fn cancellation_and_timeouts_stop_container_steps() {
    let Some(env) = setup("cancellation_and_timeouts_stop_container_steps").await else {
        return;
    };
    // A step timeout kills the step in the container; the job goes on.
    let yaml = r#"
on: push
jobs:
  slow:
    runs-on: ubuntu-latest
    steps:
      - timeout-minutes: 0.05
        continue-on-error: true
        run: sleep 300
      - run: echo "after the timeout"
"#;
    let run = env.fixture.run(yaml).await;
    assert_eq!(run.result("slow"), Outcome::Success, "{}", run.log());
    assert!(run.has("The action has timed out."), "{}", run.log());
    assert!(run.has("slow|after the timeout"), "{}", run.log());

    // Cancelling the job stops the step and removes its container.
    let cancel = env.fixture.cancel.clone();
    let watcher = {
        let host = env.dockerd.socket();
        tokio::spawn(async move {
            // Wait until the step runs in the job container, then cancel.
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let out = std::process::Command::new("pgrep")
                    .args(["-f", "sleep 301"])
                    .output()
                    .unwrap();
                if out.status.success() {
                    break;
                }
            }
            let _ = host;
            cancel.cancel();
        })
    };
    let started = std::time::Instant::now();
    let run = env
        .fixture
        .run(
            r#"
on: push
jobs:
  cancelled:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 301
"#,
        )
        .await;
    watcher.await.unwrap();
    assert_eq!(run.result("cancelled"), Outcome::Cancelled, "{}", run.log());
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    let survivors = std::process::Command::new("pgrep")
        .args(["-f", "sleep 301"])
        .output()
        .unwrap();
    assert!(!survivors.status.success(), "the step's process survived");
}

#[tokio::test]
async fn leftovers_of_a_crashed_runner_are_removed() {
    let Some(env) = setup("leftovers_of_a_crashed_runner_are_removed").await else {
        return;
    };
    let config = env.fixture.config.docker.clone().unwrap();
    // What a crash leaves: a labelled container (made with the real CLI-equivalent API).
    let docker = config.connect().await.unwrap();
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
    use futures::StreamExt;
    let mut pull = docker.create_image(
        Some(
            CreateImageOptionsBuilder::default()
                .from_image(&env.busybox)
                .build(),
        ),
        None,
        None,
    );
    while let Some(item) = pull.next().await {
        item.unwrap();
    }
    let labelled = |owner: &str| ContainerCreateBody {
        image: Some(env.busybox.clone()),
        cmd: Some(vec!["sleep".into(), "302".into()]),
        labels: Some([(OWNER_LABEL.to_string(), owner.to_string())].into()),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    for (name, owner) in [
        ("mine", config.owner.as_str()),
        ("theirs", "another-runner"),
    ] {
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                labelled(owner),
            )
            .await
            .unwrap();
        docker.start_container(&created.id, None).await.unwrap();
    }
    assert_eq!(remove_leftovers(&config).await.unwrap(), 1);
    assert_eq!(env.containers(), vec!["/theirs".to_string()]);
}

/// An image with busybox and the host's `node` (with the libraries `ldd` names), imported into the
/// daemon as `kiln-test-node:1`: JavaScript actions run on the container's own node.
async fn import_node_image(env: &Env) -> Option<String> {
    let node = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())?;
    let node = std::fs::canonicalize(node).ok()?;
    let ldd = std::process::Command::new("ldd").arg(&node).output().ok()?;
    let mut files = vec![node.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            files.push(path.into());
        }
    }
    let root = tempfile::tempdir().unwrap();
    kiln_oci::testing::busybox_rootfs(root.path());
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", root.path()).unwrap();
    for f in &files {
        let real = std::fs::canonicalize(f).ok()?;
        let rel = f.strip_prefix("/").unwrap();
        tar.append_path_with_name(&real, rel).ok()?;
    }
    tar.append_path_with_name(&node, "usr/local/bin/node")
        .ok()?;
    let tar = tar.into_inner().unwrap();
    let config = env.fixture.config.docker.clone().unwrap();
    let docker = config.connect().await.unwrap();
    use bollard::query_parameters::CreateImageOptionsBuilder;
    use futures::StreamExt;
    let mut import = docker.create_image(
        Some(
            CreateImageOptionsBuilder::default()
                .from_src("-")
                .repo("kiln-test-node")
                .tag("1")
                .changes(vec!["ENV PATH=/usr/local/bin:/usr/bin:/bin".to_string()])
                .build(),
        ),
        Some(bollard::body_full(tar.into())),
        None,
    );
    while let Some(item) = import.next().await {
        item.unwrap();
    }
    Some("kiln-test-node:1".into())
}

#[tokio::test]
async fn javascript_actions_run_on_the_job_containers_node() {
    let test = "javascript_actions_run_on_the_job_containers_node";
    let Some(env) = setup(test).await else {
        return;
    };
    let Some(image) = import_node_image(&env).await else {
        println!("SKIP {test}: no `node` on PATH to put in an image (install nodejs)");
        return;
    };
    let action = env.fixture.repo().join("js");
    std::fs::create_dir_all(&action).unwrap();
    std::fs::write(
        action.join("action.yml"),
        "name: js\ninputs:\n  who: { default: x }\nruns:\n  using: node20\n  main: main.js\n  post: post.js\n",
    )
    .unwrap();
    std::fs::write(
        action.join("main.js"),
        r#"const fs = require('fs');
console.log(`node ${process.version} greets ${process.env.INPUT_WHO}; debian=${fs.existsSync('/etc/debian_version')}`);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `seen=${process.env.INPUT_WHO}\n`);
fs.appendFileSync(process.env.GITHUB_STATE, `from_main=kept\n`);
"#,
    )
    .unwrap();
    std::fs::write(
        action.join("post.js"),
        "console.log(`post sees ${process.env.STATE_from_main}`);\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
on: push
jobs:
  js:
    runs-on: self-hosted
    container: {image}
    steps:
      - id: js
        uses: ./js
        with: {{ who: containers }}
      - run: echo "output ${{{{ steps.js.outputs.seen }}}}"
"#
    );
    let run = env.fixture.run(&yaml).await;
    assert_eq!(run.result("js"), Outcome::Success, "{}", run.log());
    for needle in [
        "greets containers; debian=false",
        "js|output containers",
        "js|post sees kept",
    ] {
        assert!(run.has(needle), "missing `{needle}`:\n{}", run.log());
    }
}

#[tokio::test]
async fn private_job_images_are_pulled_with_their_credentials() {
    let test = "private_job_images_are_pulled_with_their_credentials";
    let Some(mut env) = setup(test).await else {
        return;
    };
    let Some(private) = TestRegistry::start_with_basic_auth("puller", "pull-s3cret") else {
        return;
    };
    let image = format!("{}/private/busybox:1", private.host());
    push_busybox(&image, Some(("puller", "pull-s3cret"))).await;
    env.fixture
        .secrets
        .insert("REG_PASSWORD".into(), "pull-s3cret".into());
    let workflow = |password: &str| {
        format!(
            r#"
on: push
jobs:
  private:
    runs-on: self-hosted
    container:
      image: {image}
      credentials:
        username: puller
        password: {password}
    steps:
      - run: echo "pulled with credentials"
"#
        )
    };
    let run = env
        .fixture
        .run(&workflow("${{ secrets.REG_PASSWORD }}"))
        .await;
    assert_eq!(run.result("private"), Outcome::Success, "{}", run.log());
    assert!(run.has("private|pulled with credentials"), "{}", run.log());
    assert!(!run.log().contains("pull-s3cret"), "{}", run.log());

    // The daemon has the image now; force_pull makes it ask the registry again.
    env.fixture.config.docker.as_mut().unwrap().force_pull = true;
    let run = env.fixture.run(&workflow("wrong")).await;
    assert_eq!(run.result("private"), Outcome::Failure, "{}", run.log());
    assert!(
        run.has(&format!(
            "##[error]job container: cannot pull image `{image}`"
        )),
        "{}",
        run.log()
    );
}

#[tokio::test]
async fn dockerfile_actions_without_an_engine_use_the_daemons_builder() {
    let test = "dockerfile_actions_without_an_engine_use_the_daemons_builder";
    let Some(env) = setup(test).await else {
        return;
    };
    let action = env.fixture.repo().join("hello");
    std::fs::create_dir_all(&action).unwrap();
    std::fs::write(
        action.join("action.yml"),
        "name: hello\nruns:\n  using: docker\n  image: Dockerfile\n",
    )
    .unwrap();
    std::fs::write(
        action.join("Dockerfile"),
        format!(
            "FROM {}\nCOPY say.sh /say.sh\nENTRYPOINT [\"sh\", \"/say.sh\"]\n",
            env.busybox
        ),
    )
    .unwrap();
    let yaml =
        "on: push\njobs:\n  j:\n    runs-on: self-hosted\n    steps:\n      - uses: ./hello\n";
    let action_images = || {
        let list = env.dockerd.get("/images/json").unwrap();
        let items: serde_json::Value = serde_json::from_str(&list).unwrap();
        items
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| {
                // The action's images: built from the busybox base, not the base itself.
                !i["RepoTags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(env.busybox.as_str())))
            })
            .count()
    };
    for word in ["first", "second"] {
        std::fs::write(action.join("say.sh"), format!("echo {word} build\n")).unwrap();
        let run = env.fixture.run(yaml).await;
        assert_eq!(run.result("j"), Outcome::Success, "{}", run.log());
        assert!(run.has(&format!("j|{word} build")), "{}", run.log());
    }
    // The rebuilt local action replaced its image instead of leaving the old one behind.
    assert_eq!(action_images(), 1);
}
