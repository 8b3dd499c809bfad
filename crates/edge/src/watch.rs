//! `changeover-edge watch`: keeps the edge's targets true to the daemon.
//!
//! The edge routes to containers by IP; it cannot see containers come and
//! go. When one is removed, killed or stopped behind Changeover's back (by
//! hand, a prune, a reboot), its target must leave the routes at once — its
//! IP may soon belong to another container — and come back when it restarts,
//! at its new IP. This process does that, without any client running: it
//! follows the daemon's container events on the Docker socket and tells the
//! edge over the edge's control socket.
//!
//! It runs as its own container (`changeover-edge-watch`) with no network,
//! the Docker socket and the edge's state volume: the process that faces the
//! internet never holds the Docker socket. It checks that the socket is the
//! daemon's it was made for (`--daemon-id`) and does nothing (exit 0) when
//! not, so a daemon whose socket is elsewhere is left to the clients, which
//! prune gone targets before every change.
//!
//! Events: `die`, `destroy`, `pause` take the container's targets off every
//! route; when that container starts again by itself (its restart policy,
//! `unpause`), it goes back on those routes at its current IP,
//! health-checked before traffic. On routes its Docker HEALTHCHECK decides
//! (UDP-only ports, [`changeover_core::edge::HealthProbe::docker`]),
//! `health_status: unhealthy` takes it off and `health_status: healthy`
//! puts it back. Containers a rollout starts are the
//! rollout's to route: only targets this watcher took off come back. On
//! start and whenever the edge restarts, every target is checked against
//! the daemon.
//!
//! Left out: anything but reading containers; it never changes one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use changeover_core::edge::{labels, Request, Response, RouteStatus, TargetSpec};
use serde_json::Value;

/// How often the edge is asked whether it restarted.
const EDGE_CHECK: Duration = Duration::from_millis(100);

/// A blocking GET on the Docker socket: status and body (read whole), or,
/// with `stream`, the reader positioned at the body.
fn get(socket: &Path, path: &str) -> Result<(u16, BufReader<UnixStream>, bool), String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the Docker socket {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n").map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("the Docker socket answered {line:?}"))?;
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let h = line.trim();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    Ok((status, r, chunked))
}

/// One chunk of a chunked body (`None` at its end).
fn chunk(r: &mut BufReader<UnixStream>) -> Result<Option<Vec<u8>>, String> {
    let mut size = String::new();
    r.read_line(&mut size).map_err(|e| e.to_string())?;
    let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| format!("a broken chunk from the Docker socket: {size:?}"))?;
    if n > 16 << 20 {
        return Err("a chunk of more than 16 MiB from the Docker socket".into());
    }
    let mut data = vec![0; n];
    r.read_exact(&mut data).map_err(|e| e.to_string())?;
    let mut crlf = [0; 2];
    r.read_exact(&mut crlf).map_err(|e| e.to_string())?;
    Ok((n > 0).then_some(data))
}

/// A whole JSON answer (`None` for 404).
fn get_json(socket: &Path, path: &str) -> Result<Option<Value>, String> {
    let (status, mut r, chunked) = get(socket, path)?;
    let mut body = Vec::new();
    if chunked {
        while let Some(c) = chunk(&mut r)? {
            body.extend(c);
            if body.len() > 64 << 20 {
                return Err("an answer of more than 64 MiB from the Docker socket".into());
            }
        }
    } else {
        // Content-Length answers: the daemon closes nothing, so read the
        // JSON value itself.
        let mut de = serde_json::Deserializer::from_reader(&mut r);
        let v: Value = serde::Deserialize::deserialize(&mut de).map_err(|e| e.to_string())?;
        return Ok((status != 404).then_some(v));
    }
    if status == 404 {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("an unreadable answer from the Docker socket: {e}"))
}

/// The edge, over its control socket.
struct EdgeSocket(PathBuf);

impl EdgeSocket {
    fn call(&self, request: &Request) -> Result<Response, String> {
        let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let line = crate::ctl::round_trip(&self.0, &text)?;
        serde_json::from_str(&line).map_err(|e| e.to_string())
    }

