//! Source ops: where filesystem content enters a build.

pub mod git;
pub mod http;
pub mod image;
pub mod local;

use crate::llb::Vertex;
use crate::snapshot::{Chain, LayerId};
use crate::solver::{SolveCtx, SolveError, VertexResult};
use bollard_buildkit_proto::pb;
use std::sync::Arc;

pub async fn solve(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    src: &pb::SourceOp,
) -> Result<VertexResult, SolveError> {
    let id = src.identifier.as_str();
    if let Some(rest) = id.strip_prefix("docker-image://") {
        solve_image(ctx, vertex, rest).await
    } else if let Some(name) = id.strip_prefix("local://") {
        solve_local(ctx, vertex, name, src).await
    } else if id.starts_with("https://") || id.starts_with("http://") {
        http::solve(ctx, vertex, src).await
    } else if id.starts_with("git://") {
        git::solve(ctx, vertex, src).await
    } else {
        Err(SolveError::msg(format!("unsupported source {id:?}")))
    }
}

async fn solve_image(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    reference: &str,
) -> Result<VertexResult, SolveError> {
    let r = kiln_oci::reference::Reference::parse(reference)
        .map_err(|e| SolveError::msg(format!("invalid image reference {reference:?}: {e}")))?;
    let platform = vertex
        .op
        .platform
        .as_ref()
        .map(|p| kiln_oci::platform::Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
        })
        .unwrap_or_else(kiln_oci::platform::Platform::host);
    let image = ctx.resolve_image(&r, &platform).await?;
    let all_present = image
        .config
        .rootfs()
        .diff_ids()
        .iter()
        .all(|d| ctx.engine.layers.exists(&image::layer_id_for_diff(d)));
    let chain = image::chain_of(ctx, &vertex.digest, &image).await?;
    if all_present {
        ctx.progress.cached(&vertex.digest);
    }
    Ok(VertexResult {
        key: format!("docker-image:{}", image.manifest_digest),
        outputs: vec![chain],
        local: None,
    })
}

fn json_list(src: &pb::SourceOp, attr: &str) -> Result<Vec<String>, SolveError> {
    match src.attrs.get(attr) {
        None => Ok(Vec::new()),
        Some(v) if v.is_empty() => Ok(Vec::new()),
        Some(v) => serde_json::from_str(v).map_err(|e| {
            SolveError::msg(format!("source {}: attribute {attr}: {e}", src.identifier))
        }),
    }
}

async fn solve_local(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    name: &str,
    src: &pb::SourceOp,
) -> Result<VertexResult, SolveError> {
    let mut include = json_list(src, "local.includepattern")?;
    include.extend(json_list(src, "local.includepatterns")?);
    include.extend(json_list(src, "local.followpaths")?);
    let exclude = json_list(src, "local.excludepatterns")?;
    // BuildKit's status for the transfer; a local directory reports its size once scanned.
    let status = format!("transferring {name}:");
    let transferred = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report: crate::session::TransferProgress = {
        let (progress, digest, status) =
            (ctx.progress.clone(), vertex.digest.clone(), status.clone());
        let transferred = transferred.clone();
        Arc::new(move |bytes, done| {
            transferred.store(true, std::sync::atomic::Ordering::Relaxed);
            progress.status(&digest, &status, bytes, None, done);
        })
    };
    let dir = ctx
        .session
        .local_dir(name, &include, &exclude, Some(report))
        .await
        .map_err(|e| SolveError::msg(e.to_string()))?;
    let owned_name = name.to_string();
    let engine = ctx.engine.clone();
    let snapshot = tokio::task::spawn_blocking(move || {
        local::scan(&owned_name, &dir, &include, &exclude, &engine.file_hashes)
    })
    .await
    .map_err(|e| SolveError::msg(format!("scanning local {name:?}: {e}")))?
    .map_err(|e| SolveError::msg(e.to_string()))?;
    // Without a transfer of its own: a directory at hand reports its size; a directory another
    // solve of the build synced (the other platforms') was reported by that solve.
    if !transferred.load(std::sync::atomic::Ordering::Relaxed)
        && !ctx.session.transfers_local_dirs()
    {
        ctx.progress
            .status(&vertex.digest, &status, snapshot.bytes, None, true);
    }
    let key = format!("local:{}", snapshot.checksum);
    let snapshot = Arc::new(snapshot);
    let copy = snapshot.clone();
    let link = ctx.session.local_dirs_are_private();
    let id = layer_once(ctx, vertex, &key, move |dir| {
        copy.copy_into(dir, link)
            .map_err(|e| SolveError::msg(e.to_string()))
    })
    .await?;
    Ok(VertexResult {
        key,
        outputs: vec![Chain::scratch().with(id)],
        local: Some(snapshot),
    })
}

/// The single layer a source produces for `key`: reused when it exists (the vertex is then
/// cached), else made by `fill` in a fresh directory on a blocking thread and committed.
pub(crate) async fn layer_once(
    ctx: &Arc<SolveCtx>,
    vertex: &Vertex,
    key: &str,
    fill: impl FnOnce(&std::path::Path) -> Result<(), SolveError> + Send + 'static,
) -> Result<LayerId, SolveError> {
    let id = LayerId::derive(key);
    if ctx.engine.layers.exists(&id) {
        ctx.progress.cached(&vertex.digest);
        return Ok(id);
    }
    // Solves making the same layer at once (the platforms of one build) make it once.
    let _building = ctx.engine.building(key).await;
    if ctx.engine.layers.exists(&id) {
        ctx.progress.cached(&vertex.digest);
        return Ok(id);
    }
    let pending = ctx
        .engine
        .layers
        .begin()
        .map_err(SolveError::io("preparing layer"))?;
    let diff = pending.diff();
    tokio::task::spawn_blocking(move || fill(&diff))
        .await
        .map_err(|e| SolveError::msg(format!("{}: {e}", vertex.name())))??;
    ctx.engine
        .layers
        .commit(pending, &id)
        .map_err(SolveError::io("committing layer"))
}
