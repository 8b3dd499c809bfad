//! Putting the edge on an environment and talking to it.
//!
//! The edge image is built on the target daemon itself from the static
//! (musl) edge binary — `FROM scratch`, the binary, nothing else — so it works
//! on daemons without registry access. The same binary makes the demo images
//! (`changeover-demo:TAG`) the sandbox, tests and benchmarks deploy.
//!
//! Shape (DESIGN.md decision 4): one edge container per environment, on the
//! host's network (`network_mode: host`), so it can open a listener for a new
//! service port at any time without being re-created — a running container
//! cannot gain published ports, and re-creating the edge would drop traffic.
//! It reaches service containers by their IP on the stack's bridge network,
//! which a Linux host routes to. Trade-off: this needs a Linux daemon (Docker
//! Desktop's VM hides container IPs from its "host"); there, an edge per
//! published port would be the alternative.
//!
//! Beside it runs the edge's watcher (`changeover-edge-watch`, the same
//! image): no network, the daemon's socket and the edge's state volume. It
//! follows container events and takes a target off the routes the moment its
//! container dies or goes, so a reused IP never receives another container's
//! traffic. The socket is there and not in the edge because the edge faces
//! the internet. A daemon whose socket is not `/var/run/docker.sock` on its
//! host gets no watcher (the watcher checks the daemon's ID and stands down);
//! clients then take gone targets off before every change.
//!
//! Replacing the edge (an upgrade, another protocol) never closes a port:
//! the new edge runs as a second container (`changeover-edge-next`) on the
//! same state volume and takes the old one's listening sockets over (the
//! edge's `handover` module); then the names swap and the old one drains
//! on `docker stop`. Only an edge older than protocol 5, which cannot hand
//! over, is removed first.
//!
//! Control goes through `docker exec changeover-edge /changeover-edge ctl -`:
//! a session of JSON lines over the exec's stdin and stdout, kept open for
//! the next request (nothing listens on the network for it). An edge too old
//! for sessions gets one `ctl '<json>'` exec per request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bollard::models::{
    ContainerCreateBody, HostConfig, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use changeover_core::edge::{
    labels, EdgeStatus, Request, Response, CTL_SESSION_GREETING, EDGE_BINARY_PATH, EDGE_CONTAINER,
    EDGE_STATE_DIR, EDGE_STATE_VOLUME, PROTOCOL_VERSION, WATCH_CONTAINER,
};
use changeover_core::rollout::EdgeControl;
use changeover_core::{Problem, ProblemCode};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::connect::daemon_problem;

const MUSL: &str = "x86_64-unknown-linux-musl";

/// The edge container's `nofile` limit.
const EDGE_DESCRIPTORS: i64 = 65_536;

fn edge_problem(message: impl Into<String>) -> Problem {
    Problem::new(ProblemCode::EdgeError, message)
}

/// The static edge binary to put in images: `CHANGEOVER_EDGE_BINARY`, else
/// `changeover-edge` beside the running program when it is static, else the
/// workspace's musl build (`make edge`).
pub fn edge_binary() -> Result<PathBuf, Problem> {
    static_binary(
        "CHANGEOVER_EDGE_BINARY",
        &["changeover-edge"],
        "changeover-edge",
        "make edge",
        "-p changeover-edge",
    )
}

