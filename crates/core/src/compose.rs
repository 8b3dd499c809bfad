//! Writing Compose: service definitions back into a stack file that
//! [`crate::stack::parse`] reads into the same definitions.
//!
//! The writer is deliberately small: every text value is written
//! double-quoted with JSON escapes (valid YAML, and never mistaken for a
//! number, a boolean or `null`), keys are bare when they are plain words.
//! Settings at their default are left out so exported files stay short.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::edge::HealthProbe;
use crate::service::{
    MountKind, ServiceSpec, Strategy, UpdateConfig, DEFAULT_CANARY_PERCENT,
    DEFAULT_DEPLOY_TIMEOUT_MS, DEFAULT_DRAIN_TIMEOUT_MS,
};
use crate::stack::{format_duration_ms, Stack};
use crate::{Problem, ProblemCode};

/// A YAML value to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Yaml {
    /// Written double-quoted.
    Text(String),
    /// Written as is (numbers, booleans).
    Plain(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub(crate) fn text(s: impl Into<String>) -> Self {
        Yaml::Text(s.into())
    }

    /// The entry `key` of a mapping, for callers that adjust a written service.
    pub(crate) fn set(&mut self, key: &str, value: Yaml) {
        if let Yaml::Map(entries) = self {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key.to_string(), value)),
            }
        }
    }

    pub(crate) fn entry_mut(&mut self, key: &str) -> Option<&mut Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Yaml::Map(entries) = self {
            entries.retain(|(k, _)| k != key);
        }
    }

    /// The document, ending with a newline.
    pub(crate) fn write(&self) -> String {
        let mut out = String::new();
        match self {
            Yaml::Map(entries) if !entries.is_empty() => write_entries(&mut out, entries, 0),
            other => {
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
        out
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !k.starts_with(['-', '.'])
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "~"
        )
        && k.parse::<f64>().is_err();
    if plain {
        k.to_string()
    } else {
        quote(k)
    }
}

/// Empty collections and scalars, on one line.
fn inline(v: &Yaml) -> String {
    match v {
        // `$` is literal here: escaped so interpolation gives it back.
        Yaml::Text(s) => quote(&s.replace('$', "$$")),
        Yaml::Plain(s) => s.clone(),
        Yaml::List(items) => format!(
            "[{}]",
            items.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        Yaml::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", key(k), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn write_entries(out: &mut String, entries: &[(String, Yaml)], indent: usize) {
    let pad = " ".repeat(indent);
    for (k, v) in entries {
        match v {
            Yaml::Map(inner) if !inner.is_empty() => {
                out.push_str(&format!("{pad}{}:\n", key(k)));
                write_entries(out, inner, indent + 2);
            }
            Yaml::List(items) if !items.is_empty() => {
                out.push_str(&format!("{pad}{}:\n", key(k)));
                for item in items {
                    write_item(out, item, indent + 2);
                }
            }
            _ => out.push_str(&format!("{pad}{}: {}\n", key(k), inline(v))),
        }
    }
}

fn write_item(out: &mut String, item: &Yaml, indent: usize) {
    let pad = " ".repeat(indent);
    match item {
        Yaml::Map(entries) if !entries.is_empty() => {
            // The entries one level in, the first one's indent replaced by "- ".
            let mut block = String::new();
            write_entries(&mut block, entries, indent + 2);
            out.push_str(&pad);
            out.push_str("- ");
            out.push_str(&block[indent + 2..]);
        }
        _ => out.push_str(&format!("{pad}- {}\n", inline(item))),
    }
}

fn number(n: impl ToString) -> Yaml {
    Yaml::Plain(n.to_string())
}

/// `x-changeover.canary` of a service.
fn canary(spec: &ServiceSpec) -> Yaml {
    let mut c = vec![("percent".to_string(), number(spec.canary_percent))];
    if let Some(g) = &spec.canary_guard {
        c.push(("guard".into(), guard(g)));
    }
    Yaml::Map(c)
}

/// `x-changeover.canary.guard`.
/// A port as written: `8080:80`, `53:53/udp`; the long syntax when it says
/// what its TCP carries (`app_protocol`), so reading it back decides the
/// same.
fn port(p: &crate::service::PortMapping) -> Yaml {
    let Some(app) = p.app else {
        return Yaml::text(p.label());
    };
    let mut m = vec![
        ("target".to_string(), Yaml::Plain(p.container.to_string())),
        ("published".to_string(), Yaml::Plain(p.host.to_string())),
    ];
    if p.udp {
        m.push(("protocol".into(), Yaml::text("udp")));
    }
    m.push(("app_protocol".into(), Yaml::text(app.as_str())));
    Yaml::Map(m)
}

pub(crate) fn guard(g: &crate::service::CanaryGuard) -> Yaml {
    Yaml::Map(vec![
        ("max_5xx_percent".into(), number(g.max_5xx_percent)),
        ("window".into(), duration(g.window_ms)),
        ("min_requests".into(), number(g.min_requests)),
    ])
}

/// The container settings as the Compose keys they were read from.
fn container_settings(c: &crate::container::ContainerSettings) -> Vec<(String, Yaml)> {
    use crate::container::{format_bytes, format_cpus};
    let mut out: Vec<(String, Yaml)> = Vec::new();
    let mut text = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.push((k.into(), Yaml::text(v)));
        }
    };
    text("user", &c.user);
    text("working_dir", &c.working_dir);
    text("hostname", &c.hostname);
    text("domainname", &c.domainname);
    text("stop_signal", &c.stop_signal);
    text("cpuset", &c.cpuset);
    text("ipc", &c.ipc);
    text("pid", &c.pid);
    text("userns_mode", &c.userns_mode);
    text("runtime", &c.runtime);
    let list = |v: &[String]| Yaml::List(v.iter().map(Yaml::text).collect());
    if let Some(e) = &c.entrypoint {
        out.push(("entrypoint".into(), list(e)));
    }
    if let Some(ms) = c.stop_grace_period_ms {
        out.push(("stop_grace_period".into(), duration(ms)));
    }
    let flag = |b: bool| Yaml::Plain(b.to_string());
    for (k, on) in [
        ("tty", c.tty),
        ("stdin_open", c.stdin_open),
        ("privileged", c.privileged),
        ("read_only", c.read_only),
        ("oom_kill_disable", c.oom_kill_disable),
    ] {
        if on {
            out.push((k.into(), flag(true)));
        }
    }
    if let Some(init) = c.init {
        out.push(("init".into(), flag(init)));
    }
    for (k, v) in [
        ("cap_add", &c.cap_add),
        ("cap_drop", &c.cap_drop),
        ("security_opt", &c.security_opt),
        ("devices", &c.devices),
        ("extra_hosts", &c.extra_hosts),
        ("dns", &c.dns),
        ("dns_search", &c.dns_search),
        ("dns_opt", &c.dns_opt),
        ("group_add", &c.group_add),
    ] {
        if !v.is_empty() {
            out.push((k.into(), list(v)));
        }
    }
    if !c.sysctls.is_empty() {
        out.push(("sysctls".into(), key_values(&c.sysctls)));
    }
    if !c.ulimits.is_empty() {
        out.push((
            "ulimits".into(),
            Yaml::Map(
                c.ulimits
                    .iter()
                    .map(|(name, l)| {
                        let n = |v: i64| Yaml::Plain(v.to_string());
                        (
                            name.clone(),
                            Yaml::Map(vec![("soft".into(), n(l.soft)), ("hard".into(), n(l.hard))]),
                        )
                    })
                    .collect(),
            ),
        ));
    }
    for (k, v) in [
        ("shm_size", c.shm_size),
        ("mem_limit", c.memory),
        ("mem_reservation", c.memory_reservation),
    ] {
        if let Some(b) = v {
            out.push((k.into(), Yaml::text(format_bytes(b))));
        }
    }
    if let Some(swap) = c.memory_swap {
        let v = if swap < 0 {
            swap.to_string()
        } else {
            format_bytes(swap as u64)
        };
        out.push(("memswap_limit".into(), Yaml::text(v)));
    }
    if let Some(n) = c.nano_cpus {
        out.push(("cpus".into(), Yaml::text(format_cpus(n))));
    }
    if !c.devices_requested.is_empty() {
        let devices = c
            .devices_requested
            .iter()
            .map(|d| {
                let mut m = Vec::new();
                if !d.driver.is_empty() {
                    m.push(("driver".to_string(), Yaml::text(&d.driver)));
                }
                if d.device_ids.is_empty() {
                    let count = if d.count < 0 {
                        Yaml::text("all")
                    } else {
                        Yaml::Plain(d.count.to_string())
                    };
                    m.push(("count".to_string(), count));
                } else {
                    m.push(("device_ids".to_string(), list(&d.device_ids)));
                }
                m.push(("capabilities".to_string(), list(&d.capabilities)));
                if !d.options.is_empty() {
                    m.push(("options".to_string(), key_values(&d.options)));
                }
                Yaml::Map(m)
            })
            .collect();
        out.push(("gpus".into(), Yaml::List(devices)));
    }
    for (k, v) in [
        ("cpu_shares", c.cpu_shares.map(|n| n as i64)),
        ("cpu_period", c.cpu_period),
        ("cpu_quota", c.cpu_quota),
        ("pids_limit", c.pids_limit),
        ("oom_score_adj", c.oom_score_adj),
    ] {
        if let Some(n) = v {
            out.push((k.into(), Yaml::Plain(n.to_string())));
        }
    }
    if let Some(l) = &c.logging {
        let mut m = Vec::new();
        if !l.driver.is_empty() {
            m.push(("driver".into(), Yaml::text(&l.driver)));
        }
        if !l.options.is_empty() {
            m.push(("options".into(), key_values(&l.options)));
        }
        out.push(("logging".into(), Yaml::Map(m)));
    }
    out
}

fn duration(ms: u64) -> Yaml {
    Yaml::text(format_duration_ms(ms))
}

fn key_values(map: &BTreeMap<String, String>) -> Yaml {
    Yaml::Map(
        map.iter()
            .map(|(k, v)| (k.clone(), Yaml::text(v)))
            .collect(),
    )
}

/// `x-changeover.health` entries that differ from the defaults.
fn health(probe: &HealthProbe) -> Vec<(String, Yaml)> {
    let d = HealthProbe::default();
    let mut out = Vec::new();
    if let Some(p) = &probe.path {
        out.push(("path".into(), Yaml::text(p)));
    }
    if probe.interval_ms != d.interval_ms {
        out.push(("interval".into(), duration(probe.interval_ms)));
    }
    if probe.timeout_ms != d.timeout_ms {
        out.push(("timeout".into(), duration(probe.timeout_ms)));
    }
    if probe.healthy_threshold != d.healthy_threshold {
        out.push(("healthy_threshold".into(), number(probe.healthy_threshold)));
    }
    if probe.unhealthy_threshold != d.unhealthy_threshold {
        out.push((
            "unhealthy_threshold".into(),
            number(probe.unhealthy_threshold),
        ));
    }
    out
}

/// One service as a Compose service mapping.
pub(crate) fn service(spec: &ServiceSpec) -> Yaml {
    let mut s = vec![("image".to_string(), Yaml::text(&spec.image))];
    if let Some(b) = &spec.build {
        // The repository only: the tag comes from each build's content.
        let repo = crate::image::ImageRef::parse(&spec.image)
            .map(|r| r.name)
            .unwrap_or_else(|_| spec.image.clone());
        s[0].1 = Yaml::text(repo);
        let mut build = vec![("context".to_string(), Yaml::text(&b.context))];
        if let Some(d) = &b.dockerfile {
            build.push(("dockerfile".into(), Yaml::text(d)));
        }
        if !b.args.is_empty() {
            build.push(("args".into(), key_values(&b.args)));
        }
        if let Some(t) = &b.target {
            build.push(("target".into(), Yaml::text(t)));
        }
        s.push(("build".into(), Yaml::Map(build)));
    }
    if let Some(cmd) = &spec.command {
        s.push((
            "command".into(),
            Yaml::List(cmd.iter().map(Yaml::text).collect()),
        ));
    }
    if !spec.env.is_empty() {
        s.push(("environment".into(), key_values(&spec.env)));
    }
    if !spec.ports.is_empty() {
        s.push((
            "ports".into(),
            Yaml::List(spec.ports.iter().map(port).collect()),
        ));
    }
    if !spec.mounts.is_empty() {
        s.push((
            "volumes".into(),
            Yaml::List(
                spec.mounts
                    .iter()
                    .map(|m| {
                        let mut mode: Vec<&str> = Vec::new();
                        if m.read_only {
                            mode.push("ro");
                        }
                        mode.extend(m.options.iter().map(String::as_str));
                        let mode = if mode.is_empty() {
                            String::new()
                        } else {
                            format!(":{}", mode.join(","))
                        };
                        if m.anonymous {
                            // As written: Compose's short form has no mode for it.
                            return Yaml::text(m.target.clone());
                        }
                        Yaml::text(format!("{}:{}{mode}", m.source, m.target))
                    })
                    .collect(),
            ),
        ));
    }
    if let Some(r) = &spec.restart {
        s.push(("restart".into(), Yaml::text(r)));
    }
    if let Some(p) = spec.pull_policy {
        s.push(("pull_policy".into(), Yaml::text(p.as_str())));
    }
    s.extend(container_settings(&spec.container));
    if !spec.depends_on.is_empty() {
        s.push((
            "depends_on".into(),
            Yaml::List(spec.depends_on.iter().map(Yaml::text).collect()),
        ));
    }
    if !spec.tmpfs.is_empty() {
        s.push((
            "tmpfs".into(),
            Yaml::List(
                spec.tmpfs
                    .iter()
                    .map(|t| {
                        Yaml::text(if t.options.is_empty() {
                            t.target.clone()
                        } else {
                            format!("{}:{}", t.target, t.options)
                        })
                    })
                    .collect(),
            ),
        ));
    }
    if !spec.networks.is_empty() && !spec.network_aliases.is_empty() {
        s.push((
            "networks".into(),
            Yaml::Map(
                spec.networks
                    .iter()
                    .map(|n| {
                        let aliases = spec.network_aliases.get(n).filter(|a| !a.is_empty());
                        let opts = aliases
                            .map(|a| {
                                vec![(
                                    "aliases".to_string(),
                                    Yaml::List(a.iter().map(Yaml::text).collect()),
                                )]
                            })
                            .unwrap_or_default();
                        (n.clone(), Yaml::Map(opts))
                    })
                    .collect(),
            ),
        ));
    } else if !spec.networks.is_empty() {
        s.push((
            "networks".into(),
            Yaml::List(spec.networks.iter().map(Yaml::text).collect()),
        ));
    }
    if !spec.labels.is_empty() {
        s.push(("labels".into(), key_values(&spec.labels)));
    }
    if let Some(hc) = &spec.healthcheck {
        s.push((
            "healthcheck".into(),
            Yaml::Map(vec![
                (
                    "test".into(),
                    Yaml::List(hc.test.iter().map(Yaml::text).collect()),
                ),
                ("interval".into(), duration(hc.interval_ms)),
                ("timeout".into(), duration(hc.timeout_ms)),
                ("retries".into(), number(hc.retries)),
                ("start_period".into(), duration(hc.start_period_ms)),
            ]),
        ));
    }
    let mut deploy = vec![("replicas".to_string(), number(spec.replicas))];
    if spec.update != UpdateConfig::default() {
        let order = match spec.update.order {
            crate::service::UpdateOrder::StartFirst => "start-first",
            crate::service::UpdateOrder::StopFirst => "stop-first",
        };
        deploy.push((
            "update_config".into(),
            Yaml::Map(vec![
                ("parallelism".into(), number(spec.update.parallelism)),
                ("delay".into(), duration(spec.update.delay_ms)),
                ("order".into(), Yaml::text(order)),
            ]),
        ));
    }
    s.push(("deploy".into(), Yaml::Map(deploy)));
    let mut x = vec![("strategy".to_string(), Yaml::text(spec.strategy.as_str()))];
    if spec.strategy == Strategy::Canary
        || spec.canary_percent != DEFAULT_CANARY_PERCENT
        || spec.canary_guard.is_some()
    {
        x.push(("canary".into(), canary(spec)));
    }
    if let Some(ms) = spec.standby_ms {
        x.push(("standby".into(), duration(ms)));
    }
    if spec.protocol != crate::edge::Protocol::Http {
        x.push(("protocol".into(), Yaml::text(spec.protocol.as_str())));
    }
    let h = health(&spec.health);
    if !h.is_empty() {
        x.push(("health".into(), Yaml::Map(h)));
    }
    if spec.drain_timeout_ms != DEFAULT_DRAIN_TIMEOUT_MS {
        x.push(("drain_timeout".into(), duration(spec.drain_timeout_ms)));
    }
    if spec.deploy_timeout_ms != DEFAULT_DEPLOY_TIMEOUT_MS {
        x.push(("deploy_timeout".into(), duration(spec.deploy_timeout_ms)));
    }
    if let Some(p) = spec.snapshots {
        x.push((
            "snapshots".into(),
            Yaml::Map(vec![
                (
                    "before_deploy".into(),
                    Yaml::Plain(p.before_deploy.to_string()),
                ),
                ("keep".into(), Yaml::Plain(p.keep.to_string())),
            ]),
        ));
    }
    let (t, d) = (spec.timeouts, crate::edge::Timeouts::default());
    let timeouts: Vec<(String, Yaml)> = [
        ("header", t.header_ms, d.header_ms),
        ("idle", t.idle_ms, d.idle_ms),
        ("body", t.body_ms, d.body_ms),
        ("response", t.response_ms, d.response_ms),
        ("udp_idle", t.udp_idle_ms, d.udp_idle_ms),
    ]
    .into_iter()
    .filter(|(_, ms, default)| ms != default)
    .map(|(k, ms, _)| (k.to_string(), duration(ms)))
    .collect();
    if !timeouts.is_empty() {
        x.push(("timeouts".into(), Yaml::Map(timeouts)));
    }
    if !spec.trusted_proxies.is_empty() {
        x.push((
            "trusted_proxies".into(),
            Yaml::List(spec.trusted_proxies.iter().map(Yaml::text).collect()),
        ));
    }
    if !spec.hosts.is_empty() {
        x.push((
            "hosts".into(),
            Yaml::List(spec.hosts.iter().map(Yaml::text).collect()),
        ));
    }
    if let Some(tls) = &spec.tls {
        let mut t = Vec::new();
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                t.push(("cert".to_string(), Yaml::text(cert)));
                t.push(("key".to_string(), Yaml::text(key)));
            }
            _ => t.push(("acme".to_string(), Yaml::Plain("true".into()))),
        }
        if tls.hsts {
            t.push(("hsts".to_string(), Yaml::Plain("true".into())));
        }
        x.push(("tls".into(), Yaml::Map(t)));
    }
    if let Some(a) = &spec.autoredeploy {
        let watch = match &a.watch {
            crate::redeploy::Watch::Digest => "digest".to_string(),
            crate::redeploy::Watch::Local => "local".to_string(),
            crate::redeploy::Watch::Semver { range } => format!("semver:{range}"),
        };
        let mut r = vec![
            ("watch".to_string(), Yaml::text(watch)),
            ("check_every".to_string(), duration(a.check_every_ms)),
        ];
        if let Some(st) = a.strategy {
            r.push(("strategy".into(), Yaml::text(st.as_str())));
        }
        if let Some(ms) = a.promote_after_ms {
            r.push(("promote_after".into(), duration(ms)));
        }
        x.push(("autoredeploy".into(), Yaml::Map(r)));
    }
    s.push(("x-changeover".into(), Yaml::Map(x)));
    Yaml::Map(s)
}

