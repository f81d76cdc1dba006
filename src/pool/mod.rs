//! The worker pool: hash-partitioned channels, one handler per worker, completions back,
//! shared by every lease attached to it.
//!
//! One lease's records are processed by N workers at once while items with the same
//! partition key keep their order: an item goes to worker `partition(key, N)` and every
//! worker handles its own bounded FIFO channel in order. The hash is FNV-1a (64-bit) of
//! the key's UTF-8 bytes, modulo N — fixed and documented, never a per-process random
//! hasher, so the same key lands on the same worker in every run (file names and
//! downstream ordering stay predictable across restarts).
//!
//! # Many leases, one pool
//!
//! [`Pool::start`] makes the workers and their handlers with no lease; a lease
//! [`Pool::attach`]es and gets a [`PoolLease`]: its own dispatch, its own event channel
//! (completions and failures of its items only), `flush`, `abandon` and an end (drop).
//! Every block travels with its lease's state, so a worker knows whose items it holds; it
//! never puts two leases' items in one handler batch, and per-key order holds within a
//! lease (two leases' items interleave on the same workers). Abandoning a lease, or a
//! failure that ends it, concerns that lease alone: its queued blocks are dropped by
//! every worker and its late completions vanish, while the workers go on serving the
//! others. Child mode is a pool with one lease attached.
//!
//! # Fair sharing
//!
//! The policy: each worker takes every block from its channel as soon as it can into one
//! queue per lease, and serves the leases with work round robin, one handler batch (up to
//! `max_batch` items of one lease, or one due retry) per turn. With L leases holding work
//! on a worker, each gets at least one of every L batches that worker hands out, however
//! much another lease has queued; a lease's dispatch waits for channel space only while
//! the worker is inside one handler call, never behind another lease's backlog (which is
//! in that lease's queue, bounded by that lease's own in-flight budget, `--max-in-flight`).
//! With one lease this is the FIFO it always was.
//!
//! # Workers
//!
//! Each worker is a plain named thread (`rsmld-worker-<k>`), a long-lived blocking loop
//! (`pool::worker`). It collects a batch — up to `batch_size` items of one lease, waiting at
//! most `batch_interval` after the first one (0: only what is already queued) — and
//! hands it to its handler. A flush request (sent when a session drains or waits for
//! capacity) cuts the wait short. After `batch_interval` (or a second) without items, the
//! worker calls the handler's `flush` hook if it processed anything since the last one.
//!
//! Items travel in [`ItemBlock`]s (one line reference per block, no per-item allocation);
//! a worker builds each handler batch as views into the blocks it holds, across blocks
//! when they are small (and of the same lease).
//!
//! Completions go back on the lease's unbounded channel (so a worker never blocks on a
//! protocol thread; the lease's in-flight bound keeps it small), one record id per
//! finished item. A worker hands each batch to [`Handler::submit`] with an [`Ack`]: a
//! synchronous handler (the default `submit` calls `process`) resolves it at once; a
//! pipelining one resolves it later, from any thread, while the worker goes on with the
//! next batches; an ack dropped unresolved fails its batch. Until its ack resolves, a
//! batch's items are in flight, so the lease's `--max-in-flight` bounds everything
//! outstanding in handlers too.
//!
//! Telemetry: the workers emit [`Event::BatchHandled`] (items and time from submit to
//! resolution), [`Event::RetryScheduled`], [`Event::ItemsFailed`] and
//! [`Event::DeadLettered`] to the pool's [`Sink`], with the lease they concern (the log
//! sink writes the retry and dead-letter lines rsmld always wrote).
//!
//! # Failures
//!
//! Failures follow the [`OnError`] policy ([`policy::decide`], a pure table): `Fail`
//! reports [`WorkerEvent::Failed`] to the lease and fails the lease (its later blocks are
//! dropped by every worker, so nothing past the failed item is processed or reported;
//! its session then stops checkpointing and ends non-zero) — the worker itself goes on
//! serving the other leases; `Retry` retries the failed items with exponential backoff,
//! then fails (the retry waits in its lease's queue with a not-before time, and that
//! lease's later blocks on the worker wait behind it, while the worker serves the other
//! leases); `Skip` writes each failed item with
//! its error to a dead-letter file of its lease and reports it complete once the line is
//! durable at the path (the same rules as the archive's, see `pool::dead_letter`); if
//! dead-lettering fails, the items are not done and the lease fails as under `Fail`. A
//! retried item is processed after the items that followed it in its batch: per-key
//! order is kept for successful first attempts only. A handler panic is a failure of its
//! batch like any other.
//!
//! The watchdog (`item_timeout`, `pool::watchdog`) watches every handler call. A call
//! that runs too long is interrupted through the handler's interrupter (the exec handler
//! kills its child, and the call then fails under the policy); a handler that cannot be
//! interrupted makes the timeout fatal for the lease of the call, and the worker, whose
//! thread cannot be taken back, is lost: every live lease attached to the pool fails at
//! once (the stuck thread may hold blocks, retries or pending acks of any of them, where
//! nothing else can reach them; a lease with nothing there yet would fail at its next
//! item for that worker anyway), and a lease dispatching to it later fails. (A worker thread that dies of a bug is lost too.)
//!
//! # Shutdown
//!
//! [`Pool::shutdown`] ends the pool: every lease still attached is abandoned, every
//! handler is interrupted ([`Interrupt::Shutdown`]: the exec handler stops waiting for its
//! child and closes it within its own bound), a failure of abandoned work is not put
//! through the failure policy (no retry, no dead letter), and a retry waiting for its
//! time is dropped; each worker then drops what is queued, closes its handler and returns,
//! and the pool joins them all, within a bound. That is what bounds the time from stdin
//! EOF to exit.

