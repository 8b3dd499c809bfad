//! The service use cases both shells (CLI and desktop) call: deploy a
//! stack, roll one service to a tag, roll back, the service forms, export,
//! the sandbox, and reading services with what runs of them.
//!
//! Each rollout puts the edge in place first (building its image on the
//! daemon when needed), then drives core's [`Deployer`] with the Docker
//! runtime, on the environment's kept connection and edge sessions. Images
//! named `changeover-demo:TAG` that are missing are built on the daemon from
//! the edge binary (the demo app; a tag ending in `-unhealthy` makes one that
//! never passes `/health`), which is what makes the sandbox work with no
//! registry.

use std::collections::BTreeMap;

use changeover_core::edge::{rollout_lock_key, LockHolder, Request, Response, TargetState};
use changeover_core::form::{self, FormCheck, FormIssue, ServiceForm};
use changeover_core::rollout::{
    expect_ok, load_record, routes_of, Deployer, EdgeControl, EventSink, Goal, RolloutEvent,
    RolloutOutcome, Runtime,
};
use changeover_core::service::{
    split_qualified, ContainerView, ServiceRecord, ServiceSpec, ServiceView, Strategy,
};
use changeover_core::stack::Stack;
use changeover_core::{Problem, ProblemCode};

use changeover_docker::edge::{ensure_demo_image, BinaryImage, Edge};
use changeover_docker::runtime::{DockerRuntime, PullStop};
use changeover_docker::Docker;

use crate::environments::Environment;

/// `user@host (pid N)`: who deploys, as recorded in releases and locks.
pub fn owner() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "someone".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host} (pid {})", std::process::id())
}

