//! Matrix expansion as Gitea 1.22–1.25 does it: act's `Job.GetMatrixes` (the `gitea.com/gitea/act`
//! fork's include handling), `common.CartesianProduct`, and the jobparser's `matrixName`,
//! `encodeMatrix` and `nameWithMatrix`.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::model::{go_map, GoAny};
use crate::fake::yaml::Y;

/// One matrix combination.
pub(crate) type Combination = BTreeMap<String, GoAny>;

/// act's `Job.Matrix()`: `map[string][]interface{}` or nothing (a scalar matrix such as
/// `${{ fromJSON(...) }}`, or any key whose value is not a list, gives no matrix at all: Gitea
/// 1.22–1.25 do not evaluate matrix expressions on the server).
fn decode_matrix(raw: Option<&Value>) -> Option<BTreeMap<String, Vec<GoAny>>> {
    let Some(Value::Mapping(m)) = raw else {
        return None;
    };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let list = match v {
            Value::Sequence(s) => s.iter().map(GoAny::from_value).collect(),
            Value::Null => Vec::new(),
            _ => return None,
        };
        out.insert(super::model::scalar_text(k), list);
    }
    Some(out)
}

fn as_map(v: &GoAny, what: &str) -> Result<Combination, String> {
    match v {
        GoAny::Map(m) => Ok(m.clone()),
        other => Err(format!(
            "matrix {what} entry {} is not a mapping (Gitea's jobparser panics on it)",
            other.sprint()
        )),
    }
}

/// act's `commonKeysMatch`: every key of `a` that `b` has holds the same value.
fn common_keys_match(a: &Combination, b: &Combination) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|bv| bv == v))
}

/// act's `commonKeysMatch2`: like [`common_keys_match`], limited to the matrix's own keys.
fn common_keys_match2(a: &Combination, b: &Combination, m: &BTreeMap<String, Vec<GoAny>>) -> bool {
    a.iter()
        .all(|(k, v)| !m.contains_key(k) || b.get(k).is_none_or(|bv| bv == v))
}

/// act's `common.CartesianProduct` (the last key varies fastest; keys in sorted order, Go's are
/// in map order, which only changes how equally named combinations are ordered).
fn cartesian_product(m: &BTreeMap<String, Vec<GoAny>>) -> Vec<Combination> {
    if m.is_empty() || m.values().any(Vec::is_empty) {
        return Vec::new();
    }
    let keys: Vec<&String> = m.keys().collect();
    let mut idx = vec![0usize; keys.len()];
    let mut out = Vec::new();
    loop {
        out.push(
            keys.iter()
                .zip(&idx)
                .map(|(k, &i)| ((*k).clone(), m[*k][i].clone()))
                .collect(),
        );
        let mut j = keys.len();
        loop {
            if j == 0 {
                return out;
            }
            j -= 1;
            idx[j] += 1;
            if idx[j] < m[keys[j]].len() {
                break;
            }
            idx[j] = 0;
        }
    }
}

/// act's `Job.GetMatrixes` for a job whose `strategy:` is present (`strategy_present`) with the
/// raw `matrix:` node; always at least one (possibly empty) combination.
pub(crate) fn get_matrixes(
    strategy_present: bool,
    raw_matrix: Option<&Value>,
) -> Result<Vec<Combination>, String> {
    let empty = || vec![Combination::new()];
    if !strategy_present {
        return Ok(empty());
    }
    let Some(mut m) = decode_matrix(raw_matrix) else {
        return Ok(empty());
    };
    let mut includes = Vec::new();
    let mut extra_includes = Vec::new();
    for v in m.remove("include").unwrap_or_default() {
        let entries = match &v {
            GoAny::Seq(list) => list
                .iter()
                .map(|i| as_map(i, "include"))
                .collect::<Result<_, _>>()?,
            GoAny::Null => Vec::new(),
            other => vec![as_map(other, "include")?],
        };
        for i in entries {
            // The gitea/act fork: an include sharing no key with the matrix is an extra
            // combination; the others are matched against the product below.
            if i.keys().any(|k| m.contains_key(k)) {
                includes.push(i);
            } else {
                extra_includes.push(i);
            }
        }
    }
    let mut excludes = Vec::new();
    for e in m.remove("exclude").unwrap_or_default() {
        let e = as_map(&e, "exclude")?;
        for k in e.keys() {
            if !m.contains_key(k) {
                return Err(format!(
                    "getMatrixes: GetMatrixes: the workflow is not valid. Matrix exclude key {k:?} does not match any key within the matrix"
                ));
            }
        }
        excludes.push(e);
    }
    let mut matrixes: Vec<Combination> = cartesian_product(&m)
        .into_iter()
        .filter(|c| !excludes.iter().any(|e| common_keys_match(c, e)))
        .collect();
    for include in includes {
        let mut matched = false;
        for combo in matrixes.iter_mut() {
            if common_keys_match2(combo, &include, &m) {
                matched = true;
                combo.extend(include.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if !matched {
            extra_includes.push(include);
        }
    }
    matrixes.extend(extra_includes);
    if matrixes.is_empty() {
        matrixes.push(Combination::new());
    }
    Ok(matrixes)
}

/// The jobparser's `matrixName`: values in key order, `fmt.Sprint`ed, as `(a, b)`.
pub(crate) fn matrix_name(m: &Combination) -> String {
    let values: Vec<String> = m.values().map(GoAny::sprint).collect();
    format!("({})", values.join(", "))
}

/// The jobparser's `encodeMatrix`: `{key: [value]}`, or nothing for an empty combination.
pub(crate) fn encode_matrix(m: &Combination) -> Option<Y> {
    (!m.is_empty()).then(|| go_map(m.iter().map(|(k, v)| (k.clone(), Y::Seq(vec![v.to_y()])))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrixes(yaml: &str) -> Result<Vec<String>, String> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut out: Vec<String> = get_matrixes(true, Some(&v))?
            .iter()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.sprint()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        out.sort();
        Ok(out)
    }

    #[test]
    fn product_exclude_and_include_follow_act() {
        assert_eq!(
            matrixes("os: [a, b]\nv: [1, 2]\nexclude:\n  - {os: b, v: 2}\n").unwrap(),
            ["os=a,v=1", "os=a,v=2", "os=b,v=1"]
        );
        // An include matching existing combinations extends them; one that matches none, or
        // shares no key with the matrix, is a combination of its own.
        assert_eq!(
            matrixes("os: [a, b]\ninclude:\n  - {os: a, extra: x}\n  - {os: c}\n  - {other: y}\n")
                .unwrap(),
            ["extra=x,os=a", "os=b", "os=c", "other=y"]
        );
        assert!(matrixes("os: [a]\nexclude:\n  - {nope: 1}\n")
            .unwrap_err()
            .contains("does not match any key"));
        // A matrix value that is not a list (an expression) means no matrix at all.
        assert_eq!(matrixes("os: ${{ fromJSON('[1]') }}\n").unwrap(), [""]);
        assert_eq!(matrixes("os: []\n").unwrap(), [""]);
    }

    #[test]
    fn names_use_sorted_keys_and_go_formatting() {
        let m: Combination = [
            ("version".to_string(), GoAny::Float(1.17)),
            ("os".to_string(), GoAny::Str("ubuntu".into())),
            ("n".to_string(), GoAny::Int(2)),
        ]
        .into_iter()
        .collect();
        assert_eq!(matrix_name(&m), "(2, ubuntu, 1.17)");
    }
}
