//! A port of Gitea's jobparser (`gitea.com/gitea/act` `pkg/jobparser`, which Gitea 1.22–1.25
//! vendor; newer Gitea keeps it in `modules/actions/jobparser`): a workflow becomes one
//! single-job workflow per job and matrix combination.

mod matrix;
mod model;
mod value;

use std::collections::BTreeMap;

use kiln_actions::expr::{self, Contexts};
use serde_json::{json, Value as Json};
use serde_yaml_ng::Value;

pub(crate) use model::{Job, SingleWorkflow};

/// What `jobparser.Parse` gets from its options (`WithGitContext`, `WithVars`, `WithInputs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ParseOptions {
    /// The `github` context (`GenerateGiteaContext(run, nil).ToGitHubContext()`); `None` = no
    /// git context (then `github.*` cannot be read).
    pub github: Option<Json>,
    pub vars: BTreeMap<String, String>,
    pub inputs: Option<Json>,
}

/// A job of the workflow as the expressions in its name and `runs-on` see it.
struct JobResult {
    needs: Vec<String>,
}

/// The jobparser's `ExpressionEvaluator.Interpolate`: text without both `${{` and `}}` is kept;
/// otherwise the whole text is evaluated as a `format(...)`, and any error gives "".
fn interpolate(text: &str, ctx: &Contexts) -> String {
    if !text.contains("${{") || !text.contains("}}") {
        return text.to_string();
    }
    expr::interpolate(text, ctx).unwrap_or_default()
}

/// The contexts of the jobparser's `NewInterpeter`: github, vars, inputs, and for a job its
/// matrix, strategy and needs (needs without results or outputs: nothing has run yet).
fn contexts(
    opts: &ParseOptions,
    job: Option<(
        &str,
        &Job,
        &matrix::Combination,
        &BTreeMap<String, JobResult>,
    )>,
) -> Contexts {
    let mut ctx = Contexts::default();
    let github = opts.github.clone().unwrap_or(Json::Null);
    ctx.set("github", github.clone());
    ctx.set("gitea", github);
    ctx.set("vars", json!(opts.vars));
    ctx.set("inputs", opts.inputs.clone().unwrap_or(Json::Null));
    if let Some((id, job, combo, results)) = job {
        ctx.set(
            "matrix",
            combo
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        );
        let strategy = &job.strategy;
        if strategy.present {
            // act's GetFailFast/GetMaxParallel: defaults true and 4, unparsable values as Go
            // leaves them (false and 0).
            let fail_fast = match strategy.fail_fast.as_str() {
                "" => true,
                s => matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True"),
            };
            let max_parallel = match strategy.max_parallel.as_str() {
                "" => 4,
                s => s.parse::<i64>().unwrap_or(0),
            };
            ctx.set(
                "strategy",
                json!({"fail-fast": fail_fast, "max-parallel": max_parallel}),
            );
        } else {
            ctx.set("strategy", json!({}));
        }
        let own_needs = results.get(id).map(|r| r.needs.as_slice()).unwrap_or(&[]);
        let needs: serde_json::Map<String, Json> = own_needs
            .iter()
            .filter(|n| results.contains_key(*n))
            .map(|n| (n.clone(), json!({"outputs": {}, "result": ""})))
            .collect();
        ctx.set("needs", Json::Object(needs));
    }
    ctx
}

/// `jobparser.Parse`: one [`SingleWorkflow`] per job (in document order) and matrix
/// combination (sorted by their name suffix). Errors are what makes Gitea reject the workflow.
pub(crate) fn parse(content: &str, opts: &ParseOptions) -> Result<Vec<SingleWorkflow>, String> {
    let doc: Value =
        serde_yaml_ng::from_str(content).map_err(|e| format!("yaml.Unmarshal: {e}"))?;
    let (mut header, raw_jobs) = model::Header::decode(&doc)?;
    let Some(Value::Mapping(raw_jobs)) = raw_jobs else {
        return Err("invalid jobs: input node is not a mapping node".into());
    };
    let mut jobs = Vec::new();
    for (k, v) in &raw_jobs {
        let id = match k {
            Value::Sequence(_) | Value::Mapping(_) => {
                return Err("invalid jobs: not a valid scalar node".into())
            }
            k => model::scalar_text(k),
        };
        jobs.push((id.clone(), Job::decode(&id, v)?));
    }
    let results: BTreeMap<String, JobResult> = jobs
        .iter()
        .map(|(id, job)| (id.clone(), JobResult { needs: job.needs() }))
        .collect();

    header.run_name = interpolate(&header.run_name, &contexts(opts, None));

    let mut out = Vec::new();
    for (id, job) in &jobs {
        let mut combos =
            matrix::get_matrixes(job.strategy.present, job.strategy.raw_matrix.as_ref())?;
        // Go's sort.Slice by matrixName (not stable; equal names keep their order here).
        combos.sort_by_key(matrix::matrix_name);
        for combo in &combos {
            let mut single = job.clone();
            if single.name.is_empty() {
                single.name = id.clone();
            }
            single.strategy.matrix = matrix::encode_matrix(combo);
            let ctx = contexts(opts, Some((id, job, combo, &results)));
            single.name = name_with_matrix(&single.name, combo, &ctx);
            let runs_on: Vec<String> = job
                .runs_on_labels()
                .iter()
                .map(|l| interpolate(l, &ctx))
                .collect();
            single.runs_on_out = Some(encode_runs_on(&runs_on));
            out.push(SingleWorkflow {
                header: header.clone(),
                job_id: id.clone(),
                job: single,
            });
        }
    }
    Ok(out)
}

/// The jobparser's `nameWithMatrix`: a name without an expression gets ` (values)` appended; a
/// name with one is interpolated (with the matrix); without a matrix the name is kept as is,
/// expressions and all.
fn name_with_matrix(name: &str, combo: &matrix::Combination, ctx: &Contexts) -> String {
    if combo.is_empty() {
        return name.to_string();
    }
    if !name.contains("${{") || !name.contains("}}") {
        return format!("{name} {}", matrix::matrix_name(combo));
    }
    interpolate(name, ctx)
}

/// The jobparser's `encodeRunsOn`: one label as a string, otherwise a list (`[]` for none).
fn encode_runs_on(labels: &[String]) -> crate::fake::yaml::Y {
    use crate::fake::yaml::Y;
    match labels {
        [one] => Y::Str(one.clone()),
        many => Y::Seq(many.iter().map(|l| Y::Str(l.clone())).collect()),
    }
}

#[cfg(test)]
mod tests;