pub(crate) mod dead_letter;
pub mod policy;
mod watchdog;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

#[cfg(doc)]
use crate::handler::{Ack, Handler};
use crate::handler::{HandlerFactory, Interrupt, WorkerContext};
use crate::pipeline::item::ItemBlock;
use crate::pipeline::partition::worker_of;
use crate::protocol::tracker::RecordId;
#[cfg(doc)]
use crate::telemetry::Event;
use crate::telemetry::{LeaseId, Sink};
use dead_letter::DeadLetter;
use watchdog::Watch;
use worker::Worker;

/// What to do when a handler fails items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Stop: nothing past the failed item is ever checkpointed; the process exits non-zero.
    Fail,
    /// Retry the failed items up to `retries` times, `backoff` doubling; then fail.
    Retry {
        /// Retries after the first attempt.
        retries: u32,
        /// First delay; doubles per retry (capped at 30 s).
        backoff: Duration,
    },
    /// Write failed items with their error under `dead_letter`, count them as done.
    Skip {
        /// The dead-letter directory.
        dead_letter: PathBuf,
    },
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Number of workers (and threads).
    pub workers: usize,
    /// Capacity of each worker's channel, in items.
    pub channel_capacity: usize,
    /// Most items handed to a handler at once.
    pub max_batch: usize,
    /// How long a worker waits to fill a batch after its first item (zero: no waiting).
    pub batch_interval: Duration,
    /// The failure policy.
    pub on_error: OnError,
    /// Longest a handler call may take before the watchdog acts (`None`: no watchdog).
    pub item_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 1,
            channel_capacity: 1024,
            max_batch: 512,
            batch_interval: Duration::ZERO,
            on_error: OnError::Fail,
            item_timeout: None,
        }
    }
}

/// A message to a worker.
pub(crate) enum Msg {
    /// Items of one lease to process, in order (a block of a daemon batch's items for this
    /// worker). The block travels with its lease, so the worker knows whose items it holds.
    Items(Arc<LeaseState>, ItemBlock),
    /// Process what is collected now, without waiting for the batch interval.
    Flush,
}

/// What workers report.
#[derive(Debug)]
pub enum WorkerEvent {
    /// These items finished (one record id per item), or were dead-lettered.
    Completed(Vec<RecordId>),
    /// Items failed and the lease stops (the policy gave up on them); these items (one
    /// record id per item) are not done. Nothing of the lease is processed after it.
    Failed {
        /// The worker index.
        worker: usize,
        /// The failed items.
        records: Vec<RecordId>,
        /// What failed, naming the first failed item's sequence number.
        error: String,
    },
}

