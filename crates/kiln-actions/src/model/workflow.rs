//! The workflow file: `on`, `env`, `defaults`, `jobs` with their steps.

use super::error::{parse_yaml, ModelError};
use super::on::On;
use super::types::{
    condition, is_expression, opt_scalar, string_list, string_map, BoolOrExpr, NumberOrExpr,
    OrderedMap,
};
use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed workflow file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// The file name given to [`Workflow::parse`]; used in error messages.
    #[serde(skip)]
    pub file_name: String,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub name: Option<String>,
    #[serde(default, rename = "run-name", deserialize_with = "opt_scalar")]
    pub run_name: Option<String>,
    /// The triggers; empty when the file has no `on`.
    #[serde(default)]
    pub on: On,
    #[serde(default, deserialize_with = "string_map")]
    pub env: OrderedMap<String>,
    #[serde(default)]
    pub defaults: Option<Defaults>,
    /// Raw `permissions` (`read-all`, `write-all`, `{}` or a map of scope → level).
    #[serde(default)]
    pub permissions: Option<Value>,
    /// Raw `concurrency` (a group string or `{group, cancel-in-progress}`).
    #[serde(default)]
    pub concurrency: Option<Value>,
    /// The jobs in file order.
    #[serde(default)]
    pub jobs: OrderedMap<Job>,
}

impl Workflow {
    /// Parses and validates a workflow file. `file_name` is used in error messages only.
    ///
    /// Every expression is parsed too (not evaluated), so a syntax error or an unknown function
    /// is reported with its position before any job runs, as GitHub does.
    pub fn parse(file_name: &str, text: &str) -> Result<Workflow, ModelError> {
        Workflow::parse_inner(file_name, text, false)
    }

    /// Parses the one-job workflow of a Gitea task. Gitea sends each job of a run on its own,
    /// with `needs:` as written: the jobs it names ran elsewhere, and their results and outputs
    /// come with the task (`Task.needs`), so they are not looked for in this file.
    pub fn parse_job_payload(file_name: &str, text: &str) -> Result<Workflow, ModelError> {
        Workflow::parse_inner(file_name, text, true)
    }

    fn parse_inner(
        file_name: &str,
        text: &str,
        needs_outside: bool,
    ) -> Result<Workflow, ModelError> {
        if text.trim().is_empty() {
            return Err(ModelError::new(file_name, "", "the workflow file is empty"));
        }
        let mut wf: Workflow = parse_yaml(file_name, text)?;
        wf.file_name = file_name.to_string();
        wf.validate(text, needs_outside)?;
        super::check::check_expressions(file_name, text)?;
        Ok(wf)
    }

    /// The `inputs` context of a run triggered by `event_name` with this payload, as act reads
    /// it (`getEvaluatorInputs`): for `workflow_dispatch` and `workflow_call` every declared
    /// input, from the event's `inputs` or else its default, booleans as booleans; for other
    /// events the event's `inputs` as they are. (Newer Gitea sends the jobs of a called workflow
    /// as `workflow_call` events with the caller's inputs in the payload.)
    pub fn inputs_for(&self, event_name: &str, event: &Value) -> Value {
        let given = event.get("inputs").and_then(Value::as_object);
        let declared = match event_name {
            "workflow_dispatch" => self.on.workflow_dispatch().map(|d| &d.inputs),
            "workflow_call" => self.on.workflow_call().map(|c| &c.inputs),
            _ => None,
        };
        let Some(declared) = declared else {
            return given
                .cloned()
                .map(Value::Object)
                .unwrap_or_else(|| json!({}));
        };
        let mut inputs = given.cloned().unwrap_or_default();
        for (name, input) in declared.iter() {
            let value = given
                .and_then(|g| g.get(name))
                .or(input.default.as_ref())
                .cloned()
                .unwrap_or(Value::Null);
            let value = match (input.input_type.as_deref(), value) {
                (Some("boolean"), Value::String(s)) => Value::Bool(s == "true"),
                (_, v) => v,
            };
            inputs.insert(name.to_string(), value);
        }
        Value::Object(inputs)
    }

