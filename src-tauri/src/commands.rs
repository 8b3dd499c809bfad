//! Commands the window invokes. Each is a few lines over the application
//! layer: find the environment, call the use case, hand back the result.
//!
//! Long operations (rollouts) stream their progress to the window over a
//! Tauri `Channel` of core's `RolloutEvent`s — the same events the CLI prints.

use std::sync::Arc;

use changeover_application::containers::{self, LogBatch, TerminalMode};
use changeover_application::{
    services, snapshots, traffic, ConnectionTest, Environment, NewEnvironment,
};
use changeover_core::detail::{ContainerDetail, LogQuery, TerminalEvent, TerminalOpened};
use changeover_core::form::{FormCheck, ServiceForm};
use changeover_core::live::EnvironmentView;
use changeover_core::rollout::{EventSink, RolloutEvent, RolloutOutcome, Settled};
use changeover_core::service::{ServiceView, Strategy, TrafficView};
use changeover_core::snapshot::Copied;
use changeover_core::Problem;
use tauri::ipc::Channel;
use tauri::State;

use crate::AppState;

fn env(state: &State<'_, AppState>, name: &str) -> Result<Arc<Environment>, Problem> {
    state.envs.get(Some(name))
}

fn sink(channel: Channel<RolloutEvent>) -> EventSink {
    Arc::new(move |e| {
        if let Err(err) = channel.send(e) {
            tracing::warn!(error = %err, "could not send a rollout event to the window");
        }
    })
}

/// Every environment with its connection state and last inventory. The window
/// calls this once after it starts listening to `live` updates.
#[tauri::command]
pub fn environments(state: State<'_, AppState>) -> Vec<EnvironmentView> {
    state.envs.views()
}

/// Tries to reach the environment a form describes, saving nothing.
#[tauri::command]
pub async fn test_environment(
    state: State<'_, AppState>,
    form: NewEnvironment,
) -> Result<ConnectionTest, Problem> {
    Ok(state.envs.test(&form).await)
}

/// Trusts the SSH host key of `host` with `fingerprint` (as shown by a test).
#[tauri::command]
pub async fn trust_host_key(
    state: State<'_, AppState>,
    host: String,
    fingerprint: String,
) -> Result<(), Problem> {
    state.envs.trust_host_key(&host, &fingerprint).await
}

/// Adds an environment; unless `anyway`, only when it answers.
#[tauri::command]
pub async fn add_environment(
    state: State<'_, AppState>,
    form: NewEnvironment,
    anyway: bool,
) -> Result<EnvironmentView, Problem> {
    state.envs.add(&form, anyway).await
}

/// Changes an environment added in Changeover.
#[tauri::command]
pub async fn edit_environment(
    state: State<'_, AppState>,
    name: String,
    form: NewEnvironment,
    anyway: bool,
) -> Result<EnvironmentView, Problem> {
    state.envs.edit(&name, &form, anyway).await
}

/// Removes an environment added in Changeover, with its keyring entries.
#[tauri::command]
pub async fn remove_environment(state: State<'_, AppState>, name: String) -> Result<(), Problem> {
    state.envs.remove(&name).await
}

/// Services on an environment, with their releases and containers (the
/// window asks once; changes are pushed as `services` events).
#[tauri::command]
pub async fn services(
    state: State<'_, AppState>,
    env: String,
) -> Result<Vec<ServiceView>, Problem> {
    services::services(&*self::env(&state, &env)?).await
}

/// Starts or stops pushing a service's traffic once a second (`traffic`
/// events), while a Traffic panel shows it.
#[tauri::command]
pub fn watch_traffic(
    state: State<'_, AppState>,
    env: String,
    service: String,
    on: bool,
) -> Result<(), Problem> {
    state.envs.watch_traffic(&env, &service, on)
}

