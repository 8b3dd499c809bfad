//! `changeover-edge`: the command line of the edge library
//! (`changeover_edge`) — the proxy's `serve`, its `ctl` client, the
//! watcher, the volume helper, and the demo app with its `probe`.

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
        /// Also echo UDP datagrams on this address (each answered with
        /// itself, a space and the version).
        #[arg(long)]
        udp: Option<String>,
        /// Also serve a line protocol that is not HTTP on this address: the
        /// server speaks first (`VERSION ready`, as SMTP or MySQL do), then
        /// every line comes back with the version after it.
        #[arg(long)]
        tcp: Option<String>,
    },
    /// The volume helper (see the `volume` module): run in a container that
    /// mounts a volume at /volume.
    Volume {
        #[command(subcommand)]
        op: changeover_edge::volume::Op,
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
        return changeover_edge::volume::run(op);
    }
    if let Command::Ctl { request, state } = &cli.command {
        // No runtime needed: one blocking round trip on a Unix socket.
        return changeover_edge::ctl::run_client(state, request);
    }
    if let Command::Watch {
        docker,
        state,
        daemon_id,
    } = &cli.command
    {
        return changeover_edge::watch::run(docker, state, daemon_id);
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
            } => changeover_edge::serve_process(state, max_connections, take_over).await,
            Command::Demo {
                version,
                listen,
                unhealthy,
                udp,
                tcp,
            } => {
                if let Some(addr) = udp {
                    let echo = changeover_edge::demo::udp_echo(&addr, &version).await?;
                    tokio::spawn(echo);
                }
                if let Some(addr) = tcp {
                    let lines = changeover_edge::demo::line_server(&addr, &version).await?;
                    tokio::spawn(lines);
                }
                changeover_edge::demo::serve(&version, &listen, unhealthy).await
            }
            Command::Probe { url, timeout_ms } => {
                changeover_edge::demo::probe(&url, timeout_ms).await
            }
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
