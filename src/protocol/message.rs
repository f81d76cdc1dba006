//! The wire messages, both directions, as the Java daemon (KCL 2.x/3.x, and 1.x's
//! `shutdown`) reads and writes them.
//!
//! Decoding is lenient, as the daemon may add fields and sends `null` freely: unknown
//! fields are ignored, and `subSequenceNumber`, `millisBehindLatest` and
//! `approximateArrivalTimestamp` may be missing or null. A daemon line is decoded through
//! one flat struct rather than serde's internally tagged enums, which would buffer a whole
//! 64 MiB `processRecords` line into an intermediate tree first.
//!
//! Encoding is strict, because the daemon's Jackson mapper fails on unknown properties and
//! then *skips the line*, leaving both sides waiting forever: a processor message carries
//! exactly the fields the daemon's model has, nothing more. The daemon-side encoders exist
//! for the test driver and the benchmark simulator, and reproduce the Java shapes (nulls
//! included).

use std::borrow::Cow;
use std::sync::Arc;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::sequence::{Esn, SequenceNumber};

/// The `action` of a message: what a `status` answers, and what the session is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// The first message: shard id and starting checkpoint.
    Initialize,
    /// A batch of records (possibly empty).
    ProcessRecords,
    /// A graceful shutdown (or KCL 3.x lease hand-off) is starting; checkpointing allowed.
    ShutdownRequested,
    /// The lease is gone; no checkpoint is possible.
    LeaseLost,
    /// The shard is closed and fully delivered; SHARD_END must be checkpointed.
    ShardEnded,
    /// KCL 1.x only: `shutdown` with a reason (TERMINATE or ZOMBIE).
    Shutdown,
    /// A checkpoint request (processor) or its reply (daemon).
    Checkpoint,
    /// The acknowledgement that ends every action.
    Status,
}

