//! The daemon's FileSend side against in-process clients: a `type=local` target that receives
//! packets (with kiln's own receiver, as the roles are simply swapped) and a `type=tar` target
//! that stores bytes.

mod filesync_common;

use bollard_buildkit_proto::fsutil::types::Packet;
use bollard_buildkit_proto::moby::filesync::packet::file_send_server::{
    FileSend as PacketFileSend, FileSendServer as PacketFileSendServer,
};
use bollard_buildkit_proto::moby::filesync::v1::file_send_server::{
    FileSend as BytesFileSend, FileSendServer as BytesFileSendServer,
};
use bollard_buildkit_proto::moby::filesync::v1::BytesMessage;
use filesync_common::{connect, pattern, snapshot};
use futures::{Stream, StreamExt};
use kiln_buildkit::session::filesend::{
    send_dir, send_stream, FileOptions, FileSendOutcome, FileSendWriter, SendOptions,
};
use kiln_buildkit::session::filesync::{receive, ReceiveOptions, SyncError, SyncStats};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

fn ascii_metadata<T>(request: &Request<T>) -> Vec<(String, String)> {
    request
        .metadata()
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.to_string(), v.to_str().unwrap().to_string()))
            }
            _ => None,
        })
        .collect()
}

/// A `type=local` client target: receives the daemon's tree into `dest`, merging, as
/// BuildKit's `syncTargetDiffCopy` does.
#[derive(Clone)]
struct DirTarget {
    dest: PathBuf,
    result: Arc<Mutex<Option<Result<SyncStats, String>>>>,
    metadata: Arc<Mutex<Vec<(String, String)>>>,
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

#[tonic::async_trait]
impl PacketFileSend for DirTarget {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        *self.metadata.lock().unwrap() = ascii_metadata(&request);
        let (tx, rx) = mpsc::unbounded_channel();
        let me = self.clone();
        tokio::spawn(async move {
            let opts = ReceiveOptions {
                merge: true,
                progress: None,
            };
            let r = receive(request.into_inner(), tx, &me.dest, &opts).await;
            *me.result.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
        });
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(rx).map(Ok),
        )))
    }
}

