//! Actions the runner performs itself instead of cloning and running them (kiln satisfies
//! `docker/build-push-action` and friends with its own build engine). A step or its job turns
//! this off with `KILN_NATIVE_ACTIONS: "false"` in `env`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The environment variable that turns native actions off for a step (`"false"`).
pub const SWITCH: &str = "KILN_NATIVE_ACTIONS";

/// One step handed to a native action.
#[derive(Debug)]
pub struct NativeStep {
    /// The `uses:` text.
    pub uses: String,
    /// `owner/repo`, lower case.
    pub repo: String,
    pub reference: String,
    /// `with:`, interpolated; keys lower case.
    pub inputs: BTreeMap<String, String>,
    /// The environment the step's process would get (`DOCKER_HOST`, `BUILDKIT_HOST`, `RUNNER_TEMP` …).
    pub env: BTreeMap<String, String>,
    pub workspace: PathBuf,
    /// Lines for the step's log (the runner masks them).
    pub log: mpsc::UnboundedSender<String>,
    pub cancel: CancellationToken,
    pub timeout: Option<Duration>,
}

/// What a native action left behind.
#[derive(Debug, Default)]
pub struct NativeOutcome {
    pub success: bool,
    pub outputs: BTreeMap<String, String>,
    /// Environment for the following steps of the job (as if written to `GITHUB_ENV`).
    pub env: BTreeMap<String, String>,
}

/// Native implementations of some actions.
#[async_trait::async_trait]
pub trait NativeActions: Send + Sync + std::fmt::Debug {
    /// Whether `repo` (`owner/repo`, lower case) at `reference` is done natively.
    fn handles(&self, repo: &str, reference: &str) -> bool;
    async fn run(&self, step: NativeStep) -> NativeOutcome;
}
