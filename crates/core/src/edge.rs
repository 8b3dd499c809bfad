//! The edge's control protocol: what Changeover asks its edge to do, and what
//! the edge answers.
//!
//! The edge (`crates/edge`) is a proxy that runs as a container named
//! `changeover-edge` on every environment. It is controlled by running its
//! own binary inside that container through the Docker exec API
//! (`changeover-edge ctl '<request JSON>'`), which talks to the serving
//! process over a Unix socket in the container's state volume. No network
//! port is opened for control, so a remote daemon needs nothing but its
//! Docker API.
//!
//! One request, one response, both JSON. Every request is idempotent: setting
//! a route that exists updates it, adding a target that exists keeps it,
//! draining a target that is gone succeeds. That is what lets a rollout be
//! re-run after a crash.
//!
//! Deliberately left out: how requests travel (the docker adapter runs the
//! exec), and how the edge proxies (the edge crate).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Bumped when a request or response changes shape; an edge with another
/// protocol version is replaced before it is used.
pub const PROTOCOL_VERSION: u32 = 7;

/// The longest a `Request::Watch` waits before answering anyway.
pub const WATCH_LONGEST_MS: u64 = 60_000;

/// Name of the edge container on every environment.
pub const EDGE_CONTAINER: &str = "changeover-edge";
/// Name of the edge's watcher container (follows container events on the
/// Docker socket, keeps the edge's targets true).
pub const WATCH_CONTAINER: &str = "changeover-edge-watch";
/// Named volume holding the edge's routes, documents and control socket.
pub const EDGE_STATE_VOLUME: &str = "changeover-edge-state";
/// Where the state volume is mounted inside the edge container.
pub const EDGE_STATE_DIR: &str = "/state";
/// Path of the edge binary inside its image (and the demo images).
pub const EDGE_BINARY_PATH: &str = "/changeover-edge";

/// How the edge decides that a target may receive traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct HealthProbe {
    /// HTTP path to GET; a 2xx or 3xx answer passes. `None`: a TCP connect
    /// that succeeds passes.
    pub path: Option<String>,
    #[ts(type = "number")]
    pub interval_ms: u64,
    #[ts(type = "number")]
    pub timeout_ms: u64,
    /// Consecutive passes before a target is healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures before a healthy target is taken out of rotation.
    pub unhealthy_threshold: u32,
    /// The container's Docker HEALTHCHECK decides instead (a UDP-only
    /// route of a service that has one): the rollout waits for it before
    /// adding the target, the edge's watcher takes a container off when
    /// Docker calls it unhealthy and puts it back once healthy; the edge
    /// checks nothing itself.
    #[serde(default)]
    pub docker: bool,
}

impl Default for HealthProbe {
    fn default() -> Self {
        Self {
            path: None,
            interval_ms: 1000,
            timeout_ms: 1000,
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            docker: false,
        }
    }
}

/// One listener on the edge: a host port, forwarding to a service's targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RouteSpec {
    /// Host port the edge listens on (all interfaces).
    pub port: u16,
    /// `stack/service` this route belongs to.
    pub service: String,
    pub health: HealthProbe,
    /// How long in-flight requests may take to finish when a target drains.
    #[ts(type = "number")]
    pub drain_timeout_ms: u64,
    /// HTTP (the default) or plain TCP.
    #[serde(default)]
    pub protocol: Protocol,
    /// UDP on the same port: none, beside the TCP listener, or alone.
    #[serde(default)]
    pub udp: Udp,
    /// How long clients and targets may take (`x-changeover.timeouts`).
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Addresses (`10.0.0.5`) or networks (`10.0.0.0/8`) of proxies in
    /// front of the edge whose `X-Forwarded-For`/`-Proto` are believed;
    /// from anyone else those headers are replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Host names (`app.example.test`, lower case) this route also answers
    /// on the edge's shared HTTP and HTTPS ports ([`EdgeConfig`]), chosen
    /// by `Host` and by TLS SNI (`x-changeover.hosts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// HTTPS for `hosts` on the shared HTTPS port (`x-changeover.tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SiteTls>,
}

