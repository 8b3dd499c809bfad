//! The volume helper's work on two volumes at once: `copy` (snapshots,
//! clones, restores) and `diff` (see the protocol in `volume`'s module doc).
//! Both walk the trees themselves with `lstat`: links are copied and
//! compared as links, never followed, and other file systems are not
//! entered.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use changeover_core::snapshot::{Aspect, Change, Copied, DiffCounts, DiffDone, EntryChange};
use changeover_core::volume::{escape, EntryKind};
use changeover_core::{Problem, ProblemCode};

/// Names of Changeover's own staging folders, left out of copies and diffs.
const STAGING: [&[u8]; 2] = [b".changeover-copying-", b".changeover-unpacking-"];

fn is_staging(name: &[u8]) -> bool {
    STAGING.iter().any(|p| name.starts_with(p))
}

fn failed(what: &str, at: &Path, e: std::io::Error) -> Problem {
    Problem::new(
        ProblemCode::VolumeHelper,
        format!("{what} {}: {e}", at.display()),
    )
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect();
    names.sort_unstable();
    Ok(names)
}

fn mtime_of(meta: &std::fs::Metadata) -> std::time::SystemTime {
    let secs = meta.mtime().max(0) as u64;
    UNIX_EPOCH + Duration::new(secs, meta.mtime_nsec().clamp(0, 999_999_999) as u32)
}

/// Copies the content of `from` into `to`: into a staging folder inside
/// `to`, then, when everything is in, what `to` held goes (`replace`; else
/// it must be empty) and the staged entries take its place. `to`'s own
/// owner and mode become `from`'s.
pub fn copy(from: &Path, to: &Path, replace: bool, out: &mut impl Write) -> Result<(), Problem> {
    let had: Vec<OsString> = std::fs::read_dir(to)
        .map_err(|e| failed("cannot read", to, e))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !is_staging(n.as_bytes()))
        .collect();
    if !had.is_empty() && !replace {
        return Err(Problem::new(
            ProblemCode::NotEmpty,
            format!(
                "the volume to copy into is not empty ({} entries)",
                had.len()
            ),
        ));
    }
    let staging = to.join(format!(".changeover-copying-{}", std::process::id()));
    std::fs::create_dir(&staging).map_err(|e| failed("cannot make", &staging, e))?;
    let mut copier = Copier {
        copied: Copied::default(),
        links: HashMap::new(),
        last: Instant::now(),
        dev: std::fs::symlink_metadata(from)
            .map_err(|e| failed("cannot read", from, e))?
            .dev(),
    };
    let walked = copier.tree(from, &staging, out);
    let swapped = walked.and_then(|()| {
        (|| -> std::io::Result<()> {
            for n in &had {
                let old = to.join(n);
                if std::fs::symlink_metadata(&old)?.is_dir() {
                    std::fs::remove_dir_all(&old)?;
                } else {
                    std::fs::remove_file(&old)?;
                }
            }
            for n in std::fs::read_dir(&staging)?.flatten() {
                std::fs::rename(n.path(), to.join(n.file_name()))?;
            }
            std::fs::remove_dir(&staging)?;
            let top = std::fs::symlink_metadata(from)?;
            let _ = std::os::unix::fs::lchown(to, Some(top.uid()), Some(top.gid()));
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(top.mode() & 0o7777))
        })()
        .map_err(|e| failed("cannot put the copy in place in", to, e))
    });
    if let Err(p) = swapped {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(p);
    }
    copier.copied.done = true;
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(&copier.copied).unwrap_or_default()
    );
    Ok(())
}

struct Copier {
    copied: Copied,
    /// Hard links seen: (dev, inode) to where the first one was copied.
    links: HashMap<(u64, u64), PathBuf>,
    last: Instant,
    dev: u64,
}

