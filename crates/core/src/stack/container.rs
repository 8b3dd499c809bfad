//! The Compose keys that set up a service's containers beyond its image,
//! command, environment, ports and mounts ([`ContainerSettings`]): read as
//! Compose reads them, each bad value refused with its key.

use std::collections::BTreeMap;

use super::{describe, entries, items, scalar, split_command, Node, Reader};
use crate::container::{
    parse_bytes, parse_cpus, ContainerSettings, DeviceRequest, Logging, Ulimit,
};

/// The service keys read here.
pub(super) const KEYS: &[&str] = &[
    "entrypoint",
    "user",
    "working_dir",
    "hostname",
    "domainname",
    "stop_signal",
    "stop_grace_period",
    "tty",
    "stdin_open",
    "init",
    "privileged",
    "read_only",
    "cap_add",
    "cap_drop",
    "security_opt",
    "sysctls",
    "devices",
    "extra_hosts",
    "dns",
    "dns_search",
    "dns_opt",
    "group_add",
    "shm_size",
    "ulimits",
    "mem_limit",
    "mem_reservation",
    "memswap_limit",
    "cpus",
    "cpu_shares",
    "cpuset",
    "pids_limit",
    "oom_score_adj",
    "oom_kill_disable",
    "ipc",
    "pid",
    "userns_mode",
    "runtime",
    "logging",
    "gpus",
    "cpu_period",
    "cpu_quota",
];

/// The most entries one list or map of these keys may have.
const MAX_ENTRIES: usize = 256;

/// Reads the service key `f` (one of [`KEYS`]) at `v` into `c`.
pub(super) fn read(r: &mut Reader, f: &str, v: &Node, k: &str, c: &mut ContainerSettings) {
    match f {
        "entrypoint" => {
            c.entrypoint = match items(v) {
                Some(_) => Some(strings(r, v, k)),
                None => r.string(v, k).map(|s| split_command(&s)),
            }
        }
        "user" => {
            c.user = word(
                r,
                v,
                k,
                |s| !s.contains(char::is_whitespace),
                "a user (NAME or UID, with :GROUP or :GID)",
            )
        }
        "working_dir" => {
            c.working_dir = word(
                r,
                v,
                k,
                |s| s.starts_with('/'),
                "an absolute path in the container (/app)",
            )
        }
        "hostname" | "domainname" => {
            let name = word(
                r,
                v,
                k,
                valid_host_name,
                "a host name (letters, digits, - and .)",
            );
            if f == "hostname" {
                c.hostname = name;
            } else {
                c.domainname = name;
            }
        }
        "stop_signal" => {
            c.stop_signal = word(
                r,
                v,
                k,
                valid_signal,
                "a signal (SIGTERM, SIGQUIT, TERM, 15)",
            )
        }
        "stop_grace_period" => c.stop_grace_period_ms = r.duration(v, k),
        "tty" => c.tty = boolean(r, v, k),
        "stdin_open" => c.stdin_open = boolean(r, v, k),
        "init" => c.init = Some(boolean(r, v, k)),
        "privileged" => c.privileged = boolean(r, v, k),
        "read_only" => c.read_only = boolean(r, v, k),
        "oom_kill_disable" => c.oom_kill_disable = boolean(r, v, k),
        "cap_add" | "cap_drop" => {
            let caps = checked(
                r,
                v,
                k,
                |cap| {
                    cap.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                },
                "a capability (NET_ADMIN, SYS_PTRACE, ALL)",
            );
            if f == "cap_add" {
                c.cap_add = caps;
            } else {
                c.cap_drop = caps;
            }
        }
        "security_opt" => c.security_opt = strings(r, v, k),
        "group_add" => c.group_add = strings(r, v, k),
        "dns_opt" => c.dns_opt = strings(r, v, k),
        "dns" => c.dns = one_or_many(r, v, k),
        "dns_search" => c.dns_search = one_or_many(r, v, k),
        "devices" => {
            c.devices = checked(
                r,
                v,
                k,
                |d| d.starts_with('/'),
                "a device (HOST_PATH[:CONTAINER_PATH[:rwm]], like /dev/net/tun)",
            )
        }
        "sysctls" => {
            let set = r.key_values(v, k, false);
            for (name, value) in &set {
                if name.is_empty() || value.is_empty() || name.contains(char::is_whitespace) {
                    r.error(
                        v,
                        k,
                        format!("{name}={value:?} is not a sysctl (net.ipv4.ip_forward=1)"),
                    );
                }
            }
            c.sysctls = set;
        }
        "extra_hosts" => c.extra_hosts = extra_hosts(r, v, k),
        "ulimits" => c.ulimits = ulimits(r, v, k),
        "shm_size" => c.shm_size = bytes(r, v, k),
        "mem_limit" => c.memory = bytes(r, v, k),
        "mem_reservation" => c.memory_reservation = bytes(r, v, k),
        "memswap_limit" => {
            c.memory_swap = match scalar(v).as_deref() {
                Some("-1") => Some(-1),
                _ => bytes(r, v, k).map(|b| b as i64),
            }
        }
        "cpus" => c.nano_cpus = cpus(r, v, k),
        "cpu_shares" => c.cpu_shares = r.number(v, k, 2, 262_144),
        "cpuset" => {
            c.cpuset = word(
                r,
                v,
                k,
                |s| {
                    s.chars()
                        .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '-')
                },
                "a set of CPUs (0-1, 0,2)",
            )
        }
        "pids_limit" => c.pids_limit = signed(r, v, k, -1, 4_194_304),
        "oom_score_adj" => c.oom_score_adj = signed(r, v, k, -1000, 1000),
        "ipc" | "pid" => {
            let mode = r.string(v, k);
            if let Some(m) = &mode {
                if m.starts_with("service:") || m.starts_with("container:") {
                    r.error(v, k, format!("{m:?} joins another container, and Changeover's containers are replaced by each release (named per release and slot): use `host`, or leave it out"));
                }
            }
            if f == "ipc" {
                c.ipc = mode;
            } else {
                c.pid = mode;
            }
        }
        "userns_mode" => c.userns_mode = r.string(v, k),
        "runtime" => c.runtime = r.string(v, k),
        "logging" => c.logging = logging(r, v, k),
        "cpu_period" => c.cpu_period = signed(r, v, k, 1000, 1_000_000),
        "cpu_quota" => c.cpu_quota = signed(r, v, k, -1, i64::MAX),
        "gpus" => {
            // `gpus: all`, or a list of device requests.
            if scalar(v).as_deref() == Some("all") {
                c.devices_requested.push(DeviceRequest {
                    driver: String::new(),
                    count: -1,
                    device_ids: Vec::new(),
                    capabilities: vec!["gpu".into()],
                    options: BTreeMap::new(),
                });
            } else {
                for (i, item) in r.list(v, k).into_iter().enumerate() {
                    if let Some(d) = device_request(r, item, &format!("{k}[{i}]"), &["gpu"]) {
                        c.devices_requested.push(d);
                    }
                }
            }
        }
        _ => {}
    }
}

