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
//! - `find PATH TEXT [--limit N]`: one JSON `Search` line: the entries
//!   under the folder whose names hold TEXT (ASCII case ignored), breadth
//!   first, names sorted within a folder, up to N; links are not followed,
//!   other file systems not entered.
//! - `tar PATH [--gzip]`: a tar of the folder's entries (names relative to
//!   it; links as links) or of one file, to stdout.
//! - `untar PATH --max-bytes N [--mode empty|replace|merge]` (read-write
//!   helper only): a tar or tar.gz on stdin, unpacked into a staging folder
//!   beside PATH's content and moved in place only when all of it is in;
//!   then one JSON line of what was written. Refused, with nothing changed:
//!   absolute entries, `..`, entries through a link (also one the archive
//!   made), hard links to what it did not hold, devices, more than N bytes.
//! - `copy [--replace]` (a helper that also mounts a second volume,
//!   read-write, at `/other`): copies the volume into the other one, owners,
//!   modes, times, links and hard links kept, into a staging folder first
//!   and moved in place only when all of it is in; the other volume must be
//!   empty unless `--replace`. `Copied` JSON lines about every 200 ms, the
//!   last with `done`. Sockets, pipes and devices are skipped and counted.
//! - `diff [--limit N]` (a helper that also mounts a second volume,
//!   read-only, at `/other`): what changed from `/other` (before) to the
//!   volume (after), one `EntryChange` JSON line per entry that differs, in
//!   path order, up to N of them, then `{"done": DiffCounts}`. Content is
//!   compared byte by byte where the sizes agree; times are not compared.
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

use changeover_core::snapshot::OTHER_MOUNT;
use changeover_core::volume::{
    escape, link_leaves, Entry, EntryKind, Listing, ReadHead, SizeWalk, Unpacked, VolumePath,
    DEFAULT_PAGE, MAX_PAGE, MOUNT_POINT,
};
use changeover_core::{Problem, ProblemCode};
use clap::Subcommand;

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
    /// Entries under a folder whose names hold a text.
    Find {
        path: String,
        text: String,
        #[arg(long, default_value_t = changeover_core::volume::DEFAULT_SEARCH)]
        limit: u32,
    },
    /// A tar of a folder's content (or of one file) to stdout.
    Tar {
        path: String,
        #[arg(long)]
        gzip: bool,
    },
    /// Unpack a tar (gzip or not) from stdin into a folder; the helper
    /// must mount the volume read-write.
    /// Copy the volume into the one mounted at `/other` (read-write).
    Copy {
        #[arg(long)]
        replace: bool,
    },
    /// What changed from the volume at `/other` to this one.
    Diff {
        #[arg(long, default_value_t = changeover_core::snapshot::MAX_DIFF_ENTRIES)]
        limit: u64,
    },
    Untar {
        path: String,
        /// `empty`: the folder must be empty; `replace`: what it holds goes;
        /// `merge`: entries of the same name are replaced, the rest stays.
        #[arg(long, default_value = "empty")]
        mode: String,
        /// Refuse an archive that unpacks to more than this many bytes.
        #[arg(long)]
        max_bytes: u64,
    },
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
        Op::Find { path, text, limit } => find(&root, &path, &text, limit),
        Op::Tar { path, gzip } => pack(&root, &path, gzip),
        Op::Untar {
            path,
            mode,
            max_bytes,
        } => unpack(&root, &path, &mode, max_bytes),
        Op::Copy { replace } => crate::volume_copy::copy(
            &root,
            Path::new(OTHER_MOUNT),
            replace,
            &mut std::io::stdout(),
        ),
        Op::Diff { limit } => {
            crate::volume_copy::diff(Path::new(OTHER_MOUNT), &root, limit, &mut std::io::stdout())
        }
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
    let kind = crate::volume_copy::kind_of(&meta);
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
    let length = length.min(size - offset);
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

