//! Dispatching stages and the metadata-only instructions (ENV, LABEL, CMD, ...).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard_buildkit_proto::pb;

use super::config::{
    add_env, go_duration, normalize_workdir, parse_ports, proxy_env, rfc3339, validate_signal,
};
use super::llb::{self, Graph, OpMeta, Output};
use super::{Base, Lowered, NamedContext, Plan, DEFAULT_PATH};
use crate::error::{go_list, go_quote_list, Error};
use crate::expand::{EnvList, Lexer};
use crate::image::{Empty, Healthcheck, History, ImageConfig};
use crate::instructions::{self, CommandLine, Instruction};
use crate::paths;
use crate::platform::Platform;

/// The build state of one stage while its instructions are dispatched.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub output: Output,
    pub env: EnvList,
    pub cwd: String,
    pub user: String,
    pub platform: Platform,
    pub image: ImageConfig,
    /// ARGs declared in the stage, with their values (for RUN history entries).
    pub build_args: Vec<(String, Option<String>)>,
    pub name: String,
    pub cmd_index: usize,
    pub cmd_total: usize,
    pub cmd_set: bool,
    pub is_onbuild: bool,
}

pub(crate) struct Lowerer<'a> {
    pub plan: &'a Plan,
    configs: &'a HashMap<super::ImageRequest, ImageConfig>,
    /// `None` in the first pass (paths unknown), `Some(paths)` in the final one.
    follow_paths: Option<Option<Vec<String>>>,
    pub graph: Graph,
    pub lex: Lexer,
    pub file: String,
    states: Vec<Option<StageState>>,
    in_progress: Vec<bool>,
    pub ctx_paths: BTreeSet<String>,
    context: Option<Output>,
    pub proxy: Option<pb::ProxyEnv>,
}

impl<'a> Lowerer<'a> {
    pub(crate) fn new(
        plan: &'a Plan,
        configs: &'a HashMap<super::ImageRequest, ImageConfig>,
        follow_paths: Option<Option<Vec<String>>>,
    ) -> Self {
        let n = plan.stages.len();
        Lowerer {
            plan,
            configs,
            follow_paths,
            graph: Graph::default(),
            lex: Lexer::new(plan.df.escape),
            file: plan.df.file_name.clone(),
            states: vec![None; n],
            in_progress: vec![false; n],
            ctx_paths: BTreeSet::new(),
            context: None,
            proxy: proxy_env(&plan.opts.build_args),
        }
    }

    pub(crate) fn run(mut self) -> Result<Lowered, Error> {
        for i in 0..self.plan.stages.len() {
            if self.plan.reachable[i] {
                self.ensure(i)?;
            }
        }
        let target = self.state(self.plan.target)?;
        let mut image = target.image.clone();
        let opts = &self.plan.opts;
        if !opts.labels.is_empty() {
            image
                .config
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(opts.labels.clone());
        }
        let tp = &opts.target_platform;
        let same = tp.os == image.os && tp.architecture == image.architecture;
        image.os = tp.os.clone();
        image.architecture = tp.architecture.clone();
        if tp.variant.is_some() || !same {
            image.variant = tp.variant.clone();
        }
        let definition = self.graph.definition(&target.output, &self.file);
        let stage_names = (0..self.states.len())
            .filter(|i| self.states[*i].is_some())
            .map(|i| {
                self.plan.df.stages[i]
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{i}"))
            })
            .collect();
        Ok(Lowered {
            definition,
            image_config: image,
            stage_names,
            context_paths: self.context_paths(),
        })
    }

    fn context_paths(&self) -> Option<Vec<String>> {
        if self.ctx_paths.is_empty() || self.ctx_paths.contains("/") {
            return None;
        }
        let mut v: Vec<String> = self
            .ctx_paths
            .iter()
            .map(|p| paths::join(&[".", p]))
            .collect();
        v.sort();
        Some(v)
    }

