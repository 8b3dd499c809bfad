//! Automatic redeploys for real: services with `x-changeover.autoredeploy`
//! on the real daemon, images pushed to Debian's `docker-registry` on
//! loopback or rebuilt on the daemon, and `changeover watch` (one pass with
//! `--once`, and the loop woken by the daemon's image events).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use changeover_tests::registry::Registry;
use changeover_tests::{changeover, free_port, get, wait_for, Load, TestStack};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn stack(prefix: &str, image: &str, port: u16, auto: &str) -> TestStack {
    TestStack::web(
        prefix,
        &format!("image: {image}"),
        port,
        &[
            "health: {path: /health, interval: 300ms, timeout: 1s}",
            "drain_timeout: 2s",
            "deploy_timeout: 6s",
            "canary: {percent: 50}",
            &format!("autoredeploy: {auto}"),
        ],
    )
}

/// One `watch --once --json` pass: its exit code and the check of `service`.
fn pass(service: &str) -> (Output, Value) {
    let out = changeover(&["watch", service, "--once", "--json"], &[]);
    let check = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|c| c["service"] == service)
        .unwrap_or_else(|| {
            panic!(
                "{service} is checked: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
    (out, check)
}

/// One pass that must redeploy `service`; its check.
fn redeployed(service: &str) -> Value {
    let (out, check) = pass(service);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(check["outcome"]["kind"], "redeployed", "{check}");
    check
}

fn version(port: u16) -> Option<String> {
    get(port)
        .ok()?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// A plain registry with `repo:stable` (demo v1), and a service deployed
/// from it watching as `auto` says.
struct Stable {
    registry: Registry,
    repo: String,
    port: u16,
    stack: TestStack,
    service: String,
}

fn stable_service(prefix: &str, auto: &str) -> Stable {
    changeover_tests::demo_images(&[]);
    let registry = Registry::plain();
    let repo = changeover_tests::unique(&format!("t-{prefix}"));
    let stable = registry.push_image("changeover-demo:v1", &repo, "stable");
    let port = free_port();
    let stack = stack(prefix, &stable, port, auto);
    stack.deploy(&[]);
    let service = stack.web_service();
    Stable {
        registry,
        repo,
        port,
        stack,
        service,
    }
}

#[test]
fn a_newer_tag_in_the_semver_range_goes_out_and_a_broken_one_never_takes_traffic() {
    changeover_tests::demo_images(&["changeover-demo:v1-unhealthy"]);
    let registry = Registry::plain();
    let repo = changeover_tests::unique("t-auto-semver");
    let first = registry.push_image("changeover-demo:v1", &repo, "1.2.0");
    let port = free_port();
    let stack = stack(
        "autosemver",
        &first,
        port,
        "{watch: \"semver:^1.2\", check_every: 5s}",
    );
    stack.deploy(&[]);
    let service = stack.web_service();
    let (_, check) = pass(&service);
    assert_eq!(check["outcome"]["kind"], "upToDate", "{check}");

    registry.push_image("changeover-demo:v2", &repo, "1.3.0");
    registry.push_image("changeover-demo:v2", &repo, "2.0.0");
    registry.forget_locally(&repo, "1.3.0");
    let check = redeployed(&service);
    assert!(
        check["outcome"]["image"]
            .as_str()
            .unwrap()
            .ends_with(":1.3.0"),
        "the newest in ^1.2, not 2.0.0: {check}"
    );
    assert_eq!(version(port).as_deref(), Some("v2"));

    // A broken image in range: refused by its health check while the
    // release before keeps every request answered.
    registry.push_image("changeover-demo:v1-unhealthy", &repo, "1.4.0");
    let load = Load::start(port, 2);
    let (out, check) = pass(&service);
    let counts = load.finish();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed redeploy is the exit code"
    );
    assert_eq!(check["outcome"]["kind"], "failed", "{check}");
    assert_eq!(counts.failed, 0, "no request failed: {:?}", counts.failures);
    assert!(counts.ok > 0);
    assert_eq!(
        version(port).as_deref(),
        Some("v2"),
        "the release before serves"
    );
}

#[test]
fn a_tag_pushed_again_goes_out_as_a_canary_and_is_promoted_after_its_time() {
    let Stable {
        registry,
        repo,
        port,
        stack: _stack,
        service,
    } = stable_service(
        "autodigest",
        "{watch: digest, check_every: 5s, strategy: canary, promote_after: 1s}",
    );
    let (_, check) = pass(&service);
    assert_eq!(check["outcome"]["kind"], "upToDate", "{check}");

    // Another machine pushes `stable` again (here: v2 pushed, then the
    // registry's `stable` pointed at it).
    registry.push_image("changeover-demo:v2", &repo, "next");
    registry.retag(&repo, "next", "stable");
    let check = redeployed(&service);
    assert!(
        check["outcome"]["why"]
            .as_str()
            .unwrap()
            .contains("promoted"),
        "{check}"
    );
    assert_eq!(version(port).as_deref(), Some("v2"));
    let inspect = changeover(&["service", "inspect", &service, "--json"], &[]);
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(
        v["record"]["candidate"].is_null(),
        "promoted, not waiting: {v}"
    );
}

#[test]
fn a_local_tag_rebuilt_goes_out_and_the_watch_loop_reacts_to_the_daemons_event() {
    changeover_tests::demo_images(&[]);
    let tag = format!("{}:dev", changeover_tests::unique("t-auto-local"));
    let build = |from: &str| changeover_tests::build_stamped(&tag, from);
    build("changeover-demo:v1");
    let port = free_port();
    let stack = stack("autolocal", &tag, port, "{watch: local}");
    stack.deploy(&[]);
    let service = stack.web_service();
    build("changeover-demo:v2");
    redeployed(&service);
    assert_eq!(version(port).as_deref(), Some("v2"));

    // The loop: a rebuild is seen from the daemon's events, not a timer
    // (check_every is a minute here).
    let mut watcher = changeover_tests::KillOnDrop(
        changeover_tests::changeover_cmd(&["watch", &service, "--json"], &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    build("changeover-demo:v1");
    let seen = wait_for(Duration::from_secs(40), || {
        (version(port).as_deref() == Some("v1")).then_some(())
    });
    let _ = watcher.0.kill();
    assert!(
        seen.is_some(),
        "the rebuilt tag went out from the watch loop"
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .output();
}

/// One HTTP request to the watcher's webhook; its status code.
fn post(port: u16, method: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = r#"{"events":[{"action":"push"}]}"#;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    c.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_webhook_with_the_token_starts_a_pass_at_once_and_one_without_changes_nothing() {
    // Checked once an hour: only the webhook can make it go out now.
    let Stable {
        registry,
        repo,
        port,
        stack: _stack,
        service,
    } = stable_service("autohook", "{watch: digest, check_every: 1h}");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "short").unwrap();
    let hook = free_port();
    let addr = format!("127.0.0.1:{hook}");
    let refused = changeover(
        &[
            "watch",
            &service,
            "--webhook",
            &addr,
            "--webhook-token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("16 to 256"),
        "{}",
        text(&refused.stderr)
    );

    let token = "t0ken-for-the-webhook-test";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut watcher = changeover_tests::KillOnDrop(
        changeover_tests::changeover_cmd(
            &[
                "watch",
                &service,
                "--webhook",
                &addr,
                "--webhook-token-file",
                token_file.to_str().unwrap(),
            ],
            &[],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", hook)).ok()
    })
    .expect("the webhook listens");
    std::thread::sleep(Duration::from_secs(2));
    registry.push_image("changeover-demo:v2", &repo, "next");
    registry.retag(&repo, "next", "stable");

    assert_eq!(
        post(hook, "POST", "/hooks/wrong-token-of-the-same-len"),
        Some(404)
    );
    assert_eq!(post(hook, "GET", &format!("/hooks/{token}")), Some(405));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        version(port).as_deref(),
        Some("v1"),
        "nothing went out without the token"
    );

    assert_eq!(post(hook, "POST", &format!("/hooks/{token}")), Some(202));
    let went = wait_for(Duration::from_secs(60), || {
        (version(port).as_deref() == Some("v2")).then_some(())
    });
    let _ = watcher.0.kill();
    assert!(went.is_some(), "the webhook started a pass that redeployed");
}

/// Removes the installed watcher when the test ends, however it ends.
struct WatcherGuard;

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "changeover-watcher"])
            .output();
    }
}

