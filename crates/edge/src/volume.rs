//! `changeover-edge volume`: the volume helper. Changeover looks into a
//! volume without an agent and without the host's paths: it starts a small
//! container of this binary on the volume's own daemon, with the volume
//! mounted at [`MOUNT_POINT`] (read-only unless the user confirmed a write),
//! no network, every capability dropped but `DAC_READ_SEARCH`, and runs one
//! `docker exec` of this binary per question.
//!
//! # Protocol
//! Paths are hex of their bytes (`VolumePath::to_hex`), since exec arguments
//! must be UTF-8. Answers go to stdout; a refusal is one `Problem` as JSON
//! on stderr and exit status 1.
//! - `hold --idle SECS`: the container's main process. It exits (and the
//!   container, started with auto-remove, goes) once no other process has
//!   run in the container for `SECS`: a helper lives while it is used, and
//!   none is left behind when the app that started it has gone.
//! - `list PATH [--after NAME] [--limit N]`: one JSON `Listing` line, a
//!   page of the folder sorted by name bytes, `lstat` of each entry.
//! - `read PATH [--offset N] [--length N]`: one JSON `ReadHead` line, then
//!   exactly `length` raw bytes of the file from `offset`.
//! - `du PATH`: `SizeWalk` JSON lines, one about every 200 ms while it
//!   walks and a last one with `done`; links are not followed, other file
//!   systems not entered, hard links counted once (as `du -s`).
//!
//! # Never outside the volume
//! Every name of a path is checked with `lstat` before it is entered: a
//! link is refused, never followed (its target is shown in listings). The
//! container holds nothing else than this binary and the volume, so even a
//! link swapped in between the check and the open leads nowhere.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use changeover_core::volume::{
    escape, link_leaves, Entry, EntryKind, Listing, ReadHead, SizeWalk, VolumePath, DEFAULT_PAGE,
    MAX_PAGE, MOUNT_POINT,
};
use changeover_core::{Problem, ProblemCode};
use clap::Subcommand;

/// The most bytes one `read` sends.
const MAX_READ: u64 = 64 * 1024 * 1024;
/// `O_NOFOLLOW` (Linux): opening a link fails instead of following it.
const O_NOFOLLOW: i32 = 0o400000;

#[derive(Subcommand)]
pub enum Op {
    /// Keep the helper container alive while it is used.
    Hold {
        #[arg(long, default_value_t = 120)]
        idle: u64,
    },
    /// One page of a folder.
    List {
        path: String,
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = DEFAULT_PAGE)]
        limit: u32,
    },
    /// Bytes of a file.
    Read {
        path: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 1024 * 1024)]
        length: u64,
    },
    /// The size of a folder, streamed.
    Du { path: String },
}

pub fn run(op: Op) -> ExitCode {
    let root = PathBuf::from(MOUNT_POINT);
    let result = match op {
        Op::Hold { idle } => {
            hold(Duration::from_secs(idle));
            Ok(())
        }
        Op::List { path, after, limit } => list(&root, &path, after.as_deref(), limit),
        Op::Read {
            path,
            offset,
            length,
        } => read(&root, &path, offset, length),
        Op::Du { path } => du(&root, &path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(p) => {
            eprintln!(
                "{}",
                serde_json::to_string(&p).unwrap_or_else(|_| p.message.clone())
            );
            ExitCode::FAILURE
        }
    }
}

fn problem(code: ProblemCode, message: String) -> Problem {
    Problem::new(code, message)
}

fn hold(idle: Duration) {
    let me = std::process::id().to_string();
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let others = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten().any(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.bytes().all(|b| b.is_ascii_digit()) && n != me
                })
            })
            .unwrap_or(false);
        if others {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= idle {
            return;
        }
    }
}

/// The path on disk of `path`, every folder on the way checked to be a
/// folder and not a link.
fn resolve(root: &Path, hex: &str) -> Result<(VolumePath, PathBuf), Problem> {
    let path = VolumePath::from_hex(hex).map_err(|why| problem(ProblemCode::InvalidPath, why))?;
    let mut at = root.to_path_buf();
    let mut walked = VolumePath::root();
    let names = path.names();
    for (i, name) in names.iter().enumerate() {
        at.push(OsStr::from_bytes(name));
        walked = walked
            .join(name)
            .map_err(|why| problem(ProblemCode::InvalidPath, why))?;
        let last = i + 1 == names.len();
        let meta = std::fs::symlink_metadata(&at).map_err(|e| missing(&walked, &e))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&at)
                .map(|t| escape(t.as_os_str().as_bytes()))
                .unwrap_or_default();
            return Err(problem(
                ProblemCode::NoSuchPath,
                format!(
                    "{} is a link to {target}; Changeover shows links but does not follow them",
                    walked.display()
                ),
            ));
        }
        if !last && !meta.is_dir() {
            return Err(problem(
                ProblemCode::NoSuchPath,
                format!("{} is not a folder", walked.display()),
            ));
        }
    }
    Ok((path, at))
}

fn missing(path: &VolumePath, e: &std::io::Error) -> Problem {
    match e.kind() {
        std::io::ErrorKind::NotFound => problem(
            ProblemCode::NoSuchPath,
            format!("nothing at {} in the volume", path.display()),
        ),
        std::io::ErrorKind::PermissionDenied => problem(
            ProblemCode::NoSuchPath,
            format!("{} cannot be read: permission denied", path.display()),
        ),
        _ => problem(
            ProblemCode::VolumeHelper,
            format!("cannot read {}: {e}", path.display()),
        ),
    }
}

