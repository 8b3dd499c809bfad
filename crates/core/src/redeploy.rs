//! Automatic redeploys (`x-changeover.autoredeploy`), read without I/O:
//! what a service watches for, and which tag a `semver:` watch moves to.
//!
//! - `digest`: the service's tag now names another image in the registry
//!   (it was pushed again);
//! - `semver:RANGE`: a newer tag in RANGE appeared (`^1.2`, `~1.2.3`,
//!   `>=1.0 <2.0`, `1.x`);
//! - `local`: the tag names another image on the daemon (`docker build -t
//!   app:dev .`, the sandbox loop).
//!
//! A new image goes out through the normal rollout (the lock decides
//! between two watchers, health gates it), with the service's strategy or
//! the one given; a canary is promoted after `promote_after` while its
//! guard holds, else aborted. A broken image never takes traffic away.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::registry::Version;

/// What a service watches, and how a new image goes out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct AutoRedeploy {
    pub watch: Watch,
    /// How often the registry is asked (`local` follows the daemon's
    /// events, so this is its fallback).
    #[ts(type = "number")]
    pub check_every_ms: u64,
    /// Rolls out this way instead of the service's own strategy.
    pub strategy: Option<crate::service::Strategy>,
    /// A canary is promoted this long after it took its share, if its
    /// guard did not trip meanwhile (`None`: it waits for a person).
    #[ts(type = "number | null")]
    pub promote_after_ms: Option<u64>,
}

/// What counts as a new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[ts(export)]
pub enum Watch {
    Digest,
    Semver { range: String },
    Local,
}

impl Watch {
    /// `digest`, `local` or `semver:RANGE`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "digest" => Ok(Watch::Digest),
            "local" => Ok(Watch::Local),
            other => match other.strip_prefix("semver:") {
                Some(range) => {
                    VersionRange::parse(range)?;
                    Ok(Watch::Semver {
                        range: range.trim().to_string(),
                    })
                }
                None => Err(format!(
                    "{other:?} is not something to watch (digest, local, or semver:RANGE such as semver:^1.2)"
                )),
            },
        }
    }
}

/// The default interval between registry checks.
pub const DEFAULT_CHECK_EVERY_MS: u64 = 60_000;
/// The shortest interval taken (a registry is never hammered).
pub const MIN_CHECK_EVERY_MS: u64 = 5_000;

/// A set of versions: every comparator must hold (`>=1.0 <2.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    all: Vec<(Op, Version)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

fn version(s: &str) -> Result<(Version, usize), String> {
    // How many parts were written: `1.2` leaves the patch open.
    let parts = s.split(['-', '+']).next().unwrap_or(s).split('.').count();
    Version::parse(s)
        .map(|v| (v, parts))
        .ok_or_else(|| format!("{s:?} is not a version"))
}

fn bump(v: &Version, part: usize) -> Version {
    match part {
        0 => Version {
            major: v.major + 1,
            minor: 0,
            patch: 0,
            pre: vec!["0".into()],
        },
        1 => Version {
            major: v.major,
            minor: v.minor + 1,
            patch: 0,
            pre: vec!["0".into()],
        },
        _ => Version {
            major: v.major,
            minor: v.minor,
            patch: v.patch + 1,
            pre: vec!["0".into()],
        },
    }
}

