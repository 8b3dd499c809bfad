//! Plans: what a deploy or a rollback would change
//! ([`changeover_core::plan`]), read from the services' records and the
//! daemon's images without changing anything — no edge is started, no
//! image is pulled or built (a `build:` context is packed only to learn
//! the tag its content would get).

use changeover_core::plan::{spec_changes, PlanAction, ServicePlan};
use changeover_core::rollout::load_record;
use changeover_core::service::{split_qualified, ServiceRecord, ServiceSpec, Strategy};
use changeover_core::stack::Stack;
use changeover_core::{Problem, ProblemCode};
use changeover_docker::Docker;

use crate::Environment;

/// The stored record of `stack/service`, when the environment has an edge
/// and the edge has one.
async fn record_of(
    env: &Environment,
    stack: &str,
    service: &str,
) -> Result<Option<ServiceRecord>, Problem> {
    match env.edge().await? {
        Some(edge) => Ok(load_record(&edge, stack, service).await?.0),
        None => Ok(None),
    }
}

/// The image ID `image` has on the daemon, if it is there.
async fn image_id(docker: &Docker, image: &str) -> Option<String> {
    docker.inspect_image(image).await.ok().and_then(|i| i.id)
}

/// `spec` with its image as a deploy would name it (a `build:` service's
/// content tag: the context packed, nothing sent), and that image's ID on
/// the daemon, or a note of what would happen to it first.
async fn resolved(
    docker: &Docker,
    spec: &ServiceSpec,
) -> Result<(ServiceSpec, Result<String, &'static str>), Problem> {
    let mut spec = spec.clone();
    if let Some(build) = spec.build.clone() {
        let repository = changeover_core::image::ImageRef::parse(&spec.image)
            .map(|r| r.name)
            .unwrap_or_else(|_| spec.image.clone());
        let context = tokio::task::spawn_blocking(move || {
            changeover_docker::build::pack(&build, changeover_docker::build::MAX_CONTEXT)
        })
        .await
        .map_err(|e| Problem::new(ProblemCode::BuildFailed, e.to_string()))??;
        spec.image = format!(
            "{repository}:{}",
            changeover_core::build::build_tag(&context.hash)
        );
        let id = image_id(docker, &spec.image).await.ok_or("built first");
        return Ok((spec, id));
    }
    let id = image_id(docker, &spec.image).await.ok_or("pulled first");
    Ok((spec, id))
}

/// The `VOLUME`s `image` declares that no mount of `spec` covers, each
/// with the volume every replica keeps it in (as the runtime names them),
/// `(new)` when that volume is not on the daemon yet.
async fn image_volumes(docker: &Docker, spec: &ServiceSpec, image: &str) -> Vec<String> {
    let Ok(inspected) = docker.inspect_image(image).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in changeover_docker::runtime::uncovered_volumes(inspected, spec) {
        for slot in 0..spec.replicas.max(1) {
            let name = changeover_docker::runtime::kept_image_volume(spec, slot, &path);
            let new = docker.inspect_volume(&name).await.is_err();
            out.push(format!(
                "{path} in {name}{}",
                if new { " (new)" } else { "" }
            ));
        }
    }
    out
}

/// The plan of deploying `spec` over what `record` holds.
async fn plan_of(
    docker: &Docker,
    record: Option<&ServiceRecord>,
    spec: &ServiceSpec,
) -> Result<ServicePlan, Problem> {
    let (spec, id) = resolved(docker, spec).await?;
    let current = record.and_then(|r| r.current.and_then(|n| r.release(n)));
    let (to_image_id, note) = match id {
        Ok(id) => (Some(id), None),
        Err(note) => (None, Some(note.to_string())),
    };
    let changes = spec_changes(current.map(|c| &c.spec), &spec);
    let image_volumes = match &to_image_id {
        Some(id) => image_volumes(docker, &spec, id).await,
        None => Vec::new(),
    };
    let from_image_id = current.map(|c| c.image_id.clone());
    let action = match current {
        None => PlanAction::Create,
        Some(_) if changes.is_empty() && to_image_id.is_some() && to_image_id == from_image_id => {
            PlanAction::Unchanged
        }
        Some(_) => PlanAction::Update,
    };
    Ok(ServicePlan {
        service: spec.qualified(),
        action,
        from_release: current.map(|c| c.number),
        to_release: match action {
            PlanAction::Unchanged => current.map(|c| c.number),
            _ => Some(record.map_or(1, ServiceRecord::next_number)),
        },
        from_image_id,
        to_image_id,
        image_note: note,
        changes,
        image_volumes,
    })
}

/// What `stack deploy` of `stack` would change, per service.
pub async fn stack_plan(env: &Environment, stack: &Stack) -> Result<Vec<ServicePlan>, Problem> {
    let docker = env.docker().await?;
    let mut out = Vec::new();
    for spec in &stack.services {
        let record = record_of(env, &spec.stack, &spec.name).await?;
        out.push(plan_of(&docker, record.as_ref(), spec).await?);
    }
    Ok(out)
}

fn unknown(name: &str) -> Problem {
    Problem::new(
        ProblemCode::UnknownService,
        format!("no service {name} on this environment (see `changeover service ls`)"),
    )
}

/// What deploying `tag` to `name` (`stack/service`) would change.
pub async fn deploy_plan(
    env: &Environment,
    name: &str,
    tag: &str,
    strategy: Option<Strategy>,
) -> Result<ServicePlan, Problem> {
    let (stack, service) = split_qualified(name)?;
    let record = record_of(env, stack, service)
        .await?
        .ok_or_else(|| unknown(name))?;
    let mut spec = record.spec.with_tag(tag);
    if let Some(s) = strategy {
        spec.strategy = s;
    }
    plan_of(&env.docker().await?, Some(&record), &spec).await
}

/// What rolling `name` back would change: from the release running now to
/// the one a rollback goes to.
pub async fn rollback_plan(env: &Environment, name: &str) -> Result<ServicePlan, Problem> {
    let (stack, service) = split_qualified(name)?;
    let record = record_of(env, stack, service)
        .await?
        .ok_or_else(|| unknown(name))?;
    let current = record.current.and_then(|n| record.release(n));
    let Some(to) = record.previous() else {
        return Err(Problem::new(
            ProblemCode::NoPreviousRelease,
            format!("{name} has no release before the current one to roll back to"),
        ));
    };
    // A rollback keeps the volumes where they are: the older release's
    // image VOLUMEs are in the same per-replica volumes.
    Ok(ServicePlan {
        image_volumes: Vec::new(),
        service: name.to_string(),
        action: PlanAction::Rollback,
        from_release: current.map(|c| c.number),
        to_release: Some(to.number),
        from_image_id: current.map(|c| c.image_id.clone()),
        to_image_id: Some(to.image_id.clone()),
        image_note: None,
        changes: spec_changes(current.map(|c| &c.spec), &to.spec),
    })
}