/// Rolls `service` (STACK/SERVICE) to `tag`, streaming the rollout; with
/// `strategy`, deploys this way (blue-green, canary) from now on; with
/// `pull`, pulls the tag first (the registry's is newer). With `stop_id`,
/// `cancel_transfer(stop_id)` stops its pull (and so the rollout, before
/// anything changed).
#[tauri::command]
#[allow(clippy::too_many_arguments)]
pub async fn deploy_tag(
    state: State<'_, AppState>,
    env: String,
    service: String,
    tag: String,
    strategy: Option<Strategy>,
    pull: Option<bool>,
    stop_id: Option<u64>,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    let env = self::env(&state, &env)?;
    let cancels = state.envs.cancels();
    let stop = cancels.pull_stop(stop_id);
    let (_guard, stop) = match stop {
        Some((guard, stop)) => (Some(guard), Some(stop)),
        None => (None, None),
    };
    if pull == Some(true) {
        return services::pull_and_deploy_tag(&env, &service, &tag, strategy, stop, sink(on_event))
            .await;
    }
    services::deploy_tag(&env, &service, &tag, strategy, stop, sink(on_event)).await
}

/// Rolls `service` back to its previous release, streaming the rollout.
#[tauri::command]
pub async fn rollback(
    state: State<'_, AppState>,
    env: String,
    service: String,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    services::rollback(&*self::env(&state, &env)?, &service, sink(on_event)).await
}

/// Deploys the sample stack; answers the port it listens on.
#[tauri::command]
pub async fn try_sandbox(
    state: State<'_, AppState>,
    env: String,
    on_event: Channel<RolloutEvent>,
) -> Result<u16, Problem> {
    services::sandbox(&*self::env(&state, &env)?, sink(on_event)).await
}

/// The form for editing `name` (STACK/SERVICE), or a blank form for a new
/// service when `name` is a stack's name.
#[tauri::command]
pub async fn service_form(
    state: State<'_, AppState>,
    env: String,
    name: String,
) -> Result<ServiceForm, Problem> {
    services::service_form(&*self::env(&state, &env)?, &name).await
}

/// Checks a form without changing anything.
#[tauri::command]
pub async fn check_service_form(
    state: State<'_, AppState>,
    env: String,
    form: ServiceForm,
) -> Result<FormCheck, Problem> {
    services::check_form(&*self::env(&state, &env)?, &form).await
}

/// Creates or changes the service a form describes, streaming the rollout.
#[tauri::command]
pub async fn deploy_service_form(
    state: State<'_, AppState>,
    env: String,
    form: ServiceForm,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    services::deploy_form(&*self::env(&state, &env)?, &form, sink(on_event)).await
}

/// A stack's services as a Compose file.
#[tauri::command]
pub async fn export_stack(
    state: State<'_, AppState>,
    env: String,
    stack: String,
) -> Result<String, Problem> {
    services::export_stack(&*self::env(&state, &env)?, &stack).await
}

/// Writes an exported stack to a file; an existing file only when `replace`.
/// Answers the full path written.
#[tauri::command]
pub fn save_stack_file(path: String, text: String, replace: bool) -> Result<String, Problem> {
    changeover_core::compose::write_file(&path, &text, replace).map(|p| p.display().to_string())
}

/// A service's routes on the edge: split, maintenance, per-release figures.
#[tauri::command]
pub async fn traffic(
    state: State<'_, AppState>,
    env: String,
    service: String,
) -> Result<TrafficView, Problem> {
    traffic::show(&*self::env(&state, &env)?, &service).await
}

/// Every new request to one release (its number or a tag).
#[tauri::command]
pub async fn switch_traffic(
    state: State<'_, AppState>,
    env: String,
    service: String,
    to: String,
) -> Result<u32, Problem> {
    traffic::switch(&*self::env(&state, &env)?, &service, &to).await
}

