//! End-to-end builds with the real `kiln` binary, a real Distribution registry and runc.

mod common;

use common::{rt, setup};
use std::fs;

#[test]
fn build_covers_each_instruction_and_pushes_the_image() {
    let Some(env) = setup("build_covers_each_instruction_and_pushes_the_image") else {
        return;
    };
    let ctx = env.context(
        "all",
        &[
            (
                "Dockerfile",
                r#"# syntax=docker/dockerfile:1
ARG BASE=$BASE
FROM ${BASE} AS base
ARG GREETING=hello
ENV APP_HOME=/srv/app \
    MODE=test
LABEL org.example.team="platform" version=1
WORKDIR $APP_HOME
COPY files/ ./files/
COPY --chmod=755 run.sh /usr/local/bin/run.sh
ADD archive.tar /opt/unpacked/
RUN echo "$GREETING from $(pwd)" > greeting && test "$MODE" = test
RUN --mount=type=cache,target=/cache echo cached > /cache/x && cat /cache/x > from-cache
USER user
RUN id -u > /tmp/uid-file && cp /tmp/uid-file /home/user/uid
USER root
EXPOSE 8080/tcp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s CMD true
SHELL ["/bin/sh", "-c"]
ENTRYPOINT ["/usr/local/bin/run.sh"]
CMD ["serve"]
"#,
            ),
            ("files/a.txt", "A"),
            ("files/sub/b.txt", "B"),
            ("run.sh", "#!/bin/sh\necho run\n"),
        ],
    );
    // A tar archive for ADD to unpack.
    let tar_path = ctx.join("archive.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "inside.txt", &b"tared"[..]).unwrap();
        b.finish().unwrap();
    }
    let name = env.image("all:1");
    let (run, meta) = env.build(
        &ctx,
        &[
            "-t",
            &name,
            "--push",
            "--build-arg",
            &format!("BASE={}", env.base),
        ],
    );
    run.assert_ok();
    let digest = meta.expect("metadata")["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(digest.starts_with("sha256:"));

    let config = env.config_of(&name);
    let c = &config["config"];
    let env_list: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env_list.contains(&"APP_HOME=/srv/app"), "{env_list:?}");
    assert!(env_list.contains(&"MODE=test"));
    assert!(
        !env_list.iter().any(|e| e.starts_with("GREETING")),
        "ARG must not persist: {env_list:?}"
    );
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["Labels"]["org.example.team"], "platform");
    assert_eq!(c["Labels"]["version"], "1");
    assert_eq!(c["User"], "root");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert!(c["Volumes"]["/data"].is_object());
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/run.sh"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
    assert!(c["Healthcheck"]["Test"].is_array());
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap().len();
    let history_layers = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(
        diff_ids, history_layers,
        "history must match layers: {config}"
    );

    let rootfs = env.rootfs_of(&name);
    let r = rootfs.path();
    assert_eq!(
        fs::read_to_string(r.join("srv/app/greeting")).unwrap(),
        "hello from /srv/app\n"
    );
    assert_eq!(
        fs::read_to_string(r.join("srv/app/files/a.txt")).unwrap(),
        "A"
    );
    assert_eq!(
        fs::read_to_string(r.join("srv/app/files/sub/b.txt")).unwrap(),
        "B"
    );
    assert_eq!(
        fs::read_to_string(r.join("srv/app/from-cache")).unwrap(),
        "cached\n"
    );
    assert_eq!(
        fs::read_to_string(r.join("opt/unpacked/inside.txt")).unwrap(),
        "tared"
    );
    assert_eq!(
        fs::read_to_string(r.join("home/user/uid")).unwrap(),
        "1000\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(r.join("usr/local/bin/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // Injected files and mount stubs are not part of the image; the cache mount isn't either.
    assert!(!r.join("cache").join("x").exists());
    let hosts = r.join("etc/hosts");
    assert!(
        !hosts.exists()
            || fs::metadata(&hosts).unwrap().len() == 0
            || !fs::read_to_string(&hosts)
                .unwrap()
                .contains("buildkitsandbox")
    );
}

