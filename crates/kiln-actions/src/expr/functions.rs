//! Built-in functions. Names are case-insensitive; arity is checked at parse time.

use super::eval::{abstract_eq, Evaluator, Val};
use super::parser::Node;
use super::value::{fold_str, format_number};
use super::{ExprError, Status};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::Path;

type EvalFn = for<'a> fn(&Evaluator<'a>, &'a [Node], usize) -> Result<Val<'a>, ExprError>;

pub(crate) struct Func {
    /// Canonical spelling.
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: usize,
    pub eval: EvalFn,
    /// success(), always(), cancelled(), failure()
    pub is_status: bool,
}

impl std::fmt::Debug for Func {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const fn func(name: &'static str, min_args: usize, max_args: usize, eval: EvalFn) -> Func {
    Func {
        name,
        min_args,
        max_args,
        eval,
        is_status: false,
    }
}

const fn status(name: &'static str, eval: EvalFn) -> Func {
    Func {
        name,
        min_args: 0,
        max_args: 0,
        eval,
        is_status: true,
    }
}

pub(crate) static FUNCTIONS: [Func; 13] = [
    func("contains", 2, 2, contains),
    func("startsWith", 2, 2, starts_with),
    func("endsWith", 2, 2, ends_with),
    func("format", 1, 255, format),
    func("join", 1, 2, join),
    func("toJSON", 1, 1, to_json),
    func("fromJSON", 1, 1, from_json),
    func("hashFiles", 1, 255, hash_files),
    func("case", 3, 255, case),
    status("success", |e, _, _| {
        Ok(Val::Bool(e.ctx.status == Status::Success))
    }),
    status("always", |_, _, _| Ok(Val::Bool(true))),
    status("cancelled", |e, _, _| {
        Ok(Val::Bool(e.ctx.status == Status::Cancelled))
    }),
    status("failure", |e, _, _| {
        Ok(Val::Bool(e.ctx.status == Status::Failure))
    }),
];

/// `contains(search, item)`: for a primitive `search`, a case-insensitive substring test on the
/// string conversions (false when `item` is not primitive); for an array, whether any element is
/// `==` to `item`; otherwise false.
fn contains<'a>(e: &Evaluator<'a>, args: &'a [Node], _: usize) -> Result<Val<'a>, ExprError> {
    let search = e.eval(&args[0])?;
    if search.is_primitive() {
        let item = e.eval(&args[1])?;
        if item.is_primitive() {
            let hay = fold_str(&search.to_display());
            let needle = fold_str(&item.to_display());
            return Ok(Val::Bool(hay.contains(&needle)));
        }
    } else if let Some(items) = search.array_items() {
        if !items.is_empty() {
            let item = e.eval(&args[1])?;
            return Ok(Val::Bool(items.iter().any(|x| abstract_eq(&item, x))));
        }
    }
    Ok(Val::Bool(false))
}

/// `startsWith(s, prefix)`: case-insensitive; false unless both are primitives.
fn starts_with<'a>(e: &Evaluator<'a>, args: &'a [Node], _: usize) -> Result<Val<'a>, ExprError> {
    affix(e, args, |h, n| h.starts_with(n))
}

/// `endsWith(s, suffix)`: case-insensitive; false unless both are primitives.
fn ends_with<'a>(e: &Evaluator<'a>, args: &'a [Node], _: usize) -> Result<Val<'a>, ExprError> {
    affix(e, args, |h, n| h.ends_with(n))
}

fn affix<'a>(
    e: &Evaluator<'a>,
    args: &'a [Node],
    test: fn(&str, &str) -> bool,
) -> Result<Val<'a>, ExprError> {
    let left = e.eval(&args[0])?;
    if left.is_primitive() {
        let right = e.eval(&args[1])?;
        if right.is_primitive() {
            let h = fold_str(&left.to_display());
            let n = fold_str(&right.to_display());
            return Ok(Val::Bool(test(&h, &n)));
        }
    }
    Ok(Val::Bool(false))
}

