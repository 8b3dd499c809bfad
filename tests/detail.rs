//! Container detail against the real daemon, through the application layer
//! and the CLI: logs that are huge, binary or not UTF-8 stay bounded and
//! readable; a terminal answers, ends with the shell's exit code, and ends
//! cleanly when its container goes away; exec into a stopped container is
//! refused; inspect masks nothing but marks secret-looking variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use changeover_application::containers::TerminalMode;
use changeover_core::detail::{TerminalEvent, MAX_LOG_LINE};
use changeover_tests::{changeover, default_environment, docker, unique, wait_for, TestContainer};

#[test]
fn logs_with_a_megabyte_line_and_bytes_that_are_not_utf8_stay_bounded() {
    let name = unique("biglog");
    let script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; printf 'caf\\351 \\001\\002 end\\n'; echo last; sleep 600";
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            changeover_tests::TEST_LABEL,
            "-e",
            "API_TOKEN=s3cret",
        ])
        .arg(changeover_tests::fixture_image())
        .args(["/bin/sh", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success());
    let _guard = Guard(name.clone());
    wait_for(Duration::from_secs(10), || {
        let o = changeover(&["logs", &name, "--tail", "all"], &[]);
        String::from_utf8_lossy(&o.stdout)
            .contains("last")
            .then_some(())
    })
    .expect("the logs arrive");
    let o = changeover(&["logs", &name, "--tail", "all"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let big = lines
        .iter()
        .find(|l| l.starts_with("xxx"))
        .expect("the long line");
    assert!(
        big.len() < MAX_LOG_LINE + 100,
        "a 1 MB line is cut to about {MAX_LOG_LINE} bytes, not {}",
        big.len()
    );
    assert!(big.contains("more bytes cut"), "and says so");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("caf\u{fffd}") && l.ends_with("end")),
        "bytes that are not UTF-8 show as replacement characters: {lines:?}"
    );
    // Inspect marks the secret-looking variable.
    let env = default_environment();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt
        .block_on(changeover_application::containers::detail(&env, &name))
        .unwrap();
    let token = d.env.iter().find(|v| v.key == "API_TOKEN").unwrap();
    assert!(token.secret, "API_TOKEN is marked secret");
    assert!(d.running);
}

struct Guard(String);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

type Events = Arc<Mutex<Vec<TerminalEvent>>>;

fn text(events: &Events) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Data { data } => {
                Some(String::from_utf8_lossy(&engine.decode(data).unwrap()).into_owned())
            }
            _ => None,
        })
        .collect()
}

fn exit(events: &Events) -> Option<(Option<i64>, String)> {
    events.lock().unwrap().iter().find_map(|e| match e {
        TerminalEvent::Exit { code, message } => Some((*code, message.clone())),
        _ => None,
    })
}

