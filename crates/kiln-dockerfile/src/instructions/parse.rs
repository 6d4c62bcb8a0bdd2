//! Parser nodes → typed instructions, with BuildKit's validation and messages.

use std::sync::OnceLock;

use regex::Regex;

use super::flags::{Flags, Kind};
use super::*;
use crate::error::{did_you_mean, Error};
use crate::parser::{self, chomp_heredoc_content, parse_heredoc, Ast, Node};

const ALL_INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Builds the typed model from parser output.
pub(crate) fn from_ast(ast: Ast) -> Result<Dockerfile, Error> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut global_args = Vec::new();
    for node in &ast.nodes {
        let line = node.start_line;
        let kw = node.value.to_ascii_lowercase();
        if kw == "from" {
            stages.push(parse_from(node).map_err(|e| e.parsing(line))?);
            continue;
        }
        let instruction = parse_node(node).map_err(|e| e.parsing(line))?;
        match (stages.last_mut(), instruction) {
            (None, Instruction::Arg { args, .. }) => global_args.extend(args),
            (None, _) => return Err(Error::msg("no build stage in current context").at("", line)),
            (Some(stage), instruction) => stage.instructions.push(instruction),
        }
    }
    Ok(Dockerfile {
        file_name: "Dockerfile".to_string(),
        directives: ast.directives,
        escape: ast.escape,
        stages,
        global_args,
        warnings: ast.warnings,
    })
}

/// Parses one instruction written on its own (an ONBUILD trigger, for example).
pub fn parse_instruction_line(text: &str) -> Result<Instruction, Error> {
    let ast = parser::parse_ast(text)?;
    if ast.nodes.len() != 1 {
        return Err(Error::msg("onbuild trigger should be a single expression"));
    }
    let node = &ast.nodes[0];
    if node.value.eq_ignore_ascii_case("from") {
        return Err(Error::msg("FROM isn't allowed as an ONBUILD trigger"));
    }
    parse_node(node)
}

fn source_of(node: &Node) -> SourceRange {
    SourceRange {
        start_line: node.start_line,
        end_line: node.end_line,
        code: node.original.trim().to_string(),
    }
}

fn valid_stage_name() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[a-z][a-z0-9-_.]*$").expect("static regex"))
}

fn parse_from(node: &Node) -> Result<Stage, Error> {
    let args = &node.args;
    let name = match args.len() {
        3 if args[1].eq_ignore_ascii_case("as") => {
            let name = args[2].to_ascii_lowercase();
            if !valid_stage_name().is_match(&name) {
                return Err(Error::msg(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    crate::error::go_quote(&args[2])
                )));
            }
            Some(name)
        }
        1 => None,
        _ => return Err(Error::msg("FROM requires either one or three arguments")),
    };
    let mut flags = Flags::new(&[("platform", Kind::String)]);
    flags.parse(&node.flags)?;
    Ok(Stage {
        name,
        base: args[0].clone(),
        platform: flags.non_empty("platform"),
        instructions: Vec::new(),
        source: source_of(node),
    })
}

fn no_flags(node: &Node) -> Result<(), Error> {
    Flags::new(&[]).parse(&node.flags)
}

fn exactly_one(node: &Node, name: &str) -> Result<String, Error> {
    if node.args.len() != 1 {
        return Err(Error::msg(format!("{name} requires exactly one argument")));
    }
    Ok(node.args[0].clone())
}

fn at_least_one(node: &Node, name: &str) -> Result<(), Error> {
    if node.args.is_empty() {
        return Err(Error::msg(format!("{name} requires at least one argument")));
    }
    Ok(())
}

fn command_line(node: &Node, empty_as_none: bool) -> CommandLine {
    let files = node
        .heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            data: h.content.clone(),
            chomp: h.chomp,
        })
        .collect();
    let args = if node.json {
        node.args.clone()
    } else if empty_as_none && node.args.is_empty() {
        Vec::new()
    } else {
        vec![node.args.join(" ")]
    };
    CommandLine {
        args,
        shell_form: !node.json,
        files,
    }
}

fn key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>, Error> {
    if node.args.is_empty() {
        return Err(Error::msg(format!("{name} requires at least one argument")));
    }
    if !node.args.len().is_multiple_of(3) {
        return Err(Error::msg(format!(
            "Bad input to {name}, too many arguments"
        )));
    }
    node.args
        .chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                return Err(Error::msg(format!("{name} names can not be blank")));
            }
            Ok(KeyValue {
                key: c[0].clone(),
                value: c[1].clone(),
                legacy: c[2].is_empty(),
            })
        })
        .collect()
}

type SourcesAndDest = (Vec<String>, Vec<SourceContent>, String);

