//! Registries, read without I/O: which registry a reference names and how
//! its API is reached, what `docker login` left in `~/.docker/config.json`,
//! the challenges and pages a registry answers with, and the order tags are
//! shown in (semantic versions first, newest first; then the rest by date).
//!
//! The client that talks to registries is `changeover_docker::registry`;
//! credentials entered in Changeover are in the OS keyring
//! (`changeover_application::registries`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::image::ImageRef;

/// The registry a reference without one names, as Docker reads it.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key `docker login` files Docker Hub's credentials under.
const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A repository on a registry, as its API names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// The registry as users write it (`docker.io`, `reg.example:5000`).
    pub host: String,
    /// The repository path on it (`library/nginx`, `team/app`).
    pub path: String,
}

impl Repository {
    /// The repository of `image`: Docker Hub when it names no registry,
    /// official images under `library/`.
    pub fn of(image: &ImageRef) -> Self {
        let host = registry_host(image.registry.as_deref());
        let path = if host == DOCKER_HUB && !image.path.contains('/') {
            format!("library/{}", image.path)
        } else {
            image.path.clone()
        };
        Self { host, path }
    }

    /// Where its registry's API answers (`host[:port]`).
    pub fn api_host(&self) -> &str {
        api_host(&self.host)
    }
}

/// A registry host as users write it, lower-cased; `index.docker.io` and
/// the like are Docker Hub.
pub fn registry_host(registry: Option<&str>) -> String {
    let host = registry.unwrap_or(DOCKER_HUB).trim().to_ascii_lowercase();
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches("/v2")
        .to_string();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

/// Where the registry `host` answers its API.
pub fn api_host(host: &str) -> &str {
    if host == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        host
    }
}

/// Checks a registry host a user typed (`reg.example.com[:port]`); the
/// host as stored.
pub fn parse_host(raw: &str) -> Result<String, String> {
    let host = registry_host(Some(raw));
    if host.is_empty() {
        return Err("a registry host cannot be empty".into());
    }
    if host.len() > 255 {
        return Err(format!(
            "a registry host of {} characters is too long",
            host.len()
        ));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (host.as_str(), None),
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if !name_ok || host.contains('/') {
        return Err(format!(
            "{raw:?} is not a registry host (a name such as reg.example.com, with an optional :port)"
        ));
    }
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!("{raw:?}: {p:?} is not a port (1 to 65535)"));
        }
    }
    Ok(host)
}

/// Whether plain HTTP is used for `host`: loopback registries only, as the
/// Docker daemon itself does without an `insecure-registries` entry.
pub fn plain_http(host: &str) -> bool {
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    name == "localhost" || name == "[::1]" || name.starts_with("127.")
}

/// Where credentials for a registry come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[ts(export)]
pub enum CredentialSource {
    /// Entered in Changeover; in the OS keyring.
    Keyring,
    /// `auths` in the Docker CLI's config.json (what `docker login` wrote
    /// without a credential store).
    DockerConfig,
    /// A `docker-credential-HELPER` (`credsStore` or `credHelpers`).
    DockerHelper { helper: String },
}

/// A registry with credentials, as `registry ls` lists it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RegistryLogin {
    pub host: String,
    pub source: CredentialSource,
    /// When the source says it without asking a helper.
    pub username: Option<String>,
}

/// What config.json says for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigCredential {
    /// `auths.HOST.auth` (base64 of `user:password`) or its parts.
    Inline { username: String, password: String },
    /// `auths.HOST.identitytoken`: an OAuth refresh token.
    IdentityToken { username: String, token: String },
    /// Ask `docker-credential-HELPER get`.
    Helper(String),
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The Docker CLI's config.json, as far as registries go.
#[derive(Debug, Default)]
pub struct DockerConfig {
    /// Registry host (normalised) → what is filed for it.
    auths: BTreeMap<String, RawAuth>,
    creds_store: Option<String>,
    cred_helpers: BTreeMap<String, String>,
}

/// The longest config.json read.
const MAX_CONFIG: usize = 4 * 1024 * 1024;

