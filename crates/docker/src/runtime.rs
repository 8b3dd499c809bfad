//! The daemon side of a rollout: core's [`Runtime`] on bollard.
//!
//! Names and labels: a stack's networks are `STACK_default` (every service
//! joins it, reachable by its service name) and `STACK_NET`; its named
//! volumes are `STACK_VOLUME` (created when missing, never removed here).
//! Containers are `STACK-SERVICE-rRELEASE-sSLOT` and carry the
//! `dev.changeover.*` labels, which is how a rollout finds them again —
//! the daemon is the source of truth.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use changeover_core::edge::labels;
use changeover_core::image::ImageRef;
use changeover_core::registry::{PullProgress, Repository};
use changeover_core::rollout::{container_name, Runtime, SlotContainer, STOP_TIMEOUT_SECS};
use changeover_core::service::{MountKind, Release, ServiceSpec};
use changeover_core::{Problem, ProblemCode};
use futures_util::StreamExt;

use crate::connect::daemon_problem;
use crate::registry::Credential;

/// The stack's default network.
pub fn default_network(stack: &str) -> String {
    format!("{stack}_default")
}

/// Docker name of a stack's named volume.
pub fn volume_name(stack: &str, volume: &str) -> String {
    changeover_core::service::stack_volume(stack, volume)
}

pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

#[derive(Clone)]
pub struct DockerRuntime {
    pub docker: Docker,
    /// How images not on the daemon are pulled (`None`: anonymously,
    /// with no progress told).
    pub pulls: Option<PullSetup>,
}

/// Where a rollout's pulls get their credentials, and who hears their
/// progress.
#[derive(Clone)]
pub struct PullSetup {
    pub credentials: Arc<dyn Credentials>,
    pub progress: Arc<dyn Fn(&PullProgress) + Send + Sync>,
    /// Stops a pull under way when it turns true (the window's Stop); the
    /// rollout then fails before anything changed.
    pub stop: Option<PullStop>,
}

/// Asks a rollout's pull to stop. Only the pull stops: the rollout fails
/// as any refused image does, with its lock given back and nothing
/// changed, where dropping the rollout's future could leave its lock held.
#[derive(Clone)]
pub struct PullStop(pub tokio::sync::watch::Receiver<bool>);

impl PullStop {
    /// Returns once a stop is asked; never when the asker went away.
    pub async fn asked(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// `pulling` (of `reference`), unless `stop` is asked first: then the
    /// pull is dropped (the daemon stops it) and refused in words.
    pub async fn or_stopped<T>(
        stop: Option<PullStop>,
        reference: &str,
        pulling: impl Future<Output = Result<T, Problem>>,
    ) -> Result<T, Problem> {
        let Some(mut stop) = stop else {
            return pulling.await;
        };
        tokio::select! {
            pulled = pulling => pulled,
            () = stop.asked() => Err(Problem::new(
                ProblemCode::Cancelled,
                format!("{reference} was not pulled: the pull was stopped, nothing was changed"),
            )),
        }
    }
}

/// The credential for a registry host (`None`: ask anonymously).
pub trait Credentials: Send + Sync {
    fn credential<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Credential>, Problem>> + Send + 'a>>;
}

impl DockerRuntime {
    pub fn new(docker: &Docker) -> Self {
        Self {
            docker: docker.clone(),
            pulls: None,
        }
    }

    /// The same, pulling with `pulls`' credentials and telling its progress.
    pub fn with_pulls(mut self, pulls: PullSetup) -> Self {
        self.pulls = Some(pulls);
        self
    }

