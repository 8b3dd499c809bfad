//! A remote host of the tests' own: a network namespace joined to this one
//! by a veth pair (so it has an address of its own, reached over a real
//! network hop), with a private `dockerd` serving TLS on TCP and an `sshd`
//! whose user reaches that daemon. Certificates are made here, fresh per
//! host (with `rcgen`): the daemon's CA, its server certificate, a client
//! certificate, and the wrong ones the failure tests need.
//!
//! Traffic goes only to this namespace. Everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{docker_at, unique, wait_for};

/// PEM files of one TLS identity.
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The remote host's certificates.
pub struct Certs {
    /// The CA the daemon trusts and that signed its certificate.
    pub ca: PathBuf,
    /// A client certificate that CA signed.
    pub client: Pem,
    /// Another CA, which signed nothing the daemon shows.
    pub other_ca: PathBuf,
    /// A client certificate the other CA signed (the daemon refuses it).
    pub stranger: Pem,
    /// A server certificate for the host from its CA, expired.
    pub expired_server: Pem,
}

pub struct RemoteHost {
    pub dir: tempfile::TempDir,
    namespace: String,
    /// The host's address, as seen from here.
    pub ip: String,
    /// The TLS port of its daemon.
    pub tls_port: u16,
    pub certs: Certs,
    dockerd: Option<Child>,
    sshd: Option<Child>,
    agent: Option<Child>,
    containerd_ns: String,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("a file of the remote host is written");
}

