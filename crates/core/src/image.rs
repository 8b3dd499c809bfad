//! Image references, read one way everywhere: `[REGISTRY/]PATH[:TAG][@DIGEST]`,
//! as Docker reads them. The first part of the path names a registry when it
//! has a `.` or a `:` (a port) or is `localhost`, so `reg:5000/app` is the
//! repository `app` on `reg:5000` with no tag, not a tag `5000/app`.
//!
//! The UI never parses a reference: the DTOs it gets carry [`ImageRef`]s.

use std::fmt;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// The longest reference taken (Docker's limit for a name is 255).
const MAX_LEN: usize = 512;

/// One image reference, split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ImageRef {
    /// `reg.example.com:5000`, when the reference names one.
    pub registry: Option<String>,
    /// The repository path without the registry (`team/app`).
    pub path: String,
    /// Registry and path: what `docker images` calls the repository.
    pub name: String,
    pub tag: Option<String>,
    /// `sha256:…`, when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Splits a reference. The error says what is wrong with it, naming the
    /// part.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("an image reference cannot be empty".into());
        }
        if s.len() > MAX_LEN {
            return Err(format!(
                "an image reference of {} characters is too long",
                s.len()
            ));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{raw:?} holds {c:?}, which no image reference may"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let ok = d.split_once(':').is_some_and(|(algo, hex)| {
                    !algo.is_empty()
                        && algo.chars().all(|c| {
                            c.is_ascii_alphanumeric()
                                || c == '+'
                                || c == '.'
                                || c == '_'
                                || c == '-'
                        })
                        && hex.len() >= 32
                        && hex.chars().all(|c| c.is_ascii_hexdigit())
                });
                if !ok {
                    return Err(format!("{d:?} is not a digest (sha256:…)"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(format!(
                    "{t:?} is not a tag (letters, digits, '_', '.' and '-', at most 128)"
                ));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            Some(parts.remove(0).to_string())
        } else {
            None
        };
        if let Some(r) = &registry {
            let (host, port) = match r.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (r.as_str(), None),
            };
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
                || port.is_some_and(|p| p.parse::<u16>().map(|p| p == 0).unwrap_or(true))
            {
                return Err(format!("{r:?} is not a registry (host[:port])"));
            }
        }
        for p in &parts {
            let ok = !p.is_empty()
                && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                });
            if !ok {
                return Err(format!(
                    "{p:?} in {raw:?} is not a repository name (lower-case letters, digits, '.', '_' and '-')"
                ));
            }
        }
        let path = parts.join("/");
        Ok(ImageRef {
            name: match &registry {
                Some(r) => format!("{r}/{path}"),
                None => path.clone(),
            },
            registry,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The tag, or `latest` as Docker assumes.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The same repository at another tag (no digest).
    pub fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.name)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `(repository, tag)` of a reference, `latest` when it has none. A
/// reference that does not parse is split at its last `:` after the last
/// `/`, so a record written by an older Changeover still reads.
pub fn split_image(image: &str) -> (String, String) {
    match ImageRef::parse(image) {
        Ok(r) => (r.name.clone(), r.tag_or_latest().to_string()),
        Err(_) => {
            let without_digest = image.split('@').next().unwrap_or(image);
            let slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
            match without_digest[slash..].rfind(':') {
                Some(i) => (
                    without_digest[..slash + i].to_string(),
                    without_digest[slash + i + 1..].to_string(),
                ),
                None => (without_digest.to_string(), "latest".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<String>, String, Option<String>, Option<String>) {
        let r = ImageRef::parse(s).unwrap();
        assert_eq!(r.to_string(), s, "{s} prints back as written");
        (r.registry, r.path, r.tag, r.digest)
    }

    #[test]
    fn references_split_as_docker_reads_them() {
        assert_eq!(parts("nginx"), (None, "nginx".into(), None, None));
        assert_eq!(
            parts("nginx:1.27"),
            (None, "nginx".into(), Some("1.27".into()), None)
        );
        assert_eq!(
            parts("reg:5000/app"),
            (Some("reg:5000".into()), "app".into(), None, None),
            "a registry port is not a tag"
        );
        assert_eq!(
            parts("localhost:5000/team/app:v2"),
            (
                Some("localhost:5000".into()),
                "team/app".into(),
                Some("v2".into()),
                None
            )
        );
        assert_eq!(
            parts("ghcr.io/org/app"),
            (Some("ghcr.io".into()), "org/app".into(), None, None)
        );
        assert_eq!(
            parts("team/app:v1"),
            (None, "team/app".into(), Some("v1".into()), None),
            "a first part without '.' or ':' is a path, not a registry"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parts(&format!("app:v1@{d}")),
            (None, "app".into(), Some("v1".into()), Some(d.clone()))
        );
        assert_eq!(
            ImageRef::parse("reg:5000/app").unwrap().name,
            "reg:5000/app"
        );
        assert_eq!(
            ImageRef::parse("reg:5000/app").unwrap().tag_or_latest(),
            "latest"
        );
        assert_eq!(
            split_image("reg:5000/app"),
            ("reg:5000/app".into(), "latest".into())
        );
        assert_eq!(
            split_image("app:v1@sha256:abc"),
            ("app".into(), "v1".into())
        );
    }

    #[test]
    fn bad_references_say_which_part_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("App", "\"App\""),
            ("app:", "not a tag"),
            ("app:-x", "not a tag"),
            ("a b", "' '"),
            ("app@sha256:zz", "not a digest"),
            ("team//app", "not a repository name"),
            ("reg:0/app", "not a registry"),
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        assert!(ImageRef::parse(&"a".repeat(600))
            .unwrap_err()
            .contains("too long"));
    }
}