/// `percent` of new clients to the candidate, sticky.
#[tauri::command]
pub async fn split_traffic(
    state: State<'_, AppState>,
    env: String,
    service: String,
    percent: i64,
) -> Result<(), Problem> {
    traffic::split(&*self::env(&state, &env)?, &service, percent)
        .await
        .map(|_| ())
}

/// The candidate becomes current; the old release drains and stops.
#[tauri::command]
pub async fn promote_release(
    state: State<'_, AppState>,
    env: String,
    service: String,
) -> Result<String, Problem> {
    let done: Settled =
        traffic::promote(&*self::env(&state, &env)?, &service, Arc::new(|_| {})).await?;
    Ok(done.message)
}

/// The candidate is removed; all traffic back to the current release.
#[tauri::command]
pub async fn abort_release(
    state: State<'_, AppState>,
    env: String,
    service: String,
) -> Result<String, Problem> {
    let done: Settled =
        traffic::abort(&*self::env(&state, &env)?, &service, Arc::new(|_| {})).await?;
    Ok(done.message)
}

/// Starts a preview of the candidate with a new token (answered), or ends
/// it (`on` false).
#[tauri::command]
pub async fn preview_release(
    state: State<'_, AppState>,
    env: String,
    service: String,
    on: bool,
) -> Result<Option<String>, Problem> {
    let token = on.then(traffic::new_preview_token);
    traffic::preview(&*self::env(&state, &env)?, &service, token.clone()).await?;
    Ok(token)
}

/// Pauses a service behind a 503 page (`None` resumes it).
#[tauri::command]
pub async fn set_maintenance(
    state: State<'_, AppState>,
    env: String,
    service: String,
    message: Option<String>,
) -> Result<(), Problem> {
    traffic::maintenance(&*self::env(&state, &env)?, &service, message).await
}

/// What `docker inspect` says of a container (or a service's slot).
#[tauri::command]
pub async fn container_detail(
    state: State<'_, AppState>,
    env: String,
    target: String,
) -> Result<ContainerDetail, Problem> {
    containers::detail(&*self::env(&state, &env)?, &target).await
}

/// Follows the logs of a container or a whole service into `on_batch`;
/// answers the follow's number for `stop_logs`.
#[tauri::command]
pub async fn follow_logs(
    state: State<'_, AppState>,
    env: String,
    target: String,
    query: LogQuery,
    on_batch: Channel<LogBatch>,
) -> Result<u64, Problem> {
    let sink = Arc::new(move |b: LogBatch| {
        if let Err(e) = on_batch.send(b) {
            tracing::debug!(error = %e, "a log batch did not reach the window");
        }
    });
    let follow = containers::logs(&*self::env(&state, &env)?, &target, query, sink).await?;
    Ok(state.envs.follows().keep(follow))
}

/// Stops a log follow.
#[tauri::command]
pub fn stop_logs(state: State<'_, AppState>, id: u64) {
    state.envs.follows().stop(id);
}

/// Opens a terminal into a container (its shell, or the debug shell).
#[tauri::command]
#[allow(clippy::too_many_arguments)]
pub async fn open_terminal(
    state: State<'_, AppState>,
    env: String,
    target: String,
    debug: bool,
    cols: u16,
    rows: u16,
    on_event: Channel<TerminalEvent>,
) -> Result<TerminalOpened, Problem> {
    let sink = Arc::new(move |e: TerminalEvent| {
        if let Err(err) = on_event.send(e) {
            tracing::debug!(error = %err, "terminal output did not reach the window");
        }
    });
    let mode = if debug {
        TerminalMode::Debug
    } else {
        TerminalMode::Auto
    };
    let env = self::env(&state, &env)?;
    state
        .envs
        .terminals()
        .open(&env, &target, mode, (cols, rows), sink)
        .await
}

/// Keystrokes or pasted text for a terminal.
#[tauri::command]
pub async fn terminal_input(
    state: State<'_, AppState>,
    id: u64,
    data: String,
) -> Result<(), Problem> {
    state.envs.terminals().input(id, data.into_bytes()).await
}