fn find(root: &Path, hex: &str, text: &str, limit: u32) -> Result<(), Problem> {
    let text = changeover_core::volume::check_search_text(text)?.as_bytes();
    let limit = limit.clamp(1, changeover_core::volume::MAX_SEARCH) as usize;
    let (path, at) = resolve(root, hex)?;
    let top = std::fs::symlink_metadata(&at).map_err(|e| missing(&path, &e))?;
    if !top.is_dir() {
        return Err(problem(
            ProblemCode::NoSuchPath,
            format!("{} is not a folder", path.display()),
        ));
    }
    let mut found = changeover_core::volume::Search {
        matches: Vec::new(),
        searched: 0,
        unreadable: 0,
        truncated: false,
    };
    let mut queue = std::collections::VecDeque::from([(path, at)]);
    'walk: while let Some((dir, at)) = queue.pop_front() {
        let Ok(read) = std::fs::read_dir(&at) else {
            found.unreadable += 1;
            continue;
        };
        let mut names: Vec<Vec<u8>> = read
            .flatten()
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        for name in names {
            found.searched += 1;
            if changeover_core::volume::name_matches(&name, text) {
                if found.matches.len() == limit {
                    found.truncated = true;
                    break 'walk;
                }
                found.matches.push(changeover_core::volume::Found {
                    dir: dir.display(),
                    entry: entry(&dir, &at, &name),
                });
            }
            let full = at.join(OsStr::from_bytes(&name));
            if let (Ok(meta), Ok(child)) = (std::fs::symlink_metadata(&full), dir.join(&name)) {
                if meta.is_dir() && meta.dev() == top.dev() {
                    queue.push_back((child, full));
                }
            }
        }
    }
    println!("{}", serde_json::to_string(&found).unwrap_or_default());
    Ok(())
}

/// Packs `path`: a folder's entries (names relative to it, links as links,
/// never followed), or one file under its own name.
fn pack(root: &Path, hex: &str, gzip: bool) -> Result<(), Problem> {
    let (path, at) = resolve(root, hex)?;
    let meta = std::fs::symlink_metadata(&at).map_err(|e| missing(&path, &e))?;
    let out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let sink: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(out)
    };
    let mut tar = tar::Builder::new(sink);
    tar.follow_symlinks(false);
    let fail = |e: std::io::Error| {
        problem(
            ProblemCode::VolumeHelper,
            format!("packing {}: {e}", path.display()),
        )
    };
    if !meta.is_dir() {
        let name = path.names().last().cloned().unwrap_or_default();
        tar.append_path_with_name(&at, OsStr::from_bytes(&name))
            .map_err(fail)?;
    } else {
        let dev = meta.dev();
        let mut pending: Vec<(PathBuf, PathBuf)> = vec![(at.clone(), PathBuf::new())];
        while let Some((dir, rel)) = pending.pop() {
            let mut names: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .map_err(fail)?
                .flatten()
                .map(|e| e.file_name().as_bytes().to_vec())
                .collect();
            names.sort_unstable();
            let mut below = Vec::new();
            for n in names {
                let full = dir.join(OsStr::from_bytes(&n));
                let name = rel.join(OsStr::from_bytes(&n));
                let m = std::fs::symlink_metadata(&full).map_err(fail)?;
                tar.append_path_with_name(&full, &name).map_err(fail)?;
                if m.is_dir() && m.dev() == dev {
                    below.push((full, name));
                }
            }
            // Depth first, in name order.
            pending.extend(below.into_iter().rev());
        }
    }
    let sink = tar.into_inner().map_err(fail)?;
    drop(sink); // flushes (and ends the gzip stream)
    Ok(())
}

/// The most entries one archive may hold.
const MAX_ENTRIES: u64 = 2_000_000;

/// Unpacks the archive on stdin into `path`, first into a staging folder
/// beside what is there: a refused or broken archive leaves the folder as
/// it was. Entries that climb out (`..`), are absolute, pass through a link
/// (a link written by the archive itself included), or are devices are
/// refused, and so is an archive that unpacks to more than `max_bytes`.
fn unpack(root: &Path, hex: &str, mode: &str, max_bytes: u64) -> Result<(), Problem> {
    let (replace, merge) = match mode {
        "empty" => (false, false),
        "replace" => (true, false),
        "merge" => (false, true),
        other => {
            return Err(problem(
                ProblemCode::VolumeHelper,
                format!("unknown unpack mode {other:?}"),
            ))
        }
    };
    let (path, at) = resolve(root, hex)?;
    let meta = std::fs::symlink_metadata(&at).map_err(|e| missing(&path, &e))?;
    if !meta.is_dir() {
        return Err(problem(
            ProblemCode::NoSuchPath,
            format!("{} is not a folder", path.display()),
        ));
    }
    let staging_name = format!(".changeover-unpacking-{}", std::process::id());
    let had: Vec<std::ffi::OsString> = std::fs::read_dir(&at)
        .map_err(|e| missing(&path, &e))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.as_bytes().starts_with(b".changeover-unpacking-"))
        .collect();
    if !had.is_empty() && !replace && !merge {
        return Err(problem(
            ProblemCode::NotEmpty,
            format!(
                "{} is not empty ({} entries); unpack into an empty folder, or replace what it holds",
                path.display(),
                had.len()
            ),
        ));
    }
    let staging = at.join(&staging_name);
    std::fs::create_dir(&staging).map_err(|e| {
        problem(
            ProblemCode::VolumeHelper,
            format!("cannot make a staging folder in {}: {e}", path.display()),
        )
    })?;
    let result = unpack_into(&staging, std::io::stdin().lock(), max_bytes);
    let done = match result {
        Ok(summary) => {
            let swapped = (|| -> std::io::Result<()> {
                let unpacked: Vec<std::ffi::OsString> = std::fs::read_dir(&staging)?
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                let goes: Vec<&std::ffi::OsString> = if merge {
                    had.iter().filter(|n| unpacked.contains(n)).collect()
                } else {
                    had.iter().collect()
                };
                for n in goes {
                    let old = at.join(n);
                    if std::fs::symlink_metadata(&old)?.is_dir() {
                        std::fs::remove_dir_all(&old)?;
                    } else {
                        std::fs::remove_file(&old)?;
                    }
                }
                for n in unpacked {
                    std::fs::rename(staging.join(&n), at.join(&n))?;
                }
                std::fs::remove_dir(&staging)
            })();
            swapped.map(|()| summary).map_err(|e| {
                problem(
                    ProblemCode::VolumeHelper,
                    format!("putting the unpacked files in place: {e}"),
                )
            })
        }
        Err(p) => Err(p),
    };
    if done.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let summary = done?;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(())
}

