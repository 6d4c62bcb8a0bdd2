//! Exported build caches (`--cache-to`/`--cache-from`): a kiln with an empty state directory —
//! a freshly scaled pod — reuses the work another kiln did, through a real registry, an OCI
//! layout directory or an image's inline cache.

mod common;

use common::{setup, Env};
use std::fs;
use std::path::Path;

const DOCKERFILE: &str = "FROM $BASE AS builder
COPY src.txt /src.txt
RUN cat /src.txt > /built && echo builder-ran
FROM $BASE
COPY --from=builder /built /app/built
COPY extra.txt /app/extra.txt
RUN cat /app/built /app/extra.txt > /app/both && echo final-ran
";

fn project(env: &Env, name: &str) -> std::path::PathBuf {
    env.context(
        name,
        &[
            ("Dockerfile", DOCKERFILE),
            ("src.txt", "source\n"),
            ("extra.txt", "extra\n"),
        ],
    )
}

fn digest(meta: Option<serde_json::Value>) -> String {
    meta.expect("metadata")["containerimage.digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

fn fresh_root(env: &Env, name: &str) -> std::path::PathBuf {
    let root = env.work.path().join(name);
    fs::create_dir_all(&root).unwrap();
    root
}

fn read(dir: &Path, path: &str) -> String {
    fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn registry_cache_max_lets_a_fresh_kiln_skip_every_step() {
    let Some(env) = setup("registry_cache_max_lets_a_fresh_kiln_skip_every_step") else {
        return;
    };
    let ctx = project(&env, "max");
    let cache = env.image("app:buildcache");
    let name = env.image("app:1");
    let to = format!("type=registry,ref={cache},mode=max");
    let (first, m1) = env.build(&ctx, &["-t", &name, "--push", "--cache-to", &to]);
    first.assert_ok();
    assert!(first.ran("echo final-ran"), "{}", first.stderr());
    assert!(
        first
            .stderr()
            .contains(&format!("exporting cache to {cache}")),
        "{}",
        first.stderr()
    );

    // Another kiln, empty cache: every step comes from the registry, and the image is the same.
    let from = format!("type=registry,ref={cache}");
    let root = fresh_root(&env, "second-root");
    let (second, m2) = env.build_in(&root, &ctx, &["-t", &name, "--push", "--cache-from", &from]);
    second.assert_ok();
    for step in [
        "COPY src.txt",
        "echo builder-ran",
        "COPY --from=builder",
        "echo final-ran",
    ] {
        assert!(
            second.cached(step),
            "{step} not cached:\n{}",
            second.stderr()
        );
    }
    assert_eq!(
        digest(m1),
        digest(m2),
        "the imported cache yields the same image"
    );
    let rootfs = env.rootfs_of(&name);
    assert_eq!(read(rootfs.path(), "app/both"), "source\nextra\n");
    // Every step came from the cache and the registry has every blob: nothing was downloaded,
    // neither the base image's layer nor the cache's.
    let downloaded = env.layers_downloaded_into(&name, &root);
    assert!(
        downloaded.is_empty(),
        "{downloaded:?}:\n{}",
        second.stderr()
    );

    // The same kiln pushing under another name in another repository: blobs are mounted from
    // the repositories that have them, still without a download.
    let other = env.image("elsewhere/app:1");
    let (pushed, _) = env.build_in(
        &root,
        &ctx,
        &["-t", &other, "--push", "--cache-from", &from],
    );
    pushed.assert_ok();
    assert_eq!(
        read(env.rootfs_of(&other).path(), "app/both"),
        "source\nextra\n"
    );
    let downloaded = env.layers_downloaded_into(&other, &root);
    assert!(
        downloaded.is_empty(),
        "downloaded for a push: {downloaded:?}"
    );
    // A file export needs the files: the layers are fetched and unpacked then.
    let files = env.work.path().join("files");
    let (local, _) = env.build_in(
        &root,
        &ctx,
        &["--cache-from", &from, "-o", files.to_str().unwrap()],
    );
    local.assert_ok();
    assert_eq!(read(&files, "app/both"), "source\nextra\n");
    assert!(files.join("bin/busybox").exists());
    assert!(
        !env.layers_downloaded_into(&name, &root).is_empty(),
        "a file export downloads the layers it unpacks"
    );

    // A third kiln after an edit: only what depends on the changed file runs.
    fs::write(ctx.join("extra.txt"), "edited\n").unwrap();
    let root = fresh_root(&env, "third-root");
    let out = env.work.path().join("out");
    let (third, _) = env.build_in(
        &root,
        &ctx,
        &["--cache-from", &from, "-o", out.to_str().unwrap()],
    );
    third.assert_ok();
    assert!(third.cached("echo builder-ran"), "{}", third.stderr());
    assert!(third.cached("COPY --from=builder"), "{}", third.stderr());
    assert!(third.ran("echo final-ran"), "{}", third.stderr());
    assert_eq!(read(&out, "app/both"), "source\nedited\n");
}

#[test]
fn registry_cache_min_holds_only_the_final_stage() {
    let Some(env) = setup("registry_cache_min_holds_only_the_final_stage") else {
        return;
    };
    let ctx = project(&env, "min");
    let cache = env.image("app:mincache");
    let to = format!("type=registry,ref={cache}");
    env.build(&ctx, &["--cache-to", &to]).0.assert_ok();

    let root = fresh_root(&env, "second-root");
    let from = format!("type=registry,ref={cache}");
    let (second, _) = env.build_in(&root, &ctx, &["--cache-from", &from]);
    second.assert_ok();
    // The builder stage is not in a min cache: it runs again, and then the final stage's steps,
    // whose keys do not change, come from the cache.
    assert!(second.ran("echo builder-ran"), "{}", second.stderr());
    assert!(second.cached("COPY --from=builder"), "{}", second.stderr());
    assert!(second.cached("echo final-ran"), "{}", second.stderr());
}

#[test]
fn inline_cache_travels_in_the_pushed_image() {
    let Some(env) = setup("inline_cache_travels_in_the_pushed_image") else {
        return;
    };
    let ctx = project(&env, "inline");
    let name = env.image("app:inline");
    let (first, m1) = env.build(&ctx, &["-t", &name, "--push", "--cache-to", "type=inline"]);
    first.assert_ok();
    let config = env.config_of(&name);
    let records = config["dev.kiln.cache.v1"]["records"]
        .as_array()
        .expect("inline cache records in the image config");
    assert!(!records.is_empty());

    // buildx's shorthand: a bare reference is a registry cache (here: an image).
    let root = fresh_root(&env, "second-root");
    let (second, m2) = env.build_in(
        &root,
        &ctx,
        &[
            "-t",
            &name,
            "--push",
            "--cache-from",
            &name,
            "--cache-to",
            "type=inline",
        ],
    );
    second.assert_ok();
    assert!(second.cached("echo final-ran"), "{}", second.stderr());
    assert!(second.cached("COPY --from=builder"), "{}", second.stderr());
    // The builder stage is not part of the image, so not of its inline cache: it runs again.
    assert!(second.ran("echo builder-ran"), "{}", second.stderr());
    assert_eq!(
        digest(m1),
        digest(m2),
        "the same image, inline cache included"
    );
}

#[test]
fn local_cache_directory_is_an_oci_layout() {
    let Some(env) = setup("local_cache_directory_is_an_oci_layout") else {
        return;
    };
    let ctx = project(&env, "local");
    let dir = env.work.path().join("cache-dir");
    let to = format!("type=local,dest={},mode=max", dir.display());
    env.build(&ctx, &["--cache-to", &to]).0.assert_ok();
    let index: serde_json::Value = serde_json::from_str(&read(&dir, "index.json")).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let manifest_digest = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&dir, &format!("blobs/sha256/{manifest_digest}"))).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert!(dir.join("blobs/sha256").join(hex).is_file());
        assert!(layer["annotations"]["containerd.io/uncompressed"].is_string());
    }

    let root = fresh_root(&env, "second-root");
    let from = format!("type=local,src={}", dir.display());
    let out = env.work.path().join("out");
    let (second, _) = env.build_in(
        &root,
        &ctx,
        &["--cache-from", &from, "-o", out.to_str().unwrap()],
    );
    second.assert_ok();
    assert!(second.cached("echo builder-ran"), "{}", second.stderr());
    assert!(second.cached("echo final-ran"), "{}", second.stderr());
    assert_eq!(read(&out, "app/both"), "source\nextra\n");
}

