//! Workflow commands: the `::name key=value,...::message` lines a step prints to talk to the runner.
//!
//! Escaping follows the runner: in the message `%25`, `%0D` and `%0A` stand for `%`, CR and LF; property
//! values additionally use `%3A` for `:` and `%2C` for `,`.

use std::collections::BTreeMap;

/// One parsed workflow command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command name as written, lower-cased (`add-mask`, `group`, `set-output`, ...).
    pub name: String,
    /// Properties (`file=app.js,line=3`), keys as written.
    pub properties: BTreeMap<String, String>,
    /// The message after the second `::`, unescaped.
    pub message: String,
}

impl Command {
    /// Parse a line of step output. Returns `None` for lines that are not commands. Leading whitespace
    /// is allowed, as the runner allows it.
    pub fn parse(line: &str) -> Option<Command> {
        let line = line.trim_start();
        let rest = line.strip_prefix("::")?;
        let end = rest.find("::")?;
        let (head, message) = (&rest[..end], &rest[end + 2..]);
        let (name, props) = match head.split_once(' ') {
            Some((name, props)) => (name, props),
            None => (head, ""),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return None;
        }
        let mut properties = BTreeMap::new();
        for pair in props.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                properties.insert(k.trim().to_string(), unescape_property(v));
            }
        }
        Some(Command {
            name: name.to_ascii_lowercase(),
            properties,
            message: unescape_data(message.trim_end_matches(['\r', '\n'])),
        })
    }

    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }
}

/// Unescape a command message.
pub fn unescape_data(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%25", "%")
}

/// Unescape a command property value.
pub fn unescape_property(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
}

/// What a line of step output is, once `::stop-commands::` is taken into account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Plain output (also every line while commands are stopped).
    Output,
    /// A workflow command to act on.
    Command(Command),
    /// `::stop-commands::TOKEN` or the `::TOKEN::` that resumes: consumed, not shown.
    Consumed,
}

/// Tracks `::stop-commands::TOKEN` … `::TOKEN::`: while stopped, no line is a command.
#[derive(Debug, Default)]
pub struct CommandGate {
    stop_token: Option<String>,
}

impl CommandGate {
    /// Classify `line`, handling `stop-commands` and the resume line itself.
    pub fn parse(&mut self, line: &str) -> Line {
        if let Some(token) = &self.stop_token {
            if line.trim() == format!("::{token}::") {
                self.stop_token = None;
                return Line::Consumed;
            }
            return Line::Output;
        }
        let Some(command) = Command::parse(line) else {
            return Line::Output;
        };
        if command.name == "stop-commands" {
            if !command.message.is_empty() {
                self.stop_token = Some(command.message.clone());
            }
            return Line::Consumed;
        }
        Line::Command(command)
    }

    pub fn stopped(&self) -> bool {
        self.stop_token.is_some()
    }
}

/// The row act_runner writes for an annotation (`::error file=a.go,line=3,col=5,title=vet::x`
/// becomes `::error::a.go:3:5: vet: x`): Gitea's UI drops the properties, so the location moves
/// into the message. The message stays escaped, as the UI decodes it once.
pub fn annotation_row(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix("::")?;
    let end = rest.find("::")?;
    let (head, message) = (&rest[..end], &rest[end + 2..]);
    let (name, props) = head.split_once(' ').unwrap_or((head, ""));
    let level = name.to_ascii_lowercase();
    if !matches!(level.as_str(), "notice" | "warning" | "error") {
        return None;
    }
    let mut properties = BTreeMap::new();
    for pair in props.split(',') {
        if let Some((k, v)) = pair.split_once('=') {
            // Only the separators are decoded here; the UI decodes the rest.
            let v = v.replace("%3A", ":").replace("%2C", ",");
            properties.insert(k.trim().to_ascii_lowercase(), v);
        }
    }
    let column = properties
        .get("col")
        .or_else(|| properties.get("column"))
        .filter(|c| !c.is_empty());
    let mut prefix = String::new();
    if let Some(file) = properties.get("file").filter(|f| !f.is_empty()) {
        prefix.push_str(file);
        if let Some(line) = properties.get("line").filter(|l| !l.is_empty()) {
            prefix.push(':');
            prefix.push_str(line);
            if let Some(col) = column {
                prefix.push(':');
                prefix.push_str(col);
            }
        }
        prefix.push_str(": ");
    }
    if let Some(title) = properties.get("title").filter(|t| !t.is_empty()) {
        prefix.push_str(title);
        prefix.push_str(": ");
    }
    Some(format!(
        "::{level}::{prefix}{}",
        message.trim_end_matches(['\r', '\n'])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        let c = Command::parse("::error file=app.js,line=10,col=15::Something went wrong").unwrap();
        assert_eq!(c.name, "error");
        assert_eq!(c.property("file"), Some("app.js"));
        assert_eq!(c.property("line"), Some("10"));
        assert_eq!(c.property("col"), Some("15"));
        assert_eq!(c.message, "Something went wrong");

        let c = Command::parse("::set-output name=x%3Ay%2Cz::a%0Ab%25").unwrap();
        assert_eq!(c.property("name"), Some("x:y,z"));
        assert_eq!(c.message, "a\nb%");

        let c = Command::parse("  ::group::Build it").unwrap();
        assert_eq!((c.name.as_str(), c.message.as_str()), ("group", "Build it"));
        assert_eq!(Command::parse("::endgroup::").unwrap().name, "endgroup");
        assert_eq!(Command::parse("::ADD-MASK::x").unwrap().name, "add-mask");
    }

    #[test]
    fn rejects_non_commands() {
        for line in [
            "hello",
            ":: x::y",
            "::nope",
            "::bad!name::x",
            "::::x",
            "a ::debug::x",
        ] {
            assert_eq!(Command::parse(line), None, "{line}");
        }
    }

    #[test]
    fn stop_commands() {
        let mut gate = CommandGate::default();
        assert_eq!(gate.parse("::stop-commands::pause-123"), Line::Consumed);
        assert!(gate.stopped());
        assert_eq!(gate.parse("::add-mask::secret"), Line::Output);
        assert_eq!(gate.parse("::pause-123::"), Line::Consumed);
        assert!(!gate.stopped());
        assert!(matches!(gate.parse("::debug::x"), Line::Command(c) if c.name == "debug"));
        assert_eq!(gate.parse("plain"), Line::Output);
    }

    #[test]
    fn annotation_rows_carry_their_location_as_act_runner_writes_them() {
        for (line, row) in [
            (
                "::error file=main.go,line=12,col=5,title=vet::undefined: x",
                Some("::error::main.go:12:5: vet: undefined: x"),
            ),
            ("::warning::plain", Some("::warning::plain")),
            (
                "::notice file=a%2Cb.txt,line=3::two%0Alines",
                Some("::notice::a,b.txt:3: two%0Alines"),
            ),
            ("::error file=f,col=2::no line", Some("::error::f: no line")),
            ("::Error title=T::x", Some("::error::T: x")),
            ("::debug::x", None),
            ("plain", None),
        ] {
            assert_eq!(annotation_row(line).as_deref(), row, "{line}");
        }
    }
}
