//! The real app in a real window (Xvfb + tauri-driver + WebKitWebDriver),
//! against the real daemon. Nothing here clicks to refresh: what the `docker`
//! CLI does must show up by itself.
//!
//! Run one at a time (`--test-threads=1`): each test owns a display and a
//! WebKit process, and two cores are not enough for several at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use changeover_tests::gui::{Gui, ESCAPE};
use changeover_tests::{
    docker, docker_at, target_dir, unique, workspace, PrivateDaemon, TestContainer, TEST_LABEL,
};
use serde_json::json;

fn app() -> std::path::PathBuf {
    target_dir("debug").join("changeover-app")
}

/// A script that finds the container row named `name` as `r` and returns `expr`.
fn row_js(name: &str, expr: &str) -> String {
    format!(
        "const r = [...document.querySelectorAll('[data-testid=container-row]')].find(e => e.dataset.name === {}); return {expr};",
        json!(name)
    )
}

fn row_state_js(name: &str) -> String {
    row_js(name, "r ? r.dataset.state : null")
}

#[test]
fn the_window_follows_the_docker_cli_live_and_makes_the_readme_screenshot() {
    // Something worth looking at in the screenshot: a small Compose project.
    let web = TestContainer::new(
        &unique("shop-web"),
        &[
            "--label",
            "com.docker.compose.project=shop",
            "--label",
            "com.docker.compose.service=web",
        ],
        true,
    );
    let db_volume = unique("shop-data");
    docker(&["volume", "create", "--label", TEST_LABEL, &db_volume]);
    let mount = format!("{db_volume}:/data");
    let db = TestContainer::new(
        &unique("shop-db"),
        &[
            "--label",
            "com.docker.compose.project=shop",
            "--label",
            "com.docker.compose.service=db",
            "-v",
            &mount,
        ],
        true,
    );

    let gui = Gui::launch("live", &app(), &[]);
    gui.wait_js(
        "const e = document.querySelector('[data-testid=environment][data-name=default]'); return e && e.dataset.state === 'connected';",
        Duration::from_secs(15),
        "the app opens on the local environment, connected",
    );
    let summary = gui.wait_js(
        "const e = document.querySelector('[data-testid=env-summary]'); return e && e.textContent;",
        Duration::from_secs(5),
        "the environment's status line shows",
    );
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    let summary = summary.as_str().unwrap();
    assert!(
        summary.contains(&format!("Docker {version}")),
        "daemon version: {summary}"
    );
    assert!(summary.contains("linux/"), "OS/arch: {summary}");
    assert!(
        summary.contains("running)") && summary.contains("image"),
        "counts: {summary}"
    );
    gui.wait_js(
        &row_state_js(&web.name),
        Duration::from_secs(5),
        "existing containers are listed",
    );

    // Started with the docker CLI: appears with no click.
    let name = unique("gui-live");
    let started = TestContainer::new(&name, &[], true);
    gui.wait_js(
        &row_js(&name, "r && r.dataset.state === 'running'"),
        Duration::from_secs(1),
        "a container started with `docker run` shows as running within 1 s",
    );

    gui.screenshot(&workspace().join("docs/screenshots/main.png"));

    // `/` focuses the search box, and typing filters the list.
    gui.press("/");
    let focused = gui.js("return document.activeElement && document.activeElement.dataset.testid");
    assert_eq!(focused, json!("search"), "`/` focuses search");
    gui.send_keys("[data-testid=search]", &name);
    gui.wait_js(
        "return document.querySelectorAll('[data-testid=container-row]').length === 1",
        Duration::from_secs(2),
        "the search leaves only the matching container",
    );
    gui.send_keys("[data-testid=search]", ESCAPE);
    gui.wait_js(
        "return document.querySelector('[data-testid=search]').value === '' && document.querySelectorAll('[data-testid=container-row]').length > 1",
        Duration::from_secs(2),
        "Escape clears the search",
    );

    // Removed with the docker CLI: disappears with no click.
    drop(started);
    gui.wait_js(
        &row_js(&name, "!r"),
        Duration::from_secs(1),
        "a removed container disappears within 1 s",
    );

    // The volume view knows who uses the volume.
    gui.click("[data-testid=section-volumes]");
    let db_row = volume_row(&gui, &db_volume);
    let users = gui.wait_js(
        &format!("const r = document.querySelector('{db_row}'); return r && r.textContent"),
        Duration::from_secs(2),
        "the volume row reads",
    );
    assert!(
        users.as_str().unwrap().contains(&db.name),
        "the volume row names its user: {users}"
    );
    drop(gui);
    drop(db);
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &db_volume])
        .output();
}

#[test]
fn unusual_names_and_labels_do_not_break_the_layout() {
    let long_name = format!("very-long-{}", "x".repeat(200));
    let _c = TestContainer::new(
        &long_name,
        &[
            "--label",
            &format!(
                "com.docker.compose.project=ünïcødé-スタック-🚀-{}",
                "y".repeat(120)
            ),
            "--label",
            "note=日本語のラベル\u{202e}reversed",
        ],
        true,
    );
    let gui = Gui::launch("layout", &app(), &[]);
    gui.wait_js(
        &row_state_js(&long_name),
        Duration::from_secs(15),
        "the long-named container is listed",
    );
    let layout = gui
        .js(&format!(
            "const r = [...document.querySelectorAll('[data-testid=container-row]')].find(e => e.dataset.name === {});
             const g = [...document.querySelectorAll('[data-testid=group-row]')].find(e => e.dataset.name.startsWith('ünïcødé'));
             const doc = document.documentElement;
             return {{ rowHeight: r.getBoundingClientRect().height, groupHeight: g ? g.getBoundingClientRect().height : -1,
                      rowRight: r.getBoundingClientRect().right, viewport: doc.clientWidth,
                      overflow: doc.scrollWidth - doc.clientWidth }};",
            json!(long_name)
        ));
    assert_eq!(
        layout["rowHeight"],
        json!(34),
        "a long name stays on one 34 px row: {layout}"
    );
    assert_eq!(
        layout["groupHeight"],
        json!(34),
        "a unicode group name stays on one row: {layout}"
    );
    assert!(
        layout["rowRight"].as_f64().unwrap() <= layout["viewport"].as_f64().unwrap(),
        "the row fits the window: {layout}"
    );
    assert_eq!(
        layout["overflow"],
        json!(0),
        "nothing scrolls sideways: {layout}"
    );
    drop(gui);
}

#[test]
fn a_malformed_docker_host_is_explained_in_the_window() {
    let gui = Gui::launch("bad-docker-host", &app(), &[("DOCKER_HOST", "tcp//x")]);
    let text = gui
        .wait_js(
            "const e = document.querySelector('[data-testid=env-state][data-state=invalid]'); return e && e.textContent;",
            Duration::from_secs(10),
            "the window explains the bad DOCKER_HOST",
        );
    let text = text.as_str().unwrap();
    assert!(
        text.contains("DOCKER_HOST=tcp//x"),
        "names the value: {text}"
    );
    assert!(
        text.contains("Pick another environment"),
        "says what to do: {text}"
    );
    let usable = gui.js("return !!document.querySelector('[data-testid=section-containers]') && !!document.querySelector('[data-testid=search]')");
    assert_eq!(usable, json!(true), "the rest of the window stays usable");
    drop(gui);
}

#[test]
fn the_window_says_disconnected_while_the_daemon_is_away_then_resyncs() {
    let mut daemon = PrivateDaemon::start();
    let host = daemon.host();
    let before = unique("away-before");
    let _b = TestContainer::on(Some(&host), &before, &["--network", "none"], false);

    let gui = Gui::launch("daemon-away", &app(), &[("DOCKER_HOST", &host)]);
    gui.wait_js(
        &row_state_js(&before),
        Duration::from_secs(15),
        "the private daemon's container is listed",
    );

    daemon.stop();
    let text = gui
        .wait_js(
            "const e = document.querySelector('[data-testid=env-state][data-state=disconnected]'); return e && e.textContent;",
            Duration::from_secs(10),
            "the window says the daemon is away",
        );
    assert!(text.as_str().unwrap().contains("Disconnected"), "{text}");
    let nav = gui.js("return document.querySelector('[data-testid=environment]').dataset.state");
    assert_eq!(nav, json!("disconnected"), "the sidebar shows it too");

    daemon.resume();
    let after = unique("away-after");
    let _a = TestContainer::on(Some(&host), &after, &["--network", "none"], false);
    gui.wait_js(
        "return !document.querySelector('[data-testid=env-state][data-state=disconnected]')",
        Duration::from_secs(15),
        "the window recovers by itself",
    );
    gui.wait_js(
        &row_state_js(&after),
        Duration::from_secs(5),
        "a container created after the return shows",
    );
    let names = gui
        .js("return [...document.querySelectorAll('[data-testid=container-row]')].map(e => e.dataset.name)");
    let mut names: Vec<String> = serde_json::from_value(names).unwrap();
    names.sort();
    let listed = docker_at(Some(&host), &["ps", "-a", "--format", "{{.Names}}"]);
    let mut truth: Vec<String> = listed.lines().map(str::to_string).collect();
    truth.sort();
    assert_eq!(
        names, truth,
        "the window lists exactly what the daemon has: no stale rows, no duplicates"
    );
    drop(gui);
}

/// Counts the slot rows of the selected service by `(release, running, routed)`.
const SLOTS_EXPR: &str = "[...document.querySelectorAll('[data-testid=slot-row]')].filter(r => r.dataset.running === 'true').map(r => r.dataset.release + (r.dataset.routed === 'true' ? ':routed' : ':unrouted')).sort().join(',')";

/// A script that is truthy once the running slots are exactly `expected`.
fn slots_are(expected: &str) -> String {
    format!("return ({SLOTS_EXPR}) === '{expected}' || null")
}

fn wait_done(gui: &Gui, release: u32, what: &str) {
    let text = gui.wait_js(
        &format!(
            "const d = document.querySelector('[data-testid=rollout-done]'); const e = document.querySelector('[data-testid=rollout-error]'); if (e) return 'ERROR: ' + e.textContent; return d && d.textContent.includes('release {release}') && !document.querySelector('[data-testid=busy]') ? d.textContent : null;"
        ),
        Duration::from_secs(120),
        what,
    );
    assert!(
        !text.as_str().unwrap().starts_with("ERROR"),
        "{what}: {text}"
    );
}

