//! One worker: a long-lived blocking loop on its own thread that batches the blocks routed
//! to it and runs them through its handler under the failure policy.
//!
//! The loop waits for a block; then collects more (waiting at most `batch_interval` for
//! `max_batch` items, cut short by a flush request) and takes everything else already in
//! the channel, into one queue per lease; drops the work of leases that are no longer
//! live (abandoned, failed, ended); and serves the lease queues round robin, one batch of
//! up to `max_batch` items **of one lease** per turn (across blocks of that lease when
//! they are small), taking newly arrived blocks between turns. A lease's blocks on this
//! worker are handled in the order they were dispatched (per-key order within a lease).
//! A retry is a batch waiting in its lease's queue until its time; until then the lease's
//! later blocks wait and the other leases are served. After `batch_interval` (or a second)
//! without items, the handler's `flush` hook runs if it processed anything since the last
//! one.
//!
//! # Acknowledgements
//!
//! Every batch goes to [`Handler::submit`] with an [`Ack`]; the default `submit` calls
//! `process` and resolves the ack before returning, and the worker takes that resolution
//! at once — so a synchronous handler runs exactly as it always did (its retries happen
//! before the next batch). A pipelining handler returns first and resolves later, from
//! any thread: the batch stays *pending* (its blocks are kept: a retry or a dead letter
//! needs the items) and the worker takes the resolution whenever it waits, in whatever
//! order they come. Either way a resolution goes through the same policy table; an ack
//! dropped unresolved resolves as a failure ([`crate::handler::ack`]), and a panic in
//! `submit` fails its batch with the panic's message whatever the ack says. With
//! `--item-timeout`, an ack still pending after that long fails its batch (checked
//! whenever the worker wakes, at least once a second or batch interval); each submission
//! has its own number, so the late resolution of an ack given up on counts nothing.

use std::collections::{HashMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, Sender};

use super::dead_letter::DeadLetter;
use super::policy::{decide, Decision};
use super::watchdog::Watch;
use super::{panic_message, LeaseState, Msg, PoolConfig};
use crate::handler::ack::Resolution;
use crate::handler::{Ack, BatchError, Handler, HandlerError};
use crate::pipeline::item::{Item, ItemBlock};
use crate::protocol::tracker::RecordId;
use crate::telemetry::{Event, Sink};

/// One lease's work on this worker: its blocks in dispatch order (`offset` items of the
/// front block handed out) and its retries waiting for their time.
struct LeaseQueue {
    lease: Arc<LeaseState>,
    blocks: VecDeque<Arc<ItemBlock>>,
    offset: usize,
    /// Failed batches to submit again, each not before its instant, in failure order.
    /// While one waits, the lease's later blocks wait too (per-key order, as before).
    retries: VecDeque<(Instant, Pending)>,
}

impl LeaseQueue {
    /// The instant this queue can be served (`None`: nothing to serve): its first retry's
    /// time, or now if it has blocks and no retry waits.
    fn ready_at(&self, now: Instant) -> Option<Instant> {
        match self.retries.front() {
            Some((due, _)) => Some(*due),
            None if !self.blocks.is_empty() => Some(now),
            None => None,
        }
    }
}

/// Items `from..from + len` of a block.
struct Segment {
    block: Arc<ItemBlock>,
    from: usize,
    len: usize,
}

/// A batch handed to the handler whose ack has not been taken yet.
struct Pending {
    lease: Arc<LeaseState>,
    segments: Vec<Segment>,
    /// The record id of each item of the batch (taken at the first submission, so a
    /// resolution need not walk the blocks again).
    records: Vec<RecordId>,
    /// The batch's items in the latest submission (`None`: all of them; a retry
    /// submits the failed ones).
    subset: Option<Vec<usize>>,
    /// Retries so far.
    attempt: u32,
    /// When the latest submission was made.
    started: Instant,
    /// The latest submission panicked, with this message: it failed.
    panicked: Option<String>,
}

/// Every item of a batch's segments, in order.
fn items_of(segments: &[Segment]) -> Vec<Item<'_>> {
    let len = segments.iter().map(|s| s.len).sum();
    let mut items = Vec::with_capacity(len);
    for s in segments {
        items.extend(s.block.iter_from(s.from).take(s.len));
    }
    items
}

