//! Frontend attributes (`--opt` of buildctl, buildx flags) → a Dockerfile build request.

use kiln_dockerfile::LowerOptions;
use kiln_engine::frontend::DockerfileRequest;
use std::collections::HashMap;

pub use kiln_engine::frontend::is_dockerfile_frontend_image;

/// Build the Dockerfile request, or an error message for what we can't do.
pub fn dockerfile_request(
    attrs: &HashMap<String, String>,
    session_id: &str,
) -> Result<DockerfileRequest, String> {
    if let Some(id) = attrs.get("requestid") {
        return Err(format!("unsupported request {id}"));
    }
    if let Some(syntax) = attrs.get("build-arg:BUILDKIT_SYNTAX") {
        if !is_dockerfile_frontend_image(syntax.split_whitespace().next().unwrap_or("")) {
            return Err(format!(
                "custom frontends are not supported: BUILDKIT_SYNTAX={syntax} (kiln has the \
                 Dockerfile frontend built in)"
            ));
        }
    }
    if let Some(ctx) = attrs.get("context") {
        return Err(format!(
            "remote build contexts ({ctx}) are not supported by this version of kiln"
        ));
    }
    let mut opts = LowerOptions {
        target: attrs.get("target").filter(|t| !t.is_empty()).cloned(),
        no_cache: attrs.contains_key("no-cache"),
        session_id: (!session_id.is_empty()).then(|| session_id.to_string()),
        ..LowerOptions::default()
    };
    for (k, v) in attrs {
        if let Some(name) = k.strip_prefix("build-arg:") {
            opts.build_args.insert(name.to_string(), v.clone());
        } else if let Some(name) = k.strip_prefix("label:") {
            opts.labels.insert(name.to_string(), v.clone());
        } else if let Some(name) = k.strip_prefix("context:") {
            let named = kiln_dockerfile::NamedContext::parse(name, v).map_err(|e| e.message)?;
            opts.named_contexts.insert(name.to_string(), named);
        }
    }
    if let Some(epoch) = attrs.get("build-arg:SOURCE_DATE_EPOCH") {
        opts.source_date_epoch = epoch.parse().ok();
    }
    let host = kiln_oci::Platform::host();
    opts.build_platform = kiln_dockerfile::Platform::parse(&host.to_string())
        .map_err(|e| format!("host platform: {e}"))?;
    let (platforms, multi) = target_platforms(attrs, &opts.build_platform)?;
    opts.target_platform = platforms[0].clone();
    opts.multi_platform = multi;
    let mut req = DockerfileRequest {
        options: opts,
        ..DockerfileRequest::default()
    };
    if let Some(f) = attrs.get("filename").filter(|f| !f.is_empty()) {
        req.filename = f.clone();
    }
    if let Some(k) = attrs.get("dockerfilekey").filter(|k| !k.is_empty()) {
        req.dockerfile_local = k.clone();
    }
    if let Some(k) = attrs.get("contextkey").filter(|k| !k.is_empty()) {
        req.context_local = k.clone();
    }
    req.options.context_name = req.context_local.clone();
    Ok(req)
}

/// The platforms to build for (`platform=linux/amd64,linux/arm64`; the build platform when
/// unset), and whether the result is multi-platform: several platforms, or `multi-platform`
/// set, as BuildKit's Dockerfile frontend decides.
pub fn target_platforms(
    attrs: &HashMap<String, String>,
    build_platform: &kiln_dockerfile::Platform,
) -> Result<(Vec<kiln_dockerfile::Platform>, bool), String> {
    let mut platforms =
        kiln_dockerfile::Platform::parse_list(attrs.get("platform").map(String::as_str))
            .map_err(|(p, e)| format!("platform {p}: {e}"))?;
    if platforms.is_empty() {
        platforms.push(build_platform.clone());
    }
    let requested = attrs
        .get("multi-platform")
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1");
    let multi = platforms.len() > 1 || requested;
    Ok((platforms, multi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn buildctl_opts_map_to_the_request() {
        let r = dockerfile_request(
            &attrs(&[
                ("filename", "build/Dockerfile.ci"),
                ("target", "release"),
                ("build-arg:VERSION", "1.2"),
                ("label:team", "platform"),
                ("no-cache", ""),
            ]),
            "sess",
        )
        .unwrap();
        assert_eq!(r.filename, "build/Dockerfile.ci");
        assert_eq!(r.options.target.as_deref(), Some("release"));
        assert_eq!(r.options.build_args["VERSION"], "1.2");
        assert_eq!(r.options.labels["team"], "platform");
        assert!(r.options.no_cache);
        assert_eq!(r.dockerfile_local, "dockerfile");
        assert_eq!(r.context_local, "context");
    }

    #[test]
    fn several_platforms_make_a_multi_platform_build() {
        let host = kiln_dockerfile::Platform::parse("linux/amd64").unwrap();
        let (ps, multi) = target_platforms(
            &attrs(&[("platform", "linux/amd64, linux/arm64,linux/amd64")]),
            &host,
        )
        .unwrap();
        let names: Vec<String> = ps.iter().map(|p| p.format()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64"]);
        assert!(multi);
        let (ps, multi) = target_platforms(&attrs(&[]), &host).unwrap();
        assert_eq!(ps, std::slice::from_ref(&host));
        assert!(!multi);
        let (_, multi) = target_platforms(&attrs(&[("multi-platform", "true")]), &host).unwrap();
        assert!(multi);
        let r = dockerfile_request(&attrs(&[("platform", "linux/arm64,linux/amd64")]), "").unwrap();
        assert_eq!(r.options.target_platform.format(), "linux/arm64");
        assert!(r.options.multi_platform);
    }

    #[test]
    fn unsupported_requests_say_so() {
        for (k, v, want) in [
            (
                "requestid",
                "frontend.outline",
                "unsupported request frontend.outline",
            ),
            (
                "build-arg:BUILDKIT_SYNTAX",
                "example/frontend:1",
                "custom frontends",
            ),
            ("context:base", "oci-layout:///x", "named context base="),
            ("platform", "linux/amd64,linux/", "platform linux/"),
        ] {
            let err = dockerfile_request(&attrs(&[(k, v)]), "").unwrap_err();
            assert!(err.contains(want), "{k}: {err}");
        }
        let named = dockerfile_request(&attrs(&[("context:base", "local:base")]), "").unwrap();
        assert_eq!(
            named.options.named_contexts["base"],
            kiln_dockerfile::NamedContext::Local("base".into())
        );
        assert!(dockerfile_request(
            &attrs(&[("build-arg:BUILDKIT_SYNTAX", "docker/dockerfile:1.7")]),
            ""
        )
        .is_ok());
    }
}
