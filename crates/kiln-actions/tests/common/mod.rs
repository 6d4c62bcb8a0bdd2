//! The executor fixture shared by the end-to-end tests: a temporary repository and state
//! directory, a run of a workflow through `kiln_actions::local`, and its events.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_actions::exec::{Event, ExecConfig, Outcome};
use kiln_actions::local::{run_workflow, LocalRun, RunEvent, RunSummary};
use kiln_actions::model::Workflow;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// JavaScript actions need `node`; CI installs it (nodejs), elsewhere the test says it skips.
pub fn have_node(test: &str) -> bool {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP {test}: `node` is not on PATH (install nodejs)");
    }
    ok
}

pub struct Run {
    pub summary: Result<RunSummary, String>,
    pub events: Vec<RunEvent>,
}

impl Run {
    /// Every log line as `job|line`.
    pub fn lines(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::Job {
                    key,
                    event: Event::Log { line, .. },
                } => Some(format!("{key}|{line}")),
                _ => None,
            })
            .collect()
    }
    pub fn log(&self) -> String {
        self.lines().join("\n")
    }
    pub fn has(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }
    /// (step index, outcome, conclusion) of a job's steps.
    pub fn steps(&self, job: &str) -> Vec<(usize, Outcome, Outcome)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::Job {
                    key,
                    event:
                        Event::StepFinished {
                            step,
                            outcome,
                            conclusion,
                            ..
                        },
                } if key == job => Some((*step, *outcome, *conclusion)),
                _ => None,
            })
            .collect()
    }
    pub fn result(&self, job: &str) -> Outcome {
        self.summary
            .as_ref()
            .unwrap()
            .results
            .get(job)
            .unwrap_or_else(|| panic!("no job {job}: {}", self.log()))
            .0
    }
    pub fn outputs(&self, job: &str) -> BTreeMap<String, String> {
        self.summary.as_ref().unwrap().results[job].1.clone()
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: ExecConfig,
    pub secrets: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    pub cancel: CancellationToken,
    /// `runs-on` label → image (`kiln exec -P`).
    pub platforms: Vec<(String, String)>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        let mut config = ExecConfig::under(&dir.path().join("state"));
        config.kill_grace = Duration::from_millis(500);
        Fixture {
            dir,
            config,
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
            cancel: CancellationToken::new(),
            platforms: Vec::new(),
        }
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub async fn run(&self, yaml: &str) -> Run {
        let workflow = Workflow::parse("ci.yml", yaml).unwrap_or_else(|e| panic!("{e}"));
        let run = LocalRun {
            workflow: Arc::new(workflow),
            job: None,
            event_name: "push".into(),
            event: serde_json::json!({}),
            secrets: self.secrets.clone(),
            vars: self.vars.clone(),
            matrix_filter: Vec::new(),
            workspace: self.repo(),
            server_url: "https://gitea.example".into(),
            platforms: self.platforms.clone(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let summary = run_workflow(run, self.config.clone(), tx, self.cancel.clone()).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        Run { summary, events }
    }
}
