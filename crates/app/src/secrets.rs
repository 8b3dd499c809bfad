//! Secrets at rest live in the OS keyring only (DESIGN.md decision 12): the
//! Secret Service on Linux, the Keychain on macOS, the Credential Manager on
//! Windows, through the `keyring` crate. Never in a file Changeover writes,
//! never in a log or an error message.
//!
//! Entries are under the service [`SERVICE`], one account per secret
//! (`environment/NAME/tls-key`). The keyring's calls block (D-Bus on
//! Linux), so they run on tokio's blocking pool.

use std::sync::Arc;

use changeover_core::secret::Secret;
use changeover_core::{Problem, ProblemCode};

/// The keyring service Changeover's entries are filed under.
pub const SERVICE: &str = "dev.changeover";

/// Where secrets are kept. [`Keyring`] is the real one; unit tests of the
/// application layer use a map.
pub trait SecretStore: Send + Sync {
    fn get(&self, account: &str) -> Result<Option<Secret>, Problem>;
    fn set(&self, account: &str, secret: &Secret) -> Result<(), Problem>;
    /// Removing what is not there is fine.
    fn delete(&self, account: &str) -> Result<(), Problem>;
}

/// The account of an environment's TLS client key.
pub fn tls_key_account(environment: &str) -> String {
    format!("environment/{environment}/tls-key")
}

/// The OS keyring.
pub struct Keyring;

#[cfg(feature = "keyring")]
fn keyring_problem(what: &str, account: &str, e: keyring::Error) -> Problem {
    // keyring's errors describe the store, never the secret.
    Problem::new(
        ProblemCode::Keyring,
        format!(
            "the OS keyring could not {what} {account}: {e}. On Linux a Secret Service \
             (GNOME Keyring, KWallet) must run and be unlocked"
        ),
    )
}

#[cfg(feature = "keyring")]
impl SecretStore for Keyring {
    fn get(&self, account: &str) -> Result<Option<Secret>, Problem> {
        let entry = keyring::Entry::new(SERVICE, account)
            .map_err(|e| keyring_problem("read", account, e))?;
        match entry.get_password() {
            Ok(v) => Ok(Some(Secret::new(v))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(keyring_problem("read", account, e)),
        }
    }

    fn set(&self, account: &str, secret: &Secret) -> Result<(), Problem> {
        keyring::Entry::new(SERVICE, account)
            .and_then(|e| e.set_password(secret.expose()))
            .map_err(|e| keyring_problem("store", account, e))
    }

    fn delete(&self, account: &str) -> Result<(), Problem> {
        let entry = keyring::Entry::new(SERVICE, account)
            .map_err(|e| keyring_problem("remove", account, e))?;
        match entry.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keyring_problem("remove", account, e)),
        }
    }
}

/// A build without the keyring (the watcher container's): every secret
/// is refused in words; its credentials come from the Docker config the
/// watcher was installed with.
#[cfg(not(feature = "keyring"))]
impl SecretStore for Keyring {
    fn get(&self, account: &str) -> Result<Option<Secret>, Problem> {
        Err(no_keyring(account))
    }

    fn set(&self, account: &str, _secret: &Secret) -> Result<(), Problem> {
        Err(no_keyring(account))
    }

    fn delete(&self, account: &str) -> Result<(), Problem> {
        Err(no_keyring(account))
    }
}

#[cfg(not(feature = "keyring"))]
fn no_keyring(account: &str) -> Problem {
    Problem::new(
        ProblemCode::Keyring,
        format!("this build of changeover has no OS keyring, so {account} cannot be read or kept"),
    )
}

/// Runs a keyring call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<dyn SecretStore>,
    call: impl FnOnce(&dyn SecretStore) -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&*store))
        .await
        .map_err(|e| {
            Problem::new(
                ProblemCode::Keyring,
                format!("the keyring call failed: {e}"),
            )
        })?
}

#[cfg(test)]
pub(crate) mod memory {
    //! A secret store in a map, for unit tests of the layer's own logic.
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Memory(pub Mutex<BTreeMap<String, String>>);

    impl SecretStore for Memory {
        fn get(&self, account: &str) -> Result<Option<Secret>, Problem> {
            Ok(self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(account)
                .map(|v| Secret::new(v.clone())))
        }
        fn set(&self, account: &str, secret: &Secret) -> Result<(), Problem> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(account.into(), secret.expose().into());
            Ok(())
        }
        fn delete(&self, account: &str) -> Result<(), Problem> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(account);
            Ok(())
        }
    }
}
