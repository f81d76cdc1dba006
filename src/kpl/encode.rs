//! The encoder: packs user records into KPL aggregates of bounded size.

use std::collections::HashMap;

use md5::{Digest, Md5};
use prost::Message;

use super::proto;
use super::{DEFAULT_MAX_AGGREGATE_BYTES, DIGEST_LEN, MAGIC};

/// Packs user records into KPL aggregates no larger than a byte limit.
///
/// The limit counts the whole encoded aggregate: magic, protobuf body and MD5
/// digest. Partition keys and explicit hash keys are stored once per aggregate
/// (each table is de-duplicated). Records keep their order; an explicit hash key
/// index is written only for records that have one.
///
/// When the next record would push the current aggregate over the limit, the
/// current aggregate is finished and returned by [`push`](Self::push), and the
/// record starts the next one. A record that does not fit even in an empty
/// aggregate still gets an aggregate of its own, larger than the limit: the
/// encoder never drops or splits a user record, and decoding never rejects large
/// aggregates (Kinesis accepts records up to 10 MiB). Unlike the C++ KPL, a
/// single record is still written as an aggregate, not as plain data.
///
/// Keys are not validated: an explicit hash key that is not a decimal number in
/// `[0, 2^128 - 1]` is encoded as given (and the Java KCL would not deliver it).
#[derive(Debug, Clone)]
pub struct Aggregator {
    max_bytes: usize,
    message: proto::AggregatedRecord,
    partition_key_indexes: HashMap<String, u64>,
    explicit_hash_key_indexes: HashMap<String, u64>,
    /// The encoded size of the current aggregate, magic and digest included.
    encoded_len: usize,
}

impl Default for Aggregator {
    /// An aggregator with the 1 MiB limit, [`DEFAULT_MAX_AGGREGATE_BYTES`].
    fn default() -> Self {
        Aggregator::new(DEFAULT_MAX_AGGREGATE_BYTES)
    }
}

impl Aggregator {
    /// An empty aggregator whose aggregates are at most `max_bytes` long (unless
    /// a single user record is larger on its own).
    pub fn new(max_bytes: usize) -> Self {
        Aggregator {
            max_bytes,
            message: proto::AggregatedRecord::default(),
            partition_key_indexes: HashMap::new(),
            explicit_hash_key_indexes: HashMap::new(),
            encoded_len: EMPTY_AGGREGATE_LEN,
        }
    }

    /// The size limit given to [`new`](Self::new).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// How many user records the current, unfinished aggregate holds.
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// Whether the current aggregate holds no user record.
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// The encoded size the current aggregate would have if finished now
    /// (magic and digest included).
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// Adds a user record. Returns the previous aggregate when this record did
    /// not fit in it (the record then starts a new aggregate), else `None`.
    pub fn push(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        let mut growth = self.growth(partition_key, explicit_hash_key, data.len());
        let mut finished = None;
        if !self.is_empty() && self.encoded_len.saturating_add(growth) > self.max_bytes {
            finished = self.finish();
            // The tables are empty now, so indexes and key entries change.
            growth = self.growth(partition_key, explicit_hash_key, data.len());
        }
        let partition_key_index = index_of(
            &mut self.partition_key_indexes,
            &mut self.message.partition_key_table,
            partition_key,
        );
        let explicit_hash_key_index = explicit_hash_key.map(|key| {
            index_of(
                &mut self.explicit_hash_key_indexes,
                &mut self.message.explicit_hash_key_table,
                key,
            )
        });
        self.message.records.push(proto::Record {
            partition_key_index,
            explicit_hash_key_index,
            data: data.to_vec(),
            tags: Vec::new(),
        });
        self.encoded_len = self.encoded_len.saturating_add(growth);
        finished
    }

    /// Finishes the current aggregate and returns it (`None` if it holds no
    /// record). The aggregator is then empty and can be used again.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        let message = std::mem::take(&mut self.message);
        self.partition_key_indexes.clear();
        self.explicit_hash_key_indexes.clear();
        let expected_len = std::mem::replace(&mut self.encoded_len, EMPTY_AGGREGATE_LEN);

