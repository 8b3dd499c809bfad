//! UDP on a route's port: datagrams carried per client flow.
//!
//! Every traffic thread has its own socket on the port (`SO_REUSEPORT`:
//! the kernel hashes a client's address to one of them, so all of a
//! client's datagrams meet one flow table, on one thread). A client's
//! first datagram opens a flow: a target picked by the route's shares (as
//! a TCP connection's is), a socket of its own connected to that target,
//! counted in flight there. The flow carries datagrams both ways until
//! nothing went either way for the route's `udp_idle_ms`, or until its
//! target is removed (drained to the end of its timeout, or taken off);
//! the client's next datagram then opens a new flow, while answers still
//! coming back on the old one are passed on for [`REPLY_GRACE`]. A drain
//! waits for a target's flows as it waits for requests.
//!
//! Counted per release: a flow is one request — answered (its first
//! answer's latency, as a 2xx), failed (the target's port refused it:
//! ICMP port unreachable), or neither (no answer before it went idle,
//! which one-way protocols such as syslog do) — and the bytes sent back.
//!
//! Bounded: at most [`MAX_FLOWS`] flows per socket; past that the flow
//! idle longest is closed for the new one. Datagrams of up to 64 KiB.
//! One receive buffer per thread, not per flow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::routes::{InFlight, Table};
use crate::workers;

/// Flows per socket (one per traffic thread and port).
pub const MAX_FLOWS: usize = 4096;
/// How long answers on a flow whose target went are still passed on.
pub const REPLY_GRACE: Duration = Duration::from_secs(1);
/// Why a target whose UDP port refused a datagram left rotation.
const REFUSED: &str = "its UDP port is closed (ICMP port unreachable)";
/// The largest datagram carried.
const DATAGRAM: usize = 65_535;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; DATAGRAM]);
}

/// A route's UDP sockets, one per traffic thread.
pub struct UdpListener {
    tasks: Vec<JoinHandle<()>>,
    /// A copy of each socket, to hand over to a new edge.
    sockets: Vec<std::net::UdpSocket>,
    /// Set by [`UdpListener::close`]: stop reading, finish the flows.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Dropping it closes the sockets and ends every flow.
impl Drop for UdpListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl UdpListener {
    /// Stops reading the sockets (a new edge reads them now, or nobody)
    /// and ends the flows, their answers on the way still passed on for
    /// [`REPLY_GRACE`]; returns once no task runs on them.
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        let _ = self.closing.send(true);
        self.sockets.clear();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Copies of its sockets (the same kernel sockets), for a new edge.
    pub fn sockets(&self) -> std::io::Result<Vec<std::net::UdpSocket>> {
        self.sockets.iter().map(|s| s.try_clone()).collect()
    }
}

fn bind(port: u16) -> std::io::Result<std::net::UdpSocket> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &SocketAddr::from(([0, 0, 0, 0], port)))?;
    Ok(std::net::UdpSocket::from(fd))
}

/// Whether UDP `port` is free on the host: our sockets share a port with
/// any socket that sets `SO_REUSEPORT` too, so a plain bind first makes
/// sure nobody else has it. Sockets of a route just removed may take a
/// moment to close: a port in use is tried again for up to a second.
pub async fn ensure_free(port: u16) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match std::net::UdpSocket::bind(("0.0.0.0", port)) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Binds UDP `port` on all interfaces (IPv4) on every traffic thread.
pub async fn listen(table: Arc<Table>, port: u16) -> std::io::Result<UdpListener> {
    ensure_free(port).await?;
    open(table, port, Vec::new())
}

/// Serves UDP `port` on the sockets `given` (handed over by the edge
/// before this one; all of them are served) and on new ones bound beside
/// them for threads left without one.
pub fn open(
    table: Arc<Table>,
    port: u16,
    given: Vec<std::net::UdpSocket>,
) -> std::io::Result<UdpListener> {
    if workers::handle(0).is_none() {
        return Err(std::io::Error::other("the traffic threads are not started"));
    }
    let count = workers::worker_count().max(given.len());
    let mut given = given.into_iter();
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut listener = UdpListener {
        tasks: Vec::new(),
        sockets: Vec::new(),
        closing,
    };
    for i in 0..count {
        let Some(handle) = workers::handle(i) else {
            break;
        };
        let socket = match given.next() {
            Some(s) => s,
            None => bind(port)?,
        };
        socket.set_nonblocking(true)?;
        listener.sockets.push(socket.try_clone()?);
        let (table, closed) = (table.clone(), closed.clone());
        listener.tasks.push(handle.spawn(async move {
            match UdpSocket::from_std(socket) {
                Ok(s) => serve(table, port, Arc::new(s), closed).await,
                Err(e) => eprintln!("changeover-edge: cannot serve UDP port {port}: {e}"),
            }
        }));
    }
    Ok(listener)
}

