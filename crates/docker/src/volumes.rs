//! Volumes seen from inside, through the Docker API only: a helper
//! container of the edge binary (`changeover-edge volume`, whose module doc
//! holds the protocol) mounts the volume read-only with no network, and
//! each question is one `docker exec` in it. Nothing here reads a host
//! path, so a remote daemon works the same as the local one.
//!
//! One helper per volume, named after it, reused while it runs; it removes
//! itself two minutes after its last question (auto-remove), and
//! [`sweep_helpers`] removes any that stopped without going.

use std::collections::HashMap;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use changeover_core::edge::{labels, EDGE_BINARY_PATH};
use changeover_core::snapshot::{
    labels as snapshot_labels, snapshot_name, Copied, DiffCounts, EntryChange, Snapshot,
    SnapshotMeta, SnapshotReason, OTHER_MOUNT,
};
use changeover_core::volume::MOUNT_POINT;
use changeover_core::{Problem, ProblemCode};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::connect::daemon_problem;
use crate::containers::DEBUG_LABEL;
use crate::edge::{ensure_binary_image, BinaryImage};

/// How long a helper outlives its last question, in seconds
/// (`CHANGEOVER_VOLUME_HELPER_IDLE` overrides it, for tests).
fn idle_secs() -> u32 {
    std::env::var("CHANGEOVER_VOLUME_HELPER_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| (1..=86_400).contains(s))
        .unwrap_or(120)
}
/// The most a question's answer may hold in memory (a preview, a page).
pub const MAX_ANSWER: usize = 80 * 1024 * 1024;

fn helper_problem(message: String) -> Problem {
    Problem::new(ProblemCode::VolumeHelper, message)
}

fn unknown_volume(name: &str) -> Problem {
    Problem::new(
        ProblemCode::UnknownVolume,
        format!("no volume {name:?} on this environment (it may have been removed)"),
    )
}

/// `dev.changeover.helper` of a volume's helper.
fn helper_label(volume: &str) -> String {
    format!("volume:{volume}")
}

/// The helper's container name: readable, and unique per volume.
fn helper_name(volume: &str) -> String {
    let hash = format!("{:x}", Sha256::digest(volume.as_bytes()));
    let readable: String = volume.chars().take(40).collect();
    format!("changeover-volume-{readable}-{}", &hash[..8])
}

/// The running (read-only) helper of `volume`, started when there is none.
pub async fn helper(docker: &Docker, volume: &str) -> Result<String, Problem> {
    helper_for(docker, volume, false).await
}

/// A helper that mounts `volume` read-write, for one write the user
/// confirmed; [`ask_streaming`] removes it when the write is done.
async fn helper_for(docker: &Docker, volume: &str, writable: bool) -> Result<String, Problem> {
    docker.inspect_volume(volume).await.map_err(|e| match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => unknown_volume(volume),
        e => daemon_problem("reading the volume", &e),
    })?;
    let name = if writable {
        format!("{}-write-{}", helper_name(volume), std::process::id())
    } else {
        helper_name(volume)
    };
    if let Ok(c) = docker.inspect_container(&name, None).await {
        if c.state.as_ref().and_then(|s| s.running) == Some(true) {
            return Ok(c.id.unwrap_or(name));
        }
        remove(docker, &name).await;
    }
    let mounts = vec![volume_mount(MOUNT_POINT, volume, writable)];
    start_helper(docker, &name, volume, mounts, writable).await
}

fn volume_mount(target: &str, volume: &str, writable: bool) -> Mount {
    Mount {
        target: Some(target.into()),
        source: Some(volume.into()),
        typ: Some(MountType::VOLUME),
        read_only: Some(!writable),
        ..Default::default()
    }
}

