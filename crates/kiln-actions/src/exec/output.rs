//! A step's output: lines become log rows and workflow commands take effect.

use std::collections::BTreeMap;

use super::Emitter;
use crate::commands::{annotation_row, CommandGate, Line};
use crate::mask::LineBuffer;
use crate::model::Step;

/// The rows act_runner (like GitHub's runner) prints before a `run:` step's output, in a group
/// Gitea's UI folds: `Run <first line>`, the script, the shell, and the variables the step
/// itself declares (`env:` in its order, without the runner's own).
pub(crate) fn script_header(
    script: &str,
    step: &Step,
    shell: &str,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let script = script.replace("\r\n", "\n");
    let script = script.trim_end_matches('\n');
    let first = script.trim_start().lines().next().unwrap_or("");
    let title = if !first.is_empty() {
        first.to_string()
    } else {
        step.name
            .clone()
            .or_else(|| step.id.clone())
            .unwrap_or_default()
    };
    let mut rows = vec![format!("::group::Run {}", escape(&title))];
    if !script.is_empty() {
        rows.extend(script.split('\n').map(str::to_string));
    }
    rows.push(format!("shell: {shell}"));
    rows.extend(env_block(step, env));
    rows.push("::endgroup::".into());
    rows
}

/// The rows act_runner prints before a `uses:` step's output, which stays inside the group (the
/// caller closes it with `::endgroup::` after the action): `Run <name or uses>`, the `with:`
/// inputs as written, sorted, and the step's own `env:`.
pub(crate) fn action_header(step: &Step, env: &BTreeMap<String, String>) -> Vec<String> {
    let title = step
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| step.uses.clone())
        .unwrap_or_default();
    let mut rows = vec![format!("::group::Run {}", escape(&title))];
    if !step.with.is_empty() {
        rows.push("with:".into());
        let mut with: Vec<(&str, &String)> = step.with.iter().collect();
        with.sort();
        for (k, v) in with {
            rows.extend(keyed(k, v));
        }
    }
    rows.extend(env_block(step, env));
    rows
}

fn env_block(step: &Step, env: &BTreeMap<String, String>) -> Vec<String> {
    let visible: Vec<&str> = step.env.keys().filter(|k| !internal(k)).collect();
    if visible.is_empty() {
        return Vec::new();
    }
    let mut rows = vec!["env:".to_string()];
    for k in visible {
        rows.extend(keyed(k, env.get(k).map(String::as_str).unwrap_or("")));
    }
    rows
}

/// `  key: first line`, then `    line` for each further line: Gitea stores a row per line.
fn keyed(key: &str, value: &str) -> Vec<String> {
    let value = value.replace("\r\n", "\n");
    let mut lines = value.split('\n');
    let mut rows = vec![format!("  {key}: {}", lines.next().unwrap_or(""))];
    rows.extend(lines.map(|l| format!("    {l}")));
    rows
}

/// Variables the runner sets itself, left out of the header as act_runner and GitHub do.
fn internal(key: &str) -> bool {
    matches!(key, "PATH" | "HOME" | "CI")
        || ["GITHUB_", "GITEA_", "RUNNER_", "INPUT_"]
            .iter()
            .any(|p| key.starts_with(p))
}

/// A command's message, escaped as the runner escapes it (`%`, CR, LF).
fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Turns a step's output into log lines and workflow-command effects.
pub(crate) struct OutputHandler {
    out: Emitter,
    log_step: Option<usize>,
    pub lines: LineBuffer,
    gate: CommandGate,
    debug: bool,
    allow_unsecure: bool,
    /// `::set-output` values.
    pub outputs: BTreeMap<String, String>,
    /// `::save-state` values.
    pub state: BTreeMap<String, String>,
    /// `::set-env` values (when unsecure commands are allowed).
    pub env: Vec<(String, String)>,
    /// `::add-path` directories (when unsecure commands are allowed).
    pub path: Vec<String>,
}

