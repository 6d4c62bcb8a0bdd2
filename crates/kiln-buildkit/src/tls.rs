//! The TCP listener's TLS: server certificate, mandatory client certificates, hot reload.
//!
//! Certificates come from files (`--tlscert/--tlskey/--tlscacert`) or from the
//! `BUILDKIT_{CA,CERT,KEY}_PEM_B64` environment variables ([`TlsSource`]). With a CA, every
//! client must present a certificate that chains to it, as `buildkitd` does
//! (`RequireAndVerifyClientCert`); without one the server only authenticates itself. ALPN is
//! `h2`: current grpc-go refuses a TLS connection without it.
//!
//! A [`TlsAcceptor`] over files re-reads them every two seconds and swaps in the new
//! configuration when their contents change; a set that does not load (a half-written file,
//! a key that does not match the certificate) is logged and the previous configuration stays.
//! Established connections keep the configuration they were accepted with.
//!
//! [`incoming`] turns a `TcpListener` into a stream of finished handshakes for tonic. Every
//! handshake runs in its own task with a timeout, so a slow or hostile peer holds up no one;
//! failures are logged with the peer's address and never end the stream.
//!
//! ```no_run
//! # async fn run(router: tonic::transport::server::Router) -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_buildkit::tls::{incoming, TlsAcceptor, TlsSource};
//! let acceptor = TlsAcceptor::new(TlsSource::Files {
//!     ca: Some("/etc/kiln/tls/ca.pem".into()),
//!     cert: "/etc/kiln/tls/cert.pem".into(),
//!     key: "/etc/kiln/tls/key.pem".into(),
//! })?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:1235").await?;
//! router.serve_with_incoming(incoming(listener, acceptor)).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Environment variables read by [`TlsSource::Env`]: base64 of PEM text (or the PEM itself).
pub const ENV_CA: &str = "BUILDKIT_CA_PEM_B64";
pub const ENV_CERT: &str = "BUILDKIT_CERT_PEM_B64";
pub const ENV_KEY: &str = "BUILDKIT_KEY_PEM_B64";

/// How often certificate files are re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How long a peer may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this, new connections wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Pause after an accept error such as "too many open files", instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Where the server certificate, its key and the client CA come from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files. `ca: None` means no client authentication. Files are watched for changes.
    Files {
        ca: Option<PathBuf>,
        cert: PathBuf,
        key: PathBuf,
    },
    /// The process environment: [`ENV_CA`] (optional), [`ENV_CERT`], [`ENV_KEY`]. Read once.
    Env,
    /// PEM text given directly, e.g. by [`TlsSource::from_env_map`]. Not reloaded.
    Pem {
        ca: Option<String>,
        cert: String,
        key: String,
    },
}

impl fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSource::Files { ca, cert, key } => f
                .debug_struct("Files")
                .field("ca", ca)
                .field("cert", cert)
                .field("key", key)
                .finish(),
            TlsSource::Env => f.write_str("Env"),
            TlsSource::Pem { ca, .. } => f
                .debug_struct("Pem")
                .field("ca", &ca.is_some())
                .field("key", &"<redacted>")
                .finish_non_exhaustive(),
        }
    }
}

impl TlsSource {
    /// Read the `BUILDKIT_*_PEM_B64` variables from `vars` (the environment, or a map in
    /// tests) and check that they hold a usable certificate, key and CA. Errors name the
    /// variable. An unset or empty CA variable means no client authentication.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<TlsSource, TlsError> {
        let material = Material::from_env(vars)?;
        build_server_config(&material)?;
        let text = |input: Input| String::from_utf8_lossy(&input.bytes).into_owned();
        Ok(TlsSource::Pem {
            ca: material.ca.map(text),
            cert: text(material.cert),
            key: text(material.key),
        })
    }

    fn load(&self) -> Result<Material, TlsError> {
        match self {
            TlsSource::Files { ca, cert, key } => Material::from_files(ca.as_deref(), cert, key),
            TlsSource::Env => Material::from_env(&process_env()),
            TlsSource::Pem { ca, cert, key } => Ok(Material {
                ca: ca.as_ref().map(|pem| Input::inline("CA certificate", pem)),
                cert: Input::inline("server certificate", cert),
                key: Input::inline("server key", key),
            }),
        }
    }
}

/// The three variables from the process environment. (`std::env::vars` would panic on a
/// value that is not UTF-8; such a value becomes one that fails to decode, named in the error.)
fn process_env() -> HashMap<String, String> {
    [ENV_CA, ENV_CERT, ENV_KEY]
        .into_iter()
        .filter_map(|name| match std::env::var(name) {
            Ok(value) => Some((name.to_string(), value)),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => Some((name.to_string(), "\u{fffd}".into())),
        })
        .collect()
}

