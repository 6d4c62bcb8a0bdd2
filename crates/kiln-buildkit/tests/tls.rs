//! The mutual-TLS listener over real TLS on 127.0.0.1: a tonic server with the gRPC health
//! service behind `tls::incoming`, and rustls / tonic clients with good and bad credentials.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bollard_buildkit_proto::health::health_client::HealthClient;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
    HealthListRequest, HealthListResponse,
};
use kiln_buildkit::certs::{self, generate, generate_client, CertBundle, CertOptions};
use kiln_buildkit::tls::{self, incoming, TlsAcceptor, TlsError, TlsSource};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Asking the test service for this "service" answers with the client's CN as the error.
const WHOAMI: &str = "whoami";

struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if request.get_ref().service == WHOAMI {
            let cn = tls::client_common_name(&request).unwrap_or_default();
            return Err(Status::failed_precondition(cn));
        }
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }
}

fn bundle() -> CertBundle {
    generate(&CertOptions::default()).expect("certificates")
}

fn files_source(dir: &Path) -> TlsSource {
    TlsSource::Files {
        ca: Some(dir.join("ca.pem")),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

fn pem_source(b: &CertBundle) -> TlsSource {
    TlsSource::Pem {
        ca: Some(b.ca_pem.clone()),
        cert: b.server_cert_pem.clone(),
        key: b.server_key_pem.clone(),
    }
}

/// A gRPC server behind the TLS listener; handshakes time out after half a second.
/// `RUST_LOG=kiln_buildkit=debug` shows the listener's log.
async fn serve(acceptor: TlsAcceptor) -> SocketAddr {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let conns = incoming(listener, acceptor).with_handshake_timeout(Duration::from_millis(500));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(Healthy))
            .serve_with_incoming(conns),
    );
    addr
}

async fn serve_bundle(b: &CertBundle) -> SocketAddr {
    serve(TlsAcceptor::new(pem_source(b)).expect("acceptor")).await
}

async fn channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    server_name: &str,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(server_name);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

async fn health_check(channel: Channel) -> Result<(), String> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let response = HealthClient::new(channel)
        .check(request)
        .await
        .map_err(|s| format!("check: {s:?}"))?;
    assert_eq!(response.get_ref().status, ServingStatus::Serving as i32);
    Ok(())
}

/// One gRPC health check over a new connection.
async fn grpc(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    server_name: &str,
) -> Result<(), String> {
    health_check(channel(addr, ca_pem, identity, server_name).await?).await
}

async fn assert_good_client_works(addr: SocketAddr, b: &CertBundle) {
    let identity = Some((b.client_cert_pem.as_str(), b.client_key_pem.as_str()));
    grpc(addr, &b.ca_pem, identity, "localhost")
        .await
        .expect("a good client must still be served");
}

fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Handshake with rustls, send the HTTP/2 preface and an empty SETTINGS frame, and read the
/// server's first frame header. Returns the negotiated ALPN protocol. With TLS 1.3 a refused
/// client certificate only shows up here, on the first read.
async fn raw_h2(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<Option<Vec<u8>>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await?;
    tls.flush().await?;
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut header))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    assert_eq!(header[3], 4, "the server's first frame is SETTINGS");
    Ok(alpn)
}

