//! The few syscalls std does not wrap: mknod, mkfifo, geteuid.
//!
//! Each wrapper passes a NUL-terminated copy of the path that lives for the whole call, and
//! checks the return value; none of them touches memory the caller owns, so all are sound.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Creates a device or fifo node. `kind` is `libc::S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
pub(crate) fn mknod(
    path: &Path,
    kind: libc::mode_t,
    perm: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let c = cpath(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated string alive for the call; mknod reads only it.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | (perm as libc::mode_t & 0o7777), dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Reads `(major, minor)` of a device number from `st_rdev`.
pub(crate) fn split_dev(rdev: u64) -> (u32, u32) {
    (
        libc::major(rdev as libc::dev_t),
        libc::minor(rdev as libc::dev_t),
    )
}
