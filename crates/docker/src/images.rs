//! Pulling an image onto the daemon with the registry's credentials
//! (`X-Registry-Auth`), its progress per layer, and its failure in the
//! registry's own words.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use changeover_core::image::ImageRef;
use changeover_core::registry::{PullProgress, Repository};
use changeover_core::{Problem, ProblemCode};
use futures_util::StreamExt;

use crate::registry::Credential;

/// What the daemon is given to pull from a registry that asks for them.
pub fn docker_credentials(host: &str, credential: &Credential) -> DockerCredentials {
    let server = changeover_core::registry::helper_server_url(host);
    match credential {
        Credential::Basic { username, password } => DockerCredentials {
            username: Some(username.clone()),
            password: Some(password.expose().to_string()),
            serveraddress: Some(server),
            ..Default::default()
        },
        Credential::IdentityToken { username, token } => DockerCredentials {
            username: Some(username.clone()),
            identitytoken: Some(token.expose().to_string()),
            serveraddress: Some(server),
            ..Default::default()
        },
    }
}

/// Pulls `image` (a tag or a digest) onto the daemon, calling `progress`
/// with the whole progress after each message; the image's ID once it is
/// there. Dropping the future stops the pull (the daemon stops when the
/// request goes).
pub async fn pull(
    docker: &Docker,
    image: &ImageRef,
    credential: Option<&Credential>,
    mut progress: impl FnMut(&PullProgress),
) -> Result<String, Problem> {
    let reference = image.to_string();
    let from = match &image.digest {
        Some(d) => format!("{}@{d}", image.name),
        None => image.name.clone(),
    };
    let mut options = CreateImageOptionsBuilder::new().from_image(&from);
    if image.digest.is_none() {
        options = options.tag(image.tag_or_latest());
    }
    let host = Repository::of(image).host;
    let credentials = credential.map(|c| docker_credentials(&host, c));
    let mut stream = docker.create_image(Some(options.build()), None, credentials);
    let mut state = PullProgress::new(&reference);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(pull_problem(&reference, &host, &message));
                }
                let detail = info.progress_detail.as_ref();
                state.update(
                    info.id.as_deref(),
                    info.status.as_deref().unwrap_or_default(),
                    detail.and_then(|d| d.current),
                    detail.and_then(|d| d.total),
                );
                progress(&state);
            }
            Err(e) => {
                if let Some(said) = crate::connect::daemon_words(&e) {
                    return Err(pull_problem(&reference, &host, said));
                }
                return Err(crate::connect::daemon_problem(
                    &format!("pulling {reference}"),
                    &e,
                ));
            }
        }
    }
    let inspected = docker.inspect_image(&reference).await.map_err(|e| {
        Problem::new(
            ProblemCode::ImageNotFound,
            format!("{reference} is not on the daemon after pulling it: {e}"),
        )
    })?;
    Ok(inspected.id.unwrap_or_default())
}

/// Resolves at the daemon's next image tag, pull, load or build (an image
/// event), or when its event stream ends; for watchers of local tags.
pub async fn next_image_event(docker: &Docker) {
    use bollard::query_parameters::EventsOptionsBuilder;
    let mut filters = std::collections::HashMap::new();
    filters.insert("type".to_string(), vec!["image".to_string()]);
    filters.insert(
        "event".to_string(),
        ["tag", "pull", "load", "import"].map(String::from).to_vec(),
    );
    let mut events = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
    let _ = events.next().await;
}

/// A failed pull, coded by what the daemon relayed from the registry, in
/// its words.
pub fn pull_problem(reference: &str, host: &str, message: &str) -> Problem {
    let lower = message.to_lowercase();
    let code = if lower.contains("manifest unknown")
        || (lower.contains("manifest for") && lower.contains("not found"))
    {
        ProblemCode::UnknownTag
    } else if lower.contains("no matching manifest") {
        ProblemCode::ImageNotFound
    } else if lower.contains("repository does not exist")
        || lower.contains("name unknown")
        || lower.contains("repository name not known")
    {
        ProblemCode::UnknownRepository
    } else if lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("denied")
        || lower.contains("no basic auth credentials")
    {
        ProblemCode::RegistryUnauthorized
    } else if lower.contains("toomanyrequests") || lower.contains("rate limit") {
        ProblemCode::RegistryRateLimited
    } else if lower.contains("x509") || lower.contains("certificate") {
        ProblemCode::InvalidTls
    } else if lower.contains("connection refused")
        || lower.contains("no such host")
        || lower.contains("i/o timeout")
        || lower.contains("dial tcp")
    {
        ProblemCode::RegistryUnreachable
    } else {
        ProblemCode::ImageNotFound
    };
    let hint = match code {
        ProblemCode::RegistryUnauthorized => {
            format!(" (log in: changeover registry login {host})")
        }
        ProblemCode::InvalidTls => format!(
            " (the daemon does not trust {host}'s certificate: put its CA in /etc/docker/certs.d/{host}/ca.crt on the daemon's host)"
        ),
        ProblemCode::ImageNotFound if lower.contains("no matching manifest") => {
            " (the image has no variant for the daemon's OS and architecture)".to_string()
        }
        _ => String::new(),
    };
    Problem::new(
        code,
        format!("{reference} could not be pulled: {}{hint}", message.trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_pull_is_coded_by_the_registrys_words() {
        for (said, code) in [
            (
                "manifest for 127.0.0.1:5000/app:9 not found: manifest unknown: manifest unknown",
                ProblemCode::UnknownTag,
            ),
            (
                "pull access denied for nope, repository does not exist or may require 'docker login'",
                ProblemCode::UnknownRepository,
            ),
            (
                "Head \"https://r/v2/app/manifests/1\": no basic auth credentials",
                ProblemCode::RegistryUnauthorized,
            ),
            (
                "Get \"https://r/v2/\": x509: certificate signed by unknown authority",
                ProblemCode::InvalidTls,
            ),
            (
                "no matching manifest for linux/amd64 in the manifest list entries",
                ProblemCode::ImageNotFound,
            ),
            (
                "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
                ProblemCode::RegistryUnreachable,
            ),
        ] {
            let p = pull_problem("r/app:1", "r", said);
            assert_eq!(p.code, code, "{said}");
            assert!(p.message.contains(said), "the registry's words are kept: {}", p.message);
        }
    }
}
