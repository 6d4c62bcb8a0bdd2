//! Exporters requested in a `Control/Solve`: images pushed to registries, and files (OCI or
//! Docker tars, plain tars, directories) sent back to the client over its FileSend service.

use crate::builds::GatewayResult;
use crate::daemon::{solve_status, Daemon};
use crate::session::filesend::{FileOptions, FileSendWriter};
use crate::session::OpenSession;
use bollard_buildkit_proto::moby::buildkit::v1 as api;
use kiln_engine::exporter::ImageOptions;
use kiln_engine::progress::ProgressSender;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Status;

/// One requested exporter.
#[derive(Debug, Clone)]
pub struct Exporter {
    pub kind: String,
    pub attrs: HashMap<String, String>,
}

/// The exporters of a request: `Exporters` (v0.13+ clients) or the single legacy one.
pub fn requested(req: &api::SolveRequest) -> Vec<Exporter> {
    if !req.exporters.is_empty() {
        return req
            .exporters
            .iter()
            .map(|e| Exporter {
                kind: e.r#type.clone(),
                attrs: e.attrs.clone(),
            })
            .collect();
    }
    if req.exporter_deprecated.is_empty() {
        return Vec::new();
    }
    vec![Exporter {
        kind: req.exporter_deprecated.clone(),
        attrs: req.exporter_attrs_deprecated.clone(),
    }]
}

/// `registry.insecure=true` on an image output: see [`kiln_engine::Engine::client_insecure_warning`].
fn warn_client_insecure(
    engine: &kiln_engine::Engine,
    attrs: &HashMap<String, String>,
    names: &[String],
    progress: &ProgressSender,
) {
    if truthy(attrs, "registry.insecure") {
        for w in names
            .iter()
            .filter_map(|n| engine.client_insecure_warning(n))
        {
            progress.warn(None, w);
        }
    }
}

fn truthy(attrs: &HashMap<String, String>, key: &str) -> bool {
    attrs
        .get(key)
        .map(|v| v.is_empty() || v == "true" || v == "1")
        .unwrap_or(false)
}

