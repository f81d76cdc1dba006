//! Record splitting: one daemon record becomes the items handlers see.
//!
//! Many producers pack several events into one Kinesis record: KPL aggregates (which a
//! KCL 1.x daemon, or an aggregate nested by a producer, delivers whole), newline-delimited
//! events, JSON arrays, and CloudWatch Logs subscription payloads (gzip JSON with a
//! `logEvents` array). Splitting them into items lets the workers share one record's
//! events, and the checkpoint tracker counts the record done only when *all* its items
//! are ([`Item::user_sub`] of [`Item::user_total`]).
//!
//! Splitting is pure (no IO) and runs before dispatch, because the routing key of an item
//! can differ from its record's (a KPL sub-record has its own partition key) and because
//! the tracker must know `user_total` when the record is delivered.
//!
//! Modes:
//! - `none`: one item per record, payload untouched (never even base64-decoded).
//! - `kpl` (default): KPL aggregates, recognised exactly as the Java KCL does
//!   ([`crate::kpl::deaggregate`]), become one item per user record, routed by the user
//!   record's own partition key and carrying its explicit hash key; anything else is one
//!   item, untouched. An aggregate with zero user records yields zero items (the record is
//!   done at once).
//! - `lines`: one item per non-empty line (`\n`, a trailing `\r` removed).
//! - `json-array`: one item per element of a top-level JSON array, as its exact JSON text.
//! - `cloudwatch-logs`: one item per log event of a `DATA_MESSAGE`, as the JSON object
//!   `{"owner","logGroup","logStream","id","timestamp","message"}`; a `CONTROL_MESSAGE`
//!   (the service's health check) yields zero items.
//!
//! In the three parsing modes a gzip payload (magic 1F 8B) is inflated first, to at most
//! `max_inflated` bytes (a decompression bomb is an error, not an allocation). In `none`
//! and `kpl` payloads are delivered byte for byte.
//!
//! **Bad input loses nothing.** A record that cannot be split as configured (bad base64,
//! corrupt or oversized gzip, not a JSON array, not a CloudWatch Logs payload, too many
//! items) is delivered whole, as one item with its original payload, and a warning names
//! the shard, the sequence number and the reason. A KPL aggregate that breaks off part-way
//! (an index out of range) yields the user records before the break, as the Java KCL does,
//! with a warning that says how many were lost; [`SplitStats`] counts both.
//!
//! **One record's items are bounded.** A record may become at most `max_items` items
//! (`--max-items-per-record`), holding at most twice `max_inflated` bytes of their own
//! (payloads and keys copied into their block): without this, a 31 KiB gzip record of tiny
//! lines became 16 million items and 7 GB. "Whole" is the only sound answer to a record
//! over a bound: a record counts as done only when all its items are, so delivering some
//! of its items and skipping the rest could never be checkpointed honestly. The bound is
//! checked while splitting: lines and JSON array elements stop being collected at the
//! first item past it, and pieces are slices of the decoded payload (CloudWatch events are
//! rendered one at a time), so splitting a record costs its payload, its inflated payload
//! and a slice per item before the items themselves. Bounding the items of a whole *line*
//! is the mapper's job ([`super::mapper`]): it makes them in parts under the in-flight bounds.
//!
//! One file per mode that parses: `kpl`, `lines`, `json_array`, `cloudwatch`
//! (and `gzip`, which the parsing modes share); this file holds what every mode shares:
//! the bounds, the fallback to "whole", the notes, and the items.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;

use crate::codec::decode::RecordText;
use crate::codec::Record;
use crate::kpl::{DeaggregateError, UserRecord};
use crate::pipeline::item::ItemBlock;
use crate::pipeline::item::{Item, Payload, BASE64};
use crate::protocol::tracker::RecordId;
use cloudwatch::LogsPayload;

mod cloudwatch;
mod gzip;
mod json_array;
mod kpl;
mod lines;

