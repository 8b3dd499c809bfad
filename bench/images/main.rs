//! `bench/images`: registries and pulls through Changeover, each next to
//! the plain tool in the same run, on Debian's `docker-registry` on
//! loopback (the test kit's).
//!
//! - The tags of a repository with 1,000 tags: `changeover image tags REPO
//!   --json` (which also lists the daemon's tags of it, and checks those by
//!   `HEAD`) vs `skopeo list-tags` (target ≤ 1.0×); and with `--digests`
//!   (20 more `HEAD`s), printed beside.
//! - A pull of a ~50 MB image onto the daemon: `changeover image pull` vs
//!   `docker pull` (target ≤ 1.05×), the local copy removed before each.
//!
//! Each is run `BENCH_IMAGES_ROUNDS` times (default 5) in turn; medians are
//! compared. Everything it creates is removed at the end. `make bench-images`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::process::Command;
use std::time::{Duration, Instant};

use changeover_tests::registry::Registry;
use changeover_tests::{build_stamped, docker, fixture_image, unique};

/// The release CLI (`make bench-images` builds it).
fn changeover(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    changeover_tests::changeover_cmd_of("release", args, env)
        .output()
        .expect("changeover runs")
}

fn timed(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what} runs: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives `repo:0`'s manifest `count - 1` more tags, by the registry API
/// (a `docker push` per tag would take minutes).
fn more_tags(registry: &Registry, repo: &str, count: usize) {
    let (kind, manifest) = registry.manifest(repo, "0");
    for i in 1..count {
        // Versions and names mixed, as real repositories have them.
        let tag = if i % 3 == 0 {
            format!("build-{i}")
        } else {
            format!("1.{}.{}", i / 10, i % 10)
        };
        registry.put_manifest(repo, &tag, &kind, &manifest);
    }
}

fn main() {
    let rounds: usize = std::env::var("BENCH_IMAGES_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let registry = Registry::plain();
    let host = registry.host();
    let config = tempfile::tempdir().unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    let env = [
        ("CHANGEOVER_CONFIG_DIR", config.path().to_str().unwrap()),
        ("DOCKER_CONFIG", docker_config.path().to_str().unwrap()),
    ];
    println!("bench/images: Debian's docker-registry on loopback; {rounds} round(s) each, in turn (release CLI build, this machine)");

    // 1,000 tags.
    let tags_repo = unique("t-bench-tags");
    registry.push(&tags_repo, &["0"]);
    more_tags(&registry, &tags_repo, 1000);
    let repository = format!("{host}/{tags_repo}");
    let (mut ours, mut with_digests, mut skopeo) = (Vec::new(), Vec::new(), Vec::new());
    let mut listed = 0;
    for _ in 0..rounds {
        with_digests.push(timed(|| {
            let out = changeover(&["image", "tags", &repository, "--json", "--digests"], &env);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }));
        ours.push(timed(|| {
            let out = changeover(&["image", "tags", &repository, "--json"], &env);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            listed = v["tags"].as_array().unwrap().len();
        }));
        skopeo.push(timed(|| {
            run_ok(
                Command::new("skopeo").args([
                    "list-tags",
                    "--tls-verify=false",
                    &format!("docker://{repository}"),
                ]),
                "skopeo list-tags",
            );
        }));
    }
    let (o, d, s) = (median(ours), median(with_digests), median(skopeo));
    println!(
        " tags of a repository with {listed} tags: changeover image tags {} (median), skopeo list-tags {}; ratio {:.2}x (target <= 1.00x); with --digests {} ({:.2}x)",
        ms(o),
        ms(s),
        o.as_secs_f64() / s.as_secs_f64(),
        ms(d),
        d.as_secs_f64() / s.as_secs_f64()
    );

    // A ~50 MB image.
    fixture_image();
    let ctx = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dd").args([
            "if=/dev/urandom",
            &format!("of={}", ctx.path().join("blob").display()),
            "bs=1M",
            "count=50",
            "status=none",
        ]),
        "dd",
    );
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY blob /blob\n",
            changeover_tests::FIXTURE_IMAGE
        ),
    )
    .unwrap();
    let pull_repo = unique("t-bench-pull");
    let reference = format!("{host}/{pull_repo}:1");
    docker(&[
        "build",
        "-q",
        "-t",
        &reference,
        ctx.path().to_str().unwrap(),
    ]);
    run_ok(
        Command::new("docker").args(["push", "-q", &reference]),
        "docker push",
    );
    let forget = || {
        docker(&["rmi", &reference]);
    };
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        forget();
        ours.push(timed(|| {
            let out = changeover(&["image", "pull", &reference], &env);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }));
        forget();
        plain.push(timed(|| {
            run_ok(
                Command::new("docker").args(["pull", "-q", &reference]),
                "docker pull",
            );
        }));
    }
    let (o, p) = (median(ours), median(plain));
    println!(
        " pull of a 50 MB image: changeover image pull {} (median), docker pull {}; ratio {:.2}x (target <= 1.05x)",
        ms(o),
        ms(p),
        o.as_secs_f64() / p.as_secs_f64()
    );
    let _ = Command::new("docker")
        .args(["rmi", "-f", &reference])
        .output();
    autoredeploy_reaction(&registry, rounds.min(3));
}

