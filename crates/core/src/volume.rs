//! Looking into a volume: the shapes that cross from the volume helper (a
//! process in a container that mounts the volume; `changeover-edge volume`)
//! to the app, the CLI and the window, and the one reader of a path inside a
//! volume.
//!
//! File names on Linux are bytes, not text. A name is shown *escaped*: valid
//! UTF-8 as it is, except `\` as `\\`, control characters and bytes that are
//! not UTF-8 as `\xNN`. The escaped form is also what users type, so every
//! name that can be listed can be named again, including a newline or `\xff`.
//! Between the app and the helper a path travels as hex (a Docker exec's
//! arguments must be UTF-8).
//!
//! Left out: talking to the daemon (`changeover-docker`'s `volumes`).

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::{Problem, ProblemCode};

/// Where the helper mounts the volume.
pub const MOUNT_POINT: &str = "/volume";
/// Entries in one page of a listing unless told otherwise.
pub const DEFAULT_PAGE: u32 = 500;
/// The most entries one page may hold.
pub const MAX_PAGE: u32 = 5_000;
/// A path deeper than this is refused (no volume needs it; it bounds work).
pub const MAX_DEPTH: usize = 256;
/// A path longer than this (in bytes) is refused, as Linux's `PATH_MAX`.
pub const MAX_PATH: usize = 4096;

/// A path inside a volume: its names, from the volume's root down. Never
/// holds `..`, `.`, an empty name, `/` or NUL, so it cannot leave the volume
/// by itself (links are refused where it is walked, by the helper).
#[derive(Debug, Clone, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct VolumePath {
    names: Vec<Vec<u8>>,
}

fn path_problem(message: String) -> Problem {
    Problem::new(ProblemCode::InvalidPath, message)
}

impl VolumePath {
    /// The volume's root.
    pub fn root() -> Self {
        Self::default()
    }

    /// Reads a path as a user types it: escaped names separated by `/`; a
    /// leading `/` (the volume's root), `.` and repeated slashes are
    /// allowed, `..` and NUL are not.
    pub fn parse(typed: &str) -> Result<Self, Problem> {
        if typed.len() > MAX_PATH {
            return Err(path_problem(format!(
                "a path of {} bytes is longer than the {MAX_PATH} a volume allows",
                typed.len()
            )));
        }
        let raw = unescape(typed)
            .map_err(|why| path_problem(format!("\"{typed}\" is not a path: {why}")))?;
        Self::from_bytes(&raw).map_err(|why| path_problem(format!("\"{typed}\": {why}")))
    }

    /// The same rules on raw bytes (`/`-separated).
    pub fn from_bytes(raw: &[u8]) -> Result<Self, String> {
        if raw.contains(&0) {
            return Err("a file name cannot hold a NUL byte".into());
        }
        let mut names = Vec::new();
        for name in raw.split(|b| *b == b'/') {
            match name {
                b"" | b"." => {}
                b".." => return Err("`..` is not allowed: a path stays inside its volume".into()),
                n => names.push(n.to_vec()),
            }
        }
        if names.len() > MAX_DEPTH {
            return Err(format!("deeper than {MAX_DEPTH} folders"));
        }
        Ok(Self { names })
    }

    /// The names, from the root down.
    pub fn names(&self) -> &[Vec<u8>] {
        &self.names
    }

    pub fn is_root(&self) -> bool {
        self.names.is_empty()
    }

    /// This path with `name` below it.
    pub fn join(&self, name: &[u8]) -> Result<Self, String> {
        let mut raw = self.to_bytes();
        raw.push(b'/');
        raw.extend_from_slice(name);
        if name.contains(&b'/') || name == b".." || name == b"." || name.is_empty() {
            return Err(format!("\"{}\" is not one file name", escape(name)));
        }
        Self::from_bytes(&raw)
    }

    /// `/a/b` as raw bytes (`/` for the root).
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.names.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::new();
        for n in &self.names {
            out.push(b'/');
            out.extend_from_slice(n);
        }
        out
    }

    /// The form a person reads and types again.
    pub fn display(&self) -> String {
        escape(&self.to_bytes())
    }

    /// For the helper's arguments.
    pub fn to_hex(&self) -> String {
        hex(&self.to_bytes())
    }

    /// Reads [`Self::to_hex`] back, with the same rules as [`Self::parse`].
    pub fn from_hex(text: &str) -> Result<Self, String> {
        Self::from_bytes(&unhex(text)?)
    }
}

