//! Renders the engine's progress events: `plain` (like buildctl's plain output), `tty`
//! (indicatif spinners, one line per vertex) and `rawjson` (one JSON object per event).

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;
use kiln_engine::progress::ProgressEvent;
use std::collections::HashMap;
use std::io::Write;
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

struct VertexState {
    name: String,
    bar: Option<indicatif::ProgressBar>,
}

/// Consume events until the channel closes. Output goes to stderr, like buildctl and buildx.
pub async fn render(mode: ProgressMode, mut rx: UnboundedReceiver<ProgressEvent>) {
    use std::io::IsTerminal;
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    };
    let multi = indicatif::MultiProgress::new();
    let mut vertices: HashMap<String, VertexState> = HashMap::new();
    let mut plain = kiln_engine::progress::PlainRenderer::new();
    let mut status = kiln_buildkit::status::StatusBuilder::default();
    let mut err = std::io::stderr();
    while let Some(event) = rx.recv().await {
        match mode {
            ProgressMode::Quiet => {}
            ProgressMode::Rawjson => {
                if let Some(resp) = status.convert(&event) {
                    let _ = writeln!(err, "{}", raw_json(&resp));
                }
            }
            ProgressMode::Plain => {
                let _ = write!(err, "{}", plain.render(&event));
            }
            ProgressMode::Tty | ProgressMode::Auto => tty(&multi, &mut vertices, &event),
        }
    }
    for v in vertices.values() {
        if let Some(b) = &v.bar {
            if !b.is_finished() {
                b.finish();
            }
        }
    }
}

fn tty(
    multi: &indicatif::MultiProgress,
    vertices: &mut HashMap<String, VertexState>,
    event: &ProgressEvent,
) {
    let style = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed:>4}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    match event {
        ProgressEvent::VertexStarted { vertex, name, .. } => {
            if vertices.contains_key(vertex) {
                return;
            }
            let bar = multi.add(indicatif::ProgressBar::new_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar.set_message(name.clone());
            vertices.insert(
                vertex.clone(),
                VertexState {
                    name: name.clone(),
                    bar: Some(bar),
                },
            );
        }
        ProgressEvent::VertexCached { vertex, .. } => {
            if let Some(b) = vertices.get(vertex).and_then(|v| v.bar.as_ref()) {
                b.set_message(format!("CACHED {}", vertices[vertex].name));
            }
        }
        ProgressEvent::VertexCompleted { vertex, error, .. } => {
            if let Some(v) = vertices.get(vertex) {
                if let Some(b) = &v.bar {
                    match error {
                        Some(e) => b.abandon_with_message(format!("ERROR {}: {e}", v.name)),
                        None => b.finish_with_message(format!("✔ {}", v.name)),
                    }
                }
            }
        }
        ProgressEvent::Log { vertex, data, .. } => {
            if let Some(b) = vertices.get(vertex).and_then(|v| v.bar.as_ref()) {
                if let Some(line) = String::from_utf8_lossy(data).lines().last() {
                    b.set_message(format!("{} │ {}", vertices[vertex].name, line.trim()));
                }
            }
        }
        ProgressEvent::Status { .. } => {}
        ProgressEvent::Warning { message, .. } => {
            let _ = multi.println(format!("WARNING: {message}"));
        }
    }
}

