//! `docker save` (`GET /images/get`, `GET /images/{name}/get`) through the engine's Docker tar
//! exporter, and `docker load` (`POST /images/load`) of `docker save` archives.

use crate::context::{inside_root, receive, unpack};
use crate::error::ApiError;
use crate::query::Query;
use crate::store::{now, read_content, ImageRecord};
use crate::stream::Messages;
use crate::Shared;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kiln_engine::cache::BlobRecord;
use kiln_engine::exporter::{BuiltImage, ImageLayer};
use kiln_engine::snapshot::LayerId;
use kiln_oci::media_types as mt;
use kiln_oci::{ContentStore, Digest, Reference};
use serde::Deserialize;
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Streams what a blocking writer writes into a response body.
struct BodyWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An image from the store in the shape the engine's exporters take.
fn built_image(content_store: &ContentStore, image: &ImageRecord) -> Result<BuiltImage, ApiError> {
    let c = read_content(content_store, image)?;
    let digest = |s: &str| {
        s.parse::<Digest>()
            .map_err(|e| ApiError::Internal(format!("image {}: {e}", image.id)))
    };
    let diff_ids = c.config_json["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut layers = Vec::new();
    for (i, (d, size, media_type)) in c.layers.iter().enumerate() {
        if !content_store.has(&digest(d)?) {
            return Err(ApiError::Internal(format!(
                "image {}: layer {d} is missing from the content store",
                image.id
            )));
        }
        layers.push(ImageLayer {
            blob: BlobRecord {
                digest: d.clone(),
                diff_id: diff_ids
                    .get(i)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                size: *size,
                media_type: media_type.clone(),
                source: None,
                imported: false,
            },
            // Only the blob is exported; no snapshot is involved.
            layer: LayerId(String::new()),
        });
    }
    Ok(BuiltImage {
        manifest_digest: digest(&image.manifest)?,
        manifest: c.manifest,
        manifest_media_type: image.media_type.clone(),
        config_digest: digest(&image.id)?,
        config: c.config,
        layers,
    })
}

pub async fn save(api: &Arc<Shared>, names: &[&str]) -> Result<Response, ApiError> {
    if names.is_empty() {
        return Err(ApiError::BadRequest("save: no image names given".into()));
    }
    let mut image: Option<ImageRecord> = None;
    let mut tags: Vec<String> = Vec::new();
    for name in names {
        let found = api
            .store
            .find(name)
            .ok_or_else(|| ApiError::no_such_image(name))?;
        if image.as_ref().is_some_and(|i| i.id != found.image.id) {
            return Err(ApiError::BadRequest(
                "saving several different images into one archive is not supported by kiln; \
                 save them one at a time"
                    .into(),
            ));
        }
        let refs = match found.tag {
            Some(t) => vec![t],
            None => api.store.tags_of(&found.image.id),
        };
        for r in refs {
            let s = r.to_string();
            if !tags.contains(&s) {
                tags.push(s);
            }
        }
        image = Some(found.image);
    }
    let image = image.expect("at least one name");
    let built = built_image(&api.engine.inner().content, &image)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let engine = api.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, BodyWriter { tx: tx.clone() });
        let result = engine
            .write_image_tar(&built, &tags, true, &mut w)
            .map_err(|e| e.message)
            .and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!("docker save of {}: {e}", built.config_digest);
            // Fail the body so the client sees a broken transfer, not a short archive.
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-tar")],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub async fn load(api: &Arc<Shared>, _query: &Query, req: Request) -> Result<Response, ApiError> {
    let dir = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(&api.tmp_dir)
        .map_err(|e| ApiError::Internal(format!("creating a directory for the archive: {e}")))?;
    let archive = dir.path().join("archive.tar");
    receive(req.into_body(), &archive, "image archive")
        .await
        .map_err(ApiError::BadRequest)?;
    let api2 = api.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let root = dir.path().join("root");
        std::fs::create_dir(&root).map_err(|e| ApiError::Internal(e.to_string()))?;
        unpack(&archive, &root, "image archive")
            .map_err(|e| ApiError::BadRequest(format!("image archive: {e}")))?;
        let _ = std::fs::remove_file(&archive);
        import(&api2, &root)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let (messages, response) = Messages::response();
    for line in loaded {
        messages.stream(line);
    }
    Ok(response)
}