#[test]
fn the_sample_stack_deploys_rolls_to_v2_and_back_with_a_live_timeline() {
    // A private daemon: its own edge and ports, nothing shared with the host's.
    let daemon = PrivateDaemon::start();
    let gui = Gui::launch("sandbox", &app(), &[("DOCKER_HOST", &daemon.host())]);
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-state=connected]')",
        Duration::from_secs(15),
        "the private daemon connects",
    );
    gui.click("[data-testid=section-services]");
    gui.wait_js(
        "return document.querySelector('[data-testid=services-empty]')",
        Duration::from_secs(15),
        "the empty services view offers the sample stack",
    );
    gui.click("[data-testid=try-sandbox]");
    wait_done(&gui, 1, "the sample stack is deployed");
    let slots = gui.js("return document.querySelectorAll('[data-testid=timeline-slot]').length");
    assert_eq!(slots, json!(3), "the timeline shows three slots");
    let routed = gui.js("return [...document.querySelectorAll('[data-testid=timeline-slot]')].every(s => s.querySelector('[data-phase=routed]'))");
    assert_eq!(routed, json!(true), "every slot went through 'routed'");
    gui.wait_js(
        &slots_are("1:routed,1:routed,1:routed"),
        Duration::from_secs(10),
        "three routed containers of release 1",
    );
    let hint = gui.js(
        "const h = document.querySelector('[data-testid=next-step]'); return h && h.textContent",
    );
    assert!(
        hint.as_str().unwrap_or("").contains("v2"),
        "suggests the next step: {hint}"
    );

    // Deploy v2 from the tag picker and watch the replacement; what it
    // would change is shown before the button is pressed.
    gui.js("const s = document.querySelector('[data-testid=deploy-tag]'); s.value = 'v2'; s.dispatchEvent(new Event('change')); return s.value");
    let plan = gui.wait_js(
        "const p = document.querySelector('[data-testid=deploy-plan] [data-field=image]'); return p && p.textContent.includes('v2') ? p.textContent : null",
        Duration::from_secs(15),
        "the deploy's changes are shown first",
    );
    assert!(
        plan.as_str()
            .unwrap()
            .contains("changeover-demo:v1 → changeover-demo:v2"),
        "{plan}"
    );
    gui.click("[data-testid=deploy-button]");
    wait_done(&gui, 2, "v2 is rolled out");
    let phases = gui.js("return [...document.querySelectorAll('[data-testid=timeline-slot] [data-phase]')].map(p => p.dataset.phase)");
    let phases: Vec<String> = serde_json::from_value(phases).unwrap();
    for p in [
        "creating",
        "starting",
        "health-checking",
        "routed",
        "old-draining",
        "old-stopped",
        "done",
    ] {
        assert!(
            phases.iter().any(|x| x == p),
            "the timeline shows {p}: {phases:?}"
        );
    }
    gui.wait_js(
        &slots_are("2:routed,2:routed,2:routed"),
        Duration::from_secs(10),
        "three routed containers of release 2",
    );
    gui.screenshot(&workspace().join("docs/screenshots/services.png"));

    // And back, after seeing what the rollback changes.
    let back = gui.wait_js(
        "const p = document.querySelector('[data-testid=rollback-plan][data-action=rollback]'); return p && p.textContent.includes('release 2 → 1') && p.querySelector('[data-field=image]') ? p.textContent : null",
        Duration::from_secs(15),
        "the rollback's changes are shown first",
    );
    assert!(
        back.as_str()
            .unwrap()
            .contains("changeover-demo:v2 → changeover-demo:v1"),
        "{back}"
    );
    gui.click("[data-testid=rollback-button]");
    wait_done(&gui, 1, "rolled back to release 1");
    gui.wait_js(
        &slots_are("1:routed,1:routed,1:routed"),
        Duration::from_secs(10),
        "release 1 runs and is routed again",
    );
    gui.wait_js(
        "return [...document.querySelectorAll('[data-testid=release-row]')].map(r => r.dataset.number + ':' + r.dataset.result).join(',') === '2:superseded,1:succeeded' || null",
        Duration::from_secs(10),
        "the release history shows release 1 live and release 2 superseded",
    );

    traffic_is_shown_live_and_maintenance_pauses_it(&gui, &daemon.host());
    blue_green_and_canary_are_driven_from_the_window(&gui, &daemon.host());
    services_are_created_edited_and_exported_in_forms(&gui, &daemon.host());
    an_interrupted_rollout_is_offered_to_finish(&gui, &daemon.host());
    a_volume_of_the_private_daemon_is_browsed_and_snapshotted(&gui, &daemon.host());
    drop(gui);
    drop(daemon);
}

/// The window on the private daemon: a volume there is listed, browsed and
/// snapshotted by a helper on that daemon; nothing of it is on the default.
fn a_volume_of_the_private_daemon_is_browsed_and_snapshotted(gui: &Gui, host: &str) {
    let vol = changeover_tests::TestVolume::new(
        Some(host),
        "t-gui-far",
        "mkdir /v/far && echo away > /v/far/there.txt",
    );
    gui.click("[data-testid=section-volumes]");
    let row = format!("[data-testid=volume-row][data-name=\"{}\"]", vol.name);
    gui.wait_js(
        &format!("return document.querySelector('{row}')"),
        Duration::from_secs(15),
        "the private daemon's volume is listed",
    );
    gui.click(&row);
    gui.click_when(
        "[data-testid=volume-entry][data-name=far]",
        "the folder is listed",
    );
    gui.click_when(
        "[data-testid=volume-entry][data-name=\"there.txt\"]",
        "the file in it is listed",
    );
    gui.wait_js(
        "const t = document.querySelector('[data-testid=volume-text]'); return t && t.textContent.includes('away') || null",
        Duration::from_secs(15),
        "the file is previewed",
    );
    gui.click("[data-testid=volume-tab-snapshots]");
    fill(gui, "[data-testid=snapshot-note]", "from the window");
    gui.click("[data-testid=snapshot-take]");
    let taken = gui.wait_js(
        "const r = document.querySelector('[data-testid=snapshot-row][data-reason=manual]'); const p = document.querySelector('[data-testid=snapshot-problem]'); return p ? 'PROBLEM ' + p.textContent : r && r.dataset.name",
        Duration::from_secs(30),
        "the snapshot is taken and listed",
    );
    let taken = taken.as_str().unwrap().to_string();
    assert!(!taken.starts_with("PROBLEM"), "{taken}");
    let there = docker_at(
        Some(host),
        &[
            "volume",
            "inspect",
            "-f",
            "{{index .Labels \"dev.changeover.snapshot.note\"}}",
            &taken,
        ],
    );
    assert_eq!(there, "from the window");
    let here = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={}", vol.name),
    ]);
    assert!(here.is_empty(), "nothing on the default daemon: {here}");
    gui.click("[data-testid=volume-close]");
    docker_at(Some(host), &["volume", "rm", &taken]);
    drop(vol);
}

/// Waits for the local environment, then opens `service`'s page.
fn open_service(gui: &Gui, service: &str) {
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-name=default][data-state=connected]')",
        Duration::from_secs(15),
        "the local environment connects",
    );
    gui.click("[data-testid=section-services]");
    gui.click_when(
        &format!("[data-testid=service-row][data-name=\"{service}\"]"),
        "the service is listed",
    );
}