/// A `StatusResponse` as buildctl's `--progress rawjson` prints it: Go's JSON of
/// `client.SolveStatus` (omitted empty fields, RFC 3339 times, log data in base64).
fn raw_json(resp: &StatusResponse) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::{json, Map, Value};
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let time = |t: &Option<Timestamp>| t.as_ref().map(go_time);
    let mut out = Map::new();
    let put = |o: &mut Map<String, Value>, k: &str, v: Value| {
        let empty = matches!(&v, Value::Null | Value::Bool(false))
            || v.as_str() == Some("")
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_i64() == Some(0);
        if !empty {
            o.insert(k.to_string(), v);
        }
    };
    let vertexes: Vec<Value> = resp
        .vertexes
        .iter()
        .map(|v| {
            let mut o = Map::new();
            put(&mut o, "digest", json!(v.digest));
            put(&mut o, "inputs", json!(v.inputs));
            put(&mut o, "name", json!(v.name));
            put(&mut o, "started", json!(time(&v.started)));
            put(&mut o, "completed", json!(time(&v.completed)));
            put(&mut o, "cached", json!(v.cached));
            put(&mut o, "error", json!(v.error));
            Value::Object(o)
        })
        .collect();
    let statuses: Vec<Value> = resp
        .statuses
        .iter()
        .map(|s| {
            let mut o = Map::new();
            o.insert("id".into(), json!(s.id));
            put(&mut o, "vertex", json!(s.vertex));
            put(&mut o, "name", json!(s.name));
            put(&mut o, "total", json!(s.total));
            o.insert("current".into(), json!(s.current));
            put(&mut o, "timestamp", json!(time(&s.timestamp)));
            put(&mut o, "started", json!(time(&s.started)));
            put(&mut o, "completed", json!(time(&s.completed)));
            Value::Object(o)
        })
        .collect();
    let logs: Vec<Value> = resp
        .logs
        .iter()
        .map(|l| {
            let mut o = Map::new();
            put(&mut o, "vertex", json!(l.vertex));
            put(&mut o, "stream", json!(l.stream));
            o.insert("data".into(), json!(b64(&l.msg)));
            o.insert("timestamp".into(), json!(time(&l.timestamp)));
            Value::Object(o)
        })
        .collect();
    let warnings: Vec<Value> = resp
        .warnings
        .iter()
        .map(|w| {
            let mut o = Map::new();
            put(&mut o, "vertex", json!(w.vertex));
            put(&mut o, "level", json!(w.level));
            put(&mut o, "short", json!(b64(&w.short)));
            Value::Object(o)
        })
        .collect();
    put(&mut out, "vertexes", Value::Array(vertexes));
    put(&mut out, "statuses", Value::Array(statuses));
    put(&mut out, "logs", Value::Array(logs));
    put(&mut out, "warnings", Value::Array(warnings));
    Value::Object(out)
}

/// Go's `time.Time` in JSON: RFC 3339 with nanoseconds, trailing zeros dropped.
fn go_time(t: &Timestamp) -> String {
    let base = kiln_dockerfile::lower::rfc3339(t.seconds);
    if t.nanos == 0 {
        return base;
    }
    let frac = format!("{:09}", t.nanos);
    format!(
        "{}.{}Z",
        base.trim_end_matches('Z'),
        frac.trim_end_matches('0')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn rawjson_is_buildctls_solve_status() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        let mut status = kiln_buildkit::status::StatusBuilder::default();
        let events = [
            ProgressEvent::VertexStarted {
                vertex: "[internal] load build context".into(),
                name: "[internal] load build context".into(),
                inputs: vec![],
                at,
            },
            ProgressEvent::Log {
                vertex: "[internal] load build context".into(),
                stream: kiln_engine::progress::LogStream::Stdout,
                data: b"hello\n".to_vec(),
                at,
            },
        ];
        let lines: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|e| status.convert(e))
            .map(|r| raw_json(&r))
            .collect();
        let v = &lines[0]["vertexes"][0];
        assert!(v["digest"].as_str().unwrap().starts_with("sha256:"), "{v}");
        assert_eq!(v["started"], "2023-11-14T22:13:20.12Z");
        assert!(v.get("cached").is_none() && v.get("error").is_none(), "{v}");
        let log = &lines[1]["logs"][0];
        assert_eq!(log["data"], "aGVsbG8K");
        assert_eq!(log["stream"], 1);
        assert!(lines[1].get("vertexes").is_none());
    }
}
