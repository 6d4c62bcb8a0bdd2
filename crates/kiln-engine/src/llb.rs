//! An LLB `Definition` decoded into a graph the solver can walk. Digests are recomputed from the
//! bytes, so a definition cannot lie about them (and cannot contain a cycle).

use bollard_buildkit_proto::pb;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum LlbError {
    #[error("invalid LLB definition: op {index} is not a valid protobuf Op: {source}")]
    Decode {
        index: usize,
        #[source]
        source: prost::DecodeError,
    },
    #[error("invalid LLB definition: op {digest} refers to missing input {input}")]
    MissingInput { digest: String, input: String },
    #[error("invalid LLB definition: the last op must have exactly one input and no operation")]
    BadTerminal,
}

/// One vertex: the op, its digest and metadata.
#[derive(Debug, Clone)]
pub struct Vertex {
    pub digest: String,
    pub op: pb::Op,
    pub metadata: pb::OpMetadata,
}

impl Vertex {
    /// The name shown in progress output: the frontend's custom name, else a description of
    /// the op like BuildKit's.
    pub fn name(&self) -> String {
        if let Some(n) = self.metadata.description.get("llb.customname") {
            return n.clone();
        }
        match &self.op.op {
            Some(pb::op::Op::Source(s)) => s.identifier.clone(),
            Some(pb::op::Op::Exec(e)) => e
                .meta
                .as_ref()
                .map(|m| m.args.join(" "))
                .unwrap_or_default(),
            Some(pb::op::Op::File(f)) => {
                let names: Vec<&str> = f
                    .actions
                    .iter()
                    .map(|a| match &a.action {
                        Some(pb::file_action::Action::Copy(_)) => "copy",
                        Some(pb::file_action::Action::Mkfile(_)) => "mkfile",
                        Some(pb::file_action::Action::Mkdir(_)) => "mkdir",
                        Some(pb::file_action::Action::Rm(_)) => "rm",
                        Some(pb::file_action::Action::Symlink(_)) => "symlink",
                        None => "noop",
                    })
                    .collect();
                names.join(", ")
            }
            Some(pb::op::Op::Merge(_)) => "merge".into(),
            Some(pb::op::Op::Diff(_)) => "diff".into(),
            Some(pb::op::Op::Build(_)) => "build".into(),
            None => "noop".into(),
        }
    }

    pub fn ignore_cache(&self) -> bool {
        self.metadata.ignore_cache
    }

    /// Whether the vertex's result is worth exporting to a remote cache: the result of work
    /// (an exec or file op), not a source any kiln can fetch again.
    pub fn exportable(&self) -> bool {
        !self.ignore_cache()
            && matches!(
                self.op.op,
                Some(pb::op::Op::Exec(_)) | Some(pb::op::Op::File(_))
            )
    }
}

/// The decoded definition.
#[derive(Debug, Clone)]
pub struct Graph {
    pub vertices: HashMap<String, Vertex>,
    /// What the definition evaluates to: `None` for an empty result (scratch).
    pub root: Option<pb::Input>,
}

pub fn op_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Graph {
    pub fn from_definition(def: &pb::Definition) -> Result<Graph, LlbError> {
        if def.def.is_empty() {
            // `llb.Scratch()` marshals to nothing: an empty result (`FROM scratch` with only
            // metadata), which BuildKit exports as an image without layers.
            return Ok(Graph {
                vertices: HashMap::new(),
                root: None,
            });
        }
        let mut vertices = HashMap::new();
        let mut last = None;
        for (index, bytes) in def.def.iter().enumerate() {
            let op = pb::Op::decode(bytes.as_slice())
                .map_err(|source| LlbError::Decode { index, source })?;
            let digest = op_digest(bytes);
            let metadata = def.metadata.get(&digest).cloned().unwrap_or_default();
            last = Some(digest.clone());
            vertices.insert(
                digest.clone(),
                Vertex {
                    digest,
                    op,
                    metadata,
                },
            );
        }
        let last = last.expect("non-empty");
        let terminal = vertices.remove(&last).expect("just inserted");
        if terminal.op.op.is_some() || terminal.op.inputs.len() > 1 {
            return Err(LlbError::BadTerminal);
        }
        let root = terminal.op.inputs.first().cloned();
        for v in vertices.values() {
            for input in &v.op.inputs {
                if !vertices.contains_key(&input.digest) {
                    return Err(LlbError::MissingInput {
                        digest: v.digest.clone(),
                        input: input.digest.clone(),
                    });
                }
            }
        }
        if let Some(r) = &root {
            if !vertices.contains_key(&r.digest) {
                return Err(LlbError::MissingInput {
                    digest: last,
                    input: r.digest.clone(),
                });
            }
        }
        Ok(Graph { vertices, root })
    }
}
