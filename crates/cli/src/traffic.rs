//! `changeover traffic show|switch|split|promote|abort|preview|maintenance`.

use changeover_application::{traffic, Environment};
use changeover_core::edge::{TargetState, PREVIEW_COOKIE, PREVIEW_HEADER};
use changeover_core::service::TrafficView;
use changeover_core::Problem;

use crate::deploy::progress;
use crate::table::Table;
use crate::{print_json, TrafficCommand};

pub async fn run(env: &Environment, command: TrafficCommand) -> Result<(), Problem> {
    match command {
        TrafficCommand::Show { name, json } => {
            if let Some(done) = traffic::settle(env, &name, progress()).await? {
                eprintln!("{}", done.message);
            }
            let view = traffic::show(env, &name).await?;
            if json {
                return print_json(&view);
            }
            print_view(&view);
            Ok(())
        }
        TrafficCommand::Switch { name, to } => {
            let release = traffic::switch(env, &name, &to).await?;
            eprintln!("{name}: every new request goes to release {release}");
            Ok(())
        }
        TrafficCommand::Split { name, percent } => {
            let (old, new) = traffic::split(env, &name, percent).await?;
            eprintln!(
                "{name}: {percent}% of new clients to release {new}, {}% to release {old} (sticky per client)",
                100 - percent
            );
            Ok(())
        }
        TrafficCommand::Promote { name } => {
            let done = traffic::promote(env, &name, progress()).await?;
            eprintln!("{}", done.message);
            Ok(())
        }
        TrafficCommand::Abort { name } => {
            let done = traffic::abort(env, &name, progress()).await?;
            eprintln!("{}", done.message);
            Ok(())
        }
        TrafficCommand::Preview { name, token, off } => {
            if off {
                traffic::preview(env, &name, None).await?;
                eprintln!("{name}: preview ended");
                return Ok(());
            }
            let token = token.unwrap_or_else(traffic::new_preview_token);
            let release = traffic::preview(env, &name, Some(token.clone())).await?;
            let view = traffic::show(env, &name).await?;
            eprintln!(
                "{name}: requests carrying the preview token go to release {}, whatever the split.",
                release.unwrap_or_default()
            );
            let host = env.link_host();
            for r in &view.routes {
                eprintln!(
                    "  in a browser: http://{host}:{}/?{PREVIEW_COOKIE}={token}   (sets a cookie; ?{PREVIEW_COOKIE}=off clears it)",
                    r.spec.port
                );
                eprintln!(
                    "  with curl:    curl -H '{PREVIEW_HEADER}: {token}' http://{host}:{}/",
                    r.spec.port
                );
            }
            println!("{token}");
            Ok(())
        }
        TrafficCommand::Maintenance { name, message, off } => {
            traffic::maintenance(env, &name, (!off).then_some(message)).await?;
            if off {
                eprintln!("{name}: traffic resumed");
            } else {
                eprintln!("{name}: in maintenance; every request gets a 503 page");
            }
            Ok(())
        }
    }
}

fn ms(us: Option<u64>) -> String {
    us.map(|u| format!("{:.1}", u as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn print_view(view: &TrafficView) {
    if let Some(c) = &view.candidate {
        println!(
            "release {} runs beside release {} ({}){}",
            c.release,
            view.current
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            c.strategy.as_str(),
            if c.switched_ms.is_some() {
                "; all traffic switched to it"
            } else {
                ""
            }
        );
    }
    for r in &view.routes {
        let split = if r.policy.weights.is_empty() {
            "every healthy container alike".to_string()
        } else {
            let total: u32 = r.policy.weights.iter().map(|s| s.weight).sum();
            r.policy
                .weights
                .iter()
                .map(|s| {
                    let share = (s.weight * 100).checked_div(total).unwrap_or(0);
                    format!("r{} {share}%", s.release)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let carries = match r.spec.udp {
            changeover_core::edge::Udp::No => "",
            changeover_core::edge::Udp::Also => " (TCP and UDP; a UDP flow counts as a request)",
            changeover_core::edge::Udp::Only => "/udp (REQUESTS are flows, 2XX those answered)",
        };
        println!("port {}{carries}: {split}", r.spec.port);
        if let Some(m) = &r.policy.maintenance {
            println!("  maintenance: {m}");
        }
        if let Some(g) = &r.policy.guard {
            println!(
                "  guard: release {} is aborted if over {}% of its requests get a 5xx or no answer in {} s (from {} requests)",
                g.release,
                g.max_5xx_percent,
                g.window_ms / 1000,
                g.min_requests
            );
        }
        if let Some(t) = &r.policy.tripped {
            println!("  guard tripped: {t}");
        }
        if let Some(p) = &r.policy.preview {
            println!("  preview: release {} for token {}", p.release, p.token);
        }
        let mut t = Table::new([
            "RELEASE",
            "HEALTHY",
            "REQUESTS",
            "2XX",
            "3XX",
            "4XX",
            "5XX",
            "FAILED",
            "IN FLIGHT",
            "P50 MS",
            "P95 MS",
            "P99 MS",
        ]);
        for m in &r.metrics {
            let mine: Vec<_> = r
                .targets
                .iter()
                .filter(|x| x.spec.release == m.release && x.state != TargetState::Draining)
                .collect();
            let healthy = mine
                .iter()
                .filter(|x| x.state == TargetState::Healthy)
                .count();
            t.row([
                format!(
                    "{}{}",
                    m.release,
                    if Some(m.release) == view.current {
                        " *"
                    } else {
                        ""
                    }
                ),
                if mine.is_empty() {
                    "-".to_string()
                } else {
                    format!("{healthy}/{}", mine.len())
                },
                m.requests.to_string(),
                m.responses[0].to_string(),
                m.responses[1].to_string(),
                m.responses[2].to_string(),
                m.responses[3].to_string(),
                m.failures.to_string(),
                m.in_flight.to_string(),
                ms(m.p50_us),
                ms(m.p95_us),
                ms(m.p99_us),
            ]);
        }
        print!("{t}");
    }
}
