//! The session: a pure state machine for one shard lease.
//!
//! The driver feeds it what happened — a decoded daemon message, item completions, a
//! worker failure, a timer firing, stdin EOF — always with the current time, and then
//! drains [`Output`]s (a message to write, items to dispatch, "abandon queued work") and
//! asks [`Session::next`] what to wait for. The session never reads, writes, sleeps or
//! spawns; that is why every rule below can be tested by feeding it messages.
//!
//! States (named after what they wait for):
//!
//! ```text
//! AwaitInitialize ──initialize──▶ Idle ──action──▶ InAction ──status──▶ Idle | Closed
//!                                               │
//!      InAction steps: AwaitCapacity | AwaitDrain ─▶ [SendCheckpoint ─▶ AwaitReply
//!                      ─(Throttling/Dependency)▶ Backoff ─▶ SendCheckpoint …] ─▶ status
//! ```
//!
//! Checkpoint policy:
//! - `processRecords`: dispatch every item; if more than `max_in_flight` items are
//!   unfinished, wait until they are not; then, if the completed prefix moved past the
//!   last checkpoint and `checkpoint_interval` has passed since the last one, checkpoint
//!   it (always with its sub-sequence number); then status. A large line may instead be
//!   started before it is decoded (`begin_records_ahead`, when its records fit under the
//!   bounds) and its items delivered right after (`deliver_ahead`), usually once status is
//!   already out: the daemon then sends the next line while this one is decoded.
//! - `shutdownRequested`: wait for all in-flight work, checkpoint the position, status.
//! - `shardEnded` (1.x: `shutdown` TERMINATE): wait for all work, checkpoint with a null
//!   sequence number — SHARD_END — never the last record's number (KCL issue #211), status.
//! - `leaseLost` (1.x: `shutdown` ZOMBIE): abandon queued work, no checkpoint, status.
//! - never during `initialize` or `leaseLost`.
//!
//! Record order: every record of a batch is placed by [`DeliveryOrder`] before any item of
//! the batch is dispatched. A record above the last delivered one is new; an exact
//! re-delivery of a position delivered earlier in this lease is a duplicate
//! (`--on-duplicate`: skip it, counted done, or fail); anything else — a record that goes
//! backwards, a sentinel or a negative sub-sequence number as its position, one at or
//! below the lease's starting checkpoint — is a protocol error: the session stops, and since the batch was
//! not dispatched, nothing of it (or after it) is ever checkpointed.
//!
//! A checkpoint reply must echo the request (the daemon echoes it in every reply, errors
//! included); one that does not is a protocol error, not a verdict on our request.
//!
//! Checkpoint reply errors: `ThrottlingException` and `KinesisClientLibDependencyException`
//! are retried with bounded exponential backoff and jitter; `ShutdownException` stops
//! checkpointing for the rest of this lease; `InvalidStateException`,
//! `IllegalArgumentException` and anything else are logged and not retried. Failing to
//! store SHARD_END is fatal (the error path exits non-zero so the daemon restarts and a new
//! owner redoes the shard end), because answering status without it strands the child
//! shards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{RecordId, Tracker, TrackerError};
use crate::item::ItemBlock;
use crate::protocol::message::{Action, DaemonMessage, ProcessorMessage, ShutdownReason};
use crate::protocol::order::{DeliveryOrder, OrderError, Placement};
use crate::protocol::sequence::{Esn, Sentinel, SequenceNumber};
use crate::split::Splitter;

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Minimum time between periodic checkpoints during `processRecords`.
    pub checkpoint_interval: Duration,
    /// Unfinished items allowed when `processRecords` answers status (0 = synchronous). A
    /// batch acknowledged before it is decoded ([`Session::can_acknowledge_ahead`]) counts
    /// one item per record.
    pub max_in_flight: usize,
    /// Bytes of *earlier* daemon lines that unfinished items may keep alive when
    /// `processRecords` answers status (payloads point into their line, so one unfinished
    /// item keeps its whole line in memory).
    pub max_in_flight_bytes: usize,
    /// Retries after a `ThrottlingException` / `KinesisClientLibDependencyException`.
    pub checkpoint_retries: u32,
    /// First backoff delay; doubles per retry.
    pub backoff_base: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Seed of the jitter generator (the driver uses the clock and pid).
    pub jitter_seed: u64,
    /// What to do with a record delivered again within this lease.
    pub on_duplicate: OnDuplicate,
}