/// Creates and starts the helper container `name` (labelled as `volume`'s)
/// with `mounts`; answers its ID. Another client that made it a moment ago
/// is fine: that one is used.
async fn start_helper(
    docker: &Docker,
    name: &str,
    volume: &str,
    mounts: Vec<Mount>,
    writable: bool,
) -> Result<String, Problem> {
    let name = name.to_string();
    let image = BinaryImage::load()?;
    let tag = format!("changeover-volume-helper:{}", &image.digest[..12]);
    ensure_binary_image(
        docker,
        &image,
        &tag,
        &[EDGE_BINARY_PATH, "volume"],
        &[(labels::MANAGED, "true".into())],
    )
    .await?;
    let body = ContainerCreateBody {
        image: Some(tag),
        cmd: Some(vec![
            "hold".into(),
            "--idle".into(),
            idle_secs().to_string(),
        ]),
        labels: Some(HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (DEBUG_LABEL.to_string(), helper_label(volume)),
        ])),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(mounts),
            network_mode: Some("none".into()),
            auto_remove: Some(true),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            // Root in the helper reads every file of the volume, whatever
            // its owner and mode; a writing helper also keeps owners and
            // modes of what it unpacks.
            cap_add: Some(if writable {
                vec![
                    "DAC_READ_SEARCH".into(),
                    "DAC_OVERRIDE".into(),
                    "CHOWN".into(),
                    "FOWNER".into(),
                ]
            } else {
                vec!["DAC_READ_SEARCH".into()]
            }),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await;
    let id = match created {
        Ok(c) => c.id,
        // Another client (or question) made it a moment ago: use that one.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => name.clone(),
        Err(e) => return Err(daemon_problem("creating the volume helper", &e)),
    };
    match docker.start_container(&id, None).await {
        Ok(()) => Ok(id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(id),
        Err(e) => {
            remove(docker, &id).await;
            Err(daemon_problem("starting the volume helper", &e))
        }
    }
}

async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(
                RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
}

/// Every container (running or not) matching one `docker ps` filter.
async fn containers_where(
    docker: &Docker,
    key: &str,
    value: &str,
    context: &str,
) -> Result<Vec<bollard::models::ContainerSummary>, Problem> {
    crate::read::containers_filtered(docker, key, vec![value.to_string()], context).await
}

fn is_volume_helper(c: &bollard::models::ContainerSummary) -> bool {
    c.labels
        .as_ref()
        .and_then(|l| l.get(DEBUG_LABEL))
        .is_some_and(|v| v.starts_with("volume:"))
}

fn is_running(c: &bollard::models::ContainerSummary) -> bool {
    c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running")
}

