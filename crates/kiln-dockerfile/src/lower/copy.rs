//! COPY and ADD → FileOp copy actions (and `COPY --link` → MergeOp, ADD <url> → http source).

use bollard_buildkit_proto::pb;

use super::dispatch::{Lowerer, StageState};
use super::llb::{self, OpMeta, Output};
use super::run::SourceUse;
use crate::error::Error;
use crate::expand::Lexer;
use crate::instructions::{Add, Copy, SourceContent};
use crate::paths;

/// What COPY and ADD have in common once typed.
struct CopySpec<'a> {
    is_add: bool,
    code: &'a str,
    srcs: &'a [String],
    contents: &'a [SourceContent],
    dest: &'a str,
    from: Option<&'a str>,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    link: bool,
    parents: bool,
    checksum: Option<&'a str>,
    unpack: Option<bool>,
    keep_git_dir: Option<bool>,
    excludes: &'a [String],
}

/// A copy action waiting for input indexes.
struct PendingCopy {
    source: Output,
    action: pb::FileActionCopy,
}

impl Lowerer<'_> {
    pub(crate) fn dispatch_copy_instruction(
        &mut self,
        st: &mut StageState,
        stage: usize,
        c: &Copy,
    ) -> Result<(), Error> {
        let spec = CopySpec {
            is_add: false,
            code: &c.source.code,
            srcs: &c.srcs,
            contents: &c.contents,
            dest: &c.dest,
            from: c.from.as_deref(),
            chown: c.chown.as_deref(),
            chmod: c.chmod.as_deref(),
            link: c.link,
            parents: c.parents,
            checksum: None,
            unpack: None,
            keep_git_dir: None,
            excludes: &c.excludes,
        };
        self.dispatch_copy(st, stage, &spec)
    }

    pub(crate) fn dispatch_add_instruction(
        &mut self,
        st: &mut StageState,
        stage: usize,
        a: &Add,
    ) -> Result<(), Error> {
        let spec = CopySpec {
            is_add: true,
            code: &a.source.code,
            srcs: &a.srcs,
            contents: &a.contents,
            dest: &a.dest,
            from: None,
            chown: a.chown.as_deref(),
            chmod: a.chmod.as_deref(),
            link: a.link,
            parents: false,
            checksum: a.checksum.as_deref(),
            unpack: a.unpack,
            keep_git_dir: a.keep_git_dir,
            excludes: &a.excludes,
        };
        self.dispatch_copy(st, stage, &spec)
    }

    fn dispatch_copy(
        &mut self,
        st: &mut StageState,
        stage: usize,
        c: &CopySpec<'_>,
    ) -> Result<(), Error> {
        let word = |w: &str| self.word(st, w);
        let chown = c.chown.map(word).transpose()?.filter(|s| !s.is_empty());
        let chmod = c.chmod.map(word).transpose()?.filter(|s| !s.is_empty());
        let checksum = c.checksum.map(word).transpose()?.filter(|s| !s.is_empty());
        let srcs = c
            .srcs
            .iter()
            .map(|s| word(s))
            .collect::<Result<Vec<_>, _>>()?;
        let dest_raw = word(c.dest)?;
        let raw_lex = Lexer {
            skip_process_quotes: true,
            ..Lexer::new('\\')
        };
        let mut contents = Vec::new();
        for sc in c.contents {
            let data = if sc.expand {
                raw_lex.process_word(&sc.data, &st.env)?
            } else {
                sc.data.clone()
            };
            contents.push((sc.path.clone(), data));
        }
        let dest = if dest_raw.starts_with('/') {
            paths::normalize("/", &dest_raw, true)
        } else {
            let p = if dest_raw.is_empty() || dest_raw == "." {
                "./"
            } else {
                dest_raw.as_str()
            };
            paths::normalize(&st.cwd, p, true)
        };
        let (mode, mode_str) = parse_chmod(chmod.as_deref())?;
        if let Some(sum) = &checksum {
            if c.srcs.len() != 1 {
                return Err(Error::msg(
                    "checksum can't be specified for multiple sources",
                ));
            }
            if !is_http(&srcs[0]) {
                return Err(Error::msg("checksum requires HTTP(S) or Git sources"));
            }
            if !sum.contains(':') {
                return Err(Error::msg(format!("invalid checksum digest format: {sum}")));
            }
        }

        let keyword = if c.is_add { "ADD" } else { "COPY" };
        let mut msg = keyword.to_string();
        if c.parents {
            msg.push_str(" --parents");
        }
        if let Some(o) = &chown {
            msg.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &chmod {
            msg.push_str(&format!(" --chmod={m}"));
        }
        let name = self.display_command(&self.lex, c.code, &st.env);
        let pg_name = self.prefix(st, &name);

        let source_state: Output = match c.from {
            Some(from) => self.resolve_source(st, stage, from, SourceUse::Copy)?,
            None => self.context(),
        };
        let mut pending: Vec<PendingCopy> = Vec::new();
        let blank = |src: String| pb::FileActionCopy {
            src,
            dest: dest.clone(),
            owner: None,
            mode: mode.unwrap_or(-1),
            mode_str: mode_str.clone().unwrap_or_default(),
            create_dest_path: true,
            timestamp: -1,
            exclude_patterns: c.excludes.to_vec(),
            ..pb::FileActionCopy::default()
        };
        for src in &srcs {
            msg.push_str(&format!(" {src}"));
            if is_git(src) {
                if !c.is_add {
                    return Err(Error::msg("source can't be a git ref for COPY"));
                }
                let (identifier, attrs) = git_source(src, c.keep_git_dir.unwrap_or(false));
                let meta = OpMeta {
                    command: Some(String::new()),
                    ..OpMeta::named(pg_name.clone())
                }
                .cap("source.git");
                let op = llb::op(
                    vec![],
                    None,
                    pb::op::Op::Source(pb::SourceOp { identifier, attrs }),
                );
                let out = self.graph.add(op, &meta);
                let mut action = blank("/".to_string());
                action.dir_copy_contents = true;
                pending.push(PendingCopy {
                    source: Some(out),
                    action,
                });
                continue;
            }
            if is_http(src) {
                if !c.is_add {
                    return Err(Error::msg("source can't be a URL for COPY"));
                }
                let filename = url_filename(src);
                let mut attrs = std::collections::BTreeMap::new();
                attrs.insert("http.filename".to_string(), filename.clone());
                let mut meta = OpMeta {
                    command: Some(String::new()),
                    ..OpMeta::named(pg_name.clone())
                }
                .cap("source.http");
                if let Some(sum) = &checksum {
                    attrs.insert("http.checksum".to_string(), sum.clone());
                    meta = meta.cap("source.http.checksum");
                }
                let op = llb::op(
                    vec![],
                    None,
                    pb::op::Op::Source(pb::SourceOp {
                        identifier: src.clone(),
                        attrs,
                    }),
                );
                let out = self.graph.add(op, &meta);
                let mut action = blank(paths::join(&["/", &filename]));
                action.attempt_unpack_docker_compatibility = c.unpack.unwrap_or(false);
                pending.push(PendingCopy {
                    source: Some(out),
                    action,
                });
                continue;
            }
            let mut src_path = src.clone();
            let mut include = Vec::new();
            let mut required = Vec::new();
            if c.parents {
                let (parent, pattern) = match src.split_once("/./") {
                    Some((p, pat)) => (p.to_string(), pat.to_string()),
                    None => ("/".to_string(), src.clone()),
                };
                let pattern = paths::normalize("/", &pattern, false);
                include.push(pattern.trim_start_matches('/').to_string());
                if !contains_wildcards(&parent) && !contains_wildcards(&pattern) {
                    required.push(paths::normalize(
                        "/",
                        &paths::join(&[&parent, &pattern]),
                        false,
                    ));
                }
                src_path = parent;
            }
            let mut action = blank(paths::normalize("/", &src_path, false));
            action.follow_symlink = true;
            action.dir_copy_contents = true;
            action.allow_wildcard = true;
            action.allow_empty_wildcard = true;
            action.attempt_unpack_docker_compatibility = c.unpack.unwrap_or(c.is_add);
            action.include_patterns = include;
            action.required_paths = required;
            pending.push(PendingCopy {
                source: source_state.clone(),
                action,
            });
            if c.from.is_none() {
                self.ctx_paths.insert(paths::join(&["/", src]));
            }
        }
        for (path, data) in &contents {
            msg.push_str(&format!(" <<{path}"));
            let mkfile = pb::FileActionMkFile {
                path: paths::normalize("/", path, false),
                mode: 0o644,
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
            let mut copy = blank(paths::normalize("/", path, false));
            copy.exclude_patterns = c.excludes.to_vec();
            pending.push(PendingCopy {
                source: Some(out),
                action: copy,
            });
        }
        msg.push_str(&format!(" {dest_raw}"));

        let link = c.link && chmod.is_none();
        let base_state: Output = if link { None } else { st.output.clone() };
        let mut inputs = Vec::new();
        let mut actions = Vec::new();
        let mut caps = vec!["file.base"];
        let count = pending.len();
        for (i, p) in pending.into_iter().enumerate() {
            let base = llb::input_index(&mut inputs, &base_state);
            let input = if i == 0 { base } else { -1 };
            let secondary = llb::input_index(&mut inputs, &p.source);
            let mut action = p.action;
            action.owner = chown.as_deref().map(|o| llb::chown_opt(o, base));
            if !action.include_patterns.is_empty() || !action.exclude_patterns.is_empty() {
                caps.push("file.copy.includeexcludepatterns");
            }
            if !action.required_paths.is_empty() {
                caps.push("file.copy.requiredpaths");
            }
            if !action.mode_str.is_empty() {
                caps.push("file.copy.modestring");
            }
            actions.push((input, secondary, action, i + 1 == count));
        }
        // Chained actions read the previous action's result: index = inputs.len() + previous.
        let n_inputs = inputs.len() as i64;
        let file_actions: Vec<pb::FileAction> = actions
            .into_iter()
            .enumerate()
            .map(|(i, (input, secondary, action, last))| pb::FileAction {
                input: if i == 0 {
                    input
                } else {
                    n_inputs + i as i64 - 1
                },
                secondary_input: secondary,
                output: if last { 0 } else { -1 },
                action: Some(pb::file_action::Action::Copy(action)),
            })
            .collect();
        let op = llb::op(
            inputs,
            None,
            pb::op::Op::File(pb::FileOp {
                actions: file_actions,
            }),
        );
        let mut meta = OpMeta {
            ignore_cache: self.plan.opts.no_cache,
            ..OpMeta::named(pg_name.clone())
        };
        meta.caps.extend(caps);
        if link {
            let digest_hint = llb::digest_of(&prost::Message::encode_to_vec(&op));
            let pg_id = digest_hint.trim_start_matches("sha256:")[..25].to_string();
            meta.progress_group = Some(pb::ProgressGroup {
                id: pg_id.clone(),
                name: pg_name.clone(),
                weak: true,
            });
            let copied = self.graph.add(op, &meta);
            st.output = match st.output.clone() {
                None => Some(copied),
                Some(base) => {
                    st.cmd_index = st.cmd_index.saturating_sub(1);
                    let link_name = self.prefix(st, &format!("LINK {name}"));
                    let merge = pb::MergeOp {
                        inputs: vec![pb::MergeInput { input: 0 }, pb::MergeInput { input: 1 }],
                    };
                    let merge_meta = OpMeta {
                        ignore_cache: self.plan.opts.no_cache,
                        progress_group: Some(pb::ProgressGroup {
                            id: pg_id,
                            name: pg_name,
                            weak: false,
                        }),
                        ..OpMeta::named(link_name)
                    }
                    .cap("mergeop");
                    let op = llb::op(vec![base, copied], None, pb::op::Op::Merge(merge));
                    Some(self.graph.add(op, &merge_meta))
                }
            };
        } else {
            st.output = Some(self.graph.add(op, &meta));
        }
        self.commit(st, msg, true, true);
        Ok(())
    }
}

fn parse_chmod(chmod: Option<&str>) -> Result<(Option<i32>, Option<String>), Error> {
    let Some(c) = chmod else {
        return Ok((None, None));
    };
    let non_octal = || {
        Error::msg(format!(
            "invalid chmod parameter: '{c}'. it should be octal string and between 0 and 07777"
        ))
    };
    if c.chars().all(|ch| ch.is_ascii_digit()) {
        let v = u32::from_str_radix(c, 8).map_err(|_| non_octal())?;
        if v > 0o7777 {
            return Err(non_octal());
        }
        return Ok((Some(v as i32), None));
    }
    // Symbolic modes like `u+x,go-w` or `a=rX`.
    let valid = c.split(',').all(|clause| {
        let who_end = clause
            .find(|ch: char| !"ugoa".contains(ch))
            .unwrap_or(clause.len());
        let rest = &clause[who_end..];
        !rest.is_empty()
            && rest.starts_with(['+', '-', '='])
            && rest.chars().all(|ch| "+-=rwxXstugo".contains(ch))
    });
    if !valid {
        return Err(Error::msg(format!("invalid chmod parameter: '{c}'")));
    }
    Ok((None, Some(c.to_string())))
}

/// The LLB git source of an `ADD` URL, as BuildKit writes it: `git://host/path#ref[:subdir]` with
/// the URL the user gave in `git.fullurl`.
pub(crate) fn git_source(
    src: &str,
    keep_git_dir: bool,
) -> (String, std::collections::BTreeMap<String, String>) {
    let (remote, fragment) = src.split_once('#').unwrap_or((src, ""));
    let without_scheme = remote
        .split_once("://")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| remote.replacen(':', "/", 1).replacen("git@", "", 1));
    let mut identifier = format!("git://{without_scheme}");
    if !fragment.is_empty() {
        identifier.push('#');
        identifier.push_str(fragment);
    }
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("git.fullurl".to_string(), remote.to_string());
    if keep_git_dir {
        attrs.insert("git.keepgitdir".to_string(), "true".to_string());
    }
    (identifier, attrs)
}

pub(crate) fn is_git(src: &str) -> bool {
    src.starts_with("git@")
        || src.starts_with("git://")
        || ((src.starts_with("https://") || src.starts_with("http://"))
            && (src
                .split(['#', '?'])
                .next()
                .unwrap_or(src)
                .ends_with(".git")))
}

fn is_http(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && !is_git(src)
}

/// The file name an http source is saved as: the URL path's base name or `__unnamed__`.
pub(crate) fn url_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme.split(['?', '#']).next().unwrap_or("");
    let path = path.find('/').map_or("", |i| &path[i..]);
    let b = paths::base(path);
    if path.is_empty() || b == "." || b == "/" {
        "__unnamed__".to_string()
    } else {
        b
    }
}

fn contains_wildcards(name: &str) -> bool {
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => return true,
            '\\' => {
                chars.next();
            }
            _ => {}
        }
    }
    false
}