/// Chooses `value` in the `<select>` at `css`, once it is offered; chosen
/// again should the window redraw its options meanwhile (a list of tags
/// comes in from the registry after the daemon's), until it holds.
fn select(gui: &Gui, css: &str, value: &str) {
    let choose = format!("const s = document.querySelector('{css}'); if (!s || ![...s.options].some(o => o.value === '{value}')) return null; if (s.value !== '{value}') {{ s.value = '{value}'; s.dispatchEvent(new Event('change')); return null; }} return true");
    for _ in 0..3 {
        gui.wait_js(
            &choose,
            Duration::from_secs(30),
            &format!("{css} offers {value}"),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Shows the Volumes list newest first and waits for `name`'s row: the
/// list renders only the rows in view, and a daemon that has run many
/// tests holds more volumes than fit (a just-made one sorts to the top).
fn volume_row(gui: &Gui, name: &str) -> String {
    let newest_first = "const h = document.querySelector('[data-testid=volumes-sort][data-column=created]'); if (!h) return null; if (h.parentElement.getAttribute('aria-sort') !== 'descending') { h.click(); return null; } return true";
    gui.wait_js(
        newest_first,
        Duration::from_secs(15),
        "the volumes list sorts newest first",
    );
    let row = format!("[data-testid=volume-row][data-name=\"{name}\"]");
    gui.wait_js(
        &format!("return document.querySelector('{row}')"),
        Duration::from_secs(15),
        "the volume is listed",
    );
    row
}

/// Clicks `css` once it is enabled (buttons wait while an action runs).
fn click_enabled(gui: &Gui, css: &str) {
    gui.wait_js(
        &format!("const b = document.querySelector('{css}'); return b && !b.disabled || null"),
        Duration::from_secs(15),
        &format!("{css} is enabled"),
    );
    gui.click(css);
}

fn requests_of(gui: &Gui, release: u32) -> u64 {
    gui.js(&format!("const r = document.querySelector('[data-testid=traffic-release][data-release=\"{release}\"]'); return r ? Number(r.dataset.requests) : 0")).as_u64().unwrap_or(0)
}

fn wait_candidate(gui: &Gui, attrs: &str, what: &str) {
    gui.wait_js(
        &format!("return document.querySelector('[data-testid=candidate]{attrs}')"),
        Duration::from_secs(15),
        what,
    );
}

/// Blue-green: deploy v2 beside v1 with the Deploy dialog's strategy, switch,
/// switch back, promote. Canary: deploy beside with its first share, move the
/// split slider, start a preview, abort.
fn blue_green_and_canary_are_driven_from_the_window(gui: &Gui, host: &str) {
    let port = gui.js("return document.querySelector('[data-testid=next-step] code').textContent.match(/:(\\d+)\\//)[1]");
    let port = port.as_str().unwrap().to_string();
    select(gui, "[data-testid=deploy-strategy]", "blue-green");
    select(gui, "[data-testid=deploy-tag]", "v2");
    gui.click("[data-testid=deploy-button]");
    wait_done(gui, 3, "release 3 (v2) starts beside release 1");
    wait_candidate(
        gui,
        "[data-release=\"3\"][data-strategy=\"blue-green\"][data-share=\"0\"]",
        "the panel shows release 3 beside release 1, with no traffic",
    );
    let before = requests_of(gui, 3);
    for _ in 0..5 {
        assert!(probe(host, &port));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(requests_of(gui, 3), before, "release 3 got nothing yet");

    click_enabled(gui, "[data-testid=switch-to-candidate]");
    wait_candidate(gui, "[data-share=\"100\"]", "switched to release 3");
    for _ in 0..5 {
        assert!(probe(host, &port));
    }
    gui.wait_js(
        &format!("const r = document.querySelector('[data-testid=traffic-release][data-release=\"3\"]'); return r && Number(r.dataset.requests) >= {} || null", before + 5),
        Duration::from_secs(10),
        "release 3 serves every request after the switch",
    );
    click_enabled(gui, "[data-testid=switch-back]");
    wait_candidate(gui, "[data-share=\"0\"]", "switched back to release 1");
    click_enabled(gui, "[data-testid=switch-to-candidate]");
    wait_candidate(gui, "[data-share=\"100\"]", "switched to release 3 again");
    click_enabled(gui, "[data-testid=promote]");
    gui.wait_js(
        "const n = document.querySelector('[data-testid=traffic-note]'); return document.querySelector('[data-testid=candidate]') === null && n && n.textContent.includes('is on release 3') || null",
        Duration::from_secs(30),
        "promoted: release 3 is current, the panel says so",
    );
    gui.wait_js(
        &slots_are("3:routed,3:routed,3:routed"),
        Duration::from_secs(10),
        "release 3 runs alone",
    );

    select(gui, "[data-testid=deploy-strategy]", "canary");
    select(gui, "[data-testid=deploy-tag]", "v1");
    gui.wait_js(
        "return !document.querySelector('[data-testid=deploy-button]').disabled || null",
        Duration::from_secs(10),
        "Deploy is offered again once nothing runs beside release 3",
    );
    gui.click("[data-testid=deploy-button]");
    wait_done(gui, 4, "release 4 (v1) starts beside release 3 as a canary");
    wait_candidate(
        gui,
        "[data-release=\"4\"][data-strategy=\"canary\"][data-share=\"10\"]",
        "the canary gets its first 10%",
    );
    gui.js("const s = document.querySelector('[data-testid=split-slider]'); s.value = '50'; s.dispatchEvent(new Event('input', {bubbles: true})); s.dispatchEvent(new Event('change', {bubbles: true})); return s.value");
    wait_candidate(gui, "[data-share=\"50\"]", "the slider set a 50% split");
    let out = changeover_tests::changeover(
        &["traffic", "show", "sandbox/web", "--json"],
        &[("DOCKER_HOST", host)],
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        view["routes"][0]["policy"]["weights"],
        json!([{"release": 3, "weight": 50}, {"release": 4, "weight": 50}]),
        "the edge holds the split the slider set"
    );
    click_enabled(gui, "[data-testid=preview]");
    let url = gui.wait_js(
        "const u = document.querySelector('[data-testid=preview-url]'); return u && u.textContent",
        Duration::from_secs(10),
        "a copyable preview link",
    );
    assert!(
        url.as_str()
            .unwrap()
            .starts_with(&format!("http://localhost:{port}/?changeover-preview=")),
        "{url}"
    );
    gui.js("document.querySelector('[data-testid=candidate]').scrollIntoView(); return true");
    gui.screenshot(&workspace().join("docs/screenshots/canary.png"));
    // The canary's containers all die: the panel shows it down.
    for slot in 0..3 {
        docker_at(Some(host), &["kill", &format!("sandbox-web-r4-s{slot}")]);
    }
    gui.wait_js(
        "const r = document.querySelector('[data-testid=traffic-release][data-release=\"4\"]'); return r && r.dataset.healthy === '0' && r.classList.contains('down') || null",
        Duration::from_secs(15),
        "the traffic panel shows release 4 with no healthy container",
    );
    assert!(probe(host, &port), "release 3 serves what release 4 cannot");
    click_enabled(gui, "[data-testid=abort]");
    gui.wait_js(
        "return document.querySelector('[data-testid=candidate]') === null && [...document.querySelectorAll('[data-testid=release-row]')].some(r => r.dataset.number === '4' && r.dataset.result === 'failed') || null",
        Duration::from_secs(30),
        "aborted: release 4 is gone and marked failed",
    );
    gui.wait_js(
        &slots_are("3:routed,3:routed,3:routed"),
        Duration::from_secs(10),
        "release 3 serves alone again",
    );
    select(gui, "[data-testid=deploy-strategy]", "rolling");
}

/// Types `value` into the input `css` the way a person would replace its text.
fn fill(gui: &Gui, css: &str, value: &str) {
    gui.js(&format!(
        "const e = document.querySelector({}); e.value = {}; e.dispatchEvent(new Event('input', {{bubbles: true}})); return e.value",
        json!(css),
        json!(value)
    ));
}

/// `field: message` of every problem the form shows.
const FIELD_ERRORS: &str = "[...document.querySelectorAll('[data-testid=field-error]')].map(e => e.dataset.field + ': ' + e.textContent)";

fn field_errors(gui: &Gui) -> serde_json::Value {
    gui.js(&format!("return {FIELD_ERRORS}"))
}

/// Waits until the form shows problems, and returns them.
fn wait_field_errors(gui: &Gui, what: &str) -> serde_json::Value {
    gui.wait_js(
        &format!("const e = {FIELD_ERRORS}; return e.length ? e : null"),
        Duration::from_secs(15),
        what,
    )
}

/// Opens "+ New service" and fills in where it goes and what it runs.
fn new_service_form(gui: &Gui, stack: &str, name: &str, image: &str, tag: &str) {
    gui.click("[data-testid=new-service]");
    gui.wait_js(
        "const n = document.querySelector('[data-testid=form-name]'); return n && !n.disabled || null",
        Duration::from_secs(10),
        "a blank new-service form opens",
    );
    fill(gui, "[data-testid=form-stack]", stack);
    fill(gui, "[data-testid=form-name]", name);
    fill(gui, "[data-testid=form-image]", image);
    fill(gui, "[data-testid=form-tag]", tag);
}

/// The form path on the sandbox's daemon (the demo images are there): a bad
/// port is refused on its field and creates nothing; a good form creates a
/// service; Edit changes it as a new release; Export writes a Compose file
/// that reads back into the same service.
fn services_are_created_edited_and_exported_in_forms(gui: &Gui, host: &str) {
    new_service_form(gui, "shop", "api", "changeover-demo", "v2");
    gui.click("[data-testid=add-port]");
    fill(gui, "[data-testid=port-host]", "abc");
    fill(gui, "[data-testid=port-container]", "8080");
    fill(gui, "[data-testid=form-health-path]", "/health");
    gui.click("[data-testid=form-submit]");
    let errors = wait_field_errors(gui, "the bad port is named on its field");
    assert_eq!(
        errors,
        json!(["ports[0].host: \"abc\" is not a whole number from 1 to 65535"]),
    );
    let rows = gui.js("return document.querySelectorAll('[data-testid=service-row]').length");
    assert_eq!(rows, json!(1), "a refused form creates nothing");

    let port = changeover_tests::free_port();
    fill(gui, "[data-testid=port-host]", &port.to_string());
    fill(gui, "[data-testid=form-replicas]", "2");
    gui.click("[data-testid=form-submit]");
    wait_done(gui, 1, "the new service is created from the form");
    gui.wait_js(
        &slots_are("1:routed,1:routed"),
        Duration::from_secs(10),
        "two routed containers of shop/api",
    );
    // The private daemon has its own network namespace: ask from the edge.
    docker_at(
        Some(host),
        &[
            "exec",
            "changeover-edge",
            "/changeover-edge",
            "probe",
            &format!("http://127.0.0.1:{port}/health"),
        ],
    );

    // Edit: one more replica and a variable; a new release rolls out.
    gui.click("[data-testid=edit-service]");
    gui.wait_js(
        "const n = document.querySelector('[data-testid=form-name]'); return n && n.disabled && n.value === 'api' || null",
        Duration::from_secs(10),
        "the edit form opens with the service's settings",
    );
    assert_eq!(field_errors(gui), json!([]));
    fill(gui, "[data-testid=form-replicas]", "3");
    gui.click("[data-testid=add-env]");
    fill(gui, "[data-testid=env-name]", "MODE");
    fill(gui, "[data-testid=env-value]", "edited in the form");
    gui.screenshot(&workspace().join("docs/screenshots/service-form.png"));
    gui.click("[data-testid=form-submit]");
    wait_done(gui, 2, "the edited service rolls out as release 2");
    gui.wait_js(
        &slots_are("2:routed,2:routed,2:routed"),
        Duration::from_secs(10),
        "three routed containers of release 2",
    );

    // Export, save, and refuse to overwrite without asking.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.yml");
    gui.click("[data-testid=export-button]");
    let yaml = gui.wait_js(
        "const p = document.querySelector('[data-testid=export-yaml]'); return p && p.textContent",
        Duration::from_secs(10),
        "the stack is shown as Compose",
    );
    assert!(
        yaml.as_str().unwrap().contains("edited in the form"),
        "{yaml}"
    );
    fill(
        gui,
        "[data-testid=export-path]",
        &path.display().to_string(),
    );
    gui.click("[data-testid=export-save]");
    gui.wait_js(
        "return document.querySelector('[data-testid=export-saved]')",
        Duration::from_secs(10),
        "the file is saved",
    );
    gui.click("[data-testid=export-save]");
    gui.wait_js(
        "return document.querySelector('[data-testid=export-replace]')",
        Duration::from_secs(10),
        "saving again asks before replacing the file",
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let report = changeover_core::stack::parse(&text, "shop.yml", None);
    let stack = report.stack.expect("the exported file is a valid stack");
    let api = &stack.services[0];
    assert_eq!(
        (
            stack.name.as_str(),
            api.name.as_str(),
            api.image.as_str(),
            api.replicas
        ),
        ("shop", "api", "changeover-demo:v2", 3)
    );
    assert_eq!(
        api.env.get("MODE").map(String::as_str),
        Some("edited in the form")
    );
    assert_eq!(api.ports[0].host, port);
    gui.click("[data-testid=export-close]");

    // A new service may not take the name of one that exists.
    new_service_form(gui, "shop", "api", "changeover-demo", "v1");
    gui.click("[data-testid=form-submit]");
    let errors = wait_field_errors(gui, "the name clash is named on its field");
    assert_eq!(
        errors,
        json!(["name: shop/api already exists; open it and press Edit to change it"])
    );
    gui.click("[data-testid=form-cancel]");
}

/// A CLI killed mid-rollout on the same daemon: the window says so and
/// finishes the rollout when asked.
fn an_interrupted_rollout_is_offered_to_finish(gui: &Gui, host: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yml");
    let port = changeover_tests::free_port();
    std::fs::write(
        &file,
        format!(
            r#"name: slow
services:
  web:
    image: changeover-demo:v1
    ports: ["{port}:8080"]
    deploy:
      replicas: 2
      update_config: {{delay: 3s}}
    x-changeover:
      health: {{path: /health, interval: 500ms}}
"#
        ),
    )
    .unwrap();
    let env = [("DOCKER_HOST", host)];
    let out = changeover_tests::changeover(
        &["stack", "deploy", "-f", &file.display().to_string()],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child =
        changeover_tests::changeover_cmd(&["service", "deploy", "slow/web", "--tag", "v2"], &env)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    changeover_tests::wait_for(Duration::from_secs(30), || {
        let ps = docker_at(
            Some(host),
            &[
                "ps",
                "-a",
                "--filter",
                "label=dev.changeover.stack=slow",
                "--format",
                "{{.Names}}={{.State}}",
            ],
        );
        (ps.contains("slow-web-r2-s0=running") && ps.contains("slow-web-r1-s0=exited"))
            .then_some(())
    })
    .expect("slot 0 moves to release 2");
    child.kill().unwrap(); // SIGKILL, between two slots
    child.wait().unwrap();

    gui.wait_js(
        "return document.querySelector('[data-testid=service-row][data-name=\"slow/web\"]')",
        Duration::from_secs(10),
        "the slow stack is listed",
    );
    gui.click("[data-testid=service-row][data-name=\"slow/web\"]");
    let banner = gui.wait_js(
        "const b = document.querySelector('[data-testid=interrupted]'); return b && b.textContent",
        // Well under the lock's 15 s expiry: a killed client on this
        // machine is recognised at once.
        Duration::from_secs(10),
        "the window says the rollout was interrupted",
    );
    assert!(banner.as_str().unwrap().contains("release 2"), "{banner}");
    gui.click("[data-testid=finish-rollout]");
    wait_done(
        gui,
        2,
        "the interrupted rollout is finished from the window",
    );
    gui.wait_js(
        &slots_are("2:routed,2:routed"),
        Duration::from_secs(10),
        "both slots run release 2",
    );
    // The page's list is read again after the rollout, and a live update
    // of the services may land just after it: the banner goes within a
    // moment, not necessarily in the same frame as the slots.
    gui.wait_js(
        "return document.querySelector('[data-testid=interrupted]') === null || null",
        Duration::from_secs(10),
        "the banner is gone",
    );
}

/// GET through the private daemon's edge from inside its network namespace;
/// true on a 2xx.
fn probe(host: &str, port: &str) -> bool {
    std::process::Command::new("docker")
        .args([
            "-H",
            host,
            "exec",
            "changeover-edge",
            "/changeover-edge",
            "probe",
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The sample stack's traffic panel counts requests per release as they
/// come, and its Maintenance button pauses the service behind a 503.
fn traffic_is_shown_live_and_maintenance_pauses_it(gui: &Gui, host: &str) {
    let port = gui.js("return document.querySelector('[data-testid=next-step] code').textContent.match(/:(\\d+)\\//)[1]");
    let port = port.as_str().unwrap().to_string();
    for _ in 0..5 {
        assert!(probe(host, &port), "the sample stack answers on {port}");
    }
    gui.wait_js(
        "const r = document.querySelector('[data-testid=traffic-release][data-release=\"1\"]'); return r && Number(r.dataset.requests) >= 5 || null",
        Duration::from_secs(10),
        "the traffic panel counts release 1's requests",
    );
    gui.js("document.querySelector('[data-testid=traffic-panel]').scrollIntoView(); return true");
    std::thread::sleep(Duration::from_millis(2500)); // two more reads: rates and sparklines
    gui.screenshot(&workspace().join("docs/screenshots/traffic.png"));
    gui.click("[data-testid=maintenance-toggle]");
    gui.wait_js(
        "return document.querySelector('[data-testid=maintenance-on]')",
        Duration::from_secs(10),
        "the panel says the service is in maintenance",
    );
    assert!(!probe(host, &port), "in maintenance the edge answers 503");
    gui.click("[data-testid=maintenance-toggle]");
    gui.wait_js(
        "return document.querySelector('[data-testid=maintenance-on]') === null || null",
        Duration::from_secs(10),
        "traffic resumes",
    );
    assert!(probe(host, &port), "traffic flows again");
}

/// A TLS environment added in the form (the remote host of the test kit),
/// the sample stack deployed on it, the service's logs open while v2 rolls
/// out (lines of both releases), and a terminal into a slot: typed commands
/// answer, and `stty size` follows the window.
#[test]
fn a_tls_environment_added_in_the_form_deploys_and_shows_logs_and_a_terminal() {
    let host = changeover_tests::remote::RemoteHost::start();
    let gui = Gui::launch("remote", &app(), &[]);
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-state=connected]')",
        Duration::from_secs(15),
        "the local daemon connects",
    );
    gui.click("[data-testid=add-environment]");
    gui.send_keys("[data-testid=env-name]", "remote-tls");
    gui.send_keys("[data-testid=env-host]", "tcp//oops");
    gui.click("[data-testid=env-test]");
    let said = gui.wait_js(
        "const p = document.querySelector('[data-testid=env-test-problem]'); return p && p.textContent",
        Duration::from_secs(15),
        "a bad address is explained",
    );
    assert!(said.as_str().unwrap().contains("tcp//oops"), "{said}");
    gui.js("const i = document.querySelector('[data-testid=env-host]'); i.value = ''; i.dispatchEvent(new Event('input')); return 1");
    gui.send_keys("[data-testid=env-host]", &host.tls_url());
    gui.wait_js(
        "return document.querySelector('[data-testid=env-tls]')",
        Duration::from_secs(5),
        "a tcp:// address offers TLS",
    );
    gui.click("[data-testid=env-tls]");
    gui.send_keys("[data-testid=env-tls-ca]", host.certs.ca.to_str().unwrap());
    gui.send_keys(
        "[data-testid=env-tls-cert]",
        host.certs.client.cert.to_str().unwrap(),
    );
    gui.send_keys(
        "[data-testid=env-tls-key]",
        host.certs.client.key.to_str().unwrap(),
    );
    gui.click("[data-testid=env-test]");
    let ok = gui.wait_js(
        "const p = document.querySelector('[data-testid=env-test-ok]'); return p && p.textContent",
        Duration::from_secs(20),
        "Test connection shows the daemon's version",
    );
    assert!(ok.as_str().unwrap().contains("Docker"), "{ok}");
    gui.screenshot(&workspace().join("docs/screenshots/environment-form.png"));
    gui.click("[data-testid=env-save]");
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-name=remote-tls][data-state=connected]')",
        Duration::from_secs(20),
        "the TLS environment is added and connects",
    );

    // The sample stack on the remote daemon, links on its address.
    gui.click("[data-testid=section-services]");
    gui.wait_js(
        "return document.querySelector('[data-testid=services-empty]')",
        Duration::from_secs(15),
        "the remote environment has no services yet",
    );
    gui.click("[data-testid=try-sandbox]");
    wait_done(
        &gui,
        1,
        "the sample stack is deployed on the TLS environment",
    );
    let link = gui.js("return document.querySelector('[data-testid=next-step] code').textContent");
    assert!(
        link.as_str().unwrap().contains(&host.ip),
        "the link names the remote host: {link}"
    );

    // Roll to v2 and watch the service's logs meanwhile.
    select(&gui, "[data-testid=deploy-tag]", "v2");
    gui.click("[data-testid=deploy-button]");
    gui.click("[data-testid=service-logs]");
    gui.wait_js(
        "const rs = new Set([...document.querySelectorAll('[data-testid=log-line]')].map(l => l.dataset.release)); return rs.has('1') && rs.has('2') || null",
        Duration::from_secs(60),
        "the service's logs show lines of release 1 and release 2",
    );
    gui.screenshot(&workspace().join("docs/screenshots/logs.png"));
    gui.click("[data-testid=detail-close]");
    wait_done(&gui, 2, "v2 is rolled out on the TLS environment");

    // A terminal into slot 0: the demo image has no shell, so the debug shell.
    gui.wait_js(
        &slots_are("2:routed,2:routed,2:routed"),
        Duration::from_secs(15),
        "release 2 runs",
    );
    // The rows are drawn again as the live view refreshes (a click on a row
    // just replaced opens nothing): click one until its detail opens.
    let opened = (0..5).any(|_| {
        gui.click_when(
            "[data-testid=slot-row][data-running=true] td",
            "a running slot is listed",
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if gui.js("return !!document.querySelector('[data-testid=tab-terminal]')")
                == json!(true)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(opened, "a running slot's detail opens");
    gui.click("[data-testid=tab-terminal]");
    let label = gui.wait_js(
        "const l = document.querySelector('[data-testid=terminal-label]'); return l && l.textContent",
        Duration::from_secs(60),
        "a terminal opens",
    );
    assert!(label.as_str().unwrap().contains("debug shell"), "{label}");
    let term_text = "return (document.querySelector('[data-testid=terminal] .xterm-rows') || {}).textContent || ''";
    gui.wait_js(
        &format!(
            "return ({}).includes('debug:') || null",
            term_text.trim_start_matches("return ")
        ),
        Duration::from_secs(20),
        "the debug shell prompts",
    );
    gui.send_keys(
        "[data-testid=terminal] .xterm-helper-textarea",
        "echo hello-$((6*7)) && ls /proc/1/root/\u{E007}",
    );
    gui.wait_js(
        &format!(
            "return ({}).includes('hello-42') || null",
            term_text.trim_start_matches("return ")
        ),
        Duration::from_secs(10),
        "the shell answers what was typed",
    );
    let size_of = |gui: &Gui| -> String {
        gui.js("const t = document.querySelector('[data-testid=terminal] .xterm-rows'); t.dataset.mark = (Number(t.dataset.mark || 0) + 1); return t.dataset.mark");
        gui.send_keys(
            "[data-testid=terminal] .xterm-helper-textarea",
            "stty size\u{E007}",
        );
        let v = gui.wait_js(
            &format!("const m = [...({}).matchAll(/(\\d+) (\\d+)/g)]; return m.length ? m[m.length - 1][0] : null", term_text.trim_start_matches("return ")),
            Duration::from_secs(10),
            "stty size answers",
        );
        v.as_str().unwrap().to_string()
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = size_of(&gui);
    gui.screenshot(&workspace().join("docs/screenshots/terminal.png"));
    gui.resize_window(900, 560);
    std::thread::sleep(Duration::from_millis(800));
    let mut after = size_of(&gui);
    for _ in 0..10 {
        if after != before {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        after = size_of(&gui);
    }
    assert_ne!(
        before, after,
        "stty size follows the window ({before} → {after})"
    );
    drop(gui);
    drop(host);
}

/// An SSH environment added in the form: the unknown host key is shown with
/// the host's real fingerprint and trusted once, Test connection then shows
/// the daemon, a container there is listed and its terminal answers; Edit
/// keeps what it does not change, and Remove asks first and then removes it.
#[test]
fn an_ssh_environment_is_trusted_edited_and_removed_in_the_form() {
    let mut host = changeover_tests::remote::RemoteHost::start();
    let (url, agent) = host.start_sshd();
    let name = changeover_tests::unique("on-ssh");
    host.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "dev.changeover.test=1",
        changeover_tests::FIXTURE_IMAGE,
    ]);
    let real = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(host.dir.path().join("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&real.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let gui = Gui::launch("remote-ssh", &app(), &[("SSH_AUTH_SOCK", agent.as_str())]);
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-state=connected]')",
        Duration::from_secs(15),
        "the local daemon connects",
    );
    gui.click("[data-testid=add-environment]");
    gui.send_keys("[data-testid=env-name]", "remote-ssh");
    gui.send_keys("[data-testid=env-host]", &url);
    gui.click("[data-testid=env-test]");
    let shown = gui.wait_js(
        "const k = document.querySelector('[data-testid=env-host-key]'); return k && k.textContent",
        Duration::from_secs(20),
        "the unknown host key is shown",
    );
    assert!(
        shown.as_str().unwrap().contains(&fingerprint),
        "the host's own fingerprint {fingerprint} is shown: {shown}"
    );
    gui.click("[data-testid=env-trust-key]");
    let ok = gui.wait_js(
        "const p = document.querySelector('[data-testid=env-test-ok]'); return p && p.textContent",
        Duration::from_secs(30),
        "Test connection shows the daemon once the key is trusted",
    );
    assert!(ok.as_str().unwrap().contains("Docker"), "{ok}");
    gui.click("[data-testid=env-save]");
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-name=remote-ssh][data-state=connected]')",
        Duration::from_secs(30),
        "the SSH environment is added and connects",
    );

    // Its container, and a terminal into it over SSH.
    gui.click("[data-testid=section-containers]");
    gui.wait_js(
        &format!(
            "return document.querySelector('[data-testid=container-row][data-name=\"{name}\"]')"
        ),
        Duration::from_secs(20),
        "the remote container is listed",
    );
    gui.click(&format!(
        "[data-testid=container-row][data-name=\"{name}\"]"
    ));
    gui.click("[data-testid=tab-terminal]");
    gui.wait_js(
        "const l = document.querySelector('[data-testid=terminal-label]'); return l && l.textContent",
        Duration::from_secs(30),
        "a terminal opens over SSH",
    );
    std::thread::sleep(Duration::from_millis(500));
    gui.send_keys(
        "[data-testid=terminal] .xterm-helper-textarea",
        "echo over-$((6*7))\u{E007}",
    );
    gui.wait_js(
        "return ((document.querySelector('[data-testid=terminal] .xterm-rows') || {}).textContent || '').includes('over-42') || null",
        Duration::from_secs(10),
        "the shell over SSH answers",
    );
    gui.click("[data-testid=detail-close]");

    // Edit: a new description; the address stays, and it stays connected.
    gui.click("[data-testid=edit-environment]");
    let kept = gui.wait_js(
        "const i = document.querySelector('[data-testid=env-host]'); return i && i.value",
        Duration::from_secs(5),
        "the form opens with the environment's settings",
    );
    assert_eq!(kept.as_str().unwrap(), url);
    gui.send_keys("[data-testid=env-description]", "the box under the desk");
    gui.click("[data-testid=env-save]");
    gui.wait_js(
        "return !document.querySelector('[data-testid=environment-form]') && document.querySelector('[data-testid=environment][data-name=remote-ssh][data-state=connected]') || null",
        Duration::from_secs(30),
        "the edited environment is saved and connects again",
    );

    // Remove asks first; "Keep" keeps it.
    gui.click("[data-testid=edit-environment]");
    gui.click("[data-testid=env-remove]");
    gui.click("[data-testid=env-remove-confirm]");
    gui.wait_js(
        "return !document.querySelector('[data-testid=environment][data-name=remote-ssh]') || null",
        Duration::from_secs(20),
        "the removed environment leaves the list",
    );
    drop(gui);
    drop(host);
}

/// Writes `bytes` to `path` in `volume` (through a fixture container).
fn put_file(volume: &str, path: &str, bytes: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--label",
            TEST_LABEL,
            "-v",
            &format!("{volume}:/v"),
            changeover_tests::FIXTURE_IMAGE,
            "sh",
            "-c",
            &format!("cat > '/v/{path}'"),
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A volume opened from the Volumes view: its files listed (a link shown
/// with its target, outside the volume), a text file previewed with line
/// numbers, a PNG shown as an image, a folder walked into and out of by
/// the breadcrumbs, and its size counted.
#[test]
fn a_volume_is_browsed_in_the_window() {
    changeover_tests::fixture_image();
    let vol = changeover_tests::TestVolume::new(
        None,
        "t-browse",
        "cd /v && for i in $(seq 1 40); do echo \"line $i of the readme\"; done > readme.txt && mkdir docs && echo inside > docs/inner.txt && ln -s /etc link-out",
    );
    put_file(
        &vol.name,
        "logo.png",
        &std::fs::read(workspace().join("icons/128x128.png")).unwrap(),
    );
    let user = TestContainer::new(
        &unique("t-browse-user"),
        &["-v", &format!("{}:/data", vol.name)],
        true,
    );
    let gui = Gui::launch("volumes", &app(), &[]);
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-state=connected]')",
        Duration::from_secs(15),
        "the local daemon connects",
    );
    gui.click("[data-testid=section-volumes]");
    let row = volume_row(&gui, &vol.name);
    // Its size, from the daemon's disk-usage API, arrives after the list.
    let size = gui.wait_js(
        &format!("const c = document.querySelector('{row} [data-testid=volume-size-cell]'); return c && /[0-9]/.test(c.textContent) ? c.textContent.trim() : null"),
        Duration::from_secs(30),
        "the volume's size is shown in the list",
    );
    assert!(size.as_str().unwrap().ends_with("KiB"), "{size}");
    gui.click(&row);
    let names = gui.wait_js(
        "const n = [...document.querySelectorAll('[data-testid=volume-entry]')].map(e => e.dataset.name); return n.length === 4 ? n.join(',') : null",
        Duration::from_secs(30),
        "the volume's files are listed",
    );
    assert_eq!(names.as_str().unwrap(), "docs,link-out,logo.png,readme.txt");

    let link = gui.js("return document.querySelector('[data-testid=volume-entry][data-name=link-out]').textContent");
    assert!(
        link.as_str()
            .unwrap()
            .contains("→ /etc (outside the volume)"),
        "{link}"
    );

    gui.click("[data-testid=volume-entry][data-name=\"readme.txt\"]");
    let text = gui.wait_js(
        "const t = document.querySelector('[data-testid=volume-text]'); return t && t.textContent.includes('line 40 of the readme') ? t.querySelectorAll('.ln').length : null",
        Duration::from_secs(15),
        "the text file is previewed",
    );
    assert!(text.as_u64().unwrap() >= 40, "line numbers: {text}");

    gui.click("[data-testid=volume-entry][data-name=\"logo.png\"]");
    let width = gui.wait_js(
        "const i = document.querySelector('[data-testid=volume-image]'); return i && i.complete && i.naturalWidth ? i.naturalWidth : null",
        Duration::from_secs(15),
        "the PNG is shown as an image",
    );
    assert_eq!(width.as_u64(), Some(128));
    gui.screenshot(&workspace().join("docs/screenshots/volumes.png"));

    gui.click("[data-testid=volume-entry][data-name=docs]");
    gui.wait_js(
        "const f = document.querySelector('[data-testid=volume-files]'); return f && f.dataset.path === '/docs' && document.querySelector('[data-testid=volume-entry][data-name=\"inner.txt\"]')",
        Duration::from_secs(15),
        "the folder opens",
    );
    gui.click("[data-testid=crumb][data-path=\"/\"]");
    gui.wait_js(
        "return document.querySelector('[data-testid=volume-entry][data-name=\"readme.txt\"]')",
        Duration::from_secs(15),
        "the breadcrumb goes back to the root",
    );
    // Find by name, from the root: a click on the match opens its folder
    // and previews it.
    fill(&gui, "[data-testid=volume-find]", "INNER");
    gui.js("document.querySelector('[data-testid=volume-find]').form.requestSubmit(); return true");
    gui.wait_js(
        "return document.querySelector('[data-testid=volume-found][data-dir=\"/docs\"][data-name=\"inner.txt\"]')",
        Duration::from_secs(15),
        "the search finds docs/inner.txt",
    );
    gui.click("[data-testid=volume-found][data-name=\"inner.txt\"]");
    gui.wait_js(
        "const f = document.querySelector('[data-testid=volume-files]'); const t = document.querySelector('[data-testid=volume-text]'); return f && f.dataset.path === '/docs' && t && t.textContent.includes('inside') || null",
        Duration::from_secs(15),
        "the match's folder opens and the file is previewed",
    );
    gui.click("[data-testid=crumb][data-path=\"/\"]");
    gui.wait_js(
        "return document.querySelector('[data-testid=volume-entry][data-name=\"readme.txt\"]')",
        Duration::from_secs(15),
        "back at the root",
    );
    gui.click("[data-testid=volume-measure]");
    let size = gui.wait_js(
        "const s = document.querySelector('[data-testid=volume-size][data-done=true]'); return s && s.textContent",
        Duration::from_secs(20),
        "the size is counted",
    );
    assert!(
        size.as_str().unwrap().contains("in 4 files, 2 folders"),
        "{size}"
    );

    // Download a folder as .tar.gz to a path typed in the form.
    let here = tempfile::tempdir().unwrap();
    let dest = here.path().join("docs.tar.gz");
    gui.click("[data-testid=volume-entry][data-name=docs]");
    gui.wait_js(
        "const f = document.querySelector('[data-testid=volume-files]'); return f && f.dataset.path === '/docs' || null",
        Duration::from_secs(15),
        "the folder opens again",
    );
    gui.click("[data-testid=volume-download]");
    fill(
        &gui,
        "[data-testid=volume-download-dest]",
        dest.to_str().unwrap(),
    );
    gui.click("[data-testid=volume-download-save]");
    let done = gui.wait_js(
        "const d = document.querySelector('[data-testid=volume-transfer-done]'); const p = document.querySelector('[data-testid=volume-transfer-problem]'); return p ? 'PROBLEM ' + p.textContent : d && d.textContent",
        Duration::from_secs(20),
        "the folder is downloaded",
    );
    assert!(!done.as_str().unwrap().starts_with("PROBLEM"), "{done}");
    let listed = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "inner.txt");
    gui.click("[data-testid=volume-transfer-close]");

    // Upload a .tar.gz and unpack it here; a running user is warned of first.
    let archive = here.path().join("site.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&archive).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "site/index.html", &b"<h1/>\n"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    gui.click("[data-testid=volume-upload]");
    fill(
        &gui,
        "[data-testid=volume-upload-source]",
        archive.to_str().unwrap(),
    );
    gui.click("[data-testid=volume-upload-unpack]");
    let warned = gui.wait_js(
        "const w = document.querySelector('[data-testid=volume-upload-warning]'); return w && w.textContent",
        Duration::from_secs(5),
        "writing into a volume a running container uses warns first",
    );
    assert!(warned.as_str().unwrap().contains(&user.name), "{warned}");
    gui.click("[data-testid=volume-upload-confirm]");
    gui.click("[data-testid=volume-upload-go]");
    gui.wait_js(
        "return document.querySelector('[data-testid=volume-transfer-done]') && document.querySelector('[data-testid=volume-entry][data-name=site]')",
        Duration::from_secs(20),
        "the archive is unpacked into the folder and listed",
    );
    assert_eq!(
        docker(&["exec", &user.name, "cat", "/data/docs/site/index.html"]),
        "<h1/>"
    );
    gui.click("[data-testid=volume-close]");

    // Import the same archive into a new volume from the Volumes view; into
    // one that holds something only when told to replace it.
    let imported = changeover_tests::unique("t-browse-imported");
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", &self.0])
                .output();
        }
    }
    let _imported = Gone(imported.clone());
    gui.click("[data-testid=volumes-import]");
    fill(
        &gui,
        "[data-testid=volumes-import-file]",
        archive.to_str().unwrap(),
    );
    fill(&gui, "[data-testid=volumes-import-name]", &vol.name);
    gui.click("[data-testid=volumes-import-go]");
    gui.wait_js(
        "return document.querySelector('[data-testid=volumes-import-replace]')",
        Duration::from_secs(20),
        "importing into a volume that is not empty asks to replace",
    );
    fill(&gui, "[data-testid=volumes-import-name]", &imported);
    gui.click("[data-testid=volumes-import-go]");
    let said = gui.wait_js(
        "const d = document.querySelector('[data-testid=volumes-imported]'); return d && d.textContent",
        Duration::from_secs(30),
        "the archive is imported into a new volume",
    );
    assert!(said.as_str().unwrap().contains(&imported), "{said}");
    assert_eq!(
        changeover_tests::sh_in_volume(None, &imported, "cat /v/site/index.html"),
        "<h1/>"
    );
    assert_eq!(
        docker(&["exec", &user.name, "cat", "/data/docs/site/index.html"]),
        "<h1/>",
        "the volume that was not empty is as it was"
    );

    // A long download is stopped midway: nothing is left where it was going.
    let big = changeover_tests::TestVolume::new(
        None,
        "t-browse-big",
        "dd if=/dev/urandom of=/v/noise bs=1048576 count=300 2>/dev/null",
    );
    put_file(
        &big.name,
        "shop.sqlite",
        &std::fs::read(workspace().join("crates/core/tests/fixtures/shop.sqlite")).unwrap(),
    );
    let big_row = format!("[data-testid=volume-row][data-name=\"{}\"]", big.name);
    gui.wait_js(
        &format!("return document.querySelector('{big_row}')"),
        Duration::from_secs(15),
        "the big volume is listed",
    );
    gui.click(&big_row);
    gui.wait_js(
        "return document.querySelector('[data-testid=volume-entry][data-name=noise]')",
        Duration::from_secs(30),
        "the big volume opens",
    );
    let before = changeover_tests::names_in(here.path());
    let stopped = here.path().join("big.tar.gz");
    gui.click("[data-testid=volume-download]");
    fill(
        &gui,
        "[data-testid=volume-download-dest]",
        stopped.to_str().unwrap(),
    );
    gui.click("[data-testid=volume-download-save]");
    gui.wait_js(
        "return document.querySelector('[data-testid=volume-transferred]')",
        Duration::from_secs(30),
        "the download is under way",
    );
    gui.click("[data-testid=volume-transfer-cancel]");
    let said = gui.wait_js(
        "const p = document.querySelector('[data-testid=volume-transfer-problem]'); return p && p.textContent",
        Duration::from_secs(30),
        "the download stops",
    );
    assert!(said.as_str().unwrap().contains("was cancelled"), "{said}");
    let after = changeover_tests::names_in(here.path());
    assert_eq!(after, before, "no file, not even a partial one, is left");
    gui.click("[data-testid=volume-transfer-close]");

    // A SQLite file's tables and their rows, in the preview.
    gui.click("[data-testid=volume-entry][data-name=\"shop.sqlite\"]");
    let tables = gui.wait_js(
        "const t = [...document.querySelectorAll('[data-testid=sqlite-table]')]; return t.length ? t.map(r => r.dataset.name + '=' + r.dataset.rows).join(',') : null",
        Duration::from_secs(15),
        "the database's tables are shown",
    );
    assert_eq!(
        tables.as_str().unwrap(),
        "users=1000,notes=3,kv=200,wide=1,empty=0,recent="
    );
    // Painted before it is taken (WebKit paints after the DOM changes).
    std::thread::sleep(Duration::from_millis(500));
    gui.screenshot(&workspace().join("docs/screenshots/volume-sqlite.png"));

    // "Choose…" opens the native save dialog (last: it stays open until the
    // window goes).
    gui.click("[data-testid=volume-download]");
    gui.click("[data-testid=volume-download-choose]");
    let titles = changeover_tests::wait_for(Duration::from_secs(15), || {
        let t = gui.window_titles();
        t.iter().any(|n| n == "Save File").then_some(t)
    });
    assert!(
        titles.is_some(),
        "the native save dialog opens: {:?}",
        gui.window_titles()
    );
    drop(gui);
    drop(big);
    drop(user);
    drop(vol);
}

/// A release that changes a file in its volume, seen in the window: the
/// snapshot its deploy took first is listed, compared with the volume as it
/// is now (a tree with counts, and the changed lines of the file clicked),
/// and put back after a confirmation that names the container stopped for
/// the copy. Then the same round again through "Roll back with data".
#[test]
fn a_release_that_changes_its_volume_is_diffed_and_restored_in_the_window() {
    changeover_tests::fixture_image();
    docker(&[
        "tag",
        changeover_tests::FIXTURE_IMAGE,
        "changeover-fixture:gui-v2",
    ]);
    // Each release "migrates" the data once: a line in log.txt (a marker
    // outside the volume keeps a restart from doing it again).
    let body = "services:\n  app:\n    image: changeover-fixture:busybox\n    command: [\"sh\", \"-c\", \"[ -e /ran ] || { echo \\\"migrated by $$(hostname)\\\" >> /data/log.txt; touch /ran; }; exec sleep 86400\"]\n    volumes: [\"data:/data\"]\n    labels: {dev.changeover.test: \"1\"}\n    x-changeover:\n      snapshots: {before_deploy: true, keep: 2}\nvolumes:\n  data: {}\n";
    let stack = changeover_tests::TestStack::new("gui-snap", body, &[]);
    let deployed = changeover_tests::changeover(&["stack", "deploy", "-f", &stack.file()], &[]);
    assert!(
        deployed.status.success(),
        "deploy r1: {}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let service = format!("{}/app", stack.name);
    let vol = format!("{}_data", stack.name);
    let r1 = format!("{}-app-r1-s0", stack.name);
    let log = |container: &str| docker(&["exec", container, "cat", "/data/log.txt"]);
    let before = log(&r1);
    assert_eq!(before.lines().count(), 1, "{before}");

    let gui = Gui::launch("snapshots", &app(), &[]);
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-state=connected]')",
        Duration::from_secs(15),
        "the local daemon connects",
    );
    gui.click("[data-testid=section-services]");
    let row = format!("[data-testid=service-row][data-name=\"{service}\"]");
    gui.wait_js(
        &format!("return document.querySelector('{row}')"),
        Duration::from_secs(15),
        "the service is listed",
    );
    gui.click(&row);
    gui.wait_js(
        &format!("const n = document.querySelector('[data-testid=service-name]'); return n && n.textContent === {} || null", json!(service)),
        Duration::from_secs(10),
        "the service's page opens",
    );
    select(&gui, "[data-testid=deploy-tag]", "gui-v2");
    click_enabled(&gui, "[data-testid=deploy-button]");
    wait_done(&gui, 2, "release 2 is rolled out");
    let r2 = format!("{}-app-r2-s0", stack.name);
    let after = log(&r2);
    assert_eq!(after.lines().count(), 2, "release 2 migrated: {after}");

    // The volume's snapshots: the one the deploy took, labelled.
    gui.click("[data-testid=section-volumes]");
    let vrow = volume_row(&gui, &vol);
    gui.click(&vrow);
    gui.click("[data-testid=volume-tab-snapshots]");
    let snap = gui.wait_js(
        "const r = document.querySelector('[data-testid=snapshot-row][data-reason=before-deploy]'); return r && r.dataset.name + '|' + r.textContent",
        Duration::from_secs(15),
        "the snapshot taken before the deploy is listed",
    );
    let (snap, text) = snap.as_str().unwrap().split_once('|').unwrap();
    let snap = snap.to_string();
    assert!(snap.starts_with(&format!("{vol}.snapshot-")), "{snap}");
    assert!(text.contains("release 2 was deployed"), "{text}");

    // Compared with the volume now: log.txt changed, and its new line.
    gui.click(&format!(
        "[data-testid=snapshot-row][data-name=\"{snap}\"] [data-testid=snapshot-compare]"
    ));
    let counts = gui.wait_js(
        "const c = document.querySelector('[data-testid=diff-counts]'); return c && c.textContent",
        Duration::from_secs(30),
        "the diff is shown with its counts",
    );
    let counts = counts
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        counts.starts_with("0 added · 0 removed · 1 changed"),
        "{counts}"
    );
    gui.click("[data-testid=diff-entry][data-path=\"/log.txt\"][data-change=changed]");
    let lines = gui.wait_js(
        "const l = [...document.querySelectorAll('[data-testid=diff-line]')]; return l.length ? l.map(e => e.dataset.tag + e.textContent.replace(/^[0-9 ]*[-+ ] /, '')).join('\\n') : null",
        Duration::from_secs(15),
        "the changed lines of log.txt are shown",
    );
    let lines = lines.as_str().unwrap();
    let added = after.lines().nth(1).unwrap();
    assert!(lines.contains(&format!("+{added}")), "{lines}");
    assert!(lines.contains(&format!(" {}", before.trim())), "{lines}");
    gui.screenshot(&workspace().join("docs/screenshots/volume-diff.png"));

    // Restore: the confirmation names the running container first.
    gui.click(&format!(
        "[data-testid=snapshot-row][data-name=\"{snap}\"] [data-testid=snapshot-restore]"
    ));
    let stops = gui.wait_js(
        "const s = document.querySelector('[data-testid=restore-stops]'); return s && s.textContent",
        Duration::from_secs(15),
        "the restore asks first, naming the containers it stops",
    );
    assert_eq!(stops.as_str().unwrap(), r2);
    assert_eq!(log(&r2), after, "nothing changes before the confirmation");
    gui.click("[data-testid=restore-confirm]");
    let done = gui.wait_js(
        "const d = document.querySelector('[data-testid=snapshot-done]'); const p = document.querySelector('[data-testid=snapshot-problem]'); return p ? 'PROBLEM ' + p.textContent : d && d.textContent",
        Duration::from_secs(60),
        "the snapshot is restored",
    );
    let done = done.as_str().unwrap();
    assert!(!done.starts_with("PROBLEM"), "{done}");
    assert!(done.contains(&format!("Stopped {r2}")), "{done}");
    assert_eq!(
        log(&r2),
        before,
        "the volume holds what it held before release 2"
    );
    // The diff that is shown again says nothing changed; the undo is listed.
    gui.wait_js(
        "return document.querySelector('[data-testid=diff-same]')",
        Duration::from_secs(30),
        "compared again after the restore, nothing differs",
    );
    gui.wait_js(
        "return document.querySelector('[data-testid=snapshot-row][data-reason=before-restore]')",
        Duration::from_secs(15),
        "the undo snapshot is listed",
    );
    gui.click("[data-testid=volume-close]");
    // Gone before anything beneath it is clicked (a click lands on what
    // is on top).
    gui.wait_js(
        "return !document.querySelector('[data-testid=volume-close]') || null",
        Duration::from_secs(10),
        "the volume's view has closed",
    );

    // Roll back with data: release 1 again, and the data from before r2.
    docker(&["exec", &r2, "sh", "-c", "echo later >> /data/log.txt"]);
    gui.click("[data-testid=section-services]");
    gui.click(&row);
    click_enabled(&gui, "[data-testid=rollback-with-data]");
    gui.wait_js(
        "const b = document.querySelector('[data-testid=rollback-button]'); return b && !b.disabled && b.textContent.includes('with data') || null",
        Duration::from_secs(10),
        "the button rolls back with the data",
    );
    gui.click("[data-testid=rollback-button]");
    let confirm = gui.wait_js(
        "const c = document.querySelector('[data-testid=rollback-data-confirm-box]'); return c && c.textContent",
        Duration::from_secs(10),
        "rolling back with data asks first",
    );
    assert!(confirm.as_str().unwrap().contains(&snap), "{confirm}");
    gui.click("[data-testid=rollback-data-confirm]");
    wait_done(&gui, 1, "rolled back to release 1 with its data");
    gui.wait_js(
        "return [...document.querySelectorAll('[data-testid=release-row]')].some(r => r.dataset.number === '1' && r.dataset.result === 'succeeded') || null",
        Duration::from_secs(15),
        "release 1 is live again",
    );
    let r1_again = stack
        .containers()
        .into_iter()
        .find(|c| c.contains("-app-r1-") && c.ends_with("=running"))
        .expect("release 1 runs again");
    let r1_again = r1_again.split('=').next().unwrap().to_string();
    let now = log(&r1_again);
    assert!(
        !now.contains("later"),
        "the data from before release 2: {now}"
    );
    assert!(now.starts_with(before.trim()), "{now}");
    drop(gui);
    drop(stack);
}

/// Sites from the window: a deployed service given a host name and
/// automatic HTTPS in its edit form gets its certificate from an ACME CA
/// (Debian's pebble on loopback, by TLS-ALPN-01), and its page shows it.
#[test]
fn a_service_gets_a_host_name_and_an_acme_certificate_from_the_window() {
    let (http, https) = (changeover_tests::free_port(), changeover_tests::free_port());
    let ca = changeover_tests::pebble::Pebble::start(http, https);
    let settings = changeover_tests::use_acme_ca(&ca, http, https, "tls-alpn-01");
    assert!(
        settings.status.success(),
        "{}",
        String::from_utf8_lossy(&settings.stderr)
    );
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::web(
        "site",
        "image: changeover-demo:v1",
        port,
        &["health: {path: /health, interval: 500ms}"],
    );
    stack.deploy(&[]);
    let service = stack.web_service();
    let host = format!("{}.example.test", unique("shop"));

    let gui = Gui::launch("sites", &app(), &[]);
    open_service(&gui, &service);
    click_enabled(&gui, "[data-testid=edit-service]");
    gui.wait_js(
        "const n = document.querySelector('[data-testid=form-hosts]'); return n || null",
        Duration::from_secs(10),
        "the edit form opens",
    );
    // A bad host is refused on its field.
    fill(&gui, "[data-testid=form-hosts]", "not a host!");
    gui.click("[data-testid=form-submit]");
    let errors = wait_field_errors(&gui, "the bad host is named on its field");
    assert!(errors.to_string().contains("hosts: "), "{errors}");
    fill(&gui, "[data-testid=form-hosts]", &host);
    select(&gui, "[data-testid=form-https]", "acme");
    gui.js(
        "const c = document.querySelector('[data-testid=form-hsts]'); c.click(); return c.checked",
    );
    gui.click("[data-testid=form-submit]");
    wait_done(&gui, 2, "the service rolls out with its site");
    let shown = gui.wait_js(
        "const c = document.querySelector('[data-testid=site-certificate][data-state=valid]'); return c && c.textContent",
        Duration::from_secs(90),
        "the page shows the certificate from the ACME CA",
    );
    let shown = shown.as_str().unwrap().to_string();
    assert!(
        shown.contains("ACME") && shown.contains("Pebble") && shown.contains("expires"),
        "{shown}"
    );
    let urls = gui.js(
        "return [...document.querySelectorAll('[data-testid=site-host]')].map(e => e.textContent)",
    );
    assert_eq!(urls, json!([format!("https://{host}:{https}/")]));
    gui.js("document.querySelector('[data-testid=site]').scrollIntoView(); return true");
    gui.screenshot(&workspace().join("docs/screenshots/site.png"));

    // Served by name under pebble's root.
    let dir = tempfile::tempdir().unwrap();
    let root_file = dir.path().join("root.pem");
    std::fs::write(&root_file, ca.root_pem()).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-i", "--cacert"])
        .arg(&root_file)
        .args(["--resolve", &format!("{host}:{https}:127.0.0.1")])
        .arg(format!("https://{host}:{https}/"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        answer.contains(" 200") && answer.contains("strict-transport-security"),
        "{answer}"
    );
    assert!(changeover_tests::forget_acme_ca().status.success());
}

#[test]
fn a_registry_login_and_a_tag_that_is_not_local_are_used_from_the_window() {
    let registry = changeover_tests::registry::Registry::with_login("dana", "gui-pw-1");
    let reg = registry.host();
    let repo = unique("t-gui-reg");
    changeover_tests::demo_images(&[]);
    let first = registry.push_image("changeover-demo:v1", &repo, "1.0.0");
    registry.push_image("changeover-demo:v2", &repo, "1.1.0");
    registry.forget_locally(&repo, "1.1.0");
    let home = changeover_tests::home::Home::new();
    let env = home.env();
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::web(
        "reggui",
        &format!("image: {first}"),
        port,
        &["health: {path: /health, interval: 500ms}"],
    );
    stack.deploy(&env);
    let service = stack.web_service();

    let gui = Gui::launch("registry", &app(), &env[1..]);
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-name=default][data-state=connected]')",
        Duration::from_secs(15),
        "the local environment connects",
    );
    gui.click("[data-testid=section-images]");
    gui.click_when("[data-testid=registries-toggle]", "the registries panel");
    fill(&gui, "[data-testid=registry-host]", &reg);
    fill(&gui, "[data-testid=registry-user]", "dana");
    fill(&gui, "[data-testid=registry-password]", "not-the-one");
    click_enabled(&gui, "[data-testid=registry-login-button]");
    let refused = gui.wait_js(
        "const p = document.querySelector('[data-testid=registry-problem]'); return p && p.textContent",
        Duration::from_secs(15),
        "a wrong password is refused",
    );
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{refused}"
    );
    assert_eq!(
        gui.js("return document.querySelectorAll('[data-testid=registry-login]').length"),
        json!(0),
        "and nothing is kept"
    );
    fill(&gui, "[data-testid=registry-password]", "gui-pw-1");
    click_enabled(&gui, "[data-testid=registry-login-button]");
    gui.wait_js(
        &format!("return document.querySelector('[data-testid=registry-login][data-host=\"{reg}\"][data-source=keyring]')"),
        Duration::from_secs(15),
        "the login is listed, kept in the keyring",
    );

    gui.click("[data-testid=section-services]");
    gui.click_when(
        &format!("[data-testid=service-row][data-name=\"{service}\"]"),
        "the service is listed",
    );
    gui.wait_js(
        "return document.querySelector('[data-testid=deploy-tag] option[value=\"1.1.0\"][data-local=no]')",
        Duration::from_secs(20),
        "the registry's tag that is not local is offered",
    );
    let order = gui.js(
        "return [...document.querySelectorAll('[data-testid=deploy-tag] option')].map(o => o.value)",
    );
    assert_eq!(order, json!(["1.1.0", "1.0.0"]), "newest version first");
    select(&gui, "[data-testid=deploy-tag]", "1.1.0");
    click_enabled(&gui, "[data-testid=deploy-button]");
    let pulled = gui.wait_js(
        "const p = document.querySelector('[data-testid=timeline-pull]'); return p && p.textContent",
        Duration::from_secs(60),
        "the pull shows in the timeline",
    );
    assert!(
        pulled
            .as_str()
            .unwrap()
            .contains(&format!("{reg}/{repo}:1.1.0")),
        "{pulled}"
    );
    wait_done(&gui, 2, "the pulled tag rolls out");
    gui.wait_js(
        "return document.querySelector('[data-testid=timeline-pull][data-done=yes]')",
        Duration::from_secs(10),
        "every layer of the pull is done",
    );
    // The page as it settles: the rollout's end shown, no lock, not busy.
    gui.wait_js(
        "const d = document.querySelector('[data-testid=rollout-done]'); return d && !document.querySelector('[data-testid=busy]') && !document.querySelector('.warnbox') || null",
        Duration::from_secs(20),
        "the page settles after the rollout",
    );
    std::thread::sleep(Duration::from_millis(500));
    gui.screenshot(&workspace().join("docs/screenshots/registry.png"));
    assert_eq!(
        changeover_tests::get(port)
            .unwrap()
            .split_whitespace()
            .next(),
        Some("v2")
    );

    // The registry's 1.1.0 is pushed again (here: pointed at 1.0.0's
    // image): the page says a newer image is there, and pulls it.
    registry.retag(&repo, "1.0.0", "1.1.0");
    gui.click(&format!(
        "[data-testid=service-row][data-name=\"{service}\"]"
    ));
    gui.wait_js(
        "return document.querySelector('[data-testid=newer-image]')",
        Duration::from_secs(20),
        "a newer image for the current tag is shown",
    );
    click_enabled(&gui, "[data-testid=pull-redeploy]");
    wait_done(&gui, 3, "the newer image rolls out");
    assert_eq!(
        changeover_tests::get(port)
            .unwrap()
            .split_whitespace()
            .next(),
        Some("v1"),
        "the image the registry's 1.1.0 names now"
    );
}

