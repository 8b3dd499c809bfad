//! `bench/app`: what the desktop app costs the daemon, and how the container
//! detail feels, in the real window (release build, Xvfb + tauri-driver).
//!
//! 1. Daemon load. The app talks to the daemon through a counting proxy on a
//!    Unix socket (every HTTP request line it sends is counted) while
//!    `docker events` counts `exec_create`s. Measured for 60 s each:
//!    - baseline, the way the window worked before the application layer:
//!      a client that every 2 s lists the services and every 1 s reads the
//!      traffic, each call dialling anew (the `changeover` CLI in a loop,
//!      which does exactly that);
//!    - the app with one service page open and idle (a service without a
//!      port: no Traffic panel);
//!    - the app with a service's Traffic panel open (pushed once a second).
//! 2. Terminal: keystroke → echo in the window (the keystroke goes into
//!    xterm.js's input from a timer 40–90 ms after the last echo, as a
//!    person types; the echo is its row changing), median and p99 over 200
//!    keys. Baseline: keystroke → echo on a TTY exec straight over the
//!    Docker API from this process, same container.
//! 3. Log follow: a container printing about 5,000 lines/s; lines per second
//!    the window's log view receives vs `docker logs -f` on the same
//!    container in the same 20 s, and how fast the window answers meanwhile
//!    (a click that toggles timestamps, until the view shows it).
//!
//! Run it with `make bench-app` (`BENCH_APP_PARTS=daemon,terminal,logs`
//! picks parts). Everything it creates is removed at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use changeover_tests::gui::Gui;
use changeover_tests::{changeover, fixture_image, free_port, target_dir, unique, TestStack};

const WINDOW: Duration = Duration::from_secs(60);

/// A Unix-socket proxy in front of the daemon that counts request lines.
struct CountingProxy {
    dir: tempfile::TempDir,
    requests: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(daemon) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                let counter = counter.clone();
                let (c2, d2) = (client.try_clone().unwrap(), daemon.try_clone().unwrap());
                std::thread::spawn(move || pump(client, daemon, Some(counter)));
                std::thread::spawn(move || pump(d2, c2, None));
            }
        });
        Self { dir, requests }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }
}

