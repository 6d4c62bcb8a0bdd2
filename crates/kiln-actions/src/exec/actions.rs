//! `uses:` references: local actions in the workspace, remote actions cloned with git2 and kept per
//! commit, and their `action.yml`.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::model::Action;

use super::ExecConfig;

/// What a step's `uses:` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRef {
    /// `./path` in the workspace.
    Local(String),
    /// `docker://image`.
    Docker(String),
    /// `owner/repo[/path]@ref` (from the default actions URL) or `https://host/owner/repo[/path]@ref`.
    Remote {
        /// The repository to clone.
        url: String,
        /// `owner/repo`.
        repo: String,
        /// Directory of the action inside the repository ('' for the root).
        path: String,
        reference: String,
    },
}

impl ActionRef {
    pub fn parse(uses: &str, default_url: &str) -> Result<ActionRef, String> {
        let uses = uses.trim();
        if uses.starts_with("./") || uses == "." {
            return Ok(ActionRef::Local(uses.to_string()));
        }
        if let Some(image) = uses.strip_prefix("docker://") {
            return Ok(ActionRef::Docker(image.to_string()));
        }
        let bad = || {
            format!("`{uses}` is not a valid action reference: expected ./path, docker://image, owner/repo@ref or https://host/owner/repo@ref")
        };
        let (location, reference) = uses.rsplit_once('@').ok_or_else(bad)?;
        if reference.is_empty() {
            return Err(bad());
        }
        let (base, rest) = match location.split_once("://") {
            Some((scheme, rest)) if scheme == "http" || scheme == "https" => {
                let (host, path) = rest.split_once('/').ok_or_else(bad)?;
                (format!("{scheme}://{host}"), path.to_string())
            }
            Some(_) => return Err(bad()),
            None => (
                default_url.trim_end_matches('/').to_string(),
                location.to_string(),
            ),
        };
        let mut parts = rest.split('/').filter(|p| !p.is_empty());
        let (Some(owner), Some(name)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        let path: Vec<&str> = parts.collect();
        if path.iter().any(|p| *p == ".." || *p == ".") {
            return Err(format!(
                "`{uses}`: the action path may not contain `.` or `..`"
            ));
        }
        let name = name.trim_end_matches(".git");
        Ok(ActionRef::Remote {
            url: format!("{base}/{owner}/{name}"),
            repo: format!("{owner}/{name}"),
            path: path.join("/"),
            reference: reference.to_string(),
        })
    }

    /// `actions/checkout` (any ref), which `kiln exec` skips in a local checkout.
    pub fn is_checkout(&self) -> bool {
        matches!(self, ActionRef::Remote { repo, path, .. } if repo.eq_ignore_ascii_case("actions/checkout") && path.is_empty())
    }
}

/// An action ready to run.
#[derive(Debug, Clone)]
pub struct LoadedAction {
    /// How the log names it (`owner/repo@ref` or `./path`).
    pub name: String,
    pub dir: PathBuf,
    pub action: Action,
}

/// Remote actions on disk: one bare repository per URL, one checked-out tree per commit.
///
/// The executor makes one `ActionCache` per job, and several jobs (or runner processes) share the
/// directory, so fetching and checking out a repository is serialized by a process-wide lock and a
/// file lock on the repository (see [`ActionCache::fetch`]), not by anything in this struct.
#[derive(Debug, Clone)]
pub struct ActionCache {
    dir: PathBuf,
    insecure: bool,
    /// Basic-auth password for clones from one host (see [`ExecConfig::clone_token`]).
    token: Option<super::CloneToken>,
    /// `url@ref` → resolved tree, so one job fetches each reference once.
    resolved: Arc<Mutex<HashMap<String, PathBuf>>>,
}

/// What the jobs of this process know about one bare repository; guarded by its lock.
#[derive(Debug, Default)]
struct RepoState {
    /// Reference → when its last successful fetch started and the tree it resolved to, so jobs
    /// that waited for that fetch use its result instead of fetching again.
    fetched: HashMap<String, (Instant, PathBuf)>,
}

/// The process-wide lock of the bare repository at `repo_dir`. Jobs have separate
/// `ActionCache`s, so the lock cannot live in one; it is async so that waiting jobs do not hold
/// blocking threads.
fn repo_lock(repo_dir: &Path) -> Arc<tokio::sync::Mutex<RepoState>> {
    type Locks = Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<RepoState>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    LOCKS
        .get_or_init(Locks::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(repo_dir.to_path_buf())
        .or_default()
        .clone()
}

/// A full (40 hex digits) commit id, which names a tree that never changes.
fn is_full_sha(reference: &str) -> bool {
    reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit())
}

impl ActionCache {
    pub fn new(config: &ExecConfig) -> ActionCache {
        ActionCache {
            dir: config.action_cache.clone(),
            insecure: config.insecure_actions,
            token: config.clone_token.clone(),
            resolved: Arc::default(),
        }
    }

