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
    /// Base images resolved on the way, for [`crate::SolveOptions::resolved`].
    pub resolved: HashMap<String, std::sync::Arc<kiln_oci::ResolvedImage>>,
}

impl Engine {
    /// Run the Dockerfile frontend for `req`'s target platform.
    pub async fn dockerfile_frontend(
        &self,
        req: &DockerfileRequest,
        session: Arc<dyn Session>,
        progress: &ProgressSender,
    ) -> Result<FrontendResult, SolveError> {
        let platform = req.options.target_platform.clone();
        let mut results = self
            .dockerfile_frontend_platforms(req, &[platform], session, progress)
            .await?;
        Ok(results.remove(0))
    }

    /// Run the Dockerfile frontend once per target platform (a multi-platform build, with
    /// `req.options.multi_platform` set): the Dockerfile is read once, each base image is
    /// resolved once per platform it is needed for, and each platform gets its own LLB.
    pub async fn dockerfile_frontend_platforms(
        &self,
        req: &DockerfileRequest,
        platforms: &[kiln_dockerfile::Platform],
        session: Arc<dyn Session>,
        progress: &ProgressSender,
    ) -> Result<Vec<FrontendResult>, SolveError> {
        let load = format!("[internal] load build definition from {}", req.filename);
        progress.started(&load, &load, vec![]);
        let read = async {
            let dir = session
                .local_dir(
                    &req.dockerfile_local,
                    std::slice::from_ref(&req.filename),
                    &[],
                    None,
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
                        .local_dir(&req.context_local, &[".dockerignore".into()], &[], None)
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
        for d in df.directives.iter().filter(|d| d.name == "syntax") {
            let image = d.value.split_whitespace().next().unwrap_or_default();
            if !is_dockerfile_frontend_image(image) {
                return Err(SolveError::msg(format!(
                    "{}:{}: custom frontend {image:?} is not supported: kiln has the Dockerfile \
                     frontend built in and cannot pull frontend images",
                    req.filename, d.line
                )));
            }
        }
        let mut options = req.options.clone();
        if let Some(ignore) = ignore {
            let rules = kiln_dockerfile::dockerignore::DockerIgnore::parse(&ignore)
                .map_err(|e| SolveError::msg(format!(".dockerignore: {e}")))?;
            options.excludes = rules.patterns().to_vec();
        }
        // Named local contexts bring their own .dockerignore, as in BuildKit.
        for nc in req.options.named_contexts.values() {
            let kiln_dockerfile::NamedContext::Local(local) = nc else {
                continue;
            };
            if options.named_excludes.contains_key(local) {
                continue;
            }
            let dir = session
                .local_dir(local, &[".dockerignore".into()], &[], None)
                .await
                .map_err(|e| SolveError::msg(format!("named context {local:?}: {e}")))?;
            if let Ok(text) = tokio::fs::read_to_string(dir.join(".dockerignore")).await {
                let rules = kiln_dockerfile::dockerignore::DockerIgnore::parse(&text)
                    .map_err(|e| SolveError::msg(format!("{local}/.dockerignore: {e}")))?;
                options
                    .named_excludes
                    .insert(local.clone(), rules.patterns().to_vec());
            }
        }
        let mut plans = Vec::new();
        for p in platforms {
            let mut options = options.clone();
            options.target_platform = p.clone();
            let plan = kiln_dockerfile::lower::plan(&df, &options)
                .map_err(|e| SolveError::msg(e.to_string()))?;
            plans.push(plan);
        }

        // Every base image of every platform, each (reference, platform) once.
        let mut requests: Vec<kiln_dockerfile::lower::ImageRequest> = Vec::new();
        for plan in &plans {
            for r in plan.base_images() {
                if !requests.contains(&r) {
                    requests.push(r);
                }
            }
        }
        let registry = self.registry_client(session.clone());
        let multi = req.options.multi_platform;
        let resolved = futures::future::try_join_all(requests.iter().map(|req| {
            let registry = registry.clone();
            let progress = progress.clone();
            async move {
                let prefix = if multi {
                    format!("[{} internal]", req.platform.format())
                } else {
                    "[internal]".to_string()
                };
                let name = format!("{prefix} load metadata for {}", req.reference);
                progress.started(&name, &name, vec![]);
                let res = async {
                    let r = kiln_oci::Reference::parse(&req.reference)
                        .map_err(|e| SolveError::msg(format!("{}: {e}", req.reference)))?;
                    let platform = oci_platform(&req.platform);
                    let img = registry
                        .resolve(&r, &platform)
                        .await
                        .map_err(|e| SolveError::msg(e.to_string()))?;
                    let config = ImageConfig::from_json(&img.config_bytes).map_err(|e| {
                        SolveError::msg(format!("{}: invalid image config: {e}", req.reference))
                    })?;
                    let key = crate::solver::resolve_key(&r, &platform);
                    Ok::<_, SolveError>((config, key, std::sync::Arc::new(img)))
                }
                .await;
                progress.completed(&name, res.as_ref().err().map(|e| e.message.clone()));
                res.map(|(c, key, img)| (req.clone(), c, key, img))
            }
        }))
        .await?;

        let mut results = Vec::new();
        for plan in &plans {
            let wanted = plan.base_images();
            let mut configs = HashMap::new();
            let mut images = HashMap::new();
            for (request, config, key, img) in &resolved {
                if wanted.contains(request) {
                    configs.insert(request.clone(), config.clone());
                    images.insert(key.clone(), img.clone());
                }
            }
            let mut lowered = plan
                .lower_resolved(&configs)
                .map_err(|e| SolveError::msg(e.to_string()))?;
            // Like BuildKit, the source map carries the Dockerfile itself, so errors can quote it.
            if let Some(source) = lowered.definition.source.as_mut() {
                if let Some(info) = source.infos.first_mut() {
                    info.data = text.clone().into_bytes();
                }
            }
            let image_config = serde_json::to_vec(&lowered.image_config)
                .map_err(|e| SolveError::msg(format!("image config: {e}")))?;
            results.push(FrontendResult {
                definition: lowered.definition,
                image_config,
                resolved: images,
            });
        }
        Ok(results)
    }
}

/// A Dockerfile platform as the registry client and exporters take it (spelled as given, so
/// resolve keys match the ones the solver makes from the LLB's platforms).
fn oci_platform(p: &kiln_dockerfile::Platform) -> kiln_oci::Platform {
    kiln_oci::Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
    }
}

/// A failed Dockerfile build: the error, and the Dockerfile lines of the step that failed.
#[derive(Debug)]
pub struct BuildFailure {
    pub error: SolveError,
    pub context: Option<ErrorContext>,
}

impl From<SolveError> for BuildFailure {
    fn from(error: SolveError) -> Self {
        BuildFailure {
            error,
            context: None,
        }
    }
}

impl Engine {
    /// A whole Dockerfile build for each of `platforms` (one for a single-platform build): the
    /// frontend, then the solves, all at once (steps the platforms share are built once).
    pub async fn solve_dockerfile(
        &self,
        req: &DockerfileRequest,
        platforms: &[kiln_dockerfile::Platform],
        opts: crate::SolveOptions,
        session: Arc<dyn Session>,
        progress: &ProgressSender,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Vec<crate::exporter::PlatformResult>, BuildFailure> {
        let fes = self
            .dockerfile_frontend_platforms(req, platforms, session.clone(), progress)
            .await?;
        let solves = fes.iter().map(|fe| {
            let mut opts = opts.clone();
            opts.resolved.extend(fe.resolved.clone());
            let (session, cancel) = (session.clone(), cancel.clone());
            async move {
                self.solve(&fe.definition, opts, session, progress.clone(), cancel)
                    .await
            }
        });
        let solved = futures::future::try_join_all(solves)
            .await
            .map_err(|error| BuildFailure {
                context: error.vertex.as_deref().and_then(|v| {
                    fes.iter()
                        .find_map(|fe| ErrorContext::find(&fe.definition, v))
                }),
                error,
            })?;
        Ok(solved
            .into_iter()
            .zip(fes)
            .zip(platforms)
            .map(|((solved, fe), p)| crate::exporter::PlatformResult {
                platform: oci_platform(p),
                solved,
                config: Some(fe.image_config),
            })
            .collect())
    }
}

/// Frontend images that the built-in Dockerfile frontend stands in for
/// (`# syntax=docker/dockerfile:1.7`, `docker/dockerfile-upstream:…`).
pub fn is_dockerfile_frontend_image(image: &str) -> bool {
    let s = image
        .trim_start_matches("docker.io/")
        .trim_start_matches("registry-1.docker.io/");
    let repo = s.split(['@', ':']).next().unwrap_or_default();
    repo == "docker/dockerfile" || repo == "docker/dockerfile-upstream"
}

/// Where in the Dockerfile a failed vertex came from, for showing the offending lines the way
/// buildx and buildctl do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorContext {
    /// The step as shown in progress (`[2/3] RUN make`).
    pub step: String,
    pub filename: String,
    pub first_line: usize,
    /// (line number, text, part of the failing instruction)
    pub lines: Vec<(usize, String, bool)>,
}

impl ErrorContext {
    /// The lines around `line` of a Dockerfile that could not be parsed (`dockerfile parse
    /// error on line N`), as buildx shows them.
    pub fn at_line(step: &str, filename: &str, text: &str, line: usize) -> ErrorContext {
        let all: Vec<&str> = text.lines().collect();
        let from = line.saturating_sub(2).max(1);
        let to = (line + 1).min(all.len());
        let lines = (from..=to)
            .filter_map(|n| all.get(n - 1).map(|l| (n, l.to_string(), n == line)))
            .collect();
        ErrorContext {
            step: step.to_string(),
            filename: filename.to_string(),
            first_line: line,
            lines,
        }
    }

