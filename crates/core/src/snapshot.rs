//! Snapshots of volumes and what changed between two of them.
//!
//! A snapshot is itself a volume: a copy of another one, made on the same
//! daemon by the volume helper, labelled with what it is a copy of, when,
//! why (by hand, before a deploy, before a restore) and, before a deploy,
//! which release ran and which one was about to. Being a volume, it is
//! browsed, exported and diffed like any other, and it lives exactly as long
//! as the daemon keeps it: nothing about it is stored anywhere else.
//!
//! A diff compares two trees entry by entry (added, removed, changed by
//! kind, size, mode, owner, link target or content); the helper walks both
//! and compares content byte by byte where the sizes agree.
//!
//! Left out: talking to the daemon (`changeover-docker`'s `volumes`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::volume::EntryKind;
use crate::{Problem, ProblemCode};

/// Where a helper that works on two volumes mounts the second one.
pub const OTHER_MOUNT: &str = "/other";

/// Labels a snapshot volume carries.
pub mod labels {
    /// The volume it is a copy of.
    pub const OF: &str = "dev.changeover.snapshot.of";
    /// When it was taken, ms since the Unix epoch.
    pub const AT: &str = "dev.changeover.snapshot.at";
    /// `manual`, `before-deploy` or `before-restore`.
    pub const REASON: &str = "dev.changeover.snapshot.reason";
    /// What the user wrote about it.
    pub const NOTE: &str = "dev.changeover.snapshot.note";
    /// `stack/service` whose deploy it was taken before.
    pub const SERVICE: &str = "dev.changeover.snapshot.service";
    /// The release that ran when it was taken.
    pub const RELEASE: &str = "dev.changeover.snapshot.release";
    /// The release whose deploy it was taken before: rolling that release
    /// back with its data restores this snapshot.
    pub const BEFORE_RELEASE: &str = "dev.changeover.snapshot.before-release";
}

/// The longest note a snapshot keeps.
pub const MAX_NOTE: usize = 500;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum SnapshotReason {
    Manual,
    BeforeDeploy,
    BeforeRestore,
}

impl SnapshotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::BeforeDeploy => "before-deploy",
            Self::BeforeRestore => "before-restore",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "manual" => Some(Self::Manual),
            "before-deploy" => Some(Self::BeforeDeploy),
            "before-restore" => Some(Self::BeforeRestore),
            _ => None,
        }
    }
}

/// One snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Snapshot {
    /// The snapshot's own volume.
    pub name: String,
    /// The volume it is a copy of.
    pub of: String,
    #[ts(type = "number")]
    pub taken_ms: i64,
    pub reason: SnapshotReason,
    pub note: Option<String>,
    pub service: Option<String>,
    pub release: Option<u32>,
    pub before_release: Option<u32>,
}

/// What a new snapshot is labelled with, besides its source and time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    pub note: Option<String>,
    pub service: Option<String>,
    pub release: Option<u32>,
    pub before_release: Option<u32>,
}

impl Snapshot {
    /// The snapshot a volume's labels describe, when they describe one.
    pub fn from_labels(name: &str, labels: &BTreeMap<String, String>) -> Option<Self> {
        let of = labels.get(labels::OF)?.clone();
        Some(Self {
            name: name.to_string(),
            of,
            taken_ms: labels.get(labels::AT)?.parse().ok()?,
            reason: labels
                .get(labels::REASON)
                .and_then(|r| SnapshotReason::parse(r))
                .unwrap_or(SnapshotReason::Manual),
            note: labels.get(labels::NOTE).cloned(),
            service: labels.get(labels::SERVICE).cloned(),
            release: labels.get(labels::RELEASE).and_then(|r| r.parse().ok()),
            before_release: labels
                .get(labels::BEFORE_RELEASE)
                .and_then(|r| r.parse().ok()),
        })
    }

    /// The labels of a new snapshot of `of`.
    pub fn labels(
        of: &str,
        taken_ms: i64,
        reason: SnapshotReason,
        meta: &SnapshotMeta,
    ) -> Vec<(String, String)> {
        let mut out = vec![
            (labels::OF.to_string(), of.to_string()),
            (labels::AT.to_string(), taken_ms.to_string()),
            (labels::REASON.to_string(), reason.as_str().to_string()),
        ];
        if let Some(n) = &meta.note {
            out.push((labels::NOTE.to_string(), n.clone()));
        }
        if let Some(s) = &meta.service {
            out.push((labels::SERVICE.to_string(), s.clone()));
        }
        if let Some(r) = meta.release {
            out.push((labels::RELEASE.to_string(), r.to_string()));
        }
        if let Some(r) = meta.before_release {
            out.push((labels::BEFORE_RELEASE.to_string(), r.to_string()));
        }
        out
    }
}

