//! kiln's own configuration file (TOML), in the spirit of buildkitd.toml:
//!
//! ```toml
//! root = "/var/lib/kiln"
//! [registry."registry.internal:5000"]
//! http = true        # plain HTTP (loopback registries need nothing)
//! insecure = false   # skip TLS verification
//! ```

use anyhow::Context;
use kiln_oci::registry::{HostConfig, RegistryConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KilnConfig {
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub registry: BTreeMap<String, HostConfig>,
    /// Path of the runc binary (default: found in PATH).
    pub runc: Option<PathBuf>,
    /// How many RUN/COPY steps may run at once (default: no cap, as BuildKit).
    pub max_parallelism: Option<usize>,
    /// `overlayfs` or `native` (copying); default: overlayfs when the kernel allows it.
    pub snapshotter: Option<String>,
    /// After each build, prune the least recently used cache beyond this size ("20GB").
    #[serde(default, deserialize_with = "size_opt")]
    pub gc_keep_storage: Option<u64>,
}

fn size_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

impl KilnConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<KilnConfig> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("/etc/kiln/kiln.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(KilnConfig::default())
            }
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }

    pub async fn open_engine(&self, root: PathBuf) -> anyhow::Result<kiln_engine::Engine> {
        let mut cfg = kiln_engine::EngineConfig::new(root);
        cfg.registry = RegistryConfig {
            hosts: self.registry.clone(),
        };
        cfg.runc = self.runc.clone();
        cfg.max_parallelism = self.max_parallelism;
        cfg.gc_keep_storage = self.gc_keep_storage;
        if let Some(s) = &self.snapshotter {
            cfg.snapshotter = Some(
                s.parse()
                    .map_err(|e: String| anyhow::anyhow!("config: snapshotter: {e}"))?,
            );
        }
        Ok(kiln_engine::Engine::open(cfg).await?)
    }
}

pub fn default_root() -> PathBuf {
    if crate::userns::outer_uid() == 0 {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("kiln");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/kiln")
}

/// Sizes as users write them (`10GB`, `512MiB`, `1024`); shared with the runner's config.
pub use kiln_runner::parse_size;

pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_buildctl() {
        for (s, want) in [
            ("1024", 1024),
            ("10GB", 10_000_000_000),
            ("512MiB", 512 * 1024 * 1024),
            ("1.5kb", 1500),
        ] {
            assert_eq!(parse_size(s).unwrap(), want, "{s}");
        }
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10XB").is_err());
    }

    #[test]
    fn registry_hosts_come_from_toml() {
        let c: KilnConfig =
            toml::from_str("[registry.\"reg.internal:5000\"]\nhttp = true\n").unwrap();
        assert!(c.registry["reg.internal:5000"].http);
    }

    #[test]
    fn gc_size_accepts_text_or_bytes() {
        let c: KilnConfig = toml::from_str("gc_keep_storage = \"2GB\"").unwrap();
        assert_eq!(c.gc_keep_storage, Some(2_000_000_000));
        let c: KilnConfig = toml::from_str("gc_keep_storage = 1024").unwrap();
        assert_eq!(c.gc_keep_storage, Some(1024));
        assert!(toml::from_str::<KilnConfig>("gc_keep_storage = \"lots\"").is_err());
    }
}
