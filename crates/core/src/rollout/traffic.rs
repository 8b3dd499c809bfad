//! Explicit traffic control between a service's releases: switch, split,
//! promote, abort, preview, maintenance — and the end of a blue-green
//! standby.
//!
//! Each change is one `traffic-set` per route on the edge, which applies it
//! to the next request; the service's record follows (who is candidate,
//! when traffic was switched to it). Switch and split take no lock: each is
//! one atomic change the user can undo at once. Promote and abort stop or
//! remove containers, so they hold the service's rollout lock like a deploy.

use std::collections::BTreeMap;

use super::{even, shares, Deployer, EdgeControl, Runtime};
use crate::edge::{Preview, RouteStatus, TargetState};
use crate::problem::{Problem, ProblemCode};
use crate::service::{split_image, ReleaseResult, ServiceRecord, TrafficView};

fn invalid(message: String) -> Problem {
    Problem::new(ProblemCode::InvalidTraffic, message)
}

/// Releases with a healthy target on every route, and each release's
/// targets that are not healthy (`name (state: last check)`).
pub fn live_releases(routes: &[RouteStatus]) -> (Vec<u32>, BTreeMap<u32, Vec<String>>) {
    let mut releases: Vec<u32> = routes
        .iter()
        .flat_map(|r| r.targets.iter().map(|t| t.spec.release))
        .collect();
    releases.sort_unstable();
    releases.dedup();
    let mut unhealthy: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let live = releases
        .into_iter()
        .filter(|rel| {
            let mut ok = true;
            for r in routes {
                let mine: Vec<_> = r
                    .targets
                    .iter()
                    .filter(|t| t.spec.release == *rel)
                    .collect();
                for t in &mine {
                    if t.state != TargetState::Healthy && t.state != TargetState::Draining {
                        unhealthy.entry(*rel).or_default().push(format!(
                            "{} ({}{})",
                            t.spec.id,
                            t.state.as_str(),
                            t.last_check
                                .as_deref()
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default()
                        ));
                    }
                }
                ok &= mine.iter().any(|t| t.state == TargetState::Healthy);
            }
            ok
        })
        .collect();
    (live, unhealthy)
}

/// Resolves RELEASE as the user wrote it: a release number of the service,
/// or a tag exactly one live release runs.
pub fn resolve_release(record: &ServiceRecord, live: &[u32], wanted: &str) -> Result<u32, Problem> {
    if let Ok(n) = wanted.trim().parse::<u32>() {
        if record.release(n).is_some() {
            return Ok(n);
        }
    }
    let by_tag: Vec<u32> = record
        .releases
        .iter()
        .filter(|r| live.contains(&r.number) && split_image(&r.image).1 == wanted)
        .map(|r| r.number)
        .collect();
    match by_tag.as_slice() {
        [n] => Ok(*n),
        [] => Err(invalid(format!(
            "no live release {wanted:?} of {} (see `changeover service inspect`)",
            record.spec.qualified()
        ))),
        _ => Err(invalid(format!(
            "several live releases run tag {wanted:?}; name one by its number"
        ))),
    }
}

