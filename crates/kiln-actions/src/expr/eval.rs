//! Tree evaluation with the runner's coercion rules.

use super::parser::{BinOp, IndexArg, Node};
use super::value::{cmp_ignore_case, eq_ignore_case, format_number, parse_number};
use super::{Contexts, ExprError};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

/// An intermediate value. Context data is borrowed, not cloned; numbers are `f64` so NaN and
/// infinities survive until the end; the result of a `*` filter is kept apart from ordinary
/// arrays because indexing a filtered array applies the index to each element (the runner's
/// `FilteredArray`).
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    /// A JSON array or object.
    Coll(Cow<'a, Value>),
    Filtered(Vec<Cow<'a, Value>>),
}

impl<'a> Val<'a> {
    pub(crate) fn from_json(v: Cow<'a, Value>) -> Val<'a> {
        match v {
            Cow::Borrowed(b) => match b {
                Value::Null => Val::Null,
                Value::Bool(x) => Val::Bool(*x),
                Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
                Value::String(s) => Val::Str(Cow::Borrowed(s)),
                _ => Val::Coll(Cow::Borrowed(b)),
            },
            Cow::Owned(o) => match o {
                Value::Null => Val::Null,
                Value::Bool(x) => Val::Bool(x),
                Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
                Value::String(s) => Val::Str(Cow::Owned(s)),
                other => Val::Coll(Cow::Owned(other)),
            },
        }
    }

    pub(crate) fn is_primitive(&self) -> bool {
        matches!(self, Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_))
    }

    /// Items of an array (ordinary or filtered); None for anything else.
    pub(crate) fn array_items(&self) -> Option<Vec<Val<'_>>> {
        match self {
            Val::Coll(c) => c
                .as_array()
                .map(|a| a.iter().map(|v| Val::from_json(Cow::Borrowed(v))).collect()),
            Val::Filtered(items) => Some(
                items
                    .iter()
                    .map(|v| Val::from_json(Cow::Borrowed(v.as_ref())))
                    .collect(),
            ),
            _ => None,
        }
    }

    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0 && !n.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::Coll(_) | Val::Filtered(_) => true,
        }
    }

    pub(crate) fn to_number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Num(n) => *n,
            Val::Str(s) => parse_number(s),
            _ => f64::NAN,
        }
    }

    pub(crate) fn to_display(&self) -> String {
        match self {
            Val::Null => String::new(),
            Val::Bool(b) => b.to_string(),
            Val::Num(n) => format_number(*n),
            Val::Str(s) => s.to_string(),
            Val::Coll(c) if c.is_array() => "Array".into(),
            Val::Coll(_) => "Object".into(),
            Val::Filtered(_) => "Array".into(),
        }
    }

    /// The final JSON value. Integral numbers within ±2^53 become JSON integers; NaN and the
    /// infinities, which JSON cannot hold, become the strings `NaN`, `Infinity`, `-Infinity`
    /// (their string conversion, so interpolation is unaffected).
    pub(crate) fn into_json(self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            Val::Num(n) => num_to_json(n),
            Val::Str(s) => Value::String(s.into_owned()),
            Val::Coll(c) => c.into_owned(),
            Val::Filtered(items) => Value::Array(items.into_iter().map(Cow::into_owned).collect()),
        }
    }
}

pub(crate) fn num_to_json(n: f64) -> Value {
    if !n.is_finite() {
        return Value::String(format_number(n));
    }
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        return Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// A primitive view used by the comparison operators.
#[derive(Debug, Clone)]
enum Prim<'v> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'v str),
    Array,
    Object,
}

fn prim<'v>(v: &'v Val<'_>) -> Prim<'v> {
    match v {
        Val::Null => Prim::Null,
        Val::Bool(b) => Prim::Bool(*b),
        Val::Num(n) => Prim::Num(*n),
        Val::Str(s) => Prim::Str(s),
        Val::Coll(c) if c.is_array() => Prim::Array,
        Val::Coll(_) => Prim::Object,
        Val::Filtered(_) => Prim::Array,
    }
}

fn prim_num(p: &Prim<'_>) -> f64 {
    match p {
        Prim::Null => 0.0,
        Prim::Bool(b) => f64::from(u8::from(*b)),
        Prim::Num(n) => *n,
        Prim::Str(s) => parse_number(s),
        _ => f64::NAN,
    }
}

