//! Expressions checked when a workflow is read, as GitHub validates a workflow before it queues
//! a run: a syntax error, an unknown function or an unknown context anywhere in a job fails
//! before the job's first step runs, with the position of the error, instead of when the step
//! that holds it is reached after earlier steps ran.

use serde_yaml_ng::Value;

use super::error::ModelError;
use crate::expr::{self, ExprError};

/// Parses every expression of the workflow's `run-name`, `env` and jobs (the keys GitHub
/// evaluates; `on:` is not evaluated). `if:` keys are read as conditions (the `${{ }}` is
/// optional there). Errors name the key path and its line and column in `text`.
pub(crate) fn check_expressions(file: &str, text: &str) -> Result<(), ModelError> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ModelError::new(file, "", format!("invalid YAML: {e}")))?;
    let Some(top) = doc.as_mapping() else {
        return Ok(());
    };
    for key in ["run-name", "env", "jobs"] {
        if let Some(value) = top.get(key) {
            walk(value, key.to_string(), false)
                .map_err(|(path, e)| ModelError::new(file, path, e.to_string()).located(text))?;
        }
    }
    Ok(())
}

/// Depth-first over a YAML node; `condition` says the node is the value of an `if:` key.
fn walk(node: &Value, path: String, condition: bool) -> Result<(), (String, ExprError)> {
    match node {
        Value::String(s) => {
            let checked = if condition {
                expr::check_condition(s)
            } else if expr::has_expression(s) {
                expr::check_template(s)
            } else {
                Ok(())
            };
            checked.map_err(|e| (path, e))
        }
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, format!("{path}[{i}]"), false)),
        Value::Mapping(map) => map.iter().try_for_each(|(k, v)| {
            let key = k.as_str().unwrap_or_default();
            walk(v, format!("{path}.{key}"), key == "if")
        }),
        Value::Tagged(tagged) => walk(&tagged.value, path, condition),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        check_expressions("ci.yml", text).map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_function_in_a_later_step_names_its_position() {
        let text = "on: push
jobs:
  build:
    runs-on: x
    steps:
      - run: echo first
      - run: echo ${{ noSuchFunction('x') }}
";
        let err = check(text).unwrap_err();
        assert!(
            err.starts_with("ci.yml:7:") && err.contains("jobs.build.steps[1].run"),
            "{err}"
        );
        assert!(
            err.contains("Unrecognized function: 'noSuchFunction'")
                && err.contains("Located at position 1 within expression: noSuchFunction('x')"),
            "{err}"
        );
    }

    #[test]
    fn conditions_need_no_braces_and_other_keys_need_them() {
        let ok = "on: push
jobs:
  a:
    if: github.event_name == 'push' && success()
    runs-on: x
    steps:
      - if: ${{ always() }}
        run: echo 'not ${ an expression }'
        env:
          X: ${{ format('{0}', matrix.os) }}
";
        assert_eq!(check(ok), Ok(()));
        let bad_if = "on: push
jobs:
  a:
    runs-on: x
    steps:
      - if: steps.x.outcome = 'success'
        run: echo
";
        let err = check(bad_if).unwrap_err();
        assert!(err.contains("jobs.a.steps[0].if"), "{err}");
    }

    #[test]
    fn unknown_context_unclosed_template_and_top_level_env_are_errors() {
        for (text, path) in [
            (
                "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ nope.x }}\n",
                "jobs.a.steps[0].run",
            ),
            (
                "on: push\njobs:\n  a:\n    runs-on: ${{ matrix.os\n    steps: []\n",
                "jobs.a.runs-on",
            ),
            (
                "on: push\nenv:\n  A: ${{ 1 + }}\njobs:\n  a:\n    runs-on: x\n",
                "env.A",
            ),
        ] {
            let err = check(text).unwrap_err();
            assert!(err.contains(path), "{path}: {err}");
        }
    }

    #[test]
    fn triggers_are_not_expressions() {
        let text =
            "on:\n  push:\n    branches: ['${{ not checked }}']\njobs:\n  a:\n    runs-on: x\n";
        assert_eq!(check(text), Ok(()));
    }
}
