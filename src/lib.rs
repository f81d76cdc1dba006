//! rsmld: a record processor for the Amazon Kinesis Client Library's MultiLangDaemon.
//!
//! The Java daemon owns leases, shard discovery, resharding and checkpoint storage; for
//! each shard lease it starts one child process and talks newline-delimited JSON with it.
//! rsmld is that child. Its job is to process every record of the shard on every core
//! while telling the daemon, through checkpoints, only what is truly done.
//!
//! # The data path
//!
//! ```text
//! daemon ─stdin─▶ driver (reader thread + one loop)         src/driver.rs
//!                   │ decode line (lenient)                  protocol::message
//!                   ▼
//!                 Session: pure state machine                protocol::session
//!                   │ split record → items                   split
//!                   │ Tracker.deliver(record, n items)       checkpoint
//!                   ▼
//!                 Pool: FNV-1a(key) % N → bounded channel    pool
//!          ┌────────┼────────┐
//!       worker 0  worker 1 … worker N-1   (rayon threads; one Handler each)  handler
//!          └────────┴────┬───┘
//!                        ▼ completions (unbounded channel)
//!                 Session: Tracker.complete → position = end of completed prefix
//!                   │
//! daemon ◀─stdout─ driver: checkpoint(position) / status, one write + flush each
//! ```
//!
//! - The **driver** is the only code that touches the protocol streams. It never writes
//!   outside an action's window and writes from one thread only.
//! - The **session** decides everything: when to dispatch, when to wait (backpressure,
//!   draining), when and where to checkpoint, how to treat checkpoint errors. It is fed
//!   messages, completions and the time, and returns outputs; it is tested by feeding it
//!   transcripts.
//! - The **tracker** knows, for every delivered record in order, how many of its items are
//!   unfinished. The checkpointable position is the last record of the longest completed
//!   prefix, with its sub-sequence number. A failed item pins it.
//! - The **pool** keeps per-key order (same key → same worker → FIFO) while N workers run
//!   in parallel, and turns handler errors and panics into failures.
//! - **Handlers** receive batches and return only when the items are done (written and
//!   flushed, for the file handler): a completion is a promise the checkpoint relies on.
//!
//! At-least-once: nothing is checkpointed that was not processed; a failure stops
//! checkpointing and exits non-zero, the daemon restarts, and processing resumes from the
//! last checkpoint.

pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod driver;
pub mod handler;
pub mod item;
pub mod json;
pub mod kpl;
pub mod metrics;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod split;
pub mod sys;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
