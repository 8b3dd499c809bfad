//! Keeping an inventory live from the daemon's event stream.
//!
//! One [`watch`] per environment. It connects, subscribes to events *before*
//! reading the snapshot (with `since` a little in the past, so nothing that
//! happens while the snapshot is read is missed), then turns each burst of
//! events into [`InventoryChange`]s by re-reading exactly what changed. When
//! the daemon goes away it says so, retries with backoff, and on return sends
//! a whole new snapshot, so the picture can neither go stale nor duplicate.
//!
//! Left out: deciding what to show; the sink receives everything.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use changeover_core::environment::{ConnectionState, EnvironmentSpec};
use changeover_core::inventory::{Inventory, InventoryChange};
use changeover_core::live::LiveUpdate;
use changeover_core::{Problem, ProblemCode};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch as signal;

use crate::{connect, read};

/// Receives a watch's updates. Decoupled from any GUI so tests can collect them.
pub type Sink = Arc<dyn Fn(LiveUpdate) + Send + Sync>;

/// First retry delay after the daemon goes away, and the longest one.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// Above this many changed containers in one burst, one full listing is
/// cheaper than a filtered one.
const FULL_RELIST_ABOVE: usize = 64;

/// Watches one discovered environment until `stop` turns true, dialling it
/// itself (tests and tools; the app keeps one connection per environment and
/// calls [`watch_with`]).
pub async fn watch(spec: EnvironmentSpec, sink: Sink, stop: signal::Receiver<bool>) {
    if let (None, Some(problem)) = (&spec.endpoint, &spec.problem) {
        sink(LiveUpdate::State {
            environment: spec.name.clone(),
            state: ConnectionState::Invalid {
                problem: problem.clone(),
            },
        });
        return;
    }
    let dial = || connect(&spec);
    watch_with(&spec.name, &spec.host, dial, sink, stop).await
}

/// Watches the environment `name` (at `host`, for messages) until `stop`
/// turns true. `connect` gives a connected client each time the watch
/// (re)connects — the app's kept connection, replaced after a loss.
pub async fn watch_with<C, F>(
    name: &str,
    host: &str,
    connect: C,
    sink: Sink,
    mut stop: signal::Receiver<bool>,
) where
    C: Fn() -> F,
    F: Future<Output = Result<Docker, Problem>>,
{
    let state = |state| LiveUpdate::State {
        environment: name.to_string(),
        state,
    };
    let mut delay = FIRST_RETRY;
    loop {
        sink(state(ConnectionState::Connecting));
        let mut connected = false;
        let ended = tokio::select! {
            problem = session(name, host, &connect, &sink, &mut connected) => problem,
            _ = stop.wait_for(|s| *s) => return,
        };
        if connected {
            delay = FIRST_RETRY;
        }
        tracing::info!(environment = %name, problem = %ended, retry_ms = delay.as_millis() as u64, "environment disconnected");
        sink(state(ConnectionState::Disconnected {
            problem: ended,
            retry_in_ms: delay.as_millis() as u64,
        }));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(LONGEST_RETRY);
    }
}

/// One connection's life; returns why it ended.
async fn session<C, F>(
    name: &str,
    host: &str,
    connect: &C,
    sink: &Sink,
    connected: &mut bool,
) -> Problem
where
    C: Fn() -> F,
    F: Future<Output = Result<Docker, Problem>>,
{
    let docker = match connect().await {
        Ok(d) => d,
        Err(p) => return p,
    };
    match follow(name, host, &docker, sink, connected).await {
        Ok(never) => match never {},
        Err(problem) => problem,
    }
}

