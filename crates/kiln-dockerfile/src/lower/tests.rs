use std::collections::HashMap;

use bollard_buildkit_proto::pb;
use prost::Message;

use super::*;
use crate::parser::parse;

fn busybox_config() -> ImageConfig {
    ImageConfig::from_json(
        br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin:/usr/bin","HOME=/root"],"Cmd":["sh"]},
            "rootfs":{"type":"layers","diff_ids":["sha256:aaaa"]},"history":[{"created_by":"base"}]}"#,
    )
    .unwrap()
}

fn configs_for(plan: &Plan) -> HashMap<String, ImageConfig> {
    plan.base_images()
        .into_iter()
        .map(|r| (r.reference, busybox_config()))
        .collect()
}

fn lower_text(text: &str, opts: &LowerOptions) -> Result<Lowered, Error> {
    let df = parse(text)?;
    let plan = plan(&df, opts)?;
    plan.lower(&configs_for(&plan))
}

fn ops(l: &Lowered) -> Vec<(String, pb::Op)> {
    l.definition
        .def
        .iter()
        .map(|b| (llb::digest_of(b), pb::Op::decode(b.as_slice()).unwrap()))
        .collect()
}

fn execs(l: &Lowered) -> Vec<pb::ExecOp> {
    ops(l)
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::Exec(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn file_actions(l: &Lowered) -> Vec<pb::file_action::Action> {
    ops(l)
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::File(f)) => Some(f.actions),
            _ => None,
        })
        .flatten()
        .filter_map(|a| a.action)
        .collect()
}

fn sources(l: &Lowered) -> Vec<pb::SourceOp> {
    ops(l)
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::Source(s)) => Some(s),
            _ => None,
        })
        .collect()
}

fn custom_name(l: &Lowered, digest: &str) -> String {
    l.definition.metadata[digest]
        .description
        .get("llb.customname")
        .cloned()
        .unwrap_or_default()
}

const MULTI: &str = "\
FROM golang:1.22 AS builder
WORKDIR /src
COPY . .
RUN go build -o /out/app

FROM alpine AS unused
RUN echo never

