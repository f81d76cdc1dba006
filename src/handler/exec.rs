//! The `exec` handler: one long-lived child process per worker, fed items on its stdin
//! and answering for them, by number, on its stdout.
//!
//! `rsmld --handler exec -- COMMAND [ARGS...]` runs `COMMAND` (no shell: the argv exactly
//! as given) once per worker, so a handler can be written in any language and still get
//! rsmld's protocol handling, partitioning and checkpointing for free.
//!
//! # The protocol, from the child's side
//!
//! - **stdin**: one item per line, as the item JSON of [`crate::pipeline::item`]
//!   (`{"shardId":…,"sequenceNumber":…,"partitionKey":…,"data":"<base64>",…}`), ASCII,
//!   `\n`-terminated. Items with the same partition key always reach the same child, in
//!   order. Each line is a *unit*, numbered by its 1-based position in this child's
//!   stdin: the first line a child reads is unit 1, the next unit 2, and so on for the
//!   child's whole life (a restarted child starts again at 1).
//! - **Batch framing** ([`ExecFraming::Batch`], `--exec-framing batch`): each line is one
//!   whole handler batch instead, `{"batch":N,"items":[<item JSON>,...]}`, `N` its unit
//!   number; the child answers it with one `ok N` / `err N <message>`, and before that may
//!   name items that failed with `err N.I <message>` (`I` 1-based in the batch). An item
//!   error only ever fails its item; `ok N` makes every other item done; `err N` fails
//!   them all. A child holds one batch at a time (one line per `process` call), so the
//!   item timeout and the stall warning bound a whole batch: only `ok N` / `err N` restart
//!   their clock. The rules below carry over: an `err N.I` naming a batch the child does
//!   not hold, an item the batch does not have, or an item twice is a wrong answer.
//! - **stdout**: exactly one answer line per unit, naming it: `ok N` when unit `N` is
//!   done (durably, as far as the child promises — a checkpoint may cover it as soon as
//!   rsmld reads the answer), or `err N <message>` when it failed. Answers may come in any
//!   order (a child that works on several units at once answers each when it is done),
//!   but only for units the child has read and not yet answered. Flush after every answer
//!   (shell `echo` writes at once; Python's `print` does too, because rsmld sets
//!   `PYTHONUNBUFFERED=1` unless its own environment has `PYTHONUNBUFFERED`, whatever its
//!   value: a naive child must not keep its answers in a buffer while rsmld waits for
//!   them). A line counts only once its `\n` arrives.
//! - **A wrong answer breaks the child.** A number answered twice, one not yet written
//!   (or 0), a line without a number, or anything else on stdout (a debug `print`, a
//!   banner, a last line without its `\n`) is a protocol violation: every unit the child
//!   held and had not validly answered fails (then `--on-error` decides), the child is
//!   killed and restarted, and nothing it wrote after the violation counts. Answers read
//!   before it still count. Log to **stderr**: rsmld forwards it line by line to its own
//!   log (`worker <k> child <pid>: <line>`).
//! - **Environment**: rsmld's own, plus `RSMLD_SHARD_ID` (the lease's shard, when the pool
//!   serves one lease, as in child mode; unset on a pool shared by several leases, whose
//!   items each name their shard), `RSMLD_WORKER` (this child's worker index), `RSMLD_WORKERS` (how many there are), `RSMLD_EXEC_CHILD` (an id
//!   of this child, by which rsmld finds its descendants when it ends it) and
//!   `PYTHONUNBUFFERED=1` (above). Every signal
//!   rsmld ignores itself ([`crate::sys::IGNORED_SIGNALS`]: SIGINT, SIGTERM, SIGHUP,
//!   SIGPIPE, SIGXFSZ) has its default disposition in the child: it does not inherit that. The child's parent-death signal is SIGKILL: if rsmld dies, even by
//!   SIGKILL, the child dies with it. Under the binary the child's parent is an exec
//!   guard ([`crate::process::guard`]) that kills the child's descendants too when rsmld dies.
//! - **End**: stdin EOF means "exit now". A child still running [`CLOSE_EOF_GRACE`] later
//!   gets SIGTERM (its whole process group), and [`CLOSE_TERM_GRACE`] after that SIGKILL:
//!   closing takes at most [`CLOSE_BOUND`] (2 s), because the daemon waits for rsmld
//!   without a timeout once it has closed rsmld's stdin, and a shard's successor waits
//!   for that.
//! - **Stalls**: a child that holds units and answers none of them for `stall_warning`
//!   (5 s by default) is named in one warning (its pid and how many units it holds); one
//!   that stays silent for `answer_timeout` (`--item-timeout`, 20 s by default for exec;
//!   0 turns it off) is killed and its unanswered units fail.
//!
//! A complete handler in shell (appends every item to a file per shard and worker):
//!
//! ```sh
//! #!/bin/sh
//! # rsmld exec handler: append each item to $1/<shard>.<worker>.jsonl, then answer for it.
//! n=0
//! while IFS= read -r item; do
//!   n=$((n+1))
//!   printf '%s\n' "$item" >> "$1/$RSMLD_SHARD_ID.$RSMLD_WORKER.jsonl" && echo "ok $n" || echo "err $n cannot write $1"
//! done
//! ```
//!
//! and in Python:
//!
//! ```python
//! import json, sys
//! for n, line in enumerate(sys.stdin, start=1):
//!     item = json.loads(line)                  # base64 payload in item["data"]
//!     print(f"ok {n}")                         # or: print(f"err {n} why")
//! ```
//!
//! # Why this shape
//!
//! - **Long-lived, one per worker**: process start-up (an interpreter, a connection)
//!   is paid once, and a per-worker child needs no locking; per-key order is kept because
//!   a worker's items are written in order.
//! - **Answers name their unit.** With positional answers and pipelining, a child that
//!   answered twice, or answered out of order and then crashed, had its surplus answers
//!   counted for units still in the pipe that it never handled — and a checkpoint covered
//!   them. A number makes every answer unambiguous and every surplus detectable. Numbers
//!   count lines, which even a shell loop does for free; they never depend on the item.
//! - **Out of order is allowed, checkpoints still follow the prefix.** Any unanswered
//!   unit the child holds may be answered at any time, so a child with its own
//!   parallelism need not hold back finished work; the checkpoint tracker only ever
//!   covers the longest prefix of finished items, so a unit answered early is never
//!   checkpointed before the ones before it are done.
//! - **Pipelined**: within a batch rsmld keeps up to `max_pipelined` units written but
//!   not yet answered, so a child that batches its own work (or a slow pipe) is never fed
//!   one item per round trip. Answers are read by a separate thread into a queue, and the
//!   child's stdin is non-blocking, so a child that writes answers before reading more
//!   input can never deadlock with rsmld, and a child that stops reading cannot block
//!   the worker (stalls are noticed, interrupts and shutdown act within 50 ms).
//! - **Failure is per item**: `err` fails that item only (the failure policy decides what
//!   happens next). A child that exits, closes its stdout, breaks the protocol, stalls or
//!   is killed by the watchdog fails every item of the batch it had not answered (an
//!   answer already read still counts), is killed and reaped, and is restarted for the
//!   next batch after a backoff (`restart_backoff`, doubling up to `restart_backoff_max`,
//!   reset by a healthy batch).
//! - **Nothing left behind**: each child leads its own process group, and ending it
//!   (watchdog, failure, close, drop) kills the group, so a `sleep` or other grandchild
//!   of a shell handler dies with it. The group is signalled only while the child is not
//!   yet reaped, so its id cannot have been reused. Descendants that leave the group
//!   (`setsid`) are found by the `RSMLD_EXEC_CHILD` tag they inherit and killed with
//!   the child; the binary's subreaper keeps them our descendants even after the child
//!   died, and its final sweep kills whatever is left ([`crate::process::reaper`]). Under the
//!   binary each child runs below an exec guard ([`crate::process::guard`]), which leads the
//!   process group (so the group id rsmld signals is the guard's pid, reaped by rsmld)
//!   and kills every descendant when rsmld dies, even by SIGKILL; logs and errors still
//!   name the command's own pid and status.
//!   The parent-death signal is tied to the thread that spawned the child: children are
//!   spawned by the pool's start-up thread and by the worker threads, which all live as
//!   long as the pool.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::{
    BatchError, Handler, HandlerError, HandlerFactory, Interrupt, Interrupter, WorkerContext,
};
use crate::pipeline::item::Item;
use crate::telemetry::{self, LeaseId};