/// The runner's `CoerceTypes`: number/string pairs become numbers; a boolean or null on either
/// side becomes a number and coercion repeats; other mixed pairs (e.g. string vs. array) stay
/// mixed and then compare false.
fn coerce<'v>(l: Prim<'v>, r: Prim<'v>) -> (Prim<'v>, Prim<'v>) {
    use Prim as P;
    match (&l, &r) {
        (P::Null, P::Null)
        | (P::Bool(_), P::Bool(_))
        | (P::Num(_), P::Num(_))
        | (P::Str(_), P::Str(_))
        | (P::Array, P::Array)
        | (P::Object, P::Object) => (l, r),
        (P::Num(_), P::Str(_)) => {
            let n = prim_num(&r);
            (l, P::Num(n))
        }
        (P::Str(_), P::Num(_)) => (P::Num(prim_num(&l)), r),
        (P::Bool(_) | P::Null, _) => coerce(P::Num(prim_num(&l)), r),
        (_, P::Bool(_) | P::Null) => {
            let n = prim_num(&r);
            coerce(l, P::Num(n))
        }
        _ => (l, r),
    }
}

/// `==` with the runner's rules. Arrays and objects are never equal (the runner compares them by
/// reference; we do not track identity).
pub(crate) fn abstract_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match coerce(prim(a), prim(b)) {
        (Prim::Null, Prim::Null) => true,
        (Prim::Num(x), Prim::Num(y)) => x == y,
        (Prim::Str(x), Prim::Str(y)) => eq_ignore_case(x, y),
        (Prim::Bool(x), Prim::Bool(y)) => x == y,
        _ => false,
    }
}

/// `>` with the runner's rules.
fn abstract_gt(a: &Val<'_>, b: &Val<'_>) -> bool {
    match coerce(prim(a), prim(b)) {
        (Prim::Num(x), Prim::Num(y)) => x > y,
        (Prim::Str(x), Prim::Str(y)) => cmp_ignore_case(x, y) == Ordering::Greater,
        (Prim::Bool(x), Prim::Bool(y)) => x && !y,
        _ => false,
    }
}

fn abstract_lt(a: &Val<'_>, b: &Val<'_>) -> bool {
    match coerce(prim(a), prim(b)) {
        (Prim::Num(x), Prim::Num(y)) => x < y,
        (Prim::Str(x), Prim::Str(y)) => cmp_ignore_case(x, y) == Ordering::Less,
        (Prim::Bool(x), Prim::Bool(y)) => !x && y,
        _ => false,
    }
}

/// Case-insensitive object lookup; an exact match wins.
pub(crate) fn find_key<'m>(map: &'m Map<String, Value>, key: &str) -> Option<&'m String> {
    if let Some((k, _)) = map.get_key_value(key) {
        return Some(k);
    }
    map.keys().find(|k| eq_ignore_case(k, key))
}

enum Key {
    Wildcard,
    /// The index value as a string (objects) and as an integer (arrays), when it has one.
    Value {
        string: Option<String>,
        integer: Option<usize>,
    },
}

impl Key {
    fn new(v: Option<&Val<'_>>) -> Key {
        let Some(v) = v else { return Key::Wildcard };
        let string = v.is_primitive().then(|| v.to_display());
        let n = v.to_number();
        let integer = if n.is_nan() || n < 0.0 || n.floor() > f64::from(i32::MAX) {
            None
        } else {
            Some(n.floor() as usize)
        };
        Key::Value { string, integer }
    }
}

