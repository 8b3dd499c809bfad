//! The rollout state machine against a fake daemon and a fake edge, with
//! paused time. The fakes share one world so the edge's health answers
//! follow what "runs" on the daemon; every operation re-checks the promise
//! that capacity never drops below the replica count once a release is live.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use super::*;
use crate::edge::{
    EdgeErrorCode, LockHolder, Request, Response, RouteSpec, TargetSpec, TargetState, TargetStatus,
    PROTOCOL_VERSION,
};
use crate::service::PortMapping;

#[derive(Default)]
struct World {
    containers: Vec<SlotContainer>,
    images: BTreeSet<String>,
    /// Releases whose containers never pass the edge's check.
    never_healthy: BTreeSet<u32>,
    /// Releases whose containers exit right after starting.
    exits: BTreeSet<u32>,
    routes: BTreeMap<u16, Vec<TargetSpec>>,
    /// The routes as last set.
    route_specs: BTreeMap<u16, RouteSpec>,
    policies: BTreeMap<u16, crate::edge::TrafficPolicy>,
    docs: BTreeMap<String, (serde_json::Value, u64)>,
    lock: Option<(String, String)>,
    ops: Vec<String>,
    /// Fewest healthy routed targets seen after each operation, once traffic flowed.
    min_routed: Option<usize>,
    next_id: u32,
}

impl World {
    fn healthy(&self, name: &str) -> bool {
        self.containers
            .iter()
            .any(|c| c.name == name && c.running && !self.never_healthy.contains(&c.release))
    }

    fn routed_healthy(&self) -> usize {
        self.routes
            .values()
            .next()
            .map(|ts| ts.iter().filter(|t| self.healthy(&t.id)).count())
            .unwrap_or(0)
    }

    fn op(&mut self, what: String) {
        self.ops.push(what);
        let n = self.routed_healthy();
        if n > 0 || self.min_routed.is_some() {
            self.min_routed = Some(self.min_routed.map_or(n, |m| m.min(n)));
        }
    }
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
}

impl Runtime for Fake {
    async fn resolve_image(&self, image: &str) -> Result<String, Problem> {
        if self.world().images.contains(image) {
            Ok(format!("sha256:{image}"))
        } else {
            Err(Problem::new(
                ProblemCode::ImageNotFound,
                format!("no image {image}"),
            ))
        }
    }
    async fn prepare(&self, _spec: &ServiceSpec) -> Result<(), Problem> {
        Ok(())
    }
    async fn containers(
        &self,
        _stack: &str,
        _service: &str,
    ) -> Result<Vec<SlotContainer>, Problem> {
        Ok(self.world().containers.clone())
    }
    async fn create(&self, release: &Release, slot: u32) -> Result<String, Problem> {
        let mut w = self.world();
        w.next_id += 1;
        let id = format!("id{}", w.next_id);
        let name = container_name(&release.spec, release.number, slot);
        w.containers.push(SlotContainer {
            id: id.clone(),
            name: name.clone(),
            release: release.number,
            slot,
            running: false,
            exit_code: None,
            ip: None,
            health: None,
            health_output: None,
        });
        w.op(format!("create {name}"));
        Ok(id)
    }
    async fn start(&self, id: &str) -> Result<(), Problem> {
        let mut w = self.world();
        let exits = w.exits.clone();
        let c = w.containers.iter_mut().find(|c| c.id == id).unwrap();
        if exits.contains(&c.release) {
            c.running = false;
            c.exit_code = Some(1);
        } else {
            c.running = true;
            c.ip = Some(format!("10.0.0.{}", &id[2..]));
        }
        let name = c.name.clone();
        w.op(format!("start {name}"));
        Ok(())
    }
    async fn inspect(&self, id: &str) -> Result<SlotContainer, Problem> {
        Ok(self
            .world()
            .containers
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .clone())
    }
    async fn stop(&self, id: &str) -> Result<(), Problem> {
        let mut w = self.world();
        let c = w.containers.iter_mut().find(|c| c.id == id).unwrap();
        c.running = false;
        let name = c.name.clone();
        w.op(format!("stop {name}"));
        Ok(())
    }
    async fn remove(&self, id: &str) -> Result<(), Problem> {
        let mut w = self.world();
        let name = w
            .containers
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .name
            .clone();
        w.containers.retain(|c| c.id != id);
        w.op(format!("remove {name}"));
        Ok(())
    }
    async fn logs(&self, _id: &str, _lines: usize) -> String {
        "listening on :8080\n".into()
    }
}

