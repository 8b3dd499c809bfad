//! `changeover volume …`: what is in a volume and who uses it, through the
//! volume helper on the environment's own daemon. Names are printed escaped
//! (`\xNN` for bytes that are not text, `\\` for a backslash) and typed the
//! same way.

use std::io::Write;

use changeover_application::volumes;
use changeover_application::Environment;
use changeover_core::volume::{Entry, EntryKind};
use changeover_core::{Problem, ProblemCode};

use crate::print_json;

#[derive(clap::Subcommand)]
pub enum VolumeCommand {
    /// Every volume of the environment.
    Ls(crate::ListArgs),
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
    /// or with --unpack a .tar / .tar.gz's content.
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
    },
    /// A .tar or .tar.gz into a new or empty volume (created when missing).
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
}

pub async fn run(env: &Environment, command: VolumeCommand) -> Result<(), Problem> {
    match command {
        VolumeCommand::Ls(args) => {
            let list = volumes::list(env).await?;
            if args.json {
                return print_json(&list);
            }
            println!("{:<40} {:<10} CREATED", "NAME", "DRIVER");
            for v in list {
                println!(
                    "{:<40} {:<10} {}",
                    v.name,
                    v.driver,
                    v.created_at.unwrap_or_default()
                );
            }
            Ok(())
        }
        VolumeCommand::Inspect { volume, json } => {
            let d = volumes::inspect(env, &volume).await?;
            if json {
                return print_json(&d);
            }
            println!("{} ({})", d.name, d.driver);
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
            let written =
                volumes::download(env, &volume, &path, &output, force, |n| shown.bytes(n)).await?;
            shown.done();
            eprintln!("wrote {}", written.display());
            Ok(())
        }
        VolumeCommand::Export {
            volume,
            output,
            force,
        } => {
            let mut shown = Progress::new();
            let written = volumes::export(env, &volume, &output, force, |n| shown.bytes(n)).await?;
            shown.done();
            eprintln!(
                "exported {volume} to {} (its containers kept running)",
                written.display()
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
