//! A daemon over SSH, through the user's own `ssh` — their config, agent and
//! keys — running `docker system dial-stdio` on the remote host, as the
//! Docker CLI does.
//!
//! Every HTTP connection to the daemon is one `ssh … docker system
//! dial-stdio` process whose stdin and stdout carry the bytes. They share
//! one SSH connection (`ControlMaster`, in a private folder), so a kept
//! environment costs one handshake however many streams it holds (events,
//! edge sessions, logs, terminals).
//!
//! Host keys: `ssh` runs with `StrictHostKeyChecking=yes` and `BatchMode`,
//! so it never prompts. It reads the user's own known hosts and
//! Changeover's (`known_hosts` in the app's config folder, where keys the
//! user accepted in Changeover go). An unknown key is reported with its
//! fingerprints ([`host_keys`]) for the user to accept once; a changed key
//! is refused, never replaced.
//!
//! Left out: passwords and passphrase prompts (load the key in `ssh-agent`).

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{ClientVersion, Docker};
use changeover_core::environment::SshHostKey;
use changeover_core::{Problem, ProblemCode};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long a first SSH connection may take.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// Where and how to reach a daemon over SSH.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// `[user@]host[:port]`.
    pub destination: String,
    /// Changeover's own known hosts (keys accepted in Changeover).
    pub known_hosts: Option<PathBuf>,
    /// A private folder (mode 0700) for the shared connection's socket.
    pub control_dir: Option<PathBuf>,
}

impl SshTarget {
    fn url(&self) -> String {
        format!("ssh://{}", self.destination)
    }

    /// `ssh` options every call uses; with `shared`, the connection is
    /// shared between calls.
    fn options(&self, shared: bool) -> Vec<OsString> {
        let mut known = "~/.ssh/known_hosts ~/.ssh/known_hosts2".to_string();
        if let Some(k) = &self.known_hosts {
            known.push(' ');
            known.push_str(&k.display().to_string());
        }
        let mut o: Vec<String> = vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={known}"),
            "-o".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "-o".into(),
            "ServerAliveInterval=15".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        if let (true, Some(dir)) = (shared, &self.control_dir) {
            o.extend([
                "-o".into(),
                "ControlMaster=auto".into(),
                "-o".into(),
                format!("ControlPath={}/ssh-%C", dir.display()),
                "-o".into(),
                "ControlPersist=60".into(),
            ]);
        }
        o.into_iter().map(OsString::from).collect()
    }

    fn command(&self, shared: bool, remote: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.options(shared))
            .arg(self.url())
            .arg("--")
            .args(remote)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }
}

/// Runs `docker version` on the remote host once, with nothing shared, so
/// every way it can fail comes back in ssh's and docker's own words, and
/// says which it is. Answers the remote daemon's version.
pub async fn check(target: &SshTarget) -> Result<String, Problem> {
    let mut cmd = target.command(
        false,
        &["docker", "version", "--format", "{{.Server.Version}}"],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = cmd.output();
    let out = match tokio::time::timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS + 20), run).await
    {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Problem::new(
                ProblemCode::DaemonUnreachable,
                "ssh is not installed on this machine; install OpenSSH's client to reach ssh:// environments",
            ))
        }
        Ok(Err(e)) => {
            return Err(unreachable(target, &format!("cannot run ssh: {e}")));
        }
        Err(_) => {
            return Err(unreachable(target, "ssh did not finish within 30 s"));
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    Err(explain(target, &stderr))
}

fn unreachable(target: &SshTarget, why: &str) -> Problem {
    Problem::new(
        ProblemCode::DaemonUnreachable,
        format!("{}: {why}", target.url()),
    )
}

/// What ssh's or the remote docker's stderr means, for people.
fn explain(target: &SshTarget, stderr: &str) -> Problem {
    let at = target.url();
    let last = stderr.lines().last().unwrap_or("").trim();
    let says = |s: &str| stderr.contains(s);
    if says("REMOTE HOST IDENTIFICATION HAS CHANGED") || says("Host key for") && says("has changed")
    {
        return Problem::new(
            ProblemCode::HostKeyChanged,
            format!(
                "the host key of {at} has changed since it was accepted, so Changeover does not connect \
                 (someone may be in between). If the host was reinstalled, remove its old key \
                 (ssh-keygen -R HOST, and from Changeover's known_hosts) and accept the new one"
            ),
        );
    }
    if says("Host key verification failed") || says("No ") && says("host key is known") {
        return Problem::new(
            ProblemCode::UnknownHostKey,
            format!(
                "the host key of {at} is not known yet; check its fingerprint and accept it once"
            ),
        );
    }
    if says("Permission denied") {
        return Problem::new(
            ProblemCode::DaemonUnreachable,
            format!(
                "{at} refused the SSH login ({last}); load your key into ssh-agent (ssh-add) or name it in ~/.ssh/config"
            ),
        );
    }
    if says("command not found") || says("docker: not found") {
        return Problem::new(
            ProblemCode::DaemonUnreachable,
            format!("{at} has no docker command; Changeover runs `docker system dial-stdio` there, so install the Docker CLI on it"),
        );
    }
    if says("Cannot connect to the Docker daemon")
        || says("permission denied while trying to connect")
    {
        return Problem::new(
            ProblemCode::DaemonUnreachable,
            format!("the SSH login to {at} works, but Docker there does not answer: {last}"),
        );
    }
    unreachable(
        target,
        if last.is_empty() {
            "ssh failed without saying why"
        } else {
            last
        },
    )
}

