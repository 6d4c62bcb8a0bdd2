//! The typed model Gitea's jobparser decodes a workflow into and marshals the payload from
//! (`SingleWorkflow`, `Job`, `Step`, … of `gitea.com/gitea/act` `pkg/jobparser/model.go`, as
//! vendored by Gitea 1.22–1.25). What the structs do not name is dropped from the payload, typed
//! fields are converted like `yaml.v3` decodes them (`with:` and `env:` values of a workflow
//! become strings), `yaml.Node` fields are kept as written, and `omitempty` drops empty fields.

use serde_yaml_ng::{Mapping, Value};

pub(crate) use super::value::{go_map, node_to_y, scalar_text, GoAny};
use crate::fake::yaml::Y;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "!!null",
        Value::Bool(_) => "!!bool",
        Value::Number(_) => "!!number",
        Value::String(_) => "!!str",
        Value::Sequence(_) => "!!seq",
        Value::Mapping(_) => "!!map",
        Value::Tagged(t) => kind(&t.value),
    }
}

fn cannot(v: &Value, into: &str, field: &str) -> String {
    format!(
        "yaml: unmarshal errors: cannot unmarshal {} into {into} (field {field:?})",
        kind(v)
    )
}

/// yaml.v3 decoding into a Go `string`: any scalar's text, null leaves "".
pub(crate) fn go_string(v: Option<&Value>, field: &str) -> Result<String, String> {
    match v {
        None => Ok(String::new()),
        Some(Value::Sequence(_) | Value::Mapping(_)) => Err(cannot(v.unwrap(), "string", field)),
        Some(Value::Tagged(t)) => go_string(Some(&t.value), field),
        Some(other) => Ok(scalar_text(other)),
    }
}

/// yaml.v3 decoding into a Go `bool` (accepting YAML 1.1 `yes`/`on`/… as v3 does).
fn go_bool(v: Option<&Value>, field: &str) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(true),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(false),
            _ => Err(cannot(v.unwrap(), "bool", field)),
        },
        Some(Value::Tagged(t)) => go_bool(Some(&t.value), field),
        Some(other) => Err(cannot(other, "bool", field)),
    }
}

/// yaml.v3 decoding into `map[string]string`.
fn go_string_map(v: Option<&Value>, field: &str) -> Result<Vec<(String, String)>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| Ok((scalar_text(k), go_string(Some(v), field)?)))
            .collect(),
        Some(other) => Err(cannot(other, "map[string]string", field)),
    }
}

/// yaml.v3 decoding into `[]string`.
fn go_string_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(s)) => s.iter().map(|v| go_string(Some(v), field)).collect(),
        Some(other) => Err(cannot(other, "[]string", field)),
    }
}

/// The mapping a struct decodes from; null decodes to the zero struct.
fn struct_map<'a>(v: Option<&'a Value>, what: &str) -> Result<Option<&'a Mapping>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(m)) => Ok(Some(m)),
        Some(Value::Tagged(t)) => struct_map(Some(&t.value), what),
        Some(other) => Err(format!(
            "yaml: unmarshal errors: cannot unmarshal {} into {what}",
            kind(other)
        )),
    }
}

fn get<'a>(m: Option<&'a Mapping>, key: &str) -> Option<&'a Value> {
    m.and_then(|m| m.get(key))
}

fn push_str(out: &mut Vec<(Y, Y)>, key: &str, v: &str) {
    if !v.is_empty() {
        out.push((Y::Str(key.into()), Y::Str(v.into())));
    }
}

fn push_node(out: &mut Vec<(Y, Y)>, key: &str, v: &Option<Value>) {
    if let Some(v) = v {
        out.push((Y::Str(key.into()), node_to_y(v)));
    }
}

fn push_string_map(out: &mut Vec<(Y, Y)>, key: &str, m: &[(String, String)]) {
    if !m.is_empty() {
        let y = go_map(m.iter().map(|(k, v)| (k.clone(), Y::Str(v.clone()))));
        out.push((Y::Str(key.into()), y));
    }
}

