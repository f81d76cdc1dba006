//! The session: a pure state machine for one shard lease.
//!
//! The lease feeds it what happened — a decoded daemon message, the head of a
//! `processRecords` line and then its records, item completions, a worker failure, a
//! timer firing, stdin EOF — always with the current time, and then drains [`Output`]s (a
//! message to write, a telemetry event, "abandon queued work", "flush") and asks
//! [`Session::next`] what to wait for. The session never reads, writes, sleeps or spawns,
//! and never sees an item, a buffer or a worker: it counts records and items. That is why
//! every rule below can be tested by feeding it messages and numbers.
//!
//! A `processRecords` line comes in two steps, in the sans-IO style:
//! [`Session::handle_records`] with the line's head (how many records, how many bytes)
//! returns an [`Admission`] that owns the ids of the line's records, and may answer
//! `status` at once (acknowledge-ahead, below); the mapper numbers the items from the
//! admission's ids, and [`Session::handle_delivered`] takes each part of the records (each
//! record's position and item count) and says which records are duplicates, whose items
//! must not be dispatched. The admission is the only way to deliver records, so the ids the
//! items carry are by construction the ids the tracker counts.
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
//! - `processRecords`: deliver every record; if more than `max_in_flight` items are
//!   unfinished, wait until they are not; then, if the completed prefix moved past the
//!   last checkpoint and `checkpoint_interval` has passed since the last one, checkpoint
//!   it (always with its sub-sequence number); then status. A large line may instead be
//!   answered before it is decoded (the lease asks with [`RecordsHead::ahead`]; granted
//!   when its records fit under the bounds, [`Admission::acknowledged_ahead`]) and its
//!   records delivered right after, usually once status is already out: the daemon then
//!   sends the next line while this one is decoded.
//! - `shutdownRequested`: wait for all in-flight work, checkpoint the position, status.
//! - `shardEnded` (1.x: `shutdown` TERMINATE): wait for all work, checkpoint with a null
//!   sequence number — SHARD_END — never the last record's number (KCL issue #211), status.
//! - `leaseLost` (1.x: `shutdown` ZOMBIE): abandon queued work, no checkpoint, status.
//! - never during `initialize` or `leaseLost`.
//!
//! Record order: every record of a part is placed by [`DeliveryOrder`] before any item of
//! the part is dispatched. A record above the last delivered one is new; an exact
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

use crate::protocol::budget::{PartBudget, Pins};
use crate::protocol::message::{Action, DaemonMessage, ProcessorMessage, ShutdownReason};
use crate::protocol::order::{DeliveryOrder, OrderError, Placement};
use crate::protocol::sequence::{Esn, Sentinel, SequenceNumber};
use crate::protocol::tracker::{RecordId, Tracker, TrackerError};
use crate::telemetry::{CheckpointRetry, Event, InputClosed};

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Minimum time between periodic checkpoints during `processRecords`.
    pub checkpoint_interval: Duration,
    /// Unfinished items allowed when `processRecords` answers status (0 = synchronous). A
    /// batch acknowledged before it is decoded ([`RecordsHead::ahead`]) counts one item per
    /// record.
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
    /// Seed of the jitter generator (the command line seeds it from the clock and pid).
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

/// Something the lease must do for the session, in order.
#[derive(Debug)]
pub enum Output {
    /// Write this message to the daemon (one line, flushed).
    Send(ProcessorMessage),
    /// Tell the telemetry sink (logs, later metrics) what happened.
    Event(Event),
    /// The lease is lost: drop its queued work; late completions will be ignored.
    Abandon,
    /// The session waits for work: workers should process what they hold now rather
    /// than wait for their batch interval.
    Flush,
}