/// Removes volume helpers that are not running (a helper that stopped
/// without auto-remove, e.g. when the daemon restarted meanwhile); `all`
/// removes the running ones too. Answers how many went.
pub async fn sweep_helpers(docker: &Docker, all: bool) -> Result<usize, Problem> {
    let list = containers_where(docker, "label", DEBUG_LABEL, "listing volume helpers").await?;
    let mut removed = 0;
    for c in list {
        if is_volume_helper(&c) && (all || !is_running(&c)) {
            if let Some(id) = c.id {
                remove(docker, &id).await;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The answer of one question: its stdout, bounded by `max` bytes.
pub async fn ask(
    docker: &Docker,
    volume: &str,
    args: &[String],
    max: usize,
) -> Result<Vec<u8>, Problem> {
    let mut out = Vec::new();
    ask_streaming(docker, volume, args, |piece| {
        if out.len() + piece.len() > max {
            return Err(helper_problem(format!(
                "the helper's answer is larger than {max} bytes"
            )));
        }
        out.extend_from_slice(piece);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Asks the helper of `volume` one question (`changeover-edge volume
/// ARGS…`), giving its stdout piece by piece to `on_out` (which may stop it
/// with an error). A refusal comes back as the helper's own `Problem`.
pub async fn ask_streaming(
    docker: &Docker,
    volume: &str,
    args: &[String],
    on_out: impl FnMut(&[u8]) -> Result<(), Problem>,
) -> Result<(), Problem> {
    ask_with(docker, volume, args, None, None, on_out).await
}

/// Input for a question that writes: the bytes the helper reads on stdin.
pub type Input = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// Asks a read-write helper of `volume` one question with `input` on its
/// stdin; the helper is removed afterwards, whatever the outcome.
pub async fn ask_writing(
    docker: &Docker,
    volume: &str,
    args: &[String],
    input: Input,
    on_out: impl FnMut(&[u8]) -> Result<(), Problem>,
) -> Result<(), Problem> {
    let id = helper_for(docker, volume, true).await?;
    let result = ask_with(docker, volume, args, Some(id.clone()), Some(input), on_out).await;
    remove(docker, &id).await;
    result
}

/// Asks a helper that mounts `volume` read-only at `/volume` and `other` at
/// `/other` (read-write when `other_writable`: a copy into it) one
/// question; the helper is made for it and removed afterwards, whatever the
/// outcome.
pub async fn ask_pair(
    docker: &Docker,
    volume: &str,
    other: &str,
    other_writable: bool,
    args: &[String],
    on_out: impl FnMut(&[u8]) -> Result<(), Problem>,
) -> Result<(), Problem> {
    for v in [volume, other] {
        docker.inspect_volume(v).await.map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => unknown_volume(v),
            e => daemon_problem("reading the volume", &e),
        })?;
    }
    static PAIRS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PAIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{}-pair-{}-{n}", helper_name(volume), std::process::id());
    let mounts = vec![
        volume_mount(MOUNT_POINT, volume, false),
        volume_mount(OTHER_MOUNT, other, other_writable),
    ];
    let id = start_helper(docker, &name, volume, mounts, other_writable).await?;
    let result = ask_with(docker, volume, args, Some(id.clone()), None, on_out).await;
    remove(docker, &id).await;
    result
}

async fn ask_with(
    docker: &Docker,
    volume: &str,
    args: &[String],
    container: Option<String>,
    mut input: Option<Input>,
    mut on_out: impl FnMut(&[u8]) -> Result<(), Problem>,
) -> Result<(), Problem> {
    let mut tried = 0;
    let (exec, mut output, stdin) = loop {
        let id = match &container {
            Some(id) => id.clone(),
            None => helper(docker, volume).await?,
        };
        let mut cmd = vec![EDGE_BINARY_PATH.to_string(), "volume".to_string()];
        cmd.extend_from_slice(args);
        let created = docker
            .create_exec(
                &id,
                CreateExecOptions {
                    attach_stdin: Some(input.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd),
                    ..Default::default()
                },
            )
            .await;
        match created {
            Ok(c) => {
                let started = docker
                    .start_exec(
                        &c.id,
                        Some(StartExecOptions {
                            detach: false,
                            tty: false,
                            output_capacity: Some(256 * 1024),
                        }),
                    )
                    .await
                    .map_err(|e| daemon_problem("asking the volume helper", &e))?;
                let StartExecResults::Attached {
                    output,
                    input: stdin,
                } = started
                else {
                    return Err(helper_problem(
                        "the daemon did not attach to the helper".into(),
                    ));
                };
                break (c.id, output, stdin);
            }
            // The helper went idle and removed itself just now: once more.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) if tried == 0 && container.is_none() => tried += 1,
            Err(e) => return Err(daemon_problem("asking the volume helper", &e)),
        }
    };
    let mut err = Vec::new();
    // The input goes in while the answer comes out; its end is the end of
    // the helper's stdin.
    let feed = async move {
        let Some(mut source) = input.take() else {
            return Ok(());
        };
        let mut stdin = stdin;
        tokio::io::copy(&mut source, &mut stdin).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut stdin).await
    };
    let read = async {
        while let Some(item) = output.next().await {
            match item {
                Ok(bollard::container::LogOutput::StdOut { message }) => on_out(&message)?,
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    if err.len() < 64 * 1024 {
                        err.extend_from_slice(&message);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(daemon_problem("reading the volume helper's answer", &e)),
            }
        }
        Ok(())
    };
    let (fed, answered) = tokio::join!(feed, read);
    answered?;
    let inspected = docker.inspect_exec(&exec).await;
    if let Err(e) = &inspected {
        // The answer ended because the daemon went away (stopped, restarted,
        // the connection lost): say that, not "the helper failed".
        let p = daemon_problem("the daemon went away during the volume helper's work", e);
        if p.code == ProblemCode::DaemonUnreachable {
            return Err(p);
        }
    }
    let code = inspected.ok().and_then(|i| i.exit_code).unwrap_or(-1);
    if code == 0 {
        return fed.map_err(|e| helper_problem(format!("sending to the volume helper: {e}")));
    }
    let text = String::from_utf8_lossy(&err);
    match serde_json::from_str::<Problem>(text.trim()) {
        Ok(p) => Err(p),
        Err(_) if text.contains("no such file") || code == 126 || code == 127 => {
            Err(helper_problem(format!(
                "the volume helper could not run (exit {code}): {}",
                text.trim()
            )))
        }
        Err(_) => Err(helper_problem(format!(
            "the volume helper failed (exit {code}): {}",
            text.trim()
        ))),
    }
}

/// The containers that mount `volume` now, running or not.
pub async fn users(
    docker: &Docker,
    volume: &str,
) -> Result<Vec<changeover_core::volume::VolumeUser>, Problem> {
    let list =
        containers_where(docker, "volume", volume, "listing the volume's containers").await?;
    let mut out = Vec::new();
    for c in list {
        if is_volume_helper(&c) {
            continue;
        }
        let running = is_running(&c);
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        for m in c.mounts.unwrap_or_default() {
            if m.name.as_deref() == Some(volume) {
                out.push(changeover_core::volume::VolumeUser {
                    container: name.clone(),
                    running,
                    target: m.destination.unwrap_or_default(),
                    read_only: m.rw == Some(false),
                });
            }
        }
    }
    out.sort_by(|a, b| a.container.cmp(&b.container));
    Ok(out)
}

/// The most bytes of a disk-usage answer read (thousands of volumes fit).
const MAX_DF_ANSWER: usize = 64 * 1024 * 1024;

/// What the daemon's disk-usage API (`GET /system/df`) says each volume
/// takes, by name: `None` for a driver that reports none (`Size: -1`).
/// The daemon walks every local volume for it, so this is slow on a big
/// host: ask on demand, never on the way to a list.
///
/// bollard reads `/system/df` only in the schema of API 1.52 and later
/// (volumes under `VolumeUsage.Items`); daemons before that answer them
/// under `Volumes`, which it drops. bollard has no public raw request, so
/// the byte stream of an image export is pointed at `/system/df` by a
/// request modifier on a copy of the client, and its body read as JSON in
/// either schema. The copy shares the connection (TLS, SSH) of the client.
pub async fn volume_sizes(
    docker: &Docker,
) -> Result<std::collections::BTreeMap<String, Option<u64>>, Problem> {
    const MARK: &str = "/images/changeover-disk-usage/get";
    let df = docker.clone().with_request_modifier(|mut req| {
        let uri = req.uri().clone();
        if let Some(prefix) = uri.path().strip_suffix(MARK).map(str::to_string) {
            let mut parts = uri.into_parts();
            if let Ok(pq) = format!("{prefix}/system/df?type=volume").parse() {
                parts.path_and_query = Some(pq);
                if let Ok(new) = hyper::Uri::from_parts(parts) {
                    *req.uri_mut() = new;
                }
            }
        }
        req
    });
    let mut body = Vec::new();
    let mut stream = df.export_image("changeover-disk-usage");
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| daemon_problem("reading the volumes' disk usage", &e))?;
        if body.len() + chunk.len() > MAX_DF_ANSWER {
            return Err(Problem::new(
                ProblemCode::DaemonError,
                format!("the daemon's disk-usage answer is larger than {MAX_DF_ANSWER} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    parse_volume_sizes(&body)
}

/// The volumes' sizes in a `/system/df` answer of any API version.
fn parse_volume_sizes(
    body: &[u8],
) -> Result<std::collections::BTreeMap<String, Option<u64>>, Problem> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            ProblemCode::DaemonError,
            format!("the daemon's disk-usage answer is not JSON: {e}"),
        )
    })?;
    let items = v
        .get("Volumes")
        .filter(|l| l.is_array())
        .or_else(|| v.get("VolumeUsage").and_then(|u| u.get("Items")));
    let mut out = std::collections::BTreeMap::new();
    for item in items.and_then(|l| l.as_array()).into_iter().flatten() {
        let Some(name) = item.get("Name").and_then(|n| n.as_str()) else {
            continue;
        };
        let size = item
            .get("UsageData")
            .and_then(|u| u.get("Size"))
            .and_then(|s| s.as_i64())
            .and_then(|s| u64::try_from(s).ok());
        out.insert(name.to_string(), size);
    }
    Ok(out)
}

/// What the daemon says of `name`.
pub async fn inspect(
    docker: &Docker,
    name: &str,
) -> Result<changeover_core::inventory::Volume, Problem> {
    let v = docker.inspect_volume(name).await.map_err(|e| match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => unknown_volume(name),
        e => daemon_problem("reading the volume", &e),
    })?;
    Ok(changeover_core::inventory::Volume {
        name: v.name,
        driver: v.driver,
        mountpoint: v.mountpoint,
        created_at: v.created_at,
        labels: v.labels.into_iter().collect(),
    })
}

/// Creates `name` unless a volume of that name exists; answers whether it
/// created it.
pub async fn ensure_volume(docker: &Docker, name: &str) -> Result<bool, Problem> {
    if docker.inspect_volume(name).await.is_ok() {
        return Ok(false);
    }
    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(name.to_string()),
            ..Default::default()
        })
        .await
        .map(|_| true)
        .map_err(|e| daemon_problem("creating the volume", &e))
}

/// Removes a volume this very operation created and left empty (an import
/// that was refused leaves nothing behind).
pub async fn remove_created_volume(docker: &Docker, name: &str) {
    let _ = docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await;
}

// ---- snapshots, clones, restores ----

/// Creates the volume `name` with `labels`; refused when it exists.
pub async fn create_labelled(
    docker: &Docker,
    name: &str,
    labels: Vec<(String, String)>,
) -> Result<(), Problem> {
    if docker.inspect_volume(name).await.is_ok() {
        return Err(Problem::new(
            ProblemCode::FileExists,
            format!("a volume named {name} exists already; choose another name"),
        ));
    }
    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.into_iter().collect()),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| daemon_problem("creating the volume", &e))
}

