//! Progress is an event stream. The CLI printers, the gRPC `Status` RPC, the Docker JSON stream and
//! the Gitea step log are all consumers of the same [`ProgressEvent`]s.

use std::time::SystemTime;
use tokio::sync::mpsc;

/// Which output stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One thing that happened during a solve. `vertex` is the LLB op digest the event is about.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// A vertex became known (before it starts), with its display name.
    VertexStarted {
        vertex: String,
        name: String,
        inputs: Vec<String>,
        at: SystemTime,
    },
    /// The vertex's result came from the cache; nothing ran.
    VertexCached { vertex: String, at: SystemTime },
    /// The vertex finished. `error` is set when it failed.
    VertexCompleted {
        vertex: String,
        at: SystemTime,
        error: Option<String>,
    },
    /// Output of a running process.
    Log {
        vertex: String,
        stream: LogStream,
        data: Vec<u8>,
        at: SystemTime,
    },
    /// A progress counter inside a vertex (bytes pulled, files transferred, …).
    Status {
        vertex: String,
        id: String,
        current: u64,
        total: Option<u64>,
        completed: bool,
        at: SystemTime,
    },
    /// A warning about the build (not fatal).
    Warning {
        vertex: Option<String>,
        message: String,
    },
}

/// The sending half handed to a solve. Cheap to clone; a dropped receiver is not an error:
/// progress is best effort, the build goes on without a listener.
#[derive(Clone)]
pub struct ProgressSender {
    sink: Sink,
    /// Steps (LLB vertices, `sha256:…`) reported complete. The solves of one build (one per
    /// platform) share steps: a step another solve finished is not reported again.
    finished: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

#[derive(Clone)]
enum Sink {
    Discard,
    Channel(mpsc::UnboundedSender<ProgressEvent>),
    Func(std::sync::Arc<dyn Fn(ProgressEvent) + Send + Sync>),
}

impl ProgressSender {
    pub fn channel() -> (ProgressSender, mpsc::UnboundedReceiver<ProgressEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            ProgressSender {
                sink: Sink::Channel(tx),
                finished: Default::default(),
            },
            rx,
        )
    }

    /// A sender that hands every event to `f` as it happens (in order, on the sending task).
    pub fn from_fn(f: impl Fn(ProgressEvent) + Send + Sync + 'static) -> ProgressSender {
        ProgressSender {
            sink: Sink::Func(std::sync::Arc::new(f)),
            finished: Default::default(),
        }
    }

    /// A sender that drops every event.
    pub fn discard() -> ProgressSender {
        ProgressSender {
            sink: Sink::Discard,
            finished: Default::default(),
        }
    }

    pub fn send(&self, event: ProgressEvent) {
        let step = match &event {
            ProgressEvent::VertexStarted { vertex, .. }
            | ProgressEvent::VertexCached { vertex, .. }
            | ProgressEvent::VertexCompleted { vertex, .. } => {
                Some(vertex).filter(|v| v.starts_with("sha256:"))
            }
            _ => None,
        };
        if let Some(vertex) = step {
            let mut finished = self.finished.lock().expect("finished steps");
            if finished.contains(vertex) {
                return;
            }
            if matches!(event, ProgressEvent::VertexCompleted { .. }) {
                finished.insert(vertex.clone());
            }
        }
        match &self.sink {
            Sink::Discard => {}
            Sink::Channel(tx) => {
                let _ = tx.send(event);
            }
            Sink::Func(f) => f(event),
        }
    }

    pub fn started(&self, vertex: &str, name: &str, inputs: Vec<String>) {
        self.send(ProgressEvent::VertexStarted {
            vertex: vertex.to_string(),
            name: name.to_string(),
            inputs,
            at: SystemTime::now(),
        });
    }

    pub fn cached(&self, vertex: &str) {
        self.send(ProgressEvent::VertexCached {
            vertex: vertex.to_string(),
            at: SystemTime::now(),
        });
    }

    pub fn completed(&self, vertex: &str, error: Option<String>) {
        self.send(ProgressEvent::VertexCompleted {
            vertex: vertex.to_string(),
            at: SystemTime::now(),
            error,
        });
    }

    pub fn log(&self, vertex: &str, stream: LogStream, data: &[u8]) {
        self.send(ProgressEvent::Log {
            vertex: vertex.to_string(),
            stream,
            data: data.to_vec(),
            at: SystemTime::now(),
        });
    }

    pub fn status(
        &self,
        vertex: &str,
        id: &str,
        current: u64,
        total: Option<u64>,
        completed: bool,
    ) {
        self.send(ProgressEvent::Status {
            vertex: vertex.to_string(),
            id: id.to_string(),
            current,
            total,
            completed,
            at: SystemTime::now(),
        });
    }

    pub fn warn(&self, vertex: Option<&str>, message: impl Into<String>) {
        self.send(ProgressEvent::Warning {
            vertex: vertex.map(str::to_string),
            message: message.into(),
        });
    }
}

