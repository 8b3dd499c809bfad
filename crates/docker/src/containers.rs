//! One container up close, over the Docker API only (so the same on a
//! remote daemon): inspect in people's terms, its logs as bounded lines,
//! exec sessions with a TTY, and the debug shell — a busybox helper built on
//! the daemon from the local `busybox-static` (no pull) that joins a
//! container's PID and network namespaces, for images with no shell of
//! their own (`FROM scratch`). Its target's files are at `/proc/1/root`.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder,
    ResizeExecOptionsBuilder,
};
use bollard::Docker;
use changeover_core::detail::{
    looks_secret, parse_duration, ContainerDetail, EnvVar, HealthDetail, HealthRun, LogQuery,
    MountDetail, DEFAULT_TAIL,
};
use changeover_core::edge::labels;
use changeover_core::{Problem, ProblemCode};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use crate::connect::daemon_problem;

/// Label on the debug shell's helper containers (and what they debug).
pub const DEBUG_LABEL: &str = "dev.changeover.helper";
const DEBUG_IMAGE: &str = "changeover-debug:busybox";

fn gone(id: &str) -> Problem {
    Problem::new(
        ProblemCode::UnknownContainer,
        format!("no container {id:?} on this environment (it may have been removed)"),
    )
}

fn problem(context: &str, id: &str, e: bollard::errors::Error) -> Problem {
    match &e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => gone(id),
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } => Problem::new(
            ProblemCode::ContainerNotRunning,
            format!("{id} is not running ({message}); start it first"),
        ),
        _ => daemon_problem(context, &e),
    }
}

/// What `docker inspect` says, for people.
pub async fn detail(docker: &Docker, id: &str) -> Result<ContainerDetail, Problem> {
    let c = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| problem("reading the container", id, e))?;
    let config = c.config.clone().unwrap_or_default();
    let state = c.state.clone().unwrap_or_default();
    let image_id = c.image.clone().unwrap_or_default();
    let image_digests = match docker.inspect_image(&image_id).await {
        Ok(i) => i.repo_digests.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let labels: std::collections::BTreeMap<String, String> = config
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let num = |k: &str| labels.get(k).and_then(|v| v.parse::<u32>().ok());
    let service = match (labels.get(labels::STACK), labels.get(labels::SERVICE)) {
        (Some(st), Some(sv)) => Some(format!("{st}/{sv}")),
        _ => None,
    };
    let mut ports: Vec<String> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(
            |(private, public)| match public.unwrap_or_default().first() {
                Some(b) => format!(
                    "{}:{} → {private}",
                    b.host_ip.clone().unwrap_or_default(),
                    b.host_port.clone().unwrap_or_default()
                ),
                None => private,
            },
        )
        .collect();
    ports.sort();
    let health = state.health.as_ref().map(|h| HealthDetail {
        status: h.status.map(|s| s.to_string()).unwrap_or_default(),
        failing_streak: h.failing_streak.unwrap_or(0),
        log: h
            .log
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|r| HealthRun {
                start: r.start.unwrap_or_default(),
                exit_code: r.exit_code.unwrap_or(0),
                output: r.output.unwrap_or_default().trim().to_string(),
            })
            .collect(),
    });
    Ok(ContainerDetail {
        id: c.id.clone().unwrap_or_default(),
        name: c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.clone().unwrap_or_default(),
        image_id,
        image_digests,
        entrypoint: config.entrypoint.clone().unwrap_or_default(),
        command: config.cmd.clone().unwrap_or_default(),
        env: config
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                EnvVar {
                    secret: looks_secret(k),
                    key: k.to_string(),
                    value: v.to_string(),
                }
            })
            .collect(),
        ports,
        mounts: c
            .mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| MountDetail {
                kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
                source: m
                    .name
                    .filter(|n| !n.is_empty())
                    .or(m.source)
                    .unwrap_or_default(),
                destination: m.destination.unwrap_or_default(),
                read_only: m.rw == Some(false),
            })
            .collect(),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        running: state.running == Some(true),
        exit_code: state.exit_code,
        started_at: state.started_at.filter(|s| !s.starts_with("0001")),
        finished_at: state.finished_at.filter(|s| !s.starts_with("0001")),
        created: c.created.clone(),
        restart_count: c.restart_count.unwrap_or(0),
        oom_killed: state.oom_killed == Some(true),
        health,
        service,
        release: num(labels::RELEASE),
        slot: num(labels::SLOT),
        labels,
    })
}

