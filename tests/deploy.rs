//! Deploys against the real daemon through the `changeover` CLI: rolling
//! redeploys under load with no failed request, failures that restore the
//! old release, bad input that changes nothing, and the faults a deploy tool
//! must survive (edge removed by hand, two clients at once, a client killed
//! mid-rollout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Output, Stdio};
use std::sync::RwLock;
use std::time::Duration;

use changeover_tests::{
    changeover, changeover_cmd, docker, free_port, get, unique, wait_for, Load, TestStack,
};
use serde_json::Value;

/// Tests share the environment's one edge; the test that removes it takes
/// this exclusively.
static EDGE: RwLock<()> = RwLock::new(());

fn shared_edge() -> std::sync::RwLockReadGuard<'static, ()> {
    EDGE.read().unwrap_or_else(|p| p.into_inner())
}

/// The edge's settings are one for all: the tests that change them take
/// turns.
static SETTINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn edge_settings() -> std::sync::MutexGuard<'static, ()> {
    SETTINGS.lock().unwrap_or_else(|p| p.into_inner())
}

fn web(port: u16, tag: &str, replicas: u32, extra: &str) -> String {
    format!(
        r#"services:
  web:
    image: changeover-demo:{tag}
    ports: ["{port}:8080"]
    labels: {{dev.changeover.test: "1"}}
    deploy:
      replicas: {replicas}
{extra}    x-changeover:
      health: {{path: /health, interval: 500ms, timeout: 1s}}
      drain_timeout: 5s
      deploy_timeout: 20s
"#
    )
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn inspect(name: &str) -> Value {
    let out = changeover(&["service", "inspect", name, "--json"], &[]);
    ok(&out, "service inspect");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `(release, running, routed)` of every container of the service.
fn slots(name: &str) -> Vec<(u64, bool, bool)> {
    inspect(name)["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["release"].as_u64().unwrap(),
                c["running"].as_bool().unwrap(),
                c["routed"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn running_releases(name: &str) -> Vec<u64> {
    slots(name)
        .into_iter()
        .filter(|s| s.1)
        .map(|s| s.0)
        .collect()
}

#[test]
fn rolls_to_v2_and_back_to_v1_without_a_failed_request() {
    let _edge = shared_edge();
    let port = free_port();
    let stack = TestStack::new("roll", &web(port, "v1", 3, ""), &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "first deploy",
    );
    assert!(
        get(port).unwrap().starts_with("v1 "),
        "v1 answers on the published port"
    );
    assert_eq!(running_releases(&svc), vec![1, 1, 1]);

    let load = Load::start(port, 4);
    let out = changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]);
    ok(&out, "deploy v2");
    let progress = stderr(&out);
    for phase in [
        "creating",
        "health checking",
        "routed",
        "old draining",
        "old stopped",
    ] {
        assert!(
            progress.contains(phase),
            "progress shows {phase:?}:\n{progress}"
        );
    }
    assert_eq!(running_releases(&svc), vec![2, 2, 2]);
    assert!(get(port).unwrap().starts_with("v2 "));
    ok(&changeover(&["service", "rollback", &svc], &[]), "rollback");
    assert_eq!(running_releases(&svc), vec![1, 1, 1]);
    let counted = load.finish();
    assert_eq!(
        counted.failed, 0,
        "no request fails across a rollout and a rollback: {:?}",
        counted.failures
    );
    assert!(counted.versions.contains_key("v1") && counted.versions.contains_key("v2"));

    let view = inspect(&svc);
    assert_eq!(view["record"]["current"], 1);
    let releases = view["record"]["releases"].as_array().unwrap();
    assert_eq!(
        releases.len(),
        2,
        "a rollback reuses release 1, it makes no new one"
    );
    assert!(
        releases[0]["imageId"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "releases are pinned by image digest"
    );
    assert!(
        view["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["running"] == false || c["routed"] == true),
        "every running container is routed"
    );
    // The service list shows it too.
    let out = changeover(&["service", "ls", "--json"], &[]);
    ok(&out, "service ls");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == svc.as_str()));
}

#[test]
fn a_release_that_never_becomes_healthy_fails_and_every_slot_returns_to_the_old_one() {
    let _edge = shared_edge();
    let port = free_port();
    let body = web(port, "v1", 2, "").replace("deploy_timeout: 20s", "deploy_timeout: 3s");
    let stack = TestStack::new("unhealthy", &body, &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy v1",
    );
    let load = Load::start(port, 2);
    let out = changeover(&["service", "deploy", &svc, "--tag", "v3-unhealthy"], &[]);
    let counted = load.finish();
    assert!(!out.status.success(), "the deploy fails");
    let err = stderr(&out);
    assert!(
        err.contains("slot 0 of release 2"),
        "names the failing slot:\n{err}"
    );
    assert!(err.contains("503"), "shows the last health check:\n{err}");
    assert!(
        err.contains("demo v3-unhealthy listening"),
        "shows the log tail:\n{err}"
    );
    assert!(
        err.contains("back on release 1"),
        "says the old release is restored:\n{err}"
    );
    assert_eq!(running_releases(&svc), vec![1, 1]);
    assert!(
        slots(&svc).iter().all(|s| s.0 == 1),
        "the failed release's containers are removed: {:?}",
        slots(&svc)
    );
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
    let view = inspect(&svc);
    assert_eq!(view["record"]["current"], 1);
    assert_eq!(view["record"]["releases"][1]["result"]["kind"], "failed");
}

#[test]
fn a_container_that_exits_at_once_fails_the_first_deploy_and_leaves_nothing() {
    let _edge = shared_edge();
    let port = free_port();
    changeover_tests::fixture_image();
    let body = format!(
        "services:\n  app:\n    image: changeover-fixture:busybox\n    command: [\"sh\", \"-c\", \"echo bye; exit 3\"]\n    ports: [\"{port}:80\"]\n    labels: {{dev.changeover.test: \"1\"}}\n"
    );
    let stack = TestStack::new("exits", &body, &[port]);
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("exit code 3"), "says how it exited:\n{err}");
    assert!(err.contains("bye"), "shows its output:\n{err}");
    assert!(
        stack.containers().is_empty(),
        "nothing is left: {:?}",
        stack.containers()
    );
}

#[test]
fn bad_stack_files_are_refused_with_file_line_and_key_and_change_nothing() {
    let _edge = shared_edge();
    let cases = [
        ("services:\n  web:\n    image: [oops\n", "not valid YAML"),
        (
            "services:\n  web:\n    image: changeover-demo:v1\n    replicass: 2\n",
            "unknown service key `replicass`",
        ),
        (
            "services:\n  web:\n    image: changeover-demo:v1\n    ports: [\"80:abc\"]\n",
            "services.web.ports[0]: \"80:abc\" is not a port",
        ),
        (
            "services:\n  web:\n    image: changeover-demo:v1\n    ports: [\"99999:80\"]\n",
            "must be a number from 1 to 65535",
        ),
    ];
    for (body, expected) in cases {
        let stack = TestStack::new("bad", body, &[]);
        let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
        assert!(!out.status.success(), "{body:?} is refused");
        let err = stderr(&out);
        assert!(
            err.contains(expected),
            "{body:?}: says {expected:?}:\n{err}"
        );
        assert!(
            err.contains("stack.yml:"),
            "names the file and line:\n{err}"
        );
        assert!(err.contains("nothing was deployed"), "{err}");
        assert!(stack.containers().is_empty());
    }
    let out = changeover(&["stack", "deploy", "-f", "/nonexistent/stack.yml"], &[]);
    assert!(!out.status.success() && stderr(&out).contains("cannot read /nonexistent/stack.yml"));
}

#[test]
fn a_host_port_taken_by_another_process_is_refused_before_anything_is_created() {
    let _edge = shared_edge();
    let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stack = TestStack::new("taken", &web(port, "v1", 1, ""), &[]);
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot publish port {port}")) && err.contains("taken on the host"),
        "says which port and why:\n{err}"
    );
    assert!(stack.containers().is_empty(), "nothing was created");
}

#[test]
fn an_image_that_is_not_there_and_cannot_be_pulled_is_refused() {
    let _edge = shared_edge();
    let port = free_port();
    let body = web(port, "v1", 1, "").replace("changeover-demo:v1", "changeover-nowhere:zzz");
    let stack = TestStack::new("noimage", &body, &[port]);
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("changeover-nowhere:zzz is not on the daemon and could not be pulled"),
        "{err}"
    );
    assert!(stack.containers().is_empty());
    let out = changeover(&["service", "deploy", "nope/none", "--tag", "v1"], &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("no service nope/none"),
        "{}",
        stderr(&out)
    );
    let out = changeover(&["service", "deploy", "not-a-name", "--tag", "v1"], &[]);
    assert!(!out.status.success() && stderr(&out).contains("is not STACK/SERVICE"));
    let out = changeover(&["service", "deploy", "nope/none", "--tag", "v 2"], &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("\"v 2\" is not an image tag"),
        "{}",
        stderr(&out)
    );
    let out = changeover(&["service", "rollback", "nope/none"], &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("no service nope/none"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_edge_removed_by_hand_is_recreated_and_its_routes_restored() {
    let _edge = EDGE.write().unwrap_or_else(|p| p.into_inner());
    let port = free_port();
    let stack = TestStack::new("edge", &web(port, "v1", 2, ""), &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    assert!(get(port).is_ok());
    docker(&["rm", "-f", "changeover-edge"]);
    assert!(get(port).is_err(), "without the edge the port is closed");
    ok(
        &changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]),
        "deploy after removal",
    );
    assert!(get(port).unwrap().starts_with("v2 "), "traffic flows again");
    assert_eq!(running_releases(&svc), vec![2, 2]);
    // Same definition again: the routes are kept and nothing is replaced.
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    ok(&out, "redeploy v1");
    assert_eq!(running_releases(&svc), vec![1, 1], "the stack file says v1");
}

fn slow(port: u16) -> String {
    web(port, "v1", 3, "      update_config: {delay: 2s}\n")
}

/// Slow enough between slots that the CLI can be killed after slot 0 and
/// before slot 1: the old container of slot 0 drains (up to the 5 s
/// drain_timeout) and stops while the delay runs, so the delay must outlast
/// both, or on a slow machine slot 1 has begun by the time slot 0's old
/// container is seen stopped.
fn killable(port: u16) -> String {
    web(port, "v1", 3, "      update_config: {delay: 9s}\n")
}

#[test]
fn a_second_deploy_of_the_same_service_is_refused_while_one_runs() {
    let _edge = shared_edge();
    let port = free_port();
    let stack = TestStack::new("twice", &slow(port), &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    let first = changeover_cmd(&["service", "deploy", &svc, "--tag", "v2"], &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), || {
        (!inspect(&svc)["rolloutLock"].is_null()).then_some(())
    })
    .expect("the first deploy takes the lock");
    let second = changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]);
    assert!(!second.status.success(), "the second deploy is refused");
    let err = stderr(&second);
    assert!(
        err.contains(&format!("a rollout of {svc} is already in progress")) && err.contains("pid"),
        "names the rollout in progress and who runs it:\n{err}"
    );
    let first = first.wait_with_output().unwrap();
    ok(&first, "the first deploy");
    assert_eq!(running_releases(&svc), vec![2, 2, 2]);
}

