//! The one error type of the crate: every failure names the Dockerfile and line it is about.

use std::fmt;

/// A parse, expansion or lowering error located in a Dockerfile.
///
/// Displays as `Dockerfile:<line>: <message>` (BuildKit's wording); `line` is 1-based and 0 when
/// the error is not about one line (for example an unknown `--target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file name used in messages (`Dockerfile` unless [`crate::parse_named`] said otherwise).
    pub file: String,
    /// 1-based line of the instruction the error is about; 0 when it is about no line.
    pub line: usize,
    /// What went wrong, without the location prefix.
    pub message: String,
    /// Raised while parsing an instruction: shown as BuildKit's `dockerfile parse error on
    /// line N: …` rather than `Dockerfile:N: …`.
    pub parse: bool,
}

impl Error {
    pub(crate) fn new(file: &str, line: usize, message: impl Into<String>) -> Self {
        Error {
            file: file.to_string(),
            line,
            message: message.into(),
            parse: false,
        }
    }

    /// An error not yet tied to a file; [`Error::at`] or the caller fills the location in.
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        Error {
            file: String::new(),
            line: 0,
            message: message.into(),
            parse: false,
        }
    }

    /// Sets the location unless one is already set (inner locations are more precise).
    /// Marks an error of instruction parsing at `line` (see [`Error::parse`]).
    pub(crate) fn parsing(mut self, line: usize) -> Self {
        self.parse = true;
        self.at("", line)
    }

    pub(crate) fn at(mut self, file: &str, line: usize) -> Self {
        if self.file.is_empty() {
            self.file = file.to_string();
        }
        if self.line == 0 {
            self.line = line;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = if self.file.is_empty() {
            "Dockerfile"
        } else {
            &self.file
        };
        if self.parse && self.line > 0 {
            write!(
                f,
                "dockerfile parse error on line {}: {}",
                self.line, self.message
            )
        } else if self.line == 0 {
            write!(f, "{file}: {}", self.message)
        } else {
            write!(f, "{file}:{}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::expand::ExpandError> for Error {
    fn from(e: crate::expand::ExpandError) -> Self {
        Error::msg(e.0)
    }
}

/// Suggests the closest candidate when it is close enough ("did you mean ...?").
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = levenshtein(&word, &c.to_ascii_lowercase());
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    match best {
        Some((c, d)) if d > 0 && d <= 2.max(word.chars().count() / 3) => Some(c),
        _ => None,
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Go's `strconv.Quote`, used where BuildKit formats with `%q` (history entries, errors).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `json.Marshal` of a `[]string` (HTML-escaping `<`, `>`, `&` like Go does), so attrs are
/// byte-identical to BuildKit's.
pub(crate) fn go_json_strings(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '<' => out.push_str("\\u003c"),
                '>' => out.push_str("\\u003e"),
                '&' => out.push_str("\\u0026"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}
