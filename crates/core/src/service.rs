//! Services and releases: what a user defines once, and each version of it
//! that ran.
//!
//! A [`ServiceSpec`] is the desired state of one service (from a stack file or
//! the GUI's forms). Deploying it pins the image by digest and records a
//! [`Release`]. A service's [`ServiceRecord`] — its current spec, its
//! releases and any rollout in progress — is stored on the environment (a
//! document on the edge), so every client of the daemon sees the same
//! history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::edge::HealthProbe;

/// `stack/service`, the name users type.
pub fn qualified(stack: &str, service: &str) -> String {
    format!("{stack}/{service}")
}

/// Splits `stack/service` as users type it; anything else is refused.
pub fn split_qualified(name: &str) -> Result<(&str, &str), crate::Problem> {
    match name.split_once('/') {
        Some((s, v)) if !s.is_empty() && !v.is_empty() && !v.contains('/') => Ok((s, v)),
        _ => Err(crate::Problem::new(
            crate::ProblemCode::UnknownService,
            format!("{name:?} is not STACK/SERVICE"),
        )),
    }
}

/// `host:container` — the edge listens on `host` and forwards to `container`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
#[ts(rename = "ServicePort")]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
    /// `/udp`: datagrams, carried by the edge per client flow. A host
    /// port published as both TCP and UDP is one route carrying both.
    #[serde(default)]
    pub udp: bool,
    /// What this port's TCP carries, when it is not the service's
    /// `protocol`: Compose's `app_protocol`, or what the stack reader
    /// decided for a well-known port of a protocol that is not HTTP
    /// ([`well_known_tcp`]: PostgreSQL on 5432 is relayed, not read as HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub app: Option<crate::edge::Protocol>,
}

impl PortMapping {
    /// A TCP port (`host:container`).
    pub fn tcp(host: u16, container: u16) -> Self {
        Self {
            host,
            container,
            udp: false,
            app: None,
        }
    }

    /// As written in a stack: `8080:80`, `53:53/udp`.
    pub fn label(&self) -> String {
        format!("{}:{}{}", self.host, self.container, self.proto())
    }

    /// Its host port as a user names it: `8080`, `53/udp`.
    pub fn host_label(&self) -> String {
        format!("{}{}", self.host, self.proto())
    }

    fn proto(&self) -> &'static str {
        if self.udp {
            "/udp"
        } else {
            ""
        }
    }
}

/// Container ports of protocols that are not HTTP, as images publish them
/// (a client speaks first in a binary protocol, the server does, or it is
/// TLS the container ends itself): with the name a message gives them.
const WELL_KNOWN_TCP: &[(u16, &str)] = &[
    (21, "FTP"),
    (22, "SSH"),
    (25, "SMTP"),
    (53, "DNS"),
    (110, "POP3"),
    (143, "IMAP"),
    (389, "LDAP"),
    (443, "HTTPS (TLS the container ends)"),
    (465, "SMTPS"),
    (587, "SMTP submission"),
    (636, "LDAPS"),
    (993, "IMAPS"),
    (995, "POP3S"),
    (1025, "SMTP (mail catchers)"),
    (1433, "SQL Server"),
    (1521, "Oracle"),
    (1883, "MQTT"),
    (2181, "ZooKeeper"),
    (3306, "MySQL"),
    (4222, "NATS"),
    (5432, "PostgreSQL"),
    (5672, "AMQP"),
    (6379, "Redis"),
    (7687, "Neo4j Bolt"),
    (8443, "HTTPS (TLS the container ends)"),
    (8883, "MQTT over TLS"),
    (9042, "Cassandra"),
    (9092, "Kafka"),
    (11211, "memcached"),
    (25565, "Minecraft"),
    (26257, "CockroachDB"),
    (27017, "MongoDB"),
];

/// The protocol a well-known container port carries when it is not HTTP
/// (`Some("PostgreSQL")` for 5432).
pub fn well_known_tcp(container: u16) -> Option<&'static str> {
    WELL_KNOWN_TCP
        .iter()
        .find(|(p, _)| *p == container)
        .map(|(_, name)| *name)
}

/// One route of a service on the edge: its host port, the container port
/// it forwards to, what its TCP carries, and what it carries besides (or
/// instead of) TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRoute {
    pub host: u16,
    pub container: u16,
    pub udp: crate::edge::Udp,
    pub protocol: crate::edge::Protocol,
}

