//! Interop with the real BuildKit clients: `buildctl` (old and current) against
//! `kiln buildkitd`. Set KILN_TEST_BUILDCTL to one or more buildctl binaries (colon-separated),
//! or put `buildctl` on PATH, or build them under /opt/buildkit-{v0.11,current}/bin (see
//! benches/README.md); without one the tests print a SKIP line.

mod common;

use common::buildkitd::{
    build_into_dir, build_with_cache, buildctl, dockerfile_build, ok, prerequisites, step_cached,
    Daemon,
};

use std::process::Command;

/// LLB for a small Dockerfile, lowered with kiln's own frontend (what `buildctl build < def`
/// would get from any LLB producer).
fn definition(env: &common::Env, dockerfile: &str) -> Vec<u8> {
    use prost::Message;
    let df = kiln_dockerfile::parse(dockerfile).unwrap();
    let plan = kiln_dockerfile::plan(&df, &Default::default()).unwrap();
    let mut configs = std::collections::HashMap::new();
    for req in plan.base_images() {
        let config = serde_json::to_vec(&env.config_of(&env.base)).unwrap();
        configs.insert(
            req.reference.clone(),
            kiln_dockerfile::ImageConfig::from_json(&config).unwrap(),
        );
    }
    plan.lower(&configs).unwrap().definition.encode_to_vec()
}

#[test]
fn buildctl_lists_workers_and_builds_raw_llb() {
    let test = "buildctl_lists_workers_and_builds_raw_llb";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let daemon = Daemon::start(env.root.path(), env.work.path());
    for (i, bin) in bins.iter().enumerate() {
        let workers = buildctl(bin, &daemon, &["debug", "workers"], None);
        ok(&workers, "debug workers");
        assert!(String::from_utf8_lossy(&workers.stdout).contains("linux/"));

        let name = env.image(&format!("raw-llb:{i}"));
        let def = definition(
            &env,
            &format!("FROM {}\nRUN echo from-llb-{i} > /marker\n", env.base),
        );
        std::fs::write(env.work.path().join("def.pb"), &def).unwrap();
        let out = buildctl(
            bin,
            &daemon,
            &[
                "build",
                "--progress",
                "plain",
                "--output",
                &format!("type=image,name={name},push=true"),
            ],
            Some(&def),
        );
        ok(&out, &format!("{} build < def", bin.display()));
        let rootfs = env.rootfs_of(&name);
        assert_eq!(
            std::fs::read_to_string(rootfs.path().join("marker")).unwrap(),
            format!("from-llb-{i}\n")
        );
    }
}

