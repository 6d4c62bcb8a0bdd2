//! Runs processes in a root filesystem with runc. The engine prepares the rootfs (an overlay
//! mount) and extra mounts; this module writes the OCI runtime spec, runs `runc run`, streams
//! output as progress and reports the exit status.

use crate::fsutil::resolve_in_root;
use crate::progress::{LogStream, ProgressSender};
use oci_spec::runtime::{
    Capability, LinuxNamespaceType, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, Spec,
    UserBuilder,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("process {command:?} did not complete successfully: exit code: {code}")]
    ExitCode { command: String, code: i32 },
    #[error("process {command:?} was killed by signal {signal}")]
    Signal { command: String, signal: i32 },
    #[error("unable to find user {user}: no matching entries in passwd file")]
    NoSuchUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    NoSuchGroup { group: String },
    #[error("runc: {0}")]
    Runtime(String),
    #[error("canceled")]
    Canceled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let context = context.into();
    move |source| ExecError::Io { context, source }
}

/// Network of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Share the engine's network (BuildKit's rootless default).
    Host,
    /// A fresh network namespace with no interfaces but loopback.
    None,
}

/// A mount inside the container, prepared by the caller.
#[derive(Debug, Clone)]
pub struct ExecMount {
    pub dest: String,
    pub kind: ExecMountKind,
    pub readonly: bool,
}

#[derive(Debug, Clone)]
pub enum ExecMountKind {
    Bind(PathBuf),
    Tmpfs { size: Option<u64> },
}

/// Everything needed to run one process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<ExecMount>,
    pub extra_hosts: Vec<(String, String)>,
}

impl ProcessSpec {
    /// The command as BuildKit prints it in errors: arguments joined by spaces.
    pub fn display_command(&self) -> String {
        self.args.join(" ")
    }
}

/// Where a process's output goes and what stops it.
pub struct ProcessIo<'a> {
    pub progress: &'a ProgressSender,
    /// The vertex its log lines belong to.
    pub vertex: &'a str,
    pub cancel: &'a CancellationToken,
}

/// The runc executor.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    state_root: PathBuf,
    /// Running as root of a user namespace: runc must not expect to manage cgroups.
    rootless: bool,
}

impl Runc {
    pub fn new(binary: PathBuf, state_root: PathBuf) -> Runc {
        Runc {
            binary,
            state_root,
            rootless: crate::sys::in_user_namespace(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state_root);
        if self.rootless {
            cmd.arg("--rootless").arg("true");
        }
        cmd
    }

    /// Run `spec` with `rootfs` as `/`. `bundle` is a scratch directory for config.json and
    /// generated files. Returns when the process exits; a non-zero exit is an error.
    pub async fn run(
        &self,
        id: &str,
        rootfs: &Path,
        bundle: &Path,
        spec: &ProcessSpec,
        io: ProcessIo<'_>,
    ) -> Result<(), ExecError> {
        let ProcessIo {
            progress,
            vertex,
            cancel,
        } = io;
        let oci = self.oci_spec(rootfs, bundle, spec)?;
        oci.save(bundle.join("config.json"))
            .map_err(|e| ExecError::Runtime(format!("writing config.json: {e}")))?;
        tokio::fs::create_dir_all(&self.state_root)
            .await
            .map_err(io_err("runc state dir"))?;

        let mut child = self
            .command()
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Runtime(format!("starting {}: {e}", self.binary.display())))?;

        // If this future is dropped before the container is cleaned up (the solve was
        // abandoned), the guard kills the container's processes and deletes it.
        let mut guard = ContainerGuard {
            runc: self.clone(),
            id: id.to_string(),
            pid: child.id().map(|p| p as i32),
            armed: true,
        };
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let out_task = tokio::spawn(pump(
            stdout,
            progress.clone(),
            vertex.to_string(),
            LogStream::Stdout,
        ));
        let err_task = tokio::spawn(pump(
            stderr,
            progress.clone(),
            vertex.to_string(),
            LogStream::Stderr,
        ));

        tracing::debug!(
            container = id,
            canceled = cancel.is_cancelled(),
            "runc run started"
        );
        let status = tokio::select! {
            status = child.wait() => status.map_err(io_err("waiting for runc"))?,
            _ = cancel.cancelled() => {
                tracing::debug!(container = id, "build canceled: killing the container");
                // The container's processes first (by process tree: `runc kill` can fail without
                // a cgroup), then runc's view of it.
                if let Some(pid) = child.id() {
                    kill_descendants(pid as i32);
                }
                // Every runc call is bounded: a wedged runtime must not keep the build (and its
                // mounts) alive after the client has gone.
                let limit = std::time::Duration::from_secs(5);
                let _ = tokio::time::timeout(limit, self.kill(id)).await;
                if tokio::time::timeout(limit, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                let _ = tokio::time::timeout(limit, self.delete(id)).await;
                guard.armed = false;
                tracing::debug!(container = id, "container of a canceled build removed");
                return Err(ExecError::Canceled);
            }
        };
        let _ = out_task.await;
        let stderr_tail = err_task.await.unwrap_or_default();
        self.delete(id).await;
        guard.armed = false;

        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            // runc itself failed before the process started: its own message is on stderr.
            (Some(code), _)
                if stderr_tail.contains("runc run failed")
                    || stderr_tail.contains("level=error") =>
            {
                Err(ExecError::Runtime(
                    runc_message(&stderr_tail)
                        .unwrap_or_else(|| format!("{} (exit code {code})", stderr_tail.trim())),
                ))
            }
            (Some(code), _) => Err(ExecError::ExitCode {
                command: spec.display_command(),
                code,
            }),
            (None, Some(sig)) => Err(ExecError::Signal {
                command: spec.display_command(),
                signal: sig,
            }),
            (None, None) => Err(ExecError::Runtime("process ended without status".into())),
        }
    }