/// Removes the volume `name`: refused (and nothing changes) while any
/// container, running or stopped, mounts it.
pub async fn remove_volume(docker: &Docker, name: &str) -> Result<(), Problem> {
    let users = users(docker, name).await?;
    if !users.is_empty() {
        return Err(in_use(name, &users, "removed"));
    }
    // Idle helpers hold it too; they are Changeover's own.
    for c in containers_where(docker, "volume", name, "listing the volume's containers").await? {
        if is_volume_helper(&c) {
            if let Some(id) = c.id {
                remove(docker, &id).await;
            }
        }
    }
    docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
        .map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => unknown_volume(name),
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            } => Problem::new(
                ProblemCode::VolumeInUse,
                format!("volume {name} is in use and was not removed"),
            ),
            e => daemon_problem("removing the volume", &e),
        })
}

/// "`name` is used by a, b and cannot be `what`".
pub fn in_use(name: &str, users: &[changeover_core::volume::VolumeUser], what: &str) -> Problem {
    let names: Vec<String> = users
        .iter()
        .map(|u| {
            format!(
                "{} ({})",
                u.container,
                if u.running { "running" } else { "stopped" }
            )
        })
        .collect();
    Problem::new(
        ProblemCode::VolumeInUse,
        format!(
            "volume {name} is used by {}; it cannot be {what} while a container mounts it",
            names.join(", ")
        ),
    )
}

