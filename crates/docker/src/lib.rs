//! Changeover's Docker adapter: the only crate that speaks bollard.
//!
//! # Layout
//! - [`connect`]: dial an environment (Unix socket, TCP with or without TLS,
//!   SSH) and negotiate the API version.
//! - [`tls`]: TLS from material held in memory, and what its failures mean.
//! - [`ssh`]: SSH through the user's own `ssh` (`docker system dial-stdio`),
//!   host keys shown and accepted once.
//! - [`containers`]: one container up close: inspect, logs, exec with a
//!   TTY, and the debug shell for images without one.
//! - [`read`]: read a whole inventory, or one container, and turn bollard's
//!   types into `changeover-core`'s.
//! - [`edge`]: build the edge image on the daemon, run the edge container,
//!   and talk to it through `docker exec`.
//! - [`runtime`]: core's rollout `Runtime` on bollard (containers, networks,
//!   volumes, images, logs).
//! - [`volumes`]: look into a volume through a helper container (listing,
//!   reading, sizes), never through host paths.
//! - [`build`]: a service's `build:` on the daemon: the context packed
//!   (`.dockerignore` honoured), tagged from its content, the log streamed.
//! - [`registry`]: a registry's API: the login check, tags page by page,
//!   digests by `HEAD`, with its token flow, rate limits and own words;
//!   and [`images`], pulls on the daemon with credentials and progress.
//! - [`live`]: keep an inventory current from the daemon's event stream,
//!   reconnecting with backoff when the daemon goes away.
//!
//! Errors become [`changeover_core::Problem`]s here, so every caller (GUI,
//! CLI, tests) shows the same words. Daemon errors are never swallowed.

pub mod build;
pub mod connect;
pub mod containers;
pub mod edge;
pub mod images;
pub mod live;
pub mod read;
pub mod registry;
pub mod runtime;
pub mod ssh;
pub mod tls;
pub mod volumes;
pub mod watcher;

pub use bollard::Docker;
pub use connect::connect;
pub use live::{watch, Sink};
