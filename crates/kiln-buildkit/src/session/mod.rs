//! Client sessions. A `buildctl`/`buildx` client opens `Control/Session` and serves, over that
//! tunnel, the services a build needs from it: its local directories (FileSync), outputs
//! (FileSend), registry credentials (Auth) and secrets. [`SessionManager`] keeps the open
//! sessions by id; [`ClientSession`] adapts one to the engine's `Session` trait.

pub mod content;
pub mod filesend;
pub mod filesync;
pub mod tunnel;

use async_trait::async_trait;
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_client::SecretsClient;
use bollard_buildkit_proto::moby::buildkit::secrets::v1::GetSecretRequest;
use bollard_buildkit_proto::moby::filesync::v1::auth_client::AuthClient;
use bollard_buildkit_proto::moby::filesync::v1::CredentialsRequest;
use kiln_engine::session::{Session, SessionError, TransferProgress};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedMutexGuard};
use tonic::transport::Channel;

/// One connected client session.
#[derive(Clone)]
pub struct OpenSession {
    pub id: String,
    /// The client's name for itself (basename of its working directory; old clients only).
    pub name: String,
    /// Cache-sharing hint: buildx sends `<context dir>:<node>`, buildctl nothing.
    pub shared_key: String,
    /// gRPC methods the client serves, lowercased.
    pub methods: BTreeSet<String>,
    pub channel: Channel,
    /// Cancelled when the client's Session call ends (the client went away).
    pub closed: tokio_util::sync::CancellationToken,
}

impl OpenSession {
    pub fn supports(&self, method: &str) -> bool {
        self.methods.contains(&method.to_ascii_lowercase())
    }
}

