//! One serving edge's state: its routes and their listeners, its sites and
//! shared ports, its documents and locks, and what happens to all of them
//! when it starts (resuming what it saved), hands over or stops. What a
//! client may ask of it is [`crate::control`]'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use changeover_core::edge::{EdgeErrorCode, Response, Udp};

use crate::acme::Acme;
use crate::docs::Documents;
use crate::limits::Conns;
use crate::listeners::Listener;
use crate::proxy::{self, Front, Proxy};
use crate::routes::{Route, Table};
use crate::sites::{RouteHosts, Sites};

/// The serving process's state.
pub struct Edge {
    pub table: Arc<Table>,
    /// Host names, certificates and the edge's settings.
    pub sites: Arc<Sites>,
    /// Wakes the task that keeps ACME certificates.
    pub acme: Arc<Acme>,
    /// What the listeners serve from (the same table and sites).
    pub proxy: Arc<Proxy>,
    /// Documents and locks.
    pub docs: Documents,
    /// The shared HTTP and HTTPS listeners, while some route has hosts.
    shared: Mutex<SharedPorts>,
    /// One change of the shared listeners at a time.
    shared_change: tokio::sync::Mutex<()>,
    pub(crate) started: Instant,
    /// Handed over to a new edge: control requests are refused.
    retired: std::sync::atomic::AtomicBool,
}

/// The listeners of the shared ports, with their ports.
#[derive(Default)]
struct SharedPorts {
    http: Option<(u16, Listener)>,
    https: Option<(u16, Listener)>,
}

pub(crate) fn route_hosts(route: &Route) -> RouteHosts<'_> {
    RouteHosts {
        port: route.spec.port,
        service: &route.spec.service,
        hosts: &route.spec.hosts,
        tls: route.spec.tls,
    }
}

impl Edge {
    /// An edge keeping its state in `dir` (`None`: in memory), admitting
    /// at most `max_connections` client connections. What it noticed while
    /// reading its state (a damaged file, an older copy used) is logged.
    pub fn new(dir: Option<&Path>, max_connections: usize) -> Result<Arc<Self>, String> {
        let (docs, notes) = Documents::load(dir);
        for note in notes {
            eprintln!("changeover-edge: {note}");
        }
        let table = Arc::new(Table::new(dir));
        for note in table.load() {
            eprintln!("changeover-edge: {note}");
        }
        let (sites, notes) = Sites::new(dir)?;
        for note in notes {
            eprintln!("changeover-edge: {note}");
        }
        sites.reindex(table.read().values().map(route_hosts));
        let sites = Arc::new(sites);
        let conns = Arc::new(Conns::new(max_connections));
        Ok(Arc::new(Self {
            proxy: Proxy::new(table.clone(), sites.clone(), conns),
            table,
            sites,
            acme: Arc::new(Acme::new()),
            docs,
            shared: Mutex::new(SharedPorts::default()),
            shared_change: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            retired: Default::default(),
        }))
    }

