//! `changeover stack ls|rm`, `changeover service rm`: what goes is listed
//! and asked about first (named volumes a second time, by name); `--yes`
//! answers for scripts. Nothing is removed when the answer is no.

use changeover_application::remove::{self, StackRemoval};
use changeover_application::Environment;
use changeover_core::rollout::Removal;
use changeover_core::Problem;

use crate::print_json;
use crate::table::Table;
use crate::volume::confirm;

fn listed(r: &Removal) -> String {
    let mut parts = Vec::new();
    if !r.containers.is_empty() {
        parts.push(format!(
            "{} container(s) ({})",
            r.containers.len(),
            r.containers.join(", ")
        ));
    }
    if !r.routes.is_empty() {
        let ports: Vec<String> = r.routes.iter().map(u16::to_string).collect();
        parts.push(format!("its route(s) on port {}", ports.join(", ")));
    }
    if r.record {
        parts.push("its releases' record".into());
    }
    format!("  {}: {}", r.service, parts.join("; "))
}

pub async fn stack_ls(env: &Environment, json: bool) -> Result<(), Problem> {
    let stacks = remove::stacks(env).await?;
    if json {
        return print_json(&stacks);
    }
    let mut t = Table::new(["STACK", "SERVICES", "CONTAINERS", "RUNNING"]);
    for s in &stacks {
        t.row([
            s.name.clone(),
            s.services.join(", "),
            s.containers.to_string(),
            s.running.to_string(),
        ]);
    }
    print!("{t}");
    Ok(())
}

pub async fn service_rm(env: &Environment, name: &str, yes: bool) -> Result<(), Problem> {
    let plan = remove::service_removal(env, name).await?;
    let mut question = format!("Remove {name}? This removes:\n{}", listed(&plan));
    if !plan.volumes.is_empty() {
        question.push_str(&format!(
            "\nIts volumes stay ({}); `changeover stack rm {} --volumes` or `changeover volume rm` removes them.",
            plan.volumes.join(", "),
            name.split('/').next().unwrap_or_default()
        ));
    }
    if !yes {
        confirm(&question)?;
    }
    let done = remove::remove_service(env, name, crate::deploy::progress()).await?;
    println!("removed {}", done.service);
    Ok(())
}

fn describe_stack(plan: &StackRemoval) -> String {
    let mut text = format!("Remove stack {}? This removes:", plan.stack);
    for s in &plan.services {
        text.push('\n');
        text.push_str(&listed(s));
    }
    if !plan.networks.is_empty() {
        text.push_str(&format!("\n  network(s) {}", plan.networks.join(", ")));
    }
    text
}

pub async fn stack_rm(
    env: &Environment,
    stack: &str,
    volumes: bool,
    yes: bool,
) -> Result<(), Problem> {
    let plan = remove::stack_removal(env, stack).await?;
    let mut question = describe_stack(&plan);
    if !volumes && !plan.volumes.is_empty() {
        question.push_str(&format!(
            "\nIts volumes stay ({}); add --volumes to remove them too.",
            plan.volumes.join(", ")
        ));
    }
    if volumes && !plan.volumes.is_empty() {
        question.push_str(&format!(
            "\n  volume(s) {} and everything in them (asked again)",
            plan.volumes.join(", ")
        ));
    }
    if volumes && !plan.snapshots.is_empty() {
        question.push_str(&format!(
            "\nTheir snapshots stay ({}); `changeover volume rm SNAPSHOT` removes one.",
            plan.snapshots.join(", ")
        ));
    }
    if !yes {
        confirm(&question)?;
        if volumes && !plan.volumes.is_empty() {
            confirm(&format!(
                "Also remove the volume(s) {} and everything in them? This cannot be undone.",
                plan.volumes.join(", ")
            ))?;
        }
    }
    let done = remove::remove_stack(env, stack, volumes, crate::deploy::progress()).await?;
    println!(
        "removed stack {} ({} service(s){})",
        done.stack,
        done.services.len(),
        if volumes && !done.volumes.is_empty() {
            format!(", volume(s) {}", done.volumes.join(", "))
        } else {
            String::new()
        }
    );
    Ok(())
}