#[test]
fn a_pull_is_stopped_from_the_timeline_and_the_release_before_keeps_serving() {
    let registry = changeover_tests::registry::Registry::plain();
    let repo = unique("t-gui-stop");
    changeover_tests::demo_images(&[]);
    let one = registry.push_image("changeover-demo:v1", &repo, "1");
    registry.push_image("changeover-demo:v2", &repo, "2");
    registry.forget_locally(&repo, "2");
    // The service's image comes from a mirror whose blobs never arrive:
    // a pull of 2 starts and hangs. 1 is on the daemon under its name.
    let stalled = registry.with_stalled_blobs();
    let image = format!("{}/{repo}", stalled.host());
    docker(&["tag", &one, &format!("{image}:1")]);
    let home = changeover_tests::home::Home::new();
    let env = home.env();
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::web(
        "stoppull",
        &format!("image: {image}:1"),
        port,
        &["health: {path: /health, interval: 500ms}"],
    );
    stack.deploy(&env);
    let service = stack.web_service();

    let gui = Gui::launch("stop-pull", &app(), &env[1..]);
    gui.click_when("[data-testid=section-services]", "the sidebar");
    gui.click_when(
        &format!("[data-testid=service-row][data-name=\"{service}\"]"),
        "the service is listed",
    );
    gui.wait_js(
        "return document.querySelector('[data-testid=deploy-tag] option[value=\"2\"][data-local=no]')",
        Duration::from_secs(20),
        "the registry's tag 2 is offered",
    );
    select(&gui, "[data-testid=deploy-tag]", "2");
    click_enabled(&gui, "[data-testid=deploy-button]");
    gui.click_when("[data-testid=stop-pull]", "the pull shows with a Stop");
    let said = gui.wait_js(
        "const e = document.querySelector('[data-testid=rollout-error]'); return e && !document.querySelector('[data-testid=busy]') ? e.textContent : null",
        Duration::from_secs(30),
        "the rollout ends at once",
    );
    assert!(
        said.as_str()
            .unwrap()
            .contains("the pull was stopped, nothing was changed"),
        "{said}"
    );
    assert_eq!(
        gui.js("return document.querySelectorAll('[data-testid=stop-pull]').length"),
        json!(0),
        "no Stop once it ended"
    );
    assert_eq!(
        changeover_tests::get(port)
            .unwrap()
            .split_whitespace()
            .next(),
        Some("v1"),
        "release 1 keeps serving"
    );
    let out = changeover_tests::changeover(&["service", "inspect", &service, "--json"], &env);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["record"]["current"], json!(1), "{v}");
    assert_eq!(v["record"]["releases"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["rolloutLock"].is_null(), "the lock was given back: {v}");
    assert!(
        docker_images_of(&image).iter().all(|t| t != "2"),
        "and 2 is not on the daemon"
    );
}

