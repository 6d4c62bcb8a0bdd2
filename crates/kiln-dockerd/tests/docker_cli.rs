//! The real docker CLI (legacy builder) against kiln's Docker API: what CI jobs run.

mod common;

use common::{docker_cli, setup, setup_with};
use kiln_oci::testing::TestRegistry;

#[test]
fn docker_cli_builds_tags_pushes_and_removes_images() {
    let test = "docker_cli_builds_tags_pushes_and_removes_images";
    let Some(docker) = docker_cli(test) else {
        return;
    };
    let Some(env) = setup(test) else {
        return;
    };
    env.push_busybox(&env.base, None);
    let d = |args: &[&str]| env.docker(&docker, args, None);

    let version = d(&[
        "version",
        "--format",
        "{{.Client.Version}} {{.Server.Version}} {{.Server.APIVersion}}",
    ]);
    version.assert_ok();
    println!("docker CLI against kiln: {}", version.stdout().trim());
    assert!(version.stdout().contains("kiln-"), "{}", version.stdout());
    d(&["info"]).assert_ok();

    let ctx = env.context(
        "app",
        &[
            (
                "Dockerfile",
                "FROM $BASE\nRUN echo built-by-run > /run.txt\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n",
            ),
            ("hello.txt", "hello from the context\n"),
            (".dockerignore", "secret.txt\n"),
            ("secret.txt", "not sent\n"),
        ],
    );
    let name = env.image("x:1");
    let build = d(&["build", "-t", &name, ctx.to_str().unwrap()]);
    build.assert_ok();
    let out = build.stdout();
    println!("--- docker build output ---\n{out}{}", build.stderr());
    assert!(out.contains("Step 1/3 : FROM"), "{out}");
    assert!(out.contains("Step 2/3 : RUN echo built-by-run"), "{out}");
    assert!(out.contains("Successfully built "), "{out}");
    assert!(
        out.contains(&format!("Successfully tagged {name}")),
        "{out}"
    );

    // Quiet builds print only the image ID (and hit the cache).
    let quiet = d(&["build", "-q", "-t", &name, ctx.to_str().unwrap()]);
    quiet.assert_ok();
    let id = quiet.stdout().trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");

    let images = d(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    images.assert_ok();
    assert!(
        images.stdout().contains(&format!("{name} {}", &id[7..19])),
        "{}",
        images.stdout()
    );
    let inspect = d(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        &name,
    ]);
    inspect.assert_ok();
    assert_eq!(inspect.stdout().trim(), r#"["cat","/hello.txt"]"#);

    let other = env.image("x:pushed");
    d(&["tag", &name, &other]).assert_ok();
    let push = d(&["push", &other]);
    push.assert_ok();
    println!("--- docker push output ---\n{}", push.stdout());
    let (manifest, _) = env.registry_manifest(&other);
    let digest = kiln_oci::Digest::sha256(&manifest).to_string();
    assert!(
        push.stdout().contains(&format!(
            "pushed: digest: {digest} size: {}",
            manifest.len()
        )),
        "{}",
        push.stdout()
    );
    let inspect = d(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &other,
    ]);
    assert!(inspect.stdout().contains(&digest), "{}", inspect.stdout());

    // save → rmi → load round trip.
    let archive = env.dir.path().join("x.tar");
    d(&["save", "-o", archive.to_str().unwrap(), &name]).assert_ok();
    let rmi = d(&["rmi", &name, &other]);
    rmi.assert_ok();
    assert!(
        rmi.stdout().contains(&format!("Untagged: {name}")),
        "{}",
        rmi.stdout()
    );
    assert!(
        rmi.stdout().contains(&format!("Deleted: {id}")),
        "{}",
        rmi.stdout()
    );
    d(&["image", "inspect", &name]).assert_err_contains("No such image");
    let load = d(&["load", "-i", archive.to_str().unwrap()]);
    load.assert_ok();
    assert!(
        load.stdout().contains(&format!("Loaded image: {name}")),
        "{}",
        load.stdout()
    );
    let inspect = d(&["image", "inspect", "--format", "{{.Id}}", &name]);
    assert_eq!(inspect.stdout().trim(), id, "a loaded image keeps its ID");

    // A Dockerfile outside the context: the CLI sends it inside the context tar.
    let elsewhere = env.context(
        "elsewhere",
        &[(
            "Build.dockerfile",
            "FROM $BASE\nCOPY hello.txt /copied.txt\n",
        )],
    );
    let other_df = elsewhere.join("Build.dockerfile");
    d(&[
        "build",
        "-f",
        other_df.to_str().unwrap(),
        "-t",
        &env.image("f:1"),
        ctx.to_str().unwrap(),
    ])
    .assert_ok();
    d(&["history", &env.image("f:1")]).assert_ok();

    // A failing step fails the CLI with the step's error.
    let bad = env.context("bad", &[("Dockerfile", "FROM $BASE\nRUN exit 3\n")]);
    let failed = d(&["build", "-t", &env.image("bad:1"), bad.to_str().unwrap()]);
    println!(
        "--- failed build ---\n{}{}",
        failed.stdout(),
        failed.stderr()
    );
    failed.assert_err_contains("exit 3");

    d(&["run", "--rm", &name]).assert_err_contains(
        "kiln: containers are not supported by this Docker API; only build, image and login calls are",
    );
    d(&["ps"]).assert_err_contains("containers are not supported");
}

