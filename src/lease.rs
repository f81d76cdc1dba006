//! One lease: the select loop that connects a protocol stream to the shared pool.
//!
//! It is deliberately boring. The codec's reader thread turns the input into numbered
//! lines (any length: a `processRecords` line can be tens of MiB); the loop waits on three
//! things at once — the next line, worker events, and the session's backoff timer — feeds
//! whatever comes to the [`Session`], maps admitted records into per-worker blocks
//! ([`Mapper`]) and dispatches them, and performs the session's outputs in order: write a
//! message (one `write` and one flush per message, from this thread only), tell the
//! telemetry sink, abandon queued work. Waiting on the input even while draining means a
//! daemon that goes away (EOF) is noticed at once, and a line that arrives while the
//! session is not waiting for one is reported as the protocol violation it is.
//!
//! The daemon sends a line only after the status of the previous one, so whatever happens
//! between a line's last byte and its status bounds throughput. Hence, for a large
//! `processRecords` line: the reader scans its records while the bytes arrive
//! ([`Prescan`]); the loop finishes the scan and gives the session the line's head asking
//! to acknowledge it ahead ([`RecordsHead::ahead`]): when the batch fits under the
//! in-flight bounds, status goes out at once, and only then are the records parsed and
//! split on several threads, while the daemon sends the next line. A record that turns out
//! malformed after that status stops the process as before: nothing past it is ever
//! checkpointed.
//!
//! The items of a line are not bounded by its size (a 31 KiB gzip record can hold millions
//! of lines; a line can hold thousands of such records), so they are mapped and dispatched
//! in *parts* ([`crate::protocol::budget::PartBudget`]), and the next part is mapped only
//! once the session says the items in flight are back under the bounds
//! ([`Session::may_map_more`]; meanwhile the loop feeds the session completions, so
//! checkpoints still go out). A line that fits is one part. Together with the splitter's
//! per-record bound this makes peak memory a function of the settings and the longest line
//! (README, "Memory").
//!
//! Errors carry the 1-based line number and the first bytes of the offending line.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, never, select, Receiver};

use crate::codec::decode::{DaemonMessage, DecodeError};
use crate::codec::payload::{LineBuf, Record};
use crate::codec::reader::{prefix_of, spawn_reader, trim_line, ReadEvent};
use crate::codec::scan::{scan_resumed, Prescan, ProcessRecordsLayout};
use crate::codec::writer::ProtocolWriter;
use crate::pipeline::item::ItemBlock;
use crate::pipeline::mapper::{Mapper, Part};
use crate::pipeline::share::MapperShare;
use crate::pipeline::split::Splitter;
use crate::pool::{PoolError, PoolLease, WorkerEvent};
use crate::protocol::session::SessionConfig;
use crate::protocol::session::{
    Admission, Next, Output, RecordsHead, Session, SessionError, Stats,
};
use crate::telemetry::{Event, InputClosed, LeaseEnd, LeaseId, Sink};

// The causes are fields named `error`, not `source`: they are in the message already, and
// a `source` would print them a second time in `{:#}` (anyhow's chain).
/// Why the loop stopped with an error. The process exits non-zero; no checkpoint past
/// unprocessed items was sent.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
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

impl LeaseError {
    /// Whether the daemon broke the protocol (a line that is not a message, a message the
    /// state does not allow, a record position or checkpoint reply the daemon cannot have
    /// sent), as opposed to a failure of rsmld's own work. The binary's exit code says which.
    pub fn is_protocol_violation(&self) -> bool {
        match self {
            LeaseError::Malformed { .. } | LeaseError::LineTooLong { .. } => true,
            LeaseError::Protocol { error, .. } | LeaseError::Work { error, .. } => {
                error.is_protocol_violation()
            }
            LeaseError::Pool(_) | LeaseError::Io(_) => false,
        }
    }
}

/// What a lease needs from the runtime it runs on ([`crate::runtime::Runtime`]): its
/// settings, the telemetry sink, and a handle on the shared pool. A trait, so that the
/// lease does not depend on how the runtime holds them (and the runtime, which starts
/// leases, stays the layer above).
pub trait Host: Sync {
    /// Session settings for every lease.
    fn session_config(&self) -> &SessionConfig;
    /// How records become items.
    fn splitter(&self) -> &Splitter;
    /// Longest daemon line read (`--max-line-bytes`).
    fn max_line_bytes(&self) -> usize;
    /// Where events go.
    fn sink(&self) -> &Arc<dyn Sink>;
    /// Attaches `lease` to the shared pool.
    fn attach(&self, lease: &LeaseId) -> Result<PoolLease, PoolError>;
    /// The overlap slots its leases share, if they are bounded (a host server's).
    fn overlap(&self) -> Option<&Overlap> {
        None
    }
    /// How its leases share the mapper threads.
    fn mapper_share(&self) -> &MapperShare;
}