        let mut out = Vec::with_capacity(expected_len);
        out.extend_from_slice(&MAGIC);
        // Invariant: a Vec grows as needed, so encoding into it cannot fail.
        #[expect(clippy::expect_used, reason = "encoding into a Vec cannot fail")]
        message
            .encode(&mut out)
            .expect("encoding into a Vec cannot run out of space");
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        debug_assert_eq!(out.len(), expected_len, "size accounting matches prost");
        Some(out)
    }

    /// How many bytes the encoded aggregate grows by when this record is added.
    fn growth(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        let mut growth = 0;
        let partition_key_index = match self.partition_key_indexes.get(partition_key) {
            Some(&index) => index,
            None => {
                growth += field_len(partition_key.len());
                self.message.partition_key_table.len() as u64
            }
        };
        // Record: partition_key_index (tag + varint), data (tag + length + bytes).
        let mut record_len = 1 + varint_len(partition_key_index) + field_len(data_len);
        if let Some(key) = explicit_hash_key {
            let index = match self.explicit_hash_key_indexes.get(key) {
                Some(&index) => index,
                None => {
                    growth += field_len(key.len());
                    self.message.explicit_hash_key_table.len() as u64
                }
            };
            record_len += 1 + varint_len(index);
        }
        growth + field_len(record_len)
    }
}

/// Magic and digest around an empty protobuf body.
const EMPTY_AGGREGATE_LEN: usize = MAGIC.len() + DIGEST_LEN;

/// The index of `key` in a de-duplicated table, adding it if new.
fn index_of(indexes: &mut HashMap<String, u64>, table: &mut Vec<String>, key: &str) -> u64 {
    if let Some(&index) = indexes.get(key) {
        return index;
    }
    let index = table.len() as u64;
    table.push(key.to_owned());
    indexes.insert(key.to_owned(), index);
    index
}

/// Encoded length of a length-delimited field with a one-byte tag (fields 1-15).
fn field_len(payload_len: usize) -> usize {
    1 + varint_len(payload_len as u64) + payload_len
}

/// Encoded length of a varint.
fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for (value, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(value), len, "{value}");
            assert_eq!(prost::encoding::encoded_len_varint(value), len, "{value}");
        }
    }

    #[test]
    fn size_accounting_matches_encoding() {
        let mut aggregator = Aggregator::new(usize::MAX);
        let big = vec![7u8; 300];
        for i in 0..200 {
            let key = format!("key-{}", i % 17);
            let ehk = (i % 3 != 0).then(|| format!("{}", i * 1_000_003));
            aggregator.push(&key, ehk.as_deref(), &big[..i]);
        }
        let expected = aggregator.encoded_len();
        assert_eq!(aggregator.finish().unwrap().len(), expected);
        assert_eq!(aggregator.finish(), None);
        assert_eq!(aggregator.encoded_len(), EMPTY_AGGREGATE_LEN);
    }

    #[test]
    fn splits_at_the_limit() {
        // Each record "k"/"" costs 6 bytes + first key entry 3 bytes.
        let first_len = EMPTY_AGGREGATE_LEN + 3 + 6;
        let mut aggregator = Aggregator::new(first_len + 6);
        assert_eq!(aggregator.push("k", None, b""), None);
        assert_eq!(aggregator.push("k", None, b""), None);
        assert_eq!(aggregator.encoded_len(), first_len + 6);
        let full = aggregator
            .push("k", None, b"")
            .expect("third record starts a new aggregate");
        assert_eq!(full.len(), first_len + 6);
        assert_eq!(aggregator.len(), 1);
        assert_eq!(aggregator.encoded_len(), first_len);
    }

    #[test]
    fn oversized_record_gets_its_own_aggregate() {
        let mut aggregator = Aggregator::new(64);
        assert_eq!(aggregator.push("a", None, b"x"), None);
        let first = aggregator
            .push("b", None, &[0; 100])
            .expect("small one finished");
        assert!(first.len() <= 64);
        let second = aggregator
            .push("c", None, b"y")
            .expect("big one finished alone");
        assert!(second.len() > 64);
        assert_eq!(aggregator.len(), 1);
    }
}