#[test]
fn docker_login_checks_credentials_against_the_registry() {
    let test = "docker_login_checks_credentials_against_the_registry";
    let Some(docker) = docker_cli(test) else {
        return;
    };
    let Some(env) = setup_with(test, || TestRegistry::start_with_basic_auth("ci", "s3cret")) else {
        return;
    };
    let host = env.registry.host();
    let login = |password: &str| {
        env.docker(
            &docker,
            &["login", &host, "-u", "ci", "--password-stdin"],
            Some(password),
        )
    };
    login("wrong").assert_err_contains("incorrect username or password");
    let ok = login("s3cret");
    ok.assert_ok();
    assert!(ok.stdout().contains("Login Succeeded"), "{}", ok.stdout());

    // The stored login is what the CLI sends with builds (base image pull) and pushes.
    env.push_busybox(&env.base, Some(("ci", "s3cret")));
    let ctx = env.context("auth", &[("Dockerfile", "FROM $BASE\nRUN echo hi > /hi\n")]);
    let name = env.image("private/app:1");
    env.docker(
        &docker,
        &["build", "-t", &name, ctx.to_str().unwrap()],
        None,
    )
    .assert_ok();
    env.docker(&docker, &["push", &name], None).assert_ok();
    env.docker(&docker, &["logout", &host], None).assert_ok();
    env.docker(&docker, &["push", &name], None)
        .assert_err_contains("denied");
}

/// With a real daemon to forward to, `docker run` through kiln's socket runs a container there
/// (the attach stream is relayed), while `docker build` and `docker images` stay kiln's.
#[test]
fn container_calls_are_forwarded_to_a_configured_daemon() {
    let test = "container_calls_are_forwarded_to_a_configured_daemon";
    let Some(docker) = docker_cli(test) else {
        return;
    };
    let Some(env) = setup(test) else {
        return;
    };
    let Some(dockerd) = kiln_oci::testing::TestDockerd::start(test) else {
        return;
    };
    env.push_busybox(&env.base, None);
    let d = |args: &[&str]| env.docker(&docker, args, None);

    // Without forwarding, containers are refused clearly.
    let refused = d(&["run", "--rm", "--network", "host", &env.base, "true"]);
    assert!(!refused.ok());
    assert!(
        refused.stderr().contains("not supported") || refused.stderr().contains("docker pull"),
        "{}",
        refused.stderr()
    );

    env.api.set_forward(dockerd.socket());
    let run = d(&[
        "run",
        "--rm",
        "--network",
        "host",
        &env.base,
        "sh",
        "-c",
        "echo hello from a forwarded container; test ! -e /etc/debian_version",
    ]);
    run.assert_ok();
    assert!(
        run.stdout().contains("hello from a forwarded container"),
        "{}\n{}",
        run.stdout(),
        run.stderr()
    );
    let exit = d(&[
        "run",
        "--rm",
        "--network",
        "host",
        &env.base,
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(exit.0.status.code(), Some(4), "{}", exit.stderr());
    let ps = d(&["ps", "-a", "--format", "{{.Image}}"]);
    ps.assert_ok();

    // Builds still go to kiln's engine and store.
    let ctx = env.context(
        "fwd",
        &[("Dockerfile", "FROM $BASE\nRUN echo built > /b\n")],
    );
    d(&["build", "-t", "kiln-built:1", ctx.to_str().unwrap()]).assert_ok();
    let images = d(&["images", "--format", "{{.Repository}}"]);
    assert!(
        images.stdout().contains("kiln-built"),
        "{}",
        images.stdout()
    );
    let theirs = dockerd.get("/images/json").unwrap();
    assert!(!theirs.contains("kiln-built"), "{theirs}");
}
