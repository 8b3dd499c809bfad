//! One rollout per service at a time: a lock on the edge, refreshed while
//! the rollout runs, taken by `owner` (user@host and process). A client
//! that dies stops refreshing; after [`LOCK_TTL`] the next client takes
//! over (at once when the holder is a process of this machine that is
//! gone) and finds the half-done rollout in the service's record.

use std::future::Future;
use std::time::Duration;

use super::{expect_ok, Deployer, EdgeControl, Runtime};
use crate::edge::{rollout_lock_key, LockHolder, Request, Response};
use crate::problem::{Problem, ProblemCode};

/// A rollout lock expires this long after its last refresh.
pub const LOCK_TTL: Duration = Duration::from_secs(15);
const LOCK_REFRESH: Duration = Duration::from_secs(4);

impl<R: Runtime, E: EdgeControl> Deployer<R, E> {
    pub(super) async fn lock(&self, key: &str) -> Result<(), Problem> {
        let mut take_over = None;
        loop {
            match self
                .edge
                .call(Request::LockAcquire {
                    key: key.to_string(),
                    owner: self.owner.clone(),
                    ttl_ms: LOCK_TTL.as_millis() as u64,
                    take_over: take_over.clone(),
                })
                .await?
            {
                Response::Locked { .. } => return Ok(()),
                Response::LockHeld { holder }
                    if take_over.is_none() && (self.owner_gone)(&holder.owner) =>
                {
                    self.note(format!(
                        "taking over the rollout lock of {}, which no longer runs",
                        holder.owner
                    ));
                    take_over = Some(holder.owner);
                }
                Response::LockHeld { holder } => return Err(busy(key, &holder, (self.now_ms)())),
                other => return expect_ok(other).map(|_| ()),
            }
        }
    }

    /// Runs `work` holding the service's rollout lock, refreshing it while
    /// `work` runs, and releases it after.
    pub async fn locked<T>(
        &self,
        stack: &str,
        service: &str,
        work: impl Future<Output = Result<T, Problem>>,
    ) -> Result<T, Problem> {
        let key = rollout_lock_key(stack, service);
        self.lock(&key).await?;
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tokio::time::sleep(LOCK_REFRESH) => {
                    // Keep the lock while working; losing it means another
                    // client took over after we stalled past the TTL.
                    if let Err(e) = self.lock(&key).await {
                        self.note(format!("could not refresh the rollout lock: {e}"));
                    }
                }
            }
        };
        let _ = self
            .edge
            .call(Request::LockRelease {
                key,
                owner: self.owner.clone(),
            })
            .await;
        result
    }
}

fn busy(key: &str, holder: &LockHolder, now_ms: i64) -> Problem {
    let service = key.trim_start_matches("rollout/");
    Problem::new(
        ProblemCode::RolloutInProgress,
        format!(
            "a rollout of {service} is already in progress (started by {}, {} s ago); wait for it to finish, or for {} s after that client stops",
            holder.owner,
            ((now_ms - holder.since_ms) / 1000).max(0),
            (holder.expires_in_ms / 1000).max(1)
        ),
    )
}