impl Stack {
    /// A stack of these services (all of stack `name`), declaring every named
    /// volume and network they use.
    pub fn from_services(name: &str, services: Vec<ServiceSpec>) -> Self {
        let mut volumes = BTreeSet::new();
        let mut networks = BTreeSet::new();
        for s in &services {
            for m in &s.mounts {
                if m.kind == MountKind::Volume && !m.anonymous {
                    volumes.insert(m.source.clone());
                }
            }
            for n in &s.networks {
                if n != "default" {
                    networks.insert(n.clone());
                }
            }
        }
        Self {
            name: name.to_string(),
            services,
            volumes: volumes.into_iter().collect(),
            networks: networks.into_iter().collect(),
        }
    }
}

/// The stack as a Compose document (the YAML tree, for callers that adjust it).
pub(crate) fn stack_yaml(stack: &Stack) -> Yaml {
    let mut doc = vec![
        ("name".to_string(), Yaml::text(&stack.name)),
        (
            "services".to_string(),
            Yaml::Map(
                stack
                    .services
                    .iter()
                    .map(|s| (s.name.clone(), service(s)))
                    .collect(),
            ),
        ),
    ];
    let declared = |names: &[String]| {
        Yaml::Map(
            names
                .iter()
                .map(|n| (n.clone(), Yaml::Map(Vec::new())))
                .collect(),
        )
    };
    if !stack.volumes.is_empty() {
        // A volume the stack names itself is written with that name.
        let own = |v: &str| {
            stack
                .services
                .iter()
                .flat_map(|s| &s.mounts)
                .find(|m| m.kind == MountKind::Volume && m.source == v && m.volume.is_some())
        };
        doc.push((
            "volumes".into(),
            Yaml::Map(
                stack
                    .volumes
                    .iter()
                    .map(|v| {
                        let mut settings = Vec::new();
                        if let Some(m) = own(v) {
                            let name = m.volume.clone().unwrap_or_default();
                            if !(m.external && name == *v) {
                                settings.push(("name".to_string(), Yaml::text(name)));
                            }
                            if m.external {
                                settings.push(("external".to_string(), Yaml::Plain("true".into())));
                            }
                        }
                        (v.clone(), Yaml::Map(settings))
                    })
                    .collect(),
            ),
        ));
    }
    if !stack.networks.is_empty() {
        doc.push(("networks".into(), declared(&stack.networks)));
    }
    Yaml::Map(doc)
}

