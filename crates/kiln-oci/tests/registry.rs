//! The registry client against a real Distribution registry (`docker-registry`), started per
//! test by `kiln_oci::testing::TestRegistry`. Tests print SKIP and pass when it is missing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_oci::layer::{Compression, LayerWriter};
use kiln_oci::media_types as mt;
use kiln_oci::testing::TestRegistry;
use kiln_oci::{
    ContentStore, CredentialSource, Digest, DockerConfigCredentials, NoCredentials, Platform,
    Reference, RegistryClient, RegistryConfig, RegistryError,
};
use serde_json::json;

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::default(), Arc::new(NoCredentials))
}

fn client_with(creds: impl CredentialSource + 'static) -> RegistryClient {
    RegistryClient::new(RegistryConfig::default(), Arc::new(creds))
}

struct Image {
    manifest: Vec<u8>,
    layer: Digest,
    config: Digest,
}

/// Builds a one-layer image for `arch` in `store` and returns its manifest bytes.
fn build_image(store: &ContentStore, arch: &str, docker: bool) -> Image {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("hello.txt"), format!("hello from {arch}\n")).unwrap();
    let mut w = LayerWriter::new(store, Compression::Gzip).unwrap();
    w.add_path("hello.txt", &src.path().join("hello.txt"))
        .unwrap();
    let layer = w.finish().unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["cat", "/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
    }))
    .unwrap();
    let config_digest = store.write_bytes(&config).unwrap();
    let (mtype, ctype, ltype) = if docker {
        (
            mt::DOCKER_MANIFEST,
            mt::DOCKER_CONFIG,
            mt::DOCKER_LAYER_GZIP,
        )
    } else {
        (mt::OCI_MANIFEST, mt::OCI_CONFIG, mt::OCI_LAYER_GZIP)
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mtype,
        "config": {"mediaType": ctype, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": ltype, "digest": layer.digest.to_string(), "size": layer.size}],
    }))
    .unwrap();
    Image {
        manifest,
        layer: layer.digest,
        config: config_digest,
    }
}

async fn push_image(
    c: &RegistryClient,
    r: &Reference,
    store: &ContentStore,
    img: &Image,
    media_type: &str,
) -> Digest {
    c.push_blob(r, &img.layer, store, None).await.unwrap();
    c.push_blob(r, &img.config, store, None).await.unwrap();
    c.push_manifest(r, &img.manifest, media_type).await.unwrap()
}

#[tokio::test]
async fn pushed_image_resolves_and_pulls_back_with_verified_blobs() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let c = client();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let img = build_image(&store, "amd64", false);
    let r = reg.reference("team/app:v1");
    let digest = push_image(&c, &r, &store, &img, mt::OCI_MANIFEST).await;
    assert_eq!(digest, Digest::sha256(&img.manifest));

    // Pushing again finds every blob already there.
    assert!(c.blob_exists(&r, &img.layer).await.unwrap());
    c.push_blob(&r, &img.layer, &store, None).await.unwrap();

    let resolved = c
        .resolve(&r, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.manifest_digest, digest);
    assert_eq!(resolved.reference.digest.as_ref(), Some(&digest));
    assert_eq!(resolved.media_type, mt::OCI_MANIFEST);
    assert_eq!(resolved.manifest_bytes, img.manifest);
    assert_eq!(resolved.config.architecture().to_string(), "amd64");
    assert_eq!(Digest::sha256(&resolved.config_bytes), img.config);

    let pulled_dir = tempfile::tempdir().unwrap();
    let pulled = ContentStore::open(pulled_dir.path()).unwrap();
    for layer in resolved.manifest.layers() {
        let d = Digest::try_from(layer.digest()).unwrap();
        c.fetch_blob(&r, &d, &pulled).await.unwrap();
        assert_eq!(pulled.read(&d).unwrap(), store.read(&d).unwrap());
    }
    // By digest, too.
    let by_digest = reg.reference(&format!("team/app@{digest}"));
    let (bytes, media_type, d) = c.get_manifest(&by_digest).await.unwrap();
    assert_eq!(
        (bytes, media_type.as_str(), d),
        (img.manifest.clone(), mt::OCI_MANIFEST, digest.clone())
    );

    if std::path::Path::new("/usr/bin/skopeo").exists() {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/team/app:v1", reg.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(Digest::sha256(&out.stdout), digest);
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/team/app:v1", reg.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Digest"], digest.to_string());
        assert_eq!(v["Architecture"], "amd64");
    } else {
        eprintln!("SKIP (part): skopeo not installed");
    }
}

