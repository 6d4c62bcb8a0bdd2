//! A fake Gitea that speaks the runner protocol like the real server (§3, §10), for tests.
//!
//! It serves the six Connect RPCs on `127.0.0.1` and keeps runners, runs, jobs and tasks in
//! memory. Runs are created as Gitea 1.22–1.25 create them, by ports of Gitea's server code
//! (each names the Go function it mirrors):
//!
//! - `jobparser`: the workflow becomes one single-job workflow per job and matrix combination
//!   (`jobparser.Parse`); the payload a runner gets is that workflow with `needs:` erased,
//!   written like Go's yaml.v3 writes it (`InsertRun`).
//! - `runs`: jobs without needs start waiting, the others blocked (`InsertRun`); FetchTask
//!   claims the oldest waiting job whose labels the runner has (`CreateTaskForRunner`).
//! - `emitter`: when a job finishes, blocked jobs become waiting or skipped
//!   (`jobStatusResolver`).
//! - `context`: a task's `github` context, `needs` and secrets (`GenerateGiteaContext`,
//!   `FindTaskNeeds`, `GetSecretsOfTask`).
//!
//! Hooks queue runs, cancel jobs and runs, delete runners and inject faults.
//!
//! It also serves bare repositories over git's smart HTTP at `<url>/<owner>/<repo>[.git]`, as
//! Gitea does, private ones only to a running task's token (`git_http`,
//! [`FakeGitea::serve_repositories`]).
//!
//! ```no_run
//! # async fn demo() {
//! use kiln_gitea::fake::{FakeGitea, QueuedRun};
//! let gitea = FakeGitea::start().await;
//! let run = gitea.queue_run(QueuedRun::new(r#"
//! on: push
//! jobs:
//!   build:
//!     runs-on: ubuntu-latest
//!     steps:
//!       - run: echo hi
//!   test:
//!     needs: build
//!     runs-on: ubuntu-latest
//!     steps:
//!       - run: echo ok
//! "#));
//! // … run a runner against gitea.url() …
//! let jobs = gitea.wait_run(run, std::time::Duration::from_secs(60)).await;
//! # }
//! ```

#![warn(missing_docs)]

mod context;
mod emitter;
mod git_http;
mod http;
mod jobparser;
mod protojson;
mod runs;
mod state;
mod types;
mod yaml;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::proto;
use state::Db;

pub use git_http::GitRequest;
pub use types::{
    Fault, JobRecord, JobStatus, QueuedJob, QueuedRun, RunnerRecord, StepRecord, TaskRecord,
};

pub(crate) struct Shared {
    db: Mutex<Db>,
    fault: Mutex<Fault>,
    legacy_errors: Mutex<bool>,
    calls: Mutex<Vec<String>>,
    git: Mutex<git_http::GitState>,
}