/// Read until the server closes the connection; fails if it stays open for 5 s.
async fn closed_by_server(mut tcp: TcpStream) {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn good_client_cert_gets_grpc_over_h2() {
    let b = bundle();
    let addr = serve_bundle(&b).await;
    assert_good_client_works(addr, &b).await;

    let identity = Some((b.client_cert_pem.as_str(), b.client_key_pem.as_str()));
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let alpn = raw_h2(
            addr,
            client_config(&b.ca_pem, identity, versions),
            "localhost",
        )
        .await
        .expect("raw TLS client");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    }
    // IP SAN, as `buildctl --addr tcp://127.0.0.1:1235` verifies it.
    grpc(addr, &b.ca_pem, identity, "127.0.0.1")
        .await
        .expect("IP SAN");

    let ch = channel(addr, &b.ca_pem, identity, "localhost")
        .await
        .unwrap();
    let whoami = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: WHOAMI.into(),
        })
        .await
        .expect_err("whoami answers with an error");
    assert_eq!(whoami.message(), "kiln-client");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let b = bundle();
    let addr = serve_bundle(&b).await;
    let err = grpc(addr, &b.ca_pem, None, "localhost").await.unwrap_err();
    assert!(!err.is_empty());
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = client_config(&b.ca_pem, None, versions);
        raw_h2(addr, config, "localhost")
            .await
            .expect_err("no client certificate");
    }
    assert_good_client_works(addr, &b).await;
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused() {
    let b = bundle();
    let other = bundle();
    let addr = serve_bundle(&b).await;
    // Trusts the right server, but presents a certificate the server's CA never signed.
    let identity = Some((
        other.client_cert_pem.as_str(),
        other.client_key_pem.as_str(),
    ));
    grpc(addr, &b.ca_pem, identity, "localhost")
        .await
        .expect_err("foreign client certificate");
    let config = client_config(&b.ca_pem, identity, &[&rustls::version::TLS13]);
    raw_h2(addr, config, "localhost")
        .await
        .expect_err("foreign client certificate (raw)");
    assert_good_client_works(addr, &b).await;
}

#[tokio::test]
async fn expired_client_cert_is_refused() {
    let b = bundle();
    let now = SystemTime::now();
    let expired = generate_client(&b.ca_pem, &b.ca_key_pem, "old", now - 30 * DAY, now - DAY)
        .expect("expired client certificate");
    let addr = serve_bundle(&b).await;
    let identity = Some((expired.cert_pem.as_str(), expired.key_pem.as_str()));
    grpc(addr, &b.ca_pem, identity, "localhost")
        .await
        .expect_err("expired client certificate");
    assert_good_client_works(addr, &b).await;

    // The same CA issues a current one that works, so expiry was the reason.
    let fresh = generate_client(&b.ca_pem, &b.ca_key_pem, "new", now - DAY, now + DAY).unwrap();
    let identity = Some((fresh.cert_pem.as_str(), fresh.key_pem.as_str()));
    grpc(addr, &b.ca_pem, identity, "localhost")
        .await
        .expect("fresh client certificate");
}

#[tokio::test]
async fn server_cert_only_covers_its_listed_names() {
    let b = bundle();
    let addr = serve_bundle(&b).await;
    let identity = Some((b.client_cert_pem.as_str(), b.client_key_pem.as_str()));
    for name in ["evil.example", "buildkitd.other.svc", "10.9.8.7"] {
        let err = grpc(addr, &b.ca_pem, identity, name).await.unwrap_err();
        assert!(
            err.contains("connect"),
            "{name}: fails while connecting: {err}"
        );
    }
    for name in [
        "buildkitd.gitea.svc.cluster.local",
        "buildkitd.gitea.svc",
        "buildkitd",
    ] {
        grpc(addr, &b.ca_pem, identity, name).await.expect(name);
    }
}

#[tokio::test]
async fn plaintext_garbage_and_silent_peers_do_not_stop_the_server() {
    let b = bundle();
    let addr = serve_bundle(&b).await;

    // A peer that connects and says nothing must not hold up anyone else…
    let silent = TcpStream::connect(addr).await.unwrap();
    assert_good_client_works(addr, &b).await;

    // …and is dropped once the handshake timeout (0.5 s here) passes.
    closed_by_server(silent).await;

    let mut h2c = TcpStream::connect(addr).await.unwrap();
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    closed_by_server(h2c).await;

    let mut http1 = TcpStream::connect(addr).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_server(http1).await;

    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    garbage.write_all(&[0u8; 4096]).await.unwrap_or(());
    closed_by_server(garbage).await;

    assert_good_client_works(addr, &b).await;
}