#[test]
fn buildctl_builds_dockerfiles_with_context_secrets_and_every_output() {
    let test = "buildctl_builds_dockerfiles_with_context_secrets_and_every_output";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let daemon = Daemon::start(env.root.path(), env.work.path());
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM $BASE\n\
                 ARG WHO=nobody\n\
                 COPY app/ /app/\n\
                 RUN --mount=type=secret,id=token,required=true test -s /run/secrets/token && echo \"hi $WHO\" > /app/greeting\n\
                 CMD [\"cat\", \"/app/greeting\"]\n",
            ),
            ("app/main.sh", "echo main"),
            ("app/lib/util.sh", "echo util"),
            ("ignored/big.txt", "should not be sent"),
            (".dockerignore", "ignored\n"),
        ],
    );
    let secret = env.work.path().join("token");
    std::fs::write(&secret, "t0ken").unwrap();
    let ctx_s = ctx.to_str().unwrap();
    for (i, bin) in bins.iter().enumerate() {
        let name = env.image(&format!("df:{i}"));
        let common = |out: &str| -> Vec<String> {
            [
                "build",
                "--progress",
                "plain",
                "--frontend",
                "dockerfile.v0",
                "--local",
                &format!("context={ctx_s}"),
                "--local",
                &format!("dockerfile={ctx_s}"),
                "--opt",
                "build-arg:WHO=buildctl",
                "--secret",
                &format!("id=token,src={}", secret.display()),
                "--output",
                out,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let run = |args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            buildctl(bin, &daemon, &args, None)
        };
        let out = run(common(&format!("type=image,name={name},push=true")));
        ok(&out, &format!("{} image push", bin.display()));
        let rootfs = env.rootfs_of(&name);
        assert_eq!(
            std::fs::read_to_string(rootfs.path().join("app/greeting")).unwrap(),
            "hi buildctl\n"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.path().join("app/lib/util.sh")).unwrap(),
            "echo util"
        );
        assert!(!rootfs.path().join("ignored").exists());

        // Unchanged: everything cached.
        let again = run(common(&format!("type=image,name={name},push=true")));
        ok(&again, "rebuild");
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("CACHED"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );

        let oci = env.work.path().join(format!("out-{i}.oci.tar"));
        ok(
            &run(common(&format!("type=oci,dest={}", oci.display()))),
            "oci output",
        );
        let entries: Vec<String> = tar::Archive::new(std::fs::File::open(&oci).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(entries.contains(&"index.json".to_string()), "{entries:?}");

        let local = env.work.path().join(format!("local-{i}"));
        ok(
            &run(common(&format!("type=local,dest={}", local.display()))),
            "local output",
        );
        assert_eq!(
            std::fs::read_to_string(local.join("app/greeting")).unwrap(),
            "hi buildctl\n"
        );
    }
}

#[test]
fn buildctl_builds_over_mutual_tls_and_clients_without_a_cert_are_refused() {
    let test = "buildctl_builds_over_mutual_tls_and_clients_without_a_cert_are_refused";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let daemon = Daemon::start_with(env.root.path(), env.work.path(), true);
    let (addr, certs) = daemon.tls.clone().unwrap();
    let ctx = env.context(
        "tls",
        &[("Dockerfile", "FROM $BASE\nRUN echo over-mtls > /m\n")],
    );
    let ctx_s = ctx.to_str().unwrap();
    let c = |p: &str| certs.join(p).to_str().unwrap().to_string();
    for (i, bin) in bins.iter().enumerate() {
        let tcp = |extra: &[String], args: &[&str]| {
            Command::new(bin)
                .args(["--addr", &addr])
                .args(extra)
                .args(args)
                .output()
                .unwrap()
        };
        let mtls = vec![
            "--tlscacert".to_string(),
            c("ca.pem"),
            "--tlscert".to_string(),
            c("client.pem"),
            "--tlskey".to_string(),
            c("client-key.pem"),
        ];
        // Without a client certificate: refused.
        let refused = tcp(&mtls[..2], &["debug", "workers"]);
        assert!(
            !refused.status.success(),
            "a client without a certificate got in"
        );
        // A plaintext client: refused too.
        let plain = Command::new(bin)
            .args(["--addr", &addr, "--timeout", "3", "debug", "workers"])
            .output()
            .unwrap();
        assert!(!plain.status.success());
        // The daemon still serves the good client, a whole build.
        let name = env.image(&format!("mtls:{i}"));
        let out = tcp(
            &mtls,
            &[
                "build",
                "--frontend",
                "dockerfile.v0",
                "--local",
                &format!("context={ctx_s}"),
                "--local",
                &format!("dockerfile={ctx_s}"),
                "--output",
                &format!("type=image,name={name},push=true"),
            ],
        );
        ok(&out, &format!("{} build over mTLS", bin.display()));
        let rootfs = env.rootfs_of(&name);
        assert_eq!(
            std::fs::read_to_string(rootfs.path().join("m")).unwrap(),
            "over-mtls\n"
        );
    }
}

