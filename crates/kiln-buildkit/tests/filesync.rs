//! `receive_dir` against a scripted fsutil sender serving `FileSync/DiffCopy` in process, the
//! way a `buildctl` client serves its `--local` directories.

mod filesync_common;

use bollard_buildkit_proto::fsutil::types::packet::PacketType;
use bollard_buildkit_proto::fsutil::types::{Packet, Stat};
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::{FileSync, FileSyncServer};
use filesync_common::{connect, names, pattern, snapshot};
use futures::{Stream, StreamExt};
use kiln_buildkit::session::filesync::mode::{DIR, NAMED_PIPE, SETUID, SOCKET, STICKY, SYMLINK};
use kiln_buildkit::session::filesync::{receive_dir, Progress, SyncError, SyncOptions, SyncStats};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

const T0: i64 = 1_700_000_000_123_456_789;

/// What the sender saw.
#[derive(Default, Debug)]
struct Record {
    metadata: Vec<(String, String)>,
    requests: Vec<u32>,
    fin: bool,
    error_from_receiver: Option<String>,
}

/// A minimal fsutil sender (`fsutil/send.go`): sends `packets` (the listing, or anything a
/// test wants), then answers each REQ with the content of that ID in 32 KiB DATA packets and
/// an empty DATA, and FIN with FIN.
#[derive(Clone, Default)]
struct ScriptedSender {
    packets: Vec<Packet>,
    contents: HashMap<u32, Vec<u8>>,
    refuse: Option<Status>,
    record: Arc<Mutex<Record>>,
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

#[tonic::async_trait]
impl FileSync for ScriptedSender {
    type DiffCopyStream = PacketStream;
    type TarStreamStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        {
            let mut record = self.record.lock().unwrap();
            for kv in request.metadata().iter() {
                if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                    record
                        .metadata
                        .push((k.to_string(), v.to_str().unwrap().to_string()));
                }
            }
        }
        if let Some(status) = &self.refuse {
            return Err(status.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut incoming = request.into_inner();
        let me = self.clone();
        tokio::spawn(async move {
            for p in me.packets.clone() {
                if tx.send(Ok(p)).is_err() {
                    return;
                }
            }
            while let Some(Ok(p)) = incoming.next().await {
                match PacketType::try_from(p.r#type) {
                    Ok(PacketType::PacketReq) => {
                        me.record.lock().unwrap().requests.push(p.id);
                        let data = me.contents.get(&p.id).cloned().unwrap_or_default();
                        for chunk in data.chunks(32 * 1024) {
                            let _ = tx.send(Ok(packet(PacketType::PacketData, p.id, chunk)));
                        }
                        let _ = tx.send(Ok(packet(PacketType::PacketData, p.id, b"")));
                    }
                    Ok(PacketType::PacketFin) => {
                        me.record.lock().unwrap().fin = true;
                        let _ = tx.send(Ok(packet(PacketType::PacketFin, 0, b"")));
                        return;
                    }
                    Ok(PacketType::PacketErr) => {
                        me.record.lock().unwrap().error_from_receiver =
                            Some(String::from_utf8_lossy(&p.data).into_owned());
                        return;
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn tar_stream(
        &self,
        _request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        Err(Status::unimplemented("tar stream"))
    }
}

fn packet(kind: PacketType, id: u32, data: &[u8]) -> Packet {
    Packet {
        r#type: kind as i32,
        id,
        data: data.to_vec(),
        ..Default::default()
    }
}

fn stat_packet(stat: Stat) -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(stat),
        ..Default::default()
    }
}

fn end_of_listing() -> Packet {
    packet(PacketType::PacketStat, 0, b"")
}

/// One listing entry: `mode` is a Go `os.FileMode`.
struct E {
    path: &'static str,
    mode: u32,
    mtime: i64,
    linkname: &'static str,
    content: Vec<u8>,
    uid: u32,
}

fn dir(path: &'static str, mode: u32, mtime: i64) -> E {
    E {
        path,
        mode: DIR | mode,
        mtime,
        linkname: "",
        content: vec![],
        uid: 0,
    }
}

fn file(path: &'static str, mode: u32, mtime: i64, content: &[u8]) -> E {
    E {
        path,
        mode,
        mtime,
        linkname: "",
        content: content.to_vec(),
        uid: 0,
    }
}

fn symlink(path: &'static str, target: &'static str, mtime: i64) -> E {
    E {
        path,
        mode: SYMLINK | 0o777,
        mtime,
        linkname: target,
        content: vec![],
        uid: 0,
    }
}

fn hardlink(path: &'static str, mode: u32, mtime: i64, target: &'static str) -> E {
    E {
        path,
        mode,
        mtime,
        linkname: target,
        content: vec![],
        uid: 0,
    }
}

/// An honest sender of `entries` (listed in the given order, IDs = index).
fn sender(entries: &[E]) -> ScriptedSender {
    let mut s = ScriptedSender::default();
    for (i, e) in entries.iter().enumerate() {
        let size = if e.mode & SYMLINK != 0 {
            e.linkname.len()
        } else {
            e.content.len()
        };
        s.packets.push(stat_packet(Stat {
            path: e.path.into(),
            mode: e.mode,
            uid: e.uid,
            gid: e.uid,
            size: size as i64,
            mod_time: e.mtime,
            linkname: e.linkname.into(),
            ..Default::default()
        }));
        s.contents.insert(i as u32, e.content.clone());
    }
    s.packets.push(end_of_listing());
    s
}

async fn sync(s: &ScriptedSender, dest: &Path, opts: &SyncOptions) -> Result<SyncStats, SyncError> {
    let channel = connect(Server::builder().add_service(FileSyncServer::new(s.clone()))).await;
    receive_dir(channel, dest, opts).await
}

fn context() -> SyncOptions {
    SyncOptions {
        dir_name: "context".into(),
        ..Default::default()
    }
}

fn mode(path: &Path) -> u32 {
    path.symlink_metadata().unwrap().mode() & 0o7777
}

#[tokio::test]
async fn tree_is_received_with_modes_mtimes_links_and_owners() {
    let big = pattern(5 * 1024 * 1024, 7);
    let mut readme = file("readme", 0o644, T0 + 9, b"hello\n");
    readme.uid = 1234;
    let entries = [
        dir("bin", 0o755, T0 + 1),
        file("bin/tool", 0o755 | SETUID, T0 + 2, b"#!/bin/sh\necho hi\n"),
        dir("data", 0o700, T0 + 3),
        file("data/big", 0o644, T0 + 4, &big),
        file("data/empty", 0o600, T0 + 5, b""),
        hardlink("data/hard", 0o644, T0 + 4, "data/big"),
        symlink("data/link", "big", T0 + 6),
        dir("data/nested", 0o755, T0 + 10),
        dir("data/nested/deeper", 0o555, T0 + 11),
        file("data/nested/deeper/x", 0o444, T0 + 12, b"x"),
        dir("docs", 0o777 | STICKY, T0 + 7),
        file("docs/a.txt", 0o444, T0 + 8, b"read only"),
        readme,
    ];
    let s = sender(&entries);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("ctx");
    let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let seen2 = seen.clone();
    let opts = SyncOptions {
        progress: Some(Arc::new(move |p| seen2.lock().unwrap().push(p))),
        ..context()
    };
    let stats = sync(&s, &dest, &opts).await.unwrap();

    assert_eq!(stats.entries, 13);
    assert_eq!(stats.files_received, 6, "hardlink is not requested");
    assert_eq!(stats.bytes_received, big.len() as u64 + 18 + 1 + 9 + 6);
    let record = s.record.lock().unwrap();
    assert_eq!(record.requests.len(), 6);
    assert!(!record.requests.contains(&5), "hardlink id 5 requested");
    assert!(record.fin);

    let snap = snapshot(&dest);
    assert_eq!(
        snap.keys().collect::<Vec<_>>(),
        [
            "bin",
            "bin/tool",
            "data",
            "data/big",
            "data/empty",
            "data/hard",
            "data/link",
            "data/nested",
            "data/nested/deeper",
            "data/nested/deeper/x",
            "docs",
            "docs/a.txt",
            "readme"
        ]
    );
    for e in &entries {
        let node = &snap[e.path];
        let want_mode = kiln_buildkit::session::filesync::mode::unix_permissions(e.mode);
        if e.mode & SYMLINK == 0 {
            assert_eq!(node.mode, want_mode, "mode of {}", e.path);
        }
        assert_eq!(node.mtime, e.mtime, "mtime of {}", e.path);
    }
    assert_eq!(fs::read(dest.join("data/big")).unwrap(), big);
    assert_eq!(fs::read(dest.join("data/empty")).unwrap(), b"");
    assert_eq!(
        fs::read_link(dest.join("data/link")).unwrap().to_str(),
        Some("big")
    );
    assert_eq!(snap["data/hard"].linked_to.as_deref(), Some("data/big"));
    let md = dest.join("readme").metadata().unwrap();
    if md.uid() != 1234 {
        // Only a root receiver applies owners.
        assert_ne!(euid(), 0, "root must chown");
    }
    assert_eq!(mode(&dest.join("bin/tool")) & 0o4000, 0o4000, "setuid kept");

    // No staging leftovers, and progress ended with `done`.
    assert_eq!(names(&dest), ["bin", "data", "docs", "readme"]);
    let seen = seen.lock().unwrap();
    let last = seen.last().unwrap();
    assert!(last.done && last.files == 6 && last.bytes > big.len() as u64);
}

fn euid() -> u32 {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

#[tokio::test]
async fn filters_reach_the_sender_as_metadata() {
    let s = sender(&[file("Dockerfile", 0o644, T0, b"FROM scratch\n")]);
    let tmp = tempfile::tempdir().unwrap();
    let opts = SyncOptions {
        dir_name: "dockerfile".into(),
        include_patterns: vec!["src/**".into(), "*.go".into()],
        exclude_patterns: vec!["*.log".into(), "!keep.log".into()],
        follow_paths: vec!["Dockerfile".into(), "Dockerfile.dockerignore".into()],
        ..Default::default()
    };
    sync(&s, tmp.path(), &opts).await.unwrap();
    let md = s.record.lock().unwrap().metadata.clone();
    let values = |key: &str| -> Vec<String> {
        md.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(values("dir-name"), ["dockerfile"]);
    assert_eq!(values("include-patterns"), ["src/**", "*.go"]);
    assert_eq!(values("exclude-patterns"), ["*.log", "!keep.log"]);
    assert_eq!(
        values("followpaths"),
        ["Dockerfile", "Dockerfile.dockerignore"]
    );
    assert!(values("override-excludes").is_empty());
    assert!(md.iter().all(|(k, _)| !k.ends_with("-encoded")));

    // Non-ASCII values are escaped, with the `-encoded` marker v0.12+ clients decode.
    let s = sender(&[]);
    let opts = SyncOptions {
        exclude_patterns: vec!["données/*".into()],
        override_excludes: true,
        ..context()
    };
    sync(&s, tmp.path(), &opts).await.unwrap();
    let md = s.record.lock().unwrap().metadata.clone();
    assert!(md.contains(&("exclude-patterns".into(), "donn%C3%A9es%2F%2A".into())));
    assert!(md.contains(&("exclude-patterns-encoded".into(), "1".into())));
    assert!(md.contains(&("override-excludes".into(), "true".into())));
}

#[tokio::test]
async fn second_sync_requests_only_changes_and_deletes_what_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("ctx");
    let first = sender(&[
        file("a", 0o644, T0, b"same"),
        file("b", 0o644, T0, b"old"),
        file("c", 0o644, T0, b"gone soon"),
        dir("d", 0o755, T0),
        file("d/x", 0o644, T0, b"in a dir that goes"),
        file("e", 0o644, T0, b"becomes a dir"),
        dir("f", 0o755, T0),
        file("f/y", 0o644, T0, b"dir becomes a symlink"),
        file("g", 0o644, T0, b"mode changes"),
    ]);
    let stats = sync(&first, &dest, &context()).await.unwrap();
    assert_eq!(stats.files_received, 7);
    let inode_a = dest.join("a").metadata().unwrap().ino();
    // Layers hard-link synced files (`Session::local_dirs_are_private`): what a later sync
    // changes must be a new inode, never a write to the old one.
    let layer = tmp.path().join("layer");
    fs::create_dir(&layer).unwrap();
    for name in ["b", "g"] {
        fs::hard_link(dest.join(name), layer.join(name)).unwrap();
    }

    let second = sender(&[
        file("a", 0o644, T0, b"same"),
        file("b", 0o644, T0 + 1, b"new!"),
        dir("e", 0o755, T0),
        file("e/z", 0o600, T0, b"z"),
        symlink("f", "a", T0),
        file("g", 0o600, T0, b"mode changes"),
        file("h", 0o644, T0, b"added"),
    ]);
    let stats = sync(&second, &dest, &context()).await.unwrap();
    assert_eq!(
        second.record.lock().unwrap().requests,
        [1, 3, 5, 6],
        "only b, e/z, g and h are requested"
    );
    assert_eq!(stats.files_unchanged, 1);
    assert_eq!(stats.files_received, 4);
    assert_eq!(stats.removed, 2, "c and d");
    assert_eq!(names(&dest), ["a", "b", "e", "f", "g", "h"]);
    assert_eq!(
        dest.join("a").metadata().unwrap().ino(),
        inode_a,
        "a untouched"
    );
    assert_eq!(fs::read(dest.join("b")).unwrap(), b"new!");
    assert_eq!(fs::read(dest.join("e/z")).unwrap(), b"z");
    assert_eq!(fs::read_link(dest.join("f")).unwrap().to_str(), Some("a"));
    assert_eq!(mode(&dest.join("g")), 0o600);
    assert_eq!(
        fs::read(layer.join("b")).unwrap(),
        b"old",
        "the linked b is untouched"
    );
    assert_eq!(mode(&layer.join("g")), 0o644, "the linked g keeps its mode");

    // A third, identical sync transfers nothing.
    let third = sender(&[
        file("a", 0o644, T0, b"same"),
        file("b", 0o644, T0 + 1, b"new!"),
        dir("e", 0o755, T0),
        file("e/z", 0o600, T0, b"z"),
        symlink("f", "a", T0),
        file("g", 0o600, T0, b"mode changes"),
        file("h", 0o644, T0, b"added"),
    ]);
    let stats = sync(&third, &dest, &context()).await.unwrap();
    assert!(third.record.lock().unwrap().requests.is_empty());
    assert_eq!(
        (stats.files_received, stats.files_unchanged, stats.removed),
        (0, 5, 0)
    );
}

/// Runs a hostile listing and checks it fails and writes nothing outside `dest`.
async fn rejected(build: impl FnOnce(&Path) -> ScriptedSender) -> SyncError {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"root:x:0:0").unwrap();
    let dest = tmp.path().join("ctx");
    let s = build(&outside);
    let err = sync(&s, &dest, &context())
        .await
        .expect_err("hostile stream accepted");
    assert_eq!(names(tmp.path()), ["ctx", "outside"]);
    assert_eq!(names(&outside), ["passwd"]);
    assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"root:x:0:0");
    assert!(
        names(&dest).iter().all(|n| !n.starts_with(".kiln-sync")),
        "staging left behind"
    );
    err
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test]
async fn escaping_paths_are_rejected() {
    for bad in ["../x", "a/../../x", "..", ".", "", "a//b"] {
        let err = rejected(|_| sender(&[file(bad, 0o644, T0, b"evil")])).await;
        assert!(
            matches!(&err, SyncError::InvalidEntry { path, .. } if path == bad),
            "{bad:?}: {err}"
        );
    }
    let err = rejected(|outside| {
        let abs = leak(format!("{}/abs", outside.display()));
        sender(&[file(abs, 0o644, T0, b"evil")])
    })
    .await;
    assert!(err.to_string().contains("absolute path"), "{err}");
}

#[tokio::test]
async fn writes_never_go_through_a_received_symlink() {
    // `link -> <outside>` then `link/passwd`: the parent of `link/passwd` is not a directory
    // of the listing, so the entry is out of order and rejected.
    let err = rejected(|outside| {
        let target = leak(outside.display().to_string());
        sender(&[
            symlink("link", target, T0),
            file("link/passwd", 0o644, T0, b"pwned"),
        ])
    })
    .await;
    assert!(
        matches!(&err, SyncError::InvalidEntry { path, reason } if path == "link/passwd" && reason.contains("out of order")),
        "{err}"
    );

    // Same with a directory entry trying to reopen the symlink.
    let err = rejected(|outside| {
        let target = leak(outside.display().to_string());
        sender(&[
            symlink("link", target, T0),
            dir("link", 0o755, T0),
            file("link/passwd", 0o644, T0, b"pwned"),
        ])
    })
    .await;
    assert!(err.to_string().contains("\"link\""), "{err}");

    // A hardlink may only point at an earlier regular file, never a symlink.
    let err = rejected(|outside| {
        let target = leak(format!("{}/passwd", outside.display()));
        sender(&[
            symlink("evil", target, T0),
            hardlink("h", 0o644, T0, "evil"),
        ])
    })
    .await;
    assert!(err.to_string().contains("unknown path"), "{err}");
}

#[tokio::test]
async fn duplicate_and_unordered_paths_are_rejected() {
    let err = rejected(|_| sender(&[file("a", 0o644, T0, b"1"), file("a", 0o644, T0, b"2")])).await;
    assert!(
        err.to_string().contains("out of order or duplicated"),
        "{err}"
    );
    let err = rejected(|_| sender(&[file("b", 0o644, T0, b"1"), file("a", 0o644, T0, b"2")])).await;
    assert!(
        matches!(err, SyncError::InvalidEntry { ref path, .. } if path == "a"),
        "{err}"
    );
}

#[tokio::test]
async fn unrequested_and_unknown_data_is_rejected() {
    // DATA for a directory's ID (never requestable) and for an ID past the listing.
    for id in [0u32, 99] {
        let err = rejected(|_| {
            let mut s = sender(&[dir("d", 0o755, T0)]);
            s.packets.push(packet(PacketType::PacketData, id, b"evil"));
            s
        })
        .await;
        assert!(
            matches!(&err, SyncError::Protocol(m) if m.contains(&format!("invalid file request {id}"))),
            "{err}"
        );
    }
}

#[tokio::test]
async fn malformed_streams_fail_cleanly() {
    // Sockets cannot be created.
    let err = rejected(|_| sender(&[file("sock", SOCKET | 0o755, T0, b"")])).await;
    assert!(err.to_string().contains("unsupported file type"), "{err}");

    // A STAT after the end of the listing.
    let err = rejected(|_| {
        let mut s = sender(&[]);
        s.packets.push(stat_packet(Stat {
            path: "late".into(),
            mode: 0o644,
            ..Default::default()
        }));
        s
    })
    .await;
    assert!(
        err.to_string().contains("after the end of the listing"),
        "{err}"
    );

    // The sender gives up with ERR.
    let err = rejected(|_| {
        let mut s = sender(&[]);
        s.packets
            .insert(0, packet(PacketType::PacketErr, 0, b"disk on fire"));
        s
    })
    .await;
    assert!(
        matches!(&err, SyncError::Peer(m) if m == "disk on fire"),
        "{err}"
    );

    // The sender hangs up mid-listing.
    let tmp = tempfile::tempdir().unwrap();
    let mut s = sender(&[file("a", 0o644, T0, b"a")]);
    s.packets.pop(); // no end of listing
    s.packets.push(packet(PacketType::PacketFin, 0, b""));
    let err = sync(&s, tmp.path(), &context()).await.unwrap_err();
    assert!(matches!(err, SyncError::Protocol(_)), "{err}");
}

#[tokio::test]
async fn missing_local_is_reported_as_not_found() {
    let s = ScriptedSender {
        refuse: Some(Status::not_found("no access allowed to dir \"nope\"")),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let opts = SyncOptions {
        dir_name: "nope".into(),
        ..Default::default()
    };
    let err = sync(&s, tmp.path(), &opts).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

#[tokio::test]
async fn fifos_are_created() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sender(&[file("pipe", NAMED_PIPE | 0o640, T0, b"")]);
    sync(&s, tmp.path(), &context()).await.unwrap();
    use std::os::unix::fs::FileTypeExt;
    let md = tmp.path().join("pipe").symlink_metadata().unwrap();
    assert!(md.file_type().is_fifo());
    assert_eq!(md.mode() & 0o777, 0o640);
    assert!(s.record.lock().unwrap().requests.is_empty());
}

#[tokio::test]
async fn symlink_from_a_previous_sync_does_not_redirect_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dest = tmp.path().join("ctx");
    let target = leak(outside.display().to_string());
    let first = sender(&[symlink("d", target, T0), symlink("f", target, T0)]);
    sync(&first, &dest, &context()).await.unwrap();
    assert!(dest
        .join("d")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());

    // Now `d` is a directory and `f` a file: both symlinks are replaced, not followed.
    let second = sender(&[
        dir("d", 0o755, T0),
        file("d/passwd", 0o644, T0, b"inside"),
        file("f", 0o644, T0, b"file"),
    ]);
    sync(&second, &dest, &context()).await.unwrap();
    assert!(names(&outside).is_empty(), "wrote through a symlink");
    assert!(dest.join("d").symlink_metadata().unwrap().is_dir());
    assert_eq!(fs::read(dest.join("d/passwd")).unwrap(), b"inside");
    assert!(dest.join("f").symlink_metadata().unwrap().is_file());
}

#[tokio::test]
async fn read_only_directories_can_be_synced_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("ctx");
    let first = sender(&[
        dir("ro", 0o555, T0),
        file("ro/a", 0o444, T0, b"a"),
        file("ro/b", 0o444, T0, b"b"),
        dir("ro/sub", 0o500, T0),
        file("ro/sub/c", 0o400, T0, b"c"),
    ]);
    sync(&first, &dest, &context()).await.unwrap();
    assert_eq!(mode(&dest.join("ro")), 0o555);

    let second = sender(&[dir("ro", 0o555, T0 + 1), file("ro/a", 0o444, T0 + 1, b"A")]);
    let stats = sync(&second, &dest, &context()).await.unwrap();
    assert_eq!(stats.removed, 2, "ro/b and ro/sub");
    assert_eq!(names(&dest.join("ro")), ["a"]);
    assert_eq!(fs::read(dest.join("ro/a")).unwrap(), b"A");
    assert_eq!(mode(&dest.join("ro")), 0o555);
    let md = dest.join("ro").metadata().unwrap();
    assert_eq!(md.mtime() * 1_000_000_000 + md.mtime_nsec(), T0 + 1);
}
