//! KPL aggregated records: de-aggregation with the Java KCL's rules, and an
//! encoder.
//!
//! The Kinesis Producer Library packs many *user records* into one Kinesis
//! record:
//!
//! ```text
//! [0..4)        magic F3 89 9A C2
//! [4..len-16)   protobuf AggregatedRecord (proto2, proto/kpl_aggregation.proto)
//! [len-16..len) MD5 of exactly the protobuf bytes
//! ```
//!
//! The body holds a partition key table, an explicit hash key table and the
//! records, each pointing into the tables by index.
//!
//! # Why the rules are the Java KCL's
//!
//! The MultiLangDaemon de-aggregates with `AggregatorUtil` before a record
//! processor sees anything, so "what Java does" is the observable behaviour that
//! rsmld must reproduce. [`deaggregate`] follows it step by step:
//!
//! 1. A record is an aggregate candidate iff it is at least 4 bytes long, starts
//!    with the magic, and has *more* than 16 bytes after the magic (so magic +
//!    MD5 of nothing, 20 bytes, is plain).
//! 2. If the MD5 of the body differs from the trailing 16 bytes: plain.
//! 3. If protobuf-java would refuse the body: plain. It refuses malformed wire
//!    data and missing proto2 `required` fields anywhere (`Record.data`,
//!    `Record.partition_key_index`, `Tag.key`); it skips unknown fields, and a
//!    known field number with an unexpected wire type counts as unknown.
//!    The details are in the `wire` module.
//! 4. Otherwise the record is an aggregate, even with zero sub-records. Each
//!    sub-record, in order, gets `partition_key_table[index]` and, only if it has
//!    an explicit hash key index, `explicit_hash_key_table[index]`.
//! 5. An index out of range, or an explicit hash key that `BigInteger` cannot
//!    parse, ends the loop: the sub-records before it are kept, the rest are lost
//!    (Java logs the exception). This is [`Deaggregated::Aggregated`] with
//!    `partial: Some(_)`.
//! 6. An explicit hash key outside `[0, 2^128 - 1]` (negative or too large)
//!    makes `AggregatorUtil`'s range check drop *every* sub-record of the
//!    aggregate, including those already produced. The KCL applies the full
//!    range even when it knows no shard; rsmld has no shard hash range, so that
//!    is the only range applied here. Result: no records, `partial: Some(_)`.
//!
//! Key strings are decoded like the JDK does (invalid UTF-8 becomes U+FFFD); see
//! `java_compat`.
//!
//! # Why not prost for decoding
//!
//! prost would decide differently from protobuf-java on three points: it does not
//! enforce proto2 `required` fields (Java: plain), its `string` fields reject
//! invalid UTF-8 (Java: U+FFFD), and it fails on a known field with the wrong
//! wire type (Java: skipped). So decoding uses a small hand-written wire reader
//! that is bounded (it never allocates more than the input justifies, whatever
//! lengths it claims), zero-copy (sub-record data borrow the input), and never
//! panics. prost (types generated into [`proto`] and checked in) writes the
//! aggregates in [`Aggregator`] and serves as an independent oracle in tests.
//!
//! # Indexes: Java's `(int)` cast, on purpose
//!
//! `AggregatorUtil` looks keys up with `table.get((int) index)`: only the low
//! 32 bits of the `uint64` index count, as a signed `int`, so an index of 2^32
//! picks the first key and 2^31 is out of range. rsmld does the same. Treating
//! every index past the table as corrupt would be more natural, but it would not
//! match Java on every input: protobuf-java itself reads the bits above 32 of a
//! non-canonical 10-byte varint differently depending on how many bytes follow
//! it (its fast and slow paths disagree), so only the low 32 bits are decided
//! the same way everywhere. The differential test against protobuf-java
//! (`tests/it/kpl_java_oracle.rs`) found this.
//!
//! # Deviation from the Java KCL
//!
//! [`UserRecord`] keys are [`KeyStr`] rather than `Cow<str>`: a key that is not
//! valid UTF-8 is decoded once and shared by every sub-record that uses it, so a
//! small aggregate cannot make de-aggregation allocate without bound (Java
//! allocates one string per sub-record). `KeyStr` dereferences to `str`. The
//! decisions (plain, records, partial) are Java's on every input.
//!
//! # Module map
//!
//! * this module: [`deaggregate`] and its result types, and [`deaggregate_at_most`],
//!   which decides the same but never collects more than a given number of user
//!   records or keys (the record splitter's `--max-items-per-record`);
//! * [`Aggregator`]: the encoder;
//! * [`cli`]: line-oriented base64/JSON helpers around both, for the binary;
//! * [`proto`]: the prost types (generated, checked in);
//! * `wire`, `java_compat`: the protobuf-java-compatible reader and the JDK
//!   string and `BigInteger` rules.
//!
//! Everything here is pure: no IO (except the generic reader/writer in [`cli`]),
//! no printing, no clock.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use md5::{Digest, Md5};

