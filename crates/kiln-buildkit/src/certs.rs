//! Certificates for the mutual-TLS BuildKit listener: what `kiln certs` creates.
//!
//! [`generate`] makes a private CA, a server certificate signed by it (valid for the in-cluster
//! service names, `localhost`, `127.0.0.1` and any extra names) and one client certificate.
//! Keys are ECDSA P-256, which `buildctl`, buildx (Go's `crypto/tls`) and rustls all accept.
//!
//! The bundle is written as the files `buildctl --tlsdir` expects on the client side
//! ([`CertBundle::write_files`]) or printed as the `BUILDKIT_*_PEM_B64` variables that
//! [`crate::tls::TlsSource::Env`] reads ([`CertBundle::env_lines`]).
//!
//! ```no_run
//! use kiln_buildkit::certs::{generate, CertOptions};
//! let bundle = generate(&CertOptions {
//!     sans: vec!["buildkit.example.com".into()],
//!     ..CertOptions::default()
//! })?;
//! bundle.write_files(std::path::Path::new("/etc/kiln/tls"), false)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// DNS names and addresses every server certificate is valid for: the in-cluster service
/// names of the `buildkitd` Service in the `gitea` namespace, and loopback.
pub const DEFAULT_SERVER_SANS: &[&str] = &[
    "buildkitd.gitea.svc.cluster.local",
    "buildkitd.gitea.svc",
    "buildkitd",
    "localhost",
    "127.0.0.1",
];

/// Subject common name of the generated CA.
pub const CA_COMMON_NAME: &str = "kiln buildkit CA";

/// How long the CA is valid: about ten years.
const CA_DAYS: u32 = 3650;

