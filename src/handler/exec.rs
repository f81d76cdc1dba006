//! The `exec` handler: one long-lived child process per worker, fed items on its stdin
//! and acknowledging them on its stdout.
//!
//! `rsmld --handler exec -- COMMAND [ARGS...]` runs `COMMAND` (no shell: the argv exactly
//! as given) once per worker, so a handler can be written in any language and still get
//! rsmld's protocol handling, partitioning and checkpointing for free.
//!
//! # The protocol, from the child's side
//!
//! - **stdin**: one item per line, as the item JSON of [`crate::item`]
//!   (`{"shardId":…,"sequenceNumber":…,"partitionKey":…,"data":"<base64>",…}`), ASCII,
//!   `\n`-terminated. Items with the same partition key always reach the same child, in
//!   order.
//! - **stdout**: exactly one ack line per item, in the order the items arrived: `ok` when
//!   the item is done (durably, as far as the child promises — a checkpoint may cover it
//!   as soon as rsmld reads the ack), or `err <message>` when this item failed. Flush after
//!   every ack (`print("ok", flush=True)`; shell `echo` writes at once).
//! - **stdout is only for acks.** Anything else (a debug `print`, a banner) is a protocol
//!   violation: rsmld cannot tell which item it belongs to, so it fails the batch's
//!   unacknowledged items and restarts the child. Log to **stderr**: rsmld forwards it line
//!   by line to its own log (`worker <k> child <pid>: <line>`).
//! - **Environment**: rsmld's own, plus `RSMLD_SHARD_ID`, `RSMLD_WORKER` (this child's
//!   worker index) and `RSMLD_WORKERS` (how many there are). SIGINT, SIGTERM and SIGPIPE
//!   have their default dispositions (rsmld ignores them itself; the child does not
//!   inherit that).
//! - **End**: stdin EOF means "exit now"; a child still running 2 s later is killed.
//!
//! A complete handler in shell (appends every item to a file per shard and worker):
//!
//! ```sh
//! #!/bin/sh
//! # rsmld exec handler: append each item to $1/<shard>.<worker>.jsonl, then ack it.
//! while IFS= read -r item; do
//!   printf '%s\n' "$item" >> "$1/$RSMLD_SHARD_ID.$RSMLD_WORKER.jsonl" && echo ok || echo "err cannot write $1"
//! done
//! ```
//!
//! and in Python:
//!
//! ```python
//! import json, sys
//! for line in sys.stdin:
//!     item = json.loads(line)                  # base64 payload in item["data"]
//!     print("ok", flush=True)                  # or: print("err why", flush=True)
//! ```
//!
//! # Why this shape
//!
//! - **Long-lived, one per worker**: process start-up (an interpreter, a connection)
//!   is paid once, and a per-worker child needs no locking; per-key order is kept because
//!   a worker's items are written in order and acks come back in order.
//! - **Acks by position, not by id**: the simplest thing a five-line script can do. The
//!   price is that any stray stdout line shifts every later ack, which is why a line that
//!   is neither `ok` nor `err …` fails the batch rather than being skipped.
//! - **Pipelined**: within a batch rsmld keeps up to `max_pipelined` items written but
//!   not yet acknowledged, so a child that batches its own work (or a slow pipe) is never
//!   fed one item per round trip. Acks are read by a separate thread into a queue, so a
//!   child that writes acks before reading more input can never deadlock with rsmld
//!   blocked writing to it.
//! - **Failure is per item**: `err` fails that item only (the failure policy decides what
//!   happens next). A child that exits, closes its stdout, writes garbage or is killed by
//!   the watchdog fails every item of the batch it had not acknowledged (an ack already
//!   read still counts), is killed and reaped, and is restarted for the next batch after
//!   a backoff (`restart_backoff`, doubling up to `restart_backoff_max`, reset by a healthy
//!   batch).
//! - **Nothing left behind**: each child leads its own process group, and killing it
//!   (watchdog, failure, close, drop) kills the group, so a `sleep` or other grandchild
//!   of a shell handler dies with it. The group is signalled only while the child is not
//!   yet reaped, so its id cannot have been reused.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::{BatchError, Handler, HandlerError, HandlerFactory, Interrupter, WorkerContext};
use crate::item::Item;

