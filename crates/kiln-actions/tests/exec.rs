//! End-to-end workflow runs through the executor: real processes, real files, a real git server for
//! remote actions.

use std::path::Path;
use std::time::Duration;

mod common;

use common::{have_node, Fixture};
use kiln_actions::exec::Outcome;
use kiln_actions::model::Workflow;

#[tokio::test]
async fn env_outputs_and_needs() {
    let f = Fixture::new();
    let run = f
        .run(
            r#"
on: push
env: { LEVEL: workflow, WF_ONLY: w }
jobs:
  first:
    runs-on: ubuntu-latest
    env: { LEVEL: job }
    outputs:
      single: ${{ steps.out.outputs.single }}
      multi: ${{ steps.out.outputs.multi }}
    steps:
      - id: out
        env: { LEVEL: step }
        run: |
          echo "level=$LEVEL wf=$WF_ONLY ci=$CI actions=$GITHUB_ACTIONS gitea=$GITEA_ACTIONS"
          echo "single=one" >> "$GITHUB_OUTPUT"
          { echo "multi<<EOF"; echo "line 1"; echo "line 2"; echo "EOF"; } >> "$GITHUB_OUTPUT"
          echo "FROM_ENV_FILE=set" >> "$GITHUB_ENV"
      - run: echo "after level=$LEVEL file=$FROM_ENV_FILE out=${{ steps.out.outputs.single }} ws=${{ github.workspace != '' && env.GITHUB_WORKSPACE == '' }}"
      - run: echo "ctx ${{ env.FROM_ENV_FILE }} ${{ gitea.event_name }} ${{ github.job }} ${{ runner.os }}"
  second:
    needs: first
    runs-on: ubuntu-latest
    steps:
      - run: echo "got ${{ needs.first.outputs.single }} / ${{ needs.first.result }}"
      - env: { MULTI: "${{ needs.first.outputs.multi }}" }
        run: printf '%s\n' "$MULTI" | wc -l | sed 's/^ */lines=/'
"#,
        )
        .await;
    assert!(run.summary.as_ref().unwrap().success, "{}", run.log());
    assert!(
        run.has("first|level=step wf=w ci=true actions=true gitea=true"),
        "{}",
        run.log()
    );
    assert!(
        run.has("first|after level=job file=set out=one ws=true"),
        "{}",
        run.log()
    );
    assert!(run.has("first|ctx set push first Linux"), "{}", run.log());
    assert_eq!(run.outputs("first")["multi"], "line 1\nline 2");
    assert!(run.has("second|got one / success"), "{}", run.log());
    assert!(run.has("second|lines=2"), "{}", run.log());
}

#[tokio::test]
async fn status_functions_and_continue_on_error() {
    let f = Fixture::new();
    let run = f
        .run(
            r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: soft
        run: exit 4
        continue-on-error: true
      - run: echo "soft outcome=${{ steps.soft.outcome }} conclusion=${{ steps.soft.conclusion }} status=${{ job.status }}"
      - id: hard
        run: exit 1
      - run: echo should not run
      - if: failure()
        run: echo "failure handler ${{ steps.hard.outcome }}"
      - if: always()
        run: echo always ran
      - if: success()
        run: echo success should not run
      - if: ${{ cancelled() }}
        run: echo cancelled should not run
  dependent:
    needs: j
    runs-on: x
    steps:
      - run: echo dependent should not run
  cleanup:
    needs: j
    if: always()
    runs-on: x
    steps:
      - run: echo "cleanup sees ${{ needs.j.result }}"
  on-failure:
    needs: j
    if: failure()
    runs-on: x
    steps:
      - run: echo on-failure ran
"#,
        )
        .await;
    let s = Outcome::Success;
    let fl = Outcome::Failure;
    let sk = Outcome::Skipped;
    assert_eq!(
        run.steps("j"),
        vec![
            (0, fl, s),
            (1, s, s),
            (2, fl, fl),
            (3, sk, sk),
            (4, s, s),
            (5, s, s),
            (6, sk, sk),
            (7, sk, sk)
        ],
        "{}",
        run.log()
    );
    assert!(
        run.has("soft outcome=failure conclusion=success status=success"),
        "{}",
        run.log()
    );
    assert!(run.has("failure handler failure"));
    assert!(!run.has("should not run"), "{}", run.log());
    assert_eq!(run.result("j"), Outcome::Failure);
    assert_eq!(run.result("dependent"), Outcome::Skipped);
    assert!(run.has("cleanup|cleanup sees failure"), "{}", run.log());
    assert!(run.has("on-failure|on-failure ran"), "{}", run.log());
    assert!(!run.summary.as_ref().unwrap().success);
}

