//! The protocol loop: the only code that reads the daemon's lines and writes ours.
//!
//! It is deliberately boring. A reader thread turns stdin into numbered lines (any length:
//! a `processRecords` line can be tens of MiB); the loop waits on three things at once —
//! the next line, worker events, and the session's backoff timer — feeds whatever comes to
//! the [`Session`], and performs the session's outputs in order: write a message (one
//! `write` and one flush per message, from this thread only), dispatch items to the pool,
//! abandon queued work. Waiting on stdin even while draining means a daemon that goes
//! away (EOF) is noticed at once, and a line that arrives while the session is not
//! waiting for one is reported as the protocol violation it is.
//!
//! The daemon sends a line only after the status of the previous one, so whatever happens
//! between a line's last byte and its status bounds throughput. Hence, for a large
//! `processRecords` line: the reader scans its records while the bytes arrive
//! ([`Prescan`]); the loop finishes the scan, answers status at once when the batch fits
//! under the in-flight bounds ([`Session::can_acknowledge_ahead`]), and only then parses
//! and splits the records on several threads, sorting the items into one block per worker,
//! while the daemon sends the next line. A record that turns out malformed after that
//! status stops the process as before: nothing past it is ever checkpointed.
//!
//! The items of a line are not bounded by its size (a 31 KiB gzip record can hold millions
//! of lines; a line can hold thousands of such records), so they are split and dispatched
//! in *parts*: a part ends after the record at which it reaches `max(--max-in-flight,
//! 10000)` items or `max(--max-in-flight-bytes, 1 MiB)` bytes of item memory, and the next
//! part is split only once the items in flight are back under `--max-in-flight` and the
//! item memory of the parts in flight under `--max-in-flight-bytes` (meanwhile the loop
//! feeds the session completions, so checkpoints still go out). A line that fits is one
//! part, as before; the parallel split stops at the budget and keeps the prefix it made.
//! Together with the splitter's per-record bound this makes peak memory a function of the
//! settings and the longest line (README, "Memory").
//!
//! Errors carry the 1-based line number and the first bytes of the offending line.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, Receiver};

use crate::checkpoint::RecordId;
use crate::handler::HandlerFactory;
use crate::item::ItemBlock;
use crate::pool::partition;
use crate::pool::{Pool, PoolConfig, PoolError, PoolLease, WorkerEvent};
use crate::protocol::message::{
    parse_record_at, DaemonMessage, DecodeError, LineBuf, ProcessorMessage, Record,
};
use crate::protocol::scan::{scan_resumed, Prescan, ProcessRecordsLayout};
use crate::protocol::sequence::{Esn, SequenceNumber};
use crate::protocol::session::{
    Next, Output, Session, SessionConfig, SessionError, SplitBatch, Stats,
};
use crate::split::{SplitNote, Splitter};

/// A line's items are split and delivered in parts of at least this many items (or
/// `--max-in-flight`, if larger), see [`Loop::deliver_records`].
const MIN_PART_ITEMS: usize = 10_000;

/// ... and of at least this many bytes of item memory (or `--max-in-flight-bytes`).
const MIN_PART_BYTES: usize = 1 << 20;

/// A callback told the shard id once `initialize` arrives.
pub type ShardHook = Box<dyn Fn(&str) + Send>;

/// Everything the loop needs besides its streams.
pub struct DriverConfig {
    /// Session (checkpoint policy) settings.
    pub session: SessionConfig,
    /// Worker pool settings.
    pub pool: PoolConfig,
    /// How records become items.
    pub splitter: Splitter,
    /// Makes the per-worker handlers.
    pub handlers: Arc<dyn HandlerFactory>,
    /// How long to wait for workers to stop at exit.
    pub shutdown_timeout: Duration,
    /// Called once with the shard id after `initialize` (log prefixes).
    pub on_shard: Option<ShardHook>,
    /// Longest daemon line read (`--max-line-bytes`): a longer one is a protocol error as
    /// soon as this many bytes have arrived without a newline, so no input can make the
    /// reader hold more.
    pub max_line_bytes: usize,
}