/// Why a TLS configuration could not be loaded. Every variant names its input (a file or an
/// environment variable); none carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {origin}: {source}")]
    Read { origin: Origin, source: io::Error },
    #[error("{origin} is not set")]
    Missing { origin: Origin },
    #[error("{origin}: {reason}")]
    Malformed { origin: Origin, reason: String },
    #[error("{key} does not belong to the certificate in {cert}: {source}")]
    KeyMismatch {
        cert: Origin,
        key: Origin,
        source: rustls::Error,
    },
    #[error("{origin}: {source}")]
    Rustls {
        origin: Origin,
        source: rustls::Error,
    },
    #[error("{origin}: cannot verify client certificates with this CA: {reason}")]
    ClientCa { origin: Origin, reason: String },
    #[error("watching certificate files for changes needs a Tokio runtime")]
    NoRuntime,
}

/// Where a piece of PEM came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    EnvVar(&'static str),
    Inline(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::EnvVar(name) => write!(f, "environment variable {name}"),
            Origin::Inline(what) => write!(f, "the {what} PEM"),
        }
    }
}

struct Input {
    origin: Origin,
    bytes: Vec<u8>,
}

impl Input {
    fn inline(what: &'static str, pem: &str) -> Input {
        Input {
            origin: Origin::Inline(what),
            bytes: pem.as_bytes().to_vec(),
        }
    }

    fn file(path: &Path) -> Result<Input, TlsError> {
        let origin = Origin::File(path.to_path_buf());
        match std::fs::read(path) {
            Ok(bytes) => Ok(Input { origin, bytes }),
            Err(source) => Err(TlsError::Read { origin, source }),
        }
    }

    /// An environment value: PEM text as is, otherwise base64 of it (whitespace, such as the
    /// line breaks of `base64` without `-w0`, is ignored). `None` if unset or blank.
    fn env(vars: &HashMap<String, String>, name: &'static str) -> Result<Option<Input>, TlsError> {
        let origin = Origin::EnvVar(name);
        let Some(value) = vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if value.starts_with("-----BEGIN") {
            let bytes = value.as_bytes().to_vec();
            return Ok(Some(Input { origin, bytes }));
        }
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(bytes) => Ok(Some(Input { origin, bytes })),
            Err(e) => Err(TlsError::Malformed {
                origin,
                reason: format!("not base64 or PEM text ({})", base64_reason(&e)),
            }),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> TlsError {
        TlsError::Malformed {
            origin: self.origin.clone(),
            reason: reason.into(),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.malformed(pem_reason(&e)))?;
        if certs.is_empty() {
            return Err(self.malformed("no PEM certificate (BEGIN CERTIFICATE) found"));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => self.malformed(
                "no PEM private key (BEGIN PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY) found",
            ),
            e => self.malformed(pem_reason(&e)),
        })
    }
}

/// Describe a PEM error without quoting the input, which may be a private key.
fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a PEM section has no END line (truncated?)".into(),
        E::IllegalSectionStart { .. } => "malformed PEM BEGIN line".into(),
        E::Base64Decode(_) => "the body of a PEM section is not valid base64".into(),
        E::NoItemsFound => "no PEM sections found".into(),
        E::SectionTooLarge => "a PEM section is too large".into(),
        _ => "unreadable PEM".into(),
    }
}

/// Describe a base64 error by position only, never by the offending byte.
fn base64_reason(e: &base64::DecodeError) -> String {
    use base64::DecodeError as E;
    match e {
        E::InvalidByte(offset, _) => format!("invalid character at offset {offset}"),
        E::InvalidLength(len) => format!("invalid length {len}"),
        E::InvalidLastSymbol(offset, _) => format!("invalid last symbol at offset {offset}"),
        E::InvalidPadding => "invalid padding".to_string(),
    }
}

/// The raw inputs of one configuration. Compared byte for byte to notice file changes.
struct Material {
    ca: Option<Input>,
    cert: Input,
    key: Input,
}

impl Material {
    fn from_files(ca: Option<&Path>, cert: &Path, key: &Path) -> Result<Material, TlsError> {
        Ok(Material {
            ca: ca.map(Input::file).transpose()?,
            cert: Input::file(cert)?,
            key: Input::file(key)?,
        })
    }

    fn from_env(vars: &HashMap<String, String>) -> Result<Material, TlsError> {
        let required = |name| {
            Input::env(vars, name)?.ok_or(TlsError::Missing {
                origin: Origin::EnvVar(name),
            })
        };
        Ok(Material {
            ca: Input::env(vars, ENV_CA)?,
            cert: required(ENV_CERT)?,
            key: required(ENV_KEY)?,
        })
    }

