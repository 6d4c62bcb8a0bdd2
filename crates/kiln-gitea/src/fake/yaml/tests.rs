//! The emitter against yaml.v3's output and a YAML reader.

use super::*;

fn s(v: &str) -> Y {
    Y::Str(v.into())
}

#[test]
fn block_layout_matches_yaml_v3_indent_4() {
    let doc = Y::Map(vec![
        (s("name"), s("test")),
        (s("on"), s("push")),
        (
            s("jobs"),
            Y::Map(vec![(
                s("job1"),
                Y::Map(vec![
                    (s("name"), s("job1 (a, 1)")),
                    (s("runs-on"), s("linux")),
                    (
                        s("steps"),
                        Y::Seq(vec![
                            Y::Map(vec![
                                (s("uses"), s("actions/setup-go@v3")),
                                (
                                    s("with"),
                                    Y::Map(vec![(s("go-version"), s("${{ matrix.v }}"))]),
                                ),
                            ]),
                            Y::Map(vec![(s("run"), s("echo one\necho two\n"))]),
                        ]),
                    ),
                    (
                        s("strategy"),
                        Y::Map(vec![(
                            s("matrix"),
                            Y::Map(vec![(s("v"), Y::Seq(vec![Y::Num("1.17".into())]))]),
                        )]),
                    ),
                    (s("with"), Y::Map(vec![])),
                ]),
            )]),
        ),
    ]);
    let want = "\
name: test
\"on\": push
jobs:
    job1:
        name: job1 (a, 1)
        runs-on: linux
        steps:
            - uses: actions/setup-go@v3
              with:
                go-version: ${{ matrix.v }}
            - run: |
                echo one
                echo two
        strategy:
            matrix:
                v:
                    - 1.17
        with: {}
";
    assert_eq!(to_string(&doc), want);
    let back: serde_yaml_ng::Value = serde_yaml_ng::from_str(want).unwrap();
    assert_eq!(
        back["jobs"]["job1"]["steps"][1]["run"],
        "echo one\necho two\n"
    );
}

#[test]
fn strings_that_read_back_as_other_types_are_quoted() {
    let cases = [
        ("1.17", "\"1.17\""),
        ("10", "\"10\""),
        ("0x1F", "\"0x1F\""),
        ("true", "\"true\""),
        ("yes", "\"yes\""),
        ("null", "\"null\""),
        ("", "\"\""),
        ("1:30", "\"1:30\""),
        ("2024-01-02", "\"2024-01-02\""),
        ("*.rs", "'*.rs'"),
        ("a: b", "'a: b'"),
        ("it's", "it's"),
        (" lead", "' lead'"),
        ("tab\there", "\"tab\\there\""),
        ("ubuntu-latest", "ubuntu-latest"),
        ("${{ matrix.os }}", "${{ matrix.os }}"),
        ("- x", "'- x'"),
    ];
    for (input, want) in cases {
        let mut out = String::new();
        write_string(&mut out, input, 0, 4, false);
        assert_eq!(out, want, "{input:?}");
    }
}

#[test]
fn literal_block_hints() {
    let mut out = String::new();
    write_literal(&mut out, "a\nb", 0, 4);
    assert_eq!(out, "|-\n    a\n    b\n");
    let mut out = String::new();
    write_literal(&mut out, " a\n", 0, 2);
    assert_eq!(out, "|2\n   a\n");
    let mut out = String::new();
    write_string(&mut out, "a \nb", 0, 2, false);
    assert_eq!(out, "\"a \\nb\"");
}

#[test]
fn tricky_strings_read_back_unchanged() {
    let cases = [
        "plain",
        "",
        " leading and trailing ",
        "a: b # c",
        "#comment",
        "- dash",
        "quote ' and \" both",
        "back\\slash",
        "tab\tin",
        "multi\nline",
        "multi\nline\n",
        "two trailing\n\n",
        "\nleading break",
        "  indented\nsecond",
        "trailing space \nnext",
        "unicode é ✓",
        "${{ matrix.os }}",
        "on",
        "1e3",
        "0o17",
        "~",
        "key: [x]",
        "- [x]",
        "@at",
        "%percent",
        "`tick",
        "{brace}",
        "!bang",
        "&amp",
        "*star",
        "? q",
        "---",
        "x\r\ny",
    ];
    for case in cases {
        let doc = Y::Map(vec![
            (Y::Str(case.into()), Y::Str(case.into())),
            (
                Y::Str("nested".into()),
                Y::Seq(vec![Y::Map(vec![(
                    Y::Str("v".into()),
                    Y::Str(case.into()),
                )])]),
            ),
        ]);
        let text = to_string(&doc);
        let back: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{case:?}: {e}\n{text}"));
        let key = serde_yaml_ng::Value::String(case.into());
        assert_eq!(back[&key], case, "{case:?}\n{text}");
        assert_eq!(back["nested"][0]["v"], case, "{case:?}\n{text}");
    }
}

#[test]
fn floats_print_like_go() {
    for (f, want) in [
        (1.17, "1.17"),
        (1.0, "1"),
        (100000.0, "100000"),
        (1000000.0, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
    ] {
        assert_eq!(go_float(f), want, "{f}");
    }
}
