//! Sites: routes that also answer by host name on the edge's two shared
//! ports (plain HTTP and HTTPS), the certificates they are served with, and
//! the edge's own settings ([`EdgeConfig`]).
//!
//! A route with `hosts` is reached on its own port as before, and on the
//! shared ports by the request's `Host` (and, over TLS, by SNI while the
//! handshake picks the certificate). A name is exact (`app.example.test`)
//! or a wildcard for one label (`*.example.test`); an exact name wins.
//! Every host belongs to one route; a second service asking for it is
//! refused.
//!
//! Certificates given as files arrive with `cert-put` and are kept in the
//! state volume as `certs/STACK@SERVICE.pem` (chain, then key; readable by
//! the edge alone, saved like every stored file, see [`crate::store`]).
//! They are checked when they arrive — they parse, the key is the
//! certificate's, the names cover the route's hosts — and the key is never
//! printed. A service's certificate goes when its last route does.
//!
//! This module is a leaf: it knows host names, settings and certificates,
//! not routes or listeners (the control side hands it the routes' hosts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use changeover_core::edge::{
    is_site_host, CertificateSource, CertificateStatus, EdgeConfig, SiteTls,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::store::StoredFile;

/// Where a host name goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The route's own port: its identity.
    pub port: u16,
    pub service: String,
    pub tls: Option<SiteTls>,
}

/// A route's hosts, as the control side hands them over.
pub struct RouteHosts<'a> {
    pub port: u16,
    pub service: &'a str,
    pub hosts: &'a [String],
    pub tls: Option<SiteTls>,
}

struct Held {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    issuer: String,
    not_before_ms: i64,
    not_after_ms: i64,
    source: CertificateSource,
}

#[derive(Default)]
struct Index {
    hosts: HashMap<String, Site>,
    /// By `stack/service`.
    certs: HashMap<String, Held>,
    /// ACME HTTP-01 answers: token → key authorization.
    http01: HashMap<String, String>,
    /// ACME TLS-ALPN-01 certificates, by the name being validated.
    alpn: HashMap<String, Arc<CertifiedKey>>,
    /// What the ACME side is doing for a service (`ordering`, the last
    /// failure...), for the window.
    acme_state: HashMap<String, String>,
}

impl Index {
    fn lookup(&self, host: &str) -> Option<&Site> {
        if let Some(site) = self.hosts.get(host) {
            return Some(site);
        }
        let (_, parent) = host.split_once('.')?;
        self.hosts.get(&format!("*.{parent}"))
    }
}

/// The edge's settings, its sites and their certificates.
pub struct Sites {
    index: Arc<RwLock<Index>>,
    config: RwLock<EdgeConfig>,
    config_file: Option<StoredFile>,
    certs_dir: Option<PathBuf>,
    tls: Arc<rustls::ServerConfig>,
}

