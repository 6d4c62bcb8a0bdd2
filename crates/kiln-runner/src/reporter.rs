//! Reporting a task to Gitea: log rows with UpdateLog (resent from the last acknowledged index, so
//! an outage loses and duplicates nothing) and step states, outputs and the result with UpdateTask.
//!
//! Log layout follows what Gitea's UI expects: rows before the first step are "Set up job", each step's
//! rows are one contiguous range (`log_index`, `log_length`), rows after the last step are "Complete
//! job". Job-level lines that arrive while steps run are kept in the range of the step that is running
//! (act_runner drops them instead).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kiln_actions::exec::{Event, Outcome};
use kiln_gitea::proto::{self, LogRow, StepState, TaskState, Timestamp};
use kiln_gitea::{Client, ClientError};
use tokio_util::sync::CancellationToken;

/// Longest row content Gitea stores.
const MAX_ROW: usize = 64 * 1024;
/// Output limits Gitea applies (larger ones are dropped with a log line, as act_runner does).
const MAX_OUTPUT_KEY: usize = 255;
const MAX_OUTPUT_VALUE: usize = 1024 * 1024;

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn result_of(outcome: Outcome) -> proto::Result {
    match outcome {
        Outcome::Success => proto::Result::Success,
        Outcome::Failure => proto::Result::Failure,
        Outcome::Cancelled => proto::Result::Cancelled,
        Outcome::Skipped => proto::Result::Skipped,
    }
}

#[derive(Debug, Default)]
struct State {
    /// Rows not yet acknowledged; `rows[0]` has the absolute index `acked`.
    rows: Vec<LogRow>,
    acked: i64,
    steps: Vec<StepState>,
    /// Whether a step's `log_index` has been fixed.
    step_placed: Vec<bool>,
    /// The step that job-level lines go to while steps run.
    current: Option<usize>,
    started_at: Option<Timestamp>,
    stopped_at: Option<Timestamp>,
    result: i32,
    outputs: BTreeMap<String, (String, bool)>,
    /// Gitea ended the task (a user cancelled it).
    ended_by_server: bool,
    /// The log was archived on the server (zombie timeout): no more rows can be sent.
    log_closed: bool,
}

impl State {
    fn total(&self) -> i64 {
        self.acked + self.rows.len() as i64
    }

    fn in_step_phase(&self) -> bool {
        let last = self.steps.len().checked_sub(1);
        self.current.is_some() && last.is_some_and(|l| self.steps[l].result == 0)
    }

    fn push_row(&mut self, time: SystemTime, mut content: String) {
        if content.len() > MAX_ROW {
            let mut cut = MAX_ROW;
            while !content.is_char_boundary(cut) {
                cut -= 1;
            }
            content.truncate(cut);
        }
        let ts = timestamp(time);
        if self.started_at.is_none() {
            self.started_at = Some(ts);
        }
        self.rows.push(LogRow {
            time: Some(ts),
            content,
        });
    }
}

/// The reporter of one task. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    client: Client,
    task_id: i64,
    state: Arc<Mutex<State>>,
}