/// Pool errors.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Creating a handler failed.
    #[error("cannot start worker {worker}: {error}")]
    Start {
        /// The worker index.
        worker: usize,
        /// Why.
        error: String,
    },
    /// The thread pool could not be built.
    #[error("cannot start the worker threads: {0}")]
    Threads(String),
    /// A worker has stopped (after a failure) and cannot take items.
    #[error("worker {0} has stopped")]
    WorkerGone(usize),
    /// A worker thread panicked outside its handler.
    #[error("a worker thread panicked: {0}")]
    Panicked(String),
    /// The lease failed (under the failure policy) and takes no more items.
    #[error("lease {0} has failed and takes no more items")]
    LeaseFailed(LeaseId),
}

/// What every worker knows about one attached lease (shared with its blocks).
pub(crate) struct LeaseState {
    /// Which lease.
    pub(crate) id: LeaseId,
    /// Queued work is dropped and completions vanish (`leaseLost`, the end, shutdown).
    abandoned: AtomicBool,
    /// The policy failed the lease: its later blocks are dropped.
    failed: AtomicBool,
    /// The lease detached: handlers may forget it once its work is gone.
    ended: AtomicBool,
    /// The lease's own event channel.
    events: Sender<WorkerEvent>,
    /// Items of this lease dead-lettered so far.
    dead_lettered: AtomicU64,
}

impl LeaseState {
    /// Neither abandoned nor failed: its items are worth processing.
    pub(crate) fn live(&self) -> bool {
        !self.abandoned() && !self.failed.load(Ordering::SeqCst)
    }

    pub(crate) fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Reports completions (unless the lease is abandoned or failed: then they vanish).
    pub(crate) fn completed(&self, records: Vec<RecordId>) {
        if !records.is_empty() && self.live() {
            let _ = self.events.send(WorkerEvent::Completed(records));
        }
    }

    /// Fails the lease: from now on its blocks are dropped; the event says why (unless
    /// the lease is abandoned, or failed already: one failure ends a lease).
    pub(crate) fn fail(&self, worker: usize, records: Vec<RecordId>, error: String) {
        if self.failed.swap(true, Ordering::SeqCst) || self.abandoned() {
            return;
        }
        let _ = self.events.send(WorkerEvent::Failed {
            worker,
            records,
            error,
        });
    }

