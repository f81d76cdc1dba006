//! The worker pool: hash-partitioned channels, one handler per worker, completions back.
//!
//! One shard's records are processed by N workers at once while items with the same
//! partition key keep their order: an item goes to worker `partition(key, N)` and every
//! worker handles its own bounded FIFO channel in order. The hash is FNV-1a (64-bit) of
//! the key's UTF-8 bytes, modulo N — fixed and documented, never a per-process random
//! hasher, so the same key lands on the same worker in every run (file names and
//! downstream ordering stay predictable across restarts).
//!
//! The workers run as long-lived jobs on a dedicated rayon thread pool of exactly N
//! threads. Each worker collects a batch — up to `batch_size` items, waiting at most
//! `batch_interval` after the first one (0: only what is already queued) — and hands it
//! to its handler. A [`Msg::Flush`] (sent when the session drains or waits for capacity)
//! cuts the wait short. After `batch_interval` (or a second) without items, the worker
//! calls the handler's `flush` hook if it processed anything since the last one.
//!
//! Items travel in [`ItemBlock`]s (one line reference per block, no per-item allocation);
//! a worker builds each handler batch as views into the blocks it holds, across blocks
//! when they are small.
//!
//! Completions go back on an unbounded channel (so a worker never blocks on the protocol
//! thread; the in-flight bound keeps it small), one record id per finished item.
//!
//! Failures follow the [`OnError`] policy: `Fail` reports [`WorkerEvent::Failed`] and
//! stops the worker (the session then stops checkpointing and the process exits
//! non-zero); `Retry` retries the failed items with exponential backoff, then fails;
//! `Skip` writes each failed item with its error to a dead-letter file and reports it
//! complete once the line is durable at the path (the same rules as the archive's, see
//! `handler::dead_letter`); if dead-lettering fails, the items are not done and the
//! worker fails as under `Fail`. A retried item is processed after the items that
//! followed it in its batch: per-key order is kept for successful first attempts only.
//!
//! The watchdog (`item_timeout`) watches every handler call. A call that runs too long is
//! interrupted through the handler's interrupter (the exec handler kills its child, and
//! the call then fails under the policy); a handler that cannot be interrupted makes the
//! timeout fatal, because its thread cannot be taken back.
//!
//! Shutdown drops the senders; each worker drains or (after [`Pool::abandon`]) drops what
//! is queued, closes its handler and returns; the pool joins them all, within a bound.
//! After `abandon` nothing a worker still does can be checkpointed, so shutdown also
//! interrupts every handler ([`Interrupt::Shutdown`]: the exec handler stops waiting for
//! its child and closes it within its own bound), a failure of abandoned work is not put
//! through the failure policy (no retry, no dead letter), and a retry backoff in
//! progress is cut short. That is what bounds the time from stdin EOF to exit.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

use crate::handler::dead_letter::DeadLetter;
use crate::handler::{
    BatchError, Handler, HandlerError, HandlerFactory, Interrupt, Interrupter, WorkerContext,
};
use crate::pipeline::item::{Item, ItemBlock};
use crate::pipeline::partition::worker_of;
use crate::protocol::tracker::RecordId;

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
#[derive(Debug)]
pub enum Msg {
    /// Items to process, in order (a block of a daemon batch's items for this worker).
    Items(ItemBlock),
    /// Process what is collected now, without waiting for the batch interval.
    Flush,
}

/// What workers report.
#[derive(Debug)]
pub enum WorkerEvent {
    /// These items finished (one record id per item), or were dead-lettered.
    Completed(Vec<RecordId>),
    /// A worker failed; these items (one record id per item) are not done.
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
}

/// A running pool of workers.
pub struct Pool {
    senders: Vec<Sender<Msg>>,
    events: Receiver<WorkerEvent>,
    abandon: Arc<AtomicBool>,
    stop_watchdog: Arc<AtomicBool>,
    dead_lettered: Arc<AtomicU64>,
    watches: Vec<Arc<Watch>>,
    runner: Option<JoinHandle<Result<(), PoolError>>>,
}

/// The watchdog's view of one worker.
struct Watch {
    /// Milliseconds since `epoch` + 1 when the current handler call started; 0 = idle.
    busy_since: AtomicU64,
    interrupter: Option<Interrupter>,
}

