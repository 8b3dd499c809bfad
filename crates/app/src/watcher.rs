//! The watcher installed on an environment (`changeover watch --install`):
//! `changeover watch` in a container on the environment's own daemon
//! ([`changeover_docker::watcher`]), so automatic redeploys happen with no
//! laptop open.
//!
//! It needs the daemon's socket, which is root on the daemon's host, so it
//! is only installed when asked, after the [`InstallPlan`] says so. The
//! container has no OS keyring, and secrets otherwise live only there
//! (DESIGN.md decision 12), so a login is copied into it only on a word of
//! its own (`copy_logins`): then the logins of the registries its services
//! are watched on (digest and semver watches) go in as a Docker config
//! (`auths`, mode 0600) — into the container, never the image — and are
//! gone with it when it is removed. Without that word the plan names the
//! logins left out. A webhook's token is copied the same way.

use changeover_core::redeploy::Watch;
use changeover_core::registry::{helper_server_url, Repository};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::registry::Credential;
use changeover_docker::watcher::{self, Installed, Setup, UserFile, STATE_DIR};

use crate::Environment;

/// What [`install`] is asked for.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Only these stacks or STACK/SERVICE names (empty: every watched
    /// service, now and later).
    pub names: Vec<String>,
    /// The daemon's socket on its host (default: the environment's own
    /// Unix socket, else `/var/run/docker.sock`).
    pub socket: Option<String>,
    /// Listen for webhooks on this address of the daemon's host
    /// (`0.0.0.0:9911`; the watcher is on the host's network), with this
    /// token.
    pub webhook: Option<(std::net::SocketAddr, String)>,
    /// Copy the logins its registries need into the container.
    pub copy_logins: bool,
}

/// What an install will do, said before it is done.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    pub environment: String,
    /// The socket it mounts.
    pub socket: String,
    /// The services watched now (it also picks up ones watched later).
    pub services: Vec<String>,
    /// The registries whose logins are copied into the container.
    pub logins: Vec<String>,
    /// The registries with a login that is not copied (no `copy_logins`).
    pub left_out: Vec<String>,
    /// A watcher is there already and is replaced.
    pub replaces: bool,
}

impl InstallPlan {
    /// The words said before asking.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "This runs `changeover watch` as the container {} on {}, with the Docker socket {} mounted into it: \
             whatever runs in it controls that daemon (root on its host).",
            watcher::CONTAINER,
            self.environment,
            self.socket
        );
        if self.services.is_empty() {
            text.push_str("\nNo service watches for new images yet; it picks them up once they do (x-changeover.autoredeploy).");
        } else {
            text.push_str(&format!("\nIt watches: {}.", self.services.join(", ")));
        }
        if !self.logins.is_empty() {
            text.push_str(&format!(
                "\nThe logins for {} are copied into the container (not its image), readable by root on that host.",
                self.logins.join(", ")
            ));
        }
        if !self.left_out.is_empty() {
            text.push_str(&format!(
                "\nThe logins for {} stay in this machine's keyring: the watcher asks those registries without one (copy them into the container with --with-logins).",
                self.left_out.join(", ")
            ));
        }
        if self.replaces {
            text.push_str("\nThe watcher there now is replaced.");
        }
        text
    }
}

/// The socket to mount: the one asked for, else the environment's own
/// Unix socket, else the usual one.
fn socket_of(env: &Environment, asked: Option<&str>) -> Result<String, Problem> {
    if let Some(s) = asked {
        if !s.starts_with('/') || s.contains(':') || s.contains('\0') {
            return Err(Problem::new(
                ProblemCode::InvalidInput,
                format!("--socket {s:?} must be an absolute path on the daemon's host"),
            ));
        }
        return Ok(s.to_string());
    }
    Ok(match &env.spec.endpoint {
        Some(changeover_core::environment::Endpoint::Unix { path }) => path.clone(),
        _ => "/var/run/docker.sock".to_string(),
    })
}

/// The plan and the files it copies in.
async fn prepare(
    env: &Environment,
    options: &InstallOptions,
) -> Result<(InstallPlan, Vec<UserFile>), Problem> {
    let socket = socket_of(env, options.socket.as_deref())?;
    let services = crate::redeploy::watched(env, &options.names).await?;
    let mut hosts: Vec<String> = Vec::new();
    for s in &services {
        let from_registry = s
            .record
            .spec
            .autoredeploy
            .as_ref()
            .is_some_and(|a| !matches!(a.watch, Watch::Local));
        let image = changeover_core::image::ImageRef::parse(&s.record.spec.image);
        if let (true, Ok(image)) = (from_registry, image) {
            let host = Repository::of(&image).host;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    let mut auths = serde_json::Map::new();
    let mut logins = Vec::new();
    let mut left_out = Vec::new();
    for host in hosts {
        let (credential, _ca) = env.registries.credential(&host).await?;
        if credential.is_some() && !options.copy_logins {
            left_out.push(host);
            continue;
        }
        let entry = match credential {
            None => continue,
            Some(Credential::Basic { username, password }) => serde_json::json!({
                "auth": base64_of(&format!("{username}:{}", password.expose())),
            }),
            Some(Credential::IdentityToken { username, token }) => serde_json::json!({
                "auth": base64_of(&format!("{username}:")),
                "identitytoken": token.expose(),
            }),
        };
        auths.insert(helper_server_url(&host), entry);
        logins.push(host);
    }
    let mut files = vec![UserFile {
        path: "docker/config.json".into(),
        bytes: serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap_or_default(),
    }];
    if let Some((_, token)) = &options.webhook {
        files.push(UserFile {
            path: "webhook-token".into(),
            bytes: token.as_bytes().to_vec(),
        });
    }
    let docker = env.docker().await?;
    let plan = InstallPlan {
        environment: env.spec.name.clone(),
        socket,
        services: services.iter().map(|s| s.name.clone()).collect(),
        logins,
        left_out,
        replaces: watcher::installed(&docker).await?.is_some(),
    };
    Ok((plan, files))
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// What installing would do (nothing is changed).
pub async fn plan(env: &Environment, options: &InstallOptions) -> Result<InstallPlan, Problem> {
    Ok(prepare(env, options).await?.0)
}

/// Installs (or replaces) the watcher: its image built when missing, the
/// container created with the logins and token copied in, started, and
/// its first pass waited for.
pub async fn install(
    env: &Environment,
    options: &InstallOptions,
) -> Result<(InstallPlan, Installed), Problem> {
    let (plan, files) = prepare(env, options).await?;
    let docker = env.docker().await?;
    let image = watcher::ensure_image(&docker).await?;
    let mut args: Vec<String> = options.names.clone();
    if let Some((addr, _)) = &options.webhook {
        args.extend([
            "--webhook".into(),
            addr.to_string(),
            "--webhook-token-file".into(),
            format!("{STATE_DIR}/webhook-token"),
        ]);
    }
    let setup = Setup {
        socket: plan.socket.clone(),
        args,
        env: Vec::new(),
        files,
    };
    let installed = watcher::install(&docker, &image, &setup).await?;
    Ok((plan, installed))
}

/// The watcher on this environment, when there is one.
pub async fn status(env: &Environment) -> Result<Option<Installed>, Problem> {
    watcher::installed(&env.docker().await?).await
}

/// Removes the watcher (with what was copied into it); refused when
/// there is none.
pub async fn uninstall(env: &Environment) -> Result<(), Problem> {
    if watcher::remove(&env.docker().await?).await? {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemCode::InvalidInput,
            format!(
                "no watcher is installed on {} (changeover watch --install puts one there)",
                env.spec.name
            ),
        ))
    }
}