impl EdgeControl for Fake {
    async fn call(&self, request: Request) -> Result<Response, Problem> {
        if let Request::TargetAdd { target, .. } = &request {
            if !self.world().healthy(&target.id) {
                // The edge's wait runs out.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
        let mut w = self.world();
        Ok(match request {
            Request::Hello => Response::Hello {
                protocol: PROTOCOL_VERSION,
                version: "test".into(),
                uptime_ms: 0,
                connections: None,
            },
            Request::RouteSet { route } => {
                w.routes.entry(route.port).or_default();
                w.route_specs.insert(route.port, route);
                Response::Ok
            }
            Request::RouteRemove { port } => {
                w.routes.remove(&port);
                Response::Ok
            }
            Request::TrafficSet { port, policy } => {
                w.op(format!("traffic {:?}", weights_of(&policy)));
                w.policies.insert(port, policy);
                Response::Ok
            }
            Request::Routes { .. } => Response::Routes {
                routes: w
                    .routes
                    .iter()
                    .map(|(port, ts)| crate::edge::RouteStatus {
                        spec: RouteSpec {
                            port: *port,
                            service: "s/web".into(),
                            health: Default::default(),
                            drain_timeout_ms: 1000,
                            protocol: Default::default(),
                            udp: Default::default(),
                            timeouts: Default::default(),
                            trusted_proxies: Vec::new(),
                            hosts: Vec::new(),
                            tls: None,
                        },
                        targets: ts.iter().map(|t| status(&w, t)).collect(),
                        policy: w.policies.get(port).cloned().unwrap_or_default(),
                        metrics: Vec::new(),
                    })
                    .collect(),
            },
            Request::TargetAdd { port, target, .. } => {
                let ts = w.routes.entry(port).or_default();
                if !ts.iter().any(|t| t.id == target.id) {
                    ts.push(target.clone());
                }
                let st = status(&w, &target);
                if w.healthy(&target.id) {
                    w.op(format!("route {}", target.id));
                }
                Response::Target { target: st }
            }
            Request::TargetDrain { port, id } | Request::TargetRemove { port, id } => {
                if let Some(ts) = w.routes.get_mut(&port) {
                    ts.retain(|t| t.id != id);
                }
                w.op(format!("unroute {id}"));
                Response::Drained {
                    abandoned: 0,
                    took_ms: 0,
                }
            }
            Request::PortCheck { .. } => Response::Ok,
            Request::DocGet { key } => match w.docs.get(&key) {
                Some((v, r)) => Response::Doc {
                    value: Some(v.clone()),
                    revision: *r,
                },
                None => Response::Doc {
                    value: None,
                    revision: 0,
                },
            },
            Request::DocPut { key, value, expect } => {
                let current = w.docs.get(&key).map(|d| d.1).unwrap_or(0);
                if expect.is_some_and(|e| e != current) {
                    return Ok(Response::Error {
                        code: EdgeErrorCode::Conflict,
                        message: "changed".into(),
                    });
                }
                w.docs.insert(key, (value.clone(), current + 1));
                Response::Doc {
                    value: Some(value),
                    revision: current + 1,
                }
            }
            Request::DocList { .. } => Response::Keys { keys: vec![] },
            Request::DocDelete { key, .. } => {
                w.docs.remove(&key);
                Response::Ok
            }
            Request::Watch { after, .. } => Response::Changed { generation: after },
            Request::LockAcquire {
                key,
                owner,
                take_over,
                ..
            } => match &w.lock {
                Some((k, o)) if *k == key && *o != owner && take_over.as_ref() != Some(o) => {
                    Response::LockHeld {
                        holder: LockHolder {
                            owner: o.clone(),
                            since_ms: 0,
                            expires_in_ms: 10_000,
                        },
                    }
                }
                _ => {
                    w.lock = Some((key, owner.clone()));
                    Response::Locked {
                        holder: LockHolder {
                            owner,
                            since_ms: 0,
                            expires_in_ms: 15_000,
                        },
                    }
                }
            },
            Request::LockGet { .. } => Response::Ok,
            Request::LockRelease { owner, .. } => {
                if w.lock.as_ref().is_some_and(|(_, o)| *o == owner) {
                    w.lock = None;
                }
                Response::Ok
            }
            Request::CertPut { .. } | Request::ConfigSet { .. } => Response::Ok,
            Request::ConfigGet => Response::Config {
                config: Default::default(),
                certificates: Vec::new(),
            },
        })
    }
}

fn weights_of(p: &crate::edge::TrafficPolicy) -> Vec<(u32, u32)> {
    p.weights.iter().map(|s| (s.release, s.weight)).collect()
}

fn status(w: &World, t: &TargetSpec) -> TargetStatus {
    TargetStatus {
        spec: t.clone(),
        state: if w.healthy(&t.id) {
            TargetState::Healthy
        } else {
            TargetState::Adding
        },
        in_flight: 0,
        requests: 0,
        last_check: Some(if w.healthy(&t.id) {
            "GET /health → 200 OK".into()
        } else {
            "GET /health → 503 Service Unavailable".into()
        }),
        healthy_after_ms: Some(5),
    }
}

fn deployer(fake: &Fake, owner: &str) -> (Deployer<Fake, Fake>, Arc<Mutex<Vec<RolloutEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        Deployer {
            runtime: fake.clone(),
            edge: fake.clone(),
            owner: owner.into(),
            now_ms: || 1_700_000_000_000,
            owner_gone: |owner| owner == "dead (pid 1)",
            events: Arc::new(move |e| sink.lock().unwrap().push(e)),
        },
        events,
    )
}

fn spec(tag: &str, replicas: u32) -> ServiceSpec {
    let mut s = ServiceSpec::new("s", "web", &format!("app:{tag}"));
    s.replicas = replicas;
    s.ports = vec![PortMapping::tcp(18080, 8080)];
    s.deploy_timeout_ms = 10_000;
    s
}

fn fake_with_images(tags: &[&str]) -> Fake {
    let fake = Fake::default();
    for t in tags {
        fake.world().images.insert(format!("app:{t}"));
    }
    fake
}

fn running(fake: &Fake) -> Vec<String> {
    let mut v: Vec<String> = fake
        .world()
        .containers
        .iter()
        .filter(|c| c.running)
        .map(|c| c.name.clone())
        .collect();
    v.sort();
    v
}

fn record(fake: &Fake) -> ServiceRecord {
    let w = fake.world();
    serde_json::from_value(w.docs.get("services/s/web").unwrap().0.clone()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn first_deploy_creates_and_routes_every_replica() {
    let fake = fake_with_images(&["v1"]);
    let (d, _) = deployer(&fake, "me");
    let out = d
        .run("s", "web", Goal::Deploy(Box::new(spec("v1", 3))))
        .await
        .unwrap();
    assert_eq!(out.release, 1);
    assert_eq!(
        running(&fake),
        vec!["s-web-r1-s0", "s-web-r1-s1", "s-web-r1-s2"]
    );
    assert_eq!(fake.world().routed_healthy(), 3, "every replica is routed");
    let r = record(&fake);
    assert_eq!(r.current, Some(1));
    assert_eq!(r.releases[0].result, ReleaseResult::Succeeded);
    assert!(r.rollout.is_none(), "no rollout is left pending");
    assert!(fake.world().lock.is_none(), "the lock is released");
}

#[tokio::test(start_paused = true)]
async fn rolling_replaces_slot_by_slot_and_never_drops_capacity() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, events) = deployer(&fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 3))))
        .await
        .unwrap();
    fake.world().ops.clear();
    fake.world().min_routed = None;
    let out = d
        .run("s", "web", Goal::Deploy(Box::new(spec("v2", 3))))
        .await
        .unwrap();
    assert_eq!(out.release, 2);
    assert_eq!(
        running(&fake),
        vec!["s-web-r2-s0", "s-web-r2-s1", "s-web-r2-s2"]
    );
    let ops = fake.world().ops.clone();
    let pos = |s: &str| {
        ops.iter()
            .position(|o| o == s)
            .unwrap_or_else(|| panic!("{s} in {ops:?}"))
    };
    for slot in 0..3 {
        assert!(
            pos(&format!("route s-web-r2-s{slot}")) < pos(&format!("unroute s-web-r1-s{slot}")),
            "slot {slot}: the new container is routed before the old one drains: {ops:?}"
        );
        assert!(
            pos(&format!("unroute s-web-r1-s{slot}")) < pos(&format!("stop s-web-r1-s{slot}")),
            "slot {slot}: the old container drains before it stops"
        );
    }
    assert!(
        pos("route s-web-r2-s0") < pos("create s-web-r2-s1"),
        "with parallelism 1, slot 1 starts once slot 0's new container is routed"
    );
    assert!(
        pos("stop s-web-r1-s0") < pos("create s-web-r2-s2"),
        "an old container's stop overlaps the next slot only, never two: {ops:?}"
    );
    assert!(
        fake.world().min_routed.unwrap() >= 3,
        "capacity never drops below 3 routed healthy targets: {ops:?}"
    );
    let e = events.lock().unwrap();
    assert!(
        e.iter().any(|e| matches!(
            e,
            RolloutEvent::Slot {
                phase: SlotPhase::Done,
                timings: Some(_),
                ..
            }
        )),
        "finished slots report their timings"
    );
    let r = record(&fake);
    assert_eq!(r.releases[0].result, ReleaseResult::Superseded);
    assert_eq!(
        fake.world().containers.len(),
        6,
        "old release is kept stopped for rollback"
    );
}