/// A static program to put in an image: the file `var` names, else the
/// first of `beside` next to the running program that is static, else
/// `built` in the workspace's musl build (release, then debug). The
/// error says how to build it (`make`, `cargo` arguments).
pub fn static_binary(
    var: &str,
    beside: &[&str],
    built: &str,
    make: &str,
    cargo: &str,
) -> Result<PathBuf, Problem> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(edge_problem(format!(
                "{var} points to {}, which is not a file",
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(|e| edge_problem(e.to_string()))?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.extend(beside.iter().map(|b| dir.join(b)));
        // target/{debug,release}/ → target/x86_64-unknown-linux-musl/{release,debug}/
        // (and one level more for test binaries in target/debug/deps/).
        for up in [dir.parent(), dir.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            candidates.push(up.join(MUSL).join("release").join(built));
            candidates.push(up.join(MUSL).join("debug").join(built));
        }
    }
    for c in &candidates {
        if c.is_file() && is_static(c) {
            return Ok(c.clone());
        }
    }
    Err(edge_problem(format!(
        "the static {built} binary was not found (looked beside {}); build it with `{make}` \
         (cargo build --release --target {MUSL} {cargo}) or set {var}",
        exe.display()
    )))
}

/// A dynamically linked binary names its loader (in its first few KiB); a
/// static one does not.
fn is_static(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    match std::fs::File::open(path).and_then(|f| f.take(4096).read_to_end(&mut head)) {
        Ok(_) => {
            head.starts_with(b"\x7fELF")
                && !head.windows(b"ld-linux".len()).any(|w| w == b"ld-linux")
        }
        Err(_) => false,
    }
}

/// A built image's tag and the digest of the binary inside.
pub struct BinaryImage {
    pub binary: Vec<u8>,
    pub digest: String,
}

impl BinaryImage {
    /// The edge binary and its digest, read once per process: every deploy
    /// compares the running edge with it, and a deploy may also build images
    /// from it, so it is not read and hashed again each time.
    pub fn load() -> Result<Arc<Self>, Problem> {
        static LOADED: OnceLock<Arc<BinaryImage>> = OnceLock::new();
        if let Some(b) = LOADED.get() {
            return Ok(b.clone());
        }
        let path = edge_binary()?;
        let binary = std::fs::read(&path)
            .map_err(|e| edge_problem(format!("cannot read {}: {e}", path.display())))?;
        let digest = format!("{:x}", Sha256::digest(&binary));
        Ok(LOADED
            .get_or_init(|| Arc::new(Self { binary, digest }))
            .clone())
    }

    fn short(&self) -> &str {
        &self.digest[..12]
    }
}

fn tar_context(binary: &[u8], dockerfile: &str) -> Result<Vec<u8>, Problem> {
    tar_of(
        "the image context",
        &[],
        &[
            ("changeover-edge", binary, 0o755),
            ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ],
    )
}

/// A tar of the folders `dirs` (mode 0700), then `files` (name, bytes,
/// mode), every time 0; `what` names it in an error.
pub(crate) fn tar_of(
    what: &str,
    dirs: &[&str],
    files: &[(&str, &[u8], u32)],
) -> Result<Vec<u8>, Problem> {
    let fail = |e: std::io::Error| edge_problem(format!("cannot pack {what}: {e}"));
    let mut builder = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o700);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, d, std::io::empty())
            .map_err(fail)?;
    }
    for (name, data, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, name, *data)
            .map_err(fail)?;
    }
    builder.into_inner().map_err(fail)
}

/// Builds `tag` from a packed context (a Dockerfile and what it copies);
/// a failure in the daemon's words.
pub(crate) async fn build_context(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
) -> Result<(), Problem> {
    let options = BuildImageOptionsBuilder::new()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| daemon_problem(&format!("building image {tag}"), &e))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(edge_problem(format!("building image {tag} failed: {err}")));
        }
    }
    Ok(())
}

async fn image_digest(docker: &Docker, tag: &str) -> Option<String> {
    let image = docker.inspect_image(tag).await.ok()?;
    image
        .config
        .and_then(|c| c.labels)
        .and_then(|l| l.get(labels::EDGE_DIGEST).cloned())
}

/// Builds `tag` from the binary with `entrypoint` unless it already holds
/// this very binary. Returns true when it built.
pub(crate) async fn ensure_binary_image(
    docker: &Docker,
    image: &BinaryImage,
    tag: &str,
    entrypoint: &[&str],
    extra_labels: &[(&str, String)],
) -> Result<bool, Problem> {
    if image_digest(docker, tag).await.as_deref() == Some(image.digest.as_str()) {
        return Ok(false);
    }
    let entry = serde_json::to_string(entrypoint).unwrap_or_default();
    let mut dockerfile = format!(
        "FROM scratch\nCOPY changeover-edge {EDGE_BINARY_PATH}\nLABEL {}=\"{}\"\n",
        labels::EDGE_DIGEST,
        image.digest
    );
    for (k, v) in extra_labels {
        dockerfile.push_str(&format!("LABEL {k}=\"{v}\"\n"));
    }
    dockerfile.push_str(&format!("ENTRYPOINT {entry}\n"));
    build_context(docker, tag, tar_context(&image.binary, &dockerfile)?).await?;
    Ok(true)
}

