//! Rollouts: moving a service from one release to another, slot by slot,
//! without ever dropping capacity.
//!
//! A rollout is a reconciliation, not a script. Given the target release and
//! the containers the daemon has (read from their labels), each slot is
//! brought to "target release running, healthy and routed; every other
//! container of the slot drained and stopped". Every step is idempotent, so a
//! rollout killed at any point (SIGKILL of the CLI or the app) is finished —
//! or undone — by running the next one: the edge keeps routing to whatever
//! was healthy, and nothing is stopped before its replacement is routed.
//!
//! Order per slot (start-first): create and start the new container, wait
//! until it runs (and its Docker HEALTHCHECK passes, when it has one), add it
//! to every route of the service and wait until the edge's health check
//! passes, then drain the old container on the edge and stop it. If a slot
//! does not become healthy within `deploy_timeout`, the rollout stops and the
//! previous release is restored slot by slot the same way; the failed
//! release's containers are removed. Stopped containers of the last
//! [`KEEP_RELEASES`] releases are kept, so a rollback starts existing
//! containers and needs no pull.
//!
//! One rollout per service at a time: a lock on the edge, refreshed while the
//! rollout runs, taken by `owner` (user@host and process). A client that dies
//! stops refreshing; after [`LOCK_TTL`] the next client takes over and finds
//! the half-done rollout recorded in the service's record.
//!
//! The world is reached through two traits, [`Runtime`] (the daemon) and
//! [`EdgeControl`] (the edge); the docker crate implements both, the tests
//! below use fakes with paused time.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use ts_rs::TS;

use crate::edge::{
    rollout_lock_key, service_doc_key, EdgeErrorCode, Guard, LockHolder, Request, Response,
    RouteSpec, RouteStatus, Share, TargetSpec, TargetState, TrafficPolicy,
};
use crate::problem::{Problem, ProblemCode};
use crate::service::{
    Candidate, PendingRollout, Release, ReleaseResult, ServiceRecord, ServiceSpec, Strategy,
    UpdateOrder,
};

/// Releases (besides the current one) whose stopped containers are kept.
pub const KEEP_RELEASES: usize = 3;
/// A rollout lock expires this long after its last refresh.
pub const LOCK_TTL: Duration = Duration::from_secs(15);
const LOCK_REFRESH: Duration = Duration::from_secs(4);
/// How long `docker stop` waits before SIGKILL, after a drain.
pub const STOP_TIMEOUT_SECS: i64 = 10;

/// A container of a service, as read from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotContainer {
    pub id: String,
    pub name: String,
    pub release: u32,
    pub slot: u32,
    pub running: bool,
    /// Exit code when it is not running and has run.
    pub exit_code: Option<i64>,
    /// IP on the stack's default network, when running.
    pub ip: Option<String>,
    /// Docker HEALTHCHECK status (`starting`, `healthy`, `unhealthy`), when it has one.
    pub health: Option<String>,
    /// Output of the last Docker health check.
    pub health_output: Option<String>,
}

/// Container name of a release's slot.
pub fn container_name(spec: &ServiceSpec, release: u32, slot: u32) -> String {
    format!("{}-{}-r{release}-s{slot}", spec.stack, spec.name)
}

/// What the rollout needs from the daemon.
pub trait Runtime: Send + Sync {
    /// The image ID of `image`, pulling it when it is not on the daemon.
    fn resolve_image(&self, image: &str) -> impl Future<Output = Result<String, Problem>> + Send;
    /// Creates the stack's networks and the service's volumes when missing.
    fn prepare(&self, spec: &ServiceSpec) -> impl Future<Output = Result<(), Problem>> + Send;
    /// Every container of the service, any release, running or not.
    fn containers(
        &self,
        stack: &str,
        service: &str,
    ) -> impl Future<Output = Result<Vec<SlotContainer>, Problem>> + Send;
    /// Creates (not starts) slot `slot` of `release`.
    fn create(
        &self,
        release: &Release,
        slot: u32,
    ) -> impl Future<Output = Result<String, Problem>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), Problem>> + Send;
    fn inspect(&self, id: &str) -> impl Future<Output = Result<SlotContainer, Problem>> + Send;
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), Problem>> + Send;
    /// Removes a container, never its named volumes.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), Problem>> + Send;
    /// The last lines of a container's output.
    fn logs(&self, id: &str, lines: usize) -> impl Future<Output = String> + Send;
}

/// What the rollout needs from the edge: one request, one answer.
pub trait EdgeControl: Send + Sync {
    fn call(&self, request: Request) -> impl Future<Output = Result<Response, Problem>> + Send;
}

/// Phases a slot goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum SlotPhase {
    Creating,
    Starting,
    HealthChecking,
    Routed,
    OldDraining,
    OldStopped,
    /// The slot is done: its target release runs and is routed.
    Done,
    Failed,
    /// A container beyond the new replica count was drained and stopped.
    ScaledDown,
}

/// Timings of one finished slot, for the timeline and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SlotTimings {
    /// From the slot's start until the next slot may start: its new
    /// container routed (start-first; the old one then drains and stops
    /// while the rollout goes on) or, stop-first, the old one stopped first.
    #[ts(type = "number")]
    pub total_ms: u64,
    /// Docker create + start, until the process runs.
    #[ts(type = "number")]
    pub start_ms: u64,
    /// From running to the first passing health check.
    #[ts(type = "number")]
    pub health_ms: u64,
    /// Everything else: routing, and for stop-first draining and stopping
    /// the old container.
    #[ts(type = "number")]
    pub overhead_ms: u64,
}

