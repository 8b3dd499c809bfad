//! Listeners and forwarding.
//!
//! Each route listens on its host port and speaks HTTP/1.1 and HTTP/2 over
//! clear text (h2c, prior knowledge) to clients. Routes with hosts are also
//! reached on the shared ports ([`Front`]): plain HTTP, and HTTPS (rustls,
//! h2 or HTTP/1.1 by ALPN), where each request's route is found by its
//! `Host` ([`crate::sites`]); the shared HTTP port also answers ACME
//! HTTP-01 challenges. Upstream, it speaks HTTP/1.1
//! to the containers ([`crate::upstream`]) over keep-alive connections
//! pooled per target: a request takes an idle connection (or opens one) and
//! gives it back when its response body has been relayed to the end.
//!
//! Passive failure handling: when a target cannot be reached (connect
//! refused), it is marked unhealthy at once rather than at its next active
//! check, and the request goes once to another healthy target — always when
//! none of it was sent, and when it was, only if it can be replayed (an
//! idempotent method, no body). A kept-alive connection the target had just
//! closed shows as a request that got not one byte back: such a request goes
//! again on a fresh connection to the same target when it was not written
//! or can be replayed, without counting as the target's failure.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use changeover_core::edge::Protocol;

use crate::limits::Conns;
use crate::listeners::Listener;
use crate::routes::Table;
use crate::routes::{InFlight, Pick, Target};
use crate::sites::Sites;
use crate::upstream::{BoxError, ClientFault, Conn, Prepared, Reader, Waits};

/// What a client gets: a target's response relayed, or the edge's own
/// short answer (one body type without a box per request).
pub enum ProxyBody {
    Relayed(Relay),
    Own(Full<Bytes>),
}

impl ProxyBody {
    fn own(text: impl Into<Bytes>) -> Self {
        ProxyBody::Own(Full::new(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Relayed(r) => std::pin::Pin::new(r).poll_frame(cx),
            ProxyBody::Own(f) => std::pin::Pin::new(f)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Relayed(r) => r.is_end_stream(),
            ProxyBody::Own(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ProxyBody::Relayed(r) => r.size_hint(),
            ProxyBody::Own(f) => f.size_hint(),
        }
    }
}

/// Header naming the release that served a response.
pub const RELEASE_HEADER: &str = "x-changeover-release";

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// One route, on its own port.
    Port(u16),
    /// Every route with hosts, by `Host`, in plain HTTP (a site with TLS
    /// is redirected to HTTPS).
    SharedHttp,
    /// Every route with hosts and TLS, by SNI and `Host`.
    SharedHttps,
}

/// What the proxy reads for each connection and request: one edge's
/// routes, sites and connection limit, and whether it is going away.
pub struct Proxy {
    pub table: Arc<Table>,
    pub sites: Arc<Sites>,
    pub conns: Arc<Conns>,
    /// Set when this edge is going away (handed over, or SIGTERM): each
    /// HTTP/1 connection gets `Connection: close` on its next response, so
    /// clients open their next connection elsewhere instead of finding
    /// this one closed.
    draining: std::sync::atomic::AtomicBool,
}

impl Proxy {
    pub fn new(table: Arc<Table>, sites: Arc<Sites>, conns: Arc<Conns>) -> Arc<Self> {
        Arc::new(Self {
            table,
            sites,
            conns,
            draining: Default::default(),
        })
    }