    /// The job with this id.
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// The job ids in file order.
    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.keys().map(str::to_string).collect()
    }

    /// Looks for the workflow folder of a repository: `.gitea/workflows`, then
    /// `.github/workflows`.
    pub fn find_dir(repo_root: &Path) -> Option<PathBuf> {
        [".gitea/workflows", ".github/workflows"]
            .iter()
            .map(|d| repo_root.join(d))
            .find(|p| p.is_dir())
    }

    fn validate(&self, text: &str, needs_outside: bool) -> Result<(), ModelError> {
        let file = self.file_name.as_str();
        if self.jobs.is_empty() {
            return Err(ModelError::new(file, "jobs", "the workflow has no jobs").located(text));
        }
        for (id, job) in self.jobs.iter() {
            let path = format!("jobs.{id}");
            if !valid_job_id(id) {
                return Err(ModelError::new(
                    file,
                    path,
                    format!(
                        "invalid job id `{id}`: a job id must start with a letter or `_` and \
                         contain only letters, digits, `-` and `_`"
                    ),
                )
                .located(text));
            }
            if job.uses.is_some() && !job.steps.is_empty() {
                return Err(ModelError::new(
                    file,
                    path,
                    format!(
                        "job `{id}` has both `uses` and `steps`: a job calling a reusable \
                         workflow cannot have steps"
                    ),
                )
                .located(text));
            }
            for need in &job.needs {
                if !needs_outside && !self.jobs.contains_key(need) {
                    return Err(ModelError::new(
                        file,
                        format!("{path}.needs"),
                        format!("job `{id}` needs `{need}`, which is not a job of this workflow"),
                    )
                    .located(text));
                }
            }
            let mut seen: Vec<&str> = Vec::new();
            for (i, step) in job.steps.iter().enumerate() {
                if let Some(sid) = step.id.as_deref() {
                    if seen.contains(&sid) {
                        return Err(ModelError::new(
                            file,
                            format!("{path}.steps[{i}]"),
                            format!("job `{id}`: step id `{sid}` is used by more than one step"),
                        )
                        .located(text));
                    }
                    seen.push(sid);
                }
            }
        }
        if let Some(cycle) = super::plan::find_cycle(self, &self.job_ids()) {
            return Err(ModelError::new(
                file,
                format!("jobs.{}.needs", cycle[0]),
                format!("jobs form a cycle in `needs`: {}", cycle.join(" -> ")),
            )
            .located(text));
        }
        Ok(())
    }
}

/// Whether `id` matches `^[A-Za-z_][A-Za-z0-9_-]*$`.
pub fn valid_job_id(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Reads every `*.yml` and `*.yaml` file of `dir`, sorted by file name, and parses each.
/// Error messages name the files by their path.
pub fn load_workflows(dir: &Path) -> Result<Vec<Workflow>, ModelError> {
    let dir_name = dir.display().to_string();
    let entries =
        std::fs::read_dir(dir).map_err(|e| ModelError::new(&dir_name, "", e.to_string()))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::new(&dir_name, "", e.to_string()))?;
        let path = entry.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yml" || e == "yaml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ModelError::new(&name, "", e.to_string()))?;
            Workflow::parse(&name, &text)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// defaults, container, environment, runs-on

/// `defaults` of a workflow or job.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub run: Option<RunDefaults>,
}

/// `defaults.run`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDefaults {
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default, rename = "working-directory")]
    pub working_directory: Option<String>,
}

/// A job container or a service container. `container: node:20` gives just the image.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub image: String,
    #[serde(default)]
    pub credentials: Option<Credentials>,
    #[serde(default, deserialize_with = "string_map")]
    pub env: OrderedMap<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub ports: Vec<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub options: Option<String>,
}

/// Registry credentials of a container.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default, deserialize_with = "opt_scalar")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub password: Option<String>,
}