/// The edge image tag for this binary.
pub fn edge_image_tag(image: &BinaryImage) -> String {
    format!("changeover-edge:{}", image.short())
}

/// Builds the demo app image `changeover-demo:VERSION` (answers VERSION on
/// `/`, 200 on `/health`; never healthy with `unhealthy`).
pub async fn ensure_demo_image(
    docker: &Docker,
    image: &BinaryImage,
    version: &str,
    unhealthy: bool,
) -> Result<String, Problem> {
    let tag = format!("changeover-demo:{version}");
    let mut entry = vec![EDGE_BINARY_PATH, "demo", "--version", version];
    if unhealthy {
        entry.push("--unhealthy");
    }
    ensure_binary_image(docker, image, &tag, &entry, &[]).await?;
    Ok(tag)
}

/// Makes sure the edge runs on this environment, with this binary's protocol:
/// builds its image when missing, (re)creates the container when it is
/// missing, stopped, or speaks another protocol version. A running edge of
/// the same protocol is left alone even if its binary differs, because
/// replacing it would interrupt traffic: [`outdated_edge`] says so, and
/// [`upgrade_edge`] (`changeover edge upgrade`) replaces it when asked.
pub async fn ensure_edge(docker: &Docker) -> Result<Edge, Problem> {
    let edge = Edge::attach(docker);
    ensure(&edge).await?;
    Ok(edge)
}

/// [`ensure_edge`] for a kept edge handle: its open control sessions are
/// used when the edge runs, and dropped when it had to be replaced.
pub async fn ensure(edge: &Edge) -> Result<(), Problem> {
    let docker = &edge.docker;
    let arch = docker
        .version()
        .await
        .map_err(|e| daemon_problem("reading the daemon's version", &e))?
        .arch
        .unwrap_or_default();
    if arch != "amd64" && arch != "x86_64" {
        return Err(edge_problem(format!(
            "the edge is built for x86_64 daemons; this daemon is {arch}"
        )));
    }
    if let Ok(c) = docker.inspect_container(EDGE_CONTAINER, None).await {
        let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if running {
            if let Ok(Response::Hello { protocol, .. }) = edge.call(Request::Hello).await {
                if protocol == PROTOCOL_VERSION {
                    watch_beside(docker).await;
                    return Ok(());
                }
                if protocol >= HANDOVER_PROTOCOL {
                    // Another protocol, but it can hand its listeners over.
                    return hand_over(edge, &*BinaryImage::load()?).await;
                }
            }
        }
        // By ID: when another client replaced this edge a moment ago, its
        // new edge is left alone (this one is gone already).
        remove_edge_container(docker, c.id.as_deref().unwrap_or(EDGE_CONTAINER)).await?;
    }
    edge.forget_sessions().await;
    create_edge(edge, &*BinaryImage::load()?).await
}