impl DockerConfig {
    /// Reads config.json's text; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_CONFIG {
            return Err(format!("it is larger than {MAX_CONFIG} bytes"));
        }
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let norm = |k: &str| registry_host(Some(k));
        Ok(Self {
            auths: raw.auths.into_iter().map(|(k, v)| (norm(&k), v)).collect(),
            creds_store: raw.creds_store.filter(|s| !s.trim().is_empty()),
            cred_helpers: raw
                .cred_helpers
                .into_iter()
                .map(|(k, v)| (norm(&k), v))
                .collect(),
        })
    }

    /// What it holds for `host`, in Docker's order: a `credHelpers` entry,
    /// then `credsStore`, then `auths`.
    pub fn lookup(&self, host: &str) -> Result<Option<ConfigCredential>, String> {
        let host = registry_host(Some(host));
        if let Some(helper) = self.cred_helpers.get(&host) {
            return Ok(Some(ConfigCredential::Helper(helper.clone())));
        }
        if let Some(store) = &self.creds_store {
            return Ok(Some(ConfigCredential::Helper(store.clone())));
        }
        let Some(entry) = self.auths.get(&host) else {
            return Ok(None);
        };
        if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(ConfigCredential::IdentityToken {
                username: entry.username.clone().unwrap_or_default(),
                token: token.clone(),
            }));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(ConfigCredential::Inline {
                username: u.clone(),
                password: p.clone(),
            }));
        }
        let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("auths.{host}.auth is not base64 of user:password"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("auths.{host}.auth holds no ':' between user and password"))?;
        Ok(Some(ConfigCredential::Inline {
            username: username.to_string(),
            password: password.to_string(),
        }))
    }

    /// Every host it has something for, with where it comes from.
    pub fn logins(&self) -> Vec<RegistryLogin> {
        let mut out: BTreeMap<String, RegistryLogin> = BTreeMap::new();
        for (host, entry) in &self.auths {
            let source = match &self.creds_store {
                Some(store) => CredentialSource::DockerHelper {
                    helper: store.clone(),
                },
                None => CredentialSource::DockerConfig,
            };
            let username = match self.lookup(host) {
                Ok(Some(ConfigCredential::Inline { username, .. }))
                | Ok(Some(ConfigCredential::IdentityToken { username, .. })) => Some(username),
                _ => entry.username.clone(),
            };
            out.insert(
                host.clone(),
                RegistryLogin {
                    host: host.clone(),
                    source,
                    username: username.filter(|u| !u.is_empty()),
                },
            );
        }
        for (host, helper) in &self.cred_helpers {
            out.insert(
                host.clone(),
                RegistryLogin {
                    host: host.clone(),
                    source: CredentialSource::DockerHelper {
                        helper: helper.clone(),
                    },
                    username: None,
                },
            );
        }
        out.into_values().collect()
    }
}

/// The server URL a credential helper is asked about for `host` (Docker
/// Hub's is its legacy index URL, as `docker login` files it).
pub fn helper_server_url(host: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_CONFIG_KEY.to_string()
    } else {
        host.to_string()
    }
}

/// How a registry asks to be authenticated (its `WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    /// The token flow: ask `realm` for a token for `service` and `scope`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Reads a `WWW-Authenticate` value; `None` for a scheme it does not know.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let mut realm = None;
            let mut service = None;
            let mut scope = None;
            for (k, v) in auth_params(params) {
                match k.to_ascii_lowercase().as_str() {
                    "realm" => realm = Some(v),
                    "service" => service = Some(v),
                    "scope" => scope = Some(v),
                    _ => {}
                }
            }
            Some(Challenge::Bearer {
                realm: realm?,
                service,
                scope,
            })
        }
        _ => None,
    }
}

/// `k="v", k2=v2` pairs (quoted values may hold commas).
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The next page of a paginated answer, from its `Link` header
/// (`</v2/app/tags/list?last=x&n=100>; rel="next"`).
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().trim_start_matches("rel=").trim_matches('"') == "next");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// A rate limit a registry announced (Docker Hub's `ratelimit-*` headers,
/// `200;w=21600`), or a 429's `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct RateLimit {
    #[ts(type = "number | null")]
    pub limit: Option<u64>,
    #[ts(type = "number | null")]
    pub remaining: Option<u64>,
    /// The window the limit counts over, in seconds.
    #[ts(type = "number | null")]
    pub window_s: Option<u64>,
    /// Seconds to wait before asking again (after a 429).
    #[ts(type = "number | null")]
    pub retry_after_s: Option<u64>,
}

