//! The Environments registry (DESIGN.md decision 10): every daemon
//! Changeover talks to — the ones discovery finds (`DOCKER_HOST`, Docker
//! CLI contexts, the default socket) and the ones the user added — each
//! kept open as one [`Environment`]: one connection (API version negotiated
//! once), one edge handle whose control sessions stay open, and, in the
//! desktop app, one background follower ([`crate::follow`]) that keeps the
//! window's picture current.
//!
//! Shells and use cases ask the registry for an environment and use what it
//! keeps; nothing dials on its own. Adding, editing and removing
//! environments goes through here, so the settings file, the keyring and
//! the running followers always agree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use changeover_core::environment::added::{self, AddedEnvironment, StoredTls};
use changeover_core::environment::{
    discover, DiscoveryInput, Endpoint, EnvironmentList, EnvironmentSource, EnvironmentSpec,
    SshHostKey, Tls, TlsFiles, DEFAULT_ENVIRONMENT,
};
use changeover_core::inventory::DaemonInfo;
use changeover_core::live::{EnvironmentView, LiveUpdate, LiveViews};
use changeover_core::secret::Secret;
use changeover_core::{Problem, ProblemCode};
use changeover_docker::connect::{dial, endpoint_of, read_tls_files, SshSettings};
use changeover_docker::edge::Edge;
use changeover_docker::ssh::SshTarget;
use changeover_docker::tls::TlsMaterial;
use changeover_docker::Docker;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::events::{AppEvent, AppSink};
use crate::secrets::{blocking, tls_key_account, SecretStore};
use crate::settings::Settings;

/// How long a connection test waits for the daemon.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// An environment to add or edit, as the CLI or the window's form gives it.
/// TLS files are read once, on add: the CA and certificate go into the
/// settings, the key into the OS keyring; their paths are not kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct NewEnvironment {
    pub name: String,
    /// `unix://PATH`, `tcp://HOST:PORT` or `ssh://[USER@]HOST[:PORT]`.
    pub host: String,
    #[serde(default)]
    pub description: String,
    /// The CA, client certificate and key files of a TLS daemon. When
    /// editing, `None` keeps the environment's current TLS material.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// What "Test connection" found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ConnectionTest {
    /// The daemon answered: its version and platform.
    pub daemon: Option<DaemonInfo>,
    /// Why it did not.
    pub problem: Option<Problem>,
    /// An SSH host key not known yet, to compare and accept.
    pub host_key: Option<SshHostKey>,
}

/// One daemon, kept open.
pub struct Environment {
    pub spec: EnvironmentSpec,
    settings: Settings,
    secrets: Arc<dyn SecretStore>,
    /// Credentials for the registries its images come from.
    pub(crate) registries: crate::registries::Registries,
    docker: tokio::sync::Mutex<Option<Docker>>,
    edge: tokio::sync::Mutex<Option<Edge>>,
    /// Rollouts this process runs on it (it cannot be removed meanwhile).
    rollouts: AtomicUsize,
    /// Turning this true stops the environment's background work.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    pub(crate) follow: crate::follow::Subscriptions,
    /// The volumes' sizes as the daemon last measured them (slow to ask).
    pub(crate) sizes: tokio::sync::Mutex<Option<changeover_core::volume::VolumeSizes>>,
}