#[test]
fn unusable_caches_are_warnings_and_the_build_does_the_work() {
    let Some(env) = setup("unusable_caches_are_warnings_and_the_build_does_the_work") else {
        return;
    };
    let ctx = project(&env, "unusable");
    // A cache that was never pushed, an image without an inline cache, a directory without
    // an index, and a cache type kiln does not offer.
    let missing = format!("type=registry,ref={}", env.image("nothing:here"));
    let garbage = env.work.path().join("garbage");
    fs::create_dir_all(&garbage).unwrap();
    fs::write(garbage.join("index.json"), "{not json").unwrap();
    let garbage = format!("type=local,src={}", garbage.display());
    let (run, _) = env.build(
        &ctx,
        &[
            "--cache-from",
            &missing,
            "--cache-from",
            &env.base,
            "--cache-from",
            &garbage,
            "--cache-from",
            "type=gha",
        ],
    );
    run.assert_ok();
    let err = run.stderr();
    assert!(err.contains("nothing:here"), "{err}");
    assert!(err.contains("has no kiln inline cache"), "{err}");
    assert!(err.contains("index.json"), "{err}");
    assert!(err.contains("\"gha\" is not supported"), "{err}");
    assert!(run.ran("echo final-ran"), "{err}");

    // A layer of the cache that is gone: the step runs instead.
    let dir = env.work.path().join("cache-dir");
    let to = format!("type=local,dest={},mode=max", dir.display());
    env.build(&ctx, &["--cache-to", &to]).0.assert_ok();
    let index: serde_json::Value = serde_json::from_str(&read(&dir, "index.json")).unwrap();
    let hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&dir, &format!("blobs/sha256/{hex}"))).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = &layer["digest"].as_str().unwrap()[7..];
        fs::remove_file(dir.join("blobs/sha256").join(hex)).unwrap();
    }
    let root = fresh_root(&env, "second-root");
    let from = format!("type=local,src={}", dir.display());
    let (run, _) = env.build_in(&root, &ctx, &["--cache-from", &from]);
    run.assert_ok();
    assert!(run.ran("echo final-ran"), "{}", run.stderr());
    assert!(
        run.stderr().contains("running the step instead"),
        "{}",
        run.stderr()
    );

    // Bad options are errors that say what is wrong.
    env.build(&ctx, &["--cache-to", "type=registry,mode=max"])
        .0
        .assert_err_contains("needs ref=");
    env.build(
        &ctx,
        &[
            "--cache-to",
            &format!("type=registry,ref={},mode=all", env.image("x:c")),
        ],
    )
    .0
    .assert_err_contains("invalid mode");
}