/// What a promote or abort did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The release that now serves every request.
    pub current: u32,
    /// The release that was stopped (promote) or removed (abort).
    pub retired: u32,
    pub message: String,
}

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    /// [`Self::with_routes`] after taking targets whose containers are gone
    /// off the routes: what a change of traffic is decided on.
    async fn with_live_routes(
        &self,
        stack: &str,
        service: &str,
    ) -> Result<(ServiceRecord, u64, Vec<RouteStatus>), Problem> {
        let (record, _, _) = self.with_routes(stack, service).await?;
        self.prune_gone(&record.spec).await?;
        self.with_routes(stack, service).await
    }

    /// The record (and its revision) and routes of a service that publishes
    /// ports.
    async fn with_routes(
        &self,
        stack: &str,
        service: &str,
    ) -> Result<(ServiceRecord, u64, Vec<RouteStatus>), Problem> {
        let q = format!("{stack}/{service}");
        let (record, revision) = self.load(stack, service).await?;
        let record = record.ok_or_else(|| {
            Problem::new(
                ProblemCode::UnknownService,
                format!("no service {q} on this environment (see `changeover service ls`)"),
            )
        })?;
        let routes = self.routes(&record.spec).await?;
        if routes.is_empty() {
            return Err(Problem::new(
                ProblemCode::UnknownService,
                format!("{q} publishes no port, so the edge carries none of its traffic"),
            ));
        }
        Ok((record, revision, routes))
    }

    /// What the edge does with a service's traffic and what each release
    /// served.
    pub async fn traffic(&self, stack: &str, service: &str) -> Result<TrafficView, Problem> {
        let (record, _, routes) = self.with_routes(stack, service).await?;
        let site = self.site(&record.spec.qualified(), &routes).await;
        Ok(TrafficView {
            service: record.spec.qualified(),
            current: record.current,
            candidate: record.candidate.clone(),
            routes,
            site,
        })
    }

    /// The service's site, when a route of it has hosts (`None` too when
    /// the edge cannot say: the view goes on without it).
    async fn site(
        &self,
        service: &str,
        routes: &[RouteStatus],
    ) -> Option<crate::service::SiteView> {
        let route = routes.iter().find(|r| !r.spec.hosts.is_empty())?;
        let Ok(crate::edge::Response::Config {
            config,
            certificates,
        }) = self.edge_call(crate::edge::Request::ConfigGet).await
        else {
            return None;
        };
        Some(crate::service::SiteView {
            hosts: route.spec.hosts.clone(),
            http_port: config.http_port,
            https_port: route.spec.tls.map(|_| config.https_port),
            certificate: certificates.into_iter().find(|c| c.service == service),
        })
    }

    /// Notes in the record when all traffic went to the candidate (the
    /// blue-green standby time counts from there). Best effort: the switch
    /// itself is already done.
    async fn note_switch(&self, mut record: ServiceRecord, mut revision: u64, to_candidate: bool) {
        let Some(c) = record.candidate.as_mut() else {
            return;
        };
        let switched = to_candidate.then(|| c.switched_ms.unwrap_or((self.now_ms)()));
        if c.switched_ms == switched {
            return;
        }
        c.switched_ms = switched;
        if let Err(e) = self.save(&record, &mut revision).await {
            self.note(format!("the switch is done but was not recorded: {e}"));
        }
    }

    /// Sends every new request to one release (an atomic change on each
    /// route; in-flight requests finish where they are). Refused when that
    /// release has no healthy target on a route.
    pub async fn switch(&self, stack: &str, service: &str, to: &str) -> Result<u32, Problem> {
        let (record, revision, routes) = self.with_live_routes(stack, service).await?;
        refuse_tripped(&record, &routes)?;
        let (live, unhealthy) = live_releases(&routes);
        let target = resolve_release(&record, &live, to)?;
        if !live.contains(&target) {
            let why = unhealthy
                .get(&target)
                .map(|u| format!("; unhealthy: {}", u.join(", ")))
                .unwrap_or_else(|| "; none of its containers runs on the edge now".into());
            return Err(invalid(format!(
                "release {target} of {stack}/{service} is not healthy on every route, so \
                 traffic stays where it is{why}"
            )));
        }
        self.apply(&routes, |p| {
            p.weights = live
                .iter()
                .map(|r| crate::edge::Share {
                    release: *r,
                    weight: u32::from(*r == target) * 100,
                })
                .collect();
        })
        .await?;
        let to_candidate = record.candidate.as_ref().map(|c| c.release) == Some(target);
        self.note_switch(record, revision, to_candidate).await;
        Ok(target)
    }

    /// Shares new clients between the two live releases: `percent` to the
    /// candidate (or the newer one), the rest to the other; sticky per
    /// client. Returns (old, new).
    pub async fn split(
        &self,
        stack: &str,
        service: &str,
        percent: i64,
    ) -> Result<(u32, u32), Problem> {
        if !(0..=100).contains(&percent) {
            return Err(invalid(format!(
                "{percent} is not a percentage from 0 to 100"
            )));
        }
        let (record, revision, routes) = self.with_live_routes(stack, service).await?;
        refuse_tripped(&record, &routes)?;
        let (live, _) = live_releases(&routes);
        let q = format!("{stack}/{service}");
        let pair = match (&record.candidate, record.current) {
            (Some(c), Some(cur)) if live.contains(&c.release) && live.contains(&cur) => {
                Some((cur, c.release))
            }
            _ => match live[..] {
                [old, new] => Some((old, new)),
                _ => None,
            },
        };
        let Some((old, new)) = pair else {
            return Err(invalid(format!(
                "a split needs two live releases; {q} has {} ({})",
                live.len(),
                if live.is_empty() {
                    "none healthy".to_string()
                } else {
                    live.iter()
                        .map(|r| format!("release {r}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        };
        let p = percent as u32;
        self.apply(&routes, |policy| {
            policy.weights = shares(&[(Some(old), 100 - p), (Some(new), p)]);
        })
        .await?;
        let to_candidate = p == 100 && record.candidate.as_ref().map(|c| c.release) == Some(new);
        self.note_switch(record, revision, to_candidate).await;
        Ok((old, new))
    }

    /// Sends requests carrying `token` (header `x-changeover-preview` or the
    /// cookie of the same name) to the candidate, whatever the shares;
    /// `None` ends the preview. Returns the previewed release.
    pub async fn preview(
        &self,
        stack: &str,
        service: &str,
        token: Option<String>,
    ) -> Result<Option<u32>, Problem> {
        let (record, _, routes) = self.with_routes(stack, service).await?;
        let Some(token) = token else {
            self.apply(&routes, |p| p.preview = None).await?;
            return Ok(None);
        };
        if token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(format!(
                "{token:?} is not a usable preview token (letters, digits, - and _)"
            )));
        }
        if !record.spec.ports.is_empty() && !record.spec.has_tcp_port() {
            return Err(invalid(format!(
                "{stack}/{service} is a UDP service: its datagrams carry no header or \
                 cookie for a preview token (use `traffic split` or `traffic switch`)"
            )));
        }
        if !record.spec.ports.is_empty() && !record.spec.has_http_port() {
            return Err(invalid(format!(
                "{stack}/{service} is a TCP service: its connections carry no header or \
                 cookie for a preview token (use `traffic split` or `traffic switch`)"
            )));
        }
        let Some(c) = &record.candidate else {
            return Err(invalid(format!(
                "{stack}/{service} runs no release beside the current one, so there is \
                 nothing to preview (deploy with strategy blue-green or canary)"
            )));
        };
        let release = c.release;
        self.apply(&routes, |p| {
            p.preview = Some(Preview {
                release,
                token: token.clone(),
            })
        })
        .await?;
        Ok(Some(release))
    }

    /// Pauses the service behind a 503 page with `message` (`None` resumes
    /// it). Its containers are not touched.
    pub async fn maintenance(
        &self,
        stack: &str,
        service: &str,
        message: Option<String>,
    ) -> Result<(), Problem> {
        if message.as_ref().is_some_and(|m| m.trim().is_empty()) {
            return Err(invalid(
                "the maintenance message is empty; say what users should know".into(),
            ));
        }
        let (_, _, routes) = self.with_routes(stack, service).await?;
        self.apply(&routes, |p| p.maintenance = message.clone())
            .await
    }

    /// Makes the candidate the current release: all traffic to it (one
    /// atomic change), then the old release drains and stops (kept for a
    /// rollback). Refused while any target of the candidate is unhealthy.
    pub async fn promote(&self, stack: &str, service: &str) -> Result<Settled, Problem> {
        self.locked(stack, service, self.promote_locked(stack, service))
            .await
    }

    async fn promote_locked(&self, stack: &str, service: &str) -> Result<Settled, Problem> {
        let (mut record, mut revision, routes) = self.with_live_routes(stack, service).await?;
        let q = record.spec.qualified();
        let (c, old) = candidate_of(&record)?;
        // Every replica of the candidate runs (a stopped one is no longer on
        // the routes, so the routes alone would not say).
        let replicas = record.release(c).map(|r| r.spec.replicas).unwrap_or(0);
        let containers = self.runtime.containers(stack, service).await?;
        let down: Vec<String> = (0..replicas)
            .filter(|slot| {
                !containers
                    .iter()
                    .any(|x| x.release == c && x.slot == *slot && x.running)
            })
            .map(|slot| {
                containers
                    .iter()
                    .find(|x| x.release == c && x.slot == slot)
                    .map(|x| format!("{} (not running)", x.name))
                    .unwrap_or_else(|| format!("slot {slot} (no container)"))
            })
            .collect();
        if !down.is_empty() {
            return Err(invalid(format!(
                "release {c} of {q} does not run every replica, so it is not promoted: {}; \
                 deploy it again to repair it, or `changeover traffic abort {q}`",
                down.join(", ")
            )));
        }
        let (_, unhealthy) = live_releases(&routes);
        if let Some(u) = unhealthy.get(&c) {
            return Err(invalid(format!(
                "release {c} of {q} has unhealthy targets, so it is not promoted: {}",
                u.join(", ")
            )));
        }
        if !live_releases(&routes).0.contains(&c) {
            return Err(invalid(format!(
                "release {c} of {q} has no healthy container on every route, so it is not \
                 promoted; `changeover traffic abort {q}` removes it"
            )));
        }
        // Every new request to the candidate, then the old release goes.
        self.apply(&routes, |p| {
            p.weights = shares(&[(Some(c), 100), (old, 0)]);
        })
        .await?;
        let Some(release) = record.release(c).cloned() else {
            return Err(Problem::new(
                ProblemCode::EdgeError,
                format!("release {c} of {q} is missing from its record"),
            ));
        };
        let retiring: Vec<_> = self
            .runtime
            .containers(stack, service)
            .await?
            .into_iter()
            .filter(|x| x.release != c && x.running)
            .collect();
        let keep = Default::default();
        futures_util::future::join_all(
            retiring
                .iter()
                .map(|x| self.retire(&release.spec, x, &keep)),
        )
        .await;
        // Back to "every healthy target alike": only the candidate is left.
        self.apply(&routes, even).await?;
        for r in record.releases.iter_mut() {
            if r.number == c {
                r.result = ReleaseResult::Succeeded;
            } else if Some(r.number) == old {
                r.result = ReleaseResult::Superseded;
            }
        }
        record.current = Some(c);
        record.candidate = None;
        record.spec = release.spec.clone();
        self.save(&record, &mut revision).await?;
        self.cleanup(&record).await;
        let old_text = old.map(|o| format!("release {o}")).unwrap_or_default();
        Ok(Settled {
            current: c,
            retired: old.unwrap_or(0),
            message: format!(
                "{q} is on release {c} ({}); {old_text} drained and stopped (kept for a rollback)",
                release.image
            ),
        })
    }

    /// Gives up the candidate: all traffic back to the current release (one
    /// atomic change), then the candidate's containers drain and are
    /// removed. `reason` goes into the history. Refused when the current
    /// release has no healthy target left to take the traffic.
    pub async fn abort(
        &self,
        stack: &str,
        service: &str,
        reason: Option<String>,
    ) -> Result<Settled, Problem> {
        self.locked(stack, service, self.abort_locked(stack, service, reason))
            .await
    }

    async fn abort_locked(
        &self,
        stack: &str,
        service: &str,
        reason: Option<String>,
    ) -> Result<Settled, Problem> {
        let (mut record, mut revision, routes) = self.with_live_routes(stack, service).await?;
        let q = record.spec.qualified();
        let (c, old) = candidate_of(&record)?;
        let Some(old) = old else {
            return Err(invalid(format!("{q} has no current release to go back to")));
        };
        let (live, unhealthy) = live_releases(&routes);
        // Refused only when it would take the traffic from a candidate that
        // serves it to a release that cannot: with neither serving, removing
        // the candidate loses nothing and lets a deploy start them again.
        if !live.contains(&old) && live.contains(&c) {
            return Err(invalid(format!(
                "release {old} of {q} has no healthy target on every route, so the traffic \
                 stays on release {c}{}; promote release {c} or bring release {old} back first",
                unhealthy
                    .get(&old)
                    .map(|u| format!(" (unhealthy: {})", u.join(", ")))
                    .unwrap_or_default()
            )));
        }
        self.apply(&routes, |p| {
            p.weights = shares(&[(Some(old), 100), (Some(c), 0)]);
        })
        .await?;
        let spec = record
            .release(c)
            .map(|r| r.spec.clone())
            .unwrap_or_else(|| record.spec.clone());
        let gone: Vec<_> = self
            .runtime
            .containers(stack, service)
            .await?
            .into_iter()
            .filter(|x| x.release == c)
            .collect();
        let discard = [c].into();
        futures_util::future::join_all(gone.iter().map(|x| self.retire(&spec, x, &discard))).await;
        self.apply(&routes, even).await?;
        let why = reason.unwrap_or_else(|| format!("aborted by {}", self.owner));
        if let Some(r) = record.release_mut(c) {
            r.result = ReleaseResult::Failed {
                reason: why.clone(),
            };
        }
        record.candidate = None;
        self.save(&record, &mut revision).await?;
        Ok(Settled {
            current: old,
            retired: c,
            message: format!(
                "{q}: release {c} removed ({why}); every request goes to release {old}"
            ),
        })
    }

    /// Settles a candidate that cannot stay: a canary whose guard tripped on
    /// the edge is aborted (its reason goes into the history), and a
    /// blue-green standby whose time is up ends (the candidate is promoted).
    /// `None` when there was nothing to do.
    pub async fn settle(&self, stack: &str, service: &str) -> Result<Option<Settled>, Problem> {
        let (record, _) = self.load(stack, service).await?;
        let Some(record) = record else {
            return Ok(None);
        };
        let Some(c) = &record.candidate else {
            return Ok(None);
        };
        if let Some(why) = self
            .routes(&record.spec)
            .await?
            .into_iter()
            .find_map(|r| r.policy.tripped)
        {
            self.note(format!("{stack}/{service}: release {} {why}", c.release));
            return self.abort(stack, service, Some(why)).await.map(Some);
        }
        let due = match (c.switched_ms, record.spec.standby_ms) {
            (Some(at), Some(standby)) => (self.now_ms)() - at >= standby as i64,
            _ => false,
        };
        if !due {
            return Ok(None);
        }
        self.note(format!(
            "the standby time of {stack}/{service} is over: retiring the old release"
        ));
        self.promote(stack, service).await.map(Some)
    }
}

/// Traffic stays away from a canary its guard stopped until it is aborted.
fn refuse_tripped(record: &ServiceRecord, routes: &[RouteStatus]) -> Result<(), Problem> {
    match routes.iter().find_map(|r| r.policy.tripped.as_ref()) {
        Some(why) => Err(invalid(format!(
            "{}: release {} was {why}; `changeover traffic abort {}` removes it",
            record.spec.qualified(),
            record
                .candidate
                .as_ref()
                .map(|c| c.release.to_string())
                .unwrap_or_else(|| "?".into()),
            record.spec.qualified()
        ))),
        None => Ok(()),
    }
}

/// The candidate and the current release of a record.
fn candidate_of(record: &ServiceRecord) -> Result<(u32, Option<u32>), Problem> {
    match &record.candidate {
        Some(c) => Ok((c.release, record.current)),
        None => Err(invalid(format!(
            "{} runs no release beside the current one{}; deploy with strategy blue-green or \
             canary first",
            record.spec.qualified(),
            record
                .current
                .map(|n| format!(" (release {n} only)"))
                .unwrap_or_default()
        ))),
    }
}
