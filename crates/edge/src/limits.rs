//! What one client may cost the edge: how many connections it keeps open,
//! and for how long it may keep them without making progress.
//!
//! **The connection limit.** The edge raises its own descriptor limit to the
//! hard limit (the edge container is created with `nofile` 65536) and admits
//! at most about half of it as client connections: each may need one
//! upstream connection too, and the rest is kept for listeners, health checks
//! and the control socket, which therefore always answers. When the limit is
//! reached, a new connection takes the place of the connection that has
//! waited longest without a request in flight — opened long ago and still
//! sending its first head, or idle the longest — so slow or idle clients
//! give way before requests in flight suffer. Only when every connection is busy is the new
//! one shed (closed at once, so the accept queue never fills).
//!
//! **Progress.** Each connection is in one phase, set by its own I/O and
//! requests, and watched by one timer (see [`watch`]):
//! - `idle`: no request on it since the last one — closed after the
//!   route's `idle` timeout (a new HTTP/1 connection that sends nothing is
//!   held to the `header` timeout instead);
//! - `head`: the first bytes of a request have come, its head has not —
//!   cut off after the `header` timeout (a head sent a byte a second),
//!   counted from the connection's opening for its first request and from
//!   the first byte for the next ones;
//! - `busy`: requests in flight; a request body that stalls is the proxy's
//!   to time out (408), a target that does not answer too (504).
//!
//! HTTP/2 connections are never in `head` (their frames are not requests):
//! one with no stream open for `idle` is closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Descriptors kept for listeners (one per route and traffic thread),
/// health checks, state files and the control socket.
const RESERVED_DESCRIPTORS: u64 = 256;
/// The limit asked for; the container's hard limit may be lower.
pub const WANTED_DESCRIPTORS: u64 = 65_536;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Tokio's clock (paused in tests), as microseconds since the first look.
fn now_us() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now()
        .saturating_duration_since(start)
        .as_micros() as u64
}

/// One client connection's progress.
pub struct ConnState {
    phase: AtomicU8,
    /// When the phase began (µs since the edge started).
    since_us: AtomicU64,
    /// Requests in flight on it (h2: streams).
    busy: AtomicU32,
    /// It speaks HTTP/2 (seen from its first bytes).
    h2: AtomicBool,
    /// Its first bytes have been looked at.
    sniffed: AtomicBool,
    /// It has carried a request.
    served: AtomicBool,
    /// Chosen to make room for a new connection.
    evicted: AtomicBool,
    wake: Notify,
}

