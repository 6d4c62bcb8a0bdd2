//! Secret masking: every secret value and every `::add-mask::` value is replaced by `***` in all output.
//!
//! Output is masked a whole line at a time ([`LineBuffer`] holds partial lines back), so a value split
//! across two writes is still found. A multi-line secret is registered line by line, so each of its lines
//! is masked wherever it appears. Like the runner, common encodings of a value (JSON string escape, URL
//! encoding, base64) are masked too.

use std::sync::{Arc, RwLock};

use base64::Engine as _;

pub const MASK: &str = "***";

/// The set of values to hide. Cheap to clone; clones share the set, so a mask added by one step's
/// output applies to everything printed after it.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Arc<RwLock<Vec<String>>>,
}

impl Masker {
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Register a value. Lines that are empty or only whitespace are not registered (masking every
    /// space would destroy the log, and such lines reveal nothing).
    pub fn add(&self, value: &str) {
        let mut candidates = Vec::new();
        for line in value.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            candidates.push(line.to_string());
            for encoded in encodings(line) {
                if encoded != line && !encoded.trim().is_empty() {
                    candidates.push(encoded);
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        for c in candidates {
            if !values.contains(&c) {
                values.push(c);
            }
        }
        // Longest first, so a secret containing another secret is masked whole.
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    pub fn is_empty(&self) -> bool {
        self.values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Mask one piece of text (normally one line).
    pub fn mask(&self, text: &str) -> String {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        if values.is_empty() {
            return text.to_string();
        }
        // Mark every byte covered by any value, then rebuild: overlapping and adjacent secrets turn
        // into a single `***` and no fragment of a value can survive a replacement order.
        let bytes = text.as_bytes();
        let mut covered = vec![false; bytes.len()];
        for v in values.iter() {
            let mut from = 0;
            while let Some(pos) = text[from..].find(v.as_str()) {
                let start = from + pos;
                covered[start..start + v.len()]
                    .iter_mut()
                    .for_each(|c| *c = true);
                from = start + 1;
                while from < text.len() && !text.is_char_boundary(from) {
                    from += 1;
                }
                if from >= text.len() {
                    break;
                }
            }
        }
        if !covered.contains(&true) {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < bytes.len() {
            if covered[i] {
                out.push_str(MASK);
                while i < bytes.len() && covered[i] {
                    i += 1;
                }
            } else {
                let start = i;
                while i < bytes.len() && !covered[i] {
                    i += 1;
                }
                out.push_str(&text[start..i]);
            }
        }
        out
    }
}

/// The encodings of a value that are masked as well.
fn encodings(value: &str) -> Vec<String> {
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json[1..json.len() - 1].to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let b64 = b64.trim_end_matches('=').to_string();
    vec![json, url_encode(value), b64]
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits a byte stream into lines. Partial lines are kept until their newline arrives or the stream
/// ends; a line longer than `max` is cut so a process that never prints a newline still shows output.
#[derive(Debug)]
pub struct LineBuffer {
    pending: Vec<u8>,
    max: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer {
            pending: Vec::new(),
            max: 64 * 1024,
        }
    }
}

impl LineBuffer {
    /// Feed bytes; returns the complete lines (without `\n` or a trailing `\r`).
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        if self.pending.len() > self.max {
            let line: Vec<u8> = std::mem::take(&mut self.pending);
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }

    /// The unterminated rest at the end of the stream, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.pending);
        let mut s = String::from_utf8_lossy(&line).into_owned();
        if s.ends_with('\r') {
            s.pop();
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_and_lines_of_multiline_secrets() {
        let m = Masker::new();
        m.add("hunter2");
        m.add("-----BEGIN KEY-----\nabc123def\n-----END KEY-----\n");
        assert_eq!(m.mask("password is hunter2!"), "password is ***!");
        assert_eq!(m.mask("abc123def"), "***");
        assert_eq!(m.mask("x -----END KEY----- y"), "x *** y");
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn overlapping_and_nested_values() {
        let m = Masker::new();
        m.add("abc");
        m.add("bcd");
        m.add("abcdef");
        assert_eq!(m.mask("xabcdx"), "x***x");
        assert_eq!(m.mask("abcdef"), "***");
        assert_eq!(m.mask("abcabc"), "***");
    }

    #[test]
    fn encodings_are_masked() {
        let m = Masker::new();
        m.add("p@ss \"word\"");
        assert_eq!(m.mask("p%40ss%20%22word%22"), "***");
        assert_eq!(m.mask(r#"{"pw":"p@ss \"word\""}"#), r#"{"pw":"***"}"#);
        let b64 = base64::engine::general_purpose::STANDARD.encode("p@ss \"word\"");
        // The padding is left: it reveals nothing and the unpadded form also hides longer encodings.
        assert_eq!(
            m.mask(&format!("Basic {b64}")).trim_end_matches('='),
            "Basic ***"
        );
    }

    #[test]
    fn whitespace_is_not_a_secret() {
        let m = Masker::new();
        m.add("  \n\n");
        assert!(m.is_empty());
        assert_eq!(m.mask("a b"), "a b");
    }

    #[test]
    fn unicode_values() {
        let m = Masker::new();
        m.add("пароль");
        assert_eq!(m.mask("ключ=пароль."), "ключ=***.");
    }

    #[test]
    fn line_buffer_joins_split_writes() {
        let mut lb = LineBuffer::default();
        assert!(lb.push(b"hel").is_empty());
        assert_eq!(lb.push(b"lo\r\nwor"), vec!["hello"]);
        assert_eq!(lb.push(b"ld\n\n"), vec!["world", ""]);
        assert_eq!(lb.push(b"tail"), Vec::<String>::new());
        assert_eq!(lb.finish().as_deref(), Some("tail"));
        assert_eq!(lb.finish(), None);
    }
}
