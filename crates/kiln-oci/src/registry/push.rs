//! Writing to a registry: blob uploads (cross-repository mount, monolithic, chunked) and
//! manifests.

use std::io::{Seek, SeekFrom};

use reqwest::{StatusCode, Url};
use tokio_util::io::ReaderStream;

use super::{
    status_error, Access, RegistryClient, RegistryError, MONOLITHIC_PUSH_LIMIT, PUSH_CHUNK_SIZE,
};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{ContentStore, StoreError};

impl RegistryClient {
    /// Uploads a blob from `store` unless the repository already has it. With `mount_from` on
    /// the same registry, asks the registry to link the blob from that repository first.
    /// Blobs over 32 MiB are sent in 16 MiB PATCH chunks streamed from disk.
    pub async fn push_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
        store: &ContentStore,
        mount_from: Option<&Reference>,
    ) -> Result<(), RegistryError> {
        let access = Access::push(repo);
        if self.blob_exists_as(repo, digest, &access).await? {
            tracing::debug!(repo = %repo.repository_ref(), %digest, "blob already present");
            return Ok(());
        }
        let mut location = None;
        if let Some(from) =
            mount_from.filter(|f| f.registry == repo.registry && f.repository != repo.repository)
        {
            let mut mount_access = access.clone();
            mount_access
                .scopes
                .push(format!("repository:{}:pull", from.repository));
            let url = self.url(repo, "blobs/uploads/");
            let query = [
                ("mount", digest.to_string()),
                ("from", from.repository.clone()),
            ];
            let resp = self
                .send(&repo.registry, &mount_access, |c| {
                    Ok(c.post(&url)
                        .query(&query)
                        .header(reqwest::header::CONTENT_LENGTH, "0"))
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    tracing::debug!(repo = %repo.repository_ref(), from = %from.repository, %digest, "blob mounted");
                    return Ok(());
                }
                StatusCode::ACCEPTED => location = Some(self.location(&resp)?),
                _ => {
                    // Not mountable (no access to the source): upload normally.
                    tracing::debug!(status = %resp.status(), "blob mount refused, uploading");
                }
            }
        }
        // Only now is the local blob needed: a mounted blob never is.
        let size = store.size(digest)?;
        let location = match location {
            Some(l) => l,
            None => self.start_upload(repo, &access).await?,
        };
        let location = if size > MONOLITHIC_PUSH_LIMIT {
            self.upload_chunks(repo, &access, digest, store, size, location)
                .await?
        } else {
            location
        };
        let body = if size > MONOLITHIC_PUSH_LIMIT {
            Vec::new()
        } else {
            store.read(digest)?
        };
        let body = bytes::Bytes::from(body);
        let mut put_url = location;
        put_url
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let resp = self
            .send(&repo.registry, &access, |c| {
                Ok(c.put(put_url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, body.len())
                    .body(body.clone()))
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            let what = format!("{}@{digest}", repo.repository_ref());
            return Err(status_error(resp, &access, &what).await);
        }
        tracing::debug!(repo = %repo.repository_ref(), %digest, size, "blob pushed");
        Ok(())
    }

    async fn start_upload(&self, repo: &Reference, access: &Access) -> Result<Url, RegistryError> {
        let url = self.url(repo, "blobs/uploads/");
        let resp = self
            .send(&repo.registry, access, |c| {
                Ok(c.post(&url).header(reqwest::header::CONTENT_LENGTH, "0"))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(resp, access, &repo.repository_ref()).await);
        }
        self.location(&resp)
    }

    /// The upload URL from a `Location` header, which may be relative.
    fn location(&self, resp: &reqwest::Response) -> Result<Url, RegistryError> {
        let raw = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                url: resp.url().to_string(),
                reason: "upload response has no Location header".into(),
            })?;
        resp.url().join(raw).map_err(|e| RegistryError::Protocol {
            url: resp.url().to_string(),
            reason: format!("bad Location header: {e}"),
        })
    }

    /// PATCHes the blob in chunks; returns the location to finish the upload at.
    async fn upload_chunks(
        &self,
        repo: &Reference,
        access: &Access,
        digest: &Digest,
        store: &ContentStore,
        size: u64,
        mut location: Url,
    ) -> Result<Url, RegistryError> {
        let path = store.path(digest);
        let mut offset = 0;
        while offset < size {
            let len = PUSH_CHUNK_SIZE.min(size - offset);
            let resp = self
                .send(&repo.registry, access, |c| {
                    let mut file = std::fs::File::open(&path).map_err(|source| StoreError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    file.seek(SeekFrom::Start(offset))
                        .map_err(|source| StoreError::Io {
                            path: path.clone(),
                            source,
                        })?;
                    let chunk = tokio::fs::File::from_std(file);
                    // 1 MiB reads: the default 4 KiB buffer made each read a blocking-pool hop.
                    let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(
                        tokio::io::AsyncReadExt::take(chunk, len),
                        1024 * 1024,
                    ));
                    Ok(c.patch(location.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .header(reqwest::header::CONTENT_LENGTH, len)
                        .header(
                            reqwest::header::CONTENT_RANGE,
                            format!("{}-{}", offset, offset + len - 1),
                        )
                        .body(body))
                })
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(
                    resp,
                    access,
                    &format!("{}@{digest}", repo.repository_ref()),
                )
                .await);
            }
            location = self.location(&resp)?;
            offset += len;
            tracing::trace!(%digest, offset, size, "chunk uploaded");
        }
        Ok(location)
    }

    /// Uploads a manifest or index under `r`'s tag (or digest) and returns its digest.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let access = Access::push(r);
        let digest = Digest::sha256(bytes);
        if let Some(d) = &r.digest {
            if *d != digest {
                return Err(RegistryError::DigestMismatch {
                    expected: d.clone(),
                    actual: digest,
                });
            }
        }
        let target = r.tag.clone().unwrap_or_else(|| digest.to_string());
        let url = self.url(r, &format!("manifests/{target}"));
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .send(&r.registry, &access, |c| {
                Ok(c.put(&url)
                    .header(reqwest::header::CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &access, &r.to_string()).await);
        }
        Ok(digest)
    }
}
