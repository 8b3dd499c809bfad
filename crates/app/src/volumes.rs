//! Volumes: what is in them, who uses them, which releases mounted them.
//! Everything goes through the environment's one Docker connection and the
//! volume helper (`changeover_docker::volumes`), never through host paths.

use base64::Engine;
use changeover_core::inventory::Volume;
use changeover_core::volume::{
    check_search_text, preview_kind, unescape, FilePreview, Listing, ReadHead, Search, SizeWalk,
    VolumeDetail, VolumePath, VolumeSizes, VolumeUse, DEFAULT_PAGE, DEFAULT_SEARCH, MAX_PAGE,
    MAX_SEARCH, PREVIEW_BYTES,
};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::volumes as dv;

use crate::environments::Environment;

fn helper_problem(message: String) -> Problem {
    Problem::new(ProblemCode::VolumeHelper, message)
}

/// A volume with who uses it now and its lineage.
pub async fn inspect(env: &Environment, name: &str) -> Result<VolumeDetail, Problem> {
    let docker = env.docker().await?;
    let v = dv::inspect(&docker, name).await?;
    let users = dv::users(&docker, name).await?;
    let lineage = lineage(env, name).await?;
    Ok(VolumeDetail {
        name: v.name,
        driver: v.driver,
        created_at: v.created_at,
        labels: v.labels.into_iter().collect(),
        users,
        lineage,
    })
}

/// The releases whose services mounted `name`, from the service records.
async fn lineage(env: &Environment, name: &str) -> Result<Vec<VolumeUse>, Problem> {
    let mut out = Vec::new();
    for view in crate::services::services(env).await? {
        let record = &view.record;
        for r in &record.releases {
            for m in &r.spec.mounts {
                if m.kind == changeover_core::service::MountKind::Volume
                    && m.docker_volume(&r.spec.stack) == name
                {
                    out.push(VolumeUse {
                        service: view.name.clone(),
                        release: r.number,
                        image: r.image.clone(),
                        deployed_ms: r.created_ms,
                        target: m.target.clone(),
                        current: record.current == Some(r.number),
                    });
                }
            }
        }
    }
    out.sort_by_key(|u| (u.deployed_ms, u.release));
    Ok(out)
}

/// The entries under the folder `path` of `volume` whose names hold
/// `text` (ASCII case ignored), nearest first, at most `limit` of them.
pub async fn search(
    env: &Environment,
    volume: &str,
    path: &str,
    text: &str,
    limit: Option<u32>,
) -> Result<Search, Problem> {
    let path = VolumePath::parse(path)?;
    let text = check_search_text(text)?;
    let limit = limit.unwrap_or(DEFAULT_SEARCH);
    if limit == 0 || limit > MAX_SEARCH {
        return Err(Problem::new(
            ProblemCode::InvalidInput,
            format!("a search lists 1 to {MAX_SEARCH} matches, not {limit}"),
        ));
    }
    let args = [
        "find".to_string(),
        path.to_hex(),
        text.to_string(),
        "--limit".to_string(),
        limit.to_string(),
    ];
    let docker = env.docker().await?;
    let out = dv::ask(&docker, volume, &args, dv::MAX_ANSWER).await?;
    serde_json::from_slice(&out)
        .map_err(|e| helper_problem(format!("the helper's search answer does not read: {e}")))
}

/// The tables of the SQLite file `path` and their row counts, read from
/// its bytes (at most [`MAX_SQLITE_READ`] of them; beyond, not counted).
pub async fn sqlite(
    env: &Environment,
    volume: &str,
    path: &str,
) -> Result<changeover_core::sqlite::SqliteInfo, Problem> {
    use changeover_core::sqlite::{read_sqlite, MAX_SQLITE_READ};
    let shown = VolumePath::parse(path)?.display();
    let (head, bytes) = read(env, volume, path, 0, MAX_SQLITE_READ).await?;
    read_sqlite(&bytes, head.size).map_err(|why| {
        Problem::new(
            ProblemCode::InvalidInput,
            format!("{shown} cannot be read as SQLite: {why}"),
        )
    })
}

/// How long measured sizes are answered again without asking the daemon.
const SIZES_FRESH_MS: i64 = 5 * 60 * 1000;

