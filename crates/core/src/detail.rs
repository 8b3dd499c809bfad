//! One container up close: what it runs (inspect), what it printed (logs),
//! and a terminal into it — the shapes that cross to the window and the CLI,
//! and the small rules they follow (which variables look secret, how long a
//! log line may be, what "since" accepts, what a target names).
//!
//! Left out: talking to the daemon (`changeover-docker`'s `containers`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A log line longer than this is cut (the rest is counted, not kept), so
/// one runaway line cannot take the memory of the app or the window.
pub const MAX_LOG_LINE: usize = 64 * 1024;
/// Lines of history a log view starts with unless told otherwise.
pub const DEFAULT_TAIL: u32 = 500;

/// What `docker inspect` says of a container, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ContainerDetail {
    pub id: String,
    pub name: String,
    /// The image as the container was created from it.
    pub image: String,
    pub image_id: String,
    /// `repo@sha256:…` of the image, when it came from a registry.
    pub image_digests: Vec<String>,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    pub env: Vec<EnvVar>,
    pub ports: Vec<String>,
    pub mounts: Vec<MountDetail>,
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `paused`, …
    pub status: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub created: Option<String>,
    #[ts(type = "number")]
    pub restart_count: i64,
    pub oom_killed: bool,
    pub health: Option<HealthDetail>,
    /// Its Changeover service and place in it, when it has one.
    pub service: Option<String>,
    pub release: Option<u32>,
    pub slot: Option<u32>,
}

/// One environment variable; `secret` when its name looks like it holds
/// one (the window masks those until clicked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct MountDetail {
    /// `volume`, `bind`, `tmpfs`.
    pub kind: String,
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

/// Docker's HEALTHCHECK state and its last runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct HealthDetail {
    pub status: String,
    #[ts(type = "number")]
    pub failing_streak: i64,
    pub log: Vec<HealthRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct HealthRun {
    pub start: String,
    #[ts(type = "number")]
    pub exit_code: i64,
    pub output: String,
}

/// Whether a variable's name says it holds a secret.
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "APIKEY",
        "API_KEY",
        "PRIVATE",
        "CREDENTIAL",
        "AUTH",
        "_PASS",
        "_KEY",
    ]
    .iter()
    .any(|w| k.contains(w))
        || k.ends_with("PASS")
        || k.ends_with("KEY")
}

/// One line a container printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct LogLine {
    /// The container's name.
    pub container: String,
    /// Its release and slot, for a service's merged logs.
    pub release: Option<u32>,
    pub slot: Option<u32>,
    pub stderr: bool,
    /// RFC 3339 with nanoseconds, as the daemon stamped it.
    pub time: Option<String>,
    pub text: String,
    /// Bytes of the line that were cut off (see [`MAX_LOG_LINE`]).
    #[ts(type = "number | null")]
    pub cut: Option<u64>,
}

/// What to show of a container's logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct LogQuery {
    /// Keep following new lines.
    pub follow: bool,
    /// Lines of history (default [`DEFAULT_TAIL`]; `None` with `all`).
    pub tail: Option<u32>,
    /// Everything, not only the last `tail` lines.
    #[serde(default)]
    pub all: bool,
    /// Only lines since this long ago (`30s`, `10m`, `2h`, `1d`).
    pub since: Option<String>,
}

/// Seconds in `10m`, `2h`, `30s`, `1d`, `1h30m`. The error names the value.
pub fn parse_duration(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("a duration cannot be empty (say 30s, 10m, 2h or 1d)".into());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "{raw:?} is not a duration (say 30s, 10m, 2h or 1d)"
                ))
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{raw:?} is not a duration (say 30s, 10m, 2h or 1d)"))?;
        total = total
            .checked_add(
                n.checked_mul(unit)
                    .ok_or_else(|| format!("{raw:?} is too long"))?,
            )
            .ok_or_else(|| format!("{raw:?} is too long"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "{raw:?} needs a unit: s, m, h or d (like {number}s)"
        ));
    }
    Ok(total)
}

/// Cuts a printed line into what is shown and how much was left out.
pub fn bounded_line(bytes: &[u8]) -> (String, Option<u64>) {
    let (kept, cut) = if bytes.len() > MAX_LOG_LINE {
        (
            &bytes[..MAX_LOG_LINE],
            Some((bytes.len() - MAX_LOG_LINE) as u64),
        )
    } else {
        (bytes, None)
    };
    let text = String::from_utf8_lossy(kept);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    (text.to_string(), cut)
}

/// Splits a byte stream into lines, however the daemon cut it into frames;
/// a line that grows past [`MAX_LOG_LINE`] is cut there and the rest
/// counted until its newline.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    dropped: u64,
}

