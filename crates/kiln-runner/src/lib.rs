//! The Gitea runner daemon.
