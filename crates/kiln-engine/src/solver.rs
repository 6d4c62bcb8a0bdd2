//! The solver: walks an LLB graph, solving independent vertices concurrently, each at most
//! once per solve. A vertex's cache key is the digest of its op (with input identities
//! removed) and its inputs' keys — or, for files copied from a local source, the checksum of
//! just the copied content. A key already in the cache reuses its snapshot and runs nothing.

use crate::cache::{now, CacheRecord};
use crate::llb::{Graph, Vertex};
use crate::ops;
use crate::progress::ProgressSender;
use crate::session::Session;
use crate::snapshot::Chain;
use crate::source::local::LocalSnapshot;
use crate::EngineInner;
use bollard_buildkit_proto::pb;
use futures::future::{BoxFuture, FutureExt, Shared};
use kiln_oci::registry::{RegistryClient, ResolvedImage};
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A solve failure, already worded for the user. Cloneable because a failed vertex is
/// reported to every vertex that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SolveError {
    pub message: String,
    pub canceled: bool,
    /// Digest of the vertex that failed, when known.
    pub vertex: Option<String>,
}

impl SolveError {
    pub fn msg(message: impl Into<String>) -> SolveError {
        SolveError {
            message: message.into(),
            canceled: false,
            vertex: None,
        }
    }

    pub fn canceled() -> SolveError {
        SolveError {
            message: "context canceled".into(),
            canceled: true,
            vertex: None,
        }
    }

    pub fn io(context: &'static str) -> impl Fn(std::io::Error) -> SolveError {
        move |e| SolveError::msg(format!("{context}: {e}"))
    }
}

/// What a vertex produced.
#[derive(Debug)]
pub struct VertexResult {
    pub key: String,
    pub outputs: Vec<Chain>,
    /// For local sources: the scanned directory, used for content-based COPY keys.
    pub local: Option<Arc<LocalSnapshot>>,
}

impl VertexResult {
    pub fn output(&self, index: i64) -> Result<&Chain, SolveError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.outputs.get(i))
            .ok_or_else(|| SolveError::msg(format!("invalid output index {index}")))
    }
}

type SharedResult = Shared<BoxFuture<'static, Result<Arc<VertexResult>, SolveError>>>;

/// Abandons a solve's unfinished work when dropped (see [`SolveCtx::abandon`]).
pub(crate) struct AbandonOnDrop(pub Option<Arc<SolveCtx>>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(ctx) = self.0.take() {
            ctx.abandon();
        }
    }
}

/// State of one solve.
pub struct SolveCtx {
    pub engine: Arc<EngineInner>,
    pub session: Arc<dyn Session>,
    pub progress: ProgressSender,
    pub cancel: CancellationToken,
    pub registry: RegistryClient,
    pub graph: Graph,
    pub no_cache: bool,
    pub(crate) imports: Vec<Arc<crate::remote_cache::ImportedCache>>,
    memo: Mutex<HashMap<String, SharedResult>>,
    resolved: tokio::sync::Mutex<HashMap<String, Arc<ResolvedImage>>>,
}

impl SolveCtx {
    pub fn new(
        engine: Arc<EngineInner>,
        session: Arc<dyn Session>,
        progress: ProgressSender,
        cancel: CancellationToken,
        registry: RegistryClient,
        graph: Graph,
        opts: crate::SolveOptions,
    ) -> Arc<SolveCtx> {
        Arc::new(SolveCtx {
            engine,
            session,
            progress,
            cancel,
            registry,
            graph,
            no_cache: opts.no_cache,
            imports: opts.cache_imports,
            memo: Mutex::new(HashMap::new()),
            resolved: tokio::sync::Mutex::new(opts.resolved),
        })
    }

    /// Solve the graph's root. `None` means the definition evaluates to scratch.
    pub async fn solve_root(self: &Arc<Self>) -> Result<Option<Chain>, SolveError> {
        let Some(root) = self.graph.root.clone() else {
            return Ok(None);
        };
        let res = self.solve(root.digest.clone()).await?;
        Ok(Some(res.output(root.index)?.clone()))
    }

    /// Forget every memoized vertex. Unfinished ones are dropped, which breaks the cycle between
    /// them and this context.
    pub fn abandon(&self) {
        let memo = std::mem::take(&mut *self.memo.lock().expect("memo lock"));
        drop(memo);
    }

    /// The vertices this solve finished successfully, with their results.
    pub fn finished(&self) -> Vec<(Vertex, Arc<VertexResult>)> {
        let memo = self.memo.lock().expect("memo lock");
        memo.iter()
            .filter_map(|(digest, fut)| match fut.peek() {
                Some(Ok(r)) => Some((self.graph.vertices.get(digest)?.clone(), r.clone())),
                _ => None,
            })
            .collect()
    }

    /// Solve one vertex (memoized: concurrent callers share the same work).
    pub fn solve(self: &Arc<Self>, digest: String) -> SharedResult {
        let mut memo = self.memo.lock().expect("memo lock");
        if let Some(f) = memo.get(&digest) {
            return f.clone();
        }
        let ctx = self.clone();
        let d = digest.clone();
        let fut = async move { ctx.solve_vertex(d).await }.boxed().shared();
        memo.insert(digest, fut.clone());
        fut
    }