/// What each volume takes on disk, from the daemon's disk-usage API:
/// measured once and answered from the cache for a few minutes, unless
/// `fresh` asks again. One measurement runs at a time per environment
/// (others wait for its answer).
pub async fn sizes(env: &Environment, fresh: bool) -> Result<VolumeSizes, Problem> {
    let mut cached = env.sizes.lock().await;
    if let Some(c) = cached.as_ref() {
        if !fresh && crate::services::now_ms() - c.measured_ms < SIZES_FRESH_MS {
            return Ok(c.clone());
        }
    }
    let measured = VolumeSizes {
        sizes: dv::volume_sizes(&env.docker().await?).await?,
        measured_ms: crate::services::now_ms(),
    };
    *cached = Some(measured.clone());
    Ok(measured)
}

/// Every volume, from the live inventory.
pub async fn list(env: &Environment) -> Result<Vec<Volume>, Problem> {
    let docker = env.docker().await?;
    Ok(changeover_docker::read::inventory(&docker).await?.volumes)
}

/// One page of the folder `path` (escaped, as typed) in `volume`; `after`
/// is the `next_after` of the page before.
pub async fn files(
    env: &Environment,
    volume: &str,
    path: &str,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<Listing, Problem> {
    let path = VolumePath::parse(path)?;
    let mut args = vec!["list".to_string(), path.to_hex()];
    if let Some(a) = after {
        let raw = unescape(a).map_err(|why| {
            Problem::new(
                ProblemCode::InvalidPath,
                format!("\"{a}\" is not a file name: {why}"),
            )
        })?;
        let name = VolumePath::root()
            .join(&raw)
            .map_err(|why| Problem::new(ProblemCode::InvalidPath, why))?;
        args.extend(["--after".to_string(), name.to_hex()]);
    }
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::new(
            ProblemCode::InvalidPath,
            format!("a page holds 1 to {MAX_PAGE} entries, not {limit}"),
        ));
    }
    args.extend(["--limit".to_string(), limit.to_string()]);
    let docker = env.docker().await?;
    let out = dv::ask(&docker, volume, &args, dv::MAX_ANSWER).await?;
    serde_json::from_slice(&out)
        .map_err(|e| helper_problem(format!("the helper's listing does not read: {e}")))
}

/// Up to `length` bytes of the file `path` from `offset`.
pub async fn read(
    env: &Environment,
    volume: &str,
    path: &str,
    offset: u64,
    length: u64,
) -> Result<(ReadHead, Vec<u8>), Problem> {
    let path = VolumePath::parse(path)?;
    let args = vec![
        "read".to_string(),
        path.to_hex(),
        "--offset".to_string(),
        offset.to_string(),
        "--length".to_string(),
        length.to_string(),
    ];
    let docker = env.docker().await?;
    let out = dv::ask(&docker, volume, &args, dv::MAX_ANSWER).await?;
    let split = out
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| helper_problem("the helper's answer has no head".into()))?;
    let head: ReadHead = serde_json::from_slice(&out[..split])
        .map_err(|e| helper_problem(format!("the helper's answer does not read: {e}")))?;
    let body = out[split + 1..].to_vec();
    if body.len() as u64 != head.length {
        return Err(helper_problem(format!(
            "the helper sent {} bytes of the {} it announced",
            body.len(),
            head.length
        )));
    }
    Ok((head, body))
}

/// The start of a file, as the preview shows it (text up to 1 MB, images,
/// hex for the rest).
pub async fn preview(env: &Environment, volume: &str, path: &str) -> Result<FilePreview, Problem> {
    let (head, bytes) = read(env, volume, path, 0, PREVIEW_BYTES).await?;
    let parsed = VolumePath::parse(path)?;
    let name = parsed.display();
    Ok(FilePreview {
        path: name.clone(),
        size: head.size,
        kind: preview_kind(&name, &bytes),
        cut: head.size > head.length,
        data: base64::engine::general_purpose::STANDARD.encode(&bytes),
    })
}

