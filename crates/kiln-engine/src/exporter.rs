//! Exporters: turn a solved filesystem into an image (pushed, or written as an OCI or Docker
//! tar), a local directory, or a plain tar. Layer blobs are made once per layer and reused by
//! every later export; layers that came from a base image keep their original blobs.

use crate::cache::BlobRecord;
use crate::progress::ProgressSender;
use crate::snapshot::LayerId;
use crate::solver::SolveError;
use crate::{Engine, Solved};
use futures::{StreamExt, TryStreamExt};
use kiln_oci::layer::Compression;
use kiln_oci::reference::Reference;
use kiln_oci::Digest;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

mod push;
mod tarball;
pub(crate) use push::BlobPush;

/// How to assemble the image.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The image config from the frontend (`containerimage.config`), if any.
    pub config: Option<Vec<u8>>,
    pub platform: kiln_oci::Platform,
    pub compression: Compression,
    /// OCI media types (default) or Docker schema2 ones.
    pub oci_mediatypes: bool,
    /// Fixed creation time (SOURCE_DATE_EPOCH), else derived from the layers.
    pub epoch: Option<i64>,
    /// Embed the build's cache records in the config (`--export-cache type=inline`).
    pub inline_cache: bool,
}

impl ImageOptions {
    pub fn new(config: Option<Vec<u8>>, platform: kiln_oci::Platform) -> ImageOptions {
        ImageOptions {
            config,
            platform,
            compression: Compression::Gzip,
            oci_mediatypes: true,
            epoch: None,
            inline_cache: false,
        }
    }
}

/// One layer of a built image.
#[derive(Debug, Clone)]
pub struct ImageLayer {
    pub blob: BlobRecord,
    pub layer: LayerId,
}

/// An image assembled in the content store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<ImageLayer>,
}

/// What a build produced for one target platform, ready for export.
#[derive(Clone)]
pub struct PlatformResult {
    pub platform: kiln_oci::Platform,
    pub solved: Solved,
    /// The image config from the frontend (`containerimage.config`), if any.
    pub config: Option<Vec<u8>>,
}

/// Images for several platforms under one index: what a multi-platform build exports.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub index: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    pub images: Vec<(kiln_oci::Platform, BuiltImage)>,
}

/// An exported image: one manifest, or an index of per-platform manifests.
#[derive(Debug, Clone)]
pub enum Built {
    Image(BuiltImage),
    Index(BuiltIndex),
}

impl Built {
    /// The digest clients pull by: the manifest's, or the index's.
    pub fn digest(&self) -> &Digest {
        match self {
            Built::Image(i) => &i.manifest_digest,
            Built::Index(i) => &i.digest,
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Built::Image(i) => &i.manifest_media_type,
            Built::Index(i) => &i.media_type,
        }
    }

    /// The manifest or index itself.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Built::Image(i) => &i.manifest,
            Built::Index(i) => &i.index,
        }
    }

    /// The config digest of a single image (an index has one per platform).
    pub fn config_digest(&self) -> Option<&Digest> {
        match self {
            Built::Image(i) => Some(&i.config_digest),
            Built::Index(_) => None,
        }
    }

    /// Every image, with its platform when part of an index.
    pub fn images(&self) -> Vec<(Option<&kiln_oci::Platform>, &BuiltImage)> {
        match self {
            Built::Image(i) => vec![(None, i)],
            Built::Index(i) => i.images.iter().map(|(p, img)| (Some(p), img)).collect(),
        }
    }
}

/// A platform as BuildKit names it in results (`linux/arm64`, `linux/arm/v7`): normalized,
/// with arm64's default variant left out, as containerd's `platforms.Format` does.
pub fn platform_id(p: &kiln_oci::Platform) -> String {
    let p = p.clone().normalized();
    match p.variant.as_deref() {
        Some(v) if !(p.architecture == "arm64" && v == "v8") => {
            format!("{}/{}/{v}", p.os, p.architecture)
        }
        _ => format!("{}/{}", p.os, p.architecture),
    }
}

/// The directory (or tar prefix) a platform's files go to when several are exported at once:
/// `linux_amd64`, `linux_arm_v7`, as BuildKit's `platform-split` names them.
pub fn platform_dir(p: &kiln_oci::Platform) -> String {
    platform_id(p).replace('/', "_")
}

