//! rsmld: a record processor for the Amazon Kinesis Client Library's MultiLangDaemon.
//!
//! The Java daemon owns leases, shard discovery, resharding and checkpoint storage; for
//! each shard lease it starts one child process and talks newline-delimited JSON with it.
//! rsmld is that child. Its job is to process every record of the shard on every core
//! while telling the daemon, through checkpoints, only what is truly done.
//!
//! # The data path
//!
//! One lease, hop by hop (a runtime runs one or many of them on one pool):
//!
//! ```text
//! daemon ─stdin─▶ codec::reader (thread): line framing into      src/codec/reader.rs
//!                   │ recycled buffers, Prescan while bytes arrive
//!                   ▼
//!                 lease: the select loop (line | worker event | timer)       src/lease.rs
//!                   │ large processRecords: codec::scan (field table
//!                   │   shared with the decoder) → RecordsHead
//!                   │ otherwise: codec::decode (serde; fast record parser)
//!                   ▼
//!                 Session::handle_records(head) → Admission        protocol::session
//!                   │ (acknowledge-ahead: status may go out now)
//!                   ▼
//!                 Mapper: records → items → one block per worker    pipeline::mapper
//!                   │ numbered from the Admission; split/ per record; in parts
//!                   │ under the in-flight budget; parallel (rayon) for large lines
//!                   │ worker = FNV-1a(key) % N                     pipeline::partition
//!                   ▼
//!                 Session::handle_delivered(admission, (esn, n)…)  protocol::session
//!                   │ Tracker.deliver; duplicates come back and are dropped
//!                   ▼
//!                 PoolLease::dispatch → bounded channel per worker       pool
//!          ┌────────┼────────┐
//!       worker 0  worker 1 … worker N-1   (threads; one Handler each, all leases) handler
//!          └────────┴────┬───┘
//!                        ▼ completions (the lease's own unbounded channel)
//!                 Session::handle_completed → Tracker: end of the completed prefix
//!                   │ poll_output: Send | Event | Flush | Abandon
//!                   ▼
//! daemon ◀─stdout─ codec::writer: checkpoint(position) / status, one write + flush each
//!                 telemetry::Sink ◀─ events (the default sink writes the log lines)
//! ```
//!
//! The layers, each importing only those below it (no cycles):
//!
//! ```text
//! app, config, check             the program, the command line
//! runtime, lease                 what leases share; one lease's select loop
//! pool                           workers, batching, failure policy, dead letters, watchdog
//! handler                        the Handler trait and the built-in handlers
//! pipeline                       item, split/, mapper, partition
//! codec                          reader, payload views, decode, parser, scan, writer
//! protocol                       message, sequence, order, tracker, budget, session (pure)
//! telemetry, json, kpl, sys      leaves
//! ```
//!
//! - The **lease** is the only code that touches its protocol streams. It never writes
//!   outside an action's window and writes from one thread only.
//! - The **session** decides everything: when to answer, when to wait (backpressure,
//!   draining), when and where to checkpoint, how to treat checkpoint errors. It is fed
//!   messages, record counts, completions and the time, and returns outputs (messages,
//!   events); it never sees an item or a buffer, and is tested by feeding it transcripts.
//! - The **tracker** knows, for every delivered record in order, how many of its items are
//!   unfinished. The checkpointable position is the last record of the longest completed
//!   prefix, with its sub-sequence number. A failed item pins it.
//! - The **codec** and the **pipeline** hold every speed trick (buffer recycling, the
//!   prescan and structural scan, the fast record parser, the parallel mapper), so the
//!   protocol core never changes for speed.
//! - The **pool** keeps per-key order within a lease (same key → same worker → FIFO) while
//!   N workers run in parallel for every lease, and turns handler errors and panics into
//!   failures of the lease whose batch it was.
//! - **Handlers** receive batches and return only when the items are done (written and
//!   flushed, for the file handler): a completion is a promise the checkpoint relies on.
//!
//! At-least-once: nothing is checkpointed that was not processed; a failure stops
//! checkpointing and exits non-zero, the daemon restarts, and processing resumes from the
//! last checkpoint.

// The public surface: what a handler crate and a custom binary need, at the crate root
// (the quickstart above uses nothing else), plus the `handler` and `telemetry` modules
// (the built-in handlers, the events). Everything else is the implementation: public only
// because the crate's own tests, benches, fuzz targets and tools use it, hidden from the
// docs and free to change in any release.
pub use app::run;
pub use cli::config::ConfigError;
pub use cli::program::Program;
pub use cli::registry::{General, HandlerDescriptor, HandlerGroup, Need};
pub use handler::{
    Ack, BatchError, Handler, HandlerError, HandlerFactory, Interrupt, Interrupter, WorkerContext,
};
pub use pipeline::item::{Item, Payload};
pub use telemetry::{Event, LeaseId, Sink};

#[doc(hidden)]
pub mod app;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod codec;
pub mod handler;
#[doc(hidden)]
pub mod json;
#[doc(hidden)]
pub mod kpl;
#[doc(hidden)]
pub mod lease;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod pipeline;
#[doc(hidden)]
pub mod pool;
#[doc(hidden)]
pub mod process;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod sys;
pub mod telemetry;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;
