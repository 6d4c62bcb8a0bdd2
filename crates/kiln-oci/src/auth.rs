//! Registry credentials: where they come from (Docker's `config.json`, credential helpers) and
//! how they are handed to the registry client. Secrets never appear in `Debug` output or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// The user name Docker uses to mark an identity (refresh) token in place of a password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A user name and secret for one registry. An OAuth2 identity token is represented the way
/// Docker's credential helpers do: user name [`IDENTITY_TOKEN_USER`] and the token as password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password, personal access token or identity token.
    pub password: String,
}

impl Credentials {
    /// Credentials for an OAuth2 identity (refresh) token.
    pub fn identity_token(token: impl Into<String>) -> Credentials {
        Credentials {
            username: IDENTITY_TOKEN_USER.to_string(),
            password: token.into(),
        }
    }

    /// True when `password` is an identity token to exchange at the token endpoint.
    pub fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USER
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Something that knows credentials per registry host (`ghcr.io`, `127.0.0.1:5000`, `docker.io`).
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync {
    /// Credentials for `host`, or `None` to access it anonymously.
    async fn credentials(&self, host: &str) -> Option<Credentials>;
}

/// Anonymous access everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCredentials;

#[async_trait::async_trait]
impl CredentialSource for NoCredentials {
    async fn credentials(&self, _host: &str) -> Option<Credentials> {
        None
    }
}

/// Fixed credentials per host, for callers that got them elsewhere (a session, a login call).
#[derive(Clone, Default)]
pub struct StaticCredentials {
    hosts: BTreeMap<String, Credentials>,
}

impl StaticCredentials {
    /// Adds credentials for `host`.
    pub fn with(mut self, host: &str, creds: Credentials) -> Self {
        self.hosts.insert(normalize_host(host), creds);
        self
    }
}

#[async_trait::async_trait]
impl CredentialSource for StaticCredentials {
    async fn credentials(&self, host: &str) -> Option<Credentials> {
        self.hosts.get(&normalize_host(host)).cloned()
    }
}

#[derive(Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Credentials from Docker's client configuration: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`. Reads `auths` (base64 `auth`, or `username`/`password`, or
/// `identitytoken`), and runs `docker-credential-<helper> get` for `credHelpers`/`credsStore`.
/// The file is read once, at construction.
pub struct DockerConfigCredentials {
    auths: BTreeMap<String, Credentials>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
    /// Where to find `docker-credential-*`; `None` searches `PATH`.
    helper_dir: Option<PathBuf>,
}

/// Why a Docker config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("parsing {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (never includes secret values).
        reason: String,
    },
}

impl DockerConfigCredentials {
    /// The config file Docker would use: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Loads the default config file; a missing file means no credentials.
    pub fn load() -> Result<Self, CredentialsError> {
        match Self::default_path() {
            Some(p) => Self::from_file(&p),
            None => Ok(Self::empty()),
        }
    }