fn refused(message: String) -> Problem {
    problem(ProblemCode::InvalidArchive, message)
}

/// The place of an archive entry under `base`, every folder on the way
/// made (or checked to be a folder, never a link).
fn place(base: &Path, raw: &[u8]) -> Result<Option<(VolumePath, PathBuf)>, Problem> {
    let shown = escape(raw);
    if raw.starts_with(b"/") {
        return Err(refused(format!(
            "the archive holds an absolute path, {shown}; entries must be relative"
        )));
    }
    let rel = VolumePath::from_bytes(raw)
        .map_err(|why| refused(format!("the archive's entry {shown} is refused: {why}")))?;
    if rel.is_root() {
        return Ok(None);
    }
    let mut at = base.to_path_buf();
    let names = rel.names();
    for name in &names[..names.len() - 1] {
        at.push(OsStr::from_bytes(name));
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(format!(
                    "the archive's entry {shown} goes through a link; it would write outside its folder"
                )))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(refused(format!(
                    "the archive's entry {shown} goes through a file"
                )))
            }
            Err(_) => std::fs::create_dir(&at).map_err(|e| {
                refused(format!("cannot make a folder for {shown}: {e}"))
            })?,
        }
    }
    at.push(OsStr::from_bytes(&names[names.len() - 1]));
    Ok(Some((rel, at)))
}

