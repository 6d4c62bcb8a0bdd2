//! What a task carries besides its payload, as Gitea 1.24–1.25 build it: the `github` context
//! (`services/actions/context.go` `GenerateGiteaContext`), `needs` (`FindTaskNeeds`,
//! `mergeTwoOutputs`, `models/actions/run_job.go` `AggregateJobStatus`) and secrets
//! (`models/secret` `GetSecretsOfTask`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::runs::{JobRow, RunRow};
use super::JobStatus;
use crate::proto;

/// The commit every fake run is for, unless the test's context says otherwise.
pub(crate) const DEFAULT_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// The push event payload a run gets unless the test gives one.
pub(crate) fn default_event() -> Value {
    json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": DEFAULT_SHA,
        "repository": {"full_name": "owner/repo", "name": "repo", "owner": {"login": "owner"}},
        "pusher": {"login": "tester"},
        "sender": {"login": "tester"},
    })
}

/// `git.RefName(ref).ShortName()` and `.RefType()`.
fn short_name_and_type(r: &str) -> (String, &'static str) {
    if let Some(b) = r.strip_prefix("refs/heads/") {
        (b.to_string(), "branch")
    } else if let Some(t) = r.strip_prefix("refs/tags/") {
        (t.to_string(), "tag")
    } else if let Some(p) = r.strip_prefix("refs/pull/") {
        (p.strip_suffix("/head").unwrap_or(p).to_string(), "pull")
    } else if let Some(f) = r.strip_prefix("refs/for/") {
        (f.to_string(), "for")
    } else {
        (r.to_string(), "")
    }
}

/// `GenerateGiteaContext(run, job)`: without a job (parsing the workflow) `job` is "" and
/// `run_attempt` is ""; the test's own keys are laid over the result.
///
/// Gitea 1.22–1.23 built this in `routers/api/actions/runner/utils.go` `generateTaskContext`
/// and sent the *numeric* job row id as `job`; 1.24 (`GenerateGiteaContext`) sends the YAML key.
pub(crate) fn gitea_context(
    base_url: &str,
    run: &RunRow,
    job: Option<&JobRow>,
) -> Map<String, Value> {
    let app_url = format!("{base_url}/");
    let event = &run.event;
    let mut base_ref = String::new();
    let mut head_ref = String::new();
    let mut git_ref = run.git_ref.clone();
    let mut sha = run.sha.clone();
    // `run.GetPullRequestEventPayload()`: only pull request events carry base and head.
    let pr = event.get("pull_request");
    if let (true, Some(base), Some(head)) = (
        run.event_name.starts_with("pull_request"),
        pr.and_then(|p| p.get("base")).filter(|b| b.is_object()),
        pr.and_then(|p| p.get("head")).filter(|h| h.is_object()),
    ) {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        base_ref = text(base, "ref");
        head_ref = text(head, "ref");
        if run.event_name == "pull_request_target" {
            // PRBranchInfo.Name is the JSON `label`.
            git_ref = format!("refs/heads/{}", text(base, "label"));
            sha = text(base, "sha");
        }
    }
    let (ref_name, ref_type) = short_name_and_type(&git_ref);
    let (owner, _) = run
        .repository
        .split_once('/')
        .unwrap_or((&run.repository, ""));
    let mut ctx = json!({
        "action": "",
        "action_path": "",
        "action_ref": "",
        "action_repository": "",
        "action_status": "",
        "actor": run.actor,
        "api_url": format!("{app_url}api/v1"),
        "base_ref": base_ref,
        "env": "",
        "event": event,
        "event_name": run.event_name,
        "event_path": "",
        "graphql_url": "",
        "head_ref": head_ref,
        "job": "",
        "ref": git_ref,
        "ref_name": ref_name,
        "ref_protected": false,
        "ref_type": ref_type,
        "path": "",
        "repository": run.repository,
        "repository_owner": owner,
        "repositoryUrl": format!("{app_url}{}", run.repository),
        "retention_days": "",
        "run_id": run.id.to_string(),
        "run_number": run.index.to_string(),
        "run_attempt": "",
        "secret_source": "Actions",
        "server_url": app_url,
        "sha": sha,
        "triggering_actor": "",
        "workflow": run.workflow_file,
        "workspace": "",
        "gitea_default_actions_url": "https://github.com",
    });
    let map = ctx.as_object_mut().expect("context is an object");
    if let Some(job) = job {
        map.insert("job".into(), json!(job.job.key));
        map.insert("run_attempt".into(), json!(job.attempt.to_string()));
    }
    for (k, v) in &run.overrides {
        map.insert(k.clone(), v.clone());
    }
    std::mem::take(map)
}

/// `GiteaContext.ToGitHubContext()`: the keys act's `GithubContext` has (no token).
pub(crate) fn github_context(ctx: &Map<String, Value>) -> Value {
    const KEYS: [&str; 25] = [
        "event",
        "event_path",
        "workflow",
        "run_id",
        "run_number",
        "actor",
        "repository",
        "event_name",
        "sha",
        "ref",
        "ref_name",
        "ref_type",
        "head_ref",
        "base_ref",
        "workspace",
        "action",
        "action_path",
        "action_ref",
        "action_repository",
        "job",
        "repository_owner",
        "retention_days",
        "server_url",
        "api_url",
        "graphql_url",
    ];
    let mut out: Map<String, Value> = KEYS
        .iter()
        .map(|k| (k.to_string(), ctx.get(*k).cloned().unwrap_or(json!(""))))
        .collect();
    out.insert("token".into(), json!(""));
    Value::Object(out)
}