    /// Loads `path`; a missing file means no credentials.
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(source) => {
                return Err(CredentialsError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::from_json(&bytes).map_err(|reason| CredentialsError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the JSON of a Docker `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        // serde_json's messages quote only positions and types, not values.
        let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut auths = BTreeMap::new();
        for (key, entry) in file.auths {
            let host = normalize_host(&key);
            match entry.into_credentials() {
                Ok(Some(c)) => {
                    auths.insert(host, c);
                }
                Ok(None) => {}
                Err(reason) => return Err(format!("auths[{key:?}]: {reason}")),
            }
        }
        Ok(DockerConfigCredentials {
            auths,
            cred_helpers: file
                .cred_helpers
                .into_iter()
                .map(|(k, v)| (normalize_host(&k), v))
                .collect(),
            creds_store: file.creds_store.filter(|s| !s.is_empty()),
            helper_dir: None,
        })
    }

    fn empty() -> Self {
        DockerConfigCredentials {
            auths: BTreeMap::new(),
            cred_helpers: BTreeMap::new(),
            creds_store: None,
            helper_dir: None,
        }
    }
}

impl AuthEntry {
    fn into_credentials(self) -> Result<Option<Credentials>, String> {
        if let Some(token) = self.identitytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::identity_token(token)));
        }
        if let Some(auth) = self.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| "\"auth\" is not valid base64".to_string())?;
            let text = String::from_utf8(decoded)
                .map_err(|_| "\"auth\" does not decode to UTF-8".to_string())?;
            let (user, pass) = text
                .split_once(':')
                .ok_or_else(|| "\"auth\" does not decode to user:password".to_string())?;
            return Ok(Some(Credentials {
                username: user.to_string(),
                password: pass.to_string(),
            }));
        }
        match (self.username, self.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
                username: u,
                password: p,
            })),
            _ => Ok(None),
        }
    }
}

/// Maps the keys Docker writes (`https://index.docker.io/v1/`, `https://host/`) to a bare host.
pub fn normalize_host(key: &str) -> String {
    let h = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let h = h.split('/').next().unwrap_or(h);
    match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// The server name Docker passes to credential helpers for `host`.
fn helper_server_url(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the server on stdin.
async fn run_helper(dir: Option<&Path>, helper: &str, host: &str) -> Option<Credentials> {
    use tokio::io::AsyncWriteExt;
    if helper.contains('/') {
        tracing::warn!(%helper, "credential helper names must not contain '/'");
        return None;
    }
    let name = format!("docker-credential-{helper}");
    let program = match dir {
        Some(d) => d.join(&name).display().to_string(),
        None => name,
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tracing::warn!(%program, error = %e, "credential helper did not start"))
        .ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(helper_server_url(host).as_bytes()).await;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        // "credentials not found in native keychain" is the normal anonymous case.
        tracing::debug!(%program, %host, "credential helper found no credentials");
        return None;
    }
    match serde_json::from_slice::<HelperOutput>(&out.stdout) {
        Ok(o) if o.username == IDENTITY_TOKEN_USER => Some(Credentials::identity_token(o.secret)),
        Ok(o) => Some(Credentials {
            username: o.username,
            password: o.secret,
        }),
        Err(_) => {
            tracing::warn!(%program, %host, "credential helper printed unexpected output");
            None
        }
    }
}

#[async_trait::async_trait]
impl CredentialSource for DockerConfigCredentials {
    async fn credentials(&self, host: &str) -> Option<Credentials> {
        let host = normalize_host(host);
        if let Some(helper) = self.cred_helpers.get(&host) {
            return run_helper(self.helper_dir.as_deref(), helper, &host).await;
        }
        if let Some(store) = &self.creds_store {
            if let Some(c) = run_helper(self.helper_dir.as_deref(), store, &host).await {
                return Some(c);
            }
        }
        self.auths.get(&host).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[tokio::test]
    async fn docker_config_auth_forms_are_all_understood() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"username": "u2", "password": "p2"}},
                "ghcr.io": {{"identitytoken": "tok"}},
                "empty.io": {{}}
            }}}}"#,
            b64("hubuser:hub:pass")
        );
        let c = DockerConfigCredentials::from_json(json.as_bytes()).unwrap();
        let hub = c.credentials("docker.io").await.unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hubuser", "hub:pass")
        );
        let local = c.credentials("127.0.0.1:5000").await.unwrap();
        assert_eq!(local.username, "u2");
        assert!(c.credentials("ghcr.io").await.unwrap().is_identity_token());
        assert!(c.credentials("empty.io").await.is_none());
        assert!(c.credentials("other.io").await.is_none());
    }

    #[test]
    fn bad_auth_field_error_does_not_leak_the_secret() {
        let json = r#"{"auths": {"h.io": {"auth": "c2VjcmV0cGFzc3dvcmQ="}}}"#;
        let err = DockerConfigCredentials::from_json(json.as_bytes())
            .err()
            .unwrap();
        assert!(err.contains("user:password"), "{err}");
        assert!(
            !err.contains("secretpassword") && !err.contains("c2Vj"),
            "{err}"
        );
        let dbg = format!(
            "{:?}",
            Credentials {
                username: "u".into(),
                password: "hunter2".into()
            }
        );
        assert!(!dbg.contains("hunter2"));
    }

    #[test]
    fn host_keys_normalize() {
        assert_eq!(normalize_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_host("https://myreg.io:8443/"), "myreg.io:8443");
        assert_eq!(normalize_host("localhost:5000"), "localhost:5000");
    }

    #[tokio::test]
    async fn missing_config_file_means_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let c = DockerConfigCredentials::from_file(&dir.path().join("config.json")).unwrap();
        assert!(c.credentials("docker.io").await.is_none());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn credential_helper_is_run_with_server_on_stdin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-kilntest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\nprintf '{\"Username\":\"helper-%s\",\"Secret\":\"s\"}' \"$server\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let json = r#"{"credHelpers": {"reg.example": "kilntest"}, "credsStore": "missing"}"#;
        let mut c = DockerConfigCredentials::from_json(json.as_bytes()).unwrap();
        // PATH is process-global and tests run in parallel, so point at the helper's directory.
        c.helper_dir = Some(dir.path().to_path_buf());
        let got = c.credentials("reg.example").await.unwrap();
        assert_eq!(
            (got.username.as_str(), got.password.as_str()),
            ("helper-reg.example", "s")
        );
        // credsStore names a helper that does not exist: anonymous, not an error.
        assert!(c.credentials("other.example").await.is_none());
    }
}
