//! The fake serving repositories over git's smart HTTP, cloned with the `git` CLI: public ones
//! anonymously, private ones only with a running task's token.
#![cfg(feature = "fake")]

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use kiln_gitea::fake::{FakeGitea, QueuedJob};
use kiln_gitea::proto::{self, Result as Outcome};
use kiln_gitea::{Client, ClientOptions};

const WORKFLOW: &str = r#"
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: owner/private-action@v1
"#;

/// Runs `git` in `dir` without any user or system configuration (no credential helpers, no
/// prompts), asynchronously so the fake on this runtime can answer.
async fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .await
        .expect("run git")
}

async fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args).await;
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with `action.yml` and `extra_tags` more tagged commits, cloned bare to
/// `<root>/<owner_repo>.git`.
async fn make_repo(root: &Path, owner_repo: &str, extra_tags: usize) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git_ok(w, &["init", "-q", "-b", "main", "."]).await;
    std::fs::write(w.join("action.yml"), format!("name: {owner_repo}\n")).unwrap();
    git_ok(w, &["add", "."]).await;
    git_ok(w, &["commit", "-q", "-m", "first"]).await;
    git_ok(w, &["tag", "v1"]).await;
    for i in 0..extra_tags {
        git_ok(
            w,
            &["commit", "-q", "--allow-empty", "-m", &format!("c{i}")],
        )
        .await;
        git_ok(w, &["tag", &format!("t{i}")]).await;
    }
    let bare = root.join(format!("{owner_repo}.git"));
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git_ok(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            w.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    )
    .await;
}

/// Clones `url` into a fresh directory; `Ok` with the checked-out `action.yml`, or `Err` with
/// git's stderr.
async fn clone(url: &str) -> Result<String, String> {
    let dest = tempfile::tempdir().unwrap();
    let out = git(dest.path(), &["clone", "-q", url, "co"]).await;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(std::fs::read_to_string(dest.path().join("co/action.yml")).unwrap())
}

/// `http://user:password@127.0.0.1:PORT/path`.
fn with_credentials(gitea: &FakeGitea, user: &str, password: &str, path: &str) -> String {
    let host = gitea.url().trim_start_matches("http://").to_string();
    format!("http://{user}:{password}@{host}{path}")
}

fn lines(gitea: &FakeGitea) -> Vec<String> {
    gitea.git_requests().iter().map(|r| r.to_string()).collect()
}

