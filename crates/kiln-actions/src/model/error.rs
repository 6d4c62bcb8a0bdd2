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

    /// Sets the location to that of the node at `path` in `text`, when it can be found.
    pub(crate) fn located(mut self, text: &str) -> Self {
        if let Some((line, column)) = locate_path(text, &self.path) {
            self.line = Some(line);
            self.column = Some(column);
        }
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
        let mut err = ModelError::from_yaml(file, path, e.inner());
        // Errors raised once a map is read (a step with both `run` and `uses`, `runs`
        // checks) carry the mark of an enclosing node; point at the node itself.
        if let Some((line, column)) = locate_path(text, &err.path) {
            if err
                .line
                .is_none_or(|l| (l, err.column.unwrap_or(0)) < (line, column))
            {
                err.line = Some(line);
                err.column = Some(column);
            }
        }
        err
    })
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            out.push(Segment::Index(r[..end].parse().ok()?));
            rest = &r[end + 1..];
        }
    }
    Some(out)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Best-effort 1-based (line, column) of the node at a key path (`jobs.build.steps[1]`) in
/// block-style YAML: the key for a map entry, the item's content for a list item. `None` when
/// the path cannot be followed (flow style, odd layouts).
pub(crate) fn locate_path(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let segs = segments(path)?;
    // The current node: its first line, the column its content starts at, and its end line.
    let first = lines.iter().position(|l| !is_blank(l))?;
    let (mut line, mut col, mut end) = (first, indent(lines[first]), lines.len());
    let mut found = (line, col);
    for seg in segs {
        // Lines of the node that start an entry at its column (the first one may be inline).
        let starts_at = |i: usize| -> Option<&str> {
            let l = lines[i];
            if i == line {
                l.get(col..)
            } else if !is_blank(l) && indent(l) == col {
                Some(&l[col..])
            } else {
                None
            }
        };
        match seg {
            Segment::Key(key) => {
                let hit = (line..end).find(|&i| {
                    starts_at(i).is_some_and(|t| {
                        [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
                            .iter()
                            .any(|k| {
                                t.strip_prefix(k.as_str())
                                    .is_some_and(|r| r.trim_start().starts_with(':'))
                            })
                    })
                })?;
                found = (hit, col);
                let after = lines[hit][col..].split_once(':')?.1;
                let next = (hit + 1..end).find(|&i| !is_blank(lines[i]));
                let child = match next {
                    Some(n)
                        if indent(lines[n]) > col
                            || (indent(lines[n]) == col
                                && lines[n][col..].starts_with('-')
                                && after.trim().is_empty()) =>
                    {
                        n
                    }
                    _ => {
                        // An inline value: the node is the rest of the line.
                        let vcol = lines[hit].len() - after.trim_start().len();
                        line = hit;
                        col = vcol;
                        end = hit + 1;
                        continue;
                    }
                };
                let ccol = indent(lines[child]);
                let seq_same_indent = ccol == col;
                let cend = (child + 1..end)
                    .find(|&i| {
                        !is_blank(lines[i])
                            && (indent(lines[i]) < ccol
                                || (seq_same_indent
                                    && indent(lines[i]) == ccol
                                    && !lines[i][ccol..].starts_with('-')))
                    })
                    .unwrap_or(end);
                line = child;
                col = ccol;
                end = cend;
            }
            Segment::Index(index) => {
                let items: Vec<usize> = (line..end)
                    .filter(|&i| starts_at(i).is_some_and(|t| t == "-" || t.starts_with("- ")))
                    .collect();
                let item = *items.get(index)?;
                let iend = items.get(index + 1).copied().unwrap_or(end);
                let rest = &lines[item][col + 1..];
                if rest.trim().is_empty() {
                    let n = (item + 1..iend).find(|&i| !is_blank(lines[i]))?;
                    line = n;
                    col = indent(lines[n]);
                } else {
                    line = item;
                    col = lines[item].len() - rest.trim_start().len();
                }
                end = iend;
                found = (line, col);
            }
        }
    }
    Some((found.0 + 1, found.1 + 1))
}

#[cfg(test)]
mod tests {
    use super::locate_path;

    const TEXT: &str = "# comment
on: push
jobs:
  \"build\":
    runs-on: x
    steps:
    - run: a

    -
      uses: b
      with: {x: 1}
  test:
    steps: [{run: a}]
";

    #[test]
    fn locates_keys_and_items() {
        assert_eq!(locate_path(TEXT, "on"), Some((2, 1)));
        assert_eq!(locate_path(TEXT, "jobs"), Some((3, 1)));
        assert_eq!(locate_path(TEXT, "jobs.build"), Some((4, 3)));
        assert_eq!(locate_path(TEXT, "jobs.build.runs-on"), Some((5, 5)));
        assert_eq!(locate_path(TEXT, "jobs.build.steps[0]"), Some((7, 7)));
        assert_eq!(locate_path(TEXT, "jobs.build.steps[1]"), Some((10, 7)));
        assert_eq!(locate_path(TEXT, "jobs.build.steps[1].with"), Some((11, 7)));
        assert_eq!(locate_path(TEXT, "jobs.test.steps"), Some((13, 5)));
        // Flow style cannot be followed.
        assert_eq!(locate_path(TEXT, "jobs.test.steps[0]"), None);
        assert_eq!(locate_path(TEXT, "jobs.build.steps[2]"), None);
        assert_eq!(locate_path(TEXT, "jobs.nope"), None);
    }
}