#[tokio::test]
async fn big_blob_is_pushed_in_chunks_and_pulled_back() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let c = client();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    // 40 MiB of cheap pseudo-random bytes: over the 32 MiB limit, so PATCH chunks are used.
    let mut w = store.writer().unwrap();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..40 {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        w.write_all(&buf).unwrap();
    }
    let (digest, size) = w.commit(None).unwrap();
    assert!(size > kiln_oci::registry::MONOLITHIC_PUSH_LIMIT);
    let r = reg.reference("big/blob:latest");
    c.push_blob(&r, &digest, &store, None).await.unwrap();
    assert!(c.blob_exists(&r, &digest).await.unwrap());
    let pulled_dir = tempfile::tempdir().unwrap();
    let pulled = ContentStore::open(pulled_dir.path()).unwrap();
    c.fetch_blob(&r, &digest, &pulled).await.unwrap();
    assert_eq!(pulled.size(&digest).unwrap(), size);
}

#[tokio::test]
async fn cross_repo_mount_links_a_blob_without_uploading_it() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let c = client();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let digest = store.write_bytes(b"shared base layer").unwrap();
    let a = reg.reference("src/repo:latest");
    let b = reg.reference("dst/repo:latest");
    c.push_blob(&a, &digest, &store, None).await.unwrap();
    // The local store no longer has it: only a mount can succeed.
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = ContentStore::open(empty_dir.path()).unwrap();
    c.push_blob(&b, &digest, &empty, Some(&a)).await.unwrap();
    assert!(c.blob_exists(&b, &digest).await.unwrap());
}

async fn index_round_trip(docker: bool) {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let c = client();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let r = reg.reference("multi/arch:v1");
    let (mtype, itype) = if docker {
        (mt::DOCKER_MANIFEST, mt::DOCKER_MANIFEST_LIST)
    } else {
        (mt::OCI_MANIFEST, mt::OCI_INDEX)
    };
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let img = build_image(&store, arch, docker);
        let d = push_image(
            &c,
            &r.with_tag(&format!("{arch}-only")),
            &store,
            &img,
            mtype,
        )
        .await;
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        entries.push(json!({"mediaType": mtype, "digest": d.to_string(), "size": img.manifest.len(), "platform": platform}));
        digests.push(d);
    }
    // An attestation entry, as BuildKit writes, must not count as a platform.
    entries.push(json!({"mediaType": mtype, "digest": digests[0].to_string(), "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}}));
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": itype, "manifests": entries}))
            .unwrap();
    let index_digest = c.push_manifest(&r, &index, itype).await.unwrap();

    let arm = c
        .resolve(&r, &Platform::parse("linux/arm64").unwrap())
        .await
        .unwrap();
    assert_eq!(arm.manifest_digest, digests[1]);
    assert_eq!(arm.config.architecture().to_string(), "arm64");
    assert_eq!(arm.reference.digest, Some(index_digest.clone()));
    let amd = c
        .resolve(&r, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(amd.manifest_digest, digests[0]);
    assert_eq!(amd.media_type, mtype);

    let err = c
        .resolve(&r, &Platform::parse("linux/s390x").unwrap())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("linux/s390x")
            && msg.contains("linux/amd64, linux/arm64/v8")
            && msg.contains("multi/arch:v1"),
        "{msg}"
    );
}

#[tokio::test]
async fn oci_index_resolves_to_the_requested_platform() {
    index_round_trip(false).await;
}

#[tokio::test]
async fn docker_manifest_list_resolves_to_the_requested_platform() {
    index_round_trip(true).await;
}

#[tokio::test]
async fn missing_tag_is_not_found_naming_the_reference() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let r = reg.reference("nobody/here:v9");
    let err = client().resolve(&r, &Platform::host()).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("{}/nobody/here:v9: not found", reg.host())
    );
    let missing = Digest::sha256(b"never pushed");
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let err = client().fetch_blob(&r, &missing, &store).await.unwrap_err();
    assert!(err.to_string().contains(&missing.to_string()), "{err}");
    assert!(!store.has(&missing));
}

#[tokio::test]
async fn basic_auth_comes_from_a_docker_config_file() {
    let Some(reg) = TestRegistry::start_with_basic_auth("kiln", "s3cret-pass") else {
        return;
    };
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let img = build_image(&store, "amd64", false);
    let r = reg.reference("private/app:v1");

    // Anonymous: denied, and the error names the image.
    let err = client()
        .push_blob(&r, &img.layer, &store, None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{}/private/app", reg.host())) && msg.contains("access denied"),
        "{msg}"
    );

    let config_dir = tempfile::tempdir().unwrap();
    let write_config = |pass: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("kiln:{pass}"));
        let json = json!({"auths": {reg.host(): {"auth": auth}}});
        std::fs::write(config_dir.path().join("config.json"), json.to_string()).unwrap();
        DockerConfigCredentials::from_file(&config_dir.path().join("config.json")).unwrap()
    };

    let wrong = client_with(write_config("wrong"));
    let err = wrong.resolve(&r, &Platform::host()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"));

    let c = client_with(write_config("s3cret-pass"));
    let digest = push_image(&c, &r, &store, &img, mt::OCI_MANIFEST).await;
    let resolved = c
        .resolve(&r, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.manifest_digest, digest);
    let pull_err = format!(
        "{:?}",
        client().resolve(&r, &Platform::host()).await.unwrap_err()
    );
    assert!(pull_err.contains("pull"), "{pull_err}");
    assert!(!pull_err.contains("s3cret"), "{pull_err}");
}

