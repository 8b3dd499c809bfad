//! bench/edge: how fast is the edge next to HAProxy and nginx?
//!
//! Three `changeover-edge demo` backends on loopback; in turn, the edge,
//! HAProxy and nginx balance them round robin with keep-alive to the
//! backends, each as a plain process on this host, each with two worker
//! threads/processes (the machine's cores); the same `wrk` load goes through
//! each: keep-alive, 64 connections, 30 s (`BENCH_EDGE_SECONDS` to change),
//! small responses. Prints requests/s and p50/p99 latency for each, and the
//! ratios edge/HAProxy and edge/nginx.
//!
//! Everything shares two cores with `wrk` itself, so absolute figures are
//! this machine's; the ratios are the point. One run of a proxy swings by
//! up to a third from one run to the next here, so the three take turns for
//! several rounds (`BENCH_EDGE_ROUNDS`, default 3), each round starting
//! with the next proxy: every run is printed, and the ratios are also given
//! between the medians.
//!
//! Then HTTPS with the same certificate on each ([`https`]), 1,100 slow
//! clients against 1,024 descriptors, and an `edge upgrade` under load.
//! `BENCH_EDGE_ONLY=https|slow|upgrade` runs one of those alone.
//!
//! Run with `make bench-edge` (needs the musl edge binary, `haproxy`, `nginx`,
//! `wrk` and `h2load`: `make setup edge`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../wrk.rs"]
mod wrk;

mod https;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use wrk::{Wrk, WrkResult};

const CONNECTIONS: u32 = 64;

/// A process stopped when dropped: asked with SIGTERM first (nginx's
/// master takes its workers down with it then; killed outright it leaves
/// them running, holding their port and taking CPU from later runs), killed
/// if it has not exited after three seconds.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {port}; its output: {}",
            std::env::temp_dir()
                .join(format!("bench-edge-{}.log", what.replace(' ', "-")))
                .display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a process whose output goes to `LOG_DIR/<what>.log` (kept when
/// something does not come up, to say why).
fn spawn(cmd: &mut Command, what: &str) -> Proc {
    let log = std::env::temp_dir().join(format!("bench-edge-{}.log", what.replace(' ', "-")));
    let file = std::fs::File::create(&log).unwrap();
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} runs (make setup installs it): {e}")),
    )
}

fn edge_binary() -> PathBuf {
    changeover_docker::edge::edge_binary().expect("the edge binary (make edge)")
}

/// The descriptors each proxy gets in the slow-clients round: a
/// container's default.
const LIMITED_DESCRIPTORS: u32 = 1024;

/// `program`, run with [`LIMITED_DESCRIPTORS`] when `limited`.
fn command(program: impl AsRef<std::ffi::OsStr>, limited: bool) -> Command {
    if !limited {
        return Command::new(program);
    }
    let mut c = Command::new("prlimit");
    c.arg(format!(
        "--nofile={LIMITED_DESCRIPTORS}:{LIMITED_DESCRIPTORS}"
    ))
    .arg("--")
    .arg(program);
    c
}

fn start_edge(dir: &Path, backends: &[u16], limited: bool) -> (Proc, u16) {
    start_edge_at(dir, backends, limited, None)
}

/// The edge with one route balancing `backends`, its state in `state`
/// (`None`: a folder of `dir`): `(process, route port)`.
fn start_edge_at(dir: &Path, backends: &[u16], limited: bool, state: Option<&Path>) -> (Proc, u16) {
    let bin = edge_binary();
    let state = state
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(if limited { "edge-limited" } else { "edge" }));
    std::fs::create_dir_all(&state).unwrap();
    let proc = spawn(
        command(&bin, limited)
            .arg("serve")
            .arg("--state")
            .arg(&state),
        "changeover-edge",
    );
    let port = free_port();
    let ctl = |request: serde_json::Value| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new(&bin)
                .arg("ctl")
                .arg(request.to_string())
                .arg("--state")
                .arg(&state)
                .output()
                .unwrap();
            if out.status.success() {
                let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_ne!(answer["result"], "error", "{request} -> {answer}");
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "the edge answers its control socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    ctl(json!({"op": "route-set", "route": {
        "port": port, "service": "bench/web",
        "health": {"path": "/health", "intervalMs": 1000, "timeoutMs": 1000,
                   "healthyThreshold": 1, "unhealthyThreshold": 3},
        "drainTimeoutMs": 5000}}));
    for (i, b) in backends.iter().enumerate() {
        let answer = ctl(json!({"op": "target-add", "port": port,
            "target": {"id": format!("b{i}"), "addr": format!("127.0.0.1:{b}"), "release": 1},
            "waitHealthyMs": 10_000}));
        assert_eq!(answer["target"]["state"], "healthy", "{answer}");
    }
    (proc, port)
}

