//! bench/udp: UDP through the edge against the same app with its port
//! published by Docker itself (`-p PORT:5353/udp`, which on loopback is
//! Docker's userland proxy), in the same run.
//!
//! One replica of the demo app echoing UDP (`demo --udp`), deployed as a
//! stack with `PORT:5353/udp` (the edge carries it per client flow), and
//! one container of the same image published directly. Each run sends
//! from `CLIENTS` client sockets (a flow each) for `SECONDS`, every client
//! keeping `WINDOW` datagrams of `PAYLOAD` bytes in flight; a client that
//! gets no echo within `WAIT` counts a stall and sends its window again. The runs alternate
//! (direct, edge, direct, edge, …) so both see the machine alike; the
//! figures are the medians of `ROUNDS` runs each, and the edge's as a
//! ratio of the direct publish's. Latency: a lone client's round trips
//! (one datagram in flight).
//!
//! Run with `make bench-udp` (needs the musl edge binary: `make edge`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use changeover_application::{services as deploy, Environment};
use changeover_core::stack;

const CLIENTS: usize = 16;
const WINDOW: usize = 8;
const PAYLOAD: usize = 512;
const SECONDS: u64 = 4;
const ROUNDS: usize = 3;
const WAIT: Duration = Duration::from_millis(200);
const LATENCY_SAMPLES: usize = 5_000;

fn quiet() -> changeover_core::rollout::EventSink {
    Arc::new(|_| {})
}

/// What one run got.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    answered: u64,
    /// Times a client's whole window went unanswered for `WAIT`.
    lost: u64,
    seconds: f64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.answered as f64 / self.seconds
    }

    fn mib_per_second(&self) -> f64 {
        self.per_second() * PAYLOAD as f64 / (1024.0 * 1024.0)
    }
}

/// `CLIENTS` clients with `WINDOW` datagrams each in flight on `port`.
fn throughput(port: u16) -> Run {
    let started = Instant::now();
    let until = started + Duration::from_secs(SECONDS);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let s = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
                s.connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                let payload = vec![b'x'; PAYLOAD];
                let mut buf = vec![0u8; PAYLOAD + 64];
                let (mut answered, mut lost) = (0u64, 0u64);
                for _ in 0..WINDOW {
                    let _ = s.send(&payload);
                }
                while Instant::now() < until {
                    match s.recv(&mut buf) {
                        Ok(_) => answered += 1,
                        // Nothing within the wait: the window stalled, its
                        // datagrams presumed lost; a new one goes out.
                        Err(_) => {
                            lost += 1;
                            for _ in 1..WINDOW {
                                let _ = s.send(&payload);
                            }
                        }
                    }
                    let _ = s.send(&payload);
                }
                (answered, lost)
            })
        })
        .collect();
    let mut run = Run::default();
    for t in threads {
        let (a, l) = t.join().unwrap();
        run.answered += a;
        run.lost += l;
    }
    run.seconds = started.elapsed().as_secs_f64();
    run
}

/// Round trips of one client with one datagram in flight: (p50, p99) µs.
fn latency(port: u16) -> (u64, u64) {
    let s = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let payload = vec![b'y'; 64];
    let mut buf = [0u8; 256];
    let mut took: Vec<u64> = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        s.send(&payload).unwrap();
        if s.recv(&mut buf).is_ok() {
            took.push(t.elapsed().as_micros() as u64);
        }
    }
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    (at(0.50), at(0.99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn deployed(env: &Environment, name: &str, port: u16) {
    let file = format!(
        "name: {name}\n{}",
        changeover_tests::udp_echo_service(
            "echo",
            &format!("\"{port}:5353/udp\""),
            "1s",
            "    x-changeover:\n      deploy_timeout: 30s\n"
        )
    );
    let st = stack::parse(&file, "bench.yml", None)
        .stack
        .expect("the bench stack is valid");
    deploy::deploy_stack(env, &st, quiet())
        .await
        .expect("the echo service deploys");
}

#[tokio::main]
async fn main() {
    let env = changeover_tests::default_environment();
    let docker = env.docker().await.expect("the daemon answers");
    deploy::ensure_sandbox_images(&docker)
        .await
        .expect("demo images");
    let edge_port = changeover_tests::free_port();
    let name = format!("bench-udp-{}", std::process::id());
    deployed(&env, &name, edge_port).await;
    let published = changeover_tests::DirectUdpEcho::start(&format!("{name}-direct"));
    let direct_port = published.port;
    changeover_tests::udp_echoes(edge_port, Duration::from_secs(20));
    println!(
        "bench/udp: the demo's UDP echo through the edge (port {edge_port}) and published by Docker (port {direct_port}); {CLIENTS} clients x {WINDOW} datagrams of {PAYLOAD} B in flight, {SECONDS} s per run, {ROUNDS} runs each, alternating"
    );
    let (mut d_runs, mut e_runs) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let d = throughput(direct_port);
        let e = throughput(edge_port);
        println!(
            "  run {round}: direct {:.0} datagrams/s ({} stalls), edge {:.0} datagrams/s ({} stalls)",
            d.per_second(),
            d.lost,
            e.per_second(),
            e.lost
        );
        d_runs.push(d);
        e_runs.push(e);
    }
    let d = median(d_runs.iter().map(Run::per_second).collect());
    let e = median(e_runs.iter().map(Run::per_second).collect());
    let d_mib = median(d_runs.iter().map(Run::mib_per_second).collect());
    let e_mib = median(e_runs.iter().map(Run::mib_per_second).collect());
    let lost = |runs: &[Run]| runs.iter().map(|r| r.lost).sum::<u64>();
    let (d_lat, e_lat) = (latency(direct_port), latency(edge_port));
    println!("bench/udp results (release build, this machine)");
    println!(
        "  throughput: edge {e:.0} datagrams/s ({e_mib:.1} MiB/s), direct publish {d:.0} datagrams/s ({d_mib:.1} MiB/s); ratio {:.2}x",
        e / d
    );
    println!(
        "  stalls (a client's window unanswered for {} ms): edge {}, direct {}",
        WAIT.as_millis(),
        lost(&e_runs),
        lost(&d_runs),
    );
    println!(
        "  round trip, one client: edge p50 {} µs p99 {} µs; direct p50 {} µs p99 {} µs",
        e_lat.0, e_lat.1, d_lat.0, d_lat.1
    );
    drop(published);
    changeover_tests::remove_stack(&name, &[edge_port]);
}