    /// The build context source (`local://context`).
    pub(crate) fn context(&mut self) -> Output {
        if let Some(c) = &self.context {
            return c.clone();
        }
        let opts = &self.plan.opts;
        let mut attrs = BTreeMap::new();
        let mut meta = OpMeta::named("[internal] load build context")
            .cap("source.local")
            .cap("source.local.sharedkeyhint");
        attrs.insert("local.sharedkeyhint".to_string(), opts.context_name.clone());
        if let Some(s) = &opts.session_id {
            attrs.insert("local.session".to_string(), s.clone());
            meta = meta.cap("source.local.sessionid");
        }
        if !opts.excludes.is_empty() {
            attrs.insert(
                "local.excludepatterns".to_string(),
                crate::error::go_json_strings(&opts.excludes),
            );
            meta = meta.cap("source.local.excludepatterns");
        }
        if let Some(Some(paths)) = &self.follow_paths {
            attrs.insert(
                "local.followpaths".to_string(),
                crate::error::go_json_strings(paths),
            );
            meta = meta.cap("source.local.followpaths");
        }
        let source = pb::SourceOp {
            identifier: format!("local://{}", opts.context_name),
            attrs,
        };
        let out = Some(
            self.graph
                .add(llb::op(vec![], None, pb::op::Op::Source(source)), &meta),
        );
        self.context = Some(out.clone());
        out
    }

