//! Lowering to BuildKit LLB (the `dockerfile2llb` of BuildKit), in two pure phases:
//!
//! 1. [`plan`] resolves global `ARG`s and build args in `FROM`, the stage graph and the target,
//!    keeps only the stages the target needs and lists the base images whose configs are needed
//!    ([`Plan::base_images`]).
//! 2. [`Plan::lower`] takes those configs and produces the LLB [`pb::Definition`] plus the
//!    resulting image config.

mod config;
pub use config::rfc3339;
mod copy;
mod dispatch;
mod named;
pub use named::NamedContext;
mod llb;
mod run;

use std::collections::{BTreeMap, HashMap};

use bollard_buildkit_proto::pb;

use crate::error::Error;
use crate::expand::{EnvList, Lexer};
use crate::image::ImageConfig;
use crate::instructions::{Dockerfile, Instruction, MountType};
use crate::platform::Platform;
use crate::reference;

/// Inputs of a build besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    /// Stage to build; the last stage when `None`.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Labels added to the resulting image.
    pub labels: BTreeMap<String, String>,
    /// Platform of the machine building (`BUILDPLATFORM`).
    pub build_platform: Platform,
    /// Platform being built for (`TARGETPLATFORM`).
    pub target_platform: Platform,
    /// Name of the build context local (`context`).
    pub context_name: String,
    /// `.dockerignore` patterns, passed on as `local.excludepatterns`.
    pub excludes: Vec<String>,
    /// Ignore the cache for every op.
    pub no_cache: bool,
    /// Session that serves the context (`local.session`).
    pub session_id: Option<String>,
    /// `SOURCE_DATE_EPOCH` for history timestamps and created directories.
    pub source_date_epoch: Option<i64>,
    /// Named contexts by name (`context:NAME`), see [`NamedContext`].
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `.dockerignore` patterns of named local contexts, by local name.
    pub named_excludes: BTreeMap<String, Vec<String>>,
    /// One of several platforms being built: step names carry the platform
    /// (`[linux/arm64 build 2/3] RUN …`), as BuildKit's do.
    pub multi_platform: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            target: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            build_platform: Platform::default(),
            target_platform: Platform::default(),
            context_name: "context".to_string(),
            excludes: Vec::new(),
            no_cache: false,
            session_id: None,
            source_date_epoch: None,
            named_contexts: BTreeMap::new(),
            named_excludes: BTreeMap::new(),
            multi_platform: false,
        }
    }
}

/// An image whose config the lowering needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRequest {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`; the key in [`Plan::lower`]'s map.
    pub reference: String,
    /// The platform to resolve it for.
    pub platform: Platform,
}

/// What [`Plan::lower`] produces.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// The LLB definition; its last op names the result.
    pub definition: pb::Definition,
    /// The config of the resulting image.
    pub image_config: ImageConfig,
    /// Names of the stages that were lowered, in file order (`stage-N` for unnamed ones).
    pub stage_names: Vec<String>,
    /// Context paths the build reads (`local.followpaths`); `None` means the whole context.
    pub context_paths: Option<Vec<String>>,
}

/// The first stage, in file order, from which a dependency cycle between stages is reachable
/// (BuildKit checks this before anything else, as `validateCircularDependency`).
fn first_cycle(stages: &[PlannedStage]) -> Option<usize> {
    fn visit(i: usize, stages: &[PlannedStage], visited: &mut [bool], path: &mut [bool]) -> bool {
        if std::mem::replace(&mut visited[i], true) {
            return false;
        }
        path[i] = true;
        let base = match stages[i].base {
            Base::Stage(j) => Some(j),
            _ => None,
        };
        for dep in base.into_iter().chain(stages[i].deps.iter().copied()) {
            if dep >= stages.len() {
                continue;
            }
            if path[dep] || visit(dep, stages, visited, path) {
                return true;
            }
        }
        path[i] = false;
        false
    }
    let mut visited = vec![false; stages.len()];
    let mut path = vec![false; stages.len()];
    (0..stages.len()).find(|&i| visit(i, stages, &mut visited, &mut path))
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Base {
    Scratch,
    Stage(usize),
    Image(String),
    /// A named context, under the name it was looked up by.
    Named(String, NamedContext),
}

/// What a `--from` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceRef {
    Stage(usize),
    Image(String),
    Scratch,
    Named(String, NamedContext),
}

