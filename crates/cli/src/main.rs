//! `changeover`: Changeover's command line, for scripts and pipelines.
//!
//! Same environments and inventory as the desktop app. Tables for people by
//! default, `--json` for scripts (the shapes are the UI's types, documented in
//! the README). On failure: a one-line reason on stderr and exit code 1
//! (2 for usage errors, as clap does).

mod deploy;
mod table;
mod traffic;

use std::process::ExitCode;
use std::time::Duration;

use changeover_core::environment::{discover, DiscoveryInput, EnvironmentList, EnvironmentSpec};
use changeover_core::inventory::{Container, Inventory};
use changeover_core::service::Strategy;
use changeover_core::Problem;
use changeover_docker::{connect, read};
use clap::{Parser, Subcommand};
use serde::Serialize;

use table::{age, bytes, Table};

#[derive(Parser)]
#[command(name = "changeover", version, about = "Immutable deploys on Docker")]
struct Cli {
    /// Environment to use (a Docker context name, or "default").
    /// Defaults to DOCKER_HOST, then the current Docker context.
    #[arg(long = "env", global = true, value_name = "NAME")]
    env: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Environments (Docker daemons) and whether they answer.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Containers with their stack/service labels.
    Ps(ListArgs),
    /// Images with all their tags.
    Images(ListArgs),
    /// Volumes and the containers that use them.
    Volumes(ListArgs),
    /// Stacks: sets of services defined in a Compose file.
    Stack {
        #[command(subcommand)]
        command: StackCommand,
    },
    /// Services: releases, rollouts, rollbacks.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Traffic between a service's releases: split, switch, maintenance, live figures.
    Traffic {
        #[command(subcommand)]
        command: TrafficCommand,
    },
    /// The edge proxy of the environment.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum TrafficCommand {
    /// Each route's split and what each release served (requests, errors, latency).
    Show {
        /// STACK/SERVICE
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Send every new request to one release (number, or a tag one live release runs).
    Switch {
        /// STACK/SERVICE
        name: String,
        #[arg(long, value_name = "RELEASE")]
        to: String,
    },
    /// Share new clients between the two live releases: N% to the candidate
    /// (blue-green or canary), the rest to the current one; sticky per client.
    Split {
        /// STACK/SERVICE
        name: String,
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        percent: i64,
    },
    /// Make the candidate current: all traffic to it, then the old release
    /// drains and stops (kept for a rollback).
    Promote {
        /// STACK/SERVICE
        name: String,
    },
    /// Give up the candidate: all traffic back to the current release, then
    /// the candidate's containers drain and are removed.
    Abort {
        /// STACK/SERVICE
        name: String,
    },
    /// Let a team see the candidate before any user: requests with the
    /// preview header or cookie go to it, whatever the split.
    Preview {
        /// STACK/SERVICE
        name: String,
        /// The token to use (default: a new random one).
        #[arg(long)]
        token: Option<String>,
        /// End the preview.
        #[arg(long, conflicts_with = "token")]
        off: bool,
    },
    /// Answer every request with a 503 page (containers keep running).
    Maintenance {
        /// STACK/SERVICE
        name: String,
        /// What users read.
        #[arg(
            long,
            default_value = "This service is down for maintenance. Please try again soon."
        )]
        message: String,
        /// Resume normal traffic instead.
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand)]
enum EdgeCommand {
    /// Whether the edge runs, which build, how many routes.
    Status(ListArgs),
    /// Replace the edge with this Changeover's build (routes are kept; its
    /// ports close for about a second).
    Upgrade,
}

