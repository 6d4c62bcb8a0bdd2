//! What a build needs from whoever asked for it: local directories, secrets and registry
//! credentials. The engine never knows whether that is a gRPC client, the CLI or a job.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Reports a transfer's progress: bytes so far, and `true` once at the end.
pub type TransferProgress = Arc<dyn Fn(u64, bool) + Send + Sync>;

/// Errors a session can report; they name the thing that was asked for.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("local directory {0:?} was not provided by the client")]
    NoSuchLocal(String),
    #[error("secret {0:?} not found")]
    NoSuchSecret(String),
    #[error("no SSH agent {0:?} was forwarded (build with --ssh {0})")]
    NoSuchSshAgent(String),
    #[error("session: {0}")]
    Other(String),
}

/// A connection to an SSH agent (`RUN --mount=type=ssh`): the agent protocol's bytes.
pub trait SshConnection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> SshConnection for T {}

#[async_trait]
pub trait Session: Send + Sync {
    /// A directory on this machine that holds the named local (`context`, `dockerfile`, …).
    /// Remote sessions sync into a directory first and return it, reporting the bytes they
    /// transfer to `progress`.
    async fn local_dir(
        &self,
        name: &str,
        include: &[String],
        exclude: &[String],
        progress: Option<TransferProgress>,
    ) -> Result<PathBuf, SessionError>;

    /// Whether the directories [`Session::local_dir`] returns are kiln's own copies (a synced
    /// or unpacked context) whose files are replaced, never rewritten in place. Layers may then
    /// hard-link their files instead of copying them. A user's directory never is.
    fn local_dirs_are_private(&self) -> bool {
        false
    }

    /// Whether [`Session::local_dir`] transfers directories from elsewhere and reports that
    /// through its progress callback. A session that hands out directories at hand does not:
    /// the solve then reports the directory's size itself.
    fn transfers_local_dirs(&self) -> bool {
        false
    }

    /// The value of a secret, or `NoSuchSecret`.
    async fn secret(&self, id: &str) -> Result<Vec<u8>, SessionError>;

    /// Registry credentials for a host, if the client has any.
    async fn credentials(&self, host: &str) -> Option<kiln_oci::auth::Credentials>;

    /// Whether the client forwards the SSH agent `id`.
    async fn has_ssh_agent(&self, _id: &str) -> bool {
        false
    }

    /// A new connection to the client's SSH agent `id`.
    async fn ssh_agent(&self, id: &str) -> Result<Box<dyn SshConnection>, SessionError> {
        Err(SessionError::NoSuchSshAgent(id.to_string()))
    }
}

/// A session backed by this machine: named local directories, secrets from files or env vars,
/// credentials from the Docker config file.
pub struct LocalSession {
    pub locals: BTreeMap<String, PathBuf>,
    pub secrets: BTreeMap<String, SecretSource>,
    pub docker_config: kiln_oci::auth::DockerConfigCredentials,
    /// SSH agents by id: the agent's unix socket (`--ssh default` uses `SSH_AUTH_SOCK`).
    pub ssh: BTreeMap<String, PathBuf>,
}

/// Where a `--secret` comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[async_trait]
impl Session for LocalSession {
    async fn local_dir(
        &self,
        name: &str,
        _include: &[String],
        _exclude: &[String],
        _progress: Option<TransferProgress>,
    ) -> Result<PathBuf, SessionError> {
        self.locals
            .get(name)
            .cloned()
            .ok_or_else(|| SessionError::NoSuchLocal(name.to_string()))
    }

    async fn secret(&self, id: &str) -> Result<Vec<u8>, SessionError> {
        match self.secrets.get(id) {
            Some(SecretSource::File(path)) => tokio::fs::read(path).await.map_err(|e| {
                SessionError::Other(format!("secret {id:?}: {}: {e}", path.display()))
            }),
            Some(SecretSource::Env(var)) => std::env::var_os(var)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| SessionError::NoSuchSecret(id.to_string())),
            None => Err(SessionError::NoSuchSecret(id.to_string())),
        }
    }

    async fn credentials(&self, host: &str) -> Option<kiln_oci::auth::Credentials> {
        use kiln_oci::auth::CredentialSource;
        self.docker_config.credentials(host).await
    }

    async fn has_ssh_agent(&self, id: &str) -> bool {
        self.ssh.contains_key(id)
    }

    async fn ssh_agent(&self, id: &str) -> Result<Box<dyn SshConnection>, SessionError> {
        let path = self
            .ssh
            .get(id)
            .ok_or_else(|| SessionError::NoSuchSshAgent(id.to_string()))?;
        let stream = tokio::net::UnixStream::connect(path).await.map_err(|e| {
            SessionError::Other(format!("SSH agent {id:?} at {}: {e}", path.display()))
        })?;
        Ok(Box::new(stream))
    }
}
