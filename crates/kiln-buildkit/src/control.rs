//! `moby.buildkit.v1.Control`: the API buildctl and buildx call first.

use crate::daemon::{version, Daemon};
use crate::session::{tunnel, OpenSession};
use bollard_buildkit_proto::moby::buildkit::v1 as api;
use bollard_buildkit_proto::moby::buildkit::v1::control_server::Control;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Clone)]
pub struct ControlService(pub Arc<Daemon>);

fn metadata_all(req: &tonic::metadata::MetadataMap, key: &str) -> Vec<String> {
    req.get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

fn ts(secs: u64) -> Option<bollard_buildkit_proto::google::protobuf::Timestamp> {
    Some(bollard_buildkit_proto::google::protobuf::Timestamp {
        seconds: secs as i64,
        nanos: 0,
    })
}

/// A cache record as BuildKit clients show it (`buildctl du`, `buildx du`).
fn usage_record(r: kiln_engine::prune::UsageRecord) -> api::UsageRecord {
    api::UsageRecord {
        id: r
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(25)
            .collect(),
        size: r.size as i64,
        created_at: ts(r.last_used),
        last_used_at: ts(r.last_used),
        usage_count: 1,
        description: r.description,
        record_type: "regular".into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn disk_usage(
        &self,
        _request: Request<api::DiskUsageRequest>,
    ) -> Result<Response<api::DiskUsageResponse>, Status> {
        let records = self
            .0
            .engine
            .disk_usage()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(api::DiskUsageResponse {
            record: records.into_iter().map(usage_record).collect(),
        }))
    }

    type PruneStream = BoxStream<api::UsageRecord>;

    async fn prune(
        &self,
        request: Request<api::PruneRequest>,
    ) -> Result<Response<Self::PruneStream>, Status> {
        let req = request.into_inner();
        let keep = (req.reserved_space > 0).then_some(req.reserved_space as u64);
        let before = self.0.engine.disk_usage().unwrap_or_default();
        let report = self
            .0
            .engine
            .prune_exclusive(kiln_engine::prune::PruneOptions {
                all: req.all,
                keep_storage: keep,
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let after: std::collections::HashSet<String> = self
            .0
            .engine
            .disk_usage()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.id)
            .collect();
        tracing::info!(records = report.records, bytes = report.bytes, "pruned");
        let removed: Vec<Result<api::UsageRecord, Status>> = before
            .into_iter()
            .filter(|r| !after.contains(&r.id))
            .map(|r| Ok(usage_record(r)))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(removed))))
    }

    async fn solve(
        &self,
        request: Request<api::SolveRequest>,
    ) -> Result<Response<api::SolveResponse>, Status> {
        self.0.solve(request.into_inner()).await.map(Response::new)
    }

    type StatusStream = BoxStream<api::StatusResponse>;

    async fn status(
        &self,
        request: Request<api::StatusRequest>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let id = request.into_inner().r#ref;
        // Status may come before Solve: the build is created and filled in as it runs.
        let build = self.0.builds.get_or_create(&id);
        let (history, live) = build.subscribe();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for resp in history {
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = live else { return };
            loop {
                match live.recv().await {
                    Ok(resp) => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("status stream of {id} skipped {n} updates");
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SessionStream = BoxStream<api::BytesMessage>;

    async fn session(
        &self,
        request: Request<Streaming<api::BytesMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let md = request.metadata().clone();
        let first = |k: &str| metadata_all(&md, k).into_iter().next().unwrap_or_default();
        let id = first("x-docker-expose-session-uuid");
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "session without x-docker-expose-session-uuid",
            ));
        }
        let methods = metadata_all(&md, "x-docker-expose-session-grpc-method")
            .into_iter()
            .map(|m| m.to_ascii_lowercase())
            .collect();
        let (tx, rx) = mpsc::channel(64);
        let io = {
            let (sessions, id) = (self.0.sessions.clone(), id.clone());
            tunnel::pipe(request.into_inner(), tx, move || {
                tracing::debug!(session = %id, "session closed by the client");
                sessions.remove(&id);
            })
        };
        let channel = tokio::time::timeout(Duration::from_secs(10), tunnel::channel(io))
            .await
            .map_err(|_| Status::deadline_exceeded("session: client did not answer HTTP/2"))?
            .map_err(|e| Status::unavailable(format!("session: {e}")))?;
        let sessions = self.0.sessions.clone();
        sessions.add(OpenSession {
            id: id.clone(),
            name: first("x-docker-expose-session-name"),
            shared_key: first("x-docker-expose-session-sharedkey"),
            methods,
            channel,
            closed: Default::default(),
        });
        tracing::debug!(session = %id, "session opened");
        // When the client half-closes, the outgoing side ends too; forget the session then.
        let stream = SessionEnd {
            inner: ReceiverStream::new(rx),
            on_end: Some(Box::new(move || sessions.remove(&id))),
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_workers(
        &self,
        _request: Request<api::ListWorkersRequest>,
    ) -> Result<Response<api::ListWorkersResponse>, Status> {
        Ok(Response::new(api::ListWorkersResponse {
            record: vec![self.0.worker()],
        }))
    }

    async fn info(
        &self,
        _request: Request<api::InfoRequest>,
    ) -> Result<Response<api::InfoResponse>, Status> {
        Ok(Response::new(api::InfoResponse {
            buildkit_version: Some(version()),
        }))
    }

    type ListenBuildHistoryStream = BoxStream<api::BuildHistoryEvent>;

    async fn listen_build_history(
        &self,
        _request: Request<api::BuildHistoryRequest>,
    ) -> Result<Response<Self::ListenBuildHistoryStream>, Status> {
        Err(Status::unimplemented("build history is not kept by kiln"))
    }

    async fn update_build_history(
        &self,
        _request: Request<api::UpdateBuildHistoryRequest>,
    ) -> Result<Response<api::UpdateBuildHistoryResponse>, Status> {
        Err(Status::unimplemented("build history is not kept by kiln"))
    }
}

/// A stream that runs a callback when it ends or is dropped.
struct SessionEnd<S> {
    inner: S,
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl<S: Stream + Unpin> Stream for SessionEnd<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let r = Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = r {
            if let Some(f) = self.on_end.take() {
                f();
            }
        }
        r
    }
}

impl<S> Drop for SessionEnd<S> {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}
