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

/// What the shell keeps: the application layer's environments.
pub struct AppState {
    pub envs: Environments,
}

fn main() {
    #[cfg(target_os = "linux")]
    draw_without_dmabuf_when_there_is_no_gpu();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let envs = Environments::from_process();
    let result = tauri::Builder::default()
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
            commands::save_text_file
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            let sink = Arc::new(move |event: AppEvent| {
                let sent = match &event {
                    AppEvent::Live(u) => handle.emit(LIVE_EVENT, u),
                    AppEvent::Services(u) => handle.emit(SERVICES_EVENT, u),
                    AppEvent::Traffic(u) => handle.emit(TRAFFIC_EVENT, u),
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

/// WebKitGTK draws the page into DMA-BUF buffers meant for a GPU. Where the
/// machine has no GPU render node (a VM, a remote desktop, Xvfb) Mesa does
/// that in software and each frame costs the web process milliseconds
/// more: bench/app measured keystroke → echo in a terminal at a median of
/// 27 ms with it and 16 ms without when keys come right after a frame, and
/// at the same 11 ms median but p99 24 vs 19 ms when typed at random
/// moments. So there, unless the user set it either way, WebKit draws into
/// shared memory instead. Runs first, before any thread exists.
#[cfg(target_os = "linux")]
fn draw_without_dmabuf_when_there_is_no_gpu() {
    const VAR: &str = "WEBKIT_DISABLE_DMABUF_RENDERER";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let render_node = std::fs::read_dir("/dev/dri")
        .map(|dir| {
            dir.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
        })
        .unwrap_or(false);
    if !render_node {
        std::env::set_var(VAR, "1");
    }
}