/// Deploys release 1, starts load, starts 1 → 2 and SIGKILLs the CLI once
/// slot 0 is on release 2.
fn kill_mid_rollout(stack: &TestStack, svc: &str, port: u16) -> Load {
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    let load = Load::start(port, 2);
    let mut child = changeover_cmd(&["service", "deploy", svc, "--tag", "v2"], &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s0_new = format!("{}-web-r2-s0=running", stack.name);
    let s0_old = format!("{}-web-r1-s0=exited", stack.name);
    wait_for(Duration::from_secs(30), || {
        let c = stack.containers();
        (c.contains(&s0_new) && c.contains(&s0_old)).then_some(())
    })
    .expect("slot 0 moves to release 2");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let view = inspect(svc);
    assert_eq!(
        view["record"]["rollout"]["to"], 2,
        "the half-done rollout is recorded"
    );
    assert_eq!(
        running_releases(svc),
        vec![2, 1, 1],
        "slot 0 new, slots 1-2 old: {:?}",
        stack.containers()
    );
    load
}

#[test]
fn a_rollout_killed_mid_way_is_finished_by_the_next_deploy() {
    let _edge = shared_edge();
    let port = free_port();
    let stack = TestStack::new("resume", &killable(port), &[port]);
    let svc = format!("{}/web", stack.name);
    let load = kill_mid_rollout(&stack, &svc, port);
    let out = changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]);
    ok(&out, "resume");
    assert!(
        stderr(&out).contains("left unfinished"),
        "says it takes over:\n{}",
        stderr(&out)
    );
    let counted = load.finish();
    assert_eq!(running_releases(&svc), vec![2, 2, 2]);
    assert_eq!(
        inspect(&svc)["record"]["releases"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the interrupted release is finished, not renumbered"
    );
    assert_eq!(
        counted.failed, 0,
        "killing the CLI dropped no request: {:?}",
        counted.failures
    );
}

#[test]
fn a_rollout_killed_mid_way_is_undone_by_rollback_with_no_orphans() {
    let _edge = shared_edge();
    let port = free_port();
    let stack = TestStack::new("undo", &killable(port), &[port]);
    let svc = format!("{}/web", stack.name);
    let load = kill_mid_rollout(&stack, &svc, port);
    ok(&changeover(&["service", "rollback", &svc], &[]), "rollback");
    let counted = load.finish();
    assert_eq!(running_releases(&svc), vec![1, 1, 1]);
    assert!(
        slots(&svc).iter().all(|s| s.0 == 1),
        "no container of the half-done release is left: {:?}",
        stack.containers()
    );
    assert!(inspect(&svc)["record"]["rollout"].is_null());
    assert_eq!(
        counted.failed, 0,
        "no request failed: {:?}",
        counted.failures
    );
}