/// What to do with a record delivered again in this lease: exactly the (sequence number,
/// sub-sequence number) of a record delivered earlier (see [`crate::protocol::order`]; a
/// record below the last delivered one that is not such a re-delivery is always an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnDuplicate {
    /// Warn, and count it done without processing it again.
    #[default]
    Skip,
    /// Stop with an error.
    Fail,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            checkpoint_interval: Duration::from_secs(60),
            max_in_flight: 20_000,
            max_in_flight_bytes: 8 << 20,
            checkpoint_retries: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            jitter_seed: 0x5eed,
            on_duplicate: OnDuplicate::Skip,
        }
    }
}

/// Something the driver must do for the session, in order.
#[derive(Debug)]
pub enum Output {
    /// Write this message to the daemon (one line, flushed).
    Send(ProcessorMessage),
    /// Hand these blocks of items to the workers, in this order: each to the worker it
    /// names, or (`None`) split by partition key.
    Dispatch(Vec<(Option<usize>, ItemBlock)>),
    /// The lease is lost: drop queued work; late completions will be ignored.
    Abandon,
    /// The session waits for work: workers should process what they hold now rather
    /// than wait for their batch interval.
    Flush,
}

/// A decoded and split `processRecords` batch: each record's extended sequence number
/// with how many items it produced, and its items, in blocks.
#[derive(Debug, Default)]
pub struct SplitBatch {
    /// (record, number of its items), in delivery order.
    pub records: Vec<(Esn, u32)>,
    /// The id of the first record: the items carry `first_id + index of their record`
    /// (it must be the tracker's next id when the batch is delivered).
    pub first_id: RecordId,
    /// The items of all records, in blocks in record order; a block either names the
    /// worker all its items are routed to, or (`None`) is split by partition key.
    pub blocks: Vec<(Option<usize>, ItemBlock)>,
    /// How far behind the tip of the shard the batch is.
    pub millis_behind_latest: Option<i64>,
    /// Bytes of the daemon line the items' payloads point into (0 if they own them).
    pub line_bytes: usize,
}

impl SplitBatch {
    /// Splits `records` in order (sequentially) into one block of items whose text may
    /// point into `line`; records get ids from `first_id` on.
    pub fn split(
        records: &[crate::protocol::message::Record],
        millis_behind_latest: Option<i64>,
        splitter: &Splitter,
        shard_id: &str,
        first_id: RecordId,
        line: Option<&Arc<crate::protocol::message::LineBuf>>,
    ) -> Self {
        let mut block = ItemBlock::with_capacity(line.cloned(), records.len());
        let mut batch = SplitBatch {
            records: Vec::with_capacity(records.len()),
            first_id,
            blocks: Vec::new(),
            millis_behind_latest,
            line_bytes: 0,
        };
        for (i, record) in records.iter().enumerate() {
            let id = RecordId(first_id.0 + i as u64);
            let n = splitter.split_into(shard_id, record.into(), id, &mut |item| block.push(item));
            batch.records.push((record.esn(), n));
        }
        batch.blocks.push((None, block));
        batch
    }
}

/// What the session waits for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The next daemon line (completions may be fed meanwhile).
    Message,
    /// Item completions (backpressure or draining); stdin is not read.
    Work,
    /// Item completions, or [`Session::handle_timeout`] at this instant (backoff).
    WorkUntil(Instant),
    /// Stdin reached EOF: exit with status 0.
    Exit,
}