/// Retry until `f` succeeds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let result = f().await;
        if result.is_ok() || Instant::now() > deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn replaced_cert_files_are_used_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = bundle();
    old.write_files(dir.path(), false).unwrap();
    let acceptor =
        TlsAcceptor::with_reload_interval(files_source(dir.path()), Duration::from_millis(200))
            .unwrap();
    assert!(acceptor.requires_client_cert());
    let addr = serve(acceptor).await;

    let old_identity = Some((old.client_cert_pem.as_str(), old.client_key_pem.as_str()));
    let before = channel(addr, &old.ca_pem, old_identity, "localhost")
        .await
        .unwrap();
    health_check(before.clone()).await.expect("before the swap");

    let new = bundle();
    new.write_files(dir.path(), true).unwrap();
    let new_identity = Some((new.client_cert_pem.as_str(), new.client_key_pem.as_str()));
    eventually(Duration::from_secs(5), || {
        grpc(addr, &new.ca_pem, new_identity, "localhost")
    })
    .await
    .expect("a client of the new CA is served within seconds");

    // New connections with the old credentials are refused; the old connection lives on.
    grpc(addr, &old.ca_pem, old_identity, "localhost")
        .await
        .expect_err("old CA no longer trusted");
    health_check(before)
        .await
        .expect("connection from before the swap");
}

#[tokio::test]
async fn broken_cert_files_keep_the_previous_config() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle();
    b.write_files(dir.path(), false).unwrap();
    let acceptor =
        TlsAcceptor::with_reload_interval(files_source(dir.path()), Duration::from_millis(100))
            .unwrap();
    let addr = serve(acceptor).await;

    // Half-written certificate, then a key of another certificate.
    let cert = &b.server_cert_pem;
    std::fs::write(dir.path().join("cert.pem"), &cert[..cert.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_good_client_works(addr, &b).await;
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), bundle().server_key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_good_client_works(addr, &b).await;
    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_good_client_works(addr, &b).await;

    // After the broken states, a complete new set is still picked up.
    let new = bundle();
    new.write_files(dir.path(), true).unwrap();
    let identity = Some((new.client_cert_pem.as_str(), new.client_key_pem.as_str()));
    eventually(Duration::from_secs(5), || {
        grpc(addr, &new.ca_pem, identity, "localhost")
    })
    .await
    .expect("the new set is used");
}