/// `defaults:` (`Defaults{Run RunDefaults}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Defaults {
    pub shell: String,
    pub working_directory: String,
}

impl Defaults {
    fn decode(v: Option<&Value>) -> Result<Defaults, String> {
        let m = struct_map(v, "jobparser.Defaults")?;
        let run = struct_map(get(m, "run"), "jobparser.RunDefaults")?;
        Ok(Defaults {
            shell: go_string(get(run, "shell"), "shell")?,
            working_directory: go_string(get(run, "working-directory"), "working-directory")?,
        })
    }

    fn push(&self, out: &mut Vec<(Y, Y)>) {
        if *self != Defaults::default() {
            let mut run = Vec::new();
            push_str(&mut run, "shell", &self.shell);
            push_str(&mut run, "working-directory", &self.working_directory);
            let defaults = Y::Map(vec![(Y::Str("run".into()), Y::Map(run))]);
            out.push((Y::Str("defaults".into()), defaults));
        }
    }
}

/// A step (`jobparser.Step`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Step {
    pub id: String,
    pub if_: Option<Value>,
    pub name: String,
    pub uses: String,
    pub run: String,
    pub working_directory: String,
    pub shell: String,
    pub env: Option<Value>,
    pub with: Vec<(String, String)>,
    pub continue_on_error: bool,
    pub timeout_minutes: String,
}

impl Step {
    fn decode(m: &Mapping) -> Result<Step, String> {
        let m = Some(m);
        Ok(Step {
            id: go_string(get(m, "id"), "id")?,
            if_: get(m, "if").cloned(),
            name: go_string(get(m, "name"), "name")?,
            uses: go_string(get(m, "uses"), "uses")?,
            run: go_string(get(m, "run"), "run")?,
            working_directory: go_string(get(m, "working-directory"), "working-directory")?,
            shell: go_string(get(m, "shell"), "shell")?,
            env: get(m, "env").cloned(),
            with: go_string_map(get(m, "with"), "with")?,
            continue_on_error: go_bool(get(m, "continue-on-error"), "continue-on-error")?,
            timeout_minutes: go_string(get(m, "timeout-minutes"), "timeout-minutes")?,
        })
    }

    /// act's `model.Step.String()`: name, else uses, else the whole run script, else the id.
    pub fn display(&self) -> &str {
        [&self.name, &self.uses, &self.run]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or(&self.id)
    }

    fn to_y(&self) -> Y {
        let mut out = Vec::new();
        push_str(&mut out, "id", &self.id);
        push_node(&mut out, "if", &self.if_);
        push_str(&mut out, "name", &self.name);
        push_str(&mut out, "uses", &self.uses);
        push_str(&mut out, "run", &self.run);
        push_str(&mut out, "working-directory", &self.working_directory);
        push_str(&mut out, "shell", &self.shell);
        push_node(&mut out, "env", &self.env);
        push_string_map(&mut out, "with", &self.with);
        if self.continue_on_error {
            out.push((Y::Str("continue-on-error".into()), Y::Bool(true)));
        }
        push_str(&mut out, "timeout-minutes", &self.timeout_minutes);
        Y::Map(out)
    }
}

/// A service container (`jobparser.ContainerSpec`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ContainerSpec {
    image: String,
    env: Vec<(String, String)>,
    ports: Vec<String>,
    volumes: Vec<String>,
    options: String,
    credentials: Vec<(String, String)>,
    cmd: Vec<String>,
}

impl ContainerSpec {
    fn decode(m: &Mapping) -> Result<ContainerSpec, String> {
        let m = Some(m);
        Ok(ContainerSpec {
            image: go_string(get(m, "image"), "image")?,
            env: go_string_map(get(m, "env"), "env")?,
            ports: go_string_list(get(m, "ports"), "ports")?,
            volumes: go_string_list(get(m, "volumes"), "volumes")?,
            options: go_string(get(m, "options"), "options")?,
            credentials: go_string_map(get(m, "credentials"), "credentials")?,
            cmd: go_string_list(get(m, "cmd"), "cmd")?,
        })
    }

