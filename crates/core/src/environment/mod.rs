//! Environments: the Docker daemons Changeover can talk to, found with zero
//! configuration the way the Docker CLI finds them.
//!
//! Order of precedence for the default environment, as the Docker CLI does it:
//! `DOCKER_HOST`, then `DOCKER_CONTEXT`, then `currentContext` in the CLI's
//! `config.json`, then the local default socket. Every Docker CLI context
//! (`contexts/meta/*/meta.json`) is listed as an environment of its own.
//!
//! A bad address never hides the others: an environment whose address does not
//! parse is listed with its [`Problem`], so the user can still pick another.
//!
//! Environments the user added in Changeover join the list ([`added`]);
//! their settings file is read and written by the application layer.
//!
//! Left out: connecting (that is `changeover-docker`) and any file I/O
//! beyond reading the Docker CLI's own configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::{Problem, ProblemCode};

pub mod added;

/// The name Docker gives the environment that `DOCKER_HOST` or the default
/// socket describes.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// The local daemon's socket when nothing says otherwise.
pub const DEFAULT_UNIX_SOCKET: &str = "/var/run/docker.sock";

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[ts(export)]
pub enum Endpoint {
    /// A local Unix socket.
    Unix { path: String },
    /// TCP, optionally with TLS (client certificate and the daemon's CA).
    Tcp {
        host: String,
        port: u16,
        tls: Option<Tls>,
    },
    /// `ssh://[user@]host[:port]`, run through the system's `ssh`.
    Ssh { destination: String },
    /// A Windows named pipe.
    NamedPipe { path: String },
}

/// Where an environment's TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "from", rename_all = "camelCase")]
#[ts(export)]
pub enum Tls {
    /// Files the Docker CLI uses (`DOCKER_CERT_PATH`, a context's TLS folder).
    Files { files: TlsFiles },
    /// An environment added in Changeover: the CA and client certificate in
    /// its settings, the client key in the OS keyring.
    Stored,
}

/// Client certificate files for a TLS daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct TlsFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix { path } => write!(f, "unix://{path}"),
            Endpoint::Tcp { host, port, .. } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Ssh { destination } => write!(f, "ssh://{destination}"),
            Endpoint::NamedPipe { path } => write!(f, "npipe://{path}"),
        }
    }
}

impl Endpoint {
    /// The host name people use to reach what the daemon's host publishes
    /// (links, preview URLs): `localhost` for a local socket, else the
    /// address's host.
    pub fn link_host(&self) -> String {
        match self {
            Endpoint::Unix { .. } | Endpoint::NamedPipe { .. } => "localhost".into(),
            Endpoint::Tcp { host, .. } => host.clone(),
            Endpoint::Ssh { destination } => {
                let host = destination.rsplit('@').next().unwrap_or(destination);
                match host.strip_prefix('[') {
                    Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
                    None => host.split(':').next().unwrap_or(host).to_string(),
                }
            }
        }
    }

    /// Parses a Docker host address (`DOCKER_HOST` syntax). The error names the
    /// value and says what a valid one looks like.
    pub fn parse(raw: &str) -> Result<Endpoint, String> {
        let value = raw.trim();
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(format!(
                "\"{raw}\" has no scheme; use unix:///path/to/docker.sock, tcp://host:port or ssh://user@host"
            ));
        };
        match scheme {
            "unix" => {
                if !rest.starts_with('/') {
                    return Err(format!(
                        "\"{raw}\" needs an absolute socket path, like unix:///var/run/docker.sock"
                    ));
                }
                Ok(Endpoint::Unix {
                    path: rest.to_string(),
                })
            }
            "tcp" | "http" | "https" => {
                let authority = rest.trim_end_matches('/');
                if authority.is_empty() || authority.contains('/') {
                    return Err(format!("\"{raw}\" should look like tcp://host:port"));
                }
                let (host, port) = split_host_port(authority, raw)?;
                let port = port.unwrap_or(if scheme == "https" { 2376 } else { 2375 });
                Ok(Endpoint::Tcp {
                    host,
                    port,
                    tls: None,
                })
            }
            "ssh" => {
                let destination = rest.trim_end_matches('/');
                let host_part = destination.rsplit('@').next().unwrap_or_default();
                if host_part.is_empty() || destination.contains('/') {
                    return Err(format!("\"{raw}\" should look like ssh://user@host[:port]"));
                }
                split_host_port(host_part, raw)?;
                Ok(Endpoint::Ssh {
                    destination: destination.to_string(),
                })
            }
            "npipe" => Ok(Endpoint::NamedPipe {
                path: rest.to_string(),
            }),
            other => Err(format!(
                "\"{raw}\" uses the unsupported scheme \"{other}\"; use unix://, tcp:// or ssh://"
            )),
        }
    }
}