/// A byte count as BuildKit's clients print it (`%.2f` of `units.Bytes`): decimal units with
/// two decimals, whole bytes below 1 kB — `138B`, `10.11kB`, `3.31MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// Renders progress events in buildctl's `--progress plain` format (`#3 [2/4] RUN make`,
/// `#3 0.512 output`, `#3 DONE 1.2s`, `#3 CACHED`). Shared by `kiln build` and the Docker API's
/// plain-progress mode, so every door prints the same text.
#[derive(Default)]
pub struct PlainRenderer {
    vertices: std::collections::HashMap<String, PlainVertex>,
    last: Option<String>,
}

struct PlainVertex {
    number: usize,
    cached: bool,
    name: String,
    started: std::time::Instant,
}

impl PlainRenderer {
    pub fn new() -> PlainRenderer {
        PlainRenderer::default()
    }

    /// The text one event adds (possibly empty), with line ends.
    pub fn render(&mut self, event: &ProgressEvent) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        match event {
            ProgressEvent::VertexStarted { vertex, name, .. } => {
                if self.vertices.contains_key(vertex) {
                    return out;
                }
                let number = self.vertices.len() + 1;
                let _ = writeln!(out, "#{number} {name}");
                self.vertices.insert(
                    vertex.clone(),
                    PlainVertex {
                        number,
                        cached: false,
                        name: name.clone(),
                        started: std::time::Instant::now(),
                    },
                );
                self.last = Some(vertex.clone());
            }
            ProgressEvent::VertexCached { vertex, .. } => {
                if let Some(v) = self.vertices.get_mut(vertex) {
                    let _ = writeln!(out, "#{} CACHED\n", v.number);
                    v.cached = true;
                }
            }
            ProgressEvent::VertexCompleted { vertex, error, .. } => {
                if let Some(v) = self.vertices.get(vertex) {
                    match error {
                        Some(e) if e.ends_with("context canceled") => {
                            let _ = writeln!(out, "#{} CANCELED", v.number);
                        }
                        Some(e) => {
                            let _ = writeln!(out, "#{} ERROR: {e}", v.number);
                        }
                        None if v.cached => {}
                        None => {
                            let _ = writeln!(
                                out,
                                "#{} DONE {:.1}s",
                                v.number,
                                v.started.elapsed().as_secs_f64()
                            );
                        }
                    }
                    if !(v.cached && error.is_none()) {
                        out.push('\n');
                    }
                }
            }
            ProgressEvent::Log { vertex, data, .. } => {
                if let Some(v) = self.vertices.get(vertex) {
                    if self.last.as_deref() != Some(vertex.as_str()) {
                        if let Some(prev) = self.last.as_ref().and_then(|l| self.vertices.get(l)) {
                            let _ = writeln!(out, "#{} ...", prev.number);
                        }
                        let _ = writeln!(out, "\n#{} {}", v.number, v.name);
                        self.last = Some(vertex.clone());
                    }
                    let secs = v.started.elapsed().as_secs_f64();
                    for line in String::from_utf8_lossy(data).lines() {
                        let _ = writeln!(out, "#{} {secs:.3} {line}", v.number);
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
                if let (Some(v), true) = (self.vertices.get(vertex), *completed) {
                    let amount = match total {
                        Some(t) if *t != 0 => {
                            format!(" {} / {}", human_bytes(*current), human_bytes(*t))
                        }
                        _ if *current != 0 => format!(" {}", human_bytes(*current)),
                        _ => String::new(),
                    };
                    let _ = writeln!(out, "#{} {id}{amount} done", v.number);
                }
            }
            ProgressEvent::Warning { message, .. } => {
                let _ = writeln!(out, "WARNING: {message}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_print_like_buildctl() {
        assert_eq!(human_bytes(3), "3B");
        assert_eq!(human_bytes(999), "999B");
        assert_eq!(human_bytes(1000), "1.00kB");
        assert_eq!(human_bytes(10_112), "10.11kB");
        assert_eq!(human_bytes(3_310_000), "3.31MB");
        assert_eq!(human_bytes(268_435_456), "268.44MB");
    }

    #[test]
    fn plain_statuses_show_sizes_or_nothing() {
        let mut r = PlainRenderer::new();
        let at = SystemTime::now();
        let mut text = String::new();
        for e in [
            ProgressEvent::VertexStarted {
                vertex: "v".into(),
                name: "exporting to image".into(),
                inputs: vec![],
                at,
            },
            ProgressEvent::Status {
                vertex: "v".into(),
                id: "exporting layers".into(),
                current: 0,
                total: None,
                completed: true,
                at,
            },
            ProgressEvent::Status {
                vertex: "v".into(),
                id: "transferring context:".into(),
                current: 3_310_000,
                total: None,
                completed: true,
                at,
            },
        ] {
            text.push_str(&r.render(&e));
        }
        assert!(text.contains("#1 exporting layers done\n"), "{text}");
        assert!(
            text.contains("#1 transferring context: 3.31MB done\n"),
            "{text}"
        );
    }
}
