//! Changeover's domain, free of Tauri, bollard and any I/O client.
//!
//! # Layout
//! - [`environment`]: which Docker daemons exist (`DOCKER_HOST`, Docker CLI
//!   contexts, the default socket) and how their addresses parse.
//! - [`inventory`]: what runs on a daemon (containers, images, volumes,
//!   networks) as plain data, how containers group into Compose projects and
//!   Changeover stacks, and how live changes apply to a snapshot.
//! - [`live`]: the live views the shells keep per environment, and the
//!   updates that change them.
//! - [`problem`]: the stable error codes and human messages that cross to the
//!   UI and the CLI.
//!
//! Types that cross to the UI derive `ts_rs::TS`; `make types` regenerates
//! `ui/src/lib/ipc/generated/` and CI fails when the committed copy drifts.
//!
//! Deliberately left out: talking to a daemon (that is `changeover-docker`),
//! presentation (the UI and the CLI decide how things look).

pub mod edge;
pub mod environment;
pub mod inventory;
pub mod live;
pub mod problem;
pub mod rollout;
pub mod service;
pub mod stack;

pub use problem::{Problem, ProblemCode};