/// How many leases of a host may overlap a batch with the next one at once.
///
/// A lease *overlaps* when it answers `status` while its items are still in flight (after
/// decoding them, or before: acknowledged ahead), so that the daemon sends the next line
/// meanwhile. That keeps a lease's workers busy across the daemon's round trip, and costs
/// a second line in memory. On a host server the workers are shared: once as many leases
/// overlap as there are workers (with some slack for the time a lease spends on its next
/// line), the workers never wait for a round trip, and each further overlapping lease
/// only holds another line. So a lease overlaps only while it holds one of these slots
/// (`runtime::OVERLAP_PER_WORKER` per worker); without one it answers each batch once its
/// items are done. Slots are taken first come and held while the lease has items in flight;
/// progress stays fair either way (the workers serve leases round robin).
#[derive(Debug)]
pub struct Overlap {
    free: AtomicUsize,
}

impl Overlap {
    /// `slots` slots, all free.
    pub fn new(slots: usize) -> Self {
        Overlap {
            free: AtomicUsize::new(slots),
        }
    }

    /// Takes a slot if one is free.
    fn try_take(&self) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives a slot back.
    fn give_back(&self) {
        self.free.fetch_add(1, Ordering::AcqRel);
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.free.load(Ordering::Acquire)
    }
}

/// One lease's loop; see the module docs.
pub struct Lease<'rt, W: Write> {
    rt: &'rt dyn Host,
    session: Session,
    writer: ProtocolWriter<W>,
    /// This lease's handle on the runtime's pool (attached at `initialize`).
    pool: Option<PoolLease>,
    /// The lease once `initialize` named it (events carry it).
    lease: Option<LeaseId>,
    /// The application (or stream) this lease belongs to, when the host knows it (a
    /// server's attach names it); empty in child mode.
    application: String,
    /// The attachment's serial ([`LeaseId::serial`]; 0 in child mode).
    serial: u64,
    line_no: u64,
    last_prefix: String,
    recycle: crossbeam_channel::Sender<Vec<u8>>,
    /// The reader's events, also watched while a line waits to map its next part.
    lines: Receiver<ReadEvent>,
    /// A reader event that arrived while a line was waiting to map its next part.
    pending: Option<ReadEvent>,
    /// How the lease ends if its input closes after the final status (from its events).
    end: LeaseEnd,
    /// Whether this lease holds one of the host's [`Overlap`] slots.
    overlapping: bool,
    /// This lease's token in the host's [`MapperShare`].
    mapper_token: u64,
}