/// What the daemon refuses together, said at the service (`key`) once
/// all of it is read.
pub(super) fn check(r: &mut Reader, at: usize, key: &str, c: &ContainerSettings) {
    if c.nano_cpus.is_some() && (c.cpu_period.is_some() || c.cpu_quota.is_some()) {
        r.error_at(
            at,
            key,
            "cpus (or deploy.resources.limits.cpus) and cpu_period/cpu_quota both limit the CPU, and Docker takes one: keep cpus",
        );
    }
}

/// `deploy.resources`: `limits` (`cpus`, `memory`, `pids`) and
/// `reservations.memory` into `c`; what a single daemon cannot apply is
/// named.
pub(super) fn read_resources(r: &mut Reader, v: &Node, k: &str, c: &mut ContainerSettings) {
    for (part, pv) in r.map(v, k) {
        let pk = format!("{k}.{part}");
        match part.as_str() {
            "limits" | "reservations" => {
                for (f, fv) in r.map(pv, &pk) {
                    let fk = format!("{pk}.{f}");
                    match (part.as_str(), f.as_str()) {
                        ("limits", "cpus") => c.nano_cpus = cpus(r, fv, &fk),
                        ("limits", "memory") => c.memory = bytes(r, fv, &fk),
                        ("limits", "pids") => c.pids_limit = signed(r, fv, &fk, -1, 4_194_304),
                        ("reservations", "memory") => c.memory_reservation = bytes(r, fv, &fk),
                        ("reservations", "devices") => {
                            for (i, item) in r.list(fv, &fk).into_iter().enumerate() {
                                if let Some(d) = device_request(r, item, &format!("{fk}[{i}]"), &[]) {
                                    c.devices_requested.push(d);
                                }
                            }
                        }
                        ("reservations", "cpus" | "generic_resources") => r.warn(
                            fv,
                            &fk,
                            format!("`{f}` reservations are not applied: the daemon does not reserve them for a single container"),
                        ),
                        _ => r.error(fv, &fk, format!("unknown {part} key `{f}` (cpus, memory, pids)")),
                    }
                }
            }
            _ => r.error(
                pv,
                &pk,
                format!("unknown resources key `{part}` (limits, reservations)"),
            ),
        }
    }
}

