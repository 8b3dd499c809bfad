//! A client of the Docker Registry HTTP API v2 (OCI distribution): the
//! `/v2/` check a login makes, a repository's tags page by page, and a tag's
//! manifest digest by `HEAD` (which registries do not count as a pull).
//!
//! Why our own and not `oci-client`: what a user needs to see is in the
//! answers' headers and bodies — the `ratelimit-*` headers and a 429's
//! `Retry-After`, the registry's own error codes and words, the `Link` of
//! the next page — and that crate keeps them to itself; this one is a few
//! requests on the hyper/rustls client this crate already has.
//!
//! Authentication follows the registry's `WWW-Authenticate`: Basic with
//! the credential, or the token flow (ask the realm for a Bearer token for
//! the service and scope, with the credential when there is one, then
//! retry once). Tokens are kept per scope for the client's life.
//!
//! Trust: the system's roots plus any CA given (a private registry's).
//! Loopback registries are spoken to in plain HTTP, as the Docker daemon
//! does. Every answer is bounded in time and size; a 429 is reported with
//! its wait, never retried in a loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use changeover_core::registry::{self, Challenge, RateLimit};
use changeover_core::secret::Secret;
use changeover_core::{Problem, ProblemCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

/// What a registry is asked with.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A user name and password (or access token used as one).
    Basic { username: String, password: Secret },
    /// An OAuth refresh token (`identitytoken` from `docker login`).
    IdentityToken { username: String, token: Secret },
}

impl Credential {
    fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            Credential::IdentityToken { .. } => None,
        }
    }

    /// The user name, for messages and `X-Registry-Auth`.
    pub fn username(&self) -> &str {
        match self {
            Credential::Basic { username, .. } | Credential::IdentityToken { username, .. } => {
                username
            }
        }
    }
}

/// The longest answer read (a page of tags, a manifest, a token).
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// Pages of tags followed at most (100,000 tags at 1,000 a page).
const MAX_PAGES: usize = 100;
const PAGE: usize = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Media types a manifest `HEAD` accepts: an index (multi-arch) or one image.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One registry, with the credential it is asked with.
pub struct RegistryClient {
    http: Http,
    /// The registry as users write it.
    host: String,
    /// `https://api-host`; for a loopback registry `http://…` until it
    /// answers that it speaks TLS.
    base: Mutex<String>,
    /// A loopback registry: plain HTTP first (no credential is sent before
    /// a challenge), HTTPS when it says it is an HTTPS server — both, as
    /// the Docker daemon tries both for the registries it calls insecure
    /// (it skips verification there; this client does not).
    loopback: bool,
    credential: Option<Credential>,
    /// Bearer tokens by scope ("" for the registry itself).
    tokens: Mutex<HashMap<String, Arc<str>>>,
    /// The registry asked for Basic once: the credential goes with every
    /// request from then on (not a refused request first each time).
    wants_basic: std::sync::atomic::AtomicBool,
    /// The last rate limit the registry announced.
    rate: Mutex<Option<RateLimit>>,
}

/// A registry's answer, read whole (bounded).
struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: Vec<RegistryError>,
}

#[derive(Deserialize)]
struct RegistryError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

fn problem(code: ProblemCode, message: String) -> Problem {
    Problem::new(code, message)
}

