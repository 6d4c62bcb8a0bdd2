//! What Gitea's jobparser makes of a workflow: the one-job payload and the step display names.

use serde_yaml_ng::{Mapping, Value};

/// A queued job's payload and step names.
#[derive(Debug, Clone)]
pub(crate) struct ParsedJob {
    pub payload: Vec<u8>,
    pub step_names: Vec<String>,
}

/// Cuts `job_id` out of `workflow_yaml` into a one-job workflow, keeping top-level `name`, `on`,
/// `env` and `defaults` like Gitea's jobparser does.
pub(crate) fn parse_job(workflow_yaml: &str, job_id: &str) -> Result<ParsedJob, String> {
    let doc: Value =
        serde_yaml_ng::from_str(workflow_yaml).map_err(|e| format!("workflow YAML: {e}"))?;
    let top = doc
        .as_mapping()
        .ok_or_else(|| "workflow YAML is not a mapping".to_string())?;
    let job = top
        .get("jobs")
        .and_then(|j| j.get(job_id))
        .ok_or_else(|| format!("workflow has no job {job_id:?}"))?;
    let mut out = Mapping::new();
    for key in ["name", "on", "env", "defaults"] {
        if let Some(v) = top.get(key) {
            out.insert(Value::from(key), v.clone());
        }
    }
    let mut jobs = Mapping::new();
    jobs.insert(Value::from(job_id), job.clone());
    out.insert(Value::from("jobs"), Value::Mapping(jobs));
    let payload = serde_yaml_ng::to_string(&Value::Mapping(out))
        .map_err(|e| format!("writing payload: {e}"))?
        .into_bytes();
    let step_names = job
        .get("steps")
        .and_then(Value::as_sequence)
        .map(|steps| steps.iter().map(step_name).collect())
        .unwrap_or_default();
    Ok(ParsedJob {
        payload,
        step_names,
    })
}

/// Display name of a step: `name`, else `Run <first line of run>`, else `Run <uses>`.
fn step_name(step: &Value) -> String {
    let field = |k: &str| step.get(k).and_then(Value::as_str).map(str::trim);
    if let Some(name) = field("name").filter(|s| !s.is_empty()) {
        return name.to_string();
    }
    if let Some(run) = field("run") {
        return format!("Run {}", run.lines().next().unwrap_or("").trim());
    }
    if let Some(uses) = field("uses") {
        return format!("Run {uses}");
    }
    field("id").unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WF: &str = r#"
name: CI
on: [push]
env:
  GLOBAL: "1"
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: |
          echo one
          echo two
      - name: Named
        run: true
  other:
    runs-on: other
    steps: []
"#;

    #[test]
    fn payload_holds_only_the_chosen_job_and_top_level_keys() {
        let job = parse_job(WF, "build").unwrap();
        let v: Value = serde_yaml_ng::from_slice(&job.payload).unwrap();
        assert_eq!(v.get("name").and_then(Value::as_str), Some("CI"));
        assert!(v.get("on").is_some());
        assert!(v.get("env").is_some());
        let jobs = v.get("jobs").and_then(Value::as_mapping).unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(jobs.get("build").is_some());
        assert_eq!(
            job.step_names,
            ["Run actions/checkout@v4", "Run echo one", "Named"]
        );
    }

    #[test]
    fn missing_job_is_an_error() {
        assert!(parse_job(WF, "nope").unwrap_err().contains("nope"));
    }
}
