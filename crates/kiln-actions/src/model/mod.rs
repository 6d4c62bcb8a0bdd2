//! The workflow file model: workflows, jobs, steps, action metadata, matrix expansion and job
//! planning.

pub mod action;
mod check;
pub mod error;
pub mod matrix;
pub mod on;
pub mod plan;
pub mod types;
pub mod workflow;

pub use action::{Action, ActionInput, ActionOutput, Runs};
pub use error::ModelError;
pub use matrix::{expand_matrix, job_display_name};
pub use on::{
    CallOutput, CallSecret, EventConfig, EventFilters, Input, On, Schedule, WorkflowCall,
    WorkflowDispatch,
};
pub use plan::plan;
pub use types::{BoolOrExpr, NumberOrExpr, OrderedMap, StringList};
pub use workflow::{
    load_workflows, Container, Credentials, Defaults, Environment, Job, JobSecrets, Matrix,
    RunDefaults, RunsOn, Step, Strategy, Workflow,
};