#[derive(Debug, Clone)]
pub(crate) struct PlannedStage {
    /// `name` or `stage-N`; empty when the Dockerfile has a single state, like BuildKit.
    pub display_name: String,
    pub base: Base,
    /// `FROM --platform`, expanded.
    pub platform: Option<Platform>,
    /// Stages this one reads from (base excluded).
    pub deps: Vec<usize>,
    /// A named context of the stage's name replaces it: its instructions are not run.
    pub replaced: bool,
}

/// The result of [`plan`]: stages resolved, images to fetch configs for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) df: Dockerfile,
    pub(crate) opts: LowerOptions,
    pub(crate) global_args: EnvList,
    pub(crate) stages: Vec<PlannedStage>,
    pub(crate) target: usize,
    pub(crate) reachable: Vec<bool>,
    pub(crate) epoch: Option<i64>,
}

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn default_args(opts: &LowerOptions, target: &str) -> EnvList {
    let bp = &opts.build_platform;
    let tp = &opts.target_platform;
    let mut env = EnvList::new();
    let defaults = [
        ("BUILDPLATFORM", bp.format()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", bp.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", tp.format()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", tp.variant.clone().unwrap_or_default()),
        ("TARGETSTAGE", target.to_string()),
    ];
    for (k, v) in defaults {
        let v = opts.build_args.get(k).cloned().unwrap_or(v);
        env.set(k, &v);
    }
    env
}

/// Resolves which stages a build needs and which base images it reads.
pub fn plan(df: &Dockerfile, opts: &LowerOptions) -> Result<Plan, Error> {
    let file = df.file_name.as_str();
    if df.stages.is_empty() {
        return Err(Error::new(
            file,
            0,
            "dockerfile contains no stages to build",
        ));
    }
    let lex = Lexer::new(df.escape);
    let target_name = opts
        .target
        .clone()
        .or_else(|| df.stages.last().and_then(|s| s.name.clone()));
    let mut global_args = default_args(opts, target_name.as_deref().unwrap_or("default"));
    for arg in &df.global_args {
        let value = match (opts.build_args.get(&arg.key), &arg.value) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(dflt)) => Some(
                lex.process_word(dflt, &global_args)
                    .map_err(|e| Error::from(e).at(file, 0))?,
            ),
            (None, None) => None,
        };
        if let Some(v) = value {
            global_args.set(&arg.key, &v);
        }
    }
    let epoch = opts.source_date_epoch.or_else(|| {
        opts.build_args
            .get("SOURCE_DATE_EPOCH")
            .map(String::as_str)
            .or(global_args.get("SOURCE_DATE_EPOCH"))
            .filter(|v| !v.is_empty())
            .and_then(|v| v.parse().ok())
    });

    let find_stage = |name: &str| {
        df.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&name.to_ascii_lowercase()))
    };
    let mut stages: Vec<PlannedStage> = Vec::with_capacity(df.stages.len());
    let mut unregistered = 0usize;
    for (i, st) in df.stages.iter().enumerate() {
        let line = st.line();
        let base_name = lex
            .process_word(&st.base, &global_args)
            .map_err(|e| Error::from(e).at(file, line))?;
        if base_name.is_empty() {
            return Err(Error::new(
                file,
                line,
                format!("base name ({}) should not be blank", st.base),
            ));
        }
        let platform = match &st.platform {
            None => None,
            Some(expr) => {
                let v = lex
                    .process_word(expr, &global_args)
                    .map_err(|e| Error::from(e).at(file, line))?;
                if v.is_empty() {
                    return Err(Error::new(
                        file,
                        line,
                        format!("empty platform value from expression {expr}"),
                    ));
                }
                Some(Platform::parse(&v).map_err(|e| {
                    Error::new(
                        file,
                        line,
                        format!("failed to parse platform {expr}: {}", e.message),
                    )
                })?)
            }
        };
        let earlier = df.stages[..i]
            .iter()
            .position(|s| s.name.as_deref() == Some(base_name.as_str()));
        let stage_platform = platform.as_ref().unwrap_or(&opts.target_platform);
        let named_as = |name: &str| {
            named::lookup(&opts.named_contexts, name, stage_platform)
                .map(|nc| Base::Named(name.to_string(), nc.clone()))
        };
        let replacement = st.name.as_deref().and_then(named_as);
        let replaced = replacement.is_some();
        let base = match (replacement, earlier) {
            (Some(named), _) => named,
            (None, Some(j)) => Base::Stage(j),
            (None, None) if base_name == "scratch" => Base::Scratch,
            (None, None) => match named_as(&base_name) {
                Some(named) => named,
                None => {
                    Base::Image(reference::normalize(&base_name).map_err(|e| e.at(file, line))?)
                }
            },
        };
        let named = named_lookup(opts);
        let mut deps = Vec::new();
        let instructions = if replaced {
            &[][..]
        } else {
            &st.instructions[..]
        };
        for ins in instructions {
            for r in source_refs(ins, &find_stage, &named, df.stages.len())
                .map_err(|e| e.at(file, ins.line()))?
            {
                match r {
                    (SourceRef::Stage(j), _) => deps.push(j),
                    (_, true) => unregistered += 1,
                    _ => {}
                }
            }
        }
        // ONBUILD triggers of a base stage run in this stage and may read other stages.
        if let Base::Stage(j) = base {
            for ins in &df.stages[j].instructions {
                if let Instruction::Onbuild { expression, .. } = ins {
                    if let Ok(trigger) = crate::instructions::parse_instruction_line(expression) {
                        for (r, _) in source_refs(&trigger, &find_stage, &named, df.stages.len())
                            .unwrap_or_default()
                        {
                            if let SourceRef::Stage(k) = r {
                                deps.push(k);
                            }
                        }
                    }
                }
            }
        }
        let display_name = st.name.clone().unwrap_or_else(|| format!("stage-{i}"));
        stages.push(PlannedStage {
            display_name,
            base,
            platform,
            deps,
            replaced,
        });
    }
    if stages.len() == 1 && unregistered == 0 {
        stages[0].display_name.clear();
    }
    if let Some(i) = first_cycle(&stages) {
        let name = df.stages[i].name.clone().unwrap_or_default();
        return Err(Error::new(
            file,
            df.stages[i].line(),
            format!("circular dependency detected on stage: {name}"),
        ));
    }

    let target = match &opts.target {
        None => df.stages.len() - 1,
        Some(t) => find_stage(t).ok_or_else(|| {
            let names: Vec<String> = stages
                .iter()
                .filter(|s| !s.display_name.is_empty())
                .map(|s| s.display_name.clone())
                .collect();
            let mut msg = format!(
                "target stage {} could not be found",
                crate::error::go_quote(t)
            );
            if let Some(s) = crate::error::did_you_mean(t, names.iter().map(String::as_str)) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            msg.push_str(&format!("; stages: {}", names.join(", ")));
            Error::new(file, 0, msg)
        })?,
    };

    let mut reachable = vec![false; stages.len()];
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut reachable[i], true) {
            continue;
        }
        if let Base::Stage(j) = stages[i].base {
            stack.push(j);
        }
        stack.extend(stages[i].deps.iter().copied().filter(|d| *d < stages.len()));
    }
    Ok(Plan {
        df: df.clone(),
        opts: opts.clone(),
        global_args,
        stages,
        target,
        reachable,
        epoch,
    })
}