/// The daemon's volumes carrying every label of `labels` (`key=value`).
async fn labelled(
    docker: &Docker,
    labels: Vec<String>,
    what: &str,
) -> Result<Vec<bollard::models::Volume>, Problem> {
    let filters = HashMap::from([("label".to_string(), labels)]);
    let list = docker
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| daemon_problem(what, &e))?;
    Ok(list.volumes.unwrap_or_default())
}

/// The volumes Changeover created for `stack` (its named volumes, the
/// ones holding its anonymous volumes and its images' `VOLUME`s), or with
/// `service` for that service alone (those kept for its image's
/// `VOLUME`s, one per slot); not their snapshots; by name.
pub async fn created_for(
    docker: &Docker,
    stack: &str,
    service: Option<&str>,
) -> Result<Vec<String>, Problem> {
    let mut wanted = vec![
        format!("{}={stack}", labels::STACK),
        format!("{}=true", labels::MANAGED),
    ];
    wanted.extend(service.map(|s| format!("{}={s}", labels::SERVICE)));
    let mut out: Vec<String> = labelled(docker, wanted, "listing the stack's volumes")
        .await?
        .into_iter()
        .filter(|v| !v.labels.contains_key(snapshot_labels::OF))
        .map(|v| v.name)
        .collect();
    out.sort();
    Ok(out)
}

