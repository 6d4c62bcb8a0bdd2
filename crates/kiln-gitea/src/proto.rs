//! Messages of `ping.v1` and `runner.v1`, written by hand with prost's derives.
//!
//! Field numbers follow the protocol reference (§2.1) and are normative: they are what Gitea's
//! generated Go code reads. Maps are `BTreeMap` so encodings and debug output are deterministic.

use std::collections::BTreeMap;

pub use prost_types::{ListValue, Struct, Timestamp, Value};

// ---------------------------------------------------------------- ping.v1

#[derive(Clone, PartialEq, prost::Message)]
pub struct PingRequest {
    #[prost(string, tag = "1")]
    pub data: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PingResponse {
    #[prost(string, tag = "1")]
    pub data: String,
}

// ---------------------------------------------------------------- runner.v1 enums

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RunnerStatus {
    Unspecified = 0,
    Idle = 1,
    Active = 2,
    Offline = 3,
}

/// Outcome of a task or a step. `Unspecified` means "not finished yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Result {
    Unspecified = 0,
    Success = 1,
    Failure = 2,
    Cancelled = 3,
    Skipped = 4,
}

impl Result {
    /// The protobuf name, e.g. `RESULT_SUCCESS` (also what protojson uses).
    pub fn as_str_name(self) -> &'static str {
        match self {
            Result::Unspecified => "RESULT_UNSPECIFIED",
            Result::Success => "RESULT_SUCCESS",
            Result::Failure => "RESULT_FAILURE",
            Result::Cancelled => "RESULT_CANCELLED",
            Result::Skipped => "RESULT_SKIPPED",
        }
    }

    pub fn from_str_name(name: &str) -> Option<Result> {
        Some(match name {
            "RESULT_UNSPECIFIED" => Result::Unspecified,
            "RESULT_SUCCESS" => Result::Success,
            "RESULT_FAILURE" => Result::Failure,
            "RESULT_CANCELLED" => Result::Cancelled,
            "RESULT_SKIPPED" => Result::Skipped,
            _ => return None,
        })
    }

    /// Lower-case name as workflow expressions see it (`needs.x.result == 'success'`).
    pub fn as_context_str(self) -> &'static str {
        match self {
            Result::Unspecified => "",
            Result::Success => "success",
            Result::Failure => "failure",
            Result::Cancelled => "cancelled",
            Result::Skipped => "skipped",
        }
    }

    /// Decodes a wire value; unknown numbers become `Unspecified`.
    pub fn from_wire(v: i32) -> Result {
        Result::try_from(v).unwrap_or_default()
    }
}

