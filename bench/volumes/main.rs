//! `bench/volumes`: looking into, copying and comparing volumes, each next
//! to what plain Docker does in the same run.
//!
//! - First page (500 entries) of a folder of 100,000 files, cold (the
//!   helper starts) and warm, vs `docker run --rm -v VOL:/v busybox ls /v/many`.
//! - Full size walk of that volume vs `docker run … busybox du -s /v`.
//! - Export (.tar.gz) and snapshot of a 1 GiB volume vs
//!   `docker run … busybox tar c /v | gzip`, as throughput.
//! - Download of that 1 GiB folder (.tar.gz) vs `docker cp` of it.
//! - Diff of two snapshots of the 100,000-file volume where 100 files changed.
//!
//! `BENCH_VOLUME_MIB` sets the big volume's size (default 1024). Everything
//! it creates is removed at the end, also on failure. `make bench-volumes`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use changeover_application::{snapshots, volumes};
use changeover_tests::{
    default_environment, docker, fixture_image, sh_in_volume, unique, FIXTURE_IMAGE,
};

/// Volumes (and snapshots of them) removed when dropped.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for v in &self.0 {
            let filter = format!("label=dev.changeover.snapshot.of={v}");
            let snaps = docker(&["volume", "ls", "-q", "--filter", &filter]);
            for name in snaps.lines().chain(std::iter::once(v.as_str())) {
                let helpers = docker(&[
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=dev.changeover.helper=volume:{name}"),
                ]);
                for id in helpers.lines() {
                    let _ = std::process::Command::new("docker")
                        .args(["rm", "-f", id])
                        .output();
                }
                let _ = std::process::Command::new("docker")
                    .args(["volume", "rm", "-f", name])
                    .output();
            }
        }
    }
}

