//! Cases shaped like Gitea's jobparser testdata (`testdata/*.in.yaml` → `*.out.yaml`), with our
//! own workflows.

use super::*;

fn opts() -> ParseOptions {
    ParseOptions {
        github: Some(json!({"ref": "refs/heads/main", "repository": "owner/repo", "job": ""})),
        vars: [("RUNNER".to_string(), "big".to_string())].into(),
        inputs: None,
    }
}

/// Each single workflow as (job key, name, runs-on labels, payload read back).
fn expand(yaml: &str) -> Vec<(String, String, Vec<String>, Value)> {
    parse(yaml, &opts())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|w| {
            let payload: Value = serde_yaml_ng::from_str(&w.marshal()).unwrap();
            let labels = match &w.job.runs_on_out {
                Some(crate::fake::yaml::Y::Str(s)) => vec![s.clone()],
                Some(crate::fake::yaml::Y::Seq(items)) => items
                    .iter()
                    .map(|i| match i {
                        crate::fake::yaml::Y::Str(s) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                other => panic!("runs-on {other:?}"),
            };
            (w.job_id.clone(), w.job.name.clone(), labels, payload)
        })
        .collect()
}

fn only_job(payload: &Value) -> &Value {
    let jobs = payload["jobs"].as_mapping().expect("jobs mapping");
    assert_eq!(jobs.len(), 1, "{payload:?}");
    jobs.values().next().unwrap()
}

#[test]
fn testdata_shaped_cases() {
    struct Case {
        name: &'static str,
        yaml: &'static str,
        /// (key, name, runs-on)
        want: &'static [(&'static str, &'static str, &'static [&'static str])],
    }
    let cases = [
        Case {
            name: "has_needs: needs kept, names default to the key",
            yaml: "name: t\njobs:\n  a:\n    runs-on: linux\n    steps: [{run: x}]\n  b:\n    needs: a\n    runs-on: linux\n    steps: [{run: x}]\n  c:\n    needs: [a, b]\n    runs-on: linux\n    steps: [{run: x}]\n",
            want: &[("a", "a", &["linux"]), ("b", "b", &["linux"]), ("c", "c", &["linux"])],
        },
        Case {
            name: "multiple_jobs: document order, not sorted",
            yaml: "jobs:\n  zzz:\n    runs-on: linux\n    steps: [{run: x}]\n  job1:\n    runs-on: linux\n    steps: [{run: x}]\n  aaa:\n    runs-on: linux\n    steps: [{run: x}]\n",
            want: &[("zzz", "zzz", &["linux"]), ("job1", "job1", &["linux"]), ("aaa", "aaa", &["linux"])],
        },
        Case {
            name: "multiple_matrix: one job per combination, sorted by name, runs-on interpolated",
            yaml: "jobs:\n  build:\n    strategy:\n      matrix:\n        os: [ubuntu-22.04, ubuntu-20.04]\n        version: [1.17, 1.18]\n    runs-on: ${{ matrix.os }}\n    steps: [{run: x}]\n",
            want: &[
                ("build", "build (ubuntu-20.04, 1.17)", &["ubuntu-20.04"]),
                ("build", "build (ubuntu-20.04, 1.18)", &["ubuntu-20.04"]),
                ("build", "build (ubuntu-22.04, 1.17)", &["ubuntu-22.04"]),
                ("build", "build (ubuntu-22.04, 1.18)", &["ubuntu-22.04"]),
            ],
        },
        Case {
            name: "job_name_with_matrix: an expression in the name replaces the suffix",
            yaml: "jobs:\n  t:\n    name: test_${{ matrix.v }}_on_${{ matrix.os }}\n    strategy:\n      matrix:\n        os: [a]\n        v: [1, 2]\n    runs-on: [self-hosted, '${{ matrix.os }}']\n    steps: [{run: x}]\n",
            want: &[("t", "test_1_on_a", &["self-hosted", "a"]), ("t", "test_2_on_a", &["self-hosted", "a"])],
        },
        Case {
            name: "explicit name gets the suffix too",
            yaml: "jobs:\n  t:\n    name: Tests\n    strategy:\n      matrix:\n        include:\n          - {os: x}\n    runs-on: linux\n    steps: [{run: x}]\n",
            want: &[("t", "Tests (x)", &["linux"])],
        },
        Case {
            name: "without a matrix a name's expression is left for the runner",
            yaml: "jobs:\n  t:\n    name: ${{ github.ref }}\n    runs-on: ${{ vars.RUNNER }}\n    steps: [{run: x}]\n",
            want: &[("t", "${{ github.ref }}", &["big"])],
        },
        Case {
            name: "runs-on group and labels; unknown context interpolates to empty",
            yaml: "jobs:\n  t:\n    runs-on:\n      group: pool\n      labels: [a, '${{ nope.x }}']\n    steps: [{run: x}]\n",
            want: &[("t", "t", &["a", "", "pool"])],
        },
        Case {
            name: "has_with / has_secrets: reusable-workflow callers are kept as they are",
            yaml: "jobs:\n  call:\n    uses: ./.gitea/workflows/build.yml\n    with:\n      package: service\n    secrets: inherit\n",
            want: &[("call", "call", &[])],
        },
    ];
    for case in cases {
        let got = expand(case.yaml);
        let got: Vec<(&str, &str, Vec<&str>)> = got
            .iter()
            .map(|(k, n, l, _)| {
                (
                    k.as_str(),
                    n.as_str(),
                    l.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        let want: Vec<(&str, &str, Vec<&str>)> = case
            .want
            .iter()
            .map(|(k, n, l)| (*k, *n, l.to_vec()))
            .collect();
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn payloads_keep_the_header_needs_if_and_one_value_per_matrix_key() {
    let yaml = r#"
name: CI
on:
  push:
    branches: [main]
env:
  NUM: 1
defaults:
  run:
    shell: bash
permissions: read-all
run-name: Run by ${{ github.ref }}
concurrency: ci
jobs:
  lint:
    runs-on: linux
    steps:
      - run: x
  build:
    needs: lint
    if: ${{ always() }}
    strategy:
      fail-fast: false
      matrix:
        os: [a, b]
    runs-on: linux
    continue-on-error: true
    environment: prod
    outputs:
      out: ${{ steps.s.outputs.v }}
    steps:
      - id: s
        uses: actions/setup-go@v5
        with:
          go-version: 1.21
        rn: dropped
"#;
    let all = expand(yaml);
    assert_eq!(all.len(), 3);
    let (_, _, _, lint) = &all[0];
    assert_eq!(lint["name"], "CI");
    assert_eq!(lint["on"]["push"]["branches"][0], "main");
    assert_eq!(
        lint["env"]["NUM"], "1",
        "workflow env values become strings"
    );
    assert_eq!(lint["defaults"]["run"]["shell"], "bash");
    assert_eq!(lint["permissions"], "read-all");
    assert_eq!(lint["run-name"], "Run by refs/heads/main");
    assert!(
        lint.get("concurrency").is_none(),
        "workflow concurrency is not kept"
    );

    let (key, name, _, build) = &all[1];
    assert_eq!((key.as_str(), name.as_str()), ("build", "build (a)"));
    let job = only_job(build);
    assert_eq!(
        job["needs"], "lint",
        "the jobparser keeps needs (InsertRun erases them)"
    );
    assert_eq!(job["if"], "${{ always() }}");
    assert_eq!(job["strategy"]["fail-fast"], "false");
    assert_eq!(
        job["strategy"]["matrix"]["os"],
        serde_yaml_ng::from_str::<Value>("[a]").unwrap()
    );
    assert_eq!(job["outputs"]["out"], "${{ steps.s.outputs.v }}");
    assert!(
        job.get("continue-on-error").is_none(),
        "jobparser.Job has no such field"
    );
    assert!(job.get("environment").is_none());
    let step = &job["steps"][0];
    assert_eq!(
        step["with"]["go-version"], "1.21",
        "step with values become strings"
    );
    assert!(step.get("rn").is_none(), "unknown step keys are dropped");
    assert_eq!(step["id"], "s");
}

#[test]
fn payload_text_is_written_like_yaml_v3() {
    let yaml = "on: push\njobs:\n  b:\n    needs: [a]\n    runs-on: linux\n    steps:\n      - name: Build\n        run: |\n          make\n          make test\n      - uses: actions/checkout@v4\n        with:\n          fetch-depth: 0\n  a:\n    runs-on: [x, y]\n    steps:\n      - run: echo ${{ github.sha }}\n";
    let mut out = parse(yaml, &opts()).unwrap();
    let mut b = out.remove(0);
    b.job.needs = None; // InsertRun: SetJob(id, job.EraseNeeds())
    assert_eq!(
        b.marshal(),
        "\"on\": push
jobs:
    b:
        name: b
        runs-on: linux
        steps:
            - name: Build
              run: |
                make
                make test
            - uses: actions/checkout@v4
              with:
                fetch-depth: \"0\"
"
    );
    assert_eq!(
        out[0].marshal(),
        "\"on\": push
jobs:
    a:
        name: a
        runs-on:
            - x
            - \"y\"
        steps:
            - run: echo ${{ github.sha }}
"
    );
}

#[test]
fn workflows_gitea_rejects() {
    for (name, yaml) in [
        ("not yaml", "jobs: ["),
        ("no jobs", "on: push\n"),
        ("null job", "jobs:\n  a:\n"),
        ("job is a string", "jobs:\n  a: hello\n"),
        ("steps not a list", "jobs:\n  a:\n    steps: run\n"),
        ("step continue-on-error expression (a bool field in 1.22–1.25)", "jobs:\n  a:\n    steps:\n      - run: x\n        continue-on-error: ${{ true }}\n"),
        ("step with a mapping value", "jobs:\n  a:\n    steps:\n      - uses: x@v1\n        with:\n          k: {a: 1}\n"),
        ("exclude of an unknown key", "jobs:\n  a:\n    strategy:\n      matrix:\n        os: [x]\n        exclude: [{nope: 1}]\n    steps: [{run: x}]\n"),
        ("include entry not a mapping", "jobs:\n  a:\n    strategy:\n      matrix:\n        include: [x]\n    steps: [{run: x}]\n"),
    ] {
        assert!(parse(yaml, &opts()).is_err(), "{name}");
    }
}

#[test]
fn step_names_are_act_step_string() {
    let yaml = "jobs:\n  a:\n    runs-on: x\n    steps:\n      - name: Named\n        run: x\n      - uses: actions/checkout@v4\n      - run: |\n          cargo clippy\n          echo done\n      - id: only-id\n      - {}\n      -\n";
    let w = parse(yaml, &opts()).unwrap();
    let names: Vec<&str> = w[0].job.steps.iter().map(|s| s.display()).collect();
    assert_eq!(
        names,
        [
            "Named",
            "actions/checkout@v4",
            "cargo clippy\necho done\n",
            "only-id",
            ""
        ],
        "a null step is dropped, an empty one kept"
    );
}