#[test]
fn identical_rebuild_is_fully_cached_with_the_same_digest() {
    let Some(env) = setup("identical_rebuild_is_fully_cached_with_the_same_digest") else {
        return;
    };
    let ctx = env.context(
        "cached",
        &[
            (
                "Dockerfile",
                "FROM $BASE\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n",
            ),
            ("a.txt", "content"),
        ],
    );
    let name = env.image("cached:1");
    let (first, m1) = env.build(&ctx, &["-t", &name, "--push"]);
    first.assert_ok();
    assert!(first.ran("RUN cat /a.txt"), "{}", first.stderr());
    // A new process: the cache survives the restart.
    let (second, m2) = env.build(&ctx, &["-t", &name, "--push"]);
    second.assert_ok();
    assert!(second.cached("RUN cat /a.txt"), "{}", second.stderr());
    assert!(second.cached("COPY a.txt"), "{}", second.stderr());
    assert_eq!(
        m1.unwrap()["containerimage.digest"],
        m2.unwrap()["containerimage.digest"],
        "a fully cached build yields the same image"
    );
}

#[test]
fn one_changed_file_reruns_only_what_depends_on_it() {
    let Some(env) = setup("one_changed_file_reruns_only_what_depends_on_it") else {
        return;
    };
    let ctx = env.context(
        "edit",
        &[
            (
                "Dockerfile",
                "FROM $BASE\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a.out\nCOPY b.txt /b.txt\nRUN cat /b.txt > /b.out\n",
            ),
            ("a.txt", "a1"),
            ("b.txt", "b1"),
        ],
    );
    env.build(&ctx, &[]).0.assert_ok();
    fs::write(ctx.join("b.txt"), "b2").unwrap();
    let (run, _) = env.build(&ctx, &["-o", env.work.path().join("out").to_str().unwrap()]);
    run.assert_ok();
    assert!(run.cached("COPY a.txt"), "{}", run.stderr());
    assert!(run.cached("RUN cat /a.txt"), "{}", run.stderr());
    assert!(run.ran("RUN cat /b.txt"), "{}", run.stderr());
    assert_eq!(
        fs::read_to_string(env.work.path().join("out/b.out")).unwrap(),
        "b2"
    );
}

#[test]
fn only_stages_the_target_needs_are_built() {
    let Some(env) = setup("only_stages_the_target_needs_are_built") else {
        return;
    };
    let ctx = env.context(
        "stages",
        &[(
            "Dockerfile",
            "FROM $BASE AS builder\nRUN echo built > /artifact\n\
             FROM $BASE AS unused\nRUN exit 1\n\
             FROM $BASE\nCOPY --from=builder /artifact /artifact\n",
        )],
    );
    let out = env.work.path().join("stages-out");
    let (run, _) = env.build(&ctx, &["-o", out.to_str().unwrap()]);
    run.assert_ok();
    assert_eq!(fs::read_to_string(out.join("artifact")).unwrap(), "built\n");
    assert!(!run.stderr().contains("exit 1"));
}

