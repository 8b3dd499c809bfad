//! Certificates by ACME (RFC 8555) for sites with `tls: acme`.
//!
//! One task per edge ([`run`]) keeps every such site with a certificate:
//! it orders one when a site has none, when its hosts changed, and when the
//! one it has ends within [`RENEW_BEFORE`] (or within the last third of its
//! lifetime, for short-lived ones). It wakes when routes or settings change
//! ([`Acme::wake`]) and otherwise every [`CHECK_EVERY`]. A failed order is
//! tried again after a back-off that doubles from 30 s to an hour; the
//! failure is the site's certificate state (`changeover edge config`, the
//! window) and a line in the edge's log.
//!
//! The challenge is the one [`EdgeConfig::acme_challenge`] names:
//! - HTTP-01: the key authorization is answered at
//!   `/.well-known/acme-challenge/TOKEN` on the shared HTTP port, for any
//!   host, before sites are looked up (see `proxy`);
//! - TLS-ALPN-01 (RFC 8737): a handshake on the shared HTTPS port that
//!   offers only `acme-tls/1` gets a self-signed certificate carrying the
//!   key authorization's digest (see [`crate::sites`]).
//!
//! The account (its key) is kept in the state volume as
//! `acme/account.json`, one per directory URL, created on first use; the
//! certificates and their keys are kept beside those given as files
//! (`certs/STACK@SERVICE.acme.pem`). Requests go to the directory over
//! HTTPS only, trusting [`EdgeConfig::acme_ca`] when it is given (a test
//! CA like pebble's) and the public roots otherwise: the edge's image has
//! no system store.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use changeover_core::edge::{AcmeChallenge, EdgeConfig, LETS_ENCRYPT_DIRECTORY};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};

use crate::sites::Sites;
use crate::store::StoredFile;

/// Renew a certificate this long before it ends (Let's Encrypt's 90-day
/// certificates are renewed with 30 days left, as certbot does).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often certificates are looked at when nothing wakes the task.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// The longest one order may take, challenges and polling included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest one request to the CA may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer taken from the CA (a chain is a few kB).
const MAX_ANSWER: usize = 1024 * 1024;

/// What wakes the ACME task, and when it looks again on its own.
pub struct Acme {
    wake: tokio::sync::Notify,
    /// Handed over to a new edge: that one orders now.
    paused: std::sync::atomic::AtomicBool,
    renew_override: Option<Duration>,
    check_every: Duration,
}

impl Acme {
    /// `CHANGEOVER_EDGE_ACME_RENEW_BEFORE_S` and
    /// `CHANGEOVER_EDGE_ACME_CHECK_MS` override the two periods (tests
    /// renew within seconds with them).
    pub fn new() -> Self {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Self {
            wake: tokio::sync::Notify::new(),
            paused: std::sync::atomic::AtomicBool::new(false),
            renew_override: env("CHANGEOVER_EDGE_ACME_RENEW_BEFORE_S").map(Duration::from_secs),
            check_every: env("CHANGEOVER_EDGE_ACME_CHECK_MS")
                .map(Duration::from_millis)
                .unwrap_or(CHECK_EVERY),
        }
    }

    /// Look at the sites again now (routes or settings changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops (or resumes) ordering: while a new edge takes over, it alone
    /// writes the certificates.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }
}

/// A service's failures in a row, and when it is tried again.
struct Backoff {
    failures: u32,
    next: Instant,
}

