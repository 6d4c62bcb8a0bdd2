//! `.dockerignore` rules with moby/patternmatcher semantics.
//!
//! `**` spans directories, `*` and `?` stay within one, `[...]` classes, `!` re-includes (the last
//! matching pattern wins), a leading `/` is dropped, patterns and paths are cleaned, `#` starts a
//! comment line, and a pattern that matches a parent directory excludes everything below it.

use crate::error::Error;
use crate::paths::clean;

/// Parsed `.dockerignore` patterns.
#[derive(Debug, Clone)]
pub struct DockerIgnore {
    patterns: Vec<String>,
    compiled: Vec<Pattern>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    matcher: Matcher,
}

impl DockerIgnore {
    /// Reads a `.dockerignore` file (patternmatcher's `ignorefile.ReadAll` plus validation).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let invert = pattern.starts_with('!');
            if invert {
                pattern = pattern[1..].trim();
            }
            let mut p = String::new();
            if !pattern.is_empty() {
                p = clean(pattern);
                if p.len() > 1 && p.starts_with('/') {
                    p.remove(0);
                }
            }
            patterns.push(if invert { format!("!{p}") } else { p });
        }
        Self::from_patterns(patterns)
    }

    /// Builds a matcher from already-cleaned patterns (as [`DockerIgnore::patterns`] returns).
    pub fn from_patterns(patterns: Vec<String>) -> Result<Self, Error> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for raw in &patterns {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exclusion, p) = match p.strip_prefix('!') {
                Some("") => {
                    return Err(Error::new(
                        ".dockerignore",
                        0,
                        "illegal exclusion pattern: \"!\"",
                    ))
                }
                Some(rest) => (true, rest.to_string()),
                None => (false, p),
            };
            let matcher = compile(&p).map_err(|e| {
                Error::new(
                    ".dockerignore",
                    0,
                    format!("syntax error in pattern {p}: {e}"),
                )
            })?;
            compiled.push(Pattern { exclusion, matcher });
        }
        Ok(DockerIgnore { patterns, compiled })
    }

    /// The cleaned patterns, in order, for passing on to a file sync (`local.excludepatterns`).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let file = clean(rel_path.trim_start_matches('/'));
        if file == "." || file.is_empty() {
            return false;
        }
        let parents: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.compiled {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&file);
            if !hit {
                for i in 0..parents.len() {
                    if pattern.matches(&parents[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(p) => path == p,
            Matcher::Prefix(p) => path.starts_with(p.as_str()),
            Matcher::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

/// Translates a pattern the way patternmatcher's `compile` does, picking a fast matcher when the
/// pattern allows it.
fn compile(pattern: &str) -> Result<Matcher, String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut index = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if index == 0 {
                    kind = Kind::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            kind = Kind::Regex;
        } else if ".+()|{}$".contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    re.push('\\');
                    re.push(next);
                    kind = Kind::Regex;
                }
                None => re.push_str("\\\\"),
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            kind = Kind::Regex;
        } else {
            re.push(ch);
        }
        index += 1;
    }
    // Validate like filepath.Match does even for patterns served by the fast paths.
    let compiled = regex::Regex::new(&format!("{re}$")).map_err(|e| e.to_string())?;
    Ok(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_string()),
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len().saturating_sub(2)].to_string()),
        Kind::Suffix => Matcher::Suffix(pattern.get(2..).unwrap_or_default().to_string()),
        Kind::Regex => Matcher::Regex(compiled),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (pattern, path, excluded) — restated from moby/patternmatcher's TestMatches table.
    const SINGLE_PATTERN_CASES: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/dir2/file", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("docs", "docs/sub/README.md", true),
        ("/leading/slash", "leading/slash/x", true),
    ];

    #[test]
    fn single_patterns_match_like_patternmatcher() {
        for (pattern, path, want) in SINGLE_PATTERN_CASES {
            let di = DockerIgnore::parse(pattern).unwrap();
            assert_eq!(
                di.is_excluded(path),
                *want,
                "pattern {pattern:?} path {path:?}"
            );
        }
    }

    #[test]
    fn exceptions_use_the_last_matching_pattern() {
        let di = DockerIgnore::parse(
            "# comment\n*.md\n!README.md\nnode_modules\n\n  build/  \n!build/keep\n",
        )
        .unwrap();
        let cases = [
            ("CHANGELOG.md", true),
            ("README.md", false),
            ("docs/x.md", false),
            ("node_modules/a/b.js", true),
            ("build/out.o", true),
            ("build/keep", false),
            ("src/main.rs", false),
            (".", false),
            ("/node_modules", true),
        ];
        for (path, want) in cases {
            assert_eq!(di.is_excluded(path), want, "{path}");
        }
        assert_eq!(
            di.patterns(),
            &["*.md", "!README.md", "node_modules", "build", "!build/keep"]
        );
    }

    #[test]
    fn a_lone_exclamation_mark_is_rejected() {
        let e = DockerIgnore::parse("!\n").unwrap_err();
        assert!(e.message.contains("illegal exclusion pattern"), "{e}");
    }
}
