//! Content digests (`sha256:<hex>`) and hashing adapters for readers and writers.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A content address such as `sha256:e3b0c442…`. Only sha256 is produced; parsing accepts
/// sha256 (64 hex), sha384 (96) and sha512 (128) so foreign manifests can at least be named.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    // Invariant: "<algorithm>:<lowercase hex of the algorithm's length>".
    value: String,
    colon: usize,
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: {reason}")]
pub struct DigestParseError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Digest {
        Self::from_sha256_output(&Sha256::digest(bytes))
    }

    fn from_sha256_output(out: &[u8]) -> Digest {
        Digest {
            value: format!("sha256:{}", hex::encode(out)),
            colon: 6,
        }
    }

    /// The hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.value[self.colon + 1..]
    }

    /// The algorithm part before the colon, e.g. `sha256`.
    pub fn algorithm(&self) -> &str {
        &self.value[..self.colon]
    }

    /// The full `algorithm:hex` text.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The first 12 hex characters, the way Docker prints image IDs.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DigestParseError {
            input: s.to_string(),
            reason,
        };
        let (alg, hex) = s.split_once(':').ok_or_else(|| err("missing ':'"))?;
        let want = match alg {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            "" => return Err(err("empty algorithm")),
            _ => return Err(err("unsupported algorithm")),
        };
        if hex.len() != want {
            return Err(err("wrong hex length for algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err("hex must be lowercase [0-9a-f]"));
        }
        Ok(Digest {
            value: s.to_string(),
            colon: alg.len(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.value)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        // Our digests are a strict subset of what oci-spec accepts.
        oci_spec::image::Digest::from_str(d.as_str()).expect("kiln digest is a valid OCI digest")
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestParseError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

/// A writer that hashes (sha256) and counts everything written through it.
pub struct Sha256Writer<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Sha256Writer<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the inner writer, the digest and the size of what was written.
    pub fn finish(self) -> (W, Digest, u64) {
        let d = Digest::from_sha256_output(&self.hasher.finalize());
        (self.inner, d, self.size)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (sha256) and counts everything read through it.
pub struct Sha256Reader<R: Read> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Sha256Reader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Sha256Reader {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Returns the inner reader, the digest and the size of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        let d = Digest::from_sha256_output(&self.hasher.finalize());
        (self.inner, d, self.size)
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Incremental sha256 for async code that sees chunks rather than a `Write`.
#[derive(Default, Clone)]
pub struct Sha256Hasher {
    hasher: Sha256,
    size: u64,
}

impl Sha256Hasher {
    /// Adds `chunk`.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// The digest and size of everything added.
    pub fn finish(self) -> (Digest, u64) {
        (
            Digest::from_sha256_output(&self.hasher.finalize()),
            self.size,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(Digest::sha256(b"").to_string(), EMPTY);
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn parsing_accepts_and_rejects_by_table() {
        let h64 = "a".repeat(64);
        let cases: &[(String, bool)] = &[
            (format!("sha256:{h64}"), true),
            (format!("sha384:{}", "0".repeat(96)), true),
            (format!("sha512:{}", "f".repeat(128)), true),
            (format!("sha256:{}", "A".repeat(64)), false),
            (format!("sha256:{}", "a".repeat(63)), false),
            (format!("sha256:{}", "a".repeat(65)), false),
            (format!("sha256:{}g", "a".repeat(63)), false),
            (format!(":{h64}"), false),
            (h64.clone(), false),
            (format!("md5:{h64}"), false),
            (String::new(), false),
            ("sha256:".to_string(), false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<Digest>().is_ok(), *ok, "{input}");
        }
    }

    #[test]
    fn serde_round_trips_as_a_plain_string() {
        let d = Digest::sha256(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn hashing_writer_and_reader_agree_with_direct_hash() {
        let data = b"hello world".repeat(1000);
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, d, n) = w.finish();
        assert_eq!(out, data);
        assert_eq!(d, Digest::sha256(&data));
        assert_eq!(n, data.len() as u64);

        let mut r = Sha256Reader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (_, d2, n2) = r.finish();
        assert_eq!((d2, n2), (d, n));
    }

    #[test]
    fn oci_spec_digest_conversion_round_trips() {
        let d = Digest::sha256(b"abc");
        let o: oci_spec::image::Digest = (&d).into();
        assert_eq!(Digest::try_from(&o).unwrap(), d);
    }
}