#[tokio::test(start_paused = true)]
async fn a_never_healthy_release_fails_and_every_slot_returns_to_the_old_one() {
    let fake = fake_with_images(&["v1", "v3"]);
    let (d, _) = deployer(&fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 3))))
        .await
        .unwrap();
    fake.world().never_healthy.insert(2);
    fake.world().min_routed = None;
    let err = d
        .run("s", "web", Goal::Deploy(Box::new(spec("v3", 3))))
        .await
        .unwrap_err();
    assert_eq!(err.code, ProblemCode::RolloutFailed);
    assert!(
        err.message.contains("slot 0 of release 2"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("503"),
        "the last health check is shown: {}",
        err.message
    );
    assert!(
        err.message.contains("listening on :8080"),
        "the log tail is shown"
    );
    assert_eq!(
        running(&fake),
        vec!["s-web-r1-s0", "s-web-r1-s1", "s-web-r1-s2"]
    );
    assert!(
        !fake.world().containers.iter().any(|c| c.release == 2),
        "the failed release's containers are removed"
    );
    assert!(
        fake.world().min_routed.unwrap() >= 3,
        "capacity never dropped"
    );
    let r = record(&fake);
    assert_eq!(r.current, Some(1));
    assert_eq!(
        r.spec.image, "app:v1",
        "a failed definition does not stay in force"
    );
    assert!(matches!(r.releases[1].result, ReleaseResult::Failed { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_container_that_exits_fails_the_rollout_with_its_exit_code() {
    let fake = fake_with_images(&["v1", "bad"]);
    let (d, _) = deployer(&fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 2))))
        .await
        .unwrap();
    fake.world().exits.insert(2);
    let err = d
        .run("s", "web", Goal::Deploy(Box::new(spec("bad", 2))))
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("exited right after starting (exit code 1)"),
        "{}",
        err.message
    );
    assert_eq!(running(&fake), vec!["s-web-r1-s0", "s-web-r1-s1"]);
}