impl Action {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Initialize => "initialize",
            Action::ProcessRecords => "processRecords",
            Action::ShutdownRequested => "shutdownRequested",
            Action::LeaseLost => "leaseLost",
            Action::ShardEnded => "shardEnded",
            Action::Shutdown => "shutdown",
            Action::Checkpoint => "checkpoint",
            Action::Status => "status",
        }
    }

    fn from_wire(s: &str) -> Option<Action> {
        Some(match s {
            "initialize" => Action::Initialize,
            "processRecords" => Action::ProcessRecords,
            "shutdownRequested" => Action::ShutdownRequested,
            "leaseLost" => Action::LeaseLost,
            "shardEnded" => Action::ShardEnded,
            "shutdown" => Action::Shutdown,
            "checkpoint" => Action::Checkpoint,
            "status" => Action::Status,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason of a KCL 1.x `shutdown`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The shard ended (2.x: `shardEnded`): checkpoint required.
    Terminate,
    /// The lease was lost (2.x: `leaseLost`): no checkpoint.
    Zombie,
    /// Any other reason string, kept for the error message.
    Other(String),
}

impl ShutdownReason {
    fn from_wire(s: &str) -> Self {
        match s {
            "TERMINATE" => ShutdownReason::Terminate,
            "ZOMBIE" => ShutdownReason::Zombie,
            other => ShutdownReason::Other(other.to_owned()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            ShutdownReason::Terminate => "TERMINATE",
            ShutdownReason::Zombie => "ZOMBIE",
            ShutdownReason::Other(s) => s,
        }
    }
}

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
/// A `processRecords` line is mostly payload. Decoding it with [`DaemonMessage::decode_shared`]
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

impl Record {
    /// The record's extended sequence number (a missing sub-sequence number counts as 0).
    pub fn esn(&self) -> Esn {
        Esn::new(
            self.sequence_number.clone(),
            self.sub_sequence_number.unwrap_or(0),
        )
    }
}

/// A message from the daemon to the processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonMessage {
    /// `initialize`: the shard and the lease's current checkpoint.
    Initialize {
        /// The shard id, e.g. `shardId-000000000003`.
        shard_id: String,
        /// The lease checkpoint: digits or a sentinel; null only in theory.
        sequence_number: Option<SequenceNumber>,
        /// The checkpoint's sub-sequence number.
        sub_sequence_number: Option<i64>,
    },
    /// `processRecords`: a batch (possibly empty).
    ProcessRecords {
        /// The records, in shard order.
        records: Vec<Record>,
        /// How far behind the tip of the shard this batch is.
        millis_behind_latest: Option<i64>,
    },
    /// `shutdownRequested`.
    ShutdownRequested,
    /// `leaseLost`.
    LeaseLost,
    /// `shardEnded`.
    ShardEnded,
    /// KCL 1.x `shutdown`.
    Shutdown {
        /// TERMINATE or ZOMBIE.
        reason: ShutdownReason,
    },
    /// The reply to a checkpoint request: an echo of the request plus `error`.
    Checkpoint {
        /// The requested sequence number, echoed.
        sequence_number: Option<String>,
        /// The requested sub-sequence number, echoed.
        sub_sequence_number: Option<i64>,
        /// null on success, else the Java exception's simple class name.
        error: Option<String>,
    },
}

impl DaemonMessage {
    /// The message's action.
    pub fn action(&self) -> Action {
        match self {
            DaemonMessage::Initialize { .. } => Action::Initialize,
            DaemonMessage::ProcessRecords { .. } => Action::ProcessRecords,
            DaemonMessage::ShutdownRequested => Action::ShutdownRequested,
            DaemonMessage::LeaseLost => Action::LeaseLost,
            DaemonMessage::ShardEnded => Action::ShardEnded,
            DaemonMessage::Shutdown { .. } => Action::Shutdown,
            DaemonMessage::Checkpoint { .. } => Action::Checkpoint,
        }
    }

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
    Sequence(#[from] super::sequence::InvalidSequenceNumber),
    /// A record whose `data` is not base64 as the daemon writes it.
    #[error("record {sequence_number}/{sub}: data is not valid base64 (the daemon always sends standard, padded base64)", sub = sub_sequence_number.map_or("null".to_owned(), |s| s.to_string()))]
    Base64 {
        /// The record's sequence number, as sent.
        sequence_number: String,
        /// The record's sub-sequence number, as sent.
        sub_sequence_number: Option<i64>,
    },
}

/// True when `b` is base64 exactly as [`crate::item::BASE64`] decodes it and the daemon's
/// Jackson writes it: the standard alphabet (`+/`), a multiple of four characters, at most
/// two `=` and only at the end, and zero bits after the last encoded byte. The daemon never
/// sends anything else, so anything else is a protocol error — whatever `--split` does
/// with the payload later (some modes never decode it).
///
/// No early exit in the alphabet check, so the compiler can test many bytes at a time:
/// payloads are most of a `processRecords` line.
pub fn is_base64(b: &[u8]) -> bool {
    if b.len() % 4 != 0 {
        return false;
    }
    let Some(last) = b.len().checked_sub(4) else {
        return true; // empty: zero bytes
    };
    let (body, quad) = b.split_at(last);
    if !base64_alphabet_only(body) {
        return false;
    }
    match *quad {
        [a, b, b'=', b'='] => sextet(a).is_some() && sextet(b).is_some_and(|v| v & 0x0f == 0),
        [a, b, c, b'='] => {
            sextet(a).is_some() && sextet(b).is_some() && sextet(c).is_some_and(|v| v & 0x03 == 0)
        }
        _ => base64_alphabet_only(quad),
    }
}

/// True when every byte of `b` is in the standard base64 alphabet (no padding).
fn base64_alphabet_only(b: &[u8]) -> bool {
    let outside = |chunk: &[u8]| {
        chunk
            .iter()
            .fold(0u8, |acc, &c| acc | u8::from(!in_base64_alphabet(c)))
    };
    let chunks = b.chunks_exact(32);
    let tail = outside(chunks.remainder());
    chunks.fold(tail, |acc, chunk| acc | outside(chunk)) == 0
}

#[inline]
fn in_base64_alphabet(c: u8) -> bool {
    // `| 0x20` folds A-Z onto a-z; nothing else lands in a-z. Non-short-circuit `|`, so
    // that the loop vectorizes.
    let letter = (c | 0x20).wrapping_sub(b'a') < 26;
    let digit = c.wrapping_sub(b'0') < 10;
    letter | digit | (c == b'+') | (c == b'/')
}

/// The 6-bit value of a base64 character.
fn sextet(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// Checks a parsed record's payload (see [`is_base64`]).
fn check_data(
    data: Option<&str>,
    sequence_number: &str,
    sub: Option<i64>,
) -> Result<(), DecodeError> {
    match data {
        Some(d) if !is_base64(d.as_bytes()) => Err(DecodeError::Base64 {
            sequence_number: sequence_number.to_owned(),
            sub_sequence_number: sub,
        }),
        _ => Ok(()),
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
            Base64Text(TextRepr::Shared {
                line: line.clone(),
                start,
                end: start + text.len(),
            })
        }
        (d, _) => Base64Text(TextRepr::Owned(d.into_owned())),
    });
    Ok(Record {
        data,
        partition_key: r.partition_key.map(Cow::into_owned).unwrap_or_default(),
        sequence_number,
        sub_sequence_number: r.sub_sequence_number,
        approximate_arrival_timestamp: r.approximate_arrival_timestamp,
    })
}

/// Decodes the record element at `range` of a shared line (see [`super::scan`]); its
/// payload points into the line. `previous` lets equal sequence numbers share storage.
pub fn decode_record_at(
    line: &Arc<LineBuf>,
    range: std::ops::Range<usize>,
    previous: Option<&SequenceNumber>,
) -> Result<Record, DecodeError> {
    let text = parse_record_at(line, range)?;
    convert_record(text, Some(line), previous)
}

/// Parses the record element at `range` of `line` (see [`super::scan`]) without copying
/// anything that has no escapes.
pub fn parse_record_at(
    line: &[u8],
    range: std::ops::Range<usize>,
) -> Result<RecordText<'_>, DecodeError> {
    if let Some(text) = fast_record(line, range.clone()) {
        return Ok(text);
    }
    let text: RecordText<'_> = serde_json::from_slice(&line[range]).map_err(DecodeError::Json)?;
    check_data(
        text.data.as_deref(),
        &text.sequence_number,
        text.sub_sequence_number,
    )?;
    Ok(text)
}

/// The record shape the daemon writes, parsed without serde: an object of the five known
/// keys, each at most once (and any number of `action` keys, ignored), strings without
/// escapes and printable ASCII only, a payload that is valid base64 ([`is_base64`]),
/// integers of at most 18 digits. `None` for anything else, which serde then decodes (or
/// rejects; [`parse_record_at`] then checks the payload) — so this accepts a subset of
/// what serde accepts and decodes it identically (the `daemon_line` fuzz target checks
/// both).
///
/// Why: serde's generic field matching, UTF-8 validation and `Cow` handling were a
/// quarter of rsmld's CPU time on batches of small records.
fn fast_record(b: &[u8], range: std::ops::Range<usize>) -> Option<RecordText<'_>> {
    fast_record_from(&b[..range.end], range.start)
        .filter(|(_, end)| *end == range.end)
        .map(|(text, _)| text)
}

