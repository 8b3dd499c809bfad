//! Handing the listening sockets to a new edge, so an upgrade drops nothing.
//!
//! Every edge serves `handover.sock` in its state directory. A new edge
//! started with `serve --take-over` (a second container on the same state
//! volume, see `changeover_docker::edge::upgrade_edge`) connects to it
//! before it binds anything, and the old edge passes it its listening
//! sockets themselves (`SCM_RIGHTS`), so the kernel's accept queues are
//! never closed: a connection waiting in one is accepted by the new edge.
//!
//! The exchange, one line each way unless said:
//! 1. new → old: `take-over`
//! 2. old: saves its routes (the new edge loads them next), stops taking
//!    control requests (they get "handed over; try again"), then sends
//!    batches: a JSON line `{"ports":[p, p, q…],"udp":[u…],"more":bool}`
//!    carrying the sockets, one per entry, in order (TCP listeners, then
//!    UDP sockets); new → old `next` after each.
//! 3. new: loads the state, serves the sockets, binds the control socket
//!    (clients reach it from then on), then new → old: `serving`.
//! 4. old: stops accepting on its copies (connections it holds are served to
//!    their end; its UDP flows end, their clients' next datagrams open flows
//!    on the new edge) and answers `stopped`. It then waits for its SIGTERM
//!    (`docker stop`), draining what is in flight.
//!
//! When no edge answers on the socket, the new edge starts as usual. When
//! one answers and the exchange fails, the new edge exits with the error
//! and the old one keeps everything: nothing was taken from it yet, or it
//! takes control requests again.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::edge::Edge;

pub const SOCKET: &str = "handover.sock";

/// Sockets per message (the kernel takes at most 253).
const BATCH: usize = 64;

#[derive(Serialize, Deserialize)]
struct Batch {
    /// TCP listeners' ports, then (`udp`) UDP sockets' ports, in the order
    /// of the descriptors.
    ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    udp: Vec<u16>,
    more: bool,
}

/// A socket to hand over: a TCP listener or a UDP socket, with its port.
pub(crate) enum Handed {
    Tcp(u16, std::net::TcpListener),
    Udp(u16, std::net::UdpSocket),
}

/// The listening sockets taken from the old edge, by port, and the
/// connection to tell it when they are served.
pub struct Taken {
    pub sockets: crate::Listeners,
    conn: BufReader<UnixStream>,
}

/// Takes the listeners of the edge serving `dir`, if one answers.
pub fn take(dir: &Path) -> Result<Option<Taken>, String> {
    let conn = match UnixStream::connect(dir.join(SOCKET)) {
        Ok(c) => c,
        // No edge (or a stale socket file of one that is gone).
        Err(_) => return Ok(None),
    };
    let fail = |e: std::io::Error| format!("taking over from the running edge: {e}");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    let mut conn = BufReader::new(conn);
    conn.get_mut().write_all(b"take-over\n").map_err(fail)?;
    let mut sockets = crate::Listeners::new();
    loop {
        let mut data = vec![0u8; 64 * 1024];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            conn.get_ref().as_fd(),
            &mut [IoSliceMut::new(&mut data)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| fail(e.into()))?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        let line = &data[..got.bytes];
        let batch: Batch = serde_json::from_slice(line.trim_ascii_end())
            .map_err(|e| format!("taking over: the running edge sent {e}"))?;
        if batch.ports.len() + batch.udp.len() != fds.len() {
            return Err(format!(
                "taking over: {} sockets announced, {} received",
                batch.ports.len() + batch.udp.len(),
                fds.len()
            ));
        }
        let mut fds = fds.into_iter();
        for (port, fd) in batch.ports.into_iter().zip(fds.by_ref()) {
            sockets
                .tcp
                .entry(port)
                .or_default()
                .push(std::net::TcpListener::from(fd));
        }
        for (port, fd) in batch.udp.into_iter().zip(fds) {
            sockets
                .udp
                .entry(port)
                .or_default()
                .push(std::net::UdpSocket::from(fd));
        }
        conn.get_mut().write_all(b"next\n").map_err(fail)?;
        if !batch.more {
            break;
        }
    }
    Ok(Some(Taken { sockets, conn }))
}

impl Taken {
    /// Tells the old edge that the sockets are served here now; it stops
    /// accepting on them.
    pub fn serving(mut self) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("telling the old edge to stop: {e}");
        self.conn.get_mut().write_all(b"serving\n").map_err(fail)?;
        let mut line = String::new();
        self.conn.read_line(&mut line).map_err(fail)?;
        if line.trim() != "stopped" {
            return Err(format!("the old edge answered {line:?}"));
        }
        Ok(())
    }
}

/// Serves `dir/handover.sock` for a future edge (on a thread of its own:
/// the exchange is a few blocking calls).
pub fn offer(edge: Arc<Edge>, dir: &Path) -> Result<(), String> {
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("edge-handover".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match hand_over(&edge, &runtime, conn) {
                    Ok(true) => {
                        eprintln!("changeover-edge: handed the listeners to a new edge; draining");
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        eprintln!("changeover-edge: a hand-over failed, serving on: {e}");
                        edge.set_retired(false);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the hand-over thread: {e}"))?;
    Ok(())
}

/// One hand-over; `Ok(true)` once this edge stopped accepting.
fn hand_over(
    edge: &Arc<Edge>,
    runtime: &tokio::runtime::Handle,
    conn: UnixStream,
) -> Result<bool, String> {
    let fail = |e: std::io::Error| e.to_string();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(fail)?;
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    conn.read_line(&mut line).map_err(fail)?;
    if line.trim() != "take-over" {
        return Ok(false);
    }
    // From here no control request changes anything here, and the routes
    // on disk are the ones the new edge starts from.
    edge.set_retired(true);
    edge.table.save_now()?;
    let sockets = edge.handed_sockets();
    let mut batches = sockets.chunks(BATCH).peekable();
    if batches.peek().is_none() {
        send_batch(&mut conn, &[], false)?;
    }
    while let Some(batch) = batches.next() {
        send_batch(&mut conn, batch, batches.peek().is_some())?;
    }
    line.clear();
    conn.read_line(&mut line).map_err(fail)?;
    if line.trim() != "serving" {
        return Err(format!("the new edge answered {line:?}"));
    }
    runtime.block_on(edge.stop_accepting());
    conn.get_mut().write_all(b"stopped\n").map_err(fail)?;
    Ok(true)
}

fn send_batch(
    conn: &mut BufReader<UnixStream>,
    batch: &[Handed],
    more: bool,
) -> Result<(), String> {
    let mut header = Batch {
        ports: Vec::new(),
        udp: Vec::new(),
        more,
    };
    let mut fds = Vec::new();
    // TCP first, then UDP: the order `take` reads them in.
    for h in batch {
        if let Handed::Tcp(p, s) = h {
            header.ports.push(*p);
            fds.push(s.as_fd());
        }
    }
    for h in batch {
        if let Handed::Udp(p, s) = h {
            header.udp.push(*p);
            fds.push(s.as_fd());
        }
    }
    let mut line = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err("too many sockets for one message".into());
    }
    let sent = rustix::net::sendmsg(
        conn.get_ref().as_fd(),
        &[IoSlice::new(&line)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| e.to_string())?;
    if sent != line.len() {
        return Err("the hand-over message was cut short".into());
    }
    let mut ack = String::new();
    conn.read_line(&mut ack).map_err(|e| e.to_string())?;
    if ack.trim() != "next" {
        return Err(format!("the new edge answered {ack:?}"));
    }
    Ok(())
}
