//! Plain-text tables and human numbers for the CLI.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Columns padded to their widest cell, like `docker ps`. Widths count
/// characters, not bytes, so names in any script line up.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        // a newline inside a cell would break the table
        self.rows.push(
            cells
                .into_iter()
                .map(|c| c.replace(['\n', '\r'], " "))
                .collect(),
        );
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `1.4 GB`, `12 MB`, `512 B` (decimal units, as Docker prints them).
pub fn bytes(n: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n.max(0) as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn now_unix(otherwise: i64) -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(otherwise)
}

/// `3 minutes ago`, from Unix seconds.
pub fn age(unix: i64) -> String {
    let secs = (now_unix(unix) - unix).max(0);
    if secs < 60 {
        return "just now".to_string();
    }
    format!("{} ago", span(secs))
}

/// `in 89 days` (or `3 days ago` when past), from Unix seconds.
pub fn until(unix: i64) -> String {
    let secs = unix - now_unix(unix);
    if secs < 0 {
        return age(unix);
    }
    if secs < 60 {
        return "in less than a minute".to_string();
    }
    format!("in {}", span(secs))
}

/// `3 minutes`, `1 day`: a span of at least a minute, roughly.
fn span(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 30 => (s / 86_400, "day"),
        s if s < 86_400 * 365 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_with_wide_characters() {
        let mut t = Table::new(["NAME", "X"]);
        t.row(["日本語の名前".to_string(), "1".to_string()]);
        t.row(["a".to_string(), "2".to_string()]);
        let text = t.to_string();
        let starts: Vec<usize> = text
            .lines()
            .map(|l| {
                l.chars()
                    .position(|c| c == 'X' || c == '1' || c == '2')
                    .unwrap()
            })
            .collect();
        assert!(
            starts.windows(2).all(|w| w[0] == w[1]),
            "second column must align: {text}"
        );
    }

    #[test]
    fn a_newline_in_a_cell_stays_on_one_row() {
        let mut t = Table::new(["A"]);
        t.row(["x\ny".to_string()]);
        assert_eq!(t.to_string().lines().count(), 2, "header + one row");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
    }
}