// The causes are fields named `error`, not `source`: they are in the message already, and
// a `source` would print them a second time in `{:#}` (anyhow's chain).
/// Why the loop stopped with an error. The process exits non-zero; no checkpoint past
/// unprocessed items was sent.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A daemon line that is not a valid message.
    #[error("malformed daemon line {line_no}: {error} (line starts with: {prefix})")]
    Malformed {
        /// 1-based line number on stdin.
        line_no: u64,
        /// The first bytes of the line, escaped.
        prefix: String,
        /// Why it could not be decoded.
        error: DecodeError,
    },
    /// A protocol violation or a failure while handling a daemon line.
    #[error("daemon line {line_no}: {error} (line starts with: {prefix})")]
    Protocol {
        /// 1-based line number on stdin.
        line_no: u64,
        /// The first bytes of the line, escaped.
        prefix: String,
        /// What went wrong.
        error: SessionError,
    },
    /// A worker failed, or completion bookkeeping broke.
    #[error("{error} (shard {shard}; last daemon line {line_no})")]
    Work {
        /// The shard id.
        shard: String,
        /// The last line read.
        line_no: u64,
        /// What went wrong.
        error: SessionError,
    },
    /// A daemon line longer than `--max-line-bytes` (it was not read to its end).
    #[error("daemon line {line_no} is longer than --max-line-bytes ({limit} bytes) (line starts with: {prefix})")]
    LineTooLong {
        /// 1-based line number on stdin.
        line_no: u64,
        /// The bound.
        limit: usize,
        /// The first bytes of the line, escaped.
        prefix: String,
    },
    /// The pool could not start or lost a worker.
    #[error("worker pool: {0}")]
    Pool(#[from] PoolError),
    /// Reading stdin or writing stdout failed.
    #[error("protocol I/O: {0}")]
    Io(#[from] io::Error),
}

impl DriverError {
    /// Whether the daemon broke the protocol (a line that is not a message, a message the
    /// state does not allow, a record position or checkpoint reply the daemon cannot have
    /// sent), as opposed to a failure of rsmld's own work. The binary's exit code says which.
    pub fn is_protocol_violation(&self) -> bool {
        match self {
            DriverError::Malformed { .. } | DriverError::LineTooLong { .. } => true,
            DriverError::Protocol { error, .. } | DriverError::Work { error, .. } => {
                error.is_protocol_violation()
            }
            DriverError::Pool(_) | DriverError::Io(_) => false,
        }
    }
}

/// Runs one lease's protocol session over `input`/`output` until stdin EOF.
pub fn run<R, W>(config: DriverConfig, input: R, output: W) -> Result<Stats, DriverError>
where
    R: Read + Send + 'static,
    W: Write,
{
    // One spare buffer is enough (the daemon sends one line at a time); more would only
    // hold memory: with 10 MiB batches each buffer is a line of ~13 MiB.
    let (recycle, recycled) = bounded(1);
    let lines = spawn_reader(input, recycled, config.max_line_bytes);
    let mut lp = Loop {
        session: Session::new(
            config.session.clone(),
            config.splitter.clone(),
            Instant::now(),
        ),
        writer: ProtocolWriter::new(output),
        pool: None,
        workers: None,
        line_no: 0,
        last_prefix: String::new(),
        recycle,
        shard: Arc::from(""),
        split_pins: VecDeque::new(),
        lines: lines.clone(),
        pending: None,
    };
    let result = lp.run(&config, &lines);
    if let Some(lease) = lp.pool.take() {
        // Whatever is still queued is not covered by any checkpoint: drop it and go.
        lease.abandon();
    }
    if let Some(pool) = lp.workers.take() {
        if let Err(e) = pool.shutdown(config.shutdown_timeout) {
            log::error!("{e}");
        }
    }
    result.map(|()| lp.session.stats())
}

struct Loop<W: Write> {
    session: Session,
    writer: ProtocolWriter<W>,
    pool: Option<PoolLease>,
    /// The worker pool the lease is attached to (started at `initialize`).
    workers: Option<Pool>,
    line_no: u64,
    last_prefix: String,
    recycle: crossbeam_channel::Sender<Vec<u8>>,
    /// The shard id once known (items carry it).
    shard: Arc<str>,
    /// Item memory of delivered parts that may still be in flight: (id after the part's
    /// last record, heap bytes of its blocks).
    split_pins: VecDeque<(RecordId, usize)>,
    /// The reader's events, also watched while a line waits to split its next part.
    lines: Receiver<ReadEvent>,
    /// A reader event that arrived while a line was waiting to split its next part.
    pending: Option<ReadEvent>,
}

/// How much one part of a line may hold before it is delivered.
#[derive(Clone, Copy)]
struct Budget {
    items: usize,
    bytes: usize,
}

impl Budget {
    fn of(config: &DriverConfig) -> Budget {
        Budget {
            items: config.session.max_in_flight.max(MIN_PART_ITEMS),
            bytes: config.session.max_in_flight_bytes.max(MIN_PART_BYTES),
        }
    }
}

impl<W: Write> Loop<W> {
    fn run(
        &mut self,
        config: &DriverConfig,
        lines: &Receiver<ReadEvent>,
    ) -> Result<(), DriverError> {
        loop {
            self.perform_outputs()?;
            let deadline = match self.session.next() {
                Next::Exit => return Ok(()),
                Next::WorkUntil(t) => Some(t),
                Next::Message | Next::Work => None,
            };
            if let Some(ev) = self.pending.take() {
                self.on_read_event(config, ev)?;
                continue;
            }
            let events = self
                .pool
                .as_ref()
                .map_or_else(never, |p| p.events().clone());
            let timer = deadline.map_or_else(never, crossbeam_channel::at);
            select! {
                recv(lines) -> ev => self.on_read_event(config, ev.unwrap_or(ReadEvent::Eof))?,
                recv(events) -> ev => self.on_pool_recv(ev)?,
                recv(timer) -> _ => self.on_timer()?,
            }
        }
    }

    fn on_read_event(&mut self, config: &DriverConfig, ev: ReadEvent) -> Result<(), DriverError> {
        match ev {
            ReadEvent::Line(bytes, len, prescan) => self.on_line(config, bytes, len, prescan),
            ReadEvent::Eof => {
                self.session.handle_eof();
                Ok(())
            }
            ReadEvent::Error(e) => Err(DriverError::Io(e)),
            ReadEvent::TooLong(head) => Err(DriverError::LineTooLong {
                line_no: self.line_no + 1,
                limit: config.max_line_bytes,
                prefix: prefix_of(&head),
            }),
        }
    }

    fn on_line(
        &mut self,
        config: &DriverConfig,
        bytes: Vec<u8>,
        filled: usize,
        prescan: Prescan,
    ) -> Result<(), DriverError> {
        self.line_no += 1;
        let len = trim_line(&bytes[..filled]).len();
        if bytes[..len].iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.last_prefix = prefix_of(&bytes[..len]);
        // Record payloads will point into the line rather than be copied out of it; the
        // buffer returns to the reader when the last of them is dropped.
        // Only buffers up to 4 MiB are recycled: a spare 13 MiB buffer would be held for
        // the next line while a batch is still in flight, for little gain (its page-fault
        // cost is spread over ten thousand records).
        let recycle = (bytes.capacity() <= 4 << 20).then(|| self.recycle.clone());
        let line = Arc::new(LineBuf::with_len(bytes, filled, recycle));
        if let Some(layout) = self.scan_large(&line, len, prescan) {
            // Completions that already arrived count before the capacity check.
            self.drain_events()?;
            let ahead = self.session.can_acknowledge_ahead(layout.records.len());
            if ahead {
                log::trace!("line {}: acknowledged before decoding", self.line_no);
                self.session
                    .begin_records_ahead(Instant::now())
                    .map_err(|source| self.protocol_error(source))?;
                // Usually `status`: the daemon sends the next line while this one decodes.
                self.perform_outputs()?;
            }
            self.await_split_capacity(config)?;
            if self.session.next() == Next::Exit {
                return Ok(());
            }
            match self.map_in_parallel(config, &line, len, &layout) {
                Some((batch, true)) => return self.deliver_whole(batch, ahead),
                // Too many items for one part: deliver the records split so far, and the
                // rest in parts.
                Some((mut batch, false)) if ahead || self.session.is_idle() => {
                    let from = batch.records.len();
                    batch.line_bytes = 0;
                    let bytes = batch_heap_bytes(&batch);
                    self.deliver_part(batch, (false, len), ahead, bytes)?;
                    self.perform_outputs()?;
                    return self.decode_and_deliver(config, &line, len, from, ahead);
                }
                _ if ahead => return self.decode_and_deliver(config, &line, len, 0, true),
                _ => {}
            }
        }
        let msg = self.decode(&line, len)?;
        let initialize = matches!(msg, DaemonMessage::Initialize { .. });
        let result = match msg {
            // Payloads point into this line: the session accounts for the bytes it pins.
            DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest,
            } if !self.shard.is_empty() => {
                return self.deliver_records(
                    config,
                    &records,
                    millis_behind_latest,
                    (&line, len),
                    (0, false),
                );
            }
            msg => self.session.handle_message(msg, Instant::now()),
        };
        result.map_err(|source| self.protocol_error(source))?;
        if initialize {
            let shard = self.session.shard_id().to_owned();
            self.shard = Arc::from(shard.as_str());
            if let Some(f) = &config.on_shard {
                f(&shard);
            }
            let lease = crate::telemetry::LeaseId::new("", &shard);
            let sink = Arc::new(crate::telemetry::LogSink);
            let pool = Pool::start_for_lease(&config.pool, config.handlers.as_ref(), sink, &lease)?;
            self.pool = Some(pool.attach(lease));
            self.workers = Some(pool);
            log::info!(
                "started {} workers (max in flight {}, checkpoint interval {:.3} s)",
                config.pool.workers,
                config.session.max_in_flight,
                config.session.checkpoint_interval.as_secs_f64()
            );
        }
        Ok(())
    }

    /// The layout of a large `processRecords` line, when the structural scan accepts it
    /// and it has enough records to be worth decoding on several threads.
    fn scan_large<'a>(
        &self,
        line: &'a [u8],
        len: usize,
        prescan: Prescan,
    ) -> Option<ProcessRecordsLayout<'a>> {
        const MIN_RECORDS: usize = 256;
        if len < 64 * 1024 || self.pool.is_none() {
            return None;
        }
        let Some(layout) = scan_resumed(&line[..len], prescan) else {
            log::debug!(
                "line {}: structural scan declined; decoding it on one thread",
                self.line_no
            );
            return None;
        };
        (layout.records.len() >= MIN_RECORDS).then_some(layout)
    }

    /// Decodes a whole line on this thread; errors name the line.
    fn decode(&self, line: &Arc<LineBuf>, len: usize) -> Result<DaemonMessage, DriverError> {
        DaemonMessage::decode_shared(line, len).map_err(|source| DriverError::Malformed {
            line_no: self.line_no,
            prefix: self.last_prefix.clone(),
            error: source,
        })
    }

    /// Decodes a scanned `processRecords` line on this thread (the fallback when a record
    /// does not parse, so the full decoder names the error, or when its items are too many
    /// to split at once) and delivers its records from index `from` on in parts (those
    /// before `from` are delivered already). `ahead`: the line was started with
    /// [`Session::begin_records_ahead`].
    fn decode_and_deliver(
        &mut self,
        config: &DriverConfig,
        line: &Arc<LineBuf>,
        len: usize,
        from: usize,
        ahead: bool,
    ) -> Result<(), DriverError> {
        match self.decode(line, len)? {
            DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest,
            } => self.deliver_records(
                config,
                &records,
                millis_behind_latest,
                (line, len),
                (from, ahead),
            ),
            // The scan only accepts lines whose action is processRecords.
            other => Err(DriverError::Malformed {
                line_no: self.line_no,
                prefix: self.last_prefix.clone(),
                error: DecodeError::UnknownAction(other.action().to_string()),
            }),
        }
    }

    /// A batch split in one go: delivered as the line's only part.
    fn deliver_whole(&mut self, mut batch: SplitBatch, ahead: bool) -> Result<(), DriverError> {
        let bytes = batch_heap_bytes(&batch);
        let line_bytes = std::mem::take(&mut batch.line_bytes);
        self.deliver_part(batch, (true, line_bytes), ahead, bytes)
    }

    /// Splits and delivers the records of one `processRecords` line from index `from` on
    /// (of `line`, whose first `len` bytes are the line; the payloads point into it) in
    /// parts, so that the
    /// items in memory stay bounded whatever the records hold: before each part the items
    /// in flight must be under `--max-in-flight` and their memory under
    /// `--max-in-flight-bytes`, and a part ends after the record that reaches
    /// [`Budget`]. A line whose items fit is one part, as before. `ahead`: the line
    /// was started with [`Session::begin_records_ahead`]; otherwise the last part starts
    /// the action (so `status` still waits for the bounds, and `--max-in-flight 0` still
    /// answers only when every item of the line is done).
    fn deliver_records(
        &mut self,
        config: &DriverConfig,
        records: &[Record],
        millis_behind_latest: Option<i64>,
        (line, len): (&Arc<LineBuf>, usize),
        (mut from, ahead): (usize, bool),
    ) -> Result<(), DriverError> {
        if !ahead && !self.session.is_idle() {
            // Not the time for a batch: the session names the violation.
            let batch = SplitBatch {
                first_id: self.session.tracker().next_id(),
                ..SplitBatch::default()
            };
            return self
                .session
                .handle_batch(batch, Instant::now())
                .map_err(|source| self.protocol_error(source));
        }
        let budget = Budget::of(config);
        loop {
            self.await_split_capacity(config)?;
            if self.session.next() == Next::Exit {
                // Stdin closed meanwhile: the rest is never delivered, nor checkpointed.
                return Ok(());
            }
            let (batch, bytes) = self.split_part(config, &records[from..], budget, line);
            from += batch.records.len();
            let last = from == records.len();
            let batch = SplitBatch {
                millis_behind_latest,
                ..batch
            };
            self.deliver_part(batch, (last, len), ahead, bytes)?;
            if last {
                return Ok(());
            }
            // Dispatch this part before splitting the next.
            self.perform_outputs()?;
        }
    }

    /// Hands one part of a line to the session: the last part carries the line's length
    /// (the line stays pinned until its last record is done) and, unless the line was
    /// acknowledged ahead, starts the action.
    fn deliver_part(
        &mut self,
        mut batch: SplitBatch,
        (last, line_bytes): (bool, usize),
        ahead: bool,
        heap_bytes: usize,
    ) -> Result<(), DriverError> {
        if last {
            batch.line_bytes = line_bytes;
        } else {
            log::debug!(
                "line {}: delivering {} records ({} items) as one part; the rest follows as the items in flight allow",
                self.line_no,
                batch.records.len(),
                batch.blocks.iter().map(|(_, b)| b.len()).sum::<usize>()
            );
        }
        let now = Instant::now();
        let result = if last && !ahead {
            self.session.handle_batch(batch, now)
        } else {
            self.session.deliver_ahead(batch, now)
        };
        result.map_err(|source| self.protocol_error(source))?;
        self.split_pins
            .push_back((self.session.tracker().next_id(), heap_bytes));
        Ok(())
    }

    /// Waits (feeding the session completions and its backoff timer) until the items in
    /// flight are under both bounds, so that the next part of a line may be split. Stdin
    /// is watched meanwhile: EOF ends the session at once (as it does anywhere else), and
    /// a line (the daemon's next one, once status went out) waits in `pending`.
    fn await_split_capacity(&mut self, config: &DriverConfig) -> Result<(), DriverError> {
        let mut flushed = false;
        loop {
            self.drain_events()?;
            self.perform_outputs()?;
            if !self.over_split_bounds(config) {
                return Ok(());
            }
            let Some(pool) = &self.pool else {
                return Ok(());
            };
            if !flushed {
                // Workers should not sit on partial batches while we wait for them.
                pool.flush();
                flushed = true;
            }
            let events = pool.events().clone();
            let timer = match self.session.next() {
                Next::WorkUntil(t) => crossbeam_channel::at(t),
                _ => never(),
            };
            let lines = match self.pending {
                None => self.lines.clone(),
                Some(_) => never(),
            };
            select! {
                recv(lines) -> ev => match ev.unwrap_or(ReadEvent::Eof) {
                    ReadEvent::Eof => {
                        self.session.handle_eof();
                        return Ok(());
                    }
                    ev => self.pending = Some(ev),
                },
                recv(events) -> ev => self.on_pool_recv(ev)?,
                recv(timer) -> _ => self.on_timer()?,
            }
        }
    }

    /// Whether the items in flight exceed `--max-in-flight`, or the memory of the parts
    /// they belong to exceeds `--max-in-flight-bytes` (an upper bound: a part counts until
    /// every record up to its last one is done).
    fn over_split_bounds(&mut self, config: &DriverConfig) -> bool {
        let oldest = self.session.tracker().oldest_unfinished();
        while self
            .split_pins
            .front()
            .is_some_and(|(end, _)| *end <= oldest)
        {
            self.split_pins.pop_front();
        }
        let bytes: usize = self.split_pins.iter().map(|(_, b)| b).sum();
        self.session.tracker().in_flight() > config.session.max_in_flight
            || bytes > config.session.max_in_flight_bytes
    }

    /// Splits records from the front of `records` into one block per worker, numbered from
    /// the tracker's next id, until the part reaches `budget` (at least one record); the
    /// part and the heap bytes of its blocks.
    fn split_part(
        &self,
        config: &DriverConfig,
        records: &[Record],
        budget: Budget,
        line: &Arc<LineBuf>,
    ) -> (SplitBatch, usize) {
        let workers = self.pool.as_ref().map_or(1, PoolLease::workers);
        let first_id = self.session.tracker().next_id();
        let mut blocks: Vec<ItemBlock> = (0..workers)
            .map(|_| ItemBlock::new(Some(line.clone())))
            .collect();
        let mut batch = SplitBatch {
            first_id,
            ..SplitBatch::default()
        };
        let (mut items, mut bytes) = (0usize, 0usize);
        for (i, record) in records.iter().enumerate() {
            let id = RecordId(first_id.0 + i as u64);
            let n = config
                .splitter
                .split_into(&self.shard, record.into(), id, &mut |item| {
                    blocks[route(item, workers)].push(item)
                });
            batch.records.push((record.esn(), n));
            items += n as usize;
            if n > 1 || i % 64 == 63 {
                bytes = blocks.iter().map(ItemBlock::heap_bytes).sum();
            }
            if items >= budget.items || bytes >= budget.bytes {
                break;
            }
        }
        let bytes = blocks.iter().map(ItemBlock::heap_bytes).sum();
        batch.blocks = blocks
            .into_iter()
            .enumerate()
            .map(|(w, b)| (Some(w), b))
            .collect();
        (batch, bytes)
    }

    /// A large `processRecords` line is decoded and split on several threads: the scan
    /// found the records, chunks of them are parsed and split in parallel, and the results
    /// are concatenated in order: `(batch, true)`. When the items reach one part's
    /// [`Budget`], every chunk stops and the batch holds the records split up to the first
    /// gap, a prefix of the line: `(batch, false)`; the rest is then decoded and delivered
    /// in parts. `None` (a record parse declines) means: use the ordinary decoder, which
    /// also reports errors. Problems found while splitting are reported only for records
    /// in the batch, so a record split again later warns once.
    fn map_in_parallel(
        &self,
        config: &DriverConfig,
        line: &Arc<LineBuf>,
        len: usize,
        layout: &ProcessRecordsLayout<'_>,
    ) -> Option<(SplitBatch, bool)> {
        use rayon::prelude::*;
        let chunk = (layout.records.len() / (rayon::current_num_threads().max(1) * 4)).max(64);
        let shard = &*self.shard;
        let splitter = &config.splitter;
        let workers = self.pool.as_ref().map_or(1, PoolLease::workers);
        let first_id = self.session.tracker().next_id().0;
        let budget = Budget::of(config);
        let (items, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        // Each chunk parses its records and sorts their items into one block per worker
        // (so a block's items are dropped by one thread only).
        let over = std::sync::atomic::AtomicBool::new(false);
        type Notes = Vec<(String, i64, SplitNote)>;
        // A chunk's records (fewer than its ranges once the budget is exhausted), blocks
        // and notes.
        type Part = (Vec<(Esn, u32)>, Vec<ItemBlock>, Notes);
        let parts: Vec<Option<Part>> = layout
            .records
            .par_chunks(chunk)
            .enumerate()
            .map(|(c, ranges)| {
                let mut records = Vec::with_capacity(ranges.len());
                let mut blocks: Vec<ItemBlock> = (0..workers)
                    .map(|_| {
                        ItemBlock::with_capacity(Some(line.clone()), ranges.len() / workers + 8)
                    })
                    .collect();
                let mut previous: Option<SequenceNumber> = None;
                let mut notes = Vec::new();
                let mut held = 0;
                for (k, range) in ranges.iter().enumerate() {
                    if over.load(Ordering::Relaxed) {
                        break;
                    }
                    let text = match layout.record(&line[..], c * chunk + k) {
                        Some(text) => text,
                        None => parse_record_at(line, range.clone()).ok()?,
                    };
                    let seq =
                        SequenceNumber::parse_reusing(&text.sequence_number, previous.as_ref())
                            .ok()?;
                    let id = RecordId(first_id + (c * chunk + k) as u64);
                    let (n, note) = splitter.split_into_quiet((&text).into(), id, &mut |item| {
                        blocks[route(item, workers)].push(item)
                    });
                    if let Some(note) = note {
                        let sub = text.sub_sequence_number.unwrap_or(0);
                        notes.push((text.sequence_number.to_string(), sub, note));
                    }
                    let total_items = items.fetch_add(n as usize, Ordering::Relaxed) + n as usize;
                    if n > 1 || k % 64 == 63 {
                        let now: usize = blocks.iter().map(ItemBlock::heap_bytes).sum();
                        bytes.fetch_add(now - held, Ordering::Relaxed);
                        held = now;
                    }
                    records.push((
                        Esn::new(seq.clone(), text.sub_sequence_number.unwrap_or(0)),
                        n,
                    ));
                    previous = Some(seq);
                    if total_items > budget.items || bytes.load(Ordering::Relaxed) > budget.bytes {
                        // Enough for one part: every chunk stops; the records after the
                        // split prefix are split again, in parts.
                        over.store(true, Ordering::Relaxed);
                    }
                }
                Some((records, blocks, notes))
            })
            .collect();
        let mut batch = SplitBatch {
            records: Vec::with_capacity(layout.records.len()),
            first_id: RecordId(first_id),
            blocks: Vec::with_capacity(parts.len() * workers),
            millis_behind_latest: layout.millis_behind_latest,
            line_bytes: len,
        };
        let mut notes = Vec::new();
        let mut complete = true;
        for (c, part) in parts.into_iter().enumerate() {
            let (mut records, blocks, mut part_notes) = part?;
            if !complete {
                // After a gap: split again later (its notes are dropped with it).
                continue;
            }
            let chunk_len = layout.records.len().min((c + 1) * chunk) - c * chunk;
            complete = records.len() == chunk_len;
            batch.records.append(&mut records);
            batch
                .blocks
                .extend(blocks.into_iter().enumerate().map(|(w, b)| (Some(w), b)));
            notes.append(&mut part_notes);
        }
        for (seq, sub, note) in &notes {
            splitter.report(shard, seq, *sub, note);
        }
        Some((batch, complete))
    }

    /// Feeds the session every worker event that has already arrived.
    fn drain_events(&mut self) -> Result<(), DriverError> {
        let Some(events) = self.pool.as_ref().map(|p| p.events().clone()) else {
            return Ok(());
        };
        while let Ok(ev) = events.try_recv() {
            self.on_event(ev)?;
        }
        Ok(())
    }

    fn protocol_error(&self, source: SessionError) -> DriverError {
        DriverError::Protocol {
            line_no: self.line_no,
            prefix: self.last_prefix.clone(),
            error: source,
        }
    }

    /// What the pool's event channel gave: an event, or its end (a worker is gone).
    fn on_pool_recv(
        &mut self,
        ev: Result<WorkerEvent, crossbeam_channel::RecvError>,
    ) -> Result<(), DriverError> {
        match ev {
            Ok(ev) => self.on_event(ev),
            Err(_) => Err(DriverError::Pool(PoolError::WorkerGone(0))),
        }
    }

    /// The session's deadline passed (a checkpoint retry, the interval).
    fn on_timer(&mut self) -> Result<(), DriverError> {
        let r = self.session.handle_timeout(Instant::now());
        r.map_err(|source| self.work_error(source))
    }

    fn on_event(&mut self, ev: WorkerEvent) -> Result<(), DriverError> {
        let now = Instant::now();
        let r = match ev {
            WorkerEvent::Completed(ids) => self.session.handle_completed(&ids, now),
            WorkerEvent::Failed {
                worker,
                records,
                error,
            } => self.session.handle_failed(worker, &records, error),
        };
        r.map_err(|source| self.work_error(source))
    }

    fn perform_outputs(&mut self) -> Result<(), DriverError> {
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Send(msg) => self.writer.send(&msg)?,
                Output::Dispatch(items) => self.dispatch(items)?,
                Output::Abandon => {
                    if let Some(pool) = &self.pool {
                        pool.abandon();
                    }
                }
                Output::Flush => {
                    if let Some(pool) = &self.pool {
                        pool.flush();
                    }
                }
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, blocks: Vec<(Option<usize>, ItemBlock)>) -> Result<(), DriverError> {
        let Some(pool) = &self.pool else {
            // Invariant: the session only dispatches after initialize, which starts the pool.
            unreachable!("dispatch before the pool started");
        };
        let events = pool.events().clone();
        if let Err(e) = pool.dispatch(blocks) {
            // A worker stopped: its failure event explains why; report that instead.
            while let Ok(ev) = events.try_recv() {
                if let WorkerEvent::Failed { .. } = ev {
                    return self.on_event(ev);
                }
                self.on_event(ev)?;
            }
            return Err(e.into());
        }
        Ok(())
    }

    fn work_error(&self, source: SessionError) -> DriverError {
        DriverError::Work {
            shard: self.session.shard_id().to_owned(),
            line_no: self.line_no,
            error: source,
        }
    }
}

