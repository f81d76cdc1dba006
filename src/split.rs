//! Record splitting: one daemon record becomes the items handlers see.
//!
//! Splitting is pure (no IO); it runs before dispatch because the routing key of an item
//! can differ from its record's (a KPL sub-record has its own partition key), and because
//! the checkpoint tracker must know how many items a record produced (`user_total`)
//! before it can tell when the record is done.

use std::sync::Arc;

use crate::checkpoint::RecordId;
use crate::item::{Item, Payload};
use crate::protocol::message::Record;

/// How records are split into items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitMode {
    /// One item per record, payload untouched.
    #[default]
    None,
}

/// Splits records into items according to a [`SplitMode`].
#[derive(Clone, Debug, Default)]
pub struct Splitter {
    mode: SplitMode,
}

impl Splitter {
    /// A splitter for `mode`.
    pub fn new(mode: SplitMode) -> Self {
        Splitter { mode }
    }

    /// The items of one record, in order, with `user_sub`/`user_total` filled in and a
    /// placeholder [`RecordId`] that the session replaces when it delivers the record.
    pub fn split(&self, shard_id: &Arc<str>, record: Record) -> Vec<Item> {
        match self.mode {
            SplitMode::None => vec![Item {
                record: RecordId(u64::MAX),
                shard_id: shard_id.clone(),
                sequence_number: record.sequence_number.as_str().into(),
                sub_sequence_number: record.sub_sequence_number.unwrap_or(0),
                user_sub: 0,
                user_total: 1,
                partition_key: record.partition_key,
                explicit_hash_key: None,
                approximate_arrival_timestamp: record.approximate_arrival_timestamp,
                data: Payload::Base64(record.data.unwrap_or_default()),
            }],
        }
    }
}
