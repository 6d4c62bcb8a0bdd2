//! The job emitter: which blocked jobs of a run may start once others finished
//! (`services/actions/job_emitter.go`, `jobStatusResolver`, Gitea 1.22–1.25).

use std::collections::BTreeMap;

use super::JobStatus;

/// What the resolver knows of a job.
#[derive(Debug, Clone)]
pub(crate) struct ResolverJob {
    pub id: i64,
    /// The YAML key (`JobID`).
    pub key: String,
    pub status: JobStatus,
    /// Keys of the jobs it needs.
    pub needs: Vec<String>,
    /// `len(job.If.Value) > 0` of its payload (`resolveJobHasIfCondition`).
    pub has_if: bool,
}

/// `newJobStatusResolver(jobs).Resolve()`: the new status of every blocked job that can leave
/// that state.
///
/// A need names every job (matrix combination) with that key; a key no job has adds nothing, so
/// such a need is met at once. Each pass decides from the statuses before it (`resolve`), and
/// passes repeat (at most once per job) until nothing changes, so a skip cascades. A job whose
/// needs are all done becomes waiting if they all succeeded; otherwise it waits only when it has
/// its own `if:` (the runner evaluates it), else it is skipped. Gitea 1.25 also evaluates job
/// concurrency here; the fake has no concurrency groups.
pub(crate) fn resolve(jobs: &[ResolverJob]) -> BTreeMap<i64, JobStatus> {
    let mut by_key: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for j in jobs {
        by_key.entry(j.key.as_str()).or_default().push(j.id);
    }
    let needs: BTreeMap<i64, Vec<i64>> = jobs
        .iter()
        .map(|j| {
            let ids = j
                .needs
                .iter()
                .flat_map(|n| by_key.get(n.as_str()).into_iter().flatten().copied())
                .collect();
            (j.id, ids)
        })
        .collect();
    let mut statuses: BTreeMap<i64, JobStatus> = jobs.iter().map(|j| (j.id, j.status)).collect();
    let has_if: BTreeMap<i64, bool> = jobs.iter().map(|j| (j.id, j.has_if)).collect();
    let mut changed = BTreeMap::new();
    for _ in 0..statuses.len() {
        let updated = resolve_once(&statuses, &needs, &has_if);
        if updated.is_empty() {
            break;
        }
        for (id, s) in updated {
            changed.insert(id, s);
            statuses.insert(id, s);
        }
    }
    changed
}

/// One `jobStatusResolver.resolve` pass.
fn resolve_once(
    statuses: &BTreeMap<i64, JobStatus>,
    needs: &BTreeMap<i64, Vec<i64>>,
    has_if: &BTreeMap<i64, bool>,
) -> BTreeMap<i64, JobStatus> {
    let mut out = BTreeMap::new();
    for (&id, &status) in statuses {
        if status != JobStatus::Blocked {
            continue;
        }
        let need_statuses: Vec<JobStatus> = needs[&id].iter().map(|n| statuses[n]).collect();
        let all_done = need_statuses.iter().all(|s| s.is_done());
        if !all_done {
            continue;
        }
        let all_succeeded = need_statuses.iter().all(|s| {
            !matches!(
                s,
                JobStatus::Failure | JobStatus::Cancelled | JobStatus::Skipped
            )
        });
        let start = all_succeeded || has_if[&id];
        out.insert(
            id,
            if start {
                JobStatus::Waiting
            } else {
                JobStatus::Skipped
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    fn job(id: i64, key: &str, status: JobStatus, needs: &[&str], has_if: bool) -> ResolverJob {
        ResolverJob {
            id,
            key: key.into(),
            status,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            has_if,
        }
    }

    #[test]
    fn cases_from_gitea() {
        // (jobs, expected changes)
        type Case = (&'static str, Vec<ResolverJob>, Vec<(i64, JobStatus)>);
        let cases: Vec<Case> = vec![
            (
                "no blocked",
                vec![
                    job(1, "a", Success, &[], false),
                    job(2, "b", Waiting, &[], false),
                ],
                vec![],
            ),
            (
                "single success",
                vec![
                    job(1, "a", Success, &[], false),
                    job(2, "b", Blocked, &["a"], false),
                ],
                vec![(2, Waiting)],
            ),
            (
                "need still running",
                vec![
                    job(1, "a", Running, &[], false),
                    job(2, "b", Blocked, &["a"], false),
                ],
                vec![],
            ),
            (
                "failed need skips",
                vec![
                    job(1, "a", Failure, &[], false),
                    job(2, "b", Blocked, &["a"], false),
                ],
                vec![(2, Skipped)],
            ),
            (
                "failed need with if waits",
                vec![
                    job(1, "a", Failure, &[], false),
                    job(2, "b", Blocked, &["a"], true),
                ],
                vec![(2, Waiting)],
            ),
            (
                "skips cascade",
                vec![
                    job(1, "a", Cancelled, &[], false),
                    job(2, "b", Blocked, &["a"], false),
                    job(3, "c", Blocked, &["b"], false),
                    job(4, "d", Blocked, &["c"], true),
                ],
                vec![(2, Skipped), (3, Skipped), (4, Waiting)],
            ),
            (
                "matrix: every combination must be done",
                vec![
                    job(1, "a", Success, &[], false),
                    job(2, "a", Running, &[], false),
                    job(3, "b", Blocked, &["a"], false),
                ],
                vec![],
            ),
            (
                "unknown need is met",
                vec![job(1, "b", Blocked, &["nope"], false)],
                vec![(1, Waiting)],
            ),
        ];
        for (name, jobs, want) in cases {
            let got: Vec<(i64, JobStatus)> = resolve(&jobs).into_iter().collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