    async fn solve_vertex(
        self: Arc<Self>,
        digest: String,
    ) -> Result<Arc<VertexResult>, SolveError> {
        let vertex = self
            .graph
            .vertices
            .get(&digest)
            .cloned()
            .ok_or_else(|| SolveError::msg(format!("unknown vertex {digest}")))?;
        let input_futs: Vec<_> = vertex
            .op
            .inputs
            .iter()
            .map(|i| self.solve(i.digest.clone()))
            .collect();
        let inputs = futures::future::try_join_all(input_futs).await?;
        if self.cancel.is_cancelled() {
            return Err(SolveError::canceled());
        }
        self.progress.started(
            &digest,
            &vertex.name(),
            vertex.op.inputs.iter().map(|i| i.digest.clone()).collect(),
        );
        let result = match &vertex.op.op {
            Some(pb::op::Op::Source(src)) => crate::source::solve(&self, &vertex, src).await,
            Some(pb::op::Op::Exec(exec)) => ops::exec::solve(&self, &vertex, exec, &inputs).await,
            Some(pb::op::Op::File(file)) => ops::file::solve(&self, &vertex, file, &inputs).await,
            Some(pb::op::Op::Merge(merge)) => ops::merge(&self, &vertex, merge, &inputs),
            Some(pb::op::Op::Diff(diff)) => ops::diff(&self, &vertex, diff, &inputs),
            Some(pb::op::Op::Build(_)) => Err(SolveError::msg("BuildOp is not supported")),
            None => Err(SolveError::msg("empty op")),
        };
        match result {
            Ok(r) => {
                self.progress.completed(&digest, None);
                Ok(Arc::new(r))
            }
            Err(mut e) => {
                let shown = if e.canceled {
                    "context canceled".to_string()
                } else {
                    e.message.clone()
                };
                self.progress.completed(&digest, Some(shown));
                if e.vertex.is_none() {
                    e.vertex = Some(digest);
                }
                Err(e)
            }
        }
    }

    /// The key of `vertex` from its op and the given per-input parts.
    pub fn key(&self, vertex: &Vertex, input_parts: &[String]) -> String {
        let mut op = vertex.op.clone();
        for input in op.inputs.iter_mut() {
            input.digest.clear();
        }
        let mut h = Sha256::new();
        h.update(b"kiln-cache-v1\0");
        h.update(op.encode_to_vec());
        for part in input_parts {
            h.update([0]);
            h.update(part.as_bytes());
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// The default key part of an input: its key and output index.
    pub fn input_part(input: &pb::Input, result: &VertexResult) -> String {
        format!("{}#{}", result.key, input.index)
    }

    /// The cached result for `key` (reported as cached), unless the cache is to be ignored or
    /// the record is missing or names a layer that no longer exists.
    pub fn cached(&self, vertex: &Vertex, key: &str) -> Result<Option<VertexResult>, SolveError> {
        if self.no_cache || vertex.ignore_cache() {
            return Ok(None);
        }
        let rec = self
            .engine
            .cache
            .result(key)
            .map_err(|e| SolveError::msg(e.to_string()))?;
        let Some(rec) = rec else { return Ok(None) };
        let complete = rec
            .outputs
            .iter()
            .all(|c| c.layers().iter().all(|l| self.layer_available(l)));
        if !complete {
            return Ok(None);
        }
        let _ = self.engine.cache.touch(key);
        self.progress.cached(&vertex.digest);
        Ok(Some(VertexResult {
            key: key.to_string(),
            outputs: rec.outputs,
            local: None,
        }))
    }

    pub fn record(&self, vertex: &Vertex, key: &str, outputs: &[Chain]) -> Result<(), SolveError> {
        let t = now();
        self.engine
            .cache
            .put_result(
                key,
                &CacheRecord {
                    outputs: outputs.to_vec(),
                    description: vertex.name(),
                    created: t,
                    last_used: t,
                },
            )
            .map_err(|e| SolveError::msg(e.to_string()))
    }

    /// Resolve an image reference once per solve.
    pub async fn resolve_image(
        &self,
        reference: &kiln_oci::reference::Reference,
        platform: &kiln_oci::platform::Platform,
    ) -> Result<Arc<ResolvedImage>, SolveError> {
        let key = resolve_key(reference, platform);
        let mut resolved = self.resolved.lock().await;
        if let Some(r) = resolved.get(&key) {
            return Ok(r.clone());
        }
        let img = self
            .registry
            .resolve(reference, platform)
            .await
            .map_err(|e| SolveError::msg(e.to_string()))?;
        let img = Arc::new(img);
        resolved.insert(key, img.clone());
        Ok(img)
    }
}

/// How resolved images are keyed within a solve.
pub fn resolve_key(
    reference: &kiln_oci::reference::Reference,
    platform: &kiln_oci::platform::Platform,
) -> String {
    format!("{reference}|{platform}")
}
