//! Rootless mode: when started as a normal user, kiln re-runs itself as root of a new user
//! namespace (with its own mount namespace), the way rootlesskit does for buildkitd. Inside,
//! it may mount overlayfs and run runc; on disk everything stays owned by the user.
//!
//! The parent maps ids: the user's id becomes 0, and the user's subordinate range from
//! /etc/subuid and /etc/subgid (via the setuid helpers newuidmap/newgidmap) becomes 1…N, so
//! images with files owned by other users unpack faithfully. Without a subordinate range only
//! root is mapped and a warning says so.
//!
//! This is the one module of the binary with raw syscalls; each says why it is sound.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};

/// Set in the child: "you are the namespaced kiln; fds 3 and 4 are the sync pipes".
const CHILD_ENV: &str = "_KILN_USERNS_CHILD";
/// Set in the child: the uid that runs kiln outside, for default paths.
pub const OUTER_UID_ENV: &str = "_KILN_OUTER_UID";

/// What `main` should do next.
pub enum Role {
    /// Go on: this process is root (really, or in its user namespace).
    Continue,
    /// This process was the launcher; the namespaced kiln exited with this code.
    Exit(ExitCode),
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The uid kiln runs as outside any namespace kiln made.
pub fn outer_uid() -> u32 {
    std::env::var(OUTER_UID_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(euid)
}

/// Make sure this process may use the build engine; must run before any thread is started.
pub fn ensure_root() -> anyhow::Result<Role> {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_enter()?;
        return Ok(Role::Continue);
    }
    if euid() == 0 {
        return Ok(Role::Continue);
    }
    parent_launch()
}

fn child_enter() -> anyhow::Result<()> {
    // SAFETY: fds 3 and 4 were set up by the parent for exactly this; we own them from here.
    let (mut from_parent, mut to_parent) = unsafe { (File::from_raw_fd(3), File::from_raw_fd(4)) };
    // SAFETY: called before any other thread exists (main calls us first), as unshare of a
    // user namespace requires.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!(
            "rootless mode: creating a user namespace failed: {e} \
             (is user.max_user_namespaces 0, or are user namespaces disabled by seccomp?)"
        );
    }
    to_parent.write_all(b"1")?;
    drop(to_parent);
    let mut go = [0u8; 1];
    from_parent.read_exact(&mut go)?;
    if go[0] != b'1' {
        anyhow::bail!("rootless mode: the launcher could not map user ids");
    }
    // Our mounts stay ours.
    let root = c"/";
    // SAFETY: valid C string; MS_REC|MS_PRIVATE only changes propagation in our namespace.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        anyhow::bail!(
            "rootless mode: making mounts private: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: plain id changes to ids that the parent has just mapped.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            anyhow::bail!(
                "rootless mode: becoming root in the namespace: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn parent_launch() -> anyhow::Result<Role> {
    let uid = euid();
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    let (child_read, mut parent_write) = pipe()?;
    let (mut parent_read, child_write) = pipe()?;
    let exe = std::env::current_exe()?;
    let (cr, cw) = (child_read.as_raw_fd(), child_write.as_raw_fd());
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .env(OUTER_UID_ENV, uid.to_string());
    // SAFETY: fcntl, dup2 and close are async-signal-safe. The pipe ends are first copied
    // above fd 10 (they may themselves be 3 or 4), then placed at fds 3 and 4 without CLOEXEC
    // so they survive exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::fcntl(cr, libc::F_DUPFD, 10);
            let w = libc::fcntl(cw, libc::F_DUPFD, 10);
            if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(r);
            libc::close(w);
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(child_read);
    drop(child_write);
    let pid = child.id() as i32;
    CHILD_PID.store(pid, Ordering::SeqCst);
    // SAFETY: the handler only calls kill(2), which is async-signal-safe.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, forward_signal as *const () as libc::sighandler_t);
        }
    }

    let mut ready = [0u8; 1];
    if parent_read.read_exact(&mut ready).is_ok() {
        let ok = match map_ids(pid, uid, gid) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("ERROR: rootless mode: {e:#}");
                false
            }
        };
        let _ = parent_write.write_all(if ok { b"1" } else { b"0" });
    }
    drop(parent_write);
    let status = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(Role::Exit(ExitCode::from(code.clamp(0, 255) as u8)))
}

/// A subordinate id range of this user from /etc/subuid or /etc/subgid.
fn subordinate_range(file: &str, uid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(file).ok()?;
    let name = user_name(uid);
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() != 3 {
            return None;
        }
        let matches = f[0] == uid.to_string() || name.as_deref() == Some(f[0]);
        matches
            .then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?)))
            .flatten()
    })
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

fn map_ids(pid: i32, uid: u32, gid: u32) -> anyhow::Result<()> {
    let sub_uid = subordinate_range("/etc/subuid", uid);
    let sub_gid = subordinate_range("/etc/subgid", uid);
    let helpers = which("newuidmap").zip(which("newgidmap"));
    match (sub_uid, sub_gid, helpers) {
        (Some((us, uc)), Some((gs, gc)), Some((newuidmap, newgidmap))) => {
            run_helper(
                &newuidmap,
                &[
                    pid.to_string(),
                    "0".into(),
                    uid.to_string(),
                    "1".into(),
                    "1".into(),
                    us.to_string(),
                    uc.to_string(),
                ],
            )?;
            run_helper(
                &newgidmap,
                &[
                    pid.to_string(),
                    "0".into(),
                    gid.to_string(),
                    "1".into(),
                    "1".into(),
                    gs.to_string(),
                    gc.to_string(),
                ],
            )?;
        }
        _ => {
            eprintln!(
                "WARNING: rootless mode without subordinate ids (add a range for uid {uid} to \
                 /etc/subuid and /etc/subgid and install newuidmap/newgidmap): only root is \
                 mapped, files of other owners in images become root's"
            );
            std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1\n"))?;
            std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
            std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1\n"))?;
        }
    }
    Ok(())
}

fn run_helper(path: &std::path::Path, args: &[String]) -> anyhow::Result<()> {
    let out = Command::new(path).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{} {}: {}",
            path.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