impl RegistryClient {
    /// A client of `host` (as users write it), trusting the system's roots
    /// and `extra_ca` (PEM) when given.
    pub fn new(
        host: &str,
        credential: Option<Credential>,
        extra_ca: Option<&str>,
    ) -> Result<Self, Problem> {
        let host = registry::parse_host(host).map_err(|e| problem(ProblemCode::InvalidInput, e))?;
        let mut roots = rustls::RootCertStore::empty();
        // A loopback registry is this machine's own: only a CA given for it
        // is trusted (and the system's hundreds of roots are not read).
        if !registry::plain_http(&host) {
            for cert in system_roots() {
                let _ = roots.add(cert.clone());
            }
        }
        if let Some(pem) = extra_ca {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    problem(
                        ProblemCode::InvalidTls,
                        format!("the registry CA is not readable PEM ({e})"),
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    problem(
                        ProblemCode::InvalidTls,
                        format!("the registry CA is not a usable certificate ({e})"),
                    )
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(problem(
                    ProblemCode::InvalidTls,
                    "the registry CA holds no certificate".into(),
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                problem(
                    ProblemCode::InvalidTls,
                    format!("TLS cannot be set up: {e}"),
                )
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let loopback = registry::plain_http(&host);
        let scheme = if loopback { "http" } else { "https" };
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base: Mutex::new(format!("{scheme}://{}", registry::api_host(&host))),
            loopback,
            host,
            credential,
            tokens: Mutex::new(HashMap::new()),
            wants_basic: Default::default(),
            rate: Mutex::new(None),
        })
    }

    /// The rate limit the registry announced last, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks that the registry answers and takes the credential (what a
    /// login does before storing anything).
    pub async fn check(&self) -> Result<(), Problem> {
        let answer = self.send(Method::GET, "/v2/", "", None).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        Err(self.refusal(&answer, "the registry"))
    }

    /// Every tag of `path` (`team/app`), in the registry's order, following
    /// its pages.
    pub async fn tags(&self, path: &str) -> Result<Vec<String>, Problem> {
        let scope = format!("repository:{path}:pull");
        let mut next = Some(format!("/v2/{path}/tags/list?n={PAGE}"));
        let mut tags = Vec::new();
        let mut pages = 0;
        while let Some(target) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(problem(
                    ProblemCode::InvalidRegistryAnswer,
                    format!(
                        "{} lists more than {} pages of tags for {path}; only that many are read",
                        self.host, MAX_PAGES
                    ),
                ));
            }
            let answer = self.send(Method::GET, &target, &scope, None).await?;
            if !answer.status.is_success() {
                return Err(self.refusal(&answer, path));
            }
            let list: TagList = serde_json::from_slice(&answer.body).map_err(|e| {
                problem(
                    ProblemCode::InvalidRegistryAnswer,
                    format!("{} answered a tag list that is not JSON ({e})", self.host),
                )
            })?;
            let page = list.tags.unwrap_or_default();
            let before = tags.len();
            tags.extend(page.into_iter().filter(|t| registry::valid_tag(t)));
            next = answer
                .headers
                .get(hyper::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(registry::next_link)
                // Only a page of this registry, never another origin.
                .filter(|n| n.starts_with("/v2/"));
            if tags.len() == before {
                // An empty page ends it, whatever the link says.
                next = None;
            }
        }
        Ok(tags)
    }

    /// The manifest digest `path:reference` points to now, by `HEAD`;
    /// `None` when the registry has no such tag.
    pub async fn digest(&self, path: &str, reference: &str) -> Result<Option<String>, Problem> {
        let scope = format!("repository:{path}:pull");
        let target = format!("/v2/{path}/manifests/{reference}");
        let answer = self
            .send(Method::HEAD, &target, &scope, Some(MANIFEST_TYPES))
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(self.refusal(&answer, &format!("{path}:{reference}")));
        }
        Ok(answer
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Sends one request, answering an authentication challenge once.
    async fn send(
        &self,
        method: Method,
        target: &str,
        scope: &str,
        accept: Option<&str>,
    ) -> Result<Answer, Problem> {
        let first = self
            .request(method.clone(), target, self.auth_for(scope), accept)
            .await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .headers
            .get(hyper::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(registry::parse_challenge);
        let header = match challenge {
            Some(Challenge::Basic) => match self.credential.as_ref().and_then(|c| c.basic_header())
            {
                Some(h) => {
                    self.wants_basic
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    h
                }
                None => return Ok(first),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let scope = if scope.is_empty() {
                    asked.unwrap_or_default()
                } else {
                    scope.to_string()
                };
                let token = self.token(&realm, service.as_deref(), &scope).await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(scope, token.clone());
                format!("Bearer {token}")
            }
            None => return Ok(first),
        };
        self.request(method, target, Some(header), accept).await
    }

    /// The `Authorization` a request for `scope` starts with: a token got
    /// before for it, or the basic credential once the registry asked for
    /// Basic; else none (the registry's challenge says what it wants).
    fn auth_for(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tokens.get(scope) {
            return Some(format!("Bearer {t}"));
        }
        if self.wants_basic.load(std::sync::atomic::Ordering::Relaxed) {
            return self.credential.as_ref().and_then(|c| c.basic_header());
        }
        None
    }

    /// The token flow: a Bearer token for `scope` from `realm`.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Arc<str>, Problem> {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(problem(
                ProblemCode::InvalidRegistryAnswer,
                format!(
                    "{} sends to a token service that is not a URL ({realm:?})",
                    self.host
                ),
            ));
        }
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!("service={}", encode(s)));
        }
        if !scope.is_empty() {
            query.push(format!("scope={}", encode(scope)));
        }
        let (method, body, auth) = match &self.credential {
            Some(Credential::IdentityToken { token, .. }) => {
                // The OAuth form Docker's own client sends.
                let mut form = vec![
                    "grant_type=refresh_token".to_string(),
                    format!("refresh_token={}", encode(token.expose())),
                    "client_id=changeover".to_string(),
                ];
                form.extend(query.iter().cloned());
                (Method::POST, Some(form.join("&")), None)
            }
            Some(c) => (Method::GET, None, c.basic_header()),
            None => (Method::GET, None, None),
        };
        let url = if query.is_empty() || method == Method::POST {
            realm.to_string()
        } else {
            let sep = if realm.contains('?') { '&' } else { '?' };
            format!("{realm}{sep}{}", query.join("&"))
        };
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(a) = auth {
            request = request.header(hyper::header::AUTHORIZATION, a);
        }
        if body.is_some() {
            request = request.header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| problem(ProblemCode::InvalidInput, format!("bad token request: {e}")))?;
        let answer = self.exchange(request, realm).await?;
        if answer.status == StatusCode::UNAUTHORIZED || answer.status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(&answer));
        }
        if !answer.status.is_success() {
            return Err(self.refusal(&answer, "its token service"));
        }
        let parsed: TokenAnswer = serde_json::from_slice(&answer.body).map_err(|e| {
            problem(
                ProblemCode::InvalidRegistryAnswer,
                format!("the token service of {} answered no JSON ({e})", self.host),
            )
        })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .map(Arc::from)
            .ok_or_else(|| {
                problem(
                    ProblemCode::InvalidRegistryAnswer,
                    format!("the token service of {} answered no token", self.host),
                )
            })
    }

    async fn request(
        &self,
        method: Method,
        target: &str,
        auth: Option<String>,
        accept: Option<&str>,
    ) -> Result<Answer, Problem> {
        let build = |base: &str| {
            let url = format!("{base}{target}");
            let mut request = Request::builder()
                .method(method.clone())
                .uri(&url)
                .header(hyper::header::USER_AGENT, "changeover");
            if let Some(a) = &auth {
                request = request.header(hyper::header::AUTHORIZATION, a.as_str());
            }
            if let Some(a) = accept {
                request = request.header(hyper::header::ACCEPT, a);
            }
            request
                .body(Full::new(Bytes::new()))
                .map(|r| (r, url.clone()))
                .map_err(|e| problem(ProblemCode::InvalidInput, format!("bad request {url}: {e}")))
        };
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (request, url) = build(&base)?;
        let answer = self.exchange(request, &url).await;
        let speaks_tls = match &answer {
            Ok(a) => {
                a.status == StatusCode::BAD_REQUEST
                    && String::from_utf8_lossy(&a.body).contains("HTTP request to an HTTPS server")
            }
            Err(_) => false,
        };
        if self.loopback && base.starts_with("http://") && speaks_tls {
            // A loopback registry behind TLS: HTTPS from now on.
            let tls = format!("https://{}", registry::api_host(&self.host));
            *self.base.lock().unwrap_or_else(|p| p.into_inner()) = tls.clone();
            let (request, url) = build(&tls)?;
            return self.exchange(request, &url).await;
        }
        answer
    }

    /// One request and its whole (bounded) answer; notes rate limits.
    async fn exchange(&self, request: Request<Full<Bytes>>, url: &str) -> Result<Answer, Problem> {
        let host = &self.host;
        let unreachable = |why: String| {
            let code =
                if why.to_lowercase().contains("certificate") || why.contains("UnknownIssuer") {
                    ProblemCode::InvalidTls
                } else {
                    ProblemCode::RegistryUnreachable
                };
            let hint = if code == ProblemCode::InvalidTls {
                " (its certificate is not signed by a CA this machine trusts; give the registry's CA with --ca FILE)"
            } else {
                ""
            };
            problem(
                code,
                format!("the registry {host} cannot be reached at {url}: {why}{hint}"),
            )
        };
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(changeover_core::problem::error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(body, MAX_ANSWER).collect())
            .await
            .map_err(|_| unreachable("its answer stalled".into()))?
            .map_err(|e| {
                problem(
                    ProblemCode::InvalidRegistryAnswer,
                    format!("{host} answered too much or broke off ({e}); at most {MAX_ANSWER} bytes are read"),
                )
            })?
            .to_bytes();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(rate) = registry::rate_limit(
            header("ratelimit-limit"),
            header("ratelimit-remaining"),
            header("retry-after"),
        ) {
            *self.rate.lock().unwrap_or_else(|p| p.into_inner()) = Some(rate);
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn unauthorized(&self, answer: &Answer) -> Problem {
        let words = registry_words(&answer.body);
        let said = words.map(|w| format!(": {w}")).unwrap_or_default();
        let message = match &self.credential {
            Some(c) => format!(
                "{} refused the credentials of {}{said}",
                self.host,
                c.username()
            ),
            None => format!(
                "{} asks for credentials{said} (log in: changeover registry login {})",
                self.host, self.host
            ),
        };
        problem(ProblemCode::RegistryUnauthorized, message)
    }

    /// The problem for a refused request about `what`, in the registry's
    /// own words when it gave some.
    fn refusal(&self, answer: &Answer, what: &str) -> Problem {
        let words = registry_words(&answer.body);
        let code = registry_code(&answer.body);
        let said = words.clone().map(|w| format!(": {w}")).unwrap_or_default();
        match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.unauthorized(answer),
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = self
                    .rate_limit()
                    .and_then(|r| r.retry_after_s)
                    .map(|s| format!("; try again in {s} s"))
                    .unwrap_or_else(|| "; try again later".into());
                problem(
                    ProblemCode::RegistryRateLimited,
                    format!(
                        "{} limits requests and refused this one{said}{wait}",
                        self.host
                    ),
                )
            }
            StatusCode::NOT_FOUND if code.as_deref() == Some("MANIFEST_UNKNOWN") => problem(
                ProblemCode::UnknownTag,
                format!("{} has no tag {what}{said}", self.host),
            ),
            StatusCode::NOT_FOUND => problem(
                ProblemCode::UnknownRepository,
                format!("{} has no repository {what}{said}", self.host),
            ),
            status => problem(
                ProblemCode::RegistryUnreachable,
                format!(
                    "{} answered {} about {what}{said}",
                    self.host,
                    status.as_u16()
                ),
            ),
        }
    }
}

/// The system's trusted roots, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The registry's own words from an error answer: `CODE: message`, each.
fn registry_words(body: &[u8]) -> Option<String> {
    let envelope: ErrorEnvelope = serde_json::from_slice(body).ok()?;
    let words: Vec<String> = envelope
        .errors
        .iter()
        .take(3)
        .map(|e| {
            let message: String = e.message.chars().take(300).collect();
            if e.code.is_empty() {
                message
            } else {
                format!("{} ({})", message, e.code)
            }
        })
        .filter(|w| !w.trim().is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join("; "))
}

fn registry_code(body: &[u8]) -> Option<String> {
    let envelope: ErrorEnvelope = serde_json::from_slice(body).ok()?;
    envelope.errors.first().map(|e| e.code.clone())
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