/// One client's flow, as its socket's table holds it.
struct Flow {
    target: Arc<crate::routes::Target>,
    /// Connected to the flow's target.
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    /// Its target went: the client's next datagram opens a new flow.
    ended: Arc<AtomicBool>,
    /// An answer came back on it (it is counted as answered already).
    answered: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Flow {
    /// The target's port refused a datagram (ICMP port unreachable): the
    /// flow ends, failed, and the target leaves rotation until its checks
    /// pass again.
    fn refused(&self) {
        self.ended.store(true, Ordering::Relaxed);
        if !self.task.is_finished() {
            // Its carrier, stopped here, counts nothing at its end.
            self.task.abort();
            if !self.answered.load(Ordering::Relaxed) {
                self.target.counters.failure();
            }
        }
        self.target.mark_unreachable(REFUSED);
    }
}

/// Milliseconds since `epoch`.
fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Receives the datagrams of one socket and passes each to its flow.
async fn serve(
    table: Arc<Table>,
    port: u16,
    socket: Arc<UdpSocket>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let epoch = Instant::now();
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    // Dropping the set (the socket closing) ends every flow.
    let mut carriers: JoinSet<()> = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    return;
                }
                // Everything that is queued now, without waiting.
                loop {
                    // A datagram of a live flow goes on from the thread's
                    // buffer; it is copied out only to open a flow or wait.
                    let got = BUFFER.with(|b| {
                        let mut buf = b.borrow_mut();
                        let (n, client) = socket.try_recv_from(&mut buf)?;
                        let sent = flows
                            .get(&client)
                            .filter(|f| !f.ended.load(Ordering::Relaxed) && !f.task.is_finished())
                            .is_some_and(|f| {
                                f.last.store(now_ms(epoch), Ordering::Relaxed);
                                match f.upstream.try_send(&buf[..n]) {
                                    Ok(_) => true,
                                    Err(e) => {
                                        if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                            f.refused();
                                        }
                                        false
                                    }
                                }
                            });
                        Ok::<_, std::io::Error>((!sent).then(|| (buf[..n].to_vec(), client)))
                    });
                    let (data, client) = match got {
                        Ok(Some(x)) => x,
                        Ok(None) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // An ICMP error for an answer sent earlier: nothing to do.
                        Err(_) => continue,
                    };
                    // A flow whose target refused a datagram is ended and
                    // the datagram tried once more on a new flow.
                    for _ in 0..2 {
                        let live = flows
                            .get(&client)
                            .is_some_and(|f| !f.ended.load(Ordering::Relaxed) && !f.task.is_finished());
                        if !live {
                            if flows.len() >= MAX_FLOWS {
                                make_room(&mut flows);
                            }
                            let Some(f) = open_flow(&table, port, &socket, client, epoch, &mut carriers, &closing).await else {
                                break; // maintenance, or nothing healthy: dropped
                            };
                            flows.insert(client, f);
                        }
                        let flow = &flows[&client];
                        flow.last.store(now_ms(epoch), Ordering::Relaxed);
                        let sent = match flow.upstream.try_send(&data) {
                            // Not known writable yet (a new socket): wait
                            // for it, which is at once unless its buffer is full.
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                flow.upstream.send(&data).await
                            }
                            other => other,
                        };
                        match sent {
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                flow.refused();
                                continue;
                            }
                            // Sent, or lost to a full socket buffer as the
                            // network may lose it.
                            _ => break,
                        }
                    }
                }
            }
            Some(_) = carriers.join_next(), if !carriers.is_empty() => {}
            _ = sweep.tick() => {
                flows.retain(|_, f| !f.task.is_finished());
            }
            _ = closing.changed() => {
                // Read no more; the carriers see it too and finish.
                while carriers.join_next().await.is_some() {}
                return;
            }
        }
    }
}

/// Closes the flow idle longest (or one already ended) to make room.
fn make_room(flows: &mut HashMap<SocketAddr, Flow>) {
    flows.retain(|_, f| !f.task.is_finished());
    if flows.len() < MAX_FLOWS {
        return;
    }
    let oldest = flows
        .iter()
        .min_by_key(|(_, f)| f.last.load(Ordering::Relaxed))
        .map(|(a, _)| *a);
    if let Some(a) = oldest {
        if let Some(f) = flows.remove(&a) {
            f.task.abort();
        }
    }
}

