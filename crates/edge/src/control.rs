//! The control side of the edge: the serving process's state, the Unix
//! control socket, and the `ctl` client the Docker exec API runs.
//!
//! Besides routes, the edge keeps two things for Changeover on the
//! environment, so every client of one daemon sees the same:
//! - documents (service definitions, release history) in `docs.json`, each
//!   with a revision for compare-and-set writes;
//! - locks with an owner and a time to live (one rollout per service at a
//!   time, across machines). Locks live in memory: when the edge restarts,
//!   they are gone, and the next rollout finds any half-done work from the
//!   containers' labels.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use changeover_core::edge::{
    EdgeConfig, EdgeErrorCode, LockHolder, Request, Response, RouteSpec, TargetSpec, TargetState,
    CTL_SESSION_GREETING, PROTOCOL_VERSION, WATCH_LONGEST_MS,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::proxy;
use crate::proxy::Front;
use crate::routes::{Route, Table};
use crate::sites::{RouteHosts, Sites};
use crate::store::StoredFile;

pub(crate) const SOCKET: &str = "control.sock";

/// The serving process's state.
pub struct Edge {
    pub table: Table,
    /// Host names, certificates and the edge's settings.
    pub sites: Arc<Sites>,
    /// Wakes the task that keeps ACME certificates.
    pub acme: Arc<crate::acme::Acme>,
    /// The shared HTTP and HTTPS listeners, while some route has hosts.
    shared: Mutex<SharedPorts>,
    /// One change of the shared listeners at a time.
    shared_change: tokio::sync::Mutex<()>,
    docs: Mutex<Docs>,
    locks: Mutex<HashMap<String, Lock>>,
    docs_file: Option<StoredFile>,
    started: Instant,
    /// Handed over to a new edge: control requests are refused.
    retired: std::sync::atomic::AtomicBool,
}

#[derive(Default, Serialize, Deserialize)]
struct Docs {
    entries: BTreeMap<String, Doc>,
}