#[derive(Subcommand)]
enum StackCommand {
    /// Create or update every service of a stack file; rolls out what changed.
    Deploy {
        /// The stack file (Compose format).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: std::path::PathBuf,
    },
    /// Write the services of a deployed stack back as a Compose file.
    Export {
        /// The stack's name.
        name: String,
        /// Write to this file instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<String>,
        /// Replace the output file when it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Roll one service to another tag of its image.
    Deploy {
        /// STACK/SERVICE
        name: String,
        #[arg(long)]
        tag: String,
        /// rolling, blue-green or canary (default: the service's own; kept
        /// for later deploys).
        #[arg(long, value_parser = parse_strategy)]
        strategy: Option<Strategy>,
    },
    /// Back to the previous release (or undo a rollout left half done).
    Rollback {
        /// STACK/SERVICE
        name: String,
    },
    /// Services on the environment.
    Ls(ListArgs),
    /// A service's releases and containers.
    Inspect {
        /// STACK/SERVICE
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EnvCommand {
    /// List environments.
    Ls(ListArgs),
}

#[derive(clap::Args)]
struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("changeover: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            // The reason on the first line; details (health output, logs)
            // indented below it.
            let mut lines = problem.message.lines();
            eprintln!("changeover: {}", lines.next().unwrap_or(""));
            for l in lines {
                eprintln!("  {l}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Problem> {
    let environments = discover(&DiscoveryInput::from_process());
    match cli.command {
        Command::Env {
            command: EnvCommand::Ls(args),
        } => env_ls(&environments, args.json).await,
        Command::Ps(args) => {
            let inventory = load(&environments, cli.env.as_deref()).await?;
            ps(&inventory, args.json)
        }
        Command::Images(args) => {
            let inventory = load(&environments, cli.env.as_deref()).await?;
            images(&inventory, args.json)
        }
        Command::Volumes(args) => {
            let inventory = load(&environments, cli.env.as_deref()).await?;
            volumes(&inventory, args.json)
        }
        Command::Stack {
            command: StackCommand::Deploy { file },
        } => {
            let docker = dial(&environments, cli.env.as_deref()).await?;
            deploy::stack_deploy(&docker, &file).await
        }
        Command::Stack {
            command:
                StackCommand::Export {
                    name,
                    output,
                    force,
                },
        } => {
            let docker = dial(&environments, cli.env.as_deref()).await?;
            let text = changeover_docker::deploy::export_stack(&docker, &name).await?;
            match output {
                Some(path) => {
                    let written = changeover_core::compose::write_file(&path, &text, force)?;
                    eprintln!("wrote stack {name} to {}", written.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Traffic { command } => {
            let docker = dial(&environments, cli.env.as_deref()).await?;
            traffic::run(&docker, command).await
        }
        Command::Edge { command } => {
            let docker = dial(&environments, cli.env.as_deref()).await?;
            match command {
                EdgeCommand::Status(args) => {
                    let status = changeover_docker::edge::edge_status(&docker).await?;
                    if args.json {
                        return print_json(&status);
                    }
                    let state = if !status.running {
                        "not running (the next deploy starts it)".to_string()
                    } else if status.up_to_date {
                        "running, up to date".to_string()
                    } else {
                        "running an older build (`changeover edge upgrade` replaces it)".to_string()
                    };
                    println!("edge   : {state}");
                    println!("image  : {}", status.image.as_deref().unwrap_or("-"));
                    println!(
                        "wanted : {}",
                        status
                            .wanted
                            .as_deref()
                            .unwrap_or("- (no edge binary at hand)")
                    );
                    println!("routes : {}", status.routes);
                    Ok(())
                }
                EdgeCommand::Upgrade => {
                    changeover_docker::edge::upgrade_edge(&docker).await?;
                    let status = changeover_docker::edge::edge_status(&docker).await?;
                    eprintln!(
                        "the edge now runs {} with {} route(s)",
                        status.image.as_deref().unwrap_or("?"),
                        status.routes
                    );
                    Ok(())
                }
            }
        }
        Command::Service { command } => {
            let docker = dial(&environments, cli.env.as_deref()).await?;
            match command {
                ServiceCommand::Deploy {
                    name,
                    tag,
                    strategy,
                } => deploy::service_deploy(&docker, &name, &tag, strategy).await,
                ServiceCommand::Rollback { name } => deploy::service_rollback(&docker, &name).await,
                ServiceCommand::Ls(args) => deploy::service_ls(&docker, args.json).await,
                ServiceCommand::Inspect { name, json } => {
                    deploy::service_inspect(&docker, &name, json).await
                }
            }
        }
    }
}

async fn dial(
    environments: &EnvironmentList,
    name: Option<&str>,
) -> Result<changeover_docker::Docker, Problem> {
    let spec = match name {
        Some(name) => environments.get(name)?,
        None => environments.default_spec()?,
    };
    connect(spec).await
}

async fn load(environments: &EnvironmentList, name: Option<&str>) -> Result<Inventory, Problem> {
    let docker = dial(environments, name).await?;
    read::inventory(&docker).await
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::parse(s)
        .ok_or_else(|| format!("{s:?} is not a strategy (rolling, blue-green or canary)"))
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<(), Problem> {
    let text = serde_json::to_string_pretty(value).map_err(|e| {
        Problem::new(
            changeover_core::ProblemCode::DaemonError,
            format!("cannot write JSON: {e}"),
        )
    })?;
    println!("{text}");
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvRow<'a> {
    #[serde(flatten)]
    spec: &'a EnvironmentSpec,
    is_default: bool,
    reachable: bool,
    daemon: Option<changeover_core::inventory::DaemonInfo>,
    counts: Option<Counts>,
    error: Option<Problem>,
}

#[derive(Serialize)]
struct Counts {
    containers: usize,
    running: usize,
    images: usize,
    volumes: usize,
}

/// How long `env ls` waits for each environment before calling it unreachable.
const ENV_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

async fn env_ls(environments: &EnvironmentList, json: bool) -> Result<(), Problem> {
    let probes = environments.environments.iter().map(|spec| async move {
        let probe = async {
            let docker = connect(spec).await?;
            let daemon = read::daemon_info(&docker).await?;
            let inv = read::inventory(&docker).await?;
            Ok::<_, Problem>((daemon, inv))
        };
        let result = match tokio::time::timeout(ENV_PROBE_TIMEOUT, probe).await {
            Ok(r) => r,
            Err(_) => Err(Problem::new(
                changeover_core::ProblemCode::DaemonUnreachable,
                format!(
                    "{} did not answer within {} s",
                    spec.host,
                    ENV_PROBE_TIMEOUT.as_secs()
                ),
            )),
        };
        let (daemon, counts, error) = match result {
            Ok((daemon, inv)) => (
                Some(daemon),
                Some(Counts {
                    containers: inv.containers.len(),
                    running: inv
                        .containers
                        .iter()
                        .filter(|c| c.state == changeover_core::inventory::ContainerState::Running)
                        .count(),
                    images: inv.images.len(),
                    volumes: inv.volumes.len(),
                }),
                None,
            ),
            Err(p) => (None, None, Some(p)),
        };
        EnvRow {
            spec,
            is_default: spec.name == environments.default,
            reachable: daemon.is_some(),
            daemon,
            counts,
            error,
        }
    });
    let rows = futures_util::future::join_all(probes).await;
    if json {
        return print_json(&rows);
    }
    let mut t = Table::new([
        "NAME",
        "ADDRESS",
        "STATUS",
        "CONTAINERS",
        "IMAGES",
        "VOLUMES",
    ]);
    for r in &rows {
        let name = if r.is_default {
            format!("{} *", r.spec.name)
        } else {
            r.spec.name.clone()
        };
        let status = match (&r.daemon, &r.error) {
            (Some(d), _) => format!("connected, Docker {} {}/{}", d.version, d.os, d.arch),
            (None, Some(p)) => p.message.clone(),
            (None, None) => String::new(),
        };
        let (c, i, v) = match &r.counts {
            Some(n) => (
                format!("{} ({} running)", n.containers, n.running),
                n.images.to_string(),
                n.volumes.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        t.row([name, r.spec.host.clone(), status, c, i, v]);
    }
    print!("{t}");
    Ok(())
}

fn group_label(c: &Container) -> String {
    match &c.group {
        Some(g) => match &g.service {
            Some(s) => format!("{}/{}", g.name, s),
            None => g.name.clone(),
        },
        None => String::new(),
    }
}

fn ps(inventory: &Inventory, json: bool) -> Result<(), Problem> {
    if json {
        return print_json(&inventory.containers);
    }
    let mut t = Table::new([
        "CONTAINER ID",
        "NAME",
        "IMAGE",
        "STATE",
        "STATUS",
        "STACK/SERVICE",
    ]);
    for (_, members) in inventory.grouped() {
        for c in members {
            t.row([
                c.id.chars().take(12).collect(),
                c.name.clone(),
                c.image.clone(),
                c.state.as_str().to_string(),
                c.status.clone(),
                group_label(c),
            ]);
        }
    }
    print!("{t}");
    Ok(())
}

fn images(inventory: &Inventory, json: bool) -> Result<(), Problem> {
    if json {
        return print_json(&inventory.images);
    }
    let users = inventory.image_users();
    let mut t = Table::new(["IMAGE ID", "TAGS", "SIZE", "CREATED", "CONTAINERS"]);
    for i in &inventory.images {
        let tags = if i.tags.is_empty() {
            "<none>".to_string()
        } else {
            i.tags.join(", ")
        };
        t.row([
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect(),
            tags,
            bytes(i.size),
            age(i.created),
            users.get(i.id.as_str()).copied().unwrap_or(0).to_string(),
        ]);
    }
    print!("{t}");
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeRow<'a> {
    #[serde(flatten)]
    volume: &'a changeover_core::inventory::Volume,
    used_by: Vec<&'a str>,
}

fn volumes(inventory: &Inventory, json: bool) -> Result<(), Problem> {
    let users = inventory.volume_users();
    let rows: Vec<VolumeRow> = inventory
        .volumes
        .iter()
        .map(|v| VolumeRow {
            volume: v,
            used_by: users.get(v.name.as_str()).cloned().unwrap_or_default(),
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    let mut t = Table::new(["NAME", "DRIVER", "USED BY", "MOUNTPOINT"]);
    for r in rows {
        t.row([
            r.volume.name.clone(),
            r.volume.driver.clone(),
            if r.used_by.is_empty() {
                "-".to_string()
            } else {
                r.used_by.join(", ")
            },
            r.volume.mountpoint.clone(),
        ]);
    }
    print!("{t}");
    Ok(())
}
