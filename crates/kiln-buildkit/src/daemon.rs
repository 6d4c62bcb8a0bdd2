//! The daemon's shared state and the solve pipeline behind `Control/Solve` and
//! `LLBBridge/Solve`: pick the frontend, solve, export.

use crate::builds::{Build, Builds, GatewayResult, Returned};
use crate::session::content::SessionContentStore;
use crate::session::OpenSession;
use crate::session::{ClientSession, SessionManager};
use bollard_buildkit_proto::moby::buildkit::v1 as api;
use bollard_buildkit_proto::moby::buildkit::v1::types::{BuildkitVersion, WorkerRecord};
use bollard_buildkit_proto::pb;
use kiln_engine::exporter::PlatformResult;
use kiln_engine::progress::ProgressSender;
use kiln_engine::session::{Session, SessionError};
use kiln_engine::{Engine, SolveOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Everything the gRPC services share.
pub struct Daemon {
    pub engine: Engine,
    pub sessions: Arc<SessionManager>,
    pub builds: Arc<Builds>,
    pub worker_id: String,
    /// Where client locals are synced to (kept between builds for incremental transfers).
    pub sync_root: PathBuf,
    /// The image store behind kiln's Docker API, for the `moby` exporter (`docker buildx` with
    /// the docker driver loads images there).
    pub local_images: Option<Arc<dyn LocalImages>>,
}

/// A local image store (`docker images`) that built images can be added to.
pub trait LocalImages: Send + Sync {
    /// Record `image` under `names` (none: untagged).
    fn store(
        &self,
        image: &kiln_engine::exporter::BuiltImage,
        names: &[String],
    ) -> Result<(), String>;
}

/// What to solve: a frontend with its attributes, or raw LLB.
pub struct FrontendRequest<'a> {
    pub frontend: &'a str,
    pub attrs: &'a HashMap<String, String>,
    pub definition: Option<pb::Definition>,
}

/// A result handed out by [`Daemon::frontend_solve`].
pub struct FrontendRef {
    /// `linux/amd64`: the key of the result in a multi-platform build.
    pub platform: String,
    pub id: String,
    pub config: Option<Vec<u8>>,
}

/// What [`Daemon::frontend_solve`] handed out.
pub struct FrontendSolved {
    /// Several platforms (or `multi-platform`) were asked for.
    pub multi: bool,
    pub refs: Vec<FrontendRef>,
}

impl FrontendSolved {
    pub fn ref_ids(&self) -> Vec<(String, String)> {
        self.refs
            .iter()
            .map(|r| (r.platform.clone(), r.id.clone()))
            .collect()
    }
}

/// A session for requests that name none: every call fails clearly.
struct NoSession;

#[async_trait::async_trait]
impl Session for NoSession {
    async fn local_dir(
        &self,
        name: &str,
        _: &[String],
        _: &[String],
        _: Option<kiln_engine::session::TransferProgress>,
    ) -> Result<PathBuf, SessionError> {
        Err(SessionError::NoSuchLocal(name.to_string()))
    }
    async fn secret(&self, id: &str) -> Result<Vec<u8>, SessionError> {
        Err(SessionError::NoSuchSecret(id.to_string()))
    }
    async fn credentials(&self, _: &str) -> Option<kiln_oci::Credentials> {
        None
    }
}

/// Map an engine failure to a gRPC status carrying its message.
pub fn solve_status(e: kiln_engine::Error) -> Status {
    if e.canceled {
        Status::cancelled(e.message)
    } else {
        Status::unknown(e.message)
    }
}

impl Daemon {
    pub fn new(engine: Engine) -> Daemon {
        let root = engine.inner().root.clone();
        let worker_id = worker_id(&root);
        Daemon {
            engine,
            sessions: Arc::new(SessionManager::default()),
            builds: Arc::new(Builds::default()),
            worker_id,
            sync_root: root.join("sessions"),
            local_images: None,
        }
    }

