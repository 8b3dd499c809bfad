//! The kit that workspace tests and benchmarks share: the `docker` CLI, fixture
//! images built locally from busybox-static (no registry, no internet), a
//! private throw-away Docker daemon for tests that stop and start one, and the
//! real app in a real window driven over WebDriver.
//!
//! Everything a test creates carries [`TEST_LABEL`] and a unique name, and is
//! removed by the guard that created it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

pub mod gui;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Put on everything tests create, so a crashed run can be cleaned with
/// `docker rm -f $(docker ps -aq --filter label=dev.changeover.test)`.
pub const TEST_LABEL: &str = "dev.changeover.test=1";

/// The fixture image: busybox-static on `scratch`, default command a long sleep.
pub const FIXTURE_IMAGE: &str = "changeover-fixture:busybox";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cargo put the binaries of this build (`target/debug` or `target/release`).
pub fn target_dir(profile: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join(profile)
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the `docker` CLI against `host` (or the default daemon) and returns
/// stdout; panics with stderr when it fails.
pub fn docker_at(host: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    if let Some(h) = host {
        cmd.args(["-H", h]);
    }
    let out = cmd.args(args).output().expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker(args: &[&str]) -> String {
    docker_at(None, args)
}

/// Builds the fixture image on the default daemon once per process.
pub fn fixture_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("busybox-static is installed (scripts/setup.sh installs it)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(busybox, dir.path().join("busybox")).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nLABEL dev.changeover.test=1\nCMD [\"/bin/sleep\", \"86400\"]\n",
        )
        .unwrap();
        docker(&[
            "build",
            "-q",
            "-t",
            FIXTURE_IMAGE,
            dir.path().to_str().unwrap(),
        ]);
    });
    FIXTURE_IMAGE
}

/// A container that is removed when the guard drops.
pub struct TestContainer {
    pub name: String,
    pub id: String,
    host: Option<String>,
}

impl TestContainer {
    /// `docker run -d` (or `docker create` when `start` is false) of the
    /// fixture image with extra `docker` arguments before the image.
    pub fn new(name: &str, extra: &[&str], start: bool) -> Self {
        Self::on(None, name, extra, start)
    }

    pub fn on(host: Option<&str>, name: &str, extra: &[&str], start: bool) -> Self {
        let image = fixture_image();
        let mut args = vec![
            if start { "run" } else { "create" },
            "--name",
            name,
            "--label",
            TEST_LABEL,
        ];
        if start {
            args.insert(1, "-d");
        }
        args.extend_from_slice(extra);
        args.push(image);
        let id = docker_at(host, &args);
        Self {
            name: name.to_string(),
            id,
            host: host.map(str::to_string),
        }
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let mut cmd = Command::new("docker");
        if let Some(h) = &self.host {
            cmd.args(["-H", h]);
        }
        let _ = cmd
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `check` until it returns `Some` or `within` passes.
pub fn wait_for<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Docker daemon of the test's own, on its own socket and data folder, so a
/// test can stop and start it without touching the daemon everything else
/// uses. Needs root on Linux, like the daemon `scripts/docker-up.sh` starts.
/// It runs in a network namespace of its own (`unshare --net`).
pub struct PrivateDaemon {
    dir: tempfile::TempDir,
    namespace: String,
    child: Option<Child>,
}

impl PrivateDaemon {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("changeover-dockerd-")
            .tempdir()
            .unwrap();
        let mut daemon = Self {
            dir,
            namespace: unique("changeover-test"),
            child: None,
        };
        daemon.resume();
        // Give it the fixture image without any registry.
        let mut save = Command::new("docker")
            .args(["save", fixture_image()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let load = Command::new("docker")
            .args(["-H", &daemon.host(), "load", "-q"])
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save of the fixture");
        assert!(
            load.status.success(),
            "loading the fixture into the private daemon: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        daemon
    }

    /// `unix://…` address of this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("docker.pid")
    }

    /// Starts (again) with the same data, and waits until it answers.
    pub fn resume(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        // Its own network namespace: a second dockerd must not touch the host's
        // `docker0` bridge, which the main daemon's containers use.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(self.pidfile())
            .args(["--iptables=false", "--ip-masq=false"])
            .args(["--containerd-namespace", &self.namespace])
            .args([
                "--containerd-plugins-namespace",
                &format!("{}-plugins", self.namespace),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd runs (scripts/setup.sh installs docker.io)");
        self.child = Some(child);
        let host = self.host();
        let up = wait_for(Duration::from_secs(30), || {
            Command::new("docker")
                .args(["-H", &host, "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
        });
        assert!(
            up.is_some(),
            "the private dockerd did not answer: {}",
            std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
        );
    }

    /// Stops the daemon the way a user or systemd would (SIGTERM) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let host = self.host();
            // remove what the test left, then stop
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker -H {host} ps -aq | xargs -r docker -H {host} rm -f >/dev/null 2>&1"
                ))
                .status();
            self.stop();
        }
        // Data of a stopped dockerd may hold mounts; best effort.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "awk '$2 ~ \"^{}\" {{print $2}}' /proc/mounts | xargs -r umount -l 2>/dev/null",
                self.dir.path().display()
            ))
            .status();
    }
}
