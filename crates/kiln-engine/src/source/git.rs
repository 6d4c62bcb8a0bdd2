//! `git://` sources (`ADD https://host/repo.git#ref`): the repository is fetched with libgit2,
//! the ref (branch, tag or commit; default `HEAD`) resolved to a commit, and its tree checked out
//! into a layer. The cache key is the commit, so an unchanged ref reuses everything after it.

use crate::llb::Vertex;
use crate::snapshot::Chain;
use crate::solver::{SolveCtx, SolveError, VertexResult};
use bollard_buildkit_proto::pb;
use std::path::Path;
use std::sync::Arc;

/// What a git source names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GitSource {
    url: String,
    reference: String,
    subdir: String,
    keep_git_dir: bool,
}

fn parse(src: &pb::SourceOp) -> Result<GitSource, String> {
    let rest = src
        .identifier
        .strip_prefix("git://")
        .ok_or_else(|| format!("{}: not a git source", src.identifier))?;
    let (remote, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    let url = src
        .attrs
        .get("git.fullurl")
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("https://{remote}"));
    if subdir.split('/').any(|c| c == "..") {
        return Err(format!(
            "{}: subdirectory {subdir:?} leaves the repository",
            src.identifier
        ));
    }
    Ok(GitSource {
        url,
        reference: reference.to_string(),
        subdir: subdir.trim_matches('/').to_string(),
        keep_git_dir: src.attrs.get("git.keepgitdir").is_some_and(|v| v == "true"),
    })
}

pub async fn solve(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    src: &pb::SourceOp,
) -> Result<VertexResult, SolveError> {
    let source = parse(src).map_err(SolveError::msg)?;
    let scratch = ctx
        .engine
        .layers
        .scratch_dir()
        .map_err(SolveError::io("preparing a git checkout"))?;
    let repo_dir = scratch.join("repo");
    let fetched = {
        let (source, repo_dir) = (source.clone(), repo_dir.clone());
        tokio::task::spawn_blocking(move || fetch(&source, &repo_dir))
            .await
            .map_err(|e| SolveError::msg(e.to_string()))?
    };
    let commit = match fetched {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(SolveError::msg(format!("{}: {e}", source.url)));
        }
    };
    let key = format!(
        "git:{}:{commit}:{}:{}",
        source.url, source.subdir, source.keep_git_dir
    );
    let id = super::layer_once(ctx, vertex, &key, move |dir| {
        checkout(&repo_dir, &commit, &source, dir)
    })
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let id = id?;
    Ok(VertexResult {
        key,
        outputs: vec![Chain::scratch().with(id)],
        local: None,
    })
}

/// Whether a build context argument names a git repository (`https://…/x.git[#ref[:dir]]`,
/// `git://…`, `git@host:repo.git`), as `docker buildx build` accepts them.
pub fn is_git_url(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or(s);
    s.starts_with("git://")
        || s.starts_with("git@")
        || ((s.starts_with("https://") || s.starts_with("http://")) && base.ends_with(".git"))
}

