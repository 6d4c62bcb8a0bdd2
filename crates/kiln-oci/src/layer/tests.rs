//! Layer apply and creation tests: whiteouts, opaque dirs, links, hostile tars, round trips.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::*;
use crate::store::ContentStore;

/// Builds a tar in memory with names written verbatim (so hostile names survive).
#[derive(Default)]
struct TarBuilder {
    b: Option<tar::Builder<Vec<u8>>>,
}

impl TarBuilder {
    fn new() -> Self {
        TarBuilder {
            b: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn raw(mut self, name: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) -> Self {
        let mut h = Header::new_ustar();
        h.as_old_mut().name.fill(0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.b.as_mut().unwrap().append(&h, data).unwrap();
        self
    }
    fn file(self, name: &str, data: &str) -> Self {
        self.raw(name, EntryType::Regular, 0o644, "", data.as_bytes())
    }
    fn dir(self, name: &str) -> Self {
        self.raw(name, EntryType::Directory, 0o755, "", b"")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(name, EntryType::Symlink, 0o777, target, b"")
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(name, EntryType::Link, 0o644, target, b"")
    }
    fn bytes(mut self) -> Vec<u8> {
        self.b.take().unwrap().into_inner().unwrap()
    }
}

fn apply(tar: Vec<u8>, dest: &Path) -> Result<ApplyStats, LayerError> {
    let opts = ApplyOptions {
        layer_name: Some("sha256:test".into()),
        ..Default::default()
    };
    apply_layer(&tar[..], dest, &opts)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

/// Every path under `root` (relative) — to prove nothing else appeared.
fn listing(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn whiteout_removes_lower_files_and_directories() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    fs::create_dir_all(d.join("etc/sub")).unwrap();
    fs::write(d.join("etc/keep"), "k").unwrap();
    fs::write(d.join("etc/gone"), "g").unwrap();
    fs::write(d.join("etc/sub/x"), "x").unwrap();
    let tar = TarBuilder::new()
        .file("etc/.wh.gone", "")
        .file("etc/.wh.sub", "")
        .file("etc/.wh.never-existed", "")
        .bytes();
    let stats = apply(tar, d).unwrap();
    assert_eq!(stats.whiteouts, 3);
    assert_eq!(listing(d), ["etc", "etc/keep"]);
}

#[test]
fn opaque_dir_clears_lower_content_but_keeps_this_layers_entries() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    fs::create_dir_all(d.join("app/lib")).unwrap();
    fs::write(d.join("app/old"), "o").unwrap();
    fs::write(d.join("app/lib/old"), "o").unwrap();
    fs::write(d.join("other"), "keep").unwrap();
    // One entry before the marker and one after: both stay.
    let tar = TarBuilder::new()
        .dir("app/")
        .file("app/lib/early", "e")
        .file("app/.wh..wh..opq", "")
        .file("app/late", "l")
        .bytes();
    apply(tar, d).unwrap();
    assert_eq!(
        listing(d),
        ["app", "app/late", "app/lib", "app/lib/early", "other"]
    );
}

#[test]
fn hardlinks_share_an_inode_and_symlinks_keep_their_target() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let tar = TarBuilder::new()
        .file("bin/busybox", "bb")
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("./bin/ls", "./bin/busybox")
        .symlink("bin/link", "/bin/busybox")
        .bytes();
    apply(tar, d).unwrap();
    let a = fs::metadata(d.join("bin/busybox")).unwrap();
    assert_eq!(a.nlink(), 3);
    assert_eq!(fs::metadata(d.join("bin/sh")).unwrap().ino(), a.ino());
    assert_eq!(
        fs::read_link(d.join("bin/link")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(a.mtime(), 1_600_000_000);
}

#[test]
fn existing_symlink_at_entry_path_is_replaced_not_written_through() {
    let sandbox = tempfile::tempdir().unwrap();
    let outside = sandbox.path().join("outside");
    fs::write(&outside, "precious").unwrap();
    let d = sandbox.path().join("root");
    fs::create_dir(&d).unwrap();
    symlink(&outside, d.join("f")).unwrap();
    apply(TarBuilder::new().file("f", "new").bytes(), &d).unwrap();
    assert_eq!(read(&outside), "precious");
    assert_eq!(read(&d.join("f")), "new");
    assert!(!fs::symlink_metadata(d.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_directory_replaced_by_a_file_and_back() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    fs::create_dir_all(d.join("x/y")).unwrap();
    fs::write(d.join("f"), "file").unwrap();
    apply(
        TarBuilder::new()
            .file("x", "now a file")
            .dir("f/")
            .file("f/inner", "i")
            .bytes(),
        d,
    )
    .unwrap();
    assert_eq!(read(&d.join("x")), "now a file");
    assert_eq!(read(&d.join("f/inner")), "i");
}

/// A sandbox whose `root` is the layer destination and whose other contents must not change.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), "root:x:0:0").unwrap();
        Sandbox { dir }
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }
    fn assert_outside_untouched(&self) {
        let all = listing(self.dir.path());
        let outside: Vec<&String> = all.iter().filter(|p| !p.starts_with("root")).collect();
        assert_eq!(outside, ["etc", "etc/passwd"]);
        assert_eq!(read(&self.dir.path().join("etc/passwd")), "root:x:0:0");
    }
}

#[test]
fn hostile_entries_are_rejected_with_an_error_naming_them() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            TarBuilder::new().file("../x", "evil").bytes(),
            "layer sha256:test: entry \"../x\": path escapes the root",
        ),
        (
            "deep dotdot",
            TarBuilder::new().file("a/../../etc/passwd", "evil").bytes(),
            "entry \"a/../../etc/passwd\": path escapes the root",
        ),
        (
            "absolute",
            TarBuilder::new().file("/abs", "evil").bytes(),
            "entry \"/abs\": absolute path not allowed",
        ),
        (
            "hardlink escape",
            TarBuilder::new()
                .hardlink("passwd", "../../etc/passwd")
                .bytes(),
            "entry \"passwd\": hardlink target \"../../etc/passwd\": path escapes the root",
        ),
        (
            "hardlink absolute",
            TarBuilder::new().hardlink("passwd", "/etc/passwd").bytes(),
            "absolute path not allowed",
        ),
        (
            "hardlink through symlink to host file",
            TarBuilder::new()
                .symlink("evil", "/")
                .hardlink("passwd", "evil/etc/passwd")
                .bytes(),
            "hardlink target \"evil/etc/passwd\" does not exist",
        ),
        (
            "bad whiteout",
            TarBuilder::new().file("a/.wh...", "").bytes(),
            "invalid whiteout name",
        ),
    ];
    for (what, tar, want) in cases {
        let sb = Sandbox::new();
        let err = apply(tar, &sb.root()).expect_err(what).to_string();
        assert!(err.contains(want), "{what}: got {err:?}");
        sb.assert_outside_untouched();
    }
}

#[test]
fn symlinked_parents_resolve_inside_the_destination() {
    // `evil -> /` then `evil/etc/x`: like a chroot, `/` is the destination's root.
    for target in ["/", "../../..", "/../..", "sub/../../.."] {
        let sb = Sandbox::new();
        let tar = TarBuilder::new()
            .symlink("evil", target)
            .file("evil/etc/x", "contained")
            .file("evil/.wh.keep", "")
            .bytes();
        apply(tar, &sb.root()).unwrap();
        assert_eq!(read(&sb.root().join("etc/x")), "contained", "{target}");
        sb.assert_outside_untouched();
    }
    // A symlink loop is an error, not a hang.
    let sb = Sandbox::new();
    let tar = TarBuilder::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", "")
        .bytes();
    let err = apply(tar, &sb.root()).unwrap_err().to_string();
    assert!(err.contains("too many levels of symbolic links"), "{err}");
}

#[test]
fn garbage_input_is_a_read_error_naming_the_layer() {
    let dest = tempfile::tempdir().unwrap();
    let mut junk = TarBuilder::new().file("a", "aaaa").bytes();
    junk.truncate(600); // header plus a partial body
    let err = apply(junk, dest.path()).unwrap_err().to_string();
    assert!(err.starts_with("layer sha256:test"), "{err}");
}

#[test]
fn overlayfs_mode_writes_overlay_whiteouts() {
    if !sys::is_root() {
        eprintln!("SKIP: overlay whiteouts need CAP_MKNOD and trusted.* xattrs");
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let tar = TarBuilder::new()
        .file("etc/.wh.gone", "")
        .file("var/.wh..wh..opq", "")
        .bytes();
    let opts = ApplyOptions {
        whiteout_mode: WhiteoutMode::OverlayFs,
        ..Default::default()
    };
    apply_layer(&tar[..], d, &opts).unwrap();
    let m = fs::symlink_metadata(d.join("etc/gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert_eq!(
        xattr::get(d.join("var"), "trusted.overlay.opaque")
            .unwrap()
            .unwrap(),
        b"y"
    );
}

// ---------- layer creation ----------

#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    size: u64,
    content: Vec<u8>,
    link: String,
    mtime: Option<i64>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A comparable description of a tree; `dir_mtimes` off when directories were not rewritten.
fn describe(root: &Path, dir_mtimes: bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let p = e.path();
        let m = fs::symlink_metadata(p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "file"
        };
        out.insert(
            p.strip_prefix(root).unwrap().display().to_string(),
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                size: if ft.is_dir() { 0 } else { m.len() },
                content: if ft.is_file() {
                    fs::read(p).unwrap()
                } else {
                    vec![]
                },
                link: if ft.is_symlink() {
                    fs::read_link(p).unwrap().display().to_string()
                } else {
                    String::new()
                },
                mtime: if ft.is_dir() && !dir_mtimes {
                    None
                } else {
                    Some(m.mtime())
                },
                xattrs: write::read_xattrs(p)
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("user."))
                    .collect(),
            },
        );
    }
    out
}

