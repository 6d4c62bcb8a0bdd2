//! `docker-image://` sources: resolve the reference, then pull and unpack each layer into its own
//! layer directory (keyed by diff id, so images sharing a base share its layers on disk).

use crate::cache::BlobRecord;
use crate::snapshot::{Chain, LayerId};
use crate::solver::{SolveCtx, SolveError};
use futures::stream::{self, StreamExt, TryStreamExt};
use kiln_oci::layer::{ApplyOptions, WhiteoutMode};
use kiln_oci::registry::ResolvedImage;
use std::sync::Arc;

/// The layer id of an unpacked image layer.
pub fn layer_id_for_diff(diff_id: &str) -> LayerId {
    LayerId::derive(&format!("diff:{diff_id}"))
}

pub(crate) fn compression_of(media_type: &str) -> &'static str {
    if media_type.ends_with("zstd") {
        "zstd"
    } else if media_type.contains("gzip") {
        "gzip"
    } else {
        "uncompressed"
    }
}

/// Make sure every layer of `image` is unpacked; return the chain.
pub async fn unpack(
    ctx: &Arc<SolveCtx>,
    vertex: &str,
    image: &ResolvedImage,
) -> Result<Chain, SolveError> {
    let diff_ids: Vec<String> = image
        .config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.to_string())
        .collect();
    let layers = image.manifest.layers();
    if diff_ids.len() != layers.len() {
        return Err(SolveError::msg(format!(
            "image {}: config lists {} layers but the manifest has {}",
            image.reference,
            diff_ids.len(),
            layers.len()
        )));
    }
    let jobs: Vec<(usize, String, oci_spec::image::Descriptor)> = layers
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, d)| (i, diff_ids[i].clone(), d))
        .collect();
    let chain: Vec<LayerId> = stream::iter(jobs)
        .map(|(i, diff_id, desc)| {
            let ctx = ctx.clone();
            let vertex = vertex.to_string();
            let image_ref = image.reference.clone();
            async move { unpack_layer(&ctx, &vertex, &image_ref, i, &diff_id, &desc).await }
        })
        .buffered(3)
        .try_collect()
        .await?;
    Ok(Chain(chain))
}

async fn unpack_layer(
    ctx: &Arc<SolveCtx>,
    vertex: &str,
    image_ref: &kiln_oci::reference::Reference,
    index: usize,
    diff_id: &str,
    desc: &oci_spec::image::Descriptor,
) -> Result<LayerId, SolveError> {
    let engine = &ctx.engine;
    let id = layer_id_for_diff(diff_id);
    if engine.layers.exists(&id) {
        return Ok(id);
    }
    // Solves that need the same layer at once (the platforms of one build, concurrent builds
    // from the same base) pull it once: the others wait here, then find it.
    let _pulling = engine.building(&format!("layer {diff_id}")).await;
    if engine.layers.exists(&id) {
        return Ok(id);
    }
    let digest: kiln_oci::digest::Digest = desc
        .digest()
        .to_string()
        .parse()
        .map_err(|e| SolveError::msg(format!("image {image_ref}: layer {index}: {e}")))?;
    let status_id = format!("sha256:{}", digest.hex());
    let size = desc.size();
    ctx.progress
        .status(vertex, &status_id, 0, Some(size), false);
    ctx.registry
        .fetch_blob(image_ref, &digest, &engine.content)
        .await
        .map_err(|e| SolveError::msg(e.to_string()))?;
    ctx.progress
        .status(vertex, &status_id, size, Some(size), false);

    let media_type = desc.media_type().to_string();
    let record = BlobRecord {
        digest: digest.to_string(),
        diff_id: diff_id.to_string(),
        size,
        media_type: media_type.clone(),
        source: Some(image_ref.repository_ref()),
        imported: false,
    };
    unpack_blob(
        ctx,
        &id,
        &format!("image {image_ref}: layer {digest}"),
        compression_of(&media_type),
        record,
    )
    .await?;
    ctx.progress
        .status(vertex, &status_id, size, Some(size), true);
    Ok(id)
}

/// Unpack a blob that is already in the content store into layer `id`, and remember the blob
/// (so exports and pushes reuse it instead of compressing the layer again).
pub(crate) async fn unpack_blob(
    ctx: &Arc<SolveCtx>,
    id: &LayerId,
    what: &str,
    compression: &str,
    record: BlobRecord,
) -> Result<(), SolveError> {
    let engine = &ctx.engine;
    let digest: kiln_oci::digest::Digest = record
        .digest
        .parse()
        .map_err(|e| SolveError::msg(format!("{what}: {e}")))?;
    let pending = engine
        .layers
        .begin()
        .map_err(SolveError::io("preparing layer"))?;
    let blob_path = engine.content.path(&digest);
    let diff_dir = pending.diff();
    let what2 = what.to_string();
    let userxattr = engine.layers.userxattr();
    tokio::task::spawn_blocking(move || -> Result<(), SolveError> {
        let reader = kiln_oci::layer::open_layer(&blob_path)
            .map_err(|e| SolveError::msg(format!("{what2}: {e}")))?;
        let opts = ApplyOptions {
            whiteout_mode: if userxattr {
                WhiteoutMode::OverlayFsUserXattr
            } else {
                WhiteoutMode::OverlayFs
            },
            ..Default::default()
        };
        kiln_oci::layer::apply_layer(reader, &diff_dir, &opts)
            .map_err(|e| SolveError::msg(format!("{what2}: {e}")))?;
        Ok(())
    })
    .await
    .map_err(|e| SolveError::msg(format!("unpacking layer: {e}")))??;
    engine
        .layers
        .commit(pending, id)
        .map_err(SolveError::io("committing layer"))?;
    engine
        .cache
        .put_blob(id, compression, &record)
        .map_err(|e| SolveError::msg(e.to_string()))
}