#[test]
fn an_installed_watcher_redeploys_with_no_cli_running_by_the_login_copied_into_it() {
    changeover_tests::demo_images(&[]);
    let registry = Registry::with_login("erin", "watch-pw-7");
    let host = registry.host();
    let repo = changeover_tests::unique("t-watcher");
    let stable = registry.push_image("changeover-demo:v1", &repo, "stable");
    // Changeover's own login: the password in the keyring only.
    let home = changeover_tests::home::Home::new();
    let env = home.env();
    let out = home.login(&host, "erin", "watch-pw-7");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = free_port();
    let stack = stack("watcher", &stable, port, "{watch: digest, check_every: 5s}");
    stack.deploy(&env);
    let service = stack.web_service();
    let _guard = WatcherGuard;
    let there = || {
        std::process::Command::new("docker")
            .args(["inspect", "changeover-watcher"])
            .output()
            .unwrap()
            .status
            .success()
    };

    // It mounts the Docker socket: said, and not done without a yes.
    let out = changeover(&["watch", "--install", &stack.name], &env);
    let said = text(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("with the Docker socket /var/run/docker.sock mounted into it")
            && said.contains(&format!("It watches: {service}."))
            && said.contains(&format!(
                "The logins for {host} stay in this machine's keyring"
            ))
            && said.contains("--with-logins")
            && said.contains("--yes"),
        "{said}"
    );
    assert!(!said.contains("watch-pw-7"), "never the password: {said}");
    assert!(!there(), "nothing was created");

    let out = changeover(
        &["watch", "--install", "--yes", "--with-logins", &stack.name],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "The logins for {host} are copied into the container"
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("the watcher runs on default as changeover-watcher"),
        "{}",
        text(&out.stdout)
    );
    let image =
        changeover_tests::docker(&["inspect", "-f", "{{.Config.Image}}", "changeover-watcher"]);
    let history = changeover_tests::docker(&["history", "--no-trunc", &image]);
    assert!(
        !history.contains("watch-pw-7") && !history.contains("config.json"),
        "the login is in the container, not its image: {history}"
    );

    // Another machine pushes `stable` again; no changeover runs here.
    registry.push_image("changeover-demo:v2", &repo, "next");
    registry.retag(&repo, "next", "stable");
    let seen = wait_for(Duration::from_secs(60), || {
        (version(port).as_deref() == Some("v2")).then_some(())
    });
    assert!(
        seen.is_some(),
        "the installed watcher pulled with the copied login and redeployed"
    );
    // Its output says so once the old release has drained.
    let mut shown = String::new();
    let said = wait_for(Duration::from_secs(30), || {
        shown = text(&changeover(&["watch", "--status"], &env).stdout);
        shown
            .contains(&format!("{service}: redeployed"))
            .then_some(())
    });
    assert!(
        said.is_some() && shown.contains("changeover-watcher on default: running"),
        "{shown}"
    );

    // Installed again: replaced, still one; then removed, once.
    let out = changeover(
        &["watch", "--install", "--yes", "--with-logins", &stack.name],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("The watcher there now is replaced."),
        "{}",
        text(&out.stderr)
    );
    let out = changeover(&["watch", "--uninstall"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!there());
    let again = changeover(&["watch", "--uninstall"], &env);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("no watcher is installed on default"),
        "{}",
        text(&again.stderr)
    );
    for bad in [
        vec!["watch", "--install", "--yes", "--socket", "relative.sock"],
        vec!["watch", "--install", "--once"],
    ] {
        let out = changeover(&bad, &env);
        assert!(!out.status.success(), "{bad:?}");
        assert!(!there(), "{bad:?} created nothing");
    }
}
