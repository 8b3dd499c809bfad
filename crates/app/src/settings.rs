//! Where Changeover keeps what it keeps locally (DESIGN.md decision 1): the
//! environments the user added and the SSH host keys they accepted, in the
//! app's config folder; shared SSH connections in a private runtime folder.
//! Secrets are not here: they are in the OS keyring ([`crate::secrets`]).
//!
//! Config folder: `CHANGEOVER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/changeover`,
//! else `~/.config/changeover` (on macOS `~/Library/Application Support/
//! Changeover`). Runtime folder: `$XDG_RUNTIME_DIR/changeover`, else a
//! folder of this user's under the temporary folder; both are mode 0700.
//!
//! Every write is atomic — a new file beside the old one, flushed to disk,
//! renamed over it — and a write that fails is an error the user sees,
//! never a log line; the old file is then still whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use changeover_core::environment::added::{self, AddedEnvironment};
use changeover_core::{Problem, ProblemCode};

/// Changeover's own known-hosts file for SSH keys accepted in Changeover.
pub const KNOWN_HOSTS: &str = "known_hosts";

/// The app's local folders.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

fn cannot_write(path: &Path, e: impl std::fmt::Display) -> Problem {
    Problem::new(
        ProblemCode::CannotWrite,
        format!("cannot write {}: {e}", path.display()),
    )
}

impl Settings {
    /// The folders for this process's user, from its environment variables.
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").unwrap_or_else(std::env::temp_dir);
        let config_dir = var("CHANGEOVER_CONFIG_DIR").unwrap_or_else(|| {
            if cfg!(target_os = "macos") {
                home.join("Library/Application Support/Changeover")
            } else {
                var("XDG_CONFIG_HOME")
                    .unwrap_or_else(|| home.join(".config"))
                    .join("changeover")
            }
        });
        let runtime_dir = var("XDG_RUNTIME_DIR")
            .map(|d| d.join("changeover"))
            .unwrap_or_else(|| {
                let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
                std::env::temp_dir().join(format!("changeover-{user}"))
            });
        Self {
            config_dir,
            runtime_dir,
        }
    }

    /// The runtime folder, created private (0700) when missing.
    pub fn runtime(&self) -> Result<PathBuf, Problem> {
        private_dir(&self.runtime_dir)?;
        Ok(self.runtime_dir.clone())
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.config_dir.join(KNOWN_HOSTS)
    }

    fn environments_file(&self) -> PathBuf {
        self.config_dir.join(added::FILE_NAME)
    }

    /// The environments the user added (none when the file is not there).
    pub fn added_environments(&self) -> Result<Vec<AddedEnvironment>, Problem> {
        let path = self.environments_file();
        let text = match read_bounded(&path, added::MAX_FILE_BYTES)? {
            Some(t) => t,
            None => return Ok(Vec::new()),
        };
        added::parse_file(&text).map_err(|why| {
            Problem::new(
                ProblemCode::InvalidEnvironment,
                format!("{} cannot be read: {why}", path.display()),
            )
        })
    }

    /// Replaces the stored environments.
    pub fn save_added_environments(&self, all: &[AddedEnvironment]) -> Result<(), Problem> {
        write_atomically(&self.environments_file(), added::to_file(all).as_bytes())
    }

    /// Adds known-hosts lines to Changeover's known hosts (kept once each).
    pub fn trust_host_keys(&self, lines: &[String]) -> Result<(), Problem> {
        let path = self.known_hosts();
        let mut text = read_bounded(&path, 4 << 20)?.unwrap_or_default();
        for line in lines {
            let line = line.trim();
            if !line.is_empty() && !text.lines().any(|l| l.trim() == line) {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(line);
                text.push('\n');
            }
        }
        write_atomically(&path, text.as_bytes())
    }
}

/// A file's text, `None` when it is not there; refused above `limit` bytes.
fn read_bounded(path: &Path, limit: usize) -> Result<Option<String>, Problem> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Problem::new(
            ProblemCode::InvalidEnvironment,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    match std::fs::metadata(path) {
        Ok(m) if m.len() as usize > limit => {
            return Err(unreadable(&format!(
                "it is {} bytes, more than the {limit} expected",
                m.len()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(&e)),
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| unreadable(&e))
}

/// Creates `dir` (and its parents) when missing; Changeover's own folders
/// are readable by this user only.
fn private_dir(dir: &Path) -> Result<(), Problem> {
    std::fs::create_dir_all(dir).map_err(|e| cannot_write(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| cannot_write(dir, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a uniquely named file beside it
/// (so two writers never share one), flushed to disk, then renamed over
/// `path`. On failure `path` is as it was and the error says why.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Problem> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the folder is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(cannot_write(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            config_dir: dir.join("config"),
            runtime_dir: dir.join("run"),
        }
    }

    #[test]
    fn environments_are_saved_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        assert!(s.added_environments().unwrap().is_empty(), "no file: none");
        let env = AddedEnvironment {
            name: "lab".into(),
            host: "tcp://10.0.0.2:2375".into(),
            description: String::new(),
            tls: None,
        };
        s.save_added_environments(std::slice::from_ref(&env))
            .unwrap();
        assert_eq!(s.added_environments().unwrap(), vec![env]);
        let leftovers: Vec<_> = std::fs::read_dir(&s.config_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary file stays: {leftovers:?}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&s.config_dir)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "the config folder is private");
        }
    }

    #[test]
    fn a_write_that_cannot_happen_is_an_error_and_the_old_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        s.save_added_environments(&[]).unwrap();
        let before = std::fs::read_to_string(s.environments_file()).unwrap();
        // A folder where the file should go: the rename must fail.
        let blocked = s.config_dir.join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let err = write_atomically(&blocked, b"new").unwrap_err();
        assert_eq!(err.code, ProblemCode::CannotWrite);
        assert!(err.message.contains("blocked"), "{}", err.message);
        assert_eq!(
            std::fs::read_to_string(s.environments_file()).unwrap(),
            before
        );
    }

    #[test]
    fn a_broken_or_huge_settings_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        std::fs::create_dir_all(&s.config_dir).unwrap();
        std::fs::write(s.environments_file(), "{ not json").unwrap();
        let p = s.added_environments().unwrap_err();
        assert!(p.message.contains("environments.json"), "{}", p.message);
        std::fs::write(s.environments_file(), vec![b' '; added::MAX_FILE_BYTES + 1]).unwrap();
        assert!(s
            .added_environments()
            .unwrap_err()
            .message
            .contains("more than"));
    }

    #[test]
    fn accepted_host_keys_are_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let line = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza".to_string();
        s.trust_host_keys(std::slice::from_ref(&line)).unwrap();
        s.trust_host_keys(std::slice::from_ref(&line)).unwrap();
        let text = std::fs::read_to_string(s.known_hosts()).unwrap();
        assert_eq!(text, format!("{line}\n"));
    }
}
