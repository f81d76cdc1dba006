//! Payload views: a daemon line's buffer, shared by the records that point into it, and
//! the record type the codec decodes (`processRecords` payloads stay base64 text in the
//! line until a worker needs them).
//!
//! Why a layer of its own: a `processRecords` line is mostly payload, tens of MiB of it.
//! Copying it out of the line would cost more than everything else on the protocol thread,
//! so a record's payload is a range of the line ([`Base64Text`]), the line is shared
//! ([`LineBuf`] in an `Arc`) by every record and item that points into it, and it goes
//! back to the stdin reader ([`super::reader`]) for reuse when the last of them is gone.

use std::sync::Arc;

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::protocol::sequence::{Esn, SequenceNumber};

/// One record of a `processRecords` batch, as the daemon sends it (already de-aggregated
/// by a KCL 2.x daemon: one entry per KPL user record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The payload, base64 (standard alphabet, padded); kept encoded until a worker needs it.
    pub data: Option<Base64Text>,
    /// The (user record's) partition key.
    pub partition_key: String,
    /// The Kinesis sequence number (shared by all user records of one aggregate).
    pub sequence_number: SequenceNumber,
    /// The index of the user record in its aggregate; 0 (or absent) for plain records.
    pub sub_sequence_number: Option<i64>,
    /// When Kinesis accepted the record, epoch milliseconds.
    pub approximate_arrival_timestamp: Option<i64>,
}

impl Record {
    /// The record's extended sequence number (a missing sub-sequence number counts as 0).
    pub fn esn(&self) -> Esn {
        Esn::new(
            self.sequence_number.clone(),
            self.sub_sequence_number.unwrap_or(0),
        )
    }
}

/// A daemon line's bytes, shared by the records that point into it. When the last user
/// drops it, the buffer goes back to whoever lent it (the stdin reader reuses it for a
/// later line, so multi-MiB lines do not cost an allocation and page faults each time).
pub struct LineBuf {
    bytes: Vec<u8>,
    len: usize,
    recycle: Option<crossbeam_channel::Sender<Vec<u8>>>,
}

impl LineBuf {
    /// Wraps `bytes`; `recycle` receives the buffer back when this is dropped.
    pub fn new(bytes: Vec<u8>, recycle: Option<crossbeam_channel::Sender<Vec<u8>>>) -> Self {
        let len = bytes.len();
        Self::with_len(bytes, len, recycle)
    }

    /// Wraps the first `len` bytes of `bytes` (the rest is spare room that goes back with
    /// the buffer to `recycle`).
    pub fn with_len(
        bytes: Vec<u8>,
        len: usize,
        recycle: Option<crossbeam_channel::Sender<Vec<u8>>>,
    ) -> Self {
        let len = len.min(bytes.len());
        LineBuf {
            bytes,
            len,
            recycle,
        }
    }
}

impl std::ops::Deref for LineBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        if let Some(tx) = self.recycle.take() {
            // A full or closed pool simply lets the buffer be freed.
            let _ = tx.try_send(std::mem::take(&mut self.bytes));
        }
    }
}

/// A record's base64 payload: owned text, or a range of the daemon line it arrived in.
///
/// A `processRecords` line is mostly payload. Decoding it with [`super::DaemonMessage::decode_shared`]
/// keeps the line in an `Arc` and lets each record point into it, so the payload bytes are
/// never copied on the protocol thread; the line is freed when the last item using it is.
#[derive(Clone)]
pub struct Base64Text(TextRepr);

#[derive(Clone)]
enum TextRepr {
    Owned(String),
    Shared {
        line: Arc<LineBuf>,
        start: usize,
        end: usize,
    },
}

impl Base64Text {
    /// The text at `start..end` of `line`, which must be UTF-8 on char boundaries there
    /// (it was a `&str` borrowed from that very buffer).
    pub(crate) fn shared(line: Arc<LineBuf>, start: usize, end: usize) -> Self {
        Base64Text(TextRepr::Shared { line, start, end })
    }

    /// The text.
    #[expect(clippy::expect_used, reason = "the shared range was decoded as UTF-8")]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            TextRepr::Owned(s) => s,
            TextRepr::Shared { line, start, end } => {
                // Invariant: the range was a `&str` borrowed from this very buffer when the
                // line was decoded, so it is valid UTF-8 on char boundaries.
                std::str::from_utf8(&line[*start..*end])
                    .expect("shared payload is the UTF-8 it was decoded as")
            }
        }
    }

    /// The text's bytes (no UTF-8 check: cheaper than [`Base64Text::as_str`]).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            TextRepr::Owned(s) => s.as_bytes(),
            TextRepr::Shared { line, start, end } => &line[*start..*end],
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Base64Text {
    fn default() -> Self {
        Base64Text(TextRepr::Owned(String::new()))
    }
}

impl From<String> for Base64Text {
    fn from(s: String) -> Self {
        Base64Text(TextRepr::Owned(s))
    }
}

impl From<&str> for Base64Text {
    fn from(s: &str) -> Self {
        Base64Text(TextRepr::Owned(s.to_owned()))
    }
}

impl PartialEq for Base64Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Base64Text {}

impl std::fmt::Debug for Base64Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Base64Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("record", 6)?;
        st.serialize_field("data", &self.data)?;
        st.serialize_field("partitionKey", &self.partition_key)?;
        st.serialize_field("sequenceNumber", &self.sequence_number)?;
        st.serialize_field(
            "approximateArrivalTimestamp",
            &self.approximate_arrival_timestamp,
        )?;
        st.serialize_field("subSequenceNumber", &self.sub_sequence_number)?;
        st.serialize_field("action", "record")?;
        st.end()
    }
}