    fn to_y(&self) -> Y {
        let list = |l: &[String]| Y::Seq(l.iter().map(|s| Y::Str(s.clone())).collect());
        let mut out = Vec::new();
        push_str(&mut out, "image", &self.image);
        push_string_map(&mut out, "env", &self.env);
        if !self.ports.is_empty() {
            out.push((Y::Str("ports".into()), list(&self.ports)));
        }
        if !self.volumes.is_empty() {
            out.push((Y::Str("volumes".into()), list(&self.volumes)));
        }
        push_str(&mut out, "options", &self.options);
        push_string_map(&mut out, "credentials", &self.credentials);
        if !self.cmd.is_empty() {
            out.push((Y::Str("cmd".into()), list(&self.cmd)));
        }
        Y::Map(out)
    }
}

/// `strategy:` (`jobparser.Strategy`); the matrix is a `yaml.Node`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Strategy {
    pub fail_fast: String,
    pub max_parallel: String,
    /// As written in the workflow; replaced by the combination's `{k: [v]}` when expanded.
    pub matrix: Option<Y>,
    /// The raw node, for the matrix expansion.
    pub raw_matrix: Option<Value>,
    /// Whether the key was present (act's `*Strategy` is nil otherwise).
    pub present: bool,
}

impl Strategy {
    fn decode(v: Option<&Value>) -> Result<Strategy, String> {
        let m = struct_map(v, "jobparser.Strategy")?;
        let raw_matrix = get(m, "matrix").cloned();
        Ok(Strategy {
            fail_fast: go_string(get(m, "fail-fast"), "fail-fast")?,
            max_parallel: go_string(get(m, "max-parallel"), "max-parallel")?,
            matrix: raw_matrix.as_ref().map(node_to_y),
            raw_matrix,
            present: m.is_some(),
        })
    }

    fn push(&self, out: &mut Vec<(Y, Y)>) {
        let mut s = Vec::new();
        push_str(&mut s, "fail-fast", &self.fail_fast);
        push_str(&mut s, "max-parallel", &self.max_parallel);
        if let Some(m) = &self.matrix {
            s.push((Y::Str("matrix".into()), m.clone()));
        }
        if !s.is_empty() {
            out.push((Y::Str("strategy".into()), Y::Map(s)));
        }
    }
}

/// A job (`jobparser.Job`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Job {
    pub name: String,
    pub needs: Option<Value>,
    pub runs_on: Option<Value>,
    /// `runs-on` as the jobparser rewrites it (a string, or a list of strings).
    pub runs_on_out: Option<Y>,
    pub env: Option<Value>,
    pub if_: Option<Value>,
    pub steps: Vec<Step>,
    pub timeout_minutes: String,
    pub services: Vec<(String, Option<ContainerSpec>)>,
    pub strategy: Strategy,
    pub container: Option<Value>,
    pub defaults: Defaults,
    pub outputs: Vec<(String, String)>,
    pub uses: String,
    pub with: Vec<(String, GoAny)>,
    pub secrets: Option<Value>,
    /// `concurrency:`: a string expression, or `{group, cancel-in-progress}` as strings.
    pub concurrency: Option<Y>,
    pub permissions: Option<Value>,
}

