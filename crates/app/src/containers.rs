//! Container detail: inspect, logs and terminals, for a container or a
//! service's containers, on the environment's kept connection.
//!
//! - Logs come as batches of whole, bounded lines (`LogLine`), sorted by the
//!   daemon's timestamps within a batch. A service's logs merge every
//!   container of it — every release and slot — and, when following, pick up
//!   each container that starts later, so a rollout shows v1 and v2 side by
//!   side.
//! - Terminals are exec sessions with a TTY (`bash` if the image has it,
//!   else `sh`); a container with no shell gets the debug shell (a busybox
//!   helper in its PID and network namespaces). Output goes to a sink as it
//!   comes; input and resizes arrive by session number. A session ends
//!   cleanly when the shell exits or the container stops or goes away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use changeover_core::detail::{
    ContainerDetail, LineSplitter, LogLine, LogQuery, Target, TerminalEvent, TerminalOpened,
};
use changeover_core::rollout::Runtime;
use changeover_core::{Problem, ProblemCode};
use changeover_docker::containers as dc;
use changeover_docker::runtime::DockerRuntime;
use changeover_docker::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use ts_rs::TS;

use crate::environments::Environment;

/// Lines sent together at most this often (and at most this many).
const BATCH_EVERY: Duration = Duration::from_millis(40);
const BATCH_LINES: usize = 2000;

/// A batch of log lines; `ended` says why no more will come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(export)]
pub struct LogBatch {
    pub lines: Vec<LogLine>,
    pub ended: Option<String>,
}

pub type LogSink = Arc<dyn Fn(LogBatch) + Send + Sync>;
pub type TerminalSink = Arc<dyn Fn(TerminalEvent) + Send + Sync>;

/// A container the user named, found.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub release: Option<u32>,
    pub slot: Option<u32>,
}

fn unknown(what: &str) -> Problem {
    Problem::new(
        ProblemCode::UnknownContainer,
        format!("no container {what} on this environment"),
    )
}

/// The container `target` names: a container by name or ID, or a slot of a
/// service (slot 0 when none is given) — of its current release, else the
/// newest release that has one.
pub async fn find(env: &Environment, target: &str) -> Result<Found, Problem> {
    let parsed =
        Target::parse(target).map_err(|why| Problem::new(ProblemCode::UnknownContainer, why))?;
    let docker = env.docker().await?;
    match parsed {
        Target::Container(c) => {
            let d = dc::detail(&docker, &c).await?;
            Ok(Found {
                id: d.id,
                name: d.name,
                release: d.release,
                slot: d.slot,
            })
        }
        Target::Service {
            stack,
            service,
            slot,
        } => {
            let slot = slot.unwrap_or(0);
            let all = DockerRuntime::new(&docker)
                .containers(&stack, &service)
                .await?;
            let current = crate::services::current_release(env, &format!("{stack}/{service}"))
                .await
                .ok()
                .flatten();
            let mut of_slot: Vec<_> = all.into_iter().filter(|c| c.slot == slot).collect();
            of_slot.sort_by_key(|c| (Some(c.release) == current, c.running, c.release));
            let c = of_slot
                .pop()
                .ok_or_else(|| unknown(&format!("for slot {slot} of {stack}/{service}")))?;
            Ok(Found {
                id: c.id,
                name: c.name,
                release: Some(c.release),
                slot: Some(c.slot),
            })
        }
    }
}

/// What `docker inspect` says of the container `target` names.
pub async fn detail(env: &Environment, target: &str) -> Result<ContainerDetail, Problem> {
    let found = find(env, target).await?;
    dc::detail(&env.docker().await?, &found.id).await
}

/// Stops a log follow when dropped or stopped.
pub struct Follow {
    stop: watch::Sender<bool>,
}

