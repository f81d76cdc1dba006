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
//! Errors carry the 1-based line number and the first bytes of the offending line.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, Receiver};

use crate::checkpoint::RecordId;
use crate::handler::HandlerFactory;
use crate::item::ItemBlock;
use crate::pool::partition;
use crate::pool::{Pool, PoolConfig, PoolError, WorkerEvent};
use crate::protocol::message::{
    parse_record_at, DaemonMessage, DecodeError, LineBuf, ProcessorMessage,
};
use crate::protocol::scan::{scan_resumed, Prescan, ProcessRecordsLayout};
use crate::protocol::sequence::{Esn, SequenceNumber};
use crate::protocol::session::{
    Next, Output, Session, SessionConfig, SessionError, SplitBatch, Stats,
};
use crate::split::Splitter;

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
}

/// Why the loop stopped with an error. The process exits non-zero; no checkpoint past
/// unprocessed items was sent.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A daemon line that is not a valid message.
    #[error("malformed daemon line {line_no}: {source} (line starts with: {prefix})")]
    Malformed {
        /// 1-based line number on stdin.
        line_no: u64,
        /// The first bytes of the line, escaped.
        prefix: String,
        /// Why it could not be decoded.
        source: DecodeError,
    },
    /// A protocol violation or a failure while handling a daemon line.
    #[error("daemon line {line_no}: {source} (line starts with: {prefix})")]
    Protocol {
        /// 1-based line number on stdin.
        line_no: u64,
        /// The first bytes of the line, escaped.
        prefix: String,
        /// What went wrong.
        source: SessionError,
    },
    /// A worker failed, or completion bookkeeping broke.
    #[error("{source} (shard {shard}; last daemon line {line_no})")]
    Work {
        /// The shard id.
        shard: String,
        /// The last line read.
        line_no: u64,
        /// What went wrong.
        source: SessionError,
    },
    /// The pool could not start or lost a worker.
    #[error("worker pool: {0}")]
    Pool(#[from] PoolError),
    /// Reading stdin or writing stdout failed.
    #[error("protocol I/O: {0}")]
    Io(#[from] io::Error),
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
    let lines = spawn_reader(input, recycled);
    let mut lp = Loop {
        session: Session::new(
            config.session.clone(),
            config.splitter.clone(),
            Instant::now(),
        ),
        writer: ProtocolWriter::new(output),
        pool: None,
        line_no: 0,
        last_prefix: String::new(),
        recycle,
        shard: Arc::from(""),
    };
    let result = lp.run(&config, &lines);
    if let Some(pool) = lp.pool.take() {
        // Whatever is still queued is not covered by any checkpoint: drop it and go.
        pool.abandon();
        if let Err(e) = pool.shutdown(config.shutdown_timeout) {
            log::error!("{e}");
        }
    }
    result.map(|()| lp.session.stats())
}

struct Loop<W: Write> {
    session: Session,
    writer: ProtocolWriter<W>,
    pool: Option<Pool>,
    line_no: u64,
    last_prefix: String,
    recycle: crossbeam_channel::Sender<Vec<u8>>,
    /// The shard id once known (items carry it).
    shard: Arc<str>,
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
            let events = self
                .pool
                .as_ref()
                .map_or_else(never, |p| p.events().clone());
            let timer = deadline.map_or_else(never, crossbeam_channel::at);
            select! {
                recv(lines) -> ev => match ev {
                    Ok(ReadEvent::Line(bytes, len, prescan)) => {
                        self.on_line(config, bytes, len, prescan)?
                    }
                    Ok(ReadEvent::Eof) | Err(_) => self.session.handle_eof(),
                    Ok(ReadEvent::Error(e)) => return Err(DriverError::Io(e)),
                },
                recv(events) -> ev => match ev {
                    Ok(ev) => self.on_event(ev)?,
                    Err(_) => return Err(DriverError::Pool(PoolError::WorkerGone(0))),
                },
                recv(timer) -> _ => {
                    let r = self.session.handle_timeout(Instant::now());
                    r.map_err(|source| self.work_error(source))?;
                }
            }
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
            if self.session.can_acknowledge_ahead(layout.records.len()) {
                log::trace!("line {}: acknowledged before decoding", self.line_no);
                self.session
                    .begin_records_ahead(Instant::now())
                    .map_err(|source| self.protocol_error(source))?;
                // Usually `status`: the daemon sends the next line while this one decodes.
                self.perform_outputs()?;
                let batch = match self.map_in_parallel(config, &line, len, &layout) {
                    Some(batch) => batch,
                    None => self.decode_batch(config, &line, len)?,
                };
                return self
                    .session
                    .deliver_ahead(batch, Instant::now())
                    .map_err(|source| self.protocol_error(source));
            }
            if let Some(batch) = self.map_in_parallel(config, &line, len, &layout) {
                return self
                    .session
                    .handle_batch(batch, Instant::now())
                    .map_err(|source| self.protocol_error(source));
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
                let batch = self.split(config, &records, millis_behind_latest, &line, len);
                drop(records);
                self.session.handle_batch(batch, Instant::now())
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
            self.pool = Some(Pool::start(&config.pool, &shard, config.handlers.as_ref())?);
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
            source,
        })
    }

    /// Decodes and splits a `processRecords` line on this thread (the fallback when a
    /// record of a scanned line does not parse: the full decoder names the error).
    fn decode_batch(
        &self,
        config: &DriverConfig,
        line: &Arc<LineBuf>,
        len: usize,
    ) -> Result<SplitBatch, DriverError> {
        match self.decode(line, len)? {
            DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest,
            } => Ok(self.split(config, &records, millis_behind_latest, line, len)),
            // The scan only accepts lines whose action is processRecords.
            other => Err(DriverError::Malformed {
                line_no: self.line_no,
                prefix: self.last_prefix.clone(),
                source: DecodeError::UnknownAction(other.action().to_string()),
            }),
        }
    }

    /// Splits decoded records (of `line`, `len` bytes, which their payloads point into) on
    /// this thread, numbered from the tracker's next id.
    fn split(
        &self,
        config: &DriverConfig,
        records: &[crate::protocol::message::Record],
        millis_behind_latest: Option<i64>,
        line: &Arc<LineBuf>,
        len: usize,
    ) -> SplitBatch {
        let mut batch = SplitBatch::split(
            records,
            millis_behind_latest,
            &config.splitter,
            &self.shard,
            self.session.tracker().next_id(),
            Some(line),
        );
        batch.line_bytes = len;
        batch
    }

    /// A large `processRecords` line is decoded and split on several threads: the scan
    /// found the records, chunks of them are parsed and split in parallel, and the results
    /// are concatenated in order. `None` (a record parse declines) means: use the ordinary
    /// decoder, which also reports errors.
    fn map_in_parallel(
        &self,
        config: &DriverConfig,
        line: &Arc<LineBuf>,
        len: usize,
        layout: &ProcessRecordsLayout<'_>,
    ) -> Option<SplitBatch> {
        use rayon::prelude::*;
        let chunk = (layout.records.len() / (rayon::current_num_threads().max(1) * 4)).max(64);
        let shard = &*self.shard;
        let splitter = &config.splitter;
        let workers = self.pool.as_ref().map_or(1, Pool::workers);
        let first_id = self.session.tracker().next_id().0;
        // Each chunk parses its records and sorts their items into one block per worker
        // (so a block's items are dropped by one thread only).
        type Part = (Vec<(Esn, u32)>, Vec<ItemBlock>);
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
                for (k, range) in ranges.iter().enumerate() {
                    let text = match layout.record(&line[..], c * chunk + k) {
                        Some(text) => text,
                        None => parse_record_at(line, range.clone()).ok()?,
                    };
                    let seq =
                        SequenceNumber::parse_reusing(&text.sequence_number, previous.as_ref())
                            .ok()?;
                    let id = RecordId(first_id + (c * chunk + k) as u64);
                    let n = splitter.split_into(shard, (&text).into(), id, &mut |item| {
                        let w = if workers == 1 {
                            0
                        } else {
                            partition(item.partition_key.as_bytes(), workers)
                        };
                        blocks[w].push(item);
                    });
                    records.push((
                        Esn::new(seq.clone(), text.sub_sequence_number.unwrap_or(0)),
                        n,
                    ));
                    previous = Some(seq);
                }
                Some((records, blocks))
            })
            .collect();
        let mut batch = SplitBatch {
            records: Vec::with_capacity(layout.records.len()),
            first_id: RecordId(first_id),
            blocks: Vec::with_capacity(parts.len() * workers),
            millis_behind_latest: layout.millis_behind_latest,
            line_bytes: len,
        };
        for part in parts {
            let (mut records, blocks) = part?;
            batch.records.append(&mut records);
            batch
                .blocks
                .extend(blocks.into_iter().enumerate().map(|(w, b)| (Some(w), b)));
        }
        Some(batch)
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
            source,
        }
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
            source,
        }
    }
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
}

/// Starts the stdin reader. It reads straight into line buffers (no intermediate
/// buffer), taking them back from `recycled` when the records that pointed into them are
/// gone; bytes after a newline (the daemon never pipelines, so rarely any) start the next
/// line. A buffer keeps its length (all of it initialized) when it is recycled, and the
/// line is only its first bytes: so a recycled buffer is never zeroed again before a read.
fn spawn_reader<R: Read + Send + 'static>(
    mut input: R,
    recycled: Receiver<Vec<u8>>,
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
                let read = read_line(&mut input, &mut line, &mut filled, &mut carry, &mut prescan);
                let ev = match read {
                    Ok(true) => {
                        last_len = filled;
                        ReadEvent::Line(line, filled, prescan)
                    }
                    Ok(false) if filled == 0 => ReadEvent::Eof,
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
fn read_line<R: Read>(
    input: &mut R,
    line: &mut Vec<u8>,
    filled: &mut usize,
    carry: &mut Vec<u8>,
    prescan: &mut Prescan,
) -> io::Result<bool> {
    let mut scanned = 0;
    loop {
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
