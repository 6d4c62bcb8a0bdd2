use super::*;

fn env() -> BTreeMap<String, String> {
    [
        ("A", "a"),
        ("EMPTY", ""),
        ("PATH_ISH", "/usr/local/bin:/usr/bin"),
        ("SP", "x y"),
        ("FILE", "archive.tar.gz"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn process_word_follows_buildkit_operators_and_quotes() {
    let cases: &[(&str, &str)] = &[
        ("$A", "a"),
        ("${A}", "a"),
        ("pre${A}post", "preapost"),
        ("$UNSET", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET-dflt}", "dflt"),
        ("${A:-dflt}", "a"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${A:?boom}", "a"),
        ("${FILE#*.}", "tar.gz"),
        ("${FILE##*.}", "gz"),
        ("${FILE%.*}", "archive.tar"),
        ("${FILE%%.*}", "archive"),
        ("${PATH_ISH/usr/opt}", "/opt/local/bin:/usr/bin"),
        ("${PATH_ISH//usr/opt}", "/opt/local/bin:/opt/bin"),
        ("'$A'", "$A"),
        ("\"$A\"", "a"),
        ("\"'$A'\"", "'a'"),
        ("\\$A", "$A"),
        ("a\\ b", "a b"),
        ("\"a\\\"b\"", "a\"b"),
        ("$", "$"),
        ("${A:-${UNSET:-nested}}", "a"),
        ("${UNSET:-${A}}", "a"),
        ("$1x", "x"),
        ("100%", "100%"),
        ("a<b", "a<b"),
    ];
    let lex = Lexer::new('\\');
    for (input, want) in cases {
        assert_eq!(
            lex.process_word(input, &env()).as_deref(),
            Ok(*want),
            "input {input}"
        );
    }
}

#[test]
fn backtick_escape_replaces_backslash() {
    let lex = Lexer::new('`');
    assert_eq!(
        lex.process_word("C:\\path `$A", &env()).unwrap(),
        "C:\\path $A"
    );
}

#[test]
fn expansion_errors_are_worded_like_buildkit() {
    let cases: &[(&str, &str)] = &[
        ("${UNSET:?}", "UNSET: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${UNSET?custom msg}", "UNSET: custom msg"),
        ("${A", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${A:#x}", "unsupported modifier (:#) in substitution"),
        ("${A^x}", "unsupported modifier (^) in substitution"),
        (
            "'open",
            "unexpected end of statement while looking for matching single-quote",
        ),
        (
            "\"open",
            "unexpected end of statement while looking for matching double-quote",
        ),
    ];
    let lex = Lexer::new('\\');
    for (input, want) in cases {
        let e = lex.process_word(input, &env()).unwrap_err();
        assert!(e.0.contains(want), "input {input}: got {e}");
        assert!(e.0.starts_with("failed to process"), "{e}");
    }
}

#[test]
fn process_words_splits_on_unquoted_whitespace_only() {
    let cases: &[(&str, &[&str])] = &[
        ("80 443", &["80", "443"]),
        ("$SP z", &["x", "y", "z"]),
        ("\"$SP\" z", &["x y", "z"]),
        ("'a b' c", &["a b", "c"]),
        ("a\\ b c", &["a b", "c"]),
        ("  ", &[]),
    ];
    let lex = Lexer::new('\\');
    for (input, want) in cases {
        let got = lex.process_words(input, &env()).unwrap();
        assert_eq!(
            got,
            want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "input {input}"
        );
    }
}

#[test]
fn skip_unset_env_keeps_unknown_references() {
    let lex = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    assert_eq!(
        lex.process_word("$A $B ${C} ${D:-x}", &env()).unwrap(),
        "a $B ${C} ${D:-x}"
    );
}

#[test]
fn raw_quotes_keep_quote_characters() {
    let lex = Lexer {
        raw_quotes: true,
        ..Lexer::new('\\')
    };
    assert_eq!(
        lex.process_word("echo \"$A\" '$A'", &env()).unwrap(),
        "echo \"a\" '$A'"
    );
}

#[test]
fn env_list_moves_replaced_keys_to_the_end() {
    let mut e = EnvList::new();
    e.set("A", "1");
    e.set("B", "2");
    e.set("A", "3");
    assert_eq!(e.to_vec(), vec!["B=2", "A=3"]);
}