/// Applies an index (or wildcard) to one JSON collection, pushing matches into `out`.
fn index_into<'a>(coll: Cow<'a, Value>, key: &Key, out: &mut Vec<Cow<'a, Value>>) {
    match coll {
        Cow::Borrowed(v) => match (v, key) {
            (Value::Object(m), Key::Wildcard) => out.extend(m.values().map(Cow::Borrowed)),
            (Value::Array(a), Key::Wildcard) => out.extend(a.iter().map(Cow::Borrowed)),
            (
                Value::Object(m),
                Key::Value {
                    string: Some(s), ..
                },
            ) => {
                if let Some(k) = find_key(m, s) {
                    out.push(Cow::Borrowed(&m[k.as_str()]));
                }
            }
            (
                Value::Array(a),
                Key::Value {
                    integer: Some(i), ..
                },
            ) => {
                if let Some(x) = a.get(*i) {
                    out.push(Cow::Borrowed(x));
                }
            }
            _ => {}
        },
        Cow::Owned(v) => match (v, key) {
            (Value::Object(m), Key::Wildcard) => {
                out.extend(m.into_iter().map(|(_, v)| Cow::Owned(v)))
            }
            (Value::Array(a), Key::Wildcard) => out.extend(a.into_iter().map(Cow::Owned)),
            (
                Value::Object(mut m),
                Key::Value {
                    string: Some(s), ..
                },
            ) => {
                if let Some(k) = find_key(&m, s).cloned() {
                    out.extend(m.remove(&k).map(Cow::Owned));
                }
            }
            (
                Value::Array(a),
                Key::Value {
                    integer: Some(i), ..
                },
            ) => out.extend(a.into_iter().nth(*i).map(Cow::Owned)),
            _ => {}
        },
    }
}

fn index<'a>(base: Val<'a>, key: Key) -> Val<'a> {
    match base {
        Val::Filtered(items) => {
            let mut out = Vec::new();
            for item in items {
                index_into(item, &key, &mut out);
            }
            Val::Filtered(out)
        }
        Val::Coll(c) => {
            let wildcard = matches!(key, Key::Wildcard);
            let mut out = Vec::new();
            index_into(c, &key, &mut out);
            if wildcard {
                Val::Filtered(out)
            } else {
                out.pop().map_or(Val::Null, Val::from_json)
            }
        }
        _ => match key {
            Key::Wildcard => Val::Filtered(Vec::new()),
            Key::Value { .. } => Val::Null,
        },
    }
}

pub(crate) struct Evaluator<'a> {
    pub ctx: &'a Contexts,
    pub expr: &'a str,
}

impl<'a> Evaluator<'a> {
    pub(crate) fn error(&self, message: impl Into<String>, pos: usize) -> ExprError {
        ExprError::new(message, self.expr, pos + 1)
    }

    pub(crate) fn eval(&self, node: &'a Node) -> Result<Val<'a>, ExprError> {
        Ok(match node {
            Node::Null => Val::Null,
            Node::Bool(b) => Val::Bool(*b),
            Node::Num(n) => Val::Num(*n),
            Node::Str(s) => Val::Str(Cow::Borrowed(s)),
            Node::Named(name) => match self.ctx.values.get(name) {
                Some(v) => Val::from_json(Cow::Borrowed(v)),
                None => Val::Null,
            },
            Node::Index { base, index: idx } => {
                let base = self.eval(base)?;
                let key = match idx {
                    IndexArg::Wildcard => Key::new(None),
                    IndexArg::Expr(e) => Key::new(Some(&self.eval(e)?)),
                };
                index(base, key)
            }
            Node::Not(n) => Val::Bool(!self.eval(n)?.truthy()),
            Node::Binary { op, left, right } => {
                let l = self.eval(left)?;
                let r = self.eval(right)?;
                Val::Bool(match op {
                    BinOp::Eq => abstract_eq(&l, &r),
                    BinOp::Ne => !abstract_eq(&l, &r),
                    BinOp::Lt => abstract_lt(&l, &r),
                    BinOp::Le => abstract_eq(&l, &r) || abstract_lt(&l, &r),
                    BinOp::Gt => abstract_gt(&l, &r),
                    BinOp::Ge => abstract_eq(&l, &r) || abstract_gt(&l, &r),
                })
            }
            Node::And(items) => {
                let mut last = Val::Null;
                for item in items {
                    last = self.eval(item)?;
                    if !last.truthy() {
                        break;
                    }
                }
                last
            }
            Node::Or(items) => {
                let mut last = Val::Null;
                for item in items {
                    last = self.eval(item)?;
                    if last.truthy() {
                        break;
                    }
                }
                last
            }
            Node::Call { func, args, pos } => (func.eval)(self, args, *pos)?,
        })
    }
}
