//! Git over smart HTTP, as Gitea serves a repository at `<instance>/<owner>/<repo>[.git]`
//! (`routers/web/repo/githttp.go`), so tests can clone actions and reusable workflows from the
//! instance.
//!
//! Repositories are bare directories `<root>/<owner>/<repo>.git`, found by name without regard
//! to case as Gitea finds them. `git http-backend` speaks the protocol as a CGI program; what is
//! Gitea's is the gate in front of it:
//!
//! - Authentication (`services/auth/basic.go`, `oauth2.go`): basic credentials whose password is
//!   the token of a running task sign the request in as the actions user, whatever the username.
//!   When the password is empty or `x-oauth-basic` the username is taken as the token, and
//!   `Authorization: Bearer <token>` / `token <token>` work too. Credentials that name no
//!   running task fail the whole request with a bare 401, before any repository is looked at
//!   (the middleware's error; basic sign-in by password is on by default and fails for them).
//! - Authorization (`httpBase`): pulling a public repository needs nobody; anything else needs a
//!   signed-in request, else 401 with `WWW-Authenticate: Basic realm="Gitea"`. An anonymous
//!   request for a repository that does not exist gets that 401 too (existence does not leak);
//!   a signed-in one gets 404.
//!
//! Simplifications: any running task's token reads every private repository (Gitea 1.22–1.23
//! accept it only for the task's own repository, 1.24+ also where the task repository's owner is
//! a collaborative owner); a token stops working the moment its task is final (Gitea's cache of
//! tokens that signed in skips the status check, so there a used token may outlive its task for
//! a while); and nothing is writable: a signed-in push gets 403.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::AsyncWriteExt;

use super::Shared;
use crate::proto;

/// Gitea's actions user, which a task token signs in as (`user_model.NewActionsUser`).
const ACTIONS_USER: &str = "gitea-actions";

/// Upload-pack requests are wants and haves; anything near this is a broken client.
const MAX_REQUEST_BODY: usize = 64 << 20;

/// What the fake serves over git and what it saw.
#[derive(Default)]
pub(crate) struct GitState {
    pub root: Option<PathBuf>,
    /// Lower-cased `owner/repo`: Gitea matches names without regard to case.
    pub private: BTreeSet<String>,
    pub requests: Vec<GitRequest>,
}

/// One request the fake received on a repository's smart-HTTP endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// Path and query as sent, e.g. `/owner/repo.git/info/refs?service=git-upload-pack`.
    pub path: String,
    /// The token the request presented, if any: the basic password (the username when the
    /// password is empty or `x-oauth-basic`), or a bearer token.
    pub token: Option<String>,
    /// The running task whose token signed the request in.
    pub task_id: Option<i64>,
    /// The HTTP status answered.
    pub status: u16,
}

impl GitRequest {
    /// Signed in with a running task's token.
    pub fn authenticated(&self) -> bool {
        self.task_id.is_some()
    }
}

/// `GET /o/r/info/refs?service=git-upload-pack 401 anonymous`: one line a test can compare.
impl fmt::Display for GitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.method, self.path, self.status)?;
        match (self.task_id, &self.token) {
            (Some(id), _) => write!(f, "task {id}"),
            (None, Some(_)) => f.write_str("bad token"),
            (None, None) => f.write_str("anonymous"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    InfoRefs,
    UploadPack,
    ReceivePack,
}

/// A request path naming a repository's smart-HTTP endpoint.
pub(crate) struct GitRoute {
    owner: String,
    /// Without the optional `.git`.
    repo: String,
    endpoint: Endpoint,
}

/// Owner and repository names as Gitea allows them; this also keeps `..` out of paths.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().all(|c| c == '.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `/<owner>/<repo>[.git]/{info/refs,git-upload-pack,git-receive-pack}`, or `None`.
pub(crate) fn route(path: &str) -> Option<GitRoute> {
    let (owner, rest) = path.strip_prefix('/')?.split_once('/')?;
    let (repo, endpoint) = rest.split_once('/')?;
    let endpoint = match endpoint {
        "info/refs" => Endpoint::InfoRefs,
        "git-upload-pack" => Endpoint::UploadPack,
        "git-receive-pack" => Endpoint::ReceivePack,
        _ => return None,
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    (valid_name(owner) && valid_name(repo)).then(|| GitRoute {
        owner: owner.to_string(),
        repo: repo.to_string(),
        endpoint,
    })
}

/// The key [`GitState::private`] uses for `owner/repo` (a trailing `.git` ignored).
pub(crate) fn private_key(owner_repo: &str) -> String {
    let name = owner_repo.trim_matches('/');
    name.strip_suffix(".git")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// The token an `Authorization` header presents, as Gitea's basic and OAuth2 methods read it.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        // Git helpers put the token in either field; Gitea checks the password unless it is
        // missing or the GitHub-style placeholder.
        let token = if password.is_empty() || password == "x-oauth-basic" {
            user
        } else {
            password
        };
        Some(token.to_string())
    } else if scheme == "token" || scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.to_string())
    } else {
        None
    }
}

