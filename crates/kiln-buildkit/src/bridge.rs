//! `moby.buildkit.v1.frontend.LLBBridge`: what buildctl and buildx build through. Every call
//! names its build with the `buildkit-controlapi-buildid` header.

use crate::builds::{Build, Returned};
use crate::daemon::Daemon;
use bollard_buildkit_proto::moby::buildkit::v1::apicaps::ApiCap;
use bollard_buildkit_proto::moby::buildkit::v1::frontend as gw;
use bollard_buildkit_proto::moby::buildkit::v1::frontend::llb_bridge_server::LlbBridge;
use futures::Stream;
use kiln_engine::progress::ProgressSender;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
pub struct BridgeService(pub Arc<Daemon>);

/// Gateway API capabilities we implement. Clients fall back to legacy paths for anything else.
const FRONTEND_CAPS: &[&str] = &["solve.base", "return", "returnmap", "proto.refarray"];

/// LLB features the engine executes.
const LLB_CAPS: &[&str] = &[
    "source.image",
    "source.image.resolvemode",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.followpaths",
    "source.local.excludepatterns",
    "source.local.sharedkeyhint",
    "source.http",
    "source.http.checksum",
    "source.http.perm",
    "source.http.uidgid",
    "exec.meta.base",
    "exec.meta.proxyenv",
    "exec.meta.network",
    "exec.meta.security",
    "exec.meta.setsdefaultpath",
    "exec.mount.bind",
    "exec.mount.bind.readonly",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.tmpfs.size",
    "exec.mount.secret",
    "exec.secretenv",
    "exec.hostname",
    "file.base",
    "file.rm.allownotfound",
    "file.copy.includepatterns",
    "file.copy.includeexcludepatterns",
    "file.copy.modestring",
    "file.copy.requiredpaths",
    "file.rm.nolinks",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "mergeop",
    "diffop",
    "exporter.multiple",
];

fn caps(ids: &[&str]) -> Vec<ApiCap> {
    ids.iter()
        .map(|id| ApiCap {
            id: id.to_string(),
            enabled: true,
            ..ApiCap::default()
        })
        .collect()
}

impl BridgeService {
    async fn build<T>(&self, req: &Request<T>) -> Result<Arc<Build>, Status> {
        let id = req
            .metadata()
            .get("buildkit-controlapi-buildid")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::invalid_argument("no buildid found in context"))?
            .to_string();
        // LLBBridge calls may beat the Control/Solve that registers the build.
        self.0
            .builds
            .wait_for(&id, Duration::from_secs(3))
            .await
            .ok_or_else(|| Status::not_found(format!("no such build {id}")))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not supported by kiln"
    )))
}

#[tonic::async_trait]
impl LlbBridge for BridgeService {
    async fn resolve_image_config(
        &self,
        _r: Request<gw::ResolveImageConfigRequest>,
    ) -> Result<Response<gw::ResolveImageConfigResponse>, Status> {
        unimplemented("ResolveImageConfig")
    }

    async fn resolve_source_meta(
        &self,
        _r: Request<gw::ResolveSourceMetaRequest>,
    ) -> Result<Response<gw::ResolveSourceMetaResponse>, Status> {
        unimplemented("ResolveSourceMeta")
    }