#[tokio::test(start_paused = true)]
async fn rollback_starts_the_kept_containers_without_creating_any() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, _) = deployer(&fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 2))))
        .await
        .unwrap();
    d.run("s", "web", Goal::Deploy(Box::new(spec("v2", 2))))
        .await
        .unwrap();
    fake.world().ops.clear();
    let out = d.run("s", "web", Goal::Rollback).await.unwrap();
    assert_eq!(out.release, 1);
    assert_eq!(running(&fake), vec!["s-web-r1-s0", "s-web-r1-s1"]);
    assert!(
        !fake.world().ops.iter().any(|o| o.starts_with("create")),
        "a rollback reuses the stopped containers: {:?}",
        fake.world().ops
    );
    assert_eq!(record(&fake).current, Some(1));
    assert_eq!(
        record(&fake).spec.image,
        "app:v1",
        "the record's definition follows the rollback"
    );
    assert_eq!(
        fake.world().containers.len(),
        4,
        "release 2 stays kept (stopped) so rolling forward again is fast"
    );
    let err = d.run("s", "web", Goal::Rollback).await.unwrap_err();
    assert_eq!(
        err.code,
        ProblemCode::NoPreviousRelease,
        "nothing before release 1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_client_is_refused_while_a_rollout_holds_the_lock() {
    let fake = fake_with_images(&["v1"]);
    fake.world().lock = Some(("rollout/s/web".into(), "ci@build (pid 7)".into()));
    let (d, _) = deployer(&fake, "me");
    let err = d
        .run("s", "web", Goal::Deploy(Box::new(spec("v1", 1))))
        .await
        .unwrap_err();
    assert_eq!(err.code, ProblemCode::RolloutInProgress);
    assert!(
        err.message.contains("ci@build (pid 7)"),
        "names who holds it: {}",
        err.message
    );
    assert!(fake.world().containers.is_empty(), "nothing was created");
}

#[tokio::test(start_paused = true)]
async fn the_lock_of_a_client_that_no_longer_runs_is_taken_over() {
    let fake = fake_with_images(&["v1"]);
    fake.world().lock = Some(("rollout/s/web".into(), "dead (pid 1)".into()));
    let (d, events) = deployer(&fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 1))))
        .await
        .unwrap();
    assert!(
        events.lock().unwrap().iter().any(
            |e| matches!(e, RolloutEvent::Note { message } if message.contains("taking over"))
        ),
        "the takeover is said"
    );
}

#[tokio::test(start_paused = true)]
async fn missing_images_are_refused_before_anything_changes() {
    let fake = fake_with_images(&[]);
    let (d, _) = deployer(&fake, "me");
    let err = d
        .run("s", "web", Goal::Deploy(Box::new(spec("nope", 1))))
        .await
        .unwrap_err();
    assert_eq!(err.code, ProblemCode::ImageNotFound);
    assert!(fake.world().containers.is_empty() && fake.world().docs.is_empty());
}

/// Leaves the world as a client killed after slot 0 of 1 → 2 would.
async fn half_done(fake: &Fake) {
    let (d, _) = deployer(fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 2))))
        .await
        .unwrap();
    d.run("s", "web", Goal::Deploy(Box::new(spec("v2", 2))))
        .await
        .unwrap();
    // Put slot 1 back on release 1, and mark the rollout as still pending.
    let mut w = fake.world();
    for c in w.containers.iter_mut() {
        if c.slot == 1 {
            c.running = c.release == 1;
        }
    }
    w.routes
        .get_mut(&18080)
        .unwrap()
        .retain(|t| t.id != "s-web-r2-s1");
    let (mut value, rev) = w.docs.get("services/s/web").unwrap().clone();
    value["rollout"] = serde_json::json!({"from": 1, "to": 2, "owner": "dead", "startedMs": 0});
    value["current"] = serde_json::json!(1);
    value["releases"][1]["result"] = serde_json::json!({"kind": "in-progress"});
    value["releases"][0]["result"] = serde_json::json!({"kind": "succeeded"});
    w.docs.insert("services/s/web".into(), (value, rev + 1));
}

#[tokio::test(start_paused = true)]
async fn deploying_again_finishes_a_rollout_left_half_done() {
    let fake = fake_with_images(&["v1", "v2"]);
    half_done(&fake).await;
    let (d, events) = deployer(&fake, "me2");
    let out = d
        .run("s", "web", Goal::Deploy(Box::new(spec("v2", 2))))
        .await
        .unwrap();
    assert_eq!(
        out.release, 2,
        "the interrupted release is reused, not renumbered"
    );
    assert_eq!(running(&fake), vec!["s-web-r2-s0", "s-web-r2-s1"]);
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, RolloutEvent::Planned { resumed: true, .. })));
    assert!(record(&fake).rollout.is_none());
}

#[tokio::test(start_paused = true)]
async fn rolling_back_undoes_a_rollout_left_half_done() {
    let fake = fake_with_images(&["v1", "v2"]);
    half_done(&fake).await;
    let (d, _) = deployer(&fake, "me2");
    let out = d.run("s", "web", Goal::Rollback).await.unwrap();
    assert_eq!(out.release, 1);
    assert_eq!(running(&fake), vec!["s-web-r1-s0", "s-web-r1-s1"]);
    assert!(
        !fake.world().containers.iter().any(|c| c.release == 2),
        "the half-done release leaves no orphan containers"
    );
    let r = record(&fake);
    assert_eq!(r.current, Some(1));
    assert!(matches!(r.releases[1].result, ReleaseResult::Failed { .. }));
}

#[tokio::test(start_paused = true)]
async fn scaling_down_is_a_rollout_that_retires_the_extra_slots() {
    let fake = fake_with_images(&["v1"]);
    let (d, _) = deployer(&fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 3))))
        .await
        .unwrap();
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 1))))
        .await
        .unwrap();
    assert_eq!(running(&fake), vec!["s-web-r2-s0"]);
    assert_eq!(fake.world().routed_healthy(), 1);
}

