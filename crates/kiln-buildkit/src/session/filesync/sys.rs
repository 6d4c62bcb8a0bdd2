//! The two syscalls std does not wrap that receiving a tree needs: `geteuid` and `mknod`.
//!
//! Each wrapper passes only values or a NUL-terminated copy of the path that lives for the
//! whole call, and checks the return value; none touches memory the caller owns, so both are
//! sound.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether the process runs with effective uid 0 (only then are owners applied).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Creates a device or fifo node; `file_type` is `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
pub fn mknod(path: &Path, file_type: u32, perm: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let dev = libc::makedev(major, minor);
    let mode = (file_type | (perm & 0o7777)) as libc::mode_t;
    // SAFETY: `c` is a valid NUL-terminated string alive for the call; mknod reads only it.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `(major, minor)` of a device number from `st_rdev`.
pub fn split_dev(rdev: u64) -> (u32, u32) {
    (
        libc::major(rdev as libc::dev_t),
        libc::minor(rdev as libc::dev_t),
    )
}
