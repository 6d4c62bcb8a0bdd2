//! Dockerfile text → a list of instruction nodes (BuildKit's `frontend/dockerfile/parser`).
//!
//! Handles parser directives (`# syntax=`, `# escape=`, `# check=`, only before anything else),
//! line continuations with `\` or the directive's escape character, comment lines (also inside
//! continuations), empty continuation lines (a warning, as in BuildKit), heredocs (`<<EOF`,
//! `<<-EOF` tab stripping, quoted names disabling expansion, several per line) and JSON (exec)
//! form detection. [`parse`] goes on to the typed model in [`crate::instructions`].

use std::sync::OnceLock;

use regex::Regex;

use crate::error::Error;
use crate::expand::{Lexer, NoEnv};
use crate::instructions::{self, Dockerfile};

/// Parses a Dockerfile named `Dockerfile` into the typed model.
pub fn parse(text: &str) -> Result<Dockerfile, Error> {
    parse_named("Dockerfile", text)
}

/// Parses a Dockerfile, naming it `name` in error messages (`name:LINE: message`).
pub fn parse_named(name: &str, text: &str) -> Result<Dockerfile, Error> {
    let ast = parse_ast(text).map_err(|e| e.at(name, 0))?;
    let mut df = instructions::from_ast(ast).map_err(|e| e.at(name, 0))?;
    df.file_name = name.to_string();
    Ok(df)
}

/// A parser directive found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value as written.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A non-fatal finding of the parser (BuildKit reports these as warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, unquoted.
    pub name: String,
    /// The body, every line with its newline; tabs not yet stripped for `<<-`.
    pub content: String,
    /// False when the name was quoted (`<<"EOF"`): the body is taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
}

/// One instruction as the parser sees it, before typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The instruction name as written.
    pub value: String,
    /// The logical line (continuations joined, comments removed).
    pub original: String,
    /// `--flag[=value]` words before the arguments.
    pub flags: Vec<String>,
    /// Arguments split the way this instruction needs (ENV/LABEL: key, value, separator triples).
    pub args: Vec<String>,
    /// Arguments were a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// ONBUILD's trigger.
    pub sub: Option<Box<Node>>,
    pub start_line: usize,
    pub end_line: usize,
}

/// The parser's output: nodes plus what the directives said.
#[derive(Debug, Clone)]
pub(crate) struct Ast {
    pub nodes: Vec<Node>,
    pub directives: Vec<Directive>,
    pub escape: char,
    pub warnings: Vec<Warning>,
}

fn re_whitespace() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"[\t\x0b\x0c\r ]+").expect("static regex"))
}

fn re_directive() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$").expect("static regex"))
}

fn re_heredoc() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([0-9]*)<<(-?)\s*([^<]*)$").expect("static regex"))
}

struct Directives {
    escape: char,
    done: bool,
    seen: Vec<Directive>,
    line: usize,
}

