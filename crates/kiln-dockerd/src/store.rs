//! The local image store: which images exist (by config digest, Docker's image ID) and which
//! names point at them. Manifests, configs and layer blobs live in the engine's content store;
//! this store only records digests, so it is one small JSON file rewritten atomically.

use kiln_oci::{ContentStore, Digest, Reference};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image store {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("image {id}: {reason}")]
    Content { id: String, reason: String },
}

/// One image: its manifest in the content store, and where its layers came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Config digest (`sha256:…`), Docker's image ID.
    pub id: String,
    /// Manifest digest.
    pub manifest: String,
    pub media_type: String,
    /// Layer digest → repository it was pulled from (`host/repo`), for cross-repo mounts.
    #[serde(default)]
    pub layer_sources: BTreeMap<String, String>,
    /// `host/repo@sha256:…` for every push.
    #[serde(default)]
    pub repo_digests: BTreeSet<String>,
    /// When the image entered the store (seconds since the epoch).
    pub stored_at: u64,
}

/// What an image's manifest and config say, read from the content store.
#[derive(Debug, Clone)]
pub struct ImageContent {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub config_json: serde_json::Value,
    /// (digest, size, media type) of each layer, in order.
    pub layers: Vec<(String, u64, String)>,
}

impl ImageContent {
    /// Sum of the layer blob sizes (compressed, as stored).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.1).sum()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    images: BTreeMap<String, ImageRecord>,
    /// Full reference (`host/repo:tag`) → image ID.
    tags: BTreeMap<String, String>,
}

/// The image store. Every change is written to disk before the call returns.
pub struct ImageStore {
    path: PathBuf,
    state: Mutex<StoreFile>,
}

/// What a name given by a client matched.
#[derive(Debug, Clone)]
pub struct Found {
    pub image: ImageRecord,
    /// The tag, when the name was one (`rmi NAME` untags; `rmi ID` deletes).
    pub tag: Option<Reference>,
}

impl ImageStore {
    pub fn open(dir: &Path) -> Result<ImageStore, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("images.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.clone(),
                    source,
                })
            }
        };
        Ok(ImageStore {
            path,
            state: Mutex::new(state),
        })
    }

    fn save(&self, state: &StoreFile) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("store serializes");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    fn change<T>(&self, f: impl FnOnce(&mut StoreFile) -> T) -> Result<T, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut state);
        self.save(&state)?;
        Ok(out)
    }

    /// Add (or refresh) an image and point `tags` at it.
    pub fn add(&self, image: ImageRecord, tags: &[Reference]) -> Result<(), StoreError> {
        self.change(|s| {
            let id = image.id.clone();
            match s.images.get_mut(&id) {
                Some(existing) => {
                    existing.manifest = image.manifest;
                    existing.media_type = image.media_type;
                    existing.layer_sources.extend(image.layer_sources);
                    existing.stored_at = image.stored_at;
                }
                None => {
                    s.images.insert(id.clone(), image);
                }
            }
            for t in tags {
                s.tags.insert(t.to_string(), id.clone());
            }
        })
    }

    /// Find an image by tag (`app`, `app:1`, `host/app:1`), digest reference
    /// (`host/app@sha256:…`) or full or abbreviated ID.
    pub fn find(&self, name: &str) -> Option<Found> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(r) = Reference::parse(name) {
            match &r.digest {
                None => {
                    if let Some(image) = state
                        .tags
                        .get(&r.to_string())
                        .and_then(|id| state.images.get(id))
                    {
                        return Some(Found {
                            image: image.clone(),
                            tag: Some(r),
                        });
                    }
                }
                Some(d) => {
                    let pinned = format!("{}@{d}", r.repository_ref());
                    if let Some(image) = state.images.values().find(|i| {
                        i.repo_digests.contains(&pinned)
                            || (i.manifest == d.as_str()
                                && state.tags.iter().any(|(t, id)| {
                                    *id == i.id
                                        && Reference::parse(t)
                                            .is_ok_and(|t| t.repository_ref() == r.repository_ref())
                                }))
                    }) {
                        return Some(Found {
                            image: image.clone(),
                            tag: None,
                        });
                    }
                }
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut matches = state
            .images
            .values()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
        let first = matches.next()?;
        if matches.next().is_some() {
            return None;
        }
        Some(Found {
            image: first.clone(),
            tag: None,
        })
    }

    /// The names pointing at an image, sorted.
    pub fn tags_of(&self, id: &str) -> Vec<Reference> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        tags_of(&state, id)
    }

    /// Every image with its names.
    pub fn list(&self) -> Vec<(ImageRecord, Vec<Reference>)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .images
            .values()
            .map(|i| (i.clone(), tags_of(&state, &i.id)))
            .collect()
    }

    /// Tags of one repository (`host/repo`) with their image IDs.
    pub fn tags_in_repository(&self, repository: &str) -> Vec<(Reference, String)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .tags
            .iter()
            .filter_map(|(t, id)| {
                let r = Reference::parse(t).ok()?;
                (r.repository_ref() == repository).then(|| (r, id.clone()))
            })
            .collect()
    }

    /// Point `name` at image `id`.
    pub fn tag(&self, id: &str, name: &Reference) -> Result<(), StoreError> {
        self.change(|s| {
            s.tags.insert(name.to_string(), id.to_string());
        })
    }

    /// Remove a name; true if it existed.
    pub fn untag(&self, name: &Reference) -> Result<bool, StoreError> {
        self.change(|s| s.tags.remove(&name.to_string()).is_some())
    }

    /// Forget an image and every name pointing at it. Its blobs stay in the content store
    /// (the build cache may share them); the engine's GC reclaims them.
    pub fn remove(&self, id: &str) -> Result<Vec<Reference>, StoreError> {
        self.change(|s| {
            let tags = tags_of(s, id);
            s.tags.retain(|_, v| v != id);
            s.images.remove(id);
            tags
        })
    }

    /// Record that the image was pushed as `host/repo@digest`.
    pub fn add_repo_digest(&self, id: &str, pinned: String) -> Result<(), StoreError> {
        self.change(|s| {
            if let Some(i) = s.images.get_mut(id) {
                i.repo_digests.insert(pinned);
            }
        })
    }
}

