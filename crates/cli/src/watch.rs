//! `changeover watch`: automatic redeploys (`x-changeover.autoredeploy`) of
//! the environment's watched services — a pass every `check_every` (the
//! shortest of them), and at once on the daemon's image events when a
//! service watches its local tags. `--once`: one pass, then exit (for cron
//! and CI); the exit code is 1 when a new image failed to go out.
//!
//! `--webhook ADDR --webhook-token-file FILE`: a POST to
//! `http://ADDR/hooks/TOKEN` (a registry's notifications, Docker Hub's
//! webhooks) starts a pass at once. The token is read from the file and
//! never printed; a request without it gets a plain 404, its body is read
//! up to 1 MiB and ignored, a head over 16 KiB or slower than 10 s is cut
//! off, and at most 64 requests are served at once.
//!
//! `--install [--yes] [--with-logins] [--socket PATH]`: the watcher as a container on the
//! environment (`changeover_application::watcher`), so redeploys happen
//! with no laptop open. It mounts the Docker socket, so it says so and
//! asks first. `--webhook ADDR` then publishes the webhook on the daemon's
//! host at ADDR. `--status`, `--uninstall`.

use std::time::Duration;

use changeover_application::redeploy::{self, RedeployCheck, RedeployOutcome};
use changeover_application::Environment;
use changeover_core::Problem;

#[derive(clap::Args)]
pub struct WatchArgs {
    /// Only these stacks or STACK/SERVICE names (default: every watched
    /// service of the environment).
    names: Vec<String>,
    /// One pass over every watched service, then exit.
    #[arg(long)]
    once: bool,
    /// One JSON line per service per pass.
    #[arg(long)]
    json: bool,
    /// Also listen here (e.g. 0.0.0.0:9911) for webhooks: a POST to
    /// /hooks/TOKEN starts a pass at once.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "webhook_token_file",
        conflicts_with = "once"
    )]
    webhook: Option<String>,
    /// The file holding the webhook's secret token (16 or more letters,
    /// digits, '-' or '_').
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_token_file: Option<std::path::PathBuf>,
    /// Run the watcher as a container on the environment (it mounts the
    /// Docker socket; asks first).
    #[arg(long, conflicts_with_all = ["once", "json", "uninstall", "status"])]
    install: bool,
    /// Install without asking.
    #[arg(long, requires = "install")]
    yes: bool,
    /// Copy the logins of the watched services' registries into the
    /// watcher container (they otherwise stay in this machine's keyring).
    #[arg(long, requires = "install")]
    with_logins: bool,
    /// The daemon's socket on its host, for --install (default: the
    /// environment's Unix socket, else /var/run/docker.sock).
    #[arg(long, value_name = "PATH", requires = "install")]
    socket: Option<String>,
    /// Remove the installed watcher.
    #[arg(long, conflicts_with_all = ["once", "json", "webhook", "status"])]
    uninstall: bool,
    /// Whether a watcher is installed, and its last lines.
    #[arg(long, conflicts_with_all = ["once", "json", "webhook"])]
    status: bool,
}

/// `--install`, `--uninstall`, `--status`.
async fn installed(env: &Environment, args: &WatchArgs) -> Result<(), Problem> {
    use changeover_application::watcher;
    if args.uninstall {
        watcher::uninstall(env).await?;
        println!("the watcher is removed from {}", env.spec.name);
        return Ok(());
    }
    if args.status {
        match watcher::status(env).await? {
            None => println!("no watcher is installed on {}", env.spec.name),
            Some(w) => {
                println!(
                    "{} on {}: {} since {} ({})",
                    changeover_docker::watcher::CONTAINER,
                    env.spec.name,
                    w.state,
                    w.started_at.as_deref().unwrap_or("-"),
                    w.image
                );
                let docker = env.docker().await?;
                print!("{}", changeover_docker::watcher::output(&docker, 10).await);
            }
        }
        return Ok(());
    }
    let webhook = match (&args.webhook, &args.webhook_token_file) {
        (Some(addr), Some(file)) => {
            let parsed: std::net::SocketAddr = addr.parse().map_err(|_| {
                Problem::new(
                    changeover_core::ProblemCode::InvalidInput,
                    format!("--webhook {addr:?} must be an address and port, e.g. 0.0.0.0:9911"),
                )
            })?;
            Some((parsed, read_token(file)?))
        }
        _ => None,
    };
    let options = watcher::InstallOptions {
        names: args.names.clone(),
        socket: args.socket.clone(),
        webhook,
        copy_logins: args.with_logins,
    };
    let plan = watcher::plan(env, &options).await?;
    if !args.yes {
        crate::volume::confirm(&format!(
            "{}
Install it?",
            plan.describe()
        ))?;
    } else {
        eprintln!("{}", plan.describe());
    }
    let (_, w) = watcher::install(env, &options).await?;
    println!(
        "the watcher runs on {} as {} ({}); `changeover watch --status` shows what it does",
        plan.environment,
        changeover_docker::watcher::CONTAINER,
        w.image
    );
    Ok(())
}