    fn same_contents<'a>(&'a self, other: &'a Material) -> bool {
        let ca = |m: &'a Material| m.ca.as_ref().map(|i| &i.bytes);
        self.cert.bytes == other.cert.bytes
            && self.key.bytes == other.key.bytes
            && ca(self) == ca(other)
    }
}

fn build_server_config(material: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert_chain = material.cert.certificates()?;
    let key = material.key.private_key()?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            origin: material.cert.origin.clone(),
            source,
        })?;
    let builder = match &material.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in ca.certificates()? {
                roots
                    .add(cert)
                    .map_err(|e| ca.malformed(format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    origin: ca.origin.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(cert_chain.clone(), key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: material.cert.origin.clone(),
                key: material.key.origin.clone(),
                source,
            },
            source => TlsError::Rustls {
                origin: material.key.origin.clone(),
                source,
            },
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    log_certificate(&material.cert.origin, &cert_chain[0]);
    Ok(Arc::new(config))
}

fn log_certificate(origin: &Origin, cert: &CertificateDer<'_>) {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return;
    };
    let not_after = parsed.validity().not_after;
    let subject = parsed.subject().to_string();
    if !parsed.validity().is_valid() {
        tracing::warn!(%origin, %subject, %not_after, "server certificate is not valid now (expired or not yet valid)");
    } else {
        tracing::debug!(%origin, %subject, %not_after, "server certificate loaded");
    }
}

/// Accepts TLS connections with the current configuration. Cheap to clone; all clones see
/// reloads. Dropping the last clone stops the file watcher.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: watch::Receiver<ActiveConfig>,
}

#[derive(Clone)]
struct ActiveConfig {
    server: Arc<ServerConfig>,
    client_auth: bool,
}

impl ActiveConfig {
    fn build(material: &Material) -> Result<ActiveConfig, TlsError> {
        Ok(ActiveConfig {
            server: build_server_config(material)?,
            client_auth: material.ca.is_some(),
        })
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("requires_client_cert", &self.requires_client_cert())
            .finish()
    }
}

impl TlsAcceptor {
    /// Load `source` now; for [`TlsSource::Files`], re-read the files every
    /// [`RELOAD_INTERVAL`]. Must be called inside a Tokio runtime when reloading.
    pub fn new(source: TlsSource) -> Result<TlsAcceptor, TlsError> {
        TlsAcceptor::with_reload_interval(source, RELOAD_INTERVAL)
    }

    /// [`TlsAcceptor::new`] with another polling interval for the files.
    pub fn with_reload_interval(
        source: TlsSource,
        interval: Duration,
    ) -> Result<TlsAcceptor, TlsError> {
        let material = source.load()?;
        let config = ActiveConfig::build(&material)?;
        if !config.client_auth {
            tracing::warn!(
                "TLS without a client CA: any client that can reach the port may build; \
                 configure a CA to require client certificates"
            );
        }
        let (tx, rx) = watch::channel(config);
        if let TlsSource::Files { .. } = source {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| TlsError::NoRuntime)?;
            runtime.spawn(watch_files(source, material, tx, interval));
        }
        Ok(TlsAcceptor { config: rx })
    }

    /// The configuration new connections get.
    pub fn current_config(&self) -> Arc<ServerConfig> {
        self.config.borrow().server.clone()
    }

    /// Whether clients must present a certificate (a CA is configured).
    pub fn requires_client_cert(&self) -> bool {
        self.config.borrow().client_auth
    }

    /// Run the server side of a handshake on `tcp` with the current configuration. No
    /// timeout here; [`incoming`] adds one.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsConn> {
        tokio_rustls::TlsAcceptor::from(self.current_config())
            .accept(tcp)
            .await
    }
}

/// Re-read the files every `interval`; swap the configuration when their contents change
/// and load. Ends when every [`TlsAcceptor`] is gone.
async fn watch_files(
    source: TlsSource,
    mut current: Material,
    tx: watch::Sender<ActiveConfig>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // A set that fails to load is reported only when it is seen twice in a row: a rotation
    // that replaces cert and key one after the other passes through a mismatched pair.
    let mut suspect: Option<Material> = None;
    // Contents reported as broken, so they are not reported again every tick.
    let mut rejected: Option<Material> = None;
    let mut unreadable_ticks = 0u32;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = tick.tick() => {}
        }
        let loaded = match source.load() {
            Ok(loaded) => {
                unreadable_ticks = 0;
                loaded
            }
            Err(e) => {
                unreadable_ticks += 1;
                if unreadable_ticks == 2 {
                    tracing::warn!(error = %e, "certificate files not readable; keeping the current TLS configuration");
                } else {
                    tracing::debug!(error = %e, "certificate files not readable; trying again");
                }
                continue;
            }
        };
        let seen = |m: &Option<Material>| m.as_ref().is_some_and(|m| loaded.same_contents(m));
        if loaded.same_contents(&current) || seen(&rejected) {
            suspect = None;
            continue;
        }
        match ActiveConfig::build(&loaded) {
            Ok(config) => {
                tx.send_replace(config);
                tracing::info!(
                    cert = %loaded.cert.origin,
                    client_ca = loaded.ca.as_ref().map(|ca| ca.origin.to_string()),
                    "reloaded TLS certificates; new connections use them"
                );
                current = loaded;
                suspect = None;
                rejected = None;
            }
            Err(e) if seen(&suspect) => {
                tracing::warn!(error = %e, "changed certificate files do not load; keeping the previous TLS configuration");
                suspect = None;
                rejected = Some(loaded);
            }
            Err(e) => {
                tracing::debug!(error = %e, "changed certificate files do not load yet; trying again");
                suspect = Some(loaded);
            }
        }
    }
}