FROM busybox
COPY --from=builder /out/app /usr/bin/app
CMD [\"app\"]
";

#[test]
fn multi_stage_lowers_only_needed_stages() {
    let df = parse(MULTI).unwrap();
    let plan = plan(&df, &LowerOptions::default()).unwrap();
    let refs: Vec<String> = plan
        .base_images()
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert_eq!(
        refs,
        vec![
            "docker.io/library/golang:1.22",
            "docker.io/library/busybox:latest"
        ]
    );
    assert!(!plan.is_needed(1));
    let l = plan.lower(&configs_for(&plan)).unwrap();
    assert_eq!(l.stage_names, vec!["builder", "stage-2"]);
    let args: Vec<Vec<String>> = execs(&l)
        .into_iter()
        .map(|e| e.meta.unwrap().args)
        .collect();
    assert_eq!(
        args,
        vec![vec![
            "/bin/sh".to_string(),
            "-c".into(),
            "go build -o /out/app".into()
        ]]
    );
    // The last op is the terminal op naming the result.
    let (_, last) = ops(&l).pop().unwrap();
    assert!(last.op.is_none() && last.inputs.len() == 1);
}

#[test]
fn run_shell_and_exec_forms_produce_args_env_cwd_user() {
    let text = "FROM busybox\nARG V=1\nENV A=b\nWORKDIR /app\nUSER nobody\nRUN echo $A\nRUN [\"/bin/echo\", \"$A\"]\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nRUN make\n";
    let l = lower_text(text, &LowerOptions::default()).unwrap();
    let metas: Vec<pb::Meta> = execs(&l).into_iter().map(|e| e.meta.unwrap()).collect();
    assert_eq!(metas[0].args, vec!["/bin/sh", "-c", "echo $A"]);
    assert_eq!(metas[1].args, vec!["/bin/echo", "$A"]);
    assert_eq!(
        metas[2].args,
        vec!["/bin/bash", "-eo", "pipefail", "-c", "make"]
    );
    assert_eq!(
        metas[0].env,
        vec!["PATH=/bin:/usr/bin", "HOME=/root", "V=1", "A=b"]
    );
    assert_eq!(metas[0].cwd, "/app");
    assert_eq!(metas[0].user, "nobody");
    assert!(metas[0].remove_mount_stubs_recursive);
    let history: Vec<&str> = l
        .image_config
        .history
        .iter()
        .map(|h| h.created_by.as_str())
        .collect();
    assert!(
        history.contains(&"RUN |1 V=1 /bin/sh -c echo $A # buildkit"),
        "{history:?}"
    );
}

#[test]
fn run_on_scratch_gets_the_default_path_and_root_cwd() {
    let l = lower_text("FROM scratch\nRUN true\n", &LowerOptions::default()).unwrap();
    let e = &execs(&l)[0];
    let meta = e.meta.as_ref().unwrap();
    assert_eq!(meta.env, vec![format!("PATH={DEFAULT_PATH}")]);
    assert_eq!(meta.cwd, "/");
    assert_eq!(e.mounts[0].input, -1, "scratch root has no input");
    assert_eq!((e.mounts[0].dest.as_str(), e.mounts[0].output), ("/", 0));
}

#[test]
fn copy_from_stage_wires_stage_input() {
    let l = lower_text(MULTI, &LowerOptions::default()).unwrap();
    let all = ops(&l);
    let builder_run = all
        .iter()
        .find(|(_, op)| matches!(op.op, Some(pb::op::Op::Exec(_))))
        .unwrap()
        .0
        .clone();
    let copy = all
        .iter()
        .find(|(_, op)| match &op.op {
            Some(pb::op::Op::File(f)) => matches!(&f.actions[0].action, Some(pb::file_action::Action::Copy(c)) if c.src == "/out/app"),
            _ => false,
        })
        .unwrap();
    let pb::op::Op::File(f) = copy.1.op.clone().unwrap() else {
        panic!()
    };
    let action = &f.actions[0];
    assert_eq!(
        copy.1.inputs[action.secondary_input as usize].digest,
        builder_run
    );
    let Some(pb::file_action::Action::Copy(c)) = &action.action else {
        panic!()
    };
    assert_eq!(c.dest, "/usr/bin/app");
    assert!(
        c.follow_symlink
            && c.dir_copy_contents
            && c.create_dest_path
            && c.allow_wildcard
            && c.allow_empty_wildcard
    );
    assert_eq!(c.mode, -1);
    assert_eq!(
        custom_name(&l, &copy.0),
        "[stage-2 2/2] COPY --from=builder /out/app /usr/bin/app"
    );
}

#[test]
fn workdir_creates_mkdir_with_parents() {
    let l = lower_text(
        "FROM busybox\nUSER app\nWORKDIR /a/b\nWORKDIR c\n",
        &LowerOptions::default(),
    )
    .unwrap();
    let mkdirs: Vec<pb::FileActionMkDir> = file_actions(&l)
        .into_iter()
        .filter_map(|a| match a {
            pb::file_action::Action::Mkdir(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        mkdirs.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(),
        vec!["/a/b", "/a/b/c"]
    );
    assert!(mkdirs[0].make_parents);
    assert_eq!(mkdirs[0].mode, 0o755);
    let owner = mkdirs[0].owner.as_ref().unwrap().user.as_ref().unwrap();
    assert_eq!(
        owner.user,
        Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
            name: "app".into(),
            input: 0
        }))
    );
    assert_eq!(l.image_config.config.working_dir, "/a/b/c");
}

#[test]
fn lowering_twice_is_byte_identical() {
    let mut opts = LowerOptions::default();
    opts.build_args
        .insert("HTTP_PROXY".into(), "http://proxy:3128".into());
    opts.labels
        .insert("org.opencontainers.image.source".into(), "x".into());
    opts.excludes = vec!["*.md".into(), "target".into()];
    let a = lower_text(MULTI, &opts).unwrap();
    let b = lower_text(MULTI, &opts).unwrap();
    assert_eq!(a.definition.encode_to_vec(), b.definition.encode_to_vec());
    assert_eq!(a.image_config.to_json(), b.image_config.to_json());
}

