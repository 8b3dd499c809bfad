//! Changeover's desktop shell. Thin by design: it wires the environments'
//! live watches to the window and answers a few commands; what those do lives
//! in `changeover-core` and `changeover-docker`.
//!
//! # Layout
//! - `main`: setup — discover environments, start one watch per environment,
//!   forward every update to the window as the `live` event.
//! - [`commands`]: the commands the UI invokes.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;

use std::sync::{Arc, Mutex};

use changeover_core::environment::{discover, DiscoveryInput};
use changeover_core::live::{LiveUpdate, LiveViews};
use tauri::{Emitter, Manager};
use tracing_subscriber::EnvFilter;

/// The name of the app-wide event that carries [`LiveUpdate`]s to the window.
pub const LIVE_EVENT: &str = "live";

/// What the shell keeps: the live views, updated before each update is
/// forwarded, so a window that asks for them late still sees everything.
pub struct AppState {
    pub views: Mutex<LiveViews>,
    /// Turning this true stops every watch (on exit).
    pub stop: tokio::sync::watch::Sender<bool>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let environments = discover(&DiscoveryInput::from_process());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        views: Mutex::new(LiveViews::new(&environments)),
        stop,
    };

    let result = tauri::Builder::default()
        .manage(state)
        .invoke_handler(tauri::generate_handler![
            commands::environments,
            commands::services,
            commands::deploy_tag,
            commands::rollback,
            commands::try_sandbox,
            commands::service_form,
            commands::check_service_form,
            commands::deploy_service_form,
            commands::export_stack,
            commands::save_stack_file,
            commands::traffic,
            commands::set_maintenance,
            commands::switch_traffic,
            commands::split_traffic,
            commands::promote_release,
            commands::abort_release,
            commands::preview_release
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            for spec in environments.environments.clone() {
                let handle = handle.clone();
                let sink: changeover_docker::Sink = Arc::new(move |update: LiveUpdate| {
                    if let Ok(mut views) = handle.state::<AppState>().views.lock() {
                        views.apply(&update);
                    }
                    if let Err(e) = handle.emit(LIVE_EVENT, &update) {
                        tracing::warn!(error = %e, "could not send an update to the window");
                    }
                });
                tauri::async_runtime::spawn(changeover_docker::watch(spec, sink, stop_rx.clone()));
            }
            Ok(())
        })
        .build(tauri::generate_context!());

    match result {
        Ok(app) => app.run(|handle, event| {
            if let tauri::RunEvent::Exit = event {
                let _ = handle.state::<AppState>().stop.send(true);
            }
        }),
        Err(e) => {
            eprintln!("changeover: the window could not start: {e}");
            std::process::exit(1);
        }
    }
}