/// A file name (or any bytes) in its escaped form.
pub fn escape(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Reads [`escape`]'s form back to bytes.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let digits = text
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!("`\\x` at byte {i} is not followed by two hex digits")
                    })?;
                out.push(digits);
                i += 4;
            }
            _ => {
                return Err(format!(
                    "`\\` at byte {i} must be followed by `\\` or `xNN`"
                ))
            }
        }
    }
    Ok(out)
}

fn hex(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) || text.len() > MAX_PATH * 2 {
        return Err("not a hex path".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "not a hex path".to_string())
        })
        .collect()
}

/// What an entry is. Links are shown with their target, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A socket, FIFO or device node.
    Other,
}

/// One entry of a folder, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Entry {
    /// Escaped (see the module's doc).
    pub name: String,
    pub kind: EntryKind,
    #[ts(type = "number")]
    pub size: u64,
    /// Permission bits and set-id/sticky bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Last modification, ms since the Unix epoch.
    #[ts(type = "number")]
    pub modified_ms: i64,
    /// Where a link points, escaped; shown, never followed.
    pub target: Option<String>,
    /// A link whose target leaves the volume (absolute, or `..` past its root).
    pub target_outside: bool,
}

/// One page of a folder, sorted by name (byte order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Listing {
    /// The folder, escaped, from the volume's root (`/` for the root).
    pub path: String,
    pub entries: Vec<Entry>,
    /// Entries in the folder in all.
    #[ts(type = "number")]
    pub total: u64,
    /// Pass as `after` for the next page; none on the last.
    pub next_after: Option<String>,
}

/// The head of a file read: what it is, then up to the asked bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ReadHead {
    #[ts(type = "number")]
    pub size: u64,
    #[ts(type = "number")]
    pub offset: u64,
    /// Bytes that follow this head.
    #[ts(type = "number")]
    pub length: u64,
}

/// The most matches one search lists (it goes on counting what it saw).
pub const MAX_SEARCH: u32 = 10_000;
/// Matches a search lists unless told otherwise.
pub const DEFAULT_SEARCH: u32 = 1_000;
/// The longest text searched for, in bytes.
pub const MAX_SEARCH_TEXT: usize = 255;

/// One entry whose name matched a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Found {
    /// The folder it is in, escaped, from the volume's root.
    pub dir: String,
    pub entry: Entry,
}

/// What a search by name found under a folder: folders nearer the top
/// first (it walks breadth first), names sorted within a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Search {
    pub matches: Vec<Found>,
    /// Entries whose names were looked at.
    #[ts(type = "number")]
    pub searched: u64,
    /// Folders that could not be read.
    #[ts(type = "number")]
    pub unreadable: u64,
    /// More matched than were listed (the walk stopped there).
    pub truncated: bool,
}

/// Checks the text of a search: a part of a name, one line, bounded.
pub fn check_search_text(text: &str) -> Result<&str, Problem> {
    if text.is_empty() {
        return Err(Problem::new(
            ProblemCode::InvalidInput,
            "search for a part of a name: the text is empty",
        ));
    }
    if text.len() > MAX_SEARCH_TEXT || text.contains(['/', '\0', '\n']) {
        return Err(Problem::new(
            ProblemCode::InvalidInput,
            format!(
                "search for a part of one name: at most {MAX_SEARCH_TEXT} bytes, without '/', NUL or newlines"
            ),
        ));
    }
    Ok(text)
}

/// Whether `name` holds `text`, ignoring ASCII case.
pub fn name_matches(name: &[u8], text: &[u8]) -> bool {
    !text.is_empty()
        && name
            .windows(text.len())
            .any(|w| w.eq_ignore_ascii_case(text))
}

/// What each volume takes on disk, as the daemon's disk-usage API said it
/// at `measured_ms`. A volume without a size (`None`) has a driver that
/// reports none: "unknown", not zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct VolumeSizes {
    #[ts(type = "Record<string, number | null>")]
    pub sizes: std::collections::BTreeMap<String, Option<u64>>,
    #[ts(type = "number")]
    pub measured_ms: i64,
}

