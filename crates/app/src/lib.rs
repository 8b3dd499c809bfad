//! Changeover's application layer: what both shells — the `changeover`
//! command and the desktop app — call. No Tauri here: it builds and runs in
//! tests without a desktop.
//!
//! # Layout
//! - [`containers`]: container detail: inspect, logs (one container or a
//!   whole service, across rollouts), terminals and the debug shell.
//! - [`environments`]: the registry of environments (discovered and added),
//!   each kept open with one connection and one edge handle; adding,
//!   testing, editing and removing environments.
//! - [`follow`]: the desktop app's background work per environment — live
//!   inventory, the edge followed with one waiting session, services and
//!   traffic pushed, candidates settled.
//! - [`events`]: what is pushed to the app.
//! - [`services`]: deploys, rollbacks, forms, export, the sandbox, and
//!   reading services.
//! - [`remove`]: removing a service or a whole stack (its volumes only
//!   when asked), with what would go said first.
//! - [`traffic`]: switch, split, preview, promote, abort, maintenance.
//! - [`volumes`]: what is in a volume (pages of folders, previews, sizes),
//!   who uses it and which releases mounted it, through the volume helper.
//! - [`snapshots`]: snapshots of volumes (by hand and before deploys),
//!   clones, diffs, restores, and rolling a service back with its data.
//! - [`plans`]: what a deploy or a rollback would change (`--dry-run`,
//!   the window's diff before Deploy and Roll back), nothing changed.
//! - [`redeploy`]: automatic redeploys — one pass over the watched
//!   services, new images rolled out, canaries promoted or aborted.
//! - [`watcher`]: `changeover watch` installed as a container on the
//!   environment, its logins copied in, for redeploys with no laptop open.
//! - [`registries`]: logins (the keyring, or what `docker login` left),
//!   tags merged from the daemon and the registry, pulls with progress.
//! - [`settings`]: the app's config and runtime folders, written atomically.
//! - [`secrets`]: the OS keyring.
//!
//! Deliberately left out: presentation (the CLI prints, the window draws)
//! and anything Docker-specific (that is `changeover-docker`).

pub mod cancel;
pub mod containers;
pub mod environments;
pub mod events;
pub mod follow;
pub mod plans;
pub mod redeploy;
pub mod registries;
pub mod remove;
pub mod secrets;
pub mod services;
pub mod settings;
pub mod snapshots;
pub mod traffic;
pub mod volumes;
pub mod watcher;
mod zip_tar;

pub use environments::{ConnectionTest, Environment, Environments, NewEnvironment};
pub use events::{AppEvent, AppSink, ServicesUpdate, TrafficUpdate};
