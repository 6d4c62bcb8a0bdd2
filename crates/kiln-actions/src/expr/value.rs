//! Runner value conversions: number parsing and printing, string conversion, truthiness and the
//! ordinal ignore-case string comparisons.

use serde_json::Value;
use std::cmp::Ordering;

/// The runner's `ParseNumber`: trimmed; empty is 0; decimal with optional sign, point and exponent;
/// `Infinity`/`-Infinity`/`NaN`; `0x` hex and `0o` octal as 32-bit integers (two's complement, like
/// .NET's `Int32` parsing); anything else is NaN.
pub(crate) fn parse_number(s: &str) -> f64 {
    let s = s.trim();
    if s.is_empty() {
        return 0.0;
    }
    if let Some(n) = parse_decimal(s) {
        return n;
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned.eq_ignore_ascii_case("infinity") {
        return if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    if s.eq_ignore_ascii_case("nan") {
        return f64::NAN;
    }
    let radix = if let Some(h) = s.strip_prefix("0x") {
        Some((h, 16))
    } else {
        s.strip_prefix("0o").map(|o| (o, 8))
    };
    if let Some((digits, radix)) = radix {
        if !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)) {
            if let Ok(v) = u64::from_str_radix(digits, radix) {
                if v <= u32::MAX as u64 {
                    return (v as u32 as i32) as f64;
                }
            }
        }
    }
    f64::NAN
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`
fn parse_decimal(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    // Rust's parser accepts this grammar except a bare trailing '.' before an exponent; normalise.
    let normalised = s.replace(".e", ".0e").replace(".E", ".0E");
    normalised.parse::<f64>().ok()
}

/// .NET `ToString("G15")`: 15 significant digits, trailing zeros dropped, scientific notation
/// (`1E+15`, `1E-05`) when the exponent is below -4 or at least 15. Negative zero prints as `0`
/// (the runner, on .NET Core, would print `-0`; we consider that noise).
pub fn format_number(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let sci = format!("{:.14e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent format");
    let exp: i32 = exp.parse().expect("exponent");
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let mut out = String::new();
    if x < 0.0 {
        out.push('-');
    }
    if exp > -5 && exp < 15 {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

/// The runner's string conversion: null → `''`, booleans → `true`/`false`, numbers as
/// [`format_number`], strings as is, arrays → `Array`, objects → `Object`.
pub fn to_display_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        Value::Array(_) => "Array".into(),
        Value::Object(_) => "Object".into(),
    }
}

/// Falsy: `false`, `0`, `-0`, `NaN`, `''`, `null`. Everything else (including empty arrays and
/// objects) is truthy.
pub fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            f != 0.0 && !f.is_nan()
        }
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Simple per-character upper-casing, an approximation of .NET's `OrdinalIgnoreCase`.
fn fold(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

pub(crate) fn fold_str(s: &str) -> String {
    s.chars().map(fold).collect()
}

pub(crate) fn cmp_ignore_case(a: &str, b: &str) -> Ordering {
    a.chars().map(fold).cmp(b.chars().map(fold))
}

pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b) || cmp_ignore_case(a, b) == Ordering::Equal
}