/// A size walk in progress or done: what it has counted so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SizeWalk {
    #[ts(type = "number")]
    pub files: u64,
    #[ts(type = "number")]
    pub dirs: u64,
    /// Sum of file sizes.
    #[ts(type = "number")]
    pub bytes: u64,
    /// Space the files take on disk (blocks), as `du` counts it.
    #[ts(type = "number")]
    pub disk_bytes: u64,
    /// Entries the helper could not read.
    #[ts(type = "number")]
    pub unreadable: u64,
    pub done: bool,
}

/// A volume up close: what the daemon says of it, who uses it now, and
/// which services and releases mounted it over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct VolumeDetail {
    pub name: String,
    pub driver: String,
    pub created_at: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Containers that mount it now (running or not).
    pub users: Vec<VolumeUser>,
    /// Releases that mounted it, oldest first.
    pub lineage: Vec<VolumeUse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct VolumeUser {
    pub container: String,
    pub running: bool,
    /// Where it is mounted in that container.
    pub target: String,
    pub read_only: bool,
}

/// One release of a service that mounted the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct VolumeUse {
    /// `stack/service`.
    pub service: String,
    pub release: u32,
    pub image: String,
    #[ts(type = "number")]
    pub deployed_ms: i64,
    /// Where the release mounts it.
    pub target: String,
    /// Whether the service runs this release now.
    pub current: bool,
}

/// The first bytes of a file, for a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct FilePreview {
    /// Escaped, from the volume's root.
    pub path: String,
    #[ts(type = "number")]
    pub size: u64,
    pub kind: PreviewKind,
    /// Base64 of the bytes read.
    pub data: String,
    /// The file is longer than what was read.
    pub cut: bool,
}

/// What an upload or import wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct Unpacked {
    #[ts(type = "number")]
    pub files: u64,
    #[ts(type = "number")]
    pub dirs: u64,
    #[ts(type = "number")]
    pub links: u64,
    #[ts(type = "number")]
    pub bytes: u64,
}

/// Bytes of a file a preview reads at most.
pub const PREVIEW_BYTES: u64 = 1024 * 1024;

/// Whether the link `target`, found in folder `dir`, points outside the
/// volume: absolute, or climbing above the root with `..`.
pub fn link_leaves(dir: &VolumePath, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return true;
    }
    let mut depth = dir.names().len() as i64;
    for name in target.split(|b| *b == b'/') {
        match name {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// What a preview of `head` (the first bytes of a file) shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum PreviewKind {
    Text,
    Png,
    Jpeg,
    Gif,
    Webp,
    Svg,
    Sqlite,
    Binary,
}

/// Tells a file's kind from its first bytes (and name, for SVG).
pub fn preview_kind(name: &str, head: &[u8]) -> PreviewKind {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        PreviewKind::Png
    } else if head.starts_with(b"\xff\xd8\xff") {
        PreviewKind::Jpeg
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        PreviewKind::Gif
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        PreviewKind::Webp
    } else if head.starts_with(b"SQLite format 3\0") {
        PreviewKind::Sqlite
    } else if looks_like_text(head) {
        if name.to_ascii_lowercase().ends_with(".svg") {
            PreviewKind::Svg
        } else {
            PreviewKind::Text
        }
    } else {
        PreviewKind::Binary
    }
}

