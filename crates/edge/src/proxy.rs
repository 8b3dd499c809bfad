//! Listeners and forwarding.
//!
//! Each route listens on its host port and speaks HTTP/1.1 and HTTP/2 over
//! clear text (h2c, prior knowledge) to clients. Upstream, it speaks HTTP/1.1
//! to the containers over pooled keep-alive connections.
//!
//! Passive failure handling: when a target cannot be reached (connect
//! refused, reset before anything was sent), the request is retried once on
//! another healthy target if it can be replayed — its method is idempotent and
//! it has no body. The failed target is marked unhealthy at once rather than
//! waiting for its next active check.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::control::Edge;
use crate::routes::InFlight;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;
pub type Upstream = Client<HttpConnector, ProxyBody>;

/// Header naming the release that served a response.
pub const RELEASE_HEADER: &str = "x-changeover-release";

pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(3)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// Binds the route's port on all interfaces (IPv4) and serves it until the
/// returned task is aborted. Connections already open keep being served.
pub async fn listen(edge: Arc<Edge>, port: u16) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    Ok(tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors and the like: back off briefly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let edge = edge.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let edge = edge.clone();
                    async move { Ok::<_, Infallible>(forward(&edge, port, peer, req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn replayable(req: &Request<Incoming>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
    ) && req.body().is_end_stream()
}

async fn forward(
    edge: &Edge,
    port: u16,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let can_retry = replayable(&req);
    let (mut parts, body) = req.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
        parts
            .headers
            .append(HeaderName::from_static("x-forwarded-for"), v);
    }
    parts.headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    parts.version = Version::HTTP_11;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if parts.headers.get(hyper::header::HOST).is_none() {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(hyper::header::HOST, v);
            }
        }
    }

    let Some(first) = edge.table.pick(port, None) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy container for this service\n",
        );
    };
    let mut body = Some(body.boxed());
    let mut attempt = first;
    let mut retried = false;
    loop {
        let Ok(uri) = format!("http://{}{}", attempt.0.spec.addr, path).parse::<Uri>() else {
            return text(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        let mut upstream = Request::new(body.take().unwrap_or_else(empty_body));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = Version::HTTP_11;
        *upstream.headers_mut() = parts.headers.clone();
        match edge.client.request(upstream).await {
            Ok(resp) => return respond(resp, attempt),
            Err(e) => {
                let unreachable = e.is_connect();
                if unreachable {
                    edge.mark_unreachable(&attempt, &e.to_string());
                }
                if can_retry && !retried {
                    let failed = attempt.0.spec.id.clone();
                    drop(attempt);
                    match edge.table.pick(port, Some(&failed)) {
                        Some(next) => {
                            attempt = next;
                            retried = true;
                            continue;
                        }
                        None => return text(StatusCode::BAD_GATEWAY, "upstream unreachable\n"),
                    }
                }
                return text(StatusCode::BAD_GATEWAY, "upstream failed\n");
            }
        }
    }
}

pub fn empty_body() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Passes the response on, keeping the request counted in flight until its
/// body has been sent.
fn respond(resp: Response<Incoming>, guard: InFlight) -> Response<ProxyBody> {
    let release = guard.0.spec.release;
    let (mut parts, body) = resp.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    if let Ok(v) = HeaderValue::from_str(&release.to_string()) {
        parts
            .headers
            .insert(HeaderName::from_static(RELEASE_HEADER), v);
    }
    let body = body
        .map_frame(move |frame| {
            let _held = &guard;
            frame
        })
        .boxed();
    Response::from_parts(parts, body)
}