    async fn ensure_network(&self, name: &str, stack: &str) -> Result<(), Problem> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(daemon_problem(&format!("reading network {name}"), &e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::STACK.to_string(), stack.to_string()),
            ])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(daemon_problem(&format!("creating network {name}"), &e)),
        }
    }

    /// Creates the volume `name` of `stack` when missing (labelled the
    /// stack's, so removing the stack with its volumes names it; and
    /// `service`'s, when it holds that service's alone).
    async fn ensure_stack_volume(
        &self,
        name: &str,
        stack: &str,
        service: Option<&str>,
    ) -> Result<(), Problem> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => {
                // Two services whose kept volumes come out with the same
                // name (service web's slot 1 and a service web_s1) would
                // share one volume's data: refused, nothing created.
                let holder = v.labels.get(labels::SERVICE);
                return match (service, holder) {
                    (Some(wanted), Some(holder)) if wanted != holder => Err(Problem::new(
                        ProblemCode::InvalidStack,
                        format!(
                            "volume {name} holds the data of service {holder} of stack {stack}, and service {wanted} would be given the same volume: rename one of the two services (or name the volume in the stack file to share it on purpose)"
                        ),
                    )),
                    _ => Ok(()),
                };
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(daemon_problem(&format!("reading volume {name}"), &e)),
        }
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(
                    [
                        Some((labels::MANAGED, "true")),
                        Some((labels::STACK, stack)),
                        service.map(|s| (labels::SERVICE, s)),
                    ]
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..Default::default()
            })
            .await
            .map_err(|e| daemon_problem(&format!("creating volume {name}"), &e))?;
        Ok(())
    }

    /// Binds for the `VOLUME`s the release's image declares and no mount
    /// or tmpfs of the service covers: each slot keeps its own from release
    /// to release ([`changeover_core::service::image_volume`]), created
    /// here when missing, instead of a fresh anonymous one per container.
    async fn image_volumes(&self, release: &Release, slot: u32) -> Result<Vec<String>, Problem> {
        let spec = &release.spec;
        let image = self
            .docker
            .inspect_image(&release.image_id)
            .await
            .map_err(|e| daemon_problem(&format!("reading image {}", spec.image), &e))?;
        let mut binds = Vec::new();
        for path in uncovered_volumes(image, spec) {
            let name = kept_image_volume(spec, slot, &path);
            self.ensure_stack_volume(&name, &spec.stack, Some(&spec.name))
                .await?;
            binds.push(format!("{name}:{path}"));
        }
        binds.sort();
        Ok(binds)
    }
}

/// The `VOLUME`s `image` declares that no mount or tmpfs of `spec` covers
/// (sorted): each slot keeps its own ([`kept_image_volume`]).
pub fn uncovered_volumes(image: bollard::models::ImageInspect, spec: &ServiceSpec) -> Vec<String> {
    let mut declared: Vec<String> = image
        .config
        .and_then(|c| c.volumes)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    declared.retain(|path| {
        path.starts_with('/')
            && !spec.mounts.iter().any(|m| &m.target == path)
            && !spec.tmpfs.iter().any(|t| &t.target == path)
    });
    declared.sort();
    declared
}

/// The Docker volume slot `slot` of `spec` keeps its image's `VOLUME`
/// `path` in.
pub fn kept_image_volume(spec: &ServiceSpec, slot: u32, path: &str) -> String {
    volume_name(
        &spec.stack,
        &changeover_core::service::image_volume(&spec.name, slot, path),
    )
}

/// The names a container of `spec` is reached by on the stack's network
/// `network`: the service's, and the aliases the stack gives it there.
fn aliases(spec: &ServiceSpec, network: &str) -> Vec<String> {
    std::iter::once(spec.name.clone())
        .chain(
            spec.network_aliases
                .get(network)
                .into_iter()
                .flatten()
                .cloned(),
        )
        .collect()
}