fn build_tree(root: &Path) {
    use filetime::{set_symlink_file_times, FileTime};
    let t = |s: i64| FileTime::from_unix_time(1_700_000_000 + s, 123_456_789);
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/empty.d")).unwrap();
    fs::write(root.join("usr/bin/app"), pattern(5 * 1024 * 1024 + 17, 3)).unwrap();
    fs::set_permissions(root.join("usr/bin/app"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(root.join("usr/bin/app"), root.join("usr/bin/app-link")).unwrap();
    std::os::unix::fs::symlink("app", root.join("usr/bin/alias")).unwrap();
    fs::write(root.join("etc/secret"), b"s3cr3t").unwrap();
    fs::set_permissions(root.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
    for (i, p) in [
        "usr/bin/app",
        "usr/bin/alias",
        "etc/secret",
        "etc/empty",
        "etc/empty.d",
        "usr/bin",
        "usr",
        "etc",
    ]
    .iter()
    .enumerate()
    {
        set_symlink_file_times(root.join(p), t(i as i64), t(i as i64)).unwrap();
    }
}

#[tokio::test]
async fn directory_round_trips_through_file_send() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("out");
    build_tree(&src);
    let dest = tmp.path().join("client-dest");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("kept"), b"merge keeps me").unwrap();
    let target = DirTarget {
        dest: dest.clone(),
        result: Default::default(),
        metadata: Default::default(),
    };
    let channel =
        connect(Server::builder().add_service(PacketFileSendServer::new(target.clone()))).await;
    let opts = SendOptions {
        exporter_id: 2,
        progress: None,
    };
    let stats = send_dir(channel, &src, &opts).await.unwrap();
    assert_eq!(stats.entries, 9);
    assert_eq!(stats.files_sent, 3, "hardlink not requested");

    let received = target
        .result
        .lock()
        .unwrap()
        .take()
        .expect("receiver finished");
    let received = received.unwrap();
    assert_eq!(received.files_received, 3);
    assert!(target
        .metadata
        .lock()
        .unwrap()
        .contains(&("buildkit-attachable-exporter-id".into(), "2".into())));

    let mut got = snapshot(&dest);
    let kept = got.remove("kept").expect("merge keeps existing files");
    assert_eq!(kept.kind, "file");
    assert_eq!(got, snapshot(&src));
}

#[tokio::test]
async fn sending_a_missing_directory_fails_with_its_path() {
    let target = DirTarget {
        dest: tempfile::tempdir().unwrap().keep(),
        result: Default::default(),
        metadata: Default::default(),
    };
    let channel = connect(Server::builder().add_service(PacketFileSendServer::new(target))).await;
    let err = send_dir(
        channel,
        Path::new("/nonexistent/out"),
        &SendOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/out"), "{err}");
}

/// A `type=tar` client target: collects the bytes, or declines.
#[derive(Clone, Default)]
struct FileTarget {
    decline: bool,
    data: Arc<Mutex<Vec<u8>>>,
    messages: Arc<Mutex<usize>>,
    metadata: Arc<Mutex<Vec<(String, String)>>>,
}

type BytesStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

#[tonic::async_trait]
impl BytesFileSend for FileTarget {
    type DiffCopyStream = BytesStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<BytesStream>, Status> {
        *self.metadata.lock().unwrap() = ascii_metadata(&request);
        if self.decline {
            return Err(Status::already_exists("target already exists"));
        }
        // Like BuildKit's `writeTargetFile`: read to EOF, then end the call.
        let mut incoming = request.into_inner();
        while let Some(m) = incoming.message().await? {
            self.data.lock().unwrap().extend_from_slice(&m.data);
            *self.messages.lock().unwrap() += 1;
        }
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
}

#[tokio::test]
async fn byte_stream_reaches_the_file_target_with_headers() {
    let target = FileTarget::default();
    let channel =
        connect(Server::builder().add_service(BytesFileSendServer::new(target.clone()))).await;
    let data = pattern(3 * 1024 * 1024 + 5, 11);
    let opts = FileOptions {
        exporter_id: 1,
        metadata: BTreeMap::from([
            (
                "containerimage.digest".to_string(),
                "sha256:abc".to_string(),
            ),
            ("bad\nkey".to_string(), "skipped".to_string()),
        ]),
    };
    let outcome = send_stream(channel, &data[..], &opts).await.unwrap();
    assert_eq!(
        outcome,
        FileSendOutcome::Written {
            bytes: data.len() as u64
        }
    );
    assert_eq!(*target.data.lock().unwrap(), data);
    assert!(
        *target.messages.lock().unwrap() <= 13,
        "messages are 256 KiB"
    );
    let md = target.metadata.lock().unwrap().clone();
    assert!(md.contains(&("buildkit-attachable-exporter-id".into(), "1".into())));
    assert!(md.contains(&(
        "exporter-md-containerimage.digest".into(),
        "sha256:abc".into()
    )));
}

#[tokio::test]
async fn writer_streams_small_writes_and_finishes() {
    let target = FileTarget::default();
    let channel =
        connect(Server::builder().add_service(BytesFileSendServer::new(target.clone()))).await;
    let mut w = FileSendWriter::open(channel, &FileOptions::default());
    for i in 0..1000u32 {
        w.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
    }
    let outcome = w.finish().await.unwrap();
    let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        outcome,
        FileSendOutcome::Written {
            bytes: want.len() as u64
        }
    );
    assert_eq!(*target.data.lock().unwrap(), want.as_bytes());
    assert!(target
        .metadata
        .lock()
        .unwrap()
        .contains(&("buildkit-attachable-exporter-id".into(), "0".into())));
}

#[tokio::test]
async fn declined_file_target_is_not_an_error() {
    let target = FileTarget {
        decline: true,
        ..Default::default()
    };
    let channel = connect(Server::builder().add_service(BytesFileSendServer::new(target))).await;
    let data = pattern(2 * 1024 * 1024, 5);
    let outcome = send_stream(channel, &data[..], &FileOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome, FileSendOutcome::Declined);
}

#[tokio::test]
async fn failing_file_target_reports_its_status() {
    #[derive(Clone)]
    struct Broken;
    #[tonic::async_trait]
    impl BytesFileSend for Broken {
        type DiffCopyStream = BytesStream;
        async fn diff_copy(
            &self,
            _request: Request<Streaming<BytesMessage>>,
        ) -> Result<Response<BytesStream>, Status> {
            Err(Status::internal("exporter 3 not found"))
        }
    }
    let channel = connect(Server::builder().add_service(BytesFileSendServer::new(Broken))).await;
    let data = pattern(1024 * 1024, 5);
    let err = send_stream(channel, &data[..], &FileOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SyncError::Rpc { status, .. } if status.message() == "exporter 3 not found"),
        "{err}"
    );
}
