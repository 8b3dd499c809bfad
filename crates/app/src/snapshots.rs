//! Snapshots, clones, diffs and restores of volumes, and rolling a service
//! back with its data. Copies run on the daemon, between two volumes
//! mounted by one helper: no byte of a volume goes through this process.
//!
//! A restore stops the containers that use the volume for the copy (they
//! are named in the confirmation first) and starts them again after, and
//! snapshots the volume's current content before it, so a restore can be
//! undone by restoring that one. While it runs it holds the rollout lock of
//! every service that mounts the volume: no rollout starts in the middle,
//! and a restore is refused while one runs.

use std::future::Future;
use std::pin::Pin;

use changeover_core::rollout::{EventSink, RolloutOutcome};
use changeover_core::service::{split_qualified, MountKind};
use changeover_core::snapshot::{
    check_note, line_diff, Copied, Snapshot, SnapshotMeta, SnapshotReason, TextDiff, VolumeDiff,
    MAX_DIFF_ENTRIES, MAX_TEXT_DIFF,
};
use changeover_core::volume::{preview_kind, PreviewKind, VolumeUser};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::volumes as dv;
use changeover_docker::Docker;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::environments::Environment;
use crate::services::now_ms;

/// Runs `work` — a copy out of `volume` — with the running containers that
/// write to it paused when `pause` (a consistent copy: nothing is written
/// halfway through it), and lets them go on after, whatever happened.
/// Without `pause` they keep running and the copy is of a volume in use.
pub async fn paused<T>(
    docker: &Docker,
    volume: &str,
    pause: bool,
    work: impl Future<Output = Result<T, Problem>>,
) -> Result<T, Problem> {
    if !pause {
        return work.await;
    }
    let writers: Vec<String> = dv::users(docker, volume)
        .await?
        .into_iter()
        .filter(|u| u.running && !u.read_only)
        .map(|u| u.container)
        .collect();
    let mut frozen = Frozen {
        docker: docker.clone(),
        names: Vec::new(),
    };
    let mut result = Ok(());
    for c in &writers {
        match dv::pause_container(docker, c).await {
            Ok(()) => frozen.names.push(c.clone()),
            Err(p) => {
                result = Err(p);
                break;
            }
        }
    }
    let out = match result {
        Ok(()) => work.await,
        Err(p) => Err(p),
    };
    let mut resumed = Ok(());
    for c in std::mem::take(&mut frozen.names) {
        if let Err(p) = dv::unpause_container(docker, &c).await {
            resumed = Err(p);
        }
    }
    let out = out?;
    resumed.map(|()| out)
}

/// Containers paused for a copy. Should the copy be dropped before it is
/// done (the user cancelled it), they are let go on from here, so nothing
/// stays paused.
struct Frozen {
    docker: Docker,
    names: Vec<String>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        if names.is_empty() {
            return;
        }
        let docker = self.docker.clone();
        let resume = async move {
            for c in names {
                if let Err(p) = dv::unpause_container(&docker, &c).await {
                    tracing::warn!(container = %c, problem = %p, "could not unpause after a cancelled copy");
                }
            }
        };
        // Waited for where the runtime allows it: a process that exits
        // right after (the CLI on Ctrl-C) must not leave them paused.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| rt.block_on(resume));
            }
            Ok(rt) => {
                rt.spawn(resume);
            }
            Err(_) => {}
        }
    }
}

/// Takes a snapshot of `volume` by hand; the containers that use it keep
/// running, or with `pause` are paused for the copy.
pub async fn snapshot(
    env: &Environment,
    volume: &str,
    note: &str,
    pause: bool,
    progress: impl FnMut(&Copied),
) -> Result<(Snapshot, Copied), Problem> {
    let meta = SnapshotMeta {
        note: check_note(note)?,
        ..Default::default()
    };
    let docker = env.docker().await?;
    refuse_snapshot_of_snapshot(&docker, volume).await?;
    paused(
        &docker,
        volume,
        pause,
        dv::snapshot(
            &docker,
            volume,
            SnapshotReason::Manual,
            &meta,
            now_ms(),
            progress,
        ),
    )
    .await
}

