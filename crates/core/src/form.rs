//! The GUI's service form: what a person types, checked by the same rules as
//! a stack file.
//!
//! A [`ServiceForm`] holds text as typed (a port may be `"abc"` until it is
//! checked). [`check`] writes the form into the service's Compose entry —
//! keeping the settings the form does not show, like labels or a Docker
//! healthcheck — places it among the other services of its stack, and reads
//! the result with [`crate::stack::parse`]. So a form and a file can never
//! disagree about what is valid, and every problem lands on the field it
//! came from.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::compose::{self, Yaml};
use crate::service::{split_image, MountKind, ServiceSpec, Strategy, UpdateOrder};
use crate::stack::{format_duration_ms, parse, Stack, StackIssue};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct FormEnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct FormPort {
    pub host: String,
    pub container: String,
    /// UDP rather than TCP.
    #[serde(default)]
    pub udp: bool,
    /// What its TCP carries when the stack says so for this port
    /// (`app_protocol`, or a well-known port the reader relays as TCP):
    /// shown beside the port, kept as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub app: Option<crate::edge::Protocol>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct FormVolume {
    /// A volume name (`data`) or an absolute host path.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// One service as the create/edit form shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ServiceForm {
    /// Editing an existing service (stack and name fixed) or creating one.
    pub editing: bool,
    pub stack: String,
    pub name: String,
    /// The image repository, without its tag.
    pub image: String,
    pub tag: String,
    /// As typed on a command line; empty: the image's own command.
    pub command: String,
    pub env: Vec<FormEnvVar>,
    pub ports: Vec<FormPort>,
    pub volumes: Vec<FormVolume>,
    pub replicas: String,
    pub strategy: Strategy,
    /// Canary: percent of new clients the new release gets first.
    pub canary_percent: String,
    /// Blue-green: how long the old release stays as standby after the
    /// switch; empty: until retired by hand.
    pub standby: String,
    /// HTTP, or plain TCP (then the health check is a TCP connect).
    pub protocol: crate::edge::Protocol,
    pub order: UpdateOrder,
    pub parallelism: String,
    pub delay: String,
    /// HTTP path the edge checks; empty: a TCP connect.
    pub health_path: String,
    pub health_interval: String,
    pub health_timeout: String,
    pub healthy_threshold: String,
    pub drain_timeout: String,
    pub deploy_timeout: String,
    /// Host names the edge serves the service by, on its shared ports
    /// (`x-changeover.hosts`), separated by spaces or commas.
    pub hosts: String,
    /// HTTPS for the hosts: `""` (none), `acme`, or `files` (the
    /// certificate files the stack file names, kept as they are).
    pub https: String,
    /// Answer HTTPS with `Strict-Transport-Security`.
    pub hsts: bool,
}

/// A problem with one field: `image`, `tag`, `ports[1].host`, `env[0]`,
/// `replicas`, `healthInterval`, … or `""` for the form as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct FormIssue {
    pub field: String,
    pub message: String,
}

/// What checking a form found: the service to deploy when nothing is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct FormCheck {
    pub spec: Option<ServiceSpec>,
    pub errors: Vec<FormIssue>,
    pub warnings: Vec<FormIssue>,
}

