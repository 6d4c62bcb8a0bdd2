//! Cache export and import (`--export-cache`/`--import-cache`, buildx's `--cache-to` and
//! `--cache-from`): a solve's cache records written to a registry, an OCI layout directory or
//! the built image's config, so that another kiln — a freshly scaled pod with an empty cache —
//! reuses the work instead of redoing it.
//!
//! A record maps a kiln cache key to the layer chains the step produced. Keys are computed from
//! the LLB ops and the *content* of local sources, never from paths, hosts or times, so a key
//! means the same on every kiln. They are not BuildKit's keys: a cache that BuildKit wrote is
//! reported and skipped, and BuildKit skips kiln's, whose config has its own media type.
//!
//! The format follows BuildKit's `image-manifest=true` layout: an OCI image manifest whose
//! config (media type [`CONFIG_MEDIA_TYPE`]) is a [`CacheConfig`] and whose layers are the
//! blobs the records name, each annotated with its uncompressed digest. An inline cache puts the
//! same [`CacheConfig`] into the image config under [`INLINE_KEY`], naming the image's own
//! layers. `mode=min` exports the records whose results are made only of the final image's
//! layers; `mode=max` exports every step of the solve.

use crate::cache::BlobRecord;
use crate::lazy::Origin;
use crate::progress::ProgressSender;
use crate::session::Session;
use crate::snapshot::{Chain, LayerId};
use crate::solver::{SolveCtx, SolveError, VertexResult};
use crate::{Engine, Solved};
use kiln_oci::layer::Compression;
use kiln_oci::reference::Reference;
use kiln_oci::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Media type of a kiln cache config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// BuildKit's cache config (recognized, to say why it is not used).
const BUILDKIT_CONFIG_MEDIA_TYPE: &str = "application/vnd.buildkit.cacheconfig.v0";
/// Key of an inline cache in an image config.
pub const INLINE_KEY: &str = "dev.kiln.cache.v1";
/// Annotation carrying a layer blob's uncompressed digest (containerd's name for it).
const UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Annotation naming a manifest in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest cache config accepted into memory.
const MAX_CONFIG: usize = 64 * 1024 * 1024;

/// A content store somewhere else, such as a BuildKit client's, reached through its session
/// (`buildctl --export-cache type=local,dest=DIR` keeps DIR on the client's machine).
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Whether the store has the blob.
    async fn has(&self, digest: &Digest) -> Result<bool, String>;
    /// A whole (small) blob, verified.
    async fn read(&self, digest: &Digest, limit: usize) -> Result<Vec<u8>, String>;
    /// Copy a blob into `content`, verified.
    async fn fetch(&self, digest: &Digest, content: &kiln_oci::ContentStore) -> Result<(), String>;
    /// Store a blob of `content` (a blob the store has already is left alone).
    async fn write(&self, digest: &Digest, content: &kiln_oci::ContentStore) -> Result<(), String>;
}

/// Which records an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Only steps whose results are layers of the final image.
    Min,
    /// Every step of the solve, intermediate stages included.
    Max,
}

/// Where an exported cache goes.
#[derive(Debug, Clone)]
pub enum CacheTarget {
    /// A manifest pushed under this reference.
    Registry(Reference),
    /// An OCI layout directory on this host, the manifest tagged in its `index.json`.
    Local { dir: PathBuf, tag: String },
    /// Blobs and manifest written to a [`BlobStore`]; its owner records the manifest.
    Store {
        name: String,
        store: Arc<dyn BlobStore>,
    },
}

/// One `--export-cache`.
#[derive(Debug, Clone)]
pub struct CacheExport {
    pub target: CacheTarget,
    pub mode: CacheMode,
    pub compression: Compression,
    /// A failed export is a warning instead of a failed build.
    pub ignore_error: bool,
}

/// What an `--export-cache` entry asks for.
#[derive(Debug, Clone)]
pub enum ExportRequest {
    /// Into the image config (done by the image exporter).
    Inline,
    To(CacheExport),
}

/// Where an imported cache comes from.
#[derive(Debug, Clone)]
pub enum CacheSource {
    /// A cache manifest, or an image with an inline cache.
    Registry(Reference),
    /// An OCI layout directory on this host: the manifest tagged `tag` in its `index.json`, or
    /// the one with `digest`.
    Local {
        dir: PathBuf,
        tag: String,
        digest: Option<Digest>,
    },
    /// The manifest `manifest` in a [`BlobStore`].
    Store {
        name: String,
        store: Arc<dyn BlobStore>,
        manifest: Digest,
    },
}

impl std::fmt::Display for CacheSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheSource::Registry(r) => write!(f, "{r}"),
            CacheSource::Local { dir, tag, .. } => write!(f, "{}:{tag}", dir.display()),
            CacheSource::Store { name, .. } => f.write_str(name),
        }
    }
}

impl std::fmt::Display for CacheTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheTarget::Registry(r) => write!(f, "{r}"),
            CacheTarget::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
            CacheTarget::Store { name, .. } => f.write_str(name),
        }
    }
}