/// A new flow for `client`: a target by the route's shares, a socket
/// connected to it, and the task carrying its answers back.
async fn open_flow(
    table: &Table,
    port: u16,
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    epoch: Instant,
    carriers: &mut JoinSet<()>,
    closing: &tokio::sync::watch::Receiver<bool>,
) -> Option<Flow> {
    let mut except: Option<String> = None;
    for _ in 0..2 {
        let (guard, idle) = table.pick_flow(port, except.as_deref())?;
        let target = guard.0.clone();
        let Ok(addr) = target.spec.addr.parse::<SocketAddr>() else {
            guard.mark_unreachable(&format!("{} is not an address", target.spec.addr));
            except = Some(target.spec.id.clone());
            continue;
        };
        // Failing here is this edge's (out of descriptors): dropped.
        let upstream = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
            .await
            .ok()?;
        upstream.connect(addr).await.ok()?;
        let upstream = Arc::new(upstream);
        let last = Arc::new(AtomicU64::new(now_ms(epoch)));
        let ended = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicBool::new(false));
        let task = carriers.spawn(carry(
            guard,
            upstream.clone(),
            socket.clone(),
            client,
            Carry {
                idle,
                epoch,
                last: last.clone(),
                ended: ended.clone(),
                answered: answered.clone(),
                closing: closing.clone(),
            },
        ));
        return Some(Flow {
            target,
            upstream,
            last,
            ended,
            answered,
            task,
        });
    }
    None
}

/// What a flow's carrier shares with its socket's table.
struct Carry {
    idle: Duration,
    epoch: Instant,
    last: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
    answered: Arc<AtomicBool>,
    /// The sockets are closing (the edge hands over or stops).
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Carry {
    /// The flow's target is gone or its sockets close: the client's next
    /// datagram opens a new flow, the in-flight count goes, and answers
    /// still coming are passed on for [`REPLY_GRACE`] from now.
    fn let_go(&self, guard: &mut Option<InFlight>) {
        self.ended.store(true, Ordering::Relaxed);
        *guard = None;
        self.last.store(now_ms(self.epoch), Ordering::Relaxed);
    }
}

/// Carries a flow's answers back to its client until it is idle, its
/// target refuses it, or (after [`REPLY_GRACE`]) its target is gone.
async fn carry(
    guard: InFlight,
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    mut c: Carry,
) {
    let target = guard.0.clone();
    let opened = Instant::now();
    let mut guard = Some(guard);
    let mut refused = false;
    loop {
        if guard.is_some() && *c.closing.borrow() {
            // Closing already when this flow opened.
            c.let_go(&mut guard);
        }
        let quiet = if guard.is_some() { c.idle } else { REPLY_GRACE };
        let since =
            Duration::from_millis(now_ms(c.epoch).saturating_sub(c.last.load(Ordering::Relaxed)));
        if since >= quiet {
            break;
        }
        tokio::select! {
            ready = upstream.readable() => {
                if ready.is_err() {
                    break;
                }
                // Passed on from the thread's buffer; copied only when the
                // client's socket is not known writable yet.
                let got = BUFFER.with(|b| {
                    let mut buf = b.borrow_mut();
                    let n = upstream.try_recv(&mut buf)?;
                    Ok::<_, std::io::Error>(match socket.try_send_to(&buf[..n], client) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            (n, Some(buf[..n].to_vec()))
                        }
                        // Sent, or dropped as the network would.
                        _ => (n, None),
                    })
                });
                match got {
                    Ok((n, pending)) => {
                        if let Some(pending) = pending {
                            let _ = socket.send_to(&pending, client).await;
                        }
                        c.last.store(now_ms(c.epoch), Ordering::Relaxed);
                        target.counters.sent(n as u64);
                        if !c.answered.swap(true, Ordering::Relaxed) {
                            target.counters.response(200, opened.elapsed());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        target.mark_unreachable(REFUSED);
                        refused = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            _ = tokio::time::sleep(quiet - since) => {}
            _ = target.closed(), if guard.is_some() => {
                // Drained to the end or removed: new datagrams go elsewhere;
                // answers on their way still reach the client for a moment.
                c.let_go(&mut guard);
            }
            _ = c.closing.changed(), if guard.is_some() => {
                c.let_go(&mut guard);
            }
        }
    }
    c.ended.store(true, Ordering::Relaxed);
    if !c.answered.load(Ordering::Relaxed) {
        if refused {
            target.counters.failure();
        } else {
            target.counters.request();
        }
    }
}