fn unpack_into(base: &Path, input: impl Read, max_bytes: u64) -> Result<Unpacked, Problem> {
    let mut input = std::io::BufReader::with_capacity(256 * 1024, input);
    let gz = {
        use std::io::BufRead;
        let head = input
            .fill_buf()
            .map_err(|e| refused(format!("cannot read the archive: {e}")))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let reader: Box<dyn Read + '_> = if gz {
        Box::new(flate2::read::GzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(reader);
    let mut sum = Unpacked {
        files: 0,
        dirs: 0,
        links: 0,
        bytes: 0,
    };
    let broken = |e: std::io::Error| refused(format!("the archive cannot be read: {e}"));
    let mut count = 0u64;
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(refused(format!(
                "the archive holds more than {MAX_ENTRIES} entries"
            )));
        }
        let raw = entry.path_bytes().into_owned();
        let Some((_, at)) = place(base, &raw)? else {
            continue;
        };
        let shown = escape(&raw);
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (header.uid().ok(), header.gid().ok());
        let kind = header.entry_type();
        let existing = std::fs::symlink_metadata(&at).ok();
        if existing
            .as_ref()
            .is_some_and(|m| m.file_type().is_symlink() || (m.is_dir() != kind.is_dir()))
        {
            return Err(refused(format!(
                "the archive writes {shown} twice, as different kinds"
            )));
        }
        let cannot = |e: std::io::Error| {
            problem(
                ProblemCode::VolumeHelper,
                format!("cannot write {shown}: {e}"),
            )
        };
        if kind.is_dir() {
            if existing.is_none() {
                std::fs::create_dir(&at).map_err(cannot)?;
            }
            sum.dirs += 1;
        } else if kind.is_file() {
            let size = header.size().unwrap_or(0);
            sum.bytes = sum.bytes.saturating_add(size);
            if sum.bytes > max_bytes {
                return Err(refused(format!(
                    "the archive unpacks to more than {max_bytes} bytes (at {shown}); if that is right, allow more"
                )));
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(O_NOFOLLOW)
                .open(&at)
                .map_err(cannot)?;
            let copied = std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(broken)?;
            if copied != size {
                return Err(refused(format!("the archive ends inside {shown}")));
            }
            if let Ok(t) = header.mtime() {
                let _ = file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(t));
            }
            sum.files += 1;
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refused(format!("the link {shown} has no target")))?
                .into_owned();
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &at).map_err(cannot)?;
            sum.links += 1;
            if let (Some(u), Some(g)) = (uid, gid) {
                let _ =
                    std::os::unix::fs::lchown(&at, u32::try_from(u).ok(), u32::try_from(g).ok());
            }
            continue;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refused(format!("the hard link {shown} has no target")))?
                .into_owned();
            let (_, source) = place(base, &target)?
                .ok_or_else(|| refused(format!("the hard link {shown} points at its folder")))?;
            match std::fs::symlink_metadata(&source) {
                Ok(m) if m.is_file() => std::fs::hard_link(&source, &at).map_err(cannot)?,
                _ => {
                    return Err(refused(format!(
                    "the hard link {shown} points at {}, which the archive did not hold before it",
                    escape(&target)
                )))
                }
            }
            sum.files += 1;
            continue;
        } else if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        } else {
            return Err(refused(format!(
                "the archive holds {shown}, a device or pipe; only files, folders and links are unpacked"
            )));
        }
        if let (Some(u), Some(g)) = (uid, gid) {
            let _ = std::os::unix::fs::lchown(&at, u32::try_from(u).ok(), u32::try_from(g).ok());
        }
        let _ = std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(mode));
    }
    Ok(sum)
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

    /// An archive entry as written: name, kind, link target, content.
    type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

    /// A tar whose entries are written as given, names unchecked.
    fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, body) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            h.set_entry_type(*kind);
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn unpack_raw(entries: &[RawEntry]) -> (tempfile::TempDir, Result<Unpacked, Problem>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack_into(dir.path(), &raw_tar(entries)[..], 1 << 20);
        (dir, r)
    }

    #[test]
    fn hostile_archives_are_refused() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let cases: [(&str, Vec<RawEntry>, &str); 6] = [
            (
                "climbs out",
                vec![(b"../evil", Regular, b"", b"x")],
                "`..` is not allowed",
            ),
            (
                "absolute",
                vec![(b"/etc/evil", Regular, b"", b"x")],
                "absolute path",
            ),
            (
                "symlink then write",
                vec![
                    (b"l", Symlink, b"/etc", b""),
                    (b"l/passwd", Regular, b"", b"x"),
                ],
                "goes through a link",
            ),
            (
                "symlink over a file",
                vec![
                    (b"f", Symlink, b"/etc/passwd", b""),
                    (b"f", Regular, b"", b"x"),
                ],
                "twice",
            ),
            (
                "hard link out",
                vec![(b"h", Link, b"../../etc/passwd", b"")],
                "`..` is not allowed",
            ),
            (
                "device",
                vec![(b"d", tar::EntryType::Char, b"", b"")],
                "device or pipe",
            ),
        ];
        for (what, entries, said) in cases {
            let (dir, r) = unpack_raw(&entries);
            let e = r.err().unwrap_or_else(|| panic!("{what} must be refused"));
            assert!(e.message.contains(said), "{what}: {}", e.message);
            assert!(std::fs::symlink_metadata("/etc/evil").is_err());
            drop(dir);
        }
        let (dir, r) = unpack_raw(&[
            (b"a/", Directory, b"", b""),
            (b"a/f", Regular, b"", b"hello"),
            (b"a/l", Symlink, b"f", b""),
            (b"a/h", Link, b"a/f", b""),
        ]);
        let sum = r.unwrap();
        assert_eq!((sum.files, sum.dirs, sum.links, sum.bytes), (2, 1, 1, 5));
        assert_eq!(std::fs::read(dir.path().join("a/h")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(dir.path().join("a/l")).unwrap(),
            Path::new("f")
        );
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_bound() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let zeros = vec![0u8; 4 << 20];
        h.set_size(zeros.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "zeros", &zeros[..]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        let packed = gz.finish().unwrap();
        assert!(packed.len() < 64 * 1024, "{}", packed.len());
        let dir = tempfile::tempdir().unwrap();
        let e = unpack_into(dir.path(), &packed[..], 1 << 20).unwrap_err();
        assert!(
            e.message.contains("more than 1048576 bytes"),
            "{}",
            e.message
        );
        assert!(
            !dir.path().join("zeros").exists(),
            "nothing of it is written"
        );
    }
}