/// The worker an item goes to, out of `workers`.
fn route(item: &crate::item::Item<'_>, workers: usize) -> usize {
    if workers == 1 {
        0
    } else {
        partition(item.partition_key.as_bytes(), workers)
    }
}

/// Heap bytes of a batch's blocks (see [`ItemBlock::heap_bytes`]).
fn batch_heap_bytes(batch: &SplitBatch) -> usize {
    batch.blocks.iter().map(|(_, b)| b.heap_bytes()).sum()
}

/// Writes protocol messages: compact ASCII JSON, one line, one write and one flush each.
pub struct ProtocolWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> ProtocolWriter<W> {
    /// Wraps the protocol output (stdout, or the private duplicate of it).
    pub fn new(out: W) -> Self {
        ProtocolWriter {
            out,
            buf: Vec::with_capacity(256),
        }
    }

    /// Writes and flushes one message.
    pub fn send(&mut self, msg: &ProcessorMessage) -> io::Result<()> {
        self.buf.clear();
        crate::json::write_ascii(&mut self.buf, msg).map_err(io::Error::other)?;
        self.buf.push(b'\n');
        log::trace!("-> {}", String::from_utf8_lossy(&self.buf).trim_end());
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }
}

enum ReadEvent {
    /// A line: the first `len` bytes of the buffer (the rest is initialized spare room),
    /// and its records as far as they were found while it arrived.
    Line(Vec<u8>, usize, Prescan),
    Eof,
    Error(io::Error),
    /// A line went past the bound without a newline: its first bytes.
    TooLong(Vec<u8>),
}