/// Picks the certificate by SNI while the handshake runs.
#[derive(Debug)]
struct BySni(Arc<RwLock<Index>>);

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} hosts, {} certificates",
            self.hosts.len(),
            self.certs.len()
        )
    }
}

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let index = self.0.read().unwrap_or_else(|p| p.into_inner());
        if acme {
            // The CA validating a name: its challenge certificate, or none.
            return index.alpn.get(&name).cloned();
        }
        let site = index.lookup(&name)?;
        site.tls?;
        index.certs.get(&site.service).map(|h| h.key.clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Sites {
    /// Settings and certificates kept in `dir` (`None`: in memory).
    /// Answers what was wrong with the stored files, for the log.
    pub fn new(dir: Option<&Path>) -> Result<(Self, Vec<String>), String> {
        let index = Arc::new(RwLock::new(Index::default()));
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni(index.clone())));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        let config_file = dir.map(|d| StoredFile::new(d.join("config.json")));
        let mut notes = Vec::new();
        let config = match &config_file {
            Some(f) => {
                let loaded = f.load(|bytes| {
                    serde_json::from_slice::<EdgeConfig>(bytes).map_err(|e| e.to_string())
                });
                notes.extend(loaded.notes);
                loaded.value
            }
            None => EdgeConfig::default(),
        };
        let sites = Self {
            index,
            config: RwLock::new(config),
            config_file,
            certs_dir: dir.map(|d| d.join("certs")),
            tls: Arc::new(tls),
        };
        notes.extend(sites.load_certs());
        Ok((sites, notes))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS settings of the shared HTTPS port.
    pub fn tls(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    pub fn config(&self) -> EdgeConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks and stores new settings (the caller reopens the ports).
    pub fn set_config(&self, config: EdgeConfig) -> Result<(), String> {
        check_config(&config)?;
        if let Some(file) = &self.config_file {
            file.save(|| serde_json::to_vec_pretty(&config).map_err(|e| e.to_string()))?;
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// Where `host` (lower case, without a port) goes.
    pub fn lookup(&self, host: &str) -> Option<Site> {
        self.read().lookup(host).cloned()
    }

    /// Refuses `route`'s hosts when another route has one of them, or when
    /// its certificate (given as files) is missing or does not cover them.
    pub fn check<'a>(
        &self,
        route: &RouteHosts<'_>,
        others: impl Iterator<Item = RouteHosts<'a>>,
    ) -> Result<(), String> {
        for h in route.hosts {
            if !is_site_host(h) {
                return Err(format!("{h:?} is not a host name a site may have"));
            }
        }
        for other in others.filter(|o| o.port != route.port) {
            if let Some(h) = route.hosts.iter().find(|h| other.hosts.contains(h)) {
                return Err(format!(
                    "the host {h} is already routed to {}",
                    other.service
                ));
            }
        }
        let Some(tls) = route.tls else {
            return Ok(());
        };
        if route.hosts.is_empty() {
            return Err("tls needs hosts: the certificate is chosen by host name".into());
        }
        match tls.certificate {
            CertificateSource::Acme => match route.hosts.iter().find(|h| h.starts_with("*.")) {
                Some(h) => Err(format!(
                    "{h}: a wildcard certificate needs the DNS-01 challenge, which this edge does not answer; give it as files (tls: {{cert: FILE, key: FILE}})"
                )),
                None => Ok(()),
            },
            CertificateSource::Files => {
                let index = self.read();
                let Some(held) = index.certs.get(route.service) else {
                    return Err(format!(
                        "no certificate was given for {} (cert-put comes first)",
                        route.service
                    ));
                };
                match route.hosts.iter().find(|h| !covers(&held.names, h)) {
                    Some(h) => Err(format!(
                        "the certificate of {} is for {}, not {h}",
                        route.service,
                        held.names.join(", ")
                    )),
                    None => Ok(()),
                }
            }
        }
    }

    /// Makes the host index that of `routes` (after any change to them);
    /// forgets the certificates of services no longer routed.
    pub fn reindex<'a>(&self, routes: impl Iterator<Item = RouteHosts<'a>>) {
        let mut hosts = HashMap::new();
        let mut services = std::collections::HashSet::new();
        for r in routes {
            services.insert(r.service.to_string());
            for h in r.hosts {
                hosts.entry(h.clone()).or_insert_with(|| Site {
                    port: r.port,
                    service: r.service.to_string(),
                    tls: r.tls,
                });
            }
        }
        let mut index = self.write();
        index.hosts = hosts;
        let gone: Vec<String> = index
            .certs
            .keys()
            .filter(|s| !services.contains(*s))
            .cloned()
            .collect();
        for service in gone {
            index.certs.remove(&service);
            index.acme_state.remove(&service);
            self.remove_cert_files(&service, None);
        }
    }

    /// Removes the stored certificate files of `service`, but for those of
    /// `keep`.
    fn remove_cert_files(&self, service: &str, keep: Option<CertificateSource>) {
        for source in [CertificateSource::Files, CertificateSource::Acme] {
            if Some(source) == keep {
                continue;
            }
            if let Some(path) = self.cert_path(service, source) {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(path.with_extension("pem.prev"));
            }
        }
    }

    /// Whether any route has hosts, and any has HTTPS: which shared ports
    /// are to be open.
    pub fn wanted<'a>(routes: impl Iterator<Item = RouteHosts<'a>>) -> (bool, bool) {
        routes.fold((false, false), |(http, https), r| {
            let hosts = !r.hosts.is_empty();
            (http || hosts, https || (hosts && r.tls.is_some()))
        })
    }

    fn cert_path(&self, service: &str, source: CertificateSource) -> Option<PathBuf> {
        let dir = self.certs_dir.as_ref()?;
        let kind = match source {
            CertificateSource::Files => "",
            CertificateSource::Acme => ".acme",
        };
        Some(dir.join(format!("{}{kind}.pem", service.replace('/', "@"))))
    }

    /// Checks and keeps a service's certificate chain and key. `serving`:
    /// the hosts the service serves over HTTPS now, which a replacement
    /// must cover too (a certificate that would break them is refused).
    pub fn put_cert(
        &self,
        service: &str,
        cert_pem: &str,
        key_pem: &str,
        serving: &[String],
    ) -> Result<(), String> {
        if !service.contains('/') || service.contains("..") || service.contains('@') {
            return Err(format!("{service:?} is not a stack/service"));
        }
        let held = parse_pair(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            CertificateSource::Files,
        )?;
        if let Some(h) = serving.iter().find(|h| !covers(&held.names, h)) {
            return Err(format!(
                "the certificate is for {}, and {service} serves {h} over HTTPS now",
                held.names.join(", ")
            ));
        }
        self.keep(service, held, cert_pem, key_pem)
    }

    /// Keeps a certificate the ACME CA issued for `service`.
    pub fn put_acme_cert(
        &self,
        service: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), String> {
        let held = parse_pair(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            CertificateSource::Acme,
        )?;
        self.keep(service, held, chain_pem, key_pem)
    }

    /// Stores and serves `held` (its PEM: `cert_pem`, `key_pem`).
    fn keep(&self, service: &str, held: Held, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        if let Some(path) = self.cert_path(service, held.source) {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut both = cert_pem.trim_end().to_string();
            both.push('\n');
            both.push_str(key_pem.trim_end());
            both.push('\n');
            StoredFile::new(path).save(|| Ok(both.into_bytes()))?;
        }
        let source = held.source;
        self.write().certs.insert(service.to_string(), held);
        self.remove_cert_files(service, Some(source));
        Ok(())
    }

    /// Whether a certificate is held for `service`.
    pub fn has_cert(&self, service: &str) -> bool {
        self.read().certs.contains_key(service)
    }

    /// The services whose hosts want ACME certificates, with their hosts.
    pub fn acme_sites(&self) -> Vec<(String, Vec<String>)> {
        let index = self.read();
        let mut by_service: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (host, site) in &index.hosts {
            if site
                .tls
                .is_some_and(|t| t.certificate == CertificateSource::Acme)
            {
                by_service
                    .entry(site.service.clone())
                    .or_default()
                    .push(host.clone());
            }
        }
        by_service
            .into_iter()
            .map(|(s, mut hosts)| {
                hosts.sort();
                (s, hosts)
            })
            .collect()
    }

    /// Why `service` needs a new ACME certificate for `hosts` now, if it
    /// does: none yet, one that does not cover them, or one that ends
    /// within `renew_before` or within the last third of its lifetime,
    /// whichever comes first (`renew_override`: within that, whatever its
    /// lifetime).
    pub fn acme_need(
        &self,
        service: &str,
        hosts: &[String],
        renew_before: std::time::Duration,
        renew_override: Option<std::time::Duration>,
    ) -> Option<&'static str> {
        let index = self.read();
        let Some(held) = index
            .certs
            .get(service)
            .filter(|h| h.source == CertificateSource::Acme)
        else {
            return Some("no certificate yet");
        };
        if hosts.iter().any(|h| !covers(&held.names, h)) {
            return Some("its hosts changed");
        }
        let lifetime = (held.not_after_ms - held.not_before_ms).max(0);
        let before = match renew_override {
            Some(d) => d.as_millis() as i64,
            None => (renew_before.as_millis() as i64).min(lifetime / 3).max(0),
        };
        (held.not_after_ms - crate::unix_ms() <= before).then_some("it expires soon")
    }

    /// Says what the ACME side does for `service` (`None`: nothing).
    pub fn set_acme_state(&self, service: &str, state: Option<String>) {
        let mut index = self.write();
        match state {
            Some(s) => index.acme_state.insert(service.to_string(), s),
            None => index.acme_state.remove(service),
        };
    }

    /// Serves the HTTP-01 answer for `token` (`None`: no longer).
    pub fn set_http01(&self, token: &str, key_authorization: Option<String>) {
        let mut index = self.write();
        match key_authorization {
            Some(k) => index.http01.insert(token.to_string(), k),
            None => index.http01.remove(token),
        };
    }

    /// The HTTP-01 answer for `token`.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.read().http01.get(token).cloned()
    }

    /// Serves `key` to the CA validating `name` by TLS-ALPN-01 (`None`:
    /// no longer).
    pub fn set_alpn_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let mut index = self.write();
        match key {
            Some(k) => index.alpn.insert(name.to_string(), k),
            None => index.alpn.remove(name),
        };
    }

    fn load_certs(&self) -> Vec<String> {
        let Some(dir) = &self.certs_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".pem") else {
                continue;
            };
            let (stem, source) = match stem.strip_suffix(".acme") {
                Some(s) => (s, CertificateSource::Acme),
                None => (stem, CertificateSource::Files),
            };
            let service = stem.replace('@', "/");
            let loaded = StoredFile::new(entry.path())
                .load(|bytes| parse_pair(bytes, bytes, source).map(Some));
            notes.extend(loaded.notes);
            match loaded.value {
                Some(held) => {
                    self.write().certs.insert(service, held);
                }
                None => notes.push(format!("no usable certificate for {service} in {name}")),
            }
        }
        notes
    }

    /// Every certificate held, for the window and the CLI.
    pub fn certificates(&self) -> Vec<CertificateStatus> {
        let now = crate::unix_ms();
        let waiting = self.acme_sites();
        let index = self.read();
        let mut out: Vec<CertificateStatus> = index
            .certs
            .iter()
            .map(|(service, h)| CertificateStatus {
                service: service.clone(),
                source: h.source,
                names: h.names.clone(),
                issuer: h.issuer.clone(),
                not_after_ms: h.not_after_ms,
                state: match index.acme_state.get(service) {
                    Some(s) => s.clone(),
                    None if h.not_after_ms <= now => "expired".into(),
                    None => "valid".into(),
                },
            })
            .collect();
        for (service, hosts) in waiting {
            if !index.certs.contains_key(&service) {
                out.push(CertificateStatus {
                    state: index
                        .acme_state
                        .get(&service)
                        .cloned()
                        .unwrap_or_else(|| "ordering".into()),
                    service,
                    source: CertificateSource::Acme,
                    names: hosts,
                    issuer: String::new(),
                    not_after_ms: 0,
                });
            }
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }
}

