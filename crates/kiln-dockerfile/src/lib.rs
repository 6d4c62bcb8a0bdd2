//! Kiln's Dockerfile frontend: text in, BuildKit LLB out, with no I/O.
//!
//! Three stages with hard edges, as in BuildKit's `frontend/dockerfile`:
//! [`parser`] turns text into instructions (directives, continuations, heredocs, JSON form),
//! [`instructions`] types and validates them, and [`lower`] turns them into an LLB
//! [`Definition`](bollard_buildkit_proto::pb::Definition) any BuildKit-compatible solver runs,
//! plus the resulting image config. [`expand`] holds the shell-lexer variable expansion and
//! [`dockerignore`] the `.dockerignore` rules.
//!
//! Lowering is split in two so the crate stays pure: [`plan`] says which base image configs are
//! needed, the caller fetches them, then [`Plan::lower`] produces the definition.
//!
//! ```
//! use std::collections::HashMap;
//! use kiln_dockerfile::{parse, plan, ImageConfig, LowerOptions};
//!
//! let df = parse("FROM busybox\nWORKDIR /app\nCOPY . .\nRUN make\nCMD [\"./app\"]\n")?;
//! let plan = plan(&df, &LowerOptions::default())?;
//! let configs: HashMap<String, ImageConfig> = plan
//!     .base_images()
//!     .into_iter()
//!     .map(|req| {
//!         assert_eq!(req.reference, "docker.io/library/busybox:latest");
//!         // A real caller fetches the config from the registry for `req.platform`.
//!         let config = ImageConfig::from_json(br#"{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#).unwrap();
//!         (req.reference, config)
//!     })
//!     .collect();
//! let lowered = plan.lower(&configs)?;
//! assert_eq!(lowered.image_config.config.cmd, Some(vec!["./app".to_string()]));
//! assert!(!lowered.definition.def.is_empty());
//! # Ok::<(), kiln_dockerfile::Error>(())
//! ```
//!
//! The parser is fuzzed: `cargo +nightly fuzz run dockerfile_parse` from the repository root
//! (target in `fuzz/`, it runs parse, plan and lower on arbitrary input).

pub mod dockerignore;
pub mod error;
pub mod expand;
pub mod image;
pub mod instructions;
pub mod lower;
pub mod parser;
pub mod paths;
pub mod platform;
pub mod reference;

pub use dockerignore::DockerIgnore;
pub use error::Error;
pub use image::ImageConfig;
pub use instructions::{Dockerfile, Instruction, Stage};
pub use lower::{plan, ImageRequest, LowerOptions, Lowered, NamedContext, Plan};
pub use parser::{parse, parse_named};
pub use platform::Platform;

#[cfg(test)]
mod robustness_tests {
    use std::collections::HashMap;

    /// Inputs that once tripped parsers of this kind; none may panic.
    const NASTY: &[&str] = &[
        "",
        "\u{feff}",
        "\\",
        "FROM",
        "FROM a\nRUN \\",
        "FROM a\nRUN <<",
        "FROM a\nRUN <<'",
        "FROM a\nCOPY <<EOF <<EOF /x\nEOF\nEOF\n",
        "FROM a\nENV ${",
        "FROM a\nENV A=${A:-${B:-${C",
        "FROM a\nLABEL \"",
        "FROM a\nARG =",
        "FROM a\nHEALTHCHECK --interval=99999999999999999h CMD x",
        "FROM a\nRUN --mount=type=tmpfs,size=99999999999999999999p,target=/x x",
        "FROM a\nRUN --mount=\"",
        "FROM a\nCOPY --from=99999999999999999999999 a b",
        "FROM a\nCOPY --from=-1 a b",
        "FROM a\nONBUILD",
        "FROM a\nONBUILD RUN <<EOF\nx\nEOF\n",
        "FROM a AS b\nFROM b AS c\nFROM c\nCOPY --from=c x y",
        "FROM a\nWORKDIR ../../..\nRUN --mount=target=.. x",
        "FROM a\nEXPOSE 70000 1-0 a/b",
        "FROM a\nADD http:// /",
        "FROM a\nADD https://x/ /\nADD --checksum=x https://y /",
        "FROM a\nUSER ${x/[/}",
        "FROM a\nENV A=${B/\\\\x/y}",
        "FROM a\nENV A=${B%\\}",
        "FROM scratch\nCOPY --link --chmod=u+x a /\nRUN x",
        "# escape=`\nFROM a\nRUN x `",
        "FROM --platform=linux/ a\n",
        "FROM --platform=$BUILDPLATFORM é\n",
        "FROM ü\nRUN ☃",
    ];

    #[test]
    fn nasty_inputs_never_panic() {
        for text in NASTY {
            let Ok(df) = crate::parse(text) else { continue };
            let Ok(plan) = crate::plan(&df, &crate::LowerOptions::default()) else {
                continue;
            };
            let configs: HashMap<String, crate::ImageConfig> = plan
                .base_images()
                .into_iter()
                .map(|r| (r.reference, crate::ImageConfig::default()))
                .collect();
            let _ = plan.lower(&configs);
        }
    }
}
