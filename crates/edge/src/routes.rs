//! The routing table: which targets each route has, what state each target is
//! in, and which target the next request goes to.
//!
//! Picking a target and counting it in flight happen under the same lock as
//! a drain marking it `draining`, so once a drain has started no new request
//! can reach that target, and the drain's in-flight count is exact.
//!
//! Routes and their targets persist in `routes.json` in the state directory.
//! After a restart, targets that were healthy start healthy (traffic resumes
//! at once; the health checks correct it within one interval) and the others
//! start as `adding`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use changeover_core::edge::{RouteSpec, RouteStatus, TargetSpec, TargetState, TargetStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One target: a container port on a route.
pub struct Target {
    pub spec: TargetSpec,
    pub health: Mutex<TargetHealth>,
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub added: Instant,
    /// Woken whenever the target's state changes.
    pub changed: Notify,
    pub checker: Mutex<Option<JoinHandle<()>>>,
    /// Idle keep-alive connections to it.
    pub pool: crate::proxy::ConnPool,
}

/// The mutable part of a target's state.
pub struct TargetHealth {
    pub state: TargetState,
    pub passes: u32,
    pub failures: u32,
    pub last_check: Option<String>,
    pub healthy_after: Option<Duration>,
}

impl Target {
    pub fn new(spec: TargetSpec, state: TargetState) -> Arc<Self> {
        Arc::new(Self {
            spec,
            health: Mutex::new(TargetHealth {
                state,
                passes: 0,
                failures: 0,
                last_check: None,
                healthy_after: None,
            }),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            added: Instant::now(),
            changed: Notify::new(),
            checker: Mutex::new(None),
            pool: crate::proxy::ConnPool::default(),
        })
    }

