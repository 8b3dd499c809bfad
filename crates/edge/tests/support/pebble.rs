//! Debian's pebble (the ACME test server) and its mock DNS on loopback, for
//! the tests that order certificates: the edge's process tests and the
//! workspace's deploy tests include this file (`#[path]`), so both start
//! it the same way. No request leaves the machine: the mock DNS answers
//! 127.0.0.1 for every name, and pebble validates on the ports given.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Pebble and its DNS, stopped when dropped.
pub struct Pebble {
    processes: Vec<Child>,
    _dir: tempfile::TempDir,
    /// Its ACME directory URL.
    pub directory: String,
    /// Its management port (`/roots/0`: the root it issues under).
    pub management: u16,
    /// PEM of the CA of pebble's own HTTPS: what a client of the directory
    /// (and of the management port) trusts.
    pub ca_pem: String,
    /// The same, as a file (for `changeover edge config --acme-ca`, curl).
    pub ca_file: std::path::PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Pebble {
    /// Validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    pub fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // pebble's HTTPS certificate, under a CA of its own.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test HTTPS CA");
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("the CA");
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|p| p.signed_by(&key, &ca))
            .expect("pebble's certificate");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("written");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("written");
        let (listen, management, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).expect("written");
        let ca_file = dir.path().join("https-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("written");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv runs (scripts/setup.sh installs pebble)");
        let mut processes = vec![dns_server];
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random delays and no random nonce refusals: a test of the
            // edge, not of luck.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble runs (scripts/setup.sh installs it)");
        processes.push(pebble);
        let started = Pebble {
            processes,
            _dir: dir,
            directory: format!("https://localhost:{listen}/dir"),
            management,
            ca_pem: ca.pem(),
            ca_file,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(Instant::now() < deadline, "pebble listens on {listen}");
            std::thread::sleep(Duration::from_millis(50));
        }
        started
    }

    /// The root pebble issues under (a new one each start), in PEM.
    pub fn root_pem(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca_file)
            .arg(format!("https://localhost:{}/roots/0", self.management))
            .output()
            .expect("curl runs");
        let pem = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(pem.contains("BEGIN CERTIFICATE"), "pebble's root: {pem}");
        pem
    }
}