fn split_host_port(authority: &str, raw: &str) -> Result<(String, Option<u16>), String> {
    // [v6]:port, host:port or host
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!("\"{raw}\" has an unclosed IPv6 bracket"));
        };
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err(format!("\"{raw}\" has no valid host name"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("\"{raw}\" has \"{p}\" as port; a port is 1-65535"))?,
        ),
    };
    Ok((host, port))
}

/// Why an environment is in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum EnvironmentSource {
    /// The `DOCKER_HOST` variable.
    DockerHost,
    /// A Docker CLI context.
    DockerContext,
    /// The local default socket.
    LocalDefault,
    /// Added in Changeover (`changeover env add`, or the window's form).
    Added,
}

/// One daemon Changeover can talk to. `endpoint` is `None` exactly when
/// `problem` says why the address could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct EnvironmentSpec {
    pub name: String,
    pub source: EnvironmentSource,
    /// The address as the user wrote it (for messages and display).
    pub host: String,
    pub description: String,
    pub endpoint: Option<Endpoint>,
    pub problem: Option<Problem>,
}

/// The environments found, and which one to use when none is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentSpec>,
    pub default: String,
}

impl EnvironmentList {
    pub fn get(&self, name: &str) -> Result<&EnvironmentSpec, Problem> {
        self.environments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.environments.iter().map(|e| e.name.as_str()).collect();
                Problem::new(
                    ProblemCode::UnknownEnvironment,
                    format!(
                        "no environment is named \"{name}\"; known: {}",
                        known.join(", ")
                    ),
                )
            })
    }

    /// The environment to use when the user names none.
    pub fn default_spec(&self) -> Result<&EnvironmentSpec, Problem> {
        self.get(&self.default)
    }
}

/// The host keys an SSH server offers, for the user to compare and accept
/// once (as `ssh` asks on a first connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct SshHostKey {
    /// The host as known-hosts files name it (`host`, or `[host]:port`).
    pub host: String,
    /// `SHA256:… (ED25519)`, one per key the server offers.
    pub fingerprints: Vec<String>,
    /// The keys as known-hosts lines, in the order of `fingerprints`.
    pub known_hosts_lines: Vec<String>,
}

/// How Changeover's link to one environment stands right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "state", rename_all = "camelCase")]
#[ts(export)]
pub enum ConnectionState {
    /// Dialling, or reading the first snapshot.
    Connecting,
    /// The daemon answers and the inventory is live.
    Connected {
        daemon: crate::inventory::DaemonInfo,
    },
    /// The daemon went away or never answered; retried after `retry_in_ms`.
    Disconnected {
        problem: Problem,
        #[ts(type = "number")]
        retry_in_ms: u64,
    },
    /// The address itself is wrong; retrying cannot help.
    Invalid { problem: Problem },
}

/// What discovery reads from the process: variables and the Docker CLI's
/// configuration folder. Passed in so tests control both.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryInput {
    pub docker_host: Option<String>,
    pub docker_context: Option<String>,
    pub docker_tls_verify: bool,
    pub docker_cert_path: Option<PathBuf>,
    /// `$DOCKER_CONFIG`, else `~/.docker`. `None` when there is no home.
    pub config_dir: Option<PathBuf>,
}

