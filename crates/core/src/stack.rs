//! Stack files: Compose files read into [`ServiceSpec`]s, validated before
//! anything touches a daemon.
//!
//! The YAML is parsed with `saphyr` into nodes that keep their line, so every
//! problem says where it is: `stack.yml:14 services.web.ports[0]: "80:abc" is
//! not a port`. All problems of a file are reported at once.
//!
//! Compose keys Changeover does not apply are reported as warnings by name;
//! keys Compose does not know are errors (a typo must not deploy something
//! else than what was meant). Changeover's own settings live under
//! `x-changeover` in each service; other `x-` keys are Compose extensions and
//! are left alone.
//!
//! Values are interpolated like Compose (`${TAG:-v1}`; see
//! [`crate::interpolate`]) from the process environment and the `.env` file
//! next to the stack file; enumerated settings (`order`, `strategy`, mount
//! `type`, …) are read as written. Before the keys are read, YAML merge
//! keys, `extends` (this file or another) and Compose's `!reset` /
//! `!override` are applied ([`crate::compose_yaml`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::edge::{HealthProbe, Protocol};
use crate::service::{
    CanaryGuard, DockerHealthcheck, Mount, MountKind, PortMapping, ServiceSpec, ServiceTls,
    SnapshotPolicy, Strategy, UpdateOrder, DEFAULT_GUARD_MIN_REQUESTS, DEFAULT_GUARD_WINDOW_MS,
    DEFAULT_SNAPSHOT_KEEP,
};

/// The sandbox stack (`examples/sandbox.yml`): three replicas of the demo
/// app, v1, behind the edge.
pub const SANDBOX: &str = include_str!("../../../examples/sandbox.yml");

/// A stack read from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Stack {
    pub name: String,
    pub services: Vec<ServiceSpec>,
    /// Named volumes declared at the top level.
    pub volumes: Vec<String>,
    /// Networks declared at the top level.
    pub networks: Vec<String>,
}

/// One thing wrong (or only worth knowing) about a stack file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct StackIssue {
    pub file: String,
    pub line: usize,
    /// Dotted path of the key (`services.web.ports[0]`).
    pub key: String,
    pub message: String,
}

impl fmt::Display for StackIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{} {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{} {}: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

/// The result of reading a stack file: the stack when there is no error, and
/// every error and warning found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct StackReport {
    pub stack: Option<Stack>,
    pub errors: Vec<StackIssue>,
    pub warnings: Vec<StackIssue>,
}

impl StackReport {
    /// A file that could not be read at all: one error, no stack.
    fn unreadable(file: &str, line: usize, message: String) -> Self {
        Self {
            stack: None,
            errors: vec![StackIssue {
                file: file.to_string(),
                line,
                key: String::new(),
                message,
            }],
            warnings: Vec::new(),
        }
    }
}

/// Compose service keys Changeover reads.
const SUPPORTED: &[&str] = &[
    "image",
    "build",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "networks",
    "healthcheck",
    "labels",
    "command",
    "deploy",
    "tmpfs",
    "depends_on",
    "restart",
    "container_name",
    "extends",
    "x-changeover",
];

/// Compose service keys Changeover knows but does not apply (a warning).
const COMPOSE_ONLY: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cgroup",
    "cgroup_parent",
    "cpu_count",
    "cpu_percent",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "expose",
    "external_links",
    "isolation",
    "label_file",
    "links",
    "mac_address",
    "mem_swappiness",
    "models",
    "network_mode",
    "platform",
    "post_start",
    "pre_stop",
    "provider",
    "storage_opt",
    "use_api_socket",
    "uts",
    "volumes_from",
];

const TOP_LEVEL: &[&str] = &[
    "name", "services", "volumes", "networks", "version", "include", "secrets", "configs",
];
const TOP_LEVEL_COMPOSE_ONLY: &[&str] = &["models"];
/// The largest `env_file` read.
const MAX_ENV_FILE: u64 = 1024 * 1024;
/// How deep `include:` may nest.
const MAX_INCLUDE_DEPTH: usize = 5;

type Node<'a> = MarkedYaml<'a>;

struct Reader<'f> {
    file: &'f str,
    vars: &'f BTreeMap<String, String>,
    /// How many `include:`s led here.
    depth: usize,
    /// `type: tmpfs` mounts read from a service's `volumes:`.
    tmpfs: Vec<crate::service::TmpfsMount>,
    /// The top-level `secrets:` and `configs:`, for the services' own.
    secrets: files::Declared,
    configs: files::Declared,
    errors: Vec<StackIssue>,
    warnings: Vec<StackIssue>,
}

use crate::compose_yaml::{line, scalar};

mod container;
mod files;

fn is_null(node: &Node) -> bool {
    matches!(node.data, YamlData::Value(Scalar::Null))
}

fn entries<'n, 'a>(node: &'n Node<'a>) -> Option<Vec<(String, &'n Node<'a>)>> {
    match &node.data {
        YamlData::Mapping(m) => Some(
            m.iter()
                .map(|(k, v)| (scalar(k).unwrap_or_else(|| "?".into()), v))
                .collect(),
        ),
        _ => None,
    }
}

/// The line of `key` in the mapping `map`.
fn key_line(map: &Node, key: &str) -> Option<usize> {
    match &map.data {
        YamlData::Mapping(m) => m
            .keys()
            .find(|k| scalar(k).as_deref() == Some(key))
            .map(line),
        _ => None,
    }
}

fn items<'n, 'a>(node: &'n Node<'a>) -> Option<&'n Vec<Node<'a>>> {
    match &node.data {
        YamlData::Sequence(s) => Some(s),
        _ => None,
    }
}

fn describe(node: &Node) -> String {
    match &node.data {
        YamlData::Mapping(_) => "a mapping".into(),
        YamlData::Sequence(_) => "a list".into(),
        _ => match scalar(node) {
            Some(s) => format!("{s:?}"),
            None => "nothing".into(),
        },
    }
}

