//! Errors for people: a stable code the UI can act on and a message that says
//! what went wrong, where, and what to do.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Stable codes. Only add one when a consumer (UI, CLI exit path) uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum ProblemCode {
    /// `DOCKER_HOST` or a context holds an address that does not parse.
    InvalidHost,
    /// Nothing answers at the environment's address.
    DaemonUnreachable,
    /// The daemon answered with an error.
    DaemonError,
    /// No environment has that name.
    UnknownEnvironment,
    /// The Docker CLI configuration could not be read.
    InvalidDockerConfig,
    /// A stack file has errors (each with file, line and key).
    InvalidStack,
    /// The image is not on the daemon and could not be pulled.
    ImageNotFound,
    /// A host port a service publishes is taken.
    PortInUse,
    /// Another client is rolling out the same service.
    RolloutInProgress,
    /// A rollout failed (and the previous release was restored).
    RolloutFailed,
    /// No stack/service of that name on the environment.
    UnknownService,
    /// A rollback was asked but there is no earlier release.
    NoPreviousRelease,
    /// The edge could not be set up or answered with an error.
    EdgeError,
    /// A traffic change that cannot apply (bad percentage, unhealthy or
    /// unknown release, not two live releases).
    InvalidTraffic,
    /// A release runs beside the current one (blue-green or canary): it is
    /// promoted or aborted before anything else is deployed.
    CandidateLive,
    /// A file to write exists already (ask before replacing it).
    FileExists,
    /// A file could not be written.
    CannotWrite,
    /// An environment the user adds is refused (its name, or it exists).
    InvalidEnvironment,
    /// TLS material that cannot be used (not PEM, wrong CA, expired, refused).
    InvalidTls,
    /// An SSH host key that is not known yet: shown, and accepted once.
    UnknownHostKey,
    /// An SSH host key that differs from the one known: refused.
    HostKeyChanged,
    /// The OS keyring could not store or give back a secret.
    Keyring,
    /// An environment with a rollout running cannot be removed yet.
    EnvironmentBusy,
    /// No container of that name or ID (or it went away).
    UnknownContainer,
    /// The container does not run (a terminal needs it running).
    ContainerNotRunning,
    /// A terminal session that is not open (ended, or never was).
    UnknownSession,
    /// A path inside a volume that is refused (`..`, NUL, too deep).
    InvalidPath,
    /// No volume of that name.
    UnknownVolume,
    /// Nothing at that path inside the volume, or something else than asked
    /// (a file, not a folder; a link, which is never followed).
    NoSuchPath,
    /// The volume helper failed or could not be started.
    VolumeHelper,
    /// An archive that is refused (climbs out, goes through a link, too big).
    InvalidArchive,
    /// A folder or volume that holds something where it must be empty.
    NotEmpty,
    /// A value the user typed that is refused (a note with a newline, …).
    InvalidInput,
    /// A volume that containers use, where the action needs it unused.
    VolumeInUse,
    /// No snapshot of that name for the volume.
    UnknownSnapshot,
    /// The user stopped the work before it was done.
    Cancelled,
    /// A registry does not answer (down, unknown host, refused connection).
    RegistryUnreachable,
    /// A registry refused the credentials (or asked for some).
    RegistryUnauthorized,
    /// A registry limits requests and refused one (429): wait, then ask again.
    RegistryRateLimited,
    /// A registry answered something that is not the API (or too much).
    InvalidRegistryAnswer,
    /// The registry has no such repository.
    UnknownRepository,
    /// The repository has no such tag.
    UnknownTag,
    /// No credentials for that registry were entered in Changeover.
    NotLoggedIn,
    /// A service's `build:` failed (its context, or a step of its Dockerfile).
    BuildFailed,
}

/// A failure a person can read and the UI can branch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export)]
pub struct Problem {
    pub code: ProblemCode,
    pub message: String,
}

impl Problem {
    pub fn new(code: ProblemCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

/// An error with its sources, each new piece once: `a: b: c`. Transport
/// errors keep the useful part (connection refused, …) in their sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let piece = s.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = s.source();
    }
    text
}
