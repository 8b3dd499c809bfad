//! `bench/inventory`: the window with 1,000 containers.
//!
//! Creates 1,000 small containers from the busybox fixture (100 running, 400
//! exited, 500 created), opens the release app in a real window (Xvfb +
//! tauri-driver), and prints:
//! - time from asking for the app to the first full render of all 1,000;
//! - time from `docker stop` (the API call, SIGKILL at once) of one running
//!   container to the window showing one fewer running, median over 20;
//! - resident memory (RSS, and PSS, which counts shared pages once) of the
//!   app and its WebKit processes with the 1,000 listed.
//!
//! Everything it creates is labelled and removed at the end, also on failure.
//! Run it with `make bench-inventory`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::StopContainerOptionsBuilder;
use changeover_tests::gui::Gui;
use changeover_tests::{docker, fixture_image, target_dir};

const BENCH_LABEL: &str = "dev.changeover.bench=inventory";
const TOTAL: usize = 1000;
const RUNNING: usize = 100;
const EXITED: usize = 400;
const SAMPLES: usize = 20;
const WORKERS: usize = 6;

/// Removes the bench's containers when dropped.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = docker(&["ps", "-aq", "--filter", &format!("label={BENCH_LABEL}")]);
        let ids: Vec<&str> = ids.lines().collect();
        for chunk in ids.chunks(100) {
            let mut args = vec!["rm", "-f"];
            args.extend_from_slice(chunk);
            docker(&args);
        }
    }
}

fn create_containers() {
    let image = fixture_image();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    break;
                }
                let name = format!("bench-inv-{i:04}");
                let project = format!("com.docker.compose.project=bench-{:02}", i / 50);
                let base = [
                    "--name",
                    name.as_str(),
                    "--network",
                    "none",
                    "--label",
                    BENCH_LABEL,
                    "--label",
                    changeover_tests::TEST_LABEL,
                    "--label",
                    project.as_str(),
                ];
                if i < RUNNING {
                    let mut args = vec!["run", "-d"];
                    args.extend_from_slice(&base);
                    args.push(image);
                    docker(&args);
                } else if i < RUNNING + EXITED {
                    let mut args = vec!["run", "-d"];
                    args.extend_from_slice(&base);
                    args.extend_from_slice(&[image, "true"]);
                    docker(&args);
                } else {
                    let mut args = vec!["create"];
                    args.extend_from_slice(&base);
                    args.push(image);
                    docker(&args);
                }
            });
        }
    });
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

/// (name, RSS KiB, PSS KiB) of the app and WebKit processes in `group`.
fn memory_of_group(group: u32) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may contain spaces
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2).and_then(|p| p.parse::<u32>().ok()) != Some(group) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim().to_string();
        // Count the app and WebKit, not the test drivers.
        if !(comm.starts_with("changeover") || comm.starts_with("WebKit"))
            || comm == "WebKitWebDriver"
        {
            continue;
        }
        let field = |file: &str, key: &str| -> u64 {
            std::fs::read_to_string(entry.path().join(file))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.push((
            comm,
            field("status", "VmRSS:"),
            field("smaps_rollup", "Pss:"),
        ));
    }
    out
}

fn main() {
    let app = target_dir("release").join("changeover-app");
    assert!(
        app.exists(),
        "build the release app first: cargo build --release -p changeover-app"
    );

    println!("bench/inventory: creating {TOTAL} containers ({RUNNING} running, {EXITED} exited, {} created)…", TOTAL - RUNNING - EXITED);
    let _cleanup = Cleanup;
    let t = Instant::now();
    create_containers();
    println!("  created in {:.1} s", t.elapsed().as_secs_f64());
    let total_now: usize = docker(&["ps", "-aq"]).lines().count();

    // 1. First full render.
    let gui = Gui::launch("bench-inventory", &app, &[]);
    gui.wait_js(
        &format!(
            "const t = document.querySelector('[data-testid=containers]');
             return !!t && Number(t.dataset.total) >= {total_now} && document.querySelectorAll('[data-testid=container-row]').length > 10"
        ),
        Duration::from_secs(60),
        "all containers are listed",
    );
    let first_render = gui.started().elapsed();

    // 2. Event to UI: the sidebar's running count drops when one is stopped.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = bollard::Docker::connect_with_local_defaults().unwrap();
    let running: Vec<String> = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={BENCH_LABEL}"),
        "--filter",
        "status=running",
    ])
    .lines()
    .map(str::to_string)
    .collect();
    assert!(
        running.len() >= SAMPLES,
        "enough running containers to stop"
    );
    let mut latencies = Vec::new();
    for id in running.iter().take(SAMPLES) {
        gui.js("window.__changed = null;
             const el = document.querySelector('[data-testid=count-containers]');
             const before = el.textContent;
             const obs = new MutationObserver(() => {
               if (el.textContent !== before) { window.__changed = Date.now(); obs.disconnect(); }
             });
             obs.observe(el, { childList: true, subtree: true, characterData: true });
             return true;");
        let t0 = now_ms();
        runtime
            .block_on(api.stop_container(id, Some(StopContainerOptionsBuilder::new().t(0).build())))
            .unwrap();
        let shown = gui.wait_js(
            "return window.__changed",
            Duration::from_secs(10),
            "the window shows the stopped container",
        );
        latencies.push(shown.as_f64().unwrap() - t0);
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort_by(f64::total_cmp);
    let median = (latencies[SAMPLES / 2 - 1] + latencies[SAMPLES / 2]) / 2.0;

    // 3. Memory with everything listed.
    let processes = memory_of_group(gui.process_group());
    let rss: u64 = processes.iter().map(|p| p.1).sum();
    let pss: u64 = processes.iter().map(|p| p.2).sum();
    let rows_in_dom =
        gui.js("return document.querySelectorAll('[data-testid=container-row]').length");
    drop(gui);

    println!();
    println!("bench/inventory results ({total_now} containers on the daemon, release build)");
    println!(
        "  first full render after app start : {:.0} ms   (target < 2000 ms)",
        first_render.as_secs_f64() * 1000.0
    );
    println!(
        "  docker stop -> UI, median of {SAMPLES}   : {median:.0} ms   (target < 300 ms; min {:.0}, max {:.0})",
        latencies[0],
        latencies[SAMPLES - 1]
    );
    println!(
        "  memory, app + WebKit ({} processes): RSS {:.0} MB, PSS {:.0} MB   (target < 450 MB)",
        processes.len(),
        rss as f64 / 1024.0,
        pss as f64 / 1024.0
    );
    println!("  container rows in the DOM (virtualised list): {rows_in_dom}");
    for (name, rss, pss) in &processes {
        println!(
            "    {name:<16} RSS {:>4.0} MB, PSS {:>4.0} MB",
            *rss as f64 / 1024.0,
            *pss as f64 / 1024.0
        );
    }
}