/// How a route's hosts are served over HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SiteTls {
    pub certificate: CertificateSource,
    /// Answer HTTPS responses with `Strict-Transport-Security` (a year).
    #[serde(default)]
    pub hsts: bool,
}

/// Where a site's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum CertificateSource {
    /// Given as files (sent with [`Request::CertPut`], kept in the edge's
    /// state volume).
    Files,
    /// Obtained and renewed by ACME.
    Acme,
}

/// The edge's own settings (`changeover edge config`), kept in its state
/// volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase", default)]
#[ts(export)]
pub struct EdgeConfig {
    /// The shared port for plain HTTP of every route with `hosts`.
    pub http_port: u16,
    /// The shared port for HTTPS of every route with `hosts` and `tls`.
    pub https_port: u16,
    /// The ACME directory certificates are ordered from (`None`: Let's
    /// Encrypt's).
    pub acme_directory: Option<String>,
    /// PEM of a CA to trust for the ACME directory (a test CA like pebble's).
    pub acme_ca: Option<String>,
    pub acme_email: Option<String>,
    /// How the ACME CA checks that the edge serves a name.
    pub acme_challenge: AcmeChallenge,
}

/// The ACME challenge the edge answers (RFC 8555 §8.3, RFC 8737).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub enum AcmeChallenge {
    /// A token under `/.well-known/acme-challenge/` on the shared HTTP port
    /// (which must be port 80 as the CA sees it).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate on the shared HTTPS port (443 as the CA sees
    /// it); no plain HTTP needed.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            http_port: 80,
            https_port: 443,
            acme_directory: None,
            acme_ca: None,
            acme_email: None,
            acme_challenge: AcmeChallenge::Http01,
        }
    }
}

/// A site's certificate as the edge holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct CertificateStatus {
    /// `stack/service` it serves.
    pub service: String,
    pub source: CertificateSource,
    /// The names it covers (its subject alternative names).
    pub names: Vec<String>,
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// Unix milliseconds it stops being valid.
    #[ts(type = "number")]
    pub not_after_ms: i64,
    /// What the edge is doing about it (`valid`, `renewing`, the last
    /// error...), for the window.
    pub state: String,
}

/// Let's Encrypt's directory: where certificates come from unless the
/// edge is told otherwise.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// PEM text that must never be printed: its `Debug` says only how long it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretPem(pub String);

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretPem({} bytes)", self.0.len())
    }
}

/// Whether `name` is a host name a site may have: lower-case labels of
/// letters, digits and `-` (not at either end), dot separated, at most 253
/// characters, not an IP address. A leading `*.` makes it a wildcard for
/// one label.
pub fn is_site_host(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if bare.is_empty() || name.len() > 253 || bare.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    bare.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) && bare.contains('.')
}

/// How long the edge waits, per route. A client past a timeout is cut off
/// (or answered 408) and it never counts against a release; a target past
/// `response_ms` is answered 504 and counts as its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase", default)]
#[ts(export)]
pub struct Timeouts {
    /// A request's head, from its first byte to its end.
    #[ts(type = "number")]
    pub header_ms: u64,
    /// A kept-alive connection with no request on it.
    #[ts(type = "number")]
    pub idle_ms: u64,
    /// A request body: the longest wait for its next piece.
    #[ts(type = "number")]
    pub body_ms: u64,
    /// A target: from the request sent to the head of its answer.
    #[ts(type = "number")]
    pub response_ms: u64,
    /// A UDP flow with no datagram either way: forgotten (its next
    /// datagram picks a target afresh).
    #[ts(type = "number")]
    pub udp_idle_ms: u64,
}

impl Default for Timeouts {
    /// What peers in this role use: HAProxy's `timeout http-request 10s`,
    /// nginx's 60 s for bodies between reads (30 s here) and for a
    /// target's answer; idle keep-alive as nginx's (75 s), rounded; UDP
    /// flows as Linux conntrack's and HAProxy's 30 s.
    fn default() -> Self {
        Self {
            header_ms: 10_000,
            idle_ms: 60_000,
            body_ms: 30_000,
            response_ms: 60_000,
            udp_idle_ms: 30_000,
        }
    }
}