// ---------------------------------------------------------------- runner.v1 messages

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The registration token (not a runner token).
    #[prost(string, tag = "2")]
    pub token: String,
    /// Deprecated: label names for Gitea ≤ 1.20.
    #[prost(string, repeated, tag = "3")]
    pub agent_labels: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub custom_labels: Vec<String>,
    #[prost(string, tag = "5")]
    pub version: String,
    /// Label names only (the part before the first `:`).
    #[prost(string, repeated, tag = "6")]
    pub labels: Vec<String>,
    #[prost(bool, tag = "7")]
    pub ephemeral: bool,
    #[prost(string, repeated, tag = "8")]
    pub capabilities: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterResponse {
    #[prost(message, optional, tag = "1")]
    pub runner: Option<Runner>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeclareRequest {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, repeated, tag = "2")]
    pub labels: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    pub capabilities: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeclareResponse {
    #[prost(message, optional, tag = "1")]
    pub runner: Option<Runner>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchTaskRequest {
    #[prost(int64, tag = "1")]
    pub tasks_version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchTaskResponse {
    #[prost(message, optional, tag = "1")]
    pub task: Option<Task>,
    #[prost(int64, tag = "2")]
    pub tasks_version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateTaskRequest {
    #[prost(message, optional, tag = "1")]
    pub state: Option<TaskState>,
    #[prost(btree_map = "string, string", tag = "2")]
    pub outputs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateTaskResponse {
    #[prost(message, optional, tag = "1")]
    pub state: Option<TaskState>,
    #[prost(string, repeated, tag = "2")]
    pub sent_outputs: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateLogRequest {
    #[prost(int64, tag = "1")]
    pub task_id: i64,
    /// Absolute row number of `rows[0]`.
    #[prost(int64, tag = "2")]
    pub index: i64,
    #[prost(message, repeated, tag = "3")]
    pub rows: Vec<LogRow>,
    #[prost(bool, tag = "4")]
    pub no_more: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateLogResponse {
    #[prost(int64, tag = "1")]
    pub ack_index: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Runner {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(string, tag = "2")]
    pub uuid: String,
    #[prost(string, tag = "3")]
    pub token: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(enumeration = "RunnerStatus", tag = "5")]
    pub status: i32,
    #[prost(string, repeated, tag = "6")]
    pub agent_labels: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub custom_labels: Vec<String>,
    #[prost(string, tag = "8")]
    pub version: String,
    #[prost(string, repeated, tag = "9")]
    pub labels: Vec<String>,
    #[prost(bool, tag = "10")]
    pub ephemeral: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Task {
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// YAML of a one-job workflow.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub workflow_payload: Option<Vec<u8>>,
    /// The `github` context.
    #[prost(message, optional, tag = "3")]
    pub context: Option<Struct>,
    #[prost(btree_map = "string, string", tag = "4")]
    pub secrets: BTreeMap<String, String>,
    #[prost(string, tag = "5")]
    pub machine: String,
    #[prost(btree_map = "string, message", tag = "6")]
    pub needs: BTreeMap<String, TaskNeed>,
    #[prost(btree_map = "string, string", tag = "7")]
    pub vars: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskNeed {
    #[prost(btree_map = "string, string", tag = "1")]
    pub outputs: BTreeMap<String, String>,
    #[prost(enumeration = "Result", tag = "2")]
    pub result: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskState {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(enumeration = "Result", tag = "2")]
    pub result: i32,
    #[prost(message, optional, tag = "3")]
    pub started_at: Option<Timestamp>,
    #[prost(message, optional, tag = "4")]
    pub stopped_at: Option<Timestamp>,
    /// Every step of the job, `id` = 0-based position.
    #[prost(message, repeated, tag = "5")]
    pub steps: Vec<StepState>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StepState {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(enumeration = "Result", tag = "2")]
    pub result: i32,
    #[prost(message, optional, tag = "3")]
    pub started_at: Option<Timestamp>,
    #[prost(message, optional, tag = "4")]
    pub stopped_at: Option<Timestamp>,
    #[prost(int64, tag = "5")]
    pub log_index: i64,
    #[prost(int64, tag = "6")]
    pub log_length: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRow {
    #[prost(message, optional, tag = "1")]
    pub time: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub content: String,
}

/// A `Timestamp` for a point in time (pre-epoch times clamp to the epoch).
pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The current time as a `Timestamp`.
pub fn now() -> Timestamp {
    timestamp(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Appends a protobuf varint.
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, ((field as u64) << 3) | wire as u64);
    }

    fn len_delim(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        key(out, field, 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    fn int(out: &mut Vec<u8>, field: u32, v: i64) {
        key(out, field, 0);
        varint(out, v as u64);
    }

    #[test]
    fn ping_request_uses_field_one() {
        let bytes = PingRequest { data: "hi".into() }.encode_to_vec();
        assert_eq!(bytes, [0x0a, 2, b'h', b'i']);
    }

    #[test]
    fn fetch_task_response_decodes_from_hand_built_bytes() {
        // Task{id=7, workflow_payload="on: push", secrets{"A":"b"}, needs{"build": {result=SUCCESS}}, vars{"V":"w"}}
        let mut task = Vec::new();
        int(&mut task, 1, 7);
        len_delim(&mut task, 2, b"on: push");
        let mut entry = Vec::new();
        len_delim(&mut entry, 1, b"A");
        len_delim(&mut entry, 2, b"b");
        len_delim(&mut task, 4, &entry);
        let mut need = Vec::new();
        let mut out_entry = Vec::new();
        len_delim(&mut out_entry, 1, b"o");
        len_delim(&mut out_entry, 2, b"1");
        len_delim(&mut need, 1, &out_entry);
        int(&mut need, 2, 1);
        let mut need_entry = Vec::new();
        len_delim(&mut need_entry, 1, b"build");
        len_delim(&mut need_entry, 2, &need);
        len_delim(&mut task, 6, &need_entry);
        let mut vars_entry = Vec::new();
        len_delim(&mut vars_entry, 1, b"V");
        len_delim(&mut vars_entry, 2, b"w");
        len_delim(&mut task, 7, &vars_entry);
        let mut resp = Vec::new();
        len_delim(&mut resp, 1, &task);
        int(&mut resp, 2, 42);

        let decoded = FetchTaskResponse::decode(resp.as_slice()).unwrap();
        assert_eq!(decoded.tasks_version, 42);
        let t = decoded.task.unwrap();
        assert_eq!(t.id, 7);
        assert_eq!(t.workflow_payload.as_deref(), Some(&b"on: push"[..]));
        assert_eq!(t.secrets["A"], "b");
        assert_eq!(t.vars["V"], "w");
        assert_eq!(t.needs["build"].result, Result::Success as i32);
        assert_eq!(t.needs["build"].outputs["o"], "1");
        assert!(t.context.is_none());
    }

    #[test]
    fn update_task_request_encodes_expected_field_numbers() {
        let req = UpdateTaskRequest {
            state: Some(TaskState {
                id: 3,
                result: Result::Failure as i32,
                started_at: Some(Timestamp {
                    seconds: 5,
                    nanos: 0,
                }),
                stopped_at: None,
                steps: vec![StepState {
                    id: 0,
                    result: Result::Success as i32,
                    started_at: None,
                    stopped_at: None,
                    log_index: 2,
                    log_length: 9,
                }],
            }),
            outputs: BTreeMap::from([("k".to_string(), "v".to_string())]),
        };
        let mut step = Vec::new();
        int(&mut step, 2, 1);
        int(&mut step, 5, 2);
        int(&mut step, 6, 9);
        let mut ts = Vec::new();
        int(&mut ts, 1, 5);
        let mut state = Vec::new();
        int(&mut state, 1, 3);
        int(&mut state, 2, 2);
        len_delim(&mut state, 3, &ts);
        len_delim(&mut state, 5, &step);
        let mut entry = Vec::new();
        len_delim(&mut entry, 1, b"k");
        len_delim(&mut entry, 2, b"v");
        let mut expected = Vec::new();
        len_delim(&mut expected, 1, &state);
        len_delim(&mut expected, 2, &entry);
        assert_eq!(req.encode_to_vec(), expected);
        assert_eq!(UpdateTaskRequest::decode(expected.as_slice()).unwrap(), req);
    }

    #[test]
    fn register_and_log_messages_round_trip() {
        let reg = RegisterRequest {
            name: "r".into(),
            token: "t".into(),
            agent_labels: vec!["a".into()],
            custom_labels: vec![],
            version: "v1".into(),
            labels: vec!["ubuntu-latest".into()],
            ephemeral: true,
            capabilities: vec!["cancelling".into()],
        };
        let bytes = reg.encode_to_vec();
        // name=1, token=2, agent_labels=3, version=5, labels=6, ephemeral=7, capabilities=8
        let mut expected = Vec::new();
        len_delim(&mut expected, 1, b"r");
        len_delim(&mut expected, 2, b"t");
        len_delim(&mut expected, 3, b"a");
        len_delim(&mut expected, 5, b"v1");
        len_delim(&mut expected, 6, b"ubuntu-latest");
        int(&mut expected, 7, 1);
        len_delim(&mut expected, 8, b"cancelling");
        assert_eq!(bytes, expected);
        assert_eq!(RegisterRequest::decode(bytes.as_slice()).unwrap(), reg);

        let log = UpdateLogRequest {
            task_id: 1,
            index: 4,
            rows: vec![LogRow {
                time: Some(Timestamp {
                    seconds: 1,
                    nanos: 2,
                }),
                content: "x".into(),
            }],
            no_more: true,
        };
        let mut ts = Vec::new();
        int(&mut ts, 1, 1);
        int(&mut ts, 2, 2);
        let mut row = Vec::new();
        len_delim(&mut row, 1, &ts);
        len_delim(&mut row, 2, b"x");
        let mut expected = Vec::new();
        int(&mut expected, 1, 1);
        int(&mut expected, 2, 4);
        len_delim(&mut expected, 3, &row);
        int(&mut expected, 4, 1);
        assert_eq!(log.encode_to_vec(), expected);
    }

    #[test]
    fn runner_fields_match_schema() {
        let mut bytes = Vec::new();
        int(&mut bytes, 1, 9);
        len_delim(&mut bytes, 2, b"uuid");
        len_delim(&mut bytes, 3, b"tok");
        len_delim(&mut bytes, 4, b"name");
        len_delim(&mut bytes, 8, b"v");
        len_delim(&mut bytes, 9, b"label");
        int(&mut bytes, 10, 1);
        let r = Runner::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            (r.id, r.uuid.as_str(), r.token.as_str(), r.name.as_str()),
            (9, "uuid", "tok", "name")
        );
        assert_eq!(r.version, "v");
        assert_eq!(r.labels, ["label"]);
        assert!(r.ephemeral);
    }

    #[test]
    fn unknown_fields_are_ignored_when_decoding() {
        let mut bytes = Vec::new();
        int(&mut bytes, 1, 5); // tasks_version
        int(&mut bytes, 99, 7); // unknown varint
        len_delim(&mut bytes, 100, b"future"); // unknown length-delimited
        key(&mut bytes, 101, 5); // unknown fixed32
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let req = FetchTaskRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.tasks_version, 5);

        // A newer Forgejo-style Task field (e.g. 8) inside a nested message.
        let mut task = Vec::new();
        int(&mut task, 1, 11);
        len_delim(&mut task, 8, b"extra");
        let mut resp = Vec::new();
        len_delim(&mut resp, 1, &task);
        int(&mut resp, 2, 3);
        let resp = FetchTaskResponse::decode(resp.as_slice()).unwrap();
        assert_eq!(resp.task.unwrap().id, 11);
        assert_eq!(resp.tasks_version, 3);
    }

    #[test]
    fn result_names_round_trip() {
        for r in [
            Result::Unspecified,
            Result::Success,
            Result::Failure,
            Result::Cancelled,
            Result::Skipped,
        ] {
            assert_eq!(Result::from_str_name(r.as_str_name()), Some(r));
            assert_eq!(Result::from_wire(r as i32), r);
        }
        assert_eq!(Result::from_wire(17), Result::Unspecified);
    }
}