impl Follow {
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Follows the logs of `target` — a container, or with `STACK/SERVICE` every
/// container of the service — into `sink`, until the logs end (without
/// `follow`), the [`Follow`] is dropped, or the environment goes away.
pub async fn logs(
    env: &Environment,
    target: &str,
    query: LogQuery,
    sink: LogSink,
) -> Result<Follow, Problem> {
    if let Some(s) = &query.since {
        changeover_core::detail::parse_duration(s)
            .map_err(|why| Problem::new(ProblemCode::InvalidTraffic, format!("--since: {why}")))?;
    }
    let docker = env.docker().await?;
    let (stop, stopped) = watch::channel(false);
    let (lines_tx, lines_rx) = mpsc::channel::<LogLine>(8192);
    let parsed =
        Target::parse(target).map_err(|why| Problem::new(ProblemCode::UnknownContainer, why))?;
    let active = Active::default();
    // One container's lines, history and all, as the query asks.
    let follow = |found: Found| {
        tokio::spawn(follow_one(
            docker.clone(),
            found,
            query.clone(),
            None,
            lines_tx.clone(),
            active.clone(),
            stopped.clone(),
        ));
    };
    match parsed {
        Target::Service {
            stack,
            service,
            slot: None,
        } => {
            // Listen for starts before listing, so a container that starts
            // in between is not missed (`Active` keeps it from being
            // followed twice).
            let starts = query
                .follow
                .then(|| dc::starts_of(&docker, &stack, &service));
            let all = DockerRuntime::new(&docker)
                .containers(&stack, &service)
                .await?;
            if all.is_empty() && !query.follow {
                return Err(unknown(&format!("of {stack}/{service}")));
            }
            for c in &all {
                if active.claim(&c.id) {
                    follow(Found {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        release: Some(c.release),
                        slot: Some(c.slot),
                    });
                }
            }
            if let Some(starts) = starts {
                // Containers that start later (a rollout): followed from their start.
                tokio::spawn(follow_new(
                    docker.clone(),
                    starts,
                    lines_tx.clone(),
                    active.clone(),
                    stopped.clone(),
                ));
            }
        }
        _ => {
            let found = find(env, target).await?;
            active.claim(&found.id);
            follow(found);
        }
    }
    drop(lines_tx);
    tokio::spawn(batch(lines_rx, sink, stopped));
    Ok(Follow { stop })
}

/// The containers being followed now, so none is followed twice.
#[derive(Clone, Default)]
struct Active(Arc<Mutex<std::collections::HashSet<String>>>);

impl Active {
    /// Takes `id` for a follower; `false` when one follows it already.
    fn claim(&self, id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string())
    }

