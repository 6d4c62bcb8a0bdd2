//! Job planning: stages of jobs in dependency order.

use super::error::ModelError;
use super::workflow::Workflow;

/// Plans the jobs of `workflow` in stages: each stage holds the jobs whose `needs` are all in
/// earlier stages, in file order, and the jobs of one stage may run concurrently.
///
/// With `job_filter`, only that job and the jobs it needs (transitively) are planned. An
/// unknown job in the filter or in `needs`, and a cycle in `needs`, are errors.
pub fn plan(workflow: &Workflow, job_filter: Option<&str>) -> Result<Vec<Vec<String>>, ModelError> {
    let file = workflow.file_name.as_str();
    let all = workflow.job_ids();
    for (id, job) in workflow.jobs.iter() {
        for need in &job.needs {
            if !workflow.jobs.contains_key(need) {
                return Err(ModelError::new(
                    file,
                    format!("jobs.{id}.needs"),
                    format!("job `{id}` needs `{need}`, which is not a job of this workflow"),
                ));
            }
        }
    }
    let selected: Vec<String> = match job_filter {
        None => all,
        Some(target) => {
            if !workflow.jobs.contains_key(target) {
                return Err(ModelError::new(
                    file,
                    "jobs",
                    format!("no job `{target}` in this workflow"),
                ));
            }
            let mut wanted = vec![target.to_string()];
            let mut i = 0;
            while i < wanted.len() {
                let job = &workflow.jobs.get(&wanted[i]).expect("known job");
                for need in &job.needs {
                    if !wanted.contains(need) {
                        wanted.push(need.clone());
                    }
                }
                i += 1;
            }
            all.into_iter().filter(|id| wanted.contains(id)).collect()
        }
    };
    if let Some(cycle) = find_cycle(workflow, &selected) {
        return Err(ModelError::new(
            file,
            format!("jobs.{}.needs", cycle[0]),
            format!("jobs form a cycle in `needs`: {}", cycle.join(" -> ")),
        ));
    }

    let mut done: Vec<String> = Vec::new();
    let mut stages = Vec::new();
    while done.len() < selected.len() {
        let stage: Vec<String> = selected
            .iter()
            .filter(|id| !done.contains(id))
            .filter(|id| {
                workflow
                    .jobs
                    .get(id)
                    .expect("known job")
                    .needs
                    .iter()
                    .all(|n| done.contains(n))
            })
            .cloned()
            .collect();
        if stage.is_empty() {
            // Unreachable after the cycle check; kept as a guard.
            return Err(ModelError::new(
                file,
                "jobs",
                "jobs form a cycle in `needs`",
            ));
        }
        done.extend(stage.iter().cloned());
        stages.push(stage);
    }
    Ok(stages)
}

/// Finds a cycle in `needs` among `jobs`: the jobs of the cycle, the first repeated at the end
/// (`a -> b -> a`). Needs on unknown jobs are ignored here.
pub(crate) fn find_cycle(workflow: &Workflow, jobs: &[String]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        wf: &Workflow,
        jobs: &[String],
        i: usize,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::Active;
        stack.push(i);
        let job = wf.jobs.get(&jobs[i])?;
        for need in &job.needs {
            let Some(j) = jobs.iter().position(|x| x == need) else {
                continue;
            };
            match marks[j] {
                Mark::Active => {
                    let start = stack.iter().position(|&s| s == j).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|&s| jobs[s].clone()).collect();
                    cycle.push(jobs[j].clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(wf, jobs, j, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; jobs.len()];
    for i in 0..jobs.len() {
        if marks[i] == Mark::New {
            let mut stack = Vec::new();
            if let Some(c) = visit(workflow, jobs, i, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}