/// A version the demo answers on `port` (its first word), if it answers.
fn version(port: u16) -> Option<String> {
    changeover_tests::get(port)
        .ok()?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// From a new image (a local tag rebuilt; a tag pushed again to the
/// registry) to the first request answered by the release running it,
/// with `changeover watch` running.
fn autoredeploy_reaction(registry: &Registry, rounds: usize) {
    changeover_tests::demo_images(&[]);
    for (kind, watch) in [
        ("local", "{watch: local}"),
        ("digest", "{watch: digest, check_every: 5s}"),
    ] {
        let port = changeover_tests::free_port();
        let image = if kind == "local" {
            let tag = format!("{}:dev", unique("t-bench-local"));
            build_stamped(&tag, "changeover-demo:v1");
            tag
        } else {
            registry.push_image("changeover-demo:v1", &unique("t-bench-digest"), "stable")
        };
        let stack = changeover_tests::TestStack::web(
            "benchauto",
            &format!("image: {image}"),
            port,
            &[
                "health: {path: /health, interval: 200ms, timeout: 1s}",
                "drain_timeout: 1s",
                &format!("autoredeploy: {watch}"),
            ],
        );
        stack.deploy(&[]);
        let service = stack.web_service();
        let mut watcher = changeover_tests::KillOnDrop(
            changeover_tests::changeover_cmd_of("release", &["watch", &service], &[])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_secs(2));
        let mut times = Vec::new();
        let mut want = "v1";
        for _ in 0..rounds {
            want = if want == "v1" { "v2" } else { "v1" };
            let from = format!("changeover-demo:{want}");
            let started = Instant::now();
            if kind == "local" {
                build_stamped(&image, &from);
            } else {
                // Pushed again: the registry's `stable` names a new image.
                let r = changeover_core::image::ImageRef::parse(&image).unwrap();
                let repo = r.path.clone();
                registry.push_image(&from, &repo, "next");
                registry.retag(&repo, "next", "stable");
            }
            let deadline = started + Duration::from_secs(120);
            while version(port).as_deref() != Some(want) {
                assert!(Instant::now() < deadline, "{kind}: the new image went out");
                std::thread::sleep(Duration::from_millis(20));
            }
            times.push(started.elapsed());
        }
        let _ = watcher.0.kill();
        let m = median(times);
        let note = if kind == "local" {
            "target < 5 s"
        } else {
            "checked every 5 s"
        };
        println!(
            " autoredeploy reaction ({kind} watch): new image to the first request answered by it {} (median of {rounds}; {note})",
            ms(m)
        );
        if kind == "local" {
            let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
        }
    }
}