/// Like [`fast_record`], for the record that starts at `start` (its `{`): the record and
/// the index after its closing `}`. The structural scan uses this, so a record of the
/// common shape is parsed once, while it is found.
pub(crate) fn fast_record_from(b: &[u8], start: usize) -> Option<(RecordText<'_>, usize)> {
    let (spans, end) = fast_record_spans(b, start, true)?;
    // SAFETY: with `check_data`, every span is printable ASCII (`fast_string`; the payload
    // is base64, a subset of it), so UTF-8.
    let text =
        |r: std::ops::Range<usize>| Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(&b[r]) });
    let text = RecordText {
        data: spans.data.map(text),
        partition_key: spans.partition_key.map(text),
        sequence_number: text(spans.sequence_number),
        sub_sequence_number: spans.sub_sequence_number,
        approximate_arrival_timestamp: spans.approximate_arrival_timestamp,
    };
    Some((text, end))
}

/// Where the fields of a record of the common shape are in its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordSpans {
    pub data: Option<std::ops::Range<usize>>,
    pub partition_key: Option<std::ops::Range<usize>>,
    pub sequence_number: std::ops::Range<usize>,
    pub sub_sequence_number: Option<i64>,
    pub approximate_arrival_timestamp: Option<i64>,
}

/// The parser of [`fast_record_from`], returning where the fields are. With `check_data`
/// false the payload's bytes are not checked to be base64: the stdin reader leaves that
/// pass (most of a line's bytes) to the parallel decoder, which must make it (`text_at` in
/// the scan checks every field it turns into text).
pub(crate) fn fast_record_spans(
    b: &[u8],
    start: usize,
    check_data: bool,
) -> Option<(RecordSpans, usize)> {
    const DATA: u8 = 1;
    const KEY: u8 = 2;
    const SEQ: u8 = 4;
    const SUB: u8 = 8;
    const ARRIVAL: u8 = 16;
    let mut i = start;
    let mut seen = 0u8;
    let (mut data, mut key, mut seq) = (None, None, None);
    let (mut sub, mut arrival) = (None, None);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    // The keys in the order the Java daemon writes them, quotes and colon included: the
    // expected next key is compared in place, any other order takes the general path.
    const ORDER: [(&[u8], u8); 6] = [
        (b"\"data\":", DATA),
        (b"\"partitionKey\":", KEY),
        (b"\"sequenceNumber\":", SEQ),
        (b"\"approximateArrivalTimestamp\":", ARRIVAL),
        (b"\"subSequenceNumber\":", SUB),
        (b"\"action\":", 0),
    ];
    let mut expected = 0;
    loop {
        i = skip_ws(b, i);
        let (field, name_end) = match ORDER.get(expected) {
            Some(&(key, field)) if b[i..].starts_with(key) => {
                expected += 1;
                // The index of the key's closing quote.
                (field, i + key.len() - 2)
            }
            _ => {
                let (name_start, name_end) = fast_string(b, i)?;
                let field = match &b[name_start..name_end] {
                    b"data" => DATA,
                    b"partitionKey" => KEY,
                    b"sequenceNumber" => SEQ,
                    b"subSequenceNumber" => SUB,
                    b"approximateArrivalTimestamp" => ARRIVAL,
                    // The Java daemon writes `"action":"record"` into every record; serde
                    // ignores it (any number of times), and so does this.
                    b"action" => 0,
                    _ => return None,
                };
                (field, name_end)
            }
        };
        if seen & field != 0 {
            return None;
        }
        seen |= field;
        i = skip_ws(b, name_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let null = b[i..].starts_with(b"null");
        match field {
            0 => i = fast_string(b, i)?.1 + 1,
            DATA | KEY | SEQ => {
                if null {
                    if field == SEQ {
                        return None;
                    }
                    i += 4;
                } else {
                    // A payload must be base64 (which is printable ASCII), any other
                    // string printable ASCII.
                    let check: Option<fn(&[u8]) -> bool> = match field {
                        DATA if !check_data => None,
                        DATA => Some(is_base64),
                        _ => Some(super::scan::printable_ascii),
                    };
                    let (start, end) = fast_string_checked(b, i, check)?;
                    match field {
                        DATA => data = Some(start..end),
                        KEY => key = Some(start..end),
                        _ => seq = Some(start..end),
                    }
                    i = end + 1;
                }
            }
            _ => {
                let value = if null {
                    i += 4;
                    None
                } else {
                    let (n, end) = fast_integer(b, i)?;
                    i = end;
                    Some(n)
                };
                if field == SUB {
                    sub = value;
                } else {
                    arrival = value;
                }
            }
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    let spans = RecordSpans {
        data,
        partition_key: key,
        sequence_number: seq?,
        sub_sequence_number: sub,
        approximate_arrival_timestamp: arrival,
    };
    Some((spans, i + 1))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string at `i` (its opening quote) of printable ASCII without escapes: the range of
/// its contents (the closing quote is at the end of the range).
fn fast_string(b: &[u8], i: usize) -> Option<(usize, usize)> {
    fast_string_checked(b, i, Some(super::scan::printable_ascii))
}

/// [`fast_string`] whose contents pass `check` (if any) instead of the printable check.
fn fast_string_checked(
    b: &[u8],
    i: usize,
    check: Option<fn(&[u8]) -> bool>,
) -> Option<(usize, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let end = start + super::scan::quote_or_backslash(&b[start..])?;
    let ok = b[end] == b'"' && check.is_none_or(|check| check(&b[start..end]));
    ok.then_some((start, end))
}

/// A non-negative integer of at most 18 digits (always fits an i64), without a leading
/// zero, at `i`; the value and the index after it.
fn fast_integer(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 18 || (digits > 1 && b[i] == b'0') {
        return None;
    }
    // Serde would read "1.5" or "1e3" as a float (a type error for an integer field).
    if matches!(b.get(i + digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let n = b[i..i + digits]
        .iter()
        .fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
    Some((n, i + digits))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDaemonMessage<'a> {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    shard_id: Option<String>,
    #[serde(default)]
    sequence_number: Option<String>,
    #[serde(default)]
    sub_sequence_number: Option<i64>,
    #[serde(default, borrow)]
    records: Option<Vec<RecordText<'a>>>,
    #[serde(default)]
    millis_behind_latest: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A message from the processor to the daemon. Exactly the daemon model's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// `status`: ends the action named by `response_for`.
    Status {
        /// The action being acknowledged.
        response_for: Action,
    },
    /// `checkpoint` request. `sequence_number: None` means "everything delivered so far"
    /// (SHARD_END during `shardEnded`).
    Checkpoint {
        /// The sequence number to checkpoint at, or null.
        sequence_number: Option<SequenceNumber>,
        /// The sub-sequence number; always sent with a sequence number.
        sub_sequence_number: Option<i64>,
    },
}

impl ProcessorMessage {
    /// A checkpoint request at an extended sequence number.
    pub fn checkpoint_at(esn: &Esn) -> Self {
        ProcessorMessage::Checkpoint {
            sequence_number: Some(esn.seq.clone()),
            sub_sequence_number: Some(esn.sub),
        }
    }

    /// A checkpoint request with null fields (SHARD_END at shard end).
    pub fn checkpoint_null() -> Self {
        ProcessorMessage::Checkpoint {
            sequence_number: None,
            sub_sequence_number: None,
        }
    }

    /// Encodes the message as one compact ASCII JSON line, without the newline.
    #[expect(clippy::expect_used, reason = "messages serialize infallibly")]
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: these types serialize infallibly (strings, integers, null).
        crate::json::to_ascii_vec(self).expect("processor messages always serialize")
    }

    /// Decodes a processor line strictly, as the daemon does: unknown fields are errors.
    /// (Used by the test driver and the benchmark simulator.)
    pub fn decode(line: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
        enum Strict {
            Status {
                #[serde(rename = "responseFor")]
                response_for: Action,
            },
            Checkpoint {
                #[serde(rename = "sequenceNumber", default)]
                sequence_number: Option<SequenceNumber>,
                #[serde(rename = "subSequenceNumber", default)]
                sub_sequence_number: Option<i64>,
            },
        }
        Ok(match serde_json::from_slice::<Strict>(line)? {
            Strict::Status { response_for } => ProcessorMessage::Status { response_for },
            Strict::Checkpoint {
                sequence_number,
                sub_sequence_number,
            } => ProcessorMessage::Checkpoint {
                sequence_number,
                sub_sequence_number,
            },
        })
    }
}

impl Serialize for ProcessorMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ProcessorMessage::Status { response_for } => {
                let mut st = s.serialize_struct("status", 2)?;
                st.serialize_field("action", "status")?;
                st.serialize_field("responseFor", response_for.as_str())?;
                st.end()
            }
            ProcessorMessage::Checkpoint {
                sequence_number,
                sub_sequence_number,
            } => {
                let mut st = s.serialize_struct("checkpoint", 3)?;
                st.serialize_field("action", "checkpoint")?;
                st.serialize_field("sequenceNumber", sequence_number)?;
                st.serialize_field("subSequenceNumber", sub_sequence_number)?;
                st.end()
            }
        }
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

impl Serialize for DaemonMessage {
    /// The Java daemon's shapes, nulls included (used by test drivers and the simulator).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DaemonMessage::Initialize {
                shard_id,
                sequence_number,
                sub_sequence_number,
            } => {
                let mut st = s.serialize_struct("initialize", 4)?;
                st.serialize_field("action", "initialize")?;
                st.serialize_field("shardId", shard_id)?;
                st.serialize_field("sequenceNumber", sequence_number)?;
                st.serialize_field("subSequenceNumber", sub_sequence_number)?;
                st.end()
            }
            DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest,
            } => {
                let mut st = s.serialize_struct("processRecords", 3)?;
                st.serialize_field("action", "processRecords")?;
                st.serialize_field("records", records)?;
                st.serialize_field("millisBehindLatest", millis_behind_latest)?;
                st.end()
            }
            DaemonMessage::ShutdownRequested
            | DaemonMessage::LeaseLost
            | DaemonMessage::ShardEnded => {
                let mut st = s.serialize_struct("action", 1)?;
                st.serialize_field("action", self.action().as_str())?;
                st.end()
            }
            DaemonMessage::Shutdown { reason } => {
                let mut st = s.serialize_struct("shutdown", 2)?;
                st.serialize_field("action", "shutdown")?;
                st.serialize_field("reason", reason.as_str())?;
                st.end()
            }
            DaemonMessage::Checkpoint {
                sequence_number,
                sub_sequence_number,
                error,
            } => {
                let mut st = s.serialize_struct("checkpoint", 4)?;
                st.serialize_field("action", "checkpoint")?;
                st.serialize_field("sequenceNumber", sequence_number)?;
                st.serialize_field("subSequenceNumber", sub_sequence_number)?;
                st.serialize_field("error", error)?;
                st.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    #[test]
    fn base64_as_the_daemon_writes_it() {
        for good in [
            "", "aGk=", "aGVsbG8=", "QUJD", "+/+/", "AA==", "AAA=", "84mawgo=",
        ] {
            assert!(is_base64(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a",
            "aGk",
            "aGk==",
            "a===",
            "====",
            "aG=k",
            "aGk=aGk=",
            "aG k",
            "aGk\n",
            "aGk_",
            "aGk-",
            "AB==",
            "AAB=",
            "not base64!",
            "é===",
        ] {
            assert!(!is_base64(bad.as_bytes()), "{bad:?}");
        }
    }

    proptest! {
        /// Exactly what the workers' decoder accepts.
        #[test]
        fn agrees_with_the_decoder(s in "[A-Za-z0-9+/=_ -]{0,24}") {
            let decodes = crate::item::BASE64.decode(s.as_bytes()).is_ok();
            prop_assert_eq!(is_base64(s.as_bytes()), decodes, "{:?}", s);
        }

        /// An encoding with one character replaced: trailing bits, padding in the wrong
        /// place, a wrong character.
        #[test]
        fn agrees_on_near_misses(
            bytes in prop::collection::vec(any::<u8>(), 1..16),
            at in any::<prop::sample::Index>(),
            c in prop::sample::select(b"AQgwBCDE+/=a0-".to_vec()),
        ) {
            let mut text = crate::item::BASE64.encode(&bytes).into_bytes();
            let i = at.index(text.len());
            text[i] = c;
            let decodes = crate::item::BASE64.decode(&text).is_ok();
            prop_assert_eq!(is_base64(&text), decodes, "{:?}", String::from_utf8_lossy(&text));
        }

        #[test]
        fn accepts_every_encoding(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let text = crate::item::BASE64.encode(&bytes);
            prop_assert!(is_base64(text.as_bytes()));
        }
    }
}
