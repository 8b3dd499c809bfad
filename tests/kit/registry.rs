//! A real registry for the tests: Debian's `docker-registry` (Distribution
//! 2.8) on loopback, plain or with htpasswd authentication, storing in a
//! temporary folder, with images pushed to it by the `docker` CLI. The
//! Docker daemon speaks plain HTTP to loopback registries by itself, so
//! nothing in the daemon's settings changes. The `docker` CLI's logins go
//! to a config folder of the registry's own, never the user's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{docker, fixture_image, free_port, wait_for, KillOnDrop};

/// The registry binary (scripts/setup.sh installs Debian's `docker-registry`).
const BINARY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// `(user, password)` when it asks for them.
    pub login: Option<(String, String)>,
    /// The CA (PEM file) its certificate is signed by, when it serves TLS.
    pub ca: Option<PathBuf>,
    /// The local tags pushed, removed when it drops.
    pushed: std::sync::Mutex<Vec<String>>,
    _proc: KillOnDrop,
}

impl Registry {
    /// A registry with no authentication.
    pub fn plain() -> Registry {
        Registry::start(None, false)
    }

    /// A registry that takes only `user` with `password` (htpasswd, bcrypt).
    pub fn with_login(user: &str, password: &str) -> Registry {
        Registry::start(Some((user.to_string(), password.to_string())), false)
    }

    /// The same behind TLS, its certificate (for 127.0.0.1) signed by a CA
    /// made for it ([`Registry::ca`]).
    pub fn with_login_and_tls(user: &str, password: &str) -> Registry {
        Registry::start(Some((user.to_string(), password.to_string())), true)
    }