impl ServiceRoute {
    /// `53`, `53/udp`, `53/tcp+udp`.
    pub fn label(&self) -> String {
        match self.udp {
            crate::edge::Udp::No => self.host.to_string(),
            crate::edge::Udp::Also => format!("{}/tcp+udp", self.host),
            crate::edge::Udp::Only => format!("{}/udp", self.host),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum MountKind {
    /// A named volume of the stack (created when missing, never removed).
    Volume,
    /// A host path.
    Bind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
#[ts(rename = "ServiceMount")]
pub struct Mount {
    pub kind: MountKind,
    /// Volume name as written in the stack (`data`), or an absolute host path.
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// Docker's mount options besides `ro`/`rw`, as written: `z`, `Z`
    /// (SELinux relabelling of a bind), `nocopy` (a new volume is not
    /// filled from the image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Written without a name (`- /data`): Compose gives the container a
    /// volume of its own and keeps it when it recreates the container.
    /// Changeover keeps it across releases too, as the volume
    /// [`anonymous_volume`] names (`source`).
    #[serde(default)]
    pub anonymous: bool,
    /// The volume's own name on the daemon, when the stack gives it one
    /// (top-level `name:`, or `external: true`, which is the volume as
    /// named, not prefixed by the stack); otherwise `STACK_SOURCE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// `external: true`: a volume made outside the stack. Never created
    /// (a deploy without it is refused) and never removed with the stack.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

impl Mount {
    /// The Docker volume a volume mount of `stack` uses: its own name when
    /// the stack gives one, otherwise `STACK_SOURCE` (as Compose names a
    /// project's volumes).
    pub fn docker_volume(&self, stack: &str) -> String {
        self.volume
            .clone()
            .unwrap_or_else(|| stack_volume(stack, &self.source))
    }
}

/// The Docker name of `stack`'s volume `volume`: `STACK_VOLUME`, as Compose
/// names a project's volumes.
pub fn stack_volume(stack: &str, volume: &str) -> String {
    format!("{stack}_{volume}")
}

/// The volume (as a stack names volumes) that holds `service`'s anonymous
/// volume at `target`: `web_anon_app_node_modules` for `/app/node_modules`.
pub fn anonymous_volume(service: &str, target: &str) -> String {
    let path: String = target
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{service}_anon_{path}")
}

/// The volume (as a stack names volumes) that holds what `service`'s image
/// declares as a `VOLUME` at `target`, for slot `slot`, when no mount of
/// the service covers it. Docker would give each new container a fresh
/// one, so every release would start empty; Compose keeps them when it
/// recreates a container, and so does Changeover, one per slot (slot 0's
/// is the one `- TARGET` in the stack names, so writing it there later
/// keeps the data).
pub fn image_volume(service: &str, slot: u32, target: &str) -> String {
    let anonymous = anonymous_volume(service, target);
    match slot {
        0 => anonymous,
        n => anonymous.replacen("_anon_", &format!("_s{n}_anon_"), 1),
    }
}

/// A `tmpfs` mount: memory the container sees as a folder, gone when it
/// stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TmpfsMount {
    pub target: String,
    /// Docker's tmpfs options as written (`size=64m,mode=1777`), empty
    /// for the defaults.
    #[serde(default)]
    pub options: String,
}

/// A Docker `HEALTHCHECK` run inside the container by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct DockerHealthcheck {
    /// `["CMD", ...]` or `["CMD-SHELL", "..."]`; `["NONE"]` disables the image's.
    pub test: Vec<String>,
    #[ts(type = "number")]
    pub interval_ms: u64,
    #[ts(type = "number")]
    pub timeout_ms: u64,
    pub retries: u32,
    #[ts(type = "number")]
    pub start_period_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum Strategy {
    /// Replace containers slot by slot, start-first.
    #[default]
    Rolling,
    /// Start every replica of the new release beside the old ones, traffic
    /// still on the old; the user switches (and can switch back) at once.
    BlueGreen,
    /// Start the new release beside the old one and send it a share of new
    /// clients (sticky); the user moves the share, then promotes or aborts.
    Canary,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Rolling, Strategy::BlueGreen, Strategy::Canary];

    /// As written in `x-changeover.strategy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Runs the new release beside the current one instead of replacing it.
    pub fn side_by_side(self) -> bool {
        self != Strategy::Rolling
    }
}

/// Default share of new clients a canary gets when it becomes healthy.
pub const DEFAULT_CANARY_PERCENT: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum UpdateOrder {
    /// Start the new container before stopping the old one (capacity never drops).
    #[default]
    StartFirst,
    /// Stop the old container first (for apps that cannot run twice).
    StopFirst,
}

/// `pull_policy:`: when a deploy asks the registry for the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum PullPolicy {
    /// Before every deploy: a tag pushed again goes out.
    Always,
    /// Never: the image must be on the daemon.
    Never,
    /// Only when the daemon has no such image (the default).
    Missing,
    /// Built from `build:` (which Changeover does anyway).
    Build,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
            PullPolicy::Missing => "missing",
            PullPolicy::Build => "build",
        }
    }
}