/// What a rollout reports as it goes. The CLI prints these; the GUI draws
/// its timeline from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[ts(export)]
pub enum RolloutEvent {
    Planned {
        service: String,
        from: Option<u32>,
        to: u32,
        image: String,
        slots: u32,
        /// Finishing (or undoing) a rollout another client left half done.
        resumed: bool,
        rollback: bool,
        /// Blue-green or canary: the new release starts beside `from`,
        /// which keeps the traffic.
        beside: Option<Strategy>,
    },
    Note {
        message: String,
    },
    Slot {
        slot: u32,
        release: u32,
        phase: SlotPhase,
        /// Milliseconds since the rollout started.
        #[ts(type = "number")]
        at_ms: u64,
        detail: Option<String>,
        timings: Option<SlotTimings>,
    },
    /// The rollout failed and the previous release is being restored.
    Restoring {
        to: Option<u32>,
    },
    Finished {
        ok: bool,
        release: Option<u32>,
        message: String,
    },
}

pub type EventSink = Arc<dyn Fn(RolloutEvent) + Send + Sync>;

/// What to roll to.
#[derive(Debug, Clone)]
pub enum Goal {
    /// A new or changed definition (a new tag, new settings, new replicas).
    Deploy(Box<ServiceSpec>),
    /// The release before the current one (or, when a rollout was left half
    /// done, the release it started from).
    Rollback,
}

/// Why a slot failed, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SlotFailure {
    pub slot: u32,
    pub release: u32,
    pub reason: String,
    pub health_output: Option<String>,
    pub logs: String,
}

impl std::fmt::Display for SlotFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "slot {} of release {}: {}",
            self.slot, self.release, self.reason
        )?;
        if let Some(h) = &self.health_output {
            write!(f, "\nlast health check: {h}")?;
        }
        if !self.logs.trim().is_empty() {
            write!(
                f,
                "\ncontainer logs (last lines):\n{}",
                self.logs.trim_end()
            )?;
        }
        Ok(())
    }
}

/// The result of a successful rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RolloutOutcome {
    pub service: String,
    pub from: Option<u32>,
    pub release: u32,
    /// Nothing had to change.
    pub unchanged: bool,
    pub slots: Vec<SlotTimings>,
    #[ts(type = "number")]
    pub took_ms: u64,
}

/// Drives rollouts of services on one environment.
pub struct Deployer<R, E> {
    pub runtime: R,
    pub edge: E,
    /// `user@host (pid N)`: who holds the lock and made the release.
    pub owner: String,
    /// Unix milliseconds now (passed in so tests control it).
    pub now_ms: fn() -> i64,
    /// Whether a lock owner is known to be gone (a process of this machine
    /// that no longer exists), so its lock can be taken over at once instead
    /// of after [`LOCK_TTL`].
    pub owner_gone: fn(&str) -> bool,
    pub events: EventSink,
}

fn edge_problem(code: EdgeErrorCode, message: String) -> Problem {
    let code = match code {
        EdgeErrorCode::PortInUse => ProblemCode::PortInUse,
        EdgeErrorCode::Conflict => ProblemCode::RolloutInProgress,
        _ => ProblemCode::EdgeError,
    };
    Problem::new(code, message)
}

