//! bench/traffic: do blue-green switches and canary splits through the edge
//! lose requests, how close is the observed split to the one asked for, and
//! how soon after a switch returns does the new release serve?
//!
//! Three replicas of the demo app behind the edge on a free port, and one
//! `wrk` run (32 connections, keep-alive, no cookies: every request is a new
//! client) for the whole run. Steps: blue-green deploy of v2 beside v1,
//! switch to v2, switch back to v1, switch to v2 again and retire v1
//! (promote); then a canary of v3 at 10%, split 50%, promote.
//!
//! - Observed split per step: the edge's per-release request counters, read
//!   before and after the step's hold (at least `MIN_REQUESTS` requests).
//! - Switch latency: a probe thread sends one GET after another on its own
//!   connection, stamping when each was sent and answered. For a switch
//!   that returned at T: the first answer from the new release among the
//!   requests sent after T, minus T. Any request sent after T that the old
//!   release answered is counted (it must be none).
//!
//! Run with `make bench-traffic` (needs the musl edge binary: `make edge`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use changeover_application::{services as deploy, traffic, Environment};
use changeover_core::service::Strategy;
use changeover_core::stack;

#[path = "../wrk.rs"]
mod wrk;

use wrk::Wrk;

const CONNECTIONS: u32 = 32;
/// Requests each split step holds for, at least.
const MIN_REQUESTS: u64 = 20_000;
/// Allowed distance between the observed and the requested split.
const SPLIT_TOLERANCE: f64 = 3.0;
const SWITCH_TARGET_MS: f64 = 50.0;

fn quiet() -> changeover_core::rollout::EventSink {
    Arc::new(|_| {})
}

/// One answer the probe got: when its request left, when the answer came,
/// and the version (or an error).
struct Probe {
    sent: Instant,
    done: Instant,
    version: Result<String, String>,
}

fn start_probe(
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Probe>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        let url = format!("http://127.0.0.1:{port}/");
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let version = agent
                .get(&url)
                .call()
                .map_err(|e| e.to_string())
                .and_then(|r| r.into_string().map_err(|e| e.to_string()))
                .map(|b| b.split_whitespace().next().unwrap_or("").to_string());
            log.lock().unwrap().push(Probe {
                sent,
                done: Instant::now(),
                version,
            });
        }
    })
}

/// Requests per release on the service's route, as the edge counts them.
async fn counters(env: &Environment, svc: &str) -> BTreeMap<u32, (u64, u64)> {
    let view = traffic::show(env, svc).await.expect("traffic show");
    view.routes[0]
        .metrics
        .iter()
        .map(|m| (m.release, (m.requests, m.responses[3] + m.failures)))
        .collect()
}

/// Holds until the route served `MIN_REQUESTS` more requests (at least 2 s),
/// then prints each release's share against `want` (release → percent).
async fn hold_and_measure(
    env: &Environment,
    svc: &str,
    step: &str,
    want: &[(u32, u32)],
    ok: &mut bool,
) {
    let before = counters(env, svc).await;
    let started = Instant::now();
    let after = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters(env, svc).await;
        let served: u64 = now
            .iter()
            .map(|(r, (n, _))| n - before.get(r).map(|b| b.0).unwrap_or(0))
            .sum();
        if served >= MIN_REQUESTS && started.elapsed() >= Duration::from_secs(2) {
            break now;
        }
    };
    let delta = |r: u32| -> (u64, u64) {
        let a = after.get(&r).copied().unwrap_or((0, 0));
        let b = before.get(&r).copied().unwrap_or((0, 0));
        (a.0 - b.0, a.1 - b.1)
    };
    let total: u64 = after.keys().map(|r| delta(*r).0).sum();
    let failed: u64 = after.keys().map(|r| delta(*r).1).sum();
    let parts: Vec<String> = want
        .iter()
        .map(|(r, p)| {
            let seen = 100.0 * delta(*r).0 as f64 / total.max(1) as f64;
            let off = (seen - f64::from(*p)).abs();
            *ok &= off <= SPLIT_TOLERANCE;
            format!("r{r} {seen:.2}% (asked {p}%, off {off:.2} pts)")
        })
        .collect();
    *ok &= failed == 0;
    println!(
        "  {step:<34} {total:>7} requests, 5xx+failed {failed}: {}",
        parts.join(", ")
    );
}