impl<'rt, W: Write> Lease<'rt, W> {
    /// Runs one lease's protocol session over `input`/`output` until its input ends.
    pub fn run<R>(rt: &'rt dyn Host, input: R, output: W) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
    {
        Self::run_for(rt, "", input, output)
    }

    /// [`Lease::run`] for a lease of `application` (its [`LeaseId`] names it, so two
    /// applications with the same shard ids never mix).
    pub fn run_for<R>(
        rt: &'rt dyn Host,
        application: &str,
        input: R,
        output: W,
    ) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
    {
        Self::run_attached(rt, application, 0, input, output)
    }

    /// [`Lease::run_for`] as attachment `serial` of a host server ([`LeaseId::serial`]).
    pub fn run_attached<R>(
        rt: &'rt dyn Host,
        application: &str,
        serial: u64,
        input: R,
        output: W,
    ) -> Result<Stats, LeaseError>
    where
        R: Read + Send + 'static,
    {
        // One spare buffer is enough (the daemon sends one line at a time); more would only
        // hold memory: with 10 MiB batches each buffer is a line of ~13 MiB.
        let (recycle, recycled) = bounded(1);
        let lines = spawn_reader(input, recycled, rt.max_line_bytes());
        let mut lease = Lease {
            rt,
            session: Session::new(rt.session_config().clone(), Instant::now()),
            writer: ProtocolWriter::new(output),
            pool: None,
            lease: None,
            application: application.to_owned(),
            serial,
            line_no: 0,
            last_prefix: String::new(),
            recycle,
            lines,
            pending: None,
            end: LeaseEnd::Eof,
            overlapping: false,
            mapper_token: rt.mapper_share().token(),
        };
        let result = lease.select_loop();
        lease.leave_overlap();
        if let Some(pool) = lease.pool.take() {
            // Whatever is still queued is not covered by any checkpoint: drop it and go.
            pool.abandon();
        }
        if lease.lease.is_some() {
            let end = if result.is_err() {
                LeaseEnd::Failed
            } else {
                lease.end
            };
            lease.emit(&Event::LeaseEnded { end });
        }
        result.map(|()| lease.session.stats())
    }

    fn select_loop(&mut self) -> Result<(), LeaseError> {
        loop {
            self.perform_outputs()?;
            if self.overlapping && self.session.tracker().in_flight() == 0 {
                self.leave_overlap();
            }
            let deadline = match self.session.next() {
                Next::Exit => return Ok(()),
                Next::WorkUntil(t) => Some(t),
                Next::Message | Next::Work => None,
            };
            if let Some(ev) = self.pending.take() {
                self.on_read_event(ev)?;
                continue;
            }
            let events = self
                .pool
                .as_ref()
                .map_or_else(never, |p| p.events().clone());
            let timer = deadline.map_or_else(never, crossbeam_channel::at);
            let lines = self.lines.clone();
            select! {
                recv(lines) -> ev => self.on_read_event(ev.unwrap_or(ReadEvent::Eof))?,
                recv(events) -> ev => self.on_pool_recv(ev)?,
                recv(timer) -> _ => self.on_timer()?,
            }
        }
    }

    /// Whether this line may overlap the next (see [`Overlap`]): always without a bound,
    /// else while this lease holds a slot or can take one.
    fn may_overlap(&mut self) -> bool {
        match self.rt.overlap() {
            None => true,
            Some(_) if self.overlapping => true,
            Some(slots) => {
                self.overlapping = slots.try_take();
                self.overlapping
            }
        }
    }

    /// Gives this lease's overlap slot back, if it holds one.
    fn leave_overlap(&mut self) {
        if std::mem::take(&mut self.overlapping) {
            if let Some(slots) = self.rt.overlap() {
                slots.give_back();
            }
        }
    }

    fn on_read_event(&mut self, ev: ReadEvent) -> Result<(), LeaseError> {
        match ev {
            ReadEvent::Line(bytes, len, prescan) => self.on_line(bytes, len, prescan),
            ReadEvent::Eof => {
                self.session.handle_eof();
                Ok(())
            }
            ReadEvent::Error(e) => Err(LeaseError::Io(e)),
            ReadEvent::TooLong(head) => Err(LeaseError::LineTooLong {
                line_no: self.line_no + 1,
                limit: self.rt.max_line_bytes(),
                prefix: prefix_of(&head),
            }),
        }
    }

    fn on_line(
        &mut self,
        bytes: Vec<u8>,
        filled: usize,
        prescan: Prescan,
    ) -> Result<(), LeaseError> {
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
            let head = RecordsHead {
                records: layout.records.len(),
                millis_behind_latest: layout.millis_behind_latest,
                line_bytes: len,
                ahead: true,
                finish_first: !self.may_overlap(),
            };
            let admission = self
                .session
                .handle_records(head, Instant::now())
                .map_err(|source| self.protocol_error(source))?;
            if admission.acknowledged_ahead() {
                // The target keeps `RUST_LOG=rsmld::driver=trace` (the module's old name,
                // which tests and users filter on) showing this line.
                log::trace!(target: "rsmld::driver", "line {}: acknowledged before decoding", self.line_no);
                // Usually `status`: the daemon sends the next line while this one decodes.
                self.perform_outputs()?;
            }
            return self.map_scanned(&line, len, &layout, admission);
        }
        match self.decode(&line, len)? {
            DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest,
            } => {
                let head = RecordsHead {
                    records: records.len(),
                    millis_behind_latest,
                    line_bytes: len,
                    ahead: false,
                    finish_first: !self.may_overlap(),
                };
                let admission = self
                    .session
                    .handle_records(head, Instant::now())
                    .map_err(|source| self.protocol_error(source))?;
                self.deliver_decoded(&records, &line, 0, admission)
            }
            msg => {
                let initialize = matches!(msg, DaemonMessage::Initialize { .. });
                self.session
                    .handle_message(msg, Instant::now())
                    .map_err(|source| self.protocol_error(source))?;
                if initialize {
                    self.start_workers()?;
                }
                Ok(())
            }
        }
    }

    /// After `initialize`: the lease has a name, and workers to run its items.
    fn start_workers(&mut self) -> Result<(), LeaseError> {
        let shard = self.session.shard_id().to_owned();
        let lease = LeaseId::new(&self.application, &shard).with_serial(self.serial);
        self.lease = Some(lease.clone());
        // The session's events (`initialize: ...`) go first, its status after the pool
        // started (a pool that cannot start answers nothing).
        let mut later = Vec::new();
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Event(e) => self.emit(&e),
                other => later.push(other),
            }
        }
        let pool = self.rt.attach(&lease)?;
        let config = self.rt.session_config();
        self.emit(&Event::WorkersStarted {
            workers: pool.workers(),
            max_in_flight: config.max_in_flight,
            checkpoint_interval: config.checkpoint_interval,
        });
        self.pool = Some(pool);
        for out in later {
            self.perform(out)?;
        }
        Ok(())
    }

    /// The layout of a large `processRecords` line, when the structural scan accepts it
    /// and it has enough records to be worth decoding on several threads (and the session
    /// can take a line now: otherwise the full decoder names what is wrong first).
    fn scan_large<'a>(
        &self,
        line: &'a [u8],
        len: usize,
        prescan: Prescan,
    ) -> Option<ProcessRecordsLayout<'a>> {
        const MIN_RECORDS: usize = 256;
        if len < 64 * 1024 || self.pool.is_none() || !self.session.is_idle() {
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
    fn decode(&self, line: &Arc<LineBuf>, len: usize) -> Result<DaemonMessage, LeaseError> {
        DaemonMessage::decode_shared(line, len).map_err(|source| LeaseError::Malformed {
            line_no: self.line_no,
            prefix: self.last_prefix.clone(),
            error: source,
        })
    }

    /// Maps a scanned line's records in parallel and delivers them; the rest in parts,
    /// from the full decoder, when they are too many for one part or a record does not
    /// parse (the full decoder then names the error).
    fn map_scanned(
        &mut self,
        line: &Arc<LineBuf>,
        len: usize,
        layout: &ProcessRecordsLayout<'_>,
        mut admission: Admission,
    ) -> Result<(), LeaseError> {
        self.await_split_capacity()?;
        if self.session.next() == Next::Exit {
            return Ok(());
        }
        let shard = self.session.shard_id().to_owned();
        let mapped = self
            .mapper(&shard)
            .map_scanned(line, layout, admission.next_id());
        match mapped {
            Some((part, true)) => self.deliver_part(&mut admission, part),
            Some((part, false)) => {
                // Too many items for one part: deliver the records split so far, and the
                // rest in parts.
                let from = part.records.len();
                self.deliver_part(&mut admission, part)?;
                self.perform_outputs()?;
                self.decode_and_deliver(line, len, from, admission)
            }
            None => self.decode_and_deliver(line, len, 0, admission),
        }
    }

    /// Decodes a scanned `processRecords` line on this thread and delivers its records
    /// from index `from` on in parts (those before `from` are delivered already).
    fn decode_and_deliver(
        &mut self,
        line: &Arc<LineBuf>,
        len: usize,
        from: usize,
        admission: Admission,
    ) -> Result<(), LeaseError> {
        match self.decode(line, len)? {
            DaemonMessage::ProcessRecords { records, .. } => {
                self.deliver_decoded(&records, line, from, admission)
            }
            // The scan only accepts lines whose action is processRecords.
            other => Err(LeaseError::Malformed {
                line_no: self.line_no,
                prefix: self.last_prefix.clone(),
                error: DecodeError::UnknownAction(other.action().to_string()),
            }),
        }
    }

    /// Maps and delivers the decoded records of an admitted line from index `from` on
    /// (payloads point into `line`) in parts, so that the items in memory stay bounded
    /// whatever the records hold: before each part the session must allow more
    /// ([`Session::may_map_more`]).
    fn deliver_decoded(
        &mut self,
        records: &[Record],
        line: &Arc<LineBuf>,
        mut from: usize,
        mut admission: Admission,
    ) -> Result<(), LeaseError> {
        let shard = self.session.shard_id().to_owned();
        while !admission.is_complete() {
            self.await_split_capacity()?;
            if self.session.next() == Next::Exit {
                // Stdin closed meanwhile: the rest is never delivered, nor checkpointed.
                return Ok(());
            }
            let part =
                self.mapper(&shard)
                    .map_decoded(&records[from..], admission.next_id(), Some(line));
            from += part.records.len();
            self.deliver_part(&mut admission, part)?;
            if !admission.is_complete() {
                // Perform what this part made due (a checkpoint, status) before mapping the next.
                self.perform_outputs()?;
            }
        }
        Ok(())
    }

    /// The mapper over this lease's workers.
    fn mapper<'m>(&'m self, shard: &'m str) -> Mapper<'m> {
        let workers = self.pool.as_ref().map_or(1, PoolLease::workers);
        Mapper::new(
            self.rt.splitter(),
            shard,
            workers,
            self.session.part_budget(),
        )
        .sharing(self.rt.mapper_share(), self.mapper_token)
    }

    /// Hands one part of a line to the session and dispatches its items (without the
    /// duplicates the session found).
    fn deliver_part(
        &mut self,
        admission: &mut Admission,
        mut part: Part,
    ) -> Result<(), LeaseError> {
        if part.records.len() < admission.remaining() {
            log::debug!(
                "line {}: delivering {} records ({} items) as one part; the rest follows as the items in flight allow",
                self.line_no,
                part.records.len(),
                part.items()
            );
        }
        let heap_bytes = part.heap_bytes();
        let duplicates = self
            .session
            .handle_delivered(
                admission,
                std::mem::take(&mut part.records),
                heap_bytes,
                Instant::now(),
            )
            .map_err(|source| self.protocol_error(source))?;
        self.emit_in_flight();
        let blocks = part.into_blocks(&duplicates);
        if blocks.is_empty() {
            return Ok(());
        }
        self.dispatch(blocks)
    }

    /// Waits (feeding the session completions and its backoff timer) until the session
    /// allows the next part of a line to be mapped. The input is watched meanwhile: EOF
    /// ends the session at once (as it does anywhere else), and a line (the daemon's next
    /// one, once status went out) waits in `pending`.
    fn await_split_capacity(&mut self) -> Result<(), LeaseError> {
        let mut flushed = false;
        let mut since: Option<Instant> = None;
        loop {
            self.drain_events()?;
            self.perform_outputs()?;
            if self.session.may_map_more() {
                if let Some(t) = since {
                    self.emit(&Event::Backpressure {
                        waited: t.elapsed(),
                    });
                }
                return Ok(());
            }
            since.get_or_insert_with(Instant::now);
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

    /// Feeds the session every worker event that has already arrived.
    fn drain_events(&mut self) -> Result<(), LeaseError> {
        let Some(events) = self.pool.as_ref().map(|p| p.events().clone()) else {
            return Ok(());
        };
        while let Ok(ev) = events.try_recv() {
            self.on_event(ev)?;
        }
        Ok(())
    }

    fn protocol_error(&self, source: SessionError) -> LeaseError {
        LeaseError::Protocol {
            line_no: self.line_no,
            prefix: self.last_prefix.clone(),
            error: source,
        }
    }

    /// What the pool's event channel gave: an event, or its end. The lease's own pool state
    /// holds a sender, so the channel does not end while the lease runs; should it, the
    /// lease stops with an error rather than wait for completions that cannot come.
    fn on_pool_recv(
        &mut self,
        ev: Result<WorkerEvent, crossbeam_channel::RecvError>,
    ) -> Result<(), LeaseError> {
        match ev {
            Ok(ev) => self.on_event(ev),
            Err(_) => Err(LeaseError::Pool(PoolError::WorkerGone(0))),
        }
    }

    /// The session's deadline passed (a checkpoint retry, the interval).
    fn on_timer(&mut self) -> Result<(), LeaseError> {
        let r = self.session.handle_timeout(Instant::now());
        r.map_err(|source| self.work_error(source))
    }

    fn on_event(&mut self, ev: WorkerEvent) -> Result<(), LeaseError> {
        let now = Instant::now();
        let r = match ev {
            WorkerEvent::Completed(ids) => {
                let r = self.session.handle_completed(&ids, now);
                self.emit(&Event::ItemsCompleted { items: ids.len() });
                self.emit_in_flight();
                r
            }
            WorkerEvent::Failed {
                worker,
                records,
                error,
            } => self.session.handle_failed(worker, &records, error),
        };
        r.map_err(|source| self.work_error(source))
    }

    fn perform_outputs(&mut self) -> Result<(), LeaseError> {
        while let Some(out) = self.session.poll_output() {
            self.perform(out)?;
        }
        Ok(())
    }

    fn perform(&mut self, out: Output) -> Result<(), LeaseError> {
        match out {
            Output::Send(msg) => self.writer.send(&msg)?,
            Output::Event(e) => self.emit(&e),
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
        Ok(())
    }

    /// Tells the runtime's sink, naming this lease once it has a name (and notes how the
    /// lease is ending, for its `LeaseEnded`).
    fn emit(&mut self, event: &Event) {
        match event {
            Event::Draining { action, .. } if action.starts_with("shutdownRequested") => {
                self.end = LeaseEnd::ShutdownRequested;
            }
            Event::Draining { .. } => self.end = LeaseEnd::ShardEnded,
            Event::Abandoned { .. } => self.end = LeaseEnd::LeaseLost,
            // A `shutdownRequested` that was answered (the input closes between actions)
            // ended the lease gracefully even if the daemon leaves without `leaseLost`;
            // one closed mid-action went unanswered, so that lease ended by EOF.
            Event::InputClosed {
                when: InputClosed::BetweenActions { .. },
            } if self.end == LeaseEnd::ShutdownRequested => {}
            Event::InputClosed { when } if *when != InputClosed::AfterFinalStatus => {
                self.end = LeaseEnd::Eof;
            }
            _ => {}
        }
        self.rt.sink().emit(self.lease.as_ref(), event);
    }

    /// The lease's unfinished work, for the in-flight gauges (two counters and the few
    /// pins of the lines in flight: cheap).
    fn emit_in_flight(&mut self) {
        let event = Event::InFlight {
            items: self.session.tracker().in_flight(),
            bytes: self.session.in_flight_bytes(),
        };
        self.emit(&event);
    }

    fn dispatch(&mut self, blocks: Vec<(Option<usize>, ItemBlock)>) -> Result<(), LeaseError> {
        let Some(pool) = &self.pool else {
            // Invariant: records are admitted only after initialize, which starts the pool.
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

    fn work_error(&self, source: SessionError) -> LeaseError {
        LeaseError::Work {
            shard: self.session.shard_id().to_owned(),
            line_no: self.line_no,
            error: source,
        }
    }
}

/// Feeds one decoded daemon message to `session` as a lease does when nothing has to wait
/// (no backpressure between parts, no acknowledge-ahead): a `processRecords` batch is
/// admitted (its payloads pinning `line_bytes` of their line), mapped by `mapper` part by
/// part and delivered; the blocks to dispatch, in order. Anything else goes to
/// [`Session::handle_message`]. For in-process players and tests of the pure core: the
/// select loop above does the same with the waits in between.
pub fn feed(
    session: &mut Session,
    mapper: &Mapper<'_>,
    msg: DaemonMessage,
    line_bytes: usize,
    now: Instant,
) -> Result<Vec<(Option<usize>, ItemBlock)>, SessionError> {
    let DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest,
    } = msg
    else {
        session.handle_message(msg, now)?;
        return Ok(Vec::new());
    };
    let head = RecordsHead {
        records: records.len(),
        millis_behind_latest,
        line_bytes,
        ahead: false,
        finish_first: false,
    };
    let mut admission = session.handle_records(head, now)?;
    let mut blocks = Vec::new();
    let mut from = 0;
    while !admission.is_complete() {
        let mut part = mapper.map_decoded(&records[from..], admission.next_id(), None);
        from += part.records.len();
        let heap_bytes = part.heap_bytes();
        let delivered = std::mem::take(&mut part.records);
        let duplicates = session.handle_delivered(&mut admission, delivered, heap_bytes, now)?;
        blocks.extend(part.into_blocks(&duplicates));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::Overlap;

    #[test]
    fn overlap_slots_are_never_handed_out_twice() {
        let slots = Overlap::new(2);
        assert!(slots.try_take() && slots.try_take());
        assert!(!slots.try_take(), "a third lease got one of two slots");
        slots.give_back();
        assert_eq!(slots.free(), 1);
        assert!(slots.try_take());
        assert_eq!(slots.free(), 0);
    }
}
