//! `changeover stack deploy`, `changeover service deploy|rollback|ls|inspect`.
//!
//! Progress streams on stderr as the rollout's events arrive; stdout carries
//! only results (`--json` for scripts). Exit 0 only when every service is on
//! its new release and healthy.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use changeover_application::{services as deploy, Environment};
use changeover_core::rollout::{EventSink, RolloutEvent, SlotPhase};
use changeover_core::service::{ReleaseResult, ServiceView};
use changeover_core::stack;
use changeover_core::{Problem, ProblemCode};

use crate::print_json;
use crate::table::{age, Table};

fn phase(p: SlotPhase) -> &'static str {
    match p {
        SlotPhase::Creating => "creating",
        SlotPhase::Starting => "starting",
        SlotPhase::HealthChecking => "health checking",
        SlotPhase::Routed => "routed",
        SlotPhase::OldDraining => "old draining",
        SlotPhase::OldStopped => "old stopped",
        SlotPhase::Done => "done",
        SlotPhase::Failed => "failed",
        SlotPhase::ScaledDown => "scaled down",
    }
}

/// Prints rollout events on stderr, one line each.
pub fn progress() -> EventSink {
    let started = Instant::now();
    // A pull is told once per layer finished, not per chunk.
    let pulled = std::sync::Mutex::new(None::<String>);
    Arc::new(move |e: RolloutEvent| {
        let t = started.elapsed().as_secs_f64();
        let line = match e {
            RolloutEvent::Pulling { progress } => {
                let (done, all) = progress.counts();
                let key = format!("{done}/{all} {:?}", progress.status);
                let mut seen = pulled.lock().unwrap_or_else(|p| p.into_inner());
                if seen.as_deref() == Some(key.as_str()) {
                    return;
                }
                *seen = Some(key);
                format!("  [{t:6.2}s] {}", crate::registry::progress_line(&progress))
            }
            RolloutEvent::Planned {
                service,
                from,
                to,
                image,
                slots,
                resumed,
                rollback,
                beside,
            } => format!(
                "{service}: {} release {to} ({image}, {slots} slot(s)){}{}",
                match (rollback, beside) {
                    (true, _) => "rolling back to".to_string(),
                    (false, Some(s)) =>
                        format!("starting ({}) beside the current release:", s.as_str()),
                    (false, None) => "rolling out".to_string(),
                },
                from.map(|f| format!(", from release {f}"))
                    .unwrap_or_default(),
                if resumed {
                    ", taking over an unfinished rollout"
                } else {
                    ""
                }
            ),
            RolloutEvent::Note { message } => format!("  {message}"),
            RolloutEvent::Build { service, line } => format!("  build {service} | {line}"),
            RolloutEvent::Slot {
                slot,
                release,
                phase: p,
                detail,
                timings,
                ..
            } => {
                let mut s = format!("  [{t:6.2}s] slot {slot} r{release}: {}", phase(p));
                if let Some(d) = detail {
                    s.push_str(&format!(" ({d})"));
                }
                if let Some(tm) = timings {
                    if tm.total_ms > 0 {
                        s.push_str(&format!(
                            " in {} ms (start {} ms, health {} ms, overhead {} ms)",
                            tm.total_ms, tm.start_ms, tm.health_ms, tm.overhead_ms
                        ));
                    }
                }
                s
            }
            RolloutEvent::Restoring { to } => match to {
                Some(r) => format!("  rollout failed; restoring release {r}"),
                None => "  rollout failed; removing the new containers".to_string(),
            },
            RolloutEvent::Finished {
                ok: true, message, ..
            } => format!("✔ {message}"),
            RolloutEvent::Finished { ok: false, .. } => return,
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    })
}

/// Plans on stdout: a few lines each, or JSON.
pub fn print_plans(
    plans: &[changeover_core::plan::ServicePlan],
    json: bool,
) -> Result<(), Problem> {
    if json {
        return print_json(&plans);
    }
    for p in plans {
        println!("{}", changeover_core::plan::describe(p));
    }
    Ok(())
}

/// `stack deploy --dry-run`: the file read and checked as a deploy does,
/// then what would change per service; nothing changes.
pub async fn stack_plan(env: &Environment, file: &Path, json: bool) -> Result<(), Problem> {
    let stack = read_stack(file, "nothing would be deployed")?;
    let plans = changeover_application::plans::stack_plan(env, &stack).await?;
    print_plans(&plans, json)
}

/// A stack file read, its warnings and errors on stderr; refused with
/// `refusal` when it has errors.
fn read_stack(file: &Path, refusal: &str) -> Result<stack::Stack, Problem> {
    let report = stack::read_file(file);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    report.stack.ok_or_else(|| {
        Problem::new(
            ProblemCode::InvalidStack,
            format!(
                "{} has {} error(s); {refusal}",
                file.display(),
                report.errors.len()
            ),
        )
    })
}

pub async fn stack_deploy(env: &Environment, file: &Path) -> Result<(), Problem> {
    let stack = read_stack(file, "nothing was deployed")?;
    let outcomes = deploy::deploy_stack(env, &stack, progress()).await?;
    let host = env.link_host();
    let ports: Vec<String> = stack
        .services
        .iter()
        .flat_map(|s| {
            s.routes().into_iter().map(|p| match p.udp {
                changeover_core::edge::Udp::Only => format!("udp://{host}:{}", p.host),
                _ if p.protocol == changeover_core::edge::Protocol::Tcp => {
                    format!("tcp://{host}:{}", p.host)
                }
                _ => format!("http://{host}:{}", p.host),
            })
        })
        .collect();
    eprintln!(
        "stack {}: {} service(s) deployed{}",
        stack.name,
        outcomes.len(),
        if ports.is_empty() {
            String::new()
        } else {
            format!("; reachable at {}", ports.join(", "))
        }
    );
    Ok(())
}

pub async fn service_deploy(
    env: &Environment,
    name: &str,
    tag: &str,
    strategy: Option<changeover_core::service::Strategy>,
    pull: bool,
) -> Result<(), Problem> {
    if pull {
        deploy::pull_and_deploy_tag(env, name, tag, strategy, None, progress()).await?;
    } else {
        deploy::deploy_tag(env, name, tag, strategy, None, progress()).await?;
    }
    Ok(())
}

pub async fn service_rollback(
    env: &Environment,
    name: &str,
    with_data: bool,
    yes: bool,
) -> Result<(), Problem> {
    if !with_data {
        deploy::rollback(env, name, progress()).await?;
        return Ok(());
    }
    let plan = changeover_application::snapshots::rollback_snapshots(env, name).await?;
    if !yes {
        let what: Vec<String> = plan
            .iter()
            .map(|(v, s)| format!("{v} from {}", s.name))
            .collect();
        crate::volume::confirm(&format!(
            "roll {name} back and restore {}? Their current content is snapshotted first; the containers that use them are stopped for the copy.",
            what.join(", ")
        ))?;
    }
    let (_, restored) =
        changeover_application::snapshots::rollback_with_data(env, name, progress()).await?;
    for r in restored {
        eprintln!(
            "restored {} from {} (undo with: changeover volume restore {} {})",
            r.volume, r.from, r.volume, r.undo.name
        );
    }
    Ok(())
}

fn result_word(r: &ReleaseResult) -> String {
    match r {
        ReleaseResult::InProgress => "in progress".into(),
        ReleaseResult::Succeeded => "live".into(),
        ReleaseResult::Failed { .. } => "failed".into(),
        ReleaseResult::Superseded => "superseded".into(),
        ReleaseResult::Candidate => "candidate".into(),
    }
}

pub async fn service_ls(env: &Environment, json: bool) -> Result<(), Problem> {
    let services = deploy::services(env).await?;
    if json {
        return print_json(&services);
    }
    let mut t = Table::new(["SERVICE", "IMAGE", "RELEASE", "REPLICAS", "PORTS", "STATUS"]);
    for s in &services {
        t.row([
            s.name.clone(),
            s.record.spec.image.clone(),
            s.record
                .current
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            format!(
                "{}/{}",
                s.containers
                    .iter()
                    .filter(|c| c.running && Some(c.release) == s.record.current)
                    .count(),
                s.record.spec.replicas
            ),
            s.record
                .spec
                .ports
                .iter()
                .map(|p| {
                    let udp = if p.udp { "/udp" } else { "" };
                    format!("{}→{}{udp}", p.host, p.container)
                })
                .collect::<Vec<_>>()
                .join(", "),
            status(s),
        ]);
    }
    print!("{t}");
    Ok(())
}

fn status(s: &ServiceView) -> String {
    match (&s.record.rollout, &s.rollout_lock) {
        (Some(r), Some(l)) => format!("rolling out release {} ({})", r.to, l.owner),
        (Some(r), None) => format!(
            "rollout to release {} interrupted; run deploy to finish it or rollback to undo it",
            r.to
        ),
        (None, _) => "ok".into(),
    }
}

pub async fn service_inspect(env: &Environment, name: &str, json: bool) -> Result<(), Problem> {
    let s = deploy::service(env, name).await?;
    if json {
        return print_json(&s);
    }
    println!("{}  {}  ({})", s.name, s.record.spec.image, status(&s));
    println!();
    let mut t = Table::new(["RELEASE", "IMAGE", "DIGEST", "CREATED", "BY", "RESULT"]);
    for r in s.record.releases.iter().rev() {
        t.row([
            format!(
                "{}{}",
                r.number,
                if Some(r.number) == s.record.current {
                    " *"
                } else {
                    ""
                }
            ),
            r.image.clone(),
            r.image_id
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect(),
            age(r.created_ms / 1000),
            r.created_by.clone(),
            match &r.result {
                ReleaseResult::Failed { reason } => {
                    format!("failed: {}", reason.lines().next().unwrap_or(""))
                }
                other => result_word(other),
            },
        ]);
    }
    print!("{t}");
    println!();
    let mut t = Table::new(["SLOT", "CONTAINER", "RELEASE", "STATE", "HEALTH", "ROUTED"]);
    for c in &s.containers {
        t.row([
            c.slot.to_string(),
            c.name.clone(),
            c.release.to_string(),
            if c.running { "running" } else { "stopped" }.to_string(),
            c.health.clone().unwrap_or_else(|| "-".into()),
            if c.routed {
                "yes".to_string()
            } else {
                c.edge_state
                    .map(|s| {
                        format!(
                            "no ({})",
                            serde_json::to_string(&s)
                                .unwrap_or_default()
                                .trim_matches('"')
                        )
                    })
                    .unwrap_or_else(|| "no".into())
            },
        ]);
    }
    print!("{t}");
    Ok(())
}