#[test]
fn failing_run_reports_the_command_and_exit_code() {
    let Some(env) = setup("failing_run_reports_the_command_and_exit_code") else {
        return;
    };
    let ctx = env.context(
        "fail",
        &[(
            "Dockerfile",
            "FROM $BASE\nRUN echo about to fail && exit 3\n",
        )],
    );
    let (run, _) = env.build(&ctx, &["-t", &env.image("fail:1"), "--push"]);
    run.assert_err_contains(r#"process "/bin/sh -c echo about to fail && exit 3" did not complete successfully: exit code: 3"#);
    assert!(
        run.stderr().contains("about to fail"),
        "the step's output is shown"
    );
    assert!(
        run.stderr().contains("Dockerfile:2"),
        "the failing line is named:\n{}",
        run.stderr()
    );
    assert!(
        run.stderr()
            .contains("   2 | >>> RUN echo about to fail && exit 3"),
        "{}",
        run.stderr()
    );
}

#[test]
fn bad_dockerfiles_name_file_and_line() {
    let Some(env) = setup("bad_dockerfiles_name_file_and_line") else {
        return;
    };
    let ctx = env.context("bad", &[("Dockerfile", "FROM $BASE\n\nRUNN echo hi\n")]);
    env.build(&ctx, &[]).0.assert_err_contains("Dockerfile:3");
    let custom = env.context(
        "custom-frontend",
        &[(
            "Dockerfile",
            "# syntax=example.com/frontend:1\nFROM $BASE\n",
        )],
    );
    env.build(&custom, &[])
        .0
        .assert_err_contains("Dockerfile:1: custom frontend");
    let builtin = env.context(
        "builtin-frontend",
        &[(
            "Dockerfile",
            "# syntax=docker/dockerfile:1.7\nFROM $BASE\nRUN true\n",
        )],
    );
    env.build(&builtin, &[]).0.assert_ok();
}

#[test]
fn copy_outside_the_context_is_refused() {
    let Some(env) = setup("copy_outside_the_context_is_refused") else {
        return;
    };
    let ctx = env.context(
        "outside",
        &[("Dockerfile", "FROM $BASE\nCOPY ../secret.txt /x\n")],
    );
    fs::write(env.work.path().join("secret.txt"), "do not copy").unwrap();
    let (run, _) = env.build(&ctx, &["-o", env.work.path().join("o1").to_str().unwrap()]);
    run.assert_err_contains("not found");
    assert!(!env.work.path().join("o1/x").exists());

    let ctx2 = env.context(
        "symlink-out",
        &[("Dockerfile", "FROM $BASE\nCOPY link /x\n")],
    );
    std::os::unix::fs::symlink(env.work.path().join("secret.txt"), ctx2.join("link")).unwrap();
    let (run, _) = env.build(&ctx2, &["-o", env.work.path().join("o2").to_str().unwrap()]);
    run.assert_err_contains("not found");
}

#[test]
fn missing_base_image_is_a_clear_error() {
    let Some(env) = setup("missing_base_image_is_a_clear_error") else {
        return;
    };
    let missing = env.image("does-not-exist:1");
    let ctx = env.context(
        "missing",
        &[("Dockerfile", &format!("FROM {missing}\nRUN true\n"))],
    );
    env.build(&ctx, &[]).0.assert_err_contains("does-not-exist");
}

#[test]
fn oci_and_docker_tars_hold_the_image() {
    let Some(env) = setup("oci_and_docker_tars_hold_the_image") else {
        return;
    };
    let ctx = env.context("tars", &[("Dockerfile", "FROM $BASE\nRUN echo x > /x\n")]);
    let oci = env.work.path().join("img.oci.tar");
    let docker = env.work.path().join("img.docker.tar");
    let (run, _) = env.build(
        &ctx,
        &[
            "-t",
            "example.test/app:v1",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "-o",
            &format!("type=docker,dest={}", docker.display()),
        ],
    );
    run.assert_ok();
    let names = |p: &std::path::Path| -> Vec<String> {
        tar::Archive::new(fs::File::open(p).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let o = names(&oci);
    assert!(
        o.contains(&"oci-layout".to_string()) && o.contains(&"index.json".to_string()),
        "{o:?}"
    );
    let d = names(&docker);
    assert!(d.contains(&"manifest.json".to_string()), "{d:?}");
    let mut a = tar::Archive::new(fs::File::open(&docker).unwrap());
    let mut manifest = String::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "manifest.json" {
            use std::io::Read;
            e.read_to_string(&mut manifest).unwrap();
        }
    }
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m[0]["RepoTags"][0], "example.test/app:v1");
    assert_eq!(m[0]["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn pushed_image_is_readable_with_skopeo() {
    let Some(env) = setup("pushed_image_is_readable_with_skopeo") else {
        return;
    };
    if !std::path::Path::new("/usr/bin/skopeo").exists() {
        println!("SKIP pushed_image_is_readable_with_skopeo: skopeo not installed");
        return;
    }
    let ctx = env.context(
        "skopeo",
        &[(
            "Dockerfile",
            "FROM $BASE\nLABEL checked=by-skopeo\nRUN touch /marker\n",
        )],
    );
    let name = env.image("skopeo:1");
    env.build(&ctx, &["-t", &name, "--push"]).0.assert_ok();
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{name}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Labels"]["checked"], "by-skopeo");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn du_and_prune_manage_the_cache() {
    let Some(env) = setup("du_and_prune_manage_the_cache") else {
        return;
    };
    let ctx = env.context("prune", &[("Dockerfile", "FROM $BASE\nRUN echo x > /x\n")]);
    env.build(&ctx, &[]).0.assert_ok();
    let du = env.kiln(&["du"]);
    du.assert_ok();
    assert!(!du.stdout().contains("Records:\t0"), "{}", du.stdout());
    env.kiln(&["prune", "--all"]).assert_ok();
    let du = env.kiln(&["du"]);
    assert!(du.stdout().contains("Records:\t0"), "{}", du.stdout());
    // And the next build works again from an empty cache.
    let (run, _) = env.build(&ctx, &[]);
    run.assert_ok();
    assert!(run.ran("RUN echo x"));
}

/// Every file under `dir` with its content (symlinks as their targets), for comparing trees.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type();
            let what = if ft.is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else if ft.is_dir() {
                "dir".to_string()
            } else {
                fs::read_to_string(e.path()).unwrap_or_else(|_| "<binary>".into())
            };
            (rel, what)
        })
        .collect()
}