/// A terminal's new size.
#[tauri::command]
pub async fn terminal_resize(
    state: State<'_, AppState>,
    id: u64,
    cols: u16,
    rows: u16,
) -> Result<(), Problem> {
    state.envs.terminals().resize(id, cols, rows).await
}

/// Ends a terminal session.
#[tauri::command]
pub async fn close_terminal(state: State<'_, AppState>, id: u64) -> Result<(), Problem> {
    state.envs.terminals().close(id).await
}

/// Writes text (saved logs) to a file; an existing file only when `replace`.
#[tauri::command]
pub fn save_text_file(path: String, text: String, replace: bool) -> Result<String, Problem> {
    changeover_core::compose::write_file(&path, &text, replace).map(|p| p.display().to_string())
}

// ---- volumes ----

/// A volume: driver, labels, who uses it now, which releases mounted it.
#[tauri::command]
pub async fn volume_inspect(
    state: State<'_, AppState>,
    env: String,
    name: String,
) -> Result<changeover_core::volume::VolumeDetail, Problem> {
    changeover_application::volumes::inspect(&*self::env(&state, &env)?, &name).await
}

/// One page of a folder in a volume.
#[tauri::command]
pub async fn volume_files(
    state: State<'_, AppState>,
    env: String,
    name: String,
    path: String,
    after: Option<String>,
    limit: Option<u32>,
) -> Result<changeover_core::volume::Listing, Problem> {
    changeover_application::volumes::files(
        &*self::env(&state, &env)?,
        &name,
        &path,
        after.as_deref(),
        limit,
    )
    .await
}

/// The start of a file, for its preview.
#[tauri::command]
pub async fn volume_preview(
    state: State<'_, AppState>,
    env: String,
    name: String,
    path: String,
) -> Result<changeover_core::volume::FilePreview, Problem> {
    changeover_application::volumes::preview(&*self::env(&state, &env)?, &name, &path).await
}

/// Counts what a folder holds, telling `on_progress` as it goes.
#[tauri::command]
pub async fn volume_size(
    state: State<'_, AppState>,
    env: String,
    name: String,
    path: String,
    on_progress: Channel<changeover_core::volume::SizeWalk>,
) -> Result<changeover_core::volume::SizeWalk, Problem> {
    changeover_application::volumes::size(&*self::env(&state, &env)?, &name, &path, |w| {
        let _ = on_progress.send(w.clone());
    })
    .await
}

/// Downloads a file, or a folder (or file) as `.tar.gz` when `dest` ends
/// so, telling `on_progress` the bytes written; answers the file written.
// The window passes each argument by name; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
#[tauri::command]
pub async fn volume_download(
    state: State<'_, AppState>,
    env: String,
    name: String,
    path: String,
    dest: String,
    replace: bool,
    transfer: Option<u64>,
    on_progress: Channel<u64>,
) -> Result<String, Problem> {
    let dest = expand_home(&dest);
    let env = self::env(&state, &env)?;
    let work = changeover_application::volumes::download(
        &env,
        &name,
        &path,
        &dest,
        replace,
        throttled_bytes(on_progress),
    );
    state
        .envs
        .cancels()
        .run(transfer, &format!("the download of {path}"), work)
        .await
        .map(|p| p.display().to_string())
}

/// Imports a `.tar`, `.tar.gz` or `.zip` file into the volume `name`
/// (created when missing; one that holds anything only with `replace`).
#[tauri::command]
pub async fn volume_import(
    state: State<'_, AppState>,
    env: String,
    file: String,
    name: String,
    replace: bool,
) -> Result<changeover_core::volume::Unpacked, Problem> {
    changeover_application::volumes::import(
        &*self::env(&state, &env)?,
        &expand_home(&file),
        name.trim(),
        replace,
    )
    .await
}

