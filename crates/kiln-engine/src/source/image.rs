//! `docker-image://` sources: resolve the reference, then pull and unpack each layer into its own
//! layer directory (keyed by diff id, so images sharing a base share its layers on disk).

use crate::cache::BlobRecord;
use crate::lazy::{LazyLayer, Origin};
use crate::snapshot::{Chain, LayerId};
use crate::solver::{SolveCtx, SolveError};
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

/// The chain of `image`. Layers not unpacked yet are registered as lazy (see [`crate::lazy`]):
/// the steps that need their files unpack them. Without imported caches a build nearly always
/// does, so they are unpacked right away, under this vertex, as BuildKit shows the pull.
pub async fn chain_of(
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
    let mut chain = Chain::scratch();
    for (desc, diff_id) in layers.iter().zip(&diff_ids) {
        let id = layer_id_for_diff(diff_id);
        if !ctx.engine.layers.exists(&id) {
            let media_type = desc.media_type().to_string();
            ctx.engine.lazy.add(
                &id,
                LazyLayer {
                    blob: BlobRecord {
                        digest: desc.digest().to_string(),
                        diff_id: diff_id.clone(),
                        size: desc.size(),
                        media_type,
                        source: Some(image.reference.repository_ref()),
                        imported: false,
                    },
                    origin: Origin::Registry(image.reference.clone()),
                    created: None,
                    what: format!("image {}", image.reference),
                },
            );
        }
        chain = chain.with(id);
    }
    if ctx.imports.is_empty() {
        ctx.materialize(vertex, &chain, &ctx.cancel).await?;
    }
    Ok(chain)
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