#[test]
fn copying_snapshotter_builds_the_same_filesystem_as_overlayfs() {
    let Some(env) = setup("copying_snapshotter_builds_the_same_filesystem_as_overlayfs") else {
        return;
    };
    let ctx = env.context(
        "native",
        &[
            (
                "Dockerfile",
                "FROM $BASE\n\
                 RUN rm /bin/vi && mkdir -p /d/sub && echo 1 > /d/f && echo keep > /d/sub/k\n\
                 RUN rm -r /d && mkdir /d && echo 2 > /d/g && chmod 700 /etc\n\
                 COPY x /d/x\n\
                 RUN echo more >> /d/x && ln -s /d/g /link\n",
            ),
            ("x", "x"),
        ],
    );
    let native_config = env.work.path().join("native.toml");
    fs::write(&native_config, "snapshotter = \"native\"\n").unwrap();
    let native_root = env.work.path().join("native-root");
    let out_overlay = env.work.path().join("out-overlay");
    let out_native = env.work.path().join("out-native");

    env.build(&ctx, &["-o", out_overlay.to_str().unwrap()])
        .0
        .assert_ok();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "--config",
            native_config.to_str().unwrap(),
            "--root",
            native_root.to_str().unwrap(),
        ])
        .args([
            "build",
            "--progress",
            "plain",
            "-o",
            out_native.to_str().unwrap(),
        ])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let name = env.image("native:1");
    let push = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "--config",
            native_config.to_str().unwrap(),
            "--root",
            native_root.to_str().unwrap(),
        ])
        .args(["build", "--progress", "plain", "-t", &name, "--push"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let pulled = env.rootfs_of(&name);

    let (a, b) = (tree(&out_overlay), tree(&out_native));
    assert_eq!(
        a,
        tree(pulled.path()),
        "the pushed layers unpack to the same filesystem"
    );
    assert_eq!(a, b, "both snapshotters give the same filesystem");
    assert!(!a.contains_key("bin/vi"));
    assert!(!a.contains_key("d/f") && !a.contains_key("d/sub/k"));
    assert_eq!(a["d/g"], "2\n");
    assert_eq!(a["d/x"], "xmore\n");
    assert_eq!(a["link"], "-> /d/g");
}

/// Whether overlayfs mounts here (else kiln uses its copying snapshotter).
fn overlay_works(dir: &std::path::Path) -> bool {
    for d in ["lower", "upper", "work", "m"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let opts = format!(
        "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
        dir.display()
    );
    let mounted = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(dir.join("m"))
        .output()
        .is_ok_and(|o| o.status.success());
    if mounted {
        let _ = std::process::Command::new("umount")
            .arg(dir.join("m"))
            .status();
    } else {
        println!("overlayfs does not mount here: kiln copies instead of linking");
    }
    mounted
}

#[test]
fn copies_share_unchanged_files_with_their_source_layer() {
    use std::os::unix::fs::MetadataExt;
    let Some(env) = setup("copies_share_unchanged_files_with_their_source_layer") else {
        return;
    };
    let ctx = env.context(
        "links",
        &[
            (
                "Dockerfile",
                "FROM $BASE\n\
                 COPY tree /tree\n\
                 COPY --chmod=600 tree/a /chmod-a\n\
                 COPY --chown=1000:1000 tree/a /chown-a\n\
                 COPY tree/a other/a /dup/\n\
                 COPY tree/a /bin/\n\
                 RUN echo changed >> /tree/a && cat /dup/a\n",
            ),
            ("tree/a", "a\n"),
            ("tree/sub/b", "b\n"),
            ("other/a", "other a\n"),
        ],
    );
    let out = env.work.path().join("out");
    let (run, _) = env.build(&ctx, &["-o", out.to_str().unwrap()]);
    run.assert_ok();
    assert!(run.stderr().contains("other a"), "{}", run.stderr());

    // What the image holds is what copies would have made.
    let read = |p: &str| fs::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("tree/a"), "a\nchanged\n");
    assert_eq!(read("tree/sub/b"), "b\n");
    assert_eq!(read("dup/a"), "other a\n", "the later source wins");
    assert_eq!(read("bin/a"), "a\n");
    let meta = |p: &str| fs::symlink_metadata(out.join(p)).unwrap();
    assert_eq!(meta("chmod-a").mode() & 0o7777, 0o600);
    assert_eq!(meta("tree/a").mode() & 0o7777, 0o644);

    // The layers on disk: the RUN did not write through to the layers it started from, and
    // (on overlayfs) `COPY tree /tree` shares its files with the context's layer.
    let files_named = |name: &str| -> Vec<(std::path::PathBuf, fs::Metadata)> {
        walkdir::WalkDir::new(env.root.path().join("l"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && e.file_name() == name)
            .map(|e| (e.path().to_path_buf(), e.metadata().unwrap()))
            .collect()
    };
    let copies_of_a = files_named("a");
    let changed: Vec<_> = copies_of_a
        .iter()
        .filter(|(p, _)| fs::read_to_string(p).unwrap() == "a\nchanged\n")
        .collect();
    assert_eq!(changed.len(), 1, "only the RUN layer has the change");
    assert_eq!(changed[0].1.nlink(), 1);
    let chown_a = files_named("chown-a").pop().expect("chown-a in a layer");
    assert_eq!(
        (chown_a.1.uid(), chown_a.1.gid(), chown_a.1.nlink()),
        (1000, 1000, 1)
    );
    if overlay_works(&env.work.path().join("probe")) {
        let b = files_named("b");
        assert!(
            b.iter().all(|(_, m)| m.ino() == b[0].1.ino()) && b.len() >= 2,
            "tree/sub/b is one inode in the context layer and the COPY layer: {b:?}"
        );
    }

    // Shared inodes do not turn into hard links in the pushed layers.
    let name = env.image("links:1");
    env.build(&ctx, &["-t", &name, "--push"]).0.assert_ok();
    assert_eq!(tree(env.rootfs_of(&name).path()), tree(&out));
}

#[test]
fn build_contexts_stand_in_for_images_and_stages() {
    let Some(env) = setup("build_contexts_stand_in_for_images_and_stages") else {
        return;
    };
    let ctx = env.context(
        "named",
        &[(
            "Dockerfile",
            "FROM golang:1.22 AS tools\n\
             RUN exit 3\n\
             FROM alpine\n\
             COPY --from=tools /tool.sh /usr/local/bin/tool.sh\n\
             RUN sh /usr/local/bin/tool.sh > /out.txt\n",
        )],
    );
    let tools = env.context("tools", &[("tool.sh", "echo from the tools context\n")]);
    let out = env.work.path().join("out");
    let alpine = format!("alpine=docker-image://{}", env.base);
    let tools_arg = format!("tools={}", tools.display());
    let (run, _) = env.build(
        &ctx,
        &[
            "--build-context",
            &alpine,
            "--build-context",
            &tools_arg,
            "-o",
            out.to_str().unwrap(),
        ],
    );
    run.assert_ok();
    assert_eq!(
        fs::read_to_string(out.join("out.txt")).unwrap(),
        "from the tools context\n"
    );
    env.build(&ctx, &["--build-context", "tools=/no/such/dir"])
        .0
        .assert_err_contains("--build-context tools=/no/such/dir: not a directory");
    env.build(&ctx, &["--build-context", "context=/tmp"])
        .0
        .assert_err_contains("reserved");
}

#[test]
fn push_to_a_registry_with_auth_uses_docker_config_credentials() {
    let Some(env) = setup("push_to_a_registry_with_auth_uses_docker_config_credentials") else {
        return;
    };
    let Some(private) = kiln_oci::testing::TestRegistry::start_with_basic_auth("ci", "hunter2")
    else {
        return;
    };
    let ctx = env.context(
        "auth",
        &[("Dockerfile", "FROM $BASE\nRUN echo private > /p\n")],
    );
    let name = format!("{}/team/app:1", private.host());

    // No credentials: a clear refusal naming the image, and the password never shows up.
    let (run, _) = env.build(&ctx, &["-t", &name, "--push"]);
    run.assert_err_contains(&format!("{}/team/app", private.host()));

    let config_dir = env.work.path().join("docker-config");
    fs::create_dir_all(&config_dir).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("ci:hunter2");
    fs::write(
        config_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            private.host()
        ),
    )
    .unwrap();
    let (run, meta) = env.build(&ctx, &["-t", &name, "--push"]);
    run.assert_ok();
    assert!(!run.stderr().contains("hunter2"));
    let digest = meta.unwrap()["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    let client = kiln_oci::RegistryClient::new(
        Default::default(),
        std::sync::Arc::new(kiln_oci::StaticCredentials::default().with(
            &private.host(),
            kiln_oci::Credentials {
                username: "ci".into(),
                password: "hunter2".into(),
            },
        )),
    );
    let (_, _, pushed) = common::rt()
        .block_on(client.get_manifest(&kiln_oci::Reference::parse(&name).unwrap()))
        .unwrap();
    assert_eq!(pushed.to_string(), digest);
}

#[test]
fn secrets_reach_the_step_but_not_the_image_or_the_log() {
    let Some(env) = setup("secrets_reach_the_step_but_not_the_image_or_the_log") else {
        return;
    };
    let ctx = env.context(
        "secret",
        &[(
            "Dockerfile",
            "FROM $BASE\n\
             RUN --mount=type=secret,id=token,required=true test \"$(md5sum < /run/secrets/token | cut -c1-32)\" = e74a7345b906b2dd50c8e026a10bc02f && echo checked > /ok\n\
             RUN --mount=type=secret,id=token,env=TOKEN test \"$(printf %s \"$TOKEN\" | md5sum | cut -c1-32)\" = e74a7345b906b2dd50c8e026a10bc02f\n",
        )],
    );
    let secret = env.work.path().join("token.txt");
    fs::write(&secret, "s3cr3t-value").unwrap();
    let oci = env.work.path().join("secret.oci.tar");
    let (run, _) = env.build(
        &ctx,
        &[
            "--secret",
            &format!("id=token,src={}", secret.display()),
            "-o",
            &format!("type=oci,dest={}", oci.display()),
        ],
    );
    run.assert_ok();
    assert!(!run.stderr().contains("s3cr3t-value"));
    // Unpack every blob of the image: the secret is in no layer, config or history.
    let mut a = tar::Archive::new(fs::File::open(&oci).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        use std::io::Read;
        e.read_to_end(&mut data).unwrap();
        let mut plain = Vec::new();
        if data.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(&data[..])
                .read_to_end(&mut plain)
                .unwrap();
        } else {
            plain = data;
        }
        let text = String::from_utf8_lossy(&plain);
        assert!(
            !text.contains("s3cr3t-value"),
            "secret leaked into {:?}",
            e.path().unwrap()
        );
        // Layers: no mount point for the secret was left behind either.
        if let Ok(entries) = tar::Archive::new(&plain[..]).entries() {
            for entry in entries.flatten() {
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                assert!(
                    !path.starts_with("run/secrets"),
                    "mount stub {path} in a layer"
                );
            }
        }
    }
    // Without the secret the step fails with a clear message.
    let (run, _) = env.build(&ctx, &["--no-cache"]);
    run.assert_err_contains("secret token");
}