/// Open sessions by id.
#[derive(Default)]
pub struct SessionManager {
    sessions: Mutex<HashMap<String, OpenSession>>,
    changed: Notify,
    /// Locks on synced local directories, so two builds never sync into one at once.
    dir_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl SessionManager {
    pub fn add(&self, session: OpenSession) {
        self.sessions
            .lock()
            .expect("sessions")
            .insert(session.id.clone(), session);
        self.changed.notify_waiters();
    }

    pub fn remove(&self, id: &str) {
        if let Some(s) = self.sessions.lock().expect("sessions").remove(id) {
            s.closed.cancel();
        }
    }

    /// The session `id` (a `prefix:` is ignored), waiting up to `wait` for it to connect:
    /// clients may open the session after sending the Solve that names it.
    pub async fn get(&self, id: &str, wait: Duration) -> Option<OpenSession> {
        let id = id.rsplit(':').next().unwrap_or(id);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if let Some(s) = self.sessions.lock().expect("sessions").get(id) {
                return Some(s.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn dir_lock(&self, dir: &std::path::Path) -> Arc<tokio::sync::Mutex<()>> {
        self.dir_locks
            .lock()
            .expect("dir locks")
            .entry(dir.to_path_buf())
            .or_default()
            .clone()
    }
}

/// The engine's view of a client session during one solve.
pub struct ClientSession {
    session: OpenSession,
    manager: Arc<SessionManager>,
    /// Where synced locals are kept between builds (incremental sync).
    sync_root: PathBuf,
    /// Locals already synced in this solve, with the lock on their directory.
    synced: tokio::sync::Mutex<HashMap<String, Synced>>,
}

/// A local synced for one solve: the client's stable directory (locked while the solve uses it),
/// or, when another solve of the same client holds that one, a private directory of its own.
struct Synced {
    dir: PathBuf,
    _guard: Option<OwnedMutexGuard<()>>,
    _private: Option<tempfile::TempDir>,
}

impl ClientSession {
    pub fn new(session: OpenSession, manager: Arc<SessionManager>, sync_root: PathBuf) -> Self {
        ClientSession {
            session,
            manager,
            sync_root,
            synced: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn open(&self) -> &OpenSession {
        &self.session
    }

    /// The directory a local is kept in: stable per client and local name, so an unchanged
    /// context is not transferred again.
    fn local_path(&self, name: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let key = if self.session.shared_key.is_empty() {
            format!("{}\0{}", self.session.name, name)
        } else {
            format!("{}\0{}", self.session.shared_key, name)
        };
        self.sync_root
            .join(hex::encode(&Sha256::digest(key.as_bytes())[..12]))
    }
}

#[async_trait]
impl Session for ClientSession {
    async fn local_dir(
        &self,
        name: &str,
        include: &[String],
        exclude: &[String],
        progress: Option<TransferProgress>,
    ) -> Result<PathBuf, SessionError> {
        let mut synced = self.synced.lock().await;
        // One sync per local and solve: the frontend reads the Dockerfile before the engine
        // reads the context, with different filters.
        let key = format!("{name}\0{}\0{}", include.join("\n"), exclude.join("\n"));
        if let Some(s) = synced.get(&key) {
            return Ok(s.dir.clone());
        }
        if !self.session.supports("/moby.filesync.v1.FileSync/DiffCopy") {
            return Err(SessionError::Other(
                "no local sources enabled: the client serves no FileSync".into(),
            ));
        }
        let mut dir = self.local_path(name);
        if !include.is_empty() {
            // A filtered sync (just the Dockerfile, or the paths a build reads) must not prune
            // the full copy; each filter gets its own directory.
            use sha2::{Digest, Sha256};
            let filter = Sha256::digest(include.join("\n").as_bytes());
            dir.set_extension(format!("only-{}", hex::encode(&filter[..6])));
        }
        // Concurrent builds of the same client (two jobs, two buildctl runs from one directory)
        // must not wait for each other: the second one syncs into a private directory.
        let (guard, private) = match self.manager.dir_lock(&dir).try_lock_owned() {
            Ok(guard) => (Some(guard), None),
            Err(_) => {
                std::fs::create_dir_all(&self.sync_root)
                    .map_err(|e| SessionError::Other(e.to_string()))?;
                let tmp = tempfile::Builder::new()
                    .prefix("private-")
                    .tempdir_in(&self.sync_root)
                    .map_err(|e| SessionError::Other(e.to_string()))?;
                dir = tmp.path().to_path_buf();
                (None, Some(tmp))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| SessionError::Other(e.to_string()))?;
        let opts = filesync::SyncOptions {
            dir_name: name.to_string(),
            include_patterns: include.to_vec(),
            exclude_patterns: exclude.to_vec(),
            progress: progress.map(|report| -> filesync::ProgressFn {
                // The transfer starts now: clients time it from its first status, as BuildKit's.
                report(0, false);
                Arc::new(move |p: filesync::Progress| report(p.bytes, p.done))
            }),
            ..Default::default()
        };
        filesync::receive_dir(self.session.channel.clone(), &dir, &opts)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    SessionError::NoSuchLocal(name.to_string())
                } else {
                    SessionError::Other(format!("syncing local {name:?}: {e}"))
                }
            })?;
        synced.insert(
            key,
            Synced {
                dir: dir.clone(),
                _guard: guard,
                _private: private,
            },
        );
        Ok(dir)
    }

    /// Synced directories are written only by [`filesync::receive_dir`], which replaces
    /// files by renaming new ones over them.
    fn local_dirs_are_private(&self) -> bool {
        true
    }

    fn transfers_local_dirs(&self) -> bool {
        true
    }

    async fn secret(&self, id: &str) -> Result<Vec<u8>, SessionError> {
        if !self
            .session
            .supports("/moby.buildkit.secrets.v1.Secrets/GetSecret")
        {
            return Err(SessionError::NoSuchSecret(id.to_string()));
        }
        let mut client = SecretsClient::new(self.session.channel.clone());
        match client
            .get_secret(GetSecretRequest {
                id: id.to_string(),
                annotations: Default::default(),
            })
            .await
        {
            Ok(r) => Ok(r.into_inner().data),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Err(SessionError::NoSuchSecret(id.to_string()))
            }
            Err(s) => Err(SessionError::Other(format!("secret {id}: {}", s.message()))),
        }
    }

    async fn has_ssh_agent(&self, id: &str) -> bool {
        use bollard_buildkit_proto::moby::sshforward::v1::{
            ssh_client::SshClient, CheckAgentRequest,
        };
        if !self
            .session
            .supports("/moby.sshforward.v1.SSH/ForwardAgent")
        {
            return false;
        }
        let mut client = SshClient::new(self.session.channel.clone());
        client
            .check_agent(CheckAgentRequest { id: id.to_string() })
            .await
            .is_ok()
    }

    async fn ssh_agent(
        &self,
        id: &str,
    ) -> Result<Box<dyn kiln_engine::session::SshConnection>, SessionError> {
        use bollard_buildkit_proto::moby::sshforward::v1::{ssh_client::SshClient, BytesMessage};
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (read_half, mut write_half) = tokio::io::split(theirs);
        let (tx, rx) = tokio::sync::mpsc::channel::<BytesMessage>(16);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "buildkit.ssh.id",
            id.parse()
                .map_err(|_| SessionError::Other(format!("invalid SSH id {id:?}")))?,
        );
        // Step → agent: bytes written to our end go out as messages.
        tunnel::forward_reads(read_half, 32 * 1024, tx, |data| BytesMessage { data });
        // Agent → step. The call is answered only once the agent has a request, which the step
        // sends after this returns: so the call itself runs in the task.
        let mut client = SshClient::new(self.session.channel.clone());
        let id = id.to_string();
        tokio::spawn(async move {
            let mut incoming = match client.forward_agent(request).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    tracing::warn!("SSH agent {id:?}: {}", s.message());
                    return;
                }
            };
            while let Some(Ok(msg)) = incoming.next().await {
                if write_half.write_all(&msg.data).await.is_err() {
                    break;
                }
            }
            let _ = write_half.shutdown().await;
        });
        Ok(Box::new(ours))
    }

    async fn credentials(&self, host: &str) -> Option<kiln_oci::Credentials> {
        if !self.session.supports("/moby.filesync.v1.Auth/Credentials") {
            return None;
        }
        // Docker Hub credentials are asked for under its registry host name.
        let host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        tracing::debug!(host, "asking the client for credentials");
        let mut client = AuthClient::new(self.session.channel.clone());
        let resp = client
            .credentials(CredentialsRequest {
                host: host.to_string(),
            })
            .await
            .ok()?
            .into_inner();
        if resp.username.is_empty() && resp.secret.is_empty() {
            return None;
        }
        Some(kiln_oci::Credentials {
            username: resp.username,
            password: resp.secret,
        })
    }
}
