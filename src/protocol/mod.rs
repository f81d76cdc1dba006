//! The MultiLangDaemon protocol, processor side.
//!
//! The Java daemon starts one child per shard lease and speaks newline-delimited JSON on
//! its stdin and stdout. Per child, the grammar is:
//!
//! ```text
//! session    = initialize processRecords* [shutdownRequested] end EOF
//! end        = leaseLost | shardEnded | shutdown(ZOMBIE | TERMINATE)     ; shutdown: KCL 1.x
//! action     = daemon message, answered by exactly one status{responseFor: action}
//! in an action (processRecords, shutdownRequested, shardEnded only):
//!              (checkpoint-request  checkpoint-reply)* status
//! ```
//!
//! Rules this module enforces:
//! - the daemon never pipelines: it sends one action and reads until its `status`;
//! - after a checkpoint request the very next daemon line must be the checkpoint reply;
//! - nothing is written outside an action's window (a stray line is read during the *next*
//!   action and misinterpreted there), and nothing but the daemon model's fields is
//!   written (an unknown field makes the daemon skip the line, and both sides hang);
//! - no checkpoint during `initialize` or `leaseLost` (there is no checkpointer);
//! - a checkpoint carries the sub-sequence number; at shard end it carries a null sequence
//!   number, which the daemon turns into SHARD_END.
//!
//! - records arrive in increasing position order: a record at or below the last delivered
//!   one is an exact re-delivery (a duplicate) or a protocol error ([`order`]);
//! - a checkpoint reply echoes the request; `data` is standard padded base64.
//!
//! [`message`] holds the wire types, [`sequence`] the big-integer sequence numbers,
//! [`order`] the delivery-order rules, [`tracker`] the checkpointable position,
//! [`budget`] the in-flight memory bounds, and [`session`] the pure state machine that
//! applies the rules.
//!
//! Why this layer is pure: every rule above is about the order of messages, positions and
//! counts, and is tested by feeding messages and numbers. It imports nothing of the crate
//! but the leaves ([`crate::json`], [`crate::telemetry`]'s event types): no items, buffers,
//! routing, threads or splitter. Bytes become messages in [`crate::codec`], records become
//! items in [`crate::pipeline`], and a lease ([`crate::lease`]) connects them.

pub mod budget;
pub mod message;
pub mod order;
pub mod sequence;
pub mod session;
pub mod tracker;
