//! Compose variable interpolation in stack-file values: `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
//! `${VAR:+other}`, `${VAR+other}`, and `$$` for a literal `$`.
//!
//! A `$` that starts no variable (`5$`, `$ 1`, `$(cmd)`) is left as written,
//! as Compose does. Defaults nest (`${A:-${B:-x}}`) at most [`MAX_NESTING`]
//! deep; deeper is an error, never a crash.
//!
//! One difference from Compose, on purpose: a variable that is not set and
//! has no default is an error, not a blank — a deploy tool should not roll
//! out `image: app:` because a shell forgot an export. `${VAR:-}` asks for a
//! blank explicitly.

use std::collections::BTreeMap;

/// How deep `${…}` may nest in defaults.
pub const MAX_NESTING: usize = 32;

/// Replaces the variables in `text`, looking them up with `lookup`.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    interpolate_at(text, lookup, 0)
}

fn interpolate_at(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "`${{…}}` nests more than {MAX_NESTING} levels deep"
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = closing_brace(r) else {
                return Err(format!("{text:?}: `${{` is not closed"));
            };
            out.push_str(&expand(&r[..end], lookup, depth)?);
            rest = &r[end + 1..];
        } else {
            let len = name_len(rest);
            if len == 0 {
                // Starts no variable: the `$` as written.
                out.push('$');
                continue;
            }
            out.push_str(&value(&rest[..len], lookup)?);
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The `}` that closes a `${`, allowing nested `${…}` in defaults.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(s.len())
}

fn value(name: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    lookup(name).ok_or_else(|| {
        format!("variable {name} is not set (export it, put it in the .env file next to the stack file, or write ${{{name}:-default}})")
    })
}

/// The inside of `${…}`.
fn expand(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<String, String> {
    let len = name_len(inner);
    if len == 0 {
        return Err(format!(
            "`${{{inner}}}` does not start with a variable name"
        ));
    }
    let (name, op) = inner.split_at(len);
    let set = lookup(name);
    let empty = set.as_deref().is_none_or(str::is_empty);
    let arg = |skip: usize| interpolate_at(&op[skip..], lookup, depth + 1);
    match op {
        "" => value(name, lookup),
        _ if op.starts_with(":-") => match set {
            Some(v) if !empty => Ok(v),
            _ => arg(2),
        },
        _ if op.starts_with('-') => match set {
            Some(v) => Ok(v),
            None => arg(1),
        },
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let colon = op.starts_with(':');
            let missing = if colon { empty } else { set.is_none() };
            if missing {
                let message = arg(if colon { 2 } else { 1 })?;
                Err(if message.is_empty() {
                    format!("variable {name} is required")
                } else {
                    format!("variable {name} is required: {message}")
                })
            } else {
                Ok(set.unwrap_or_default())
            }
        }
        _ if op.starts_with(":+") => {
            if empty {
                Ok(String::new())
            } else {
                arg(2)
            }
        }
        _ if op.starts_with('+') => {
            if set.is_none() {
                Ok(String::new())
            } else {
                arg(1)
            }
        }
        _ => Err(format!("`${{{inner}}}` is not a variable expression")),
    }
}

/// `KEY=value` lines (`.env` and `env_file`): blank lines and `#` comments
/// skipped, `export ` allowed, one level of matching quotes removed. An
/// error names the 1-based line that is not `KEY=value`.
pub fn env_lines(text: &str) -> Result<Vec<(String, String)>, usize> {
    Ok(env_entries(text)?
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect())
}

/// One `KEY=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub key: String,
    pub value: String,
    /// Its 1-based line.
    pub line: usize,
    /// Single-quoted: taken as written, never interpolated.
    pub literal: bool,
}

/// [`env_lines`], with each line's number and quoting.
pub fn env_entries(text: &str) -> Result<Vec<EnvEntry>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                let v = v.trim();
                let literal = v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'');
                let v = ['"', '\'']
                    .iter()
                    .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                    .unwrap_or(v);
                out.push(EnvEntry {
                    key: k.trim().to_string(),
                    value: v.to_string(),
                    line: i + 1,
                    literal,
                });
            }
            _ => return Err(i + 1),
        }
    }
    Ok(out)
}

/// The values of an env file with their `${…}` filled in, as Compose does:
/// from `outer` (the shell), then the file's own earlier lines;
/// single-quoted values are taken as written. An error names the line.
pub fn env_values(
    text: &str,
    outer: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let entries = env_entries(text).map_err(|l| (l, "is not KEY=value".to_string()))?;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for e in entries {
        let value = if e.literal || !e.value.contains('$') {
            e.value
        } else {
            interpolate(&e.value, &|n| outer.get(n).or_else(|| seen.get(n)).cloned())
                .map_err(|m| (e.line, format!("{}: {m}", e.key)))?
        };
        seen.insert(e.key.clone(), value.clone());
        out.push((e.key, value));
    }
    Ok(out)
}