fn docker_images_of(repo: &str) -> Vec<String> {
    docker(&["images", repo, "--format", "{{.Tag}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_service_then_its_stack_with_its_volume_are_removed_from_the_window() {
    changeover_tests::demo_images(&[]);
    let (web, api) = (changeover_tests::free_port(), changeover_tests::free_port());
    let body = format!(
        "services:\n  web:\n    image: changeover-demo:v1\n    ports: [\"{web}:8080\"]\n    volumes: [\"data:/data\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n      health: {{path: /health, interval: 300ms}}\n  api:\n    image: changeover-demo:v1\n    ports: [\"{api}:8080\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n      health: {{path: /health, interval: 300ms}}\nvolumes:\n  data: {{}}\n"
    );
    let stack = changeover_tests::TestStack::new("guirm", &body, &[web, api]);
    stack.deploy(&[]);
    let name = stack.name.clone();
    let volume = format!("{name}_data");
    let taken = changeover_tests::changeover(&["volume", "snapshot", &volume], &[]);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let snapshot = changeover_tests::docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=dev.changeover.snapshot.of={volume}"),
    ]);
    assert_eq!(snapshot.lines().count(), 1, "{snapshot}");

    let gui = Gui::launch("remove", &app(), &[]);
    gui.click_when("[data-testid=section-services]", "the sidebar");
    gui.click_when(
        &format!("[data-testid=service-row][data-name=\"{name}/api\"]"),
        "the service is listed",
    );
    click_enabled(&gui, "[data-testid=remove-service]");
    let listed = gui.wait_js(
        "const l = document.querySelector('[data-testid=remove-list]'); return l && l.textContent",
        Duration::from_secs(15),
        "what goes is listed",
    );
    let listed = listed.as_str().unwrap();
    assert!(
        listed.contains(&format!("{name}-api-r1-s0")) && listed.contains(&format!("port {api}")),
        "{listed}"
    );
    click_enabled(&gui, "[data-testid=remove-confirm]");
    gui.wait_js(
        &format!("return !document.querySelector('[data-testid=service-row][data-name=\"{name}/api\"]') && document.querySelector('[data-testid=removed]')"),
        Duration::from_secs(30),
        "the service is gone from the list",
    );
    assert!(changeover_tests::get(api).is_err(), "its route is gone");
    assert!(changeover_tests::get(web).is_ok(), "the other serves on");

    gui.click_when(
        &format!("[data-testid=service-row][data-name=\"{name}/web\"]"),
        "the other service",
    );
    click_enabled(&gui, "[data-testid=remove-stack]");
    gui.click_when("[data-testid=remove-volumes]", "the volumes can be ticked");
    click_enabled(&gui, "[data-testid=remove-confirm]");
    let asked = gui.wait_js(
        "const p = document.querySelector('[data-testid=remove-volumes-confirm-text]'); return p && p.textContent",
        Duration::from_secs(10),
        "a second confirmation names the volume",
    );
    assert!(asked.as_str().unwrap().contains(&volume), "{asked}");
    let stays = gui.wait_js(
        "const p = document.querySelector('[data-testid=snapshots-stay]'); return p && p.textContent",
        Duration::from_secs(10),
        "the snapshot that stays is named",
    );
    assert!(stays.as_str().unwrap().contains(&snapshot), "{stays}");
    assert!(
        changeover_tests::get(web).is_ok(),
        "nothing went before the second yes"
    );
    // The window's picture lags its page a little.
    std::thread::sleep(Duration::from_millis(700));
    gui.screenshot(&workspace().join("docs/screenshots/remove-stack.png"));
    click_enabled(&gui, "[data-testid=remove-confirm]");
    gui.wait_js(
        &format!("const r = document.querySelector('[data-testid=removed]'); return r && r.textContent.includes('Stack {name} was removed') || null"),
        Duration::from_secs(30),
        "the stack is removed",
    );
    assert!(changeover_tests::get(web).is_err());
    assert!(stack.containers().is_empty());
    let kept = std::process::Command::new("docker")
        .args(["volume", "inspect", &volume])
        .output()
        .unwrap();
    assert!(!kept.status.success(), "its volume went, as confirmed");
    let snapshot_kept = std::process::Command::new("docker")
        .args(["volume", "rm", &snapshot])
        .output()
        .unwrap();
    assert!(snapshot_kept.status.success(), "its snapshot stayed");
}

