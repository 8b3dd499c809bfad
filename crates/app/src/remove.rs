//! Removing what Changeover created: a service, or a whole stack. First
//! what would go (nothing changed), for the confirmation to list; then the
//! removal: per service under its rollout lock (refused while a rollout
//! runs) its routes, the containers of every release and its record
//! ([`changeover_core::rollout::Removal`]); for a stack, its networks once
//! no service is left. Named volumes go only when asked (`volumes`), after
//! the containers, and one still used by a container of another stack is
//! refused by name — a volume is never removed as a side effect, and their
//! snapshots stay (listed, so the confirmation can say so).

use changeover_core::rollout::{EventSink, Removal};
use changeover_core::service::split_qualified;
use changeover_core::{Problem, ProblemCode};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::Environment;

/// What removing a stack takes away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct StackRemoval {
    pub stack: String,
    pub services: Vec<Removal>,
    /// The stack's named volumes (Docker's names), removed only when asked.
    pub volumes: Vec<String>,
    /// Snapshots of those volumes (Docker's names): they stay, with the
    /// volumes or without them, until removed one by one (`volume rm`).
    pub snapshots: Vec<String>,
    /// The stack's networks.
    pub networks: Vec<String>,
}

/// A stack on the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct StackSummary {
    pub name: String,
    /// `stack/service`, sorted.
    pub services: Vec<String>,
    /// Containers of every release, and how many of them run.
    pub containers: usize,
    pub running: usize,
}

type Deployer = changeover_core::rollout::Deployer<
    changeover_docker::runtime::DockerRuntime,
    changeover_docker::edge::Edge,
>;

async fn deployer(env: &Environment, events: EventSink) -> Result<Deployer, Problem> {
    crate::services::deployer(env, events).await
}

fn quiet() -> EventSink {
    std::sync::Arc::new(|_| {})
}

/// What removing `name` (`stack/service`) would take away; nothing changes.
pub async fn service_removal(env: &Environment, name: &str) -> Result<Removal, Problem> {
    let (stack, service) = split_qualified(name)?;
    deployer(env, quiet()).await?.removal(stack, service).await
}

/// Removes `name` (`stack/service`): routes, containers, record. Its
/// volumes stay.
pub async fn remove_service(
    env: &Environment,
    name: &str,
    events: EventSink,
) -> Result<Removal, Problem> {
    let (stack, service) = split_qualified(name)?;
    let _busy = env.busy();
    deployer(env, events)
        .await?
        .remove_service(stack, service)
        .await
}

/// Services of `stack`: those with a record, and those whose containers
/// carry its label (left by a crash before their first record).
async fn services_of(env: &Environment, stack: &str) -> Result<Vec<String>, Problem> {
    let mut names: Vec<String> = crate::services::records(env)
        .await?
        .into_iter()
        .filter(|r| r.spec.stack == stack)
        .map(|r| r.spec.name)
        .collect();
    let docker = env.docker().await?;
    for c in changeover_docker::read::slot_containers(&docker, Some(stack)).await? {
        if !names.contains(&c.service) {
            names.push(c.service);
        }
    }
    names.sort();
    Ok(names)
}

/// What removing `stack` would take away; nothing changes.
pub async fn stack_removal(env: &Environment, stack: &str) -> Result<StackRemoval, Problem> {
    removal_with(&deployer(env, quiet()).await?, env, stack).await
}

/// [`stack_removal`] with the deployer a removal goes on with.
async fn removal_with(
    d: &Deployer,
    env: &Environment,
    stack: &str,
) -> Result<StackRemoval, Problem> {
    let mut services = Vec::new();
    for s in services_of(env, stack).await? {
        services.push(d.removal(stack, &s).await?);
    }
    if services.is_empty() {
        return Err(Problem::new(
            ProblemCode::UnknownService,
            format!("no stack {stack} on this environment"),
        ));
    }
    let docker = env.docker().await?;
    // The records' named volumes, and those the stack's containers were
    // given (anonymous ones, images' VOLUMEs) that carry its label.
    let mut volumes: Vec<String> = services
        .iter()
        .flat_map(|r| r.volumes.iter().cloned())
        .chain(changeover_docker::volumes::created_for(&docker, stack, None).await?)
        .collect();
    volumes.sort();
    volumes.dedup();
    let mut snapshots = Vec::new();
    for v in &volumes {
        snapshots.extend(
            changeover_docker::volumes::snapshots_of(&docker, v)
                .await?
                .into_iter()
                .map(|s| s.name),
        );
    }
    let networks = changeover_docker::read::stack_networks(&docker, stack).await?;
    Ok(StackRemoval {
        stack: stack.to_string(),
        services,
        volumes,
        snapshots,
        networks,
    })
}

