//! Running a step's process: its own process group, stdout and stderr merged into one pipe in the order
//! they were written, and a timeout or cancellation that takes down the whole process tree.
//!
//! Every process a step starts inherits `KILN_STEP_TRACKING_ID`, and every process of a job inherits
//! `RUNNER_TRACKING_ID` (the variable the GitHub runner uses for the same purpose). Killing by those
//! markers also catches processes that left the step's process group (`setsid`, daemons).

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// The environment variable that marks every process of one step.
pub const STEP_TRACKING_VAR: &str = "KILN_STEP_TRACKING_ID";
/// The environment variable that marks every process of one job.
pub const JOB_TRACKING_VAR: &str = "RUNNER_TRACKING_ID";

#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment (nothing is inherited from kiln).
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
}

/// How a step process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    Cancelled,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "Process completed with exit code {c}."),
            Exit::Signal(s) => write!(f, "Process was killed by signal {s}."),
            Exit::TimedOut => write!(f, "The action has timed out."),
            Exit::Cancelled => write!(f, "The operation was canceled."),
        }
    }
}

/// How long a cancelled process gets between SIGINT and SIGKILL (the runner waits 7.5 s after
/// SIGINT and then 2.5 s after SIGTERM; one grace period for both is enough here).
pub const DEFAULT_GRACE: Duration = Duration::from_millis(7500);

/// Run `spec`, passing every chunk of output to `on_output` as it arrives. `tracking_id` is put in
/// the environment as [`STEP_TRACKING_VAR`]. On timeout or cancellation the process group gets SIGINT,
/// and after `grace` everything carrying the tracking id is killed.
pub async fn run(
    spec: &ProcessSpec,
    tracking_id: &str,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    grace: Duration,
    mut on_output: impl FnMut(&[u8]),
) -> std::io::Result<Exit> {
    let (reader, writer) = pipe()?;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .env(STEP_TRACKING_VAR, tracking_id)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer))
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot start {}: {e}", spec.program.display()),
        )
    })?;
    // The parent's copies of the write end were moved into `cmd`; drop it so EOF can arrive.
    drop(cmd);
    let pid = child.id().unwrap_or(0) as i32;
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)?;

    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut buf = vec![0u8; 64 * 1024];
    let mut eof = false;
    let mut outcome: Option<Exit> = None;
    let mut status = None;
    while status.is_none() {
        tokio::select! {
            n = reader.read(&mut buf), if !eof => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => on_output(&buf[..n]),
            },
            s = child.wait() => status = Some(s?),
            _ = sleep_until(deadline), if outcome.is_none() => {
                outcome = Some(Exit::TimedOut);
                terminate(pid, tracking_id, grace).await;
            }
            _ = cancel.cancelled(), if outcome.is_none() => {
                outcome = Some(Exit::Cancelled);
                terminate(pid, tracking_id, grace).await;
            }
        }
    }
    // Output written just before exit is still in the pipe. A background process may hold the pipe
    // open for ever, so stop waiting for EOF shortly after the main process is gone.
    let drain_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while !eof {
        tokio::select! {
            n = reader.read(&mut buf) => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => on_output(&buf[..n]),
            },
            _ = tokio::time::sleep_until(drain_until) => break,
        }
    }
    if let Some(outcome) = outcome {
        return Ok(outcome);
    }
    let status = status.expect("loop ends with a status");
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(1),
    })
}

