//! The daemon is the source of truth, also when someone else changed it:
//! containers removed by hand, killed, and an edge whose state names
//! containers that no longer exist — each under load, through the
//! `changeover` CLI and the edge's watcher, against the real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use changeover_tests::{changeover, docker, edge_ctl, free_port, wait_for, Load, TestStack};
use serde_json::{json, Value};

/// The test that restarts the edge takes this exclusively.
static EDGE: RwLock<()> = RwLock::new(());

fn shared_edge() -> std::sync::RwLockReadGuard<'static, ()> {
    EDGE.read().unwrap_or_else(|p| p.into_inner())
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stack(prefix: &str, replicas: u32, strategy: &str) -> (TestStack, u16, String) {
    let port = free_port();
    let body = format!(
        r#"services:
  web:
    image: changeover-demo:v1
    ports: ["{port}:8080"]
    labels: {{dev.changeover.test: "1"}}
    deploy:
      replicas: {replicas}
    x-changeover:
      strategy: {strategy}
      health: {{path: /health, interval: 500ms, timeout: 1s}}
      drain_timeout: 5s
      deploy_timeout: 20s
"#
    );
    let s = TestStack::new(prefix, &body, &[port]);
    let svc = format!("{}/web", s.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &s.file()], &[]),
        "first deploy",
    );
    (s, port, svc)
}

/// `(target id, address, state)` on the route of `port`.
fn targets(port: u16) -> Vec<(String, String, String)> {
    let routes = edge_ctl(&json!({"op": "routes"})).expect("the edge answers");
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["port"] == port)
        .flat_map(|r| r["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["addr"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Names and IPs (on the stack's network) of the stack's running containers.
fn running(stack: &TestStack) -> Vec<(String, String)> {
    let out = docker(&[
        "ps",
        "--filter",
        &format!("label=dev.changeover.stack={}", stack.name),
        "--format",
        "{{.Names}}",
    ]);
    out.lines()
        .map(|name| {
            let ip = docker(&[
                "inspect",
                "-f",
                &format!(
                    "{{{{(index .NetworkSettings.Networks \"{}_default\").IPAddress}}}}",
                    stack.name
                ),
                name,
            ]);
            (name.to_string(), ip)
        })
        .collect()
}

/// Every target on the route is a running container at its address now.
fn assert_routes_true(stack: &TestStack, port: u16) {
    let live = running(stack);
    for (id, addr, _) in targets(port) {
        let here = live
            .iter()
            .any(|(n, ip)| *n == id && addr.starts_with(&format!("{ip}:")));
        assert!(
            here,
            "{id} at {addr} is on the route but is not a running container there; running: {live:?}"
        );
    }
}

fn gone_from_route(port: u16, name: &str, within: Duration) -> Duration {
    let started = Instant::now();
    wait_for(within, || {
        (!targets(port).iter().any(|t| t.0 == name)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{name} is still on the route after {within:?}: {:?}",
            targets(port)
        )
    });
    started.elapsed()
}

#[test]
fn a_container_removed_by_hand_leaves_the_route_at_once_and_the_next_deploy_replaces_it() {
    let _edge = shared_edge();
    let (stack, port, svc) = stack("rm", 3, "rolling");
    let load = Load::start(port, 3);
    std::thread::sleep(Duration::from_millis(300));
    let victim = format!("{}-web-r1-s1", stack.name);
    docker(&["rm", "-f", &victim]);
    let took = gone_from_route(port, &victim, Duration::from_secs(2));
    assert!(took < Duration::from_secs(2), "left the route in {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    // The ordinary verb repairs it: the same deploy starts the slot again.
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v1"], &[]),
        "deploy again",
    );
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
    assert_eq!(running(&stack).len(), 3, "every slot runs again");
    assert_routes_true(&stack, port);
    assert_eq!(targets(port).len(), 3);
}

#[test]
fn a_killed_container_leaves_the_route_and_comes_back_when_it_starts_again() {
    let _edge = shared_edge();
    let (stack, port, _svc) = stack("kill", 2, "rolling");
    let load = Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(300));
    let victim = format!("{}-web-r1-s0", stack.name);
    docker(&["kill", &victim]);
    gone_from_route(port, &victim, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(500));
    docker(&["start", &victim]);
    let back = wait_for(Duration::from_secs(10), || {
        targets(port)
            .iter()
            .any(|t| t.0 == victim && t.2 == "healthy")
            .then_some(())
    });
    assert!(
        back.is_some(),
        "the restarted container is routed again: {:?}",
        targets(port)
    );
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
    assert_routes_true(&stack, port);
}

#[test]
fn a_blue_green_service_whose_containers_were_all_removed_recovers_with_the_ordinary_verbs() {
    let _edge = shared_edge();
    let (stack, port, svc) = stack("bgrm", 2, "blue-green");
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "v2 beside v1",
    );
    // A prune, a reboot or a hasty operator: every container is gone.
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.changeover.stack={}", stack.name),
    ]);
    let mut args = vec!["rm", "-f"];
    args.extend(ids.lines());
    docker(&args);
    wait_for(Duration::from_secs(3), || {
        targets(port).is_empty().then_some(())
    })
    .expect("no target of a removed container stays on the route");

    let out = changeover(&["traffic", "promote", &svc], &[]);
    assert!(!out.status.success(), "nothing to promote to");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("traffic abort"),
        "and it says what to do: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = ok(&changeover(&["traffic", "abort", &svc], &[]), "abort");
    assert!(said.contains("release 2 removed"), "{said}");
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v1"], &[]),
        "deploy v1 again",
    );
    let load = Load::start(port, 3);
    std::thread::sleep(Duration::from_secs(2));
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
    assert!(counted.ok > 0);
    assert_eq!(counted.versions.keys().collect::<Vec<_>>(), ["v1"]);
    assert_routes_true(&stack, port);
    // And it goes on as usual: a new blue-green deploy and a promote.
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "v2 beside v1 again",
    );
    ok(&changeover(&["traffic", "promote", &svc], &[]), "promote");
}

