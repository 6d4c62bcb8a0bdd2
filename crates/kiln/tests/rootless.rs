//! Rootless mode: kiln started by an unprivileged user builds in its own user namespace.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// An unprivileged uid that exists here: 1000 if present, else nobody.
fn unprivileged_uid() -> Option<u32> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let uids: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    [1000, 65534].into_iter().find(|u| uids.contains(u))
}

#[test]
fn unprivileged_user_builds_in_its_own_user_namespace() {
    let test = "unprivileged_user_builds_in_its_own_user_namespace";
    let Some(env) = common::setup(test) else {
        return;
    };
    let Some(uid) = unprivileged_uid() else {
        println!("SKIP {test}: no unprivileged user (uid 1000 or nobody)");
        return;
    };
    if !std::path::Path::new("/usr/bin/setpriv").exists() {
        println!("SKIP {test}: setpriv (util-linux) not installed");
        return;
    }
    let home = env.work.path().join("home");
    let ctx = env.context(
        "rootless",
        &[(
            "Dockerfile",
            "FROM $BASE\nRUN id -u > /uid && echo made-rootless > /made\nCOPY note.txt /note.txt\n",
        )],
    );
    fs::write(ctx.join("note.txt"), "note").unwrap();
    fs::create_dir_all(&home).unwrap();
    let out_dir = home.join("out");
    for p in [env.work.path(), &home, &ctx] {
        Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(p)
            .status()
            .unwrap();
    }
    let run = Command::new("/usr/bin/setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=local,dest={}", out_dir.display()))
        .arg(&ctx)
        .env("HOME", &home)
        .env_remove("XDG_DATA_HOME")
        .env("DOCKER_CONFIG", home.join(".docker"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    if stderr.contains("creating a user namespace failed") {
        println!("SKIP {test}: user namespaces are not available here: {stderr}");
        return;
    }
    assert!(run.status.success(), "rootless build failed:\n{stderr}");
    assert_eq!(
        fs::read_to_string(out_dir.join("uid")).unwrap(),
        "0\n",
        "root inside"
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("made")).unwrap(),
        "made-rootless\n"
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("note.txt")).unwrap(),
        "note"
    );
    // The state lives in the user's data dir and belongs to the user, not to root.
    let state = home.join(".local/share/kiln");
    assert!(
        state.join("cache.redb").exists(),
        "state in $HOME/.local/share/kiln"
    );
    assert_eq!(fs::metadata(state.join("cache.redb")).unwrap().uid(), uid);
    let layers = fs::read_dir(state.join("l")).unwrap().count();
    assert!(layers >= 3, "base, RUN and COPY layers: {layers}");
}
