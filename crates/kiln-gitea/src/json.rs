//! `google.protobuf.Struct` ⇄ `serde_json::Value`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

/// Converts a protobuf `Struct` (e.g. the task's `context`) to a JSON object.
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// Converts a protobuf `Value` to JSON. A missing kind is `null`; numbers that are whole and fit
/// in an `i64` become JSON integers, as protojson would print them.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

fn number_to_json(n: f64) -> serde_json::Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: beyond it f64 holds no exact integers
    if n.fract() == 0.0 && n.abs() <= EXACT {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Converts JSON to a protobuf `Struct`. A non-object value becomes an empty `Struct`.
pub fn json_to_struct(v: &serde_json::Value) -> Struct {
    match v {
        serde_json::Value::Object(map) => Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        },
        _ => Struct::default(),
    }
}

/// Converts any JSON value to a protobuf `Value` (numbers become doubles).
pub fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(v)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    #[test]
    fn context_survives_struct_round_trip() {
        let v = json!({
            "event_name": "push",
            "ref_protected": false,
            "event": {"commits": [{"id": "abc", "n": 3}], "size": 1.5, "nothing": null},
            "run_id": "12",
        });
        let s = json_to_struct(&v);
        let bytes = s.encode_to_vec();
        let back = Struct::decode(bytes.as_slice()).unwrap();
        assert_eq!(struct_to_json(&back), v);
    }

    #[test]
    fn non_object_json_becomes_empty_struct() {
        assert!(json_to_struct(&json!([1, 2])).fields.is_empty());
    }
}