    /// From now on, every response closes its HTTP/1 connection.
    pub fn set_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Binds `port` on all interfaces (IPv4) on every traffic thread and
/// serves it as `front` until the [`Listener`] drops.
pub async fn listen(proxy: Arc<Proxy>, port: u16, front: Front) -> std::io::Result<Listener> {
    crate::listeners::listen(port, move |l| accept_loop(proxy.clone(), front, l)).await
}

/// Serves `port` as `front` on the sockets `given` (handed over by the
/// edge before this one) and new ones for threads left without one.
pub async fn open(
    proxy: Arc<Proxy>,
    port: u16,
    front: Front,
    given: Vec<std::net::TcpListener>,
) -> std::io::Result<Listener> {
    crate::listeners::open(port, given, move |l| accept_loop(proxy.clone(), front, l)).await
}

async fn accept_loop(edge: Arc<Proxy>, front: Front, listener: TcpListener) {
    let tls =
        (front == Front::SharedHttps).then(|| tokio_rustls::TlsAcceptor::from(edge.sites.tls()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // Out of file descriptors and the like: back off briefly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // At the limit with every connection busy: shed this one at once.
        let Some(admitted) = edge.conns.admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let listening = match front {
            Front::Port(port) => match edge.table.listening(port, peer.ip()) {
                Some(l) => l,
                None => continue, // the route went a moment ago
            },
            // Each request's route is known by its host.
            Front::SharedHttp | Front::SharedHttps => crate::routes::Listening {
                protocol: Protocol::Http,
                timeouts: Default::default(),
                trusted: false,
            },
        };
        let edge = edge.clone();
        if let Some(tls) = &tls {
            tokio::spawn(serve_https(
                edge,
                tls.clone(),
                stream,
                peer,
                admitted,
                listening,
            ));
            continue;
        }
        if let (Protocol::Tcp, Front::Port(port)) = (listening.protocol, front) {
            tokio::spawn(async move {
                // A relay is one long request: never taken for room.
                let _busy = admitted.state.request();
                relay_tcp(edge, port, stream).await;
                drop(admitted);
            });
            continue;
        }
        let client = Client::new(peer, front, &listening, None);
        tokio::spawn(serve_http(edge, stream, client, admitted, listening));
    }
}

/// Serves one HTTPS connection: the handshake (within the header timeout,
/// the certificate chosen by SNI), then HTTP/1.1 or h2 as ALPN agreed.
async fn serve_https(
    edge: Arc<Proxy>,
    tls: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    admitted: crate::limits::Admitted,
    listening: crate::routes::Listening,
) {
    let header = Duration::from_millis(listening.timeouts.header_ms);
    let idle = Duration::from_millis(listening.timeouts.idle_ms);
    let stream = tokio::select! {
        accepted = tls.accept(stream) => match accepted {
            Ok(s) => s,
            Err(_) => return, // no certificate for its name, or not TLS
        },
        _ = crate::limits::watch(&admitted.state, header, idle) => return,
    };
    let sni = stream
        .get_ref()
        .1
        .server_name()
        .map(|n| n.to_ascii_lowercase());
    let client = Client::new(peer, Front::SharedHttps, &listening, sni);
    serve_http(edge, stream, client, admitted, listening).await;
}

/// The largest request head taken (request line and headers): what one
/// unfinished head can cost. Larger ones are answered 431.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves one client connection (HTTP/1.1 or h2c) until it closes, its
/// head or idle time runs out, or it is evicted to make room.
async fn serve_http<S>(
    edge: Arc<Proxy>,
    stream: S,
    client: Client,
    admitted: crate::limits::Admitted,
    listening: crate::routes::Listening,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = Arc::new(client);
    let state = admitted.state.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = state.request();
        let edge = edge.clone();
        let client = client.clone();
        async move {
            let h1 = req.version() < hyper::Version::HTTP_2;
            let mut response = forward(&edge, &client, req).await;
            if h1 && edge.draining() {
                // The edge is going: this connection's last response.
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    let io = TokioIo::new(crate::limits::Watched::new(stream, admitted.state.clone()));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let header = Duration::from_millis(listening.timeouts.header_ms);
    let idle = Duration::from_millis(listening.timeouts.idle_ms);
    tokio::select! {
        _ = conn.as_mut() => {}
        verdict = crate::limits::watch(&admitted.state, header, idle) => {
            if verdict == crate::limits::Verdict::Idle {
                // Nothing in flight: h1 closes now, h2 says GOAWAY first.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
            }
            // A head too slow, or room needed: cut off.
        }
    }
    drop(admitted);
}

/// What the proxy knows of the client on one connection.
#[derive(Clone)]
struct Client {
    peer: std::net::IpAddr,
    /// Its address, for `X-Forwarded-For`.
    addr: Option<HeaderValue>,
    /// A trusted proxy: its `X-Forwarded-*` headers are passed on.
    trusted: bool,
    timeouts: changeover_core::edge::Timeouts,
    front: Front,
    /// The name it asked for in its TLS handshake.
    sni: Option<String>,
}

impl Client {
    fn new(
        peer: std::net::SocketAddr,
        front: Front,
        listening: &crate::routes::Listening,
        sni: Option<String>,
    ) -> Self {
        Self {
            peer: peer.ip(),
            addr: HeaderValue::from_str(&peer.ip().to_string()).ok(),
            trusted: listening.trusted,
            timeouts: listening.timeouts,
            front,
            sni,
        }
    }

    fn https(&self) -> bool {
        self.front == Front::SharedHttps
    }
}

/// A response on its way, counting its request in flight on the client's
/// connection until it has been sent.
pub struct Tracked {
    body: ProxyBody,
    _busy: crate::limits::Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::own(body));
    *r.status_mut() = status;
    r
}

/// The edge's answer to a request the client got wrong; an HTTP/1
/// connection is closed after it (what follows cannot be trusted).
fn refused(h1: bool, status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = text(status, body);
    if h1 {
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Applies RFC 9112 §3.2 (and RFC 9113 §8.3.1 for h2) to the request's
/// host: one `Host` at most; an authority in the request target (an
/// absolute-form h1 target, or h2's `:authority`) wins over it; an HTTP/1.1
/// request without one is refused; a value that is no host is refused.
fn settle_host(parts: &mut hyper::http::request::Parts) -> Result<(), &'static str> {
    use hyper::header::HOST;
    if parts.headers.get_all(HOST).iter().nth(1).is_some() {
        return Err("a request may carry one Host header, not several\n");
    }
    if let Some(authority) = parts.uri.authority() {
        // Without user information, which a Host never carries.
        let host = match authority.port() {
            Some(p) => format!("{}:{}", authority.host(), p.as_str()),
            None => authority.host().to_string(),
        };
        let value =
            HeaderValue::from_str(&host).map_err(|_| "the request's authority is not a host\n")?;
        parts.headers.insert(HOST, value);
        return Ok(());
    }
    match parts.headers.get(HOST) {
        None if parts.version == hyper::Version::HTTP_11 => {
            Err("an HTTP/1.1 request needs a Host header\n")
        }
        None => Ok(()),
        Some(v) if v.is_empty() => Ok(()),
        Some(v) => match hyper::http::uri::Authority::try_from(v.as_bytes()) {
            Ok(a) if !a.as_str().contains('@') && !a.host().is_empty() => Ok(()),
            _ => Err("the Host header is not a host\n"),
        },
    }
}

/// `X-Forwarded-For` and `-Proto` as a target should believe them: a
/// trusted proxy's are kept (the client's address added to the list);
/// anyone else's are replaced, and their `X-Forwarded-Host` and
/// `Forwarded` dropped, so a client cannot claim another address.
fn forwarded_headers(headers: &mut hyper::HeaderMap, client: &Client) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let proto = HeaderName::from_static("x-forwarded-proto");
    if !client.trusted {
        for name in [&xff, &proto] {
            headers.remove(name);
        }
        headers.remove(HeaderName::from_static("x-forwarded-host"));
        headers.remove(hyper::header::FORWARDED);
    }
    if let Some(addr) = &client.addr {
        let before: Vec<&[u8]> = headers.get_all(&xff).iter().map(|v| v.as_bytes()).collect();
        let value = if before.is_empty() {
            addr.clone()
        } else {
            let mut joined = before.join(&b", "[..]);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(addr.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| addr.clone())
        };
        headers.insert(xff, value);
    }
    if !headers.contains_key(&proto) {
        let scheme = if client.https() { "https" } else { "http" };
        headers.insert(proto, HeaderValue::from_static(scheme));
    }
}

fn replayable(req: &Request<Incoming>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
    ) && req.body().is_end_stream()
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to the target, and whether it was idle in the pool (rather
/// than new). `Err` when the target cannot be reached.
async fn conn_for(target: &Target) -> Result<(Conn, bool), String> {
    match target.pool.take() {
        Some(c) => Ok((c, true)),
        None => Conn::connect(&target.spec.addr, CONNECT_TIMEOUT)
            .await
            .map(|c| (c, false)),
    }
}

async fn forward(edge: &Proxy, client: &Client, req: Request<Incoming>) -> Response<ProxyBody> {
    let h1 = req.version() < hyper::Version::HTTP_2;
    if req.method() == Method::CONNECT {
        let mut r = refused(
            h1,
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served here\n",
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return r;
    }
    let can_retry = replayable(&req);
    // Hop-by-hop headers stay behind as the request is encoded.
    let (mut parts, body) = req.into_parts();
    if let Err(why) = settle_host(&mut parts) {
        return refused(h1, StatusCode::BAD_REQUEST, why);
    }
    let port = match client.front {
        Front::Port(port) => port,
        Front::SharedHttp | Front::SharedHttps => {
            return match site_of(edge, client, &parts) {
                Ok((site, client)) => {
                    let hsts = client.https() && site.tls.is_some_and(|t| t.hsts);
                    let mut r =
                        forward_to(edge, site.port, &client, parts, body, h1, can_retry).await;
                    if hsts {
                        r.headers_mut().insert(
                            hyper::header::STRICT_TRANSPORT_SECURITY,
                            HeaderValue::from_static("max-age=31536000"),
                        );
                    }
                    r
                }
                Err(answer) => answer,
            };
        }
    };
    forward_to(edge, port, client, parts, body, h1, can_retry).await
}

/// The site a request on a shared port is for, and its client as that
/// route sees it (its trusted proxies, its timeouts); or the edge's answer:
/// 404 for a host it does not serve, 421 when the host is not the one the
/// TLS handshake named, a redirect to HTTPS for a site with TLS.
#[allow(clippy::result_large_err)]
fn site_of(
    edge: &Proxy,
    client: &Client,
    parts: &hyper::http::request::Parts,
) -> Result<(crate::sites::Site, Client), Response<ProxyBody>> {
    let h1 = parts.version < hyper::Version::HTTP_2;
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| {
            let bare = match h.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => h,
            };
            bare.trim_end_matches('.').to_ascii_lowercase()
        })
        .unwrap_or_default();
    if client.front == Front::SharedHttp {
        if let Some(token) = parts.uri.path().strip_prefix(ACME_CHALLENGE_PATH) {
            if let Some(answer) = edge.sites.http01(token) {
                // The CA checking that this edge serves the name.
                return Err(text(StatusCode::OK, answer));
            }
        }
    }
    let Some(site) = edge.sites.lookup(&host) else {
        return Err(not_found(h1, &host));
    };
    if let Some(sni) = &client.sni {
        if *sni != host && edge.sites.lookup(sni).map(|s| s.port) != Some(site.port) {
            return Err(text(
                StatusCode::MISDIRECTED_REQUEST,
                format!("this connection was opened for {sni}, not {host}\n"),
            ));
        }
    }
    // Sent to HTTPS once there is a certificate to serve it with (an ACME
    // site is served in plain HTTP while its first one is ordered).
    if !client.https() && site.tls.is_some() && edge.sites.has_cert(&site.service) {
        let port = edge.sites.config().https_port;
        let authority = if port == 443 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // `path` starts with one `/` (hyper refuses `//host` forms as
        // origin targets' authority), and the authority is the site's own.
        let location = format!("https://{authority}{}", normalize_path(path));
        let mut r = text(StatusCode::PERMANENT_REDIRECT, format!("{location}\n"));
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(hyper::header::LOCATION, v);
        }
        return Err(r);
    }
    let Some(listening) = edge.table.listening(site.port, client.peer) else {
        return Err(not_found(h1, &host));
    };
    let mut seen = client.clone();
    seen.trusted = listening.trusted;
    seen.timeouts = listening.timeouts;
    Ok((site, seen))
}

/// Where the ACME CA asks for HTTP-01 answers (RFC 8555 §8.3).
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// A path that cannot be read as another host's (`//evil.test/x` → `/evil.test/x`).
fn normalize_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// The answer for a host no site has.
fn not_found(h1: bool, host: &str) -> Response<ProxyBody> {
    let shown: String = host.chars().take(253).filter(|c| !c.is_control()).collect();
    let mut r = text(
        StatusCode::NOT_FOUND,
        format!("404 Not Found: no site is served here for {shown:?}\n"),
    );
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if h1 {
        r.headers_mut().insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    r
}

/// Forwards a request to the route on `port`.
async fn forward_to(
    edge: &Proxy,
    port: u16,
    client: &Client,
    parts: hyper::http::request::Parts,
    body: Incoming,
    h1: bool,
    can_retry: bool,
) -> Response<ProxyBody> {
    let mut parts = parts;
    forwarded_headers(&mut parts.headers, client);
    // Upstream requests are origin-form (`/path?query`) whatever the
    // client sent: `upstream` writes the path and query alone.

    if let Some((token, location)) = parts
        .uri
        .path_and_query()
        .and_then(|p| crate::traffic::preview_link(p.as_str()))
    {
        return preview_redirect(token.as_deref(), &location);
    }
    let started = Instant::now();
    let (first, sticky) = {
        let hints = crate::traffic::hints(&parts.headers);
        match edge.table.pick(port, None, &hints) {
            Pick::Target(t, sticky) => (t, sticky),
            Pick::Maintenance(message) => return maintenance(message),
            Pick::Nothing => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy container for this service\n",
                )
            }
        }
    };
    // The same request, replayed, keeps its client's hints.
    let replay_hints_sticky = sticky;
    let prepared = Prepared::new(&parts, &body);
    let mut body = prepared.has_body().then_some(body);
    let waits = Waits {
        body: Duration::from_millis(client.timeouts.body_ms),
        response: Duration::from_millis(client.timeouts.response_ms),
    };
    let mut attempt = first;
    let mut retried = false;
    // A kept-alive connection the target had just closed takes a request
    // and answers nothing: such a request goes again on a fresh connection
    // (if it was not written, or can be replayed), at most this many times.
    let mut stale = 0;
    loop {
        // Whether the request can go again: none of it was written, or it
        // can be replayed (an idempotent method, no body).
        let again = match conn_for(&attempt.0).await {
            Err(why) => {
                attempt.mark_unreachable(&why);
                true
            }
            Ok((conn, reused)) => match conn.send(&prepared, body.take(), waits).await {
                Ok(resp) => return respond(resp, attempt, started, sticky),
                Err(e) if e.client.is_some() => {
                    // The client's own doing: a 4xx, and never the release's
                    // failure (a client must not be able to trip a guard).
                    return match e.client {
                        Some(ClientFault::SlowBody(after)) => refused(
                            h1,
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request body stalled for more than {} s\n",
                                after.as_secs_f64()
                            ),
                        ),
                        _ => refused(
                            h1,
                            StatusCode::BAD_REQUEST,
                            "the request body was malformed or cut short\n",
                        ),
                    };
                }
                Err(e) if e.timed_out => {
                    attempt.0.counters.failure();
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("the service {}\n", e.reason),
                    );
                }
                Err(e) => {
                    let again = match e.unsent {
                        Some(unsent) => {
                            body = unsent;
                            true
                        }
                        None => can_retry,
                    };
                    if reused && e.no_answer && again && stale < 2 {
                        stale += 1;
                        continue;
                    }
                    again
                }
            },
        };
        attempt.0.counters.failure();
        if retried || !again {
            return text(StatusCode::BAD_GATEWAY, "upstream failed\n");
        }
        let failed = attempt.0.spec.id.clone();
        drop(attempt);
        let hints = crate::traffic::Hints {
            preview: None,
            sticky: replay_hints_sticky,
        };
        match edge.table.pick(port, Some(&failed), &hints) {
            Pick::Target(next, _) => {
                attempt = next;
                retried = true;
            }
            _ => return text(StatusCode::BAD_GATEWAY, "upstream unreachable\n"),
        }
    }
}