#[tokio::test]
async fn step_timeout_kills_the_process_tree() {
    let f = Fixture::new();
    let marker = f.dir.path().join("still-running");
    let yaml = format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - timeout-minutes: 0.01
        run: |
          (sleep 3; touch {m}) &
          echo started
          sleep 60
      - if: always()
        run: echo "next step runs"
"#,
        m = marker.display()
    );
    let run = f.run(&yaml).await;
    assert_eq!(run.steps("j")[0].1, Outcome::Failure, "{}", run.log());
    assert!(run.has("The action has timed out."), "{}", run.log());
    assert!(run.has("next step runs"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "a process of the timed-out step survived");
}

#[tokio::test]
async fn job_timeout_and_cancellation() {
    let f = Fixture::new();
    let run = f
        .run(
            r#"
on: push
jobs:
  j:
    runs-on: x
    timeout-minutes: 0.01
    steps:
      - run: sleep 60
      - run: echo not reached
      - if: always()
        run: echo "cleanup after ${{ job.status }}"
"#,
        )
        .await;
    assert_eq!(run.result("j"), Outcome::Cancelled, "{}", run.log());
    assert!(
        run.has("exceeded the maximum execution time"),
        "{}",
        run.log()
    );
    assert!(!run.has("not reached"));

    let f = Fixture::new();
    let cancel = f.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cancel.cancel();
    });
    let run = f
        .run(
            r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: echo begin; sleep 60
      - run: echo not reached
      - if: cancelled()
        run: echo "cancel handler"
"#,
        )
        .await;
    assert_eq!(run.result("j"), Outcome::Cancelled, "{}", run.log());
    assert_eq!(run.steps("j")[0].1, Outcome::Cancelled);
    assert!(run.has("cancel handler"), "{}", run.log());
    assert!(!run.has("not reached"));
}

#[tokio::test]
async fn matrix_include_exclude_and_strategy() {
    let f = Fixture::new();
    let run = f
        .run(
            r#"
on: push
jobs:
  m:
    runs-on: x
    strategy:
      fail-fast: false
      matrix:
        os: [linux, mac]
        v: [1, 2]
        exclude:
          - os: mac
            v: 2
        include:
          - os: linux
            extra: yes
          - os: windows
            v: 9
    steps:
      - run: echo "combo ${{ matrix.os }} ${{ matrix.v }} extra=${{ matrix.extra }} idx=${{ strategy.job-index }}/${{ strategy.job-total }}"
"#,
        )
        .await;
    let mut combos: Vec<String> = run
        .lines()
        .iter()
        .filter_map(|l| {
            l.split_once("|combo ")
                .map(|(_, c)| c.split(" idx=").next().unwrap().to_string())
        })
        .collect();
    combos.sort();
    assert_eq!(
        combos,
        vec![
            "linux 1 extra=yes",
            "linux 2 extra=yes",
            "mac 1 extra=",
            "windows 9 extra="
        ],
        "{}",
        run.log()
    );
    assert!(run.has("idx=0/4"));
    assert!(run.has("idx=3/4"));
}

#[tokio::test]
async fn shells_and_working_directory() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.repo().join("sub/dir")).unwrap();
    let run = f
        .run(
            r#"
on: push
defaults:
  run:
    working-directory: sub
jobs:
  j:
    runs-on: x
    steps:
      - run: echo "cwd=$(basename "$PWD")"
      - working-directory: sub/dir
        run: echo "cwd=$(basename "$PWD")"
      - id: pipefail
        shell: bash
        continue-on-error: true
        run: false | true
      - id: nopipefail
        run: false | true
      - shell: sh
        run: echo "sh says $0" | sed 's/\.sh$//; s/ .*\// /'
      - shell: python
        run: |
          import os
          print("python", os.environ["GITHUB_JOB"])
      - shell: bash -x {0}
        run: echo custom
      - run: echo "${{ steps.pipefail.outcome }} ${{ steps.nopipefail.outcome }}"
"#,
        )
        .await;
    let log = run.log();
    assert!(run.has("j|cwd=sub"), "{log}");
    assert!(run.has("j|cwd=dir"), "{log}");
    assert!(run.has("j|python j"), "{log}");
    assert!(run.has("j|+ echo custom"), "{log}");
    assert!(run.has("j|failure success"), "{log}");
    assert!(
        run.has("shell: bash --noprofile --norc -eo pipefail {0}"),
        "{log}"
    );
    assert!(run.has("shell: sh -e {0}"), "{log}");
}

