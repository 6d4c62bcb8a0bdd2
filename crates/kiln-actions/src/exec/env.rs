//! The environment a step process sees, and shell selection for `run:` steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{JobSpec, Runner};

pub fn runner_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "X64",
        "aarch64" => "ARM64",
        "arm" => "ARM",
        "x86" => "X86",
        other => other,
    }
}

/// `ACTIONS_STEP_DEBUG` / `ACTIONS_RUNNER_DEBUG` set to true as a secret or variable.
pub fn debug_enabled(spec: &JobSpec) -> bool {
    ["ACTIONS_STEP_DEBUG", "ACTIONS_RUNNER_DEBUG"]
        .iter()
        .any(|k| {
            let t = |v: Option<&String>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            t(spec.secrets.get(*k)) || t(spec.vars.get(*k))
        })
}

/// Variables of kiln's own process that a job must not inherit: credentials kiln itself holds.
fn private_host_var(name: &str) -> bool {
    name.starts_with("KILN_")
        || name.starts_with("BUILDKIT_") && name.ends_with("_PEM_B64")
        || name == "GITEA_RUNNER_REGISTRATION_TOKEN"
}

/// `GITHUB_*` variables and where they come from in the `github` context.
const GITHUB_VARS: &[(&str, &str)] = &[
    ("GITHUB_ACTOR", "actor"),
    ("GITHUB_ACTOR_ID", "actor_id"),
    ("GITHUB_API_URL", "api_url"),
    ("GITHUB_BASE_REF", "base_ref"),
    ("GITHUB_EVENT_NAME", "event_name"),
    ("GITHUB_EVENT_PATH", "event_path"),
    ("GITHUB_GRAPHQL_URL", "graphql_url"),
    ("GITHUB_HEAD_REF", "head_ref"),
    ("GITHUB_JOB", "job"),
    ("GITHUB_REF", "ref"),
    ("GITHUB_REF_NAME", "ref_name"),
    ("GITHUB_REF_PROTECTED", "ref_protected"),
    ("GITHUB_REF_TYPE", "ref_type"),
    ("GITHUB_REPOSITORY", "repository"),
    ("GITHUB_REPOSITORY_ID", "repository_id"),
    ("GITHUB_REPOSITORY_OWNER", "repository_owner"),
    ("GITHUB_REPOSITORY_OWNER_ID", "repository_owner_id"),
    ("GITHUB_RETENTION_DAYS", "retention_days"),
    ("GITHUB_RUN_ATTEMPT", "run_attempt"),
    ("GITHUB_RUN_ID", "run_id"),
    ("GITHUB_RUN_NUMBER", "run_number"),
    ("GITHUB_SERVER_URL", "server_url"),
    ("GITHUB_SHA", "sha"),
    ("GITHUB_TRIGGERING_ACTOR", "triggering_actor"),
    ("GITHUB_WORKFLOW", "workflow"),
    ("GITHUB_WORKFLOW_REF", "workflow_ref"),
    ("GITHUB_WORKFLOW_SHA", "workflow_sha"),
    ("GITHUB_WORKSPACE", "workspace"),
];

/// Identity of the action a step runs, for `GITHUB_ACTION*`.
#[derive(Debug, Clone, Default)]
pub struct ActionIdentity {
    /// `GITHUB_ACTION`: the step id, or `__run`, `__owner_repo` for steps without one.
    pub action: String,
    pub path: Option<PathBuf>,
    pub repository: String,
    pub reference: String,
}

impl Runner {
    /// The full environment of a step process: kiln's own environment (minus its credentials), the
    /// runner's configured env, the `GITHUB_*`/`RUNNER_*` variables, then `env` (workflow, job,
    /// `GITHUB_ENV`, step), with `GITHUB_PATH` directories in front of `PATH`.
    pub(crate) fn process_env(
        &self,
        env: &BTreeMap<String, String>,
        action: &ActionIdentity,
    ) -> BTreeMap<String, String> {
        let base = match self.docker.as_ref().and_then(|d| d.job.as_ref()) {
            // In a job container the image's environment takes the place of kiln's own.
            Some(job) => job.env.clone(),
            None => std::env::vars()
                .filter(|(k, _)| !private_host_var(k))
                .collect(),
        };
        self.process_env_over(base, env, action)
    }