/// Every snapshot of `volume` on the daemon, newest first.
pub async fn snapshots_of(docker: &Docker, volume: &str) -> Result<Vec<Snapshot>, Problem> {
    let mut out: Vec<Snapshot> = labelled(
        docker,
        vec![format!("{}={volume}", snapshot_labels::OF)],
        "listing snapshots",
    )
    .await?
    .into_iter()
    .filter_map(|v| Snapshot::from_labels(&v.name, &v.labels.into_iter().collect()))
    .filter(|s| s.of == volume)
    .collect();
    out.sort_by_key(|s| std::cmp::Reverse((s.taken_ms, s.name.clone())));
    Ok(out)
}

/// The snapshot `name` of `volume`.
pub async fn snapshot_of(docker: &Docker, volume: &str, name: &str) -> Result<Snapshot, Problem> {
    snapshots_of(docker, volume)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            Problem::new(
                ProblemCode::UnknownSnapshot,
                format!(
                    "{name} is not a snapshot of {volume} (see `changeover volume snapshots {volume}`)"
                ),
            )
        })
}

/// Copies `from` into `to` on the daemon (no bytes through this process):
/// `to` must be empty unless `replace`. `progress` hears the counts.
pub async fn copy_into(
    docker: &Docker,
    from: &str,
    to: &str,
    replace: bool,
    mut progress: impl FnMut(&Copied),
) -> Result<Copied, Problem> {
    let mut args = vec!["copy".to_string()];
    if replace {
        args.push("--replace".into());
    }
    let mut pending = Vec::new();
    let mut last: Option<Copied> = None;
    ask_pair(docker, from, to, true, &args, |piece| {
        for c in json_lines::<Copied>(&mut pending, piece, "copy", 64 * 1024)? {
            progress(&c);
            last = Some(c);
        }
        Ok(())
    })
    .await?;
    last.filter(|c| c.done)
        .ok_or_else(|| helper_problem("the copy ended before it was done".into()))
}

/// Splits the JSON lines that `piece` completes off `pending`; a line
/// longer than `max_line` bytes is refused.
pub fn json_lines<T: serde::de::DeserializeOwned>(
    pending: &mut Vec<u8>,
    piece: &[u8],
    what: &str,
    max_line: usize,
) -> Result<Vec<T>, Problem> {
    pending.extend_from_slice(piece);
    let mut out = Vec::new();
    while let Some(i) = pending.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        out.push(
            serde_json::from_slice(&line).map_err(|e| {
                helper_problem(format!("the helper's {what} line does not read: {e}"))
            })?,
        );
    }
    if pending.len() > max_line {
        return Err(helper_problem(format!(
            "the helper's {what} line is too long"
        )));
    }
    Ok(out)
}

/// Takes a snapshot of `volume`: a new volume named after it and the time,
/// labelled, holding a copy of it. The containers that use it keep
/// running. A failed copy leaves no snapshot behind.
pub async fn snapshot(
    docker: &Docker,
    volume: &str,
    reason: SnapshotReason,
    meta: &SnapshotMeta,
    taken_ms: i64,
    progress: impl FnMut(&Copied),
) -> Result<(Snapshot, Copied), Problem> {
    inspect(docker, volume).await?;
    let mut attempt = 0;
    let name = loop {
        let name = snapshot_name(volume, taken_ms, attempt);
        match create_labelled(
            docker,
            &name,
            Snapshot::labels(volume, taken_ms, reason, meta)
                .into_iter()
                .chain([(labels::MANAGED.to_string(), "true".to_string())])
                .collect(),
        )
        .await
        {
            Ok(()) => break name,
            Err(p) if p.code == ProblemCode::FileExists && attempt < 50 => attempt += 1,
            Err(p) => return Err(p),
        }
    };
    match copy_into(docker, volume, &name, false, progress).await {
        Ok(copied) => {
            let snap = snapshot_of(docker, volume, &name).await?;
            Ok((snap, copied))
        }
        Err(p) => {
            remove_created_volume(docker, &name).await;
            Err(p)
        }
    }
}

