//! Go's `os.FileMode`, which fsutil puts on the wire as `Stat.mode`, and its mapping to and
//! from unix `st_mode`. The two disagree on everything but the permission bits: Go keeps the
//! file type and the setuid/setgid/sticky bits in the high bits (`io/fs/fs.go`), and fsutil
//! sends `uint32(fi.Mode())` unchanged (`fsutil/stat.go` `mkstat`).

/// `os.ModeDir`.
pub const DIR: u32 = 1 << 31;
/// `os.ModeSymlink`.
pub const SYMLINK: u32 = 1 << 27;
/// `os.ModeDevice` (block device; with [`CHAR_DEVICE`] a character device).
pub const DEVICE: u32 = 1 << 26;
/// `os.ModeNamedPipe`.
pub const NAMED_PIPE: u32 = 1 << 25;
/// `os.ModeSocket`; fsutil senders clear it (`mkstat`: `stat.Mode &^= ModeSocket`).
pub const SOCKET: u32 = 1 << 24;
/// `os.ModeSetuid`.
pub const SETUID: u32 = 1 << 23;
/// `os.ModeSetgid`.
pub const SETGID: u32 = 1 << 22;
/// `os.ModeCharDevice`, only together with [`DEVICE`].
pub const CHAR_DEVICE: u32 = 1 << 21;
/// `os.ModeSticky`.
pub const STICKY: u32 = 1 << 20;
/// `os.ModeIrregular`.
pub const IRREGULAR: u32 = 1 << 19;
/// `os.ModeType`: every bit that makes an entry something other than a regular file.
pub const TYPE: u32 = DIR | SYMLINK | NAMED_PIPE | SOCKET | DEVICE | CHAR_DEVICE | IRREGULAR;
/// `os.ModePerm`.
pub const PERM: u32 = 0o777;

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;

/// What an entry is, decided from its Go mode the way fsutil's `DiskWriter.HandleChange`
/// decides it (directory, then device or pipe, then symlink, then hardlink or file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    /// A regular file; with a `linkname` it is a hardlink to an earlier entry.
    File,
    /// Sockets and `ModeIrregular`: not representable, rejected.
    Unsupported,
}

pub fn kind(go_mode: u32) -> Kind {
    if go_mode & DIR != 0 {
        Kind::Dir
    } else if go_mode & DEVICE != 0 {
        if go_mode & CHAR_DEVICE != 0 {
            Kind::CharDevice
        } else {
            Kind::BlockDevice
        }
    } else if go_mode & NAMED_PIPE != 0 {
        Kind::Fifo
    } else if go_mode & SYMLINK != 0 {
        Kind::Symlink
    } else if go_mode & (SOCKET | IRREGULAR | CHAR_DEVICE) != 0 {
        Kind::Unsupported
    } else {
        Kind::File
    }
}

/// Whether the receiver may request the data of an entry: fsutil's `fileCanRequestData`
/// (`send.go`), which both sides must agree on.
pub fn can_request_data(go_mode: u32) -> bool {
    go_mode & TYPE == 0
}

/// Go's mode for a unix `st_mode`, as `os.Lstat` computes it (`os/stat_linux.go`
/// `fillFileStatFromSys`).
pub fn from_unix(st_mode: u32) -> u32 {
    let mut m = st_mode & PERM;
    m |= match st_mode & S_IFMT {
        S_IFBLK => DEVICE,
        S_IFCHR => DEVICE | CHAR_DEVICE,
        S_IFDIR => DIR,
        S_IFIFO => NAMED_PIPE,
        S_IFLNK => SYMLINK,
        S_IFSOCK => SOCKET,
        _ => 0,
    };
    if st_mode & S_ISUID != 0 {
        m |= SETUID;
    }
    if st_mode & S_ISGID != 0 {
        m |= SETGID;
    }
    if st_mode & S_ISVTX != 0 {
        m |= STICKY;
    }
    m
}

/// The unix permission bits (with setuid/setgid/sticky) for `chmod`, as Go's `syscallMode`
/// (`os/file_posix.go`) computes them.
pub fn unix_permissions(go_mode: u32) -> u32 {
    let mut m = go_mode & PERM;
    if go_mode & SETUID != 0 {
        m |= S_ISUID;
    }
    if go_mode & SETGID != 0 {
        m |= S_ISGID;
    }
    if go_mode & STICKY != 0 {
        m |= S_ISVTX;
    }
    m
}

/// The `st_mode` file-type bits for `mknod`.
pub fn unix_node_type(kind: Kind) -> Option<u32> {
    match kind {
        Kind::BlockDevice => Some(S_IFBLK),
        Kind::CharDevice => Some(S_IFCHR),
        Kind::Fifo => Some(S_IFIFO),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_modes_map_to_go_file_modes() {
        let cases: &[(u32, u32)] = &[
            (0o100644, 0o644),
            (0o100755 | S_ISUID, 0o755 | SETUID),
            (0o102755, 0o755 | SETGID),
            (0o041777, DIR | STICKY | 0o777),
            (0o040755, DIR | 0o755),
            (0o120777, SYMLINK | 0o777),
            (0o060660, DEVICE | 0o660),
            (0o020666, DEVICE | CHAR_DEVICE | 0o666),
            (0o010644, NAMED_PIPE | 0o644),
            (0o140755, SOCKET | 0o755),
        ];
        for &(unix, go) in cases {
            assert_eq!(from_unix(unix), go, "st_mode {unix:o}");
            assert_eq!(unix_permissions(go), unix & 0o7777, "go mode {go:#x}");
        }
    }

    #[test]
    fn kinds_follow_the_disk_writers_precedence() {
        assert_eq!(kind(DIR | 0o755), Kind::Dir);
        assert_eq!(kind(SYMLINK | 0o777), Kind::Symlink);
        assert_eq!(kind(DEVICE | CHAR_DEVICE), Kind::CharDevice);
        assert_eq!(kind(DEVICE), Kind::BlockDevice);
        assert_eq!(kind(NAMED_PIPE), Kind::Fifo);
        assert_eq!(kind(SOCKET | 0o755), Kind::Unsupported);
        assert_eq!(kind(0o644 | SETUID), Kind::File);
        assert!(can_request_data(0o4755 | SETUID | SETGID | STICKY));
        assert!(!can_request_data(SYMLINK | 0o777));
    }
}
