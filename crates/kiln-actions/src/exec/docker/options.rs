//! `options:` of job and service containers (and the runner's `container.options`): the
//! `docker run`/`docker create` flags that make sense for a container kiln creates. Unknown flags
//! are an error naming the flag, so a typo does not silently change nothing.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, DeviceMapping, HealthConfig, ResourcesUlimits};

/// Parsed options; `apply` merges them into a create request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunOptions {
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub entrypoint: Option<String>,
    pub hostname: Option<String>,
    pub privileged: bool,
    pub init: bool,
    pub read_only: bool,
    pub nano_cpus: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub shm_size: Option<i64>,
    pub pids_limit: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub add_host: Vec<String>,
    pub dns: Vec<String>,
    pub tmpfs: HashMap<String, String>,
    pub ulimits: Vec<ResourcesUlimits>,
    pub devices: Vec<DeviceMapping>,
    pub group_add: Vec<String>,
    pub sysctls: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    /// `-v`/`--volume`, checked against `valid_volumes` by the caller.
    pub volumes: Vec<String>,
    pub network: Option<String>,
    pub network_aliases: Vec<String>,
    pub ipc: Option<String>,
    pub pid: Option<String>,
    pub health: Health,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Health {
    pub cmd: Option<String>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub retries: Option<i64>,
    pub start_period: Option<i64>,
    pub disabled: bool,
}

/// Flags that take no value.
const SWITCHES: &[&str] = &[
    "--privileged",
    "--init",
    "--read-only",
    "--no-healthcheck",
    "--rm",
];