#[tokio::test(start_paused = true)]
async fn deploying_the_same_definition_changes_nothing() {
    let fake = fake_with_images(&["v1"]);
    let (d, _) = deployer(&fake, "me");
    d.run("s", "web", Goal::Deploy(Box::new(spec("v1", 2))))
        .await
        .unwrap();
    fake.world().ops.clear();
    let out = d
        .run("s", "web", Goal::Deploy(Box::new(spec("v1", 2))))
        .await
        .unwrap();
    assert!(out.unchanged, "same spec and image: nothing to do");
    assert_eq!(out.release, 1);
    assert!(
        fake.world().ops.is_empty(),
        "no container was touched: {:?}",
        fake.world().ops
    );
}

// ---- blue-green, canary and explicit traffic control ----

static NOW_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1_700_000_000_000);

fn strategy_spec(tag: &str, strategy: Strategy) -> ServiceSpec {
    let mut s = spec(tag, 3);
    s.strategy = strategy;
    s
}

/// A service on release 1 (rolling first deploy), then `tag` deployed
/// beside it with `strategy`.
async fn beside(fake: &Fake, d: &Deployer<Fake, Fake>, strategy: Strategy) -> RolloutOutcome {
    d.run(
        "s",
        "web",
        Goal::Deploy(Box::new(strategy_spec("v1", strategy))),
    )
    .await
    .unwrap();
    fake.world().ops.clear();
    fake.world().min_routed = None;
    d.run(
        "s",
        "web",
        Goal::Deploy(Box::new(strategy_spec("v2", strategy))),
    )
    .await
    .unwrap()
}

fn weights(fake: &Fake) -> Vec<(u32, u32)> {
    weights_of(
        &fake
            .world()
            .policies
            .get(&18080)
            .cloned()
            .unwrap_or_default(),
    )
}

#[tokio::test(start_paused = true)]
async fn blue_green_starts_the_new_release_beside_the_old_with_no_traffic() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, events) = deployer(&fake, "me");
    let out = beside(&fake, &d, Strategy::BlueGreen).await;
    assert_eq!(out.release, 2);
    assert_eq!(
        running(&fake),
        vec![
            "s-web-r1-s0",
            "s-web-r1-s1",
            "s-web-r1-s2",
            "s-web-r2-s0",
            "s-web-r2-s1",
            "s-web-r2-s2"
        ],
        "both releases run, nothing was stopped"
    );
    assert_eq!(weights(&fake), vec![(1, 100), (2, 0)]);
    let ops = fake.world().ops.clone();
    let pinned = ops.iter().position(|o| o.starts_with("traffic")).unwrap();
    let first_route = ops
        .iter()
        .position(|o| o.starts_with("route s-web-r2"))
        .unwrap();
    assert!(
        pinned < first_route,
        "traffic is pinned to release 1 before release 2 is routed: {ops:?}"
    );
    let r = record(&fake);
    assert_eq!(r.current, Some(1), "release 1 stays current until promoted");
    assert_eq!(r.candidate.as_ref().map(|c| c.release), Some(2));
    assert_eq!(r.release(2).unwrap().result, ReleaseResult::Candidate);
    assert!(r.rollout.is_none());
    let finished = events.lock().unwrap().iter().rev().find_map(|e| match e {
        RolloutEvent::Finished { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert!(
        finished.unwrap().contains("traffic switch s/web --to 2"),
        "says how to switch"
    );
}

#[tokio::test(start_paused = true)]
async fn blue_green_switch_switch_back_and_promote() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, _) = deployer(&fake, "me");
    beside(&fake, &d, Strategy::BlueGreen).await;
    assert_eq!(d.switch("s", "web", "2").await.unwrap(), 2);
    assert_eq!(weights(&fake), vec![(1, 0), (2, 100)]);
    assert!(record(&fake).candidate.unwrap().switched_ms.is_some());
    assert_eq!(
        d.switch("s", "web", "v1").await.unwrap(),
        1,
        "a tag one live release runs names it"
    );
    assert_eq!(weights(&fake), vec![(1, 100), (2, 0)]);
    assert!(
        record(&fake).candidate.unwrap().switched_ms.is_none(),
        "switched back: the standby clock stops"
    );
    d.switch("s", "web", "2").await.unwrap();
    fake.world().min_routed = None;
    let done = d.promote("s", "web").await.unwrap();
    assert_eq!((done.current, done.retired), (2, 1));
    assert_eq!(
        running(&fake),
        vec!["s-web-r2-s0", "s-web-r2-s1", "s-web-r2-s2"]
    );
    assert!(
        weights(&fake).is_empty(),
        "back to every healthy target alike"
    );
    assert!(fake.world().min_routed.unwrap() >= 3, "capacity held");
    let r = record(&fake);
    assert_eq!(r.current, Some(2));
    assert!(r.candidate.is_none());
    assert_eq!(r.release(1).unwrap().result, ReleaseResult::Superseded);
    assert_eq!(r.release(2).unwrap().result, ReleaseResult::Succeeded);
    assert_eq!(
        fake.world().containers.len(),
        6,
        "release 1 is kept stopped for a rollback"
    );
    assert!(fake.world().lock.is_none(), "promote releases its lock");
}

