//! The edge binary as a process on loopback, with `demo` processes as its
//! targets: what clients see through it (HTTP/1.1 and h2c), a target that
//! dies between two health checks, and drains with requests in flight;
//! and, with a scripted origin, the HTTP/1.1 the edge speaks upstream.
//! No Docker here: these are the proxy's own behaviours; the deploy tests
//! exercise it inside its container.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_changeover-edge");

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Edge {
    state: tempfile::TempDir,
    _proc: Proc,
    port: u16,
}

impl Edge {
    /// An edge with one route on a free port; `health_interval_ms` paces its
    /// active checks, `drain_timeout_ms` bounds drains.
    fn start(health_interval_ms: u64, drain_timeout_ms: u64) -> Edge {
        Edge::start_with(health_interval_ms, drain_timeout_ms, json!({}), &[])
    }

    /// An edge whose route also has `extra` (e.g. its `timeouts`), run
    /// under `wrapper` (e.g. `prlimit --nofile=…`) when given.
    fn start_with(
        health_interval_ms: u64,
        drain_timeout_ms: u64,
        extra: Value,
        wrapper: &[&str],
    ) -> Edge {
        let state = tempfile::tempdir().unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["serve", "--state"])
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let edge = Edge {
            state,
            _proc: Proc(child),
            port: free_port(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while edge.try_ctl(&json!({"op": "hello"})).is_none() {
            assert!(Instant::now() < deadline, "the edge answers on its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let route = route_spec(
            edge.port,
            "t/web",
            health_interval_ms,
            drain_timeout_ms,
            extra,
        );
        edge.ctl(&json!({"op": "route-set", "route": route}));
        edge
    }

    /// Kills the edge and starts it again on the same state directory.
    fn restart(&mut self) {
        self.restart_with(&[])
    }

    /// [`Edge::restart`] under `wrapper` (e.g. `env NAME=VALUE`).
    fn restart_with(&mut self, wrapper: &[&str]) {
        let mut serve = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        serve
            .args(["serve", "--state"])
            .arg(self.state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Kill the old one first: it holds the control socket and the port.
        drop(std::mem::replace(
            &mut self._proc,
            Proc(Command::new("true").spawn().unwrap()),
        ));
        self._proc = Proc(serve.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_ctl(&json!({"op": "hello"})).is_none() {
            assert!(Instant::now() < deadline, "the edge answers again");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_ctl(&self, request: &Value) -> Option<Value> {
        let out = Command::new(BIN)
            .arg("ctl")
            .arg(request.to_string())
            .arg("--state")
            .arg(self.state.path())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn ctl(&self, request: &Value) -> Value {
        let answer = self.try_ctl(request).expect("the edge answers");
        assert_ne!(answer["result"], "error", "{request} -> {answer}");
        answer
    }

    /// Adds the target listening on `addr` as `id` and waits until healthy.
    fn add_target(&self, id: &str, addr: &str, release: u32) {
        self.add_target_on(self.port, id, addr, release)
    }

    /// [`Edge::add_target`] on the route of `route_port`.
    fn add_target_on(&self, route_port: u16, id: &str, addr: &str, release: u32) {
        let answer = self.ctl(&json!({"op": "target-add", "port": route_port,
            "target": {"id": id, "addr": addr, "release": release},
            "waitHealthyMs": 10_000}));
        assert_eq!(answer["target"]["state"], "healthy", "{answer}");
    }

    /// Starts a demo target answering `version` and adds it as `id`.
    fn add_demo(&self, id: &str, version: &str, release: u32) -> Proc {
        self.add_demo_on(self.port, id, version, release)
    }

    /// [`Edge::add_demo`] on the route of `route_port`.
    fn add_demo_on(&self, route_port: u16, id: &str, version: &str, release: u32) -> Proc {
        let port = free_port();
        let demo = Proc(
            Command::new(BIN)
                .args(["demo", "--version", version, "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        self.add_target_on(route_port, id, &format!("127.0.0.1:{port}"), release);
        demo
    }
}

/// A route's spec for `route-set`, with `extra` (its `timeouts`, `hosts`...).
fn route_spec(
    port: u16,
    service: &str,
    health_interval_ms: u64,
    drain_timeout_ms: u64,
    extra: Value,
) -> Value {
    let mut route = json!({
        "port": port,
        "service": service,
        "health": {"path": "/health", "intervalMs": health_interval_ms, "timeoutMs": 500,
                   "healthyThreshold": 1, "unhealthyThreshold": 3},
        "drainTimeoutMs": drain_timeout_ms,
    });
    if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
        route.extend(extra.clone());
    }
    route
}

/// `(status, release header, body)` of a GET through the edge.
async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    port: u16,
    path: &str,
) -> (u16, String, String, hyper::Version) {
    let res = client
        .get(format!("http://127.0.0.1:{port}{path}").parse().unwrap())
        .await
        .expect("the edge answers");
    let status = res.status().as_u16();
    let version = res.version();
    let release = res
        .headers()
        .get("x-changeover-release")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        release,
        String::from_utf8_lossy(&body).to_string(),
        version,
    )
}

fn http1() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_clients_are_served_by_healthy_targets_in_turn() {
    let edge = Edge::start(500, 5_000);
    let _a = edge.add_demo("a", "va", 1);
    let _b = edge.add_demo("b", "vb", 2);
    let client = http1();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, release, body, version) = get(&client, edge.port, "/").await;
        assert_eq!((status, version), (200, hyper::Version::HTTP_11));
        assert!(
            body.starts_with(if release == "1" { "va" } else { "vb" }),
            "{release} {body}"
        );
        seen.push(release);
    }
    seen.sort();
    assert_eq!(seen, vec!["1", "1", "2", "2"], "round robin over both");

    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let (status, _, body, version) = get(&h2, edge.port, "/").await;
    assert_eq!(
        (status, version),
        (200, hyper::Version::HTTP_2),
        "h2c with prior knowledge"
    );
    assert!(body.starts_with('v'), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_dies_between_health_checks_costs_no_request() {
    // Checks every 30 s: only passive detection can notice the dead target.
    let edge = Edge::start(30_000, 5_000);
    let _a = edge.add_demo("a", "va", 1);
    let b = edge.add_demo("b", "vb", 2);
    drop(b); // SIGKILL: its port now refuses connections
    let client = http1();
    for i in 0..20 {
        let (status, release, _, _) = get(&client, edge.port, "/").await;
        assert_eq!(
            (status, release.as_str()),
            (200, "1"),
            "request {i} is retried on a"
        );
    }
    let routes = edge.ctl(&json!({"op": "routes", "service": "t/web"}));
    let b_state = routes["routes"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "b")
        .map(|t| t["state"].clone());
    assert_eq!(b_state, Some(json!("unhealthy")), "{routes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_in_flight_requests_finish_and_sends_no_new_ones() {
    let edge = Edge::start(500, 10_000);
    let _a = edge.add_demo("a", "va", 1);
    let _b = edge.add_demo("b", "vb", 2);
    let port = edge.port;
    // Two slow requests: round robin puts one on each target.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let r = get(&http1(), port, "/?sleep=1500").await;
                (r, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = edge.state.path().to_path_buf();
    let drain = tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .arg("ctl")
            .arg(json!({"op": "target-drain", "port": port, "id": "a"}).to_string())
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            Instant::now(),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While a drains, every new request goes to b.
    let client = http1();
    for i in 0..5 {
        let (status, release, _, _) = get(&client, port, "/").await;
        assert_eq!(
            (status, release.as_str()),
            (200, "2"),
            "request {i} during the drain"
        );
    }
    let (answer, drained_at) = drain.await.unwrap();
    assert_eq!(answer["result"], "drained", "{answer}");
    assert_eq!(answer["abandoned"], 0, "nothing was cut off: {answer}");
    for s in slow {
        let ((status, release, _, _), done_at) = s.await.unwrap();
        assert_eq!(status, 200, "the in-flight request on {release} finished");
        if release == "1" {
            assert!(done_at <= drained_at, "the drain waited for a's request");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_gives_up_after_the_routes_drain_timeout() {
    let edge = Edge::start(500, 300);
    let _a = edge.add_demo("a", "va", 1);
    let port = edge.port;
    let slow = tokio::spawn(async move { get(&http1(), port, "/?sleep=3000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = edge.ctl(&json!({"op": "target-drain", "port": port, "id": "a"}));
    assert_eq!(
        answer["abandoned"], 1,
        "one request was still running: {answer}"
    );
    // The target process still runs, so the request itself completes.
    let (status, _, _, _) = slow.await.unwrap();
    assert_eq!(status, 200);
}

/// A GET with extra headers: `(status, release, set-cookie, body)`.
async fn get_with(port: u16, headers: &[(&str, &str)]) -> (u16, String, Option<String>, String) {
    let mut req = hyper::Request::get(format!("http://127.0.0.1:{port}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = http1()
        .request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("the edge answers");
    let status = res.status().as_u16();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let release = header("x-changeover-release").unwrap_or_default();
    let cookie = header("set-cookie");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        release,
        cookie,
        String::from_utf8_lossy(&body).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_is_sticky_per_client_previews_see_the_new_release_and_a_switch_is_instant() {
    let edge = Edge::start(500, 5_000);
    let _a = edge.add_demo("old", "va", 1);
    let _b = edge.add_demo("new", "vb", 2);
    let port = edge.port;
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [{"release": 1, "weight": 80}, {"release": 2, "weight": 20}], "preview": null, "maintenance": null}}));
    let mut on_new = 0;
    let mut a_cookie = None;
    for _ in 0..500 {
        let (status, release, cookie, _) = get_with(port, &[]).await;
        assert_eq!(status, 200);
        let cookie = cookie.expect("a new client gets the sticky cookie");
        assert!(cookie.starts_with("changeover-release="), "{cookie}");
        if release == "2" {
            on_new += 1;
        }
        a_cookie = Some((cookie.split(';').next().unwrap().to_string(), release));
    }
    assert!(
        (60..=140).contains(&on_new),
        "about 20% of 500 new clients on release 2: {on_new}"
    );
    let (cookie, release) = a_cookie.unwrap();
    for _ in 0..30 {
        let (_, again, set, _) = get_with(port, &[("cookie", &cookie)]).await;
        assert_eq!(
            again, release,
            "a client keeps its release while the split holds"
        );
        assert_eq!(set, None, "and gets no new cookie");
    }

    // Preview: the new release gets nothing except for the token holder.
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [{"release": 1, "weight": 100}, {"release": 2, "weight": 0}], "preview": {"release": 2, "token": "team"}, "maintenance": null}}));
    for _ in 0..10 {
        assert_eq!(get_with(port, &[]).await.1, "1");
        assert_eq!(
            get_with(port, &[("x-changeover-preview", "team")]).await.1,
            "2"
        );
        assert_eq!(
            get_with(port, &[("cookie", "changeover-preview=team")])
                .await
                .1,
            "2"
        );
        assert_eq!(
            get_with(port, &[("x-changeover-preview", "guess")]).await.1,
            "1"
        );
    }

    // Switch: the request after the answer goes to release 2, every one.
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [{"release": 1, "weight": 0}, {"release": 2, "weight": 100}], "preview": null, "maintenance": null}}));
    for _ in 0..20 {
        assert_eq!(
            get_with(port, &[("cookie", &cookie)]).await.1,
            "2",
            "stickiness never beats a 0 share"
        );
    }

    // Maintenance: a 503 page, no container involved.
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [], "preview": null, "maintenance": "back at 10:00"}}));
    let (status, release, _, body) = get_with(port, &[]).await;
    assert_eq!(
        (status, release.as_str(), body.as_str()),
        (503, "", "back at 10:00\n")
    );

    // Every request above is in the per-release figures.
    let routes = edge.ctl(&json!({"op": "routes", "service": "t/web"}));
    let metrics = routes["routes"][0]["metrics"].as_array().unwrap().clone();
    let total: u64 = metrics
        .iter()
        .map(|m| m["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 500 + 30 + 40 + 20, "{metrics:?}");
    let twos: u64 = metrics
        .iter()
        .map(|m| m["responses"][0].as_u64().unwrap())
        .sum();
    assert_eq!(twos, total, "all 2xx");
    assert!(metrics
        .iter()
        .all(|m| m["p99Us"].as_u64().is_some() && m["bytes"].as_u64().unwrap() > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_policies_survive_an_edge_restart() {
    let mut edge = Edge::start(500, 5_000);
    let _a = edge.add_demo("old", "va", 1);
    let _b = edge.add_demo("new", "vb", 2);
    edge.ctl(&json!({"op": "traffic-set", "port": edge.port,
        "policy": {"weights": [{"release": 1, "weight": 0}, {"release": 2, "weight": 100}], "preview": {"release": 1, "token": "t"}, "maintenance": null}}));
    edge.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok((200, release, _, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::spawn(get_with(edge.port, &[])),
        )
        .await
        {
            assert_eq!(release, "2", "the switch holds after the restart");
            break;
        }
        assert!(Instant::now() < deadline, "the restarted edge serves");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get_with(edge.port, &[("x-changeover-preview", "t")])
            .await
            .1,
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_relays_connections_switches_new_ones_and_closes_drained_ones() {
    let edge = Edge::start(200, 1500);
    let port = edge.port;
    edge.ctl(&json!({"op": "route-set", "route": {
        "port": port,
        "service": "t/web",
        "health": {"path": null, "intervalMs": 200, "timeoutMs": 500,
                   "healthyThreshold": 1, "unhealthyThreshold": 3},
        "drainTimeoutMs": 1500,
        "protocol": "tcp",
    }}));
    let _a = edge.add_demo("old", "va", 1);
    let _b = edge.add_demo("new", "vb", 2);
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [{"release": 1, "weight": 100}, {"release": 2, "weight": 0}]}}));
    let connect =
        || std::io::BufReader::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut long = connect();
    let (head, body) = exchange_on(&mut long, GET_ROOT).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("va"), "{body}");
    assert!(
        !head.to_ascii_lowercase().contains("x-changeover-release"),
        "bytes are relayed as they are, not proxied per request: {head}"
    );
    // Switch: new connections go to release 2; the open one stays.
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [{"release": 1, "weight": 0}, {"release": 2, "weight": 100}]}}));
    for _ in 0..10 {
        assert!(exchange_on(&mut connect(), GET_ROOT)
            .unwrap()
            .1
            .starts_with(b"vb"));
    }
    assert!(
        exchange_on(&mut long, GET_ROOT)
            .unwrap()
            .1
            .starts_with(b"va"),
        "an open connection stays on its release"
    );
    // Draining the old target: the open connection lasts until the drain
    // timeout, then it is closed.
    let started = Instant::now();
    let drained = edge.ctl(&json!({"op": "target-drain", "port": port, "id": "old"}));
    assert_eq!(drained["abandoned"], 1, "{drained}");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    long.get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert!(
        exchange_on(&mut long, GET_ROOT).is_err(),
        "closed after the drain timeout"
    );
    // Metrics count connections per release.
    let routes = edge.ctl(&json!({"op": "routes"}));
    let metrics = routes["routes"][0]["metrics"].as_array().unwrap();
    let count = |r: u64| {
        metrics
            .iter()
            .find(|m| m["release"] == r)
            .map(|m| m["requests"].as_u64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!((count(1), count(2)), (1, 10), "{routes}");
    // Maintenance closes new connections without touching a target.
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [], "maintenance": "later"}}));
    let mut c = connect();
    c.get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert!(
        exchange_on(&mut c, GET_ROOT).is_err(),
        "in maintenance a TCP connection is closed"
    );
}