/// The running task a token belongs to (`GetRunningTaskByToken`: status running only, so the
/// token stops working the moment the task is final).
fn running_task(shared: &Shared, token: &str) -> Option<i64> {
    shared
        .db()
        .tasks
        .values()
        .find(|t| t.record.token == token && t.record.result == proto::Result::Unspecified)
        .map(|t| t.record.task_id)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Answers a request on a repository endpoint and records it.
pub(crate) async fn serve(shared: &Shared, route: GitRoute, req: Request) -> Response {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let token = presented_token(req.headers());
    let task_id = token.as_deref().and_then(|t| running_task(shared, t));
    let response = answer(shared, &route, token.is_some(), task_id, req).await;
    shared.git().requests.push(GitRequest {
        method: method.to_string(),
        path,
        token,
        task_id,
        status: response.status().as_u16(),
    });
    response
}

async fn answer(
    shared: &Shared,
    route: &GitRoute,
    presented: bool,
    task_id: Option<i64>,
    req: Request,
) -> Response {
    let (root, private) = {
        let git = shared.git();
        let Some(root) = git.root.clone() else {
            return plain(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        let key = private_key(&format!("{}/{}", route.owner, route.repo));
        (root, git.private.contains(&key))
    };
    let method_ok = match route.endpoint {
        Endpoint::InfoRefs => matches!(*req.method(), Method::GET | Method::HEAD),
        Endpoint::UploadPack | Endpoint::ReceivePack => req.method() == Method::POST,
    };
    if !method_ok {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    if presented && task_id.is_none() {
        return plain(StatusCode::UNAUTHORIZED, "Failed to authenticate user\n");
    }
    let Some(owner_dir) = find_dir(&root, &route.owner).await else {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let service = query_param(req.uri().query().unwrap_or(""), "service");
    let is_pull = match (route.endpoint, service.as_deref()) {
        (Endpoint::UploadPack, _) => true,
        (Endpoint::ReceivePack, _) => false,
        (Endpoint::InfoRefs, None | Some("") | Some("git-upload-pack")) => true,
        (Endpoint::InfoRefs, Some("git-receive-pack")) => false,
        (Endpoint::InfoRefs, Some(_)) => return plain(StatusCode::BAD_REQUEST, ""),
    };
    let repo_dir = find_dir(&root.join(&owner_dir), &format!("{}.git", route.repo)).await;
    let public_pull = repo_dir.is_some() && !private && is_pull;
    if !public_pull && task_id.is_none() {
        let mut resp = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Gitea\""),
        );
        return resp;
    }
    let Some(repo_dir) = repo_dir else {
        return plain(StatusCode::NOT_FOUND, "Repository not found");
    };
    if !is_pull {
        return plain(
            StatusCode::FORBIDDEN,
            "The fake Gitea serves repositories read-only",
        );
    }
    let endpoint = match route.endpoint {
        Endpoint::InfoRefs => "info/refs",
        Endpoint::UploadPack => "git-upload-pack",
        Endpoint::ReceivePack => "git-receive-pack",
    };
    let cgi = Cgi {
        root,
        path_info: format!("/{owner_dir}/{repo_dir}/{endpoint}"),
        remote_user: task_id.map(|_| ACTIONS_USER),
    };
    cgi.run(req).await
}

/// `name`'s value in a query string (the service names need no percent-decoding).
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The entry of `parent` named `name` without regard to case (an exact match first), if it is
/// a directory.
async fn find_dir(parent: &Path, name: &str) -> Option<String> {
    let is_dir = |p: PathBuf| async move { tokio::fs::metadata(p).await.is_ok_and(|m| m.is_dir()) };
    if is_dir(parent.join(name)).await {
        return Some(name.to_string());
    }
    let mut entries = tokio::fs::read_dir(parent).await.ok()?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let Some(found) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if found.eq_ignore_ascii_case(name) && is_dir(entry.path()).await {
            return Some(found);
        }
    }
    None
}

/// `Git-Protocol` values passed on: `key=value` pairs of alphanumerics joined by `:`, so a
/// client cannot smuggle anything else into git's environment.
fn safe_git_protocol(value: &str) -> bool {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    value.split(':').all(|pair| {
        pair.split_once('=')
            .is_some_and(|(k, v)| word(k) && word(v))
    })
}

/// One `git http-backend` invocation.
struct Cgi {
    root: PathBuf,
    /// `/<owner dir>/<repo dir>/<endpoint>` as on disk.
    path_info: String,
    remote_user: Option<&'static str>,
}

impl Cgi {
    async fn run(self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
            Ok(b) => b,
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
        };
        let headers = &parts.headers;
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        // Git gzips larger upload-pack requests. Decoding here rather than passing
        // `HTTP_CONTENT_ENCODING` on keeps CONTENT_LENGTH honest for the backend.
        let body = if text(header::CONTENT_ENCODING) == Some("gzip") {
            let mut plain_body = Vec::new();
            match flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain_body) {
                Ok(_) => Bytes::from(plain_body),
                Err(_) => return plain(StatusCode::BAD_REQUEST, "bad gzip body\n"),
            }
        } else {
            body
        };

        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("http-backend")
            // The test process's GIT_DIR and friends must not leak into the backend.
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", &self.path_info)
            .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("CONTENT_LENGTH", body.len().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(ct) = text(header::CONTENT_TYPE) {
            cmd.env("CONTENT_TYPE", ct);
        }
        // Protocol v2 is negotiated through this header, which CGI passes as HTTP_GIT_PROTOCOL.
        if let Some(p) = headers
            .get("git-protocol")
            .and_then(|v| v.to_str().ok())
            .filter(|p| safe_git_protocol(p))
        {
            cmd.env("HTTP_GIT_PROTOCOL", p);
        }
        if let Some(user) = self.remote_user {
            cmd.env("REMOTE_USER", user);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("fake Gitea: cannot start git http-backend: {e}");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend\n");
            }
        };
        // Feed stdin while stdout drains, or a large request and reply could deadlock on pipes.
        let stdin = child.stdin.take();
        let writer = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // The backend may answer without reading (an error): a broken pipe is fine.
                let _ = stdin.write_all(&body).await;
            }
        });
        let output = child.wait_with_output().await;
        let _ = writer.await;
        match output {
            Ok(out) => {
                if !out.stderr.is_empty() {
                    tracing::debug!(
                        "fake Gitea: git http-backend {}: {}",
                        self.path_info,
                        String::from_utf8_lossy(&out.stderr).trim_end()
                    );
                }
                cgi_response(Bytes::from(out.stdout))
            }
            Err(e) => {
                tracing::error!("fake Gitea: git http-backend failed: {e}");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend\n")
            }
        }
    }
}

