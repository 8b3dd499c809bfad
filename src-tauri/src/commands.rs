//! Commands the window invokes. Each is a few lines over the shared crates.

use changeover_core::live::EnvironmentView;
use changeover_core::{Problem, ProblemCode};
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
