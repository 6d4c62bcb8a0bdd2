//! Shared by the daemon tests: a runner registered to the fake Gitea, run in process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_gitea::fake::{FakeGitea, QueuedJob, TaskRecord};
use kiln_runner::config::Config;
use kiln_runner::daemon::{self, DaemonOptions};
use kiln_runner::metrics::Metrics;
use kiln_runner::register::{register, RegisterOptions};
use tokio_util::sync::CancellationToken;

pub struct Runner {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Runner {
    pub async fn registered(gitea: &FakeGitea, labels: &[&str]) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.runner.file = dir.path().join(".runner");
        config.runner.fetch_interval = Duration::from_millis(100);
        config.runner.log_report_interval = Duration::from_millis(200);
        config.runner.report_close_timeout = Duration::from_secs(120);
        config.host.workdir_parent = Some(dir.path().join("host"));
        config.kiln.metrics_addr = String::new();
        register(RegisterOptions {
            instance: gitea.url(),
            token: gitea.registration_token(),
            name: "test-runner".into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ephemeral: false,
            file: config.runner.file.clone(),
            insecure: false,
            version: "kiln-test".into(),
            ping_attempts: 3,
        })
        .await
        .unwrap();
        Runner { dir, config }
    }

    pub fn start(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), String>>,
    ) {
        let shutdown = CancellationToken::new();
        let options = DaemonOptions {
            config: self.config.clone(),
            state_dir: self.dir.path().join("state"),
            once: false,
            version: "kiln-test".into(),
            cache: None,
            metrics: Arc::new(Metrics::default()),
            build: None,
        };
        let s = shutdown.clone();
        (
            shutdown,
            tokio::spawn(async move { daemon::run(options, s).await }),
        )
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

pub fn job(yaml: &str, job_id: &str) -> QueuedJob {
    QueuedJob {
        workflow_yaml: yaml.to_string(),
        job_id: job_id.to_string(),
        context: serde_json::json!({}),
        secrets: BTreeMap::new(),
        vars: BTreeMap::new(),
    }
}

pub async fn final_task(gitea: &FakeGitea, id: i64, secs: u64) -> TaskRecord {
    gitea
        .wait_final(id, Duration::from_secs(secs))
        .await
        .unwrap_or_else(|| panic!("job {id} did not finish: {:?}", gitea.task(id)))
}

/// The rows of one step as Gitea's UI would show them.
pub fn step_rows(task: &TaskRecord, step: usize) -> Vec<String> {
    let s = &task.steps[step];
    task.rows[s.log_index as usize..(s.log_index + s.log_length) as usize].to_vec()
}
