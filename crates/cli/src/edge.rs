//! `changeover edge status|upgrade|config`: the edge proxy of the
//! environment.

use changeover_application::Environment;
use changeover_core::edge::{
    AcmeChallenge, CertificateSource, EdgeConfig, Request, Response, LETS_ENCRYPT_DIRECTORY,
};
use changeover_core::rollout::{expect_ok, EdgeControl};
use changeover_core::{Problem, ProblemCode};
use changeover_docker::edge::{edge_status, upgrade_edge, Edge};

use crate::table::{until, Table};
use crate::{print_json, EdgeCommand, EdgeConfigArgs};

pub async fn run(env: &Environment, command: EdgeCommand) -> Result<(), Problem> {
    if let EdgeCommand::Config(args) = command {
        return config(env, args).await;
    }
    let edge = match env.edge().await? {
        Some(edge) => edge,
        None => Edge::attach(&env.docker().await?),
    };
    match command {
        EdgeCommand::Status(args) => {
            let status = edge_status(&edge).await?;
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
            upgrade_edge(&edge).await?;
            let status = edge_status(&edge).await?;
            eprintln!(
                "the edge now runs {} with {} route(s)",
                status.image.as_deref().unwrap_or("?"),
                status.routes
            );
            Ok(())
        }
        EdgeCommand::Config(_) => Ok(()),
    }
}

/// The largest `--acme-ca` file read.
const MAX_CA_FILE: u64 = 1024 * 1024;

/// `changeover edge config`: shows the settings; with a flag, changes them
/// first (the edge checks them and changes nothing on a bad one).
async fn config(env: &Environment, args: EdgeConfigArgs) -> Result<(), Problem> {
    let changes = args.http_port.is_some()
        || args.https_port.is_some()
        || args.acme_directory.is_some()
        || args.acme_ca.is_some()
        || args.acme_email.is_some()
        || args.acme_challenge.is_some();
    let edge = if changes {
        env.ensure_edge().await?
    } else {
        match env.edge().await? {
            Some(edge) => edge,
            None => {
                let defaults = EdgeConfig::default();
                if args.json {
                    return print_json(
                        &serde_json::json!({"config": defaults, "certificates": []}),
                    );
                }
                println!("the edge is not running; it starts with these settings:");
                print_config(&defaults);
                return Ok(());
            }
        }
    };
    let (mut settings, _) = config_of(&edge).await?;
    if changes {
        if let Some(port) = args.http_port {
            settings.http_port = port;
        }
        if let Some(port) = args.https_port {
            settings.https_port = port;
        }
        let cleared = |v: String| Some(v).filter(|v| !v.is_empty());
        if let Some(url) = args.acme_directory {
            settings.acme_directory = cleared(url);
        }
        if let Some(email) = args.acme_email {
            settings.acme_email = cleared(email);
        }
        if let Some(challenge) = args.acme_challenge {
            settings.acme_challenge = match challenge.as_str() {
                "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
                _ => AcmeChallenge::Http01,
            };
        }
        if let Some(path) = args.acme_ca {
            settings.acme_ca = if path.is_empty() {
                None
            } else {
                Some(read_ca(std::path::Path::new(&path))?)
            };
        }
        expect_ok(edge.call(Request::ConfigSet { config: settings }).await?)?;
    }
    let (settings, certificates) = config_of(&edge).await?;
    if args.json {
        return print_json(&serde_json::json!({"config": settings, "certificates": certificates}));
    }
    print_config(&settings);
    if certificates.is_empty() {
        println!("certificates : none (a service with x-changeover.tls gets one)");
        return Ok(());
    }
    println!();
    let mut table = Table::new(["SERVICE", "SOURCE", "NAMES", "ISSUER", "EXPIRES", "STATE"]);
    for c in certificates {
        table.row([
            c.service,
            match c.source {
                CertificateSource::Files => "files".to_string(),
                CertificateSource::Acme => "acme".to_string(),
            },
            c.names.join(", "),
            c.issuer,
            until(c.not_after_ms / 1000),
            c.state,
        ]);
    }
    print!("{table}");
    Ok(())
}

async fn config_of(
    edge: &Edge,
) -> Result<(EdgeConfig, Vec<changeover_core::edge::CertificateStatus>), Problem> {
    match expect_ok(edge.call(Request::ConfigGet).await?)? {
        Response::Config {
            config,
            certificates,
        } => Ok((config, certificates)),
        other => Err(Problem::new(
            ProblemCode::EdgeError,
            format!("the edge answered config-get with {other:?}"),
        )),
    }
}

fn print_config(c: &EdgeConfig) {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    println!("http port    : {}", c.http_port);
    println!("https port   : {}", c.https_port);
    println!(
        "acme         : {}",
        c.acme_directory
            .clone()
            .unwrap_or_else(|| format!("{LETS_ENCRYPT_DIRECTORY} (Let's Encrypt)"))
    );
    println!(
        "acme check   : {}",
        match c.acme_challenge {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    );
    println!("acme email   : {}", or_dash(&c.acme_email));
    println!(
        "acme CA      : {}",
        if c.acme_ca.is_some() {
            "given (PEM)"
        } else {
            "the system's"
        }
    );
}

/// The PEM text of `--acme-ca` (bounded; the edge checks that it parses).
fn read_ca(path: &std::path::Path) -> Result<String, Problem> {
    use std::io::Read;
    let bad = |why: String| {
        Problem::new(
            ProblemCode::InvalidInput,
            format!("--acme-ca {}: {why}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_CA_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("not a PEM text file ({e})")))?;
    if text.len() as u64 > MAX_CA_FILE {
        return Err(bad("larger than 1 MiB".into()));
    }
    Ok(text)
}