fn reference(attrs: &HashMap<String, String>, what: &str) -> Result<Reference, String> {
    let r = attrs
        .get("ref")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("{what} needs ref=<image reference>"))?;
    Reference::parse(r).map_err(|e| format!("{what}: invalid ref {r:?}: {e}"))
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

/// An `--export-cache` entry (BuildKit's `CacheOptionsEntry`: a type and its attributes).
/// `Ok(None)` is a type kiln does not offer (such as `gha` or `s3`), which the caller reports
/// as a warning: the build itself still works without it.
pub fn parse_export(
    kind: &str,
    attrs: &HashMap<String, String>,
) -> Result<Option<ExportRequest>, String> {
    let mode = match attrs.get("mode").map(String::as_str) {
        None | Some("") | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(other) => {
            return Err(format!(
                "cache export: invalid mode {other:?} (use min or max)"
            ))
        }
    };
    let compression = match attrs.get("compression").map(String::as_str) {
        None | Some("") | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("uncompressed") => Compression::None,
        Some(other) => {
            return Err(format!(
                "cache export: invalid compression {other:?} (use gzip, zstd or uncompressed)"
            ))
        }
    };
    let target = match kind {
        "inline" => return Ok(Some(ExportRequest::Inline)),
        "registry" => CacheTarget::Registry(reference(attrs, "registry cache export")?),
        "local" => CacheTarget::Local {
            dir: attrs
                .get("dest")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .ok_or("local cache export needs dest=<directory>")?,
            tag: attrs.get("tag").cloned().unwrap_or_else(|| "latest".into()),
        },
        _ => return Ok(None),
    };
    Ok(Some(ExportRequest::To(CacheExport {
        target,
        mode,
        compression,
        ignore_error: truthy(attrs.get("ignore-error")),
    })))
}

/// An `--import-cache` entry; `Ok(None)` for a type kiln does not offer.
pub fn parse_import(
    kind: &str,
    attrs: &HashMap<String, String>,
) -> Result<Option<CacheSource>, String> {
    match kind {
        "registry" => Ok(Some(CacheSource::Registry(reference(
            attrs,
            "registry cache import",
        )?))),
        "local" => {
            let dir = attrs
                .get("src")
                .filter(|d| !d.is_empty())
                .ok_or("local cache import needs src=<directory>")?;
            let digest = match attrs.get("digest").filter(|d| !d.is_empty()) {
                Some(d) => Some(
                    d.parse()
                        .map_err(|e| format!("local cache import: digest {d:?}: {e}"))?,
                ),
                None => None,
            };
            Ok(Some(CacheSource::Local {
                dir: PathBuf::from(dir),
                tag: attrs.get("tag").cloned().unwrap_or_else(|| "latest".into()),
                digest,
            }))
        }
        _ => Ok(None),
    }
}

/// buildx's CSV form (`type=registry,ref=host/app:cache,mode=max`); a value without `=` is
/// shorthand for `type=registry,ref=VALUE`.
pub fn parse_csv(spec: &str) -> (String, HashMap<String, String>) {
    let mut attrs = HashMap::new();
    if !spec.contains('=') {
        attrs.insert("ref".to_string(), spec.trim().to_string());
        return ("registry".into(), attrs);
    }
    let mut kind = String::new();
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        let (k, v) = (k.trim(), v.trim());
        if k == "type" {
            kind = v.to_string();
        } else if !k.is_empty() {
            attrs.insert(k.to_string(), v.to_string());
        }
    }
    if kind.is_empty() {
        kind = if attrs.contains_key("ref") {
            "registry".into()
        } else {
            "local".into()
        };
    }
    (kind, attrs)
}

/// The cache options of one build, from whichever door it came through.
#[derive(Debug, Clone, Default)]
pub struct CachePlan {
    pub imports: Vec<CacheSource>,
    pub exports: Vec<CacheExport>,
    /// `--export-cache type=inline`: the image exporter embeds the records.
    pub inline: bool,
    /// Entries of cache types kiln does not offer, worded for the user.
    pub warnings: Vec<String>,
    /// Registry caches the client marked `registry.insecure=true` (see
    /// [`crate::Engine::client_insecure_warning`]).
    pub insecure_refs: Vec<String>,
}