impl DiscoveryInput {
    /// Reads the real process environment.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let config_dir = var("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")));
        Self {
            docker_host: var("DOCKER_HOST"),
            docker_context: var("DOCKER_CONTEXT"),
            docker_tls_verify: var("DOCKER_TLS_VERIFY").is_some_and(|v| v != "0"),
            docker_cert_path: var("DOCKER_CERT_PATH").map(PathBuf::from),
            config_dir,
        }
    }
}

/// Finds every environment. Never fails as a whole: a broken context or a bad
/// `DOCKER_HOST` becomes an entry with a problem, and an unreadable context
/// file is skipped with its problem listed on a placeholder entry.
pub fn discover(input: &DiscoveryInput) -> EnvironmentList {
    let mut environments = vec![default_environment(input)];
    let mut current_context = None;

    if let Some(dir) = &input.config_dir {
        environments.extend(read_contexts(dir));
        current_context = read_current_context(dir);
    }

    let wanted = if input.docker_host.is_some() {
        DEFAULT_ENVIRONMENT.to_string()
    } else {
        input
            .docker_context
            .clone()
            .or(current_context)
            .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_string())
    };
    let default = if environments.iter().any(|e| e.name == wanted) {
        wanted
    } else {
        DEFAULT_ENVIRONMENT.to_string()
    };
    EnvironmentList {
        environments,
        default,
    }
}

fn default_environment(input: &DiscoveryInput) -> EnvironmentSpec {
    match &input.docker_host {
        Some(raw) => {
            let parsed = Endpoint::parse(raw).map(|mut endpoint| {
                if let Endpoint::Tcp { tls, .. } = &mut endpoint {
                    if input.docker_tls_verify {
                        *tls = input.docker_cert_path.as_deref().map(|d| Tls::Files {
                            files: tls_files_in(d),
                        });
                    }
                }
                endpoint
            });
            let (endpoint, problem) = match parsed {
                Ok(e) => (Some(e), None),
                Err(why) => (
                    None,
                    Some(Problem::new(
                        ProblemCode::InvalidHost,
                        format!("DOCKER_HOST={raw} is not a Docker address: {why}. Fix or unset DOCKER_HOST."),
                    )),
                ),
            };
            EnvironmentSpec {
                name: DEFAULT_ENVIRONMENT.to_string(),
                source: EnvironmentSource::DockerHost,
                host: raw.clone(),
                description: "from DOCKER_HOST".to_string(),
                endpoint,
                problem,
            }
        }
        None => EnvironmentSpec {
            name: DEFAULT_ENVIRONMENT.to_string(),
            source: EnvironmentSource::LocalDefault,
            host: format!("unix://{DEFAULT_UNIX_SOCKET}"),
            description: "the local Docker daemon".to_string(),
            endpoint: Some(Endpoint::Unix {
                path: DEFAULT_UNIX_SOCKET.to_string(),
            }),
            problem: None,
        },
    }
}

fn tls_files_in(dir: &Path) -> TlsFiles {
    let file = |n: &str| dir.join(n).to_string_lossy().into_owned();
    TlsFiles {
        ca: file("ca.pem"),
        cert: file("cert.pem"),
        key: file("key.pem"),
    }
}