/// A piece of a container's output: which stream, and its bytes.
pub struct Output {
    pub stderr: bool,
    pub bytes: bytes::Bytes,
}

pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, Problem>> + Send>>;

fn piece(
    item: Result<LogOutput, bollard::errors::Error>,
    id: &str,
) -> Option<Result<Output, Problem>> {
    match item {
        Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
            Some(Ok(Output {
                stderr: false,
                bytes: message,
            }))
        }
        Ok(LogOutput::StdErr { message }) => Some(Ok(Output {
            stderr: true,
            bytes: message,
        })),
        Ok(LogOutput::StdIn { .. }) => None,
        Err(e) => Some(Err(problem("reading the container's output", id, e))),
    }
}

/// A container's logs as the daemon sends them, timestamped: the last
/// `tail` lines (or all), since a time, and following when asked. Lines
/// are whole only after a [`changeover_core::detail::LineSplitter`].
pub fn logs(docker: &Docker, id: &str, query: &LogQuery) -> Result<OutputStream, Problem> {
    logs_since(docker, id, query, None)
}

/// [`logs`] from an absolute time on (Unix seconds), whatever `query.since`
/// says: a container that started while a service's logs were followed.
pub fn logs_since(
    docker: &Docker,
    id: &str,
    query: &LogQuery,
    since_unix: Option<i64>,
) -> Result<OutputStream, Problem> {
    let since = match (&query.since, since_unix) {
        (_, Some(t)) => t.clamp(0, i64::from(i32::MAX)) as i32,
        (Some(s), None) => {
            let secs =
                parse_duration(s).map_err(|why| Problem::new(ProblemCode::InvalidTraffic, why))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            now.saturating_sub(secs) as i32
        }
        (None, None) => 0,
    };
    let tail = if query.all || since_unix.is_some() {
        "all".to_string()
    } else {
        query.tail.unwrap_or(DEFAULT_TAIL).to_string()
    };
    let options = LogsOptionsBuilder::new()
        .follow(query.follow)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(since)
        .tail(&tail)
        .build();
    let owned = id.to_string();
    Ok(Box::pin(docker.logs(id, Some(options)).filter_map(
        move |item| std::future::ready(piece(item, &owned)),
    )))
}

/// An exec or attach session: bytes in, bytes out.
pub struct Session {
    /// The exec's ID (an attach to a helper container has none).
    pub exec_id: Option<String>,
    /// The helper container of a debug shell.
    pub helper: Option<String>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    pub output: OutputStream,
}

/// Runs `cmd` in the running container `id`, with a TTY of `size`
/// (`cols`, `rows`) when given.
pub async fn exec(
    docker: &Docker,
    id: &str,
    cmd: Vec<String>,
    size: Option<(u16, u16)>,
    env: Vec<String>,
) -> Result<Session, Problem> {
    let created = docker
        .create_exec(
            id,
            CreateExecOptions {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(size.is_some()),
                cmd: Some(cmd),
                env: Some(env),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| problem("starting a command in the container", id, e))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: size.is_some(),
                output_capacity: Some(64 * 1024),
            }),
        )
        .await
        .map_err(|e| problem("starting a command in the container", id, e))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(Problem::new(
            ProblemCode::DaemonError,
            "the daemon did not attach to the command",
        ));
    };
    if let Some((cols, rows)) = size {
        resize_exec(docker, &created.id, cols, rows).await;
    }
    let owned = id.to_string();
    Ok(Session {
        exec_id: Some(created.id),
        helper: None,
        input,
        output: Box::pin(output.filter_map(move |item| std::future::ready(piece(item, &owned)))),
    })
}

