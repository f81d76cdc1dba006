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
//! corrupt or oversized gzip, not a JSON array, not a CloudWatch Logs payload) is delivered
//! whole, as one item with its original payload, and a warning names the shard, the
//! sequence number and the reason. A KPL aggregate that breaks off part-way (an index out
//! of range) yields the user records before the break, as the Java KCL does, with a
//! warning.

use std::io::Read;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::checkpoint::RecordId;
use crate::item::ItemBlock;
use crate::item::{Item, Payload, BASE64};
use crate::kpl::{deaggregate, Deaggregated};
use crate::protocol::message::{Record, RecordText};

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

/// Splits records into items according to a [`SplitMode`].
#[derive(Clone, Debug)]
pub struct Splitter {
    mode: SplitMode,
    max_inflated: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new(SplitMode::default())
    }
}

/// One piece of a record, before it becomes an [`Item`].
struct Piece {
    key: Option<String>,
    explicit_hash_key: Option<String>,
    /// `None`: the record's payload, whole.
    data: Option<Vec<u8>>,
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

impl Splitter {
    /// A splitter for `mode` with the default inflation bound.
    pub fn new(mode: SplitMode) -> Self {
        Splitter {
            mode,
            max_inflated: DEFAULT_MAX_INFLATED,
        }
    }

    /// Sets the bound on inflated gzip payloads.
    pub fn with_max_inflated(mut self, bytes: usize) -> Self {
        self.max_inflated = bytes;
        self
    }

    /// The mode.
    pub fn mode(&self) -> SplitMode {
        self.mode
    }

    /// The items of one record (delivered as `id`), in a block of their own.
    pub fn split(&self, shard_id: &str, record: &Record, id: RecordId) -> ItemBlock {
        let mut block = ItemBlock::new(None);
        self.split_into(shard_id, record.into(), id, &mut |item| block.push(item));
        block
    }

