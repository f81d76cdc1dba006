//! One worker: a long-lived blocking loop on its own thread that batches the blocks routed
//! to it and runs them through its handler under the failure policy.
//!
//! The loop waits for a block; then collects more (up to `max_batch` items, waiting at
//! most `batch_interval`, cut short by a flush request); drops the blocks of leases that
//! are no longer live (abandoned, failed, ended); and hands the queue to the handler in
//! batches of up to `max_batch` items **of one lease**, across blocks of that lease when
//! they are small. Between leases the queue keeps arrival order, so a lease's blocks on
//! this worker are handled in the order they were dispatched (per-key order within a
//! lease). After `batch_interval` (or a second) without items, the handler's `flush` hook
//! runs if it processed anything since the last one.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::dead_letter::DeadLetter;
use super::policy::{decide, Decision};
use super::watchdog::Watch;
use super::{panic_message, LeaseState, Msg, PoolConfig};
use crate::handler::{BatchError, Handler, HandlerError};
use crate::pipeline::item::{Item, ItemBlock};
use crate::telemetry::Sink;

/// A queued block and the lease it belongs to.
type Queued = (Arc<LeaseState>, ItemBlock);

pub(crate) struct Worker {
    id: usize,
    rx: Receiver<Msg>,
    handler: Box<dyn Handler>,
    config: PoolConfig,
    watch: Arc<Watch>,
    epoch: Instant,
    #[allow(dead_code)]
    telemetry: Arc<dyn Sink>,
    /// The dead-letter files (under `--on-error skip` only).
    dead_letter: Option<DeadLetter>,
    /// The leases whose batches this handler saw and has not been told the end of.
    leases: Vec<Arc<LeaseState>>,
    dead_lettered: Arc<AtomicU64>,
    /// The pool is shutting down.
    stopping: Arc<AtomicBool>,
    /// Processed something since the last `flush`.
    dirty: bool,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: usize,
        rx: Receiver<Msg>,
        handler: Box<dyn Handler>,
        config: PoolConfig,
        watch: Arc<Watch>,
        epoch: Instant,
        telemetry: Arc<dyn Sink>,
        dead_letter: Option<DeadLetter>,
        dead_lettered: Arc<AtomicU64>,
        stopping: Arc<AtomicBool>,
    ) -> Worker {
        Worker {
            id,
            rx,
            handler,
            config,
            watch,
            epoch,
            telemetry,
            dead_letter,
            leases: Vec::new(),
            dead_lettered,
            stopping,
            dirty: false,
        }
    }

    pub(crate) fn id(&self) -> usize {
        self.id
    }

    pub(crate) fn run(mut self) {
        let idle = if self.config.batch_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            self.config.batch_interval
        };
        let max_batch = self.config.max_batch.max(1);
        // Blocks in arrival order; `offset` items of the front block are done.
        let mut queue: VecDeque<Queued> = VecDeque::new();
        let mut offset = 0;
        loop {
            if self.watch.is_lost() {
                break;
            }
            if queue.is_empty() {
                self.forget_ended();
                if self.stopping.load(Ordering::SeqCst) && self.rx.is_empty() {
                    break;
                }
                match self.rx.recv_timeout(idle) {
                    Ok(Msg::Items(lease, block)) => queue.push_back((lease, block)),
                    Ok(Msg::Flush) | Err(RecvTimeoutError::Timeout) => {
                        self.flush_handler();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let flush_now = self.fill(&mut queue, offset);
            drop_dead(&mut queue, &mut offset);
            while let Some((lease, _)) = queue.front() {
                let lease = lease.clone();
                // The next batch: up to max_batch items of this lease, across blocks if
                // they are small.
                let mut batch: Vec<Item<'_>> =
                    Vec::with_capacity(max_batch.min(queued(&queue, offset)));
                let (mut used, mut next_offset) = (0, offset);
                for (owner, block) in &queue {
                    if !Arc::ptr_eq(owner, &lease) {
                        break;
                    }
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
                self.run_batch(&lease, &batch);
                drop(batch);
                queue.drain(..used);
                offset = next_offset;
                if self.watch.is_lost() {
                    break;
                }
                drop_dead(&mut queue, &mut offset);
            }
            if flush_now {
                self.flush_handler();
            }
        }
        self.close(queue);
    }

    /// Collects more blocks into `queue` (waiting up to the batch interval for a full
    /// batch); true if a flush was requested meanwhile.
    fn fill(&self, queue: &mut VecDeque<Queued>, offset: usize) -> bool {
        let deadline = Instant::now() + self.config.batch_interval;
        while queued(queue, offset) < self.config.max_batch.max(1) {
            let next = if self.config.batch_interval.is_zero() {
                self.rx.try_recv().ok()
            } else {
                self.rx.recv_deadline(deadline).ok()
            };
            match next {
                Some(Msg::Items(lease, block)) => queue.push_back((lease, block)),
                Some(Msg::Flush) => return true,
                None => break,
            }
        }
        false
    }

    /// Drops the per-lease state of leases that have ended, and tells the handler.
    fn forget_ended(&mut self) {
        if let Some(sink) = &mut self.dead_letter {
            sink.forget_ended();
        }
        let mut i = 0;
        while i < self.leases.len() {
            if !self.leases[i].ended() {
                i += 1;
                continue;
            }
            let lease = self.leases.swap_remove(i);
            if let Err(e) = self.handler.end_lease(&lease.id) {
                log::error!(
                    "worker {}: ending lease {} in the handler failed: {e}",
                    self.id,
                    lease.id
                );
            }
        }
    }

    /// Notes that the handler sees a batch of `lease` (so it is told the lease's end).
    fn note_lease(&mut self, lease: &Arc<LeaseState>) {
        if !self.leases.iter().any(|l| Arc::ptr_eq(l, lease)) {
            // A lease attached again has ended before: the handler hears of that first.
            self.forget_ended();
            self.leases.push(lease.clone());
        }
    }

    fn close(mut self, queue: VecDeque<Queued>) {
        if self.watch.is_lost() {
            // Nobody will process these: their leases must not wait for them.
            for (lease, block) in queue {
                if lease.live() {
                    let records = block.iter().map(|i| i.record).collect();
                    lease.fail(
                        self.id,
                        records,
                        format!("worker {} is lost (item timeout)", self.id),
                    );
                }
            }
        }
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

    /// Processes one batch of `lease` under the failure policy.
    fn run_batch(&mut self, lease: &Arc<LeaseState>, batch: &[Item]) {
        self.note_lease(lease);
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut attempt: u32 = 0;
        loop {
            let failed = if pending.len() == batch.len() {
                self.call(lease, batch)
            } else {
                let subset: Vec<Item<'_>> = pending.iter().map(|&i| batch[i]).collect();
                self.call(lease, &subset)
                    .into_iter()
                    .map(|(j, e)| (pending[j], e))
                    .collect()
            };
            self.dirty = true;
            lease.completed(
                pending
                    .iter()
                    .filter(|i| !failed.iter().any(|(f, _)| f == *i))
                    .map(|&i| batch[i].record)
                    .collect(),
            );
            let Some((first, first_error)) = failed.first() else {
                return;
            };
            let item = &batch[*first];
            match decide(&self.config.on_error, attempt, lease.abandoned()) {
                Decision::Drop => {
                    // Abandoned work is never checkpointed: no retry, no dead letter.
                    log::info!(
                        "worker {}: {} abandoned item(s) not done (first: {first_error})",
                        self.id,
                        failed.len()
                    );
                    return;
                }
                Decision::Retry { after, number, of } => {
                    log::warn!(
                        "worker {}: {} item(s) failed (first: {}: {first_error}); retry {number} of {of} in {} ms",
                        self.id,
                        failed.len(),
                        describe(item),
                        after.as_millis()
                    );
                    self.sleep_unless_abandoned(lease, after);
                    attempt += 1;
                    pending = failed.iter().map(|(i, _)| *i).collect();
                }
                Decision::DeadLetter => {
                    match self.dead_letter_items(lease, batch, &failed, attempt + 1) {
                        Ok(()) => {
                            lease.completed(failed.iter().map(|(i, _)| batch[*i].record).collect())
                        }
                        Err(e) => self.fail(
                            lease,
                            batch,
                            &failed,
                            format!("{first_error}; and dead-lettering failed: {e}"),
                        ),
                    }
                    return;
                }
                Decision::Fail => {
                    let error = first_error.to_string();
                    return self.fail(lease, batch, &failed, error);
                }
            }
        }
    }

    /// Sleeps `delay`, or less if the lease is abandoned (or the pool stops) meanwhile:
    /// shutdown must not wait out a retry backoff.
    fn sleep_unless_abandoned(&self, lease: &LeaseState, delay: Duration) {
        let deadline = Instant::now() + delay;
        while !lease.abandoned() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    fn fail(
        &self,
        lease: &LeaseState,
        batch: &[Item],
        failed: &[(usize, HandlerError)],
        error: String,
    ) {
        let item = &batch[failed[0].0];
        lease.fail(
            self.id,
            failed.iter().map(|(i, _)| batch[*i].record).collect(),
            format!("{}: {error}", describe(item)),
        );
    }

    /// Calls the handler with the watchdog armed; returns the failed indexes.
    fn call(&mut self, lease: &Arc<LeaseState>, items: &[Item]) -> Vec<(usize, HandlerError)> {
        let start = self.epoch.elapsed().as_millis() as u64 + 1;
        self.watch.begin(start, lease);
        let handler = &mut self.handler;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler.process(&lease.id, items)));
        self.watch.end();
        match outcome {
            Ok(Ok(())) => Vec::new(),
            Ok(Err(e)) => failed_indexes(e, items.len()),
            Err(p) => {
                let e = HandlerError::new(format!("handler panicked: {}", panic_message(&*p)));
                (0..items.len()).map(|i| (i, e.clone())).collect()
            }
        }
    }

    /// Writes the failed items with their errors to the lease's dead-letter files,
    /// durably; `Ok` only when they are there (then they count as done).
    fn dead_letter_items(
        &mut self,
        lease: &Arc<LeaseState>,
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
                .write_json(&lease.id.shard, &mut buf)
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
        sink.append(lease, &buf)?;
        self.dead_lettered
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        lease.count_dead_letters(failed.len());
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

/// A handler's error as the failed indexes of a batch of `len` items (ascending, each
/// once, in range).
pub(crate) fn failed_indexes(error: BatchError, len: usize) -> Vec<(usize, HandlerError)> {
    match error {
        BatchError::Batch(e) => (0..len).map(|i| (i, e.clone())).collect(),
        BatchError::Items(mut v) => {
            v.retain(|(i, _)| *i < len);
            v.sort_by_key(|(i, _)| *i);
            v.dedup_by_key(|(i, _)| *i);
            v
        }
    }
}

/// Removes the blocks of leases that are no longer live (abandoned, failed, ended).
fn drop_dead(queue: &mut VecDeque<Queued>, offset: &mut usize) {
    if queue.front().is_some_and(|(l, _)| !l.live()) {
        *offset = 0;
    }
    queue.retain(|(l, _)| l.live());
}

/// Items not yet processed in `queue`, whose front block has `offset` done.
fn queued(queue: &VecDeque<Queued>, offset: usize) -> usize {
    queue.iter().map(|(_, b)| b.len()).sum::<usize>() - offset
}

/// `sequence/sub (item u of n, key k)`: how errors name an item.
pub(crate) fn describe(item: &Item) -> String {
    format!(
        "item {}/{} (user record {} of {}, partition key {:?})",
        item.sequence_number,
        item.sub_sequence_number,
        item.user_sub,
        item.user_total,
        item.partition_key
    )
}
