//! What one rollout will do, decided before anything changes: from the
//! service's stored record, what the user asked for, and the image ID the
//! daemon resolved — which release to roll to (a new one, or an earlier one
//! with the very same definition and image), where it starts from, whether
//! it runs beside the current release (blue-green, canary), and which
//! release a rollback discards.
//!
//! Pure: no daemon, no edge, no clock (the time comes in), so it is tested
//! on plain values below. Everything it refuses is refused before the first
//! step.

use std::collections::BTreeSet;

use super::candidate_live;
use crate::problem::{Problem, ProblemCode};
use crate::service::{PendingRollout, Release, ReleaseResult, ServiceRecord, ServiceSpec};

/// What the user asked for, with what the daemon resolved for it.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// A new or changed definition, its image resolved to `image_id`.
    Deploy {
        spec: &'a ServiceSpec,
        image_id: &'a str,
    },
    /// The release before the current one, or, when a rollout was left half
    /// done, the release it started from.
    Rollback,
}

/// The decided rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The record to save before the first step: the target release in it
    /// (new or reused) marked in progress, and the rollout pending.
    pub record: ServiceRecord,
    /// The release every slot goes to.
    pub release: Release,
    /// The release the service leaves (for an interrupted rollout rolled
    /// back: the half-done one, whose containers are then removed).
    pub from: Option<u32>,
    pub rollback: bool,
    /// The rollout another client left half done, taken over or undone.
    pub resumed: Option<PendingRollout>,
    /// The new release starts beside `from`, which keeps the traffic.
    pub beside: bool,
    /// The target is the service's candidate already (a repair).
    pub already_candidate: bool,
    /// Releases whose containers are removed instead of stopped.
    pub discard: BTreeSet<u32>,
}

