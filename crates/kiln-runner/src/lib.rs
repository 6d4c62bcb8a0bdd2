//! The Gitea runner daemon.

pub mod cache;