/// Sleep until `deadline`; without one, for ever.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// SIGINT to the group, then after `grace` SIGKILL to the group and to every process with the marker.
async fn terminate(pid: i32, tracking_id: &str, grace: Duration) {
    if pid > 0 {
        // SAFETY: plain syscall; a negative pid addresses the process group we created.
        unsafe { libc::kill(-pid, libc::SIGINT) };
    }
    let start = tokio::time::Instant::now();
    while start.elapsed() < grace {
        if (pid <= 0 || !group_alive(pid))
            && tracked_pids(STEP_TRACKING_VAR, tracking_id).is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if pid > 0 {
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    kill_tracked(STEP_TRACKING_VAR, tracking_id);
}

/// Stop every process of a step by its tracking id alone (processes kiln did not start itself,
/// such as a step in a job container): SIGINT now, SIGKILL after `grace`.
pub async fn stop_tracked(tracking_id: &str, grace: Duration) {
    for pid in tracked_pids(STEP_TRACKING_VAR, tracking_id) {
        // SAFETY: plain syscall on a pid we just read.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    terminate(0, tracking_id, grace).await;
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Kill (SIGKILL) every process whose environment has `var=id`; repeated until none is left so
/// processes forked meanwhile are caught too. Returns how many were killed.
pub fn kill_tracked(var: &str, id: &str) -> usize {
    let mut killed = 0;
    for _ in 0..20 {
        let pids = tracked_pids(var, id);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: plain syscall on a pid we just read.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// The live processes whose environment contains `var=id` (zombies excluded).
pub fn tracked_pids(var: &str, id: &str) -> Vec<i32> {
    let needle = format!("{var}={id}").into_bytes();
    let own = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ.split(|&b| b == 0).any(|kv| kv == needle.as_slice()) {
            continue;
        }
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie {
            out.push(pid);
        }
    }
    out
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we take ownership of immediately.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> ProcessSpec {
        ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            cwd: std::env::temp_dir(),
        }
    }

    async fn run_collect(
        spec: &ProcessSpec,
        id: &str,
        timeout: Option<Duration>,
    ) -> (Exit, String) {
        let mut out = Vec::new();
        let cancel = CancellationToken::new();
        let exit = run(
            spec,
            id,
            timeout,
            &cancel,
            Duration::from_millis(300),
            |b| out.extend_from_slice(b),
        )
        .await
        .unwrap();
        (exit, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn merges_output_in_order_and_reports_exit_code() {
        let (exit, out) = run_collect(
            &sh("echo one; echo two >&2; echo three; exit 3"),
            "t1",
            None,
        )
        .await;
        assert_eq!(exit, Exit::Code(3));
        assert_eq!(out, "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn environment_is_exactly_the_spec() {
        let mut spec = sh("echo \"$PATH|$HOME|$KILN_STEP_TRACKING_ID\"");
        spec.env.insert("HOME".into(), "/nowhere".into());
        let (_, out) = run_collect(&spec, "abc", None).await;
        assert_eq!(out, "/usr/bin:/bin|/nowhere|abc\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_tree_including_escaped_processes() {
        let id = format!("test-{}", std::process::id());
        // A child in a new session escapes the process group; the tracking id still finds it.
        let script = "setsid sleep 309 & sleep 309 & echo started; wait";
        let (exit, out) = run_collect(&sh(script), &id, Some(Duration::from_millis(300))).await;
        assert_eq!(exit, Exit::TimedOut);
        assert_eq!(out, "started\n");
        for _ in 0..50 {
            if tracked_pids(STEP_TRACKING_VAR, &id).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "processes survived: {:?}",
            tracked_pids(STEP_TRACKING_VAR, &id)
        );
    }

    #[tokio::test]
    async fn background_process_holding_the_pipe_does_not_hang_the_step() {
        let id = format!("bg-{}", std::process::id());
        let (exit, out) = run_collect(&sh("sleep 30 & echo done"), &id, None).await;
        assert_eq!((exit, out.as_str()), (Exit::Code(0), "done\n"));
        assert_eq!(kill_tracked(STEP_TRACKING_VAR, &id), 1);
    }

    #[tokio::test]
    async fn cancellation() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        });
        let exit = run(
            &sh("trap 'echo interrupted; exit 130' INT; sleep 100 & wait"),
            "c1",
            None,
            &cancel,
            Duration::from_secs(1),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::Cancelled);
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_error() {
        let mut spec = sh("");
        spec.program = "/nonexistent/bash".into();
        let cancel = CancellationToken::new();
        let err = run(&spec, "x", None, &cancel, DEFAULT_GRACE, |_| {})
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot start /nonexistent/bash"),
            "{err}"
        );
    }
}