fn boolean(r: &mut Reader, v: &Node, k: &str) -> bool {
    match scalar(v).as_deref() {
        Some("true" | "True" | "TRUE") => true,
        Some("false" | "False" | "FALSE") => false,
        _ => {
            r.error(
                v,
                k,
                format!("expected true or false, found {}", describe(v)),
            );
            false
        }
    }
}

/// A text value that `ok` accepts; otherwise an error saying it is not
/// `what`.
fn word(
    r: &mut Reader,
    v: &Node,
    k: &str,
    ok: impl Fn(&str) -> bool,
    what: &str,
) -> Option<String> {
    let s = r.string(v, k)?;
    if s.is_empty() || !ok(&s) {
        r.error(v, k, format!("{s:?} is not {what}"));
        return None;
    }
    Some(s)
}

/// A list of text values, bounded.
fn strings(r: &mut Reader, v: &Node, k: &str) -> Vec<String> {
    let list = r.list(v, k);
    if list.len() > MAX_ENTRIES {
        r.error(
            v,
            k,
            format!("{} entries; at most {MAX_ENTRIES}", list.len()),
        );
        return Vec::new();
    }
    list.into_iter()
        .enumerate()
        .filter_map(|(i, item)| r.string(item, &format!("{k}[{i}]")))
        .collect()
}

/// [`strings`] that `ok` accepts; each other one is refused as not `what`.
fn checked(
    r: &mut Reader,
    v: &Node,
    k: &str,
    ok: impl Fn(&str) -> bool,
    what: &str,
) -> Vec<String> {
    strings(r, v, k)
        .into_iter()
        .filter(|s| {
            let good = !s.is_empty() && ok(s);
            if !good {
                r.error(v, k, format!("{s:?} is not {what}"));
            }
            good
        })
        .collect()
}

/// One text value or a list of them (`dns: 8.8.8.8`).
fn one_or_many(r: &mut Reader, v: &Node, k: &str) -> Vec<String> {
    if items(v).is_some() {
        strings(r, v, k)
    } else {
        r.string(v, k).into_iter().collect()
    }
}

fn bytes(r: &mut Reader, v: &Node, k: &str) -> Option<u64> {
    let text = r.string(v, k)?;
    match parse_bytes(&text) {
        Some(b) if b > 0 => Some(b),
        _ => {
            r.error(v, k, format!("{text:?} is not a size (like 512m, 1g, 64k)"));
            None
        }
    }
}

fn cpus(r: &mut Reader, v: &Node, k: &str) -> Option<u64> {
    let text = r.string(v, k)?;
    let nano = parse_cpus(&text);
    if nano.is_none() {
        r.error(
            v,
            k,
            format!("{text:?} is not a number of CPUs (like 0.5, 2)"),
        );
    }
    nano
}

fn signed(r: &mut Reader, v: &Node, k: &str, min: i64, max: i64) -> Option<i64> {
    let text = r.string(v, k)?;
    match text.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            r.error(
                v,
                k,
                format!("{text:?} is not a whole number from {min} to {max}"),
            );
            None
        }
    }
}

fn valid_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
}

fn valid_signal(s: &str) -> bool {
    s.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n))
        || (s.len() <= 16
            && s.trim_start_matches("SIG")
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '+' || c == '-')
            && !s.trim_start_matches("SIG").is_empty())
}

/// `extra_hosts` as a list (`host:ip`, `host=ip`) or a map (`host: ip`),
/// in Docker's `host:ip`.
fn extra_hosts(r: &mut Reader, v: &Node, k: &str) -> Vec<String> {
    let pairs: Vec<(String, String)> = if let Some(map) = entries(v) {
        map.into_iter()
            .filter_map(|(host, ip)| {
                let ip = r.string(ip, &format!("{k}.{host}"))?;
                Some((host, ip))
            })
            .collect()
    } else {
        strings(r, v, k)
            .into_iter()
            .filter_map(|entry| {
                let split = entry.split_once('=').or_else(|| entry.split_once(':'));
                match split {
                    Some((h, ip)) if !h.is_empty() && !ip.is_empty() => {
                        Some((h.to_string(), ip.to_string()))
                    }
                    _ => {
                        r.error(v, k, format!("{entry:?} is not HOST=IP (or HOST:IP)"));
                        None
                    }
                }
            })
            .collect()
    };
    pairs
        .into_iter()
        .filter_map(|(host, ip)| {
            let ip = ip.trim_start_matches('[').trim_end_matches(']').to_string();
            if ip.parse::<std::net::IpAddr>().is_err() && ip != "host-gateway" {
                r.error(
                    v,
                    k,
                    format!("{host}: {ip:?} is not an IP address (or host-gateway)"),
                );
                return None;
            }
            Some(format!("{host}:{ip}"))
        })
        .collect()
}

