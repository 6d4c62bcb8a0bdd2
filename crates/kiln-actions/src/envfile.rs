//! The files a step writes to talk to the runner: `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`
//! (`NAME=value` lines or the multi-line `NAME<<DELIMITER` form) and `GITHUB_PATH` (one directory per
//! line).

/// Why an env file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvFileError {
    #[error("line {line}: invalid format {text:?}: expected NAME=value or NAME<<DELIMITER")]
    Invalid { line: usize, text: String },
    #[error("line {line}: the value of {name} has no closing delimiter {delimiter:?}")]
    Unterminated {
        line: usize,
        name: String,
        delimiter: String,
    },
    #[error("line {line}: empty name")]
    EmptyName { line: usize },
}

/// Parse the `NAME=value` / `NAME<<DELIM` format into pairs in file order (later pairs win when the
/// caller inserts them into a map, as the runner does).
pub fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let number = i + 1;
        i += 1;
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let name = &line[..e];
                if name.is_empty() {
                    return Err(EnvFileError::EmptyName { line: number });
                }
                out.push((name.to_string(), line[e + 1..].to_string()));
            }
            (_, Some(h)) => {
                let name = &line[..h];
                let delimiter = &line[h + 2..];
                if name.is_empty() {
                    return Err(EnvFileError::EmptyName { line: number });
                }
                if delimiter.is_empty() {
                    return Err(EnvFileError::Invalid {
                        line: number,
                        text: line.to_string(),
                    });
                }
                let mut value = Vec::new();
                loop {
                    if i >= lines.len() {
                        return Err(EnvFileError::Unterminated {
                            line: number,
                            name: name.to_string(),
                            delimiter: delimiter.to_string(),
                        });
                    }
                    let l = lines[i];
                    i += 1;
                    if l == delimiter {
                        break;
                    }
                    value.push(l);
                }
                out.push((name.to_string(), value.join("\n")));
            }
            _ => {
                return Err(EnvFileError::Invalid {
                    line: number,
                    text: line.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// `GITHUB_PATH`: the directories in the order they must be prepended (the last line written ends up
/// first on `PATH`, as with the runner's successive prepends).
pub fn parse_path_file(text: &str) -> Vec<String> {
    let mut dirs: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    dirs.reverse();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn key_values() {
        let text = "A=1\nB=x=y\r\n\nC<<EOF\nline 1\n\nline=3\nEOF\nD=\nE<<a<<b\nz\na<<b\n";
        assert_eq!(
            parse_key_values(text).unwrap(),
            pairs(&[
                ("A", "1"),
                ("B", "x=y"),
                ("C", "line 1\n\nline=3"),
                ("D", ""),
                ("E", "z")
            ])
        );
        // `=` before `<<` is a plain value.
        assert_eq!(parse_key_values("X=a<<b").unwrap(), pairs(&[("X", "a<<b")]));
        assert_eq!(parse_key_values("").unwrap(), vec![]);
    }

    #[test]
    fn key_value_errors() {
        assert_eq!(
            parse_key_values("ok=1\nnonsense\n").unwrap_err(),
            EnvFileError::Invalid {
                line: 2,
                text: "nonsense".into()
            }
        );
        assert_eq!(
            parse_key_values("A<<EOF\nx\n").unwrap_err(),
            EnvFileError::Unterminated {
                line: 1,
                name: "A".into(),
                delimiter: "EOF".into()
            }
        );
        assert_eq!(
            parse_key_values("=x").unwrap_err(),
            EnvFileError::EmptyName { line: 1 }
        );
    }

    #[test]
    fn path_file() {
        assert_eq!(parse_path_file("/a\n\n /b \n/c\n"), vec!["/c", "/b", "/a"]);
    }
}