fn read_current_context(config_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .get("currentContext")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// Reads `contexts/meta/<digest>/meta.json`. TLS files, when a context has
/// them, sit in `contexts/tls/<digest>/docker/`.
fn read_contexts(config_dir: &Path) -> Vec<EnvironmentSpec> {
    let meta_root = config_dir.join("contexts").join("meta");
    let Ok(entries) = std::fs::read_dir(&meta_root) else {
        return Vec::new();
    };
    let mut found = BTreeMap::new();
    for entry in entries.flatten() {
        let digest = entry.file_name().to_string_lossy().into_owned();
        let meta_path = entry.path().join("meta.json");
        let spec = match read_context(&meta_path) {
            Ok((name, description, host, skip_tls_verify)) => {
                let tls_dir = config_dir
                    .join("contexts")
                    .join("tls")
                    .join(&digest)
                    .join("docker");
                let parsed = Endpoint::parse(&host).map(|mut endpoint| {
                    if let Endpoint::Tcp { tls, .. } = &mut endpoint {
                        if tls_dir.join("ca.pem").exists() && !skip_tls_verify {
                            *tls = Some(Tls::Files {
                                files: tls_files_in(&tls_dir),
                            });
                        }
                    }
                    endpoint
                });
                let (endpoint, problem) = match parsed {
                    Ok(e) => (Some(e), None),
                    Err(why) => (
                        None,
                        Some(Problem::new(
                            ProblemCode::InvalidHost,
                            format!("Docker context \"{name}\" has a bad address: {why}"),
                        )),
                    ),
                };
                EnvironmentSpec {
                    name,
                    source: EnvironmentSource::DockerContext,
                    host,
                    description,
                    endpoint,
                    problem,
                }
            }
            Err(why) => EnvironmentSpec {
                name: format!("context {digest}"),
                source: EnvironmentSource::DockerContext,
                host: String::new(),
                description: String::new(),
                endpoint: None,
                problem: Some(Problem::new(
                    ProblemCode::InvalidDockerConfig,
                    format!("{}: {why}", meta_path.display()),
                )),
            },
        };
        // The CLI's own "default" context is implicit; a stored one of that
        // name would shadow ours, so it is skipped.
        if spec.name != DEFAULT_ENVIRONMENT {
            found.insert(spec.name.clone(), spec);
        }
    }
    found.into_values().collect()
}

fn read_context(path: &Path) -> Result<(String, String, String, bool), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not valid JSON ({e})"))?;
    let name = value
        .get("Name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or("no \"Name\"")?
        .to_string();
    let description = value
        .pointer("/Metadata/Description")
        .and_then(|d| d.as_str())
        .unwrap_or_default()
        .to_string();
    let docker = value
        .pointer("/Endpoints/docker")
        .ok_or_else(|| format!("context \"{name}\" has no docker endpoint"))?;
    let host = docker
        .get("Host")
        .and_then(|h| h.as_str())
        .ok_or_else(|| format!("context \"{name}\" has no docker Host"))?
        .to_string();
    let skip = docker
        .get("SkipTLSVerify")
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    Ok((name, description, host, skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dir: Option<&Path>) -> DiscoveryInput {
        DiscoveryInput {
            config_dir: dir.map(Path::to_path_buf),
            ..Default::default()
        }
    }

    fn write_context(dir: &Path, digest: &str, json: &str) {
        let meta = dir.join("contexts").join("meta").join(digest);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(meta.join("meta.json"), json).unwrap();
    }

    #[test]
    fn links_use_the_daemons_host_name() {
        let host = |raw: &str| Endpoint::parse(raw).unwrap().link_host();
        assert_eq!(host("unix:///var/run/docker.sock"), "localhost");
        assert_eq!(host("tcp://10.0.0.2:2376"), "10.0.0.2");
        assert_eq!(host("ssh://me@build.example:2222"), "build.example");
        assert_eq!(host("ssh://[fd00::1]:22"), "fd00::1");
        assert_eq!(host("ssh://lab"), "lab");
    }

    #[test]
    fn parses_the_addresses_docker_accepts() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").unwrap(),
            Endpoint::Unix {
                path: "/var/run/docker.sock".into()
            }
        );
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.2:2376").unwrap(),
            Endpoint::Tcp {
                host: "10.0.0.2".into(),
                port: 2376,
                tls: None
            }
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:2375/").unwrap(),
            Endpoint::Tcp {
                host: "::1".into(),
                port: 2375,
                tls: None
            }
        );
        assert_eq!(
            Endpoint::parse("tcp://docker.example").unwrap(),
            Endpoint::Tcp {
                host: "docker.example".into(),
                port: 2375,
                tls: None
            },
            "a tcp address without port defaults to 2375 as the Docker CLI does"
        );
        assert_eq!(
            Endpoint::parse("ssh://deploy@build-1:2222").unwrap(),
            Endpoint::Ssh {
                destination: "deploy@build-1:2222".into()
            }
        );
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_value_named() {
        for bad in [
            "tcp//x",
            "unix://relative.sock",
            "tcp://:2375",
            "tcp://host:99999",
            "tcp://host:abc",
            "ftp://host",
            "ssh://",
            "",
        ] {
            let err = Endpoint::parse(bad).expect_err(bad);
            assert!(
                err.contains(&format!("\"{bad}\"")),
                "the message must quote the bad value {bad:?}: {err}"
            );
        }
    }

    #[test]
    fn docker_host_wins_and_a_bad_one_is_listed_with_its_problem() {
        let good = discover(&DiscoveryInput {
            docker_host: Some("unix:///no/such.sock".into()),
            ..input(None)
        });
        assert_eq!(good.default, "default");
        assert_eq!(good.environments[0].source, EnvironmentSource::DockerHost);
        assert_eq!(
            good.environments[0].endpoint,
            Some(Endpoint::Unix {
                path: "/no/such.sock".into()
            })
        );

        let bad = discover(&DiscoveryInput {
            docker_host: Some("tcp//x".into()),
            ..input(None)
        });
        let env = &bad.environments[0];
        assert!(env.endpoint.is_none(), "a bad DOCKER_HOST has no endpoint");
        let problem = env
            .problem
            .as_ref()
            .expect("a bad DOCKER_HOST carries a problem");
        assert_eq!(problem.code, ProblemCode::InvalidHost);
        assert!(problem.message.contains("DOCKER_HOST=tcp//x"), "{problem}");
        assert!(
            problem.message.contains("unset DOCKER_HOST"),
            "says what to do: {problem}"
        );
    }

    #[test]
    fn contexts_become_environments_and_current_context_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        write_context(
            dir.path(),
            "aaa",
            r#"{"Name":"prod","Metadata":{"Description":"the big one"},"Endpoints":{"docker":{"Host":"ssh://ops@prod","SkipTLSVerify":false}}}"#,
        );
        write_context(
            dir.path(),
            "bbb",
            r#"{"Name":"tls-box","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://10.1.1.1:2376","SkipTLSVerify":false}}}"#,
        );
        let tls = dir.path().join("contexts/tls/bbb/docker");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.pem"), "x").unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"prod"}"#,
        )
        .unwrap();

        let list = discover(&input(Some(dir.path())));
        let names: Vec<&str> = list.environments.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["default", "prod", "tls-box"]);
        assert_eq!(list.default, "prod", "currentContext picks the default");
        assert_eq!(list.get("prod").unwrap().description, "the big one");
        match &list.get("tls-box").unwrap().endpoint {
            Some(Endpoint::Tcp {
                tls: Some(Tls::Files { files }),
                ..
            }) => {
                assert!(
                    files.ca.ends_with("contexts/tls/bbb/docker/ca.pem"),
                    "{files:?}"
                )
            }
            other => panic!("a context with TLS files must use them, got {other:?}"),
        }
    }

    #[test]
    fn docker_context_variable_beats_config_and_unknown_names_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        write_context(
            dir.path(),
            "aaa",
            r#"{"Name":"staging","Endpoints":{"docker":{"Host":"tcp://s:2375"}}}"#,
        );
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"gone"}"#,
        )
        .unwrap();
        let list = discover(&input(Some(dir.path())));
        assert_eq!(
            list.default, "default",
            "a current context that no longer exists falls back"
        );

        let list = discover(&DiscoveryInput {
            docker_context: Some("staging".into()),
            ..input(Some(dir.path()))
        });
        assert_eq!(list.default, "staging");
    }

    #[test]
    fn a_broken_context_file_is_listed_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), "ccc", "{not json");
        write_context(
            dir.path(),
            "ddd",
            r#"{"Name":"odd","Endpoints":{"docker":{"Host":"tcp//nope"}}}"#,
        );
        let list = discover(&input(Some(dir.path())));
        assert_eq!(
            list.environments.len(),
            3,
            "both broken contexts are still listed"
        );
        assert!(list.environments[1..]
            .iter()
            .all(|e| e.endpoint.is_none() && e.problem.is_some()));
        let unknown = list.get("nope").unwrap_err();
        assert_eq!(unknown.code, ProblemCode::UnknownEnvironment);
        assert!(unknown.message.contains("known: default"), "{unknown}");
    }
}
