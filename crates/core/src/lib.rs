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
//! - [`stack`]: Compose stack files read into service definitions, with
//!   every problem located by file, line and key.
//! - [`detail`]: one container up close: inspect, log lines, terminals.
//! - [`compose`]: service definitions written back as a Compose file that
//!   reads into the same definitions.
//! - [`form`]: the GUI's service form, checked by the stack-file rules with
//!   each problem placed on its field.
//! - [`image`]: image references, parsed one way for every caller.
//! - [`service`]: service definitions, releases and the record of a service
//!   kept on its environment.
//! - [`rollout`]: rollouts as per-slot reconciliations (start-first, health
//!   gated, restore on failure, one per service at a time), driven through
//!   the `Runtime` and `EdgeControl` traits.
//! - [`edge`]: the control protocol of the edge proxy.
//! - [`redeploy`]: what `x-changeover.autoredeploy` watches, version ranges.
//! - [`build`]: `build:` settings, `.dockerignore` rules and content tags.
//! - [`registry`]: registries without I/O — which one a reference names,
//!   `docker login`'s config.json, challenges, pages, rate limits, and the
//!   order tags are shown in.
//! - [`secret`]: secrets in memory that never print.
//! - [`problem`]: the stable error codes and human messages that cross to the
//!   UI and the CLI.
//!
//! Types that cross to the UI derive `ts_rs::TS`; `make types` regenerates
//! `ui/src/lib/ipc/generated/` and CI fails when the committed copy drifts.
//!
//! Deliberately left out: talking to a daemon or the edge (that is
//! `changeover-docker`; the rollout only sees traits), presentation (the UI and the CLI decide how things look).

pub mod build;
pub mod compose;
pub mod compose_yaml;
pub mod container;
pub mod detail;
pub mod edge;
pub mod environment;
pub mod form;
pub mod image;
pub mod interpolate;
pub mod inventory;
pub mod live;
pub mod plan;
pub mod problem;
pub mod redeploy;
pub mod registry;
pub mod rollout;
pub mod secret;
pub mod service;
pub mod snapshot;
pub mod sqlite;
pub mod stack;
pub mod volume;

pub use problem::{Problem, ProblemCode};