/// Held while a rollout runs on an environment.
pub struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Environment {
    fn new(
        spec: EnvironmentSpec,
        settings: Settings,
        secrets: Arc<dyn SecretStore>,
        docker_config: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            registries: crate::registries::Registries::new(
                settings.clone(),
                secrets.clone(),
                docker_config,
            ),
            spec,
            settings,
            secrets,
            docker: Default::default(),
            edge: Default::default(),
            rollouts: AtomicUsize::new(0),
            sizes: Default::default(),
            stop: tokio::sync::watch::channel(false).0,
            follow: Default::default(),
        }
    }

    /// The host name links to published ports use.
    pub fn link_host(&self) -> String {
        self.spec
            .endpoint
            .as_ref()
            .map(Endpoint::link_host)
            .unwrap_or_else(|| "localhost".into())
    }

    /// The kept connection, dialled on first use.
    pub async fn docker(&self) -> Result<Docker, Problem> {
        let mut kept = self.docker.lock().await;
        if let Some(d) = kept.as_ref() {
            return Ok(d.clone());
        }
        let d = self.dial().await?;
        *kept = Some(d.clone());
        Ok(d)
    }

    /// Dials again and keeps the new connection (after the old one was lost).
    pub(crate) async fn reconnect(&self) -> Result<Docker, Problem> {
        let mut kept = self.docker.lock().await;
        *kept = None;
        let d = self.dial().await?;
        *kept = Some(d.clone());
        *self.edge.lock().await = None;
        Ok(d)
    }

    async fn dial(&self) -> Result<Docker, Problem> {
        let endpoint = endpoint_of(&self.spec)?;
        let tls = tls_material(&self.spec, &self.settings, &self.secrets).await?;
        dial(endpoint, tls.as_ref(), &ssh_settings(&self.settings)?).await
    }

    /// The edge when its container exists (`None`: nothing was deployed
    /// here yet). The handle, with its open control sessions, is kept.
    pub async fn edge(&self) -> Result<Option<Edge>, Problem> {
        let docker = self.docker().await?;
        let exists = docker
            .inspect_container(changeover_core::edge::EDGE_CONTAINER, None)
            .await
            .is_ok();
        if !exists {
            return Ok(None);
        }
        Ok(Some(self.kept_edge(&docker).await))
    }

    async fn kept_edge(&self, docker: &Docker) -> Edge {
        let mut kept = self.edge.lock().await;
        kept.get_or_insert_with(|| Edge::attach(docker)).clone()
    }

    /// The edge, set up first when it is missing, stopped or speaks another
    /// protocol.
    pub async fn ensure_edge(&self) -> Result<Edge, Problem> {
        let docker = self.docker().await?;
        let edge = self.kept_edge(&docker).await;
        changeover_docker::edge::ensure(&edge).await?;
        Ok(edge)
    }

    /// Marks a rollout running until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.rollouts.fetch_add(1, Ordering::SeqCst);
        Busy(&self.rollouts)
    }

    fn rollouts_running(&self) -> usize {
        self.rollouts.load(Ordering::SeqCst)
    }
}

fn ssh_settings(settings: &Settings) -> Result<SshSettings, Problem> {
    Ok(SshSettings {
        known_hosts: Some(settings.known_hosts()),
        control_dir: Some(settings.runtime()?),
    })
}

/// The TLS material of a spec: the Docker CLI's files, or Changeover's
/// settings plus the key from the keyring.
async fn tls_material(
    spec: &EnvironmentSpec,
    settings: &Settings,
    secrets: &Arc<dyn SecretStore>,
) -> Result<Option<TlsMaterial>, Problem> {
    match &spec.endpoint {
        Some(Endpoint::Tcp {
            tls: Some(Tls::Files { files }),
            ..
        }) => Ok(Some(read_tls_files(files)?)),
        Some(Endpoint::Tcp {
            tls: Some(Tls::Stored),
            ..
        }) => {
            let stored = settings
                .added_environments()?
                .into_iter()
                .find(|e| e.name == spec.name)
                .and_then(|e| e.tls)
                .ok_or_else(|| {
                    Problem::new(
                        ProblemCode::InvalidTls,
                        format!("environment \"{}\" has no TLS settings any more; edit it and give its TLS files again", spec.name),
                    )
                })?;
            let account = tls_key_account(&spec.name);
            let key = blocking(secrets, move |s| s.get(&account)).await?.ok_or_else(|| {
                Problem::new(
                    ProblemCode::Keyring,
                    format!(
                        "the TLS key of environment \"{}\" is not in the OS keyring any more; edit the environment and give its key file again",
                        spec.name
                    ),
                )
            })?;
            Ok(Some(TlsMaterial {
                ca: stored.ca,
                cert: stored.cert,
                key,
            }))
        }
        _ => Ok(None),
    }
}

