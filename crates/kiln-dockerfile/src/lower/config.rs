//! Helpers that turn instruction values into image-config values the way BuildKit formats them.

use std::collections::BTreeMap;

use bollard_buildkit_proto::pb;

use crate::error::Error;
use crate::paths;

pub(crate) fn add_env(env: &mut Vec<String>, k: &str, v: &str) {
    let entry = format!("{k}={v}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) == k)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

pub(crate) fn proxy_env(args: &BTreeMap<String, String>) -> Option<pb::ProxyEnv> {
    let mut pe = pb::ProxyEnv::default();
    let mut set = false;
    for (k, v) in args {
        let slot = match k.to_ascii_lowercase().as_str() {
            "http_proxy" => &mut pe.http_proxy,
            "https_proxy" => &mut pe.https_proxy,
            "ftp_proxy" => &mut pe.ftp_proxy,
            "no_proxy" => &mut pe.no_proxy,
            "all_proxy" => &mut pe.all_proxy,
            _ => continue,
        };
        slot.clone_from(v);
        set = true;
    }
    set.then_some(pe)
}

/// EXPOSE specs → `port/proto` keys, ranges expanded.
pub(crate) fn parse_ports(words: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for w in words {
        let (port, proto) = match w.split_once('/') {
            Some((p, proto)) => (p, proto.to_ascii_lowercase()),
            None => (w.as_str(), "tcp".to_string()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(Error::msg(format!(
                "invalid port: {}: invalid proto: {proto}",
                crate::error::go_quote(w)
            )));
        }
        let port = port.rsplit(':').next().unwrap_or(port);
        let parse = |s: &str| {
            s.parse::<u16>()
                .map_err(|_| Error::msg(format!("invalid containerPort: {w}")))
        };
        let (start, end) = match port.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(port)?, parse(port)?),
        };
        if end < start {
            return Err(Error::msg(format!(
                "invalid range specified for containerPort: {w}"
            )));
        }
        for p in start..=end {
            let spec = format!("{p}/{proto}");
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
    }
    Ok(out)
}

pub(crate) fn validate_signal(raw: &str) -> Result<(), Error> {
    if let Ok(n) = raw.parse::<i64>() {
        return if n <= 0 {
            Err(Error::msg(format!("Invalid signal: {raw}")))
        } else {
            Ok(())
        };
    }
    let name = raw.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    const KNOWN: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    let rt = |p: &str, sign: char| {
        name.strip_prefix(p)
            .and_then(|r| r.strip_prefix(sign))
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    if KNOWN.contains(&name) || rt("RTMIN", '+') || rt("RTMAX", '-') {
        Ok(())
    } else {
        Err(Error::msg(format!("Invalid signal: {raw}")))
    }
}

/// Go's `time.Duration.String` for the durations a HEALTHCHECK has.
pub(crate) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let frac = |v: u64, digits: u32| -> String {
        let div = 10u64.pow(digits);
        let (w, f) = (v / div, v % div);
        if f == 0 {
            w.to_string()
        } else {
            let s = format!("{f:0width$}", width = digits as usize);
            format!("{w}.{}", s.trim_end_matches('0'))
        }
    };
    let s = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 6))
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s = frac(u % 60_000_000_000, 9);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Seconds since the epoch → RFC 3339 UTC (`2021-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// `system.NormalizeWorkdir`: relative paths resolve against the current working directory.
pub(crate) fn normalize_workdir(current: &str, requested: &str) -> Option<String> {
    if requested.is_empty() {
        if current.is_empty() {
            return None;
        }
        return Some(paths::clean(&format!("/{current}")));
    }
    let cleaned = paths::clean(requested);
    if cleaned.starts_with('/') {
        return Some(cleaned);
    }
    let cur = if current.is_empty() { "/" } else { current };
    Some(paths::join(&["/", cur, &cleaned]))
}
