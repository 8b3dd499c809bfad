//! `changeover logs TARGET`: a container's logs, or every container of a
//! service merged (each line marked with its release and slot), following
//! across a rollout with `-f`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use changeover_application::containers::{logs, LogBatch};
use changeover_application::Environment;
use changeover_core::detail::{LogQuery, Target};
use changeover_core::Problem;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// CONTAINER, STACK/SERVICE (every container of it) or STACK/SERVICE/SLOT.
    pub target: String,
    /// Keep following new lines (and, for a service, new containers).
    #[arg(short, long)]
    pub follow: bool,
    /// Lines of history to start with (or "all").
    #[arg(long, default_value = "500")]
    pub tail: String,
    /// Only lines from this long ago on (30s, 10m, 2h, 1d).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Show the daemon's timestamp on each line.
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

pub async fn run(env: &Environment, args: LogsArgs) -> Result<(), Problem> {
    let (tail, all) = if args.tail == "all" {
        (None, true)
    } else {
        let n = args.tail.parse::<u32>().map_err(|_| {
            Problem::new(
                changeover_core::ProblemCode::InvalidTraffic,
                format!(
                    "--tail {:?} is not a number of lines (or \"all\")",
                    args.tail
                ),
            )
        })?;
        (Some(n), false)
    };
    let service = matches!(
        Target::parse(&args.target),
        Ok(Target::Service { slot: None, .. })
    );
    let colour = std::io::stdout().is_terminal();
    let timestamps = args.timestamps;
    let (done, mut ended) = tokio::sync::mpsc::unbounded_channel::<String>();
    let sink = Arc::new(move |b: LogBatch| {
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let (mut out, mut err) = (stdout.lock(), stderr.lock());
        for l in &b.lines {
            let mut text = String::new();
            if service {
                let tag = format!(
                    "r{}/s{}",
                    l.release.map(|r| r.to_string()).unwrap_or("?".into()),
                    l.slot.map(|s| s.to_string()).unwrap_or("?".into())
                );
                if colour {
                    // One colour per release.
                    let c = 31 + l.release.unwrap_or(0) % 6;
                    text.push_str(&format!("\x1b[{c}m{tag:<7}\x1b[0m| "));
                } else {
                    text.push_str(&format!("{tag:<7}| "));
                }
            }
            if timestamps {
                if let Some(t) = &l.time {
                    text.push_str(t);
                    text.push(' ');
                }
            }
            text.push_str(&l.text);
            if let Some(cut) = l.cut {
                text.push_str(&format!(" … ({cut} more bytes cut)"));
            }
            let _ = if l.stderr {
                writeln!(err, "{text}")
            } else {
                writeln!(out, "{text}")
            };
        }
        let _ = out.flush();
        if let Some(why) = b.ended {
            let _ = done.send(why);
        }
    });
    let query = LogQuery {
        follow: args.follow,
        tail,
        all,
        since: args.since.clone(),
    };
    let follow = logs(env, &args.target, query, sink).await?;
    tokio::select! {
        _ = ended.recv() => {}
        _ = tokio::signal::ctrl_c() => follow.stop(),
    }
    Ok(())
}
