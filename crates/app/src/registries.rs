//! Registries: logging in and out, where each registry's credentials come
//! from, a repository's tags merged from the daemon and its registry, and
//! pulls with progress.
//!
//! Credentials, in this order (DESIGN.md decision 12):
//! 1. entered in Changeover (`registry login`): the password in the OS
//!    keyring (account `registry/HOST`), only the host, user name and any
//!    CA in `registries.json` in the config folder — never the secret;
//! 2. what `docker login` left, as is: `config.json` in `$DOCKER_CONFIG` (or
//!    `~/.docker`) — `credHelpers`, `credsStore` (a `docker-credential-*`
//!    helper, asked with a bounded wait) or `auths`.
//!
//! A login is checked against the registry before anything is stored: a
//! wrong password is refused and leaves nothing behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use changeover_core::image::ImageRef;
use changeover_core::registry::{
    self, ConfigCredential, CredentialSource, DockerConfig, ImageTag, ImageTags, PullProgress,
    RegistryLogin, Repository,
};
use changeover_core::secret::Secret;
use changeover_core::{Problem, ProblemCode};
use changeover_docker::registry::{Credential, RegistryClient};
use serde::{Deserialize, Serialize};

use crate::secrets::{blocking, SecretStore};
use crate::settings::{write_atomically, Settings};
use crate::Environment;

/// The file of registries logged in to in Changeover (no secrets).
pub const FILE_NAME: &str = "registries.json";

/// A registry logged in to in Changeover, as kept in [`FILE_NAME`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kept {
    host: String,
    username: String,
    /// The CA its TLS certificate is signed by, when not a public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeptFile {
    #[serde(default)]
    registries: Vec<Kept>,
}

/// What is stored in the keyring for one registry.
#[derive(Serialize, Deserialize)]
struct StoredSecret {
    password: String,
}

fn account(host: &str) -> String {
    format!("registry/{host}")
}

/// The registries of this user: Changeover's logins and the Docker CLI's.
#[derive(Clone)]
pub struct Registries {
    settings: Settings,
    secrets: Arc<dyn SecretStore>,
    /// The Docker CLI's config folder (`$DOCKER_CONFIG`, else `~/.docker`).
    docker_config: Option<PathBuf>,
}

/// Registry tags whose digest is asked for at most (by HEAD, each one
/// request).
const DIGESTS_ASKED: usize = 20;

/// The longest a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

impl Registries {
    pub fn new(
        settings: Settings,
        secrets: Arc<dyn SecretStore>,
        docker_config: Option<PathBuf>,
    ) -> Self {
        Self {
            settings,
            secrets,
            docker_config,
        }
    }

    fn file(&self) -> PathBuf {
        self.settings.config_dir.join(FILE_NAME)
    }

    fn kept(&self) -> Result<Vec<Kept>, Problem> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Problem::new(
                    ProblemCode::CannotWrite,
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        serde_json::from_str::<KeptFile>(&text)
            .map(|f| f.registries)
            .map_err(|e| {
                Problem::new(
                    ProblemCode::InvalidInput,
                    format!(
                        "{} is not a registries file Changeover wrote ({e}); fix or remove it",
                        path.display()
                    ),
                )
            })
    }

    fn save(&self, all: Vec<Kept>) -> Result<(), Problem> {
        let bytes = serde_json::to_vec_pretty(&KeptFile { registries: all })
            .map_err(|e| Problem::new(ProblemCode::CannotWrite, format!("cannot write: {e}")))?;
        write_atomically(&self.file(), &bytes)
    }