/// A scripted HTTP/1.1 origin on loopback (a thread per connection), to see
/// the edge relay what the demo app never sends. It counts the connections
/// that carried a request other than a health check.
struct Origin {
    addr: String,
    app_connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Origin {
    fn start() -> Origin {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app_connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = app_connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let _ = origin_connection(conn, &counter);
                });
            }
        });
        Origin {
            addr,
            app_connections,
        }
    }

    fn app_connections(&self) -> usize {
        self.app_connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn origin_connection(
    conn: std::net::TcpStream,
    app_connections: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut out = conn.try_clone()?;
    let mut rd = BufReader::new(conn);
    let mut served = 0;
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let (method, path) = (
            words.next().unwrap_or("").to_string(),
            words.next().unwrap_or("").to_string(),
        );
        let (mut length, mut chunked) = (0usize, false);
        let mut forwarded = String::new();
        let mut host = String::new();
        loop {
            let mut h = String::new();
            rd.read_line(&mut h)?;
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if h.starts_with("host:") {
                host.push_str(&h);
                host.push('\n');
            }
            if h.starts_with("x-forwarded-") {
                forwarded.push_str(&h);
                forwarded.push('\n');
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            chunked |= h == "transfer-encoding: chunked";
        }
        let body = if chunked {
            read_chunked(&mut rd)?
        } else {
            let mut body = vec![0u8; length];
            rd.read_exact(&mut body)?;
            body
        };
        if served == 0 && path != "/health" {
            app_connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        served += 1;
        let ok = |body: &str| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let answer = match (method.as_str(), path.as_str()) {
            (_, "/health") => ok("ok"),
            (_, "/chunked") => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n"
                .to_string(),
            (_, "/old") => {
                out.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil the connection closes")?;
                return Ok(());
            }
            (_, "/closing") => {
                out.write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
                )?;
                return Ok(());
            }
            (_, "/hints") => {
                "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
                HTTP/1.1 100 Continue\r\n\r\n"
                    .to_string()
                    + &ok("final")
            }
            (_, "/empty") => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
            (_, "/forwarded") => ok(&forwarded),
            (_, "/host") => ok(&host),
            // A target that takes the request and never answers.
            (_, "/never") => {
                std::thread::sleep(Duration::from_secs(30));
                return Ok(());
            }
            ("HEAD", "/head") => "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n".to_string(),
            ("POST", "/echo") => {
                let how = if chunked {
                    "chunked".to_string()
                } else {
                    format!("length {length}")
                };
                ok(&format!("{how}:{}", String::from_utf8_lossy(&body)))
            }
            (_, "/big") => {
                let n = 3_000_000;
                out.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
                )?;
                for _ in 0..n / 1000 {
                    out.write_all(&[b'x'; 1000])?;
                }
                continue;
            }
            // Answers the first request of a connection; closes at the
            // second without answering, as an app whose idle timeout
            // fires just as the request arrives.
            (_, "/once") if served > 1 => return Ok(()),
            (_, "/once") => ok("once"),
            _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string(),
        };
        out.write_all(answer.as_bytes())?;
    }
}

