//! The cache server driven over real HTTP the way `@actions/cache` v3 (toolkit cache protocol
//! v1) drives it: `ACTIONS_CACHE_URL` + `_apis/artifactcache/...`, bearer token, JSON bodies,
//! chunked `PATCH` uploads with `Content-Range`, unauthenticated archive downloads.

use std::path::Path;

use kiln_runner::cache::{CacheConfig, CacheServer, CacheStats};
use reqwest::{header, Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "job-token-1";
const REPO: &str = "owner/repo";
const VERSION: &str = "c0ffee";

async fn start(dir: &Path, max_size: u64) -> CacheServer {
    let server = CacheServer::start(CacheConfig {
        dir: dir.to_owned(),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise_host: None,
        max_size,
    })
    .await
    .expect("cache server starts");
    server.register_job(TOKEN, REPO);
    server
}

/// A client that talks like the toolkit's `cacheHttpClient.ts`.
struct Toolkit {
    http: Client,
    base: String,
    token: Option<String>,
}

impl Toolkit {
    fn new(server: &CacheServer, token: Option<&str>) -> Toolkit {
        Toolkit {
            http: Client::new(),
            base: server.url(),
            token: token.map(str::to_owned),
        }
    }

    fn request(&self, method: Method, resource: &str) -> RequestBuilder {
        let url = format!("{}_apis/artifactcache/{resource}", self.base);
        let request = self
            .http
            .request(method, url)
            .header(header::ACCEPT, "application/json;api-version=6.0-preview.1");
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn lookup(&self, keys: &[&str], version: &str) -> Response {
        let keys = keys.join(",");
        self.request(Method::GET, "cache")
            .query(&[("keys", keys.as_str()), ("version", version)])
            .send()
            .await
            .unwrap()
    }

    async fn reserve(&self, key: &str, version: &str, size: u64) -> Response {
        self.request(Method::POST, "caches")
            .json(&json!({ "key": key, "version": version, "cacheSize": size }))
            .send()
            .await
            .unwrap()
    }

    async fn reserve_id(&self, key: &str, version: &str, size: u64) -> u64 {
        let response = self.reserve(key, version, size).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["cacheId"].as_u64().expect("cacheId is a number")
    }

    async fn upload_chunk(&self, id: u64, start: usize, data: &[u8]) -> Response {
        let end = start + data.len() - 1;
        self.request(Method::PATCH, &format!("caches/{id}"))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/*"))
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn commit(&self, id: u64, size: u64) -> Response {
        self.request(Method::POST, &format!("caches/{id}"))
            .json(&json!({ "size": size }))
            .send()
            .await
            .unwrap()
    }

    /// Reserve, upload in one chunk, commit: a whole save.
    async fn save(&self, key: &str, data: &[u8]) {
        let id = self.reserve_id(key, VERSION, data.len() as u64).await;
        let response = self.upload_chunk(id, 0, data).await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = self.commit(id, data.len() as u64).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Looks up and expects a hit; returns (cacheKey, archiveLocation).
    async fn hit(&self, keys: &[&str]) -> (String, String) {
        let response = self.lookup(keys, VERSION).await;
        assert_eq!(response.status(), StatusCode::OK, "lookup {keys:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["result"], "hit");
        (
            body["cacheKey"].as_str().unwrap().to_owned(),
            body["archiveLocation"].as_str().unwrap().to_owned(),
        )
    }

    async fn expect_miss(&self, keys: &[&str]) {
        let response = self.lookup(keys, VERSION).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "lookup {keys:?}");
        assert_eq!(response.bytes().await.unwrap().len(), 0);
    }

    /// Downloads like `downloadCacheHttpClient`: no Authorization header.
    async fn download(&self, location: &str) -> Vec<u8> {
        let response = self.http.get(location).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap().to_vec()
    }
}

fn archive(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn error_of(response: Response) -> String {
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/json; charset=utf-8"
    );
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().expect("error text").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_in_parallel_chunks_then_restore_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    assert!(server.url().starts_with("http://127.0.0.1:"));
    assert!(server.url().ends_with('/'));
    let toolkit = Toolkit::new(&server, Some(TOKEN));

    toolkit.expect_miss(&["npm-linux-abc", "npm-linux-"]).await;

    let data = archive(2500, 7);
    let id = toolkit.reserve_id("npm-linux-abc", VERSION, 2500).await;
    // Three chunks, sent at once, the last first.
    let (third, first, second) = tokio::join!(
        toolkit.upload_chunk(id, 2000, &data[2000..]),
        toolkit.upload_chunk(id, 0, &data[..1000]),
        toolkit.upload_chunk(id, 1000, &data[1000..2000]),
    );
    for response in [third, first, second] {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    }
    let response = toolkit.commit(id, 2500).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        server.stats(),
        CacheStats {
            entries: 1,
            bytes: 2500
        }
    );

    let response = toolkit.lookup(&["npm-linux-abc"], VERSION).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/json; charset=utf-8"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"], "hit");
    assert_eq!(body["cacheKey"], "npm-linux-abc");
    let location = body["archiveLocation"].as_str().unwrap();
    let prefix = format!("{}_apis/artifactcache/artifacts/{id}?sig=", server.url());
    assert!(location.starts_with(&prefix), "{location}");
    assert_eq!(toolkit.download(location).await, data);

    // The concurrent downloader asks for the length with HEAD, then fetches ranges.
    let response = toolkit.http.head(location).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_LENGTH], "2500");
    assert_eq!(response.headers()[header::ACCEPT_RANGES], "bytes");
    // Range download, as the concurrent downloader does it.
    let response = toolkit
        .http
        .get(location)
        .header(header::RANGE, "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()[header::CONTENT_RANGE],
        "bytes 1000-1999/2500"
    );
    assert_eq!(response.headers()[header::CONTENT_LENGTH], "1000");
    assert_eq!(response.bytes().await.unwrap().as_ref(), &data[1000..2000]);

    let response = toolkit
        .http
        .get(location)
        .header(header::RANGE, "bytes=2500-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */2500");

    // Another version of the same key is a different cache.
    let response = toolkit.lookup(&["npm-linux-abc"], "other-version").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    server.shutdown().await;
}

#[tokio::test]
async fn restore_keys_match_by_prefix_newest_first_and_first_key_wins() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));
    toolkit.save("deps-linux-1", b"one").await;
    toolkit.save("deps-linux-2", b"two").await;
    toolkit.save("deps-mac-1", b"mac").await;
    toolkit.save("deps-linux", b"exact").await;

    let (key, _) = toolkit.hit(&["deps-linux-9", "deps-linux-"]).await;
    assert_eq!(key, "deps-linux-2");
    let (key, _) = toolkit.hit(&["deps-mac", "deps-linux-"]).await;
    assert_eq!(key, "deps-mac-1");
    // An exact key beats a newer entry that merely starts with it.
    toolkit.save("deps-linux-3", b"three").await;
    let (key, location) = toolkit.hit(&["deps-linux"]).await;
    assert_eq!(key, "deps-linux");
    assert_eq!(toolkit.download(&location).await, b"exact");
    toolkit.expect_miss(&["deps-win", "deps-mac-2"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_missing_or_revoked_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    Toolkit::new(&server, Some(TOKEN)).save("k", b"data").await;

    for toolkit in [
        Toolkit::new(&server, None),
        Toolkit::new(&server, Some("not-a-job")),
    ] {
        let response = toolkit.lookup(&["k"], VERSION).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_of(response).await, "missing or unknown bearer token");
        let response = toolkit.reserve("new", VERSION, 4).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = toolkit.upload_chunk(1, 0, b"data").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = toolkit.commit(1, 4).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = toolkit.request(Method::POST, "clean").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    // The token must come as a bearer token; the scheme's case doesn't matter (RFC 9110).
    let anonymous = Toolkit::new(&server, None);
    for (authorization, status) in [
        (format!("Basic {TOKEN}"), StatusCode::UNAUTHORIZED),
        (TOKEN.to_owned(), StatusCode::UNAUTHORIZED),
        (format!("bearer {TOKEN}"), StatusCode::OK),
    ] {
        let response = anonymous
            .request(Method::GET, "cache")
            .query(&[("keys", "k"), ("version", VERSION)])
            .header(header::AUTHORIZATION, &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{authorization}");
    }

    server.register_job("short-lived", REPO);
    let toolkit = Toolkit::new(&server, Some("short-lived"));
    toolkit.hit(&["k"]).await;
    server.revoke_job("short-lived");
    let response = toolkit.lookup(&["k"], VERSION).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.shutdown().await;
}

#[tokio::test]
async fn repositories_never_see_each_others_entries() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    server.register_job("other-token", "other/repo");
    let ours = Toolkit::new(&server, Some(TOKEN));
    let theirs = Toolkit::new(&server, Some("other-token"));

    ours.save("shared-key", b"ours").await;
    theirs.expect_miss(&["shared-key", "shared"]).await;

    // Their reservation of the same key is theirs alone.
    let id = theirs.reserve_id("shared-key", VERSION, 6).await;
    let response = ours.upload_chunk(id, 0, b"sneaky").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(response).await,
        format!("cache {id}: not reserved")
    );
    let response = ours.commit(id, 6).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        theirs.upload_chunk(id, 0, b"theirs").await.status(),
        StatusCode::OK
    );
    assert_eq!(theirs.commit(id, 6).await.status(), StatusCode::OK);

    let (_, our_location) = ours.hit(&["shared-key"]).await;
    let (_, their_location) = theirs.hit(&["shared-key"]).await;
    assert_ne!(our_location, their_location);
    assert_eq!(ours.download(&our_location).await, b"ours");
    assert_eq!(theirs.download(&their_location).await, b"theirs");

    // The archive URL can't be guessed from the id.
    let bare = our_location.split('?').next().unwrap();
    for url in [
        bare.to_owned(),
        format!("{bare}?sig=00000000000000000000000000000000"),
    ] {
        let response = ours.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{url}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn reserving_an_existing_key_and_version_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));
    toolkit.save("k", b"data").await;

    let response = toolkit.reserve("k", VERSION, 4).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(response).await,
        format!("cache \"k\" version \"{VERSION}\": already exists")
    );
    // While another job uploads it too.
    toolkit.reserve_id("pending", VERSION, 4).await;
    let response = toolkit.reserve("pending", VERSION, 4).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Another version is a different entry.
    toolkit.reserve_id("k", "v2", 4).await;
    server.shutdown().await;
}