    /// [`Runner::process_env`] over an explicit base environment.
    pub(crate) fn process_env_over(
        &self,
        base: BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
        action: &ActionIdentity,
    ) -> BTreeMap<String, String> {
        let mut out = base;
        out.extend(self.config.env.clone());
        let github = self
            .state
            .ctx
            .values
            .get("github")
            .cloned()
            .unwrap_or(Value::Null);
        for (var, key) in GITHUB_VARS {
            let value = match github.get(*key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => crate::expr::to_display_string(v),
            };
            out.insert(var.to_string(), value);
        }
        out.insert("CI".into(), "true".into());
        out.insert("GITHUB_ACTIONS".into(), "true".into());
        out.insert("GITEA_ACTIONS".into(), "true".into());
        out.insert("RUNNER_OS".into(), "Linux".into());
        out.insert("RUNNER_ARCH".into(), runner_arch().into());
        out.insert("RUNNER_NAME".into(), self.config.runner_name.clone());
        out.insert(
            "RUNNER_TEMP".into(),
            self.temp.to_string_lossy().into_owned(),
        );
        out.insert(
            "RUNNER_TOOL_CACHE".into(),
            self.config.tool_cache.to_string_lossy().into_owned(),
        );
        out.insert("RUNNER_TRACKING_ID".into(), self.tracking_id.clone());
        let debug = self
            .state
            .ctx
            .values
            .get("runner")
            .and_then(|r| r.get("debug"))
            .and_then(Value::as_str)
            .is_some_and(|d| d == "1");
        if debug {
            out.insert("RUNNER_DEBUG".into(), "1".into());
        }
        out.insert("GITHUB_ACTION".into(), action.action.clone());
        out.insert(
            "GITHUB_ACTION_PATH".into(),
            action
                .path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        out.insert("GITHUB_ACTION_REPOSITORY".into(), action.repository.clone());
        out.insert("GITHUB_ACTION_REF".into(), action.reference.clone());
        out.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !self.state.path.is_empty() {
            let mut path = self.state.path.join(":");
            if let Some(old) = out.get("PATH").filter(|p| !p.is_empty()) {
                path.push(':');
                path.push_str(old);
            }
            out.insert("PATH".into(), path);
        }
        out
    }
}

/// Find `program` on the `PATH` of `env`.
pub fn which(program: &str, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path = env
        .get("PATH")
        .map(String::as_str)
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A resolved shell: the command line with `{0}` and the script file extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub extension: &'static str,
    /// The template as shown in the log (`bash --noprofile --norc -eo pipefail {0}`).
    pub display: String,
}

/// Resolve a step's `shell:` the way the runner does on Linux.
pub fn resolve_shell(shell: Option<&str>, env: &BTreeMap<String, String>) -> Result<Shell, String> {
    resolve_shell_with(shell, &|p| which(p, env), true).map_err(|e| match e {
        ShellError::NotFound(program) => format!(
            "shell `{program}` was not found on PATH ({})",
            env.get("PATH").map(String::as_str).unwrap_or("")
        ),
        ShellError::Invalid(message) => message,
    })
}

enum ShellError {
    NotFound(String),
    Invalid(String),
}

/// Resolve a step's `shell:` in a job container, knowing which programs it had at start. A shell
/// it did not have is still tried by name (an earlier step may have installed it).
pub fn resolve_container_shell(
    shell: Option<&str>,
    programs: &std::collections::HashMap<String, String>,
) -> Result<Shell, String> {
    resolve_shell_with(shell, &|p| programs.get(p).map(PathBuf::from), false).map_err(|e| match e {
        ShellError::NotFound(program) => {
            format!("shell `{program}` was not found in the job container")
        }
        ShellError::Invalid(message) => message,
    })
}

/// `lookup` finds a program; with `must_exist` a shell it cannot find is an error, otherwise the
/// bare name is used.
fn resolve_shell_with(
    shell: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<PathBuf>,
    must_exist: bool,
) -> Result<Shell, ShellError> {
    let template = match shell.map(str::trim) {
        None | Some("") => {
            if lookup("bash").is_some() {
                "bash -e {0}".to_string()
            } else {
                "sh -e {0}".to_string()
            }
        }
        Some("bash") => "bash --noprofile --norc -eo pipefail {0}".to_string(),
        Some("sh") => "sh -e {0}".to_string(),
        Some("python") => "python {0}".to_string(),
        Some("pwsh") => "pwsh -command \". '{0}'\"".to_string(),
        Some("powershell") => "powershell -command \". '{0}'\"".to_string(),
        Some("cmd") => {
            return Err(ShellError::Invalid(
                "shell `cmd` is only available on Windows runners".into(),
            ))
        }
        Some(custom) if custom.contains("{0}") => custom.to_string(),
        Some(custom) => format!("{custom} {{0}}"),
    };
    let words = split_words(&template).map_err(ShellError::Invalid)?;
    let (program, args) = words
        .split_first()
        .ok_or_else(|| ShellError::Invalid("empty shell".into()))?;
    let mut resolved = if program.contains('/') && !must_exist {
        Some(PathBuf::from(program))
    } else {
        lookup(program)
    };
    if resolved.is_none() && program == "python" {
        resolved = lookup("python3");
    }
    let program_path = match resolved {
        Some(p) => p,
        None if must_exist => return Err(ShellError::NotFound(program.clone())),
        None => PathBuf::from(program),
    };
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let extension = match name {
        "python" | "python3" => ".py",
        "pwsh" | "powershell" => ".ps1",
        _ => ".sh",
    };
    Ok(Shell {
        program: program_path,
        args: args.to_vec(),
        extension,
        display: template,
    })
}

/// Split a shell template into words: whitespace separates, single and double quotes group.
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in shell `{s}`"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("PATH".to_string(), "/usr/bin:/bin".to_string())].into()
    }

    #[test]
    fn shells() {
        let bash = resolve_shell(Some("bash"), &env()).unwrap();
        assert_eq!(
            bash.args,
            ["--noprofile", "--norc", "-eo", "pipefail", "{0}"]
        );
        assert!(bash.program.ends_with("bash"));
        assert_eq!(resolve_shell(None, &env()).unwrap().args, ["-e", "{0}"]);
        assert_eq!(
            resolve_shell(Some("sh"), &env()).unwrap().args,
            ["-e", "{0}"]
        );
        let custom = resolve_shell(Some("bash -x '{0}' 'a b'"), &env()).unwrap();
        assert_eq!(custom.args, ["-x", "{0}", "a b"]);
        let err = resolve_shell(Some("nosuchshell {0}"), &env()).unwrap_err();
        assert!(
            err.contains("nosuchshell") && err.contains("/usr/bin:/bin"),
            "{err}"
        );
        assert!(resolve_shell(Some("cmd"), &env())
            .unwrap_err()
            .contains("Windows"));
    }

    #[test]
    fn private_vars_are_not_inherited() {
        assert!(private_host_var("BUILDKIT_KEY_PEM_B64"));
        assert!(private_host_var("KILN_TOKEN"));
        assert!(!private_host_var("BUILDKIT_HOST"));
        assert!(!private_host_var("HOME"));
    }
}
