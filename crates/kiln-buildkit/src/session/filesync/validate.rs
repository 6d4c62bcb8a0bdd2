//! Checks on a received listing, before anything touches the disk: every path is clean,
//! relative and stays inside the destination; entries come in fsutil's walk order with each
//! parent directory announced before its contents; hardlinks name an earlier regular file.
//!
//! The order check is what makes writing safe: a path `a/b` is accepted only while `a` is the
//! directory most recently opened by the listing, so a symlink entry `a` can never have a
//! child, and writes never pass through a symlink (`fsutil/validator.go`, `hardlinks.go`).

use std::collections::HashSet;

/// Why an entry was rejected.
pub type Rejection = String;

/// Checks one wire path: relative, `/`-separated, clean, no `.`/`..` components, no NUL.
/// Stricter than fsutil, whose `Validator` lets a top-level `..` through.
pub fn check_path(path: &str) -> Result<(), Rejection> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains('\0') {
        return Err("path contains NUL".into());
    }
    for component in path.split('/') {
        match component {
            "" => return Err("unclean path (empty component)".into()),
            "." | ".." => return Err("path escapes or is not clean".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a checked path into its parent (`""` at the top) and base name.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

struct OpenDir {
    dir: String,
    last: String,
}

/// fsutil's `Validator` plus `Hardlinks`: enforces the walk order and hardlink targets.
pub struct Listing {
    open: Vec<OpenDir>,
    link_targets: HashSet<String>,
}

impl Default for Listing {
    fn default() -> Self {
        Listing {
            open: vec![OpenDir {
                dir: String::new(),
                last: String::new(),
            }],
            link_targets: HashSet::new(),
        }
    }
}

impl Listing {
    /// Accepts the next entry. `is_dir` opens it for children; `link_source` says whether a
    /// later hardlink may point at it (a regular file, device or pipe that is not itself a
    /// hardlink); `hardlink_to` is the target of a hardlink entry.
    pub fn accept(
        &mut self,
        path: &str,
        is_dir: bool,
        link_source: bool,
        hardlink_to: Option<&str>,
    ) -> Result<(), Rejection> {
        check_path(path)?;
        let (dir, base) = split(path);
        // Leave finished subtrees; the parent must be the innermost still-open directory.
        while self.open.len() > 1 && self.open.last().is_some_and(|o| o.dir != dir) {
            self.open.pop();
        }
        let Some(top) = self.open.last_mut() else {
            return Err("internal: no open directory".into());
        };
        if top.dir != dir {
            return Err(format!(
                "changes out of order: parent directory {dir:?} was not sent before it (or is not a directory)"
            ));
        }
        // Go compares strings bytewise; so does `str`'s `Ord`.
        if !top.last.is_empty() && top.last.as_str() >= base {
            let previous = if dir.is_empty() {
                top.last.clone()
            } else {
                format!("{dir}/{}", top.last)
            };
            return Err(format!(
                "changes out of order or duplicated: comes after {previous:?}"
            ));
        }
        top.last = base.to_string();
        if let Some(target) = hardlink_to {
            if !self.link_targets.contains(target) {
                return Err(format!("invalid link to unknown path {target:?}"));
            }
        } else if link_source {
            self.link_targets.insert(path.to_string());
        }
        if is_dir {
            self.open.push(OpenDir {
                dir: path.to_string(),
                last: String::new(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_are_rejected() {
        for bad in [
            "", "/abs", "../x", "..", ".", "a/../b", "a//b", "a/", "a/./b", "a\0b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "a/b", ".dockerignore", "a/..b", "...", "a b/c"] {
            assert!(check_path(good).is_ok(), "{good:?} rejected");
        }
    }

    fn run(entries: &[(&str, bool)]) -> Result<(), String> {
        let mut l = Listing::default();
        for (p, d) in entries {
            l.accept(p, *d, !*d, None)
                .map_err(|e| format!("{p}: {e}"))?;
        }
        Ok(())
    }

    #[test]
    fn walk_order_is_enforced() {
        // `/` sorts below every other byte: "a/b" (inside a) precedes "a-b" and "a.b".
        run(&[
            ("a", true),
            ("a/b", true),
            ("a/b/c", false),
            ("a/c", false),
            ("a-b", false),
            ("a.b", false),
            ("b", false),
        ])
        .unwrap();
        assert!(run(&[("b", false), ("a", false)]).is_err());
        assert!(run(&[("a", false), ("a", false)]).is_err());
        assert!(run(&[("a/b", false)]).is_err(), "parent never sent");
        assert!(
            run(&[("a", false), ("a/b", false)]).is_err(),
            "parent is a file"
        );
        assert!(
            run(&[("a", true), ("a/x", false), ("b", false), ("a/y", false)]).is_err(),
            "re-entering a closed directory"
        );
    }

    #[test]
    fn hardlinks_need_an_earlier_regular_file() {
        let mut l = Listing::default();
        l.accept("f", false, true, None).unwrap();
        l.accept("link", false, false, None).unwrap(); // symlink: not a link source
        assert!(l.accept("m", false, false, Some("f")).is_ok());
        assert!(l.accept("n", false, false, Some("link")).is_err());
        assert!(
            l.accept("o", false, false, Some("m")).is_err(),
            "hardlink to hardlink"
        );
        assert!(l.accept("p", false, false, Some("zzz")).is_err());
    }
}
