//! Image references with Docker's normalization (`busybox` → `docker.io/library/busybox:latest`).
//!
//! The grammar follows distribution/reference: a domain is recognised in the first path component
//! when it contains `.` or `:`, is `localhost`, or has upper-case letters; otherwise the image lives
//! on Docker Hub and one-component names get the `library/` prefix.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry used for references without a domain.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used for references with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully normalized image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any: `docker.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub registry: String,
    /// Repository path inside the registry: `library/busybox`.
    pub repository: String,
    /// Tag, if any. `parse` sets `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Digest pin, if any.
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format {input:?}: {reason}")]
pub struct ReferenceError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Reference {
    /// Parses and normalizes `s` the way `docker pull` does.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|e| err(e.reason))?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(err("invalid tag"));
            }
        }
        if name.is_empty() {
            return Err(err("missing repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err("repository name must not be more than 255 characters"));
        }
        let (registry, repository) = split_domain(name);
        if !valid_domain(&registry) {
            return Err(err("invalid registry host"));
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(err("invalid repository name"));
        }
        if registry == DEFAULT_REGISTRY
            && repository.len() == 64 + "library/".len()
            && repository
                .strip_prefix("library/")
                .is_some_and(|r| r.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(err(
                "cannot specify 64-byte hexadecimal strings as a repository name",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn repository_ref(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The host without its port (IPv6 keeps its brackets).
    pub fn host_name(&self) -> &str {
        host_without_port(&self.registry)
    }

    /// True for 127.0.0.0/8, `localhost` and `[::1]`, with or without a port.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    /// The short form users type: `busybox:latest` for Docker Hub library images.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.repository_ref()
        };
        let mut s = name;
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

/// Strips `:port` from a registry host; `[::1]:5000` → `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, _)) => h,
        None => host,
    }
}

/// True for 127.0.0.0/8, `localhost` and `[::1]`/`::1`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    if host == "::1" {
        return true;
    }
    let h = host_without_port(host);
    h.eq_ignore_ascii_case("localhost")
        || h == "[::1]"
        || h.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

fn split_domain(name: &str) -> (String, String) {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_REGISTRY
    } else {
        domain
    };
    let rest = if domain == DEFAULT_REGISTRY && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_string()
    };
    (domain.to_string(), rest)
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D256: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// (input, expected normalized form or None for an error). Restated from
    /// distribution/reference's reference_test.go and normalize_test.go.
    fn cases() -> Vec<(String, Option<String>)> {
        let ok = |i: &str, o: &str| (i.to_string(), Some(o.to_string()));
        let bad = |i: &str| (i.to_string(), None);
        vec![
            ok("busybox", "docker.io/library/busybox:latest"),
            ok("test_com", "docker.io/library/test_com:latest"),
            ok("test.com:tag", "docker.io/library/test.com:tag"),
            ok("test.com:5000", "docker.io/library/test.com:5000"),
            ok("test.com/repo:tag", "test.com/repo:tag"),
            ok("test:5000/repo", "test:5000/repo:latest"),
            ok("test:5000/repo:tag", "test:5000/repo:tag"),
            ok(
                &format!("test:5000/repo@{D256}"),
                &format!("test:5000/repo@{D256}"),
            ),
            ok(
                &format!("test:5000/repo:tag@{D256}"),
                &format!("test:5000/repo:tag@{D256}"),
            ),
            bad(""),
            bad(":justtag"),
            bad(&format!("@{D256}")),
            bad("repo@sha256:ffffffffffffffffffffffffffffffffff"),
            bad(&format!("validname@invaliddigest:{}", "f".repeat(64))),
            bad("Uppercase:tag"),
            bad("test:5000/Uppercase/lowercase:tag"),
            ok(
                "lowercase:Uppercase",
                "docker.io/library/lowercase:Uppercase",
            ),
            bad(&format!("{}/{}", "a/".repeat(64), "a".repeat(128))),
            bad("aa/asdf$$^/aa"),
            ok(
                "sub-dom1.foo.com/bar/baz/quux",
                "sub-dom1.foo.com/bar/baz/quux:latest",
            ),
            ok(
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            ),
            ok(
                "b.gcr.io/test.example.com/my-app:test.example.com",
                "b.gcr.io/test.example.com/my-app:test.example.com",
            ),
            ok(
                "xn--n3h.com/myimage:xn--n3h.com",
                "xn--n3h.com/myimage:xn--n3h.com",
            ),
            ok("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
            ok("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"),
            ok("192.168.1.1", "docker.io/library/192.168.1.1:latest"),
            ok("192.168.1.1:5000", "docker.io/library/192.168.1.1:5000"),
            ok("192.168.1.1/repo", "192.168.1.1/repo:latest"),
            ok("192.168.1.1:5000/repo", "192.168.1.1:5000/repo:latest"),
            bad("[2001:db8::1]"),
            bad("[2001:db8::1]:5000"),
            bad("[2001:db8::1]:tag"),
            ok("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest"),
            ok(
                "[2001:db8:1:2:3:4:5:6]/repo:tag",
                "[2001:db8:1:2:3:4:5:6]/repo:tag",
            ),
            ok("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo:latest"),
            ok("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest"),
            ok("[::1]:5000/repo", "[::1]:5000/repo:latest"),
            bad("[fe80::1%eth0]:5000/repo"),
            ok(
                &format!("[2001:db8::1]:5000/repo:tag@{D256}"),
                &format!("[2001:db8::1]:5000/repo:tag@{D256}"),
            ),
            bad("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"),
            ok("docker.io/ubuntu", "docker.io/library/ubuntu:latest"),
            ok("index.docker.io/foo/bar", "docker.io/foo/bar:latest"),
            ok(
                "docker.io/library/ubuntu:22.04",
                "docker.io/library/ubuntu:22.04",
            ),
            ok("localhost/foo", "localhost/foo:latest"),
            ok("localhost:5000/foo/bar:v1", "localhost:5000/foo/bar:v1"),
            ok("Foo.com/bar", "Foo.com/bar:latest"),
            bad("example.com/FOO"),
            bad("foo/-bar"),
            bad("foo/bar-"),
            bad("foo//bar"),
            ok(
                "foo/a__b/c-----d/e.f",
                "docker.io/foo/a__b/c-----d/e.f:latest",
            ),
            bad("foo/a___b"),
            bad("foo/a..b"),
            bad(&format!("busybox:{}", "t".repeat(129))),
            bad("busybox:-tag"),
            ok(
                &format!("busybox:{}", "t".repeat(128)),
                &format!("docker.io/library/busybox:{}", "t".repeat(128)),
            ),
        ]
    }

    #[test]
    fn references_normalize_like_docker() {
        let cases = cases();
        assert!(cases.len() >= 25);
        for (input, want) in cases {
            let got = Reference::parse(&input);
            match (&got, &want) {
                (Ok(r), Some(w)) => assert_eq!(&r.to_string(), w, "input {input:?}"),
                (Err(_), None) => {}
                _ => panic!("input {input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn normalized_form_parses_to_itself() {
        for (_, want) in cases() {
            if let Some(w) = want {
                let r = Reference::parse(&w).unwrap();
                assert_eq!(r.to_string(), w);
            }
        }
    }

    #[test]
    fn digest_only_reference_has_no_tag_and_helpers_work() {
        let r = Reference::parse(&format!("host.io/x@{D256}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), D256);
        assert_eq!(r.repository_ref(), "host.io/x");
        let t = r.with_tag("v2");
        assert_eq!(t.to_string(), "host.io/x:v2");
        let d = t.with_digest(D256.parse().unwrap());
        assert_eq!(d.to_string(), format!("host.io/x:v2@{D256}"));
        assert_eq!(
            Reference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
    }

    #[test]
    fn loopback_hosts_are_recognised_with_and_without_port() {
        for (input, want) in [
            ("127.0.0.1:5000/x", true),
            ("127.1.2.3/x", true),
            ("localhost/x", true),
            ("localhost:5000/x", true),
            ("[::1]/x", true),
            ("[::1]:5000/x", true),
            ("128.0.0.1/x", false),
            ("example.com/x", false),
            ("busybox", false),
            ("[2001:db8::1]:5000/x", false),
        ] {
            assert_eq!(
                Reference::parse(input).unwrap().is_loopback(),
                want,
                "{input}"
            );
        }
        assert_eq!(host_without_port("[::1]:5000"), "[::1]");
        assert_eq!(host_without_port("a.b:1"), "a.b");
    }
}