/// How long `close` waits for a child to exit after closing its stdin.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a failing child is given to exit by itself (so its real status is reported)
/// and to deliver the acks it wrote before failing.
const FAIL_GRACE: Duration = Duration::from_secs(1);
/// How often a waiting `process` checks whether the child is still alive.
const POLL: Duration = Duration::from_millis(50);
/// Longest ack line read; a longer one is garbage.
const MAX_ACK_LINE: usize = 64 * 1024;
/// Longest stderr line forwarded as one log line; longer ones are split.
const MAX_LOG_LINE: usize = 16 * 1024;
/// How much of a garbage line an error message quotes.
const GARBAGE_PREVIEW: usize = 80;

/// Settings of the exec handler.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// The command and its arguments (no shell).
    pub command: Vec<String>,
    /// Most items written to the child before their acks are read.
    pub max_pipelined: usize,
    /// First restart delay after the child failed; doubles up to `restart_backoff_max`.
    pub restart_backoff: Duration,
    /// Largest restart delay.
    pub restart_backoff_max: Duration,
}

/// Makes one child process per worker.
#[derive(Clone, Debug)]
pub struct ExecFactory {
    options: ExecOptions,
}

impl ExecFactory {
    /// A factory running `options.command`.
    pub fn new(options: ExecOptions) -> Self {
        ExecFactory { options }
    }
}

impl HandlerFactory for ExecFactory {
    /// Starts the worker's child at once, so a command that cannot run is a start-up error.
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        let mut handler = ExecHandler {
            options: self.options.clone(),
            ctx: ctx.clone(),
            shared: Arc::new(Mutex::new(Shared::default())),
            child: None,
            backoff: self.options.restart_backoff,
            restart_delay: None,
        };
        handler.child = Some(
            handler
                .spawn()
                .map_err(|e| HandlerError::new(e.to_string()))?,
        );
        Ok(Box::new(handler))
    }
}

/// What went wrong with an exec handler child.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command could not be started.
    #[error("cannot start the exec handler command {command:?}: {message}")]
    Spawn {
        /// The command (argv\[0\]).
        command: String,
        /// Why (the OS error).
        message: String,
    },
    /// The child failed before acknowledging every item of a batch.
    #[error("exec handler child {command:?} (pid {pid}) {failure}")]
    Child {
        /// The command (argv\[0\]).
        command: String,
        /// The child's process id.
        pid: u32,
        /// What happened.
        failure: ChildFailure,
    },
}

/// How a child failed in the middle of a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildFailure {
    /// The watchdog's interrupter killed it.
    #[error("was killed after timeout")]
    KilledAfterTimeout,
    /// It exited (the status as the OS reports it, e.g. `exit status: 3`).
    #[error("exited ({0})")]
    Exited(String),
    /// It closed its stdout but did not exit; rsmld killed it.
    #[error("closed its stdout without exiting (killed)")]
    ClosedStdout,
    /// Writing to its stdin failed while it kept running; rsmld killed it.
    #[error("stopped reading its stdin ({0}) without exiting (killed)")]
    StdinFailed(String),
    /// Reading its stdout failed.
    #[error("could not be read from: {0}")]
    ReadFailed(String),
    /// It wrote a line that is neither `ok` nor `err …` (the first bytes, quoted).
    #[error("wrote a line that is not an ack: {0:?}")]
    Garbage(String),
    /// It wrote an ack for an item it was never sent.
    #[error("wrote an ack with no item waiting for it: {0:?}")]
    Unsolicited(String),
}

/// One line (or the end) of a child's stdout, as the reader thread saw it.
#[derive(Debug)]
enum Event {
    /// `ok` (`None`) or `err <message>` (`Some`).
    Ack(Option<String>),
    /// Any other line: its first bytes.
    Garbage(String),
    /// End of stdout.
    Eof,
    /// A read error.
    ReadError(String),
}

/// State shared between the handler and its interrupter.
#[derive(Debug, Default)]
struct Shared {
    /// The current child's pid (= its process group id) while it is not yet reaped.
    pid: Option<u32>,
    /// A `process` call is running.
    busy: bool,
    /// The interrupter fired during the current `process` call.
    interrupted: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding this lock cannot leave the plain fields inconsistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILLs the process group `pgid`.
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) has no memory effects. The caller guarantees that `pgid` is the
    // process group of a child of ours that has not been reaped, so the id is not reused.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// Whether the child `pid` has exited, without reaping it (so its pid stays reserved).