/// Looks up a `--from` name among the named contexts (for the target platform).
pub(crate) type NamedLookup<'a> = dyn Fn(&str) -> Option<NamedContext> + 'a;

pub(crate) fn named_lookup(opts: &LowerOptions) -> impl Fn(&str) -> Option<NamedContext> + '_ {
    |name: &str| named::lookup(&opts.named_contexts, name, &opts.target_platform).cloned()
}

/// `--from` references of one instruction; the bool says whether BuildKit registers an extra
/// (unnamed) state for it, which matters for stage naming.
pub(crate) fn source_refs(
    ins: &Instruction,
    find_stage: &dyn Fn(&str) -> Option<usize>,
    named: &NamedLookup<'_>,
    stage_count: usize,
) -> Result<Vec<(SourceRef, bool)>, Error> {
    let mut out = Vec::new();
    match ins {
        Instruction::Copy(c) => {
            if let Some(from) = &c.from {
                out.push((
                    resolve_copy_from(from, find_stage, named, stage_count)?,
                    true,
                ));
            }
        }
        Instruction::Run(r) => {
            for m in &r.mounts {
                let from = match (&m.from, m.kind) {
                    (Some(f), _) => f.clone(),
                    (None, _) => "scratch".to_string(),
                };
                let r = match find_stage(&from) {
                    Some(j) => (SourceRef::Stage(j), false),
                    None if from == "scratch" => (SourceRef::Scratch, true),
                    None if matches!(
                        m.kind,
                        MountType::Secret | MountType::Ssh | MountType::Tmpfs
                    ) =>
                    {
                        (SourceRef::Scratch, true)
                    }
                    None => match named(&from) {
                        Some(nc) => (SourceRef::Named(from.clone(), nc), true),
                        None => (SourceRef::Image(reference::normalize(&from)?), true),
                    },
                };
                out.push(r);
            }
        }
        _ => {}
    }
    Ok(out)
}