fn start_haproxy(dir: &Path, backends: &[u16], limited: bool) -> (Proc, u16) {
    haproxy_with(dir, backends, limited, None)
}

/// HAProxy balancing `backends`, terminating TLS with `tls` when given.
fn haproxy_with(
    dir: &Path,
    backends: &[u16],
    limited: bool,
    tls: Option<&https::Certificate>,
) -> (Proc, u16) {
    let port = free_port();
    let ssl = tls
        .map(|c| format!(" ssl crt {} alpn h2,http/1.1", c.combined.display()))
        .unwrap_or_default();
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server b{i} 127.0.0.1:{b}\n"))
        .collect();
    let config = dir.join(format!("haproxy-{port}.cfg"));
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn {maxconn}\n  nbthread 2\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  timeout http-request 10s\n  option http-keep-alive\n\
             frontend bench\n  bind 127.0.0.1:{port}{ssl}\n  default_backend web\n\
             backend web\n  balance roundrobin\n  http-reuse always\n{servers}",
            // Within the descriptors, as HAProxy's docs ask (two per
            // connection, and some to spare).
            maxconn = if limited { LIMITED_DESCRIPTORS / 2 - 64 } else { 4000 },
        ),
    )
    .unwrap();
    let proc = spawn(
        command("haproxy", limited)
            .arg("-db")
            .arg("-f")
            .arg(&config),
        "haproxy",
    );
    wait_listening(port, "haproxy");
    (proc, port)
}

fn start_nginx(dir: &Path, backends: &[u16], limited: bool) -> (Proc, u16) {
    nginx_with(dir, backends, limited, None)
}

/// nginx balancing `backends`, terminating TLS with `tls` when given.
fn nginx_with(
    dir: &Path,
    backends: &[u16],
    limited: bool,
    tls: Option<&https::Certificate>,
) -> (Proc, u16) {
    let port = free_port();
    let ssl = tls
        .map(|c| {
            format!(
                " ssl http2;\n    server_name {};\n    ssl_certificate {};\n    ssl_certificate_key {}",
                https::HOST,
                c.chain.display(),
                c.key.display()
            )
        })
        .unwrap_or_default();
    let servers: String = backends
        .iter()
        .map(|b| format!("    server 127.0.0.1:{b};\n"))
        .collect();
    let prefix = dir.join(format!("nginx-{port}"));
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let config = prefix.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "daemon off;\nmaster_process on;\nuser root;\nworker_processes 2;\npid {pid};\nerror_log {err} error;\n\
             events {{ worker_connections {workers}; }}\n\
             http {{\n  access_log off;\n  client_header_timeout 10s;\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n\
               fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n\
               upstream web {{\n{servers}    keepalive 64;\n  }}\n\
               server {{\n    listen 127.0.0.1:{port}{ssl};\n    location / {{\n      proxy_pass http://web;\n\
                     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            pid = prefix.join("nginx.pid").display(),
            err = prefix.join("logs/error.log").display(),
            tmp = prefix.display(),
            // Per worker process, each with its own descriptors.
            workers = if limited { LIMITED_DESCRIPTORS / 2 } else { 4096 },
        ),
    )
    .unwrap();
    let proc = spawn(
        command("nginx", limited)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config),
        "nginx",
    );
    wait_listening(port, "nginx");
    (proc, port)
}

