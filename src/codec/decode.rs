//! The serde decode path: a daemon line into a [`DaemonMessage`], leniently, as the daemon
//! may add fields and sends `null` freely (unknown fields are ignored;
//! `subSequenceNumber`, `millisBehindLatest` and `approximateArrivalTimestamp` may be
//! missing or null). A line is decoded through one flat struct (`RawDaemonMessage`)
//! rather than serde's internally tagged enums, which would buffer a whole 64 MiB
//! `processRecords` line into an intermediate tree first.
//!
//! `RawDaemonMessage` is also the *field table* of the structural scan
//! ([`super::scan`]): the scan checks every top-level value it does not use by decoding it
//! as this struct's field of the same name (`top_level_field`), so the two cannot drift
//! apart (they did once, when the scan had its own copy of the field types).

use std::sync::Arc;

use serde::Deserialize;

use super::payload::{LineBuf, Record};
use super::record::convert_record;
pub use super::record::{DecodeError, RecordText};
use crate::protocol::message::{Action, ShutdownReason};
use crate::protocol::sequence::SequenceNumber;

/// A daemon message as the codec decodes it: `processRecords` records carry payload
/// views into their line.
pub type DaemonMessage = crate::protocol::message::DaemonMessage<Record>;

impl DaemonMessage {
    /// Decodes one line from the daemon (without its line terminator); payloads are copied.
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_inner(line, None)
    }

    /// Decodes one line held in `line` (possibly followed by its line terminator, which is
    /// ignored); record payloads point into it instead of being copied.
    pub fn decode_shared(line: &Arc<LineBuf>, len: usize) -> Result<Self, DecodeError> {
        Self::decode_inner(&line[..len], Some(line))
    }

    fn decode_inner(line: &[u8], shared: Option<&Arc<LineBuf>>) -> Result<Self, DecodeError> {
        let raw: RawDaemonMessage<'_> = serde_json::from_slice(line).map_err(DecodeError::Json)?;
        let action = raw.action.ok_or(DecodeError::MissingAction)?;
        let parsed =
            Action::from_wire(&action).ok_or_else(|| DecodeError::UnknownAction(action.clone()))?;
        Ok(match parsed {
            Action::Initialize => DaemonMessage::Initialize {
                shard_id: raw
                    .shard_id
                    .ok_or(DecodeError::MissingField("initialize", "shardId"))?,
                sequence_number: raw
                    .sequence_number
                    .map(|s| SequenceNumber::parse(&s))
                    .transpose()
                    .map_err(DecodeError::Sequence)?,
                sub_sequence_number: raw.sub_sequence_number,
            },
            Action::ProcessRecords => DaemonMessage::ProcessRecords {
                records: convert_records(
                    raw.records
                        .ok_or(DecodeError::MissingField("processRecords", "records"))?,
                    shared,
                )?,
                millis_behind_latest: raw.millis_behind_latest,
            },
            Action::ShutdownRequested => DaemonMessage::ShutdownRequested,
            Action::LeaseLost => DaemonMessage::LeaseLost,
            Action::ShardEnded => DaemonMessage::ShardEnded,
            Action::Shutdown => DaemonMessage::Shutdown {
                reason: ShutdownReason::from_wire(
                    &raw.reason
                        .ok_or(DecodeError::MissingField("shutdown", "reason"))?,
                ),
            },
            Action::Checkpoint => DaemonMessage::Checkpoint {
                sequence_number: raw.sequence_number,
                sub_sequence_number: raw.sub_sequence_number,
                error: raw.error,
            },
            Action::Status => return Err(DecodeError::UnknownAction(action)),
        })
    }
}

/// Owned records from raw ones: payloads become ranges of `shared` where they were
/// borrowed from it; consecutive equal sequence numbers share one allocation.
fn convert_records(
    raw: Vec<RecordText<'_>>,
    shared: Option<&Arc<LineBuf>>,
) -> Result<Vec<Record>, DecodeError> {
    let mut out: Vec<Record> = Vec::with_capacity(raw.len());
    for r in raw {
        let record = convert_record(r, shared, out.last().map(|p| &p.sequence_number))?;
        out.push(record);
    }
    Ok(out)
}

/// The field table: every top-level field of a daemon line with the type the decoder
/// gives it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawDaemonMessage<'a> {
    #[serde(default)]
    pub(crate) action: Option<String>,
    #[serde(default)]
    pub(crate) shard_id: Option<String>,
    #[serde(default)]
    pub(crate) sequence_number: Option<String>,
    #[serde(default)]
    pub(crate) sub_sequence_number: Option<i64>,
    #[serde(default, borrow)]
    pub(crate) records: Option<Vec<RecordText<'a>>>,
    #[serde(default)]
    pub(crate) millis_behind_latest: Option<i64>,
    #[serde(default)]
    pub(crate) reason: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// Decodes the top-level field `key` (no escapes in it) with the JSON `value` exactly as
/// the full decoder would (an unknown key: any JSON value): the field table parsed from a
/// one-field object; `None` if the decoder would reject the value.
pub(crate) fn top_level_field(key: &[u8], value: &[u8]) -> Option<RawDaemonMessage<'static>> {
    // Invariant for the `'static`: `records` is the one borrowing field, and the scan
    // never asks for it (it finds the records itself); an object with `records` is refused.
    if key == b"records" {
        return None;
    }
    let mut object = Vec::with_capacity(key.len() + value.len() + 5);
    object.extend_from_slice(b"{\"");
    object.extend_from_slice(key);
    object.extend_from_slice(b"\":");
    object.extend_from_slice(value);
    object.push(b'}');
    let raw: RawDaemonMessage<'_> = serde_json::from_slice(&object).ok()?;
    Some(RawDaemonMessage {
        records: None,
        ..raw
    })
}