#[cfg(target_os = "linux")]
fn has_exited(pid: u32) -> bool {
    // SAFETY: siginfo_t is a plain C struct for which all-zero bytes are valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`; WNOWAIT leaves the child waitable, WNOHANG
    // makes it return at once.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: after a successful waitid the pid field is initialised (0: no state change).
    rc != 0 || unsafe { info.si_pid() } != 0
}

/// Elsewhere, exits are noticed through the end of the child's stdout only.
#[cfg(not(target_os = "linux"))]
fn has_exited(_pid: u32) -> bool {
    false
}

/// A running child and its pipes.
struct Running {
    child: Child,
    pid: u32,
    /// `None` once closed.
    stdin: Option<BufWriter<ChildStdin>>,
    acks: Receiver<Event>,
}

impl Running {
    /// Closes stdin without flushing what is buffered (a hung child must not block us).
    fn close_stdin(&mut self) {
        if let Some(w) = self.stdin.take() {
            let (stdin, _unwritten) = w.into_parts();
            drop(stdin);
        }
    }
}

/// How a child ended when we made sure it was gone.
struct Ended {
    /// Its status, if reaping worked.
    status: Option<ExitStatus>,
    /// It exited before we killed it.
    by_itself: bool,
}

struct ExecHandler {
    options: ExecOptions,
    ctx: WorkerContext,
    shared: Arc<Mutex<Shared>>,
    child: Option<Running>,
    /// The delay before the next restart after a failure.
    backoff: Duration,
    /// Set after a failure: sleep this long before the next spawn.
    restart_delay: Option<Duration>,
}

/// Marks a `process` call as running for the interrupter; unmarks on drop.
struct Busy(Arc<Mutex<Shared>>);

impl Busy {
    fn new(shared: &Arc<Mutex<Shared>>) -> Busy {
        let mut s = lock(shared);
        s.busy = true;
        s.interrupted = false;
        Busy(shared.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.0).busy = false;
    }
}

/// Where a batch got to.
struct Progress {
    sent: usize,
    acked: usize,
    rejected: Vec<(usize, HandlerError)>,
}

impl Progress {
    /// Applies one stdout event; an error is a child failure.
    fn apply(&mut self, event: Event) -> Result<(), Fault> {
        match event {
            Event::Ack(verdict) => {
                if self.acked >= self.sent {
                    let line = verdict.map_or_else(|| "ok".to_owned(), |m| format!("err {m}"));
                    return Err(Fault::Unsolicited(preview(line.as_bytes())));
                }
                if let Some(message) = verdict {
                    self.rejected.push((
                        self.acked,
                        HandlerError::new(format!(
                            "exec handler child rejected the item: {message}"
                        )),
                    ));
                }
                self.acked += 1;
                Ok(())
            }
            Event::Garbage(line) => Err(Fault::Garbage(line)),
            Event::Eof => Err(Fault::Eof),
            Event::ReadError(e) => Err(Fault::Read(e)),
        }
    }
}

/// What `process` observed going wrong (before the child was made to end).
#[derive(Debug)]
enum Fault {
    Interrupted,
    Eof,
    Exited,
    Write(String),
    Read(String),
    Garbage(String),
    Unsolicited(String),
}

impl ExecHandler {
    fn command_name(&self) -> &str {
        self.options.command.first().map_or("", String::as_str)
    }