#[test]
fn add_unpacks_bzip2_and_xz_archives() {
    let Some(env) = common::setup("add_unpacks_bzip2_and_xz_archives") else {
        return;
    };
    let ctx = env.context(
        "compressed",
        &[(
            "Dockerfile",
            "FROM scratch\nADD a.tar.bz2 /bz/\nADD b.tar.xz /xz/\nADD notes.bz2.txt /plain/\n",
        )],
    );
    let tar_of = |name: &str, content: &[u8]| {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, content).unwrap();
        b.into_inner().unwrap()
    };
    {
        use std::io::Write;
        let mut enc = bzip2::write::BzEncoder::new(
            fs::File::create(ctx.join("a.tar.bz2")).unwrap(),
            bzip2::Compression::default(),
        );
        enc.write_all(&tar_of("from-bzip2.txt", b"bz")).unwrap();
        enc.finish().unwrap();
        let tar = tar_of("from-xz.txt", b"xz");
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &tar[..], &mut out).unwrap();
        fs::write(ctx.join("b.tar.xz"), out).unwrap();
        // Not an archive: copied as it is.
        fs::write(ctx.join("notes.bz2.txt"), "plain text").unwrap();
    }
    let name = env.image("compressed:1");
    let (run, _) = env.build(&ctx, &["-t", &name, "--push"]);
    run.assert_ok();
    let rootfs = env.rootfs_of(&name);
    let r = rootfs.path();
    assert_eq!(
        fs::read_to_string(r.join("bz/from-bzip2.txt")).unwrap(),
        "bz"
    );
    assert_eq!(fs::read_to_string(r.join("xz/from-xz.txt")).unwrap(), "xz");
    assert_eq!(
        fs::read_to_string(r.join("plain/notes.bz2.txt")).unwrap(),
        "plain text"
    );
}