#[test]
fn concurrent_builds_of_the_same_step_run_it_once() {
    let test = "concurrent_builds_of_the_same_step_run_it_once";
    let Some(bin) = common::buildctls().into_iter().last() else {
        println!("SKIP {test}: no buildctl (set KILN_TEST_BUILDCTL or put buildctl on PATH)");
        return;
    };
    let Some(env) = common::setup(test) else {
        return;
    };
    let daemon = Daemon::start(env.root.path(), env.work.path());
    // A slow step whose output differs each time it runs, in three contexts (separate sessions
    // and sync directories) that share nothing but the step.
    let contexts: Vec<String> = (0..3)
        .map(|i| {
            let ctx = env.context(
                &format!("same-step-{i}"),
                &[(
                    "Dockerfile",
                    "FROM $BASE\nRUN sleep 2 && date +%s%N > /stamp\n",
                )],
            );
            ctx.to_str().unwrap().to_string()
        })
        .collect();
    let outs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| env.work.path().join(format!("out{i}")))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = outs
            .iter()
            .zip(&contexts)
            .map(|(out, ctx_s)| {
                let (bin, daemon) = (&bin, &daemon);
                s.spawn(move || build_into_dir(bin, daemon, ctx_s, out))
            })
            .collect();
        let mut executed = 0;
        let mut logs = String::new();
        for h in handles {
            let out = h.join().unwrap();
            ok(&out, "concurrent build");
            // The RUN vertex is either executed here or reported as CACHED.
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            let vertex = log
                .lines()
                .find(|l| l.contains("RUN sleep 2"))
                .and_then(|l| l.split_whitespace().next())
                .expect("the RUN vertex is in the log")
                .to_string();
            if !log.lines().any(|l| l == format!("{vertex} CACHED")) {
                executed += 1;
            }
            logs.push_str(&log);
        }
        assert_eq!(executed, 1, "the step ran {executed} times:\n{logs}");
    });
    let stamps: Vec<String> = outs
        .iter()
        .map(|o| std::fs::read_to_string(o.join("stamp")).unwrap())
        .collect();
    assert!(
        stamps.iter().all(|s| *s == stamps[0]),
        "different results: {stamps:?}"
    );
}

#[test]
fn buildctl_forwards_its_ssh_agent_to_run_steps() {
    let test = "buildctl_forwards_its_ssh_agent_to_run_steps";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let Some(agent) = common::SshAgent::start(test) else {
        return;
    };
    let daemon = Daemon::start(env.root.path(), env.work.path());
    let ctx = env.context(
        "ssh",
        &[(
            "Dockerfile",
            "FROM $BASE\nCOPY ssh /ssh\nRUN --mount=type=ssh,required /ssh/ld.so --library-path /ssh /ssh/ssh-add -l\n",
        )],
    );
    common::SshAgent::bundle_ssh_add(&ctx.join("ssh"));
    let ctx_s = ctx.to_str().unwrap();
    for bin in &bins {
        let args = |ssh: bool| {
            let mut a = vec![
                "build".to_string(),
                "--progress".into(),
                "plain".into(),
                "--no-cache".into(),
                "--frontend".into(),
                "dockerfile.v0".into(),
                "--local".into(),
                format!("context={ctx_s}"),
                "--local".into(),
                format!("dockerfile={ctx_s}"),
            ];
            if ssh {
                a.push("--ssh".into());
                a.push(format!("default={}", agent.socket.display()));
            }
            a
        };
        let with: Vec<String> = args(true);
        let out = buildctl(
            bin,
            &daemon,
            &with.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        );
        ok(&out, &format!("{} build --ssh", bin.display()));
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(log.contains(&agent.fingerprint), "{log}");
        let without: Vec<String> = args(false);
        let out = buildctl(
            bin,
            &daemon,
            &without.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        );
        assert!(!out.status.success());
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            log.contains("no SSH agent \"default\" was forwarded"),
            "{log}"
        );
    }
}

