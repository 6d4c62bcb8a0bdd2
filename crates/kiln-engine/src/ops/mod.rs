//! Ops that change filesystems: exec, file, merge and diff.

mod chmod;
pub mod exec;
pub mod file;
mod owner;

use crate::llb::Vertex;
use crate::snapshot::{Chain, LayerId};
use crate::solver::{SolveCtx, SolveError, VertexResult};
use bollard_buildkit_proto::pb;
use std::sync::Arc;

fn input_chain(
    vertex: &Vertex,
    inputs: &[Arc<VertexResult>],
    idx: i64,
) -> Result<Chain, SolveError> {
    let i = usize::try_from(idx).map_err(|_| SolveError::msg(format!("bad input index {idx}")))?;
    let r = inputs
        .get(i)
        .ok_or_else(|| SolveError::msg(format!("input index {idx} out of range")))?;
    r.output(vertex.op.inputs[i].index).cloned()
}

/// Unpack the lazy layers of every input a step reads (see [`crate::lazy`]).
pub(crate) async fn materialize_inputs(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    inputs: &[Arc<VertexResult>],
) -> Result<(), SolveError> {
    for (i, r) in inputs.iter().enumerate() {
        let chain = r.output(vertex.op.inputs[i].index)?;
        ctx.materialize(&vertex.digest, chain, &ctx.cancel).await?;
    }
    Ok(())
}

fn parts(vertex: &Vertex, inputs: &[Arc<VertexResult>]) -> Vec<String> {
    vertex
        .op
        .inputs
        .iter()
        .zip(inputs)
        .map(|(i, r)| SolveCtx::input_part(i, r))
        .collect()
}

/// Merge: the inputs' layers stacked in order. Nothing is copied; overlay does the merging.
pub fn merge(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    merge: &pb::MergeOp,
    inputs: &[Arc<VertexResult>],
) -> Result<VertexResult, SolveError> {
    let mut layers: Vec<LayerId> = Vec::new();
    for m in &merge.inputs {
        for l in input_chain(vertex, inputs, m.input)?.layers() {
            // A layer already below is already part of the result.
            if !layers.contains(l) {
                layers.push(l.clone());
            }
        }
    }
    Ok(VertexResult {
        key: ctx.key(vertex, &parts(vertex, inputs)),
        outputs: vec![Chain(layers)],
        local: None,
    })
}

/// Diff: the layers `upper` has on top of `lower`. Only the common case where `lower` is a
/// prefix of `upper` (what `COPY --link` and friends produce) is supported.
pub fn diff(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    diff: &pb::DiffOp,
    inputs: &[Arc<VertexResult>],
) -> Result<VertexResult, SolveError> {
    let lower = match diff.lower {
        Some(l) if l.input >= 0 => input_chain(vertex, inputs, l.input)?,
        _ => Chain::scratch(),
    };
    let upper = match diff.upper {
        Some(u) if u.input >= 0 => input_chain(vertex, inputs, u.input)?,
        _ => Chain::scratch(),
    };
    if !upper.layers().starts_with(lower.layers()) {
        return Err(SolveError::msg(
            "diff of two unrelated filesystem states is not supported by this version of kiln",
        ));
    }
    Ok(VertexResult {
        key: ctx.key(vertex, &parts(vertex, inputs)),
        outputs: vec![Chain(upper.layers()[lower.layers().len()..].to_vec())],
        local: None,
    })
}