#[test]
fn an_exported_stack_deploys_back_to_the_same_release() {
    let _edge = shared_edge();
    let port = free_port();
    let extra = "      update_config: {order: stop-first, delay: 1500ms}\n";
    let stack = TestStack::new("export", &web(port, "v1", 1, extra), &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    let out = changeover(&["stack", "export", &stack.name], &[]);
    ok(&out, "export to stdout");
    let text = String::from_utf8(out.stdout).unwrap();
    let exported = changeover_core::stack::parse(&text, "export.yml", None)
        .stack
        .expect("the export is a valid stack");
    let record: changeover_core::service::ServiceSpec =
        serde_json::from_value(inspect(&svc)["record"]["spec"].clone()).unwrap();
    assert_eq!(exported.services, vec![record], "{text}");

    let file = stack.dir.path().join("exported.yml").display().to_string();
    ok(
        &changeover(&["stack", "export", &stack.name, "-o", &file], &[]),
        "export to a file",
    );
    std::fs::write(&file, "keep me\n").unwrap();
    let again = changeover(&["stack", "export", &stack.name, "-o", &file], &[]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
    ok(
        &changeover(
            &["stack", "export", &stack.name, "-o", &file, "--force"],
            &[],
        ),
        "export over the file with --force",
    );

    ok(
        &changeover(&["stack", "deploy", "-f", &file], &[]),
        "deploy the exported file",
    );
    let releases = inspect(&svc)["record"]["releases"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(releases, 1, "the same definition makes no new release");

    let missing = changeover(&["stack", "export", "t-no-such-stack"], &[]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no stack"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn a_docker_healthcheck_gates_the_rollout_and_stop_first_stops_before_it_starts() {
    let _edge = shared_edge();
    let port = free_port();
    // No edge HTTP check here (a TCP connect passes at once): only the
    // HEALTHCHECK the daemon runs inside the container decides.
    let body = format!(
        r#"services:
  web:
    image: changeover-demo:v1
    ports: ["{port}:8080"]
    labels: {{dev.changeover.test: "1"}}
    healthcheck:
      test: ["CMD", "/changeover-edge", "probe", "http://127.0.0.1:8080/health"]
      interval: 500ms
      timeout: 1s
      retries: 2
    deploy:
      replicas: 2
      update_config: {{order: stop-first}}
    x-changeover:
      drain_timeout: 2s
      deploy_timeout: 8s
"#
    );
    let stack = TestStack::new("dockerhealth", &body, &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy v1",
    );
    let view = inspect(&svc);
    let health: Vec<&str> = view["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["health"].as_str())
        .collect();
    assert_eq!(health, vec!["healthy", "healthy"], "{view}");

    let out = changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]);
    ok(&out, "deploy v2 stop-first");
    let err = stderr(&out);
    let at = |line: &str| {
        err.find(line)
            .unwrap_or_else(|| panic!("{line:?} in the progress:\n{err}"))
    };
    for slot in 0..2 {
        assert!(
            at(&format!("slot {slot} r1: old stopped")) < at(&format!("slot {slot} r2: creating")),
            "stop-first: slot {slot}'s old container stops before the new one is created:\n{err}"
        );
    }
    assert_eq!(running_releases(&svc), vec![2, 2]);

    let out = changeover(&["service", "deploy", &svc, "--tag", "v3-unhealthy"], &[]);
    assert!(
        !out.status.success(),
        "a failing HEALTHCHECK fails the deploy"
    );
    let err = stderr(&out);
    assert!(
        err.contains("Docker health check"),
        "says which check failed:\n{err}"
    );
    assert!(err.contains("back on release 2"), "{err}");
    assert_eq!(running_releases(&svc), vec![2, 2]);
}

#[test]
fn stack_files_take_variables_from_the_environment() {
    let _edge = shared_edge();
    let port = free_port();
    let body = web(port, "${DEMO_TAG:-v1}", 1, "");
    let stack = TestStack::new("vars", &body, &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy with the default",
    );
    assert!(get(port).unwrap().starts_with("v1 "));
    ok(
        &changeover(
            &["stack", "deploy", "-f", &stack.file()],
            &[("DEMO_TAG", "v2")],
        ),
        "deploy with DEMO_TAG=v2",
    );
    assert!(get(port).unwrap().starts_with("v2 "));
    assert_eq!(running_releases(&svc), vec![2]);
    let bad = TestStack::new("novar", &web(port, "${DEMO_TAG_UNSET}", 1, ""), &[]);
    let out = changeover(&["stack", "deploy", "-f", &bad.file()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("variable DEMO_TAG_UNSET is not set"),
        "{}",
        stderr(&out)
    );
    assert!(bad.containers().is_empty(), "nothing was created");
}

#[test]
fn an_older_edge_keeps_serving_until_edge_upgrade_hands_its_listeners_over_with_no_failed_request()
{
    let _edge = EDGE.write().unwrap_or_else(|p| p.into_inner());
    let port = free_port();
    let stack = TestStack::new("upgrade", &web(port, "v1", 2, ""), &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    // An "older build": the same binary under another tag, run the way
    // Changeover runs the edge.
    let current = docker(&["inspect", "-f", "{{.Config.Image}}", "changeover-edge"]);
    let older = "changeover-edge:000000000000";
    docker(&["tag", &current, older]);
    docker(&["rm", "-f", "changeover-edge"]);
    docker(&[
        "run",
        "-d",
        "--name",
        "changeover-edge",
        "--network",
        "host",
        "--restart",
        "unless-stopped",
        "--label",
        "dev.changeover.managed=true",
        "-v",
        "changeover-edge-state:/state",
        older,
    ]);
    wait_for(Duration::from_secs(10), || get(port).ok()).expect("the older edge serves the routes");
    let status = |what: &str| -> Value {
        let out = changeover(&["edge", "status", "--json"], &[]);
        ok(&out, what);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = status("status of the older edge");
    assert_eq!(before["image"], older);
    assert_eq!(before["upToDate"], false, "{before}");

    let out = changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]);
    ok(&out, "deploy through the older edge");
    assert!(
        stderr(&out).contains("older build"),
        "the deploy says the edge is older:\n{}",
        stderr(&out)
    );
    assert_eq!(status("status after deploy")["image"], older, "left alone");

    // The older edge hands its listeners over: clients all along, none fails.
    let load = Load::start(port, 4);
    std::thread::sleep(Duration::from_millis(300));
    ok(&changeover(&["edge", "upgrade"], &[]), "edge upgrade");
    std::thread::sleep(Duration::from_millis(300));
    let count = load.finish();
    assert!(count.ok > 50, "{count:?}");
    assert_eq!(
        count.failed, 0,
        "no request fails across the upgrade: {count:?}"
    );
    let leftovers = docker(&[
        "ps",
        "-a",
        "--filter",
        "name=changeover-edge-",
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        !leftovers.contains("-next") && !leftovers.contains("-retired"),
        "{leftovers}"
    );
    let after = status("status after upgrade");
    assert_eq!(after["image"], current.as_str(), "{after}");
    assert_eq!(after["upToDate"], true, "{after}");
    assert!(after["routes"].as_u64().unwrap() >= 1, "{after}");
    let answer = wait_for(Duration::from_secs(10), || get(port).ok()).expect("routes restored");
    assert!(answer.starts_with("v2 "), "{answer}");
    docker(&["rmi", older]);
}

#[test]
fn two_clients_that_find_no_edge_at_the_same_time_both_deploy() {
    let _edge = EDGE.write().unwrap_or_else(|p| p.into_inner());
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", "changeover-edge"])
        .output();
    race_to_deploy_two_stacks();
}

#[test]
fn two_clients_that_find_an_edge_they_cannot_talk_to_both_replace_it_and_deploy() {
    let _edge = EDGE.write().unwrap_or_else(|p| p.into_inner());
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", "changeover-edge"])
        .output();
    // A container by the edge's name that does not answer the protocol
    // (what an edge of another protocol version looks like to a client).
    docker(&[
        "run",
        "-d",
        "--name",
        "changeover-edge",
        "--label",
        "dev.changeover.test=1",
        "changeover-demo:v1",
    ]);
    race_to_deploy_two_stacks();
    let image = docker(&["inspect", "-f", "{{.Config.Image}}", "changeover-edge"]);
    assert!(image.starts_with("changeover-edge:"), "{image}");
}

/// Two `stack deploy`s at once, each of its own stack: both must succeed.
fn race_to_deploy_two_stacks() {
    let (p1, p2) = (free_port(), free_port());
    let one = TestStack::new("race1", &web(p1, "v1", 1, ""), &[p1]);
    let two = TestStack::new("race2", &web(p2, "v1", 1, ""), &[p2]);
    let spawn = |s: &TestStack| {
        changeover_cmd(&["stack", "deploy", "-f", &s.file()], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&one), spawn(&two));
    for (child, what) in [(a, "first"), (b, "second")] {
        let out = child.wait_with_output().unwrap();
        ok(
            &out,
            &format!("the {what} deploy, racing to create the edge"),
        );
    }
    assert!(get(p1).unwrap().starts_with("v1 "));
    assert!(get(p2).unwrap().starts_with("v1 "));
}

#[test]
fn traffic_shows_per_release_figures_pauses_for_maintenance_and_refuses_bad_changes() {
    let _edge = shared_edge();
    let port = free_port();
    let stack = TestStack::new("traffic", &web(port, "v1", 2, ""), &[port]);
    let svc = format!("{}/web", stack.name);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy",
    );
    for _ in 0..25 {
        assert!(get(port).unwrap().starts_with("v1 "));
    }
    let out = changeover(&["traffic", "show", &svc, "--json"], &[]);
    ok(&out, "traffic show");
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &view["routes"][0]["metrics"][0];
    assert_eq!(m["release"], 1, "{view}");
    assert!(m["requests"].as_u64().unwrap() >= 25, "{view}");
    assert_eq!(m["responses"][0], m["requests"], "all 2xx: {view}");
    assert!(m["p99Us"].as_u64().is_some(), "{view}");
    let table = changeover(&["traffic", "show", &svc], &[]);
    ok(&table, "traffic show as a table");
    assert!(String::from_utf8_lossy(&table.stdout).contains("P99 MS"));

    ok(
        &changeover(
            &["traffic", "maintenance", &svc, "--message", "back at ten"],
            &[],
        ),
        "maintenance on",
    );
    let paused = get(port).unwrap_err();
    assert!(paused.contains("503"), "{paused}");
    assert_eq!(running_releases(&svc), vec![1, 1], "containers untouched");
    ok(
        &changeover(&["traffic", "maintenance", &svc, "--off"], &[]),
        "maintenance off",
    );
    assert!(get(port).unwrap().starts_with("v1 "));

    for (args, says) in [
        (
            vec!["split", &svc, "--percent", "150"],
            "not a percentage from 0 to 100",
        ),
        (
            vec!["split", &svc, "--percent", "-5"],
            "not a percentage from 0 to 100",
        ),
        (
            vec!["split", &svc, "--percent", "10"],
            "needs two live releases",
        ),
        (vec!["switch", &svc, "--to", "9"], "no live release \"9\""),
        (
            vec!["maintenance", &svc, "--message", " "],
            "message is empty",
        ),
        (vec!["show", "t-no-such/web"], "no service t-no-such/web"),
    ] {
        let mut full = vec!["traffic"];
        full.extend(args.iter().copied());
        let out = changeover(&full, &[]);
        assert!(!out.status.success(), "{full:?} is refused");
        assert!(stderr(&out).contains(says), "{full:?}: {}", stderr(&out));
    }
    assert!(
        get(port).unwrap().starts_with("v1 "),
        "refusals changed nothing"
    );
}

/// `curl` through the edge: `(status line and headers, body, HTTP version)`.
fn curl(args: &[&str]) -> (String, String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-D",
            "-",
            "-w",
            "\n%{http_version}",
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {args:?}: {}{text}",
        stderr(&out)
    );
    let (answer, version) = text.rsplit_once('\n').unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    (
        head.to_ascii_lowercase(),
        body.to_string(),
        version.to_string(),
    )
}

#[test]
fn a_stack_with_hosts_and_a_certificate_file_is_served_by_name_over_https_on_the_shared_ports() {
    let _edge = shared_edge();
    let _settings = edge_settings();
    // Bad settings are refused, say why, and change nothing.
    let settings = || -> Value {
        let out = changeover(&["edge", "config", "--json"], &[]);
        ok(&out, "edge config");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    ok(
        &changeover(&["edge", "config", "--http-port", "18080"], &[]),
        "edge config",
    );
    let before = settings();
    for (args, why) in [
        (&["--https-port", "0"][..], "must be from 1 to 65535"),
        (&["--https-port", "70000"], "invalid value '70000'"),
        (&["--https-port", "18080"], "cannot share port 18080"),
        (
            &["--acme-directory", "http://acme.test/dir"],
            "must be an https:// URL",
        ),
        (&["--acme-email", "nobody"], "is not an email address"),
        (
            &["--acme-ca", "/nonexistent/ca.pem"],
            "--acme-ca /nonexistent/ca.pem",
        ),
    ] {
        let out = changeover(&[&["edge", "config"][..], args].concat(), &[]);
        assert!(!out.status.success(), "{args:?} is refused");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
        assert_eq!(
            settings()["config"],
            before["config"],
            "{args:?} changed nothing"
        );
    }
    let (http, https) = (free_port(), free_port());
    ok(
        &changeover(
            &[
                "edge",
                "config",
                "--http-port",
                &http.to_string(),
                "--https-port",
                &https.to_string(),
            ],
            &[],
        ),
        "edge config with free ports",
    );

    let port = free_port();
    let host = format!("{}.example.test", unique("site"));
    let mut body = web(port, "v1", 1, "");
    body.push_str(&format!(
        "      hosts: [{host}]\n      tls: {{cert: site.pem, key: site-key.pem, hsts: true}}\n"
    ));
    let stack = TestStack::new("site", &body, &[port]);
    let mut params = rcgen::CertificateParams::new(vec![host.clone()]).unwrap();
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(90);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca = stack.dir.path().join("site.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    std::fs::write(stack.dir.path().join("site-key.pem"), key.serialize_pem()).unwrap();
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy the site",
    );

    let resolve = format!("{host}:{https}:127.0.0.1");
    let url = format!("https://{host}:{https}/");
    let ca = ca.display().to_string();
    let (head, body, version) = curl(&["--cacert", &ca, "--resolve", &resolve, "--http1.1", &url]);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.starts_with("v1 "), "{body}");
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    assert_eq!(version, "1.1");
    let (head, _, version) = curl(&["--cacert", &ca, "--resolve", &resolve, "--http2", &url]);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert_eq!(version, "2", "h2 by ALPN");
    // Plain HTTP on the shared port goes to HTTPS, on the site's own host.
    let (head, _, _) = curl(&[
        "-H",
        &format!("Host: {host}"),
        &format!("http://127.0.0.1:{http}//evil.test/x"),
    ]);
    assert!(head.starts_with("http/1.1 308"), "{head}");
    assert!(
        head.contains(&format!("location: https://{host}:{https}/evil.test/x")),
        "{head}"
    );
    let (head, body, _) = curl(&[
        "-H",
        "Host: nobody.example.test",
        &format!("http://127.0.0.1:{http}/"),
    ]);
    assert!(
        head.starts_with("http/1.1 404") && body.contains("no site is served here"),
        "{head}{body}"
    );
    // Its own port serves as before.
    assert!(get(port).unwrap().starts_with("v1 "));

    // The CLI shows the certificate, never the key.
    let out = changeover(&["edge", "config"], &[]);
    ok(&out, "edge config");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let svc = format!("{}/web", stack.name);
    assert!(
        text.contains(&svc) && text.contains(&host) && text.contains("files"),
        "{text}"
    );
    assert!(
        text.contains("in 2 months") || text.contains("in 3 months"),
        "its expiry: {text}"
    );
    assert!(!text.contains("PRIVATE KEY"));

    // A site that cannot work is refused and the one deployed keeps serving.
    let other = free_port();
    for (extra, why) in [
        (
            format!("      hosts: [{host}]\n"),
            format!("the host {host} is already routed to {svc}"),
        ),
        (
            "      tls: {cert: site.pem, key: site-key.pem}\n".to_string(),
            "tls needs hosts".to_string(),
        ),
        (
            "      hosts: [x.example.test]\n      tls: {cert: site.pem, key: missing.pem}\n"
                .to_string(),
            "missing.pem".to_string(),
        ),
        (
            "      hosts: [Not_A_Host]\n".to_string(),
            "Not_A_Host".to_string(),
        ),
    ] {
        let mut body = web(other, "v1", 1, "");
        body.push_str(&extra);
        let bad = TestStack::new("badsite", &body, &[other]);
        std::fs::copy(
            stack.dir.path().join("site.pem"),
            bad.dir.path().join("site.pem"),
        )
        .unwrap();
        std::fs::copy(
            stack.dir.path().join("site-key.pem"),
            bad.dir.path().join("site-key.pem"),
        )
        .unwrap();
        let out = changeover(&["stack", "deploy", "-f", &bad.file()], &[]);
        assert!(!out.status.success(), "{extra:?} is refused");
        assert!(stderr(&out).contains(&why), "{extra:?}: {}", stderr(&out));
        assert!(
            bad.containers().is_empty(),
            "{extra:?}: nothing was created"
        );
    }
    let (head, _, _) = curl(&["--cacert", &ca, "--resolve", &resolve, &url]);
    assert!(head.contains(" 200"), "{head}");
}

#[test]
fn a_stack_with_tls_acme_gets_its_certificate_from_an_acme_ca() {
    let _edge = shared_edge();
    let _settings = edge_settings();
    let (http, https) = (free_port(), free_port());
    let ca = changeover_tests::pebble::Pebble::start(http, https);
    ok(
        &changeover_tests::use_acme_ca(&ca, http, https, "http-01"),
        "edge config for pebble",
    );
    let port = free_port();
    let host = format!("{}.example.test", unique("acme"));
    let mut body = web(port, "v1", 1, "");
    body.push_str(&format!("      hosts: [{host}]\n      tls: acme\n"));
    let stack = TestStack::new("acme", &body, &[port]);
    ok(
        &changeover(&["stack", "deploy", "-f", &stack.file()], &[]),
        "deploy the site",
    );
    let svc = format!("{}/web", stack.name);
    let cert = wait_for(Duration::from_secs(90), || {
        let out = changeover(&["edge", "config", "--json"], &[]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["certificates"]
            .as_array()?
            .iter()
            .find(|c| c["service"] == svc.as_str() && c["state"] == "valid")
            .cloned()
    })
    .expect("the edge gets a certificate from pebble");
    assert_eq!(cert["source"], "acme");
    assert!(
        cert["issuer"].as_str().unwrap().contains("Pebble"),
        "{cert}"
    );
    // Served under pebble's root, by name.
    let dir = tempfile::tempdir().unwrap();
    let root_file = dir.path().join("pebble-root.pem");
    std::fs::write(&root_file, ca.root_pem()).unwrap();
    let resolve = format!("{host}:{https}:127.0.0.1");
    let (head, body, _) = curl(&[
        "--cacert",
        &root_file.display().to_string(),
        "--resolve",
        &resolve,
        &format!("https://{host}:{https}/"),
    ]);
    assert!(
        head.contains(" 200") && body.starts_with("v1 "),
        "{head}{body}"
    );
    // Back to the defaults for whoever comes next.
    ok(&changeover_tests::forget_acme_ca(), "edge config back");
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn volume_exists(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn stacks_and_services_are_removed_with_what_they_made_and_volumes_only_when_asked() {
    let _edge = shared_edge();
    changeover_tests::demo_images(&[]);
    let (web, api) = (free_port(), free_port());
    let body = format!(
        "services:\n  web:\n    image: changeover-demo:v1\n    ports: [\"{web}:8080\"]\n    volumes: [\"data:/data\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n      health: {{path: /health, interval: 300ms}}\n  api:\n    image: changeover-demo:v1\n    ports: [\"{api}:8080\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n      health: {{path: /health, interval: 300ms}}\nvolumes:\n  data: {{}}\n"
    );
    let stack = TestStack::new("rm", &body, &[web, api]);
    stack.deploy(&[]);
    let name = stack.name.clone();
    let out = changeover(
        &["service", "deploy", &format!("{name}/web"), "--tag", "v2"],
        &[],
    );
    assert!(out.status.success(), "{}", said(&out));
    let volume = format!("{name}_data");

    let ls = changeover(&["stack", "ls", "--json"], &[]);
    let stacks: Value = serde_json::from_slice(&ls.stdout).unwrap();
    let mine = stacks
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap_or_else(|| panic!("listed: {stacks}"));
    assert_eq!(
        mine["services"],
        serde_json::json!([format!("{name}/api"), format!("{name}/web")])
    );
    assert_eq!(
        mine["containers"], 3,
        "web r1 (kept, stopped), web r2, api r1"
    );
    assert_eq!(mine["running"], 2);

    // Asked first; without a terminal or --yes nothing goes.
    let out = changeover(&["service", "rm", &format!("{name}/api")], &[]);
    assert!(!out.status.success());
    let text = said(&out);
    assert!(
        text.contains(&format!("{name}-api-r1-s0"))
            && text.contains(&format!("route(s) on port {api}"))
            && text.contains("--yes"),
        "{text}"
    );
    assert!(get(api).is_ok(), "api still serves");

    let out = changeover(&["service", "rm", &format!("{name}/api"), "--yes"], &[]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(get(api).is_err(), "its route is gone");
    assert_eq!(
        get(web).unwrap().split_whitespace().next(),
        Some("v2"),
        "the other service is untouched"
    );
    let gone = changeover(&["service", "inspect", &format!("{name}/api")], &[]);
    assert!(!gone.status.success(), "its record is gone");

    // A rollout holding the lock: refused, nothing removed.
    let key = format!("rollout/{name}/web");
    changeover_tests::edge_ctl(&serde_json::json!({
        "op": "lock-acquire", "key": key, "owner": "someone@elsewhere (pid 1)", "ttlMs": 60000
    }))
    .expect("the edge answers");
    let out = changeover(&["stack", "rm", &name, "--yes"], &[]);
    changeover_tests::edge_ctl(&serde_json::json!({
        "op": "lock-release", "key": key, "owner": "someone@elsewhere (pid 1)"
    }));
    assert!(!out.status.success());
    assert!(said(&out).contains("is in progress"), "{}", said(&out));
    assert!(get(web).is_ok(), "nothing was removed");

    let out = changeover(&["stack", "rm", &name], &[]);
    assert!(!out.status.success());
    assert!(
        said(&out).contains(&format!("Its volumes stay ({volume}); add --volumes")),
        "{}",
        said(&out)
    );
    let out = changeover(&["stack", "rm", &name, "--yes"], &[]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(get(web).is_err());
    assert!(stack.containers().is_empty(), "{:?}", stack.containers());
    assert!(volume_exists(&volume), "the volume stays without --volumes");
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=dev.changeover.stack={name}"),
    ]);
    assert!(networks.is_empty(), "its network is gone: {networks}");
    let ls = changeover(&["stack", "ls", "--json"], &[]);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains(&name),
        "no longer listed"
    );
    let again = changeover(&["stack", "rm", &name, "--yes"], &[]);
    assert!(!again.status.success());
    assert!(
        said(&again).contains(&format!("no stack {name} on this environment")),
        "{}",
        said(&again)
    );

    // Deployed again, removed with its volumes.
    stack.deploy(&[]);
    let out = changeover(&["stack", "rm", &name, "--volumes", "--yes"], &[]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(!volume_exists(&volume), "--volumes removes it");
    assert!(stack.containers().is_empty());
}

#[test]
fn a_dry_run_says_what_would_change_and_changes_nothing() {
    let _edge = shared_edge();
    changeover_tests::demo_images(&[]);
    let port = free_port();
    let body = |tag: &str, password: &str, replicas: u32| {
        format!(
            "services:\n  web:\n    image: changeover-demo:{tag}\n    ports: [\"{port}:8080\"]\n    environment: {{DB_HOST: db, DB_PASSWORD: {password}}}\n    labels: {{dev.changeover.test: \"1\"}}\n    deploy: {{replicas: {replicas}}}\n    x-changeover:\n      health: {{path: /health, interval: 300ms}}\n"
        )
    };
    let stack = TestStack::new("dry", &body("v1", "hunter2", 1), &[port]);
    let write =
        |text: &str| std::fs::write(stack.file(), format!("name: {}\n{text}", stack.name)).unwrap();
    let service = stack.web_service();
    let dry = |args: &[&str]| {
        let out = changeover(args, &[]);
        assert!(out.status.success(), "{}", said(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file = stack.file();

    let plan = dry(&["stack", "deploy", "-f", &file, "--dry-run"]);
    assert!(
        plan.contains(&format!("{service}: would be created (release 1)")),
        "{plan}"
    );
    assert!(stack.containers().is_empty(), "nothing was created");
    assert!(!plan.contains("hunter2"), "{plan}");

    stack.deploy(&[]);
    write(&body("v2", "s3cret-2", 2));
    let plan = dry(&["stack", "deploy", "-f", &file, "--dry-run"]);
    for line in [
        format!("{service}: release 1 → a new release 2"),
        "image: changeover-demo:v1 → changeover-demo:v2".to_string(),
        "env.DB_PASSWORD: •••••• → •••••• (changed)".to_string(),
        "replicas: 1 → 2".to_string(),
    ] {
        assert!(plan.contains(&line), "{line:?} in {plan}");
    }
    assert!(
        !plan.contains("hunter2") && !plan.contains("s3cret-2") && !plan.contains("DB_HOST"),
        "secrets masked, unchanged settings left out: {plan}"
    );
    let json: Value = serde_json::from_str(&dry(&[
        "stack",
        "deploy",
        "-f",
        &file,
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json[0]["action"], "update", "{json}");
    assert_ne!(json[0]["fromImageId"], json[0]["toImageId"], "{json}");
    assert_eq!(
        stack.containers().len(),
        1,
        "still one container of release 1: {:?}",
        stack.containers()
    );
    assert_eq!(get(port).unwrap().split_whitespace().next(), Some("v1"));

    // The deployed file again: nothing would change.
    write(&body("v1", "hunter2", 1));
    let plan = dry(&["stack", "deploy", "-f", &file, "--dry-run"]);
    assert_eq!(plan.trim(), format!("{service}: unchanged"), "{plan}");

    // One service to another tag; a rollback.
    let plan = dry(&["service", "deploy", &service, "--tag", "v2", "--dry-run"]);
    assert!(
        plan.contains("image: changeover-demo:v1 → changeover-demo:v2"),
        "{plan}"
    );
    let out = changeover(&["service", "deploy", &service, "--tag", "v2"], &[]);
    assert!(out.status.success(), "{}", said(&out));
    let plan = dry(&["service", "rollback", &service, "--dry-run"]);
    assert!(
        plan.contains(&format!("{service}: back from release 2 to release 1"))
            && plan.contains("image: changeover-demo:v2 → changeover-demo:v1"),
        "{plan}"
    );
    assert_eq!(get(port).unwrap().split_whitespace().next(), Some("v2"));

    // A file with errors: refused as a deploy would be.
    write("services:\n  web:\n    image: changeover-demo:v1\n    ports: [\"abc\"]\n");
    let out = changeover(&["stack", "deploy", "-f", &file, "--dry-run"], &[]);
    assert!(!out.status.success());
    assert!(
        said(&out).contains("nothing would be deployed"),
        "{}",
        said(&out)
    );
}

#[test]
fn tmpfs_mount_options_and_restart_reach_the_container() {
    let _edge = shared_edge();
    changeover_tests::demo_images(&[]);
    let port = free_port();
    let body = format!(
        "services:\n  web:\n    image: changeover-demo:v1\n    ports: [\"{port}:8080\"]\n    volumes: [\"data:/data:nocopy\"]\n    tmpfs: [\"/run:size=8m\"]\n    restart: on-failure:3\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n      health: {{path: /health, interval: 300ms}}\nvolumes:\n  data: {{}}\n"
    );
    let stack = TestStack::new("tmpfs", &body, &[port]);
    stack.deploy(&[]);
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.changeover.stack={}", stack.name),
    ]);
    let tmpfs = docker(&["inspect", "-f", "{{json .HostConfig.Tmpfs}}", &id]);
    assert_eq!(tmpfs, r#"{"/run":"size=8m"}"#);
    let restart = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
        &id,
    ]);
    assert_eq!(restart, "on-failure:3");
    let binds = docker(&["inspect", "-f", "{{json .HostConfig.Binds}}", &id]);
    assert!(
        binds.contains(&format!("{}_data:/data:nocopy", stack.name)),
        "{binds}"
    );
    let exported = changeover(&["stack", "export", &stack.name], &[]);
    let text = String::from_utf8_lossy(&exported.stdout);
    assert!(
        text.contains("/run:size=8m") && text.contains("data:/data:nocopy"),
        "{text}"
    );
}

#[test]
fn composes_container_settings_reach_the_container_and_come_back_in_the_export() {
    let _edge = shared_edge();
    changeover_tests::fixture_image();
    // What a VPN, a browser or a database image asks of its container.
    let body = "services:\n  app:\n    image: changeover-fixture:busybox\n    entrypoint: [\"sh\", \"-c\"]\n    command: [\"id -u > /tmp/uid; ulimit -n > /tmp/nofile; pwd > /tmp/pwd; exec sleep 3600\"]\n    user: \"1000:1000\"\n    working_dir: /srv\n    hostname: appbox\n    read_only: true\n    tmpfs: [\"/tmp:mode=1777\"]\n    init: true\n    cap_add: [NET_ADMIN]\n    cap_drop: [MKNOD]\n    sysctls: {net.ipv4.ip_unprivileged_port_start: \"80\"}\n    extra_hosts: [\"db.internal=10.1.2.3\"]\n    dns_opt: [\"ndots:2\"]\n    shm_size: 32m\n    ulimits: {nofile: {soft: 2048, hard: 4096}}\n    mem_limit: 256m\n    cpus: 0.5\n    stop_signal: SIGINT\n    stop_grace_period: 3s\n    logging: {driver: json-file, options: {max-size: 1m}}\n    labels: {dev.changeover.test: \"1\"}\n    deploy:\n      resources:\n        limits: {pids: 64}\n    secrets: [token]\n    configs: [{source: motd, target: /etc/motd}]\n    networks:\n      default:\n        aliases: [app-alias]\nsecrets:\n  token:\n    file: ./token.txt\nconfigs:\n  motd:\n    file: ./motd\n";
    let stack = TestStack::new("settings", body, &[]);
    std::fs::write(stack.dir.path().join("token.txt"), "not-a-real-token").unwrap();
    std::fs::write(stack.dir.path().join("motd"), "hello from a config").unwrap();
    stack.deploy(&[]);
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.changeover.stack={}", stack.name),
    ]);
    let inspect = |format: &str| docker(&["inspect", "-f", format, &id]);
    assert_eq!(
        inspect("{{.Config.User}} {{.Config.WorkingDir}} {{.Config.Hostname}} {{json .Config.Entrypoint}} {{.Config.StopSignal}} {{.Config.StopTimeout}}"),
        r#"1000:1000 /srv appbox ["sh","-c"] SIGINT 3"#
    );
    assert_eq!(
        inspect("{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Init}} {{json .HostConfig.CapAdd}} {{json .HostConfig.CapDrop}} {{json .HostConfig.Sysctls}} {{json .HostConfig.ExtraHosts}} {{json .HostConfig.DnsOptions}}"),
        r#"true true ["NET_ADMIN"] ["MKNOD"] {"net.ipv4.ip_unprivileged_port_start":"80"} ["db.internal:10.1.2.3"] ["ndots:2"]"#
    );
    assert_eq!(
        inspect("{{.HostConfig.ShmSize}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{json .HostConfig.Ulimits}} {{.HostConfig.LogConfig.Type}} {{json .HostConfig.LogConfig.Config}}"),
        r#"33554432 268435456 500000000 64 [{"Hard":4096,"Name":"nofile","Soft":2048}] json-file {"max-size":"1m"}"#
    );
    // And the container lives by them.
    let read = |path: &str| {
        wait_for(Duration::from_secs(10), || {
            let out = std::process::Command::new("docker")
                .args(["exec", &id, "cat", path])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| panic!("{path} was written"))
    };
    assert_eq!(read("/tmp/uid"), "1000");
    assert_eq!(read("/tmp/nofile"), "2048");
    assert_eq!(read("/tmp/pwd"), "/srv");
    assert_eq!(
        read("/run/secrets/token"),
        "not-a-real-token",
        "a secret from its file"
    );
    assert_eq!(read("/etc/motd"), "hello from a config");
    let aliases = inspect(&format!(
        "{{{{json (index .NetworkSettings.Networks \"{}_default\").Aliases}}}}",
        stack.name
    ));
    assert!(
        aliases.contains("\"app\"") && aliases.contains("\"app-alias\""),
        "{aliases}"
    );
    assert!(read("/etc/hosts").contains("10.1.2.3\tdb.internal"));
    let exported = changeover(&["stack", "export", &stack.name], &[]);
    let text = String::from_utf8_lossy(&exported.stdout);
    let reread = changeover_core::stack::parse(&text, "export.yml", None)
        .stack
        .expect("the export is a valid stack");
    let record: changeover_core::service::ServiceSpec =
        serde_json::from_value(inspect_record(&format!("{}/app", stack.name))).unwrap();
    assert_eq!(reread.services, vec![record], "{text}");
}

#[test]
fn gpus_a_stack_asks_for_reach_the_daemon_which_says_when_it_has_none() {
    let _edge = shared_edge();
    changeover_tests::fixture_image();
    // This machine has no GPU driver: the daemon's own refusal shows the
    // request got there, and the deploy leaves nothing behind.
    let body = "services:\n  ollama:\n    image: changeover-fixture:busybox\n    command: [\"sleep\", \"3600\"]\n    labels: {dev.changeover.test: \"1\"}\n    deploy:\n      resources:\n        reservations:\n          devices:\n            - capabilities: [gpu]\n              count: all\n";
    let stack = TestStack::new("gpus", body, &[]);
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("could not select device driver \"\" with capabilities: [[gpu]]"),
        "the daemon's words: {err}"
    );
    assert!(
        !stack.containers().iter().any(|c| c.ends_with("=running")),
        "{:?}",
        stack.containers()
    );
}

fn inspect_record(name: &str) -> Value {
    inspect(name)["record"]["spec"].clone()
}

#[test]
fn an_external_volume_is_used_as_it_is_never_created_and_never_removed_with_the_stack() {
    let _edge = shared_edge();
    changeover_tests::fixture_image();
    let stack = TestStack::new("external", "services: {}\n", &[]);
    // Both prefixed by the stack's name only so a failed run leaves nothing.
    let (outside, own) = (
        format!("{}_made-outside", stack.name),
        format!("{}_named", stack.name),
    );
    let body = format!(
        "name: {}\nservices:\n  app:\n    image: changeover-fixture:busybox\n    command: [\"sh\", \"-c\", \"cat /data/hello > /own/seen; exec sleep 3600\"]\n    volumes: [\"ext:/data\", \"mine:/own\"]\n    labels: {{dev.changeover.test: \"1\"}}\nvolumes:\n  ext:\n    external: true\n    name: {outside}\n  mine:\n    name: {own}\n",
        stack.name
    );
    std::fs::write(stack.dir.path().join("stack.yml"), body).unwrap();
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(
        !out.status.success(),
        "refused while the volume is not there"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("volume {outside} is external (the stack says `external: true`) and this daemon has none of that name: create it (docker volume create {outside}) or remove `external`")),
        "{err}"
    );
    assert!(
        !volume_exists(&outside),
        "an external volume is never created"
    );
    assert!(stack.containers().is_empty(), "{:?}", stack.containers());

    docker(&["volume", "create", &outside]);
    docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{outside}:/v"),
        "changeover-fixture:busybox",
        "sh",
        "-c",
        "echo made outside > /v/hello",
    ]);
    stack.deploy(&[]);
    assert!(
        volume_exists(&own),
        "the named volume has the name the stack gives it"
    );
    let seen = wait_for(Duration::from_secs(10), || {
        let out = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "-v",
                &format!("{own}:/v"),
                "changeover-fixture:busybox",
                "cat",
                "/v/seen",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(
        seen.as_deref(),
        Some("made outside"),
        "the data made outside is used"
    );
    let out = changeover(&["stack", "rm", &stack.name, "--volumes", "--yes"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !volume_exists(&own),
        "the stack's own volume went, as asked"
    );
    assert!(volume_exists(&outside), "the external one stays");
    docker(&["volume", "rm", &outside]);
}

/// An image that declares a VOLUME (/state), as databases' images do.
fn image_with_volume() -> &'static str {
    changeover_tests::fixture_image();
    let image = "changeover-fixture:with-volume";
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM changeover-fixture:busybox\nVOLUME /state\n",
    )
    .unwrap();
    docker(&["build", "-q", "-t", image, ctx.path().to_str().unwrap()]);
    image
}

#[test]
fn anonymous_volumes_and_an_images_volume_keep_their_data_from_release_to_release() {
    let _edge = shared_edge();
    let image = image_with_volume();
    let body = |greeting: &str| {
        format!(
            "services:\n  app:\n    image: {image}\n    command: [\"sh\", \"-c\", \"[ -f /data/first ] || hostname > /data/first; [ -f /state/first ] || hostname > /state/first; sleep 3600\"]\n    environment: {{GREETING: {greeting}}}\n    volumes: [\"/data\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n      snapshots: {{before_deploy: true}}\n"
        )
    };
    let stack = TestStack::new("anon", &body("one"), &[]);
    // The plan says where the image's VOLUME will be kept.
    let plan = changeover(&["stack", "deploy", "-f", &stack.file(), "--dry-run"], &[]);
    let planned = String::from_utf8_lossy(&plan.stdout);
    assert!(
        planned.contains(&format!(
            "image VOLUME /state in {}_app_anon_state (new)",
            stack.name
        )),
        "{planned}"
    );
    stack.deploy(&[]);
    let running = || {
        docker(&[
            "ps",
            "--filter",
            &format!("label=dev.changeover.stack={}", stack.name),
            "--format",
            "{{.Names}}",
        ])
    };
    let first = running();
    assert!(first.ends_with("-r1-s0"), "{first}");
    let written = docker(&["exec", &first, "cat", "/data/first"]);
    assert_eq!(docker(&["exec", &first, "cat", "/state/first"]), written);
    // A new release: a new container, the same volume.
    std::fs::write(
        stack.dir.path().join("stack.yml"),
        format!("name: {}\n{}", stack.name, body("two")),
    )
    .unwrap();
    stack.deploy(&[]);
    let second = running();
    assert!(second.ends_with("-r2-s0"), "{second}");
    assert_eq!(
        docker(&["exec", &second, "cat", "/data/first"]),
        written,
        "release 2 sees what release 1 wrote"
    );
    assert_eq!(
        docker(&["exec", &second, "cat", "/state/first"]),
        written,
        "and in the image's VOLUME too"
    );
    let volume = format!("{}_app_anon_data", stack.name);
    let binds = docker(&["inspect", "-f", "{{json .HostConfig.Binds}}", &second]);
    assert!(binds.contains(&format!("{volume}:/data")), "{binds}");
    assert_eq!(
        docker(&[
            "volume",
            "inspect",
            "-f",
            "{{index .Labels \"dev.changeover.stack\"}}",
            &volume
        ]),
        stack.name,
        "the stack's volume: `stack rm --volumes` names it"
    );
    let exported = changeover(&["stack", "export", &stack.name], &[]);
    let text = String::from_utf8_lossy(&exported.stdout);
    assert!(
        text.contains("- \"/data\"") && !text.contains("app_anon_data"),
        "exported as written: {text}"
    );
    // Both were snapshotted before release 2.
    let image_volume = format!("{}_app_anon_state", stack.name);
    let mut snapshot_names = Vec::new();
    for v in [&volume, &image_volume] {
        let snapshots = docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.changeover.snapshot.of={v}"),
        ]);
        assert_eq!(
            snapshots.lines().count(),
            1,
            "a snapshot of {v}: {snapshots:?}"
        );
        snapshot_names.push(snapshots);
    }
    // Removing the stack with its volumes names and removes both.
    let plan = changeover(&["stack", "rm", &stack.name, "--volumes"], &[]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        said.contains(&volume) && said.contains(&image_volume),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "Their snapshots stay ({}); `changeover volume rm SNAPSHOT` removes one.",
            snapshot_names.join(", ")
        )),
        "the snapshots that stay are named: {said}"
    );
    let out = changeover(&["stack", "rm", &stack.name, "--volumes", "--yes"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for v in [&volume, &image_volume] {
        assert!(!volume_exists(v), "{v} removed");
    }
    for s in &snapshot_names {
        assert!(volume_exists(s), "snapshot {s} stays");
        docker(&["volume", "rm", s]);
    }
}

#[test]
fn two_services_whose_kept_volumes_would_share_a_name_are_refused() {
    let _edge = shared_edge();
    let image = image_with_volume();
    // Service db's slot 1 keeps its VOLUME in db_s1_anon_state, which is
    // also what service db_s1's slot 0 would be given.
    let service = |name: &str, replicas: u32| {
        format!(
            "  {name}:\n    image: {image}\n    command: [\"sh\", \"-c\", \"hostname >> /state/who; sleep 3600\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    deploy: {{replicas: {replicas}}}\n"
        )
    };
    let body = format!("services:\n{}{}", service("db", 2), service("db_s1", 1));
    let stack = TestStack::new("clash", &body, &[]);
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(!out.status.success(), "the second service is refused");
    let volume = format!("{}_db_s1_anon_state", stack.name);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "volume {volume} holds the data of service db of stack {}, and service db_s1 would be given the same volume: rename one of the two services",
            stack.name
        )),
        "{err}"
    );
    let who = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/v"),
        "changeover-fixture:busybox",
        "cat",
        "/v/who",
    ]);
    assert_eq!(
        who.lines().count(),
        1,
        "only db's slot 1 ever wrote there: {who}"
    );
    assert!(
        !stack
            .containers()
            .iter()
            .any(|c| c.contains("-db_s1-") && c.ends_with("=running")),
        "nothing of db_s1 runs: {:?}",
        stack.containers()
    );
}
