//! `changeover-edge`: the proxy Changeover runs as a container on every
//! environment, plus the tiny demo app the sandbox, tests and benchmarks use.
//!
//! # Layout
//! - [`routes`]: the routing table — routes, their targets and target states
//!   (`adding → healthy → draining → removed`, or `unhealthy`), picking a
//!   target for a request, persistence in the state volume.
//! - [`proxy`]: the listeners (HTTP/1.1 and h2c on each route's port; the
//!   shared ports of sites, plain and TLS) and request forwarding, with one
//!   retry on another target when the first could not be reached.
//! - [`sites`]: host names on the shared ports, certificates (chosen by
//!   SNI) and the edge's settings.
//! - [`acme`]: ordering and renewing the certificates of `tls: acme` sites.
//! - [`health`]: the active health checks that move targets between states.
//! - [`changes`]: the state generation clients follow with one waiting
//!   control session (`watch`).
//! - [`control`]: the control socket and the `ctl` client that the Docker
//!   exec API runs; stored documents and locks.
//! - [`store`]: the stored files, saved so that none is lost or half written.
//! - [`limits`]: the connection limit and each connection's timeouts.
//! - [`handover`]: passing the listening sockets to a new edge.
//! - [`watch`]: the watcher, a process of its own with the Docker socket
//!   and no network, that takes gone containers off the routes at once.
//! - [`volume`]: the volume helper — listing, reading and sizing what is in
//!   a volume, from a container that mounts it (no agent, no host paths).
//! - [`demo`]: `demo` (an HTTP server that answers its version) and `probe`
//!   (an HTTP check usable as a Docker `HEALTHCHECK` in `FROM scratch` images).
//!
//! The wire protocol lives in `changeover_core::edge`, shared with the client.

mod acme;
mod changes;
mod control;
mod demo;
mod handover;
mod health;
mod limits;
mod proxy;
mod routes;
mod sites;
mod store;
mod traffic;
mod upstream;
mod volume;
mod volume_copy;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// musl's own allocator serialises threads and is slow per call; the proxy
/// allocates on every request (bench/edge shows the difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "changeover-edge", version, about = "Changeover's edge proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy: reload routes from the state directory, open their
    /// listeners, and serve the control socket.
    Serve {
        #[arg(long, default_value = changeover_core::edge::EDGE_STATE_DIR)]
        state: PathBuf,
        /// At most this many client connections (default: about half the
        /// file descriptors the edge may open).
        #[arg(long)]
        max_connections: Option<usize>,
        /// Take the listening sockets over from the edge running on the
        /// same state directory (an upgrade with no dropped connection);
        /// start as usual when none runs.
        #[arg(long)]
        take_over: bool,
    },
    /// Send one control request (JSON) to the running proxy and print its
    /// JSON answer.
    Ctl {
        /// The request, e.g. '{"op":"routes"}', or `-` for a session:
        /// one request per stdin line, one answer per stdout line.
        request: String,
        #[arg(long, default_value = changeover_core::edge::EDGE_STATE_DIR)]
        state: PathBuf,
    },
    /// Follow the daemon's container events on its socket and keep the
    /// edge's targets true (run as the `changeover-edge-watch` container).
    Watch {
        /// The Docker socket.
        #[arg(long, default_value = "/var/run/docker.sock")]
        docker: PathBuf,
        #[arg(long, default_value = changeover_core::edge::EDGE_STATE_DIR)]
        state: PathBuf,
        /// The ID of the daemon this watcher is for (`docker info`).
        #[arg(long)]
        daemon_id: String,
    },
    /// A tiny HTTP app: `/` answers the version, `/health` answers 200
    /// (or 503 with --unhealthy). `/?sleep=MS` answers after MS milliseconds.
    Demo {
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
        /// Make `/health` always fail (a release that never becomes healthy).
        #[arg(long)]
        unhealthy: bool,
    },
    /// The volume helper (see the `volume` module): run in a container that
    /// mounts a volume at /volume.
    Volume {
        #[command(subcommand)]
        op: volume::Op,
    },
    /// GET a URL; exit 0 on a 2xx/3xx answer. For HEALTHCHECKs in images
    /// that have no shell or curl.
    Probe {
        url: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Volume { op } = cli.command {
        return volume::run(op);
    }
    if let Command::Ctl { request, state } = &cli.command {
        // No runtime needed: one blocking round trip on a Unix socket.
        return control::run_client(state, request);
    }
    if let Command::Watch {
        docker,
        state,
        daemon_id,
    } = &cli.command
    {
        return watch::run(docker, state, daemon_id);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("changeover-edge: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                state,
                max_connections,
                take_over,
            } => control::serve(state, max_connections, take_over).await,
            Command::Demo {
                version,
                listen,
                unhealthy,
            } => demo::serve(&version, &listen, unhealthy).await,
            Command::Probe { url, timeout_ms } => demo::probe(&url, timeout_ms).await,
            Command::Ctl { .. } | Command::Watch { .. } | Command::Volume { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("changeover-edge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (what `docker stop` sends to PID 1) or Ctrl-C.
pub(crate) async fn terminated() {
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