/// `ulimits: {nofile: {soft: 1024, hard: 4096}, nproc: 65535}`.
fn ulimits(r: &mut Reader, v: &Node, k: &str) -> BTreeMap<String, Ulimit> {
    let mut out = BTreeMap::new();
    for (name, lv) in r.map(v, k) {
        let lk = format!("{k}.{name}");
        let limit = if let Some(fields) = entries(lv) {
            let (mut soft, mut hard) = (None, None);
            for (f, fv) in fields {
                match f.as_str() {
                    "soft" => soft = signed(r, fv, &format!("{lk}.soft"), -1, i64::MAX),
                    "hard" => hard = signed(r, fv, &format!("{lk}.hard"), -1, i64::MAX),
                    _ => r.error(
                        fv,
                        &format!("{lk}.{f}"),
                        format!("unknown ulimit key `{f}` (soft, hard)"),
                    ),
                }
            }
            match (soft, hard) {
                (Some(soft), Some(hard)) if soft <= hard || hard == -1 => {
                    Some(Ulimit { soft, hard })
                }
                (Some(soft), Some(hard)) => {
                    r.error(lv, &lk, format!("soft {soft} is above hard {hard}"));
                    None
                }
                _ => {
                    r.error(
                        lv,
                        &lk,
                        "a ulimit needs both soft and hard (or one number for both)",
                    );
                    None
                }
            }
        } else {
            signed(r, lv, &lk, -1, i64::MAX).map(|n| Ulimit { soft: n, hard: n })
        };
        if let Some(l) = limit {
            out.insert(name, l);
        }
    }
    out
}

fn logging(r: &mut Reader, v: &Node, k: &str) -> Option<Logging> {
    let mut driver = None;
    let mut options = BTreeMap::new();
    for (f, fv) in r.map(v, k) {
        let fk = format!("{k}.{f}");
        match f.as_str() {
            "driver" => driver = r.string(fv, &fk),
            "options" => options = r.key_values(fv, &fk, false),
            _ => r.error(
                fv,
                &fk,
                format!("unknown logging key `{f}` (driver, options)"),
            ),
        }
    }
    if driver.is_none() && !options.is_empty() {
        // Options alone tune the daemon's default driver.
        driver = Some(String::new());
    }
    driver.map(|driver| Logging { driver, options })
}

/// One device request (`{driver: nvidia, count: all, capabilities: [gpu]}`);
/// `capabilities` defaults to `default_caps` (`gpus:` means GPUs) and is
/// otherwise required, as Compose requires it.
fn device_request(
    r: &mut Reader,
    v: &Node,
    k: &str,
    default_caps: &[&str],
) -> Option<DeviceRequest> {
    let mut d = DeviceRequest {
        driver: String::new(),
        count: -1,
        device_ids: Vec::new(),
        capabilities: default_caps.iter().map(|c| c.to_string()).collect(),
        options: BTreeMap::new(),
    };
    let mut counted = false;
    for (f, fv) in r.map(v, k) {
        let fk = format!("{k}.{f}");
        match f.as_str() {
            "driver" => d.driver = r.string(fv, &fk).unwrap_or_default(),
            "count" => {
                counted = true;
                d.count = match scalar(fv).as_deref() {
                    Some("all") => -1,
                    _ => signed(r, fv, &fk, 1, 1024).unwrap_or(-1),
                }
            }
            "device_ids" => d.device_ids = strings(r, fv, &fk),
            "capabilities" => d.capabilities = strings(r, fv, &fk),
            "options" => d.options = r.key_values(fv, &fk, false),
            _ => r.error(
                fv,
                &fk,
                format!(
                    "unknown device key `{f}` (driver, count, device_ids, capabilities, options)"
                ),
            ),
        }
    }
    if counted && !d.device_ids.is_empty() {
        r.error(
            v,
            k,
            "count and device_ids cannot both be given: name the devices, or say how many",
        );
        return None;
    }
    if d.capabilities.is_empty() {
        r.error(v, k, "a device request needs its capabilities (like [gpu])");
        return None;
    }
    if !d.device_ids.is_empty() {
        d.count = 0;
    }
    Some(d)
}