/// Certificates start to be valid a little in the past, so a client whose clock is slightly
/// behind does not reject a certificate made a second ago.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What to put into the generated certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOptions {
    /// Extra DNS names or IP addresses for the server certificate, besides
    /// [`DEFAULT_SERVER_SANS`]. IPs (`10.0.0.5`, `::1`, `[::1]`) become IP SANs.
    pub sans: Vec<String>,
    /// Validity of the server and client certificates, in days from now.
    pub days: u32,
    /// Subject common name of the client certificate.
    pub client_cn: String,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            sans: Vec::new(),
            days: 825,
            client_cn: "kiln-client".to_string(),
        }
    }
}

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid subject alternative name {san:?}: {reason}")]
    InvalidSan { san: String, reason: String },
    #[error("invalid validity: {0}")]
    InvalidValidity(String),
    #[error("invalid client common name {cn:?}: must not be empty")]
    InvalidCommonName { cn: String },
    #[error("reading the CA {what}: {source}")]
    ReadCa {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("creating the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// A CA, a server certificate and a client certificate, all PEM text.
///
/// `Debug` shows the certificates but never the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// The CA certificate: trusted by clients (server verification) and by the server
    /// (client verification).
    pub ca_pem: String,
    /// The CA's private key. Kept in memory only, so more client certificates can be issued
    /// with [`generate_client`]; [`CertBundle::write_files`] does not write it.
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("ca_pem", &self.ca_pem)
            .field("ca_key_pem", &"<redacted>")
            .field("server_cert_pem", &self.server_cert_pem)
            .field("server_key_pem", &"<redacted>")
            .field("client_cert_pem", &self.client_cert_pem)
            .field("client_key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate and its private key, PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Create a new CA and a server and client certificate signed by it.
pub fn generate(opts: &CertOptions) -> Result<CertBundle, CertError> {
    if opts.days == 0 {
        return Err(CertError::InvalidValidity(
            "days must be at least 1".to_string(),
        ));
    }
    let sans = server_sans(&opts.sans)?;
    let now = SystemTime::now();
    let not_before = now - BACKDATE;
    let not_after = after_days(now, opts.days)?;
    // The CA must outlive what it signs.
    let ca_not_after = after_days(now, opts.days.max(CA_DAYS).saturating_add(1))?;

    let ca_key = new_key("CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = common_name(CA_COMMON_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = to_time(not_before)?;
    ca_params.not_after = to_time(ca_not_after)?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| CertError::Generate {
            what: "CA certificate",
            source,
        })?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params = leaf_params("buildkitd", not_before, not_after)?;
    server_params.subject_alt_names = sans;
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = issue(&server_params, &issuer, "server certificate")?;

    let client = issue_client(&issuer, &opts.client_cn, not_before, not_after)?;

    Ok(CertBundle {
        ca_pem,
        ca_key_pem,
        server_cert_pem: server.cert_pem,
        server_key_pem: server.key_pem,
        client_cert_pem: client.cert_pem,
        client_key_pem: client.key_pem,
    })
}

/// Issue another client certificate (clientAuth, subject CN `cn`) from an existing CA,
/// valid from `not_before` to `not_after`. A window in the past gives an expired
/// certificate, which tests use to check that the server refuses it.
pub fn generate_client(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    cn: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<IssuedCert, CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|source| CertError::ReadCa {
        what: "private key",
        source,
    })?;
    let issuer =
        Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(|source| CertError::ReadCa {
            what: "certificate",
            source,
        })?;
    issue_client(&issuer, cn, not_before, not_after)
}

fn issue_client(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<IssuedCert, CertError> {
    if cn.trim().is_empty() {
        return Err(CertError::InvalidCommonName { cn: cn.to_string() });
    }
    if not_after <= not_before {
        return Err(CertError::InvalidValidity(
            "not_after must be later than not_before".to_string(),
        ));
    }
    let mut params = leaf_params(cn, not_before, not_after)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(&params, issuer, "client certificate")
}

fn leaf_params(
    cn: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    Ok(params)
}

fn issue(
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    what: &'static str,
) -> Result<IssuedCert, CertError> {
    let key = new_key(what)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| CertError::Generate { what, source })?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn new_key(what: &'static str) -> Result<KeyPair, CertError> {
    KeyPair::generate().map_err(|source| CertError::Generate { what, source })
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

fn after_days(start: SystemTime, days: u32) -> Result<SystemTime, CertError> {
    start
        .checked_add(DAY * days)
        .ok_or_else(|| CertError::InvalidValidity(format!("{days} days is out of range")))
}

/// `OffsetDateTime::from(SystemTime)` panics outside years ±9999; this reports an error.
fn to_time(t: SystemTime) -> Result<OffsetDateTime, CertError> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
    };
    secs.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| CertError::InvalidValidity("date out of range (years 1–9999)".into()))
}

/// The default SANs plus the extra ones, deduplicated, IPs as IP SANs.
fn server_sans(extra: &[String]) -> Result<Vec<SanType>, CertError> {
    let mut seen = BTreeSet::new();
    let mut sans = Vec::new();
    let all = DEFAULT_SERVER_SANS
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned());
    for raw in all {
        let san = parse_san(&raw)?;
        let key = format!("{san:?}");
        if seen.insert(key) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn parse_san(raw: &str) -> Result<SanType, CertError> {
    let invalid = |reason: &str| CertError::InvalidSan {
        san: raw.to_string(),
        reason: reason.to_string(),
    };
    let s = raw.trim();
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if s.is_empty() {
        return Err(invalid("empty"));
    }
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let label_ok = |label: &str, i: usize| {
        (label == "*" && i == 0)
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    };
    if name.len() > 253 || !name.split('.').enumerate().all(|(i, l)| label_ok(l, i)) {
        return Err(invalid(
            "not an IP address or a DNS name (letters, digits, '-', dots; '*' only as the first label)",
        ));
    }
    let ia5 = name.as_str().try_into().map_err(|_| invalid("not ASCII"))?;
    Ok(SanType::DnsName(ia5))
}

/// File names inside the directory written by [`CertBundle::write_files`]: the layout of
/// `buildctl --tlsdir` (`ca.pem`, `cert.pem`, `key.pem`) for the client, plus the server's.
pub mod file_names {
    pub const CA: &str = "ca.pem";
    /// Server certificate.
    pub const SERVER_CERT: &str = "cert.pem";
    /// Server private key.
    pub const SERVER_KEY: &str = "key.pem";
    pub const CLIENT_CERT: &str = "client.pem";
    pub const CLIENT_KEY: &str = "client-key.pem";
}

impl CertBundle {
    /// Write `ca.pem`, `cert.pem`, `key.pem` (server), `client.pem` and `client-key.pem`
    /// into `dir` (created if missing) and return their paths. Keys get mode 0600,
    /// certificates 0644.
    ///
    /// Without `force`, nothing is written if any of the five files exists
    /// (`io::ErrorKind::AlreadyExists`, naming the file). With `force`, existing files are
    /// replaced; each is written to a temporary file and renamed into place, so a server
    /// watching the directory never reads a half-written file. The CA key is not written.
    pub fn write_files(&self, dir: &Path, force: bool) -> io::Result<Vec<PathBuf>> {
        use file_names::*;
        let files: [(&str, &str, u32); 5] = [
            (CA, &self.ca_pem, 0o644),
            (SERVER_KEY, &self.server_key_pem, 0o600),
            (SERVER_CERT, &self.server_cert_pem, 0o644),
            (CLIENT_KEY, &self.client_key_pem, 0o600),
            (CLIENT_CERT, &self.client_cert_pem, 0o644),
        ];
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, "creating directory", dir))?;
        if !force {
            for (name, _, _) in &files {
                let path = dir.join(name);
                if path.symlink_metadata().is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} already exists (refusing to overwrite certificates; use force)",
                            path.display()
                        ),
                    ));
                }
            }
        }
        let mut written = Vec::with_capacity(files.len());
        for (name, contents, mode) in files {
            let path = dir.join(name);
            write_file(&path, contents.as_bytes(), mode, force)?;
            tracing::debug!(path = %path.display(), "wrote certificate file");
            written.push(path);
        }
        Ok(written)
    }

    /// Five lines `NAME=<standard base64 of the PEM, unwrapped>`, each ending in `\n`:
    /// `BUILDKIT_CA_PEM_B64`, `BUILDKIT_CERT_PEM_B64`, `BUILDKIT_KEY_PEM_B64` (the server's,
    /// read by [`crate::tls::TlsSource::Env`]) and `BUILDKIT_CLIENT_CERT_PEM_B64`,
    /// `BUILDKIT_CLIENT_KEY_PEM_B64`.
    pub fn env_lines(&self) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        [
            ("BUILDKIT_CA_PEM_B64", &self.ca_pem),
            ("BUILDKIT_CERT_PEM_B64", &self.server_cert_pem),
            ("BUILDKIT_KEY_PEM_B64", &self.server_key_pem),
            ("BUILDKIT_CLIENT_CERT_PEM_B64", &self.client_cert_pem),
            ("BUILDKIT_CLIENT_KEY_PEM_B64", &self.client_key_pem),
        ]
        .iter()
        .map(|(name, pem)| format!("{name}={}\n", b64(pem)))
        .collect()
    }
}