fn entry(dir: &VolumePath, at: &Path, name: &[u8]) -> Entry {
    let full = at.join(OsStr::from_bytes(name));
    let shown = escape(name);
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return Entry {
            name: shown,
            kind: EntryKind::Other,
            size: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            modified_ms: 0,
            target: None,
            target_outside: false,
        };
    };
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    let target = ft
        .is_symlink()
        .then(|| std::fs::read_link(&full).ok())
        .flatten()
        .map(|t| t.as_os_str().as_bytes().to_vec());
    Entry {
        name: shown,
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        modified_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
        target_outside: target.as_deref().is_some_and(|t| link_leaves(dir, t)),
        target: target.map(|t| escape(&t)),
    }
}

fn list(root: &Path, hex: &str, after: Option<&str>, limit: u32) -> Result<(), Problem> {
    let (path, at) = resolve(root, hex)?;
    let meta = std::fs::symlink_metadata(&at).map_err(|e| missing(&path, &e))?;
    if !meta.is_dir() {
        return Err(problem(
            ProblemCode::NoSuchPath,
            format!("{} is a file, not a folder", path.display()),
        ));
    }
    let after = match after {
        Some(h) => Some(
            VolumePath::from_hex(h)
                .map_err(|why| problem(ProblemCode::InvalidPath, why))?
                .names()
                .last()
                .cloned()
                .unwrap_or_default(),
        ),
        None => None,
    };
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(&at)
        .map_err(|e| missing(&path, &e))?
        .flatten()
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect();
    names.sort_unstable();
    let total = names.len() as u64;
    let start = match &after {
        Some(a) => names.partition_point(|n| n <= a),
        None => 0,
    };
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let page = &names[start..names.len().min(start + limit)];
    let entries: Vec<Entry> = page.iter().map(|n| entry(&path, &at, n)).collect();
    let next_after = (start + page.len() < names.len())
        .then(|| page.last().map(|n| escape(n)))
        .flatten();
    let listing = Listing {
        path: path.display(),
        entries,
        total,
        next_after,
    };
    println!("{}", serde_json::to_string(&listing).unwrap_or_default());
    Ok(())
}

fn read(root: &Path, hex: &str, offset: u64, length: u64) -> Result<(), Problem> {
    let (path, at) = resolve(root, hex)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(&at)
        .map_err(|e| missing(&path, &e))?;
    let meta = file.metadata().map_err(|e| missing(&path, &e))?;
    if !meta.is_file() {
        return Err(problem(
            ProblemCode::NoSuchPath,
            format!("{} is not a file", path.display()),
        ));
    }
    let size = meta.len();
    let offset = offset.min(size);
    let length = length.min(MAX_READ).min(size - offset);
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| missing(&path, &e))?;
    let head = ReadHead {
        size,
        offset,
        length,
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "{}", serde_json::to_string(&head).unwrap_or_default());
    // Exactly `length` bytes: a file that shrank meanwhile is padded with
    // zeros rather than leaving the reader waiting.
    let mut left = length;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                buf[..want].fill(0);
                want
            }
            Ok(n) => n,
            Err(e) => return Err(missing(&path, &e)),
        };
        if out.write_all(&buf[..n]).is_err() {
            return Ok(()); // the reader went away
        }
        left -= n as u64;
    }
    let _ = out.flush();
    Ok(())
}

fn du(root: &Path, hex: &str) -> Result<(), Problem> {
    let (path, at) = resolve(root, hex)?;
    let top = std::fs::symlink_metadata(&at).map_err(|e| missing(&path, &e))?;
    let dev = top.dev();
    let mut walk = SizeWalk {
        files: 0,
        dirs: 0,
        bytes: 0,
        disk_bytes: 0,
        unreadable: 0,
        done: false,
    };
    let mut seen = HashSet::new();
    let mut pending = vec![at];
    let mut last = Instant::now();
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut count = |meta: &std::fs::Metadata, walk: &mut SizeWalk| {
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        walk.disk_bytes += meta.blocks() * 512;
        if meta.is_dir() {
            walk.dirs += 1;
        } else {
            walk.files += 1;
            if meta.is_file() {
                walk.bytes += meta.len();
            }
        }
    };
    count(&top, &mut walk);
    if !top.is_dir() {
        pending.clear();
    }
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            walk.unreadable += 1;
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                walk.unreadable += 1;
                continue;
            };
            count(&meta, &mut walk);
            if meta.is_dir() && meta.dev() == dev {
                pending.push(e.path());
            }
        }
        if last.elapsed() >= Duration::from_millis(200) {
            last = Instant::now();
            if writeln!(out, "{}", serde_json::to_string(&walk).unwrap_or_default()).is_err() {
                return Ok(());
            }
            let _ = out.flush();
        }
    }
    walk.done = true;
    let _ = writeln!(out, "{}", serde_json::to_string(&walk).unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hex(p: &str) -> String {
        VolumePath::parse(p).unwrap().to_hex()
    }

    #[test]
    fn links_on_the_way_are_refused_and_folders_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("a/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("a", root.join("in")).unwrap();
        assert!(resolve(root, &hex("/a/f")).is_ok());
        for bad in ["/out/passwd", "/in/f", "/out"] {
            let e = resolve(root, &hex(bad)).unwrap_err();
            assert_eq!(e.code, ProblemCode::NoSuchPath, "{bad}");
            assert!(e.message.contains("link"), "{bad}: {}", e.message);
        }
        let e = resolve(root, &hex("/a/f/g")).unwrap_err();
        assert!(e.message.contains("not a folder"), "{}", e.message);
        let e = resolve(root, &hex("/nope")).unwrap_err();
        assert!(e.message.contains("nothing at /nope"), "{}", e.message);
        // `..` in hex is refused like typed.
        let e = resolve(root, "2f2e2e2f657463").unwrap_err();
        assert_eq!(e.code, ProblemCode::InvalidPath);
    }
}