#[test]
fn buildctl_exports_a_registry_cache_that_a_fresh_kiln_imports() {
    let test = "buildctl_exports_a_registry_cache_that_a_fresh_kiln_imports";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM $BASE AS build\nCOPY in.txt /in.txt\nRUN cat /in.txt > /out.txt\n\
                 FROM $BASE\nCOPY --from=build /out.txt /out.txt\nRUN cp /out.txt /final.txt\n",
            ),
            ("in.txt", "cached content\n"),
        ],
    );
    let ctx_s = ctx.to_str().unwrap();
    for (i, bin) in bins.iter().enumerate() {
        let cache = env.image(&format!("cache:{i}"));
        let image = env.image(&format!("cached-app:{i}"));
        let output = format!("type=image,name={image},push=true");
        let build = |daemon: &Daemon, cache_flag: &str, cache_value: &str| {
            build_with_cache(bin, daemon, ctx_s, &output, cache_flag, cache_value)
        };
        let dir_a = env.work.path().join(format!("a{i}"));
        std::fs::create_dir_all(&dir_a).unwrap();
        let root_a = dir_a.join("root");
        let first = {
            let daemon = Daemon::start(&root_a, &dir_a);
            build(
                &daemon,
                "--export-cache",
                &format!("type=registry,ref={cache},mode=max"),
            )
        };
        ok(&first, &format!("{} export-cache", bin.display()));
        let err = String::from_utf8_lossy(&first.stderr).to_string();
        assert!(err.contains("exporting cache to"), "{err}");

        // A second daemon with an empty state directory, as a freshly scaled pod.
        let dir_b = env.work.path().join(format!("b{i}"));
        std::fs::create_dir_all(&dir_b).unwrap();
        let daemon = Daemon::start(&dir_b.join("root"), &dir_b);
        let second = build(
            &daemon,
            "--import-cache",
            &format!("type=registry,ref={cache}"),
        );
        ok(&second, &format!("{} import-cache", bin.display()));
        let err = String::from_utf8_lossy(&second.stderr).to_string();
        for step in ["RUN cat /in.txt", "COPY --from=build", "RUN cp /out.txt"] {
            assert!(
                step_cached(&err, step),
                "{step} not cached with {}:\n{err}",
                bin.display()
            );
        }
        let rootfs = env.rootfs_of(&image);
        assert_eq!(
            std::fs::read_to_string(rootfs.path().join("final.txt")).unwrap(),
            "cached content\n"
        );
        // Every step came from the cache and the registry had every blob: the fresh daemon
        // downloaded no layer, of the base image or of the cache.
        let downloaded = env.layers_downloaded_into(&image, &dir_b.join("root"));
        assert!(downloaded.is_empty(), "{downloaded:?} downloaded:\n{err}");
    }
}

/// `--export-cache type=local,dest=DIR`: the directory is on the client's side, written through
/// the content store the client serves on its session; a fresh daemon imports it back.
#[test]
fn buildctl_local_cache_lives_on_the_client() {
    let test = "buildctl_local_cache_lives_on_the_client";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM $BASE\nCOPY in.txt /in.txt\nRUN cat /in.txt > /out.txt\n",
            ),
            ("in.txt", "local cache\n"),
        ],
    );
    let ctx_s = ctx.to_str().unwrap();
    for (i, bin) in bins.iter().enumerate() {
        let cache_dir = env.work.path().join(format!("client-cache-{i}"));
        let out = env.work.path().join(format!("out-{i}"));
        let output = format!("type=local,dest={}", out.display());
        let build = |daemon: &Daemon, cache_flag: &str, cache_value: &str| {
            build_with_cache(bin, daemon, ctx_s, &output, cache_flag, cache_value)
        };
        let dir_a = env.work.path().join(format!("la{i}"));
        std::fs::create_dir_all(&dir_a).unwrap();
        let first = {
            let daemon = Daemon::start(&dir_a.join("root"), &dir_a);
            build(
                &daemon,
                "--export-cache",
                &format!("type=local,dest={},mode=max", cache_dir.display()),
            )
        };
        ok(&first, &format!("{} local export-cache", bin.display()));
        // The client wrote the layout: index.json names the manifest, blobs are there.
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(cache_dir.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(cache_dir.join("blobs/sha256").join(&digest[7..]).is_file());

        let dir_b = env.work.path().join(format!("lb{i}"));
        std::fs::create_dir_all(&dir_b).unwrap();
        let daemon = Daemon::start(&dir_b.join("root"), &dir_b);
        let second = build(
            &daemon,
            "--import-cache",
            &format!("type=local,src={}", cache_dir.display()),
        );
        ok(&second, &format!("{} local import-cache", bin.display()));
        let err = String::from_utf8_lossy(&second.stderr).to_string();
        assert!(
            step_cached(&err, "RUN cat /in.txt"),
            "RUN not cached with {}:\n{err}",
            bin.display()
        );
        assert_eq!(
            std::fs::read_to_string(out.join("out.txt")).unwrap(),
            "local cache\n"
        );
    }
}

