//! The HTTPS section of bench/edge: the edge (a site with its certificate
//! given as files, on its shared HTTPS port), HAProxy and nginx terminating
//! TLS with the same certificate (ECDSA P-256, from a CA made per run) in
//! front of the same backends.
//!
//! - Keep-alive throughput: `h2load --h1` (it sends SNI, which `wrk` cannot
//!   for a name that does not resolve), 64 connections, two threads.
//! - New handshakes per second: four clients that each open a connection,
//!   do a full TLS handshake (no resumption), send one request with
//!   `Connection: close` and read the answer, again and again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    edge_binary, free_port, haproxy_with, nginx_with, start_edge_at, wait_listening, Proc,
    CONNECTIONS,
};

pub const HOST: &str = "bench.example.test";

/// The certificate files: chain, key, both in one file (HAProxy's form),
/// and the CA's PEM.
pub struct Certificate {
    pub chain: PathBuf,
    pub key: PathBuf,
    pub combined: PathBuf,
    ca_pem: String,
}

fn certificate(dir: &Path) -> Certificate {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![HOST.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let out = Certificate {
        chain: dir.join("bench.pem"),
        key: dir.join("bench-key.pem"),
        combined: dir.join("bench-both.pem"),
        ca_pem: ca.pem(),
    };
    std::fs::write(&out.chain, cert.pem()).unwrap();
    std::fs::write(&out.key, key.serialize_pem()).unwrap();
    std::fs::write(
        &out.combined,
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
    .unwrap();
    out
}

/// The edge with its route made a site with TLS: its shared HTTPS port.
fn start_edge_https(dir: &Path, backends: &[u16], cert: &Certificate) -> (Proc, u16) {
    let state = dir.join("edge-https");
    let (proc, port) = start_edge_at(dir, backends, false, Some(&state));
    let https = free_port();
    // One session: the key goes on stdin, never on a command line.
    let mut session = Command::new(edge_binary())
        .args(["ctl", "-", "--state"])
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let requests = [
        json!({"op": "config-set", "config": {"httpPort": free_port(), "httpsPort": https}}),
        json!({"op": "cert-put", "service": "bench/web",
               "certPem": std::fs::read_to_string(&cert.chain).unwrap(),
               "keyPem": std::fs::read_to_string(&cert.key).unwrap()}),
        json!({"op": "route-set", "route": {
            "port": port, "service": "bench/web",
            "health": {"path": "/health", "intervalMs": 1000, "timeoutMs": 1000,
                       "healthyThreshold": 1, "unhealthyThreshold": 3},
            "drainTimeoutMs": 5000, "hosts": [HOST], "tls": {"certificate": "files"}}}),
    ];
    {
        let mut stdin = session.stdin.take().unwrap();
        for r in &requests {
            writeln!(stdin, "{r}").unwrap();
        }
    }
    let out = session.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(answers.len(), requests.len(), "{text}");
    for a in answers {
        assert!(!a.contains("\"error\""), "the edge refused: {a}");
    }
    wait_listening(https, "the edge's HTTPS port");
    (proc, https)
}

/// What one `h2load` run printed.
struct H2load {
    requests_per_sec: f64,
    succeeded: u64,
    failed: u64,
    mean_ms: f64,
}

fn h2load(port: u16, seconds: u64) -> H2load {
    let out = Command::new("h2load")
        .arg(format!("https://{HOST}:{port}/"))
        .arg(format!("--connect-to=127.0.0.1:{port}"))
        .args([
            "--h1",
            "-t",
            "2",
            "-c",
            &CONNECTIONS.to_string(),
            "-D",
            &seconds.to_string(),
        ])
        .output()
        .expect("h2load runs (scripts/setup.sh installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let number_after = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start()
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?
            .parse()
            .ok()
    };
    let line = |start: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or("")
    };
    let finished = line("finished in");
    let requests = line("requests:");
    let mean = line("time for request:");
    // "time for request:  min  max  mean  sd  +/- sd", each with its unit.
    let mean_ms = mean
        .split_whitespace()
        .skip(3)
        .nth(2)
        .map(|m| {
            let (n, unit) =
                m.split_at(m.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(m.len()));
            let n: f64 = n.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => n / 1000.0,
                "s" => n * 1000.0,
                _ => n,
            }
        })
        .unwrap_or(f64::NAN);
    H2load {
        requests_per_sec: finished
            .split(',')
            .nth(1)
            .and_then(|p| p.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN),
        succeeded: number_after(requests, "done,").unwrap_or(0.0) as u64,
        failed: (number_after(requests, "succeeded,").unwrap_or(0.0)
            + number_after(requests, "failed,").unwrap_or(0.0)) as u64,
        mean_ms,
    }
}

/// Full handshakes (and one request each) per second by four clients.
fn handshakes(port: u16, ca_pem: &str, seconds: u64) -> (f64, u64) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    runtime.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (connector, done, failed) = (connector.clone(), done.clone(), failed.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
                    while Instant::now() < until {
                        let one = async {
                            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                            let mut tls = connector.connect(name.clone(), tcp).await?;
                            tls.write_all(
                                format!(
                                    "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                                )
                                .as_bytes(),
                            )
                            .await?;
                            let mut answer = Vec::new();
                            let _ = tls.read_to_end(&mut answer).await;
                            if answer.starts_with(b"HTTP/1.1 200") {
                                Ok(())
                            } else {
                                Err(std::io::Error::other("not a 200"))
                            }
                        };
                        match one.await {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}

/// Runs the section and prints it.
pub fn run(dir: &Path, backends: &[u16], seconds: u64) {
    let cert = certificate(dir);
    let (_edge, edge) = start_edge_https(dir, backends, &cert);
    let (_haproxy, haproxy) = haproxy_with(dir, backends, false, Some(&cert));
    let (_nginx, nginx) = nginx_with(dir, backends, false, Some(&cert));
    println!(
        " https: the same ECDSA P-256 certificate on each; h2load --h1 -t2 -c{CONNECTIONS} -D{seconds} keep-alive (SNI {HOST}); then 4 clients doing full handshakes (no resumption) + one request each for {seconds} s"
    );
    let proxies = [("edge", edge), ("haproxy", haproxy), ("nginx", nginx)];
    let mut rps = Vec::new();
    let mut hs = Vec::new();
    for (name, port) in proxies {
        h2load(port, 2); // warm-up
        let r = h2load(port, seconds);
        let (per_sec, failed) = handshakes(port, &cert.ca_pem, seconds);
        println!(
            "  {name:<8} keep-alive {:>9.0} req/s, mean {:>6.2} ms ({} done, {} not 2xx or failed); new handshakes {:>7.0}/s ({failed} failed)",
            r.requests_per_sec, r.mean_ms, r.succeeded, r.failed, per_sec
        );
        rps.push(r.requests_per_sec);
        hs.push(per_sec);
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "  edge/haproxy: keep-alive {:.2}x, handshakes {:.2}x; edge/nginx: keep-alive {:.2}x, handshakes {:.2}x",
        ratio(rps[0], rps[1]),
        ratio(hs[0], hs[1]),
        ratio(rps[0], rps[2]),
        ratio(hs[0], hs[2])
    );
}
