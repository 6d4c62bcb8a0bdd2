//! Values as Go's yaml.v3 decodes them into `interface{}` and encodes Go maps and `yaml.Node`s.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use crate::fake::yaml::{go_float, Y};

/// A value decoded into Go's `interface{}` by yaml.v3.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GoAny {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<GoAny>),
    Map(BTreeMap<String, GoAny>),
}

impl GoAny {
    pub fn from_value(v: &Value) -> GoAny {
        match v {
            Value::Null => GoAny::Null,
            Value::Bool(b) => GoAny::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => GoAny::Int(i.into()),
                (_, Some(u)) => GoAny::Int(u.into()),
                _ => GoAny::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => GoAny::Str(s.clone()),
            Value::Sequence(s) => GoAny::Seq(s.iter().map(GoAny::from_value).collect()),
            Value::Mapping(m) => GoAny::Map(
                m.iter()
                    .map(|(k, v)| (scalar_text(k), GoAny::from_value(v)))
                    .collect(),
            ),
            Value::Tagged(t) => GoAny::from_value(&t.value),
        }
    }

    /// yaml.v3's encoding of the Go value (maps sorted as yaml.v3 sorts keys).
    pub fn to_y(&self) -> Y {
        match self {
            GoAny::Null => Y::Null,
            GoAny::Bool(b) => Y::Bool(*b),
            GoAny::Int(i) => Y::Num(i.to_string()),
            GoAny::Float(f) => Y::Num(match go_float(*f).as_str() {
                "+Inf" => ".inf".into(),
                "-Inf" => "-.inf".into(),
                "NaN" => ".nan".into(),
                s => s.into(),
            }),
            GoAny::Str(s) => Y::Str(s.clone()),
            GoAny::Seq(s) => Y::Seq(s.iter().map(GoAny::to_y).collect()),
            GoAny::Map(m) => go_map(m.iter().map(|(k, v)| (k.clone(), v.to_y()))),
        }
    }

    /// `fmt.Sprint` of the value.
    pub fn sprint(&self) -> String {
        match self {
            GoAny::Null => "<nil>".into(),
            GoAny::Bool(b) => b.to_string(),
            GoAny::Int(i) => i.to_string(),
            GoAny::Float(f) => go_float(*f),
            GoAny::Str(s) => s.clone(),
            GoAny::Seq(s) => format!(
                "[{}]",
                s.iter().map(GoAny::sprint).collect::<Vec<_>>().join(" ")
            ),
            GoAny::Map(m) => format!(
                "map[{}]",
                m.iter()
                    .map(|(k, v)| format!("{k}:{}", v.sprint()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }

    /// The value as an expression context sees it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            GoAny::Null => serde_json::Value::Null,
            GoAny::Bool(b) => (*b).into(),
            GoAny::Int(i) => i64::try_from(*i).map(Into::into).unwrap_or_else(|_| {
                serde_json::Number::from_f64(*i as f64).map_or(serde_json::Value::Null, Into::into)
            }),
            GoAny::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            GoAny::Str(s) => s.clone().into(),
            GoAny::Seq(s) => s.iter().map(GoAny::to_json).collect(),
            GoAny::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
        }
    }
}

/// yaml.v3's `keyList.Less` for string keys: letters after other characters, runs of digits
/// compared as numbers.
pub(crate) fn yaml_key_cmp(a: &str, b: &str) -> Ordering {
    let (ar, br): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut digits = false;
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            digits = ar[i].is_numeric();
            i += 1;
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            let a_first = if digits { al } else { bl };
            return if a_first {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an
                .saturating_mul(10)
                .saturating_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn
                .saturating_mul(10)
                .saturating_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

/// A Go map as yaml.v3 writes it: keys sorted by [`yaml_key_cmp`].
pub(crate) fn go_map(entries: impl IntoIterator<Item = (String, Y)>) -> Y {
    let mut v: Vec<(String, Y)> = entries.into_iter().collect();
    v.sort_by(|a, b| yaml_key_cmp(&a.0, &b.0));
    Y::Map(v.into_iter().map(|(k, v)| (Y::Str(k), v)).collect())
}

/// A `yaml.Node` written back as it was read (styles are not kept, values are).
pub(crate) fn node_to_y(v: &Value) -> Y {
    match v {
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(*b),
        Value::Number(n) => Y::Num(n.to_string()),
        Value::String(s) => Y::Str(s.clone()),
        Value::Sequence(s) => Y::Seq(s.iter().map(node_to_y).collect()),
        Value::Mapping(m) => Y::Map(
            m.iter()
                .map(|(k, v)| (node_to_y(k), node_to_y(v)))
                .collect(),
        ),
        Value::Tagged(t) => node_to_y(&t.value),
    }
}

/// The text of a scalar (a mapping key, or a value decoded into a Go string).
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Tagged(t) => scalar_text(&t.value),
        Value::Sequence(_) | Value::Mapping(_) => String::new(),
    }
}
