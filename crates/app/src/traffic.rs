//! Traffic between a service's releases on an environment: core's switch,
//! split, preview, promote, abort and maintenance
//! (`changeover_core::rollout::traffic`) driven on the environment's kept
//! edge. Nothing here creates an edge: a service without one has no
//! traffic to move.

use changeover_core::rollout::{Deployer, EventSink, Settled};
use changeover_core::service::{split_qualified, TrafficView};
use changeover_core::{Problem, ProblemCode};

use changeover_docker::edge::Edge;
use changeover_docker::runtime::DockerRuntime;

use crate::environments::Environment;
use crate::services::deployer_on;

/// A deployer on the environment's running edge.
async fn on_edge(
    env: &Environment,
    name: &str,
    events: EventSink,
) -> Result<Deployer<DockerRuntime, Edge>, Problem> {
    let edge = env.edge().await?.ok_or_else(|| {
        Problem::new(
            ProblemCode::UnknownService,
            format!("no service {name} on this environment (see `changeover service ls`)"),
        )
    })?;
    Ok(deployer_on(edge, events, Some(env.registries.clone())))
}

fn quiet() -> EventSink {
    std::sync::Arc::new(|_| {})
}

/// What the edge does with a service's traffic and what each release served.
pub async fn show(env: &Environment, name: &str) -> Result<TrafficView, Problem> {
    let (stack, service) = split_qualified(name)?;
    on_edge(env, name, quiet())
        .await?
        .traffic(stack, service)
        .await
}

/// Pauses the service behind a 503 page with `message` (`None` resumes it).
pub async fn maintenance(
    env: &Environment,
    name: &str,
    message: Option<String>,
) -> Result<(), Problem> {
    let (stack, service) = split_qualified(name)?;
    on_edge(env, name, quiet())
        .await?
        .maintenance(stack, service, message)
        .await
}

/// Sends every new request to one release (number, or a tag one live
/// release runs).
pub async fn switch(env: &Environment, name: &str, to: &str) -> Result<u32, Problem> {
    let (stack, service) = split_qualified(name)?;
    on_edge(env, name, quiet())
        .await?
        .switch(stack, service, to)
        .await
}

/// `percent` of new clients to the candidate (or newer release), sticky.
pub async fn split(env: &Environment, name: &str, percent: i64) -> Result<(u32, u32), Problem> {
    let (stack, service) = split_qualified(name)?;
    on_edge(env, name, quiet())
        .await?
        .split(stack, service, percent)
        .await
}

/// Requests carrying `token` go to the candidate (`None`: preview off).
pub async fn preview(
    env: &Environment,
    name: &str,
    token: Option<String>,
) -> Result<Option<u32>, Problem> {
    let (stack, service) = split_qualified(name)?;
    on_edge(env, name, quiet())
        .await?
        .preview(stack, service, token)
        .await
}

/// All traffic to the candidate; the old release drains and stops.
pub async fn promote(env: &Environment, name: &str, events: EventSink) -> Result<Settled, Problem> {
    let (stack, service) = split_qualified(name)?;
    let _busy = env.busy();
    on_edge(env, name, events)
        .await?
        .promote(stack, service)
        .await
}

/// All traffic back to the current release; the candidate is removed.
pub async fn abort(env: &Environment, name: &str, events: EventSink) -> Result<Settled, Problem> {
    let (stack, service) = split_qualified(name)?;
    let _busy = env.busy();
    on_edge(env, name, events)
        .await?
        .abort(stack, service, None)
        .await
}

/// Settles a candidate that cannot stay: aborts a canary its guard stopped,
/// promotes a blue-green candidate whose old release's standby time is over.
pub async fn settle(
    env: &Environment,
    name: &str,
    events: EventSink,
) -> Result<Option<Settled>, Problem> {
    let (stack, service) = split_qualified(name)?;
    on_edge(env, name, events)
        .await?
        .settle(stack, service)
        .await
}

/// A fresh preview token (random, URL-safe).
pub fn new_preview_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}
