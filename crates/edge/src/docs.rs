//! What the edge keeps for Changeover on the environment besides routes, so
//! every client of one daemon sees the same:
//! - documents (service definitions, release history) in `docs.json`, each
//!   with a revision for compare-and-set writes;
//! - locks with an owner and a time to live (one rollout per service at a
//!   time, across machines). Locks live in memory: when the edge restarts,
//!   they are gone, and the next rollout finds any half-done work from the
//!   containers' labels.
//!
//! Every change a client could see bumps [`crate::changes`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use changeover_core::edge::LockHolder;
use serde::{Deserialize, Serialize};

use crate::store::StoredFile;

/// The documents and locks of one edge.
pub struct Documents {
    docs: Mutex<Docs>,
    locks: Mutex<HashMap<String, Lock>>,
    file: Option<StoredFile>,
}

#[derive(Default, Serialize, Deserialize)]
struct Docs {
    entries: BTreeMap<String, Doc>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Doc {
    value: serde_json::Value,
    revision: u64,
}

struct Lock {
    owner: String,
    since_ms: i64,
    expires: Instant,
}

/// Why a document write changed nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Another client wrote it since the revision the caller read.
    Conflict(String),
    /// It could not be stored (so it was not changed either).
    NotSaved(String),
}

impl Docs {
    /// The stored revision of `key` (0: none), or the refusal when it is
    /// not the `expect`ed one.
    fn revision_of(&self, key: &str, expect: Option<u64>) -> Result<u64, Refused> {
        let current = self.entries.get(key).map(|d| d.revision).unwrap_or(0);
        match expect {
            Some(expect) if expect != current => Err(Refused::Conflict(format!(
                "{key} changed meanwhile (revision {current}, expected {expect})"
            ))),
            _ => Ok(current),
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn holder(l: &Lock, now: Instant) -> LockHolder {
    LockHolder {
        owner: l.owner.clone(),
        since_ms: l.since_ms,
        expires_in_ms: l.expires.saturating_duration_since(now).as_millis() as i64,
    }
}

impl Documents {
    /// The documents stored in `dir` (`None`: in memory), and what was
    /// noticed while reading them (a damaged file, the older copy used).
    pub fn load(dir: Option<&Path>) -> (Self, Vec<String>) {
        let file = dir.map(|d| StoredFile::new(d.join("docs.json")));
        let (docs, notes) = match &file {
            Some(file) => {
                let loaded = file
                    .load(|bytes| serde_json::from_slice::<Docs>(bytes).map_err(|e| e.to_string()));
                (loaded.value, loaded.notes)
            }
            None => (Docs::default(), Vec::new()),
        };
        (
            Self {
                docs: Mutex::new(docs),
                locks: Mutex::new(HashMap::new()),
                file,
            },
            notes,
        )
    }

    /// The value of `key` and its revision (0 and `None`: none).
    pub fn get(&self, key: &str) -> (Option<serde_json::Value>, u64) {
        match locked(&self.docs).entries.get(key) {
            Some(d) => (Some(d.value.clone()), d.revision),
            None => (None, 0),
        }
    }

    /// The keys starting with `prefix`, in order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        locked(&self.docs)
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Stores `value` under `key` when its revision is still `expect`
    /// (any, when `None`); its new revision.
    pub fn put(
        &self,
        key: String,
        value: serde_json::Value,
        expect: Option<u64>,
    ) -> Result<u64, Refused> {
        let mut docs = locked(&self.docs);
        let revision = docs.revision_of(&key, expect)? + 1;
        let before = docs.entries.insert(key.clone(), Doc { value, revision });
        if let Err(e) = self.save(&docs) {
            // Not stored, so not changed: the caller may try again.
            match before {
                Some(d) => docs.entries.insert(key, d),
                None => docs.entries.remove(&key),
            };
            return Err(Refused::NotSaved(e));
        }
        crate::changes::bump();
        Ok(revision)
    }

    /// Removes `key` when its revision is still `expect` (any, when
    /// `None`); removing what is not there is no error.
    pub fn delete(&self, key: &str, expect: Option<u64>) -> Result<(), Refused> {
        let mut docs = locked(&self.docs);
        docs.revision_of(key, expect)?;
        let Some(before) = docs.entries.remove(key) else {
            return Ok(());
        };
        if let Err(e) = self.save(&docs) {
            docs.entries.insert(key.to_string(), before);
            return Err(Refused::NotSaved(e));
        }
        crate::changes::bump();
        Ok(())
    }

    /// Writes the documents (the caller holds their lock, so saves of
    /// them are in order already; the file's own lock makes it certain).
    fn save(&self, docs: &Docs) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.save(|| serde_json::to_vec_pretty(docs).map_err(|e| e.to_string()))
            .map_err(|e| format!("the document could not be saved: {e}"))
    }

    /// Takes (or renews) the lock `key` for `owner` for `ttl`: `Ok` with
    /// the holder now, `Err` with the other owner holding it. A lock held
    /// by `take_over` (an owner known to be gone) is taken from it.
    pub fn acquire(
        &self,
        key: String,
        owner: String,
        ttl: Duration,
        take_over: Option<&str>,
    ) -> Result<LockHolder, LockHolder> {
        let mut locks = locked(&self.locks);
        let now = Instant::now();
        if let Some(l) = locks.get(&key) {
            let dead = take_over == Some(l.owner.as_str());
            if l.owner != owner && l.expires > now && !dead {
                return Err(holder(l, now));
            }
        }
        let since_ms = match locks.get(&key) {
            Some(l) if l.owner == owner && l.expires > now => l.since_ms,
            _ => crate::unix_ms(),
        };
        let lock = Lock {
            owner,
            since_ms,
            expires: now + ttl,
        };
        let h = holder(&lock, now);
        let new_holder = locks
            .insert(key, lock)
            .is_none_or(|old| old.owner != h.owner || old.expires <= now);
        if new_holder {
            crate::changes::bump();
        }
        Ok(h)
    }

    /// Who holds the lock `key` now, if anyone.
    pub fn holder(&self, key: &str) -> Option<LockHolder> {
        let now = Instant::now();
        locked(&self.locks)
            .get(key)
            .filter(|l| l.expires > now)
            .map(|l| holder(l, now))
    }

    /// Lets go of `key` when `owner` holds it.
    pub fn release(&self, key: &str, owner: &str) {
        let mut locks = locked(&self.locks);
        if locks.get(key).is_some_and(|l| l.owner == owner) {
            locks.remove(key);
            crate::changes::bump();
        }
    }

    /// Forgets locks whose time is up, so watching clients see them go.
    pub fn expire_locks(&self) {
        let now = Instant::now();
        let mut locks = locked(&self.locks);
        let before = locks.len();
        locks.retain(|_, l| l.expires > now);
        if locks.len() != before {
            crate::changes::bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_with_a_stale_revision_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (docs, notes) = Documents::load(Some(dir.path()));
        assert!(notes.is_empty(), "{notes:?}");
        let first = docs.put("k".into(), serde_json::json!(1), Some(0)).unwrap();
        assert_eq!(first, 1);
        let stale = docs.put("k".into(), serde_json::json!(2), Some(0));
        assert!(matches!(stale, Err(Refused::Conflict(_))), "{stale:?}");
        assert_eq!(docs.get("k"), (Some(serde_json::json!(1)), 1));
        assert!(matches!(
            docs.delete("k", Some(7)),
            Err(Refused::Conflict(_))
        ));
        // What was stored is what a restarted edge reads.
        let (again, _) = Documents::load(Some(dir.path()));
        assert_eq!(again.get("k"), (Some(serde_json::json!(1)), 1));
        assert_eq!(again.keys(""), vec!["k".to_string()]);
    }

    #[test]
    fn a_lock_is_held_by_one_owner_until_released_or_taken_from_a_dead_one() {
        let (docs, _) = Documents::load(None);
        let ttl = Duration::from_secs(60);
        let a = docs.acquire("svc".into(), "a".into(), ttl, None).unwrap();
        assert_eq!(a.owner, "a");
        let held = docs.acquire("svc".into(), "b".into(), ttl, None);
        assert_eq!(held.unwrap_err().owner, "a", "b waits for a");
        docs.release("svc", "b");
        assert_eq!(
            docs.holder("svc").map(|h| h.owner),
            Some("a".into()),
            "only its owner releases it"
        );
        let taken = docs
            .acquire("svc".into(), "b".into(), ttl, Some("a"))
            .unwrap();
        assert_eq!(
            taken.owner, "b",
            "a lock of an owner known to be gone is taken"
        );
        docs.release("svc", "b");
        assert!(docs.holder("svc").is_none());
    }
}