/// Check out the repository a git URL names (`URL#ref:subdir`) into `dest`, without `.git`.
/// Returns the commit.
pub fn checkout_url(spec: &str, dest: &Path) -> Result<String, String> {
    let (url, fragment) = spec.split_once('#').unwrap_or((spec, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    if subdir.split('/').any(|c| c == "..") {
        return Err(format!(
            "{spec}: subdirectory {subdir:?} leaves the repository"
        ));
    }
    let source = GitSource {
        url: url.to_string(),
        reference: reference.to_string(),
        subdir: subdir.trim_matches('/').to_string(),
        keep_git_dir: false,
    };
    let repo_dir = dest.with_extension("repo");
    let commit = fetch(&source, &repo_dir).map_err(|e| format!("{url}: {e}"))?;
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let result = checkout(&repo_dir, &commit, &source, dest).map_err(|e| e.message);
    let _ = std::fs::remove_dir_all(&repo_dir);
    result.map(|()| commit)
}

/// Fetch `source.reference` into a new repository at `dir`; the commit it names.
fn fetch(source: &GitSource, dir: &Path) -> Result<String, String> {
    let repo = git2::Repository::init(dir).map_err(|e| e.message().to_string())?;
    let mut remote = repo
        .remote_anonymous(&source.url)
        .map_err(|e| e.message().to_string())?;
    let wanted = if source.reference.is_empty() {
        "HEAD".to_string()
    } else {
        source.reference.clone()
    };
    // A full commit id is fetched as it is; a name is tried as a branch, then as a tag.
    let is_commit = wanted.len() == 40 && wanted.chars().all(|c| c.is_ascii_hexdigit());
    let refspecs: Vec<String> = if is_commit {
        vec![
            format!("+refs/heads/*:refs/remotes/origin/*"),
            "+refs/tags/*:refs/tags/*".into(),
        ]
    } else if wanted == "HEAD" {
        vec!["+HEAD:refs/kiln/wanted".into()]
    } else {
        vec![
            format!("+refs/heads/{wanted}:refs/kiln/wanted"),
            format!("+refs/tags/{wanted}:refs/kiln/tag"),
        ]
    };
    let mut options = git2::FetchOptions::new();
    options.download_tags(git2::AutotagOption::None);
    let mut fetched = remote.fetch(&refspecs, Some(&mut options), None);
    if fetched.is_err() && !is_commit && wanted != "HEAD" {
        // Only one of branch and tag exists: fetch each alone.
        for spec in &refspecs {
            if remote
                .fetch(&[spec.as_str()], Some(&mut options), None)
                .is_ok()
            {
                fetched = Ok(());
                break;
            }
        }
    }
    fetched.map_err(|e| format!("fetching {wanted}: {}", e.message()))?;
    let object = if is_commit {
        repo.revparse_single(&wanted)
    } else {
        repo.revparse_single("refs/kiln/wanted")
            .or_else(|_| repo.revparse_single("refs/kiln/tag"))
    }
    .map_err(|_| format!("no branch, tag or commit {wanted:?}"))?;
    let commit = object
        .peel_to_commit()
        .map_err(|e| format!("{wanted}: {}", e.message()))?;
    Ok(commit.id().to_string())
}

/// Write the tree of `commit` (or its `subdir`) into `dir`, with `.git` when asked for.
fn checkout(
    repo_dir: &Path,
    commit: &str,
    source: &GitSource,
    dir: &Path,
) -> Result<(), SolveError> {
    let fail = |e: git2::Error| SolveError::msg(format!("{}: {}", source.url, e.message()));
    let repo = git2::Repository::open(repo_dir).map_err(fail)?;
    let oid = git2::Oid::from_str(commit).map_err(fail)?;
    let commit_obj = repo.find_commit(oid).map_err(fail)?;
    let mut tree = commit_obj.tree().map_err(fail)?;
    if !source.subdir.is_empty() {
        let entry = tree.get_path(Path::new(&source.subdir)).map_err(|_| {
            SolveError::msg(format!(
                "{}: no directory {:?} at {commit}",
                source.url, source.subdir
            ))
        })?;
        tree = entry
            .to_object(&repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(fail)?;
    }
    let mut opts = git2::build::CheckoutBuilder::new();
    opts.force().target_dir(dir).recreate_missing(true);
    repo.checkout_tree(tree.as_object(), Some(&mut opts))
        .map_err(fail)?;
    if source.keep_git_dir && source.subdir.is_empty() {
        // A repository whose HEAD is the commit, as BuildKit leaves it.
        let kept = git2::Repository::init(dir).map_err(fail)?;
        let mut remote = kept
            .remote_anonymous(&repo_dir.to_string_lossy())
            .map_err(fail)?;
        remote
            .fetch(&[&format!("{commit}:refs/heads/kiln")], None, None)
            .map_err(fail)?;
        kept.set_head_detached(oid).map_err(fail)?;
        let _ = kept.remote("origin", &source.url);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str, url: Option<&str>) -> pb::SourceOp {
        let mut attrs = std::collections::BTreeMap::new();
        if let Some(u) = url {
            attrs.insert("git.fullurl".to_string(), u.to_string());
        }
        pb::SourceOp {
            identifier: id.into(),
            attrs,
        }
    }

    #[test]
    fn parses_identifiers() {
        let s = parse(&op(
            "git://127.0.0.1:9418/app.git#v1:sub/dir",
            Some("git://127.0.0.1:9418/app.git"),
        ))
        .unwrap();
        assert_eq!(s.url, "git://127.0.0.1:9418/app.git");
        assert_eq!((s.reference.as_str(), s.subdir.as_str()), ("v1", "sub/dir"));
        let s = parse(&op("git://github.com/o/r.git", None)).unwrap();
        assert_eq!(s.url, "https://github.com/o/r.git");
        assert_eq!(s.reference, "");
        assert!(parse(&op("git://h/r.git#main:../x", None)).is_err());
    }
}
