//! `kiln buildkitd`: serve BuildKit's API (for buildctl and buildx) from kiln's engine.

use crate::config::KilnConfig;
use anyhow::Context;
use kiln_buildkit::server::{self, Address};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct BuildkitdArgs {
    /// Listening address, repeatable: unix:///path/to.sock or tcp://HOST:PORT.
    /// Default: unix:///run/kiln/buildkit.sock (root) or $XDG_RUNTIME_DIR/kiln/buildkit.sock.
    #[arg(long = "addr")]
    pub addrs: Vec<String>,
    /// CA certificate that client certificates must be signed by (enables mutual TLS).
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    /// Server certificate (PEM).
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    /// Server key (PEM).
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
    /// Take the CA, certificate and key from BUILDKIT_CA_PEM_B64, BUILDKIT_CERT_PEM_B64 and
    /// BUILDKIT_KEY_PEM_B64.
    #[arg(long)]
    pub tls_from_env: bool,
    /// Also serve kiln's Docker API subset (build, images, push, login) on this unix socket,
    /// e.g. unix:///run/kiln/docker.sock, for `DOCKER_HOST`.
    #[arg(long = "docker-addr")]
    pub docker_addrs: Vec<String>,
    /// Forward what the Docker API does not serve itself (containers, exec, networks, volumes,
    /// pulls) to this Docker daemon, unix:///path, instead of refusing it. Whoever can reach
    /// the Docker API can then do anything that daemon can.
    #[arg(long = "docker-forward")]
    pub docker_forward: Option<String>,
    /// Serve `/healthz` and `/readyz` over plain HTTP here (e.g. 0.0.0.0:8081) for Kubernetes
    /// probes; the BuildKit port itself needs a client certificate.
    #[arg(long = "health-addr")]
    pub health_addr: Option<std::net::SocketAddr>,
}

