use super::*;
use crate::parser::parse;

fn first(text: &str) -> Instruction {
    let df = parse(&format!("FROM busybox\n{text}\n")).unwrap_or_else(|e| panic!("{text}: {e}"));
    df.stages[0].instructions[0].clone()
}

#[test]
fn unknown_instruction_names_the_line_and_suggests() {
    let e = parse("FROM busybox\n\nRUNN make\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert_eq!(
        e.to_string(),
        "dockerfile parse error on line 3: unknown instruction: RUNN (did you mean RUN?)"
    );
    let e = crate::parser::parse_named("build/Containerfile", "FROM a\nFROBNICATE\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "dockerfile parse error on line 2: unknown instruction: FROBNICATE"
    );
}

#[test]
fn instruction_errors_carry_buildkit_messages_and_lines() {
    let cases: &[(&str, usize, &str)] = &[
        ("RUN make\n", 1, "no build stage in current context"),
        (
            "FROM a b\n",
            1,
            "FROM requires either one or three arguments",
        ),
        ("FROM a AS 1x\n", 1, "invalid name for build stage: \"1x\""),
        (
            "FROM a\nCOPY onlyone\n",
            2,
            "COPY requires at least two arguments",
        ),
        (
            "FROM a\nCOPY --form=x a b\n",
            2,
            "unknown flag: --form (did you mean from?)",
        ),
        (
            "FROM a\nCOPY --link=maybe a b\n",
            2,
            "expecting boolean value for flag link, not: maybe",
        ),
        (
            "FROM a\nCOPY --from a b\n",
            2,
            "missing a value on flag: from",
        ),
        (
            "FROM a\nCOPY --from=x --from=y a b\n",
            2,
            "duplicate flag specified: from",
        ),
        (
            "FROM a\nCOPY a <<EOF\nEOF\n",
            2,
            "COPY cannot accept a heredoc as a destination",
        ),
        (
            "FROM a\nWORKDIR\n",
            2,
            "WORKDIR requires exactly one argument",
        ),
        (
            "FROM a\nSHELL /bin/bash -c\n",
            2,
            "SHELL requires the arguments to be in JSON form",
        ),
        (
            "FROM a\nHEALTHCHECK NONE x\n",
            2,
            "HEALTHCHECK NONE takes no arguments",
        ),
        (
            "FROM a\nHEALTHCHECK CMDX x\n",
            2,
            "Unknown type \"CMDX\" in HEALTHCHECK (try CMD)",
        ),
        (
            "FROM a\nHEALTHCHECK --interval=1us CMD x\n",
            2,
            "Interval \"interval\" cannot be less than 1ms",
        ),
        (
            "FROM a\nONBUILD ONBUILD RUN x\n",
            2,
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        (
            "FROM a\nONBUILD FROM x\n",
            2,
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM a\nRUN --network=bridge x\n",
            2,
            "unsupported network mode \"bridge\"",
        ),
        (
            "FROM a\nRUN --mount=type=nope,target=/x x\n",
            2,
            "unsupported mount type \"nope\"",
        ),
        ("FROM a\nARG =x\n", 2, "ARG names can not be blank"),
        ("FROM a\nENV --x=1 A=b\n", 2, "unknown flag: --x"),
    ];
    for (text, line, msg) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, *line, "{text:?}: {e}");
        assert!(e.message.contains(msg), "{text:?}: {e}");
    }
}

#[test]
fn instructions_keep_shell_and_exec_forms() {
    let Instruction::Run(run) = first("RUN echo $HOME") else {
        panic!()
    };
    assert_eq!(
        run.cmd,
        CommandLine {
            args: vec!["echo $HOME".into()],
            shell_form: true,
            files: vec![]
        }
    );
    let Instruction::Run(run) = first("RUN [\"echo\", \"$HOME\"]") else {
        panic!()
    };
    assert_eq!(run.cmd.args, vec!["echo", "$HOME"]);
    assert!(!run.cmd.shell_form);
    let Instruction::Entrypoint { cmd, .. } = first("ENTRYPOINT []") else {
        panic!()
    };
    assert!(cmd.args.is_empty() && !cmd.shell_form);
    let Instruction::Healthcheck { health, .. } =
        first("HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD curl -f http://x/")
    else {
        panic!()
    };
    assert_eq!(health.test, vec!["CMD-SHELL", "curl -f http://x/"]);
    assert_eq!(
        (health.interval, health.timeout, health.retries),
        (30_000_000_000, 90_000_000_000, 3)
    );
}

#[test]
fn copy_and_add_flags_are_typed() {
    let Instruction::Copy(c) =
        first("COPY --from=build --chown=app:app --chmod=0755 --link --exclude=*.md --exclude=tmp a b /dst/")
    else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link && !c.parents);
    assert_eq!(c.excludes, vec!["*.md", "tmp"]);
    assert_eq!(
        (c.srcs, c.dest),
        (vec!["a".to_string(), "b".to_string()], "/dst/".to_string())
    );
    let Instruction::Add(a) =
        first("ADD --checksum=sha256:abc --keep-git-dir=false --unpack https://x/y.tgz /")
    else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!((a.keep_git_dir, a.unpack), (Some(false), Some(true)));
}

#[test]
fn heredoc_sources_become_contents() {
    let Instruction::Copy(c) = first("COPY <<-EOF /etc/conf\n\tkey=$V\n\tEOF") else {
        panic!()
    };
    assert!(c.srcs.is_empty());
    assert_eq!(
        c.contents,
        vec![SourceContent {
            path: "EOF".into(),
            data: "key=$V\n".into(),
            expand: true
        }]
    );
    let Instruction::Run(r) = first("RUN <<EOF\necho hi\nEOF") else {
        panic!()
    };
    assert_eq!(
        r.cmd.files,
        vec![InlineFile {
            name: "EOF".into(),
            data: "echo hi\n".into(),
            chomp: false
        }]
    );
}

#[test]
fn stages_and_global_args_are_split() {
    let df = parse("ARG V=1\nARG B\nFROM alpine:${V} AS Build\nRUN x\nFROM --platform=$BUILDPLATFORM scratch\n").unwrap();
    assert_eq!(
        df.global_args,
        vec![
            ArgDecl {
                key: "V".into(),
                value: Some("1".into())
            },
            ArgDecl {
                key: "B".into(),
                value: None
            }
        ]
    );
    assert_eq!(df.stages.len(), 2);
    assert_eq!(df.stages[0].name.as_deref(), Some("build"));
    assert_eq!(df.stages[0].base, "alpine:${V}");
    assert_eq!(df.stages[0].line(), 3);
    assert_eq!(df.stages[1].platform.as_deref(), Some("$BUILDPLATFORM"));
}

#[test]
fn onbuild_keeps_the_trigger_expression() {
    let Instruction::Onbuild { expression, .. } = first("onbuild  COPY . /app") else {
        panic!()
    };
    assert_eq!(expression, "COPY . /app");
    assert!(matches!(
        parse_instruction_line(&expression).unwrap(),
        Instruction::Copy(_)
    ));
}

#[test]
fn go_durations_parse() {
    let cases: &[(&str, Option<i64>)] = &[
        ("30s", Some(30_000_000_000)),
        ("1m30s", Some(90_000_000_000)),
        ("1.5h", Some(5_400_000_000_000)),
        ("500ms", Some(500_000_000)),
        ("0", Some(0)),
        ("10", None),
        ("x", None),
    ];
    for (s, want) in cases {
        assert_eq!(parse_go_duration(s), *want, "{s}");
    }
}
