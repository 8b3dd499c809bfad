//! A secret in memory: a TLS client key, a registry password.
//!
//! It prints as a placeholder (`Debug` and `Display` alike), cannot be
//! serialised, and is read only through [`Secret::expose`], so it cannot end
//! up in a log line, an error message or a file by accident. Where it lives
//! at rest is the OS keyring (`changeover-app`'s `secrets` module), never a
//! file Changeover writes.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it (a TLS handshake,
    /// the keyring).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("-----BEGIN PRIVATE KEY----- hunter2");
        let shown = format!("{s} {s:?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "printed: {shown}");
        assert_eq!(s.expose(), "-----BEGIN PRIVATE KEY----- hunter2");
    }
}