/// The edge container: on the host's network, restarted unless stopped,
/// its state volume, 65,536 descriptors; `args` after the image's
/// `serve --state …` entry point.
fn edge_container_body(tag: &str, args: &[&str], more_descriptors: bool) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(tag.to_string()),
        cmd: (!args.is_empty()).then(|| args.iter().map(|a| a.to_string()).collect()),
        labels: Some(
            [(labels::MANAGED.to_string(), "true".to_string())]
                .into_iter()
                .collect(),
        ),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            binds: Some(vec![format!("{EDGE_STATE_VOLUME}:{EDGE_STATE_DIR}")]),
            // The edge faces the internet: a container's default of 1,024
            // descriptors is a few hundred clients. It admits about half of
            // what it gets (see the edge's `limits`).
            ulimits: more_descriptors.then(|| {
                vec![ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(EDGE_DESCRIPTORS),
                    hard: Some(EDGE_DESCRIPTORS),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts the edge container `name` (created with [`EDGE_DESCRIPTORS`]). A
/// daemon that may not give that many (its own hard limit is lower: runc
/// says "error setting rlimit") gets the container created again with the
/// daemon's own limit, which the edge then raises its soft limit to.
async fn start_edge_container(
    docker: &Docker,
    name: &str,
    tag: &str,
    args: &[&str],
) -> Result<(), Problem> {
    match docker.start_container(name, None).await {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("rlimit") => {
            tracing::warn!(
                "the daemon cannot give the edge {EDGE_DESCRIPTORS} descriptors; it runs with the daemon's limit"
            );
            remove_edge_container(docker, name).await?;
            docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(name).build()),
                    edge_container_body(tag, args, false),
                )
                .await
                .map_err(|e| daemon_problem("creating the edge container", &e))?;
            docker
                .start_container(name, None)
                .await
                .map_err(|e| daemon_problem("starting the edge", &e))
        }
        Err(e) => Err(daemon_problem("starting the edge", &e)),
    }
}

/// Builds the edge image for `binary` when missing, then creates and starts
/// the edge container from it (routes reload from the state volume).
async fn create_edge(edge: &Edge, binary: &BinaryImage) -> Result<(), Problem> {
    let docker = &edge.docker;
    let tag = build_edge_image(docker, binary).await?;
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(EDGE_CONTAINER)
                    .build(),
            ),
            edge_container_body(&tag, &[], true),
        )
        .await;
    match created {
        Ok(_) => start_edge_container(docker, EDGE_CONTAINER, &tag, &[]).await?,
        // Another client created it a moment ago: use that one. Starting it
        // too covers a client that died between its create and its start.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            let _ = docker.start_container(EDGE_CONTAINER, None).await;
        }
        Err(e) => return Err(daemon_problem("creating the edge container", &e)),
    }
    // Wait for its control socket.
    let mut last = None;
    for _ in 0..100 {
        match edge.call(Request::Hello).await {
            Ok(Response::Hello { .. }) => {
                watch_beside(docker).await;
                return Ok(());
            }
            Ok(other) => last = Some(format!("{other:?}")),
            Err(e) => last = Some(e.message),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(edge_problem(format!(
        "the edge started but does not answer: {}",
        last.unwrap_or_default()
    )))
}

/// [`ensure_watch`], for a deploy: a watcher that cannot be set up is
/// logged, never a reason to stop the deploy (clients take gone targets off
/// before every change anyway).
async fn watch_beside(docker: &Docker) {
    if let Err(e) = ensure_watch(docker).await {
        tracing::warn!(error = %e, "the edge's watcher could not be set up");
    }
}

/// Makes sure the edge's watcher runs beside it, from this build's edge
/// image (an older edge image may not know `watch`):
/// a container with no network, the Docker socket and the edge's state
/// volume, that takes the targets of containers that die or vanish off the
/// routes at once (see the edge's `watch` module). Where the daemon's
/// socket is not at `/var/run/docker.sock` on its host, there is none (the
/// watcher checks the daemon's ID and stands down); clients then take gone
/// targets off before every change. Returns whether one runs.
pub async fn ensure_watch(docker: &Docker) -> Result<bool, Problem> {
    use bollard::models::{Mount, MountType};
    let Ok(binary) = BinaryImage::load() else {
        return Ok(false);
    };
    let image = build_edge_image(docker, &binary).await?;
    let image = image.as_str();
    if let Ok(c) = docker.inspect_container(WATCH_CONTAINER, None).await {
        let same = c.config.as_ref().and_then(|c| c.image.as_deref()) == Some(image);
        let state = c.state.unwrap_or_default();
        if same && (state.running == Some(true) || state.exit_code == Some(0)) {
            return Ok(state.running == Some(true));
        }
        remove_edge_container(docker, c.id.as_deref().unwrap_or(WATCH_CONTAINER)).await?;
    }
    let id = docker
        .info()
        .await
        .map_err(|e| daemon_problem("reading the daemon's info", &e))?
        .id
        .unwrap_or_default();
    let socket = "/var/run/docker.sock".to_string();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![
            EDGE_BINARY_PATH.to_string(),
            "watch".into(),
            "--docker".into(),
            socket.clone(),
            "--state".into(),
            EDGE_STATE_DIR.into(),
            "--daemon-id".into(),
            id,
        ]),
        labels: Some(
            [(labels::MANAGED.to_string(), "true".to_string())]
                .into_iter()
                .collect(),
        ),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: None,
            }),
            mounts: Some(vec![
                // A bind mount (unlike `binds`) fails when the socket is not
                // there, instead of leaving an empty folder on the host.
                Mount {
                    target: Some(socket.clone()),
                    source: Some(socket),
                    typ: Some(MountType::BIND),
                    ..Default::default()
                },
                Mount {
                    target: Some(EDGE_STATE_DIR.into()),
                    source: Some(EDGE_STATE_VOLUME.into()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(WATCH_CONTAINER)
                    .build(),
            ),
            body,
        )
        .await;
    match created {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        // No socket at the usual place on this daemon's host.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 400 | 500,
            message,
        }) if message.contains("does not exist") || message.contains("bind source") => {
            tracing::info!("no edge watcher on this daemon: {message}");
            return Ok(false);
        }
        Err(e) => return Err(daemon_problem("creating the edge's watcher", &e)),
    }
    match docker.start_container(WATCH_CONTAINER, None).await {
        Ok(()) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(true),
        Err(e) => Err(daemon_problem("starting the edge's watcher", &e)),
    }
}

