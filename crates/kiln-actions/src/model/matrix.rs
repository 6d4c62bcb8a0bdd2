//! Matrix expansion following GitHub's documented rules.

use serde_json::{Map, Value};

/// One combination of matrix values.
pub type Combination = Map<String, Value>;

/// Expands an evaluated matrix (an object of key → list of values, with optional `include`
/// and `exclude` lists of objects) into its combinations.
///
/// `key_order` gives the order of the keys in the file (serde_json sorts object keys); keys of
/// `matrix` missing from it come after, sorted. The first key varies slowest.
///
/// Rules (GitHub's "Running variations of jobs in a workflow"):
/// - the cartesian product of the keys, in key order;
/// - `exclude`: every combination that matches all key/values of an entry is removed (partial
///   matches; values compared as JSON);
/// - `include`: each entry is merged into every combination of the product whose original
///   matrix values it does not overwrite (it may add keys, and overwrite keys added by earlier
///   includes); an entry that fits no such combination becomes a combination of its own;
/// - a matrix with only `include` gives the includes; `null` gives one empty combination.
pub fn expand_matrix(matrix: &Value, key_order: &[String]) -> Result<Vec<Combination>, String> {
    let obj = match matrix {
        Value::Null => return Ok(vec![Map::new()]),
        Value::Object(o) => o,
        other => return Err(format!("the matrix must be a map, found {}", kind(other))),
    };
    let keys = ordered_keys(obj, key_order);
    let mut dims: Vec<(&str, &Vec<Value>)> = Vec::new();
    for k in &keys {
        match &obj[k.as_str()] {
            Value::Array(values) if values.is_empty() => {
                return Err(format!("matrix `{k}` has no values"));
            }
            Value::Array(values) => dims.push((k, values)),
            other => {
                return Err(format!(
                    "matrix `{k}` must be a list of values, found {}",
                    kind(other)
                ))
            }
        }
    }
    let include = entries(obj, "include")?;
    let exclude = entries(obj, "exclude")?;

    // The cartesian product, first key slowest.
    let mut combos: Vec<Combination> = if dims.is_empty() {
        Vec::new()
    } else {
        let mut acc = vec![Map::new()];
        for (k, values) in &dims {
            let mut next = Vec::with_capacity(acc.len() * values.len());
            for c in &acc {
                for v in values.iter() {
                    let mut c = c.clone();
                    c.insert(k.to_string(), v.clone());
                    next.push(c);
                }
            }
            acc = next;
        }
        acc
    };

    for ex in &exclude {
        for k in ex.keys() {
            if !obj.contains_key(k) || k == "include" || k == "exclude" {
                return Err(format!(
                    "matrix exclude key `{k}` does not match any key of the matrix"
                ));
            }
        }
        combos.retain(|c| !ex.iter().all(|(k, v)| c.get(k) == Some(v)));
    }

    let original = combos.len();
    let is_dim = |k: &str| dims.iter().any(|(d, _)| *d == k);
    let mut extra: Vec<Combination> = Vec::new();
    for inc in &include {
        let mut added = false;
        for c in combos.iter_mut().take(original) {
            let fits = inc
                .iter()
                .all(|(k, v)| !is_dim(k) || c.get(k).is_none_or(|cv| cv == v));
            if fits {
                for (k, v) in inc.iter() {
                    c.insert(k.clone(), v.clone());
                }
                added = true;
            }
        }
        if !added {
            extra.push(inc.clone());
        }
    }
    combos.extend(extra);
    if combos.is_empty() && dims.is_empty() && include.is_empty() {
        combos.push(Map::new());
    }
    Ok(combos)
}

/// The keys of a combination in display order: `key_order` first, then the others sorted.
pub fn ordered_keys(obj: &Map<String, Value>, key_order: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = key_order
        .iter()
        .filter(|k| obj.contains_key(k.as_str()) && *k != "include" && *k != "exclude")
        .cloned()
        .collect();
    for k in obj.keys() {
        if k != "include" && k != "exclude" && !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

/// The name of a job run for one combination, as GitHub shows it: the job's `name` (or id)
/// followed by the combination's values, `build (ubuntu-latest, 14)`. A name holding an
/// expression is returned as it is (it is interpolated later), and so is the name when the
/// combination is empty. Values are in `key_order`, then the other keys sorted; strings are
/// shown bare, other values as JSON.
pub fn job_display_name(
    job_id: &str,
    name: Option<&str>,
    combination: &Combination,
    key_order: &[String],
) -> String {
    let base = name.filter(|n| !n.is_empty()).unwrap_or(job_id);
    if combination.is_empty() || name.is_some_and(super::types::is_expression) {
        return base.to_string();
    }
    let values: Vec<String> = ordered_keys(combination, key_order)
        .iter()
        .map(|k| match &combination[k.as_str()] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    format!("{base} ({})", values.join(", "))
}

fn entries(obj: &Map<String, Value>, key: &str) -> Result<Vec<Combination>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::Object(o) => Ok(o.clone()),
                other => Err(format!(
                    "matrix `{key}` entries must be maps, found {}",
                    kind(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "matrix `{key}` must be a list of maps, found {}",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}
