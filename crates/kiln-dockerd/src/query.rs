//! Query strings with repeated keys (`t=a&t=b`, `names=…`), which Docker uses and serde's
//! urlencoded maps cannot hold.

/// The decoded `key=value` pairs of a query string, in order.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let Some(raw) = raw else {
            return Query::default();
        };
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Docker's booleans: `1`, `true` (any case) are true; absent is false.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }
}

/// Percent-decoding with `+` as space; invalid escapes are kept as they are.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-decoding of a path segment (`+` stays `+`).
pub fn decode_path(s: &str) -> String {
    decode(&s.replace('+', "%2B"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_escapes_are_kept() {
        let q = Query::parse(Some(
            "t=a%3A1&t=b&buildargs=%7B%22X%22%3A%22y+z%22%7D&q=1&bad=%zz",
        ));
        assert_eq!(q.all("t"), vec!["a:1", "b"]);
        assert_eq!(q.get("buildargs"), Some(r#"{"X":"y z"}"#));
        assert!(q.flag("q"));
        assert!(!q.flag("nocache"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(decode_path("a%2Fb+c"), "a/b+c");
        assert_eq!(decode("%4"), "%4");
    }
}