pub mod cli;
mod encode;
mod java_compat;
#[rustfmt::skip]
pub mod proto;
mod wire;

pub use encode::Aggregator;
pub use wire::ProtobufError;

use java_compat::{classify_hash_key, decode_utf8_like_jdk, HashKeyCheck};

/// The four bytes an aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 digest that ends an aggregated record.
pub const DIGEST_LEN: usize = 16;

/// Default size limit of [`Aggregator`]: 1 MiB for the whole encoded aggregate.
pub const DEFAULT_MAX_AGGREGATE_BYTES: usize = 1_048_576;

/// Splits a Kinesis record into its KPL user records, with the Java KCL's rules
/// (see the module documentation).
///
/// Never panics; memory use is proportional to the input's actual size.
pub fn deaggregate(record: &[u8]) -> Deaggregated<'_> {
    match parse(record) {
        Ok(raw) => expand(&raw),
        Err(_) => Deaggregated::Plain,
    }
}

/// [`deaggregate`] for a caller that takes at most `max` user records: an aggregate
/// whose records, partition keys or explicit hash keys number more than `max` is
/// `Err` with its record count (Java would de-aggregate it; the caller delivers it
/// whole). Such a body is still validated to the end, so plain versus aggregate is
/// decided as with [`deaggregate`], but only `max` entries of each list are ever
/// collected: memory stays bounded by `max` whatever the record holds.
pub fn deaggregate_at_most(record: &[u8], max: usize) -> Result<Deaggregated<'_>, TooManyRecords> {
    match parse_limited(record, max) {
        Ok(raw) if raw.skipped > 0 => Err(TooManyRecords {
            records: raw.declared_records,
        }),
        Ok(raw) => Ok(expand(&raw)),
        Err(_) => Ok(Deaggregated::Plain),
    }
}

/// An aggregate with more entries than [`deaggregate_at_most`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("KPL aggregate of {records} user records is over the limit")]
pub struct TooManyRecords {
    /// The user records the aggregate holds.
    pub records: usize,
}

/// Why [`deaggregate`] treats `record` as plain, or `None` if it is an aggregate.
///
/// For diagnostics and tests; it repeats the work of [`deaggregate`].
pub fn plain_reason(record: &[u8]) -> Option<PlainReason> {
    parse(record).err()
}

/// The outcome of [`deaggregate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deaggregated<'a> {
    /// Not an aggregate: the record is delivered unchanged, as one record with
    /// sub-sequence number 0.
    Plain,
    /// An aggregate. Sub-sequence numbers are the positions in `records`.
    Aggregated {
        /// The user records, in order (possibly none).
        records: Vec<UserRecord<'a>>,
        /// Set when de-aggregation stopped early; `records` then holds what the
        /// Java KCL delivers (those before the failing sub-record, or none for
        /// [`DeaggregateError::ExplicitHashKeyOutOfRange`]). The caller should
        /// log it, as Java does.
        partial: Option<DeaggregateError>,
    },
}

impl Deaggregated<'_> {
    /// Whether the record was an aggregate.
    pub fn is_aggregated(&self) -> bool {
        matches!(self, Deaggregated::Aggregated { .. })
    }
}