    fn release(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One container's lines into `tx`, from `since_unix` when given. When
/// following and its log stream ends while it runs (it had not started yet
/// when asked, or the stream broke), it is followed again from then.
async fn follow_one(
    docker: Docker,
    c: Found,
    mut query: LogQuery,
    mut since_unix: Option<i64>,
    tx: mpsc::Sender<LogLine>,
    active: Active,
    mut stopped: watch::Receiver<bool>,
) {
    let line = |text: String, cut: Option<u64>, stderr: bool| {
        // Docker stamps each line: "2026-12-01T10:00:00.123456789Z text".
        let (time, text) = match text.split_once(' ') {
            Some((t, rest)) if t.len() >= 20 && t.as_bytes()[4] == b'-' && t.ends_with('Z') => {
                (Some(t.to_string()), rest.to_string())
            }
            _ => (None, text),
        };
        LogLine {
            container: c.name.clone(),
            release: c.release,
            slot: c.slot,
            stderr,
            time,
            text,
            cut,
        }
    };
    loop {
        let Ok(mut stream) = dc::logs_since(&docker, &c.id, &query, since_unix) else {
            active.release(&c.id);
            return;
        };
        let mut splitters: [LineSplitter; 2] = Default::default();
        let mut printed = false;
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = stopped.wait_for(|s| *s) => return,
            };
            match next {
                Some(Ok(piece)) => {
                    let i = usize::from(piece.stderr);
                    for (text, cut) in splitters[i].push(&piece.bytes) {
                        printed = true;
                        if tx.send(line(text, cut, piece.stderr)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        for (i, s) in splitters.iter_mut().enumerate() {
            if let Some((text, cut)) = s.finish() {
                let _ = tx.send(line(text, cut, i == 1)).await;
            }
        }
        let ended = unix_now();
        // Released before looking, so a start seen meanwhile is not lost.
        active.release(&c.id);
        if !query.follow || !dc::is_running(&docker, &c.id).await || !active.claim(&c.id) {
            return;
        }
        since_unix = Some(if printed { ended } else { 0 });
        query.all = true;
    }
}

/// Follows every container of the service that starts from now on (a
/// rollout's new ones, a kept one started again), from its start.
async fn follow_new(
    docker: Docker,
    mut starts: std::pin::Pin<Box<dyn futures_util::Stream<Item = dc::Started> + Send>>,
    tx: mpsc::Sender<LogLine>,
    active: Active,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            n = starts.next() => n,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let Some(c) = next else { return };
        if !active.claim(&c.id) {
            continue;
        }
        let found = Found {
            id: c.id,
            name: c.name,
            release: c.release,
            slot: c.slot,
        };
        let query = LogQuery {
            follow: true,
            tail: None,
            all: true,
            since: None,
        };
        tokio::spawn(follow_one(
            docker.clone(),
            found,
            query,
            Some(c.at.saturating_sub(1)),
            tx.clone(),
            active.clone(),
            stopped.clone(),
        ));
    }
}

/// Collects lines into batches for the sink.
async fn batch(mut rx: mpsc::Receiver<LogLine>, sink: LogSink, mut stopped: watch::Receiver<bool>) {
    let mut lines = Vec::new();
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flush = |lines: &mut Vec<LogLine>, ended: Option<String>| {
        if lines.is_empty() && ended.is_none() {
            return;
        }
        let mut out = std::mem::take(lines);
        // Lines of several containers, in the daemon's time order.
        out.sort_by(|a, b| a.time.cmp(&b.time));
        sink(LogBatch { lines: out, ended });
    };
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(l) => {
                    lines.push(l);
                    if lines.len() >= BATCH_LINES {
                        flush(&mut lines, None);
                    }
                }
                None => {
                    flush(&mut lines, Some("the logs ended".into()));
                    return;
                }
            },
            _ = tick.tick() => flush(&mut lines, None),
            _ = stopped.wait_for(|s| *s) => {
                flush(&mut lines, Some("stopped".into()));
                return;
            }
        }
    }
}

/// How to open a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export)]
pub enum TerminalMode {
    /// The container's own shell, or the debug shell when it has none.
    Auto,
    /// The debug shell even when the container has a shell.
    Debug,
}

struct Term {
    input: mpsc::Sender<Vec<u8>>,
    docker: Docker,
    exec_id: Option<String>,
    helper: Option<String>,
    done: watch::Sender<bool>,
}

/// The open terminal sessions of the app.
#[derive(Default)]
pub struct Terminals {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Term>>>,
}

fn no_session(id: u64) -> Problem {
    Problem::new(
        ProblemCode::UnknownSession,
        format!("terminal {id} is not open (it ended)"),
    )
}

impl Terminals {
    fn get(&self, id: u64) -> Result<Arc<Term>, Problem> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| no_session(id))
    }

    /// Opens a terminal into the container `target` names, `cols` × `rows`.
    pub async fn open(
        self: &Arc<Self>,
        env: &Environment,
        target: &str,
        mode: TerminalMode,
        (cols, rows): (u16, u16),
        sink: TerminalSink,
    ) -> Result<TerminalOpened, Problem> {
        let found = find(env, target).await?;
        let docker = env.docker().await?;
        let running = dc::detail(&docker, &found.id).await?.running;
        if !running {
            return Err(Problem::new(
                ProblemCode::ContainerNotRunning,
                format!("{} is not running; start it first (a terminal runs inside a running container)", found.name),
            ));
        }
        let size = (cols.max(2), rows.max(2));
        let shell = match mode {
            TerminalMode::Debug => None,
            TerminalMode::Auto => dc::shell_of(&docker, &found.id).await?,
        };
        let (session, shell, note) = match shell {
            Some(sh) => (
                dc::exec(
                    &docker,
                    &found.id,
                    vec![format!("/bin/{sh}")],
                    Some(size),
                    vec!["TERM=xterm-256color".into()],
                )
                .await?,
                sh.to_string(),
                format!("{sh} in {}", found.name),
            ),
            None => (
                dc::debug_shell(&docker, &found.id, size).await?,
                "debug shell".to_string(),
                format!(
                    "debug shell for {}: busybox in its PID and network namespaces (its image has no shell); its files are at /proc/1/root",
                    found.name
                ),
            ),
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (input_tx, mut input_rx) = mpsc::channel::<Vec<u8>>(256);
        let (done, mut done_rx) = watch::channel(false);
        let term = Arc::new(Term {
            input: input_tx,
            docker: docker.clone(),
            exec_id: session.exec_id.clone(),
            helper: session.helper.clone(),
            done,
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, term.clone());
        let dc::Session {
            mut input,
            mut output,
            exec_id,
            helper,
        } = session;
        // Keystrokes to the shell.
        tokio::spawn(async move {
            while let Some(bytes) = input_rx.recv().await {
                if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                    break;
                }
            }
        });
        // Output to the window, then the end.
        let terminals = self.clone();
        let container = found.id.clone();
        let engine = base64::engine::general_purpose::STANDARD;
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = output.next() => n,
                    _ = done_rx.wait_for(|d| *d) => None,
                };
                match next {
                    Some(Ok(piece)) => sink(TerminalEvent::Data {
                        data: engine.encode(&piece.bytes),
                    }),
                    Some(Err(_)) | None => break,
                }
            }
            let mut code = None;
            for _ in 0..25 {
                code = match (&exec_id, &helper) {
                    (Some(e), _) => dc::exec_exit(&docker, e).await,
                    (None, Some(h)) => dc::helper_exit(&docker, h).await,
                    _ => None,
                };
                if code.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let still = dc::detail(&docker, &container).await;
            let message = match (&still, code) {
                (Err(_), _) => "the container went away".to_string(),
                (Ok(d), _) if !d.running => format!("the container stopped ({})", d.status),
                (Ok(_), Some(c)) => format!("the shell exited with code {c}"),
                (Ok(_), None) => "the session ended".to_string(),
            };
            if let Some(h) = &helper {
                dc::remove_helper(&docker, h).await;
            }
            terminals
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            sink(TerminalEvent::Exit { code, message });
        });
        Ok(TerminalOpened {
            id,
            container: found.name,
            debug: shell == "debug shell",
            shell,
            note,
        })
    }

    /// Sends keystrokes (or pasted text) to a session.
    pub async fn input(&self, id: u64, bytes: Vec<u8>) -> Result<(), Problem> {
        self.get(id)?
            .input
            .send(bytes)
            .await
            .map_err(|_| no_session(id))
    }

    /// Follows a new window size.
    pub async fn resize(&self, id: u64, cols: u16, rows: u16) -> Result<(), Problem> {
        let t = self.get(id)?;
        let (cols, rows) = (cols.max(2), rows.max(2));
        match (&t.exec_id, &t.helper) {
            (Some(e), _) => dc::resize_exec(&t.docker, e, cols, rows).await,
            (None, Some(h)) => dc::resize_container(&t.docker, h, cols, rows).await,
            _ => {}
        }
        Ok(())
    }

    /// Ends a session (the shell gets a hang-up as its input closes).
    pub async fn close(&self, id: u64) -> Result<(), Problem> {
        let t = self.get(id)?;
        // Ctrl-D, then stop reading: a shell that ignores it is left to
        // end with its exec; a debug helper is removed.
        let _ = t.input.send(vec![4]).await;
        let _ = t.done.send(true);
        if let Some(h) = &t.helper {
            dc::remove_helper(&t.docker, h).await;
        }
        Ok(())
    }
}

/// Log follows the window keeps open, by number.
#[derive(Default)]
pub struct Follows {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Follow>>,
}

impl Follows {
    /// Keeps `follow` until [`Self::stop`]; its number.
    pub fn keep(&self, follow: Follow) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, follow);
        id
    }

    /// Stops a follow (fine when it ended already).
    pub fn stop(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}