/// Whether `addr` is one of `trusted` (addresses or `addr/bits` networks,
/// IPv4 or IPv6). Entries that do not parse match nothing.
pub fn is_trusted(addr: std::net::IpAddr, trusted: &[String]) -> bool {
    trusted
        .iter()
        .any(|t| parse_network(t).is_some_and(|(net, bits)| in_network(addr, net, bits)))
}

/// `10.0.0.0/8` or `10.0.0.5` as (network, prefix bits); `None` when it is
/// neither.
pub fn parse_network(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, bits) = match text.trim().split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text.trim(), None),
    };
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max)?,
        None => max,
    };
    Some((addr, bits))
}

fn in_network(addr: std::net::IpAddr, net: std::net::IpAddr, bits: u8) -> bool {
    use std::net::IpAddr;
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    let (a, n, width) = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (n >> shift)
}

/// The edge's client connections, and what its limit did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ConnectionStats {
    pub open: u32,
    pub limit: u32,
    /// New connections closed at once: every open one was busy.
    #[ts(type = "number")]
    pub shed: u64,
    /// Slow or idle connections closed to make room for new ones.
    #[ts(type = "number")]
    pub evicted: u64,
}

/// What a route carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum Protocol {
    /// HTTP/1.1 and h2c, per request: shares, stickiness, preview,
    /// maintenance page, per-request metrics.
    #[default]
    Http,
    /// Any TCP stream (databases, Redis…), per connection: a new connection
    /// goes by the shares; an open one stays on its target until it closes
    /// or the target's drain times out.
    Tcp,
}

/// Whether a route carries UDP datagrams on its port. UDP is carried per
/// client flow (a client's address and port): a flow's first datagram
/// picks a target by the shares, and the flow stays on it until it is idle
/// for `Timeouts::udp_idle_ms` or the target is removed (drained to the
/// end); a drain waits for the target's flows like for its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum Udp {
    /// TCP only (HTTP or plain TCP, by `protocol`).
    #[default]
    No,
    /// TCP as `protocol` says, and UDP on the same port number.
    Also,
    /// UDP only: no TCP listener.
    Only,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// One container port a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TargetSpec {
    /// The container's name (stable across the edge's restarts).
    pub id: String,
    /// `ip:port` on the container's network.
    pub addr: String,
    /// Release number the container runs.
    pub release: u32,
}

/// Where a target is in its life on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum TargetState {
    /// Added, being health-checked, gets no traffic yet.
    Adding,
    /// Passing its checks and getting traffic.
    Healthy,
    /// Failed its checks; gets no traffic until it passes again.
    Unhealthy,
    /// Gets no new requests; in-flight ones are finishing.
    Draining,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Adding => "adding",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Draining => "draining",
        }
    }
}

/// A target as the edge sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TargetStatus {
    #[serde(flatten)]
    pub spec: TargetSpec,
    pub state: TargetState,
    /// Requests being served right now.
    #[ts(type = "number")]
    pub in_flight: u64,
    /// Requests served since the target was added.
    #[ts(type = "number")]
    pub requests: u64,
    /// What the last health check saw ("200 OK", "connection refused", …).
    pub last_check: Option<String>,
    /// Milliseconds from being added to the first passing check, once passed.
    #[ts(type = "number | null")]
    pub healthy_after_ms: Option<u64>,
}

/// A route with its targets, how it shares traffic, and what each release
/// served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RouteStatus {
    #[serde(flatten)]
    pub spec: RouteSpec,
    pub targets: Vec<TargetStatus>,
    #[serde(default)]
    pub policy: TrafficPolicy,
    /// Per release, since the edge started (newest release last).
    #[serde(default)]
    pub metrics: Vec<ReleaseMetrics>,
}

/// Cookie that keeps a client on one release while a split holds.
pub const STICKY_COOKIE: &str = "changeover-release";
/// Header (or cookie of the same name) that sends a request to the preview
/// release.
pub const PREVIEW_HEADER: &str = "x-changeover-preview";
/// Cookie form of [`PREVIEW_HEADER`].
pub const PREVIEW_COOKIE: &str = "changeover-preview";