    pub(crate) fn state(&self, i: usize) -> Result<&StageState, Error> {
        self.states
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::new(&self.file, 0, format!("stage {i} was not lowered")))
    }

    /// Dispatches stage `i` (and what it depends on) unless already done.
    pub(crate) fn ensure(&mut self, i: usize) -> Result<(), Error> {
        if self.states.get(i).is_some_and(Option::is_some) {
            return Ok(());
        }
        if self.in_progress[i] {
            let name = &self.plan.stages[i].display_name;
            return Err(Error::new(
                &self.file,
                self.plan.df.stages[i].line(),
                format!("circular dependency detected on stage: {name}"),
            ));
        }
        self.in_progress[i] = true;
        let state = self.dispatch_stage(i)?;
        self.states[i] = Some(state);
        Ok(())
    }

    /// An image source op (`docker-image://...`).
    pub(crate) fn image_source(
        &mut self,
        reference: &str,
        platform: &Platform,
        meta: OpMeta,
    ) -> Output {
        let source = pb::SourceOp {
            identifier: format!("docker-image://{reference}"),
            attrs: BTreeMap::new(),
        };
        Some(self.graph.add(
            llb::op(vec![], Some(platform.to_pb()), pb::op::Op::Source(source)),
            &meta.cap("source.image"),
        ))
    }

    /// The source of a named context that is not an image (those go through
    /// [`Lowerer::image_source`] with their config).
    pub(crate) fn named_source(
        &mut self,
        name: &str,
        nc: &NamedContext,
        platform: &Platform,
    ) -> Output {
        let opts = &self.plan.opts;
        let (identifier, mut attrs, meta) = match nc {
            NamedContext::Scratch => return None,
            NamedContext::Image(r) => {
                let meta = OpMeta::named(format!("[context {name}] {r}"));
                return self.image_source(r, platform, meta);
            }
            NamedContext::Local(local) => {
                let mut attrs = BTreeMap::new();
                let mut meta = OpMeta::named(format!("[context {name}] load from client"))
                    .cap("source.local")
                    .cap("source.local.sharedkeyhint");
                attrs.insert("local.sharedkeyhint".to_string(), local.clone());
                if let Some(s) = &opts.session_id {
                    attrs.insert("local.session".to_string(), s.clone());
                    meta = meta.cap("source.local.sessionid");
                }
                if let Some(ex) = opts.named_excludes.get(local).filter(|e| !e.is_empty()) {
                    attrs.insert(
                        "local.excludepatterns".to_string(),
                        crate::error::go_json_strings(ex),
                    );
                    meta = meta.cap("source.local.excludepatterns");
                }
                (format!("local://{local}"), attrs, meta)
            }
            NamedContext::Git(url) => {
                let (identifier, attrs) = NamedContext::git_source(url);
                let meta = OpMeta::named(format!("[context {name}] {url}")).cap("source.git");
                (identifier, attrs, meta)
            }
            NamedContext::Http(url) => {
                let meta = OpMeta::named(format!("[context {name}] {url}")).cap("source.http");
                (url.clone(), BTreeMap::new(), meta)
            }
        };
        if let NamedContext::Http(url) = nc {
            attrs.insert("http.filename".to_string(), super::copy::url_filename(url));
        }
        let source = pb::SourceOp { identifier, attrs };
        Some(
            self.graph
                .add(llb::op(vec![], None, pb::op::Op::Source(source)), &meta),
        )
    }

    fn dispatch_stage(&mut self, i: usize) -> Result<StageState, Error> {
        let plan = self.plan;
        let stage = &plan.df.stages[i];
        let planned = &plan.stages[i];
        let line = stage.line();
        let counted = stage
            .instructions
            .iter()
            .filter(|ins| {
                matches!(
                    ins,
                    Instruction::Run(_)
                        | Instruction::Copy(_)
                        | Instruction::Add(_)
                        | Instruction::Workdir { .. }
                )
            })
            .count();
        let mut triggers: Vec<String> = Vec::new();
        let mut st = match &planned.base {
            Base::Stage(j) => {
                let j = *j;
                self.ensure(j)?;
                let mut st = self.state(j)?.clone();
                st.image.config.on_build.clear();
                st.cmd_index = 0;
                st.cmd_total = counted;
                st.cmd_set = false;
                triggers = plan.df.stages[j]
                    .instructions
                    .iter()
                    .filter_map(|ins| match ins {
                        Instruction::Onbuild { expression, .. } => Some(expression.clone()),
                        _ => None,
                    })
                    .collect();
                st
            }
            Base::Scratch => {
                let platform = plan.stage_platform(i);
                new_state(None, ImageConfig::empty(&platform), platform, counted)
            }
            Base::Named(_, NamedContext::Scratch) => {
                let platform = plan.stage_platform(i);
                new_state(None, ImageConfig::empty(&platform), platform, counted)
            }
            Base::Named(
                name,
                nc @ (NamedContext::Local(_) | NamedContext::Git(_) | NamedContext::Http(_)),
            ) => {
                let platform = plan.stage_platform(i);
                let output = self.named_source(name, nc, &platform);
                new_state(output, ImageConfig::empty(&platform), platform, counted)
            }
            Base::Image(reference) | Base::Named(_, NamedContext::Image(reference)) => {
                let platform = plan.stage_platform(i);
                let request = super::ImageRequest {
                    reference: reference.clone(),
                    platform: platform.clone(),
                };
                let config = self.configs.get(&request).ok_or_else(|| {
                    Error::new(
                        &self.file,
                        line,
                        format!(
                            "missing image config for {reference} (Plan::base_images lists it)"
                        ),
                    )
                })?;
                let mut image = config.clone();
                image.created = None;
                let is_scratch =
                    image.rootfs.diff_ids.is_empty() && image.history.iter().all(|h| h.empty_layer);
                triggers = std::mem::take(&mut image.config.on_build);
                let mut st = new_state(None, image, platform.clone(), counted + 1);
                // BuildKit names the FROM step with the stage: `[build 1/3] FROM …`.
                st.name = planned.display_name.clone();
                if !is_scratch {
                    let name = self.prefix(&mut st, &format!("FROM {reference}"));
                    let meta = OpMeta {
                        command: Some(stage.source.code.clone()),
                        ..OpMeta::named(name)
                    };
                    let outer = self
                        .graph
                        .location
                        .replace((stage.source.start_line, stage.source.end_line));
                    st.output = self.image_source(reference, &platform, meta);
                    self.graph.location = outer;
                }
                st
            }
        };
        st.name = planned.display_name.clone();
        if st.platform.os != "windows"
            && !st
                .image
                .config
                .env
                .iter()
                .any(|e| e.split('=').next() == Some("PATH"))
        {
            st.image.config.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        for kv in st.image.config.env.clone() {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            st.env.set(k, v);
        }
        if !st.image.config.working_dir.is_empty() {
            let wd = normalize_workdir(&st.image.config.working_dir.clone(), "")
                .unwrap_or_else(|| "/".into());
            st.image.config.working_dir.clone_from(&wd);
            st.cwd = wd;
        }
        if !st.image.config.user.is_empty() {
            st.user = st.image.config.user.clone();
        }
        if planned.replaced {
            // The named context is the stage.
            return Ok(st);
        }
        let mut commands: Vec<(Instruction, bool)> = Vec::new();
        for t in &triggers {
            let ins = instructions::parse_instruction_line(t)
                .map_err(|e| Error::new(&self.file, line, e.message))?;
            commands.push((ins, true));
        }
        st.cmd_total += triggers.len();
        commands.extend(stage.instructions.iter().cloned().map(|ins| (ins, false)));
        for (ins, is_onbuild) in commands {
            st.is_onbuild = is_onbuild;
            let at = if is_onbuild { line } else { ins.line() };
            // Ops made for this instruction point back at its lines (ONBUILD ones at FROM).
            let lines = if is_onbuild {
                (stage.source.start_line, stage.source.end_line)
            } else {
                (ins.source().start_line, ins.source().end_line)
            };
            let outer = self.graph.location.replace(lines);
            let result = self.dispatch(&mut st, i, &ins);
            self.graph.location = outer;
            result.map_err(|e| e.at(&self.file, at))?;
        }
        st.is_onbuild = false;
        Ok(st)
    }

    /// BuildKit's `prefixCommand`: `[stage 2/5] ` before a step's name.
    pub(crate) fn prefix(&self, st: &mut StageState, s: &str) -> String {
        if st.cmd_total == 0 {
            return s.to_string();
        }
        let mut out = String::from("[");
        if self.plan.opts.multi_platform {
            out.push_str(&st.platform.format());
            out.push_str(&cross_target(&st.platform, &st.build_args));
            out.push(' ');
        }
        if !st.name.is_empty() {
            out.push_str(&st.name);
            out.push(' ');
        }
        st.cmd_index += 1;
        let width = st.cmd_total.to_string().len();
        out.push_str(&format!("{:>width$}/{}] ", st.cmd_index, st.cmd_total));
        if st.is_onbuild {
            out.push_str("ONBUILD ");
        }
        out + s
    }

    /// The step name BuildKit shows: the instruction with variables expanded and its keyword upper-cased.
    pub(crate) fn display_command(&self, lex: &Lexer, code: &str, env: &EnvList) -> String {
        let processed = lex
            .process_word(code, env)
            .unwrap_or_else(|_| code.to_string());
        uppercase_cmd(&processed)
    }

    pub(crate) fn commit(
        &self,
        st: &mut StageState,
        msg: String,
        with_layer: bool,
        buildkit: bool,
    ) {
        let created_by = if buildkit {
            format!("{msg} # buildkit")
        } else {
            msg
        };
        st.image.history.push(History {
            created: self.plan.epoch.map(rfc3339),
            created_by,
            author: String::new(),
            comment: "buildkit.dockerfile.v0".into(),
            empty_layer: !with_layer,
        });
    }

    pub(crate) fn word(&self, st: &StageState, w: &str) -> Result<String, Error> {
        Ok(self.lex.process_word(w, &st.env)?)
    }

    fn dispatch(
        &mut self,
        st: &mut StageState,
        stage: usize,
        ins: &Instruction,
    ) -> Result<(), Error> {
        match ins {
            Instruction::Run(run) => self.dispatch_run(st, stage, run),
            Instruction::Copy(c) => self.dispatch_copy_instruction(st, stage, c),
            Instruction::Add(a) => self.dispatch_add_instruction(st, stage, a),
            Instruction::Workdir { path, source } => self.dispatch_workdir(st, path, &source.code),
            Instruction::Env { pairs, .. } => {
                let mut expanded = Vec::new();
                for kv in pairs {
                    expanded.push((self.word(st, &kv.key)?, self.word(st, &kv.value)?));
                }
                let mut msg = String::from("ENV");
                for (k, v) in expanded {
                    msg.push_str(&format!(" {k}={v}"));
                    st.env.set(&k, &v);
                    add_env(&mut st.image.config.env, &k, &v);
                }
                self.commit(st, msg, false, false);
                Ok(())
            }
            Instruction::Label { pairs, .. } => {
                let mut msg = String::from("LABEL");
                let mut expanded = Vec::new();
                for kv in pairs {
                    expanded.push((self.word(st, &kv.key)?, self.word(st, &kv.value)?));
                }
                let labels = st.image.config.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in expanded {
                    msg.push_str(&format!(" {k}={v}"));
                    labels.insert(k, v);
                }
                self.commit(st, msg, false, false);
                Ok(())
            }
            Instruction::Expose { ports, .. } => {
                let mut words = Vec::new();
                for p in ports {
                    words.extend(self.lex.process_words(p, &st.env)?);
                }
                let specs = parse_ports(&words)?;
                let exposed = st
                    .image
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for p in &specs {
                    exposed.insert(p.clone(), Empty {});
                }
                self.commit(st, format!("EXPOSE {}", go_list(&specs)), false, false);
                Ok(())
            }
            Instruction::Cmd { cmd, .. } => {
                let args = with_shell(&st.image, &st.platform, cmd);
                st.image.config.cmd = Some(args.clone());
                st.image.config.args_escaped = true;
                st.cmd_set = true;
                self.commit(st, format!("CMD {}", go_quote_list(&args)), false, false);
                Ok(())
            }
            Instruction::Entrypoint { cmd, .. } => {
                let args = if cmd.args.is_empty() && !cmd.shell_form {
                    Vec::new()
                } else {
                    with_shell(&st.image, &st.platform, cmd)
                };
                st.image.config.entrypoint = (!args.is_empty()).then(|| args.clone());
                if !st.cmd_set {
                    st.image.config.cmd = None;
                }
                self.commit(
                    st,
                    format!("ENTRYPOINT {}", go_quote_list(&args)),
                    false,
                    false,
                );
                Ok(())
            }
            Instruction::User { user, .. } => {
                let user = self.word(st, user)?;
                st.user.clone_from(&user);
                st.image.config.user.clone_from(&user);
                self.commit(st, format!("USER {user}"), false, false);
                Ok(())
            }
            Instruction::Volume { paths, .. } => {
                let mut expanded = Vec::new();
                for p in paths {
                    let v = self.word(st, p)?;
                    if v.is_empty() {
                        return Err(Error::msg("VOLUME specified can not be an empty string"));
                    }
                    expanded.push(v);
                }
                let volumes = st.image.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &expanded {
                    volumes.insert(v.clone(), Empty {});
                }
                self.commit(st, format!("VOLUME {}", go_list(&expanded)), false, false);
                Ok(())
            }
            Instruction::Stopsignal { signal, .. } => {
                let signal = self.word(st, signal)?;
                validate_signal(&signal)?;
                st.image.config.stop_signal.clone_from(&signal);
                self.commit(st, format!("STOPSIGNAL {signal}"), false, false);
                Ok(())
            }
            Instruction::Shell { shell, .. } => {
                st.image.config.shell.clone_from(shell);
                self.commit(st, format!("SHELL {}", go_list(shell)), false, false);
                Ok(())
            }
            Instruction::Healthcheck { health, .. } => {
                let hc = Healthcheck {
                    test: health.test.clone(),
                    interval: health.interval,
                    timeout: health.timeout,
                    start_period: health.start_period,
                    start_interval: health.start_interval,
                    retries: health.retries,
                };
                let msg = format!(
                    "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                    go_list(&hc.test),
                    go_duration(hc.interval),
                    go_duration(hc.timeout),
                    go_duration(hc.start_period),
                    go_duration(hc.start_interval),
                    hc.retries
                );
                st.image.config.healthcheck = Some(hc);
                self.commit(st, msg, false, false);
                Ok(())
            }
            Instruction::Arg { args, .. } => {
                let opts = &self.plan.opts;
                let mut parts = Vec::new();
                for arg in args {
                    let value = if let Some(v) = opts.build_args.get(&arg.key) {
                        Some(v.clone())
                    } else if let Some(d) = &arg.value {
                        Some(self.word(st, d)?)
                    } else {
                        self.plan.global_args.get(&arg.key).map(str::to_string)
                    };
                    if let Some(v) = &value {
                        if !matches!(
                            arg.key.as_str(),
                            "BUILDKIT_SBOM_SCAN_CONTEXT" | "BUILDKIT_SBOM_SCAN_STAGE"
                        ) {
                            st.env.set(&arg.key, v);
                        }
                    }
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", arg.key),
                        None => arg.key.clone(),
                    });
                    st.build_args.push((arg.key.clone(), value));
                }
                self.commit(st, format!("ARG {}", parts.join(" ")), false, false);
                Ok(())
            }
            Instruction::Onbuild { expression, .. } => {
                st.image.config.on_build.push(expression.clone());
                Ok(())
            }
            Instruction::Maintainer { name, .. } => {
                st.image.author = Some(name.clone());
                self.commit(st, format!("MAINTAINER {name}"), false, false);
                Ok(())
            }
        }
    }

    fn dispatch_workdir(
        &mut self,
        st: &mut StageState,
        path: &str,
        code: &str,
    ) -> Result<(), Error> {
        let path = self.word(st, path)?;
        let wd = normalize_workdir(&st.image.config.working_dir, &path)
            .ok_or_else(|| Error::msg("normalizing workdir: cannot normalize nothing"))?;
        st.image.config.working_dir.clone_from(&wd);
        st.cwd.clone_from(&wd);
        let mut with_layer = false;
        if wd != "/" {
            let name = self.display_command(&self.lex, code, &st.env);
            let name = self.prefix(st, &name);
            let mut inputs = Vec::new();
            let base = llb::input_index(&mut inputs, &st.output);
            let owner = (!st.image.config.user.is_empty())
                .then(|| llb::chown_opt(&st.image.config.user, base));
            let mkdir = pb::FileActionMkDir {
                path: paths::normalize(&st.cwd, &wd, false),
                mode: 0o755,
                make_parents: true,
                owner,
                timestamp: self
                    .plan
                    .epoch
                    .map_or(-1, |e| e.saturating_mul(1_000_000_000)),
            };
            let action = pb::FileAction {
                input: base,
                secondary_input: llb::EMPTY,
                output: 0,
                action: Some(pb::file_action::Action::Mkdir(mkdir)),
            };
            let meta = OpMeta {
                ignore_cache: self.plan.opts.no_cache,
                ..OpMeta::named(name)
            }
            .cap("file.base");
            let op = llb::op(
                inputs,
                None,
                pb::op::Op::File(pb::FileOp {
                    actions: vec![action],
                }),
            );
            st.output = Some(self.graph.add(op, &meta));
            with_layer = true;
        }
        self.commit(st, format!("WORKDIR {wd}"), with_layer, false);
        Ok(())
    }
}