/// Reads Docker Hub's `ratelimit-limit` / `ratelimit-remaining` values
/// (`100;w=21600`) and `Retry-After` (seconds); `None` when none is there.
pub fn rate_limit(
    limit: Option<&str>,
    remaining: Option<&str>,
    retry_after: Option<&str>,
) -> Option<RateLimit> {
    let count = |v: &str| v.split(';').next()?.trim().parse::<u64>().ok();
    let window = |v: &str| {
        v.split(';')
            .find_map(|p| p.trim().strip_prefix("w="))
            .and_then(|w| w.parse::<u64>().ok())
    };
    let r = RateLimit {
        limit: limit.and_then(count),
        remaining: remaining.and_then(count),
        window_s: limit.and_then(window),
        retry_after_s: retry_after.and_then(|v| v.trim().parse::<u64>().ok()),
    };
    (r.limit.is_some() || r.remaining.is_some() || r.retry_after_s.is_some()).then_some(r)
}

/// One tag of a repository, from the daemon, the registry or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ImageTag {
    pub tag: String,
    /// The manifest digest in the registry (`sha256:…`), when asked.
    pub digest: Option<String>,
    /// The image ID on the daemon, when it is there.
    pub local_id: Option<String>,
    /// When the image was built (Unix seconds), when known.
    #[ts(type = "number | null")]
    pub created: Option<i64>,
    /// Its size in bytes, when known.
    #[ts(type = "number | null")]
    pub size: Option<u64>,
    /// On the daemon.
    pub local: bool,
    /// Listed by the registry.
    pub in_registry: bool,
    /// On the daemon, and the registry's tag points to another image now
    /// (pushed since it was pulled): a pull brings the newer one.
    #[serde(default)]
    pub newer_in_registry: bool,
}

/// A repository's tags, merged from the daemon and its registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct ImageTags {
    /// The repository as written (`reg:5000/app`).
    pub repository: String,
    /// The registry host asked.
    pub registry: String,
    pub tags: Vec<ImageTag>,
    /// Why the registry's tags are missing (unreachable, unauthorized, …):
    /// the local ones are still listed.
    pub registry_problem: Option<String>,
    pub rate_limit: Option<RateLimit>,
}

/// A tag read as a semantic version (`1.2.3`, `v1.2`, `1.2.3-rc.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Pre-release identifiers (`rc.1`), empty for a release.
    pub pre: Vec<String>,
}

impl Version {
    /// `None` for a tag that is not a version (`latest`, `main-abc123`).
    pub fn parse(tag: &str) -> Option<Self> {
        let t = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
        let (core, pre) = match t.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (t, None),
        };
        // Build metadata is ignored, as semver says.
        let core = core.split('+').next().unwrap_or(core);
        let nums: Vec<&str> = core.split('.').collect();
        if nums.is_empty() || nums.len() > 3 {
            return None;
        }
        let mut parsed = [0u64; 3];
        for (i, n) in nums.iter().enumerate() {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 18 {
                return None;
            }
            parsed[i] = n.parse().ok()?;
        }
        let pre: Vec<String> = match pre {
            Some(p) => {
                let p = p.split('+').next().unwrap_or(p);
                if p.is_empty() {
                    return None;
                }
                p.split('.').map(str::to_string).collect()
            }
            None => Vec::new(),
        };
        Some(Self {
            major: parsed[0],
            minor: parsed[1],
            patch: parsed[2],
            pre,
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A release is newer than its pre-releases.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders tags as the picker shows them: versions first, newest first;
/// then the others, newest first by date (those without one last), then
/// by name.
pub fn sort_tags(tags: &mut [ImageTag]) {
    tags.sort_by(
        |a, b| match (Version::parse(&a.tag), Version::parse(&b.tag)) {
            (None, None) => b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)),
            _ => compare_tags(&a.tag, &b.tag),
        },
    );
}

/// [`sort_tags`]' order for tag names alone (no dates).
pub fn compare_tags(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| a.cmp(b))
}

/// Whether an image whose `RepoDigests` are `repo_digests` came from the
/// manifest `digest` of the repository `name` (`reg:5000/app`).
pub fn pulled_from(repo_digests: &[String], name: &str, digest: &str) -> bool {
    repo_digests
        .iter()
        .any(|d| d.strip_prefix(name).and_then(|r| r.strip_prefix('@')) == Some(digest))
}