impl Reporter {
    pub fn new(client: Client, task_id: i64) -> Reporter {
        Reporter {
            client,
            task_id,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declare the job's steps (one StepState per `jobs.<id>.steps` entry).
    pub fn set_steps(&self, count: usize) {
        let mut s = self.lock();
        s.steps = (0..count)
            .map(|i| StepState {
                id: i as i64,
                ..Default::default()
            })
            .collect();
        s.step_placed = vec![false; count];
    }

    /// A job-level line (set-up and completion sections).
    pub fn log(&self, line: &str) {
        self.handle(&Event::Log {
            step: None,
            time: SystemTime::now(),
            line: line.to_string(),
        });
    }

    /// Rows not yet acknowledged by Gitea.
    pub fn pending_rows(&self) -> usize {
        self.lock().rows.len()
    }

    /// Whether two handles report the same task.
    pub fn same(&self, other: &Reporter) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    pub fn ended_by_server(&self) -> bool {
        self.lock().ended_by_server
    }

    pub fn handle(&self, event: &Event) {
        let mut s = self.lock();
        match event {
            Event::Log { step, time, line } => {
                let target = match step {
                    Some(i) if *i < s.steps.len() => Some(*i),
                    _ if s.in_step_phase() => s.current,
                    _ => None,
                };
                if let Some(i) = target {
                    if !s.step_placed[i] {
                        s.step_placed[i] = true;
                        s.steps[i].log_index = s.total();
                    }
                    s.steps[i].log_length += 1;
                    if s.steps[i].started_at.is_none() {
                        s.steps[i].started_at = Some(timestamp(*time));
                    }
                }
                s.push_row(*time, line.trim_end_matches(['\r', '\n']).to_string());
            }
            Event::StepStarted { step, .. } => {
                let i = *step;
                if i < s.steps.len() {
                    if !s.step_placed[i] {
                        s.step_placed[i] = true;
                        s.steps[i].log_index = s.total();
                    }
                    s.steps[i]
                        .started_at
                        .get_or_insert(timestamp(SystemTime::now()));
                    s.current = Some(i);
                }
            }
            // act_runner reports a step's outcome, not its conclusion: a failed
            // `continue-on-error` step shows red in Gitea while the job succeeds.
            Event::StepFinished { step, outcome, .. } => {
                let i = *step;
                if i < s.steps.len() {
                    if !s.step_placed[i] {
                        s.step_placed[i] = true;
                        s.steps[i].log_index = s.total();
                    }
                    s.steps[i].result = result_of(*outcome) as i32;
                    s.steps[i].stopped_at = Some(timestamp(SystemTime::now()));
                }
            }
        }
    }

    /// The job ended: record the result and outputs; steps that never finished become cancelled
    /// (skipped when the whole job was skipped).
    pub fn finish(&self, result: Outcome, outputs: &BTreeMap<String, String>) {
        let mut dropped = Vec::new();
        {
            let mut s = self.lock();
            let now = timestamp(SystemTime::now());
            let open = if result == Outcome::Skipped {
                proto::Result::Skipped
            } else {
                proto::Result::Cancelled
            };
            let end = s.total();
            for i in 0..s.steps.len() {
                if s.steps[i].result == 0 {
                    s.steps[i].result = open as i32;
                    s.steps[i].stopped_at = Some(now);
                    if !s.step_placed[i] {
                        s.step_placed[i] = true;
                        s.steps[i].log_index = end;
                    }
                }
            }
            s.result = result_of(result) as i32;
            s.stopped_at = Some(now);
            s.started_at.get_or_insert(now);
            for (k, v) in outputs {
                if k.len() > MAX_OUTPUT_KEY || v.len() > MAX_OUTPUT_VALUE {
                    dropped.push(k.clone());
                    continue;
                }
                s.outputs.entry(k.clone()).or_insert((v.clone(), false));
            }
        }
        for k in dropped {
            self.log(&format!(
                "##[warning]job output `{}` is too large for Gitea and was dropped",
                truncate(&k, 64)
            ));
        }
    }

    /// Send the unacknowledged rows. Returns whether every row sent was acknowledged.
    async fn flush_logs(&self, no_more: bool) -> Result<bool, ClientError> {
        let (index, rows) = {
            let mut s = self.lock();
            if s.log_closed {
                return Ok(true);
            }
            if no_more && s.rows.is_empty() {
                // An UpdateLog without rows ignores `no_more`; one empty row closes the log.
                s.push_row(SystemTime::now(), String::new());
            }
            if s.rows.is_empty() {
                return Ok(true);
            }
            (s.acked, s.rows.clone())
        };
        let sent = rows.len() as i64;
        let request = proto::UpdateLogRequest {
            task_id: self.task_id,
            index,
            rows,
            no_more,
        };
        let response = match self.client.update_log(request).await {
            Ok(r) => r,
            Err(e) if e.is_archived() => {
                tracing::warn!(
                    task = self.task_id,
                    "Gitea archived the task's log; later rows are not stored"
                );
                self.lock().log_closed = true;
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let mut s = self.lock();
        let ack = response.ack_index;
        if ack < s.acked {
            tracing::error!(
                task = self.task_id,
                ack,
                acked = s.acked,
                "Gitea acknowledged fewer log rows than before"
            );
            return Ok(false);
        }
        let drop = ((ack - s.acked) as usize).min(s.rows.len());
        s.rows.drain(..drop);
        s.acked += drop as i64;
        Ok(ack == index + sent)
    }

    /// Send the task state. `last` sends the result; otherwise the result stays unspecified (a
    /// heartbeat). Returns whether every output is acknowledged.
    async fn report_state(&self, last: bool) -> Result<bool, ClientError> {
        let request = {
            let s = self.lock();
            let outputs = s
                .outputs
                .iter()
                .filter(|(_, (_, sent))| !sent)
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            proto::UpdateTaskRequest {
                state: Some(TaskState {
                    id: self.task_id,
                    result: if last { s.result } else { 0 },
                    started_at: s.started_at,
                    stopped_at: if last { s.stopped_at } else { None },
                    steps: s.steps.clone(),
                }),
                outputs,
            }
        };
        let response = self.client.update_task(request).await?;
        let mut s = self.lock();
        for key in &response.sent_outputs {
            if let Some(o) = s.outputs.get_mut(key) {
                o.1 = true;
            }
        }
        let server_result = response.state.map(|st| st.result).unwrap_or(0);
        if !last && server_result != 0 && !s.ended_by_server {
            s.ended_by_server = true;
        }
        Ok(s.outputs.values().all(|(_, sent)| *sent))
    }

    /// While the job runs: flush logs and send a heartbeat every `interval`; when Gitea says the task
    /// ended (a user cancelled it), cancel `job`. Returns when `stop` is cancelled.
    pub async fn run(&self, interval: Duration, job: CancellationToken, stop: CancellationToken) {
        let mut failing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            let result = async {
                self.flush_logs(false).await?;
                self.report_state(false).await
            }
            .await;
            match result {
                Ok(_) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(task = self.task_id, after = ?since.elapsed(), "Gitea reachable again; buffered log rows sent");
                    }
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::warn!(task = self.task_id, error = %e, "cannot report to Gitea; keeping log rows until it answers");
                        failing_since = Some(Instant::now());
                    }
                }
            }
            if self.ended_by_server() && !job.is_cancelled() {
                tracing::info!(
                    task = self.task_id,
                    "task ended by Gitea (cancelled); stopping the job"
                );
                job.cancel();
            }
        }
    }

    /// Send the remaining rows with `no_more`, then the final state, retrying until both are
    /// acknowledged or `budget` has passed.
    pub async fn close(&self, budget: Duration) -> Result<(), String> {
        let deadline = Instant::now() + budget;
        let mut delay = Duration::from_millis(200);
        let mut logs_done = false;
        loop {
            let attempt = async {
                if !logs_done {
                    logs_done = self.flush_logs(true).await?;
                }
                let outputs_done = if logs_done {
                    self.report_state(true).await?
                } else {
                    false
                };
                Ok::<bool, ClientError>(logs_done && outputs_done)
            }
            .await;
            let last_error = match attempt {
                Ok(true) => return Ok(()),
                Ok(false) => "Gitea has not acknowledged everything yet".to_string(),
                Err(e) if e.is_unauthenticated() => {
                    return Err(format!("Gitea rejected the runner while reporting: {e}"))
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() + delay > deadline {
                return Err(format!(
                    "could not report task {} to Gitea: {last_error}",
                    self.task_id
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    let mut cut = n.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}
