//! Reading from a registry: manifests, indexes with platform selection, configs and blobs.

use std::io::Write;

use futures::StreamExt;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use reqwest::StatusCode;

use super::{status_error, Access, RegistryClient, RegistryError};
use crate::digest::{Digest, Sha256Hasher};
use crate::media_types as mt;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{ContentStore, StoreError};

/// Largest manifest or index accepted (as containerd).
const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// Largest image config accepted into memory.
const MAX_CONFIG_SIZE: usize = 64 * 1024 * 1024;

/// An image resolved for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference asked for, pinned to the digest the tag pointed at (the index's digest
    /// for multi-platform images).
    pub reference: Reference,
    /// Digest of the platform's image manifest.
    pub manifest_digest: Digest,
    /// The image manifest.
    pub manifest: ImageManifest,
    /// Its exact bytes (what `manifest_digest` hashes).
    pub manifest_bytes: Vec<u8>,
    /// Its media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The config blob's exact bytes.
    pub config_bytes: Vec<u8>,
    /// The parsed config.
    pub config: ImageConfiguration,
}

/// The media type of a manifest whose server did not say (or said something generic).
fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u32>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    match (p.media_type, p.manifests, p.schema_version) {
        (Some(m), _, _) => Some(m),
        (None, Some(_), _) => Some(mt::OCI_INDEX.to_string()),
        (None, None, Some(2)) => Some(mt::OCI_MANIFEST.to_string()),
        (None, None, Some(1)) => Some(mt::DOCKER_MANIFEST_V1_SIGNED.to_string()),
        _ => None,
    }
}

async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let url = resp.url().to_string();
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(RegistryError::Protocol {
            url,
            reason: format!("{what} is larger than {limit} bytes"),
        });
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Protocol {
            url: url.clone(),
            reason: format!("reading {what}: {e}"),
        })?;
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(RegistryError::Protocol {
                url,
                reason: format!("{what} is larger than {limit} bytes"),
            });
        }
    }
    Ok(out)
}