pub(crate) fn identity(
    dir: &Path,
    name: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Pem {
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, issuer).expect("a certificate");
    let pem = Pem {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    write(&pem.cert, &cert.pem());
    write(&pem.key, &key.serialize_pem());
    pem
}

pub(crate) fn ca(dir: &Path, name: &str) -> (PathBuf, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("changeover test {name}"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("a CA certificate");
    let path = dir.join(format!("{name}.pem"));
    write(&path, &cert.pem());
    (path, Issuer::new(params, key))
}

pub(crate) fn server_params(ip: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("server params");
    p.subject_alt_names = vec![SanType::IpAddress(ip.parse().expect("an IP"))];
    p.distinguished_name.push(DnType::CommonName, ip);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p
}

fn client_params() -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
    p.distinguished_name.push(DnType::CommonName, "client");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

impl RemoteHost {
    /// A host with its TLS daemon running (sshd starts with [`Self::start_sshd`]).
    pub fn start() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let k = (std::process::id() + n * 7) % 250 + 1;
        let namespace = format!("co-{}-{n}", std::process::id());
        let (outer, inner) = (format!("co{k}h{n}"), format!("co{k}r{n}"));
        let host_ip = format!("10.213.{k}.1");
        let ip_addr = format!("10.213.{k}.2");
        let dir = tempfile::Builder::new()
            .prefix("changeover-remote-")
            .tempdir()
            .expect("a folder for the remote host");
        ip(&["netns", "add", &namespace]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &namespace]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        for args in [
            vec!["addr", "add", &format!("{ip_addr}/30"), "dev", &inner],
            vec!["link", "set", &inner, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", &host_ip],
        ] {
            let mut full = vec!["netns", "exec", &namespace, "ip"];
            full.extend(args.iter().map(|s| -> &str { s }));
            ip(&full);
        }

        let d = dir.path();
        let (ca_path, issuer) = ca(d, "ca");
        let server = identity(d, "server", server_params(&ip_addr), &issuer);
        let client = identity(d, "client", client_params(), &issuer);
        let (other_ca, other) = ca(d, "other-ca");
        let stranger = identity(d, "stranger", client_params(), &other);
        let mut expired = server_params(&ip_addr);
        expired.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        expired.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let expired_server = identity(d, "expired-server", expired, &issuer);

        let mut host = RemoteHost {
            namespace,
            ip: ip_addr,
            tls_port: 2376,
            certs: Certs {
                ca: ca_path,
                client,
                other_ca,
                stranger,
                expired_server,
            },
            dockerd: None,
            sshd: None,
            agent: None,
            containerd_ns: unique("changeover-remote"),
            dir,
        };
        host.start_dockerd(&server);
        host
    }

    /// `unix://…` of the daemon, for the `docker` CLI on this machine.
    pub fn socket(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// `tcp://IP:PORT` of the daemon's TLS port.
    pub fn tls_url(&self) -> String {
        format!("tcp://{}:{}", self.ip, self.tls_port)
    }

    /// Starts `program` with `args` inside the host's namespace (a server a
    /// test needs there); it is killed when the guard drops.
    /// Its output goes to `PROGRAM.log` in [`Self::dir`].
    pub fn spawn(&self, program: &str, args: &[&str]) -> crate::KillOnDrop {
        let log = std::fs::File::create(self.dir.path().join(format!("{program}.log")))
            .expect("a log file");
        let child = self
            .in_namespace(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("a program runs in the remote host");
        crate::KillOnDrop(child)
    }

    /// `program` inside the host's network namespace. `nsenter` enters the
    /// network namespace only (`ip netns exec` would also remount /sys,
    /// hiding the cgroups dockerd needs).
    fn in_namespace(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.namespace))
            .arg("--")
            .arg(program);
        c
    }

    fn start_dockerd(&mut self, server: &Pem) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).expect("a log file");
        let child = self
            .in_namespace("dockerd")
            .arg("--host")
            .arg(self.socket())
            .arg("--host")
            .arg(format!("tcp://{}:{}", self.ip, self.tls_port))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(&self.certs.ca)
            .arg("--tlscert")
            .arg(&server.cert)
            .arg("--tlskey")
            .arg(&server.key)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--containerd-namespace", &self.containerd_ns])
            .args([
                "--containerd-plugins-namespace",
                &format!("{}-plugins", self.containerd_ns),
            ])
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("dockerd runs (scripts/setup.sh installs docker.io)");
        self.dockerd = Some(child);
        crate::wait_for_daemon(&self.socket(), &d.join("dockerd.log"));
        crate::load_fixture(&self.socket());
    }

    /// A `docker` command against this host's daemon.
    pub fn docker(&self, args: &[&str]) -> String {
        docker_at(Some(&self.socket()), args)
    }

    /// Starts an sshd in the namespace whose logins reach the daemon, and an
    /// ssh-agent holding the key it accepts. Answers `(ssh://root@IP, SSH_AUTH_SOCK)`.
    pub fn start_sshd(&mut self) -> (String, String) {
        let d = self.dir.path();
        std::fs::create_dir_all("/run/sshd").expect("sshd's privilege separation folder");
        let host_key = d.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            keygen(&host_key);
        }
        let user_key = d.join("id_ed25519");
        if !user_key.exists() {
            keygen(&user_key);
            std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys"))
                .expect("authorized_keys");
        }
        write(
            &d.join("sshd_config"),
            &format!(
                "ListenAddress {ip}\nPort 22\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PidFile {pid}\nSetEnv DOCKER_HOST={sock}\n",
                ip = self.ip,
                hk = host_key.display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
                sock = self.socket(),
            ),
        );
        let child = self
            .in_namespace("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .spawn()
            .expect("sshd runs (scripts/setup.sh installs openssh-server)");
        self.sshd = Some(child);
        let addr = format!("{}:22", self.ip);
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).ok()
        });
        assert!(
            up.is_some(),
            "sshd does not listen: {}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
        let agent = self.agent_with(&[&user_key]);
        (format!("ssh://root@{}", self.ip), agent)
    }

    /// A new ssh-agent holding `keys`; its socket.
    pub fn agent_with(&mut self, keys: &[&Path]) -> String {
        let socket = self.dir.path().join(format!("{}.sock", unique("agent")));
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent runs");
        wait_for(Duration::from_secs(5), || socket.exists().then_some(()))
            .expect("the agent's socket appears");
        for key in keys {
            run(Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &socket)
                .stderr(Stdio::null()));
        }
        if let Some(mut old) = self.agent.replace(child) {
            // Keep earlier agents alive only as long as the host.
            let _ = old.kill();
            let _ = old.wait();
        }
        socket.display().to_string()
    }

    /// Gives the sshd a new host key (as a reinstalled host would have);
    /// answers the socket of a new agent holding the accepted user key.
    pub fn change_host_key(&mut self) -> String {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let key = self.dir.path().join("ssh_host_ed25519_key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        keygen(&key);
        let (_, agent) = self.start_sshd();
        agent
    }
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path));
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        for c in [self.sshd.take(), self.agent.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut child) = self.dockerd.take() {
            let socket = self.socket();
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker -H {socket} ps -aq | xargs -r docker -H {socket} rm -f >/dev/null 2>&1"
                ))
                .status();
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "awk '$2 ~ \"^{}\" {{print $2}}' /proc/mounts | xargs -r umount -l 2>/dev/null",
                self.dir.path().display()
            ))
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}
