//! A home of a test's own: a config folder for Changeover and an empty
//! Docker CLI config, so the user's environments and logins are neither
//! used nor touched; the `changeover` command run there, logins made there.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;

use serde_json::Value;

/// A config folder and an empty Docker CLI config of the test's own, so
/// the user's logins are neither used nor touched.
pub struct Home {
    pub config: tempfile::TempDir,
    pub docker: tempfile::TempDir,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    pub fn new() -> Home {
        Home {
            config: tempfile::tempdir().unwrap(),
            docker: tempfile::tempdir().unwrap(),
        }
    }

    /// The variables that point the `changeover` command and the app here.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            (
                "CHANGEOVER_CONFIG_DIR",
                self.config.path().to_str().unwrap(),
            ),
            ("DOCKER_CONFIG", self.docker.path().to_str().unwrap()),
        ]
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.run_with(args, self.docker.path(), &[])
    }

    pub fn run_with(
        &self,
        args: &[&str],
        docker_config: &Path,
        extra: &[(&str, &str)],
    ) -> std::process::Output {
        let mut env = vec![
            (
                "CHANGEOVER_CONFIG_DIR",
                self.config.path().to_str().unwrap(),
            ),
            ("DOCKER_CONFIG", docker_config.to_str().unwrap()),
        ];
        env.extend_from_slice(extra);
        crate::changeover(args, &env)
    }

    /// `registry login HOST -u USER --password-stdin` with `password`.
    pub fn login(&self, host: &str, user: &str, password: &str) -> std::process::Output {
        self.login_with(&[host, "-u", user], password)
    }

    /// `registry login ARGS… --password-stdin` with `password` on stdin.
    pub fn login_with(&self, args: &[&str], password: &str) -> std::process::Output {
        let mut all = vec!["registry", "login", "--password-stdin"];
        all.extend_from_slice(args);
        let mut cmd = crate::changeover_cmd(&all, &self.env());
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn logins(&self) -> Value {
        let out = self.run(&["registry", "ls", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}
