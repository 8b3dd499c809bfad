//! The kit that workspace tests and benchmarks share: the `docker` CLI, fixture
//! images built locally from busybox-static (no registry, no internet), a
//! private throw-away Docker daemon for tests that stop and start one, and the
//! real app in a real window driven over WebDriver.
//!
//! Everything a test creates carries [`TEST_LABEL`] and a unique name, and is
//! removed by the guard that created it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

pub mod gui;
pub mod home;
#[path = "../../crates/edge/tests/support/pebble.rs"]
pub mod pebble;
pub mod registry;
pub mod remote;

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

/// Builds the demo images (`changeover-demo:v1` and `v2`) on the default
/// daemon when they are missing, and the demo tags in `extra` (such as
/// `changeover-demo:v1-unhealthy`), as a deploy of them would.
pub fn demo_images(extra: &[&str]) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let docker = default_docker().await;
        changeover_application::services::ensure_sandbox_images(&docker)
            .await
            .expect("the demo images build");
        let specs: Vec<changeover_core::service::ServiceSpec> = extra
            .iter()
            .map(|i| changeover_core::service::ServiceSpec::new("t", "t", i))
            .collect();
        let refs: Vec<&changeover_core::service::ServiceSpec> = specs.iter().collect();
        changeover_application::services::ensure_demo_images(&docker, &refs)
            .await
            .expect("the demo images build");
    });
}

/// Builds `tag` on the default daemon from `from` with a file of its own
/// on top, so each build is a new image (and a pull of it has a layer to
/// fetch).
pub fn build_stamped(tag: &str, from: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("stamp"), unique("stamp").repeat(4096)).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {from}\nCOPY stamp /changeover-test-stamp\n"),
    )
    .unwrap();
    docker(&["build", "-q", "-t", tag, ctx.path().to_str().unwrap()]);
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