/// The host keys `target` offers now, with their fingerprints, for the user
/// to compare and accept (`ssh -G` resolves the host and port as the
/// user's config has them).
pub async fn host_keys(target: &SshTarget) -> Result<SshHostKey, Problem> {
    let mut g = Command::new("ssh");
    g.arg("-G").arg(target.url()).stdin(Stdio::null());
    let config = g
        .output()
        .await
        .map_err(|e| unreachable(target, &format!("cannot run ssh -G: {e}")))?;
    let text = String::from_utf8_lossy(&config.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
            .map(str::to_string)
    };
    let host = value("hostname").unwrap_or_default();
    let port = value("port").unwrap_or_else(|| "22".into());
    if host.is_empty() {
        return Err(unreachable(target, "ssh -G names no host name"));
    }
    let scan = Command::new("ssh-keyscan")
        .args(["-T", "5", "-p", &port, &host])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| unreachable(target, &format!("cannot run ssh-keyscan: {e}")))?;
    let lines: Vec<String> = String::from_utf8_lossy(&scan.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        return Err(unreachable(
            target,
            &format!("no SSH server answers at {host} port {port}"),
        ));
    }
    let mut fingerprints = Vec::new();
    for line in &lines {
        fingerprints.push(fingerprint(line).await.unwrap_or_else(|| "?".into()));
    }
    Ok(SshHostKey {
        host: if port == "22" {
            host
        } else {
            format!("[{host}]:{port}")
        },
        fingerprints,
        known_hosts_lines: lines,
    })
}

/// `SHA256:… (ED25519)` of one known-hosts line.
async fn fingerprint(line: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    stdin.write_all(line.as_bytes()).await.ok()?;
    stdin.write_all(b"\n").await.ok()?;
    drop(stdin);
    let out = child.wait_with_output().await.ok()?;
    // "256 SHA256:abc [host]:port (ED25519)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let hash = words.nth(1)?.to_string();
    let kind = text.trim_end().rsplit(' ').next().unwrap_or("");
    Some(format!("{hash} {kind}"))
}

/// A client whose connections are `ssh … docker system dial-stdio`.
pub fn docker_over_ssh(
    target: &SshTarget,
    timeout_secs: u64,
    version: &ClientVersion,
) -> Result<Docker, Problem> {
    let connector = SshConnector {
        target: std::sync::Arc::new(target.clone()),
    };
    crate::connect::over(connector, "http://docker", timeout_secs, version)
        .map_err(|e| unreachable(target, &e.to_string()))
}

#[derive(Clone)]
struct SshConnector {
    target: std::sync::Arc<SshTarget>,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = SshStream;
    type Error = io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<SshStream, io::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let target = self.target.clone();
        Box::pin(async move {
            let mut cmd = target.command(true, &["docker", "system", "dial-stdio"]);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn()?;
            let stdin = child.stdin.take().ok_or(io::ErrorKind::BrokenPipe)?;
            let stdout = child.stdout.take().ok_or(io::ErrorKind::BrokenPipe)?;
            // What ssh says when a stream fails goes to the log, never to
            // the daemon's bytes.
            if let Some(mut stderr) = child.stderr.take() {
                let at = target.url();
                tokio::spawn(async move {
                    let mut text = String::new();
                    let _ = (&mut stderr).take(16 << 10).read_to_string(&mut text).await;
                    let text = text.trim();
                    if !text.is_empty() {
                        tracing::warn!(environment = %at, "ssh: {text}");
                    }
                });
            }
            Ok(SshStream {
                _child: child,
                stdin: TokioIo::new(stdin),
                stdout: TokioIo::new(stdout),
            })
        })
    }
}

/// One `docker system dial-stdio` over ssh: its stdout is read, its stdin
/// written. The process ends when the stream is dropped.
struct SshStream {
    _child: Child,
    stdin: TokioIo<ChildStdin>,
    stdout: TokioIo<ChildStdout>,
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdout).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stdin).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_shutdown(cx)
    }
}