fn sources_and_dest(node: &Node, name: &str) -> Result<SourcesAndDest, Error> {
    let Some((dest, srcs)) = node.args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(Error::msg(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        )));
    };
    if parse_heredoc(dest)?.is_some() {
        return Err(Error::msg(format!(
            "{name} cannot accept a heredoc as a destination"
        )));
    }
    let mut paths = Vec::new();
    let mut contents = Vec::new();
    for src in srcs {
        match parse_heredoc(src)? {
            Some(h) => {
                let body = node
                    .heredocs
                    .iter()
                    .find(|d| d.name == h.name)
                    .map(|d| d.content.clone())
                    .unwrap_or_default();
                let data = if h.chomp {
                    chomp_heredoc_content(&body)
                } else {
                    body
                };
                contents.push(SourceContent {
                    path: h.name,
                    data,
                    expand: h.expand,
                });
            }
            None => paths.push(src.clone()),
        }
    }
    Ok((paths, contents, dest.clone()))
}

fn parse_node(node: &Node) -> Result<Instruction, Error> {
    let source = source_of(node);
    let kw = node.value.to_ascii_lowercase();
    Ok(match kw.as_str() {
        "run" => {
            let mut flags = Flags::new(&[
                ("mount", Kind::Strings),
                ("network", Kind::String),
                ("security", Kind::String),
                ("device", Kind::Strings),
            ]);
            flags.parse(&node.flags)?;
            let mounts = flags
                .strings("mount")
                .iter()
                .map(|m| parse_mount(m, &mut |v: &str| Ok(v.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let network = match flags.string("network").as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => {
                    return Err(Error::msg(format!(
                        "unsupported network mode {}",
                        crate::error::go_quote(other)
                    )))
                }
            };
            let security = match flags.string("security").as_deref() {
                None => None,
                Some("sandbox") => Some(SecurityMode::Sandbox),
                Some("insecure") => Some(SecurityMode::Insecure),
                Some(other) => {
                    return Err(Error::msg(format!(
                        "unsupported security mode {}",
                        crate::error::go_quote(other)
                    )))
                }
            };
            Instruction::Run(Run {
                source,
                cmd: command_line(node, false),
                mounts,
                network,
                security,
                devices: flags.strings("device"),
            })
        }
        "copy" => {
            if node.args.len() < 2 {
                return Err(Error::msg(
                    "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
                ));
            }
            let mut flags = Flags::new(&[
                ("chown", Kind::String),
                ("from", Kind::String),
                ("chmod", Kind::String),
                ("link", Kind::Bool),
                ("exclude", Kind::Strings),
                ("parents", Kind::Bool),
            ]);
            flags.parse(&node.flags)?;
            let (srcs, contents, dest) = sources_and_dest(node, "COPY")?;
            Instruction::Copy(Copy {
                source,
                srcs,
                contents,
                dest,
                from: flags.non_empty("from"),
                chown: flags.non_empty("chown"),
                chmod: flags.non_empty("chmod"),
                link: flags.bool("link"),
                parents: flags.bool("parents"),
                excludes: flags.strings("exclude"),
            })
        }
        "add" => {
            if node.args.len() < 2 {
                return Err(Error::msg(
                    "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
                ));
            }
            let mut flags = Flags::new(&[
                ("chown", Kind::String),
                ("chmod", Kind::String),
                ("link", Kind::Bool),
                ("keep-git-dir", Kind::Bool),
                ("checksum", Kind::String),
                ("unpack", Kind::Bool),
                ("exclude", Kind::Strings),
            ]);
            flags.parse(&node.flags)?;
            let (srcs, contents, dest) = sources_and_dest(node, "ADD")?;
            Instruction::Add(Add {
                source,
                srcs,
                contents,
                dest,
                chown: flags.non_empty("chown"),
                chmod: flags.non_empty("chmod"),
                link: flags.bool("link"),
                keep_git_dir: flags.opt_bool("keep-git-dir"),
                checksum: flags.non_empty("checksum"),
                unpack: flags.opt_bool("unpack"),
                excludes: flags.strings("exclude"),
            })
        }
        "env" => {
            no_flags(node)?;
            Instruction::Env {
                source,
                pairs: key_values(node, "ENV")?,
            }
        }
        "label" => {
            no_flags(node)?;
            Instruction::Label {
                source,
                pairs: key_values(node, "LABEL")?,
            }
        }
        "expose" => {
            at_least_one(node, "EXPOSE")?;
            no_flags(node)?;
            let mut ports = node.args.clone();
            ports.sort();
            Instruction::Expose { source, ports }
        }
        "cmd" => {
            no_flags(node)?;
            Instruction::Cmd {
                source,
                cmd: command_line(node, false),
            }
        }
        "entrypoint" => {
            no_flags(node)?;
            Instruction::Entrypoint {
                source,
                cmd: command_line(node, true),
            }
        }
        "workdir" => {
            let path = exactly_one(node, "WORKDIR")?;
            no_flags(node)?;
            Instruction::Workdir { source, path }
        }
        "user" => {
            let user = exactly_one(node, "USER")?;
            no_flags(node)?;
            Instruction::User { source, user }
        }
        "volume" => {
            at_least_one(node, "VOLUME")?;
            no_flags(node)?;
            let mut paths = Vec::new();
            for v in &node.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(Error::msg("VOLUME specified can not be an empty string"));
                }
                paths.push(v.to_string());
            }
            Instruction::Volume { source, paths }
        }
        "arg" => {
            at_least_one(node, "ARG")?;
            no_flags(node)?;
            let mut args = Vec::new();
            for a in &node.args {
                match a.split_once('=') {
                    Some(("", _)) => return Err(Error::msg("ARG names can not be blank")),
                    Some((k, v)) => args.push(ArgDecl {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    }),
                    None => args.push(ArgDecl {
                        key: a.clone(),
                        value: None,
                    }),
                }
            }
            Instruction::Arg { source, args }
        }
        "onbuild" => parse_onbuild(node, source)?,
        "stopsignal" => {
            let signal = exactly_one(node, "STOPSIGNAL")?;
            no_flags(node)?;
            Instruction::Stopsignal { source, signal }
        }
        "healthcheck" => Instruction::Healthcheck {
            source,
            health: parse_healthcheck(node)?,
        },
        "shell" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err(Error::msg("SHELL requires at least one argument"));
            }
            if !node.json {
                return Err(Error::msg(
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            Instruction::Shell {
                source,
                shell: node.args.clone(),
            }
        }
        "maintainer" => {
            let name = exactly_one(node, "MAINTAINER")?;
            no_flags(node)?;
            Instruction::Maintainer { source, name }
        }
        _ => {
            let mut msg = format!("unknown instruction: {}", node.value);
            if let Some(s) = did_you_mean(&node.value, ALL_INSTRUCTIONS) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(Error::msg(msg));
        }
    })
}

fn parse_onbuild(node: &Node, source: SourceRange) -> Result<Instruction, Error> {
    let Some(sub) = node.sub.as_deref() else {
        return Err(Error::msg("ONBUILD requires at least one argument"));
    };
    no_flags(node)?;
    let trigger = sub.value.to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(Error::msg(
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ))
        }
        "MAINTAINER" | "FROM" => {
            return Err(Error::msg(format!(
                "{trigger} isn't allowed as an ONBUILD trigger"
            )))
        }
        _ => {}
    }
    // Validate the trigger now so mistakes surface at this line, not in a child build.
    parse_node(sub)?;
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(?i)^\s*ONBUILD\s*").expect("static regex"));
    let mut expression = re.replace(&node.original, "").into_owned();
    for h in &node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(Instruction::Onbuild { source, expression })
}