#[test]
fn buildctl_named_contexts_replace_images_stages_and_copy_sources() {
    let test = "buildctl_named_contexts_replace_images_stages_and_copy_sources";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM no-such-image:1 AS gen\n\
             RUN exit 1\n\
             FROM base\n\
             COPY --from=gen /gen.txt /gen.txt\n\
             COPY --from=deps / /deps/\n\
             RUN cat /gen.txt /deps/lib.txt > /all.txt\n",
        )],
    );
    let deps = env.context(
        "deps",
        &[
            ("lib.txt", "lib\n"),
            ("junk.tmp", "ignored\n"),
            (".dockerignore", "*.tmp\n"),
        ],
    );
    let gen = env.context("gen", &[("gen.txt", "generated\n")]);
    let dir = env.work.path().join("daemon");
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&dir.join("root"), &dir);
    for (i, bin) in bins.iter().enumerate() {
        let out = env.work.path().join(format!("out-{i}"));
        let base = format!("context:base=docker-image://{}", env.base);
        let args = [
            "--local",
            &format!("deps={}", deps.display()),
            "--local",
            &format!("gen={}", gen.display()),
            "--opt",
            &base,
            "--opt",
            "context:deps=local:deps",
            "--opt",
            "context:gen=local:gen",
            "--output",
            &format!("type=local,dest={}", out.display()),
        ];
        let run = dockerfile_build(bin, &daemon, ctx.to_str().unwrap(), &args);
        ok(&run, &format!("{} named contexts", bin.display()));
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains("[context deps] load from client"), "{err}");
        assert_eq!(
            std::fs::read_to_string(out.join("all.txt")).unwrap(),
            "generated\nlib\n"
        );
        assert!(
            out.join("bin/busybox").exists(),
            "FROM base is the busybox image"
        );
        assert!(
            !out.join("deps/junk.tmp").exists(),
            "deps/.dockerignore applies"
        );

        let bad = dockerfile_build(
            bin,
            &daemon,
            ctx.to_str().unwrap(),
            &["--opt", "context:base=oci-layout:///nowhere"],
        );
        assert!(!bad.status.success());
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.contains("oci-layout contexts are not supported"),
            "{err}"
        );
    }
}

#[test]
fn a_repeated_push_survives_a_registry_that_lost_its_blobs() {
    let test = "a_repeated_push_survives_a_registry_that_lost_its_blobs";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM $BASE\nRUN echo pushed > /p.txt\n")],
    );
    let dir = env.work.path().join("daemon");
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&dir.join("root"), &dir);
    let name = env.image("lost:1");
    let output = format!("type=image,name={name},push=true");
    let bin = &bins[0];
    let ctx_s = ctx.to_str().unwrap();
    ok(
        &dockerfile_build(bin, &daemon, ctx_s, &["--output", &output]),
        "first push",
    );
    // The daemon remembers what it pushed and skips those checks next time; the registry
    // forgets the repository's layer links behind its back.
    let layers = env
        .registry
        .data_dir()
        .join("docker/registry/v2/repositories/lost/_layers");
    assert!(layers.is_dir(), "{}", layers.display());
    std::fs::remove_dir_all(&layers).unwrap();
    ok(
        &dockerfile_build(bin, &daemon, ctx_s, &["--output", &output]),
        "second push",
    );
    let log = std::fs::read_to_string(dir.join("buildkitd.log")).unwrap_or_default();
    assert!(
        log.contains("checking every blob and pushing again"),
        "{log}"
    );
    let rootfs = env.rootfs_of(&name);
    assert_eq!(
        std::fs::read_to_string(rootfs.path().join("p.txt")).unwrap(),
        "pushed\n"
    );
}

