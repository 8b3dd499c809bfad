//! What Docker applies to each container of a service beyond its image,
//! command, environment, ports and mounts: Compose's service keys of the
//! same names (`user`, `cap_add`, `sysctls`, `ulimits`, `mem_limit`…), read
//! by the stack reader and given to the daemon as they are. Unset is
//! Docker's own default, so a service that says none of them is created as
//! before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A limit of `ulimits:` (`nofile: {soft: 1024, hard: 4096}`, or one number
/// for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Ulimit {
    #[ts(type = "number")]
    pub soft: i64,
    #[ts(type = "number")]
    pub hard: i64,
}

/// `logging:`: the daemon's log driver for the containers, and its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Logging {
    /// Empty: the daemon's default driver, with these options.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Devices of a driver a container asks for: `deploy.resources.
/// reservations.devices` or `gpus:` (GPUs for ML images, as Docker's
/// `--gpus` gives them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct DeviceRequest {
    /// `nvidia`, …; empty: the daemon's choice for the capabilities.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// How many; `-1`: all. Unused when `device_ids` names them.
    #[ts(type = "number")]
    pub count: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_ids: Vec<String>,
    /// What the devices must offer (`gpu`, `compute`, `utility`).
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Compose's container settings, as the stack says them (`Default`: none
/// said). Sizes are bytes, CPUs are billionths of a CPU, as Docker's API
/// takes them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase", default)]
#[ts(export)]
pub struct ContainerSettings {
    /// `entrypoint:` (a string is split as a shell would).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `stop_grace_period`: how long a container has between its stop
    /// signal and SIGKILL (Changeover's default when unset: 10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub stop_grace_period_ms: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// `read_only`: the container's root file system.
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// `HOST:IP` (Docker's form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub shm_size: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// `mem_limit` or `deploy.resources.limits.memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub memory: Option<u64>,
    /// `mem_reservation` or `deploy.resources.reservations.memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub memory_reservation: Option<u64>,
    /// `memswap_limit` (`-1`: unlimited swap).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub memory_swap: Option<i64>,
    /// `cpus` or `deploy.resources.limits.cpus`, in billionths of a CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub nano_cpus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub cpu_shares: Option<u64>,
    /// `cpuset`: the CPUs it may run on (`0-1`, `0,2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// `pids_limit` or `deploy.resources.limits.pids` (`-1`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub oom_score_adj: Option<i64>,
    #[serde(skip_serializing_if = "is_false")]
    pub oom_kill_disable: bool,
    /// `ipc`, `pid`: `host`, `shareable`, `service:NAME` is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices_requested: Vec<DeviceRequest>,
    /// `cpu_period` / `cpu_quota` (microseconds), Docker's other CPU limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub cpu_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | null")]
    pub cpu_quota: Option<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ContainerSettings {
    /// Whether the stack says none of them.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A size as Compose writes one: `512`, `64k`, `1.5g`, `256mb`, `1GiB`
/// (units of 1024, case ignored); bytes, or `None` when it is not one.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let factor: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    if number.is_empty() {
        return None;
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(factor);
    }
    let n: f64 = number.parse().ok()?;
    let bytes = n * factor as f64;
    (n.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `1.5` CPUs as billionths of a CPU (Docker's NanoCPUs), or `None`.
pub fn parse_cpus(text: &str) -> Option<u64> {
    let n: f64 = text.trim().parse().ok()?;
    (n.is_finite() && n > 0.0 && n <= 1024.0).then(|| (n * 1e9).round() as u64)
}

/// Bytes as a stack writes them back: `512m`, `1g`, `1536k`, `100`.
pub fn format_bytes(bytes: u64) -> String {
    for (unit, factor) in [
        ("t", 1u64 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// NanoCPUs as a stack writes them back: `1.5`.
pub fn format_cpus(nano: u64) -> String {
    let whole = nano / 1_000_000_000;
    let frac = nano % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpus_read_as_compose_writes_them_and_back() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("64k"), Some(65_536));
        assert_eq!(parse_bytes("256mb"), Some(256 << 20));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("1 G"), Some(1 << 30));
        for bad in ["", "g", "lots", "12x", "-1m", "99999999999t"] {
            assert_eq!(parse_bytes(bad), None, "{bad:?}");
        }
        assert_eq!(format_bytes(256 << 20), "256m");
        assert_eq!(format_bytes(3 << 29), "1536m");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(parse_cpus("1.5"), Some(1_500_000_000));
        assert_eq!(parse_cpus("0.25"), Some(250_000_000));
        for bad in ["0", "-1", "many", "NaN", "5000"] {
            assert_eq!(parse_cpus(bad), None, "{bad:?}");
        }
        assert_eq!(format_cpus(1_500_000_000), "1.5");
        assert_eq!(format_cpus(2_000_000_000), "2");
        assert_eq!(format_cpus(250_000_000), "0.25");
    }
}
