//! `changeover edge status|upgrade`: the edge proxy of the environment.

use changeover_application::Environment;
use changeover_core::Problem;
use changeover_docker::edge::{edge_status, upgrade_edge, Edge};

use crate::{print_json, EdgeCommand};

pub async fn run(env: &Environment, command: EdgeCommand) -> Result<(), Problem> {
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
    }
}
