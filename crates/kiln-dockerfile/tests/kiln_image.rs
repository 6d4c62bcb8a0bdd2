//! The repository's own `Dockerfile` (kiln's image) must be one kiln can build itself.

use std::collections::HashMap;

use kiln_dockerfile::{parse_named, plan, ImageConfig, LowerOptions};

fn kiln_dockerfile_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn base_config() -> ImageConfig {
    ImageConfig::from_json(
        br#"{"os":"linux","architecture":"amd64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#,
    )
    .unwrap()
}

#[test]
fn kilns_own_dockerfile_parses_and_lowers() {
    let df =
        parse_named("Dockerfile", &kiln_dockerfile_text()).expect("kiln parses its own Dockerfile");
    assert_eq!(df.stages.len(), 2, "a build stage and a runtime stage");
    assert_eq!(df.stages[0].name.as_deref(), Some("build"));
    assert!(df.stages[1].base.starts_with("debian:bookworm-slim"));

    let plan = plan(&df, &LowerOptions::default()).expect("plan");
    let configs: HashMap<String, ImageConfig> = plan
        .base_images()
        .into_iter()
        .map(|req| (req.reference, base_config()))
        .collect();
    assert!(
        configs.contains_key("docker.io/library/rust:1-bookworm"),
        "{configs:?}"
    );
    assert!(
        configs.contains_key("docker.io/library/debian:bookworm-slim"),
        "{configs:?}"
    );
    let lowered = plan.lower(&configs).expect("lower");
    assert!(!lowered.definition.def.is_empty());

    let config = &lowered.image_config.config;
    // Rootless by default: the Kubernetes manifests rely on the image's user being 1000.
    assert_eq!(config.user, "1000:1000");
    let entrypoint = config.entrypoint.clone().unwrap_or_default();
    assert_eq!(
        entrypoint.last().map(String::as_str),
        Some("kiln"),
        "{entrypoint:?}"
    );
    let cmd = config.cmd.clone().unwrap_or_default();
    assert_eq!(
        cmd.first().map(String::as_str),
        Some("buildkitd"),
        "{cmd:?}"
    );
    assert!(cmd.iter().any(|a| a == "tcp://0.0.0.0:1235"), "{cmd:?}");
    assert!(cmd.iter().any(|a| a == "--tls-from-env"), "{cmd:?}");
    assert!(
        config.env.iter().any(|e| e == "KILN_ROOT=/var/lib/kiln"),
        "{:?}",
        config.env
    );
}

#[test]
fn kilns_image_maps_subordinate_ids_for_uid_1000() {
    let text = kiln_dockerfile_text();
    for file in ["/etc/subuid", "/etc/subgid"] {
        assert!(
            text.contains(&format!("echo \"kiln:100000:65536\" > {file}")),
            "the image gives user kiln 65536 ids in {file}"
        );
    }
    assert!(text.contains("--uid 1000 --gid 1000"));
    for package in ["runc", "uidmap", "git", "ca-certificates", "nodejs"] {
        assert!(
            text.contains(&format!(" {package} ")),
            "the image installs {package}"
        );
    }
}
