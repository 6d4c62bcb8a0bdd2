//! Byte ranges in the two headers the cache API reads: `Content-Range` on chunk uploads and
//! `Range` on downloads. Both arrive from jobs, so both are parsed strictly.

/// An inclusive byte range `start..=end`, as HTTP writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(self) -> u64 {
        self.end - self.start + 1
    }
}

/// Parses an upload's `Content-Range: bytes <start>-<end>/<total or *>` (the toolkit sends `*`).
pub fn parse_content_range(value: &str) -> Result<ByteRange, String> {
    let bad = || format!("malformed Content-Range {value:?}: want \"bytes <start>-<end>/*\"");
    let rest = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (span, total) = rest.split_once('/').ok_or_else(bad)?;
    let (start, end) = span.split_once('-').ok_or_else(bad)?;
    let start = parse_offset(start).ok_or_else(bad)?;
    let end = parse_offset(end).ok_or_else(bad)?;
    if end < start {
        return Err(format!("Content-Range {value:?}: end before start"));
    }
    if total != "*" {
        let total = parse_offset(total).ok_or_else(bad)?;
        if end >= total {
            return Err(format!("Content-Range {value:?}: end beyond total size"));
        }
    }
    Ok(ByteRange { start, end })
}

/// What a download's `Range` header asks of a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: serve the whole blob with 200. Multi-range and unknown units land
    /// here too, which RFC 9110 allows (a server may ignore `Range`).
    Whole,
    Partial(ByteRange),
    /// Syntactically fine but outside the blob: 416.
    Unsatisfiable,
}

/// Parses a download's `Range: bytes=<a>-<b> | <a>- | -<suffix>` against a blob of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let range = match (first.trim(), last.trim()) {
        ("", suffix) => match parse_offset(suffix) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            Some(_) => return RangeRequest::Unsatisfiable,
            None => return RangeRequest::Whole,
        },
        (first, "") => match parse_offset(first) {
            Some(start) if start < size => ByteRange {
                start,
                end: size - 1,
            },
            Some(_) => return RangeRequest::Unsatisfiable,
            None => return RangeRequest::Whole,
        },
        (first, last) => match (parse_offset(first), parse_offset(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    return RangeRequest::Unsatisfiable;
                }
                ByteRange {
                    start,
                    end: end.min(size - 1),
                }
            }
            _ => return RangeRequest::Whole,
        },
    };
    RangeRequest::Partial(range)
}

/// Digits only: `u64::from_str` would also take a leading `+`.
fn parse_offset(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_cases() {
        let cases: &[(&str, Option<(u64, u64)>)] = &[
            ("bytes 0-199/*", Some((0, 199))),
            ("bytes 200-200/*", Some((200, 200))),
            ("bytes 0-9/10", Some((0, 9))),
            ("bytes 0-10/10", None),
            ("bytes 10-9/*", None),
            ("bytes -9/*", None),
            ("bytes 0-/*", None),
            ("bytes +1-2/*", None),
            ("bytes 0-9", None),
            ("items 0-9/*", None),
            ("0-9/*", None),
            ("", None),
            ("bytes 0-99999999999999999999999/*", None),
        ];
        for (input, want) in cases {
            let got = parse_content_range(input).ok().map(|r| (r.start, r.end));
            assert_eq!(got, *want, "Content-Range {input:?}");
        }
    }

    #[test]
    fn range_cases() {
        use RangeRequest::*;
        let r = |start, end| Partial(ByteRange { start, end });
        let cases: &[(&str, u64, RangeRequest)] = &[
            ("bytes=0-9", 100, r(0, 9)),
            ("bytes=90-", 100, r(90, 99)),
            ("bytes=-10", 100, r(90, 99)),
            ("bytes=-1000", 100, r(0, 99)),
            ("bytes=50-1000", 100, r(50, 99)),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-200", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-0", 0, Unsatisfiable),
            ("bytes=9-0", 100, Whole),
            ("bytes=0-1,5-6", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes=x-1", 100, Whole),
        ];
        for (input, size, want) in cases {
            assert_eq!(
                parse_range(input, *size),
                *want,
                "Range {input:?} of {size}"
            );
        }
    }
}