/// Removes the edge container `id` (its ID, or its name). Already gone is
/// fine (another client, or nothing was there); a removal another client
/// started is waited for.
async fn remove_edge_container(docker: &Docker, id: &str) -> Result<(), Problem> {
    let removed = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .or_else(gone_already);
    match removed {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            for _ in 0..200 {
                if docker.inspect_container(id, None).await.is_err() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(edge_problem(
                "another client is removing the old edge and it is still there after 10 s",
            ))
        }
        Err(e) => Err(daemon_problem("removing the old edge", &e)),
    }
}

/// A container that is not there any more was removed by someone else: fine.
fn gone_already(e: bollard::errors::Error) -> Result<(), bollard::errors::Error> {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => Ok(()),
        e => Err(e),
    }
}

async fn build_edge_image(docker: &Docker, binary: &BinaryImage) -> Result<String, Problem> {
    let tag = edge_image_tag(binary);
    ensure_binary_image(
        docker,
        binary,
        &tag,
        &[EDGE_BINARY_PATH, "serve", "--state", EDGE_STATE_DIR],
        &[(labels::EDGE_PROTOCOL, PROTOCOL_VERSION.to_string())],
    )
    .await?;
    Ok(tag)
}

/// What runs as the edge, and whether it is this Changeover's build.
pub async fn edge_status(edge: &Edge) -> Result<EdgeStatus, Problem> {
    let docker = &edge.docker;
    let wanted = BinaryImage::load().ok().map(|b| edge_image_tag(&b));
    let container = docker.inspect_container(EDGE_CONTAINER, None).await.ok();
    let running = container
        .as_ref()
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running)
        .unwrap_or(false);
    let image = container
        .as_ref()
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.image.clone());
    let (mut protocol, mut uptime_ms, mut routes) = (None, None, 0);
    if running {
        if let Ok(Response::Hello {
            protocol: p,
            uptime_ms: u,
            ..
        }) = edge.call(Request::Hello).await
        {
            protocol = Some(p);
            uptime_ms = Some(u);
        }
        if let Ok(Response::Routes { routes: r }) =
            edge.call(Request::Routes { service: None }).await
        {
            routes = r.len();
        }
    }
    Ok(EdgeStatus {
        running,
        up_to_date: running && image.is_some() && image == wanted,
        image,
        wanted,
        protocol,
        uptime_ms,
        routes,
    })
}

/// A sentence for the user when the running edge is another build than this
/// Changeover's (read from the container's image tag; no exec).
pub async fn outdated_edge(docker: &Docker) -> Option<String> {
    let wanted = edge_image_tag(&*BinaryImage::load().ok()?);
    let running = docker
        .inspect_container(EDGE_CONTAINER, None)
        .await
        .ok()?
        .config?
        .image?;
    (running != wanted).then(|| {
        format!(
            "the edge runs {running}, an older build than this Changeover's ({wanted}); it keeps working — `changeover edge upgrade` replaces it without dropping a request"
        )
    })
}

