//! The workflow file model: workflows, jobs, steps, action metadata, matrix expansion and job
//! planning.

pub mod action;
mod check;
pub mod error;
pub mod matrix;
pub mod plan;
pub mod types;
pub mod workflow;

pub use action::{Action, ActionInput, ActionOutput, Runs};
pub use error::ModelError;
pub use matrix::{expand_matrix, job_display_name};
pub use plan::plan;
pub use types::{BoolOrExpr, NumberOrExpr, OrderedMap, StringList};
pub use workflow::{
    load_workflows, CallOutput, CallSecret, Container, Credentials, Defaults, Environment,
    EventConfig, EventFilters, Input, Job, JobSecrets, Matrix, On, RunDefaults, RunsOn, Schedule,
    Step, Strategy, Workflow, WorkflowCall, WorkflowDispatch,
};