impl LineSplitter {
    /// Feeds bytes; the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, Option<u64>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.take(&rest[..i]);
            out.push(self.line());
            rest = &rest[i + 1..];
        }
        self.take(rest);
        out
    }

    /// What is left when the stream ends (a last line without newline).
    pub fn finish(&mut self) -> Option<(String, Option<u64>)> {
        (!self.pending.is_empty() || self.dropped > 0).then(|| self.line())
    }

    fn take(&mut self, part: &[u8]) {
        let room = MAX_LOG_LINE.saturating_sub(self.pending.len());
        let keep = part.len().min(room);
        self.pending.extend_from_slice(&part[..keep]);
        self.dropped += (part.len() - keep) as u64;
    }

    fn line(&mut self) -> (String, Option<u64>) {
        let (text, _) = bounded_line(&self.pending);
        let cut = (self.dropped > 0).then_some(self.dropped);
        self.pending.clear();
        self.dropped = 0;
        (text, cut)
    }
}

/// What a terminal or a log view is about, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A container by name or ID.
    Container(String),
    /// `STACK/SERVICE`, and for one container of it, `/SLOT`.
    Service {
        stack: String,
        service: String,
        slot: Option<u32>,
    },
}

impl Target {
    pub fn parse(raw: &str) -> Result<Target, String> {
        let s = raw.trim();
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            format!("{raw:?} names no container or service (CONTAINER, STACK/SERVICE or STACK/SERVICE/SLOT)")
        };
        match parts.as_slice() {
            [c] if !c.is_empty() => Ok(Target::Container(c.to_string())),
            [st, sv] if !st.is_empty() && !sv.is_empty() => Ok(Target::Service {
                stack: st.to_string(),
                service: sv.to_string(),
                slot: None,
            }),
            [st, sv, slot] if !st.is_empty() && !sv.is_empty() => {
                Ok(Target::Service {
                    stack: st.to_string(),
                    service: sv.to_string(),
                    slot: Some(slot.parse().map_err(|_| {
                        format!("{slot:?} in {raw:?} is not a slot number (0, 1, …)")
                    })?),
                })
            }
            _ => Err(bad()),
        }
    }
}

/// What a terminal session sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[ts(export)]
pub enum TerminalEvent {
    /// Bytes the shell wrote, base64.
    Data { data: String },
    /// The session ended: the shell exited (its code), or the container
    /// stopped or went away (the message says which).
    Exit {
        #[ts(type = "number | null")]
        code: Option<i64>,
        message: String,
    },
}

/// A terminal opened into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TerminalOpened {
    #[ts(type = "number")]
    pub id: u64,
    pub container: String,
    /// What runs: `bash`, `sh`, or the debug shell.
    pub shell: String,
    /// A busybox helper joined to the container's PID and network
    /// namespaces, because the container has no shell of its own.
    pub debug: bool,
    /// For the window's label: what the session is.
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        for bad in ["", "10", "5x", "m", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} is refused");
        }
        assert!(
            parse_duration("10").unwrap_err().contains("10s"),
            "it suggests the unit"
        );
    }

    #[test]
    fn secret_looking_names_are_masked() {
        for k in [
            "DB_PASSWORD",
            "api_key",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "SMTP_PASS",
        ] {
            assert!(looks_secret(k), "{k}");
        }
        for k in ["PATH", "HOME", "PORT", "TZ", "LANG"] {
            assert!(!looks_secret(k), "{k}");
        }
    }

    #[test]
    fn lines_are_whole_however_they_arrive_and_bounded() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"hel").is_empty());
        assert_eq!(s.push(b"lo\nwor"), vec![("hello".to_string(), None)]);
        assert_eq!(s.push(b"ld\r\n"), vec![("world".to_string(), None)]);
        // A 1 MB line, in pieces: kept up to the limit, the rest counted.
        let big = vec![b'x'; 1 << 20];
        assert!(s.push(&big[..300_000]).is_empty());
        let lines = s.push(&[&big[300_000..], b"\nnext"].concat());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0.len(), MAX_LOG_LINE);
        assert_eq!(lines[0].1, Some(((1 << 20) - MAX_LOG_LINE) as u64));
        assert_eq!(s.finish(), Some(("next".to_string(), None)));
        // Bytes that are not UTF-8 are shown, not lost.
        let (t, _) = bounded_line(b"caf\xe9\n");
        assert_eq!(t, "caf\u{fffd}");
    }

    #[test]
    fn targets_name_a_container_a_service_or_a_slot() {
        assert_eq!(
            Target::parse("web-1"),
            Ok(Target::Container("web-1".into()))
        );
        assert_eq!(
            Target::parse("shop/web/2"),
            Ok(Target::Service {
                stack: "shop".into(),
                service: "web".into(),
                slot: Some(2)
            })
        );
        assert!(Target::parse("shop/web/x").unwrap_err().contains("slot"));
        assert!(Target::parse("a//b").is_err());
        assert!(Target::parse("").is_err());
    }
}
