//! Commands the window invokes. Each is a few lines over the shared crates.
//!
//! Long operations (rollouts) stream their progress to the window over a
//! Tauri `Channel` of core's `RolloutEvent`s — the same events the CLI prints.

use std::sync::Arc;

use changeover_core::environment::{discover, DiscoveryInput};
use changeover_core::live::EnvironmentView;
use changeover_core::rollout::{EventSink, RolloutEvent, RolloutOutcome};
use changeover_core::service::ServiceView;
use changeover_core::{Problem, ProblemCode};
use changeover_docker::{connect, deploy, Docker};
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

/// Rolls `service` (STACK/SERVICE) to `tag`, streaming the rollout.
#[tauri::command]
pub async fn deploy_tag(
    env: String,
    service: String,
    tag: String,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    deploy::deploy_tag(&dial(&env).await?, &service, &tag, sink(on_event)).await
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
