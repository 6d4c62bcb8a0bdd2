//! Engine progress events → BuildKit `StatusResponse`s. Every update re-sends the whole vertex
//! (clients replace their copy); vertex ids that are not LLB digests (internal steps such as
//! "exporting to image") get a stable `sha256:` digest of their name, as BuildKit does.

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::{
    StatusResponse, Vertex, VertexLog, VertexStatus, VertexWarning,
};
use kiln_engine::progress::{LogStream, ProgressEvent};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::SystemTime;

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A digest-shaped id for any vertex id.
pub fn vertex_digest(id: &str) -> String {
    if id.starts_with("sha256:") && id.len() == 71 {
        id.to_string()
    } else {
        format!("sha256:{}", hex::encode(Sha256::digest(id.as_bytes())))
    }
}

#[derive(Default)]
pub struct StatusBuilder {
    vertices: HashMap<String, Vertex>,
    status_started: HashMap<(String, String), Timestamp>,
}

impl StatusBuilder {
    pub fn convert(&mut self, event: &ProgressEvent) -> Option<StatusResponse> {
        let mut resp = StatusResponse::default();
        match event {
            ProgressEvent::VertexStarted {
                vertex,
                name,
                inputs,
                at,
            } => {
                let d = vertex_digest(vertex);
                let v = self.vertices.entry(d.clone()).or_insert_with(|| Vertex {
                    digest: d.clone(),
                    inputs: inputs.iter().map(|i| vertex_digest(i)).collect(),
                    name: name.clone(),
                    started: Some(timestamp(*at)),
                    ..Vertex::default()
                });
                resp.vertexes.push(v.clone());
            }
            ProgressEvent::VertexCached { vertex, at } => {
                let v = self.vertices.get_mut(&vertex_digest(vertex))?;
                v.cached = true;
                if v.started.is_none() {
                    v.started = Some(timestamp(*at));
                }
                v.completed = Some(timestamp(*at));
                resp.vertexes.push(v.clone());
            }
            ProgressEvent::VertexCompleted { vertex, at, error } => {
                let v = self.vertices.get_mut(&vertex_digest(vertex))?;
                if v.cached && error.is_none() {
                    return None;
                }
                v.completed = Some(timestamp(*at));
                v.error = error.clone().unwrap_or_default();
                resp.vertexes.push(v.clone());
            }
            ProgressEvent::Log {
                vertex,
                stream,
                data,
                at,
            } => {
                let d = vertex_digest(vertex);
                self.vertices.get(&d)?;
                resp.logs.push(VertexLog {
                    vertex: d,
                    timestamp: Some(timestamp(*at)),
                    stream: if *stream == LogStream::Stdout { 1 } else { 2 },
                    msg: data.clone(),
                });
            }
            ProgressEvent::Status {
                vertex,
                id,
                current,
                total,
                completed,
                at,
            } => {
                let d = vertex_digest(vertex);
                self.vertices.get(&d)?;
                let started = *self
                    .status_started
                    .entry((d.clone(), id.clone()))
                    .or_insert_with(|| timestamp(*at));
                resp.statuses.push(VertexStatus {
                    id: id.clone(),
                    vertex: d,
                    name: id.clone(),
                    current: *current as i64,
                    total: total.map(|t| t as i64).unwrap_or(0),
                    timestamp: Some(timestamp(*at)),
                    started: Some(started),
                    completed: completed.then(|| timestamp(*at)),
                });
            }
            ProgressEvent::Warning { vertex, message } => {
                resp.warnings.push(VertexWarning {
                    vertex: vertex.as_deref().map(vertex_digest).unwrap_or_default(),
                    level: 1,
                    short: message.clone().into_bytes(),
                    ..VertexWarning::default()
                });
            }
        }
        Some(resp)
    }

    /// Close every vertex still open, as canceled, so clients show no dangling step.
    pub fn close_open(&mut self) -> Option<StatusResponse> {
        let now = timestamp(SystemTime::now());
        let mut resp = StatusResponse::default();
        for v in self.vertices.values_mut() {
            if v.completed.is_none() {
                v.completed = Some(now);
                v.error = "context canceled".into();
                resp.vertexes.push(v.clone());
            }
        }
        (!resp.vertexes.is_empty()).then_some(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_vertices_complete_once_and_internal_ids_become_digests() {
        let mut b = StatusBuilder::default();
        let at = SystemTime::now();
        let started = b
            .convert(&ProgressEvent::VertexStarted {
                vertex: "exporting to image".into(),
                name: "exporting to image".into(),
                inputs: vec![],
                at,
            })
            .unwrap();
        assert!(started.vertexes[0].digest.starts_with("sha256:"));
        assert_eq!(started.vertexes[0].digest.len(), 71);
        let cached = b
            .convert(&ProgressEvent::VertexCached {
                vertex: "exporting to image".into(),
                at,
            })
            .unwrap();
        assert!(cached.vertexes[0].cached && cached.vertexes[0].completed.is_some());
        assert!(b
            .convert(&ProgressEvent::VertexCompleted {
                vertex: "exporting to image".into(),
                at,
                error: None
            })
            .is_none());
        // Logs for unknown vertices are dropped, as clients would drop them.
        assert!(b
            .convert(&ProgressEvent::Log {
                vertex: "unknown".into(),
                stream: LogStream::Stdout,
                data: b"x".to_vec(),
                at
            })
            .is_none());
        b.convert(&ProgressEvent::VertexStarted {
            vertex: "v2".into(),
            name: "RUN x".into(),
            inputs: vec![],
            at,
        });
        let closed = b.close_open().unwrap();
        assert_eq!(closed.vertexes.len(), 1);
        assert_eq!(closed.vertexes[0].error, "context canceled");
    }
}