    pub fn worker(&self) -> WorkerRecord {
        let mut labels = HashMap::new();
        let l = |k: &str| format!("org.mobyproject.buildkit.worker.{k}");
        labels.insert(l("executor"), "oci".to_string());
        labels.insert(
            l("snapshotter"),
            match self.engine.inner().layers.snapshotter() {
                kiln_engine::snapshot::Snapshotter::Overlay => "overlayfs",
                kiln_engine::snapshot::Snapshotter::Native => "native",
            }
            .to_string(),
        );
        labels.insert(l("network"), "host".to_string());
        labels.insert(l("oci.process-mode"), "sandbox".to_string());
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            labels.insert(l("hostname"), h.trim().to_string());
        }
        WorkerRecord {
            id: self.worker_id.clone(),
            labels,
            platforms: kiln_engine::executor::runnable_platforms()
                .into_iter()
                .map(|p| pb::Platform {
                    architecture: p.architecture,
                    os: p.os,
                    variant: p.variant.unwrap_or_default(),
                    ..pb::Platform::default()
                })
                .collect(),
            gc_policy: vec![],
            buildkit_version: Some(version()),
            cdi_devices: vec![],
        }
    }

    /// The engine session for a request's session id (waiting briefly for it to connect).
    pub async fn session(&self, id: &str) -> Arc<dyn Session> {
        if id.is_empty() {
            return Arc::new(NoSession);
        }
        match self.sessions.get(id, Duration::from_secs(5)).await {
            Some(open) => Arc::new(ClientSession::new(
                open,
                self.sessions.clone(),
                self.sync_root.clone(),
            )),
            None => Arc::new(NoSession),
        }
    }

    /// Run a frontend (or raw LLB) for a build: one solve per target platform, run at once.
    /// Each platform's result stays with the build under its own ref id.
    pub async fn frontend_solve(
        &self,
        build: &Arc<Build>,
        request: FrontendRequest<'_>,
        session: Arc<dyn Session>,
        progress: &ProgressSender,
        cancel: CancellationToken,
    ) -> Result<FrontendSolved, Status> {
        let FrontendRequest {
            frontend,
            attrs,
            definition,
        } = request;
        match (frontend, &definition) {
            ("", Some(def)) if !def.def.is_empty() => {}
            ("dockerfile.v0", _) => {}
            ("gateway.v0", _) => {
                let source = attrs.get("source").cloned().unwrap_or_default();
                if !crate::attrs::is_dockerfile_frontend_image(&source) {
                    return Err(Status::invalid_argument(format!(
                        "custom frontends are not supported: gateway.v0 with source {source:?} \
                         (kiln has the Dockerfile frontend built in)"
                    )));
                }
                progress.warn(
                    None,
                    format!("using kiln's built-in Dockerfile frontend for {source}"),
                );
            }
            ("", _) => return Err(Status::invalid_argument("no frontend and no definition")),
            (other, _) => {
                return Err(Status::invalid_argument(format!(
                    "invalid frontend: {other}"
                )))
            }
        }
        let cache_imports = build
            .cache_imports
            .get_or_init(|| async {
                let mut plan = build.cache_plan.lock().expect("cache plan").clone();
                let session_id = build.session.lock().expect("session").clone();
                let open = match session_id.filter(|id| !id.is_empty()) {
                    Some(id) => self.sessions.get(&id, Duration::ZERO).await,
                    None => None,
                };
                client_side_caches(&mut plan, open.as_ref());
                let insecure = plan
                    .insecure_refs
                    .iter()
                    .filter_map(|r| self.engine.client_insecure_warning(r));
                for w in plan.warnings.iter().cloned().chain(insecure) {
                    progress.warn(None, w);
                }
                self.engine
                    .import_caches(&plan.imports, session.clone(), progress)
                    .await
            })
            .await
            .clone();
        let opts = SolveOptions {
            no_cache: attrs.contains_key("no-cache"),
            resolved: HashMap::new(),
            cache_imports,
        };
        let (results, multi) = match definition.filter(|d| !d.def.is_empty()) {
            Some(def) if frontend.is_empty() => {
                let solved = self
                    .engine
                    .solve(&def, opts, session, progress.clone(), cancel)
                    .await
                    .map_err(solve_status)?;
                let result = PlatformResult {
                    platform: kiln_oci::Platform::host(),
                    solved,
                    config: None,
                };
                (vec![result], false)
            }
            // The Dockerfile frontend, once per target platform. The session travels with the
            // solve itself; the LLB needs no `local.session` attribute.
            _ => {
                let req = crate::attrs::dockerfile_request(attrs, "")
                    .map_err(Status::invalid_argument)?;
                let (platforms, multi) =
                    crate::attrs::target_platforms(attrs, &req.options.build_platform)
                        .map_err(Status::invalid_argument)?;
                let results = self
                    .engine
                    .solve_dockerfile(&req, &platforms, opts, session, progress, cancel)
                    .await
                    .map_err(|f| solve_status(f.error))?;
                (results, multi)
            }
        };
        let mut refs = Vec::new();
        let mut stored = build.results.lock().expect("results");
        for r in results {
            let id = uuid::Uuid::new_v4().simple().to_string();
            refs.push(FrontendRef {
                platform: kiln_engine::exporter::platform_id(&r.platform),
                id: id.clone(),
                config: r.config.clone(),
            });
            stored.insert(
                id,
                Arc::new(GatewayResult {
                    platforms: vec![r],
                    multi: false,
                }),
            );
        }
        Ok(FrontendSolved { multi, refs })
    }

    /// The build result made of results handed out before: one ref, or one per platform.
    pub fn result_of(
        build: &Build,
        refs: &[(String, String)],
        multi: bool,
    ) -> Result<Arc<GatewayResult>, Status> {
        let stored = build.results.lock().expect("results");
        let mut platforms = Vec::new();
        for (_, id) in refs {
            let r = stored
                .get(id)
                .ok_or_else(|| Status::not_found(format!("no result {id} in build")))?;
            platforms.extend(r.platforms.iter().cloned());
        }
        Ok(Arc::new(GatewayResult { platforms, multi }))
    }

    /// `Control/Solve`: the whole build, including waiting for a gateway client's `Return`.
    pub async fn solve(
        self: &Arc<Self>,
        req: api::SolveRequest,
    ) -> Result<api::SolveResponse, Status> {
        let cache_plan = cache_plan(&req)?;
        let build = self.builds.register(
            &req.r#ref,
            req.session.clone(),
            req.frontend_attrs.clone(),
            cache_plan,
        );
        let b2 = build.clone();
        let progress = ProgressSender::from_fn(move |ev| b2.progress(&ev));
        // Fired when this future is dropped, i.e. when the client cancels the call or goes away.
        // The build itself runs in its own task, so it sees the cancellation and stops its
        // processes and cleans up, instead of being dropped mid-step.
        let cancel = build.cancel.clone();
        let _stop = cancel.clone().drop_guard();
        // A client that goes away takes its session with it: that stops the build too.
        let watcher = {
            let (cancel, this, id) = (cancel.clone(), self.clone(), req.session.clone());
            tokio::spawn(async move {
                if id.is_empty() {
                    return;
                }
                if let Some(session) = this.sessions.get(&id, Duration::from_secs(30)).await {
                    session.closed.cancelled().await;
                    tracing::info!(session = %id, "client session closed; cancelling its build");
                    cancel.cancel();
                }
            })
        };
        let this = self.clone();
        let task = tokio::spawn(async move {
            // Held until the results are released: a collection must not take their layers.
            let lease = this.engine.lease().await;
            let result = this.solve_inner(&build, req, &progress, cancel).await;
            // Results hold the client session (and its locks on synced directories): release them.
            build.results.lock().expect("results").clear();
            drop(lease);
            build.finish();
            this.builds.retire(&build.id);
            if let Err(e) = &result {
                tracing::info!(build = %build.id, "build failed: {}", e.message());
            }
            result
        });
        let result = task
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("the build task failed: {e}"))));
        watcher.abort();
        result
    }

    async fn solve_inner(
        &self,
        build: &Arc<Build>,
        req: api::SolveRequest,
        progress: &ProgressSender,
        cancel: CancellationToken,
    ) -> Result<api::SolveResponse, Status> {
        tracing::debug!(build = %build.id, session = %req.session, frontend = %req.frontend,
            definition = req.definition.is_some(), exporters = req.exporters.len(), "solve");
        let session = self.session(&req.session).await;
        let result: Option<Arc<GatewayResult>> = if req.frontend.is_empty()
            && req.definition.as_ref().is_none_or(|d| d.def.is_empty())
        {
            // The client builds through LLBBridge and tells us its result with Return.
            tracing::debug!(build = %build.id, "waiting for the client's result");
            match build.wait_return().await {
                Returned::Ref(id) if id.is_empty() => None,
                Returned::Ref(id) => Some(Self::result_of(build, &[(String::new(), id)], false)?),
                Returned::Refs(refs) if refs.is_empty() => None,
                Returned::Refs(refs) => Some(Self::result_of(build, &refs, true)?),
                Returned::Error { code, message } => {
                    return Err(Status::new(tonic::Code::from(code), message));
                }
            }
        } else {
            let solved = self
                .frontend_solve(
                    build,
                    FrontendRequest {
                        frontend: &req.frontend,
                        attrs: &req.frontend_attrs,
                        definition: req.definition.clone(),
                    },
                    session.clone(),
                    progress,
                    cancel,
                )
                .await?;
            Some(Self::result_of(build, &solved.ref_ids(), solved.multi)?)
        };
        let exporters = crate::export::requested(&req);
        tracing::debug!(build = %build.id, result = result.is_some(), "exporting");
        let mut response = HashMap::new();
        if let Some(result) = result {
            let open = self.sessions.get(&req.session, Duration::ZERO).await;
            let mut plan = build.cache_plan.lock().expect("cache plan").clone();
            client_side_caches(&mut plan, open.as_ref());
            response = crate::export::run(
                self,
                open.as_ref(),
                &result,
                &exporters,
                plan.inline,
                progress,
            )
            .await?;
            for export in &plan.exports {
                let descriptor = self
                    .engine
                    .export_cache(&result.solveds(), export, progress)
                    .await
                    .map_err(solve_status)?;
                // The client records a local cache's manifest in its index.json.
                if matches!(
                    export.target,
                    kiln_engine::remote_cache::CacheTarget::Store { .. }
                ) && !descriptor.is_null()
                {
                    response.insert("cache.manifest".into(), descriptor.to_string());
                }
            }
        } else if !exporters.is_empty() {
            tracing::debug!("build {} returned no result; nothing to export", build.id);
        }
        Ok(api::SolveResponse {
            exporter_response: response,
        })
    }
}

