//! `--flag` parsing with BuildKit's `BFlags` rules and messages.

use crate::error::Error;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    String,
    Strings,
}

/// Declared flags of one instruction and the values found.
pub(super) struct Flags {
    declared: Vec<(&'static str, Kind)>,
    values: Vec<(&'static str, String)>,
}

impl Flags {
    pub(super) fn new(declared: &[(&'static str, Kind)]) -> Self {
        Flags {
            declared: declared.to_vec(),
            values: Vec::new(),
        }
    }

    pub(super) fn parse(&mut self, args: &[String]) -> Result<(), Error> {
        for arg in args {
            let Some(arg) = arg.strip_prefix("--") else {
                return Err(Error::msg(format!("arg should start with -- : {arg}")));
            };
            if arg.is_empty() {
                return Ok(());
            }
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let Some(&(decl, kind)) = self.declared.iter().find(|(n, _)| *n == name) else {
                let mut msg = format!("unknown flag: --{name}");
                if let Some(s) =
                    crate::error::did_you_mean(name, self.declared.iter().map(|(n, _)| *n))
                {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(Error::msg(msg));
            };
            if kind != Kind::Strings && self.values.iter().any(|(n, _)| *n == decl) {
                return Err(Error::msg(format!("duplicate flag specified: {name}")));
            }
            let value = match kind {
                Kind::Bool => match value {
                    Some("") => return Err(Error::msg(format!("missing a value on flag: {name}"))),
                    None => "true".to_string(),
                    Some(v) => match v.to_ascii_lowercase().as_str() {
                        "true" => "true".to_string(),
                        "false" => "false".to_string(),
                        _ => {
                            return Err(Error::msg(format!(
                                "expecting boolean value for flag {name}, not: {v}"
                            )));
                        }
                    },
                },
                Kind::String | Kind::Strings => match value {
                    Some(v) => v.to_string(),
                    None => return Err(Error::msg(format!("missing a value on flag: {name}"))),
                },
            };
            self.values.push((decl, value));
        }
        Ok(())
    }

    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    /// A string flag, treating an empty value like an absent one (as BuildKit's `flag.Value == ""`).
    pub(super) fn non_empty(&self, name: &str) -> Option<String> {
        self.string(name).filter(|v| !v.is_empty())
    }

    pub(super) fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(super) fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }

    pub(super) fn opt_bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}