/// Decides the rollout of `stack/service` toward `wanted`, by `owner` at
/// `now_ms`.
pub fn plan(
    stack: &str,
    service: &str,
    record: Option<ServiceRecord>,
    wanted: Wanted<'_>,
    owner: &str,
    now_ms: i64,
) -> Result<Plan, Problem> {
    let interrupted = record.as_ref().and_then(|r| r.rollout.clone());
    let current = record.as_ref().and_then(|r| r.current);
    let rollback = matches!(wanted, Wanted::Rollback);
    let (mut record, target) = match wanted {
        Wanted::Deploy { spec, image_id } => {
            let mut record = record.unwrap_or_else(|| ServiceRecord {
                spec: spec.clone(),
                releases: Vec::new(),
                current: None,
                rollout: None,
                candidate: None,
            });
            let same = |r: &Release| r.spec == *spec && r.image_id == image_id;
            let reuse = interrupted
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
                    record
                        .releases
                        .iter()
                        .rev()
                        .find(|r| same(r) && !matches!(r.result, ReleaseResult::Failed { .. }))
                })
                .map(|r| r.number);
            let number = match reuse {
                Some(n) => n,
                None => {
                    let n = record.next_number();
                    record.releases.push(Release {
                        number: n,
                        image: spec.image.clone(),
                        image_id: image_id.to_string(),
                        spec: spec.clone(),
                        created_ms: now_ms,
                        created_by: owner.to_string(),
                        result: ReleaseResult::InProgress,
                    });
                    n
                }
            };
            if let Some(c) = record.candidate.as_ref().filter(|c| c.release != number) {
                return Err(candidate_live(stack, service, c, record.current));
            }
            record.spec = spec.clone();
            (record, number)
        }
        Wanted::Rollback => {
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
                        current
                            .map(|f| format!("release {f}"))
                            .unwrap_or_else(|| "none".into())
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
        _ => current,
    };
    let discard: BTreeSet<u32> = match (&interrupted, rollback) {
        (Some(p), true) => [p.to].into(),
        _ => BTreeSet::new(),
    };
    // Blue-green and canary start the new release beside the current one;
    // traffic stays on the current release until it is healthy.
    let beside = match from {
        Some(f) if f != target && !rollback => {
            release.spec.strategy.side_by_side() && !release.spec.ports.is_empty()
        }
        _ => false,
    };
    let already_candidate = record
        .candidate
        .as_ref()
        .is_some_and(|c| c.release == target);
    record.rollout = Some(PendingRollout {
        from,
        to: target,
        owner: owner.to_string(),
        started_ms: now_ms,
    });
    if let Some(r) = record.release_mut(target) {
        r.result = ReleaseResult::InProgress;
    }
    let release = record.release(target).cloned().unwrap_or(release);
    Ok(Plan {
        record,
        release,
        from,
        rollback,
        resumed: interrupted,
        beside,
        already_candidate,
        discard,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::service::{Candidate, PortMapping, Strategy};

    fn spec(tag: &str) -> ServiceSpec {
        let mut s = ServiceSpec::new("s", "web", &format!("app:{tag}"));
        s.ports = vec![PortMapping::tcp(8080, 80)];
        s
    }

    fn deploy<'a>(spec: &'a ServiceSpec, image_id: &'a str) -> Wanted<'a> {
        Wanted::Deploy { spec, image_id }
    }

    /// The record after a plan succeeded as planned.
    fn done(mut p: Plan) -> ServiceRecord {
        let n = p.release.number;
        for r in p.record.releases.iter_mut() {
            r.result = if r.number == n {
                ReleaseResult::Succeeded
            } else {
                ReleaseResult::Superseded
            };
        }
        p.record.current = Some(n);
        p.record.rollout = None;
        p.record
    }

    #[test]
    fn a_first_deploy_makes_release_1_with_who_and_when() {
        let v1 = spec("v1");
        let p = plan(
            "s",
            "web",
            None,
            deploy(&v1, "sha256:1"),
            "me@here (pid 1)",
            42,
        )
        .unwrap();
        assert_eq!(p.release.number, 1);
        assert_eq!(p.release.image_id, "sha256:1");
        assert_eq!(
            (p.release.created_by.as_str(), p.release.created_ms),
            ("me@here (pid 1)", 42)
        );
        assert_eq!(p.release.result, ReleaseResult::InProgress);
        assert_eq!(p.from, None);
        assert!(!p.beside && !p.rollback && p.discard.is_empty());
        let pending = p.record.rollout.as_ref().unwrap();
        assert_eq!(
            (pending.from, pending.to),
            (None, 1),
            "the rollout is recorded before it runs"
        );
    }

    #[test]
    fn the_same_definition_and_image_reuses_a_release_and_a_new_one_is_numbered_next() {
        let v1 = spec("v1");
        let r1 = done(plan("s", "web", None, deploy(&v1, "sha256:1"), "me", 1).unwrap());
        let again = plan(
            "s",
            "web",
            Some(r1.clone()),
            deploy(&v1, "sha256:1"),
            "me",
            2,
        )
        .unwrap();
        assert_eq!(
            again.release.number, 1,
            "nothing changed: the current release"
        );
        assert_eq!(again.record.releases.len(), 1, "no new release recorded");

        let rebuilt = plan(
            "s",
            "web",
            Some(r1.clone()),
            deploy(&v1, "sha256:other"),
            "me",
            3,
        )
        .unwrap();
        assert_eq!(
            rebuilt.release.number, 2,
            "same tag, another image: a new release"
        );

        let v2 = spec("v2");
        let r2 = done(plan("s", "web", Some(r1), deploy(&v2, "sha256:2"), "me", 4).unwrap());
        let back = plan("s", "web", Some(r2), deploy(&v1, "sha256:1"), "me", 5).unwrap();
        assert_eq!(
            back.release.number, 1,
            "an earlier identical release is gone back to"
        );
        assert_eq!(back.from, Some(2));
    }

    #[test]
    fn a_failed_release_is_never_reused() {
        let v1 = spec("v1");
        let mut r = done(plan("s", "web", None, deploy(&v1, "sha256:1"), "me", 1).unwrap());
        let v2 = spec("v2");
        let mut failed = plan(
            "s",
            "web",
            Some(r.clone()),
            deploy(&v2, "sha256:2"),
            "me",
            2,
        )
        .unwrap();
        failed.record.release_mut(2).unwrap().result = ReleaseResult::Failed { reason: "x".into() };
        failed.record.rollout = None;
        r = failed.record;
        let again = plan("s", "web", Some(r), deploy(&v2, "sha256:2"), "me", 3).unwrap();
        assert_eq!(
            again.release.number, 3,
            "trying a failed definition again numbers a new release"
        );
    }

    #[test]
    fn an_interrupted_rollout_is_taken_over_or_undone() {
        let v1 = spec("v1");
        let r1 = done(plan("s", "web", None, deploy(&v1, "sha256:1"), "me", 1).unwrap());
        let v2 = spec("v2");
        let half = plan("s", "web", Some(r1), deploy(&v2, "sha256:2"), "dead", 2)
            .unwrap()
            .record;

        let resumed = plan(
            "s",
            "web",
            Some(half.clone()),
            deploy(&v2, "sha256:2"),
            "me",
            3,
        )
        .unwrap();
        assert_eq!(
            resumed.release.number, 2,
            "the same deploy finishes release 2"
        );
        assert_eq!(
            resumed.resumed.as_ref().map(|p| p.owner.as_str()),
            Some("dead")
        );
        assert!(resumed.discard.is_empty());

        let undone = plan("s", "web", Some(half), Wanted::Rollback, "me", 3).unwrap();
        assert_eq!(
            undone.release.number, 1,
            "a rollback goes to where the rollout started"
        );
        assert_eq!(undone.from, Some(2), "from the half-done release");
        assert_eq!(undone.discard, [2].into(), "whose containers are removed");
        assert!(undone.rollback && !undone.beside);
    }

    #[test]
    fn rollbacks_need_an_earlier_release_and_a_service() {
        let p = plan("s", "web", None, Wanted::Rollback, "me", 1).unwrap_err();
        assert_eq!(p.code, ProblemCode::UnknownService);
        let v1 = spec("v1");
        let r1 = done(plan("s", "web", None, deploy(&v1, "sha256:1"), "me", 1).unwrap());
        let p = plan("s", "web", Some(r1), Wanted::Rollback, "me", 2).unwrap_err();
        assert_eq!(p.code, ProblemCode::NoPreviousRelease);
        assert!(p.message.contains("current: release 1"), "{}", p.message);
    }

    #[test]
    fn blue_green_starts_beside_and_a_live_candidate_refuses_anything_else() {
        let v1 = spec("v1");
        let r1 = done(plan("s", "web", None, deploy(&v1, "sha256:1"), "me", 1).unwrap());
        let mut v2 = spec("v2");
        v2.strategy = Strategy::BlueGreen;
        let p = plan(
            "s",
            "web",
            Some(r1.clone()),
            deploy(&v2, "sha256:2"),
            "me",
            2,
        )
        .unwrap();
        assert!(p.beside, "a blue-green deploy starts beside release 1");
        assert!(!p.already_candidate);

        let mut with_candidate = p.record.clone();
        with_candidate.rollout = None;
        with_candidate.candidate = Some(Candidate {
            release: 2,
            strategy: Strategy::BlueGreen,
            ready_ms: 3,
            switched_ms: None,
        });
        let repair = plan(
            "s",
            "web",
            Some(with_candidate.clone()),
            deploy(&v2, "sha256:2"),
            "me",
            4,
        )
        .unwrap();
        assert!(
            repair.already_candidate,
            "deploying the candidate again repairs it"
        );

        let v3 = spec("v3");
        let p = plan(
            "s",
            "web",
            Some(with_candidate.clone()),
            deploy(&v3, "sha256:3"),
            "me",
            5,
        )
        .unwrap_err();
        assert_eq!(p.code, ProblemCode::CandidateLive);
        let p = plan("s", "web", Some(with_candidate), Wanted::Rollback, "me", 5).unwrap_err();
        assert_eq!(
            p.code,
            ProblemCode::CandidateLive,
            "no rollback while a candidate runs"
        );

        let mut no_ports = v2.clone();
        no_ports.ports.clear();
        let p = plan("s", "web", Some(r1), deploy(&no_ports, "sha256:2"), "me", 2).unwrap();
        assert!(
            !p.beside,
            "without a port there is no traffic to hold back: it rolls"
        );
    }
}