/// The head of a `processRecords` line: what the session needs to know before the records
/// are decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordsHead {
    /// Records in the line.
    pub records: usize,
    /// How far behind the tip of the shard the batch is.
    pub millis_behind_latest: Option<i64>,
    /// Bytes of the daemon line the items' payloads point into (0 if they own them): the
    /// line stays pinned until its last record is done.
    pub line_bytes: usize,
    /// Answer `status` before the records are delivered, if the batch fits under the
    /// in-flight bounds counting one item per record (the lease asks this for large lines
    /// whose structure it has checked: see [`Admission::acknowledged_ahead`]).
    pub ahead: bool,
    /// Answer `status` only once every item in flight is done, whatever the in-flight
    /// bounds allow (a host server's lease that holds no overlap slot: see
    /// [`crate::lease::Overlap`]). Never acknowledged ahead.
    pub finish_first: bool,
}

/// A `processRecords` line admitted by [`Session::handle_records`]: the ids its records
/// get, and how many are still to be delivered with [`Session::handle_delivered`]. Only
/// the session makes one, and one is open at a time, so the ids a mapper numbers items
/// with are the tracker's.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "the admitted records must be delivered"]
pub struct Admission {
    next: RecordId,
    remaining: usize,
    /// Until the last part (possibly empty) is delivered.
    open: bool,
    ahead: bool,
    line_bytes: usize,
    millis_behind_latest: Option<i64>,
}

impl Admission {
    /// The id of the next record to deliver: the mapper numbers the next part's records
    /// from it, in order.
    pub fn next_id(&self) -> RecordId {
        self.next
    }

    /// Records still to be delivered.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// True once every record is delivered (a line of no records: once its one empty
    /// part is, so that delivering it starts the action as for any other line).
    pub fn is_complete(&self) -> bool {
        !self.open
    }

    /// Whether the action started (usually answered) before the records were delivered.
    pub fn acknowledged_ahead(&self) -> bool {
        self.ahead
    }

