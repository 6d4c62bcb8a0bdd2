//! Tests of the workflow model, action metadata, matrix expansion and planning.

use kiln_actions::model::*;
use serde_json::{json, Value};

fn parse(text: &str) -> Workflow {
    match Workflow::parse("ci.yml", text) {
        Ok(w) => w,
        Err(e) => panic!("parse failed: {e}"),
    }
}

fn parse_err(text: &str) -> ModelError {
    match Workflow::parse("ci.yml", text) {
        Ok(w) => panic!("expected an error, parsed {w:?}"),
        Err(e) => e,
    }
}

fn map(pairs: &[(&str, &str)]) -> OrderedMap<String> {
    OrderedMap(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const CI: &str = r#"name: CI
run-name: CI for ${{ github.ref_name }}
on:
  push:
    branches: [main, 'release/**']
    paths-ignore:
      - docs/**
  pull_request:
    types: [opened, synchronize]
  workflow_dispatch:
    inputs:
      debug:
        description: Enable debug
        type: boolean
        default: false
permissions:
  contents: read
concurrency:
  group: ci-${{ github.ref }}
  cancel-in-progress: true
env:
  CARGO_TERM_COLOR: always
  RETRIES: 3
defaults:
  run:
    shell: bash
    working-directory: src
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Lint
        run: |
          npm ci
          npm run lint
  test:
    name: Test
    needs: lint
    runs-on: ${{ matrix.os }}
    timeout-minutes: 30
    continue-on-error: ${{ matrix.experimental }}
    strategy:
      fail-fast: false
      max-parallel: 2
      matrix:
        os: [ubuntu-latest, windows-latest]
        node: [18, 20]
        experimental: [false]
        include:
          - os: ubuntu-latest
            node: 22
            experimental: true
    services:
      postgres:
        image: postgres:16
        env:
          POSTGRES_PASSWORD: postgres
        ports:
          - 5432:5432
        options: >-
          --health-cmd pg_isready
          --health-interval 10s
      redis: redis:7
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - id: setup
        uses: actions/setup-node@v4
        with:
          node-version: ${{ matrix.node }}
          cache: npm
      - run: npm test
        env:
          CI: true
        timeout-minutes: 10
        continue-on-error: true
  build:
    needs: [lint]
    runs-on: [self-hosted, linux]
    container:
      image: node:20-bookworm
      credentials:
        username: ${{ github.actor }}
        password: ${{ secrets.GITHUB_TOKEN }}
      env:
        NODE_ENV: production
      volumes:
        - /tmp/cache:/cache
      options: --cpus 1
    outputs:
      version: ${{ steps.ver.outputs.version }}
    environment:
      name: staging
      url: https://staging.example.com
    steps:
      - id: ver
        run: echo "version=1.2.3" >> "$GITHUB_OUTPUT"
  deploy:
    needs: [test, build]
    if: github.ref == 'refs/heads/main'
    uses: ./.github/workflows/deploy.yml
    with:
      version: ${{ needs.build.outputs.version }}
      dry-run: false
      replicas: 2
    secrets: inherit
"#;

#[test]
fn real_world_workflow() {
    let wf = parse(CI);
    assert_eq!(wf.file_name, "ci.yml");
    assert_eq!(wf.name.as_deref(), Some("CI"));
    assert_eq!(
        wf.run_name.as_deref(),
        Some("CI for ${{ github.ref_name }}")
    );
    assert_eq!(
        wf.on.events(),
        strings(&["push", "pull_request", "workflow_dispatch"])
    );
    assert_eq!(
        wf.on.config("push"),
        Some(json!({"branches": ["main", "release/**"], "paths-ignore": ["docs/**"]}))
    );
    assert_eq!(
        wf.on.config("pull_request"),
        Some(json!({"types": ["opened", "synchronize"]}))
    );
    let dispatch = wf.on.workflow_dispatch().unwrap();
    let debug = dispatch.inputs.get("debug").unwrap();
    assert_eq!(debug.description.as_deref(), Some("Enable debug"));
    assert_eq!(debug.input_type.as_deref(), Some("boolean"));
    assert_eq!(debug.default, Some(json!(false)));
    assert_eq!(wf.permissions, Some(json!({"contents": "read"})));
    assert_eq!(
        wf.concurrency,
        Some(json!({"group": "ci-${{ github.ref }}", "cancel-in-progress": true}))
    );
    assert_eq!(
        wf.env,
        map(&[("CARGO_TERM_COLOR", "always"), ("RETRIES", "3")])
    );
    let run = wf.defaults.as_ref().unwrap().run.as_ref().unwrap();
    assert_eq!(run.shell.as_deref(), Some("bash"));
    assert_eq!(run.working_directory.as_deref(), Some("src"));

    assert_eq!(wf.job_ids(), strings(&["lint", "test", "build", "deploy"]));

    let lint = wf.job("lint").unwrap();
    assert_eq!(
        lint.runs_on,
        Some(RunsOn::Labels(strings(&["ubuntu-latest"])))
    );
    assert_eq!(lint.steps.len(), 2);
    assert_eq!(lint.steps[0].uses.as_deref(), Some("actions/checkout@v4"));
    assert_eq!(lint.steps[0].display_name(0), "Run actions/checkout@v4");
    assert_eq!(lint.steps[1].run.as_deref(), Some("npm ci\nnpm run lint\n"));
    assert_eq!(lint.steps[1].display_name(1), "Lint");
    assert!(!lint.is_reusable());

    let test = wf.job("test").unwrap();
    assert_eq!(test.name.as_deref(), Some("Test"));
    assert_eq!(test.needs, strings(&["lint"]));
    assert_eq!(
        test.runs_on,
        Some(RunsOn::Expr("${{ matrix.os }}".to_string()))
    );
    assert_eq!(test.timeout_minutes, Some(NumberOrExpr::Number(30.0)));
    assert_eq!(
        test.continue_on_error,
        Some(BoolOrExpr::Expr("${{ matrix.experimental }}".to_string()))
    );
    let strategy = test.strategy.as_ref().unwrap();
    assert_eq!(strategy.fail_fast, Some(BoolOrExpr::Bool(false)));
    assert_eq!(strategy.max_parallel, Some(NumberOrExpr::Number(2.0)));
    let matrix = test.matrix().unwrap();
    assert_eq!(matrix.key_order(), strings(&["os", "node", "experimental"]));
    assert_eq!(
        matrix.to_value(),
        json!({
            "os": ["ubuntu-latest", "windows-latest"],
            "node": [18, 20],
            "experimental": [false],
            "include": [{"os": "ubuntu-latest", "node": 22, "experimental": true}]
        })
    );
    let combos = matrix.expand_literal().unwrap();
    let combos: Vec<Value> = combos.into_iter().map(Value::Object).collect();
    assert_eq!(
        combos,
        vec![
            json!({"os": "ubuntu-latest", "node": 18, "experimental": false}),
            json!({"os": "ubuntu-latest", "node": 20, "experimental": false}),
            json!({"os": "windows-latest", "node": 18, "experimental": false}),
            json!({"os": "windows-latest", "node": 20, "experimental": false}),
            json!({"os": "ubuntu-latest", "node": 22, "experimental": true}),
        ]
    );
    assert_eq!(
        test.services.keys().collect::<Vec<_>>(),
        vec!["postgres", "redis"]
    );
    let pg = test.services.get("postgres").unwrap();
    assert_eq!(pg.image, "postgres:16");
    assert_eq!(pg.env, map(&[("POSTGRES_PASSWORD", "postgres")]));
    assert_eq!(pg.ports, strings(&["5432:5432"]));
    assert_eq!(
        pg.options.as_deref(),
        Some("--health-cmd pg_isready --health-interval 10s")
    );
    let redis = test.services.get("redis").unwrap();
    assert_eq!(
        redis,
        &Container {
            image: "redis:7".to_string(),
            ..Container::default()
        }
    );
    assert_eq!(test.steps[0].with, map(&[("fetch-depth", "0")]));
    assert_eq!(test.steps[1].id.as_deref(), Some("setup"));
    assert_eq!(
        test.steps[1].with,
        map(&[("node-version", "${{ matrix.node }}"), ("cache", "npm")])
    );
    let npm_test = &test.steps[2];
    assert_eq!(npm_test.env, map(&[("CI", "true")]));
    assert_eq!(npm_test.timeout_minutes, Some(NumberOrExpr::Number(10.0)));
    assert_eq!(npm_test.continue_on_error, Some(BoolOrExpr::Bool(true)));
    assert_eq!(npm_test.display_name(2), "Run npm test");

    let build = wf.job("build").unwrap();
    assert_eq!(
        build.runs_on,
        Some(RunsOn::Labels(strings(&["self-hosted", "linux"])))
    );
    let c = build.container.as_ref().unwrap();
    assert_eq!(c.image, "node:20-bookworm");
    let creds = c.credentials.as_ref().unwrap();
    assert_eq!(creds.username.as_deref(), Some("${{ github.actor }}"));
    assert_eq!(
        creds.password.as_deref(),
        Some("${{ secrets.GITHUB_TOKEN }}")
    );
    assert_eq!(c.env, map(&[("NODE_ENV", "production")]));
    assert_eq!(c.volumes, strings(&["/tmp/cache:/cache"]));
    assert_eq!(c.options.as_deref(), Some("--cpus 1"));
    assert_eq!(
        build.outputs,
        map(&[("version", "${{ steps.ver.outputs.version }}")])
    );
    assert_eq!(
        build.environment,
        Some(Environment {
            name: "staging".to_string(),
            url: Some("https://staging.example.com".to_string())
        })
    );
    assert_eq!(
        build.steps[0].display_name(0),
        "Run echo \"version=1.2.3\" >> \"$GITHUB_OUTPUT\""
    );

    let deploy = wf.job("deploy").unwrap();
    assert!(deploy.is_reusable());
    assert_eq!(
        deploy.uses.as_deref(),
        Some("./.github/workflows/deploy.yml")
    );
    assert_eq!(
        deploy.if_cond.as_deref(),
        Some("github.ref == 'refs/heads/main'")
    );
    assert_eq!(
        deploy.with,
        OrderedMap(vec![
            (
                "version".to_string(),
                json!("${{ needs.build.outputs.version }}")
            ),
            ("dry-run".to_string(), json!(false)),
            ("replicas".to_string(), json!(2)),
        ])
    );
    assert_eq!(deploy.secrets, Some(JobSecrets::Inherit));
    assert!(deploy.steps.is_empty());

    assert_eq!(
        plan(&wf, None).unwrap(),
        vec![
            strings(&["lint"]),
            strings(&["test", "build"]),
            strings(&["deploy"])
        ]
    );
    assert_eq!(
        plan(&wf, Some("test")).unwrap(),
        vec![strings(&["lint"]), strings(&["test"])]
    );
}

const JOBS: &str = "\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n";

#[test]
fn on_as_string() {
    let wf = parse(&format!("on: push{JOBS}"));
    assert_eq!(wf.on.events(), strings(&["push"]));
    assert_eq!(wf.on.config("push"), Some(Value::Null));
    assert_eq!(wf.on.get("push"), Some(&EventConfig::Empty));
    assert_eq!(wf.on.config("pull_request"), None);
    assert!(wf.on.has("push"));
    assert!(!wf.on.has("pull_request"));
}

#[test]
fn on_as_list() {
    let wf = parse(&format!(
        "on: [push, pull_request, workflow_dispatch]{JOBS}"
    ));
    assert_eq!(
        wf.on.events(),
        strings(&["push", "pull_request", "workflow_dispatch"])
    );
    assert_eq!(wf.on.config("workflow_dispatch"), Some(Value::Null));
    assert_eq!(wf.on.workflow_dispatch(), None);
}

#[test]
fn on_as_map_with_null_and_filters() {
    let wf = parse(&format!(
        "on:\n  push:\n    branches: main\n    tags: ['v*']\n    paths: ['src/**']\n  \
         pull_request:\n  release:\n    types: published\n  pull_request_target:\n    \
         branches-ignore: [wip]\n    tags-ignore: [skip]\n  workflow_run:\n    workflows: \
         [CI]\n    types: [completed]\n{JOBS}"
    ));
    assert_eq!(
        wf.on.events(),
        strings(&[
            "push",
            "pull_request",
            "release",
            "pull_request_target",
            "workflow_run"
        ])
    );
    assert_eq!(
        wf.on.config("push"),
        Some(json!({"branches": ["main"], "tags": ["v*"], "paths": ["src/**"]}))
    );
    assert_eq!(wf.on.config("pull_request"), Some(Value::Null));
    assert_eq!(
        wf.on.config("release"),
        Some(json!({"types": ["published"]}))
    );
    assert_eq!(
        wf.on.config("pull_request_target"),
        Some(json!({"branches-ignore": ["wip"], "tags-ignore": ["skip"]}))
    );
    assert_eq!(
        wf.on.config("workflow_run"),
        Some(json!({"workflows": ["CI"], "types": ["completed"]}))
    );
    let push = wf.on.filters("push").unwrap();
    assert_eq!(push.branches, Some(StringList(strings(&["main"]))));
    assert_eq!(push.branches_ignore, None);
}

#[test]
fn on_schedule_dispatch_and_call() {
    let wf = parse(&format!(
        r#"on:
  schedule:
    - cron: '30 5 * * 1,3'
    - cron: '0 0 * * *'
  workflow_dispatch:
    inputs:
      level:
        description: Log level
        required: true
        default: warning
        type: choice
        options: [info, warning, debug]
      dry:
        type: boolean
  workflow_call:
    inputs:
      config-path:
        required: true
        type: string
      retries:
        type: number
        default: 3
    outputs:
      result:
        description: The result
        value: ${{{{ jobs.a.outputs.result }}}}
    secrets:
      token:
        required: true
      other:
{JOBS}"#
    ));
    assert_eq!(
        wf.on.events(),
        strings(&["schedule", "workflow_dispatch", "workflow_call"])
    );
    assert_eq!(wf.on.schedules(), strings(&["30 5 * * 1,3", "0 0 * * *"]));
    assert_eq!(
        wf.on.config("schedule"),
        Some(json!([{"cron": "30 5 * * 1,3"}, {"cron": "0 0 * * *"}]))
    );
    let d = wf.on.workflow_dispatch().unwrap();
    assert_eq!(d.inputs.keys().collect::<Vec<_>>(), vec!["level", "dry"]);
    let level = d.inputs.get("level").unwrap();
    assert_eq!(level.required, Some(true));
    assert_eq!(level.default, Some(json!("warning")));
    assert_eq!(level.input_type.as_deref(), Some("choice"));
    assert_eq!(level.options, Some(strings(&["info", "warning", "debug"])));
    assert_eq!(
        wf.on.config("workflow_dispatch"),
        Some(json!({"inputs": {
            "level": {"description": "Log level", "required": true, "default": "warning",
                      "type": "choice", "options": ["info", "warning", "debug"]},
            "dry": {"type": "boolean"}
        }}))
    );
    let c = wf.on.workflow_call().unwrap();
    assert_eq!(
        c.inputs.keys().collect::<Vec<_>>(),
        vec!["config-path", "retries"]
    );
    assert_eq!(c.inputs.get("retries").unwrap().default, Some(json!(3)));
    assert_eq!(
        c.outputs.get("result").unwrap().value,
        "${{ jobs.a.outputs.result }}"
    );
    assert_eq!(c.secrets.keys().collect::<Vec<_>>(), vec!["token", "other"]);
    assert_eq!(
        c.secrets.get("token").unwrap().as_ref().unwrap().required,
        Some(true)
    );
    assert_eq!(c.secrets.get("other").unwrap(), &None);
    assert_eq!(
        wf.on.config("workflow_call"),
        Some(json!({
            "inputs": {"config-path": {"required": true, "type": "string"},
                       "retries": {"type": "number", "default": 3}},
            "outputs": {"result": {"description": "The result",
                                   "value": "${{ jobs.a.outputs.result }}"}},
            "secrets": {"token": {"required": true}, "other": null}
        }))
    );
}

#[test]
fn workflow_without_on_has_no_events() {
    let wf = parse(JOBS.trim_start());
    assert!(wf.on.events().is_empty());
}

#[test]
fn typed_or_expression_fields() {
    let wf = parse(
        r#"on: push
jobs:
  a:
    runs-on:
      group: big
      labels: [linux, x64]
    needs: []
    if: false
    timeout-minutes: ${{ inputs.timeout }}
    continue-on-error: false
    strategy:
      fail-fast: ${{ inputs.fail-fast }}
      max-parallel: ${{ inputs.parallel }}
      matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}
    environment: production
    container: alpine:3
    steps:
      - run: echo
        timeout-minutes: ${{ matrix.t }}
        continue-on-error: ${{ matrix.allow }}
        if: ${{ always() }}
      - run: echo
        timeout-minutes: 1.5
        continue-on-error: "true"
  b:
    runs-on: [ubuntu-latest, "${{ matrix.arch }}"]
    needs: a
    if: true
    timeout-minutes: "45"
    strategy:
      matrix:
        os: ${{ fromJSON(inputs.oses) }}
        arch: [x64]
        include: ${{ fromJSON(inputs.extra) }}
        exclude:
          - arch: x64
    steps:
      - uses: ./local-action
  c:
    runs-on:
      group: pool
    steps:
      - uses: docker://alpine:3
        if: success()
"#,
    );
    let a = wf.job("a").unwrap();
    assert_eq!(
        a.runs_on,
        Some(RunsOn::Group {
            group: Some("big".to_string()),
            labels: strings(&["linux", "x64"])
        })
    );
    assert_eq!(a.needs, Vec::<String>::new());
    assert_eq!(a.if_cond.as_deref(), Some("false"));
    assert_eq!(
        a.timeout_minutes,
        Some(NumberOrExpr::Expr("${{ inputs.timeout }}".to_string()))
    );
    assert_eq!(a.continue_on_error, Some(BoolOrExpr::Bool(false)));
    let s = a.strategy.as_ref().unwrap();
    assert_eq!(
        s.fail_fast,
        Some(BoolOrExpr::Expr("${{ inputs.fail-fast }}".to_string()))
    );
    assert_eq!(
        s.max_parallel,
        Some(NumberOrExpr::Expr("${{ inputs.parallel }}".to_string()))
    );
    assert_eq!(
        s.matrix,
        Some(Matrix::Expr(
            "${{ fromJSON(needs.setup.outputs.matrix) }}".to_string()
        ))
    );
    assert!(s.matrix.as_ref().unwrap().has_expressions());
    assert_eq!(
        a.environment,
        Some(Environment {
            name: "production".to_string(),
            url: None
        })
    );
    assert_eq!(a.container.as_ref().unwrap().image, "alpine:3");
    assert_eq!(
        a.steps[0].timeout_minutes,
        Some(NumberOrExpr::Expr("${{ matrix.t }}".to_string()))
    );
    assert_eq!(
        a.steps[0].continue_on_error,
        Some(BoolOrExpr::Expr("${{ matrix.allow }}".to_string()))
    );
    assert_eq!(a.steps[0].if_cond.as_deref(), Some("${{ always() }}"));
    assert_eq!(a.steps[1].timeout_minutes, Some(NumberOrExpr::Number(1.5)));
    assert_eq!(a.steps[1].continue_on_error, Some(BoolOrExpr::Bool(true)));

    let b = wf.job("b").unwrap();
    assert_eq!(
        b.runs_on,
        Some(RunsOn::Labels(strings(&[
            "ubuntu-latest",
            "${{ matrix.arch }}"
        ])))
    );
    assert_eq!(b.needs, strings(&["a"]));
    assert_eq!(b.if_cond.as_deref(), Some("true"));
    assert_eq!(b.timeout_minutes, Some(NumberOrExpr::Number(45.0)));
    let m = b.matrix().unwrap();
    assert_eq!(m.key_order(), strings(&["os", "arch"]));
    assert_eq!(
        m,
        &Matrix::Map {
            dimensions: OrderedMap(vec![
                ("os".to_string(), json!("${{ fromJSON(inputs.oses) }}")),
                ("arch".to_string(), json!(["x64"])),
            ]),
            include: Some(json!("${{ fromJSON(inputs.extra) }}")),
            exclude: Some(json!([{"arch": "x64"}])),
        }
    );
    assert_eq!(
        m.expand_literal(),
        Err("the matrix holds expressions: evaluate it first".to_string())
    );
    assert_eq!(b.steps[0].display_name(0), "Run ./local-action");

    let c = wf.job("c").unwrap();
    assert_eq!(
        c.runs_on,
        Some(RunsOn::Group {
            group: Some("pool".to_string()),
            labels: vec![]
        })
    );
    assert_eq!(c.steps[0].if_cond.as_deref(), Some("success()"));
    assert_eq!(
        plan(&wf, None).unwrap(),
        vec![strings(&["a", "c"]), strings(&["b"])]
    );
}

#[test]
fn scalar_values_become_strings() {
    let wf = parse(
        "on: push\nenv:\n  N: 1\n  F: 1.5\n  B: true\n  E:\n  S: 'x'\n  Q: \"007\"\njobs:\n  a:\n    \
         runs-on: x\n    outputs:\n      o: 2\n    steps:\n      - uses: a/b@v1\n        with:\n          \
         n: 10\n          b: false\n          z: ~\n        env:\n          X: -3\n",
    );
    assert_eq!(
        wf.env,
        map(&[
            ("N", "1"),
            ("F", "1.5"),
            ("B", "true"),
            ("E", ""),
            ("S", "x"),
            ("Q", "007")
        ])
    );
    let a = wf.job("a").unwrap();
    assert_eq!(a.outputs, map(&[("o", "2")]));
    assert_eq!(
        a.steps[0].with,
        map(&[("n", "10"), ("b", "false"), ("z", "")])
    );
    assert_eq!(a.steps[0].env, map(&[("X", "-3")]));
}

#[test]
fn secrets_map_and_permissions_forms() {
    let wf = parse(
        "on: push\npermissions: read-all\nconcurrency: ci\njobs:\n  call:\n    uses: org/repo/.github/workflows/w.yml@v1\n    \
         permissions: {}\n    concurrency:\n      group: g\n    secrets:\n      token: ${{ secrets.T }}\n",
    );
    assert_eq!(wf.permissions, Some(json!("read-all")));
    assert_eq!(wf.concurrency, Some(json!("ci")));
    let call = wf.job("call").unwrap();
    assert_eq!(call.permissions, Some(json!({})));
    assert_eq!(call.concurrency, Some(json!({"group": "g"})));
    assert_eq!(
        call.secrets,
        Some(JobSecrets::Map(map(&[("token", "${{ secrets.T }}")])))
    );
    assert!(call.is_reusable());
}

#[test]
fn step_display_names() {
    let step = |yaml: &str| -> Step {
        let wf = parse(&format!(
            "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - {yaml}\n"
        ));
        wf.job("a").unwrap().steps[0].clone()
    };
    assert_eq!(
        step("run: |\n\n          make\n          make test").display_name(0),
        "Run make"
    );
    assert_eq!(
        step("name: Build ${{ matrix.os }}\n        run: make").display_name(3),
        "Build ${{ matrix.os }}"
    );
    assert_eq!(
        step("name: Build ${{ matrix.os }}\n        run: make")
            .name
            .as_deref(),
        Some("Build ${{ matrix.os }}")
    );
    assert_eq!(
        step("uses: actions/cache@v4").display_name(0),
        "Run actions/cache@v4"
    );
    assert_eq!(Step::default().display_name(4), "Step 5");
}

// ---------------------------------------------------------------------------------------------
// errors

#[test]
fn error_unknown_step_key() {
    let text = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n      - rn: echo hi\n";
    let e = parse_err(text);
    assert_eq!(e.file, "ci.yml");
    assert_eq!(e.line, Some(7));
    assert_eq!(e.column, Some(9));
    assert_eq!(e.path, "jobs.build.steps[1]");
    assert!(
        e.message
            .starts_with("unknown field `rn`, expected one of `id`, `name`"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("ci.yml:7:9: jobs.build.steps[1]: unknown field `rn`, expected one of"),
        "{e}"
    );
}

#[test]
fn error_wrong_type_for_timeout_minutes() {
    let text = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    timeout-minutes: soon\n    steps:\n      - run: echo\n";
    let e = parse_err(text);
    assert_eq!(
        e.to_string(),
        "ci.yml:5:22: jobs.build.timeout-minutes: invalid value: string \"soon\", expected a number or an expression"
    );
    let text = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n        timeout-minutes: [1]\n";
    let e = parse_err(text);
    assert_eq!(
        e.to_string(),
        "ci.yml:7:26: jobs.build.steps[0].timeout-minutes: invalid type: sequence, expected a number or an expression"
    );
}

#[test]
fn error_wrong_type_for_continue_on_error() {
    let text = "on: push\njobs:\n  build:\n    runs-on: x\n    continue-on-error: maybe\n    steps:\n      - run: echo\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:5:24: jobs.build.continue-on-error: invalid value: string \"maybe\", expected a boolean or an expression"
    );
}

#[test]
fn error_tab_indented_yaml() {
    let text = "on: push\njobs:\n  build:\n\truns-on: ubuntu-latest\n";
    let e = parse_err(text);
    assert_eq!(e.file, "ci.yml");
    assert_eq!(e.line, Some(4));
    assert_eq!(e.path, "jobs.build");
    assert!(
        e.to_string()
            .starts_with("ci.yml:4:1: jobs.build: found character that cannot start any token"),
        "{e}"
    );
}

#[test]
fn error_bad_indentation() {
    let text = "on: push\njobs:\n  build:\n    runs-on: x\n   steps:\n      - run: echo\n";
    let e = parse_err(text);
    assert_eq!((e.line, e.column), (Some(5), Some(4)));
    assert_eq!(e.path, "jobs");
    assert!(e.message.starts_with("did not find expected key"), "{e}");
}

#[test]
fn error_step_with_run_and_uses() {
    let text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - run: echo\n      - run: echo\n        uses: actions/checkout@v4\n";
    let e = parse_err(text);
    assert_eq!(
        e.to_string(),
        "ci.yml:7:9: jobs.build.steps[1]: a step cannot have both `run` and `uses`"
    );
}

#[test]
fn error_step_without_run_or_uses() {
    let text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - name: nothing\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:6:9: jobs.build.steps[0]: a step must have `run` or `uses`"
    );
}

#[test]
fn error_needs_unknown_job() {
    let text = "on: push\njobs:\n  lint:\n    runs-on: x\n    steps:\n      - run: echo\n  build:\n    runs-on: x\n    needs: [lint, tests]\n    steps:\n      - run: echo\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:9:5: jobs.build.needs: job `build` needs `tests`, which is not a job of this workflow"
    );
}

#[test]
fn error_cyclic_needs() {
    let text = "on: push\njobs:\n  a:\n    needs: c\n    steps:\n      - run: echo\n  b:\n    needs: a\n    steps:\n      - run: echo\n  c:\n    needs: [b]\n    steps:\n      - run: echo\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:4:5: jobs.a.needs: jobs form a cycle in `needs`: a -> c -> b -> a"
    );
    let text = "on: push\njobs:\n  self:\n    needs: self\n    steps:\n      - run: echo\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:4:5: jobs.self.needs: jobs form a cycle in `needs`: self -> self"
    );
}

#[test]
fn error_no_jobs() {
    assert_eq!(
        parse_err("on: push\njobs: {}\n").to_string(),
        "ci.yml:2:1: jobs: the workflow has no jobs"
    );
    assert_eq!(
        parse_err("on: push\n").to_string(),
        "ci.yml: jobs: the workflow has no jobs"
    );
    assert_eq!(
        parse_err("").to_string(),
        "ci.yml: the workflow file is empty"
    );
}

#[test]
fn error_invalid_job_id() {
    let text = "on: push\njobs:\n  ok_job-1:\n    runs-on: x\n    steps:\n      - run: echo\n  1bad:\n    runs-on: x\n    steps:\n      - run: echo\n";
    let e = parse_err(text);
    assert_eq!(e.line, Some(7));
    assert_eq!(e.path, "jobs.1bad");
    assert!(e.message.starts_with("invalid job id `1bad`"), "{e}");
    let text = "on: push\njobs:\n  \"has space\":\n    runs-on: x\n    steps:\n      - run: echo\n";
    let e = parse_err(text);
    assert_eq!(e.line, Some(3));
    assert!(e.message.starts_with("invalid job id `has space`"), "{e}");
}

#[test]
fn error_duplicate_step_id() {
    let text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - id: s\n        run: echo\n      - run: echo\n      - id: s\n        run: echo\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:9:9: jobs.build.steps[2]: job `build`: step id `s` is used by more than one step"
    );
}

#[test]
fn error_job_with_uses_and_steps() {
    let text = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/x.yml\n    steps:\n      - run: echo\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:3:3: jobs.call: job `call` has both `uses` and `steps`: a job calling a reusable workflow cannot have steps"
    );
}

#[test]
fn error_unknown_keys_elsewhere() {
    let e = parse_err("on: push\nnmae: x\njobs:\n  a:\n    steps:\n      - run: echo\n");
    assert_eq!((e.line, e.column, e.path.as_str()), (Some(2), Some(1), ""));
    assert!(e.message.starts_with("unknown field `nmae`"), "{e}");

    let e = parse_err(
        "on:\n  push:\n    branchez: [main]\njobs:\n  a:\n    steps:\n      - run: echo\n",
    );
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (Some(3), Some(5), "on.push")
    );
    assert!(e.message.starts_with("unknown field `branchez`"), "{e}");

    let e = parse_err(
        "on: push\njobs:\n  a:\n    runs-on: x\n    services:\n      db:\n        image: pg\n        port: [1]\n    steps:\n      - run: echo\n",
    );
    assert_eq!((e.line, e.path.as_str()), (Some(8), "jobs.a.services.db"));
    assert!(e.message.starts_with("unknown field `port`"), "{e}");

    let e = parse_err(
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      fail_fast: true\n    steps:\n      - run: echo\n",
    );
    assert_eq!((e.line, e.path.as_str()), (Some(6), "jobs.a.strategy"));

    let e = parse_err(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n        env:\n          A: [1]\n",
    );
    assert_eq!(
        e.to_string(),
        "ci.yml:8:14: jobs.a.steps[0].env.A: invalid type: sequence, expected a string, number, boolean or null"
    );

    let e = parse_err(
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        os: ubuntu\n    steps:\n      - run: echo\n",
    );
    assert_eq!(e.path, "jobs.a.strategy.matrix");
    assert_eq!(
        e.message,
        "matrix `os` must be a list of values or an expression"
    );

    let e =
        parse_err("on: push\nenv:\n  A: 1\n  A: 2\njobs:\n  a:\n    steps:\n      - run: echo\n");
    assert_eq!(e.path, "env");
    assert_eq!(e.message, "duplicate key `A`");
}

// ---------------------------------------------------------------------------------------------
// action.yml

#[test]
fn action_node() {
    let a = Action::parse(
        "action.yml",
        r#"name: Setup thing
description: Sets up the thing
author: Someone
branding:
  icon: box
  color: blue
x-custom: ignored
inputs:
  version:
    description: Version
    required: true
    default: 20
  token:
    required: 'false'
    default: ${{ github.token }}
    deprecationMessage: not needed
outputs:
  path:
    description: Install path
runs:
  using: node20
  main: dist/index.js
  pre: dist/pre.js
  pre-if: runner.os == 'Linux'
  post: dist/post.js
  post-if: success()
"#,
    )
    .unwrap();
    assert_eq!(a.file_name, "action.yml");
    assert_eq!(a.name.as_deref(), Some("Setup thing"));
    assert_eq!(a.description.as_deref(), Some("Sets up the thing"));
    assert_eq!(a.author.as_deref(), Some("Someone"));
    assert_eq!(
        a.inputs.keys().collect::<Vec<_>>(),
        vec!["version", "token"]
    );
    assert_eq!(
        a.inputs.get("version").unwrap(),
        &ActionInput {
            description: Some("Version".to_string()),
            required: true,
            default: Some("20".to_string()),
            deprecation_message: None,
        }
    );
    let token = a.inputs.get("token").unwrap();
    assert!(!token.required);
    assert_eq!(token.default.as_deref(), Some("${{ github.token }}"));
    assert_eq!(token.deprecation_message.as_deref(), Some("not needed"));
    assert_eq!(
        a.outputs.get("path").unwrap(),
        &ActionOutput {
            description: Some("Install path".to_string()),
            value: None
        }
    );
    assert_eq!(a.runs.using(), "node20");
    assert_eq!(
        a.runs,
        Runs::Node {
            using: "node20".to_string(),
            main: "dist/index.js".to_string(),
            pre: Some("dist/pre.js".to_string()),
            post: Some("dist/post.js".to_string()),
            pre_if: Some("runner.os == 'Linux'".to_string()),
            post_if: Some("success()".to_string()),
        }
    );
    for v in ["node12", "node16", "node24", "Node20"] {
        let a = Action::parse(
            "action.yml",
            &format!("runs:\n  using: {v}\n  main: i.js\n"),
        )
        .unwrap();
        assert_eq!(a.runs.using(), v.to_ascii_lowercase());
    }
}

#[test]
fn action_composite() {
    let a = Action::parse(
        "action.yaml",
        r#"name: Composite
inputs:
  who:
    default: world
outputs:
  greeting:
    description: The greeting
    value: ${{ steps.greet.outputs.greeting }}
runs:
  using: composite
  steps:
    - id: greet
      run: echo "greeting=hello ${{ inputs.who }}" >> "$GITHUB_OUTPUT"
      shell: bash
      env:
        LEVEL: 3
    - uses: actions/cache@v4
      with:
        path: ~/.cache
      if: ${{ inputs.who != '' }}
"#,
    )
    .unwrap();
    assert_eq!(
        a.outputs.get("greeting").unwrap().value.as_deref(),
        Some("${{ steps.greet.outputs.greeting }}")
    );
    let Runs::Composite { steps } = &a.runs else {
        panic!("not composite: {:?}", a.runs)
    };
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].id.as_deref(), Some("greet"));
    assert_eq!(steps[0].shell.as_deref(), Some("bash"));
    assert_eq!(steps[0].env, map(&[("LEVEL", "3")]));
    assert_eq!(steps[1].uses.as_deref(), Some("actions/cache@v4"));
    assert_eq!(steps[1].with, map(&[("path", "~/.cache")]));
    assert_eq!(a.runs.using(), "composite");
}

#[test]
fn action_composite_run_step_needs_shell() {
    let e = Action::parse(
        "action.yml",
        "name: x\nruns:\n  using: composite\n  steps:\n    - uses: a/b@v1\n    - run: echo hi\n",
    )
    .unwrap_err();
    assert_eq!(e.file, "action.yml");
    assert_eq!((e.line, e.column), (Some(2), Some(1)));
    assert_eq!(e.path, "runs");
    assert_eq!(
        e.message,
        "steps[1]: `shell` is required for `run` steps of a composite action"
    );
}

#[test]
fn action_docker() {
    let a = Action::parse(
        "action.yml",
        r#"name: Docker
runs:
  using: docker
  image: Dockerfile
  entrypoint: /entry.sh
  pre-entrypoint: /pre.sh
  post-entrypoint: /post.sh
  args:
    - ${{ inputs.who }}
    - 42
  env:
    DEBUG: true
"#,
    )
    .unwrap();
    assert_eq!(
        a.runs,
        Runs::Docker {
            image: "Dockerfile".to_string(),
            entrypoint: Some("/entry.sh".to_string()),
            args: strings(&["${{ inputs.who }}", "42"]),
            env: map(&[("DEBUG", "true")]),
            pre_entrypoint: Some("/pre.sh".to_string()),
            post_entrypoint: Some("/post.sh".to_string()),
            pre_if: None,
            post_if: None,
        }
    );
    let a = Action::parse(
        "action.yml",
        "runs:\n  using: docker\n  image: docker://alpine:3\n",
    )
    .unwrap();
    assert_eq!(
        a.runs,
        Runs::Docker {
            image: "docker://alpine:3".to_string(),
            entrypoint: None,
            args: vec![],
            env: OrderedMap::new(),
            pre_entrypoint: None,
            post_entrypoint: None,
            pre_if: None,
            post_if: None,
        }
    );
}

#[test]
fn action_errors() {
    let err = |text: &str| Action::parse("action.yml", text).unwrap_err().to_string();
    assert!(
        err("name: x\nruns:\n  using: node20\n  main: i.js\n  mian: j.js\n")
            .starts_with("action.yml:5:3: runs: unknown field `mian`, expected one of"),
        "{}",
        err("name: x\nruns:\n  using: node20\n  main: i.js\n  mian: j.js\n")
    );
    assert_eq!(
        err("runs:\n  using: node20\n"),
        "action.yml:1:1: runs: `main` is required with `using: node20`"
    );
    assert_eq!(
        err("runs:\n  using: docker\n  main: x\n"),
        "action.yml:1:1: runs: `main` cannot be used with `using: docker`"
    );
    assert_eq!(
        err("runs:\n  using: docker\n"),
        "action.yml:1:1: runs: `image` is required with `using: docker`"
    );
    assert_eq!(
        err("runs:\n  using: node20\n  main: a\n  image: b\n  args: [c]\n"),
        "action.yml:1:1: runs: `image`, `args` cannot be used with `using: node20`"
    );
    assert_eq!(
        err("runs:\n  using: python\n"),
        "action.yml:1:1: runs: unknown `using: python`, expected one of node12, node16, node20, node24, composite, docker"
    );
    assert_eq!(
        err("runs:\n  using: composite\n"),
        "action.yml:1:1: runs: `steps` is required with `using: composite`"
    );
    assert_eq!(err("name: x\n"), "action.yml:1:1: missing field `runs`");
    assert!(
        err("runs:\n  using: composite\n  steps:\n    - run: x\n      shell: bash\n      uses: a/b@v1\n")
            .starts_with("action.yml:4:7: runs.steps[0]: a step cannot have both `run` and `uses`"),
    );
}

// ---------------------------------------------------------------------------------------------
// matrix expansion

fn expand(matrix: Value, order: &[&str]) -> Vec<Value> {
    expand_matrix(&matrix, &strings(order))
        .unwrap()
        .into_iter()
        .map(Value::Object)
        .collect()
}

#[test]
fn matrix_docs_order_of_combinations() {
    // "The order of the variables in the matrix determines the order in which the jobs are
    // created": version first, then os (not sorted).
    assert_eq!(
        expand(
            json!({"version": [10, 12, 14], "os": ["ubuntu-latest", "windows-latest"]}),
            &["version", "os"]
        ),
        vec![
            json!({"version": 10, "os": "ubuntu-latest"}),
            json!({"version": 10, "os": "windows-latest"}),
            json!({"version": 12, "os": "ubuntu-latest"}),
            json!({"version": 12, "os": "windows-latest"}),
            json!({"version": 14, "os": "ubuntu-latest"}),
            json!({"version": 14, "os": "windows-latest"}),
        ]
    );
}

#[test]
fn matrix_docs_single_dimension() {
    assert_eq!(
        expand(json!({"version": [10, 12, 14]}), &["version"]),
        vec![
            json!({"version": 10}),
            json!({"version": 12}),
            json!({"version": 14})
        ]
    );
}

#[test]
fn matrix_docs_objects_as_values() {
    let m = json!({
        "os": ["ubuntu-latest", "macos-latest"],
        "node": [{"version": 14}, {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"}]
    });
    assert_eq!(
        expand(m, &["os", "node"]),
        vec![
            json!({"os": "ubuntu-latest", "node": {"version": 14}}),
            json!({"os": "ubuntu-latest", "node": {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"}}),
            json!({"os": "macos-latest", "node": {"version": 14}}),
            json!({"os": "macos-latest", "node": {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"}}),
        ]
    );
}

#[test]
fn matrix_docs_include_fruit_example() {
    let m = json!({
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"}
        ]
    });
    assert_eq!(
        expand(m, &["fruit", "animal"]),
        vec![
            json!({"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"}),
            json!({"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"}),
            json!({"fruit": "pear", "animal": "cat", "color": "pink"}),
            json!({"fruit": "pear", "animal": "dog", "color": "green"}),
            json!({"fruit": "banana"}),
            json!({"fruit": "banana", "animal": "cat"}),
        ]
    );
}

#[test]
fn matrix_docs_expanding_configurations() {
    let m = json!({
        "os": ["windows-latest", "ubuntu-latest"],
        "node": [14, 16],
        "include": [{"os": "windows-latest", "node": 16, "npm": 6}]
    });
    assert_eq!(
        expand(m, &["os", "node"]),
        vec![
            json!({"os": "windows-latest", "node": 14}),
            json!({"os": "windows-latest", "node": 16, "npm": 6}),
            json!({"os": "ubuntu-latest", "node": 14}),
            json!({"os": "ubuntu-latest", "node": 16}),
        ]
    );
}

#[test]
fn matrix_docs_adding_configurations() {
    let m = json!({
        "os": ["windows-latest", "ubuntu-latest"],
        "version": [12, 14, 16],
        "include": [{"os": "windows-latest", "version": 17}]
    });
    let got = expand(m, &["os", "version"]);
    assert_eq!(got.len(), 7);
    assert_eq!(got[6], json!({"os": "windows-latest", "version": 17}));
    assert_eq!(got[0], json!({"os": "windows-latest", "version": 12}));
    assert_eq!(got[5], json!({"os": "ubuntu-latest", "version": 16}));
}

#[test]
fn matrix_docs_only_include() {
    let m = json!({"include": [
        {"site": "production", "datacenter": "site-a"},
        {"site": "staging", "datacenter": "site-b"}
    ]});
    assert_eq!(
        expand(m, &[]),
        vec![
            json!({"site": "production", "datacenter": "site-a"}),
            json!({"site": "staging", "datacenter": "site-b"}),
        ]
    );
}

#[test]
fn matrix_docs_exclude() {
    let m = json!({
        "os": ["macos-latest", "windows-latest"],
        "version": [12, 14, 16],
        "environment": ["staging", "production"],
        "exclude": [
            {"os": "macos-latest", "version": 12, "environment": "production"},
            {"os": "windows-latest", "version": 16}
        ]
    });
    assert_eq!(
        expand(m, &["os", "version", "environment"]),
        vec![
            json!({"os": "macos-latest", "version": 12, "environment": "staging"}),
            json!({"os": "macos-latest", "version": 14, "environment": "staging"}),
            json!({"os": "macos-latest", "version": 14, "environment": "production"}),
            json!({"os": "macos-latest", "version": 16, "environment": "staging"}),
            json!({"os": "macos-latest", "version": 16, "environment": "production"}),
            json!({"os": "windows-latest", "version": 12, "environment": "staging"}),
            json!({"os": "windows-latest", "version": 12, "environment": "production"}),
            json!({"os": "windows-latest", "version": 14, "environment": "staging"}),
            json!({"os": "windows-latest", "version": 14, "environment": "production"}),
        ]
    );
}

#[test]
fn matrix_edge_cases() {
    // No matrix: one empty combination.
    assert_eq!(expand(Value::Null, &[]), vec![json!({})]);
    assert_eq!(expand(json!({}), &[]), vec![json!({})]);
    // Keys missing from the order come after it, sorted.
    assert_eq!(
        expand(json!({"b": [1], "a": [2], "c": [3, 4]}), &["c"]),
        vec![
            json!({"a": 2, "b": 1, "c": 3}),
            json!({"a": 2, "b": 1, "c": 4})
        ]
    );
    // Include adds back an excluded combination, as a combination of its own.
    assert_eq!(
        expand(
            json!({"os": ["a", "b"], "exclude": [{"os": "b"}], "include": [{"os": "b", "x": 1}]}),
            &["os"]
        ),
        vec![json!({"os": "a"}), json!({"os": "b", "x": 1})]
    );
    // Exclude with nested objects compares whole values.
    assert_eq!(
        expand(
            json!({"cfg": [{"v": 1}, {"v": 2, "w": 3}], "exclude": [{"cfg": {"v": 2, "w": 3}}, {"cfg": {"v": 1, "w": 0}}]}),
            &["cfg"]
        ),
        vec![json!({"cfg": {"v": 1}})]
    );
    // Later includes overwrite values added by earlier includes, never original values.
    assert_eq!(
        expand(
            json!({"os": ["a", "b"], "include": [{"x": 1}, {"os": "a", "x": 2}, {"os": "c", "x": 3}]}),
            &["os"]
        ),
        vec![
            json!({"os": "a", "x": 2}),
            json!({"os": "b", "x": 1}),
            json!({"os": "c", "x": 3}),
        ]
    );
    // Values are compared as JSON: the number 1 is not the string "1".
    assert_eq!(
        expand(
            json!({"v": [1, 2], "include": [{"v": "1", "s": true}]}),
            &["v"]
        ),
        vec![
            json!({"v": 1}),
            json!({"v": 2}),
            json!({"v": "1", "s": true})
        ]
    );
    // Everything excluded, no include: no combination.
    assert_eq!(
        expand(json!({"v": [1], "exclude": [{"v": 1}]}), &["v"]),
        Vec::<Value>::new()
    );
    // An empty include list and an empty exclude list change nothing.
    assert_eq!(
        expand(json!({"v": [1], "include": [], "exclude": []}), &["v"]),
        vec![json!({"v": 1})]
    );
}

#[test]
fn matrix_errors() {
    let e = |m: Value| expand_matrix(&m, &[]).unwrap_err();
    assert_eq!(e(json!("x")), "the matrix must be a map, found a string");
    assert_eq!(
        e(json!({"os": "linux"})),
        "matrix `os` must be a list of values, found a string"
    );
    assert_eq!(e(json!({"os": []})), "matrix `os` has no values");
    assert_eq!(
        e(json!({"os": ["a"], "exclude": [{"arch": "x"}]})),
        "matrix exclude key `arch` does not match any key of the matrix"
    );
    assert_eq!(
        e(json!({"os": ["a"], "include": [1]})),
        "matrix `include` entries must be maps, found a number"
    );
    assert_eq!(
        e(json!({"os": ["a"], "include": {"a": 1}})),
        "matrix `include` must be a list of maps, found a map"
    );
}

#[test]
fn matrix_job_names() {
    let order = strings(&["os", "node"]);
    let combo = |v: Value| v.as_object().unwrap().clone();
    let c = combo(json!({"os": "ubuntu-latest", "node": 20}));
    assert_eq!(
        job_display_name("test", None, &c, &order),
        "test (ubuntu-latest, 20)"
    );
    assert_eq!(
        job_display_name("test", Some("Test"), &c, &order),
        "Test (ubuntu-latest, 20)"
    );
    assert_eq!(
        job_display_name("test", Some("Test on ${{ matrix.os }}"), &c, &order),
        "Test on ${{ matrix.os }}"
    );
    assert_eq!(
        job_display_name("test", None, &combo(json!({})), &order),
        "test"
    );
    let c = combo(json!({"os": "win", "node": {"v": 1}, "extra": true, "a": null}));
    assert_eq!(
        job_display_name("t", None, &c, &order),
        "t (win, {\"v\":1}, null, true)"
    );
}

// ---------------------------------------------------------------------------------------------
// planning and loading

const DIAMOND: &str = "on: push
jobs:
  d:
    needs: [b, c]
    runs-on: x
    steps:
      - run: echo
  a:
    runs-on: x
    steps:
      - run: echo
  c:
    needs: a
    runs-on: x
    steps:
      - run: echo
  b:
    needs: a
    runs-on: x
    steps:
      - run: echo
  e:
    runs-on: x
    steps:
      - run: echo
";

#[test]
fn plan_stages_and_filter() {
    let wf = parse(DIAMOND);
    assert_eq!(
        plan(&wf, None).unwrap(),
        vec![strings(&["a", "e"]), strings(&["c", "b"]), strings(&["d"])]
    );
    assert_eq!(
        plan(&wf, Some("d")).unwrap(),
        vec![strings(&["a"]), strings(&["c", "b"]), strings(&["d"])]
    );
    assert_eq!(
        plan(&wf, Some("b")).unwrap(),
        vec![strings(&["a"]), strings(&["b"])]
    );
    assert_eq!(plan(&wf, Some("e")).unwrap(), vec![strings(&["e"])]);
    assert_eq!(
        plan(&wf, Some("zz")).unwrap_err().to_string(),
        "ci.yml: jobs: no job `zz` in this workflow"
    );
}

#[test]
fn plan_reports_cycles_and_unknown_needs() {
    let mut wf = parse(DIAMOND);
    // Make a cycle a -> d -> b -> a by hand (parsing would refuse it).
    for (id, job) in wf.jobs.0.iter_mut() {
        if id == "a" {
            job.needs = strings(&["d"]);
        }
    }
    assert_eq!(
        plan(&wf, None).unwrap_err().to_string(),
        "ci.yml: jobs.d.needs: jobs form a cycle in `needs`: d -> b -> a -> d"
    );
    // A filter outside the cycle still plans.
    assert_eq!(plan(&wf, Some("e")).unwrap(), vec![strings(&["e"])]);
    for (id, job) in wf.jobs.0.iter_mut() {
        if id == "a" {
            job.needs = strings(&["nope"]);
        }
    }
    assert_eq!(
        plan(&wf, None).unwrap_err().to_string(),
        "ci.yml: jobs.a.needs: job `a` needs `nope`, which is not a job of this workflow"
    );
}

#[test]
fn find_dir_and_load_workflows() {
    let root = tempfile::tempdir().unwrap();
    assert_eq!(Workflow::find_dir(root.path()), None);
    std::fs::create_dir_all(root.path().join(".github/workflows")).unwrap();
    assert_eq!(
        Workflow::find_dir(root.path()),
        Some(root.path().join(".github/workflows"))
    );
    let dir = root.path().join(".gitea/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(Workflow::find_dir(root.path()), Some(dir.clone()));

    let wf = |name: &str| {
        format!(
            "name: {name}\non: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n"
        )
    };
    std::fs::write(dir.join("b.yaml"), wf("B")).unwrap();
    std::fs::write(dir.join("a.yml"), wf("A")).unwrap();
    std::fs::write(dir.join("c.yml"), wf("C")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
    std::fs::create_dir(dir.join("sub.yml")).unwrap();
    let loaded = load_workflows(&dir).unwrap();
    let names: Vec<_> = loaded.iter().map(|w| w.name.clone().unwrap()).collect();
    assert_eq!(names, strings(&["A", "B", "C"]));
    assert_eq!(
        loaded[1].file_name,
        dir.join("b.yaml").display().to_string()
    );

    std::fs::write(
        dir.join("d.yml"),
        "on: push\njobs:\n  a:\n    steps:\n      - rn: x\n",
    )
    .unwrap();
    let e = load_workflows(&dir).unwrap_err();
    assert_eq!(e.file, dir.join("d.yml").display().to_string());
    assert_eq!((e.line, e.path.as_str()), (Some(5), "jobs.a.steps[0]"));
}

#[test]
fn error_locations_with_unindented_lists_and_flow_style() {
    let text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n    - run: a\n    - name: b\n      run: b\n      uses: c/d@v1\n";
    assert_eq!(
        parse_err(text).to_string(),
        "ci.yml:7:7: jobs.build.steps[1]: a step cannot have both `run` and `uses`"
    );
    // Flow style: the location serde_yaml_ng gives is kept.
    let text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps: [{run: a, uses: b}]\n";
    let e = parse_err(text);
    assert_eq!(e.path, "jobs.build.steps[0]");
    assert_eq!(e.line, Some(5));
    assert_eq!(e.message, "a step cannot have both `run` and `uses`");
}

#[test]
fn mangled_files_give_errors_not_panics() {
    // Every truncation, and a character dropped or a tab/indent inserted at many places: the
    // parser returns (Ok or Err) and the error locator never panics.
    let chars: Vec<char> = CI.chars().collect();
    let mut errors = 0;
    for i in (0..chars.len()).step_by(5) {
        let truncated: String = chars[..i].iter().collect();
        let dropped: String = chars[..i].iter().chain(&chars[i + 1..]).collect();
        let tabbed: String = chars[..i]
            .iter()
            .chain(['\t'].iter())
            .chain(&chars[i..])
            .collect();
        let spaced: String = chars[..i]
            .iter()
            .chain([' '].iter())
            .chain(&chars[i..])
            .collect();
        for text in [truncated, dropped, tabbed, spaced] {
            if let Err(e) = Workflow::parse("ci.yml", &text) {
                assert_eq!(e.file, "ci.yml");
                errors += 1;
            }
        }
    }
    assert!(errors > 100, "{errors}");
}