/// One tag name from a registry's list, checked as Docker checks tags (a
/// hostile registry's list is not shown as is).
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One layer of a pull, as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct PullLayer {
    /// The layer's short ID.
    pub id: String,
    /// The daemon's word for where it is (`Downloading`, `Extracting`,
    /// `Pull complete`, `Already exists`).
    pub status: String,
    /// Bytes done and in all, while it downloads or extracts.
    #[ts(type = "number | null")]
    pub current: Option<u64>,
    #[ts(type = "number | null")]
    pub total: Option<u64>,
    /// Done (downloaded and extracted, or there already).
    pub done: bool,
}

/// A pull's progress so far, per layer in the order they were announced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct PullProgress {
    /// The reference pulled.
    pub reference: String,
    pub layers: Vec<PullLayer>,
    /// The daemon's last line that is not about a layer (`Digest: …`,
    /// `Status: Downloaded newer image …`).
    pub status: Option<String>,
}

impl PullProgress {
    pub fn new(reference: &str) -> Self {
        Self {
            reference: reference.to_string(),
            ..Self::default()
        }
    }

    /// Takes one progress message of the daemon in; at most `MAX_LAYERS`
    /// layers are kept (a hostile daemon's stream stays bounded).
    pub fn update(
        &mut self,
        id: Option<&str>,
        status: &str,
        current: Option<i64>,
        total: Option<i64>,
    ) {
        const MAX_LAYERS: usize = 512;
        let status: String = status.chars().take(200).collect();
        let Some(id) = id.filter(|i| !i.is_empty() && *i != self.reference_tag()) else {
            self.status = Some(status);
            return;
        };
        let done = matches!(status.as_str(), "Pull complete" | "Already exists");
        let (current, total) = (
            current.and_then(|c| u64::try_from(c).ok()),
            total.and_then(|t| u64::try_from(t).ok()).filter(|t| *t > 0),
        );
        if let Some(l) = self.layers.iter_mut().find(|l| l.id == id) {
            l.done = l.done || done;
            l.status = status;
            if current.is_some() || total.is_some() {
                l.current = current;
                l.total = total;
            }
        } else if self.layers.len() < MAX_LAYERS {
            self.layers.push(PullLayer {
                id: id.chars().take(80).collect(),
                status,
                current,
                total,
                done,
            });
        }
    }

    /// The tag the daemon names in its first line (`Pulling from x`'s id).
    fn reference_tag(&self) -> &str {
        self.reference
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or("latest")
    }

