//! Changeover's Docker adapter: the only crate that speaks bollard.
//!
//! # Layout
//! - [`connect`]: dial an environment (Unix socket, TCP with or without TLS,
//!   SSH) and negotiate the API version.
//! - [`read`]: read a whole inventory, or one container, and turn bollard's
//!   types into `changeover-core`'s.
//! - [`live`]: keep an inventory current from the daemon's event stream,
//!   reconnecting with backoff when the daemon goes away.
//!
//! Errors become [`changeover_core::Problem`]s here, so every caller (GUI,
//! CLI, tests) shows the same words. Daemon errors are never swallowed.

pub mod connect;
pub mod live;
pub mod read;

pub use bollard::Docker;
pub use connect::connect;
pub use live::{watch, Sink};