    /// Kill the container: its init first (the container has its own PID namespace, so that
    /// takes every process with it), then `--all` for runtimes where that is needed. `--all`
    /// alone fails without a cgroup, which rootless runs often lack.
    async fn kill(&self, id: &str) {
        for args in [
            &["kill", id, "KILL"][..],
            &["kill", "--all", id, "KILL"][..],
        ] {
            let _ = self
                .command()
                .args(args)
                .kill_on_drop(true)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }

    async fn delete(&self, id: &str) {
        let _ = self
            .command()
            .args(["delete", "--force", id])
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }

    fn oci_spec(
        &self,
        rootfs: &Path,
        bundle: &Path,
        spec: &ProcessSpec,
    ) -> Result<Spec, ExecError> {
        let (uid, gid, additional) = resolve_user(rootfs, &spec.user)?;

        let hosts = bundle.join("hosts");
        let mut hosts_text = format!(
            "127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            h = spec.hostname
        );
        for (name, ip) in &spec.extra_hosts {
            hosts_text.push_str(&format!("{ip}\t{name}\n"));
        }
        std::fs::write(&hosts, hosts_text).map_err(io_err("writing /etc/hosts"))?;
        let resolv = bundle.join("resolv.conf");
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        std::fs::write(&resolv, host_resolv).map_err(io_err("writing /etc/resolv.conf"))?;

        let mut oci = Spec::default();
        let mut process = oci.process().clone().unwrap_or_default();
        process.set_terminal(Some(false));
        process.set_args(Some(spec.args.clone()));
        process.set_env(Some(spec.env.clone()));
        process.set_cwd(PathBuf::from(if spec.cwd.is_empty() {
            "/"
        } else {
            &spec.cwd
        }));
        process.set_user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(additional)
                .build()
                .map_err(|e| ExecError::Runtime(e.to_string()))?,
        );
        process.set_no_new_privileges(Some(false));
        let caps: HashSet<Capability> = [
            Capability::Chown,
            Capability::DacOverride,
            Capability::Fsetid,
            Capability::Fowner,
            Capability::Mknod,
            Capability::NetRaw,
            Capability::Setgid,
            Capability::Setuid,
            Capability::Setfcap,
            Capability::Setpcap,
            Capability::NetBindService,
            Capability::SysChroot,
            Capability::Kill,
            Capability::AuditWrite,
        ]
        .into_iter()
        .collect();
        if let Some(mut c) = process.capabilities().clone() {
            c.set_bounding(Some(caps.clone()));
            c.set_effective(Some(caps.clone()));
            c.set_permitted(Some(caps.clone()));
            c.set_inheritable(None);
            c.set_ambient(None);
            process.set_capabilities(Some(c));
        }
        // BuildKit's 1048576, unless this process may not grant that much.
        let nofile = crate::sys::nofile_hard_limit().min(1_048_576);
        process.set_rlimits(Some(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(|e| ExecError::Runtime(e.to_string()))?]));
        oci.set_process(Some(process));

