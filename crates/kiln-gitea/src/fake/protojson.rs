//! Just enough protojson for the fake to accept `application/json` requests (§1.2): requests are
//! read leniently (camelCase or snake_case names, int64 as string or number, enums by name or
//! number), responses are written the way Go's protojson writes them.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::proto;

pub(crate) trait FromJson: Sized {
    fn from_json(v: &Value) -> Result<Self, String>;
}

pub(crate) trait ToJson {
    fn to_json(&self) -> Value;
}

/// A JSON object viewed as a protobuf message.
struct Obj<'a>(&'a Map<String, Value>);

impl<'a> Obj<'a> {
    fn new(v: &'a Value) -> Result<Obj<'a>, String> {
        v.as_object()
            .map(Obj)
            .ok_or_else(|| "expected a JSON object".to_string())
    }

    /// Field by proto name or its lowerCamelCase JSON name; `null` counts as absent.
    fn get(&self, snake: &str) -> Option<&'a Value> {
        let camel = lower_camel(snake);
        self.0
            .get(&camel)
            .or_else(|| self.0.get(snake))
            .filter(|v| !v.is_null())
    }

    fn string(&self, f: &str) -> Result<String, String> {
        match self.get(f) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{f}: expected a string")),
        }
    }

    fn strings(&self, f: &str) -> Result<Vec<String>, String> {
        match self.get(f) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("{f}: expected strings"))
                })
                .collect(),
            Some(_) => Err(format!("{f}: expected an array")),
        }
    }

    fn bool(&self, f: &str) -> Result<bool, String> {
        match self.get(f) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("{f}: expected a bool")),
        }
    }

    fn int(&self, f: &str) -> Result<i64, String> {
        match self.get(f) {
            None => Ok(0),
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("{f}: not an integer")),
            Some(Value::String(s)) => s.parse().map_err(|_| format!("{f}: not an integer")),
            Some(_) => Err(format!("{f}: expected an integer")),
        }
    }

    fn result(&self, f: &str) -> Result<i32, String> {
        match self.get(f) {
            None => Ok(0),
            Some(Value::String(s)) => proto::Result::from_str_name(s)
                .map(|r| r as i32)
                .ok_or_else(|| format!("{f}: unknown enum value {s:?}")),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(|n| n as i32)
                .ok_or_else(|| format!("{f}: not an enum number")),
            Some(_) => Err(format!("{f}: expected an enum")),
        }
    }

    fn timestamp(&self, f: &str) -> Result<Option<proto::Timestamp>, String> {
        match self.get(f) {
            None => Ok(None),
            Some(Value::String(s)) => parse_rfc3339(s)
                .map(Some)
                .ok_or_else(|| format!("{f}: bad timestamp {s:?}")),
            Some(_) => Err(format!("{f}: expected an RFC 3339 string")),
        }
    }

    fn string_map(&self, f: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
        match self.get(f) {
            None => Ok(Default::default()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_string()))
                        .ok_or_else(|| format!("{f}.{k}: expected a string"))
                })
                .collect(),
            Some(_) => Err(format!("{f}: expected an object")),
        }
    }

    fn messages<T>(
        &self,
        f: &str,
        each: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        match self.get(f) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(each).collect(),
            Some(_) => Err(format!("{f}: expected an array")),
        }
    }
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<proto::Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.chars().take_while(char::is_ascii_digit).count();
        let mut text: String = frac[..digits].chars().take(9).collect();
        while text.len() < 9 {
            text.push('0');
        }
        nanos = text.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(proto::Timestamp {
        seconds,
        nanos: nanos as i32,
    })
}

fn result_name(r: i32) -> Value {
    json!(proto::Result::from_wire(r).as_str_name())
}

/// Inserts `v` unless it is the field's zero value, as protojson omits those.
fn put(map: &mut Map<String, Value>, name: &str, v: Value) {
    let zero = match &v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() && name != "state" && name != "runner",
        Value::Number(n) => n.as_f64() == Some(0.0),
    };
    if !zero {
        map.insert(name.to_string(), v);
    }
}

/// int64 fields are JSON strings in protojson.
fn put_int(map: &mut Map<String, Value>, name: &str, v: i64) {
    if v != 0 {
        map.insert(name.to_string(), json!(v.to_string()));
    }
}

fn runner_json(r: &proto::Runner) -> Value {
    let mut m = Map::new();
    put_int(&mut m, "id", r.id);
    put(&mut m, "uuid", json!(r.uuid));
    put(&mut m, "token", json!(r.token));
    put(&mut m, "name", json!(r.name));
    put(&mut m, "version", json!(r.version));
    put(&mut m, "labels", json!(r.labels));
    put(&mut m, "ephemeral", json!(r.ephemeral));
    Value::Object(m)
}

impl FromJson for proto::PingRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(proto::PingRequest {
            data: Obj::new(v)?.string("data")?,
        })
    }
}

impl ToJson for proto::PingResponse {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        put(&mut m, "data", json!(self.data));
        Value::Object(m)
    }
}

impl FromJson for proto::RegisterRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(proto::RegisterRequest {
            name: o.string("name")?,
            token: o.string("token")?,
            agent_labels: o.strings("agent_labels")?,
            custom_labels: o.strings("custom_labels")?,
            version: o.string("version")?,
            labels: o.strings("labels")?,
            ephemeral: o.bool("ephemeral")?,
            capabilities: o.strings("capabilities")?,
        })
    }
}

impl ToJson for proto::RegisterResponse {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(r) = &self.runner {
            m.insert("runner".into(), runner_json(r));
        }
        Value::Object(m)
    }
}

