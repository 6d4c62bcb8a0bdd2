//! YAML written the way Gitea writes a job payload: Go's `gopkg.in/yaml.v3` `Marshal` (indent 4,
//! block style, its quoting rules and its libyaml emitter's scalar styles).
//!
//! Mirrors `yaml.v3`'s `encoder.stringv`/`floatv` and libyaml's `yaml_emitter_analyze_scalar` /
//! `yaml_emitter_select_scalar_style` closely enough that a reader sees the same values; it does
//! not fold plain scalars longer than 80 columns (yaml.v3 does; the value read back is the same)
//! and writes flow-style input (`[a, b]`) in block style (yaml.v3 keeps a `yaml.Node`'s style).

/// A value as Go's yaml.v3 encodes it; maps keep the order given (Go maps are sorted by the
/// caller, `yaml.Node` mappings keep the document's order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Y {
    Null,
    Bool(bool),
    /// A number, already formatted (plain style).
    Num(String),
    Str(String),
    Seq(Vec<Y>),
    Map(Vec<(Y, Y)>),
}

/// yaml.v3's default indentation for `Marshal`.
const BEST_INDENT: usize = 4;

/// The document text of `root` (a mapping), ending with a newline.
pub(crate) fn to_string(root: &Y) -> String {
    let mut out = String::new();
    match root {
        Y::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0, false),
        Y::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0, false),
        other => {
            write_scalar_or_empty(&mut out, other, 0, BEST_INDENT, false);
            out.push('\n');
        }
    }
    out
}

/// libyaml's `yaml_emitter_increase_indent_compact` as patched by yaml.v3: a collection inside a
/// sequence item sits right after the `- `, anything else aligns to the next multiple of 4.
fn child_indent(indent: usize, in_seq_item: bool) -> usize {
    if in_seq_item {
        indent + 2
    } else {
        BEST_INDENT * ((indent + BEST_INDENT) / BEST_INDENT)
    }
}

fn pad(out: &mut String, to: usize) {
    let col = out.len() - out.rfind('\n').map(|i| i + 1).unwrap_or(0);
    for _ in col..to {
        out.push(' ');
    }
}

/// Writes a block mapping whose keys sit at `indent`; `inline_first` = the first key follows a
/// `- ` already written.
fn write_map(out: &mut String, entries: &[(Y, Y)], indent: usize, inline_first: bool) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        write_key(out, k);
        out.push(':');
        write_value(out, v, indent, false);
    }
}

/// Writes a block sequence whose `- ` sits at `indent`.
fn write_seq(out: &mut String, items: &[Y], indent: usize, inline_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(out, indent);
        }
        out.push('-');
        match item {
            Y::Map(e) if !e.is_empty() => {
                out.push(' ');
                write_map(out, e, child_indent(indent, true), true);
            }
            Y::Seq(s) if !s.is_empty() => {
                out.push(' ');
                write_seq(out, s, child_indent(indent, true), true);
            }
            other => write_value(out, other, indent, true),
        }
    }
}