#[test]
fn buildctl_builds_several_platforms_into_an_index() {
    let test = "buildctl_builds_several_platforms_into_an_index";
    let Some((bins, env)) = prerequisites(test) else {
        return;
    };
    let base = env.image("multiarch:1");
    common::rt().block_on(kiln_oci::testing::push_busybox_index(
        &base,
        &["amd64", "arm64"],
    ));
    let ctx = env.context(
        "multi",
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM --platform=$BUILDPLATFORM {base} AS build\nARG TARGETARCH\n\
                 RUN echo \"for $TARGETARCH\" > /arch\nFROM {base}\nCOPY --from=build /arch /arch\n\
                 COPY app.txt /app.txt\n"
                ),
            ),
            ("app.txt", "from the context\n"),
        ],
    );
    let dir = env.work.path().join("daemon");
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&dir.join("root"), &dir);
    for (i, bin) in bins.iter().enumerate() {
        let image = env.image(&format!("multi-{i}:1"));
        let meta = env.work.path().join(format!("meta-{i}.json"));
        let out = env.work.path().join(format!("out-{i}"));
        let oci = env.work.path().join(format!("multi-{i}.oci.tar"));
        let run = dockerfile_build(
            bin,
            &daemon,
            ctx.to_str().unwrap(),
            &[
                "--opt",
                "platform=linux/amd64,linux/arm64",
                "--metadata-file",
                meta.to_str().unwrap(),
                "--output",
                &format!("type=image,name={image},push=true"),
            ],
        );
        ok(&run, &format!("{} multi-platform push", bin.display()));
        assert_eq!(env.index_archs(&image), ["amd64", "arm64"]);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        let digest = meta["containerimage.digest"].as_str().unwrap();
        assert_eq!(digest, env.digest_of(&image));
        for arch in ["amd64", "arm64"] {
            assert_eq!(env.file_for(&image, arch, "arch"), format!("for {arch}\n"));
            assert_eq!(env.file_for(&image, arch, "app.txt"), "from the context\n");
        }
        // Both platforms read the context: it is transferred once.
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            err.lines()
                .filter(|l| l.ends_with("[internal] load build context"))
                .count(),
            1,
            "{err}"
        );

        // Local files split by platform; an OCI tar holds the index.
        for output in [
            format!("type=local,dest={}", out.display()),
            format!("type=oci,dest={}", oci.display()),
        ] {
            let run = dockerfile_build(
                bin,
                &daemon,
                ctx.to_str().unwrap(),
                &[
                    "--opt",
                    "platform=linux/amd64,linux/arm64",
                    "--output",
                    &output,
                ],
            );
            ok(&run, &format!("{} multi-platform {output}", bin.display()));
        }
        for arch in ["amd64", "arm64"] {
            assert_eq!(
                std::fs::read_to_string(out.join(format!("linux_{arch}/arch"))).unwrap(),
                format!("for {arch}\n")
            );
        }
        let mut index = String::new();
        for e in tar::Archive::new(std::fs::File::open(&oci).unwrap())
            .entries()
            .unwrap()
        {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == "index.json" {
                use std::io::Read;
                e.read_to_string(&mut index).unwrap();
            }
        }
        let index: serde_json::Value = serde_json::from_str(&index).unwrap();
        assert_eq!(
            index["manifests"][0]["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
    }
}
