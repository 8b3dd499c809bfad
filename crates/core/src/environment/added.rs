//! Environments the user added in Changeover (`changeover env add`, or the
//! window's form): their settings as kept in the app's config folder, in
//! [`FILE_NAME`], and the one set of rules every way of adding one goes by.
//!
//! Only what is not secret is here: the address, a description, and for a
//! TLS daemon its CA and the client certificate (PEM text, so nothing points
//! at the user's own files, which may move). The client key lives in the OS
//! keyring under the environment's name.
//!
//! Left out: reading and writing the file (the application layer does it,
//! atomically), and the keyring.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use super::{
    Endpoint, EnvironmentList, EnvironmentSource, EnvironmentSpec, Tls, DEFAULT_ENVIRONMENT,
};
use crate::{Problem, ProblemCode};

/// The settings file in the app's config folder.
pub const FILE_NAME: &str = "environments.json";
const FILE_VERSION: u32 = 1;
/// A settings file larger than this is refused rather than read.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Longest PEM text taken for a CA, a certificate or a key.
pub const MAX_PEM_BYTES: usize = 256 << 10;

/// One environment the user added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct AddedEnvironment {
    pub name: String,
    /// The address as the user wrote it: `unix://PATH`, `tcp://HOST:PORT`
    /// or `ssh://[USER@]HOST[:PORT]`.
    pub host: String,
    #[serde(default)]
    pub description: String,
    /// A TLS daemon's CA and client certificate (the key is in the keyring).
    #[serde(default)]
    pub tls: Option<StoredTls>,
}

/// The public half of an environment's TLS material, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct StoredTls {
    pub ca: String,
    pub cert: String,
}

#[derive(Serialize, Deserialize)]
struct SettingsFile {
    version: u32,
    environments: Vec<AddedEnvironment>,
}

/// The environments in a settings file. A file that cannot be read as one
/// is an error naming why; nothing is guessed.
pub fn parse_file(text: &str) -> Result<Vec<AddedEnvironment>, String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!(
            "it is {} bytes, more than the {} a settings file may hold",
            text.len(),
            MAX_FILE_BYTES
        ));
    }
    let file: SettingsFile =
        serde_json::from_str(text).map_err(|e| format!("it is not a settings file ({e})"))?;
    if file.version != FILE_VERSION {
        return Err(format!(
            "it is version {} and this Changeover reads version {FILE_VERSION}",
            file.version
        ));
    }
    Ok(file.environments)
}

/// The settings file holding `environments`.
pub fn to_file(environments: &[AddedEnvironment]) -> String {
    let file = SettingsFile {
        version: FILE_VERSION,
        environments: environments.to_vec(),
    };
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// A name people can type after `--env`: 1–63 letters, digits, `.`, `_`
/// or `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), Problem> {
    let bad = |why: &str| {
        Problem::new(
            ProblemCode::InvalidEnvironment,
            format!("{name:?} cannot name an environment: {why}"),
        )
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 63 {
        return Err(bad("use at most 63 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("start with a letter or a digit"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(&format!(
            "{c:?} is not allowed (letters, digits, '.', '_' and '-' are)"
        )));
    }
    if name == DEFAULT_ENVIRONMENT {
        return Err(bad("\"default\" is the local daemon's name"));
    }
    Ok(())
}

/// Checks an environment before it is stored: its name, its address, and
/// that TLS goes with `tcp://` only. The endpoint it will dial.
pub fn check(env: &AddedEnvironment) -> Result<Endpoint, Problem> {
    check_name(&env.name)?;
    let invalid = |message: String| Problem::new(ProblemCode::InvalidHost, message);
    let mut endpoint = Endpoint::parse(&env.host).map_err(invalid)?;
    match (&mut endpoint, &env.tls) {
        (Endpoint::Tcp { tls, .. }, Some(_)) => *tls = Some(Tls::Stored),
        (Endpoint::NamedPipe { .. }, _) => {
            return Err(invalid(format!(
                "{} is a Windows named pipe; this build of Changeover runs on Linux and macOS",
                env.host
            )))
        }
        (_, Some(_)) => {
            return Err(invalid(format!(
                "TLS files go with a tcp:// address, not {}",
                env.host
            )))
        }
        _ => {}
    }
    if let Some(t) = &env.tls {
        for (what, pem) in [("CA", &t.ca), ("client certificate", &t.cert)] {
            check_pem(what, pem, "CERTIFICATE")?;
        }
    }
    Ok(endpoint)
}

/// Refuses text that is not PEM holding a `kind` block (CERTIFICATE, or
/// PRIVATE KEY for any key type), or is too large. The message names `what`
/// and never repeats the text.
pub fn check_pem(what: &str, pem: &str, kind: &str) -> Result<(), Problem> {
    let bad = |why: String| Problem::new(ProblemCode::InvalidTls, format!("the {what} {why}"));
    if pem.len() > MAX_PEM_BYTES {
        return Err(bad(format!(
            "is {} bytes; a PEM file of more than {MAX_PEM_BYTES} bytes is not taken",
            pem.len()
        )));
    }
    let found = pem.lines().any(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ") && l.ends_with("-----") && l.contains(kind)
    });
    if !found {
        return Err(bad(format!("is not PEM text holding a {kind} block")));
    }
    Ok(())
}