/// Every environment, kept.
#[derive(Clone)]
pub struct Environments {
    inner: Arc<Registry>,
}

struct Registry {
    settings: Settings,
    secrets: Arc<dyn SecretStore>,
    /// The Docker CLI's config folder (registries' credentials).
    docker_config: Option<std::path::PathBuf>,
    state: Mutex<State>,
    /// Set when the desktop app follows every environment.
    sink: Mutex<Option<AppSink>>,
    /// Adds, edits and removes one at a time.
    changing: tokio::sync::Mutex<()>,
    terminals: Arc<crate::containers::Terminals>,
    follows: crate::containers::Follows,
    cancels: crate::cancel::Cancels,
}

struct State {
    default: String,
    open: BTreeMap<String, Arc<Environment>>,
    views: LiveViews,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Environments {
    /// The environments of this machine: discovered and added. A settings
    /// file that cannot be read is listed as an environment with its
    /// problem, so the others stay usable.
    pub fn open(
        settings: Settings,
        secrets: Arc<dyn SecretStore>,
        discovery: DiscoveryInput,
    ) -> Self {
        let list = Self::list_of(&settings, &discovery);
        let views = LiveViews::new(&list);
        let open = list
            .environments
            .iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    Arc::new(Environment::new(
                        spec.clone(),
                        settings.clone(),
                        secrets.clone(),
                        discovery.config_dir.clone(),
                    )),
                )
            })
            .collect();
        Self {
            inner: Arc::new(Registry {
                settings,
                secrets,
                docker_config: discovery.config_dir.clone(),
                state: Mutex::new(State {
                    default: list.default,
                    open,
                    views,
                }),
                sink: Mutex::new(None),
                changing: Default::default(),
                terminals: Default::default(),
                follows: Default::default(),
                cancels: Default::default(),
            }),
        }
    }

    /// The environments of this user, as the CLI and the app see them.
    pub fn from_process() -> Self {
        Self::open(
            Settings::from_process(),
            Arc::new(crate::secrets::Keyring),
            DiscoveryInput::from_process(),
        )
    }

    fn list_of(settings: &Settings, discovery: &DiscoveryInput) -> EnvironmentList {
        let mut list = discover(discovery);
        match settings.added_environments() {
            Ok(all) => added::merge(&mut list, &all),
            Err(problem) => list.environments.push(EnvironmentSpec {
                name: added::FILE_NAME.to_string(),
                source: EnvironmentSource::Added,
                host: String::new(),
                description: "environments added in Changeover".into(),
                endpoint: None,
                problem: Some(problem),
            }),
        }
        list
    }

    /// The registries of this user and their credentials.
    pub fn registries(&self) -> crate::registries::Registries {
        crate::registries::Registries::new(
            self.inner.settings.clone(),
            self.inner.secrets.clone(),
            self.inner.docker_config.clone(),
        )
    }

    /// The log follows the app keeps open.
    pub fn follows(&self) -> &crate::containers::Follows {
        &self.inner.follows
    }

    /// The work (transfers, copies) the app can stop before it is done.
    pub fn cancels(&self) -> &crate::cancel::Cancels {
        &self.inner.cancels
    }

    /// The open terminal sessions.
    pub fn terminals(&self) -> &Arc<crate::containers::Terminals> {
        &self.inner.terminals
    }

    /// Every environment's spec and the default's name.
    pub fn list(&self) -> EnvironmentList {
        let state = lock(&self.inner.state);
        EnvironmentList {
            environments: state.open.values().map(|e| e.spec.clone()).collect(),
            default: state.default.clone(),
        }
    }

    /// The environment named `name`, or the default one.
    pub fn get(&self, name: Option<&str>) -> Result<Arc<Environment>, Problem> {
        let state = lock(&self.inner.state);
        let name = name.unwrap_or(&state.default);
        state.open.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = state.open.keys().map(String::as_str).collect();
            Problem::new(
                ProblemCode::UnknownEnvironment,
                format!(
                    "no environment is named \"{name}\"; known: {}",
                    known.join(", ")
                ),
            )
        })
    }

    /// Every environment's live view (state and last inventory), default
    /// first.
    pub fn views(&self) -> Vec<EnvironmentView> {
        lock(&self.inner.state).views.all()
    }

    /// Sends `event` to the app (and keeps the live views current).
    pub(crate) fn emit(&self, event: AppEvent) {
        if let AppEvent::Live(update) = &event {
            lock(&self.inner.state).views.apply(update);
        }
        let sink = lock(&self.inner.sink).clone();
        if let Some(sink) = sink {
            sink(event);
        }
    }

    /// Follows every environment in the background, sending what changes
    /// to `sink` (the desktop app). Call once, inside a tokio runtime.
    pub fn follow(&self, sink: AppSink) {
        *lock(&self.inner.sink) = Some(sink);
        let all: Vec<Arc<Environment>> = lock(&self.inner.state).open.values().cloned().collect();
        for env in all {
            crate::follow::start(self.clone(), env);
        }
    }

    fn following(&self) -> bool {
        lock(&self.inner.sink).is_some()
    }

    /// Stops every environment's background work.
    pub fn stop(&self) {
        for env in lock(&self.inner.state).open.values() {
            let _ = env.stop.send(true);
        }
    }

    /// Tries to reach the environment a form describes, without saving it.
    pub async fn test(&self, new: &NewEnvironment) -> ConnectionTest {
        match tokio::time::timeout(TEST_TIMEOUT, self.try_connect(new)).await {
            Ok(Ok(daemon)) => ConnectionTest {
                daemon: Some(daemon),
                problem: None,
                host_key: None,
            },
            Ok(Err(problem)) => {
                let host_key = match (&problem.code, Endpoint::parse(&new.host)) {
                    (ProblemCode::UnknownHostKey, Ok(Endpoint::Ssh { destination })) => {
                        changeover_docker::ssh::host_keys(&self.ssh_target(&destination))
                            .await
                            .ok()
                    }
                    _ => None,
                };
                ConnectionTest {
                    daemon: None,
                    problem: Some(problem),
                    host_key,
                }
            }
            Err(_) => ConnectionTest {
                daemon: None,
                problem: Some(Problem::new(
                    ProblemCode::DaemonUnreachable,
                    format!(
                        "{} did not answer within {} s",
                        new.host,
                        TEST_TIMEOUT.as_secs()
                    ),
                )),
                host_key: None,
            },
        }
    }

    fn ssh_target(&self, destination: &str) -> SshTarget {
        SshTarget {
            destination: destination.to_string(),
            known_hosts: Some(self.inner.settings.known_hosts()),
            control_dir: None,
        }
    }

    /// Dials what a form describes once; the daemon's version.
    async fn try_connect(&self, new: &NewEnvironment) -> Result<DaemonInfo, Problem> {
        let (entry, key) = self.prepare(new).await?;
        let endpoint = added::check(&entry)?;
        let tls = match (&entry.tls, key) {
            (Some(t), Some(key)) => Some(TlsMaterial {
                ca: t.ca.clone(),
                cert: t.cert.clone(),
                key,
            }),
            _ => None,
        };
        let docker = dial(
            &endpoint,
            tls.as_ref(),
            &ssh_settings(&self.inner.settings)?,
        )
        .await?;
        changeover_docker::read::daemon_info(&docker).await
    }

    /// The stored entry and key for a form: TLS files read now (an edit
    /// without files keeps the stored material).
    async fn prepare(
        &self,
        new: &NewEnvironment,
    ) -> Result<(AddedEnvironment, Option<Secret>), Problem> {
        let name = new.name.trim().to_string();
        let host = new.host.trim().to_string();
        let (tls, key) = match &new.tls {
            Some(files) => {
                let files = TlsFiles {
                    ca: expand_home(&files.ca),
                    cert: expand_home(&files.cert),
                    key: expand_home(&files.key),
                };
                let files = &files;
                let m = read_tls_files(files)?;
                added::check_pem("client key", m.key.expose(), "PRIVATE KEY")
                    .map_err(|p| Problem::new(p.code, format!("{} ({})", p.message, files.key)))?;
                (
                    Some(StoredTls {
                        ca: m.ca,
                        cert: m.cert,
                    }),
                    Some(m.key),
                )
            }
            None => {
                let existing = self
                    .inner
                    .settings
                    .added_environments()?
                    .into_iter()
                    .find(|e| e.name == name)
                    .and_then(|e| e.tls);
                let key = match &existing {
                    Some(_) => {
                        let account = tls_key_account(&name);
                        blocking(&self.inner.secrets, move |s| s.get(&account)).await?
                    }
                    None => None,
                };
                (existing, key)
            }
        };
        let entry = AddedEnvironment {
            name,
            host,
            description: new.description.trim().to_string(),
            tls,
        };
        added::check(&entry)?;
        Ok((entry, key))
    }

    /// Accepts an SSH host key the user compared: the key of `host`
    /// (`ssh://…`) whose fingerprint is `fingerprint` goes into
    /// Changeover's known hosts. It is scanned again here, so a key that
    /// changed since it was shown is not accepted.
    pub async fn trust_host_key(&self, host: &str, fingerprint: &str) -> Result<(), Problem> {
        let Ok(Endpoint::Ssh { destination }) = Endpoint::parse(host) else {
            return Err(Problem::new(
                ProblemCode::InvalidHost,
                format!("{host} is not an ssh:// address"),
            ));
        };
        let keys = changeover_docker::ssh::host_keys(&self.ssh_target(&destination)).await?;
        let wanted = fingerprint.trim();
        let chosen: Vec<String> = keys
            .fingerprints
            .iter()
            .zip(&keys.known_hosts_lines)
            .filter(|(f, _)| f.split_whitespace().next() == wanted.split_whitespace().next())
            .map(|(_, line)| line.clone())
            .collect();
        if chosen.is_empty() {
            return Err(Problem::new(
                ProblemCode::HostKeyChanged,
                format!(
                    "{host} does not offer a key with fingerprint {wanted} (it offers {}); nothing was accepted",
                    keys.fingerprints.join(", ")
                ),
            ));
        }
        self.inner.settings.trust_host_keys(&chosen)
    }

    /// Adds an environment. Unless `anyway`, it must answer first (the
    /// problem is returned and nothing is saved). The TLS key goes into the
    /// keyring before the settings are written; when writing fails, the key
    /// is taken out again, so nothing half-saved stays.
    pub async fn add(
        &self,
        new: &NewEnvironment,
        anyway: bool,
    ) -> Result<EnvironmentView, Problem> {
        let _one = self.inner.changing.lock().await;
        added::check_name(new.name.trim())?;
        if self.get(Some(new.name.trim())).is_ok() {
            return Err(Problem::new(
                ProblemCode::InvalidEnvironment,
                format!(
                    "an environment named \"{}\" exists already; pick another name, or edit that one",
                    new.name.trim()
                ),
            ));
        }
        self.save(None, new, anyway).await
    }

    /// Changes an environment the user added (its name too). TLS files,
    /// when given, replace its TLS material.
    pub async fn edit(
        &self,
        name: &str,
        new: &NewEnvironment,
        anyway: bool,
    ) -> Result<EnvironmentView, Problem> {
        let _one = self.inner.changing.lock().await;
        let env = self.get(Some(name))?;
        if env.spec.source != EnvironmentSource::Added {
            return Err(not_added(name));
        }
        if new.name.trim() != name {
            added::check_name(new.name.trim())?;
            if self.get(Some(new.name.trim())).is_ok() {
                return Err(Problem::new(
                    ProblemCode::InvalidEnvironment,
                    format!(
                        "an environment named \"{}\" exists already",
                        new.name.trim()
                    ),
                ));
            }
        }
        if env.rollouts_running() > 0 {
            return Err(busy_problem(name));
        }
        self.save(Some(name), new, anyway).await
    }

    async fn save(
        &self,
        replacing: Option<&str>,
        new: &NewEnvironment,
        anyway: bool,
    ) -> Result<EnvironmentView, Problem> {
        // An edit without new TLS files reads the stored key under the old name.
        let mut probe = new.clone();
        if let (Some(old), None) = (replacing, &new.tls) {
            probe.name = old.to_string();
        }
        let (mut entry, key) = self.prepare(&probe).await?;
        entry.name = new.name.trim().to_string();
        if !anyway {
            let test = self.test(&probe).await;
            if let Some(p) = test.problem {
                return Err(p);
            }
        }
        let mut all = self.inner.settings.added_environments()?;
        let account = tls_key_account(&entry.name);
        if let Some(key) = key.clone() {
            let account = account.clone();
            blocking(&self.inner.secrets, move |s| s.set(&account, &key)).await?;
        }
        let old_entry = replacing.and_then(|n| all.iter().position(|e| e.name == n));
        let kept_old = old_entry.map(|i| all.remove(i));
        all.push(entry.clone());
        all.sort_by(|a, b| a.name.cmp(&b.name));
        if let Err(p) = self.inner.settings.save_added_environments(&all) {
            // Nothing saved: neither the key under a new name.
            if replacing != Some(entry.name.as_str()) && key.is_some() {
                let account = account.clone();
                let _ = blocking(&self.inner.secrets, move |s| s.delete(&account)).await;
            }
            return Err(p);
        }
        if let Some(old) = kept_old.filter(|o| o.name != entry.name) {
            let old_account = tls_key_account(&old.name);
            blocking(&self.inner.secrets, move |s| s.delete(&old_account)).await?;
        }
        if entry.tls.is_none() {
            let account = account.clone();
            blocking(&self.inner.secrets, move |s| s.delete(&account)).await?;
        }
        if let Some(old) = replacing {
            self.close(old);
        }
        Ok(self.open_added(&entry))
    }

    /// Starts keeping a newly stored environment, and tells the window.
    fn open_added(&self, entry: &AddedEnvironment) -> EnvironmentView {
        let spec = added::spec_of(entry);
        let env = Arc::new(Environment::new(
            spec.clone(),
            self.inner.settings.clone(),
            self.inner.secrets.clone(),
            self.inner.docker_config.clone(),
        ));
        let view = {
            let mut state = lock(&self.inner.state);
            let is_default = state.default == spec.name;
            state.open.insert(spec.name.clone(), env.clone());
            EnvironmentView::new(&spec, is_default)
        };
        self.emit(AppEvent::Live(LiveUpdate::Added {
            view: Box::new(view.clone()),
        }));
        if self.following() {
            crate::follow::start(self.clone(), env);
        }
        view
    }

    fn close(&self, name: &str) {
        let removed = lock(&self.inner.state).open.remove(name);
        if let Some(env) = removed {
            let _ = env.stop.send(true);
            self.emit(AppEvent::Live(LiveUpdate::Removed {
                environment: name.to_string(),
            }));
        }
    }

    /// Removes an environment the user added, with its keyring entries.
    /// Refused while a rollout runs on it (from this app, or any client
    /// holding a rollout lock there).
    pub async fn remove(&self, name: &str) -> Result<(), Problem> {
        let _one = self.inner.changing.lock().await;
        let env = self.get(Some(name))?;
        if env.spec.source != EnvironmentSource::Added || name == DEFAULT_ENVIRONMENT {
            return Err(not_added(name));
        }
        if env.rollouts_running() > 0 {
            return Err(busy_problem(name));
        }
        // Another client's rollout there holds a lock on its edge.
        let held = tokio::time::timeout(Duration::from_secs(5), crate::services::locks_held(&env))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if let Some((service, owner)) = held.first() {
            return Err(Problem::new(
                ProblemCode::EnvironmentBusy,
                format!(
                    "a rollout of {service} runs on \"{name}\" (started by {owner}); remove the environment when it has ended"
                ),
            ));
        }
        let mut all = self.inner.settings.added_environments()?;
        all.retain(|e| e.name != name);
        self.inner.settings.save_added_environments(&all)?;
        let account = tls_key_account(name);
        blocking(&self.inner.secrets, move |s| s.delete(&account)).await?;
        self.close(name);
        Ok(())
    }
}