    pub(crate) fn count_dead_letters(&self, n: usize) {
        self.dead_lettered.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What the pool and its leases share.
struct Shared {
    /// One bounded channel per worker.
    senders: Vec<Sender<Msg>>,
    /// The watchdog's view of each worker (also: whether it is lost).
    watches: Vec<Arc<Watch>>,
    /// Every lease attached and not yet dropped (the watchdog's too).
    leases: Arc<Mutex<Vec<Weak<LeaseState>>>>,
    /// Items dead-lettered over all leases.
    dead_lettered: Arc<AtomicU64>,
}

/// A running pool of workers, shared by the leases attached to it.
pub struct Pool {
    shared: Arc<Shared>,
    /// Set by shutdown: workers end once their queue is dropped.
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Creates one handler per worker (all before any thread starts, so a bad
    /// configuration fails cleanly) and starts the workers, serving no lease yet.
    pub fn start(
        config: &PoolConfig,
        factory: &dyn HandlerFactory,
        telemetry: Arc<dyn Sink>,
    ) -> Result<Pool, PoolError> {
        Self::start_with(config, factory, telemetry, None)
    }

    /// As [`Pool::start`], for a pool that will serve `lease` only (child mode): the
    /// handlers' [`WorkerContext`] names it, for what a handler sets up once per worker
    /// (the exec handler's `RSMLD_SHARD_ID`). Attach it as usual.
    pub fn start_for_lease(
        config: &PoolConfig,
        factory: &dyn HandlerFactory,
        telemetry: Arc<dyn Sink>,
        lease: &LeaseId,
    ) -> Result<Pool, PoolError> {
        Self::start_with(config, factory, telemetry, Some(lease))
    }

    fn start_with(
        config: &PoolConfig,
        factory: &dyn HandlerFactory,
        telemetry: Arc<dyn Sink>,
        lease: Option<&LeaseId>,
    ) -> Result<Pool, PoolError> {
        let n = config.workers.max(1);
        let mut handlers = Vec::with_capacity(n);
        for worker in 0..n {
            let ctx = WorkerContext {
                telemetry: telemetry.clone(),
                sole_lease: lease.cloned(),
                ..WorkerContext::new(worker, n)
            };
            let handler = factory.create(&ctx).map_err(|e| PoolError::Start {
                worker,
                error: e.to_string(),
            })?;
            handlers.push(handler);
        }
        let mut dead_letters = Vec::with_capacity(n);
        for worker in 0..n {
            // Opened now, so that a bad directory is a start-up error, and held: rsmld
            // creates it at start-up only. Each lease's files are made at first use.
            dead_letters.push(match &config.on_error {
                OnError::Skip { dead_letter } => Some(
                    DeadLetter::open(dead_letter, worker)
                        .map_err(|error| PoolError::Start { worker, error })?,
                ),
                _ => None,
            });
        }
        let dead_lettered = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let mut senders = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        let mut watches = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for (id, (handler, dead_letter)) in handlers.into_iter().zip(dead_letters).enumerate() {
            // Messages carry a daemon batch's items for this worker: the sessions'
            // in-flight bounds are what limit memory; this only bounds queued batches.
            let (tx, rx) = bounded(config.channel_capacity.max(1));
            senders.push(tx);
            receivers.push(rx.clone());
            let watch = Arc::new(Watch::new(handler.interrupter()));
            watches.push(watch.clone());
            workers.push(Worker::new(
                id,
                rx,
                handler,
                config.clone(),
                watch,
                epoch,
                telemetry.clone(),
                dead_letter,
                dead_lettered.clone(),
                stopping.clone(),
            ));
        }
        let mut threads = Vec::with_capacity(n + 1);
        let leases = Arc::new(Mutex::new(Vec::new()));
        if let Some(timeout) = config.item_timeout {
            threads.push(watchdog::spawn(
                timeout,
                watches.clone(),
                receivers,
                leases.clone(),
                epoch,
                stopping.clone(),
            )?);
        }
        for worker in workers {
            let id = worker.id();
            let thread = std::thread::Builder::new()
                .name(format!("rsmld-worker-{id}"))
                .spawn(move || worker.run())
                .map_err(|e| PoolError::Threads(e.to_string()))?;
            threads.push(thread);
        }
        Ok(Pool {
            shared: Arc::new(Shared {
                senders,
                watches,
                leases,
                dead_lettered,
            }),
            stopping,
            threads,
        })
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.shared.senders.len()
    }

    /// How many workers are lost (a handler call past `item_timeout` that could not be
    /// interrupted, or a worker thread that died): the pool cannot serve the keys routed to
    /// them again, so a host of many leases should stop and be restarted.
    pub fn lost_workers(&self) -> usize {
        self.shared.watches.iter().filter(|w| w.is_lost()).count()
    }

    /// Attaches a lease: its items go to this pool's workers from now on, and its events
    /// (only its own) come back on the handle's channel.
    pub fn attach(&self, lease: LeaseId) -> PoolLease {
        let (tx, events) = unbounded();
        let state = Arc::new(LeaseState {
            id: lease,
            abandoned: AtomicBool::new(self.stopping.load(Ordering::SeqCst)),
            failed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            events: tx,
            dead_lettered: AtomicU64::new(0),
        });
        let mut leases = self
            .shared
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        leases.retain(|l| l.strong_count() > 0);
        leases.push(Arc::downgrade(&state));
        drop(leases);
        PoolLease {
            state,
            shared: self.shared.clone(),
            events,
        }
    }

    /// Asks every worker to process what it has collected without waiting.
    pub fn flush(&self) {
        flush_all(&self.shared.senders);
    }

    /// Items written to the dead-letter directory so far, over all leases.
    pub fn dead_lettered(&self) -> u64 {
        self.shared.dead_lettered.load(Ordering::Relaxed)
    }

    /// Ends the pool: abandons every lease still attached, interrupts every handler with
    /// [`Interrupt::Shutdown`] (so running calls end instead of finishing their batches),
    /// and joins every worker, waiting at most `timeout` (a handler that hangs must not
    /// keep the process alive; its thread dies with the process).
    pub fn shutdown(self, timeout: Duration) -> Result<(), PoolError> {
        self.stopping.store(true, Ordering::SeqCst);
        let leases = std::mem::take(
            &mut *self
                .shared
                .leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for lease in leases.iter().filter_map(Weak::upgrade) {
            lease.abandoned.store(true, Ordering::SeqCst);
        }
        for watch in &self.shared.watches {
            if let Some(interrupt) = watch.interrupter() {
                interrupt(Interrupt::Shutdown);
            }
        }
        // Wakes workers waiting for items (leases still attached hold senders).
        flush_all(&self.shared.senders);
        drop(self.shared);
        let deadline = Instant::now() + timeout;
        let mut result = Ok(());
        for thread in self.threads {
            while !thread.is_finished() {
                if Instant::now() >= deadline {
                    log::warn!(
                        "workers did not stop within {} ms; exiting anyway",
                        timeout.as_millis()
                    );
                    return result;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Err(p) = thread.join() {
                result = Err(PoolError::Panicked(panic_message(&*p)));
            }
        }
        result
    }
}

fn flush_all(senders: &[Sender<Msg>]) {
    for tx in senders {
        // A full channel means the worker has plenty to do already.
        let _ = tx.try_send(Msg::Flush);
    }
}

/// One lease's handle on a shared [`Pool`]: where its items go and its events come
/// from. Dropping it ends the lease on the pool: what is still queued is dropped, later
/// completions vanish, and each handler is told ([`crate::handler::Handler`]'s
/// per-lease state can go).
pub struct PoolLease {
    state: Arc<LeaseState>,
    shared: Arc<Shared>,
    events: Receiver<WorkerEvent>,
}

impl PoolLease {
    /// Which lease this is.
    pub fn id(&self) -> &LeaseId {
        &self.state.id
    }

    /// The number of workers (of the pool).
    pub fn workers(&self) -> usize {
        self.shared.senders.len()
    }

    /// Routes a block of items to their workers by partition key, keeping their order per
    /// worker; blocks while a worker's channel is full.
    pub fn dispatch_block(&self, block: ItemBlock) -> Result<(), PoolError> {
        self.dispatch(vec![(None, block)])
    }

    /// Sends blocks in order: each to the worker it names, or (`None`) split by
    /// partition key. One channel message per block and worker, so the cost per item is
    /// nothing here. Fails once the lease has failed, or if a worker is gone.
    pub fn dispatch(&self, blocks: Vec<(Option<usize>, ItemBlock)>) -> Result<(), PoolError> {
        let n = self.shared.senders.len();
        for (worker, block) in blocks {
            match worker {
                _ if block.is_empty() => {}
                Some(w) if w < n => self.send(w, block)?,
                _ if n == 1 => self.send(0, block)?,
                _ => {
                    let parts = block.split_by(n, |item| worker_of(item, n));
                    for (w, part) in parts.into_iter().enumerate() {
                        if !part.is_empty() {
                            self.send(w, part)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&self, worker: usize, block: ItemBlock) -> Result<(), PoolError> {
        if self.state.failed.load(Ordering::SeqCst) {
            return Err(PoolError::LeaseFailed(self.state.id.clone()));
        }
        if self.shared.watches[worker].is_lost() {
            return Err(PoolError::WorkerGone(worker));
        }
        self.shared.senders[worker]
            .send(Msg::Items(self.state.clone(), block))
            .map_err(|_| PoolError::WorkerGone(worker))
    }

    /// Asks every worker to process what it has collected without waiting.
    pub fn flush(&self) {
        flush_all(&self.shared.senders);
    }

    /// This lease's completion channel: its completions and its failure, nobody else's.
    pub fn events(&self) -> &Receiver<WorkerEvent> {
        &self.events
    }

    /// Items of this lease written to the dead-letter directory so far.
    pub fn dead_lettered(&self) -> u64 {
        self.state.dead_lettered.load(Ordering::Relaxed)
    }

    /// Drops this lease's queued items from now on (batches already in a handler finish)
    /// and makes its later completions vanish; other leases are not touched.
    pub fn abandon(&self) {
        self.state.abandoned.store(true, Ordering::SeqCst);
    }

    /// Ends the lease on the pool (the same as dropping the handle).
    pub fn end(self) {}
}

impl Drop for PoolLease {
    fn drop(&mut self) {
        self.state.abandoned.store(true, Ordering::SeqCst);
        self.state.ended.store(true, Ordering::SeqCst);
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