impl Directives {
    /// Looks at one physical line while directives may still appear.
    fn check_line(&mut self, line: &str) -> Result<(), Error> {
        self.line += 1;
        if self.done {
            return Ok(());
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(());
        };
        let rest = rest.trim_start();
        let Some(caps) = re_directive().captures(rest) else {
            self.done = true;
            return Ok(());
        };
        let name = caps[1].to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.iter().any(|d| d.name == name) {
            return Err(Error::msg(format!(
                "only one {name} parser directive can be used"
            )));
        }
        let value = caps[2].to_string();
        if name == "escape" {
            self.escape = match value.as_str() {
                "`" => '`',
                "\\" => '\\',
                _ => {
                    return Err(Error::msg(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    )))
                }
            };
        }
        self.seen.push(Directive {
            name,
            value,
            line: self.line,
        });
        Ok(())
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Strips a trailing continuation escape; returns the line and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if before.is_empty() {
            return (String::new(), false);
        }
        if !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

/// Parses the text into nodes. Errors carry the line but no file name yet.
pub(crate) fn parse_ast(text: &str) -> Result<Ast, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut d = Directives {
        escape: '\\',
        done: false,
        seen: Vec::new(),
        line: 0,
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut current_line = 0usize;
    let mut i = 0usize;

    while i < lines.len() {
        let raw = trim_newline(lines[i]).trim_start();
        i += 1;
        d.check_line(raw).map_err(|e| e.at("", current_line + 1))?;
        let processed = if is_comment(raw) { "" } else { raw };
        current_line += 1;
        let start_line = current_line;
        let (first, mut end_of_line) = trim_continuation(processed, d.escape);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut buf = first;
        let mut empty_continuation = false;
        while !end_of_line && i < lines.len() {
            let raw = trim_newline(lines[i]);
            i += 1;
            d.check_line(raw).map_err(|e| e.at("", current_line + 1))?;
            current_line += 1;
            if is_comment(raw) {
                continue;
            }
            if raw.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, eol) = trim_continuation(raw, d.escape);
            buf.push_str(&part);
            end_of_line = eol;
        }
        if empty_continuation {
            warnings.push(Warning {
                line: current_line,
                message: format!("Empty continuation line found in: {buf}"),
            });
        }
        let mut node = node_from_line(&buf, d.escape).map_err(|e| e.at("", start_line))?;
        if can_contain_heredoc(&node) && buf.contains("<<") {
            for mut heredoc in heredocs_from_line(&buf).map_err(|e| e.at("", start_line))? {
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    current_line += 1;
                    let mut candidate = trim_newline(raw);
                    if heredoc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(raw);
                }
                if !terminated {
                    return Err(Error::msg("unterminated heredoc").at("", start_line));
                }
                node.heredocs.push(heredoc);
            }
        }
        node.start_line = start_line;
        node.end_line = current_line;
        if let Some(sub) = node.sub.as_mut() {
            sub.start_line = start_line;
            sub.end_line = current_line;
            sub.heredocs.clone_from(&node.heredocs);
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Error::msg("file with no instructions").at("", current_line));
    }
    Ok(Ast {
        nodes,
        directives: d.seen,
        escape: d.escape,
        warnings,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let kw = node.value.to_ascii_lowercase();
    match kw.as_str() {
        "add" | "copy" | "run" => true,
        "onbuild" => node.sub.as_deref().is_some_and(can_contain_heredoc),
        _ => false,
    }
}

/// Splits `INSTRUCTION [--flags] args` and parses the arguments for that instruction.
fn node_from_line(line: &str, escape: char) -> Result<Node, Error> {
    let trimmed = line.trim();
    let mut parts = re_whitespace().splitn(trimmed, 2);
    let cmd = parts.next().unwrap_or_default().to_string();
    let (rest, flags) = match parts.next() {
        Some(rest) => extract_builder_flags(rest, escape),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim().to_string();
    let mut node = Node {
        value: cmd.clone(),
        original: line.to_string(),
        flags,
        args: Vec::new(),
        json: false,
        heredocs: Vec::new(),
        sub: None,
        start_line: 0,
        end_line: 0,
    };
    match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => {
            let (args, json) = parse_maybe_json_to_list(&rest)?;
            node.args = args;
            node.json = json;
        }
        "cmd" | "entrypoint" | "run" | "shell" => {
            let (args, json) = parse_maybe_json(&rest)?;
            node.args = args;
            node.json = json;
        }
        "arg" => node.args = parse_words(&rest, escape),
        "env" => node.args = parse_name_val(&rest, "ENV", escape)?,
        "label" => node.args = parse_name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => node.args = split_whitespace(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            node.args = vec![rest]
        }
        "healthcheck" => {
            let (args, json) = parse_health_config(&rest)?;
            node.args = args;
            node.json = json;
        }
        "onbuild" if !rest.is_empty() => node.sub = Some(Box::new(node_from_line(&rest, escape)?)),
        _ => {}
    }
    Ok(node)
}

/// Takes leading `--flag` words off the arguments (BuildKit's `extractBuilderFlags`).
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;
    loop {
        let at_end = pos >= chars.len();
        let (offset, ch) = chars.get(pos).copied().unwrap_or((line.len(), '\0'));
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            let next_is_dash = chars.get(pos + 1).is_some_and(|(_, c)| *c == '-');
            if ch != '-' || !next_is_dash {
                return (line[offset..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[offset..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = chars[pos].1;
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == escape {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = chars[pos].1;
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// Splits into words keeping quotes and escapes (BuildKit's `parseWords`, for ARG/ENV/LABEL).
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0usize;
    loop {
        let at_end = pos >= chars.len();
        let mut ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// ENV/LABEL arguments as (key, value, separator) triples; separator "" marks the legacy
/// `ENV key value` form.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, Error> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let mut parts = re_whitespace().splitn(rest, 2);
        let k = parts.next().unwrap_or_default();
        let Some(v) = parts.next() else {
            return Err(Error::msg(format!("{key} must have two arguments")));
        };
        return Ok(vec![k.to_string(), v.to_string(), String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(Error::msg(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::error::go_quote(&word)
            )));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

fn split_whitespace(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    re_whitespace().split(rest).map(str::to_string).collect()
}

enum JsonResult {
    Array(Vec<String>),
    NotJson,
}

fn parse_json(rest: &str) -> Result<JsonResult, Error> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(JsonResult::NotJson);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(JsonResult::NotJson);
    };
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match v {
            serde_json::Value::String(s) => out.push(s),
            _ => {
                return Err(Error::msg(
                    "when using JSON array syntax, arrays must be comprised of strings only",
                ))
            }
        }
    }
    Ok(JsonResult::Array(out))
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), Error> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json(rest)? {
        JsonResult::Array(a) => (a, true),
        JsonResult::NotJson => (vec![rest.to_string()], false),
    })
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), Error> {
    Ok(match parse_json(rest)? {
        JsonResult::Array(a) => (a, true),
        JsonResult::NotJson => (split_whitespace(rest), false),
    })
}

fn parse_health_config(rest: &str) -> Result<(Vec<String>, bool), Error> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let typ = rest[..sep].to_string();
    let (cmd, json) = parse_maybe_json(rest[sep..].trim_start())?;
    let mut args = vec![typ];
    args.extend(cmd);
    Ok((args, json))
}

/// Finds the heredocs a logical line opens, in order.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, Error> {
    let lex = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// Recognises a heredoc word such as `<<EOF`, `<<-"EOF"` or `3<<EOF`.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, Error> {
    let Some(caps) = re_heredoc().captures(word) else {
        return Ok(None);
    };
    let fd = caps[1].parse::<u32>().unwrap_or(0);
    let chomp = &caps[2] == "-";
    let rest = &caps[3];
    if rest.is_empty() {
        return Ok(None);
    }
    let lex = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let words = lex.process_words(rest, &NoEnv)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lexer {
        raw_quotes: true,
        ..lex
    }
    .process_words(rest, &NoEnv)?;
    if raw.len() != words.len() {
        return Err(Error::msg(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        )));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let name = words[0].clone();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name,
        content: String::new(),
        expand,
        chomp,
        fd,
    }))
}

/// Strips leading tabs from every line (`<<-`).
pub(crate) fn chomp_heredoc_content(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
