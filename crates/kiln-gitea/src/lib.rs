//! Gitea Actions runner protocol (runner.v1 / ping.v1 over Connect).