    fn routes(&self) -> Result<Vec<RouteStatus>, String> {
        match self.call(&Request::Routes { service: None })? {
            Response::Routes { routes } => Ok(routes),
            other => Err(format!("the edge answered {other:?}")),
        }
    }

    fn uptime(&self) -> Option<u64> {
        match self.call(&Request::Hello) {
            Ok(Response::Hello { uptime_ms, .. }) => Some(uptime_ms),
            _ => None,
        }
    }
}

/// What the daemon says of one container now.
struct Seen {
    running: bool,
    ip: Option<String>,
    /// Its Docker health status, when it has a HEALTHCHECK.
    health: Option<String>,
}

fn inspect(socket: &Path, name: &str) -> Result<Option<Seen>, String> {
    let Some(c) = get_json(socket, &format!("/containers/{name}/json"))? else {
        return Ok(None);
    };
    let labels: BTreeMap<String, String> = c
        .pointer("/Config/Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let running = c.pointer("/State/Running").and_then(Value::as_bool) == Some(true)
        && c.pointer("/State/Paused").and_then(Value::as_bool) != Some(true)
        && c.pointer("/State/Restarting").and_then(Value::as_bool) != Some(true);
    let stack = labels.get(labels::STACK).cloned().unwrap_or_default();
    let ip = c
        .pointer(&format!(
            "/NetworkSettings/Networks/{stack}_default/IPAddress"
        ))
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .map(str::to_string);
    let health = c
        .pointer("/State/Health/Status")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Some(Seen {
        running,
        ip,
        health,
    }))
}

/// Where a container was routed when the watcher took it off: `(route
/// port, container port, release)`.
type TakenOff = BTreeMap<String, Vec<(u16, String, u32)>>;

/// Takes `name` off every route (`docker_only`: every route its Docker
/// health check decides), remembering where it was.
fn take_off(
    edge: &EdgeSocket,
    taken: &mut TakenOff,
    name: &str,
    why: &str,
    docker_only: bool,
) -> Result<(), String> {
    for r in edge
        .routes()?
        .into_iter()
        .filter(|r| !docker_only || r.spec.health.docker)
    {
        for t in r.targets.iter().filter(|t| t.spec.id == name) {
            edge.call(&Request::TargetRemove {
                port: r.spec.port,
                id: name.to_string(),
            })?;
            let container_port = t
                .spec
                .addr
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string();
            taken.entry(name.to_string()).or_default().push((
                r.spec.port,
                container_port,
                t.spec.release,
            ));
            eprintln!(
                "changeover-edge watch: {name} left port {} ({why})",
                r.spec.port
            );
        }
    }
    Ok(())
}

/// Routes a container that started again by itself, at its current IP, on
/// the routes it was taken off; the edge health-checks it before it gets
/// traffic.
fn put_back(
    edge: &EdgeSocket,
    taken: &mut TakenOff,
    socket: &Path,
    name: &str,
) -> Result<(), String> {
    let Some(places) = taken.remove(name) else {
        return Ok(());
    };
    let Some(seen) = inspect(socket, name)? else {
        return Ok(());
    };
    let (Some(ip), true) = (&seen.ip, seen.running) else {
        taken.insert(name.to_string(), places);
        return Ok(());
    };
    let routes = edge.routes()?;
    let starting = seen.health.as_deref().is_some_and(|h| h != "healthy");
    for (port, container_port, release) in places {
        // Only while the route still exists.
        let Some(route) = routes.iter().find(|r| r.spec.port == port) else {
            continue;
        };
        // A route its Docker health check decides takes it once healthy
        // (the `health_status: healthy` event).
        if route.spec.health.docker && starting {
            taken
                .entry(name.to_string())
                .or_default()
                .push((port, container_port, release));
            continue;
        }
        edge.call(&Request::TargetAdd {
            port,
            target: TargetSpec {
                id: name.to_string(),
                addr: format!("{ip}:{container_port}"),
                release,
            },
            wait_healthy_ms: None,
        })?;
        eprintln!("changeover-edge watch: {name} is back on port {port} at {ip}");
    }
    Ok(())
}