fn fill(vol: &str, script: &str) {
    docker(&["volume", "create", vol]);
    sh_in_volume(None, vol, script);
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn sh(cmd: &str) -> Duration {
    let (out, took) = timed(|| {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1_048_576.0 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    fixture_image();
    let env = default_environment();
    let many = unique("bench-vol-many");
    let big = unique("bench-vol-big");
    let _cleanup = Cleanup(vec![many.clone(), big.clone()]);
    let mib: u64 = std::env::var("BENCH_VOLUME_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);

    eprintln!("filling {many} with 100,000 files and {big} with {mib} MiB…");
    fill(
        &many,
        "mkdir /v/many && cd /v/many && i=0; while [ $i -lt 100000 ]; do echo \"file $i\" > f$i; i=$((i+1)); done",
    );
    // Half random (does not compress), half text (does).
    let half = mib / 2;
    fill(
        &big,
        &format!(
            "mkdir /v/data && cd /v/data && i=0; while [ $i -lt {half} ]; do dd if=/dev/urandom of=r$i bs=1M count=1 2>/dev/null; i=$((i+1)); done; \
             j=0; while [ $j -lt {} ]; do seq 1 200000 | head -c 1048576 > t$j; j=$((j+1)); done",
            mib - half
        ),
    );
    let big_bytes = mib * 1_048_576;

    println!("bench/volumes ({})", env!("CARGO_PKG_VERSION"));
    // ---- first page of 100,000 ----
    let base_ls = sh(&format!(
        "docker run --rm -v {many}:/v {FIXTURE_IMAGE} ls /v/many | head -500 >/dev/null"
    ));
    let (page, cold) = {
        let t = Instant::now();
        let p = volumes::files(&env, &many, "/many", None, None)
            .await
            .unwrap();
        (p, t.elapsed())
    };
    assert_eq!(page.total, 100_000);
    let mut warm = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        volumes::files(&env, &many, "/many", None, None)
            .await
            .unwrap();
        warm.push(t.elapsed());
    }
    let warm = median(warm);
    println!(
        "first page of 100,000 files: cold {} (helper started), warm median {}; baseline docker run ls {}; warm vs baseline {:.3}x (target < 300 ms: {})",
        ms(cold),
        ms(warm),
        ms(base_ls),
        warm.as_secs_f64() / base_ls.as_secs_f64(),
        if warm < Duration::from_millis(300) { "met" } else { "missed" }
    );

    // ---- size walk ----
    let base_du = sh(&format!(
        "docker run --rm -v {many}:/v {FIXTURE_IMAGE} du -s /v >/dev/null"
    ));
    let (walk, ours_du) = {
        let t = Instant::now();
        let w = volumes::size(&env, &many, "/", |_| {}).await.unwrap();
        (w, t.elapsed())
    };
    println!(
        "size walk of {} files: ours {} (warm helper), baseline docker run du -s {}; ratio {:.3}x (target <= 1.1x: {})",
        walk.files,
        ms(ours_du),
        ms(base_du),
        ours_du.as_secs_f64() / base_du.as_secs_f64(),
        if ours_du.as_secs_f64() <= 1.1 * base_du.as_secs_f64() { "met" } else { "missed" }
    );

    // ---- export, snapshot, download of the big one ----
    let dir = tempfile::tempdir().unwrap();
    let base_tar = sh(&format!(
        "docker run --rm -v {big}:/v {FIXTURE_IMAGE} tar c /v | gzip > {}",
        dir.path().join("base.tar.gz").display()
    ));
    let export_to = dir.path().join("ours.tar.gz");
    let t = Instant::now();
    volumes::export(&env, &big, &export_to, false, false, |_| {})
        .await
        .unwrap();
    let ours_export = t.elapsed();
    let t = Instant::now();
    let (snap, copied) = snapshots::snapshot(&env, &big, "bench", false, |_| {})
        .await
        .unwrap();
    let ours_snap = t.elapsed();
    assert_eq!(copied.bytes, big_bytes, "{}", snap.name);
    let base_mib = mib_s(big_bytes, base_tar);
    println!(
        "{mib} MiB volume: baseline docker run tar c | gzip {:.1} MiB/s; export {:.1} MiB/s ({:.3}x); snapshot {:.1} MiB/s ({:.3}x) (target >= 0.9x)",
        base_mib,
        mib_s(big_bytes, ours_export),
        mib_s(big_bytes, ours_export) / base_mib,
        mib_s(big_bytes, ours_snap),
        mib_s(big_bytes, ours_snap) / base_mib,
    );
    let holder = unique("bench-vol-cp");
    docker(&[
        "create",
        "--name",
        &holder,
        "-v",
        &format!("{big}:/v"),
        FIXTURE_IMAGE,
        "true",
    ]);
    let base_cp = sh(&format!(
        "docker cp {holder}:/v {}",
        dir.path().join("cp").display()
    ));
    docker(&["rm", "-f", &holder]);
    let t = Instant::now();
    volumes::download(
        &env,
        &big,
        "/data",
        &dir.path().join("dl.tar.gz"),
        false,
        |_| {},
    )
    .await
    .unwrap();
    let ours_dl = t.elapsed();
    println!(
        "download of the {mib} MiB folder: ours as .tar.gz {:.1} MiB/s; baseline docker cp (plain tar, unpacked) {:.1} MiB/s; ratio {:.3}x",
        mib_s(big_bytes, ours_dl),
        mib_s(big_bytes, base_cp),
        mib_s(big_bytes, ours_dl) / mib_s(big_bytes, base_cp)
    );

    // ---- diff of two snapshots, 100 files changed ----
    let (a, _) = snapshots::snapshot(&env, &many, "a", false, |_| {})
        .await
        .unwrap();
    sh_in_volume(
        None,
        &many,
        "cd /v/many && i=0; while [ $i -lt 100 ]; do echo changed >> f$((i*997)); i=$((i+1)); done",
    );
    let (b, _) = snapshots::snapshot(&env, &many, "b", false, |_| {})
        .await
        .unwrap();
    let base_diff = sh(&format!(
        "docker run --rm -v {}:/a -v {}:/b {FIXTURE_IMAGE} diff -r /a /b >/dev/null || true",
        a.name, b.name
    ));
    let t = Instant::now();
    let d = snapshots::diff(&env, &many, &a.name, Some(&b.name))
        .await
        .unwrap();
    let ours_diff = t.elapsed();
    assert_eq!(d.counts.changed, 100, "{:?}", d.counts);
    println!(
        "diff of two snapshots of 100,000 files, 100 changed: ours {} ({} changed, {} unchanged); baseline docker run diff -r {}; ratio {:.3}x",
        ms(ours_diff),
        d.counts.changed,
        d.counts.unchanged,
        ms(base_diff),
        ours_diff.as_secs_f64() / base_diff.as_secs_f64()
    );
}
