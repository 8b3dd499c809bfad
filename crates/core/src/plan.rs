//! What a deploy or a rollback would change, said before anything does
//! (`--dry-run`, and the window's Deploy and Roll back): per service, the
//! image (reference and image ID) and every setting that differs between
//! the definition running now and the one that would run.
//!
//! Settings are compared as their stored JSON, field by field, so a
//! setting added later is compared too; the ones people read first
//! (image, environment, ports, mounts, replicas, strategy, health) come
//! first and are written the way a stack file writes them. Environment
//! values whose names look secret (`PASSWORD`, `TOKEN`, `SECRET`, `KEY`,
//! …) are never shown, only that they changed.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::service::{MountKind, ServiceSpec};

/// What a deploy does to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum PlanAction {
    /// The service does not exist yet.
    Create,
    /// A new release with what changed.
    Update,
    /// Back to the release before.
    Rollback,
    /// The same definition and image: nothing would happen.
    Unchanged,
}

/// One setting that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct FieldChange {
    /// `image`, `env.DB_HOST`, `ports`, `replicas`, `health.path`, …
    pub field: String,
    /// As it is now (`None`: not set).
    pub from: Option<String>,
    /// As it would be (`None`: removed).
    pub to: Option<String>,
}

/// What a deploy or rollback would do to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ServicePlan {
    /// `stack/service`.
    pub service: String,
    pub action: PlanAction,
    /// The release running now.
    pub from_release: Option<u32>,
    /// The release it would run (a rollback's; a deploy's new number).
    pub to_release: Option<u32>,
    /// The image ID running now and the one that would (`None`: not on
    /// the daemon yet — it would be pulled or built).
    pub from_image_id: Option<String>,
    pub to_image_id: Option<String>,
    /// What would happen to the image first (`pulled`, `built`), if anything.
    pub image_note: Option<String>,
    pub changes: Vec<FieldChange>,
    /// The `VOLUME`s the image declares and no mount covers, and the
    /// volume each replica keeps one in (`/var/lib/postgresql/data in
    /// shop_db_anon_var_lib_postgresql_data`, `(new)` when a deploy would
    /// create it). Known once the image is on the daemon.
    #[serde(default)]
    pub image_volumes: Vec<String>,
}

/// Whether an environment variable's value must not be shown.
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "PWD",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "PRIVATE",
        "AUTH",
        "SALT",
        "CERT",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Shown in place of a secret value.