#[tokio::test]
async fn commit_with_the_wrong_size_fails_and_leaves_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));

    let id = toolkit.reserve_id("k", VERSION, 10).await;
    assert_eq!(
        toolkit.upload_chunk(id, 0, b"0123456789").await.status(),
        StatusCode::OK
    );
    let response = toolkit.commit(id, 12).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(response).await,
        format!("cache {id}: committed size 12 but 10 bytes were uploaded")
    );
    toolkit.expect_miss(&["k"]).await;
    assert_eq!(server.stats(), CacheStats::default());
    // The reservation is gone with it.
    let response = toolkit.upload_chunk(id, 0, b"0123456789").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!dir.path().join("uploads").join(id.to_string()).exists());
    assert!(!dir.path().join("blobs").join(id.to_string()).exists());

    // A gap in the chunks fails the same way.
    let id = toolkit.reserve_id("gappy", VERSION, 10).await;
    assert_eq!(
        toolkit.upload_chunk(id, 0, b"0123").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        toolkit.upload_chunk(id, 6, b"6789").await.status(),
        StatusCode::OK
    );
    let response = toolkit.commit(id, 10).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(response).await,
        format!("cache {id}: bytes 4-5 were never uploaded")
    );
    toolkit.expect_miss(&["gappy"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_least_recently_used_entry_is_evicted_above_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 250).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));
    toolkit.save("a", &archive(100, 1)).await;
    toolkit.save("b", &archive(100, 2)).await;
    // `a` is older but used since: `b` is now the least recently used.
    toolkit.hit(&["a"]).await;
    toolkit.save("c", &archive(100, 3)).await;

    assert_eq!(
        server.stats(),
        CacheStats {
            entries: 2,
            bytes: 200
        }
    );
    toolkit.expect_miss(&["b"]).await;
    let (_, location) = toolkit.hit(&["a"]).await;
    assert_eq!(toolkit.download(&location).await, archive(100, 1));
    toolkit.hit(&["c"]).await;
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(blobs.len(), 2, "{blobs:?}");

    // A reservation larger than the whole cache is refused up front.
    let response = toolkit.reserve("huge", VERSION, 251).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(response).await,
        "cache \"huge\": size 251 exceeds the cache's limit of 250 bytes"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn entries_survive_a_restart_and_orphans_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let data = archive(3000, 9);
    let server = start(dir.path(), 1 << 30).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));
    toolkit.save("persistent", &data).await;
    toolkit.save("lost", b"blob goes missing").await;
    // An upload cut by the restart.
    let cut = toolkit.reserve_id("cut", VERSION, 10).await;
    assert_eq!(
        toolkit.upload_chunk(cut, 0, b"01234").await.status(),
        StatusCode::OK
    );
    server.shutdown().await;

    // Leftovers of a crash: a half-written index and a blob no entry owns.
    std::fs::write(dir.path().join("index.json.tmp"), b"{ truncated").unwrap();
    std::fs::write(dir.path().join("blobs").join("999"), b"orphan").unwrap();
    // And an entry whose blob is gone (say, removed by hand).
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let lost = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "lost")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    std::fs::remove_file(dir.path().join("blobs").join(lost.to_string())).unwrap();

    let server = start(dir.path(), 1 << 30).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));
    assert_eq!(
        server.stats(),
        CacheStats {
            entries: 1,
            bytes: 3000
        }
    );
    let (key, location) = toolkit.hit(&["persistent"]).await;
    assert_eq!(key, "persistent");
    assert_eq!(toolkit.download(&location).await, data);
    toolkit.expect_miss(&["cut"]).await;
    toolkit.expect_miss(&["lost"]).await;
    assert!(!dir.path().join("blobs").join("999").exists());
    assert!(!dir.path().join("uploads").join(cut.to_string()).exists());
    // The cut reservation is gone and its id is not handed out again.
    let response = toolkit.upload_chunk(cut, 5, b"56789").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let next = toolkit.reserve_id("cut", VERSION, 10).await;
    assert!(next > cut, "{next} > {cut}");
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_chunks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));
    let id = toolkit.reserve_id("k", VERSION, 10).await;

    for content_range in [
        "bytes 0-4",
        "bytes 4-0/*",
        "0-4/*",
        "bytes a-4/*",
        "bytes -4/*",
    ] {
        let response = toolkit
            .request(Method::PATCH, &format!("caches/{id}"))
            .header(header::CONTENT_RANGE, content_range)
            .body(b"01234".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{content_range}"
        );
        let error = error_of(response).await;
        assert!(error.contains("Content-Range"), "{content_range}: {error}");
    }
    let response = toolkit
        .request(Method::PATCH, &format!("caches/{id}"))
        .body(b"01234".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(response).await, "missing Content-Range");

    // Body and range disagree.
    let response = toolkit
        .request(Method::PATCH, &format!("caches/{id}"))
        .header(header::CONTENT_RANGE, "bytes 0-4/*")
        .body(b"012".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Beyond the reserved size.
    let response = toolkit.upload_chunk(id, 8, b"89A").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(response).await,
        format!("cache {id}: bytes 8-10 lie beyond the reserved size 10")
    );
    // Too large a chunk is refused before its body is read.
    let response = toolkit
        .request(Method::PATCH, &format!("caches/{id}"))
        .header(header::CONTENT_RANGE, format!("bytes 0-{}/*", 64 << 20))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Unreserved and non-numeric ids.
    let response = toolkit.upload_chunk(4242, 0, b"x").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(response).await, "cache 4242: not reserved");
    let response = toolkit.upload_chunk(0, 0, b"x").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = toolkit
        .request(Method::POST, "caches/abc")
        .json(&json!({ "size": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // After all that the upload still works.
    assert_eq!(
        toolkit.upload_chunk(id, 0, b"0123456789").await.status(),
        StatusCode::OK
    );
    assert_eq!(toolkit.commit(id, 10).await.status(), StatusCode::OK);
    let (_, location) = toolkit.hit(&["k"]).await;
    assert_eq!(toolkit.download(&location).await, b"0123456789");
    server.shutdown().await;
}

#[tokio::test]
async fn clean_is_accepted_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    let toolkit = Toolkit::new(&server, Some(TOKEN));
    toolkit.save("k", b"data").await;
    let response = toolkit.request(Method::POST, "clean").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    toolkit.hit(&["k"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_dropped_server_stops_listening() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1 << 30).await;
    let url = server.url();
    drop(server);
    let client = Client::new();
    let mut refused = false;
    for _ in 0..50 {
        if client.get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "{url} still answers after drop");
}