/// The paused route's answer.
fn maintenance(message: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::own(message + "\n"));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("30"));
    r
}

/// Carries one TCP connection to a target picked by the route's shares,
/// until either side closes it or the target is removed (drain timeout).
/// A target that refuses the connection is marked unreachable and the
/// connection goes to another one, once. Counted per release: one
/// "request" per connection, a failure when no target took it, the bytes
/// sent back, and the time to connect upstream as its latency.
async fn relay_tcp(edge: Arc<Proxy>, port: u16, mut client: TcpStream) {
    let started = Instant::now();
    let mut except: Option<String> = None;
    for _ in 0..2 {
        let Some(guard) = edge.table.pick_connection(port, except.as_deref()) else {
            return; // maintenance or nothing healthy: close the connection
        };
        let target = guard.0.clone();
        let connect = tokio::time::timeout(
            Duration::from_secs(3),
            TcpStream::connect(&target.spec.addr),
        )
        .await;
        match connect {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                target.counters.response(200, started.elapsed());
                tokio::select! {
                    copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Ok((_, back)) = copied {
                            target.counters.sent(back);
                        }
                    }
                    _ = target.closed() => {}
                }
                drop(guard);
                return;
            }
            Ok(Err(e)) => guard.mark_unreachable(&e.to_string()),
            Err(_) => guard.mark_unreachable("connect timed out"),
        }
        target.counters.failure();
        except = Some(target.spec.id.clone());
    }
}