/// A child process killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// Waits until the daemon at `host` answers; panics with its log otherwise.
pub fn wait_for_daemon(host: &str, log: &Path) {
    let up = wait_for(Duration::from_secs(30), || {
        Command::new("docker")
            .args(["-H", host, "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())
    });
    assert!(
        up.is_some(),
        "the dockerd at {host} did not answer: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Gives the daemon at `host` the fixture image, without any registry.
pub fn load_fixture(host: &str) {
    let mut save = Command::new("docker")
        .args(["save", fixture_image()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("docker")
        .args(["-H", host, "load", "-q"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success(), "docker save of the fixture");
    assert!(
        load.status.success(),
        "loading the fixture into {host}: {}",
        String::from_utf8_lossy(&load.stderr)
    );
}

/// A Docker daemon of the test's own, on its own socket and data folder, so a
/// test can stop and start it without touching the daemon everything else
/// uses. Needs root on Linux, like the daemon `scripts/docker-up.sh` starts.
/// It runs in a network namespace of its own (`unshare --net`).
pub struct PrivateDaemon {
    dir: tempfile::TempDir,
    namespace: String,
    child: Option<Child>,
    /// Where it looks for volume plugins' sockets instead of
    /// `/run/docker/plugins` (mounted there in a mount namespace of its own,
    /// so the default daemon never sees a test's plugin).
    plugins: Option<PathBuf>,
}

impl PrivateDaemon {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// One that finds volume plugins in `plugins` (and nowhere else).
    pub fn with_plugins(plugins: &Path) -> Self {
        Self::start_with(Some(plugins.to_path_buf()))
    }

    fn start_with(plugins: Option<PathBuf>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("changeover-dockerd-")
            .tempdir()
            .unwrap();
        let mut daemon = Self {
            dir,
            namespace: unique("changeover-test"),
            child: None,
            plugins,
        };
        daemon.resume();
        load_fixture(&daemon.host());
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
        let mut unshare = Command::new("unshare");
        match &self.plugins {
            None => unshare.args(["--net", "--", "dockerd"]),
            Some(dir) => unshare
                .args(["--net", "--mount", "--", "sh", "-c"])
                .arg("mkdir -p /run/docker/plugins && mount --bind \"$0\" /run/docker/plugins && exec dockerd \"$@\"")
                .arg(dir),
        };
        let child = unshare
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
        wait_for_daemon(&self.host(), &d.join("dockerd.log"));
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

/// Runs the debug `changeover` binary with `args` (and extra environment),
/// against the default daemon.
pub fn changeover(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    changeover_cmd(args, env).output().expect("changeover runs")
}

/// The `changeover` command, ready to run or spawn.
pub fn changeover_cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    changeover_cmd_of("debug", args, env)
}

/// [`changeover_cmd`] of the build `profile` (`release` for benchmarks).
pub fn changeover_cmd_of(profile: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let bin = target_dir(profile).join("changeover");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The default environment's daemon (as the CLI would pick it), connected.
pub async fn default_docker() -> changeover_docker::Docker {
    let environments = changeover_core::environment::discover(
        &changeover_core::environment::DiscoveryInput::from_process(),
    );
    changeover_docker::connect(environments.default_spec().expect("a default environment"))
        .await
        .expect("the daemon answers")
}

/// The default environment, kept by the application layer as the CLI keeps
/// it (discovered environments; no keyring needed for them).
pub fn default_environment() -> std::sync::Arc<changeover_application::Environment> {
    changeover_application::Environments::from_process()
        .get(None)
        .expect("a default environment")
}

/// A host port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("0.0.0.0", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A stack file in a temporary directory, named `t-…`, whose containers,
/// networks and edge routes are removed when it drops (volumes are kept by
/// deploys, so they are removed here too).
pub struct TestStack {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
}

impl TestStack {
    /// Writes `body` (everything after `name:`) as `stack.yml`.
    pub fn new(prefix: &str, body: &str, ports: &[u16]) -> Self {
        let name = unique(&format!("t-{prefix}"));
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(
            dir.path().join("stack.yml"),
            format!("name: {name}\n{body}"),
        )
        .expect("the stack file is written");
        Self {
            name,
            dir,
            ports: ports.to_vec(),
        }
    }

    /// A stack of one service `web` published on `port` (the demo's 8080
    /// inside), from `source` (`image: REF` or `build: …`), labelled as a
    /// test's, with `x` as its `x-changeover` entries (`key: value`).
    pub fn web(prefix: &str, source: &str, port: u16, x: &[&str]) -> Self {
        let mut body = format!(
            "services:\n  web:\n    {source}\n    ports: [\"{port}:8080\"]\n    labels: {{dev.changeover.test: \"1\"}}\n    x-changeover:\n"
        );
        for entry in x {
            body.push_str(&format!("      {entry}\n"));
        }
        Self::new(prefix, &body, &[port])
    }

    /// `stack/service` of its service `web`.
    pub fn web_service(&self) -> String {
        format!("{}/web", self.name)
    }

    /// `changeover stack deploy` of it, with `env`; it must succeed.
    pub fn deploy(&self, env: &[(&str, &str)]) {
        let out = changeover(&["stack", "deploy", "-f", &self.file()], env);
        assert!(
            out.status.success(),
            "deploying {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn file(&self) -> String {
        self.dir.path().join("stack.yml").display().to_string()
    }

    /// Containers of the stack, as `name=state` sorted by name.
    pub fn containers(&self) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=dev.changeover.stack={}", self.name),
            "--format",
            "{{.Names}}={{.State}}",
        ]);
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        remove_stack(&self.name, &self.ports);
        let vols = Command::new("docker")
            .args([
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name={}_", self.name),
            ])
            .output();
        if let Ok(v) = vols {
            for vol in String::from_utf8_lossy(&v.stdout).lines() {
                let _ = Command::new("docker").args(["volume", "rm", vol]).output();
            }
        }
    }
}

/// One control request to the default daemon's edge, as `docker exec` runs
/// it; its JSON answer (`None` when there is no edge to ask).
pub fn edge_ctl(request: &serde_json::Value) -> Option<serde_json::Value> {
    let out = Command::new("docker")
        .args(["exec", "changeover-edge", "/changeover-edge", "ctl"])
        .arg(request.to_string())
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Removes what deploying stack `name` left on the default daemon: its
/// containers, the edge's routes on `ports` and its services' records, its
/// default network. Named volumes stay (deploys never remove them).
pub fn remove_stack(name: &str, ports: &[u16]) {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.changeover.stack={name}"),
    ]);
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.lines());
        let _ = Command::new("docker").args(&args).output();
    }
    for port in ports {
        edge_ctl(&serde_json::json!({"op": "route-remove", "port": port}));
    }
    let prefix = format!("services/{name}/");
    if let Some(keys) = edge_ctl(&serde_json::json!({"op": "doc-list", "prefix": prefix})) {
        for key in keys["keys"].as_array().into_iter().flatten() {
            edge_ctl(&serde_json::json!({"op": "doc-delete", "key": key, "expect": null}));
        }
    }
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("{name}_default")])
        .output();
}

/// GETs `http://127.0.0.1:PORT/` in a loop on `threads` threads until
/// stopped; counts answers by outcome.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadCount>>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadCount {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the assertion message.
    pub failures: Vec<String>,
    /// Bodies seen (first word: the demo's version).
    pub versions: std::collections::BTreeMap<String, u64>,
}

impl Load {
    pub fn start(port: u16, threads: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(10))
                        .build();
                    let mut c = LoadCount::default();
                    let url = format!("http://127.0.0.1:{port}/");
                    while !stop.load(Ordering::Relaxed) {
                        match agent.get(&url).call() {
                            Ok(r) => {
                                let body = r.into_string().unwrap_or_default();
                                let v = body.split_whitespace().next().unwrap_or("").to_string();
                                *c.versions.entry(v).or_default() += 1;
                                c.ok += 1;
                            }
                            Err(e) => {
                                c.failed += 1;
                                if c.failures.len() < 5 {
                                    c.failures.push(e.to_string());
                                }
                            }
                        }
                    }
                    c
                })
            })
            .collect();
        Self { stop, threads }
    }

    pub fn finish(self) -> LoadCount {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadCount::default();
        for t in self.threads {
            let c = t.join().expect("a load thread");
            total.ok += c.ok;
            total.failed += c.failed;
            total.failures.extend(c.failures);
            for (k, v) in c.versions {
                *total.versions.entry(k).or_default() += v;
            }
        }
        total
    }
}