/// The `platform` of an index entry.
fn platform_json(p: &kiln_oci::Platform) -> Value {
    let id = platform_id(p);
    let mut parts = id.splitn(3, '/');
    let mut v = json!({
        "architecture": parts.nth(1).unwrap_or_default(),
        "os": p.os,
    });
    if let Some(variant) = parts.next() {
        v["variant"] = json!(variant);
    }
    v
}

pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn err(context: &str) -> impl Fn(String) -> SolveError + '_ {
    move |e| SolveError::msg(format!("{context}: {e}"))
}

pub use kiln_dockerfile::lower::rfc3339;

impl Engine {
    /// The blob of one layer, made (and recorded) on first use.
    pub async fn layer_blob(
        &self,
        id: &LayerId,
        compression: Compression,
    ) -> Result<BlobRecord, SolveError> {
        let inner = self.inner();
        let comp = match compression {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "uncompressed",
        };
        if let Some(rec) = inner
            .cache
            .blob(id, comp)
            .map_err(|e| SolveError::msg(e.to_string()))?
        {
            if let Ok(d) = rec.digest.parse::<Digest>() {
                if inner.content.has(&d) {
                    return Ok(rec);
                }
            }
        }
        // A layer not unpacked yet keeps the blob it came as, whatever compression was asked
        // for (as BuildKit keeps base layers unless compression is forced).
        if let Some(lazy) = inner.lazy.get(id) {
            return Ok(lazy.blob.clone());
        }
        let dir = inner.layers.dir(id);
        let inner2 = inner.clone();
        let blob = tokio::task::spawn_blocking(move || {
            kiln_oci::layer::write_layer_from_overlay_upper(&dir, &inner2.content, compression)
        })
        .await
        .map_err(|e| SolveError::msg(format!("writing layer {id}: {e}")))?
        .map_err(|e| SolveError::msg(format!("writing layer {id}: {e}")))?;
        let rec = BlobRecord {
            digest: blob.digest.to_string(),
            diff_id: blob.diff_id.to_string(),
            size: blob.size,
            media_type: blob.media_type.clone(),
            source: None,
            imported: false,
        };
        inner
            .cache
            .put_blob(id, comp, &rec)
            .map_err(|e| SolveError::msg(e.to_string()))?;
        Ok(rec)
    }

    /// The images of a build: one image, or an index of one image per platform when several
    /// platforms were built or `index` asks for one (`multi-platform=true`). Each platform's
    /// config comes from its result; the rest of `opts` applies to all.
    pub async fn build_images(
        &self,
        results: &[PlatformResult],
        opts: &ImageOptions,
        index: bool,
        progress: &ProgressSender,
    ) -> Result<Built, SolveError> {
        let vertex = "exporting to image";
        progress.started(vertex, "exporting to image", vec![]);
        let result: Result<Built, SolveError> = async {
            let mut images = Vec::new();
            for r in results {
                let o = ImageOptions {
                    config: r.config.clone(),
                    platform: r.platform.clone(),
                    ..opts.clone()
                };
                let image = self
                    .build_image_inner(&r.solved, &o, progress, vertex)
                    .await?;
                images.push((r.platform.clone(), image));
            }
            if images.len() == 1 && !index {
                return Ok(Built::Image(images.remove(0).1));
            }
            let built = self.build_index(images, opts.oci_mediatypes)?;
            let what = format!("exporting manifest list {}", built.digest);
            progress.status(vertex, &what, 0, None, true);
            Ok(Built::Index(built))
        }
        .await;
        progress.completed(vertex, result.as_ref().err().map(|e| e.message.clone()));
        result
    }

