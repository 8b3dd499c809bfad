//! The rollout state machine against a fake daemon and a fake edge, with
//! paused time. The fakes share one world so the edge's health answers
//! follow what "runs" on the daemon; every operation re-checks the promise
//! that capacity never drops below the replica count once a release is live.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::*;
use crate::edge::{TargetStatus, PROTOCOL_VERSION};
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
            },
            Request::RouteSet { route } => {
                w.routes.entry(route.port).or_default();
                Response::Ok
            }
            Request::RouteRemove { port } => {
                w.routes.remove(&port);
                Response::Ok
            }
            Request::TrafficSet { .. } => Response::Ok,
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
                        },
                        targets: ts.iter().map(|t| status(&w, t)).collect(),
                        policy: Default::default(),
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
        })
    }
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
    s.ports = vec![PortMapping {
        host: 18080,
        container: 8080,
    }];
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