impl Pool {
    /// Creates one handler per worker (all before any thread starts, so a bad
    /// configuration fails cleanly) and starts the workers.
    pub fn start(
        config: &PoolConfig,
        shard_id: &str,
        factory: &dyn HandlerFactory,
    ) -> Result<Pool, PoolError> {
        let n = config.workers.max(1);
        let mut handlers = Vec::with_capacity(n);
        for worker in 0..n {
            let ctx = WorkerContext {
                shard_id: shard_id.to_owned(),
                worker,
                workers: n,
            };
            let handler = factory.create(&ctx).map_err(|e| PoolError::Start {
                worker,
                error: e.to_string(),
            })?;
            handlers.push(handler);
        }
        let mut dead_letters = Vec::with_capacity(n);
        for worker in 0..n {
            dead_letters.push(match &config.on_error {
                OnError::Skip { dead_letter } => Some(
                    DeadLetter::open(dead_letter, shard_id, worker)
                        .map_err(|error| PoolError::Start { worker, error })?,
                ),
                _ => None,
            });
        }
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("rsmld-worker-{i}"))
            .build()
            .map_err(|e| PoolError::Threads(e.to_string()))?;
        let (event_tx, events) = unbounded();
        let abandon = Arc::new(AtomicBool::new(false));
        let dead_lettered = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let mut senders = Vec::with_capacity(n);
        let mut jobs = Vec::with_capacity(n);
        let mut watches = Vec::with_capacity(n);
        let workers = handlers.into_iter().zip(dead_letters).enumerate();
        for (worker, (handler, dead_letter)) in workers {
            // Messages carry a daemon batch's items for this worker: the session's
            // in-flight bound is what limits memory; this only bounds queued batches.
            let (tx, rx) = bounded(config.channel_capacity.max(1));
            senders.push(tx);
            let watch = Arc::new(Watch {
                busy_since: AtomicU64::new(0),
                interrupter: handler.interrupter(),
            });
            watches.push(watch.clone());
            jobs.push(Worker {
                id: worker,
                shard_id: shard_id.to_owned(),
                rx,
                events: event_tx.clone(),
                handler,
                abandon: abandon.clone(),
                config: config.clone(),
                watch,
                epoch,
                dead_letter,
                dead_lettered: dead_lettered.clone(),
                dirty: false,
            });
        }
        let stop_watchdog = Arc::new(AtomicBool::new(false));
        if let Some(timeout) = config.item_timeout {
            spawn_watchdog(
                timeout,
                watches.clone(),
                epoch,
                event_tx.clone(),
                stop_watchdog.clone(),
            )?;
        }
        drop(event_tx);
        let runner = std::thread::Builder::new()
            .name("rsmld-pool".into())
            .spawn(move || {
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    threads.scope(|scope| {
                        for job in jobs {
                            scope.spawn(move |_| job.run());
                        }
                    })
                }));
                result.map_err(|p| PoolError::Panicked(panic_message(&*p)))
            })
            .map_err(|e| PoolError::Threads(e.to_string()))?;
        Ok(Pool {
            senders,
            events,
            abandon,
            stop_watchdog,
            dead_lettered,
            watches,
            runner: Some(runner),
        })
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Routes a block of items to their workers by partition key, keeping their order per
    /// worker; blocks while a worker's channel is full.
    pub fn dispatch_block(&self, block: ItemBlock) -> Result<(), PoolError> {
        self.dispatch(vec![(None, block)])
    }

    /// Sends blocks in order: each to the worker it names, or (`None`) split by
    /// partition key. One channel message per block and worker, so the cost per item is
    /// nothing here.
    pub fn dispatch(&self, blocks: Vec<(Option<usize>, ItemBlock)>) -> Result<(), PoolError> {
        let n = self.senders.len();
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
        self.senders[worker]
            .send(Msg::Items(block))
            .map_err(|_| PoolError::WorkerGone(worker))
    }

    /// Asks every worker to process what it has collected without waiting.
    pub fn flush(&self) {
        for tx in &self.senders {
            // A full channel means the worker has plenty to do already.
            let _ = tx.try_send(Msg::Flush);
        }
    }

    /// The completion channel.
    pub fn events(&self) -> &Receiver<WorkerEvent> {
        &self.events
    }

    /// Items written to the dead-letter directory so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// Drops queued items from now on (batches already in a handler finish).
    pub fn abandon(&self) {
        self.abandon.store(true, Ordering::SeqCst);
    }

    /// Closes the channels and joins every worker, waiting at most `timeout` (a handler
    /// that hangs must not keep the process alive; its thread dies with the process).
    /// After [`Pool::abandon`] it first interrupts every handler with
    /// [`Interrupt::Shutdown`], so running calls end instead of finishing their batches.
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), PoolError> {
        self.senders.clear();
        self.stop_watchdog.store(true, Ordering::SeqCst);
        if self.abandon.load(Ordering::SeqCst) {
            for interrupt in self.watches.iter().filter_map(|w| w.interrupter.as_ref()) {
                interrupt(Interrupt::Shutdown);
            }
        }
        let Some(runner) = self.runner.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        while !runner.is_finished() {
            if Instant::now() >= deadline {
                log::warn!(
                    "workers did not stop within {} ms; exiting anyway",
                    timeout.as_millis()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match runner.join() {
            Ok(result) => result,
            Err(p) => Err(PoolError::Panicked(panic_message(&*p))),
        }
    }
}

fn spawn_watchdog(
    timeout: Duration,
    watches: Vec<Arc<Watch>>,
    epoch: Instant,
    events: Sender<WorkerEvent>,
    stop: Arc<AtomicBool>,
) -> Result<(), PoolError> {
    let tick = (timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
    std::thread::Builder::new()
        .name("rsmld-watchdog".into())
        .spawn(move || {
            // The busy_since value each worker was last acted upon for, so one hung call
            // is interrupted once.
            let mut fired = vec![0u64; watches.len()];
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(tick);
                let now = epoch.elapsed().as_millis() as u64 + 1;
                for (worker, watch) in watches.iter().enumerate() {
                    let since = watch.busy_since.load(Ordering::SeqCst);
                    if since == 0 || fired[worker] == since || now - since < timeout.as_millis() as u64 {
                        continue;
                    }
                    fired[worker] = since;
                    match &watch.interrupter {
                        Some(interrupt) => {
                            log::error!(
                                "worker {worker}: handler busy for more than {:.3} s (item timeout); interrupting it",
                                timeout.as_secs_f64()
                            );
                            interrupt(Interrupt::Timeout);
                        }
                        None => {
                            let _ = events.send(WorkerEvent::Failed {
                                worker,
                                records: Vec::new(),
                                error: format!(
                                    "handler did not finish within the item timeout of {:.3} s and cannot be interrupted",
                                    timeout.as_secs_f64()
                                ),
                            });
                        }
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| PoolError::Threads(e.to_string()))
}

struct Worker {
    id: usize,
    shard_id: String,
    rx: Receiver<Msg>,
    events: Sender<WorkerEvent>,
    handler: Box<dyn Handler>,
    abandon: Arc<AtomicBool>,
    config: PoolConfig,
    watch: Arc<Watch>,
    epoch: Instant,
    /// The dead-letter files (under `--on-error skip` only).
    dead_letter: Option<DeadLetter>,
    dead_lettered: Arc<AtomicU64>,
    /// Processed something since the last `flush`.
    dirty: bool,
}

/// The worker stops (after reporting a failure, or when the session is gone).
struct Stop;

impl Worker {
    fn run(mut self) {
        let idle = if self.config.batch_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            self.config.batch_interval
        };
        let max_batch = self.config.max_batch.max(1);
        // Blocks in arrival order; `offset` items of the front block are done.
        let mut queue: VecDeque<ItemBlock> = VecDeque::new();
        let mut offset = 0;
        loop {
            if queue.is_empty() {
                match self.rx.recv_timeout(idle) {
                    Ok(Msg::Items(block)) => queue.push_back(block),
                    Ok(Msg::Flush) | Err(RecvTimeoutError::Timeout) => {
                        self.flush_handler();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let flush_now = self.fill(&mut queue, offset);
            if self.abandon.load(Ordering::SeqCst) {
                queue.clear();
                offset = 0;
                continue;
            }
            while !queue.is_empty() {
                // The next batch: up to max_batch items, across blocks if they are small.
                let mut batch: Vec<Item<'_>> =
                    Vec::with_capacity(max_batch.min(queued(&queue, offset)));
                let (mut used, mut next_offset) = (0, offset);
                for block in &queue {
                    let take = (block.len() - next_offset).min(max_batch - batch.len());
                    batch.extend(block.iter_from(next_offset).take(take));
                    if next_offset + take == block.len() {
                        used += 1;
                        next_offset = 0;
                    } else {
                        next_offset += take;
                    }
                    if batch.len() == max_batch {
                        break;
                    }
                }
                let result = self.run_batch(&batch);
                drop(batch);
                if result.is_err() {
                    return self.close();
                }
                queue.drain(..used);
                offset = next_offset;
                if self.abandon.load(Ordering::SeqCst) {
                    queue.clear();
                    offset = 0;
                }
            }
            if flush_now {
                self.flush_handler();
            }
        }
        self.close();
    }

    /// Collects more blocks into `queue` (waiting up to the batch interval for a full
    /// batch); true if a flush was requested meanwhile.
    fn fill(&self, queue: &mut VecDeque<ItemBlock>, offset: usize) -> bool {
        let deadline = Instant::now() + self.config.batch_interval;
        while queued(queue, offset) < self.config.max_batch.max(1) {
            let next = if self.config.batch_interval.is_zero() {
                self.rx.try_recv().ok()
            } else {
                self.rx.recv_deadline(deadline).ok()
            };
            match next {
                Some(Msg::Items(block)) => queue.push_back(block),
                Some(Msg::Flush) => return true,
                None => break,
            }
        }
        false
    }

    fn close(mut self) {
        if let Err(e) = self.handler.close() {
            log::error!("worker {}: closing the handler failed: {e}", self.id);
        }
    }

    fn flush_handler(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Err(e) = self.handler.flush() {
            // Items are only reported done after `process`, so a flush failure cannot
            // have been checkpointed; report it so the policy can stop the process.
            log::error!("worker {}: handler flush failed: {e}", self.id);
        }
    }

    /// Processes one batch under the failure policy.
    fn run_batch(&mut self, batch: &[Item]) -> Result<(), Stop> {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut attempt: u32 = 0;
        loop {
            let failed = if pending.len() == batch.len() {
                self.call(batch)
            } else {
                let subset: Vec<Item<'_>> = pending.iter().map(|&i| batch[i]).collect();
                self.call(&subset)
                    .into_iter()
                    .map(|(j, e)| (pending[j], e))
                    .collect()
            };
            self.dirty = true;
            let done: Vec<RecordId> = pending
                .iter()
                .filter(|i| !failed.iter().any(|(f, _)| f == *i))
                .map(|&i| batch[i].record)
                .collect();
            if !done.is_empty() && self.events.send(WorkerEvent::Completed(done)).is_err() {
                return Err(Stop);
            }
            let Some((first, first_error)) = failed.first() else {
                return Ok(());
            };
            if self.abandon.load(Ordering::SeqCst) {
                // Abandoned work is never checkpointed: no retry, no dead letter.
                log::info!(
                    "worker {}: {} abandoned item(s) not done (first: {first_error}); stopping",
                    self.id,
                    failed.len()
                );
                return Err(Stop);
            }
            let item = &batch[*first];
            match self.config.on_error.clone() {
                OnError::Retry { retries, backoff } if attempt < retries => {
                    let delay = backoff
                        .saturating_mul(1 << attempt.min(16))
                        .min(Duration::from_secs(30));
                    log::warn!(
                        "worker {}: {} item(s) failed (first: {}: {first_error}); retry {} of {retries} in {} ms",
                        self.id,
                        failed.len(),
                        describe(item),
                        attempt + 1,
                        delay.as_millis()
                    );
                    self.sleep_unless_abandoned(delay);
                    attempt += 1;
                    pending = failed.iter().map(|(i, _)| *i).collect();
                }
                OnError::Skip { .. } => {
                    return match self.dead_letter_items(batch, &failed, attempt + 1) {
                        Ok(()) => {
                            let records = failed.iter().map(|(i, _)| batch[*i].record).collect();
                            self.events
                                .send(WorkerEvent::Completed(records))
                                .map_err(|_| Stop)
                        }
                        Err(e) => self.fail(
                            batch,
                            &failed,
                            format!("{first_error}; and dead-lettering failed: {e}"),
                        ),
                    };
                }
                _ => {
                    let error = first_error.to_string();
                    return self.fail(batch, &failed, error);
                }
            }
        }
    }

    /// Sleeps `delay`, or less if the work is abandoned meanwhile (shutdown must not wait
    /// out a retry backoff).
    fn sleep_unless_abandoned(&self, delay: Duration) {
        let deadline = Instant::now() + delay;
        while !self.abandon.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    fn fail(
        &self,
        batch: &[Item],
        failed: &[(usize, HandlerError)],
        error: String,
    ) -> Result<(), Stop> {
        let item = &batch[failed[0].0];
        let _ = self.events.send(WorkerEvent::Failed {
            worker: self.id,
            records: failed.iter().map(|(i, _)| batch[*i].record).collect(),
            error: format!("{}: {error}", describe(item)),
        });
        Err(Stop)
    }

    /// Calls the handler with the watchdog armed; returns the failed indexes.
    fn call(&mut self, items: &[Item]) -> Vec<(usize, HandlerError)> {
        let start = self.epoch.elapsed().as_millis() as u64 + 1;
        self.watch.busy_since.store(start, Ordering::SeqCst);
        let handler = &mut self.handler;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.process(items)));
        self.watch.busy_since.store(0, Ordering::SeqCst);
        match outcome {
            Ok(Ok(())) => Vec::new(),
            Ok(Err(BatchError::Batch(e))) => (0..items.len()).map(|i| (i, e.clone())).collect(),
            Ok(Err(BatchError::Items(mut v))) => {
                v.retain(|(i, _)| *i < items.len());
                v.sort_by_key(|(i, _)| *i);
                v.dedup_by_key(|(i, _)| *i);
                v
            }
            Err(p) => {
                let e = HandlerError::new(format!("handler panicked: {}", panic_message(&*p)));
                (0..items.len()).map(|i| (i, e.clone())).collect()
            }
        }
    }

    /// Writes the failed items with their errors to the dead-letter files, durably;
    /// `Ok` only when they are there (then they count as done).
    fn dead_letter_items(
        &mut self,
        batch: &[Item],
        failed: &[(usize, HandlerError)],
        attempts: u32,
    ) -> Result<(), String> {
        let mut buf = Vec::new();
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (i, error) in failed {
            buf.extend_from_slice(b"{\"item\":");
            batch[*i]
                .write_json(&self.shard_id, &mut buf)
                .map_err(|e| format!("encoding a dead letter: {e}"))?;
            buf.extend_from_slice(b",\"error\":");
            crate::json::write_ascii(&mut buf, &error.message)
                .map_err(|e| format!("encoding a dead letter: {e}"))?;
            buf.extend_from_slice(
                format!(
                    ",\"attempts\":{attempts},\"worker\":{},\"time\":{time}}}\n",
                    self.id
                )
                .as_bytes(),
            );
        }
        let Some(sink) = self.dead_letter.as_mut() else {
            return Err("no dead-letter directory (internal error)".to_owned());
        };
        sink.append(&buf)?;
        self.dead_lettered
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        log::warn!(
            "worker {}: {} item(s) dead-lettered (first: {}: {})",
            self.id,
            failed.len(),
            describe(&batch[failed[0].0]),
            failed[0].1
        );
        Ok(())
    }
}

/// Items not yet processed in `queue`, whose front block has `offset` done.
fn queued(queue: &VecDeque<ItemBlock>, offset: usize) -> usize {
    queue.iter().map(ItemBlock::len).sum::<usize>() - offset
}

/// `sequence/sub (item u of n, key k)`: how errors name an item.
fn describe(item: &Item) -> String {
    format!(
        "item {}/{} (user record {} of {}, partition key {:?})",
        item.sequence_number,
        item.sub_sequence_number,
        item.user_sub,
        item.user_total,
        item.partition_key
    )
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