/// Write through a temporary file in the same directory, then move it into place: `rename`
/// when replacing is allowed, `hard_link` (which fails if the target exists) otherwise.
fn write_file(path: &Path, contents: &[u8], mode: u32, replace: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; certificates should stay world-readable.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path)
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| with_path(e, "writing", path))
}

fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_sans_accept_brackets_and_names_are_lowercased() {
        assert!(matches!(parse_san("[::1]"), Ok(SanType::IpAddress(_))));
        assert!(matches!(parse_san("10.1.2.3"), Ok(SanType::IpAddress(_))));
        match parse_san("Build.Example.COM.") {
            Ok(SanType::DnsName(n)) => assert_eq!(n.as_str(), "build.example.com"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_san("*.example.com").is_ok());
    }

    #[test]
    fn bad_sans_are_refused_by_name() {
        for bad in [
            "",
            "has space",
            "a..b",
            "-x.example",
            "x.*.example",
            "ünïcode",
        ] {
            let err = parse_san(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn default_sans_are_not_duplicated() {
        let sans = server_sans(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(sans.len(), DEFAULT_SERVER_SANS.len());
    }

    #[test]
    fn zero_days_is_refused() {
        let opts = CertOptions {
            days: 0,
            ..CertOptions::default()
        };
        assert!(matches!(
            generate(&opts),
            Err(CertError::InvalidValidity(_))
        ));
    }

    #[test]
    fn absurd_validity_is_an_error_not_a_panic() {
        let opts = CertOptions {
            days: u32::MAX,
            ..CertOptions::default()
        };
        assert!(matches!(
            generate(&opts),
            Err(CertError::InvalidValidity(_))
        ));
    }

    #[test]
    fn debug_never_shows_keys() {
        let bundle = generate(&CertOptions::default()).unwrap();
        let shown = format!("{bundle:?}");
        assert!(!shown.contains("PRIVATE KEY"));
        assert!(shown.contains("CERTIFICATE"));
    }
}
