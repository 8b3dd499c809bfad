//! The live inventory against the real Docker daemon: what the plain `docker`
//! CLI does shows up through the watch, a bad address is reported and not
//! retried forever as if it could work, and a daemon that goes away and comes
//! back is resynced without stale or duplicate containers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use changeover_core::environment::{discover, ConnectionState, DiscoveryInput, EnvironmentList};
use changeover_core::inventory::ContainerState;
use changeover_core::live::{LiveUpdate, LiveViews};
use changeover_core::ProblemCode;
use changeover_tests::{docker_at, unique, PrivateDaemon, TestContainer};
use tokio::sync::watch;

/// A running watch over every environment of `list`, collecting its updates.
struct Watched {
    views: Arc<Mutex<LiveViews>>,
    log: Arc<Mutex<Vec<LiveUpdate>>>,
    stop: watch::Sender<bool>,
}

impl Watched {
    fn start(list: &EnvironmentList) -> Self {
        let views = Arc::new(Mutex::new(LiveViews::new(list)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, stop_rx) = watch::channel(false);
        for spec in list.environments.clone() {
            let views = views.clone();
            let log = log.clone();
            let sink: changeover_docker::Sink = Arc::new(move |u: LiveUpdate| {
                views.lock().unwrap().apply(&u);
                log.lock().unwrap().push(u);
            });
            tokio::spawn(changeover_docker::watch(spec, sink, stop_rx.clone()));
        }
        Self { views, log, stop }
    }

    fn state(&self, env: &str) -> ConnectionState {
        self.views.lock().unwrap().get(env).unwrap().state.clone()
    }

    fn container_state(&self, env: &str, name: &str) -> Option<ContainerState> {
        let views = self.views.lock().unwrap();
        let inv = views.get(env)?.inventory.as_ref()?;
        inv.containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.state)
    }

