//! The watcher container (`changeover watch --install`): the `changeover`
//! command itself, as a static binary in a `FROM scratch` image built on
//! the environment's daemon (like the edge's; nothing is pulled), running
//! `changeover watch` against the daemon's own socket, so automatic
//! redeploys go on with no laptop open.
//!
//! The image holds the static `changeover` (the build without the OS
//! keyring), the static edge binary (a redeploy may have to start the
//! edge) and the system's CA bundle (registries over HTTPS). What is the
//! user's — the Docker config with the registries' credentials, a
//! webhook's token — is never in the image: it is copied into the created
//! container before it starts (mode 0600), so it goes with the container.
//!
//! The container mounts the daemon's socket, which is root on that host;
//! that is why it is only ever installed on the user's explicit word. It
//! runs on the host's network, as the daemon does: an image named
//! `localhost:5000/app` is the same registry to the watcher asking for its
//! digest and to the daemon pulling it, and a webhook listens on the
//! host's address itself.

use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use changeover_core::edge::labels;
use changeover_core::{Problem, ProblemCode};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::connect::daemon_problem;
use crate::edge::tar_of;

/// The watcher container's name (one per daemon).
pub const CONTAINER: &str = "changeover-watcher";
/// On the watcher's container and image.
pub const LABEL: &str = "dev.changeover.watcher";
/// Where the user's files go in the container.
pub const STATE_DIR: &str = "/state";
/// The daemon's socket inside the container.
const SOCKET_INSIDE: &str = "/var/run/docker.sock";

fn problem(message: impl Into<String>) -> Problem {
    Problem::new(ProblemCode::EdgeError, message)
}

/// The static `changeover` to put in the image: `CHANGEOVER_WATCHER_BINARY`,
/// else `changeover-watcher` or a static `changeover` beside the running
/// program, else the workspace's musl build (`make watcher`).
pub fn watcher_binary() -> Result<PathBuf, Problem> {
    crate::edge::static_binary(
        "CHANGEOVER_WATCHER_BINARY",
        &["changeover-watcher", "changeover"],
        "changeover",
        "make watcher",
        "-p changeover-cli --no-default-features",
    )
}

/// The CA bundles tried, in order, for the image's
/// `/etc/ssl/certs/ca-certificates.crt`.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What goes into the created container before it starts.
pub struct UserFile {
    /// Relative to [`STATE_DIR`].
    pub path: String,
    pub bytes: Vec<u8>,
}

/// How the watcher runs.
pub struct Setup {
    /// The daemon's socket on its host (`/var/run/docker.sock`).
    pub socket: String,
    /// Arguments after `changeover watch`.
    pub args: Vec<String>,
    /// Environment variables beside the ones the image sets.
    pub env: Vec<(String, String)>,
    pub files: Vec<UserFile>,
}

/// The watcher as the daemon has it.
#[derive(Debug, Clone)]
pub struct Installed {
    pub id: String,
    pub image: String,
    /// `running`, `restarting`, `exited`, …
    pub state: String,
    pub started_at: Option<String>,
}

/// Builds the watcher image from the static binaries unless the daemon
/// has this very one (by the digest of what goes in); its tag.
pub async fn ensure_image(docker: &Docker) -> Result<String, Problem> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| problem(format!("cannot read {}: {e}", p.display())))
    };
    let cli = read(&watcher_binary()?)?;
    let edge = read(&crate::edge::edge_binary()?)?;
    let ca = CA_BUNDLES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    let mut hash = Sha256::new();
    for part in [&cli, &edge, &ca] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = format!("{:x}", hash.finalize());
    let tag = format!("changeover-watcher:{}", &digest[..12]);
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let dockerfile = format!(
        "FROM scratch\n\
         COPY changeover /changeover\n\
         COPY changeover-edge /changeover-edge\n\
         COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n\
         ENV DOCKER_HOST=unix://{SOCKET_INSIDE} HOME={STATE_DIR} CHANGEOVER_CONFIG_DIR={STATE_DIR}/config DOCKER_CONFIG={STATE_DIR}/docker\n\
         LABEL {LABEL}=\"{digest}\" {}=\"true\"\n\
         ENTRYPOINT [\"/changeover\", \"watch\"]\n",
        labels::MANAGED
    );
    let context = tar_of(
        "the watcher's image context",
        &[],
        &[
            ("changeover", &cli, 0o755),
            ("changeover-edge", &edge, 0o755),
            ("ca-certificates.crt", &ca, 0o644),
            ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ],
    )?;
    crate::edge::build_context(docker, &tag, context).await?;
    Ok(tag)
}