/// `format(fmt, args...)`: `{N}` is replaced by the string conversion of argument N, `{{` and
/// `}}` are literal braces. Format specifiers (`{0:x}`), unbalanced braces and references past
/// the last argument are errors. Arguments are evaluated lazily, only when referenced.
fn format<'a>(e: &Evaluator<'a>, args: &'a [Node], pos: usize) -> Result<Val<'a>, ExprError> {
    let fmt = e.eval(&args[0])?.to_display();
    let chars: Vec<char> = fmt.chars().collect();
    let mut out = String::new();
    let mut cache: Vec<Option<String>> = vec![None; args.len() - 1];
    let invalid = || {
        e.error(
            format!("The following format string is invalid: {fmt}"),
            pos,
        )
    };
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => {
                out.push('{');
                i += 2;
            }
            '{' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
                if j == i + 1 {
                    return Err(invalid());
                }
                let digits: String = chars[i + 1..j].iter().collect();
                let index: usize = match digits.parse::<u8>() {
                    Ok(n) => n.into(),
                    Err(_) => return Err(invalid()),
                };
                match chars.get(j) {
                    Some('}') => {}
                    Some(':') => {
                        // A specifier: the runner rejects every specifier, but only when the
                        // format string itself is well-formed.
                        let mut k = j + 1;
                        let mut spec = String::new();
                        loop {
                            match chars.get(k) {
                                None => return Err(invalid()),
                                Some('}') if chars.get(k + 1) == Some(&'}') => {
                                    spec.push('}');
                                    k += 2;
                                }
                                Some('}') => break,
                                Some(c) => {
                                    spec.push(*c);
                                    k += 1;
                                }
                            }
                        }
                        if index >= cache.len() {
                            return Err(too_few(e, &fmt, pos));
                        }
                        return Err(e.error(
                            format!("The format specifiers '{spec}' are not valid for format argument {index}"),
                            pos,
                        ));
                    }
                    _ => return Err(invalid()),
                }
                if index >= cache.len() {
                    return Err(too_few(e, &fmt, pos));
                }
                if cache[index].is_none() {
                    cache[index] = Some(e.eval(&args[index + 1])?.to_display());
                }
                out.push_str(cache[index].as_deref().unwrap_or_default());
                i = j + 1;
            }
            '}' if chars.get(i + 1) == Some(&'}') => {
                out.push('}');
                i += 2;
            }
            '}' => return Err(invalid()),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(Val::Str(Cow::Owned(out)))
}

fn too_few(e: &Evaluator<'_>, fmt: &str, pos: usize) -> ExprError {
    e.error(
        format!("The following format string references more arguments than were supplied: {fmt}"),
        pos,
    )
}

/// `join(array, separator = ',')`: the string conversions of the elements joined; a primitive
/// first argument is returned as its string conversion; an object gives `''`. A non-primitive
/// separator falls back to `,`.
fn join<'a>(e: &Evaluator<'a>, args: &'a [Node], _: usize) -> Result<Val<'a>, ExprError> {
    let items = e.eval(&args[0])?;
    if let Some(list) = items.array_items() {
        if list.is_empty() {
            return Ok(Val::Str(Cow::Borrowed("")));
        }
        let mut sep = ",".to_string();
        if list.len() > 1 {
            if let Some(s) = args.get(1) {
                let s = e.eval(s)?;
                if s.is_primitive() {
                    sep = s.to_display();
                }
            }
        }
        let parts: Vec<String> = list.iter().map(Val::to_display).collect();
        return Ok(Val::Str(Cow::Owned(parts.join(&sep))));
    }
    if items.is_primitive() {
        return Ok(Val::Str(Cow::Owned(items.to_display())));
    }
    Ok(Val::Str(Cow::Borrowed("")))
}

/// `toJSON(value)`: pretty JSON with a two-space indent like the runner (`"key": value`, empty
/// collections as `[]`/`{}`, numbers in the runner's number format). Object keys come out sorted,
/// because context objects are stored in sorted maps (the runner keeps insertion order).
fn to_json<'a>(e: &Evaluator<'a>, args: &'a [Node], _: usize) -> Result<Val<'a>, ExprError> {
    let v = e.eval(&args[0])?;
    let mut out = String::new();
    match &v {
        Val::Num(n) => out.push_str(&format_number(*n)),
        other => write_json(&other.clone().into_json(), 0, &mut out),
    }
    Ok(Val::Str(Cow::Owned(out)))
}

pub(crate) fn write_json(v: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize, out: &mut String| out.extend(std::iter::repeat_n(' ', n * 2));
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                pad(indent + 1, out);
                write_json(x, indent + 1, out);
            }
            out.push('\n');
            pad(indent, out);
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                pad(indent + 1, out);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                write_json(x, indent + 1, out);
            }
            out.push('\n');
            pad(indent, out);
            out.push('}');
        }
    }
}

/// `fromJSON(string)`: parses the string conversion of the argument; invalid JSON (including an
/// empty string) is an error that quotes the input.
fn from_json<'a>(e: &Evaluator<'a>, args: &'a [Node], pos: usize) -> Result<Val<'a>, ExprError> {
    let text = e.eval(&args[0])?.to_display();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => Ok(Val::from_json(Cow::Owned(v))),
        Err(err) => Err(e.error(
            format!("Error parsing fromJson: {err}. The input was: '{text}'"),
            pos,
        )),
    }
}