/// Sends the snapshot, then follows events until something fails; it never
/// returns `Ok`.
async fn follow(
    name: &str,
    host: &str,
    docker: &Docker,
    sink: &Sink,
    connected: &mut bool,
) -> Result<Infallible, Problem> {
    let docker = docker.clone();
    let daemon = read::daemon_info(&docker).await?;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(2))
        .unwrap_or_default();
    let mut events = docker.events(Some(
        EventsOptionsBuilder::new()
            .since(&since.to_string())
            .build(),
    ));
    let mut current = read::inventory(&docker).await?;
    *connected = true;
    let environment = name.to_string();
    sink(LiveUpdate::State {
        environment: environment.clone(),
        state: ConnectionState::Connected { daemon },
    });
    sink(LiveUpdate::Snapshot {
        environment: environment.clone(),
        inventory: current.clone(),
    });

    let lost = |why: String| {
        Problem::new(
            ProblemCode::DaemonUnreachable,
            format!("lost the connection to {host}: {why}"),
        )
    };
    // One item of the event stream into the burst, or why the stream ended.
    let absorb = |burst: &mut Burst, item: Option<Result<EventMessage, bollard::errors::Error>>| {
        match item {
            None => Err(lost("the daemon closed the event stream".into())),
            Some(Err(e)) => Err(lost(connect::describe(&e))),
            Some(Ok(event)) => {
                burst.add(event);
                Ok(())
            }
        }
    };
    loop {
        let mut burst = Burst::default();
        absorb(&mut burst, events.next().await)?;
        // Take whatever else is already waiting, so a burst costs one read.
        while let Some(item) = events.next().now_or_never() {
            absorb(&mut burst, item)?;
        }
        let changes = burst.resolve(&docker, &current).await?;
        if changes.is_empty() {
            continue;
        }
        for change in &changes {
            current.apply(change.clone());
        }
        sink(LiveUpdate::Changes {
            environment: environment.clone(),
            changes,
        });
    }
}

/// What one burst of events touched.
#[derive(Default)]
struct Burst {
    containers: BTreeSet<String>,
    images: bool,
    volumes: bool,
    networks: bool,
}

impl Burst {
    fn add(&mut self, event: EventMessage) {
        let action = event.action.unwrap_or_default();
        if action.starts_with("exec_") {
            return; // exec does not change what the inventory shows
        }
        match event.typ {
            Some(EventMessageTypeEnum::CONTAINER) => {
                if let Some(id) = event.actor.and_then(|a| a.id) {
                    self.containers.insert(id);
                }
                // a container coming or going changes image usage, and
                // `docker run -v` can create a volume
                self.volumes |= action == "create" || action == "destroy";
            }
            Some(EventMessageTypeEnum::IMAGE) => self.images = true,
            Some(EventMessageTypeEnum::VOLUME) => self.volumes = true,
            Some(EventMessageTypeEnum::NETWORK) => {
                // connect/disconnect change a container's networks
                if let Some(container) = event
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut attrs| attrs.remove("container"))
                {
                    self.containers.insert(container);
                }
                self.networks |= action == "create" || action == "destroy";
            }
            _ => {}
        }
    }

    /// Re-reads what the burst touched and says how the inventory changed.
    async fn resolve(
        self,
        docker: &Docker,
        current: &Inventory,
    ) -> Result<Vec<InventoryChange>, Problem> {
        let mut changes = Vec::new();
        if !self.containers.is_empty() {
            let ids: Vec<String> = self.containers.into_iter().collect();
            let (fresh, asked) = if ids.len() > FULL_RELIST_ABOVE {
                let all = read::containers(docker, None).await?;
                let known: Vec<String> = current.containers.iter().map(|c| c.id.clone()).collect();
                (all, known)
            } else {
                (read::containers(docker, Some(&ids)).await?, ids)
            };
            for id in asked {
                if !fresh.iter().any(|c| c.id == id)
                    && current.containers.iter().any(|c| c.id == id)
                {
                    changes.push(InventoryChange::ContainerRemoved { id });
                }
            }
            for container in fresh {
                if !current.containers.contains(&container) {
                    changes.push(InventoryChange::ContainerUpserted {
                        container: Box::new(container),
                    });
                }
            }
        }
        if self.images {
            changes.push(InventoryChange::Images {
                images: read::images(docker).await?,
            });
        }
        if self.volumes {
            changes.push(InventoryChange::Volumes {
                volumes: read::volumes(docker).await?,
            });
        }
        if self.networks {
            changes.push(InventoryChange::Networks {
                networks: read::networks(docker).await?,
            });
        }
        Ok(changes)
    }
}