/// The watcher container, when there is one.
pub async fn installed(docker: &Docker) -> Result<Option<Installed>, Problem> {
    match docker.inspect_container(CONTAINER, None).await {
        Ok(c) => {
            let state = c.state.as_ref();
            Ok(Some(Installed {
                id: c.id.clone().unwrap_or_default(),
                image: c
                    .config
                    .as_ref()
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default(),
                state: state
                    .and_then(|s| s.status)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                started_at: state.and_then(|s| s.started_at.clone()),
            }))
        }
        Err(e) if crate::runtime::is_not_found(&e) => Ok(None),
        Err(e) => Err(daemon_problem("reading the watcher container", &e)),
    }
}

/// Removes the watcher container (and what was copied into it); false
/// when there was none.
pub async fn remove(docker: &Docker) -> Result<bool, Problem> {
    match docker
        .remove_container(
            CONTAINER,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if crate::runtime::is_not_found(&e) => Ok(false),
        Err(e) => Err(daemon_problem("removing the watcher container", &e)),
    }
}

/// The last `lines` lines of the watcher's output.
pub async fn output(docker: &Docker, lines: usize) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(CONTAINER, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if text.len() > 64 * 1024 {
            break;
        }
    }
    text
}

/// Replaces the watcher container with one of `image` run as `setup`
/// says, its files copied in before it starts; waits until its first pass
/// is done (a line of output) or it stops, which is an error with its
/// output.
pub async fn install(docker: &Docker, image: &str, setup: &Setup) -> Result<Installed, Problem> {
    remove(docker).await?;
    let cmd = setup.args.clone();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(cmd),
        env: Some(setup.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(
            [
                (labels::MANAGED.to_string(), "true".to_string()),
                (LABEL.to_string(), "true".to_string()),
            ]
            .into_iter()
            .collect(),
        ),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{SOCKET_INSIDE}", setup.socket)]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            network_mode: Some("host".into()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            // Its output is a line per service per pass: bounded anyway.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(
                    [
                        ("max-size".to_string(), "10m".to_string()),
                        ("max-file".to_string(), "2".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                ),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(CONTAINER).build()),
            body,
        )
        .await
        .map_err(|e| daemon_problem("creating the watcher container", &e))?;
    let result = async {
        let state = STATE_DIR.trim_start_matches('/');
        let mut dirs: Vec<String> = vec![format!("{state}/"), format!("{state}/config/")];
        let mut entries: Vec<(String, &[u8])> = Vec::new();
        for f in &setup.files {
            if let Some((dir, _)) = f.path.rsplit_once('/') {
                let d = format!("{state}/{dir}/");
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
            entries.push((format!("{state}/{}", f.path), &f.bytes));
        }
        let entries: Vec<(&str, &[u8], u32)> = entries
            .iter()
            .map(|(n, b)| (n.as_str(), *b, 0o600))
            .collect();
        let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let tar = tar_of("the watcher's files", &dirs, &entries)?;
        docker
            .upload_to_container(
                &created.id,
                Some(UploadToContainerOptionsBuilder::new().path("/").build()),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(|e| daemon_problem("copying the watcher's files", &e))?;
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| daemon_problem("starting the watcher", &e))?;
        // Its first pass prints a line; one that stops says why.
        for _ in 0..300 {
            let now = installed(docker).await?;
            let running = now.as_ref().is_some_and(|i| i.state == "running");
            if !running {
                let said = output(docker, 20).await;
                return Err(problem(format!(
                    "the watcher stopped at once: {}",
                    said.trim()
                )));
            }
            if !output(docker, 1).await.trim().is_empty() {
                return now.ok_or_else(|| problem("the watcher container went away"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(problem(
            "the watcher did not finish its first pass within 30 s",
        ))
    }
    .await;
    if result.is_err() {
        let _ = remove(docker).await;
    }
    result
}