/// Every target checked against the daemon: gone or moved ones leave.
fn reconcile(edge: &EdgeSocket, socket: &Path) -> Result<(), String> {
    for r in edge.routes()? {
        for t in &r.targets {
            let port = t.spec.addr.rsplit(':').next().unwrap_or_default();
            let here = match inspect(socket, &t.spec.id)? {
                Some(s) => {
                    s.running && s.ip.is_some_and(|ip| t.spec.addr == format!("{ip}:{port}"))
                }
                None => false,
            };
            if !here {
                edge.call(&Request::TargetRemove {
                    port: r.spec.port,
                    id: t.spec.id.clone(),
                })?;
                eprintln!(
                    "changeover-edge watch: {} left port {} (no such running container)",
                    t.spec.id, r.spec.port
                );
            }
        }
    }
    Ok(())
}

/// `changeover-edge watch`.
pub fn run(docker: &Path, state: &Path, daemon_id: &str) -> ExitCode {
    match get_json(docker, "/info") {
        Ok(Some(info)) => {
            let id = info.get("ID").and_then(Value::as_str).unwrap_or_default();
            if id != daemon_id {
                eprintln!(
                    "changeover-edge watch: {} belongs to another daemon ({id}, not {daemon_id}); nothing to watch here, Changeover's clients keep the routes true instead",
                    docker.display()
                );
                return ExitCode::SUCCESS;
            }
        }
        Ok(None) | Err(_) => {
            eprintln!(
                "changeover-edge watch: no Docker socket at {}; nothing to watch here",
                docker.display()
            );
            return ExitCode::SUCCESS;
        }
    }
    let edge = EdgeSocket(state.join(crate::control::SOCKET));
    // Follow the edge: when it restarted, its targets come from its state
    // file and are checked again.
    {
        let socket = docker.to_path_buf();
        let edge = EdgeSocket(edge.0.clone());
        std::thread::spawn(move || {
            let mut last: Option<u64> = None;
            loop {
                let now = edge.uptime();
                if let Some(up) = now {
                    if last.is_none_or(|l| up < l) {
                        if let Err(e) = reconcile(&edge, &socket) {
                            eprintln!("changeover-edge watch: {e}");
                        }
                    }
                }
                last = now.or(last);
                std::thread::sleep(EDGE_CHECK);
            }
        });
    }
    let filters = serde_json::json!({
        "type": ["container"],
        "label": [format!("{}=true", labels::MANAGED)],
        "event": ["die", "destroy", "pause", "start", "unpause", "health_status"],
    });
    let path = format!("/events?filters={}", percent_encode(&filters.to_string()));
    let (status, mut r, chunked) = match get(docker, &path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("changeover-edge watch: {e}");
            return ExitCode::FAILURE;
        }
    };
    if status != 200 || !chunked {
        eprintln!("changeover-edge watch: the daemon answered {status} to the events request");
        return ExitCode::FAILURE;
    }
    // Events may come in pieces or several to a chunk: split on newlines.
    let _ = r.get_ref().set_read_timeout(None);
    let mut pending = Vec::new();
    let mut taken = TakenOff::new();
    loop {
        let data = match chunk(&mut r) {
            Ok(Some(d)) => d,
            Ok(None) => {
                eprintln!("changeover-edge watch: the daemon ended the event stream");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("changeover-edge watch: {e}");
                return ExitCode::FAILURE;
            }
        };
        pending.extend(data);
        if pending.len() > 16 << 20 {
            pending.clear();
        }
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let action = event.get("Action").and_then(Value::as_str).unwrap_or("");
            let Some(name) = event
                .pointer("/Actor/Attributes/name")
                .and_then(Value::as_str)
            else {
                continue;
            };
            let done = match action {
                "die" | "pause" => take_off(&edge, &mut taken, name, action, false),
                "destroy" => {
                    taken.remove(name);
                    take_off(&edge, &mut TakenOff::new(), name, action, false)
                }
                "start" | "unpause" | "health_status: healthy" => {
                    put_back(&edge, &mut taken, docker, name)
                }
                "health_status: unhealthy" => take_off(&edge, &mut taken, name, action, true),
                _ => Ok(()),
            };
            if let Err(e) = done {
                eprintln!("changeover-edge watch: {name} {action}: {e}");
            }
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