async fn refuse_snapshot_of_snapshot(docker: &Docker, volume: &str) -> Result<(), Problem> {
    let v = dv::inspect(docker, volume).await?;
    if let Some(s) = Snapshot::from_labels(&v.name, &v.labels.into_iter().collect()) {
        return Err(Problem::new(
            ProblemCode::InvalidInput,
            format!(
                "{volume} is a snapshot of {}; snapshot {} itself, or clone this one",
                s.of, s.of
            ),
        ));
    }
    Ok(())
}

/// The snapshots of `volume`, newest first.
pub async fn snapshots(env: &Environment, volume: &str) -> Result<Vec<Snapshot>, Problem> {
    let docker = env.docker().await?;
    dv::inspect(&docker, volume).await?;
    dv::snapshots_of(&docker, volume).await
}

/// Copies `volume` into the new volume `new` (which must not exist), with
/// its writers paused for the copy when `pause`.
pub async fn clone(
    env: &Environment,
    volume: &str,
    new: &str,
    pause: bool,
    progress: impl FnMut(&Copied),
) -> Result<Copied, Problem> {
    check_volume_name(new)?;
    let docker = env.docker().await?;
    dv::inspect(&docker, volume).await?;
    dv::create_labelled(
        &docker,
        new,
        vec![("dev.changeover.cloned-from".into(), volume.into())],
    )
    .await?;
    let copied = paused(
        &docker,
        volume,
        pause,
        dv::copy_into(&docker, volume, new, false, progress),
    )
    .await;
    if copied.is_err() {
        dv::remove_created_volume(&docker, new).await;
    }
    copied
}

/// Docker's rule for volume names.
fn check_volume_name(name: &str) -> Result<(), Problem> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemCode::InvalidInput,
            format!(
                "{name:?} is not a volume name: letters, digits, _ . - and a letter or digit first"
            ),
        ))
    }
}

/// What changed from `snapshot` to `later` (another snapshot of the same
/// volume), or to the live volume when `later` is none.
pub async fn diff(
    env: &Environment,
    volume: &str,
    snapshot: &str,
    later: Option<&str>,
) -> Result<VolumeDiff, Problem> {
    let docker = env.docker().await?;
    dv::snapshot_of(&docker, volume, snapshot).await?;
    let after = match later {
        Some(l) => dv::snapshot_of(&docker, volume, l).await?.name,
        None => volume.to_string(),
    };
    let (changes, counts) = dv::diff(&docker, snapshot, &after, MAX_DIFF_ENTRIES).await?;
    Ok(VolumeDiff {
        before: snapshot.to_string(),
        after,
        changes,
        counts,
    })
}

