//! `changeover exec TARGET [-i] [-t] -- CMD...`: runs a command in a
//! container (a service's slot, or any container) and exits with its code,
//! like `docker exec`.

use changeover_application::{containers, Environment};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::containers as dc;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct ExecArgs {
    /// CONTAINER, STACK/SERVICE (slot 0 of the current release) or
    /// STACK/SERVICE/SLOT.
    pub target: String,
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal (this one's size, in raw mode).
    #[arg(short, long)]
    pub tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Restores the terminal when dropped.
struct Raw;

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

pub async fn run(env: &Environment, args: ExecArgs) -> Result<i32, Problem> {
    let found = containers::find(env, &args.target).await?;
    let docker = env.docker().await?;
    let size = if args.tty {
        Some(crossterm::terminal::size().unwrap_or((80, 24)))
    } else {
        None
    };
    let session = dc::exec(&docker, &found.id, args.command.clone(), size, vec![]).await?;
    let exec_id = session.exec_id.clone().unwrap_or_default();
    let _raw = if args.tty && args.interactive {
        crossterm::terminal::enable_raw_mode().ok().map(|_| Raw)
    } else {
        None
    };
    let dc::Session {
        mut input,
        mut output,
        ..
    } = session;
    if args.interactive {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let _ = input.flush().await;
                    }
                }
            }
            let _ = input.shutdown().await;
        });
    } else {
        drop(input);
    }
    #[cfg(unix)]
    if args.tty {
        let docker = docker.clone();
        let exec_id = exec_id.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Ok((c, r)) = crossterm::terminal::size() {
                    dc::resize_exec(&docker, &exec_id, c, r).await;
                }
            }
        });
    }
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(piece) = output.next().await {
        let piece = piece?;
        let _ = if piece.stderr {
            stderr.write_all(&piece.bytes).await
        } else {
            stdout.write_all(&piece.bytes).await
        };
        let _ = stdout.flush().await;
    }
    for _ in 0..50 {
        if let Some(code) = dc::exec_exit(&docker, &exec_id).await {
            return Ok(code as i32);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(Problem::new(
        ProblemCode::DaemonError,
        format!(
            "the command in {} ended but the daemon gave no exit code",
            found.name
        ),
    ))
}