impl CachePlan {
    /// From (type, attributes) entries, as BuildKit's `CacheOptions` carries them.
    pub fn from_entries<'a>(
        imports: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)>,
        exports: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)>,
    ) -> Result<CachePlan, String> {
        let mut plan = CachePlan::default();
        let (imports, exports): (Vec<_>, Vec<_>) =
            (imports.into_iter().collect(), exports.into_iter().collect());
        for (kind, attrs) in imports.iter().chain(&exports) {
            let insecure = attrs.get("registry.insecure").is_some_and(|v| v == "true");
            if *kind == "registry" && insecure {
                plan.insecure_refs.extend(attrs.get("ref").cloned());
            }
        }
        for (kind, attrs) in imports {
            match parse_import(kind, attrs)? {
                Some(s) => plan.imports.push(s),
                None => plan.warnings.push(format!(
                    "cache import type {kind:?} is not supported by kiln (use registry or local); \
                     building without it"
                )),
            }
        }
        for (kind, attrs) in exports {
            match parse_export(kind, attrs)? {
                Some(ExportRequest::Inline) => plan.inline = true,
                Some(ExportRequest::To(e)) => plan.exports.push(e),
                None => plan.warnings.push(format!(
                    "cache export type {kind:?} is not supported by kiln (use registry, local or \
                     inline); the cache is not exported"
                )),
            }
        }
        Ok(plan)
    }

    /// From buildx-style `--cache-from`/`--cache-to` values.
    pub fn from_csv(cache_from: &[String], cache_to: &[String]) -> Result<CachePlan, String> {
        let from: Vec<(String, HashMap<String, String>)> =
            cache_from.iter().map(|s| parse_csv(s)).collect();
        let to: Vec<(String, HashMap<String, String>)> =
            cache_to.iter().map(|s| parse_csv(s)).collect();
        CachePlan::from_entries(
            from.iter().map(|(k, a)| (k.as_str(), a)),
            to.iter().map(|(k, a)| (k.as_str(), a)),
        )
    }
}