/// The exit code of a finished exec (`None` while it runs).
pub async fn exec_exit(docker: &Docker, exec_id: &str) -> Option<i64> {
    let i = docker.inspect_exec(exec_id).await.ok()?;
    if i.running == Some(true) {
        return None;
    }
    i.exit_code
}

/// Follows a TTY to a new size; a session that ended meanwhile is fine.
pub async fn resize_exec(docker: &Docker, exec_id: &str, cols: u16, rows: u16) {
    let _ = docker
        .resize_exec(
            exec_id,
            ResizeExecOptionsBuilder::new()
                .w(i32::from(cols))
                .h(i32::from(rows))
                .build(),
        )
        .await;
}

pub async fn resize_container(docker: &Docker, id: &str, cols: u16, rows: u16) {
    let _ = docker
        .resize_container_tty(
            id,
            ResizeContainerTTYOptionsBuilder::new()
                .w(i32::from(cols))
                .h(i32::from(rows))
                .build(),
        )
        .await;
}

/// Which shell the running container `id` has: `bash`, else `sh`, else
/// none (`FROM scratch` images).
pub async fn shell_of(docker: &Docker, id: &str) -> Result<Option<&'static str>, Problem> {
    for (shell, path) in [("bash", "/bin/bash"), ("sh", "/bin/sh")] {
        let mut s = exec(
            docker,
            id,
            vec![path.into(), "-c".into(), "exit 0".into()],
            None,
            vec![],
        )
        .await?;
        while s.output.next().await.is_some() {}
        let exec_id = s.exec_id.clone().unwrap_or_default();
        let mut code = None;
        for _ in 0..50 {
            code = exec_exit(docker, &exec_id).await;
            if code.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if code == Some(0) {
            return Ok(Some(shell));
        }
    }
    Ok(None)
}

/// The local busybox-static the debug image is made from.
fn busybox() -> Result<Vec<u8>, Problem> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Problem::new(
                ProblemCode::DaemonError,
                "the debug shell needs busybox-static on this machine (apt install busybox-static)",
            )
        })?;
    std::fs::read(path).map_err(|e| {
        Problem::new(
            ProblemCode::DaemonError,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// Builds the debug shell's image on the daemon when it is not there.
async fn ensure_debug_image(docker: &Docker) -> Result<(), Problem> {
    if docker.inspect_image(DEBUG_IMAGE).await.is_ok() {
        return Ok(());
    }
    let binary = busybox()?;
    let dockerfile = format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nLABEL {}=true\nENTRYPOINT [\"/bin/sh\"]\n",
        labels::MANAGED
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
    };
    add("busybox", &binary, 0o755)
        .and_then(|_| add("Dockerfile", dockerfile.as_bytes(), 0o644))
        .map_err(|e| {
            Problem::new(
                ProblemCode::DaemonError,
                format!("cannot pack the debug image: {e}"),
            )
        })?;
    let context = tar.into_inner().map_err(|e| {
        Problem::new(
            ProblemCode::DaemonError,
            format!("cannot pack the debug image: {e}"),
        )
    })?;
    let options = BuildImageOptionsBuilder::new()
        .t(DEBUG_IMAGE)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| daemon_problem("building the debug image", &e))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(Problem::new(
                ProblemCode::DaemonError,
                format!("building the debug image failed: {err}"),
            ));
        }
    }
    Ok(())
}