/// UTF-8 (a character cut at the end is fine) with no NUL and few control
/// characters.
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if head.len() - e.valid_up_to() < 4 && e.error_len().is_none() => {
            // Only the last character is cut.
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    let control = valid
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c' | '\x1b'))
        .count();
    control * 100 <= valid.chars().count().max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    #[test]
    fn search_text_is_one_part_of_a_name_and_matches_without_case() {
        assert!(name_matches(b"Report-2026.CSV", b"report"));
        assert!(name_matches(b"a.csv", b".CSV"));
        assert!(!name_matches(b"ab", b"abc"));
        assert!(name_matches(b"caf\xc3\xa9", "\u{e9}".as_bytes()));
        assert!(check_search_text("log").is_ok());
        for bad in ["", "a/b", "a\nb", "a\0b", &"x".repeat(256)] {
            assert_eq!(
                check_search_text(bad).unwrap_err().code,
                ProblemCode::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_are_read_as_typed_and_never_climb_out() {
        let p = VolumePath::parse("/a//b/./c/").unwrap();
        assert_eq!(p.display(), "/a/b/c");
        assert!(VolumePath::parse("").unwrap().is_root());
        assert!(VolumePath::parse("/").unwrap().is_root());
        for bad in ["..", "/a/../b", "a/..", "\\x00", "a\\x00b", "\\q", "\\x4"] {
            let err = VolumePath::parse(bad).unwrap_err();
            assert_eq!(err.code, ProblemCode::InvalidPath, "{bad}");
            assert!(err.message.contains(bad), "{bad}: {}", err.message);
        }
        let deep = "a/".repeat(MAX_DEPTH + 1);
        assert!(VolumePath::parse(&deep).is_err());
        assert!(VolumePath::parse(&"x".repeat(MAX_PATH + 1)).is_err());
    }

    #[test]
    fn every_name_escapes_and_reads_back() {
        let names: [&[u8]; 6] = [
            b"plain.txt",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"new\nline",
            b"\xff\xfe bytes",
            b"back\\slash",
            b"tab\there",
        ];
        for raw in names {
            let shown = escape(raw);
            assert!(!shown.contains('\n') && !shown.contains('\t'), "{shown}");
            assert_eq!(unescape(&shown).unwrap(), raw, "{shown}");
            let p = VolumePath::root().join(raw).unwrap();
            assert_eq!(VolumePath::parse(&p.display()).unwrap(), p);
            assert_eq!(VolumePath::from_hex(&p.to_hex()).unwrap(), p);
        }
        assert_eq!(escape(b"new\nline"), "new\\x0aline");
        assert!(VolumePath::root().join(b"a/b").is_err());
        assert!(VolumePath::root().join(b"..").is_err());
        assert!(
            VolumePath::from_hex("2f2e2e").is_err(),
            "hex `/..` is refused too"
        );
        assert!(VolumePath::from_hex("zz").is_err());
    }

    #[test]
    fn links_that_leave_the_volume_are_told() {
        let dir = VolumePath::parse("/a/b").unwrap();
        assert!(link_leaves(&dir, b"/etc/passwd"));
        assert!(link_leaves(&dir, b"../../../x"));
        assert!(!link_leaves(&dir, b"../../x"));
        assert!(!link_leaves(&dir, b"c/../../d"));
        assert!(!link_leaves(&VolumePath::root(), b"x/y"));
        assert!(link_leaves(&VolumePath::root(), b"x/../../y"));
    }

    #[test]
    fn previews_are_told_by_content() {
        assert_eq!(preview_kind("a.txt", b"hello\nworld\n"), PreviewKind::Text);
        assert_eq!(
            preview_kind("a", b"\x89PNG\r\n\x1a\nrest"),
            PreviewKind::Png
        );
        assert_eq!(preview_kind("a", b"\xff\xd8\xff\xe0"), PreviewKind::Jpeg);
        assert_eq!(preview_kind("a", b"GIF89a.."), PreviewKind::Gif);
        assert_eq!(
            preview_kind("a", b"RIFF\0\0\0\0WEBPVP8 "),
            PreviewKind::Webp
        );
        assert_eq!(
            preview_kind("logo.SVG", b"<svg xmlns=\"\"/>"),
            PreviewKind::Svg
        );
        assert_eq!(
            preview_kind("db", b"SQLite format 3\0...."),
            PreviewKind::Sqlite
        );
        assert_eq!(preview_kind("a", b"\0\x01\x02\x03"), PreviewKind::Binary);
        // A multi-byte character cut by the read is still text.
        let mut cut = "caf\u{e9}".as_bytes().to_vec();
        cut.pop();
        assert_eq!(preview_kind("a", &cut), PreviewKind::Text);
        assert_eq!(preview_kind("a", b"\xff\xfe\xfd\xfc"), PreviewKind::Binary);
    }
}