/// One user record from an aggregate, borrowing from the Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserRecord<'a> {
    /// The user record's partition key.
    pub partition_key: KeyStr<'a>,
    /// The explicit hash key, only if the sub-record has one.
    pub explicit_hash_key: Option<KeyStr<'a>>,
    /// The user record's data.
    pub data: &'a [u8],
}

/// A key string: borrowed from the record when it is valid UTF-8, otherwise its
/// JDK-style lossy decoding, shared by all sub-records that use that key.
///
/// Equality, ordering and hashing are those of the text, whichever the variant.
#[derive(Debug, Clone)]
pub enum KeyStr<'a> {
    /// Valid UTF-8, borrowed from the record.
    Borrowed(&'a str),
    /// Decoded with U+FFFD replacements, shared.
    Shared(Arc<str>),
}

impl KeyStr<'_> {
    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        match self {
            KeyStr::Borrowed(text) => text,
            KeyStr::Shared(text) => text,
        }
    }

    /// The key as an owned `String`.
    pub fn into_owned(self) -> String {
        self.as_str().to_owned()
    }
}

impl Deref for KeyStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for KeyStr<'_> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for KeyStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for KeyStr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for KeyStr<'_> {}

impl PartialOrd for KeyStr<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyStr<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for KeyStr<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for KeyStr<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for KeyStr<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why an aggregate was only partly de-aggregated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeaggregateError {
    /// A sub-record's partition key index is past the end of the table; it and
    /// the following sub-records are lost.
    #[error(
        "KPL sub-record {sub_record}: partition key index {index} is out of range \
         (the table has {table_len} keys); it and the following sub-records are lost"
    )]
    PartitionKeyIndexOutOfRange {
        /// Position of the failing sub-record in the aggregate.
        sub_record: usize,
        /// How many sub-records the aggregate holds (declared by its protobuf body).
        declared: usize,
        /// The index as written (Java looks up its low 32 bits as an `int`).
        index: u64,
        /// Length of the partition key table.
        table_len: usize,
    },
    /// A sub-record's explicit hash key index is past the end of the table; it
    /// and the following sub-records are lost.
    #[error(
        "KPL sub-record {sub_record}: explicit hash key index {index} is out of range \
         (the table has {table_len} keys); it and the following sub-records are lost"
    )]
    ExplicitHashKeyIndexOutOfRange {
        /// Position of the failing sub-record in the aggregate.
        sub_record: usize,
        /// How many sub-records the aggregate holds (declared by its protobuf body).
        declared: usize,
        /// The index as written (Java looks up its low 32 bits as an `int`).
        index: u64,
        /// Length of the explicit hash key table.
        table_len: usize,
    },
    /// A sub-record's explicit hash key is not a decimal number; it and the
    /// following sub-records are lost.
    #[error(
        "KPL sub-record {sub_record}: explicit hash key {key:?} is not a number; \
         it and the following sub-records are lost"
    )]
    ExplicitHashKeyNotANumber {
        /// Position of the failing sub-record in the aggregate.
        sub_record: usize,
        /// How many sub-records the aggregate holds (declared by its protobuf body).
        declared: usize,
        /// The key, cut to its first 128 characters.
        key: String,
    },
    /// A sub-record's explicit hash key is outside `[0, 2^128 - 1]`: the KCL
    /// drops every sub-record of the aggregate.
    #[error(
        "KPL sub-record {sub_record}: explicit hash key {key:?} is outside \
         [0, 2^128-1]; the whole aggregate is dropped"
    )]
    ExplicitHashKeyOutOfRange {
        /// Position of the failing sub-record in the aggregate.
        sub_record: usize,
        /// How many sub-records the aggregate holds (declared by its protobuf body).
        declared: usize,
        /// The key, cut to its first 128 characters.
        key: String,
    },
}

