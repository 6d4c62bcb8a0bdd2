//! Shared by the runner benchmarks.

use kiln_gitea::fake::FakeGitea;
use std::path::Path;
use std::process::{Command, Stdio};

/// `kiln register` against the fake Gitea with the labels `linux:host`, writing `.runner` as
/// `config` says; panics when it fails.
pub fn register(kiln: &str, gitea: &FakeGitea, config: &Path) {
    let ok = Command::new(kiln)
        .args(["register", "--no-interactive", "--instance", &gitea.url()])
        .args(["--token", &gitea.registration_token()])
        .args(["--labels", "linux:host", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "register failed");
}
