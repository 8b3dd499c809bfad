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

use changeover_core::edge::{
    RouteSpec, RouteStatus, TargetSpec, TargetState, TargetStatus, TrafficPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::traffic::{is_even, new_sticky_id, release_for, Counters, Hints};

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
    /// Its release's counters on its route.
    pub counters: Arc<Counters>,
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
    pub fn new(spec: TargetSpec, state: TargetState, counters: Arc<Counters>) -> Arc<Self> {
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
            counters,
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
    pub policy: TrafficPolicy,
    /// Per release, kept while the edge runs (a release's figures survive
    /// its targets' removal, for switch-back comparisons).
    counters: BTreeMap<u32, Arc<Counters>>,
    next: AtomicUsize,
}

/// Where a request goes.
pub enum Pick {
    /// This target; set this sticky id on the response when `Some`.
    Target(InFlight, Option<u64>),
    /// The route is paused: answer 503 with this text.
    Maintenance(String),
    /// No healthy target.
    Nothing,
}

impl Route {
    pub fn new(spec: RouteSpec) -> Self {
        Self {
            spec,
            targets: Vec::new(),
            listener: None,
            policy: TrafficPolicy::default(),
            counters: BTreeMap::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// A new target on this route, counted with its release.
    pub fn add_target(&mut self, spec: TargetSpec, state: TargetState) -> Arc<Target> {
        let counters = self
            .counters
            .entry(spec.release)
            .or_insert_with(|| Arc::new(Counters::new(spec.release)))
            .clone();
        let t = Target::new(spec, state, counters);
        self.targets.push(t.clone());
        t
    }

    pub fn status(&self) -> RouteStatus {
        RouteStatus {
            spec: self.spec.clone(),
            targets: self.targets.iter().map(|t| t.status()).collect(),
            policy: self.policy.clone(),
            metrics: self
                .counters
                .values()
                .map(|c| {
                    let in_flight = self
                        .targets
                        .iter()
                        .filter(|t| t.spec.release == c.release)
                        .map(|t| t.in_flight.load(Ordering::SeqCst))
                        .sum();
                    c.snapshot(in_flight)
                })
                .collect(),
        }
    }

    fn serving(&self, release: u32, except: Option<&str>) -> bool {
        self.targets.iter().any(|t| {
            t.spec.release == release
                && Some(t.spec.id.as_str()) != except
                && t.state() == TargetState::Healthy
        })
    }

    /// The next healthy target (round robin), of `release` when given.
    fn next_target(&self, release: Option<u32>, except: Option<&str>) -> Option<InFlight> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let t = &self.targets[(start + i) % n];
            if Some(t.spec.id.as_str()) == except
                || release.is_some_and(|r| r != t.spec.release)
                || t.state() != TargetState::Healthy
            {
                continue;
            }
            t.in_flight.fetch_add(1, Ordering::SeqCst);
            t.requests.fetch_add(1, Ordering::Relaxed);
            return Some(InFlight(t.clone()));
        }
        None
    }

    /// Where a request with these hints goes under the route's policy.
    fn pick(&self, except: Option<&str>, hints: &Hints) -> Pick {
        if let Some(text) = &self.policy.maintenance {
            return Pick::Maintenance(text.clone());
        }
        if let (Some(preview), Some(token)) = (&self.policy.preview, hints.preview) {
            if preview.token == token {
                if let Some(t) = self.next_target(Some(preview.release), except) {
                    return Pick::Target(t, None);
                }
            }
        }
        if is_even(&self.policy) {
            return match self.next_target(None, except) {
                Some(t) => Pick::Target(t, None),
                None => Pick::Nothing,
            };
        }
        let (id, fresh) = match hints.sticky {
            Some(id) => (id, false),
            None => (new_sticky_id(), true),
        };
        let chosen = release_for(id, &self.policy.weights, |r| self.serving(r, except));
        // No release with a share can serve: any healthy target beats a 503.
        match self.next_target(chosen, except) {
            Some(t) => Pick::Target(t, fresh.then_some(id)),
            None => match self.next_target(None, except) {
                Some(t) => Pick::Target(t, None),
                None => Pick::Nothing,
            },
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
    #[serde(default)]
    policy: TrafficPolicy,
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

    /// Picks where a request on `port` goes under the route's policy,
    /// skipping the target `except`, and counts it in flight there.
    pub fn pick(&self, port: u16, except: Option<&str>, hints: &Hints) -> Pick {
        match self.lock().get(&port) {
            Some(route) => route.pick(except, hints),
            None => Pick::Nothing,
        }
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
            route.policy = r.policy;
            for t in r.targets {
                let state = if t.healthy {
                    TargetState::Healthy
                } else {
                    TargetState::Adding
                };
                route.add_target(t.spec, state);
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
                policy: r.policy.clone(),
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
    use crate::traffic::shares;
    use changeover_core::edge::{HealthProbe, Preview};

    fn table_with(states: &[(&str, u32, TargetState)]) -> Table {
        let table = Table::new(None);
        let mut route = Route::new(RouteSpec {
            port: 1,
            service: "s/web".into(),
            health: HealthProbe::default(),
            drain_timeout_ms: 1000,
        });
        for (id, release, state) in states {
            route.add_target(
                TargetSpec {
                    id: id.to_string(),
                    addr: "127.0.0.1:1".into(),
                    release: *release,
                },
                *state,
            );
        }
        table.lock().insert(1, route);
        table
    }

    fn pick(table: &Table, except: Option<&str>, hints: &Hints) -> Option<(InFlight, Option<u64>)> {
        match table.pick(1, except, hints) {
            Pick::Target(t, sticky) => Some((t, sticky)),
            _ => None,
        }
    }

    fn set_policy(table: &Table, policy: TrafficPolicy) {
        if let Some(r) = table.lock().get_mut(&1) {
            r.policy = policy;
        }
    }

    /// Target `old` of release 1 and `new` of release 2, both healthy, under
    /// `policy`.
    fn two_releases(policy: TrafficPolicy) -> Table {
        let table = table_with(&[
            ("old", 1, TargetState::Healthy),
            ("new", 2, TargetState::Healthy),
        ]);
        set_policy(&table, policy);
        table
    }

    /// The release the next request with `hints` goes to.
    fn release_picked(table: &Table, hints: &Hints) -> u32 {
        pick(table, None, hints)
            .map(|(t, _)| t.0.spec.release)
            .expect("a target is picked")
    }

    #[test]
    fn only_healthy_targets_get_requests_in_turn() {
        let table = table_with(&[
            ("a", 1, TargetState::Healthy),
            ("b", 1, TargetState::Adding),
            ("c", 1, TargetState::Healthy),
            ("d", 1, TargetState::Draining),
        ]);
        let picked: Vec<String> = (0..4)
            .map(|_| {
                pick(&table, None, &Hints::default())
                    .unwrap()
                    .0
                     .0
                    .spec
                    .id
                    .clone()
            })
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
        let table = table_with(&[("a", 1, TargetState::Healthy)]);
        let (guard, _) = pick(&table, None, &Hints::default()).unwrap();
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
        let table = table_with(&[
            ("a", 1, TargetState::Healthy),
            ("b", 1, TargetState::Healthy),
        ]);
        for _ in 0..4 {
            let (t, _) = pick(&table, Some("a"), &Hints::default()).unwrap();
            assert_eq!(t.0.spec.id, "b", "the failed target is not retried");
        }
        let table = table_with(&[("a", 1, TargetState::Healthy)]);
        assert!(
            pick(&table, Some("a"), &Hints::default()).is_none(),
            "no other target: no retry"
        );
    }

    #[test]
    fn weights_split_new_clients_and_a_sticky_client_stays() {
        let table = two_releases(TrafficPolicy {
            weights: shares(&[(1, 75), (2, 25)]),
            ..Default::default()
        });
        let mut on_new = 0;
        for _ in 0..10_000 {
            let (t, sticky) = pick(&table, None, &Hints::default()).unwrap();
            assert!(sticky.is_some(), "a new client gets a sticky id");
            if t.0.spec.release == 2 {
                on_new += 1;
            }
        }
        assert!(
            (2_200..2_800).contains(&on_new),
            "about 25% on release 2: {on_new}"
        );
        let (first, id) = pick(&table, None, &Hints::default()).unwrap();
        let hints = Hints {
            sticky: id,
            preview: None,
        };
        for _ in 0..50 {
            let (t, again) = pick(&table, None, &hints).unwrap();
            assert_eq!(t.0.spec.release, first.0.spec.release, "sticky");
            assert_eq!(again, None, "no new cookie for a known client");
        }
    }

    #[test]
    fn a_switch_is_all_or_nothing_and_falls_back_when_the_release_dies() {
        let table = two_releases(TrafficPolicy {
            weights: shares(&[(1, 0), (2, 100)]),
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(release_picked(&table, &Hints::default()), 2);
        }
        if let Some(r) = table.lock().get(&1) {
            r.targets[1].health().state = TargetState::Unhealthy;
        }
        assert_eq!(
            release_picked(&table, &Hints::default()),
            1,
            "with release 2 down, the healthy release serves rather than a 503"
        );
    }

    #[test]
    fn preview_tokens_and_maintenance() {
        let table = two_releases(TrafficPolicy {
            weights: shares(&[(1, 100), (2, 0)]),
            preview: Some(Preview {
                release: 2,
                token: "team".into(),
            }),
            maintenance: None,
        });
        let team = Hints {
            preview: Some("team"),
            sticky: None,
        };
        let other = Hints {
            preview: Some("guess"),
            sticky: None,
        };
        assert_eq!(release_picked(&table, &team), 2);
        assert_eq!(release_picked(&table, &other), 1);
        set_policy(
            &table,
            TrafficPolicy {
                maintenance: Some("back soon".into()),
                ..Default::default()
            },
        );
        assert!(matches!(table.pick(1, None, &team), Pick::Maintenance(t) if t == "back soon"));
    }
}
