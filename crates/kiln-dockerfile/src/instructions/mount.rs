//! `RUN --mount=...` options (BuildKit's `commands_runmount.go`).

use crate::error::Error;

/// The kind of a run mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`. String values are as written until lowering expands them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// `from=`: a stage name or image.
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: String,
    pub readonly: bool,
    /// `id=` (cache id, secret id, ssh id).
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub required: bool,
    /// tmpfs size in bytes, 0 = unlimited.
    pub size: i64,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(Error::msg(format!("invalid value for {key}: {value}"))),
    }
}

/// Splits a CSV field list honouring double quotes (`encoding/csv` for one record).
fn csv_fields(val: &str) -> Result<Vec<String>, Error> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = val.chars().peekable();
    let mut in_quotes = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_field_start = true;
                continue;
            }
            '"' if at_field_start => in_quotes = true,
            '"' => {
                return Err(Error::msg(format!(
                    "failed to parse csv mounts: bare \" in non-quoted-field: {val}"
                )))
            }
            c => cur.push(c),
        }
        at_field_start = false;
    }
    if in_quotes {
        return Err(Error::msg(format!(
            "failed to parse csv mounts: extraneous or missing \" in quoted-field: {val}"
        )));
    }
    fields.push(cur);
    Ok(fields)
}

/// Parses `units.RAMInBytes` sizes: `64m`, `1g`, `512kb`, `100` (binary multiples).
fn ram_in_bytes(s: &str) -> Option<i64> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0 && v < i64::MAX as f64).then_some(v as i64)
}

/// Parses one `--mount` value. `expand` is applied to every `key=value` value first (identity at
/// parse time; the stage environment when lowering).
pub(crate) fn parse_mount(
    val: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, Error>,
) -> Result<Mount, Error> {
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: String::new(),
        readonly: false,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: 0,
        env: None,
    };
    let mut ro_auto = true;
    for field in csv_fields(val)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(Error::msg(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    )));
                }
                _ => {
                    return Err(Error::msg(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )))
                }
            }
            continue;
        };
        if key == "from" {
            if let Some(idx) = value.find('$') {
                if idx != value.len() - 1 {
                    return Err(Error::msg(format!(
                        "'{key}' doesn't support variable expansion, define alias stage instead"
                    )));
                }
            }
        }
        let value = expand(&value)?;
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let mut msg =
                            format!("unsupported mount type {}", crate::error::go_quote(&value));
                        let all = ["bind", "cache", "tmpfs", "secret", "ssh"];
                        if let Some(s) = crate::error::did_you_mean(&value, all) {
                            msg.push_str(&format!(" (did you mean {s}?)"));
                        }
                        return Err(Error::msg(msg));
                    }
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(Error::msg(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    )));
                }
                m.required = parse_bool(&key, &value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(Error::msg(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    )));
                }
                m.size = ram_in_bytes(&value)
                    .ok_or_else(|| Error::msg(format!("invalid value for {key}: {value}")))?;
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(Error::msg(format!(
                            "unsupported sharing value {}",
                            crate::error::go_quote(&value)
                        )))
                    }
                })
            }
            "mode" => {
                let mode = u32::from_str_radix(&value, 8)
                    .map_err(|_| Error::msg(format!("invalid value {value} for mode")))?;
                m.mode = Some(mode);
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| Error::msg(format!("invalid value {value} for uid")))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| Error::msg(format!("invalid value {value} for gid")))?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                let all = [
                    "type",
                    "from",
                    "source",
                    "target",
                    "readonly",
                    "id",
                    "sharing",
                    "required",
                    "size",
                    "mode",
                    "uid",
                    "gid",
                    "src",
                    "dst",
                    "destination",
                    "ro",
                    "rw",
                    "readwrite",
                    "env",
                ];
                let mut msg = format!("unexpected key '{key}' in '{field}'");
                if let Some(s) = crate::error::did_you_mean(&key, all) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(Error::msg(msg));
            }
        }
    }
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        let t = m.kind.as_str();
        if m.mode.is_some() {
            return Err(Error::msg(format!(
                "mode not allowed for \"{t}\" type mounts"
            )));
        }
        if m.uid.is_some() {
            return Err(Error::msg(format!(
                "uid not allowed for \"{t}\" type mounts"
            )));
        }
        if m.gid.is_some() {
            return Err(Error::msg(format!(
                "gid not allowed for \"{t}\" type mounts"
            )));
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(Error::msg("secret mount should not have a from"));
        }
        if m.sharing.is_some() {
            return Err(Error::msg("secret mount should not define sharing"));
        }
        if m.source.is_none() && m.target.is_empty() && m.id.is_none() {
            return Err(Error::msg(
                "invalid secret mount. one of source, target required",
            ));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(Error::msg("both source and id can't be set"));
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(Error::msg(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        )));
    }
    Ok(m)
}

#[cfg(test)]
#[path = "mount_tests.rs"]
mod tests;
