//! Daemon-side encoders: the lines the Java daemon writes, and records to put in them.

use base64::Engine;

use crate::codec::message::{DaemonMessage, Record};
use crate::protocol::sequence::SequenceNumber;
use crate::testkit::daemon::CheckpointModel;

/// The shard the binary tests initialize.
pub const SHARD7: &str = "shardId-000000000007";

/// The daemon's `shutdownRequested` line.
pub const SHUTDOWN_REQUESTED: &str = r#"{"action":"shutdownRequested"}"#;

/// The daemon's `leaseLost` line.
pub const LEASE_LOST: &str = r#"{"action":"leaseLost"}"#;

/// A daemon message as the Java daemon writes it (no newline).
pub fn line(msg: &DaemonMessage) -> String {
    serde_json::to_string(msg).expect("daemon messages serialize")
}

/// A daemon message as ASCII-only JSON with its newline, ready for one `write_all`.
pub fn line_bytes(msg: &DaemonMessage) -> Vec<u8> {
    let mut v = crate::json::to_ascii_vec(msg).expect("daemon messages serialize");
    v.push(b'\n');
    v
}

/// `initialize` for `shard` at `at` (a sequence number or sentinel) with sub-sequence 0.
pub fn initialize(shard: &str, at: SequenceNumber) -> DaemonMessage {
    DaemonMessage::Initialize {
        shard_id: shard.into(),
        sequence_number: Some(at),
        sub_sequence_number: Some(0),
    }
}

/// `initialize` for `shard` at `at` (a sequence number or sentinel), as a line.
pub fn init_line_at(shard: &str, at: &str) -> String {
    line(&initialize(
        shard,
        SequenceNumber::parse(at).expect("test sequence number"),
    ))
}

/// `initialize` for [`SHARD7`] at TRIM_HORIZON.
pub fn init_line() -> String {
    init_line_at(SHARD7, "TRIM_HORIZON")
}

/// `processRecords` with `records` and `millisBehindLatest`.
pub fn process_records(records: Vec<Record>, millis_behind_latest: Option<i64>) -> DaemonMessage {
    DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest,
    }
}

/// Notes `records` as delivered in `model` and returns their `processRecords` line
/// (without millisBehindLatest), as the daemon raises `largestPermitted` before it sends.
pub fn batch(model: &mut CheckpointModel, records: Vec<Record>) -> String {
    model.deliver_all(&records);
    line(&process_records(records, None))
}

/// A realistic 56-digit sequence number ending in `i`.
pub fn seq(i: u64) -> String {
    format!("49680445498841953494698307936{i:027}")
}

/// A record with sequence number `seq(i)`, key `key` and payload `text`.
pub fn record_with_text(i: u64, key: &str, text: &str) -> Record {
    Record {
        data: Some(
            base64::engine::general_purpose::STANDARD
                .encode(text)
                .into(),
        ),
        partition_key: key.into(),
        sequence_number: SequenceNumber::parse(&seq(i)).expect("digits"),
        sub_sequence_number: Some(0),
        approximate_arrival_timestamp: Some(1_700_000_000_000 + i as i64),
    }
}

/// A record with payload `payload-{i}`.
pub fn record(i: u64, key: &str) -> Record {
    record_with_text(i, key, &format!("payload-{i}"))
}

/// A KPL aggregate record around `body` (an encoded `AggregatedRecord`): the magic, the
/// body and its MD5 digest.
pub fn kpl_framed(body: &[u8]) -> Vec<u8> {
    let mut out = crate::kpl::MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&<md5::Md5 as md5::Digest>::digest(body));
    out
}