/// The stack as a Compose file that `changeover stack deploy -f` reads back
/// into the same services.
pub fn to_compose(stack: &Stack) -> String {
    let mut out = format!(
        "# Stack {}, written by Changeover. Deploy it with:\n#   changeover stack deploy -f <this file>\n",
        stack.name
    );
    out.push_str(&stack_yaml(stack).write());
    out
}

/// Writes an exported stack to `path` (`~/` is the home directory). An
/// existing file is replaced only when `replace` is set.
pub fn write_file(path: &str, text: &str, replace: bool) -> Result<PathBuf, Problem> {
    let trimmed = path.trim();
    let full = match trimmed.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(rest),
            None => PathBuf::from(trimmed),
        },
        None => PathBuf::from(trimmed),
    };
    if trimmed.is_empty() || full.is_relative() {
        return Err(Problem::new(
            ProblemCode::CannotWrite,
            format!("{trimmed:?} is not an absolute path (like ~/shop.yml or /srv/shop.yml)"),
        ));
    }
    let shown = full.display().to_string();
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&full).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Problem::new(
            ProblemCode::FileExists,
            format!("{shown} exists already; replace it or choose another name"),
        ),
        _ => Problem::new(
            ProblemCode::CannotWrite,
            format!("cannot write {shown}: {e}"),
        ),
    })?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| {
        Problem::new(
            ProblemCode::CannotWrite,
            format!("cannot write {shown}: {e}"),
        )
    })?;
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{DockerHealthcheck, Mount, PortMapping, UpdateOrder};
    use crate::stack::{parse, SANDBOX};

    fn round_trip(stack: &Stack) -> Stack {
        let text = to_compose(stack);
        let report = parse(&text, "out.yml", None);
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{text}\n{:?} {:?}",
            report.errors,
            report.warnings
        );
        report.stack.unwrap()
    }

    #[test]
    fn the_sandbox_writes_back_to_the_same_stack() {
        let stack = parse(SANDBOX, "sandbox.yml", None).stack.unwrap();
        assert_eq!(round_trip(&stack), stack);
    }

    #[test]
    fn every_setting_survives_the_round_trip() {
        let mut web = ServiceSpec::new("shop", "web", "registry.local:5000/shop/web:v1");
        web.command = Some(vec!["serve".into(), "--port".into(), "8080".into()]);
        web.env.insert("MODE".into(), "production".into());
        web.env.insert("EMPTY".into(), String::new());
        web.env
            .insert("QUOTE".into(), "say \"hi\": yes\n#no".into());
        web.env.insert("NUMBER".into(), "0123".into());
        web.env
            .insert("DOLLARS".into(), "pa$$w0rd ${NOT_A_VAR} $HOME".into());
        web.env.insert("true".into(), "null".into());
        web.ports.push(PortMapping::tcp(18080, 8080));
        // Relayed beside the HTTP port, and a well-known port read as HTTP
        // on purpose: both written as said, read back the same.
        web.ports.push(PortMapping {
            app: Some(crate::edge::Protocol::Tcp),
            ..PortMapping::tcp(15432, 5432)
        });
        web.ports.push(PortMapping {
            app: Some(crate::edge::Protocol::Http),
            ..PortMapping::tcp(18443, 443)
        });
        web.mounts.push(Mount {
            kind: MountKind::Volume,
            source: "data".into(),
            target: "/data".into(),
            read_only: false,
            options: Vec::new(),
            anonymous: false,
            volume: None,
            external: false,
        });
        web.mounts.push(Mount {
            kind: MountKind::Bind,
            source: "/srv/conf".into(),
            target: "/conf".into(),
            read_only: true,
            options: Vec::new(),
            anonymous: false,
            volume: None,
            external: false,
        });
        web.mounts.push(Mount {
            kind: MountKind::Volume,
            source: "media".into(),
            target: "/media".into(),
            read_only: false,
            options: Vec::new(),
            anonymous: false,
            volume: Some("shared-media".into()),
            external: false,
        });
        web.mounts.push(Mount {
            kind: MountKind::Volume,
            source: "legacy".into(),
            target: "/legacy".into(),
            read_only: true,
            options: Vec::new(),
            anonymous: false,
            volume: Some("legacy".into()),
            external: true,
        });
        web.networks.push("back".into());
        web.network_aliases
            .insert("back".into(), vec!["shop-web".into(), "www".into()]);
        web.labels.insert("team".into(), "shop".into());
        web.healthcheck = Some(DockerHealthcheck {
            test: vec!["CMD".into(), "/probe".into()],
            interval_ms: 2000,
            timeout_ms: 1500,
            retries: 5,
            start_period_ms: 0,
        });
        web.replicas = 3;
        web.update = UpdateConfig {
            parallelism: 2,
            delay_ms: 1500,
            order: UpdateOrder::StopFirst,
        };
        web.health.path = Some("/health".into());
        web.health.interval_ms = 500;
        web.health.healthy_threshold = 2;
        web.drain_timeout_ms = 10_000;
        web.deploy_timeout_ms = 90_000;
        web.timeouts.header_ms = 5_000;
        web.timeouts.response_ms = 120_000;
        web.trusted_proxies = vec!["10.0.0.0/8".into()];
        web.hosts = vec!["shop.example.test".into(), "www.shop.example.test".into()];
        web.tls = Some(crate::service::ServiceTls {
            cert_file: None,
            key_file: None,
            hsts: true,
        });
        web.strategy = Strategy::Canary;
        web.canary_percent = 25;
        web.canary_guard = Some(crate::service::CanaryGuard {
            max_5xx_percent: 5,
            window_ms: 20_000,
            min_requests: 50,
        });
        let mut worker = ServiceSpec::new("shop", "worker", "shop/worker");
        worker.strategy = Strategy::BlueGreen;
        worker.protocol = crate::edge::Protocol::Tcp;
        worker.ports.push(PortMapping::tcp(19000, 9000));
        worker.ports.push(PortMapping {
            app: Some(crate::edge::Protocol::Tcp),
            ..PortMapping::tcp(16379, 6379)
        });
        worker.standby_ms = Some(1_800_000);
        worker.pull_policy = Some(crate::service::PullPolicy::Always);
        worker.container = crate::container::ContainerSettings {
            entrypoint: Some(vec!["/bin/run".into(), "--fast".into()]),
            user: Some("1000:1000".into()),
            working_dir: Some("/srv".into()),
            hostname: Some("worker".into()),
            stop_signal: Some("SIGQUIT".into()),
            stop_grace_period_ms: Some(30_000),
            tty: true,
            init: Some(true),
            read_only: true,
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            devices: vec!["/dev/net/tun".into()],
            extra_hosts: vec!["db.internal:10.0.0.5".into(), "gw:host-gateway".into()],
            dns: vec!["1.1.1.1".into()],
            shm_size: Some(256 << 20),
            ulimits: [(
                "nofile".to_string(),
                crate::container::Ulimit {
                    soft: 1024,
                    hard: 4096,
                },
            )]
            .into(),
            memory: Some(1 << 30),
            memory_swap: Some(-1),
            pids_limit: Some(200),
            logging: Some(crate::container::Logging {
                driver: "json-file".into(),
                options: [("max-size".to_string(), "10m".to_string())].into(),
            }),
            devices_requested: vec![
                crate::container::DeviceRequest {
                    driver: "nvidia".into(),
                    count: -1,
                    device_ids: Vec::new(),
                    capabilities: vec!["gpu".into()],
                    options: Default::default(),
                },
                crate::container::DeviceRequest {
                    driver: String::new(),
                    count: 0,
                    device_ids: vec!["0".into(), "2".into()],
                    capabilities: vec!["gpu".into(), "utility".into()],
                    options: Default::default(),
                },
            ],
            cpu_period: Some(100_000),
            cpu_quota: Some(50_000),
            ..Default::default()
        };
        worker.snapshots = Some(crate::service::SnapshotPolicy {
            before_deploy: true,
            keep: 3,
        });
        let stack = Stack::from_services("shop", vec![web, worker]);
        assert_eq!(stack.volumes, ["data", "legacy", "media"]);
        assert_eq!(stack.networks, vec!["back".to_string()]);
        let back = round_trip(&stack);
        // The writer keeps `image` as written; the parser defaults nothing else.
        assert_eq!(back, stack);
    }

    #[test]
    fn writing_never_replaces_a_file_unasked() {
        let dir = std::env::temp_dir().join(format!("changeover-compose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shop.yml");
        let shown = path.display().to_string();
        write_file(&shown, "one\n", false).unwrap();
        let again = write_file(&shown, "two\n", false).unwrap_err();
        assert_eq!(again.code, ProblemCode::FileExists);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "one\n",
            "unchanged"
        );
        write_file(&shown, "two\n", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            write_file("shop.yml", "x", false).unwrap_err().code,
            ProblemCode::CannotWrite,
            "a relative path is refused"
        );
        let missing = write_file(
            &dir.join("no/such/dir.yml").display().to_string(),
            "x",
            false,
        );
        assert_eq!(missing.unwrap_err().code, ProblemCode::CannotWrite);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