pub(crate) fn resolve_copy_from(
    from: &str,
    find_stage: &dyn Fn(&str) -> Option<usize>,
    named: &NamedLookup<'_>,
    stage_count: usize,
) -> Result<SourceRef, Error> {
    let expanded = Lexer::new('\\').process_word(from, &crate::expand::NoEnv)?;
    if expanded != from {
        return Err(Error::msg(
            "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
        ));
    }
    if let Ok(index) = from.parse::<i64>() {
        return match usize::try_from(index).ok().filter(|i| *i < stage_count) {
            Some(i) => Ok(SourceRef::Stage(i)),
            None => Err(Error::msg(format!("invalid stage index {index}"))),
        };
    }
    Ok(match find_stage(from) {
        Some(j) => SourceRef::Stage(j),
        None if from == "scratch" => SourceRef::Scratch,
        None => match named(from) {
            Some(nc) => SourceRef::Named(from.to_string(), nc),
            None => SourceRef::Image(reference::normalize(from)?),
        },
    })
}

impl Plan {
    /// Images whose config [`Plan::lower`] needs: bases of the needed stages and images read with
    /// `COPY --from`/`RUN --mount from=`. Not `scratch`, not stage names.
    pub fn base_images(&self) -> Vec<ImageRequest> {
        let mut out: Vec<ImageRequest> = Vec::new();
        let find_stage = |name: &str| {
            self.df
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&name.to_ascii_lowercase()))
        };
        for (i, st) in self.stages.iter().enumerate() {
            if !self.reachable[i] {
                continue;
            }
            let platform = self.stage_platform(i);
            let mut push = |reference: String, platform: Platform| {
                let req = ImageRequest {
                    reference,
                    platform,
                };
                if !out.contains(&req) {
                    out.push(req);
                }
            };
            if let Base::Image(r) | Base::Named(_, NamedContext::Image(r)) = &st.base {
                push(r.clone(), platform.clone());
            }
            if st.replaced {
                continue;
            }
            let named = named_lookup(&self.opts);
            for ins in &self.df.stages[i].instructions {
                for (r, _) in
                    source_refs(ins, &find_stage, &named, self.stages.len()).unwrap_or_default()
                {
                    if let SourceRef::Image(r) | SourceRef::Named(_, NamedContext::Image(r)) = r {
                        push(r, self.opts.target_platform.clone());
                    }
                }
            }
        }
        out
    }

    /// The stage that will be built.
    pub fn target_stage(&self) -> usize {
        self.target
    }

    /// Whether stage `index` is needed by the target.
    pub fn is_needed(&self, index: usize) -> bool {
        self.reachable.get(index).copied().unwrap_or(false)
    }

    /// The platform a stage runs on: `FROM --platform`, its base stage's, or the target platform.
    pub(crate) fn stage_platform(&self, i: usize) -> Platform {
        let mut i = i;
        for _ in 0..=self.stages.len() {
            if let Some(p) = &self.stages[i].platform {
                return p.clone();
            }
            match self.stages[i].base {
                Base::Stage(j) if j < i => i = j,
                _ => break,
            }
        }
        self.opts.target_platform.clone()
    }

    /// Lowers the plan given the configs of [`Plan::base_images`], keyed by reference (one
    /// config per reference, whatever platform it is used at).
    pub fn lower(&self, configs: &HashMap<String, ImageConfig>) -> Result<Lowered, Error> {
        let by_request = self
            .base_images()
            .into_iter()
            .filter_map(|r| Some((configs.get(&r.reference)?.clone(), r)))
            .map(|(c, r)| (r, c))
            .collect();
        self.lower_resolved(&by_request)
    }

    /// Lowers the plan given the configs of [`Plan::base_images`], each for the platform it
    /// was asked for: a stage on the build platform and one on the target platform may use
    /// the same image.
    pub fn lower_resolved(
        &self,
        configs: &HashMap<ImageRequest, ImageConfig>,
    ) -> Result<Lowered, Error> {
        // The context source lists the paths every stage reads, which are only known once all
        // stages are dispatched: lower once to collect them, then again with the final context.
        let first = dispatch::Lowerer::new(self, configs, None).run()?;
        let paths = first.context_paths.clone();
        let second = dispatch::Lowerer::new(self, configs, Some(paths)).run()?;
        Ok(second)
    }
}

#[cfg(test)]
mod tests;
