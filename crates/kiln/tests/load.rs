//! A shared builder under load: many real `buildctl` clients at once against one
//! `kiln buildkitd`. Small, fast cases; the timings against BuildKit are `benches/load.py`'s job.
//! Without a buildctl the tests print a SKIP line (see `common::buildctls`).

mod common;

use common::buildkitd::{build_into_dir, dockerfile_build, ok, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The newest buildctl and the build set-up, or `None` after a SKIP line.
fn prerequisites(test: &str) -> Option<(PathBuf, common::Env)> {
    let Some(bin) = common::buildctls().into_iter().last() else {
        println!("SKIP {test}: no buildctl (set KILN_TEST_BUILDCTL or put buildctl on PATH)");
        return None;
    };
    Some((bin, common::setup(test)?))
}

/// How many processes run exactly this command line (arguments joined by NULs).
fn processes_running(cmdline: &[u8]) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline))
        .count()
}

/// Polls `cond` every 100 ms until it holds, failing with `what` after `secs` seconds.
fn wait_until(secs: u64, what: impl Fn() -> String, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "{}", what());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A context whose Dockerfile runs `run` and copies a file only this build has.
fn context(env: &common::Env, name: &str, run: &str) -> String {
    let dockerfile = format!("FROM $BASE\nRUN {run}\nCOPY data.txt /data.txt\n");
    let data = format!("data of {name}\n").repeat(200);
    let ctx = env.context(name, &[("Dockerfile", &dockerfile), ("data.txt", &data)]);
    ctx.to_str().unwrap().to_string()
}