/// Stops the transfer the window started with id `transfer`; false when
/// none runs by that id (it was done).
#[tauri::command]
pub fn cancel_transfer(state: State<'_, AppState>, transfer: u64) -> bool {
    state.envs.cancels().cancel(transfer)
}

/// Bytes so far, at most five times a second.
fn throttled_bytes(channel: Channel<u64>) -> impl FnMut(u64) {
    let mut last = std::time::Instant::now();
    move |n| {
        if last.elapsed() >= std::time::Duration::from_millis(200) {
            last = std::time::Instant::now();
            let _ = channel.send(n);
        }
    }
}

/// Uploads a local file or folder into the folder `path`, or with `unpack`
/// an archive's content.
#[tauri::command]
pub async fn volume_put(
    state: State<'_, AppState>,
    env: String,
    name: String,
    path: String,
    source: String,
    unpack: bool,
    transfer: Option<u64>,
) -> Result<changeover_core::volume::Unpacked, Problem> {
    let env = self::env(&state, &env)?;
    let source = expand_home(&source);
    let work = changeover_application::volumes::put(&env, &name, &path, &source, unpack);
    state
        .envs
        .cancels()
        .run(
            transfer,
            &format!(
                "the upload of {} (the folder is as it was)",
                source.display()
            ),
            work,
        )
        .await
}

/// The tables of a SQLite file and their row counts.
#[tauri::command]
pub async fn volume_sqlite(
    state: State<'_, AppState>,
    env: String,
    name: String,
    path: String,
) -> Result<changeover_core::sqlite::SqliteInfo, Problem> {
    changeover_application::volumes::sqlite(&*self::env(&state, &env)?, &name, &path).await
}

/// Entries under the folder `path` whose names hold `text`.
#[tauri::command]
pub async fn volume_search(
    state: State<'_, AppState>,
    env: String,
    name: String,
    path: String,
    text: String,
) -> Result<changeover_core::volume::Search, Problem> {
    changeover_application::volumes::search(&*self::env(&state, &env)?, &name, &path, &text, None)
        .await
}

/// What each volume takes on disk (the daemon's disk-usage API, cached for
/// a few minutes unless `fresh`).
#[tauri::command]
pub async fn volume_sizes(
    state: State<'_, AppState>,
    env: String,
    fresh: bool,
) -> Result<changeover_core::volume::VolumeSizes, Problem> {
    changeover_application::volumes::sizes(&*self::env(&state, &env)?, fresh).await
}

/// Exports the whole volume to a `.tar.gz` file, with the containers that
/// write to it paused while copying when `pause`.
// The window passes each argument by name; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
#[tauri::command]
pub async fn volume_export(
    state: State<'_, AppState>,
    env: String,
    name: String,
    dest: String,
    replace: bool,
    pause: bool,
    transfer: Option<u64>,
    on_progress: Channel<u64>,
) -> Result<String, Problem> {
    let dest = expand_home(&dest);
    let env = self::env(&state, &env)?;
    let work = changeover_application::volumes::export(
        &env,
        &name,
        &dest,
        replace,
        pause,
        throttled_bytes(on_progress),
    );
    state
        .envs
        .cancels()
        .run(transfer, &format!("the export of {name}"), work)
        .await
        .map(|p| p.display().to_string())
}

/// `~/x` as the user's home folder's `x`.
fn expand_home(path: &str) -> std::path::PathBuf {
    let path = path.trim();
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => std::path::PathBuf::from(path),
    }
}

// ---- snapshots ----

/// The snapshots of a volume, newest first.
#[tauri::command]
pub async fn volume_snapshots(
    state: State<'_, AppState>,
    env: String,
    name: String,
) -> Result<Vec<changeover_core::snapshot::Snapshot>, Problem> {
    snapshots::snapshots(&*self::env(&state, &env)?, &name).await
}