impl Docs {
    /// The stored revision of `key` (0: none), or the refusal when it is
    /// not the `expect`ed one.
    fn revision_of(&self, key: &str, expect: Option<u64>) -> Result<u64, Response> {
        let current = self.entries.get(key).map(|d| d.revision).unwrap_or(0);
        match expect {
            Some(expect) if expect != current => Err(error(
                EdgeErrorCode::Conflict,
                format!("{key} changed meanwhile (revision {current}, expected {expect})"),
            )),
            _ => Ok(current),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Doc {
    value: serde_json::Value,
    revision: u64,
}

/// The listeners of the shared ports, with their ports.
#[derive(Default)]
struct SharedPorts {
    http: Option<(u16, proxy::Listener)>,
    https: Option<(u16, proxy::Listener)>,
}

fn route_hosts(route: &Route) -> RouteHosts<'_> {
    RouteHosts {
        port: route.spec.port,
        service: &route.spec.service,
        hosts: &route.spec.hosts,
        tls: route.spec.tls,
    }
}

struct Lock {
    owner: String,
    since_ms: i64,
    expires: Instant,
}

fn error(code: EdgeErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

impl Edge {
    /// An edge keeping its state in `dir` (`None`: in memory, for tests).
    pub fn new(dir: Option<&Path>) -> Result<Arc<Self>, String> {
        let docs_file = dir.map(|d| StoredFile::new(d.join("docs.json")));
        let docs = match &docs_file {
            Some(file) => {
                let loaded = file
                    .load(|bytes| serde_json::from_slice::<Docs>(bytes).map_err(|e| e.to_string()));
                for note in loaded.notes {
                    eprintln!("changeover-edge: {note}");
                }
                loaded.value
            }
            None => Docs::default(),
        };
        let table = Table::new(dir);
        for note in table.load() {
            eprintln!("changeover-edge: {note}");
        }
        let (sites, notes) = Sites::new(dir)?;
        for note in notes {
            eprintln!("changeover-edge: {note}");
        }
        sites.reindex(table.read().values().map(route_hosts));
        Ok(Arc::new(Self {
            table,
            sites: Arc::new(sites),
            acme: Arc::new(crate::acme::Acme::new()),
            shared: Mutex::new(SharedPorts::default()),
            shared_change: tokio::sync::Mutex::new(()),
            docs: Mutex::new(docs),
            locks: Mutex::new(HashMap::new()),
            docs_file,
            started: Instant::now(),
            retired: Default::default(),
        }))
    }

    /// Opens the listeners and starts the checks of the routes loaded from
    /// the state directory, on the sockets handed over by the edge before
    /// this one where there are some.
    pub async fn resume(self: &Arc<Self>, mut given: BTreeMap<u16, Vec<std::net::TcpListener>>) {
        let ports: Vec<u16> = self.table.read().keys().copied().collect();
        for port in ports {
            let opened = match given.remove(&port) {
                Some(sockets) => proxy::open(self.clone(), port, Front::Port(port), sockets).await,
                None => proxy::listen(self.clone(), port, Front::Port(port)).await,
            };
            match opened {
                Ok(task) => {
                    let mut routes = self.table.lock();
                    if let Some(route) = routes.get_mut(&port) {
                        route.listener = Some(task);
                        let probe = route.spec.health.clone();
                        for t in &route.targets {
                            crate::health::start(t, probe.clone());
                        }
                    }
                }
                Err(e) => eprintln!("changeover-edge: cannot listen on port {port} again: {e}"),
            }
        }
        if let Err(e) = self.open_shared(&mut given).await {
            eprintln!("changeover-edge: {e}");
        }
        // Sockets of routes this edge does not know (removed meanwhile)
        // close as `given` drops.
    }

    /// Opens the shared ports the routes need (on sockets `given` by the
    /// edge before, where there are some) and closes those they no longer
    /// need. A port that cannot be opened is the caller's error; what was
    /// open stays open.
    async fn open_shared(
        self: &Arc<Self>,
        given: &mut BTreeMap<u16, Vec<std::net::TcpListener>>,
    ) -> Result<(), String> {
        let _one = self.shared_change.lock().await;
        let (want_http, want_https) = Sites::wanted(self.table.read().values().map(route_hosts));
        let config = self.sites.config();
        let (have_http, have_https) = {
            let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            (
                s.http.as_ref().map(|(p, _)| *p),
                s.https.as_ref().map(|(p, _)| *p),
            )
        };
        let mut opened = Vec::new();
        for (want, have, port, front, what) in [
            (
                want_http,
                have_http,
                config.http_port,
                Front::SharedHttp,
                "HTTP",
            ),
            (
                want_https,
                have_https,
                config.https_port,
                Front::SharedHttps,
                "HTTPS",
            ),
        ] {
            if !want || have == Some(port) {
                continue;
            }
            let listener = match given.remove(&port) {
                Some(sockets) => proxy::open(self.clone(), port, front, sockets).await,
                None => proxy::listen(self.clone(), port, front).await,
            };
            match listener {
                Ok(l) => opened.push((front, port, l)),
                Err(e) => {
                    return Err(format!(
                        "cannot listen on the shared {what} port {port}: {e} (another port: changeover edge config --{}-port N)",
                        what.to_ascii_lowercase()
                    ))
                }
            }
        }
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        for (front, port, l) in opened {
            if front == Front::SharedHttp {
                s.http = Some((port, l));
            } else {
                s.https = Some((port, l));
            }
        }
        if !want_http || s.http.as_ref().is_some_and(|(p, _)| *p != config.http_port) {
            s.http = None;
        }
        if !want_https
            || s.https
                .as_ref()
                .is_some_and(|(p, _)| *p != config.https_port)
        {
            s.https = None;
        }
        Ok(())
    }

    /// The shared ports open now.
    fn shared_ports(&self) -> Vec<u16> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.http
            .iter()
            .chain(s.https.iter())
            .map(|(p, _)| *p)
            .collect()
    }

    /// Refuses (or takes again) control requests: a hand-over is running.
    pub fn set_retired(&self, retired: bool) {
        self.retired
            .store(retired, std::sync::atomic::Ordering::SeqCst);
        self.table.set_retired(retired);
        self.acme.set_paused(retired);
    }

    /// Copies of every route's listening sockets, with their ports.
    pub fn listening_sockets(&self) -> Vec<(u16, std::net::TcpListener)> {
        let mut out = Vec::new();
        {
            let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            for (port, l) in s.http.iter().chain(s.https.iter()) {
                match l.sockets() {
                    Ok(sockets) => out.extend(sockets.into_iter().map(|s| (*port, s))),
                    Err(e) => eprintln!("changeover-edge: cannot hand over port {port}: {e}"),
                }
            }
        }
        for (port, route) in self.table.read().iter() {
            if let Some(l) = &route.listener {
                match l.sockets() {
                    Ok(sockets) => out.extend(sockets.into_iter().map(|s| (*port, s))),
                    Err(e) => eprintln!("changeover-edge: cannot hand over port {port}: {e}"),
                }
            }
        }
        out
    }

    /// Stops accepting on every route (a new edge accepts now); open
    /// connections are served to their end.
    pub async fn stop_accepting(&self) {
        proxy::DRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
        let listeners: Vec<proxy::Listener> = self
            .table
            .lock()
            .values_mut()
            .filter_map(|r| r.listener.take())
            .collect();
        let shared = std::mem::take(&mut *self.shared.lock().unwrap_or_else(|p| p.into_inner()));
        // Closed as they drop.
        drop(listeners);
        drop(shared);
    }

    /// On SIGTERM (`docker stop`): closes every listener, so no new
    /// connection comes, and waits while requests are in flight or clients
    /// keep connections open (each gets `Connection: close` on its next
    /// response), up to the longest drain timeout of the routes. Answers
    /// (requests still in flight when it gave up, time taken).
    pub async fn drain_for_exit(&self) -> (u64, Duration) {
        let started = Instant::now();
        proxy::DRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_accepting().await;
        let longest = self
            .table
            .read()
            .values()
            .map(|r| r.spec.drain_timeout_ms)
            .max()
            .unwrap_or(0);
        let in_flight = || -> u64 {
            self.table
                .read()
                .values()
                .flat_map(|r| r.targets.iter())
                .map(|t| t.in_flight.load(std::sync::atomic::Ordering::SeqCst))
                .sum()
        };
        let deadline = started + Duration::from_millis(longest);
        let open = || crate::limits::conns().counts().0;
        while (in_flight() > 0 || open() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (in_flight(), started.elapsed())
    }

    /// Forgets locks whose time is up, so watching clients see them go.
    fn expire_locks(&self) {
        let now = Instant::now();
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        let before = locks.len();
        locks.retain(|_, l| l.expires > now);
        if locks.len() != before {
            crate::changes::bump();
        }
    }

    /// Runs every route's canary guard; saves the routes when one tripped.
    fn check_guards(&self) {
        let now = Instant::now();
        let mut tripped = Vec::new();
        for (port, route) in self.table.lock().iter_mut() {
            if let Some(why) = route.check_guard(now) {
                tripped.push(format!("port {port} ({}): {why}", route.spec.service));
            }
        }
        if !tripped.is_empty() {
            for t in &tripped {
                eprintln!("changeover-edge: {t}");
            }
            // Nobody asked: the log is the only place to say it. The next
            // save writes the tripped policy with everything else.
            if let Err(e) = self.table.save() {
                eprintln!("changeover-edge: the tripped guard could not be saved: {e}");
            }
        }
    }

    /// Saves the routes after a change a client asked for: the change is
    /// live; a failed save is that client's error (it must not read "ok").
    fn save_routes(&self) -> Result<(), Response> {
        self.table.save().map_err(|e| {
            error(
                EdgeErrorCode::Internal,
                format!("the change is in effect but could not be saved, so a restart would lose it: {e}"),
            )
        })
    }

    /// `answer`, or the failed save's error.
    fn saved(&self, answer: Response) -> Response {
        match self.save_routes() {
            Ok(()) => answer,
            Err(e) => e,
        }
    }

    /// A request to this target could not connect: take it out of rotation
    /// now; its health checks bring it back when it answers again.
    pub fn mark_unreachable(&self, guard: &crate::routes::InFlight, why: &str) {
        let t = &guard.0;
        let mut h = t.health();
        if h.state == TargetState::Healthy {
            h.state = TargetState::Unhealthy;
            h.passes = 0;
            h.last_check = Some(format!("request failed: {why}"));
            drop(h);
            t.changed.notify_waiters();
            crate::changes::bump();
        }
    }

    pub async fn handle(self: &Arc<Self>, request: Request) -> Response {
        if self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return error(
                EdgeErrorCode::Internal,
                "this edge is handing over to a new one; try again in a moment",
            );
        }
        match request {
            Request::Hello => Response::Hello {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_ms: self.started.elapsed().as_millis() as u64,
                connections: Some({
                    let conns = crate::limits::conns();
                    let (open, shed, evicted) = conns.counts();
                    changeover_core::edge::ConnectionStats {
                        open: open as u32,
                        limit: conns.limit() as u32,
                        shed,
                        evicted,
                    }
                }),
            },
            Request::RouteSet { route } => self.route_set(route).await,
            Request::RouteRemove { port } => {
                let removed = self.table.lock().remove(&port);
                if let Some(route) = removed {
                    // Its sockets close as it drops.
                    drop(route.listener);
                    for t in &route.targets {
                        t.stop_checks();
                        t.close();
                    }
                    self.sites
                        .reindex(self.table.read().values().map(route_hosts));
                    self.acme.wake();
                    if let Err(e) = self.open_shared(&mut BTreeMap::new()).await {
                        eprintln!("changeover-edge: {e}");
                    }
                }
                self.saved(Response::Ok)
            }
            Request::CertPut {
                service,
                cert_pem,
                key_pem,
            } => {
                let serving: Vec<String> = self
                    .table
                    .read()
                    .values()
                    .filter(|r| r.spec.service == service && r.spec.tls.is_some())
                    .flat_map(|r| r.spec.hosts.iter().cloned())
                    .collect();
                match self
                    .sites
                    .put_cert(&service, &cert_pem, &key_pem.0, &serving)
                {
                    Ok(()) => {
                        crate::changes::bump();
                        Response::Ok
                    }
                    Err(e) => error(EdgeErrorCode::BadRequest, format!("{service}: {e}")),
                }
            }
            Request::ConfigGet => Response::Config {
                config: self.sites.config(),
                certificates: self.sites.certificates(),
            },
            Request::ConfigSet { config } => self.config_set(config).await,
            Request::Routes { service } => Response::Routes {
                routes: self
                    .table
                    .read()
                    .values()
                    .filter(|r| service.as_ref().is_none_or(|s| &r.spec.service == s))
                    .map(Route::status)
                    .collect(),
            },
            Request::TargetAdd {
                port,
                target,
                wait_healthy_ms,
            } => self.target_add(port, target, wait_healthy_ms).await,
            Request::TargetDrain { port, id } => self.target_drain(port, &id).await,
            Request::TargetRemove { port, id } => {
                let removed = {
                    let mut routes = self.table.lock();
                    routes.get_mut(&port).and_then(|r| {
                        let i = r.targets.iter().position(|t| t.spec.id == id)?;
                        Some(r.targets.remove(i))
                    })
                };
                match removed {
                    Some(t) => {
                        t.stop_checks();
                        t.close();
                        self.saved(Response::Ok)
                    }
                    None => Response::Ok,
                }
            }
            Request::TrafficSet { port, policy } => {
                if policy
                    .preview
                    .as_ref()
                    .is_some_and(|p| p.token.trim().is_empty())
                {
                    return error(
                        EdgeErrorCode::BadRequest,
                        "a preview token cannot be empty".to_string(),
                    );
                }
                let mut routes = self.table.lock();
                let Some(route) = routes.get_mut(&port) else {
                    return error(
                        EdgeErrorCode::UnknownRoute,
                        format!("no route on port {port}"),
                    );
                };
                // Under the table lock: the next request picks by the new policy.
                route.set_policy(policy);
                drop(routes);
                self.saved(Response::Ok)
            }
            Request::PortCheck { port, service } => {
                if self.shared_ports().contains(&port) {
                    return error(
                        EdgeErrorCode::PortInUse,
                        format!(
                            "port {port} is the edge's shared port for sites (x-changeover.hosts)"
                        ),
                    );
                }
                if let Some(r) = self.table.read().get(&port) {
                    return if r.spec.service == service {
                        Response::Ok
                    } else {
                        error(
                            EdgeErrorCode::PortInUse,
                            format!("port {port} is already routed to {}", r.spec.service),
                        )
                    };
                }
                match std::net::TcpListener::bind(("0.0.0.0", port)) {
                    Ok(_) => Response::Ok,
                    Err(e) => error(
                        EdgeErrorCode::PortInUse,
                        format!("port {port} is taken on the host by another process ({e})"),
                    ),
                }
            }
            Request::DocGet { key } => {
                let docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
                match docs.entries.get(&key) {
                    Some(d) => Response::Doc {
                        value: Some(d.value.clone()),
                        revision: d.revision,
                    },
                    None => Response::Doc {
                        value: None,
                        revision: 0,
                    },
                }
            }
            Request::DocPut { key, value, expect } => self.doc_put(key, value, expect),
            Request::DocDelete { key, expect } => self.doc_delete(key, expect),
            Request::Watch { after, timeout_ms } => Response::Changed {
                generation: crate::changes::wait(
                    after,
                    Duration::from_millis(timeout_ms.min(WATCH_LONGEST_MS)),
                )
                .await,
            },
            Request::DocList { prefix } => Response::Keys {
                keys: self
                    .docs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entries
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect(),
            },
            Request::LockAcquire {
                key,
                owner,
                ttl_ms,
                take_over,
            } => {
                let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if let Some(l) = locks.get(&key) {
                    let dead = take_over.as_deref() == Some(l.owner.as_str());
                    if l.owner != owner && l.expires > now && !dead {
                        return Response::LockHeld {
                            holder: holder(l, now),
                        };
                    }
                }
                let since_ms = match locks.get(&key) {
                    Some(l) if l.owner == owner && l.expires > now => l.since_ms,
                    _ => crate::unix_ms(),
                };
                let lock = Lock {
                    owner,
                    since_ms,
                    expires: now + Duration::from_millis(ttl_ms),
                };
                let h = holder(&lock, now);
                let new_holder = locks
                    .insert(key, lock)
                    .is_none_or(|old| old.owner != h.owner || old.expires <= now);
                if new_holder {
                    crate::changes::bump();
                }
                Response::Locked { holder: h }
            }
            Request::LockGet { key } => {
                let locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                match locks.get(&key) {
                    Some(l) if l.expires > now => Response::LockHeld {
                        holder: holder(l, now),
                    },
                    _ => Response::Ok,
                }
            }
            Request::LockRelease { key, owner } => {
                let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                if locks.get(&key).is_some_and(|l| l.owner == owner) {
                    locks.remove(&key);
                    crate::changes::bump();
                }
                Response::Ok
            }
        }
    }

    async fn route_set(self: &Arc<Self>, spec: RouteSpec) -> Response {
        let port = spec.port;
        if port == 0 {
            // Binding port 0 would listen on a port the kernel picks, that
            // nobody knows and a restart would change.
            return error(
                EdgeErrorCode::BadRequest,
                "a route needs a port from 1 to 65535, not 0",
            );
        }
        if self.shared_ports().contains(&port) {
            return error(
                EdgeErrorCode::PortInUse,
                format!("port {port} is the edge's shared port for sites (x-changeover.hosts)"),
            );
        }
        {
            let routes = self.table.read();
            let hosts = RouteHosts {
                port,
                service: &spec.service,
                hosts: &spec.hosts,
                tls: spec.tls,
            };
            let others = routes.values().map(route_hosts);
            if let Err(e) = self.sites.check(&hosts, others) {
                return error(EdgeErrorCode::BadRequest, format!("{}: {e}", spec.service));
            }
            if !spec.hosts.is_empty() {
                let config = self.sites.config();
                for shared in [config.http_port, config.https_port] {
                    if let Some(r) = routes.get(&shared).filter(|r| r.spec.port != port) {
                        return error(
                            EdgeErrorCode::PortInUse,
                            format!("the edge's shared port {shared} for sites is routed to {}; give the edge other shared ports (changeover edge config --http-port N --https-port N)", r.spec.service),
                        );
                    }
                }
                if port == config.http_port || port == config.https_port {
                    return error(
                        EdgeErrorCode::PortInUse,
                        format!("port {port} is the edge's shared port for sites; publish the service on another port"),
                    );
                }
            }
        }
        let updated = {
            let mut routes = self.table.lock();
            match routes.get_mut(&port) {
                Some(r) if r.spec.service != spec.service => {
                    return error(
                        EdgeErrorCode::PortInUse,
                        format!("port {port} is already routed to {}", r.spec.service),
                    );
                }
                Some(r) => Some(std::mem::replace(&mut r.spec, spec.clone())),
                None => None,
            }
        };
        if let Some(before) = updated {
            return self.hosts_changed(port, Some(before)).await;
        }
        let task = match proxy::listen(self.clone(), port, Front::Port(port)).await {
            Ok(t) => t,
            Err(e) => {
                return error(
                    EdgeErrorCode::PortInUse,
                    format!("cannot listen on port {port}: {e}"),
                )
            }
        };
        let mut route = Route::new(spec);
        route.listener = Some(task);
        self.table.lock().insert(port, route);
        self.hosts_changed(port, None).await
    }

    /// After the route on `port` was set: the shared ports its hosts need
    /// are opened and the host index follows; when a shared port cannot be
    /// opened, the route is put back as it was (`before`; `None`: it was
    /// new) and that is the answer.
    async fn hosts_changed(self: &Arc<Self>, port: u16, before: Option<RouteSpec>) -> Response {
        if let Err(e) = self.open_shared(&mut BTreeMap::new()).await {
            let mut routes = self.table.lock();
            match before {
                Some(spec) => {
                    if let Some(r) = routes.get_mut(&port) {
                        r.spec = spec;
                    }
                }
                None => {
                    routes.remove(&port);
                }
            }
            return error(EdgeErrorCode::PortInUse, e);
        }
        self.sites
            .reindex(self.table.read().values().map(route_hosts));
        self.acme.wake();
        self.saved(Response::Ok)
    }

    /// New settings: checked, the shared ports moved (the new ones open
    /// before the old ones close), then stored.
    async fn config_set(self: &Arc<Self>, config: EdgeConfig) -> Response {
        let before = self.sites.config();
        let (want_http, want_https) = Sites::wanted(self.table.read().values().map(route_hosts));
        // Ports opened now must be free of routes; the others are checked
        // when a route with hosts comes.
        let opened = [
            (want_http, config.http_port),
            (want_https, config.https_port),
        ];
        for port in opened.into_iter().filter(|(w, _)| *w).map(|(_, p)| p) {
            let routed = self.table.read().get(&port).map(|r| r.spec.service.clone());
            if let Some(service) = routed {
                return error(
                    EdgeErrorCode::PortInUse,
                    format!("port {port} is routed to {service}; the shared ports need ports of their own"),
                );
            }
        }
        if let Err(e) = self.sites.set_config(config) {
            return error(EdgeErrorCode::BadRequest, e);
        }
        if let Err(e) = self.open_shared(&mut BTreeMap::new()).await {
            // Back to what works.
            if let Err(undo) = self.sites.set_config(before) {
                eprintln!("changeover-edge: the settings could not be put back: {undo}");
            }
            return error(EdgeErrorCode::PortInUse, e);
        }
        self.acme.wake();
        crate::changes::bump();
        Response::Ok
    }

    async fn target_add(
        self: &Arc<Self>,
        port: u16,
        spec: TargetSpec,
        wait_healthy_ms: Option<u64>,
    ) -> Response {
        let target = {
            let mut routes = self.table.lock();
            let Some(route) = routes.get_mut(&port) else {
                return error(
                    EdgeErrorCode::UnknownRoute,
                    format!("no route on port {port}"),
                );
            };
            match route.target(&spec.id) {
                Some(t) if t.spec == spec && t.state() != TargetState::Draining => t.clone(),
                _ => {
                    if let Some(i) = route.targets.iter().position(|t| t.spec.id == spec.id) {
                        route.targets.remove(i).stop_checks();
                    }
                    let t = route.add_target(spec, TargetState::Adding);
                    crate::health::start(&t, route.spec.health.clone());
                    t
                }
            }
        };
        if let Err(e) = self.save_routes() {
            return e;
        }
        if let Some(ms) = wait_healthy_ms {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
            loop {
                let changed = target.changed.notified();
                if target.state() == TargetState::Healthy {
                    break;
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    break;
                }
            }
            // Persist that it became healthy, so a restart routes to it at once.
            if let Err(e) = self.save_routes() {
                return e;
            }
        }
        Response::Target {
            target: target.status(),
        }
    }

    async fn target_drain(self: &Arc<Self>, port: u16, id: &str) -> Response {
        let started = Instant::now();
        let (target, timeout) = {
            let routes = self.table.lock();
            let Some(route) = routes.get(&port) else {
                return Response::Drained {
                    abandoned: 0,
                    took_ms: 0,
                };
            };
            let Some(t) = route.target(id) else {
                return Response::Drained {
                    abandoned: 0,
                    took_ms: 0,
                };
            };
            // Under the table lock: no request can pick it after this line.
            t.health().state = TargetState::Draining;
            (
                t.clone(),
                Duration::from_millis(route.spec.drain_timeout_ms),
            )
        };
        target.stop_checks();
        target.changed.notify_waiters();
        let deadline = started + timeout;
        while target.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let abandoned = target.in_flight.load(std::sync::atomic::Ordering::SeqCst);
        // Connections still open past the drain timeout (TCP) are closed.
        target.close();
        {
            let mut routes = self.table.lock();
            if let Some(route) = routes.get_mut(&port) {
                route.targets.retain(|t| !Arc::ptr_eq(t, &target));
            }
        }
        self.saved(Response::Drained {
            abandoned,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    fn doc_put(&self, key: String, value: serde_json::Value, expect: Option<u64>) -> Response {
        let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        let current = match docs.revision_of(&key, expect) {
            Ok(r) => r,
            Err(refused) => return refused,
        };
        let revision = current + 1;
        let before = docs.entries.insert(
            key.clone(),
            Doc {
                value: value.clone(),
                revision,
            },
        );
        if let Err(e) = self.save_docs(&docs) {
            // Not stored, so not changed: the caller may try again.
            match before {
                Some(d) => docs.entries.insert(key, d),
                None => docs.entries.remove(&key),
            };
            return error(EdgeErrorCode::Internal, e);
        }
        crate::changes::bump();
        Response::Doc {
            value: Some(value),
            revision,
        }
    }

    fn doc_delete(&self, key: String, expect: Option<u64>) -> Response {
        let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(refused) = docs.revision_of(&key, expect) {
            return refused;
        }
        let Some(before) = docs.entries.remove(&key) else {
            return Response::Ok;
        };
        if let Err(e) = self.save_docs(&docs) {
            docs.entries.insert(key, before);
            return error(EdgeErrorCode::Internal, e);
        }
        crate::changes::bump();
        Response::Ok
    }

    /// Writes the documents (the caller holds their lock, so saves of
    /// them are in order already; the file's own lock makes it certain).
    fn save_docs(&self, docs: &Docs) -> Result<(), String> {
        let Some(file) = &self.docs_file else {
            return Ok(());
        };
        file.save(|| serde_json::to_vec_pretty(docs).map_err(|e| e.to_string()))
            .map_err(|e| format!("the document could not be saved: {e}"))
    }
}

fn holder(l: &Lock, now: Instant) -> LockHolder {
    LockHolder {
        owner: l.owner.clone(),
        since_ms: l.since_ms,
        expires_in_ms: l.expires.saturating_duration_since(now).as_millis() as i64,
    }
}

/// `changeover-edge serve`: the long-running proxy.
pub async fn serve(
    dir: PathBuf,
    max_connections: Option<usize>,
    take_over: bool,
) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (descriptors, connections) = crate::limits::raise_descriptor_limit(max_connections);
    eprintln!(
        "changeover-edge: {descriptors} file descriptors; at most {connections} client connections"
    );
    // Before anything is bound or loaded: the running edge's sockets, and
    // the routes it saved as it handed them over.
    let taken = if take_over {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::handover::take(&dir))
            .await
            .map_err(|e| e.to_string())??
    } else {
        None
    };
    proxy::start_workers()?;
    let edge = Edge::new(Some(&dir))?;
    let (taken, given) = match taken {
        Some(mut t) => {
            let given = std::mem::take(&mut t.sockets);
            (Some(t), given)
        }
        None => (None, BTreeMap::new()),
    };
    edge.resume(given).await;
    tokio::spawn(crate::acme::run(
        edge.sites.clone(),
        edge.acme.clone(),
        Some(dir.clone()),
    ));
    let socket = dir.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("cannot open the control socket {}: {e}", socket.display()))?;
    if let Some(t) = taken {
        tokio::task::spawn_blocking(move || t.serving())
            .await
            .map_err(|e| e.to_string())??;
        eprintln!("changeover-edge: took the listeners over from the edge before");
    }
    crate::handover::offer(edge.clone(), &dir)?;
    eprintln!(
        "changeover-edge {} serving {} route(s); control socket {}",
        env!("CARGO_PKG_VERSION"),
        edge.table.read().len(),
        socket.display()
    );
    let control = {
        let edge = edge.clone();
        async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors and the like: back off, never spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let edge = edge.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let response = match read_request(read).await {
                        Ok(Some(req)) => edge.handle(req).await,
                        Ok(None) => return,
                        Err(refused) => refused,
                    };
                    let mut out = serde_json::to_vec(&response).unwrap_or_default();
                    out.push(b'\n');
                    let _ = write.write_all(&out).await;
                });
            }
        }
    };
    let guards = {
        let edge = edge.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                edge.check_guards();
                edge.expire_locks();
            }
        }
    };
    tokio::select! {
        _ = control => {}
        _ = guards => {}
        _ = crate::terminated() => {}
    }
    let (abandoned, took) = edge.drain_for_exit().await;
    eprintln!(
        "changeover-edge: stopped; in-flight requests drained in {} ms ({abandoned} abandoned)",
        took.as_millis()
    );
    Ok(())
}