/// Joins a command for editing; arguments with spaces or quotes are quoted.
fn join_command(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                if a.contains('"') {
                    format!("'{a}'")
                } else {
                    format!("\"{a}\"")
                }
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl ServiceForm {
    /// An empty form for a new service in `stack`, with Changeover's defaults.
    pub fn blank(stack: &str) -> Self {
        let mut form = Self::from_spec(&ServiceSpec::new(stack, "", ""));
        form.editing = false;
        form.tag = String::new();
        form
    }

    /// The form for editing `spec`.
    pub fn from_spec(spec: &ServiceSpec) -> Self {
        let (repo, tag) = split_image(&spec.image);
        Self {
            editing: true,
            stack: spec.stack.clone(),
            name: spec.name.clone(),
            image: repo.to_string(),
            tag: tag.to_string(),
            command: spec
                .command
                .as_deref()
                .map(join_command)
                .unwrap_or_default(),
            env: spec
                .env
                .iter()
                .map(|(name, value)| FormEnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            ports: spec
                .ports
                .iter()
                .map(|p| FormPort {
                    host: p.host.to_string(),
                    container: p.container.to_string(),
                    udp: p.udp,
                    app: p.app,
                })
                .collect(),
            volumes: spec
                .mounts
                .iter()
                .map(|m| FormVolume {
                    source: m.source.clone(),
                    target: m.target.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            replicas: spec.replicas.to_string(),
            strategy: spec.strategy,
            canary_percent: spec.canary_percent.to_string(),
            standby: spec.standby_ms.map(format_duration_ms).unwrap_or_default(),
            protocol: spec.protocol,
            order: spec.update.order,
            parallelism: spec.update.parallelism.to_string(),
            delay: format_duration_ms(spec.update.delay_ms),
            health_path: spec.health.path.clone().unwrap_or_default(),
            health_interval: format_duration_ms(spec.health.interval_ms),
            health_timeout: format_duration_ms(spec.health.timeout_ms),
            healthy_threshold: spec.health.healthy_threshold.to_string(),
            drain_timeout: format_duration_ms(spec.drain_timeout_ms),
            deploy_timeout: format_duration_ms(spec.deploy_timeout_ms),
            hosts: spec.hosts.join(" "),
            https: match &spec.tls {
                None => String::new(),
                Some(t) if t.cert_file.is_some() => "files".into(),
                Some(_) => "acme".into(),
            },
            hsts: spec.tls.as_ref().is_some_and(|t| t.hsts),
        }
    }
}

fn issue(field: impl Into<String>, message: impl Into<String>) -> FormIssue {
    FormIssue {
        field: field.into(),
        message: message.into(),
    }
}

fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Rows the user filled in (an entirely empty row is ignored), with their
/// index in the form.
struct Rows {
    /// Form row of each written list item.
    ports: Vec<usize>,
    volumes: Vec<usize>,
    /// Form row of each environment variable name.
    env: BTreeMap<String, usize>,
}

/// Checks the form the way a stack file is checked. `existing` is the service
/// being edited (its settings the form does not show are kept); `others` are
/// the other services of its stack (for shared ports, volumes, networks).
pub fn check(
    form: &ServiceForm,
    existing: Option<&ServiceSpec>,
    others: &[ServiceSpec],
) -> FormCheck {
    let mut errors = Vec::new();
    let name = form.name.trim();
    let stack_name = form.stack.trim();
    if stack_name.is_empty() {
        errors.push(issue("stack", "a service belongs to a stack; name one"));
    }
    if name.is_empty() {
        errors.push(issue("name", "the service needs a name"));
    }
    let image = form.image.trim();
    let tag = form.tag.trim();
    if image.is_empty() {
        errors.push(issue("image", "choose or type an image"));
    } else if let Err(why) = crate::image::ImageRef::parse(image) {
        errors.push(issue(
            "image",
            format!("{image:?} is not an image repository: {why}"),
        ));
    } else if image.contains('@') {
        errors.push(issue(
            "image",
            format!("{image:?} is not an image repository: write it without a digest"),
        ));
    } else if split_image(image).1 != "latest" || image.ends_with(":latest") {
        errors.push(issue(
            "image",
            "write the repository only; the tag goes in the Tag field",
        ));
    }
    if tag.is_empty() {
        errors.push(issue("tag", "choose or type a tag"));
    } else if tag.contains(|c: char| c.is_whitespace() || c == '/' || c == ':' || c == '@') {
        errors.push(issue("tag", format!("{tag:?} is not an image tag")));
    }

    let base = existing
        .cloned()
        .unwrap_or_else(|| ServiceSpec::new(stack_name, name, ""));
    let mut svc = compose::service(&base);
    svc.set("image", Yaml::text(format!("{image}:{tag}")));
    if form.command.trim().is_empty() {
        svc.remove("command");
    } else {
        svc.set("command", Yaml::text(form.command.trim()));
    }

    let mut rows = Rows {
        ports: Vec::new(),
        volumes: Vec::new(),
        env: BTreeMap::new(),
    };
    let mut env = Vec::new();
    for (i, var) in form.env.iter().enumerate() {
        let key = var.name.trim();
        if key.is_empty() && var.value.is_empty() {
            continue;
        }
        if key.is_empty() {
            errors.push(issue(format!("env[{i}]"), "the variable needs a name"));
        } else if key.contains(|c: char| c == '=' || c.is_whitespace()) {
            errors.push(issue(
                format!("env[{i}]"),
                format!("{key:?} is not a variable name (no spaces or =)"),
            ));
        } else if rows.env.insert(key.to_string(), i).is_some() {
            errors.push(issue(format!("env[{i}]"), format!("{key} is set twice")));
        } else {
            env.push((key.to_string(), Yaml::text(&var.value)));
        }
    }
    if env.is_empty() {
        svc.remove("environment");
    } else {
        svc.set("environment", Yaml::Map(env));
    }

    let mut ports = Vec::new();
    for (i, p) in form.ports.iter().enumerate() {
        let (host, container) = (p.host.trim(), p.container.trim());
        if host.is_empty() && container.is_empty() {
            continue;
        }
        rows.ports.push(i);
        let mut port = vec![
            ("target".into(), Yaml::text(container)),
            ("published".into(), Yaml::text(host)),
        ];
        if p.udp {
            port.push(("protocol".into(), Yaml::text("udp")));
        }
        if let Some(app) = p.app {
            port.push(("app_protocol".into(), Yaml::text(app.as_str())));
        }
        ports.push(Yaml::Map(port));
    }
    if ports.is_empty() {
        svc.remove("ports");
    } else {
        svc.set("ports", Yaml::List(ports));
    }

    let mut volumes = Vec::new();
    let mut volume_names = BTreeSet::new();
    for (i, v) in form.volumes.iter().enumerate() {
        let (source, target) = (v.source.trim(), v.target.trim());
        if source.is_empty() && target.is_empty() {
            continue;
        }
        let field = format!("volumes[{i}]");
        if source.is_empty() {
            errors.push(issue(&field, "name a volume or an absolute host path"));
            continue;
        }
        if !target.starts_with('/') {
            errors.push(issue(
                &field,
                format!("the container path {target:?} must be absolute"),
            ));
            continue;
        }
        let kind = if source.starts_with('/') {
            MountKind::Bind
        } else if valid_volume_name(source) {
            volume_names.insert(source.to_string());
            MountKind::Volume
        } else {
            errors.push(issue(
                &field,
                format!("{source:?} is neither a volume name (letters, digits, _ . -) nor an absolute host path"),
            ));
            continue;
        };
        rows.volumes.push(i);
        volumes.push(Yaml::Map(vec![
            (
                "type".into(),
                Yaml::text(if kind == MountKind::Bind {
                    "bind"
                } else {
                    "volume"
                }),
            ),
            ("source".into(), Yaml::text(source)),
            ("target".into(), Yaml::text(target)),
            ("read_only".into(), Yaml::Plain(v.read_only.to_string())),
        ]));
    }
    if volumes.is_empty() {
        svc.remove("volumes");
    } else {
        svc.set("volumes", Yaml::List(volumes));
    }

    let order = match form.order {
        UpdateOrder::StartFirst => "start-first",
        UpdateOrder::StopFirst => "stop-first",
    };
    svc.set(
        "deploy",
        Yaml::Map(vec![
            ("replicas".into(), Yaml::text(form.replicas.trim())),
            (
                "update_config".into(),
                Yaml::Map(vec![
                    ("parallelism".into(), Yaml::text(form.parallelism.trim())),
                    ("delay".into(), Yaml::text(form.delay.trim())),
                    ("order".into(), Yaml::text(order)),
                ]),
            ),
        ]),
    );
    let mut health = Vec::new();
    if !form.health_path.trim().is_empty() {
        health.push(("path".into(), Yaml::text(form.health_path.trim())));
    }
    health.push(("interval".into(), Yaml::text(form.health_interval.trim())));
    health.push(("timeout".into(), Yaml::text(form.health_timeout.trim())));
    health.push((
        "healthy_threshold".into(),
        Yaml::text(form.healthy_threshold.trim()),
    ));
    health.push((
        "unhealthy_threshold".into(),
        Yaml::Plain(base.health.unhealthy_threshold.to_string()),
    ));
    let hosts: Vec<Yaml> = form
        .hosts
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|h| !h.is_empty())
        .map(Yaml::text)
        .collect();
    let tls = match form.https.as_str() {
        "" => None,
        "acme" => Some(vec![("acme".to_string(), Yaml::Plain("true".into()))]),
        "files" => match base.tls.as_ref().and_then(|t| t.cert_file.clone().zip(t.key_file.clone())) {
            Some((cert, key)) => Some(vec![
                ("cert".to_string(), Yaml::text(cert)),
                ("key".to_string(), Yaml::text(key)),
            ]),
            None => {
                errors.push(issue(
                    "https",
                    "certificate files are named in the stack file (x-changeover.tls: {cert, key}); here, choose ACME",
                ));
                None
            }
        },
        other => {
            errors.push(issue("https", format!("{other:?} is not a way to serve HTTPS")));
            None
        }
    }
    .map(|mut t| {
        if form.hsts {
            t.push(("hsts".to_string(), Yaml::Plain("true".into())));
        }
        Yaml::Map(t)
    });
    // What the form does not show (timeouts, trusted proxies, snapshots...)
    // is kept as the service had it.
    let shown = [
        "strategy",
        "canary",
        "standby",
        "protocol",
        "health",
        "drain_timeout",
        "deploy_timeout",
        "hosts",
        "tls",
    ];
    let kept: Vec<(String, Yaml)> = match svc.entry_mut("x-changeover") {
        Some(Yaml::Map(entries)) => entries
            .iter()
            .filter(|(k, _)| !shown.contains(&k.as_str()))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    svc.set(
        "x-changeover",
        Yaml::Map(
            [
                ("strategy".into(), Yaml::text(form.strategy.as_str())),
                (
                    "canary".into(),
                    // The guard is not in the form: kept as it was.
                    Yaml::Map(
                        [("percent".into(), Yaml::text(form.canary_percent.trim()))]
                            .into_iter()
                            .chain(
                                base.canary_guard
                                    .as_ref()
                                    .map(|g| ("guard".into(), crate::compose::guard(g))),
                            )
                            .collect(),
                    ),
                ),
            ]
            .into_iter()
            .chain(
                (!form.standby.trim().is_empty())
                    .then(|| ("standby".into(), Yaml::text(form.standby.trim()))),
            )
            // HTTP is the default, and unwritten it lets the reader relay
            // a well-known port of another protocol (5432) as TCP.
            .chain(
                (form.protocol != crate::edge::Protocol::Http)
                    .then(|| ("protocol".to_string(), Yaml::text(form.protocol.as_str()))),
            )
            .chain([
                ("health".into(), Yaml::Map(health)),
                (
                    "drain_timeout".into(),
                    Yaml::text(form.drain_timeout.trim()),
                ),
                (
                    "deploy_timeout".into(),
                    Yaml::text(form.deploy_timeout.trim()),
                ),
            ])
            .chain((!hosts.is_empty()).then(|| ("hosts".to_string(), Yaml::List(hosts))))
            .chain(tls.map(|t| ("tls".to_string(), t)))
            .chain(kept)
            .collect(),
        ),
    );

    if !errors.is_empty() {
        return FormCheck {
            spec: None,
            errors,
            warnings: Vec::new(),
        };
    }

    // The stack as it would be with this service in it.
    let mut stack = Stack::from_services(
        stack_name,
        others.iter().filter(|s| s.name != name).cloned().collect(),
    );
    for v in &volume_names {
        if !stack.volumes.contains(v) {
            stack.volumes.push(v.clone());
        }
    }
    for n in &base.networks {
        if n != "default" && !stack.networks.contains(n) {
            stack.networks.push(n.clone());
        }
    }
    let mut doc = compose::stack_yaml(&stack);
    if let Some(services) = doc.entry_mut("services") {
        services.set(name, svc);
    }
    let report = parse(&doc.write(), "form", None);
    let prefix = format!("services.{name}");
    let place = |i: &StackIssue| -> FormIssue {
        FormIssue {
            field: field_of(&i.key, &prefix, &rows),
            message: if i.key.starts_with(&prefix) || i.key == "name" {
                i.message.clone()
            } else {
                format!("{}: {}", i.key, i.message)
            },
        }
    };
    let errors: Vec<FormIssue> = report.errors.iter().map(place).collect();
    let warnings = report.warnings.iter().map(place).collect();
    let spec = match report.stack {
        Some(s) if errors.is_empty() => s.services.into_iter().find(|s| s.name == name),
        _ => None,
    };
    FormCheck {
        spec,
        errors,
        warnings,
    }
}

/// The form field a stack-file key came from.
fn field_of(key: &str, prefix: &str, rows: &Rows) -> String {
    if key == "name" {
        return "stack".into();
    }
    if key == prefix {
        return "name".into();
    }
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
        return String::new();
    };
    let indexed = |rest: &str, list: &str, map: &[usize]| -> Option<(usize, String)> {
        let inner = rest.strip_prefix(list)?.strip_prefix('[')?;
        let (n, tail) = inner.split_once(']')?;
        let row = *map.get(n.parse::<usize>().ok()?)?;
        Some((row, tail.trim_start_matches('.').to_string()))
    };
    if let Some((row, tail)) = indexed(rest, "ports", &rows.ports) {
        return match tail.as_str() {
            "published" => format!("ports[{row}].host"),
            "target" => format!("ports[{row}].container"),
            _ => format!("ports[{row}]"),
        };
    }
    if let Some((row, _)) = indexed(rest, "volumes", &rows.volumes) {
        return format!("volumes[{row}]");
    }
    if let Some(var) = rest.strip_prefix("environment.") {
        if let Some(row) = rows.env.get(var) {
            return format!("env[{row}]");
        }
    }
    match rest {
        "image" => "tag",
        "command" => "command",
        "ports" => "ports",
        "volumes" => "volumes",
        "deploy.replicas" => "replicas",
        "deploy.update_config.parallelism" => "parallelism",
        "deploy.update_config.delay" => "delay",
        "x-changeover.strategy" => "strategy",
        "x-changeover.canary.percent" => "canaryPercent",
        "x-changeover.standby" => "standby",
        "x-changeover.protocol" => "protocol",
        "x-changeover" => "healthPath",
        "x-changeover.health.path" => "healthPath",
        "x-changeover.health.interval" => "healthInterval",
        "x-changeover.health.timeout" => "healthTimeout",
        "x-changeover.health.healthy_threshold" => "healthyThreshold",
        "x-changeover.drain_timeout" => "drainTimeout",
        "x-changeover.deploy_timeout" => "deployTimeout",
        r if r.starts_with("x-changeover.hosts") => "hosts",
        r if r.starts_with("x-changeover.tls") => "https",
        _ => "",
    }
    .to_string()
}

impl Default for ServiceForm {
    fn default() -> Self {
        Self::blank("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Mount, PortMapping};

    fn web() -> ServiceSpec {
        let mut s = ServiceSpec::new("shop", "web", "changeover-demo:v1");
        s.ports.push(PortMapping::tcp(18080, 8080));
        s.labels.insert("team".into(), "shop".into());
        s.health.path = Some("/health".into());
        s.replicas = 3;
        s
    }

    fn fields(check: &FormCheck) -> Vec<(String, String)> {
        check
            .errors
            .iter()
            .map(|e| (e.field.clone(), e.message.clone()))
            .collect()
    }

    #[test]
    fn an_unchanged_form_gives_back_the_same_service() {
        let spec = web();
        let form = ServiceForm::from_spec(&spec);
        let checked = check(&form, Some(&spec), &[]);
        assert_eq!(checked.errors, vec![]);
        assert_eq!(
            checked.spec,
            Some(spec),
            "labels the form does not show are kept"
        );
    }

    #[test]
    fn a_new_service_reads_every_field() {
        let mut form = ServiceForm::blank("shop");
        form.name = "api".into();
        form.image = "registry.local:5000/shop/api".into();
        form.tag = "2.1".into();
        form.command = "serve --port 9000 \"--motd=hello world\"".into();
        form.env = vec![
            FormEnvVar {
                name: "MODE".into(),
                value: "production".into(),
            },
            FormEnvVar::default(),
            FormEnvVar {
                name: "GREETING".into(),
                value: "costs $5, not ${PRICE}".into(),
            },
        ];
        form.ports = vec![
            FormPort {
                host: "19000".into(),
                container: "9000".into(),
                udp: false,
                app: None,
            },
            FormPort {
                host: "19053".into(),
                container: "53".into(),
                udp: true,
                app: None,
            },
        ];
        form.volumes = vec![
            FormVolume {
                source: "api-data".into(),
                target: "/data".into(),
                read_only: false,
            },
            FormVolume {
                source: "/etc/ssl".into(),
                target: "/ssl".into(),
                read_only: true,
            },
        ];
        form.replicas = "2".into();
        form.order = UpdateOrder::StopFirst;
        form.health_path = "/ready".into();
        form.health_interval = "500ms".into();
        let checked = check(&form, None, &[web()]);
        assert_eq!(checked.errors, vec![]);
        let spec = checked.spec.expect("a valid form gives a service");
        assert_eq!(spec.image, "registry.local:5000/shop/api:2.1");
        assert_eq!(
            spec.command.as_deref(),
            Some(
                &[
                    "serve".to_string(),
                    "--port".into(),
                    "9000".into(),
                    "--motd=hello world".into()
                ][..]
            )
        );
        assert_eq!(spec.env.len(), 2, "an empty row is ignored");
        assert_eq!(
            spec.env["GREETING"], "costs $5, not ${PRICE}",
            "a form's `$` is literal"
        );
        assert_eq!(
            spec.ports,
            vec![
                PortMapping::tcp(19000, 9000),
                PortMapping {
                    host: 19053,
                    container: 53,
                    udp: true,
                    app: None,
                }
            ]
        );
        assert_eq!(
            spec.mounts,
            vec![
                Mount {
                    kind: MountKind::Volume,
                    source: "api-data".into(),
                    target: "/data".into(),
                    read_only: false,
                    options: Vec::new(),
                    anonymous: false,
                    volume: None,
                    external: false,
                },
                Mount {
                    kind: MountKind::Bind,
                    source: "/etc/ssl".into(),
                    target: "/ssl".into(),
                    read_only: true,
                    options: Vec::new(),
                    anonymous: false,
                    volume: None,
                    external: false,
                }
            ]
        );
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.update.order, UpdateOrder::StopFirst);
        assert_eq!(spec.health.path.as_deref(), Some("/ready"));
        assert_eq!(spec.health.interval_ms, 500);
        assert_eq!(ServiceForm::from_spec(&spec).command, form.command);
    }

    #[test]
    fn each_bad_field_is_named() {
        let spec = web();
        let mut form = ServiceForm::from_spec(&spec);
        form.ports = vec![
            FormPort::default(),
            FormPort {
                host: "abc".into(),
                container: "70000".into(),
                udp: false,
                app: None,
            },
        ];
        form.replicas = "-1".into();
        form.health_interval = "soon".into();
        form.health_path = "health".into();
        form.drain_timeout = String::new();
        let checked = check(&form, Some(&spec), &[]);
        assert_eq!(checked.spec, None);
        let got = fields(&checked);
        let named: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            named,
            vec![
                "ports[1].container",
                "ports[1].host",
                "replicas",
                "healthPath",
                "healthInterval",
                "drainTimeout"
            ],
            "{got:?}"
        );
        assert!(
            got[1]
                .1
                .contains("\"abc\" is not a whole number from 1 to 65535"),
            "{got:?}"
        );
    }

    #[test]
    fn sites_are_read_and_what_the_form_does_not_show_is_kept() {
        let mut spec = web();
        spec.timeouts.idle_ms = 5_000;
        spec.trusted_proxies = vec!["10.0.0.0/8".into()];
        spec.container.user = Some("1000".into());
        spec.container.cap_add = vec!["NET_ADMIN".into()];
        spec.container.memory = Some(512 << 20);
        let mut form = ServiceForm::from_spec(&spec);
        form.hosts = "Shop.example.test, www.shop.example.test".into();
        form.https = "acme".into();
        form.hsts = true;
        let checked = check(&form, Some(&spec), &[]);
        assert_eq!(checked.errors, vec![]);
        let got = checked.spec.unwrap();
        assert_eq!(got.hosts, ["shop.example.test", "www.shop.example.test"]);
        let tls = got.tls.clone().unwrap();
        assert_eq!((tls.cert_file, tls.hsts), (None, true), "ACME, with HSTS");
        assert_eq!(got.timeouts.idle_ms, 5_000, "timeouts kept");
        assert_eq!(got.trusted_proxies, ["10.0.0.0/8"], "trusted proxies kept");
        assert_eq!(got.container, spec.container, "container settings kept");
        // And back into the form as it was.
        let again = ServiceForm::from_spec(&got);
        assert_eq!(
            (again.hosts.as_str(), again.https.as_str(), again.hsts),
            ("shop.example.test www.shop.example.test", "acme", true)
        );

        for (hosts, https, field, says) in [
            ("bad_host.test", "", "hosts", "bad_host.test"),
            ("", "acme", "https", "tls needs hosts"),
            ("a.example.test", "files", "https", "choose ACME"),
        ] {
            let mut form = ServiceForm::from_spec(&spec);
            form.hosts = hosts.into();
            form.https = https.into();
            let checked = check(&form, Some(&spec), &[]);
            let e = checked.errors.iter().find(|e| e.field == field);
            assert!(
                e.is_some_and(|e| e.message.contains(says)),
                "{hosts} {https}: {:?}",
                checked.errors
            );
        }
    }

    #[test]
    fn strategy_settings_are_read_and_bad_ones_named() {
        let mut spec = web();
        spec.canary_guard = Some(crate::service::CanaryGuard {
            max_5xx_percent: 5,
            window_ms: 30_000,
            min_requests: 20,
        });
        let mut form = ServiceForm::from_spec(&spec);
        form.strategy = Strategy::Canary;
        form.canary_percent = "25".into();
        let checked = check(&form, Some(&spec), &[]);
        let got = checked.spec.unwrap();
        assert_eq!((got.strategy, got.canary_percent), (Strategy::Canary, 25));
        assert_eq!(
            got.canary_guard, spec.canary_guard,
            "the guard the form does not show is kept"
        );
        form.strategy = Strategy::BlueGreen;
        form.standby = "30m".into();
        let got = check(&form, Some(&spec), &[]).spec.unwrap();
        assert_eq!(got.standby_ms, Some(1_800_000));
        form.canary_percent = "0".into();
        form.standby = "later".into();
        let checked = check(&form, Some(&spec), &[]);
        assert_eq!(checked.spec, None);
        let got = fields(&checked);
        let named: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(named, vec!["canaryPercent", "standby"], "{got:?}");
    }

    #[test]
    fn names_images_env_and_volumes_are_checked_before_anything_else() {
        let mut form = ServiceForm::blank("Shop!");
        form.name = "web".into();
        form.image = "app:v1".into();
        form.env = vec![
            FormEnvVar {
                name: String::new(),
                value: "x".into(),
            },
            FormEnvVar {
                name: "A B".into(),
                value: "x".into(),
            },
        ];
        form.volumes = vec![FormVolume {
            source: "my data".into(),
            target: "data".into(),
            read_only: false,
        }];
        let got = fields(&check(&form, None, &[]));
        let named: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            named,
            vec!["image", "tag", "env[0]", "env[1]", "volumes[0]"],
            "{got:?}"
        );

        form.image = "app".into();
        form.tag = "v1".into();
        form.env.clear();
        form.volumes.clear();
        let got = fields(&check(&form, None, &[]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "stack");
        assert!(got[0].1.contains("is not a stack name"), "{got:?}");
    }

    #[test]
    fn a_host_port_of_another_service_in_the_stack_is_refused() {
        let mut form = ServiceForm::blank("shop");
        form.name = "api".into();
        form.image = "app".into();
        form.tag = "v1".into();
        form.ports = vec![FormPort {
            host: "18080".into(),
            container: "80".into(),
            udp: false,
            app: None,
        }];
        let got = fields(&check(&form, None, &[web()]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "ports");
        assert!(
            got[0].1.contains("already used by service `web`"),
            "{got:?}"
        );
    }
}