/// Variables for a stack file in `dir`: its `.env` (interpolated, see
/// [`env_values`]), overridden by `process`.
pub fn variables(
    dotenv: Option<&str>,
    process: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, (usize, String)> {
    let process: BTreeMap<String, String> = process.into_iter().collect();
    let mut vars: BTreeMap<String, String> = match dotenv {
        Some(t) => env_values(t, &process)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    vars.extend(process);
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(text: &str) -> Result<String, String> {
        let vars: BTreeMap<&str, &str> = [("TAG", "v2"), ("EMPTY", ""), ("PORT", "8080")].into();
        interpolate(text, &|n| vars.get(n).map(|v| v.to_string()))
    }

    #[test]
    fn variables_expand_like_compose() {
        assert_eq!(with("app:${TAG}").unwrap(), "app:v2");
        assert_eq!(with("app:$TAG-x").unwrap(), "app:v2-x");
        assert_eq!(with("${MISSING:-v1}").unwrap(), "v1");
        assert_eq!(with("${EMPTY:-v1}").unwrap(), "v1");
        assert_eq!(
            with("${EMPTY-v1}").unwrap(),
            "",
            "set but empty keeps the blank"
        );
        assert_eq!(
            with("${MISSING-${PORT}}").unwrap(),
            "8080",
            "nested default"
        );
        assert_eq!(with("${TAG:+yes}${MISSING:+no}").unwrap(), "yes");
        assert_eq!(with("${EMPTY+set}").unwrap(), "set");
        assert_eq!(with("pa$$word").unwrap(), "pa$word");
        assert_eq!(with("${MISSING:-}").unwrap(), "");
    }

    #[test]
    fn missing_and_malformed_variables_are_errors() {
        assert!(with("${MISSING}")
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(with("$MISSING").unwrap_err().contains("MISSING is not set"));
        assert_eq!(
            with("${EMPTY:?needs a tag}").unwrap_err(),
            "variable EMPTY is required: needs a tag"
        );
        assert!(with("${EMPTY?x}").is_ok(), "set (even empty) satisfies `?`");
        assert!(with("${TAG").unwrap_err().contains("not closed"));
        assert_eq!(with("cost: 5$").unwrap(), "cost: 5$", "a lone `$` stays");
        assert_eq!(with("$(date) and $ 1").unwrap(), "$(date) and $ 1");
        let deep = format!("{}x{}", "${A:-".repeat(5000), "}".repeat(5000));
        assert!(with(&deep)
            .unwrap_err()
            .contains("nests more than 32 levels"));
        let fine = format!("{}x{}", "${A:-".repeat(20), "}".repeat(20));
        assert_eq!(with(&fine).unwrap(), "x");
        assert!(with("${1X}").is_err());
        assert!(with("${TAG/x/y}")
            .unwrap_err()
            .contains("not a variable expression"));
    }

    #[test]
    fn env_files_read_key_value_lines() {
        let text = "# comment\n\nA=1\nexport B = \"two words\"\nC='x=y'\n";
        assert_eq!(
            env_lines(text).unwrap(),
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string()),
                ("C".to_string(), "x=y".to_string())
            ]
        );
        assert_eq!(env_lines("A=1\nnot a pair\n"), Err(2));
        let vars = variables(
            Some("TAG=v1\nPORT=1\nURL=http://${HOST:-localhost}:${PORT}/\nRAW='${PORT}'\nHOME_DIR=$HOME/x\n"),
            [
                ("TAG".to_string(), "v9".to_string()),
                ("HOME".to_string(), "/home/me".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(vars["TAG"], "v9", "the process environment wins over .env");
        assert_eq!(vars["PORT"], "1");
        assert_eq!(
            vars["URL"], "http://localhost:1/",
            "earlier lines and defaults"
        );
        assert_eq!(vars["RAW"], "${PORT}", "single quotes keep it as written");
        assert_eq!(vars["HOME_DIR"], "/home/me/x", "the shell's");
        assert_eq!(
            variables(Some("A=1\nB=${NOPE}\n"), []).unwrap_err(),
            (2, "B: variable NOPE is not set (export it, put it in the .env file next to the stack file, or write ${NOPE:-default})".to_string())
        );
    }
}