    /// An index of per-platform images (an OCI index, or a Docker manifest list for Docker
    /// media types), written to the content store.
    pub fn build_index(
        &self,
        images: Vec<(kiln_oci::Platform, BuiltImage)>,
        oci_mediatypes: bool,
    ) -> Result<BuiltIndex, SolveError> {
        let media_type = if oci_mediatypes {
            OCI_INDEX
        } else {
            DOCKER_MANIFEST_LIST
        };
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": images.iter().map(|(p, img)| json!({
                "mediaType": img.manifest_media_type,
                "digest": img.manifest_digest.to_string(),
                "size": img.manifest.len(),
                "platform": platform_json(p),
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| err("index")(e.to_string()))?;
        let digest = self
            .inner()
            .content
            .write_bytes(&bytes)
            .map_err(|e| err("writing index")(e.to_string()))?;
        Ok(BuiltIndex {
            index: bytes,
            digest,
            media_type: media_type.to_string(),
            images,
        })
    }

    async fn build_image_inner(
        &self,
        solved: &Solved,
        opts: &ImageOptions,
        progress: &ProgressSender,
        vertex: &str,
    ) -> Result<BuiltImage, SolveError> {
        let inner = self.inner();
        let mut layers = Vec::new();
        let mut newest: i64 = 0;
        if let Some(chain) = solved.chain() {
            // Statuses count bytes (clients print them as sizes), so like BuildKit this one
            // has none.
            progress.status(vertex, "exporting layers", 0, None, false);
            for id in chain.layers() {
                let mut blob = self.layer_blob(id, opts.compression).await?;
                if !opts.oci_mediatypes && blob.media_type == kiln_oci::media_types::OCI_LAYER_GZIP
                {
                    blob.media_type = DOCKER_LAYER_GZIP.to_string();
                }
                if let Some(t) = crate::remote_cache::built_at(self, id, &blob) {
                    newest = newest.max(t);
                }
                layers.push(ImageLayer {
                    blob,
                    layer: id.clone(),
                });
            }
            progress.status(vertex, "exporting layers", 0, None, true);
        }

        let mut config: Value = match &opts.config {
            Some(bytes) => {
                serde_json::from_slice(bytes).map_err(|e| err("image config")(e.to_string()))?
            }
            None => json!({}),
        };
        if !config.is_object() {
            return Err(SolveError::msg("image config: not a JSON object"));
        }
        let obj = config.as_object_mut().expect("checked");
        obj.entry("architecture")
            .or_insert_with(|| json!(opts.platform.architecture));
        obj.entry("os").or_insert_with(|| json!(opts.platform.os));
        // arm64's default variant is left out, as BuildKit's normalized platforms do.
        if let Some(v) = platform_json(&opts.platform).get("variant") {
            obj.entry("variant").or_insert_with(|| v.clone());
        }
        obj.entry("config").or_insert_with(|| json!({}));
        let created_secs = opts.epoch.unwrap_or(if newest > 0 { newest } else { 0 });
        let created = (created_secs > 0 || opts.epoch.is_some()).then(|| rfc3339(created_secs));
        let diff_ids: Vec<String> = layers.iter().map(|l| l.blob.diff_id.clone()).collect();
        obj.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        let history = obj
            .get("history")
            .and_then(|h| h.as_array())
            .cloned()
            .unwrap_or_default();
        let history = normalize_history(history, layers.len(), created.as_deref());
        obj.insert("history".into(), Value::Array(history));
        match &created {
            Some(c) => {
                obj.insert("created".into(), json!(c));
            }
            None => {
                obj.entry("created").or_insert_with(|| json!(rfc3339(0)));
            }
        }
        if opts.inline_cache {
            let image_layers: Vec<(LayerId, String, Option<i64>)> = layers
                .iter()
                .map(|l| {
                    let built = crate::remote_cache::built_at(self, &l.layer, &l.blob);
                    (l.layer.clone(), l.blob.digest.clone(), built)
                })
                .collect();
            let inline = crate::remote_cache::inline_config(solved, &image_layers);
            let value =
                serde_json::to_value(inline).map_err(|e| err("inline cache")(e.to_string()))?;
            obj.insert(crate::remote_cache::INLINE_KEY.into(), value);
        }
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| err("image config")(e.to_string()))?;
        let config_digest = inner
            .content
            .write_bytes(&config_bytes)
            .map_err(|e| err("writing config")(e.to_string()))?;

        let (manifest_type, config_type) = if opts.oci_mediatypes {
            (OCI_MANIFEST, OCI_CONFIG)
        } else {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": config_type,
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.blob.media_type,
                "digest": l.blob.digest,
                "size": l.blob.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| err("manifest")(e.to_string()))?;
        let manifest_digest = inner
            .content
            .write_bytes(&manifest_bytes)
            .map_err(|e| err("writing manifest")(e.to_string()))?;
        progress.status(
            vertex,
            &format!("exporting manifest {manifest_digest}"),
            0,
            None,
            true,
        );
        progress.status(
            vertex,
            &format!("exporting config {config_digest}"),
            0,
            None,
            true,
        );
        Ok(BuiltImage {
            manifest: manifest_bytes,
            manifest_digest,
            manifest_media_type: manifest_type.to_string(),
            config: config_bytes,
            config_digest,
            layers,
        })
    }

    /// Copy the solved filesystem into a directory.
    fn export_local(&self, solved: &Solved, dest: &Path) -> Result<(), SolveError> {
        std::fs::create_dir_all(dest).map_err(SolveError::io("creating output directory"))?;
        let Some(chain) = solved.chain() else {
            return Ok(());
        };
        let guard = self
            .inner()
            .layers
            .mount_ro(chain)
            .map_err(SolveError::io("mounting result"))?;
        copy_tree(guard.path(), dest).map_err(SolveError::io("exporting files"))
    }

    /// Unpack what the results' filesystems still hold as lazy layers (see [`crate::lazy`]),
    /// before a `local` or `tar` export reads their files.
    pub async fn materialize_all(
        &self,
        results: &[PlatformResult],
        progress: &ProgressSender,
    ) -> Result<(), SolveError> {
        let lazy = results.iter().any(|r| {
            r.solved
                .chain()
                .is_some_and(|c| c.layers().iter().any(|l| !self.inner().layers.exists(l)))
        });
        if !lazy {
            return Ok(());
        }
        let vertex = "unpacking the result";
        progress.started(vertex, vertex, vec![]);
        let unpacked =
            futures::future::try_join_all(results.iter().map(|r| r.solved.materialize(vertex)))
                .await
                .map(|_| ());
        progress.completed(vertex, unpacked.as_ref().err().map(|e| e.message.clone()));
        unpacked
    }

    /// Fetch the blobs of `built` that are still only known by digest (lazy layers' blobs),
    /// before the image is written to a tar or kept in an image store.
    pub async fn ensure_blobs(&self, solved: &Solved, built: &Built) -> Result<(), SolveError> {
        let blobs: Vec<&BlobRecord> = built
            .images()
            .into_iter()
            .flat_map(|(_, i)| i.layers.iter().map(|l| &l.blob))
            .collect();
        solved.ensure_blobs(&blobs).await
    }

    /// Copy each platform's filesystem into `dest` (after [`Engine::materialize_all`]):
    /// directly for one platform, else into a subdirectory per platform ([`platform_dir`]), as
    /// BuildKit's local exporter does.
    pub fn export_local_all(
        &self,
        results: &[PlatformResult],
        dest: &Path,
    ) -> Result<(), SolveError> {
        match results {
            [one] => self.export_local(&one.solved, dest),
            many => {
                for r in many {
                    self.export_local(&r.solved, &dest.join(platform_dir(&r.platform)))?;
                }
                Ok(())
            }
        }
    }

    /// Write the solved filesystem as a tar stream.
    fn export_tar(&self, solved: &Solved, out: &mut dyn Write) -> Result<(), SolveError> {
        let fail = |e: std::io::Error| SolveError::msg(format!("writing tar: {e}"));
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        self.append_tree(&mut tar, solved, None)?;
        tar.into_inner().map_err(fail)?.flush().map_err(fail)?;
        Ok(())
    }

    /// Write each platform's filesystem as a tar stream (after [`Engine::materialize_all`]):
    /// one platform at the root, several each under its [`platform_dir`].
    pub fn export_tar_all(
        &self,
        results: &[PlatformResult],
        out: &mut dyn Write,
    ) -> Result<(), SolveError> {
        if let [one] = results {
            return self.export_tar(&one.solved, out);
        }
        let fail = |e: std::io::Error| SolveError::msg(format!("writing tar: {e}"));
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        for r in results {
            let dir = platform_dir(&r.platform);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(0);
            tar.append_data(&mut h, &dir, std::io::empty())
                .map_err(fail)?;
            self.append_tree(&mut tar, &r.solved, Some(Path::new(&dir)))?;
        }
        tar.into_inner().map_err(fail)?.flush().map_err(fail)?;
        Ok(())
    }

    fn append_tree(
        &self,
        tar: &mut tar::Builder<&mut dyn Write>,
        solved: &Solved,
        prefix: Option<&Path>,
    ) -> Result<(), SolveError> {
        let fail = |e: std::io::Error| SolveError::msg(format!("writing tar: {e}"));
        if let Some(chain) = solved.chain() {
            let guard = self
                .inner()
                .layers
                .mount_ro(chain)
                .map_err(SolveError::io("mounting result"))?;
            let root = guard.path().to_path_buf();
            for entry in walkdir::WalkDir::new(&root)
                .sort_by_file_name()
                .min_depth(1)
            {
                let entry = entry.map_err(|e| SolveError::msg(format!("writing tar: {e}")))?;
                let rel = entry.path().strip_prefix(&root).expect("under root");
                let name = match prefix {
                    Some(p) => p.join(rel),
                    None => rel.to_path_buf(),
                };
                tar.append_path_with_name(entry.path(), name)
                    .map_err(fail)?;
            }
        }
        Ok(())
    }
}