fn run(name: &str, port: u16, seconds: u64) -> WrkResult {
    let url = format!("http://127.0.0.1:{port}/");
    // A short warm-up: connections open, pools fill.
    Wrk::start(&url, CONNECTIONS, Duration::from_secs(2)).finish();
    let r = Wrk::start(&url, CONNECTIONS, Duration::from_secs(seconds)).finish();
    println!(
        "  {name:<8} {:>10.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests, {} non-2xx, {} socket errors)",
        r.requests_per_sec,
        r.p50_ms.unwrap_or(f64::NAN),
        r.p99_ms.unwrap_or(f64::NAN),
        r.requests,
        r.non_2xx,
        r.socket_errors
    );
    r
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_EDGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let bin = edge_binary();
    let backends: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _backends: Vec<Proc> = backends
        .iter()
        .map(|p| {
            let proc = spawn(
                Command::new(&bin)
                    .args(["demo", "--version", "v1", "--listen"])
                    .arg(format!("127.0.0.1:{p}")),
                "the demo backend",
            );
            wait_listening(*p, "the demo backend");
            proc
        })
        .collect();
    // `BENCH_EDGE_ONLY=https` (or `slow`, `upgrade`): that section alone.
    match std::env::var("BENCH_EDGE_ONLY").as_deref() {
        Ok("https") => return https::run(dir.path(), &backends, seconds.min(15)),
        Ok("slow") => return slow_clients(dir.path(), &backends, seconds.min(15)),
        Ok("upgrade") => return upgrade_under_load(dir.path(), &backends, seconds.clamp(8, 15)),
        _ => {}
    }
    println!(
        "bench/edge: 3 demo backends on loopback; wrk -t2 -c{CONNECTIONS} -d{seconds}s keep-alive through each proxy in turn (release builds, this machine)"
    );
    let rounds: usize = std::env::var("BENCH_EDGE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let (_edge_proc, edge_port) = start_edge(dir.path(), &backends, false);
    let (_haproxy_proc, haproxy_port) = start_haproxy(dir.path(), &backends, false);
    let (_nginx_proc, nginx_port) = start_nginx(dir.path(), &backends, false);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let p99 = |r: &WrkResult| r.p99_ms.unwrap_or(f64::NAN);
    let mut all: [Vec<WrkResult>; 3] = Default::default();
    let proxies = [
        ("edge", edge_port),
        ("haproxy", haproxy_port),
        ("nginx", nginx_port),
    ];
    for round in 1..=rounds {
        // Each round starts with the next proxy, so that over three rounds
        // each runs first, second and third once: this machine's speed
        // drifts within a minute, and a fixed order would always hand the
        // same proxy the same phase of it.
        let order: Vec<usize> = (0..3).map(|i| (i + round - 1) % 3).collect();
        let names: Vec<&str> = order.iter().map(|&i| proxies[i].0).collect();
        println!(
            " round {round} of {rounds} (in this order: {})",
            names.join(", ")
        );
        let mut results: [Option<WrkResult>; 3] = Default::default();
        for &i in &order {
            let (name, port) = proxies[i];
            results[i] = Some(run(name, port, seconds));
        }
        let [edge, haproxy, nginx] = results.map(|r| r.expect("every proxy ran"));
        println!(
            "  round {round}: edge/haproxy throughput {:.2}x, p99 {:.2}x; edge/nginx throughput {:.2}x, p99 {:.2}x",
            ratio(edge.requests_per_sec, haproxy.requests_per_sec),
            ratio(p99(&edge), p99(&haproxy)),
            ratio(edge.requests_per_sec, nginx.requests_per_sec),
            ratio(p99(&edge), p99(&nginx))
        );
        for (i, r) in [edge, haproxy, nginx].into_iter().enumerate() {
            all[i].push(r);
        }
    }
    let median = |v: &[WrkResult], f: &dyn Fn(&WrkResult) -> f64| -> f64 {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(|a, b| a.total_cmp(b));
        let n = xs.len();
        if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        }
    };
    let rps = |r: &WrkResult| r.requests_per_sec;
    println!(" medians over {rounds} round(s)");
    for (i, name) in ["edge", "haproxy", "nginx"].iter().enumerate() {
        println!(
            "  {name:<8} {:>10.0} req/s   p99 {:>7.2} ms",
            median(&all[i], &rps),
            median(&all[i], &p99)
        );
    }
    println!(
        "  edge/haproxy: throughput {:.2}x, p99 {:.2}x   (goal: throughput >= 1.20x, p99 <= 1.00x)",
        ratio(median(&all[0], &rps), median(&all[1], &rps)),
        ratio(median(&all[0], &p99), median(&all[1], &p99))
    );
    println!(
        "  edge/nginx:   throughput {:.2}x, p99 {:.2}x",
        ratio(median(&all[0], &rps), median(&all[2], &rps)),
        ratio(median(&all[0], &p99), median(&all[2], &p99))
    );
    let failures = all
        .iter()
        .flatten()
        .map(|r| r.non_2xx + r.socket_errors)
        .sum::<u64>();
    println!("  failed requests across every run: {failures}");
    https::run(dir.path(), &backends, seconds.min(15));
    slow_clients(dir.path(), &backends, seconds.min(15));
    upgrade_under_load(dir.path(), &backends, seconds.clamp(8, 15));
}

