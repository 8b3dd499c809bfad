//! Blue-green and canary against the real daemon through the `changeover`
//! CLI: the new release starts beside the old, traffic moves only when told
//! (switch, split, preview), promote and abort settle it — under load with no
//! failed request — and the faults: unhealthy releases refused, a canary
//! whose containers all die, the edge restarted mid-canary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::RwLock;
use std::time::Duration;

use changeover_tests::{changeover, docker, free_port, get, wait_for, Load, TestStack};
use serde_json::Value;

/// Tests share the environment's one edge; the test that restarts it takes
/// this exclusively.
static EDGE: RwLock<()> = RwLock::new(());

fn shared_edge() -> std::sync::RwLockReadGuard<'static, ()> {
    EDGE.read().unwrap_or_else(|p| p.into_inner())
}

fn web(port: u16, replicas: u32, x: &str) -> String {
    format!(
        r#"services:
  web:
    image: changeover-demo:v1
    ports: ["{port}:8080"]
    labels: {{dev.changeover.test: "1"}}
    deploy:
      replicas: {replicas}
    x-changeover:
{x}      health: {{path: /health, interval: 500ms, timeout: 1s}}
      drain_timeout: 5s
      deploy_timeout: 20s
"#
    )
}

/// A stack of two v1 replicas with these `x-changeover` lines, deployed:
/// the stack, its port and `stack/web`.
fn deployed(prefix: &str, x: &str) -> (TestStack, u16, String) {
    let port = free_port();
    let stack = TestStack::new(prefix, &web(port, 2, x), &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "first deploy",
    );
    (stack, port, svc)
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn refused(args: &[&str], says: &str) {
    let out = changeover(args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} is refused");
    assert!(err.contains(says), "{args:?} says {says:?}:\n{err}");
}

fn inspect(name: &str) -> Value {
    let out = changeover(&["service", "inspect", name, "--json"], &[]);
    ok(&out, "service inspect");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn running_releases(name: &str) -> Vec<u64> {
    let mut v: Vec<u64> = inspect(name)["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["running"].as_bool().unwrap())
        .map(|c| c["release"].as_u64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

fn traffic(name: &str) -> Value {
    let out = changeover(&["traffic", "show", name, "--json"], &[]);
    ok(&out, "traffic show");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn weights(name: &str) -> Vec<(u64, u64)> {
    traffic(name)["routes"][0]["policy"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["release"].as_u64().unwrap(),
                s["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// One GET with extra headers: the demo's version and the `Set-Cookie`.
fn fetch(port: u16, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut req = agent
        .get(&format!("http://127.0.0.1:{port}/"))
        .timeout(Duration::from_secs(5));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = req.call().expect("an answer");
    let cookie = r.header("set-cookie").map(str::to_string);
    let body = r.into_string().unwrap();
    (
        body.split_whitespace().next().unwrap_or("").to_string(),
        cookie,
    )
}

/// Versions that `n` new clients (no cookie) get.
fn new_clients(port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(fetch(port, &[]).0).or_default() += 1;
    }
    seen
}

#[test]
fn blue_green_starts_beside_switches_back_and_forth_and_promotes_without_a_failed_request() {
    let _edge = shared_edge();
    let (_stack, port, svc) = deployed("bg", "      strategy: blue-green\n");
    let load = Load::start(port, 2);
    let said = ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "deploy v2 beside v1",
    );
    assert!(
        said.contains(&format!("traffic switch {svc} --to 2")),
        "says how to switch:\n{said}"
    );
    assert_eq!(running_releases(&svc), vec![1, 1, 2, 2], "both run");
    assert_eq!(weights(&svc), vec![(1, 100), (2, 0)]);
    assert_eq!(new_clients(port, 30).get("v1"), Some(&30), "all on v1");
    let view = inspect(&svc);
    assert_eq!(view["record"]["current"], 1);
    assert_eq!(view["record"]["candidate"]["release"], 2);
    assert_eq!(view["record"]["candidate"]["strategy"], "blue-green");

    refused(
        &["service", "deploy", &svc, "--tag", "v1"],
        "promote it (`changeover traffic promote",
    );
    refused(&["service", "rollback", &svc], "runs beside release 1");
    refused(
        &[
            "service",
            "deploy",
            &svc,
            "--tag",
            "v2",
            "--strategy",
            "big-bang",
        ],
        "\"big-bang\" is not a strategy (rolling, blue-green or canary)",
    );

    for (to, version) in [("2", "v2"), ("v1", "v1"), ("2", "v2")] {
        ok(
            &changeover(&["traffic", "switch", &svc, "--to", to], &[]),
            "switch",
        );
        // In effect as the command returns: the very next requests.
        assert_eq!(
            new_clients(port, 20).get(version),
            Some(&20),
            "after switching to {to}, every new request goes to {version}"
        );
    }
    let said = ok(&changeover(&["traffic", "promote", &svc], &[]), "promote");
    assert!(said.contains("is on release 2"), "{said}");
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
    assert!(counted.versions.contains_key("v1") && counted.versions.contains_key("v2"));
    assert_eq!(running_releases(&svc), vec![2, 2], "release 1 stopped");
    assert!(weights(&svc).is_empty(), "back to every container alike");
    let view = inspect(&svc);
    assert_eq!(view["record"]["current"], 2);
    assert!(view["record"]["candidate"].is_null());
    assert_eq!(get(port).unwrap().split_whitespace().next(), Some("v2"));
    refused(&["traffic", "promote", &svc], "runs no release beside");
    refused(&["traffic", "abort", &svc], "runs no release beside");
}

#[test]
fn canary_splits_sticky_previews_refuses_bad_changes_and_aborts() {
    let _edge = shared_edge();
    let (stack, port, svc) = deployed(
        "canary",
        "      strategy: canary\n      canary: {percent: 30}\n",
    );
    let load = Load::start(port, 2);
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "canary v2",
    );
    assert_eq!(weights(&svc), vec![(1, 70), (2, 30)]);
    let seen = new_clients(port, 400);
    let v2 = *seen.get("v2").unwrap_or(&0) as f64 / 400.0;
    assert!(
        (0.2..=0.4).contains(&v2),
        "about 30% of new clients on v2: {seen:?}"
    );

    // Sticky: a client keeps its release while the split holds, and when
    // the split grows only clients move onto the canary, never off it.
    let mut clients = Vec::new();
    for _ in 0..40 {
        let (version, cookie) = fetch(port, &[]);
        let cookie = cookie.expect("a new client gets the sticky cookie");
        assert!(cookie.starts_with("changeover-release="), "{cookie}");
        clients.push((version, cookie.split(';').next().unwrap().to_string()));
    }
    for (version, cookie) in &clients {
        for _ in 0..3 {
            assert_eq!(&fetch(port, &[("cookie", cookie)]).0, version);
        }
    }
    ok(
        &changeover(&["traffic", "split", &svc, "--percent", "60"], &[]),
        "split 60",
    );
    for (version, cookie) in &clients {
        if version == "v2" {
            assert_eq!(
                fetch(port, &[("cookie", cookie)]).0,
                "v2",
                "a canary client stays on it as the share grows"
            );
        }
    }

    // Preview: the token's holders see v2 whatever the split.
    ok(
        &changeover(&["traffic", "split", &svc, "--percent", "0"], &[]),
        "split 0",
    );
    assert_eq!(new_clients(port, 20).get("v1"), Some(&20));
    let out = changeover(&["traffic", "preview", &svc, "--token", "team-review"], &[]);
    let said = ok(&out, "preview");
    assert!(
        said.contains(&format!(
            "http://localhost:{port}/?changeover-preview=team-review"
        )),
        "{said}"
    );
    for _ in 0..10 {
        assert_eq!(
            fetch(port, &[("x-changeover-preview", "team-review")]).0,
            "v2"
        );
        assert_eq!(
            fetch(port, &[("cookie", "changeover-preview=team-review")]).0,
            "v2"
        );
        assert_eq!(fetch(port, &[("x-changeover-preview", "guess")]).0, "v1");
    }
    let link = ureq::AgentBuilder::new()
        .redirects(0)
        .build()
        .get(&format!(
            "http://127.0.0.1:{port}/?changeover-preview=team-review"
        ))
        .call()
        .unwrap();
    assert_eq!(link.status(), 303);
    assert_eq!(link.header("location"), Some("/"));
    assert!(link
        .header("set-cookie")
        .unwrap()
        .starts_with("changeover-preview=team-review;"));

    // Bad changes are refused and change nothing.
    refused(
        &["traffic", "split", &svc, "--percent", "101"],
        "not a percentage from 0 to 100",
    );
    refused(
        &["traffic", "split", &svc, "--percent", "-1"],
        "not a percentage from 0 to 100",
    );
    refused(
        &["traffic", "switch", &svc, "--to", "9"],
        "no live release \"9\"",
    );
    refused(
        &["traffic", "preview", &svc, "--token", "a b"],
        "not a usable preview token",
    );
    assert_eq!(weights(&svc), vec![(1, 100), (2, 0)]);

    // Promote refuses while a replica of the canary is down: stopped, it
    // leaves the routes at once (the edge's watcher follows the daemon).
    let r2s1 = format!("{}-web-r2-s1", stack.name);
    docker(&["stop", "-t", "0", &r2s1]);
    wait_for(Duration::from_secs(10), || {
        let t = traffic(&svc);
        let routed_healthy = t["routes"][0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == r2s1.as_str() && t["state"] == "healthy");
        (!routed_healthy).then_some(())
    })
    .expect("the stopped container gets no traffic");
    refused(&["traffic", "promote", &svc], &r2s1);
    assert_eq!(inspect(&svc)["record"]["candidate"]["release"], 2);

    let said = ok(&changeover(&["traffic", "abort", &svc], &[]), "abort");
    assert!(said.contains("every request goes to release 1"), "{said}");
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
    assert_eq!(running_releases(&svc), vec![1, 1]);
    assert!(
        !stack.containers().iter().any(|c| c.contains("-r2-")),
        "the canary's containers are removed: {:?}",
        stack.containers()
    );
    let view = inspect(&svc);
    assert!(view["record"]["candidate"].is_null());
    let r2 = &view["record"]["releases"][1];
    assert_eq!(r2["result"]["kind"], "failed");
    assert!(
        r2["result"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by "),
        "{r2}"
    );
    assert!(weights(&svc).is_empty());
}

#[test]
fn a_canary_whose_containers_all_die_gives_its_traffic_back_to_the_healthy_release() {
    let _edge = shared_edge();
    let (stack, port, svc) = deployed(
        "dying",
        "      strategy: canary\n      canary: {percent: 50}\n",
    );
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "canary v2",
    );
    let load = Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(500));
    for s in 0..2 {
        docker(&["kill", &format!("{}-web-r2-s{s}", stack.name)]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "requests meant for the dead canary were served by release 1: {:?}",
        counted.failures
    );
    assert_eq!(new_clients(port, 30).get("v1"), Some(&30));
    let t = traffic(&svc);
    let r2_healthy = t["routes"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["release"] == 2 && t["state"] == "healthy")
        .count();
    assert_eq!(r2_healthy, 0, "the edge shows the canary down: {t}");
    refused(
        &["traffic", "switch", &svc, "--to", "2"],
        "none of its containers runs",
    );
    let said = ok(&changeover(&["traffic", "abort", &svc], &[]), "abort");
    assert!(said.contains("release 2 removed"), "{said}");
    assert_eq!(running_releases(&svc), vec![1, 1]);
}

#[test]
fn the_edge_restarted_mid_canary_keeps_the_split_and_every_client_on_its_release() {
    let _edge = EDGE.write().unwrap_or_else(|p| p.into_inner());
    let (_stack, port, svc) = deployed(
        "restart",
        "      strategy: canary\n      canary: {percent: 40}\n",
    );
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "canary v2",
    );
    let mut clients = Vec::new();
    for _ in 0..30 {
        let (version, cookie) = fetch(port, &[]);
        clients.push((
            version,
            cookie.unwrap().split(';').next().unwrap().to_string(),
        ));
    }
    docker(&["restart", "-t", "2", "changeover-edge"]);
    wait_for(Duration::from_secs(20), || get(port).ok())
        .expect("the edge serves again after its restart");
    // Targets come back healthy after their first checks.
    wait_for(Duration::from_secs(10), || {
        let t = traffic(&svc);
        t["routes"][0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "healthy")
            .then_some(())
    })
    .expect("every target healthy again");
    assert_eq!(
        weights(&svc),
        vec![(1, 60), (2, 40)],
        "the split is restored"
    );
    for (version, cookie) in &clients {
        assert_eq!(
            &fetch(port, &[("cookie", cookie)]).0,
            version,
            "{cookie} stays on {version} across the restart"
        );
    }
    assert_eq!(inspect(&svc)["record"]["candidate"]["release"], 2);
}

#[test]
fn a_canary_over_its_5xx_limit_is_stopped_by_the_edge_and_aborted_with_the_reason() {
    let _edge = shared_edge();
    let (_stack, port, svc) = deployed("guard", "      strategy: canary\n      canary: {percent: 20, guard: {max_5xx_percent: 10, window: 10s, min_requests: 20}}\n");
    // A tag of its own: built from this edge binary, which knows `?status=`.
    let tag = format!("v2-guard{}", std::process::id());
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", &tag], &[]),
        "canary",
    );
    let view = traffic(&svc);
    assert_eq!(view["routes"][0]["policy"]["guard"]["release"], 2, "{view}");
    ok(
        &changeover(&["traffic", "preview", &svc, "--token", "failing"], &[]),
        "preview",
    );
    // The canary fails every request sent its way.
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..40 {
        let r = agent
            .get(&format!("http://127.0.0.1:{port}/?status=500"))
            .set("x-changeover-preview", "failing")
            .call();
        assert!(matches!(r, Err(ureq::Error::Status(500, _))), "{r:?}");
    }
    // The edge judges once a second; `traffic show` then settles it.
    let said = wait_for(Duration::from_secs(10), || {
        let out = changeover(&["traffic", "show", &svc], &[]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.contains("aborted by its guard").then_some(err)
    })
    .unwrap_or_else(|| {
        panic!(
            "the guard trips and the canary is aborted: {}",
            traffic(&svc)
        )
    });
    assert!(said.contains("of its last"), "{said}");
    assert_eq!(running_releases(&svc), vec![1, 1]);
    assert_eq!(new_clients(port, 20).get("v1"), Some(&20));
    let r2 = &inspect(&svc)["record"]["releases"][1];
    assert_eq!(r2["result"]["kind"], "failed");
    assert!(
        r2["result"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by its guard: "),
        "the history says why: {r2}"
    );
    assert!(weights(&svc).is_empty());
    docker(&["rmi", &format!("changeover-demo:{tag}")]);
}

/// One HTTP/1.1 request on an open connection: the demo's version.
fn raw_get(conn: &mut std::net::TcpStream) -> std::io::Result<String> {
    use std::io::{Read, Write};
    conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

#[test]
fn a_tcp_service_switches_new_connections_and_drains_open_ones() {
    let _edge = shared_edge();
    let port = free_port();
    let body = format!(
        r#"services:
  db:
    image: changeover-demo:v1
    ports: ["{port}:8080"]
    labels: {{dev.changeover.test: "1"}}
    deploy:
      replicas: 2
    x-changeover:
      protocol: tcp
      strategy: blue-green
      health: {{interval: 500ms, timeout: 1s}}
      drain_timeout: 3s
      deploy_timeout: 20s
"#
    );
    let stack = TestStack::new("tcp", &body, &[port]);
    let svc = format!("{}/db", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "first deploy",
    );
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut long = connect();
    assert_eq!(raw_get(&mut long).unwrap(), "v1");
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "v2 beside v1",
    );
    assert_eq!(running_releases(&svc), vec![1, 1, 2, 2]);
    assert_eq!(
        raw_get(&mut connect()).unwrap(),
        "v1",
        "new connections still on v1"
    );
    ok(
        &changeover(&["traffic", "switch", &svc, "--to", "2"], &[]),
        "switch",
    );
    for _ in 0..10 {
        assert_eq!(
            raw_get(&mut connect()).unwrap(),
            "v2",
            "new connections to v2"
        );
    }
    assert_eq!(
        raw_get(&mut long).unwrap(),
        "v1",
        "the open connection stays where it is"
    );
    refused(
        &["traffic", "preview", &svc, "--token", "team"],
        "is a TCP service",
    );
    let started = std::time::Instant::now();
    ok(&changeover(&["traffic", "promote", &svc], &[]), "promote");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the promote waited for the open connection up to the drain timeout"
    );
    long.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(
        raw_get(&mut long).is_err(),
        "closed once its release drained"
    );
    assert_eq!(running_releases(&svc), vec![2, 2]);
    let t = traffic(&svc);
    assert_eq!(t["routes"][0]["protocol"], "tcp", "{t}");
}

#[test]
fn a_udp_service_rolls_under_load_through_the_edge_and_loses_no_flow() {
    let _edge = shared_edge();
    // Demo images of this very binary (which echoes UDP).
    changeover_tests::demo_images(&[]);
    let port = free_port();
    let body = changeover_tests::udp_echo_service(
        "dns",
        &format!("\"{port}:5353/udp\""),
        "1s",
        "    deploy:\n      replicas: 2\n    x-changeover:\n      drain_timeout: 2s\n      deploy_timeout: 30s\n      timeouts: {udp_idle: 5s}\n",
    );
    let stack = TestStack::new("udp", &body, &[port]);
    let svc = format!("{}/dns", stack.name);
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    let said = ok(&out, "first deploy");
    assert!(
        said.contains(&format!(":{port}")) && said.contains("udp://"),
        "{said}"
    );
    let t = traffic(&svc);
    assert_eq!(t["routes"][0]["udp"], "only", "{t}");
    assert_eq!(
        t["routes"][0]["health"]["docker"], true,
        "a UDP-only port of a service with a healthcheck is judged by it: {t}"
    );
    // The same app published by Docker itself, beside it, for the baseline.
    let published = changeover_tests::DirectUdpEcho::start("t-udp-direct");

    let through_edge = changeover_tests::UdpLoad::start(port, 8);
    let direct_load = changeover_tests::UdpLoad::start(published.port, 8);
    std::thread::sleep(Duration::from_secs(1));
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "rolling deploy of v2 under load",
    );
    std::thread::sleep(Duration::from_secs(2));
    let edge = through_edge.finish();
    let direct = direct_load.finish();
    eprintln!("through the edge during the rolling deploy: {edge:?}");
    eprintln!("published directly, same time: {direct:?}");
    assert!(
        edge.answered > 500 && direct.answered > 500,
        "{edge:?} {direct:?}"
    );
    assert_eq!(
        edge.cut_off, 0,
        "every client is answered at the end: {edge:?}"
    );
    assert!(
        edge.longest_gap <= direct.longest_gap + 1,
        "no client's flow went silent through the deploy: {edge:?} vs {direct:?}"
    );
    assert!(
        edge.lost <= direct.lost + 2,
        "no datagram lost beyond what the direct publish lost: {edge:?} vs {direct:?}"
    );
    assert!(
        edge.versions.contains_key("v1") && edge.versions.contains_key("v2"),
        "clients moved from v1 to v2: {edge:?}"
    );
    assert_eq!(running_releases(&svc), vec![2, 2]);
    refused(
        &["traffic", "preview", &svc, "--token", "team"],
        "is a UDP service",
    );
    // Per release on the edge: flows counted, bytes sent back.
    let t = traffic(&svc);
    let metrics = t["routes"][0]["metrics"].as_array().unwrap();
    for release in [1, 2] {
        let m = metrics
            .iter()
            .find(|m| m["release"] == release)
            .unwrap_or_else(|| panic!("release {release} has counters: {t}"));
        assert!(m["bytes"].as_u64().unwrap() > 0, "{t}");
    }
}

#[test]
fn one_port_carries_tcp_and_udp_and_a_udp_port_nobody_can_check_says_what_to_add() {
    let _edge = shared_edge();
    changeover_tests::demo_images(&[]);
    let port = free_port();
    let body = format!(
        r#"services:
  dns:
    image: changeover-demo:v1
    command: ["--listen", "0.0.0.0:5353", "--udp", "0.0.0.0:5353"]
    ports: ["{port}:5353/tcp", "{port}:5353/udp"]
    labels: {{dev.changeover.test: "1"}}
    x-changeover:
      health: {{path: /health, interval: 500ms}}
      deploy_timeout: 20s
"#
    );
    let stack = TestStack::new("udp-tcp", &body, &[port]);
    let svc = format!("{}/dns", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    let t = traffic(&svc);
    assert_eq!(t["routes"].as_array().unwrap().len(), 1, "one route: {t}");
    assert_eq!(t["routes"][0]["udp"], "also", "{t}");
    assert!(get(port).unwrap().starts_with("v1"), "HTTP on the port");
    let s = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(b"q", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).expect("UDP on the same port");
    assert_eq!(&buf[..n], b"q v1");

    // UDP only, no healthcheck, nothing on TCP: the deploy says why it
    // cannot tell the container is up, and what to add.
    let udp_port = free_port();
    let body = format!(
        r#"services:
  vpn:
    image: changeover-demo:v1
    command: ["--listen", "0.0.0.0:8080", "--udp", "0.0.0.0:51820"]
    ports: ["{udp_port}:51820/udp"]
    labels: {{dev.changeover.test: "1"}}
    x-changeover:
      health: {{interval: 250ms, timeout: 250ms}}
      deploy_timeout: 4s
"#
    );
    let vpn = TestStack::new("udp-nocheck", &body, &[udp_port]);
    let out = changeover(&["stack", "deploy", "-f", &vpn.file()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{udp_port}/udp carries only UDP: the edge checks it by a TCP connect to container port 51820")),
        "the reader warned: {err}"
    );
    assert!(
        err.contains(&format!("port {udp_port}/udp carries only UDP and the service has no healthcheck, so the edge checks it by a TCP connect to container port 51820: give the service a healthcheck")),
        "the failure says what to add: {err}"
    );
}

/// Connects to `port` and reads the greeting a server-first protocol
/// sends before the client says anything.
fn greeted(port: u16) -> (std::io::BufReader<std::net::TcpStream>, String) {
    use std::io::BufRead;
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("the server speaks first");
    (r, line.trim_end().to_string())
}

fn say(r: &mut std::io::BufReader<std::net::TcpStream>, line: &str) -> String {
    use std::io::{BufRead, Write};
    r.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

#[test]
fn a_well_known_port_beside_http_is_relayed_as_tcp_and_both_roll_to_the_next_release() {
    let _edge = shared_edge();
    changeover_tests::demo_images(&[]);
    let (http, smtp) = (free_port(), free_port());
    // A mail catcher's shape: SMTP on 1025 (the server speaks first, which
    // no HTTP proxy carries) beside its web UI, both in one container.
    let body = format!(
        r#"services:
  mail:
    image: changeover-demo:v1
    command: ["--listen", "0.0.0.0:8025", "--tcp", "0.0.0.0:1025"]
    ports: ["{http}:8025", "{smtp}:1025"]
    labels: {{dev.changeover.test: "1"}}
    x-changeover:
      health: {{path: /health, interval: 500ms}}
      drain_timeout: 2s
      deploy_timeout: 20s
"#
    );
    let stack = TestStack::new("relay", &body, &[http, smtp]);
    let svc = format!("{}/mail", stack.name);
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    let said = ok(&out, "deploy");
    let link = |scheme: &str, port: u16| {
        said.split([' ', ',', '\n'])
            .any(|w| w.starts_with(scheme) && w.ends_with(&format!(":{port}")))
    };
    assert!(
        link("http://", http) && link("tcp://", smtp),
        "each port said as what it carries: {said}"
    );
    let t = traffic(&svc);
    let protocols: BTreeMap<u64, String> = t["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["port"].as_u64().unwrap(),
                r["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        protocols,
        BTreeMap::from([
            (u64::from(http), "http".into()),
            (u64::from(smtp), "tcp".into())
        ]),
        "{t}"
    );
    // The relayed route is checked by connecting, not by the HTTP path.
    for r in t["routes"].as_array().unwrap() {
        let path = &r["health"]["path"];
        if r["port"] == smtp {
            assert!(path.is_null(), "{r}");
        } else {
            assert_eq!(path, "/health", "{r}");
        }
    }
    assert!(get(http).unwrap().starts_with("v1 "), "HTTP on its port");
    let (mut open, greeting) = greeted(smtp);
    assert_eq!(greeting, "v1 ready", "greeted through the edge at once");
    assert_eq!(say(&mut open, "EHLO test"), "EHLO test v1");

    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "v2",
    );
    assert!(get(http).unwrap().starts_with("v2 "), "HTTP moved to v2");
    let (mut fresh, greeting) = greeted(smtp);
    assert_eq!(greeting, "v2 ready", "a new connection goes to v2");
    assert_eq!(say(&mut fresh, "QUIT"), "QUIT v2");
}
