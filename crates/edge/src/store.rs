//! The edge's stored files (`routes.json`, `docs.json` in the state
//! volume): written so that no save is lost and the file is always valid.
//!
//! - Saves of one file are serialised by [`StoredFile::save`]: the caller's
//!   snapshot is taken *under* that lock, so the last change made is the
//!   last one written (two saves never cross with an older one last).
//! - A save writes a temporary file of its own (unique name), fsyncs it,
//!   keeps the current file as `NAME.prev` (a hard link, renamed into place),
//!   renames the new one over `NAME` and fsyncs the directory. Each step is
//!   atomic: at any moment `NAME` is a whole, valid file.
//! - A failed save is an error for the caller to report, never only a log.
//! - [`StoredFile::load`] reads `NAME`, and when it is missing a previous
//!   good copy or cannot be read or parsed, `NAME.prev`; a file that does
//!   not parse is kept aside as `NAME.broken-<ms>` (nothing is deleted), so
//!   an edge always starts with the newest valid state it has.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One stored file in the state directory.
pub struct StoredFile {
    path: PathBuf,
    saving: Mutex<()>,
}

/// What [`StoredFile::load`] found.
pub struct Loaded<T> {
    pub value: T,
    /// Said on stderr by the caller: what was wrong and what was used.
    pub notes: Vec<String>,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

impl StoredFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            saving: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn previous(&self) -> PathBuf {
        sibling(&self.path, "prev")
    }

    /// Writes what `snapshot` returns, taken while no other save of this file
    /// runs.
    pub fn save(&self, snapshot: impl FnOnce() -> Result<Vec<u8>, String>) -> Result<(), String> {
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = snapshot()?;
        self.write(&bytes)
    }

    fn write(&self, bytes: &[u8]) -> Result<(), String> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = sibling(
            &self.path,
            &format!(
                "tmp-{}-{}",
                std::process::id(),
                UNIQUE.fetch_add(1, Ordering::Relaxed)
            ),
        );
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            // Only the edge reads its state (certificate keys among it).
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", tmp.display()));
        }
        // Keep the current file as the previous good copy: linked under a
        // temporary name, then renamed over the old copy (atomic).
        if self.path.exists() {
            let prev_tmp = sibling(&self.path, &format!("prev-{}", tmp_suffix(&tmp)));
            let kept = std::fs::hard_link(&self.path, &prev_tmp)
                .and_then(|()| std::fs::rename(&prev_tmp, self.previous()));
            if let Err(e) = kept {
                let _ = std::fs::remove_file(&prev_tmp);
                let _ = std::fs::remove_file(&tmp);
                return Err(format!(
                    "cannot keep the previous copy of {}: {e}",
                    self.path.display()
                ));
            }
        }
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot replace {}: {e}", self.path.display()));
        }
        // The renames are durable once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
    }

    /// The newest valid content: the file, or its previous copy when the
    /// file is unreadable or does not `parse`. `T::default()` when there is
    /// neither (a new edge) or neither is valid (said in the notes; the
    /// broken files are kept aside).
    pub fn load<T: Default>(&self, parse: impl Fn(&[u8]) -> Result<T, String>) -> Loaded<T> {
        let mut notes = Vec::new();
        for (i, path) in [self.path.clone(), self.previous()].iter().enumerate() {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    notes.push(format!("cannot read {}: {e}", path.display()));
                    continue;
                }
            };
            match parse(&bytes) {
                Ok(value) => {
                    if i > 0 {
                        notes.push(format!("using the previous copy {}", path.display()));
                    }
                    return Loaded { value, notes };
                }
                Err(e) => {
                    let aside = sibling(path, &format!("broken-{}", crate::unix_ms()));
                    let kept = std::fs::rename(path, &aside)
                        .map(|()| format!("kept as {}", aside.display()))
                        .unwrap_or_else(|e| format!("could not be moved aside: {e}"));
                    notes.push(format!("{} is not valid ({e}); {kept}", path.display()));
                }
            }
        }
        if !notes.is_empty() {
            notes.push(format!(
                "no valid copy of {} was found: starting without it",
                self.path.display()
            ));
        }
        Loaded {
            value: T::default(),
            notes,
        }
    }
}

/// `dir/NAME.suffix` beside `path` (`dir/NAME`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

fn tmp_suffix(tmp: &Path) -> String {
    tmp.extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn parse_number(bytes: &[u8]) -> Result<u64, String> {
        std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())
    }

    #[test]
    fn concurrent_saves_lose_nothing_and_the_file_is_always_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(StoredFile::new(dir.path().join("n.json")));
        let counter = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let path = file.path().to_path_buf();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(bytes) = std::fs::read(&path) {
                        parse_number(&bytes).expect("never a partial file");
                        reads += 1;
                    }
                }
                reads
            })
        };
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (file, counter) = (file.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        file.save(|| {
                            // The change and its snapshot, under the save lock.
                            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                            Ok(n.to_string().into_bytes())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0, "the reader saw the file");
        let loaded = file.load(parse_number);
        assert_eq!(loaded.value, 400, "the last save is the one kept");
        assert!(loaded.notes.is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(left.is_empty(), "no temporary file is left: {left:?}");
    }

    #[test]
    fn a_file_that_cannot_be_parsed_gives_way_to_the_previous_copy_and_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = StoredFile::new(dir.path().join("n.json"));
        file.save(|| Ok(b"1".to_vec())).unwrap();
        file.save(|| Ok(b"2".to_vec())).unwrap();
        std::fs::write(file.path(), b"{ half a fi").unwrap();
        let loaded = file.load(parse_number);
        assert_eq!(loaded.value, 1, "the previous good copy");
        assert!(
            loaded.notes.iter().any(|n| n.contains("not valid")),
            "{:?}",
            loaded.notes
        );
        let broken = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|n| n.starts_with("n.json.broken-"))
            .expect("the broken file is kept aside");
        assert_eq!(
            std::fs::read(dir.path().join(broken)).unwrap(),
            b"{ half a fi"
        );
        // Neither valid: a fresh start, said so.
        std::fs::write(dir.path().join("n.json.prev"), b"x").unwrap();
        let loaded = file.load(parse_number);
        assert_eq!(loaded.value, 0);
        assert!(loaded.notes.iter().any(|n| n.contains("no valid copy")));
        // Nothing at all: a new edge, nothing to say.
        let fresh = StoredFile::new(dir.path().join("other.json"));
        assert!(fresh.load(parse_number).notes.is_empty());
    }

    #[test]
    fn a_save_that_cannot_be_written_is_an_error_and_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let file = StoredFile::new(dir.path().join("n.json"));
        file.save(|| Ok(b"7".to_vec())).unwrap();
        let refused = file.save(|| Err("cannot encode".to_string()));
        assert_eq!(refused.unwrap_err(), "cannot encode");
        // A directory that cannot be written (a file where it should be).
        let gone = StoredFile::new(dir.path().join("n.json").join("inner.json"));
        assert!(gone.save(|| Ok(b"1".to_vec())).is_err());
        assert_eq!(file.load(parse_number).value, 7);
    }
}
