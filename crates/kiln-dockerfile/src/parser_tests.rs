use super::*;

struct Case {
    name: &'static str,
    text: &'static str,
    /// (instruction, args, start line, end line)
    want: &'static [(&'static str, &'static [&'static str], usize, usize)],
}

#[test]
fn parser_splits_logical_lines_like_buildkit() {
    let cases = [
        Case {
            name: "continuations join and keep the start and end line",
            text: "FROM busybox\nRUN echo a \\\n  && echo b\n",
            want: &[
                ("FROM", &["busybox"], 1, 1),
                ("RUN", &["echo a   && echo b"], 2, 3),
            ],
        },
        Case {
            name: "comment lines inside continuations are dropped",
            text: "FROM busybox\nRUN apt-get update \\\n# a comment\n    && make\n",
            want: &[
                ("FROM", &["busybox"], 1, 1),
                ("RUN", &["apt-get update     && make"], 2, 4),
            ],
        },
        Case {
            name: "empty continuation lines are skipped",
            text: "FROM busybox\nRUN a \\\n\n  b\n",
            want: &[("FROM", &["busybox"], 1, 1), ("RUN", &["a   b"], 2, 4)],
        },
        Case {
            name: "escape directive switches to backtick",
            text: "# escape=`\nFROM busybox\nRUN dir c:\\ `\n  /b\n",
            want: &[
                ("FROM", &["busybox"], 2, 2),
                ("RUN", &["dir c:\\   /b"], 3, 4),
            ],
        },
        Case {
            name: "instruction names are case-insensitive and keep their spelling",
            text: "from busybox\nrun echo hi\n",
            want: &[("from", &["busybox"], 1, 1), ("run", &["echo hi"], 2, 2)],
        },
        Case {
            name: "json form is detected",
            text: "FROM busybox\nCMD [\"echo\", \"hi\"]\n",
            want: &[("FROM", &["busybox"], 1, 1), ("CMD", &["echo", "hi"], 2, 2)],
        },
        Case {
            name: "invalid json falls back to shell form",
            text: "FROM busybox\nCMD [\"echo\", hi]\n",
            want: &[
                ("FROM", &["busybox"], 1, 1),
                ("CMD", &["[\"echo\", hi]"], 2, 2),
            ],
        },
        Case {
            name: "env key value triples",
            text: "FROM busybox\nENV A=1 B=\"x y\"\nENV C legacy value\n",
            want: &[
                ("FROM", &["busybox"], 1, 1),
                ("ENV", &["A", "1", "=", "B", "\"x y\"", "="], 2, 2),
                ("ENV", &["C", "legacy value", ""], 3, 3),
            ],
        },
        Case {
            name: "crlf line endings are accepted",
            text: "FROM busybox\r\nRUN a \\\r\n b\r\n",
            want: &[("FROM", &["busybox"], 1, 1), ("RUN", &["a  b"], 2, 3)],
        },
        Case {
            name: "double escape at the end is not a continuation",
            text: "FROM busybox\nRUN echo \\\\\nRUN b\n",
            want: &[
                ("FROM", &["busybox"], 1, 1),
                ("RUN", &["echo \\\\"], 2, 2),
                ("RUN", &["b"], 3, 3),
            ],
        },
    ];
    for case in cases {
        let ast = parse_ast(case.text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let got: Vec<(String, Vec<String>, usize, usize)> = ast
            .nodes
            .iter()
            .map(|n| (n.value.clone(), n.args.clone(), n.start_line, n.end_line))
            .collect();
        let want: Vec<(String, Vec<String>, usize, usize)> = case
            .want
            .iter()
            .map(|(c, a, s, e)| {
                (
                    c.to_string(),
                    a.iter().map(|x| x.to_string()).collect(),
                    *s,
                    *e,
                )
            })
            .collect();
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn directives_are_read_only_at_the_top() {
    let ast =
        parse_ast("# syntax=docker/dockerfile:1\n# escape=`\nFROM busybox\n# escape=\\\n").unwrap();
    assert_eq!(ast.escape, '`');
    assert_eq!(ast.directives.len(), 2);
    assert_eq!(ast.directives[0].value, "docker/dockerfile:1");
    let ast = parse_ast("FROM busybox\n# escape=`\n").unwrap();
    assert_eq!(ast.escape, '\\');
    let ast = parse_ast("\n# escape=`\nFROM busybox\n").unwrap();
    assert_eq!(ast.escape, '\\', "an empty line ends the directive block");
}

#[test]
fn parser_errors_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "# escape=x\nFROM a\n",
            1,
            "invalid escape token 'x' does not match ` or \\",
        ),
        (
            "# syntax=a\n# syntax=b\nFROM a\n",
            2,
            "only one syntax parser directive can be used",
        ),
        ("FROM a\nRUN <<EOF\nhello\n", 2, "unterminated heredoc"),
        (
            "FROM a\nCMD [\"a\", 1]\n",
            2,
            "arrays must be comprised of strings only",
        ),
        ("FROM a\n\nENV A\n", 3, "ENV must have two arguments"),
        (
            "FROM a\nLABEL a=b c\n",
            2,
            "Syntax error - can't find = in \"c\"",
        ),
        ("\n# just a comment\n", 2, "file with no instructions"),
    ];
    for (text, line, msg) in cases {
        let e = parse_ast(text).unwrap_err();
        assert_eq!(e.line, *line, "{text:?}: {e}");
        assert!(e.message.contains(msg), "{text:?}: {e}");
    }
}

#[test]
fn heredocs_collect_bodies_and_flags() {
    let text = "FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<-\"ONE\" <<TWO /dest/\n\tone $X\n\tONE\ntwo\nTWO\nRUN 3<<X cat\nx\nX\n";
    let ast = parse_ast(text).unwrap();
    let run = &ast.nodes[1];
    assert_eq!((run.start_line, run.end_line), (2, 4));
    assert_eq!(run.heredocs[0].content, "echo hi\n");
    assert!(run.heredocs[0].expand);
    let copy = &ast.nodes[2];
    assert_eq!(copy.heredocs.len(), 2);
    assert_eq!(copy.heredocs[0].name, "ONE");
    assert!(copy.heredocs[0].chomp && !copy.heredocs[0].expand);
    assert_eq!(copy.heredocs[0].content, "\tone $X\n");
    assert_eq!(copy.heredocs[1].content, "two\n");
    assert_eq!(copy.args, vec!["<<-\"ONE\"", "<<TWO", "/dest/"]);
    assert_eq!((copy.start_line, copy.end_line), (5, 9));
    assert_eq!(ast.nodes[3].heredocs[0].fd, 3);
    assert_eq!(chomp_heredoc_content("\t\ta\n\tb\n"), "a\nb\n");
}

#[test]
fn builder_flags_are_split_from_arguments() {
    let (rest, flags) =
        extract_builder_flags("--mount=type=cache,target=/x --network=none make all", '\\');
    assert_eq!(
        flags,
        vec!["--mount=type=cache,target=/x", "--network=none"]
    );
    assert_eq!(rest, "make all");
    let (rest, flags) = extract_builder_flags("--from=\"a b\" -- --not-a-flag", '\\');
    assert_eq!(flags, vec!["--from=a b"]);
    assert_eq!(rest.trim(), "--not-a-flag");
}