/// BuildKit's rule for making history agree with the layers: surplus non-empty entries become
/// empty, missing ones are appended; every entry gets a creation time.
fn normalize_history(history: Vec<Value>, layers: usize, created: Option<&str>) -> Vec<Value> {
    let is_empty = |h: &Value| {
        h.get("empty_layer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    let mut out = Vec::new();
    let mut counted = 0;
    for mut h in history {
        if !is_empty(&h) {
            if counted >= layers {
                h["empty_layer"] = json!(true);
            } else {
                counted += 1;
            }
        }
        if h.get("created").is_none() {
            if let Some(c) = created {
                h["created"] = json!(c);
            }
        }
        out.push(h);
    }
    while counted < layers {
        let mut h = json!({"created_by": "kiln", "comment": "buildkit.exporter.image.v0"});
        if let Some(c) = created {
            h["created"] = json!(c);
        }
        out.push(h);
        counted += 1;
    }
    out
}

fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(src).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(src).expect("under src");
        let target = dest.join(rel);
        let meta = entry.path().symlink_metadata()?;
        let ft = meta.file_type();
        if let Ok(existing) = target.symlink_metadata() {
            if !(existing.is_dir() && ft.is_dir()) {
                if existing.is_dir() {
                    std::fs::remove_dir_all(&target)?;
                } else {
                    std::fs::remove_file(&target)?;
                }
            }
        }
        if ft.is_dir() {
            std::fs::create_dir_all(&target)?;
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777),
            )?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_named_as_buildkit_names_them() {
        let p = |s: &str| kiln_oci::Platform::parse(s).unwrap();
        assert_eq!(platform_id(&p("linux/arm64")), "linux/arm64");
        assert_eq!(platform_id(&p("linux/arm64/v8")), "linux/arm64");
        assert_eq!(platform_id(&p("linux/arm/v7")), "linux/arm/v7");
        assert_eq!(platform_dir(&p("linux/arm/v7")), "linux_arm_v7");
        assert_eq!(
            platform_json(&p("linux/arm64")),
            json!({"architecture": "arm64", "os": "linux"})
        );
        assert_eq!(
            platform_json(&p("linux/arm/v6")),
            json!({"architecture": "arm", "os": "linux", "variant": "v6"})
        );
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_110_000), "2025-11-25T22:33:20Z");
    }

    #[test]
    fn history_is_made_to_match_layers() {
        let h = vec![
            json!({"created_by": "a"}),
            json!({"created_by": "ENV", "empty_layer": true}),
            json!({"created_by": "b"}),
        ];
        let out = normalize_history(h.clone(), 1, Some("t"));
        assert_eq!(out[2]["empty_layer"], json!(true));
        let out = normalize_history(h, 3, None);
        assert_eq!(out.len(), 4);
    }
}