#[test]
fn unknown_target_errors_listing_stages() {
    let df = parse(MULTI).unwrap();
    let opts = LowerOptions {
        target: Some("buidler".into()),
        ..LowerOptions::default()
    };
    let e = plan(&df, &opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile: target stage \"buidler\" could not be found (did you mean builder?); stages: builder, unused, stage-2"
    );
    let opts = LowerOptions {
        target: Some("unused".into()),
        ..LowerOptions::default()
    };
    let p = plan(&df, &opts).unwrap();
    assert_eq!(
        p.base_images()[0].reference,
        "docker.io/library/alpine:latest"
    );
}

#[test]
fn arg_before_from_substitutes_in_from() {
    let text = "ARG BASE=busybox\nARG TAG\nFROM ${BASE}:${TAG:-1.36} AS a\nFROM --platform=$BUILDPLATFORM $BASE\n";
    let df = parse(text).unwrap();
    let p = plan(
        &df,
        &LowerOptions {
            target: Some("a".into()),
            ..LowerOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        p.base_images()[0].reference,
        "docker.io/library/busybox:1.36"
    );
    let mut opts = LowerOptions::default();
    opts.build_args.insert("BASE".into(), "alpine".into());
    opts.build_platform = Platform::parse("linux/arm64").unwrap();
    let p = plan(&df, &opts).unwrap();
    assert_eq!(
        p.base_images(),
        vec![ImageRequest {
            reference: "docker.io/library/alpine:latest".into(),
            platform: Platform::parse("linux/arm64").unwrap()
        }]
    );
    let e = plan(
        &parse("ARG X\nFROM $X\n").unwrap(),
        &LowerOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: base name ($X) should not be blank"
    );
}

#[test]
fn image_config_carries_metadata_and_history_per_instruction() {
    let text = "\
FROM scratch
ENV A=1 B=\"two words\"
LABEL maintainer=me version=$A
EXPOSE 80 53/udp
USER 1000:1000
WORKDIR /srv
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/
SHELL [\"/bin/bash\", \"-c\"]
ENTRYPOINT [\"/app\"]
CMD serve
ONBUILD RUN echo child
";
    let mut opts = LowerOptions::default();
    opts.labels.insert("extra".into(), "yes".into());
    opts.source_date_epoch = Some(1_700_000_000);
    let l = lower_text(text, &opts).unwrap();
    let c = &l.image_config.config;
    assert_eq!(
        c.env,
        vec![
            format!("PATH={DEFAULT_PATH}"),
            "A=1".into(),
            "B=two words".into()
        ]
    );
    let labels = c.labels.as_ref().unwrap();
    assert_eq!(labels["version"], "1");
    assert_eq!(labels["extra"], "yes");
    assert_eq!(
        c.exposed_ports
            .as_ref()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["53/udp", "80/tcp"]
    );
    assert_eq!(c.user, "1000:1000");
    assert_eq!(c.working_dir, "/srv");
    assert!(c.volumes.as_ref().unwrap().contains_key("/data"));
    assert_eq!(c.stop_signal, "SIGINT");
    let hc = c.healthcheck.as_ref().unwrap();
    assert_eq!(
        (hc.test.clone(), hc.interval, hc.retries),
        (
            vec!["CMD-SHELL".to_string(), "curl -f http://localhost/".into()],
            30_000_000_000,
            3
        )
    );
    assert_eq!(c.shell, vec!["/bin/bash", "-c"]);
    assert_eq!(c.entrypoint.as_deref(), Some(&["/app".to_string()][..]));
    assert_eq!(
        c.cmd.as_deref(),
        Some(&["/bin/bash".to_string(), "-c".into(), "serve".into()][..])
    );
    assert_eq!(c.on_build, vec!["RUN echo child"]);
    let history: Vec<(&str, bool)> = l
        .image_config
        .history
        .iter()
        .map(|h| (h.created_by.as_str(), h.empty_layer))
        .collect();
    assert_eq!(
        history,
        vec![
            ("ENV A=1 B=two words", true),
            ("LABEL maintainer=me version=1", true),
            ("EXPOSE [53/udp 80/tcp]", true),
            ("USER 1000:1000", true),
            ("WORKDIR /srv", false),
            ("VOLUME [/data]", true),
            ("STOPSIGNAL SIGINT", true),
            ("HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}", true),
            ("SHELL [/bin/bash -c]", true),
            ("ENTRYPOINT [\"/app\"]", true),
            ("CMD [\"/bin/bash\" \"-c\" \"serve\"]", true),
        ]
    );
    assert!(l
        .image_config
        .history
        .iter()
        .all(|h| h.comment == "buildkit.dockerfile.v0"));
    assert_eq!(
        l.image_config.history[0].created.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        (
            l.image_config.os.as_str(),
            l.image_config.architecture.as_str()
        ),
        ("linux", "amd64")
    );
}

#[test]
fn context_source_carries_excludes_followpaths_and_session() {
    let opts = LowerOptions {
        excludes: vec!["*.md".into()],
        session_id: Some("sess".into()),
        ..LowerOptions::default()
    };
    let l = lower_text(
        "FROM busybox\nCOPY src/ /app/\nADD go.mod go.sum /app/\n",
        &opts,
    )
    .unwrap();
    let local = sources(&l)
        .into_iter()
        .find(|s| s.identifier == "local://context")
        .unwrap();
    assert_eq!(local.attrs["local.sharedkeyhint"], "context");
    assert_eq!(local.attrs["local.excludepatterns"], "[\"*.md\"]");
    assert_eq!(
        local.attrs["local.followpaths"],
        "[\"go.mod\",\"go.sum\",\"src\"]"
    );
    assert_eq!(local.attrs["local.session"], "sess");
    assert_eq!(
        l.context_paths,
        Some(vec!["go.mod".into(), "go.sum".into(), "src".into()])
    );
    let copies: Vec<pb::FileActionCopy> = file_actions(&l)
        .into_iter()
        .filter_map(|a| match a {
            pb::file_action::Action::Copy(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(copies[0].src, "/src");
    assert_eq!(copies[0].dest, "/app/");
    assert!(!copies[0].attempt_unpack_docker_compatibility);
    assert!(
        copies[1].attempt_unpack_docker_compatibility,
        "ADD unpacks local archives"
    );
    let l = lower_text("FROM busybox\nCOPY . /app\n", &LowerOptions::default()).unwrap();
    let local = sources(&l)
        .into_iter()
        .find(|s| s.identifier == "local://context")
        .unwrap();
    assert!(
        !local.attrs.contains_key("local.followpaths"),
        "copying . needs the whole context"
    );
}

#[test]
fn image_sources_are_normalized_and_platformed() {
    let opts = LowerOptions {
        target_platform: Platform::parse("linux/arm64").unwrap(),
        ..LowerOptions::default()
    };
    let l = lower_text("FROM busybox\nRUN true\n", &opts).unwrap();
    let (digest, op) = ops(&l)
        .into_iter()
        .find(|(_, op)| matches!(op.op, Some(pb::op::Op::Source(_))))
        .unwrap();
    let Some(pb::op::Op::Source(s)) = op.op else {
        panic!()
    };
    assert_eq!(
        s.identifier,
        "docker-image://docker.io/library/busybox:latest"
    );
    assert_eq!(op.platform.unwrap().architecture, "arm64");
    assert_eq!(
        custom_name(&l, &digest),
        "[1/2] FROM docker.io/library/busybox:latest"
    );
    assert_eq!(l.image_config.architecture, "arm64");
}

#[test]
fn run_mounts_lower_to_exec_mounts() {
    let text = "FROM busybox AS deps\nRUN true\nFROM busybox\nRUN --mount=type=cache,target=/root/.cache,sharing=locked \
--mount=type=bind,from=deps,source=/x,target=/deps \
--mount=type=secret,id=tok,env=TOKEN \
--mount=type=tmpfs,target=/tmp,size=1m \
--mount=type=ssh --network=none make\n";
    let l = lower_text(text, &LowerOptions::default()).unwrap();
    let e = execs(&l).pop().unwrap();
    let dests: Vec<(&str, i32, i64)> = e
        .mounts
        .iter()
        .map(|m| (m.dest.as_str(), m.mount_type, m.output))
        .collect();
    assert_eq!(
        dests,
        vec![
            ("/", pb::MountType::Bind as i32, 0),
            ("/deps", pb::MountType::Bind as i32, -1),
            ("/root/.cache", pb::MountType::Cache as i32, -1),
            ("/tmp", pb::MountType::Tmpfs as i32, -1),
            ("/run/buildkit/ssh_agent.0", pb::MountType::Ssh as i32, 0),
        ]
    );
    let cache = e.mounts[2].cache_opt.as_ref().unwrap();
    assert_eq!(
        (cache.id.as_str(), cache.sharing),
        ("//root/.cache", pb::CacheSharingOpt::Locked as i32)
    );
    assert_eq!(e.mounts[1].selector, "/x");
    assert!(e.mounts[1].readonly);
    assert_eq!(e.mounts[3].tmpfs_opt.unwrap().size, 1024 * 1024);
    assert_eq!(
        e.secretenv,
        vec![pb::SecretEnv {
            id: "tok".into(),
            name: "TOKEN".into(),
            optional: true
        }]
    );
    assert_eq!(e.network, pb::NetMode::None as i32);
    assert!(e
        .meta
        .unwrap()
        .env
        .contains(&"SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".to_string()));
}

#[test]
fn heredocs_lower_to_inline_files() {
    let text = "FROM busybox\nARG NAME=world\nCOPY <<EOF /greeting\nhello $NAME\nEOF\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\nRUN <<EOF\necho plain\nEOF\n";
    let l = lower_text(text, &LowerOptions::default()).unwrap();
    let files: Vec<pb::FileActionMkFile> = file_actions(&l)
        .into_iter()
        .filter_map(|a| match a {
            pb::file_action::Action::Mkfile(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(files[0].data, b"hello world\n");
    assert_eq!((files[0].path.as_str(), files[0].mode), ("/EOF", 0o644));
    assert_eq!((files[1].path.as_str(), files[1].mode), ("/EOF", 0o755));
    let metas: Vec<pb::Meta> = execs(&l).into_iter().map(|e| e.meta.unwrap()).collect();
    assert_eq!(metas[0].args, vec!["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(metas[1].args, vec!["/bin/sh", "-c", "echo plain\n"]);
}

#[test]
fn copy_link_merges_onto_the_stage() {
    let l = lower_text("FROM busybox\nCOPY --link a /a\n", &LowerOptions::default()).unwrap();
    let all = ops(&l);
    let (merge_digest, merge) = all
        .iter()
        .find(|(_, op)| matches!(op.op, Some(pb::op::Op::Merge(_))))
        .unwrap();
    assert_eq!(merge.inputs.len(), 2);
    assert!(merge.platform.is_none());
    assert_eq!(custom_name(&l, merge_digest), "[2/2] LINK COPY --link a /a");
    let copy = all
        .iter()
        .find(|(d, _)| *d == merge.inputs[1].digest)
        .unwrap();
    let Some(pb::op::Op::File(f)) = &copy.1.op else {
        panic!()
    };
    assert_eq!(f.actions[0].input, -1, "the copy lands on scratch");
}

#[test]
fn add_url_becomes_an_http_source() {
    let text = "FROM busybox\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/files/tool.tar.gz?x=1 /opt/\n";
    let l = lower_text(text, &LowerOptions::default()).unwrap();
    let http = sources(&l)
        .into_iter()
        .find(|s| s.identifier.starts_with("https://"))
        .unwrap();
    assert_eq!(http.attrs["http.filename"], "tool.tar.gz");
    assert!(http.attrs["http.checksum"].starts_with("sha256:2445"));
    let copy = file_actions(&l).into_iter().find_map(|a| match a {
        pb::file_action::Action::Copy(c) => Some(c),
        _ => None,
    });
    let copy = copy.unwrap();
    assert_eq!(
        (copy.src.as_str(), copy.dest.as_str()),
        ("/tool.tar.gz", "/opt/")
    );
    assert!(
        !copy.attempt_unpack_docker_compatibility,
        "remote archives are not unpacked"
    );
    let e = lower_text(
        "FROM busybox\nCOPY https://x/y /\n",
        &LowerOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: source can't be a URL for COPY"
    );
}

#[test]
fn onbuild_triggers_of_the_base_image_run_first() {
    let df = parse("FROM parent\nRUN own\n").unwrap();
    let p = plan(&df, &LowerOptions::default()).unwrap();
    let mut cfg = busybox_config();
    cfg.config.on_build = vec!["RUN echo triggered".into()];
    let configs: HashMap<String, ImageConfig> =
        [("docker.io/library/parent:latest".to_string(), cfg)].into();
    let l = p.lower(&configs).unwrap();
    let args: Vec<String> = execs(&l)
        .into_iter()
        .map(|e| e.meta.unwrap().args[2].clone())
        .collect();
    assert_eq!(args, vec!["echo triggered", "own"]);
    assert!(
        l.image_config.config.on_build.is_empty(),
        "triggers do not carry over"
    );
}

#[test]
fn lowering_errors_name_the_line() {
    let cases: &[(&str, &str)] = &[
        ("FROM busybox AS first\nCOPY --from=later /a /b\nFROM busybox AS later\nCOPY --from=first /x /y\n", "Dockerfile:1: circular dependency detected on stage: first"),
        ("FROM busybox AS first\nCOPY --from=later /a /b\nFROM busybox AS later\nFROM first\n", "Dockerfile:2: cannot copy from stage \"later\", it needs to be defined before current stage \"first\""),
        ("FROM busybox\nCOPY --from=$X /a /b\n", "Dockerfile:2: variable expansion is not supported for --from"),
        ("FROM busybox\nCOPY --from=7 /a /b\n", "Dockerfile:2: invalid stage index 7"),
        ("FROM busybox\nWORKDIR /x\nRUN --mount=type=cache,target=. x\n", ""),
        ("FROM busybox\nRUN --mount=type=bind,target=/ x\n", "Dockerfile:2: invalid mount target \"/\""),
        ("FROM busybox\nSTOPSIGNAL SIGNOPE\n", "Dockerfile:2: Invalid signal: SIGNOPE"),
        ("FROM busybox\nEXPOSE 80/bogus\n", "Dockerfile:2: invalid port: \"80/bogus\": invalid proto: bogus"),
        ("FROM busybox\nENV A=${B:?required}\n", "Dockerfile:2: failed to process \"${B:?required}\": B: required"),
        ("FROM busybox\nCOPY --chmod=999 a /b\n", "Dockerfile:2: invalid chmod parameter: '999'"),
    ];
    for (text, want) in cases {
        match lower_text(text, &LowerOptions::default()) {
            Ok(_) if want.is_empty() => {}
            Ok(_) => panic!("{text:?} lowered"),
            Err(e) => assert!(
                !want.is_empty() && e.to_string().starts_with(want),
                "{text:?}: {e}"
            ),
        }
    }
}

#[test]
fn missing_base_config_is_reported() {
    let df = parse("FROM busybox\nRUN x\n").unwrap();
    let p = plan(&df, &LowerOptions::default()).unwrap();
    let e = p.lower(&HashMap::new()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Dockerfile:1: missing image config for docker.io/library/busybox:latest"),
        "{e}"
    );
}

#[test]
fn source_map_points_ops_at_their_dockerfile_lines() {
    let l = lower_text(
        "FROM busybox\n\nRUN echo one \\\n  two\nCOPY a /a\n",
        &LowerOptions::default(),
    )
    .unwrap();
    let source = l.definition.source.clone().expect("source map");
    assert_eq!(source.infos[0].filename, "Dockerfile");
    let lines_of = |want: &dyn Fn(&pb::Op) -> bool| -> (i32, i32) {
        let (digest, _) = ops(&l).into_iter().find(|(_, op)| want(op)).expect("op");
        let loc = &source.locations[&digest].locations[0].ranges[0];
        (loc.start.unwrap().line, loc.end.unwrap().line)
    };
    assert_eq!(
        lines_of(&|op| matches!(op.op, Some(pb::op::Op::Exec(_)))),
        (3, 4)
    );
    assert_eq!(
        lines_of(&|op| matches!(op.op, Some(pb::op::Op::File(_)))),
        (5, 5)
    );
    assert_eq!(
        lines_of(&|op| matches!(op.op, Some(pb::op::Op::Source(_)))),
        (1, 1)
    );
}

fn with_named(pairs: &[(&str, &str)]) -> LowerOptions {
    let mut opts = LowerOptions::default();
    for (name, value) in pairs {
        opts.named_contexts
            .insert(name.to_string(), NamedContext::parse(name, value).unwrap());
    }
    opts
}

#[test]
fn named_contexts_replace_bases_stages_and_copy_sources() {
    let text = "\
FROM alpine AS base
RUN echo base
FROM builder-image:1 AS builder
RUN make
FROM base
COPY --from=builder /out /out
COPY --from=deps /lib /lib
RUN --mount=from=tools,target=/t /t/run
";
    let mut opts = with_named(&[
        ("alpine", "docker-image://reg.example:5000/alpine:3"),
        ("builder", "local:prebuilt"),
        ("deps", "https://example.com/deps.git#v1"),
        ("tools", "docker-image://scratch"),
    ]);
    opts.named_excludes
        .insert("prebuilt".into(), vec!["*.tmp".into()]);
    opts.session_id = Some("sess".into());
    let df = parse(text).unwrap();
    let p = plan(&df, &opts).unwrap();
    let images: Vec<String> = p.base_images().into_iter().map(|r| r.reference).collect();
    assert_eq!(
        images,
        ["reg.example:5000/alpine:3"],
        "builder-image is never needed"
    );
    let l = p.lower(&configs_for(&p)).unwrap();
    let ids: Vec<String> = sources(&l).iter().map(|s| s.identifier.clone()).collect();
    assert!(
        ids.contains(&"docker-image://reg.example:5000/alpine:3".to_string()),
        "{ids:?}"
    );
    assert!(ids.contains(&"local://prebuilt".to_string()), "{ids:?}");
    assert!(
        ids.contains(&"git://example.com/deps.git#v1".to_string()),
        "{ids:?}"
    );
    assert!(!ids.iter().any(|i| i.contains("builder-image")), "{ids:?}");
    let local = sources(&l)
        .into_iter()
        .find(|s| s.identifier == "local://prebuilt")
        .unwrap();
    assert_eq!(local.attrs["local.excludepatterns"], r#"["*.tmp"]"#);
    assert_eq!(local.attrs["local.session"], "sess");
    let runs: Vec<String> = execs(&l)
        .iter()
        .map(|e| e.meta.as_ref().unwrap().args.join(" "))
        .collect();
    assert!(runs.iter().any(|r| r.ends_with("echo base")), "{runs:?}");
    assert!(
        !runs.iter().any(|r| r.contains("make")),
        "the replaced stage does not run: {runs:?}"
    );
}

#[test]
fn named_context_names_match_in_short_form_and_bad_values_fail() {
    let opts = with_named(&[("busybox", "docker-image://mirror.local/busybox:1")]);
    let l = lower_text("FROM docker.io/library/busybox:latest\nRUN true\n", &opts).unwrap();
    assert!(sources(&l)
        .iter()
        .any(|s| s.identifier == "docker-image://mirror.local/busybox:1"));
    let err = NamedContext::parse("x", "input:foo").unwrap_err();
    assert!(err.message.contains("not supported"), "{}", err.message);
}

#[test]
fn steps_of_a_multi_platform_build_name_their_platform() {
    let text = "\
FROM --platform=$BUILDPLATFORM busybox AS build
ARG TARGETARCH
RUN echo $TARGETARCH > /arch

FROM busybox
COPY --from=build /arch /arch
";
    let opts = LowerOptions {
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Platform::parse("linux/arm64").unwrap(),
        multi_platform: true,
        ..LowerOptions::default()
    };
    let l = lower_text(text, &opts).unwrap();
    let mut names: Vec<String> = ops(&l)
        .iter()
        .map(|(d, _)| custom_name(&l, d))
        .filter(|n| n.starts_with('['))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "[linux/amd64 build 1/2] FROM docker.io/library/busybox:latest",
            "[linux/amd64->arm64 build 2/2] RUN echo arm64 > /arch",
            "[linux/arm64 stage-1 1/2] FROM docker.io/library/busybox:latest",
            "[linux/arm64 stage-1 2/2] COPY --from=build /arch /arch",
        ],
        "{names:?}"
    );
    // One platform: no prefix, as before.
    let single = lower_text(
        text,
        &LowerOptions {
            multi_platform: false,
            ..opts
        },
    )
    .unwrap();
    assert!(ops(&single)
        .iter()
        .map(|(d, _)| custom_name(&single, d))
        .any(|n| n == "[build 2/2] RUN echo arm64 > /arch"));
}

#[test]
fn one_image_on_two_platforms_gets_each_platforms_config() {
    let text = "\
FROM --platform=$BUILDPLATFORM busybox AS build
RUN echo $FLAVOUR > /flavour

FROM busybox
COPY --from=build /flavour /flavour
";
    let opts = LowerOptions {
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Platform::parse("linux/arm64").unwrap(),
        ..LowerOptions::default()
    };
    let df = parse(text).unwrap();
    let plan = plan(&df, &opts).unwrap();
    let configs: HashMap<ImageRequest, ImageConfig> = plan
        .base_images()
        .into_iter()
        .map(|r| {
            let arch = r.platform.architecture.clone();
            let json = format!(
                r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["FLAVOUR={arch}"]}},
                    "rootfs":{{"type":"layers","diff_ids":["sha256:aaaa"]}},"history":[{{"created_by":"base"}}]}}"#
            );
            (r, ImageConfig::from_json(json.as_bytes()).unwrap())
        })
        .collect();
    assert_eq!(configs.len(), 2);
    let l = plan.lower_resolved(&configs).unwrap();
    assert_eq!(l.image_config.architecture, "arm64");
    assert!(l
        .image_config
        .config
        .env
        .contains(&"FLAVOUR=arm64".to_string()));
    let env = execs(&l)[0].meta.clone().unwrap().env;
    assert!(env.contains(&"FLAVOUR=amd64".to_string()), "{env:?}");
}

#[test]
fn every_platform_reads_the_same_context_paths() {
    let text = "\
FROM --platform=$BUILDPLATFORM busybox AS build
ARG TARGETARCH
RUN echo $TARGETARCH > /arch
FROM busybox
COPY --from=build /arch /arch
COPY app.txt /app.txt
";
    let attrs_for = |target: &str| {
        let opts = LowerOptions {
            build_platform: Platform::parse("linux/amd64").unwrap(),
            target_platform: Platform::parse(target).unwrap(),
            multi_platform: true,
            ..LowerOptions::default()
        };
        let l = lower_text(text, &opts).unwrap();
        sources(&l)
            .into_iter()
            .find(|s| s.identifier == "local://context")
            .unwrap()
            .attrs
    };
    let amd = attrs_for("linux/amd64");
    assert_eq!(amd, attrs_for("linux/arm64"));
    assert_eq!(amd["local.followpaths"], r#"["app.txt"]"#);
}
