//! Variable expansion with BuildKit's shell-lexer semantics (`frontend/dockerfile/shell/lex.go`).
//!
//! `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?msg}`, `${v?msg}`, `${v#pat}`,
//! `${v##pat}`, `${v%pat}`, `${v%%pat}`, `${v/a/b}`, `${v//a/b}`; single and double quotes;
//! escapes with the configured escape character. [`Lexer::process_word`] yields one word,
//! [`Lexer::process_words`] splits into words the way `EXPOSE` and heredoc detection need.
//!
//! Which instructions expand which arguments follows BuildKit: `RUN`, `CMD`, `ENTRYPOINT` and
//! `SHELL` are not expanded by the frontend (the shell does it), `ENV`, `LABEL`, `ADD`, `COPY`,
//! `WORKDIR`, `USER`, `VOLUME`, `STOPSIGNAL`, `EXPOSE`, `ARG` values and `RUN --mount` options are.

use std::collections::{BTreeMap, HashMap};

/// An expansion failure, worded like BuildKit's (`failed to process "${a:?}": a: is not allowed to be unset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError(pub String);

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExpandError {}

/// Where variable values come from.
pub trait EnvLookup {
    /// The value of `key`, or `None` when unset (an empty value is set).
    fn lookup(&self, key: &str) -> Option<String>;
}

