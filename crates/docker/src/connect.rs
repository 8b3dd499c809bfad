//! Dialling an environment: a Unix socket, plain TCP, TLS with material
//! held in memory ([`crate::tls`]), or SSH through the user's own `ssh`
//! ([`crate::ssh`]). The API version is negotiated once per connection, so
//! one client works against old and new daemons alike; the application
//! layer keeps the connection for as long as the environment is open.

use std::path::{Path, PathBuf};

use bollard::{Docker, API_DEFAULT_VERSION};
use changeover_core::environment::{Endpoint, EnvironmentSpec, Tls, TlsFiles};
use changeover_core::secret::Secret;
use changeover_core::{Problem, ProblemCode};

use crate::ssh::SshTarget;
use crate::tls::TlsMaterial;

/// Seconds a single request may wait for the daemon's answer. Streams (events,
/// logs) are not bounded by it.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// What SSH connections use besides the user's own config.
#[derive(Clone, Debug, Default)]
pub struct SshSettings {
    /// Changeover's known hosts (keys accepted in Changeover).
    pub known_hosts: Option<PathBuf>,
    /// A private folder for shared SSH connections.
    pub control_dir: Option<PathBuf>,
}

/// Connects to a discovered environment (DOCKER_HOST, a Docker context, the
/// default socket), reading its TLS files, if any, for the handshake.
pub async fn connect(spec: &EnvironmentSpec) -> Result<Docker, Problem> {
    let endpoint = endpoint_of(spec)?;
    let tls = match endpoint {
        Endpoint::Tcp {
            tls: Some(Tls::Files { files }),
            ..
        } => Some(read_tls_files(files)?),
        Endpoint::Tcp {
            tls: Some(Tls::Stored),
            ..
        } => {
            return Err(Problem::new(
                ProblemCode::InvalidTls,
                format!(
                    "environment \"{}\" keeps its TLS key in the OS keyring; connect through the app layer",
                    spec.name
                ),
            ))
        }
        _ => None,
    };
    dial(endpoint, tls.as_ref(), &SshSettings::default()).await
}

/// The endpoint of a spec, or the problem that stands in for it.
pub fn endpoint_of(spec: &EnvironmentSpec) -> Result<&Endpoint, Problem> {
    match (&spec.endpoint, &spec.problem) {
        (Some(endpoint), _) => Ok(endpoint),
        (None, Some(problem)) => Err(problem.clone()),
        (None, None) => Err(Problem::new(
            ProblemCode::InvalidHost,
            format!("environment \"{}\" has no address", spec.name),
        )),
    }
}

/// Reads the Docker CLI's TLS files (`ca.pem`, `cert.pem`, `key.pem`) into
/// memory. A file that cannot be read is named; what it holds is not.
pub fn read_tls_files(files: &TlsFiles) -> Result<TlsMaterial, Problem> {
    let read = |what: &str, path: &str| {
        std::fs::read_to_string(path).map_err(|e| {
            Problem::new(
                ProblemCode::InvalidTls,
                format!("cannot read the TLS {what} {path}: {e}"),
            )
        })
    };
    Ok(TlsMaterial {
        ca: read("CA", &files.ca)?,
        cert: read("certificate", &files.cert)?,
        key: Secret::new(read("key", &files.key)?),
    })
}

/// Connects to `endpoint` and negotiates the API version. `tls` is the
/// material of a `tcp://` endpoint with TLS. Fails with a message that names
/// the address and says what to do.
pub async fn dial(
    endpoint: &Endpoint,
    tls: Option<&TlsMaterial>,
    ssh: &SshSettings,
) -> Result<Docker, Problem> {
    let unreachable = |why: String| {
        Problem::new(
            ProblemCode::DaemonUnreachable,
            format!(
                "no Docker daemon answers at {endpoint}: {why}. {}",
                hint(endpoint)
            ),
        )
    };
    let docker = match endpoint {
        Endpoint::Unix { path } => {
            if !Path::new(path).exists() {
                return Err(unreachable("the socket does not exist".to_string()));
            }
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
                .map_err(|e| unreachable(e.to_string()))?
        }
        Endpoint::Tcp {
            host,
            port,
            tls: None,
        } => Docker::connect_with_http(
            &format!("tcp://{}:{port}", bracket(host)),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(e.to_string()))?,
        Endpoint::Tcp {
            host,
            port,
            tls: Some(_),
        } => {
            let material = tls.ok_or_else(|| {
                Problem::new(
                    ProblemCode::InvalidTls,
                    format!("{endpoint} needs its TLS CA, client certificate and key"),
                )
            })?;
            crate::tls::docker_over_tls(
                host,
                *port,
                material,
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            )?
        }
        Endpoint::Ssh { destination } => {
            let target = SshTarget {
                destination: destination.clone(),
                known_hosts: ssh.known_hosts.clone(),
                control_dir: ssh.control_dir.clone(),
            };
            // Every way SSH can fail, in its own words, before any stream.
            crate::ssh::check(&target).await?;
            crate::ssh::docker_over_ssh(&target, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)?
        }
        Endpoint::NamedPipe { .. } => {
            return Err(Problem::new(
                ProblemCode::InvalidHost,
                format!("{endpoint} is a Windows named pipe; this build of Changeover runs on Linux and macOS"),
            ))
        }
    };
    let e = match docker.negotiate_version().await {
        Ok(d) => return Ok(d),
        Err(e) => e,
    };
    let chain = changeover_core::problem::error_chain(&e);
    if let Endpoint::Tcp {
        host,
        port,
        tls: with_tls,
    } = endpoint
    {
        if with_tls.is_some() {
            let at = endpoint.to_string();
            if let Some(p) = crate::tls::explain(&at, &chain) {
                return Err(p);
            }
            // The request failed without a reason (TLS 1.3 refuses a client
            // certificate after the handshake): ask the handshake itself.
            if let Some(material) = tls {
                if let Some(why) = crate::tls::handshake_error(host, *port, material).await {
                    if let Some(p) = crate::tls::explain(&at, &why) {
                        return Err(p);
                    }
                }
            }
        } else if chain.contains("HTTP request to an HTTPS server") {
            return Err(Problem::new(
                ProblemCode::InvalidTls,
                format!(
                    "{endpoint} speaks TLS: add the environment with its CA, client certificate and key"
                ),
            ));
        }
    }
    Err(unreachable(describe(&e)))
}

