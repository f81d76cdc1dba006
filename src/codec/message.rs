//! The wire messages of both directions in one place: the protocol's types
//! ([`crate::protocol::message`]) with the codec's record and decoder, for code that
//! writes or reads daemon lines (the tests' daemon model, the simulator, fuzz targets).

pub use super::decode::{DaemonMessage, DecodeError, RecordText};
pub use super::parser::{decode_record_at, is_base64, parse_record_at};
pub use super::payload::{Base64Text, LineBuf, Record};
pub use super::record::convert_record;
pub use crate::protocol::message::{Action, ProcessorMessage, ShutdownReason};
