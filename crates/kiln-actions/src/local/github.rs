//! The `github` context of a local run (`kiln exec`), read from the checkout with git2 where
//! possible: commit, branch and `owner/name` from the `origin` remote.

use std::path::Path;

use serde_json::{json, Value};

use super::LocalRun;

/// The `github` context of a local run, read from the checkout with git2 where possible.
pub(super) fn github_context(run: &LocalRun) -> Value {
    let git = GitInfo::read(&run.workspace);
    let repository = git.repository.clone().unwrap_or_else(|| {
        format!(
            "local/{}",
            run.workspace
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("workspace")
        )
    });
    let owner = repository.split('/').next().unwrap_or("local").to_string();
    let mut ref_name = git.branch.clone().unwrap_or_default();
    let mut reference = if ref_name.is_empty() {
        String::new()
    } else {
        format!("refs/heads/{ref_name}")
    };
    if let Some(r) = run.event.get("ref").and_then(Value::as_str) {
        reference = r.to_string();
        ref_name = r.rsplit('/').next().unwrap_or(r).to_string();
    }
    let server = run.server_url.trim_end_matches('/').to_string();
    let pr = run.event.get("pull_request");
    json!({
        "event_name": run.event_name,
        "event": run.event,
        "sha": git.sha.unwrap_or_default(),
        "ref": reference,
        "ref_name": ref_name,
        "ref_type": if reference.starts_with("refs/tags/") { "tag" } else { "branch" },
        "repository": repository,
        "repository_owner": owner,
        "actor": std::env::var("USER").unwrap_or_else(|_| "kiln".into()),
        "triggering_actor": std::env::var("USER").unwrap_or_else(|_| "kiln".into()),
        "run_id": "1",
        "run_number": "1",
        "run_attempt": "1",
        "retention_days": "0",
        "server_url": server,
        "api_url": format!("{server}/api/v1"),
        "graphql_url": "",
        "token": run.secrets.get("GITHUB_TOKEN").cloned().unwrap_or_default(),
        "workflow": run.workflow.name.clone().unwrap_or_else(|| run.workflow.file_name.clone()),
        "head_ref": pr.and_then(|p| p.pointer("/head/ref")).cloned().unwrap_or(json!("")),
        "base_ref": pr.and_then(|p| p.pointer("/base/ref")).cloned().unwrap_or(json!("")),
    })
}

#[derive(Debug, Default)]
struct GitInfo {
    sha: Option<String>,
    branch: Option<String>,
    repository: Option<String>,
}

impl GitInfo {
    fn read(dir: &Path) -> GitInfo {
        let Ok(repo) = git2::Repository::discover(dir) else {
            return GitInfo::default();
        };
        let head = repo.head().ok();
        let sha = head
            .as_ref()
            .and_then(|h| h.peel_to_commit().ok())
            .map(|c| c.id().to_string());
        let branch = head
            .as_ref()
            .filter(|h| h.is_branch())
            .and_then(|h| h.shorthand().ok().map(str::to_string));
        let repository = repo
            .find_remote("origin")
            .ok()
            .and_then(|r| r.url().ok().map(str::to_string))
            .and_then(|url| repository_from_url(&url));
        GitInfo {
            sha,
            branch,
            repository,
        }
    }
}

/// `owner/name` from a remote URL (`https://host/owner/name.git`, `git@host:owner/name.git`).
fn repository_from_url(url: &str) -> Option<String> {
    let path = url.trim_end_matches('/').trim_end_matches(".git");
    let path = path
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.starts_with("//"))
        .unwrap_or(path);
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let name = parts.pop()?;
    let owner = parts.pop()?;
    Some(format!("{owner}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        assert_eq!(
            repository_from_url("https://gitea.example/org/app.git").as_deref(),
            Some("org/app")
        );
        assert_eq!(
            repository_from_url("git@gitea.example:org/app.git").as_deref(),
            Some("org/app")
        );
        assert_eq!(
            repository_from_url("ssh://git@host:2222/org/app").as_deref(),
            Some("org/app")
        );
        assert_eq!(repository_from_url("app"), None);
    }
}