/// How a route shares its requests among the releases it has targets of.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TrafficPolicy {
    /// Each release's share of new requests (relative). Empty: every
    /// healthy target alike, whatever its release (a rolling deploy). A
    /// release listed with 0 gets nothing (standby). When no listed release
    /// with a share has a healthy target, any healthy target serves.
    pub weights: Vec<Share>,
    /// Requests carrying this token go to this release whatever the shares.
    pub preview: Option<Preview>,
    /// Paused: every request is answered 503 with this text; the containers
    /// are left alone.
    pub maintenance: Option<String>,
    /// Watches one release (a canary): when its 5xx-or-failed share over the
    /// window goes past the limit, the edge itself takes its share away and
    /// says why in `tripped`.
    #[serde(default)]
    pub guard: Option<Guard>,
    /// Why the guard took the watched release's share away (the client
    /// then removes the release and records this in its history).
    #[serde(default)]
    pub tripped: Option<String>,
}

/// An automatic abort: the edge's side of `x-changeover.canary.guard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Guard {
    pub release: u32,
    /// Trips when more than this percent of the release's requests in the
    /// window got a 5xx or no answer.
    pub max_5xx_percent: u32,
    #[ts(type = "number")]
    pub window_ms: u64,
    /// Not before the release served this many requests in the window.
    #[ts(type = "number")]
    pub min_requests: u64,
}

/// One release's share of a route's new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Share {
    pub release: u32,
    pub weight: u32,
}

/// An allowlist: who sees a release before anyone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Preview {
    pub release: u32,
    /// Sent as the `x-changeover-preview` header or `changeover-preview` cookie.
    pub token: String,
}

/// What one release served on one route.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ReleaseMetrics {
    pub release: u32,
    #[ts(type = "number")]
    pub requests: u64,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx.
    #[ts(type = "[number, number, number, number]")]
    pub responses: [u64; 4],
    /// Requests that got no response from the release (connection refused,
    /// reset, timeout): the edge answered 502 or retried elsewhere.
    #[ts(type = "number")]
    pub failures: u64,
    /// Response body bytes sent to clients.
    #[ts(type = "number")]
    pub bytes: u64,
    #[ts(type = "number")]
    pub in_flight: u64,
    /// Time to response headers, in microseconds (upper bounds of the
    /// histogram bucket the percentile falls in); `None` before any response.
    #[ts(type = "number | null")]
    pub p50_us: Option<u64>,
    #[ts(type = "number | null")]
    pub p95_us: Option<u64>,
    #[ts(type = "number | null")]
    pub p99_us: Option<u64>,
}

/// The edge of an environment as `changeover edge status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct EdgeStatus {
    /// The edge container exists and runs.
    pub running: bool,
    /// The image it runs (`changeover-edge:<binary digest>`).
    pub image: Option<String>,
    /// The image this Changeover would run; `None` when its edge binary is
    /// not at hand.
    pub wanted: Option<String>,
    /// Runs the wanted image (an older build keeps working; `edge upgrade`
    /// replaces it).
    pub up_to_date: bool,
    pub protocol: Option<u32>,
    #[ts(type = "number | null")]
    pub uptime_ms: Option<u64>,
    /// Routes (listening ports) it serves.
    pub routes: usize,
}

/// A lock as held on the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct LockHolder {
    pub owner: String,
    /// Unix milliseconds when it was taken.
    #[ts(type = "number")]
    pub since_ms: i64,
    /// Milliseconds until it expires unless refreshed.
    #[ts(type = "number")]
    pub expires_in_ms: i64,
}