fn env_map(b: &CertBundle) -> HashMap<String, String> {
    b.env_lines()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn env_variables_serve_mutual_tls() {
    let b = bundle();
    let source = TlsSource::from_env_map(&env_map(&b)).expect("env source");
    let acceptor = TlsAcceptor::new(source).unwrap();
    assert!(acceptor.requires_client_cert());
    let addr = serve(acceptor).await;
    assert_good_client_works(addr, &b).await;
    grpc(addr, &b.ca_pem, None, "localhost")
        .await
        .expect_err("client certificates are required");
}

#[tokio::test]
async fn env_values_may_be_raw_or_wrapped_pem() {
    let b = bundle();
    let mut vars = HashMap::new();
    vars.insert(tls::ENV_CA.to_string(), b.ca_pem.clone());
    vars.insert(tls::ENV_CERT.to_string(), b.server_cert_pem.clone());
    // `base64` without -w0 wraps at 76 columns.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&b.server_key_pem);
    let wrapped: Vec<String> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    vars.insert(tls::ENV_KEY.to_string(), wrapped.join("\n") + "\n");
    let addr = serve(TlsAcceptor::new(TlsSource::from_env_map(&vars).unwrap()).unwrap()).await;
    assert_good_client_works(addr, &b).await;
}

#[test]
fn env_errors_name_the_variable_and_hide_the_key() {
    let b = bundle();
    let mut vars = env_map(&b);
    vars.insert(tls::ENV_KEY.into(), "LS0t!!notbase64".into());
    let err = TlsSource::from_env_map(&vars).unwrap_err().to_string();
    assert!(err.contains("BUILDKIT_KEY_PEM_B64"), "{err}");
    assert!(!err.contains("notbase64"), "{err}");

    let mut vars = env_map(&b);
    vars.remove(tls::ENV_CERT);
    let err = TlsSource::from_env_map(&vars).unwrap_err();
    assert!(matches!(err, TlsError::Missing { .. }));
    assert!(err.to_string().contains("BUILDKIT_CERT_PEM_B64"), "{err}");

    let mut vars = env_map(&b);
    let not_pem = base64::engine::general_purpose::STANDARD.encode("hello");
    vars.insert(tls::ENV_CA.into(), not_pem);
    let err = TlsSource::from_env_map(&vars).unwrap_err().to_string();
    assert!(err.contains("BUILDKIT_CA_PEM_B64"), "{err}");

    let mut vars = env_map(&b);
    let other_key = base64::engine::general_purpose::STANDARD.encode(bundle().server_key_pem);
    vars.insert(tls::ENV_KEY.into(), other_key);
    let err = TlsSource::from_env_map(&vars).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
}

#[tokio::test]
async fn without_a_ca_any_client_may_connect() {
    let b = bundle();
    let mut vars = env_map(&b);
    vars.remove(tls::ENV_CA);
    let acceptor = TlsAcceptor::new(TlsSource::from_env_map(&vars).unwrap()).unwrap();
    assert!(!acceptor.requires_client_cert());
    let addr = serve(acceptor).await;
    grpc(addr, &b.ca_pem, None, "localhost")
        .await
        .expect("server-only TLS");
}

#[tokio::test]
async fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle();
    b.write_files(dir.path(), false).unwrap();
    std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
    let err = TlsAcceptor::new(files_source(dir.path())).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }));
    assert!(err.to_string().contains("ca.pem"), "{err}");

    std::fs::write(dir.path().join("ca.pem"), &b.ca_pem).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    let err = TlsAcceptor::new(files_source(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("key.pem"), "{err}");
}

#[test]
fn server_cert_has_the_cluster_names_and_extra_sans() {
    use x509_parser::extensions::GeneralName;
    let opts = CertOptions {
        sans: vec![
            "buildkit.example.com".into(),
            "10.1.2.3".into(),
            "[::1]".into(),
        ],
        ..CertOptions::default()
    };
    let b = generate(&opts).unwrap();
    let der = CertificateDer::from_pem_slice(b.server_cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("SAN extension");
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(n) => dns.push(n.to_string()),
            GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    for want in [
        "buildkitd.gitea.svc.cluster.local",
        "buildkitd.gitea.svc",
        "buildkitd",
        "localhost",
        "buildkit.example.com",
    ] {
        assert!(dns.iter().any(|d| d == want), "{want} in {dns:?}");
    }
    assert_eq!(dns.len(), 5);
    assert!(ips.contains(&vec![127, 0, 0, 1]));
    assert!(ips.contains(&vec![10, 1, 2, 3]));
    let mut v6_loopback = vec![0u8; 16];
    v6_loopback[15] = 1;
    assert!(ips.contains(&v6_loopback));

    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert!((825..=826).contains(&days), "{days} days");

    let ca_der = CertificateDer::from_pem_slice(b.ca_pem.as_bytes()).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    assert_eq!(
        ca.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        certs::CA_COMMON_NAME
    );
    let usage = ca.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());

    let client_der = CertificateDer::from_pem_slice(b.client_cert_pem.as_bytes()).unwrap();
    let (_, client) = x509_parser::parse_x509_certificate(&client_der).unwrap();
    let eku = client.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(
        client
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "kiln-client"
    );
}