#[tokio::test(start_paused = true)]
async fn canary_gets_its_share_then_splits_and_aborts() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, _) = deployer(&fake, "me");
    beside(&fake, &d, Strategy::Canary).await;
    assert_eq!(weights(&fake), vec![(1, 90), (2, 10)], "the default 10%");
    assert_eq!(d.split("s", "web", 50).await.unwrap(), (1, 2));
    assert_eq!(weights(&fake), vec![(1, 50), (2, 50)]);
    for bad in [-1, 101] {
        let e = d.split("s", "web", bad).await.unwrap_err();
        assert_eq!(e.code, ProblemCode::InvalidTraffic);
        assert!(e.message.contains("0 to 100"), "{e}");
        assert_eq!(weights(&fake), vec![(1, 50), (2, 50)], "nothing changed");
    }
    let done = d.abort("s", "web", None).await.unwrap();
    assert_eq!((done.current, done.retired), (1, 2));
    assert_eq!(
        running(&fake),
        vec!["s-web-r1-s0", "s-web-r1-s1", "s-web-r1-s2"]
    );
    assert!(
        fake.world().containers.iter().all(|c| c.release == 1),
        "the canary's containers are removed"
    );
    assert!(weights(&fake).is_empty());
    let r = record(&fake);
    assert_eq!(r.current, Some(1));
    assert!(r.candidate.is_none());
    assert!(matches!(
        &r.release(2).unwrap().result,
        ReleaseResult::Failed { reason } if reason.contains("aborted by me")
    ));
}

