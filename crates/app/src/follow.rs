//! One environment followed in the background, for the desktop app.
//!
//! Per environment, while the app runs:
//! - the live inventory, from the daemon's event stream on the kept
//!   connection (`changeover_docker::live`), reconnecting with backoff;
//! - the edge, followed with one control session waiting on `watch`: the
//!   edge answers when a route, a target's health, a policy, a record or a
//!   lock changed. That and container events are the only reasons the
//!   services are read again, and the window gets them pushed
//!   ([`ServicesUpdate`]); an idle environment costs no request at all;
//! - what used to happen as a side effect of a query: a canary its guard
//!   stopped is aborted, and a blue-green standby whose time is up ends;
//! - stopped volume helpers left behind, swept once when it opens;
//! - the traffic of each service whose Traffic panel is open, once a second
//!   ([`TrafficUpdate`]), read over the kept session;
//! - automatic redeploys of the services that ask for them
//!   (`x-changeover.autoredeploy`, [`crate::redeploy`]): a pass every
//!   `check_every`, and at once on the daemon's image events for a `local`
//!   watch; what a pass did is pushed ([`RedeployUpdate`]).
//!
//! Everything stops when the environment is removed or the app exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use changeover_core::edge::{Request, Response, WATCH_LONGEST_MS};
use changeover_core::environment::ConnectionState;
use changeover_core::inventory::InventoryChange;
use changeover_core::live::LiveUpdate;
use changeover_core::rollout::EdgeControl;
use changeover_core::service::ServiceView;
use changeover_core::{Problem, ProblemCode};
use tokio::sync::{watch, Notify};

use crate::environments::{Environment, Environments};
use crate::events::{AppEvent, RedeployUpdate, ServicesUpdate, TrafficUpdate};

/// How often an open Traffic panel gets its figures.
const TRAFFIC_EVERY: Duration = Duration::from_secs(1);
/// Changes that arrive this close together are read once.
const SETTLE_BURST: Duration = Duration::from_millis(100);

/// The services whose traffic the window follows now.
#[derive(Default)]
pub struct Subscriptions {
    traffic: Mutex<BTreeMap<String, usize>>,
    changed: Notify,
}

impl Subscriptions {
    fn services(&self) -> Vec<String> {
        self.traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

impl Environments {
    /// Starts (`on`) or stops pushing `service`'s traffic once a second. Each
    /// start is matched by one stop (two panels on one service count twice).
    pub fn watch_traffic(&self, environment: &str, service: &str, on: bool) -> Result<(), Problem> {
        changeover_core::service::split_qualified(service)?;
        let env = self.get(Some(environment))?;
        {
            let mut subs = env.follow.traffic.lock().unwrap_or_else(|p| p.into_inner());
            let n = subs.entry(service.to_string()).or_default();
            if on {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    subs.remove(service);
                }
            }
        }
        env.follow.changed.notify_one();
        Ok(())
    }
}

/// Follows `env` until it is removed or the app stops.
pub(crate) fn start(envs: Environments, env: Arc<Environment>) {
    tokio::spawn(async move {
        if let (None, Some(problem)) = (&env.spec.endpoint, &env.spec.problem) {
            envs.emit(AppEvent::Live(LiveUpdate::State {
                environment: env.spec.name.clone(),
                state: ConnectionState::Invalid {
                    problem: problem.clone(),
                },
            }));
            return;
        }
        let (dirty, dirty_rx) = watch::channel(0u64);
        let dirty = Arc::new(dirty);
        let sink: changeover_docker::Sink = {
            let envs = envs.clone();
            let dirty = dirty.clone();
            Arc::new(move |update: LiveUpdate| {
                if touches_containers(&update) {
                    dirty.send_modify(|g| *g += 1);
                }
                envs.emit(AppEvent::Live(update));
            })
        };
        let stop = env.stop.subscribe();
        let live = {
            let env = env.clone();
            async move {
                let connect = || env.reconnect();
                changeover_docker::live::watch_with(
                    &env.spec.name,
                    &env.spec.host,
                    connect,
                    sink,
                    stop,
                )
                .await
            }
        };
        // Volume helpers that stopped without removing themselves (the
        // daemon restarted under them) are swept when the environment opens.
        {
            let env = env.clone();
            tokio::spawn(async move {
                if let Ok(docker) = env.docker().await {
                    match changeover_docker::volumes::sweep_helpers(&docker, false).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(environment = %env.spec.name, removed = n, "stopped volume helpers removed")
                        }
                        Err(e) => {
                            tracing::debug!(environment = %env.spec.name, error = %e, "sweeping volume helpers")
                        }
                    }
                }
            });
        }
        let mut stopped = env.stop.subscribe();
        tokio::select! {
            _ = live => {}
            _ = follow_edge(&env, &dirty) => {}
            _ = services(&envs, &env, dirty_rx) => {}
            _ = autoredeploy(&envs, &env) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    });
}

