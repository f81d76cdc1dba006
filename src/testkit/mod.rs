//! Test support, shared by the crate's tests and its benchmark simulator (feature
//! `testkit`; **unstable**: not part of the public API, it changes with the tests).
//!
//! The daemon is modelled once, here, so that the tests and the simulator
//! (`src/bin/mld_sim.rs`) cannot disagree about what the Java daemon accepts:
//!
//! - [`daemon`]: the daemon's checkpoint bookkeeping ([`daemon::CheckpointModel`]): the
//!   range check `[last checkpoint, largest delivered]`, null as "largest permitted"
//!   (SHARD_END during `shardEnded`), `InvalidStateException` when there is no checkpointer,
//!   the reply that echoes the request.
//! - [`encode`]: daemon-side encoders: `initialize` and `processRecords` lines, records,
//!   KPL framing.
//! - [`transcript`]: the transcript format (`tests/transcripts/*.jsonl`), one player for it
//!   over any [`transcript::Peer`], and the daemon's side of one action
//!   ([`transcript::run_action`]).
//! - [`in_process`]: a peer that runs the production loop in this process, over in-memory
//!   pipes, with a real worker pool.
//!
//! Test support panics on malformed test input (a transcript that is not JSON, a sequence
//! number that does not parse): that is a broken test, not a condition to handle.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: panicking on malformed test input is how a broken test fails"
)]

pub mod daemon;
pub mod encode;
pub mod in_process;
pub mod tools;
pub mod transcript;