#[test]
fn written_files_keep_keys_private_and_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle();
    let written = b.write_files(dir.path(), false).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in [
        "ca.pem",
        "cert.pem",
        "key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("key.pem"), 0o600);
    assert_eq!(mode("client-key.pem"), 0o600);
    assert_eq!(mode("cert.pem"), 0o644);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        5,
        "no temp files left"
    );

    let other = bundle();
    let err = other.write_files(dir.path(), false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    let on_disk = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
    assert_eq!(on_disk, b.server_key_pem, "nothing was replaced");

    other.write_files(dir.path(), true).unwrap();
    let on_disk = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
    assert_eq!(on_disk, other.server_key_pem);
    assert_eq!(mode("key.pem"), 0o600);
}

#[test]
fn env_lines_decode_back_to_the_pems() {
    let b = bundle();
    let text = b.env_lines();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    let want = [
        ("BUILDKIT_CA_PEM_B64", &b.ca_pem),
        ("BUILDKIT_CERT_PEM_B64", &b.server_cert_pem),
        ("BUILDKIT_KEY_PEM_B64", &b.server_key_pem),
        ("BUILDKIT_CLIENT_CERT_PEM_B64", &b.client_cert_pem),
        ("BUILDKIT_CLIENT_KEY_PEM_B64", &b.client_key_pem),
    ];
    for (line, (name, pem)) in lines.iter().zip(want) {
        let (key, value) = line.split_once('=').unwrap();
        assert_eq!(key, name);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        assert_eq!(&String::from_utf8(decoded).unwrap(), pem);
    }
}

/// A Go `crypto/tls` client the way buildctl and buildx configure theirs (CA pool, client
/// key pair, server name from `--addr`, ALPN `h2`). Run only where a `go` toolchain exists.
const GO_CLIENT: &str = r#"package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
)

func main() {
	addr, name, dir, withCert, maxVersion := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(dir + "/ca.pem")
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		fail(fmt.Errorf("ca.pem: %v", err))
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: name, NextProtos: []string{"h2"}}
	if maxVersion == "1.2" {
		cfg.MaxVersion = tls.VersionTLS12
	}
	if withCert == "yes" {
		pair, err := tls.LoadX509KeyPair(dir+"/client.pem", dir+"/client-key.pem")
		if err != nil {
			fail(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		fail(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		fail(fmt.Errorf("negotiated ALPN %q", p))
	}
	conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	header := make([]byte, 9)
	if _, err := io.ReadFull(conn, header); err != nil {
		fail(err)
	}
	fmt.Println("ok")
}

func fail(err error) {
	fmt.Println("error:", err)
	os.Exit(1)
}
"#;

#[tokio::test]
async fn go_tls_clients_accept_the_generated_certificates() {
    let Ok(go) = std::env::var("GO").or_else(|_| which_go().ok_or(())) else {
        eprintln!("skipped: no `go` toolchain on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = bundle();
    b.write_files(dir.path(), false).unwrap();
    let src = dir.path().join("client.go");
    std::fs::write(&src, GO_CLIENT).unwrap();
    let bin = dir.path().join("goclient");
    let built = tokio::process::Command::new(&go)
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .await
        .unwrap();
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let addr = serve_bundle(&b).await;
    let run = |name: &'static str, cert: &'static str, version: &'static str| {
        let bin = bin.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let out = tokio::process::Command::new(bin)
                .args([&addr.to_string(), name])
                .arg(dir)
                .args([cert, version])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    for name in ["127.0.0.1", "localhost", "buildkitd.gitea.svc"] {
        for version in ["1.3", "1.2"] {
            assert_eq!(
                run(name, "yes", version).await,
                "ok",
                "{name} TLS {version}"
            );
        }
    }
    let refused = run("localhost", "no", "1.3").await;
    assert!(refused.starts_with("error:"), "{refused}");
    let wrong_name = run("evil.example", "yes", "1.3").await;
    assert!(wrong_name.contains("certificate"), "{wrong_name}");
}

fn which_go() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("go"))
        .find(|candidate| candidate.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}