/// `deploy.update_config`: how a rollout paces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct UpdateConfig {
    /// Slots replaced at the same time.
    pub parallelism: u32,
    /// Pause between two groups of slots.
    #[ts(type = "number")]
    pub delay_ms: u64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay_ms: 0,
            order: UpdateOrder::StartFirst,
        }
    }
}

/// Everything that defines one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ServiceSpec {
    pub stack: String,
    pub name: String,
    /// Image reference as the user wrote it (`repo:tag`).
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<Mount>,
    /// Extra networks of the stack the service joins (besides `default`).
    pub networks: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub healthcheck: Option<DockerHealthcheck>,
    pub replicas: u32,
    pub update: UpdateConfig,
    pub strategy: Strategy,
    /// Canary: the share of new clients (percent) the new release gets once
    /// every replica of it is healthy.
    #[serde(default = "default_canary_percent")]
    pub canary_percent: u32,
    /// Canary: abort it automatically when its 5xx share gets too high.
    #[serde(default)]
    pub canary_guard: Option<CanaryGuard>,
    /// Blue-green: how long the old release stays running as standby after
    /// traffic was switched to the new one (`None`: until the user retires
    /// it).
    #[serde(default)]
    #[ts(type = "number | null")]
    pub standby_ms: Option<u64>,
    /// What the edge carries on its ports: HTTP, or plain TCP (a port whose
    /// `app` says otherwise carries that).
    #[serde(default)]
    pub protocol: crate::edge::Protocol,
    /// The edge's HTTP (or TCP) check before a container gets traffic.
    pub health: HealthProbe,
    #[ts(type = "number")]
    pub drain_timeout_ms: u64,
    /// How long a new container may take to become healthy.
    #[ts(type = "number")]
    pub deploy_timeout_ms: u64,
    /// `x-changeover.snapshots`: snapshots of the named volumes before
    /// every deploy.
    #[serde(default)]
    pub snapshots: Option<SnapshotPolicy>,
    /// `x-changeover.timeouts`: how long the edge waits for clients and
    /// for the service's containers.
    #[serde(default)]
    pub timeouts: crate::edge::Timeouts,
    /// `x-changeover.trusted_proxies`: proxies in front of the edge whose
    /// `X-Forwarded-*` headers are passed on.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `x-changeover.hosts`: names the edge routes to this service on its
    /// shared HTTP and HTTPS ports (by `Host` and SNI), besides its own
    /// published port.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `x-changeover.tls`: HTTPS for `hosts`.
    #[serde(default)]
    pub tls: Option<ServiceTls>,
    /// `build:`: the image is built on the environment's daemon from this
    /// context before each deploy (once per content; see
    /// [`crate::build`]); `image` is then the built image's repository
    /// until the build names it `REPO:b-HASH`.
    #[serde(default)]
    pub build: Option<crate::build::BuildSpec>,
    /// `x-changeover.autoredeploy`: what new image redeploys it by itself.
    #[serde(default)]
    pub autoredeploy: Option<crate::redeploy::AutoRedeploy>,
    /// `tmpfs:`, and mounts of `type: tmpfs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// `depends_on`: services of the stack deployed (and healthy) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// `restart:` as written (`no`, `always`, `on-failure[:N]`,
    /// `unless-stopped`); `None`: unless-stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// `pull_policy:`; `None`: missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// `networks: {NAME: {aliases: [...]}}`: the names, besides the
    /// service's own, the others reach it by on that network (`default`
    /// for the stack's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_aliases: BTreeMap<String, Vec<String>>,
    /// What Docker applies to each container beyond the above: `user`,
    /// `entrypoint`, `cap_add`, `sysctls`, `ulimits`, `mem_limit`, … as the
    /// stack says them.
    #[serde(
        default,
        skip_serializing_if = "crate::container::ContainerSettings::is_default"
    )]
    pub container: crate::container::ContainerSettings,
}

