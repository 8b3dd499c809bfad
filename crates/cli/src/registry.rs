//! `changeover registry …` (logins) and `changeover image …` (a
//! repository's tags, pulls with progress).

use std::io::{IsTerminal, Read, Write};

use changeover_application::{Environment, Environments};
use changeover_core::registry::{CredentialSource, ImageTags, PullProgress};
use changeover_core::secret::Secret;
use changeover_core::{Problem, ProblemCode};

use crate::print_json;
use crate::table::{age, bytes, Table};

#[derive(clap::Subcommand)]
pub enum RegistryCommand {
    /// Log in to a registry: the password is checked with the registry,
    /// then kept in the OS keyring (never in a file). Asked for on a
    /// terminal without echo, or read from stdin with --password-stdin.
    Login {
        /// The registry (reg.example.com[:port]; docker.io for Docker Hub).
        host: String,
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Read the password (or token) from stdin's first line.
        #[arg(long)]
        password_stdin: bool,
        /// A PEM file of the CA the registry's certificate is signed by,
        /// when it is not a public one.
        #[arg(long, value_name = "FILE")]
        ca: Option<std::path::PathBuf>,
    },
    /// Forget the credentials entered in Changeover for a registry.
    Logout { host: String },
    /// Registries with credentials, and where they come from (never the secret).
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// A repository's tags, from its registry and the daemon: versions
    /// first, newest first; digest, age, size, and whether it is local.
    Tags {
        /// The repository, e.g. reg.example.com:5000/team/app.
        repository: String,
        #[arg(long)]
        json: bool,
        /// Also the digests of the first 20 tags only the registry has (one
        /// HEAD request each; those the daemon has are always checked).
        #[arg(long)]
        digests: bool,
    },
    /// Pull an image onto the environment's daemon with the registry's
    /// credentials, showing each layer's progress.
    Pull {
        /// The reference, e.g. reg.example.com/team/app:1.2.
        reference: String,
        /// Print the progress as JSON lines (one per change) and the
        /// image ID at the end.
        #[arg(long)]
        json: bool,
    },
}

fn input(message: String) -> Problem {
    Problem::new(ProblemCode::InvalidInput, message)
}

/// Reads a password: stdin's first line, or typed on the terminal without echo.
fn password(from_stdin: bool) -> Result<Secret, Problem> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| input(format!("cannot read the password from stdin: {e}")))?;
        let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
        return Ok(Secret::new(first.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(input(
            "no terminal to ask the password on: give it on stdin with --password-stdin".into(),
        ));
    }
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    crossterm::terminal::enable_raw_mode()
        .map_err(|e| input(format!("cannot read the password without echo: {e}")))?;
    let mut typed = String::new();
    let result = (|| -> std::io::Result<bool> {
        let mut byte = [0u8; 1];
        let mut stdin = std::io::stdin();
        loop {
            if stdin.read(&mut byte)? == 0 {
                return Ok(true);
            }
            match byte[0] {
                b'\r' | b'\n' => return Ok(true),
                3 => return Ok(false), // Ctrl-C
                8 | 127 => {
                    typed.pop();
                }
                b => typed.push(b as char),
            }
            if typed.len() > 64 * 1024 {
                return Ok(true);
            }
        }
    })();
    let _ = crossterm::terminal::disable_raw_mode();
    eprintln!();
    match result {
        Ok(true) => Ok(Secret::new(typed)),
        Ok(false) => Err(Problem::new(ProblemCode::Cancelled, "login cancelled")),
        Err(e) => Err(input(format!("cannot read the password: {e}"))),
    }
}

fn source_text(source: &CredentialSource) -> String {
    match source {
        CredentialSource::Keyring => "Changeover (OS keyring)".into(),
        CredentialSource::DockerConfig => "docker login (config.json)".into(),
        CredentialSource::DockerHelper { helper } => format!("docker-credential-{helper}"),
    }
}