        let mut root = oci.root().clone().unwrap_or_default();
        root.set_path(rootfs.to_path_buf());
        root.set_readonly(Some(false));
        oci.set_root(Some(root));
        oci.set_hostname(Some(spec.hostname.clone()));

        let mut mounts: Vec<Mount> = oci.mounts().clone().unwrap_or_default();
        // The cgroup mount needs a cgroup namespace we don't create; builds don't need it.
        mounts.retain(|m| m.typ().as_deref() != Some("cgroup"));
        if self.rootless {
            // gid 5 (tty) may not be mapped in our user namespace; runc's rootless spec drops it.
            for m in mounts.iter_mut() {
                if m.typ().as_deref() == Some("devpts") {
                    let opts: Vec<String> = m
                        .options()
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|o| !o.starts_with("gid="))
                        .collect();
                    m.set_options(Some(opts));
                }
            }
        }
        if spec.network == Network::Host {
            // sysfs can't be mounted fresh without owning the network namespace.
            for m in mounts.iter_mut() {
                if m.destination() == Path::new("/sys") {
                    *m = bind("/sys", Path::new("/sys"), true);
                }
            }
        }
        mounts.push(bind("/etc/hosts", &hosts, true));
        mounts.push(bind("/etc/resolv.conf", &resolv, true));
        for m in &spec.mounts {
            mounts.push(match &m.kind {
                ExecMountKind::Bind(src) => bind(&m.dest, src, m.readonly),
                ExecMountKind::Tmpfs { size } => {
                    let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                    if let Some(s) = size {
                        opts.push(format!("size={s}"));
                    }
                    MountBuilder::default()
                        .destination(PathBuf::from(&m.dest))
                        .typ("tmpfs")
                        .source(PathBuf::from("tmpfs"))
                        .options(opts)
                        .build()
                        .expect("all fields set")
                }
            });
        }
        oci.set_mounts(Some(mounts));

        if let Some(mut linux) = oci.linux().clone() {
            if let Some(ns) = linux.namespaces().clone() {
                let ns = ns
                    .into_iter()
                    .filter(|n| {
                        n.typ() != LinuxNamespaceType::Cgroup
                            && (spec.network == Network::None
                                || n.typ() != LinuxNamespaceType::Network)
                    })
                    .collect();
                linux.set_namespaces(Some(ns));
            }
            oci.set_linux(Some(linux));
        }
        Ok(oci)
    }
}

fn bind(dest: &str, src: &Path, readonly: bool) -> Mount {
    let mut opts = vec!["rbind".to_string()];
    opts.push(if readonly { "ro" } else { "rw" }.to_string());
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ("bind")
        .source(src.to_path_buf())
        .options(opts)
        .build()
        .expect("all fields set")
}

/// Read a stream to its end, forwarding chunks as progress logs. Returns the last few KiB
/// so runc's own failure message can be reported.
async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    progress: ProgressSender,
    vertex: String,
    stream: LogStream,
) -> String {
    let mut buf = vec![0u8; 32 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                progress.log(&vertex, stream, &buf[..n]);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 4096);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// The message of runc's last `level=error` log line (`msg="…"`), unquoted.
fn runc_message(stderr: &str) -> Option<String> {
    let line = stderr.lines().rev().find(|l| l.contains("level=error"))?;
    let start = line.find("msg=\"")? + 5;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            c => out.push(c),
        }
    }
    Some(out.trim_start_matches("runc run failed: ").to_string())
}

/// Resolve `user[:group]` against the rootfs's /etc/passwd and /etc/group, as Docker does:
/// numeric ids need no entry; names must exist. The supplementary groups start with the
/// primary one, then (without an explicit group) every group listing the user.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), ExecError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "/etc/passwd");
    let group = read_in_root(rootfs, "/etc/group");
    let user_part = if user_part.is_empty() { "0" } else { user_part };

    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let matches = f[0] == user_part || f[2] == user_part;
        matches.then(|| {
            (
                f[0].to_string(),
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
            )
        })
    });
    let (name, uid, mut gid) = match (entry, user_part.parse::<u32>()) {
        (Some((name, Some(uid), Some(gid))), _) => (Some(name), uid, gid),
        (_, Ok(uid)) => (None, uid, 0),
        _ => {
            return Err(ExecError::NoSuchUser {
                user: user_part.to_string(),
            })
        }
    };
    let mut additional = Vec::new();
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 3 && f[0] == g)
                        .then(|| f[2].parse::<u32>().ok())
                        .flatten()
                })
                .ok_or_else(|| ExecError::NoSuchGroup {
                    group: g.to_string(),
                })?,
        };
    } else if let Some(name) = &name {
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid {
                        additional.push(g);
                    }
                }
            }
        }
    }
    // As BuildKit (`WithUIDGID`): the primary group leads the supplementary ones, so `id`
    // shows `groups=1500(appgrp),1600(extra)`, and `groups=0(root)` for `user:root`.
    additional.insert(0, gid);
    Ok((uid, gid, additional))
}

