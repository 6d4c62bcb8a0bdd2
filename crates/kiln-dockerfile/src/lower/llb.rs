//! Building LLB ops with BuildKit's marshalling conventions: ops are content-addressed
//! (`sha256:` of the protobuf bytes), listed once each in dependency order, and closed by a
//! terminal op that only names the result.

use std::collections::{BTreeMap, BTreeSet};

use bollard_buildkit_proto::pb;
use prost::Message;
use sha2::{Digest, Sha256};

/// The result of an op, or `None` for `scratch` (an empty filesystem, no op at all).
pub(crate) type Output = Option<pb::Input>;

/// `pb.Empty` / `pb.SkipOutput`.
pub(crate) const EMPTY: i64 = -1;

pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// All ops created while lowering, keyed by digest.
#[derive(Default)]
pub(crate) struct Graph {
    ops: BTreeMap<String, (Vec<u8>, Vec<String>)>,
    metadata: BTreeMap<String, pb::OpMetadata>,
    /// Dockerfile lines (first, last) of the instruction being lowered; ops added meanwhile
    /// are mapped to them in the definition's source map, so errors can name `Dockerfile:N`.
    pub location: Option<(usize, usize)>,
    locations: BTreeMap<String, (usize, usize)>,
}

/// What the progress stream shows for an op, plus capability flags.
#[derive(Default, Clone)]
pub(crate) struct OpMeta {
    pub custom_name: Option<String>,
    pub command: Option<String>,
    pub caps: BTreeSet<&'static str>,
    pub ignore_cache: bool,
    pub progress_group: Option<pb::ProgressGroup>,
}

impl OpMeta {
    pub(crate) fn named(name: impl Into<String>) -> Self {
        OpMeta {
            custom_name: Some(name.into()),
            ..OpMeta::default()
        }
    }

    pub(crate) fn cap(mut self, cap: &'static str) -> Self {
        self.caps.insert(cap);
        self
    }

    fn to_pb(&self) -> pb::OpMetadata {
        let mut description = BTreeMap::new();
        if let Some(n) = &self.custom_name {
            description.insert("llb.customname".to_string(), n.clone());
        }
        if let Some(c) = &self.command {
            description.insert("com.docker.dockerfile.v1.command".to_string(), c.clone());
        }
        pb::OpMetadata {
            ignore_cache: self.ignore_cache,
            description,
            export_cache: None,
            caps: self.caps.iter().map(|c| (c.to_string(), true)).collect(),
            progress_group: self.progress_group.clone(),
        }
    }
}

impl Graph {
    /// Adds an op (idempotently) and returns its output 0.
    pub(crate) fn add(&mut self, op: pb::Op, meta: &OpMeta) -> pb::Input {
        let bytes = op.encode_to_vec();
        let digest = digest_of(&bytes);
        let inputs = op.inputs.iter().map(|i| i.digest.clone()).collect();
        self.ops.entry(digest.clone()).or_insert((bytes, inputs));
        if let Some(lines) = self.location {
            self.locations.entry(digest.clone()).or_insert(lines);
        }
        let new = meta.to_pb();
        match self.metadata.get_mut(&digest) {
            Some(existing) => {
                existing.ignore_cache |= new.ignore_cache;
                existing.description.extend(new.description);
                existing.caps.extend(new.caps);
                if new.progress_group.is_some() {
                    existing.progress_group = new.progress_group;
                }
            }
            None => {
                self.metadata.insert(digest.clone(), new);
            }
        }
        pb::Input { digest, index: 0 }
    }