/// Walks the folder `path` and counts what is in it, telling `progress`
/// about every 200 ms; answers the last count.
pub async fn size(
    env: &Environment,
    volume: &str,
    path: &str,
    mut progress: impl FnMut(&SizeWalk),
) -> Result<SizeWalk, Problem> {
    let path = VolumePath::parse(path)?;
    let docker = env.docker().await?;
    let mut pending = Vec::new();
    let mut last = None;
    dv::ask_streaming(
        &docker,
        volume,
        &["du".to_string(), path.to_hex()],
        |piece| {
            for walk in dv::json_lines::<SizeWalk>(&mut pending, piece, "count", 64 * 1024)? {
                progress(&walk);
                last = Some(walk);
            }
            Ok(())
        },
    )
    .await?;
    last.filter(|w| w.done)
        .ok_or_else(|| helper_problem("the size walk ended before it was done".into()))
}

// ---- transfers ----

/// A file being written where the user asked: in a temporary file beside
/// it until it is complete, then renamed; removed when dropped unfinished.
struct Partial {
    temp: std::path::PathBuf,
    dest: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl Partial {
    fn create(dest: &std::path::Path, replace: bool) -> Result<Self, Problem> {
        let cannot = |e: std::io::Error| {
            Problem::new(
                ProblemCode::CannotWrite,
                format!("cannot write {}: {e}", dest.display()),
            )
        };
        if dest.exists() && !replace {
            return Err(Problem::new(
                ProblemCode::FileExists,
                format!(
                    "{} exists already; choose another name or replace it",
                    dest.display()
                ),
            ));
        }
        if dest.is_dir() {
            return Err(Problem::new(
                ProblemCode::CannotWrite,
                format!("{} is a folder; name the file to write", dest.display()),
            ));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "download".into());
        let temp = dir.join(format!(".{name}.changeover-{}.partial", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(cannot)?;
        Ok(Self {
            temp,
            dest: dest.to_path_buf(),
            file: Some(file),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Problem> {
        use std::io::Write;
        let dest = self.dest.display().to_string();
        self.file
            .as_mut()
            .map(|f| f.write_all(bytes))
            .unwrap_or(Ok(()))
            .map_err(|e| {
                Problem::new(
                    ProblemCode::CannotWrite,
                    format!("cannot write {dest}: {e}"),
                )
            })
    }

    fn finish(mut self) -> Result<std::path::PathBuf, Problem> {
        let cannot = |e: std::io::Error| {
            Problem::new(
                ProblemCode::CannotWrite,
                format!("cannot write {}: {e}", self.dest.display()),
            )
        };
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(cannot)?;
        }
        std::fs::rename(&self.temp, &self.dest).map_err(cannot)?;
        Ok(self.dest.clone())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Whether `dest` names a gzipped tar.
pub fn is_tar_gz(dest: &std::path::Path) -> bool {
    let n = dest.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".tar.gz") || n.ends_with(".tgz")
}

/// Downloads `path` from `volume` to the local file `dest`: a file as it
/// is, or (when `dest` ends in `.tar.gz`) a folder or file as a gzipped
/// tar. `progress` hears the bytes written so far. Answers the file.
pub async fn download(
    env: &Environment,
    volume: &str,
    path: &str,
    dest: &std::path::Path,
    replace: bool,
    mut progress: impl FnMut(u64),
) -> Result<std::path::PathBuf, Problem> {
    let parsed = VolumePath::parse(path)?;
    let docker = env.docker().await?;
    let mut out = Partial::create(dest, replace)?;
    let mut written = 0u64;
    if is_tar_gz(dest) {
        let args = vec!["tar".to_string(), parsed.to_hex(), "--gzip".to_string()];
        dv::ask_streaming(&docker, volume, &args, |piece| {
            out.write(piece)?;
            written += piece.len() as u64;
            progress(written);
            Ok(())
        })
        .await?;
    } else {
        let args = vec![
            "read".to_string(),
            parsed.to_hex(),
            "--length".to_string(),
            u64::MAX.to_string(),
        ];
        let mut head: Option<Vec<u8>> = Some(Vec::new());
        dv::ask_streaming(&docker, volume, &args, |piece| {
            let mut body = piece;
            if let Some(h) = head.as_mut() {
                match piece.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        h.extend_from_slice(&piece[..i]);
                        head = None;
                        body = &piece[i + 1..];
                    }
                    None => {
                        h.extend_from_slice(piece);
                        if h.len() > 4096 {
                            return Err(helper_problem("the helper's answer has no head".into()));
                        }
                        return Ok(());
                    }
                }
            }
            out.write(body)?;
            written += body.len() as u64;
            progress(written);
            Ok(())
        })
        .await
        .map_err(|p| {
            if p.code == ProblemCode::NoSuchPath && p.message.ends_with("is not a file") {
                Problem::new(
                    ProblemCode::NoSuchPath,
                    format!(
                        "{} is a folder: download it as an archive, to a file named *.tar.gz",
                        parsed.display()
                    ),
                )
            } else {
                p
            }
        })?;
    }
    out.finish()
}

/// How much an archive may unpack to: generous for real data (a database
/// of zeros compresses well), bounded for a bomb.
fn unpack_bound(archive_bytes: u64) -> u64 {
    archive_bytes.saturating_mul(200).max(1 << 30)
}

pub use changeover_core::volume::Unpacked;

/// How an archive goes into a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Into {
    /// The folder must be empty.
    Empty,
    /// What the folder held goes.
    Replace,
    /// Entries of the same name are replaced; the rest stays.
    Merge,
}

async fn unpack_stream(
    env: &Environment,
    volume: &str,
    path: &VolumePath,
    input: dv::Input,
    bound: u64,
    into: Into,
) -> Result<Unpacked, Problem> {
    let docker = env.docker().await?;
    let mode = match into {
        Into::Empty => "empty",
        Into::Replace => "replace",
        Into::Merge => "merge",
    };
    let args = vec![
        "untar".to_string(),
        path.to_hex(),
        "--mode".to_string(),
        mode.to_string(),
        "--max-bytes".to_string(),
        bound.to_string(),
    ];
    let mut out = Vec::new();
    dv::ask_writing(&docker, volume, &args, input, |piece| {
        if out.len() + piece.len() > 64 * 1024 {
            return Err(helper_problem("the helper's answer is too long".into()));
        }
        out.extend_from_slice(piece);
        Ok(())
    })
    .await?;
    serde_json::from_slice(&out)
        .map_err(|e| helper_problem(format!("the helper's summary does not read: {e}")))
}

/// An archive on its way to the helper: a tar (gzipped or not) as it is
/// in the file, or a `.zip` turned into a tar on a thread of its own.
struct Archive {
    input: dv::Input,
    /// The file's length, which bounds what it may unpack to.
    len: u64,
    /// The zip's conversion, whose error says more than the helper's
    /// "the tar ended early".
    converter: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

async fn open_archive(file: &std::path::Path) -> Result<Archive, Problem> {
    let cannot = |e: std::io::Error| {
        Problem::new(
            ProblemCode::InvalidArchive,
            format!("cannot read {}: {e}", file.display()),
        )
    };
    let mut f = std::fs::File::open(file).map_err(cannot)?;
    let len = f.metadata().map_err(cannot)?.len();
    let mut head = [0u8; 4];
    let n = std::io::Read::read(&mut f, &mut head).map_err(cannot)?;
    std::io::Seek::rewind(&mut f).map_err(cannot)?;
    if !crate::zip_tar::is_zip(&head[..n]) {
        return Ok(Archive {
            input: Box::pin(tokio::fs::File::from_std(f)),
            len,
            converter: None,
        });
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| helper_problem(format!("cannot read the .zip: {e}")))?;
    let bound = unpack_bound(len);
    let converter = tokio::task::spawn_blocking(move || {
        crate::zip_tar::zip_to_tar(
            std::io::BufReader::new(f),
            std::io::BufWriter::new(theirs),
            bound,
        )
    });
    ours.set_nonblocking(true)
        .map_err(|e| helper_problem(format!("cannot read the .zip: {e}")))?;
    let input: dv::Input = Box::pin(
        tokio::net::UnixStream::from_std(ours)
            .map_err(|e| helper_problem(format!("cannot read the .zip: {e}")))?,
    );
    Ok(Archive {
        input,
        len,
        converter: Some(converter),
    })
}

/// Unpacks `archive` into the folder `path` of `volume`.
async fn unpack_archive(
    env: &Environment,
    volume: &str,
    path: &VolumePath,
    archive: Archive,
    into: Into,
) -> Result<Unpacked, Problem> {
    let result = unpack_stream(
        env,
        volume,
        path,
        archive.input,
        unpack_bound(archive.len),
        into,
    )
    .await;
    if let Some(converter) = archive.converter {
        let converted = converter
            .await
            .map_err(|e| helper_problem(format!("reading the .zip stopped: {e}")))?;
        if let Err(message) = converted {
            return Err(Problem::new(ProblemCode::InvalidArchive, message));
        }
    }
    result
}

/// Imports a `.tar`, `.tar.gz` or `.zip` file into `volume`, created when it does
/// not exist; a volume that holds anything only with `replace`.
pub async fn import(
    env: &Environment,
    file: &std::path::Path,
    volume: &str,
    replace: bool,
) -> Result<Unpacked, Problem> {
    let archive = open_archive(file).await?;
    let docker = env.docker().await?;
    let created = dv::ensure_volume(&docker, volume).await?;
    let into = if replace { Into::Replace } else { Into::Empty };
    let result = unpack_archive(env, volume, &VolumePath::root(), archive, into).await;
    if result.is_err() && created {
        dv::remove_created_volume(&docker, volume).await;
    }
    result.map_err(|p| {
            if p.code == ProblemCode::NotEmpty {
                Problem::new(
                    ProblemCode::NotEmpty,
                    format!("volume {volume} is not empty: import into a new or empty volume, or replace what it holds (--replace)"),
                )
            } else {
                p
            }
        })
}

/// Exports `volume` to the local file `dest` (`.tar.gz`).
pub async fn export(
    env: &Environment,
    volume: &str,
    dest: &std::path::Path,
    replace: bool,
    pause: bool,
    progress: impl FnMut(u64),
) -> Result<std::path::PathBuf, Problem> {
    if !is_tar_gz(dest) {
        return Err(Problem::new(
            ProblemCode::CannotWrite,
            format!(
                "{} must end in .tar.gz: a volume is exported as a gzipped tar",
                dest.display()
            ),
        ));
    }
    crate::snapshots::paused(
        &env.docker().await?,
        volume,
        pause,
        download(env, volume, "/", dest, replace, progress),
    )
    .await
}

/// Puts the local `source` into the folder `path` of `volume`: a file or
/// folder under its own name, or with `unpack` an archive's content.
/// Entries of the same name are replaced; nothing else changes, and a
/// failed upload changes nothing.
pub async fn put(
    env: &Environment,
    volume: &str,
    path: &str,
    source: &std::path::Path,
    unpack: bool,
) -> Result<Unpacked, Problem> {
    let folder = VolumePath::parse(path)?;
    if unpack {
        let archive = open_archive(source).await?;
        return unpack_archive(env, volume, &folder, archive, Into::Merge).await;
    }
    let meta = std::fs::symlink_metadata(source).map_err(|e| {
        Problem::new(
            ProblemCode::NoSuchPath,
            format!("cannot read {}: {e}", source.display()),
        )
    })?;
    let name = source
        .file_name()
        .ok_or_else(|| {
            Problem::new(
                ProblemCode::NoSuchPath,
                format!("{} names no file or folder", source.display()),
            )
        })?
        .to_owned();
    // Packed on a thread of its own into one end of a socket pair, while the
    // other end goes to the helper.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| helper_problem(format!("cannot pack {}: {e}", source.display())))?;
    let source_owned = source.to_path_buf();
    let packer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(theirs));
        tar.follow_symlinks(false);
        if meta.is_dir() {
            tar.append_dir_all(&name, &source_owned)?;
        } else {
            tar.append_path_with_name(&source_owned, &name)?;
        }
        let mut inner = tar.into_inner()?;
        std::io::Write::flush(&mut inner)?;
        Ok(meta.len())
    });
    ours.set_nonblocking(true)
        .map_err(|e| helper_problem(format!("cannot pack: {e}")))?;
    let input: dv::Input = Box::pin(
        tokio::net::UnixStream::from_std(ours)
            .map_err(|e| helper_problem(format!("cannot pack: {e}")))?,
    );
    let sent = unpack_stream(env, volume, &folder, input, u64::MAX / 2, Into::Merge).await;
    let packed = packer
        .await
        .map_err(|e| helper_problem(format!("packing stopped: {e}")))?;
    let summary = sent?;
    packed.map_err(|e| {
        Problem::new(
            ProblemCode::NoSuchPath,
            format!("cannot read {}: {e}", source.display()),
        )
    })?;
    Ok(summary)
}
