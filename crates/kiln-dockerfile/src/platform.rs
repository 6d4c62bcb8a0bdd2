//! A small OCI platform type (`linux/arm64/v8`), normalised like containerd's `platforms`.

use bollard_buildkit_proto::pb;

use crate::error::Error;

/// An OS/architecture/variant triple.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl Platform {
    /// The platforms of a list such as `--platform` values, each of which may itself be
    /// comma-separated (`linux/amd64,linux/arm64`): each platform once, in order. An invalid
    /// item comes back with its error.
    pub fn parse_list<'a>(
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Platform>, (&'a str, Error)> {
        let mut out: Vec<Platform> = Vec::new();
        for item in items.into_iter().flat_map(|i| i.split(',')).map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let p = Platform::parse(item).map_err(|e| (item, e))?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Parses `os[/arch[/variant]]` or a bare architecture, normalising aliases
    /// (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`, ...).
    pub fn parse(s: &str) -> Result<Platform, Error> {
        let lower = s.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if lower.is_empty() || parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(Error::msg(format!(
                "{}: cannot parse platform specifier: invalid argument",
                crate::error::go_quote(s)
            )));
        }
        let is_os = |p: &str| {
            matches!(
                p,
                "linux"
                    | "windows"
                    | "darwin"
                    | "freebsd"
                    | "netbsd"
                    | "openbsd"
                    | "solaris"
                    | "illumos"
                    | "aix"
                    | "android"
                    | "ios"
                    | "plan9"
                    | "js"
                    | "wasip1"
            )
        };
        let (os, arch, variant) = match parts.as_slice() {
            [one] if is_os(one) => (one.to_string(), "amd64".to_string(), None),
            [one] => ("linux".to_string(), one.to_string(), None),
            [os, arch] => (os.to_string(), arch.to_string(), None),
            [os, arch, variant] => (os.to_string(), arch.to_string(), Some(variant.to_string())),
            _ => {
                return Err(Error::msg(format!(
                    "{}: cannot parse platform specifier: invalid argument",
                    crate::error::go_quote(s)
                )))
            }
        };
        if !is_os(&os) {
            return Err(Error::msg(format!(
                "\"{s}\": unknown operating system or architecture: invalid argument"
            )));
        }
        let (architecture, variant) = normalize_arch(&arch, variant);
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }

    /// `os/arch[/variant]`.
    pub fn format(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// The LLB platform message.
    pub fn to_pb(&self) -> pb::Platform {
        pb::Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone().unwrap_or_default(),
            os_version: String::new(),
            os_features: Vec::new(),
        }
    }
}

fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let v = variant.as_deref();
    match arch {
        "i386" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => match v {
            Some("v1") | None => ("amd64".into(), None),
            _ => ("amd64".into(), variant),
        },
        "aarch64" | "arm64" => match v {
            Some("8") | Some("v8") | None => ("arm64".into(), None),
            _ => ("arm64".into(), variant),
        },
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => match v {
            None | Some("7") => ("arm".into(), Some("v7".into())),
            Some("5") | Some("6") | Some("8") => {
                ("arm".into(), Some(format!("v{}", v.unwrap_or_default())))
            }
            _ => ("arm".into(), variant),
        },
        other => (other.to_string(), variant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_normalise() {
        let cases = [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("arm64", "linux/arm64"),
            ("windows/amd64", "windows/amd64"),
        ];
        for (i, want) in cases {
            assert_eq!(Platform::parse(i).unwrap().format(), want, "{i}");
        }
        assert!(Platform::parse("").is_err());
        assert!(Platform::parse("beos/amd64").is_err());
    }
}