/// Deserializes either a string (handed to `from_str`) or a map (handed to the derived impl
/// of `T`) so that errors inside the map keep their key paths.
struct StringOrStruct<T, F>(F, std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>, F: FnOnce(&str) -> T> Visitor<'de> for StringOrStruct<T, F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a map")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// `deserialize_with` for a container given as an image string or a map.
fn container<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Container>, D::Error> {
    Ok(Some(ContainerOrImage::deserialize(d)?.0))
}

struct ContainerOrImage(Container);

impl<'de> Deserialize<'de> for ContainerOrImage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrStruct(
            |s: &str| Container {
                image: s.to_string(),
                ..Container::default()
            },
            std::marker::PhantomData,
        ))
        .map(ContainerOrImage)
    }
}

fn services<'de, D: Deserializer<'de>>(d: D) -> Result<OrderedMap<Container>, D::Error> {
    let m = OrderedMap::<ContainerOrImage>::deserialize(d)?;
    Ok(OrderedMap(m.0.into_iter().map(|(k, v)| (k, v.0)).collect()))
}

/// `environment` of a job.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
}

fn environment<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Environment>, D::Error> {
    d.deserialize_any(StringOrStruct(
        |s: &str| Environment {
            name: s.to_string(),
            url: None,
        },
        std::marker::PhantomData,
    ))
    .map(Some)
}

/// `runs-on` of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum RunsOn {
    /// A label or a list of labels (each may hold an expression).
    Labels(Vec<String>),
    /// `{group, labels}`.
    Group {
        group: Option<String>,
        labels: Vec<String>,
    },
    /// One string holding an expression, which may evaluate to a label or a list of labels.
    Expr(String),
}

