//! The edge's state generation: a counter bumped by everything a client
//! shows — a route set or removed, a target added, drained or changing
//! health, a policy set or a guard tripping, a document written or removed,
//! a lock taken, released or expired — and the wait behind `Request::Watch`.
//!
//! A client keeps one control session waiting on it and re-reads what it
//! shows only when the generation moved, instead of asking every second.
//! Left out: *what* changed; the generation only says that something did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

static GENERATION: AtomicU64 = AtomicU64::new(1);
static CHANGED: Notify = Notify::const_new();

/// Something a client shows changed.
pub fn bump() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    CHANGED.notify_waiters();
}

/// The generation now.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

/// Waits until the generation is past `after` or `timeout` runs out; the
/// generation then.
pub async fn wait(after: u64, timeout: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Registered before the check, so a bump between the two is not missed.
        let changed = CHANGED.notified();
        let now = generation();
        if now > after {
            return now;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return generation();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_next_bump_or_at_its_timeout() {
        let start = generation();
        let waiter = tokio::spawn(wait(start, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        bump();
        let seen = waiter.await.unwrap();
        assert!(
            seen > start,
            "a bump wakes the waiter with the new generation"
        );

        let before = tokio::time::Instant::now();
        let now = generation();
        assert_eq!(
            wait(now, Duration::from_secs(5)).await,
            now,
            "no bump: the same generation after the timeout"
        );
        assert!(
            before.elapsed() >= Duration::from_secs(5),
            "it waited the whole timeout"
        );
        assert!(
            wait(now - 1, Duration::from_secs(5)).await >= now,
            "a client that is behind is answered at once"
        );
    }
}