    /// Starts a child with its ack reader and stderr forwarder threads.
    fn spawn(&self) -> Result<Running, ExecError> {
        let spawn_error = |message: String| ExecError::Spawn {
            command: self.command_name().to_owned(),
            message,
        };
        let Some((program, args)) = self.options.command.split_first() else {
            return Err(spawn_error("no command given".into()));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("RSMLD_SHARD_ID", &self.ctx.shard_id)
            .env("RSMLD_WORKER", self.ctx.worker.to_string())
            .env("RSMLD_WORKERS", self.ctx.workers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // signal(2), which is async-signal-safe; it allocates nothing and takes no lock.
        // rsmld ignores these signals, and ignored dispositions survive exec: the child
        // gets the defaults back.
        unsafe {
            cmd.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGPIPE] {
                    if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| spawn_error(e.to_string()))?;
        let pid = child.id();
        lock(&self.shared).pid = Some(pid);
        let (tx, acks) = unbounded();
        let mut running = Running {
            pid,
            stdin: child
                .stdin
                .take()
                .map(|s| BufWriter::with_capacity(64 * 1024, s)),
            acks,
            child,
        };
        let worker = self.ctx.worker;
        let pipes = (running.child.stdout.take(), running.child.stderr.take());
        let started = match pipes {
            (Some(stdout), Some(stderr)) => std::thread::Builder::new()
                .name(format!("rsmld-exec-{worker}-acks"))
                .spawn(move || read_acks(stdout, &tx))
                .and_then(|_| {
                    std::thread::Builder::new()
                        .name(format!("rsmld-exec-{worker}-stderr"))
                        .spawn(move || forward_stderr(stderr, worker, pid))
                })
                .map(|_| ())
                .map_err(|e| format!("cannot start its reader threads: {e}")),
            // Invariant: both are piped above; kept as an error rather than a panic.
            _ => Err("its stdout/stderr pipes are missing".to_owned()),
        };
        if running.stdin.is_none() {
            self.end(&mut running, Duration::ZERO);
            return Err(spawn_error("its stdin pipe is missing".into()));
        }
        if let Err(message) = started {
            self.end(&mut running, Duration::ZERO);
            return Err(spawn_error(message));
        }
        log::info!(
            "worker {worker}: started exec handler {:?} (pid {pid})",
            self.options.command
        );
        Ok(running)
    }

    /// Closes the child's stdin, gives it `grace` to exit, then kills its process group
    /// and reaps it.
    fn end(&self, running: &mut Running, grace: Duration) -> Ended {
        running.close_stdin();
        let deadline = Instant::now() + grace;
        let mut by_itself = has_exited(running.pid);
        while !by_itself && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            by_itself = has_exited(running.pid);
        }
        {
            let mut s = lock(&self.shared);
            if s.pid == Some(running.pid) {
                s.pid = None;
            }
        }
        // Not reaped yet, so the group id is still ours; this also takes any grandchildren.
        kill_group(running.pid);
        let status = match running.child.wait() {
            Ok(status) => Some(status),
            Err(e) => {
                log::warn!(
                    "worker {}: cannot reap exec handler child {}: {e}",
                    self.ctx.worker,
                    running.pid
                );
                None
            }
        };
        Ended { status, by_itself }
    }

    /// After a failure: the next spawn waits `backoff`, which doubles.
    fn note_failure(&mut self) {
        self.restart_delay = Some(self.backoff);
        self.backoff = (self.backoff * 2).min(
            self.options
                .restart_backoff_max
                .max(self.options.restart_backoff),
        );
    }

    /// Before a batch: restarts a child that died or spoke while idle, and starts one if
    /// there is none (after the backoff of the last failure).
    fn ensure_child(&mut self) -> Result<(), BatchError> {
        if let Some(running) = self.child.as_mut() {
            let stray = match running.acks.try_recv() {
                Ok(Event::Ack(_)) => Some("wrote an extra ack".to_owned()),
                Ok(Event::Garbage(line)) => Some(format!("wrote {line:?}")),
                Ok(Event::ReadError(e)) => Some(format!("could not be read from: {e}")),
                Ok(Event::Eof) | Err(TryRecvError::Disconnected) => {
                    Some("closed its stdout".to_owned())
                }
                Err(TryRecvError::Empty) => None,
            };
            let exited = has_exited(running.pid);
            if stray.is_some() || exited {
                if let Some(mut running) = self.child.take() {
                    let ended = self.end(&mut running, Duration::ZERO);
                    log::warn!(
                        "worker {}: exec handler child {} failed between batches ({}{}); restarting it",
                        self.ctx.worker,
                        running.pid,
                        stray.map_or_else(String::new, |s| format!("{s}; ")),
                        ended.status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string()),
                    );
                }
                self.note_failure();
            }
        }
        if self.child.is_some() {
            return Ok(());
        }
        if let Some(delay) = self.restart_delay.take() {
            log::warn!(
                "worker {}: restarting exec handler {:?} in {} ms",
                self.ctx.worker,
                self.options.command,
                delay.as_millis()
            );
            std::thread::sleep(delay);
        }
        match self.spawn() {
            Ok(running) => {
                self.child = Some(running);
                Ok(())
            }
            Err(e) => {
                self.note_failure();
                Err(BatchError::Batch(HandlerError::new(e.to_string())))
            }
        }
    }