/// Checks a note the user typed: one line of printable text, bounded.
pub fn check_note(note: &str) -> Result<Option<String>, Problem> {
    let note = note.trim();
    if note.is_empty() {
        return Ok(None);
    }
    if note.len() > MAX_NOTE {
        return Err(Problem::new(
            ProblemCode::InvalidInput,
            format!(
                "a snapshot's note holds at most {MAX_NOTE} bytes, not {}",
                note.len()
            ),
        ));
    }
    if note.chars().any(char::is_control) {
        return Err(Problem::new(
            ProblemCode::InvalidInput,
            "a snapshot's note is one line of text, without control characters",
        ));
    }
    Ok(Some(note.to_string()))
}

/// The name of a snapshot of `of` taken at `taken_ms`:
/// `VOLUME.snapshot-YYYYMMDD-HHMMSS` (UTC), readable in `docker volume ls`.
/// `attempt` > 0 adds `-N`, for two taken in the same second.
pub fn snapshot_name(of: &str, taken_ms: i64, attempt: u32) -> String {
    let secs = taken_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{of}.snapshot-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if attempt == 0 {
        base
    } else {
        format!("{base}-{}", attempt + 1)
    }
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Snapshots taken before deploys that a service's `keep` no longer
/// covers: all but the newest `keep` of them, oldest first. Snapshots taken
/// by hand or before a restore are never among them.
pub fn beyond_keep(snapshots: &[Snapshot], keep: u32) -> Vec<Snapshot> {
    let mut auto: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| s.reason == SnapshotReason::BeforeDeploy)
        .collect();
    auto.sort_by_key(|s| std::cmp::Reverse((s.taken_ms, s.name.clone())));
    let mut out: Vec<Snapshot> = auto.into_iter().skip(keep as usize).cloned().collect();
    out.reverse();
    out
}

/// A copy in progress or done (a snapshot, a clone, a restore).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Copied {
    #[ts(type = "number")]
    pub files: u64,
    #[ts(type = "number")]
    pub dirs: u64,
    #[ts(type = "number")]
    pub links: u64,
    #[ts(type = "number")]
    pub bytes: u64,
    /// Sockets, pipes and devices, which are not copied.
    #[ts(type = "number")]
    pub skipped: u64,
    pub done: bool,
}

/// How an entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// What of an entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum Aspect {
    Kind,
    Size,
    Content,
    Mode,
    Owner,
    Target,
}

/// One entry that differs between two trees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct EntryChange {
    /// Escaped, from the root (`/a/b`).
    pub path: String,
    pub change: Change,
    /// What it is after (before, when removed).
    pub kind: EntryKind,
    /// For `changed`: what differs.
    pub aspects: Vec<Aspect>,
    #[ts(type = "number | null")]
    pub size_before: Option<u64>,
    #[ts(type = "number | null")]
    pub size_after: Option<u64>,
}

/// Counts of a diff. A folder added or removed counts once, with all it
/// holds (listed below it as added or removed too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct DiffCounts {
    #[ts(type = "number")]
    pub added: u64,
    #[ts(type = "number")]
    pub removed: u64,
    #[ts(type = "number")]
    pub changed: u64,
    #[ts(type = "number")]
    pub unchanged: u64,
    /// More entries differ than were listed (the counts are complete).
    pub truncated: bool,
}

/// What the helper says last of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffDone {
    pub done: DiffCounts,
}

/// The most entry changes one diff lists (the counts go on).
pub const MAX_DIFF_ENTRIES: u64 = 100_000;

/// Two trees compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct VolumeDiff {
    /// The volume (a snapshot) taken as before.
    pub before: String,
    /// The volume (the live one, or a later snapshot) taken as after.
    pub after: String,
    pub changes: Vec<EntryChange>,
    pub counts: DiffCounts,
}

/// One line of a text diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct DiffLine {
    /// `' '` same, `'-'` only before, `'+'` only after.
    pub tag: String,
    pub before: Option<u32>,
    pub after: Option<u32>,
    pub text: String,
}

/// The lines that changed in a text file, with three lines around each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TextDiff {
    pub path: String,
    /// Hunks: runs of lines, changed ones with their context.
    pub hunks: Vec<Vec<DiffLine>>,
    /// Not text, or larger than [`MAX_TEXT_DIFF`]: no lines are shown.
    pub not_shown: Option<String>,
}