    /// (layers done, layers in all).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.layers.iter().filter(|l| l.done).count(),
            self.layers.len(),
        )
    }

    /// Bytes done and in all over the layers whose size is known.
    pub fn bytes(&self) -> (u64, u64) {
        self.layers
            .iter()
            .filter_map(|l| {
                l.total.map(|t| {
                    (
                        if l.done {
                            t
                        } else {
                            l.current.unwrap_or(0).min(t)
                        },
                        t,
                    )
                })
            })
            .fold((0, 0), |(a, b), (c, t)| (a + c, b + t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &str, created: Option<i64>) -> ImageTag {
        ImageTag {
            tag: t.into(),
            digest: None,
            local_id: None,
            created,
            size: None,
            local: false,
            in_registry: true,
            newer_in_registry: false,
        }
    }

    #[test]
    fn versions_come_first_newest_first_then_the_rest_by_date() {
        let mut tags = vec![
            tag("latest", Some(50)),
            tag("1.2.0", None),
            tag("v1.10.0", None),
            tag("1.10.0-rc.2", None),
            tag("1.10.0-rc.10", None),
            tag("main-abc", Some(90)),
            tag("1.9", None),
            tag("old", None),
        ];
        sort_tags(&mut tags);
        let order: Vec<&str> = tags.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(
            order,
            [
                "v1.10.0",
                "1.10.0-rc.10",
                "1.10.0-rc.2",
                "1.9",
                "1.2.0",
                "main-abc",
                "latest",
                "old"
            ]
        );
        assert!(Version::parse("latest").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
        assert!(Version::parse("1..2").is_none());
        assert!(Version::parse("1.2.3-").is_none());
    }

    #[test]
    fn references_name_their_registry_as_docker_does() {
        let r = Repository::of(&ImageRef::parse("nginx:1.27").unwrap());
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("docker.io", "library/nginx")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Repository::of(&ImageRef::parse("127.0.0.1:5000/team/app:v1").unwrap());
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        assert!(plain_http("127.0.0.1:5000"));
        assert!(plain_http("localhost:5000"));
        assert!(!plain_http("reg.example.com"));
        assert_eq!(
            registry_host(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(
            parse_host("Reg.Example.com:5000").unwrap(),
            "reg.example.com:5000"
        );
        for bad in ["", "reg/x", "reg:0", "reg:99999", "-reg", "a b"] {
            assert!(parse_host(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn docker_config_credentials_are_found_in_dockers_order() {
        let config = DockerConfig::parse(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "reg.example:5000": {"username": "bob", "password": "pw"},
                "tok.example": {"username": "ann", "identitytoken": "refresh"}
              },
              "credHelpers": {"gcr.io": "gcloud"}}"#,
        )
        .unwrap();
        assert_eq!(
            config.lookup("docker.io").unwrap(),
            Some(ConfigCredential::Inline {
                username: "user".into(),
                password: "pa:ss".into()
            }),
            "a password may hold ':'"
        );
        assert_eq!(
            config.lookup("reg.example:5000").unwrap(),
            Some(ConfigCredential::Inline {
                username: "bob".into(),
                password: "pw".into()
            })
        );
        assert!(matches!(
            config.lookup("tok.example").unwrap(),
            Some(ConfigCredential::IdentityToken { .. })
        ));
        assert_eq!(
            config.lookup("gcr.io").unwrap(),
            Some(ConfigCredential::Helper("gcloud".into()))
        );
        assert_eq!(config.lookup("other.example").unwrap(), None);
        let hosts: Vec<String> = config.logins().into_iter().map(|l| l.host).collect();
        assert_eq!(
            hosts,
            ["docker.io", "gcr.io", "reg.example:5000", "tok.example"]
        );

        let store =
            DockerConfig::parse(r#"{"auths": {"a.example": {}}, "credsStore": "pass"}"#).unwrap();
        assert_eq!(
            store.lookup("anything.example").unwrap(),
            Some(ConfigCredential::Helper("pass".into())),
            "a credsStore answers for every registry"
        );
        assert!(DockerConfig::parse("{not json").is_err());
        let bad =
            DockerConfig::parse(r#"{"auths": {"x.example": {"auth": "bm9jb2xvbg=="}}}"#).unwrap();
        assert!(bad.lookup("x.example").unwrap_err().contains("no ':'"));
        assert!(DockerConfig::parse(&" ".repeat(5 * 1024 * 1024)).is_err());
    }

    #[test]
    fn challenges_pages_and_rate_limits_are_read() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            next_link(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(
            rate_limit(Some("100;w=21600"), Some("76;w=21600"), None),
            Some(RateLimit {
                limit: Some(100),
                remaining: Some(76),
                window_s: Some(21600),
                retry_after_s: None
            })
        );
        assert_eq!(rate_limit(None, None, None), None);
        let digests = [
            "reg:5000/app@sha256:aa".to_string(),
            "other@sha256:bb".to_string(),
        ];
        assert!(pulled_from(&digests, "reg:5000/app", "sha256:aa"));
        assert!(
            !pulled_from(&digests, "reg:5000/app", "sha256:bb"),
            "another repository's"
        );
        assert!(!pulled_from(&digests, "reg:5000/ap", "sha256:aa"));
        assert!(valid_tag("1.2.3-rc.1"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("a/b"));
    }

    #[test]
    fn pull_progress_follows_each_layer_to_its_end() {
        let mut p = PullProgress::new("reg:5000/app:1.0");
        p.update(Some("1.0"), "Pulling from app", None, None);
        p.update(Some("a1"), "Pulling fs layer", None, None);
        p.update(Some("b2"), "Already exists", None, None);
        p.update(Some("a1"), "Downloading", Some(50), Some(200));
        assert_eq!(p.counts(), (1, 2));
        assert_eq!(p.bytes(), (50, 200));
        p.update(Some("a1"), "Download complete", None, None);
        assert_eq!(
            p.counts(),
            (1, 2),
            "downloaded is not done: it is extracted next"
        );
        p.update(Some("a1"), "Extracting", Some(200), Some(200));
        p.update(Some("a1"), "Pull complete", None, None);
        p.update(None, "Digest: sha256:abc", None, None);
        assert_eq!(p.counts(), (2, 2));
        assert_eq!(p.bytes(), (200, 200));
        assert_eq!(p.status.as_deref(), Some("Digest: sha256:abc"));
        for i in 0..600 {
            p.update(Some(&format!("l{i}")), "Waiting", None, None);
        }
        assert_eq!(p.layers.len(), 512, "a hostile stream stays bounded");
    }
}
