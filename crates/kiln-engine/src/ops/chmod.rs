//! The mode a copy gives its files (`COPY --chmod=…`): an octal mode, or a symbolic one
//! (`u=rw,g=r,o=`, `go-w`, `a+X`) applied to each source file's own mode, as chmod(1) does.

/// How copied files get their mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModeSpec {
    /// Keep the source's mode.
    Keep,
    /// This mode, setuid/setgid/sticky bits included.
    Octal(u32),
    /// Symbolic clauses applied to the source's mode.
    Symbolic(String),
}

impl ModeSpec {
    /// From a copy action's `mode` (-1: keep) and `modeStr` (octal or symbolic).
    pub(crate) fn new(mode: i32, mode_str: &str) -> Result<ModeSpec, String> {
        if !mode_str.is_empty() {
            if let Ok(m) = u32::from_str_radix(mode_str, 8) {
                return Ok(ModeSpec::Octal(m & 0o7777));
            }
            // Validate once, so a bad clause fails the step instead of each file.
            apply_symbolic(mode_str, 0o644, false)?;
            return Ok(ModeSpec::Symbolic(mode_str.to_string()));
        }
        Ok(if mode >= 0 {
            ModeSpec::Octal(mode as u32 & 0o7777)
        } else {
            ModeSpec::Keep
        })
    }

    /// The mode for a file whose source mode is `source` (permission and special bits).
    pub(crate) fn for_source(&self, source: u32, is_dir: bool) -> u32 {
        match self {
            ModeSpec::Keep => source & 0o7777,
            ModeSpec::Octal(m) => *m,
            ModeSpec::Symbolic(s) => apply_symbolic(s, source & 0o7777, is_dir).unwrap_or(source),
        }
    }
}

/// chmod(1)'s symbolic modes: clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma-separated; no
/// `who` means all (kiln has no umask to honour).
fn apply_symbolic(spec: &str, mut mode: u32, is_dir: bool) -> Result<u32, String> {
    let bad = || format!("invalid chmod parameter: '{spec}'");
    for clause in spec.split(',') {
        let who_len = clause
            .find(|c: char| !"ugoa".contains(c))
            .unwrap_or(clause.len());
        let (who, mut rest) = clause.split_at(who_len);
        let mut mask = 0u32;
        for c in who.chars() {
            mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                _ => 0o7777,
            };
        }
        if who.is_empty() {
            mask = 0o7777;
        }
        if rest.is_empty() {
            return Err(bad());
        }
        while let Some(op) = rest.chars().next().filter(|c| "+-=".contains(*c)) {
            rest = &rest[1..];
            let end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
            let (perms, tail) = rest.split_at(end);
            rest = tail;
            let mut bits = 0u32;
            for p in perms.chars() {
                bits |= match p {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    'X' => 0,
                    's' => 0o6000,
                    't' => 0o1000,
                    // Copy another class's permissions to the selected ones.
                    'u' => ((mode >> 6) & 7) * 0o111,
                    'g' => ((mode >> 3) & 7) * 0o111,
                    'o' => (mode & 7) * 0o111,
                    _ => return Err(bad()),
                };
            }
            let bits = bits & mask;
            mode = match op {
                '+' => mode | bits,
                '-' => mode & !bits,
                _ => (mode & !(mask & 0o777 | mask & 0o7000)) | bits,
            };
        }
        if !rest.is_empty() {
            return Err(bad());
        }
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_modes_follow_chmod() {
        assert_eq!(apply_symbolic("u=rw,g=r,o=", 0o755, false), Ok(0o640));
        assert_eq!(apply_symbolic("go-w", 0o777, false), Ok(0o755));
        assert_eq!(apply_symbolic("a+X", 0o644, true), Ok(0o755));
        assert_eq!(apply_symbolic("a+X", 0o644, false), Ok(0o644));
        assert_eq!(apply_symbolic("a+X", 0o744, false), Ok(0o755));
        assert_eq!(apply_symbolic("u+s", 0o755, false), Ok(0o4755));
        assert_eq!(apply_symbolic("+t", 0o755, true), Ok(0o1755));
        assert_eq!(apply_symbolic("g=u", 0o740, false), Ok(0o770));
        assert_eq!(apply_symbolic("u+x,g+w-r", 0o644, false), Ok(0o724));
        assert!(apply_symbolic("u+q", 0o644, false).is_err());
        assert!(apply_symbolic("z", 0o644, false).is_err());
    }

    #[test]
    fn octal_modes_keep_special_bits() {
        let m = ModeSpec::new(-1, "4755").unwrap();
        assert_eq!(m.for_source(0o644, false), 0o4755);
        assert_eq!(
            ModeSpec::new(0o755, "").unwrap().for_source(0o600, false),
            0o755
        );
        assert_eq!(
            ModeSpec::new(-1, "").unwrap().for_source(0o100600, false),
            0o600
        );
    }
}