fn sample_tree(root: &Path) {
    let long_dir = "d".repeat(120);
    let long_file = format!("{}/{}", long_dir, "f".repeat(150));
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join(&long_dir)).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    fs::write(root.join(&long_file), vec![7u8; 100_000]).unwrap();
    symlink("usr/bin/tool", root.join("link")).unwrap();
    symlink("x".repeat(180), root.join("longlink")).unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    let _ = xattr::set(root.join("usr/bin/tool"), "user.kiln", b"value");
    let fifo = root.join("fifo");
    sys::mknod(&fifo, libc::S_IFIFO, 0o600, 0, 0).unwrap();
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let p = e.unwrap().into_path();
        let t = filetime::FileTime::from_unix_time(1_500_000_000, 0);
        filetime::set_symlink_file_times(&p, t, t).unwrap();
    }
}

#[test]
fn layers_round_trip_to_an_identical_tree_in_every_compression() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let mut w = LayerWriter::new(&store, compression).unwrap();
        for e in walkdir::WalkDir::new(src.path()).min_depth(1) {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(src.path())
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            w.add_path(&rel, e.path()).unwrap();
        }
        let blob = w.finish().unwrap();
        assert_eq!(blob.media_type, compression.media_type());
        assert_eq!(store.size(&blob.digest).unwrap(), blob.size);

        let dest = tempfile::tempdir().unwrap();
        let tar = open_layer(&store.path(&blob.digest)).unwrap();
        let mut hashing = crate::digest::Sha256Reader::new(tar);
        apply_layer(&mut hashing, dest.path(), &ApplyOptions::default()).unwrap();
        std::io::copy(&mut hashing, &mut std::io::sink()).unwrap();
        assert_eq!(hashing.finish().1, blob.diff_id, "{compression:?}");
        assert_eq!(
            describe(src.path(), true),
            describe(dest.path(), true),
            "{compression:?}"
        );
        let a = fs::metadata(dest.path().join("usr/bin/tool")).unwrap();
        let b = fs::metadata(dest.path().join("usr/bin/tool2")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hardlink survives");
    }
}