impl Reader<'_> {
    fn error(&mut self, node: &Node, key: &str, message: impl Into<String>) {
        self.errors.push(StackIssue {
            file: self.file.to_string(),
            line: line(node),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// `text` (read from `node`) with its variables filled in.
    fn interpolated(&mut self, text: &str, node: &Node, key: &str) -> Option<String> {
        if !text.contains('$') {
            return Some(text.to_string());
        }
        let vars = self.vars;
        match crate::interpolate::interpolate(text, &|name| vars.get(name).cloned()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(node, key, message);
                None
            }
        }
    }

    fn error_at(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.errors.push(StackIssue {
            file: self.file.to_string(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn warn_at(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.warnings.push(StackIssue {
            file: self.file.to_string(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn warn(&mut self, node: &Node, key: &str, message: impl Into<String>) {
        self.warnings.push(StackIssue {
            file: self.file.to_string(),
            line: line(node),
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        match scalar(node) {
            Some(s) if s.contains('$') => {
                let vars = self.vars;
                match crate::interpolate::interpolate(&s, &|name| vars.get(name).cloned()) {
                    Ok(v) => Some(v),
                    Err(message) => {
                        self.error(node, key, message);
                        None
                    }
                }
            }
            Some(s) => Some(s),
            None => {
                self.error(
                    node,
                    key,
                    format!("expected a text value, found {}", describe(node)),
                );
                None
            }
        }
    }

    fn map<'n, 'a>(&mut self, node: &'n Node<'a>, key: &str) -> Vec<(String, &'n Node<'a>)> {
        match entries(node) {
            Some(e) => e,
            None => {
                if !is_null(node) {
                    self.error(
                        node,
                        key,
                        format!("expected a mapping, found {}", describe(node)),
                    );
                }
                Vec::new()
            }
        }
    }

    fn list<'n, 'a>(&mut self, node: &'n Node<'a>, key: &str) -> Vec<&'n Node<'a>> {
        match items(node) {
            Some(v) => v.iter().collect(),
            None => {
                if !is_null(node) {
                    self.error(
                        node,
                        key,
                        format!("expected a list, found {}", describe(node)),
                    );
                }
                Vec::new()
            }
        }
    }

    fn number(&mut self, node: &Node, key: &str, min: u64, max: u64) -> Option<u64> {
        let text = self.string(node, key)?;
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    node,
                    key,
                    format!("{text:?} is not a whole number from {min} to {max}"),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, key: &str) -> Option<u64> {
        let text = self.string(node, key)?;
        match parse_duration_ms(&text) {
            Some(ms) => Some(ms),
            None => {
                self.error(
                    node,
                    key,
                    format!("{text:?} is not a duration (like 500ms, 10s, 1m30s)"),
                );
                None
            }
        }
    }

    /// `KEY: value` mapping or `["KEY=value"]` list (environment, labels).
    /// `KEY=value` lists or mappings. With `pass_through` (environment,
    /// build args) a name with no value — `- TZ` or `TZ:` — takes the
    /// variable of that name from the shell or `.env`, and is left out
    /// when there is none, as Compose does; otherwise (labels) it is blank.
    fn key_values(
        &mut self,
        node: &Node,
        key: &str,
        pass_through: bool,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let given = |r: &Self, name: &str| -> Option<String> {
            if pass_through {
                r.vars.get(name).cloned()
            } else {
                Some(String::new())
            }
        };
        if let Some(list) = items(node) {
            for (i, item) in list.iter().enumerate() {
                let k = format!("{key}[{i}]");
                if let Some(s) = self.string(item, &k) {
                    match s.split_once('=') {
                        Some((name, value)) if !name.is_empty() => {
                            out.insert(name.to_string(), value.to_string());
                        }
                        None if valid_variable(&s) => {
                            if let Some(v) = given(self, &s) {
                                out.insert(s, v);
                            }
                        }
                        _ => self.error(
                            item,
                            &k,
                            format!("{s:?} is neither KEY=value nor a variable name to take from the shell"),
                        ),
                    }
                }
            }
            return out;
        }
        for (name, value) in self.map(node, key) {
            let k = format!("{key}.{name}");
            let v = if is_null(value) {
                given(self, &name)
            } else {
                self.string(value, &k)
            };
            if let Some(v) = v {
                out.insert(name, v);
            }
        }
        out
    }
}

/// A name an environment variable can have (`TZ`, `http_proxy`).
fn valid_variable(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == '-')
}

/// Parses `500ms`, `10s`, `1m30s`, `1h`, `2.5s` (Compose durations).
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "us" => 0.001,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * factor;
    }
    Some(total.round() as u64)
}

/// Formats milliseconds back as a Compose duration.
pub fn format_duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Reads a stack file from disk. `env_file`s are read relative to it;
/// variables come from the process environment and the `.env` file beside it.
pub fn read_file(path: &Path) -> StackReport {
    read_file_with(path, std::env::vars())
}

/// [`read_file`] with `process` as the shell's variables.
pub fn read_file_with(
    path: &Path,
    process: impl IntoIterator<Item = (String, String)>,
) -> StackReport {
    let shown = path.display().to_string();
    let dotenv = path
        .parent()
        .and_then(|d| std::fs::read_to_string(d.join(".env")).ok());
    let vars = match crate::interpolate::variables(dotenv.as_deref(), process) {
        Ok(v) => v,
        Err((line, message)) => {
            let env_path = path.with_file_name(".env").display().to_string();
            return StackReport::unreadable(&env_path, line, message);
        }
    };
    match read_text(path) {
        Ok(text) => parse_with(&text, &shown, path.parent(), &vars),
        Err((line, message)) => StackReport::unreadable(&shown, line, message),
    }
}

/// `root` with every service's `extends` applied (see
/// [`crate::compose_yaml::apply_extends`]); other files are read as stack
/// files are (bounded, UTF-8).
fn with_extends<'a>(
    root: &Node<'a>,
    dir: Option<&Path>,
    issues: &mut Vec<crate::compose_yaml::Issue>,
) -> Node<'a> {
    let YamlData::Mapping(m) = &root.data else {
        return root.clone();
    };
    let read = |p: &Path| read_text(p).map_err(|(_, m)| m);
    let mut out = saphyr::AnnotatedMapping::new();
    for (k, v) in m.iter() {
        let value = if scalar(k).as_deref() == Some("services") {
            crate::compose_yaml::apply_extends(v, dir, &read, issues)
        } else {
            v.clone()
        };
        out.insert(k.clone(), value);
    }
    MarkedYaml {
        span: root.span,
        data: YamlData::Mapping(out),
    }
}

/// The largest stack file read (Compose files are a few KiB).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A stack file's text: at most [`MAX_FILE_BYTES`], UTF-8 (the line of
/// the first byte that is not is named).
pub fn read_text(path: &Path) -> Result<String, (usize, String)> {
    use std::io::Read;
    let shown = path.display();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| (1, format!("cannot read {shown}: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err((
            1,
            format!(
                "{shown} is larger than {} MiB; a Compose file is far smaller",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let column = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        (
            line,
            format!("is not UTF-8 text (the first byte that is not is at column {column}); save it as UTF-8"),
        )
    })
}

/// Parses a stack file's text with no variables set. `file` is the name used
/// in messages (and the default stack name); `dir` is where relative
/// `env_file`s are looked up.
pub fn parse(text: &str, file: &str, dir: Option<&Path>) -> StackReport {
    parse_with(text, file, dir, &BTreeMap::new())
}

/// [`parse`], with the variables `${…}` in values refer to.
pub fn parse_with(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    vars: &BTreeMap<String, String>,
) -> StackReport {
    parse_at(text, file, dir, vars, 0)
}

fn parse_at(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    vars: &BTreeMap<String, String>,
    depth: usize,
) -> StackReport {
    let mut r = Reader {
        file,
        vars,
        depth,
        tmpfs: Vec::new(),
        secrets: Default::default(),
        configs: Default::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let docs = match MarkedYaml::load_from_str(text) {
        Ok(d) => d,
        Err(e) => {
            return StackReport::unreadable(
                file,
                e.marker().line().max(1),
                format!("not valid YAML: {}", e.info()),
            )
        }
    };
    let Some(first) = docs.first() else {
        return StackReport::unreadable(
            file,
            1,
            "the file is empty; a stack needs `services:`".into(),
        );
    };
    if let Some(second) = docs.get(1) {
        return StackReport::unreadable(
            file,
            line(second),
            "a second YAML document starts here (after a `---`) and is not read: a Compose file \
             is one document; put its services in the first, or in another file named by `include:`"
                .into(),
        );
    }
    let mut issues = Vec::new();
    let root = with_extends(
        &crate::compose_yaml::merge_keys(first, "", &mut issues),
        dir,
        &mut issues,
    );
    let root = crate::compose_yaml::strip_tags(&root);
    for (at, key, message) in issues {
        r.errors.push(StackIssue {
            file: file.to_string(),
            line: at,
            key,
            message,
        });
    }
    let stack = read_stack(&mut r, &root, file, dir);
    StackReport {
        stack: if r.errors.is_empty() { stack } else { None },
        errors: r.errors,
        warnings: r.warnings,
    }
}

fn read_stack(r: &mut Reader, root: &Node, file: &str, dir: Option<&Path>) -> Option<Stack> {
    let Some(top) = entries(root) else {
        r.error(
            root,
            "",
            "a stack file is a mapping with `services:` at the top",
        );
        return None;
    };
    let mut name = None;
    let mut services_node = None;
    let mut include_node = None;
    let mut volumes = Vec::new();
    // Volumes the stack names itself (`name:`, `external:`).
    let mut volume_names: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut networks = Vec::new();
    for (key, value) in &top {
        match key.as_str() {
            "name" => name = r.string(value, "name").map(|n| (n, *value)),
            "services" => services_node = Some(*value),
            "include" => include_node = Some(*value),
            "volumes" => {
                for (v, spec) in r.map(value, "volumes") {
                    if let Some(own) = read_top_volume(r, spec, &format!("volumes.{v}")) {
                        volume_names.insert(v.clone(), own);
                    }
                    volumes.push(v);
                }
            }
            "networks" => {
                for (n, spec) in r.map(value, "networks") {
                    if !is_null(spec) && entries(spec).is_some_and(|e| !e.is_empty()) {
                        r.warn(
                            spec,
                            &format!("networks.{n}"),
                            "network options are not applied; a plain bridge network is created",
                        );
                    }
                    networks.push(n);
                }
            }
            "secrets" => r.secrets = files::declared(r, value, "secrets", dir),
            "configs" => r.configs = files::declared(r, value, "configs", dir),
            "version" => r.warn(
                value,
                "version",
                "`version` is obsolete in Compose and ignored",
            ),
            k if k.starts_with("x-") => {}
            k if TOP_LEVEL_COMPOSE_ONLY.contains(&k) => r.warn(
                value,
                k,
                format!("`{k}` is not supported by Changeover and is ignored"),
            ),
            k => r.error(
                value,
                k,
                format!(
                    "unknown top-level key `{k}` (expected one of: {})",
                    TOP_LEVEL.join(", ")
                ),
            ),
        }
    }
    let stack_name = match name {
        Some((n, node)) => {
            if !valid_name(&n) {
                r.error(
                    node,
                    "name",
                    format!("{n:?} is not a stack name (lowercase letters, digits, - and _; starting with a letter or digit)"),
                );
            }
            n
        }
        None => {
            let stem = Path::new(file)
                .file_stem()
                .map(|s| s.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let stem: String = stem
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            if !valid_name(&stem) {
                r.error(
                    root,
                    "name",
                    "the stack has no `name:` and the file name cannot be one",
                );
            }
            stem
        }
    };
    let empty = MarkedYaml {
        span: root.span,
        data: YamlData::Mapping(saphyr::AnnotatedMapping::new()),
    };
    let services_node = match (services_node, include_node) {
        (Some(s), _) => s,
        (None, Some(_)) => &empty,
        (None, None) => {
            r.error(root, "services", "a stack needs `services:`");
            return None;
        }
    };
    let mut services = Vec::new();
    let mut host_ports: HostPorts = BTreeMap::new();
    let declared_volumes: BTreeSet<&str> = volumes.iter().map(String::as_str).collect();
    let declared_networks: BTreeSet<&str> = networks.iter().map(String::as_str).collect();
    let service_entries = if services_node.data.is_mapping()
        && entries(services_node).is_some_and(|e| e.is_empty())
    {
        Vec::new()
    } else {
        r.map(services_node, "services")
    };
    if service_entries.is_empty() && include_node.is_none() && r.errors.is_empty() {
        r.error(services_node, "services", "the stack defines no service");
    }
    let declared_services: Vec<String> = service_entries.iter().map(|(n, _)| n.clone()).collect();
    // Compose's profiles: a service that names some is deployed only when
    // one of them is active.
    let active_profiles: Vec<String> = r
        .vars
        .get("COMPOSE_PROFILES")
        .map(|p| {
            p.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut left_out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (svc_name, node) in service_entries {
        let key = format!("services.{svc_name}");
        // Whole-service messages point at its name, not its first key.
        let at = key_line(services_node, &svc_name).unwrap_or_else(|| line(node));
        if !valid_name(&svc_name) {
            r.error_at(
                at,
                &key,
                format!("{svc_name:?} is not a service name (lowercase letters, digits, - and _)"),
            );
        }
        let profiles = service_profiles(r, node, &key);
        if let Some(mut spec) = read_service(r, &stack_name, &svc_name, node, &key, at, dir) {
            if !profiles.is_empty() && !profiles.iter().any(|p| active_profiles.contains(p)) {
                r.warn_at(
                    at,
                    &key,
                    format!(
                        "left out: its profiles ({}) are not active; COMPOSE_PROFILES={} (in the shell or .env) deploys it",
                        profiles.join(", "),
                        profiles[0]
                    ),
                );
                left_out.insert(svc_name.clone(), profiles);
                continue;
            }
            for m in spec
                .mounts
                .iter_mut()
                .filter(|m| m.kind == MountKind::Volume)
            {
                if let Some((own, external)) = volume_names.get(&m.source) {
                    m.volume = Some(own.clone());
                    m.external = *external;
                }
            }
            for m in &spec.mounts {
                if m.kind == MountKind::Volume
                    && !m.anonymous
                    && !declared_volumes.contains(m.source.as_str())
                {
                    r.error(
                        node,
                        &format!("{key}.volumes"),
                        format!(
                            "volume `{}` is not declared under the top-level `volumes:`",
                            m.source
                        ),
                    );
                }
            }
            for n in &spec.networks {
                if n != "default" && !declared_networks.contains(n.as_str()) {
                    r.error(
                        node,
                        &format!("{key}.networks"),
                        format!("network `{n}` is not declared under the top-level `networks:`"),
                    );
                }
            }
            let ports_at = entries(node)
                .and_then(|e| e.into_iter().find(|(k, _)| k == "ports").map(|(_, v)| v))
                .unwrap_or(node);
            for p in &spec.ports {
                if let Some(other) = host_ports.insert((p.host, p.udp), svc_name.clone()) {
                    r.error(
                        ports_at,
                        &format!("{key}.ports"),
                        format!(
                            "host port {} is already used by service `{other}`",
                            p.host_label()
                        ),
                    );
                }
            }
            services.push(spec);
        }
    }
    if let Some(node) = include_node {
        include(
            r,
            node,
            dir,
            &stack_name,
            &mut services,
            &mut host_ports,
            &mut volumes,
            &mut networks,
        );
    }
    if services.is_empty() && r.errors.is_empty() && !left_out.is_empty() {
        r.error(
            root,
            "services",
            "every service is left out by its profiles: set COMPOSE_PROFILES (in the shell or .env) to the ones to deploy",
        );
    } else if services.is_empty() && r.errors.is_empty() {
        r.error(
            root,
            "services",
            "the stack defines no service (here or in what it includes)",
        );
    }
    for s in &services {
        for d in s.depends_on.iter().filter(|d| left_out.contains_key(*d)) {
            r.error_at(
                key_line(services_node, &s.name).unwrap_or(1),
                &format!("services.{}.depends_on", s.name),
                format!(
                    "`{d}` is left out (its profiles {} are not active): set COMPOSE_PROFILES={}, or drop the dependency",
                    left_out[d].join(", "),
                    left_out[d][0]
                ),
            );
        }
    }
    let lines: BTreeMap<String, usize> = services
        .iter()
        .filter_map(|s| key_line(services_node, &s.name).map(|l| (s.name.clone(), l)))
        .collect();
    let services = in_dependency_order(r, services, &lines, &declared_services);
    Some(Stack {
        name: stack_name,
        services,
        volumes,
        networks,
    })
}

/// `include:` — each file read as a stack file of its own (its paths
/// relative to its folder, its own `.env` under the shell's), its services,
/// volumes and networks added to this stack. A service or host port that
/// both define is refused at the include.
#[allow(clippy::too_many_arguments)]
fn include(
    r: &mut Reader,
    node: &Node,
    dir: Option<&Path>,
    stack_name: &str,
    services: &mut Vec<ServiceSpec>,
    host_ports: &mut HostPorts,
    volumes: &mut Vec<String>,
    networks: &mut Vec<String>,
) {
    /// One included file: its path, the item and key it was named at, and
    /// the item's `project_directory` and `env_file`s as written.
    struct Included<'n, 'a> {
        path: String,
        item: &'n Node<'a>,
        key: String,
        project_directory: Option<String>,
        env_files: Vec<String>,
    }
    let mut paths: Vec<Included> = Vec::new();
    for (i, item) in r.list(node, "include").into_iter().enumerate() {
        let k = format!("include[{i}]");
        let path_node = entries(item)
            .and_then(|e| e.into_iter().find(|(f, _)| f == "path").map(|(_, v)| v))
            .unwrap_or(item);
        let listed: Vec<&Node> = match items(path_node) {
            Some(list) => list.iter().collect(),
            None => vec![path_node],
        };
        let (mut project_directory, mut env_files) = (None, Vec::new());
        if let Some(fields) = entries(item) {
            for (f, v) in fields {
                let fk = format!("{k}.{f}");
                match f.as_str() {
                    "path" => {}
                    "project_directory" => project_directory = r.string(v, &fk),
                    "env_file" => match items(v) {
                        Some(list) => {
                            for (j, e) in list.iter().enumerate() {
                                env_files.extend(r.string(e, &format!("{fk}[{j}]")));
                            }
                        }
                        None => env_files.extend(r.string(v, &fk)),
                    },
                    _ => r.warn(v, &fk, format!("`{f}` of an include is not applied")),
                }
            }
        }
        for p in listed {
            if let Some(text) = r.string(p, &k) {
                paths.push(Included {
                    path: text,
                    item,
                    key: k.clone(),
                    project_directory: project_directory.clone(),
                    env_files: env_files.clone(),
                });
            }
        }
    }
    if r.depth >= MAX_INCLUDE_DEPTH && !paths.is_empty() {
        r.error(
            node,
            "include",
            format!("includes nest more than {MAX_INCLUDE_DEPTH} files deep"),
        );
        return;
    }
    let from_here = |p: &str| match dir {
        Some(d) if Path::new(p).is_relative() => d.join(p),
        _ => Path::new(p).to_path_buf(),
    };
    for Included {
        path,
        item,
        key: k,
        project_directory,
        env_files,
    } in paths
    {
        let full = from_here(&path);
        let shown = full.display().to_string();
        let text = match read_text(&full) {
            Ok(t) => t,
            Err((_, message)) => {
                r.error(item, &k, format!("cannot include {path}: {message}"));
                continue;
            }
        };
        // Its paths are relative to its project directory: its own folder
        // unless the include names one (relative to this file's).
        let project = project_directory.as_deref().map(from_here);
        if let Some(p) = project.as_ref().filter(|p| !p.is_dir()) {
            r.error(
                item,
                &format!("{k}.project_directory"),
                format!("{} is not a folder", p.display()),
            );
            continue;
        }
        let there = project.as_deref().or(full.parent());
        // Its own variables under the shell's and this file's: the
        // include's env_files, or else the .env of its project directory.
        let env_paths: Vec<std::path::PathBuf> = if env_files.is_empty() {
            there.map(|d| d.join(".env")).into_iter().collect()
        } else {
            env_files.iter().map(|e| from_here(e)).collect()
        };
        let mut vars = r.vars.clone();
        let mut failed = false;
        for env_path in &env_paths {
            let dotenv = match std::fs::read_to_string(env_path) {
                Ok(t) => t,
                // A missing .env is fine; a missing env_file named is not.
                Err(_) if env_files.is_empty() => continue,
                Err(e) => {
                    r.error(
                        item,
                        &format!("{k}.env_file"),
                        format!("cannot read {}: {e}", env_path.display()),
                    );
                    failed = true;
                    break;
                }
            };
            match crate::interpolate::env_values(&dotenv, r.vars) {
                Ok(values) => {
                    for (key, value) in values {
                        // The shell's win; a later file wins over an earlier one.
                        if !r.vars.contains_key(&key) {
                            vars.insert(key, value);
                        }
                    }
                }
                Err((line, message)) => {
                    r.error(item, &k, format!("{}:{line} {message}", env_path.display()));
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        let report = parse_at(&text, &shown, there, &vars, r.depth + 1);
        r.errors.extend(report.errors);
        r.warnings.extend(report.warnings);
        let Some(included) = report.stack else {
            continue;
        };
        for mut spec in included.services {
            if services.iter().any(|s| s.name == spec.name) {
                r.error(
                    item,
                    &k,
                    format!(
                        "service `{}` of {path} is defined in this file too",
                        spec.name
                    ),
                );
                continue;
            }
            for p in &spec.ports {
                if let Some(other) = host_ports.insert((p.host, p.udp), spec.name.clone()) {
                    r.error(
                        item,
                        &k,
                        format!(
                            "host port {} of `{}` in {path} is already used by service `{other}`",
                            p.host_label(),
                            spec.name
                        ),
                    );
                }
            }
            if spec.build.is_some()
                && spec.image == crate::build::build_repository(&included.name, &spec.name, None)
            {
                spec.image = crate::build::build_repository(stack_name, &spec.name, None);
            }
            spec.stack = stack_name.to_string();
            services.push(spec);
        }
        for v in included.volumes {
            if !volumes.contains(&v) {
                volumes.push(v);
            }
        }
        for n in included.networks {
            if !networks.contains(&n) {
                networks.push(n);
            }
        }
    }
}

fn read_service(
    r: &mut Reader,
    stack: &str,
    name: &str,
    node: &Node,
    key: &str,
    at: usize,
    dir: Option<&Path>,
) -> Option<ServiceSpec> {
    let Some(fields) = entries(node) else {
        r.error_at(
            at,
            key,
            format!("expected a mapping, found {}", describe(node)),
        );
        return None;
    };
    let mut spec = ServiceSpec::new(stack, name, "");
    let mut image = None;
    let mut image_node: Option<&Node> = None;
    let mut container_name: Option<&Node> = None;
    let mut ports_node: Option<&Node> = None;
    let mut volumes_node: Option<&Node> = None;
    let mut x_node: Option<&Node> = None;
    let mut scale: Option<(u32, &Node)> = None;
    // Which of the ports came from a range (`21000-21004:21000-21004`).
    let mut ranged: Vec<usize> = Vec::new();
    let mut unresolved_extends = false;
    // Written but unusable (reported already) is not "missing".
    let mut image_written = false;
    let mut build = None;
    let mut build_written = false;
    let mut env_from_files = BTreeMap::new();
    let mut env_inline = BTreeMap::new();
    for (field, value) in fields {
        let k = format!("{key}.{field}");
        match field.as_str() {
            "image" => {
                image_written = true;
                image = r.string(value, &k);
                image_node = Some(value);
            }
            "build" => {
                build_written = true;
                build = read_build(r, value, &k, dir);
            }
            "environment" => env_inline = r.key_values(value, &k, true),
            "env_file" => {
                // `- FILE`, or `- {path: FILE, required: false}` for one
                // that may be missing.
                let files: Vec<(String, &Node, bool)> = match items(value) {
                    Some(list) => list
                        .iter()
                        .enumerate()
                        .filter_map(|(i, n)| {
                            let ik = format!("{k}[{i}]");
                            let mut required = true;
                            let p = match entries(n) {
                                Some(fields) => {
                                    let mut path = None;
                                    for (f, fv) in fields {
                                        match f.as_str() {
                                            "path" => path = scalar(fv),
                                            "required" => match scalar(fv).as_deref() {
                                                Some("true") => {}
                                                Some("false") => required = false,
                                                _ => r.error(fv, &format!("{ik}.required"), format!("expected true or false, found {}", describe(fv))),
                                            },
                                            "format" => r.warn(fv, &format!("{ik}.format"), "`format` is not applied; the file is read as KEY=VALUE lines"),
                                            _ => r.error(fv, &format!("{ik}.{f}"), format!("unknown env_file key `{f}` (path, required)")),
                                        }
                                    }
                                    path
                                }
                                None => scalar(n),
                            };
                            match p {
                                Some(p) => Some((p, n, required)),
                                None => {
                                    r.error(n, &ik, "expected a file path");
                                    None
                                }
                            }
                        })
                        .collect(),
                    None => r
                        .string(value, &k)
                        .map(|p| vec![(p, value, true)])
                        .unwrap_or_default(),
                };
                for (path, n, required) in files {
                    // The path itself may name variables (`${ENV:-dev}.env`).
                    let Some(path) = r.interpolated(&path, n, &k) else {
                        continue;
                    };
                    let full = match dir {
                        Some(d) if Path::new(&path).is_relative() => {
                            d.join(path.trim_start_matches("./"))
                        }
                        _ => Path::new(&path).to_path_buf(),
                    };
                    if std::fs::metadata(&full).is_ok_and(|m| m.len() > MAX_ENV_FILE) {
                        r.error(n, &k, format!("{} is larger than {} KiB; an env file holds KEY=VALUE lines", full.display(), MAX_ENV_FILE / 1024));
                        continue;
                    }
                    match std::fs::read_to_string(&full) {
                        Ok(text) => match crate::interpolate::env_values(&text, r.vars) {
                            Ok(lines) => env_from_files.extend(lines),
                            Err((line, message)) => {
                                r.error(n, &k, format!("{}:{line} {message}", full.display()))
                            }
                        },
                        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => r.error(n, &k, format!("cannot read {}: {e}", full.display())),
                    }
                }
            }
            "ports" => {
                ports_node = Some(value);
                for (i, p) in r.list(value, &k).into_iter().enumerate() {
                    let pk = format!("{k}[{i}]");
                    if let Some(text) = scalar(p).filter(|t| t.contains('-') && !t.contains('$')) {
                        if let Some(range) = read_port_range(r, p, &pk, &text) {
                            ranged.extend(spec.ports.len()..spec.ports.len() + range.len());
                            spec.ports.extend(range);
                            continue;
                        }
                    }
                    if let Some(m) = read_port(r, p, &pk) {
                        spec.ports.push(m);
                    }
                }
                check_tcp_and_udp(r, value, &k, &spec.ports);
            }
            "volumes" => {
                volumes_node = Some(value);
                for (i, v) in r.list(value, &k).into_iter().enumerate() {
                    let vk = format!("{k}[{i}]");
                    if let Some(m) = read_mount(r, v, &vk, dir) {
                        spec.mounts.push(m);
                    }
                }
                spec.tmpfs.append(&mut r.tmpfs);
            }
            "tmpfs" => {
                let list: Vec<&Node> = match items(value) {
                    Some(l) => l.iter().collect(),
                    None => vec![value],
                };
                for (i, t) in list.into_iter().enumerate() {
                    let tk = format!("{k}[{i}]");
                    let Some(text) = r.string(t, &tk) else {
                        continue;
                    };
                    let (target, options) = text.split_once(':').unwrap_or((text.as_str(), ""));
                    if !target.starts_with('/') {
                        r.error(t, &tk, format!("{text:?}: a tmpfs path must be absolute"));
                        continue;
                    }
                    spec.tmpfs.push(crate::service::TmpfsMount {
                        target: target.to_string(),
                        options: options.to_string(),
                    });
                }
            }
            "networks" => {
                if let Some(list) = items(value) {
                    for (i, n) in list.iter().enumerate() {
                        if let Some(n) = r.string(n, &format!("{k}[{i}]")) {
                            spec.networks.push(n);
                        }
                    }
                } else {
                    for (n, opts) in r.map(value, &k) {
                        let nk = format!("{k}.{n}");
                        for (f, v) in entries(opts).unwrap_or_default() {
                            let fk = format!("{nk}.{f}");
                            match f.as_str() {
                                // More names the others reach it by there.
                                "aliases" => {
                                    for (i, a) in r.list(v, &fk).into_iter().enumerate() {
                                        let Some(a) = r.string(a, &format!("{fk}[{i}]")) else {
                                            continue;
                                        };
                                        if valid_alias(&a) {
                                            spec.network_aliases.entry(n.clone()).or_default().push(a);
                                        } else {
                                            r.error(v, &format!("{fk}[{i}]"), format!("{a:?} is not a host name (letters, digits, - and .)"));
                                        }
                                    }
                                }
                                _ => r.warn(
                                    v,
                                    &fk,
                                    format!("`{f}` is not applied: the daemon gives each container of each release its own address"),
                                ),
                            }
                        }
                        spec.networks.push(n);
                    }
                }
            }
            "healthcheck" => spec.healthcheck = read_healthcheck(r, value, &k),
            "labels" => spec.labels = r.key_values(value, &k, false),
            "depends_on" => spec.depends_on = read_depends_on(r, value, &k),
            "restart" => {
                if let Some(policy) = r.string(value, &k) {
                    let (name, count) = policy.split_once(':').unwrap_or((policy.as_str(), ""));
                    let ok = match name {
                        "no" | "always" | "unless-stopped" => count.is_empty(),
                        "on-failure" => count.is_empty() || count.parse::<u32>().is_ok(),
                        _ => false,
                    };
                    if ok {
                        spec.restart = Some(policy);
                    } else {
                        r.error(value, &k, format!("{policy:?} is not a restart policy (no, always, on-failure[:N], unless-stopped)"));
                    }
                }
            }
            "container_name" => container_name = Some(value),
            // Left only when it could not be resolved (said already).
            "extends" => unresolved_extends = true,
            "command" => {
                spec.command = match items(value) {
                    Some(list) => Some(
                        list.iter()
                            .enumerate()
                            .filter_map(|(i, a)| r.string(a, &format!("{k}[{i}]")))
                            .collect(),
                    ),
                    None => r.string(value, &k).map(|s| split_command(&s)),
                }
            }
            "deploy" => read_deploy(r, value, &k, &mut spec),
            "x-changeover" => {
                x_node = Some(value);
                read_x_changeover(r, value, &k, &mut spec, dir)
            }
            f if container::KEYS.contains(&f) => {
                container::read(r, f, value, &k, &mut spec.container)
            }
            "scale" => scale = r.number(value, &k, 0, 100).map(|n| (n as u32, value)),
            // Read by the stack (which services are deployed).
            "profiles" => {}
            "pull_policy" => {
                use crate::service::PullPolicy;
                spec.pull_policy = match r.string(value, &k).as_deref() {
                    Some("always") => Some(PullPolicy::Always),
                    Some("never") => Some(PullPolicy::Never),
                    Some("missing" | "if_not_present") => Some(PullPolicy::Missing),
                    Some("build") => Some(PullPolicy::Build),
                    Some(p @ ("daily" | "weekly")) => {
                        r.warn(value, &k, format!("`{p}` is applied as `always`: the registry is asked at every deploy"));
                        Some(PullPolicy::Always)
                    }
                    Some(p) if p.starts_with("every_") => {
                        r.warn(value, &k, format!("`{p}` is applied as `always`: the registry is asked at every deploy"));
                        Some(PullPolicy::Always)
                    }
                    Some(p) => {
                        r.error(value, &k, format!("{p:?} is not a pull policy (always, never, missing, build)"));
                        None
                    }
                    None => None,
                }
            }
            kind @ ("secrets" | "configs") => {
                let declared = if kind == "secrets" {
                    r.secrets.clone()
                } else {
                    r.configs.clone()
                };
                spec.mounts
                    .extend(files::mounts(r, value, &k, kind, &declared));
            }
            f if f.starts_with("x-") => {}
            "network_mode" => r.warn(
                value,
                &k,
                "`network_mode` is not applied: each container joins the stack's network, where the edge routes to it and the other services reach it by name",
            ),
            "links" => r.warn(
                value,
                &k,
                "`links` are not needed: the services of a stack reach each other by their names on its network",
            ),
            f if COMPOSE_ONLY.contains(&f) => r.warn(
                value,
                &k,
                format!("`{f}` is a Compose key Changeover does not apply; it is ignored"),
            ),
            f => r.error(
                value,
                &k,
                format!(
                    "unknown service key `{f}` (Changeover reads: {}, {})",
                    SUPPORTED.join(", "),
                    container::KEYS.join(", ")
                ),
            ),
        }
    }
    spec.env = env_from_files;
    spec.env.extend(env_inline);
    for m in spec.mounts.iter_mut().filter(|m| m.anonymous) {
        m.source = crate::service::anonymous_volume(name, &m.target);
        if spec.replicas > 1 {
            r.error(
                volumes_node.unwrap_or(node),
                &format!("{key}.volumes"),
                format!(
                    "{:?} is an anonymous volume: Compose gives each container one of its own; Changeover keeps one per service across releases (volume `{}`), which {} replicas would share; name it (\"data:{}\") to share it on purpose, or run one replica",
                    m.target, m.source, spec.replicas, m.target
                ),
            );
        }
    }
    container::check(r, at, key, &spec.container);
    // `scale` is the older way to say `deploy.replicas`.
    if let Some((n, at)) = scale {
        if spec.replicas != 1 && spec.replicas != n {
            r.error(
                at,
                &format!("{key}.scale"),
                format!(
                    "scale {n} and deploy.replicas {} disagree: keep one",
                    spec.replicas
                ),
            );
        } else {
            spec.replicas = n;
        }
    }
    // A well-known port of a protocol that is not HTTP (PostgreSQL's
    // 5432, TLS on 443) and a range of ports (FTP's passive ports, media,
    // games) are relayed as TCP, as Docker's publish would, unless the
    // service says what its ports carry.
    let protocol_written = x_node
        .and_then(entries)
        .is_some_and(|e| e.iter().any(|(f, _)| f == "protocol"));
    for (i, p) in spec.ports.iter_mut().enumerate() {
        if p.udp || p.app.is_some() {
            continue;
        }
        if crate::service::well_known_tcp(p.container).is_some() || ranged.contains(&i) {
            p.app = Some(if protocol_written {
                spec.protocol
            } else {
                Protocol::Tcp
            });
        }
    }
    if let Some(x) = x_node {
        check_protocol_needs(r, x, &format!("{key}.x-changeover"), &spec);
    }
    for route in spec
        .routes()
        .into_iter()
        .filter(|p| p.udp == crate::edge::Udp::Also && p.protocol == Protocol::Http)
    {
        r.warn(
            ports_node.unwrap_or(node),
            &format!("{key}.ports"),
            format!(
                "port {} carries TCP and UDP, and the edge reads its TCP as HTTP (the service's protocol); if it is not HTTP (DNS, a game's protocol), set x-changeover.protocol: tcp",
                route.host
            ),
        );
    }
    if spec.healthcheck.is_none() {
        for route in spec
            .routes()
            .into_iter()
            .filter(|p| p.udp == crate::edge::Udp::Only)
        {
            r.warn(
                ports_node.unwrap_or(node),
                &format!("{key}.ports"),
                format!(
                    "{} carries only UDP: the edge checks it by a TCP connect to container port {} unless the service has a `healthcheck:`; add one if the container listens for UDP alone",
                    route.label(),
                    route.container
                ),
            );
        }
    }
    if let Some(n) = container_name {
        let why = "containers are named per release and slot (STACK-SERVICE-rN-sM) so a new release can start beside the old one; other services reach it by its service name on the stack's network";
        if spec.replicas > 1 {
            r.error(
                n,
                &format!("{key}.container_name"),
                format!(
                    "one name cannot be given to {} replicas: {why}; remove it",
                    spec.replicas
                ),
            );
        } else {
            r.warn(
                n,
                &format!("{key}.container_name"),
                format!("is not applied: {why}"),
            );
        }
    }
    if let Some(b) = build {
        // Built before each deploy and tagged from its content (see
        // `crate::build`); until then the image is its repository.
        if let Some(i) = &image {
            if let Err(why) = crate::image::ImageRef::parse(i) {
                r.error(
                    image_node.unwrap_or(node),
                    &format!("{key}.image"),
                    format!("{i:?} is not an image reference: {why}"),
                );
                return None;
            }
        }
        spec.image = crate::build::build_repository(stack, name, image.as_deref());
        spec.build = Some(b);
        return Some(spec);
    }
    if build_written {
        return None;
    }
    match image.map(|i| (crate::image::ImageRef::parse(&i), i)) {
        Some((Ok(_), i)) => spec.image = i,
        Some((Err(why), i)) => {
            r.error(
                image_node.unwrap_or(node),
                &format!("{key}.image"),
                format!("{i:?} is not an image reference: {why}"),
            );
            return None;
        }
        None => {
            if !image_written && !unresolved_extends {
                r.error_at(at, key, "a service needs an `image:` or a `build:`");
            }
            return None;
        }
    }
    Some(spec)
}

/// `build: DIR` or `build: {context, dockerfile, args, target}`; the
/// context must be a folder (relative to the stack file's) that exists.
fn read_build(
    r: &mut Reader,
    node: &Node,
    key: &str,
    dir: Option<&Path>,
) -> Option<crate::build::BuildSpec> {
    let mut spec = crate::build::BuildSpec {
        context: ".".into(),
        dockerfile: None,
        args: BTreeMap::new(),
        target: None,
    };
    if let Some(fields) = entries(node) {
        for (f, v) in fields {
            let k = format!("{key}.{f}");
            match f.as_str() {
                "context" => spec.context = r.string(v, &k)?,
                "dockerfile" => spec.dockerfile = r.string(v, &k),
                "args" => spec.args = r.key_values(v, &k, true),
                "target" => spec.target = r.string(v, &k),
                "cache_from"
                | "cache_to"
                | "labels"
                | "network"
                | "shm_size"
                | "extra_hosts"
                | "isolation"
                | "privileged"
                | "pull"
                | "no_cache"
                | "platforms"
                | "tags"
                | "ssh"
                | "secrets"
                | "additional_contexts"
                | "dockerfile_inline"
                | "ulimits"
                | "entitlements"
                | "provenance"
                | "sbom" => r.warn(
                    v,
                    &k,
                    format!("`build.{f}` is not applied by Changeover's builds; it is ignored"),
                ),
                other => {
                    r.error(
                        v,
                        &k,
                        format!("unknown build key `{other}` (Changeover reads: context, dockerfile, args, target)"),
                    );
                    return None;
                }
            }
        }
    } else {
        spec.context = r.string(node, key)?;
    }
    if spec.context.contains("://") || spec.context.starts_with("git@") {
        r.error(
            node,
            key,
            format!(
                "{:?}: a build context from a URL is not supported; give a folder",
                spec.context
            ),
        );
        return None;
    }
    if let Some(d) = &spec.dockerfile {
        if d.is_empty() || Path::new(d).is_absolute() || d.split('/').any(|p| p == "..") {
            r.error(
                node,
                &format!("{key}.dockerfile"),
                format!("{d:?}: the Dockerfile must be a path inside the context"),
            );
            return None;
        }
    }
    let full: std::path::PathBuf = match dir {
        Some(d) if Path::new(&spec.context).is_relative() => d.join(&spec.context),
        _ => Path::new(&spec.context).to_path_buf(),
    }
    .components()
    .filter(|c| *c != std::path::Component::CurDir)
    .collect();
    if dir.is_some() && !full.is_dir() {
        r.error(
            node,
            key,
            format!(
                "the build context {} is not a folder that exists",
                full.display()
            ),
        );
        return None;
    }
    if dir.is_some() && !full.join(spec.dockerfile()).is_file() {
        r.error(
            node,
            key,
            format!(
                "there is no {} in the build context {}",
                spec.dockerfile(),
                full.display()
            ),
        );
        return None;
    }
    spec.context = full.display().to_string();
    Some(spec)
}

/// `depends_on`: a list of names, or a mapping of names to
/// `{condition, restart, required}`. Every rollout waits until its
/// service is healthy before the next starts, so `service_started` and
/// `service_healthy` both hold; a one-off job (`service_completed_successfully`)
/// is not something Changeover runs.
fn read_depends_on(r: &mut Reader, node: &Node, key: &str) -> Vec<String> {
    if let Some(list) = items(node) {
        return list
            .iter()
            .enumerate()
            .filter_map(|(i, n)| r.string(n, &format!("{key}[{i}]")))
            .collect();
    }
    let mut out = Vec::new();
    for (name, v) in r.map(node, key) {
        let k = format!("{key}.{name}");
        for (f, fv) in entries(v).unwrap_or_default() {
            match (f.as_str(), scalar(fv).as_deref()) {
                ("condition", Some("service_started" | "service_healthy")) => {}
                ("condition", Some("service_completed_successfully")) => r.error(
                    fv,
                    &format!("{k}.condition"),
                    "Changeover runs services, not one-off jobs: run the job before the deploy (a migration step in CI), or make it a service with a health check",
                ),
                ("condition", other) => r.error(
                    fv,
                    &format!("{k}.condition"),
                    format!("{:?} is not a condition (service_started, service_healthy)", other.unwrap_or_default()),
                ),
                ("restart" | "required", _) => r.warn(fv, &format!("{k}.{f}"), format!("`{f}` is not applied")),
                _ => r.error(fv, &format!("{k}.{f}"), format!("unknown depends_on key `{f}` (condition, restart, required)")),
            }
        }
        out.push(name);
    }
    out
}

/// The services in the order they are deployed: each after the ones it
/// depends on, otherwise as written. A name that is not a service of the
/// stack, and a circle, are errors at the service.
fn in_dependency_order(
    r: &mut Reader,
    services: Vec<ServiceSpec>,
    lines: &BTreeMap<String, usize>,
    declared: &[String],
) -> Vec<ServiceSpec> {
    let names: Vec<String> = services
        .iter()
        .map(|s| s.name.clone())
        .chain(declared.iter().cloned())
        .collect();
    let mut ok = true;
    for s in &services {
        for d in &s.depends_on {
            if !names.contains(d) {
                r.error_at(
                    lines.get(&s.name).copied().unwrap_or(1),
                    &format!("services.{}.depends_on", s.name),
                    format!("`{d}` is not a service of this stack"),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return services;
    }
    // A service that could not be read (its errors said) holds nobody back.
    let read: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let mut placed: Vec<ServiceSpec> = Vec::new();
    let mut left = services;
    while !left.is_empty() {
        let ready = left.iter().position(|s| {
            s.depends_on
                .iter()
                .all(|d| !read.contains(d) || placed.iter().any(|p| &p.name == d))
        });
        match ready {
            Some(i) => placed.push(left.remove(i)),
            None => {
                let circle: Vec<&str> = left.iter().map(|s| s.name.as_str()).collect();
                r.error_at(
                    lines.get(&left[0].name).copied().unwrap_or(1),
                    &format!("services.{}.depends_on", left[0].name),
                    format!(
                        "depends_on goes round in a circle among {}",
                        circle.join(", ")
                    ),
                );
                placed.append(&mut left);
            }
        }
    }
    placed
}

/// Host ports taken in a stack, TCP and UDP apart, by service.
type HostPorts = BTreeMap<(u16, bool), String>;

/// A host port published as TCP and as UDP is one route on the edge, to
/// one container port: both must forward to the same one.
fn check_tcp_and_udp(r: &mut Reader, node: &Node, key: &str, ports: &[PortMapping]) {
    for (i, a) in ports.iter().enumerate() {
        if let Some(b) = ports[..i]
            .iter()
            .find(|b| b.host == a.host && b.udp != a.udp && b.container != a.container)
        {
            let (tcp, udp) = if a.udp { (b, a) } else { (a, b) };
            r.error(
                node,
                key,
                format!(
                    "host port {} forwards TCP to container port {} and UDP to {}: the edge carries both on one route to one container port; forward both to the same port, or publish one on another host port",
                    a.host, tcp.container, udp.container
                ),
            );
        }
    }
}

/// The most ports one range may publish.
const MAX_PORT_RANGE: u32 = 100;

/// `"8000-8010:8000-8010"` (the same length on both sides) as one mapping
/// per port; `None` when `text` is not a range (read as a single port).
/// A host range for one container port is refused: the edge needs one.
fn read_port_range(r: &mut Reader, node: &Node, key: &str, text: &str) -> Option<Vec<PortMapping>> {
    let (mapping, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let parts: Vec<&str> = mapping.rsplitn(3, ':').collect();
    let (container, host) = match parts.as_slice() {
        [c, h, ..] => (*c, *h),
        _ => return None,
    };
    let range = |s: &str| -> Option<(u32, u32)> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
        ((1..=65535).contains(&a) && (1..=65535).contains(&b)).then_some((a, b))
    };
    let (Some((h1, h2)), Some((c1, c2))) = (range(host), range(container)) else {
        return None;
    };
    if !host.contains('-') && !container.contains('-') {
        return None;
    }
    let udp = match proto {
        "tcp" => false,
        "udp" => true,
        // Said by the single-port reader, with the same words.
        _ => return None,
    };
    let fail = |r: &mut Reader, why: String| {
        r.error(node, key, format!("{text:?}: {why}"));
        Some(Vec::new())
    };
    if h1 > h2 || c1 > c2 {
        return fail(r, "a range goes from the lower port to the higher".into());
    }
    if c1 == c2 && h1 != h2 {
        return fail(
            r,
            "a range of host ports for one container port: the edge listens on one port per route; pick one host port".into(),
        );
    }
    if h2 - h1 != c2 - c1 {
        return fail(
            r,
            format!(
                "the host range has {} ports and the container range {}; give both the same length",
                h2 - h1 + 1,
                c2 - c1 + 1
            ),
        );
    }
    if h2 - h1 + 1 > MAX_PORT_RANGE {
        return fail(
            r,
            format!(
                "a range publishes at most {MAX_PORT_RANGE} ports (each is a route on the edge)"
            ),
        );
    }
    if parts.len() == 3 {
        r.warn(
            node,
            key,
            format!("{text:?}: the host IP is not applied; the edge listens on all interfaces"),
        );
    }
    Some(
        (0..=h2 - h1)
            .map(|i| PortMapping {
                host: (h1 + i) as u16,
                container: (c1 + i) as u16,
                udp,
                app: None,
            })
            .collect(),
    )
}

fn read_port(r: &mut Reader, node: &Node, key: &str) -> Option<PortMapping> {
    if let Some(fields) = entries(node) {
        let mut host = None;
        let mut container = None;
        let mut udp = false;
        let mut app = None;
        // Present but invalid was reported already; only a missing one is news.
        let (mut has_host, mut has_container) = (false, false);
        for (f, v) in fields {
            let k = format!("{key}.{f}");
            match f.as_str() {
                "target" => {
                    has_container = true;
                    container = r.number(v, &k, 1, 65535)
                }
                "published" => {
                    has_host = true;
                    host = r.number(v, &k, 1, 65535)
                }
                "protocol" => match scalar(v).as_deref() {
                    Some("tcp") => {}
                    Some("udp") => udp = true,
                    other => r.error(
                        v,
                        &k,
                        format!(
                            "{:?} is not a protocol (tcp or udp)",
                            other.unwrap_or_default()
                        ),
                    ),
                },
                "app_protocol" => {
                    match scalar(v).as_deref().map(str::to_ascii_lowercase).as_deref() {
                        Some("http" | "h2c" | "http2" | "grpc" | "ws") => {
                            app = Some(Protocol::Http)
                        }
                        // TLS the container ends itself is relayed, not read.
                        Some("tcp" | "https" | "tls" | "grpcs" | "wss") => {
                            app = Some(Protocol::Tcp)
                        }
                        // Any protocol goes through a relay.
                        _ => {
                            app = Some(Protocol::Tcp);
                            r.warn(
                            v,
                            &k,
                            format!(
                                "{}: the edge relays the port as TCP (it reads http, h2c, grpc and ws as HTTP)",
                                describe(v)
                            ),
                        )
                        }
                    }
                }
                "mode" | "host_ip" | "name" => r.warn(
                    v,
                    &k,
                    format!("`{f}` is not applied; the edge listens on all interfaces"),
                ),
                _ => r.error(v, &k, format!("unknown port key `{f}`")),
            }
        }
        return match (host, container) {
            (Some(h), Some(c)) => Some(PortMapping {
                host: h as u16,
                container: c as u16,
                udp,
                app,
            }),
            _ => {
                if !(has_host && has_container) {
                    r.error(
                        node,
                        key,
                        "a port needs both `target` (container port) and `published` (host port)",
                    );
                }
                None
            }
        };
    }
    let text = r.string(node, key)?;
    let (mapping, proto) = match text.split_once('/') {
        Some((m, p)) => (m, p),
        None => (text.as_str(), "tcp"),
    };
    let udp = match proto {
        "tcp" => false,
        "udp" => true,
        other => {
            r.error(
                node,
                key,
                format!("{text:?}: {other:?} is not a protocol (tcp or udp)"),
            );
            return None;
        }
    };
    let parts: Vec<&str> = mapping.rsplitn(3, ':').collect();
    let port = |s: &str| s.parse::<u32>().ok().filter(|p| (1..=65535).contains(p));
    match parts.as_slice() {
        [container, host, ..] => {
            if parts.len() == 3 {
                r.warn(
                    node,
                    key,
                    format!(
                        "{text:?}: the host IP is not applied; the edge listens on all interfaces"
                    ),
                );
            }
            match (port(host), port(container)) {
                (Some(h), Some(c)) => Some(PortMapping {
                    host: h as u16,
                    container: c as u16,
                    udp,
                    app: None,
                }),
                (None, _) if host.contains('-') || container.contains('-') => {
                    r.error(
                        node,
                        key,
                        format!("{text:?}: port ranges are not supported"),
                    );
                    None
                }
                (None, _) => {
                    r.error(node, key, format!("{text:?} is not a port: host port {host:?} must be a number from 1 to 65535"));
                    None
                }
                (_, None) => {
                    r.error(node, key, format!("{text:?} is not a port: container port {container:?} must be a number from 1 to 65535"));
                    None
                }
            }
        }
        [single] => {
            if port(single).is_some() {
                r.error(node, key, format!("{text:?} has no host port; write \"HOST:{single}\" so the edge knows where to listen"));
            } else {
                r.error(node, key, format!("{text:?} is not a port"));
            }
            None
        }
        [] => None,
    }
}

fn read_mount(r: &mut Reader, node: &Node, key: &str, dir: Option<&Path>) -> Option<Mount> {
    let bind_or_volume = |source: &str| {
        if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
            MountKind::Bind
        } else {
            MountKind::Volume
        }
    };
    let resolve = |source: String, kind: MountKind| -> String {
        match (kind, dir) {
            (MountKind::Bind, Some(d)) if source.starts_with('.') => {
                d.join(&source).to_string_lossy().to_string()
            }
            _ => source,
        }
    };
    if let Some(fields) = entries(node) {
        let (mut source, mut target, mut read_only, mut kind) = (None, None, false, None);
        let mut options: Vec<String> = Vec::new();
        let mut tmpfs_options: Vec<String> = Vec::new();
        let mut bad_type = false;
        for (f, v) in fields {
            let k = format!("{key}.{f}");
            match f.as_str() {
                "type" => match scalar(v).as_deref() {
                    Some("volume") => kind = Some(Ok(MountKind::Volume)),
                    Some("bind") => kind = Some(Ok(MountKind::Bind)),
                    Some("tmpfs") => kind = Some(Err(())),
                    Some(other) => {
                        bad_type = true;
                        r.error(
                            v,
                            &k,
                            format!(
                                "mount type `{other}` is not supported (volume, bind or tmpfs)"
                            ),
                        )
                    }
                    None => {
                        bad_type = true;
                        r.error(v, &k, "the mount type is volume, bind or tmpfs")
                    }
                },
                "source" => source = r.string(v, &k),
                "target" => target = r.string(v, &k),
                "read_only" => read_only = scalar(v).as_deref() == Some("true"),
                "volume" => {
                    for (o, ov) in r.map(v, &k) {
                        match (o.as_str(), scalar(ov).as_deref()) {
                            ("nocopy", Some("true")) => options.push("nocopy".into()),
                            ("nocopy", _) => {}
                            _ => r.warn(
                                ov,
                                &format!("{k}.{o}"),
                                format!("volume option `{o}` is not applied"),
                            ),
                        }
                    }
                }
                "bind" => {
                    for (o, ov) in r.map(v, &k) {
                        match (o.as_str(), scalar(ov).as_deref()) {
                            ("selinux", Some(z @ ("z" | "Z"))) => options.push(z.to_string()),
                            ("selinux", _) => r.error(
                                ov,
                                &format!("{k}.{o}"),
                                "selinux is z (shared) or Z (private)",
                            ),
                            ("create_host_path", _) => {}
                            _ => r.warn(
                                ov,
                                &format!("{k}.{o}"),
                                format!("bind option `{o}` is not applied"),
                            ),
                        }
                    }
                }
                "tmpfs" => {
                    for (o, ov) in r.map(v, &k) {
                        match (o.as_str(), scalar(ov)) {
                            ("size", Some(size)) => tmpfs_options.push(format!("size={size}")),
                            ("mode", Some(mode)) => tmpfs_options.push(format!("mode={mode}")),
                            _ => r.warn(
                                ov,
                                &format!("{k}.{o}"),
                                format!("tmpfs option `{o}` is not applied"),
                            ),
                        }
                    }
                }
                "consistency" => r.warn(
                    v,
                    &k,
                    "`consistency` only matters to Docker Desktop on macOS and is not applied",
                ),
                _ => r.warn(v, &k, format!("mount option `{f}` is not applied")),
            }
        }
        if bad_type {
            return None;
        }
        if kind == Some(Err(())) {
            // A tmpfs: handed back through the caller's tmpfs list.
            let Some(target) = target.filter(|t| t.starts_with('/')) else {
                r.error(node, key, "a tmpfs mount needs an absolute `target`");
                return None;
            };
            r.tmpfs.push(crate::service::TmpfsMount {
                target,
                options: tmpfs_options.join(","),
            });
            return None;
        }
        let anonymous = source.is_none() && kind.is_none_or(|k| k == Ok(MountKind::Volume));
        let (Some(source), Some(target)) = (source.or(anonymous.then(String::new)), target) else {
            r.error(node, key, "a mount needs `source` and `target`");
            return None;
        };
        if !target.starts_with('/') {
            r.error(
                node,
                key,
                format!("the container path {target:?} must be absolute"),
            );
            return None;
        }
        let kind = kind
            .and_then(Result::ok)
            .unwrap_or_else(|| bind_or_volume(&source));
        return Some(Mount {
            kind,
            source: resolve(source, kind),
            target,
            read_only,
            options,
            anonymous,
            volume: None,
            external: false,
        });
    }
    let text = r.string(node, key)?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, ""),
        [s, t, m] => (*s, *t, *m),
        [target] => {
            if !target.starts_with('/') {
                r.error(
                    node,
                    key,
                    format!("{text:?}: the container path must be absolute"),
                );
                return None;
            }
            // Its volume is named once the service is known.
            return Some(Mount {
                kind: MountKind::Volume,
                source: String::new(),
                target: target.to_string(),
                read_only: false,
                options: Vec::new(),
                anonymous: true,
                volume: None,
                external: false,
            });
        }
        _ => {
            r.error(node, key, format!("{text:?} is not SOURCE:TARGET[:ro]"));
            return None;
        }
    };
    if !target.starts_with('/') {
        r.error(
            node,
            key,
            format!("{text:?}: the container path {target:?} must be absolute"),
        );
        return None;
    }
    let kind = bind_or_volume(source);
    let mut read_only = false;
    let mut options = Vec::new();
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match (m, kind) {
            ("ro", _) => read_only = true,
            ("rw", _) => read_only = false,
            ("z" | "Z", MountKind::Bind) | ("nocopy", MountKind::Volume) => {
                options.push(m.to_string())
            }
            ("z" | "Z", _) => r.error(
                node,
                key,
                format!(
                    "{text:?}: `{m}` (SELinux relabelling) applies to a host path, not a volume"
                ),
            ),
            ("nocopy", _) => r.error(
                node,
                key,
                format!("{text:?}: `nocopy` applies to a volume, not a host path"),
            ),
            ("cached" | "delegated" | "consistent", _) => r.warn(
                node,
                key,
                format!(
                    "{text:?}: `{m}` only matters to Docker Desktop on macOS and is not applied"
                ),
            ),
            _ => r.error(
                node,
                key,
                format!("{text:?}: `{m}` is not a mount option (ro, rw, z, Z, nocopy)"),
            ),
        }
    }
    Some(Mount {
        kind,
        source: resolve(source.to_string(), kind),
        target: target.to_string(),
        read_only,
        options,
        anonymous: false,
        volume: None,
        external: false,
    })
}

/// A network alias: a DNS name.
fn valid_alias(a: &str) -> bool {
    a.len() <= 253
        && a.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// A service's `profiles:` (names; a bad entry is refused).
fn service_profiles(r: &mut Reader, node: &Node, key: &str) -> Vec<String> {
    let Some(value) =
        entries(node).and_then(|e| e.into_iter().find(|(k, _)| k == "profiles").map(|(_, v)| v))
    else {
        return Vec::new();
    };
    let k = format!("{key}.profiles");
    let mut out = Vec::new();
    for (i, item) in r.list(value, &k).into_iter().enumerate() {
        let Some(p) = r.string(item, &format!("{k}[{i}]")) else {
            continue;
        };
        if p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            r.error(
                item,
                &format!("{k}[{i}]"),
                format!("{p:?} is not a profile name (letters, digits, _ . -)"),
            );
            continue;
        }
        out.push(p);
    }
    out
}

/// A top-level volume's settings: its own name (`name:`, or the name an
/// `external:` volume has) and whether it is external; `None` when the
/// stack's default name (`STACK_VOLUME`) applies. Driver settings are
/// named, not applied.
fn read_top_volume(r: &mut Reader, spec: &Node, key: &str) -> Option<(String, bool)> {
    let mut name = None;
    let mut external = false;
    let mut external_name = None;
    for (f, v) in entries(spec).unwrap_or_default() {
        let k = format!("{key}.{f}");
        match f.as_str() {
            "name" => name = r.string(v, &k),
            "external" => match scalar(v).as_deref() {
                Some("true") => external = true,
                Some("false") => {}
                // The older form: `external: {name: NAME}`.
                _ if entries(v).is_some() => {
                    external = true;
                    for (ef, ev) in entries(v).unwrap_or_default() {
                        match ef.as_str() {
                            "name" => external_name = r.string(ev, &format!("{k}.name")),
                            _ => r.error(
                                ev,
                                &format!("{k}.{ef}"),
                                format!("unknown external key `{ef}` (name)"),
                            ),
                        }
                    }
                }
                _ => r.error(
                    v,
                    &k,
                    format!("expected true or false, found {}", describe(v)),
                ),
            },
            "driver" | "driver_opts" | "labels" => r.warn(
                v,
                &k,
                format!("`{f}` is not applied; a plain local volume is created"),
            ),
            _ => r.error(
                v,
                &k,
                format!("unknown volume key `{f}` (name, external, driver, driver_opts, labels)"),
            ),
        }
    }
    let own = match (name, external_name) {
        (Some(a), Some(b)) if a != b => {
            r.error(
                spec,
                key,
                format!("two names: {a:?} and external.name {b:?}; keep one"),
            );
            return None;
        }
        (a, b) => a.or(b),
    };
    if let Some(n) = &own {
        let ok = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            r.error(
                spec,
                key,
                format!("{n:?} is not a volume name (letters, digits, _ . -)"),
            );
            return None;
        }
    }
    match (own, external) {
        (Some(n), ext) => Some((n, ext)),
        // External under its key's own name, unprefixed.
        (None, true) => Some((key.trim_start_matches("volumes.").to_string(), true)),
        (None, false) => None,
    }
}

fn read_healthcheck(r: &mut Reader, node: &Node, key: &str) -> Option<DockerHealthcheck> {
    let mut hc = DockerHealthcheck {
        test: Vec::new(),
        interval_ms: 30_000,
        timeout_ms: 30_000,
        retries: 3,
        start_period_ms: 0,
    };
    let mut disabled = false;
    for (f, v) in r.map(node, key) {
        let k = format!("{key}.{f}");
        match f.as_str() {
            "test" => {
                hc.test = match items(v) {
                    Some(list) => list.iter().filter_map(scalar).collect(),
                    None => match r.string(v, &k) {
                        Some(s) => vec!["CMD-SHELL".to_string(), s],
                        None => Vec::new(),
                    },
                };
                if let Some(first) = hc.test.first() {
                    if !["CMD", "CMD-SHELL", "NONE"].contains(&first.as_str()) {
                        r.error(
                            v,
                            &k,
                            format!(
                                "the test must start with CMD, CMD-SHELL or NONE, not {first:?}"
                            ),
                        );
                    }
                }
            }
            "interval" => hc.interval_ms = r.duration(v, &k).unwrap_or(hc.interval_ms),
            "timeout" => hc.timeout_ms = r.duration(v, &k).unwrap_or(hc.timeout_ms),
            "start_period" => hc.start_period_ms = r.duration(v, &k).unwrap_or(0),
            "retries" => hc.retries = r.number(v, &k, 1, 1000).unwrap_or(3) as u32,
            "disable" => disabled = scalar(v).as_deref() == Some("true"),
            "start_interval" => r.warn(v, &k, "`start_interval` is not applied"),
            _ => r.error(v, &k, format!("unknown healthcheck key `{f}`")),
        }
    }
    if disabled {
        hc.test = vec!["NONE".into()];
    } else if hc.test.is_empty() {
        r.error(node, key, "a healthcheck needs a `test`");
        return None;
    }
    Some(hc)
}

fn read_deploy(r: &mut Reader, node: &Node, key: &str, spec: &mut ServiceSpec) {
    for (f, v) in r.map(node, key) {
        let k = format!("{key}.{f}");
        match f.as_str() {
            "replicas" => spec.replicas = r.number(v, &k, 0, 100).unwrap_or(1) as u32,
            "update_config" => {
                for (u, uv) in r.map(v, &k) {
                    let uk = format!("{k}.{u}");
                    match u.as_str() {
                        "parallelism" => {
                            spec.update.parallelism = r.number(uv, &uk, 1, 100).unwrap_or(1) as u32
                        }
                        "delay" => spec.update.delay_ms = r.duration(uv, &uk).unwrap_or(0),
                        "order" => match scalar(uv).as_deref() {
                            Some("start-first") => spec.update.order = UpdateOrder::StartFirst,
                            Some("stop-first") => spec.update.order = UpdateOrder::StopFirst,
                            _ => r.error(uv, &uk, format!("{} is not an order (start-first or stop-first)", describe(uv))),
                        },
                        "failure_action" | "monitor" | "max_failure_ratio" => r.warn(
                            uv,
                            &uk,
                            format!("`{u}` is not applied: a failed rollout always restores the previous release"),
                        ),
                        _ => r.error(uv, &uk, format!("unknown update_config key `{u}`")),
                    }
                }
            }
            "resources" => container::read_resources(r, v, &k, &mut spec.container),
            "mode" | "restart_policy" | "placement" | "labels" | "rollback_config"
            | "endpoint_mode" => {
                r.warn(v, &k, format!("`deploy.{f}` is not applied by Changeover"))
            }
            _ => r.error(v, &k, format!("unknown deploy key `{f}`")),
        }
    }
}

/// The most host names one service may have.
const MAX_SITE_HOSTS: usize = 100;
/// The largest certificate or key file read.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// `tls: acme`, or `{acme: true | cert: FILE, key: FILE, hsts: BOOL}`.
fn read_tls(r: &mut Reader, v: &Node, k: &str, dir: Option<&Path>) -> Option<ServiceTls> {
    if let Some(word) = scalar(v) {
        return match word.as_str() {
            "acme" => Some(ServiceTls {
                cert_file: None,
                key_file: None,
                hsts: false,
            }),
            _ => {
                r.error(
                    v,
                    k,
                    format!(
                        "{} is not a tls setting (acme, or {{cert: FILE, key: FILE}})",
                        describe(v)
                    ),
                );
                None
            }
        };
    }
    let mut tls = ServiceTls {
        cert_file: None,
        key_file: None,
        hsts: false,
    };
    let mut acme = false;
    for (n, nv) in r.map(v, k) {
        let nk = format!("{k}.{n}");
        match n.as_str() {
            "acme" => match scalar(nv).as_deref() {
                Some("true") => acme = true,
                Some("false") => {}
                _ => r.error(nv, &nk, format!("{} is not true or false", describe(nv))),
            },
            "hsts" => match scalar(nv).as_deref() {
                Some("true") => tls.hsts = true,
                Some("false") => tls.hsts = false,
                _ => r.error(nv, &nk, format!("{} is not true or false", describe(nv))),
            },
            "cert" | "key" => {
                let Some(path) = r.string(nv, &nk) else {
                    continue;
                };
                let full = match dir {
                    Some(d) if Path::new(&path).is_relative() => d.join(&path),
                    _ => Path::new(&path).to_path_buf(),
                };
                match std::fs::metadata(&full) {
                    Ok(m) if !m.is_file() => {
                        r.error(nv, &nk, format!("{} is not a file", full.display()))
                    }
                    Ok(m) if m.len() > MAX_PEM_FILE => r.error(
                        nv,
                        &nk,
                        format!(
                            "{} is {} bytes; a PEM file here is at most 1 MiB",
                            full.display(),
                            m.len()
                        ),
                    ),
                    Ok(_) => {
                        let full = full.to_string_lossy().into_owned();
                        if n == "cert" {
                            tls.cert_file = Some(full);
                        } else {
                            tls.key_file = Some(full);
                        }
                    }
                    Err(e) => r.error(nv, &nk, format!("cannot read {}: {e}", full.display())),
                }
            }
            _ => r.error(
                nv,
                &nk,
                format!("unknown tls key `{n}` (acme, cert, key, hsts)"),
            ),
        }
    }
    match (acme, tls.cert_file.is_some(), tls.key_file.is_some()) {
        (true, false, false) | (false, true, true) => Some(tls),
        (true, _, _) => {
            r.error(
                v,
                k,
                "tls: either acme or cert and key files, not both".to_string(),
            );
            None
        }
        (false, false, false) => {
            r.error(
                v,
                k,
                "tls needs acme: true, or cert and key files".to_string(),
            );
            None
        }
        _ => {
            // A file that could not be read was reported already.
            if !r.errors.iter().any(|e| e.key.starts_with(k)) {
                r.error(v, k, "tls needs both cert and key files".to_string());
            }
            None
        }
    }
}

/// A certificate or key file's text, at most [`MAX_PEM_FILE`] bytes.
pub fn read_pem_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut text = String::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if text.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "{path} is larger than 1 MiB; a PEM file here is at most that"
        ));
    }
    Ok(text)
}

fn read_x_changeover(
    r: &mut Reader,
    node: &Node,
    key: &str,
    spec: &mut ServiceSpec,
    dir: Option<&Path>,
) {
    for (f, v) in r.map(node, key) {
        let k = format!("{key}.{f}");
        match f.as_str() {
            "strategy" => match scalar(v).as_deref().and_then(Strategy::parse) {
                Some(strategy) => spec.strategy = strategy,
                None => r.error(
                    v,
                    &k,
                    format!("{} is not a strategy (rolling, blue-green or canary)", describe(v)),
                ),
            },
            "canary" => {
                for (c, cv) in r.map(v, &k) {
                    let ck = format!("{k}.{c}");
                    match c.as_str() {
                        "percent" => {
                            spec.canary_percent = r
                                .number(cv, &ck, 1, 100)
                                .unwrap_or(spec.canary_percent as u64)
                                as u32
                        }
                        "guard" => {
                            let mut guard = CanaryGuard {
                                max_5xx_percent: 0,
                                window_ms: DEFAULT_GUARD_WINDOW_MS,
                                min_requests: DEFAULT_GUARD_MIN_REQUESTS,
                            };
                            let mut limit = false;
                            for (g, gv) in r.map(cv, &ck) {
                                let gk = format!("{ck}.{g}");
                                match g.as_str() {
                                    "max_5xx_percent" => {
                                        if let Some(n) = r.number(gv, &gk, 1, 100) {
                                            guard.max_5xx_percent = n as u32;
                                            limit = true;
                                        }
                                    }
                                    "window" => {
                                        guard.window_ms = r.duration(gv, &gk).unwrap_or(guard.window_ms)
                                    }
                                    "min_requests" => {
                                        guard.min_requests = r
                                            .number(gv, &gk, 1, 1_000_000)
                                            .unwrap_or(guard.min_requests)
                                    }
                                    _ => r.error(gv, &gk, format!("unknown guard key `{g}` (max_5xx_percent, window, min_requests)")),
                                }
                            }
                            if limit {
                                spec.canary_guard = Some(guard);
                            } else {
                                r.error(cv, &ck, "a guard needs max_5xx_percent (1 to 100)".to_string());
                            }
                        }
                        _ => r.error(cv, &ck, format!("unknown canary key `{c}` (percent, guard)")),
                    }
                }
            }
            "standby" => spec.standby_ms = r.duration(v, &k),
            "protocol" => match scalar(v).as_deref() {
                Some("http") => spec.protocol = Protocol::Http,
                Some("tcp") => spec.protocol = Protocol::Tcp,
                _ => r.error(v, &k, format!("{} is not a protocol (http or tcp)", describe(v))),
            },
            "health" => {
                let mut probe = HealthProbe::default();
                for (h, hv) in r.map(v, &k) {
                    let hk = format!("{k}.{h}");
                    match h.as_str() {
                        "path" => {
                            if let Some(p) = r.string(hv, &hk) {
                                if p.starts_with('/') {
                                    probe.path = Some(p);
                                } else {
                                    r.error(hv, &hk, format!("{p:?} must start with /"));
                                }
                            }
                        }
                        "interval" => probe.interval_ms = r.duration(hv, &hk).unwrap_or(probe.interval_ms),
                        "timeout" => probe.timeout_ms = r.duration(hv, &hk).unwrap_or(probe.timeout_ms),
                        "healthy_threshold" => {
                            probe.healthy_threshold = r.number(hv, &hk, 1, 100).unwrap_or(1) as u32
                        }
                        "unhealthy_threshold" => {
                            probe.unhealthy_threshold = r.number(hv, &hk, 1, 100).unwrap_or(3) as u32
                        }
                        _ => r.error(hv, &hk, format!("unknown health key `{h}` (path, interval, timeout, healthy_threshold, unhealthy_threshold)")),
                    }
                }
                spec.health = probe;
            }
            "drain_timeout" => spec.drain_timeout_ms = r.duration(v, &k).unwrap_or(spec.drain_timeout_ms),
            "deploy_timeout" => {
                spec.deploy_timeout_ms = r.duration(v, &k).unwrap_or(spec.deploy_timeout_ms)
            }
            "autoredeploy" => {
                let mut auto = crate::redeploy::AutoRedeploy {
                    watch: crate::redeploy::Watch::Digest,
                    check_every_ms: crate::redeploy::DEFAULT_CHECK_EVERY_MS,
                    strategy: None,
                    promote_after_ms: None,
                };
                let mut ok = true;
                for (n, nv) in r.map(v, &k) {
                    let nk = format!("{k}.{n}");
                    match n.as_str() {
                        "watch" => match scalar(nv).map(|w| crate::redeploy::Watch::parse(&w)) {
                            Some(Ok(w)) => auto.watch = w,
                            Some(Err(e)) => {
                                r.error(nv, &nk, e);
                                ok = false;
                            }
                            None => {
                                r.error(nv, &nk, format!("expected digest, local or semver:RANGE, found {}", describe(nv)));
                                ok = false;
                            }
                        },
                        "check_every" => {
                            if let Some(ms) = r.duration(nv, &nk) {
                                if ms < crate::redeploy::MIN_CHECK_EVERY_MS {
                                    r.error(nv, &nk, format!("checks are at least {} s apart (a registry is not hammered)", crate::redeploy::MIN_CHECK_EVERY_MS / 1000));
                                    ok = false;
                                } else {
                                    auto.check_every_ms = ms;
                                }
                            }
                        }
                        "strategy" => match scalar(nv).as_deref().and_then(Strategy::parse) {
                            Some(s) => auto.strategy = Some(s),
                            None => {
                                r.error(nv, &nk, format!("{} is not a strategy (rolling, blue-green or canary)", describe(nv)));
                                ok = false;
                            }
                        },
                        "promote_after" => auto.promote_after_ms = r.duration(nv, &nk),
                        _ => {
                            r.error(nv, &nk, format!("unknown autoredeploy key `{n}` (watch, check_every, strategy, promote_after)"));
                            ok = false;
                        }
                    }
                }
                if ok {
                    spec.autoredeploy = Some(auto);
                }
            }
            "snapshots" => {
                let mut policy = SnapshotPolicy {
                    before_deploy: false,
                    keep: DEFAULT_SNAPSHOT_KEEP,
                };
                for (n, nv) in r.map(v, &k) {
                    let nk = format!("{k}.{n}");
                    match n.as_str() {
                        "before_deploy" => match scalar(nv).as_deref() {
                            Some("true") => policy.before_deploy = true,
                            Some("false") => policy.before_deploy = false,
                            _ => r.error(nv, &nk, format!("{} is not true or false", describe(nv))),
                        },
                        "keep" => policy.keep = r.number(nv, &nk, 1, 1000).unwrap_or(u64::from(policy.keep)) as u32,
                        _ => r.error(nv, &nk, format!("unknown snapshots key `{n}` (before_deploy, keep)")),
                    }
                }
                spec.snapshots = Some(policy);
            }
            "timeouts" => {
                let t = &mut spec.timeouts;
                for (n, nv) in r.map(v, &k) {
                    let nk = format!("{k}.{n}");
                    let slot = match n.as_str() {
                        "header" => &mut t.header_ms,
                        "idle" => &mut t.idle_ms,
                        "body" => &mut t.body_ms,
                        "response" => &mut t.response_ms,
                        "udp_idle" => &mut t.udp_idle_ms,
                        _ => {
                            r.error(nv, &nk, format!("unknown timeouts key `{n}` (header, idle, body, response, udp_idle)"));
                            continue;
                        }
                    };
                    match r.duration(nv, &nk) {
                        Some(0) => r.error(nv, &nk, "a timeout of 0 would cut every client off; give a duration such as 30s".to_string()),
                        Some(ms) if ms > MAX_EDGE_TIMEOUT_MS => r.error(nv, &nk, "a timeout longer than 1h is refused (a client could hold a connection that long)".to_string()),
                        Some(ms) => *slot = ms,
                        None => {}
                    }
                }
            }
            "trusted_proxies" => {
                let mut list = Vec::new();
                for (i, item) in r.list(v, &k).into_iter().enumerate() {
                    let ik = format!("{k}[{i}]");
                    match r.string(item, &ik) {
                        Some(text) if crate::edge::parse_network(&text).is_some() => list.push(text.trim().to_string()),
                        Some(text) => r.error(item, &ik, format!("{text:?} is not an address or network (10.0.0.5, 10.0.0.0/8, fd00::/8)")),
                        None => {}
                    }
                }
                spec.trusted_proxies = list;
            }
            "hosts" => {
                let mut hosts: Vec<String> = Vec::new();
                let items = match v.data {
                    YamlData::Sequence(_) => r.list(v, &k),
                    _ => vec![v],
                };
                for (i, item) in items.into_iter().enumerate() {
                    let ik = format!("{k}[{i}]");
                    let Some(text) = r.string(item, &ik) else { continue };
                    let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
                    if !crate::edge::is_site_host(&host) {
                        r.error(item, &ik, format!("{text:?} is not a host name (app.example.test, or *.example.test for one label)"));
                    } else if hosts.contains(&host) {
                        r.error(item, &ik, format!("{host} is listed twice"));
                    } else {
                        hosts.push(host);
                    }
                }
                if hosts.len() > MAX_SITE_HOSTS {
                    r.error(v, &k, format!("{} hosts; a service may have at most {MAX_SITE_HOSTS}", hosts.len()));
                }
                spec.hosts = hosts;
            }
            "tls" => spec.tls = read_tls(r, v, &k, dir),
            _ => r.error(
                v,
                &k,
                format!("unknown x-changeover key `{f}` (strategy, canary, standby, protocol, health, drain_timeout, deploy_timeout, snapshots, timeouts, trusted_proxies, hosts, tls, autoredeploy)"),
            ),
        }
    }
    if spec.tls.is_some() && spec.hosts.is_empty() {
        r.error(node, &format!("{key}.tls"), "tls needs hosts: the certificate is chosen by the name a client asks for (x-changeover.hosts: [app.example.test])".to_string());
    }
}

/// What `x-changeover` asks of the ports, checked once both are read
/// (they may come in either order): hosts and a health path need a port
/// that carries HTTP.
fn check_protocol_needs(r: &mut Reader, node: &Node, key: &str, spec: &ServiceSpec) {
    let http = spec.has_http_port();
    if !spec.hosts.is_empty() && spec.protocol == Protocol::Tcp && !http {
        r.error(
            node,
            &format!("{key}.hosts"),
            "hosts are chosen by HTTP's Host and TLS SNI; a TCP service cannot have them"
                .to_string(),
        );
    } else if !spec.hosts.is_empty() && !spec.has_tcp_port() {
        r.error(
            node,
            &format!("{key}.hosts"),
            "hosts route to the service's published TCP port: give it one (ports: [\"8080:80\"])"
                .to_string(),
        );
    } else if !spec.hosts.is_empty() && !http {
        r.error(
            node,
            &format!("{key}.hosts"),
            format!(
                "hosts are chosen by HTTP's Host and TLS SNI, and no port of the service carries HTTP ({}): publish an HTTP port, or write `app_protocol: http` on the port",
                relayed(spec)
            ),
        );
    }
    if spec.health.path.is_some() && !http {
        if spec.protocol == Protocol::Tcp {
            r.error(
                node,
                key,
                "a TCP service is checked by connecting to it; remove health.path (or use protocol: http)".to_string(),
            );
        } else if spec.has_tcp_port() {
            r.error(
                node,
                &format!("{key}.health.path"),
                format!(
                    "a health path is asked over HTTP, and no port of the service carries HTTP ({}): remove health.path (the edge then checks by connecting), or write `app_protocol: http` on the port",
                    relayed(spec)
                ),
            );
        }
    }
}

/// `port 5432 is PostgreSQL's, relayed as TCP`, for the well-known ports
/// the reader relays (or what the ports say they carry).
fn relayed(spec: &ServiceSpec) -> String {
    let said: Vec<String> = spec
        .ports
        .iter()
        .filter(|p| !p.udp && p.app.unwrap_or(spec.protocol) == Protocol::Tcp)
        .map(|p| match crate::service::well_known_tcp(p.container) {
            Some(name) => format!("port {} is {name}, relayed as TCP", p.host),
            None => format!("port {} is relayed as TCP", p.host),
        })
        .collect();
    said.join("; ")
}

/// The longest `x-changeover.timeouts` value taken.
const MAX_EDGE_TIMEOUT_MS: u64 = 3_600_000;

/// Splits a command string the way Compose does for simple cases (spaces,
/// single and double quotes).
fn split_command(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(text, "stack.yml", None)
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn build_is_read_as_a_folder_or_its_settings_and_checked_against_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("web")).unwrap();
        std::fs::write(dir.path().join("web/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("web/Prod.Dockerfile"), "FROM scratch\n").unwrap();
        let text = "name: shop\nservices:\n  web:\n    build: ./web\n  api:\n    image: reg:5000/team/api:dev\n    build:\n      context: web\n      dockerfile: Prod.Dockerfile\n      args: [MODE=prod, EMPTY=]\n      target: runtime\n      cache_from: [x]\n";
        let report = parse(text, "stack.yml", Some(dir.path()));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let stack = report.stack.unwrap();
        let web = &stack.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(web.image, "shop-web");
        let b = web.build.as_ref().unwrap();
        assert_eq!(b.context, dir.path().join("web").display().to_string());
        assert_eq!(b.dockerfile(), "Dockerfile");
        let api = &stack.services.iter().find(|s| s.name == "api").unwrap();
        assert_eq!(
            api.image, "reg:5000/team/api",
            "the image's repository, tagged per build"
        );
        let b = api.build.as_ref().unwrap();
        assert_eq!(b.dockerfile.as_deref(), Some("Prod.Dockerfile"));
        assert_eq!(b.args.get("MODE").map(String::as_str), Some("prod"));
        assert_eq!(b.target.as_deref(), Some("runtime"));
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.to_string().contains("build.cache_from")),
            "{:?}",
            report.warnings
        );
        let bad = parse(
            "name: shop\nservices:\n  web:\n    build: {context: web, colour: red}\n",
            "stack.yml",
            Some(dir.path()),
        );
        assert!(bad
            .errors
            .iter()
            .any(|e| e.to_string().contains("unknown build key `colour`")));
        assert!(errors("name: s\nservices:\n  web:\n    ports: [\"1:2\"]\n")
            .iter()
            .any(|e| e.contains("needs an `image:` or a `build:`")));
    }

    #[test]
    fn autoredeploy_is_read_checked_and_written_back() {
        let text = "name: shop\nservices:\n  web:\n    image: reg:5000/web:1.2.0\n    x-changeover:\n      autoredeploy: {watch: \"semver:^1.2\", check_every: 30s, strategy: canary, promote_after: 5m}\n";
        let report = parse(text, "stack.yml", None);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let spec = report.stack.unwrap().services.remove(0);
        let auto = spec.autoredeploy.clone().unwrap();
        assert_eq!(
            auto.watch,
            crate::redeploy::Watch::Semver {
                range: "^1.2".into()
            }
        );
        assert_eq!(
            (auto.check_every_ms, auto.promote_after_ms),
            (30_000, Some(300_000))
        );
        assert_eq!(auto.strategy, Some(Strategy::Canary));
        let written = crate::compose::to_compose(&Stack {
            name: "shop".into(),
            services: vec![spec.clone()],
            volumes: Vec::new(),
            networks: Vec::new(),
        });
        let again = parse(&written, "stack.yml", None)
            .stack
            .unwrap()
            .services
            .remove(0);
        assert_eq!(again.autoredeploy, spec.autoredeploy, "{written}");
        for (bad, says) in [
            ("{watch: every-push}", "not something to watch"),
            ("{watch: \"semver:^x\"}", "is not a version"),
            ("{watch: digest, check_every: 1s}", "at least 5 s apart"),
            ("{watch: digest, strategy: yolo}", "not a strategy"),
            (
                "{watch: digest, when: always}",
                "unknown autoredeploy key `when`",
            ),
        ] {
            let text = format!("name: shop\nservices:\n  web:\n    image: web:1\n    x-changeover:\n      autoredeploy: {bad}\n");
            let errors = errors(&text);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(says) && e.contains("stack.yml:6")),
                "{bad}: {errors:?}"
            );
        }
    }

    const GOOD: &str = r#"name: shop
services:
  web:
    image: changeover-demo:v1
    command: ["demo", "--version", "v1"]
    environment:
      MODE: production
      EMPTY:
    ports:
      - "18080:8080"
    volumes:
      - data:/data
      - ./conf:/conf:ro
    healthcheck:
      test: ["CMD", "/changeover-edge", "probe", "http://127.0.0.1:8080/health"]
      interval: 2s
      retries: 5
    labels:
      team: shop
    deploy:
      replicas: 3
      update_config:
        parallelism: 2
        delay: 1s
        order: start-first
    x-changeover:
      strategy: rolling
      health: {path: /health, interval: 500ms, timeout: 1s, healthy_threshold: 2}
      drain_timeout: 10s
      deploy_timeout: 1m
    restart: always
volumes:
  data:
"#;

    #[test]
    fn a_full_service_reads_into_its_spec() {
        let report = parse(GOOD, "stack.yml", Some(Path::new("/srv")));
        assert!(report.errors.is_empty(), "no errors: {:?}", report.errors);
        let stack = report.stack.unwrap();
        let web = &stack.services[0];
        assert_eq!(stack.name, "shop");
        assert_eq!(web.image, "changeover-demo:v1");
        assert_eq!(web.ports, vec![PortMapping::tcp(18080, 8080)]);
        assert_eq!(web.mounts[0].kind, MountKind::Volume);
        assert_eq!(
            web.mounts[1].source, "/srv/./conf",
            "bind paths resolve against the file"
        );
        assert!(web.mounts[1].read_only);
        assert_eq!(
            web.env.get("EMPTY"),
            None,
            "a name with no value takes the shell's, and there is none"
        );
        assert_eq!(web.replicas, 3);
        assert_eq!(web.update.parallelism, 2);
        assert_eq!(web.update.delay_ms, 1000);
        assert_eq!(web.health.path.as_deref(), Some("/health"));
        assert_eq!(web.health.interval_ms, 500);
        assert_eq!(web.health.healthy_threshold, 2);
        assert_eq!(web.drain_timeout_ms, 10_000);
        assert_eq!(web.deploy_timeout_ms, 60_000);
        assert_eq!(web.healthcheck.as_ref().unwrap().retries, 5);
        assert!(
            report.warnings.is_empty(),
            "`restart` is applied now: {:?}",
            report.warnings
        );
        assert_eq!(web.restart.as_deref(), Some("always"));
    }

    #[test]
    fn a_bad_port_names_file_line_and_key() {
        let e =
            errors("name: s\nservices:\n  web:\n    image: a\n    ports:\n      - \"80:abc\"\n");
        assert_eq!(
            e,
            vec![
                r#"stack.yml:6 services.web.ports[0]: "80:abc" is not a port: container port "abc" must be a number from 1 to 65535"#
            ],
            "the message says file, line and key"
        );
    }

    #[test]
    fn out_of_range_and_hostless_ports_are_refused() {
        let e = errors("name: s\nservices:\n  web:\n    image: a\n    ports: [\"70000:80\", \"8080\", \"9-7:9-7\", \"53:53/udp\", \"1-3:80\", \"1-3:1-2\", \"1000-1200:1000-1200\", \"80:80/sctp\", \"53:5353\"]\n");
        assert_eq!(e.len(), 8, "each bad port is reported: {e:?}");
        assert!(e[0].contains("70000"), "{}", e[0]);
        assert!(e[1].contains("no host port"), "{}", e[1]);
        assert!(
            e[2].contains("from the lower port to the higher"),
            "{}",
            e[2]
        );
        assert!(e[3].contains("pick one host port"), "{}", e[3]);
        assert!(
            e[4].contains("the host range has 3 ports and the container range 2"),
            "{}",
            e[4]
        );
        assert!(e[5].contains("at most 100 ports"), "{}", e[5]);
        assert!(
            e[6].contains("\"sctp\" is not a protocol (tcp or udp)"),
            "{}",
            e[6]
        );
        assert_eq!(
            e[7],
            "stack.yml:5 services.web.ports: host port 53 forwards TCP to container port 5353 and UDP to 53: the edge carries both on one route to one container port; forward both to the same port, or publish one on another host port"
        );
    }

    #[test]
    fn network_aliases_are_read_and_other_network_options_named() {
        let report = parse(
            "name: s\nservices:\n  api:\n    image: a\n    networks:\n      back:\n        aliases: [api.internal, legacy-api]\n        ipv4_address: 172.20.0.5\n      default: {}\n  bad:\n    image: b\n    networks:\n      back:\n        aliases: [\"no spaces\"]\nnetworks:\n  back:\n",
            "stack.yml",
            None,
        );
        let said = |v: &[StackIssue]| v.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            said(&report.warnings),
            ["stack.yml:8 services.api.networks.back.ipv4_address: `ipv4_address` is not applied: the daemon gives each container of each release its own address"]
        );
        assert_eq!(
            said(&report.errors),
            ["stack.yml:14 services.bad.networks.back.aliases[0]: \"no spaces\" is not a host name (letters, digits, - and .)"]
        );
        let good = parse(
            "name: s\nservices:\n  api:\n    image: a\n    networks:\n      back: {aliases: [api.internal]}\n      default:\nnetworks:\n  back:\n",
            "stack.yml",
            None,
        );
        let api = &good.stack.unwrap().services[0];
        assert_eq!(api.networks, ["back", "default"]);
        assert_eq!(api.network_aliases["back"], ["api.internal"]);
    }

    #[test]
    fn services_of_profiles_that_are_not_active_are_left_out_and_said() {
        let text = "name: s\nservices:\n  web:\n    image: nginx\n    ports: [\"8080:80\"]\n  adminer:\n    image: adminer\n    profiles: [debug, tools]\n    ports: [\"8080:8080\"]\n  jobs:\n    image: jobs\n    profiles: [batch]\n";
        let read = |profiles: Option<&str>| {
            let vars: BTreeMap<String, String> = profiles
                .map(|p| ("COMPOSE_PROFILES".to_string(), p.to_string()))
                .into_iter()
                .collect();
            let report = parse_with(text, "stack.yml", None, &vars);
            let said = |v: &[StackIssue]| v.iter().map(|w| w.to_string()).collect::<Vec<_>>();
            (
                report
                    .stack
                    .map(|s| {
                        s.services
                            .iter()
                            .map(|s| s.name.clone())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
                said(&report.warnings),
                said(&report.errors),
            )
        };
        let (services, warnings, refused) = read(None);
        assert_eq!(
            refused,
            Vec::<String>::new(),
            "a left-out service's port is no clash"
        );
        assert_eq!(services, ["web"]);
        assert_eq!(
            warnings,
            [
                "stack.yml:6 services.adminer: left out: its profiles (debug, tools) are not active; COMPOSE_PROFILES=debug (in the shell or .env) deploys it",
                "stack.yml:10 services.jobs: left out: its profiles (batch) are not active; COMPOSE_PROFILES=batch (in the shell or .env) deploys it",
            ]
        );
        let (services, warnings, _) = read(Some("batch"));
        assert_eq!(services, ["web", "jobs"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (_, _, refused) = read(Some("batch, tools"));
        assert_eq!(
            refused,
            ["stack.yml:9 services.adminer.ports: host port 8080 is already used by service `web`"],
            "once deployed, its port is checked like any other"
        );
        let e = errors("name: s\nservices:\n  web:\n    image: nginx\n    depends_on: [db]\n  db:\n    image: postgres\n    profiles: [with-db]\n  x:\n    image: x\n    profiles: [\"two words\"]\n");
        assert_eq!(
            e,
            [
                "stack.yml:11 services.x.profiles[0]: \"two words\" is not a profile name (letters, digits, _ . -)",
                "stack.yml:3 services.web.depends_on: `db` is left out (its profiles with-db are not active): set COMPOSE_PROFILES=with-db, or drop the dependency",
            ]
        );
    }

    #[test]
    fn secrets_and_configs_from_files_are_mounted_read_only_and_the_rest_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db_password.txt"), "s3cret").unwrap();
        std::fs::write(dir.path().join("nginx.conf"), "events {}").unwrap();
        let text = "name: s\nservices:\n  db:\n    image: postgres\n    environment:\n      POSTGRES_PASSWORD_FILE: /run/secrets/db_password\n    secrets:\n      - db_password\n      - source: db_password\n        target: again\n    configs:\n      - source: nginx\n        target: /etc/nginx/nginx.conf\n      - nginx\nsecrets:\n  db_password:\n    file: ./db_password.txt\nconfigs:\n  nginx:\n    file: nginx.conf\n";
        let report = parse(text, "stack.yml", Some(dir.path()));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let db = &report.stack.unwrap().services[0];
        let binds: Vec<(String, String, bool)> = db
            .mounts
            .iter()
            .map(|m| {
                let file = Path::new(&m.source)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                (
                    file,
                    m.target.clone(),
                    m.read_only && m.kind == MountKind::Bind,
                )
            })
            .collect();
        assert_eq!(
            binds,
            [
                (
                    "db_password.txt".to_string(),
                    "/run/secrets/db_password".to_string(),
                    true
                ),
                (
                    "db_password.txt".to_string(),
                    "/run/secrets/again".to_string(),
                    true
                ),
                (
                    "nginx.conf".to_string(),
                    "/etc/nginx/nginx.conf".to_string(),
                    true
                ),
                ("nginx.conf".to_string(), "/nginx".to_string(), true),
            ]
        );
        assert!(db.mounts.iter().all(|m| Path::new(&m.source).is_absolute()));

        let bad = "name: s\nservices:\n  a:\n    image: a\n    secrets: [missing, from_env, swarm, gone]\nsecrets:\n  from_env:\n    environment: TOKEN\n  swarm:\n    external: true\n  gone:\n    file: ./nope.txt\n";
        let e: Vec<String> = parse(bad, "stack.yml", Some(dir.path()))
            .errors
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&dir.path().display().to_string(), "DIR")
            })
            .collect();
        assert_eq!(
            e,
            [
                "stack.yml:5 services.a.secrets[0]: `missing` is not declared under the top-level `secrets:`",
                "stack.yml:5 services.a.secrets[1]: secrets `from_env`: `environment` is refused: Changeover mounts secrets from files on the daemon's host; write it to a file beside the stack and say `file: ./from_env`",
                "stack.yml:5 services.a.secrets[2]: secrets `swarm`: an external secret is a Swarm object; Changeover mounts secrets from files: say `file: ./swarm`",
                "stack.yml:5 services.a.secrets[3]: secrets `gone`: its file DIR/nope.txt is not there",
            ]
        );
    }

    #[test]
    fn volumes_named_by_the_stack_or_external_keep_their_own_names() {
        let report = parse(
            "name: s\nservices:\n  db:\n    image: postgres\n    volumes: [\"pg:/var/lib/postgresql/data\", \"media:/media\", \"old:/old\", \"data:/data\"]\nvolumes:\n  pg:\n    external: true\n  media:\n    name: shared-media\n  old:\n    external:\n      name: legacy_data\n  data:\n    driver: local\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let warnings: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            ["stack.yml:15 volumes.data.driver: `driver` is not applied; a plain local volume is created"]
        );
        let db = &report.stack.unwrap().services[0];
        let named: Vec<(String, bool)> = db
            .mounts
            .iter()
            .map(|m| (m.docker_volume("s"), m.external))
            .collect();
        assert_eq!(
            named,
            [
                ("pg".to_string(), true),
                ("shared-media".to_string(), false),
                ("legacy_data".to_string(), true),
                ("s_data".to_string(), false),
            ]
        );
        let e = errors("name: s\nservices:\n  a:\n    image: a\n    volumes: [\"v:/v\"]\nvolumes:\n  v:\n    name: \"bad name\"\n    external: maybe\n    size: 3\n");
        assert_eq!(
            e,
            [
                "stack.yml:9 volumes.v.external: expected true or false, found \"maybe\"",
                "stack.yml:10 volumes.v.size: unknown volume key `size` (name, external, driver, driver_opts, labels)",
                "stack.yml:8 volumes.v: \"bad name\" is not a volume name (letters, digits, _ . -)",
            ]
        );
    }

    #[test]
    fn container_settings_are_read_as_compose_reads_them_and_bad_ones_are_named() {
        let report = parse(
            "name: s\nservices:\n  vpn:\n    image: wg\n    entrypoint: /init --verbose\n    user: 1000\n    working_dir: /config\n    cap_add: [NET_ADMIN, SYS_MODULE]\n    sysctls:\n      - net.ipv4.conf.all.src_valid_mark=1\n    devices: [\"/dev/net/tun:/dev/net/tun\"]\n    extra_hosts:\n      - \"host.docker.internal:host-gateway\"\n      - \"db=10.0.0.5\"\n      - \"v6=::1\"\n    dns: 1.1.1.1\n    shm_size: 1gb\n    ulimits:\n      nproc: 65535\n      nofile: {soft: 20000, hard: 40000}\n    mem_limit: 512m\n    cpus: 0.5\n    init: true\n    stop_grace_period: 1m30s\n    stop_signal: SIGINT\n    logging: {driver: json-file, options: {max-size: 10m}}\n    deploy:\n      resources:\n        limits: {pids: 100}\n        reservations: {memory: 128M}\n  web:\n    image: nginx\n    scale: 2\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let s = report.stack.unwrap();
        let c = &s.services[0].container;
        assert_eq!(
            c.entrypoint.as_deref(),
            Some(&["/init".to_string(), "--verbose".into()][..])
        );
        assert_eq!(c.user.as_deref(), Some("1000"));
        assert_eq!(c.working_dir.as_deref(), Some("/config"));
        assert_eq!(c.cap_add, ["NET_ADMIN", "SYS_MODULE"]);
        assert_eq!(c.sysctls["net.ipv4.conf.all.src_valid_mark"], "1");
        assert_eq!(c.devices, ["/dev/net/tun:/dev/net/tun"]);
        assert_eq!(
            c.extra_hosts,
            ["host.docker.internal:host-gateway", "db:10.0.0.5", "v6:::1"]
        );
        assert_eq!(c.dns, ["1.1.1.1"]);
        assert_eq!(c.shm_size, Some(1 << 30));
        assert_eq!(
            c.ulimits["nproc"],
            crate::container::Ulimit {
                soft: 65535,
                hard: 65535
            }
        );
        assert_eq!(
            c.ulimits["nofile"],
            crate::container::Ulimit {
                soft: 20000,
                hard: 40000
            }
        );
        assert_eq!(c.memory, Some(512 << 20));
        assert_eq!(c.memory_reservation, Some(128 << 20));
        assert_eq!(c.nano_cpus, Some(500_000_000));
        assert_eq!(c.pids_limit, Some(100));
        assert_eq!(c.init, Some(true));
        assert_eq!(c.stop_grace_period_ms, Some(90_000));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(c.logging.as_ref().unwrap().options["max-size"], "10m");
        assert_eq!(s.services[1].replicas, 2, "scale is replicas");
        let policies = parse(
            "name: s\nservices:\n  a:\n    image: a\n    pull_policy: always\n  b:\n    image: b\n    pull_policy: if_not_present\n  c:\n    image: c\n    pull_policy: daily\n",
            "stack.yml",
            None,
        );
        let got: Vec<Option<crate::service::PullPolicy>> = policies
            .stack
            .unwrap()
            .services
            .iter()
            .map(|s| s.pull_policy)
            .collect();
        use crate::service::PullPolicy;
        assert_eq!(
            got,
            [
                Some(PullPolicy::Always),
                Some(PullPolicy::Missing),
                Some(PullPolicy::Always)
            ]
        );
        assert_eq!(
            policies.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
            ["stack.yml:11 services.c.pull_policy: `daily` is applied as `always`: the registry is asked at every deploy"]
        );
        assert_eq!(
            errors("name: s\nservices:\n  a:\n    image: a\n    pull_policy: sometimes\n"),
            ["stack.yml:5 services.a.pull_policy: \"sometimes\" is not a pull policy (always, never, missing, build)"]
        );
        // An ML image's GPUs, both ways Compose says it.
        let gpu = parse(
            "name: s\nservices:\n  ollama:\n    image: ollama/ollama\n    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              count: all\n              capabilities: [gpu]\n  comfy:\n    image: comfy\n    gpus: all\n  pinned:\n    image: p\n    gpus:\n      - device_ids: [\"1\"]\n        capabilities: [gpu, utility]\n",
            "stack.yml",
            None,
        );
        assert!(
            gpu.errors.is_empty() && gpu.warnings.is_empty(),
            "{:?} {:?}",
            gpu.errors,
            gpu.warnings
        );
        let requested: Vec<(String, i64, Vec<String>, Vec<String>)> = gpu
            .stack
            .unwrap()
            .services
            .iter()
            .flat_map(|s| s.container.devices_requested.clone())
            .map(|d| (d.driver, d.count, d.device_ids, d.capabilities))
            .collect();
        assert_eq!(
            requested,
            [
                ("nvidia".to_string(), -1, vec![], vec!["gpu".to_string()]),
                (String::new(), -1, vec![], vec!["gpu".to_string()]),
                (
                    String::new(),
                    0,
                    vec!["1".to_string()],
                    vec!["gpu".to_string(), "utility".to_string()]
                ),
            ]
        );
        let e = errors("name: s\nservices:\n  a:\n    image: a\n    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n            - count: 2\n              device_ids: [\"0\"]\n              capabilities: [gpu]\n");
        assert_eq!(
            e,
            [
                "stack.yml:9 services.a.deploy.resources.reservations.devices[0]: a device request needs its capabilities (like [gpu])",
                "stack.yml:10 services.a.deploy.resources.reservations.devices[1]: count and device_ids cannot both be given: name the devices, or say how many",
            ]
        );
        assert!(s.services[1].container.is_default());

        let e = errors("name: s\nservices:\n  app:\n    image: a\n    working_dir: app\n    cap_add: [\"NET ADMIN\"]\n    shm_size: lots\n    cpus: -1\n    ulimits: {nofile: {soft: 10}}\n    extra_hosts: [\"db=not-an-ip\"]\n    ipc: \"service:db\"\n    tty: maybe\n    stop_signal: \"kill -9\"\n    scale: 3\n    deploy: {replicas: 2, resources: {limits: {gpus: 1}}}\n");
        assert_eq!(
            e,
            [
                "stack.yml:5 services.app.working_dir: \"app\" is not an absolute path in the container (/app)",
                "stack.yml:6 services.app.cap_add: \"NET ADMIN\" is not a capability (NET_ADMIN, SYS_PTRACE, ALL)",
                "stack.yml:7 services.app.shm_size: \"lots\" is not a size (like 512m, 1g, 64k)",
                "stack.yml:8 services.app.cpus: \"-1\" is not a number of CPUs (like 0.5, 2)",
                "stack.yml:9 services.app.ulimits.nofile: a ulimit needs both soft and hard (or one number for both)",
                "stack.yml:10 services.app.extra_hosts: db: \"not-an-ip\" is not an IP address (or host-gateway)",
                "stack.yml:11 services.app.ipc: \"service:db\" joins another container, and Changeover's containers are replaced by each release (named per release and slot): use `host`, or leave it out",
                "stack.yml:12 services.app.tty: expected true or false, found \"maybe\"",
                "stack.yml:13 services.app.stop_signal: \"kill -9\" is not a signal (SIGTERM, SIGQUIT, TERM, 15)",
                "stack.yml:15 services.app.deploy.resources.limits.gpus: unknown limits key `gpus` (cpus, memory, pids)",
                "stack.yml:14 services.app.scale: scale 3 and deploy.replicas 2 disagree: keep one",
            ]
        );
        let e =
            errors("name: s\nservices:\n  app:\n    image: a\n    cpus: 1\n    cpu_quota: 50000\n");
        assert_eq!(
            e,
            ["stack.yml:3 services.app: cpus (or deploy.resources.limits.cpus) and cpu_period/cpu_quota both limit the CPU, and Docker takes one: keep cpus"]
        );
    }

    #[test]
    fn well_known_ports_of_other_protocols_are_relayed_and_each_port_says_what_it_carries() {
        let report = parse(
            "name: s\nservices:\n  mail:\n    image: axllent/mailpit\n    x-changeover:\n      hosts: [mail.example.test]\n      health: {path: /livez}\n    ports:\n      - \"1025:1025\"\n      - \"8025:8025\"\n",
            "stack.yml",
            None,
        );
        assert!(
            report.errors.is_empty(),
            "x-changeover before ports is read with them: {:?}",
            report.errors
        );
        let mail = &report.stack.unwrap().services[0];
        let routes: Vec<(u16, Protocol)> =
            mail.routes().iter().map(|r| (r.host, r.protocol)).collect();
        assert_eq!(routes, [(1025, Protocol::Tcp), (8025, Protocol::Http)]);
        assert_eq!(
            mail.protocol,
            Protocol::Http,
            "the service's own protocol stays"
        );
        // Nothing left that speaks HTTP: hosts and a health path say why.
        let e = errors("name: s\nservices:\n  db:\n    image: postgres\n    ports: [\"5432:5432\"]\n    x-changeover:\n      hosts: [db.example.test]\n      health: {path: /health}\n");
        assert_eq!(
            e,
            [
                "stack.yml:7 services.db.x-changeover.hosts: hosts are chosen by HTTP's Host and TLS SNI, and no port of the service carries HTTP (port 5432 is PostgreSQL, relayed as TCP): publish an HTTP port, or write `app_protocol: http` on the port",
                "stack.yml:7 services.db.x-changeover.health.path: a health path is asked over HTTP, and no port of the service carries HTTP (port 5432 is PostgreSQL, relayed as TCP): remove health.path (the edge then checks by connecting), or write `app_protocol: http` on the port",
            ]
        );
        // Said by the service or the port, it is what they say.
        let said = parse(
            "name: s\nservices:\n  a:\n    image: a\n    ports: [\"5432:5432\"]\n    x-changeover: {protocol: http}\n  b:\n    image: b\n    ports:\n      - {target: 6379, published: 6379, app_protocol: http}\n      - {target: 8080, published: 8080, app_protocol: TCP}\n",
            "stack.yml",
            None,
        );
        assert!(
            said.errors.is_empty() && said.warnings.is_empty(),
            "{:?}",
            said.warnings
        );
        let s = said.stack.unwrap();
        let protocols = |i: usize| -> Vec<Protocol> {
            s.services[i].routes().iter().map(|r| r.protocol).collect()
        };
        assert_eq!(protocols(0), [Protocol::Http]);
        assert_eq!(protocols(1), [Protocol::Http, Protocol::Tcp]);
    }

    #[test]
    fn udp_ports_are_routes_of_their_own_or_beside_tcp_on_the_same_port() {
        let report = parse(
            "name: s\nservices:\n  dns:\n    image: a\n    healthcheck:\n      test: [\"CMD\", \"/probe\"]\n    ports:\n      - \"5353:5353/tcp\"\n      - \"5353:5353/udp\"\n      - 51820:51820/udp\n      - {target: 27015, published: 27015, protocol: udp}\n      - \"6000-6001:7000-7001/udp\"\n      - \"8080:80\"\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let warnings: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            ["stack.yml:8 services.dns.ports: port 5353 carries TCP and UDP, and the edge reads its TCP as HTTP (the service's protocol); if it is not HTTP (DNS, a game's protocol), set x-changeover.protocol: tcp"],
            "a healthcheck judges the UDP-only ports; the HTTP reading of 5353/tcp is pointed out"
        );
        let dns = &report.stack.unwrap().services[0];
        let labels: Vec<String> = dns.ports.iter().map(PortMapping::label).collect();
        assert_eq!(
            labels,
            [
                "5353:5353",
                "5353:5353/udp",
                "51820:51820/udp",
                "27015:27015/udp",
                "6000:7000/udp",
                "6001:7001/udp",
                "8080:80"
            ]
        );
        let routes: Vec<String> = dns.routes().iter().map(|r| r.label()).collect();
        assert_eq!(
            routes,
            [
                "5353/tcp+udp",
                "51820/udp",
                "27015/udp",
                "6000/udp",
                "6001/udp",
                "8080"
            ],
            "one route per host port"
        );
    }

    #[test]
    fn a_udp_only_port_without_a_healthcheck_is_explained_and_udp_ports_clash_apart() {
        let report = parse(
            "name: s\nservices:\n  vpn:\n    image: a\n    ports: [\"51820:51820/udp\"]\n  dns:\n    image: a\n    ports: [\"51820:51820\"]\n  other:\n    image: a\n    ports: [\"51820:9/udp\"]\n",
            "stack.yml",
            None,
        );
        let messages: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            ["stack.yml:11 services.other.ports: host port 51820/udp is already used by service `vpn`"],
            "TCP 51820 beside UDP 51820 of another service is no clash"
        );
        let warnings: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings[0],
            "stack.yml:5 services.vpn.ports: 51820/udp carries only UDP: the edge checks it by a TCP connect to container port 51820 unless the service has a `healthcheck:`; add one if the container listens for UDP alone"
        );
    }

    #[test]
    fn a_port_range_publishes_each_port() {
        let report = parse(
            "name: s\nservices:\n  web:\n    image: a\n    ports: [\"8000-8002:9000-9002\", \"127.0.0.1:7000-7001:7000-7001/tcp\"]\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let ports: Vec<(u16, u16)> = report.stack.unwrap().services[0]
            .ports
            .iter()
            .map(|p| (p.host, p.container))
            .collect();
        assert_eq!(
            ports,
            vec![
                (8000, 9000),
                (8001, 9001),
                (8002, 9002),
                (7000, 7000),
                (7001, 7001)
            ]
        );
        assert_eq!(
            report.warnings.len(),
            1,
            "the host IP: {:?}",
            report.warnings
        );
    }

    #[test]
    fn snapshots_before_deploys_are_read_and_bad_ones_refused() {
        let svc =
            |x: &str| format!("name: s\nservices:\n  web:\n    image: a\n    x-changeover:\n{x}");
        let report = parse(
            &svc("      snapshots: {before_deploy: true}\n"),
            "stack.yml",
            None,
        );
        let web = &report.stack.unwrap().services[0];
        assert_eq!(
            web.snapshots,
            Some(SnapshotPolicy {
                before_deploy: true,
                keep: DEFAULT_SNAPSHOT_KEEP
            })
        );
        let e = errors(&svc("      snapshots: {before_deploy: yes please}\n"));
        assert!(e[0].contains("snapshots.before_deploy"), "{e:?}");
        let e = errors(&svc("      snapshots: {before_deploy: true, keep: 0}\n"));
        assert!(e[0].contains("snapshots.keep"), "{e:?}");
        let e = errors(&svc("      snapshots: {every: hour}\n"));
        assert!(e[0].contains("unknown snapshots key `every`"), "{e:?}");
    }

    #[test]
    fn edge_timeouts_and_trusted_proxies_are_read_and_bad_ones_refused() {
        let svc =
            |x: &str| format!("name: s\nservices:\n  web:\n    image: a\n    x-changeover:\n{x}");
        let report = parse(
            &svc("      timeouts: {header: 5s, response: 2m}\n      trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n"),
            "stack.yml",
            None,
        );
        let web = &report.stack.unwrap().services[0];
        assert_eq!(web.timeouts.header_ms, 5_000);
        assert_eq!(web.timeouts.response_ms, 120_000);
        assert_eq!(
            web.timeouts.idle_ms,
            crate::edge::Timeouts::default().idle_ms,
            "the rest keep their defaults"
        );
        assert_eq!(web.trusted_proxies, ["10.0.0.0/8", "192.168.1.7"]);
        let e = errors(&svc("      timeouts: {header: 0s}\n"));
        assert!(
            e[0].contains("timeouts.header") && e[0].contains("cut every client off"),
            "{e:?}"
        );
        let e = errors(&svc("      timeouts: {body: 2h}\n"));
        assert!(e[0].contains("longer than 1h"), "{e:?}");
        let e = errors(&svc("      timeouts: {read: 5s}\n"));
        assert!(e[0].contains("unknown timeouts key `read`"), "{e:?}");
        let e = errors(&svc("      timeouts: {idle: soon}\n"));
        assert!(e[0].contains("is not a duration"), "{e:?}");
        let e = errors(&svc("      trusted_proxies: [10.0.0.0/40, everyone]\n"));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("trusted_proxies[0]") && e[1].contains("\"everyone\" is not an address"),
            "{e:?}"
        );
    }

    #[test]
    fn hosts_and_tls_are_read_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.pem"), "cert").unwrap();
        std::fs::write(dir.path().join("app.key"), "key").unwrap();
        let svc = |x: &str| {
            format!("name: s\nservices:\n  web:\n    image: a\n    ports: [\"8080:80\"]\n    x-changeover:\n{x}")
        };
        let parsed = |x: &str| parse(&svc(x), "stack.yml", Some(dir.path()));
        let report = parsed("      hosts: [App.Example.test, www.example.test.]\n      tls: {cert: app.pem, key: app.key, hsts: true}\n");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let web = &report.stack.unwrap().services[0];
        assert_eq!(
            web.hosts,
            ["app.example.test", "www.example.test"],
            "lower case, no final dot"
        );
        let tls = web.tls.as_ref().unwrap();
        assert_eq!(
            tls.cert_file.as_deref(),
            Some(dir.path().join("app.pem").to_str().unwrap()),
            "relative to the stack file"
        );
        assert!(tls.hsts);
        assert_eq!(
            tls.site().certificate,
            crate::edge::CertificateSource::Files
        );
        let report = parsed("      hosts: app.example.test\n      tls: acme\n");
        let web = &report.stack.unwrap().services[0];
        assert_eq!(
            web.tls.as_ref().unwrap().site().certificate,
            crate::edge::CertificateSource::Acme
        );

        let errors_in =
            |x: &str| -> Vec<String> { parsed(x).errors.iter().map(|e| e.to_string()).collect() };
        let e = errors_in(
            "      hosts: [app.example.test, 10.0.0.1, \"a b.test\", APP.example.test]\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains("hosts[1]") && e[0].contains("is not a host name"),
            "{e:?}"
        );
        assert!(e[2].contains("listed twice"), "{e:?}");
        let e = errors_in("      tls: acme\n");
        assert!(e[0].contains("tls needs hosts"), "{e:?}");
        let e = errors_in("      hosts: [a.test]\n      tls: {cert: missing.pem, key: app.key}\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("tls.cert") && e[0].contains("cannot read"),
            "{e:?}"
        );
        let e = errors_in("      hosts: [a.test]\n      tls: {cert: app.pem}\n");
        assert!(e[0].contains("both cert and key"), "{e:?}");
        let e = errors_in(
            "      hosts: [a.test]\n      tls: {acme: true, cert: app.pem, key: app.key}\n",
        );
        assert!(e[0].contains("not both"), "{e:?}");
        let e = errors_in("      hosts: [a.test]\n      tls: letsencrypt\n");
        assert!(e[0].contains("is not a tls setting"), "{e:?}");
        let e = errors_in("      hosts: [a.test]\n      protocol: tcp\n");
        assert!(e[0].contains("TCP service cannot"), "{e:?}");
        let many: Vec<String> = (0..101).map(|i| format!("h{i}.test")).collect();
        let e = errors_in(&format!("      hosts: [{}]\n", many.join(", ")));
        assert!(e[0].contains("at most 100"), "{e:?}");
        let no_ports = parse(
            "name: s\nservices:\n  web:\n    image: a\n    x-changeover:\n      hosts: [a.test]\n",
            "stack.yml",
            None,
        );
        assert!(
            no_ports.errors[0].message.contains("give it one"),
            "{:?}",
            no_ports.errors
        );
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; 1024 * 1024 + 1]).unwrap();
        let e = errors_in("      hosts: [a.test]\n      tls: {cert: big.pem, key: app.key}\n");
        assert!(e[0].contains("at most 1 MiB"), "{e:?}");
    }

    #[test]
    fn strategies_canary_share_and_standby_read_and_bad_ones_are_refused() {
        let svc =
            |x: &str| format!("name: s\nservices:\n  web:\n    image: a\n    x-changeover:\n{x}");
        let report = parse(
            &svc("      strategy: canary\n      canary: {percent: 25}\n"),
            "stack.yml",
            None,
        );
        let web = &report.stack.unwrap().services[0];
        assert_eq!(web.strategy, Strategy::Canary);
        assert_eq!(web.canary_percent, 25);
        let report = parse(
            &svc("      strategy: blue-green\n      standby: 30m\n"),
            "stack.yml",
            None,
        );
        let web = &report.stack.unwrap().services[0];
        assert_eq!(web.strategy, Strategy::BlueGreen);
        assert_eq!(web.standby_ms, Some(1_800_000));
        let e = errors(&svc("      strategy: big-bang\n"));
        assert_eq!(
            e,
            vec![
                r#"stack.yml:6 services.web.x-changeover.strategy: "big-bang" is not a strategy (rolling, blue-green or canary)"#
            ]
        );
        let e = errors(&svc("      canary: {percent: 0}\n"));
        assert!(e[0].contains("x-changeover.canary.percent"), "{e:?}");
        let e = errors(&svc("      canary: {percent: 101}\n"));
        assert!(e[0].contains("x-changeover.canary.percent"), "{e:?}");
        let e = errors(&svc("      canary: {share: 5}\n"));
        assert!(e[0].contains("unknown canary key `share`"), "{e:?}");
        let report = parse(
            &svc("      canary: {guard: {max_5xx_percent: 5, window: 10s}}\n"),
            "stack.yml",
            None,
        );
        assert_eq!(
            report.stack.unwrap().services[0].canary_guard,
            Some(CanaryGuard {
                max_5xx_percent: 5,
                window_ms: 10_000,
                min_requests: DEFAULT_GUARD_MIN_REQUESTS
            })
        );
        let e = errors(&svc("      canary: {guard: {window: 10s}}\n"));
        assert!(e[0].contains("a guard needs max_5xx_percent"), "{e:?}");
        let e = errors(&svc("      canary: {guard: {max_5xx_percent: 200}}\n"));
        assert!(e[0].contains("canary.guard.max_5xx_percent"), "{e:?}");
        let report = parse(&svc("      protocol: tcp\n"), "stack.yml", None);
        assert_eq!(report.stack.unwrap().services[0].protocol, Protocol::Tcp);
        let e = errors(&svc("      protocol: udp\n"));
        assert!(
            e[0].contains("\"udp\" is not a protocol (http or tcp)"),
            "{e:?}"
        );
        let e = errors(&svc("      protocol: tcp\n      health: {path: /health}\n"));
        assert!(e[0].contains("remove health.path"), "{e:?}");
        let e = errors(&svc("      standby: soon\n"));
        assert!(e[0].contains("is not a duration"), "{e:?}");
    }

    #[test]
    fn malformed_yaml_is_reported_with_its_line() {
        let e = errors("name: s\nservices:\n  web:\n    image: [a\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("stack.yml:"), "{}", e[0]);
        assert!(e[0].contains("not valid YAML"), "{}", e[0]);
    }

    #[test]
    fn unknown_keys_are_errors_and_compose_only_keys_warnings() {
        let report = parse(
            "name: s\nservices:\n  web:\n    image: a\n    imagee: b\n    container_name: c\n",
            "stack.yml",
            None,
        );
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, 5);
        assert!(report.errors[0]
            .message
            .contains("unknown service key `imagee`"));
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].key, "services.web.container_name");
        assert!(
            report.stack.is_none(),
            "no stack comes out of a file with errors"
        );
    }

    #[test]
    fn references_to_undeclared_volumes_and_duplicate_ports_are_refused() {
        let e = errors("name: s\nservices:\n  a:\n    image: x\n    volumes: [\"db:/d\"]\n    ports: [\"9000:80\"]\n  b:\n    image: x\n    ports: [\"9000:80\"]\n");
        assert!(
            e.iter().any(|e| e.contains("volume `db` is not declared")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.contains("host port 9000 is already used by service `a`")),
            "{e:?}"
        );
    }

    #[test]
    fn missing_image_services_and_bad_names_are_refused() {
        assert!(
            errors("name: s\nservices:\n  web:\n    environment: {A: b}\n")[0]
                .contains("needs an `image:`")
        );
        assert!(errors("name: s\n")[0].contains("needs `services:`"));
        assert!(errors("name: Bad Name\nservices:\n  web: {image: a}\n")[0]
            .contains("not a stack name"));
        assert!(
            errors("name: s\nservices:\n  web:\n    image: a\n    deploy: {replicas: -1}\n")[0]
                .contains("replicas")
        );
        assert!(errors(
            "name: s\nservices:\n  web:\n    image: a\n    x-changeover: {drain_timeout: soon}\n"
        )[0]
        .contains("not a duration"));
    }

    #[test]
    fn the_sandbox_example_is_a_valid_stack() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sandbox.yml");
        let report = read_file(&path);
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{report:?}"
        );
        let stack = report.stack.unwrap();
        assert_eq!(stack.name, "sandbox");
        assert_eq!(stack.services[0].replicas, 3, "three replicas of v1");
    }

    #[test]
    fn durations_read_like_compose() {
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("2.5s"), Some(2500));
        assert_eq!(parse_duration_ms("10"), None, "a unit is required");
        assert_eq!(format_duration_ms(90_000), "90s");
    }

    #[test]
    fn variables_come_from_the_environment_and_the_env_file_beside_the_stack() {
        let dir =
            std::env::temp_dir().join(format!("changeover-stack-vars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(".env"),
            "CHANGEOVER_TEST_TAG=v7\nCHANGEOVER_TEST_PORT=18090\n",
        )
        .unwrap();
        let file = dir.join("stack.yml");
        std::fs::write(
            &file,
            "name: s\nservices:\n  web:\n    image: app:${CHANGEOVER_TEST_TAG}\n    ports: [\"${CHANGEOVER_TEST_PORT}:8080\"]\n    environment:\n      PRICE: \"5$$\"\n      MODE: ${CHANGEOVER_TEST_MODE:-production}\n",
        )
        .unwrap();
        let report = read_file(&file);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let web = &report.stack.unwrap().services[0];
        assert_eq!(web.image, "app:v7");
        assert_eq!(web.ports[0].host, 18090);
        assert_eq!(web.env["PRICE"], "5$");
        assert_eq!(web.env["MODE"], "production");

        std::fs::write(
            &file,
            "name: s\nservices:\n  web:\n    image: app:${CHANGEOVER_TEST_UNSET}\n",
        )
        .unwrap();
        let errors: Vec<String> = read_file(&file)
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with("stack.yml:4 services.web.image: variable CHANGEOVER_TEST_UNSET is not set (export it, put it in the .env file next to the stack file, or write ${CHANGEOVER_TEST_UNSET:-default})"),
            "{errors:?}"
        );
        std::fs::write(dir.join(".env"), "not a pair\n").unwrap();
        let errors: Vec<String> = read_file(&file)
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(errors[0].ends_with(".env:1 is not KEY=value"), "{errors:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn with_vars(text: &str, vars: &[(&str, &str)]) -> StackReport {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_with(text, "stack.yml", None, &vars)
    }

    #[test]
    fn environment_names_without_values_come_from_the_shell_as_in_compose() {
        let report = with_vars(
            "services:\n  web:\n    image: a\n    environment:\n      - TZ\n      - UNSET\n      - A=1\n  api:\n    image: a\n    environment:\n      TZ:\n      UNSET:\n      B: \"\"\n    labels: [blank]\n",
            &[("TZ", "Europe/Paris")],
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let stack = report.stack.unwrap();
        let env = |n: usize| stack.services[n].env.clone();
        let api = stack.services.iter().position(|s| s.name == "api").unwrap();
        let web = 1 - api;
        assert_eq!(env(web).get("TZ").map(String::as_str), Some("Europe/Paris"));
        assert!(!env(web).contains_key("UNSET"), "left out when unset");
        assert_eq!(env(web).get("A").map(String::as_str), Some("1"));
        assert_eq!(env(api).get("TZ").map(String::as_str), Some("Europe/Paris"));
        assert!(!env(api).contains_key("UNSET"));
        assert_eq!(
            env(api).get("B").map(String::as_str),
            Some(""),
            "an explicit blank stays"
        );
        assert_eq!(
            stack.services[api].labels.get("blank").map(String::as_str),
            Some(""),
            "a label with no value is blank"
        );
        let bad =
            errors("services:\n  web:\n    image: a\n    environment: [\"no spaces please\"]\n");
        assert!(
            bad[0].contains("is neither KEY=value nor a variable name"),
            "{bad:?}"
        );
    }

    #[test]
    fn merge_keys_and_compose_tags_are_read_as_compose_reads_them() {
        let report = parse(
            "x-base: &base\n  image: changeover-demo:v1\n  environment: {A: \"1\", B: \"2\"}\n  ports: [\"8080:80\"]\nservices:\n  web:\n    <<: *base\n    ports: !reset []\n  api:\n    <<: *base\n    environment: !override {C: \"3\"}\n    ports: [\"8081:80\"]\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let stack = report.stack.unwrap();
        let get = |n: &str| stack.services.iter().find(|s| s.name == n).unwrap();
        assert_eq!(get("web").image, "changeover-demo:v1");
        assert!(
            get("web").ports.is_empty(),
            "!reset drops the inherited ports"
        );
        assert_eq!(get("web").env.len(), 2);
        assert_eq!(
            get("api").env.keys().collect::<Vec<_>>(),
            ["C"],
            "!override replaces"
        );
        assert_eq!(get("api").ports[0].host, 8081);
    }

    #[test]
    fn hostile_and_unreadable_files_are_refused_in_words() {
        let deep = format!(
            "services:\n  web:\n    image: \"{}x{}\"\n",
            "${A:-".repeat(5000),
            "}".repeat(5000)
        );
        let e = errors(&deep);
        assert!(
            e[0].contains("stack.yml:3 services.web.image") && e[0].contains("nests more than"),
            "{e:?}"
        );
        let nested = format!(
            "services:\n  web: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = errors(&nested);
        assert!(
            e[0].contains("not valid YAML") && e[0].contains("recursion limit"),
            "{e:?}"
        );
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        let mut prev = "a".to_string();
        for i in 0..9 {
            let n = format!("b{i}");
            bomb.push_str(&format!(
                "{n}: &{n} [{}]\n",
                vec![format!("*{prev}"); 10].join(",")
            ));
            prev = n;
        }
        bomb.push_str("services: {}\n");
        let e = errors(&bomb);
        assert!(e[0].contains("billion-laughs"), "{e:?}");
        let e = errors("services:\n  web:\n    image: a\n---\nservices:\n  api:\n    image: b\n");
        assert!(
            e[0].starts_with("stack.yml:5") && e[0].contains("a second YAML document starts here"),
            "{e:?}"
        );
        let e = errors("services:\n  web:\n    ports: [\"80:80\"]\n    command: run\n");
        assert_eq!(
            e,
            vec!["stack.yml:2 services.web: a service needs an `image:` or a `build:`"],
            "the service's own line, not its first key's"
        );
        let dir = std::env::temp_dir().join(format!("changeover-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("stack.yml");
        std::fs::write(&file, b"services:\n  web:\n    image: caf\xe9\n").unwrap();
        let report = read_file(&file);
        let shown: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            shown[0].ends_with("stack.yml:3 is not UTF-8 text (the first byte that is not is at column 15); save it as UTF-8"),
            "{shown:?}"
        );
        std::fs::write(&file, vec![b'#'; (MAX_FILE_BYTES + 10) as usize]).unwrap();
        let report = read_file(&file);
        assert!(
            report.errors[0].message.contains("is larger than 4 MiB"),
            "{:?}",
            report.errors
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_file_paths_and_values_are_interpolated() {
        let dir = std::env::temp_dir().join(format!("changeover-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("prod.env"),
            "HOST=db.${DOMAIN}\nURL=postgres://${HOST}/app\nRAW='$HOST'\n",
        )
        .unwrap();
        let vars: BTreeMap<String, String> = [("STAGE", "prod"), ("DOMAIN", "example.test")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let report = parse_with(
            "services:\n  web:\n    image: a\n    env_file: ${STAGE:-dev}.env\n",
            "stack.yml",
            Some(&dir),
            &vars,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let env = &report.stack.unwrap().services[0].env;
        assert_eq!(env["HOST"], "db.example.test");
        assert_eq!(
            env["URL"], "postgres://db.example.test/app",
            "earlier lines of the file"
        );
        assert_eq!(env["RAW"], "$HOST");

        // One that may be missing, one that must be there, one too big.
        std::fs::write(dir.join("huge.env"), "A=1\n".repeat(300_000)).unwrap();
        let report = parse_with(
            "services:\n  web:\n    image: a\n    env_file:\n      - prod.env\n      - path: ./local.env\n        required: false\n      - path: ./needed.env\n      - path: huge.env\n        required: maybe\n",
            "stack.yml",
            Some(&dir),
            &vars,
        );
        let e: Vec<String> = report
            .errors
            .iter()
            .map(|e| e.to_string().replace(&dir.display().to_string(), "DIR"))
            .collect();
        assert_eq!(
            e,
            [
                "stack.yml:10 services.web.env_file[3].required: expected true or false, found \"maybe\"",
                "stack.yml:8 services.web.env_file: cannot read DIR/needed.env: No such file or directory (os error 2)",
                "stack.yml:9 services.web.env_file: DIR/huge.env is larger than 1024 KiB; an env file holds KEY=VALUE lines",
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_service_that_extends_another_gets_what_it_inherits() {
        let report = parse(
            "services:\n  base:\n    image: changeover-demo:v1\n    environment: {A: \"1\"}\n    ports: [\"18081:8080\"]\n  web:\n    extends: base\n    environment: {B: \"2\"}\n    ports: !reset [\"18082:8080\"]\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let stack = report.stack.unwrap();
        let web = stack.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(
            web.image, "changeover-demo:v1",
            "no `build:` error: the image is inherited"
        );
        assert_eq!(web.env.len(), 2);
        let e = errors("services:\n  web:\n    extends: nope\n");
        assert_eq!(
            e[0],
            "stack.yml:3 services.web.extends: there is no service `nope` in this file to extend"
        );
    }

    #[test]
    fn an_include_may_name_its_project_directory_and_env_files() {
        let dir =
            std::env::temp_dir().join(format!("changeover-include-pd-{}", std::process::id()));
        for d in ["shared", "envs", "proj"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("shared/compose.yml"),
            "services:\n  cache:\n    image: redis:${REDIS_TAG}\n    volumes: [\"./conf:/conf:ro\"]\n",
        )
        .unwrap();
        std::fs::write(dir.join("shared/.env"), "REDIS_TAG=6\n").unwrap();
        std::fs::write(dir.join("envs/cache.env"), "REDIS_TAG=7\n").unwrap();
        std::fs::write(dir.join("envs/more.env"), "REDIS_TAG=7.2\n").unwrap();
        let parse_here = |text: &str| parse_with(text, "stack.yml", Some(&dir), &BTreeMap::new());
        let report = parse_here(
            "name: s\ninclude:\n  - path: shared/compose.yml\n    project_directory: proj\n    env_file: [envs/cache.env, envs/more.env]\n",
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "applied: {:?}", report.warnings);
        let cache = &report.stack.unwrap().services[0];
        assert_eq!(cache.image, "redis:7.2", "the env_files, the later winning");
        assert!(
            cache.mounts[0].source.ends_with("proj/./conf"),
            "paths from the project directory: {:?}",
            cache.mounts
        );
        let own = parse_here("name: s\ninclude:\n  - path: shared/compose.yml\n");
        assert_eq!(
            own.stack.unwrap().services[0].image,
            "redis:6",
            "its own .env"
        );
        let bad = parse_here(
            "name: s\ninclude:\n  - path: shared/compose.yml\n    env_file: envs/nope.env\n  - path: shared/compose.yml\n    project_directory: nowhere\n",
        );
        let said: Vec<String> = bad.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].starts_with("stack.yml:3 include[0].env_file: cannot read ")
                && said[0].contains("envs/nope.env"),
            "{said:?}"
        );
        assert!(
            said[1].starts_with("stack.yml:5 include[1].project_directory: ")
                && said[1].ends_with("nowhere is not a folder"),
            "{said:?}"
        );
    }

    #[test]
    fn included_files_add_their_services_and_a_clash_is_named() {
        let dir = std::env::temp_dir().join(format!("changeover-include-{}", std::process::id()));
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join(".env"), "DB_TAG=16\n").unwrap();
        std::fs::write(
            db.join("compose.yml"),
            "services:\n  db:\n    image: postgres:${DB_TAG}\n    volumes: [\"data:/var/lib/postgresql/data\", \"./init:/docker-entrypoint-initdb.d:ro\"]\nvolumes:\n  data: {}\n",
        )
        .unwrap();
        let report = parse_with(
            "name: shop\ninclude:\n  - db/compose.yml\nservices:\n  web:\n    image: web:1\n",
            "stack.yml",
            Some(&dir),
            &BTreeMap::new(),
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let stack = report.stack.unwrap();
        let db_spec = stack.services.iter().find(|s| s.name == "db").unwrap();
        assert_eq!(db_spec.stack, "shop", "part of this stack");
        assert_eq!(db_spec.image, "postgres:16", "its own .env");
        assert!(
            db_spec.mounts[1].source.ends_with("db/./init"),
            "{:?}",
            db_spec.mounts
        );
        assert!(stack.volumes.contains(&"data".to_string()));

        let clash = parse_with(
            "include: [db/compose.yml]\nservices:\n  db:\n    image: mine\n",
            "stack.yml",
            Some(&dir),
            &BTreeMap::new(),
        );
        let said: Vec<String> = clash.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            said,
            vec!["stack.yml:1 include[0]: service `db` of db/compose.yml is defined in this file too"]
        );
        let missing = parse_with(
            "include: [nope.yml]\n",
            "stack.yml",
            Some(&dir),
            &BTreeMap::new(),
        );
        assert!(
            missing.errors[0]
                .to_string()
                .contains("cannot include nope.yml"),
            "{:?}",
            missing.errors
        );
        let broken_dir = dir.join("broken");
        std::fs::create_dir_all(&broken_dir).unwrap();
        std::fs::write(
            broken_dir.join("compose.yml"),
            "services:\n  x:\n    ports: [\"abc\"]\n",
        )
        .unwrap();
        let broken = parse_with(
            "include: [broken/compose.yml]\n",
            "stack.yml",
            Some(&dir),
            &BTreeMap::new(),
        );
        assert!(
            broken
                .errors
                .iter()
                .any(|e| e.file.ends_with("broken/compose.yml") && e.line == 3),
            "the included file's own errors, with its name and line: {:?}",
            broken.errors
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn anonymous_volumes_are_kept_per_service_and_refused_for_replicas_to_share() {
        let report = parse(
            "name: s\nservices:\n  web:\n    image: a\n    volumes:\n      - /app/node_modules\n      - {type: volume, target: /var/lib/x}\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let web = &report.stack.unwrap().services[0];
        let got: Vec<(&str, &str, bool)> = web
            .mounts
            .iter()
            .map(|m| (m.source.as_str(), m.target.as_str(), m.anonymous))
            .collect();
        assert_eq!(
            got,
            [
                ("web_anon_app_node_modules", "/app/node_modules", true),
                ("web_anon_var_lib_x", "/var/lib/x", true)
            ],
            "one volume per service and path, needing no top-level declaration"
        );
        let e = errors("name: s\nservices:\n  web:\n    image: a\n    deploy: {replicas: 2}\n    volumes: [\"/data\", \"data\"]\n");
        assert_eq!(
            e,
            [
                "stack.yml:6 services.web.volumes[1]: \"data\": the container path must be absolute",
                "stack.yml:6 services.web.volumes: \"/data\" is an anonymous volume: Compose gives each container one of its own; Changeover keeps one per service across releases (volume `web_anon_data`), which 2 replicas would share; name it (\"data:/data\") to share it on purpose, or run one replica"
            ]
        );
    }

    #[test]
    fn mount_options_and_tmpfs_are_read_and_applied() {
        let report = parse(
            "name: s\nservices:\n  web:\n    image: a\n    volumes:\n      - data:/data:nocopy\n      - /srv/conf:/conf:ro,Z\n      - type: tmpfs\n        target: /cache\n        tmpfs: {size: 64m}\n      - type: bind\n        source: /srv/x\n        target: /x\n        bind: {selinux: z}\n      - ./src:/src:cached\n    tmpfs: [/run, \"/tmp:size=32m,mode=1777\"]\nvolumes:\n  data: {}\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let web = &report.stack.unwrap().services[0];
        assert_eq!(web.mounts[0].options, ["nocopy"]);
        assert!(web.mounts[1].read_only);
        assert_eq!(web.mounts[1].options, ["Z"]);
        assert_eq!(web.mounts[2].options, ["z"]);
        let tmpfs: Vec<(&str, &str)> = web
            .tmpfs
            .iter()
            .map(|t| (t.target.as_str(), t.options.as_str()))
            .collect();
        assert_eq!(
            tmpfs,
            vec![
                ("/cache", "size=64m"),
                ("/run", ""),
                ("/tmp", "size=32m,mode=1777")
            ]
        );
        assert!(
            report.warnings.iter().any(|w| w
                .message
                .contains("`cached` only matters to Docker Desktop")),
            "{:?}",
            report.warnings
        );
        let e = errors("name: s\nservices:\n  web:\n    image: a\n    volumes:\n      - data:/data:Z\n      - /x:/x:nocopy\n      - /x:/y:fast\n      - type: npipe\n        source: a\n        target: /b\n    tmpfs: relative\nvolumes:\n  data: {}\n");
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(
            e[0].contains("applies to a host path, not a volume"),
            "{e:?}"
        );
        assert!(e[1].contains("`nocopy` applies to a volume"), "{e:?}");
        assert!(
            e[2].contains("`fast` is not a mount option (ro, rw, z, Z, nocopy)"),
            "{e:?}"
        );
        assert!(
            e[3].contains("mount type `npipe` is not supported (volume, bind or tmpfs)"),
            "no Debug value: {e:?}"
        );
        assert!(e[4].contains("a tmpfs path must be absolute"), "{e:?}");
    }

    #[test]
    fn services_deploy_after_what_they_depend_on() {
        let report = parse(
            "name: s\nservices:\n  web:\n    image: a\n    depends_on: {api: {condition: service_healthy}}\n  api:\n    image: a\n    depends_on: [db]\n  db:\n    image: a\n  cache:\n    image: a\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let order: Vec<String> = report
            .stack
            .unwrap()
            .services
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(order, ["db", "api", "web", "cache"]);
        let e = errors("name: s\nservices:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n  c:\n    image: x\n    depends_on: [nope]\n  d:\n    image: x\n    depends_on: {c: {condition: service_completed_successfully}}\n");
        assert!(
            e.iter()
                .any(|m| m
                    == "stack.yml:9 services.c.depends_on: `nope` is not a service of this stack"),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("not one-off jobs")), "{e:?}");
        let circle = errors("name: s\nservices:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n");
        assert_eq!(
            circle,
            vec!["stack.yml:3 services.a.depends_on: depends_on goes round in a circle among a, b"]
        );
    }

    #[test]
    fn restart_is_applied_and_container_name_explained() {
        let report = parse(
            "name: s\nservices:\n  web:\n    image: a\n    restart: on-failure:3\n    container_name: my-web\n",
            "stack.yml",
            None,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.stack.unwrap().services[0].restart.as_deref(),
            Some("on-failure:3")
        );
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.key == "services.web.container_name"
                    && w.message
                        .starts_with("is not applied: containers are named per release")),
            "{:?}",
            report.warnings
        );
        let e = errors("name: s\nservices:\n  web:\n    image: a\n    restart: sometimes\n    container_name: x\n    deploy: {replicas: 3}\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("\"sometimes\" is not a restart policy"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "stack.yml:6 services.web.container_name: one name cannot be given to 3 replicas"
            ),
            "{e:?}"
        );
    }
}