/// What Changeover asks the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Request {
    /// Protocol version, binary digest, uptime.
    Hello,
    /// Create or update a route; opens its listener when new.
    RouteSet {
        route: RouteSpec,
    },
    /// Close a route's listener and forget it (in-flight requests finish).
    RouteRemove {
        port: u16,
    },
    /// All routes, or those of one `stack/service`.
    Routes {
        service: Option<String>,
    },
    /// Add a target to a route (state `adding`), and optionally wait until it
    /// is healthy (then it gets traffic) or the wait runs out.
    TargetAdd {
        port: u16,
        target: TargetSpec,
        wait_healthy_ms: Option<u64>,
    },
    /// Stop sending new requests to a target, wait for its in-flight ones
    /// (up to the route's drain timeout), then remove it.
    TargetDrain {
        port: u16,
        id: String,
    },
    /// Remove a target at once (it never got traffic, or it is gone).
    TargetRemove {
        port: u16,
        id: String,
    },
    /// Sets how a route shares its traffic (an atomic switch: every request
    /// after the answer follows the new policy).
    TrafficSet {
        port: u16,
        policy: TrafficPolicy,
    },
    /// Could the edge listen on this host port? (A port the edge already
    /// listens on for `service` counts as free.)
    PortCheck {
        port: u16,
        service: String,
        /// Which of TCP and UDP must be free (before protocol 7: TCP).
        #[serde(default)]
        udp: Udp,
    },
    /// Store the certificate chain and private key (PEM) of a route's
    /// `tls` given as files. The edge checks that they parse and belong
    /// together, keeps them in its state volume (readable by it alone),
    /// and never prints the key. Only over a control session: a request
    /// given on a command line would be visible to the daemon's users.
    CertPut {
        service: String,
        cert_pem: String,
        key_pem: SecretPem,
    },
    /// The edge's settings and its sites' certificates.
    ConfigGet,
    /// Changes the edge's settings (the shared ports reopen when they change).
    ConfigSet {
        config: EdgeConfig,
    },
    /// Read a stored document (service definitions, release history).
    DocGet {
        key: String,
    },
    /// Store a document. With `expect`, fails unless the stored revision is
    /// that one (0 = must not exist yet).
    DocPut {
        key: String,
        value: serde_json::Value,
        expect: Option<u64>,
    },
    /// Keys of stored documents under a prefix.
    DocList {
        prefix: String,
    },
    /// Forget a stored document (fine when it is not there). With `expect`,
    /// fails unless the stored revision is that one.
    DocDelete {
        key: String,
        expect: Option<u64>,
    },
    /// Answers `changed` as soon as the edge's state generation is past
    /// `after` — anything that changes a route, a target's state, a policy,
    /// a document or who holds a lock bumps it — or when `timeout_ms` (at
    /// most [`WATCH_LONGEST_MS`]) runs out, with the generation then. One
    /// kept-open session waiting on this is how clients follow the edge
    /// without asking it again and again.
    Watch {
        after: u64,
        timeout_ms: u64,
    },
    /// Take a lock (or refresh it when `owner` already holds it). With
    /// `takeOver`, also take it when that exact owner holds it (the caller
    /// knows that owner is dead).
    LockAcquire {
        key: String,
        owner: String,
        ttl_ms: u64,
        #[serde(default)]
        take_over: Option<String>,
    },
    LockRelease {
        key: String,
        owner: String,
    },
    /// Who holds a lock (answer `lock-held`), or `ok` when nobody does.
    LockGet {
        key: String,
    },
}

/// The edge's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "result",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Response {
    Ok,
    Hello {
        protocol: u32,
        version: String,
        uptime_ms: u64,
        /// The edge's client connections (edges before protocol 5: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<ConnectionStats>,
    },
    Routes {
        routes: Vec<RouteStatus>,
    },
    Config {
        config: EdgeConfig,
        certificates: Vec<CertificateStatus>,
    },
    Target {
        target: TargetStatus,
    },
    Drained {
        /// Requests still in flight when the drain timeout ran out (0 = clean).
        abandoned: u64,
        took_ms: u64,
    },
    Doc {
        value: Option<serde_json::Value>,
        revision: u64,
    },
    Keys {
        keys: Vec<String>,
    },
    /// The state generation (see `Request::Watch`).
    Changed {
        generation: u64,
    },
    Locked {
        holder: LockHolder,
    },
    /// The lock is held by someone else.
    LockHeld {
        holder: LockHolder,
    },
    Error {
        code: EdgeErrorCode,
        message: String,
    },
}

/// Why the edge refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeErrorCode {
    BadRequest,
    UnknownRoute,
    PortInUse,
    /// `TargetAdd` waited and the target did not become healthy.
    Unhealthy,
    /// `DocPut` with an `expect` that no longer matches.
    Conflict,
    Internal,
}