impl Shared {
    fn db(&self) -> MutexGuard<'_, Db> {
        // A panicking test thread must not wedge the other assertions.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn git(&self) -> MutexGuard<'_, git_http::GitState> {
        self.git.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake server; shuts down on drop.
pub struct FakeGitea {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitea {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGitea {
    /// Starts serving on `127.0.0.1` at a free port.
    pub async fn start() -> FakeGitea {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Gitea on loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            db: Mutex::new(Db::new(url.clone())),
            fault: Mutex::new(Fault::None),
            legacy_errors: Mutex::new(false),
            calls: Mutex::new(Vec::new()),
            git: Mutex::new(Default::default()),
        });
        let app = http::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitea {
            url,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A valid instance-wide registration token (40 alphanumerics).
    pub fn registration_token(&self) -> String {
        self.shared.db().registration_token.clone()
    }

    /// The registered runners.
    pub fn runners(&self) -> Vec<RunnerRecord> {
        self.shared
            .db()
            .runners
            .iter()
            .map(|r| r.record.clone())
            .collect()
    }

    /// Creates a workflow run as Gitea does on an event (`PrepareRunAndInsert`): one job per
    /// YAML job and matrix combination; those without `needs:` start waiting (bumping the tasks
    /// version once), the others blocked. Returns the run id.
    ///
    /// Panics on a workflow Gitea would reject (it does not parse, a job is not a mapping, a
    /// typed field has the wrong type, a matrix `exclude` names an unknown key, …) and on
    /// secret names Gitea refuses: that is a broken test.
    pub fn queue_run(&self, run: QueuedRun) -> i64 {
        self.shared
            .db()
            .insert_run(run)
            .unwrap_or_else(|e| panic!("FakeGitea::queue_run: {e}"))
    }

    /// Queues `job.job_id`'s whole workflow as a run (every other job of it is queued too, as
    /// Gitea would) and returns the id of that job's first matrix combination.
    ///
    /// Panics like [`FakeGitea::queue_run`], or if the workflow has no job `job.job_id`.
    pub fn queue_job(&self, job: QueuedJob) -> i64 {
        let key = job.job_id.clone();
        let mut db = self.shared.db();
        let run = db
            .insert_run(job.into_run())
            .unwrap_or_else(|e| panic!("FakeGitea::queue_job: {e}"));
        db.run_jobs(run)
            .into_iter()
            .find(|j| j.job.key == key)
            .map(|j| j.job.id)
            .unwrap_or_else(|| panic!("FakeGitea::queue_job: the workflow has no job {key:?}"))
    }

    /// The jobs of a run, in creation order (document order, combinations sorted by name).
    pub fn run_jobs(&self, run_id: i64) -> Vec<JobRecord> {
        self.shared
            .db()
            .run_jobs(run_id)
            .into_iter()
            .map(|j| j.job.clone())
            .collect()
    }

    /// The ids of every job (matrix combination) of YAML job `key` in a run.
    pub fn job_ids(&self, run_id: i64, key: &str) -> Vec<i64> {
        self.shared
            .db()
            .run_jobs(run_id)
            .into_iter()
            .filter(|j| j.job.key == key)
            .map(|j| j.job.id)
            .collect()
    }

    /// A job's current record.
    pub fn job(&self, job_id: i64) -> Option<JobRecord> {
        self.shared.db().job(job_id).map(|j| j.job.clone())
    }

    /// Waits until every job of the run is done and every task's runner is done with it (as
    /// [`FakeGitea::wait_final`]). `None` on timeout.
    pub async fn wait_run(&self, run_id: i64, timeout: Duration) -> Option<Vec<JobRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let db = self.shared.db();
                let jobs = db.run_jobs(run_id);
                let settled = !jobs.is_empty()
                    && jobs.iter().all(|j| {
                        j.job.status.is_done()
                            && j.job.task_id.is_none_or(|t| {
                                db.tasks.get(&t).is_some_and(|t| {
                                    t.record.result != proto::Result::Unspecified
                                        && (t.runner_reported_final || t.record.archived)
                                })
                            })
                    });
                if settled {
                    return Some(jobs.into_iter().map(|j| j.job.clone()).collect());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Snapshot of the task created for a job, once a runner claimed it.
    pub fn task(&self, job_id: i64) -> Option<TaskRecord> {
        self.shared
            .db()
            .task_of_job(job_id)
            .map(|t| t.record.clone())
    }

    /// Waits until the job's task is final and the runner is done with it: it reported a final
    /// result itself or closed the log. A task cancelled by the server counts only once the
    /// runner has caught up. `None` on timeout.
    pub async fn wait_final(&self, job_id: i64, timeout: Duration) -> Option<TaskRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = self.shared.db().task_of_job(job_id) {
                if t.record.result != proto::Result::Unspecified
                    && (t.runner_reported_final || t.record.archived)
                {
                    return Some(t.record.clone());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancels one job (`CancelJobs` on it): waiting or blocked it never runs, running its task
    /// and unfinished steps end as cancelled; then the jobs needing it are resolved.
    pub fn cancel(&self, job_id: i64) {
        self.shared.db().cancel_jobs(&[job_id]);
    }

    /// Cancels a run as a user would in the UI: every job not done yet is cancelled.
    pub fn cancel_run(&self, run_id: i64) {
        let mut db = self.shared.db();
        let ids: Vec<i64> = db.run_jobs(run_id).iter().map(|j| j.job.id).collect();
        db.cancel_jobs(&ids);
    }

    /// Injects a fault (or turns the legacy error style on or off).
    pub fn set_fault(&self, fault: Fault) {
        match fault {
            Fault::LegacyErrors(on) => {
                *self
                    .shared
                    .legacy_errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = on
            }
            other => *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = other,
        }
    }

    /// Removes a runner as an admin would; its credentials stop working at once.
    pub fn delete_runner(&self, uuid: &str) {
        self.shared.db().runners.retain(|r| r.record.uuid != uuid);
    }

    /// RPC method names received, in order (`"Ping"`, `"FetchTask"`, …).
    pub fn calls(&self) -> Vec<String> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current tasks version.
    pub fn tasks_version(&self) -> i64 {
        self.shared.db().tasks_version
    }

    /// How many FetchTask calls went past the version gate and looked for a job.
    pub fn task_queries(&self) -> usize {
        self.shared.db().task_queries
    }

    /// Capabilities announced in Declare's `X-Gitea-Actions-Capabilities` header (default none).
    pub fn set_capabilities(&self, caps: &[&str]) {
        self.shared.db().capabilities = caps.iter().map(|s| s.to_string()).collect();
    }

    /// Serves the bare repositories `<root>/<owner>/<repo>.git` over git's smart HTTP at
    /// `<url>/<owner>/<repo>` and `<url>/<owner>/<repo>.git`, read-only, as Gitea serves them
    /// (names match without regard to case). Until called, those paths are 404.
    pub fn serve_repositories(&self, root: &Path) {
        self.shared.git().root = Some(root.to_path_buf());
    }

    /// Makes `owner/repo` private: only requests signed in with the token of a running task (a
    /// claimed task without a final result) may clone it, as Gitea lets a task's token do.
    /// Anonymous requests get 401 with `WWW-Authenticate: Basic realm="Gitea"`.
    pub fn set_private(&self, owner_repo: &str) {
        self.shared
            .git()
            .private
            .insert(git_http::private_key(owner_repo));
    }

    /// The git requests received, in order, with the token each presented.
    pub fn git_requests(&self) -> Vec<GitRequest> {
        self.shared.git().requests.clone()
    }
}
