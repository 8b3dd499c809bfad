//! The threads that carry traffic, apart from the main runtime.
//!
//! Each runs a single-threaded runtime and has its own listening socket on
//! every port the edge serves (`SO_REUSEPORT`, the kernel spreads
//! connections over them; see [`crate::listeners`]), so a client
//! connection, the upstream connections it uses and their tasks all stay
//! on one thread: no cross-thread wake-ups per request. Control and health
//! checks run on the main runtime.
//!
//! The threads are the process's, started once and shared by every edge
//! served in it (one in the container; several in the in-process tests).

struct Workers {
    handles: Vec<tokio::runtime::Handle>,
}

static WORKERS: std::sync::OnceLock<Workers> = std::sync::OnceLock::new();

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many traffic threads there are (one per core, at most 16).
pub fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
}

/// The traffic thread this code runs on (0 elsewhere).
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

/// Starts the traffic threads (once; `serve` does it before opening any
/// listener).
pub fn start_workers() -> Result<(), String> {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if WORKERS.get().is_some() {
        return Ok(());
    }
    let mut handles = Vec::new();
    for i in 0..worker_count() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("edge-traffic-{i}"))
            .spawn(move || {
                WORKER.with(|w| w.set(i));
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
            .map_err(|e| format!("cannot start a traffic thread: {e}"))?;
        let handle = rx
            .recv()
            .map_err(|_| "a traffic thread stopped at once".to_string())?
            .map_err(|e| format!("cannot start a traffic thread's runtime: {e}"))?;
        handles.push(handle);
    }
    let _ = WORKERS.set(Workers { handles });
    Ok(())
}
/// The runtime of traffic thread `i` (wrapping around), or `None` before
/// [`start_workers`].
pub fn handle(i: usize) -> Option<tokio::runtime::Handle> {
    let workers = WORKERS.get()?;
    Some(workers.handles[i % workers.handles.len()].clone())
}