impl FromJson for proto::DeclareRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(proto::DeclareRequest {
            version: o.string("version")?,
            labels: o.strings("labels")?,
            capabilities: o.strings("capabilities")?,
        })
    }
}

impl ToJson for proto::DeclareResponse {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(r) = &self.runner {
            m.insert("runner".into(), runner_json(r));
        }
        Value::Object(m)
    }
}

impl FromJson for proto::FetchTaskRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(proto::FetchTaskRequest {
            tasks_version: Obj::new(v)?.int("tasks_version")?,
        })
    }
}

impl ToJson for proto::FetchTaskResponse {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(t) = &self.task {
            let mut tm = Map::new();
            put_int(&mut tm, "id", t.id);
            if let Some(p) = &t.workflow_payload {
                tm.insert(
                    "workflowPayload".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(p)),
                );
            }
            if let Some(c) = &t.context {
                tm.insert("context".into(), crate::struct_to_json(c));
            }
            put(&mut tm, "secrets", json!(t.secrets));
            let needs: Map<String, Value> = t
                .needs
                .iter()
                .map(|(k, n)| {
                    let mut nm = Map::new();
                    put(&mut nm, "outputs", json!(n.outputs));
                    if n.result != 0 {
                        nm.insert("result".into(), result_name(n.result));
                    }
                    (k.clone(), Value::Object(nm))
                })
                .collect();
            put(&mut tm, "needs", Value::Object(needs));
            put(&mut tm, "vars", json!(t.vars));
            m.insert("task".into(), Value::Object(tm));
        }
        put_int(&mut m, "tasksVersion", self.tasks_version);
        Value::Object(m)
    }
}

fn timestamp_of(o: &Obj<'_>, f: &str) -> Result<Option<proto::Timestamp>, String> {
    o.timestamp(f)
}

fn task_state_from_json(v: &Value) -> Result<proto::TaskState, String> {
    let o = Obj::new(v)?;
    Ok(proto::TaskState {
        id: o.int("id")?,
        result: o.result("result")?,
        started_at: timestamp_of(&o, "started_at")?,
        stopped_at: timestamp_of(&o, "stopped_at")?,
        steps: o.messages("steps", |s| {
            let s = Obj::new(s)?;
            Ok(proto::StepState {
                id: s.int("id")?,
                result: s.result("result")?,
                started_at: s.timestamp("started_at")?,
                stopped_at: s.timestamp("stopped_at")?,
                log_index: s.int("log_index")?,
                log_length: s.int("log_length")?,
            })
        })?,
    })
}

impl FromJson for proto::UpdateTaskRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(proto::UpdateTaskRequest {
            state: o.get("state").map(task_state_from_json).transpose()?,
            outputs: o.string_map("outputs")?,
        })
    }
}

impl ToJson for proto::UpdateTaskResponse {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(s) = &self.state {
            let mut sm = Map::new();
            put_int(&mut sm, "id", s.id);
            if s.result != 0 {
                sm.insert("result".into(), result_name(s.result));
            }
            m.insert("state".into(), Value::Object(sm));
        }
        put(&mut m, "sentOutputs", json!(self.sent_outputs));
        Value::Object(m)
    }
}

impl FromJson for proto::UpdateLogRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(proto::UpdateLogRequest {
            task_id: o.int("task_id")?,
            index: o.int("index")?,
            rows: o.messages("rows", |r| {
                let r = Obj::new(r)?;
                Ok(proto::LogRow {
                    time: r.timestamp("time")?,
                    content: r.string("content")?,
                })
            })?,
            no_more: o.bool("no_more")?,
        })
    }
}

impl ToJson for proto::UpdateLogResponse {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        put_int(&mut m, "ackIndex", self.ack_index);
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_fraction_and_offset() {
        let t = parse_rfc3339("1970-01-02T00:00:01.5Z").unwrap();
        assert_eq!((t.seconds, t.nanos), (86_401, 500_000_000));
        let t = parse_rfc3339("2024-03-01T12:00:00+01:00").unwrap();
        assert_eq!(t.seconds, 1_709_290_800);
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn requests_accept_camel_and_snake_case() {
        let r = proto::UpdateLogRequest::from_json(&json!({
            "taskId": "7", "index": 2, "no_more": true,
            "rows": [{"time": "2024-01-01T00:00:00Z", "content": "x"}]
        }))
        .unwrap();
        assert_eq!((r.task_id, r.index, r.no_more), (7, 2, true));
        assert_eq!(r.rows[0].content, "x");

        let u = proto::UpdateTaskRequest::from_json(&json!({
            "state": {"id": "3", "result": "RESULT_SUCCESS", "steps": [{"id": 0, "logLength": "4"}]},
            "outputs": {"k": "v"}
        }))
        .unwrap();
        let s = u.state.unwrap();
        assert_eq!(s.result, proto::Result::Success as i32);
        assert_eq!(s.steps[0].log_length, 4);
        assert_eq!(u.outputs["k"], "v");
    }

    #[test]
    fn responses_omit_zero_values_and_quote_int64() {
        let v = proto::FetchTaskResponse {
            task: None,
            tasks_version: 3,
        }
        .to_json();
        assert_eq!(v, json!({"tasksVersion": "3"}));
        let v = proto::UpdateTaskResponse {
            state: Some(proto::TaskState {
                id: 1,
                ..Default::default()
            }),
            sent_outputs: vec![],
        }
        .to_json();
        assert_eq!(v, json!({"state": {"id": "1"}}));
    }
}
