//! Renders the engine's progress events: `plain` (like buildctl's plain output), `tty`
//! (indicatif spinners, one line per vertex) and `rawjson` (one JSON object per event).

use kiln_engine::progress::{LogStream, ProgressEvent};
use std::collections::HashMap;
use std::io::Write;
use std::time::{Instant, SystemTime};
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
    number: usize,
    cached: bool,
    name: String,
    started: Instant,
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
    let mut last_log_vertex: Option<String> = None;
    let mut err = std::io::stderr();
    while let Some(event) = rx.recv().await {
        match mode {
            ProgressMode::Quiet => {}
            ProgressMode::Rawjson => {
                let _ = writeln!(err, "{}", raw_json(&event));
            }
            ProgressMode::Plain => plain(&mut err, &mut vertices, &mut last_log_vertex, &event),
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

fn plain(
    err: &mut impl Write,
    vertices: &mut HashMap<String, VertexState>,
    last: &mut Option<String>,
    event: &ProgressEvent,
) {
    match event {
        ProgressEvent::VertexStarted { vertex, name, .. } => {
            if vertices.contains_key(vertex) {
                return;
            }
            let number = vertices.len() + 1;
            let _ = writeln!(err, "#{number} {name}");
            vertices.insert(
                vertex.clone(),
                VertexState {
                    number,
                    cached: false,
                    name: name.clone(),
                    started: Instant::now(),
                    bar: None,
                },
            );
            *last = Some(vertex.clone());
        }
        ProgressEvent::VertexCached { vertex, .. } => {
            if let Some(v) = vertices.get_mut(vertex) {
                let _ = writeln!(err, "#{} CACHED", v.number);
                let _ = writeln!(err);
                v.cached = true;
            }
        }
        ProgressEvent::VertexCompleted { vertex, error, .. } => {
            if let Some(v) = vertices.get(vertex) {
                match error {
                    Some(e) if e.ends_with("context canceled") => {
                        let _ = writeln!(err, "#{} CANCELED", v.number);
                    }
                    Some(e) => {
                        let _ = writeln!(err, "#{} ERROR: {e}", v.number);
                    }
                    None if v.cached => {}
                    None => {
                        let _ = writeln!(
                            err,
                            "#{} DONE {:.1}s",
                            v.number,
                            v.started.elapsed().as_secs_f64()
                        );
                    }
                }
                if !(v.cached && error.is_none()) {
                    let _ = writeln!(err);
                }
            }
        }
        ProgressEvent::Log { vertex, data, .. } => {
            if let Some(v) = vertices.get(vertex) {
                if last.as_deref() != Some(vertex.as_str()) {
                    if let Some(prev) = last.as_ref().and_then(|l| vertices.get(l)) {
                        let _ = writeln!(err, "#{} ...", prev.number);
                    }
                    let _ = writeln!(err, "\n#{} {}", v.number, v.name);
                    *last = Some(vertex.clone());
                }
                let secs = v.started.elapsed().as_secs_f64();
                for line in String::from_utf8_lossy(data).lines() {
                    let _ = writeln!(err, "#{} {secs:.3} {line}", v.number);
                }
            }
        }
        ProgressEvent::Status {
            vertex,
            id,
            current,
            total,
            completed,
            ..
        } => {
            if let (Some(v), true) = (vertices.get(vertex), *completed) {
                let amount = match total {
                    Some(t) => format!("{current}/{t}"),
                    None => current.to_string(),
                };
                let _ = writeln!(err, "#{} {id} {amount} done", v.number);
            }
        }
        ProgressEvent::Warning { message, .. } => {
            let _ = writeln!(err, "WARNING: {message}");
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
            let number = vertices.len() + 1;
            vertices.insert(
                vertex.clone(),
                VertexState {
                    number,
                    cached: false,
                    name: name.clone(),
                    started: Instant::now(),
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