/// A stack's service `name` running the demo app as a UDP echo: HTTP on
/// 8080 (its `healthcheck:` probes it, every `check`), datagrams echoed on
/// 5353, published as `ports` (`"PORT:5353/udp"`), labelled as a test's;
/// `extra` is more of the service, indented as its keys (`deploy:`,
/// `x-changeover:`…).
pub fn udp_echo_service(name: &str, ports: &str, check: &str, extra: &str) -> String {
    format!(
        "services:\n  {name}:\n    image: changeover-demo:v1\n    command: [\"--listen\", \"0.0.0.0:8080\", \"--udp\", \"0.0.0.0:5353\"]\n    ports: [{ports}]\n    labels: {{dev.changeover.test: \"1\"}}\n    healthcheck:\n      test: [\"CMD\", \"/changeover-edge\", \"probe\", \"http://127.0.0.1:8080/health\"]\n      interval: {check}\n      retries: 1\n{extra}"
    )
}

/// The demo app's UDP echo with its port published by Docker itself
/// (`-p PORT:5353/udp`), the baseline a UDP route is measured against;
/// removed when dropped.
pub struct DirectUdpEcho {
    pub name: String,
    pub port: u16,
}

impl DirectUdpEcho {
    /// Started on the default daemon, once it echoes.
    pub fn start(prefix: &str) -> Self {
        let (name, port) = (unique(prefix), free_port());
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "dev.changeover.test=1",
            "-p",
            &format!("{port}:5353/udp"),
            "changeover-demo:v1",
            "--listen",
            "0.0.0.0:8080",
            "--udp",
            "0.0.0.0:5353",
        ]);
        let direct = Self { name, port };
        udp_echoes(port, Duration::from_secs(20));
        direct
    }
}

impl Drop for DirectUdpEcho {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// Waits until UDP `port` on loopback echoes a datagram; panics after `within`.
pub fn udp_echoes(port: u16, within: Duration) {
    wait_for(within, || {
        let s = std::net::UdpSocket::bind(("127.0.0.1", 0)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        s.send_to(b"hi", ("127.0.0.1", port)).ok()?;
        let mut buf = [0u8; 64];
        s.recv(&mut buf).ok()
    })
    .unwrap_or_else(|| panic!("UDP port {port} echoes within {within:?}"));
}

/// UDP clients on loopback, each its own socket (its own flow through the
/// edge), each sending a numbered datagram and waiting up to
/// [`UdpLoad::WAIT`] for its echo before the next.
pub struct UdpLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<UdpCount>>,
}

#[derive(Debug, Default, Clone)]
pub struct UdpCount {
    pub sent: u64,
    pub answered: u64,
    /// Sent and never answered within the wait.
    pub lost: u64,
    /// The most datagrams one client lost in a row.
    pub longest_gap: u64,
    /// Clients whose last datagram went unanswered.
    pub cut_off: u64,
    /// Answers by the version the demo put after the echo.
    pub versions: std::collections::BTreeMap<String, u64>,
}

impl UdpLoad {
    pub const WAIT: Duration = Duration::from_millis(500);