impl DeaggregateError {
    /// Position in the aggregate of the sub-record that failed.
    pub fn sub_record(&self) -> usize {
        match self {
            DeaggregateError::PartitionKeyIndexOutOfRange { sub_record, .. }
            | DeaggregateError::ExplicitHashKeyIndexOutOfRange { sub_record, .. }
            | DeaggregateError::ExplicitHashKeyNotANumber { sub_record, .. }
            | DeaggregateError::ExplicitHashKeyOutOfRange { sub_record, .. } => *sub_record,
        }
    }

    /// How many sub-records the aggregate holds.
    pub fn declared(&self) -> usize {
        match self {
            DeaggregateError::PartitionKeyIndexOutOfRange { declared, .. }
            | DeaggregateError::ExplicitHashKeyIndexOutOfRange { declared, .. }
            | DeaggregateError::ExplicitHashKeyNotANumber { declared, .. }
            | DeaggregateError::ExplicitHashKeyOutOfRange { declared, .. } => *declared,
        }
    }

    /// How many user records the Java KCL (and so rsmld) does not deliver: the failing
    /// one and all after it, or all of them when the range check drops the aggregate.
    pub fn lost(&self) -> usize {
        match self {
            DeaggregateError::ExplicitHashKeyOutOfRange { declared, .. } => *declared,
            _ => self.declared().saturating_sub(self.sub_record()),
        }
    }
}

/// Why a record is not an aggregate (see [`plain_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlainReason {
    /// Shorter than 4 bytes, or does not start with [`MAGIC`].
    #[error("no KPL magic")]
    NoMagic,
    /// Magic followed by 16 bytes or fewer: no room for a body.
    #[error("too short for a KPL aggregate (16 bytes or fewer after the magic)")]
    NoBody,
    /// The MD5 of the body does not match the trailing digest.
    #[error("KPL digest mismatch")]
    ChecksumMismatch,
    /// protobuf-java would not parse the body.
    #[error("KPL body is not a valid AggregatedRecord: {0}")]
    Protobuf(#[from] ProtobufError),
}

/// Steps 1-3 of the module documentation: checks magic, length, digest and
/// protobuf.
fn parse(record: &[u8]) -> Result<wire::RawAggregate<'_>, PlainReason> {
    parse_limited(record, usize::MAX)
}

/// [`parse`], collecting at most `limit` entries per list (see `wire`).
fn parse_limited(record: &[u8], limit: usize) -> Result<wire::RawAggregate<'_>, PlainReason> {
    let after_magic = record.strip_prefix(&MAGIC).ok_or(PlainReason::NoMagic)?;
    if after_magic.len() <= DIGEST_LEN {
        return Err(PlainReason::NoBody);
    }
    let (body, digest) = after_magic.split_at(after_magic.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Err(PlainReason::ChecksumMismatch);
    }
    Ok(wire::parse_aggregated_record_limited(body, limit)?)
}

/// Steps 4-6: resolves indexes and keys into user records.
fn expand<'a>(raw: &wire::RawAggregate<'a>) -> Deaggregated<'a> {
    // Each table entry is decoded (and checked) once, however many sub-records
    // use it; both are linear in the input.
    let partition_keys: Vec<KeyStr<'a>> = raw
        .partition_keys
        .iter()
        .map(|key| decode_utf8_like_jdk(key))
        .collect();
    let explicit_hash_keys: Vec<(KeyStr<'a>, HashKeyCheck)> = raw
        .explicit_hash_keys
        .iter()
        .map(|key| {
            let key = decode_utf8_like_jdk(key);
            let check = classify_hash_key(&key);
            (key, check)
        })
        .collect();

    let declared = raw.records.len();
    let mut records = Vec::with_capacity(declared);
    let mut partial = None;
    for (sub_record, raw_record) in raw.records.iter().enumerate() {
        let index = raw_record.partition_key_index;
        let Some(partition_key) = table_entry(&partition_keys, index) else {
            partial = Some(DeaggregateError::PartitionKeyIndexOutOfRange {
                sub_record,
                declared,
                index,
                table_len: partition_keys.len(),
            });
            break;
        };
        let explicit_hash_key = match raw_record.explicit_hash_key_index {
            None => None,
            Some(index) => {
                let Some((key, check)) = table_entry(&explicit_hash_keys, index) else {
                    partial = Some(DeaggregateError::ExplicitHashKeyIndexOutOfRange {
                        sub_record,
                        declared,
                        index,
                        table_len: explicit_hash_keys.len(),
                    });
                    break;
                };
                match check {
                    HashKeyCheck::InRange => Some(key.clone()),
                    HashKeyCheck::NotANumber => {
                        partial = Some(DeaggregateError::ExplicitHashKeyNotANumber {
                            sub_record,
                            declared,
                            key: shorten(key),
                        });
                        break;
                    }
                    HashKeyCheck::OutOfRange => {
                        records.clear();
                        partial = Some(DeaggregateError::ExplicitHashKeyOutOfRange {
                            sub_record,
                            declared,
                            key: shorten(key),
                        });
                        break;
                    }
                }
            }
        };
        records.push(UserRecord {
            partition_key: partition_key.clone(),
            explicit_hash_key,
            data: raw_record.data,
        });
    }
    Deaggregated::Aggregated { records, partial }
}