/// Import every image of an unpacked `docker save` archive; returns the lines to print.
fn import(api: &Shared, root: &Path) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::BadRequest(format!("image archive: {m}"));
    let file = |name: &str| {
        let rel = inside_root(Path::new(name)).map_err(|e| bad(format!("{name:?}: {e}")))?;
        Ok::<_, ApiError>(root.join(rel))
    };
    let manifest = std::fs::read(root.join("manifest.json")).map_err(|_| {
        bad("no manifest.json: only archives written by `docker save` can be loaded".into())
    })?;
    let entries: Vec<ArchiveEntry> =
        serde_json::from_slice(&manifest).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let content = &api.engine.inner().content;
    let store_err = |e: kiln_oci::StoreError| ApiError::Internal(e.to_string());
    let mut lines = Vec::new();
    for entry in entries {
        let config = std::fs::read(file(&entry.config)?)
            .map_err(|e| bad(format!("{}: {e}", entry.config)))?;
        let config_json: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| bad(format!("{}: {e}", entry.config)))?;
        let diff_ids = config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        if diff_ids != entry.layers.len() {
            return Err(bad(format!(
                "{}: {} layers in manifest.json but {diff_ids} in the config",
                entry.config,
                entry.layers.len()
            )));
        }
        let config_digest = content.write_bytes(&config).map_err(store_err)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let (digest, size, media_type) = import_layer(content, &file(layer)?)
                .map_err(|e| bad(format!("layer {layer}: {e}")))?;
            layers
                .push(json!({"mediaType": media_type, "size": size, "digest": digest.to_string()}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt::DOCKER_MANIFEST,
            "config": {"mediaType": mt::DOCKER_CONFIG, "size": config.len(), "digest": config_digest.to_string()},
            "layers": layers,
        });
        let manifest_digest = content
            .write_bytes(&serde_json::to_vec(&manifest).expect("json"))
            .map_err(store_err)?;
        let mut tags = Vec::new();
        for t in entry.repo_tags.unwrap_or_default() {
            tags.push(Reference::parse(&t).map_err(|e| bad(e.to_string()))?);
        }
        let id = config_digest.to_string();
        api.store.add(
            ImageRecord {
                id: id.clone(),
                manifest: manifest_digest.to_string(),
                media_type: mt::DOCKER_MANIFEST.to_string(),
                layer_sources: Default::default(),
                repo_digests: Default::default(),
                stored_at: now(),
            },
            &tags,
        )?;
        if tags.is_empty() {
            lines.push(format!("Loaded image ID: {id}\n"));
        }
        for t in tags {
            lines.push(format!("Loaded image: {}\n", t.familiar()));
        }
    }
    Ok(lines)
}

/// Store one layer file as a gzip blob (compressing plain tars).
fn import_layer(
    content: &ContentStore,
    path: &Path,
) -> Result<(Digest, u64, &'static str), String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| e.to_string())?;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(f);
    let mut w = content.writer().map_err(|e| e.to_string())?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        std::io::copy(&mut reader, &mut w).map_err(|e| e.to_string())?;
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        return Err("zstd-compressed layers are not supported".into());
    } else {
        let mut gz = flate2::write::GzEncoder::new(&mut w, flate2::Compression::fast());
        std::io::copy(&mut reader, &mut gz).map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())?;
    }
    let (digest, size) = w.commit(None).map_err(|e| e.to_string())?;
    Ok((digest, size, mt::DOCKER_LAYER_GZIP))
}