/// `x-changeover.tls: acme`, or `{cert: FILE, key: FILE}` (paths made
/// absolute against the stack file's folder; the files are read at each
/// deploy and sent to the edge, never stored here), with `hsts: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ServiceTls {
    /// `None`: ACME.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub hsts: bool,
}

impl ServiceTls {
    /// How the edge is to get the certificate.
    pub fn site(&self) -> crate::edge::SiteTls {
        crate::edge::SiteTls {
            certificate: if self.cert_file.is_some() {
                crate::edge::CertificateSource::Files
            } else {
                crate::edge::CertificateSource::Acme
            },
            hsts: self.hsts,
        }
    }
}

/// `x-changeover.snapshots: {before_deploy: true, keep: N}`: each deploy
/// first copies every named volume of the service into a snapshot, and the
/// newest `keep` of those are kept (snapshots taken by hand stay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SnapshotPolicy {
    pub before_deploy: bool,
    pub keep: u32,
}

/// Snapshots before deploys kept unless `keep` says otherwise.
pub const DEFAULT_SNAPSHOT_KEEP: u32 = 5;

/// `x-changeover.canary.guard`: when the canary's requests in `window`
/// got more than `max_5xx_percent` 5xx (or no answer), with at least
/// `min_requests` of them, the edge takes its share away at once and the
/// canary is aborted, saying so in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct CanaryGuard {
    pub max_5xx_percent: u32,
    #[ts(type = "number")]
    pub window_ms: u64,
    #[ts(type = "number")]
    pub min_requests: u64,
}

/// Default guard window.
pub const DEFAULT_GUARD_WINDOW_MS: u64 = 30_000;
/// Default fewest requests before the guard judges.
pub const DEFAULT_GUARD_MIN_REQUESTS: u64 = 20;

fn default_canary_percent() -> u32 {
    DEFAULT_CANARY_PERCENT
}

/// Default `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// Default `deploy_timeout`.
pub const DEFAULT_DEPLOY_TIMEOUT_MS: u64 = 60_000;

impl ServiceSpec {
    /// Whether it publishes a TCP port (one a site or a preview can use).
    pub fn has_tcp_port(&self) -> bool {
        self.ports.iter().any(|p| !p.udp)
    }

    /// Whether one of its ports carries HTTP (hosts, previews and health
    /// paths need one).
    pub fn has_http_port(&self) -> bool {
        self.routes()
            .iter()
            .any(|r| r.udp != crate::edge::Udp::Only && r.protocol == crate::edge::Protocol::Http)
    }

    /// Its routes on the edge, one per host port in the order first
    /// published: a port published as TCP and as UDP is one route
    /// carrying both (the stack reader refuses the two forwarding to
    /// different container ports).
    pub fn routes(&self) -> Vec<ServiceRoute> {
        use crate::edge::Udp;
        let mut out: Vec<ServiceRoute> = Vec::new();
        for p in &self.ports {
            let udp = if p.udp { Udp::Only } else { Udp::No };
            let protocol = p.app.unwrap_or(self.protocol);
            match out.iter_mut().find(|r| r.host == p.host) {
                Some(r) if r.udp != udp => {
                    r.udp = Udp::Also;
                    // What the TCP side carries.
                    if !p.udp {
                        r.protocol = protocol;
                    }
                }
                Some(_) => {}
                None => out.push(ServiceRoute {
                    host: p.host,
                    container: p.container,
                    udp,
                    protocol,
                }),
            }
        }
        out
    }