/// The lines that changed in the text file `path` from the volume `before`
/// to `after` (either may lack it).
pub async fn text_diff(
    env: &Environment,
    before: &str,
    after: &str,
    path: &str,
) -> Result<TextDiff, Problem> {
    let read = |volume: String| async move {
        match crate::volumes::read(env, &volume, path, 0, MAX_TEXT_DIFF + 1).await {
            Ok((head, bytes)) => Ok(Some((head.size, bytes))),
            Err(p) if p.code == ProblemCode::NoSuchPath => Ok(None),
            Err(p) => Err(p),
        }
    };
    let b = read(before.to_string()).await?;
    let a = read(after.to_string()).await?;
    let shown = changeover_core::volume::VolumePath::parse(path)?.display();
    let mut not_shown = None;
    for (size, bytes) in b.iter().chain(a.iter()) {
        if *size > MAX_TEXT_DIFF {
            not_shown = Some(format!(
                "larger than {} KiB: compared, lines not shown",
                MAX_TEXT_DIFF / 1024
            ));
        } else if preview_kind(&shown, bytes) != PreviewKind::Text {
            not_shown = Some("not a text file".into());
        }
    }
    let text = |side: &Option<(u64, Vec<u8>)>| {
        side.as_ref()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    Ok(TextDiff {
        path: shown,
        hunks: if not_shown.is_some() {
            Vec::new()
        } else {
            line_diff(&text(&b), &text(&a))
        },
        not_shown,
    })
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Restored {
    pub volume: String,
    pub from: String,
    /// The volume's content as it was before, to undo the restore with.
    pub undo: Snapshot,
    /// The containers stopped for the copy and started again.
    pub stopped: Vec<String>,
    pub copied: Copied,
}

/// The containers a restore of `volume` stops (the running ones that mount
/// it), for the confirmation that names them.
pub async fn restore_stops(env: &Environment, volume: &str) -> Result<Vec<VolumeUser>, Problem> {
    let docker = env.docker().await?;
    dv::inspect(&docker, volume).await?;
    Ok(dv::users(&docker, volume)
        .await?
        .into_iter()
        .filter(|u| u.running)
        .collect())
}

/// The services whose current definition mounts `volume`.
async fn services_using(env: &Environment, volume: &str) -> Result<Vec<String>, Problem> {
    let mut out = Vec::new();
    for view in crate::services::services(env).await? {
        let spec = &view.record.spec;
        if spec
            .mounts
            .iter()
            .any(|m| m.kind == MountKind::Volume && m.docker_volume(&spec.stack) == volume)
        {
            out.push(view.name.clone());
        }
    }
    Ok(out)
}

type Work<'a, T> = Pin<Box<dyn Future<Output = Result<T, Problem>> + Send + 'a>>;

/// Runs `work` holding the rollout locks of `services`.
fn with_locks<'a, T: Send + 'a>(
    d: &'a changeover_core::rollout::Deployer<
        changeover_docker::runtime::DockerRuntime,
        changeover_docker::edge::Edge,
    >,
    services: &'a [String],
    work: Work<'a, T>,
) -> Work<'a, T> {
    match services.split_first() {
        None => work,
        Some((first, rest)) => Box::pin(async move {
            let (stack, service) = split_qualified(first)?;
            d.locked(stack, service, with_locks(d, rest, work)).await
        }),
    }
}

/// Puts `snapshot` back into `volume`: snapshots the current content first
/// (the undo), stops the running containers that use it, copies, and starts
/// them again (also when the copy failed). Refused while a rollout of a
/// service that mounts it runs.
pub async fn restore(
    env: &Environment,
    volume: &str,
    snapshot: &str,
    progress: impl FnMut(&Copied) + Send,
) -> Result<Restored, Problem> {
    let docker = env.docker().await?;
    dv::snapshot_of(&docker, volume, snapshot).await?;
    let services = services_using(env, volume).await?;
    let held = crate::services::locks_held(env).await?;
    if let Some((name, owner)) = held.iter().find(|(n, _)| services.contains(n)) {
        return Err(Problem::new(
            ProblemCode::RolloutInProgress,
            format!("a rollout of {name} (by {owner}) runs; restore {volume} when it is done"),
        ));
    }
    let edge = env.edge().await?;
    let work: Work<'_, Restored> = Box::pin(restore_unlocked(&docker, volume, snapshot, progress));
    match edge {
        Some(edge) => {
            let d = crate::services::deployer_on(edge, std::sync::Arc::new(|_| {}), None);
            with_locks(&d, &services, work).await
        }
        None => work.await,
    }
}

async fn restore_unlocked(
    docker: &Docker,
    volume: &str,
    snapshot: &str,
    progress: impl FnMut(&Copied) + Send,
) -> Result<Restored, Problem> {
    let meta = SnapshotMeta {
        note: Some(format!("before restoring {snapshot}")),
        ..Default::default()
    };
    let (undo, _) = dv::snapshot(
        docker,
        volume,
        SnapshotReason::BeforeRestore,
        &meta,
        now_ms(),
        |_| {},
    )
    .await?;
    let running: Vec<String> = dv::users(docker, volume)
        .await?
        .into_iter()
        .filter(|u| u.running)
        .map(|u| u.container)
        .collect();
    let mut stopped = Vec::new();
    let mut result = Ok(());
    for c in &running {
        match dv::stop_container(docker, c).await {
            Ok(()) => stopped.push(c.clone()),
            Err(p) => {
                result = Err(p);
                break;
            }
        }
    }
    let copied = match result {
        Ok(()) => dv::copy_into(docker, snapshot, volume, true, progress).await,
        Err(p) => Err(p),
    };
    // Started again whatever happened: a failed restore leaves the volume
    // as it was (the copy is staged) and the containers running.
    let mut start_failed = None;
    for c in &stopped {
        if let Err(p) = dv::start_container(docker, c).await {
            start_failed = Some(p);
        }
    }
    let copied = copied?;
    if let Some(p) = start_failed {
        return Err(Problem::new(
            p.code,
            format!(
                "{volume} was restored from {snapshot}, but a container did not start again: {}",
                p.message
            ),
        ));
    }
    Ok(Restored {
        volume: volume.to_string(),
        from: snapshot.to_string(),
        undo,
        stopped,
        copied,
    })
}

/// Removes `volume` (never one a container mounts).
pub async fn remove(env: &Environment, volume: &str) -> Result<(), Problem> {
    dv::remove_volume(&env.docker().await?, volume).await
}

/// The snapshots that rolling `name` back with its data restores: per named
/// volume of the current release, the newest snapshot taken before that
/// release's deploy. Refused when a volume has none.
pub async fn rollback_snapshots(
    env: &Environment,
    name: &str,
) -> Result<Vec<(String, Snapshot)>, Problem> {
    let view = crate::services::service(env, name).await?;
    let record = &view.record;
    let current = record.current.ok_or_else(|| {
        Problem::new(
            ProblemCode::NoPreviousRelease,
            format!("{name} has no current release to roll back"),
        )
    })?;
    let spec = &record
        .release(current)
        .map(|r| r.spec.clone())
        .unwrap_or_else(|| record.spec.clone());
    let docker = env.docker().await?;
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for m in spec.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
        let volume = m.docker_volume(&spec.stack);
        if !seen.insert(volume.clone()) {
            continue;
        }
        let snap = dv::snapshots_of(&docker, &volume)
            .await?
            .into_iter()
            .find(|s| s.before_release == Some(current) && s.service.as_deref() == Some(name))
            .ok_or_else(|| {
                Problem::new(
                    ProblemCode::UnknownSnapshot,
                    format!(
                        "no snapshot of {volume} was taken before release {current} of {name} was deployed \
                         (x-changeover.snapshots.before_deploy was off, or it was removed); \
                         roll back without --with-data, or restore a snapshot by hand"
                    ),
                )
            })?;
        out.push((volume, snap));
    }
    if out.is_empty() {
        return Err(Problem::new(
            ProblemCode::UnknownSnapshot,
            format!("{name} mounts no named volume: there is no data to roll back"),
        ));
    }
    Ok(out)
}

/// Rolls `name` back to the release before, then puts back the data each
/// of its volumes held before the deploy being undone. The code goes
/// first, health-gated as every rollback: if the old release does not come
/// up, the data is left alone.
pub async fn rollback_with_data(
    env: &Environment,
    name: &str,
    events: EventSink,
) -> Result<(RolloutOutcome, Vec<Restored>), Problem> {
    let plan = rollback_snapshots(env, name).await?;
    let outcome = crate::services::rollback(env, name, events.clone()).await?;
    let mut restored = Vec::new();
    for (volume, snap) in plan {
        events(changeover_core::rollout::RolloutEvent::Note {
            message: format!("restoring {volume} from {}", snap.name),
        });
        restored.push(restore(env, &volume, &snap.name, |_| {}).await?);
    }
    Ok((outcome, restored))
}