impl ConnState {
    fn new() -> Self {
        Self {
            phase: AtomicU8::new(IDLE),
            since_us: AtomicU64::new(now_us()),
            busy: AtomicU32::new(0),
            h2: AtomicBool::new(false),
            sniffed: AtomicBool::new(false),
            served: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Bytes arrived: an idle HTTP/1 connection starts a request head.
    fn read_some(&self, first: &[u8]) {
        if !self.sniffed.swap(true, Ordering::Relaxed) {
            self.h2
                .store(first.starts_with(b"PRI * HTTP/2.0"), Ordering::Relaxed);
        }
        if self.phase.load(Ordering::Relaxed) == IDLE && !self.h2.load(Ordering::Relaxed) {
            // A first head is timed from the opening, a next one from now.
            if self.served.load(Ordering::Relaxed) {
                self.since_us.store(now_us(), Ordering::Relaxed);
            }
            self.phase.store(HEAD, Ordering::Relaxed);
        }
    }

    /// A request is being served on it, until the guard drops (when its
    /// response has been sent, or given up).
    pub fn request(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        self.phase.store(BUSY, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.since_us.store(now_us(), Ordering::Relaxed);
            self.0.phase.store(IDLE, Ordering::Relaxed);
        }
    }
}

/// Every client connection of the edge.
pub struct Conns {
    limit: usize,
    open: Mutex<std::collections::HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
    shed: AtomicU64,
    evictions: AtomicU64,
}

/// A connection counted as open until it drops.
pub struct Admitted {
    id: u64,
    pub state: Arc<ConnState>,
    conns: Arc<Conns>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.locked().remove(&self.id);
    }
}

impl Conns {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            open: Mutex::new(Default::default()),
            next: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts a new connection in, making room when the limit is reached;
    /// `None` when it must be shed (every open connection is busy).
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.locked();
        if open.len() >= self.limit {
            let victim = open
                .values()
                .filter(|c| {
                    c.busy.load(Ordering::Relaxed) == 0 && !c.evicted.load(Ordering::Relaxed)
                })
                // The one waiting longest (in its head or idle).
                .min_by_key(|c| c.since_us.load(Ordering::Relaxed))
                .cloned();
            match victim {
                Some(v) => {
                    v.evicted.store(true, Ordering::Relaxed);
                    v.wake.notify_one();
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.shed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        open.insert(id, state.clone());
        Some(Admitted {
            id,
            state,
            conns: self.clone(),
        })
    }

    /// Cuts off every open connection (the edge has stopped; what is left
    /// past its drain is not served any more).
    pub fn close_all(&self) {
        for c in self.locked().values() {
            c.evicted.store(true, Ordering::Relaxed);
            c.wake.notify_one();
        }
    }

    /// (open, shed so far, evicted so far).
    pub fn counts(&self) -> (usize, u64, u64) {
        (
            self.locked().len(),
            self.shed.load(Ordering::Relaxed),
            self.evictions.load(Ordering::Relaxed),
        )
    }
}

/// Client connections admitted with `descriptors` open files allowed.
pub fn connection_limit(descriptors: u64) -> usize {
    (descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(16) as usize
}

/// Raises the soft descriptor limit as far as the hard one allows (up to
/// [`WANTED_DESCRIPTORS`]) and answers (descriptors, the connection limit
/// for them, or `max_connections` when that is lower).
pub fn raise_descriptor_limit(max_connections: Option<usize>) -> (u64, usize) {
    let descriptors = rlimit::increase_nofile_limit(WANTED_DESCRIPTORS).unwrap_or(1024);
    let mut limit = connection_limit(descriptors);
    if let Some(m) = max_connections {
        limit = limit.min(m.max(1));
    }
    (descriptors, limit)
}

/// How a connection ended its watch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its request head took longer than the header timeout: cut it off.
    SlowHead,
    /// Idle past the idle timeout: close it (gracefully).
    Idle,
    /// Made room for a new connection: cut it off.
    Evicted,
}

/// Resolves when the connection should end: its phase has lasted past its
/// timeout, or it was evicted. Wakes once per timeout, not per byte.
pub async fn watch(state: &ConnState, header: Duration, idle: Duration) -> Verdict {
    loop {
        if state.evicted.load(Ordering::Relaxed) {
            return Verdict::Evicted;
        }
        let mut phase = state.phase.load(Ordering::Relaxed);
        let since = state.since_us.load(Ordering::Relaxed);
        // A new HTTP/1 connection owes its first head from the opening,
        // bytes or not.
        if phase == IDLE
            && !state.served.load(Ordering::Relaxed)
            && !state.h2.load(Ordering::Relaxed)
        {
            phase = HEAD;
        }
        let limit = match phase {
            HEAD => header,
            IDLE => idle,
            // Busy: look again after the shorter timeout.
            _ => header.min(idle),
        };
        let due = since + limit.as_micros() as u64;
        let now = now_us();
        if phase != BUSY && now >= due {
            return if phase == HEAD {
                Verdict::SlowHead
            } else {
                Verdict::Idle
            };
        }
        let wait = if phase == BUSY {
            limit
        } else {
            Duration::from_micros(due - now)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.wake.notified() => {}
        }
    }
}

/// A client's socket, telling its connection's state when bytes arrive.
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let got = &buf.filled()[before..];
            if !got.is_empty() {
                this.state.read_some(got);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(limit: usize) -> Arc<Conns> {
        Arc::new(Conns::new(limit))
    }

    #[test]
    fn the_limit_leaves_room_for_upstream_connections_and_the_edge_itself() {
        assert_eq!(connection_limit(1024), 384);
        assert_eq!(connection_limit(65_536), 32_640);
        assert_eq!(connection_limit(100), 16, "never none");
    }

    #[test]
    fn at_the_limit_the_longest_waiting_makes_room_and_busy_ones_never_do() {
        let conns = conns(3);
        let slow = conns.admit().unwrap();
        slow.state.read_some(b"GET / HT");
        std::thread::sleep(Duration::from_millis(3));
        let idle = conns.admit().unwrap();
        drop(idle.state.request());
        std::thread::sleep(Duration::from_millis(3));
        let busy = conns.admit().unwrap();
        let _request = busy.state.request();
        std::thread::sleep(Duration::from_millis(3));
        // Full: the head that has been coming since it opened goes first.
        let fourth = conns.admit().expect("room is made");
        assert!(slow.state.evicted.load(Ordering::Relaxed));
        assert!(!idle.state.evicted.load(Ordering::Relaxed));
        drop(slow);
        // A new connection that just began its head is younger than the
        // idle one: the idle one goes next.
        fourth.state.read_some(b"GET /");
        let fifth = conns.admit().expect("room is made");
        assert!(idle.state.evicted.load(Ordering::Relaxed));
        assert!(!fourth.state.evicted.load(Ordering::Relaxed));
        drop(idle);
        let _request4 = fourth.state.request();
        let _request5 = fifth.state.request();
        // Every connection busy: the new one is shed.
        assert!(conns.admit().is_none());
        assert_eq!(conns.counts(), (3, 1, 2));
    }

    #[test]
    fn a_request_makes_a_connection_busy_until_its_response_is_done() {
        let conns = conns(10);
        let c = conns.admit().unwrap();
        c.state.read_some(b"GET / HTTP/1.1\r\n");
        assert_eq!(c.state.phase.load(Ordering::Relaxed), HEAD);
        let r = c.state.request();
        assert_eq!(c.state.phase.load(Ordering::Relaxed), BUSY);
        c.state.read_some(b"body");
        assert_eq!(
            c.state.phase.load(Ordering::Relaxed),
            BUSY,
            "a body is no head"
        );
        drop(r);
        assert_eq!(c.state.phase.load(Ordering::Relaxed), IDLE);
        let h2 = conns.admit().unwrap();
        h2.state.read_some(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(
            h2.state.phase.load(Ordering::Relaxed),
            IDLE,
            "h2 frames are not a request head"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_past_its_timeout_and_an_idle_connection_past_its_own_are_ended() {
        let conns = conns(10);
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        // A new connection that sends nothing owes its head all the same.
        let silent = conns.admit().unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(watch(&silent.state, header, idle).await, Verdict::SlowHead);
        assert!(started.elapsed() <= header + Duration::from_millis(10));
        let c = conns.admit().unwrap();
        drop(c.state.request());
        // Idle after a request: ends after the idle timeout, not the header one.
        let started = tokio::time::Instant::now();
        let w = tokio::spawn({
            let s = c.state.clone();
            async move { watch(&s, header, idle).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!w.is_finished());
        // A busy connection is never ended by the watch.
        let r = c.state.request();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!w.is_finished(), "busy for two minutes: still open");
        drop(r);
        assert_eq!(w.await.unwrap(), Verdict::Idle);
        assert!(started.elapsed() >= Duration::from_secs(180));
        assert!(!silent.state.evicted.load(Ordering::Relaxed));
        // A head started: ends after the header timeout.
        c.state.read_some(b"G");
        let started = tokio::time::Instant::now();
        assert_eq!(watch(&c.state, header, idle).await, Verdict::SlowHead);
        assert!(started.elapsed() <= header + Duration::from_millis(10));
    }
}