fn tags_of(state: &StoreFile, id: &str) -> Vec<Reference> {
    state
        .tags
        .iter()
        .filter(|(_, v)| *v == id)
        .filter_map(|(t, _)| Reference::parse(t).ok())
        .collect()
}

/// Read an image's manifest and config from the content store.
pub fn read_content(
    content: &ContentStore,
    image: &ImageRecord,
) -> Result<ImageContent, StoreError> {
    let fail = |reason: String| StoreError::Content {
        id: image.id.clone(),
        reason,
    };
    let digest = |s: &str| s.parse::<Digest>().map_err(|e| fail(e.to_string()));
    let manifest = content
        .read(&digest(&image.manifest)?)
        .map_err(|e| fail(format!("manifest: {e}")))?;
    let config = content
        .read(&digest(&image.id)?)
        .map_err(|e| fail(format!("config: {e}")))?;
    let m: serde_json::Value =
        serde_json::from_slice(&manifest).map_err(|e| fail(format!("manifest: {e}")))?;
    let config_json: serde_json::Value =
        serde_json::from_slice(&config).map_err(|e| fail(format!("config: {e}")))?;
    let layers = m["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    (
                        l["digest"].as_str().unwrap_or_default().to_string(),
                        l["size"].as_u64().unwrap_or(0),
                        l["mediaType"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ImageContent {
        manifest,
        config,
        config_json,
        layers,
    })
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{id}"),
            manifest: "sha256:m".into(),
            media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
            layer_sources: BTreeMap::new(),
            repo_digests: BTreeSet::new(),
            stored_at: 1,
        }
    }

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn names_resolve_by_tag_id_and_short_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        store
            .add(record("aaaa1111"), &[r("app:1"), r("reg:5000/x/app")])
            .unwrap();
        store.add(record("aaaa2222"), &[]).unwrap();
        assert_eq!(store.find("app:1").unwrap().tag, Some(r("app:1")));
        assert!(store.find("docker.io/library/app:1").is_some());
        assert!(store.find("reg:5000/x/app:latest").is_some());
        assert!(store.find("app").is_none(), "app means app:latest");
        assert_eq!(
            store.find("aaaa1").unwrap().image.id,
            "sha256:aaaa1111",
            "unique prefix"
        );
        assert!(store.find("aaaa").is_none(), "ambiguous prefix");
        assert!(store.find("sha256:aaaa2222").unwrap().tag.is_none());

        // Persisted across reopen.
        drop(store);
        let store = ImageStore::open(dir.path()).unwrap();
        assert_eq!(store.tags_of("sha256:aaaa1111").len(), 2);
        assert_eq!(store.remove("sha256:aaaa1111").unwrap().len(), 2);
        assert!(store.find("app:1").is_none());
    }
}