impl RunOptions {
    /// Parse a `docker run` option string (shell quoting as in a shell).
    pub fn parse(text: &str) -> Result<RunOptions, String> {
        let words = shlex::split(text).ok_or_else(|| format!("unbalanced quotes in `{text}`"))?;
        let mut o = RunOptions::default();
        let mut i = 0;
        while i < words.len() {
            let word = &words[i];
            i += 1;
            if !word.starts_with('-') {
                return Err(format!(
                    "`{word}` is not an option (options start with `-`)"
                ));
            }
            let (flag, inline) = match word.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (word.clone(), None),
            };
            let flag = match flag.as_str() {
                "-e" => "--env",
                "-u" => "--user",
                "-w" => "--workdir",
                "-h" => "--hostname",
                "-m" => "--memory",
                "-v" => "--volume",
                "-l" => "--label",
                "--net" => "--network",
                "--net-alias" => "--network-alias",
                f => f,
            }
            .to_string();
            if SWITCHES.contains(&flag.as_str()) {
                let on = match inline.as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(v) => return Err(format!("{flag}: `{v}` is not true or false")),
                };
                match flag.as_str() {
                    "--privileged" => o.privileged = on,
                    "--init" => o.init = on,
                    "--read-only" => o.read_only = on,
                    "--no-healthcheck" => o.health.disabled = on,
                    _ => {} // --rm: kiln removes its containers anyway
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = words
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("{flag} needs a value"))?;
                    i += 1;
                    v
                }
            };
            let v = value.clone();
            match flag.as_str() {
                "--env" => o.env.push(v),
                "--user" => o.user = Some(v),
                "--workdir" => o.workdir = Some(v),
                "--entrypoint" => o.entrypoint = Some(v),
                "--hostname" => o.hostname = Some(v),
                "--cpus" => {
                    let cpus: f64 = v
                        .parse()
                        .ok()
                        .filter(|c: &f64| c.is_finite() && *c > 0.0)
                        .ok_or_else(|| format!("--cpus: `{v}` is not a positive number"))?;
                    o.nano_cpus = Some((cpus * 1e9) as i64);
                }
                "--cpuset-cpus" => o.cpuset_cpus = Some(v),
                "--memory" => o.memory = Some(bytes(&flag, &v)?),
                "--memory-swap" => {
                    o.memory_swap = Some(if v == "-1" { -1 } else { bytes(&flag, &v)? })
                }
                "--shm-size" => o.shm_size = Some(bytes(&flag, &v)?),
                "--pids-limit" => {
                    o.pids_limit = Some(
                        v.parse()
                            .map_err(|_| format!("--pids-limit: `{v}` is not a number"))?,
                    )
                }
                "--cap-add" => o.cap_add.push(v),
                "--cap-drop" => o.cap_drop.push(v),
                "--security-opt" => o.security_opt.push(v),
                "--add-host" => o.add_host.push(v),
                "--dns" => o.dns.push(v),
                "--tmpfs" => {
                    let (path, opts) = v.split_once(':').unwrap_or((&v, ""));
                    o.tmpfs.insert(path.to_string(), opts.to_string());
                }
                "--ulimit" => o.ulimits.push(ulimit(&v)?),
                "--device" => {
                    let mut parts = v.splitn(3, ':');
                    let host = parts.next().unwrap_or_default().to_string();
                    let container = parts.next().map(str::to_string).unwrap_or(host.clone());
                    let perms = parts.next().unwrap_or("rwm").to_string();
                    o.devices.push(DeviceMapping {
                        path_on_host: Some(host),
                        path_in_container: Some(container),
                        cgroup_permissions: Some(perms),
                    });
                }
                "--group-add" => o.group_add.push(v),
                "--sysctl" => {
                    let (k, val) = v
                        .split_once('=')
                        .ok_or_else(|| format!("--sysctl: `{v}` is not key=value"))?;
                    o.sysctls.insert(k.to_string(), val.to_string());
                }
                "--label" => {
                    let (k, val) = v.split_once('=').unwrap_or((&v, ""));
                    o.labels.insert(k.to_string(), val.to_string());
                }
                "--volume" => o.volumes.push(v),
                "--network" => o.network = Some(v),
                "--network-alias" => o.network_aliases.push(v),
                "--ipc" => o.ipc = Some(v),
                "--pid" => o.pid = Some(v),
                "--health-cmd" => o.health.cmd = Some(v),
                "--health-interval" => o.health.interval = Some(go_duration(&flag, &v)?),
                "--health-timeout" => o.health.timeout = Some(go_duration(&flag, &v)?),
                "--health-start-period" => {
                    o.health.start_period = Some(go_duration(&flag, &v)?)
                }
                "--health-retries" => {
                    o.health.retries = Some(
                        v.parse()
                            .map_err(|_| format!("--health-retries: `{v}` is not a number"))?,
                    )
                }
                other => {
                    return Err(format!(
                        "`{other}` is not supported (kiln accepts --env, --user, --workdir, --entrypoint, --hostname, --privileged, --init, --read-only, --cpus, --cpuset-cpus, --memory, --memory-swap, --shm-size, --pids-limit, --cap-add, --cap-drop, --security-opt, --add-host, --dns, --tmpfs, --ulimit, --device, --group-add, --sysctl, --label, --volume, --network, --network-alias, --ipc, --pid and the --health-* options)"
                    ))
                }
            }
        }
        Ok(o)
    }

    /// Merge into `body`: lists are appended, single values replace.
    pub fn apply(&self, body: &mut ContainerCreateBody) {
        let host = body.host_config.get_or_insert_with(Default::default);
        extend(&mut body.env, &self.env);
        if let Some(u) = &self.user {
            body.user = Some(u.clone());
        }
        if let Some(w) = &self.workdir {
            body.working_dir = Some(w.clone());
        }
        if let Some(e) = &self.entrypoint {
            body.entrypoint = Some(vec![e.clone()]);
        }
        if let Some(h) = &self.hostname {
            body.hostname = Some(h.clone());
        }
        if self.privileged {
            host.privileged = Some(true);
        }
        if self.init {
            host.init = Some(true);
        }
        if self.read_only {
            host.readonly_rootfs = Some(true);
        }
        set(&mut host.nano_cpus, self.nano_cpus);
        set(&mut host.cpuset_cpus, self.cpuset_cpus.clone());
        set(&mut host.memory, self.memory);
        set(&mut host.memory_swap, self.memory_swap);
        set(&mut host.shm_size, self.shm_size);
        set(&mut host.pids_limit, self.pids_limit);
        set(&mut host.ipc_mode, self.ipc.clone());
        set(&mut host.pid_mode, self.pid.clone());
        extend(&mut host.cap_add, &self.cap_add);
        extend(&mut host.cap_drop, &self.cap_drop);
        extend(&mut host.security_opt, &self.security_opt);
        extend(&mut host.extra_hosts, &self.add_host);
        extend(&mut host.dns, &self.dns);
        extend(&mut host.group_add, &self.group_add);
        extend(&mut host.ulimits, &self.ulimits);
        extend(&mut host.devices, &self.devices);
        if !self.tmpfs.is_empty() {
            host.tmpfs
                .get_or_insert_with(Default::default)
                .extend(self.tmpfs.clone());
        }
        if !self.sysctls.is_empty() {
            host.sysctls
                .get_or_insert_with(Default::default)
                .extend(self.sysctls.clone());
        }
        if !self.labels.is_empty() {
            body.labels
                .get_or_insert_with(Default::default)
                .extend(self.labels.clone());
        }
        let h = &self.health;
        if h.disabled {
            body.healthcheck = Some(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            });
        } else if h.cmd.is_some()
            || h.interval.is_some()
            || h.timeout.is_some()
            || h.retries.is_some()
            || h.start_period.is_some()
        {
            let hc = body.healthcheck.get_or_insert_with(Default::default);
            if let Some(cmd) = &h.cmd {
                hc.test = Some(vec!["CMD-SHELL".into(), cmd.clone()]);
            }
            set(&mut hc.interval, h.interval);
            set(&mut hc.timeout, h.timeout);
            set(&mut hc.retries, h.retries);
            set(&mut hc.start_period, h.start_period);
        }
    }
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

