//! Small value types shared by workflows and actions: an order-preserving map, scalars read as
//! strings, and the "typed value or expression" enums.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// Whether a string holds an expression (`${{ ... }}`).
pub fn is_expression(s: &str) -> bool {
    s.contains("${{")
}

/// A map that keeps the order of the file. Duplicate keys are an error when parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    /// The keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
    /// The values in file order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
    /// The entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Sets `key`, replacing an existing value in place or appending.
    pub fn insert(&mut self, key: impl Into<String>, value: V) {
        let key = key.into();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
    }
}

impl<'a, V> IntoIterator for &'a OrderedMap<V> {
    type Item = &'a (String, V);
    type IntoIter = std::slice::Iter<'a, (String, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::new())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::new())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some(key) = map.next_key::<Scalar>()? {
                    let key = key.0;
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    let value = map.next_value::<V>()?;
                    out.push((key, value));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_any(V_(PhantomData))
    }
}

/// A scalar read as a string: strings as they are, numbers and booleans in their usual text
/// form (`1`, `1.5`, `true`), null as the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SV;
        impl Visitor<'_> for SV {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(format_f64(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        d.deserialize_any(SV)
    }
}

pub(crate) fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        format!("{v}")
    }
}

/// `deserialize_with` for a map of strings whose values may be written as numbers, booleans
/// or null.
pub(crate) fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<OrderedMap<String>, D::Error> {
    let m = OrderedMap::<Scalar>::deserialize(d)?;
    Ok(OrderedMap(m.0.into_iter().map(|(k, v)| (k, v.0)).collect()))
}

/// `deserialize_with` for an optional scalar read as a string.
pub(crate) fn opt_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(Scalar::deserialize(d)?.0))
}

/// A list of strings that may also be written as one string. Items may be numbers or booleans.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StringList(pub Vec<String>);

impl Serialize for StringList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LV;
        impl<'de> Visitor<'de> for LV {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StringList, E> {
                Ok(StringList(vec![format_f64(v)]))
            }
            fn visit_unit<E: de::Error>(self) -> Result<StringList, E> {
                Ok(StringList(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<ScalarItem>()? {
                    out.push(item.0);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(LV)
    }
}

/// A list item that must be a non-null scalar.
struct ScalarItem(String);

impl<'de> Deserialize<'de> for ScalarItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IV;
        impl Visitor<'_> for IV {
            type Value = ScalarItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarItem, E> {
                Ok(ScalarItem(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarItem, E> {
                Ok(ScalarItem(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarItem, E> {
                Ok(ScalarItem(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarItem, E> {
                Ok(ScalarItem(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarItem, E> {
                Ok(ScalarItem(format_f64(v)))
            }
        }
        d.deserialize_any(IV)
    }
}

/// A boolean, or an expression string evaluated later (e.g. `${{ matrix.experimental }}`).
/// The strings `"true"` and `"false"` read as booleans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoolOrExpr {
    Bool(bool),
    Expr(String),
}

impl Serialize for BoolOrExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BoolOrExpr::Bool(b) => s.serialize_bool(*b),
            BoolOrExpr::Expr(e) => s.serialize_str(e),
        }
    }
}

impl<'de> Deserialize<'de> for BoolOrExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BV;
        impl Visitor<'_> for BV {
            type Value = BoolOrExpr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean or an expression")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<BoolOrExpr, E> {
                Ok(BoolOrExpr::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BoolOrExpr, E> {
                match v.trim() {
                    "true" => Ok(BoolOrExpr::Bool(true)),
                    "false" => Ok(BoolOrExpr::Bool(false)),
                    _ if is_expression(v) => Ok(BoolOrExpr::Expr(v.to_string())),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(BV)
    }
}

/// A number, or an expression string evaluated later. Numeric strings read as numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum NumberOrExpr {
    Number(f64),
    Expr(String),
}

impl Serialize for NumberOrExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NumberOrExpr::Number(n) => s.serialize_f64(*n),
            NumberOrExpr::Expr(e) => s.serialize_str(e),
        }
    }
}

impl<'de> Deserialize<'de> for NumberOrExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NV;
        impl Visitor<'_> for NV {
            type Value = NumberOrExpr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or an expression")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumberOrExpr, E> {
                Ok(NumberOrExpr::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumberOrExpr, E> {
                Ok(NumberOrExpr::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumberOrExpr, E> {
                Ok(NumberOrExpr::Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NumberOrExpr, E> {
                if is_expression(v) {
                    return Ok(NumberOrExpr::Expr(v.to_string()));
                }
                match v.trim().parse::<f64>() {
                    Ok(n) if n.is_finite() => Ok(NumberOrExpr::Number(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(NV)
    }
}

/// `deserialize_with` for a condition (`if:`), written as a string or a boolean (or, rarely, a
/// number); kept as the string to evaluate.
pub(crate) fn condition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct CV;
    impl Visitor<'_> for CV {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a boolean")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<String>, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<String>, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<String>, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<String>, E> {
            Ok(Some(format_f64(v)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
    }
    d.deserialize_any(CV)
}

/// `deserialize_with` for a `StringList` field that may be absent or null.
pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(StringList::deserialize(d)?.0)
}
