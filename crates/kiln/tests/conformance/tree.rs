//! An OCI image tarball (`--output type=oci`) reduced to what the conformance goldens compare:
//! the final file tree with each entry's metadata (layers applied in order, whiteouts honoured),
//! the image config's fields, the history and the layer count.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// Config fields the goldens hold (`config.*` of the image config).
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

/// One image of an OCI tarball.
#[derive(Debug, Clone)]
pub struct Image {
    /// Path (no leading `/`) → the entry's metadata as JSON.
    pub files: BTreeMap<String, Value>,
    /// `os`, `architecture`, `variant` and the [`CONFIG_FIELDS`] that are set.
    pub config: Map<String, Value>,
    /// `created_by`, `empty_layer` and `comment` of each history entry.
    pub history: Vec<Value>,
    pub layers: usize,
    /// `rootfs.diff_ids`: whether an image derives from another (not in the goldens).
    pub diff_ids: Vec<Value>,
}

/// Reads every image (one per platform) of an OCI tarball. File mtimes at or after `build_start`
/// (seconds since the epoch) are written as `"build"`: they are the time of the build.
pub fn read_oci(tarball: &Path, build_start: i64) -> Result<Vec<Image>, String> {
    let file = std::fs::File::open(tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        blobs.insert(path.trim_start_matches("./").to_string(), data);
    }
    let blob = |digest: &str| -> Result<&Vec<u8>, String> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        blobs
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| format!("blob {digest} is not in the tarball"))
    };
    let parse = |bytes: &[u8]| -> Result<Value, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    };
    let index = parse(blobs.get("index.json").ok_or("no index.json")?)?;
    let mut manifests = Vec::new();
    let mut pending: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
    while let Some(desc) = pending.pop() {
        let doc = parse(blob(desc["digest"].as_str().unwrap_or_default())?)?;
        if doc.get("manifests").is_some() {
            pending.extend(doc["manifests"].as_array().cloned().unwrap_or_default());
        } else if desc["platform"]["os"] != "unknown" {
            manifests.push(doc);
        }
    }
    let mut images = Vec::new();
    for manifest in manifests {
        let config = parse(blob(
            manifest["config"]["digest"].as_str().unwrap_or_default(),
        )?)?;
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let mut files = BTreeMap::new();
        for layer in &layers {
            let data = blob(layer["digest"].as_str().unwrap_or_default())?.clone();
            apply_layer(&mut files, data, build_start)?;
        }
        let mut fields = Map::new();
        for key in ["os", "architecture", "variant"] {
            if let Some(v) = config.get(key) {
                fields.insert(key.into(), v.clone());
            }
        }
        for key in CONFIG_FIELDS {
            match config["config"].get(*key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    fields.insert((*key).into(), v.clone());
                }
            }
        }
        let history = config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|h| {
                json!({
                    "created_by": h.get("created_by").and_then(Value::as_str).map(without_pointers),
                    "empty_layer": h.get("empty_layer").cloned().unwrap_or(json!(false)),
                    "comment": h.get("comment").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        images.push(Image {
            files,
            config: fields,
            history,
            layers: layers.len(),
            diff_ids: config["rootfs"]["diff_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        });
    }
    images.sort_by_key(|i| {
        (
            i.config.get("architecture").map(|v| v.to_string()),
            i.config.get("variant").map(|v| v.to_string()),
        )
    });
    Ok(images)
}

/// BuildKit's history of EXPOSE prints a Go pointer (`EXPOSE &{[80/tcp] 0xc001c91480}`):
/// `0x…` in its place, on both sides.
fn without_pointers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0xc") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let hex = tail
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(tail.len());
        out.push_str("0x…");
        rest = &tail[hex..];
    }
    out.push_str(rest);
    out
}

fn apply_layer(
    files: &mut BTreeMap<String, Value>,
    data: Vec<u8>,
    build_start: i64,
) -> Result<(), String> {
    let reader =
        kiln_oci::layer::decompress(std::io::Cursor::new(data)).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let path = clean(&raw);
        if path.is_empty() {
            continue;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n.to_string()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            files.retain(|p, _| !(p.starts_with(&dir) && p.len() > dir.len()));
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let gone = format!("{dir}{gone}");
            let under = format!("{gone}/");
            files.retain(|p, _| *p != gone && !p.starts_with(&under));
            continue;
        }
        let header = entry.header().clone();
        let mtime = header.mtime().unwrap_or(0) as i64;
        let mut e = json!({
            "mode": format!("{:04o}", header.mode().unwrap_or(0) & 0o7777),
            "uid": header.uid().unwrap_or(0),
            "gid": header.gid().unwrap_or(0),
            "mtime": if mtime >= build_start { json!("build") } else { json!(mtime) },
        });
        let link = || entry_link(&header).map(|l| json!(l)).unwrap_or(Value::Null);
        match header.entry_type() {
            tar::EntryType::Directory => {
                e["type"] = json!("dir");
                // A directory entry replaces the metadata, not the children.
            }
            tar::EntryType::Symlink => {
                e["type"] = json!("symlink");
                e["target"] = link();
            }
            tar::EntryType::Link => {
                e["type"] = json!("hardlink");
                let target = clean(&entry_link(&header).unwrap_or_default());
                e["target"] = json!(target);
                if let Some(t) = files.get(&target) {
                    e["size"] = t["size"].clone();
                    e["sha256"] = t["sha256"].clone();
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
                e["type"] = json!("file");
                e["size"] = json!(data.len());
                e["sha256"] = json!(format!("{:x}", Sha256::digest(&data)));
                // Small text files are shown, so goldens and differences can be read.
                if data.len() <= 512 {
                    if let Ok(text) = std::str::from_utf8(&data) {
                        e["text"] = json!(text);
                    }
                }
            }
            other => {
                e["type"] = json!(format!("{other:?}").to_lowercase());
            }
        }
        if e["type"] != "dir" {
            let under = format!("{path}/");
            files.retain(|p, _| !p.starts_with(&under));
        }
        files.insert(path, e);
    }
    Ok(())
}

fn entry_link(header: &tar::Header) -> Option<String> {
    header
        .link_name()
        .ok()
        .flatten()
        .map(|l| l.to_string_lossy().into_owned())
}

/// `./a/b/` → `a/b`.
fn clean(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// What a case's golden holds for one image: the entries that differ from the base image's
/// (`null` where the base's entry was removed), the config, the history after the base's,
/// and the layers added.
pub fn against_base(image: &Image, base: Option<&Image>) -> Value {
    // Only an image built on the base (`FROM {{base}}`, not `FROM scratch`) is shown against it.
    let base = base.filter(|b| !b.diff_ids.is_empty() && image.diff_ids.starts_with(&b.diff_ids));
    let mut files = Map::new();
    for (path, e) in &image.files {
        if base.and_then(|b| b.files.get(path)) != Some(e) {
            files.insert(path.clone(), e.clone());
        }
    }
    if let Some(b) = base {
        for path in b.files.keys() {
            if !image.files.contains_key(path) {
                files.insert(path.clone(), Value::Null);
            }
        }
    }
    let skip = base
        .filter(|b| image.history.starts_with(&b.history))
        .map_or(0, |b| b.history.len());
    let skip_layers = base.map_or(0, |b| b.layers);
    json!({
        "files": files,
        "config": image.config,
        "history": image.history.iter().skip(skip).cloned().collect::<Vec<_>>(),
        "layers": image.layers.saturating_sub(skip_layers),
    })
}

/// Human-readable differences between a golden and kiln's result (empty when equal).
pub fn differences(golden: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", golden, got, &mut out);
    out
}

fn diff_into(at: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let keys: std::collections::BTreeSet<&String> = w.keys().chain(g.keys()).collect();
            for k in keys {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (w.get(k), g.get(k)) {
                    (Some(a), Some(b)) => diff_into(&here, a, b, out),
                    (Some(a), None) => out.push(format!("{here}: BuildKit {a}, kiln: missing")),
                    (None, Some(b)) => out.push(format!("{here}: BuildKit: missing, kiln {b}")),
                    (None, None) => {}
                }
            }
        }
        (w, g) if w != g => out.push(format!("{at}: BuildKit {w}, kiln {g}")),
        _ => {}
    }
}
