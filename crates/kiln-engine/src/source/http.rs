//! `http(s)://` sources (ADD of a URL): the file is downloaded into the content store; the
//! cache key is its content digest, so an unchanged download reuses everything after it.

use crate::llb::Vertex;
use crate::snapshot::Chain;
use crate::solver::{SolveCtx, SolveError, VertexResult};
use bollard_buildkit_proto::pb;
use futures::StreamExt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

pub async fn solve(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    src: &pb::SourceOp,
) -> Result<VertexResult, SolveError> {
    let url = &src.identifier;
    let fail = |m: String| SolveError::msg(format!("{url}: {m}"));
    let resp = reqwest::get(url.as_str())
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("invalid response status {}", resp.status())));
    }
    let mut writer = ctx
        .engine
        .content
        .writer()
        .map_err(|e| fail(e.to_string()))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fail(e.to_string()))?;
        writer.write_all(&chunk).map_err(|e| fail(e.to_string()))?;
    }
    let expected = match src.attrs.get("http.checksum") {
        Some(c) if !c.is_empty() => Some(
            c.parse::<kiln_oci::digest::Digest>()
                .map_err(|e| fail(format!("invalid checksum: {e}")))?,
        ),
        _ => None,
    };
    let (digest, _) = writer
        .commit(expected.as_ref())
        .map_err(|e| fail(e.to_string()))?;

    let filename = src
        .attrs
        .get("http.filename")
        .filter(|f| !f.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            url.rsplit('/')
                .find(|s| !s.is_empty())
                .unwrap_or("index")
                .to_string()
        });
    if filename.contains('/') || filename == ".." {
        return Err(fail(format!("invalid file name {filename:?}")));
    }
    let perm = src
        .attrs
        .get("http.perm")
        .and_then(|p| u32::from_str_radix(p, 8).ok())
        .unwrap_or(0o600);
    let key = format!("http:{digest}:{filename}:{perm:o}");
    let blob = ctx.engine.content.path(&digest);
    let id = super::layer_once(ctx, vertex, &key, move |dir| {
        let dst = dir.join(&filename);
        std::fs::copy(blob, &dst).map_err(SolveError::io("writing download"))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(perm))
            .map_err(SolveError::io("writing download"))
    })
    .await?;
    Ok(VertexResult {
        key,
        outputs: vec![Chain::scratch().with(id)],
        local: None,
    })
}