    /// Clone or update the repository of `action` and return the directory of its tree at the
    /// reference. A reference that cannot be fetched but was fetched before is used with a warning.
    ///
    /// Fetch and checkout hold the repository's lock, in this process and (with `flock`) across
    /// processes sharing the cache: concurrent fetches into one bare repository fail on git's
    /// lock files. A job that waited for another job's fetch of the same reference uses its tree.
    pub async fn fetch(&self, action: &ActionRef) -> Result<PathBuf, String> {
        let ActionRef::Remote {
            url,
            repo,
            reference,
            ..
        } = action
        else {
            return Err("not a remote action".into());
        };
        let key = format!("{url}@{reference}");
        if let Some(dir) = self
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(dir.clone());
        }
        let remember = |tree: &PathBuf| {
            self.resolved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), tree.clone());
        };
        let slug = slug(url);
        // A commit already checked out needs neither the server nor the lock: a tree only appears
        // complete, renamed into place.
        if is_full_sha(reference) {
            let tree = self
                .dir
                .join("trees")
                .join(&slug)
                .join(reference.to_ascii_lowercase());
            if tree.is_dir() {
                remember(&tree);
                return Ok(tree);
            }
        }
        let repo_dir = self.dir.join("repos").join(format!("{slug}.git"));
        let asked = Instant::now();
        let lock = repo_lock(&repo_dir);
        let mut state = lock.lock().await;
        // A fetch that started after this job asked is as fresh as one this job would make.
        if let Some((started, tree)) = state.fetched.get(reference.as_str()) {
            if *started >= asked && tree.is_dir() {
                let tree = tree.clone();
                remember(&tree);
                return Ok(tree);
            }
        }
        let started = Instant::now();
        let (dir, insecure) = (self.dir.clone(), self.insecure);
        let token = self
            .token
            .as_ref()
            .filter(|t| t.applies_to(url))
            .map(|t| t.token.clone());
        let (url2, reference2) = (url.clone(), reference.clone());
        let (tree, fresh) = tokio::task::spawn_blocking(move || {
            // Held (until dropped at the end of this closure) across fetch and checkout.
            let _flock = lock_file(&repo_dir.with_extension("git.lock"))?;
            fetch_tree(
                &dir,
                &repo_dir,
                &url2,
                &reference2,
                insecure,
                token.as_deref(),
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot get action {repo}@{reference} from {url}: {e}"))?;
        if fresh {
            state
                .fetched
                .insert(reference.clone(), (started, tree.clone()));
        }
        drop(state);
        remember(&tree);
        Ok(tree)
    }

    /// Find and parse the action's metadata.
    pub async fn load(&self, action: &ActionRef, workspace: &Path) -> Result<LoadedAction, String> {
        let (name, dir) = match action {
            ActionRef::Local(path) => (path.clone(), workspace.join(path)),
            ActionRef::Remote {
                repo,
                path,
                reference,
                ..
            } => {
                let tree = self.fetch(action).await?;
                let name = if path.is_empty() {
                    format!("{repo}@{reference}")
                } else {
                    format!("{repo}/{path}@{reference}")
                };
                (name, tree.join(path))
            }
            ActionRef::Docker(image) => return Err(format!("docker://{image} has no action.yml")),
        };
        let dir = dir.canonicalize().unwrap_or(dir);
        for file in ["action.yml", "action.yaml"] {
            let path = dir.join(file);
            if let Ok(text) = std::fs::read_to_string(&path) {
                let action =
                    Action::parse(&format!("{name}/{file}"), &text).map_err(|e| e.to_string())?;
                return Ok(LoadedAction { name, dir, action });
            }
        }
        if dir.join("Dockerfile").is_file() {
            return Err(format!(
                "{name} is a Dockerfile action without action.yml; Docker actions need container mode, which this runner does not provide yet"
            ));
        }
        Err(format!(
            "Can't find 'action.yml', 'action.yaml' or 'Dockerfile' under '{}'. Did you forget to run actions/checkout before running your local action?",
            dir.display()
        ))
    }
}

/// Directory-safe name for a URL.
fn slug(url: &str) -> String {
    let s: String = url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s
}

/// Take an exclusive advisory lock on `path` (created if missing), waiting for other holders; it
/// is released when the returned file is closed, also when the process dies.
fn lock_file(path: &Path) -> Result<std::fs::File, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
}

