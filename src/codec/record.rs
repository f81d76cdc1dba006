//! A record's fields as every decode path parses them ([`RecordText`], borrowing from the
//! line), their conversion into a [`Record`] whose payload points into the line, and the
//! errors of decoding a daemon line. The serde decoder, the fast parser and the scan all
//! produce `RecordText`, so this is the layer below them.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use super::payload::{Base64Text, LineBuf, Record};
use crate::protocol::sequence::SequenceNumber;

/// A record's fields as parsed, borrowing from the line where they have no escapes. The
/// sequence number is not validated yet ([`SequenceNumber::parse`] does that).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecordText<'a> {
    /// The base64 payload.
    #[serde(default, borrow)]
    pub data: Option<Cow<'a, str>>,
    /// The partition key.
    #[serde(default, borrow)]
    pub partition_key: Option<Cow<'a, str>>,
    /// The sequence number, as sent.
    #[serde(borrow)]
    pub sequence_number: Cow<'a, str>,
    /// The sub-sequence number.
    #[serde(default)]
    pub sub_sequence_number: Option<i64>,
    /// The arrival timestamp, epoch milliseconds.
    #[serde(default)]
    pub approximate_arrival_timestamp: Option<i64>,
}

/// Why a daemon line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("not a valid daemon message: {0}")]
    Json(serde_json::Error),
    /// No `action` field.
    #[error("message has no \"action\" field")]
    MissingAction,
    /// An `action` this processor does not know (or one only a processor sends).
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// A required field is missing.
    #[error("{0} message has no {1:?} field")]
    MissingField(&'static str, &'static str),
    /// A sequence number that is neither digits nor a sentinel.
    #[error(transparent)]
    Sequence(#[from] crate::protocol::sequence::InvalidSequenceNumber),
    /// A record whose `data` is not base64 as the daemon writes it.
    #[error("record {sequence_number}/{sub}: data is not valid base64 (the daemon always sends standard, padded base64)", sub = sub_sequence_number.map_or("null".to_owned(), |s| s.to_string()))]
    Base64 {
        /// The record's sequence number, as sent.
        sequence_number: String,
        /// The record's sub-sequence number, as sent.
        sub_sequence_number: Option<i64>,
    },
}

/// Checks a parsed record's payload (see [`super::bytes::is_base64`]).
pub(crate) fn check_data(
    data: Option<&str>,
    sequence_number: &str,
    sub: Option<i64>,
) -> Result<(), DecodeError> {
    match data {
        Some(d) if !super::bytes::is_base64(d.as_bytes()) => Err(DecodeError::Base64 {
            sequence_number: sequence_number.to_owned(),
            sub_sequence_number: sub,
        }),
        _ => Ok(()),
    }
}

/// A record from its parsed text: the payload becomes a range of `shared` where it was
/// borrowed from it; `previous` lets equal sequence numbers share storage.
pub fn convert_record(
    r: RecordText<'_>,
    shared: Option<&Arc<LineBuf>>,
    previous: Option<&SequenceNumber>,
) -> Result<Record, DecodeError> {
    let sequence_number = SequenceNumber::parse_reusing(&r.sequence_number, previous)?;
    check_data(r.data.as_deref(), &r.sequence_number, r.sub_sequence_number)?;
    let data = r.data.map(|d| match (d, shared) {
        (Cow::Borrowed(text), Some(line)) => {
            let start = text.as_ptr() as usize - line.as_ptr() as usize;
            Base64Text::shared(line.clone(), start, start + text.len())
        }
        (d, _) => Base64Text::from(d.into_owned()),
    });
    Ok(Record {
        data,
        partition_key: r.partition_key.map(Cow::into_owned).unwrap_or_default(),
        sequence_number,
        sub_sequence_number: r.sub_sequence_number,
        approximate_arrival_timestamp: r.approximate_arrival_timestamp,
    })
}