#[tokio::test]
async fn github_path_and_workflow_commands() {
    let mut f = Fixture::new();
    f.secrets.insert("ACTIONS_STEP_DEBUG".into(), "true".into());
    let run = f
        .run(
            r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: |
          mkdir -p "$RUNNER_TEMP/bin"
          printf '#!/bin/sh\necho tool ran\n' > "$RUNNER_TEMP/bin/mytool"
          chmod +x "$RUNNER_TEMP/bin/mytool"
          echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
      - run: mytool
      - id: cmds
        run: |
          echo "::group::My group"
          echo inside
          echo "::endgroup::"
          echo "::warning file=app.js,line=3,col=5::look out"
          echo "::error::bad%0Athing"
          echo "::debug::debugging"
          echo "::set-output name=legacy::old way"
          echo "::set-env name=X::y"
          echo "::stop-commands::tok123"
          echo "::warning::not a command now"
          echo "::tok123::"
          echo "::notice title=T::resumed"
      - run: echo "legacy=${{ steps.cmds.outputs.legacy }} X=${X:-unset}"
"#,
        )
        .await;
    let log = run.log();
    assert!(run.has("j|tool ran"), "{log}");
    // The rows act_runner leaves: group lines as printed (Gitea's UI folds them), annotations
    // with their location in the (still escaped) message, no stop-commands lines.
    assert!(run.has("j|::group::My group"), "{log}");
    assert!(run.has("j|::endgroup::"), "{log}");
    assert!(run.has("j|::warning::app.js:3:5: look out"), "{log}");
    assert!(
        run.lines().iter().any(|l| l == "j|::error::bad%0Athing"),
        "{log}"
    );
    assert!(run.has("j|::debug::debugging"), "{log}");
    assert!(run.has("The `set-env` command is disabled"), "{log}");
    assert!(run.has("j|::warning::not a command now"), "{log}");
    assert!(
        !run.lines()
            .iter()
            .any(|l| l.starts_with("j|::stop-commands") || l == "j|::tok123::"),
        "{log}"
    );
    assert!(run.has("j|::notice::T: resumed"), "{log}");
    assert!(run.has("j|legacy=old way X=unset"), "{log}");
}

#[tokio::test]
async fn masking_corpus() {
    let mut f = Fixture::new();
    let secrets = [
        ("PLAIN", "s3cr3t-value"),
        ("SPECIAL", "p@$$ w0rd!\"'`&;|"),
        (
            "MULTI",
            "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34\nGkxQ2ZvZXI=\n-----END KEY-----",
        ),
        ("SPLIT", "splitacrosswrites"),
    ];
    for (k, v) in secrets {
        f.secrets.insert(k.into(), v.into());
    }
    let run = f
        .run(
            r#"
on: push
jobs:
  j:
    runs-on: x
    env:
      FROM_SECRET: ${{ secrets.PLAIN }}
    steps:
      - env:
          SPECIAL: ${{ secrets.SPECIAL }}
          MULTI: ${{ secrets.MULTI }}
        run: |
          echo "plain ${{ secrets.PLAIN }} env $FROM_SECRET"
          echo "special $SPECIAL"
          echo "$MULTI"
          printf 'split'; sleep 0.2; printf 'across'; sleep 0.2; printf 'writes\n'
          printf '%s' "$FROM_SECRET" | base64
          echo "{\"v\": \"$SPECIAL\"}"
          V=$(printf 'dynamic-%s' mask-value)
          echo "::add-mask::$V"
          echo "later $V"
          echo "${{ toJSON(secrets.PLAIN) }}"
      - run: echo "in the next step ${{ secrets.PLAIN }} $(printf 'dynamic-%s' mask-value)"
"#,
        )
        .await;
    let log = run.log();
    assert!(run.summary.as_ref().unwrap().success, "{log}");
    let mut forbidden: Vec<&str> = secrets.iter().flat_map(|(_, v)| v.split('\n')).collect();
    forbidden.push("dynamic-mask-value");
    for line in run.lines() {
        for f in &forbidden {
            assert!(
                !line.contains(f),
                "secret {f:?} leaked in line {line:?}\n{log}"
            );
        }
    }
    assert!(run.has("plain *** env ***"), "{log}");
    assert!(run.has("later ***"), "{log}");
    // The command itself leaves no row, as with act_runner and GitHub.
    assert!(
        !run.lines().iter().any(|l| l.starts_with("j|::add-mask")),
        "{log}"
    );
    assert!(run.has("in the next step *** ***"), "{log}");
}

