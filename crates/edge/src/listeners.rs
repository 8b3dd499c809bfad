//! Listening sockets: one per traffic thread on each port the edge serves,
//! all bound with `SO_REUSEPORT`, and kept as copies to hand over to a new
//! edge ([`crate::handover`]). What a connection accepted on one gets is
//! the caller's (the proxy's accept loop); this module only owns sockets.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::workers;

/// A port's listening sockets, one per traffic thread (or more, when
/// more were handed over than there are threads).
pub struct Listener {
    tasks: Vec<JoinHandle<()>>,
    /// A copy of each socket, to hand over to a new edge.
    sockets: Vec<std::net::TcpListener>,
}

/// Dropping it closes the sockets (the accept loops and the copies);
/// connections already open keep being served.
impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Listener {
    /// Closes the sockets, returning once no accept loop runs on them any
    /// more (dropping it closes them a moment later, on their threads).
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        self.sockets.clear();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Copies of its sockets (the same kernel sockets), for a new edge.
    pub fn sockets(&self) -> std::io::Result<Vec<std::net::TcpListener>> {
        self.sockets.iter().map(|s| s.try_clone()).collect()
    }
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)))?;
    socket.listen(4096)
}

/// Fails when another socket listens on `port`. Our sockets set
/// `SO_REUSEPORT`, which would let them share the port with any other
/// process of the same user that sets it too, each getting some of the
/// connections; a plain bind first makes sure the port is free. Listeners
/// of a route just removed may take a moment to close: a port in use is
/// tried again for up to a second.
async fn ensure_free(port: u16) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match std::net::TcpListener::bind(("0.0.0.0", port)) {
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

/// Binds `port` on all interfaces (IPv4) on every traffic thread, each
/// socket served by `accept` on its thread until the [`Listener`] drops.
pub async fn listen<F, Fut>(port: u16, accept: F) -> std::io::Result<Listener>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    ensure_free(port).await?;
    open(port, Vec::new(), accept).await
}

/// Serves `port` on every traffic thread: on the sockets `given` (handed
/// over by the edge before this one; all of them are served) and on new
/// ones bound beside them for threads left without one.
pub async fn open<F, Fut>(
    port: u16,
    given: Vec<std::net::TcpListener>,
    accept: F,
) -> std::io::Result<Listener>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if workers::handle(0).is_none() {
        return Err(std::io::Error::other("the traffic threads are not started"));
    }
    let mut tasks = Vec::new();
    let mut sockets = Vec::new();
    let handed = given.len();
    let count = workers::worker_count().max(handed);
    let mut given = given.into_iter();
    for i in 0..count {
        let Some(handle) = workers::handle(i) else {
            break;
        };
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let accept = accept.clone();
        let socket = given.next();
        tasks.push(handle.spawn(async move {
            let listener = (|| {
                let listener = match socket {
                    Some(s) => {
                        s.set_nonblocking(true)?;
                        TcpListener::from_std(s)?
                    }
                    None => bind(port)?,
                };
                // Keep a copy for a hand-over.
                let std = listener.into_std()?;
                let copy = std.try_clone()?;
                Ok::<_, std::io::Error>((TcpListener::from_std(std)?, copy))
            })();
            let listener = match listener {
                Ok((l, copy)) => {
                    let _ = bound_tx.send(Ok(copy));
                    l
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            accept(listener).await;
        }));
        let bound = bound_rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the traffic thread stopped")));
        match bound {
            Ok(copy) => sockets.push(copy),
            // A socket handed over without `SO_REUSEPORT` cannot get
            // companions: it serves alone.
            Err(_) if i >= handed && handed > 0 => break,
            Err(e) => {
                for t in &tasks {
                    t.abort();
                }
                return Err(e);
            }
        }
    }
    Ok(Listener { tasks, sockets })
}