#[test]
fn an_edge_whose_state_names_containers_that_are_gone_sends_them_no_request() {
    let _edge = EDGE.write().unwrap_or_else(|p| p.into_inner());
    let (stack, port, svc) = stack("stale", 2, "rolling");
    // The edge is down while a container goes: its state file still names it.
    docker(&["stop", "-t", "2", "changeover-edge"]);
    let victim = format!("{}-web-r1-s1", stack.name);
    docker(&["rm", "-f", &victim]);
    docker(&["start", "changeover-edge"]);
    wait_for(Duration::from_secs(20), || {
        edge_ctl(&json!({"op": "hello"})).filter(|h: &Value| h["result"] == "hello")
    })
    .expect("the edge answers again");
    gone_from_route(port, &victim, Duration::from_secs(2));
    let load = Load::start(port, 3);
    std::thread::sleep(Duration::from_secs(2));
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
    assert_routes_true(&stack, port);
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v1"], &[]),
        "deploy again",
    );
    assert_eq!(targets(port).len(), 2, "both slots are routed again");
    assert_routes_true(&stack, port);
}

#[test]
fn a_udp_container_docker_calls_unhealthy_leaves_the_route_and_comes_back_when_healthy() {
    let _edge = shared_edge();
    changeover_tests::demo_images(&[]);
    let port = free_port();
    let body = changeover_tests::udp_echo_service(
        "dns",
        &format!("\"{port}:5353/udp\""),
        "500ms",
        "    deploy:\n      replicas: 2\n    x-changeover:\n      deploy_timeout: 30s\n",
    );
    let stack = TestStack::new("udp-health", &body, &[port]);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    let load = changeover_tests::UdpLoad::start(port, 4);
    std::thread::sleep(Duration::from_millis(300));
    // The app's own check fails from now on: Docker calls it unhealthy,
    // and the watcher takes it off the route (no TCP check could tell).
    let sick = format!("{}-dns-r1-s0", stack.name);
    let probe = |q: &str| {
        docker(&[
            "exec",
            &sick,
            "/changeover-edge",
            "probe",
            &format!("http://127.0.0.1:8080/?health={q}"),
        ])
    };
    probe("fail");
    let took = gone_from_route(port, &sick, Duration::from_secs(10));
    eprintln!(
        "off the route {} ms after its check began failing",
        took.as_millis()
    );
    std::thread::sleep(Duration::from_millis(500));
    probe("ok");
    let back = wait_for(Duration::from_secs(10), || {
        targets(port)
            .iter()
            .any(|t| t.0 == sick && t.2 == "healthy")
            .then_some(())
    });
    assert!(
        back.is_some(),
        "healthy again, it is routed again: {:?}",
        targets(port)
    );
    let counted = load.finish();
    assert_eq!(counted.cut_off, 0, "{counted:?}");
    assert!(counted.answered > 100, "{counted:?}");
    eprintln!("UDP load through it: {counted:?}");
    assert_routes_true(&stack, port);
}