impl Job {
    pub fn decode(id: &str, v: &Value) -> Result<Job, String> {
        let m = match v {
            Value::Mapping(m) => Some(m),
            Value::Null => return Err(format!("job {id:?} is null")),
            other => {
                return Err(format!(
                    "yaml: unmarshal errors: cannot unmarshal {} into jobparser.Job (job {id:?})",
                    kind(other)
                ))
            }
        };
        let steps = match get(m, "steps") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(s)) => s
                .iter()
                .filter(|s| !s.is_null()) // SingleWorkflow.jobs() drops nil steps
                .map(|s| match s {
                    Value::Mapping(m) => Step::decode(m),
                    other => Err(cannot(other, "jobparser.Step", "steps")),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(cannot(other, "[]*jobparser.Step", "steps")),
        };
        let services = match get(m, "services") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Mapping(s)) => s
                .iter()
                .map(|(k, v)| match v {
                    Value::Null => Ok((scalar_text(k), None)),
                    Value::Mapping(m) => Ok((scalar_text(k), Some(ContainerSpec::decode(m)?))),
                    other => Err(cannot(other, "jobparser.ContainerSpec", "services")),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(cannot(other, "map[string]*ContainerSpec", "services")),
        };
        let with = match get(m, "with") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Mapping(w)) => w
                .iter()
                .map(|(k, v)| (scalar_text(k), GoAny::from_value(v)))
                .collect(),
            Some(other) => return Err(cannot(other, "map[string]interface {}", "with")),
        };
        let concurrency = match get(m, "concurrency") {
            None => None,
            // `RawConcurrency.UnmarshalYAML`: a scalar is kept as the expression.
            Some(Value::Mapping(c)) => {
                let c = Some(c);
                let mut out = Vec::new();
                push_str(&mut out, "group", &go_string(get(c, "group"), "group")?);
                let cancel = go_string(get(c, "cancel-in-progress"), "cancel-in-progress")?;
                push_str(&mut out, "cancel-in-progress", &cancel);
                Some(Y::Map(out))
            }
            Some(other) => Some(Y::Str(go_string(Some(other), "concurrency")?)),
        };
        Ok(Job {
            name: go_string(get(m, "name"), "name")?,
            needs: get(m, "needs").cloned(),
            runs_on: get(m, "runs-on").cloned(),
            runs_on_out: get(m, "runs-on").map(node_to_y),
            env: get(m, "env").cloned(),
            if_: get(m, "if").cloned(),
            steps,
            timeout_minutes: go_string(get(m, "timeout-minutes"), "timeout-minutes")?,
            services,
            strategy: Strategy::decode(get(m, "strategy"))?,
            container: get(m, "container").cloned(),
            defaults: Defaults::decode(get(m, "defaults"))?,
            outputs: go_string_map(get(m, "outputs"), "outputs")?,
            uses: go_string(get(m, "uses"), "uses")?,
            with,
            secrets: get(m, "secrets").cloned(),
            concurrency,
            permissions: get(m, "permissions").cloned(),
        })
    }

    /// act's `Job.Needs()`: a string or a list of strings, anything else none.
    pub fn needs(&self) -> Vec<String> {
        match &self.needs {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(s)) => s
                .iter()
                .map(|v| match v {
                    Value::Sequence(_) | Value::Mapping(_) => None,
                    v => Some(scalar_text(v)),
                })
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default(),
            Some(v @ (Value::Bool(_) | Value::Number(_) | Value::Null)) => vec![scalar_text(v)],
            _ => Vec::new(),
        }
    }

    /// act's `Job.RunsOn()`: a label, a list of labels, or `{group, labels}` (labels then group).
    pub fn runs_on_labels(&self) -> Vec<String> {
        fn as_list(v: Option<&Value>) -> Vec<String> {
            match v {
                Some(Value::Sequence(s)) => s
                    .iter()
                    .map(|v| match v {
                        Value::Sequence(_) | Value::Mapping(_) => None,
                        v => Some(scalar_text(v)),
                    })
                    .collect::<Option<Vec<_>>>()
                    .unwrap_or_default(),
                Some(Value::Mapping(_)) | None => Vec::new(),
                Some(v) => vec![scalar_text(v)],
            }
        }
        match &self.runs_on {
            Some(Value::Mapping(m)) => {
                let group = match m.get("group") {
                    Some(Value::Sequence(_) | Value::Mapping(_)) => return Vec::new(),
                    g => g.map(scalar_text).unwrap_or_default(),
                };
                let mut labels = as_list(m.get("labels"));
                if !group.is_empty() {
                    labels.push(group);
                }
                labels
            }
            other => as_list(other.as_ref()),
        }
    }

    /// The `if:` text Gitea's job emitter looks at (`job.If.Value`).
    pub fn if_value(&self) -> String {
        self.if_.as_ref().map(scalar_text).unwrap_or_default()
    }

    pub fn to_y(&self) -> Y {
        let mut out = Vec::new();
        push_str(&mut out, "name", &self.name);
        push_node(&mut out, "needs", &self.needs);
        if let Some(r) = &self.runs_on_out {
            out.push((Y::Str("runs-on".into()), r.clone()));
        }
        push_node(&mut out, "env", &self.env);
        push_node(&mut out, "if", &self.if_);
        if !self.steps.is_empty() {
            let steps = Y::Seq(self.steps.iter().map(Step::to_y).collect());
            out.push((Y::Str("steps".into()), steps));
        }
        push_str(&mut out, "timeout-minutes", &self.timeout_minutes);
        if !self.services.is_empty() {
            let services = self
                .services
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map_or(Y::Null, ContainerSpec::to_y)));
            out.push((Y::Str("services".into()), go_map(services)));
        }
        self.strategy.push(&mut out);
        push_node(&mut out, "container", &self.container);
        self.defaults.push(&mut out);
        push_string_map(&mut out, "outputs", &self.outputs);
        push_str(&mut out, "uses", &self.uses);
        if !self.with.is_empty() {
            let with = go_map(self.with.iter().map(|(k, v)| (k.clone(), v.to_y())));
            out.push((Y::Str("with".into()), with));
        }
        push_node(&mut out, "secrets", &self.secrets);
        if let Some(c) = &self.concurrency {
            out.push((Y::Str("concurrency".into()), c.clone()));
        }
        push_node(&mut out, "permissions", &self.permissions);
        Y::Map(out)
    }
}

