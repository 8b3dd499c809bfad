//! Work the window can stop before it is done: transfers, copies. The
//! window names the work with an id of its own choosing and, to stop it,
//! asks with that id. The work's future is then dropped, and with it what
//! it holds: a download's partial file is removed (nothing appears where
//! it was going), the helper's exec stream is closed, and an upload's
//! input ends early, so the helper's staged unpack is thrown away and the
//! folder stays as it was.
//!
//! A rollout is not dropped: only its pull is asked to stop
//! ([`Cancels::pull_stop`]), and the rollout then fails the way a refused
//! image does, its lock given back and nothing changed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use changeover_core::{Problem, ProblemCode};
use tokio::sync::oneshot;

/// The work that can be stopped now, by id.
#[derive(Default)]
pub struct Cancels(Mutex<HashMap<u64, Stop>>);

/// How the work of an id is stopped.
enum Stop {
    /// Its future is dropped.
    Drop(oneshot::Sender<()>),
    /// It is told, and winds down itself.
    Tell(tokio::sync::watch::Sender<bool>),
}

/// Keeps a [`Cancels::pull_stop`] registered; gone with it.
pub struct PullStopGuard<'a> {
    cancels: &'a Cancels,
    id: u64,
    sender: tokio::sync::watch::Sender<bool>,
}

impl Drop for PullStopGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.cancels.lock();
        // Only this one's entry: work of the same id may have replaced it.
        if matches!(map.get(&self.id), Some(Stop::Tell(s)) if s.same_channel(&self.sender)) {
            map.remove(&self.id);
        }
    }
}

impl Cancels {
    /// Runs `work`; with an `id`, until it is done or [`Cancels::cancel`]
    /// is asked for that id, whichever comes first. `what` says what was
    /// stopped ("the download of /docs").
    pub async fn run<T>(
        &self,
        id: Option<u64>,
        what: &str,
        work: impl Future<Output = Result<T, Problem>>,
    ) -> Result<T, Problem> {
        let Some(id) = id else {
            return work.await;
        };
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, Stop::Drop(tx));
        let out = tokio::select! {
            out = work => out,
            asked = rx => match asked {
                Ok(()) => Err(Problem::new(ProblemCode::Cancelled, format!("{what} was cancelled"))),
                // The sender went without a word: replaced by work of the
                // same id, which does not stop this one.
                Err(_) => Err(Problem::new(ProblemCode::Cancelled, format!("{what} was replaced by another of the same id"))),
            },
        };
        self.lock().remove(&id);
        out
    }

    /// A stop for the pulls of a rollout the window names `id`, kept while
    /// the guard lives; `None` without an id.
    pub fn pull_stop(
        &self,
        id: Option<u64>,
    ) -> Option<(PullStopGuard<'_>, changeover_docker::runtime::PullStop)> {
        let id = id?;
        let (sender, receiver) = tokio::sync::watch::channel(false);
        self.lock().insert(id, Stop::Tell(sender.clone()));
        Some((
            PullStopGuard {
                cancels: self,
                id,
                sender,
            },
            changeover_docker::runtime::PullStop(receiver),
        ))
    }

    /// Stops the work of `id`; false when none runs by that id.
    pub fn cancel(&self, id: u64) -> bool {
        match self.lock().remove(&id) {
            Some(Stop::Drop(tx)) => tx.send(()).is_ok(),
            Some(Stop::Tell(tx)) => tx.send(true).is_ok(),
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Stop>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_stops_when_asked_and_runs_to_its_end_when_not() {
        let cancels = std::sync::Arc::new(Cancels::default());
        let c = cancels.clone();
        let stopper = tokio::spawn(async move {
            while !c.cancel(7) {
                tokio::task::yield_now().await;
            }
        });
        let out: Result<(), Problem> = cancels
            .run(Some(7), "the download of /x", std::future::pending())
            .await;
        stopper.await.unwrap();
        let p = out.unwrap_err();
        assert_eq!(p.code, ProblemCode::Cancelled);
        assert_eq!(p.message, "the download of /x was cancelled");
        assert!(!cancels.cancel(7), "nothing of that id runs any more");
        let done = cancels.run(Some(8), "x", async { Ok(5) }).await.unwrap();
        assert_eq!(done, 5);
        assert!(!cancels.cancel(8));
        assert_eq!(cancels.run(None, "x", async { Ok(1) }).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_pull_stop_is_told_and_gone_with_its_guard() {
        let cancels = Cancels::default();
        assert!(cancels.pull_stop(None).is_none());
        let (guard, mut stop) = cancels.pull_stop(Some(3)).unwrap();
        assert!(!*stop.0.borrow());
        assert!(cancels.cancel(3));
        tokio::time::timeout(std::time::Duration::from_secs(1), stop.asked())
            .await
            .expect("told at once");
        assert!(!cancels.cancel(3), "asked once");
        drop(guard);
        let (guard, _stop) = cancels.pull_stop(Some(4)).unwrap();
        drop(guard);
        assert!(!cancels.cancel(4), "gone with its guard");
    }
}