/// Keeps every site with `tls: acme` with a valid certificate, until the
/// edge exits.
pub async fn run(sites: Arc<Sites>, acme: Arc<Acme>, dir: Option<PathBuf>) {
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    loop {
        let mut wait = acme.check_every;
        let paused = acme.paused.load(std::sync::atomic::Ordering::SeqCst);
        let wanted = sites.acme_sites();
        for (service, hosts) in wanted.iter().filter(|_| !paused) {
            let (service, hosts) = (service.as_str(), hosts.as_slice());
            let Some(reason) = sites.acme_need(service, hosts, RENEW_BEFORE, acme.renew_override)
            else {
                continue;
            };
            let now = Instant::now();
            if let Some(b) = backoff.get(service).filter(|b| b.next > now) {
                wait = wait.min(b.next - now);
                continue;
            }
            let renewing = sites.has_cert(service);
            sites.set_acme_state(
                service,
                Some(if renewing { "renewing" } else { "ordering" }.into()),
            );
            let config = sites.config();
            let ordered =
                tokio::time::timeout(ORDER_TIMEOUT, order(&sites, &config, dir.as_deref(), hosts))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no certificate within {}s",
                            ORDER_TIMEOUT.as_secs()
                        ))
                    });
            match ordered.and_then(|(chain, key)| sites.put_acme_cert(service, &chain, &key)) {
                Ok(()) => {
                    eprintln!(
                        "changeover-edge: {service}: a certificate for {} ({reason})",
                        hosts.join(", ")
                    );
                    backoff.remove(service);
                    sites.set_acme_state(service, None);
                    crate::changes::bump();
                }
                Err(e) => {
                    let b = backoff.entry(service.to_string()).or_insert(Backoff {
                        failures: 0,
                        next: now,
                    });
                    b.failures += 1;
                    let delay = Duration::from_secs(30 << (b.failures - 1).min(7))
                        .min(Duration::from_secs(3600));
                    b.next = Instant::now() + delay;
                    wait = wait.min(delay);
                    eprintln!("changeover-edge: {service}: no certificate: {e}");
                    sites.set_acme_state(
                        service,
                        Some(format!("failed: {e} (next try in {}s)", delay.as_secs())),
                    );
                    crate::changes::bump();
                }
            }
        }
        // Sites that went (or lost `tls: acme`) start afresh if they come back.
        backoff.retain(|s, _| wanted.iter().any(|(o, _)| o == s));
        tokio::select! {
            _ = acme.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The account as stored: for which directory, and its credentials (its
/// private key: the file is readable by the edge alone).
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Orders a certificate for `hosts`: `(chain PEM, key PEM)`.
async fn order(
    sites: &Sites,
    config: &EdgeConfig,
    dir: Option<&Path>,
    hosts: &[String],
) -> Result<(String, String), String> {
    let directory = config
        .acme_directory
        .clone()
        .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_string());
    let account = account(config, &directory, dir).await?;
    let identifiers: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("the CA refused the order: {e}"))?;
    let kind = match config.acme_challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    // What is served for the CA, taken down again whatever happens.
    let mut served = Served {
        sites,
        tokens: Vec::new(),
        names: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("cannot read an authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("an authorization is {other:?}")),
        }
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
        let key_authorization = challenge.key_authorization();
        let name = challenge.identifier().to_string();
        match kind {
            ChallengeType::TlsAlpn01 => {
                let key = alpn_certificate(&name, key_authorization.digest().as_ref())?;
                sites.set_alpn_challenge(&name, Some(key));
                served.names.push(name);
            }
            _ => {
                sites.set_http01(
                    &challenge.token,
                    Some(key_authorization.as_str().to_string()),
                );
                served.tokens.push(challenge.token.clone());
            }
        }
        challenge.set_ready().await.map_err(|e| {
            format!(
                "the CA refused the challenge for {}: {e}",
                challenge.identifier()
            )
        })?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(60));
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|e| format!("waiting for the CA: {e}"))?;
    if status != OrderStatus::Ready {
        let why = order
            .authorizations()
            .next()
            .await
            .and_then(|a| a.ok())
            .and_then(|a| {
                a.challenges
                    .iter()
                    .find_map(|c| c.error.as_ref().map(|e| e.to_string()))
            })
            .unwrap_or_else(|| format!("the order is {status:?}"));
        return Err(format!("the CA could not check the names: {why}"));
    }
    drop(served);
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("the CA refused to finalize: {e}"))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(|e| format!("the certificate did not come: {e}"))?;
    Ok((chain_pem, key_pem))
}

/// Takes the challenge answers down when dropped.
struct Served<'a> {
    sites: &'a Sites,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.sites.set_http01(t, None);
        }
        for n in &self.names {
            self.sites.set_alpn_challenge(n, None);
        }
    }
}

/// The account for `directory`: the stored one, or a new one (stored).
async fn account(
    config: &EdgeConfig,
    directory: &str,
    dir: Option<&Path>,
) -> Result<Account, String> {
    let file = dir.map(|d| StoredFile::new(d.join("acme").join("account.json")));
    let http = || -> Result<Box<dyn HttpClient>, String> { Ok(Box::new(Https::new(config)?)) };
    if let Some(file) = &file {
        let loaded = file.load(|bytes| {
            serde_json::from_slice::<StoredAccount>(bytes)
                .map(Some)
                .map_err(|e| e.to_string())
        });
        for note in loaded.notes {
            eprintln!("changeover-edge: {note}");
        }
        if let Some(stored) = loaded.value.filter(|s| s.directory == directory) {
            return Account::builder_with_http(http()?)
                .from_credentials(stored.credentials)
                .await
                .map_err(|e| format!("the stored ACME account cannot be used: {e}"));
        }
    }
    let contact = config.acme_email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_string(),
            None,
        )
        .await
        .map_err(|e| format!("cannot open an account at {directory}: {e}"))?;
    if let Some(file) = &file {
        if let Some(parent) = file.path().parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let stored = StoredAccount {
            directory: directory.to_string(),
            credentials,
        };
        file.save(|| serde_json::to_vec(&stored).map_err(|e| e.to_string()))?;
    }
    Ok(account)
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed, with
/// the `acmeIdentifier` extension holding the key authorization's digest.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let bad = |e: rcgen::Error| format!("cannot make the challenge certificate: {e}");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot read the challenge key: {e}"))?;
    // Not `CertifiedKey::from_der`: its check parses the certificate as a
    // server's, which refuses the critical acmeIdentifier extension.
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("cannot use the challenge key: {e}"))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// The edge's HTTPS client towards the CA: one connection per request
/// (an order is a dozen requests), HTTP/1.1, bounded in time and size.
struct Https {
    tls: tokio_rustls::TlsConnector,
}

impl Https {
    fn new(config: &EdgeConfig) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &config.acme_ca {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| format!("the ACME CA is not PEM: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("the ACME CA cannot be used: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }
}

type Boxed = Box<dyn std::error::Error + Send + Sync>;

impl HttpClient for Https {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, send(tls, req))
                .await
                .unwrap_or_else(|_| Err("the CA did not answer in time".into()))
                .map_err(instant_acme::Error::Other)
        })
    }
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    req: hyper::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, Boxed> {
    use http_body_util::BodyExt;
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(format!("the CA is asked over HTTPS only, not {uri}").into());
    }
    let host = uri.host().ok_or("a URL without a host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )?;
    let stream = tls.connect(name, tcp).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host);
    parts.uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()?;
    parts.headers.insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_str(&authority)?,
    );
    let res = sender
        .send_request(hyper::Request::from_parts(parts, body))
        .await?;
    let (parts, body) = res.into_parts();
    let body = http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await?
        .to_bytes();
    Ok(BytesResponse::from(hyper::Response::from_parts(
        parts,
        http_body_util::Full::new(body),
    )))
}
