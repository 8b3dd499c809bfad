//! Idle keep-alive connections to the targets, beside the upstream client
//! ([`crate::upstream`]) whose connections they keep.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::upstream::Conn;
use crate::workers::{worker_count, worker_index};

/// Idle keep-alive connections to one target, one set per traffic thread
/// (a connection is used on the thread that runs it). A request takes the
/// one given back last (or opens a new one) and gives it back when its
/// response body has been sent. Connections idle for [`IDLE_LIMIT`], or
/// closed by the target, are dropped as connections are given back and at
/// each health check, so their sockets do not linger.
pub struct ConnPool {
    idle: Vec<std::sync::Mutex<VecDeque<(Conn, Instant)>>>,
}

impl Default for ConnPool {
    fn default() -> Self {
        Self {
            idle: (0..worker_count()).map(|_| Default::default()).collect(),
        }
    }
}

/// Idle connections kept per target and traffic thread.
const MAX_IDLE: usize = 512;
/// How long a connection may stay idle in the pool.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops the oldest idle connections while they are past [`IDLE_LIMIT`]
/// or no longer usable (entries are in the order they were given back).
fn drop_stale(idle: &mut VecDeque<(Conn, Instant)>, now: Instant) {
    while let Some((conn, since)) = idle.front_mut() {
        if now.duration_since(*since) < IDLE_LIMIT && conn.usable() {
            break;
        }
        idle.pop_front();
    }
}

impl ConnPool {
    fn mine(&self) -> std::sync::MutexGuard<'_, VecDeque<(Conn, Instant)>> {
        locked(&self.idle[worker_index() % self.idle.len()])
    }

    pub fn take(&self) -> Option<Conn> {
        let mut idle = self.mine();
        while let Some((mut c, _)) = idle.pop_back() {
            if c.usable() {
                return Some(c);
            }
        }
        None
    }

    pub fn give_back(&self, c: Conn) {
        let now = Instant::now();
        let mut idle = self.mine();
        drop_stale(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back((c, now));
        }
    }

    /// Drops the connections idle for too long or closed by the target,
    /// on every traffic thread.
    pub fn prune(&self) {
        let now = Instant::now();
        for idle in &self.idle {
            locked(idle).retain_mut(|(conn, since)| {
                now.duration_since(*since) < IDLE_LIMIT && conn.usable()
            });
        }
    }

    /// Idle connections, on every traffic thread.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.iter().map(|i| locked(i).len()).sum()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn idle_connections_the_target_closed_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pool = ConnPool::default();
        let mut accepted = Vec::new();
        for _ in 0..3 {
            let conn = Conn::connect(&addr, CONNECT_TIMEOUT).await.unwrap();
            accepted.push(listener.accept().await.unwrap().0);
            pool.give_back(conn);
        }
        pool.prune();
        assert_eq!(pool.idle(), 3, "open connections stay");
        // The target closes two of them, as an app's idle timeout does.
        drop(accepted.drain(..2));
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.idle() > 1 {
            assert!(Instant::now() < deadline, "closed connections are dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
            pool.prune();
        }
        assert!(pool.take().is_some(), "the open one is still usable");
        assert!(pool.take().is_none());
    }
}