    /// The definition whose result is `target`: reachable ops in depth-first input order, then the
    /// terminal op. Scratch yields an empty definition, as BuildKit's `Marshal` does.
    pub(crate) fn definition(&self, target: &Output, filename: &str) -> pb::Definition {
        let Some(target) = target else {
            return pb::Definition::default();
        };
        let mut def = pb::Definition::default();
        let mut seen = BTreeSet::new();
        // Iterative post-order walk so deep graphs cannot overflow the stack.
        let mut stack: Vec<(String, usize)> = vec![(target.digest.clone(), 0)];
        while let Some((digest, next_input)) = stack.pop() {
            let Some((bytes, inputs)) = self.ops.get(&digest) else {
                continue;
            };
            if seen.contains(&digest) {
                continue;
            }
            if let Some(input) = inputs.get(next_input) {
                stack.push((digest.clone(), next_input + 1));
                if !seen.contains(input) {
                    stack.push((input.clone(), 0));
                }
                continue;
            }
            seen.insert(digest.clone());
            def.def.push(bytes.clone());
            if let Some(md) = self.metadata.get(&digest) {
                def.metadata.insert(digest.clone(), md.clone());
            }
        }
        let mut source = pb::Source {
            infos: vec![pb::SourceInfo {
                filename: filename.to_string(),
                language: "Dockerfile".to_string(),
                ..pb::SourceInfo::default()
            }],
            ..pb::Source::default()
        };
        for digest in &seen {
            if let Some(&(first, last)) = self.locations.get(digest) {
                let pos = |line: usize| pb::Position {
                    line: i32::try_from(line).unwrap_or(i32::MAX),
                    character: 0,
                };
                source.locations.insert(
                    digest.clone(),
                    pb::Locations {
                        locations: vec![pb::Location {
                            source_index: 0,
                            ranges: vec![pb::Range {
                                start: Some(pos(first)),
                                end: Some(pos(last)),
                            }],
                        }],
                    },
                );
            }
        }
        if !source.locations.is_empty() {
            def.source = Some(source);
        }
        let terminal = pb::Op {
            inputs: vec![target.clone()],
            ..pb::Op::default()
        };
        let bytes = terminal.encode_to_vec();
        let digest = digest_of(&bytes);
        def.def.push(bytes);
        let mut caps: BTreeMap<String, bool> = [
            ("constraints".to_string(), true),
            ("platform".to_string(), true),
        ]
        .into_iter()
        .collect();
        if def.metadata.values().any(|m| m.ignore_cache) {
            caps.insert("meta.ignorecache".into(), true);
        }
        if def.metadata.values().any(|m| !m.description.is_empty()) {
            caps.insert("meta.description".into(), true);
        }
        def.metadata.insert(
            digest,
            pb::OpMetadata {
                caps,
                ..pb::OpMetadata::default()
            },
        );
        def
    }
}

/// An op skeleton with BuildKit's constraints: an (empty) worker constraint list and, for
/// platform-specific ops, the platform.
pub(crate) fn op(
    inputs: Vec<pb::Input>,
    platform: Option<pb::Platform>,
    body: pb::op::Op,
) -> pb::Op {
    pb::Op {
        inputs,
        platform,
        constraints: Some(pb::WorkerConstraints::default()),
        op: Some(body),
    }
}

/// Index of `output` among `inputs`, adding it when new (BuildKit dedups equal inputs).
pub(crate) fn input_index(inputs: &mut Vec<pb::Input>, output: &Output) -> i64 {
    let Some(out) = output else { return EMPTY };
    if let Some(i) = inputs.iter().position(|i| i == out) {
        return i as i64;
    }
    inputs.push(out.clone());
    (inputs.len() - 1) as i64
}

/// `llb.WithUser("user:group")`: numeric ids by id, names resolved inside `base`.
pub(crate) fn chown_opt(spec: &str, base: i64) -> pb::ChownOpt {
    let user_opt = |v: &str| {
        let id = if v == "root" {
            Some(0)
        } else {
            v.parse::<i32>().ok().and_then(|n| u32::try_from(n).ok())
        };
        pb::UserOpt {
            user: Some(match id {
                Some(id) => pb::user_opt::User::ById(id),
                None => pb::user_opt::User::ByName(pb::NamedUserOpt {
                    name: v.to_string(),
                    input: base,
                }),
            }),
        }
    };
    let mut parts = spec.splitn(2, ':');
    let user = parts.next().map(user_opt);
    let group = parts.next().map(user_opt);
    pb::ChownOpt { user, group }
}