fn read_in_root(rootfs: &Path, path: &str) -> String {
    resolve_in_root(rootfs, path, true)
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// Cleans up a container whose `run` future was dropped halfway.
struct ContainerGuard {
    runc: Runc,
    id: String,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            kill_descendants(pid);
        }
        tracing::debug!(container = %self.id, "build abandoned: deleting the container");
        let mut cmd = std::process::Command::new(&self.runc.binary);
        cmd.arg("--root").arg(&self.runc.state_root);
        if self.runc.rootless {
            cmd.arg("--rootless").arg("true");
        }
        cmd.args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Off the async runtime: runc may take a moment.
        std::thread::spawn(move || {
            let _ = cmd.status();
        });
    }
}

/// SIGKILL every descendant of `root` (found through /proc's parent links), deepest first.
fn kill_descendants(root: i32) {
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the command name: state, then the parent pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut order = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            order.push(c);
            stack.push(c);
        }
    }
    for pid in order.into_iter().rev() {
        // SAFETY: plain syscall on a pid we just read.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// GOARCH names and the names of their qemu-user emulators (`qemu-aarch64`).
const EMULATED: [(&str, &str); 9] = [
    ("amd64", "x86_64"),
    ("arm64", "aarch64"),
    ("arm", "arm"),
    ("386", "i386"),
    ("ppc64le", "ppc64le"),
    ("s390x", "s390x"),
    ("riscv64", "riscv64"),
    ("mips64le", "mips64el"),
    ("loong64", "loongarch64"),
];

/// Whether the kernel runs binaries of `arch` (GOARCH spelling) through an emulator registered
/// with binfmt_misc, as Debian's qemu-user-static (or `tonistiigi/binfmt`) sets up: then RUN
/// steps for that platform work here, as they do in BuildKit.
pub fn emulator_registered(arch: &str) -> bool {
    EMULATED.iter().any(|(goarch, qemu)| {
        *goarch == arch
            && std::fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}"))
                .is_ok_and(|s| s.lines().next() == Some("enabled"))
    })
}

/// The platforms RUN steps can run for here: this host's, and those with an emulator (as
/// BuildKit's workers list them).
pub fn runnable_platforms() -> Vec<kiln_oci::Platform> {
    let host = kiln_oci::Platform::host();
    let emulated = EMULATED
        .iter()
        .map(|(arch, _)| *arch)
        .filter(|arch| *arch != host.architecture && emulator_registered(arch))
        .map(|arch| kiln_oci::Platform::new("linux", arch, None));
    std::iter::once(host.clone()).chain(emulated).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_errors_are_reduced_to_their_message() {
        let stderr = "time=\"2026-11-25T22:44:19Z\" level=warning msg=\"x\"\ntime=\"2026-11-25T22:44:19Z\" level=error msg=\"runc run failed: unable to start container process: exec: \\\"/bin/sh\\\": stat /bin/sh: no such file or directory\"\n";
        assert_eq!(
            runc_message(stderr).unwrap(),
            "unable to start container process: exec: \"/bin/sh\": stat /bin/sh: no such file or directory"
        );
    }

    #[test]
    fn users_resolve_by_name_id_and_group() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nuser:x:1000:\nwheel:x:10:user\n",
        )
        .unwrap();
        let r = |u: &str| resolve_user(dir.path(), u);
        assert_eq!(r("").unwrap(), (0, 0, vec![0]));
        assert_eq!(r("user").unwrap(), (1000, 1000, vec![1000, 10]));
        assert_eq!(r("1000").unwrap(), (1000, 1000, vec![1000, 10]));
        assert_eq!(r("4242").unwrap(), (4242, 0, vec![0]));
        assert_eq!(r("user:wheel").unwrap(), (1000, 10, vec![10]));
        assert_eq!(r("1:2").unwrap(), (1, 2, vec![2]));
        assert!(matches!(r("nobody"), Err(ExecError::NoSuchUser { .. })));
        assert!(matches!(
            r("user:nogroup"),
            Err(ExecError::NoSuchGroup { .. })
        ));
    }
}
