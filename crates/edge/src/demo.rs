//! The demo app and the probe.
//!
//! `demo` is the app the sandbox, the tests and the benchmarks deploy: it
//! answers `/` with its version (and the container's hostname), `/health`
//! with 200 (or 503 when started `--unhealthy`), and `/?sleep=MS` after MS
//! milliseconds, so tests can hold requests in flight across a drain
//! (`/?status=500` answers that status, to make a release fail;
//! `/?health=fail` and `/?health=ok` turn `/health` from then on). On
//! SIGTERM it stops accepting and lets open requests finish, as a well-behaved
//! app does. With `--udp ADDR` it also echoes UDP datagrams there; with
//! `--tcp ADDR` it serves a line protocol there in which the server speaks
//! first, as SMTP, MySQL or Redis's replies do (no HTTP proxy can carry it).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;

/// How long open requests may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// Whether `/health` fails now: `--unhealthy`, or set by `/?health=fail`
/// (and cleared by `/?health=ok`), so a test can turn a running
/// container's health check against it.
static UNHEALTHY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub async fn serve(version: &str, listen: &str, unhealthy: bool) -> Result<(), String> {
    UNHEALTHY.store(unhealthy, std::sync::atomic::Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let answer: Arc<str> = if host.is_empty() {
        format!("{version}\n").into()
    } else {
        format!("{version} {host}\n").into()
    };
    let version: Arc<str> = version.into();
    eprintln!("changeover-edge demo {version} listening on {listen}");
    let graceful = GracefulShutdown::new();
    let stop = crate::terminated();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (answer, version) = (answer.clone(), version.clone());
                let service = hyper::service::service_fn(move |req| {
                    let (answer, version) = (answer.clone(), version.clone());
                    async move { Ok::<_, Infallible>(reply(req, &answer, &version).await) }
                });
                let conn = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    Ok(())
}

async fn reply<B>(req: Request<B>, answer: &str, version: &str) -> Response<Full<Bytes>> {
    use std::sync::atomic::Ordering;
    let (status, body) = match req.uri().path() {
        "/health" if UNHEALTHY.load(Ordering::Relaxed) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n".to_string())
        }
        "/health" => (StatusCode::OK, "ok\n".to_string()),
        "/" => {
            match req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("health=")))
            {
                Some("fail") => UNHEALTHY.store(true, Ordering::Relaxed),
                Some("ok") => UNHEALTHY.store(false, Ordering::Relaxed),
                _ => {}
            }
            let sleep = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("sleep="))
                    .and_then(|v| v.parse::<u64>().ok())
            });
            if let Some(ms) = sleep {
                tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
            }
            let status = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("status=")))
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|n| StatusCode::from_u16(n).ok())
                .unwrap_or(StatusCode::OK);
            (status, answer.to_string())
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(version) {
        r.headers_mut().insert("x-demo-version", v);
    }
    r
}

/// `demo --udp ADDR`: binds `addr` and answers every datagram with itself,
/// a space and `version` (the tests and benchmarks' UDP service). Binding
/// fails here; the returned future echoes until dropped.
pub async fn udp_echo(
    addr: &str,
    version: &str,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
    let socket = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on UDP {addr}: {e}"))?;
    eprintln!("changeover-edge demo {version} echoing UDP on {addr}");
    let suffix = format!(" {version}").into_bytes();
    Ok(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let end = (n + suffix.len()).min(buf.len());
            buf[n..end].copy_from_slice(&suffix[..end - n]);
            let _ = socket.send_to(&buf[..end], peer).await;
        }
    })
}

/// `demo --tcp ADDR`: binds `addr`; a client is greeted `VERSION ready`
/// before it says anything, then each line it sends comes back with a
/// space and `version` after it. Binding fails here; the returned future
/// serves until dropped.
pub async fn line_server(
    addr: &str,
    version: &str,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    eprintln!("changeover-edge demo {version} serving lines on {addr}");
    let version: Arc<str> = version.into();
    Ok(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let version = version.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                if write
                    .write_all(format!("{version} ready\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                // Bounded: 1 MiB a connection, so no line grows past it.
                let mut lines = tokio::io::BufReader::new(read.take(1 << 20)).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = format!("{line} {version}\r\n");
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// `changeover-edge probe URL`: succeeds on a 2xx/3xx answer.
pub async fn probe(url: &str, timeout_ms: u64) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs can be probed"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url} has no host"));
    };
    let addr = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:80"),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let timeout = Duration::from_millis(timeout_ms);
    match crate::upstream::get(&addr, path, timeout, 0).await {
        Ok((status, _)) if status.is_success() || status.is_redirection() => {
            println!("{url}: {status}");
            Ok(())
        }
        Ok((status, _)) => Err(format!("{url}: {status}")),
        Err(why) => Err(format!("{url}: {why}")),
    }
}
