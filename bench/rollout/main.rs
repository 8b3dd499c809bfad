//! bench/rollout: does a rolling redeploy through the edge lose requests, and
//! what does each slot cost beyond the app's own start and first health check?
//!
//! Three replicas of the demo app (v1) behind the edge on a free port. For
//! each phase a `wrk` run (32 connections, keep-alive) covers the whole phase:
//! roll to v2; roll to a v3 that never becomes healthy (must fail and restore
//! v2); roll back to v1. Then the same load against what users have without
//! Changeover: one container publishing the port itself, replaced by
//! `docker stop` + `docker rm` + `docker run` of the next version.
//!
//! Per-slot overhead = slot wall time − (Docker create+start until running) −
//! (running until the edge's first passing health check).
//!
//! Run with `make bench-rollout` (needs the musl edge binary: `make edge`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use changeover_application::services as deploy;
use changeover_core::rollout::{RolloutEvent, SlotTimings};
use changeover_core::stack;

#[path = "../wrk.rs"]
mod wrk;

use wrk::{Wrk, WrkResult};

const CONNECTIONS: u32 = 32;

/// Load on `port` until stopped; it runs a moment before the phase begins.
fn load(port: u16) -> Wrk {
    let w = Wrk::start(
        &format!("http://127.0.0.1:{port}/"),
        CONNECTIONS,
        Duration::from_secs(600),
    );
    std::thread::sleep(Duration::from_millis(300));
    w
}

fn sink(slots: Arc<Mutex<Vec<SlotTimings>>>) -> changeover_core::rollout::EventSink {
    Arc::new(move |e| {
        if let RolloutEvent::Slot {
            timings: Some(t), ..
        } = e
        {
            if t.total_ms > 0 {
                slots.lock().unwrap().push(t);
            }
        }
    })
}

fn report(phase: &str, wall: Duration, w: &WrkResult, slots: &[SlotTimings], outcome: &str) {
    println!("  {phase}");
    println!("    result            : {outcome}");
    println!("    wall time         : {:.2} s", wall.as_secs_f64());
    println!(
        "    requests sent     : {} in {:.1} s under load",
        w.requests, w.seconds
    );
    println!("    non-2xx responses : {}", w.non_2xx);
    println!(
        "    socket errors     : {}{}",
        w.socket_errors,
        if w.socket_detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", w.socket_detail)
        }
    );
    for (i, s) in slots.iter().enumerate() {
        println!(
            "    slot step {i}       : total {} ms = start {} ms + health {} ms + overhead {} ms",
            s.total_ms, s.start_ms, s.health_ms, s.overhead_ms
        );
    }
    if let Some(max) = slots.iter().map(|s| s.overhead_ms).max() {
        println!("    per-slot overhead : max {max} ms (target < 500 ms)");
    }
}

#[tokio::main]
async fn main() {
    let env = changeover_tests::default_environment();
    let docker = env.docker().await.expect("the daemon answers");
    deploy::ensure_sandbox_images(&docker)
        .await
        .expect("demo images");
    let port = changeover_tests::free_port();
    let name = format!("bench-rollout-{}", std::process::id());
    let file = format!(
        "name: {name}\nservices:\n  web:\n    image: changeover-demo:v1\n    ports: [\"{port}:8080\"]\n    deploy:\n      replicas: 3\n    x-changeover:\n      health: {{path: /health, interval: 1s, timeout: 1s}}\n      drain_timeout: 10s\n      deploy_timeout: 5s\n"
    );
    let parsed = stack::parse(&file, "bench.yml", None);
    let st = parsed.stack.expect("the bench stack is valid");
    let svc = format!("{name}/web");
    println!("bench/rollout: 3 replicas of changeover-demo behind the edge on port {port}; wrk -c {CONNECTIONS} per phase");
    let slots = Arc::new(Mutex::new(Vec::new()));
    deploy::deploy_stack(&env, &st, sink(slots.clone()))
        .await
        .expect("release 1 deploys");
    slots.lock().unwrap().clear();

    let mut all_zero = true;
    let phases: [(&str, Option<&str>); 3] = [
        ("roll v1 -> v2", Some("v2")),
        (
            "roll v2 -> v3 (never healthy: must fail and restore v2)",
            Some("v3-unhealthy"),
        ),
        ("rollback -> v1", None),
    ];
    println!("bench/rollout results (release build, this machine)");
    for (phase, tag) in phases {
        let wrk = load(port);
        let t0 = Instant::now();
        let result = match tag {
            Some(tag) => deploy::deploy_tag(&env, &svc, tag, None, None, sink(slots.clone())).await,
            None => deploy::rollback(&env, &svc, sink(slots.clone())).await,
        };
        let wall = t0.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let w = wrk.stop();
        let expect_failure = tag == Some("v3-unhealthy");
        let outcome = match (&result, expect_failure) {
            (Ok(o), false) => format!("ok, release {}", o.release),
            (Ok(o), true) => format!("UNEXPECTED success, release {}", o.release),
            (Err(p), true) => format!(
                "failed as it must: {}",
                p.message.lines().next().unwrap_or("")
            ),
            (Err(p), false) => format!("FAILED: {}", p.message.lines().next().unwrap_or("")),
        };
        all_zero &= result.is_ok() != expect_failure;
        let taken: Vec<SlotTimings> = std::mem::take(&mut *slots.lock().unwrap());
        report(phase, wall, &w, &taken, &outcome);
        all_zero &= w.non_2xx == 0 && w.socket_errors == 0;
    }

    // Baseline: what users have without Changeover.
    let base_port = changeover_tests::free_port();
    let base = format!("bench-naive-{}", std::process::id());
    let run = |tag: &str| {
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &base,
                "-p",
                &format!("{base_port}:8080"),
                &format!("changeover-demo:{tag}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("v1");
    std::thread::sleep(Duration::from_millis(1000));
    let wrk = load(base_port);
    let t0 = Instant::now();
    let _ = Command::new("docker").args(["stop", &base]).output();
    let _ = Command::new("docker").args(["rm", &base]).output();
    run("v2");
    let wall = t0.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    let w = wrk.stop();
    report(
        "baseline: naive recreate (docker stop + rm + run on the same published port)",
        wall,
        &w,
        &[],
        "v2 running",
    );
    let _ = Command::new("docker").args(["rm", "-f", &base]).output();

    // Clean up the bench's service (containers, route, network).
    changeover_tests::remove_stack(&name, &[port]);
    println!(
        "  every phase as expected, zero non-2xx and zero socket errors through the edge: {}",
        if all_zero { "yes" } else { "NO" }
    );
}
