//! Items: the unit of work a handler sees.
//!
//! A daemon record becomes one or more items (the record splitter decides how many; see
//! [`crate::split`]). Each item remembers which delivered record it came from
//! ([`RecordId`]), so that its completion can be credited to the checkpoint tracker, and
//! carries its place in the record as `user_sub` / `user_total`.
//!
//! Payloads stay base64 until someone needs bytes: the file handler writes the daemon's
//! base64 straight through, so a record that is not split is never decoded at all.
//!
//! The item JSON ([`Item::write_json`]) is a contract shared by the file handler's output
//! and the exec handler's input:
//! `{"shardId":"…","sequenceNumber":"…","subSequenceNumber":N,"userSub":N,"userTotal":N,
//! "partitionKey":"…","explicitHashKey":null,"approximateArrivalTimestamp":N,"data":"<base64>"}`.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use base64::Engine;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::checkpoint::RecordId;
use crate::protocol::message::Base64Text;

/// The standard base64 engine (alphabet `+/`, padded), as the daemon's Jackson uses.
pub const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An item's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Base64 text exactly as the daemon sent it (not yet decoded, maybe never), often a
    /// range of the daemon's line itself.
    Base64(Base64Text),
    /// Decoded bytes (after splitting, de-aggregation or decompression).
    Bytes(Vec<u8>),
}

impl Payload {
    /// The payload as bytes, decoding base64 if needed.
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>, base64::DecodeError> {
        match self {
            Payload::Base64(s) => BASE64.decode(s.as_bytes()).map(Cow::Owned),
            Payload::Bytes(b) => Ok(Cow::Borrowed(b)),
        }
    }

    /// The payload as base64 text, encoding if needed.
    pub fn base64(&self) -> Cow<'_, str> {
        match self {
            Payload::Base64(s) => Cow::Borrowed(s.as_str()),
            Payload::Bytes(b) => Cow::Owned(BASE64.encode(b)),
        }
    }
}

/// One unit of work: a whole record, or one piece of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The delivered record this item belongs to (set when the record is delivered).
    pub record: RecordId,
    /// The shard of this lease.
    pub shard_id: Arc<str>,
    /// The record's sequence number (shared by every item of the record).
    pub sequence_number: Arc<str>,
    /// The record's sub-sequence number as the daemon delivered it.
    pub sub_sequence_number: i64,
    /// The index of this item among the items of its record.
    pub user_sub: u32,
    /// How many items the record produced.
    pub user_total: u32,
    /// The partition key: routes the item to a worker (same key, same worker, same order).
    pub partition_key: String,
    /// The explicit hash key, where a KPL sub-record has one.
    pub explicit_hash_key: Option<String>,
    /// When Kinesis accepted the record, epoch milliseconds.
    pub approximate_arrival_timestamp: Option<i64>,
    /// The payload.
    pub data: Payload,
}

impl Item {
    /// Appends the item JSON (ASCII-only, one line, no newline) to `out`.
    pub fn write_json<W: io::Write>(&self, out: W) -> io::Result<()> {
        crate::json::write_ascii(out, self).map_err(io::Error::other)
    }
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("item", 9)?;
        st.serialize_field("shardId", &*self.shard_id)?;
        st.serialize_field("sequenceNumber", &*self.sequence_number)?;
        st.serialize_field("subSequenceNumber", &self.sub_sequence_number)?;
        st.serialize_field("userSub", &self.user_sub)?;
        st.serialize_field("userTotal", &self.user_total)?;
        st.serialize_field("partitionKey", &self.partition_key)?;
        st.serialize_field("explicitHashKey", &self.explicit_hash_key)?;
        st.serialize_field(
            "approximateArrivalTimestamp",
            &self.approximate_arrival_timestamp,
        )?;
        st.serialize_field("data", &*self.data.base64())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_json_is_the_contract() {
        let item = Item {
            record: RecordId(0),
            shard_id: "shardId-000000000001".into(),
            sequence_number: "49680445498841953494698307936256227907416662446197178370".into(),
            sub_sequence_number: 3,
            user_sub: 1,
            user_total: 2,
            partition_key: "k\u{e9}".into(),
            explicit_hash_key: None,
            approximate_arrival_timestamp: Some(1795310498058),
            data: Payload::Bytes(b"hi".to_vec()),
        };
        let mut out = Vec::new();
        item.write_json(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"shardId":"shardId-000000000001","sequenceNumber":"49680445498841953494698307936256227907416662446197178370","subSequenceNumber":3,"userSub":1,"userTotal":2,"partitionKey":"k\u00e9","explicitHashKey":null,"approximateArrivalTimestamp":1795310498058,"data":"aGk="}"#
        );
    }
}
