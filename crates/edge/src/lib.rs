//! `changeover-edge`: the proxy Changeover runs as a container on every
//! environment, as a library with a thin binary (`main.rs`) around it; plus
//! the tiny demo app the sandbox, tests and benchmarks use.
//!
//! [`serve`] runs one edge on the listening sockets, control socket and
//! shutdown signal it is given — the container's process does it with the
//! sockets handed over by the edge before it ([`serve_process`]), the
//! in-process tests (`tests/server.rs`) with their own.
//!
//! # Layout
//! Each module only uses the ones listed before it:
//! - [`store`]: the stored files, saved so that none is lost or half written.
//! - [`changes`]: the state generation clients follow with one waiting
//!   control session (`watch`).
//! - [`limits`]: the connection limit and each connection's timeouts.
//! - [`workers`]: the traffic threads.
//! - [`listeners`]: listening sockets, one per traffic thread and port.
//! - [`upstream`]: the HTTP/1.1 client towards the targets, and beside it
//!   [`pool`], their idle keep-alive connections.
//! - [`traffic`]: releases, splits, stickiness and per-release counters.
//! - [`routes`]: the routing table — routes, their targets and target states
//!   (`adding → healthy → draining → removed`, or `unhealthy`), picking a
//!   target for a request, persistence in the state volume.
//! - [`health`]: the active health checks that move targets between states.
//! - [`udp`]: UDP on a route's port, per client flow (sockets per traffic
//!   thread, flows with idle expiry, drains, counters).
//! - [`sites`]: host names on the shared ports, certificates (chosen by
//!   SNI) and the edge's settings; [`acme`]: ordering and renewing the
//!   certificates of `tls: acme` sites.
//! - [`docs`]: the documents and locks the edge keeps for its clients.
//! - [`proxy`]: what a listener serves (HTTP/1.1 and h2c on each route's
//!   port; the shared ports of sites, plain and TLS) and request
//!   forwarding, with one retry on another target when the first could not
//!   be reached.
//! - [`edge`]: one serving edge's state, and its start, hand-over and stop.
//! - [`control`]: the control requests' dispatch and the control socket;
//!   [`ctl`]: its client, the one the Docker exec API runs.
//! - [`handover`]: passing the listening sockets (TCP and UDP) to a new edge.
//! - [`watch`]: the watcher, a process of its own with the Docker socket
//!   and no network, that takes gone containers off the routes at once (and
//!   unhealthy ones off the routes their Docker health check decides).
//! - [`volume`]: the volume helper — listing, reading and sizing what is in
//!   a volume, from a container that mounts it (no agent, no host paths).
//! - [`demo`]: `demo` (an HTTP server that answers its version, and with
//!   `--udp` a UDP echo) and `probe`
//!   (an HTTP check usable as a Docker `HEALTHCHECK` in `FROM scratch` images).
//!
//! The wire protocol lives in `changeover_core::edge`, shared with the client.

mod acme;
mod changes;
mod control;
pub mod ctl;
pub mod demo;
mod docs;
mod edge;
mod handover;
mod health;
mod limits;
mod listeners;
mod pool;
mod proxy;
mod routes;
mod sites;
mod store;
mod traffic;
mod udp;
mod upstream;
pub mod volume;
mod volume_copy;
pub mod watch;
mod workers;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::edge::Edge;

pub use crate::control::SOCKET as CONTROL_SOCKET;

/// How an edge is served.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where it keeps its routes, documents, certificates and settings
    /// (`None`: in memory only, nothing survives it).
    pub state: Option<PathBuf>,
    /// At most this many client connections at once (the process sets it
    /// below its file-descriptor limit).
    pub max_connections: usize,
}

/// Listening sockets an edge starts with, by port: those of the routes in
/// its state that a previous edge handed over. A route without one here
/// gets sockets bound anew; sockets of ports no route has are closed.
#[derive(Default)]
pub struct Listeners {
    pub tcp: BTreeMap<u16, Vec<std::net::TcpListener>>,
    pub udp: BTreeMap<u16, Vec<std::net::UdpSocket>>,
}