    /// Writes items and reads acks until every item is acknowledged or the child fails.
    fn run_batch(&self, running: &mut Running, items: &[Item]) -> (Progress, Option<Fault>) {
        let n = items.len();
        let window = self.options.max_pipelined.max(1);
        let mut p = Progress {
            sent: 0,
            acked: 0,
            rejected: Vec::new(),
        };
        let fault = 'batch: loop {
            if lock(&self.shared).interrupted {
                break Some(Fault::Interrupted);
            }
            // Take the acks that are already there (only as many as items were sent:
            // what follows the last ack is left for the between-batches check).
            while p.acked < p.sent {
                match running.acks.try_recv() {
                    Ok(event) => {
                        if let Err(fault) = p.apply(event) {
                            break 'batch Some(fault);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'batch Some(Fault::Eof),
                }
            }
            if p.acked == n {
                break None;
            }
            // Fill the window. A blocked write is fine: acks keep flowing into the queue.
            if p.sent < n && p.sent - p.acked < window {
                let end = n.min(p.acked + window);
                let Some(stdin) = running.stdin.as_mut() else {
                    break Some(Fault::Write("stdin already closed".into()));
                };
                let written = items[p.sent..end]
                    .iter()
                    .try_for_each(|item| {
                        item.write_json(&self.ctx.shard_id, &mut *stdin)?;
                        stdin.write_all(b"\n")
                    })
                    .and_then(|()| stdin.flush());
                if let Err(e) = written {
                    break Some(Fault::Write(e.to_string()));
                }
                p.sent = end;
                continue;
            }
            match running.acks.recv_timeout(POLL) {
                Ok(event) => {
                    if let Err(fault) = p.apply(event) {
                        break Some(fault);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if has_exited(running.pid) {
                        break Some(Fault::Exited);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break Some(Fault::Eof),
            }
        };
        if let Some(Fault::Interrupted | Fault::Exited | Fault::Write(_)) = fault {
            // Acks written before the failure are still good: collect them until the
            // stdout ends (promptly, once the child is dead), within the grace period.
            let deadline = Instant::now() + FAIL_GRACE;
            while p.acked < p.sent {
                match running.acks.recv_deadline(deadline) {
                    Ok(Event::Ack(verdict)) => {
                        if p.apply(Event::Ack(verdict)).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        (p, fault)
    }
}

impl Handler for ExecHandler {
    fn process(&mut self, items: &[Item]) -> Result<(), BatchError> {
        let _busy = Busy::new(&self.shared);
        self.ensure_child()?;
        let Some(mut running) = self.child.take() else {
            // Invariant: ensure_child returned Ok, so there is a child.
            return Err(BatchError::Batch(HandlerError::new(
                "exec handler has no child after starting one",
            )));
        };
        let (progress, fault) = self.run_batch(&mut running, items);
        let Some(fault) = fault else {
            self.child = Some(running);
            self.backoff = self.options.restart_backoff;
            return if progress.rejected.is_empty() {
                Ok(())
            } else {
                Err(BatchError::Items(progress.rejected))
            };
        };
        let interrupted = lock(&self.shared).interrupted;
        let grace = match fault {
            Fault::Eof | Fault::Exited | Fault::Write(_) if !interrupted => FAIL_GRACE,
            _ => Duration::ZERO,
        };
        let ended = self.end(&mut running, grace);
        let status = || {
            ended
                .status
                .map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
        };
        let failure = match fault {
            _ if interrupted => ChildFailure::KilledAfterTimeout,
            Fault::Interrupted => ChildFailure::KilledAfterTimeout,
            Fault::Garbage(line) => ChildFailure::Garbage(line),
            Fault::Unsolicited(line) => ChildFailure::Unsolicited(line),
            Fault::Read(e) => ChildFailure::ReadFailed(e),
            _ if ended.by_itself => ChildFailure::Exited(status()),
            Fault::Write(e) => ChildFailure::StdinFailed(e),
            Fault::Eof | Fault::Exited => ChildFailure::ClosedStdout,
        };
        let error = ExecError::Child {
            command: self.command_name().to_owned(),
            pid: running.pid,
            failure,
        };
        log::warn!(
            "worker {}: {error}; {} of {} item(s) not acknowledged; the next batch restarts it",
            self.ctx.worker,
            items.len() - progress.acked,
            items.len()
        );
        self.note_failure();
        let message = HandlerError::new(format!("{error}; item not acknowledged"));
        let mut failed = progress.rejected;
        failed.extend((progress.acked..items.len()).map(|i| (i, message.clone())));
        if failed.is_empty() {
            // Every item was acknowledged before the child failed: the batch is done.
            return Ok(());
        }
        Err(BatchError::Items(failed))
    }

    fn close(&mut self) -> Result<(), HandlerError> {
        let Some(mut running) = self.child.take() else {
            return Ok(());
        };
        let ended = self.end(&mut running, CLOSE_GRACE);
        let name = self.command_name();
        match ended.status {
            _ if !ended.by_itself => Err(HandlerError::new(format!(
                "exec handler child {name:?} (pid {}) did not exit within {} s of its stdin closing; killed",
                running.pid,
                CLOSE_GRACE.as_secs()
            ))),
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(HandlerError::new(format!(
                "exec handler child {name:?} (pid {}) exited with {status} at close",
                running.pid
            ))),
            None => Ok(()),
        }
    }

    fn interrupter(&self) -> Option<Interrupter> {
        let shared = self.shared.clone();
        Some(Arc::new(move || {
            let mut s = lock(&shared);
            if !s.busy {
                return;
            }
            s.interrupted = true;
            if let Some(pid) = s.pid {
                // The lock is held: `end` clears `pid` before reaping, so this child is
                // not reaped yet and its group id is still ours.
                kill_group(pid);
            }
        }))
    }
}

impl Drop for ExecHandler {
    fn drop(&mut self) {
        if let Some(mut running) = self.child.take() {
            self.end(&mut running, Duration::ZERO);
        }
    }
}

/// The first bytes of a line, for error messages.
fn preview(line: &[u8]) -> String {
    let cut = &line[..line.len().min(GARBAGE_PREVIEW)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > GARBAGE_PREVIEW {
        s.push('…');
    }
    s
}

/// Parses one stdout line (without its newline).
fn parse_ack(line: &[u8]) -> Event {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.trim_ascii_end() == b"ok" {
        return Event::Ack(None);
    }
    if line == b"err" {
        return Event::Ack(Some("(no message)".into()));
    }
    if let Some(message) = line.strip_prefix(b"err ") {
        return Event::Ack(Some(
            String::from_utf8_lossy(message.trim_ascii()).into_owned(),
        ));
    }
    Event::Garbage(preview(line))
}

/// The ack reader thread: one event per stdout line, then `Eof`; stops at the first
/// line that is not an ack (the child is killed after that anyway).
fn read_acks(stdout: impl Read, tx: &Sender<Event>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let event = match (&mut reader)
            .take(MAX_ACK_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => Event::Eof,
            Ok(_) => match line.strip_suffix(b"\n") {
                Some(l) => parse_ack(l),
                None if line.len() >= MAX_ACK_LINE => Event::Garbage(preview(&line)),
                // The last line, unterminated.
                None => parse_ack(&line),
            },
            Err(e) => Event::ReadError(e.to_string()),
        };
        let more = matches!(event, Event::Ack(_));
        if tx.send(event).is_err() || !more {
            return;
        }
    }
}

/// The stderr forwarder thread: each line of the child's stderr becomes a log line.
fn forward_stderr(stderr: impl Read, worker: usize, pid: u32) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LOG_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                log::info!(
                    "worker {worker} child {pid}: {}",
                    text.trim_end_matches(['\n', '\r'])
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse() {
        assert!(matches!(parse_ack(b"ok"), Event::Ack(None)));
        assert!(matches!(parse_ack(b"ok\r"), Event::Ack(None)));
        assert!(matches!(parse_ack(b"err disk full"), Event::Ack(Some(m)) if m == "disk full"));
        assert!(matches!(parse_ack(b"err"), Event::Ack(Some(_))));
        assert!(matches!(parse_ack(b"OK"), Event::Garbage(_)));
        assert!(matches!(parse_ack(b"okay"), Event::Garbage(_)));
        assert!(matches!(parse_ack(b"error x"), Event::Garbage(_)));
        let long = vec![b'x'; 500];
        assert!(
            matches!(parse_ack(&long), Event::Garbage(p) if p.chars().count() == GARBAGE_PREVIEW + 1)
        );
    }

    #[test]
    fn reader_stops_at_garbage_and_reports_eof() {
        let (tx, rx) = unbounded();
        read_acks(&b"ok\nerr no\nok"[..], &tx);
        let got: Vec<_> = rx.try_iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(got, ["Ack(None)", "Ack(Some(\"no\"))", "Ack(None)", "Eof"]);
        let (tx, rx) = unbounded();
        read_acks(&b"ok\nhello\nok\n"[..], &tx);
        let got: Vec<_> = rx.try_iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(got, ["Ack(None)", "Garbage(\"hello\")"]);
    }
}