/// Takes a snapshot by hand (the containers that use it keep running).
#[tauri::command]
pub async fn volume_snapshot(
    state: State<'_, AppState>,
    env: String,
    name: String,
    note: String,
    pause: bool,
    on_progress: Channel<Copied>,
) -> Result<changeover_core::snapshot::Snapshot, Problem> {
    let progress = throttled(on_progress);
    snapshots::snapshot(&*self::env(&state, &env)?, &name, &note, pause, progress)
        .await
        .map(|(s, _)| s)
}

/// Copies a volume into the new volume `new`.
#[tauri::command]
pub async fn volume_clone(
    state: State<'_, AppState>,
    env: String,
    name: String,
    new: String,
    pause: bool,
    on_progress: Channel<Copied>,
) -> Result<Copied, Problem> {
    let progress = throttled(on_progress);
    snapshots::clone(&*self::env(&state, &env)?, &name, &new, pause, progress).await
}

/// What changed from `snapshot` to `later` (or to the live volume).
#[tauri::command]
pub async fn volume_diff(
    state: State<'_, AppState>,
    env: String,
    name: String,
    snapshot: String,
    later: Option<String>,
) -> Result<changeover_core::snapshot::VolumeDiff, Problem> {
    snapshots::diff(
        &*self::env(&state, &env)?,
        &name,
        &snapshot,
        later.as_deref(),
    )
    .await
}

/// The changed lines of one text file between two volumes.
#[tauri::command]
pub async fn volume_text_diff(
    state: State<'_, AppState>,
    env: String,
    before: String,
    after: String,
    path: String,
) -> Result<changeover_core::snapshot::TextDiff, Problem> {
    snapshots::text_diff(&*self::env(&state, &env)?, &before, &after, &path).await
}

/// The running containers a restore of the volume would stop, for the
/// confirmation that names them.
#[tauri::command]
pub async fn volume_restore_stops(
    state: State<'_, AppState>,
    env: String,
    name: String,
) -> Result<Vec<changeover_core::volume::VolumeUser>, Problem> {
    snapshots::restore_stops(&*self::env(&state, &env)?, &name).await
}

/// Puts a snapshot back into its volume (after the user confirmed).
#[tauri::command]
pub async fn volume_restore(
    state: State<'_, AppState>,
    env: String,
    name: String,
    snapshot: String,
    on_progress: Channel<Copied>,
) -> Result<snapshots::Restored, Problem> {
    let progress = throttled(on_progress);
    snapshots::restore(&*self::env(&state, &env)?, &name, &snapshot, progress).await
}

/// Removes a volume or a snapshot (after the user confirmed; never one a
/// container mounts).
#[tauri::command]
pub async fn volume_remove(
    state: State<'_, AppState>,
    env: String,
    name: String,
) -> Result<(), Problem> {
    snapshots::remove(&*self::env(&state, &env)?, &name).await
}

/// The snapshots a rollback of `service` with its data would restore.
#[tauri::command]
pub async fn rollback_snapshots(
    state: State<'_, AppState>,
    env: String,
    service: String,
) -> Result<Vec<changeover_core::snapshot::Snapshot>, Problem> {
    snapshots::rollback_snapshots(&*self::env(&state, &env)?, &service)
        .await
        .map(|plan| plan.into_iter().map(|(_, s)| s).collect())
}

/// Rolls `service` back, then restores the data its volumes held before
/// the deploy being undone.
#[tauri::command]
pub async fn rollback_with_data(
    state: State<'_, AppState>,
    env: String,
    service: String,
    on_event: Channel<RolloutEvent>,
) -> Result<RolloutOutcome, Problem> {
    snapshots::rollback_with_data(&*self::env(&state, &env)?, &service, sink(on_event))
        .await
        .map(|(outcome, _)| outcome)
}