/// After `key:` or `-`: a nested collection on the next lines, or ` scalar` and a newline.
fn write_value(out: &mut String, v: &Y, indent: usize, in_seq_item: bool) {
    match v {
        Y::Map(e) if !e.is_empty() => {
            out.push('\n');
            write_map(out, e, child_indent(indent, in_seq_item), false);
        }
        Y::Seq(s) if !s.is_empty() => {
            out.push('\n');
            write_seq(out, s, child_indent(indent, in_seq_item), false);
        }
        other => {
            out.push(' ');
            let content = child_indent(indent, in_seq_item);
            write_scalar_or_empty(out, other, indent, content, false);
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
}

fn write_key(out: &mut String, k: &Y) {
    write_scalar_or_empty(out, k, 0, 0, true);
}

/// A scalar (or `[]`/`{}`); a literal block's lines go at `content`, its parent node sits at
/// `parent`.
fn write_scalar_or_empty(out: &mut String, v: &Y, parent: usize, content: usize, simple_key: bool) {
    match v {
        Y::Null => out.push_str("null"),
        Y::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Y::Num(n) => out.push_str(n),
        Y::Seq(_) => out.push_str("[]"),
        Y::Map(_) => out.push_str("{}"),
        Y::Str(s) => write_string(out, s, parent, content, simple_key),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// yaml.v3 `encoder.stringv` picks plain unless the text would read back as another type (or is
/// multi-line: literal); libyaml then falls back to single and double quotes as its analysis of
/// the text requires.
fn write_string(out: &mut String, s: &str, parent: usize, content: usize, simple_key: bool) {
    let requested = if s.contains('\n') {
        Style::Literal
    } else if resolves_to_string(s) && !is_base60_float(s) && !is_old_bool(s) {
        Style::Plain
    } else {
        Style::Double
    };
    let a = analyze(s);
    let style = match requested {
        Style::Plain if a.plain_allowed && !simple_key_breaks(simple_key, &a) => Style::Plain,
        Style::Plain if a.single_allowed => Style::Single,
        Style::Literal if a.block_allowed && !simple_key => Style::Literal,
        Style::Plain | Style::Literal | Style::Double | Style::Single => Style::Double,
    };
    match style {
        Style::Plain => out.push_str(s),
        Style::Single => {
            out.push('\'');
            out.push_str(&s.replace('\'', "''"));
            out.push('\'');
        }
        Style::Double => write_double(out, s),
        Style::Literal => write_literal(out, s, parent, content),
    }
}

fn simple_key_breaks(simple_key: bool, a: &Analysis) -> bool {
    simple_key && a.multiline
}

#[derive(Debug, Default)]
struct Analysis {
    plain_allowed: bool,
    single_allowed: bool,
    block_allowed: bool,
    multiline: bool,
}

/// libyaml's `yaml_emitter_analyze_scalar` (block context), with yaml.v3's tab rule.
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            plain_allowed: false,
            single_allowed: true,
            block_allowed: false,
            multiline: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut special, mut tabs, mut line_breaks) = (false, false, false);
    let (mut space_break, mut break_space) = (false, false);
    let mut preceded_by_space = true;
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let followed_by_space = next.is_none_or(|n| n == ' ' || n == '\t' || n == '\n');
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_space => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_space => block_indicators = true,
                '#' if preceded_by_space => block_indicators = true,
                _ => {}
            }
        }
        // Rust chars are never surrogates, so libyaml's IS_PRINTABLE is this.
        let printable = matches!(c, '\n' | '\u{20}'..='\u{7E}' | '\u{85}')
            || (c >= '\u{A0}' && !matches!(c, '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'));
        if c == '\t' {
            tabs = true;
        } else if !printable {
            special = true;
        }
        if c == '\n' {
            line_breaks = true;
            if i > 0 && chars[i - 1] == ' ' {
                space_break = true;
            }
            if next == Some(' ') {
                break_space = true;
            }
        }
        preceded_by_space = c == ' ' || c == '\t' || c == '\n';
    }
    let leading_space = chars[0] == ' ';
    let leading_break = chars[0] == '\n';
    let trailing_space = *chars.last().expect("not empty") == ' ';
    let trailing_break = *chars.last().expect("not empty") == '\n';
    let mut plain = !block_indicators;
    let mut single = true;
    let mut block = true;
    if leading_space || leading_break || trailing_space || trailing_break {
        plain = false;
    }
    if trailing_space {
        block = false;
    }
    if break_space {
        plain = false;
        single = false;
    }
    if space_break || tabs || special {
        plain = false;
        single = false;
    }
    if space_break || special {
        block = false;
    }
    if line_breaks {
        plain = false;
    }
    Analysis {
        plain_allowed: plain,
        single_allowed: single,
        block_allowed: block,
        multiline: line_breaks,
    }
}