impl Listeners {
    /// None: every route binds its own.
    pub fn new() -> Self {
        Self::default()
    }
}

/// How a served edge ended.
#[derive(Debug)]
pub struct Stopped {
    /// Requests still in flight when the drain gave up.
    pub abandoned: u64,
    /// How long the drain took.
    pub took: Duration,
}

/// Serves one edge until `shutdown` resolves: loads its state, serves its
/// routes on `listeners` (and sockets of its own where there are none),
/// answers control requests on `control`, runs the health checks, guards
/// and ACME; then closes every listener and drains what is in flight, up
/// to the routes' longest drain timeout.
pub async fn serve(
    settings: Settings,
    listeners: Listeners,
    control: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, String> {
    let server = Server::start(settings, listeners).await?;
    Ok(server.run(control, shutdown).await)
}

/// An edge whose routes are served, before its control socket is.
struct Server {
    edge: Arc<Edge>,
    acme: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(settings: Settings, listeners: Listeners) -> Result<Self, String> {
        workers::start_workers()?;
        let edge = Edge::new(settings.state.as_deref(), settings.max_connections)?;
        edge.resume(listeners).await;
        let acme = tokio::spawn(acme::run(
            edge.sites.clone(),
            edge.acme.clone(),
            settings.state.clone(),
        ));
        Ok(Self { edge, acme })
    }

    async fn run(
        self,
        control: tokio::net::UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Stopped {
        let edge = self.edge;
        let guards = {
            let edge = edge.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    edge.check_guards();
                    edge.docs.expire_locks();
                }
            }
        };
        tokio::select! {
            _ = control::serve_socket(edge.clone(), control) => {}
            _ = guards => {}
            _ = shutdown => {}
        }
        self.acme.abort();
        let (abandoned, took) = edge.drain_for_exit().await;
        edge.close();
        Stopped { abandoned, took }
    }
}

/// `changeover-edge serve`: the long-running proxy of the edge container,
/// on the state directory `dir`, until SIGTERM. With `take_over`, the
/// listening sockets of the edge serving `dir` now are taken from it first
/// ([`handover`]).
pub async fn serve_process(
    dir: PathBuf,
    max_connections: Option<usize>,
    take_over: bool,
) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (descriptors, connections) = limits::raise_descriptor_limit(max_connections);
    eprintln!(
        "changeover-edge: {descriptors} file descriptors; at most {connections} client connections"
    );
    // Before anything is bound or loaded: the running edge's sockets, and
    // the routes it saved as it handed them over.
    let taken = if take_over {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || handover::take(&dir))
            .await
            .map_err(|e| e.to_string())??
    } else {
        None
    };
    let (taken, given) = match taken {
        Some(mut t) => {
            let given = std::mem::take(&mut t.sockets);
            (Some(t), given)
        }
        None => (None, Listeners::new()),
    };
    let settings = Settings {
        state: Some(dir.clone()),
        max_connections: connections,
    };
    let server = Server::start(settings, given).await?;
    let socket = dir.join(control::SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("cannot open the control socket {}: {e}", socket.display()))?;
    if let Some(t) = taken {
        tokio::task::spawn_blocking(move || t.serving())
            .await
            .map_err(|e| e.to_string())??;
        eprintln!("changeover-edge: took the listeners over from the edge before");
    }
    handover::offer(server.edge.clone(), &dir)?;
    eprintln!(
        "changeover-edge {} serving {} route(s); control socket {}",
        env!("CARGO_PKG_VERSION"),
        server.edge.table.read().len(),
        socket.display()
    );
    let stopped = server.run(listener, terminated()).await;
    eprintln!(
        "changeover-edge: stopped; in-flight requests drained in {} ms ({} abandoned)",
        stopped.took.as_millis(),
        stopped.abandoned
    );
    Ok(())
}

/// Resolves on SIGTERM (what `docker stop` sends to PID 1) or Ctrl-C.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