/// A chunked body (without extensions or trailers, as the edge and the
/// scripted origin write them), read to its end.
fn read_chunked(rd: &mut impl std::io::BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if rd.read_line(&mut size)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0u8; n + 2];
        rd.read_exact(&mut chunk)?;
        if n == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `request` on a new connection to the edge; the response head and
/// body (content-length or chunked, as the edge frames it).
fn raw_exchange(port: u16, request: &[u8]) -> (String, Vec<u8>) {
    let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    exchange_on(&mut std::io::BufReader::new(conn), request).unwrap()
}

/// A plain `GET /` on an open connection.
const GET_ROOT: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
const GET_SITE: &[u8] = b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n";

/// Sends `request` on an open connection and reads the answer; an error
/// when the connection is closed (or fails) before the answer is whole.
fn exchange_on(
    rd: &mut std::io::BufReader<std::net::TcpStream>,
    request: &[u8],
) -> std::io::Result<(String, Vec<u8>)> {
    use std::io::{BufRead, Read, Write};
    let line = |rd: &mut std::io::BufReader<std::net::TcpStream>| {
        let mut line = String::new();
        match rd.read_line(&mut line)? {
            0 => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            _ => Ok(line),
        }
    };
    rd.get_mut().write_all(request)?;
    let mut head = String::new();
    loop {
        let l = line(rd)?;
        head.push_str(&l);
        if l == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if request.starts_with(b"HEAD ") || lower.starts_with("http/1.1 204") {
    } else if lower.contains("transfer-encoding: chunked") {
        body = read_chunked(rd)?;
    } else {
        let n: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a length");
        body.resize(n, 0);
        rd.read_exact(&mut body)?;
    }
    Ok((head, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_of_every_framing_are_relayed_whole() {
    let edge = Edge::start(1000, 2000);
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);
    let client = http1();
    let cases = [
        ("/chunked", 200, "hello, world"),
        ("/old", 200, "until the connection closes"),
        ("/closing", 200, "bye"),
        ("/hints", 200, "final"),
        ("/empty", 204, ""),
    ];
    // Twice: the second round runs on the connections the first left.
    for round in 0..2 {
        for (path, status, body) in cases {
            let (s, release, b, _) = get(&client, edge.port, path).await;
            assert_eq!(
                (s, b.as_str(), release.as_str()),
                (status, body, "1"),
                "{path} (round {round})"
            );
        }
    }
    let (s, _, b, _) = get(&client, edge.port, "/big").await;
    assert_eq!((s, b.len()), (200, 3_000_000));
    assert!(b.bytes().all(|c| c == b'x'));

    let (head, body) = raw_exchange(edge.port, b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 11"),
        "{head}"
    );
    assert!(body.is_empty());

    let metrics = &edge.ctl(&json!({"op": "routes"}))["routes"][0]["metrics"][0];
    assert_eq!(metrics["failures"], 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_target_with_their_framing() {
    let edge = Edge::start(1000, 2000);
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);
    let (head, body) = raw_exchange(
        edge.port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body), "length 5:hello");
    let (_, body) = raw_exchange(
        edge.port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    );
    assert_eq!(String::from_utf8_lossy(&body), "chunked:hello");
    let (_, body) = raw_exchange(
        edge.port,
        b"GET /forwarded HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.1\r\n\
          X-Forwarded-Proto: https\r\n\r\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        "x-forwarded-for: 127.0.0.1\nx-forwarded-proto: http\n",
        "a client that is no trusted proxy cannot claim another address or scheme"
    );
    let (_, body) = raw_exchange(
        edge.port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(String::from_utf8_lossy(&body), "length 0:");
    // A large body, sent while the edge is already waiting for the answer.
    let big = "y".repeat(2_000_000);
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(big.as_bytes());
    let (_, body) = raw_exchange(edge.port, &request);
    assert_eq!(body.len(), "length 2000000:".len() + big.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_are_reused_and_a_stale_one_costs_no_request() {
    let edge = Edge::start(1000, 2000);
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);
    let conn = std::net::TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
    let mut conn = std::io::BufReader::new(conn);
    for _ in 0..20 {
        let (head, body) =
            exchange_on(&mut conn, b"GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"hello, world");
    }
    // One client connection, served on one edge thread: one upstream
    // connection carried all twenty.
    assert_eq!(origin.app_connections(), 1);
    let client = http1();

    // The target closes every reused connection as the request arrives:
    // each request goes again on a fresh connection, none fails.
    let origin = Origin::start();
    edge.add_target("o2", &origin.addr, 1);
    edge.ctl(&json!({"op": "target-drain", "port": edge.port, "id": "o"}));
    for i in 0..10 {
        let (s, _, b, _) = get(&client, edge.port, "/once").await;
        assert_eq!((s, b.as_str()), (200, "once"), "request {i}");
    }
    let metrics = &edge.ctl(&json!({"op": "routes"}))["routes"][0]["metrics"][0];
    assert_eq!(metrics["failures"], 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_another_process_listens_on_is_refused_even_if_it_shares_ports() {
    let edge = Edge::start(1000, 2000);
    // Another listener that, like the edge's own, allows port sharing.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.set_reuseport(true).unwrap();
    other.bind(([0, 0, 0, 0], 0).into()).unwrap();
    let port = other.local_addr().unwrap().port();
    let _other = other.listen(16).unwrap();
    let answer = edge
        .try_ctl(&json!({"op": "route-set", "route": {
            "port": port, "service": "t/other",
            "health": {"path": "/health", "intervalMs": 1000, "timeoutMs": 500,
                       "healthyThreshold": 1, "unhealthyThreshold": 3},
            "drainTimeoutMs": 1000}}))
        .expect("the edge answers");
    assert_eq!(answer["result"], "error", "{answer}");
    assert_eq!(answer["code"], "port-in-use", "{answer}");
    let routes = edge.ctl(&json!({"op": "routes"}));
    assert_eq!(
        routes["routes"].as_array().unwrap().len(),
        1,
        "nothing changed: {routes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_answers_when_a_target_or_a_document_changes_and_waits_otherwise() {
    let edge = Edge::start(100, 1_000);
    let now = edge.ctl(&json!({"op": "watch", "after": 0, "timeoutMs": 10_000}));
    let generation = now["generation"].as_u64().expect("a generation");

    // Nothing changes: the watch answers at its timeout with the same generation.
    let started = Instant::now();
    let quiet = edge.ctl(&json!({"op": "watch", "after": generation, "timeoutMs": 300}));
    assert_eq!(quiet["generation"].as_u64(), Some(generation), "{quiet}");
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");

    // A waiting watch is answered by a change made meanwhile (here a target
    // that becomes healthy), long before its timeout.
    let waiting = {
        let state = edge.state.path().to_path_buf();
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = Command::new(BIN)
                .arg("ctl")
                .arg(json!({"op": "watch", "after": generation, "timeoutMs": 30_000}).to_string())
                .arg("--state")
                .arg(&state)
                .output()
                .unwrap();
            (
                started.elapsed(),
                serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let _a = edge.add_demo("a", "va", 1);
    let (took, answer) = waiting.join().unwrap();
    assert!(
        answer["generation"].as_u64().unwrap() > generation,
        "the change moved the generation: {answer}"
    );
    assert!(
        took < Duration::from_secs(10),
        "answered at the change, not the timeout: {took:?}"
    );

    // Documents: written, deleted (fine twice), each move seen by a watch.
    let before = edge.ctl(&json!({"op": "watch", "after": 0, "timeoutMs": 10}))["generation"]
        .as_u64()
        .unwrap();
    edge.ctl(&json!({"op": "doc-put", "key": "services/t/web", "value": {"a": 1}, "expect": 0}));
    let refused = edge.try_ctl(&json!({"op": "doc-delete", "key": "services/t/web", "expect": 7}));
    assert_eq!(
        refused.unwrap()["code"],
        "conflict",
        "a stale revision deletes nothing"
    );
    edge.ctl(&json!({"op": "doc-delete", "key": "services/t/web", "expect": 1}));
    edge.ctl(&json!({"op": "doc-delete", "key": "services/t/web", "expect": null}));
    let gone = edge.ctl(&json!({"op": "doc-get", "key": "services/t/web"}));
    assert_eq!(gone["value"], Value::Null, "{gone}");
    let after = edge.ctl(&json!({"op": "watch", "after": 0, "timeoutMs": 10}))["generation"]
        .as_u64()
        .unwrap();
    assert!(
        after >= before + 2,
        "a put and a delete each move the generation ({before} → {after})"
    );
    let keys = edge.ctl(&json!({"op": "doc-list", "prefix": "services/"}));
    assert_eq!(
        keys["keys"],
        json!([]),
        "the deleted document is not listed: {keys}"
    );
}

/// The route's metrics of `release` (`requests`, `responses` by class,
/// `failures`…).
fn release_metrics(edge: &Edge, release: u32) -> Value {
    let routes = edge.ctl(&json!({"op": "routes"}));
    routes["routes"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["release"] == release)
        .cloned()
        .unwrap_or(Value::Null)
}

/// How long until the edge closes `conn` (reading and dropping what it
/// sends); `None` when it is still open after `within`.
fn closed_within(conn: &std::net::TcpStream, within: Duration) -> Option<Duration> {
    use std::io::Read;
    let started = Instant::now();
    let mut conn = conn.try_clone().unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        conn.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

fn connect_to(port: u16) -> std::net::TcpStream {
    let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_idle_connections_stalled_bodies_and_silent_targets_are_cut_off() {
    use std::io::Write;
    let edge = Edge::start_with(
        1000,
        2000,
        json!({"timeouts": {"headerMs": 700, "idleMs": 1000, "bodyMs": 700, "responseMs": 900}}),
        &[],
    );
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);

    // A head sent a byte every 100 ms never ends: cut off at the header
    // timeout, though bytes keep coming.
    let slow = connect_to(edge.port);
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let took = closed_within(&slow, Duration::from_secs(4)).expect("a slow head is cut off");
    assert!(
        took >= Duration::from_millis(600),
        "not before its timeout: {took:?}"
    );
    let _ = trickle.join();

    // A kept-alive connection with no request: closed after the idle timeout.
    let idle = connect_to(edge.port);
    let mut rd = std::io::BufReader::new(idle.try_clone().unwrap());
    let (head, _) = exchange_on(&mut rd, GET_ROOT).unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let took = closed_within(&idle, Duration::from_secs(4)).expect("an idle connection is closed");
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // A body that stalls: 408, from the edge.
    let stalled = connect_to(edge.port);
    let mut rd = std::io::BufReader::new(stalled.try_clone().unwrap());
    let started = Instant::now();
    let (head, body) = exchange_on(
        &mut rd,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("stalled"),
        "{body:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A broken chunk: 400.
    let (head, _) = raw_exchange(
        edge.port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // A target that takes the request and never answers: 504.
    let started = Instant::now();
    let (head, _) = raw_exchange(edge.port, b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Only the silent target counts against the release.
    let m = release_metrics(&edge, 1);
    assert_eq!(m["failures"], 1, "{m}");
    assert_eq!(m["responses"][3], 0, "no 5xx of the release's own: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_trip_a_canary_guard_with_its_own_broken_requests() {
    let edge = Edge::start(1000, 2000);
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);
    let port = edge.port;
    edge.ctl(&json!({"op": "traffic-set", "port": port, "policy": {
        "weights": [{"release": 1, "weight": 100}],
        "guard": {"release": 1, "max5xxPercent": 10, "windowMs": 10000, "minRequests": 5}}}));
    for _ in 0..30 {
        let (head, _) = raw_exchange(
            port,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    }
    // The guard looks once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let routes = edge.ctl(&json!({"op": "routes"}));
    assert_eq!(
        routes["routes"][0]["policy"]["tripped"],
        Value::Null,
        "{routes}"
    );
    assert_eq!(release_metrics(&edge, 1)["failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_stay_on_the_host_and_hosts_follow_rfc_9112() {
    let edge = Edge::start(1000, 2000);
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);
    let port = edge.port;
    let (head, _) = raw_exchange(
        port,
        b"GET //evil.test/x?changeover-preview=off HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("location: /evil.test/x\r\n"),
        "the redirect stays on the request's host: {head}"
    );
    for (request, status) in [
        (
            &b"GET /host HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"[..],
            "400",
        ),
        (b"GET /host HTTP/1.1\r\n\r\n", "400"),
        (b"GET /host HTTP/1.1\r\nHost: a b\r\n\r\n", "400"),
        (b"GET /host HTTP/1.1\r\nHost: user@a.test\r\n\r\n", "400"),
        (
            b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
            "405",
        ),
    ] {
        let (head, _) = raw_exchange(port, request);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{} -> {head}",
            String::from_utf8_lossy(request)
        );
    }
    // HTTP/1.0 may leave Host out.
    let (head, _) = raw_exchange(port, b"GET /host HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    // An absolute-form target's authority wins over the Host header.
    let (_, body) = raw_exchange(
        port,
        b"GET http://a.test/host HTTP/1.1\r\nHost: b.test\r\n\r\n",
    );
    assert_eq!(String::from_utf8_lossy(&body), "host: a.test\n");
    // In h2, :authority wins over a host header.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://a.test/host")
        .header("host", "b.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), "host: a.test\n");
    // A route on port 0 is refused.
    let answer = edge.try_ctl(&json!({"op": "route-set", "route": {
        "port": 0, "service": "t/zero", "health": {"path": null, "intervalMs": 1000, "timeoutMs": 500,
        "healthyThreshold": 1, "unhealthyThreshold": 3}, "drainTimeoutMs": 1000}})).unwrap();
    assert_eq!(answer["code"], "bad-request", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let edge = Edge::start_with(1000, 2000, json!({"trustedProxies": ["127.0.0.0/8"]}), &[]);
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);
    let (_, body) = raw_exchange(
        edge.port,
        b"GET /forwarded HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.1\r\n\
          X-Forwarded-Proto: https\r\n\r\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        "x-forwarded-for: 192.0.2.1, 127.0.0.1\nx-forwarded-proto: https\n",
        "a trusted proxy's client address and scheme are passed on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_slow_clients_give_way_and_the_control_socket_answers() {
    use std::io::Write;
    // 300 descriptors: fewer than the slow connections below. Without a
    // limit they would take every descriptor, and with them every route
    // and the control socket.
    let edge = Edge::start_with(
        1000,
        2000,
        json!({}),
        &["prlimit", "--nofile=300:300", "--"],
    );
    let origin = Origin::start();
    edge.add_target("o", &origin.addr, 1);
    let mut slow = Vec::new();
    for _ in 0..400 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n");
        slow.push(c);
    }
    // Once the edge has taken them all in (each making room for the next),
    // ordinary clients come.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hello = edge.ctl(&json!({"op": "hello"}));
        let c = &hello["connections"];
        let taken = c["evicted"].as_u64().unwrap() + c["open"].as_u64().unwrap();
        if taken >= 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge takes every connection in: {hello}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut answered = 0;
    for _ in 0..100 {
        let c = connect_to(edge.port);
        let mut rd = std::io::BufReader::new(c);
        if let Ok((head, _)) = exchange_on(&mut rd, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n") {
            answered += usize::from(head.starts_with("HTTP/1.1 200"));
        }
    }
    let hello = edge.ctl(&json!({"op": "hello"}));
    assert_eq!(answered, 100, "every ordinary request is answered: {hello}");
    let stats = &hello["connections"];
    assert!(stats["limit"].as_u64().unwrap() < 300, "{hello}");
    assert!(
        stats["evicted"].as_u64().unwrap() > 0,
        "slow heads made room: {hello}"
    );
    drop(slow);
}

/// A control session (`ctl -`): one request line in, one answer line out.
struct Session {
    _proc: Proc,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Session {
    fn open(edge: &Edge) -> Session {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .args(["ctl", "-", "--state"])
            .arg(edge.state.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let mut output = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut greeting = String::new();
        output.read_line(&mut greeting).unwrap();
        Session {
            _proc: Proc(child),
            input,
            output,
        }
    }

    fn call(&mut self, request: &Value) -> Value {
        use std::io::{BufRead, Write};
        writeln!(self.input, "{request}").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_control_sessions_lose_no_save_and_the_stored_files_stay_valid() {
    let mut edge = Edge::start(1000, 2000);
    let mut ports = vec![edge.port];
    for i in 0..3 {
        let port = free_port();
        edge.ctl(&json!({"op": "route-set", "route": {
            "port": port, "service": format!("t/s{i}"),
            "health": {"path": null, "intervalMs": 1000, "timeoutMs": 500,
                       "healthyThreshold": 1, "unhealthyThreshold": 3},
            "drainTimeoutMs": 1000}}));
        ports.push(port);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let dir = edge.state.path().to_path_buf();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for name in ["routes.json", "docs.json"] {
                    if let Ok(bytes) = std::fs::read(dir.join(name)) {
                        serde_json::from_slice::<Value>(&bytes)
                            .unwrap_or_else(|e| panic!("{name} is always whole: {e}"));
                        reads += 1;
                    }
                }
            }
            reads
        })
    };
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut session = Session::open(&edge);
            let ports = ports.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let port = ports[(w + i) % ports.len()];
                    let answer = session.call(&json!({"op": "traffic-set", "port": port,
                        "policy": {"weights": [], "maintenance": format!("w{w} i{i}")}}));
                    assert_eq!(answer["result"], "ok", "{answer}");
                    let answer = session.call(&json!({"op": "doc-put", "key": format!("w{w}"),
                        "value": i}));
                    assert_eq!(answer["result"], "doc", "{answer}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    let policies = |edge: &Edge| -> Vec<Value> {
        let routes = edge.ctl(&json!({"op": "routes"}));
        let mut p: Vec<Value> = routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| json!([r["spec"]["port"], r["policy"]]))
            .collect();
        p.sort_by_key(|v| v[0].as_u64());
        p
    };
    let before = policies(&edge);
    edge.restart();
    assert_eq!(policies(&edge), before, "the newest state came back");
    for w in 0..8 {
        let doc = edge.ctl(&json!({"op": "doc-get", "key": format!("w{w}")}));
        assert_eq!(doc["value"], 24, "{doc}");
    }
    // A current file that cannot be read gives way to the previous copy.
    std::fs::write(edge.state.path().join("routes.json"), b"{\"half").unwrap();
    edge.restart();
    assert_eq!(
        policies(&edge).len(),
        4,
        "the edge starts, with the routes of its previous good copy"
    );
    let kept_aside = std::fs::read_dir(edge.state.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("routes.json.broken-")
        });
    assert!(kept_aside, "the broken file is kept, not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_request_too_long_is_refused_without_being_kept() {
    use std::io::{BufRead, Write};
    let edge = Edge::start(1000, 2000);
    let huge = "x".repeat(9 * 1024 * 1024);
    let request = json!({"op": "doc-put", "key": "huge", "value": huge}).to_string();
    let conn =
        std::os::unix::net::UnixStream::connect(edge.state.path().join("control.sock")).unwrap();
    // The edge answers (and closes) before it has all of it.
    let mut writer = conn.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        let _ = writer.write_all(request.as_bytes());
        let _ = writer.write_all(b"\n");
    });
    let mut line = String::new();
    std::io::BufReader::new(conn).read_line(&mut line).unwrap();
    let _ = sent.join();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["code"], "bad-request", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("longer than"),
        "{answer}"
    );
    let doc = edge.ctl(&json!({"op": "doc-get", "key": "huge"}));
    assert_eq!(doc["value"], Value::Null, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_edge_lets_requests_in_flight_finish_and_takes_no_new_ones() {
    let mut edge = Edge::start(1000, 5000);
    let _demo = edge.add_demo("d", "v1", 1);
    let port = edge.port;
    let slow = std::thread::spawn(move || {
        raw_exchange(port, b"GET /?sleep=1500 HTTP/1.1\r\nHost: t\r\n\r\n")
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(edge._proc.0.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "while it drains, new connections are refused"
    );
    let (head, body) = slow.join().unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the request in flight is answered: {head}"
    );
    assert!(String::from_utf8_lossy(&body).starts_with("v1"), "{body:?}");
    let exited = loop {
        if let Some(status) = edge._proc.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the edge exits once drained"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exited.success(), "{exited:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "it waited for the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_edge_takes_the_listeners_over_and_not_one_request_fails() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mut edge = Edge::start(1000, 5000);
    let _demo = edge.add_demo("d", "v1", 1);
    let port = edge.port;
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [{"release": 1, "weight": 100}]}}));
    // The shared port of sites is handed over too.
    let (shared, _) = shared_ports(&edge);
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(port, "t/web", 1000, 5000,
        json!({"hosts": ["app.example.test"]}))}),
    );
    // And a UDP route, with a client keeping its flow busy all along.
    let udp_port = free_port();
    edge.ctl(&json!({"op": "route-set", "route": {
        "port": udp_port, "service": "t/dns",
        "health": {"path": null, "intervalMs": 1000, "timeoutMs": 500,
                   "healthyThreshold": 1, "unhealthyThreshold": 3},
        "drainTimeoutMs": 5000, "protocol": "tcp", "udp": "only"}}));
    let _udp_demo = add_udp_demo(&edge, udp_port, "u", "u1", 1);
    std::thread::sleep(Duration::from_millis(1200));
    let old_uptime = edge.ctl(&json!({"op": "hello"}))["uptimeMs"]
        .as_u64()
        .unwrap();
    // Clients all along: new connections, and kept-alive ones that open a
    // new connection when told `Connection: close`, as HTTP clients do.
    let stop = Arc::new(AtomicBool::new(false));
    let datagrams = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = udp_client();
            let (mut answered, mut lost) = (0u64, 0u64);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let text = format!("d{n}");
                match udp_ask(&s, udp_port, &text, Duration::from_millis(500)) {
                    Some(a) if a == format!("{text} u1") => answered += 1,
                    _ => lost += 1,
                }
            }
            (answered, lost)
        })
    };
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut kept: Option<std::io::BufReader<std::net::TcpStream>> = None;
                while !stop.load(Ordering::SeqCst) {
                    // One client of four goes to the site on the shared port.
                    let (to, request) = if i == 3 {
                        (shared, GET_SITE)
                    } else {
                        (port, GET_ROOT)
                    };
                    let mut rd = match kept.take() {
                        Some(rd) if i % 2 == 0 => rd,
                        _ => std::io::BufReader::new(connect_to(to)),
                    };
                    sent.fetch_add(1, Ordering::SeqCst);
                    match exchange_on(&mut rd, request) {
                        Ok((head, _)) if head.starts_with("HTTP/1.1 200") => {
                            if !head.to_ascii_lowercase().contains("connection: close") {
                                kept = Some(rd);
                            }
                        }
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut new_edge = Proc(
        Command::new(BIN)
            .args(["serve", "--take-over", "--state"])
            .arg(edge.state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hello = edge.try_ctl(&json!({"op": "hello"}));
        if hello.is_some_and(|h| h["uptimeMs"].as_u64().is_some_and(|u| u < old_uptime)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new edge answers the control socket"
        );
        assert!(
            new_edge.0.try_wait().unwrap().is_none(),
            "the new edge runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The old one goes, as `docker stop` makes it.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(edge._proc.0.id().to_string())
        .status();
    let exited = Instant::now();
    while edge._proc.0.try_wait().unwrap().is_none() {
        assert!(
            exited.elapsed() < Duration::from_secs(6),
            "the old edge drains and exits"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(sent > 100, "{sent} requests");
    assert_eq!(failed, 0, "not one of {sent} requests failed");
    let (answered, lost) = datagrams.join().unwrap();
    assert!(answered > 100, "{answered} datagrams answered");
    assert_eq!(
        lost,
        0,
        "the UDP socket was handed over with the flow's answers still passed on: {lost} lost of {}",
        answered + lost
    );
    // The new edge has the routes, their policy, and serves them.
    let routes = edge.ctl(&json!({"op": "routes", "service": "t/web"}));
    assert_eq!(
        routes["routes"][0]["policy"]["weights"][0]["weight"], 100,
        "{routes}"
    );
    let (head, _) = raw_exchange(port, GET_ROOT);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = raw_exchange(shared, GET_SITE);
    assert!(head.starts_with("HTTP/1.1 200"), "the site too: {head}");
    drop(new_edge);
}

/// A test CA, and certificates it signs for the names given.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Changeover Test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// `(chain PEM, key PEM)` for `names`.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS client trusting this CA alone, offering `alpn`.
    fn client(&self, alpn: &[&str]) -> tokio_rustls::TlsConnector {
        tls_client(&self.issuer.pem(), alpn)
    }
}

/// A TLS client trusting the certificates in `roots_pem` alone, offering `alpn`.
fn tls_client(roots_pem: &str, alpn: &[&str]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to loopback `port` naming `sni`.
async fn tls_connect(
    client: &tokio_rustls::TlsConnector,
    port: u16,
    sni: &str,
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    client.connect(name, tcp).await
}

/// One HTTP/1.1 request over `tls`, its whole answer as text.
async fn https_exchange(mut tls: Tls, host: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    // Until the edge closes (with or without close_notify).
    while let Ok(n) = tls.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request with `Host: host` on plain `port`: `(head, body)`.
fn ask_host(port: u16, host: &str, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (head, body) = raw_exchange(port, request.as_bytes());
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// The edge's shared ports set to free ones: `(http, https)`.
fn shared_ports(edge: &Edge) -> (u16, u16) {
    let (http, https) = (free_port(), free_port());
    edge.ctl(&json!({"op": "config-set", "config": {"httpPort": http, "httpsPort": https}}));
    (http, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_share_one_port_by_host_and_an_unknown_host_gets_a_plain_404() {
    let mut edge = Edge::start(500, 5_000);
    let _web = edge.add_demo("w", "web-v1", 1);
    let (http, _) = shared_ports(&edge);
    let api_port = free_port();
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(api_port, "t/api", 500, 5_000, json!({}))}),
    );
    let _api = edge.add_demo_on(api_port, "a", "api-v1", 1);
    let web = route_spec(
        edge.port,
        "t/web",
        500,
        5_000,
        json!({"hosts": ["app.example.test", "*.app.example.test"]}),
    );
    edge.ctl(&json!({"op": "route-set", "route": web}));
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(api_port, "t/api", 500, 5_000,
        json!({"hosts": ["api.example.test"]}))}),
    );

    for (host, wanted) in [
        ("app.example.test", "web-v1"),
        ("APP.Example.Test.", "web-v1"),
        (&*format!("app.example.test:{http}"), "web-v1"),
        ("eu.app.example.test", "web-v1"),
        ("api.example.test", "api-v1"),
    ] {
        let (head, body) = ask_host(http, host, "/");
        assert!(head.starts_with("HTTP/1.1 200"), "{host}: {head}");
        assert!(body.contains(wanted), "{host} goes to {wanted}: {body}");
    }
    let (head, body) = ask_host(http, "nobody.example.test", "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    assert!(
        body.contains("no site is served here for \"nobody.example.test\""),
        "{body}"
    );
    let (head, _) = ask_host(http, "a.b.app.example.test", "/");
    assert!(
        head.starts_with("HTTP/1.1 404"),
        "a wildcard is one label: {head}"
    );
    // Each service keeps its own port.
    let (head, body) = ask_host(api_port, "whatever", "/");
    assert!(
        head.starts_with("HTTP/1.1 200") && body.contains("api-v1"),
        "{head}{body}"
    );

    // What would break a site is refused and changes nothing.
    let before = edge.ctl(&json!({"op": "routes"}));
    let third = free_port();
    for (route, why) in [
        (
            route_spec(
                api_port,
                "t/api",
                500,
                5_000,
                json!({"hosts": ["app.example.test"]}),
            ),
            "the host app.example.test is already routed to t/web",
        ),
        (
            route_spec(third, "t/other", 500, 5_000, json!({"hosts": ["Bad_Host"]})),
            "is not a host name a site may have",
        ),
        (
            route_spec(http, "t/other", 500, 5_000, json!({})),
            "shared port for sites",
        ),
        (
            route_spec(
                third,
                "t/other",
                500,
                5_000,
                json!({"hosts": ["x.example.test"], "tls": {"certificate": "files"}}),
            ),
            "no certificate was given for t/other",
        ),
    ] {
        let answer = edge
            .try_ctl(&json!({"op": "route-set", "route": route}))
            .unwrap();
        assert_eq!(answer["result"], "error", "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    assert_eq!(
        edge.ctl(&json!({"op": "routes"})),
        before,
        "nothing changed"
    );
    let answer = edge
        .try_ctl(&json!({"op": "config-set", "config": {"httpPort": api_port, "httpsPort": free_port()}}))
        .unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("routed to t/api"),
        "{answer}"
    );
    let answer = edge
        .try_ctl(&json!({"op": "config-set", "config": {"httpPort": 0, "httpsPort": 1}}))
        .unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("from 1 to 65535"),
        "{answer}"
    );
    let config = edge.ctl(&json!({"op": "config-get"}));
    assert_eq!(config["config"]["httpPort"], http, "{config}");

    // The shared port moves: the new one opens, the old one closes.
    let moved = free_port();
    edge.ctl(&json!({"op": "config-set", "config": {"httpPort": moved, "httpsPort": free_port()}}));
    let (head, _) = ask_host(moved, "app.example.test", "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", http)).is_err(),
        "the old port closed"
    );

    // A restart keeps the settings and the sites.
    edge.restart();
    let (head, body) = ask_host(moved, "api.example.test", "/");
    assert!(
        head.starts_with("HTTP/1.1 200") && body.contains("api-v1"),
        "{head}{body}"
    );

    // Without hosts, the shared port closes.
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(edge.port, "t/web", 500, 5_000, json!({}))}),
    );
    edge.ctl(&json!({"op": "route-remove", "port": api_port}));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", moved)).is_err(),
        "no site, no shared port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sites_get_their_certificate_by_sni_h2_by_alpn_and_plain_http_is_redirected() {
    let mut edge = Edge::start(500, 5_000);
    let _web = edge.add_demo("w", "web-v1", 1);
    let (http, https) = shared_ports(&edge);
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["app.example.test", "www.app.example.test"]);
    let (_, other_key) = ca.issue(&["app.example.test"]);
    let mut session = Session::open(&edge);
    let put = |session: &mut Session, cert: &str, key: &str| {
        session.call(&json!({"op": "cert-put", "service": "t/web", "certPem": cert, "keyPem": key}))
    };

    // Bad certificates are refused, say why, and never show the key.
    for (c, k, why) in [
        (&*cert, &*other_key, "the key is not the certificate's key"),
        ("not a certificate", &*key, "no certificate"),
        (
            &*cert,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
            "private key",
        ),
    ] {
        let answer = put(&mut session, c, k);
        assert_eq!(answer["result"], "error", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
        assert!(
            !message.contains("c2VjcmV0") && !message.contains("PRIVATE"),
            "{message}"
        );
    }
    // On a command line a key is refused before it travels.
    let answer = edge
        .try_ctl(&json!({"op": "cert-put", "service": "t/web", "certPem": cert, "keyPem": key}))
        .unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("send it in a session"),
        "{answer}"
    );
    let config = edge.ctl(&json!({"op": "config-get"}));
    assert_eq!(config["certificates"], json!([]), "nothing kept: {config}");

    assert_eq!(put(&mut session, &cert, &key)["result"], "ok");
    let stored = edge.state.path().join("certs/t@web.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A host the certificate does not cover is refused.
    let uncovered = route_spec(
        edge.port,
        "t/web",
        500,
        5_000,
        json!({
        "hosts": ["app.example.test", "shop.example.test"], "tls": {"certificate": "files"}}),
    );
    let answer = edge
        .try_ctl(&json!({"op": "route-set", "route": uncovered}))
        .unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("not shop.example.test"),
        "{answer}"
    );

    let site = route_spec(
        edge.port,
        "t/web",
        500,
        5_000,
        json!({
        "hosts": ["app.example.test", "www.app.example.test"],
        "tls": {"certificate": "files", "hsts": true}}),
    );
    edge.ctl(&json!({"op": "route-set", "route": site}));
    let plain_port = free_port();
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(plain_port, "t/plain", 500, 5_000,
        json!({"hosts": ["plain.example.test"]}))}),
    );
    let _plain = edge.add_demo_on(plain_port, "p", "plain-v1", 1);

    // HTTP/1.1 over TLS, the certificate chosen by SNI, with HSTS.
    let h1 = ca.client(&["http/1.1"]);
    let tls = tls_connect(&h1, https, "app.example.test")
        .await
        .expect("the handshake succeeds");
    let answer = https_exchange(tls, "app.example.test", "/").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("web-v1"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{answer}"
    );
    // Another name of the same certificate on the same connection is fine;
    // a host of another site is not what this connection was opened for.
    let tls = tls_connect(&h1, https, "www.app.example.test")
        .await
        .unwrap();
    let answer = https_exchange(tls, "plain.example.test", "/").await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    // No certificate for a name the edge does not serve over HTTPS.
    assert!(tls_connect(&h1, https, "plain.example.test").await.is_err());
    assert!(tls_connect(&h1, https, "nobody.example.test")
        .await
        .is_err());

    // h2 by ALPN.
    let h2 = ca.client(&["h2", "http/1.1"]);
    let tls = tls_connect(&h2, https, "app.example.test").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("https://app.example.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(request).await.unwrap();
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("web-v1"));

    // Plain HTTP to an HTTPS site is sent to HTTPS, on its own host only.
    let (head, _) = ask_host(http, "app.example.test", "/a/b?c=d");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert!(
        head.contains(&format!(
            "location: https://app.example.test:{https}/a/b?c=d"
        )),
        "{head}"
    );
    let (head, _) = ask_host(http, "app.example.test", "//evil.test/x");
    assert!(
        head.contains(&format!(
            "location: https://app.example.test:{https}/evil.test/x"
        )),
        "{head}"
    );
    // A site without TLS is served on plain HTTP.
    let (head, body) = ask_host(http, "plain.example.test", "/");
    assert!(
        head.starts_with("HTTP/1.1 200") && body.contains("plain-v1"),
        "{head}{body}"
    );

    // The certificate is shown, and kept across a restart.
    let config = edge.ctl(&json!({"op": "config-get"}));
    let shown = &config["certificates"][0];
    assert_eq!(shown["service"], "t/web", "{config}");
    assert_eq!(
        shown["names"],
        json!(["app.example.test", "www.app.example.test"])
    );
    assert!(
        shown["issuer"]
            .as_str()
            .unwrap()
            .contains("Changeover Test CA"),
        "{shown}"
    );
    assert_eq!(shown["state"], "valid");
    assert!(shown["notAfterMs"].as_i64().unwrap() > 0);
    assert!(
        !config.to_string().contains("PRIVATE KEY"),
        "no key in answers"
    );
    drop(session);
    edge.restart();
    let tls = tls_connect(&h1, https, "app.example.test")
        .await
        .expect("served after a restart");
    assert!(https_exchange(tls, "app.example.test", "/")
        .await
        .contains("web-v1"));

    // A replacement that would not cover the hosts served is refused.
    let (narrow, narrow_key) = ca.issue(&["app.example.test"]);
    let mut session = Session::open(&edge);
    let answer = put(&mut session, &narrow, &narrow_key);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("serves www.app.example.test"),
        "{answer}"
    );

    // Its key goes with the service's last route.
    edge.ctl(&json!({"op": "route-remove", "port": edge.port}));
    assert!(!stored.exists(), "the key is removed with its site");
    assert!(tls_connect(&h1, https, "app.example.test").await.is_err());
}

#[path = "support/pebble.rs"]
mod pebble;
use pebble::Pebble;

/// Waits until the edge says `service`'s certificate is `valid`; its status.
fn wait_for_certificate(edge: &Edge, service: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let config = edge.ctl(&json!({"op": "config-get"}));
        let found = config["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == service)
            .cloned();
        if let Some(c) = found.filter(|c| c["state"] == "valid" && c["source"] == "acme") {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate for {service}: {config}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The end certificate `port` serves for `name`, in DER.
async fn served_certificate(client: &tokio_rustls::TlsConnector, port: u16, name: &str) -> Vec<u8> {
    let tls = tls_connect(client, port, name)
        .await
        .expect("the handshake succeeds");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificates_come_from_pebble_by_http_01_and_tls_alpn_01_and_are_renewed() {
    let mut edge = Edge::start_with(
        500,
        5_000,
        json!({}),
        &["env", "CHANGEOVER_EDGE_ACME_CHECK_MS=300"],
    );
    let _web = edge.add_demo("w", "web-v1", 1);
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https);
    let settings = json!({"httpPort": http, "httpsPort": https, "acmeDirectory": pebble.directory,
        "acmeCa": pebble.ca_pem, "acmeEmail": "ops@example.test"});
    edge.ctl(&json!({"op": "config-set", "config": settings}));
    // A wildcard cannot be had by these challenges: refused, nothing changed.
    let wildcard = route_spec(
        edge.port,
        "t/web",
        500,
        5_000,
        json!({"hosts": ["*.example.test"], "tls": {"certificate": "acme"}}),
    );
    let answer = edge
        .try_ctl(&json!({"op": "route-set", "route": wildcard}))
        .unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains("DNS-01"),
        "{answer}"
    );

    // HTTP-01 (the default): served in plain HTTP while it is ordered, then HTTPS.
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(edge.port, "t/web", 500, 5_000,
        json!({"hosts": ["app.example.test"], "tls": {"certificate": "acme", "hsts": true}}))}),
    );
    let cert = wait_for_certificate(&edge, "t/web", Duration::from_secs(60));
    assert_eq!(cert["names"], json!(["app.example.test"]));
    assert!(
        cert["issuer"].as_str().unwrap().contains("Pebble"),
        "{cert}"
    );
    let client = tls_client(&pebble.root_pem(), &["http/1.1"]);
    let tls = tls_connect(&client, https, "app.example.test")
        .await
        .expect("a chain to pebble's root");
    let answer = https_exchange(tls, "app.example.test", "/").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("web-v1"),
        "{answer}"
    );
    let (head, _) = ask_host(http, "app.example.test", "/x");
    assert!(
        head.starts_with("HTTP/1.1 308"),
        "with a certificate, HTTP goes to HTTPS: {head}"
    );
    let account = edge.state.path().join("acme/account.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&account).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // TLS-ALPN-01, for a second site.
    let api_port = free_port();
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(api_port, "t/api", 500, 5_000, json!({}))}),
    );
    let _api = edge.add_demo_on(api_port, "a", "api-v1", 1);
    let mut alpn = settings.clone();
    alpn["acmeChallenge"] = json!("tls-alpn-01");
    edge.ctl(&json!({"op": "config-set", "config": alpn}));
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(api_port, "t/api", 500, 5_000,
        json!({"hosts": ["api.example.test"], "tls": {"certificate": "acme"}}))}),
    );
    wait_for_certificate(&edge, "t/api", Duration::from_secs(60));
    let tls = tls_connect(&client, https, "api.example.test")
        .await
        .unwrap();
    assert!(https_exchange(tls, "api.example.test", "/")
        .await
        .contains("api-v1"));

    // A restart serves the stored certificates at once and orders nothing.
    let before = served_certificate(&client, https, "app.example.test").await;
    edge.restart_with(&["env", "CHANGEOVER_EDGE_ACME_CHECK_MS=300"]);
    assert_eq!(
        served_certificate(&client, https, "app.example.test").await,
        before
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        served_certificate(&client, https, "app.example.test").await,
        before,
        "not renewed"
    );

    // Renewal: a certificate within its renewal window is replaced, and
    // served without a restart.
    edge.restart_with(&[
        "env",
        "CHANGEOVER_EDGE_ACME_CHECK_MS=300",
        "CHANGEOVER_EDGE_ACME_RENEW_BEFORE_S=1000000000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_certificate(&client, https, "app.example.test").await == before {
        assert!(Instant::now() < deadline, "the certificate is renewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tls = tls_connect(&client, https, "app.example.test")
        .await
        .unwrap();
    assert!(https_exchange(tls, "app.example.test", "/")
        .await
        .contains("web-v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_failure_is_the_sites_state_and_the_site_stays_on_plain_http() {
    let edge = Edge::start_with(
        500,
        5_000,
        json!({}),
        &["env", "CHANGEOVER_EDGE_ACME_CHECK_MS=300"],
    );
    let _web = edge.add_demo("w", "web-v1", 1);
    let (http, https) = (free_port(), free_port());
    // Pebble checks ports nobody serves: every challenge fails.
    let pebble = Pebble::start(free_port(), free_port());
    edge.ctl(
        &json!({"op": "config-set", "config": {"httpPort": http, "httpsPort": https,
        "acmeDirectory": pebble.directory, "acmeCa": pebble.ca_pem}}),
    );
    edge.ctl(
        &json!({"op": "route-set", "route": route_spec(edge.port, "t/web", 500, 5_000,
        json!({"hosts": ["app.example.test"], "tls": {"certificate": "acme"}}))}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let config = edge.ctl(&json!({"op": "config-get"}));
        let state = config["certificates"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if state.starts_with("failed") {
            break state;
        }
        assert!(Instant::now() < deadline, "the failure is shown: {config}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(state.contains("next try in 30s"), "{state}");
    let (head, body) = ask_host(http, "app.example.test", "/");
    assert!(
        head.starts_with("HTTP/1.1 200") && body.contains("web-v1"),
        "{head}"
    );
}

/// A UDP client on loopback: sends `text` to the edge's `port` and answers
/// the reply, or `None` when none came within `wait`.
fn udp_ask(socket: &std::net::UdpSocket, port: u16, text: &str, wait: Duration) -> Option<String> {
    socket.set_read_timeout(Some(wait)).unwrap();
    socket
        .send_to(text.as_bytes(), ("127.0.0.1", port))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

fn udp_client() -> std::net::UdpSocket {
    std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap()
}

/// A demo target answering HTTP and echoing UDP on the same port number
/// (the route's TCP check passes), added to the route on `route_port`.
fn add_udp_demo(edge: &Edge, route_port: u16, id: &str, version: &str, release: u32) -> Proc {
    // A port free for TCP may be one a UDP socket holds (the flood test's
    // clients run beside): a demo that could not bind exits, and another
    // port is tried.
    for _ in 0..10 {
        let port = free_port();
        let mut demo = Proc(
            Command::new(BIN)
                .args(["demo", "--version", version, "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--udp")
                .arg(format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let listening = loop {
            if demo.0.try_wait().unwrap().is_some() {
                break false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break true;
            }
            assert!(Instant::now() < deadline, "the demo on {port} starts");
            std::thread::sleep(Duration::from_millis(20));
        };
        if listening {
            edge.add_target_on(route_port, id, &format!("127.0.0.1:{port}"), release);
            return demo;
        }
    }
    panic!("no port free for both TCP and UDP for a demo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_route_keeps_flows_on_their_target_switches_new_ones_and_drains_them() {
    let edge = Edge::start(200, 1500);
    let port = free_port();
    edge.ctl(&json!({"op": "route-set", "route": {
        "port": port,
        "service": "t/dns",
        "health": {"path": null, "intervalMs": 200, "timeoutMs": 500,
                   "healthyThreshold": 1, "unhealthyThreshold": 3},
        "drainTimeoutMs": 1500,
        "protocol": "tcp",
        "udp": "only",
        "timeouts": {"udpIdleMs": 800},
    }}));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a UDP-only route opens no TCP listener"
    );
    let _a = add_udp_demo(&edge, port, "old", "va", 1);
    let _b = add_udp_demo(&edge, port, "new", "vb", 2);
    let wait = Duration::from_secs(2);
    let weights = |old: u32, new: u32| {
        json!({"op": "traffic-set", "port": port,
            "policy": {"weights": [{"release": 1, "weight": old}, {"release": 2, "weight": new}]}})
    };
    edge.ctl(&weights(100, 0));
    let a = udp_client();
    assert_eq!(udp_ask(&a, port, "a1", wait).as_deref(), Some("a1 va"));
    // A switch: a new client's flow goes to release 2; A's stays.
    edge.ctl(&weights(0, 100));
    let b = udp_client();
    assert_eq!(udp_ask(&b, port, "b1", wait).as_deref(), Some("b1 vb"));
    assert_eq!(
        udp_ask(&a, port, "a2", wait).as_deref(),
        Some("a2 va"),
        "an open flow stays on its target"
    );
    // Idle past udp_idle: A's next datagram is a new flow, by the shares.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(udp_ask(&a, port, "a3", wait).as_deref(), Some("a3 vb"));
    // A flow kept busy on the old target through its drain: the drain waits
    // its timeout for it, then the flow moves on without losing a datagram.
    edge.ctl(&weights(100, 0));
    let c = udp_client();
    assert_eq!(udp_ask(&c, port, "c0", wait).as_deref(), Some("c0 va"));
    let pinging = std::thread::spawn(move || {
        let mut answers = Vec::new();
        for i in 0..40 {
            answers.push(udp_ask(&c, port, &format!("c{i}"), wait));
            std::thread::sleep(Duration::from_millis(50));
        }
        answers
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let drained = edge.ctl(&json!({"op": "target-drain", "port": port, "id": "old"}));
    assert_eq!(drained["abandoned"], 1, "{drained}");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let answers = pinging.join().unwrap();
    for (i, got) in answers.iter().enumerate() {
        let got = got.as_deref().unwrap_or("nothing");
        assert!(got.starts_with(&format!("c{i} v")), "datagram {i}: {got}");
    }
    assert!(answers[0].as_deref().unwrap().ends_with("va"));
    assert!(
        answers[39].as_deref().unwrap().ends_with("vb"),
        "after the drain the flow is on release 2: {answers:?}"
    );
    // A datagram of 60 KiB goes there and back whole.
    let big = "x".repeat(60 * 1024);
    let echoed = udp_ask(&b, port, &big, wait).unwrap();
    assert_eq!(echoed, format!("{big} vb"));
    // Per release: one request per flow, answered; the bytes sent back.
    let routes = edge.ctl(&json!({"op": "routes", "service": "t/dns"}));
    let metrics = routes["routes"][0]["metrics"].as_array().unwrap().clone();
    let of = |r: u64, key: &str| {
        metrics
            .iter()
            .find(|m| m["release"] == r)
            .map(|m| m[key].as_u64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(
        (of(1, "requests"), of(2, "requests")),
        (2, 4),
        "release 1: A's first flow and C's; release 2: B's two (it idled between), A's second and C's second: {routes}"
    );
    assert!(of(2, "bytes") > 60 * 1024, "{routes}");
    // Maintenance: datagrams go nowhere.
    edge.ctl(&json!({"op": "traffic-set", "port": port,
        "policy": {"weights": [], "maintenance": "later"}}));
    let d = udp_client();
    assert_eq!(udp_ask(&d, port, "d1", Duration::from_millis(500)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_udp_clients_is_bounded_and_a_new_client_still_gets_through() {
    let edge = Edge::start(200, 1000);
    let port = free_port();
    edge.ctl(&json!({"op": "route-set", "route": {
        "port": port, "service": "t/dns",
        "health": {"path": null, "intervalMs": 200, "timeoutMs": 500,
                   "healthyThreshold": 1, "unhealthyThreshold": 3},
        "drainTimeoutMs": 1000, "protocol": "tcp", "udp": "only"}}));
    let _demo = add_udp_demo(&edge, port, "u", "u1", 1);
    // 10,000 sources, one datagram each (as a spoofed flood looks): far
    // more flows than an edge thread keeps (4,096 per socket, 2 threads).
    let flood: Vec<std::net::UdpSocket> = (0..10_000).map(|_| udp_client()).collect();
    for s in &flood {
        let _ = s.send_to(b"x", ("127.0.0.1", port));
    }
    std::thread::sleep(Duration::from_millis(500));
    let routes = edge.ctl(&json!({"op": "routes", "service": "t/dns"}));
    let open = routes["routes"][0]["targets"][0]["inFlight"]
        .as_u64()
        .unwrap();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16) as u64;
    assert!(
        open <= 4096 * threads,
        "flows are bounded per socket: {open} open for {threads} thread(s)"
    );
    assert!(open > 0, "{routes}");
    let c = udp_client();
    assert_eq!(
        udp_ask(&c, port, "late", Duration::from_secs(2)).as_deref(),
        Some("late u1"),
        "a new client gets a flow: the quietest gave way"
    );
    drop(flood);
}
