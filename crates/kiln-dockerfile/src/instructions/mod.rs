//! The typed instruction model (BuildKit's `frontend/dockerfile/instructions`).
//!
//! Flags are parsed and validated here; values that BuildKit expands at build time (paths,
//! `--chown`, mount options, ...) are kept as written and expanded during lowering, where the
//! stage's environment is known.

mod flags;
mod mount;
mod parse;

pub(crate) use mount::parse_mount;
pub use mount::{Mount, MountType, Sharing};
pub(crate) use parse::from_ast;
pub use parse::parse_instruction_line;

use crate::parser::{Directive, Warning};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The name used in error messages.
    pub file_name: String,
    /// Parser directives from the top of the file.
    pub directives: Vec<Directive>,
    /// The escape character (`\` unless `# escape=` said `` ` ``).
    pub escape: char,
    /// Build stages in file order.
    pub stages: Vec<Stage>,
    /// `ARG`s before the first `FROM`.
    pub global_args: Vec<ArgDecl>,
    /// Non-fatal findings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `AS name`, lowercased as BuildKit does.
    pub name: Option<String>,
    /// The base as written (may contain `$ARG` references to global args).
    pub base: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    /// The instructions of the stage.
    pub instructions: Vec<Instruction>,
    /// Where the `FROM` is.
    pub source: SourceRange,
}

impl Stage {
    /// 1-based line of the `FROM`.
    pub fn line(&self) -> usize {
        self.source.start_line
    }
}

/// Where an instruction came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceRange {
    /// First line (1-based).
    pub start_line: usize,
    /// Last line, including heredoc bodies.
    pub end_line: usize,
    /// The logical line as written (continuations joined), trimmed.
    pub code: String,
}

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub key: String,
    /// The default, unexpanded.
    pub value: Option<String>,
}

/// `key=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, unexpanded.
    pub key: String,
    /// The value, unexpanded.
    pub value: String,
    /// Written in the legacy `ENV key value` form.
    pub legacy: bool,
}

/// A command line of RUN, CMD, ENTRYPOINT or HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the argv. Shell form: one element, the command string.
    pub args: Vec<String>,
    /// Shell form: the shell is prepended when lowering.
    pub shell_form: bool,
    /// Heredoc files (RUN only).
    pub files: Vec<InlineFile>,
}

/// A heredoc given to RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc word (`EOF`).
    pub name: String,
    /// The body as written.
    pub data: String,
    /// `<<-`: strip leading tabs.
    pub chomp: bool,
}

/// A heredoc source of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContent {
    /// The heredoc word, used as the file name.
    pub path: String,
    /// The body (tabs already stripped for `<<-`).
    pub data: String,
    /// Expand variables in the body (the name was not quoted).
    pub expand: bool,
}

/// `--network` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// `default`: the sandbox network.
    Default,
    /// `none`.
    None,
    /// `host` (needs the `network.host` entitlement).
    Host,
}

/// `--security` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// `sandbox`.
    Sandbox,
    /// `insecure` (needs the `security.insecure` entitlement).
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub source: SourceRange,
    pub cmd: CommandLine,
    /// `--mount` options, values unexpanded.
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
    /// `--device` values as written (kept, not lowered).
    pub devices: Vec<String>,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub source: SourceRange,
    /// Source paths (unexpanded).
    pub srcs: Vec<String>,
    /// Heredoc sources.
    pub contents: Vec<SourceContent>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--from`: a stage name, stage index or image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub source: SourceRange,
    pub srcs: Vec<String>,
    pub contents: Vec<SourceContent>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub excludes: Vec<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// `["NONE"]`, `["CMD", argv...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// Nanoseconds, 0 = inherit.
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

/// One instruction inside a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Run),
    Copy(Copy),
    Add(Add),
    Env {
        source: SourceRange,
        pairs: Vec<KeyValue>,
    },
    Label {
        source: SourceRange,
        pairs: Vec<KeyValue>,
    },
    Expose {
        source: SourceRange,
        ports: Vec<String>,
    },
    Cmd {
        source: SourceRange,
        cmd: CommandLine,
    },
    Entrypoint {
        source: SourceRange,
        cmd: CommandLine,
    },
    Workdir {
        source: SourceRange,
        path: String,
    },
    User {
        source: SourceRange,
        user: String,
    },
    Volume {
        source: SourceRange,
        paths: Vec<String>,
    },
    Arg {
        source: SourceRange,
        args: Vec<ArgDecl>,
    },
    /// The trigger expression, without `ONBUILD`.
    Onbuild {
        source: SourceRange,
        expression: String,
    },
    Stopsignal {
        source: SourceRange,
        signal: String,
    },
    Healthcheck {
        source: SourceRange,
        health: Health,
    },
    Shell {
        source: SourceRange,
        shell: Vec<String>,
    },
    Maintainer {
        source: SourceRange,
        name: String,
    },
}

impl Instruction {
    /// Where the instruction is.
    pub fn source(&self) -> &SourceRange {
        match self {
            Instruction::Run(r) => &r.source,
            Instruction::Copy(c) => &c.source,
            Instruction::Add(a) => &a.source,
            Instruction::Env { source, .. }
            | Instruction::Label { source, .. }
            | Instruction::Expose { source, .. }
            | Instruction::Cmd { source, .. }
            | Instruction::Entrypoint { source, .. }
            | Instruction::Workdir { source, .. }
            | Instruction::User { source, .. }
            | Instruction::Volume { source, .. }
            | Instruction::Arg { source, .. }
            | Instruction::Onbuild { source, .. }
            | Instruction::Stopsignal { source, .. }
            | Instruction::Healthcheck { source, .. }
            | Instruction::Shell { source, .. }
            | Instruction::Maintainer { source, .. } => source,
        }
    }

    /// 1-based line where the instruction starts.
    pub fn line(&self) -> usize {
        self.source().start_line
    }

    /// The instruction name in upper case (`RUN`, `COPY`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::Run(_) => "RUN",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env { .. } => "ENV",
            Instruction::Label { .. } => "LABEL",
            Instruction::Expose { .. } => "EXPOSE",
            Instruction::Cmd { .. } => "CMD",
            Instruction::Entrypoint { .. } => "ENTRYPOINT",
            Instruction::Workdir { .. } => "WORKDIR",
            Instruction::User { .. } => "USER",
            Instruction::Volume { .. } => "VOLUME",
            Instruction::Arg { .. } => "ARG",
            Instruction::Onbuild { .. } => "ONBUILD",
            Instruction::Stopsignal { .. } => "STOPSIGNAL",
            Instruction::Healthcheck { .. } => "HEALTHCHECK",
            Instruction::Shell { .. } => "SHELL",
            Instruction::Maintainer { .. } => "MAINTAINER",
        }
    }
}