fn extend<T: Clone>(slot: &mut Option<Vec<T>>, values: &[T]) {
    if !values.is_empty() {
        slot.get_or_insert_with(Vec::new)
            .extend(values.iter().cloned());
    }
}

/// Docker's sizes: a number with an optional binary unit (`b k m g t`, an optional trailing `b`).
fn bytes(flag: &str, v: &str) -> Result<i64, String> {
    let lower = v.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{flag}: `{v}` is not a size"))?;
    let mult: f64 = match unit.trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{flag}: `{v}` has an unknown unit")),
    };
    Ok((n * mult) as i64)
}

/// A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn go_duration(flag: &str, v: &str) -> Result<i64, String> {
    let err = || format!("{flag}: `{v}` is not a duration such as 10s or 1m30s");
    let mut total = 0f64;
    let mut rest = v.trim();
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let n: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total += n * unit;
        rest = &rest[unit_end..];
    }
    Ok(total as i64)
}

/// `nofile=1024:2048`
fn ulimit(v: &str) -> Result<ResourcesUlimits, String> {
    let err = || format!("--ulimit: `{v}` is not name=soft[:hard]");
    let (name, limits) = v.split_once('=').ok_or_else(err)?;
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    Ok(ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(soft.parse().map_err(|_| err())?),
        hard: Some(hard.parse().map_err(|_| err())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_options() {
        let o = RunOptions::parse(
            "--health-cmd \"pg_isready -U postgres\" --health-interval 10s --health-timeout=5s --health-retries 5 -e A=1 --env B --cpus 1.5 -m 512m --privileged --tmpfs /run:rw,size=64m --ulimit nofile=1024:2048 -u 1000:1000",
        )
        .unwrap();
        assert_eq!(o.health.cmd.as_deref(), Some("pg_isready -U postgres"));
        assert_eq!(o.health.interval, Some(10_000_000_000));
        assert_eq!(o.health.timeout, Some(5_000_000_000));
        assert_eq!(o.health.retries, Some(5));
        assert_eq!(o.env, ["A=1", "B"]);
        assert_eq!(o.nano_cpus, Some(1_500_000_000));
        assert_eq!(o.memory, Some(512 * 1024 * 1024));
        assert!(o.privileged);
        assert_eq!(o.tmpfs["/run"], "rw,size=64m");
        assert_eq!(o.ulimits[0].hard, Some(2048));
        assert_eq!(o.user.as_deref(), Some("1000:1000"));
        let mut body = ContainerCreateBody::default();
        o.apply(&mut body);
        assert_eq!(
            body.healthcheck.unwrap().test.unwrap(),
            ["CMD-SHELL", "pg_isready -U postgres"]
        );
        assert_eq!(body.host_config.unwrap().privileged, Some(true));
    }

    #[test]
    fn errors_name_the_option() {
        for (text, needle) in [
            ("--gpus all", "--gpus"),
            ("--cpus lots", "--cpus"),
            ("--health-interval 10", "--health-interval"),
            ("--memory", "needs a value"),
            ("nonsense", "`nonsense` is not an option"),
            ("--env 'A=1", "quotes"),
            ("--privileged=maybe", "--privileged"),
        ] {
            let e = RunOptions::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(go_duration("x", "1m30s").unwrap(), 90_000_000_000);
        assert_eq!(go_duration("x", "250ms").unwrap(), 250_000_000);
        assert!(go_duration("x", "5 s").is_err());
        assert_eq!(bytes("x", "1g").unwrap(), 1 << 30);
        assert_eq!(bytes("x", "64MB").unwrap(), 64 << 20);
        assert_eq!(bytes("x", "1000").unwrap(), 1000);
        assert!(bytes("x", "1q").is_err());
    }
}
