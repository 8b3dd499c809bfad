//! `changeover watch`: automatic redeploys (`x-changeover.autoredeploy`) of
//! the environment's watched services — a pass every `check_every` (the
//! shortest of them), and at once on the daemon's image events when a
//! service watches its local tags. `--once`: one pass, then exit (for cron
//! and CI); the exit code is 1 when a new image failed to go out.

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
    let events = if args.json {
        std::sync::Arc::new(|_| {}) as changeover_core::rollout::EventSink
    } else {
        crate::deploy::progress()
    };
    loop {
        let checks = redeploy::check_once(env, &args.names, events.clone()).await?;
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
        let services: Vec<_> = changeover_application::services::services(env)
            .await?
            .into_iter()
            .filter(|s| redeploy::chosen(&s.name, &args.names))
            .collect();
        let every = redeploy::interval(&services).unwrap_or(Duration::from_secs(60));
        if redeploy::watches_local(&services) {
            let docker = env.docker().await?;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = changeover_docker::images::next_image_event(&docker) => {
                    // Let a build finish tagging before looking.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        } else {
            tokio::time::sleep(every).await;
        }
    }
}