/// The edge's `hello` on `state`, if it answers.
fn hello(state: &Path) -> Option<serde_json::Value> {
    let out = Command::new(edge_binary())
        .arg("ctl")
        .arg(r#"{"op":"hello"}"#)
        .arg("--state")
        .arg(state)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Replacing a running edge under `wrk` load, two ways: the new edge taking
/// the listening sockets over (what `changeover edge upgrade` does), and —
/// the baseline — stopping the old one, then starting the new one (how an
/// edge older than protocol 5 has to be replaced).
fn upgrade_under_load(dir: &Path, backends: &[u16], seconds: u64) {
    println!(
        " edge upgrade under load: wrk -t2 -c{CONNECTIONS} -d{seconds}s keep-alive; the new edge starts 3 s in"
    );
    let bin = edge_binary();
    for (how, take_over) in [("hand-over", true), ("stop, then start (baseline)", false)] {
        let base = dir.join(format!("upgrade-{take_over}"));
        std::fs::create_dir_all(&base).unwrap();
        let (old, port) = start_edge(&base, backends, false);
        let state = base.join("edge");
        let load = Wrk::start(
            &format!("http://127.0.0.1:{port}/"),
            CONNECTIONS,
            Duration::from_secs(seconds),
        );
        std::thread::sleep(Duration::from_secs(3));
        let started = Instant::now();
        let new = if take_over {
            let new = spawn(
                Command::new(&bin)
                    .args(["serve", "--take-over", "--state"])
                    .arg(&state),
                "the new edge",
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            // Until the new one answers: the old one has run 3 s longer.
            while hello(&state)
                .and_then(|h| h["uptimeMs"].as_u64())
                .is_none_or(|u| u > started.elapsed().as_millis() as u64 + 500)
            {
                assert!(Instant::now() < deadline, "the new edge takes over");
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(old); // SIGTERM: it drains and exits
            new
        } else {
            drop(old);
            let new = spawn(
                Command::new(&bin).arg("serve").arg("--state").arg(&state),
                "the new edge",
            );
            wait_listening(port, "the new edge");
            new
        };
        let took = started.elapsed();
        let r = load.finish();
        println!(
            "  {how:<28} {} requests, {} non-2xx, {} socket errors ({}); {:.0} req/s over the run; old edge gone and new one serving after {} ms",
            r.requests,
            r.non_2xx,
            r.socket_errors,
            if r.socket_detail.is_empty() { "none" } else { r.socket_detail.as_str() },
            r.requests_per_sec,
            took.as_millis()
        );
        drop(new);
    }
    println!("  (target for the hand-over: 0 failed requests)");
}

/// Starts a proxy over the backends (limited or not): its process and port.
type StartProxy = fn(&Path, &[u16], bool) -> (Proc, u16);

/// Slow clients a proxy sees at once in the slow-clients round.
const SLOW_CLIENTS: usize = 1100;

/// Each proxy again, limited to [`LIMITED_DESCRIPTORS`], with
/// [`SLOW_CLIENTS`] connections sending a request head a byte a second (and
/// reopened as soon as the proxy closes one, as a slowloris client does):
/// how many ordinary requests, each a new client, are still answered, and
/// their p99 — next to the same proxy's p99 without the slow clients.
fn slow_clients(dir: &Path, backends: &[u16], seconds: u64) {
    // This process holds the slow connections: more than a default limit.
    let _ = rlimit::increase_nofile_limit(8192);
    println!(
        " slow clients: {SLOW_CLIENTS} connections sending a head a byte a second (reopened when closed); \
         each proxy limited to {LIMITED_DESCRIPTORS} descriptors, header timeout 10 s; \
         4 ordinary clients, a new connection per request, {seconds} s"
    );
    let starts: [(&str, StartProxy); 3] = [
        ("edge", start_edge),
        ("haproxy", start_haproxy),
        ("nginx", start_nginx),
    ];
    for (name, start) in starts {
        let (_proc, port) = start(dir, backends, true);
        let calm_s = seconds.min(5);
        let calm = ordinary(port, Duration::from_secs(calm_s));
        let attack = Slowloris::start(port, SLOW_CLIENTS);
        std::thread::sleep(Duration::from_secs(2));
        let load = ordinary(port, Duration::from_secs(seconds));
        let reopened = attack.stop();
        println!(
            "  {name:<8} answered {:>5.1}% of {} ordinary requests, p99 {:>8} ms   (before, without slow clients, {calm_s} s: {:.1}% of {}, p99 {:.2} ms; slow connections reopened: {reopened})",
            load.share() * 100.0,
            load.sent,
            millis(load.p99_ms()),
            calm.share() * 100.0,
            calm.sent,
            calm.p99_ms(),
        );
    }
    println!("  (target for the edge: >= 95% answered)");
}

/// What ordinary clients got.
struct Ordinary {
    sent: u64,
    latencies_us: Vec<u64>,
}

impl Ordinary {
    fn share(&self) -> f64 {
        if self.sent == 0 {
            return f64::NAN;
        }
        self.latencies_us.len() as f64 / self.sent as f64
    }

    fn p99_ms(&self) -> f64 {
        // NaN when nothing was answered; `millis` prints it as a dash.
        let mut l = self.latencies_us.clone();
        if l.is_empty() {
            return f64::NAN;
        }
        l.sort_unstable();
        let i = ((l.len() as f64) * 0.99).ceil() as usize;
        l[i.clamp(1, l.len()) - 1] as f64 / 1000.0
    }
}

/// Four clients, each sending `GET /` on a new connection, one after
/// another, for `duration`; a request counts as answered when a 200 came
/// back within 2 s.
fn ordinary(port: u16, duration: Duration) -> Ordinary {
    use std::io::{BufRead, BufReader, Write};
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let deadline = Instant::now() + duration;
                let (mut sent, mut latencies) = (0u64, Vec::new());
                while Instant::now() < deadline {
                    sent += 1;
                    let started = Instant::now();
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let answered = (|| -> std::io::Result<bool> {
                        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                        c.set_read_timeout(Some(Duration::from_secs(2)))?;
                        c.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
                        let mut line = String::new();
                        BufReader::new(c).read_line(&mut line)?;
                        Ok(line.starts_with("HTTP/1.1 200"))
                    })()
                    .unwrap_or(false);
                    if answered {
                        latencies.push(started.elapsed().as_micros() as u64);
                    }
                }
                (sent, latencies)
            })
        })
        .collect();
    let mut all = Ordinary {
        sent: 0,
        latencies_us: Vec::new(),
    };
    for c in clients {
        let (sent, latencies) = c.join().unwrap();
        all.sent += sent;
        all.latencies_us.extend(latencies);
    }
    all
}

/// Slow clients on a thread of their own.
struct Slowloris {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Slowloris {
    fn start(port: u16, n: usize) -> Slowloris {
        use std::io::Write;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let open = || {
                let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
                c.set_nonblocking(true).ok()?;
                c.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n").ok()?;
                Some(c)
            };
            let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
            let mut reopened = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let tick = Instant::now();
                for c in conns.iter_mut() {
                    // Still open (nothing to read yet) and taking a byte.
                    let alive = c.as_mut().is_some_and(|s| {
                        let mut probe = [0u8; 512];
                        let waiting = matches!(std::io::Read::read(s, &mut probe),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                        waiting && s.write_all(b"X").is_ok()
                    });
                    if !alive {
                        *c = open();
                        reopened += 1;
                    }
                    if flag.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
            reopened
        });
        Slowloris { stop, thread }
    }

    /// Stops and closes them; how many were reopened.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// A latency in milliseconds, or a dash when there is none (nothing answered).
fn millis(ms: f64) -> String {
    if ms.is_nan() {
        "-".to_string()
    } else {
        format!("{ms:.2}")
    }
}
