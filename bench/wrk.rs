//! Running `wrk` and reading its report, for the benchmarks that put load on
//! a port. Included by each bench binary with `#[path]`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `wrk` run in the background.
pub struct Wrk {
    child: Child,
    started: Instant,
}

/// What `wrk` reported.
#[derive(Default, Debug, Clone)]
pub struct WrkResult {
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    /// `connect 0, read 0, write 0, timeout 0` as wrk prints it.
    pub socket_detail: String,
    /// Wall time the load ran, as measured here.
    pub seconds: f64,
    /// `Requests/sec` as wrk prints it.
    pub requests_per_sec: f64,
    /// Latency percentiles in milliseconds (with `--latency`).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Wrk {
    /// Starts `wrk -t2 -c CONNECTIONS` against `url` for `duration` (keep-alive,
    /// latency distribution on). For a phase of unknown length pass a long
    /// duration and call [`Wrk::stop`].
    pub fn start(url: &str, connections: u32, duration: Duration) -> Self {
        let child = Command::new("wrk")
            .args([
                "-t2",
                "-c",
                &connections.to_string(),
                "-d",
                &format!("{}s", duration.as_secs().max(1)),
                "--timeout",
                "5s",
                "--latency",
                url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrk runs (installed by scripts/setup.sh)");
        Self {
            child,
            started: Instant::now(),
        }
    }

    /// Stops the run now (SIGINT makes wrk print its report).
    #[allow(dead_code)] // bench/edge runs for a fixed time
    pub fn stop(self) -> WrkResult {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.finish()
    }

    /// Waits for the run to end by itself.
    pub fn finish(self) -> WrkResult {
        let out = self.child.wait_with_output().expect("wrk ends");
        let mut r = parse(&String::from_utf8_lossy(&out.stdout));
        r.seconds = self.started.elapsed().as_secs_f64();
        r
    }
}

/// `1.23ms`, `456.00us`, `1.02s` in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// Reads wrk's report.
pub fn parse(text: &str) -> WrkResult {
    let mut r = WrkResult::default();
    for line in text.lines() {
        let line = line.trim();
        if line.contains(" requests in ") {
            r.requests = line
                .split(" requests in ")
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = n.trim().parse().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            r.socket_detail = rest.trim().to_string();
            r.socket_errors = rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
        if let Some(n) = line.strip_prefix("Requests/sec:") {
            r.requests_per_sec = n.trim().parse().unwrap_or(0.0);
        }
        if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = millis(v);
        }
        if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = millis(v);
        }
    }
    r
}