/// `models/actions/run_job.go` `AggregateJobStatus` as of Gitea 1.25 (cancelled, then running,
/// then waiting, then failure: a run with a failure still running is running; 1.22–1.24 ranked
/// failure right after cancelled). `None` is `StatusUnknown` (no jobs).
pub(crate) fn aggregate_job_status(statuses: &[JobStatus]) -> Option<JobStatus> {
    use JobStatus::*;
    let any = |s: JobStatus| statuses.contains(&s);
    let non_empty = !statuses.is_empty();
    if non_empty && statuses.iter().all(|s| *s == Skipped) {
        Some(Skipped)
    } else if non_empty && statuses.iter().all(|s| matches!(s, Success | Skipped)) {
        Some(Success)
    } else if any(Cancelled) {
        Some(Cancelled)
    } else if any(Running) {
        Some(Running)
    } else if any(Waiting) {
        Some(Waiting)
    } else if any(Failure) {
        Some(Failure)
    } else if any(Blocked) {
        Some(Blocked)
    } else {
        None
    }
}

/// `mergeTwoOutputs(o1, o2)`: o1's keys, with o2's value where o1's is empty. Keys only o2 has
/// are dropped, as in Gitea.
pub(crate) fn merge_two_outputs(
    o1: &BTreeMap<String, String>,
    o2: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    o1.iter()
        .map(|(k, v)| {
            let v = if v.is_empty() {
                o2.get(k).cloned().unwrap_or_default()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// `FindTaskNeeds` (Gitea 1.23–1.25): one entry per needed job key that exists in the run, even
/// when its jobs never ran (a skipped job has no task: empty outputs, result skipped); matrix
/// siblings' statuses aggregated and their outputs merged in creation order. The result is the
/// Gitea status cast to the protocol's `Result` number, as Gitea does.
///
/// Gitea 1.22 (`findTaskNeeds` in the runner API) sent one entry per *job row*, so the last
/// matrix sibling won, and left out jobs without a task.
pub(crate) fn find_task_needs(
    job: &JobRow,
    run_jobs: &[&JobRow],
    outputs_of: impl Fn(i64) -> BTreeMap<String, String>,
) -> BTreeMap<String, proto::TaskNeed> {
    let mut by_key: BTreeMap<&str, Vec<&JobRow>> = BTreeMap::new();
    for j in run_jobs {
        by_key.entry(j.job.key.as_str()).or_default().push(j);
    }
    let mut out = BTreeMap::new();
    for (key, siblings) in by_key {
        if !job.job.needs.iter().any(|n| n == key) {
            continue;
        }
        let mut outputs: BTreeMap<String, String> = BTreeMap::new();
        for sibling in &siblings {
            let Some(task_id) = sibling.job.task_id.filter(|_| sibling.job.status.is_done()) else {
                continue;
            };
            let got = outputs_of(task_id);
            outputs = if outputs.is_empty() {
                got
            } else {
                merge_two_outputs(&got, &outputs)
            };
        }
        let statuses: Vec<JobStatus> = siblings.iter().map(|j| j.job.status).collect();
        let result = aggregate_job_status(&statuses).map_or(0, JobStatus::gitea_code);
        out.insert(key.to_string(), proto::TaskNeed { outputs, result });
    }
    out
}

/// `GetSecretsOfTask`: the task token as `GITHUB_TOKEN` and `GITEA_TOKEN`, then the repository's
/// secrets (fork pull requests other than `pull_request_target` get only the tokens; the fake
/// has no forks).
pub(crate) fn secrets_of_task(
    token: &str,
    secrets: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("GITHUB_TOKEN".to_string(), token.to_string());
    out.insert("GITEA_TOKEN".to_string(), token.to_string());
    out.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_job_status_ranks_like_gitea_1_25() {
        use JobStatus::*;
        assert_eq!(aggregate_job_status(&[Success, Skipped]), Some(Success));
        assert_eq!(aggregate_job_status(&[Skipped, Skipped]), Some(Skipped));
        assert_eq!(aggregate_job_status(&[Success, Failure]), Some(Failure));
        assert_eq!(aggregate_job_status(&[Failure, Cancelled]), Some(Cancelled));
        assert_eq!(aggregate_job_status(&[Failure, Running]), Some(Running));
        assert_eq!(aggregate_job_status(&[Failure, Waiting]), Some(Waiting));
        assert_eq!(aggregate_job_status(&[Failure, Blocked]), Some(Failure));
        assert_eq!(aggregate_job_status(&[]), None);
    }

    #[test]
    fn merge_two_outputs_keeps_only_the_newer_keys() {
        let m = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let merged = merge_two_outputs(&m(&[("a", ""), ("b", "2")]), &m(&[("a", "1"), ("c", "3")]));
        assert_eq!(merged, m(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn ref_names_and_types() {
        assert_eq!(
            short_name_and_type("refs/heads/main"),
            ("main".into(), "branch")
        );
        assert_eq!(short_name_and_type("refs/tags/v1"), ("v1".into(), "tag"));
        assert_eq!(
            short_name_and_type("refs/pull/3/head"),
            ("3".into(), "pull")
        );
    }
}
