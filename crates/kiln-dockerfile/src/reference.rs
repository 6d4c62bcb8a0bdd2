//! Docker image reference normalisation (`busybox` → `docker.io/library/busybox:latest`).

use std::sync::OnceLock;

use regex::Regex;

use crate::error::Error;

fn re_component() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$").expect("static regex")
    })
}

fn re_tag() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Go's `\w` is ASCII; Rust's would be Unicode (and, 128 times over, a very large automaton
    // that took tens of milliseconds to compile on every start).
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("static regex"))
}

fn re_digest() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
            .expect("static regex")
    })
}

fn re_domain() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
            .expect("static regex")
    })
}

/// Normalises a reference like `reference.ParseNormalizedNamed` + `TagNameOnly`: adds the
/// `docker.io` domain, the `library/` namespace for official images and `:latest` when neither
/// tag nor digest is given.
pub fn normalize(reference: &str) -> Result<String, Error> {
    let invalid = || {
        Error::msg(format!(
            "failed to parse stage name {}: invalid reference format",
            crate::error::go_quote(reference)
        ))
    };
    if reference.is_empty() || reference.len() > 4096 {
        return Err(invalid());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        if !re_digest().is_match(d) {
            return Err(invalid());
        }
    }
    // A tag is after the last ':' that comes after the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        if !re_tag().is_match(t) {
            return Err(invalid());
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if !re_domain().is_match(&domain) {
        return Err(invalid());
    }
    let domain = if domain == "index.docker.io" {
        "docker.io".to_string()
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(Error::msg(format!(
            "failed to parse stage name {}: repository name must be lowercase",
            crate::error::go_quote(reference)
        )));
    }
    if path.split('/').any(|c| !re_component().is_match(c)) {
        return Err(invalid());
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            ("ghcr.io/o/r:v1", "ghcr.io/o/r:v1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
            (
                "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io/library/alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ];
        for (i, want) in cases {
            assert_eq!(normalize(i).unwrap(), want, "{i}");
        }
        let long_tag = format!("x:{}", "t".repeat(129));
        for bad in ["", "Busybox", "a b", "x:", "a//b", "-x", "x:tæg", &long_tag] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }
}