/// `buildctl build` of `ctx` into the local directory `out`, as a child process.
fn spawn_build(bin: &Path, daemon: &Daemon, ctx: &str, out: &Path) -> Child {
    Command::new(bin)
        .args(["--addr", &daemon.addr(), "build", "--progress", "plain"])
        .args(["--frontend", "dockerfile.v0"])
        .args(["--local", &format!("context={ctx}")])
        .args(["--local", &format!("dockerfile={ctx}")])
        .args(["--output", &format!("type=local,dest={}", out.display())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn daemon_log(env: &common::Env) -> String {
    std::fs::read_to_string(env.work.path().join("buildkitd.log")).unwrap_or_default()
}

#[test]
fn fifty_concurrent_builds_complete_with_their_own_results() {
    let test = "fifty_concurrent_builds_complete_with_their_own_results";
    let Some((bin, env)) = prerequisites(test) else {
        return;
    };
    let daemon = Daemon::start(env.root.path(), env.work.path());

    // Fifty sessions at once, each with its own context, a RUN no other build shares, and either
    // a local export or a push to the registry; all share one base image, pulled once.
    let contexts: Vec<String> = (0..50)
        .map(|i| {
            context(
                &env,
                &format!("load-{i}"),
                &format!("echo build-{i} > /which"),
            )
        })
        .collect();
    let outs: Vec<PathBuf> = (0..50)
        .map(|i| env.work.path().join(format!("load-out-{i}")))
        .collect();
    let image = |i: usize| env.image(&format!("load/build-{i}:latest"));
    std::thread::scope(|s| {
        let handles: Vec<_> = contexts
            .iter()
            .zip(&outs)
            .enumerate()
            .map(|(i, (ctx, out))| {
                let (bin, daemon, name) = (&bin, &daemon, image(i));
                s.spawn(move || {
                    if i % 2 == 0 {
                        build_into_dir(bin, daemon, ctx, out)
                    } else {
                        let output = format!("type=image,name={name},push=true");
                        dockerfile_build(bin, daemon, ctx, &["--output", &output])
                    }
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            ok(&h.join().unwrap(), &format!("concurrent build {i} of 50"));
        }
    });
    for (i, out) in outs.iter().enumerate() {
        let (which, data) = if i % 2 == 0 {
            (
                std::fs::read_to_string(out.join("which")).unwrap(),
                std::fs::read_to_string(out.join("data.txt")).unwrap(),
            )
        } else {
            let rootfs = env.rootfs_of(&image(i));
            (
                std::fs::read_to_string(rootfs.path().join("which")).unwrap(),
                std::fs::read_to_string(rootfs.path().join("data.txt")).unwrap(),
            )
        };
        assert_eq!(which, format!("build-{i}\n"), "build {i}");
        assert_eq!(data, format!("data of load-{i}\n").repeat(200), "build {i}");
    }
}

#[test]
fn a_client_that_disconnects_mid_build_leaves_the_others_untouched() {
    let test = "a_client_that_disconnects_mid_build_leaves_the_others_untouched";
    let Some((bin, env)) = prerequisites(test) else {
        return;
    };
    let daemon = Daemon::start(env.root.path(), env.work.path());

    // One client's slow step is running...
    let slow = context(&env, "slow", "echo started-slow-step && sleep 311");
    let mut client = spawn_build(&bin, &daemon, &slow, &env.work.path().join("slow-out"));
    let slow_running = || processes_running(b"sleep\x00311\x00") > 0;
    wait_until(60, || "the slow step never started".into(), slow_running);

    // ...twenty others are in theirs...
    let others: Vec<(PathBuf, Child)> = (0..20)
        .map(|i| {
            let ctx = context(
                &env,
                &format!("other-{i}"),
                &format!("sleep 3 && echo {i} > /which"),
            );
            let out = env.work.path().join(format!("other-out-{i}"));
            let child = spawn_build(&bin, &daemon, &ctx, &out);
            (out, child)
        })
        .collect();
    wait_until(
        60,
        || {
            format!(
                "the other builds' steps never started:\n{}",
                daemon_log(&env)
            )
        },
        || processes_running(b"sleep\x003\x00") >= 10,
    );

    // ...when the first client is killed: its step stops, the others finish with their results.
    client.kill().unwrap();
    let _ = client.wait();
    wait_until(
        30,
        || {
            format!(
                "the step kept running after its client left:\n{}",
                daemon_log(&env)
            )
        },
        || !slow_running(),
    );
    for (i, (out, child)) in others.into_iter().enumerate() {
        ok(
            &child.wait_with_output().unwrap(),
            &format!("build {i} of 20"),
        );
        assert_eq!(
            std::fs::read_to_string(out.join("which")).unwrap(),
            format!("{i}\n")
        );
    }

    // Nothing of the cancelled build stays mounted, and the daemon goes on serving.
    let root = env.root.path().canonicalize().unwrap();
    let root = root.to_str().unwrap().to_string();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_until(
        30,
        || format!("mounts left behind: {:#?}\n{}", mounted(), daemon_log(&env)),
        || mounted().is_empty(),
    );
    let after = context(&env, "after", "echo after > /which");
    let out = env.work.path().join("after-out");
    ok(
        &build_into_dir(&bin, &daemon, &after, &out),
        "a build after the cancelled one",
    );
    assert_eq!(
        std::fs::read_to_string(out.join("which")).unwrap(),
        "after\n"
    );
}

/// Bytes of regular files below `dir`.
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn garbage_collection_between_concurrent_builds_keeps_the_cache_small_and_loses_nothing() {
    let test =
        "garbage_collection_between_concurrent_builds_keeps_the_cache_small_and_loses_nothing";
    let Some((bin, env)) = prerequisites(test) else {
        return;
    };
    let config = env.work.path().join("kiln.toml");
    std::fs::write(&config, "gc_keep_storage = \"1MB\"\n").unwrap();
    let daemon = Daemon::start_configured(env.root.path(), env.work.path(), false, Some(&config));

    // Thirty builds of 400 KB layers, started 50 ms apart so that collections (which run when
    // no build is in flight) and new builds interleave.
    let outs: Vec<PathBuf> = (0..30)
        .map(|i| env.work.path().join(format!("gc-out-{i}")))
        .collect();
    let children: Vec<Child> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let run = format!("head -c 400000 /dev/urandom > /blob && echo {i} > /which");
            let ctx = context(&env, &format!("gc-{i}"), &run);
            std::thread::sleep(Duration::from_millis(50 * (i % 10) as u64));
            spawn_build(&bin, &daemon, &ctx, out)
        })
        .collect();
    for (i, (child, out)) in children.into_iter().zip(&outs).enumerate() {
        ok(
            &child.wait_with_output().unwrap(),
            &format!("build {i} of 30"),
        );
        assert_eq!(
            std::fs::read_to_string(out.join("which")).unwrap(),
            format!("{i}\n")
        );
        assert_eq!(std::fs::metadata(out.join("blob")).unwrap().len(), 400_000);
    }
    // 12 MB of layers were written; after the last collection the cache is back near 1 MB
    // (plus the base image's layer, which is the most recently used).
    wait_until(
        30,
        || {
            format!(
                "the layers take {} bytes after the builds:\n{}",
                tree_size(&env.root.path().join("l")),
                daemon_log(&env)
            )
        },
        || tree_size(&env.root.path().join("l")) < 4_000_000,
    );
    assert!(
        daemon_log(&env).contains("garbage collection"),
        "{}",
        daemon_log(&env)
    );
    let after = context(&env, "after", "echo after > /which");
    let out = env.work.path().join("after-out");
    ok(
        &build_into_dir(&bin, &daemon, &after, &out),
        "a build after the collections",
    );
}
