//! Gitea/GitHub Actions workflows: the YAML model, the expression language, job planning and
//! step execution. The runner daemon and `kiln exec` share this code path for one job.

pub mod model;
