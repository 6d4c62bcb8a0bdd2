//! `uses:` references: local actions in the workspace, remote actions cloned with git2 and kept per
//! commit, and their `action.yml`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
#[derive(Debug, Clone)]
pub struct ActionCache {
    dir: PathBuf,
    insecure: bool,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// `url@ref` → resolved tree, so one job fetches each reference once.
    resolved: Arc<Mutex<HashMap<String, PathBuf>>>,
}

impl ActionCache {
    pub fn new(config: &ExecConfig) -> ActionCache {
        ActionCache {
            dir: config.action_cache.clone(),
            insecure: config.insecure_actions,
            locks: Arc::default(),
            resolved: Arc::default(),
        }
    }

    /// Clone or update the repository of `action` and return the directory of its tree at the
    /// reference. A reference that cannot be fetched but was fetched before is used with a warning.
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
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(url.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let (dir, insecure) = (self.dir.clone(), self.insecure);
        let (url2, reference2) = (url.clone(), reference.clone());
        let tree =
            tokio::task::spawn_blocking(move || fetch_tree(&dir, &url2, &reference2, insecure))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot get action {repo}@{reference} from {url}: {e}"))?;
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, tree.clone());
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

fn fetch_tree(cache: &Path, url: &str, reference: &str, insecure: bool) -> Result<PathBuf, String> {
    let repo_dir = cache.join("repos").join(format!("{}.git", slug(url)));
    std::fs::create_dir_all(&repo_dir)
        .map_err(|e| format!("cannot create {}: {e}", repo_dir.display()))?;
    let repo = match git2::Repository::open_bare(&repo_dir) {
        Ok(r) => r,
        Err(_) => git2::Repository::init_bare(&repo_dir).map_err(|e| e.message().to_string())?,
    };
    let is_sha = reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit());
    let local = resolve(&repo, reference);
    let commit = match (is_sha, local) {
        (true, Some(commit)) => commit,
        (_, local) => {
            let fetched = fetch(&repo, url, reference, insecure);
            match (fetched, resolve(&repo, reference), local) {
                (Ok(()), Some(commit), _) => commit,
                (Ok(()), None, _) => {
                    return Err(format!(
                        "the repository has no branch, tag or commit `{reference}`"
                    ));
                }
                (Err(e), _, Some(commit)) => {
                    tracing::warn!(%url, %reference, error = %e, "cannot update action; using the cached copy");
                    commit
                }
                (Err(e), _, None) => return Err(e),
            }
        }
    };
    let tree_dir = cache.join("trees").join(slug(url)).join(commit.to_string());
    if tree_dir.is_dir() {
        return Ok(tree_dir);
    }
    let tmp = tree_dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let object = repo
        .find_object(commit, None)
        .map_err(|e| e.message().to_string())?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.target_dir(&tmp).force();
    repo.checkout_tree(&object, Some(&mut checkout))
        .map_err(|e| e.message().to_string())?;
    match std::fs::rename(&tmp, &tree_dir) {
        Ok(()) => Ok(tree_dir),
        Err(_) if tree_dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(tree_dir)
        }
        Err(e) => Err(format!(
            "cannot move the action into {}: {e}",
            tree_dir.display()
        )),
    }
}

fn fetch(
    repo: &git2::Repository,
    url: &str,
    reference: &str,
    insecure: bool,
) -> Result<(), String> {
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| e.message().to_string())?;
    let mut callbacks = git2::RemoteCallbacks::new();
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
