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

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use changeover_core::edge::{
    RouteSpec, RouteStatus, TargetSpec, TargetState, TargetStatus, TrafficPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::store::StoredFile;
use crate::traffic::{is_even, new_sticky_id, release_for, Counters, Hints};

/// One target: a container port on a route.
pub struct Target {
    pub spec: TargetSpec,
    health: Mutex<TargetHealth>,
    /// `health.state`, readable by every request without the lock; kept
    /// in step by [`HealthGuard`].
    state: AtomicU8,
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub added: Instant,
    /// Woken whenever the target's state changes.
    pub changed: Notify,
    pub checker: Mutex<Option<JoinHandle<()>>>,
    /// Idle keep-alive connections to it.
    pub pool: crate::pool::ConnPool,
    /// Its release's counters on its route.
    pub counters: Arc<Counters>,
    /// Removed from its route: open TCP relays to it close.
    closed: std::sync::atomic::AtomicBool,
}

/// The mutable part of a target's state.
pub struct TargetHealth {
    pub state: TargetState,
    pub passes: u32,
    pub failures: u32,
    pub last_check: Option<String>,
    pub healthy_after: Option<Duration>,
}

/// The target's health, locked; its state is published for requests when
/// the guard goes.
pub struct HealthGuard<'a> {
    health: MutexGuard<'a, TargetHealth>,
    published: &'a AtomicU8,
}

impl std::ops::Deref for HealthGuard<'_> {
    type Target = TargetHealth;
    fn deref(&self) -> &TargetHealth {
        &self.health
    }
}

impl std::ops::DerefMut for HealthGuard<'_> {
    fn deref_mut(&mut self) -> &mut TargetHealth {
        &mut self.health
    }
}

impl Drop for HealthGuard<'_> {
    fn drop(&mut self) {
        self.published
            .store(state_code(self.health.state), Ordering::Release);
    }
}

const STATES: [TargetState; 4] = [
    TargetState::Adding,
    TargetState::Healthy,
    TargetState::Unhealthy,
    TargetState::Draining,
];

fn state_code(state: TargetState) -> u8 {
    STATES.iter().position(|s| *s == state).unwrap_or(0) as u8
}

