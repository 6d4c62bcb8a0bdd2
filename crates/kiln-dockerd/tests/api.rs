//! The Docker API spoken directly over the unix socket, without the docker CLI: system calls,
//! error shapes, hostile build contexts, and a build → inspect → tag → push → rmi round trip.

mod common;

use base64::Engine as _;
use common::{raw_tar, setup};

#[test]
fn system_calls_and_errors_have_docker_shapes() {
    let Some(env) = setup("system_calls_and_errors_have_docker_shapes") else {
        return;
    };
    let ping = env.http("GET", "/_ping", &[], b"");
    assert_eq!(ping.status, 200);
    assert_eq!(ping.text(), "OK");
    assert_eq!(ping.header("api-version"), Some(kiln_dockerd::API_VERSION));
    assert_eq!(ping.header("builder-version"), Some("1"));
    assert_eq!(ping.header("ostype"), Some("linux"));
    assert_eq!(env.http("HEAD", "/_ping", &[], b"").status, 200);

    let v = env.http("GET", "/v1.41/version", &[], b"").json();
    assert_eq!(v["ApiVersion"], kiln_dockerd::API_VERSION);
    assert_eq!(v["MinAPIVersion"], "1.24");
    assert!(v["Version"].as_str().unwrap().starts_with("kiln-"));
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Components"][0]["Name"], "Engine");
    let info = env.http("GET", "/info", &[], b"");
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["Images"], 0);

    let run = env.http("POST", "/v1.43/containers/create", &[], b"{}");
    assert_eq!(run.status, 501);
    assert_eq!(run.json()["message"], CONTAINERS_REFUSED);
    assert_eq!(env.http("GET", "/volumes", &[], b"").status, 501);

    let unknown = env.http("GET", "/v1.43/swirl", &[], b"");
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["message"]
        .as_str()
        .unwrap()
        .contains("/swirl"));

    let missing = env.http("GET", "/images/nothing:here/json", &[], b"");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "No such image: nothing:here");
    assert_eq!(env.http("DELETE", "/images/nothing", &[], b"").status, 404);

    let bk = env.http("POST", "/build?version=2&session=abc", &[], b"");
    assert_eq!(bk.status, 501);
    assert!(bk.json()["message"]
        .as_str()
        .unwrap()
        .contains("DOCKER_BUILDKIT=0"));
}

#[test]
fn hostile_build_contexts_are_refused_by_name() {
    let Some(env) = setup("hostile_build_contexts_are_refused_by_name") else {
        return;
    };
    let ctype = [("Content-Type", "application/x-tar")];
    let tar = raw_tar(&[("Dockerfile", "FROM scratch\n"), ("../escape.txt", "x")]);
    let r = env.http("POST", "/v1.43/build?t=evil", &ctype, &tar);
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("\"../escape.txt\""), "{msg}");
    assert!(msg.contains("leaves the archive"), "{msg}");
    assert!(!env.dir.path().join("images/escape.txt").exists());

    let tar = raw_tar(&[("Dockerfile", "FROM scratch\n")]);
    let r = env.http("POST", "/build?dockerfile=..%2FDockerfile", &ctype, &tar);
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("outside the build context"));
    let r = env.http("POST", "/build?dockerfile=Missing", &ctype, &tar);
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("Missing"));

    // The server keeps serving after refusals.
    assert_eq!(env.http("GET", "/_ping", &[], b"").status, 200);
}

#[test]
fn api_builds_tags_pushes_and_removes_an_image() {
    let Some(env) = setup("api_builds_tags_pushes_and_removes_an_image") else {
        return;
    };
    env.push_busybox(&env.base, None);
    let name = env.image("api/app:1");
    let dockerfile = format!(
        "FROM {}\nRUN echo built > /built.txt\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n",
        env.base
    );
    let tar = raw_tar(&[("Dockerfile", &dockerfile), ("hello.txt", "hello\n")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let path = format!(
        "/v1.43/build?t={}&labels=%7B%22team%22%3A%22ci%22%7D",
        name.replace(':', "%3A").replace('/', "%2F")
    );
    let r = env.http("POST", &path, &[("Content-Type", "application/x-tar")], &gz);
    assert_eq!(r.status, 200, "{}", r.text());
    let messages = r.messages();
    let text = r.text();
    assert!(
        messages.iter().all(|m| m.get("error").is_none()),
        "build failed: {text}"
    );
    assert!(text.contains("Step 1/3 : FROM"), "{text}");
    let id = messages
        .iter()
        .find_map(|m| m["aux"]["ID"].as_str())
        .expect("aux ID")
        .to_string();
    assert!(
        text.contains(&format!("Successfully built {}", &id[7..19])),
        "{text}"
    );
    assert!(
        text.contains(&format!("Successfully tagged {name}")),
        "{text}"
    );

    let inspect = env
        .http("GET", &format!("/images/{name}/json"), &[], b"")
        .json();
    assert_eq!(inspect["Id"], id);
    assert_eq!(inspect["RepoTags"][0], name);
    assert_eq!(inspect["Config"]["Cmd"][1], "/hello.txt");
    assert_eq!(inspect["Config"]["Labels"]["team"], "ci");
    assert_eq!(inspect["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    // By short ID too.
    assert_eq!(
        env.http("GET", &format!("/images/{}/json", &id[7..19]), &[], b"")
            .json()["Id"],
        id
    );

    let r = env.http(
        "POST",
        &format!("/images/{name}/tag?repo={}&tag=2", env.image("api/app")),
        &[],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let list = env.http("GET", "/images/json", &[], b"").json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["RepoTags"].as_array().unwrap().len(), 2);

    let auth = base64::engine::general_purpose::URL_SAFE.encode("{}");
    // Pruning the whole build cache keeps what the image store refers to.
    env.api
        .engine()
        .prune(&kiln_engine::prune::PruneOptions {
            all: true,
            keep_storage: None,
        })
        .unwrap();
    let r = env.http(
        "POST",
        &format!("/images/{}/push?tag=2", env.image("api/app")),
        &[("X-Registry-Auth", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(!text.contains("errorDetail"), "{text}");
    let aux = r
        .messages()
        .into_iter()
        .find(|m| m["aux"]["Digest"].is_string())
        .expect("push aux");
    let (manifest, _) = env.registry_manifest(&env.image("api/app:2"));
    assert_eq!(aux["aux"]["Size"], manifest.len());
    assert_eq!(
        aux["aux"]["Digest"],
        kiln_oci::Digest::sha256(&manifest).to_string()
    );
    assert!(text.contains(&format!(
        "2: digest: {}",
        aux["aux"]["Digest"].as_str().unwrap()
    )));

    // Deleting by ID with two names needs force; by name it untags.
    let r = env.http("DELETE", &format!("/images/{id}"), &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());
    let r = env
        .http("DELETE", &format!("/images/{name}"), &[], b"")
        .json();
    assert_eq!(r, serde_json::json!([{"Untagged": name}]));
    let r = env
        .http(
            "DELETE",
            &format!("/images/{}", env.image("api/app:2")),
            &[],
            b"",
        )
        .json();
    assert_eq!(r[1]["Deleted"], id);
    assert_eq!(
        env.http("GET", "/images/json", &[], b"").json(),
        serde_json::json!([])
    );
}

const CONTAINERS_REFUSED: &str =
    "kiln: containers are not supported by this Docker API; only build, image and login calls are \
     (a runner can forward container calls to a real daemon: kiln.buildkit.docker_forward)";
