//! Dialling an environment.

use std::path::Path;

use bollard::{Docker, API_DEFAULT_VERSION};
use changeover_core::environment::{Endpoint, EnvironmentSpec};
use changeover_core::{Problem, ProblemCode};

/// Seconds a single request may wait for the daemon's answer. Streams (events,
/// logs) are not bounded by it.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// Connects to an environment and negotiates the API version with it, so one
/// client works against old and new daemons alike. Fails with a message that
/// names the environment's address and says what to do.
pub async fn connect(spec: &EnvironmentSpec) -> Result<Docker, Problem> {
    let endpoint = match (&spec.endpoint, &spec.problem) {
        (Some(endpoint), _) => endpoint,
        (None, Some(problem)) => return Err(problem.clone()),
        (None, None) => {
            return Err(Problem::new(
                ProblemCode::InvalidHost,
                format!("environment \"{}\" has no address", spec.name),
            ))
        }
    };
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
        }
        Endpoint::Tcp {
            host,
            port,
            tls: None,
        } => Docker::connect_with_http(
            &format!("tcp://{}:{port}", bracket(host)),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
        Endpoint::Tcp {
            host,
            port,
            tls: Some(files),
        } => Docker::connect_with_ssl(
            &format!("tcp://{}:{port}", bracket(host)),
            Path::new(&files.key),
            Path::new(&files.cert),
            Path::new(&files.ca),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
        Endpoint::Ssh { destination } => Docker::connect_with_ssh(
            &format!("ssh://{destination}"),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
            None,
        ),
        Endpoint::NamedPipe { .. } => {
            return Err(Problem::new(
                ProblemCode::InvalidHost,
                format!("{endpoint} is a Windows named pipe; this build of Changeover runs on Linux and macOS"),
            ))
        }
    }
    .map_err(|e| unreachable(e.to_string()))?;

    docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(describe(&e)))
}

fn bracket(host: &str) -> String {
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
        Endpoint::Tcp { tls: Some(_), .. } => "Check the address and that the context's TLS files match the daemon's certificate",
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
        other => changeover_core::problem::error_chain(other),
    }
}

/// A daemon error as a [`Problem`].
pub fn daemon_problem(context: &str, e: &bollard::errors::Error) -> Problem {
    Problem::new(
        ProblemCode::DaemonError,
        format!("{context}: {}", describe(e)),
    )
}
