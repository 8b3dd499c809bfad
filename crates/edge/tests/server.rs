//! The edge as a library, served in this test process: `serve` with a state
//! directory, listening sockets, a control socket and a shutdown signal of
//! the test's own, and `demo` targets on loopback — as mini-redis tests its
//! server. What only the process can show (SIGTERM, hand-over between two
//! processes, descriptor limits, the container) is `tests/proxy.rs`'s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use changeover_edge::{serve, Listeners, Settings, Stopped, CONTROL_SOCKET};

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// One edge served by this process until it is stopped.
struct Served {
    state: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Stopped, String>>,
}

impl Served {
    /// Serves an edge on `state` with the sockets `listeners`.
    fn start(state: &Path, listeners: Listeners) -> Served {
        let socket = state.join(CONTROL_SOCKET);
        let _ = std::fs::remove_file(&socket);
        let control = tokio::net::UnixListener::bind(&socket).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = Settings {
            state: Some(state.to_path_buf()),
            max_connections: 1000,
        };
        let task = tokio::spawn(serve(settings, listeners, control, async {
            let _ = stopped.await;
        }));
        Served {
            state: state.to_path_buf(),
            stop: Some(stop),
            task,
        }
    }

    /// One control request and its answer.
    async fn ctl(&self, request: &Value) -> Value {
        self.ctl_line(&request.to_string()).await
    }