    pub fn health(&self) -> MutexGuard<'_, TargetHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> TargetState {
        self.health().state
    }

    pub fn status(&self) -> TargetStatus {
        let h = self.health();
        TargetStatus {
            spec: self.spec.clone(),
            state: h.state,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            requests: self.requests.load(Ordering::Relaxed),
            last_check: h.last_check.clone(),
            healthy_after_ms: h.healthy_after.map(|d| d.as_millis() as u64),
        }
    }

    /// Stops the target's health checks (it is being removed).
    pub fn stop_checks(&self) {
        if let Some(task) = self
            .checker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// A request counted in flight on a target until this guard drops (when the
/// response body has been sent or the request failed).
pub struct InFlight(pub Arc<Target>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Route {
    pub spec: RouteSpec,
    pub targets: Vec<Arc<Target>>,
    pub listener: Option<crate::proxy::Listener>,
    next: AtomicUsize,
}

impl Route {
    pub fn new(spec: RouteSpec) -> Self {
        Self {
            spec,
            targets: Vec::new(),
            listener: None,
            next: AtomicUsize::new(0),
        }
    }

    pub fn status(&self) -> RouteStatus {
        RouteStatus {
            spec: self.spec.clone(),
            targets: self.targets.iter().map(|t| t.status()).collect(),
        }
    }

    pub fn target(&self, id: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.spec.id == id)
    }
}

/// Every route of the edge, by host port.
#[derive(Default)]
pub struct Table {
    routes: Mutex<BTreeMap<u16, Route>>,
    path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct SavedRoute {
    spec: RouteSpec,
    targets: Vec<SavedTarget>,
}

#[derive(Serialize, Deserialize)]
struct SavedTarget {
    spec: TargetSpec,
    healthy: bool,
}

impl Table {
    /// A table persisted in `dir/routes.json` (`None`: in memory only).
    pub fn new(dir: Option<&Path>) -> Self {
        Self {
            routes: Mutex::new(BTreeMap::new()),
            path: dir.map(|d| d.join("routes.json")),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<u16, Route>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Picks the next healthy target of the route on `port` (round robin),
    /// skipping `except`, and counts the request in flight on it.
    pub fn pick(&self, port: u16, except: Option<&str>) -> Option<InFlight> {
        let routes = self.lock();
        let route = routes.get(&port)?;
        let n = route.targets.len();
        if n == 0 {
            return None;
        }
        let start = route.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let t = &route.targets[(start + i) % n];
            if Some(t.spec.id.as_str()) == except || t.state() != TargetState::Healthy {
                continue;
            }
            t.in_flight.fetch_add(1, Ordering::SeqCst);
            t.requests.fetch_add(1, Ordering::Relaxed);
            return Some(InFlight(t.clone()));
        }
        None
    }

    /// Loads saved routes; the caller opens their listeners and starts checks.
    pub fn load(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let saved: Vec<SavedRoute> = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        let mut routes = self.lock();
        for r in saved {
            let mut route = Route::new(r.spec);
            for t in r.targets {
                let state = if t.healthy {
                    TargetState::Healthy
                } else {
                    TargetState::Adding
                };
                route.targets.push(Target::new(t.spec, state));
            }
            routes.insert(route.spec.port, route);
        }
        Ok(())
    }

    /// Writes the routes to the state directory (atomically).
    pub fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let saved: Vec<SavedRoute> = self
            .lock()
            .values()
            .map(|r| SavedRoute {
                spec: r.spec.clone(),
                targets: r
                    .targets
                    .iter()
                    .filter(|t| t.state() != TargetState::Draining)
                    .map(|t| SavedTarget {
                        spec: t.spec.clone(),
                        healthy: t.state() == TargetState::Healthy,
                    })
                    .collect(),
            })
            .collect();
        let text = serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())?;
        write_atomically(path, &text)
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use changeover_core::edge::HealthProbe;

    fn table_with(states: &[(&str, TargetState)]) -> Table {
        let table = Table::new(None);
        let mut route = Route::new(RouteSpec {
            port: 1,
            service: "s/web".into(),
            health: HealthProbe::default(),
            drain_timeout_ms: 1000,
        });
        for (id, state) in states {
            route.targets.push(Target::new(
                TargetSpec {
                    id: id.to_string(),
                    addr: "127.0.0.1:1".into(),
                    release: 1,
                },
                *state,
            ));
        }
        table.lock().insert(1, route);
        table
    }

    #[test]
    fn only_healthy_targets_get_requests_in_turn() {
        let table = table_with(&[
            ("a", TargetState::Healthy),
            ("b", TargetState::Adding),
            ("c", TargetState::Healthy),
            ("d", TargetState::Draining),
        ]);
        let picked: Vec<String> = (0..4)
            .map(|_| table.pick(1, None).unwrap().0.spec.id.clone())
            .collect();
        assert!(
            picked.iter().all(|id| id == "a" || id == "c"),
            "adding and draining targets must get no request: {picked:?}"
        );
        assert!(
            picked.contains(&"a".to_string()) && picked.contains(&"c".to_string()),
            "both healthy targets share the requests: {picked:?}"
        );
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let table = table_with(&[("a", TargetState::Healthy)]);
        let guard = table.pick(1, None).unwrap();
        let target = guard.0.clone();
        assert_eq!(
            target.in_flight.load(Ordering::SeqCst),
            1,
            "counted while served"
        );
        drop(guard);
        assert_eq!(
            target.in_flight.load(Ordering::SeqCst),
            0,
            "released when done"
        );
    }

    #[test]
    fn a_retry_skips_the_target_that_failed() {
        let table = table_with(&[("a", TargetState::Healthy), ("b", TargetState::Healthy)]);
        for _ in 0..4 {
            let t = table.pick(1, Some("a")).unwrap();
            assert_eq!(t.0.spec.id, "b", "the failed target is not retried");
        }
        let table = table_with(&[("a", TargetState::Healthy)]);
        assert!(
            table.pick(1, Some("a")).is_none(),
            "no other target: no retry"
        );
    }
}