impl Copier {
    fn progress(&mut self, out: &mut impl Write) {
        if self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&self.copied).unwrap_or_default()
            );
            let _ = out.flush();
        }
    }

    /// Copies what is in the folder `from` into the folder `to`.
    fn tree(&mut self, from: &Path, to: &Path, out: &mut impl Write) -> Result<(), Problem> {
        // Folders get their times last, after what is written into them.
        let mut folders: Vec<(PathBuf, std::time::SystemTime)> = Vec::new();
        let mut pending = vec![(from.to_path_buf(), to.to_path_buf(), true)];
        while let Some((src_dir, dst_dir, top)) = pending.pop() {
            let names = sorted_names(&src_dir).map_err(|e| failed("cannot read", &src_dir, e))?;
            for n in names {
                if top && is_staging(&n) {
                    continue;
                }
                let src = src_dir.join(OsStr::from_bytes(&n));
                let dst = dst_dir.join(OsStr::from_bytes(&n));
                let meta =
                    std::fs::symlink_metadata(&src).map_err(|e| failed("cannot read", &src, e))?;
                let ft = meta.file_type();
                let cannot = |e| failed("cannot copy", &src, e);
                if ft.is_dir() {
                    std::fs::create_dir(&dst).map_err(cannot)?;
                    self.copied.dirs += 1;
                    if meta.dev() == self.dev {
                        pending.push((src.clone(), dst.clone(), false));
                    }
                    folders.push((dst.clone(), mtime_of(&meta)));
                } else if ft.is_symlink() {
                    let target = std::fs::read_link(&src).map_err(cannot)?;
                    std::os::unix::fs::symlink(&target, &dst).map_err(cannot)?;
                    self.copied.links += 1;
                    let _ = std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()));
                    continue;
                } else if ft.is_file() {
                    let key = (meta.dev(), meta.ino());
                    if meta.nlink() > 1 {
                        if let Some(first) = self.links.get(&key) {
                            std::fs::hard_link(first, &dst).map_err(cannot)?;
                            self.copied.files += 1;
                            continue;
                        }
                        self.links.insert(key, dst.clone());
                    }
                    let mut reader = std::fs::File::open(&src).map_err(cannot)?;
                    let mut writer = std::fs::File::create(&dst).map_err(cannot)?;
                    // copy_file_range where the kernel can: no bytes through
                    // this process.
                    let n = std::io::copy(&mut reader, &mut writer).map_err(cannot)?;
                    let _ = writer.set_modified(mtime_of(&meta));
                    self.copied.files += 1;
                    self.copied.bytes += n;
                } else {
                    self.copied.skipped += 1;
                    continue;
                }
                let _ = std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()));
                std::fs::set_permissions(
                    &dst,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )
                .map_err(cannot)?;
                self.progress(out);
            }
        }
        for (dir, mtime) in folders.into_iter().rev() {
            if let Ok(f) = std::fs::File::open(&dir) {
                let _ = f.set_modified(mtime);
            }
        }
        Ok(())
    }
}

/// One side of an entry being compared.
struct Side {
    meta: std::fs::Metadata,
    path: PathBuf,
}

/// What `lstat` says an entry is.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> EntryKind {
    let ft = meta.file_type();
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

struct Differ<'o, W: Write> {
    counts: DiffCounts,
    listed: u64,
    limit: u64,
    out: &'o mut W,
}