/// Removes every service of `stack`, then its networks; with `volumes`,
/// its named volumes too. Refused before anything changes when a rollout
/// of one of its services runs, or (with `volumes`) when another stack's
/// container uses one of its volumes.
pub async fn remove_stack(
    env: &Environment,
    stack: &str,
    volumes: bool,
    events: EventSink,
) -> Result<StackRemoval, Problem> {
    let _busy = env.busy();
    let d = deployer(env, events.clone()).await?;
    let plan = removal_with(&d, env, stack).await?;
    let docker = env.docker().await?;
    if volumes {
        let ours: Vec<&String> = plan.services.iter().flat_map(|r| &r.containers).collect();
        for v in &plan.volumes {
            let others: Vec<String> = changeover_docker::volumes::users(&docker, v)
                .await?
                .into_iter()
                .filter(|u| !ours.contains(&&u.container))
                .map(|u| u.container)
                .collect();
            if !others.is_empty() {
                return Err(Problem::new(
                    ProblemCode::VolumeInUse,
                    format!(
                        "volume {v} is used by {} (not of {stack}); nothing was removed",
                        others.join(", ")
                    ),
                ));
            }
        }
    }
    // Every lock is free now, or nothing changes.
    for r in &plan.services {
        let (_, service) = split_qualified(&r.service)?;
        if let Some(holder) = crate::services::lock_of(&d.edge, stack, service).await? {
            return Err(Problem::new(
                ProblemCode::RolloutInProgress,
                format!(
                    "a rollout of {} is in progress (started by {}); nothing was removed",
                    r.service, holder.owner
                ),
            ));
        }
    }
    let mut done = Vec::new();
    for r in &plan.services {
        let (_, service) = split_qualified(&r.service)?;
        done.push(d.remove_service(stack, service).await?);
    }
    for n in &plan.networks {
        changeover_docker::read::remove_network(&docker, n).await?;
        events(changeover_core::rollout::RolloutEvent::Note {
            message: format!("network {n} removed"),
        });
    }
    if volumes {
        for v in &plan.volumes {
            match changeover_docker::volumes::remove_volume(&docker, v).await {
                Ok(()) => events(changeover_core::rollout::RolloutEvent::Note {
                    message: format!("volume {v} removed"),
                }),
                // Declared but never created: nothing to remove.
                Err(p) if p.code == ProblemCode::UnknownVolume => {}
                Err(p) => return Err(p),
            }
        }
    }
    Ok(StackRemoval {
        services: done,
        ..plan
    })
}

/// The stacks on the environment: from the services' records and the
/// containers' labels.
pub async fn stacks(env: &Environment) -> Result<Vec<StackSummary>, Problem> {
    let mut out: std::collections::BTreeMap<String, StackSummary> = Default::default();
    for r in crate::services::records(env).await? {
        let s = out
            .entry(r.spec.stack.clone())
            .or_insert_with(|| StackSummary {
                name: r.spec.stack.clone(),
                services: Vec::new(),
                containers: 0,
                running: 0,
            });
        s.services.push(r.spec.qualified());
    }
    let docker = env.docker().await?;
    for c in changeover_docker::read::slot_containers(&docker, None).await? {
        let s = out.entry(c.stack.clone()).or_insert_with(|| StackSummary {
            name: c.stack.clone(),
            services: Vec::new(),
            containers: 0,
            running: 0,
        });
        let q = format!("{}/{}", c.stack, c.service);
        if !s.services.contains(&q) {
            s.services.push(q);
        }
        s.containers += 1;
        if c.running {
            s.running += 1;
        }
    }
    Ok(out
        .into_values()
        .map(|mut s| {
            s.services.sort();
            s
        })
        .collect())
}