    async fn solve(
        &self,
        request: Request<gw::SolveRequest>,
    ) -> Result<Response<gw::SolveResponse>, Status> {
        let build = self.build(&request).await?;
        let req = request.into_inner();
        tracing::debug!(build = %build.id, frontend = %req.frontend, definition = req.definition.is_some(), "gateway solve");
        let session_id = build
            .session
            .lock()
            .expect("session")
            .clone()
            .unwrap_or_default();
        let session = self.0.session(&session_id).await;
        let b2 = build.clone();
        let progress = ProgressSender::from_fn(move |ev| b2.progress(&ev));
        // Stops with the build (its client went away) or when this call is dropped.
        let cancel = build.cancel.child_token();
        let _stop = cancel.clone().drop_guard();
        // Options of the Control request, overridden by the gateway request's own.
        let mut attrs = build.attrs.lock().expect("attrs").clone();
        attrs.extend(req.frontend_opt.clone());
        // The solve runs in its own task: if this call is dropped (the client went away), the
        // cancellation above stops the build through its normal path (steps killed, mounts
        // released) instead of the build being dropped halfway.
        let (daemon, build2, frontend, definition) = (
            self.0.clone(),
            build.clone(),
            req.frontend.clone(),
            req.definition.clone(),
        );
        let task = tokio::spawn(async move {
            daemon
                .frontend_solve(
                    &build2,
                    crate::daemon::FrontendRequest {
                        frontend: &frontend,
                        attrs: &attrs,
                        definition,
                    },
                    session,
                    &progress,
                    cancel,
                )
                .await
        });
        let result = task
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("the solve task failed: {e}"))));
        let solved = result?;
        let mut metadata = std::collections::HashMap::new();
        let modern = req.allow_result_array_ref || req.allow_result_return;
        let result = if solved.multi {
            // As BuildKit's Dockerfile frontend answers a multi-platform build: a ref and a
            // config per platform, and the list of platforms for the exporter.
            let platforms: Vec<serde_json::Value> = solved
                .refs
                .iter()
                .map(|r| {
                    let mut parts = r.platform.split('/');
                    let mut platform = serde_json::json!({
                        "os": parts.next(),
                        "architecture": parts.next(),
                    });
                    if let Some(v) = parts.next() {
                        platform["variant"] = serde_json::json!(v);
                    }
                    serde_json::json!({ "ID": r.platform, "Platform": platform })
                })
                .collect();
            metadata.insert(
                "refs.platforms".to_string(),
                serde_json::to_vec(&serde_json::json!({ "Platforms": platforms })).expect("json"),
            );
            for r in &solved.refs {
                if let Some(c) = &r.config {
                    metadata.insert(format!("containerimage.config/{}", r.platform), c.clone());
                }
            }
            if modern {
                gw::result::Result::Refs(gw::RefMap {
                    refs: solved
                        .refs
                        .iter()
                        .map(|r| {
                            let id = gw::Ref {
                                id: r.id.clone(),
                                def: None,
                            };
                            (r.platform.clone(), id)
                        })
                        .collect(),
                })
            } else {
                gw::result::Result::RefsDeprecated(gw::RefMapDeprecated {
                    refs: solved.ref_ids().into_iter().collect(),
                })
            }
        } else {
            let first = solved.refs.into_iter().next();
            if let Some(c) = first.as_ref().and_then(|r| r.config.clone()) {
                metadata.insert("containerimage.config".to_string(), c);
            }
            let id = first.map(|r| r.id).unwrap_or_default();
            if modern {
                gw::result::Result::Ref(gw::Ref { id, def: None })
            } else {
                gw::result::Result::RefDeprecated(id)
            }
        };
        Ok(Response::new(gw::SolveResponse {
            r#ref: String::new(),
            result: Some(gw::Result {
                result: Some(result),
                metadata,
                attestations: Default::default(),
            }),
        }))
    }

    async fn read_file(
        &self,
        _r: Request<gw::ReadFileRequest>,
    ) -> Result<Response<gw::ReadFileResponse>, Status> {
        unimplemented("ReadFile")
    }

    async fn read_dir(
        &self,
        _r: Request<gw::ReadDirRequest>,
    ) -> Result<Response<gw::ReadDirResponse>, Status> {
        unimplemented("ReadDir")
    }

    async fn stat_file(
        &self,
        _r: Request<gw::StatFileRequest>,
    ) -> Result<Response<gw::StatFileResponse>, Status> {
        unimplemented("StatFile")
    }

    async fn evaluate(
        &self,
        _r: Request<gw::EvaluateRequest>,
    ) -> Result<Response<gw::EvaluateResponse>, Status> {
        unimplemented("Evaluate")
    }

    async fn ping(
        &self,
        _r: Request<gw::PingRequest>,
    ) -> Result<Response<gw::PongResponse>, Status> {
        Ok(Response::new(gw::PongResponse {
            frontend_api_caps: caps(FRONTEND_CAPS),
            llb_caps: caps(LLB_CAPS),
            workers: vec![self.0.worker()],
        }))
    }

    async fn r#return(
        &self,
        request: Request<gw::ReturnRequest>,
    ) -> Result<Response<gw::ReturnResponse>, Status> {
        let build = self.build(&request).await?;
        let req = request.into_inner();
        let returned = match (req.error, req.result) {
            (Some(e), _) if e.code != 0 => Returned::Error {
                code: e.code,
                message: e.message,
            },
            (_, Some(result)) => match result.result {
                Some(gw::result::Result::Ref(r)) => Returned::Ref(r.id),
                Some(gw::result::Result::RefDeprecated(id)) => Returned::Ref(id),
                Some(gw::result::Result::Refs(m)) => Returned::Refs(by_platform(
                    &result.metadata,
                    m.refs.into_iter().map(|(p, r)| (p, r.id)),
                )),
                Some(gw::result::Result::RefsDeprecated(m)) => {
                    Returned::Refs(by_platform(&result.metadata, m.refs.into_iter()))
                }
                None => Returned::Ref(String::new()),
            },
            _ => Returned::Ref(String::new()),
        };
        tracing::debug!(build = %build.id, ?returned, "gateway return");
        build.deliver_return(returned);
        Ok(Response::new(gw::ReturnResponse {}))
    }

    async fn inputs(
        &self,
        _r: Request<gw::InputsRequest>,
    ) -> Result<Response<gw::InputsResponse>, Status> {
        Ok(Response::new(gw::InputsResponse::default()))
    }

    async fn new_container(
        &self,
        _r: Request<gw::NewContainerRequest>,
    ) -> Result<Response<gw::NewContainerResponse>, Status> {
        unimplemented("NewContainer")
    }

    async fn release_container(
        &self,
        _r: Request<gw::ReleaseContainerRequest>,
    ) -> Result<Response<gw::ReleaseContainerResponse>, Status> {
        unimplemented("ReleaseContainer")
    }

    type ExecProcessStream = BoxStream<gw::ExecMessage>;

    async fn exec_process(
        &self,
        _r: Request<Streaming<gw::ExecMessage>>,
    ) -> Result<Response<Self::ExecProcessStream>, Status> {
        unimplemented("ExecProcess")
    }

    async fn read_file_container(
        &self,
        _r: Request<gw::ReadFileRequest>,
    ) -> Result<Response<gw::ReadFileResponse>, Status> {
        unimplemented("ReadFileContainer")
    }

    async fn read_dir_container(
        &self,
        _r: Request<gw::ReadDirRequest>,
    ) -> Result<Response<gw::ReadDirResponse>, Status> {
        unimplemented("ReadDirContainer")
    }

    async fn stat_file_container(
        &self,
        _r: Request<gw::StatFileRequest>,
    ) -> Result<Response<gw::StatFileResponse>, Status> {
        unimplemented("StatFileContainer")
    }

    async fn warn(
        &self,
        _r: Request<gw::WarnRequest>,
    ) -> Result<Response<gw::WarnResponse>, Status> {
        Ok(Response::new(gw::WarnResponse {}))
    }
}

/// The refs of a multi-platform result in the order of its `refs.platforms` list (the order the
/// platforms were asked for), any others after them by name.
fn by_platform(
    metadata: &std::collections::HashMap<String, Vec<u8>>,
    refs: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let order: Vec<String> = metadata
        .get("refs.platforms")
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .and_then(|v| {
            v["Platforms"].as_array().map(|a| {
                a.iter()
                    .filter_map(|p| p["ID"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut refs: Vec<(String, String)> = refs.collect();
    refs.sort_by_key(|(p, _)| {
        (
            order.iter().position(|o| o == p).unwrap_or(usize::MAX),
            p.clone(),
        )
    });
    refs
}