/// Remove the `*.lock` files git leaves in a bare repository when it dies mid-write (`config.lock`,
/// `index.lock`, `FETCH_HEAD.lock`, `refs/…/x.lock`); each would fail every later fetch with
/// "failed to create locked file". Safe only with the repository's file lock held: every kiln
/// process takes it before touching the repository, so no live git writer owns these files.
fn remove_stale_git_locks(repo_dir: &Path) {
    let walk = walkdir::WalkDir::new(repo_dir)
        .into_iter()
        // Objects are written under temporary names, not `.lock` files; skip the bulk of the repo.
        .filter_entry(|e| e.depth() != 1 || e.file_name() != "objects");
    for entry in walk.flatten() {
        if entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(".lock") {
            tracing::warn!(path = %entry.path().display(), "removing a stale git lock file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Remove checkouts (`<commit>.tmp-…`) a dead process left in `trees`; with the repository's file
/// lock held no live checkout of this URL is in progress.
fn remove_stale_checkouts(trees: &Path) {
    let Ok(entries) = std::fs::read_dir(trees) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(".tmp-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Fetch `reference` into the bare repository `repo_dir` and check its commit out under
/// `<cache>/trees`, returning the tree and whether the reference was fetched (false when a
/// fetch failed and a commit fetched before is used). The caller holds the repository's locks.
fn fetch_tree(
    cache: &Path,
    repo_dir: &Path,
    url: &str,
    reference: &str,
    insecure: bool,
    token: Option<&str>,
) -> Result<(PathBuf, bool), String> {
    std::fs::create_dir_all(repo_dir)
        .map_err(|e| format!("cannot create {}: {e}", repo_dir.display()))?;
    remove_stale_git_locks(repo_dir);
    let repo = match git2::Repository::open_bare(repo_dir) {
        Ok(r) => r,
        Err(_) => git2::Repository::init_bare(repo_dir).map_err(|e| e.message().to_string())?,
    };
    let local = resolve(&repo, reference);
    let (commit, fresh) = match (is_full_sha(reference), local) {
        (true, Some(commit)) => (commit, true),
        (_, local) => {
            let fetched = fetch(&repo, url, reference, insecure, token);
            match (fetched, resolve(&repo, reference), local) {
                (Ok(()), Some(commit), _) => (commit, true),
                (Ok(()), None, _) => {
                    return Err(format!(
                        "the repository has no branch, tag or commit `{reference}`"
                    ));
                }
                (Err(e), _, Some(commit)) => {
                    tracing::warn!(%url, %reference, error = %e, "cannot update action; using the cached copy");
                    (commit, false)
                }
                (Err(e), _, None) => return Err(e),
            }
        }
    };
    let trees = cache.join("trees").join(slug(url));
    let tree_dir = trees.join(commit.to_string());
    if tree_dir.is_dir() {
        return Ok((tree_dir, fresh));
    }
    remove_stale_checkouts(&trees);
    std::fs::create_dir_all(&trees)
        .map_err(|e| format!("cannot create {}: {e}", trees.display()))?;
    // Unique per call (not just per process: jobs share the pid, and runners in separate
    // containers may too), so no other checkout writes into or renames this directory.
    static CHECKOUTS: AtomicU64 = AtomicU64::new(0);
    let tmp = trees.join(format!(
        "{commit}.tmp-{}-{}-{}",
        std::process::id(),
        CHECKOUTS.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let checked_out = checkout(&repo, commit, &tmp);
    let placed = checked_out.and_then(|()| match std::fs::rename(&tmp, &tree_dir) {
        Ok(()) => Ok(()),
        // Someone else (a kiln without the file lock) placed the same commit first: use theirs.
        Err(_) if tree_dir.is_dir() => Ok(()),
        Err(e) => Err(format!(
            "cannot move the action into {}: {e}",
            tree_dir.display()
        )),
    });
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    placed.map(|()| (tree_dir, fresh))
}

/// Write the files of `commit` into the empty directory `dir`.
fn checkout(repo: &git2::Repository, commit: git2::Oid, dir: &Path) -> Result<(), String> {
    let object = repo
        .find_object(commit, None)
        .map_err(|e| e.message().to_string())?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    // The bare repository's index describes no tree of ours; writing it would only add an
    // `index.lock` to contend on.
    checkout.target_dir(dir).force().update_index(false);
    repo.checkout_tree(&object, Some(&mut checkout))
        .map_err(|e| e.message().to_string())
}

fn fetch(
    repo: &git2::Repository,
    url: &str,
    reference: &str,
    insecure: bool,
    token: Option<&str>,
) -> Result<(), String> {
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| e.message().to_string())?;
    let mut callbacks = git2::RemoteCallbacks::new();
    if let Some(token) = token {
        // As act_runner clones from its Gitea: user `token`, the task token as password.
        callbacks.credentials(move |_, _, _| git2::Cred::userpass_plaintext("token", token));
    }
    if insecure {
        callbacks.certificate_check(|_, _| Ok(git2::CertificateCheckStatus::CertificateOk));
    }
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(callbacks);
    options.download_tags(git2::AutotagOption::None);
    let refspecs = [
        format!("+refs/heads/{reference}:refs/remotes/origin/{reference}"),
        format!("+refs/tags/{reference}:refs/tags/{reference}"),
    ];
    let short_sha = reference.len() >= 7 && reference.chars().all(|c| c.is_ascii_hexdigit());
    let all = [
        "+refs/heads/*:refs/remotes/origin/*".to_string(),
        "+refs/tags/*:refs/tags/*".to_string(),
    ];
    let specs: &[String] = if short_sha { &all } else { &refspecs };
    remote
        .fetch(specs, Some(&mut options), None)
        .map_err(|e| e.message().to_string())
}

fn resolve(repo: &git2::Repository, reference: &str) -> Option<git2::Oid> {
    for name in [
        format!("refs/tags/{reference}"),
        format!("refs/remotes/origin/{reference}"),
    ] {
        if let Ok(r) = repo.find_reference(&name) {
            if let Ok(commit) = r.peel_to_commit() {
                return Some(commit.id());
            }
        }
    }
    if reference.len() >= 7 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
        return repo
            .revparse_single(reference)
            .ok()
            .and_then(|o| o.peel_to_commit().ok())
            .map(|c| c.id());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let gh = "https://github.com";
        assert_eq!(
            ActionRef::parse("./.github/actions/x", gh).unwrap(),
            ActionRef::Local("./.github/actions/x".into())
        );
        assert_eq!(
            ActionRef::parse("docker://alpine:3", gh).unwrap(),
            ActionRef::Docker("alpine:3".into())
        );
        assert_eq!(
            ActionRef::parse("actions/checkout@v4", "https://gitea.example/").unwrap(),
            ActionRef::Remote {
                url: "https://gitea.example/actions/checkout".into(),
                repo: "actions/checkout".into(),
                path: String::new(),
                reference: "v4".into()
            }
        );
        assert_eq!(
            ActionRef::parse("https://code.example:3000/org/tools/sub/dir@main", gh).unwrap(),
            ActionRef::Remote {
                url: "https://code.example:3000/org/tools".into(),
                repo: "org/tools".into(),
                path: "sub/dir".into(),
                reference: "main".into()
            }
        );
        assert!(ActionRef::parse("actions/checkout@v4", gh)
            .unwrap()
            .is_checkout());
        for bad in [
            "actions/checkout",
            "checkout@v4",
            "ftp://x/y/z@v1",
            "a/b@",
            "a/b/../c@v1",
        ] {
            assert!(ActionRef::parse(bad, gh).is_err(), "{bad}");
        }
    }
}
