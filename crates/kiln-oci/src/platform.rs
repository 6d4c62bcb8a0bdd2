//! Platforms (`linux/arm64/v8`) and the matching rules used to pick a manifest from an index.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An OS/architecture/variant triple as found in image indexes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`.
    pub architecture: String,
    /// CPU variant: `v8` for arm64, `v7`/`v6` for arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a string is not a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant]")]
pub struct PlatformParseError(pub String);

impl Platform {
    /// A platform from its parts, normalized.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
        .normalized()
    }

    /// The platform this process runs on, in OCI spelling.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "mips64" => "mips64",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = match arch {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            _ => None,
        };
        Platform::new(std::env::consts::OS, arch, variant)
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, PlatformParseError> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformParseError(s.to_string()));
        }
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        Ok(Platform::new(
            &lower[0],
            &lower[1],
            lower.get(2).map(String::as_str),
        ))
    }

    /// Canonical spelling, as containerd's `platforms.Normalize` does.
    pub fn normalized(mut self) -> Platform {
        let (arch, variant) = match (self.architecture.as_str(), self.variant.as_deref()) {
            ("x86_64" | "x86-64" | "amd64", _) => ("amd64", None),
            ("i386" | "i686" | "386", v) => ("386", v),
            ("aarch64" | "arm64", Some("8") | Some("v8") | None) => ("arm64", Some("v8")),
            ("aarch64" | "arm64", v) => ("arm64", v),
            ("armhf" | "arm", None) => ("arm", Some("v7")),
            ("armel", None) => ("arm", Some("v6")),
            ("arm", Some("5" | "6" | "7" | "8")) => {
                let v = self.variant.take().unwrap_or_default();
                self.architecture = "arm".into();
                self.variant = Some(format!("v{v}"));
                return self;
            }
            (a, v) => (a, v),
        };
        let arch = arch.to_string();
        let variant = variant.map(str::to_string);
        self.architecture = arch;
        self.variant = variant;
        self
    }

    /// Whether an image for `other` runs here: same OS and architecture, and the same variant
    /// after normalization (amd64 ignores variants; arm64 without variant means v8).
    pub fn matches(&self, other: &Platform) -> bool {
        let a = self.clone().normalized();
        let b = other.clone().normalized();
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    /// From an index entry's platform.
    pub fn from_oci(p: &oci_spec::image::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }
}

impl FromStr for Platform {
    type Err = PlatformParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_platform_uses_oci_spelling() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.contains('_'), "{h}");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn parse_and_display_round_trip() {
        for (input, want) in [
            ("linux/amd64", Some("linux/amd64")),
            ("linux/arm64/v8", Some("linux/arm64/v8")),
            ("linux/arm64", Some("linux/arm64/v8")),
            ("linux/aarch64", Some("linux/arm64/v8")),
            ("linux/x86_64", Some("linux/amd64")),
            ("linux/arm/7", Some("linux/arm/v7")),
            ("linux/armhf", Some("linux/arm/v7")),
            ("Linux/AMD64", Some("linux/amd64")),
            ("linux", None),
            ("linux/", None),
            ("a/b/c/d", None),
            ("linux/am d64", None),
        ] {
            let got = Platform::parse(input).ok().map(|p| p.to_string());
            assert_eq!(got.as_deref(), want, "{input}");
        }
    }

    #[test]
    fn matching_normalizes_variants() {
        let m = |a: &str, b: &str| {
            Platform::parse(a)
                .unwrap()
                .matches(&Platform::parse(b).unwrap())
        };
        assert!(m("linux/arm64", "linux/arm64/v8"));
        assert!(m("linux/arm64/v8", "linux/aarch64"));
        assert!(m("linux/amd64", "linux/amd64/v3"));
        assert!(!m("linux/arm64", "linux/amd64"));
        assert!(!m("linux/arm/v7", "linux/arm/v6"));
        assert!(!m("linux/amd64", "windows/amd64"));
        let oci: oci_spec::image::Platform =
            serde_json::from_str(r#"{"os":"linux","architecture":"arm64"}"#).unwrap();
        assert!(Platform::from_oci(&oci).matches(&Platform::parse("linux/arm64/v8").unwrap()));
    }
}