#[tokio::test(start_paused = true)]
async fn nothing_else_deploys_while_a_candidate_runs() {
    let fake = fake_with_images(&["v1", "v2", "v3"]);
    let (d, _) = deployer(&fake, "me");
    beside(&fake, &d, Strategy::Canary).await;
    let before = fake.world().containers.clone();
    let e = d
        .run(
            "s",
            "web",
            Goal::Deploy(Box::new(strategy_spec("v3", Strategy::Canary))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ProblemCode::CandidateLive);
    assert!(e.message.contains("traffic promote s/web"), "{e}");
    let e = d.run("s", "web", Goal::Rollback).await.unwrap_err();
    assert_eq!(e.code, ProblemCode::CandidateLive);
    assert_eq!(fake.world().containers, before, "nothing changed");
    assert_eq!(record(&fake).releases.len(), 2, "no release was recorded");
    let again = d
        .run(
            "s",
            "web",
            Goal::Deploy(Box::new(strategy_spec("v2", Strategy::Canary))),
        )
        .await
        .unwrap();
    assert!(
        again.unchanged,
        "deploying the candidate again repairs it only"
    );
    assert_eq!(weights(&fake), vec![(1, 90), (2, 10)]);
}

#[tokio::test(start_paused = true)]
async fn a_canary_that_never_becomes_healthy_is_removed_and_traffic_never_moves() {
    let fake = fake_with_images(&["v1", "v2"]);
    fake.world().never_healthy.insert(2);
    let (d, _) = deployer(&fake, "me");
    d.run(
        "s",
        "web",
        Goal::Deploy(Box::new(strategy_spec("v1", Strategy::Canary))),
    )
    .await
    .unwrap();
    let e = d
        .run(
            "s",
            "web",
            Goal::Deploy(Box::new(strategy_spec("v2", Strategy::Canary))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ProblemCode::RolloutFailed);
    assert!(e.message.contains("traffic never left release 1"), "{e}");
    assert!(fake.world().containers.iter().all(|c| c.release == 1));
    assert_eq!(running(&fake).len(), 3);
    assert!(weights(&fake).is_empty());
    let r = record(&fake);
    assert_eq!(r.current, Some(1));
    assert!(r.candidate.is_none());
    assert!(matches!(
        r.release(2).unwrap().result,
        ReleaseResult::Failed { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn promote_and_switch_refuse_an_unhealthy_release() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, _) = deployer(&fake, "me");
    beside(&fake, &d, Strategy::BlueGreen).await;
    {
        let mut w = fake.world();
        let c = w
            .containers
            .iter_mut()
            .find(|c| c.name == "s-web-r2-s1")
            .unwrap();
        c.running = false;
    }
    let e = d.promote("s", "web").await.unwrap_err();
    assert_eq!(e.code, ProblemCode::InvalidTraffic);
    assert!(e.message.contains("s-web-r2-s1"), "names the target: {e}");
    for c in fake.world().containers.iter_mut() {
        c.running = c.release == 1;
    }
    let e = d.switch("s", "web", "2").await.unwrap_err();
    assert!(e.message.contains("not healthy"), "{e}");
    assert_eq!(weights(&fake), vec![(1, 100), (2, 0)], "traffic stays");
    assert_eq!(record(&fake).current, Some(1));
    let e = d.switch("s", "web", "7").await.unwrap_err();
    assert!(e.message.contains("no live release \"7\""), "{e}");
}

#[tokio::test(start_paused = true)]
async fn abort_is_refused_when_the_current_release_cannot_take_the_traffic() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, _) = deployer(&fake, "me");
    beside(&fake, &d, Strategy::Canary).await;
    for c in fake.world().containers.iter_mut() {
        c.running = c.release == 2;
    }
    let e = d.abort("s", "web", None).await.unwrap_err();
    assert!(e.message.contains("promote release 2"), "{e}");
    assert_eq!(fake.world().containers.len(), 6, "nothing was removed");
}

#[tokio::test(start_paused = true)]
async fn a_blue_green_standby_ends_after_its_time() {
    let fake = fake_with_images(&["v1", "v2", "v3"]);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let d = Deployer {
        runtime: fake.clone(),
        edge: fake.clone(),
        owner: "me".into(),
        now_ms: || NOW_MS.load(std::sync::atomic::Ordering::SeqCst),
        owner_gone: |_| false,
        events: Arc::new(move |e| sink.lock().unwrap().push(e)),
    };
    let mut v1 = strategy_spec("v1", Strategy::BlueGreen);
    v1.standby_ms = Some(60_000);
    let mut v2 = v1.with_tag("v2");
    v2.standby_ms = Some(60_000);
    d.run("s", "web", Goal::Deploy(Box::new(v1))).await.unwrap();
    d.run("s", "web", Goal::Deploy(Box::new(v2))).await.unwrap();
    assert!(
        d.settle("s", "web").await.unwrap().is_none(),
        "not switched yet: no standby to end"
    );
    d.switch("s", "web", "2").await.unwrap();
    NOW_MS.fetch_add(30_000, std::sync::atomic::Ordering::SeqCst);
    assert!(d.settle("s", "web").await.unwrap().is_none());
    assert_eq!(running(&fake).len(), 6, "still on standby after 30 s");
    NOW_MS.fetch_add(31_000, std::sync::atomic::Ordering::SeqCst);
    // The next deploy ends the standby first, then goes on.
    let mut v3 = strategy_spec("v3", Strategy::BlueGreen);
    v3.standby_ms = Some(60_000);
    d.run("s", "web", Goal::Deploy(Box::new(v3))).await.unwrap();
    let r = record(&fake);
    assert_eq!(
        r.current,
        Some(2),
        "the standby ended: release 2 is current"
    );
    assert_eq!(r.candidate.as_ref().map(|c| c.release), Some(3));
    assert!(
        !running(&fake).iter().any(|n| n.contains("-r1-")),
        "release 1 stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_canary_stopped_by_its_guard_is_aborted_with_the_reason_in_its_history() {
    let fake = fake_with_images(&["v1", "v2", "v3"]);
    let (d, _) = deployer(&fake, "me");
    let guarded = |tag: &str| {
        let mut s = strategy_spec(tag, Strategy::Canary);
        s.canary_guard = Some(crate::service::CanaryGuard {
            max_5xx_percent: 5,
            window_ms: 30_000,
            min_requests: 20,
        });
        s
    };
    d.run("s", "web", Goal::Deploy(Box::new(guarded("v1"))))
        .await
        .unwrap();
    d.run("s", "web", Goal::Deploy(Box::new(guarded("v2"))))
        .await
        .unwrap();
    let policy = fake.world().policies.get(&18080).cloned().unwrap();
    assert_eq!(
        policy.guard,
        Some(crate::edge::Guard {
            release: 2,
            max_5xx_percent: 5,
            window_ms: 30_000,
            min_requests: 20
        }),
        "the edge watches the canary"
    );
    assert!(
        d.settle("s", "web").await.unwrap().is_none(),
        "nothing to settle"
    );
    // What the edge does when the guard trips.
    let why = "aborted by its guard: 9 of its last 30 requests got a 5xx or no answer (30.0%, limit 5% over 30 s)";
    {
        let mut w = fake.world();
        let p = w.policies.get_mut(&18080).unwrap();
        p.weights = shares(&[(Some(1), 90), (Some(2), 0)]);
        p.tripped = Some(why.into());
    }
    let e = d.split("s", "web", 50).await.unwrap_err();
    assert!(e.message.contains("traffic abort s/web"), "{e}");
    // The next deploy settles it first, then goes on.
    let out = d
        .run("s", "web", Goal::Deploy(Box::new(guarded("v3"))))
        .await
        .unwrap();
    assert_eq!(out.release, 3);
    let r = record(&fake);
    assert!(matches!(
        &r.release(2).unwrap().result,
        ReleaseResult::Failed { reason } if reason == why
    ));
    assert_eq!(r.candidate.as_ref().map(|c| c.release), Some(3));
    assert!(!fake.world().containers.iter().any(|c| c.release == 2));
    let policy = fake.world().policies.get(&18080).cloned().unwrap();
    assert_eq!(policy.tripped, None);
    assert_eq!(policy.guard.map(|g| g.release), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_blue_green_service_whose_containers_were_all_removed_by_hand_is_deployed_again() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, _) = deployer(&fake, "me");
    beside(&fake, &d, Strategy::BlueGreen).await;
    // `docker rm -f` of everything, behind Changeover's back.
    fake.world().containers.clear();
    fake.world().min_routed = None;

    let e = d.promote("s", "web").await.unwrap_err();
    assert!(
        e.message.contains("does not run every replica") && e.message.contains("traffic abort"),
        "promote says why and what to do: {e}"
    );
    // Deploying again works: the vanished candidate is dropped, the stale
    // targets leave the routes, and the current release starts again.
    d.run(
        "s",
        "web",
        Goal::Deploy(Box::new(strategy_spec("v1", Strategy::BlueGreen))),
    )
    .await
    .expect("a deploy recovers the service");
    let r = record(&fake);
    assert!(r.candidate.is_none(), "the vanished candidate is dropped");
    assert!(
        matches!(&r.release(2).unwrap().result, ReleaseResult::Failed { reason } if reason.contains("outside Changeover")),
        "and the history says why: {:?}",
        r.release(2).unwrap().result
    );
    assert_eq!(r.current, Some(1));
    let routed: Vec<String> = fake
        .world()
        .routes
        .values()
        .flatten()
        .map(|t| t.id.clone())
        .collect();
    let running = running(&fake);
    assert!(!running.is_empty());
    for id in &routed {
        assert!(running.contains(id), "{id} is routed but does not run");
    }
}

#[tokio::test(start_paused = true)]
async fn a_candidate_whose_containers_are_gone_can_be_aborted_even_when_the_current_one_is_gone_too(
) {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, _) = deployer(&fake, "me");
    beside(&fake, &d, Strategy::BlueGreen).await;
    fake.world().containers.clear();
    fake.world().min_routed = None;
    let done = d
        .abort("s", "web", None)
        .await
        .expect("abort works with nothing running");
    assert_eq!(done.retired, 2);
    assert!(record(&fake).candidate.is_none());
    assert!(
        fake.world().routes.values().all(|ts| ts.is_empty()),
        "no target of a gone container stays routed"
    );
    d.run("s", "web", Goal::Rollback)
        .await
        .expect_err("nothing earlier than release 1 to roll back to");
    d.run(
        "s",
        "web",
        Goal::Deploy(Box::new(strategy_spec("v1", Strategy::BlueGreen))),
    )
    .await
    .expect("a deploy starts release 1 again");
    assert_eq!(
        running(&fake).len(),
        3,
        "every replica of release 1 runs again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_service_leaves_no_route_container_or_record_and_keeps_its_volumes() {
    let fake = fake_with_images(&["v1", "v2"]);
    let (d, events) = deployer(&fake, "me");
    let mut first = spec("v1", 2);
    first.mounts = vec![crate::service::Mount {
        kind: crate::service::MountKind::Volume,
        source: "data".into(),
        target: "/data".into(),
        read_only: false,
        options: Vec::new(),
        anonymous: false,
        volume: None,
        external: false,
    }];
    d.run("s", "web", Goal::Deploy(Box::new(first)))
        .await
        .unwrap();
    d.run("s", "web", Goal::Deploy(Box::new(spec("v2", 2))))
        .await
        .unwrap();

    let plan = d.removal("s", "web").await.unwrap();
    assert_eq!(plan.service, "s/web");
    assert_eq!(plan.routes, vec![18080]);
    assert_eq!(
        plan.containers,
        vec!["s-web-r1-s0", "s-web-r1-s1", "s-web-r2-s0", "s-web-r2-s1"],
        "every release's containers, the stopped ones too"
    );
    assert!(plan.record);
    assert_eq!(
        plan.volumes,
        vec!["s_data"],
        "an older release's volume too (Docker's name)"
    );
    assert_eq!(running(&fake).len(), 2, "asking changed nothing");

    // Refused while another client's rollout holds the lock.
    fake.world().lock = Some(("rollout/s/web".into(), "ci@build (pid 7)".into()));
    let err = d.remove_service("s", "web").await.unwrap_err();
    assert_eq!(err.code, ProblemCode::RolloutInProgress);
    assert_eq!(fake.world().containers.len(), 4, "nothing was removed");
    fake.world().lock = None;

    let done = d.remove_service("s", "web").await.unwrap();
    assert_eq!(done, plan);
    {
        let w = fake.world();
        assert!(w.containers.is_empty(), "{:?}", w.containers);
        assert!(w.routes.is_empty(), "{:?}", w.routes);
        assert!(w.docs.is_empty(), "the record is gone");
        assert!(w.lock.is_none(), "the lock is released");
    }
    let said: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RolloutEvent::Note { message } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(
        said.iter().any(|m| m == "route on port 18080 removed"),
        "{said:?}"
    );

    let gone = d.removal("s", "web").await.unwrap_err();
    assert_eq!(gone.code, ProblemCode::UnknownService);
    assert_eq!(gone.message, "no service s/web on this environment");
}

#[tokio::test(start_paused = true)]
async fn udp_ports_are_routes_of_their_own_or_share_one_with_tcp_and_docker_health_judges_udp_alone(
) {
    let fake = fake_with_images(&["v1"]);
    let (d, _) = deployer(&fake, "me");
    let mut s = spec("v1", 2);
    let udp = |host, container| PortMapping {
        host,
        container,
        udp: true,
        app: None,
    };
    s.ports = vec![
        PortMapping::tcp(53, 53),
        udp(53, 53),
        udp(51820, 51820),
        PortMapping::tcp(8080, 80),
    ];
    s.healthcheck = Some(crate::service::DockerHealthcheck {
        test: vec!["CMD".into(), "/probe".into()],
        interval_ms: 1000,
        timeout_ms: 1000,
        retries: 3,
        start_period_ms: 0,
    });
    d.run("s", "web", Goal::Deploy(Box::new(s))).await.unwrap();
    let w = fake.world();
    let set: Vec<(u16, crate::edge::Udp, bool)> = w
        .route_specs
        .values()
        .map(|r| (r.port, r.udp, r.health.docker))
        .collect();
    use crate::edge::Udp;
    assert_eq!(
        set,
        [
            (53, Udp::Also, false),
            (8080, Udp::No, false),
            (51820, Udp::Only, true)
        ],
        "one route per host port; only the UDP-only one is judged by Docker's check"
    );
    for port in [53, 8080, 51820] {
        assert_eq!(
            w.routes[&port].len(),
            2,
            "each replica routed once on port {port}: {:?}",
            w.routes[&port]
        );
    }
}