/// How records are split into items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitMode {
    /// One item per record, payload untouched.
    None,
    /// One item per KPL user record; other records whole.
    #[default]
    Kpl,
    /// One item per non-empty line.
    Lines,
    /// One item per element of a JSON array.
    JsonArray,
    /// One item per CloudWatch Logs event.
    CloudwatchLogs,
}

/// Default bound on an inflated gzip payload: 64 MiB.
pub const DEFAULT_MAX_INFLATED: usize = 64 << 20;

/// Default bound on the items one record may become: 100 000.
pub const DEFAULT_MAX_ITEMS_PER_RECORD: usize = 100_000;

/// Why a record could not be split (it is then delivered whole).
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The daemon's base64 did not decode.
    #[error("data is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The gzip stream is corrupt or truncated.
    #[error("gzip payload does not inflate: {0}")]
    Gzip(std::io::Error),
    /// The gzip stream inflates beyond the bound.
    #[error("gzip payload inflates to more than {0} bytes")]
    TooLarge(usize),
    /// More items than `--max-items-per-record` allows.
    #[error("it holds more than {0} items (--max-items-per-record)")]
    TooManyItems(usize),
    /// Items that would hold more bytes than twice `--max-inflated-bytes`.
    #[error("its items would hold more than {0} bytes (twice --max-inflated-bytes)")]
    TooManyBytes(usize),
    /// Not the JSON this mode expects.
    #[error("payload is not {expected}: {error}")]
    Json {
        /// What was expected.
        expected: &'static str,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// A CloudWatch Logs payload of an unknown message type.
    #[error("unknown CloudWatch Logs messageType {0:?}")]
    MessageType(String),
}

/// Counters of what splitting did to bad or broken input, shared by every clone of one
/// [`Splitter`] (and so by every thread that splits with it), for telemetry.
#[derive(Debug, Default)]
pub struct SplitStats {
    whole: AtomicU64,
    broken_aggregates: AtomicU64,
    lost_user_records: AtomicU64,
}

impl SplitStats {
    /// Records that could not be split as configured and were delivered whole.
    pub fn delivered_whole(&self) -> u64 {
        self.whole.load(Ordering::Relaxed)
    }

    /// KPL aggregates that broke off part-way (their remaining user records are lost, as
    /// with the Java KCL).
    pub fn broken_aggregates(&self) -> u64 {
        self.broken_aggregates.load(Ordering::Relaxed)
    }

    /// User records lost in broken KPL aggregates.
    pub fn lost_user_records(&self) -> u64 {
        self.lost_user_records.load(Ordering::Relaxed)
    }
}

/// Something about one record that must be logged and counted once it is delivered; see
/// [`Splitter::split_into_quiet`].
#[derive(Debug)]
pub enum SplitNote {
    /// The record could not be split as configured: it was delivered whole.
    Whole(SplitError),
    /// A KPL aggregate broke off: the user records before the break were delivered.
    Broken {
        /// Why it broke off.
        error: DeaggregateError,
        /// User records delivered (those before the break).
        kept: usize,
        /// User records lost (the break and everything after it).
        lost: usize,
    },
}

/// Splits records into items according to a [`SplitMode`].
#[derive(Clone, Debug)]
pub struct Splitter {
    mode: SplitMode,
    max_inflated: usize,
    max_items: usize,
    stats: Arc<SplitStats>,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new(SplitMode::default())
    }
}

/// A record's fields, borrowed: what the splitter reads.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// The base64 payload ("" when the daemon sent none).
    pub data: &'a str,
    /// The partition key.
    pub partition_key: &'a str,
    /// The sequence number (already validated).
    pub sequence_number: &'a str,
    /// The sub-sequence number (0 when absent).
    pub sub_sequence_number: i64,
    /// The arrival timestamp.
    pub approximate_arrival_timestamp: Option<i64>,
}