/// A protocol or bookkeeping failure: the process must stop without checkpointing further.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A message that the protocol does not allow in the current state.
    #[error("unexpected {got} message while {state} (expected {expected})")]
    Unexpected {
        /// What the session was doing.
        state: &'static str,
        /// What it could accept.
        expected: &'static str,
        /// What arrived.
        got: Action,
    },
    /// A legacy `shutdown` with a reason other than TERMINATE or ZOMBIE.
    #[error("shutdown with unknown reason {0:?} (expected TERMINATE or ZOMBIE)")]
    UnknownShutdownReason(String),
    /// A worker could not process its items.
    #[error("worker {worker} failed: {error}")]
    WorkerFailed {
        /// The worker index.
        worker: usize,
        /// The handler's error or panic message.
        error: String,
    },
    /// SHARD_END could not be stored.
    #[error("could not checkpoint SHARD_END for {shard}: {error}")]
    ShardEndFailed {
        /// The shard id.
        shard: String,
        /// The daemon's error (or why the session gave up).
        error: String,
    },
    /// A record delivered again within the lease, under `--on-duplicate fail`.
    #[error("record {esn} delivered again (last delivered: {last}) and --on-duplicate is fail")]
    Duplicate {
        /// The duplicate record.
        esn: Esn,
        /// The last record delivered before it.
        last: Esn,
    },
    /// A record position the daemon cannot have sent (goes backwards, a sentinel, a
    /// negative sub-sequence number, at or below the lease's starting checkpoint).
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A checkpoint reply that does not echo the request (the daemon always echoes it).
    #[error("checkpoint reply {got_seq}/{got_sub} does not echo the request {requested} (the daemon always echoes what was asked)", got_seq = got_sequence_number.as_deref().unwrap_or("null"), got_sub = got_sub_sequence_number.map_or("null".to_owned(), |s| s.to_string()))]
    CheckpointNotEchoed {
        /// What was requested (`SHARD_END` for the null request).
        requested: String,
        /// The reply's sequence number.
        got_sequence_number: Option<String>,
        /// The reply's sub-sequence number.
        got_sub_sequence_number: Option<i64>,
    },
    /// Completion bookkeeping went wrong (a bug).
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