/// Automatic redeploys while the app is open: a pass over the watched
/// services every (shortest) `check_every`, woken by image events when one
/// watches the daemon's tags; an environment with none watched is looked
/// at again every minute. Only what a pass did is pushed.
async fn autoredeploy(envs: &Environments, env: &Arc<Environment>) {
    use crate::redeploy::{self, RedeployOutcome};
    const IDLE: Duration = Duration::from_secs(60);
    // Let the window's first reads go first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    loop {
        let services = redeploy::watched(env, &[]).await.unwrap_or_default();
        if services.is_empty() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let quiet: changeover_core::rollout::EventSink = Arc::new(|_| {});
        match redeploy::check_once(env, &services, quiet).await {
            Ok(checks) => {
                for check in checks {
                    if matches!(
                        check.outcome,
                        RedeployOutcome::Redeployed { .. } | RedeployOutcome::Failed { .. }
                    ) {
                        envs.emit(AppEvent::Redeploy(RedeployUpdate {
                            environment: env.spec.name.clone(),
                            check,
                        }));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(environment = %env.spec.name, error = %e, "automatic redeploy pass")
            }
        }
        redeploy::until_next_pass(env, &services, std::future::pending()).await;
    }
}

/// A snapshot, or a burst that changed containers: services may look
/// different now.
fn touches_containers(update: &LiveUpdate) -> bool {
    match update {
        LiveUpdate::Snapshot { .. } => true,
        LiveUpdate::Changes { changes, .. } => changes.iter().any(|c| {
            matches!(
                c,
                InventoryChange::ContainerUpserted { .. }
                    | InventoryChange::ContainerRemoved { .. }
            )
        }),
        _ => false,
    }
}

/// Keeps one control session waiting on the edge's state generation and
/// marks the services dirty when it moves.
async fn follow_edge(env: &Environment, dirty: &watch::Sender<u64>) {
    let mut seen = 0u64;
    loop {
        let edge = match env.edge().await {
            Ok(Some(edge)) => edge,
            // No edge yet (or no daemon): a container event wakes the
            // services anyway; look again a little later.
            _ => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        match edge
            .call(Request::Watch {
                after: seen,
                timeout_ms: WATCH_LONGEST_MS - 5_000,
            })
            .await
        {
            Ok(Response::Changed { generation }) => {
                if generation != seen {
                    seen = generation;
                    dirty.send_modify(|g| *g += 1);
                }
            }
            // An edge of an older protocol cannot be followed: read again
            // every few seconds until it is upgraded.
            Ok(_) => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                dirty.send_modify(|g| *g += 1);
            }
            Err(e) => {
                tracing::debug!(environment = %env.spec.name, error = %e, "following the edge");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Reads the services when something changed, pushes them, settles
/// candidates that cannot stay, and pushes followed traffic every second.
async fn services(envs: &Environments, env: &Arc<Environment>, mut dirty: watch::Receiver<u64>) {
    let mut next_due: Option<tokio::time::Instant> = None;
    let mut last: Option<Vec<ServiceView>> = None;
    let mut changed = true;
    loop {
        if changed {
            tokio::time::sleep(SETTLE_BURST).await;
            dirty.borrow_and_update();
            match crate::services::services(env).await {
                Ok(mut list) => {
                    // A container that went away (removed, killed, a
                    // reboot) leaves its routes now, not at the next deploy.
                    let mut pruned = false;
                    for s in list.iter().filter(|s| !s.record.spec.ports.is_empty()) {
                        match crate::services::prune(env, &s.name).await {
                            Ok(removed) => pruned |= !removed.is_empty(),
                            Err(e) => {
                                tracing::warn!(service = %s.name, error = %e, "could not take gone containers off the routes")
                            }
                        }
                    }
                    if pruned {
                        if let Ok(again) = crate::services::services(env).await {
                            list = again;
                        }
                    }
                    next_due = settle(env, &list).await;
                    if last.as_ref() != Some(&list) {
                        envs.emit(AppEvent::Services(ServicesUpdate {
                            environment: env.spec.name.clone(),
                            services: list.clone(),
                            problem: None,
                        }));
                        last = Some(list);
                    }
                }
                Err(problem) => {
                    // Unreachable daemons are reported by the live watch.
                    if problem.code != ProblemCode::DaemonUnreachable {
                        envs.emit(AppEvent::Services(ServicesUpdate {
                            environment: env.spec.name.clone(),
                            services: last.clone().unwrap_or_default(),
                            problem: Some(problem),
                        }));
                    }
                }
            }
        }
        let followed = env.follow.services();
        for service in &followed {
            let update = match crate::traffic::show(env, service).await {
                Ok(view) => TrafficUpdate {
                    environment: env.spec.name.clone(),
                    service: service.clone(),
                    traffic: Some(view),
                    problem: None,
                },
                Err(problem) => TrafficUpdate {
                    environment: env.spec.name.clone(),
                    service: service.clone(),
                    traffic: None,
                    problem: Some(problem),
                },
            };
            envs.emit(AppEvent::Traffic(update));
        }
        let wait_traffic = async {
            if followed.is_empty() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(TRAFFIC_EVERY).await
            }
        };
        let wait_due = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        changed = tokio::select! {
            r = dirty.changed() => {
                if r.is_err() {
                    return;
                }
                true
            }
            _ = env.follow.changed.notified() => false,
            _ = wait_traffic => false,
            _ = wait_due => true,
        };
    }
}

/// Settles the candidates that cannot stay (a tripped guard, a standby
/// whose time is up); when the next standby ends.
async fn settle(env: &Environment, services: &[ServiceView]) -> Option<tokio::time::Instant> {
    let now = crate::services::now_ms();
    let mut next: Option<i64> = None;
    for s in services {
        let Some(c) = &s.record.candidate else {
            continue;
        };
        if s.rollout_lock.is_some() {
            continue;
        }
        match crate::traffic::settle(env, &s.name, Arc::new(|_| {})).await {
            Ok(Some(done)) => tracing::info!(service = %s.name, "{}", done.message),
            Ok(None) => {
                if let (Some(at), Some(standby)) = (c.switched_ms, s.record.spec.standby_ms) {
                    let due = at + standby as i64;
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            Err(e) => {
                tracing::warn!(service = %s.name, error = %e, "could not settle the release beside the current one")
            }
        }
    }
    next.map(|due| {
        tokio::time::Instant::now() + Duration::from_millis((due - now).max(0) as u64 + 50)
    })
}