/// Replaces the edge with this Changeover's build. Its image is built
/// first. An edge of protocol 5 or later hands its listening sockets to the
/// new one ([`hand_over`]): no connection is refused and none in flight is
/// cut. An older edge is removed and the new one created, so its ports
/// close from the removal until the new one has reloaded its routes (about
/// a second on a small host).
pub async fn upgrade_edge(edge: &Edge) -> Result<(), Problem> {
    let binary = BinaryImage::load()?;
    build_edge_image(&edge.docker, &binary).await?;
    let running = edge
        .docker
        .inspect_container(EDGE_CONTAINER, None)
        .await
        .ok()
        .and_then(|c| c.state?.running)
        .unwrap_or(false);
    if running {
        if let Ok(Response::Hello { protocol, .. }) = edge.call(Request::Hello).await {
            if protocol >= HANDOVER_PROTOCOL {
                return hand_over(edge, &binary).await;
            }
        }
    }
    remove_edge_container(&edge.docker, EDGE_CONTAINER).await?;
    edge.forget_sessions().await;
    create_edge(edge, &binary).await
}

/// The first edge protocol whose edges hand their listeners over.
const HANDOVER_PROTOCOL: u32 = 5;
/// The new edge while it takes over, and the old one while it drains.
const NEXT_CONTAINER: &str = "changeover-edge-next";
const RETIRED_CONTAINER: &str = "changeover-edge-retired";
/// How long the old edge may drain (its longest drain timeout is 30 s by
/// default) before Docker kills it.
const RETIRE_SECONDS: i32 = 35;

