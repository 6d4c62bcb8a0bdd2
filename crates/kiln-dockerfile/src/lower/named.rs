//! Named build contexts (`docker buildx build --build-context NAME=VALUE`, the frontend attribute
//! `context:NAME`), as BuildKit's Dockerfile frontend reads them (`dockerui/namedcontext.go`).
//!
//! A name is looked up where a Dockerfile names an image or a stage:
//! - a stage `FROM … AS NAME` is replaced by the context (its instructions are not run);
//! - a base image `FROM NAME` becomes the context;
//! - `COPY --from=NAME` and `RUN --mount=from=NAME` read it.
//!
//! Names are compared in Docker's short form: `FROM docker.io/library/alpine:latest`,
//! `FROM alpine:latest` and `FROM alpine` all look up `context:alpine`. A name with the target
//! platform (`context:alpine::linux/amd64`) wins over the plain one.

use super::copy::{git_source, is_git};
use crate::error::Error;
use crate::platform::Platform;

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`: that image, its config included (the reference normalised).
    Image(String),
    /// `docker-image://scratch`: an empty filesystem.
    Scratch,
    /// `local:NAME`: a directory the client serves under `NAME`.
    Local(String),
    /// A git repository (`git://…`, `git@…`, `https://….git`, with `#ref:subdir`).
    Git(String),
    /// `https://…`: one downloaded file.
    Http(String),
}

impl NamedContext {
    /// Parses an attribute value; the error names the context.
    pub fn parse(name: &str, value: &str) -> Result<NamedContext, Error> {
        let invalid = |why: &str| Error::msg(format!("named context {name}={value}: {why}"));
        if value.starts_with("git@") || is_git(value) {
            return Ok(NamedContext::Git(value.to_string()));
        }
        let Some((scheme, rest)) = value.split_once(':') else {
            return Err(invalid("invalid context specifier (expected TYPE:VALUE)"));
        };
        match scheme {
            "docker-image" => {
                let reference = rest.trim_start_matches("//");
                if reference == "scratch" {
                    return Ok(NamedContext::Scratch);
                }
                let normalized =
                    crate::reference::normalize(reference).map_err(|e| invalid(&e.message))?;
                Ok(NamedContext::Image(normalized))
            }
            "local" if !rest.is_empty() => Ok(NamedContext::Local(rest.to_string())),
            "http" | "https" => Ok(NamedContext::Http(value.to_string())),
            "oci-layout" | "input" => Err(invalid(&format!(
                "{scheme} contexts are not supported by kiln (use docker-image://, local:, \
                 a git URL or an https:// URL)"
            ))),
            _ => Err(invalid(&format!("unsupported context source {scheme}"))),
        }
    }

    /// The git source op (identifier and attributes) of a [`NamedContext::Git`].
    pub(crate) fn git_source(url: &str) -> (String, std::collections::BTreeMap<String, String>) {
        let url = if url.starts_with("git@") || url.contains("://") {
            url.to_string()
        } else {
            format!("git://{url}")
        };
        git_source(&url, false)
    }
}

/// Docker's short form of a reference: `docker.io/library/alpine:latest` → `alpine`.
fn familiar(name: &str) -> String {
    let Ok(full) = crate::reference::normalize(name) else {
        return name.to_string();
    };
    let short = match full.strip_prefix("docker.io/") {
        Some(rest) => match rest.strip_prefix("library/") {
            Some(official) if !official.contains('/') => official,
            _ => rest,
        },
        None => full.as_str(),
    };
    short.strip_suffix(":latest").unwrap_or(short).to_string()
}

/// The named context for an image or stage name, if the request has one.
pub(crate) fn lookup<'a>(
    contexts: &'a std::collections::BTreeMap<String, NamedContext>,
    name: &str,
    platform: &Platform,
) -> Option<&'a NamedContext> {
    if contexts.is_empty() || name.eq_ignore_ascii_case("scratch") || name == "context" {
        return None;
    }
    let short = familiar(name);
    contexts
        .get(&format!("{short}::{}", platform.format()))
        .or_else(|| contexts.get(&short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_buildkit() {
        let p = |v| NamedContext::parse("n", v);
        assert_eq!(
            p("docker-image://alpine").unwrap(),
            NamedContext::Image("docker.io/library/alpine:latest".into())
        );
        assert_eq!(p("docker-image://scratch").unwrap(), NamedContext::Scratch);
        assert_eq!(p("local:deps").unwrap(), NamedContext::Local("deps".into()));
        assert_eq!(
            p("https://example.com/x.git#main").unwrap(),
            NamedContext::Git("https://example.com/x.git#main".into())
        );
        assert_eq!(
            p("https://example.com/a.tar").unwrap(),
            NamedContext::Http("https://example.com/a.tar".into())
        );
        let err = p("oci-layout:///tmp/x").unwrap_err().message;
        assert!(
            err.contains("n=oci-layout:///tmp/x") && err.contains("not supported"),
            "{err}"
        );
        assert!(p("nonsense").is_err());
    }

    #[test]
    fn names_are_compared_in_short_form() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("alpine".to_string(), NamedContext::Scratch);
        m.insert(
            "reg:5000/app:1".to_string(),
            NamedContext::Local("app".into()),
        );
        let linux = Platform::parse("linux/amd64").unwrap();
        for name in ["alpine", "alpine:latest", "docker.io/library/alpine:latest"] {
            assert_eq!(
                lookup(&m, name, &linux),
                Some(&NamedContext::Scratch),
                "{name}"
            );
        }
        assert_eq!(lookup(&m, "alpine:3", &linux), None);
        assert!(lookup(&m, "reg:5000/app:1", &linux).is_some());
        m.insert(
            "alpine::linux/amd64".to_string(),
            NamedContext::Local("x".into()),
        );
        assert_eq!(
            lookup(&m, "alpine", &linux),
            Some(&NamedContext::Local("x".into()))
        );
    }
}