    /// Hands the items of one record (delivered as `id`) to `sink`, in order, with
    /// `user_sub`/`user_total` filled in; returns how many there were. A record passed
    /// through whole (the common case) allocates nothing.
    pub fn split_into(
        &self,
        shard_id: &str,
        record: RecordRef<'_>,
        id: RecordId,
        sink: &mut dyn FnMut(&Item<'_>),
    ) -> u32 {
        let item = |user_sub, user_total, partition_key, explicit_hash_key, data| Item {
            record: id,
            sequence_number: record.sequence_number,
            sub_sequence_number: record.sub_sequence_number,
            user_sub,
            user_total,
            partition_key,
            explicit_hash_key,
            approximate_arrival_timestamp: record.approximate_arrival_timestamp,
            data,
        };
        let pieces = match self.pieces(record.data.as_bytes()) {
            Ok(Some(pieces)) => pieces,
            Ok(None) => {
                sink(&item(
                    0,
                    1,
                    record.partition_key,
                    None,
                    Payload::Base64(record.data),
                ));
                return 1;
            }
            Err(e) => {
                log::warn!(
                    "record {}/{} of {shard_id} cannot be split as {:?} ({e}); delivering it whole",
                    record.sequence_number,
                    record.sub_sequence_number,
                    self.mode
                );
                vec![Piece {
                    key: None,
                    explicit_hash_key: None,
                    data: None,
                }]
            }
        };
        let total = pieces.len() as u32;
        for (i, p) in pieces.iter().enumerate() {
            sink(&item(
                i as u32,
                total,
                p.key.as_deref().unwrap_or(record.partition_key),
                p.explicit_hash_key.as_deref(),
                match &p.data {
                    Some(bytes) => Payload::Bytes(bytes),
                    None => Payload::Base64(record.data),
                },
            ));
        }
        total
    }

    /// `Ok(None)`: deliver the record whole and untouched (not an error).
    fn pieces(&self, b64: &[u8]) -> Result<Option<Vec<Piece>>, SplitError> {
        match self.mode {
            SplitMode::None => Ok(None),
            SplitMode::Kpl => {
                // Every aggregate's base64 starts with "84maw" (F3 89 9A C2): anything
                // else is plain, and is passed on without being decoded at all.
                if !b64.starts_with(b"84maw") {
                    return Ok(None);
                }
                let bytes = BASE64.decode(b64)?;
                Ok(kpl_pieces(&bytes))
            }
            SplitMode::Lines => {
                let bytes = self.payload(b64)?;
                Ok(Some(
                    bytes
                        .split(|&b| b == b'\n')
                        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                        .filter(|l| !l.is_empty())
                        .map(|l| bytes_piece(l.to_vec()))
                        .collect(),
                ))
            }
            SplitMode::JsonArray => {
                let bytes = self.payload(b64)?;
                let elements: Vec<&RawValue> =
                    serde_json::from_slice(&bytes).map_err(|error| SplitError::Json {
                        expected: "a JSON array",
                        error,
                    })?;
                Ok(Some(
                    elements
                        .into_iter()
                        .map(|e| bytes_piece(e.get().as_bytes().to_vec()))
                        .collect(),
                ))
            }
            SplitMode::CloudwatchLogs => {
                let bytes = self.payload(b64)?;
                cloudwatch_pieces(&bytes).map(Some)
            }
        }
    }

    /// Decodes base64 and inflates gzip (bounded).
    fn payload(&self, b64: &[u8]) -> Result<Vec<u8>, SplitError> {
        let bytes = BASE64.decode(b64)?;
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            return Ok(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(self.max_inflated));
        let limit = self.max_inflated as u64 + 1;
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .take(limit)
            .read_to_end(&mut out)
            .map_err(SplitError::Gzip)?;
        if out.len() > self.max_inflated {
            return Err(SplitError::TooLarge(self.max_inflated));
        }
        Ok(out)
    }
}

fn bytes_piece(data: Vec<u8>) -> Piece {
    Piece {
        key: None,
        explicit_hash_key: None,
        data: Some(data),
    }
}

fn kpl_pieces(bytes: &[u8]) -> Option<Vec<Piece>> {
    match deaggregate(bytes) {
        Deaggregated::Plain => None,
        Deaggregated::Aggregated { records, partial } => {
            if let Some(e) = partial {
                log::warn!(
                    "KPL aggregate broke off at user record {}: {e}; keeping the {} before it, as the Java KCL does",
                    e.sub_record(),
                    records.len()
                );
            }
            Some(
                records
                    .into_iter()
                    .map(|r| Piece {
                        key: Some(r.partition_key.as_str().to_owned()),
                        explicit_hash_key: r.explicit_hash_key.map(|k| k.as_str().to_owned()),
                        data: Some(r.data.to_vec()),
                    })
                    .collect(),
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudWatchPayload<'a> {
    message_type: String,
    #[serde(default, borrow)]
    owner: Option<&'a RawValue>,
    #[serde(default, borrow)]
    log_group: Option<&'a RawValue>,
    #[serde(default, borrow)]
    log_stream: Option<&'a RawValue>,
    #[serde(default, borrow)]
    log_events: Vec<LogEvent<'a>>,
}

#[derive(Deserialize)]
struct LogEvent<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    timestamp: &'a RawValue,
    #[serde(borrow)]
    message: &'a RawValue,
}

fn cloudwatch_pieces(bytes: &[u8]) -> Result<Vec<Piece>, SplitError> {
    let p: CloudWatchPayload<'_> =
        serde_json::from_slice(bytes).map_err(|error| SplitError::Json {
            expected: "a CloudWatch Logs subscription payload",
            error,
        })?;
    match p.message_type.as_str() {
        "CONTROL_MESSAGE" => return Ok(Vec::new()),
        "DATA_MESSAGE" => {}
        other => return Err(SplitError::MessageType(other.to_owned())),
    }
    let raw = |v: Option<&RawValue>| v.map_or("null", RawValue::get).to_owned();
    let (owner, group, stream) = (raw(p.owner), raw(p.log_group), raw(p.log_stream));
    Ok(p
        .log_events
        .iter()
        .map(|e| {
            let json = format!(
                r#"{{"owner":{owner},"logGroup":{group},"logStream":{stream},"id":{},"timestamp":{},"message":{}}}"#,
                e.id.get(),
                e.timestamp.get(),
                e.message.get()
            );
            bytes_piece(json.into_bytes())
        })
        .collect())
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
}
