//! Reusable workflows (`jobs.<id>.uses:`): where a called workflow comes from, the inputs and
//! secrets its caller binds (checked against the called workflow's `on: workflow_call`), and the
//! caller's outputs. The called workflow's jobs run inside the caller job through the planner of
//! [`crate::local`], as act_runner runs them for Gitea (its `reusable_workflow.go`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::exec::{ActionCache, ActionRef};
use crate::expr::{self, Contexts};
use crate::model::{JobSecrets, OrderedMap, Workflow, WorkflowCall};

/// How deep reusable workflows may call each other (GitHub's limit).
pub const MAX_DEPTH: usize = 10;

/// The workflow a `uses:` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowRef {
    /// `./.gitea/workflows/build.yml`: a file of the caller's own repository.
    Local(String),
    /// `owner/repo/.gitea/workflows/build.yml@ref` (from the base URL) or
    /// `https://host/owner/repo/.gitea/workflows/build.yml@ref`.
    Remote {
        /// The repository to clone.
        url: String,
        /// `owner/repo`.
        repo: String,
        /// The file inside the repository (`.gitea/workflows/build.yml`).
        file: String,
        reference: String,
    },
}

impl WorkflowRef {
    /// Reads a job's `uses:`; `base_url` is where `owner/repo/…` references are cloned from
    /// (the Gitea instance under the runner, `--actions-url` under `kiln exec`).
    pub fn parse(uses: &str, base_url: &str) -> Result<WorkflowRef, String> {
        let uses = uses.trim();
        if let Some(path) = uses.strip_prefix("./") {
            if path.split('/').any(|p| p == ".." || p.is_empty()) || path.contains('@') {
                return Err(format!(
                    "`{uses}` is not a valid local workflow: expected ./.gitea/workflows/FILE.yml"
                ));
            }
            return Ok(WorkflowRef::Local(path.to_string()));
        }
        let bad = || {
            format!(
                "`{uses}` is not a valid reusable workflow: expected ./.gitea/workflows/FILE.yml, \
                 OWNER/REPO/.gitea/workflows/FILE.yml@REF or \
                 https://HOST/OWNER/REPO/.gitea/workflows/FILE.yml@REF"
            )
        };
        let (location, reference) = uses.rsplit_once('@').ok_or_else(bad)?;
        if reference.is_empty() {
            return Err(bad());
        }
        let (base, rest) = match location.split_once("://") {
            Some((scheme, rest)) if scheme == "http" || scheme == "https" => {
                // The repository is the two segments before `/.<platform>/workflows/`.
                let at = rest.find("/.").ok_or_else(bad)?;
                let (prefix, file) = (&rest[..at], &rest[at + 1..]);
                let mut parts: Vec<&str> = prefix.split('/').collect();
                if parts.len() < 3 {
                    return Err(bad());
                }
                let repo = parts.split_off(parts.len() - 2).join("/");
                (
                    format!("{scheme}://{}", parts.join("/")),
                    format!("{repo}/{file}"),
                )
            }
            Some(_) => return Err(bad()),
            None => (
                base_url.trim_end_matches('/').to_string(),
                location.to_string(),
            ),
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(owner), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let in_workflows = file
            .strip_prefix('.')
            .and_then(|f| f.split_once('/'))
            .is_some_and(|(_, rest)| rest.starts_with("workflows/"));
        if owner.is_empty() || name.is_empty() || !in_workflows || file.contains("..") {
            return Err(bad());
        }
        Ok(WorkflowRef::Remote {
            url: format!("{base}/{owner}/{name}"),
            repo: format!("{owner}/{name}"),
            file: file.to_string(),
            reference: reference.to_string(),
        })
    }
}

/// Where a caller's `./` workflows are read.
#[derive(Debug, Clone)]
pub enum LocalWorkflows {
    /// The checkout the run works in (`kiln exec`).
    Workspace(PathBuf),
    /// The repository on the Gitea instance at the run's commit: a runner has no checkout
    /// when the job starts, so act_runner clones `owner/repo@sha` from the instance.
    Repository {
        /// Clone URL of the repository.
        url: String,
        /// `owner/repo`.
        repo: String,
        sha: String,
    },
}

/// Reads and validates the called workflow: it must be triggered by `workflow_call`.
pub(crate) async fn load(
    reference: &WorkflowRef,
    local: &LocalWorkflows,
    actions: &ActionCache,
) -> Result<Workflow, String> {
    let (path, shown) = match (reference, local) {
        (WorkflowRef::Local(file), LocalWorkflows::Workspace(dir)) => {
            (dir.join(file), format!("./{file}"))
        }
        (WorkflowRef::Local(file), LocalWorkflows::Repository { url, repo, sha }) => {
            let tree = fetch(actions, url, repo, sha).await?;
            (tree.join(file), format!("./{file}"))
        }
        (
            WorkflowRef::Remote {
                url,
                repo,
                file,
                reference,
            },
            _,
        ) => {
            let tree = fetch(actions, url, repo, reference).await?;
            (tree.join(file), format!("{repo}/{file}@{reference}"))
        }
    };
    let text = read_inside(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let workflow = Workflow::parse(&shown, &text).map_err(|e| e.to_string())?;
    if workflow.on.workflow_call().is_none() && !workflow.on.has("workflow_call") {
        return Err(format!(
            "{shown} cannot be called: its `on:` has no `workflow_call`"
        ));
    }
    Ok(workflow)
}

async fn fetch(
    actions: &ActionCache,
    url: &str,
    repo: &str,
    reference: &str,
) -> Result<PathBuf, String> {
    actions
        .fetch(&ActionRef::Remote {
            url: url.to_string(),
            repo: repo.to_string(),
            path: String::new(),
            reference: reference.to_string(),
        })
        .await
}

/// Reads a file that must not lead out of its directory tree through a symlink.
fn read_inside(path: &Path) -> Result<String, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() {
        return Err("it is a symbolic link".into());
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// The `inputs` of the called workflow: the caller's `with:` (evaluated in the caller's
/// contexts), else the declared defaults, converted to the declared types. An input the called
/// workflow does not declare, or a required one left out, is an error as on GitHub.
pub(crate) fn bind_inputs(
    call: &WorkflowCall,
    with: &OrderedMap<Value>,
    caller: &Contexts,
    file: &str,
) -> Result<Map<String, Value>, String> {
    for (name, _) in with.iter() {
        if !call
            .inputs
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return Err(format!(
                "{file}: invalid input `{name}`: it is not defined in the called workflow"
            ));
        }
    }
    let mut inputs = Map::new();
    for (name, input) in call.inputs.iter() {
        let given = with
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v);
        let value = match (given, &input.default) {
            (Some(v), _) | (None, Some(v)) => {
                evaluate(v, caller).map_err(|e| format!("{file}: input `{name}`: {e}"))?
            }
            (None, None) if input.required == Some(true) => {
                return Err(format!(
                    "{file}: input `{name}` is required, but the caller does not provide it"
                ))
            }
            (None, None) => Value::Null,
        };
        let typed = match input.input_type.as_deref() {
            Some("boolean") => match &value {
                Value::Bool(_) | Value::Null => value,
                v => Value::Bool(expr::to_display_string(v).trim() == "true"),
            },
            Some("number") => match &value {
                Value::Number(_) | Value::Null => value,
                v => {
                    let text = expr::to_display_string(v);
                    let n: f64 = text.trim().parse().map_err(|_| {
                        format!("{file}: input `{name}` must be a number, not `{text}`")
                    })?;
                    json!(n)
                }
            },
            _ => match &value {
                Value::String(_) | Value::Null => value,
                v => Value::String(expr::to_display_string(v)),
            },
        };
        inputs.insert(name.to_string(), typed);
    }
    Ok(inputs)
}

/// A `with:` value: strings are interpolated (a lone `${{ }}` keeps its type).
fn evaluate(value: &Value, ctx: &Contexts) -> Result<Value, expr::ExprError> {
    match value {
        Value::String(s) => expr::interpolate_value(s, ctx),
        other => Ok(other.clone()),
    }
}

/// The `secrets` of the called workflow: all of the caller's with `secrets: inherit`, else the
/// ones passed (evaluated in the caller's contexts); a required secret left out is an error.
pub(crate) fn bind_secrets(
    call: &WorkflowCall,
    passed: &Option<JobSecrets>,
    caller_secrets: &BTreeMap<String, String>,
    caller: &Contexts,
    file: &str,
) -> Result<BTreeMap<String, String>, String> {
    let secrets = match passed {
        Some(JobSecrets::Inherit) => return Ok(caller_secrets.clone()),
        None => BTreeMap::new(),
        Some(JobSecrets::Map(map)) => {
            let mut out = BTreeMap::new();
            for (name, value) in map.iter() {
                if !call
                    .secrets
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case(name))
                {
                    return Err(format!(
                        "{file}: invalid secret `{name}`: it is not defined in the called workflow"
                    ));
                }
                let value = expr::interpolate(value, caller)
                    .map_err(|e| format!("{file}: secret `{name}`: {e}"))?;
                out.insert(name.to_string(), value);
            }
            out
        }
    };
    for (name, declared) in call.secrets.iter() {
        let required = declared.as_ref().and_then(|d| d.required) == Some(true);
        if required && !secrets.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "{file}: secret `{name}` is required, but the caller does not provide it"
            ));
        }
    }
    Ok(secrets)
}

