//! The tables of a SQLite file and how many rows each holds, read from the
//! file's bytes by the file format (sqlite.org/fileformat2.html) — no
//! SQLite library, nothing executed, so a hostile file can only be refused.
//! The bytes may be the start of a larger file: what lies beyond them is
//! said to be not counted, never guessed.
//!
//! Only the main file is read: what a `-wal` file beside it holds (writes
//! not checkpointed yet) is not in these counts.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// The most bytes of a SQLite file read to list its tables.
pub const MAX_SQLITE_READ: u64 = 64 * 1024 * 1024;
/// The most b-tree pages visited in all (a loop in a hostile file ends).
const MAX_PAGES_VISITED: usize = 200_000;
/// Deeper b-trees than this do not exist in real files.
const MAX_DEPTH: usize = 32;

/// What a SQLite file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SqliteInfo {
    pub page_size: u32,
    /// Pages the file holds, as its header says.
    pub pages: u32,
    /// `UTF-8`, `UTF-16le` or `UTF-16be`.
    pub encoding: String,
    pub tables: Vec<SqliteTable>,
    /// Indexes (names only; their entries are the tables' rows again).
    pub indexes: Vec<String>,
    /// Only the start of the file was read: some counts may be missing.
    pub cut: bool,
}

/// A table or view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SqliteTable {
    pub name: String,
    /// `table` or `view`.
    pub kind: String,
    /// Rows, when they could be counted (a view has none; a table whose
    /// pages lie beyond what was read is not counted).
    #[ts(type = "number | null")]
    pub rows: Option<u64>,
    /// A `WITHOUT ROWID` table (its rows are kept in an index b-tree).
    pub without_rowid: bool,
}

/// Whether `head` starts like a SQLite 3 file.
pub fn is_sqlite(head: &[u8]) -> bool {
    head.starts_with(b"SQLite format 3\0")
}

/// Reads the tables of the SQLite file whose first bytes are `bytes` (all
/// of it when `bytes.len()` is the file's size).
pub fn read_sqlite(bytes: &[u8], file_size: u64) -> Result<SqliteInfo, String> {
    if bytes.len() < 100 || !is_sqlite(bytes) {
        return Err("not a SQLite 3 file (its header is not there)".into());
    }
    let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536u32,
        n if n >= 512 && n.is_power_of_two() => u32::from(n),
        n => return Err(format!("a page size of {n} is not one SQLite writes")),
    };
    let reserved = u32::from(bytes[20]);
    let usable = page_size
        .checked_sub(reserved)
        .filter(|u| *u >= 480)
        .ok_or("the header's reserved space leaves no room for pages")?;
    let pages = u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let encoding = match u32::from_be_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]) {
        2 => "UTF-16le",
        3 => "UTF-16be",
        _ => "UTF-8",
    }
    .to_string();
    let file = File {
        bytes,
        page_size: page_size as usize,
        usable: usable as usize,
        utf16: match encoding.as_str() {
            "UTF-16le" => Some(false),
            "UTF-16be" => Some(true),
            _ => None,
        },
    };
    let mut budget = MAX_PAGES_VISITED;
    let mut schema = Vec::new();
    let mut cut = (bytes.len() as u64) < file_size;
    file.walk(1, 0, &mut budget, &mut |page, cell| {
        if let Some(row) = file.schema_row(page, cell) {
            schema.push(row);
        }
    })
    .unwrap_or_else(|stop| cut |= matches!(stop, Stop::Beyond));
    let mut tables = Vec::new();
    let mut indexes = Vec::new();
    for row in schema {
        match row.kind.as_str() {
            "table" | "view" => {
                let without_rowid = row
                    .sql
                    .as_deref()
                    .map(|s| s.to_ascii_uppercase().replace(char::is_whitespace, ""))
                    .is_some_and(|s| s.ends_with("WITHOUTROWID") || s.contains("WITHOUTROWID,"));
                let rows = if row.kind == "view" || row.root == 0 {
                    None
                } else {
                    let mut n = 0u64;
                    match file.walk(row.root, 0, &mut budget, &mut |_, _| n += 1) {
                        Ok(()) => Some(n),
                        Err(stop) => {
                            cut |= matches!(stop, Stop::Beyond);
                            None
                        }
                    }
                };
                tables.push(SqliteTable {
                    name: row.name,
                    kind: row.kind,
                    rows,
                    without_rowid,
                });
            }
            "index" => indexes.push(row.name),
            _ => {}
        }
    }
    Ok(SqliteInfo {
        page_size,
        pages,
        encoding,
        tables,
        indexes,
        cut,
    })
}