impl RegistryClient {
    /// Fetches the manifest or index `r` names: its bytes, media type and digest. A digest in
    /// `r` is verified.
    pub async fn get_manifest(
        &self,
        r: &Reference,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let access = Access::pull(r);
        let url = self.url(r, &format!("manifests/{}", r.manifest_ref()));
        let resp = self
            .send(&r.registry, &access, |c| {
                Ok(c.get(&url)
                    .header(reqwest::header::ACCEPT, mt::MANIFEST_ACCEPT))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &access, &r.to_string()).await);
        }
        let header_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = read_limited(resp, MAX_MANIFEST_SIZE, "manifest").await?;
        let digest = Digest::sha256(&bytes);
        let expected = r
            .digest
            .clone()
            .or(header_digest.filter(|d| d.algorithm() == "sha256"));
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        let media_type = match header_type {
            Some(t) if mt::is_index(&t) || mt::is_manifest(&t) => t,
            _ => sniff_media_type(&bytes).ok_or_else(|| RegistryError::InvalidManifest {
                reference: r.to_string(),
                reason: "cannot tell the manifest's media type".into(),
            })?,
        };
        Ok((bytes, media_type, digest))
    }

    /// Resolves `r` to one image manifest for `platform` (following an index or manifest
    /// list), and fetches and verifies its config.
    pub async fn resolve(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidManifest {
            reference: r.to_string(),
            reason,
        };
        let (bytes, media_type, top_digest) = self.get_manifest(r).await?;
        let pinned = r.with_digest(top_digest.clone());
        let (manifest_bytes, media_type, manifest_digest) = if mt::is_index(&media_type) {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| invalid(format!("bad index: {e}")))?;
            let mut available = Vec::new();
            let mut chosen = None;
            for d in index.manifests() {
                let Some(p) = d.platform() else { continue };
                let p = Platform::from_oci(p);
                if p.os == "unknown" {
                    continue; // attestation manifests
                }
                if chosen.is_none() && platform.matches(&p) {
                    chosen = Some(d.clone());
                }
                available.push(p.to_string());
            }
            let Some(desc) = chosen else {
                return Err(RegistryError::NoMatchingPlatform {
                    reference: r.to_string(),
                    wanted: platform.to_string(),
                    available,
                });
            };
            let child = Digest::try_from(desc.digest()).map_err(|e| invalid(e.to_string()))?;
            let (b, t, d) = self.get_manifest(&r.with_digest(child)).await?;
            if !mt::is_manifest(&t) {
                return Err(invalid(format!(
                    "index entry for {platform} has media type {t}"
                )));
            }
            (b, t, d)
        } else if mt::is_manifest(&media_type) {
            (bytes, media_type, top_digest)
        } else if media_type == mt::DOCKER_MANIFEST_V1_SIGNED {
            return Err(invalid(
                "Docker schema 1 manifests are not supported".into(),
            ));
        } else {
            return Err(invalid(format!("unsupported media type {media_type}")));
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| invalid(format!("bad manifest: {e}")))?;
        let config_digest =
            Digest::try_from(manifest.config().digest()).map_err(|e| invalid(e.to_string()))?;
        let config_bytes = self
            .fetch_blob_bytes(r, &config_digest, MAX_CONFIG_SIZE)
            .await?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(format!("bad image config: {e}")))?;
        Ok(ResolvedImage {
            reference: pinned,
            manifest_digest,
            manifest,
            manifest_bytes,
            media_type,
            config_bytes,
            config,
        })
    }

    /// Fetches a small blob into memory, verifying its digest.
    pub async fn fetch_blob_bytes(
        &self,
        repo: &Reference,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let access = Access::pull(repo);
        let url = self.url(repo, &format!("blobs/{digest}"));
        let resp = self
            .send(&repo.registry, &access, |c| Ok(c.get(&url)))
            .await?;
        if !resp.status().is_success() {
            let what = format!("{}@{digest}", repo.repository_ref());
            return Err(status_error(resp, &access, &what).await);
        }
        let bytes = read_limited(resp, limit, "blob").await?;
        let actual = Digest::sha256(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Downloads a blob into `store`, streaming and verifying it; a blob already present is
    /// not fetched again. Interrupted downloads are retried from the start.
    pub async fn fetch_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
        store: &ContentStore,
    ) -> Result<(), RegistryError> {
        if store.has(digest) {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_blob_once(repo, digest, store).await {
                Err(RegistryError::Protocol { url, reason }) if attempt < super::ATTEMPTS => {
                    tracing::debug!(%url, %reason, attempt, "blob download interrupted, retrying");
                }
                other => return other,
            }
        }
    }

    async fn fetch_blob_once(
        &self,
        repo: &Reference,
        digest: &Digest,
        store: &ContentStore,
    ) -> Result<(), RegistryError> {
        let access = Access::pull(repo);
        let url = self.url(repo, &format!("blobs/{digest}"));
        let resp = self
            .send(&repo.registry, &access, |c| Ok(c.get(&url)))
            .await?;
        if !resp.status().is_success() {
            let what = format!("{}@{digest}", repo.repository_ref());
            return Err(status_error(resp, &access, &what).await);
        }
        let mut writer = store.writer()?;
        let mut hasher = Sha256Hasher::default();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Protocol {
                url: url.clone(),
                reason: format!("reading blob {digest}: {e}"),
            })?;
            hasher.update(&chunk);
            writer.write_all(&chunk).map_err(|source| {
                RegistryError::Store(StoreError::Io {
                    path: store.root().join("ingest"),
                    source,
                })
            })?;
        }
        match writer.commit(Some(digest)) {
            Ok(_) => Ok(()),
            Err(StoreError::DigestMismatch { expected, actual }) => {
                Err(RegistryError::DigestMismatch { expected, actual })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the repository has the blob (HEAD).
    pub async fn blob_exists(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        self.blob_exists_as(repo, digest, &Access::pull(repo)).await
    }

    pub(super) async fn blob_exists_as(
        &self,
        repo: &Reference,
        digest: &Digest,
        access: &Access,
    ) -> Result<bool, RegistryError> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        let resp = self
            .send(&repo.registry, access, |c| Ok(c.head(&url)))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(
                status_error(resp, access, &format!("{}@{digest}", repo.repository_ref())).await,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_is_sniffed_from_the_document() {
        let cases: [(&str, Option<&str>); 5] = [
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
                Some(mt::DOCKER_MANIFEST),
            ),
            (r#"{"schemaVersion":2,"manifests":[]}"#, Some(mt::OCI_INDEX)),
            (r#"{"schemaVersion":2,"config":{}}"#, Some(mt::OCI_MANIFEST)),
            (
                r#"{"schemaVersion":1}"#,
                Some(mt::DOCKER_MANIFEST_V1_SIGNED),
            ),
            ("not json", None),
        ];
        for (doc, want) in cases {
            assert_eq!(sniff_media_type(doc.as_bytes()).as_deref(), want, "{doc}");
        }
    }
}
