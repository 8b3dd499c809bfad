//! Automatic redeploys (`x-changeover.autoredeploy`, see
//! `changeover_core::redeploy`): one pass over an environment's watched
//! services finds the ones with a new image and rolls each out through
//! the normal rollout — the service's lock decides between two watchers,
//! health gates the new release, a failed one leaves the release before it
//! serving. A canary is promoted after `promote_after` when its guard did
//! not trip, else aborted.
//!
//! Who runs passes: `changeover watch` (a loop, or `--once` for cron and
//! CI). A `local` watch is also woken by the daemon's image events, so a
//! `docker build -t app:dev .` goes out within seconds.

use std::time::Duration;

use changeover_core::image::ImageRef;
use changeover_core::redeploy::{newer_in_range, VersionRange, Watch};
use changeover_core::registry::Repository;
use changeover_core::rollout::EventSink;
use changeover_core::service::{ServiceView, Strategy};
use changeover_core::{Problem, ProblemCode};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::Environment;

/// What one pass found and did for one watched service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RedeployCheck {
    /// `stack/service`.
    pub service: String,
    pub watch: Watch,
    /// The image its current release runs.
    pub current: String,
    pub outcome: RedeployOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[ts(export)]
pub enum RedeployOutcome {
    /// Nothing new.
    UpToDate,
    /// A new image went out and is the current release (or the candidate,
    /// waiting for a person).
    Redeployed {
        image: String,
        release: Option<u32>,
        why: String,
    },
    /// The new image did not make it; the release before keeps serving.
    Failed { image: String, reason: String },
    /// Not looked at now (a rollout runs, a candidate waits, …).
    Skipped { reason: String },
}

/// The shortest `check_every` of the environment's watched services, if
/// any is watched.
pub fn interval(services: &[ServiceView]) -> Option<Duration> {
    services
        .iter()
        .filter_map(|s| s.record.spec.autoredeploy.as_ref())
        .map(|a| Duration::from_millis(a.check_every_ms))
        .min()
}

/// Whether some watched service watches the daemon's own tags.
pub fn watches_local(services: &[ServiceView]) -> bool {
    services.iter().any(|s| {
        s.record
            .spec
            .autoredeploy
            .as_ref()
            .is_some_and(|a| a.watch == Watch::Local)
    })
}