#[test]
fn the_same_tree_always_gives_the_same_digest() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let build = |order_reversed: bool| {
        let mut paths: Vec<_> = walkdir::WalkDir::new(src.path())
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .collect();
        if order_reversed {
            paths.reverse();
        }
        let mut w = LayerWriter::new(&store, Compression::Gzip).unwrap();
        for p in paths {
            w.add_path(p.strip_prefix(src.path()).unwrap().to_str().unwrap(), &p)
                .unwrap();
        }
        w.add_whiteout("gone/file").unwrap();
        w.add_opaque("usr").unwrap();
        w.finish().unwrap()
    };
    assert_eq!(build(false), build(true));
}

fn tar_names(store: &ContentStore, blob: &LayerBlob) -> Vec<String> {
    let mut a = tar::Archive::new(open_layer(&store.path(&blob.digest)).unwrap());
    let mut names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn overlay_upper_becomes_a_layer_with_oci_whiteouts() {
    if !sys::is_root() {
        eprintln!("SKIP: overlay whiteouts need CAP_MKNOD and trusted.* xattrs");
        return;
    }
    let upper = tempfile::tempdir().unwrap();
    let u = upper.path();
    fs::create_dir_all(u.join("etc")).unwrap();
    fs::write(u.join("etc/new"), "n").unwrap();
    sys::mknod(&u.join("etc/deleted"), libc::S_IFCHR, 0, 0, 0).unwrap();
    fs::create_dir(u.join("opaque")).unwrap();
    xattr::set(u.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(u.join("opaque/inner"), "i").unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let blob = write_layer_from_overlay_upper(u, &store, Compression::Gzip).unwrap();
    assert_eq!(
        tar_names(&store, &blob),
        [
            "etc",
            "etc/.wh.deleted",
            "etc/new",
            "opaque",
            "opaque/.wh..wh..opq",
            "opaque/inner"
        ]
    );
    // The overlay xattr itself is private and stays out of the layer.
    let mut a = tar::Archive::new(open_layer(&store.path(&blob.digest)).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                assert!(!x.unwrap().key().unwrap().contains("overlay"));
            }
        }
    }
    // Applying it onto a lower tree gives what the overlay mount showed.
    let lower = tempfile::tempdir().unwrap();
    let l = lower.path();
    fs::create_dir_all(l.join("etc")).unwrap();
    fs::create_dir_all(l.join("opaque/sub")).unwrap();
    fs::write(l.join("etc/deleted"), "d").unwrap();
    fs::write(l.join("etc/kept"), "k").unwrap();
    fs::write(l.join("opaque/sub/hidden"), "h").unwrap();
    apply_layer(
        open_layer(&store.path(&blob.digest)).unwrap(),
        l,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        listing(l),
        ["etc", "etc/kept", "etc/new", "opaque", "opaque/inner"]
    );
}