/// Progress of a copy, at most five times a second, and always the last.
fn throttled(channel: Channel<Copied>) -> impl FnMut(&Copied) + Send {
    let mut last: Option<std::time::Instant> = None;
    move |c: &Copied| {
        if c.done || last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(200)) {
            last = Some(std::time::Instant::now());
            let _ = channel.send(c.clone());
        }
    }
}

/// A repository's tags: the registry's and the daemon's, merged and sorted.
#[tauri::command]
pub async fn image_tags(
    state: State<'_, AppState>,
    env: String,
    repository: String,
) -> Result<changeover_core::registry::ImageTags, Problem> {
    let env = self::env(&state, &env)?;
    state.envs.registries().tags(&env, &repository, false).await
}

/// Registries with credentials and where they come from (never the secret).
#[tauri::command]
pub fn registry_logins(
    state: State<'_, AppState>,
) -> Result<Vec<changeover_core::registry::RegistryLogin>, Problem> {
    state.envs.registries().list()
}

/// Logs in to a registry: checked with it first, then the password in the
/// OS keyring. `ca`: the PEM of a private registry's CA.
#[tauri::command]
pub async fn registry_login(
    state: State<'_, AppState>,
    host: String,
    username: String,
    password: String,
    ca: Option<String>,
) -> Result<changeover_core::registry::RegistryLogin, Problem> {
    let secret = changeover_core::secret::Secret::new(password);
    let ca = ca.filter(|c| !c.trim().is_empty());
    state
        .envs
        .registries()
        .login(&host, &username, secret, ca)
        .await
}

/// Forgets a login made in Changeover.
#[tauri::command]
pub async fn registry_logout(state: State<'_, AppState>, host: String) -> Result<(), Problem> {
    state.envs.registries().logout(&host).await
}

/// What removing a service would take away (nothing changes).
#[tauri::command]
pub async fn service_removal(
    state: State<'_, AppState>,
    env: String,
    service: String,
) -> Result<changeover_core::rollout::Removal, Problem> {
    changeover_application::remove::service_removal(&*self::env(&state, &env)?, &service).await
}

/// Removes a service: its containers, routes and record (volumes stay).
#[tauri::command]
pub async fn remove_service(
    state: State<'_, AppState>,
    env: String,
    service: String,
) -> Result<changeover_core::rollout::Removal, Problem> {
    changeover_application::remove::remove_service(
        &*self::env(&state, &env)?,
        &service,
        std::sync::Arc::new(|_| {}),
    )
    .await
}

/// What removing a stack would take away (nothing changes).
#[tauri::command]
pub async fn stack_removal(
    state: State<'_, AppState>,
    env: String,
    stack: String,
) -> Result<changeover_application::remove::StackRemoval, Problem> {
    changeover_application::remove::stack_removal(&*self::env(&state, &env)?, &stack).await
}

/// Removes a stack; its named volumes only with `volumes`.
#[tauri::command]
pub async fn remove_stack(
    state: State<'_, AppState>,
    env: String,
    stack: String,
    volumes: bool,
) -> Result<changeover_application::remove::StackRemoval, Problem> {
    changeover_application::remove::remove_stack(
        &*self::env(&state, &env)?,
        &stack,
        volumes,
        std::sync::Arc::new(|_| {}),
    )
    .await
}

/// What deploying `tag` to `service` would change (nothing changes).
#[tauri::command]
pub async fn deploy_plan(
    state: State<'_, AppState>,
    env: String,
    service: String,
    tag: String,
    strategy: Option<Strategy>,
) -> Result<changeover_core::plan::ServicePlan, Problem> {
    changeover_application::plans::deploy_plan(&*self::env(&state, &env)?, &service, &tag, strategy)
        .await
}

/// What rolling `service` back would change (nothing changes).
#[tauri::command]
pub async fn rollback_plan(
    state: State<'_, AppState>,
    env: String,
    service: String,
) -> Result<changeover_core::plan::ServicePlan, Problem> {
    changeover_application::plans::rollback_plan(&*self::env(&state, &env)?, &service).await
}
