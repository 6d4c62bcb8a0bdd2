//! Shared by the filesync tests: an in-process gRPC connection, tree inspection.
#![allow(dead_code)]

use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Uri};

/// Serves `router` on one end of an in-memory pipe and dials a channel over the other, the
/// way the session tunnel does.
pub async fn connect(router: Router) -> Channel {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io))),
    );
    let slot = Arc::new(Mutex::new(Some(client_io)));
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = slot.lock().unwrap().take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("already connected"))
            }
        }))
        .await
        .expect("connect")
}

/// What a tree looks like, entry by entry: kind, permission bits, size, mtime (ns), symlink
/// target or content digest, and for hardlinked files the first path sharing the inode.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime: i64,
    pub detail: String,
    pub linked_to: Option<String>,
}

pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let md = entry.path().symlink_metadata().unwrap();
        let ft = md.file_type();
        let (kind, detail) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(entry.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string(),
            )
        } else if ft.is_file() {
            let data = fs::read(entry.path()).unwrap();
            (
                "file",
                format!("{} bytes, sum {}", data.len(), checksum(&data)),
            )
        } else {
            ("other", String::new())
        };
        let linked_to = if ft.is_file() && md.nlink() > 1 {
            Some(inodes.entry(md.ino()).or_insert(rel.clone()).clone())
        } else {
            None
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: md.permissions().mode() & 0o7777,
                mtime: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                detail,
                linked_to,
            },
        );
    }
    out
}

pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Deterministic, incompressible-looking content.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}