/// A client on a connector of our own (TLS from memory, SSH): pooled
/// hyper connections that bollard sends its requests over.
pub(crate) fn over<C>(
    connector: C,
    address: &str,
    timeout_secs: u64,
    version: &bollard::ClientVersion,
) -> Result<Docker, bollard::errors::Error>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(50))
        .build(connector);
    Docker::connect_with_custom_transport(
        move |request: bollard::BollardRequest| {
            let client = client.clone();
            async move {
                client
                    .request(request)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some(address),
        timeout_secs,
        version,
    )
}

pub(crate) fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn hint(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Unix { .. } => {
            "Start Docker, or reach another daemon through a Docker context (docker context create)"
        }
        Endpoint::Tcp { tls: None, .. } => "Check that the daemon listens there and that no firewall is in the way",
        Endpoint::Tcp { tls: Some(_), .. } => "Check the address and that the TLS files match the daemon's certificate",
        Endpoint::Ssh { .. } => "Check that `ssh` to that host works without a password prompt and that Docker runs there",
        Endpoint::NamedPipe { .. } => "",
    }
}

/// A daemon error in one line, without bollard's type names where a plainer
/// word exists.
pub(crate) fn describe(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => format!("the daemon answered {status_code}: {message}"),
        E::RequestTimeoutError => "the daemon did not answer in time".to_string(),
        // hyper's error chain holds the useful part (connection refused…).
        other => plain_reason(&changeover_core::problem::error_chain(other)),
    }
}

/// A transport error chain in a few words: what went wrong, without the
/// HTTP client's own wrapping ("Error in the hyper legacy client: …").
fn plain_reason(chain: &str) -> String {
    let lower = chain.to_lowercase();
    if lower.contains("connection refused") {
        return "nothing listens there (connection refused)".into();
    }
    if lower.contains("no such file or directory") {
        return "nothing listens there (the daemon's socket is not there: it stopped?)".into();
    }
    if CLOSED.iter().any(|w| lower.contains(w)) {
        return "the daemon closed the connection (it stopped or restarted)".into();
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return "the host name does not resolve".into();
    }
    if lower.contains("no route to host") || lower.contains("network is unreachable") {
        return "the host cannot be reached (no route)".into();
    }
    if lower.contains("timed out") {
        return "the connection timed out".into();
    }
    let mut rest = chain;
    for wrapper in [
        "Error in the hyper legacy client: ",
        "client error (Connect): ",
        "client error (SendRequest): ",
    ] {
        rest = rest.strip_prefix(wrapper).unwrap_or(rest);
    }
    rest.to_string()
}

/// The daemon's own words in an error, when it said something: an error
/// answer, or an error in the middle of a stream (a pull, a build).
pub fn daemon_words(e: &bollard::errors::Error) -> Option<&str> {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => Some(message),
        bollard::errors::Error::DockerStreamError { error } => Some(error),
        _ => None,
    }
}

/// A daemon error as a [`Problem`].
pub fn daemon_problem(context: &str, e: &bollard::errors::Error) -> Problem {
    // An answer is the daemon's error; anything else (no socket, a closed
    // connection, a timeout) means it could not be reached, or went away.
    let code = match e {
        bollard::errors::Error::DockerResponseServerError { .. }
        | bollard::errors::Error::JsonDataError { .. }
        | bollard::errors::Error::JsonSerdeError { .. } => ProblemCode::DaemonError,
        _ if is_transport(e) => ProblemCode::DaemonUnreachable,
        _ => ProblemCode::DaemonError,
    };
    Problem::new(code, format!("{context}: {}", describe(e)))
}

/// Whether `e` is the connection failing rather than the daemon answering.
fn is_transport(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::HyperResponseError { .. } | E::IOError { .. } | E::RequestTimeoutError
    ) || {
        let chain = changeover_core::problem::error_chain(e).to_lowercase();
        chain.contains("connection refused")
            || chain.contains("no such file or directory")
            || CLOSED.iter().any(|w| chain.contains(w))
    }
}

/// How a connection the daemon closed shows in an error chain.
const CLOSED: [&str; 5] = [
    "connection reset",
    "broken pipe",
    "connection closed",
    "unexpected eof",
    "incomplete message",
];