#[test]
fn ssh_mounts_reach_the_forwarded_agent() {
    let test = "ssh_mounts_reach_the_forwarded_agent";
    let Some(env) = setup(test) else {
        return;
    };
    let Some(agent) = common::SshAgent::start(test) else {
        return;
    };
    let ctx = env.context(
        "ssh",
        &[(
            "Dockerfile",
            "FROM $BASE\nCOPY ssh /ssh\nRUN --mount=type=ssh,required echo \"sock=$SSH_AUTH_SOCK\" && /ssh/ld.so --library-path /ssh /ssh/ssh-add -l\n",
        )],
    );
    common::SshAgent::bundle_ssh_add(&ctx.join("ssh"));
    let socket = format!("default={}", agent.socket.display());
    let (run, _) = env.build(&ctx, &["--ssh", &socket, "--no-cache"]);
    run.assert_ok();
    let log = run.stderr();
    assert!(log.contains("sock=/run/buildkit/ssh_agent.0"), "{log}");
    assert!(log.contains(&agent.fingerprint), "{log}");
    assert!(log.contains("kiln-test (ED25519)"), "{log}");

    // Without --ssh a required agent fails the step before it runs, naming the agent.
    let (run, _) = env.build(&ctx, &["--no-cache"]);
    run.assert_err_contains("no SSH agent \"default\" was forwarded (build with --ssh default)");
}