/// The switch latency after a change that returned at `at`, toward `version`.
fn switch_latency(
    log: &Mutex<Vec<Probe>>,
    at: Instant,
    version: &str,
) -> (Option<f64>, usize, usize) {
    let deadline = at + Duration::from_secs(2);
    loop {
        {
            let log = log.lock().unwrap();
            let after: Vec<&Probe> = log.iter().filter(|p| p.sent >= at).collect();
            if let Some(first) = after.iter().find(|p| p.version.as_deref() == Ok(version)) {
                let old = after
                    .iter()
                    .filter(|p| matches!(&p.version, Ok(v) if v != version))
                    .count();
                let errors = after.iter().filter(|p| p.version.is_err()).count();
                return (
                    Some(first.done.duration_since(at).as_secs_f64() * 1000.0),
                    old,
                    errors,
                );
            }
        }
        if Instant::now() > deadline {
            return (None, 0, 0);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn switch(
    env: &Environment,
    svc: &str,
    to: &str,
    version: &str,
    log: &Mutex<Vec<Probe>>,
    ok: &mut bool,
) {
    let t = Instant::now();
    traffic::switch(env, svc, to).await.expect("switch");
    let at = Instant::now();
    // The probe keeps stamping; 300 ms of requests sent after the switch are
    // checked for an answer from the old release.
    std::thread::sleep(Duration::from_millis(300));
    let (latency, old, errors) = switch_latency(log, at, version);
    match latency {
        Some(ms) => {
            *ok &= ms < SWITCH_TARGET_MS && old == 0 && errors == 0;
            println!(
                "  switch to release {to} ({version}): command took {:.1} ms; first {version} answer {ms:.2} ms after it returned (target < {SWITCH_TARGET_MS} ms); requests sent after it answered by the old release: {old}; probe errors: {errors}",
                at.duration_since(t).as_secs_f64() * 1000.0
            );
        }
        None => {
            *ok = false;
            println!("  switch to release {to} ({version}): NO answer from {version} within 2 s");
        }
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
    let name = format!("bench-traffic-{}", std::process::id());
    let file = format!(
        "name: {name}\nservices:\n  web:\n    image: changeover-demo:v1\n    ports: [\"{port}:8080\"]\n    deploy:\n      replicas: 3\n    x-changeover:\n      strategy: blue-green\n      canary: {{percent: 10}}\n      health: {{path: /health, interval: 1s, timeout: 1s}}\n      drain_timeout: 10s\n      deploy_timeout: 10s\n"
    );
    let st = stack::parse(&file, "bench.yml", None)
        .stack
        .expect("the bench stack is valid");
    let svc = format!("{name}/web");
    println!("bench/traffic: 3 replicas of changeover-demo behind the edge on port {port}; wrk -c {CONNECTIONS} (no cookies: every request a new client) for the whole run, plus one probe connection");
    deploy::deploy_stack(&env, &st, quiet())
        .await
        .expect("release 1 deploys");

    let wrk = Wrk::start(
        &format!("http://127.0.0.1:{port}/"),
        CONNECTIONS,
        Duration::from_secs(900),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let probe = start_probe(port, stop.clone(), log.clone());
    let run_started = Instant::now();
    let mut ok = true;
    println!("bench/traffic results (release build, this machine)");

    println!(" blue-green");
    let t = Instant::now();
    let out = deploy::deploy_tag(&env, &svc, "v2", Some(Strategy::BlueGreen), None, quiet())
        .await
        .expect("v2 starts beside v1");
    println!(
        "  deploy v2 beside v1               release {} ready in {:.2} s, traffic still on release 1",
        out.release,
        t.elapsed().as_secs_f64()
    );
    hold_and_measure(
        &env,
        &svc,
        "hold: v2 standing by",
        &[(1, 100), (2, 0)],
        &mut ok,
    )
    .await;
    switch(&env, &svc, "2", "v2", &log, &mut ok).await;
    hold_and_measure(
        &env,
        &svc,
        "hold: switched to v2",
        &[(1, 0), (2, 100)],
        &mut ok,
    )
    .await;
    switch(&env, &svc, "1", "v1", &log, &mut ok).await;
    hold_and_measure(
        &env,
        &svc,
        "hold: switched back to v1",
        &[(1, 100), (2, 0)],
        &mut ok,
    )
    .await;
    switch(&env, &svc, "2", "v2", &log, &mut ok).await;
    let t = Instant::now();
    let done = traffic::promote(&env, &svc, quiet())
        .await
        .expect("retire v1");
    println!(
        "  retire v1 (promote)               {:.2} s: {}",
        t.elapsed().as_secs_f64(),
        done.message
    );

    println!(" canary");
    let t = Instant::now();
    let out = deploy::deploy_tag(&env, &svc, "v3", Some(Strategy::Canary), None, quiet())
        .await
        .expect("v3 canary");
    println!(
        "  deploy v3 as a canary             release {} ready in {:.2} s",
        out.release,
        t.elapsed().as_secs_f64()
    );
    let (old, new) = (2, out.release);
    hold_and_measure(
        &env,
        &svc,
        "hold: canary 10%",
        &[(old, 90), (new, 10)],
        &mut ok,
    )
    .await;
    traffic::split(&env, &svc, 50).await.expect("split 50");
    hold_and_measure(
        &env,
        &svc,
        "hold: canary 50%",
        &[(old, 50), (new, 50)],
        &mut ok,
    )
    .await;
    let t = Instant::now();
    let done = traffic::promote(&env, &svc, quiet())
        .await
        .expect("promote v3");
    println!(
        "  promote v3                        {:.2} s: {}",
        t.elapsed().as_secs_f64(),
        done.message
    );
    hold_and_measure(&env, &svc, "hold: v3 alone", &[(new, 100)], &mut ok).await;

    stop.store(true, Ordering::Relaxed);
    probe.join().unwrap();
    let w = wrk.stop();
    let probes = log.lock().unwrap();
    let probe_errors = probes.iter().filter(|p| p.version.is_err()).count();
    println!(" whole run ({:.1} s)", run_started.elapsed().as_secs_f64());
    println!(
        "  wrk requests      : {} ({:.0}/s)",
        w.requests, w.requests_per_sec
    );
    println!("  non-2xx responses : {}", w.non_2xx);
    println!(
        "  socket errors     : {}{}",
        w.socket_errors,
        if w.socket_detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", w.socket_detail)
        }
    );
    println!(
        "  probe requests    : {} ({probe_errors} failed)",
        probes.len()
    );
    ok &= w.non_2xx == 0 && w.socket_errors == 0 && probe_errors == 0;
    changeover_tests::remove_stack(&name, &[port]);
    println!(
        "  zero failed requests, every split within ±{SPLIT_TOLERANCE} points, every switch under {SWITCH_TARGET_MS} ms: {}",
        if ok { "yes" } else { "NO" }
    );
}
