//! A corpus of Compose files as people write them (`tests/corpus/*/`):
//! each folder's `compose.yml` is read as `changeover stack deploy` reads
//! it, and what it must parse to — every service's settings, or every
//! message word for word — is in the folder's `expected.txt`.
//! `CORPUS_BLESS=1 cargo test -p changeover-core --test corpus` rewrites
//! them (review the diff: it is the specification).

use std::path::Path;

use changeover_core::service::ServiceSpec;
use changeover_core::stack::{read_file_with, StackReport};

fn render(report: &StackReport, root: &Path) -> String {
    let strip = |s: String| s.replace(&format!("{}/", root.display()), "");
    let mut out = Vec::new();
    for e in &report.errors {
        out.push(strip(format!("error: {e}")));
    }
    for w in &report.warnings {
        out.push(strip(format!("warning: {w}")));
    }
    if let Some(stack) = &report.stack {
        out.push(format!("stack {}", stack.name));
        for s in &stack.services {
            out.push(strip(service(s)));
        }
        if !stack.volumes.is_empty() {
            out.push(format!("volumes {}", stack.volumes.join(", ")));
        }
    }
    out.join("\n") + "\n"
}

fn service(s: &ServiceSpec) -> String {
    let mut parts = vec![format!("service {} image {}", s.name, s.image)];
    if let Some(c) = &s.command {
        parts.push(format!("command {c:?}"));
    }
    if !s.env.is_empty() {
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("env {}", env.join(" ")));
    }
    if !s.ports.is_empty() {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| match p.app {
                Some(app) => format!("{} ({})", p.label(), app.as_str()),
                None => p.label(),
            })
            .collect();
        parts.push(format!("ports {}", ports.join(",")));
    }
    for m in &s.mounts {
        parts.push(format!(
            "mount {:?} {} {}{}{}",
            m.kind,
            m.source,
            m.target,
            if m.read_only { " ro" } else { "" },
            if m.options.is_empty() {
                String::new()
            } else {
                format!(" {}", m.options.join(","))
            }
        ));
    }
    for t in &s.tmpfs {
        parts.push(
            format!("tmpfs {} {}", t.target, t.options)
                .trim_end()
                .to_string(),
        );
    }
    if !s.labels.is_empty() {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("labels {}", labels.join(" ")));
    }
    if let Some(h) = &s.healthcheck {
        parts.push(format!(
            "healthcheck {:?} every {} ms",
            h.test, h.interval_ms
        ));
    }
    if !s.depends_on.is_empty() {
        parts.push(format!("after {}", s.depends_on.join(",")));
    }
    if let Some(r) = &s.restart {
        parts.push(format!("restart {r}"));
    }
    if !s.container.is_default() {
        parts.push(format!(
            "container {}",
            serde_json::to_string(&s.container).unwrap_or_default()
        ));
    }
    parts.join("; ")
}

#[test]
fn every_file_of_the_corpus_reads_as_expected() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut dirs: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("compose.yml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 9, "{dirs:?}");
    let shell = [("TZ".to_string(), "Europe/Berlin".to_string())];
    let mut wrong = Vec::new();
    for dir in dirs {
        let report = read_file_with(&dir.join("compose.yml"), shell.clone());
        let got = render(&report, &corpus);
        let expected_file = dir.join("expected.txt");
        if std::env::var_os("CORPUS_BLESS").is_some() {
            std::fs::write(&expected_file, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if got != expected {
            wrong.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