/// Whether a certificate for `names` is valid for `host` (RFC 6125: a
/// wildcard stands for exactly one leftmost label; a wildcard host needs
/// that same wildcard).
fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| {
        n == host
            || n.strip_prefix("*.").is_some_and(|parent| {
                host.split_once('.')
                    .is_some_and(|(label, rest)| label != "*" && rest == parent)
            })
    })
}

fn check_config(c: &EdgeConfig) -> Result<(), String> {
    if c.http_port == 0 || c.https_port == 0 {
        return Err("the shared ports must be from 1 to 65535".into());
    }
    if c.http_port == c.https_port {
        return Err(format!(
            "HTTP and HTTPS cannot share port {}: give two ports",
            c.http_port
        ));
    }
    if let Some(url) = &c.acme_directory {
        if !(url.starts_with("https://") && url.len() > "https://".len()) {
            return Err(format!(
                "the ACME directory must be an https:// URL, not {url:?}"
            ));
        }
    }
    if let Some(email) = &c.acme_email {
        let ok = email
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            && !email.contains(char::is_whitespace);
        if !ok {
            return Err(format!("{email:?} is not an email address"));
        }
    }
    if let Some(ca) = &c.acme_ca {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(ca.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the ACME CA is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the ACME CA holds no certificate".into());
        }
    }
    Ok(())
}

