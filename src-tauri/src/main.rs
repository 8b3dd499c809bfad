//! Changeover's desktop shell. Thin by design: it holds the application
//! layer (`changeover-application`), forwards what it pushes to the window
//! as events, and answers the window's commands; what those do lives in the
//! application layer.
//!
//! # Layout
//! - `main`: setup — open the environments, follow each in the background,
//!   forward pushes to the window (`live`, `services`, `traffic` events).
//! - [`commands`]: the commands the UI invokes.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;

use std::sync::Arc;

use changeover_application::{AppEvent, Environments};
use tauri::{Emitter, Manager};
use tracing_subscriber::EnvFilter;

/// App-wide event carrying `LiveUpdate`s (inventory, connection states,
/// environments added and removed).
pub const LIVE_EVENT: &str = "live";
/// Every service of one environment, each time one changes (`ServicesUpdate`).
pub const SERVICES_EVENT: &str = "services";
/// A followed service's traffic, once a second (`TrafficUpdate`).
pub const TRAFFIC_EVENT: &str = "traffic";
/// What an automatic redeploy did.
pub const REDEPLOY_EVENT: &str = "redeploy";

/// What the shell keeps: the application layer's environments.
pub struct AppState {
    pub envs: Environments,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let envs = Environments::from_process();
    let result = tauri::Builder::default()
        // The native file pickers for downloads and uploads.
        .plugin(tauri_plugin_dialog::init())
        .manage(AppState { envs: envs.clone() })
        .invoke_handler(tauri::generate_handler![
            commands::environments,
            commands::test_environment,
            commands::trust_host_key,
            commands::add_environment,
            commands::edit_environment,
            commands::remove_environment,
            commands::services,
            commands::watch_traffic,
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
            commands::preview_release,
            commands::container_detail,
            commands::follow_logs,
            commands::stop_logs,
            commands::open_terminal,
            commands::terminal_input,
            commands::terminal_resize,
            commands::close_terminal,
            commands::volume_inspect,
            commands::volume_files,
            commands::volume_preview,
            commands::volume_size,
            commands::volume_download,
            commands::volume_put,
            commands::cancel_transfer,
            commands::service_removal,
            commands::deploy_plan,
            commands::rollback_plan,
            commands::remove_service,
            commands::stack_removal,
            commands::remove_stack,
            commands::volume_snapshots,
            commands::volume_sizes,
            commands::volume_search,
            commands::volume_sqlite,
            commands::volume_export,
            commands::volume_import,
            commands::volume_snapshot,
            commands::volume_clone,
            commands::volume_diff,
            commands::volume_text_diff,
            commands::volume_restore_stops,
            commands::volume_restore,
            commands::volume_remove,
            commands::rollback_snapshots,
            commands::rollback_with_data,
            commands::save_text_file,
            commands::image_tags,
            commands::registry_logins,
            commands::registry_login,
            commands::registry_logout
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            let sink = Arc::new(move |event: AppEvent| {
                let sent = match &event {
                    AppEvent::Live(u) => handle.emit(LIVE_EVENT, u),
                    AppEvent::Services(u) => handle.emit(SERVICES_EVENT, u),
                    AppEvent::Traffic(u) => handle.emit(TRAFFIC_EVENT, u),
                    AppEvent::Redeploy(u) => handle.emit(REDEPLOY_EVENT, u),
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not send an update to the window");
                }
            });
            tauri::async_runtime::spawn(async move { envs.follow(sink) });
            Ok(())
        })
        .build(tauri::generate_context!());

    match result {
        Ok(app) => app.run(|handle, event| {
            if let tauri::RunEvent::Exit = event {
                handle.state::<AppState>().envs.stop();
            }
        }),
        Err(e) => {
            eprintln!("changeover: the window could not start: {e}");
            std::process::exit(1);
        }
    }
}