    async fn ctl_line(&self, line: &str) -> Value {
        let stream = tokio::net::UnixStream::connect(self.state.join(CONTROL_SOCKET))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(line.as_bytes()).await.unwrap();
        write.write_all(b"\n").await.unwrap();
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await.unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    /// Signals the shutdown; what `serve` answered.
    async fn stop(mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("serve returns after its shutdown")
            .unwrap()
            .unwrap()
    }
}

/// A `demo` target answering `version` on a free loopback port.
fn demo(version: &str) -> (String, JoinHandle<Result<(), String>>) {
    let addr = format!("127.0.0.1:{}", free_port());
    let task = tokio::spawn({
        let (version, addr) = (version.to_string(), addr.clone());
        async move { changeover_edge::demo::serve(&version, &addr, false).await }
    });
    (addr, task)
}

fn route(port: u16, service: &str, drain_timeout_ms: u64) -> Value {
    json!({
        "port": port,
        "service": service,
        "health": {"path": "/health", "intervalMs": 100, "timeoutMs": 500,
                   "healthyThreshold": 1, "unhealthyThreshold": 3},
        "drainTimeoutMs": drain_timeout_ms,
    })
}

/// A route on a free port to one healthy `demo` target answering `version`.
async fn routed(edge: &Served, service: &str, version: &str, drain_timeout_ms: u64) -> u16 {
    let port = free_port();
    let answer = edge
        .ctl(&json!({"op": "route-set", "route": route(port, service, drain_timeout_ms)}))
        .await;
    assert_eq!(answer["result"], "ok", "{answer}");
    let (addr, _demo) = demo(version);
    let answer = edge
        .ctl(
            &json!({"op": "target-add", "port": port, "waitHealthyMs": 10_000, "target":
            {"id": format!("{service}-1"), "addr": addr, "release": 1}}),
        )
        .await;
    assert_eq!(answer["target"]["state"], "healthy", "{answer}");
    port
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// (status, `Connection` header, body) of a GET through the edge.
async fn get(client: &Http, port: u16, path: &str) -> (u16, Option<String>, String) {
    let uri = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let status = response.status().as_u16();
    let connection = response
        .headers()
        .get(hyper::header::CONNECTION)
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        connection,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Whether connections to `port` are refused within a second (a closed
/// listener's accept task ends on its traffic thread a moment later).
fn refused(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_edge_routes_requests_keeps_documents_and_refuses_bad_control_lines() {
    let state = tempfile::tempdir().unwrap();
    let edge = Served::start(state.path(), Listeners::new());
    let hello = edge.ctl(&json!({"op": "hello"})).await;
    assert_eq!(
        hello["protocol"],
        changeover_core::edge::PROTOCOL_VERSION,
        "{hello}"
    );

    let port = routed(&edge, "t/web", "v1", 1000).await;
    let client = http();
    let (status, _, body) = get(&client, port, "/").await;
    assert_eq!((status, body.split_whitespace().next()), (200, Some("v1")));

    let put = edge
        .ctl(&json!({"op": "doc-put", "key": "svc/t/web", "value": {"image": "a:1"}}))
        .await;
    assert_eq!(put["revision"], 1, "{put}");
    let stale = edge
        .ctl(&json!({"op": "doc-put", "key": "svc/t/web", "value": {"image": "b:1"}, "expect": 0}))
        .await;
    assert_eq!(stale["code"], "conflict", "{stale}");

    // Bad lines get an answer and change nothing.
    let bad = edge.ctl_line("{\"op\": \"route-set\"").await;
    assert_eq!(bad["code"], "bad-request", "{bad}");
    let zero = edge
        .ctl(&json!({"op": "route-set", "route": route(0, "t/zero", 1000)}))
        .await;
    assert_eq!(zero["code"], "bad-request", "{zero}");
    let routes = edge.ctl(&json!({"op": "routes"})).await;
    assert_eq!(routes["routes"].as_array().unwrap().len(), 1, "{routes}");
    let doc = edge
        .ctl(&json!({"op": "doc-get", "key": "svc/t/web"}))
        .await;
    assert_eq!(doc["value"]["image"], "a:1", "{doc}");

    let stopped = edge.stop().await;
    assert_eq!(stopped.abandoned, 0);
    assert!(refused(port), "a stopped edge listens no more");

    // What it stored is what the next edge on the same state serves.
    let again = Served::start(state.path(), Listeners::new());
    let doc = again
        .ctl(&json!({"op": "doc-get", "key": "svc/t/web"}))
        .await;
    assert_eq!(doc["revision"], 1, "{doc}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(uri)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.get(format!("http://127.0.0.1:{port}/").parse().unwrap()),
        )
        .await
        {
            if uri.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the route comes back with its target"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_requests_in_flight_and_takes_no_new_connection() {
    let state = tempfile::tempdir().unwrap();
    let edge = Served::start(state.path(), Listeners::new());
    let port = routed(&edge, "t/slow", "v1", 5000).await;
    let client = http();
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { get(&client, port, "/?sleep=800").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let began = Instant::now();
    let stopped = edge.stop().await;
    let (status, connection, body) = slow.await.unwrap();
    assert_eq!(status, 200, "the request in flight is answered: {body}");
    assert_eq!(
        connection.as_deref(),
        Some("close"),
        "and told its connection closes"
    );
    assert_eq!(stopped.abandoned, 0, "nothing abandoned");
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "serve waited for it ({:?})",
        began.elapsed()
    );
    assert!(refused(port), "no new connection is taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_in_one_process_keep_their_own_routes_limits_and_drains() {
    let (a_state, b_state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Served::start(a_state.path(), Listeners::new());
    let b = Served::start(b_state.path(), Listeners::new());
    let a_port = routed(&a, "t/a", "va", 1000).await;
    let b_port = routed(&b, "t/b", "vb", 1000).await;
    let routes = b.ctl(&json!({"op": "routes"})).await;
    assert_eq!(
        routes["routes"].as_array().unwrap().len(),
        1,
        "b knows only its own route: {routes}"
    );
    let client = http();
    assert!(get(&client, a_port, "/").await.2.starts_with("va"));
    let hello = b.ctl(&json!({"op": "hello"})).await;
    assert_eq!(
        hello["connections"]["open"], 0,
        "a's client connections are not b's: {hello}"
    );

    a.stop().await;
    assert!(refused(a_port));
    // The other edge is not draining: its responses keep the connection.
    let (status, connection, body) = get(&client, b_port, "/").await;
    assert_eq!((status, connection), (200, None), "{body}");
    assert!(body.starts_with("vb"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_listeners_serve_their_routes_and_sockets_of_unknown_ports_are_closed() {
    let state = tempfile::tempdir().unwrap();
    let first = Served::start(state.path(), Listeners::new());
    let port = routed(&first, "t/web", "v1", 1000).await;
    first.stop().await;

    // The next edge gets the route's socket, and one of a port it has no
    // route for, from its caller (as a hand-over passes them).
    let socket = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let stray_port = free_port();
    let stray = std::net::TcpListener::bind(("0.0.0.0", stray_port)).unwrap();
    let given = Listeners {
        tcp: [(port, vec![socket]), (stray_port, vec![stray])]
            .into_iter()
            .collect(),
        udp: Default::default(),
    };
    let next = Served::start(state.path(), given);
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(&client, port, "/").await;
        if status == 200 {
            assert!(body.starts_with("v1"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the given socket serves the route: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused(stray_port),
        "a socket no route wants is closed, not kept"
    );
    next.stop().await;
}