impl Pending {
    /// The batch index of item `j` of the latest submission.
    fn index(&self, j: usize) -> usize {
        self.subset.as_ref().map_or(j, |s| s[j])
    }

    /// Items in the latest submission, of a batch of `len`.
    fn submitted(&self, len: usize) -> usize {
        self.subset.as_ref().map_or(len, Vec::len)
    }
}

/// What waiting for the next message gave.
enum Wait {
    Msg(Msg),
    Timeout,
    Closed,
}

pub(crate) struct Worker {
    id: usize,
    rx: Receiver<Msg>,
    handler: Box<dyn Handler>,
    config: PoolConfig,
    watch: Arc<Watch>,
    epoch: Instant,
    telemetry: Arc<dyn Sink>,
    /// The dead-letter files (under `--on-error skip` only).
    dead_letter: Option<DeadLetter>,
    /// The leases whose batches this handler saw and has not been told the end of.
    leases: Vec<Arc<LeaseState>>,
    /// Each lease's work on this worker (only leases with work), served round robin.
    queues: Vec<LeaseQueue>,
    /// Where the round robin looks first: after the queue served last.
    next: usize,
    dead_lettered: Arc<AtomicU64>,
    /// The pool is shutting down.
    stopping: Arc<AtomicBool>,
    /// Processed something since the last `flush`.
    dirty: bool,
    /// Where acks resolve to.
    acks_tx: Sender<Resolution>,
    acks: Receiver<Resolution>,
    /// Batches submitted whose resolution was not taken yet, by number.
    pending: HashMap<u64, Pending>,
    next_batch: u64,
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
        let (acks_tx, acks) = unbounded();
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
            queues: Vec::new(),
            next: 0,
            dead_lettered,
            stopping,
            dirty: false,
            acks_tx,
            acks,
            pending: HashMap::new(),
            next_batch: 0,
        }
    }

    pub(crate) fn id(&self) -> usize {
        self.id
    }

    pub(crate) fn run(mut self) {
        let _lost_on_panic = LostOnPanic(self.watch.clone());
        let idle = if self.config.batch_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            self.config.batch_interval
        };
        loop {
            if self.watch.is_lost() {
                break;
            }
            self.expire_pending();
            self.drop_dead();
            let now = Instant::now();
            let next = self.queues.iter().filter_map(|q| q.ready_at(now)).min();
            if next.is_none_or(|t| t > now) {
                self.forget_ended();
                if self.stopping.load(Ordering::SeqCst) && self.rx.is_empty() {
                    break;
                }
                let idle_at = now + idle;
                match self.wait(next.map_or(idle_at, |t| t.min(idle_at))) {
                    Wait::Msg(Msg::Items(lease, block)) => self.push(lease, block),
                    Wait::Msg(Msg::Flush) => {
                        self.flush_handler();
                        continue;
                    }
                    Wait::Timeout => {
                        if Instant::now() >= idle_at {
                            self.flush_handler();
                        }
                        continue;
                    }
                    Wait::Closed => break,
                }
            }
            let mut flush_now = self.fill();
            self.drop_dead();
            // Round robin by batch over the leases that have work now: each takes one
            // handler batch (or one due retry) in turn. New blocks join between turns, so
            // a worker that always has work stays here: it still expires stale acks and
            // forgets ended leases at least once per idle interval.
            let mut tidy_at = Instant::now() + idle;
            while let Some(i) = self.pick(Instant::now()) {
                self.serve(i);
                if self.watch.is_lost() {
                    break;
                }
                flush_now |= self.take_queued();
                if Instant::now() >= tidy_at {
                    self.expire_pending();
                    self.forget_ended();
                    tidy_at = Instant::now() + idle;
                }
                self.drop_dead();
            }
            if flush_now {
                self.flush_handler();
            }
        }
        self.close();
    }

    /// Queues a block of `lease`.
    fn push(&mut self, lease: Arc<LeaseState>, block: ItemBlock) {
        let block = Arc::new(block);
        match self
            .queues
            .iter_mut()
            .find(|q| Arc::ptr_eq(&q.lease, &lease))
        {
            Some(q) => q.blocks.push_back(block),
            None => self.queues.push(LeaseQueue {
                lease,
                blocks: VecDeque::from([block]),
                offset: 0,
                retries: VecDeque::new(),
            }),
        }
    }

    /// Takes every message already in the channel (so that a lease's blocks never wait
    /// behind another's in it); true if a flush was requested among them.
    fn take_queued(&mut self) -> bool {
        let mut flush = false;
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Items(lease, block) => self.push(lease, block),
                Msg::Flush => flush = true,
            }
        }
        flush
    }

    /// The next lease queue to serve after the last one served, round robin: one with a
    /// retry due, or with blocks and no retry waiting.
    fn pick(&mut self, now: Instant) -> Option<usize> {
        let n = self.queues.len();
        let i = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| self.queues[i].ready_at(now).is_some_and(|t| t <= now))?;
        self.next = i + 1;
        Some(i)
    }

    /// Hands queue `i`'s due retry, or its next batch (up to max_batch items of its
    /// blocks, across blocks if they are small), to the handler.
    fn serve(&mut self, i: usize) {
        let q = &mut self.queues[i];
        if let Some((_, retry)) = q.retries.pop_front() {
            self.submit(retry);
            self.take_resolutions();
            return;
        }
        let max_batch = self.config.max_batch.max(1);
        let mut segments = Vec::new();
        let mut taken = 0;
        while taken < max_batch {
            let Some(block) = q.blocks.front() else {
                break;
            };
            let take = (block.len() - q.offset).min(max_batch - taken);
            segments.push(Segment {
                block: block.clone(),
                from: q.offset,
                len: take,
            });
            taken += take;
            if q.offset + take == block.len() {
                q.blocks.pop_front();
                q.offset = 0;
            } else {
                q.offset += take;
            }
        }
        let lease = q.lease.clone();
        self.start_batch(lease, segments);
    }

    /// Removes the work of leases that are no longer live (abandoned, failed, ended):
    /// queued blocks and waiting retries alike (abandon and shutdown cut a backoff short).
    fn drop_dead(&mut self) {
        for q in self.queues.iter_mut().filter(|q| !q.lease.live()) {
            q.blocks.clear();
            q.offset = 0;
            let items: usize = q
                .retries
                .iter()
                .map(|(_, p)| p.submitted(p.records.len()))
                .sum();
            if items > 0 {
                log::info!(
                    "worker {}: {items} abandoned item(s) waiting for a retry not done",
                    self.id
                );
            }
            q.retries.clear();
        }
    }

    /// Waits for the next message until `deadline`, taking ack resolutions meanwhile.
    fn wait(&mut self, deadline: Instant) -> Wait {
        let (rx, acks) = (self.rx.clone(), self.acks.clone());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            select! {
                recv(rx) -> msg => return msg.map_or(Wait::Closed, Wait::Msg),
                recv(acks) -> r => {
                    if let Ok(r) = r {
                        self.on_resolution(r);
                    }
                }
                default(left) => return Wait::Timeout,
            }
        }
    }

    /// Collects more blocks (waiting up to the batch interval for a full batch), then
    /// everything already queued; true if a flush was requested meanwhile.
    fn fill(&mut self) -> bool {
        let deadline = Instant::now() + self.config.batch_interval;
        let max_batch = self.config.max_batch.max(1);
        while !self.config.batch_interval.is_zero() && self.queued() < max_batch {
            match self.wait(deadline) {
                Wait::Msg(Msg::Items(lease, block)) => self.push(lease, block),
                Wait::Msg(Msg::Flush) => {
                    self.take_queued();
                    return true;
                }
                Wait::Timeout | Wait::Closed => break,
            }
        }
        self.take_queued()
    }

    /// Items queued and not handed out, over every lease.
    fn queued(&self) -> usize {
        let q = self.queues.iter();
        q.map(|q| q.blocks.iter().map(|b| b.len()).sum::<usize>() - q.offset)
            .sum()
    }

    /// Drops the per-lease state of leases that have ended, and tells the handler (once
    /// none of the lease's batches is pending).
    fn forget_ended(&mut self) {
        if let Some(sink) = &mut self.dead_letter {
            sink.forget_ended();
        }
        self.queues
            .retain(|q| !q.blocks.is_empty() || !q.retries.is_empty());
        let mut i = 0;
        while i < self.leases.len() {
            let lease = &self.leases[i];
            if !lease.ended()
                || self.pending.values().any(|p| Arc::ptr_eq(&p.lease, lease))
                || self.queues.iter().any(|q| Arc::ptr_eq(&q.lease, lease))
            {
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

    fn close(mut self) {
        if self.watch.is_lost() {
            // Nobody will process these: their leases must not wait for them.
            let queued = self.queues.iter().map(|q| {
                let records = q.blocks.iter().flat_map(|b| b.iter().map(|i| i.record));
                (q.lease.clone(), records.skip(q.offset).collect())
            });
            let retries = self.queues.iter().flat_map(|q| &q.retries).map(|(_, p)| p);
            let pending = self.pending.values().chain(retries).map(|p| {
                (
                    p.lease.clone(),
                    (0..p.submitted(p.records.len()))
                        .map(|j| p.records[p.index(j)])
                        .collect(),
                )
            });
            let lost: Vec<_> = queued.chain(pending).collect();
            for (lease, records) in lost {
                if lease.live() {
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

    /// Hands a new batch of `lease` to the handler, then takes the resolutions that are
    /// there already (a synchronous handler's, at least).
    fn start_batch(&mut self, lease: Arc<LeaseState>, segments: Vec<Segment>) {
        self.note_lease(&lease);
        let pending = Pending {
            lease,
            segments,
            records: Vec::new(),
            subset: None,
            attempt: 0,
            started: Instant::now(),
            panicked: None,
        };
        self.submit(pending);
        self.take_resolutions();
    }

    /// Takes the ack resolutions that are there already (a synchronous handler's, at
    /// least).
    fn take_resolutions(&mut self) {
        while let Ok(r) = self.acks.try_recv() {
            self.on_resolution(r);
        }
    }

    /// Calls the handler's `submit` with the watchdog armed, and keeps the batch pending
    /// until its ack resolves.
    fn submit(&mut self, mut p: Pending) {
        // A number per submission, so an ack of an earlier one (given up on after the
        // item timeout) can never resolve a retry.
        let batch = self.next_batch;
        self.next_batch += 1;
        p.started = Instant::now();
        {
            let all = items_of(&p.segments);
            if p.records.is_empty() {
                p.records = all.iter().map(|i| i.record).collect();
            }
            let subset: Vec<Item<'_>>;
            let items = match &p.subset {
                None => &all[..],
                Some(s) => {
                    subset = s.iter().map(|&i| all[i]).collect();
                    &subset[..]
                }
            };
            let start = self.epoch.elapsed().as_millis() as u64 + 1;
            self.watch.begin(start, &p.lease);
            let ack = Ack::new(batch, self.acks_tx.clone());
            let handler = &mut self.handler;
            let lease = &p.lease.id;
            let outcome =
                panic::catch_unwind(AssertUnwindSafe(|| handler.submit(lease, items, ack)));
            self.watch.end();
            self.dirty = true;
            if let Err(payload) = outcome {
                p.panicked = Some(panic_message(&*payload));
            }
        }
        self.pending.insert(batch, p);
    }

    /// Fails the pending batches whose ack is older than the item timeout (a handler
    /// that neither resolves nor drops an ack must not hold its lease forever); a late
    /// resolution of such an ack is ignored.
    fn expire_pending(&mut self) {
        let Some(timeout) = self.config.item_timeout else {
            return;
        };
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.started.elapsed() >= timeout)
            .map(|(&batch, _)| batch)
            .collect();
        for batch in expired {
            let error = HandlerError::new(format!(
                "no acknowledgement within the item timeout of {:.3} s",
                timeout.as_secs_f64()
            ));
            self.on_resolution(Resolution {
                batch,
                result: Err(BatchError::Batch(error)),
            });
        }
    }

    /// A batch's ack resolved: report what is done, and put what failed through the
    /// failure policy.
    fn on_resolution(&mut self, r: Resolution) {
        let Some(mut p) = self.pending.remove(&r.batch) else {
            return;
        };
        let n = p.submitted(p.records.len());
        let failed: Vec<(usize, HandlerError)> = match (p.panicked.take(), r.result) {
            (Some(message), _) => {
                let e = HandlerError::new(format!("handler panicked: {message}"));
                (0..n).map(|j| (j, e.clone())).collect()
            }
            (None, Ok(())) => Vec::new(),
            (None, Err(e)) => failed_indexes(e, n),
        };
        let failed: Vec<(usize, HandlerError)> =
            failed.into_iter().map(|(j, e)| (p.index(j), e)).collect();
        self.telemetry.emit(
            Some(&p.lease.id),
            &Event::BatchHandled {
                worker: self.id,
                items: n,
                duration: p.started.elapsed(),
            },
        );
        let done = match (&p.subset, failed.is_empty()) {
            (None, true) => std::mem::take(&mut p.records),
            _ => {
                let mut is_failed = vec![false; p.records.len()];
                for (i, _) in &failed {
                    is_failed[*i] = true;
                }
                (0..n)
                    .map(|j| p.index(j))
                    .filter(|&i| !is_failed[i])
                    .map(|i| p.records[i])
                    .collect()
            }
        };
        p.lease.completed(done);
        if !failed.is_empty() {
            self.apply_policy(p, failed);
        }
    }

    /// Does what the policy says about the `failed` items (batch index, error) of `p`.
    fn apply_policy(&mut self, mut p: Pending, failed: Vec<(usize, HandlerError)>) {
        let lease = p.lease.clone();
        let all = items_of(&p.segments);
        let (first, first_error) = &failed[0];
        let first_item = describe(&all[*first]);
        match decide(&self.config.on_error, p.attempt, lease.abandoned()) {
            Decision::Drop => {
                // Abandoned work is never checkpointed: no retry, no dead letter.
                log::info!(
                    "worker {}: {} abandoned item(s) not done (first: {first_error})",
                    self.id,
                    failed.len()
                );
            }
            Decision::Retry { after, number, of } => {
                self.telemetry.emit(
                    Some(&lease.id),
                    &Event::RetryScheduled {
                        worker: self.id,
                        items: failed.len(),
                        error: format!("{first_item}: {first_error}"),
                        number,
                        of,
                        delay: after,
                    },
                );
                drop(all);
                p.attempt += 1;
                p.subset = Some(failed.iter().map(|(i, _)| *i).collect());
                // Deferred, not slept: the worker serves the other leases meanwhile; this
                // lease's later blocks wait behind it (dropped with it if the lease is
                // abandoned or failed meanwhile).
                let due = Instant::now() + after;
                match self
                    .queues
                    .iter_mut()
                    .find(|q| Arc::ptr_eq(&q.lease, &lease))
                {
                    Some(q) => q.retries.push_back((due, p)),
                    None => self.queues.push(LeaseQueue {
                        lease,
                        blocks: VecDeque::new(),
                        offset: 0,
                        retries: VecDeque::from([(due, p)]),
                    }),
                }
            }
            Decision::DeadLetter => {
                self.items_failed(&lease, &failed, &first_item);
                match self.dead_letter_items(&lease, &all, &failed, p.attempt + 1) {
                    Ok(()) => lease.completed(failed.iter().map(|(i, _)| all[*i].record).collect()),
                    Err(e) => {
                        let error = format!("{first_error}; and dead-lettering failed: {e}");
                        self.fail(&lease, &all, &failed, &first_item, error);
                    }
                }
            }
            Decision::Fail => {
                self.items_failed(&lease, &failed, &first_item);
                let error = first_error.to_string();
                self.fail(&lease, &all, &failed, &first_item, error);
            }
        }
    }

    /// Tells the telemetry that items of `lease` failed for good (no retry left).
    fn items_failed(&self, lease: &LeaseState, failed: &[(usize, HandlerError)], first: &str) {
        self.telemetry.emit(
            Some(&lease.id),
            &Event::ItemsFailed {
                worker: self.id,
                items: failed.len(),
                error: format!("{first}: {}", failed[0].1),
                retry: None,
            },
        );
    }

    /// Fails `lease` with the failed items of a batch.
    fn fail(
        &self,
        lease: &LeaseState,
        batch: &[Item],
        failed: &[(usize, HandlerError)],
        first: &str,
        error: String,
    ) {
        lease.fail(
            self.id,
            failed.iter().map(|(i, _)| batch[*i].record).collect(),
            format!("{first}: {error}"),
        );
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
                .write_json_in(&lease.id.application, &lease.id.shard, &mut buf)
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
        self.telemetry.emit(
            Some(&lease.id),
            &Event::DeadLettered {
                worker: self.id,
                items: failed.len(),
            },
        );
        Ok(())
    }
}

/// Marks the worker lost if its thread unwinds (a bug outside the handler, whose panics
/// are caught): dispatch then refuses it instead of queueing items nobody takes.
struct LostOnPanic(Arc<Watch>);

impl Drop for LostOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.set_lost();
        }
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