impl RunsOn {
    /// The labels as written (the expression string for [`RunsOn::Expr`]).
    pub fn labels(&self) -> Vec<String> {
        match self {
            RunsOn::Labels(l) | RunsOn::Group { labels: l, .. } => l.clone(),
            RunsOn::Expr(e) => vec![e.clone()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsOnGroup {
    #[serde(default)]
    group: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    labels: Vec<String>,
}

impl<'de> Deserialize<'de> for RunsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RV;
        impl<'de> Visitor<'de> for RV {
            type Value = RunsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a label, a list of labels or a map with `group` and `labels`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RunsOn, E> {
                if is_expression(v) {
                    Ok(RunsOn::Expr(v.to_string()))
                } else {
                    Ok(RunsOn::Labels(vec![v.to_string()]))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RunsOn, A::Error> {
                let mut labels = Vec::new();
                while let Some(l) = seq.next_element::<String>()? {
                    labels.push(l);
                }
                Ok(RunsOn::Labels(labels))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RunsOn, A::Error> {
                let g = RunsOnGroup::deserialize(MapAccessDeserializer::new(map))?;
                Ok(RunsOn::Group {
                    group: g.group,
                    labels: g.labels,
                })
            }
        }
        d.deserialize_any(RV)
    }
}

/// `secrets` of a job calling a reusable workflow.
#[derive(Debug, Clone, PartialEq)]
pub enum JobSecrets {
    /// `secrets: inherit`.
    Inherit,
    Map(OrderedMap<String>),
}

impl<'de> Deserialize<'de> for JobSecrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SV;
        impl<'de> Visitor<'de> for SV {
            type Value = JobSecrets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`inherit` or a map of secrets")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JobSecrets, E> {
                if v == "inherit" {
                    Ok(JobSecrets::Inherit)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JobSecrets, A::Error> {
                string_map(MapAccessDeserializer::new(map)).map(JobSecrets::Map)
            }
        }
        d.deserialize_any(SV)
    }
}

// ---------------------------------------------------------------------------------------------
// strategy

/// `strategy` of a job.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    #[serde(default)]
    pub matrix: Option<Matrix>,
    #[serde(default, rename = "fail-fast")]
    pub fail_fast: Option<BoolOrExpr>,
    #[serde(default, rename = "max-parallel")]
    pub max_parallel: Option<NumberOrExpr>,
    /// Written by Gitea's jobparser into the one-job workflow of a task (the combination's place).
    #[serde(default, rename = "job-index")]
    pub job_index: Option<Value>,
    #[serde(default, rename = "job-total")]
    pub job_total: Option<Value>,
}

/// `strategy.matrix`: a map of dimensions, or one expression for the whole matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum Matrix {
    Expr(String),
    Map {
        /// Dimension → list of values, or an expression string; in file order.
        dimensions: OrderedMap<Value>,
        /// A list of maps, or an expression string.
        include: Option<Value>,
        /// A list of maps, or an expression string.
        exclude: Option<Value>,
    },
}

impl Matrix {
    /// The dimension names in file order (empty for [`Matrix::Expr`]).
    pub fn key_order(&self) -> Vec<String> {
        match self {
            Matrix::Expr(_) => Vec::new(),
            Matrix::Map { dimensions, .. } => dimensions.keys().map(str::to_string).collect(),
        }
    }

    /// The matrix as one JSON value (an object with the dimensions and `include`/`exclude`,
    /// or the expression string), ready for expression evaluation and then
    /// [`super::matrix::expand_matrix`].
    pub fn to_value(&self) -> Value {
        match self {
            Matrix::Expr(e) => Value::String(e.clone()),
            Matrix::Map {
                dimensions,
                include,
                exclude,
            } => {
                let mut m = serde_json::Map::new();
                for (k, v) in dimensions.iter() {
                    m.insert(k.to_string(), v.clone());
                }
                if let Some(i) = include {
                    m.insert("include".into(), i.clone());
                }
                if let Some(e) = exclude {
                    m.insert("exclude".into(), e.clone());
                }
                Value::Object(m)
            }
        }
    }

    /// Whether an expression appears anywhere in the matrix.
    pub fn has_expressions(&self) -> bool {
        fn walk(v: &Value) -> bool {
            match v {
                Value::String(s) => is_expression(s),
                Value::Array(a) => a.iter().any(walk),
                Value::Object(o) => o.values().any(walk),
                _ => false,
            }
        }
        walk(&self.to_value())
    }

    /// Expands a matrix that holds no expressions.
    pub fn expand_literal(&self) -> Result<Vec<serde_json::Map<String, Value>>, String> {
        if self.has_expressions() {
            return Err("the matrix holds expressions: evaluate it first".to_string());
        }
        super::matrix::expand_matrix(&self.to_value(), &self.key_order())
    }
}

impl<'de> Deserialize<'de> for Matrix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MV;
        impl<'de> Visitor<'de> for MV {
            type Value = Matrix;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of matrix values or an expression")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Matrix, E> {
                if is_expression(v) {
                    Ok(Matrix::Expr(v.to_string()))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Matrix, A::Error> {
                let mut dimensions = OrderedMap::new();
                let mut include = None;
                let mut exclude = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: Value = map.next_value()?;
                    let ok = match (&value, key.as_str()) {
                        (Value::String(s), _) => is_expression(s),
                        (Value::Array(items), "include" | "exclude") => {
                            items.iter().all(Value::is_object)
                        }
                        (Value::Array(_), _) => true,
                        _ => false,
                    };
                    if !ok {
                        let what = if key == "include" || key == "exclude" {
                            "must be a list of maps or an expression"
                        } else {
                            "must be a list of values or an expression"
                        };
                        return Err(de::Error::custom(format!("matrix `{key}` {what}")));
                    }
                    let dup = match key.as_str() {
                        "include" => include.replace(value).is_some(),
                        "exclude" => exclude.replace(value).is_some(),
                        _ => {
                            let dup = dimensions.contains_key(&key);
                            dimensions.insert(key.clone(), value);
                            dup
                        }
                    };
                    if dup {
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                }
                Ok(Matrix::Map {
                    dimensions,
                    include,
                    exclude,
                })
            }
        }
        d.deserialize_any(MV)
    }
}

// ---------------------------------------------------------------------------------------------
// job, step

/// One job of a workflow.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    #[serde(default, deserialize_with = "opt_scalar")]
    pub name: Option<String>,
    #[serde(default, rename = "runs-on")]
    pub runs_on: Option<RunsOn>,
    #[serde(default, deserialize_with = "string_list")]
    pub needs: Vec<String>,
    #[serde(default, rename = "if", deserialize_with = "condition")]
    pub if_cond: Option<String>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default, deserialize_with = "string_map")]
    pub env: OrderedMap<String>,
    #[serde(default)]
    pub defaults: Option<Defaults>,
    #[serde(default, deserialize_with = "string_map")]
    pub outputs: OrderedMap<String>,
    #[serde(default, rename = "timeout-minutes")]
    pub timeout_minutes: Option<NumberOrExpr>,
    #[serde(default, rename = "continue-on-error")]
    pub continue_on_error: Option<BoolOrExpr>,
    #[serde(default, deserialize_with = "container")]
    pub container: Option<Container>,
    #[serde(default, deserialize_with = "services")]
    pub services: OrderedMap<Container>,
    #[serde(default, deserialize_with = "environment")]
    pub environment: Option<Environment>,
    #[serde(default)]
    pub permissions: Option<Value>,
    #[serde(default)]
    pub concurrency: Option<Value>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// A reusable workflow to call (`owner/repo/.github/workflows/x.yml@ref` or `./path`).
    #[serde(default)]
    pub uses: Option<String>,
    /// Inputs of the reusable workflow, typed as written.
    #[serde(default)]
    pub with: OrderedMap<Value>,
    #[serde(default)]
    pub secrets: Option<JobSecrets>,
}