/// The workflow-level keys a `SingleWorkflow` keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Header {
    pub name: String,
    pub on: Option<Value>,
    pub env: Vec<(String, String)>,
    pub defaults: Defaults,
    pub permissions: Option<Value>,
    pub run_name: String,
}

impl Header {
    /// `yaml.Unmarshal(content, &SingleWorkflow{})`, returning the raw `jobs:` node too.
    pub fn decode(doc: &Value) -> Result<(Header, Option<Value>), String> {
        let m = struct_map(Some(doc), "jobparser.SingleWorkflow")?;
        let header = Header {
            name: go_string(get(m, "name"), "name")?,
            on: get(m, "on").cloned(),
            env: go_string_map(get(m, "env"), "env")?,
            defaults: Defaults::decode(get(m, "defaults"))?,
            permissions: get(m, "permissions").cloned(),
            run_name: go_string(get(m, "run-name"), "run-name")?,
        };
        Ok((header, get(m, "jobs").cloned()))
    }
}

/// A workflow with one job and one matrix combination (`jobparser.SingleWorkflow`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SingleWorkflow {
    pub header: Header,
    pub job_id: String,
    pub job: Job,
}

impl SingleWorkflow {
    /// `SingleWorkflow.Marshal`: name, on, env, jobs, defaults, permissions, run-name.
    pub fn marshal(&self) -> String {
        let h = &self.header;
        let mut out = Vec::new();
        push_str(&mut out, "name", &h.name);
        push_node(&mut out, "on", &h.on);
        push_string_map(&mut out, "env", &h.env);
        let jobs = Y::Map(vec![(Y::Str(self.job_id.clone()), self.job.to_y())]);
        out.push((Y::Str("jobs".into()), jobs));
        h.defaults.push(&mut out);
        push_node(&mut out, "permissions", &h.permissions);
        push_str(&mut out, "run-name", &h.run_name);
        crate::fake::yaml::to_string(&Y::Map(out))
    }
}