/// The changes from the volume `before` to `after`, up to `limit` listed.
pub async fn diff(
    docker: &Docker,
    before: &str,
    after: &str,
    limit: u64,
) -> Result<(Vec<EntryChange>, DiffCounts), Problem> {
    let args = vec!["diff".to_string(), "--limit".into(), limit.to_string()];
    let mut pending = Vec::new();
    let mut changes = Vec::new();
    let mut counts = None;
    ask_pair(docker, after, before, false, &args, |piece| {
        for line in json_lines::<serde_json::Value>(&mut pending, piece, "diff", 1024 * 1024)? {
            if let Some(done) = line.get("done") {
                counts = Some(serde_json::from_value(done.clone()).map_err(|e| {
                    helper_problem(format!("the helper's diff counts do not read: {e}"))
                })?);
            } else {
                changes.push(serde_json::from_value(line).map_err(|e| {
                    helper_problem(format!("the helper's diff line does not read: {e}"))
                })?);
            }
        }
        Ok(())
    })
    .await?;
    let counts =
        counts.ok_or_else(|| helper_problem("the diff ended before it was done".into()))?;
    Ok((changes, counts))
}

/// Stops a container (10 s, then SIGKILL), for a copy that needs it still.
pub async fn stop_container(docker: &Docker, name: &str) -> Result<(), Problem> {
    match docker
        .stop_container(
            name,
            Some(
                bollard::query_parameters::StopContainerOptionsBuilder::new()
                    .t(10)
                    .build(),
            ),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(e) => Err(daemon_problem(&format!("stopping {name}"), &e)),
    }
}

/// Pauses a running container (its processes frozen, nothing written)
/// for a consistent copy; [`unpause_container`] lets it go on.
pub async fn pause_container(docker: &Docker, name: &str) -> Result<(), Problem> {
    docker
        .pause_container(name)
        .await
        .map_err(|e| daemon_problem(&format!("pausing {name}"), &e))
}

/// Lets a container paused by [`pause_container`] go on.
pub async fn unpause_container(docker: &Docker, name: &str) -> Result<(), Problem> {
    docker
        .unpause_container(name)
        .await
        .map_err(|e| daemon_problem(&format!("unpausing {name}"), &e))
}

/// Starts a container stopped by [`stop_container`].
pub async fn start_container(docker: &Docker, name: &str) -> Result<(), Problem> {
    match docker
        .start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(e) => Err(daemon_problem(&format!("starting {name}"), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_volume_sizes;

    #[test]
    fn disk_usage_is_read_in_the_old_and_the_new_schema() {
        let old = br#"{"LayersSize":1,"Volumes":[{"Name":"a","UsageData":{"Size":42,"RefCount":1}},{"Name":"b","UsageData":{"Size":-1,"RefCount":-1}},{"Name":"c"}]}"#;
        let sizes = parse_volume_sizes(old).unwrap();
        assert_eq!(sizes.get("a"), Some(&Some(42)));
        assert_eq!(sizes.get("b"), Some(&None), "-1: the driver reports none");
        assert_eq!(sizes.get("c"), Some(&None));
        let new = br#"{"VolumeUsage":{"TotalCount":1,"Items":[{"Name":"a","UsageData":{"Size":7,"RefCount":0}}]}}"#;
        assert_eq!(parse_volume_sizes(new).unwrap().get("a"), Some(&Some(7)));
        assert!(parse_volume_sizes(b"{}").unwrap().is_empty());
        assert!(parse_volume_sizes(b"<html>").is_err());
    }
}
