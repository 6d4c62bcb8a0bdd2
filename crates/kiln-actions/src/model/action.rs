//! Action metadata: `action.yml` / `action.yaml`.

use super::error::{parse_yaml, ModelError};
use super::types::{opt_scalar, string_list, string_map, OrderedMap};
use super::workflow::Step;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A parsed `action.yml`. Unknown top-level keys are ignored (as GitHub does); `runs` is
/// checked strictly.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Action {
    /// The file name given to [`Action::parse`].
    #[serde(skip)]
    pub file_name: String,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub author: Option<String>,
    #[serde(default)]
    pub inputs: OrderedMap<ActionInput>,
    #[serde(default)]
    pub outputs: OrderedMap<ActionOutput>,
    pub runs: Runs,
}

impl Action {
    /// Parses an `action.yml`. `file_name` is used in error messages only.
    pub fn parse(file_name: &str, text: &str) -> Result<Action, ModelError> {
        if text.trim().is_empty() {
            return Err(ModelError::new(file_name, "", "the action file is empty"));
        }
        let mut action: Action = parse_yaml(file_name, text)?;
        action.file_name = file_name.to_string();
        Ok(action)
    }
}

/// An input of an action.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ActionInput {
    #[serde(default, deserialize_with = "opt_scalar")]
    pub description: Option<String>,
    /// `required`, written as a boolean or as the string `"true"`/`"false"`.
    #[serde(default, deserialize_with = "bool_or_string")]
    pub required: bool,
    /// The default, numbers and booleans read as strings.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub default: Option<String>,
    #[serde(
        default,
        rename = "deprecationMessage",
        deserialize_with = "opt_scalar"
    )]
    pub deprecation_message: Option<String>,
}

/// An output of an action.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ActionOutput {
    #[serde(default, deserialize_with = "opt_scalar")]
    pub description: Option<String>,
    /// The value expression (composite actions).
    #[serde(default, deserialize_with = "opt_scalar")]
    pub value: Option<String>,
}

fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct BV;
    impl Visitor<'_> for BV {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" | "" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(BV)
}

/// `runs` of an action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRuns")]
pub enum Runs {
    /// `using: node12 | node16 | node20 | node24`.
    Node {
        /// The `using` value, lower-cased.
        using: String,
        main: String,
        pre: Option<String>,
        post: Option<String>,
        pre_if: Option<String>,
        post_if: Option<String>,
    },
    /// `using: composite`.
    Composite { steps: Vec<Step> },
    /// `using: docker`.
    Docker {
        /// `Dockerfile`, a path to a Dockerfile, or `docker://image`.
        image: String,
        entrypoint: Option<String>,
        args: Vec<String>,
        env: OrderedMap<String>,
        pre_entrypoint: Option<String>,
        post_entrypoint: Option<String>,
        pre_if: Option<String>,
        post_if: Option<String>,
    },
}

impl Runs {
    /// The `using` value: `node20`, `composite`, `docker`, ...
    pub fn using(&self) -> &str {
        match self {
            Runs::Node { using, .. } => using,
            Runs::Composite { .. } => "composite",
            Runs::Docker { .. } => "docker",
        }
    }
}

const NODE_VERSIONS: [&str; 4] = ["node12", "node16", "node20", "node24"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuns {
    using: String,
    #[serde(default)]
    main: Option<String>,
    #[serde(default)]
    pre: Option<String>,
    #[serde(default)]
    post: Option<String>,
    #[serde(default, rename = "pre-if")]
    pre_if: Option<String>,
    #[serde(default, rename = "post-if")]
    post_if: Option<String>,
    #[serde(default)]
    steps: Option<Vec<Step>>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    entrypoint: Option<String>,
    #[serde(default, deserialize_with = "opt_list")]
    args: Option<Vec<String>>,
    #[serde(default, deserialize_with = "opt_map")]
    env: Option<OrderedMap<String>>,
    #[serde(default, rename = "pre-entrypoint")]
    pre_entrypoint: Option<String>,
    #[serde(default, rename = "post-entrypoint")]
    post_entrypoint: Option<String>,
}

fn opt_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    string_list(d).map(Some)
}

fn opt_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OrderedMap<String>>, D::Error> {
    string_map(d).map(Some)
}

impl TryFrom<RawRuns> for Runs {
    type Error = String;

    fn try_from(r: RawRuns) -> Result<Runs, String> {
        let using = r.using.trim().to_ascii_lowercase();
        let present = |name: &str, set: bool| if set { Some(name.to_string()) } else { None };
        let not_for = |fields: Vec<Option<String>>| -> Result<(), String> {
            let fields: Vec<String> = fields.into_iter().flatten().collect();
            if fields.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "`{}` cannot be used with `using: {using}`",
                    fields.join("`, `")
                ))
            }
        };
        if NODE_VERSIONS.contains(&using.as_str()) {
            not_for(vec![
                present("steps", r.steps.is_some()),
                present("image", r.image.is_some()),
                present("entrypoint", r.entrypoint.is_some()),
                present("args", r.args.is_some()),
                present("env", r.env.is_some()),
                present("pre-entrypoint", r.pre_entrypoint.is_some()),
                present("post-entrypoint", r.post_entrypoint.is_some()),
            ])?;
            let main = r
                .main
                .ok_or_else(|| format!("`main` is required with `using: {using}`"))?;
            return Ok(Runs::Node {
                using,
                main,
                pre: r.pre,
                post: r.post,
                pre_if: r.pre_if,
                post_if: r.post_if,
            });
        }
        match using.as_str() {
            "composite" => {
                not_for(vec![
                    present("main", r.main.is_some()),
                    present("pre", r.pre.is_some()),
                    present("post", r.post.is_some()),
                    present("pre-if", r.pre_if.is_some()),
                    present("post-if", r.post_if.is_some()),
                    present("image", r.image.is_some()),
                    present("entrypoint", r.entrypoint.is_some()),
                    present("args", r.args.is_some()),
                    present("env", r.env.is_some()),
                    present("pre-entrypoint", r.pre_entrypoint.is_some()),
                    present("post-entrypoint", r.post_entrypoint.is_some()),
                ])?;
                let steps = r
                    .steps
                    .ok_or_else(|| "`steps` is required with `using: composite`".to_string())?;
                for (i, step) in steps.iter().enumerate() {
                    if step.run.is_some() && step.shell.is_none() {
                        return Err(format!(
                            "steps[{i}]: `shell` is required for `run` steps of a composite action"
                        ));
                    }
                }
                Ok(Runs::Composite { steps })
            }
            "docker" => {
                not_for(vec![
                    present("main", r.main.is_some()),
                    present("pre", r.pre.is_some()),
                    present("post", r.post.is_some()),
                    present("steps", r.steps.is_some()),
                ])?;
                let image = r
                    .image
                    .ok_or_else(|| "`image` is required with `using: docker`".to_string())?;
                Ok(Runs::Docker {
                    image,
                    entrypoint: r.entrypoint,
                    args: r.args.unwrap_or_default(),
                    env: r.env.unwrap_or_default(),
                    pre_entrypoint: r.pre_entrypoint,
                    post_entrypoint: r.post_entrypoint,
                    pre_if: r.pre_if,
                    post_if: r.post_if,
                })
            }
            _ => Err(format!(
                "unknown `using: {}`, expected one of {}, composite, docker",
                r.using,
                NODE_VERSIONS.join(", ")
            )),
        }
    }
}