impl<W: Write> Differ<'_, W> {
    fn report(&mut self, change: EntryChange) {
        match change.change {
            Change::Added => self.counts.added += 1,
            Change::Removed => self.counts.removed += 1,
            Change::Changed => self.counts.changed += 1,
        }
        if self.listed < self.limit {
            self.listed += 1;
            let _ = writeln!(
                self.out,
                "{}",
                serde_json::to_string(&change).unwrap_or_default()
            );
        } else {
            self.counts.truncated = true;
        }
    }

    /// Reports everything below `dir` (on one side only) as `change`.
    fn all_below(&mut self, dir: &Path, shown: &[u8], change: Change) {
        let Ok(names) = sorted_names(dir) else {
            return;
        };
        for n in names {
            let path = dir.join(OsStr::from_bytes(&n));
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = [shown, b"/", &n].concat();
            let size = meta.is_file().then_some(meta.len());
            self.report(EntryChange {
                path: escape(&name),
                change,
                kind: kind_of(&meta),
                aspects: Vec::new(),
                size_before: if change == Change::Removed {
                    size
                } else {
                    None
                },
                size_after: if change == Change::Added { size } else { None },
            });
            if meta.is_dir() {
                self.all_below(&path, &name, change);
            }
        }
    }

    fn folders(&mut self, before: &Path, after: &Path, shown: &[u8], top: bool) {
        let b = sorted_names(before).unwrap_or_default();
        let a = sorted_names(after).unwrap_or_default();
        let (mut i, mut j) = (0, 0);
        while i < b.len() || j < a.len() {
            let order = match (b.get(i), a.get(j)) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (bn, an) = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (Some(&b[i - 1]), None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (None, Some(&a[j - 1]))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (Some(&b[i - 1]), Some(&a[j - 1]))
                }
            };
            let n = bn.or(an).cloned().unwrap_or_default();
            if top && is_staging(&n) {
                continue;
            }
            let name = [shown, b"/", &n].concat();
            let side = |dir: &Path, present: bool| {
                present
                    .then(|| {
                        let path = dir.join(OsStr::from_bytes(&n));
                        std::fs::symlink_metadata(&path)
                            .ok()
                            .map(|meta| Side { meta, path })
                    })
                    .flatten()
            };
            let before_side = side(before, bn.is_some());
            let after_side = side(after, an.is_some());
            self.entry(&name, before_side, after_side);
        }
    }

    fn entry(&mut self, name: &[u8], before: Option<Side>, after: Option<Side>) {
        match (before, after) {
            (None, None) => {}
            (Some(b), None) => {
                self.report(EntryChange {
                    path: escape(name),
                    change: Change::Removed,
                    kind: kind_of(&b.meta),
                    aspects: Vec::new(),
                    size_before: b.meta.is_file().then_some(b.meta.len()),
                    size_after: None,
                });
                if b.meta.is_dir() {
                    self.all_below(&b.path, name, Change::Removed);
                }
            }
            (None, Some(a)) => {
                self.report(EntryChange {
                    path: escape(name),
                    change: Change::Added,
                    kind: kind_of(&a.meta),
                    aspects: Vec::new(),
                    size_before: None,
                    size_after: a.meta.is_file().then_some(a.meta.len()),
                });
                if a.meta.is_dir() {
                    self.all_below(&a.path, name, Change::Added);
                }
            }
            (Some(b), Some(a)) => {
                let (bk, ak) = (kind_of(&b.meta), kind_of(&a.meta));
                let mut aspects = Vec::new();
                if bk != ak {
                    aspects.push(Aspect::Kind);
                } else {
                    match ak {
                        EntryKind::File => {
                            if b.meta.len() != a.meta.len() {
                                aspects.push(Aspect::Size);
                                aspects.push(Aspect::Content);
                            } else if !same_content(&b.path, &a.path) {
                                aspects.push(Aspect::Content);
                            }
                        }
                        EntryKind::Symlink
                            if std::fs::read_link(&b.path).ok()
                                != std::fs::read_link(&a.path).ok() =>
                        {
                            aspects.push(Aspect::Target);
                        }
                        _ => {}
                    }
                }
                if ak != EntryKind::Symlink && (b.meta.mode() & 0o7777) != (a.meta.mode() & 0o7777)
                {
                    aspects.push(Aspect::Mode);
                }
                if (b.meta.uid(), b.meta.gid()) != (a.meta.uid(), a.meta.gid()) {
                    aspects.push(Aspect::Owner);
                }
                if aspects.is_empty() {
                    self.counts.unchanged += 1;
                } else {
                    self.report(EntryChange {
                        path: escape(name),
                        change: Change::Changed,
                        kind: ak,
                        aspects,
                        size_before: b.meta.is_file().then_some(b.meta.len()),
                        size_after: a.meta.is_file().then_some(a.meta.len()),
                    });
                }
                match (bk, ak) {
                    (EntryKind::Dir, EntryKind::Dir) => self.folders(&b.path, &a.path, name, false),
                    (EntryKind::Dir, _) => self.all_below(&b.path, name, Change::Removed),
                    (_, EntryKind::Dir) => self.all_below(&a.path, name, Change::Added),
                    _ => {}
                }
            }
        }
    }
}