fn write_double(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{B}' => out.push_str("\\v"),
            '\u{C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1B}' => out.push_str("\\e"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{85}' => out.push_str("\\N"),
            '\u{A0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || c == '\u{7F}' || c == '\u{FEFF}' => {
                out.push_str(&format!("\\x{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `|` with libyaml's hints: an indentation indicator when the text starts with a space or
/// break, `-` without a final newline, `+` with more than one. libyaml always writes
/// `best_indent` (4) as the indicator, which is wrong where yaml.v3's indentation is not the
/// parent's plus 4 (inside sequence items); the indicator here is the real offset.
fn write_literal(out: &mut String, s: &str, parent: usize, indent: usize) {
    out.push('|');
    if s.starts_with(' ') || s.starts_with('\n') {
        out.push_str(&(indent - parent).to_string());
    }
    let keep = s == "\n" || s.ends_with("\n\n");
    let body = match s.strip_suffix('\n') {
        Some(body) => {
            out.push_str(if keep { "+" } else { "" });
            body
        }
        None => {
            out.push('-');
            s
        }
    };
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// yaml.v3 `resolve`: would this plain text read back as a string?
fn resolves_to_string(s: &str) -> bool {
    !(matches!(
        s,
        "" | "~"
            | "null"
            | "Null"
            | "NULL"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
    ) || is_special_float(s)
        || is_go_int(s)
        || is_yaml_float(s)
        || is_timestamp(s))
}

fn is_special_float(s: &str) -> bool {
    matches!(
        s,
        ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
            | ".nan"
            | ".NaN"
            | ".NAN"
    )
}

/// `strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)` (plus the unsigned and `0b` forms
/// yaml.v3 also accepts).
fn is_go_int(s: &str) -> bool {
    let plain = s.replace('_', "");
    let digits = plain
        .strip_prefix('-')
        .or_else(|| plain.strip_prefix('+'))
        .unwrap_or(&plain);
    let (radix, body) = if let Some(b) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, b)
    } else if let Some(b) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, b)
    } else if let Some(b) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, b)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    !body.is_empty() && body.chars().all(|c| c.is_digit(radix))
}

/// yaml.v3's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.replace('_', "");
    let s = s
        .strip_prefix('-')
        .or_else(|| s.strip_prefix('+'))
        .unwrap_or(&s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()),
        Some((int, frac)) => {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e
            .strip_prefix('-')
            .or_else(|| e.strip_prefix('+'))
            .unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

/// A plain `YYYY-MM-DD` (optionally followed by a time) reads back as a timestamp in yaml.v3.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b.len() == 10 || matches!(b[10], b'T' | b't' | b' '))
}

/// yaml.v3 quotes YAML 1.1 booleans so YAML 1.1 readers do not misread them.
fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// yaml.v3's `isBase60Float`: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let s = s
        .strip_prefix('-')
        .or_else(|| s.strip_prefix('+'))
        .unwrap_or(s);
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    let mut parts = main.split(':');
    let head = parts.next().unwrap_or("");
    let head_ok = head.starts_with(|c: char| c.is_ascii_digit())
        && head.chars().all(|c| c.is_ascii_digit() || c == '_');
    let rest: Vec<&str> = parts.collect();
    let rest_ok = !rest.is_empty()
        && rest.iter().all(|p| {
            let b = p.as_bytes();
            match b.len() {
                1 => b[0].is_ascii_digit(),
                2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
                _ => false,
            }
        });
    let frac_ok = frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit() || c == '_'));
    head_ok && rest_ok && frac_ok
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` (also what `fmt.Sprint` prints for a float64).
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits, like Go's shortest mode.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent format");
    let exp: i32 = exp.parse().expect("exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    // Shortest 'g' uses %e when the exponent is below -4 or at least 6 (`eprec = 6`).
    if !(-4..6).contains(&exp) {
        let rest = &digits[1..];
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let e_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{}{frac}e{e_sign}{:02}", &digits[..1], exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

#[cfg(test)]
mod tests;
