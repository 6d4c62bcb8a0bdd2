//! Errors for workflow and action files: the file name, the location when known, the key path.

use std::fmt;

/// An error in a workflow or action file.
///
/// Displays as `file:line:column: path: message`, leaving out the parts that are not known
/// (`file: message` for an I/O error, `file:line: path: message` when the column is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The key path, e.g. `jobs.build.steps[1]`; empty for the document root or when unknown.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ModelError {
    /// An error without a location.
    pub fn new(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError {
            file: file.to_string(),
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Sets the 1-based line (and no column).
    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self.column = None;
        self
    }

    /// Builds an error from a YAML deserialization error and the key path tracked beside it.
    pub(crate) fn from_yaml(file: &str, path: String, err: &serde_yaml_ng::Error) -> Self {
        let (line, column) = match err.location() {
            // serde_yaml_ng reports line 1 column 1 as (1, 1) and a missing mark as (0, 0)
            // for some errors; keep only real positions.
            Some(loc) if loc.line() > 0 => (Some(loc.line()), Some(loc.column())),
            _ => (None, None),
        };
        let mut message = err.to_string();
        // The Display form ends with " at line L column C" and may start with serde_yaml_ng's
        // own path; both are reported separately here.
        if let (Some(l), Some(c)) = (line, column) {
            let suffix = format!(" at line {l} column {c}");
            if let Some(pos) = message.rfind(&suffix) {
                let rest = message[pos + suffix.len()..].to_string();
                message.truncate(pos);
                message.push_str(&rest);
            }
        }
        // serde_yaml_ng's own path (a prefix of ours, or ours with `[i]` left off).
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.is_empty() && !prefix.contains(' ') && path.starts_with(prefix) {
                message = rest.to_string();
            }
        }
        let mut path = path;
        while path.ends_with('?') {
            path.pop();
            if path.ends_with('.') {
                path.pop();
            }
        }
        if path == "." {
            path.clear();
        }
        // For an unknown field, report the map that holds it rather than the field itself.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(f, _)| f)
        {
            if let Some(parent) = path.strip_suffix(field).and_then(|p| p.strip_suffix('.')) {
                path = parent.to_string();
            } else if path == field {
                path.clear();
            }
        }
        ModelError {
            file: file.to_string(),
            line,
            column,
            path,
            message,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelError {}

/// Deserializes `text` as YAML into `T`, tracking the key path for errors.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ModelError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ModelError::from_yaml(file, path, e.inner())
    })
}

/// Best-effort 1-based line of a key in the text: each needle is searched for as a key
/// (`needle:` at the start of a trimmed line, or `- needle:`) after the line of the previous one.
pub(crate) fn locate(text: &str, needles: &[&str]) -> Option<usize> {
    let mut start = 0usize;
    let mut found = None;
    let lines: Vec<&str> = text.lines().collect();
    for needle in needles {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            let matches_key = |k: &str| {
                t.strip_prefix(k)
                    .is_some_and(|r| r.trim_start().starts_with(':'))
            };
            if matches_key(needle)
                || matches_key(&format!("\"{needle}\""))
                || matches_key(&format!("'{needle}'"))
            {
                hit = Some(i);
                break;
            }
        }
        let i = hit?;
        found = Some(i + 1);
        start = i + 1;
    }
    found
}