fn options() -> ClientOptions {
    ClientOptions {
        version: "v0.0.0-test".into(),
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

/// A claimed task: its id and token.
struct Claimed {
    id: i64,
    token: String,
}

/// Registers a runner, queues a job and claims it, as `tests/client.rs` does.
async fn running_task(gitea: &FakeGitea) -> (Client, Claimed) {
    let client = Client::new(&gitea.url(), options()).unwrap();
    let runner = client
        .register(proto::RegisterRequest {
            name: "runner-1".into(),
            token: gitea.registration_token(),
            version: "v0.0.0-test".into(),
            labels: vec!["ubuntu-latest".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .runner
        .unwrap();
    let client = client.with_credentials(&runner.uuid, &runner.token);
    let job = gitea.queue_job(QueuedJob::new(WORKFLOW, "build"));
    let task = client
        .fetch_task(
            proto::FetchTaskRequest { tasks_version: 0 },
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .task
        .expect("a task");
    // What a runner hands to git: the task's `GITEA_TOKEN`, the server's token for the task.
    let token = task.secrets["GITEA_TOKEN"].clone();
    assert_eq!(token, gitea.task(job).unwrap().token);
    (client, Claimed { id: task.id, token })
}

async fn finish(client: &Client, task_id: i64) {
    client
        .update_task(proto::UpdateTaskRequest {
            state: Some(proto::TaskState {
                id: task_id,
                result: Outcome::Success as i32,
                started_at: Some(proto::now()),
                stopped_at: Some(proto::now()),
                steps: Vec::new(),
            }),
            outputs: Default::default(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn public_repository_clones_anonymously_with_or_without_dot_git() {
    let root = tempfile::tempdir().unwrap();
    make_repo(root.path(), "owner/action", 0).await;
    let gitea = FakeGitea::start().await;
    gitea.serve_repositories(root.path());

    let url = gitea.url();
    assert_eq!(
        clone(&format!("{url}/owner/action")).await.unwrap(),
        "name: owner/action\n"
    );
    assert_eq!(
        clone(&format!("{url}/owner/action.git")).await.unwrap(),
        "name: owner/action\n"
    );
    // Names match without regard to case, as on Gitea.
    assert_eq!(
        clone(&format!("{url}/Owner/Action")).await.unwrap(),
        "name: owner/action\n"
    );

    let requests = gitea.git_requests();
    assert!(requests
        .iter()
        .all(|r| r.token.is_none() && r.status == 200));
    assert_eq!(
        lines(&gitea)[..2],
        [
            "GET /owner/action/info/refs?service=git-upload-pack 200 anonymous",
            "POST /owner/action/git-upload-pack 200 anonymous",
        ]
    );
    assert!(requests
        .iter()
        .any(|r| r.path == "/owner/action.git/git-upload-pack"));
}

#[tokio::test]
async fn private_repository_needs_the_token_of_a_running_task() {
    let root = tempfile::tempdir().unwrap();
    make_repo(root.path(), "owner/private-action", 0).await;
    let gitea = FakeGitea::start().await;
    gitea.serve_repositories(root.path());
    gitea.set_private("owner/private-action");
    let url = gitea.url();

    let err = clone(&format!("{url}/owner/private-action"))
        .await
        .unwrap_err();
    assert!(err.contains("could not read Username"), "{err}");
    assert_eq!(
        lines(&gitea),
        ["GET /owner/private-action/info/refs?service=git-upload-pack 401 anonymous"]
    );

    let (client, task) = running_task(&gitea).await;
    let authed = with_credentials(&gitea, "x", &task.token, "/owner/private-action.git");
    assert_eq!(
        clone(&authed).await.unwrap(),
        "name: owner/private-action\n"
    );
    // Git asks anonymously first and answers the challenge with the URL's credentials, which it
    // then sends with every request (protocol v2 posts twice: ls-refs, then fetch).
    let path = "/owner/private-action.git";
    let seen = lines(&gitea);
    assert_eq!(
        seen[1..3],
        [
            format!("GET {path}/info/refs?service=git-upload-pack 401 anonymous"),
            format!(
                "GET {path}/info/refs?service=git-upload-pack 200 task {}",
                task.id
            ),
        ]
    );
    assert!(seen.len() > 3);
    for line in &seen[3..] {
        assert_eq!(
            line,
            &format!("POST {path}/git-upload-pack 200 task {}", task.id)
        );
    }
    assert!(gitea.git_requests()[2..]
        .iter()
        .all(|r| r.token.as_deref() == Some(task.token.as_str()) && r.authenticated()));

    // The token as the username with no password works too (Gitea takes it as the token).
    let as_user = with_credentials(&gitea, &task.token, "x-oauth-basic", path);
    assert!(clone(&as_user).await.is_ok());

    // Once the task is final its token is worth nothing: the whole request is refused.
    finish(&client, task.id).await;
    let before = gitea.git_requests().len();
    let err = clone(&authed).await.unwrap_err();
    assert!(err.contains("Authentication failed"), "{err}");
    let after = &gitea.git_requests()[before..];
    assert_eq!(
        after.last().unwrap().to_string(),
        format!("GET {path}/info/refs?service=git-upload-pack 401 bad token")
    );
    assert!(after.iter().all(|r| !r.authenticated()));
}

#[tokio::test]
async fn gzipped_upload_pack_requests_are_decoded() {
    // Forty tags are forty wants: git gzips a request over 1 KiB.
    let root = tempfile::tempdir().unwrap();
    make_repo(root.path(), "owner/tags", 40).await;
    let gitea = FakeGitea::start().await;
    gitea.serve_repositories(root.path());
    let dest = tempfile::tempdir().unwrap();
    let url = format!("{}/owner/tags", gitea.url());
    git_ok(dest.path(), &["clone", "-q", "--mirror", &url, "m"]).await;
    let tags = git_ok(&dest.path().join("m"), &["tag", "--list"]).await;
    assert_eq!(tags.lines().count(), 41);

    // And one built by hand: v0 negotiation for HEAD, gzipped.
    let head = git_ok(&root.path().join("owner/tags.git"), &["rev-parse", "HEAD"]).await;
    let want = format!("want {}\n", head.trim());
    let mut pkt = format!("{:04x}{want}0000", want.len() + 4);
    pkt.push_str("0009done\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(pkt.as_bytes()).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{url}/git-upload-pack"))
        .header("content-type", "application/x-git-upload-pack-request")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-git-upload-pack-result"
    );
    let body = resp.bytes().await.unwrap();
    assert!(
        body.starts_with(b"0008NAK\n"),
        "{:?}",
        &body[..body.len().min(40)]
    );
    assert!(body.windows(4).any(|w| w == b"PACK"));
}

#[tokio::test]
async fn gitea_status_codes_around_the_backend() {
    let root = tempfile::tempdir().unwrap();
    make_repo(root.path(), "owner/action", 0).await;
    let gitea = FakeGitea::start().await;
    let http = reqwest::Client::new();
    let url = gitea.url();
    let get = |path: &str| http.get(format!("{url}{path}")).send();
    let refs = "/info/refs?service=git-upload-pack";

    // Until repositories are served, repository paths are unknown like any other.
    assert_eq!(
        get(&format!("/owner/action{refs}")).await.unwrap().status(),
        404
    );
    gitea.serve_repositories(root.path());
    assert_eq!(
        get(&format!("/owner/action{refs}")).await.unwrap().status(),
        200
    );
    assert_eq!(get("/owner/action/HEAD").await.unwrap().status(), 404);
    assert_eq!(get("/nobody/action/info/refs").await.unwrap().status(), 404);

    // A missing repository asks anonymous callers to sign in, as a private one does.
    let resp = get(&format!("/owner/missing{refs}")).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"Gitea\"");

    // Pushing needs a signed-in caller, and the fake is read-only.
    let resp = get("/owner/action/info/refs?service=git-receive-pack")
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (_client, task) = running_task(&gitea).await;
    let resp = http
        .get(format!(
            "{url}/owner/action/info/refs?service=git-receive-pack"
        ))
        .basic_auth("x", Some(&task.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .get(format!("{url}/owner/missing{refs}"))
        .bearer_auth(&task.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Credentials naming no running task fail even a public pull, without a challenge.
    let resp = http
        .get(format!("{url}/owner/action{refs}"))
        .basic_auth("x", Some("0".repeat(40)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("www-authenticate").is_none());

    // The Connect routes are untouched.
    let client = Client::new(&url, options()).unwrap();
    assert_eq!(client.ping("kiln").await.unwrap().data, "Hello, kiln!");
}
