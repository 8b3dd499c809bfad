//! `changeover volume …`: what is in a volume and who uses it, through the
//! volume helper on the environment's own daemon. Names are printed escaped
//! (`\xNN` for bytes that are not text, `\\` for a backslash) and typed the
//! same way.

use std::io::Write;

use changeover_application::Environment;
use changeover_application::{snapshots, volumes};
use changeover_core::snapshot::{snapshot_name, Change, Copied, SnapshotReason};
use changeover_core::volume::{Entry, EntryKind};
use changeover_core::{Problem, ProblemCode};

use crate::print_json;

#[derive(clap::Subcommand)]
pub enum VolumeCommand {
    /// Every volume of the environment.
    Ls {
        #[arg(long)]
        json: bool,
        /// Also what each takes on disk, from the daemon's disk-usage API
        /// (it walks every volume: slow on a big host).
        #[arg(long)]
        size: bool,
    },
    /// A volume: driver, labels, the containers that use it now and the
    /// releases that mounted it.
    Inspect {
        volume: String,
        #[arg(long)]
        json: bool,
    },
    /// One page of a folder (default: the volume's root), sorted by name.
    Files {
        volume: String,
        #[arg(default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
        /// Entries on the page (1 to 5000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start after this name (the last one of the page before).
        #[arg(long, value_name = "NAME")]
        after: Option<String>,
    },
    /// Entries under a folder (default: the whole volume) whose names hold
    /// TEXT, ASCII case ignored; nearest first.
    Find {
        volume: String,
        text: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
        /// At most this many matches (1 to 10000; default 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// The tables of a SQLite file and how many rows each holds, read from
    /// the file (nothing of it is run).
    Tables {
        volume: String,
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// A file's bytes, to stdout.
    Cat {
        volume: String,
        path: String,
        /// At most this many bytes (default: the whole file, up to 64 MiB).
        #[arg(long, value_name = "N")]
        bytes: Option<u64>,
    },
    /// Download a file, or a folder (or file) as a gzipped tar when DEST ends
    /// in .tar.gz.
    Get {
        volume: String,
        path: String,
        #[arg(short = 'o', long = "output", value_name = "DEST")]
        output: std::path::PathBuf,
        /// Replace DEST when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Upload a file or folder into the folder PATH (same names replaced),
    /// or with --unpack the content of a .tar, .tar.gz or .zip.
    Put {
        volume: String,
        path: String,
        source: std::path::PathBuf,
        #[arg(long)]
        unpack: bool,
    },
    /// The whole volume as a .tar.gz file (its containers keep running).
    Export {
        volume: String,
        #[arg(short = 'o', long = "output", value_name = "FILE.tar.gz")]
        output: std::path::PathBuf,
        #[arg(long)]
        force: bool,
        /// Pause the containers that write to it while copying, for a
        /// consistent copy (by default they keep running).
        #[arg(long)]
        pause: bool,
    },
    /// A .tar, .tar.gz or .zip into a new or empty volume (created when missing).
    Import {
        file: std::path::PathBuf,
        volume: String,
        /// Replace what a volume that is not empty holds.
        #[arg(long)]
        replace: bool,
    },
    /// What a folder holds in all (default: the whole volume), counted now.
    Du {
        volume: String,
        #[arg(default_value = "/")]
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// A copy of the volume into the new volume NEW (its containers keep
    /// running).
    Clone {
        volume: String,
        new: String,
        /// Pause the containers that write to it while copying, for a
        /// consistent copy (by default they keep running).
        #[arg(long)]
        pause: bool,
    },
    /// A snapshot of the volume: a new volume holding a copy of it, named
    /// after it and the time (its containers keep running).
    Snapshot {
        volume: String,
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
        /// Pause the containers that write to it while copying, for a
        /// consistent copy (by default they keep running).
        #[arg(long)]
        pause: bool,
    },
    /// The snapshots of a volume, newest first.
    Snapshots {
        volume: String,
        #[arg(long)]
        json: bool,
    },
    /// What changed from SNAPSHOT to SNAPSHOT2, or to the volume as it is
    /// now.
    Diff {
        volume: String,
        snapshot: String,
        snapshot2: Option<String>,
        #[arg(long)]
        json: bool,
        /// Also the changed lines of this text file.
        #[arg(long, value_name = "PATH")]
        lines: Option<String>,
    },
    /// Put a snapshot back into its volume: its current content is
    /// snapshotted first, and the containers that use it are stopped for
    /// the copy and started again.
    Restore {
        volume: String,
        snapshot: String,
        /// Do it without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Remove a volume (or a snapshot); refused while a container mounts it.
    Rm {
        volume: String,
        /// Do it without asking.
        #[arg(long)]
        yes: bool,
    },
}

/// Asks on the terminal; without one, refuses with what `--yes` would do.
pub fn confirm(question: &str) -> Result<(), Problem> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Problem::new(
            ProblemCode::InvalidInput,
            format!("{question}\nnothing was changed; run it again with --yes to confirm"),
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemCode::InvalidInput,
            "not confirmed; nothing was changed",
        ))
    }
}

fn copied_line(c: &Copied) -> String {
    let mut s = format!(
        "{} files, {} folders, {} links ({})",
        c.files,
        c.dirs,
        c.links,
        human(c.bytes)
    );
    if c.skipped > 0 {
        s.push_str(&format!(
            "; {} sockets, pipes or devices skipped",
            c.skipped
        ));
    }
    s
}

fn time_of(ms: i64) -> String {
    snapshot_name("", ms, 0)
        .trim_start_matches(".snapshot-")
        .to_string()
}

/// Runs a transfer until it is done or Ctrl-C is pressed. Stopped, its
/// future is dropped, so what it held goes with it (the partial file of a
/// download, the paused state of containers): a killed process would
/// leave them.
async fn interruptible<T>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, Problem>>,
) -> Result<T, Problem> {
    tokio::select! {
        out = work => out,
        _ = tokio::signal::ctrl_c() => Err(Problem::new(
            ProblemCode::Cancelled,
            format!("{what} was stopped (Ctrl-C): nothing was written"),
        )),
    }
}

/// What the containers that use the volume did while it was copied.
fn while_copying(pause: bool) -> &'static str {
    if pause {
        "(its containers were paused while copying)"
    } else {
        "(its containers kept running; --pause for a consistent copy)"
    }
}