/// Whether two files of the same size hold the same bytes (a file that
/// cannot be read counts as changed).
fn same_content(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let mut ba = vec![0u8; 256 * 1024];
    let mut bb = vec![0u8; 256 * 1024];
    loop {
        let Ok(n) = read_full(&mut fa, &mut ba) else {
            return false;
        };
        let Ok(m) = read_full(&mut fb, &mut bb) else {
            return false;
        };
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// What changed from `before` to `after`, written as the protocol says.
pub fn diff(before: &Path, after: &Path, limit: u64, out: &mut impl Write) -> Result<(), Problem> {
    for p in [before, after] {
        std::fs::read_dir(p).map_err(|e| failed("cannot read", p, e))?;
    }
    let mut out = std::io::BufWriter::new(out);
    let mut differ = Differ {
        counts: DiffCounts::default(),
        listed: 0,
        limit,
        out: &mut out,
    };
    differ.folders(before, after, b"", true);
    let done = DiffDone {
        done: differ.counts,
    };
    let _ = writeln!(out, "{}", serde_json::to_string(&done).unwrap_or_default());
    let _ = out.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lines(out: &[u8]) -> Vec<serde_json::Value> {
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_copy_keeps_links_modes_and_hard_links_and_replaces_only_when_asked() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let f = from.path();
        std::fs::create_dir(f.join("d")).unwrap();
        std::fs::write(f.join("d/a"), b"hello").unwrap();
        std::fs::set_permissions(f.join("d/a"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::hard_link(f.join("d/a"), f.join("d/h")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", f.join("out")).unwrap();
        std::fs::write(to.path().join("old"), b"x").unwrap();
        let mut out = Vec::new();
        let e = copy(f, to.path(), false, &mut out).unwrap_err();
        assert_eq!(e.code, ProblemCode::NotEmpty);
        assert!(
            to.path().join("old").exists(),
            "a refused copy changes nothing"
        );
        copy(f, to.path(), true, &mut out).unwrap();
        let last = lines(&out).pop().unwrap();
        assert_eq!(last["done"], true);
        assert_eq!(
            (last["files"].as_u64(), last["bytes"].as_u64()),
            (Some(2), Some(5))
        );
        let t = to.path();
        assert!(!t.join("old").exists());
        assert_eq!(std::fs::read(t.join("d/h")).unwrap(), b"hello");
        assert_eq!(
            std::fs::metadata(t.join("d/a")).unwrap().ino(),
            std::fs::metadata(t.join("d/h")).unwrap().ino()
        );
        assert_eq!(
            std::fs::metadata(t.join("d/a")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_link(t.join("out")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(std::fs::read_dir(t)
            .unwrap()
            .flatten()
            .all(|e| !is_staging(e.file_name().as_bytes())));
    }

    #[test]
    fn a_diff_lists_added_removed_and_changed_in_path_order() {
        let before = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        let (b, a) = (before.path(), after.path());
        for root in [b, a] {
            std::fs::write(root.join("same"), b"1").unwrap();
            std::fs::create_dir(root.join("d")).unwrap();
        }
        std::fs::write(b.join("d/edited"), b"abc").unwrap();
        std::fs::write(a.join("d/edited"), b"abd").unwrap();
        std::fs::write(b.join("grown"), b"a").unwrap();
        std::fs::write(a.join("grown"), b"ab").unwrap();
        std::fs::create_dir(b.join("gone")).unwrap();
        std::fs::write(b.join("gone/x"), b"x").unwrap();
        std::fs::write(a.join("new"), b"n").unwrap();
        std::os::unix::fs::symlink("same", b.join("l")).unwrap();
        std::os::unix::fs::symlink("new", a.join("l")).unwrap();
        let mut out = Vec::new();
        diff(b, a, 100, &mut out).unwrap();
        let all = lines(&out);
        let shown: Vec<String> = all[..all.len() - 1]
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["change"].as_str().unwrap(),
                    c["path"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "changed /d/edited",
                "removed /gone",
                "removed /gone/x",
                "changed /grown",
                "changed /l",
                "added /new"
            ]
        );
        assert_eq!(all[0]["aspects"], serde_json::json!(["content"]));
        assert_eq!(all[3]["aspects"], serde_json::json!(["size", "content"]));
        assert_eq!(all[4]["aspects"], serde_json::json!(["target"]));
        let done = &all[all.len() - 1]["done"];
        assert_eq!(
            (
                done["added"].as_u64(),
                done["removed"].as_u64(),
                done["changed"].as_u64()
            ),
            (Some(1), Some(2), Some(3))
        );
        // Bounded: the counts go on past the limit.
        let mut out = Vec::new();
        diff(b, a, 2, &mut out).unwrap();
        let all = lines(&out);
        assert_eq!(all.len(), 3);
        assert_eq!(all[2]["done"]["truncated"], true);
        assert_eq!(all[2]["done"]["changed"], 3);
    }
}