pub const MASKED: &str = "••••••";

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ports(spec: &ServiceSpec) -> String {
    spec.ports
        .iter()
        .map(|p| match p.app {
            Some(app) if app != spec.protocol => format!("{} ({})", p.label(), app.as_str()),
            _ => p.label(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mounts(spec: &ServiceSpec) -> String {
    spec.mounts
        .iter()
        .map(|m| {
            let kind = if m.kind == MountKind::Bind {
                "bind "
            } else if m.anonymous {
                "anonymous "
            } else {
                ""
            };
            let ro = if m.read_only { ":ro" } else { "" };
            format!("{kind}{}:{}{ro}", m.source, m.target)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn push(out: &mut Vec<FieldChange>, field: &str, from: Option<String>, to: Option<String>) {
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if from != to && !(empty(&from) && empty(&to)) {
        out.push(FieldChange {
            field: field.to_string(),
            from: from.filter(|s| !s.is_empty()),
            to: to.filter(|s| !s.is_empty()),
        });
    }
}

/// Every setting of `new` that differs from `old` (`None`: a new service,
/// so every setting that is set).
pub fn spec_changes(old: Option<&ServiceSpec>, new: &ServiceSpec) -> Vec<FieldChange> {
    let mut out = Vec::new();
    push(
        &mut out,
        "image",
        old.map(|o| o.image.clone()),
        Some(new.image.clone()),
    );
    // Environment, one variable at a time; secrets masked.
    let empty = std::collections::BTreeMap::new();
    let old_env = old.map(|o| &o.env).unwrap_or(&empty);
    let keys: std::collections::BTreeSet<&String> = old_env.keys().chain(new.env.keys()).collect();
    for k in keys {
        let (a, b) = (old_env.get(k), new.env.get(k));
        if a == b {
            continue;
        }
        let show = |v: Option<&String>| {
            v.map(|v| {
                if looks_secret(k) {
                    MASKED.to_string()
                } else {
                    v.clone()
                }
            })
        };
        let (from, to) = (show(a), show(b));
        // Both masked: still say it changed.
        let to = match (&from, &to) {
            (Some(f), Some(t)) if f == t => Some(format!("{MASKED} (changed)")),
            _ => to,
        };
        out.push(FieldChange {
            field: format!("env.{k}"),
            from,
            to,
        });
    }
    push(&mut out, "ports", old.map(ports), Some(ports(new)));
    push(&mut out, "mounts", old.map(mounts), Some(mounts(new)));
    push(
        &mut out,
        "replicas",
        old.map(|o| o.replicas.to_string()),
        Some(new.replicas.to_string()),
    );
    push(
        &mut out,
        "strategy",
        old.map(|o| o.strategy.as_str().to_string()),
        Some(new.strategy.as_str().to_string()),
    );
    // Everything else, field by field as stored.
    let first = [
        "stack", "name", "image", "env", "ports", "mounts", "replicas", "strategy",
    ];
    let as_map = |s: &ServiceSpec| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (old.map(as_map).unwrap_or_default(), as_map(new));
    let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
    fields.sort();
    fields.dedup();
    for f in fields {
        if first.contains(&f.as_str()) {
            continue;
        }
        let (x, y) = (a.get(f), b.get(f));
        if x == y {
            continue;
        }
        // A nested setting left out when empty (container) is an empty one.
        let none = serde_json::Value::Object(serde_json::Map::new());
        let (x, y) = match (x, y) {
            (None, Some(serde_json::Value::Object(_))) if old.is_some() => (Some(&none), y),
            (Some(serde_json::Value::Object(_)), None) => (x, Some(&none)),
            other => other,
        };
        match (x, y) {
            // Nested settings (health, update, timeouts): one line per leaf.
            (Some(serde_json::Value::Object(xo)), Some(serde_json::Value::Object(yo))) => {
                let mut keys: Vec<&String> = xo.keys().chain(yo.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let (p, q) = (xo.get(k), yo.get(k));
                    if p != q {
                        push(
                            &mut out,
                            &format!("{f}.{k}"),
                            p.filter(|v| !v.is_null()).map(compact),
                            q.filter(|v| !v.is_null()).map(compact),
                        );
                    }
                }
            }
            _ => push(
                &mut out,
                f,
                x.filter(|v| !v.is_null()).map(compact),
                y.filter(|v| !v.is_null()).map(compact),
            ),
        }
    }
    out
}

/// One plan's lines for a terminal.
pub fn describe(plan: &ServicePlan) -> String {
    let mut text = match plan.action {
        PlanAction::Create => format!("{}: would be created (release 1)", plan.service),
        PlanAction::Update => format!(
            "{}: release {} → a new release {}",
            plan.service,
            plan.from_release.map_or("-".into(), |r| r.to_string()),
            plan.to_release.map_or("".into(), |r| r.to_string())
        ),
        PlanAction::Rollback => format!(
            "{}: back from release {} to release {}",
            plan.service,
            plan.from_release.map_or("-".into(), |r| r.to_string()),
            plan.to_release.map_or("-".into(), |r| r.to_string())
        ),
        PlanAction::Unchanged => format!("{}: unchanged", plan.service),
    };
    let short = |id: &Option<String>| {
        id.as_deref().map(|i| {
            i.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        })
    };
    if plan.from_image_id != plan.to_image_id || plan.image_note.is_some() {
        text.push_str(&format!(
            "\n  image ID: {} → {}",
            short(&plan.from_image_id).unwrap_or_else(|| "-".into()),
            short(&plan.to_image_id)
                .or_else(|| plan.image_note.clone())
                .unwrap_or_else(|| "-".into())
        ));
    }
    for c in &plan.changes {
        text.push_str(&format!(
            "\n  {}: {} → {}",
            c.field,
            c.from.as_deref().unwrap_or("(not set)"),
            c.to.as_deref().unwrap_or("(removed)")
        ));
    }
    for v in &plan.image_volumes {
        text.push_str(&format!("\n  image VOLUME {v}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Mount, PortMapping, Strategy};

    fn spec() -> ServiceSpec {
        let mut s = ServiceSpec::new("shop", "web", "shop/web:1.0");
        s.env.insert("DB_HOST".into(), "db".into());
        s.env.insert("DB_PASSWORD".into(), "hunter2".into());
        s.ports = vec![PortMapping::tcp(8080, 80)];
        s
    }

    #[test]
    fn the_changes_say_what_differs_and_never_a_secret() {
        let old = spec();
        let mut new = spec();
        new.image = "shop/web:1.1".into();
        new.env.insert("DB_HOST".into(), "db2".into());
        new.env.insert("DB_PASSWORD".into(), "s3cret".into());
        new.env.insert("API_TOKEN".into(), "t0k".into());
        new.env.remove("DB_HOST");
        new.env.insert("MODE".into(), "fast".into());
        new.replicas = 3;
        new.strategy = Strategy::Canary;
        new.mounts = vec![Mount {
            kind: MountKind::Volume,
            source: "data".into(),
            target: "/data".into(),
            read_only: true,
            options: Vec::new(),
            anonymous: false,
            volume: None,
            external: false,
        }];
        new.health.path = Some("/ready".into());
        let changes = spec_changes(Some(&old), &new);
        let line = |f: &str| {
            changes
                .iter()
                .find(|c| c.field == f)
                .map(|c| (c.from.clone(), c.to.clone()))
                .unwrap_or_else(|| panic!("{f} in {changes:?}"))
        };
        assert_eq!(
            line("image"),
            (Some("shop/web:1.0".into()), Some("shop/web:1.1".into()))
        );
        assert_eq!(line("env.DB_HOST"), (Some("db".into()), None));
        assert_eq!(line("env.MODE"), (None, Some("fast".into())));
        assert_eq!(
            line("env.DB_PASSWORD"),
            (Some(MASKED.into()), Some(format!("{MASKED} (changed)")))
        );
        assert_eq!(line("env.API_TOKEN"), (None, Some(MASKED.into())));
        assert_eq!(line("replicas"), (Some("1".into()), Some("3".into())));
        assert_eq!(
            line("strategy"),
            (Some("rolling".into()), Some("canary".into()))
        );
        assert_eq!(line("mounts"), (None, Some("data:/data:ro".into())));
        assert_eq!(line("health.path"), (None, Some("/ready".into())));
        let text = format!("{changes:?}");
        assert!(!text.contains("hunter2") && !text.contains("s3cret") && !text.contains("t0k"));
        // The order people read first.
        let order: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(&order[..2], &["image", "env.API_TOKEN"]);
        assert!(
            spec_changes(Some(&old), &old).is_empty(),
            "the same: nothing"
        );
        let created = spec_changes(None, &old);
        assert!(created
            .iter()
            .any(|c| c.field == "ports" && c.to.as_deref() == Some("8080:80")));
    }

    #[test]
    fn container_settings_are_told_one_by_one() {
        let old = ServiceSpec::new("s", "web", "nginx:1");
        let mut new = old.clone();
        new.container.user = Some("1000".into());
        new.container.memory = Some(512 << 20);
        let changes: Vec<(String, Option<String>)> = spec_changes(Some(&old), &new)
            .into_iter()
            .map(|c| (c.field, c.to))
            .collect();
        assert_eq!(
            changes,
            [
                (
                    "container.memory".to_string(),
                    Some("536870912".to_string())
                ),
                ("container.user".to_string(), Some("1000".to_string())),
            ]
        );
        let back: Vec<String> = spec_changes(Some(&new), &old)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(back, ["container.memory", "container.user"]);
    }

    #[test]
    fn a_plan_reads_as_lines() {
        let plan = ServicePlan {
            image_volumes: vec!["/data in s_web_anon_data (new)".into()],
            service: "shop/web".into(),
            action: PlanAction::Update,
            from_release: Some(2),
            to_release: Some(3),
            from_image_id: Some("sha256:aaaaaaaaaaaaaaaa".into()),
            to_image_id: None,
            image_note: Some("pulled first".into()),
            changes: vec![FieldChange {
                field: "image".into(),
                from: Some("a:1".into()),
                to: Some("a:2".into()),
            }],
        };
        assert_eq!(
            describe(&plan),
            "shop/web: release 2 → a new release 3\n  image ID: aaaaaaaaaaaa → pulled first\n  image: a:1 → a:2\n  image VOLUME /data in s_web_anon_data (new)"
        );
    }
}
