//! The daemon's `config.yaml`: act_runner's keys unchanged (`log`, `runner`, `cache`, `container`,
//! `host`) plus kiln's own `kiln:` section. Unknown keys are reported with their path and ignored;
//! values of the wrong type fail with the file, line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The commented example shipped as `runner-config/config.example.yaml`.
pub const EXAMPLE: &str = include_str!("../../../runner-config/config.example.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub log: LogSection,
    pub runner: RunnerSection,
    pub cache: CacheSection,
    pub container: ContainerSection,
    pub host: HostSection,
    pub kiln: KilnSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSection {
    pub level: String,
    /// `text` or `json` (kiln).
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RunnerSection {
    pub file: PathBuf,
    pub capacity: i64,
    pub envs: BTreeMap<String, String>,
    pub env_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    pub insecure: bool,
    #[serde(deserialize_with = "duration")]
    pub fetch_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub fetch_interval: Duration,
    /// Upper bound of the poll interval after empty or failed polls.
    #[serde(deserialize_with = "duration")]
    pub fetch_interval_max: Duration,
    /// How often logs and state are sent while a job runs.
    #[serde(deserialize_with = "duration")]
    pub log_report_interval: Duration,
    /// How long closing a task (final logs and result) is retried through a Gitea outage.
    #[serde(deserialize_with = "duration")]
    pub report_close_timeout: Duration,
    pub github_mirror: String,
    pub labels: Vec<String>,
}

impl Default for RunnerSection {
    fn default() -> Self {
        RunnerSection {
            file: PathBuf::from(".runner"),
            capacity: 1,
            envs: BTreeMap::new(),
            env_file: None,
            timeout: Duration::from_secs(3 * 3600),
            shutdown_timeout: Duration::ZERO,
            insecure: false,
            fetch_timeout: Duration::from_secs(5),
            fetch_interval: Duration::from_secs(2),
            fetch_interval_max: Duration::from_secs(60),
            log_report_interval: Duration::from_secs(1),
            report_close_timeout: Duration::from_secs(3600),
            github_mirror: String::new(),
            labels: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CacheSection {
    pub enabled: bool,
    pub dir: Option<PathBuf>,
    pub host: String,
    pub port: u16,
    pub external_server: String,
    /// Size cap of the cache (kiln), e.g. `10GB`.
    pub max_size: Option<String>,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: true,
            dir: None,
            host: String::new(),
            port: 0,
            external_server: String::new(),
            max_size: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContainerSection {
    #[serde(alias = "network_mode")]
    pub network: String,
    pub privileged: bool,
    pub options: Option<String>,
    pub workdir_parent: Option<String>,
    pub valid_volumes: Vec<String>,
    pub docker_host: String,
    pub force_pull: bool,
    pub force_rebuild: bool,
    pub require_docker: bool,
    #[serde(deserialize_with = "duration")]
    pub docker_timeout: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostSection {
    pub workdir_parent: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KilnSection {
    pub state_dir: Option<PathBuf>,
    /// `/metrics`, `/healthz`, `/readyz`; empty turns them off.
    pub metrics_addr: String,
    pub node: Option<PathBuf>,
    pub buildkit: BuildkitSection,
    /// Perform docker/build-push-action, setup-buildx-action and login-action with kiln's own
    /// engine (a step turns it off with `env: { KILN_NATIVE_ACTIONS: "false" }`).
    pub native_actions: bool,
    /// Settings of the build engine, as in kiln.toml: `registry.<host>.{http,insecure}`, `runc`,
    /// `max_parallelism`, `snapshotter`, `gc_keep_storage` (the cache size cap).
    pub builder: Option<serde_yaml_ng::Value>,
}

impl Default for KilnSection {
    fn default() -> Self {
        KilnSection {
            state_dir: None,
            metrics_addr: "127.0.0.1:9101".into(),
            node: None,
            buildkit: BuildkitSection::default(),
            native_actions: true,
            builder: None,
        }
    }
}

/// The BuildKit endpoint of the runner's build engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BuildkitSection {
    /// Start the engine and give every job `BUILDKIT_HOST` (a socket of its own).
    pub enabled: bool,
    /// Also give every job `DOCKER_HOST`: kiln's Docker API on the same engine.
    pub docker: bool,
    /// More addresses for the same engine, e.g. `tcp://0.0.0.0:1235` (the shared builder).
    pub listen: Vec<String>,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
    /// Certificates from BUILDKIT_CA_PEM_B64, BUILDKIT_CERT_PEM_B64, BUILDKIT_KEY_PEM_B64.
    pub tls_from_env: bool,
    /// Forward container calls on the jobs' `DOCKER_HOST` to the daemon of `container.docker_host`
    /// (`docker run` in a job works; the job can then do anything that daemon can).
    pub docker_forward: bool,
}

impl Default for BuildkitSection {
    fn default() -> Self {
        BuildkitSection {
            enabled: true,
            docker: true,
            listen: Vec::new(),
            tlscacert: None,
            tlscert: None,
            tlskey: None,
            tls_from_env: false,
            docker_forward: false,
        }
    }
}

impl Config {
    /// Read a config file. Unknown keys come back as warnings (`runner.capcity`).
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        if text.trim().is_empty() {
            return Ok((Config::default(), Vec::new()));
        }
        let mut unknown = Vec::new();
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
            .map_err(|e| ConfigError::Invalid {
                path: name.to_string(),
                message: e.to_string(),
            })?;
        config.validate(name)?;
        let warnings = unknown
            .into_iter()
            .map(|k| format!("{name}: unknown key `{k}` is ignored"))
            .collect();
        Ok((config, warnings))
    }

    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |message: String| {
            Err(ConfigError::Invalid {
                path: name.to_string(),
                message,
            })
        };
        if self.runner.fetch_timeout.is_zero() {
            return bad("runner.fetch_timeout must be more than 0".into());
        }
        if self.runner.timeout.is_zero() {
            return bad("runner.timeout must be more than 0".into());
        }
        for label in &self.runner.labels {
            if let Err(e) = crate::labels::Label::parse(label) {
                return bad(format!("runner.labels: {e}"));
            }
        }
        if !self.log.format.is_empty() && self.log.format != "text" && self.log.format != "json" {
            return bad(format!(
                "log.format must be text or json, not `{}`",
                self.log.format
            ));
        }
        Ok(())
    }

    /// Tasks run at once (act_runner treats 0 and less as 1).
    pub fn capacity(&self) -> usize {
        self.runner.capacity.max(1) as usize
    }

    /// `runner.envs` plus `runner.env_file` when that file exists.
    pub fn job_env(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut env = self.runner.envs.clone();
        if let Some(file) = &self.runner.env_file {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    for (i, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        let line = line.strip_prefix("export ").unwrap_or(line);
                        let Some((k, v)) = line.split_once('=') else {
                            return Err(ConfigError::Invalid {
                                path: file.display().to_string(),
                                message: format!("line {}: expected NAME=value", i + 1),
                            });
                        };
                        let v = v.trim();
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                            .unwrap_or(v);
                        env.insert(k.trim().to_string(), v.to_string());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: file.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(env)
    }
}

/// Go duration strings as act_runner writes them: `3h`, `1h30m`, `500ms`, `0s`, `2.5s`; a bare
/// number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(Duration::ZERO);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("`{s}` is not a duration (like 30s, 5m, 3h, 1h30m)"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("`{s}` is not a duration"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    Ok(Duration::from_secs_f64(total))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(Duration::ZERO),
        Some(Raw::Number(n)) if n >= 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n)),
        Some(Raw::Number(n)) => Err(serde::de::Error::custom(format!("{n} is not a duration"))),
        Some(Raw::Text(s)) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_without_warnings() {
        let (config, warnings) = Config::parse("config.example.yaml", EXAMPLE).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.runner.capacity, 1);
        assert_eq!(config.runner.timeout, Duration::from_secs(3 * 3600));
        assert_eq!(config.runner.labels.len(), 3);
        assert!(config.cache.enabled);
    }

    #[test]
    fn act_runner_config_is_accepted_and_unknown_keys_warn() {
        let text = "log:\n  level: debug\nrunner:\n  capacity: 2\n  timeout: 1h30m\n  capcity: 3\ncontainer:\n  network_mode: host\nfuture_section:\n  x: 1\n";
        let (config, warnings) = Config::parse("c.yaml", text).unwrap();
        assert_eq!(config.runner.capacity, 2);
        assert_eq!(config.runner.timeout, Duration::from_secs(5400));
        assert_eq!(config.container.network, "host");
        assert_eq!(
            warnings,
            vec![
                "c.yaml: unknown key `runner.capcity` is ignored",
                "c.yaml: unknown key `future_section` is ignored"
            ]
        );
    }

    #[test]
    fn wrong_types_fail_with_the_place() {
        let err = Config::parse("c.yaml", "runner:\n  capacity: lots\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml") && err.contains("capacity") && err.contains("line 2"),
            "{err}"
        );
        let err = Config::parse("c.yaml", "runner:\n  timeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`soon` is not a duration"), "{err}");
        let err = Config::parse("c.yaml", "runner:\n  labels: ['bad:ftp://x']\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runner.labels"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("3 days").is_err());
    }
}