async fn run_snapshots(env: &Environment, command: VolumeCommand) -> Result<(), Problem> {
    match command {
        VolumeCommand::Clone { volume, new, pause } => {
            let c = snapshots::clone(env, &volume, &new, pause, |_| {}).await?;
            eprintln!(
                "cloned {volume} into {new}: {} {}",
                copied_line(&c),
                while_copying(pause)
            );
        }
        VolumeCommand::Snapshot {
            volume,
            note,
            pause,
        } => {
            let (s, c) = snapshots::snapshot(env, &volume, &note, pause, |_| {}).await?;
            println!("{}", s.name);
            eprintln!(
                "snapshot of {volume}: {} {}",
                copied_line(&c),
                while_copying(pause)
            );
        }
        VolumeCommand::Snapshots { volume, json } => {
            let list = snapshots::snapshots(env, &volume).await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<56} {:<16} {:<15} NOTE",
                "SNAPSHOT", "TAKEN (UTC)", "WHY"
            );
            for s in list {
                let why = match (s.reason, s.before_release) {
                    (SnapshotReason::BeforeDeploy, Some(r)) => format!("before r{r}"),
                    (r, _) => r.as_str().to_string(),
                };
                println!(
                    "{:<56} {:<16} {:<15} {}",
                    s.name,
                    time_of(s.taken_ms),
                    why,
                    s.note.unwrap_or_default()
                );
            }
        }
        VolumeCommand::Diff {
            volume,
            snapshot,
            snapshot2,
            json,
            lines,
        } => {
            let d = snapshots::diff(env, &volume, &snapshot, snapshot2.as_deref()).await?;
            let text = match &lines {
                Some(p) => Some(snapshots::text_diff(env, &d.before, &d.after, p).await?),
                None => None,
            };
            if json {
                return match text {
                    Some(t) => print_json(&serde_json::json!({"diff": d, "lines": t})),
                    None => print_json(&d),
                };
            }
            for c in &d.changes {
                let mark = match c.change {
                    Change::Added => '+',
                    Change::Removed => '-',
                    Change::Changed => '~',
                };
                let aspects: Vec<String> = c
                    .aspects
                    .iter()
                    .map(|a| format!("{a:?}").to_lowercase())
                    .collect();
                let slash = if c.kind == EntryKind::Dir { "/" } else { "" };
                if aspects.is_empty() {
                    println!("{mark} {}{slash}", c.path);
                } else {
                    println!("{mark} {}{slash}  ({})", c.path, aspects.join(", "));
                }
            }
            let n = &d.counts;
            eprintln!(
                "{} -> {}: {} added, {} removed, {} changed, {} unchanged{}",
                d.before,
                d.after,
                n.added,
                n.removed,
                n.changed,
                n.unchanged,
                if n.truncated {
                    " (list cut; the counts are complete)"
                } else {
                    ""
                }
            );
            if let Some(t) = text {
                match &t.not_shown {
                    Some(why) => println!("{}: {why}", t.path),
                    None => {
                        println!("--- {}:{}\n+++ {}:{}", d.before, t.path, d.after, t.path);
                        for h in &t.hunks {
                            let first = h.first();
                            println!(
                                "@@ -{} +{} @@",
                                first.and_then(|l| l.before).unwrap_or(0),
                                first.and_then(|l| l.after).unwrap_or(0)
                            );
                            for l in h {
                                println!("{}{}", l.tag, l.text);
                            }
                        }
                    }
                }
            }
        }
        VolumeCommand::Restore {
            volume,
            snapshot,
            yes,
        } => {
            let stops = snapshots::restore_stops(env, &volume).await?;
            if !yes {
                let who = if stops.is_empty() {
                    "no container runs with it".to_string()
                } else {
                    format!(
                        "these containers are stopped for the copy and started again: {}",
                        stops
                            .iter()
                            .map(|u| u.container.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                confirm(&format!(
                    "restore {volume} from {snapshot}? Its current content is snapshotted first; {who}."
                ))?;
            }
            let r = snapshots::restore(env, &volume, &snapshot, |_| {}).await?;
            eprintln!(
                "restored {volume} from {snapshot}: {}; stopped and started again: {}; undo with: changeover volume restore {volume} {}",
                copied_line(&r.copied),
                if r.stopped.is_empty() { "none".to_string() } else { r.stopped.join(", ") },
                r.undo.name
            );
        }
        VolumeCommand::Rm { volume, yes } => {
            if !yes {
                confirm(&format!(
                    "remove volume {volume} and everything in it? This cannot be undone."
                ))?;
            }
            snapshots::remove(env, &volume).await?;
            eprintln!("removed volume {volume}");
        }
        _ => {}
    }
    Ok(())
}

pub async fn run(env: &Environment, command: VolumeCommand) -> Result<(), Problem> {
    match command {
        c @ (VolumeCommand::Clone { .. }
        | VolumeCommand::Snapshot { .. }
        | VolumeCommand::Snapshots { .. }
        | VolumeCommand::Diff { .. }
        | VolumeCommand::Restore { .. }
        | VolumeCommand::Rm { .. }) => run_snapshots(env, c).await,
        VolumeCommand::Ls { json, size } => {
            let list = volumes::list(env).await?;
            let sizes = match size {
                true => Some(volumes::sizes(env, true).await?.sizes),
                false => None,
            };
            let size_of = |name: &str| sizes.as_ref().and_then(|s| s.get(name).copied().flatten());
            if json {
                #[derive(serde::Serialize)]
                struct Row<'a> {
                    #[serde(flatten)]
                    volume: &'a changeover_core::inventory::Volume,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    size: Option<Option<u64>>,
                }
                let rows: Vec<Row> = list
                    .iter()
                    .map(|v| Row {
                        volume: v,
                        size: sizes.as_ref().map(|_| size_of(&v.name)),
                    })
                    .collect();
                return print_json(&rows);
            }
            let size_col = |name: &str| match (&sizes, size_of(name)) {
                (None, _) => String::new(),
                (Some(_), Some(b)) => format!("{:>10} ", human(b)),
                (Some(_), None) => format!("{:>10} ", "unknown"),
            };
            let head = if sizes.is_some() {
                format!("{:>10} ", "SIZE")
            } else {
                String::new()
            };
            println!("{:<40} {:<10} {head}CREATED", "NAME", "DRIVER");
            for v in &list {
                println!(
                    "{:<40} {:<10} {}{}",
                    v.name,
                    v.driver,
                    size_col(&v.name),
                    v.created_at.clone().unwrap_or_default()
                );
            }
            Ok(())
        }
        VolumeCommand::Inspect { volume, json } => {
            let d = volumes::inspect(env, &volume).await?;
            let size = volumes::sizes(env, true)
                .await?
                .sizes
                .get(&volume)
                .copied()
                .flatten();
            if json {
                #[derive(serde::Serialize)]
                struct Inspected {
                    #[serde(flatten)]
                    detail: changeover_core::volume::VolumeDetail,
                    /// Bytes on disk; null when the driver reports none.
                    size: Option<u64>,
                }
                return print_json(&Inspected { detail: d, size });
            }
            println!("{} ({})", d.name, d.driver);
            match size {
                Some(b) => println!("size      {} ({b} bytes)", human(b)),
                None => println!("size      unknown (its driver reports none)"),
            }
            if let Some(c) = &d.created_at {
                println!("created   {c}");
            }
            for (k, v) in &d.labels {
                println!("label     {k}={v}");
            }
            if d.users.is_empty() {
                println!("used by   no container");
            }
            for u in &d.users {
                println!(
                    "used by   {} at {}{}{}",
                    u.container,
                    u.target,
                    if u.read_only { " (read-only)" } else { "" },
                    if u.running { "" } else { ", not running" }
                );
            }
            for l in &d.lineage {
                println!(
                    "mounted   by {} release {} ({}) at {}{}",
                    l.service,
                    l.release,
                    l.image,
                    l.target,
                    if l.current { ", current" } else { "" }
                );
            }
            Ok(())
        }
        VolumeCommand::Tables { volume, path, json } => {
            let info = volumes::sqlite(env, &volume, &path).await?;
            if json {
                return print_json(&info);
            }
            for t in &info.tables {
                let rows = match (t.kind.as_str(), t.rows) {
                    ("view", _) => "view".to_string(),
                    (_, Some(n)) => format!("{n} rows"),
                    (_, None) => "not counted".to_string(),
                };
                println!("{:<40} {rows}", t.name);
            }
            eprintln!(
                "{} tables, {} indexes; {} pages of {} bytes, {}{}",
                info.tables.iter().filter(|t| t.kind == "table").count(),
                info.indexes.len(),
                info.pages,
                info.page_size,
                info.encoding,
                if info.cut {
                    "; only its first 64 MiB were read"
                } else {
                    ""
                }
            );
            Ok(())
        }
        VolumeCommand::Find {
            volume,
            text,
            path,
            json,
            limit,
        } => {
            let found = volumes::search(env, &volume, &path, &text, limit).await?;
            if json {
                return print_json(&found);
            }
            for f in &found.matches {
                let dir = if f.dir == "/" { "" } else { f.dir.as_str() };
                let slash = if f.entry.kind == EntryKind::Dir {
                    "/"
                } else {
                    ""
                };
                println!("{dir}/{}{slash}", f.entry.name);
            }
            eprintln!(
                "{} found among {} entries{}{}",
                found.matches.len(),
                found.searched,
                if found.truncated {
                    "; there are more (--limit)"
                } else {
                    ""
                },
                if found.unreadable > 0 {
                    format!("; {} folders could not be read", found.unreadable)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        VolumeCommand::Files {
            volume,
            path,
            json,
            limit,
            after,
        } => {
            let page = volumes::files(env, &volume, &path, after.as_deref(), limit).await?;
            if json {
                return print_json(&page);
            }
            for e in &page.entries {
                println!("{}", line(e));
            }
            match &page.next_after {
                Some(next) => eprintln!(
                    "{} of {} entries; the next page: --after '{}'",
                    page.entries.len(),
                    page.total,
                    next.replace('\'', "'\\''")
                ),
                None => eprintln!("{} entries", page.total),
            }
            Ok(())
        }
        VolumeCommand::Cat {
            volume,
            path,
            bytes,
        } => {
            let length = bytes.unwrap_or(64 * 1024 * 1024);
            let (head, body) = volumes::read(env, &volume, &path, 0, length).await?;
            std::io::stdout().write_all(&body).map_err(|e| {
                Problem::new(ProblemCode::CannotWrite, format!("cannot write: {e}"))
            })?;
            if head.length < head.size {
                eprintln!(
                    "changeover: showed {} of the file's {} bytes",
                    head.length, head.size
                );
            }
            Ok(())
        }
        VolumeCommand::Get {
            volume,
            path,
            output,
            force,
        } => {
            let mut shown = Progress::new();
            let written = interruptible(
                "the download",
                volumes::download(env, &volume, &path, &output, force, |n| shown.bytes(n)),
            )
            .await?;
            shown.done();
            eprintln!("wrote {}", written.display());
            Ok(())
        }
        VolumeCommand::Export {
            volume,
            output,
            force,
            pause,
        } => {
            let mut shown = Progress::new();
            let written = interruptible(
                "the export",
                volumes::export(env, &volume, &output, force, pause, |n| shown.bytes(n)),
            )
            .await?;
            shown.done();
            eprintln!(
                "exported {volume} to {} {}",
                written.display(),
                while_copying(pause)
            );
            Ok(())
        }
        VolumeCommand::Put {
            volume,
            path,
            source,
            unpack,
        } => {
            let u = volumes::put(env, &volume, &path, &source, unpack).await?;
            eprintln!(
                "put {} files, {} folders, {} links ({}) into {volume}:{path}",
                u.files,
                u.dirs,
                u.links,
                human(u.bytes)
            );
            Ok(())
        }
        VolumeCommand::Import {
            file,
            volume,
            replace,
        } => {
            let u = volumes::import(env, &file, &volume, replace).await?;
            eprintln!(
                "imported {} files, {} folders, {} links ({}) into {volume}",
                u.files,
                u.dirs,
                u.links,
                human(u.bytes)
            );
            Ok(())
        }
        VolumeCommand::Du { volume, path, json } => {
            let walk = volumes::size(env, &volume, &path, |_| {}).await?;
            if json {
                return print_json(&walk);
            }
            println!(
                "{} in {} files and {} folders ({} on disk){}",
                human(walk.bytes),
                walk.files,
                walk.dirs,
                human(walk.disk_bytes),
                if walk.unreadable > 0 {
                    format!("; {} entries could not be read", walk.unreadable)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}

fn line(e: &Entry) -> String {
    let kind = match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::File => '-',
        EntryKind::Symlink => 'l',
        EntryKind::Other => '?',
    };
    let mut name = e.name.clone();
    if e.kind == EntryKind::Dir {
        name.push('/');
    }
    if let Some(t) = &e.target {
        name.push_str(&format!(" -> {t}"));
        if e.target_outside {
            name.push_str(" (outside the volume)");
        }
    }
    format!(
        "{kind}{:04o} {:>6}:{:<6} {:>10}  {name}",
        e.mode, e.uid, e.gid, e.size
    )
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Bytes so far on stderr, twice a second, when it is a terminal.
struct Progress {
    shown: std::time::Instant,
    tty: bool,
    last: u64,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            shown: std::time::Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last: 0,
        }
    }

    fn bytes(&mut self, n: u64) {
        self.last = n;
        if self.tty && self.shown.elapsed() >= std::time::Duration::from_millis(500) {
            self.shown = std::time::Instant::now();
            eprint!("\r{} so far", human(n));
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!("\r{}        ", human(self.last));
        }
    }
}