/// `~/x` as the user's home folder's `x` (paths typed in the window).
fn expand_home(path: &str) -> String {
    let path = path.trim();
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest).display().to_string(),
        _ => path.to_string(),
    }
}

fn not_added(name: &str) -> Problem {
    Problem::new(
        ProblemCode::InvalidEnvironment,
        format!(
            "\"{name}\" was not added in Changeover (it is the local daemon, DOCKER_HOST or a Docker context); change it where it is defined"
        ),
    )
}

fn busy_problem(name: &str) -> Problem {
    Problem::new(
        ProblemCode::EnvironmentBusy,
        format!("a rollout runs on \"{name}\"; wait until it has ended"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secrets::memory::Memory;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nsecret-bytes\n-----END PRIVATE KEY-----\n";

    fn registry(dir: &std::path::Path) -> (Environments, Arc<Memory>) {
        let secrets = Arc::new(Memory::default());
        let envs = Environments::open(
            Settings {
                config_dir: dir.join("config"),
                runtime_dir: dir.join("run"),
            },
            secrets.clone(),
            DiscoveryInput::default(),
        );
        (envs, secrets)
    }

    fn tls_files(dir: &std::path::Path) -> TlsFiles {
        for (n, t) in [("ca.pem", CERT), ("cert.pem", CERT), ("key.pem", KEY)] {
            std::fs::write(dir.join(n), t).unwrap();
        }
        let p = |n: &str| dir.join(n).display().to_string();
        TlsFiles {
            ca: p("ca.pem"),
            cert: p("cert.pem"),
            key: p("key.pem"),
        }
    }

    #[tokio::test]
    async fn an_added_tls_environment_keeps_its_key_in_the_keyring_only() {
        let dir = tempfile::tempdir().unwrap();
        let (envs, secrets) = registry(dir.path());
        let files = tls_files(dir.path());
        let new = NewEnvironment {
            name: "lab".into(),
            host: "tcp://127.0.0.1:1".into(),
            description: String::new(),
            tls: Some(files),
        };
        // It cannot be reached (nothing listens, and these are no real
        // certificates): refused, and nothing is saved.
        let refused = envs.add(&new, false).await.unwrap_err();
        assert!(
            matches!(
                refused.code,
                ProblemCode::DaemonUnreachable | ProblemCode::InvalidTls
            ),
            "{refused}"
        );
        assert!(envs.get(Some("lab")).is_err());
        assert!(
            secrets.0.lock().unwrap().is_empty(),
            "no key stored for a refused add"
        );

        let view = envs.add(&new, true).await.unwrap();
        assert_eq!(view.spec.source, EnvironmentSource::Added);
        assert!(matches!(
            view.spec.endpoint,
            Some(Endpoint::Tcp {
                tls: Some(Tls::Stored),
                ..
            })
        ));
        assert_eq!(
            secrets
                .0
                .lock()
                .unwrap()
                .get("environment/lab/tls-key")
                .map(String::as_str),
            Some(KEY),
            "the key is in the keyring"
        );
        let settings =
            std::fs::read_to_string(dir.path().join("config/environments.json")).unwrap();
        assert!(
            !settings.contains("secret-bytes"),
            "the key is in no settings file"
        );
        assert!(
            !settings.contains("key.pem"),
            "and no path to the user's key file is kept"
        );

        let again = envs.add(&new, true).await.unwrap_err();
        assert_eq!(again.code, ProblemCode::InvalidEnvironment);
        assert!(again.message.contains("exists already"), "{again}");

        // Renamed: the key moves with it.
        let renamed = NewEnvironment {
            name: "lab2".into(),
            tls: None,
            ..new.clone()
        };
        envs.edit("lab", &renamed, true).await.unwrap();
        assert!(envs.get(Some("lab")).is_err());
        let keys: Vec<String> = secrets.0.lock().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["environment/lab2/tls-key"]);

        envs.remove("lab2").await.unwrap();
        assert!(
            secrets.0.lock().unwrap().is_empty(),
            "removing it removes its keyring entry"
        );
        assert!(envs.get(Some("lab2")).is_err());
        let after = registry(dir.path()).0;
        assert!(after.get(Some("lab2")).is_err(), "and it stays removed");
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_the_value_named_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (envs, secrets) = registry(dir.path());
        let base = NewEnvironment {
            name: "x".into(),
            host: "tcp://127.0.0.1:1".into(),
            description: String::new(),
            tls: None,
        };
        let cases = [
            (
                NewEnvironment {
                    name: "a b".into(),
                    ..base.clone()
                },
                "\"a b\"",
            ),
            (
                NewEnvironment {
                    host: "tcp//x".into(),
                    ..base.clone()
                },
                "tcp//x",
            ),
            (
                NewEnvironment {
                    tls: Some(TlsFiles {
                        ca: "/no/ca.pem".into(),
                        cert: "/no/cert.pem".into(),
                        key: "/no/key.pem".into(),
                    }),
                    ..base.clone()
                },
                "/no/ca.pem",
            ),
            (
                NewEnvironment {
                    name: "default".into(),
                    ..base.clone()
                },
                "default",
            ),
        ];
        for (new, named) in cases {
            let p = envs.add(&new, true).await.unwrap_err();
            assert!(p.message.contains(named), "{named}: {p}");
        }
        // A key file that is not a key.
        let files = tls_files(dir.path());
        std::fs::write(&files.key, "not a key").unwrap();
        let p = envs
            .add(
                &NewEnvironment {
                    tls: Some(files.clone()),
                    ..base.clone()
                },
                true,
            )
            .await
            .unwrap_err();
        assert_eq!(p.code, ProblemCode::InvalidTls);
        assert!(p.message.contains("key.pem"), "{p}");
        assert!(
            !p.message.contains("not a key"),
            "the key's content is never echoed: {p}"
        );
        assert!(secrets.0.lock().unwrap().is_empty());
        assert!(
            !dir.path().join("config/environments.json").exists(),
            "nothing was saved"
        );

        let p = envs.remove("default").await.unwrap_err();
        assert_eq!(
            p.code,
            ProblemCode::InvalidEnvironment,
            "the local daemon is not removable"
        );
    }

    #[tokio::test]
    async fn an_environment_with_a_rollout_running_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (envs, _) = registry(dir.path());
        let new = NewEnvironment {
            name: "busy".into(),
            host: "unix:///no/such.sock".into(),
            description: String::new(),
            tls: None,
        };
        envs.add(&new, true).await.unwrap();
        let env = envs.get(Some("busy")).unwrap();
        let held = env.busy();
        let p = envs.remove("busy").await.unwrap_err();
        assert_eq!(p.code, ProblemCode::EnvironmentBusy, "{p}");
        drop(held);
        envs.remove("busy").await.unwrap();
    }
}
