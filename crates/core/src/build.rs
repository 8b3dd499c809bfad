//! `build:` of a stack service, read without I/O: its settings, the
//! `.dockerignore` rules that decide what of the context is sent, and the
//! tag a build gets from its content.
//!
//! A built image is tagged `REPO:b-HASH`, where HASH covers the context as
//! sent and every build setting: the same context builds once, and every
//! release names the image it ran, so a rollback runs exactly that one.
//! REPO is the service's `image:` name when it has one, else
//! `STACK-SERVICE`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// How a service's image is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct BuildSpec {
    /// The context folder, as written (relative to the stack file).
    pub context: String,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// `--build-arg`s.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// The stage to build (`--target`).
    pub target: Option<String>,
}

impl BuildSpec {
    /// The Dockerfile's path in the context.
    pub fn dockerfile(&self) -> &str {
        self.dockerfile.as_deref().unwrap_or("Dockerfile")
    }
}

/// The tag of an image built from a context and settings whose digest is
/// `hash` (hex).
pub fn build_tag(hash: &str) -> String {
    format!("b-{}", &hash[..hash.len().min(16)])
}

/// The repository a service's built image goes to.
pub fn build_repository(stack: &str, service: &str, image: Option<&str>) -> String {
    match image.and_then(|i| crate::image::ImageRef::parse(i).ok()) {
        Some(r) => r.name,
        None => format!("{stack}-{service}").to_ascii_lowercase(),
    }
}

/// The images a Dockerfile builds from, as the daemon will pull them: each
/// `FROM` (its `--platform` skipped, `scratch` and earlier stages' names
/// left out) and each `COPY --from=` / `RUN --mount=…,from=` naming an
/// image. `$NAME` and `${NAME}` (with `:-` defaults) are filled from the
/// build args and the `ARG` defaults before the first `FROM`, as Docker
/// does; a reference still holding a `$` is left out (nothing could be
/// looked up for it). Only the registries of these images are given the
/// user's credentials.
pub fn base_images(dockerfile: &str, args: &BTreeMap<String, String>) -> Vec<String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut seen_from = false;
    let mut out: Vec<String> = Vec::new();
    let keep = |image: String, stages: &[String], out: &mut Vec<String>| {
        let lower = image.to_ascii_lowercase();
        if image.is_empty()
            || image.contains('$')
            || lower == "scratch"
            || stages.contains(&lower)
            || image.chars().all(|c| c.is_ascii_digit())
            || out.contains(&image)
        {
            return;
        }
        out.push(image);
    };
    for line in instructions(dockerfile) {
        let mut words = line.split_whitespace();
        let Some(op) = words.next() else { continue };
        let rest: Vec<&str> = words.collect();
        match op.to_ascii_uppercase().as_str() {
            "ARG" if !seen_from => {
                for a in &rest {
                    let (name, default) = match a.split_once('=') {
                        Some((n, d)) => (n, Some(d.trim_matches('"'))),
                        None => (*a, None),
                    };
                    let value = args
                        .get(name)
                        .cloned()
                        .or_else(|| default.map(|d| substitute(d, &values)));
                    if let Some(v) = value {
                        values.insert(name.to_string(), v);
                    }
                }
            }
            "FROM" => {
                seen_from = true;
                let plain: Vec<&str> = rest
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                if let Some(image) = plain.first() {
                    keep(substitute(image, &values), &stages, &mut out);
                }
                if plain.len() >= 3 && plain[1].eq_ignore_ascii_case("as") {
                    stages.push(plain[2].to_ascii_lowercase());
                }
            }
            "COPY" | "ADD" | "RUN" => {
                for w in &rest {
                    if let Some(from) = w.strip_prefix("--from=") {
                        keep(substitute(from, &values), &stages, &mut out);
                    } else if let Some(mount) = w.strip_prefix("--mount=") {
                        for part in mount.split(',') {
                            if let Some(from) = part.strip_prefix("from=") {
                                keep(substitute(from, &values), &stages, &mut out);
                            }
                        }
                    } else if !w.starts_with("--") {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A Dockerfile's instructions, one string each: comments and blank lines
/// dropped, lines ending in `\` joined with the next.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        if !line.starts_with('#') {
            current.push_str(line);
        }
        out.push(std::mem::take(&mut current));
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` filled from `values`; an
/// unknown name is left as written.
fn substitute(word: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, default, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => {
                    let body = &inner[..end];
                    match body.split_once(":-") {
                        Some((n, d)) => (n, Some(d), end + 2),
                        None => (body, None, end + 2),
                    }
                }
                None => ("", None, 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], None, n)
        };
        match values.get(name).map(String::as_str).or(default) {
            Some(v) if !name.is_empty() => out.push_str(v),
            _ => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The rules of a `.dockerignore`, as Docker reads them: one pattern per
/// line (`#` comments and blank lines skipped), paths relative to the
/// context, `*`, `?`, `[…]` within a name, `**` across folders, and `!`
/// for an exception; the last rule that matches decides. A folder that is
/// excluded excludes what is in it (unless an exception names something
/// inside).
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = clean(pattern);
            if cleaned.is_empty() {
                continue;
            }
            rules.push((exception, cleaned.split('/').map(str::to_string).collect()));
        }
        Self { rules }
    }

    /// Whether some exception could name something under `dir` (then the
    /// folder is walked even when it is excluded).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(e, _)| *e)
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub fn excluded(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut excluded = false;
        for (exception, pattern) in &self.rules {
            // A pattern matches the path itself or any folder above it.
            let hit = (1..=parts.len()).any(|n| matches(pattern, &parts[..n]));
            if hit {
                excluded = !exception;
            }
        }
        excluded
    }
}

/// `./a//b/` → `a/b`; a leading `/` means the context's root.
fn clean(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the pattern's segments match the path's, `**` spanning any
/// number of segments.
fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, path_rest)) => {
                segment(first.as_bytes(), p.as_bytes()) && matches(rest, path_rest)
            }
            None => false,
        },
    }
}