impl<'a> From<&'a Record> for RecordRef<'a> {
    fn from(r: &'a Record) -> Self {
        RecordRef {
            data: r.data.as_ref().map_or("", |d| d.as_str()),
            partition_key: &r.partition_key,
            sequence_number: r.sequence_number.as_str(),
            sub_sequence_number: r.sub_sequence_number.unwrap_or(0),
            approximate_arrival_timestamp: r.approximate_arrival_timestamp,
        }
    }
}

impl<'a> From<&'a RecordText<'_>> for RecordRef<'a> {
    fn from(r: &'a RecordText<'_>) -> Self {
        RecordRef {
            data: r.data.as_deref().unwrap_or(""),
            partition_key: r.partition_key.as_deref().unwrap_or(""),
            sequence_number: &r.sequence_number,
            sub_sequence_number: r.sub_sequence_number.unwrap_or(0),
            approximate_arrival_timestamp: r.approximate_arrival_timestamp,
        }
    }
}

/// The pieces of one record, borrowing its decoded (and inflated) payload.
enum Pieces<'a> {
    /// Slices of the payload (lines, JSON array elements), under the record's key.
    Slices(Vec<&'a [u8]>),
    /// KPL user records, under their own keys.
    Kpl(Vec<UserRecord<'a>>),
    /// CloudWatch Logs events, each rendered with the payload's header.
    Logs(LogsPayload<'a>),
}

impl Pieces<'_> {
    fn len(&self) -> usize {
        match self {
            Pieces::Slices(s) => s.len(),
            Pieces::Kpl(r) => r.len(),
            Pieces::Logs(p) => p.log_events.len(),
        }
    }

    /// The bytes the items will hold of their own (payloads and keys).
    fn item_bytes(&self) -> usize {
        match self {
            Pieces::Slices(s) => s.iter().map(|p| p.len()).sum(),
            Pieces::Kpl(records) => records
                .iter()
                .map(|r| {
                    r.data.len()
                        + r.partition_key.len()
                        + r.explicit_hash_key.as_ref().map_or(0, |k| k.len())
                })
                .sum(),
            Pieces::Logs(p) => {
                let header = p.header_len();
                p.log_events
                    .iter()
                    .map(|e| {
                        header + e.id.get().len() + e.timestamp.get().len() + e.message.get().len()
                    })
                    .sum()
            }
        }
    }
}

impl Splitter {
    /// A splitter for `mode` with the default bounds.
    pub fn new(mode: SplitMode) -> Self {
        Splitter {
            mode,
            max_inflated: DEFAULT_MAX_INFLATED,
            max_items: DEFAULT_MAX_ITEMS_PER_RECORD,
            stats: Arc::default(),
        }
    }

    /// Sets the bound on inflated gzip payloads.
    pub fn with_max_inflated(mut self, bytes: usize) -> Self {
        self.max_inflated = bytes;
        self
    }

    /// Sets the bound on the items of one record (at least 1).
    pub fn with_max_items_per_record(mut self, items: usize) -> Self {
        self.max_items = items.max(1);
        self
    }

    /// The mode.
    pub fn mode(&self) -> SplitMode {
        self.mode
    }

    /// The counters, shared by every clone of this splitter.
    pub fn stats(&self) -> &Arc<SplitStats> {
        &self.stats
    }

    /// The most bytes the items of one record may hold of their own: twice the inflation
    /// bound (a CloudWatch Logs event repeats its payload's header).
    pub fn max_item_bytes_per_record(&self) -> usize {
        self.max_inflated.saturating_mul(2)
    }

    /// The items of one record (delivered as `id`), in a block of their own.
    pub fn split(&self, shard_id: &str, record: &Record, id: RecordId) -> ItemBlock {
        let mut block = ItemBlock::new(None);
        self.split_into(shard_id, record.into(), id, &mut |item| block.push(item));
        block
    }

    /// Hands the items of one record (delivered as `id`) to `sink`, in order, with
    /// `user_sub`/`user_total` filled in; returns how many there were. A record passed
    /// through whole (the common case) allocates nothing. Problems are logged and counted
    /// at once (see [`Splitter::report`]).
    pub fn split_into(
        &self,
        shard_id: &str,
        record: RecordRef<'_>,
        id: RecordId,
        sink: &mut dyn FnMut(&Item<'_>),
    ) -> u32 {
        let (n, note) = self.split_into_quiet(record, id, sink);
        if let Some(note) = note {
            self.report(
                shard_id,
                record.sequence_number,
                record.sub_sequence_number,
                &note,
            );
        }
        n
    }

    /// [`Splitter::split_into`] without logging or counting: a problem comes back as a
    /// note, for the caller to [`Splitter::report`] once the items are actually delivered
    /// (a split that is thrown away and done again must not warn twice).
    pub fn split_into_quiet(
        &self,
        record: RecordRef<'_>,
        id: RecordId,
        sink: &mut dyn FnMut(&Item<'_>),
    ) -> (u32, Option<SplitNote>) {
        let item = |user_sub, user_total, partition_key, explicit_hash_key, data| {
            item_of(
                record,
                id,
                (user_sub, user_total),
                partition_key,
                explicit_hash_key,
                data,
            )
        };
        // The record as one item; `error`, if any, says why it was not split.
        let whole = |sink: &mut dyn FnMut(&Item<'_>), error: Option<SplitError>| {
            sink(&item(
                0,
                1,
                record.partition_key,
                None,
                Payload::Base64(record.data),
            ));
            (1, error.map(SplitNote::Whole))
        };
        let payload = match self.payload(record.data.as_bytes()) {
            Ok(Some(payload)) => payload,
            Ok(None) => return whole(sink, None),
            Err(e) => return whole(sink, Some(e)),
        };
        let (pieces, broken) = match self.pieces(&payload) {
            Ok(Some(found)) => found,
            Ok(None) => return whole(sink, None),
            Err(e) => return whole(sink, Some(e)),
        };
        // Invariant: `pieces` checked the count against `max_items`, which is a usize of
        // at most u32::MAX items in any sane configuration; saturate rather than wrap.
        let total = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
        let mut json = String::new();
        for i in 0..pieces.len() {
            let user_sub = u32::try_from(i).unwrap_or(u32::MAX);
            match &pieces {
                Pieces::Slices(slices) => sink(&item(
                    user_sub,
                    total,
                    record.partition_key,
                    None,
                    Payload::Bytes(slices[i]),
                )),
                Pieces::Kpl(records) => {
                    let r = &records[i];
                    sink(&item(
                        user_sub,
                        total,
                        r.partition_key.as_str(),
                        r.explicit_hash_key.as_ref().map(|k| k.as_str()),
                        Payload::Bytes(r.data),
                    ))
                }
                Pieces::Logs(p) => {
                    json.clear();
                    p.render(i, &mut json);
                    sink(&item_of(
                        record,
                        id,
                        (user_sub, total),
                        record.partition_key,
                        None,
                        Payload::Bytes(json.as_bytes()),
                    ))
                }
            }
        }
        let note = broken.map(|error| SplitNote::Broken {
            kept: pieces.len(),
            lost: error.lost(),
            error,
        });
        (total, note)
    }

    /// Logs a note about a delivered record (at WARN) and counts it in [`SplitStats`].
    pub fn report(&self, shard_id: &str, sequence_number: &str, sub: i64, note: &SplitNote) {
        match note {
            SplitNote::Whole(e) => {
                self.stats.whole.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "record {sequence_number}/{sub} of {shard_id} cannot be split as {:?} ({e}); delivering it whole",
                    self.mode
                );
            }
            SplitNote::Broken { error, kept, lost } => {
                self.stats.broken_aggregates.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .lost_user_records
                    .fetch_add(*lost as u64, Ordering::Relaxed);
                log::warn!(
                    "record {sequence_number}/{sub} of {shard_id}: KPL aggregate broke off ({error}); \
                     {lost} user records lost, {kept} delivered, as the Java KCL does"
                );
            }
        }
    }

    /// The payload to split: `Ok(None)` means deliver the record whole and untouched
    /// (not an error). Base64 is decoded and, in the parsing modes, gzip inflated.
    fn payload(&self, b64: &[u8]) -> Result<Option<Vec<u8>>, SplitError> {
        match self.mode {
            SplitMode::None => Ok(None),
            // Every aggregate's base64 starts with "84maw" (F3 89 9A C2): anything else is
            // plain, and is passed on without being decoded at all.
            SplitMode::Kpl if !b64.starts_with(b"84maw") => Ok(None),
            SplitMode::Kpl => Ok(Some(BASE64.decode(b64)?)),
            SplitMode::Lines | SplitMode::JsonArray | SplitMode::CloudwatchLogs => {
                gzip::inflate(BASE64.decode(b64)?, self.max_inflated).map(Some)
            }
        }
    }

    /// The pieces of a payload, checked against the per-record bounds, and (KPL) how the
    /// aggregate broke off. `Ok(None)`: deliver
    /// the record whole and untouched (a KPL record that is not an aggregate).
    fn pieces<'a>(
        &self,
        bytes: &'a [u8],
    ) -> Result<Option<(Pieces<'a>, Option<DeaggregateError>)>, SplitError> {
        let (pieces, broken) = match self.mode {
            SplitMode::None => return Ok(None),
            SplitMode::Kpl => match kpl::user_records(bytes, self.max_items)? {
                None => return Ok(None),
                Some((records, partial)) => (Pieces::Kpl(records), partial),
            },
            SplitMode::Lines => (Pieces::Slices(lines::lines(bytes, self.max_items)?), None),
            SplitMode::JsonArray => (
                Pieces::Slices(json_array::elements(bytes, self.max_items)?),
                None,
            ),
            SplitMode::CloudwatchLogs => match cloudwatch::payload(bytes)? {
                Some(p) => (Pieces::Logs(p), None),
                None => (Pieces::Slices(Vec::new()), None),
            },
        };
        if pieces.len() > self.max_items {
            return Err(SplitError::TooManyItems(self.max_items));
        }
        let max_bytes = self.max_item_bytes_per_record();
        if pieces.item_bytes() > max_bytes {
            return Err(SplitError::TooManyBytes(max_bytes));
        }
        Ok(Some((pieces, broken)))
    }
}

/// An item of `record` (delivered as `id`): its `(user_sub, user_total)`, key, explicit
/// hash key and payload.
fn item_of<'a>(
    record: RecordRef<'a>,
    id: RecordId,
    (user_sub, user_total): (u32, u32),
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
    data: Payload<'a>,
) -> Item<'a> {
    Item {
        record: id,
        sequence_number: record.sequence_number,
        sub_sequence_number: record.sub_sequence_number,
        user_sub,
        user_total,
        partition_key,
        explicit_hash_key,
        approximate_arrival_timestamp: record.approximate_arrival_timestamp,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpl::Aggregator;
    use crate::protocol::sequence::SequenceNumber;
    use std::io::Write;

    fn record(data: &[u8]) -> Record {
        Record {
            data: Some(BASE64.encode(data).into()),
            partition_key: "outer".into(),
            sequence_number: SequenceNumber::parse("12345").unwrap(),
            sub_sequence_number: Some(0),
            approximate_arrival_timestamp: Some(7),
        }
    }

    fn split(mode: SplitMode, data: &[u8]) -> ItemBlock {
        Splitter::new(mode).split("shard", &record(data), RecordId(0))
    }

    fn bytes(items: &ItemBlock) -> Vec<Vec<u8>> {
        items
            .iter()
            .map(|i| i.data.bytes().unwrap().into_owned())
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn aggregate(records: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut agg = Aggregator::new(1 << 20);
        for (pk, ehk, data) in records {
            assert!(agg.push(pk, *ehk, data).is_none());
        }
        agg.finish().unwrap()
    }

    #[test]
    fn none_keeps_the_base64_untouched() {
        let block = split(SplitMode::None, b"a\nb");
        let items: Vec<Item> = block.iter().collect();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].data, Payload::Base64(&BASE64.encode(b"a\nb")));
        assert_eq!((items[0].user_sub, items[0].user_total), (0, 1));
        assert_eq!(items[0].partition_key, "outer");
    }

    #[test]
    fn kpl_splits_aggregates_with_their_own_keys() {
        let agg = aggregate(&[
            ("k1", None, b"one"),
            ("k2", Some("42"), b""),
            ("k1", None, b"\x00\xff"),
        ]);
        let block = split(SplitMode::Kpl, &agg);
        let items: Vec<Item> = block.iter().collect();
        assert_eq!(bytes(&block), vec![b"one".to_vec(), vec![], vec![0, 255]]);
        let keys: Vec<_> = items.iter().map(|i| i.partition_key).collect();
        assert_eq!(keys, ["k1", "k2", "k1"]);
        let ehk: Vec<_> = items.iter().map(|i| i.explicit_hash_key).collect();
        assert_eq!(ehk, [None, Some("42"), None]);
        for (i, item) in items.iter().enumerate() {
            assert_eq!((item.user_sub, item.user_total), (i as u32, 3));
            assert_eq!(item.sub_sequence_number, 0);
            assert_eq!(item.sequence_number, "12345");
        }
    }

    #[test]
    fn kpl_plain_records_pass_untouched_and_empty_aggregates_yield_nothing() {
        let block = split(SplitMode::Kpl, b"plain");
        let items: Vec<Item> = block.iter().collect();
        assert_eq!(items[0].data, Payload::Base64(&BASE64.encode(b"plain")));
        // A corrupt aggregate (bad checksum) is plain, exactly as the Java KCL decides.
        let mut agg = aggregate(&[("k", None, b"x"), ("k", None, b"y")]);
        let last = agg.len() - 1;
        agg[last] ^= 1;
        let block = split(SplitMode::Kpl, &agg);
        assert_eq!(bytes(&block), vec![agg.clone()]);
        // An aggregate with a key table but no user records: zero items.
        let body = [0x0a, 0x01, b'k'];
        let mut empty = vec![0xf3, 0x89, 0x9a, 0xc2];
        empty.extend_from_slice(&body);
        empty.extend_from_slice(&<md5::Md5 as md5::Digest>::digest(body));
        assert!(split(SplitMode::Kpl, &empty).is_empty());
    }

    #[test]
    fn lines_with_crlf_and_gzip() {
        let block = split(SplitMode::Lines, b"a\r\n\nb\nc");
        assert_eq!(
            bytes(&block),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        let block = split(SplitMode::Lines, &gzip(b"x\ny\n"));
        assert_eq!(bytes(&block), vec![b"x".to_vec(), b"y".to_vec()]);
        assert!(split(SplitMode::Lines, b"").is_empty());
    }

    #[test]
    fn json_array_elements_keep_their_text() {
        let block = split(SplitMode::JsonArray, br#"[1, {"a": "\u00e9"}, "s"]"#);
        assert_eq!(
            bytes(&block),
            vec![
                b"1".to_vec(),
                br#"{"a": "\u00e9"}"#.to_vec(),
                br#""s""#.to_vec()
            ]
        );
    }

    #[test]
    fn cloudwatch_logs_events() {
        let payload = br#"{"messageType":"DATA_MESSAGE","owner":"123","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{"id":"1","timestamp":10,"message":"hello"},{"id":"2","timestamp":11,"message":"w\"x"}]}"#;
        let block = split(SplitMode::CloudwatchLogs, &gzip(payload));
        assert_eq!(
            bytes(&block),
            vec![
                br#"{"owner":"123","logGroup":"g","logStream":"s","id":"1","timestamp":10,"message":"hello"}"#.to_vec(),
                br#"{"owner":"123","logGroup":"g","logStream":"s","id":"2","timestamp":11,"message":"w\"x"}"#.to_vec(),
            ]
        );
        let control = br#"{"messageType":"CONTROL_MESSAGE","logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE"}]}"#;
        assert!(split(SplitMode::CloudwatchLogs, &gzip(control)).is_empty());
    }

    #[test]
    fn unsplittable_records_are_delivered_whole() {
        for (mode, data) in [
            (SplitMode::JsonArray, b"{\"not\":\"array\"}".to_vec()),
            (SplitMode::CloudwatchLogs, b"plain text".to_vec()),
            (SplitMode::Lines, vec![0x1f, 0x8b, 1, 2, 3]),
        ] {
            let block = split(mode, &data);
            let items: Vec<Item> = block.iter().collect();
            assert_eq!(bytes(&block), vec![data.clone()], "{mode:?}");
            assert_eq!(items[0].user_total, 1);
        }
        let mut r = record(b"x");
        r.data = Some("not base64!".into());
        let block = Splitter::new(SplitMode::Lines).split("s", &r, RecordId(0));
        assert_eq!(block.get(0).unwrap().data, Payload::Base64("not base64!"));
    }

    #[test]
    fn gzip_bombs_are_bounded() {
        let bomb = gzip(&vec![b'a'; 1 << 20]);
        let block = Splitter::new(SplitMode::Lines)
            .with_max_inflated(1000)
            .split("s", &record(&bomb), RecordId(0));
        assert_eq!(
            bytes(&block),
            vec![bomb.clone()],
            "oversized payload delivered whole"
        );
        let block = Splitter::new(SplitMode::Lines)
            .with_max_inflated(1 << 20)
            .split("s", &record(&bomb), RecordId(0));
        assert_eq!(block.len(), 1);
        assert_eq!(block.get(0).unwrap().data.bytes().unwrap().len(), 1 << 20);
    }

    /// An aggregate of `n` user records under key "k" whose record `bad_at` points past
    /// the one-key table (or, with `ehk`, carries an explicit hash key of 2^128).
    pub(crate) fn broken_aggregate(n: usize, bad_at: usize, ehk: bool) -> Vec<u8> {
        use crate::kpl::proto;
        use prost::Message;
        let records = (0..n)
            .map(|i| proto::Record {
                partition_key_index: if i == bad_at && !ehk { 9 } else { 0 },
                explicit_hash_key_index: (i == bad_at && ehk).then_some(0),
                data: vec![b'a' + i as u8],
                tags: vec![],
            })
            .collect();
        let body = proto::AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: vec!["340282366920938463463374607431768211456".into()],
            records,
        }
        .encode_to_vec();
        let mut out = crate::kpl::MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&<md5::Md5 as md5::Digest>::digest(&body));
        out
    }

    #[test]
    fn a_broken_aggregate_keeps_the_java_prefix_and_counts_the_lost() {
        let splitter = Splitter::new(SplitMode::Kpl);
        // Record 2 of 5 has a bad key index: 0 and 1 are kept, 3 are lost.
        let block = splitter.split("s", &record(&broken_aggregate(5, 2, false)), RecordId(0));
        assert_eq!(bytes(&block), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(block.get(1).unwrap().user_total, 2);
        assert_eq!(splitter.stats().broken_aggregates(), 1);
        assert_eq!(splitter.stats().lost_user_records(), 3);
        // An explicit hash key out of range drops the whole aggregate (all 4).
        let block = splitter.split("s", &record(&broken_aggregate(4, 3, true)), RecordId(1));
        assert!(block.is_empty());
        assert_eq!(splitter.stats().broken_aggregates(), 2);
        assert_eq!(splitter.stats().lost_user_records(), 7);
        // The counters are shared by clones (the mapper splits on several threads).
        let clone = splitter.clone();
        clone.split("s", &record(&broken_aggregate(3, 0, false)), RecordId(2));
        assert_eq!(splitter.stats().lost_user_records(), 10);
        assert_eq!(splitter.stats().delivered_whole(), 0);
    }

    #[test]
    fn records_over_the_item_limit_are_delivered_whole() {
        let three = |mode, data: &[u8]| {
            let splitter = Splitter::new(mode).with_max_items_per_record(3);
            let block = splitter.split("s", &record(data), RecordId(0));
            (bytes(&block), splitter.stats().delivered_whole())
        };
        // At the limit: split.
        assert_eq!(three(SplitMode::Lines, b"a\nb\nc").0.len(), 3);
        assert_eq!(three(SplitMode::JsonArray, b"[1,2,3]").0.len(), 3);
        // Over it: whole, and counted.
        for (mode, data) in [
            (SplitMode::Lines, b"a\nb\nc\nd".to_vec()),
            (SplitMode::JsonArray, b"[1,2,3,4]".to_vec()),
            (SplitMode::Lines, gzip(b"a\nb\nc\nd\n")),
            (
                SplitMode::Kpl,
                aggregate(&[
                    ("k", None, b"1"),
                    ("k", None, b"2"),
                    ("k", None, b"3"),
                    ("k", None, b"4"),
                ]),
            ),
        ] {
            assert_eq!(three(mode, &data), (vec![data.clone()], 1), "{mode:?}");
        }
        let events = br#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","timestamp":1,"message":"m"},{"id":"2","timestamp":1,"message":"m"},{"id":"3","timestamp":1,"message":"m"},{"id":"4","timestamp":1,"message":"m"}]}"#;
        assert_eq!(three(SplitMode::CloudwatchLogs, events).1, 1);
        // A JSON array stops being parsed at the element past the limit: the rest may
        // even be malformed, it is still "too many items", not "not an array".
        let splitter = Splitter::new(SplitMode::JsonArray).with_max_items_per_record(2);
        let mut err = None;
        let (n, note) = splitter.split_into_quiet(
            (&record(b"[1,2,3,garbage")).into(),
            RecordId(0),
            &mut |_| {},
        );
        if let Some(SplitNote::Whole(e)) = note {
            err = Some(e.to_string());
        }
        assert_eq!(n, 1);
        assert_eq!(
            err.as_deref(),
            Some("it holds more than 2 items (--max-items-per-record)")
        );
    }

    #[test]
    fn items_that_would_hold_too_many_bytes_are_delivered_whole() {
        // 200 user records share one 1 KiB key: as items they would copy it 200 times.
        let key = "k".repeat(1024);
        let mut agg = Aggregator::new(1 << 20);
        for _ in 0..200 {
            assert!(agg.push(&key, None, b"x").is_none());
        }
        let agg = agg.finish().unwrap();
        let splitter = Splitter::new(SplitMode::Kpl).with_max_inflated(64 << 10);
        let (n, note) = splitter.split_into_quiet((&record(&agg)).into(), RecordId(0), &mut |_| {});
        assert_eq!(n, 1);
        assert!(
            matches!(
                note,
                Some(SplitNote::Whole(SplitError::TooManyBytes(131072)))
            ),
            "{note:?}"
        );
        // Within the bound they are split.
        let splitter = Splitter::new(SplitMode::Kpl).with_max_inflated(1 << 20);
        assert_eq!(splitter.split("s", &record(&agg), RecordId(0)).len(), 200);
        // A CloudWatch Logs event repeats its payload's header.
        let group = "g".repeat(1000);
        let events: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"id":"{i}","timestamp":1,"message":"m"}}"#))
            .collect();
        let payload = format!(
            r#"{{"messageType":"DATA_MESSAGE","logGroup":"{group}","logEvents":[{}]}}"#,
            events.join(",")
        );
        let splitter = Splitter::new(SplitMode::CloudwatchLogs).with_max_inflated(32 << 10);
        let (n, note) = splitter.split_into_quiet(
            (&record(payload.as_bytes())).into(),
            RecordId(0),
            &mut |_| {},
        );
        assert_eq!(n, 1);
        assert!(
            matches!(note, Some(SplitNote::Whole(SplitError::TooManyBytes(_)))),
            "{note:?}"
        );
    }
}
