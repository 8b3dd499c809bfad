//! `changeover`: Changeover's command line, for scripts and pipelines.
//!
//! Same environments and inventory as the desktop app. Tables for people by
//! default, `--json` for scripts (the shapes are the UI's types, documented in
//! the README). On failure: a one-line reason on stderr and exit code 1
//! (2 for usage errors, as clap does).

mod deploy;
mod edge;
mod env;
mod exec;
mod inventory;
mod logs;
mod registry;
mod remove;
mod table;
mod traffic;
mod volume;
mod watch;

use std::process::ExitCode;

use changeover_application::{services, Environment, Environments};
use changeover_core::inventory::Inventory;
use changeover_core::service::Strategy;
use changeover_core::Problem;
use changeover_docker::read;
use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "changeover", version, about = "Immutable deploys on Docker")]
struct Cli {
    /// Environment to use (one added with `env add`, a Docker context name,
    /// or "default"). Defaults to DOCKER_HOST, then the current Docker context.
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
    /// One image repository: its tags (the registry's and the daemon's), pulls.
    Image {
        #[command(subcommand)]
        command: registry::ImageCommand,
    },
    /// Redeploy watched services (x-changeover.autoredeploy) when a new
    /// image appears: in the registry (a moved digest, a newer tag in a
    /// semver range) or on the daemon (a local tag rebuilt).
    Watch(watch::WatchArgs),
    /// Registries: log in and out (credentials in the OS keyring), list logins.
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
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
    /// A container's logs, or a whole service's (every release and slot).
    Logs(logs::LogsArgs),
    /// Run a command in a container (exit code: the command's).
    Exec(exec::ExecArgs),
    /// Look into volumes: files, contents, sizes, who uses them.
    Volume {
        #[command(subcommand)]
        command: volume::VolumeCommand,
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
pub(crate) enum EdgeCommand {
    /// Whether the edge runs, which build, how many routes.
    Status(ListArgs),
    /// Replace the edge with this Changeover's build: the new edge takes
    /// the listening sockets over, so no request is refused; routes,
    /// settings and certificates are kept.
    Upgrade,
    /// Show or change the edge's settings: the shared ports sites
    /// (`x-changeover.hosts`) are served on, and where ACME certificates
    /// come from. Shows each site's certificate.
    Config(EdgeConfigArgs),
}

#[derive(clap::Args)]
pub(crate) struct EdgeConfigArgs {
    /// The shared port for plain HTTP of every site (default 80).
    #[arg(long, value_name = "N")]
    http_port: Option<u16>,
    /// The shared port for HTTPS of every site with `tls` (default 443).
    #[arg(long, value_name = "N")]
    https_port: Option<u16>,
    /// The ACME directory URL certificates are ordered from ("" clears it).
    #[arg(long, value_name = "URL")]
    acme_directory: Option<String>,
    /// A PEM file of the CA to trust for the ACME directory, e.g. a test
    /// CA ("" clears it).
    #[arg(long, value_name = "FILE")]
    acme_ca: Option<String>,
    /// The contact address of the ACME account ("" clears it).
    #[arg(long, value_name = "ADDR")]
    acme_email: Option<String>,
    /// How the CA checks the names: http-01 (the shared HTTP port must be
    /// port 80 as the CA sees it) or tls-alpn-01 (the HTTPS port, 443).
    #[arg(long, value_name = "CHALLENGE", value_parser = ["http-01", "tls-alpn-01"])]
    acme_challenge: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum StackCommand {
    /// Create or update every service of a stack file; rolls out what changed.
    Deploy {
        /// The stack file (Compose format).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: std::path::PathBuf,
        /// Print what would change per service, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: the plans as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Stacks on the environment: their services and containers.
    Ls(ListArgs),
    /// Remove a stack: the containers of every release of its services,
    /// their routes and records, its networks; its named volumes only with
    /// --volumes (asked again, by name). Refused while a rollout runs.
    Rm {
        /// The stack's name.
        name: String,
        /// Also remove the stack's named volumes and what is in them.
        #[arg(long)]
        volumes: bool,
        /// Do it without asking.
        #[arg(long)]
        yes: bool,
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
        /// Pull the tag first, with the registry's credentials: the
        /// registry's may be newer than the daemon's copy.
        #[arg(long)]
        pull: bool,
        /// Print what would change, change nothing.
        #[arg(long, conflicts_with = "pull")]
        dry_run: bool,
        /// With --dry-run: the plan as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Back to the previous release (or undo a rollout left half done).
    Rollback {
        /// STACK/SERVICE
        name: String,
        /// Also put back the data its volumes held before the deploy being
        /// undone (the snapshots `x-changeover.snapshots` took); the
        /// containers are stopped for the copy.
        #[arg(long)]
        with_data: bool,
        /// With --with-data: do it without asking.
        #[arg(long)]
        yes: bool,
        /// Print what would change, change nothing.
        #[arg(long, conflicts_with_all = ["with_data", "yes"])]
        dry_run: bool,
        /// With --dry-run: the plan as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Services on the environment.
    Ls(ListArgs),
    /// Remove a service: the containers of every release, its routes and
    /// record (its volumes stay). Refused while a rollout runs.
    Rm {
        /// STACK/SERVICE
        name: String,
        /// Do it without asking.
        #[arg(long)]
        yes: bool,
    },
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
    /// List environments, whether they answer, and what they hold.
    Ls(ListArgs),
    /// Add a daemon: unix://PATH, tcp://HOST:PORT (with --tls-* for TLS) or
    /// ssh://[USER@]HOST[:PORT]. It must answer unless --force.
    Add(env::AddArgs),
    /// Remove an environment added here, and its keyring entries.
    Rm {
        /// The environment's name.
        name: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct ListArgs {
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
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
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

/// Runs the command; the exit code (the command's own for `exec`).
async fn run(cli: Cli) -> Result<i32, Problem> {
    let envs = Environments::from_process();
    if let Command::Exec(args) = cli.command {
        return exec::run(&*envs.get(cli.env.as_deref())?, args).await;
    }
    if let Command::Watch(args) = cli.command {
        let failed = watch::run(&*envs.get(cli.env.as_deref())?, args).await?;
        return Ok(i32::from(failed));
    }
    verb(&envs, cli).await.map(|()| 0)
}

async fn verb(envs: &Environments, cli: Cli) -> Result<(), Problem> {
    let chosen = || envs.get(cli.env.as_deref());
    match cli.command {
        Command::Env { command } => match command {
            EnvCommand::Ls(args) => env::ls(envs, args.json).await,
            EnvCommand::Add(args) => env::add(envs, args).await,
            EnvCommand::Rm { name } => env::rm(envs, &name).await,
        },
        Command::Logs(args) => logs::run(&*chosen()?, args).await,
        Command::Registry { command } => registry::registry(envs, command).await,
        Command::Image { command } => registry::image(envs, &*chosen()?, command).await,
        Command::Exec(_) | Command::Watch(_) => Ok(()),
        Command::Ps(args) => inventory::ps(&load(&*chosen()?).await?, args.json),
        Command::Images(args) => inventory::images(&load(&*chosen()?).await?, args.json),
        Command::Volumes(args) => inventory::volumes(&load(&*chosen()?).await?, args.json),
        Command::Stack {
            command:
                StackCommand::Deploy {
                    file,
                    dry_run,
                    json,
                },
        } => {
            if dry_run {
                deploy::stack_plan(&*chosen()?, &file, json).await
            } else {
                deploy::stack_deploy(&*chosen()?, &file).await
            }
        }
        Command::Stack {
            command: StackCommand::Ls(args),
        } => remove::stack_ls(&*chosen()?, args.json).await,
        Command::Stack {
            command: StackCommand::Rm { name, volumes, yes },
        } => remove::stack_rm(&*chosen()?, &name, volumes, yes).await,
        Command::Stack {
            command:
                StackCommand::Export {
                    name,
                    output,
                    force,
                },
        } => {
            let text = services::export_stack(&*chosen()?, &name).await?;
            match output {
                Some(path) => {
                    let written = changeover_core::compose::write_file(&path, &text, force)?;
                    eprintln!("wrote stack {name} to {}", written.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Traffic { command } => traffic::run(&*chosen()?, command).await,
        Command::Edge { command } => edge::run(&*chosen()?, command).await,
        Command::Volume { command } => volume::run(&*chosen()?, command).await,
        Command::Service { command } => {
            let env = chosen()?;
            match command {
                ServiceCommand::Deploy {
                    name,
                    tag,
                    strategy,
                    dry_run: true,
                    json,
                    ..
                } => {
                    let plan =
                        changeover_application::plans::deploy_plan(&env, &name, &tag, strategy)
                            .await?;
                    deploy::print_plans(&[plan], json)
                }
                ServiceCommand::Deploy {
                    name,
                    tag,
                    strategy,
                    pull,
                    ..
                } => deploy::service_deploy(&env, &name, &tag, strategy, pull).await,
                ServiceCommand::Rollback {
                    name,
                    dry_run: true,
                    json,
                    ..
                } => {
                    let plan = changeover_application::plans::rollback_plan(&env, &name).await?;
                    deploy::print_plans(&[plan], json)
                }
                ServiceCommand::Rollback {
                    name,
                    with_data,
                    yes,
                    ..
                } => deploy::service_rollback(&env, &name, with_data, yes).await,
                ServiceCommand::Ls(args) => deploy::service_ls(&env, args.json).await,
                ServiceCommand::Rm { name, yes } => remove::service_rm(&env, &name, yes).await,
                ServiceCommand::Inspect { name, json } => {
                    deploy::service_inspect(&env, &name, json).await
                }
            }
        }
    }
}

async fn load(env: &Environment) -> Result<Inventory, Problem> {
    read::inventory(&env.docker().await?).await
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