/// The environment as the rest of Changeover sees it. A stored entry that
/// no longer passes [`check`] is listed with its problem.
pub fn spec_of(env: &AddedEnvironment) -> EnvironmentSpec {
    let (endpoint, problem) = match check(env) {
        Ok(e) => (Some(e), None),
        Err(p) => (None, Some(p)),
    };
    EnvironmentSpec {
        name: env.name.clone(),
        source: EnvironmentSource::Added,
        host: env.host.clone(),
        description: if env.description.is_empty() {
            "added in Changeover".to_string()
        } else {
            env.description.clone()
        },
        endpoint,
        problem,
    }
}

/// Adds the user's environments to what discovery found. A name that a
/// Docker context took since is listed once, as the context, with the
/// added one shown under its name plus a problem saying to rename one.
pub fn merge(list: &mut EnvironmentList, added: &[AddedEnvironment]) {
    for env in added {
        let mut spec = spec_of(env);
        if list.environments.iter().any(|e| e.name == spec.name) {
            spec.problem = Some(Problem::new(
                ProblemCode::InvalidEnvironment,
                format!(
                    "a Docker context is also named \"{}\"; remove this one (changeover env rm) and add it again under another name",
                    spec.name
                ),
            ));
            spec.endpoint = None;
            spec.name = format!("{} (added)", spec.name);
        }
        list.environments.push(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::{discover, DiscoveryInput};

    fn env(name: &str, host: &str) -> AddedEnvironment {
        AddedEnvironment {
            name: name.into(),
            host: host.into(),
            description: String::new(),
            tls: None,
        }
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn settings_round_trip_and_bad_files_say_why() {
        let mut tls = env("prod", "tcp://10.0.0.2:2376");
        tls.tls = Some(StoredTls {
            ca: CERT.into(),
            cert: CERT.into(),
        });
        let all = vec![tls, env("lab", "ssh://me@lab:2222")];
        assert_eq!(
            parse_file(&to_file(&all)).unwrap(),
            all,
            "what is written reads back"
        );
        for (text, says) in [
            ("{", "not a settings file"),
            (r#"{"version":9,"environments":[]}"#, "version 9"),
            (r#"{"version":1}"#, "not a settings file"),
        ] {
            let err = parse_file(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let huge = " ".repeat(MAX_FILE_BYTES + 1);
        assert!(parse_file(&huge).unwrap_err().contains("more than"));
    }

    #[test]
    fn names_addresses_and_tls_are_checked_with_the_value_named() {
        for (name, says) in [
            ("", "empty"),
            ("-x", "start with"),
            ("a b", "' ' is not allowed"),
            ("default", "local daemon"),
            (&"x".repeat(64), "at most 63"),
        ] {
            let p = check_name(name).unwrap_err();
            assert_eq!(p.code, ProblemCode::InvalidEnvironment);
            assert!(p.message.contains(says), "{name:?}: {}", p.message);
        }
        assert!(check_name("prod-eu.1_b").is_ok());

        let p = check(&env("x", "tcp//nowhere")).unwrap_err();
        assert!(p.message.contains("tcp//nowhere"), "{}", p.message);

        let mut ssh_tls = env("x", "ssh://me@h");
        ssh_tls.tls = Some(StoredTls {
            ca: CERT.into(),
            cert: CERT.into(),
        });
        assert!(check(&ssh_tls).unwrap_err().message.contains("tcp://"));

        let mut not_pem = env("x", "tcp://h:2376");
        not_pem.tls = Some(StoredTls {
            ca: "hello".into(),
            cert: CERT.into(),
        });
        let p = check(&not_pem).unwrap_err();
        assert_eq!(p.code, ProblemCode::InvalidTls);
        assert!(p.message.contains("the CA is not PEM"), "{}", p.message);

        let mut ok = env("x", "tcp://h:2376");
        ok.tls = Some(StoredTls {
            ca: CERT.into(),
            cert: CERT.into(),
        });
        assert!(matches!(
            check(&ok),
            Ok(Endpoint::Tcp {
                tls: Some(Tls::Stored),
                ..
            })
        ));
        let big = format!("{CERT}{}", "A".repeat(MAX_PEM_BYTES));
        assert!(check_pem("key", &big, "PRIVATE KEY")
            .unwrap_err()
            .message
            .contains("bytes"));
    }

    #[test]
    fn added_environments_join_the_list_and_a_clash_is_shown_not_hidden() {
        let mut list = discover(&DiscoveryInput::default());
        merge(
            &mut list,
            &[
                env("lab", "tcp://10.0.0.9:2375"),
                env("default", "tcp://x:1"),
            ],
        );
        let lab = list.get("lab").unwrap();
        assert_eq!(lab.source, EnvironmentSource::Added);
        assert!(lab.problem.is_none());
        let clash = list.get("default (added)").unwrap();
        assert!(
            clash.problem.is_some(),
            "a clash is listed with its problem"
        );
        assert_eq!(
            list.get("default").unwrap().source,
            EnvironmentSource::LocalDefault,
            "the discovered one keeps its name"
        );
    }
}
