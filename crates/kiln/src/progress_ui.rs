//! Renders the engine's progress events: `plain` (like buildctl's plain output), `tty`
//! (indicatif spinners, one line per vertex) and `rawjson` (one JSON object per event).

use kiln_engine::progress::{LogStream, ProgressEvent};
use std::collections::HashMap;
use std::io::Write;
use std::time::SystemTime;
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
    let mut err = std::io::stderr();
    while let Some(event) = rx.recv().await {
        match mode {
            ProgressMode::Quiet => {}
            ProgressMode::Rawjson => {
                let _ = writeln!(err, "{}", raw_json(&event));
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

fn ts(t: &SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn raw_json(event: &ProgressEvent) -> serde_json::Value {
    use serde_json::json;
    match event {
        ProgressEvent::VertexStarted {
            vertex,
            name,
            inputs,
            at,
        } => {
            json!({"vertexes": [{"digest": vertex, "name": name, "inputs": inputs, "started": ts(at)}]})
        }
        ProgressEvent::VertexCached { vertex, at } => {
            json!({"vertexes": [{"digest": vertex, "cached": true, "completed": ts(at)}]})
        }
        ProgressEvent::VertexCompleted { vertex, at, error } => {
            json!({"vertexes": [{"digest": vertex, "completed": ts(at), "error": error.clone().unwrap_or_default()}]})
        }
        ProgressEvent::Log {
            vertex,
            stream,
            data,
            at,
        } => json!({"logs": [{
            "vertex": vertex,
            "stream": if *stream == LogStream::Stdout { 1 } else { 2 },
            "data": String::from_utf8_lossy(data),
            "timestamp": ts(at),
        }]}),
        ProgressEvent::Status {
            vertex,
            id,
            current,
            total,
            completed,
            at,
        } => json!({"statuses": [{
            "id": id, "vertex": vertex, "current": current, "total": total,
            "timestamp": ts(at), "completed": if *completed { Some(ts(at)) } else { None },
        }]}),
        ProgressEvent::Warning { vertex, message } => {
            json!({"warnings": [{"vertex": vertex, "short": message}]})
        }
    }
}