    /// How far behind the tip of the shard the batch is.
    pub fn millis_behind_latest(&self) -> Option<i64> {
        self.millis_behind_latest
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
    /// Records delivered that were not admitted, or a line admitted while another one is
    /// still being delivered, or `processRecords` given to [`Session::handle_message`]
    /// (a bug in the caller: lines go through [`Session::handle_records`]).
    #[error("records delivered out of turn: {0}")]
    Admission(&'static str),
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
            | SessionError::Tracker(_)
            | SessionError::Admission(_) => false,
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
    state: State,
    shard_id: Arc<str>,
    tracker: Tracker,
    /// The positions delivered in this lease: tells re-deliveries from errors.
    order: DeliveryOrder,
    /// The current `processRecords` answers only once nothing is in flight
    /// ([`RecordsHead::finish_first`]).
    finish_first: bool,
    /// The lease's checkpoint: from `initialize`, then every stored value.
    last_checkpoint: Option<Esn>,
    last_checkpoint_at: Instant,
    checkpointing_stopped: bool,
    /// `leaseLost` (or `shutdown` ZOMBIE) arrived: the work in flight was abandoned.
    lease_lost: bool,
    flush_requested: bool,
    /// Lines whose items may still be in flight: (id after the batch's last record, bytes).
    pinned: Pins,
    /// The entry of `pinned` that belongs to the batch being acknowledged, if any.
    current_pin: Option<RecordId>,
    /// Item memory of delivered parts that may still be in flight.
    part_pins: Pins,
    /// An admitted line has records still to be delivered.
    admitting: bool,
    outputs: std::collections::VecDeque<Output>,
    rng: u64,
    stats: Stats,
    /// Since when the current `processRecords` has waited for the in-flight bounds.
    capacity_wait: Option<Instant>,
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
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let rng = config.jitter_seed | 1;
        Session {
            config,
            state: State::AwaitInitialize,
            shard_id: Arc::from(""),
            tracker: Tracker::new(),
            order: DeliveryOrder::new(),
            finish_first: false,
            last_checkpoint: None,
            last_checkpoint_at: now,
            checkpointing_stopped: false,
            lease_lost: false,
            flush_requested: false,
            pinned: Pins::default(),
            current_pin: None,
            part_pins: Pins::default(),
            admitting: false,
            outputs: Default::default(),
            rng,
            stats: Stats::default(),
            capacity_wait: None,
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

    /// Bytes the unfinished records keep alive: their lines and their items' memory (what
    /// `max_in_flight_bytes` bounds). Sums the pins of the lines in flight (a few).
    pub fn in_flight_bytes(&self) -> usize {
        let oldest = self.tracker.oldest_unfinished();
        self.pinned.bytes_excluding(oldest, None) + self.part_pins.bytes_excluding(oldest, None)
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
    pub fn handle_message<R>(
        &mut self,
        msg: DaemonMessage<R>,
        now: Instant,
    ) -> Result<(), SessionError> {
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
                self.emit(Event::LeaseStarted {
                    shard: self.shard_id.to_string(),
                    checkpoint: self.last_checkpoint.as_ref().map(Esn::to_string),
                });
                self.outputs
                    .push_back(Output::Send(ProcessorMessage::Status {
                        response_for: Action::Initialize,
                    }));
                self.state = State::Idle;
            }
            (Phase::AwaitInitialize, _) => {
                return Err(self.unexpected(got, "initialize"));
            }
            (Phase::Idle, DaemonMessage::ProcessRecords { .. }) => {
                return Err(SessionError::Admission(
                    "processRecords goes through handle_records",
                ));
            }
            (Phase::Idle, DaemonMessage::ShutdownRequested) => {
                self.draining("shutdownRequested");
                self.begin(
                    Action::ShutdownRequested,
                    Kind::ShutdownRequested,
                    Step::AwaitDrain,
                    now,
                );
            }
            (Phase::Idle, DaemonMessage::ShardEnded) => {
                self.draining("shardEnded");
                self.begin(Action::ShardEnded, Kind::ShardEnd, Step::AwaitDrain, now);
            }
            (Phase::Idle, DaemonMessage::LeaseLost) => self.lease_lost(Action::LeaseLost, now),
            (Phase::Idle, DaemonMessage::Shutdown { reason }) => match reason {
                ShutdownReason::Terminate => {
                    self.draining("shutdown TERMINATE");
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

    /// The head of a `processRecords` line (the daemon's next action): admits its records,
    /// which the lease then delivers with [`Session::handle_delivered`], in order and in
    /// parts if it likes. With [`RecordsHead::ahead`], and when the batch fits under both
    /// in-flight bounds as if each record were one item (an aggregated record counts as one
    /// until it is decoded) and `max_in_flight` is not 0 (synchronous mode), the action
    /// starts now: usually `status` goes out at once (or first a checkpoint, when one is
    /// due). Otherwise it starts when the last record is delivered, so `status` waits for
    /// the bounds with the true item counts.
    ///
    /// Acknowledging first is what keeps decoding off the critical path: the daemon waits
    /// for `status` before it sends the next line, so the next line travels through the
    /// pipe while this one is decoded. At-least-once is unaffected — `status` only
    /// acknowledges receipt; checkpoints still cover only completed items.
    pub fn handle_records(
        &mut self,
        head: RecordsHead,
        now: Instant,
    ) -> Result<Admission, SessionError> {
        if !matches!(self.state, State::Idle) {
            let expected = match self.state {
                State::AwaitInitialize => "initialize",
                State::InAction { .. } => "the checkpoint reply",
                _ => "end of input",
            };
            return Err(self.unexpected(Action::ProcessRecords, expected));
        }
        if self.admitting {
            return Err(SessionError::Admission(
                "a line admitted before the last one was delivered",
            ));
        }
        self.order.begin_batch();
        self.finish_first = head.finish_first;
        self.emit(Event::BatchReceived {
            records: head.records,
            bytes: head.line_bytes,
            millis_behind_latest: head.millis_behind_latest,
        });
        let ahead = head.ahead && !head.finish_first && self.can_acknowledge_ahead(head.records);
        let admission = Admission {
            next: self.tracker.next_id(),
            remaining: head.records,
            open: true,
            ahead,
            line_bytes: head.line_bytes,
            millis_behind_latest: head.millis_behind_latest,
        };
        self.admitting = true;
        if ahead {
            self.emit(Event::AcknowledgedAhead {
                records: head.records,
            });
            self.current_pin = None;
        }
        if ahead {
            self.begin(
                Action::ProcessRecords,
                Kind::Records,
                Step::AwaitCapacity,
                now,
            );
            self.advance(now)?;
        }
        Ok(admission)
    }

    /// The next `records` of an admitted line, each with how many items it produced (the
    /// mapper numbered them from [`Admission::next_id`]), and `heap_bytes`, the memory of
    /// their items. Returns the ids of the records that are duplicates (ascending): their
    /// items must be dropped, not dispatched (they count as done). The records are placed in
    /// the delivery order and registered one by one, all before any item of the part is
    /// dispatched, so an error leaves no item of it running (and the process stops). The last part starts the
    /// action unless the line was acknowledged ahead.
    pub fn handle_delivered(
        &mut self,
        admission: &mut Admission,
        records: Vec<(Esn, u32)>,
        heap_bytes: usize,
        now: Instant,
    ) -> Result<Vec<RecordId>, SessionError> {
        if records.len() > admission.remaining || !self.admitting || !admission.open {
            return Err(SessionError::Admission(
                "more records than admitted, or not the open admission",
            ));
        }
        let last = records.len() == admission.remaining;
        let line_bytes = if last { admission.line_bytes } else { 0 };
        admission.remaining -= records.len();
        let duplicates = self.register(records, line_bytes, admission.millis_behind_latest)?;
        admission.next = self.tracker.next_id();
        self.part_pins.push(admission.next, heap_bytes);
        if last {
            self.admitting = false;
            admission.open = false;
            if !admission.ahead {
                self.begin(
                    Action::ProcessRecords,
                    Kind::Records,
                    Step::AwaitCapacity,
                    now,
                );
            }
        }
        self.advance(now)?;
        Ok(duplicates)
    }

    /// Whether the lease may map the next part of a line: the items in flight are under
    /// `--max-in-flight` and the memory of the parts they belong to under
    /// `--max-in-flight-bytes` (an upper bound: a part counts until every record up to its
    /// last one is done).
    pub fn may_map_more(&mut self) -> bool {
        let oldest = self.tracker.oldest_unfinished();
        self.part_pins.release(oldest);
        self.tracker.in_flight() <= self.config.max_in_flight
            && self.part_pins.bytes_excluding(oldest, None) <= self.config.max_in_flight_bytes
    }

    /// How large one part of a line may be (see [`PartBudget`]).
    pub fn part_budget(&self) -> PartBudget {
        PartBudget::of(self.config.max_in_flight, self.config.max_in_flight_bytes)
    }

    /// Whether a batch of `records` records fits under the bounds as if each were one
    /// item, so that it may be acknowledged before it is decoded.
    fn can_acknowledge_ahead(&self, records: usize) -> bool {
        matches!(self.state, State::Idle)
            && self.config.max_in_flight > 0
            && self.tracker.in_flight() + records <= self.config.max_in_flight
            && self.pinned_bytes_excluding(None) <= self.config.max_in_flight_bytes
    }

    /// Places and registers delivered records with the tracker (duplicates with no
    /// items); the ids of the duplicates. `line_bytes` (the last part of a line) pins the
    /// line while its items may be in flight.
    fn register(
        &mut self,
        records: Vec<(Esn, u32)>,
        line_bytes: usize,
        millis_behind_latest: Option<i64>,
    ) -> Result<Vec<RecordId>, SessionError> {
        self.emit(Event::RecordsDelivered {
            records: records.len(),
            items: records.iter().map(|(_, n)| *n as usize).sum(),
            millis_behind_latest,
        });
        let mut duplicates = Vec::new();
        let mut items = 0u64;
        for (esn, n) in records {
            if let Placement::Duplicate { last } = self.order.place(&esn)? {
                if self.config.on_duplicate == OnDuplicate::Fail {
                    return Err(SessionError::Duplicate { esn, last });
                }
                self.emit(Event::DuplicateSkipped {
                    position: esn.to_string(),
                    last_delivered: last.to_string(),
                });
                duplicates.push(self.tracker.deliver(esn, 0));
                self.stats.duplicates += 1;
                continue;
            }
            self.tracker.deliver(esn, n);
            items += u64::from(n);
            self.stats.records += 1;
            self.stats.items += u64::from(n);
        }
        self.current_pin = None;
        if items > 0 && line_bytes > 0 {
            let end = self.tracker.next_id();
            self.pinned.push(end, line_bytes);
            self.current_pin = Some(end);
        }
        Ok(duplicates)
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
        if self.lease_lost {
            // Work of a lost lease failed (its report crossed `leaseLost`): nothing can be
            // checkpointed any more, so it changes nothing, and the lease ends as the
            // daemon asked instead of with an error.
            self.emit(Event::ItemsFailed {
                worker,
                items: records.len(),
                error,
                retry: None,
            });
            return Ok(());
        }
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
        let when = match &self.state {
            State::Closed => Some(InputClosed::AfterFinalStatus),
            State::AwaitInitialize | State::Idle => Some(InputClosed::BetweenActions {
                in_flight: self.tracker.in_flight(),
            }),
            State::InAction { action, .. } => Some(InputClosed::InAction {
                action: action.as_str(),
            }),
            State::Finished => None,
        };
        if let Some(when) = when {
            self.emit(Event::InputClosed { when });
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
        self.lease_lost = true;
        self.emit(Event::Abandoned {
            action: action.as_str(),
            items: self.tracker.in_flight(),
        });
        self.tracker.abandon();
        self.pinned.clear();
        self.part_pins.clear();
        self.outputs.push_back(Output::Abandon);
        self.begin(action, Kind::LeaseLost, Step::Reply, now);
    }

    /// A drain begins: tell the sink how much is in flight.
    fn draining(&mut self, action: &'static str) {
        self.emit(Event::Draining {
            action,
            in_flight: self.tracker.in_flight(),
        });
    }

    /// An event for the lease's telemetry sink.
    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
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
                    let (max_items, max_bytes) = match (kind, self.finish_first) {
                        (Kind::Records, true) => (0, 0),
                        _ => (self.config.max_in_flight, self.config.max_in_flight_bytes),
                    };
                    if self.tracker.in_flight() > max_items || self.older_pinned_bytes() > max_bytes
                    {
                        self.capacity_wait.get_or_insert(now);
                        self.request_flush();
                        return Ok(());
                    }
                    if let Some(since) = self.capacity_wait.take() {
                        self.emit(Event::Backpressure {
                            waited: now.saturating_duration_since(since),
                        });
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
                    let (target, attempt) = (target.clone(), *attempt);
                    self.emit(Event::CheckpointRequested {
                        position: target.to_string(),
                        attempt: attempt + 1,
                    });
                    self.outputs.push_back(Output::Send(target.message()));
                    Step::AwaitReply { target, attempt }
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
        self.pinned.release(self.tracker.oldest_unfinished());
        self.pinned_bytes_excluding(self.current_pin)
    }

    /// Bytes of lines that unfinished items may keep alive, except the line of `current`.
    fn pinned_bytes_excluding(&self, current: Option<RecordId>) -> usize {
        self.pinned
            .bytes_excluding(self.tracker.oldest_unfinished(), current)
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
        let next = match error.as_deref() {
            None => {
                self.emit(Event::CheckpointStored {
                    position: target.to_string(),
                });
                self.last_checkpoint = Some(match &target {
                    Target::At(esn) => esn.clone(),
                    Target::ShardEnd => Esn::new(SequenceNumber::sentinel(Sentinel::ShardEnd), 0),
                });
                self.last_checkpoint_at = now;
                self.stats.checkpoints += 1;
                Step::Reply
            }
            Some(e) => self.on_checkpoint_error(kind, target, attempt, e, now)?,
        };
        if let State::InAction { step, .. } = &mut self.state {
            *step = next;
        }
        Ok(())
    }

    /// A checkpoint reply with `error`: the next step (a retry after a backoff, or the
    /// status), and the event that says so; failing to store SHARD_END is fatal.
    fn on_checkpoint_error(
        &mut self,
        kind: Kind,
        target: Target,
        attempt: u32,
        error: &str,
        now: Instant,
    ) -> Result<Step, SessionError> {
        let retriable = matches!(
            error,
            "ThrottlingException" | "KinesisClientLibDependencyException"
        );
        let (next, step) = if retriable && attempt < self.config.checkpoint_retries {
            let delay = self.backoff(attempt);
            let retry = CheckpointRetry::RetryIn {
                retry: attempt + 1,
                of: self.config.checkpoint_retries,
                delay,
            };
            let until = now + delay;
            let step = Step::Backoff {
                target: target.clone(),
                attempt,
                until,
            };
            (retry, step)
        } else if error == "ShutdownException" {
            // The lease is gone (also at shard end: a new owner redoes it).
            self.checkpointing_stopped = true;
            (CheckpointRetry::Stopped, Step::Reply)
        } else if kind == Kind::ShardEnd {
            let error = match retriable {
                true => format!("{error} after {} attempts", attempt + 1),
                false => error.to_owned(),
            };
            return Err(SessionError::ShardEndFailed {
                shard: self.shard_id.to_string(),
                error,
            });
        } else if retriable {
            self.last_checkpoint_at = now;
            let attempts = attempt + 1;
            (CheckpointRetry::GaveUp { attempts }, Step::Reply)
        } else {
            self.last_checkpoint_at = now;
            let last_stored = self.last_checkpoint.as_ref().map(Esn::to_string);
            (CheckpointRetry::NotRetried { last_stored }, Step::Reply)
        };
        self.emit(Event::CheckpointFailed {
            position: target.to_string(),
            error: error.to_owned(),
            next,
        });
        Ok(step)
    }

    /// Exponential backoff with "equal jitter": half fixed, half random.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.config.backoff_max);
        // splitmix64: a tiny deterministic generator; seeded per process.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease at shard end whose SHARD_END checkpoint gets `error`: what was sent.
    fn shard_end_reply(error: &str, retries: u32) -> Result<Vec<ProcessorMessage>, SessionError> {
        let now = Instant::now();
        let config = SessionConfig {
            checkpoint_retries: retries,
            ..SessionConfig::default()
        };
        let mut s = Session::new(config, now);
        let initialize = DaemonMessage::<()>::Initialize {
            shard_id: "shardId-0".into(),
            sequence_number: None,
            sub_sequence_number: None,
        };
        s.handle_message(initialize, now)?;
        s.handle_message(DaemonMessage::<()>::ShardEnded, now)?;
        let reply = DaemonMessage::<()>::Checkpoint {
            sequence_number: None,
            sub_sequence_number: None,
            error: Some(error.into()),
        };
        s.handle_message(reply, now)?;
        let mut sent = Vec::new();
        while let Some(out) = s.poll_output() {
            if let Output::Send(m) = out {
                sent.push(m);
            }
        }
        Ok(sent)
    }

    #[test]
    fn shard_end_checkpoint_errors_follow_the_table() {
        // ShutdownException: the lease is gone, also at shard end; answered, no error.
        let sent = shard_end_reply("ShutdownException", 5).unwrap();
        assert_eq!(
            sent.last(),
            Some(&ProcessorMessage::Status {
                response_for: Action::ShardEnded
            })
        );
        // Anything else, or retries exhausted: SHARD_END not stored is fatal.
        for (error, retries) in [("InvalidStateException", 5), ("ThrottlingException", 0)] {
            let got = shard_end_reply(error, retries);
            assert!(
                matches!(got, Err(SessionError::ShardEndFailed { .. })),
                "{error}: {got:?}"
            );
        }
        // A retriable error with retries left: a backoff, no status yet.
        let sent = shard_end_reply("ThrottlingException", 5).unwrap();
        let shard_ended = ProcessorMessage::Status {
            response_for: Action::ShardEnded,
        };
        assert!(!sent.contains(&shard_ended), "{sent:?}");
    }

    /// A `processRecords` that waits for the in-flight bound says, once it may answer, how
    /// long it waited; one that did not wait says nothing.
    #[test]
    fn a_wait_for_capacity_is_reported_with_its_length() {
        let t0 = Instant::now();
        let config = SessionConfig {
            max_in_flight: 2,
            ..SessionConfig::default()
        };
        let mut s = Session::new(config, t0);
        let initialize = DaemonMessage::<()>::Initialize {
            shard_id: "shardId-0".into(),
            sequence_number: None,
            sub_sequence_number: None,
        };
        s.handle_message(initialize, t0).unwrap();
        let waits = |s: &mut Session| -> (Vec<Duration>, bool) {
            let (mut waited, mut status) = (Vec::new(), false);
            while let Some(out) = s.poll_output() {
                match out {
                    Output::Event(Event::Backpressure { waited: w }) => waited.push(w),
                    Output::Send(ProcessorMessage::Status { .. }) => status = true,
                    _ => {}
                }
            }
            (waited, status)
        };
        waits(&mut s);
        let batch = |s: &mut Session, from: u64, n: u64, now: Instant| -> Vec<RecordId> {
            let head = RecordsHead {
                records: n as usize,
                millis_behind_latest: None,
                line_bytes: 0,
                ahead: false,
                finish_first: false,
            };
            let mut admission = s.handle_records(head, now).unwrap();
            let first = admission.next_id().0;
            let records = (from..from + n)
                .map(|i| {
                    (
                        Esn::new(SequenceNumber::parse(&i.to_string()).unwrap(), 0),
                        1,
                    )
                })
                .collect();
            s.handle_delivered(&mut admission, records, 0, now).unwrap();
            (first..first + n).map(RecordId).collect()
        };
        // 5 items, at most 2 in flight: no status until 3 are done, 250 ms later.
        let ids = batch(&mut s, 1, 5, t0);
        assert_eq!(waits(&mut s), (vec![], false));
        let t1 = t0 + Duration::from_millis(250);
        s.handle_completed(&ids[..3], t1).unwrap();
        assert_eq!(waits(&mut s), (vec![Duration::from_millis(250)], true));
        // 1 more item (3 in flight, 2 done): the bound holds again only after one is done.
        s.handle_completed(&ids[3..], t1).unwrap();
        let ids = batch(&mut s, 6, 1, t1);
        assert_eq!(waits(&mut s), (vec![], true), "no wait, no event");
        s.handle_completed(&ids, t1).unwrap();
    }

    /// A failure report that crosses `leaseLost` (the worker failed before the daemon's
    /// line arrived; the lease loop read the line first) ends nothing: the lease was lost,
    /// no checkpoint can follow, and the lease ends as the daemon asked. Before it, the
    /// same report stops the lease.
    #[test]
    fn a_failure_after_lease_lost_is_not_an_error() {
        let now = Instant::now();
        // A lease with two records in flight; the first one's id.
        let started = || {
            let mut s = Session::new(SessionConfig::default(), now);
            let initialize = DaemonMessage::<()>::Initialize {
                shard_id: "shardId-0".into(),
                sequence_number: None,
                sub_sequence_number: None,
            };
            s.handle_message(initialize, now).unwrap();
            let head = RecordsHead {
                records: 2,
                millis_behind_latest: None,
                line_bytes: 0,
                ahead: false,
                finish_first: false,
            };
            let mut admission = s.handle_records(head, now).unwrap();
            let first = admission.next_id();
            let records = (1..=2u64)
                .map(|i| {
                    (
                        Esn::new(SequenceNumber::parse(&i.to_string()).unwrap(), 0),
                        1,
                    )
                })
                .collect();
            s.handle_delivered(&mut admission, records, 0, now).unwrap();
            (s, first)
        };
        let (mut before, first) = started();
        let got = before.handle_failed(0, &[first], "boom".into());
        assert!(
            matches!(got, Err(SessionError::WorkerFailed { .. })),
            "{got:?}"
        );
        let (mut s, first) = started();
        s.handle_message(DaemonMessage::<()>::LeaseLost, now)
            .unwrap();
        s.handle_failed(0, &[first], "boom".into()).unwrap();
        let mut sent = Vec::new();
        while let Some(out) = s.poll_output() {
            if let Output::Send(m) = out {
                sent.push(m);
            }
        }
        assert_eq!(
            sent.last(),
            Some(&ProcessorMessage::Status {
                response_for: Action::LeaseLost
            })
        );
    }
}
