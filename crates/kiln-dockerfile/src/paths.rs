//! Slash-path helpers with Go's `path` semantics (BuildKit normalises paths with them).

/// Go's `path.Clean`.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `path.Join`.
pub fn join(parts: &[&str]) -> String {
    let non_empty: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if non_empty.is_empty() {
        return String::new();
    }
    clean(&non_empty.join("/"))
}

/// Go's `path.Base`.
pub fn base(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// BuildKit's `system.NormalizePath`/llb `normalizePath`: absolute against `parent`, keeping a
/// trailing `/` or `/.` when `keep_slash` (it means "into this directory" to a copy).
pub fn normalize(parent: &str, p: &str, keep_slash: bool) -> String {
    let mut out = clean(p);
    if !out.starts_with('/') {
        out = join(&["/", parent, &out]);
    }
    if keep_slash {
        if p.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if p.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_path_clean() {
        let cases = [
            ("", "."),
            ("/", "/"),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/./b/", "a/b"),
            ("//a//b", "/a/b"),
            ("a/..", "."),
        ];
        for (i, want) in cases {
            assert_eq!(clean(i), want, "{i}");
        }
    }

    #[test]
    fn normalize_keeps_directory_slashes() {
        assert_eq!(normalize("/app", "src/", true), "/app/src/");
        assert_eq!(normalize("/app", "./", true), "/app/");
        assert_eq!(normalize("/", ".", true), "/");
        assert_eq!(normalize("/app", "x/.", true), "/app/x/.");
        assert_eq!(normalize("/app", "/abs/", false), "/abs");
    }
}