#[test]
fn diff_of_two_trees_applied_to_lower_gives_upper() {
    let lower = tempfile::tempdir().unwrap();
    let l = lower.path().join("t");
    fs::create_dir(&l).unwrap();
    sample_tree(&l);
    fs::create_dir_all(l.join("dir-to-file/sub")).unwrap();
    fs::write(l.join("dir-to-file/sub/x"), "x").unwrap();
    fs::write(l.join("file-to-dir"), "f").unwrap();
    fs::create_dir_all(l.join("gone-dir/deep")).unwrap();
    fs::write(l.join("gone-dir/deep/y"), "y").unwrap();
    fs::write(l.join("same-size"), "aaaa").unwrap();
    fs::write(l.join("unchanged"), "u").unwrap();
    let upper_dir = tempfile::tempdir().unwrap();
    let u = upper_dir.path().join("t");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&l)
        .arg(&u)
        .status()
        .unwrap();
    assert!(st.success());

    fs::write(u.join("added"), "new").unwrap();
    fs::remove_file(u.join("empty-file")).unwrap();
    fs::remove_dir_all(u.join("gone-dir")).unwrap();
    fs::remove_dir_all(u.join("dir-to-file")).unwrap();
    fs::write(u.join("dir-to-file"), "now file").unwrap();
    fs::remove_file(u.join("file-to-dir")).unwrap();
    fs::create_dir(u.join("file-to-dir")).unwrap();
    fs::write(u.join("file-to-dir/child"), "c").unwrap();
    fs::set_permissions(u.join("usr/bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(u.join("link")).unwrap();
    symlink("elsewhere", u.join("link")).unwrap();
    // Same size, same whole-second mtime, different content: found by comparing bytes.
    fs::write(u.join("same-size"), "bbbb").unwrap();
    let t = filetime::FileTime::from_unix_time(1_500_000_000, 0);
    filetime::set_file_mtime(l.join("same-size"), t).unwrap();
    filetime::set_file_mtime(u.join("same-size"), t).unwrap();

    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let blob = write_layer_from_diff(&l, &u, &store, Compression::Zstd).unwrap();
    let names = tar_names(&store, &blob);
    for want in [
        "added",
        ".wh.empty-file",
        ".wh.gone-dir",
        "dir-to-file",
        "file-to-dir",
        "file-to-dir/child",
        "usr/bin/tool",
        "link",
        "same-size",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // tool2 is a hardlink of tool, so its mode changed too.
    assert!(names.iter().any(|n| n == "usr/bin/tool2"));
    for absent in ["unchanged", "fifo", "empty", "usr", "longlink"] {
        assert!(
            !names.iter().any(|n| n == absent),
            "{absent} should not be in {names:?}"
        );
    }
    apply_layer(
        open_layer(&store.path(&blob.digest)).unwrap(),
        &l,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(describe(&l, false), describe(&u, false));
}

#[test]
fn writer_rejects_paths_that_leave_the_layer() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(store_dir.path()).unwrap();
    let mut w = LayerWriter::new(&store, Compression::None).unwrap();
    assert!(w.add_path("../x", Path::new("/")).is_err());
    assert!(w.add_path("/x", Path::new("/")).is_err());
    assert!(w.add_path(".", Path::new("/")).is_err());
    assert!(w.add_whiteout("").is_err());
    assert!(w.is_empty());
}