/// The caller's outputs: `on.workflow_call.outputs.<name>.value`, evaluated with the `jobs`
/// context of the called workflow (`{ job: { result, outputs } }`) and its `inputs`.
pub(crate) fn caller_outputs(
    call: &WorkflowCall,
    jobs: Value,
    base: &Contexts,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut ctx = base.clone();
    ctx.set("jobs", jobs);
    let mut outputs = BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, output) in call.outputs.iter() {
        match expr::interpolate(&output.value, &ctx) {
            Ok(v) => {
                outputs.insert(name.to_string(), v);
            }
            Err(e) => warnings.push(format!("output `{name}` of the called workflow: {e}")),
        }
    }
    (outputs, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let base = "https://gitea.example";
        assert_eq!(
            WorkflowRef::parse("./.gitea/workflows/build.yml", base),
            Ok(WorkflowRef::Local(".gitea/workflows/build.yml".into()))
        );
        assert_eq!(
            WorkflowRef::parse("org/lib/.github/workflows/ci.yml@v1", base),
            Ok(WorkflowRef::Remote {
                url: "https://gitea.example/org/lib".into(),
                repo: "org/lib".into(),
                file: ".github/workflows/ci.yml".into(),
                reference: "v1".into(),
            })
        );
        assert_eq!(
            WorkflowRef::parse(
                "http://127.0.0.1:3000/sub/org/lib/.gitea/workflows/ci.yml@main",
                base
            ),
            Ok(WorkflowRef::Remote {
                url: "http://127.0.0.1:3000/sub/org/lib".into(),
                repo: "org/lib".into(),
                file: ".gitea/workflows/ci.yml".into(),
                reference: "main".into(),
            })
        );
        for bad in [
            "org/lib/.gitea/workflows/ci.yml",
            "org/lib/ci.yml@v1",
            "org/.gitea/workflows/ci.yml@v1",
            "./../x.yml",
            "ftp://h/o/r/.gitea/workflows/x.yml@v1",
            "org/lib/.gitea/workflows/../../x.yml@v1",
        ] {
            assert!(WorkflowRef::parse(bad, base).is_err(), "{bad}");
        }
    }

    fn call(text: &str) -> WorkflowCall {
        let wf = Workflow::parse("w.yml", text).unwrap();
        wf.on.workflow_call().cloned().unwrap_or_default()
    }

    #[test]
    fn inputs_are_typed_defaulted_and_checked() {
        let call = call(
            "on:\n  workflow_call:\n    inputs:\n      name: {type: string, required: true}\n      \
             debug: {type: boolean, default: false}\n      count: {type: number, default: 2}\n\
             jobs:\n  a:\n    runs-on: x\n    steps: [{run: 'true'}]\n",
        );
        let mut ctx = Contexts::default();
        ctx.set("matrix", json!({"os": "linux"}));
        let mut with = OrderedMap::new();
        with.insert("name", json!("build-${{ matrix.os }}"));
        with.insert("debug", json!("true"));
        let inputs = bind_inputs(&call, &with, &ctx, "w.yml").unwrap();
        assert_eq!(
            Value::Object(inputs),
            json!({"name": "build-linux", "debug": true, "count": 2})
        );
        let err = bind_inputs(&call, &OrderedMap::new(), &ctx, "w.yml").unwrap_err();
        assert!(err.contains("`name` is required"), "{err}");
        with.insert("nope", json!(1));
        let err = bind_inputs(&call, &with, &ctx, "w.yml").unwrap_err();
        assert!(err.contains("invalid input `nope`"), "{err}");
    }

    #[test]
    fn secrets_are_passed_inherited_or_missing() {
        let call = call(
            "on:\n  workflow_call:\n    secrets:\n      token: {required: true}\n      extra:\n\
             jobs:\n  a:\n    runs-on: x\n    steps: [{run: 'true'}]\n",
        );
        let mut ctx = Contexts::default();
        ctx.set("secrets", json!({"MINE": "s3"}));
        let caller: BTreeMap<String, String> = [("MINE".to_string(), "s3".to_string())].into();
        assert_eq!(
            bind_secrets(&call, &Some(JobSecrets::Inherit), &caller, &ctx, "w").unwrap(),
            caller
        );
        let mut map = OrderedMap::new();
        map.insert("token", "${{ secrets.MINE }}".to_string());
        let bound = bind_secrets(&call, &Some(JobSecrets::Map(map)), &caller, &ctx, "w").unwrap();
        assert_eq!(bound["token"], "s3");
        let err = bind_secrets(&call, &None, &caller, &ctx, "w").unwrap_err();
        assert!(err.contains("`token` is required"), "{err}");
    }
}
