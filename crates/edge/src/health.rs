//! Active health checks.
//!
//! One task per target. A check is an HTTP GET of the route's health path
//! (2xx and 3xx pass) or, without a path, a TCP connect. While a target is
//! being added it is checked every `min(interval, 250 ms)`, so a container
//! that is ready fast is routed fast; after that, every `interval`.
//! `healthy_threshold` passes in a row make a target healthy;
//! `unhealthy_threshold` failures in a row take a healthy one out of rotation.
//! A draining target is no longer checked. A probe that leaves it to the
//! container's Docker health check (`docker`) passes at once.

use std::sync::Arc;
use std::time::Duration;

use crate::routes::Target;
use changeover_core::edge::{HealthProbe, TargetState};

const ADDING_INTERVAL: Duration = Duration::from_millis(250);

/// Starts checking `target` with `probe`; the task ends when the target
/// drains or its checker is aborted.
pub fn start(target: &Arc<Target>, probe: HealthProbe) {
    let t = target.clone();
    let task = tokio::spawn(async move {
        loop {
            let state = t.state();
            if state == TargetState::Draining {
                return;
            }
            let (passed, seen) = if probe.docker {
                // The rollout waited for Docker's check and the watcher
                // takes the container off when it fails; a target taken
                // out by a refused datagram comes back after an interval.
                (
                    true,
                    "its Docker health check decides (healthy when added)".to_string(),
                )
            } else {
                check(&t.spec.addr, &probe).await
            };
            record(&t, &probe, passed, seen);
            t.pool.prune();
            let interval = Duration::from_millis(probe.interval_ms.max(50));
            let wait = if t.state() == TargetState::Adding {
                interval.min(ADDING_INTERVAL)
            } else {
                interval
            };
            tokio::time::sleep(wait).await;
        }
    });
    if let Some(old) = target
        .checker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(task)
    {
        old.abort();
    }
}

/// Applies one check's outcome to the target's state.
pub fn record(t: &Target, probe: &HealthProbe, passed: bool, seen: String) {
    let mut h = t.health();
    h.last_check = Some(seen);
    let before = h.state;
    if passed {
        h.passes += 1;
        h.failures = 0;
        if matches!(h.state, TargetState::Adding | TargetState::Unhealthy)
            && h.passes >= probe.healthy_threshold.max(1)
        {
            h.state = TargetState::Healthy;
            if h.healthy_after.is_none() {
                h.healthy_after = Some(t.added.elapsed());
            }
        }
    } else {
        h.failures += 1;
        h.passes = 0;
        if h.state == TargetState::Healthy && h.failures >= probe.unhealthy_threshold.max(1) {
            h.state = TargetState::Unhealthy;
        }
    }
    let changed = h.state != before;
    drop(h);
    if changed {
        t.changed.notify_waiters();
        crate::changes::bump();
    }
}

async fn check(addr: &str, probe: &HealthProbe) -> (bool, String) {
    let timeout = Duration::from_millis(probe.timeout_ms.max(10));
    match &probe.path {
        None => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => (true, format!("TCP connect to {addr} succeeded")),
            Ok(Err(e)) => (false, format!("TCP connect to {addr}: {e}")),
            Err(_) => (false, format!("TCP connect to {addr} timed out")),
        },
        Some(path) => match crate::upstream::get(addr, path, timeout, 200).await {
            Ok((status, body)) => {
                let snippet = String::from_utf8_lossy(&body);
                let passed = status.is_success() || status.is_redirection();
                (
                    passed,
                    format!("GET {path} → {status} {}", snippet.trim())
                        .trim()
                        .to_string(),
                )
            }
            Err(why) => (false, format!("GET {path}: {why}")),
        },
    }
}