/// Parses a Go duration (`30s`, `1m30s`, `1.5h`, `500ms`) into nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * unit;
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    let v = total as i64;
    Some(if neg { -v } else { v })
}

fn parse_healthcheck(node: &Node) -> Result<Health, Error> {
    let Some(first) = node.args.first() else {
        return Err(Error::msg("HEALTHCHECK requires at least one argument"));
    };
    let typ = first.to_ascii_uppercase();
    let rest = &node.args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(Error::msg("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Health {
            test: vec![typ],
            ..Health::default()
        });
    }
    let mut flags = Flags::new(&[
        ("interval", Kind::String),
        ("timeout", Kind::String),
        ("start-period", Kind::String),
        ("start-interval", Kind::String),
        ("retries", Kind::String),
    ]);
    flags.parse(&node.flags)?;
    if typ != "CMD" {
        return Err(Error::msg(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            crate::error::go_quote(&typ)
        )));
    }
    let cmd: Vec<String> = if node.json {
        rest.to_vec()
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() || (!node.json && cmd[0].is_empty()) {
        return Err(Error::msg("Missing command after HEALTHCHECK CMD"));
    }
    let mut test = vec![if node.json {
        "CMD".to_string()
    } else {
        "CMD-SHELL".to_string()
    }];
    test.extend(cmd);
    let interval = |name: &str| -> Result<i64, Error> {
        let Some(v) = flags.non_empty(name) else {
            return Ok(0);
        };
        let d = parse_go_duration(&v).ok_or_else(|| {
            Error::msg(format!(
                "time: invalid duration {}",
                crate::error::go_quote(&v)
            ))
        })?;
        if d != 0 && d < 1_000_000 {
            return Err(Error::msg(format!(
                "Interval \"{name}\" cannot be less than 1ms"
            )));
        }
        Ok(d)
    };
    let retries = match flags.non_empty("retries") {
        None => 0,
        Some(v) => {
            let r: i64 = v.parse().map_err(|_| {
                Error::msg(format!(
                    "strconv.ParseInt: parsing {}: invalid syntax",
                    crate::error::go_quote(&v)
                ))
            })?;
            if r < 0 {
                return Err(Error::msg(format!("--retries cannot be negative ({r})")));
            }
            r
        }
    };
    Ok(Health {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