/// A repository for actions: a local JS action, a composite action using it, a nested composite.
fn write_actions(root: &Path) {
    let w = |p: &str, t: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    };
    w(
        "js/action.yml",
        r#"
name: js
inputs:
  who: { description: who, required: true }
  greeting: { description: greeting, default: "hello ${{ github.event_name }}" }
outputs:
  said: { description: what }
runs:
  using: node20
  main: main.js
  post: post.js
"#,
    );
    w(
        "js/main.js",
        r#"const fs = require('fs');
const said = `${process.env.INPUT_GREETING} ${process.env.INPUT_WHO}`;
console.log(`js says ${said} from ${process.env.GITHUB_ACTION_PATH.endsWith('js')}`);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `said=${said}\n`);
fs.appendFileSync(process.env.GITHUB_STATE, `remember=${process.env.INPUT_WHO}\n`);
"#,
    );
    w(
        "js/post.js",
        "console.log(`js post remembers ${process.env.STATE_remember}`);\n",
    );
    w(
        "composite/action.yml",
        r#"
name: composite
inputs:
  name: { description: n, default: world }
outputs:
  result:
    description: r
    value: ${{ steps.inner.outputs.said }}-${{ steps.sh.outputs.x }}
runs:
  using: composite
  steps:
    - id: sh
      shell: bash
      run: |
        echo "composite input ${{ inputs.name }} env $OUTER path-ok=$([ -f "$GITHUB_ACTION_PATH/action.yml" ] && echo yes)"
        echo "x=42" >> "$GITHUB_OUTPUT"
    - id: inner
      uses: ./actions/js
      with:
        who: ${{ inputs.name }}
    - uses: ./actions/nested
    - if: failure()
      shell: bash
      run: echo composite failure handler should not run
"#,
    );
    w(
        "nested/action.yml",
        r#"
name: nested
runs:
  using: composite
  steps:
    - shell: sh
      run: echo nested composite ran
"#,
    );
}

#[tokio::test]
async fn local_js_and_composite_actions() {
    if !have_node("local_js_and_composite_actions") {
        return;
    }
    let f = Fixture::new();
    write_actions(&f.repo().join("actions"));
    let run = f
        .run(
            r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: js
        uses: ./actions/js
        with:
          who: kiln
      - id: comp
        uses: ./actions/composite
        env: { OUTER: outer-env }
        with:
          name: moon
      - run: echo "js=${{ steps.js.outputs.said }} comp=${{ steps.comp.outputs.result }}"
"#,
        )
        .await;
    let log = run.log();
    assert!(run.summary.as_ref().unwrap().success, "{log}");
    assert!(run.has("js says hello push kiln from true"), "{log}");
    assert!(
        run.has("composite input moon env outer-env path-ok=yes"),
        "{log}"
    );
    assert!(run.has("js says hello push moon"), "{log}");
    assert!(run.has("nested composite ran"), "{log}");
    assert!(!run.has("should not run"), "{log}");
    assert!(
        run.has("j|js=hello push kiln comp=hello push moon-42"),
        "{log}"
    );
    // The post step runs at the end of the job with the state its main step saved.
    let lines = run.lines();
    let post = lines
        .iter()
        .position(|l| l.contains("js post remembers kiln"))
        .expect(&log);
    let last_main = lines.iter().position(|l| l.contains("j|js=hello")).unwrap();
    assert!(post > last_main, "{log}");
}

use kiln_oci::testing::TestGitDaemon as GitDaemon;

use kiln_oci::testing::git;

