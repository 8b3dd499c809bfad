//! `changeover env ls|add|rm`: the environments (Docker daemons) Changeover
//! knows — discovered ones (DOCKER_HOST, Docker contexts, the local socket)
//! and the ones added here, whose TLS key goes into the OS keyring.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use changeover_application::{Environments, NewEnvironment};
use changeover_core::environment::{EnvironmentSpec, TlsFiles};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::read;
use serde::Serialize;

use crate::print_json;
use crate::table::Table;

/// What `env add` takes.
#[derive(clap::Args)]
pub struct AddArgs {
    /// The environment's name (what `--env NAME` then selects).
    pub name: String,
    /// unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT].
    #[arg(long, value_name = "URL")]
    pub host: String,
    /// The CA that signed the daemon's certificate (TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// The client certificate the daemon checks (TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key; imported into the OS keyring, the file
    /// is not kept.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// A line shown beside the name.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Trust the SSH host key with this fingerprint (SHA256:…), as shown
    /// when the key is not known yet.
    #[arg(long, value_name = "FINGERPRINT")]
    pub accept_host_key: Option<String>,
    /// Save it even if it does not answer now.
    #[arg(long)]
    pub force: bool,
}

pub async fn add(envs: &Environments, args: AddArgs) -> Result<(), Problem> {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let new = NewEnvironment {
        name: args.name.clone(),
        host: args.host.clone(),
        description: args.description.clone(),
        tls: args.tls_ca.is_some().then(|| TlsFiles {
            ca: path(&args.tls_ca),
            cert: path(&args.tls_cert),
            key: path(&args.tls_key),
        }),
    };
    if !args.force {
        let test = envs.test(&new).await;
        if let (Some(key), Some(p)) = (&test.host_key, &test.problem) {
            if p.code == ProblemCode::UnknownHostKey {
                let chosen = match &args.accept_host_key {
                    Some(fp) => fp.clone(),
                    None => ask_host_key(&args.host, &key.host, &key.fingerprints)?,
                };
                envs.trust_host_key(&args.host, &chosen).await?;
                eprintln!("trusted the host key {chosen} of {}", key.host);
            }
        }
    }
    let view = envs.add(&new, args.force).await?;
    let env = envs.get(Some(&view.spec.name))?;
    match tokio::time::timeout(Duration::from_secs(10), async {
        read::daemon_info(&env.docker().await?).await
    })
    .await
    {
        Ok(Ok(d)) => eprintln!(
            "added environment {}: Docker {} on {}/{} at {}",
            view.spec.name, d.version, d.os, d.arch, view.spec.host
        ),
        _ => eprintln!(
            "added environment {} ({}); it does not answer now",
            view.spec.name, view.spec.host
        ),
    }
    Ok(())
}

/// Shows an unknown host key's fingerprints and asks whether to trust it;
/// without a terminal, says how to accept it.
fn ask_host_key(url: &str, host: &str, fingerprints: &[String]) -> Result<String, Problem> {
    let first = fingerprints.first().cloned().unwrap_or_default();
    let listed = fingerprints.join(", ");
    if !std::io::stdin().is_terminal() {
        return Err(Problem::new(
            ProblemCode::UnknownHostKey,
            format!(
                "the host key of {host} is not known yet ({listed}); compare it with the host's own \
                 (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub there) and add again with \
                 --accept-host-key {}",
                first.split_whitespace().next().unwrap_or("")
            ),
        ));
    }
    eprintln!("The host key of {host} ({url}) is not known yet:");
    for f in fingerprints {
        eprintln!("  {f}");
    }
    eprint!(
        "Trust {} ? [y/N] ",
        first.split_whitespace().next().unwrap_or("")
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(first)
    } else {
        Err(Problem::new(
            ProblemCode::UnknownHostKey,
            format!("the host key of {host} was not trusted; nothing was added"),
        ))
    }
}

pub async fn rm(envs: &Environments, name: &str) -> Result<(), Problem> {
    envs.remove(name).await?;
    eprintln!("removed environment {name} and its keyring entries");
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

pub async fn ls(envs: &Environments, json: bool) -> Result<(), Problem> {
    let environments = envs.list();
    let default = &environments.default;
    let probes = environments.environments.iter().map(|spec| async move {
        let probe = async {
            let docker = envs.get(Some(&spec.name))?.docker().await?;
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
            is_default: &spec.name == default,
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
