//! RUN → ExecOp, with `--mount`, `--network`, `--security` and heredocs.

use bollard_buildkit_proto::pb;

use super::dispatch::{with_shell, Lowerer, StageState};
use super::llb::{self, OpMeta, Output};
use super::{resolve_copy_from, SourceRef};
use crate::error::Error;
use crate::expand::Lexer;
use crate::instructions::{MountType, NetworkMode, Run, SecurityMode, Sharing};
use crate::parser::{chomp_heredoc_content, parse_heredoc};
use crate::paths;

/// Why a `--from`/`from=` is being resolved (the error wording differs).
#[derive(Clone, Copy)]
pub(crate) enum SourceUse<'a> {
    Copy,
    Mount(&'a str),
}

/// A mount of the exec op before input indexes are assigned.
struct PendingMount {
    target: String,
    source: Output,
    selector: String,
    readonly: bool,
    no_output: bool,
    cache: Option<pb::CacheOpt>,
    tmpfs: Option<pb::TmpfsOpt>,
}

impl Lowerer<'_> {
    pub(crate) fn dispatch_run(
        &mut self,
        st: &mut StageState,
        stage: usize,
        run: &Run,
    ) -> Result<(), Error> {
        let mut custom_name = run.source.code.clone();
        let mut args = run.cmd.args.clone();
        let mut mounts: Vec<PendingMount> = Vec::new();
        if !run.cmd.files.is_empty() {
            let single = args.len() == 1
                && run.cmd.shell_form
                && parse_heredoc(&args[0]).ok().flatten().is_some();
            if args.len() != 1 || !run.cmd.shell_form {
                return Err(Error::msg(format!(
                    "parsing produced an invalid run command: {}",
                    crate::error::go_list(&args)
                )));
            }
            if single {
                let file = &run.cmd.files[0];
                let data = if file.chomp {
                    chomp_heredoc_content(&file.data)
                } else {
                    file.data.clone()
                };
                if st.platform.os != "windows" && data.starts_with("#!") {
                    let mkfile = pb::FileActionMkFile {
                        path: paths::normalize("/", &file.name, false),
                        mode: 0o755,
                        data: data.clone().into_bytes(),
                        owner: None,
                        timestamp: -1,
                    };
                    let action = pb::FileAction {
                        input: llb::EMPTY,
                        secondary_input: llb::EMPTY,
                        output: 0,
                        action: Some(pb::file_action::Action::Mkfile(mkfile)),
                    };
                    let op = llb::op(
                        vec![],
                        None,
                        pb::op::Op::File(pb::FileOp {
                            actions: vec![action],
                        }),
                    );
                    let out = self.graph.add(
                        op,
                        &OpMeta::named("[internal] preparing inline document").cap("file.base"),
                    );
                    mounts.push(PendingMount {
                        target: "/dev/pipes/".into(),
                        source: Some(out),
                        selector: "/".into(),
                        readonly: true,
                        no_output: false,
                        cache: None,
                        tmpfs: None,
                    });
                    args = vec![paths::join(&["/dev/pipes/", &file.name])];
                } else {
                    args = vec![data];
                }
                custom_name.push_str(&format!(" ({})", summarize_heredoc(&file.data)));
            } else {
                let mut b = args[0].clone();
                for f in &run.cmd.files {
                    b.push('\n');
                    b.push_str(&f.data);
                    b.push_str(&f.name);
                }
                args = vec![b];
            }
        }
        if run.cmd.shell_form {
            let cmd = crate::instructions::CommandLine {
                args: args.clone(),
                shell_form: true,
                files: vec![],
            };
            args = with_shell(&st.image, &st.platform, &cmd);
        }

        let mut secrets: Vec<(pb::SecretOpt, Option<String>, Option<String>)> = Vec::new();
        let mut ssh: Vec<(pb::SshOpt, String)> = Vec::new();
        let mut caps: Vec<&'static str> = vec!["exec.meta.base", "exec.meta.setsdefaultpath"];
        let cache_ns = self
            .plan
            .opts
            .build_args
            .get("BUILDKIT_CACHE_MOUNT_NS")
            .cloned()
            .unwrap_or_default();
        for raw in &run.mounts {
            let m = self.expand_mount(st, raw)?;
            match m.kind {
                MountType::Secret => {
                    let id = m
                        .source
                        .clone()
                        .or(m.id.clone())
                        .unwrap_or_else(|| paths::base(&m.target));
                    let target = if !m.target.is_empty() {
                        Some(m.target.clone())
                    } else if m.env.is_none() {
                        Some(format!("/run/secrets/{}", paths::base(&id)))
                    } else {
                        None
                    };
                    let custom = m.uid.is_some() || m.gid.is_some() || m.mode.is_some();
                    let opt = pb::SecretOpt {
                        id,
                        uid: if custom { m.uid.unwrap_or(0) } else { 0 },
                        gid: if custom { m.gid.unwrap_or(0) } else { 0 },
                        mode: if custom {
                            m.mode.unwrap_or(0o400)
                        } else {
                            0o400
                        },
                        optional: !m.required,
                    };
                    secrets.push((opt, target, m.env.clone()));
                    continue;
                }
                MountType::Ssh => {
                    if m.source.is_some() {
                        return Err(Error::msg("ssh does not support source"));
                    }
                    let custom = m.uid.is_some() || m.gid.is_some() || m.mode.is_some();
                    let opt = pb::SshOpt {
                        id: m.id.clone().unwrap_or_default(),
                        uid: if custom { m.uid.unwrap_or(0) } else { 0 },
                        gid: if custom { m.gid.unwrap_or(0) } else { 0 },
                        mode: if custom {
                            m.mode.unwrap_or(0o600)
                        } else {
                            0o600
                        },
                        optional: !m.required,
                    };
                    ssh.push((opt, m.target.clone()));
                    continue;
                }
                _ => {}
            }
            let from = match (&m.from, m.kind) {
                (None, MountType::Cache) => Some("scratch".to_string()),
                (f, _) => f.clone(),
            };
            let mut source: Output = match &from {
                None => self.context(),
                Some(f) => self.resolve_source(st, stage, f, SourceUse::Mount(&m.target))?,
            };
            if m.kind == MountType::Tmpfs {
                source = None;
            }
            let target = {
                let t = paths::clean(&m.target);
                if t.starts_with('/') {
                    m.target.clone()
                } else {
                    paths::join(&["/", &st.cwd, &m.target])
                }
            };
            if target == "/" || paths::clean(&target) == "/" {
                return Err(Error::msg(format!(
                    "invalid mount target {}",
                    crate::error::go_quote(&target)
                )));
            }
            let mut selector = String::new();
            let src_path = paths::join(&["/", m.source.as_deref().unwrap_or("")]);
            if src_path != "/" {
                selector.clone_from(&src_path);
            } else if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                source = self.cache_permissions(
                    &source,
                    m.uid.unwrap_or(0),
                    m.gid.unwrap_or(0),
                    m.mode.unwrap_or(0o755),
                );
                selector = "/cache".into();
            }
            let cache = (m.kind == MountType::Cache).then(|| {
                let id = m.id.clone().unwrap_or_else(|| paths::clean(&m.target));
                let sharing = match m.sharing {
                    Some(Sharing::Private) => pb::CacheSharingOpt::Private,
                    Some(Sharing::Locked) => pb::CacheSharingOpt::Locked,
                    _ => pb::CacheSharingOpt::Shared,
                };
                pb::CacheOpt {
                    id: format!("{cache_ns}/{id}"),
                    sharing: sharing as i32,
                }
            });
            let tmpfs = (m.kind == MountType::Tmpfs).then_some(pb::TmpfsOpt { size: m.size });
            if from.is_none() {
                self.ctx_paths.insert(src_path.clone());
            }
            mounts.push(PendingMount {
                target,
                source,
                selector,
                readonly: m.readonly,
                no_output: !m.readonly && m.kind == MountType::Bind,
                cache,
                tmpfs,
            });
        }

        // Root mount first, then the rest sorted by target like llb's ExecOp.Marshal.
        mounts.push(PendingMount {
            target: "/".into(),
            source: st.output.clone(),
            selector: String::new(),
            readonly: false,
            no_output: false,
            cache: None,
            tmpfs: None,
        });
        mounts.sort_by(|a, b| a.target.cmp(&b.target));
        let mut inputs = Vec::new();
        let mut pb_mounts = Vec::new();
        let mut out_index = 0i64;
        for m in &mounts {
            let input = if m.tmpfs.is_some() {
                llb::EMPTY
            } else {
                llb::input_index(&mut inputs, &m.source)
            };
            let output = if !m.no_output && !m.readonly && m.cache.is_none() && m.tmpfs.is_none() {
                out_index += 1;
                out_index - 1
            } else {
                llb::EMPTY
            };
            if !m.selector.is_empty() {
                caps.push("exec.mount.selector");
            }
            if m.cache.is_some() {
                caps.extend(["exec.mount.cache", "exec.mount.cache.sharing"]);
            } else if let Some(t) = &m.tmpfs {
                caps.push("exec.mount.tmpfs");
                if t.size > 0 {
                    caps.push("exec.mount.tmpfs.size");
                }
            } else if m.source.is_some() {
                caps.push("exec.mount.bind");
            }
            let mount_type = if m.cache.is_some() {
                pb::MountType::Cache
            } else if m.tmpfs.is_some() {
                pb::MountType::Tmpfs
            } else {
                pb::MountType::Bind
            };
            pb_mounts.push(pb::Mount {
                input,
                selector: m.selector.clone(),
                dest: m.target.clone(),
                output,
                readonly: m.readonly,
                mount_type: mount_type as i32,
                tmpfs_opt: m.tmpfs,
                cache_opt: m.cache.clone(),
                ..pb::Mount::default()
            });
        }
        let mut secret_env = Vec::new();
        for (opt, target, env) in &secrets {
            caps.push("exec.mount.secret");
            if let Some(name) = env {
                caps.push("exec.secretenv");
                secret_env.push(pb::SecretEnv {
                    id: opt.id.clone(),
                    name: name.clone(),
                    optional: opt.optional,
                });
            }
            if let Some(t) = target {
                pb_mounts.push(pb::Mount {
                    input: llb::EMPTY,
                    dest: t.clone(),
                    mount_type: pb::MountType::Secret as i32,
                    secret_opt: Some(opt.clone()),
                    ..pb::Mount::default()
                });
            }
        }
        let mut env = st.env.clone();
        for (i, (opt, target)) in ssh.iter().enumerate() {
            caps.push("exec.mount.ssh");
            let dest = if target.is_empty() {
                format!("/run/buildkit/ssh_agent.{i}")
            } else {
                target.clone()
            };
            if i == 0 && env.get("SSH_AUTH_SOCK").is_none() {
                env.set("SSH_AUTH_SOCK", &dest);
            }
            pb_mounts.push(pb::Mount {
                input: llb::EMPTY,
                dest,
                mount_type: pb::MountType::Ssh as i32,
                ssh_opt: Some(opt.clone()),
                ..pb::Mount::default()
            });
        }
        let network = match run.network {
            Some(NetworkMode::None) => pb::NetMode::None,
            Some(NetworkMode::Host) => pb::NetMode::Host,
            _ => pb::NetMode::Unset,
        };
        if network != pb::NetMode::Unset {
            caps.push("exec.meta.network");
        }
        let security = match run.security {
            Some(SecurityMode::Insecure) => {
                caps.push("exec.meta.security");
                pb::SecurityMode::Insecure
            }
            _ => pb::SecurityMode::Sandbox,
        };
        if self.proxy.is_some() {
            caps.push("exec.meta.proxyenv");
        }
        let exec = pb::ExecOp {
            meta: Some(pb::Meta {
                args: args.clone(),
                env: env.to_vec(),
                cwd: st.cwd.clone(),
                user: st.user.clone(),
                proxy_env: self.proxy.clone(),
                remove_mount_stubs_recursive: true,
                ..pb::Meta::default()
            }),
            mounts: pb_mounts,
            network: network as i32,
            security: security as i32,
            secretenv: secret_env,
            cdi_devices: Vec::new(),
        };
        let shown_env = {
            let mut e = st.env.clone();
            for (opt, _, name) in &secrets {
                if let Some(n) = name {
                    e.set(n, &format!("****** (secret {})", opt.id));
                }
            }
            e
        };
        let raw_lex = Lexer {
            raw_quotes: true,
            skip_unset_env: true,
            ..self.lex
        };
        let shown = self.display_command(&raw_lex, &custom_name, &shown_env);
        let name = self.prefix(st, &shown);
        let mut meta = OpMeta {
            command: Some(run.source.code.clone()),
            ignore_cache: self.plan.opts.no_cache,
            ..OpMeta::named(name)
        };
        meta.caps.extend(caps);
        let op = llb::op(inputs, Some(st.platform.to_pb()), pb::op::Op::Exec(exec));
        st.output = Some(self.graph.add(op, &meta));
        let history = run_command_string(&args, &st.build_args, &st.env);
        self.commit(st, format!("RUN {history}"), true, true);
        Ok(())
    }

    fn expand_mount(
        &self,
        st: &StageState,
        m: &crate::instructions::Mount,
    ) -> Result<crate::instructions::Mount, Error> {
        let mut out = m.clone();
        let word = |v: &str| -> Result<String, Error> { self.word(st, v) };
        out.from = m.from.as_deref().map(word).transpose()?;
        out.source = m.source.as_deref().map(word).transpose()?;
        out.target = word(&m.target)?;
        out.id = m.id.as_deref().map(word).transpose()?;
        out.env = m.env.as_deref().map(word).transpose()?;
        Ok(out)
    }

    /// The state a `from=` names: an earlier stage, `scratch` or an image.
    pub(crate) fn resolve_source(
        &mut self,
        st: &StageState,
        stage: usize,
        from: &str,
        usage: SourceUse<'_>,
    ) -> Result<Output, Error> {
        let plan = self.plan;
        let find_stage = |name: &str| {
            plan.df
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&name.to_ascii_lowercase()))
        };
        let named = super::named_lookup(&plan.opts);
        let r = match (find_stage(from), usage) {
            (Some(j), _) => SourceRef::Stage(j),
            (None, SourceUse::Mount(_)) if from == "scratch" => SourceRef::Scratch,
            (None, SourceUse::Mount(_)) => match named(from) {
                Some(nc) => SourceRef::Named(from.to_string(), nc),
                None => SourceRef::Image(crate::reference::normalize(from)?),
            },
            (None, SourceUse::Copy) => {
                resolve_copy_from(from, &find_stage, &named, plan.stages.len())?
            }
        };
        match r {
            SourceRef::Scratch => Ok(None),
            SourceRef::Stage(j) => {
                if j >= stage {
                    return Err(Error::msg(match usage {
                        SourceUse::Mount(target) => format!(
                            "cannot mount from stage {} to {}, stage needs to be defined before current command",
                            crate::error::go_quote(from),
                            crate::error::go_quote(target)
                        ),
                        SourceUse::Copy => format!(
                            "cannot copy from stage {}, it needs to be defined before current stage {}",
                            crate::error::go_quote(from),
                            crate::error::go_quote(&st.name)
                        ),
                    }));
                }
                self.ensure(j)?;
                Ok(self.state(j)?.output.clone())
            }
            SourceRef::Image(r) => {
                let platform = self.plan.opts.target_platform.clone();
                Ok(self.image_source(&r, &platform, OpMeta::named(format!("FROM {r}"))))
            }
            SourceRef::Named(name, nc) => {
                let platform = self.plan.opts.target_platform.clone();
                Ok(self.named_source(&name, &nc, &platform))
            }
        }
    }

    /// `setCacheUIDGID`: a `/cache` directory with the requested owner and mode.
    fn cache_permissions(&mut self, source: &Output, uid: u32, gid: u32, mode: u32) -> Output {
        let mut inputs = Vec::new();
        let base = llb::input_index(&mut inputs, source);
        let id = |v: u32| pb::UserOpt {
            user: Some(pb::user_opt::User::ById(v)),
        };
        let mkdir = pb::FileActionMkDir {
            path: "/cache".into(),
            mode: (mode & 0o777) as i32,
            make_parents: false,
            owner: Some(pb::ChownOpt {
                user: Some(id(uid)),
                group: Some(id(gid)),
            }),
            timestamp: -1,
        };
        let action = pb::FileAction {
            input: base,
            secondary_input: llb::EMPTY,
            output: 0,
            action: Some(pb::file_action::Action::Mkdir(mkdir)),
        };
        let op = llb::op(
            inputs,
            None,
            pb::op::Op::File(pb::FileOp {
                actions: vec![action],
            }),
        );
        Some(self.graph.add(
            op,
            &OpMeta::named("[internal] setting cache mount permissions").cap("file.base"),
        ))
    }
}

/// BuildKit's `runCommandString`: `|N K=V ... cmd` when ARGs are in scope.
fn run_command_string(
    args: &[String],
    build_args: &[(String, Option<String>)],
    env: &crate::expand::EnvList,
) -> String {
    let mut kv: Vec<(String, String)> = Vec::new();
    for (k, v) in build_args {
        let value = env
            .get(k)
            .map(str::to_string)
            .unwrap_or_else(|| v.clone().unwrap_or_default());
        match kv.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = value,
            None => kv.push((k.clone(), value)),
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if !kv.is_empty() {
        parts.push(format!("|{}", kv.len()));
        parts.extend(kv.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim().replace("\r\n", "\n");
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}