impl Job {
    /// Whether the job calls a reusable workflow.
    pub fn is_reusable(&self) -> bool {
        self.uses.is_some()
    }

    /// The matrix of the job, when it has one.
    pub fn matrix(&self) -> Option<&Matrix> {
        self.strategy.as_ref()?.matrix.as_ref()
    }
}

/// One step of a job or of a composite action. It has exactly one of `run` and `uses`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Step {
    #[serde(default)]
    pub id: Option<String>,
    /// The raw name, which may hold expressions.
    #[serde(default, deserialize_with = "opt_scalar")]
    pub name: Option<String>,
    #[serde(default, rename = "if", deserialize_with = "condition")]
    pub if_cond: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub run: Option<String>,
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default, rename = "working-directory")]
    pub working_directory: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    pub env: OrderedMap<String>,
    #[serde(default)]
    pub uses: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    pub with: OrderedMap<String>,
    #[serde(default, rename = "continue-on-error")]
    pub continue_on_error: Option<BoolOrExpr>,
    #[serde(default, rename = "timeout-minutes")]
    pub timeout_minutes: Option<NumberOrExpr>,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let step = Step::deserialize(d)?;
        match (&step.run, &step.uses) {
            (Some(_), Some(_)) => Err(de::Error::custom(
                "a step cannot have both `run` and `uses`",
            )),
            (None, None) => Err(de::Error::custom("a step must have `run` or `uses`")),
            _ => Ok(step),
        }
    }
}

impl Step {
    /// The name shown for the step: its `name`, else `Run <first line of run>`, else
    /// `Run <uses>`, else `Step <index + 1>` (`index` is 0-based).
    pub fn display_name(&self, index: usize) -> String {
        if let Some(name) = self.name.as_deref().filter(|n| !n.trim().is_empty()) {
            return name.to_string();
        }
        if let Some(run) = &self.run {
            let first = run
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            return format!("Run {first}");
        }
        if let Some(uses) = &self.uses {
            return format!("Run {uses}");
        }
        format!("Step {}", index + 1)
    }

    /// Whether this is a `run` step.
    pub fn is_run(&self) -> bool {
        self.run.is_some()
    }
}