impl OutputHandler {
    pub fn new(out: Emitter, log_step: Option<usize>, debug: bool, allow_unsecure: bool) -> Self {
        OutputHandler {
            out,
            log_step,
            lines: LineBuffer::default(),
            gate: CommandGate::default(),
            debug,
            allow_unsecure,
            outputs: BTreeMap::new(),
            state: BTreeMap::new(),
            env: Vec::new(),
            path: Vec::new(),
        }
    }

    /// One line of step output. The rows it leaves in the log are the ones act_runner leaves,
    /// so Gitea shows a job run by kiln as it shows one run by act_runner: `::add-mask::`,
    /// `::stop-commands::` and its resume line, and `::debug::` (unless step debugging is on)
    /// leave nothing; annotations carry their location in the message; every other command line
    /// stays as it was printed (Gitea's UI folds `::group::`/`::endgroup::` and hides matchers).
    pub fn line(&mut self, line: &str) {
        let cmd = match self.gate.parse(line) {
            Line::Output => return self.out.log(self.log_step, line),
            Line::Consumed => return,
            Line::Command(cmd) => cmd,
        };
        let name_prop = cmd.property("name").map(str::to_string);
        match cmd.name.as_str() {
            "add-mask" => self.out.masker.add(&cmd.message),
            "debug" => {
                if self.debug {
                    self.out.log(self.log_step, line);
                }
            }
            "notice" | "warning" | "error" => {
                let row = annotation_row(line).unwrap_or_else(|| line.to_string());
                self.out.log(self.log_step, &row);
            }
            _ => self.out.log(self.log_step, line),
        }
        match cmd.name.as_str() {
            "set-output" => match name_prop {
                Some(name) => {
                    self.outputs.insert(name, cmd.message);
                }
                None => self.out.log(self.log_step, "##[error]set-output requires a name"),
            },
            "save-state" => match name_prop {
                Some(name) => {
                    self.state.insert(name, cmd.message);
                }
                None => self.out.log(self.log_step, "##[error]save-state requires a name"),
            },
            "set-env" | "add-path" if !self.allow_unsecure => self.out.log(
                self.log_step,
                &format!(
                    "##[error]Unable to process command '{line}' successfully. The `{}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`.",
                    cmd.name
                ),
            ),
            "set-env" => match name_prop {
                Some(name) => self.env.push((name, cmd.message)),
                None => self.out.log(self.log_step, "##[error]set-env requires a name"),
            },
            "add-path" => self.path.push(cmd.message),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Event;
    use crate::mask::Masker;
    use tokio::sync::mpsc;

    /// The rows a sequence of output lines leaves in the log.
    fn rows(debug: bool, lines: &[&str]) -> Vec<String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = Emitter {
            tx,
            masker: Masker::new(),
        };
        let mut handler = OutputHandler::new(out, Some(0), debug, false);
        for line in lines {
            handler.line(line);
        }
        drop(handler);
        let mut rows = Vec::new();
        while let Ok(event) = rx.try_recv() {
            if let Event::Log { line, .. } = event {
                rows.push(line);
            }
        }
        rows
    }

    /// The cases of act_runner's `TestReporter_parseLogRow` (internal/pkg/report), which say
    /// what Gitea's log holds for each kind of line a step prints.
    #[test]
    fn rows_are_the_ones_act_runner_writes() {
        let cases: &[(&str, bool, &[&str], &[&str])] = &[
            ("no command", false, &["Hello, world!"], &["Hello, world!"]),
            (
                "add-mask",
                false,
                &[
                    "foo mysecret bar",
                    "::add-mask::mysecret",
                    "foo mysecret bar",
                ],
                &["foo mysecret bar", "foo *** bar"],
            ),
            (
                "add-mask of several lines",
                false,
                &["::add-mask::LINE1%0ALINE2", "foo LINE1 bar"],
                &["foo *** bar"],
            ),
            (
                "debug on",
                true,
                &["::debug::runtime token", "::debug::first%0Asecond"],
                &["::debug::runtime token", "::debug::first%0Asecond"],
            ),
            ("debug off", false, &["::debug::runtime token"], &[]),
            (
                "annotations",
                false,
                &[
                    "::error file=file.name,line=42,endLine=48,title=Cool Title::Gosh",
                    "::error file=main.cpp,line=12::no member named 'foo' in 'std::vector<int>'",
                    "::error File=file.name,Line=42,Col=7::Gosh",
                    "::error file=a%3Ab.go,title=100%252C::still %25 escaped%0Aand multi-line",
                    "::notice::n",
                    "::warning::w",
                ],
                &[
                    "::error::file.name:42: Cool Title: Gosh",
                    "::error::main.cpp:12: no member named 'foo' in 'std::vector<int>'",
                    "::error::file.name:42:7: Gosh",
                    "::error::a:b.go: 100%252C: still %25 escaped%0Aand multi-line",
                    "::notice::n",
                    "::warning::w",
                ],
            ),
            (
                "group",
                false,
                &["::group::", "::endgroup::"],
                &["::group::", "::endgroup::"],
            ),
            (
                "stop-commands",
                false,
                &[
                    "::add-mask::foo",
                    "::stop-commands::myverycoolstoptoken",
                    "::add-mask::bar",
                    "::debug::Stuff",
                    "myverycoolstoptoken",
                    "::add-mask::baz",
                    "::myverycoolstoptoken::",
                    "::add-mask::wibble",
                    "foo bar baz wibble",
                ],
                &[
                    "::add-mask::bar",
                    "::debug::Stuff",
                    "myverycoolstoptoken",
                    "::add-mask::baz",
                    "*** bar baz ***",
                ],
            ),
            (
                "stop-commands with a command-named token",
                false,
                &[
                    "::stop-commands::add-mask",
                    "::set-output name=x::suppressed",
                    "::add-mask::",
                    "::add-mask::masked",
                    "masked",
                ],
                &["::set-output name=x::suppressed", "***"],
            ),
            (
                "unknown command",
                false,
                &["::set-mask::foo"],
                &["::set-mask::foo"],
            ),
        ];
        for (name, debug, lines, want) in cases {
            assert_eq!(rows(*debug, lines), *want, "{name}");
        }
    }

    #[test]
    fn step_headers_are_act_runners() {
        let step: Step = serde_yaml_ng::from_str(
            "run: x\nenv:\n  ZED: z\n  ALPHA: \"${{ 1 }}\"\n  GITHUB_TOKEN: t\n  MULTI: m",
        )
        .unwrap();
        let env: BTreeMap<String, String> = [
            ("ZED", "z"),
            ("ALPHA", "1"),
            ("GITHUB_TOKEN", "t"),
            ("MULTI", "one\ntwo"),
            ("JOB_LEVEL", "hidden"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            script_header(
                "\n  echo 100% done\necho two\n\n",
                &step,
                "bash -e {0}",
                &env
            ),
            [
                "::group::Run echo 100%25 done",
                "",
                "  echo 100% done",
                "echo two",
                "shell: bash -e {0}",
                "env:",
                "  ZED: z",
                "  ALPHA: 1",
                "  MULTI: one",
                "    two",
                "::endgroup::",
            ]
        );
        let step: Step = serde_yaml_ng::from_str(
            "uses: actions/setup-node@v4\nwith:\n  node-version: '20'\n  cache: npm",
        )
        .unwrap();
        assert_eq!(
            action_header(&step, &env),
            [
                "::group::Run actions/setup-node@v4",
                "with:",
                "  cache: npm",
                "  node-version: 20",
            ]
        );
    }

    #[test]
    fn commands_take_effect() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let out = Emitter {
            tx,
            masker: Masker::new(),
        };
        let mut handler = OutputHandler::new(out, None, false, false);
        handler.line("::set-output name=a%3Ab::x%0Ay");
        handler.line("::save-state name=s::1");
        handler.line("::set-env name=E::blocked");
        assert_eq!(handler.outputs["a:b"], "x\ny");
        assert_eq!(handler.state["s"], "1");
        assert!(handler.env.is_empty());
    }
}
