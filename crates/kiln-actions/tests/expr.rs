//! Table-driven tests for the expression language. Each table collects all failures before
//! panicking so one run shows every broken case.

use kiln_actions::expr::{
    evaluate, evaluate_condition, format_number, interpolate, interpolate_value, is_truthy, parse,
    to_display_string, Contexts, ExprError, Status,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

static CASES: AtomicUsize = AtomicUsize::new(0);

fn ctx() -> Contexts {
    let mut c = Contexts::default();
    c.set(
        "github",
        json!({
            "event_name": "push",
            "ref": "refs/heads/main",
            "sha": "abc123",
            "repository": "owner/repo",
            "run_number": 7,
            "Mixed-Case": "mc",
            "event": {
                "commits": [
                    {"message": "first", "author": {"name": "A"}},
                    {"message": "second", "author": {"name": "B"}}
                ],
                "pull_request": {
                    "labels": [{"name": "bug"}, {"name": "ci"}],
                    "number": 42,
                    "draft": false
                },
                "head_commit": {"message": "Hello"}
            }
        }),
    );
    c.set(
        "env",
        json!({"FOO": "bar", "EMPTY": "", "NUM": "42", "TRUE_STR": "true"}),
    );
    c.set(
        "steps",
        json!({
            "my-step": {"outputs": {"x": "1", "result": "ok"}, "conclusion": "success", "outcome": "success"},
            "build_2": {"outputs": {}, "conclusion": "failure"}
        }),
    );
    c.set(
        "needs",
        json!({
            "a": {"result": "success", "outputs": {"v": "1"}},
            "b": {"result": "failure", "outputs": {"v": "2"}}
        }),
    );
    c.set("vars", json!({"list": "[1,2]"}));
    c.set("inputs", json!({"flag": true, "count": 3, "name": "x"}));
    c.set("secrets", json!({"TOKEN": "s3cr3t"}));
    c.set("runner", json!({"os": "Linux", "arch": "X64"}));
    c.set("strategy", json!({"fail-fast": true, "job-index": 0}));
    c.set("job", json!({"status": "success"}));
    c
}

fn check_with(c: &Contexts, cases: &[(&str, Value)]) {
    let mut failures = Vec::new();
    for (expr, want) in cases {
        CASES.fetch_add(1, Ordering::Relaxed);
        match evaluate(expr, c) {
            Ok(got) if &got == want => {}
            Ok(got) => failures.push(format!("{expr:?}: want {want}, got {got}")),
            Err(e) => failures.push(format!("{expr:?}: want {want}, got error {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn check(cases: &[(&str, Value)]) {
    check_with(&ctx(), cases);
}

/// (expression, message fragment, 1-based position)
fn check_errors_with(c: &Contexts, cases: &[(&str, &str, usize)]) {
    let mut failures = Vec::new();
    for (expr, fragment, pos) in cases {
        CASES.fetch_add(1, Ordering::Relaxed);
        match evaluate(expr, c) {
            Ok(v) => failures.push(format!("{expr:?}: want error {fragment:?}, got {v}")),
            Err(e) => {
                let text = e.to_string();
                let located = format!("Located at position {pos} within expression: {expr}");
                if !text.contains(fragment) || e.position != *pos || !text.contains(&located) {
                    failures.push(format!(
                        "{expr:?}: want {fragment:?} at {pos}, got {text:?} (position {})",
                        e.position
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn check_errors(cases: &[(&str, &str, usize)]) {
    check_errors_with(&ctx(), cases);
}

#[test]
fn literals() {
    check(&[
        ("null", json!(null)),
        ("true", json!(true)),
        ("false", json!(false)),
        ("1", json!(1)),
        ("0", json!(0)),
        ("-1", json!(-1)),
        ("+1", json!(1)),
        ("-0", json!(0)),
        ("1.5", json!(1.5)),
        ("-1.5", json!(-1.5)),
        (".5", json!(0.5)),
        ("1.", json!(1)),
        ("1.0", json!(1)),
        ("2.50", json!(2.5)),
        ("1e3", json!(1000)),
        ("1E3", json!(1000)),
        ("1e+3", json!(1000)),
        ("1e-3", json!(0.001)),
        ("1.5e2", json!(150)),
        ("0xff", json!(255)),
        ("0xFF", json!(255)),
        ("0x0", json!(0)),
        ("0x7fffffff", json!(2147483647)),
        ("0xffffffff", json!(-1)),
        ("0o17", json!(15)),
        ("00012", json!(12)),
        ("123456789", json!(123456789)),
        ("9007199254740991", json!(9007199254740991i64)),
        ("'abc'", json!("abc")),
        ("''", json!("")),
        ("'it''s'", json!("it's")),
        ("''''", json!("'")),
        ("'a b  c'", json!("a b  c")),
        ("'ÄÖü €'", json!("ÄÖü €")),
        ("'}}'", json!("}}")),
        ("'${{ x }}'", json!("${{ x }}")),
        ("'\"quoted\"'", json!("\"quoted\"")),
        ("'line\nbreak'", json!("line\nbreak")),
        ("NaN", json!("NaN")),
        ("Infinity", json!("Infinity")),
        ("-Infinity", json!("-Infinity")),
        ("  1  ", json!(1)),
        ("\t'x'\n", json!("x")),
        ("(1)", json!(1)),
        ("((('x')))", json!("x")),
    ]);
}

#[test]
fn number_and_string_conversion() {
    check(&[
        ("format('{0}', 1.0)", json!("1")),
        ("format('{0}', 1.5)", json!("1.5")),
        ("format('{0}', -2.5)", json!("-2.5")),
        ("format('{0}', 100)", json!("100")),
        ("format('{0}', 0.1)", json!("0.1")),
        ("format('{0}', 0.0001)", json!("0.0001")),
        ("format('{0}', 0.00001)", json!("1E-05")),
        ("format('{0}', 1e-7)", json!("1E-07")),
        ("format('{0}', 123456789012345)", json!("123456789012345")),
        (
            "format('{0}', 1234567890123456)",
            json!("1.23456789012346E+15"),
        ),
        ("format('{0}', 1e15)", json!("1E+15")),
        ("format('{0}', 1e100)", json!("1E+100")),
        ("format('{0}', 0.30000000000000004)", json!("0.3")),
        (
            "format('{0}', 3.14159265358979323)",
            json!("3.14159265358979"),
        ),
        ("format('{0}', -0)", json!("0")),
        ("format('{0}', 0xff)", json!("255")),
        ("format('{0}', NaN)", json!("NaN")),
        ("format('{0}', Infinity)", json!("Infinity")),
        ("format('{0}', -Infinity)", json!("-Infinity")),
        ("format('{0}', true)", json!("true")),
        ("format('{0}', false)", json!("false")),
        ("format('{0}', null)", json!("")),
        ("format('{0}', 'str')", json!("str")),
        ("format('{0}', fromJSON('[]'))", json!("Array")),
        ("format('{0}', fromJSON('{}'))", json!("Object")),
        ("format('{0}', github)", json!("Object")),
        ("format('{0}', github.event.commits)", json!("Array")),
        ("format('{0}', github.run_number)", json!("7")),
        ("format('{0}', fromJSON('2.0'))", json!("2")),
    ]);
    let direct: &[(Value, &str)] = &[
        (json!(null), ""),
        (json!(true), "true"),
        (json!(false), "false"),
        (json!(0), "0"),
        (json!(-3), "-3"),
        (json!(1.25), "1.25"),
        (json!(2.0), "2"),
        (json!(1e21), "1E+21"),
        (json!(u64::MAX), "1.84467440737096E+19"),
        (json!("s"), "s"),
        (json!([1]), "Array"),
        (json!({"a": 1}), "Object"),
    ];
    for (v, want) in direct {
        CASES.fetch_add(1, Ordering::Relaxed);
        assert_eq!(to_display_string(v), *want, "{v}");
    }
    for (n, want) in [
        (1.0, "1"),
        (0.5, "0.5"),
        (1e14, "100000000000000"),
        (-1e-5, "-1E-05"),
    ] {
        CASES.fetch_add(1, Ordering::Relaxed);
        assert_eq!(format_number(n), want, "{n}");
    }
}

#[test]
fn truthiness() {
    let cases: &[(Value, bool)] = &[
        (json!(null), false),
        (json!(false), false),
        (json!(true), true),
        (json!(0), false),
        (json!(-0.0), false),
        (json!(0.0), false),
        (json!(1), true),
        (json!(-1), true),
        (json!(0.5), true),
        (json!(""), false),
        (json!("0"), true),
        (json!("false"), true),
        (json!(" "), true),
        (json!([]), true),
        (json!({}), true),
    ];
    for (v, want) in cases {
        CASES.fetch_add(1, Ordering::Relaxed);
        assert_eq!(is_truthy(v), *want, "{v}");
    }
}

#[test]
fn not_operator() {
    check(&[
        ("!true", json!(false)),
        ("!false", json!(true)),
        ("! true", json!(false)),
        ("!0", json!(true)),
        ("!1", json!(false)),
        ("!-1", json!(false)),
        ("!''", json!(true)),
        ("!'a'", json!(false)),
        ("!'false'", json!(false)),
        ("!null", json!(true)),
        ("!!'a'", json!(true)),
        ("!!0", json!(false)),
        ("!NaN", json!(true)),
        ("!fromJSON('[]')", json!(false)),
        ("!fromJSON('{}')", json!(false)),
        ("!github", json!(false)),
        ("!matrix", json!(true)),
        ("!github.nope", json!(true)),
        ("!env.EMPTY", json!(true)),
    ]);
}

#[test]
fn equality_operators() {
    check(&[
        ("1 == 1", json!(true)),
        ("1 == 2", json!(false)),
        ("1 != 2", json!(true)),
        ("1 != 1", json!(false)),
        ("1.0 == 1", json!(true)),
        ("0.1 == 0.10", json!(true)),
        ("'a' == 'a'", json!(true)),
        ("'a' == 'A'", json!(true)),
        ("'abc' == 'ABC'", json!(true)),
        ("'ÄBC' == 'äbc'", json!(true)),
        ("'abc' == 'abd'", json!(false)),
        ("'a' != 'A'", json!(false)),
        ("'a ' == 'a'", json!(false)),
        ("true == true", json!(true)),
        ("true == false", json!(false)),
        ("true != false", json!(true)),
        ("null == null", json!(true)),
        ("null != null", json!(false)),
        ("github.event_name == 'push'", json!(true)),
        ("github.event_name == 'PUSH'", json!(true)),
        ("github.event_name != 'pull_request'", json!(true)),
        ("1 == 2 == false", json!(true)),
        ("'x' == 'x' == true", json!(true)),
    ]);
}

#[test]
fn comparison_operators() {
    check(&[
        ("1 < 2", json!(true)),
        ("2 < 1", json!(false)),
        ("1 < 1", json!(false)),
        ("1 <= 1", json!(true)),
        ("2 <= 1", json!(false)),
        ("2 > 1", json!(true)),
        ("1 > 2", json!(false)),
        ("1 >= 1", json!(true)),
        ("1 >= 2", json!(false)),
        ("-1 < 0", json!(true)),
        ("1.5 > 1.25", json!(true)),
        ("'a' < 'b'", json!(true)),
        ("'b' < 'a'", json!(false)),
        ("'B' > 'a'", json!(true)),
        ("'a' < 'B'", json!(true)),
        ("'abc' < 'abd'", json!(true)),
        ("'ab' < 'abc'", json!(true)),
        ("'Z' >= 'z'", json!(true)),
        ("'Z' <= 'z'", json!(true)),
        ("'Z' > 'z'", json!(false)),
        ("'10' < '9'", json!(true)),
        ("true > false", json!(true)),
        ("false < true", json!(true)),
        ("true > true", json!(false)),
        ("true >= true", json!(true)),
        ("false <= false", json!(true)),
        ("null > null", json!(false)),
        ("null < null", json!(false)),
        ("null >= null", json!(true)),
        ("null <= null", json!(true)),
        ("github.event.pull_request.number > 40", json!(true)),
        ("github.run_number <= 7", json!(true)),
        ("2 > 1 > 0", json!(true)),
        ("3 > 2 > 1", json!(false)),
    ]);
}

#[test]
fn logical_operators_return_operands() {
    check(&[
        ("true && true", json!(true)),
        ("true && false", json!(false)),
        ("false && true", json!(false)),
        ("true || false", json!(true)),
        ("false || false", json!(false)),
        ("true && 'x'", json!("x")),
        ("'a' && 'b'", json!("b")),
        ("0 && 'b'", json!(0)),
        ("'' && 'b'", json!("")),
        ("null && 1", json!(null)),
        ("'a' || 'b'", json!("a")),
        ("'' || 'b'", json!("b")),
        ("0 || null", json!(null)),
        ("null || 0", json!(0)),
        ("false || ''", json!("")),
        ("1 && 2 && 3", json!(3)),
        ("1 && 0 && 3", json!(0)),
        ("0 || '' || 'z'", json!("z")),
        ("fromJSON('[]') || 1", json!([])),
        ("fromJSON('[]') && 1", json!(1)),
        ("env.EMPTY || 'default'", json!("default")),
        ("env.FOO || 'default'", json!("bar")),
        ("matrix.os || 'ubuntu'", json!("ubuntu")),
        ("inputs.count && inputs.name", json!("x")),
        ("github.event_name == 'push' && 'yes' || 'no'", json!("yes")),
        ("github.event_name == 'pr' && 'yes' || 'no'", json!("no")),
        ("NaN || 'n'", json!("n")),
        (
            "github.event.pull_request && github.event.pull_request.number",
            json!(42),
        ),
    ]);
}

#[test]
fn short_circuit_skips_evaluation() {
    check(&[
        ("false && fromJSON('bad')", json!(false)),
        ("true || fromJSON('bad')", json!(true)),
        ("null && format('{1}')", json!(null)),
        ("'x' || format('{')", json!("x")),
        ("false && hashFiles('x')", json!(false)),
        ("0 && contains(fromJSON('{'), 1)", json!(0)),
        ("1 || fromJSON('') || 2", json!(1)),
    ]);
    check_errors(&[
        ("true && fromJSON('bad')", "Error parsing fromJson", 9),
        ("false || fromJSON('bad')", "Error parsing fromJson", 10),
    ]);
}

#[test]
fn precedence() {
    check(&[
        ("true || false && false", json!(true)),
        ("(true || false) && false", json!(false)),
        ("false && false || true", json!(true)),
        ("false && (false || true)", json!(false)),
        ("!true == false", json!(true)),
        ("!(1 == 2)", json!(true)),
        ("!1 == 2", json!(false)),
        ("!false && false", json!(false)),
        ("!(false && false)", json!(true)),
        ("1 < 2 == true", json!(true)),
        ("1 < 2 == 2 < 3", json!(true)),
        ("1 == 1 && 2 == 2", json!(true)),
        ("1 == 1 && 2 == 3", json!(false)),
        ("1 < 2 && 3 > 2", json!(true)),
        ("1 == 2 || 'a' == 'A'", json!(true)),
        ("(1)== (1)", json!(true)),
        ("!github.event.pull_request.draft", json!(true)),
        ("github.event.pull_request.number == 42", json!(true)),
        (
            "github.event.commits[0].message == 'first' && github.sha",
            json!("abc123"),
        ),
        ("((1 == 1) && ((2 > 1) || false))", json!(true)),
        ("!!(github.event_name == 'push')", json!(true)),
    ]);
}

#[test]
fn coercion_equality_matrix() {
    check(&[
        // null vs *
        ("null == false", json!(true)),
        ("null == true", json!(false)),
        ("null == 0", json!(true)),
        ("null == 1", json!(false)),
        ("null == ''", json!(true)),
        ("null == '0'", json!(true)),
        ("null == 'a'", json!(false)),
        ("null == fromJSON('[]')", json!(false)),
        ("null == fromJSON('{}')", json!(false)),
        ("false == null", json!(true)),
        // bool vs *
        ("true == 1", json!(true)),
        ("true == 2", json!(false)),
        ("false == 0", json!(true)),
        ("true == '1'", json!(true)),
        ("true == 'true'", json!(false)),
        ("false == 'false'", json!(false)),
        ("false == ''", json!(true)),
        ("false == '0'", json!(true)),
        ("true == fromJSON('[]')", json!(false)),
        ("true == fromJSON('{}')", json!(false)),
        ("1 == true", json!(true)),
        ("'1' == true", json!(true)),
        // number vs string
        ("1 == '1'", json!(true)),
        ("'1' == 1", json!(true)),
        ("1 == '01'", json!(true)),
        ("1 == ' 1 '", json!(true)),
        ("1 == '1.0'", json!(true)),
        ("1000 == '1e3'", json!(true)),
        ("255 == '0xff'", json!(true)),
        ("8 == '0o10'", json!(true)),
        ("0 == ''", json!(true)),
        ("0 == '   '", json!(true)),
        ("1 == 'a'", json!(false)),
        ("1 == '1a'", json!(false)),
        ("-1 == '-1'", json!(true)),
        ("42 == env.NUM", json!(true)),
        ("steps.my-step.outputs.x == 1", json!(true)),
        // number/string vs collections
        ("1 == fromJSON('[1]')", json!(false)),
        ("1 == fromJSON('{}')", json!(false)),
        ("'a' == fromJSON('[]')", json!(false)),
        ("'Array' == fromJSON('[]')", json!(false)),
        ("'Object' == fromJSON('{}')", json!(false)),
        ("'' == fromJSON('[]')", json!(false)),
        // collections vs collections: never equal
        ("fromJSON('[]') == fromJSON('[]')", json!(false)),
        ("fromJSON('{}') == fromJSON('{}')", json!(false)),
        ("fromJSON('[]') == fromJSON('{}')", json!(false)),
        ("github == github", json!(false)),
        ("fromJSON('[]') != fromJSON('[]')", json!(true)),
        // != mirrors
        ("null != 0", json!(false)),
        ("true != 1", json!(false)),
        ("1 != 'a'", json!(true)),
        ("'a' != fromJSON('[]')", json!(true)),
    ]);
}

#[test]
fn coercion_ordering_matrix() {
    check(&[
        ("null < 1", json!(true)),
        ("null < '1'", json!(true)),
        ("null < true", json!(true)),
        ("null > -1", json!(true)),
        ("null < 'a'", json!(false)),
        ("null < fromJSON('[]')", json!(false)),
        ("false < true", json!(true)),
        ("false < 1", json!(true)),
        ("true < 2", json!(true)),
        ("true > 0", json!(true)),
        ("true < '2'", json!(true)),
        ("true < 'b'", json!(false)),
        ("true > fromJSON('{}')", json!(false)),
        ("1 < '2'", json!(true)),
        ("'1' < 2", json!(true)),
        ("10 < '9'", json!(false)),
        ("'10' > 9", json!(true)),
        ("'' < 1", json!(true)),
        ("'a' < 1", json!(false)),
        ("'a' > 1", json!(false)),
        ("'a' >= 1", json!(false)),
        ("'a' <= 1", json!(false)),
        ("1 < fromJSON('[2]')", json!(false)),
        ("1 > fromJSON('[]')", json!(false)),
        ("'a' < fromJSON('[]')", json!(false)),
        ("fromJSON('[]') < fromJSON('[]')", json!(false)),
        ("fromJSON('[]') <= fromJSON('[]')", json!(false)),
        ("fromJSON('{}') >= fromJSON('{}')", json!(false)),
        ("1 <= '1'", json!(true)),
        ("'2' >= 2", json!(true)),
        ("null <= 0", json!(true)),
        ("false >= 0", json!(true)),
    ]);
}

#[test]
fn nan_comparisons() {
    check(&[
        ("NaN == NaN", json!(false)),
        ("NaN != NaN", json!(true)),
        ("NaN < 1", json!(false)),
        ("NaN > 1", json!(false)),
        ("NaN <= 1", json!(false)),
        ("NaN >= NaN", json!(false)),
        ("NaN <= NaN", json!(false)),
        ("1 == NaN", json!(false)),
        ("NaN == 'NaN'", json!(false)),
        ("'abc' == 0", json!(false)),
        ("'abc' != 0", json!(true)),
        ("'x' < 1", json!(false)),
        ("'x' >= 1", json!(false)),
        ("fromJSON('[]') == 0", json!(false)),
        ("Infinity > 1e308", json!(true)),
        ("-Infinity < 0", json!(true)),
        ("Infinity == Infinity", json!(true)),
        ("Infinity == 'Infinity'", json!(true)),
    ]);
}

#[test]
fn case_insensitivity() {
    check(&[
        ("github.EVENT_NAME", json!("push")),
        ("GITHUB.event_name", json!("push")),
        ("GitHub['Event_Name']", json!("push")),
        ("env.foo", json!("bar")),
        ("env['FOO']", json!("bar")),
        ("ENV.Foo", json!("bar")),
        ("github.mixed-case", json!("mc")),
        ("github['MIXED-CASE']", json!("mc")),
        ("Steps.MY-STEP.Outputs.X", json!("1")),
        ("fromJSON('{\"A\":1}').a", json!(1)),
        ("fromJSON('{\"a\":1,\"A\":2}').A", json!(2)),
        ("fromJSON('{\"a\":1,\"A\":2}').a", json!(1)),
        ("'ABC' == 'abc'", json!(true)),
        ("CONTAINS('ABC', 'b')", json!(true)),
        ("StartsWith('Hello', 'he')", json!(true)),
        ("ENDSWITH('Hello', 'LO')", json!(true)),
        ("toJson(1)", json!("1")),
        ("TOJSON('a')", json!("\"a\"")),
        ("FROMJSON('1')", json!(1)),
        ("fromjson('true')", json!(true)),
        ("FoRmAt('{0}', 1)", json!("1")),
        ("JOIN(fromJSON('[1,2]'))", json!("1,2")),
        ("Success()", json!(true)),
        ("ALWAYS()", json!(true)),
        ("Failure()", json!(false)),
        ("CANCELLED()", json!(false)),
    ]);
}

#[test]
fn property_and_index_access() {
    check(&[
        ("github.event_name", json!("push")),
        ("github['event_name']", json!("push")),
        ("github.sha", json!("abc123")),
        ("github.run_number", json!(7)),
        ("github.event.commits[0].message", json!("first")),
        ("github.event.commits[1].author.name", json!("B")),
        ("github.event.commits[2]", json!(null)),
        ("github.event.commits[2].message", json!(null)),
        ("github.event.commits[-1]", json!(null)),
        ("github.event.commits['1'].message", json!("second")),
        ("github.event.commits[1.7].message", json!("second")),
        ("github.event.commits[true].message", json!("second")),
        ("github.event.commits['x']", json!(null)),
        ("github.event.commits[null].message", json!("first")),
        ("github.event['commits'][0]['message']", json!("first")),
        ("github.event.commits[0]['author']['name']", json!("A")),
        ("github.event.commits.message", json!(null)),
        ("github.nope", json!(null)),
        ("github.nope.deeper.still", json!(null)),
        ("github.sha[0]", json!(null)),
        ("github.sha.length", json!(null)),
        ("matrix", json!(null)),
        ("matrix.os", json!(null)),
        ("jobs", json!(null)),
        ("gitea", json!(null)),
        ("steps.my-step.outputs.x", json!("1")),
        ("steps['my-step'].outputs.result", json!("ok")),
        ("steps.my-step.conclusion", json!("success")),
        ("steps.build_2.conclusion", json!("failure")),
        ("steps.build_2.outputs.missing", json!(null)),
        ("steps.nope.outputs.x", json!(null)),
        ("needs.a.result", json!("success")),
        ("needs.b.outputs.v", json!("2")),
        ("github.event.pull_request.number", json!(42)),
        ("inputs.flag", json!(true)),
        ("inputs.count", json!(3)),
        ("secrets.TOKEN", json!("s3cr3t")),
        ("runner.os", json!("Linux")),
        ("strategy.fail-fast", json!(true)),
        ("strategy['job-index']", json!(0)),
        ("job.status", json!("success")),
        ("vars.list", json!("[1,2]")),
        ("env.EMPTY", json!("")),
        ("(github).sha", json!("abc123")),
        ("(github.event).head_commit.message", json!("Hello")),
        ("github[format('{0}', 'sha')]", json!("abc123")),
        ("github[github.event.commits[0].author.name]", json!(null)),
        ("fromJSON('{\"a\":{\"b\":1}}').a.b", json!(1)),
        ("fromJSON('[10,20]')[1]", json!(20)),
        ("fromJSON('[10,20]')['1']", json!(20)),
        ("fromJSON('{\"1\":\"one\"}')[1]", json!("one")),
        ("fromJSON('[[1,2],[3]]')[0][1]", json!(2)),
        ("fromJSON(vars.list)[1]", json!(2)),
        (
            "github.event.commits",
            json!([
                {"message": "first", "author": {"name": "A"}},
                {"message": "second", "author": {"name": "B"}}
            ]),
        ),
        (
            "env",
            json!({"FOO": "bar", "EMPTY": "", "NUM": "42", "TRUE_STR": "true"}),
        ),
        ("github.event.pull_request.labels[1]", json!({"name": "ci"})),
    ]);
}

#[test]
fn object_filters() {
    check(&[
        ("github.event.commits.*.message", json!(["first", "second"])),
        ("github.event.commits[*].author.name", json!(["A", "B"])),
        ("github.event.commits.*.author.*", json!(["A", "B"])),
        (
            "github.event.pull_request.labels.*.name",
            json!(["bug", "ci"]),
        ),
        ("needs.*.result", json!(["success", "failure"])),
        ("needs.*.outputs.v", json!(["1", "2"])),
        ("needs[*]['result']", json!(["success", "failure"])),
        ("github.sha.*", json!([])),
        ("github.sha[*]", json!([])),
        ("matrix.*", json!([])),
        ("matrix.*.x", json!([])),
        ("github.event.commits.*.missing", json!([])),
        ("fromJSON('[[1,2],[3]]').*.*", json!([1, 2, 3])),
        ("fromJSON('[[1,2],[3]]').*[0]", json!([1, 3])),
        ("fromJSON('[[1,2],[3]]').*[1]", json!([2])),
        (
            "fromJSON('[{\"a\":1},{\"b\":2},{\"a\":3}]').*.a",
            json!([1, 3]),
        ),
        (
            "fromJSON('{\"x\":{\"v\":1},\"y\":{\"v\":2}}').*.v",
            json!([1, 2]),
        ),
        ("fromJSON('[1,2]').*", json!([1, 2])),
        ("fromJSON('{}').*", json!([])),
        ("fromJSON('[]').*.a", json!([])),
        ("fromJSON('[1,\"a\",null]').*.x", json!([])),
        (
            "fromJSON('[{\"a\":[1,2]},{\"a\":[3]}]').*.a.*",
            json!([1, 2, 3]),
        ),
        (
            "fromJSON('[{\"a\":[1,2]},{\"a\":[3]}]').*.a[0]",
            json!([1, 3]),
        ),
        ("fromJSON('[{\"A\":1}]').*.a", json!([1])),
        ("contains(needs.*.result, 'failure')", json!(true)),
        ("contains(needs.*.result, 'cancelled')", json!(false)),
        (
            "contains(github.event.pull_request.labels.*.name, 'CI')",
            json!(true),
        ),
        (
            "join(github.event.commits.*.message, ' | ')",
            json!("first | second"),
        ),
        (
            "toJSON(needs.*.outputs.v)",
            json!("[\n  \"1\",\n  \"2\"\n]"),
        ),
        ("format('{0}', github.event.commits.*)", json!("Array")),
        ("!github.sha.*", json!(false)),
        ("github.event.commits.*.message[0]", json!([])),
    ]);
}

#[test]
fn contains_function() {
    check(&[
        ("contains('abc', 'b')", json!(true)),
        ("contains('abc', 'B')", json!(true)),
        ("contains('ABC', 'bc')", json!(true)),
        ("contains('abc', 'd')", json!(false)),
        ("contains('abc', '')", json!(true)),
        ("contains('', '')", json!(true)),
        ("contains('', 'a')", json!(false)),
        ("contains(123, 2)", json!(true)),
        ("contains(1.5, '.')", json!(true)),
        ("contains(true, 'ru')", json!(true)),
        ("contains(null, '')", json!(true)),
        ("contains('null', null)", json!(true)),
        ("contains(github.ref, 'heads')", json!(true)),
        ("contains(fromJSON('[1,2,3]'), 2)", json!(true)),
        ("contains(fromJSON('[1,2,3]'), '2')", json!(true)),
        ("contains(fromJSON('[1,2,3]'), 4)", json!(false)),
        ("contains(fromJSON('[\"a\",\"B\"]'), 'b')", json!(true)),
        ("contains(fromJSON('[\"ab\"]'), 'a')", json!(false)),
        ("contains(fromJSON('[]'), 1)", json!(false)),
        ("contains(fromJSON('[[1]]'), fromJSON('[1]'))", json!(false)),
        ("contains(fromJSON('[null]'), null)", json!(true)),
        ("contains(fromJSON('[true]'), 1)", json!(true)),
        ("contains(fromJSON('[0]'), '')", json!(true)),
        ("contains(github, 'sha')", json!(false)),
        ("contains('abc', fromJSON('[]'))", json!(false)),
        ("contains('Array', fromJSON('[]'))", json!(false)),
        (
            "contains(fromJSON('[\"push\", \"pull_request\"]'), github.event_name)",
            json!(true),
        ),
    ]);
}

#[test]
fn starts_and_ends_with() {
    check(&[
        ("startsWith('Hello', 'he')", json!(true)),
        ("startsWith('Hello', 'HELLO')", json!(true)),
        ("startsWith('Hello', 'lo')", json!(false)),
        ("startsWith('Hello', '')", json!(true)),
        ("startsWith('', 'a')", json!(false)),
        ("startsWith('Hello', 'Hello!')", json!(false)),
        ("startsWith(123, 12)", json!(true)),
        ("startsWith(null, '')", json!(true)),
        ("startsWith(true, 'T')", json!(true)),
        ("startsWith('a', fromJSON('[]'))", json!(false)),
        ("startsWith(fromJSON('[]'), '')", json!(false)),
        ("startsWith(github.ref, 'refs/heads/')", json!(true)),
        ("startsWith(github.ref, 'refs/tags/')", json!(false)),
        ("endsWith('Hello', 'LO')", json!(true)),
        ("endsWith('Hello', 'he')", json!(false)),
        ("endsWith('Hello', '')", json!(true)),
        ("endsWith('refs/heads/main', '/MAIN')", json!(true)),
        ("endsWith(1.5, '.5')", json!(true)),
        ("endsWith(false, 'SE')", json!(true)),
        ("endsWith(fromJSON('{}'), 'Object')", json!(false)),
        ("endsWith('Object', fromJSON('{}'))", json!(false)),
        ("endsWith(github.repository, '/repo')", json!(true)),
    ]);
}

#[test]
fn format_function() {
    check(&[
        ("format('{0}', 'a')", json!("a")),
        ("format('{0} {1}', 'a', 'b')", json!("a b")),
        ("format('{1}{0}', 'a', 'b')", json!("ba")),
        ("format('{0}{0}', 'x')", json!("xx")),
        ("format('{00}', 'a')", json!("a")),
        ("format('{{0}}', 1)", json!("{0}")),
        ("format('{{{0}}}', 1)", json!("{1}")),
        ("format('}}{{')", json!("}{")),
        ("format('{{')", json!("{")),
        ("format('no args')", json!("no args")),
        ("format('')", json!("")),
        ("format('{0}', 'unused', 'extra')", json!("unused")),
        ("format('a{0}b{1}c', 1, 2)", json!("a1b2c")),
        (
            "format('Hello {0} {1} {2}', 'Mona', 'the', 'Octocat')",
            json!("Hello Mona the Octocat"),
        ),
        (
            "format('{{Hello {0} {1} {2}!}}', 'Mona', 'the', 'Octocat')",
            json!("{Hello Mona the Octocat!}"),
        ),
        ("format('{0}', format('{0}', 'nested'))", json!("nested")),
        ("format('{0}', github.event_name)", json!("push")),
        ("format(1)", json!("1")),
        ("format(null)", json!("")),
        ("format('{0}', '{1}')", json!("{1}")),
        ("format('ü{0}ü', 'ä')", json!("üäü")),
        ("format('{1}', fromJSON('bad'), 'ok')", json!("ok")),
    ]);
    check_errors(&[
        (
            "format('{0}-{1}', 1)",
            "references more arguments than were supplied: {0}-{1}",
            1,
        ),
        (
            "format('{0}')",
            "references more arguments than were supplied",
            1,
        ),
        (
            "format('{')",
            "The following format string is invalid: {",
            1,
        ),
        (
            "format('}')",
            "The following format string is invalid: }",
            1,
        ),
        ("format('{a}', 1)", "format string is invalid: {a}", 1),
        ("format('{0', 1)", "format string is invalid", 1),
        ("format('{ 0}', 1)", "format string is invalid", 1),
        ("format('{}', 1)", "format string is invalid", 1),
        ("format('{-1}', 1)", "format string is invalid", 1),
        ("format('{256}', 1)", "format string is invalid", 1),
        (
            "format('{0:x}', 1)",
            "format specifiers 'x' are not valid",
            1,
        ),
        ("format('{0:x', 1)", "format string is invalid", 1),
        ("format('a}b', 1)", "format string is invalid", 1),
        ("1 == format('{9}')", "references more arguments", 6),
    ]);
}

#[test]
fn join_function() {
    check(&[
        ("join(fromJSON('[\"a\",\"b\"]'))", json!("a,b")),
        ("join(fromJSON('[\"a\",\"b\"]'), '-')", json!("a-b")),
        ("join(fromJSON('[\"a\",\"b\"]'), '')", json!("ab")),
        ("join(fromJSON('[\"a\",\"b\"]'), ', ')", json!("a, b")),
        ("join(fromJSON('[]'))", json!("")),
        ("join(fromJSON('[]'), '-')", json!("")),
        ("join(fromJSON('[\"a\"]'), '-')", json!("a")),
        ("join('abc')", json!("abc")),
        ("join('abc', '-')", json!("abc")),
        ("join(1)", json!("1")),
        ("join(true)", json!("true")),
        ("join(null)", json!("")),
        ("join(github)", json!("")),
        (
            "join(fromJSON('[1,true,null,\"x\",1.5]'))",
            json!("1,true,,x,1.5"),
        ),
        ("join(fromJSON('[[1],{}]'))", json!("Array,Object")),
        ("join(fromJSON('[1,2]'), 0)", json!("102")),
        ("join(fromJSON('[1,2]'), null)", json!("12")),
        ("join(fromJSON('[1,2]'), fromJSON('[]'))", json!("1,2")),
        ("join(fromJSON('[1,2]'), true)", json!("1true2")),
        (
            "join(github.event.pull_request.labels.*.name)",
            json!("bug,ci"),
        ),
    ]);
}

#[test]
fn to_json_function() {
    check(&[
        ("toJSON(1)", json!("1")),
        ("toJSON(1.5)", json!("1.5")),
        ("toJSON(-0.25)", json!("-0.25")),
        ("toJSON(1e15)", json!("1E+15")),
        ("toJSON('a')", json!("\"a\"")),
        ("toJSON('')", json!("\"\"")),
        ("toJSON('a\"b')", json!("\"a\\\"b\"")),
        ("toJSON('a\\b')", json!("\"a\\\\b\"")),
        ("toJSON('line\nbreak')", json!("\"line\\nbreak\"")),
        ("toJSON('ü')", json!("\"ü\"")),
        ("toJSON(null)", json!("null")),
        ("toJSON(true)", json!("true")),
        ("toJSON(false)", json!("false")),
        ("toJSON(matrix)", json!("null")),
        ("toJSON(NaN)", json!("NaN")),
        ("toJSON(fromJSON('[]'))", json!("[]")),
        ("toJSON(fromJSON('{}'))", json!("{}")),
        ("toJSON(fromJSON('[1,2]'))", json!("[\n  1,\n  2\n]")),
        ("toJSON(fromJSON('[1.0, 2.5]'))", json!("[\n  1,\n  2.5\n]")),
        (
            "toJSON(fromJSON('{\"a\":1,\"b\":[true,null]}'))",
            json!("{\n  \"a\": 1,\n  \"b\": [\n    true,\n    null\n  ]\n}"),
        ),
        (
            "toJSON(fromJSON('{\"b\":1,\"a\":2}'))",
            json!("{\n  \"a\": 2,\n  \"b\": 1\n}"),
        ),
        (
            "toJSON(fromJSON('{\"a\":{},\"b\":[]}'))",
            json!("{\n  \"a\": {},\n  \"b\": []\n}"),
        ),
        (
            "toJSON(fromJSON('[[[1]]]'))",
            json!("[\n  [\n    [\n      1\n    ]\n  ]\n]"),
        ),
        (
            "toJSON(github.event.commits[0])",
            json!("{\n  \"author\": {\n    \"name\": \"A\"\n  },\n  \"message\": \"first\"\n}"),
        ),
        ("toJSON(steps.build_2.outputs)", json!("{}")),
        (
            "toJSON(github.event.commits.*.author.name)",
            json!("[\n  \"A\",\n  \"B\"\n]"),
        ),
        (
            "fromJSON(toJSON(github.event.commits))[1].author.name",
            json!("B"),
        ),
    ]);
}

#[test]
fn from_json_function() {
    check(&[
        ("fromJSON('1')", json!(1)),
        ("fromJSON('1.5')", json!(1.5)),
        ("fromJSON('-3')", json!(-3)),
        ("fromJSON(' 1 ')", json!(1)),
        ("fromJSON('\"x\"')", json!("x")),
        ("fromJSON('null')", json!(null)),
        ("fromJSON('true')", json!(true)),
        ("fromJSON('false')", json!(false)),
        ("fromJSON('[1,\"a\"]')", json!([1, "a"])),
        ("fromJSON('{\"a\":{\"b\":[1]}}')", json!({"a": {"b": [1]}})),
        ("fromJSON('[1.0]')", json!([1.0])),
        ("fromJSON(env.NUM)", json!(42)),
        ("fromJSON(env.TRUE_STR)", json!(true)),
        ("fromJSON(1)", json!(1)),
        ("fromJSON(true)", json!(true)),
        ("fromJSON(vars.list)", json!([1, 2])),
        ("fromJSON('\"a\\u00e9\"')", json!("aé")),
        (
            "fromJSON('{\"include\":[{\"os\":\"linux\"}]}').include[0].os",
            json!("linux"),
        ),
    ]);
    check_errors(&[
        ("fromJSON('')", "Error parsing fromJson", 1),
        ("fromJSON('{')", "The input was: '{'", 1),
        ("fromJSON('[1,]')", "The input was: '[1,]'", 1),
        ("fromJSON('abc')", "Error parsing fromJson", 1),
        ("fromJSON('abc')", "'abc'", 1),
        ("fromJSON('{\"a\":1}x')", "Error parsing fromJson", 1),
        ("fromJSON(null)", "Error parsing fromJson", 1),
        ("fromJSON(github)", "The input was: 'Object'", 1),
        ("toJSON(fromJSON('nope'))", "Error parsing fromJson", 8),
    ]);
}

#[test]
fn case_function() {
    check(&[
        ("case(true, 'a', 'b')", json!("a")),
        ("case(false, 'a', 'b')", json!("b")),
        ("case(false, 1, true, 2, 3)", json!(2)),
        ("case(false, 1, false, 2, 3)", json!(3)),
        ("case(github.event_name == 'push', 'p', 'o')", json!("p")),
        ("case(true, 'a', fromJSON('bad'))", json!("a")),
    ]);
    check_errors(&[
        (
            "case(1, 'a', 'b')",
            "case predicate must evaluate to a boolean value",
            1,
        ),
        ("case(true, 'a')", "Too few parameters supplied", 5),
        (
            "case(true, 'a', false, 'b')",
            "Even number of parameters",
            5,
        ),
    ]);
}

#[test]
fn status_functions() {
    let mut c = ctx();
    let all = "format('{0}{1}{2}{3}', success(), failure(), cancelled(), always())";
    c.status = Status::Success;
    check_with(&c, &[(all, json!("truefalsefalsetrue"))]);
    c.status = Status::Failure;
    check_with(&c, &[(all, json!("falsetruefalsetrue"))]);
    c.status = Status::Cancelled;
    check_with(&c, &[(all, json!("falsefalsetruetrue"))]);
    assert_eq!(Status::default(), Status::Success);

    let uses: &[(&str, bool)] = &[
        ("success()", true),
        ("always()", true),
        ("cancelled()", true),
        ("failure()", true),
        ("FAILURE()", true),
        ("!cancelled()", true),
        ("failure() || x", true),
        ("github.event_name == 'push' && always()", true),
        ("format('{0}', success())", true),
        ("github.x[failure()]", true),
        ("true", false),
        ("github.event_name == 'push'", false),
        ("contains('success()', 'x')", false),
        ("steps.success.outputs.x", false),
    ];
    for (expr, want) in uses {
        CASES.fetch_add(1, Ordering::Relaxed);
        let expr_text = expr.replace(" x", " github.x");
        let parsed = parse(&expr_text).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(parsed.uses_status_function(), *want, "{expr}");
    }
}

#[test]
fn conditions() {
    use Status::{Cancelled as C, Failure as F, Success as S};
    let cases: &[(&str, Status, bool)] = &[
        ("", S, true),
        ("", F, false),
        ("   ", C, false),
        ("true", S, true),
        ("true", F, false),
        ("true", C, false),
        ("false", S, false),
        ("always()", S, true),
        ("always()", F, true),
        ("always()", C, true),
        ("success()", S, true),
        ("success()", F, false),
        ("failure()", F, true),
        ("failure()", S, false),
        ("failure()", C, false),
        ("cancelled()", C, true),
        ("cancelled()", S, false),
        ("!cancelled()", C, false),
        ("!cancelled()", F, true),
        ("success() || failure()", F, true),
        ("success() || failure()", C, false),
        ("cancelled() || failure()", S, false),
        ("failure() || env.FOO == 'bar'", S, true),
        ("failure() || env.FOO == 'baz'", S, false),
        ("failure() || env.FOO == 'baz'", F, true),
        ("always() && false", F, false),
        ("always() && env.FOO", F, true),
        ("${{ true }}", S, true),
        ("${{ false }}", S, false),
        ("${{true}}", S, true),
        ("${{ true }}", F, false),
        ("${{ always() }}", F, true),
        ("  ${{ env.FOO == 'bar' }}  ", S, true),
        ("${{ failure() }}", F, true),
        ("env.FOO", S, true),
        ("env.EMPTY", S, false),
        ("'false'", S, true),
        ("0", S, false),
        ("github.event_name == 'push'", S, true),
        ("github.event_name == 'push'", F, false),
        ("github.event_name == 'pull_request'", S, false),
        ("steps.my-step.outputs.x == 1", S, true),
        ("steps.build_2.conclusion == 'failure'", S, true),
        ("contains(needs.*.result, 'failure')", S, true),
        ("fromJSON('bad')", F, false),
        ("matrix.os == 'linux'", S, false),
        ("!matrix.os", S, true),
        ("${{ 'a' }} == ${{ 'b' }}", S, true),
        ("${{ false }} && x", S, true),
        ("x == ${{ 'y' }}", S, true),
        ("x == ${{ 'y' }}", F, false),
        ("${{ '' }}", S, false),
        ("${{ 'a' }} == ${{ 'b' }}", F, false),
        ("inputs.flag", S, true),
        ("inputs.count > 2", S, true),
    ];
    let mut failures = Vec::new();
    for (cond, status, want) in cases {
        CASES.fetch_add(1, Ordering::Relaxed);
        let mut c = ctx();
        c.status = *status;
        match evaluate_condition(cond, &c) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!("{cond:?} ({status:?}): want {want}, got {got}")),
            Err(e) => failures.push(format!("{cond:?} ({status:?}): error {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    let errors: &[(&str, Status, &str)] = &[
        ("foo", S, "Unrecognized named-value: 'foo'"),
        ("foo", F, "Unrecognized named-value: 'foo'"),
        ("1 ==", S, "Unexpected end of expression"),
        ("${{ 1", S, "The expression is not closed"),
        ("fromJSON('bad')", S, "Error parsing fromJson"),
        ("always() && fromJSON('bad')", F, "Error parsing fromJson"),
        ("${{ nope() }}", S, "Unrecognized function: 'nope'"),
    ];
    for (cond, status, fragment) in errors {
        CASES.fetch_add(1, Ordering::Relaxed);
        let mut c = ctx();
        c.status = *status;
        match evaluate_condition(cond, &c) {
            Ok(v) => panic!("{cond:?}: want error, got {v}"),
            Err(e) => assert!(e.to_string().contains(fragment), "{cond:?}: {e}"),
        }
    }
}

#[test]
fn interpolation() {
    let c = ctx();
    let cases: &[(&str, &str)] = &[
        ("no expressions", "no expressions"),
        ("", ""),
        ("${{ 1 }}", "1"),
        ("${{1}}", "1"),
        ("a ${{ env.FOO }} b", "a bar b"),
        ("${{ 'x' }}${{ 'y' }}", "xy"),
        ("${{ '}}' }}", "}}"),
        ("${{ 'a''}}b' }}", "a'}}b"),
        ("pre ${{ format('{{0}}') }} post", "pre {0} post"),
        ("${{ null }}", ""),
        ("${{ true }}", "true"),
        ("${{ 1.50 }}", "1.5"),
        ("${{ fromJSON('[1]') }}", "Array"),
        ("${{ github }}", "Object"),
        ("$ { { x", "$ { { x"),
        ("{{ x }}", "{{ x }}"),
        ("x}}y", "x}}y"),
        ("$${{ 'a' }}", "$a"),
        ("${{ 'a' }}}}", "a}}"),
        ("  ${{ 'a' }}  ", "  a  "),
        ("${{ steps.my-step.outputs.x }}", "1"),
        ("a\n${{ 'b' }}\nc", "a\nb\nc"),
        (
            "${{ github.event.commits[0].message }} and ${{ github.event.commits[1].message }}",
            "first and second",
        ),
        ("€ ${{ 'ü' }} €", "€ ü €"),
        ("${{ toJSON(fromJSON('[1]')) }}", "[\n  1\n]"),
        ("echo ${{ secrets.TOKEN }}", "echo s3cr3t"),
        ("${{ matrix.os }}-build", "-build"),
        ("${{ inputs.count > 2 && 'big' || 'small' }}", "big"),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        CASES.fetch_add(1, Ordering::Relaxed);
        match interpolate(text, &c) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!("{text:?}: want {want:?}, got {got:?}")),
            Err(e) => failures.push(format!("{text:?}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    let errors: &[(&str, &str, usize)] = &[
        ("${{ 1", "The expression is not closed", 1),
        ("abc ${{ 'x' }} ${{ 'y'", "The expression is not closed", 16),
        ("${{ '}} ", "The expression is not closed", 1),
        ("a ${{ foo }}", "Unrecognized named-value: 'foo'", 1),
        ("${{ }}", "Expected an expression", 1),
        ("${{ 1 == }}", "Unexpected end of expression: '=='", 3),
    ];
    for (text, fragment, pos) in errors {
        CASES.fetch_add(1, Ordering::Relaxed);
        match interpolate(text, &c) {
            Ok(v) => panic!("{text:?}: want error, got {v:?}"),
            Err(e) => {
                assert!(e.to_string().contains(fragment), "{text:?}: {e}");
                assert_eq!(e.position, *pos, "{text:?}: {e}");
            }
        }
    }
}

#[test]
fn interpolation_keeping_types() {
    let c = ctx();
    let cases: &[(&str, Value)] = &[
        ("${{ true }}", json!(true)),
        ("${{ 1 }}", json!(1)),
        ("${{ 1.5 }}", json!(1.5)),
        (" ${{ fromJSON('[1]') }} ", json!([1])),
        ("${{ null }}", json!(null)),
        ("${{ 'x' }}", json!("x")),
        ("x ${{ 1 }}", json!("x 1")),
        ("${{ 1 }}${{ 2 }}", json!("12")),
        ("${{ 1 }} ", json!(1)),
        ("plain", json!("plain")),
        ("", json!("")),
        (
            "${{ github.event.pull_request.labels[0] }}",
            json!({"name": "bug"}),
        ),
        ("${{ needs.*.result }}", json!(["success", "failure"])),
        ("${{ inputs.flag }}", json!(true)),
        ("${{ matrix }}", json!(null)),
        ("${{ '}}' }}", json!("}}")),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        CASES.fetch_add(1, Ordering::Relaxed);
        match interpolate_value(text, &c) {
            Ok(got) if &got == want => {}
            Ok(got) => failures.push(format!("{text:?}: want {want}, got {got}")),
            Err(e) => failures.push(format!("{text:?}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(interpolate_value("${{ 1", &c).is_err());
}

#[test]
fn syntax_and_name_errors() {
    check_errors(&[
        ("foo", "Unrecognized named-value: 'foo'", 1),
        ("github.x == bar", "Unrecognized named-value: 'bar'", 13),
        ("secret.TOKEN", "Unrecognized named-value: 'secret'", 1),
        ("nofunc()", "Unrecognized function: 'nofunc'", 1),
        ("1 == tojsonx(1)", "Unrecognized function: 'tojsonx'", 6),
        ("1 == ", "Unexpected end of expression: '=='", 3),
        ("1 ==", "Unexpected end of expression: '=='", 3),
        ("(1", "Unexpected end of expression: '1'", 2),
        ("((1)", "Unexpected end of expression: ')'", 4),
        ("!", "Unexpected end of expression: '!'", 1),
        ("github.", "Unexpected end of expression: '.'", 7),
        ("github[0", "Unexpected end of expression: '0'", 8),
        ("contains('a'", "Unexpected end of expression: ''a''", 10),
        ("1)", "Unexpected symbol: ')'", 2),
        ("1 2", "Unexpected symbol: '2'", 3),
        ("'abc", "Unexpected symbol: ''abc'", 1),
        ("'a' 'b'", "Unexpected symbol: ''b''", 5),
        ("github..x", "Unexpected symbol: '.'", 8),
        ("github[]", "Unexpected symbol: ']'", 8),
        ("github.0", "Unexpected symbol: '0'", 8),
        ("= 1", "Unexpected symbol: '='", 1),
        ("1 = 1", "Unexpected symbol: '='", 3),
        ("1 & 1", "Unexpected symbol: '&'", 3),
        ("1 | 1", "Unexpected symbol: '|'", 3),
        ("1 ==== 2", "Unexpected symbol: '=='", 5),
        ("1abc", "Unexpected symbol: '1abc'", 1),
        ("1.2.3", "Unexpected symbol: '1.2.3'", 1),
        ("1 + 1", "Unexpected symbol: '+'", 3),
        ("1 - 1", "Unexpected symbol: '-'", 3),
        ("a$b", "Unexpected symbol: 'a$b'", 1),
        ("'a'.length", "Unexpected symbol: '.'", 4),
        ("true[0]", "Unexpected symbol: '['", 5),
        ("1 == (", "Unexpected end of expression: '('", 6),
        ("()", "Unexpected symbol: ')'", 2),
        ("github.*.", "Unexpected end of expression: '.'", 9),
        ("*", "Unexpected symbol: '*'", 1),
        ("github**", "Unexpected symbol: 'github**'", 1),
        ("contains('a',)", "Unexpected symbol: ')'", 14),
        ("contains(,'a')", "Unexpected symbol: ','", 10),
        ("format('{0}' 'a')", "Unexpected symbol: ''a''", 14),
        ("1 ] 2", "Unexpected symbol: ']'", 3),
        ("ü", "Unexpected symbol: 'ü'", 1),
        ("'ü' == foo", "Unrecognized named-value: 'foo'", 8),
        ("", "Expected an expression", 1),
    ]);
}

#[test]
fn arity_errors() {
    check_errors(&[
        ("contains('a')", "Too few parameters supplied: '('", 9),
        (
            "contains('a','b','c')",
            "Too many parameters supplied: '('",
            9,
        ),
        ("startsWith('a')", "Too few parameters supplied", 11),
        ("endsWith('a', 'b', 'c')", "Too many parameters supplied", 9),
        ("success(1)", "Too many parameters supplied", 8),
        ("always(true)", "Too many parameters supplied", 7),
        ("failure(1, 2)", "Too many parameters supplied", 8),
        ("cancelled('x')", "Too many parameters supplied", 10),
        ("toJSON()", "Too few parameters supplied", 7),
        ("toJSON(1, 2)", "Too many parameters supplied", 7),
        ("fromJSON()", "Too few parameters supplied", 9),
        ("format()", "Too few parameters supplied", 7),
        ("join()", "Too few parameters supplied", 5),
        ("join(1, 2, 3)", "Too many parameters supplied", 5),
        ("hashFiles()", "Too few parameters supplied", 10),
        ("1 == contains ('a')", "Too few parameters supplied", 15),
    ]);
}

#[test]
fn runtime_errors() {
    check_errors(&[
        ("hashFiles('x')", "hashFiles is not available", 1),
        ("1 == hashFiles('**')", "hashFiles is not available", 6),
        ("fromJSON('{')", "Error parsing fromJson", 1),
        ("github[fromJSON('x')]", "Error parsing fromJson", 8),
        ("!format('{')", "format string is invalid", 2),
    ]);
}

#[test]
fn limits() {
    let deep_not = format!("{}true", "!".repeat(51));
    let ok_not = format!("{}true", "!".repeat(49));
    let deep_group = format!("{}1{}", "(".repeat(51), ")".repeat(51));
    let ok_group = format!("{}1{}", "(".repeat(50), ")".repeat(50));
    let deep_props = format!("github{}", ".a".repeat(60));
    let ok_props = format!("github{}", ".a".repeat(40));
    let too_long = format!("'{}'", "x".repeat(21000));
    let max_len = format!("'{}'", "x".repeat(20998));
    let huge_group = format!("{}1{}", "(".repeat(10000), ")".repeat(10000));
    let huge_not = format!("{}true", "!".repeat(20000));
    let huge_props = format!("github{}", ".a".repeat(10000));
    let huge_chain = format!("1{}", " == 1".repeat(4000));
    for (expr, fragment) in [
        (&deep_not, "Exceeded max expression depth 50"),
        (&deep_group, "Exceeded max expression depth 50"),
        (&deep_props, "Exceeded max expression depth 50"),
        (&too_long, "Exceeded max expression length 21000"),
        (&huge_group, "Exceeded max expression"),
        (&huge_not, "Exceeded max expression depth 50"),
        (&huge_props, "Exceeded max expression depth 50"),
        (&huge_chain, "Exceeded max expression depth 50"),
    ] {
        CASES.fetch_add(1, Ordering::Relaxed);
        let e = evaluate(expr, &ctx()).expect_err(&expr[..20.min(expr.len())]);
        assert!(e.to_string().contains(fragment), "{e}");
        assert!(e.to_string().contains("Located at position"), "{e}");
    }
    check(&[
        (&ok_not, json!(false)),
        (&ok_group, json!(1)),
        (&ok_props, json!(null)),
        (&max_len, json!("x".repeat(20998))),
    ]);
}

#[test]
fn error_display() {
    CASES.fetch_add(3, Ordering::Relaxed);
    let e: ExprError = evaluate("foo", &ctx()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Unrecognized named-value: 'foo'. Located at position 1 within expression: foo"
    );
    assert_eq!(e.message, "Unrecognized named-value: 'foo'");
    assert_eq!(e.expression, "foo");
    let e = evaluate("github.sha == 1 &&", &ctx()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Unexpected end of expression: '&&'. Located at position 17 within expression: github.sha == 1 &&"
    );
}

mod hash_files {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::path::Path;

    fn expected(root: &Path, files: &[&str]) -> String {
        let mut total = Sha256::new();
        for f in files {
            total.update(Sha256::digest(std::fs::read(root.join(f)).unwrap()));
        }
        hex::encode(total.finalize())
    }

    fn setup() -> (tempfile::TempDir, Contexts) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, body) in [
            ("a.txt", "a"),
            ("b.txt", "b"),
            (".hidden", "h"),
            ("src/x.rs", "x"),
            ("src/deep/y.rs", "y"),
            ("node_modules/m.js", "m"),
            ("hello.txt", "hello\n"),
        ] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        std::fs::create_dir_all(root.join("emptydir")).unwrap();
        let mut c = ctx();
        c.workspace = Some(root.to_path_buf());
        (dir, c)
    }

    #[test]
    fn hashes() {
        let (dir, c) = setup();
        let root = dir.path();
        let all = [
            ".hidden",
            "a.txt",
            "b.txt",
            "hello.txt",
            "node_modules/m.js",
            "src/deep/y.rs",
            "src/x.rs",
        ];
        let ws = root.to_string_lossy().to_string();
        let abs_a = format!("hashFiles('{ws}/a.txt')");
        let abs_ws = format!("hashFiles('{ws}')");
        let cases: Vec<(String, Value)> = vec![
            (
                "hashFiles('hello.txt')".into(),
                // Independently computed: sha256(sha256("hello\n")).
                json!("ecb65bb98f9d905b70458986c39fcbad7715e5f2fcc3b1f07767d7c83e2438cc"),
            ),
            (
                "hashFiles('a.txt')".into(),
                json!(expected(root, &["a.txt"])),
            ),
            (
                "hashFiles('./a.txt')".into(),
                json!(expected(root, &["a.txt"])),
            ),
            (
                "hashFiles('**/*.rs')".into(),
                json!(expected(root, &["src/deep/y.rs", "src/x.rs"])),
            ),
            (
                "hashFiles('src/**')".into(),
                json!(expected(root, &["src/deep/y.rs", "src/x.rs"])),
            ),
            (
                "hashFiles('src')".into(),
                json!(expected(root, &["src/deep/y.rs", "src/x.rs"])),
            ),
            (
                "hashFiles('src/')".into(),
                json!(expected(root, &["src/deep/y.rs", "src/x.rs"])),
            ),
            (
                "hashFiles('src/*.rs')".into(),
                json!(expected(root, &["src/x.rs"])),
            ),
            (
                "hashFiles('*.txt')".into(),
                json!(expected(root, &["a.txt", "b.txt", "hello.txt"])),
            ),
            (
                "hashFiles('b.txt', 'a.txt')".into(),
                json!(expected(root, &["a.txt", "b.txt"])),
            ),
            (
                "hashFiles('a.txt', 'a.txt')".into(),
                json!(expected(root, &["a.txt"])),
            ),
            (
                "hashFiles('[ab].txt')".into(),
                json!(expected(root, &["a.txt", "b.txt"])),
            ),
            (
                "hashFiles('?.txt')".into(),
                json!(expected(root, &["a.txt", "b.txt"])),
            ),
            ("hashFiles('**')".into(), json!(expected(root, &all))),
            ("hashFiles('*')".into(), json!(expected(root, &all))),
            (
                "hashFiles('**', '!node_modules/**')".into(),
                json!(expected(
                    root,
                    &[
                        ".hidden",
                        "a.txt",
                        "b.txt",
                        "hello.txt",
                        "src/deep/y.rs",
                        "src/x.rs"
                    ]
                )),
            ),
            (
                "hashFiles('**', '!node_modules')".into(),
                json!(expected(
                    root,
                    &[
                        ".hidden",
                        "a.txt",
                        "b.txt",
                        "hello.txt",
                        "src/deep/y.rs",
                        "src/x.rs"
                    ]
                )),
            ),
            (
                "hashFiles('*.txt', '!b.txt')".into(),
                json!(expected(root, &["a.txt", "hello.txt"])),
            ),
            (
                "hashFiles('!b.txt', '*.txt')".into(),
                json!(expected(root, &["a.txt", "b.txt", "hello.txt"])),
            ),
            (
                "hashFiles('**/*.rs', '!src/deep', 'src/deep/y.rs')".into(),
                json!(expected(root, &["src/deep/y.rs", "src/x.rs"])),
            ),
            ("hashFiles('*.txt', '!*.txt')".into(), json!("")),
            ("hashFiles('!a.txt')".into(), json!("")),
            (
                "hashFiles('a.txt\n# comment\n\n  b.txt  ')".into(),
                json!(expected(root, &["a.txt", "b.txt"])),
            ),
            (
                "hashFiles('*.txt\n!b.txt')".into(),
                json!(expected(root, &["a.txt", "hello.txt"])),
            ),
            ("hashFiles('nothing')".into(), json!("")),
            ("hashFiles('emptydir')".into(), json!("")),
            ("hashFiles('**/*.RS')".into(), json!("")),
            ("hashFiles('../*')".into(), json!("")),
            ("hashFiles('/etc/passwd')".into(), json!("")),
            ("hashFiles('')".into(), json!("")),
            (abs_a, json!(expected(root, &["a.txt"]))),
            (abs_ws, json!(expected(root, &all))),
            (
                "hashFiles('**/*.rs') == hashFiles('src/x.rs', 'src/deep/y.rs')".into(),
                json!(true),
            ),
            (
                "hashFiles('a.txt') == hashFiles('b.txt')".into(),
                json!(false),
            ),
            (
                "format('{0}', hashFiles('a.txt')) == hashFiles('A.TXT', 'a.txt')".into(),
                json!(true),
            ),
        ];
        let cases: Vec<(&str, Value)> =
            cases.iter().map(|(e, v)| (e.as_str(), v.clone())).collect();
        check_with(&c, &cases);
    }

    #[test]
    fn outside_workspace_and_symlinks() {
        let outer = tempfile::tempdir().unwrap();
        let ws = outer.path().join("ws");
        std::fs::create_dir_all(ws.join("d")).unwrap();
        std::fs::write(outer.path().join("secret.txt"), "s").unwrap();
        std::fs::write(ws.join("d/in.txt"), "i").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outer.path(), ws.join("link-dir")).unwrap();
        let mut c = ctx();
        c.workspace = Some(ws.clone());
        check_with(
            &c,
            &[
                ("hashFiles('../secret.txt')", json!("")),
                ("hashFiles('**/secret.txt')", json!("")),
                ("hashFiles('**')", json!(expected(&ws, &["d/in.txt"]))),
            ],
        );
    }
}