/// The cache options of a Solve (local caches are pointed at the client's side once its session
/// is known: see [`client_side_caches`]).
fn cache_plan(req: &api::SolveRequest) -> Result<kiln_engine::remote_cache::CachePlan, Status> {
    use kiln_engine::remote_cache::CachePlan;
    let Some(cache) = &req.cache else {
        return Ok(CachePlan::default());
    };
    let mut imports: Vec<(String, HashMap<String, String>)> = cache
        .imports
        .iter()
        .map(|e| (e.r#type.clone(), e.attrs.clone()))
        .collect();
    for r in &cache.import_refs_deprecated {
        imports.push((
            "registry".into(),
            HashMap::from([("ref".into(), r.clone())]),
        ));
    }
    let plan = CachePlan::from_entries(
        imports.iter().map(|(k, a)| (k.as_str(), a)),
        cache.exports.iter().map(|e| (e.r#type.as_str(), &e.attrs)),
    )
    .map_err(Status::invalid_argument)?;
    Ok(plan)
}

/// Local caches of a BuildKit client live in its own content stores (`local:DIR`), served on its
/// session: point the plan's local entries there.
fn client_side_caches(
    plan: &mut kiln_engine::remote_cache::CachePlan,
    session: Option<&OpenSession>,
) {
    use kiln_engine::remote_cache::{CacheSource, CacheTarget};
    let store = |dir: &std::path::Path, method: &str| {
        session.filter(|s| s.supports(method)).map(|s| {
            SessionContentStore::new(s.channel.clone(), format!("local:{}", dir.display()))
        })
    };
    let mut warnings = Vec::new();
    for source in plan.imports.iter_mut() {
        let CacheSource::Local { dir, digest, .. } = source else {
            continue;
        };
        match (store(dir, CONTENT_READ), digest.clone()) {
            (Some(s), Some(manifest)) => {
                *source = CacheSource::Store {
                    name: dir.display().to_string(),
                    store: Arc::new(s),
                    manifest,
                }
            }
            (None, _) => warnings.push(format!(
                "cache {}: the client does not serve its content store; importing without it",
                dir.display()
            )),
            (_, None) => warnings.push(format!(
                "cache {}: the client sent no manifest digest; importing without it",
                dir.display()
            )),
        }
    }
    plan.imports
        .retain(|s| !matches!(s, CacheSource::Local { .. }));
    for export in plan.exports.iter_mut() {
        let CacheTarget::Local { dir, .. } = &export.target else {
            continue;
        };
        match store(dir, CONTENT_WRITE) {
            Some(s) => {
                export.target = CacheTarget::Store {
                    name: dir.display().to_string(),
                    store: Arc::new(s),
                }
            }
            None => warnings.push(format!(
                "cache {}: the client does not serve its content store; the cache is not exported",
                dir.display()
            )),
        }
    }
    plan.exports
        .retain(|e| !matches!(e.target, CacheTarget::Local { .. }));
    plan.warnings.extend(warnings);
}

const CONTENT_READ: &str = "/containerd.services.content.v1.Content/Read";
const CONTENT_WRITE: &str = "/containerd.services.content.v1.Content/Write";

pub fn version() -> BuildkitVersion {
    BuildkitVersion {
        package: "github.com/kiln-ci/kiln".to_string(),
        version: VERSION.to_string(),
        revision: option_env!("KILN_GIT_REVISION").unwrap_or("").to_string(),
    }
}

/// A worker id that stays the same for a state directory.
fn worker_id(root: &std::path::Path) -> String {
    let path = root.join("worker-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..25].to_string();
    let _ = std::fs::write(&path, &id);
    id
}