    fn start(login: Option<(String, String)>, tls: bool) -> Registry {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing (scripts/setup.sh installs docker-registry)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: changeover-test\n",
            dir.path().join("data").display()
        );
        let ca = tls.then(|| {
            let (ca, issuer) = crate::remote::ca(dir.path(), "registry-ca");
            let server = crate::remote::identity(
                dir.path(),
                "registry",
                crate::remote::server_params("127.0.0.1"),
                &issuer,
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                server.cert.display(),
                server.key.display()
            ));
            ca
        });
        if let Some((user, password)) = &login {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs (scripts/setup.sh installs apache2-utils)");
            assert!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: changeover-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let proc = KillOnDrop(child);
        wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "the registry answers on port {port}: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            )
        });
        let registry = Registry {
            port,
            dir,
            login,
            ca,
            pushed: Default::default(),
            _proc: proc,
        };
        if let Some((user, password)) = &registry.login {
            registry.docker(
                &["login", "-u", user, "--password-stdin", &registry.host()],
                Some(password),
            );
        }
        registry
    }

    /// Stops the registry (the local tags stay until it drops).
    pub fn stop(&mut self) {
        let _ = self._proc.0.kill();
        let _ = self._proc.0.wait();
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `docker` CLI's config folder for this registry's logins.
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// Runs the `docker` CLI with this registry's logins.
    fn docker(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new("docker")
            .arg("--config")
            .arg(self.docker_config())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Builds an image per tag (the fixture with a label naming the tag, so
    /// each has its own digest) and pushes `repo:tag` to this registry; the
    /// local tags stay until the registry drops.
    pub fn push(&self, repo: &str, tags: &[&str]) {
        let base = fixture_image();
        for tag in tags {
            let reference = format!("{}/{repo}:{tag}", self.host());
            let ctx = tempfile::tempdir().unwrap();
            std::fs::write(
                ctx.path().join("Dockerfile"),
                format!("FROM {base}\nLABEL dev.changeover.test.tag=\"{repo}:{tag}\"\n"),
            )
            .unwrap();
            docker(&[
                "build",
                "-q",
                "-t",
                &reference,
                ctx.path().to_str().unwrap(),
            ]);
            self.push_built(&reference);
        }
    }

    /// Pushes `local` with a layer of its own on top (so a pull has
    /// something to download) as `repo:tag`; the local tag stays until the
    /// registry drops.
    pub fn push_image(&self, local: &str, repo: &str, tag: &str) -> String {
        let reference = format!("{}/{repo}:{tag}", self.host());
        crate::build_stamped(&reference, local);
        self.push_built(&reference);
        reference
    }

    fn push_built(&self, reference: &str) {
        self.docker(&["push", "-q", reference], None);
        self.pushed.lock().unwrap().push(reference.to_string());
    }

    /// The `Authorization` for this registry's API, when it asks for one.
    fn authorization(&self) -> Option<String> {
        use base64::Engine as _;
        self.login.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    fn api(&self, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/v2/{path}", self.host())
    }

    /// `repo:tag`'s manifest (Docker's v2 schema): (media type, body).
    pub fn manifest(&self, repo: &str, tag: &str) -> (String, String) {
        let accept = "application/vnd.docker.distribution.manifest.v2+json";
        let mut request =
            ureq::get(&self.api(&format!("{repo}/manifests/{tag}"))).set("Accept", accept);
        if let Some(a) = self.authorization() {
            request = request.set("Authorization", &a);
        }
        let got = request.call().expect("the registry gives the manifest");
        let kind = got.header("Content-Type").unwrap_or(accept).to_string();
        (kind, got.into_string().unwrap())
    }

    /// Puts `body` (of media type `kind`) as `repo:tag`'s manifest.
    pub fn put_manifest(&self, repo: &str, tag: &str, kind: &str, body: &str) {
        let mut request =
            ureq::put(&self.api(&format!("{repo}/manifests/{tag}"))).set("Content-Type", kind);
        if let Some(a) = self.authorization() {
            request = request.set("Authorization", &a);
        }
        request
            .send_string(body)
            .expect("the registry takes the manifest");
    }

    /// Points `repo:to` at the image of `repo:from` in the registry only
    /// (what a push from another machine does); local tags stay as they are.
    pub fn retag(&self, repo: &str, from: &str, to: &str) {
        let (kind, body) = self.manifest(repo, from);
        self.put_manifest(repo, to, &kind, &body);
    }

    /// Removes the local tag `repo:tag` (the registry keeps it).
    pub fn forget_locally(&self, repo: &str, tag: &str) {
        docker(&["rmi", &format!("{}/{repo}:{tag}", self.host())]);
    }
}

impl Drop for Registry {
    /// Removes every local image of this registry: the tags pushed, and
    /// what pulls of it left behind (older copies of a tag pushed again).
    fn drop(&mut self) {
        let prefix = format!("{}/", self.host());
        let mut ids: Vec<String> =
            std::mem::take(&mut *self.pushed.lock().unwrap_or_else(|p| p.into_inner()));
        if let Ok(out) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}} {{.ID}}"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((repo, id)) = line.split_once(' ') {
                    if repo.starts_with(&prefix) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rmi")
                .arg("-f")
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The registry again on another loopback port, passing every request
/// through except a blob's download, which it holds open with no answer:
/// a pull from it starts (manifest, layers listed) and never ends, until
/// the client goes. For stopping a pull mid-way.
pub struct StalledBlobs {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The clients' connections, to cut.
    clients: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Registry {
    /// A [`StalledBlobs`] in front of this registry.
    pub fn with_stalled_blobs(&self) -> StalledBlobs {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = self.port;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let clients = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = clients.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut client) = client else { continue };
                if let Ok(c) = client.try_clone() {
                    kept.lock().unwrap().push(c);
                }
                std::thread::spawn(move || {
                    let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream))
                    else {
                        return;
                    };
                    if let (Ok(mut from), Ok(mut to)) = (server.try_clone(), client.try_clone()) {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        });
                    }
                    let mut buf = [0u8; 16 * 1024];
                    let mut stalled = false;
                    loop {
                        let n = match client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.starts_with("GET ") && text.contains("/blobs/") {
                            stalled = true;
                        }
                        // Once stalled, what the client sends is read and
                        // dropped until it goes.
                        if !stalled && server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        StalledBlobs {
            port,
            stop,
            clients,
        }
    }
}

impl StalledBlobs {
    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Goes away as a registry that died does: no new connection is
    /// taken, and every open one (a blob held mid-way) is cut.
    pub fn cut(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        for c in self.clients.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for StalledBlobs {
    fn drop(&mut self) {
        self.cut();
    }
}