/// One name against one pattern segment (`*`, `?`, `[a-z]`, `[^x]`, `\`).
fn segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && segment(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return !s.is_empty() && s[0] == b'[' && segment(rest, &s[1..]);
            };
            let (class, after) = (&rest[..end], &rest[end + 1..]);
            let Some((&c, s_rest)) = s.split_first() else {
                return false;
            };
            let (negated, class) = match class.split_first() {
                Some((b'^' | b'!', c)) => (true, c),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negated && segment(after, s_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            !s.is_empty() && s[0] == rest[0] && segment(&rest[1..], &s[1..])
        }
        Some((&c, rest)) => !s.is_empty() && s[0] == c && segment(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_images_are_read_as_docker_reads_a_dockerfile() {
        let args: BTreeMap<String, String> = [("TAG".to_string(), "2.1".to_string())]
            .into_iter()
            .collect();
        let file = "# syntax=docker/dockerfile:1\n\
            ARG REG=reg.example:5000\n\
            ARG TAG=1.0\n\
            FROM --platform=linux/amd64 ${REG}/team/builder:$TAG AS build\n\
            RUN --mount=type=cache,from=reg.example:5000/cache:1,target=/c make\n\
            FROM build AS test\n\
            FROM scratch\n\
            COPY --from=build /app /app\n\
            COPY --from=0 /a /a\n\
            COPY --chown=1:1 --from=busybox:1.36 \\\n  /bin/sh /sh\n\
            FROM ${UNKNOWN}/x\n\
            from alpine:3.20 as Final\n\
            COPY --from=final /x /y\n";
        assert_eq!(
            base_images(file, &args),
            vec![
                "reg.example:5000/team/builder:2.1",
                "reg.example:5000/cache:1",
                "busybox:1.36",
                "alpine:3.20",
            ]
        );
        assert_eq!(
            base_images("FROM ${X:-ghcr.io/a/b}:1\n", &BTreeMap::new()),
            vec!["ghcr.io/a/b:1"]
        );
        assert!(base_images("", &BTreeMap::new()).is_empty());
    }

    #[test]
    fn dockerignore_rules_read_as_docker_reads_them() {
        let ignore = Ignore::parse(
            "# build output\ntarget\n*.log\n**/node_modules\n!keep.log\n/secret/*.key\ndocs/**/*.png\n",
        );
        for (path, out) in [
            ("target", true),
            ("target/debug/app", true),
            ("src/main.rs", false),
            ("app.log", true),
            ("keep.log", false),
            ("sub/app.log", false),
            ("node_modules/x.js", true),
            ("web/node_modules/y/z.js", true),
            ("secret/a.key", true),
            ("secret/a.pub", false),
            ("docs/a/b/c.png", true),
            ("docs/c.png", true),
            ("docs/c.md", false),
        ] {
            assert_eq!(ignore.excluded(path), out, "{path}");
        }
        let classes = Ignore::parse("file[0-9].txt\n[!a]*.tmp\nb?d\n");
        assert!(classes.excluded("file3.txt"));
        assert!(!classes.excluded("filex.txt"));
        assert!(classes.excluded("x.tmp"));
        assert!(!classes.excluded("a.tmp"));
        assert!(classes.excluded("bad"));
        assert!(!Ignore::parse("").excluded("anything"));
    }

    #[test]
    fn a_build_is_tagged_from_its_content_in_the_services_repository() {
        assert_eq!(build_tag("0123456789abcdef0123"), "b-0123456789abcdef");
        assert_eq!(build_repository("shop", "Web", None), "shop-web");
        assert_eq!(
            build_repository("shop", "web", Some("reg:5000/team/web:dev")),
            "reg:5000/team/web"
        );
    }
}