/// The records of an exported cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CacheConfig {
    /// Layers as chains: each names its blob and the layer below it.
    pub layers: Vec<CacheLayer>,
    pub records: Vec<CacheRecordEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheLayer {
    pub blob: String,
    /// Index of the layer below in `layers`; -1 at the bottom.
    pub parent: i64,
    /// When the layer was built (Unix seconds), which the image's creation time derives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheRecordEntry {
    pub key: String,
    /// Per output: index of its top layer in `layers`; -1 for an empty filesystem.
    pub outputs: Vec<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A record worth exporting: a step's key and results.
struct Exportable {
    key: String,
    description: String,
    outputs: Vec<Chain>,
}

/// The steps of the solves (one per platform built) whose results can be exported, in a
/// stable order.
fn exportable(solveds: &[&Solved], mode: CacheMode) -> Vec<Exportable> {
    let final_layers: std::collections::HashSet<&LayerId> = solveds
        .iter()
        .filter_map(|s| s.chain())
        .flat_map(|c| c.layers().iter())
        .collect();
    let mut out: Vec<Exportable> = solveds
        .iter()
        .flat_map(|s| s.ctx.finished())
        .filter(|(v, _)| v.exportable())
        .filter(|(_, r)| {
            mode == CacheMode::Max
                || r.outputs
                    .iter()
                    .all(|c| c.layers().iter().all(|l| final_layers.contains(l)))
        })
        .map(|(v, r)| Exportable {
            key: r.key.clone(),
            description: v.name(),
            outputs: r.outputs.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

/// Builds the layer table of a [`CacheConfig`]: one entry per (blob, parent) pair.
#[derive(Default)]
struct LayerTable {
    layers: Vec<CacheLayer>,
    index: HashMap<(String, i64), i64>,
}

impl LayerTable {
    /// The index of the top of a chain of blob digests (with build times), adding what is
    /// missing; -1 if empty.
    fn chain(&mut self, blobs: &[(String, Option<i64>)]) -> i64 {
        let mut parent = -1;
        for (blob, created) in blobs {
            let key = (blob.clone(), parent);
            parent = match self.index.get(&key) {
                Some(i) => *i,
                None => {
                    let i = self.layers.len() as i64;
                    self.layers.push(CacheLayer {
                        blob: blob.clone(),
                        parent,
                        created: *created,
                    });
                    self.index.insert(key, i);
                    i
                }
            };
        }
        parent
    }
}

/// The inline cache of an image whose layers are `image_layers` (bottom to top): the `min`
/// records whose every result is a bottom part of the image.
pub(crate) fn inline_config(
    solved: &Solved,
    image_layers: &[(LayerId, String, Option<i64>)],
) -> CacheConfig {
    let ids: Vec<&LayerId> = image_layers.iter().map(|(id, _, _)| id).collect();
    let mut config = CacheConfig {
        layers: image_layers
            .iter()
            .enumerate()
            .map(|(i, (_, blob, created))| CacheLayer {
                blob: blob.clone(),
                parent: i as i64 - 1,
                created: *created,
            })
            .collect(),
        records: Vec::new(),
    };
    for rec in exportable(&[solved], CacheMode::Min) {
        let tops: Option<Vec<i64>> = rec
            .outputs
            .iter()
            .map(|c| {
                let n = c.layers().len();
                (ids.len() >= n && ids[..n].iter().copied().eq(c.layers().iter()))
                    .then_some(n as i64 - 1)
            })
            .collect();
        if let Some(outputs) = tops {
            config.records.push(CacheRecordEntry {
                key: rec.key,
                outputs,
                description: rec.description,
            });
        }
    }
    config
}

impl Engine {
    /// Export the cache records of the solves of a build, one per platform built (see the module
    /// docs). Returns the descriptor of the cache manifest, as BuildKit's `cache.manifest`
    /// exporter response has it.
    pub async fn export_cache(
        &self,
        solved: &[&Solved],
        export: &CacheExport,
        progress: &ProgressSender,
    ) -> Result<Value, SolveError> {
        let vertex = format!("exporting cache to {}", export.target);
        progress.started(&vertex, &vertex, vec![]);
        let result = self
            .export_cache_inner(solved, export, progress, &vertex)
            .await;
        match &result {
            Err(e) if export.ignore_error => {
                progress.completed(&vertex, None);
                progress.warn(
                    Some(&vertex),
                    format!("cache export failed (ignore-error=true): {}", e.message),
                );
            }
            _ => progress.completed(&vertex, result.as_ref().err().map(|e| e.message.clone())),
        }
        match result {
            Err(_) if export.ignore_error => Ok(Value::Null),
            r => r,
        }
    }

    async fn export_cache_inner(
        &self,
        solved: &[&Solved],
        export: &CacheExport,
        progress: &ProgressSender,
        vertex: &str,
    ) -> Result<Value, SolveError> {
        let inner = self.inner();
        let records = exportable(solved, export.mode);
        progress.status(vertex, "preparing build cache for export", 0, None, false);
        // One blob per layer, in the order layers first appear.
        // Blob and build time per layer, looked up once however many chains share the layer.
        let mut blobs: HashMap<LayerId, BlobRecord> = HashMap::new();
        let mut built: HashMap<LayerId, Option<i64>> = HashMap::new();
        let mut order: Vec<LayerId> = Vec::new();
        for rec in &records {
            for chain in &rec.outputs {
                for id in chain.layers() {
                    if !blobs.contains_key(id) {
                        let blob = self.layer_blob(id, export.compression).await?;
                        built.insert(id.clone(), built_at(self, id, &blob));
                        blobs.insert(id.clone(), blob);
                        order.push(id.clone());
                    }
                }
            }
        }
        progress.status(vertex, "preparing build cache for export", 0, None, true);
        let mut table = LayerTable::default();
        let mut config = CacheConfig::default();
        for rec in &records {
            let outputs = rec
                .outputs
                .iter()
                .map(|c| {
                    let digests: Vec<(String, Option<i64>)> = c
                        .layers()
                        .iter()
                        .map(|l| (blobs[l].digest.clone(), built[l]))
                        .collect();
                    table.chain(&digests)
                })
                .collect();
            config.records.push(CacheRecordEntry {
                key: rec.key.clone(),
                outputs,
                description: rec.description.clone(),
            });
        }
        config.layers = table.layers;
        let config_bytes = serde_json::to_vec(&config)
            .map_err(|e| SolveError::msg(format!("cache config: {e}")))?;
        let config_digest = inner
            .content
            .write_bytes(&config_bytes)
            .map_err(|e| SolveError::msg(format!("writing cache config: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        let layer_blobs: Vec<&BlobRecord> = order
            .iter()
            .map(|id| &blobs[id])
            .filter(|b| seen.insert(b.digest.clone()))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": crate::exporter::OCI_MANIFEST,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": layer_blobs.iter().map(|b| json!({
                "mediaType": b.media_type,
                "digest": b.digest,
                "size": b.size,
                "annotations": { UNCOMPRESSED: b.diff_id },
            })).collect::<Vec<_>>(),
            "annotations": {
                "dev.kiln.cache.records": records.len().to_string(),
            },
        });
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| SolveError::msg(format!("cache manifest: {e}")))?;
        let manifest_digest = Digest::sha256(&manifest_bytes);
        let descriptor = json!({
            "mediaType": crate::exporter::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest_bytes.len(),
        });
        let store: Arc<dyn BlobStore> = match &export.target {
            CacheTarget::Registry(r) => {
                let Some(first) = solved.first() else {
                    return Ok(Value::Null);
                };
                let registry = first.registry();
                let push = crate::exporter::BlobPush {
                    solved: first,
                    content: &inner.content,
                    known: None,
                    label: "writing layer",
                    progress,
                    vertex,
                };
                push.all(r, &layer_blobs).await?;
                registry
                    .push_blob(r, &config_digest, &inner.content, None)
                    .await
                    .map_err(|e| SolveError::msg(e.to_string()))?;
                progress.status(vertex, "writing cache manifest", 0, None, false);
                registry
                    .push_manifest(r, &manifest_bytes, crate::exporter::OCI_MANIFEST)
                    .await
                    .map_err(|e| SolveError::msg(e.to_string()))?;
                progress.status(vertex, "writing cache manifest", 0, None, true);
                return Ok(descriptor);
            }
            CacheTarget::Store { store, .. } => store.clone(),
            CacheTarget::Local { dir, .. } => Arc::new(LayoutDir(dir.clone())),
        };
        // Blobs of layers never unpacked here are copied from where they came from first.
        if let Some(first) = solved.first() {
            first.ensure_blobs(&layer_blobs).await?;
        }
        self.write_to_store(
            store.as_ref(),
            &layer_blobs,
            &config_digest,
            &manifest_bytes,
            progress,
            vertex,
        )
        .await?;
        // A directory on this host also gets its index.json (a client's store: the client writes
        // its own from the `cache.manifest` response).
        if let CacheTarget::Local { dir, tag } = &export.target {
            let (dir, tag, desc) = (LayoutDir(dir.clone()), tag.clone(), descriptor.clone());
            tokio::task::spawn_blocking(move || dir.tag(&tag, desc))
                .await
                .map_err(|e| SolveError::msg(e.to_string()))?
                .map_err(|e| SolveError::msg(format!("cache directory: {e}")))?;
        }
        Ok(descriptor)
    }

    /// Write a cache's layer blobs, config and manifest to a store.
    async fn write_to_store(
        &self,
        store: &dyn BlobStore,
        layers: &[&BlobRecord],
        config: &Digest,
        manifest: &[u8],
        progress: &ProgressSender,
        vertex: &str,
    ) -> Result<(), SolveError> {
        let content = &self.inner().content;
        for b in layers {
            let d = b.blob_digest()?;
            let id = format!("writing layer {d}");
            progress.status(vertex, &id, 0, Some(b.size), false);
            store
                .write(&d, content)
                .await
                .map_err(|e| SolveError::msg(format!("layer {d}: {e}")))?;
            progress.status(vertex, &id, b.size, Some(b.size), true);
        }
        store
            .write(config, content)
            .await
            .map_err(|e| SolveError::msg(format!("cache config: {e}")))?;
        let manifest_digest = content
            .write_bytes(manifest)
            .map_err(|e| SolveError::msg(format!("writing cache manifest: {e}")))?;
        store
            .write(&manifest_digest, content)
            .await
            .map_err(|e| SolveError::msg(format!("cache manifest: {e}")))
    }

    /// Load the caches to import. One that cannot be read is a warning, not an error: the
    /// build then does its work itself, as BuildKit does.
    pub async fn import_caches(
        &self,
        sources: &[CacheSource],
        session: Arc<dyn Session>,
        progress: &ProgressSender,
    ) -> Vec<Arc<ImportedCache>> {
        let registry = self.registry_client(session);
        let mut out = Vec::new();
        for source in sources {
            let vertex = format!("importing cache manifest from {source}");
            progress.started(&vertex, &vertex, vec![]);
            match ImportedCache::load(source, &registry).await {
                Ok(cache) => {
                    tracing::debug!(%source, records = cache.records.len(), "cache imported");
                    out.push(Arc::new(cache));
                }
                Err(e) => progress.warn(Some(&vertex), format!("cache {source} not used: {e}")),
            }
            progress.completed(&vertex, None);
        }
        out
    }
}

/// When a layer was built, for layers a build made (not a base image's).
pub(crate) fn built_at(engine: &Engine, id: &LayerId, blob: &BlobRecord) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    if blob.source.is_some() && !blob.imported {
        return None;
    }
    if let Some(lazy) = engine.inner().lazy.get(id) {
        return lazy.created;
    }
    std::fs::metadata(engine.inner().layers.dir(id))
        .ok()
        .map(|m| m.mtime())
}

/// An OCI image layout directory on this host, as a [`BlobStore`].
#[derive(Debug, Clone)]
struct LayoutDir(PathBuf);

impl LayoutDir {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.0
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Point `tag` in `index.json` at `descriptor` (other tags stay).
    fn tag(&self, tag: &str, descriptor: Value) -> std::io::Result<()> {
        let write_atomic = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        let layout = self.0.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index_path = self.0.join("index.json");
        let mut index: Value = match std::fs::read(&index_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", index_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                json!({"schemaVersion": 2, "mediaType": crate::exporter::OCI_INDEX, "manifests": []})
            }
            Err(e) => return Err(e),
        };
        let mut entry = descriptor;
        entry["annotations"] = json!({ REF_NAME: tag });
        let manifests = index["manifests"]
            .as_array_mut()
            .ok_or_else(|| std::io::Error::other("index.json has no manifests list"))?;
        manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
        manifests.push(entry);
        write_atomic(
            &index_path,
            &serde_json::to_vec(&index).map_err(std::io::Error::other)?,
        )
    }
}

#[async_trait::async_trait]
impl BlobStore for LayoutDir {
    async fn has(&self, digest: &Digest) -> Result<bool, String> {
        Ok(self.blob_path(digest).is_file())
    }

    async fn read(&self, digest: &Digest, limit: usize) -> Result<Vec<u8>, String> {
        let path = self.blob_path(digest);
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > limit as u64 {
            return Err(format!("{}: larger than {limit} bytes", path.display()));
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if Digest::sha256(&bytes) != *digest {
            return Err(format!(
                "{}: content does not match its digest",
                path.display()
            ));
        }
        Ok(bytes)
    }

    async fn fetch(&self, digest: &Digest, content: &kiln_oci::ContentStore) -> Result<(), String> {
        let path = self.blob_path(digest);
        let (content, digest) = (content.clone(), digest.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut src =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut w = content.writer().map_err(|e| e.to_string())?;
            std::io::copy(&mut src, &mut w).map_err(|e| format!("{}: {e}", path.display()))?;
            w.commit(Some(&digest))
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn write(&self, digest: &Digest, content: &kiln_oci::ContentStore) -> Result<(), String> {
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let src = content.path(digest);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("blob paths have a parent"))?;
            let tmp = path.with_extension("tmp");
            std::fs::copy(&src, &tmp)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", self.blob_path(digest).display()))
    }
}

/// A layer blob an imported cache names.
#[derive(Debug, Clone)]
struct ImportedLayer {
    digest: Digest,
    diff_id: String,
    size: u64,
    media_type: String,
    parent: Option<usize>,
    created: Option<i64>,
}

/// A loaded cache: records by key, and the layers they are made of.
#[derive(Debug)]
pub struct ImportedCache {
    name: String,
    origin: Origin,
    layers: Vec<ImportedLayer>,
    records: HashMap<String, Vec<Option<usize>>>,
    /// Blobs asked about so far, and whether the origin has them.
    present: tokio::sync::Mutex<HashMap<Digest, bool>>,
}

/// A blob's description in a manifest: (size, media type, uncompressed digest if annotated).
type Described = HashMap<String, (u64, String, Option<String>)>;

fn describe_layers(manifest: &Value) -> Described {
    manifest["layers"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .filter_map(|l| {
                    Some((
                        l["digest"].as_str()?.to_string(),
                        (
                            l["size"].as_u64()?,
                            l["mediaType"].as_str().unwrap_or_default().to_string(),
                            l["annotations"][UNCOMPRESSED].as_str().map(str::to_string),
                        ),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl ImportedCache {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    async fn load(
        source: &CacheSource,
        registry: &kiln_oci::RegistryClient,
    ) -> Result<ImportedCache, String> {
        match source {
            CacheSource::Registry(r) => {
                let (bytes, media_type, _) =
                    registry.get_manifest(r).await.map_err(|e| e.to_string())?;
                let origin = Origin::Registry(r.clone());
                let manifest_bytes = if kiln_oci::media_types::is_index(&media_type) {
                    // A multi-platform image: its inline cache is in the host platform's image.
                    registry
                        .resolve(r, &kiln_oci::Platform::host())
                        .await
                        .map_err(|e| e.to_string())?
                        .manifest_bytes
                } else {
                    bytes
                };
                Self::from_manifest(source.to_string(), origin, &manifest_bytes, registry).await
            }
            CacheSource::Store {
                store, manifest, ..
            } => {
                let bytes = store.read(manifest, MAX_CONFIG).await?;
                let origin = Origin::Store(store.clone());
                Self::from_manifest(source.to_string(), origin, &bytes, registry).await
            }
            CacheSource::Local { dir, tag, digest } => {
                let index_path = dir.join("index.json");
                let index: Value = serde_json::from_slice(
                    &std::fs::read(&index_path)
                        .map_err(|e| format!("{}: {e}", index_path.display()))?,
                )
                .map_err(|e| format!("{}: {e}", index_path.display()))?;
                let entry = index["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| match digest {
                        Some(d) => m["digest"].as_str() == Some(&d.to_string()),
                        None => m["annotations"][REF_NAME].as_str() == Some(tag),
                    })
                    .ok_or_else(|| match digest {
                        Some(d) => format!("{} lists no manifest {d}", index_path.display()),
                        None => format!("{} has no manifest tagged {tag:?}", index_path.display()),
                    })?;
                let d: Digest = entry["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| format!("{}: {e}", index_path.display()))?;
                let layout = LayoutDir(dir.clone());
                let bytes = layout.read(&d, MAX_CONFIG).await?;
                let origin = Origin::Store(Arc::new(layout));
                Self::from_manifest(source.to_string(), origin, &bytes, registry).await
            }
        }
    }

    async fn from_manifest(
        name: String,
        origin: Origin,
        manifest_bytes: &[u8],
        registry: &kiln_oci::RegistryClient,
    ) -> Result<ImportedCache, String> {
        let manifest: Value =
            serde_json::from_slice(manifest_bytes).map_err(|e| format!("bad manifest: {e}"))?;
        let config_type = manifest["config"]["mediaType"].as_str().unwrap_or_default();
        let config_digest: Digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| format!("manifest config: {e}"))?;
        let mut described = describe_layers(&manifest);
        let config: CacheConfig = match config_type {
            CONFIG_MEDIA_TYPE => {
                let bytes = origin.read(registry, &config_digest, MAX_CONFIG).await?;
                serde_json::from_slice(&bytes).map_err(|e| format!("bad cache config: {e}"))?
            }
            BUILDKIT_CONFIG_MEDIA_TYPE => {
                return Err(
                    "it was written by BuildKit, whose cache keys kiln does not share \
                     (export the cache with kiln)"
                        .into(),
                )
            }
            _ => {
                // An image: its inline cache, with uncompressed digests from its rootfs.
                let bytes = origin.read(registry, &config_digest, MAX_CONFIG).await?;
                let image: Value =
                    serde_json::from_slice(&bytes).map_err(|e| format!("bad image config: {e}"))?;
                let Some(inline) = image.get(INLINE_KEY) else {
                    return Err(
                        "the image has no kiln inline cache (build it with --export-cache type=inline)"
                            .into(),
                    );
                };
                let diff_ids: Vec<&str> = image["rootfs"]["diff_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let blobs: Vec<&str> = manifest["layers"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|l| l["digest"].as_str()).collect())
                    .unwrap_or_default();
                if diff_ids.len() != blobs.len() {
                    return Err("the image's config and manifest disagree on its layers".into());
                }
                for (blob, diff_id) in blobs.iter().zip(&diff_ids) {
                    if let Some(d) = described.get_mut(*blob) {
                        d.2 = Some(diff_id.to_string());
                    }
                }
                serde_json::from_value(inline.clone())
                    .map_err(|e| format!("bad inline cache: {e}"))?
            }
        };
        Self::from_config(name, origin, config, &described)
    }

    /// Check a config against its manifest and index it.
    fn from_config(
        name: String,
        origin: Origin,
        config: CacheConfig,
        described: &Described,
    ) -> Result<ImportedCache, String> {
        let mut layers = Vec::with_capacity(config.layers.len());
        for (i, l) in config.layers.iter().enumerate() {
            let (size, media_type, diff_id) = described
                .get(&l.blob)
                .ok_or_else(|| format!("layer {} is not in the manifest", l.blob))?;
            let diff_id = diff_id
                .clone()
                .ok_or_else(|| format!("layer {} has no uncompressed digest", l.blob))?;
            // Parents come first, which also rules out cycles.
            let parent = match l.parent {
                -1 => None,
                p if p >= 0 && (p as usize) < i => Some(p as usize),
                p => return Err(format!("layer {i} has an invalid parent {p}")),
            };
            layers.push(ImportedLayer {
                digest: l
                    .blob
                    .parse()
                    .map_err(|e| format!("layer {}: {e}", l.blob))?,
                diff_id,
                size: *size,
                media_type: media_type.clone(),
                parent,
                created: l.created,
            });
        }
        let mut records = HashMap::new();
        for r in config.records {
            let outputs = r
                .outputs
                .iter()
                .map(|&o| match o {
                    -1 => Ok(None),
                    o if o >= 0 && (o as usize) < layers.len() => Ok(Some(o as usize)),
                    o => Err(format!("record {} names a missing layer {o}", r.key)),
                })
                .collect::<Result<Vec<_>, String>>()?;
            records.insert(r.key, outputs);
        }
        Ok(ImportedCache {
            name,
            origin,
            layers,
            records,
            present: Default::default(),
        })
    }

    /// The layers of the chain whose top is `top`, bottom first.
    fn chain(&self, top: Option<usize>) -> Vec<&ImportedLayer> {
        let mut out = Vec::new();
        let mut next = top;
        while let Some(i) = next {
            out.push(&self.layers[i]);
            next = self.layers[i].parent;
        }
        out.reverse();
        out
    }
}

impl SolveCtx {
    /// The result of `key` from an imported cache, recorded in the local cache. Its layers are
    /// not fetched now but registered as lazy (see [`crate::lazy`]): a build whose every step
    /// comes from the cache downloads none of them. `None` when no import has the key.
    pub async fn imported(
        self: &Arc<Self>,
        vertex: &crate::llb::Vertex,
        key: &str,
    ) -> Result<Option<VertexResult>, SolveError> {
        if self.no_cache || vertex.ignore_cache() {
            return Ok(None);
        }
        for cache in &self.imports {
            let Some(outputs) = cache.records.get(key) else {
                continue;
            };
            // Layers are fetched only when needed, maybe by a later step: make sure now that
            // the cache still has them, or the step runs instead.
            if let Err(e) = self.check_layers(cache, outputs).await {
                if e.canceled {
                    return Err(e);
                }
                self.progress.warn(
                    Some(&vertex.digest),
                    format!(
                        "cache {}: {}; running the step instead",
                        cache.name, e.message
                    ),
                );
                continue;
            }
            let chains: Vec<Chain> = outputs
                .iter()
                .map(|top| self.register_chain(cache, *top))
                .collect();
            self.record(vertex, key, &chains)?;
            self.progress.cached(&vertex.digest);
            return Ok(Some(VertexResult {
                key: key.to_string(),
                outputs: chains,
                local: None,
            }));
        }
        Ok(None)
    }

    /// Check that the cache's origin has every layer of these outputs that is not here yet.
    async fn check_layers(
        &self,
        cache: &ImportedCache,
        outputs: &[Option<usize>],
    ) -> Result<(), SolveError> {
        let mut present = cache.present.lock().await;
        for top in outputs {
            for layer in cache.chain(*top) {
                let id = crate::source::image::layer_id_for_diff(&layer.diff_id);
                if self.engine.layers.exists(&id) || self.engine.content.has(&layer.digest) {
                    continue;
                }
                let has = match present.get(&layer.digest) {
                    Some(has) => *has,
                    None => {
                        let has = tokio::select! {
                            r = cache.origin.has(&self.registry, &layer.digest) => r,
                            _ = self.cancel.cancelled() => return Err(SolveError::canceled()),
                        }
                        .map_err(|e| SolveError::msg(format!("layer {}: {e}", layer.digest)))?;
                        present.insert(layer.digest.clone(), has);
                        has
                    }
                };
                if !has {
                    return Err(SolveError::msg(format!(
                        "layer {} is missing from the cache",
                        layer.digest
                    )));
                }
            }
        }
        Ok(())
    }

    fn register_chain(&self, cache: &ImportedCache, top: Option<usize>) -> Chain {
        let mut chain = Chain::scratch();
        for layer in cache.chain(top) {
            let id = crate::source::image::layer_id_for_diff(&layer.diff_id);
            if !self.engine.layers.exists(&id) {
                self.engine.lazy.add(
                    &id,
                    crate::lazy::LazyLayer {
                        blob: BlobRecord {
                            digest: layer.digest.to_string(),
                            diff_id: layer.diff_id.clone(),
                            size: layer.size,
                            media_type: layer.media_type.clone(),
                            source: cache.origin.repository(),
                            imported: true,
                        },
                        origin: cache.origin.clone(),
                        created: layer.created,
                        what: format!("cache {}", cache.name),
                    },
                );
            }
            chain = chain.with(id);
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_insecure_attrs_are_collected() {
        let plan = CachePlan::from_csv(
            &["type=registry,ref=r.example/a:cache,registry.insecure=true".into()],
            &["type=registry,ref=r.example/b:cache".into()],
        )
        .unwrap();
        assert_eq!(plan.insecure_refs, ["r.example/a:cache"]);
    }

    #[test]
    fn csv_specs_parse_as_buildx_does() {
        let (kind, attrs) = parse_csv("type=registry,ref=localhost:5000/app:cache,mode=max");
        assert_eq!(kind, "registry");
        assert_eq!(attrs["ref"], "localhost:5000/app:cache");
        assert_eq!(attrs["mode"], "max");
        let (kind, attrs) = parse_csv("localhost:5000/app:latest");
        assert_eq!(kind, "registry");
        assert_eq!(attrs["ref"], "localhost:5000/app:latest");
        let (kind, attrs) = parse_csv("type=local,dest=/tmp/c");
        assert_eq!(kind, "local");
        assert_eq!(attrs["dest"], "/tmp/c");
    }

    #[test]
    fn export_and_import_entries() {
        let attrs = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        match parse_export(
            "registry",
            &attrs(&[("ref", "h:5000/a:c"), ("mode", "max")]),
        ) {
            Ok(Some(ExportRequest::To(e))) => {
                assert_eq!(e.mode, CacheMode::Max);
                assert!(matches!(e.target, CacheTarget::Registry(_)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_export("inline", &attrs(&[])),
            Ok(Some(ExportRequest::Inline))
        ));
        assert!(parse_export("registry", &attrs(&[])).is_err());
        assert!(parse_export("registry", &attrs(&[("ref", "a"), ("mode", "all")])).is_err());
        assert!(matches!(parse_export("gha", &attrs(&[])), Ok(None)));
        assert!(parse_import("local", &attrs(&[])).is_err());
        assert!(matches!(
            parse_import("local", &attrs(&[("src", "/c")])),
            Ok(Some(CacheSource::Local { .. }))
        ));
    }

    #[test]
    fn layer_table_shares_common_bottoms() {
        let mut t = LayerTable::default();
        let a = t.chain(&[("b1".into(), None), ("b2".into(), Some(1))]);
        let b = t.chain(&[("b1".into(), None), ("b3".into(), None)]);
        let c = t.chain(&[]);
        assert_eq!((a, b, c), (1, 2, -1));
        assert_eq!(t.layers.len(), 3);
        assert_eq!(t.layers[2].parent, 0);
    }

    #[test]
    fn configs_that_do_not_fit_their_manifest_are_refused() {
        let described: Described = [(
            "sha256:aa".to_string(),
            (
                3,
                "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
                Some("sha256:bb".to_string()),
            ),
        )]
        .into_iter()
        .collect();
        let origin = || Origin::Store(Arc::new(LayoutDir(PathBuf::from("/nonexistent"))));
        let bad_parent = CacheConfig {
            layers: vec![CacheLayer {
                blob: "sha256:aa".into(),
                parent: 0,
                created: None,
            }],
            records: vec![],
        };
        assert!(ImportedCache::from_config("c".into(), origin(), bad_parent, &described).is_err());
        let missing_blob = CacheConfig {
            layers: vec![CacheLayer {
                blob: "sha256:cc".into(),
                parent: -1,
                created: None,
            }],
            records: vec![],
        };
        assert!(
            ImportedCache::from_config("c".into(), origin(), missing_blob, &described).is_err()
        );
        let bad_output = CacheConfig {
            layers: vec![],
            records: vec![CacheRecordEntry {
                key: "k".into(),
                outputs: vec![4],
                description: String::new(),
            }],
        };
        assert!(ImportedCache::from_config("c".into(), origin(), bad_output, &described).is_err());
    }
}
