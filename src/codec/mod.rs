//! Bytes ⇄ messages: everything between the protocol streams and the protocol core.
//!
//! The protocol core ([`crate::protocol`]) is pure and knows messages only; every trick
//! that makes reading the daemon's lines fast lives here, so the core never changes for
//! speed:
//!
//! - [`reader`]: the stdin thread; line framing into recycled buffers, with a prescan of
//!   the records while the bytes arrive;
//! - [`payload`]: the shared line buffer and the payload views that point into it;
//! - [`decode`]: the serde decode path, and the field table of the daemon's top-level
//!   fields, shared with the scan;
//! - [`record`]: a record's parsed fields, their conversion, and the decode errors;
//! - [`bytes`]: the word-at-a-time byte searches the scan and the parser share;
//! - [`parser`]: the fast record parser (serde only for shapes the daemon does not write)
//!   and the payload check;
//! - [`scan`]: the structural scan of `processRecords` lines, so records can be parsed on
//!   several threads;
//! - [`writer`]: processor messages onto stdout, one write and one flush each.
//!
//! [`message`] gathers the wire types for users of the codec (tests, tools).

pub mod bytes;
pub mod decode;
pub mod message;
pub mod parser;
pub mod payload;
pub mod reader;
pub mod record;
pub mod scan;
pub mod writer;

pub use decode::{DaemonMessage, DecodeError};
pub use payload::{Base64Text, LineBuf, Record};