/// `case(pred1, val1, pred2, val2, ..., default)` (newer runners): the value after the first
/// predicate that is `true`, else the default. Predicates must be booleans.
fn case<'a>(e: &Evaluator<'a>, args: &'a [Node], pos: usize) -> Result<Val<'a>, ExprError> {
    let mut i = 0;
    while i + 1 < args.len() {
        match e.eval(&args[i])? {
            Val::Bool(true) => return e.eval(&args[i + 1]),
            Val::Bool(false) => {}
            _ => return Err(e.error("case predicate must evaluate to a boolean value", pos)),
        }
        i += 2;
    }
    e.eval(&args[args.len() - 1])
}

/// `hashFiles(pattern, ...)`: the runner's algorithm. Patterns (string conversions of the
/// arguments) are globs relative to the workspace, matched against `/`-separated relative paths:
/// `*` and `?` stay within one path segment, `**` crosses segments, dot-files are not special,
/// and a pattern that matches a directory matches everything below it. A leading `!` negates;
/// patterns apply in order (a later pattern overrides an earlier one for the files it matches).
/// Absolute patterns must point into the workspace; files outside it are ignored. Regular files
/// only (a symlink to a file counts, symlinked directories are not followed). The result is the
/// hex SHA-256 over the concatenated SHA-256 digests of the matched files in path order, or `''`
/// when nothing matches.
fn hash_files<'a>(e: &Evaluator<'a>, args: &'a [Node], pos: usize) -> Result<Val<'a>, ExprError> {
    let Some(workspace) = e.ctx.workspace.as_deref() else {
        return Err(e.error("hashFiles is not available: no workspace directory", pos));
    };
    // Like the runner (which hands the patterns to @actions/glob joined by newlines), an argument
    // may hold several patterns on separate lines; blank lines and `#` comments are skipped.
    let mut patterns = Vec::new();
    for a in args {
        let raw = e.eval(a)?.to_display();
        for line in raw.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                patterns.push(line.to_string());
            }
        }
    }
    hash_files_in(workspace, &patterns)
        .map_err(|m| e.error(m, pos))
        .map(|s| Val::Str(Cow::Owned(s)))
}

struct Pattern {
    negate: bool,
    matcher: globset::GlobSet,
}

fn compile(pattern: &str, workspace: &Path) -> Result<Option<Pattern>, String> {
    let (negate, mut p) = match pattern.trim().strip_prefix('!') {
        Some(rest) => (true, rest.trim_start().to_string()),
        None => (false, pattern.trim().to_string()),
    };
    if p.is_empty() {
        return Ok(None);
    }
    if p.starts_with('/') {
        let ws = workspace
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        match p.strip_prefix(&ws) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                p = rest.trim_start_matches('/').to_string();
                if p.is_empty() {
                    p = "**".into();
                }
            }
            _ => return Ok(None), // outside the workspace: matches nothing we would hash
        }
    }
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.to_string();
    }
    let p = p.trim_end_matches('/');
    let mut set = globset::GlobSetBuilder::new();
    for glob in [p.to_string(), format!("{p}/**")] {
        let g = globset::GlobBuilder::new(&glob)
            .literal_separator(true)
            .build()
            .map_err(|err| format!("hashFiles: invalid pattern '{pattern}': {err}"))?;
        set.add(g);
    }
    let matcher = set
        .build()
        .map_err(|err| format!("hashFiles: invalid pattern '{pattern}': {err}"))?;
    Ok(Some(Pattern { negate, matcher }))
}

/// The hashFiles algorithm on a directory, exposed for the executor and tests.
pub fn hash_files_in(workspace: &Path, patterns: &[String]) -> Result<String, String> {
    let mut compiled = Vec::new();
    for p in patterns {
        if let Some(c) = compile(p, workspace)? {
            compiled.push(c);
        }
    }
    if !compiled.iter().any(|p| !p.negate) {
        return Ok(String::new());
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(workspace)
        .follow_links(false)
        .min_depth(1)
    {
        let Ok(entry) = entry else { continue };
        let is_file = if entry.file_type().is_symlink() {
            std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
        } else {
            entry.file_type().is_file()
        };
        if !is_file {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(workspace) else {
            continue;
        };
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let mut included = false;
        for p in &compiled {
            if p.matcher.is_match(&rel) {
                included = !p.negate;
            }
        }
        if included {
            files.push((rel, entry.path().to_path_buf()));
        }
    }
    if files.is_empty() {
        return Ok(String::new());
    }
    files.sort();
    let mut total = Sha256::new();
    for (rel, path) in files {
        let mut file = std::fs::File::open(&path)
            .map_err(|err| format!("hashFiles: cannot read '{rel}': {err}"))?;
        let mut h = Sha256::new();
        std::io::copy(&mut file, &mut h)
            .map_err(|err| format!("hashFiles: cannot read '{rel}': {err}"))?;
        total.update(h.finalize());
    }
    Ok(hex::encode(total.finalize()))
}