/// The first line `changeover-edge ctl -` prints: this edge keeps a control
/// session open, one request per line (an older edge answers `-` with a
/// bad-request error instead).
pub const CTL_SESSION_GREETING: &str = r#"{"session":1}"#;

/// Documents stored on the edge, by key.
pub fn service_doc_key(stack: &str, service: &str) -> String {
    format!("services/{stack}/{service}")
}

/// Lock key guarding rollouts of one service.
pub fn rollout_lock_key(stack: &str, service: &str) -> String {
    format!("rollout/{stack}/{service}")
}

/// Labels every container and volume Changeover manages carries.
pub mod labels {
    pub const MANAGED: &str = "dev.changeover.managed";
    pub const STACK: &str = "dev.changeover.stack";
    pub const SERVICE: &str = "dev.changeover.service";
    pub const RELEASE: &str = "dev.changeover.release";
    pub const SLOT: &str = "dev.changeover.slot";
    /// On images Changeover builds: sha256 of the edge binary inside.
    pub const EDGE_DIGEST: &str = "dev.changeover.edge-digest";
    /// On the edge image: [`super::PROTOCOL_VERSION`].
    pub const EDGE_PROTOCOL: &str = "dev.changeover.edge-protocol";
}

/// A small map type used in documents, kept sorted for stable JSON.
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_hosts_are_lower_case_dns_names() {
        for good in ["app.example.test", "a-b.c1.test", "*.example.test", "x.y"] {
            assert!(is_site_host(good), "{good}");
        }
        for bad in [
            "",
            "localhost",
            "App.example.test",
            "a..test",
            "-a.test",
            "a-.test",
            "127.0.0.1",
            "a.test:80",
            "*.",
            "a.*.test",
            "a_b.test",
            &format!("{}.test", "a".repeat(64)),
        ] {
            assert!(!is_site_host(bad), "{bad:?}");
        }
        let key = SecretPem("-----BEGIN PRIVATE KEY-----".into());
        assert_eq!(format!("{key:?}"), "SecretPem(27 bytes)");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let trusted = vec![
            "10.0.0.0/8".to_string(),
            "192.168.1.7".into(),
            "fd00::/8".into(),
            "nonsense".into(),
        ];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(is_trusted(ip("10.200.3.4"), &trusted));
        assert!(is_trusted(ip("192.168.1.7"), &trusted));
        assert!(!is_trusted(ip("192.168.1.8"), &trusted));
        assert!(!is_trusted(ip("11.0.0.1"), &trusted));
        assert!(is_trusted(ip("fd12::1"), &trusted));
        assert!(
            is_trusted(ip("::ffff:10.1.2.3"), &trusted),
            "IPv4 seen on an IPv6 socket"
        );
        assert!(!is_trusted(ip("127.0.0.1"), &[]));
        assert!(is_trusted(ip("8.8.8.8"), &["0.0.0.0/0".to_string()]));
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("10.0.0/8"), None);
    }

    #[test]
    fn routes_from_older_clients_get_the_default_timeouts() {
        let old = r#"{"port":8080,"service":"s/web","health":{"path":null,"intervalMs":1000,"timeoutMs":1000,"healthyThreshold":1,"unhealthyThreshold":3},"drainTimeoutMs":1000}"#;
        let spec: RouteSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.timeouts, Timeouts::default());
        assert!(spec.trusted_proxies.is_empty());
        let partial: Timeouts = serde_json::from_str(r#"{"headerMs":500}"#).unwrap();
        assert_eq!(partial.header_ms, 500);
        assert_eq!(partial.idle_ms, Timeouts::default().idle_ms);
    }

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = Request::TargetAdd {
            port: 18080,
            target: TargetSpec {
                id: "s-web-r2-s0".into(),
                addr: "172.18.0.5:8080".into(),
                release: 2,
            },
            wait_healthy_ms: Some(5000),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains("\"op\":\"target-add\""),
            "the op tag names the request: {text}"
        );
        let back: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r, "a request survives the trip through JSON");
    }
}