    /// The line a Dockerfile parse error (`dockerfile parse error on line N: …`) names.
    pub fn parse_error_line(message: &str) -> Option<usize> {
        let rest = message.split("dockerfile parse error on line ").nth(1)?;
        rest.split(':').next()?.parse().ok()
    }

    /// Find the source of `vertex` in a definition's source map.
    pub fn find(def: &pb::Definition, vertex: &str) -> Option<ErrorContext> {
        let source = def.source.as_ref()?;
        let loc = source.locations.get(vertex)?.locations.first()?;
        let info = source.infos.get(usize::try_from(loc.source_index).ok()?)?;
        let range = loc.ranges.first()?;
        let first = usize::try_from(range.start?.line).ok()?;
        let last = usize::try_from(range.end?.line).ok()?.max(first);
        let text = String::from_utf8_lossy(&info.data);
        let all: Vec<&str> = text.lines().collect();
        let from = first.saturating_sub(2).max(1);
        let to = (last + 1).min(all.len());
        let lines = (from..=to)
            .filter_map(|n| {
                all.get(n - 1)
                    .map(|l| (n, l.to_string(), n >= first && n <= last))
            })
            .collect();
        let step = def
            .metadata
            .get(vertex)
            .and_then(|m| m.description.get("llb.customname"))
            .cloned()
            .unwrap_or_default();
        Some(ErrorContext {
            step,
            filename: info.filename.clone(),
            first_line: first,
            lines,
        })
    }
}

impl std::fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "------\n > {}:\n------", self.step)?;
        writeln!(f, "{}:{}", self.filename, self.first_line)?;
        writeln!(f, "--------------------")?;
        for (n, text, hit) in &self.lines {
            let mark = if *hit { ">>>" } else { "   " };
            writeln!(f, "{n:>4} | {mark} {text}")?;
        }
        write!(f, "--------------------")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_context_quotes_the_failing_lines() {
        let text = "FROM scratch\nCOPY a /a\nRUN false\n";
        let df = kiln_dockerfile::parse(text).unwrap();
        let plan = kiln_dockerfile::plan(&df, &LowerOptions::default()).unwrap();
        let mut lowered = plan.lower(&HashMap::new()).unwrap();
        lowered.definition.source.as_mut().unwrap().infos[0].data = text.as_bytes().to_vec();
        let def = &lowered.definition;
        let vertex = def
            .def
            .iter()
            .map(|b| crate::llb::op_digest(b))
            .find(|d| {
                def.metadata
                    .get(d)
                    .and_then(|m| m.description.get("llb.customname"))
                    .is_some_and(|n| n.contains("RUN false"))
            })
            .unwrap();
        let ctx = ErrorContext::find(def, &vertex).unwrap();
        assert_eq!(ctx.first_line, 3);
        let shown = ctx.to_string();
        assert!(shown.contains("Dockerfile:3"), "{shown}");
        assert!(shown.contains("   3 | >>> RUN false"), "{shown}");
        assert!(shown.contains("   2 |     COPY a /a"), "{shown}");
    }
}