pub async fn registry(envs: &Environments, command: RegistryCommand) -> Result<(), Problem> {
    let registries = envs.registries();
    match command {
        RegistryCommand::Login {
            host,
            username,
            password_stdin,
            ca,
        } => {
            let Some(username) = username else {
                return Err(input(format!(
                    "give the user name: changeover registry login {host} --username NAME"
                )));
            };
            let ca = match ca {
                Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                    input(format!("cannot read the CA file {}: {e}", path.display()))
                })?),
                None => None,
            };
            let secret = password(password_stdin)?;
            let login = registries.login(&host, &username, secret, ca).await?;
            println!(
                "logged in to {} as {}; the password is in the OS keyring",
                login.host,
                login.username.unwrap_or_default()
            );
            Ok(())
        }
        RegistryCommand::Logout { host } => {
            registries.logout(&host).await?;
            println!("logged out of {host}; its password is gone from the OS keyring");
            Ok(())
        }
        RegistryCommand::Ls { json } => {
            let all = registries.list()?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                println!(
                    "no registry credentials (changeover registry login HOST, or docker login)"
                );
                return Ok(());
            }
            let mut t = Table::new(["REGISTRY", "USER", "CREDENTIALS FROM"]);
            for l in all {
                t.row([
                    l.host,
                    l.username.unwrap_or_else(|| "-".into()),
                    source_text(&l.source),
                ]);
            }
            print!("{t}");
            Ok(())
        }
    }
}

pub async fn image(
    envs: &Environments,
    env: &Environment,
    command: ImageCommand,
) -> Result<(), Problem> {
    let registries = envs.registries();
    match command {
        ImageCommand::Tags {
            repository,
            json,
            digests,
        } => {
            let tags = registries.tags(env, &repository, digests).await?;
            if json {
                return print_json(&tags);
            }
            print_tags(&tags);
            Ok(())
        }
        ImageCommand::Pull { reference, json } => {
            let mut last_line = String::new();
            let tty = std::io::stderr().is_terminal();
            let id = registries
                .pull(env, &reference, |p| {
                    if json {
                        if let Ok(line) = serde_json::to_string(p) {
                            println!("{line}");
                        }
                        return;
                    }
                    let line = progress_line(p);
                    if line != last_line {
                        if tty {
                            eprint!("\r\x1b[2K{line}");
                        } else {
                            eprintln!("{line}");
                        }
                        last_line = line;
                    }
                })
                .await;
            if tty && !json {
                eprintln!();
            }
            let id = id?;
            if json {
                // One line, like the progress lines before it.
                println!(
                    "{}",
                    serde_json::json!({ "reference": reference, "id": id })
                );
                return Ok(());
            }
            println!("pulled {reference} ({id})");
            Ok(())
        }
    }
}

/// `3/5 layers, 12 MB of 40 MB` — the pull in one line.
pub(crate) fn progress_line(p: &PullProgress) -> String {
    let (done, all) = p.counts();
    let (got, total) = p.bytes();
    if all == 0 {
        return p
            .status
            .clone()
            .unwrap_or_else(|| format!("pulling {}", p.reference));
    }
    let mut line = format!("pulling {}: {done}/{all} layers", p.reference);
    if total > 0 {
        line.push_str(&format!(
            ", {} of {}",
            bytes(i64::try_from(got).unwrap_or(i64::MAX)),
            bytes(i64::try_from(total).unwrap_or(i64::MAX))
        ));
    }
    line
}

fn print_tags(tags: &ImageTags) {
    if let Some(why) = &tags.registry_problem {
        eprintln!("changeover: the registry's tags are missing: {why}");
    }
    if let Some(rate) = &tags.rate_limit {
        if let (Some(remaining), Some(limit)) = (rate.remaining, rate.limit) {
            eprintln!(
                "{}: {remaining} of {limit} requests left in this window",
                tags.registry
            );
        }
    }
    if tags.tags.is_empty() {
        println!(
            "no tags of {} here or in {}",
            tags.repository, tags.registry
        );
        return;
    }
    let mut t = Table::new(["TAG", "WHERE", "DIGEST", "CREATED", "SIZE"]);
    for tag in &tags.tags {
        let place = match (tag.local, tag.in_registry) {
            (true, true) if tag.newer_in_registry => "local, newer in registry",
            (true, true) => "local, registry",
            (true, false) => "local",
            (false, _) => "registry",
        };
        t.row([
            tag.tag.clone(),
            place.into(),
            tag.digest
                .as_deref()
                .map(|d| d.chars().take(19).collect())
                .unwrap_or_else(|| "-".into()),
            tag.created.map(age).unwrap_or_else(|| "-".into()),
            tag.size
                .map(|s| bytes(i64::try_from(s).unwrap_or(i64::MAX)))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{t}");
}
