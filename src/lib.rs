//! rsmld: a record processor for the Amazon Kinesis Client Library's MultiLangDaemon.
//!
//! The Java daemon owns leases, shard discovery, resharding and checkpoint storage; for
//! each shard lease it starts one child process and talks newline-delimited JSON with it.
//! rsmld is that child. Its job is to process every record of the shard on every core
//! while telling the daemon, through checkpoints, only what is truly done.
//!
//! # Quickstart: your own processor
//!
//! A processor is a [`Handler`] (what one worker does with a batch of items), a
//! [`HandlerFactory`] (one handler per worker) and a `main` that runs rsmld's program with
//! it: a binary that takes every rsmld flag, `--properties` and `check`, and speaks the
//! protocol, under its own name. In `Cargo.toml`: `rsmld = "0.1"` (and
//! `clap = { version = "4", features = ["derive"] }` for a handler with flags of its own,
//! [`HandlerGroup`], as in `examples/json_validator.rs`).
//!
//! ```
//! use std::sync::Arc;
//!
//! use rsmld::{
//!     BatchError, Handler, HandlerDescriptor, HandlerError, HandlerFactory, Item, LeaseId,
//!     Payload, Program, WorkerContext,
//! };
//!
//! /// Counts the bytes it was given; `Ok` means the items are done and may be checkpointed.
//! struct ByteCounter {
//!     bytes: usize,
//! }
//!
//! impl Handler for ByteCounter {
//!     fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
//!         for item in items {
//!             // A payload that is not base64 fails the whole batch (`?`).
//!             self.bytes += item.data.bytes()?.len();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! struct Factory;
//!
//! impl HandlerFactory for Factory {
//!     fn create(&self, _ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
//!         Ok(Box::new(ByteCounter { bytes: 0 }))
//!     }
//! }
//!
//! /// The binary: rsmld under its own name, with `count` as the default handler.
//! fn program() -> Program {
//!     let count = HandlerDescriptor::fixed("count", "Counts bytes", Arc::new(Factory));
//!     Program::new("byte_counter", "1.0.0").default_handler(count)
//! }
//!
//! // Its `main` is `fn main() -> std::process::ExitCode { rsmld::run(program()) }` (it
//! // reads the daemon on stdin, so it does not run here). The handler runs on a few items:
//! let mut handler = ByteCounter { bytes: 0 };
//! let lease = LeaseId::new("app", "shardId-000000000000");
//! let items = [
//!     Item::new("49590338271490256608559692538361571095921575989136588898", "k1", Payload::Bytes(b"hello")),
//!     Item::new("49590338271490256608559692538361571095921575989136588899", "k2", Payload::Base64("d29ybGQh")),
//! ];
//! handler.process(&lease, &items).unwrap();
//! assert_eq!(handler.bytes, 5 + 6);
//! let bad = [Item::new("1", "k", Payload::Base64("not base64!"))];
//! assert!(matches!(handler.process(&lease, &bad), Err(BatchError::Batch(_))));
//! // ... through the factory, as each worker gets it:
//! let mut worker = Factory.create(&WorkerContext::new(0, 2)).unwrap();
//! worker.process(&lease, &items).unwrap();
//! // ... and the binary's command line names it:
//! assert_eq!(program().command().render_version(), "byte_counter 1.0.0\n");
//! ```
//!
//! The same `main`, as the binary's `src/main.rs`:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use rsmld::{HandlerDescriptor, Program};
//! # fn program() -> Program {
//! #     let factory = Arc::new(rsmld::handler::discard::DiscardFactory::new());
//! #     Program::new("byte_counter", "1.0.0")
//! #         .default_handler(HandlerDescriptor::fixed("count", "Counts bytes", factory))
//! # }
//! fn main() -> std::process::ExitCode {
//!     rsmld::run(program())
//! }
//! ```
//!
//! The public surface is what the crate root re-exports (the handler API, the pieces of a
//! custom binary, the telemetry events), and the [`handler`] module (the built-in handlers)
//! and [`telemetry`]; every other module is the implementation, hidden from these docs.
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
//! app                            the program: child mode, subcommands, exit codes
//! cli                            flags and properties → config; the handler registry; check
//! runtime, lease                 what leases share; one lease's select loop
//! pool                           workers, batching, failure policy, dead letters, watchdog
//! handler                        the Handler trait and the built-in handlers
//! process                        the exec children's guard, reaper and tags
//! pipeline                       item, split/, mapper, partition
//! codec                          reader, payload views, decode, parser, scan, writer
//! protocol                       message, sequence, order, tracker, budget, session (pure)
//! metrics                        a telemetry sink: Prometheus text, metrics files
//! telemetry, json, kpl, sys      leaves
//! testkit (feature)              the daemon model, encoders, transcript players (tests, tools)
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
//! - **Handlers** receive batches and report them done only when they are (written and
//!   flushed, for the file handler): `process` returning `Ok`, or a pipelining handler's
//!   `Ack` resolved as done, is a promise the checkpoint relies on; an `Ack` dropped
//!   unresolved fails its items.
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
pub mod attach;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod codec;
pub mod handler;
#[doc(hidden)]
pub mod http;
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
pub mod serve;
#[doc(hidden)]
pub mod sys;
pub mod telemetry;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;
