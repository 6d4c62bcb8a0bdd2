//! Path resolution confined to a root directory. Every path that comes from a build (a COPY
//! destination, a WORKDIR, a user's `/etc/passwd`) is resolved here, so a symlink in an image
//! or context can never make the engine read or write outside the root.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 255;

/// Resolve `path` (absolute or relative, interpreted inside `root`) to a host path below
/// `root`, following symlinks as if `root` were `/`. The last component is followed only when
/// `follow_last` is set. Components that do not exist are kept as they are.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            stack.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(stack.iter());
        candidate.push(&comp);
        let is_last = pending.is_empty();
        let meta = std::fs::symlink_metadata(&candidate);
        match meta {
            Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other(format!(
                        "{path}: too many levels of symbolic links"
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    stack.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => stack.push(comp),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(stack.iter());
    Ok(out)
}

/// Lexically clean an in-image path: absolute, no `.`/`..`, no trailing slash.
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Copy extended attributes, except overlayfs's own (they describe the layer, not the file).
pub fn copy_xattrs(src: &Path, dst: &Path) {
    if let Ok(names) = xattr::list(src) {
        for n in names {
            let s = n.to_string_lossy();
            if s.starts_with("trusted.overlay.") || s.starts_with("user.overlay.") {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(src, &n) {
                let _ = xattr::set(dst, &n, &v);
            }
        }
    }
}

fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        symlink("../../../../etc", root.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/escape/etc/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, "up/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, "/../../x", true).unwrap(),
            root.join("x")
        );
    }

    #[test]
    fn last_symlink_is_kept_unless_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("/target", root.join("link")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/link", false).unwrap(),
            root.join("link")
        );
        assert_eq!(
            resolve_in_root(root, "/link", true).unwrap(),
            root.join("target")
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        assert!(resolve_in_root(root, "/a/x", true).is_err());
    }

    #[test]
    fn clean_abs_removes_dots() {
        for (input, want) in [
            ("a/b/../c", "/a/c"),
            ("/../..", "/"),
            ("./x/", "/x"),
            ("", "/"),
        ] {
            assert_eq!(clean_abs(input), want, "{input}");
        }
    }
}