/// A CGI reply (`Status:` and other header lines, a blank line, the body) as an HTTP response.
fn cgi_response(out: Bytes) -> Response {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    let mut pos = 0;
    loop {
        let Some(nl) = out[pos..].iter().position(|&b| b == b'\n') else {
            return plain(StatusCode::BAD_GATEWAY, "malformed CGI reply\n");
        };
        let line = &out[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim(), v.trim()))
        else {
            return plain(StatusCode::BAD_GATEWAY, "malformed CGI reply\n");
        };
        if name.eq_ignore_ascii_case("status") {
            // `Status: 404 Not Found`: the code is the first word.
            status = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    let mut resp = Response::new(Body::from(out.slice(pos..)));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_both_url_forms_and_nothing_else() {
        let r = route("/owner/repo/info/refs").unwrap();
        assert_eq!((r.owner.as_str(), r.repo.as_str()), ("owner", "repo"));
        assert_eq!(r.endpoint, Endpoint::InfoRefs);
        let r = route("/owner/repo.git/git-upload-pack").unwrap();
        assert_eq!(
            (r.repo.as_str(), r.endpoint),
            ("repo", Endpoint::UploadPack)
        );
        assert!(route("/owner/repo.git/git-receive-pack").is_some());
        for bad in [
            "/owner/repo",
            "/owner/repo/HEAD",
            "/../repo/info/refs",
            "/owner/../info/refs",
            "/owner/.git/info/refs",
            "/a/b/c/info/refs",
            "/owner/re%20po/info/refs",
        ] {
            assert!(route(bad).is_none(), "{bad}");
        }
    }

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user_pass: &str) -> HeaderMap {
        auth(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        ))
    }

    #[test]
    fn token_is_the_password_unless_it_is_empty_or_a_placeholder() {
        assert_eq!(presented_token(&basic("x:tok")).as_deref(), Some("tok"));
        assert_eq!(presented_token(&basic("tok:")).as_deref(), Some("tok"));
        assert_eq!(presented_token(&basic("tok")).as_deref(), Some("tok"));
        assert_eq!(
            presented_token(&basic("tok:x-oauth-basic")).as_deref(),
            Some("tok")
        );
        assert_eq!(presented_token(&auth("Bearer tok")).as_deref(), Some("tok"));
        assert_eq!(presented_token(&auth("token tok")).as_deref(), Some("tok"));
        assert_eq!(presented_token(&auth("Digest tok")), None);
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }

    #[test]
    fn parses_cgi_replies() {
        let resp = cgi_response(Bytes::from_static(
            b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nmissing\n",
        ));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/plain");
        let resp = cgi_response(Bytes::from_static(b"Content-Type: a/b\n\nbody"));
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = cgi_response(Bytes::from_static(b"no header end"));
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn only_plain_protocol_values_pass() {
        assert!(safe_git_protocol("version=2"));
        assert!(safe_git_protocol("version=2:object=sha1"));
        assert!(!safe_git_protocol("version=2\nGIT_DIR=/"));
        assert!(!safe_git_protocol("version"));
    }
}