impl EnvLookup for BTreeMap<String, String> {
    fn lookup(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl EnvLookup for HashMap<String, String> {
    fn lookup(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl EnvLookup for [(String, String)] {
    fn lookup(&self, key: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

/// No variables at all.
pub struct NoEnv;

impl EnvLookup for NoEnv {
    fn lookup(&self, _key: &str) -> Option<String> {
        None
    }
}

/// An ordered environment like BuildKit's `llb.EnvList`: setting a key again moves it to the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList {
    entries: Vec<(String, String)>,
}

impl EnvList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from `KEY=VALUE` strings (a key without `=` gets an empty value).
    pub fn from_kv_strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Self {
        let mut env = EnvList::new();
        for item in items {
            let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
            env.set(k, v);
        }
        env
    }

    /// Sets `key` (moving it to the end, as BuildKit's list does).
    pub fn set(&mut self, key: &str, value: &str) {
        self.entries.retain(|(k, _)| k != key);
        self.entries.push((key.to_string(), value.to_string()));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// `KEY=VALUE` strings in order, as an exec op's environment.
    pub fn to_vec(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

impl EnvLookup for EnvList {
    fn lookup(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }
}

/// A configured lexer. `Lexer::new('\\')` is BuildKit's default; the `escape` directive may pick
/// `` ` `` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character.
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding them to "".
    pub skip_unset_env: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
}

impl Lexer {
    /// A lexer with the given escape character and BuildKit's default switches.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `word` into one string (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn EnvLookup) -> Result<String, ExpandError> {
        self.process(word, env).map(|(w, _)| w)
    }

    /// Expands `word` and splits the result into words (BuildKit's `ProcessWords`): whitespace
    /// produced by unquoted text or variable values separates words, quoted whitespace does not.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Vec<String>, ExpandError> {
        self.process(word, env).map(|(_, ws)| ws)
    }

    fn process(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut sw = ShellWord {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
        };
        let raw_escapes = self.raw_escapes;
        sw.process_stop_on(None, raw_escapes).map_err(|e| {
            ExpandError(format!(
                "failed to process {}: {}",
                crate::error::go_quote(word),
                e.0
            ))
        })
    }
}

struct ShellWord<'a> {
    lex: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn EnvLookup,
}

#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ExpandError> {
    Err(ExpandError(msg.into()))
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if !self.lex.skip_process_quotes => Some(self.process_single_quote()?),
                '"' if !self.lex.skip_process_quotes => {
                    Some(self.process_double_quote(raw_escapes)?)
                }
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            self.next();
            let mut ch = ch;
            if ch == self.lex.escape {
                if raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(ch);
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(stop) = stop {
            return err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching single-quote",
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching double-quote",
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        if raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut result = String::from("<<");
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            result.push(c);
            self.next();
        }
        result
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.env.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return err("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return err("syntax error: bad substitution"),
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return err("syntax error: missing '}'");
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => {
                return Ok(match self.env.lookup(&name) {
                    Some(v) => v,
                    None if self.lex.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                });
            }
            '/' => return self.process_replace(&name),
            ':' | '+' | '-' | '?' | '#' | '%' => {}
            _ => return err(format!("unsupported modifier ({chs}) in substitution")),
        }
        if ch == ':' {
            null_is_unset = true;
            let Some(c) = self.next() else {
                return err("syntax error: missing '}'");
            };
            ch = c;
            chs.push(ch);
        }
        let raw_escapes = ch == '#' || ch == '%';
        if null_is_unset && raw_escapes {
            return err(format!("unsupported modifier ({chs}) in substitution"));
        }
        let word = match self.process_stop_on(Some('}'), raw_escapes) {
            Ok((w, _)) => w,
            Err(e) => {
                if self.peek().is_none() {
                    return err("syntax error: missing '}'");
                }
                return Err(e);
            }
        };
        let value = self.env.lookup(&name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let unset_or_null = !set || (null_is_unset && value.is_empty());
        match ch {
            '-' => Ok(if unset_or_null { word } else { value }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => {
                if !set {
                    let msg = if word.is_empty() {
                        "is not allowed to be unset".to_string()
                    } else {
                        word
                    };
                    return err(format!("{name}: {msg}"));
                }
                if null_is_unset && value.is_empty() {
                    let msg = if word.is_empty() {
                        "is not allowed to be empty".to_string()
                    } else {
                        word
                    };
                    return err(format!("{name}: {msg}"));
                }
                Ok(value)
            }
            '%' | '#' => {
                let (greedy, pattern) = match word.strip_prefix(ch) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                if ch == '%' {
                    trim_suffix(&pattern, &value, greedy)
                } else {
                    trim_prefix(&pattern, &value, greedy)
                }
            }
            _ => err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_replace(&mut self, name: &str) -> Result<String, ExpandError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.next();
        }
        let pattern = match self.process_stop_on(Some('/'), true) {
            Ok((w, _)) => w,
            Err(e) => {
                if self.peek().is_none() {
                    return err("syntax error: missing '/' in ${}");
                }
                return Err(e);
            }
        };
        let replacement = match self.process_stop_on(Some('}'), true) {
            Ok((w, _)) => w,
            Err(e) => {
                if self.peek().is_none() {
                    return err("syntax error: missing '}'");
                }
                return Err(e);
            }
        };
        let Some(value) = self.env.lookup(name) else {
            if self.lex.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let re = shell_pattern_to_regex(&pattern, true, false).map_err(|e| {
            ExpandError(format!("invalid pattern ({pattern}) in substitution: {e}"))
        })?;
        // Go's regexp ReplaceAllString expands `$1`-style references in the replacement too.
        Ok(if replace_all {
            re.replace_all(&value, replacement.as_str()).into_owned()
        } else {
            re.replace(&value, replacement.as_str()).into_owned()
        })
    }
}

/// Converts a shell glob (`*`, `?`, `\` escapes) to a regex, as BuildKit does for `#`, `%` and `/`.
fn shell_pattern_to_regex(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<regex::Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let tok = chars[i];
        i += 1;
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if matches!(chars.get(i), Some('}' | '/')) {
                    continue;
                }
                let next = chars.get(i).copied();
                i += 1;
                match next {
                    Some(c @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(c);
                    }
                    Some(c) => return Err(format!("invalid escape '\\{c}'")),
                    None => return Err("invalid escape '\\'".to_string()),
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    let re = shell_pattern_to_regex(pattern, greedy, true)
        .map_err(|e| ExpandError(format!("invalid pattern ({pattern}) in substitution: {e}")))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandError> {
    let pattern = reverse_pattern(pattern);
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&pattern, &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern keeping `\x` escape pairs in order.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            units.push(format!("\\{}", chars[i + 1]));
            i += 2;
        } else {
            units.push(chars[i].to_string());
            i += 1;
        }
    }
    units.reverse();
    units.concat()
}

#[cfg(test)]
#[path = "expand_tests.rs"]
mod tests;