/// `table.get((int) index)` as Java does it: the low 32 bits of the index as a
/// signed `int` (see "Indexes" in the module documentation).
fn table_entry<T>(table: &[T], index: u64) -> Option<&T> {
    // Truncation is the point: Java's `(int)` cast keeps the low 32 bits.
    let java_int = index as u32 as i32;
    usize::try_from(java_int)
        .ok()
        .and_then(|index| table.get(index))
}

/// A key for an error message: its first 128 characters.
fn shorten(key: &str) -> String {
    const MAX_CHARS: usize = 128;
    match key.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &key[..end]),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        out
    }

    #[test]
    fn deaggregate_at_most_bounds_every_list_and_decides_plain_like_java() {
        let mut agg = Aggregator::new(1 << 20);
        for i in 0..5 {
            assert!(agg.push(&format!("k{}", i % 2), None, b"x").is_none());
        }
        let agg = agg.finish().unwrap();
        // Within the limit: exactly what deaggregate says.
        assert_eq!(deaggregate_at_most(&agg, 5), Ok(deaggregate(&agg)));
        // Over it: the count, never the records.
        assert_eq!(
            deaggregate_at_most(&agg, 4),
            Err(TooManyRecords { records: 5 })
        );
        // Three partition keys, one record: the key table counts too.
        let body = [
            0x0a, 1, b'a', 0x0a, 1, b'b', 0x0a, 1, b'c', 0x1a, 4, 0x08, 0, 0x1a, 0,
        ];
        assert!(deaggregate(&framed(&body)).is_aggregated());
        assert_eq!(
            deaggregate_at_most(&framed(&body), 2),
            Err(TooManyRecords { records: 1 })
        );
        // A body that protobuf-java refuses after the limit (a record without its
        // required data) is plain, with or without a limit.
        let bad = [
            0x0a, 1, b'a', 0x1a, 4, 0x08, 0, 0x1a, 0, 0x1a, 4, 0x08, 0, 0x1a, 0, 0x1a, 2, 0x08, 0,
        ];
        assert_eq!(deaggregate(&framed(&bad)), Deaggregated::Plain);
        assert_eq!(
            deaggregate_at_most(&framed(&bad), 1),
            Ok(Deaggregated::Plain)
        );
    }

    #[test]
    fn a_break_says_how_many_user_records_are_lost() {
        // Records 0..4 under key 0, record 2 points at key 9: 2 kept, 3 lost.
        let mut body = vec![0x0a, 1, b'k'];
        for i in 0..5u8 {
            let index = if i == 2 { 9 } else { 0 };
            body.extend_from_slice(&[0x1a, 5, 0x08, index, 0x1a, 1, b'a' + i]);
        }
        let framed = framed(&body);
        let Deaggregated::Aggregated { records, partial } = deaggregate(&framed) else {
            panic!("not an aggregate");
        };
        assert_eq!(records.len(), 2);
        let e = partial.unwrap();
        assert_eq!((e.sub_record(), e.declared(), e.lost()), (2, 5, 3));
    }
}
