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
//!
//! # Layout
//! - [`plan`]: what one rollout will do, decided from the stored record,
//!   the goal and the resolved image before anything changes (pure).
//! - `ports`: the two traits and what they return.
//! - `events`: what a rollout reports as it goes, and its outcome.
//! - `lock`: one rollout per service at a time, across clients.
//! - `record`: the service's record on the edge.
//! - `edge_ops`: routes, targets and traffic policies on the edge.
//! - `converge`: bringing every slot to a release, start-first.
//! - `traffic`: switch, split, promote, abort, preview, maintenance.
//! - `remove`: a service taken away (routes, containers, record; never
//!   its volumes), under its rollout lock.

use std::collections::BTreeSet;

use tokio::time::Instant;

use crate::edge::Guard;
use crate::problem::{Problem, ProblemCode};
use crate::service::{Candidate, Release, ReleaseResult, ServiceRecord, ServiceSpec, Strategy};

mod converge;
mod edge_ops;
mod events;
mod lock;
pub mod plan;
mod ports;
mod record;
mod remove;
mod traffic;

pub use edge_ops::{expect_ok, routes_of};
pub use events::{EventSink, RolloutEvent, RolloutOutcome, SlotFailure, SlotPhase, SlotTimings};
pub use lock::LOCK_TTL;
pub use plan::{plan, Plan, Wanted};
pub use ports::{container_name, EdgeControl, Runtime, SlotContainer};
pub use record::load_record;
pub use remove::Removal;
pub use traffic::{live_releases, resolve_release, Settled};

pub(crate) use edge_ops::{even, shares};

/// Releases (besides the current one) whose stopped containers are kept.
pub const KEEP_RELEASES: usize = 3;
/// How long `docker stop` waits before SIGKILL, after a drain.
pub const STOP_TIMEOUT_SECS: i64 = 10;

/// What to roll to.
#[derive(Debug, Clone)]
pub enum Goal {
    /// A new or changed definition (a new tag, new settings, new replicas).
    Deploy(Box<ServiceSpec>),
    /// The release before the current one (or, when a rollout was left half
    /// done, the release it started from).
    Rollback,
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

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    fn emit(&self, e: RolloutEvent) {
        (self.events)(e);
    }

    fn note(&self, message: impl Into<String>) {
        self.emit(RolloutEvent::Note {
            message: message.into(),
        });
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

    async fn run_locked(
        &self,
        stack: &str,
        service: &str,
        goal: Goal,
    ) -> Result<RolloutOutcome, Problem> {
        let started = Instant::now();
        let (mut record, mut revision) = self.load(stack, service).await?;
        if let Some(r) = record.as_mut() {
            self.reconcile(r, &mut revision).await?;
        }
        if let Some(p) = record.as_ref().and_then(|r| r.rollout.as_ref()) {
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
        // Everything that can be refused is checked before anything changes.
        let resolved = match &goal {
            Goal::Deploy(spec) => {
                self.note(format!("resolving image {}", spec.image));
                let image_id = self.runtime.resolve_image(&spec.image).await?;
                self.check_ports(spec).await?;
                Some((spec.as_ref(), image_id))
            }
            Goal::Rollback => None,
        };
        let wanted = match &resolved {
            Some((spec, image_id)) => Wanted::Deploy { spec, image_id },
            None => Wanted::Rollback,
        };
        let Plan {
            mut record,
            release,
            from,
            rollback,
            resumed,
            beside,
            already_candidate: already,
            discard,
        } = plan(stack, service, record, wanted, &self.owner, (self.now_ms)())?;
        let target = release.number;
        // The data as it was before this deploy, copied before anything
        // changes: a failed snapshot stops the deploy here.
        let wants_snapshot = release.spec.snapshots.is_some_and(|p| p.before_deploy);
        if matches!(goal, Goal::Deploy(_)) && wants_snapshot && from != Some(target) {
            self.note("taking snapshots of the service's volumes before the deploy");
            for done in self
                .runtime
                .snapshot_volumes(&release.spec, from, target)
                .await?
            {
                self.note(done);
            }
        }
        self.save(&record, &mut revision).await?;
        self.emit(RolloutEvent::Planned {
            service: release.spec.qualified(),
            from,
            to: target,
            image: release.image.clone(),
            slots: release.spec.replicas,
            resumed: resumed.is_some(),
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

    /// Brings the record and the routes back to what the daemon has, when
    /// someone removed or killed containers behind Changeover's back (by
    /// hand, a prune, a reboot): targets of containers that are gone leave
    /// the routes, and a candidate none of whose containers runs any more
    /// is dropped (it cannot be switched to, promoted or repaired), so the
    /// ordinary verbs work again.
    async fn reconcile(
        &self,
        record: &mut ServiceRecord,
        revision: &mut u64,
    ) -> Result<(), Problem> {
        self.prune_gone(&record.spec).await?;
        let Some(c) = record.candidate.clone() else {
            return Ok(());
        };
        let alive = self
            .runtime
            .containers(&record.spec.stack, &record.spec.name)
            .await?
            .iter()
            .any(|x| x.release == c.release && x.running);
        if alive {
            return Ok(());
        }
        let why = "its containers were removed or stopped outside Changeover".to_string();
        self.note(format!(
            "{}: release {} no longer runs beside release {} ({why}); it is dropped",
            record.spec.qualified(),
            c.release,
            record
                .current
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into())
        ));
        if let Some(r) = record.release_mut(c.release) {
            r.result = ReleaseResult::Failed { reason: why };
        }
        record.candidate = None;
        if let Some(spec) = record
            .current
            .and_then(|n| record.release(n))
            .map(|r| r.spec.clone())
        {
            // The candidate's shares go with it: every healthy target alike.
            self.set_policy(&spec, even).await?;
            record.spec = spec;
        }
        self.save(record, revision).await
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

#[cfg(test)]
mod tests;