/// Turns an error answer into a problem.
pub fn expect_ok(response: Response) -> Result<Response, Problem> {
    match response {
        Response::Error { code, message } => Err(edge_problem(code, message)),
        other => Ok(other),
    }
}

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    fn emit(&self, e: RolloutEvent) {
        (self.events)(e);
    }

    fn note(&self, message: impl Into<String>) {
        self.emit(RolloutEvent::Note {
            message: message.into(),
        });
    }

    async fn edge_call(&self, request: Request) -> Result<Response, Problem> {
        expect_ok(self.edge.call(request).await?)
    }

    /// The stored record of a service and its revision (0: none yet).
    pub async fn load(
        &self,
        stack: &str,
        service: &str,
    ) -> Result<(Option<ServiceRecord>, u64), Problem> {
        load_record(&self.edge, stack, service).await
    }

    /// Refuses a service whose host ports the edge cannot listen on.
    pub async fn check_ports(&self, spec: &ServiceSpec) -> Result<(), Problem> {
        for p in &spec.ports {
            self.edge_call(Request::PortCheck {
                port: p.host,
                service: spec.qualified(),
            })
            .await
            .map_err(|e| {
                Problem::new(
                    e.code,
                    format!(
                        "{}: cannot publish port {}: {}",
                        spec.qualified(),
                        p.host,
                        e.message
                    ),
                )
            })?;
        }
        Ok(())
    }

    async fn save(&self, record: &ServiceRecord, revision: &mut u64) -> Result<(), Problem> {
        let value = serde_json::to_value(record)
            .map_err(|e| Problem::new(ProblemCode::EdgeError, e.to_string()))?;
        match self
            .edge_call(Request::DocPut {
                key: service_doc_key(&record.spec.stack, &record.spec.name),
                value,
                expect: Some(*revision),
            })
            .await?
        {
            Response::Doc { revision: r, .. } => {
                *revision = r;
                Ok(())
            }
            other => Err(Problem::new(
                ProblemCode::EdgeError,
                format!("unexpected answer from the edge: {other:?}"),
            )),
        }
    }

    async fn lock(&self, key: &str) -> Result<(), Problem> {
        let mut take_over = None;
        loop {
            match self
                .edge
                .call(Request::LockAcquire {
                    key: key.to_string(),
                    owner: self.owner.clone(),
                    ttl_ms: LOCK_TTL.as_millis() as u64,
                    take_over: take_over.clone(),
                })
                .await?
            {
                Response::Locked { .. } => return Ok(()),
                Response::LockHeld { holder }
                    if take_over.is_none() && (self.owner_gone)(&holder.owner) =>
                {
                    self.note(format!(
                        "taking over the rollout lock of {}, which no longer runs",
                        holder.owner
                    ));
                    take_over = Some(holder.owner);
                }
                Response::LockHeld { holder } => return Err(busy(key, &holder, (self.now_ms)())),
                other => return expect_ok(other).map(|_| ()),
            }
        }
    }

    /// Runs one rollout of `stack/service` toward `goal`, holding the
    /// service's lock while it runs.
    pub async fn run(
        &self,
        stack: &str,
        service: &str,
        goal: Goal,
    ) -> Result<RolloutOutcome, Problem> {
        // A standby whose time is up, or a canary its guard stopped, is
        // settled before anything else.
        if let Err(e) = self.settle(stack, service).await {
            self.note(format!(
                "could not settle the release beside the current one: {e}"
            ));
        }
        let result = self
            .locked(stack, service, self.run_locked(stack, service, goal))
            .await;
        if let Err(p) = &result {
            self.emit(RolloutEvent::Finished {
                ok: false,
                release: None,
                message: p.message.clone(),
            });
        }
        result
    }

    /// Runs `work` holding the service's rollout lock, refreshing it while
    /// `work` runs, and releases it after.
    pub(crate) async fn locked<T>(
        &self,
        stack: &str,
        service: &str,
        work: impl Future<Output = Result<T, Problem>>,
    ) -> Result<T, Problem> {
        let key = rollout_lock_key(stack, service);
        self.lock(&key).await?;
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tokio::time::sleep(LOCK_REFRESH) => {
                    // Keep the lock while working; losing it means another
                    // client took over after we stalled past the TTL.
                    if let Err(e) = self.lock(&key).await {
                        self.note(format!("could not refresh the rollout lock: {e}"));
                    }
                }
            }
        };
        let _ = self
            .edge
            .call(Request::LockRelease {
                key,
                owner: self.owner.clone(),
            })
            .await;
        result
    }

    async fn run_locked(
        &self,
        stack: &str,
        service: &str,
        goal: Goal,
    ) -> Result<RolloutOutcome, Problem> {
        let started = Instant::now();
        let (record, mut revision) = self.load(stack, service).await?;
        let interrupted = record.as_ref().and_then(|r| r.rollout.clone());
        if let Some(p) = &interrupted {
            self.note(format!(
                "a rollout of {stack}/{service} to release {} (started by {}) was left unfinished; {}",
                p.to,
                p.owner,
                match goal {
                    Goal::Rollback => "rolling it back",
                    Goal::Deploy(_) => "taking it over",
                }
            ));
        }
        let from = record.as_ref().and_then(|r| r.current);
        let rollback = matches!(goal, Goal::Rollback);
        let (mut record, target) = match goal {
            Goal::Deploy(spec) => {
                let spec = *spec;
                // Everything that can be refused is checked before anything changes.
                self.note(format!("resolving image {}", spec.image));
                let image_id = self.runtime.resolve_image(&spec.image).await?;
                self.check_ports(&spec).await?;
                let mut record = record.unwrap_or_else(|| ServiceRecord {
                    spec: spec.clone(),
                    releases: Vec::new(),
                    current: None,
                    rollout: None,
                    candidate: None,
                });
                let same = |r: &Release| r.spec == spec && r.image_id == image_id;
                let reuse =
                    interrupted
                        .as_ref()
                        .and_then(|p| record.release(p.to))
                        .filter(|r| same(r))
                        .or_else(|| {
                            record
                                .current
                                .and_then(|c| record.release(c))
                                .filter(|r| same(r))
                        })
                        // An earlier release with this exact definition: go back to
                        // it (its containers may still be kept) rather than renumber.
                        .or_else(|| {
                            record.releases.iter().rev().find(|r| {
                                same(r) && !matches!(r.result, ReleaseResult::Failed { .. })
                            })
                        })
                        .map(|r| r.number);
                let number = match reuse {
                    Some(n) => n,
                    None => {
                        let n = record.next_number();
                        record.releases.push(Release {
                            number: n,
                            image: spec.image.clone(),
                            image_id,
                            spec: spec.clone(),
                            created_ms: (self.now_ms)(),
                            created_by: self.owner.clone(),
                            result: ReleaseResult::InProgress,
                        });
                        n
                    }
                };
                if let Some(c) = record.candidate.as_ref().filter(|c| c.release != number) {
                    return Err(candidate_live(stack, service, c, record.current));
                }
                record.spec = spec;
                (record, number)
            }
            Goal::Rollback => {
                let Some(record) = record else {
                    return Err(Problem::new(
                        ProblemCode::UnknownService,
                        format!("{stack}/{service} has never been deployed on this environment"),
                    ));
                };
                if let Some(c) = &record.candidate {
                    return Err(candidate_live(stack, service, c, record.current));
                }
                let target = match &interrupted {
                    Some(p) => p.from,
                    None => record.previous().map(|r| r.number),
                };
                let Some(target) = target else {
                    return Err(Problem::new(
                        ProblemCode::NoPreviousRelease,
                        format!(
                            "{stack}/{service} has no earlier release to roll back to (current: {})",
                            from.map(|f| format!("release {f}")).unwrap_or_else(|| "none".into())
                        ),
                    ));
                };
                (record, target)
            }
        };
        let Some(release) = record.release(target).cloned() else {
            return Err(Problem::new(
                ProblemCode::EdgeError,
                format!("release {target} of {stack}/{service} is missing from its record"),
            ));
        };
        // Roll back from the half-done release, not from `current`, so its
        // containers are the ones removed.
        let from = match (&interrupted, rollback) {
            (Some(p), true) => Some(p.to),
            _ => from,
        };
        record.rollout = Some(PendingRollout {
            from,
            to: target,
            owner: self.owner.clone(),
            started_ms: (self.now_ms)(),
        });
        if let Some(r) = record.release_mut(target) {
            r.result = ReleaseResult::InProgress;
        }
        self.save(&record, &mut revision).await?;
        // Blue-green and canary start the new release beside the current
        // one; traffic stays on the current release until it is healthy.
        let beside = match from {
            Some(f) if f != target && !rollback => {
                release.spec.strategy.side_by_side() && !release.spec.ports.is_empty()
            }
            _ => false,
        };
        self.emit(RolloutEvent::Planned {
            service: release.spec.qualified(),
            from,
            to: target,
            image: release.image.clone(),
            slots: release.spec.replicas,
            resumed: interrupted.is_some(),
            rollback,
            beside: beside.then_some(release.spec.strategy),
        });

        self.runtime.prepare(&release.spec).await?;
        self.set_routes(&release.spec).await?;
        // The edge may have been re-created or have lost targets: make sure
        // whatever runs of the current release is routed before replacing it.
        self.restore_routes(&release.spec).await?;

        // Re-deploying the candidate itself repairs it and leaves the
        // traffic as the user set it.
        let already = record
            .candidate
            .as_ref()
            .is_some_and(|c| c.release == target);
        if beside && !already {
            let pinned = shares(&[(from, 100), (Some(target), 0)]);
            self.set_policy(&release.spec, |p| {
                p.weights = pinned.clone();
                p.guard = None;
                p.tripped = None;
            })
            .await?;
        } else if !beside {
            // Rolling: every healthy target alike, whatever its release.
            self.set_policy(&release.spec, even).await?;
        }

        let discard: BTreeSet<u32> = match (&interrupted, rollback) {
            (Some(p), true) => [p.to].into(),
            _ => BTreeSet::new(),
        };
        if beside {
            return self
                .finish_beside(record, revision, &release, from, already, started)
                .await;
        }
        match self.converge(&release, &discard, started, false).await {
            Ok(slots) => {
                for r in record.releases.iter_mut() {
                    if r.number == target {
                        r.result = ReleaseResult::Succeeded;
                    } else if r.result == ReleaseResult::Succeeded
                        || r.result == ReleaseResult::InProgress
                    {
                        r.result = if discard.contains(&r.number) {
                            ReleaseResult::Failed {
                                reason: "rolled back after its rollout was interrupted".into(),
                            }
                        } else {
                            ReleaseResult::Superseded
                        };
                    }
                }
                let unchanged = from == Some(target) && slots.iter().all(|s| s.total_ms == 0);
                record.current = Some(target);
                record.spec = release.spec.clone();
                record.rollout = None;
                self.save(&record, &mut revision).await?;
                self.cleanup(&record).await;
                let took_ms = started.elapsed().as_millis() as u64;
                let message = if unchanged {
                    format!(
                        "{} is up to date on release {target}",
                        release.spec.qualified()
                    )
                } else {
                    format!(
                        "{} is on release {target} ({}), {} slot(s) healthy, in {:.1} s",
                        release.spec.qualified(),
                        release.image,
                        release.spec.replicas,
                        took_ms as f64 / 1000.0
                    )
                };
                self.emit(RolloutEvent::Finished {
                    ok: true,
                    release: Some(target),
                    message,
                });
                Ok(RolloutOutcome {
                    service: release.spec.qualified(),
                    from,
                    release: target,
                    unchanged,
                    slots,
                    took_ms,
                })
            }
            Err(failure) => {
                let reason = failure.to_string();
                self.emit(RolloutEvent::Restoring { to: from });
                let restore_from = from.filter(|f| *f != target);
                let restored = match restore_from.and_then(|f| record.release(f).cloned()) {
                    Some(old) => {
                        self.set_routes(&old.spec).await?;
                        self.converge(&old, &[target].into(), started, false)
                            .await
                            .map(|_| ())
                    }
                    None => {
                        self.remove_release(&release).await;
                        Ok(())
                    }
                };
                if let Some(r) = record.release_mut(target) {
                    r.result = ReleaseResult::Failed {
                        reason: format!("slot {}: {}", failure.slot, failure.reason),
                    };
                }
                record.rollout = None;
                if restore_from.is_none() {
                    record.current = None;
                }
                if let Some(old) = restore_from {
                    record.current = Some(old);
                    if let Some(r) = record.release_mut(old) {
                        r.result = ReleaseResult::Succeeded;
                        // The definition in force is the restored one.
                        record.spec = r.spec.clone();
                    }
                }
                self.save(&record, &mut revision).await?;
                let message = match (&restored, restore_from) {
                    (Ok(()), Some(old)) => format!(
                        "rollout of {} to release {target} failed; every slot is back on release {old}.\n{reason}",
                        release.spec.qualified()
                    ),
                    (Ok(()), None) => format!(
                        "first rollout of {} failed; its containers were removed.\n{reason}",
                        release.spec.qualified()
                    ),
                    (Err(again), _) => format!(
                        "rollout of {} to release {target} failed, and restoring the previous release failed too ({again}).\n{reason}",
                        release.spec.qualified()
                    ),
                };
                Err(Problem::new(ProblemCode::RolloutFailed, message))
            }
        }
    }

    /// Blue-green and canary: brings every replica of the new release up
    /// beside `from` (which keeps all traffic meanwhile), then leaves it as
    /// the service's candidate: blue-green with no traffic until the user
    /// switches, canary with its first share of new clients.
    async fn finish_beside(
        &self,
        mut record: ServiceRecord,
        mut revision: u64,
        release: &Release,
        from: Option<u32>,
        already: bool,
        started: Instant,
    ) -> Result<RolloutOutcome, Problem> {
        let spec = &release.spec;
        let target = release.number;
        let q = spec.qualified();
        let old = from
            .map(|f| format!("release {f}"))
            .unwrap_or_else(|| "the current release".into());
        match self
            .converge(release, &BTreeSet::new(), started, true)
            .await
        {
            Ok(slots) => {
                if !already {
                    record.candidate = Some(Candidate {
                        release: target,
                        strategy: spec.strategy,
                        ready_ms: (self.now_ms)(),
                        switched_ms: None,
                    });
                }
                record.rollout = None;
                if let Some(r) = record.release_mut(target) {
                    r.result = ReleaseResult::Candidate;
                }
                self.save(&record, &mut revision).await?;
                let message = if already {
                    format!(
                        "{q}: release {target} already runs beside {old}; traffic left as it is"
                    )
                } else if spec.strategy == Strategy::Canary {
                    let p = spec.canary_percent.min(100);
                    let weights = shares(&[(from, 100 - p), (Some(target), p)]);
                    let guard = spec.canary_guard.as_ref().map(|g| Guard {
                        release: target,
                        max_5xx_percent: g.max_5xx_percent,
                        window_ms: g.window_ms,
                        min_requests: g.min_requests,
                    });
                    self.set_policy(spec, |policy| {
                        policy.weights = weights.clone();
                        policy.guard = guard.clone();
                        policy.tripped = None;
                    })
                    .await?;
                    format!(
                        "{q}: release {target} ({}) runs beside {old} and gets {p}% of new clients; \
                         move the share with `changeover traffic split {q} --percent N`, \
                         then `changeover traffic promote {q}` (or `abort`)",
                        release.image
                    )
                } else {
                    format!(
                        "{q}: release {target} ({}) runs beside {old}, {} slot(s) healthy; \
                         traffic stays on {old} until `changeover traffic switch {q} --to {target}`",
                        release.image, spec.replicas
                    )
                };
                self.emit(RolloutEvent::Finished {
                    ok: true,
                    release: Some(target),
                    message,
                });
                Ok(RolloutOutcome {
                    service: q,
                    from,
                    release: target,
                    unchanged: already && slots.iter().all(|s| s.total_ms == 0),
                    slots,
                    took_ms: started.elapsed().as_millis() as u64,
                })
            }
            Err(failure) => {
                let reason = failure.to_string();
                self.remove_release(release).await;
                if let Err(e) = self.set_policy(spec, even).await {
                    self.note(format!("could not reset the traffic shares: {e}"));
                }
                if let Some(r) = record.release_mut(target) {
                    r.result = ReleaseResult::Failed {
                        reason: format!("slot {}: {}", failure.slot, failure.reason),
                    };
                }
                record.rollout = None;
                record.candidate = None;
                self.save(&record, &mut revision).await?;
                Err(Problem::new(
                    ProblemCode::RolloutFailed,
                    format!(
                        "release {target} of {q} did not become healthy beside {old}; its \
                         containers were removed and traffic never left {old}.\n{reason}"
                    ),
                ))
            }
        }
    }

    /// The service's routes on the edge.
    pub(crate) async fn routes(&self, spec: &ServiceSpec) -> Result<Vec<RouteStatus>, Problem> {
        match self
            .edge_call(Request::Routes {
                service: Some(spec.qualified()),
            })
            .await?
        {
            Response::Routes { routes } => Ok(routes),
            _ => Ok(Vec::new()),
        }
    }

    /// Changes the traffic policy of every route of the service with
    /// `change` (where that changes anything).
    pub(crate) async fn set_policy(
        &self,
        spec: &ServiceSpec,
        change: impl Fn(&mut TrafficPolicy),
    ) -> Result<(), Problem> {
        if spec.ports.is_empty() {
            return Ok(());
        }
        let routes = self.routes(spec).await?;
        self.apply(&routes, change).await
    }

    /// Changes the policy of each of `routes` with `change`, where that
    /// changes anything (one `traffic-set` per route).
    pub(crate) async fn apply(
        &self,
        routes: &[RouteStatus],
        change: impl Fn(&mut TrafficPolicy),
    ) -> Result<(), Problem> {
        for r in routes {
            let mut policy = r.policy.clone();
            change(&mut policy);
            if policy != r.policy {
                self.edge_call(Request::TrafficSet {
                    port: r.spec.port,
                    policy,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Creates or updates one route per published port.
    async fn set_routes(&self, spec: &ServiceSpec) -> Result<(), Problem> {
        for p in &spec.ports {
            self.edge_call(Request::RouteSet {
                route: RouteSpec {
                    port: p.host,
                    service: spec.qualified(),
                    health: spec.health.clone(),
                    drain_timeout_ms: spec.drain_timeout_ms,
                    protocol: spec.protocol,
                },
            })
            .await?;
        }
        Ok(())
    }

    async fn restore_routes(&self, spec: &ServiceSpec) -> Result<(), Problem> {
        if spec.ports.is_empty() {
            return Ok(());
        }
        let routed = self.routed_ids(spec).await?;
        for c in self.runtime.containers(&spec.stack, &spec.name).await? {
            if !c.running || routed.contains(&c.name) {
                continue;
            }
            let Some(ip) = &c.ip else { continue };
            for p in &spec.ports {
                self.edge_call(Request::TargetAdd {
                    port: p.host,
                    target: TargetSpec {
                        id: c.name.clone(),
                        addr: format!("{ip}:{}", p.container),
                        release: c.release,
                    },
                    wait_healthy_ms: Some(spec.health.interval_ms.max(1000) * 2),
                })
                .await?;
            }
            self.note(format!("routed {} again (release {})", c.name, c.release));
        }
        Ok(())
    }

    async fn routed_ids(&self, spec: &ServiceSpec) -> Result<BTreeSet<String>, Problem> {
        match self
            .edge_call(Request::Routes {
                service: Some(spec.qualified()),
            })
            .await?
        {
            Response::Routes { routes } => Ok(routes
                .into_iter()
                .flat_map(|r| r.targets)
                .filter(|t| t.state != TargetState::Draining)
                .map(|t| t.spec.id)
                .collect()),
            _ => Ok(BTreeSet::new()),
        }
    }

    /// Brings every slot to `release`; containers of `discard` releases are
    /// removed instead of stopped. `beside`: other releases' containers are
    /// left running (blue-green, canary).
    async fn converge(
        &self,
        release: &Release,
        discard: &BTreeSet<u32>,
        started: Instant,
        beside: bool,
    ) -> Result<Vec<SlotTimings>, SlotFailure> {
        let spec = &release.spec;
        let unreadable = |p: Problem| SlotFailure {
            slot: 0,
            release: release.number,
            reason: p.message,
            health_output: None,
            logs: String::new(),
        };
        // What runs and what is routed, read once: which slots need work is
        // decided from the state the rollout started from.
        let observed = self
            .runtime
            .containers(&spec.stack, &spec.name)
            .await
            .map_err(unreadable)?;
        let routed = self.routed_ids(spec).await.map_err(unreadable)?;
        let slots: Vec<u32> = (0..spec.replicas).collect();
        let mut timings = Vec::new();
        // Start-first: once a slot's new container is routed, its old one
        // only drains and stops. That runs while the next group starts (the
        // old container gets no new request any more, so capacity holds),
        // and every retirement has finished before this returns, failed or
        // not: a restore never races a stop.
        let mut retiring = Vec::new();
        let mut failure = None;
        for (i, group) in slots
            .chunks(spec.update.parallelism.max(1) as usize)
            .enumerate()
        {
            let step = async {
                if i > 0 && spec.update.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(spec.update.delay_ms)).await;
                }
                futures_util::future::join_all(group.iter().map(|slot| {
                    self.converge_slot(
                        release,
                        *slot,
                        (&observed, &routed),
                        discard,
                        started,
                        beside,
                    )
                }))
                .await
            };
            let previous = futures_util::future::join_all(std::mem::take(&mut retiring));
            let (results, _) = futures_util::future::join(step, previous).await;
            for r in results {
                match r {
                    Ok((t, olds)) => {
                        timings.push(t.clone());
                        retiring.push(Box::pin(self.finish_slot(spec, olds, discard, started, t)));
                    }
                    Err(f) => failure = failure.or(Some(f)),
                }
            }
            if failure.is_some() {
                break;
            }
        }
        futures_util::future::join_all(retiring).await;
        if let Some(f) = failure {
            return Err(f);
        }
        // Slots beyond the replica count: drain and stop whatever runs there
        // (beside another release, that release keeps its slots).
        for c in observed
            .iter()
            .filter(|c| c.slot >= spec.replicas && (!beside || c.release == release.number))
        {
            if c.running || discard.contains(&c.release) {
                self.retire(spec, c, discard).await;
                self.slot_event(
                    c.slot,
                    c.release,
                    SlotPhase::ScaledDown,
                    started,
                    None,
                    None,
                );
            }
        }
        Ok(timings)
    }

    fn slot_event(
        &self,
        slot: u32,
        release: u32,
        phase: SlotPhase,
        started: Instant,
        detail: Option<String>,
        timings: Option<SlotTimings>,
    ) {
        self.emit(RolloutEvent::Slot {
            slot,
            release,
            phase,
            at_ms: started.elapsed().as_millis() as u64,
            detail,
            timings,
        });
    }

    async fn converge_slot(
        &self,
        release: &Release,
        slot: u32,
        (observed, routed): (&[SlotContainer], &BTreeSet<String>),
        discard: &BTreeSet<u32>,
        started: Instant,
        beside: bool,
    ) -> Result<(SlotTimings, SlotRetirement), SlotFailure> {
        let spec = &release.spec;
        let n = release.number;
        let slot_started = Instant::now();
        let deadline = slot_started + Duration::from_millis(spec.deploy_timeout_ms);
        let fail = |reason: String, health_output: Option<String>, logs: String| SlotFailure {
            slot,
            release: n,
            reason,
            health_output,
            logs,
        };
        let existing = observed
            .iter()
            .find(|c| c.release == n && c.slot == slot)
            .cloned();
        let others: Vec<&SlotContainer> = observed
            .iter()
            .filter(|c| {
                c.slot == slot && c.release != n && (c.running || discard.contains(&c.release))
            })
            .collect();
        if let Some(c) = &existing {
            let up_to_date = c.running
                && (beside || others.is_empty())
                && (spec.ports.is_empty() || routed.contains(&c.name));
            if up_to_date {
                return Ok((
                    SlotTimings {
                        total_ms: 0,
                        start_ms: 0,
                        health_ms: 0,
                        overhead_ms: 0,
                    },
                    SlotRetirement {
                        slot,
                        release: n,
                        olds: Vec::new(),
                        detail: Some("already up to date".into()),
                    },
                ));
            }
        }
        // Stop-first: retire the old container before starting the new one.
        if spec.update.order == UpdateOrder::StopFirst && !beside {
            self.retire_slot(spec, slot, &others, discard, started)
                .await;
        }
        let id = match &existing {
            Some(c) => c.id.clone(),
            None => {
                self.slot_event(slot, n, SlotPhase::Creating, started, None, None);
                self.runtime.create(release, slot).await.map_err(|p| {
                    fail(
                        format!("cannot create the container: {}", p.message),
                        None,
                        String::new(),
                    )
                })?
            }
        };
        let name = container_name(spec, n, slot);
        let mut current = match &existing {
            Some(c) => c.clone(),
            None => self
                .runtime
                .inspect(&id)
                .await
                .map_err(|p| fail(p.message, None, String::new()))?,
        };
        if !current.running {
            self.slot_event(slot, n, SlotPhase::Starting, started, None, None);
            self.runtime.start(&id).await.map_err(|p| {
                fail(
                    format!("cannot start the container: {}", p.message),
                    None,
                    String::new(),
                )
            })?;
        }
        // Wait until it runs, and passes its Docker HEALTHCHECK if it has one.
        let mut running_at = None;
        loop {
            current = self
                .runtime
                .inspect(&id)
                .await
                .map_err(|p| fail(p.message, None, String::new()))?;
            if !current.running {
                let logs = self.runtime.logs(&id, 20).await;
                return Err(fail(
                    format!(
                        "the container exited right after starting (exit code {})",
                        current
                            .exit_code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "unknown".into())
                    ),
                    current.health_output.clone(),
                    logs,
                ));
            }
            if running_at.is_none() {
                running_at = Some(Instant::now());
                self.slot_event(slot, n, SlotPhase::HealthChecking, started, None, None);
            }
            match current.health.as_deref() {
                None | Some("healthy") => break,
                Some("unhealthy") => {
                    let logs = self.runtime.logs(&id, 20).await;
                    return Err(fail(
                        "its Docker health check reports unhealthy".into(),
                        current.health_output.clone(),
                        logs,
                    ));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let logs = self.runtime.logs(&id, 20).await;
                return Err(fail(
                    format!(
                        "its Docker health check did not pass within {} s",
                        spec.deploy_timeout_ms / 1000
                    ),
                    current.health_output.clone(),
                    logs,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let running_at = running_at.unwrap_or_else(Instant::now);
        let start_ms = (running_at - slot_started).as_millis() as u64;
        // Route it: the edge checks it and only then sends it traffic.
        let mut health_ms = 0;
        if !spec.ports.is_empty() {
            let Some(ip) = current.ip.clone() else {
                return Err(fail(
                    "the container has no IP address on the stack's network".into(),
                    None,
                    String::new(),
                ));
            };
            for p in &spec.ports {
                let wait = deadline.saturating_duration_since(Instant::now());
                let answer = self
                    .edge_call(Request::TargetAdd {
                        port: p.host,
                        target: TargetSpec {
                            id: name.clone(),
                            addr: format!("{ip}:{}", p.container),
                            release: n,
                        },
                        wait_healthy_ms: Some(wait.as_millis() as u64),
                    })
                    .await
                    .map_err(|e| fail(e.message, None, String::new()))?;
                let Response::Target { target } = answer else {
                    return Err(fail(
                        "unexpected answer from the edge".into(),
                        None,
                        String::new(),
                    ));
                };
                if target.state != TargetState::Healthy {
                    let logs = self.runtime.logs(&id, 20).await;
                    let _ = self
                        .edge
                        .call(Request::TargetRemove {
                            port: p.host,
                            id: name.clone(),
                        })
                        .await;
                    let now = self.runtime.inspect(&id).await.ok();
                    let running = now.as_ref().is_some_and(|c| c.running);
                    let reason = if running {
                        format!(
                            "it did not pass the edge's health check ({}) within {} s",
                            spec.health
                                .path
                                .as_ref()
                                .map(|p| format!("GET {p}"))
                                .unwrap_or_else(|| "TCP connect".into()),
                            spec.deploy_timeout_ms / 1000
                        )
                    } else {
                        format!(
                            "the container exited while being health-checked (exit code {})",
                            now.and_then(|c| c.exit_code)
                                .map(|c| c.to_string())
                                .unwrap_or_else(|| "unknown".into())
                        )
                    };
                    return Err(fail(reason, target.last_check, logs));
                }
                health_ms = health_ms.max(target.healthy_after_ms.unwrap_or(0));
            }
            self.slot_event(slot, n, SlotPhase::Routed, started, None, None);
        }
        // Start-first: the old container of this slot goes next, while the
        // rollout moves on (see `converge`).
        let total_ms = slot_started.elapsed().as_millis() as u64;
        let timings = SlotTimings {
            total_ms,
            start_ms,
            health_ms,
            overhead_ms: total_ms.saturating_sub(start_ms + health_ms),
        };
        let olds = if spec.update.order == UpdateOrder::StartFirst && !beside {
            others.into_iter().cloned().collect()
        } else {
            Vec::new()
        };
        Ok((
            timings,
            SlotRetirement {
                slot,
                release: n,
                olds,
                detail: None,
            },
        ))
    }

    /// Retires what a converged slot replaced, then marks the slot done.
    async fn finish_slot(
        &self,
        spec: &ServiceSpec,
        retirement: SlotRetirement,
        discard: &BTreeSet<u32>,
        started: Instant,
        timings: SlotTimings,
    ) {
        let olds: Vec<&SlotContainer> = retirement.olds.iter().collect();
        self.retire_slot(spec, retirement.slot, &olds, discard, started)
            .await;
        // A slot that was already up to date did no work worth timing.
        let timings = retirement.detail.is_none().then_some(timings);
        self.slot_event(
            retirement.slot,
            retirement.release,
            SlotPhase::Done,
            started,
            retirement.detail,
            timings,
        );
    }

    /// Retires the other containers of a slot, saying so on the timeline.
    async fn retire_slot(
        &self,
        spec: &ServiceSpec,
        slot: u32,
        others: &[&SlotContainer],
        discard: &BTreeSet<u32>,
        started: Instant,
    ) {
        for old in others {
            self.slot_event(
                slot,
                old.release,
                SlotPhase::OldDraining,
                started,
                None,
                None,
            );
            self.retire(spec, old, discard).await;
            self.slot_event(
                slot,
                old.release,
                SlotPhase::OldStopped,
                started,
                None,
                None,
            );
        }
    }

    /// Drains a container on every route, then stops it (or removes it when
    /// its release is being discarded).
    async fn retire(&self, spec: &ServiceSpec, c: &SlotContainer, discard: &BTreeSet<u32>) {
        for p in &spec.ports {
            let _ = self
                .edge
                .call(Request::TargetDrain {
                    port: p.host,
                    id: c.name.clone(),
                })
                .await;
        }
        let result = if discard.contains(&c.release) {
            self.runtime.remove(&c.id).await
        } else if c.running {
            self.runtime.stop(&c.id).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            self.note(format!("could not stop {}: {e}", c.name));
        }
    }

    /// Removes every container of a release (a failed first deploy).
    async fn remove_release(&self, release: &Release) {
        let spec = &release.spec;
        if let Ok(all) = self.runtime.containers(&spec.stack, &spec.name).await {
            for c in all.iter().filter(|c| c.release == release.number) {
                for p in &spec.ports {
                    let _ = self
                        .edge
                        .call(Request::TargetRemove {
                            port: p.host,
                            id: c.name.clone(),
                        })
                        .await;
                }
                let _ = self.runtime.remove(&c.id).await;
            }
        }
    }

    /// Removes stopped containers of releases no longer kept, and routes of
    /// ports the service no longer publishes.
    async fn cleanup(&self, record: &ServiceRecord) {
        let keep: BTreeSet<u32> = record.kept_releases(KEEP_RELEASES).into_iter().collect();
        let spec = &record.spec;
        if let Ok(all) = self.runtime.containers(&spec.stack, &spec.name).await {
            for c in all
                .iter()
                .filter(|c| !c.running && !keep.contains(&c.release))
            {
                if self.runtime.remove(&c.id).await.is_ok() {
                    self.note(format!(
                        "removed {} (release {} is no longer kept)",
                        c.name, c.release
                    ));
                }
            }
        }
        if let Ok(Response::Routes { routes }) = self
            .edge_call(Request::Routes {
                service: Some(spec.qualified()),
            })
            .await
        {
            for r in routes {
                if !spec.ports.iter().any(|p| p.host == r.spec.port) {
                    let _ = self
                        .edge_call(Request::RouteRemove { port: r.spec.port })
                        .await;
                    self.note(format!("closed port {} (no longer published)", r.spec.port));
                }
            }
        }
    }
}

/// Every healthy target alike, whatever its release: no shares, no guard,
/// no preview (maintenance stays as it is).
pub(crate) fn even(p: &mut TrafficPolicy) {
    p.weights.clear();
    p.guard = None;
    p.tripped = None;
    p.preview = None;
}

/// `[(release, weight)]` as shares, leaving out absent releases.
pub(crate) fn shares(pairs: &[(Option<u32>, u32)]) -> Vec<Share> {
    pairs
        .iter()
        .filter_map(|(r, weight)| {
            r.map(|release| Share {
                release,
                weight: *weight,
            })
        })
        .collect()
}

/// Why nothing else deploys while a candidate runs.
fn candidate_live(stack: &str, service: &str, c: &Candidate, current: Option<u32>) -> Problem {
    let q = format!("{stack}/{service}");
    Problem::new(
        ProblemCode::CandidateLive,
        format!(
            "{q}: release {} runs beside release {} ({}); promote it (`changeover traffic \
             promote {q}`) or abort it (`changeover traffic abort {q}`) first",
            c.release,
            current.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            c.strategy.as_str()
        ),
    )
}

/// What is left of a converged slot: the containers it replaced, to drain
/// and stop before the slot is done.
struct SlotRetirement {
    slot: u32,
    release: u32,
    olds: Vec<SlotContainer>,
    detail: Option<String>,
}

/// The stored record of `stack/service` on an edge and its revision (0: none
/// yet).
pub async fn load_record<E: EdgeControl>(
    edge: &E,
    stack: &str,
    service: &str,
) -> Result<(Option<ServiceRecord>, u64), Problem> {
    match expect_ok(
        edge.call(Request::DocGet {
            key: service_doc_key(stack, service),
        })
        .await?,
    )? {
        Response::Doc {
            value: Some(v),
            revision,
        } => serde_json::from_value(v)
            .map(|r| (Some(r), revision))
            .map_err(|e| {
                Problem::new(
                    ProblemCode::EdgeError,
                    format!("the stored record of {stack}/{service} is unreadable: {e}"),
                )
            }),
        Response::Doc { value: None, .. } => Ok((None, 0)),
        other => Err(Problem::new(
            ProblemCode::EdgeError,
            format!("unexpected answer from the edge: {other:?}"),
        )),
    }
}

fn busy(key: &str, holder: &LockHolder, now_ms: i64) -> Problem {
    let service = key.trim_start_matches("rollout/");
    Problem::new(
        ProblemCode::RolloutInProgress,
        format!(
            "a rollout of {service} is already in progress (started by {}, {} s ago); wait for it to finish, or for {} s after that client stops",
            holder.owner,
            ((now_ms - holder.since_ms) / 1000).max(0),
            (holder.expires_in_ms / 1000).max(1)
        ),
    )
}

mod traffic;
pub use traffic::{live_releases, resolve_release, Settled};

#[cfg(test)]
mod tests;
