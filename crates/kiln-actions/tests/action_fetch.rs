//! Remote actions fetched by several jobs at once: each job has its own `ActionCache` (as the
//! executor makes one per job) over one shared cache directory, in one process or in several.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kiln_actions::exec::{ActionCache, ActionRef, ExecConfig};
use kiln_oci::testing::{git, TestGitDaemon};

const ROUNDS: usize = 20;
const JOBS: usize = 4;
/// Set in the child processes of `several_processes_share_one_cache`.
const CHILD_ENV: &str = "KILN_TEST_ACTION_FETCH_CHILD";

/// A bare `org/tools.git` under `served`, tagged `v4`, with a `dist/` of many files (like
/// `actions/setup-node`) so a checkout takes long enough for jobs to overlap.
fn serve_action(root: &Path) -> PathBuf {
    let work = root.join("work");
    std::fs::create_dir_all(work.join("dist/lib")).unwrap();
    std::fs::write(
        work.join("action.yml"),
        "name: tools\nruns:\n  using: composite\n  steps:\n    - run: echo hi\n      shell: bash\n",
    )
    .unwrap();
    for i in 0..200 {
        std::fs::write(
            work.join(format!("dist/lib/f{i}.js")),
            format!("// {i}\n{}", "x".repeat(2000 + i)),
        )
        .unwrap();
    }
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "action"]);
    git(&work, &["tag", "v4"]);
    let served = root.join("served");
    std::fs::create_dir_all(served.join("org")).unwrap();
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            served.join("org/tools.git").to_str().unwrap(),
        ],
    );
    served
}

fn config(state: &Path, port: u16) -> ExecConfig {
    let mut config = ExecConfig::under(state);
    config.default_actions_url = format!("git://127.0.0.1:{port}");
    config
}

/// `JOBS` caches (one per job) load `org/tools@v4` at the same time; every one must succeed and
/// see the same tree.
async fn load_together(config: &ExecConfig) -> Result<(), String> {
    let action = ActionRef::parse("org/tools@v4", &config.default_actions_url)?;
    let workspace = config.temp_dir.clone();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(JOBS));
    let tasks: Vec<_> = (0..JOBS)
        .map(|_| {
            let (cache, action, workspace) =
                (ActionCache::new(config), action.clone(), workspace.clone());
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let loaded = cache.load(&action, &workspace).await?;
                if !loaded.dir.join("dist/lib/f199.js").is_file() {
                    return Err(format!("incomplete tree {}", loaded.dir.display()));
                }
                Ok::<_, String>(loaded.dir)
            })
        })
        .collect();
    let mut dirs = Vec::new();
    for task in tasks {
        dirs.push(task.await.map_err(|e| e.to_string())??);
    }
    dirs.dedup();
    if dirs.len() != 1 {
        return Err(format!("jobs got different trees: {dirs:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_jobs_share_one_cache() {
    let root = tempfile::tempdir().unwrap();
    let daemon = TestGitDaemon::start(&serve_action(root.path()));
    let started = Instant::now();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let config = config(&root.path().join(format!("state-{round}")), daemon.port());
        if let Err(e) = load_together(&config).await {
            failures.push(format!("round {round}: {e}"));
        }
    }
    eprintln!("{ROUNDS} rounds of {JOBS} jobs in {:?}", started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A tree already in the cache is used without the server; a reference that cannot be updated
/// falls back to the copy fetched before; lock files left by a crashed process do not wedge the
/// cache.
#[tokio::test]
async fn cached_tree_reuse_and_stale_locks() {
    let root = tempfile::tempdir().unwrap();
    let served = serve_action(root.path());
    let daemon = TestGitDaemon::start(&served);
    let port = daemon.port();
    let config = config(&root.path().join("state"), port);
    load_together(&config).await.unwrap();
    // Fresh caches (new jobs) with the repository gone from the server: `v4` cannot be updated,
    // the cached one is used.
    let bare = served.join("org/tools.git");
    let hidden = served.join("org/hidden.git");
    std::fs::rename(&bare, &hidden).unwrap();
    load_together(&config).await.unwrap();
    std::fs::rename(&hidden, &bare).unwrap();

    // The repository is back and `v4` moved; the bare repository in the cache has the locks a git
    // killed mid-fetch leaves behind.
    let work = root.path().join("work");
    std::fs::write(work.join("new.txt"), "v4 moved").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "move"]);
    git(&work, &["tag", "-f", "v4"]);
    git(&work, &["push", "-qf", bare.to_str().unwrap(), "v4"]);
    let repo = only_repo(&config.action_cache);
    for lock in ["config.lock", "FETCH_HEAD.lock", "refs/tags/v4.lock"] {
        std::fs::write(repo.join(lock), "").unwrap();
    }
    let action = ActionRef::parse("org/tools@v4", &config.default_actions_url).unwrap();
    let dir = ActionCache::new(&config).fetch(&action).await.unwrap();
    assert!(
        dir.join("new.txt").is_file(),
        "{} is the old tree",
        dir.display()
    );

    // A crash while the repository was first created (only `config.lock` there).
    let state = root.path().join("state-crashed");
    let config2 = self::config(&state, port);
    let name = repo.file_name().unwrap();
    std::fs::create_dir_all(config2.action_cache.join("repos").join(name)).unwrap();
    std::fs::write(
        config2
            .action_cache
            .join("repos")
            .join(name)
            .join("config.lock"),
        "",
    )
    .unwrap();
    let dir = ActionCache::new(&config2).fetch(&action).await.unwrap();
    assert!(dir.join("new.txt").is_file());
    drop(daemon);
}

/// The one bare repository under `<action_cache>/repos`.
fn only_repo(action_cache: &Path) -> PathBuf {
    let repos: Vec<_> = std::fs::read_dir(action_cache.join("repos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "git"))
        .collect();
    assert_eq!(repos.len(), 1, "{repos:?}");
    repos[0].clone()
}

/// Several runner processes over one state directory (the in-process lock cannot serialize them;
/// the file lock must). The test binary runs itself as the children.
#[test]
fn several_processes_share_one_cache() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let daemon = TestGitDaemon::start(&serve_action(root.path()));
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut failures = Vec::new();
    for round in 0..ROUNDS / 2 {
        let state = root.path().join(format!("state-{round}"));
        let children: Vec<_> = (0..3)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", "child_process_loads_the_action", "--nocapture"])
                    .env(CHILD_ENV, &state)
                    .env("KILN_TEST_PORT", daemon.port().to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if !out.status.success() || !text.contains("1 passed") {
                failures.push(format!("round {round}: {text}"));
            }
        }
    }
    eprintln!(
        "{} rounds of 3 processes in {:?}",
        ROUNDS / 2,
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The child side of `several_processes_share_one_cache` (does nothing when run directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_loads_the_action() {
    let Some(state) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let port: u16 = std::env::var("KILN_TEST_PORT").unwrap().parse().unwrap();
    load_together(&config(Path::new(&state), port))
        .await
        .unwrap();
}