#[test]
fn a_failing_stage_stops_the_steps_running_beside_it() {
    let test = "a_failing_stage_stops_the_steps_running_beside_it";
    let Some(env) = setup(test) else {
        return;
    };
    let ctx = env.context(
        "parallel",
        &[(
            "Dockerfile",
            "FROM $BASE AS slow\nRUN sleep 307\n\nFROM $BASE AS broken\nRUN sleep 1 && exit 3\n\nFROM $BASE\nCOPY --from=slow /etc/passwd /a\nCOPY --from=broken /etc/passwd /b\n",
        )],
    );
    let started = std::time::Instant::now();
    let (run, _) = env.build(&ctx, &["--no-cache"]);
    run.assert_err_contains("exit code: 3");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "the build waited for the slow stage"
    );
    let sleeping = || {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00307\x00"))
    };
    let t0 = std::time::Instant::now();
    while sleeping() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "the slow stage's step kept running after the build failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn add_from_a_git_repository() {
    let test = "add_from_a_git_repository";
    let Some(env) = setup(test) else {
        return;
    };
    use kiln_oci::testing::{git, TestGitDaemon};
    // A repository with a tag, a branch and a subdirectory, served by git daemon on loopback.
    let served = env.work.path().join("served");
    let src = env.work.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    fs::write(src.join("README"), "version one\n").unwrap();
    fs::write(src.join("sub/inner.txt"), "inner\n").unwrap();
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "one"]);
    git(&src, &["tag", "v1"]);
    fs::write(src.join("README"), "version two\n").unwrap();
    git(&src, &["commit", "-q", "-am", "two"]);
    fs::create_dir_all(&served).unwrap();
    git(
        &served,
        &["clone", "-q", "--bare", src.to_str().unwrap(), "app.git"],
    );
    let daemon = TestGitDaemon::start(&served);
    let url = format!("git://127.0.0.1:{}/app.git", daemon.port());
    let dockerfile = format!(
        "FROM $BASE\nADD {url}#v1 /tagged\nADD {url} /head\nADD {url}#main:sub /only-sub\nADD --keep-git-dir=true {url}#main /with-git\nRUN cat /tagged/README /head/README /only-sub/inner.txt && test ! -e /tagged/.git && test -d /with-git/.git\n"
    );
    let ctx = env.context("git", &[("Dockerfile", dockerfile.as_str())]);
    let (run, _) = env.build(&ctx, &[]);
    run.assert_ok();
    let log = run.stderr();
    assert!(
        log.contains("version one") && log.contains("version two") && log.contains("inner"),
        "{log}"
    );
    // Nothing changed: the git sources resolve to the same commits and everything is cached.
    let (run, _) = env.build(&ctx, &[]);
    run.assert_ok();
    assert!(run.cached("RUN cat"), "{}", run.stderr());
    // A new commit on main re-runs what depends on it.
    fs::write(src.join("README"), "version three\n").unwrap();
    git(&src, &["commit", "-q", "-am", "three"]);
    git(
        &served.join("app.git"),
        &["fetch", "-q", src.to_str().unwrap(), "main:main"],
    );
    let (run, _) = env.build(&ctx, &[]);
    run.assert_ok();
    assert!(run.stderr().contains("version three"), "{}", run.stderr());
    // A missing ref is a clear error naming it.
    let bad_dockerfile = format!("FROM $BASE\nADD {url}#nope /x\n");
    let bad = env.context("git-bad", &[("Dockerfile", bad_dockerfile.as_str())]);
    let (run, _) = env.build(&bad, &[]);
    run.assert_err_contains("no branch, tag or commit \"nope\"");
}