pub fn default_socket() -> PathBuf {
    if crate::userns::outer_uid() == 0 {
        return PathBuf::from("/run/kiln/buildkit.sock");
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    runtime.join("kiln/buildkit.sock")
}

pub async fn run(args: BuildkitdArgs, config: &KilnConfig, root: PathBuf) -> anyhow::Result<()> {
    let addrs: Vec<Address> = if args.addrs.is_empty() {
        vec![Address::Unix(default_socket())]
    } else {
        args.addrs
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e: String| anyhow::anyhow!("--addr: {e}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let tls = tls_source(&args)?;
    let docker_sockets: Vec<PathBuf> = args
        .docker_addrs
        .iter()
        .map(|a| {
            a.strip_prefix("unix://").map(PathBuf::from).ok_or_else(|| {
                anyhow::anyhow!("--docker-addr {a}: only unix:///path sockets are supported")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let engine = config.open_engine(root.clone()).await?;
    let mut daemon = kiln_buildkit::Daemon::new(engine.clone());
    let mut docker_handles = Vec::new();
    let api = if docker_sockets.is_empty() {
        None
    } else {
        let api = kiln_dockerd::DockerApi::new(kiln_dockerd::DockerApiConfig {
            engine: engine.clone(),
            store_dir: root.join("docker"),
        })
        .await
        .context("Docker API image store")?;
        daemon.local_images = Some(Arc::new(DockerImages(api.clone())));
        if let Some(forward) = &args.docker_forward {
            let path = forward.strip_prefix("unix://").ok_or_else(|| {
                anyhow::anyhow!(
                    "--docker-forward {forward}: only unix:///path sockets are supported"
                )
            })?;
            api.set_forward(PathBuf::from(path));
        }
        Some(api)
    };
    let daemon = Arc::new(daemon);
    if let Some(api) = &api {
        api.set_buildkit(Arc::new(BuildkitDoor(daemon.clone())));
        for path in &docker_sockets {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
            }
            let handle = api
                .serve_unix(path)
                .await
                .with_context(|| format!("--docker-addr unix://{}", path.display()))?;
            docker_handles.push(handle);
        }
    }
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for addr in addrs {
        let daemon = daemon.clone();
        let stop = stop.clone();
        match addr {
            Address::Unix(path) => {
                tasks.spawn(async move {
                    server::serve_unix(daemon, path.clone(), stop)
                        .await
                        .with_context(|| format!("unix://{}", path.display()))
                });
            }
            Address::Tcp(hostport) => {
                let listener = tokio::net::TcpListener::bind(&hostport)
                    .await
                    .with_context(|| format!("listening on tcp://{hostport}"))?;
                match &tls {
                    Some(source) => {
                        let acceptor = kiln_buildkit::tls::TlsAcceptor::new(source.clone())
                            .context("TLS configuration")?;
                        if !acceptor.requires_client_cert() {
                            eprintln!(
                                "WARNING: tcp://{hostport}: no --tlscacert, so any client may connect"
                            );
                        }
                        tasks.spawn(async move {
                            server::serve_tcp_tls(daemon, listener, acceptor, stop)
                                .await
                                .with_context(|| format!("tcp://{hostport}"))
                        });
                    }
                    None => {
                        eprintln!(
                            "WARNING: tcp://{hostport} serves without TLS: anyone who can connect \
                             can build. Use --tlscacert/--tlscert/--tlskey or --tls-from-env."
                        );
                        tasks.spawn(async move {
                            server::serve_tcp_plain(daemon, listener, stop)
                                .await
                                .with_context(|| format!("tcp://{hostport}"))
                        });
                    }
                }
            }
        }
    }
    // Ready once the engine is open and every listener is bound (both happened above).
    if let Some(addr) = args.health_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--health-addr {addr}"))?;
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route("/readyz", axum::routing::get(|| async { "ready\n" }));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "health endpoint stopped");
            }
        });
    }
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
        Some(done) = tasks.join_next() => {
            stop.cancel();
            done??;
        }
    }
    stop.cancel();
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn tls_source(args: &BuildkitdArgs) -> anyhow::Result<Option<kiln_buildkit::tls::TlsSource>> {
    use kiln_buildkit::tls::TlsSource;
    if args.tls_from_env {
        if args.tlscert.is_some() || args.tlskey.is_some() || args.tlscacert.is_some() {
            anyhow::bail!("--tls-from-env and --tlscert/--tlskey/--tlscacert exclude each other");
        }
        return Ok(Some(TlsSource::Env));
    }
    match (&args.tlscert, &args.tlskey) {
        (Some(cert), Some(key)) => Ok(Some(TlsSource::Files {
            ca: args.tlscacert.clone(),
            cert: cert.clone(),
            key: key.clone(),
        })),
        (None, None) if args.tlscacert.is_none() => Ok(None),
        _ => {
            anyhow::bail!("TLS needs both --tlscert and --tlskey (and --tlscacert for mutual TLS)")
        }
    }
}

/// The Docker API's `/grpc` and `/session` lead to this daemon's BuildKit API.
struct BuildkitDoor(Arc<kiln_buildkit::Daemon>);

#[async_trait::async_trait]
impl kiln_dockerd::BuildkitDoor for BuildkitDoor {
    async fn grpc(&self, io: kiln_dockerd::Hijacked) {
        if let Err(e) = kiln_buildkit::hijack::serve_grpc(self.0.clone(), io).await {
            tracing::warn!("BuildKit API over /grpc: {e}");
        }
    }

    async fn session(&self, io: kiln_dockerd::Hijacked, headers: &axum::http::HeaderMap) {
        let all = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let first = |name: &str| all(name).into_iter().next().unwrap_or_default();
        let session = kiln_buildkit::hijack::SessionHeaders {
            id: first("x-docker-expose-session-uuid"),
            name: first("x-docker-expose-session-name"),
            shared_key: first("x-docker-expose-session-sharedkey"),
            methods: all("x-docker-expose-session-grpc-method"),
        };
        if let Err(e) = kiln_buildkit::hijack::attach_session(&self.0, io, session).await {
            tracing::warn!("BuildKit session over /session: {e}");
        }
    }

    async fn build(
        &self,
        build: kiln_dockerd::SessionBuild,
        status: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    ) -> Result<String, String> {
        let build = kiln_buildkit::hijack::ClassicBuild {
            session: build.session,
            build_id: build.build_id,
            tags: build.tags,
            frontend_attrs: build.frontend_attrs,
            cache_from: build.cache_from,
        };
        kiln_buildkit::hijack::classic_build(&self.0, build, status).await
    }
}

/// The `moby` exporter stores images where the Docker API lists them.
struct DockerImages(kiln_dockerd::DockerApi);

impl kiln_buildkit::daemon::LocalImages for DockerImages {
    fn store(
        &self,
        image: &kiln_engine::exporter::BuiltImage,
        names: &[String],
    ) -> Result<(), String> {
        self.0.add_built_image(image, names).map(|_| ())
    }
}
