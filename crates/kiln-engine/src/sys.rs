//! The engine's only syscalls. Each wrapper says why it is sound; callers get `io::Result`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Mount an overlay filesystem at `target` with the given option string.
pub fn mount_overlay(target: &Path, options: &str) -> io::Result<()> {
    let target = cstr(target)?;
    let fstype = CString::new("overlay").expect("static string");
    let data = CString::new(options)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount options contain NUL"))?;
    // SAFETY: every pointer is a valid NUL-terminated C string that outlives the call; mount(2)
    // only reads them.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind-mount `source` on `target`, read-only when asked.
pub fn bind_mount(source: &Path, target: &Path, readonly: bool) -> io::Result<()> {
    let src = cstr(source)?;
    let dst = cstr(target)?;
    // SAFETY: valid C strings for the duration of the call; null fstype/data are allowed for
    // MS_BIND.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if readonly {
        // SAFETY: as above; a read-only bind needs a second remount call.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            let _ = unmount(target);
            return Err(err);
        }
    }
    Ok(())
}

/// Unmount `target`, detaching lazily if it is busy so a stuck process never wedges the engine.
pub fn unmount(target: &Path) -> io::Result<()> {
    let dst = cstr(target)?;
    // SAFETY: valid C string for the duration of the call.
    let rc = unsafe { libc::umount2(dst.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        // SAFETY: as above.
        let rc = unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
        if rc == 0 {
            return Ok(());
        }
        return Err(io::Error::last_os_error());
    }
    Err(err)
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Mount a private tmpfs (used for secrets, so they never touch the disk).
pub fn mount_tmpfs(target: &Path, options: &str) -> io::Result<()> {
    let dst = cstr(target)?;
    let fstype = CString::new("tmpfs").expect("static string");
    let data = CString::new(options)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount options contain NUL"))?;
    // SAFETY: valid C strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The hard limit on open files this process may grant its children.
pub fn nofile_hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 {
        lim.rlim_max
    } else {
        1024
    }
}

/// Whether this process runs in a user namespace other than the initial one (rootless mode):
/// the initial namespace maps the whole id range onto itself.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}
