//! TLS to a daemon, built from material held in memory.
//!
//! The CA, the client certificate and its key arrive as PEM text (the key as
//! a [`Secret`], from the OS keyring or read from the Docker CLI's own files
//! for a moment): nothing is written to disk and no path is kept. Only the
//! given CA is trusted, as `docker --tlsverify` does; the daemon's name or
//! IP must be in its certificate. Connections are pooled, so a kept
//! environment does one handshake, not one per request.
//!
//! Failures are turned into sentences that say which side is wrong: the CA,
//! the daemon's certificate (expired, another host), the client certificate
//! the daemon refused, or a port that does not speak TLS at all.

use std::sync::Arc;

use bollard::{ClientVersion, Docker};
use changeover_core::secret::Secret;
use changeover_core::{Problem, ProblemCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS daemon's trust and client identity, as PEM text.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    /// The CA that signed the daemon's certificate.
    pub ca: String,
    /// The client certificate the daemon checks.
    pub cert: String,
    /// The client certificate's private key.
    pub key: Secret,
}

fn invalid(message: String) -> Problem {
    Problem::new(ProblemCode::InvalidTls, message)
}

/// A rustls client configuration trusting only `material.ca` and presenting
/// its client certificate.
pub fn client_config(material: &TlsMaterial) -> Result<rustls::ClientConfig, Problem> {
    let mut roots = rustls::RootCertStore::empty();
    let mut cas = 0;
    for cert in CertificateDer::pem_slice_iter(material.ca.as_bytes()) {
        let cert = cert.map_err(|e| invalid(format!("the CA is not readable PEM ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("the CA is not a usable certificate ({e})")))?;
        cas += 1;
    }
    if cas == 0 {
        return Err(invalid("the CA holds no certificate".into()));
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(material.cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("the client certificate is not readable PEM ({e})")))?;
    if chain.is_empty() {
        return Err(invalid(
            "the client certificate holds no certificate".into(),
        ));
    }
    // The parse error would not name the key's bytes, but say nothing of
    // them anyway: only that it is unreadable.
    let key = PrivateKeyDer::from_pem_slice(material.key.expose().as_bytes()).map_err(|_| {
        invalid("the client key is not a readable PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS cannot be set up: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            invalid(match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the client key does not belong to the client certificate".to_string()
                }
                other => format!("the client certificate or key cannot be used: {other}"),
            })
        })
}

/// A client for `https://HOST:PORT` over one pooled TLS connection.
pub fn docker_over_tls(
    host: &str,
    port: u16,
    material: &TlsMaterial,
    timeout_secs: u64,
    version: &ClientVersion,
) -> Result<Docker, Problem> {
    let config = client_config(material)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let address = format!("https://{}:{port}", crate::connect::bracket(host));
    crate::connect::over(https, &address, timeout_secs, version)
        .map_err(|e| invalid(format!("TLS cannot be set up: {e}")))
}

/// Why a TLS exchange with `host:port` fails, in rustls's words: one
/// handshake and one request, read until the first answer. Used when a
/// request failed without saying why — with TLS 1.3 a daemon refuses the
/// client certificate only after the handshake, and the HTTP client may see
/// nothing but a closed connection.
pub async fn handshake_error(host: &str, port: u16, material: &TlsMaterial) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = client_config(material).ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).ok()?;
    let run = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf).await.map(|_| ())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), run).await {
        Ok(Err(e)) => Some(changeover_core::problem::error_chain(&e)),
        _ => None,
    }
}

/// A sentence for a failed TLS exchange with `at` (`tcp://HOST:PORT`), from
/// the error's text (rustls and hyper name the cause in their chain).
pub fn explain(at: &str, chain: &str) -> Option<Problem> {
    // rustls names causes both as variants (UnknownIssuer) and in words
    // ("certificate expired"): compare without case and spaces.
    let flat: String = chain
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let says = |needle: &str| flat.contains(needle);
    let message = if says("unknownissuer") || says("badsignature") {
        format!(
            "the daemon at {at} shows a certificate that the CA given did not sign; check that the CA is this daemon's"
        )
    } else if says("expired") {
        format!("the daemon at {at} shows an expired certificate; renew the daemon's certificate")
    } else if says("notvalidyet") {
        format!("the daemon at {at} shows a certificate that is not valid yet (check both clocks)")
    } else if says("notvalidforname") {
        format!(
            "the daemon at {at} shows a certificate made for another name; use the name or IP its certificate is for"
        )
    } else if says("badcertificate")
        || says("certificaterequired")
        || says("unknownca")
        || says("decrypterror")
        || says("accessdenied")
    {
        format!(
            "the daemon at {at} refused the client certificate; it must be signed by the CA the daemon trusts (--tlscacert)"
        )
    } else if says("invalidcontenttype") || says("corruptmessage") || says("invalidmessage") {
        format!(
            "{at} does not speak TLS (a plain Docker port?); add it without TLS files, or use the daemon's TLS port"
        )
    } else {
        return None;
    };
    Some(invalid(message))
}