fn names(attrs: &HashMap<String, String>) -> Vec<String> {
    attrs
        .get("name")
        .map(|n| {
            n.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub async fn run(
    daemon: &Daemon,
    session: Option<&OpenSession>,
    result: &Arc<GatewayResult>,
    exporters: &[Exporter],
    inline_cache: bool,
    progress: &ProgressSender,
) -> Result<HashMap<String, String>, Status> {
    let engine = &daemon.engine;
    let mut response = HashMap::new();
    for (index, exp) in exporters.iter().enumerate() {
        let image_opts = || {
            let mut o = ImageOptions::new(None, kiln_oci::Platform::host());
            if exp
                .attrs
                .get("oci-mediatypes")
                .map(|v| v == "false")
                .unwrap_or(false)
            {
                o.oci_mediatypes = false;
            }
            o.compression = match exp.attrs.get("compression").map(String::as_str) {
                Some("zstd") => kiln_oci::Compression::Zstd,
                Some("uncompressed") => kiln_oci::Compression::None,
                _ => kiln_oci::Compression::Gzip,
            };
            if let Some(e) = exp.attrs.get("source-date-epoch") {
                o.epoch = e.parse().ok();
            }
            o.inline_cache = inline_cache;
            o
        };
        let build_images = || async {
            engine
                .build_images(&result.platforms, &image_opts(), result.multi, progress)
                .await
                .map_err(solve_status)
        };
        let first = result
            .platforms
            .first()
            .map(|p| &p.solved)
            .ok_or_else(|| Status::internal("a result without platforms"))?;
        match exp.kind.as_str() {
            "image" => {
                let built = build_images().await?;
                let names = names(&exp.attrs);
                if truthy(&exp.attrs, "push") {
                    warn_client_insecure(engine, &exp.attrs, &names, progress);
                    if names.is_empty() {
                        return Err(Status::invalid_argument(
                            "push requires a name (--output type=image,name=…,push=true)",
                        ));
                    }
                    engine
                        .push_built(first, &built, &names, progress)
                        .await
                        .map_err(solve_status)?;
                }
                describe(&mut response, &built, &names);
            }
            // dockerd's image exporter: the image lands in the local image store (and is pushed
            // with push=true), as `docker buildx build` with the docker driver expects.
            "moby" => {
                let Some(local) = daemon.local_images.clone() else {
                    return Err(Status::invalid_argument(
                        "exporter \"moby\" needs kiln's Docker API (kiln buildkitd --docker-addr); use type=image here",
                    ));
                };
                let built = build_images().await?;
                let kiln_engine::exporter::Built::Image(image) = &built else {
                    return Err(Status::invalid_argument(
                        "kiln's Docker image store holds single-platform images: push a \
                         multi-platform build (--push) or export it with type=oci",
                    ));
                };
                let names = names(&exp.attrs);
                if truthy(&exp.attrs, "push") && !names.is_empty() {
                    warn_client_insecure(engine, &exp.attrs, &names, progress);
                    engine
                        .push_built(first, &built, &names, progress)
                        .await
                        .map_err(solve_status)?;
                }
                engine
                    .ensure_blobs(first, &built)
                    .await
                    .map_err(solve_status)?;
                local
                    .store(image, &names)
                    .map_err(|e| Status::internal(format!("storing the image: {e}")))?;
                describe(&mut response, &built, &names);
            }
            "oci" | "docker" | "tar" => {
                let channel = file_send_channel(session)?;
                let built = if exp.kind == "tar" {
                    None
                } else {
                    Some(build_images().await?)
                };
                if exp.kind == "docker"
                    && matches!(built, Some(kiln_engine::exporter::Built::Index(_)))
                {
                    return Err(Status::invalid_argument(
                        "docker exporter does not currently support exporting manifest lists \
                         (a multi-platform build): use type=oci, or type=image with push=true",
                    ));
                }
                match &built {
                    Some(b) => engine.ensure_blobs(first, b).await,
                    None => engine.materialize_all(&result.platforms, progress).await,
                }
                .map_err(solve_status)?;
                let names = names(&exp.attrs);
                let engine2 = engine.clone();
                let result2 = result.clone();
                let built2 = built.clone();
                let kind = exp.kind.clone();
                let names2 = names.clone();
                send_bytes(channel, index, move |w| match &built2 {
                    Some(b) => engine2.write_built_tar(b, &names2, kind == "docker", w),
                    None => engine2.export_tar_all(&result2.platforms, w),
                })
                .await?;
                if let Some(built) = &built {
                    describe(&mut response, built, &names);
                }
            }
            "local" => {
                let channel = file_send_channel(session)?;
                let dir = engine
                    .inner()
                    .layers
                    .scratch_dir()
                    .map_err(|e| Status::internal(format!("local export: {e}")))?;
                let out = dir.join("out");
                engine
                    .materialize_all(&result.platforms, progress)
                    .await
                    .map_err(solve_status)?;
                engine
                    .export_local_all(&result.platforms, &out)
                    .map_err(solve_status)?;
                let opts = crate::session::filesend::SendOptions {
                    exporter_id: index as u32,
                    progress: None,
                };
                let sent = crate::session::filesend::send_dir(channel, &out, &opts).await;
                let _ = std::fs::remove_dir_all(&dir);
                sent.map_err(|e| Status::unknown(format!("sending files to the client: {e}")))?;
            }
            other => {
                return Err(Status::invalid_argument(format!(
                "exporter {other:?} is not supported (use image, oci, docker, local, tar or moby)"
            )))
            }
        }
    }
    Ok(response)
}

fn describe(
    response: &mut HashMap<String, String>,
    built: &kiln_engine::exporter::Built,
    names: &[String],
) {
    use base64::Engine as _;
    response.insert("containerimage.digest".into(), built.digest().to_string());
    if let Some(config) = built.config_digest() {
        response.insert("containerimage.config.digest".into(), config.to_string());
    }
    let descriptor = serde_json::json!({
        "mediaType": built.media_type(),
        "digest": built.digest().to_string(),
        "size": built.bytes().len(),
    });
    response.insert(
        "containerimage.descriptor".into(),
        base64::engine::general_purpose::STANDARD.encode(descriptor.to_string()),
    );
    if !names.is_empty() {
        response.insert("image.name".into(), names.join(","));
    }
}

fn file_send_channel(session: Option<&OpenSession>) -> Result<tonic::transport::Channel, Status> {
    let Some(open) = session else {
        return Err(Status::failed_precondition(
            "this output needs a client session",
        ));
    };
    if !open.supports("/moby.filesync.v1.FileSend/DiffCopy") {
        return Err(Status::failed_precondition(
            "the client does not accept files (FileSend); give the output a dest",
        ));
    }
    Ok(open.channel.clone())
}

/// Stream what `write` produces to the client's FileSend as byte messages (the client writes
/// them to its `dest` file or stdout). The engine's writers are blocking, so they run on a
/// blocking thread writing through a bridge into the async sender.
async fn send_bytes(
    channel: tonic::transport::Channel,
    exporter_index: usize,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<(), kiln_engine::Error> + Send + 'static,
) -> Result<(), Status> {
    let opts = FileOptions {
        exporter_id: exporter_index as u32,
        ..Default::default()
    };
    let mut bridge = tokio_util::io::SyncIoBridge::new(FileSendWriter::open(channel, &opts));
    let writer = tokio::task::spawn_blocking(move || {
        write(&mut bridge)?;
        std::io::Write::flush(&mut bridge).map_err(|e| kiln_engine::Error::msg(e.to_string()))?;
        Ok::<_, kiln_engine::Error>(bridge.into_inner())
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(solve_status)?;
    // `Declined` means the client already had the file: BuildKit treats that as success.
    writer
        .finish()
        .await
        .map(|_| ())
        .map_err(|e| Status::unknown(format!("sending output to the client: {e}")))
}