/// The subject common name of a DER certificate, if it has one.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The verified client certificate's subject CN of a request served over [`incoming`].
pub fn client_common_name<T>(request: &tonic::Request<T>) -> Option<String> {
    request.peer_certs()?.first().and_then(common_name)
}

/// An established server-side TLS connection, as [`incoming`] yields it.
///
/// tonic's connect info for it is `TlsConnectInfo<TcpConnectInfo>`, so `Request::remote_addr()`
/// and `Request::peer_certs()` work in handlers (see also [`client_common_name`]); the
/// negotiated ALPN and the peer's certificates are on `conn.get_ref().1`.
pub type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

/// Accept TCP connections on `listener` and yield them once their TLS handshake succeeds,
/// for `tonic::transport::Server::serve_with_incoming`.
pub fn incoming(listener: TcpListener, acceptor: TlsAcceptor) -> TlsIncoming {
    TlsIncoming {
        listener,
        acceptor,
        handshakes: JoinSet::new(),
        backoff: None,
        handshake_timeout: HANDSHAKE_TIMEOUT,
    }
}

/// The stream returned by [`incoming`]. It never ends and never yields `Err`: failed
/// handshakes and accept errors are logged and skipped. Dropping it closes the listening
/// socket and abandons handshakes in progress.
pub struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<TlsConn>>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    handshake_timeout: Duration,
}

impl TlsIncoming {
    /// Replace [`HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TlsIncoming {
        self.handshake_timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Start handshakes for every connection the listener has ready.
    fn accept_ready(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(pause) = &mut self.backoff {
                if pause.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.backoff = None;
            }
            if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                return;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer))) => {
                    let acceptor = self.acceptor.clone();
                    let timeout = self.handshake_timeout;
                    self.handshakes
                        .spawn(handshake(acceptor, tcp, peer, timeout));
                }
                Poll::Ready(Err(e)) if is_per_connection_error(&e) => {
                    tracing::debug!(error = %e, "accepting a TCP connection failed");
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "accepting TCP connections failed; retrying shortly");
                    self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF)));
                }
                Poll::Pending => return,
            }
        }
    }
}

impl futures::Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accept_ready(cx);
        loop {
            match self.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    if e.is_panic() {
                        tracing::error!(error = %e, "TLS handshake task panicked");
                    }
                }
                // Empty or all busy: the listener (or the set) will wake us.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsConn> {
    // tonic's own TCP options do not apply to `serve_with_incoming`.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
    }
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(conn)) => {
            let session = conn.get_ref().1;
            let client = session.peer_certificates().and_then(|c| c.first());
            tracing::debug!(
                %peer,
                client_cn = client.and_then(common_name),
                alpn = session.alpn_protocol().map(String::from_utf8_lossy).as_deref(),
                "TLS connection established"
            );
            Some(conn)
        }
        Ok(Err(e)) => {
            log_handshake_failure(peer, &e);
            None
        }
        Err(_) => {
            tracing::info!(%peer, ?timeout, "TLS handshake timed out; closing the connection");
            None
        }
    }
}

fn log_handshake_failure(peer: SocketAddr, e: &io::Error) {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_),
        ) => tracing::warn!(%peer, error = %e, "TLS handshake failed: client certificate refused"),
        Some(rustls::Error::AlertReceived(alert)) => tracing::info!(
            %peer,
            ?alert,
            "TLS handshake failed: the client refused the connection (if it is a certificate \
             alert, the client does not trust the server certificate or the name it dialled is \
             not among its SANs)"
        ),
        Some(_) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
        None if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ) =>
        {
            // Port probes (TCP health checks, load balancers) connect and close.
            tracing::debug!(%peer, error = %e, "connection closed before the TLS handshake finished")
        }
        None => tracing::info!(%peer, error = %e, "TLS handshake failed"),
    }
}