impl SessionError {
    /// Whether this is the daemon's fault: a message, record position or checkpoint reply
    /// the protocol does not allow. Worker failures, a SHARD_END that could not be stored, a
    /// duplicate under `--on-duplicate fail` and bookkeeping bugs are not.
    pub fn is_protocol_violation(&self) -> bool {
        match self {
            SessionError::Unexpected { .. }
            | SessionError::UnknownShutdownReason(_)
            | SessionError::Order(_)
            | SessionError::CheckpointNotEchoed { .. } => true,
            SessionError::WorkerFailed { .. }
            | SessionError::ShardEndFailed { .. }
            | SessionError::Duplicate { .. }
            | SessionError::Tracker(_) => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    At(Esn),
    ShardEnd,
}

impl Target {
    fn message(&self) -> ProcessorMessage {
        match self {
            Target::At(esn) => ProcessorMessage::checkpoint_at(esn),
            Target::ShardEnd => ProcessorMessage::checkpoint_null(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::At(esn) => write!(f, "{esn}"),
            Target::ShardEnd => f.write_str("SHARD_END"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Records,
    ShutdownRequested,
    ShardEnd,
    LeaseLost,
}

#[derive(Debug)]
enum Step {
    AwaitCapacity,
    AwaitDrain,
    SendCheckpoint {
        target: Target,
        attempt: u32,
    },
    AwaitReply {
        target: Target,
        attempt: u32,
    },
    Backoff {
        target: Target,
        attempt: u32,
        until: Instant,
    },
    Reply,
}

#[derive(Clone, Copy)]
enum Phase {
    AwaitInitialize,
    Idle,
    AwaitReply,
    Busy,
    Closed,
}

#[derive(Debug)]
enum State {
    AwaitInitialize,
    Idle,
    InAction {
        action: Action,
        kind: Kind,
        step: Step,
    },
    Closed,
    Finished,
}

/// The protocol session for one lease; see the module docs.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    splitter: Splitter,
    state: State,
    shard_id: Arc<str>,
    tracker: Tracker,
    /// The positions delivered in this lease: tells re-deliveries from errors.
    order: DeliveryOrder,
    /// The lease's checkpoint: from `initialize`, then every stored value.
    last_checkpoint: Option<Esn>,
    last_checkpoint_at: Instant,
    checkpointing_stopped: bool,
    flush_requested: bool,
    /// Lines whose items may still be in flight: (id after the batch's last record, bytes).
    pinned: std::collections::VecDeque<(RecordId, usize)>,
    /// The entry of `pinned` that belongs to the batch being acknowledged, if any.
    current_pin: Option<RecordId>,
    outputs: std::collections::VecDeque<Output>,
    rng: u64,
    stats: Stats,
}

/// Counters for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records delivered by the daemon.
    pub records: u64,
    /// Items dispatched.
    pub items: u64,
    /// Items completed.
    pub completed: u64,
    /// Checkpoints stored (successful replies).
    pub checkpoints: u64,
    /// Records skipped as duplicates.
    pub duplicates: u64,
}

impl Session {
    /// A session waiting for `initialize`.
    pub fn new(config: SessionConfig, splitter: Splitter, now: Instant) -> Self {
        let rng = config.jitter_seed | 1;
        Session {
            config,
            splitter,
            state: State::AwaitInitialize,
            shard_id: Arc::from(""),
            tracker: Tracker::new(),
            order: DeliveryOrder::new(),
            last_checkpoint: None,
            last_checkpoint_at: now,
            checkpointing_stopped: false,
            flush_requested: false,
            pinned: Default::default(),
            current_pin: None,
            outputs: Default::default(),
            rng,
            stats: Stats::default(),
        }
    }

    /// True between actions: a `processRecords` line may be delivered now.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// The shard id (empty before `initialize`).
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The last stored checkpoint (or the lease's checkpoint from `initialize`).
    pub fn last_checkpoint(&self) -> Option<&Esn> {
        self.last_checkpoint.as_ref()
    }

    /// The checkpoint tracker (read-only).
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The next output to perform, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// What to wait for next.
    pub fn next(&self) -> Next {
        match &self.state {
            State::AwaitInitialize | State::Idle | State::Closed => Next::Message,
            State::Finished => Next::Exit,
            State::InAction { step, .. } => match step {
                Step::AwaitReply { .. } => Next::Message,
                Step::Backoff { until, .. } => Next::WorkUntil(*until),
                Step::AwaitCapacity | Step::AwaitDrain => Next::Work,
                // Transient steps are resolved inside `advance` before returning.
                Step::SendCheckpoint { .. } | Step::Reply => Next::Work,
            },
        }
    }

    /// A decoded line from the daemon.
    pub fn handle_message(&mut self, msg: DaemonMessage, now: Instant) -> Result<(), SessionError> {
        let got = msg.action();
        let phase = match &self.state {
            State::AwaitInitialize => Phase::AwaitInitialize,
            State::Idle => Phase::Idle,
            State::InAction {
                step: Step::AwaitReply { .. },
                ..
            } => Phase::AwaitReply,
            State::InAction { .. } => Phase::Busy,
            State::Closed | State::Finished => Phase::Closed,
        };
        match (phase, msg) {
            (
                Phase::AwaitInitialize,
                DaemonMessage::Initialize {
                    shard_id,
                    sequence_number,
                    sub_sequence_number,
                },
            ) => {
                self.shard_id = Arc::from(shard_id.as_str());
                self.last_checkpoint =
                    sequence_number.map(|seq| Esn::new(seq, sub_sequence_number.unwrap_or(0)));
                if let Some(checkpoint) = &self.last_checkpoint {
                    self.order.start_at(checkpoint.clone());
                }
                self.last_checkpoint_at = now;
                log::info!(
                    "initialize: shard {} from checkpoint {}",
                    self.shard_id,
                    self.last_checkpoint
                        .as_ref()
                        .map_or("null".to_owned(), |e| e.to_string())
                );
                self.outputs
                    .push_back(Output::Send(ProcessorMessage::Status {
                        response_for: Action::Initialize,
                    }));
                self.state = State::Idle;
            }
            (Phase::AwaitInitialize, _) => {
                return Err(self.unexpected(got, "initialize"));
            }
            (
                Phase::Idle,
                DaemonMessage::ProcessRecords {
                    records,
                    millis_behind_latest,
                },
            ) => {
                log::debug!(
                    "processRecords: {} records, {} ms behind",
                    records.len(),
                    millis_behind_latest.map_or("?".to_owned(), |m| m.to_string())
                );
                let batch = SplitBatch::split(
                    &records,
                    millis_behind_latest,
                    &self.splitter,
                    &self.shard_id,
                    self.tracker.next_id(),
                    None,
                );
                self.deliver_batch(batch, now)?;
            }
            (Phase::Idle, DaemonMessage::ShutdownRequested) => {
                log::info!(
                    "shutdownRequested: draining {} in-flight items",
                    self.tracker.in_flight()
                );
                self.begin(
                    Action::ShutdownRequested,
                    Kind::ShutdownRequested,
                    Step::AwaitDrain,
                    now,
                );
            }
            (Phase::Idle, DaemonMessage::ShardEnded) => {
                log::info!(
                    "shardEnded: draining {} in-flight items",
                    self.tracker.in_flight()
                );
                self.begin(Action::ShardEnded, Kind::ShardEnd, Step::AwaitDrain, now);
            }
            (Phase::Idle, DaemonMessage::LeaseLost) => self.lease_lost(Action::LeaseLost, now),
            (Phase::Idle, DaemonMessage::Shutdown { reason }) => match reason {
                ShutdownReason::Terminate => {
                    log::info!(
                        "shutdown TERMINATE: draining {} in-flight items",
                        self.tracker.in_flight()
                    );
                    self.begin(Action::Shutdown, Kind::ShardEnd, Step::AwaitDrain, now);
                }
                ShutdownReason::Zombie => self.lease_lost(Action::Shutdown, now),
                ShutdownReason::Other(r) => return Err(SessionError::UnknownShutdownReason(r)),
            },
            (Phase::Idle, _) => {
                return Err(self.unexpected(
                    got,
                    "processRecords, shutdownRequested, shardEnded, leaseLost or shutdown",
                ));
            }
            (
                Phase::AwaitReply,
                DaemonMessage::Checkpoint {
                    sequence_number,
                    sub_sequence_number,
                    error,
                },
            ) => {
                self.on_checkpoint_reply(sequence_number, sub_sequence_number, error, now)?;
            }
            (Phase::AwaitReply, _) | (Phase::Busy, _) => {
                return Err(self.unexpected(got, "the checkpoint reply"));
            }
            (Phase::Closed, _) => {
                return Err(self.unexpected(got, "end of input"));
            }
        }
        self.advance(now)
    }

    /// A `processRecords` batch that the driver already decoded and split (in parallel):
    /// the same as [`Session::handle_message`] with that `processRecords` message.
    pub fn handle_batch(&mut self, batch: SplitBatch, now: Instant) -> Result<(), SessionError> {
        if !matches!(self.state, State::Idle) {
            let expected = match self.state {
                State::AwaitInitialize => "initialize",
                State::InAction { .. } => "the checkpoint reply",
                _ => "end of input",
            };
            return Err(self.unexpected(Action::ProcessRecords, expected));
        }
        self.deliver_batch(batch, now)?;
        self.advance(now)
    }

    /// Whether a large `processRecords` line of `records` records, whose structure the
    /// driver has checked but which it has not decoded yet, may be acknowledged first and
    /// decoded afterwards: the session is idle, `max_in_flight` is not 0 (synchronous
    /// mode), and the batch fits under both in-flight bounds as if each record were one
    /// item (an aggregated record counts as one until it is decoded).
    ///
    /// This is what keeps decoding off the critical path: the daemon waits for `status`
    /// before it sends the next line, so acknowledging first lets the next line travel
    /// through the pipe while this one is decoded. At-least-once is unaffected — `status`
    /// only acknowledges receipt; checkpoints still cover only completed items.
    pub fn can_acknowledge_ahead(&self, records: usize) -> bool {
        matches!(self.state, State::Idle)
            && self.config.max_in_flight > 0
            && self.tracker.in_flight() + records <= self.config.max_in_flight
            && self.pinned_bytes_excluding(None) <= self.config.max_in_flight_bytes
    }

    /// Starts `processRecords` for a line that will be decoded afterwards (see
    /// [`Session::can_acknowledge_ahead`]): usually this answers `status` at once (or
    /// first checkpoints, when one is due). The driver must call
    /// [`Session::deliver_ahead`] with the decoded batch before it feeds anything else.
    pub fn begin_records_ahead(&mut self, now: Instant) -> Result<(), SessionError> {
        if !matches!(self.state, State::Idle) {
            return Err(self.unexpected(Action::ProcessRecords, "the checkpoint reply"));
        }
        self.current_pin = None;
        self.begin(
            Action::ProcessRecords,
            Kind::Records,
            Step::AwaitCapacity,
            now,
        );
        self.advance(now)
    }

    /// The decoded batch of the line started with [`Session::begin_records_ahead`]:
    /// registers and dispatches it (the action may already be answered). Also takes the
    /// leading parts of a line that the driver splits and delivers in several parts
    /// while the session is idle (the last part then goes to [`Session::handle_batch`]).
    /// Parts must arrive in order and numbered from the tracker's next id.
    pub fn deliver_ahead(&mut self, batch: SplitBatch, now: Instant) -> Result<(), SessionError> {
        self.register_batch(batch)?;
        self.advance(now)
    }

    /// Registers a split batch with the tracker (skipping duplicates), dispatches its
    /// items and starts the processRecords action.
    fn deliver_batch(&mut self, batch: SplitBatch, now: Instant) -> Result<(), SessionError> {
        self.register_batch(batch)?;
        self.begin(
            Action::ProcessRecords,
            Kind::Records,
            Step::AwaitCapacity,
            now,
        );
        Ok(())
    }

    /// Registers a split batch with the tracker (skipping duplicates) and dispatches its
    /// items.
    fn register_batch(&mut self, mut batch: SplitBatch) -> Result<(), SessionError> {
        let items: usize = batch.blocks.iter().map(|(_, b)| b.len()).sum();
        log::debug!(
            "processRecords: {} records, {} items, {} ms behind",
            batch.records.len(),
            items,
            batch
                .millis_behind_latest
                .map_or("?".to_owned(), |m| m.to_string())
        );
        if batch.first_id != self.tracker.next_id() {
            return Err(TrackerError::Misnumbered {
                expected: self.tracker.next_id().0,
                got: batch.first_id.0,
            }
            .into());
        }
        let mut duplicates = Vec::new();
        for (esn, n) in std::mem::take(&mut batch.records) {
            // Nothing of a batch is dispatched before all its records are placed, so an
            // error here leaves no item of it running (and the process stops).
            if let Placement::Duplicate { last } = self.order.place(&esn)? {
                if self.config.on_duplicate == OnDuplicate::Fail {
                    return Err(SessionError::Duplicate { esn, last });
                }
                log::warn!("record {esn} delivered again (last delivered: {last}); skipping it");
                duplicates.push(self.tracker.deliver(esn, 0));
                self.stats.duplicates += 1;
                continue;
            }
            self.tracker.deliver(esn, n);
            self.stats.records += 1;
            self.stats.items += u64::from(n);
        }
        let mut blocks = std::mem::take(&mut batch.blocks);
        if !duplicates.is_empty() {
            // Ids increase, so a binary search finds a duplicate's items.
            for (_, block) in &mut blocks {
                block.retain_records(|id| duplicates.binary_search(&id).is_err());
            }
        }
        blocks.retain(|(_, block)| !block.is_empty());
        self.current_pin = None;
        if !blocks.is_empty() {
            if batch.line_bytes > 0 {
                let end = self.tracker.next_id();
                self.pinned.push_back((end, batch.line_bytes));
                self.current_pin = Some(end);
            }
            self.outputs.push_back(Output::Dispatch(blocks));
        }
        Ok(())
    }

    /// Items finished successfully (one id per item).
    pub fn handle_completed(
        &mut self,
        records: &[RecordId],
        now: Instant,
    ) -> Result<(), SessionError> {
        for &id in records {
            self.tracker.complete(id)?;
        }
        self.stats.completed += records.len() as u64;
        self.advance(now)
    }

    /// A worker failed: under the fail-fast policy the session stops here. The failed
    /// items are marked so that nothing past them could ever be checkpointed.
    pub fn handle_failed(
        &mut self,
        worker: usize,
        records: &[RecordId],
        error: String,
    ) -> Result<(), SessionError> {
        for &id in records {
            self.tracker.fail(id)?;
        }
        self.checkpointing_stopped = true;
        Err(SessionError::WorkerFailed { worker, error })
    }

    /// A timer set by [`Next::WorkUntil`] expired.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        self.advance(now)
    }

    /// Stdin reached EOF: the daemon is done with us (or gone).
    pub fn handle_eof(&mut self) {
        match &self.state {
            State::Closed => log::info!("stdin closed after the final status; exiting"),
            State::AwaitInitialize | State::Idle => log::warn!(
                "stdin closed without leaseLost or shardEnded; exiting without a further checkpoint ({} items in flight)",
                self.tracker.in_flight()
            ),
            State::InAction { action, .. } => log::warn!(
                "stdin closed in the middle of {action}; exiting without answering it"
            ),
            State::Finished => {}
        }
        self.state = State::Finished;
    }

    fn begin(&mut self, action: Action, kind: Kind, step: Step, _now: Instant) {
        self.flush_requested = false;
        self.state = State::InAction { action, kind, step };
    }

    /// Once per action: ask the workers not to sit on partial batches while we wait.
    fn request_flush(&mut self) {
        if !self.flush_requested {
            self.flush_requested = true;
            self.outputs.push_back(Output::Flush);
        }
    }

    fn lease_lost(&mut self, action: Action, now: Instant) {
        let dropped = self.tracker.in_flight();
        log::info!("{action} (lease lost): abandoning {dropped} in-flight items, no checkpoint");
        self.tracker.abandon();
        self.pinned.clear();
        self.outputs.push_back(Output::Abandon);
        self.begin(action, Kind::LeaseLost, Step::Reply, now);
    }

    fn unexpected(&self, got: Action, expected: &'static str) -> SessionError {
        let state = match &self.state {
            State::AwaitInitialize => "waiting for initialize",
            State::Idle => "waiting for the next action",
            State::InAction {
                step: Step::AwaitReply { .. },
                ..
            } => "waiting for a checkpoint reply",
            State::InAction { .. } => "processing an action",
            State::Closed => "closed after the final status",
            State::Finished => "finished",
        };
        SessionError::Unexpected {
            state,
            expected,
            got,
        }
    }

    /// Runs the current action as far as it can go without new input.
    fn advance(&mut self, now: Instant) -> Result<(), SessionError> {
        loop {
            let State::InAction { action, kind, step } = &mut self.state else {
                return Ok(());
            };
            let (action, kind) = (*action, *kind);
            let next = match step {
                Step::AwaitCapacity => {
                    if self.tracker.in_flight() > self.config.max_in_flight
                        || self.older_pinned_bytes() > self.config.max_in_flight_bytes
                    {
                        self.request_flush();
                        return Ok(());
                    }
                    match self.periodic_target(now) {
                        Some(target) => Step::SendCheckpoint { target, attempt: 0 },
                        None => Step::Reply,
                    }
                }
                Step::AwaitDrain => {
                    if !self.tracker.all_complete() {
                        self.request_flush();
                        return Ok(());
                    }
                    match (kind, self.checkpointing_stopped) {
                        (_, true) => Step::Reply,
                        (Kind::ShardEnd, false) => Step::SendCheckpoint {
                            target: Target::ShardEnd,
                            attempt: 0,
                        },
                        _ => match self.advanced_position() {
                            Some(esn) => Step::SendCheckpoint {
                                target: Target::At(esn),
                                attempt: 0,
                            },
                            None => Step::Reply,
                        },
                    }
                }
                Step::SendCheckpoint { target, attempt } => {
                    log::debug!("checkpoint request at {target} (attempt {})", *attempt + 1);
                    self.outputs.push_back(Output::Send(target.message()));
                    Step::AwaitReply {
                        target: target.clone(),
                        attempt: *attempt,
                    }
                }
                Step::AwaitReply { .. } => return Ok(()),
                Step::Backoff {
                    target,
                    attempt,
                    until,
                } => {
                    if now < *until {
                        return Ok(());
                    }
                    Step::SendCheckpoint {
                        target: target.clone(),
                        attempt: *attempt + 1,
                    }
                }
                Step::Reply => {
                    self.outputs
                        .push_back(Output::Send(ProcessorMessage::Status {
                            response_for: action,
                        }));
                    self.state = match kind {
                        Kind::ShardEnd | Kind::LeaseLost => State::Closed,
                        Kind::Records | Kind::ShutdownRequested => State::Idle,
                    };
                    return Ok(());
                }
            };
            if let State::InAction { step, .. } = &mut self.state {
                *step = next;
            }
        }
    }

    /// Bytes of earlier batches' lines that unfinished items may still keep alive (an upper
    /// bound: a batch counts until every record up to its last one is complete).
    fn older_pinned_bytes(&mut self) -> usize {
        let oldest = self.tracker.oldest_unfinished();
        while self.pinned.front().is_some_and(|(end, _)| *end <= oldest) {
            self.pinned.pop_front();
        }
        self.pinned_bytes_excluding(self.current_pin)
    }

    /// Bytes of lines that unfinished items may keep alive, except the line of `current`.
    fn pinned_bytes_excluding(&self, current: Option<RecordId>) -> usize {
        let oldest = self.tracker.oldest_unfinished();
        self.pinned
            .iter()
            .filter(|(end, _)| *end > oldest && Some(*end) != current)
            .map(|(_, b)| b)
            .sum()
    }

    /// The position, if it is beyond the last checkpoint.
    fn advanced_position(&self) -> Option<Esn> {
        let position = self.tracker.position()?;
        match &self.last_checkpoint {
            Some(last) if position <= last => None,
            _ => Some(position.clone()),
        }
    }

    fn periodic_target(&self, now: Instant) -> Option<Target> {
        if self.checkpointing_stopped
            || now.saturating_duration_since(self.last_checkpoint_at)
                < self.config.checkpoint_interval
        {
            return None;
        }
        self.advanced_position().map(Target::At)
    }

    fn on_checkpoint_reply(
        &mut self,
        sequence_number: Option<String>,
        sub_sequence_number: Option<i64>,
        error: Option<String>,
        now: Instant,
    ) -> Result<(), SessionError> {
        let State::InAction {
            kind,
            step: Step::AwaitReply { target, attempt },
            ..
        } = &self.state
        else {
            // Invariant: only called from handle_message in the AwaitReply step.
            unreachable!("checkpoint reply outside AwaitReply");
        };
        let (kind, target, attempt) = (*kind, target.clone(), *attempt);
        // The daemon echoes the request in every reply, errors included: anything else is
        // a reply to some other request (or no daemon at all), and its verdict says nothing
        // about ours.
        let echoed = match &target {
            Target::At(esn) => {
                sequence_number.as_deref() == Some(esn.seq.as_str())
                    && sub_sequence_number == Some(esn.sub)
            }
            Target::ShardEnd => sequence_number.is_none() && sub_sequence_number.is_none(),
        };
        if !echoed {
            self.checkpointing_stopped = true;
            return Err(SessionError::CheckpointNotEchoed {
                requested: target.to_string(),
                got_sequence_number: sequence_number,
                got_sub_sequence_number: sub_sequence_number,
            });
        }
        let shard = self.shard_id.to_string();
        let next = match error.as_deref() {
            None => {
                log::info!("checkpointed {target}");
                self.last_checkpoint = Some(match &target {
                    Target::At(esn) => esn.clone(),
                    Target::ShardEnd => Esn::new(SequenceNumber::sentinel(Sentinel::ShardEnd), 0),
                });
                self.last_checkpoint_at = now;
                self.stats.checkpoints += 1;
                Step::Reply
            }
            Some(e @ ("ThrottlingException" | "KinesisClientLibDependencyException")) => {
                if attempt < self.config.checkpoint_retries {
                    let delay = self.backoff(attempt);
                    log::warn!(
                        "checkpoint at {target} failed with {e}; retry {} of {} in {} ms",
                        attempt + 1,
                        self.config.checkpoint_retries,
                        delay.as_millis()
                    );
                    Step::Backoff {
                        target,
                        attempt,
                        until: now + delay,
                    }
                } else if kind == Kind::ShardEnd {
                    return Err(SessionError::ShardEndFailed {
                        shard,
                        error: format!("{e} after {} attempts", attempt + 1),
                    });
                } else {
                    log::error!(
                        "checkpoint at {target} failed with {e} after {} attempts; giving up until the next interval",
                        attempt + 1
                    );
                    self.last_checkpoint_at = now;
                    Step::Reply
                }
            }
            Some("ShutdownException") => {
                log::warn!("checkpoint at {target} failed with ShutdownException: the lease is gone; no more checkpoints in this process");
                self.checkpointing_stopped = true;
                Step::Reply
            }
            Some(e) => {
                if kind == Kind::ShardEnd {
                    return Err(SessionError::ShardEndFailed {
                        shard,
                        error: e.to_owned(),
                    });
                }
                log::error!(
                    "checkpoint at {target} failed with {e} (last stored: {}); not retrying it",
                    self.last_checkpoint
                        .as_ref()
                        .map_or("none".to_owned(), |c| c.to_string())
                );
                self.last_checkpoint_at = now;
                Step::Reply
            }
        };
        if let State::InAction { step, .. } = &mut self.state {
            *step = next;
        }
        Ok(())
    }

    /// Exponential backoff with "equal jitter": half fixed, half random.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.config.backoff_max);
        // splitmix64: a tiny deterministic generator; the driver seeds it per process.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let half = exp / 2;
        let frac = (z >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(frac)
    }
}