fn new_state(
    output: Output,
    image: ImageConfig,
    platform: Platform,
    cmd_total: usize,
) -> StageState {
    StageState {
        output,
        env: EnvList::new(),
        cwd: "/".into(),
        user: String::new(),
        platform,
        image,
        build_args: Vec::new(),
        name: String::new(),
        cmd_index: 0,
        cmd_total,
        cmd_set: false,
        is_onbuild: false,
    }
}

/// `withShell`: the image's SHELL (or `/bin/sh -c`) plus the joined command.
pub(crate) fn with_shell(
    image: &ImageConfig,
    platform: &Platform,
    cmd: &CommandLine,
) -> Vec<String> {
    if !cmd.shell_form {
        return cmd.args.clone();
    }
    let mut shell = if !image.config.shell.is_empty() {
        image.config.shell.clone()
    } else if platform.os == "windows" {
        vec!["cmd".into(), "/S".into(), "/C".into()]
    } else {
        vec!["/bin/sh".into(), "-c".into()]
    };
    shell.push(cmd.args.join(" "));
    shell
}

pub(crate) fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
        None => s.to_uppercase(),
    }
}

/// BuildKit's `formatTargetPlatform`: `->arm64` after a stage's own platform when its
/// `TARGET*` args name another architecture (a stage cross-compiling on the build platform).
fn cross_target(base: &Platform, args: &[(String, Option<String>)]) -> String {
    let arg = |k: &str| {
        args.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone())
    };
    let target = match arg("TARGETPLATFORM").and_then(|v| Platform::parse(&v).ok()) {
        Some(p) => p,
        None => {
            let (os, arch) = (arg("TARGETOS"), arg("TARGETARCH"));
            if os.is_none() && arch.is_none() && arg("TARGETVARIANT").is_none() {
                return String::new();
            }
            let os = os.filter(|s| !s.is_empty()).unwrap_or(base.os.clone());
            let arch = arch
                .filter(|s| !s.is_empty())
                .unwrap_or(base.architecture.clone());
            let variant = arg("TARGETVARIANT").filter(|s| !s.is_empty());
            match Platform::parse(&format!("{os}/{arch}")) {
                Ok(mut p) => {
                    if variant.is_some() {
                        p.variant = variant;
                    }
                    p
                }
                Err(_) => return String::new(),
            }
        }
    };
    if target.os != base.os {
        format!("->{}", target.format())
    } else if target.architecture != base.architecture {
        match &target.variant {
            Some(v) => format!("->{}/{v}", target.architecture),
            None => format!("->{}", target.architecture),
        }
    } else {
        String::new()
    }
}