#[test]
fn a_git_repository_as_the_build_context() {
    let test = "a_git_repository_as_the_build_context";
    let Some(env) = setup(test) else {
        return;
    };
    use kiln_oci::testing::{git, TestGitDaemon};
    let src = env.work.path().join("ctx-src");
    fs::create_dir_all(src.join("app")).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    fs::write(
        src.join("app/Dockerfile"),
        format!(
            "FROM {}\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n",
            env.base
        ),
    )
    .unwrap();
    fs::write(src.join("app/hello.txt"), "hello from a git context\n").unwrap();
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "ctx"]);
    let served = env.work.path().join("ctx-served");
    fs::create_dir_all(&served).unwrap();
    git(
        &served,
        &["clone", "-q", "--bare", src.to_str().unwrap(), "ctx.git"],
    );
    let daemon = TestGitDaemon::start(&served);
    let url = format!("git://127.0.0.1:{}/ctx.git#main:app", daemon.port());
    let run = env.kiln(&["build", "--progress", "plain", &url]);
    run.assert_ok();
    assert!(
        run.stderr().contains("hello from a git context")
            && run.stderr().contains("using git context"),
        "{}",
        run.stderr()
    );
    let bad = format!("git://127.0.0.1:{}/ctx.git#nope", daemon.port());
    env.kiln(&["build", &bad])
        .assert_err_contains("no branch, tag or commit \"nope\"");
}

#[test]
fn several_platforms_build_one_image_each_under_an_index() {
    let Some(env) = setup("several_platforms_build_one_image_each_under_an_index") else {
        return;
    };
    let base = env.image("multiarch:1");
    rt().block_on(kiln_oci::testing::push_busybox_index(
        &base,
        &["amd64", "arm64"],
    ));
    // The usual cross-compiling shape: the work runs on the build platform, the last stage
    // only copies, so no emulator is needed for arm64.
    let dockerfile = format!(
        "FROM --platform=$BUILDPLATFORM {base} AS build\n\
         ARG TARGETARCH\n\
         RUN echo \"built for $TARGETARCH\" > /out\n\
         FROM {base}\n\
         COPY --from=build /out /out\n"
    );
    let ctx = env.context("multi", &[("Dockerfile", &dockerfile)]);
    let name = env.image("multi:1");
    let (run, meta) = env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &name,
            "--push",
        ],
    );
    run.assert_ok();
    let err = run.stderr();
    assert!(
        err.contains("[linux/amd64->arm64 build 2/2] RUN echo \"built for arm64\" > /out"),
        "{err}"
    );
    assert!(
        err.contains("[linux/arm64 stage-1 2/2] COPY --from=build"),
        "{err}"
    );

    assert_eq!(env.index_archs(&name), ["amd64", "arm64"]);
    let digest = meta.unwrap()["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(digest, env.digest_of(&name));
    for arch in ["amd64", "arm64"] {
        assert_eq!(
            env.file_for(&name, arch, "out"),
            format!("built for {arch}\n")
        );
        assert_eq!(env.config_for(&name, arch)["architecture"], arch);
    }

    // Files land in a directory per platform; the build is cached by now.
    let dest = env.work.path().join("multi-out");
    let (run, _) = env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=local,dest={}", dest.display()),
        ],
    );
    run.assert_ok();
    assert!(run.cached("RUN echo"), "{}", run.stderr());
    for arch in ["amd64", "arm64"] {
        assert_eq!(
            fs::read_to_string(dest.join(format!("linux_{arch}/out"))).unwrap(),
            format!("built for {arch}\n")
        );
    }
    // A Docker tar has no place for an index.
    let (run, _) = env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!(
                "type=docker,dest={}",
                env.work.path().join("x.tar").display()
            ),
        ],
    );
    run.assert_err_contains("docker exporter does not currently support exporting manifest lists");

    // A RUN for arm64 needs an emulator; without one it is refused before it starts.
    if !std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        let foreign = env.context(
            "foreign",
            &[("Dockerfile", &format!("FROM {base}\nRUN true\n"))],
        );
        let (run, _) = env.build(&foreign, &["--platform", "linux/arm64"]);
        run.assert_err_contains("no emulator for arm64 is registered with binfmt_misc");
    }
}
