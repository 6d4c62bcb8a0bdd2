//! Gitea Actions runner protocol (runner.v1 / ping.v1 over Connect).
//!
//! - [`proto`]: the wire messages, with Gitea's field numbers.
//! - [`Client`]: a Connect client for the six RPCs, with Gitea's error quirks folded into
//!   [`ClientError`].
//! - [`Registration`]: the `.runner` file act_runner writes, read and written compatibly.
//! - `fake` (feature `fake`): an in-process Gitea that behaves like the real one for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_gitea::ClientError> {
//! use kiln_gitea::{Client, ClientOptions, proto};
//! let client = Client::new("https://gitea.example.com", ClientOptions::default())?
//!     .with_credentials("runner-uuid", "runner-token");
//! let resp = client
//!     .fetch_task(proto::FetchTaskRequest { tasks_version: 0 }, std::time::Duration::from_secs(5))
//!     .await?;
//! if let Some(task) = resp.task {
//!     println!("got task {}", task.id);
//! }
//! # Ok(()) }
//! ```

mod client;
mod json;
pub mod proto;
mod registration;

#[cfg(feature = "fake")]
pub mod fake;

pub use client::{Client, ClientError, ClientOptions, Code, CAPABILITIES_HEADER};
pub use json::{json_to_struct, json_to_value, struct_to_json, value_to_json};
pub use registration::{Registration, RegistrationError};