/// Answers a preview link: sets (or clears) the preview cookie and sends
/// the browser on to the page it asked for.
fn preview_redirect(token: Option<&str>, location: &str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::own(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    if let Some(c) = crate::traffic::preview_cookie(token) {
        r.headers_mut().insert(hyper::header::SET_COOKIE, c);
    }
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// A response body on its way to the client. While it lives, the request
/// counts in flight on its target; once it has been read to the end, its
/// connection goes back to the target's pool.
pub struct Relay {
    body: Reader,
    guard: InFlight,
}

impl Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.guard.0.counters.sent(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(conn) = self.body.reusable() {
            self.guard.0.pool.give_back(conn);
        }
    }
}

/// Passes the response on, keeping the request counted in flight until its
/// body has been sent.
fn respond(
    resp: Response<Reader>,
    guard: InFlight,
    started: Instant,
    sticky: Option<u64>,
) -> Response<ProxyBody> {
    guard
        .0
        .counters
        .response(resp.status().as_u16(), started.elapsed());
    let (mut parts, body) = resp.into_parts();
    if let Some(cookie) = sticky.and_then(crate::traffic::sticky_cookie) {
        parts.headers.append(hyper::header::SET_COOKIE, cookie);
    }
    parts.headers.insert(
        HeaderName::from_static(RELEASE_HEADER),
        HeaderValue::from(guard.0.spec.release),
    );
    Response::from_parts(parts, ProxyBody::Relayed(Relay { body, guard }))
}
