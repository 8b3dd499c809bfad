//! Traffic between a service's releases: what each route does now and what
//! each release served (`traffic show`), maintenance mode, a weighted split
//! and an all-or-nothing switch. Each change is one `traffic-set` per route
//! on the edge, which applies it to the next request.

use std::collections::BTreeMap;

use changeover_core::edge::{Request, RouteStatus, Share, TargetState, TrafficPolicy};
use changeover_core::rollout::{expect_ok, load_record, EdgeControl};
use changeover_core::service::{split_qualified, ServiceRecord, TrafficView};
use changeover_core::{Problem, ProblemCode};

use crate::edge::Edge;
use crate::Docker;

async fn load(
    docker: &Docker,
    name: &str,
) -> Result<(Edge, ServiceRecord, Vec<RouteStatus>), Problem> {
    let (stack, service) = split_qualified(name)?;
    let unknown = || {
        Problem::new(
            ProblemCode::UnknownService,
            format!("no service {name} on this environment (see `changeover service ls`)"),
        )
    };
    let edge = Edge::existing(docker).await.ok_or_else(unknown)?;
    let record = load_record(&edge, stack, service)
        .await?
        .0
        .ok_or_else(unknown)?;
    let routes = edge.routes_of(name).await?;
    if routes.is_empty() {
        return Err(Problem::new(
            ProblemCode::UnknownService,
            format!("{name} publishes no port, so the edge carries none of its traffic"),
        ));
    }
    Ok((edge, record, routes))
}

/// What the edge does with a service's traffic and what each release served.
pub async fn show(docker: &Docker, name: &str) -> Result<TrafficView, Problem> {
    let (_, record, routes) = load(docker, name).await?;
    Ok(TrafficView {
        service: name.to_string(),
        current: record.current,
        routes,
    })
}

async fn apply(
    edge: &Edge,
    routes: &[RouteStatus],
    change: impl Fn(&mut TrafficPolicy),
) -> Result<(), Problem> {
    for r in routes {
        let mut policy = r.policy.clone();
        change(&mut policy);
        expect_ok(
            edge.call(Request::TrafficSet {
                port: r.spec.port,
                policy,
            })
            .await?,
        )?;
    }
    Ok(())
}

/// Pauses the service behind a 503 page with `message` (`None` resumes it).
/// Its containers are not touched.
pub async fn maintenance(
    docker: &Docker,
    name: &str,
    message: Option<String>,
) -> Result<(), Problem> {
    if message.as_ref().is_some_and(|m| m.trim().is_empty()) {
        return Err(Problem::new(
            ProblemCode::InvalidTraffic,
            "the maintenance message is empty; say what users should know",
        ));
    }
    let (edge, _, routes) = load(docker, name).await?;
    apply(&edge, &routes, |p| p.maintenance = message.clone()).await
}

/// Releases with a healthy target on every route, and each release's
/// unhealthy targets.
fn live_releases(routes: &[RouteStatus]) -> (Vec<u32>, BTreeMap<u32, Vec<String>>) {
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
                            "{} ({:?}{})",
                            t.spec.id,
                            t.state,
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

/// Resolves RELEASE as written by the user: a release number, or a tag that
/// exactly one live release runs.
fn resolve(record: &ServiceRecord, live: &[u32], wanted: &str) -> Result<u32, Problem> {
    if let Ok(n) = wanted.parse::<u32>() {
        if record.release(n).is_some() {
            return Ok(n);
        }
    }
    let by_tag: Vec<u32> = record
        .releases
        .iter()
        .filter(|r| {
            live.contains(&r.number) && changeover_core::service::split_image(&r.image).1 == wanted
        })
        .map(|r| r.number)
        .collect();
    match by_tag.as_slice() {
        [n] => Ok(*n),
        [] => Err(Problem::new(
            ProblemCode::InvalidTraffic,
            format!(
                "no release {wanted:?} of {} (see `changeover service inspect`)",
                record.spec.qualified()
            ),
        )),
        _ => Err(Problem::new(
            ProblemCode::InvalidTraffic,
            format!("several live releases run tag {wanted:?}; name one by its number"),
        )),
    }
}

/// Sends every new request to one release (an atomic switch on each route).
/// Refused when that release has no healthy target on a route.
pub async fn switch(docker: &Docker, name: &str, to: &str) -> Result<u32, Problem> {
    let (edge, record, routes) = load(docker, name).await?;
    let (live, unhealthy) = live_releases(&routes);
    let target = resolve(&record, &live, to)?;
    if !live.contains(&target) {
        let why = unhealthy
            .get(&target)
            .map(|u| format!("; unhealthy: {}", u.join(", ")))
            .unwrap_or_else(|| "; it has no container on the edge".into());
        return Err(Problem::new(
            ProblemCode::InvalidTraffic,
            format!("release {target} of {name} is not healthy on every route, so traffic stays where it is{why}"),
        ));
    }
    apply(&edge, &routes, |p| {
        p.weights = live
            .iter()
            .map(|r| Share {
                release: *r,
                weight: u32::from(*r == target) * 100,
            })
            .collect();
    })
    .await?;
    Ok(target)
}

/// Shares new requests between the service's two live releases: `percent`
/// to the newer one, the rest to the older (sticky per client).
pub async fn split(docker: &Docker, name: &str, percent: i64) -> Result<(u32, u32), Problem> {
    if !(0..=100).contains(&percent) {
        return Err(Problem::new(
            ProblemCode::InvalidTraffic,
            format!("{percent} is not a percentage from 0 to 100"),
        ));
    }
    let (edge, _, routes) = load(docker, name).await?;
    let (live, _) = live_releases(&routes);
    let [old, new] = live[..] else {
        return Err(Problem::new(
            ProblemCode::InvalidTraffic,
            format!(
                "a split needs exactly two live releases; {name} has {} ({})",
                live.len(),
                live.iter()
                    .map(|r| format!("release {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let p = percent as u32;
    apply(&edge, &routes, |policy| {
        policy.weights = vec![
            Share {
                release: old,
                weight: 100 - p,
            },
            Share {
                release: new,
                weight: p,
            },
        ];
    })
    .await?;
    Ok((old, new))
}
