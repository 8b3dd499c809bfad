//! What a client may ask of an edge: the dispatch of each control request
//! ([`changeover_core::edge::Request`]) to the edge's state, and the Unix
//! control socket that carries them, one JSON line each way. The `ctl`
//! client that the Docker exec API runs is [`crate::ctl`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use changeover_core::edge::{
    EdgeConfig, EdgeErrorCode, Request, Response, RouteSpec, TargetSpec, TargetState, Udp,
    PROTOCOL_VERSION, WATCH_LONGEST_MS,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::docs::Refused;
use crate::edge::{route_hosts, Edge};
use crate::proxy::{self, Front};
use crate::routes::Route;
use crate::sites::{RouteHosts, Sites};

/// The control socket's name in the state directory.
pub const SOCKET: &str = "control.sock";

pub(crate) fn error(code: EdgeErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn refused(r: Refused) -> Response {
    match r {
        Refused::Conflict(m) => error(EdgeErrorCode::Conflict, m),
        Refused::NotSaved(m) => error(EdgeErrorCode::Internal, m),
    }
}

impl Edge {
    /// Answers one control request.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Response {
        if self.is_retired() {
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
                    let conns = &self.proxy.conns;
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
            Request::PortCheck { port, service, udp } => {
                if udp != Udp::Only && self.shared_ports().contains(&port) {
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
                if udp != Udp::Only {
                    if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", port)) {
                        return error(
                            EdgeErrorCode::PortInUse,
                            format!("port {port} is taken on the host by another process ({e})"),
                        );
                    }
                }
                if udp != Udp::No {
                    if let Err(e) = std::net::UdpSocket::bind(("0.0.0.0", port)) {
                        return error(
                            EdgeErrorCode::PortInUse,
                            format!(
                                "UDP port {port} is taken on the host by another process ({e})"
                            ),
                        );
                    }
                }
                Response::Ok
            }
            Request::DocGet { key } => {
                let (value, revision) = self.docs.get(&key);
                Response::Doc { value, revision }
            }
            Request::DocPut { key, value, expect } => {
                match self.docs.put(key, value.clone(), expect) {
                    Ok(revision) => Response::Doc {
                        value: Some(value),
                        revision,
                    },
                    Err(r) => refused(r),
                }
            }
            Request::DocDelete { key, expect } => match self.docs.delete(&key, expect) {
                Ok(()) => Response::Ok,
                Err(r) => refused(r),
            },
            Request::Watch { after, timeout_ms } => Response::Changed {
                generation: crate::changes::wait(
                    after,
                    Duration::from_millis(timeout_ms.min(WATCH_LONGEST_MS)),
                )
                .await,
            },
            Request::DocList { prefix } => Response::Keys {
                keys: self.docs.keys(&prefix),
            },
            Request::LockAcquire {
                key,
                owner,
                ttl_ms,
                take_over,
            } => match self.docs.acquire(
                key,
                owner,
                Duration::from_millis(ttl_ms),
                take_over.as_deref(),
            ) {
                Ok(holder) => Response::Locked { holder },
                Err(holder) => Response::LockHeld { holder },
            },
            Request::LockGet { key } => match self.docs.holder(&key) {
                Some(holder) => Response::LockHeld { holder },
                None => Response::Ok,
            },
            Request::LockRelease { key, owner } => {
                self.docs.release(&key, &owner);
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
            if before.udp != spec.udp {
                if let Err(e) = self.reopen(port, before.udp, spec.udp).await {
                    if let Some(r) = self.table.lock().get_mut(&port) {
                        r.spec = before;
                    }
                    return error(EdgeErrorCode::PortInUse, e);
                }
            }
            return self.hosts_changed(port, Some(before)).await;
        }
        let (tcp, udp) = match self
            .open_sockets(port, spec.udp != Udp::Only, spec.udp != Udp::No)
            .await
        {
            Ok(x) => x,
            Err(e) => return error(EdgeErrorCode::PortInUse, e),
        };
        let mut route = Route::new(spec);
        route.listener = tcp;
        route.udp = udp;
        self.table.lock().insert(port, route);
        self.hosts_changed(port, None).await
    }

    /// Opens a TCP listener on `port` (`tcp`) and UDP sockets (`udp`).
    async fn open_sockets(
        &self,
        port: u16,
        tcp: bool,
        udp: bool,
    ) -> Result<
        (
            Option<crate::listeners::Listener>,
            Option<crate::udp::UdpListener>,
        ),
        String,
    > {
        let tcp = if tcp {
            let l = proxy::listen(self.proxy.clone(), port, Front::Port(port)).await;
            Some(l.map_err(|e| format!("cannot listen on port {port}: {e}"))?)
        } else {
            None
        };
        let udp = if udp {
            let l = crate::udp::listen(self.table.clone(), port).await;
            Some(l.map_err(|e| format!("cannot listen on UDP port {port}: {e}"))?)
        } else {
            None
        };
        Ok((tcp, udp))
    }

    /// The route on `port` carried UDP as `before` says and carries it as
    /// `after` says now: what it needs is opened, what it no longer needs
    /// closed (flows and connections on it end).
    async fn reopen(&self, port: u16, before: Udp, after: Udp) -> Result<(), String> {
        let (tcp, udp) = self
            .open_sockets(
                port,
                after != Udp::Only && before == Udp::Only,
                after != Udp::No && before == Udp::No,
            )
            .await?;
        let mut routes = self.table.lock();
        if let Some(r) = routes.get_mut(&port) {
            if tcp.is_some() {
                r.listener = tcp;
            }
            if udp.is_some() {
                r.udp = udp;
            }
            if after == Udp::Only {
                r.listener = None;
            }
            if after == Udp::No {
                r.udp = None;
            }
        }
        Ok(())
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
}

/// Serves control requests on `listener` until the future is dropped: one
/// request line and one answer line per connection.
pub async fn serve_socket(edge: Arc<Edge>, listener: tokio::net::UnixListener) {
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

/// The longest control request line taken: a stored document with room to
/// spare. A longer one is refused without being kept in memory.
pub const MAX_CONTROL_LINE: u64 = 8 * 1024 * 1024;

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
