//! Commands the window invokes. Each is a few lines over the shared crates.
//!
//! Long operations (rollouts) stream their progress to the window over a
//! Tauri `Channel` of core's `RolloutEvent`s — the same events the CLI prints.

use std::sync::Arc;

use changeover_core::environment::{discover, DiscoveryInput};
use changeover_core::form::{FormCheck, ServiceForm};
use changeover_core::live::EnvironmentView;
use changeover_core::rollout::Settled;
use changeover_core::rollout::{EventSink, RolloutEvent, RolloutOutcome};
use changeover_core::service::{ServiceView, Strategy, TrafficView};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::{connect, deploy, traffic, Docker};
use tauri::ipc::Channel;
use tauri::State;

use crate::AppState;

/// Every environment with its connection state and last inventory. The window
/// calls this once after it starts listening to `live` updates.
#[tauri::command]
pub fn environments(state: State<'_, AppState>) -> Result<Vec<EnvironmentView>, Problem> {
    state.views.lock().map(|views| views.all()).map_err(|_| {
        Problem::new(
            ProblemCode::DaemonError,
            "the app's state is unavailable after an internal error; restart Changeover",
        )
    })
}

async fn dial(env: &str) -> Result<Docker, Problem> {
    let environments = discover(&DiscoveryInput::from_process());
    connect(environments.get(env)?).await
}

fn sink(channel: Channel<RolloutEvent>) -> EventSink {
    Arc::new(move |e| {
        if let Err(err) = channel.send(e) {
            tracing::warn!(error = %err, "could not send a rollout event to the window");
        }
    })
}

/// Services on an environment, with their releases and containers.
#[tauri::command]
pub async fn services(env: String) -> Result<Vec<ServiceView>, Problem> {
    deploy::services(&dial(&env).await?).await
}

/// Rolls `service` (STACK/SERVICE) to `tag`, streaming the rollout; with
/// `strategy`, deploys this way (blue-green, canary) from now on.
#[tauri::command]
pub async fn deploy_tag(
    env: String,
    service: String,
    tag: String,
    strategy: Option<Strategy>,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    deploy::deploy_tag(&dial(&env).await?, &service, &tag, strategy, sink(on_event)).await
}

/// Rolls `service` back to its previous release, streaming the rollout.
#[tauri::command]
pub async fn rollback(
    env: String,
    service: String,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    deploy::rollback(&dial(&env).await?, &service, sink(on_event)).await
}

/// Deploys the sample stack; answers the port it listens on.
#[tauri::command]
pub async fn try_sandbox(env: String, on_event: Channel<RolloutEvent>) -> Result<u16, Problem> {
    deploy::sandbox(&dial(&env).await?, sink(on_event)).await
}

/// The form for editing `name` (STACK/SERVICE), or a blank form for a new
/// service when `name` is a stack's name.
#[tauri::command]
pub async fn service_form(env: String, name: String) -> Result<ServiceForm, Problem> {
    deploy::service_form(&dial(&env).await?, &name).await
}

/// Checks a form without changing anything.
#[tauri::command]
pub async fn check_service_form(env: String, form: ServiceForm) -> Result<FormCheck, Problem> {
    deploy::check_form(&dial(&env).await?, &form).await
}

/// Creates or changes the service a form describes, streaming the rollout.
#[tauri::command]
pub async fn deploy_service_form(
    env: String,
    form: ServiceForm,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    deploy::deploy_form(&dial(&env).await?, &form, sink(on_event)).await
}

/// A stack's services as a Compose file.
#[tauri::command]
pub async fn export_stack(env: String, stack: String) -> Result<String, Problem> {
    deploy::export_stack(&dial(&env).await?, &stack).await
}

/// Writes an exported stack to a file; an existing file only when `replace`.
/// Answers the full path written.
#[tauri::command]
pub fn save_stack_file(path: String, text: String, replace: bool) -> Result<String, Problem> {
    changeover_core::compose::write_file(&path, &text, replace).map(|p| p.display().to_string())
}

/// A service's routes on the edge: split, maintenance, per-release figures.
#[tauri::command]
pub async fn traffic(env: String, service: String) -> Result<TrafficView, Problem> {
    let docker = dial(&env).await?;
    // A canary its guard stopped is aborted, and a blue-green standby whose
    // time is up ends, while the window watches.
    if let Err(e) = traffic::settle(&docker, &service, Arc::new(|_| {})).await {
        tracing::warn!(service, error = %e, "could not settle the release beside the current one");
    }
    traffic::show(&docker, &service).await
}

/// Every new request to one release (its number or a tag).
#[tauri::command]
pub async fn switch_traffic(env: String, service: String, to: String) -> Result<u32, Problem> {
    traffic::switch(&dial(&env).await?, &service, &to).await
}

/// `percent` of new clients to the candidate, sticky.
#[tauri::command]
pub async fn split_traffic(env: String, service: String, percent: i64) -> Result<(), Problem> {
    traffic::split(&dial(&env).await?, &service, percent)
        .await
        .map(|_| ())
}

/// The candidate becomes current; the old release drains and stops.
#[tauri::command]
pub async fn promote_release(env: String, service: String) -> Result<String, Problem> {
    let done: Settled = traffic::promote(&dial(&env).await?, &service, Arc::new(|_| {})).await?;
    Ok(done.message)
}

/// The candidate is removed; all traffic back to the current release.
#[tauri::command]
pub async fn abort_release(env: String, service: String) -> Result<String, Problem> {
    let done: Settled = traffic::abort(&dial(&env).await?, &service, Arc::new(|_| {})).await?;
    Ok(done.message)
}

/// Starts a preview of the candidate with a new token (answered), or ends
/// it (`on` false).
#[tauri::command]
pub async fn preview_release(
    env: String,
    service: String,
    on: bool,
) -> Result<Option<String>, Problem> {
    let token = on.then(traffic::new_preview_token);
    traffic::preview(&dial(&env).await?, &service, token.clone()).await?;
    Ok(token)
}

/// Pauses a service behind a 503 page (`None` resumes it).
#[tauri::command]
pub async fn set_maintenance(
    env: String,
    service: String,
    message: Option<String>,
) -> Result<(), Problem> {
    traffic::maintenance(&dial(&env).await?, &service, message).await
}