#[test]
fn a_watched_service_is_redeployed_by_the_open_window_when_its_local_tag_is_rebuilt() {
    changeover_tests::demo_images(&[]);
    let tag = format!("{}:dev", unique("t-gui-auto"));
    let build = |from: &str| changeover_tests::build_stamped(&tag, from);
    build("changeover-demo:v1");
    let port = changeover_tests::free_port();
    let stack = changeover_tests::TestStack::web(
        "guiauto",
        &format!("image: {tag}"),
        port,
        &[
            "health: {path: /health, interval: 300ms}",
            "drain_timeout: 1s",
            "autoredeploy: {watch: local}",
        ],
    );
    stack.deploy(&[]);
    let service = stack.web_service();
    let gui = Gui::launch("autoredeploy", &app(), &[]);
    open_service(&gui, &service);
    gui.wait_js(
        "return document.querySelector('[data-testid=autoredeploy-watch]')",
        Duration::from_secs(10),
        "the page says the service redeploys by itself",
    );
    std::thread::sleep(Duration::from_secs(3));
    build("changeover-demo:v2");
    let said = gui.wait_js(
        "const n = document.querySelector('[data-testid=auto-redeploy][data-kind=redeployed]'); return n && n.textContent",
        Duration::from_secs(90),
        "the open window redeployed the rebuilt tag",
    );
    assert!(said.as_str().unwrap().contains("release 2"), "{said}");
    assert_eq!(
        changeover_tests::get(port)
            .unwrap()
            .split_whitespace()
            .next(),
        Some("v2")
    );
    drop(gui);
    drop(stack);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .output();
}
