//! Pushing built images: blobs once per repository, then manifests and indexes.

use super::*;

/// How many pushed blobs (`host/repository@digest`, ~100 bytes each) the engine remembers.
const PUSHED_BLOBS_MAX: usize = 1 << 14;

/// Push `image` to `r`: layers, config, manifest (under `r`'s tag, or its digest when it has
/// no tag). Layers in `known` as pushed to this repository before are skipped.
async fn push_once(
    solved: &Solved,
    content: &kiln_oci::ContentStore,
    r: &Reference,
    image: &BuiltImage,
    known: &Mutex<HashSet<String>>,
    progress: &ProgressSender,
    vertex: &str,
) -> Result<(), SolveError> {
    let registry = solved.registry();
    let blobs: Vec<&BlobRecord> = image.layers.iter().map(|l| &l.blob).collect();
    let push = BlobPush {
        solved,
        content,
        known: Some(known),
        label: "pushing layer",
        progress,
        vertex,
    };
    push.all(r, &blobs).await?;
    registry
        .push_blob(r, &image.config_digest, content, None)
        .await
        .map_err(|e| SolveError::msg(e.to_string()))?;
    registry
        .push_manifest(r, &image.manifest, &image.manifest_media_type)
        .await
        .map_err(|e| SolveError::msg(e.to_string()))?;
    Ok(())
}

/// Push a single image, or an index after each platform's image by digest.
async fn push_built_once(
    solved: &Solved,
    content: &kiln_oci::ContentStore,
    r: &Reference,
    built: &Built,
    known: &Mutex<HashSet<String>>,
    progress: &ProgressSender,
    vertex: &str,
) -> Result<(), SolveError> {
    match built {
        Built::Image(image) => push_once(solved, content, r, image, known, progress, vertex).await,
        Built::Index(index) => {
            for (_, image) in &index.images {
                let by_digest = Reference {
                    tag: None,
                    digest: Some(image.manifest_digest.clone()),
                    ..r.clone()
                };
                push_once(solved, content, &by_digest, image, known, progress, vertex).await?;
            }
            solved
                .registry()
                .push_manifest(r, &index.index, &index.media_type)
                .await
                .map_err(|e| SolveError::msg(e.to_string()))?;
            Ok(())
        }
    }
}

/// Pushing layer blobs to a registry, each with a status `"{label} {digest}"`: an image's
/// layers, or an exported cache's.
pub(crate) struct BlobPush<'a> {
    /// The solve the blobs come from: its registry client, and its lazy layers' origins for
    /// blobs that must be uploaded but were never fetched.
    pub solved: &'a Solved,
    pub content: &'a kiln_oci::ContentStore,
    /// Blobs pushed before (`host/repository@digest`), skipped and recorded when given.
    pub known: Option<&'a Mutex<HashSet<String>>>,
    pub label: &'a str,
    pub progress: &'a ProgressSender,
    pub vertex: &'a str,
}

impl BlobPush<'_> {
    /// Push `blobs` to `r`, at most [`PUSH_CONCURRENCY`] at a time: most are a HEAD that
    /// finds the blob already there, round trips rather than bandwidth.
    pub async fn all(&self, r: &Reference, blobs: &[&BlobRecord]) -> Result<(), SolveError> {
        let pushes: Vec<_> = blobs.iter().map(|b| self.one(r, b)).collect();
        futures::stream::iter(pushes)
            .buffer_unordered(PUSH_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn one(&self, r: &Reference, blob: &BlobRecord) -> Result<(), SolveError> {
        let d = blob.blob_digest()?;
        let from = blob
            .source
            .as_deref()
            .and_then(|s| Reference::parse(s).ok());
        let id = format!("{} {d}", self.label);
        let key = format!("{}@{d}", r.repository_ref());
        let known = || self.known.map(|k| k.lock().expect("pushed blobs"));
        if !known().is_some_and(|k| k.contains(&key)) {
            self.progress
                .status(self.vertex, &id, 0, Some(blob.size), false);
            let registry = self.solved.registry();
            let pushed = registry.push_blob(r, &d, self.content, from.as_ref()).await;
            match pushed {
                Ok(()) => {}
                // A lazy layer's blob (never fetched): the registry neither had it nor could
                // mount it, so fetch it now and upload it.
                Err(_) if !self.content.has(&d) => {
                    self.solved.ensure_blobs(&[blob]).await?;
                    registry
                        .push_blob(r, &d, self.content, None)
                        .await
                        .map_err(|e| SolveError::msg(e.to_string()))?;
                }
                Err(e) => return Err(SolveError::msg(e.to_string())),
            }
            if let Some(mut k) = known() {
                // A long-running daemon pushes without end: past the bound, start over (the
                // next push of a forgotten blob costs one HEAD request).
                if k.len() >= PUSHED_BLOBS_MAX {
                    k.clear();
                }
                k.insert(key);
            }
        }
        self.progress
            .status(self.vertex, &id, blob.size, Some(blob.size), true);
        Ok(())
    }
}

/// Layers pushed at once (docker's default for uploads is 5).
pub const PUSH_CONCURRENCY: usize = 4;

impl Engine {
    /// Push a built image under each of `names`: layers (at most [`PUSH_CONCURRENCY`] at a
    /// time), then config and manifest; for an index, each platform's image by digest first,
    /// then the index. Blobs the registry has are skipped; blobs from a base image on the same
    /// registry are mounted across repositories.
    pub async fn push_built(
        &self,
        solved: &Solved,
        built: &Built,
        names: &[String],
        progress: &ProgressSender,
    ) -> Result<(), SolveError> {
        let inner = self.inner();
        for name in names {
            let vertex = format!("pushing {name}");
            progress.started(&vertex, &format!("pushing {name}"), vec![]);
            let result: Result<(), SolveError> = async {
                let r = Reference::parse(name).map_err(|e| err(name)(e.to_string()))?;
                // Blobs this engine pushed to the repository before are not checked again. If
                // the registry lost them meanwhile, the manifest is refused: then everything is
                // checked and pushed once more.
                let repo = format!("{}@", r.repository_ref());
                let known = &inner.pushed_blobs;
                let mut may_retry = known
                    .lock()
                    .expect("pushed blobs")
                    .iter()
                    .any(|k| k.starts_with(&repo));
                loop {
                    match push_built_once(
                        solved,
                        &inner.content,
                        &r,
                        built,
                        known,
                        progress,
                        &vertex,
                    )
                    .await
                    {
                        Ok(()) => break Ok(()),
                        Err(e) if may_retry => {
                            tracing::warn!(
                                "pushing {name} failed ({}); checking every blob and pushing again",
                                e.message
                            );
                            known
                                .lock()
                                .expect("pushed blobs")
                                .retain(|k| !k.starts_with(&repo));
                            may_retry = false;
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            .await;
            progress.completed(&vertex, result.as_ref().err().map(|e| e.message.clone()));
            result?;
        }
        Ok(())
    }
}