    /// Waits (async) until `check` holds.
    async fn until(&self, within: Duration, what: &str, check: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !check(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {within:?} waiting until {what}; state: {:?}",
                self.views
                    .lock()
                    .unwrap()
                    .all()
                    .iter()
                    .map(|v| (&v.spec.name, &v.state))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn env_with(docker_host: Option<&str>) -> EnvironmentList {
    discover(&DiscoveryInput {
        docker_host: docker_host.map(str::to_string),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_lifecycle_from_the_docker_cli_shows_within_a_second() {
    let w = Watched::start(&env_with(None));
    w.until(
        Duration::from_secs(10),
        "the local daemon is connected",
        |w| matches!(w.state("default"), ConnectionState::Connected { .. }),
    )
    .await;

    let name = unique("live-lifecycle");
    let c = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            TestContainer::new(
                &name,
                &["--label", "com.docker.compose.project=livetest"],
                true,
            )
        }
    })
    .await
    .unwrap();
    w.until(
        Duration::from_secs(1),
        "a started container shows as running",
        |w| w.container_state("default", &name) == Some(ContainerState::Running),
    )
    .await;
    {
        let views = w.views.lock().unwrap();
        let inv = views.get("default").unwrap().inventory.as_ref().unwrap();
        let row = inv.containers.iter().find(|c| c.name == name).unwrap();
        assert_eq!(
            row.group.as_ref().map(|g| g.name.as_str()),
            Some("livetest"),
            "Compose label groups it"
        );
    }

    let id = c.id.clone();
    tokio::task::spawn_blocking(move || docker_at(None, &["stop", "-t", "1", &id]))
        .await
        .unwrap();
    w.until(
        Duration::from_secs(1),
        "a stopped container shows as exited",
        |w| w.container_state("default", &name) == Some(ContainerState::Exited),
    )
    .await;

    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
    w.until(
        Duration::from_secs(1),
        "a removed container disappears",
        |w| w.container_state("default", &name).is_none(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_docker_host_values_say_what_is_wrong() {
    let w = Watched::start(&env_with(Some("tcp//x")));
    w.until(
        Duration::from_secs(5),
        "a malformed DOCKER_HOST is reported",
        |w| matches!(w.state("default"), ConnectionState::Invalid { .. }),
    )
    .await;
    let ConnectionState::Invalid { problem } = w.state("default") else {
        unreachable!()
    };
    assert_eq!(problem.code, ProblemCode::InvalidHost);
    assert!(
        problem.message.contains("DOCKER_HOST=tcp//x"),
        "names the value: {problem}"
    );

    let w = Watched::start(&env_with(Some("unix:///no/such.sock")));
    w.until(
        Duration::from_secs(5),
        "a socket that is not there is reported",
        |w| matches!(w.state("default"), ConnectionState::Disconnected { .. }),
    )
    .await;
    let ConnectionState::Disconnected {
        problem,
        retry_in_ms,
    } = w.state("default")
    else {
        unreachable!()
    };
    assert_eq!(problem.code, ProblemCode::DaemonUnreachable);
    assert!(
        problem.message.contains("unix:///no/such.sock"),
        "names the address: {problem}"
    );
    assert!(
        problem.message.contains("Start Docker"),
        "says what to do: {problem}"
    );
    assert!(retry_in_ms > 0, "a missing daemon is retried with backoff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_stops_and_starts_again_is_resynced_without_stale_or_duplicate_containers() {
    let mut daemon = tokio::task::spawn_blocking(PrivateDaemon::start)
        .await
        .unwrap();
    let host = daemon.host();
    let keep = unique("resync-keep");
    let gone = unique("resync-gone");
    // `--rm` containers are removed by the daemon itself while it restarts,
    // without any event our watch could see: only a resync can notice.
    let (daemon_back, _keep_guard) = {
        let host = host.clone();
        let (keep, gone) = (keep.clone(), gone.clone());
        tokio::task::spawn_blocking(move || {
            let k = TestContainer::on(Some(&host), &keep, &["--network", "none"], false);
            docker_at(
                Some(&host),
                &[
                    "run",
                    "-d",
                    "--rm",
                    "--network",
                    "none",
                    "--name",
                    &gone,
                    changeover_tests::FIXTURE_IMAGE,
                ],
            );
            (daemon, k)
        })
        .await
        .unwrap()
    };
    daemon = daemon_back;

    let w = Watched::start(&env_with(Some(&host)));
    w.until(Duration::from_secs(10), "both containers are listed", |w| {
        w.container_state("default", &keep).is_some()
            && w.container_state("default", &gone) == Some(ContainerState::Running)
    })
    .await;

    let mut daemon = tokio::task::spawn_blocking(move || {
        daemon.stop();
        daemon
    })
    .await
    .unwrap();
    w.until(
        Duration::from_secs(10),
        "the window-side state says disconnected",
        |w| matches!(w.state("default"), ConnectionState::Disconnected { .. }),
    )
    .await;

    daemon = tokio::task::spawn_blocking(move || {
        daemon.resume();
        daemon
    })
    .await
    .unwrap();
    w.until(Duration::from_secs(15), "it reconnects by itself", |w| {
        matches!(w.state("default"), ConnectionState::Connected { .. })
    })
    .await;
    w.until(
        Duration::from_secs(5),
        "the --rm container that vanished while away is gone",
        |w| w.container_state("default", &gone).is_none(),
    )
    .await;

    let listed = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || {
            docker_at(
                Some(&host),
                &["ps", "-a", "--no-trunc", "--format", "{{.ID}}"],
            )
        })
        .await
        .unwrap()
    };
    let mut truth: Vec<&str> = listed.lines().collect();
    truth.sort();
    let mut seen: Vec<String> = {
        let views = w.views.lock().unwrap();
        views
            .get("default")
            .unwrap()
            .inventory
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.id.clone())
            .collect()
    };
    seen.sort();
    assert_eq!(
        seen, truth,
        "after a resync the inventory is exactly what the daemon lists: no stale, no duplicates"
    );
    assert!(
        w.log
            .lock()
            .unwrap()
            .iter()
            .filter(|u| matches!(u, LiveUpdate::Snapshot { .. }))
            .count()
            >= 2,
        "a reconnect sends a whole new snapshot"
    );
    drop(_keep_guard);
    tokio::task::spawn_blocking(move || drop(daemon))
        .await
        .unwrap();
}