/// The longest control request line taken: a stored document with room to
/// spare. A longer one is refused without being kept in memory.
pub(crate) const MAX_CONTROL_LINE: u64 = 8 * 1024 * 1024;

/// Reads one request line from a control connection: `None` when it closed
/// without one, the refusal when it is too long or not a request.
async fn read_request(
    read: impl tokio::io::AsyncRead + Unpin,
) -> Result<Option<Request>, Response> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_CONTROL_LINE + 1));
    match reader.read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => return Ok(None),
        Ok(_) => {}
    }
    if line.len() as u64 > MAX_CONTROL_LINE {
        return Err(error(
            EdgeErrorCode::BadRequest,
            format!("a control request longer than {MAX_CONTROL_LINE} bytes is refused"),
        ));
    }
    serde_json::from_slice::<Request>(&line)
        .map(Some)
        .map_err(|e| error(EdgeErrorCode::BadRequest, format!("bad request: {e}")))
}

/// `changeover-edge ctl REQUEST`: one round trip to the serving process.
/// Prints the JSON answer; exits 0 when one was printed (even an error
/// answer), 1 when the edge could not be asked.
///
/// `changeover-edge ctl -`: a session. Prints [`CTL_SESSION_GREETING`], then
/// answers each request line read from stdin with one line, until stdin
/// closes. One `docker exec` then carries many requests: cheaper than an
/// exec per request, and the answers are read while the process is alive
/// (the daemon can lose the output of an exec that exits at once).
pub fn run_client(dir: &Path, request: &str) -> ExitCode {
    let socket = dir.join(SOCKET);
    if request == "-" {
        return run_session(&socket);
    }
    if let Ok(Request::CertPut { .. }) = serde_json::from_str::<Request>(request) {
        // A command line is visible to every user of the machine (and of
        // the daemon, for an exec): a private key never travels on one.
        let refused = error(
            EdgeErrorCode::BadRequest,
            "cert-put carries a private key: send it in a session (ctl -), not on the command line",
        );
        println!("{}", serde_json::to_string(&refused).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    match round_trip(&socket, request) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("changeover-edge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_session(socket: &Path) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if writeln!(out, "{CTL_SESSION_GREETING}")
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let mut stdin = std::io::stdin().lock();
    loop {
        let mut line = Vec::new();
        match (&mut stdin)
            .take(MAX_CONTROL_LINE + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() as u64 > MAX_CONTROL_LINE {
            // The rest of that line cannot be told from a next request: stop.
            let refused = error(
                EdgeErrorCode::BadRequest,
                format!("a control request longer than {MAX_CONTROL_LINE} bytes is refused"),
            );
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&refused).unwrap_or_default()
            );
            break;
        }
        let Ok(line) = String::from_utf8(line) else {
            let refused = error(EdgeErrorCode::BadRequest, "a control request is not UTF-8");
            if writeln!(
                out,
                "{}",
                serde_json::to_string(&refused).unwrap_or_default()
            )
            .and_then(|_| out.flush())
            .is_err()
            {
                break;
            }
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = round_trip(socket, &line).unwrap_or_else(|e| {
            serde_json::to_string(&error(EdgeErrorCode::Internal, e)).unwrap_or_default()
        });
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Sends one request to the serving process; its one-line answer (an error
/// answer for a request that does not parse).
pub(crate) fn round_trip(socket: &Path, request: &str) -> Result<String, String> {
    if let Err(e) = serde_json::from_str::<Request>(request) {
        let r = error(EdgeErrorCode::BadRequest, format!("bad request: {e}"));
        return Ok(serde_json::to_string(&r).unwrap_or_default());
    }
    let result = (|| -> std::io::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.write_all(request.trim().as_bytes())?;
        stream.write_all(b"\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    })();
    match result {
        Ok(line) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        Ok(_) => Err("the edge closed the control socket without an answer".into()),
        Err(e) => Err(format!(
            "cannot reach the edge at {}: {e}",
            socket.display()
        )),
    }
}