struct SchemaRow {
    kind: String,
    name: String,
    root: u32,
    sql: Option<String>,
}

struct File<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
    /// Text is UTF-16 (big-endian when true).
    utf16: Option<bool>,
}

/// Why a walk stopped.
#[derive(Debug)]
enum Stop {
    /// The page lies beyond the bytes read.
    Beyond,
    /// The file is malformed or loops.
    Malformed,
}

impl File<'_> {
    /// The bytes of page `n` (from 1), and where its b-tree header starts.
    fn page(&self, n: u32) -> Result<(&[u8], usize), Stop> {
        let n = n as usize;
        if n == 0 {
            return Err(Stop::Malformed);
        }
        let start = (n - 1) * self.page_size;
        let page = self
            .bytes
            .get(start..start + self.page_size)
            .ok_or(Stop::Beyond)?;
        Ok((page, if n == 1 { 100 } else { 0 }))
    }

    /// Visits every entry of the b-tree rooted at `root`: `cell(page, at)`
    /// for each cell of a leaf, and of an interior index page (whose cells
    /// are entries too).
    fn walk(
        &self,
        root: u32,
        depth: usize,
        budget: &mut usize,
        cell: &mut dyn FnMut(&[u8], usize),
    ) -> Result<(), Stop> {
        if depth > MAX_DEPTH || *budget == 0 {
            return Err(Stop::Malformed);
        }
        *budget -= 1;
        let (page, h) = self.page(root)?;
        let kind = *page.get(h).ok_or(Stop::Malformed)?;
        let count = be16(page, h + 3).ok_or(Stop::Malformed)? as usize;
        let interior = matches!(kind, 0x02 | 0x05);
        if !matches!(kind, 0x02 | 0x05 | 0x0a | 0x0d) {
            return Err(Stop::Malformed);
        }
        let pointers = h + if interior { 12 } else { 8 };
        for i in 0..count {
            let at = be16(page, pointers + 2 * i).ok_or(Stop::Malformed)? as usize;
            if at >= page.len() {
                return Err(Stop::Malformed);
            }
            if interior {
                let child = be32(page, at).ok_or(Stop::Malformed)?;
                self.walk(child, depth + 1, budget, cell)?;
                if kind == 0x02 {
                    cell(page, at);
                }
            } else {
                cell(page, at);
            }
        }
        if interior {
            let right = be32(page, h + 8).ok_or(Stop::Malformed)?;
            self.walk(right, depth + 1, budget, cell)?;
        }
        Ok(())
    }

    /// A row of `sqlite_schema` from its leaf cell: type, name, rootpage,
    /// sql — from the part of the record on the page (a long `sql` that
    /// overflows is left out).
    fn schema_row(&self, page: &[u8], at: usize) -> Option<SchemaRow> {
        let (payload, n) = varint(page.get(at..)?)?;
        let (_rowid, m) = varint(page.get(at + n..)?)?;
        let start = at + n + m;
        let local = self.local_size(payload as usize);
        let record = page.get(start..(start + local).min(page.len()))?;
        let values = record_values(record)?;
        let text = |v: &Value| match v {
            Value::Text(b) => Some(self.decode(b)),
            _ => None,
        };
        let kind = text(values.first()?)?;
        let name = text(values.get(1)?)?;
        let root = match values.get(3)? {
            Value::Int(i) => u32::try_from(*i).ok()?,
            Value::Null => 0,
            _ => return None,
        };
        let sql = values.get(4).and_then(text);
        Some(SchemaRow {
            kind,
            name,
            root,
            sql,
        })
    }

    /// How much of a table leaf payload of `p` bytes is on the page.
    fn local_size(&self, p: usize) -> usize {
        let u = self.usable;
        let x = u - 35;
        if p <= x {
            return p;
        }
        let m = ((u - 12) * 32 / 255) - 23;
        let k = m + (p - m) % (u - 4);
        if k <= x {
            k
        } else {
            m
        }
    }

    fn decode(&self, b: &[u8]) -> String {
        match self.utf16 {
            None => String::from_utf8_lossy(b).into_owned(),
            Some(big) => {
                let units: Vec<u16> = b
                    .chunks_exact(2)
                    .map(|c| {
                        if big {
                            u16::from_be_bytes([c[0], c[1]])
                        } else {
                            u16::from_le_bytes([c[0], c[1]])
                        }
                    })
                    .collect();
                String::from_utf16_lossy(&units)
            }
        }
    }
}

enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a [u8]),
    Other,
}

/// The values of a record whose bytes are on hand (those cut off by the
/// end of `record` are left out).
fn record_values(record: &[u8]) -> Option<Vec<Value<'_>>> {
    let (header, mut at) = varint(record)?;
    let header = usize::try_from(header).ok()?;
    if header > record.len() {
        return None;
    }
    let mut body = header;
    let mut out = Vec::new();
    while at < header {
        let (t, n) = varint(&record[at..header])?;
        at += n;
        let len = match t {
            0 | 8 | 9 => 0,
            1 => 1,
            2 => 2,
            3 => 3,
            4 => 4,
            5 => 6,
            6 | 7 => 8,
            t if t >= 12 => usize::try_from((t - 12) / 2).ok()?,
            _ => return None,
        };
        let Some(bytes) = record.get(body..body + len) else {
            break;
        };
        body += len;
        out.push(match t {
            0 => Value::Null,
            8 => Value::Int(0),
            9 => Value::Int(1),
            1..=6 => {
                let mut v: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
                for b in bytes {
                    v = (v << 8) | i64::from(*b);
                }
                Value::Int(v)
            }
            t if t >= 13 && t % 2 == 1 => Value::Text(bytes),
            _ => Value::Other,
        });
    }
    Some(out)
}

/// A SQLite varint: its value and length (1 to 9 bytes).
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Made by `sqlite3` with 512-byte pages (so the trees have interior
    /// pages): users 1000 rows with an index, notes 3, kv 200 (WITHOUT
    /// ROWID), wide 1 (its CREATE overflows its schema page), empty 0, and
    /// a view.
    const SHOP: &[u8] = include_bytes!("../tests/fixtures/shop.sqlite");

    fn summary(info: &SqliteInfo) -> Vec<String> {
        info.tables
            .iter()
            .map(|t| {
                format!(
                    "{} {} {}{}",
                    t.kind,
                    t.name,
                    t.rows.map(|r| r.to_string()).unwrap_or("-".into()),
                    if t.without_rowid {
                        " without rowid"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }

    #[test]
    fn tables_and_their_rows_are_read_from_the_file() {
        let info = read_sqlite(SHOP, SHOP.len() as u64).unwrap();
        assert_eq!(info.page_size, 512);
        assert_eq!(info.pages as usize * 512, SHOP.len());
        assert_eq!(info.encoding, "UTF-8");
        assert!(!info.cut);
        assert_eq!(
            summary(&info),
            [
                "table users 1000",
                "table notes 3",
                "table kv 200 without rowid",
                "table wide 1",
                "table empty 0",
                "view recent -"
            ]
        );
        assert_eq!(info.indexes, ["users_by_email"]);
    }

    #[test]
    fn the_start_of_a_file_counts_what_it_holds_and_says_it_is_cut() {
        let head = &SHOP[..8 * 512];
        let info = read_sqlite(head, SHOP.len() as u64).unwrap();
        assert!(info.cut);
        assert!(
            info.tables
                .iter()
                .all(|t| t.rows.is_none() || t.name == "empty" || t.kind == "view"),
            "{:?}",
            summary(&info)
        );
    }

    #[test]
    fn hostile_or_broken_files_are_refused_or_read_bounded() {
        assert!(read_sqlite(b"not sqlite at all", 17).is_err());
        let mut bad = SHOP.to_vec();
        bad[16] = 0;
        bad[17] = 100;
        assert!(read_sqlite(&bad, bad.len() as u64)
            .unwrap_err()
            .contains("page size"));
        // A b-tree page whose right child is itself: a loop, which ends.
        let mut looped = SHOP.to_vec();
        let users_root = 2usize;
        let at = (users_root - 1) * 512;
        assert_eq!(looped[at], 0x05, "the users tree has an interior root");
        looped[at + 8..at + 12].copy_from_slice(&(users_root as u32).to_be_bytes());
        let info = read_sqlite(&looped, looped.len() as u64).unwrap();
        let users = info.tables.iter().find(|t| t.name == "users").unwrap();
        assert_eq!(users.rows, None, "not counted");
        // Garbage pages after a valid header: no panic, nothing invented.
        let mut junk = SHOP[..100].to_vec();
        junk.extend(std::iter::repeat_n(0xffu8, 4096));
        let info = read_sqlite(&junk, junk.len() as u64).unwrap();
        assert!(info.tables.is_empty());
    }

    #[test]
    fn varints_read_as_sqlite_writes_them() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81]), None);
    }
}
