//! Which release a request goes to, and what each release served.
//!
//! A route's [`TrafficPolicy`] shares new requests among releases by weight.
//! A client keeps the `changeover-release` cookie it got on its first
//! response: a random id hashed onto the weights, so it stays on one release
//! while the split holds (and, as a split grows, only the clients whose hash
//! falls in the moved range change release). A request carrying the preview
//! token goes to the preview release. Maintenance answers 503 without
//! touching a target.
//!
//! Counters are per route and release, lock-free and per traffic thread; latency is a histogram of
//! time to response headers with fixed bucket bounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use changeover_core::edge::{
    ReleaseMetrics, Share, TrafficPolicy, PREVIEW_COOKIE, PREVIEW_HEADER, STICKY_COOKIE,
};
use hyper::header::{HeaderMap, HeaderValue, COOKIE};

/// Upper bounds of the latency buckets, in microseconds (the last is "more").
const BOUNDS_US: [u64; 28] = [
    100,
    200,
    300,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    30_000,
    50_000,
    75_000,
    100_000,
    150_000,
    200_000,
    300_000,
    500_000,
    750_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    u64::MAX,
];

/// What one release served on one route. One set of counters per traffic
/// thread (each on its own cache lines, so the threads never contend for
/// them), summed when read.
pub struct Counters {
    pub release: u32,
    shards: Box<[Shard]>,
}

#[derive(Default)]
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    classes: [AtomicU64; 4],
    failures: AtomicU64,
    bytes: AtomicU64,
    latency: [AtomicU64; BOUNDS_US.len()],
}

impl Counters {
    pub fn new(release: u32) -> Self {
        Self {
            release,
            shards: (0..crate::workers::worker_count())
                .map(|_| Shard::default())
                .collect(),
        }
    }

    /// This thread's counters.
    fn mine(&self) -> &Shard {
        &self.shards[crate::workers::worker_index() % self.shards.len()]
    }

    /// One counter summed over the threads.
    fn total(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }

    /// A response's headers arrived after `took`.
    pub fn response(&self, status: u16, took: Duration) {
        let mine = self.mine();
        mine.requests.fetch_add(1, Ordering::Relaxed);
        if (200..600).contains(&status) {
            mine.classes[(status / 100 - 2) as usize].fetch_add(1, Ordering::Relaxed);
        }
        let us = took.as_micros() as u64;
        let i = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_US.len() - 1);
        mine.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A request that needed no answer (a UDP flow none came back on).
    pub fn request(&self) {
        self.mine().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The release did not answer a request.
    pub fn failure(&self) {
        let mine = self.mine();
        mine.requests.fetch_add(1, Ordering::Relaxed);
        mine.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far, and those that got a 5xx or no answer.
    pub fn requests_and_bad(&self) -> (u64, u64) {
        (
            self.total(|s| &s.requests),
            self.total(|s| &s.classes[3]) + self.total(|s| &s.failures),
        )
    }

    pub fn sent(&self, bytes: u64) {
        self.mine().bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self, in_flight: u64) -> ReleaseMetrics {
        let buckets: Vec<u64> = (0..BOUNDS_US.len())
            .map(|i| self.total(|s| &s.latency[i]))
            .collect();
        let total: u64 = buckets.iter().sum();
        let percentile = |p: f64| -> Option<u64> {
            if total == 0 {
                return None;
            }
            let rank = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Some(BOUNDS_US[i]);
                }
            }
            None
        };
        ReleaseMetrics {
            release: self.release,
            requests: self.total(|s| &s.requests),
            responses: std::array::from_fn(|i| self.total(|s| &s.classes[i])),
            failures: self.total(|s| &s.failures),
            bytes: self.total(|s| &s.bytes),
            in_flight,
            p50_us: percentile(0.50),
            p95_us: percentile(0.95),
            p99_us: percentile(0.99),
        }
    }
}

/// What a request says about where it wants to go.
#[derive(Default, Debug, Clone, Copy)]
pub struct Hints<'a> {
    /// The preview token it carries.
    pub preview: Option<&'a str>,
    /// Its sticky id, from the `changeover-release` cookie.
    pub sticky: Option<u64>,
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

static PREVIEW: hyper::header::HeaderName = hyper::header::HeaderName::from_static(PREVIEW_HEADER);

/// Reads the preview token and the sticky id of a request.
pub fn hints(headers: &HeaderMap) -> Hints<'_> {
    Hints {
        preview: headers
            .get(&PREVIEW)
            .and_then(|v| v.to_str().ok())
            .or_else(|| cookie(headers, PREVIEW_COOKIE)),
        sticky: cookie(headers, STICKY_COOKIE).and_then(|v| u64::from_str_radix(v, 16).ok()),
    }
}

/// A preview link: `?changeover-preview=TOKEN` (or `=off`) on any path.
/// Returns the cookie to set (`None`: clear it) and where to send the
/// browser next (the same path and query without the parameter).
pub fn preview_link(path_and_query: &str) -> Option<(Option<String>, String)> {
    let (path, query) = path_and_query.split_once('?')?;
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((k, v)) if k == PREVIEW_COOKIE => token = Some(v),
            _ => rest.push(pair),
        }
    }
    let token = token?;
    let valid = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return None;
    }
    // Only ever a path on the request's own host: `//evil.test/x` (or
    // `/\\evil.test`, which browsers read the same) would be another host.
    let path = format!("/{}", path.trim_start_matches(['/', '\\']));
    let location = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    Some(((token != "off").then(|| token.to_string()), location))
}