/// A debug shell for the running container `id`: a busybox helper in its
/// PID and network namespaces, removed when the shell ends.
pub async fn debug_shell(docker: &Docker, id: &str, size: (u16, u16)) -> Result<Session, Problem> {
    let target = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| problem("reading the container", id, e))?;
    if target.state.as_ref().and_then(|s| s.running) != Some(true) {
        return Err(Problem::new(
            ProblemCode::ContainerNotRunning,
            format!("{id} is not running; start it first"),
        ));
    }
    let target_id = target.id.unwrap_or_else(|| id.to_string());
    ensure_debug_image(docker).await?;
    let body = ContainerCreateBody {
        image: Some(DEBUG_IMAGE.into()),
        cmd: Some(vec!["-l".into()]),
        tty: Some(true),
        open_stdin: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        env: Some(vec!["PS1=debug:\\w# ".into(), "TERM=xterm-256color".into()]),
        labels: Some(HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (DEBUG_LABEL.to_string(), format!("debug:{target_id}")),
        ])),
        host_config: Some(HostConfig {
            pid_mode: Some(format!("container:{target_id}")),
            network_mode: Some(format!("container:{target_id}")),
            auto_remove: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::new().build()), body)
        .await
        .map_err(|e| daemon_problem("creating the debug shell", &e))?;
    let attached = docker
        .attach_container(
            &created.id,
            Some(
                AttachContainerOptionsBuilder::new()
                    .stdin(true)
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .build(),
            ),
        )
        .await
        .map_err(|e| daemon_problem("attaching to the debug shell", &e))?;
    if let Err(e) = docker.start_container(&created.id, None).await {
        remove_helper(docker, &created.id).await;
        return Err(daemon_problem("starting the debug shell", &e));
    }
    resize_container(docker, &created.id, size.0, size.1).await;
    let owned = id.to_string();
    Ok(Session {
        exec_id: None,
        helper: Some(created.id),
        input: attached.input,
        output: Box::pin(
            attached
                .output
                .filter_map(move |item| std::future::ready(piece(item, &owned))),
        ),
    })
}

/// Removes a debug helper (fine when it already went).
pub async fn remove_helper(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
}

/// The exit code of a stopped helper container.
pub async fn helper_exit(docker: &Docker, id: &str) -> Option<i64> {
    docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|c| c.state)
        .filter(|s| s.running != Some(true))
        .and_then(|s| s.exit_code)
}

/// A container of a service that just started.
pub struct Started {
    pub id: String,
    pub name: String,
    pub release: Option<u32>,
    pub slot: Option<u32>,
    /// When it started (Unix seconds).
    pub at: i64,
}

/// Whether the container `id` runs now (`false` when it is gone).
pub async fn is_running(docker: &Docker, id: &str) -> bool {
    docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.running)
        == Some(true)
}

/// Every container of `stack/service` that starts from now on, from the
/// daemon's events (ends when the event stream does).
pub fn starts_of(
    docker: &Docker,
    stack: &str,
    service: &str,
) -> Pin<Box<dyn Stream<Item = Started> + Send>> {
    use bollard::query_parameters::EventsOptionsBuilder;
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["start".to_string()]),
        (
            "label".to_string(),
            vec![
                format!("{}={stack}", labels::STACK),
                format!("{}={service}", labels::SERVICE),
            ],
        ),
    ]);
    let events = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
    Box::pin(
        events
            .take_while(|e| std::future::ready(e.is_ok()))
            .filter_map(|e| {
                std::future::ready((|| {
                    let e = e.ok()?;
                    let at = e.time.unwrap_or(0);
                    let actor = e.actor?;
                    let id = actor.id?;
                    let attrs = actor.attributes.unwrap_or_default();
                    let num = |k: &str| attrs.get(k).and_then(|v| v.parse::<u32>().ok());
                    Some(Started {
                        name: attrs.get("name").cloned().unwrap_or_else(|| id.clone()),
                        release: num(labels::RELEASE),
                        slot: num(labels::SLOT),
                        id,
                        at,
                    })
                })())
            }),
    )
}