/// A lock owner written by [`owner`] on this machine whose process is gone.
pub(crate) fn owner_gone(holder: &str) -> bool {
    let mine = owner();
    let host_of = |o: &str| {
        o.split(" (pid ")
            .next()
            .and_then(|s| s.split_once('@'))
            .map(|(_, h)| h.to_string())
    };
    let pid = holder
        .rsplit_once("(pid ")
        .and_then(|(_, p)| p.trim_end_matches(')').parse::<u32>().ok());
    match (host_of(holder), host_of(&mine), pid) {
        (Some(h), Some(m), Some(pid)) if h == m => {
            cfg!(target_os = "linux") && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A deployer for this environment, with the edge in place.
pub async fn deployer(
    env: &Environment,
    events: EventSink,
) -> Result<Deployer<DockerRuntime, Edge>, Problem> {
    deployer_stopping(env, events, None).await
}

/// [`deployer`], whose pulls stop when `stop` is asked.
async fn deployer_stopping(
    env: &Environment,
    events: EventSink,
    stop: Option<changeover_docker::runtime::PullStop>,
) -> Result<Deployer<DockerRuntime, Edge>, Problem> {
    let edge = env.ensure_edge().await?;
    if let Some(message) = changeover_docker::edge::outdated_edge(&edge.docker).await {
        events(RolloutEvent::Note { message });
    }
    let mut d = deployer_on(edge, events, Some(env.registries.clone()));
    if let Some(p) = d.runtime.pulls.as_mut() {
        p.stop = stop;
    }
    Ok(d)
}

/// A deployer driving `edge` and its daemon; images not on the daemon are
/// pulled with `registries`' credentials, their progress told as
/// [`RolloutEvent::Pulling`].
pub(crate) fn deployer_on(
    edge: Edge,
    events: EventSink,
    registries: Option<crate::registries::Registries>,
) -> Deployer<DockerRuntime, Edge> {
    let mut runtime = DockerRuntime::new(&edge.docker);
    if let Some(registries) = registries {
        runtime = runtime.with_pulls(changeover_docker::runtime::PullSetup {
            credentials: std::sync::Arc::new(registries),
            progress: pull_progress(events.clone()),
            stop: None,
        });
    }
    Deployer {
        runtime,
        edge,
        owner: owner(),
        now_ms,
        owner_gone,
        events,
    }
}

/// Tells a pull's progress as rollout events, at most every 100 ms unless
/// a layer finished, a new one showed or the daemon's status line changed
/// (it reports every chunk).
fn pull_progress(
    events: EventSink,
) -> std::sync::Arc<dyn Fn(&changeover_core::registry::PullProgress) + Send + Sync> {
    type Seen = Option<(std::time::Instant, (usize, usize), Option<String>)>;
    let last: std::sync::Mutex<Seen> = std::sync::Mutex::new(None);
    std::sync::Arc::new(move |p| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let counts = p.counts();
        if let Some((at, seen, status)) = &*last {
            let same = *seen == counts && *status == p.status;
            if same && at.elapsed() < std::time::Duration::from_millis(100) {
                return;
            }
        }
        *last = Some((std::time::Instant::now(), counts, p.status.clone()));
        events(RolloutEvent::Pulling {
            progress: p.clone(),
        });
    })
}

/// Builds the images of the services with `build:` on the daemon (each
/// once per content: a context that did not change is not built again),
/// their output told as [`RolloutEvent::Build`]; the services, each naming
/// its built image. The registries of the Dockerfile's base images are
/// given their credentials (a private `FROM` pulls as `image pull` does).
/// A failed build stops everything before any rollout.
pub async fn build_images(
    env: &Environment,
    docker: &Docker,
    services: &[ServiceSpec],
    events: &EventSink,
) -> Result<Vec<ServiceSpec>, Problem> {
    let mut out = Vec::with_capacity(services.len());
    for spec in services {
        let Some(build) = &spec.build else {
            out.push(spec.clone());
            continue;
        };
        let service = format!("{}/{}", spec.stack, spec.name);
        let repository = changeover_core::image::ImageRef::parse(&spec.image)
            .map(|r| r.name)
            .unwrap_or_else(|_| spec.image.clone());
        let tell = |line: &str| {
            events(RolloutEvent::Build {
                service: service.clone(),
                line: line.to_string(),
            })
        };
        let mut credentials = std::collections::HashMap::new();
        let hosts = changeover_docker::build::base_hosts(build);
        for host in &hosts {
            if let (Some(c), _) = env.registries.credential(host).await? {
                credentials.insert(
                    changeover_core::registry::helper_server_url(host),
                    changeover_docker::images::docker_credentials(host, &c),
                );
            }
        }
        let built =
            changeover_docker::build::build(docker, build, &repository, &hosts, credentials, tell)
                .await?;
        events(RolloutEvent::Note {
            message: if built.cached {
                format!(
                    "{service}: {} is built already (its context did not change)",
                    built.reference
                )
            } else {
                format!("{service}: built {}", built.reference)
            },
        });
        let mut spec = spec.clone();
        spec.image = built.reference;
        out.push(spec);
    }
    Ok(out)
}

/// Builds missing `changeover-demo:*` images the services use.
pub async fn ensure_demo_images(docker: &Docker, specs: &[&ServiceSpec]) -> Result<(), Problem> {
    let mut binary = None;
    for spec in specs {
        let (repo, tag) = spec.image_parts();
        if repo != "changeover-demo" || docker.inspect_image(&spec.image).await.is_ok() {
            continue;
        }
        if binary.is_none() {
            binary = Some(BinaryImage::load()?);
        }
        if let Some(b) = &binary {
            let unhealthy = tag.ends_with("-unhealthy");
            ensure_demo_image(docker, b, &tag, unhealthy).await?;
        }
    }
    Ok(())
}

/// Builds the sandbox's demo images (v1, v2) when missing.
pub async fn ensure_sandbox_images(docker: &Docker) -> Result<(), Problem> {
    let b = BinaryImage::load()?;
    for v in ["v1", "v2"] {
        ensure_demo_image(docker, &b, v, false).await?;
    }
    Ok(())
}

/// Deploys every service of a stack, one after the other. Every image and
/// port is checked before the first rollout starts.
pub async fn deploy_stack(
    env: &Environment,
    stack: &Stack,
    events: EventSink,
) -> Result<Vec<RolloutOutcome>, Problem> {
    let _busy = env.busy();
    let docker = env.docker().await?;
    let built = build_images(env, &docker, &stack.services, &events).await?;
    let stack = &Stack {
        services: built,
        ..stack.clone()
    };
    let specs: Vec<&ServiceSpec> = stack.services.iter().collect();
    ensure_demo_images(&docker, &specs).await?;
    for spec in &stack.services {
        follow_pull_policy(env, &docker, spec, &events).await?;
    }
    let d = deployer(env, events).await?;
    for spec in &stack.services {
        d.runtime.resolve_image(&spec.image).await?;
        d.check_ports(spec).await?;
    }
    let mut outcomes = Vec::new();
    for spec in &stack.services {
        outcomes.push(
            d.run(
                &spec.stack,
                &spec.name,
                Goal::Deploy(Box::new(spec.clone())),
            )
            .await?,
        );
    }
    Ok(outcomes)
}

/// What `spec`'s `pull_policy` asks before a deploy: `always` pulls the
/// image (a tag pushed again goes out; its progress told as pulls are),
/// `never` refuses an image the daemon does not have, before anything
/// changes. A built image (`build:`) is never pulled.
async fn follow_pull_policy(
    env: &Environment,
    docker: &changeover_docker::Docker,
    spec: &ServiceSpec,
    events: &EventSink,
) -> Result<(), Problem> {
    use changeover_core::service::PullPolicy;
    match spec.pull_policy {
        Some(PullPolicy::Always) if spec.build.is_none() => {
            let tell = pull_progress(events.clone());
            env.registries
                .pull(env, &spec.image, |p| tell(p))
                .await
                .map(|_| ())
        }
        Some(PullPolicy::Never) if spec.build.is_none() => {
            match docker.inspect_image(&spec.image).await {
                Ok(_) => Ok(()),
                Err(_) => Err(Problem::new(
                    ProblemCode::ImageNotFound,
                    format!(
                        "{}: pull_policy is never, and the daemon has no image {}: pull it (changeover image pull {}) or build it first",
                        spec.qualified(),
                        spec.image,
                        spec.image
                    ),
                )),
            }
        }
        _ => Ok(()),
    }
}

/// Deploys the sandbox stack: builds the demo images, then three replicas
/// of v1 on port 18080, or the next port the daemon's host has free.
/// Returns the port.
pub async fn sandbox(env: &Environment, events: EventSink) -> Result<u16, Problem> {
    let report =
        changeover_core::stack::parse(changeover_core::stack::SANDBOX, "sandbox.yml", None);
    let Some(mut stack) = report.stack else {
        return Err(Problem::new(
            ProblemCode::InvalidStack,
            "the built-in sandbox stack is invalid",
        ));
    };
    ensure_sandbox_images(&env.docker().await?).await?;
    let edge = env.ensure_edge().await?;
    let mut chosen = None;
    for port in 18080u16..18180 {
        let free = edge
            .call(Request::PortCheck {
                port,
                service: "sandbox/web".into(),
                udp: Default::default(),
            })
            .await?;
        if free == Response::Ok {
            chosen = Some(port);
            break;
        }
    }
    let Some(port) = chosen else {
        return Err(Problem::new(
            ProblemCode::PortInUse,
            "ports 18080 to 18179 are all taken on the daemon's host; free one for the sandbox",
        ));
    };
    for s in stack.services.iter_mut() {
        for p in s.ports.iter_mut() {
            p.host = port;
        }
    }
    deploy_stack(env, &stack, events).await?;
    Ok(port)
}

async fn record_of(
    d: &Deployer<DockerRuntime, Edge>,
    name: &str,
) -> Result<ServiceRecord, Problem> {
    let (stack, service) = split_qualified(name)?;
    d.load(stack, service).await?.0.ok_or_else(|| {
        Problem::new(
            ProblemCode::UnknownService,
            format!("no service {name} on this environment (see `changeover service ls`)"),
        )
    })
}

/// Rolls `STACK/SERVICE` to another tag of its image, with its own
/// strategy or, for this deploy and the ones after, `strategy`.
pub async fn deploy_tag(
    env: &Environment,
    name: &str,
    tag: &str,
    strategy: Option<Strategy>,
    stop: Option<PullStop>,
    events: EventSink,
) -> Result<RolloutOutcome, Problem> {
    roll_to_tag(env, name, tag, strategy, false, stop, events).await
}

/// [`deploy_tag`], pulling the tag first: the registry's may point to a
/// newer image than the daemon's copy (the pull's progress is told as
/// [`RolloutEvent::Pulling`]).
pub async fn pull_and_deploy_tag(
    env: &Environment,
    name: &str,
    tag: &str,
    strategy: Option<Strategy>,
    stop: Option<PullStop>,
    events: EventSink,
) -> Result<RolloutOutcome, Problem> {
    roll_to_tag(env, name, tag, strategy, true, stop, events).await
}

async fn roll_to_tag(
    env: &Environment,
    name: &str,
    tag: &str,
    strategy: Option<Strategy>,
    pull: bool,
    stop: Option<PullStop>,
    events: EventSink,
) -> Result<RolloutOutcome, Problem> {
    if tag.is_empty() || tag.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
        return Err(Problem::new(
            ProblemCode::ImageNotFound,
            format!("{tag:?} is not an image tag"),
        ));
    }
    let _busy = env.busy();
    let d = deployer_stopping(env, events.clone(), stop.clone()).await?;
    let record = record_of(&d, name).await?;
    let mut spec = record.spec.with_tag(tag);
    if let Some(s) = strategy {
        spec.strategy = s;
    }
    let pull = pull || spec.pull_policy == Some(changeover_core::service::PullPolicy::Always);
    if pull {
        let tell = pull_progress(events);
        let pulling = env.registries.pull(env, &spec.image, |p| tell(p));
        PullStop::or_stopped(stop, &spec.image, pulling).await?;
    }
    ensure_demo_images(&d.runtime.docker, &[&spec]).await?;
    d.run(
        &spec.stack,
        &spec.name,
        Goal::Deploy(Box::new(spec.clone())),
    )
    .await
}

/// Deploys a changed definition of one service (the GUI's forms).
pub async fn deploy_spec(
    env: &Environment,
    spec: ServiceSpec,
    events: EventSink,
) -> Result<RolloutOutcome, Problem> {
    let _busy = env.busy();
    let docker = env.docker().await?;
    follow_pull_policy(env, &docker, &spec, &events).await?;
    ensure_demo_images(&docker, &[&spec]).await?;
    let d = deployer(env, events).await?;
    d.run(
        &spec.stack.clone(),
        &spec.name.clone(),
        Goal::Deploy(Box::new(spec)),
    )
    .await
}

/// The records of every service on the environment (none when the edge was
/// never set up here).
pub(crate) async fn records(env: &Environment) -> Result<Vec<ServiceRecord>, Problem> {
    let Some(edge) = env.edge().await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in service_names(&edge).await? {
        let (stack, service) = split_qualified(&name)?;
        if let Some(record) = load_record(&edge, stack, service).await?.0 {
            out.push(record);
        }
    }
    Ok(out)
}

async fn service_names(edge: &Edge) -> Result<Vec<String>, Problem> {
    let keys = match expect_ok(
        edge.call(Request::DocList {
            prefix: "services/".into(),
        })
        .await?,
    )? {
        Response::Keys { keys } => keys,
        other => {
            return Err(Problem::new(
                ProblemCode::EdgeError,
                format!("the edge answered {other:?} when asked for its services"),
            ))
        }
    };
    Ok(keys
        .into_iter()
        .map(|k| k.trim_start_matches("services/").to_string())
        .collect())
}

/// The form for editing `STACK/SERVICE`, or a blank one for a new service in
/// `STACK` when `name` has no `/`.
pub async fn service_form(env: &Environment, name: &str) -> Result<ServiceForm, Problem> {
    if !name.contains('/') {
        return Ok(ServiceForm::blank(name));
    }
    let (stack, service) = split_qualified(name)?;
    records(env)
        .await?
        .into_iter()
        .find(|r| r.spec.stack == stack && r.spec.name == service)
        .map(|r| ServiceForm::from_spec(&r.spec))
        .ok_or_else(|| {
            Problem::new(
                ProblemCode::UnknownService,
                format!("no service {name} on this environment"),
            )
        })
}

/// Checks a form against the environment: the rules of a stack file, plus
/// "a new service must not exist yet" and "an edited one must".
pub async fn check_form(env: &Environment, form: &ServiceForm) -> Result<FormCheck, Problem> {
    let stack = form.stack.trim();
    let name = form.name.trim();
    let others: Vec<ServiceSpec> = records(env)
        .await?
        .into_iter()
        .filter(|r| r.spec.stack == stack)
        .map(|r| r.spec)
        .collect();
    let existing = others.iter().find(|s| s.name == name);
    let refuse = |field: &str, message: String| FormCheck {
        spec: None,
        errors: vec![FormIssue {
            field: field.into(),
            message,
        }],
        warnings: Vec::new(),
    };
    match (form.editing, existing) {
        (false, Some(_)) => Ok(refuse(
            "name",
            format!("{stack}/{name} already exists; open it and press Edit to change it"),
        )),
        (true, None) => Ok(refuse(
            "",
            format!("{stack}/{name} is not on this environment any more"),
        )),
        _ => Ok(form::check(form, existing, &others)),
    }
}

/// Deploys what a form describes (creating the service or rolling it to the
/// changed definition). A form with problems changes nothing.
pub async fn deploy_form(
    env: &Environment,
    form: &ServiceForm,
    events: EventSink,
) -> Result<RolloutOutcome, Problem> {
    let checked = check_form(env, form).await?;
    match checked.spec {
        Some(spec) if checked.errors.is_empty() => deploy_spec(env, spec, events).await,
        _ => Err(Problem::new(
            ProblemCode::InvalidStack,
            std::iter::once(format!(
                "the service form has {} problem(s); nothing was changed",
                checked.errors.len()
            ))
            .chain(checked.errors.iter().map(|e| {
                if e.field.is_empty() {
                    format!("  {}", e.message)
                } else {
                    format!("  {}: {}", e.field, e.message)
                }
            }))
            .collect::<Vec<_>>()
            .join("\n"),
        )),
    }
}

/// Every service of `stack` on the environment as a Compose file that
/// `changeover stack deploy -f` reads back into the same definitions.
pub async fn export_stack(env: &Environment, stack: &str) -> Result<String, Problem> {
    let mut services: Vec<ServiceSpec> = records(env)
        .await?
        .into_iter()
        .filter(|r| r.spec.stack == stack)
        .map(|r| r.spec)
        .collect();
    if services.is_empty() {
        return Err(Problem::new(
            ProblemCode::UnknownService,
            format!("no stack {stack:?} on this environment (see `changeover service ls`)"),
        ));
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(changeover_core::compose::to_compose(&Stack::from_services(
        stack, services,
    )))
}

/// Rolls `STACK/SERVICE` back to its previous release.
pub async fn rollback(
    env: &Environment,
    name: &str,
    events: EventSink,
) -> Result<RolloutOutcome, Problem> {
    let (stack, service) = split_qualified(name)?;
    let _busy = env.busy();
    let d = deployer(env, events).await?;
    record_of(&d, name).await?;
    d.run(stack, service, Goal::Rollback).await
}

/// Every service on the environment with its containers. Empty when the
/// edge was never set up here.
pub async fn services(env: &Environment) -> Result<Vec<ServiceView>, Problem> {
    let Some(edge) = env.edge().await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in service_names(&edge).await? {
        // A record deleted between the listing and the read is gone: skip it.
        match service_view(&edge, &name).await {
            Ok(view) => out.push(view),
            Err(p) if p.code == ProblemCode::UnknownService => {}
            Err(p) => return Err(p),
        }
    }
    Ok(out)
}

/// The release `name` (`stack/service`) runs now, from its record on the
/// edge (`None` before its first deploy).
pub async fn current_release(env: &Environment, name: &str) -> Result<Option<u32>, Problem> {
    let (stack, service) = split_qualified(name)?;
    let Some(edge) = env.edge().await? else {
        return Ok(None);
    };
    Ok(load_record(&edge, stack, service)
        .await?
        .0
        .and_then(|r| r.current))
}

/// Takes targets whose containers are gone off the routes of `name`
/// (`stack/service`); the names removed.
pub async fn prune(env: &Environment, name: &str) -> Result<Vec<String>, Problem> {
    let (stack, service) = split_qualified(name)?;
    let Some(edge) = env.edge().await? else {
        return Ok(Vec::new());
    };
    let d = deployer_on(edge, std::sync::Arc::new(|_| {}), None);
    match d.load(stack, service).await?.0 {
        Some(record) => d.prune_gone(&record.spec).await,
        None => Ok(Vec::new()),
    }
}

/// `(stack/service, owner)` of every rollout lock someone holds on the
/// environment's edge (an owner on this machine whose process is gone holds
/// nothing).
pub async fn locks_held(env: &Environment) -> Result<Vec<(String, String)>, Problem> {
    let Some(edge) = env.edge().await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in service_names(&edge).await? {
        let (stack, service) = split_qualified(&name)?;
        if let Some(h) = lock_of(&edge, stack, service).await? {
            out.push((name.clone(), h.owner));
        }
    }
    Ok(out)
}

pub(crate) async fn lock_of(
    edge: &Edge,
    stack: &str,
    service: &str,
) -> Result<Option<LockHolder>, Problem> {
    Ok(
        match edge
            .call(Request::LockGet {
                key: rollout_lock_key(stack, service),
            })
            .await?
        {
            // A holder on this machine whose process is gone holds nothing:
            // the rollout it ran is interrupted, and the next one takes over
            // at once.
            Response::LockHeld { holder } if !owner_gone(&holder.owner) => Some(holder),
            _ => None,
        },
    )
}

/// One service with its containers.
pub async fn service(env: &Environment, name: &str) -> Result<ServiceView, Problem> {
    split_qualified(name)?;
    let Some(edge) = env.edge().await? else {
        return Err(Problem::new(
            ProblemCode::UnknownService,
            format!("no service {name} on this environment (nothing was deployed here yet)"),
        ));
    };
    service_view(&edge, name).await
}

async fn service_view(edge: &Edge, name: &str) -> Result<ServiceView, Problem> {
    let (stack, service) = split_qualified(name)?;
    let Some(record) = load_record(edge, stack, service).await?.0 else {
        return Err(Problem::new(
            ProblemCode::UnknownService,
            format!("no service {name} on this environment (see `changeover service ls`)"),
        ));
    };
    let runtime = DockerRuntime::new(&edge.docker);
    let containers = runtime.containers(stack, service).await?;
    let routes = routes_of(edge, name).await?;
    let mut states: BTreeMap<String, Vec<TargetState>> = BTreeMap::new();
    for r in &routes {
        for t in &r.targets {
            states.entry(t.spec.id.clone()).or_default().push(t.state);
        }
    }
    let lock = lock_of(edge, stack, service).await?;
    let port_count = record.spec.ports.len();
    let parse = |i: &str| changeover_core::image::ImageRef::parse(i).ok();
    Ok(ServiceView {
        name: name.to_string(),
        image: parse(&record.spec.image),
        release_images: record
            .releases
            .iter()
            .filter_map(|r| parse(&r.image).map(|i| (r.number, i)))
            .collect(),
        containers: containers
            .into_iter()
            .map(|c| {
                let s = states.get(&c.name);
                ContainerView {
                    routed: port_count > 0
                        && s.is_some_and(|s| {
                            s.len() == port_count && s.iter().all(|x| *x == TargetState::Healthy)
                        }),
                    edge_state: s.and_then(|s| s.first().copied()),
                    name: c.name,
                    id: c.id,
                    release: c.release,
                    slot: c.slot,
                    running: c.running,
                    health: c.health,
                }
            })
            .collect(),
        record,
        rollout_lock: lock,
    })
}