impl Target {
    pub fn new(spec: TargetSpec, state: TargetState, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(Self {
            spec,
            state: AtomicU8::new(state_code(state)),
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
            pool: crate::pool::ConnPool::default(),
            counters,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The target is gone from its route (removed, or drained to the end):
    /// connections still open to it are closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Resolves once [`Target::close`] was called.
    pub async fn closed(&self) {
        loop {
            let changed = self.changed.notified();
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            changed.await;
        }
    }

    pub fn health(&self) -> HealthGuard<'_> {
        HealthGuard {
            health: self.health.lock().unwrap_or_else(|p| p.into_inner()),
            published: &self.state,
        }
    }

    pub fn state(&self) -> TargetState {
        STATES[self.state.load(Ordering::Acquire) as usize % STATES.len()]
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

impl InFlight {
    /// This request could not connect to its target: take the target out
    /// of rotation now; its health checks bring it back when it answers
    /// again.
    pub fn mark_unreachable(&self, why: &str) {
        self.0.mark_unreachable(why)
    }
}

impl Target {
    /// Traffic to it failed: out of rotation now; its health checks bring
    /// it back when it answers again.
    pub fn mark_unreachable(&self, why: &str) {
        let mut h = self.health();
        if h.state == TargetState::Healthy {
            h.state = TargetState::Unhealthy;
            h.passes = 0;
            h.last_check = Some(format!("request failed: {why}"));
            drop(h);
            self.changed.notify_waiters();
            crate::changes::bump();
        }
    }
}

pub struct Route {
    pub spec: RouteSpec,
    pub targets: Vec<Arc<Target>>,
    pub listener: Option<crate::listeners::Listener>,
    /// Its UDP sockets, when it carries UDP.
    pub udp: Option<crate::udp::UdpListener>,
    pub policy: TrafficPolicy,
    /// Per release, kept while the edge runs (a release's figures survive
    /// its targets' removal, for switch-back comparisons).
    counters: BTreeMap<u32, Arc<Counters>>,
    next: AtomicUsize,
    /// The guarded release's (time, requests, bad) once a second, over the
    /// guard's window.
    guard_samples: VecDeque<(Instant, u64, u64)>,
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
            udp: None,
            policy: TrafficPolicy::default(),
            counters: BTreeMap::new(),
            next: AtomicUsize::new(0),
            guard_samples: VecDeque::new(),
        }
    }

    /// Sets the policy; the guard starts judging afresh, from the guarded
    /// release's counters as they are now.
    pub fn set_policy(&mut self, policy: TrafficPolicy) {
        self.policy = policy;
        self.guard_samples.clear();
        if let Some(g) = &self.policy.guard {
            let (requests, bad) = self.requests_and_bad(g.release);
            self.guard_samples
                .push_back((Instant::now(), requests, bad));
        }
    }

    /// A release's requests so far and those that got a 5xx or no answer.
    fn requests_and_bad(&self, release: u32) -> (u64, u64) {
        self.counters
            .get(&release)
            .map(|c| c.requests_and_bad())
            .unwrap_or((0, 0))
    }

    /// Samples the guarded release's counters (call about once a second).
    /// When its share of 5xx and failed requests over the window is past
    /// the limit, takes its share away (the other releases keep theirs, or
    /// get it all) and answers why.
    pub fn check_guard(&mut self, now: Instant) -> Option<String> {
        let g = self.policy.guard.clone()?;
        if self.policy.tripped.is_some() {
            return None;
        }
        let (requests, bad) = self.requests_and_bad(g.release);
        self.guard_samples.push_back((now, requests, bad));
        let window = Duration::from_millis(g.window_ms);
        while self.guard_samples.len() > 1 && now.duration_since(self.guard_samples[1].0) >= window
        {
            self.guard_samples.pop_front();
        }
        let (_, r0, b0) = *self.guard_samples.front()?;
        let (served, failed) = (requests - r0, bad - b0);
        if served < g.min_requests || failed * 100 <= u64::from(g.max_5xx_percent) * served {
            return None;
        }
        let why = format!(
            "aborted by its guard: {failed} of its last {served} requests got a 5xx or no answer ({:.1}%, limit {}% over {} s)",
            failed as f64 * 100.0 / served as f64,
            g.max_5xx_percent,
            g.window_ms / 1000
        );
        for s in self.policy.weights.iter_mut() {
            if s.release == g.release {
                s.weight = 0;
            }
        }
        if !self.policy.weights.iter().any(|s| s.weight > 0) {
            for s in self.policy.weights.iter_mut() {
                if s.release != g.release {
                    s.weight = 100;
                }
            }
        }
        if self
            .policy
            .preview
            .as_ref()
            .is_some_and(|p| p.release == g.release)
        {
            self.policy.preview = None;
        }
        self.policy.tripped = Some(why.clone());
        Some(why)
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

    /// Where a new TCP connection goes: by the shares (a fresh draw per
    /// connection), any healthy target when no release with a share can
    /// take it; `None` in maintenance or with no healthy target.
    fn pick_connection(&self, except: Option<&str>) -> Option<InFlight> {
        if self.policy.maintenance.is_some() {
            return None;
        }
        if is_even(&self.policy) {
            return self.next_target(None, except);
        }
        let chosen = release_for(new_sticky_id(), &self.policy.weights, |r| {
            self.serving(r, except)
        });
        self.next_target(chosen, except)
            .or_else(|| self.next_target(None, except))
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

/// What a connection needs to know of its route when it opens.
pub struct Listening {
    pub protocol: changeover_core::edge::Protocol,
    pub timeouts: changeover_core::edge::Timeouts,
    /// The client is one of the route's trusted proxies.
    pub trusted: bool,
}

/// Every route of the edge, by host port.
#[derive(Default)]
pub struct Table {
    /// Read by every request (a pick only touches atomics), written by
    /// control requests.
    routes: RwLock<BTreeMap<u16, Route>>,
    file: Option<StoredFile>,
    /// Handed over to a new edge: this one writes nothing any more.
    retired: std::sync::atomic::AtomicBool,
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
            routes: RwLock::new(BTreeMap::new()),
            file: dir.map(|d| StoredFile::new(d.join("routes.json"))),
            retired: Default::default(),
        }
    }

    /// The routes, to change them.
    pub fn lock(&self) -> RwLockWriteGuard<'_, BTreeMap<u16, Route>> {
        self.routes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The routes, to read them (requests picking targets share this).
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<u16, Route>> {
        self.routes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How the route on `port` serves a new connection from `peer`.
    pub fn listening(&self, port: u16, peer: std::net::IpAddr) -> Option<Listening> {
        self.read().get(&port).map(|r| Listening {
            protocol: r.spec.protocol,
            timeouts: r.spec.timeouts,
            trusted: changeover_core::edge::is_trusted(peer, &r.spec.trusted_proxies),
        })
    }

    /// Where a new TCP connection on `port` goes, counted in flight there.
    pub fn pick_connection(&self, port: u16, except: Option<&str>) -> Option<InFlight> {
        self.read().get(&port)?.pick_connection(except)
    }

    /// Where a new UDP flow on `port` goes (as a TCP connection would),
    /// counted in flight there, with how long it may stay idle.
    pub fn pick_flow(&self, port: u16, except: Option<&str>) -> Option<(InFlight, Duration)> {
        let routes = self.read();
        let route = routes.get(&port)?;
        let idle = Duration::from_millis(route.spec.timeouts.udp_idle_ms.max(100));
        Some((route.pick_connection(except)?, idle))
    }

    /// Picks where a request on `port` goes under the route's policy,
    /// skipping the target `except`, and counts it in flight there.
    pub fn pick(&self, port: u16, except: Option<&str>, hints: &Hints) -> Pick {
        match self.read().get(&port) {
            Some(route) => route.pick(except, hints),
            None => Pick::Nothing,
        }
    }

    /// Loads saved routes (the newest valid copy, see [`crate::store`]);
    /// the caller opens their listeners and starts checks. Answers what was
    /// wrong with the stored files, for the log.
    pub fn load(&self) -> Vec<String> {
        let Some(file) = &self.file else {
            return Vec::new();
        };
        let loaded = file.load(|bytes| {
            serde_json::from_slice::<Vec<SavedRoute>>(bytes).map_err(|e| e.to_string())
        });
        let mut routes = self.lock();
        for r in loaded.value {
            let mut route = Route::new(r.spec);
            route.set_policy(r.policy);
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
        loaded.notes
    }

    /// Writes the routes to the state directory (atomically; saves are
    /// serialised and each writes the table as it is then). Every change
    /// to the table is saved, so this is also where clients learn of one.
    pub fn save(&self) -> Result<(), String> {
        crate::changes::bump();
        if self.retired.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.save_now()
    }

    /// Stops (or resumes) saving: a new edge owns the files now.
    pub fn set_retired(&self, retired: bool) {
        self.retired.store(retired, Ordering::SeqCst);
    }

    /// Saves even when retired: the routes a new edge is about to load.
    pub fn save_now(&self) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.save(|| {
            let saved: Vec<SavedRoute> = self
                .read()
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
            serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())
        })
    }
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
            protocol: Default::default(),
            udp: Default::default(),
            timeouts: Default::default(),
            trusted_proxies: Vec::new(),
            hosts: Vec::new(),
            tls: None,
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
            r.set_policy(policy);
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

    /// Two releases under `weights`, release 2 guarded at 10% 5xx over
    /// `window_ms`, judged from `min_requests`.
    fn guarded(weights: &[(u32, u32)], window_ms: u64, min_requests: u64) -> Table {
        two_releases(TrafficPolicy {
            weights: shares(weights),
            guard: Some(changeover_core::edge::Guard {
                release: 2,
                max_5xx_percent: 10,
                window_ms,
                min_requests,
            }),
            ..Default::default()
        })
    }

    #[test]
    fn a_guard_takes_the_share_of_a_failing_canary_away_once_it_has_enough_requests() {
        let table = guarded(&[(1, 90), (2, 10)], 10_000, 20);
        let mut routes = table.lock();
        let route = routes.get_mut(&1).unwrap();
        let t0 = Instant::now();
        let canary = route.counters.get(&2).unwrap().clone();
        route.set_policy(route.policy.clone());
        assert_eq!(route.check_guard(t0), None, "nothing served yet");
        for _ in 0..10 {
            canary.response(500, Duration::from_millis(1));
        }
        assert_eq!(
            route.check_guard(t0 + Duration::from_secs(1)),
            None,
            "10 errors out of 10 requests: fewer than min_requests, no verdict yet"
        );
        for _ in 0..15 {
            canary.response(200, Duration::from_millis(1));
        }
        let why = route
            .check_guard(t0 + Duration::from_secs(2))
            .expect("10 of 25 is 40%, over the 10% limit");
        assert!(why.contains("10 of its last 25 requests"), "{why}");
        assert_eq!(route.policy.weights, shares(&[(1, 90), (2, 0)]));
        assert_eq!(route.policy.tripped.as_deref(), Some(why.as_str()));
        assert_eq!(
            route.check_guard(t0 + Duration::from_secs(3)),
            None,
            "trips once"
        );
    }

    #[test]
    fn a_burst_of_errors_before_the_guards_first_look_counts() {
        let table = guarded(&[(1, 80), (2, 20)], 10_000, 20);
        let mut routes = table.lock();
        let route = routes.get_mut(&1).unwrap();
        let canary = route.counters.get(&2).unwrap().clone();
        for _ in 0..40 {
            canary.response(500, Duration::from_millis(1));
        }
        assert!(
            route.check_guard(Instant::now()).is_some(),
            "judged from the counters when the guard was set"
        );
    }

    #[test]
    fn a_guard_judges_only_its_window_and_a_healthy_canary_keeps_its_share() {
        let table = guarded(&[(1, 0), (2, 100)], 5_000, 50);
        let mut routes = table.lock();
        let route = routes.get_mut(&1).unwrap();
        let canary = route.counters.get(&2).unwrap().clone();
        let t0 = Instant::now();
        // A burst of errors long ago, then healthy traffic.
        assert_eq!(route.check_guard(t0), None);
        for _ in 0..5 {
            canary.response(503, Duration::from_millis(1));
        }
        canary.failure();
        for i in 1..=20u64 {
            for _ in 0..20 {
                canary.response(200, Duration::from_millis(1));
            }
            assert_eq!(
                route.check_guard(t0 + Duration::from_secs(i)),
                None,
                "second {i}: under 50 requests no verdict; then 6 bad of 66 is under 10%; then the burst leaves the window"
            );
        }
        assert_eq!(route.policy.weights, shares(&[(1, 0), (2, 100)]));
        // Now everything fails: the window sees it and trips; the only
        // other release gets all the traffic back.
        for _ in 0..30 {
            canary.failure();
        }
        assert!(route.check_guard(t0 + Duration::from_secs(21)).is_some());
        assert_eq!(route.policy.weights, shares(&[(1, 100), (2, 0)]));
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
            ..Default::default()
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