impl VersionRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("a version range cannot be empty (e.g. ^1.2)".into());
        }
        if text.len() > 200 {
            return Err("a version range is at most 200 characters".into());
        }
        let mut all = Vec::new();
        for c in text.split_whitespace() {
            let c = c.trim_end_matches(',');
            if let Some(rest) = c.strip_prefix('^') {
                let (v, _) = version(rest)?;
                // ^1.2.3: <2.0.0; ^0.2.3: <0.3.0; ^0.0.3: <0.0.4.
                let part = if v.major > 0 {
                    0
                } else if v.minor > 0 {
                    1
                } else {
                    2
                };
                all.push((Op::Lt, bump(&v, part)));
                all.push((Op::Ge, v));
            } else if let Some(rest) = c.strip_prefix('~') {
                let (v, parts) = version(rest)?;
                all.push((Op::Lt, bump(&v, if parts == 1 { 0 } else { 1 })));
                all.push((Op::Ge, v));
            } else if let Some(rest) = c.strip_prefix(">=") {
                all.push((Op::Ge, version(rest)?.0));
            } else if let Some(rest) = c.strip_prefix("<=") {
                all.push((Op::Le, version(rest)?.0));
            } else if let Some(rest) = c.strip_prefix('>') {
                all.push((Op::Gt, version(rest)?.0));
            } else if let Some(rest) = c.strip_prefix('<') {
                all.push((Op::Lt, version(rest)?.0));
            } else if c.contains(['x', 'X', '*']) {
                // 1.x, 1.2.x, *
                let fixed: Vec<&str> = c
                    .split('.')
                    .take_while(|p| !matches!(*p, "x" | "X" | "*"))
                    .collect();
                if fixed.is_empty() {
                    continue;
                }
                let (v, _) = version(&fixed.join("."))?;
                all.push((Op::Lt, bump(&v, fixed.len() - 1)));
                all.push((Op::Ge, v));
            } else {
                let c = c.strip_prefix('=').unwrap_or(c);
                all.push((Op::Eq, version(c)?.0));
            }
        }
        Ok(Self { all })
    }

    /// Whether `v` is in the range. Pre-releases are in it only when a
    /// comparator names the same major.minor.patch with a pre-release.
    pub fn contains(&self, v: &Version) -> bool {
        if !v.pre.is_empty() {
            let named = self.all.iter().any(|(_, b)| {
                !b.pre.is_empty()
                    && b.pre != ["0"]
                    && (b.major, b.minor, b.patch) == (v.major, v.minor, v.patch)
            });
            if !named {
                return false;
            }
        }
        self.all.iter().all(|(op, b)| match op {
            Op::Ge => v >= b,
            Op::Gt => v > b,
            Op::Le => v <= b,
            Op::Lt => v < b,
            Op::Eq => v == b,
        })
    }
}

/// The newest tag of `tags` in `range` that is newer than `current` (a
/// version tag, or anything: then the newest in range).
pub fn newer_in_range<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    current: &str,
    range: &VersionRange,
) -> Option<String> {
    let now = Version::parse(current);
    tags.into_iter()
        .filter_map(|t| Version::parse(t).map(|v| (v, t)))
        .filter(|(v, _)| range.contains(v) && now.as_ref().is_none_or(|n| v > n))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(range: &str, v: &str) -> bool {
        VersionRange::parse(range)
            .unwrap()
            .contains(&Version::parse(v).unwrap())
    }

    #[test]
    fn ranges_read_as_npm_and_cargo_read_them() {
        assert!(has("^1.2", "1.2.0") && has("^1.2", "1.9.9") && !has("^1.2", "2.0.0"));
        assert!(!has("^1.2", "1.1.9"));
        assert!(has("^0.2.3", "0.2.9") && !has("^0.2.3", "0.3.0"));
        assert!(has("~1.2.3", "1.2.9") && !has("~1.2.3", "1.3.0"));
        assert!(has(">=1.0 <2.0", "1.5.0") && !has(">=1.0 <2.0", "2.0.0"));
        assert!(has("1.x", "1.7.3") && !has("1.x", "2.0.0"));
        assert!(has("1.2.3", "1.2.3") && !has("1.2.3", "1.2.4"));
        assert!(
            !has("^1.2", "1.3.0-rc.1"),
            "pre-releases stay out unless named"
        );
        assert!(has(">=1.3.0-rc.1 <2", "1.3.0-rc.2"));
        for bad in ["", "^x.y", ">=", "1.2.3.4"] {
            assert!(VersionRange::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Watch::parse("semver:^1.2").is_ok());
        assert!(Watch::parse("semver:^nope").is_err());
        assert!(Watch::parse("every-push")
            .unwrap_err()
            .contains("not something to watch"));
    }

    #[test]
    fn a_semver_watch_moves_to_the_newest_tag_in_its_range_only() {
        let r = VersionRange::parse("^1.2").unwrap();
        let tags = ["1.2.0", "1.3.0", "1.10.1", "2.0.0", "latest", "1.11.0-rc.1"];
        assert_eq!(newer_in_range(tags, "1.2.0", &r).as_deref(), Some("1.10.1"));
        assert_eq!(newer_in_range(tags, "1.10.1", &r), None, "nothing newer");
        assert_eq!(
            newer_in_range(tags, "latest", &r).as_deref(),
            Some("1.10.1")
        );
    }
}