#[test]
fn a_terminal_answers_ends_with_the_shells_code_and_ends_when_the_container_goes() {
    let env = default_environment();
    let envs = changeover_application::Environments::from_process();
    let terminals = envs.terminals().clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = unique("term");
    let _c = TestContainer::new(&name, &[], true);

    let events: Events = Default::default();
    let sink = {
        let e = events.clone();
        Arc::new(move |ev: TerminalEvent| e.lock().unwrap().push(ev))
    };
    let opened = rt
        .block_on(terminals.open(&env, &name, TerminalMode::Auto, (100, 30), sink))
        .unwrap();
    assert_eq!(opened.shell, "sh", "busybox has sh, not bash");
    assert!(!opened.debug);
    rt.block_on(terminals.input(opened.id, b"echo hi-$((20+22)); stty size\r".to_vec()))
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        text(&events).contains("hi-42").then_some(())
    })
    .expect("the shell answers");
    wait_for(Duration::from_secs(5), || {
        text(&events).contains("30 100").then_some(())
    })
    .expect("the TTY has the size asked for");
    rt.block_on(terminals.resize(opened.id, 120, 40)).unwrap();
    rt.block_on(terminals.input(opened.id, b"stty size\r".to_vec()))
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        text(&events).contains("40 120").then_some(())
    })
    .expect("the TTY follows a resize");
    rt.block_on(terminals.input(opened.id, b"exit 3\r".to_vec()))
        .unwrap();
    let (code, message) =
        wait_for(Duration::from_secs(10), || exit(&events)).expect("the session ends");
    assert_eq!(code, Some(3), "{message}");
    assert!(message.contains("code 3"), "{message}");
    let gone = rt
        .block_on(terminals.input(opened.id, b"x".to_vec()))
        .unwrap_err();
    assert!(gone.message.contains("not open"), "{gone}");

    // The container goes away mid-session.
    let events: Events = Default::default();
    let sink = {
        let e = events.clone();
        Arc::new(move |ev: TerminalEvent| e.lock().unwrap().push(ev))
    };
    let opened = rt
        .block_on(terminals.open(&env, &name, TerminalMode::Debug, (80, 24), sink))
        .unwrap();
    assert!(
        opened.debug && opened.note.contains("/proc/1/root"),
        "{}",
        opened.note
    );
    docker(&["rm", "-f", &name]);
    let (_, message) =
        wait_for(Duration::from_secs(15), || exit(&events)).expect("the session ends");
    assert!(
        message.contains("went away") || message.contains("stopped"),
        "it says why: {message}"
    );
    let helpers = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.changeover.helper=debug:{}", _c.id),
    ]);
    wait_for(Duration::from_secs(10), || {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.changeover.helper=debug:{}", _c.id),
        ])
        .is_empty()
        .then_some(())
    })
    .unwrap_or_else(|| panic!("the debug helper is removed: {helpers}"));
}

#[test]
fn a_stopped_container_gets_no_terminal_and_exec_says_why() {
    let name = unique("stopped");
    let _c = TestContainer::new(&name, &[], false);
    let out = changeover(&["exec", &name, "--", "/bin/true"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not running"), "{err}");
    let out = changeover(&["exec", &unique("nosuch"), "--", "/bin/true"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no container"));
    // And a command's own exit code is exec's.
    let running = unique("runs");
    let _r = TestContainer::new(&running, &[], true);
    let out = changeover(
        &["exec", &running, "--", "/bin/sh", "-c", "echo out; exit 7"],
        &[],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "out");
}

#[test]
fn a_services_logs_follow_it_across_a_rollout() {
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::new(
        "logs",
        &format!(
            "services:\n  web:\n    image: changeover-demo:v1\n    ports: [\"{port}:8080\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    deploy:\n      replicas: 2\n    x-changeover:\n      health: {{path: /health, interval: 500ms, timeout: 1s}}\n"
        ),
        &[port],
    );
    let out = changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = format!("{}/web", stack.name);
    let env = default_environment();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen: Arc<Mutex<Vec<changeover_core::detail::LogLine>>> = Default::default();
    let sink = {
        let s = seen.clone();
        Arc::new(move |b: changeover_application::containers::LogBatch| {
            s.lock().unwrap().extend(b.lines)
        })
    };
    let query = changeover_core::detail::LogQuery {
        follow: true,
        tail: None,
        all: false,
        since: None,
    };
    let _follow = rt
        .block_on(changeover_application::containers::logs(
            &env, &svc, query, sink,
        ))
        .unwrap();
    let out = changeover(&["service", "deploy", &svc, "--tag", "v2"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both = wait_for(Duration::from_secs(15), || {
        let lines = seen.lock().unwrap();
        let v2: Vec<_> = lines.iter().filter(|l| l.release == Some(2)).collect();
        (lines.iter().any(|l| l.release == Some(1)) && v2.len() >= 2).then_some(())
    });
    let lines = seen.lock().unwrap().clone();
    assert!(
        both.is_some(),
        "lines of release 1 and of both new containers of release 2: {lines:?}"
    );
    let v2 = lines.iter().find(|l| l.release == Some(2)).unwrap();
    assert!(
        v2.text.contains("v2") && v2.slot.is_some() && v2.time.is_some(),
        "{v2:?}"
    );
    let mut keys: Vec<(Option<u32>, Option<u32>, String)> = lines
        .iter()
        .map(|l| (l.release, l.slot, l.text.clone()))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "no line is shown twice: {lines:?}");
}