    /// Opens the listeners and starts the checks of the routes loaded from
    /// the state directory, on the sockets handed over by the edge before
    /// this one where there are some.
    pub async fn resume(self: &Arc<Self>, given: crate::Listeners) {
        let crate::Listeners {
            tcp: mut given,
            udp: mut given_udp,
        } = given;
        let routes: Vec<(u16, Udp)> = self
            .table
            .read()
            .iter()
            .map(|(port, r)| (*port, r.spec.udp))
            .collect();
        for (port, udp) in routes {
            let opened = match (udp, given.remove(&port)) {
                (Udp::Only, _) => None,
                (_, Some(sockets)) => {
                    Some(proxy::open(self.proxy.clone(), port, Front::Port(port), sockets).await)
                }
                (_, None) => Some(proxy::listen(self.proxy.clone(), port, Front::Port(port)).await),
            };
            let datagrams = match (udp, given_udp.remove(&port)) {
                (Udp::No, _) => None,
                (_, Some(sockets)) => Some(crate::udp::open(self.table.clone(), port, sockets)),
                (_, None) => Some(crate::udp::listen(self.table.clone(), port).await),
            };
            let mut routes = self.table.lock();
            let Some(route) = routes.get_mut(&port) else {
                continue;
            };
            match opened {
                Some(Ok(task)) => route.listener = Some(task),
                Some(Err(e)) => {
                    eprintln!("changeover-edge: cannot listen on port {port} again: {e}")
                }
                None => {}
            }
            match datagrams {
                Some(Ok(l)) => route.udp = Some(l),
                Some(Err(e)) => {
                    eprintln!("changeover-edge: cannot listen on UDP port {port} again: {e}")
                }
                None => {}
            }
            let probe = route.spec.health.clone();
            for t in &route.targets {
                crate::health::start(t, probe.clone());
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
    pub(crate) async fn open_shared(
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
                Some(sockets) => proxy::open(self.proxy.clone(), port, front, sockets).await,
                None => proxy::listen(self.proxy.clone(), port, front).await,
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
    pub(crate) fn shared_ports(&self) -> Vec<u16> {
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

    /// Handed over to a new edge (control requests are refused).
    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Copies of every listening socket — the shared ports', each route's
    /// TCP listener and UDP sockets — with their ports, for a new edge.
    pub fn handed_sockets(&self) -> Vec<crate::handover::Handed> {
        use crate::handover::Handed;
        fn copies<S>(
            out: &mut Vec<Handed>,
            port: u16,
            sockets: std::io::Result<Vec<S>>,
            handed: fn(u16, S) -> Handed,
        ) {
            match sockets {
                Ok(sockets) => out.extend(sockets.into_iter().map(|s| handed(port, s))),
                Err(e) => eprintln!("changeover-edge: cannot hand over port {port}: {e}"),
            }
        }
        let mut out = Vec::new();
        {
            let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            for (port, l) in s.http.iter().chain(s.https.iter()) {
                copies(&mut out, *port, l.sockets(), Handed::Tcp);
            }
        }
        for (port, route) in self.table.read().iter() {
            if let Some(l) = &route.listener {
                copies(&mut out, *port, l.sockets(), Handed::Tcp);
            }
            if let Some(l) = &route.udp {
                copies(&mut out, *port, l.sockets(), Handed::Udp);
            }
        }
        out
    }

    /// Stops accepting on every route (a new edge accepts now); open
    /// connections are served to their end.
    pub async fn stop_accepting(&self) {
        self.proxy.set_draining();
        let (listeners, datagrams): (Vec<Listener>, Vec<crate::udp::UdpListener>) = {
            let mut routes = self.table.lock();
            (
                routes
                    .values_mut()
                    .filter_map(|r| r.listener.take())
                    .collect(),
                routes.values_mut().filter_map(|r| r.udp.take()).collect(),
            )
        };
        let shared = std::mem::take(&mut *self.shared.lock().unwrap_or_else(|p| p.into_inner()));
        let shared = shared.http.into_iter().chain(shared.https).map(|(_, l)| l);
        for l in listeners.into_iter().chain(shared) {
            l.close().await;
        }
        for l in datagrams {
            l.close().await;
        }
    }

    /// On SIGTERM (`docker stop`): closes every listener, so no new
    /// connection comes, and waits while requests are in flight or clients
    /// keep connections open (each gets `Connection: close` on its next
    /// response), up to the longest drain timeout of the routes. Answers
    /// (requests still in flight when it gave up, time taken).
    pub async fn drain_for_exit(&self) -> (u64, Duration) {
        let started = Instant::now();
        self.proxy.set_draining();
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
        let open = || self.proxy.conns.counts().0;
        while (in_flight() > 0 || open() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (in_flight(), started.elapsed())
    }

    /// After the drain: stops every target's health checks and cuts off
    /// what is still open (client connections, TCP relays), so nothing of
    /// this edge runs on once it has stopped.
    pub(crate) fn close(&self) {
        for route in self.table.read().values() {
            for t in &route.targets {
                t.stop_checks();
                t.close();
            }
        }
        self.proxy.conns.close_all();
    }

    /// Runs every route's canary guard; saves the routes when one tripped.
    pub(crate) fn check_guards(&self) {
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
    pub(crate) fn save_routes(&self) -> Result<(), Response> {
        self.table.save().map_err(|e| Response::Error {
            code: EdgeErrorCode::Internal,
            message: format!(
                "the change is in effect but could not be saved, so a restart would lose it: {e}"
            ),
        })
    }

    /// `answer`, or the failed save's error.
    pub(crate) fn saved(&self, answer: Response) -> Response {
        match self.save_routes() {
            Ok(()) => answer,
            Err(e) => e,
        }
    }
}