/// Copies `from` to `to`; with `count`, counts HTTP request lines.
fn pump(mut from: UnixStream, mut to: UnixStream, count: Option<Arc<AtomicU64>>) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(c) = &count {
            let mut seen = std::mem::take(&mut tail);
            seen.extend_from_slice(&buf[..n]);
            // Every request line ends so; bodies (JSON, exec input) do not.
            let m = b" HTTP/1.1\r\n";
            let hits = seen.windows(m.len()).filter(|w| *w == m).count() as u64;
            c.fetch_add(hits, Ordering::Relaxed);
            // Keep a tail shorter than the marker, so none counts twice.
            let keep = seen.len().min(m.len() - 1);
            tail = seen[seen.len() - keep..].to_vec();
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Counts `exec_create` events on the daemon while it lives.
struct ExecCounter {
    child: std::process::Child,
    count: Arc<AtomicU64>,
}

impl ExecCounter {
    fn start() -> Self {
        let mut child = Command::new("docker")
            .args([
                "events",
                "--filter",
                "event=exec_create",
                "--format",
                "{{.Action}}",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for _ in BufReader::new(out).lines() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        Self { child, count }
    }
}

impl Drop for ExecCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(exec_create, API requests)` per minute over `WINDOW` while `during` runs.
fn measure(proxy: &CountingProxy, execs: &ExecCounter, during: impl FnOnce(Instant)) -> (f64, f64) {
    let (e0, r0) = (
        execs.count.load(Ordering::Relaxed),
        proxy.requests.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    during(started + WINDOW);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    (
        (execs.count.load(Ordering::Relaxed) - e0) as f64 / minutes,
        (proxy.requests.load(Ordering::Relaxed) - r0) as f64 / minutes,
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn stack_body(port: Option<u16>) -> String {
    let ports = port
        .map(|p| format!("    ports: [\"{p}:8080\"]\n"))
        .unwrap_or_default();
    format!(
        "services:\n  web:\n    image: changeover-demo:v1\n{ports}    labels: {{dev.changeover.test: \"1\"}}\n    deploy:\n      replicas: 2\n    x-changeover:\n      health: {{path: /health, interval: 1s, timeout: 1s}}\n"
    )
}

fn main() {
    let app = target_dir("release").join("changeover-app");
    assert!(
        app.exists(),
        "build the release app first: cargo build --release -p changeover-app"
    );
    // Two services: one with a port (Traffic panel), one without.
    let port = free_port();
    let routed = TestStack::new("bench-app", &stack_body(Some(port)), &[port]);
    let quiet = TestStack::new("bench-app-quiet", &stack_body(None), &[]);
    for s in [&routed, &quiet] {
        let out = changeover(&["stack", "deploy", "-f", &s.file()], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let parts = std::env::var("BENCH_APP_PARTS").unwrap_or_else(|_| "daemon,terminal,logs".into());
    let part = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let proxy = CountingProxy::start();
    let execs = ExecCounter::start();
    let host = proxy.host();
    let gui = Gui::launch("bench-app", &app, &[("DOCKER_HOST", &host)]);
    gui.wait_js(
        "return document.querySelector('[data-testid=environment][data-state=connected]')",
        Duration::from_secs(30),
        "the app connects",
    );
    if part("daemon") {
        daemon_load(&gui, &proxy, &execs, &host, &routed, &quiet, port);
    }
    if part("terminal") {
        terminal(&gui);
    }
    if part("logs") {
        log_follow(&gui);
    }
    drop(gui);
}

fn daemon_load(
    gui: &Gui,
    proxy: &CountingProxy,
    execs: &ExecCounter,
    host: &str,
    routed: &TestStack,
    quiet: &TestStack,
    port: u16,
) {
    println!("bench/app: what the app costs the daemon, per minute (60 s each)");
    // Baseline: the window's old way, one dial and one exec per call.
    let (be, br) = measure(proxy, execs, |until| {
        let mut tick = 0u64;
        while Instant::now() < until {
            let env = [("DOCKER_HOST", host)];
            changeover(&["traffic", "show", &format!("{}/web", routed.name)], &env);
            if tick.is_multiple_of(2) {
                changeover(&["service", "ls"], &env);
            }
            tick += 1;
            std::thread::sleep(Duration::from_millis(1000));
        }
    });
    println!(
        "  baseline (a new connection and exec per read, services every 2 s, traffic every 1 s)"
    );
    println!("    exec_create: {be:>7.1}/min   API requests: {br:>7.1}/min");

    gui.click("[data-testid=section-services]");
    let select = |name: &str| {
        gui.wait_js(
            &format!(
                "return document.querySelector('[data-testid=service-row][data-name=\"{name}\"]')"
            ),
            Duration::from_secs(20),
            "the service is listed",
        );
        gui.click(&format!("[data-testid=service-row][data-name=\"{name}\"]"));
    };
    select(&format!("{}/web", quiet.name));
    std::thread::sleep(Duration::from_secs(5));
    let (ie, ir) = measure(proxy, execs, |until| {
        std::thread::sleep(until.saturating_duration_since(Instant::now()))
    });
    println!("  the app, one service page open and idle");
    println!("    exec_create: {ie:>7.1}/min   API requests: {ir:>7.1}/min   (target: at most 1 exec/min)");
    select(&format!("{}/web", routed.name));
    gui.wait_js(
        "return document.querySelector('[data-testid=traffic-release]')",
        Duration::from_secs(20),
        "the Traffic panel shows figures",
    );
    let load = changeover_tests::Load::start(port, 1);
    let (te, tr) = measure(proxy, execs, |until| {
        std::thread::sleep(until.saturating_duration_since(Instant::now()))
    });
    load.finish();
    println!("  the app, a Traffic panel open and updating (1 Hz, under a little load)");
    println!("    exec_create: {te:>7.1}/min   API requests: {tr:>7.1}/min");
    println!(
        "  exec_create per minute vs baseline: idle {:.3}x, traffic panel {:.3}x",
        ie / be.max(1e-9),
        te / be.max(1e-9)
    );
}

/// Keystroke → echo figures of one window, in ms.
struct Echo {
    window: Vec<f64>,
    arrived: Vec<f64>,
    ipc: Vec<f64>,
    frames: Vec<f64>,
}

fn terminal(gui: &Gui) {
    let name = unique("bench-term");
    let _c = changeover_tests::TestContainer::new(&name, &[], true);
    let _ = fixture_image();
    let ours = echo_in(gui, &name);
    gui.click("[data-testid=detail-close]");
    let direct = direct_echo(&name, 200);
    let gpu = std::fs::read_dir("/dev/dri")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
        })
        .unwrap_or(false);
    println!(
        "bench/app: terminal keystroke → echo (200 keys typed 40–90 ms after the last echo, local daemon; GPU render node: {})",
        if gpu { "yes" } else { "no" }
    );
    let show = |label: &str, e: &Echo| {
        println!(
            "  {label}: median {:>6.2} ms   p99 {:>6.2} ms   ({} echoed)",
            percentile(&e.window, 0.5),
            percentile(&e.window, 0.99),
            e.window.len()
        );
        println!(
            "      until the echo reached the page: median {:>6.2} ms   p99 {:>6.2} ms",
            percentile(&e.arrived, 0.5),
            percentile(&e.arrived, 0.99)
        );
        println!(
            "      one empty command round trip   : median {:>6.2} ms   p99 {:>6.2} ms",
            percentile(&e.ipc, 0.5),
            percentile(&e.ipc, 0.99)
        );
        println!(
            "      the webview's frame interval   : median {:>6.2} ms   p99 {:>6.2} ms",
            percentile(&e.frames, 0.5),
            percentile(&e.frames, 0.99)
        );
    };
    show("in the window                        ", &ours);
    println!(
        "  baseline, API exec from this process : median {:>6.2} ms   p99 {:>6.2} ms   ({} echoed)",
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
        direct.len()
    );
    println!(
        "  window vs API exec: {:.1}x the median   (target: median < 15 ms)",
        percentile(&ours.window, 0.5) / percentile(&direct, 0.5).max(1e-9)
    );
}

/// Opens a terminal into `name` in `gui` and types 200 keys into it.
fn echo_in(gui: &Gui, name: &str) -> Echo {
    gui.click("[data-testid=section-containers]");
    gui.wait_js(
        &format!(
            "return document.querySelector('[data-testid=container-row][data-name=\"{name}\"]')"
        ),
        Duration::from_secs(20),
        "the container is listed",
    );
    gui.click(&format!(
        "[data-testid=container-row][data-name=\"{name}\"]"
    ));
    gui.click("[data-testid=tab-terminal]");
    gui.wait_js(
        "const l = document.querySelector('[data-testid=terminal-label]'); return l && l.textContent",
        Duration::from_secs(30),
        "the terminal opens",
    );
    std::thread::sleep(Duration::from_secs(1));
    // Each key is typed from a timer of its own, 40–90 ms after the last
    // echo, as a person types: never in step with the frame that drew it.
    let samples = gui.js(
        r#"
        const rows = document.querySelector('[data-testid=terminal] .xterm-rows');
        const input = document.querySelector('[data-testid=terminal] .xterm-helper-textarea');
        const host = document.querySelector('[data-testid=terminal]');
        const count = () => (rows.textContent.match(/7/g) || []).length;
        const out = [];
        const arrived = [];
        const pause = (ms) => new Promise((r) => setTimeout(r, ms));
        const step = () => new Promise((done) => {
          const before = count();
          const t0 = performance.now();
          const seen = new MutationObserver(() => {
            if (count() > before) {
              seen.disconnect();
              out.push(performance.now() - t0);
              arrived.push(Number(host.dataset.lastOutput) - t0);
              done();
            }
          });
          seen.observe(rows, { childList: true, subtree: true, characterData: true });
          input.dispatchEvent(new InputEvent('input', { data: '7', inputType: 'insertText', bubbles: true }));
          setTimeout(() => { seen.disconnect(); done(); }, 2000);
        });
        const frames = () => new Promise((done) => {
          const gaps = [];
          let last = null;
          const tick = (t) => {
            if (last !== null) gaps.push(t - last);
            last = t;
            if (gaps.length < 60) requestAnimationFrame(tick); else done(gaps);
          };
          requestAnimationFrame(tick);
        });
        return (async () => {
          const gaps = await frames();
          for (let i = 0; i < 200; i++) { await pause(40 + Math.random() * 50); await step(); }
          const ipc = [];
          for (let i = 0; i < 100; i++) {
            await pause(20);
            const t = performance.now();
            await window.__TAURI_INTERNALS__.invoke('stop_logs', { id: 0 });
            ipc.push(performance.now() - t);
          }
          return [out, arrived, ipc, gaps];
        })();
        "#,
    );
    let (mut window, mut arrived, mut ipc, mut frames): (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) =
        serde_json::from_value(samples).unwrap_or_default();
    for v in [&mut window, &mut arrived, &mut ipc, &mut frames] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    Echo {
        window,
        arrived,
        ipc,
        frames,
    }
}

fn log_follow(gui: &Gui) {
    let chatty = unique("bench-logs");
    let script = "sleep 4; awk 'BEGIN { for (;;) { for (i = 0; i < 500; i++) print \"line\", n++, \"of a steady stream of log lines\"; fflush(); system(\"usleep 100000\") } }'";
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &chatty,
            "--label",
            changeover_tests::TEST_LABEL,
        ])
        .arg(fixture_image())
        .args(["/bin/sh", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success());
    let _chatty = Remove(chatty.clone());
    gui.wait_js(
        &format!(
            "return document.querySelector('[data-testid=container-row][data-name=\"{chatty}\"]')"
        ),
        Duration::from_secs(20),
        "the chatty container is listed",
    );
    gui.click(&format!(
        "[data-testid=container-row][data-name=\"{chatty}\"]"
    ));
    let raw = Arc::new(AtomicU64::new(0));
    let mut follower = Command::new("docker")
        .args(["logs", "-f", "--tail", "0", &chatty])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let out = follower.stdout.take().unwrap();
        let raw = raw.clone();
        std::thread::spawn(move || {
            for _ in BufReader::new(out).lines() {
                raw.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    std::thread::sleep(Duration::from_secs(6));
    let received = |gui: &Gui| -> u64 {
        gui.js("return Number(document.querySelector('[data-testid=logs]').dataset.received)")
            .as_u64()
            .unwrap_or(0)
    };
    let (w0, r0, t0) = (received(gui), raw.load(Ordering::Relaxed), Instant::now());
    let mut answers = Vec::new();
    while t0.elapsed() < Duration::from_secs(20) {
        let a = Instant::now();
        gui.click("[data-testid=logs-timestamps]");
        gui.wait_js(
            "return document.querySelector('[data-testid=logs-timestamps]') && true",
            Duration::from_secs(10),
            "the window answers",
        );
        answers.push(a.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(400));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (w1, r1) = (received(gui), raw.load(Ordering::Relaxed));
    let _ = follower.kill();
    let _ = follower.wait();
    answers.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (wr, rr) = ((w1 - w0) as f64 / secs, (r1 - r0) as f64 / secs);
    println!("bench/app: log follow, a container printing about 5,000 lines/s ({secs:.1} s)");
    println!("  docker logs -f (baseline) : {rr:>8.0} lines/s");
    println!(
        "  the window's log view     : {wr:>8.0} lines/s   ratio {:.3}x   (target >= 0.9x)",
        wr / rr.max(1e-9)
    );
    println!(
        "  a click while following   : median {:.1} ms, max {:.1} ms ({} clicks, WebDriver round trip included)",
        percentile(&answers, 0.5),
        answers.last().copied().unwrap_or(f64::NAN),
        answers.len()
    );
}

/// Removes a container when dropped.
struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// Keystroke → echo on a TTY exec over the Docker API, from this process.
fn direct_echo(container: &str, keys: usize) -> Vec<f64> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let docker = changeover_tests::default_docker().await;
        let mut s = changeover_docker::containers::exec(
            &docker,
            container,
            vec!["/bin/sh".into()],
            Some((120, 40)),
            vec![],
        )
        .await
        .unwrap();
        // Let the prompt arrive.
        let _ = tokio::time::timeout(Duration::from_millis(500), s.output.next()).await;
        let mut out = Vec::new();
        for _ in 0..keys {
            let t0 = Instant::now();
            s.input.write_all(b"7").await.unwrap();
            s.input.flush().await.unwrap();
            match tokio::time::timeout(Duration::from_secs(2), s.output.next()).await {
                Ok(Some(Ok(p))) if p.bytes.contains(&b'7') => {
                    out.push(t0.elapsed().as_secs_f64() * 1000.0)
                }
                _ => {}
            }
        }
        let _ = s.input.write_all(b"\x15exit\r").await;
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    })
}