/// How long closing waits for a child to exit after closing its stdin, before SIGTERM.
pub const CLOSE_EOF_GRACE: Duration = Duration::from_secs(1);
/// How long closing waits after SIGTERM to the child's process group, before SIGKILL.
pub const CLOSE_TERM_GRACE: Duration = Duration::from_secs(1);
/// The longest closing a child takes (then it and its process group are SIGKILLed and
/// reaped).
pub const CLOSE_BOUND: Duration = Duration::from_secs(2);
/// Default of [`ExecOptions::stall_warning`].
pub const DEFAULT_STALL_WARNING: Duration = Duration::from_secs(5);
/// Default of [`ExecOptions::answer_timeout`] (`--item-timeout` for exec): under the
/// daemon's 30 s graceful lease hand-off, so a stalled child is dealt with (killed, its
/// items failed, then `--on-error`) before the lease moves anyway; far above the time a
/// healthy child needs between two answers.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a failing child is given to exit by itself (so its real status is reported)
/// and to deliver the answers it wrote before failing.
const FAIL_GRACE: Duration = Duration::from_secs(1);
/// How often a waiting `process` checks the child, the stall clock and interrupts.
const POLL: Duration = Duration::from_millis(50);
/// Most bytes of item JSON serialized ahead of what the pipe took.
const WRITE_AHEAD: usize = 64 * 1024;
/// The pipe buffer asked for on a child's stdin (Linux allows up to 1 MiB unprivileged):
/// a whole batch line of a few hundred items goes in without rsmld waiting for the child
/// to drain the pipe (the default 64 KiB made both wake each other per 64 KiB).
const PIPE_BUFFER: usize = 1 << 20;
/// Set to `1` in the children's environment unless rsmld's own environment has it.
const PYTHON_UNBUFFERED: &str = "PYTHONUNBUFFERED";
/// Longest answer line read; a longer one is garbage.
const MAX_ACK_LINE: usize = 64 * 1024;
/// Longest stderr line forwarded as one log line; longer ones are split.
const MAX_LOG_LINE: usize = 16 * 1024;
/// How much of a garbage line an error message quotes.
const GARBAGE_PREVIEW: usize = 80;

/// How items are framed on a child's stdin (`--exec-framing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecFraming {
    /// One item JSON per line; one answer (`ok N` / `err N …`) per item.
    #[default]
    Item,
    /// One line per handler batch, `{"batch":N,"items":[…]}`; one answer per batch, with
    /// `err N.I …` lines before it for items that failed.
    Batch,
}

/// Settings of the exec handler.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// The command and its arguments (no shell).
    pub command: Vec<String>,
    /// One line per item or per batch.
    pub framing: ExecFraming,
    /// Most units written to the child before their answers are read.
    pub max_pipelined: usize,
    /// First restart delay after the child failed; doubles up to `restart_backoff_max`.
    pub restart_backoff: Duration,
    /// Largest restart delay.
    pub restart_backoff_max: Duration,
    /// A child that holds units and has answered none for this long is named in a
    /// warning, once per stall.
    pub stall_warning: Duration,
    /// A child that holds units and has answered none for this long is killed and its
    /// unanswered units fail (`None`: wait forever).
    pub answer_timeout: Option<Duration>,
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
            restart_reason: None,
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
    /// The child failed before answering for every item of a batch.
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
    /// It held units and answered none for this long; rsmld killed it.
    #[error("answered nothing for {timeout:?} while holding {held} unit(s) (item timeout); killed after timeout")]
    NoAnswer {
        /// The item timeout.
        timeout: Duration,
        /// Units written and not answered.
        held: usize,
    },
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
    /// It wrote a line that is not `ok N` / `err N …` (the first bytes, quoted).
    #[error("wrote a line that is not an answer (`ok N` or `err N message`): {0:?}")]
    Garbage(String),
    /// It answered with a number naming no unit it held: answered before, not yet written.
    #[error("wrote a wrong answer: {0}")]
    WrongUnit(String),
}

/// One line (or the end) of a child's stdout, as the reader thread saw it.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// `ok N` (`error: None`) or `err N <message>`.
    Ack {
        /// The unit answered for (1-based line number of the child's stdin).
        unit: u64,
        /// The message of an `err`.
        error: Option<String>,
    },
    /// Batch framing only: `err N.I <message>`, item `I` (1-based) of batch `N` failed.
    ItemErr {
        /// The batch (its unit number).
        unit: u64,
        /// 1-based position of the item in the batch.
        index: u64,
        /// Why.
        message: String,
    },
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
    /// The current child's process group id (the pid rsmld reaps: its guard's, or its
    /// own without a guard) while it is not yet reaped.
    pid: Option<u32>,
    /// A `process` call is running.
    busy: bool,
    /// The watchdog fired during the current `process` call.
    interrupted: bool,
    /// rsmld is shutting down: end the running call, fail every later one.
    stopping: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding this lock cannot leave the plain fields inconsistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `signal` to the process group `pgid`.
fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects. The caller guarantees that `pgid` is the
    // process group of a child of ours that has not been reaped, so the id is not reused.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// Kills the child whose process group is `pgid` (see [`signal_group`]): through its
/// exec guard, which SIGKILLs the command and every descendant and then exits (so none
/// is left re-parented to rsmld), or, without a guard, by SIGKILL to the group. `end`
/// always follows with SIGKILL to the group.
fn kill_group(pgid: u32) {
    if !crate::process::guard::request_sweep(pgid) {
        signal_group(pgid, libc::SIGKILL);
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

/// Asks for a pipe buffer of [`PIPE_BUFFER`] bytes on `fd`, as far as the system allows
/// (a hint: the default stays if it refuses).
#[cfg(target_os = "linux")]
fn enlarge_pipe(fd: libc::c_int) {
    // SAFETY: fcntl on a descriptor we own, with an integer argument; the result is only
    // a hint.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BUFFER as libc::c_int);
    }
}

/// Elsewhere the pipe keeps its size.
#[cfg(not(target_os = "linux"))]
fn enlarge_pipe(_fd: libc::c_int) {}

/// Makes `fd` non-blocking.
fn set_nonblocking(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` until `fd` can be written to (or has an error to report);
/// false if the time ran out.
fn wait_writable(fd: libc::c_int, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd; the result is only a hint (the write that
    // follows reports the real state).
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) != 0 }
}

/// A running child and its pipes.
struct Running {
    /// The process rsmld spawned and reaps, and whose process group it signals: the exec
    /// guard, or the command itself without a guard.
    child: Child,
    /// The command's pid (what logs name).
    pid: u32,
    /// `child`'s pid, which is also the process group id.
    leader: u32,
    /// Non-blocking; `None` once closed.
    stdin: Option<ChildStdin>,
    acks: Receiver<Event>,
    /// Units written to this child so far (all answered between batches).
    units: u64,
    /// The value of its `RSMLD_EXEC_CHILD`.
    tag: String,
}

impl Running {
    /// Closes stdin (nothing is buffered on our side between batches).
    fn close_stdin(&mut self) {
        self.stdin.take();
    }
}

/// How a child ended when we made sure it was gone.
struct Ended {
    /// Its status, if reaping worked.
    status: Option<ExitStatus>,
    /// It exited before we signalled it.
    by_itself: bool,
    /// It exited after SIGTERM (before SIGKILL).
    after_term: bool,
}

/// How to end a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Close stdin, wait this long, SIGKILL the group.
    Kill(Duration),
    /// Close stdin, wait [`CLOSE_EOF_GRACE`], SIGTERM the group, wait
    /// [`CLOSE_TERM_GRACE`], SIGKILL the group.
    Graceful,
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
    /// Why the last child ended (for the telemetry of its restart).
    restart_reason: Option<String>,
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

/// Where a handler batch got to. Item framing: item `i` of the batch is unit
/// `base + i + 1`; batch framing: the whole batch is unit `base + 1`.
struct Progress {
    /// Units of the child before this batch.
    base: u64,
    /// The framing (how units map to items).
    framing: ExecFraming,
    /// Items in the batch.
    items: usize,
    /// Units of the batch completely written to the child.
    sent: usize,
    /// Per unit: validly answered (`ok` or `err`).
    answered: Vec<bool>,
    /// How many units are answered.
    acked: usize,
    /// Items that failed (`err` answers, and `err N.I` lines in batch framing), and why.
    rejected: Vec<(usize, HandlerError)>,
    /// Per item: in `rejected`.
    is_rejected: Vec<bool>,
}

impl Progress {
    fn new(base: u64, items: usize, framing: ExecFraming) -> Progress {
        let units = match framing {
            ExecFraming::Item => items,
            ExecFraming::Batch => usize::from(items > 0),
        };
        Progress {
            base,
            framing,
            items,
            sent: 0,
            answered: vec![false; units],
            acked: 0,
            rejected: Vec::new(),
            is_rejected: vec![false; items],
        }
    }

    /// Units in the batch.
    fn units(&self) -> usize {
        self.answered.len()
    }

    /// Units written and not answered.
    fn held(&self) -> usize {
        self.sent - self.acked
    }

    /// The items of unit index `u` (0-based within this batch).
    fn items_of(&self, u: usize) -> std::ops::Range<usize> {
        match self.framing {
            ExecFraming::Item => u..u + 1,
            ExecFraming::Batch => 0..self.items,
        }
    }

    /// Items of units not answered yet.
    fn unanswered_items(&self) -> usize {
        (0..self.units())
            .filter(|&u| !self.answered[u])
            .map(|u| self.items_of(u).len())
            .sum()
    }

    /// Records item `i` as failed, unless it already is (the first reason stays).
    fn reject(&mut self, i: usize, message: String) {
        if !self.is_rejected[i] {
            self.is_rejected[i] = true;
            self.rejected.push((i, HandlerError::new(message)));
        }
    }

    /// The index within this batch of `unit`, if the child holds it (written, not
    /// answered); else why not.
    fn held_index(&self, unit: u64) -> Result<usize, String> {
        let last = self.base + self.sent as u64;
        if unit <= self.base {
            return Err(format!(
                "unit {unit} was answered before (this batch started at unit {})",
                self.base + 1
            ));
        }
        if unit > last {
            return Err(format!(
                "unit {unit} was not written yet (units up to {last} were)"
            ));
        }
        let u = (unit - self.base - 1) as usize;
        if self.answered[u] {
            return Err(format!("unit {unit} was answered twice"));
        }
        Ok(u)
    }

    /// Applies one stdout event; an error is a child failure.
    fn apply(&mut self, event: Event) -> Result<(), Fault> {
        let (unit, error) = match event {
            Event::Ack { unit, error } => (unit, error),
            Event::ItemErr {
                unit,
                index,
                message,
            } => return self.apply_item_error(unit, index, message),
            Event::Garbage(line) => return Err(Fault::Garbage(line)),
            Event::Eof => return Err(Fault::Eof),
            Event::ReadError(e) => return Err(Fault::Read(e)),
        };
        let verb = if error.is_some() { "err" } else { "ok" };
        let u = self
            .held_index(unit)
            .map_err(|why| Fault::WrongUnit(format!("`{verb} {unit}`: {why}")))?;
        self.answered[u] = true;
        self.acked += 1;
        if let Some(message) = error {
            let what = match self.framing {
                ExecFraming::Item => "item",
                ExecFraming::Batch => "batch",
            };
            for i in self.items_of(u) {
                self.reject(
                    i,
                    format!("exec handler child rejected the {what}: {message}"),
                );
            }
        }
        Ok(())
    }

    /// `err N.I <message>`: item `I` of the held batch `N` failed; the batch still needs
    /// its `ok N` / `err N` (item errors never make anything done).
    fn apply_item_error(&mut self, unit: u64, index: u64, message: String) -> Result<(), Fault> {
        let wrong = |why: String| Err(Fault::WrongUnit(format!("`err {unit}.{index}`: {why}")));
        let u = match self.held_index(unit) {
            Ok(u) => u,
            Err(why) => return wrong(why),
        };
        let items = self.items_of(u);
        if index as usize > items.len() {
            return wrong(format!(
                "batch {unit} has {} item(s), not {index}",
                items.len()
            ));
        }
        let i = items.start + index as usize - 1;
        if self.is_rejected[i] {
            return wrong(format!("item {index} of batch {unit} was answered twice"));
        }
        self.reject(
            i,
            format!(
                "exec handler child rejected the item (item {index} of batch {unit}): {message}"
            ),
        );
        Ok(())
    }

    /// Every failed item: rejected ones and every other one of a unit not answered, with
    /// `message`.
    fn failed(self, message: &HandlerError) -> Vec<(usize, HandlerError)> {
        let unanswered: Vec<usize> = (0..self.units())
            .filter(|&u| !self.answered[u])
            .flat_map(|u| self.items_of(u))
            .filter(|&i| !self.is_rejected[i])
            .collect();
        let mut failed = self.rejected;
        failed.extend(unanswered.into_iter().map(|i| (i, message.clone())));
        failed.sort_by_key(|(i, _)| *i);
        failed
    }
}

/// What `process` observed going wrong (before the child was made to end).
#[derive(Debug)]
enum Fault {
    Interrupted,
    Stopped,
    NoAnswer(Duration),
    Eof,
    Exited,
    Write(String),
    Read(String),
    Garbage(String),
    WrongUnit(String),
}

/// Item JSON serialized for the child, ahead of what its pipe took.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// End offset in `buf` of each item serialized and not yet completely written.
    ends: VecDeque<usize>,
    /// Items of the batch serialized so far.
    queued: usize,
    /// Batch framing: the batch's unit number (all items go on one line).
    batch: Option<u64>,
}

impl Outbox {
    fn pending(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Serializes more items, up to the window and [`WRITE_AHEAD`] bytes. In batch
    /// framing the line of the batch is serialized in the same steps, and it is one unit,
    /// complete with its `]}\n`.
    fn fill(&mut self, items: &[Item], lease: &LeaseId, limit: usize) -> io::Result<()> {
        while self.queued < limit && self.buf.len() - self.pos < WRITE_AHEAD {
            if let Some(n) = self.batch {
                if self.queued == 0 {
                    write!(self.buf, "{{\"batch\":{n},\"items\":[")?;
                } else {
                    self.buf.push(b',');
                }
            }
            items[self.queued].write_json_in(&lease.application, &lease.shard, &mut self.buf)?;
            self.queued += 1;
            match self.batch {
                None => self.buf.push(b'\n'),
                Some(_) if self.queued == items.len() => self.buf.extend_from_slice(b"]}\n"),
                Some(_) => continue,
            }
            self.ends.push_back(self.buf.len());
        }
        Ok(())
    }

    /// Writes what the pipe takes; returns how many items were completed, or `None` if
    /// the pipe is full.
    fn write(&mut self, stdin: &mut ChildStdin) -> io::Result<Option<usize>> {
        let k = match stdin.write(&self.buf[self.pos..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Some(0)),
            Err(e) => return Err(e),
        };
        self.pos += k;
        let mut done = 0;
        while self.ends.front().is_some_and(|&end| end <= self.pos) {
            self.ends.pop_front();
            done += 1;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some(done))
    }
}

/// The stall clock of one batch: when the child last answered, and whether the current
/// silence was reported.
struct Stall {
    since: Instant,
    warned: bool,
}

impl ExecHandler {
    fn command_name(&self) -> &str {
        self.options.command.first().map_or("", String::as_str)
    }

    /// Starts a child with its answer reader and stderr forwarder threads.
    fn spawn(&self) -> Result<Running, ExecError> {
        let spawn_error = |message: String| ExecError::Spawn {
            command: self.command_name().to_owned(),
            message,
        };
        let Some((program, args)) = self.options.command.split_first() else {
            return Err(spawn_error("no command given".into()));
        };
        let tag = crate::process::tag::next();
        // Under the binary, the command runs under an exec guard (crate::process::guard), which
        // gets everything set up here and passes it on: the environment, the pipes, the
        // signal dispositions; the guard leads the process group.
        let (mut cmd, launch) = match crate::process::guard::Launch::command(program, args) {
            Ok(Some((cmd, launch))) => (cmd, Some(launch)),
            Ok(None) => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                (cmd, None)
            }
            Err(e) => return Err(spawn_error(format!("cannot start its exec guard: {e}"))),
        };
        cmd.env(crate::process::tag::CHILD_TAG, &tag)
            .env("RSMLD_WORKER", self.ctx.worker.to_string())
            .env("RSMLD_WORKERS", self.ctx.workers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // A child serves every lease of its worker: only a pool that serves one lease
        // (child mode) can name its shard.
        if let Some(lease) = &self.ctx.sole_lease {
            cmd.env("RSMLD_SHARD_ID", &*lease.shard);
        }
        // A Python child's print() to a pipe is block-buffered: its answers would sit in
        // its buffer while rsmld waits for them. Set means set, to any value (even empty).
        if std::env::var_os(PYTHON_UNBUFFERED).is_none() {
            cmd.env(PYTHON_UNBUFFERED, "1");
        }
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and only calls
        // signal(2), prctl(2) and getppid(2), which are async-signal-safe; it allocates
        // nothing (the error is a raw OS error) and takes no lock.
        // rsmld ignores these signals, and ignored dispositions survive exec: the child
        // gets the defaults back. The parent-death signal survives exec too.
        unsafe {
            cmd.pre_exec(move || {
                for sig in crate::sys::IGNORED_SIGNALS {
                    if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                        return Err(io::Error::last_os_error());
                    }
                }
                #[cfg(target_os = "linux")]
                {
                    let sig = libc::SIGKILL as libc::c_ulong;
                    if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // rsmld may have died between fork and prctl: then no signal comes.
                    if libc::getppid() != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                }
                Ok(())
            });
        }
        let mut child = crate::process::reaper::spawn_managed(&mut cmd)
            .map_err(|e| spawn_error(e.to_string()))?;
        let leader = child.id();
        let pid = match launch.map(|l| l.started()) {
            None => leader,
            Some(Ok(pid)) => {
                crate::process::guard::register(leader);
                pid
            }
            Some(Err(e)) => {
                // The guard exits by itself after reporting a failed start; kill the
                // group in case it did not report at all (it is not reaped yet).
                kill_group(leader);
                let _ = child.wait();
                crate::process::reaper::release(leader);
                return Err(spawn_error(e.to_string()));
            }
        };
        lock(&self.shared).pid = Some(leader);
        let (tx, acks) = unbounded();
        let mut running = Running {
            pid,
            leader,
            stdin: child.stdin.take(),
            acks,
            child,
            units: 0,
            tag,
        };
        let worker = self.ctx.worker;
        let framing = self.options.framing;
        let pipes = (running.child.stdout.take(), running.child.stderr.take());
        let started = match pipes {
            (Some(stdout), Some(stderr)) => std::thread::Builder::new()
                .name(format!("rsmld-exec-{worker}-acks"))
                .spawn(move || read_acks(stdout, framing, &tx))
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
        let stdin_ready = match &running.stdin {
            Some(stdin) => set_nonblocking(stdin.as_raw_fd())
                .inspect(|()| enlarge_pipe(stdin.as_raw_fd()))
                .map_err(|e| format!("cannot make its stdin non-blocking: {e}")),
            None => Err("its stdin pipe is missing".to_owned()),
        };
        if let Err(message) = started.and(stdin_ready) {
            self.end(&mut running, Ending::Kill(Duration::ZERO));
            return Err(spawn_error(message));
        }
        log::info!(
            "worker {worker}: started exec handler {:?} (pid {pid})",
            self.options.command
        );
        Ok(running)
    }

    /// Waits up to `grace` for the child to exit; true if it did.
    fn wait_exit(pid: u32, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            if has_exited(pid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes the child's stdin, gives it time to exit (see [`Ending`]), then kills its
    /// process group and reaps it.
    fn end(&self, running: &mut Running, ending: Ending) -> Ended {
        running.close_stdin();
        let (by_itself, after_term) = match ending {
            Ending::Kill(grace) => (Self::wait_exit(running.leader, grace), false),
            Ending::Graceful => {
                if Self::wait_exit(running.leader, CLOSE_EOF_GRACE) {
                    (true, false)
                } else {
                    // Not reaped yet, so the group id is still ours.
                    signal_group(running.leader, libc::SIGTERM);
                    (false, Self::wait_exit(running.leader, CLOSE_TERM_GRACE))
                }
            }
        };
        {
            let mut s = lock(&self.shared);
            if s.pid == Some(running.leader) {
                s.pid = None;
            }
        }
        // Not reaped yet, so the group id is still ours. The guard, if any, kills every
        // descendant of the command (also those that left the group and the tag behind);
        // the group's SIGKILL after it is the fallback, and without a guard the kill.
        if !has_exited(running.leader) && crate::process::guard::request_sweep(running.leader) {
            Self::wait_exit(running.leader, crate::process::guard::SWEEP_GRACE);
        }
        signal_group(running.leader, libc::SIGKILL);
        // And those that left the group.
        crate::process::reaper::kill_tagged(crate::process::tag::CHILD_TAG, &running.tag);
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
        crate::process::reaper::release(running.leader);
        crate::process::guard::forget(running.leader);
        crate::process::reaper::reap_orphans();
        Ended {
            status,
            by_itself,
            after_term,
        }
    }

    /// After a failure: the next spawn waits `backoff`, which doubles.
    fn note_failure(&mut self, reason: String) {
        self.restart_reason = Some(reason);
        self.restart_delay = Some(self.backoff);
        self.backoff = (self.backoff * 2).min(
            self.options
                .restart_backoff_max
                .max(self.options.restart_backoff),
        );
    }

    /// Sleeps `delay` unless shutdown starts meanwhile; false if it did.
    fn sleep_unless_stopping(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            if lock(&self.shared).stopping {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Before a batch: restarts a child that died or spoke while idle, and starts one if
    /// there is none (after the backoff of the last failure).
    fn ensure_child(&mut self) -> Result<(), BatchError> {
        crate::process::reaper::reap_orphans_now_and_then();
        if let Some(running) = self.child.as_mut() {
            let stray = match running.acks.try_recv() {
                Ok(Event::Ack { unit, .. } | Event::ItemErr { unit, .. }) => {
                    Some(format!("answered for unit {unit}, which it did not hold"))
                }
                Ok(Event::Garbage(line)) => Some(format!("wrote {line:?}")),
                Ok(Event::ReadError(e)) => Some(format!("could not be read from: {e}")),
                Ok(Event::Eof) | Err(TryRecvError::Disconnected) => {
                    Some("closed its stdout".to_owned())
                }
                Err(TryRecvError::Empty) => None,
            };
            let exited = has_exited(running.leader);
            if stray.is_some() || exited {
                let mut reason = "failed between batches".to_owned();
                if let Some(mut running) = self.child.take() {
                    let ended = self.end(&mut running, Ending::Kill(Duration::ZERO));
                    reason = format!(
                        "child {} failed between batches ({}{})",
                        running.pid,
                        stray.map_or_else(String::new, |s| format!("{s}; ")),
                        ended
                            .status
                            .map_or_else(|| "status unknown".to_owned(), |s| s.to_string()),
                    );
                    log::warn!(
                        "worker {}: exec handler {reason}; restarting it",
                        self.ctx.worker,
                    );
                }
                self.note_failure(reason);
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
            if !self.sleep_unless_stopping(delay) {
                self.restart_delay = Some(delay);
                return Err(BatchError::Batch(HandlerError::new(
                    "rsmld is shutting down; exec handler child not restarted",
                )));
            }
        }
        match self.spawn() {
            Ok(running) => {
                self.child = Some(running);
                if let Some(reason) = self.restart_reason.take() {
                    let worker = self.ctx.worker;
                    let event = telemetry::Event::ChildRestarted { worker, reason };
                    self.ctx.telemetry.emit(None, &event);
                }
                Ok(())
            }
            Err(e) => {
                self.note_failure(e.to_string());
                Err(BatchError::Batch(HandlerError::new(e.to_string())))
            }
        }
    }

    /// Restarts the stall clock if the child answered (and says so if it was reported).
    fn note_answers(&self, pid: u32, stall: &mut Stall, answered: bool) {
        if !answered {
            return;
        }
        if stall.warned {
            log::info!(
                "worker {}: exec handler child {pid} answered again after {:.1} s",
                self.ctx.worker,
                stall.since.elapsed().as_secs_f64()
            );
        }
        *stall = Stall {
            since: Instant::now(),
            warned: false,
        };
    }

    /// Checks the stall clock (`unwritten`: units of the batch not yet written): warns
    /// once per stall, and returns the timeout once it is exceeded.
    fn check_stall(
        &self,
        pid: u32,
        p: &Progress,
        unwritten: usize,
        stall: &mut Stall,
    ) -> Option<Duration> {
        let quiet = stall.since.elapsed();
        if !stall.warned && quiet >= self.options.stall_warning {
            stall.warned = true;
            let first = (0..p.sent)
                .find(|&i| !p.answered[i])
                .map(|i| p.base + i as u64 + 1);
            let first = match p.framing {
                ExecFraming::Item => {
                    first.map_or_else(String::new, |u| format!(" (first unanswered: unit {u})"))
                }
                ExecFraming::Batch => first.map_or_else(String::new, |u| {
                    format!(" (batch {u}, {} item(s))", p.items)
                }),
            };
            log::warn!(
                "worker {}: exec handler child {pid} has answered nothing for {:.1} s; it holds {} unit(s){}{}; {}",
                self.ctx.worker,
                quiet.as_secs_f64(),
                p.held(),
                first,
                if unwritten > 0 {
                    format!(" and {unwritten} more wait to be written")
                } else {
                    String::new()
                },
                match self.options.answer_timeout {
                    Some(t) => format!("it is killed at {:.1} s without an answer (--item-timeout)", t.as_secs_f64()),
                    None => "no item timeout is set: waiting".to_owned(),
                }
            );
        }
        self.options.answer_timeout.filter(|t| quiet >= *t)
    }

    /// Writes items and reads answers until every item is answered or the child fails.
    fn run_batch(
        &self,
        running: &mut Running,
        lease: &LeaseId,
        items: &[Item],
    ) -> (Progress, Option<Fault>) {
        let n = items.len();
        let framing = self.options.framing;
        let window = match framing {
            ExecFraming::Item => self.options.max_pipelined.max(1),
            ExecFraming::Batch => n,
        };
        let mut p = Progress::new(running.units, n, framing);
        let mut out = Outbox {
            batch: (framing == ExecFraming::Batch).then_some(running.units + 1),
            ..Outbox::default()
        };
        let mut stall = Stall {
            since: Instant::now(),
            warned: false,
        };
        let fault = 'batch: loop {
            {
                let s = lock(&self.shared);
                if s.interrupted {
                    break Some(Fault::Interrupted);
                }
                if s.stopping {
                    break Some(Fault::Stopped);
                }
            }
            // Take the answers that are already there.
            let before = p.acked;
            loop {
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
            self.note_answers(running.pid, &mut stall, p.acked > before);
            if p.acked == p.units() {
                break None;
            }
            let unwritten = p.units() - p.sent;
            if let Some(timeout) = self.check_stall(running.pid, &p, unwritten, &mut stall) {
                break Some(Fault::NoAnswer(timeout));
            }
            // Fill the window and write what the pipe takes, without ever blocking.
            // Units in flight (serialized, not answered) stay within the window.
            if let Err(e) = out.fill(items, lease, n.min(p.acked + window)) {
                break Some(Fault::Write(format!("cannot serialize an item: {e}")));
            }
            let mut blocked = false;
            if out.pending() {
                let Some(stdin) = running.stdin.as_mut() else {
                    break Some(Fault::Write("stdin already closed".into()));
                };
                match out.write(stdin) {
                    Ok(Some(done)) => {
                        p.sent += done;
                        continue;
                    }
                    Ok(None) => blocked = true,
                    Err(e) => break Some(Fault::Write(e.to_string())),
                }
            }
            if blocked {
                let ready = running
                    .stdin
                    .as_ref()
                    .is_some_and(|stdin| wait_writable(stdin.as_raw_fd(), POLL));
                if !ready && has_exited(running.leader) {
                    break Some(Fault::Exited);
                }
                continue;
            }
            match running.acks.recv_timeout(POLL) {
                Ok(event) => {
                    let before = p.acked;
                    if let Err(fault) = p.apply(event) {
                        break Some(fault);
                    }
                    self.note_answers(running.pid, &mut stall, p.acked > before);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if has_exited(running.leader) {
                        break Some(Fault::Exited);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break Some(Fault::Eof),
            }
        };
        running.units = p.base + p.sent as u64;
        if let Some(Fault::NoAnswer(_)) = fault {
            // Not reaped yet: the group id is still ours.
            kill_group(running.leader);
        }
        if let Some(Fault::Interrupted | Fault::NoAnswer(_) | Fault::Exited | Fault::Write(_)) =
            fault
        {
            // Answers written before the failure are still good: collect them until the
            // stdout ends (promptly, once the child is dead), within the grace period. A
            // wrong one (or a last line without its newline) ends the collection.
            let deadline = Instant::now() + FAIL_GRACE;
            while p.acked < p.sent {
                match running.acks.recv_deadline(deadline) {
                    Ok(event @ (Event::Ack { .. } | Event::ItemErr { .. })) => {
                        if p.apply(event).is_err() {
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
    fn process(&mut self, lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        let _busy = Busy::new(&self.shared);
        if lock(&self.shared).stopping {
            return Err(BatchError::Batch(HandlerError::new(
                "rsmld is shutting down; item not sent to the exec handler child",
            )));
        }
        self.ensure_child()?;
        let Some(mut running) = self.child.take() else {
            // Invariant: ensure_child returned Ok, so there is a child.
            return Err(BatchError::Batch(HandlerError::new(
                "exec handler has no child after starting one",
            )));
        };
        let (progress, fault) = self.run_batch(&mut running, lease, items);
        let fault = match fault {
            None => {
                self.child = Some(running);
                self.backoff = self.options.restart_backoff;
                let failed = progress.failed(&HandlerError::new("unreachable: all answered"));
                return if failed.is_empty() {
                    Ok(())
                } else {
                    Err(BatchError::Items(failed))
                };
            }
            Some(Fault::Stopped) => {
                // Shutdown: the items are abandoned; `close` ends the child within its bound.
                self.child = Some(running);
                let message = HandlerError::new(
                    "rsmld is shutting down; item not answered by the exec handler child",
                );
                return Err(BatchError::Items(progress.failed(&message)));
            }
            Some(fault) => fault,
        };
        let interrupted = lock(&self.shared).interrupted;
        let grace = match fault {
            Fault::Eof | Fault::Exited | Fault::Write(_) if !interrupted => FAIL_GRACE,
            _ => Duration::ZERO,
        };
        let ended = self.end(&mut running, Ending::Kill(grace));
        let status = || {
            ended
                .status
                .map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
        };
        let held = progress.held();
        let failure = match fault {
            _ if interrupted => ChildFailure::KilledAfterTimeout,
            Fault::Interrupted => ChildFailure::KilledAfterTimeout,
            Fault::NoAnswer(timeout) => ChildFailure::NoAnswer { timeout, held },
            Fault::Garbage(line) => ChildFailure::Garbage(line),
            Fault::WrongUnit(why) => ChildFailure::WrongUnit(why),
            Fault::Read(e) => ChildFailure::ReadFailed(e),
            _ if ended.by_itself => ChildFailure::Exited(status()),
            Fault::Write(e) => ChildFailure::StdinFailed(e),
            Fault::Eof | Fault::Exited | Fault::Stopped => ChildFailure::ClosedStdout,
        };
        let error = ExecError::Child {
            command: self.command_name().to_owned(),
            pid: running.pid,
            failure,
        };
        log::warn!(
            "worker {}: {error}; {} of {} item(s) not answered; the next batch restarts it",
            self.ctx.worker,
            progress.unanswered_items(),
            items.len()
        );
        self.note_failure(error.to_string());
        let message = HandlerError::new(format!("{error}; item not answered"));
        let failed = progress.failed(&message);
        if failed.is_empty() {
            // Every item was answered before the child failed: the batch is done.
            return Ok(());
        }
        Err(BatchError::Items(failed))
    }

    fn close(&mut self) -> Result<(), HandlerError> {
        let Some(mut running) = self.child.take() else {
            return Ok(());
        };
        let ended = self.end(&mut running, Ending::Graceful);
        let name = self.command_name();
        let pid = running.pid;
        match ended.status {
            _ if ended.after_term => Err(HandlerError::new(format!(
                "exec handler child {name:?} (pid {pid}) did not exit within {} ms of its stdin closing; it exited on SIGTERM",
                CLOSE_EOF_GRACE.as_millis()
            ))),
            _ if !ended.by_itself => Err(HandlerError::new(format!(
                "exec handler child {name:?} (pid {pid}) did not exit within {} ms of its stdin closing nor {} ms after SIGTERM; killed",
                CLOSE_EOF_GRACE.as_millis(),
                CLOSE_TERM_GRACE.as_millis()
            ))),
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(HandlerError::new(format!(
                "exec handler child {name:?} (pid {pid}) exited with {status} at close"
            ))),
            None => Ok(()),
        }
    }

    fn interrupter(&self) -> Option<Interrupter> {
        let shared = self.shared.clone();
        Some(Arc::new(move |why| {
            let mut s = lock(&shared);
            if why == Interrupt::Shutdown {
                // Sticky: the running call ends within POLL, later calls fail at once.
                s.stopping = true;
                return;
            }
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
            self.end(&mut running, Ending::Kill(Duration::ZERO));
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

/// A unit number: decimal digits without sign or leading zero, at least 1.
fn parse_unit(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Parses one stdout line (without its newline): `ok N` or `err N [message]`, and in
/// batch framing `err N.I [message]`.
fn parse_ack(line: &[u8], framing: ExecFraming) -> Event {
    let garbage = || Event::Garbage(preview(line));
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    let (is_ok, rest) = if let Some(rest) = text.strip_prefix(b"ok ") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix(b"err ") {
        (false, rest)
    } else {
        return garbage();
    };
    let (digits, message) = match rest.iter().position(|&b| b == b' ') {
        Some(i) => (&rest[..i], rest[i + 1..].trim_ascii()),
        None => (rest, &b""[..]),
    };
    let message_or_none = || match message {
        b"" => "(no message)".to_owned(),
        m => String::from_utf8_lossy(m).into_owned(),
    };
    if let (false, ExecFraming::Batch, Some(dot)) =
        (is_ok, framing, digits.iter().position(|&b| b == b'.'))
    {
        return match (parse_unit(&digits[..dot]), parse_unit(&digits[dot + 1..])) {
            (Some(unit), Some(index)) => Event::ItemErr {
                unit,
                index,
                message: message_or_none(),
            },
            _ => garbage(),
        };
    }
    let Some(unit) = parse_unit(digits) else {
        return garbage();
    };
    match (is_ok, message.is_empty()) {
        (true, true) => Event::Ack { unit, error: None },
        (true, false) => garbage(),
        (false, _) => Event::Ack {
            unit,
            error: Some(message_or_none()),
        },
    }
}

/// The answer reader thread: one event per stdout line, then `Eof`; stops at the first
/// line that is not an answer (the child is killed after that anyway). A last line
/// without its newline is garbage: it may be the start of a longer one (`ok 1` of
/// `ok 12`), so it never counts.
fn read_acks(stdout: impl Read, framing: ExecFraming, tx: &Sender<Event>) {
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
                Some(l) => parse_ack(l, framing),
                None => Event::Garbage(preview(&line)),
            },
            Err(e) => Event::ReadError(e.to_string()),
        };
        let more = matches!(event, Event::Ack { .. } | Event::ItemErr { .. });
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

    fn ack(unit: u64, error: Option<&str>) -> Event {
        Event::Ack {
            unit,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn answers_parse() {
        assert_eq!(parse_ack(b"ok 1", ExecFraming::Item), ack(1, None));
        assert_eq!(parse_ack(b"ok 42\r", ExecFraming::Item), ack(42, None));
        assert_eq!(parse_ack(b"ok 7 ", ExecFraming::Item), ack(7, None));
        assert_eq!(
            parse_ack(b"err 3 disk full ", ExecFraming::Item),
            ack(3, Some("disk full"))
        );
        assert_eq!(
            parse_ack(b"err 3", ExecFraming::Item),
            ack(3, Some("(no message)"))
        );
        assert_eq!(
            parse_ack(b"ok 18446744073709551615", ExecFraming::Item),
            ack(u64::MAX, None)
        );
        for bad in [
            &b"ok"[..],
            b"err",
            b"ok ",
            b"ok 0",
            b"ok 01",
            b"ok -1",
            b"ok +1",
            b"ok 1x",
            b"ok  1",
            b"ok 1 done",
            b"ok 18446744073709551616",
            b"OK 1",
            b"okay 1",
            b"error 1 x",
            b"err x",
            b"1 ok",
        ] {
            assert!(
                matches!(parse_ack(bad, ExecFraming::Item), Event::Garbage(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'x'; 500];
        assert!(
            matches!(parse_ack(&long, ExecFraming::Item), Event::Garbage(p) if p.chars().count() == GARBAGE_PREVIEW + 1)
        );
    }

    #[test]
    fn reader_stops_at_garbage_and_never_counts_an_unterminated_line() {
        let (tx, rx) = unbounded();
        read_acks(&b"ok 1\nerr 2 no\nok 3"[..], ExecFraming::Item, &tx);
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            got,
            [
                ack(1, None),
                ack(2, Some("no")),
                Event::Garbage("ok 3".into())
            ]
        );
        let (tx, rx) = unbounded();
        read_acks(&b"ok 1\nhello\nok 2\n"[..], ExecFraming::Item, &tx);
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(got, [ack(1, None), Event::Garbage("hello".into())]);
        let (tx, rx) = unbounded();
        read_acks(&b"ok 1\n"[..], ExecFraming::Item, &tx);
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(got, [ack(1, None), Event::Eof]);
    }

    /// Batch framing adds `err N.I [message]`, strictly numbered; item framing has no
    /// such form.
    #[test]
    fn item_errors_parse_only_in_batch_framing() {
        let b = ExecFraming::Batch;
        let item_err = |unit, index, m: &str| Event::ItemErr {
            unit,
            index,
            message: m.to_owned(),
        };
        assert_eq!(
            parse_ack(b"err 3.2 bad data", b),
            item_err(3, 2, "bad data")
        );
        assert_eq!(parse_ack(b"err 3.2", b), item_err(3, 2, "(no message)"));
        assert_eq!(parse_ack(b"ok 3", b), ack(3, None));
        assert_eq!(parse_ack(b"err 3 all bad", b), ack(3, Some("all bad")));
        for bad in [
            &b"ok 3.2"[..],
            b"err 3.",
            b"err .2 x",
            b"err 3.0 x",
            b"err 0.1 x",
            b"err 3.02 x",
            b"err 3.2.1 x",
            b"err 3,2 x",
            b"err 3.-1 x",
        ] {
            assert!(
                matches!(parse_ack(bad, b), Event::Garbage(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_ack(b"err 3.2 x", ExecFraming::Item),
            Event::Garbage(_)
        ));
    }

    /// Batch framing: one unit covers every item; item errors fail only their item, once,
    /// and only for the held batch; `ok N` makes the rest done.
    #[test]
    fn batch_progress_counts_the_batch_as_one_unit() {
        let item_err = |unit, index| Event::ItemErr {
            unit,
            index,
            message: "no".into(),
        };
        let mut p = Progress::new(4, 3, ExecFraming::Batch);
        assert!(p.apply(item_err(5, 1)).is_err(), "not written yet");
        p.sent = 1;
        assert!(p.apply(item_err(5, 2)).is_ok());
        for (event, why) in [
            (item_err(5, 2), "item 2 of batch 5 was answered twice"),
            (item_err(5, 4), "batch 5 has 3 item(s), not 4"),
            (item_err(4, 1), "unit 4 was answered before"),
            (item_err(6, 1), "unit 6 was not written yet"),
        ] {
            match p.apply(event) {
                Err(Fault::WrongUnit(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        assert_eq!((p.held(), p.unanswered_items()), (1, 3));
        assert!(p.apply(ack(5, None)).is_ok());
        assert_eq!((p.acked, p.units(), p.unanswered_items()), (1, 1, 0));
        assert!(p.apply(ack(5, None)).is_err(), "twice");
        let failed = p.failed(&HandlerError::new("unreachable"));
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 1);
        assert!(
            failed[0].1.message.contains("item 2 of batch 5"),
            "{:?}",
            failed[0].1
        );

        // Not answered: every item fails, an item's own reason kept; `err N` fails all.
        let mut p = Progress::new(0, 3, ExecFraming::Batch);
        p.sent = 1;
        assert!(p.apply(item_err(1, 3)).is_ok());
        let failed = p.failed(&HandlerError::new("gone"));
        let got: Vec<(usize, bool)> = failed
            .iter()
            .map(|(i, e)| (*i, e.message == "gone"))
            .collect();
        assert_eq!(got, [(0, true), (1, true), (2, false)]);
        let mut p = Progress::new(0, 2, ExecFraming::Batch);
        p.sent = 1;
        assert!(p.apply(ack(1, Some("down"))).is_ok());
        let failed = p.failed(&HandlerError::new("unreachable"));
        assert_eq!(failed.len(), 2);
        assert!(failed
            .iter()
            .all(|(_, e)| e.message == "exec handler child rejected the batch: down"));
    }

    /// The unit bookkeeping: out of order within what was written is fine; twice, before
    /// this batch, or beyond what was written is a wrong answer.
    #[test]
    fn progress_accepts_only_held_units_once() {
        let mut p = Progress::new(10, 4, ExecFraming::Item);
        p.sent = 3;
        assert!(p.apply(ack(13, None)).is_ok());
        assert!(p.apply(ack(11, Some("bad"))).is_ok());
        assert_eq!((p.acked, p.held()), (2, 1));
        for (unit, why) in [
            (13, "twice"),
            (10, "answered before"),
            (14, "not written yet"),
        ] {
            match p.apply(ack(unit, None)) {
                Err(Fault::WrongUnit(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{unit}: {other:?}"),
            }
        }
        let failed = p.failed(&HandlerError::new("gone"));
        let got: Vec<(usize, &str)> = failed
            .iter()
            .map(|(i, e)| (*i, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "exec handler child rejected the item: bad"),
                (1, "gone"),
                (3, "gone")
            ]
        );
    }
}