/// A local server answering every request with `status`, counting requests. Bounded: it
/// stops after `max` connections.
fn canned_server(status: &'static str, max: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            seen.fetch_add(1, Ordering::SeqCst);
            let body = "upstream exploded";
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (host, count)
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let (host, count) = canned_server("500 Internal Server Error", 10);
    let r = Reference::parse(&format!("{host}/x/y:z")).unwrap();
    let started = Instant::now();
    let err = client().get_manifest(&r).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 3, "three attempts");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "backoff 100ms + 400ms"
    );
    match &err {
        RegistryError::Server { status, url, body } => {
            assert_eq!(*status, 500);
            assert!(
                url.contains(&host) && url.contains("/v2/x/y/manifests/z"),
                "{url}"
            );
            assert_eq!(body, "upstream exploded");
        }
        other => panic!("want Server, got {other}"),
    }
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (host, count) = canned_server("400 Bad Request", 10);
    let r = Reference::parse(&format!("{host}/x/y:z")).unwrap();
    let err = client().get_manifest(&r).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Server { status: 400, .. }),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unreachable_registry_is_a_connect_error_naming_the_host() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = Reference::parse(&format!("127.0.0.1:{port}/x/y:z")).unwrap();
    let err = client().get_manifest(&r).await.unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// A minimal token-auth registry: 401 with a Bearer challenge unless the request carries the
/// token its `/token` endpoint hands out for the right basic credentials. Returns the host and
/// the number of token requests. Bounded to `max` connections.
fn fake_token_registry(manifest: Vec<u8>, max: usize) -> (String, Arc<AtomicUsize>) {
    use base64::Engine as _;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let tokens = Arc::new(AtomicUsize::new(0));
    let issued = tokens.clone();
    let realm = format!("http://{host}/token");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("robot:pw")
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req).to_string();
            let line = req.lines().next().unwrap_or_default().to_string();
            let auth = req
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or_default()
                .to_string();
            let (status, headers, body): (&str, String, Vec<u8>) = if line
                .starts_with("GET /token?")
            {
                if auth == basic
                    && line.contains("scope=repository%3Ax%2Fy%3Apull")
                    && line.contains("service=fake")
                {
                    issued.fetch_add(1, Ordering::SeqCst);
                    (
                        "200 OK",
                        "Content-Type: application/json\r\n".into(),
                        br#"{"token":"good-token","expires_in":300}"#.to_vec(),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        String::new(),
                        b"bad credentials".to_vec(),
                    )
                }
            } else if auth == "Bearer good-token" {
                (
                    "200 OK",
                    format!("Content-Type: {}\r\n", mt::OCI_MANIFEST),
                    manifest.clone(),
                )
            } else {
                (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:x/y:pull\"\r\n"),
                    b"{}".to_vec(),
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (host, tokens)
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_credentials_and_cached() {
    let manifest = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#.to_vec();
    let (host, tokens) = fake_token_registry(manifest.clone(), 20);
    let r = Reference::parse(&format!("{host}/x/y:z")).unwrap();
    let creds = kiln_oci::StaticCredentials::default().with(
        &host,
        kiln_oci::Credentials {
            username: "robot".into(),
            password: "pw".into(),
        },
    );
    let c = client_with(creds);
    for _ in 0..3 {
        let (bytes, media_type, _) = c.get_manifest(&r).await.unwrap();
        assert_eq!(
            (bytes, media_type.as_str()),
            (manifest.clone(), mt::OCI_MANIFEST)
        );
    }
    assert_eq!(
        tokens.load(Ordering::SeqCst),
        1,
        "one token for three requests"
    );

    let wrong = client_with(kiln_oci::StaticCredentials::default().with(
        &host,
        kiln_oci::Credentials {
            username: "robot".into(),
            password: "nope".into(),
        },
    ));
    let err = wrong.get_manifest(&r).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("pull access denied for {host}/x/y: authorization failed")
    );
    let anon = client().get_manifest(&r).await.unwrap_err();
    assert!(
        anon.to_string().contains("no credentials configured"),
        "{anon}"
    );
}