/// `Set-Cookie` for a preview link (`None`: expire the cookie).
pub fn preview_cookie(token: Option<&str>) -> Option<HeaderValue> {
    HeaderValue::from_str(&match token {
        Some(t) => format!("{PREVIEW_COOKIE}={t}; Path=/; HttpOnly; SameSite=Lax"),
        None => format!("{PREVIEW_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    })
    .ok()
}

/// A fresh sticky id.
pub fn new_sticky_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    mix(seed ^ NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed))
}

/// splitmix64: spreads ids evenly over the weights.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `Set-Cookie` for a sticky id.
pub fn sticky_cookie(id: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{STICKY_COOKIE}={id:016x}; Path=/; HttpOnly; SameSite=Lax"
    ))
    .ok()
}

/// Which release a sticky id lands on under `weights` (only releases that
/// can serve: weight > 0 and a healthy target). `None` when none can.
pub fn release_for(id: u64, weights: &[Share], serving: impl Fn(u32) -> bool) -> Option<u32> {
    let open: Vec<(u32, u64)> = weights
        .iter()
        .filter(|s| s.weight > 0 && serving(s.release))
        .map(|s| (s.release, u64::from(s.weight)))
        .collect();
    let total: u64 = open.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let mut point = mix(id) % total;
    for (r, w) in &open {
        if point < *w {
            return Some(*r);
        }
        point -= w;
    }
    open.last().map(|(r, _)| *r)
}

/// The policy decides nothing: every healthy target alike.
pub fn is_even(policy: &TrafficPolicy) -> bool {
    policy.weights.is_empty()
}

/// `[(release, weight)]` as shares, for tests.
#[cfg(test)]
pub(crate) fn shares(pairs: &[(u32, u32)]) -> Vec<Share> {
    pairs
        .iter()
        .map(|(release, weight)| Share {
            release: *release,
            weight: *weight,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_links_set_the_cookie_and_drop_the_parameter() {
        assert_eq!(
            preview_link("/shop?changeover-preview=team-1&page=2"),
            Some((Some("team-1".into()), "/shop?page=2".into()))
        );
        assert_eq!(
            preview_link("/?changeover-preview=off"),
            Some((None, "/".into())),
            "off clears the cookie"
        );
        assert_eq!(preview_link("/?page=2"), None, "no parameter: proxied");
        assert_eq!(
            preview_link("/?changeover-preview=a%20b"),
            None,
            "a token that could not be a cookie value is proxied as is"
        );
        assert_eq!(preview_link("/plain"), None);
        for (asked, location) in [
            ("//evil.test/x?changeover-preview=off", "/evil.test/x"),
            ("/\\evil.test/x?changeover-preview=off", "/evil.test/x"),
            ("/\\/evil.test?changeover-preview=off&a=1", "/evil.test?a=1"),
            ("?changeover-preview=off", "/"),
        ] {
            assert_eq!(
                preview_link(asked),
                Some((None, location.to_string())),
                "a redirect never leaves the request's host: {asked}"
            );
        }
    }

    #[test]
    fn ids_spread_over_the_weights_and_stay_put() {
        let weights = shares(&[(1, 90), (2, 10)]);
        let mut on_two = 0;
        for i in 0..20_000u64 {
            if release_for(mix(i), &weights, |_| true) == Some(2) {
                on_two += 1;
            }
        }
        let share = on_two as f64 / 20_000.0;
        assert!((0.08..0.12).contains(&share), "about 10%: {share}");
        // Growing the split moves clients one way only.
        let grown = shares(&[(1, 50), (2, 50)]);
        for i in 0..5_000u64 {
            let id = mix(i);
            if release_for(id, &weights, |_| true) == Some(2) {
                assert_eq!(
                    release_for(id, &grown, |_| true),
                    Some(2),
                    "a client on 2 stays on 2"
                );
            }
        }
    }

    #[test]
    fn releases_that_cannot_serve_get_nothing() {
        let weights = shares(&[(1, 0), (2, 100)]);
        assert_eq!(release_for(7, &weights, |_| true), Some(2));
        assert_eq!(
            release_for(7, &weights, |r| r != 2),
            None,
            "1 has weight 0, 2 cannot serve"
        );
    }

    #[test]
    fn cookies_and_headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static(
                "a=1; changeover-release=00000000000000ff; changeover-preview=tok",
            ),
        );
        let hints = hints(&h);
        assert_eq!(hints.sticky, Some(255));
        assert_eq!(hints.preview, Some("tok"));
        h.insert(PREVIEW_HEADER, HeaderValue::from_static("hdr"));
        assert_eq!(super::hints(&h).preview, Some("hdr"), "the header wins");
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let c = Counters::new(3);
        for _ in 0..98 {
            c.response(200, Duration::from_micros(900));
        }
        c.response(503, Duration::from_millis(40));
        c.failure();
        let m = c.snapshot(0);
        assert_eq!(m.requests, 100);
        assert_eq!(m.responses, [98, 0, 0, 1]);
        assert_eq!(m.failures, 1);
        assert_eq!(m.p50_us, Some(1_000));
        assert_eq!(m.p95_us, Some(1_000));
        assert_eq!(
            m.p99_us,
            Some(50_000),
            "the 99th of 99 timed answers is the slow one"
        );
    }
}