    /// A service with Changeover's defaults: one replica, rolling, TCP check.
    pub fn new(stack: &str, name: &str, image: &str) -> Self {
        Self {
            stack: stack.to_string(),
            name: name.to_string(),
            image: image.to_string(),
            command: None,
            env: BTreeMap::new(),
            ports: Vec::new(),
            mounts: Vec::new(),
            networks: Vec::new(),
            labels: BTreeMap::new(),
            healthcheck: None,
            replicas: 1,
            update: UpdateConfig::default(),
            strategy: Strategy::Rolling,
            canary_percent: DEFAULT_CANARY_PERCENT,
            canary_guard: None,
            standby_ms: None,
            protocol: crate::edge::Protocol::Http,
            health: HealthProbe::default(),
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
            deploy_timeout_ms: DEFAULT_DEPLOY_TIMEOUT_MS,
            snapshots: None,
            timeouts: crate::edge::Timeouts::default(),
            trusted_proxies: Vec::new(),
            hosts: Vec::new(),
            tls: None,
            build: None,
            autoredeploy: None,
            tmpfs: Vec::new(),
            depends_on: Vec::new(),
            restart: None,
            network_aliases: BTreeMap::new(),
            pull_policy: None,
            container: Default::default(),
        }
    }

    pub fn qualified(&self) -> String {
        qualified(&self.stack, &self.name)
    }

    /// The image's repository and tag (`repo`, `tag`); tag defaults to `latest`.
    pub fn image_parts(&self) -> (String, String) {
        split_image(&self.image)
    }

    /// The same service on another tag of its image.
    pub fn with_tag(&self, tag: &str) -> Self {
        let mut s = self.clone();
        s.image = format!("{}:{tag}", self.image_parts().0);
        s
    }
}

pub use crate::image::split_image;

/// How a release's rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[ts(export)]
pub enum ReleaseResult {
    /// Being rolled out now (or the rollout was interrupted).
    InProgress,
    /// Every slot runs it and is healthy.
    Succeeded,
    /// Its rollout failed and the previous release was restored.
    Failed { reason: String },
    /// Replaced by a later release (or a rollback).
    Superseded,
    /// Runs beside the current release (blue-green or canary), healthy,
    /// waiting to be promoted or aborted.
    Candidate,
}

/// One version of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Release {
    pub number: u32,
    /// The image reference it was deployed from (`repo:tag`).
    pub image: String,
    /// The image ID (`sha256:…`) its containers run, so it never drifts.
    pub image_id: String,
    pub spec: ServiceSpec,
    /// Unix milliseconds.
    #[ts(type = "number")]
    pub created_ms: i64,
    /// `user@host` of the client that deployed it.
    pub created_by: String,
    pub result: ReleaseResult,
}

/// A rollout that started and has not finished (yet, or ever: its client
/// may have been killed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct PendingRollout {
    pub from: Option<u32>,
    pub to: u32,
    pub owner: String,
    #[ts(type = "number")]
    pub started_ms: i64,
}

/// A release running beside the current one (blue-green or canary) until
/// it is promoted (becomes current, the old one retires) or aborted
/// (removed). Which of the two gets traffic is the edge's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Candidate {
    pub release: u32,
    pub strategy: Strategy,
    /// When it became healthy beside the current release (Unix ms).
    #[ts(type = "number")]
    pub ready_ms: i64,
    /// When all traffic was last switched to it (Unix ms); the standby
    /// time counts from there.
    #[serde(default)]
    #[ts(type = "number | null")]
    pub switched_ms: Option<i64>,
}

/// Everything stored about a service on its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ServiceRecord {
    pub spec: ServiceSpec,
    /// Newest last.
    pub releases: Vec<Release>,
    /// The release every slot runs when no rollout is in progress.
    pub current: Option<u32>,
    pub rollout: Option<PendingRollout>,
    /// A release running beside `current`, not yet promoted or aborted.
    #[serde(default)]
    pub candidate: Option<Candidate>,
}

impl ServiceRecord {
    pub fn release(&self, number: u32) -> Option<&Release> {
        self.releases.iter().find(|r| r.number == number)
    }

    pub fn release_mut(&mut self, number: u32) -> Option<&mut Release> {
        self.releases.iter_mut().find(|r| r.number == number)
    }

    pub fn next_number(&self) -> u32 {
        self.releases.iter().map(|r| r.number).max().unwrap_or(0) + 1
    }