/// Text files larger than this are compared, but their lines not shown.
pub const MAX_TEXT_DIFF: u64 = 1024 * 1024;

/// The hunks of a line diff of `before` and `after`.
pub fn line_diff(before: &str, after: &str) -> Vec<Vec<DiffLine>> {
    let diff = similar::TextDiff::from_lines(before, after);
    diff.grouped_ops(3)
        .into_iter()
        .map(|group| {
            let mut lines = Vec::new();
            for op in group {
                for change in diff.iter_changes(&op) {
                    let tag = match change.tag() {
                        similar::ChangeTag::Equal => " ",
                        similar::ChangeTag::Delete => "-",
                        similar::ChangeTag::Insert => "+",
                    };
                    lines.push(DiffLine {
                        tag: tag.to_string(),
                        before: change.old_index().map(|i| i as u32 + 1),
                        after: change.new_index().map(|i| i as u32 + 1),
                        text: change.value().trim_end_matches(['\n', '\r']).to_string(),
                    });
                }
            }
            lines
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_read_as_utc_times_and_labels_round_trip() {
        // 2026-12-02 12:06:13.500 UTC
        let ms = 1_796_213_173_500;
        assert_eq!(
            snapshot_name("s_data", ms, 0),
            "s_data.snapshot-20261202-120613"
        );
        assert_eq!(
            snapshot_name("s_data", ms, 1),
            "s_data.snapshot-20261202-120613-2"
        );
        assert_eq!(snapshot_name("v", 0, 0), "v.snapshot-19700101-000000");
        assert_eq!(
            snapshot_name("v", 951_782_400_000, 0),
            "v.snapshot-20000229-000000"
        );
        let meta = SnapshotMeta {
            note: Some("before the migration".into()),
            service: Some("s/db".into()),
            release: Some(3),
            before_release: Some(4),
        };
        let labels: BTreeMap<String, String> =
            Snapshot::labels("s_data", ms, SnapshotReason::BeforeDeploy, &meta)
                .into_iter()
                .collect();
        let s = Snapshot::from_labels("x", &labels).unwrap();
        assert_eq!(s.of, "s_data");
        assert_eq!(s.taken_ms, ms);
        assert_eq!(s.reason, SnapshotReason::BeforeDeploy);
        assert_eq!((s.release, s.before_release), (Some(3), Some(4)));
        assert_eq!(s.note.as_deref(), Some("before the migration"));
        assert!(Snapshot::from_labels("plain", &BTreeMap::new()).is_none());
    }

    #[test]
    fn notes_are_one_bounded_line() {
        assert_eq!(check_note("  ").unwrap(), None);
        assert_eq!(check_note(" ok ").unwrap().as_deref(), Some("ok"));
        assert!(check_note("a\nb").is_err());
        assert!(check_note(&"x".repeat(MAX_NOTE + 1)).is_err());
    }

    #[test]
    fn keep_prunes_only_old_snapshots_taken_before_deploys() {
        let snap = |name: &str, ms: i64, reason| Snapshot {
            name: name.into(),
            of: "v".into(),
            taken_ms: ms,
            reason,
            note: None,
            service: None,
            release: None,
            before_release: None,
        };
        let all = vec![
            snap("a", 1, SnapshotReason::BeforeDeploy),
            snap("m", 2, SnapshotReason::Manual),
            snap("b", 3, SnapshotReason::BeforeDeploy),
            snap("r", 4, SnapshotReason::BeforeRestore),
            snap("c", 5, SnapshotReason::BeforeDeploy),
        ];
        let names = |v: Vec<Snapshot>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(beyond_keep(&all, 1)), ["a", "b"]);
        assert_eq!(names(beyond_keep(&all, 3)), Vec::<String>::new());
        assert_eq!(names(beyond_keep(&all, 0)), ["a", "b", "c"]);
    }

    #[test]
    fn line_diffs_number_both_sides() {
        let hunks = line_diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(hunks.len(), 1);
        let tags: String = hunks[0].iter().map(|l| l.tag.as_str()).collect();
        assert_eq!(tags, " -+ +");
        let b = &hunks[0][1];
        assert_eq!((b.before, b.after, b.text.as_str()), (Some(2), None, "b"));
        let d = &hunks[0][4];
        assert_eq!((d.before, d.after, d.text.as_str()), (None, Some(4), "d"));
        assert!(line_diff("same\n", "same\n").is_empty());
    }
}
