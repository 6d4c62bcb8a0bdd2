//! Gitea/GitHub Actions workflows: the YAML model, the expression language, job planning and
//! step execution. The runner daemon and `kiln exec` share this code path for one job.

pub mod commands;
pub mod envfile;
pub mod exec;
pub mod expr;
pub mod local;
pub mod mask;
pub mod model;
pub mod process;
pub mod reusable;
