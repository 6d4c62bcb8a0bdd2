//! The built-in Dockerfile frontend (`dockerfile.v0`): reads the Dockerfile and `.dockerignore`
//! through the session, resolves base image configs, and lowers to LLB with `kiln-dockerfile`.

use crate::progress::ProgressSender;
use crate::session::Session;
use crate::solver::SolveError;
use crate::Engine;
use bollard_buildkit_proto::pb;
use kiln_dockerfile::{ImageConfig, LowerOptions};
use std::collections::HashMap;
use std::sync::Arc;

/// What to build.
#[derive(Debug, Clone)]
pub struct DockerfileRequest {
    /// Name of the local holding the Dockerfile (`dockerfile`).
    pub dockerfile_local: String,
    /// File name inside it (`Dockerfile`).
    pub filename: String,
    /// Name of the context local (`context`).
    pub context_local: String,
    pub options: LowerOptions,
}

impl Default for DockerfileRequest {
    fn default() -> Self {
        DockerfileRequest {
            dockerfile_local: "dockerfile".into(),
            filename: "Dockerfile".into(),
            context_local: "context".into(),
            options: LowerOptions::default(),
        }
    }
}

/// The frontend's result: LLB plus the image config for the exporter.
#[derive(Debug, Clone)]
pub struct FrontendResult {
    pub definition: pb::Definition,
    pub image_config: Vec<u8>,
}

impl Engine {
    /// Run the Dockerfile frontend.
    pub async fn dockerfile_frontend(
        &self,
        req: &DockerfileRequest,
        session: Arc<dyn Session>,
        progress: &ProgressSender,
    ) -> Result<FrontendResult, SolveError> {
        let load = format!("[internal] load build definition from {}", req.filename);
        progress.started(&load, &load, vec![]);
        let read = async {
            let dir = session
                .local_dir(
                    &req.dockerfile_local,
                    std::slice::from_ref(&req.filename),
                    &[],
                )
                .await
                .map_err(|e| SolveError::msg(e.to_string()))?;
            let path = crate::fsutil::resolve_in_root(&dir, &req.filename, true)
                .map_err(|e| SolveError::msg(format!("{}: {e}", req.filename)))?;
            let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
                SolveError::msg(format!(
                    "failed to read dockerfile: open {}: {}",
                    req.filename,
                    e.kind().to_string().to_lowercase()
                ))
            })?;
            // `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's.
            let specific = dir.join(format!("{}.dockerignore", req.filename));
            let ignore = match tokio::fs::read_to_string(&specific).await {
                Ok(t) => Some(t),
                Err(_) => {
                    let ctx_dir = session
                        .local_dir(&req.context_local, &[".dockerignore".into()], &[])
                        .await
                        .map_err(|e| SolveError::msg(e.to_string()))?;
                    tokio::fs::read_to_string(ctx_dir.join(".dockerignore"))
                        .await
                        .ok()
                }
            };
            Ok::<_, SolveError>((text, ignore))
        }
        .await;
        progress.completed(&load, read.as_ref().err().map(|e| e.message.clone()));
        let (text, ignore) = read?;

        let df = kiln_dockerfile::parser::parse_named(&req.filename, &text)
            .map_err(|e| SolveError::msg(e.to_string()))?;
        let mut options = req.options.clone();
        if let Some(ignore) = ignore {
            let rules = kiln_dockerfile::dockerignore::DockerIgnore::parse(&ignore)
                .map_err(|e| SolveError::msg(format!(".dockerignore: {e}")))?;
            options.excludes = rules.patterns().to_vec();
        }
        let plan = kiln_dockerfile::lower::plan(&df, &options)
            .map_err(|e| SolveError::msg(e.to_string()))?;

        let registry = self.registry_client(session.clone());
        let mut configs: HashMap<String, ImageConfig> = HashMap::new();
        let requests = plan.base_images();
        let resolved = futures::future::try_join_all(requests.iter().map(|req| {
            let registry = registry.clone();
            let progress = progress.clone();
            async move {
                let name = format!("[internal] load metadata for {}", req.reference);
                progress.started(&name, &name, vec![]);
                let res = async {
                    let r = kiln_oci::Reference::parse(&req.reference)
                        .map_err(|e| SolveError::msg(format!("{}: {e}", req.reference)))?;
                    let platform = kiln_oci::Platform {
                        os: req.platform.os.clone(),
                        architecture: req.platform.architecture.clone(),
                        variant: req.platform.variant.clone(),
                    };
                    let img = registry
                        .resolve(&r, &platform)
                        .await
                        .map_err(|e| SolveError::msg(e.to_string()))?;
                    ImageConfig::from_json(&img.config_bytes).map_err(|e| {
                        SolveError::msg(format!("{}: invalid image config: {e}", req.reference))
                    })
                }
                .await;
                progress.completed(&name, res.as_ref().err().map(|e| e.message.clone()));
                res.map(|c| (req.reference.clone(), c))
            }
        }))
        .await?;
        configs.extend(resolved);
        let lowered = plan
            .lower(&configs)
            .map_err(|e| SolveError::msg(e.to_string()))?;
        let image_config = serde_json::to_vec(&lowered.image_config)
            .map_err(|e| SolveError::msg(format!("image config: {e}")))?;
        Ok(FrontendResult {
            definition: lowered.definition,
            image_config,
        })
    }
}