/// Replaces the running edge with one of `binary`'s image, which takes its
/// listening sockets over (the edge's `handover` module): a second container
/// on the same state volume, started with `--take-over`; once it answers
/// the control socket, the names swap and the old one is stopped (it
/// drains) and removed. When the new one cannot take over, it is removed
/// and the old one keeps serving, untouched.
async fn hand_over(edge: &Edge, binary: &BinaryImage) -> Result<(), Problem> {
    let docker = &edge.docker;
    let tag = build_edge_image(docker, binary).await?;
    for leftover in [NEXT_CONTAINER, RETIRED_CONTAINER] {
        remove_edge_container(docker, leftover).await?;
    }
    // Told apart by uptime: the new edge's is less than the time since it
    // was started, the old one's more (give a just-started one a moment).
    if let Ok(Response::Hello { uptime_ms, .. }) = edge.call(Request::Hello).await {
        if uptime_ms < 2_000 {
            tokio::time::sleep(std::time::Duration::from_millis(2_000 - uptime_ms)).await;
        }
    }
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(NEXT_CONTAINER)
                    .build(),
            ),
            edge_container_body(&tag, &["--take-over"], true),
        )
        .await
        .map_err(|e| daemon_problem("creating the new edge", &e))?;
    let started = std::time::Instant::now();
    start_edge_container(docker, NEXT_CONTAINER, &tag, &["--take-over"]).await?;
    let took_over = loop {
        let answered = edge.call(Request::Hello).await;
        if let Ok(Response::Hello { uptime_ms, .. }) = answered {
            if u128::from(uptime_ms) < started.elapsed().as_millis() + 500 {
                break Ok(());
            }
        }
        let next_runs = docker
            .inspect_container(NEXT_CONTAINER, None)
            .await
            .ok()
            .and_then(|c| c.state?.running)
            .unwrap_or(false);
        if !next_runs {
            break Err("it exited".to_string());
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            break Err("it did not answer within 20 s".to_string());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if let Err(why) = took_over {
        let said = last_log_line(docker, NEXT_CONTAINER).await;
        let _ = remove_edge_container(docker, NEXT_CONTAINER).await;
        return Err(edge_problem(format!(
            "the new edge could not take over ({why}{}); the running edge keeps serving",
            said.map(|l| format!(": {l}")).unwrap_or_default()
        )));
    }
    let rename = |from: &'static str, to: &'static str| async move {
        docker
            .rename_container(
                from,
                bollard::query_parameters::RenameContainerOptions { name: to.into() },
            )
            .await
            .map_err(|e| daemon_problem(&format!("renaming {from} to {to}"), &e))
    };
    rename(EDGE_CONTAINER, RETIRED_CONTAINER).await?;
    rename(NEXT_CONTAINER, EDGE_CONTAINER).await?;
    edge.forget_sessions().await;
    // SIGTERM: it drains what is in flight and exits.
    let _ = docker
        .stop_container(
            RETIRED_CONTAINER,
            Some(bollard::query_parameters::StopContainerOptions {
                t: Some(RETIRE_SECONDS),
                signal: None,
            }),
        )
        .await;
    remove_edge_container(docker, RETIRED_CONTAINER).await?;
    watch_beside(docker).await;
    Ok(())
}

/// The last line a container wrote to stderr or stdout, if any.
async fn last_log_line(docker: &Docker, container: &str) -> Option<String> {
    let options = bollard::query_parameters::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail("5")
        .build();
    let mut logs = docker.logs(container, Some(options));
    let mut last = None;
    while let Some(Ok(line)) = logs.next().await {
        let text = line.to_string();
        if !text.trim().is_empty() {
            last = Some(text.trim().to_string());
        }
    }
    last
}

/// The edge of one environment, reached through `docker exec`.
#[derive(Clone)]
pub struct Edge {
    pub docker: Docker,
    /// Open control sessions (`ctl -`), idle between requests. Requests made
    /// at the same time (a long `TargetAdd` wait and a lock refresh) each
    /// take their own.
    sessions: Arc<tokio::sync::Mutex<Vec<Session>>>,
    /// Set when the running edge is too old for sessions: one exec per
    /// request then.
    one_shot: Arc<std::sync::atomic::AtomicBool>,
}

/// One `docker exec changeover-edge /changeover-edge ctl -`, kept open.
struct Session {
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    /// Bytes read past the last answer's newline.
    pending: Vec<u8>,
    /// What the process wrote on stderr (shown when it ends without answer).
    stderr: String,
}

impl Session {
    /// The next line on stdout; `None` when the stream ends first.
    async fn line(&mut self) -> Result<Option<String>, Problem> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(i + 1);
                let line = std::mem::replace(&mut self.pending, rest);
                return Ok(Some(String::from_utf8_lossy(&line).trim().to_string()));
            }
            match self.output.next().await {
                None => return Ok(None),
                Some(chunk) => {
                    match chunk.map_err(|e| daemon_problem("reading the edge's answer", &e))? {
                        bollard::container::LogOutput::StdOut { message } => {
                            self.pending.extend_from_slice(&message)
                        }
                        bollard::container::LogOutput::StdErr { message } => {
                            self.stderr.push_str(&String::from_utf8_lossy(&message))
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Sends one request line; its answer line. `Ok(None)`: the session
    /// ended before answering (the edge went away).
    async fn ask(&mut self, request: &str) -> Result<Option<String>, Problem> {
        use tokio::io::AsyncWriteExt;
        let mut line = request.as_bytes().to_vec();
        line.push(b'\n');
        if self.input.write_all(&line).await.is_err() || self.input.flush().await.is_err() {
            return Ok(None);
        }
        self.line().await
    }
}

impl Edge {
    /// An edge handle without checking that it runs (for reads).
    pub fn attach(docker: &Docker) -> Self {
        Self {
            docker: docker.clone(),
            sessions: Default::default(),
            one_shot: Default::default(),
        }
    }

    /// Closes the idle control sessions (their edge was replaced).
    pub async fn forget_sessions(&self) {
        self.sessions.lock().await.clear();
        self.one_shot
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Opens a control session; `None` when the edge is too old for one.
    async fn open_session(&self) -> Result<Option<Session>, Problem> {
        use bollard::exec::StartExecResults;
        let exec = self.create_exec("-", true).await?;
        let StartExecResults::Attached { output, input } = self
            .docker
            .start_exec(&exec, None)
            .await
            .map_err(|e| daemon_problem("asking the edge", &e))?
        else {
            return Err(edge_problem("the edge's control session did not attach"));
        };
        let mut session = Session {
            input,
            output,
            pending: Vec::new(),
            stderr: String::new(),
        };
        match session.line().await? {
            Some(line) if line == CTL_SESSION_GREETING => Ok(Some(session)),
            Some(_) => Ok(None),
            None => Err(edge_problem(format!(
                "the edge did not answer: {}",
                session.stderr.trim()
            ))),
        }
    }

    /// One request over a control session (an idle one, or a new one).
    /// `None`: the edge cannot keep sessions.
    async fn ask(&self, request: &str) -> Result<Option<String>, Problem> {
        let idle = self.sessions.lock().await.pop();
        let reused = idle.is_some();
        let mut session = match idle {
            Some(s) => s,
            None => match self.open_session().await? {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        let answer = match session.ask(request).await? {
            Some(answer) => answer,
            // An idle session whose edge restarted since: the request never
            // reached the new one. Ask once more on a fresh session.
            None if reused => match self.open_session().await? {
                Some(mut fresh) => match fresh.ask(request).await? {
                    Some(answer) => {
                        session = fresh;
                        answer
                    }
                    None => return Err(no_answer(&fresh.stderr)),
                },
                None => return Ok(None),
            },
            None => return Err(no_answer(&session.stderr)),
        };
        self.sessions.lock().await.push(session);
        Ok(Some(answer))
    }

    async fn create_exec(&self, request: &str, stdin: bool) -> Result<String, Problem> {
        use bollard::exec::CreateExecOptions;
        self.docker
            .create_exec(
                EDGE_CONTAINER,
                CreateExecOptions {
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(vec![EDGE_BINARY_PATH, "ctl", request]),
                    ..Default::default()
                },
            )
            .await
            .map(|e| e.id)
            .map_err(|e| match &e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                } => edge_problem(format!(
                    "the edge container ({EDGE_CONTAINER}) is not running on this environment"
                )),
                _ => daemon_problem("asking the edge", &e),
            })
    }

    /// One exec per request (edges older than control sessions).
    async fn exec(&self, request: &str) -> Result<(String, String, i64), Problem> {
        use bollard::exec::StartExecResults;
        let exec = self.create_exec(request, false).await?;
        let mut out = String::new();
        let mut err = String::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec, None)
            .await
            .map_err(|e| daemon_problem("asking the edge", &e))?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| daemon_problem("reading the edge's answer", &e))? {
                    bollard::container::LogOutput::StdOut { message } => {
                        out.push_str(&String::from_utf8_lossy(&message))
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        err.push_str(&String::from_utf8_lossy(&message))
                    }
                    _ => {}
                }
            }
        }
        let code = self
            .docker
            .inspect_exec(&exec)
            .await
            .ok()
            .and_then(|i| i.exit_code)
            .unwrap_or(0);
        Ok((out, err, code))
    }
}

fn no_answer(stderr: &str) -> Problem {
    edge_problem(format!("the edge did not answer: {}", stderr.trim()))
}

impl EdgeControl for Edge {
    async fn call(&self, request: Request) -> Result<Response, Problem> {
        use std::sync::atomic::Ordering;
        let text = serde_json::to_string(&request).map_err(|e| edge_problem(e.to_string()))?;
        if !self.one_shot.load(Ordering::Relaxed) {
            match self.ask(&text).await? {
                Some(answer) => {
                    return serde_json::from_str(&answer).map_err(|e| {
                        edge_problem(format!("the edge's answer is not readable ({e}): {answer}"))
                    })
                }
                None => self.one_shot.store(true, Ordering::Relaxed),
            }
        }
        if matches!(request, Request::CertPut { .. }) {
            // A one-shot exec carries the request on its command line, where
            // the daemon and `ps` would show the private key.
            return Err(edge_problem(
                "this edge is too old to take certificates: upgrade it (changeover edge upgrade)",
            ));
        }
        let (out, err, code) = self.exec(&text).await?;
        if code != 0 || out.trim().is_empty() {
            return Err(edge_problem(format!(
                "the edge did not answer: {}",
                err.trim()
            )));
        }
        serde_json::from_str(out.trim())
            .map_err(|e| edge_problem(format!("the edge's answer is not readable ({e}): {out}")))
    }
}