    pub fn start(port: u16, clients: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let socket = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
                    socket.connect(("127.0.0.1", port)).unwrap();
                    socket.set_read_timeout(Some(Self::WAIT)).unwrap();
                    let mut c = UdpCount::default();
                    let mut gap = 0;
                    let mut buf = [0u8; 512];
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let text = format!("c{i}-{seq}");
                        c.sent += 1;
                        let _ = socket.send(text.as_bytes());
                        let mut answered = false;
                        // Late echoes of earlier datagrams are skipped.
                        while let Ok(n) = socket.recv(&mut buf) {
                            let got = String::from_utf8_lossy(&buf[..n]).to_string();
                            if let Some(version) = got.strip_prefix(&format!("{text} ")) {
                                *c.versions.entry(version.to_string()).or_default() += 1;
                                answered = true;
                                break;
                            }
                        }
                        if answered {
                            c.answered += 1;
                            gap = 0;
                        } else {
                            c.lost += 1;
                            gap += 1;
                            c.longest_gap = c.longest_gap.max(gap);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    c.cut_off = u64::from(gap > 0);
                    c
                })
            })
            .collect();
        Self { stop, threads }
    }

    pub fn finish(self) -> UdpCount {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = UdpCount::default();
        for t in self.threads {
            let c = t.join().expect("a UDP load thread");
            total.sent += c.sent;
            total.answered += c.answered;
            total.lost += c.lost;
            total.longest_gap = total.longest_gap.max(c.longest_gap);
            total.cut_off += c.cut_off;
            for (k, v) in c.versions {
                *total.versions.entry(k).or_default() += v;
            }
        }
        total
    }
}

/// GET `http://127.0.0.1:PORT/` once; the body, or the error.
pub fn get(port: u16) -> Result<String, String> {
    ureq::get(&format!("http://127.0.0.1:{port}/"))
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| e.to_string())
        .and_then(|r| r.into_string().map_err(|e| e.to_string()))
}

/// A volume filled by a shell script (run by the fixture image with the
/// volume at `/v`), removed with its volume helpers when the guard drops.
pub struct TestVolume {
    pub name: String,
    host: Option<String>,
}

/// The names in the folder `dir`, sorted (what a transfer left there).
pub fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("the folder reads")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    names
}

/// Waits until the files in `dir` hold more than `bytes` in all (a transfer
/// writing there is under way); false when they do not within a minute.
pub fn written_into(dir: &Path, bytes: u64) -> bool {
    wait_for(Duration::from_secs(60), || {
        let written: u64 = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        (written > bytes).then_some(())
    })
    .is_some()
}

/// Runs the shell `script` in a throw-away fixture container with `volume`
/// mounted at `/v` (on the daemon at `host`, or the default one, where the
/// fixture image is built first); its stdout, trimmed.
pub fn sh_in_volume(host: Option<&str>, volume: &str, script: &str) -> String {
    if host.is_none() {
        fixture_image();
    }
    docker_at(
        host,
        &[
            "run",
            "--rm",
            "--label",
            TEST_LABEL,
            "-v",
            &format!("{volume}:/v"),
            FIXTURE_IMAGE,
            "sh",
            "-c",
            script,
        ],
    )
}

impl TestVolume {
    /// A volume filled by `script` run in the fixture image (built here on
    /// the default daemon; a private daemon is given it by the test).
    pub fn new(host: Option<&str>, prefix: &str, script: &str) -> Self {
        let name = unique(prefix);
        docker_at(
            host,
            &["volume", "create", "--label", TEST_LABEL, name.as_str()],
        );
        sh_in_volume(host, &name, script);
        Self {
            name,
            host: host.map(str::to_string),
        }
    }

    /// The volume helpers Changeover runs for this volume now.
    pub fn helpers(&self) -> Vec<String> {
        let filter = format!("label=dev.changeover.helper=volume:{}", self.name);
        docker_at(self.host.as_deref(), &["ps", "-aq", "--filter", &filter])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestVolume {
    fn drop(&mut self) {
        let host: Vec<&str> = match &self.host {
            Some(h) => vec!["-H", h],
            None => vec![],
        };
        for id in self.helpers() {
            let _ = Command::new("docker")
                .args(&host)
                .args(["rm", "-f", "-v", &id])
                .output();
        }
        let _ = Command::new("docker")
            .args(&host)
            .args(["volume", "rm", &self.name])
            .output();
    }
}

/// Points the default daemon's edge at `ca` for ACME certificates (by
/// `challenge`), on shared ports `http` and `https`; its output.
pub fn use_acme_ca(
    ca: &pebble::Pebble,
    http: u16,
    https: u16,
    challenge: &str,
) -> std::process::Output {
    let ca_file = ca.ca_file.display().to_string();
    changeover(
        &[
            "edge",
            "config",
            "--http-port",
            &http.to_string(),
            "--https-port",
            &https.to_string(),
            "--acme-directory",
            &ca.directory,
            "--acme-ca",
            &ca_file,
            "--acme-email",
            "ops@example.test",
            "--acme-challenge",
            challenge,
        ],
        &[],
    )
}

/// Puts the default daemon's edge back on the default ACME CA; its output.
pub fn forget_acme_ca() -> std::process::Output {
    changeover(
        &["edge", "config", "--acme-directory", "", "--acme-ca", ""],
        &[],
    )
}