/// The host side of a service's container settings (the Compose keys of
/// [`changeover_core::container`]); unset ones stay Docker's defaults.
fn container_host_config(c: &changeover_core::container::ContainerSettings) -> HostConfig {
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let signed = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    HostConfig {
        init: c.init,
        privileged: c.privileged.then_some(true),
        readonly_rootfs: c.read_only.then_some(true),
        cap_add: list(&c.cap_add),
        cap_drop: list(&c.cap_drop),
        security_opt: list(&c.security_opt),
        sysctls: (!c.sysctls.is_empty()).then(|| {
            c.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        devices: (!c.devices.is_empty()).then(|| c.devices.iter().map(|d| device(d)).collect()),
        extra_hosts: list(&c.extra_hosts),
        dns: list(&c.dns),
        dns_search: list(&c.dns_search),
        dns_options: list(&c.dns_opt),
        group_add: list(&c.group_add),
        shm_size: signed(c.shm_size),
        ulimits: (!c.ulimits.is_empty()).then(|| {
            c.ulimits
                .iter()
                .map(|(name, l)| bollard::models::ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(l.soft),
                    hard: Some(l.hard),
                })
                .collect()
        }),
        memory: signed(c.memory),
        memory_reservation: signed(c.memory_reservation),
        memory_swap: c.memory_swap,
        cpu_period: c.cpu_period,
        cpu_quota: c.cpu_quota,
        device_requests: (!c.devices_requested.is_empty()).then(|| {
            c.devices_requested
                .iter()
                .map(|d| bollard::models::DeviceRequest {
                    driver: (!d.driver.is_empty()).then(|| d.driver.clone()),
                    count: (d.device_ids.is_empty()).then_some(d.count),
                    device_ids: (!d.device_ids.is_empty()).then(|| d.device_ids.clone()),
                    capabilities: Some(vec![d.capabilities.clone()]),
                    options: (!d.options.is_empty()).then(|| {
                        d.options
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    }),
                })
                .collect()
        }),
        nano_cpus: signed(c.nano_cpus),
        cpu_shares: signed(c.cpu_shares),
        cpuset_cpus: c.cpuset.clone(),
        pids_limit: c.pids_limit,
        oom_score_adj: c.oom_score_adj,
        oom_kill_disable: c.oom_kill_disable.then_some(true),
        ipc_mode: c.ipc.clone(),
        pid_mode: c.pid.clone(),
        userns_mode: c.userns_mode.clone(),
        runtime: c.runtime.clone(),
        log_config: c
            .logging
            .as_ref()
            .map(|l| bollard::models::HostConfigLogConfig {
                typ: (!l.driver.is_empty()).then(|| l.driver.clone()),
                config: (!l.options.is_empty()).then(|| {
                    l.options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                }),
            }),
        ..Default::default()
    }
}

/// `/dev/net/tun`, `/dev/sda:/dev/xvda`, `/dev/fuse:/dev/fuse:rwm` as
/// Docker's device mapping (the container path defaults to the host's).
fn device(text: &str) -> bollard::models::DeviceMapping {
    let mut parts = text.splitn(3, ':');
    let host = parts.next().unwrap_or_default().to_string();
    let container = parts.next().filter(|p| !p.is_empty()).map(str::to_string);
    let permissions = parts.next().filter(|p| !p.is_empty()).unwrap_or("rwm");
    bollard::models::DeviceMapping {
        path_in_container: Some(container.unwrap_or_else(|| host.clone())),
        path_on_host: Some(host),
        cgroup_permissions: Some(permissions.to_string()),
    }
}

/// A stack's `restart:` as Docker's policy (unless-stopped when unset).
/// `always` is unless-stopped too: with `always` the daemon would start
/// the kept, stopped containers of older releases again when it restarts.
fn restart_policy(restart: Option<&str>) -> RestartPolicy {
    let (name, count) = restart
        .unwrap_or("unless-stopped")
        .split_once(':')
        .map(|(n, c)| (n, c.parse::<i64>().ok()))
        .unwrap_or((restart.unwrap_or("unless-stopped"), None));
    let name = match name {
        "no" => RestartPolicyNameEnum::NO,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: count,
    }
}

fn slot_container(c: bollard::models::ContainerInspectResponse, stack: &str) -> SlotContainer {
    let labels = c
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let num = |k: &str| {
        labels
            .get(k)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let state = c.state.clone().unwrap_or_default();
    let running = state.running.unwrap_or(false) && !state.restarting.unwrap_or(false);
    let ip = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(&default_network(stack)))
        .and_then(|e| e.ip_address.clone())
        .filter(|ip| !ip.is_empty());
    let health = state.health.as_ref();
    SlotContainer {
        id: c.id.clone().unwrap_or_default(),
        name: c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        release: num(labels::RELEASE),
        slot: num(labels::SLOT),
        running,
        exit_code: if running { None } else { state.exit_code },
        ip,
        health: health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        health_output: health
            .and_then(|h| h.log.as_ref())
            .and_then(|l| l.last())
            .and_then(|r| r.output.clone())
            .map(|o| o.trim().to_string()),
    }
}

impl Runtime for DockerRuntime {
    async fn resolve_image(&self, image: &str) -> Result<String, Problem> {
        match self.docker.inspect_image(image).await {
            Ok(i) => return Ok(i.id.unwrap_or_default()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(daemon_problem(&format!("reading image {image}"), &e)),
        }
        let reference = ImageRef::parse(image).map_err(|e| {
            Problem::new(
                ProblemCode::ImageNotFound,
                format!("image {image} is not on the daemon and cannot be pulled: {e}"),
            )
        })?;
        let credential = match &self.pulls {
            Some(p) => {
                p.credentials
                    .credential(&Repository::of(&reference).host)
                    .await?
            }
            None => None,
        };
        let progress = self.pulls.as_ref().map(|p| p.progress.clone());
        let pulling = crate::images::pull(&self.docker, &reference, credential.as_ref(), |state| {
            if let Some(tell) = &progress {
                tell(state);
            }
        });
        let stop = self.pulls.as_ref().and_then(|p| p.stop.clone());
        let pulled = PullStop::or_stopped(stop, &reference.to_string(), pulling).await;
        pulled.map_err(|p| {
            let said = p
                .message
                .strip_prefix(&format!("{reference} "))
                .unwrap_or(&p.message)
                .to_string();
            Problem::new(
                p.code,
                format!("image {image} is not on the daemon and {said}"),
            )
        })
    }

    async fn snapshot_volumes(
        &self,
        spec: &ServiceSpec,
        from: Option<u32>,
        to: u32,
    ) -> Result<Vec<String>, Problem> {
        use changeover_core::snapshot::{beyond_keep, SnapshotMeta, SnapshotReason};
        let Some(policy) = spec.snapshots else {
            return Ok(Vec::new());
        };
        let mut said = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        // The service's named and anonymous volumes, and those kept for
        // its image's VOLUMEs (per slot).
        let named = spec
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| m.docker_volume(&spec.stack));
        let kept = crate::volumes::created_for(&self.docker, &spec.stack, Some(&spec.name)).await?;
        for name in named.chain(kept) {
            if !seen.insert(name.clone()) {
                continue;
            }
            match self.docker.inspect_volume(&name).await {
                Ok(_) => {}
                // Nothing to keep yet: the first deploy creates it.
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(daemon_problem(&format!("reading volume {name}"), &e)),
            }
            let meta = SnapshotMeta {
                note: None,
                service: Some(spec.qualified()),
                release: from,
                before_release: Some(to),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let (snap, copied) = crate::volumes::snapshot(
                &self.docker,
                &name,
                SnapshotReason::BeforeDeploy,
                &meta,
                now,
                |_| {},
            )
            .await
            .map_err(|p| {
                Problem::new(
                    p.code,
                    format!("the snapshot of volume {name} before the deploy failed, so nothing was deployed: {}", p.message),
                )
            })?;
            said.push(format!(
                "snapshot {} of volume {name}: {} files, {} bytes",
                snap.name, copied.files, copied.bytes
            ));
            let all = crate::volumes::snapshots_of(&self.docker, &name).await?;
            for old in beyond_keep(&all, policy.keep) {
                match crate::volumes::remove_volume(&self.docker, &old.name).await {
                    Ok(()) => said.push(format!(
                        "snapshot {} removed (keep: {})",
                        old.name, policy.keep
                    )),
                    Err(p) => said.push(format!("snapshot {} kept: {}", old.name, p.message)),
                }
            }
        }
        Ok(said)
    }

    async fn prepare(&self, spec: &ServiceSpec) -> Result<(), Problem> {
        self.ensure_network(&default_network(&spec.stack), &spec.stack)
            .await?;
        for n in spec.networks.iter().filter(|n| *n != "default") {
            self.ensure_network(&format!("{}_{n}", spec.stack), &spec.stack)
                .await?;
        }
        for m in spec.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let name = m.docker_volume(&spec.stack);
            if m.external {
                // Made outside the stack: used as it is, never created.
                match self.docker.inspect_volume(&name).await {
                    Ok(_) => continue,
                    Err(e) if is_not_found(&e) => {
                        return Err(Problem::new(
                            ProblemCode::UnknownVolume,
                            format!(
                                "{}: volume {name} is external (the stack says `external: true`) and this daemon has none of that name: create it (docker volume create {name}) or remove `external`",
                                spec.qualified()
                            ),
                        ))
                    }
                    Err(e) => return Err(daemon_problem(&format!("reading volume {name}"), &e)),
                }
            }
            // An anonymous volume is its service's alone.
            let holder = m.anonymous.then_some(spec.name.as_str());
            self.ensure_stack_volume(&name, &spec.stack, holder).await?;
        }
        Ok(())
    }

    async fn containers(&self, stack: &str, service: &str) -> Result<Vec<SlotContainer>, Problem> {
        let list = crate::read::containers_filtered(
            &self.docker,
            "label",
            vec![
                format!("{}={stack}", labels::STACK),
                format!("{}={service}", labels::SERVICE),
                format!("{}=true", labels::MANAGED),
            ],
            "listing the service's containers",
        )
        .await?;
        let mut out = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            match self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(i) => out.push(slot_container(i, stack)),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(daemon_problem("reading a container", &e)),
            }
        }
        out.sort_by_key(|c| (c.slot, c.release));
        Ok(out)
    }

    async fn create(&self, release: &Release, slot: u32) -> Result<String, Problem> {
        let spec = &release.spec;
        let kept = self.image_volumes(release, slot).await?;
        let name = container_name(spec, release.number, slot);
        let mut container_labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in [
            (labels::MANAGED, "true".to_string()),
            (labels::STACK, spec.stack.clone()),
            (labels::SERVICE, spec.name.clone()),
            (labels::RELEASE, release.number.to_string()),
            (labels::SLOT, slot.to_string()),
        ] {
            container_labels.insert(k.to_string(), v);
        }
        let binds = spec
            .mounts
            .iter()
            .map(|m| {
                let source = match m.kind {
                    MountKind::Volume => m.docker_volume(&spec.stack),
                    MountKind::Bind => m.source.clone(),
                };
                let mut mode: Vec<&str> = Vec::new();
                if m.read_only {
                    mode.push("ro");
                }
                mode.extend(m.options.iter().map(String::as_str));
                if mode.is_empty() {
                    format!("{source}:{}", m.target)
                } else {
                    format!("{source}:{}:{}", m.target, mode.join(","))
                }
            })
            .chain(kept)
            .collect::<Vec<_>>();
        let ms_to_ns = |ms: u64| (ms as i64).saturating_mul(1_000_000);
        let network = default_network(&spec.stack);
        let c = &spec.container;
        let body = ContainerCreateBody {
            image: Some(release.image_id.clone()),
            cmd: spec.command.clone(),
            entrypoint: c.entrypoint.clone(),
            user: c.user.clone(),
            working_dir: c.working_dir.clone(),
            hostname: c.hostname.clone(),
            domainname: c.domainname.clone(),
            stop_signal: c.stop_signal.clone(),
            // A stop (by a rollout or `docker stop`) waits this long.
            stop_timeout: Some(
                c.stop_grace_period_ms
                    .map_or(STOP_TIMEOUT_SECS, |ms| ms.div_ceil(1000) as i64),
            ),
            tty: c.tty.then_some(true),
            open_stdin: c.stdin_open.then_some(true),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(container_labels),
            healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
                test: Some(h.test.clone()),
                interval: Some(ms_to_ns(h.interval_ms)),
                timeout: Some(ms_to_ns(h.timeout_ms)),
                retries: Some(h.retries as i64),
                start_period: Some(ms_to_ns(h.start_period_ms)),
                start_interval: None,
            }),
            host_config: Some(HostConfig {
                binds: Some(binds),
                tmpfs: (!spec.tmpfs.is_empty()).then(|| {
                    spec.tmpfs
                        .iter()
                        .map(|t| (t.target.clone(), t.options.clone()))
                        .collect()
                }),
                network_mode: Some(network.clone()),
                restart_policy: Some(restart_policy(spec.restart.as_deref())),
                ..container_host_config(c)
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings {
                        aliases: Some(aliases(spec, "default")),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(c) => c,
            Err(e) if is_conflict(&e) => {
                // A leftover of that name that no record knows: replace it.
                let _ = self
                    .docker
                    .remove_container(
                        &name,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await;
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map_err(|e| daemon_problem(&format!("creating {name}"), &e))?
            }
            Err(e) => return Err(daemon_problem(&format!("creating {name}"), &e)),
        };
        for n in spec.networks.iter().filter(|n| *n != "default") {
            self.docker
                .connect_network(
                    &format!("{}_{n}", spec.stack),
                    NetworkConnectRequest {
                        container: created.id.clone(),
                        endpoint_config: Some(EndpointSettings {
                            aliases: Some(aliases(spec, n)),
                            ..Default::default()
                        }),
                    },
                )
                .await
                .map_err(|e| daemon_problem(&format!("connecting {name} to network {n}"), &e))?;
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), Problem> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| daemon_problem("starting a container", &e))
    }

    async fn inspect(&self, id: &str) -> Result<SlotContainer, Problem> {
        let c = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| daemon_problem("reading a container", &e))?;
        let stack = c
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(labels::STACK).cloned())
            .unwrap_or_default();
        Ok(slot_container(c, &stack))
    }

    async fn stop(&self, id: &str) -> Result<(), Problem> {
        match self
            .docker
            .stop_container(
                id,
                Some(
                    // The container's own stop timeout (set when it was
                    // created: its stop_grace_period, or 10 s).
                    StopContainerOptionsBuilder::new().build(),
                ),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(daemon_problem("stopping a container", &e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), Problem> {
        // `v: false`: named volumes are never removed by a rollout.
        match self
            .docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(false)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(daemon_problem("removing a container", &e)),
        }
    }

    async fn logs(&self, id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.push_str(&chunk.to_string()),
                Err(e) => {
                    out.push_str(&format!("(could not read the logs: {e})"));
                    break;
                }
            }
        }
        out
    }
}