/// Waits until the next pass is due for `services`: their shortest
/// `check_every` (a minute when none is watched), the daemon's next image
/// event when one watches its local tags, or `also` (a webhook).
pub async fn until_next_pass(
    env: &Environment,
    services: &[ServiceView],
    also: impl std::future::Future<Output = ()>,
) {
    let every = interval(services).unwrap_or(Duration::from_secs(60));
    let image_event = async {
        if watches_local(services) {
            if let Ok(docker) = env.docker().await {
                changeover_docker::images::next_image_event(&docker).await;
                // Let a build finish tagging before looking.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::time::sleep(every) => {}
        _ = image_event => {}
        _ = also => {}
    }
}

/// Whether `service` (`stack/service`) is one of `only` (stacks or
/// `stack/service` names; empty: every service).
fn chosen(service: &str, only: &[String]) -> bool {
    only.is_empty()
        || only
            .iter()
            .any(|o| o == service || service.split_once('/').is_some_and(|(stack, _)| stack == o))
}

/// The services of `env` that watch for new images (those of `only`, when
/// given: stacks or `stack/service` names).
pub async fn watched(env: &Environment, only: &[String]) -> Result<Vec<ServiceView>, Problem> {
    Ok(crate::services::services(env)
        .await?
        .into_iter()
        .filter(|s| s.record.spec.autoredeploy.is_some() && chosen(&s.name, only))
        .collect())
}

/// One pass over `services` (see [`watched`]).
pub async fn check_once(
    env: &Environment,
    services: &[ServiceView],
    events: EventSink,
) -> Result<Vec<RedeployCheck>, Problem> {
    let mut out = Vec::new();
    for view in services {
        let Some(auto) = view.record.spec.autoredeploy.clone() else {
            continue;
        };
        let current = view
            .record
            .current
            .and_then(|n| view.record.release(n))
            .cloned();
        let Some(current) = current else {
            out.push(RedeployCheck {
                service: view.name.clone(),
                watch: auto.watch.clone(),
                current: String::new(),
                outcome: RedeployOutcome::Skipped {
                    reason: "it has no current release yet".into(),
                },
            });
            continue;
        };
        let skip = if view.rollout_lock.is_some() || view.record.rollout.is_some() {
            Some("a rollout of it runs or was left unfinished")
        } else if view.record.candidate.is_some() {
            Some("a release runs beside the current one (promote or abort it first)")
        } else {
            None
        };
        let check = |outcome| RedeployCheck {
            service: view.name.clone(),
            watch: auto.watch.clone(),
            current: current.image.clone(),
            outcome,
        };
        if let Some(reason) = skip {
            out.push(check(RedeployOutcome::Skipped {
                reason: reason.into(),
            }));
            continue;
        }
        let found = match new_image(env, &auto.watch, &current.image, &current.image_id).await {
            Ok(f) => f,
            Err(p) => {
                out.push(check(RedeployOutcome::Skipped { reason: p.message }));
                continue;
            }
        };
        let Some((tag, pull, why)) = found else {
            out.push(check(RedeployOutcome::UpToDate));
            continue;
        };
        let image = ImageRef::parse(&current.image)
            .map(|r| r.with_tag(&tag))
            .unwrap_or_else(|_| tag.clone());
        events(changeover_core::rollout::RolloutEvent::Note {
            message: format!("{}: {why}; redeploying {image}", view.name),
        });
        let strategy = auto.strategy;
        let deployed = if pull {
            crate::services::pull_and_deploy_tag(
                env,
                &view.name,
                &tag,
                strategy,
                None,
                events.clone(),
            )
            .await
        } else {
            crate::services::deploy_tag(env, &view.name, &tag, strategy, None, events.clone()).await
        };
        let outcome = match deployed {
            Err(p) if p.code == ProblemCode::RolloutInProgress => RedeployOutcome::Skipped {
                reason: format!("another client is rolling it out: {}", p.message),
            },
            Err(p) => RedeployOutcome::Failed {
                image,
                reason: p.message,
            },
            Ok(_) => {
                let effective = strategy.unwrap_or(view.record.spec.strategy);
                match (effective, auto.promote_after_ms) {
                    (Strategy::Canary, Some(ms)) => {
                        canary_verdict(env, &view.name, &image, &why, ms, events.clone()).await
                    }
                    _ => RedeployOutcome::Redeployed {
                        release: crate::services::current_release(env, &view.name).await?,
                        image,
                        why,
                    },
                }
            }
        };
        out.push(check(outcome));
    }
    Ok(out)
}

/// After `promote_after_ms`, promotes the canary of `name` if its guard
/// held, else aborts it.
async fn canary_verdict(
    env: &Environment,
    name: &str,
    image: &str,
    why: &str,
    promote_after_ms: u64,
    events: EventSink,
) -> RedeployOutcome {
    tokio::time::sleep(Duration::from_millis(promote_after_ms)).await;
    let tripped = match crate::traffic::show(env, name).await {
        Ok(view) => view.routes.iter().find_map(|r| r.policy.tripped.clone()),
        Err(p) => Some(format!("its traffic could not be read: {}", p.message)),
    };
    if let Some(reason) = tripped {
        let _ = crate::traffic::abort(env, name, events).await;
        return RedeployOutcome::Failed {
            image: image.to_string(),
            reason: format!("the canary's guard stopped it: {reason}; aborted"),
        };
    }
    match crate::traffic::promote(env, name, events).await {
        Ok(_) => RedeployOutcome::Redeployed {
            release: crate::services::current_release(env, name)
                .await
                .ok()
                .flatten(),
            image: image.to_string(),
            why: format!(
                "{why}; the canary held for {} s and was promoted",
                promote_after_ms / 1000
            ),
        },
        Err(p) => RedeployOutcome::Failed {
            image: image.to_string(),
            reason: format!("the canary could not be promoted: {}", p.message),
        },
    }
}

/// The tag to deploy when `watch` sees a new image for the release running
/// `image` (ID `image_id`): `(tag, pull it first, why)`.
async fn new_image(
    env: &Environment,
    watch: &Watch,
    image: &str,
    image_id: &str,
) -> Result<Option<(String, bool, String)>, Problem> {
    let reference =
        ImageRef::parse(image).map_err(|e| Problem::new(ProblemCode::InvalidInput, e))?;
    let tag = reference.tag_or_latest().to_string();
    match watch {
        Watch::Local => {
            let docker = env.docker().await?;
            match docker.inspect_image(image).await {
                Ok(i) if i.id.as_deref().is_some_and(|id| id != image_id) => Ok(Some((
                    tag,
                    false,
                    format!("{image} names another image on the daemon now"),
                ))),
                _ => Ok(None),
            }
        }
        Watch::Digest => {
            let repo = Repository::of(&reference);
            let client = env.registries.client(&repo.host).await?;
            let Some(remote) = client.digest(&repo.path, &tag).await? else {
                return Ok(None);
            };
            let docker = env.docker().await?;
            let local = docker
                .inspect_image(image_id)
                .await
                .ok()
                .and_then(|i| i.repo_digests)
                .unwrap_or_default();
            let here = changeover_core::registry::pulled_from(&local, &reference.name, &remote);
            Ok((!here).then(|| {
                (
                    tag,
                    true,
                    format!("{image} was pushed again ({})", short(&remote)),
                )
            }))
        }
        Watch::Semver { range } => {
            let text = range;
            let range = VersionRange::parse(range)
                .map_err(|e| Problem::new(ProblemCode::InvalidInput, e))?;
            let tags = env.registries.tags(env, &reference.name, false).await?;
            if let Some(why) = &tags.registry_problem {
                return Err(Problem::new(ProblemCode::RegistryUnreachable, why.clone()));
            }
            let names = tags.tags.iter().map(|t| t.tag.as_str());
            Ok(newer_in_range(names, &tag, &range).map(|t| {
                let why = format!("{t} is the newest tag in {text} (from {tag})");
                (t, false, why)
            }))
        }
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