/// The largest chain or key taken.
const MAX_PEM: usize = 1024 * 1024;

/// A certificate chain and its key from PEM (both may be in one text),
/// checked to belong together, with the end certificate's names and dates.
fn parse_pair(cert_pem: &[u8], key_pem: &[u8], source: CertificateSource) -> Result<Held, String> {
    if cert_pem.len() > MAX_PEM || key_pem.len() > MAX_PEM {
        return Err("a certificate or key larger than 1 MiB is refused".into());
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let Some(end) = chain.first() else {
        return Err("the certificate file holds no certificate (BEGIN CERTIFICATE)".into());
    };
    // Never say anything of the key's text.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| "the key file holds no private key in PEM".to_string())?;
    let (names, issuer, not_before_ms, not_after_ms) = describe(end)?;
    let key = CertifiedKey::from_der(chain.clone(), key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "the key is not the certificate's key".to_string(),
        _ => "the private key cannot be used (RSA, ECDSA P-256/P-384 or Ed25519 keys are)"
            .to_string(),
    })?;
    Ok(Held {
        key: Arc::new(key),
        names,
        issuer,
        not_before_ms,
        not_after_ms,
        source,
    })
}

/// The DNS names, issuer and end of validity of a certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, String, i64, i64), String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        // Clients go by the names only; an old certificate's common name
        // is shown, and matches nothing the edge serves.
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.to_ascii_lowercase()),
        );
    }
    let not_before_ms = cert.validity().not_before.timestamp() * 1000;
    let not_after_ms = cert.validity().not_after.timestamp() * 1000;
    Ok((
        names,
        cert.issuer().to_string(),
        not_before_ms,
        not_after_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn hosts<'a>(port: u16, service: &'a str, hosts: &'a [String], tls: bool) -> RouteHosts<'a> {
        RouteHosts {
            port,
            service,
            hosts,
            tls: tls.then_some(SiteTls {
                certificate: CertificateSource::Files,
                hsts: false,
            }),
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["*.example.test".to_string(), "example.test".to_string()];
        assert!(covers(&names, "a.example.test"));
        assert!(covers(&names, "example.test"));
        assert!(!covers(&names, "a.b.example.test"));
        assert!(covers(&names, "*.example.test"), "the same wildcard");
        assert!(!covers(&["a.example.test".into()], "*.example.test"));
        assert!(!covers(&["a.test".into()], "b.test"));
    }

    #[test]
    fn certificates_are_checked_kept_and_forgotten_with_their_route() {
        let dir = tempfile::tempdir().unwrap();
        let (sites, notes) = Sites::new(Some(dir.path())).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let (cert, key) = pair(&["app.example.test", "*.app.example.test"]);
        let (_, other_key) = pair(&["app.example.test"]);
        assert_eq!(
            sites.put_cert("s/web", &cert, &other_key, &[]).unwrap_err(),
            "the key is not the certificate's key"
        );
        assert!(sites
            .put_cert("s/web", "garbage", &key, &[])
            .unwrap_err()
            .contains("no certificate"));
        let e = sites
            .put_cert(
                "s/web",
                &cert,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                &[],
            )
            .unwrap_err();
        assert!(!e.contains("AAAA"), "the key's text is never said: {e}");
        assert!(sites.put_cert("../x", &cert, &key, &[]).is_err());
        assert!(
            sites.certificates().is_empty(),
            "nothing kept from refused ones"
        );

        let serving = ["www.example.test".to_string()];
        let e = sites.put_cert("s/web", &cert, &key, &serving).unwrap_err();
        assert!(e.contains("serves www.example.test over HTTPS now"), "{e}");
        sites.put_cert("s/web", &cert, &key, &[]).unwrap();
        let stored = dir.path().join("certs/s@web.pem");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let list = sites.certificates();
        assert_eq!(list[0].names, ["app.example.test", "*.app.example.test"]);
        assert_eq!(list[0].state, "valid");

        let good = vec![
            "app.example.test".to_string(),
            "x.app.example.test".to_string(),
        ];
        let bad = vec![
            "app.example.test".to_string(),
            "www.example.test".to_string(),
        ];
        sites
            .check(&hosts(8080, "s/web", &good, true), std::iter::empty())
            .unwrap();
        let e = sites
            .check(&hosts(8080, "s/web", &bad, true), std::iter::empty())
            .unwrap_err();
        assert!(e.contains("not www.example.test"), "{e}");
        let e = sites
            .check(&hosts(8081, "s/api", &good, true), std::iter::empty())
            .unwrap_err();
        assert!(e.contains("no certificate was given for s/api"), "{e}");
        let taken = sites
            .check(
                &hosts(8081, "s/api", &bad, false),
                std::iter::once(hosts(8080, "s/web", &good, true)),
            )
            .unwrap_err();
        assert_eq!(
            taken,
            "the host app.example.test is already routed to s/web"
        );

        // A restart reads it again.
        let (again, notes) = Sites::new(Some(dir.path())).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(again.certificates().len(), 1);
        again.reindex(std::iter::once(hosts(8080, "s/web", &good, true)));
        assert_eq!(
            again.lookup("y.app.example.test"),
            None,
            "not a host of the route"
        );
        assert_eq!(again.lookup("x.app.example.test").unwrap().port, 8080);
        assert_eq!(again.lookup("app.example.test").unwrap().port, 8080);
        again.reindex(std::iter::empty());
        assert!(again.certificates().is_empty());
        assert!(
            !stored.exists(),
            "the key goes with the last route of its service"
        );
    }

    #[test]
    fn an_acme_certificate_is_renewed_in_its_window_or_when_its_hosts_change() {
        let (sites, _) = Sites::new(None).unwrap();
        let day = std::time::Duration::from_secs(24 * 3600);
        let hosts = vec!["app.example.test".to_string()];
        let hour = std::time::Duration::from_secs(3600);
        // Valid from `ago` hours ago for `hours` hours.
        let issue = |ago: u32, hours: u32| {
            let mut params = rcgen::CertificateParams::new(hosts.clone()).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let start = std::time::SystemTime::now() - hour * ago;
            params.not_before = start.into();
            params.not_after = (start + hour * hours).into();
            (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
        };
        assert_eq!(
            sites.acme_need("s/web", &hosts, 30 * day, None),
            Some("no certificate yet")
        );
        let (cert, key) = issue(24, 90 * 24);
        sites.put_cert("s/web", &cert, &key, &[]).unwrap();
        assert_eq!(
            sites.acme_need("s/web", &hosts, 30 * day, None),
            Some("no certificate yet"),
            "one given as files is not the ACME one"
        );
        sites.put_acme_cert("s/web", &cert, &key).unwrap();
        assert_eq!(
            sites.acme_need("s/web", &hosts, 30 * day, None),
            None,
            "89 days left"
        );
        let more = vec![
            "app.example.test".to_string(),
            "www.example.test".to_string(),
        ];
        assert_eq!(
            sites.acme_need("s/web", &more, 30 * day, None),
            Some("its hosts changed")
        );
        assert_eq!(
            sites.acme_need("s/web", &hosts, 30 * day, Some(100 * day)),
            Some("it expires soon")
        );
        // A short-lived one is renewed in the last third of its life.
        let (cert, key) = issue(24, 72);
        sites.put_acme_cert("s/web", &cert, &key).unwrap();
        assert_eq!(
            sites.acme_need("s/web", &hosts, 30 * day, None),
            None,
            "2 of 3 days left"
        );
        let (cert, key) = issue(60, 72);
        sites.put_acme_cert("s/web", &cert, &key).unwrap();
        assert_eq!(
            sites.acme_need("s/web", &hosts, 30 * day, None),
            Some("it expires soon")
        );
    }

    #[test]
    fn bad_settings_are_refused_and_change_nothing() {
        let (sites, _) = Sites::new(None).unwrap();
        let before = sites.config();
        for (bad, why) in [
            (
                EdgeConfig {
                    http_port: 0,
                    ..before.clone()
                },
                "from 1 to 65535",
            ),
            (
                EdgeConfig {
                    https_port: 80,
                    ..before.clone()
                },
                "cannot share port 80",
            ),
            (
                EdgeConfig {
                    acme_directory: Some("http://x/dir".into()),
                    ..before.clone()
                },
                "https:// URL",
            ),
            (
                EdgeConfig {
                    acme_email: Some("me".into()),
                    ..before.clone()
                },
                "not an email",
            ),
            (
                EdgeConfig {
                    acme_ca: Some("nope".into()),
                    ..before.clone()
                },
                "no certificate",
            ),
        ] {
            let e = sites.set_config(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
            assert_eq!(sites.config(), before);
        }
    }
}
