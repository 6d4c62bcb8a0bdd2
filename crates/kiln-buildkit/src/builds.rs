//! Builds in flight, by the client's `Ref`: their progress history (for `Status` calls that come
//! late, or early), results of gateway solves awaiting `Return`, and the `Return` itself.

use crate::status::StatusBuilder;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;
use kiln_engine::exporter::PlatformResult;
use kiln_engine::progress::ProgressEvent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// What the client's build function returned through `LLBBridge/Return`.
#[derive(Debug)]
pub enum Returned {
    /// The id of a result we handed out (or empty: nothing to export).
    Ref(String),
    /// Results by platform id, from a multi-platform build.
    Refs(Vec<(String, String)>),
    Error {
        code: i32,
        message: String,
    },
}

/// A gateway-solved result kept until the build's export: one solve per platform.
pub struct GatewayResult {
    pub platforms: Vec<PlatformResult>,
    /// Several platforms were asked for: the image exporter makes an index.
    pub multi: bool,
}

impl GatewayResult {
    pub fn solveds(&self) -> Vec<&kiln_engine::Solved> {
        self.platforms.iter().map(|p| &p.solved).collect()
    }
}

pub struct Build {
    pub id: String,
    status: Mutex<StatusState>,
    pub results: Mutex<HashMap<String, Arc<GatewayResult>>>,
    /// The client's `Return`, which may come before `Control/Solve` waits for it.
    returned: Mutex<Option<Returned>>,
    return_arrived: Notify,
    /// The session the build's Solve named (gateway calls use it too).
    pub session: Mutex<Option<String>>,
    /// The Control request's frontend attributes (`no-cache` only travels there).
    pub attrs: Mutex<HashMap<String, String>>,
    /// Set once `Control/Solve` has registered the build (Status may create it earlier).
    solving: std::sync::atomic::AtomicBool,
    /// The Control request's cache options.
    pub cache_plan: Mutex<kiln_engine::remote_cache::CachePlan>,
    /// The imported caches, loaded by the build's first solve.
    pub cache_imports: tokio::sync::OnceCell<Vec<Arc<kiln_engine::remote_cache::ImportedCache>>>,
    /// Cancelled when the build must stop (its client went away or cancelled the Solve call);
    /// gateway solves of the build run under child tokens of it.
    pub cancel: tokio_util::sync::CancellationToken,
}

struct StatusState {
    history: Vec<StatusResponse>,
    builder: StatusBuilder,
    live: broadcast::Sender<StatusResponse>,
    done: bool,
}

impl Build {
    /// Record a progress event, for replay and for live `Status` streams.
    pub fn progress(&self, event: &ProgressEvent) {
        let mut st = self.status.lock().expect("status");
        if st.done {
            return;
        }
        if let Some(resp) = st.builder.convert(event) {
            st.history.push(resp.clone());
            let _ = st.live.send(resp);
        }
    }

    /// Mark the build finished: open vertices are closed (canceled), status streams end.
    pub fn finish(&self) {
        let mut st = self.status.lock().expect("status");
        if st.done {
            return;
        }
        if let Some(resp) = st.builder.close_open() {
            st.history.push(resp.clone());
            let _ = st.live.send(resp);
        }
        st.done = true;
        // Dropping the sender ends every live subscriber after it drains.
        let (dead, _) = broadcast::channel(1);
        st.live = dead;
    }

    /// History so far plus a receiver of what follows (`None` when already finished).
    pub fn subscribe(
        &self,
    ) -> (
        Vec<StatusResponse>,
        Option<broadcast::Receiver<StatusResponse>>,
    ) {
        let st = self.status.lock().expect("status");
        let rx = (!st.done).then(|| st.live.subscribe());
        (st.history.clone(), rx)
    }

    /// Wait for the client's `Return` (its gateway build function finished).
    pub async fn wait_return(&self) -> Returned {
        loop {
            let arrived = self.return_arrived.notified();
            if let Some(r) = self.returned.lock().expect("returned").take() {
                return r;
            }
            arrived.await;
        }
    }

    pub fn deliver_return(&self, r: Returned) {
        *self.returned.lock().expect("returned") = Some(r);
        self.return_arrived.notify_waiters();
    }
}

/// All builds by ref.
#[derive(Default)]
pub struct Builds {
    builds: Mutex<HashMap<String, Arc<Build>>>,
    changed: Notify,
}

impl Builds {
    /// The build `id`, created if new (Status may come before Solve).
    pub fn get_or_create(&self, id: &str) -> Arc<Build> {
        let mut builds = self.builds.lock().expect("builds");
        let b = builds
            .entry(id.to_string())
            .or_insert_with(|| {
                let (live, _) = broadcast::channel(4096);
                Arc::new(Build {
                    id: id.to_string(),
                    status: Mutex::new(StatusState {
                        history: Vec::new(),
                        builder: StatusBuilder::default(),
                        live,
                        done: false,
                    }),
                    results: Mutex::new(HashMap::new()),
                    returned: Mutex::new(None),
                    return_arrived: Notify::new(),
                    session: Mutex::new(None),
                    attrs: Mutex::new(HashMap::new()),
                    solving: std::sync::atomic::AtomicBool::new(false),
                    cache_plan: Mutex::default(),
                    cache_imports: tokio::sync::OnceCell::new(),
                    cancel: Default::default(),
                })
            })
            .clone();
        drop(builds);
        self.changed.notify_waiters();
        b
    }

    /// Register the `Control/Solve` of build `id` with its session and attributes.
    pub fn register(
        &self,
        id: &str,
        session: String,
        attrs: HashMap<String, String>,
        cache_plan: kiln_engine::remote_cache::CachePlan,
    ) -> Arc<Build> {
        let build = self.get_or_create(id);
        *build.session.lock().expect("session") = Some(session);
        *build.attrs.lock().expect("attrs") = attrs;
        *build.cache_plan.lock().expect("cache plan") = cache_plan;
        build
            .solving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
        build
    }

    /// The build `id` once its Solve is registered, waiting up to `wait` for that.
    pub async fn wait_for(&self, id: &str, wait: Duration) -> Option<Arc<Build>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if let Some(b) = self.builds.lock().expect("builds").get(id) {
                if b.solving.load(std::sync::atomic::Ordering::SeqCst) {
                    return Some(b.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Forget a finished build after a grace period, so a late `Status` can still replay it.
    pub fn retire(self: &Arc<Self>, id: &str) {
        let builds = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            builds.builds.lock().expect("builds").remove(&id);
        });
    }
}