    fn docker_config(&self) -> Result<DockerConfig, Problem> {
        let Some(dir) = &self.docker_config else {
            return Ok(DockerConfig::default());
        };
        let path = dir.join("config.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => DockerConfig::parse(&text).map_err(|e| {
                Problem::new(
                    ProblemCode::InvalidDockerConfig,
                    format!("{} cannot be read: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
            Err(e) => Err(Problem::new(
                ProblemCode::InvalidDockerConfig,
                format!("{} cannot be read: {e}", path.display()),
            )),
        }
    }

    /// Checks `username` and `password` against `host` and, when it takes
    /// them, keeps them: the password in the OS keyring, the rest in the
    /// config folder. A refused login stores nothing and changes nothing.
    pub async fn login(
        &self,
        host: &str,
        username: &str,
        password: Secret,
        ca: Option<String>,
    ) -> Result<RegistryLogin, Problem> {
        let host =
            registry::parse_host(host).map_err(|e| Problem::new(ProblemCode::InvalidInput, e))?;
        let username = username.trim();
        if username.is_empty() || username.len() > 255 || username.contains(['\n', '\r', ':']) {
            return Err(Problem::new(
                ProblemCode::InvalidInput,
                "a user name cannot be empty, hold ':' or a line break, or pass 255 characters",
            ));
        }
        if password.expose().is_empty() {
            return Err(Problem::new(
                ProblemCode::InvalidInput,
                "the password is empty",
            ));
        }
        let credential = Credential::Basic {
            username: username.to_string(),
            password: password.clone(),
        };
        let client = RegistryClient::new(&host, Some(credential), ca.as_deref())?;
        client.check().await?;
        let mut all = self.kept()?;
        let stored = serde_json::to_string(&StoredSecret {
            password: password.expose().to_string(),
        })
        .map(Secret::new)
        .map_err(|e| Problem::new(ProblemCode::Keyring, format!("cannot store: {e}")))?;
        let key = account(&host);
        blocking(&self.secrets, move |s| s.set(&key, &stored)).await?;
        all.retain(|k| k.host != host);
        all.push(Kept {
            host: host.clone(),
            username: username.to_string(),
            ca,
        });
        all.sort_by(|a, b| a.host.cmp(&b.host));
        if let Err(e) = self.save(all) {
            // Nothing half done: the keyring entry goes with the failed write.
            let key = account(&host);
            let _ = blocking(&self.secrets, move |s| s.delete(&key)).await;
            return Err(e);
        }
        Ok(RegistryLogin {
            host,
            source: CredentialSource::Keyring,
            username: Some(username.to_string()),
        })
    }

    /// Forgets the credentials entered in Changeover for `host` (those of
    /// `docker login` are Docker's: `docker logout`).
    pub async fn logout(&self, host: &str) -> Result<(), Problem> {
        let host =
            registry::parse_host(host).map_err(|e| Problem::new(ProblemCode::InvalidInput, e))?;
        let mut all = self.kept()?;
        if !all.iter().any(|k| k.host == host) {
            let docker = self
                .docker_config()
                .ok()
                .and_then(|c| c.lookup(&host).ok().flatten())
                .is_some();
            let hint = if docker {
                "; its credentials come from the Docker CLI's config: docker logout"
            } else {
                ""
            };
            return Err(Problem::new(
                ProblemCode::NotLoggedIn,
                format!("not logged in to {host} in Changeover{hint}"),
            ));
        }
        let key = account(&host);
        blocking(&self.secrets, move |s| s.delete(&key)).await?;
        all.retain(|k| k.host != host);
        self.save(all)
    }

    /// Every registry with credentials and where they come from (never the
    /// secret). Changeover's logins hide the Docker CLI's for the same host.
    pub fn list(&self) -> Result<Vec<RegistryLogin>, Problem> {
        let mut out: Vec<RegistryLogin> = self
            .kept()?
            .into_iter()
            .map(|k| RegistryLogin {
                host: k.host,
                source: CredentialSource::Keyring,
                username: Some(k.username),
            })
            .collect();
        for login in self.docker_config()?.logins() {
            if !out.iter().any(|l| l.host == login.host) {
                out.push(login);
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }

    /// The credential for `host` and the CA to trust it by, in the order
    /// of the module doc; `None` when there is none (anonymous).
    pub async fn credential(
        &self,
        host: &str,
    ) -> Result<(Option<Credential>, Option<String>), Problem> {
        let host = registry::registry_host(Some(host));
        if let Some(k) = self.kept()?.into_iter().find(|k| k.host == host) {
            let key = account(&host);
            let stored = blocking(&self.secrets, move |s| s.get(&key)).await?;
            let Some(stored) = stored else {
                return Err(Problem::new(
                    ProblemCode::Keyring,
                    format!(
                        "the password for {host} is missing from the OS keyring; log in again: changeover registry login {host}"
                    ),
                ));
            };
            let parsed: StoredSecret = serde_json::from_str(stored.expose()).map_err(|_| {
                Problem::new(
                    ProblemCode::Keyring,
                    format!("the keyring entry for {host} is not Changeover's; log in again"),
                )
            })?;
            return Ok((
                Some(Credential::Basic {
                    username: k.username,
                    password: Secret::new(parsed.password),
                }),
                k.ca,
            ));
        }
        let found = self.docker_config()?.lookup(&host).map_err(|e| {
            Problem::new(
                ProblemCode::InvalidDockerConfig,
                format!("the Docker CLI's config.json: {e}"),
            )
        })?;
        let credential = match found {
            None => None,
            Some(ConfigCredential::Inline { username, password }) => Some(Credential::Basic {
                username,
                password: Secret::new(password),
            }),
            Some(ConfigCredential::IdentityToken { username, token }) => {
                Some(Credential::IdentityToken {
                    username,
                    token: Secret::new(token),
                })
            }
            Some(ConfigCredential::Helper(helper)) => ask_helper(&helper, &host).await?,
        };
        Ok((credential, None))
    }

    /// A client of `host` with its credential.
    pub async fn client(&self, host: &str) -> Result<RegistryClient, Problem> {
        let (credential, ca) = self.credential(host).await?;
        RegistryClient::new(host, credential, ca.as_deref())
    }

    /// The tags of `repository` (`reg:5000/team/app`): the registry's and
    /// the daemon's, merged and sorted (versions first, newest first). When
    /// the registry cannot be asked, the daemon's are still listed and the
    /// reason is given.
    pub async fn tags(
        &self,
        env: &Environment,
        repository: &str,
        all_digests: bool,
    ) -> Result<ImageTags, Problem> {
        let image =
            ImageRef::parse(repository).map_err(|e| Problem::new(ProblemCode::InvalidInput, e))?;
        if image.tag.is_some() || image.digest.is_some() {
            return Err(Problem::new(
                ProblemCode::InvalidInput,
                format!(
                    "{repository} names a tag or digest; give the repository alone ({})",
                    image.name
                ),
            ));
        }
        let repo = Repository::of(&image);
        // The daemon's images and the registry's list, at the same time.
        let local = async {
            let docker = env.docker().await?;
            changeover_docker::read::images_of(&docker, &image.name).await
        };
        let remote = async {
            match self.client(&repo.host).await {
                Ok(c) => {
                    let listed = c.tags(&repo.path).await;
                    (Some(c), listed)
                }
                Err(p) => (None, Err(p)),
            }
        };
        let (local, (client, listed)) = tokio::join!(local, remote);
        let local = local?;
        let mut tags: Vec<ImageTag> = Vec::new();
        // Each local tag's image's RepoDigests, to compare with the registry.
        let mut pulled: std::collections::HashMap<String, &[String]> = Default::default();
        let prefix = format!("{}@", image.name);
        for i in &local {
            for r in i.refs.iter().filter(|r| r.name == image.name) {
                let Some(tag) = &r.tag else { continue };
                pulled.insert(tag.clone(), &i.digests);
                let digest = i
                    .digests
                    .iter()
                    .find_map(|d| d.strip_prefix(&prefix))
                    .map(str::to_string);
                tags.push(ImageTag {
                    tag: tag.clone(),
                    digest,
                    local_id: Some(i.id.clone()),
                    created: Some(i.created),
                    size: u64::try_from(i.size).ok(),
                    local: true,
                    in_registry: false,
                    newer_in_registry: false,
                });
            }
        }
        let (listed, problem) = match listed {
            Ok(l) => (l, None),
            Err(p) => (Vec::new(), Some(p)),
        };
        if let Some(p) = &problem {
            if tags.is_empty() {
                // Nothing to show: the registry's refusal is the answer.
                return Err(p.clone());
            }
        }
        for t in listed {
            match tags.iter_mut().find(|x| x.tag == t) {
                Some(x) => x.in_registry = true,
                None => tags.push(ImageTag {
                    tag: t,
                    digest: None,
                    local_id: None,
                    created: None,
                    size: None,
                    local: false,
                    in_registry: true,
                    newer_in_registry: false,
                }),
            }
        }
        registry::sort_tags(&mut tags);
        // Digests by HEAD (not counted as pulls), eight at a time: of the
        // tags the daemon has too, to tell whether the registry's now names
        // another image; with `all_digests`, of the first ones listed too.
        if let Some(client) = &client {
            use futures_util::StreamExt;
            let wanted: Vec<String> = tags
                .iter()
                .filter(|t| t.in_registry && (t.local || all_digests))
                .take(DIGESTS_ASKED)
                .map(|t| t.tag.clone())
                .collect();
            let path = repo.path.as_str();
            let found: Vec<(String, Option<String>)> = futures_util::stream::iter(wanted)
                .map(|tag| async move {
                    let digest = client.digest(path, &tag).await.ok().flatten();
                    (tag, digest)
                })
                .buffer_unordered(8)
                .collect()
                .await;
            for (tag, digest) in found {
                let Some(t) = tags.iter_mut().find(|t| t.tag == tag) else {
                    continue;
                };
                match (&t.digest, digest) {
                    (None, d) => t.digest = d,
                    // The daemon's copy came from another manifest than the
                    // registry's tag names now.
                    (Some(_), Some(remote))
                        if !registry::pulled_from(
                            pulled.get(&tag).copied().unwrap_or_default(),
                            &image.name,
                            &remote,
                        ) =>
                    {
                        t.newer_in_registry = true;
                    }
                    _ => {}
                }
            }
        }
        let rate_limit = client.as_ref().and_then(|c| c.rate_limit());
        let problem = problem.map(|p| p.message);
        Ok(ImageTags {
            repository: image.name,
            registry: repo.host,
            tags,
            registry_problem: problem,
            rate_limit,
        })
    }

    /// Pulls `reference` onto the environment's daemon with the registry's
    /// credentials, calling `progress` as layers move; the image ID.
    pub async fn pull(
        &self,
        env: &Environment,
        reference: &str,
        progress: impl FnMut(&PullProgress),
    ) -> Result<String, Problem> {
        let image =
            ImageRef::parse(reference).map_err(|e| Problem::new(ProblemCode::InvalidInput, e))?;
        let host = Repository::of(&image).host;
        let (credential, _) = self.credential(&host).await?;
        let docker = env.docker().await?;
        let _busy = env.busy();
        changeover_docker::images::pull(&docker, &image, credential.as_ref(), progress).await
    }
}

/// Rollouts pull with the same credentials.
impl changeover_docker::runtime::Credentials for Registries {
    fn credential<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Option<Credential>, Problem>> + Send + 'a>,
    > {
        Box::pin(async move { Ok(self.credential(host).await?.0) })
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Asks `docker-credential-HELPER get` for `host`'s credential; `None`
/// when it has none. The helper's output is never logged.
async fn ask_helper(helper: &str, host: &str) -> Result<Option<Credential>, Problem> {
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Problem::new(
            ProblemCode::InvalidDockerConfig,
            format!("the Docker CLI's config names a credential helper {helper:?} that is not a program name"),
        ));
    }
    let program = format!("docker-credential-{helper}");
    let run = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut child = tokio::process::Command::new(&program)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(registry::helper_server_url(host).as_bytes())
                .await?;
        }
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            stdout.take(1024 * 1024).read_to_end(&mut out).await?;
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out))
    };
    let (status, out) = match tokio::time::timeout(HELPER_TIMEOUT, run).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return Err(Problem::new(
                ProblemCode::InvalidDockerConfig,
                format!("the credential helper {program} cannot be run: {e}"),
            ))
        }
        Err(_) => {
            return Err(Problem::new(
                ProblemCode::InvalidDockerConfig,
                format!(
                    "the credential helper {program} did not answer within {} s",
                    HELPER_TIMEOUT.as_secs()
                ),
            ))
        }
    };
    if !status.success() {
        // "credentials not found": the helper has none for this host.
        return Ok(None);
    }
    let answer: HelperAnswer = serde_json::from_slice(&out).map_err(|_| {
        Problem::new(
            ProblemCode::InvalidDockerConfig,
            format!("the credential helper {program} answered something that is not its JSON"),
        )
    })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if answer.username == "<token>" {
        Credential::IdentityToken {
            username: String::new(),
            token: Secret::new(answer.secret),
        }
    } else {
        Credential::Basic {
            username: answer.username,
            password: Secret::new(answer.secret),
        }
    }))
}
