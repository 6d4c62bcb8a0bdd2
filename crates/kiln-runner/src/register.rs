//! `kiln register`: ping the instance, register with a token, write the `.runner` file.

use std::path::PathBuf;
use std::time::Duration;

use kiln_gitea::{proto, Client, ClientOptions, Registration};

use crate::labels::{self, Label};

/// act_runner's default labels.
pub const DEFAULT_LABELS: &[&str] = &[
    "ubuntu-latest:docker://docker.gitea.com/runner-images:ubuntu-latest",
    "ubuntu-24.04:docker://docker.gitea.com/runner-images:ubuntu-24.04",
    "ubuntu-22.04:docker://docker.gitea.com/runner-images:ubuntu-22.04",
];

pub struct RegisterOptions {
    pub instance: String,
    pub token: String,
    pub name: String,
    /// Full labels (`name:docker://image`, `name:host`); empty = the defaults.
    pub labels: Vec<String>,
    pub ephemeral: bool,
    pub file: PathBuf,
    pub insecure: bool,
    pub version: String,
    /// How many times to ping before giving up (one second apart).
    pub ping_attempts: usize,
}

pub async fn register(options: RegisterOptions) -> Result<Registration, String> {
    let instance = options.instance.trim().to_string();
    if !(instance.starts_with("http://") || instance.starts_with("https://")) {
        return Err(format!(
            "instance `{instance}` must be an http:// or https:// URL"
        ));
    }
    if options.token.trim().is_empty() {
        return Err("the registration token is empty".into());
    }
    let labels: Vec<String> = if options.labels.is_empty() {
        DEFAULT_LABELS.iter().map(|s| s.to_string()).collect()
    } else {
        options.labels.clone()
    };
    for l in &labels {
        Label::parse(l)?;
    }
    let client = Client::new(
        &instance,
        ClientOptions {
            insecure: options.insecure,
            extra_ca_pem: None,
            version: options.version.clone(),
            request_timeout: Duration::from_secs(30),
        },
    )
    .map_err(|e| format!("{instance}: {e}"))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.ping(&options.name).await {
            Ok(_) => break,
            Err(e) if attempt >= options.ping_attempts.max(1) => {
                return Err(format!("cannot reach Gitea at {instance}: {e}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Gitea yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let names = labels::names(&labels);
    let request = proto::RegisterRequest {
        name: options.name.clone(),
        token: options.token.trim().to_string(),
        version: options.version.clone(),
        labels: names.clone(),
        agent_labels: names,
        ephemeral: options.ephemeral,
        ..Default::default()
    };
    let response = client
        .register(request)
        .await
        .map_err(|e| format!("registration failed: {e}"))?;
    let runner = response
        .runner
        .ok_or("Gitea answered the registration without a runner")?;
    if runner.ephemeral != options.ephemeral {
        tracing::warn!(
            "this Gitea does not support ephemeral runners; the runner will run one task and exit"
        );
    }
    let registration = Registration {
        id: runner.id,
        uuid: runner.uuid,
        name: runner.name,
        token: runner.token,
        address: instance,
        labels,
        ephemeral: options.ephemeral,
    };
    registration
        .save(&options.file)
        .map_err(|e| format!("cannot write {}: {e}", options.file.display()))?;
    Ok(registration)
}
