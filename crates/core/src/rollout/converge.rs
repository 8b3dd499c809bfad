//! Bringing every slot of a service to one release, start-first: create,
//! start, health-check and route the new container, then drain and stop
//! the one it replaces while the next slot starts. Every step is
//! idempotent, so a rollout cut short is finished by the next one.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    container_name, Deployer, EdgeControl, RolloutEvent, Runtime, SlotContainer, SlotFailure,
    SlotPhase, SlotTimings, KEEP_RELEASES,
};
use crate::edge::{Request, Response, TargetSpec, TargetState};
use crate::problem::Problem;
use crate::service::{Release, ServiceRecord, ServiceSpec, UpdateOrder};

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    /// Brings every slot to `release`; containers of `discard` releases are
    /// removed instead of stopped. `beside`: other releases' containers are
    /// left running (blue-green, canary).
    pub(super) async fn converge(
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
            for p in spec.routes() {
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
                        let udp_hint = if p.udp == crate::edge::Udp::Only
                            && spec.healthcheck.is_none()
                        {
                            format!("; port {} carries only UDP and the service has no healthcheck, so the edge checks it by a TCP connect to container port {}: give the service a healthcheck", p.label(), p.container)
                        } else {
                            String::new()
                        };
                        format!(
                            "it did not pass the edge's health check ({}) within {} s{udp_hint}",
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
    pub(super) async fn retire(
        &self,
        spec: &ServiceSpec,
        c: &SlotContainer,
        discard: &BTreeSet<u32>,
    ) {
        for p in spec.routes() {
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
    pub(super) async fn remove_release(&self, release: &Release) {
        let spec = &release.spec;
        if let Ok(all) = self.runtime.containers(&spec.stack, &spec.name).await {
            for c in all.iter().filter(|c| c.release == release.number) {
                for p in spec.routes() {
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
    pub(super) async fn cleanup(&self, record: &ServiceRecord) {
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

/// What is left of a converged slot: the containers it replaced, to drain
/// and stop before the slot is done.
struct SlotRetirement {
    slot: u32,
    release: u32,
    olds: Vec<SlotContainer>,
    detail: Option<String>,
}
