//! BuildKit's gRPC API served by kiln's engine: `Control` (Solve, Status, Session, ListWorkers,
//! Info, DiskUsage, Prune), the gateway `LLBBridge` that clients build through, the session
//! tunnel with its client-side services (filesync, filesend, auth, secrets), health, and the
//! TCP (mutual TLS) and unix socket listeners. Unmodified `buildctl` and `docker buildx
//! --driver remote` talk to it.

pub mod attrs;
mod bridge;
pub mod builds;
pub mod certs;
mod control;
pub mod daemon;
mod export;
pub mod hijack;
pub mod server;
pub mod session;
pub mod status;
pub mod tls;

pub use daemon::Daemon;