#[tokio::test]
async fn remote_actions_from_a_git_server() {
    if !have_node("remote_actions_from_a_git_server") {
        return;
    }
    let mut f = Fixture::new();
    let served = f.dir.path().join("served");
    let work = f.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    write_actions(&work);
    // The composite in the remote repository uses a JS action by its remote name.
    std::fs::write(
        work.join("composite/action.yml"),
        std::fs::read_to_string(work.join("composite/action.yml"))
            .unwrap()
            .replace("./actions/js", "org/tools/js@v1")
            .replace("    - uses: ./actions/nested\n", ""),
    )
    .unwrap();
    std::fs::write(
        work.join("js/action.yml"),
        std::fs::read_to_string(work.join("js/action.yml"))
            .unwrap()
            .replace("  post: post.js", "  pre: pre.js\n  post: post.js"),
    )
    .unwrap();
    std::fs::write(
        work.join("js/pre.js"),
        "console.log(`js pre for ${process.env.INPUT_WHO}`);\n",
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "actions"]);
    git(&work, &["tag", "v1"]);
    std::fs::create_dir_all(served.join("org")).unwrap();
    git(
        f.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            served.join("org/tools.git").to_str().unwrap(),
        ],
    );
    let daemon = GitDaemon::start(&served);
    f.config.default_actions_url = format!("git://127.0.0.1:{}", daemon.port());
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: js
        uses: org/tools/js@v1
        with: { who: remote }
      - id: comp
        uses: org/tools/composite@main
        env: { OUTER: o }
      - run: echo "remote js=${{ steps.js.outputs.said }} comp=${{ steps.comp.outputs.result }}"
"#;
    let run = f.run(yaml).await;
    let log = run.log();
    assert!(run.summary.as_ref().unwrap().success, "{log}");
    assert!(
        run.has("Download action repository 'org/tools/js@v1'"),
        "{log}"
    );
    assert!(run.has("js pre for remote"), "{log}");
    assert!(
        run.has("j|remote js=hello push remote comp=hello push world-42"),
        "{log}"
    );
    assert!(run.has("js post remembers remote"), "{log}");

    // Cached per commit: a second run works with the server gone.
    drop(daemon);
    let run = f.run(yaml).await;
    assert!(run.summary.as_ref().unwrap().success, "{}", run.log());

    // A repository that does not exist fails the job in set-up, naming the step.
    let daemon = GitDaemon::start(&served);
    f.config.default_actions_url = format!("git://127.0.0.1:{}", daemon.port());
    let run = f
        .run("on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - name: get it\n        uses: org/missing@v1\n")
        .await;
    assert_eq!(run.result("j"), Outcome::Failure);
    assert!(run.has("step `get it`"), "{}", run.log());
    assert!(run.has("org/missing@v1"), "{}", run.log());
}

#[tokio::test]
async fn bad_input_is_reported_clearly() {
    // Unknown context in a later step: the workflow is refused before anything runs, with the
    // position of the error, as GitHub validates a workflow.
    let err = Workflow::parse(
        "ci.yml",
        "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo first\n      - run: echo ${{ foo.bar }}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("ci.yml:7:") && err.contains("Unrecognized named-value: 'foo'"),
        "{err}"
    );

    // Cyclic needs.
    let wf = Workflow::parse(
        "cyc.yml",
        "on: push\njobs:\n  a:\n    needs: b\n    runs-on: x\n    steps: [{run: 'true'}]\n  b:\n    needs: a\n    runs-on: x\n    steps: [{run: 'true'}]\n",
    );
    let err = match wf {
        Err(e) => e.to_string(),
        Ok(wf) => kiln_actions::model::plan(&wf, None)
            .unwrap_err()
            .to_string(),
    };
    assert!(
        err.contains("cyc.yml") && err.contains('a') && err.contains('b'),
        "{err}"
    );

    // Malformed YAML names the file and line.
    let err = Workflow::parse("bad.yml", "on: push\njobs:\n  j:\n    steps:\n\t- run: x\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.yml") && err.contains('5'), "{err}");

    // A JavaScript action when node is not installed.
    let mut f = Fixture::new();
    write_actions(&f.repo().join("actions"));
    let bin = f.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["bash", "sh", "cat", "echo"] {
        let _ = std::os::unix::fs::symlink(format!("/bin/{tool}"), bin.join(tool));
    }
    f.config
        .env
        .insert("PATH".into(), bin.to_string_lossy().into_owned());
    let run = f
        .run("on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - uses: ./actions/js\n        with: { who: x }\n")
        .await;
    assert_eq!(run.result("j"), Outcome::Failure);
    assert!(
        run.has("runs on node20, but no `node` was found on PATH"),
        "{}",
        run.log()
    );

    // A local action that is not there.
    let f = Fixture::new();
    let run = f
        .run("on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - uses: ./nowhere\n")
        .await;
    assert!(run.has("Can't find 'action.yml'"), "{}", run.log());
}