/// Starts the stdin reader. It reads straight into line buffers (no intermediate
/// buffer), taking them back from `recycled` when the records that pointed into them are
/// gone; bytes after a newline (the daemon never pipelines, so rarely any) start the next
/// line. A buffer keeps its length (all of it initialized) when it is recycled, and the
/// line is only its first bytes: so a recycled buffer is never zeroed again before a read.
fn spawn_reader<R: Read + Send + 'static>(
    mut input: R,
    recycled: Receiver<Vec<u8>>,
    max_line: usize,
) -> Receiver<ReadEvent> {
    // One line of look-ahead at most: the daemon never pipelines anyway.
    let (tx, rx) = bounded(1);
    let spawned = std::thread::Builder::new()
        .name("rsmld-stdin".into())
        .spawn(move || {
            let mut carry: Vec<u8> = Vec::new();
            let mut last_len = 0usize;
            loop {
                let mut line = recycled.try_recv().unwrap_or_default();
                // Headroom over the last line so that a similar line never has to grow
                // (growing a multi-MiB buffer doubles it).
                line.reserve((last_len + last_len / 8 + 64 * 1024).saturating_sub(line.len()));
                if line.len() < carry.len() {
                    line.resize(carry.len(), 0);
                }
                line[..carry.len()].copy_from_slice(&carry);
                let mut filled = carry.len();
                carry.clear();
                let mut prescan = Prescan::default();
                let read = read_line(
                    &mut input,
                    &mut line,
                    &mut filled,
                    &mut carry,
                    &mut prescan,
                    max_line,
                );
                let ev = match read {
                    Ok(true) if filled > max_line => {
                        ReadEvent::TooLong(line[..filled.min(256)].to_vec())
                    }
                    Ok(true) => {
                        last_len = filled;
                        ReadEvent::Line(line, filled, prescan)
                    }
                    Ok(false) if filled == 0 => ReadEvent::Eof,
                    Ok(false) if filled > max_line => {
                        ReadEvent::TooLong(line[..filled.min(256)].to_vec())
                    }
                    // A last line without a newline is still a line.
                    Ok(false) => ReadEvent::Line(line, filled, prescan),
                    Err(e) => ReadEvent::Error(e),
                };
                let stop = !matches!(ev, ReadEvent::Line(..));
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        let (tx, rx) = bounded(1);
        let _ = tx.send(ReadEvent::Error(e));
        return rx;
    }
    rx
}

/// Reads into `line` after its first `filled` bytes (which may hold carried-over bytes)
/// until they hold a newline; `filled` then ends the line and the bytes after the newline
/// move to `carry`. Bytes of `line` after `filled` are spare room (initialized, so reads
/// need no zeroing). `prescan` scans the line's records as they arrive. Ok(false) at EOF.
/// Past `max_line` bytes without a newline it stops reading and returns Ok(true) with
/// `filled` over the bound (the caller refuses the line): memory stays bounded.
fn read_line<R: Read>(
    input: &mut R,
    line: &mut Vec<u8>,
    filled: &mut usize,
    carry: &mut Vec<u8>,
    prescan: &mut Prescan,
    max_line: usize,
) -> io::Result<bool> {
    let mut scanned = 0;
    loop {
        if *filled > max_line && memchr::memchr(b'\n', &line[scanned..*filled]).is_none() {
            return Ok(true);
        }
        if let Some(pos) = memchr::memchr(b'\n', &line[scanned..*filled]) {
            let end = scanned + pos + 1;
            prescan.advance(&line[..end - 1]);
            carry.extend_from_slice(&line[end..*filled]);
            *filled = end;
            return Ok(true);
        }
        prescan.advance(&line[..*filled]);
        scanned = *filled;
        if line.len() - *filled < 64 * 1024 {
            // Zero only what the next reads can fill (a pipe hands over its size at most),
            // within the capacity while it lasts (a buffer over 4 MiB is not recycled).
            let spare = line.capacity() - line.len();
            let grow = if spare >= 64 * 1024 {
                spare.min(1 << 20)
            } else {
                line.len().clamp(64 * 1024, 1 << 20)
            };
            line.resize(line.len() + grow, 0);
        }
        match input.read(&mut line[*filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn trim_line(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && (bytes[end - 1] == b'\n' || bytes[end - 1] == b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

/// The first bytes of a line, printable and escaped, for error messages.
fn prefix_of(line: &[u8]) -> String {
    const MAX: usize = 120;
    let head = &line[..line.len().min(MAX)];
    let mut s: String = head.escape_ascii().to_string();
    if line.len() > MAX {
        s.push_str(&format!("... ({} bytes)", line.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_and_printable() {
        assert_eq!(prefix_of(b"{\"a\":\x01}"), "{\\\"a\\\":\\x01}");
        let long = vec![b'x'; 500];
        let p = prefix_of(&long);
        assert!(p.starts_with("xxxx") && p.ends_with("... (500 bytes)"));
    }

    #[test]
    fn trims_cr_lf() {
        assert_eq!(trim_line(b"{}\r\n"), b"{}");
        assert_eq!(trim_line(b"{}"), b"{}");
    }
}