/// The webhook's token, checked: long enough to be a secret, and safe in
/// a URL path.
fn read_token(path: &std::path::Path) -> Result<String, Problem> {
    let bad = |why: String| Problem::new(changeover_core::ProblemCode::InvalidInput, why);
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(format!(
            "cannot read the webhook token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.len() < 16
        || token.len() > 256
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(format!(
            "the webhook token in {} must be 16 to 256 letters, digits, '-' or '_'",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Equal in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Serves the webhook until the process ends: a POST with the token wakes
/// `hit`; anything else is answered and changes nothing.
async fn serve_webhook(
    listener: tokio::net::TcpListener,
    token: String,
    hit: std::sync::Arc<tokio::sync::Notify>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let token = std::sync::Arc::new(token);
    // At most this many requests at once; more are closed unanswered.
    let room = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (token, hit) = (token.clone(), hit.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let (read, mut write) = stream.into_split();
                let mut reader = tokio::io::BufReader::new(read.take(16 * 1024));
                let mut request = String::new();
                reader.read_line(&mut request).await.ok()?;
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.ok()? == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut parts = request.split_whitespace();
                let (method, path) = (parts.next()?, parts.next()?);
                let given = path.strip_prefix("/hooks/").unwrap_or("");
                let status = if !same(given.as_bytes(), token.as_bytes()) {
                    "404 Not Found"
                } else if method != "POST" {
                    "405 Method Not Allowed"
                } else {
                    hit.notify_one();
                    "202 Accepted"
                };
                // The body (the registry's notice) is read and not kept.
                let buffered = reader.buffer().len();
                let rest = length.min(1024 * 1024).saturating_sub(buffered);
                let mut body = reader.into_inner().into_inner().take(rest as u64);
                let mut sink = [0u8; 8192];
                while body.read(&mut sink).await.ok()? > 0 {}
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{status}\n",
                    status.len() + 1
                );
                write.write_all(answer.as_bytes()).await.ok()
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), exchange).await;
        });
    }
}

fn print(c: &RedeployCheck, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(c) {
            println!("{line}");
        }
        return;
    }
    let what = match &c.outcome {
        RedeployOutcome::UpToDate => format!("up to date ({})", c.current),
        RedeployOutcome::Redeployed {
            image,
            release,
            why,
        } => format!(
            "redeployed {image}{}: {why}",
            release
                .map(|r| format!(" as release {r}"))
                .unwrap_or_default()
        ),
        RedeployOutcome::Failed { image, reason } => {
            format!(
                "{image} did not go out, {} keeps serving: {reason}",
                c.current
            )
        }
        RedeployOutcome::Skipped { reason } => format!("skipped: {reason}"),
    };
    println!("{}: {what}", c.service);
}

/// Runs the watcher; `Ok(true)` when a new image failed to go out.
pub async fn run(env: &Environment, args: WatchArgs) -> Result<bool, Problem> {
    if args.install || args.uninstall || args.status {
        installed(env, &args).await?;
        return Ok(false);
    }
    let events = if args.json {
        std::sync::Arc::new(|_| {}) as changeover_core::rollout::EventSink
    } else {
        crate::deploy::progress()
    };
    let hit = std::sync::Arc::new(tokio::sync::Notify::new());
    if let (Some(addr), Some(file)) = (&args.webhook, &args.webhook_token_file) {
        let token = read_token(file)?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Problem::new(
                changeover_core::ProblemCode::PortInUse,
                format!("cannot listen for webhooks on {addr}: {e}"),
            )
        })?;
        eprintln!(
            "webhooks: a POST to http://{addr}/hooks/<the token in {}> starts a pass",
            file.display()
        );
        tokio::spawn(serve_webhook(listener, token, hit.clone()));
    }
    loop {
        let services = redeploy::watched(env, &args.names).await?;
        let checks = redeploy::check_once(env, &services, events.clone()).await?;
        if checks.is_empty() && !args.json {
            println!(
                "no service of this environment watches for new images (x-changeover.autoredeploy)"
            );
        }
        for c in &checks {
            print(c, args.json);
        }
        let failed = checks
            .iter()
            .any(|c| matches!(c.outcome, RedeployOutcome::Failed { .. }));
        if args.once {
            return Ok(failed);
        }
        redeploy::until_next_pass(env, &services, hit.notified()).await;
    }
}