    /// The release before `current` that succeeded once: where a rollback goes.
    pub fn previous(&self) -> Option<&Release> {
        let current = self.current?;
        self.releases.iter().rev().find(|r| {
            r.number < current
                && matches!(
                    r.result,
                    ReleaseResult::Succeeded | ReleaseResult::Superseded
                )
        })
    }

    /// Releases whose containers are kept (stopped) for a fast switch: the
    /// current one and the `keep` most recent other releases that ever ran
    /// (before or after it: after a rollback, rolling forward again is
    /// just as fast).
    pub fn kept_releases(&self, keep: usize) -> Vec<u32> {
        let mut others: Vec<u32> = self
            .releases
            .iter()
            .filter(|r| !matches!(r.result, ReleaseResult::Failed { .. }))
            .map(|r| r.number)
            .filter(|n| Some(*n) != self.current)
            .collect();
        others.sort_unstable();
        let skip = others.len().saturating_sub(keep);
        let mut kept: Vec<u32> = others.into_iter().skip(skip).collect();
        kept.extend(self.current);
        kept.sort_unstable();
        kept
    }
}

/// One container of a service as `service inspect` and the GUI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub release: u32,
    pub slot: u32,
    pub running: bool,
    /// Docker HEALTHCHECK status, when the container has one.
    pub health: Option<String>,
    /// The edge's view of it on the service's first route, when routed.
    pub edge_state: Option<crate::edge::TargetState>,
    /// Gets traffic now (healthy on every route of the service).
    pub routed: bool,
}

/// A service with what runs of it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ServiceView {
    /// `stack/service`.
    pub name: String,
    pub record: ServiceRecord,
    /// The image of its definition, parsed.
    pub image: Option<crate::image::ImageRef>,
    /// Each release's image, parsed, by release number.
    pub release_images: std::collections::BTreeMap<u32, crate::image::ImageRef>,
    pub containers: Vec<ContainerView>,
    /// Who holds the rollout lock, when someone does.
    pub rollout_lock: Option<crate::edge::LockHolder>,
}

/// A service's routes on the edge: how each shares traffic between
/// releases, and what each release served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TrafficView {
    /// `stack/service`.
    pub service: String,
    /// The release the service's record calls current.
    pub current: Option<u32>,
    /// A release running beside it (blue-green or canary).
    pub candidate: Option<Candidate>,
    pub routes: Vec<crate::edge::RouteStatus>,
    /// Where the service's hosts are served, when it has some.
    pub site: Option<SiteView>,
}

/// A service's hosts as the edge serves them: on which shared ports, and
/// with which certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SiteView {
    pub hosts: Vec<String>,
    pub http_port: u16,
    /// Set when the hosts are served over HTTPS.
    pub https_port: Option<u16>,
    /// Its certificate (issuer, expiry, renewal state); `None` while there
    /// is none.
    pub certificate: Option<crate::edge::CertificateStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repo_and_tag() {
        let split = |s: &str| {
            let (r, t) = split_image(s);
            (r, t)
        };
        assert_eq!(split("nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(split("nginx:1.27"), ("nginx".into(), "1.27".into()));
        assert_eq!(
            split("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app".into(), "v2".into()),
            "a registry port is not a tag"
        );
        assert_eq!(
            split("localhost:5000/app"),
            ("localhost:5000/app".into(), "latest".into())
        );
        assert_eq!(split("app:v1@sha256:abc"), ("app".into(), "v1".into()));
    }

    #[test]
    fn rollback_goes_to_the_last_good_release_before_current() {
        let spec = ServiceSpec::new("s", "web", "app:v1");
        let release = |n: u32, result: ReleaseResult| Release {
            number: n,
            image: "app".into(),
            image_id: "sha256:x".into(),
            spec: spec.clone(),
            created_ms: 0,
            created_by: "me".into(),
            result,
        };
        let record = ServiceRecord {
            spec: spec.clone(),
            releases: vec![
                release(1, ReleaseResult::Superseded),
                release(2, ReleaseResult::Failed { reason: "x".into() }),
                release(3, ReleaseResult::Succeeded),
            ],
            current: Some(3),
            rollout: None,
            candidate: None,
        };
        assert_eq!(
            record.previous().map(|r| r.number),
            Some(1),
            "a failed release is never a rollback target"
        );
        assert_eq!(
            record.kept_releases(3),
            vec![1, 3],
            "failed releases keep nothing"
        );
    }
}
