//! Benchmark baseline: the "bare decode bound" — a single-threaded processor that does the
//! least work a correct one must do: parse every daemon line fully with serde_json (into
//! borrowed, zero-copy structs) and base64-decode every record's payload. It keeps nothing.
//!
//! It checkpoints with a null sequence number at `shutdownRequested` (the last delivered
//! record) and at `shardEnded` (SHARD_END), reading each reply before its status. One
//! write and one flush per message. Exits 0 at stdin EOF.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Write};
use std::process::ExitCode;

use base64::Engine;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // every field is parsed; only some are used
struct Message<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(default, borrow)]
    shard_id: Option<&'a str>,
    #[serde(default, borrow)]
    sequence_number: Option<&'a str>,
    #[serde(default)]
    sub_sequence_number: Option<i64>,
    #[serde(default, borrow)]
    records: Option<Vec<Rec<'a>>>,
    #[serde(default)]
    millis_behind_latest: Option<i64>,
    #[serde(default, borrow)]
    reason: Option<&'a str>,
    #[serde(default, borrow)]
    error: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct Rec<'a> {
    #[serde(default, borrow)]
    data: Option<&'a str>,
    #[serde(borrow)]
    partition_key: Cow<'a, str>,
    #[serde(borrow)]
    sequence_number: &'a str,
    #[serde(default)]
    sub_sequence_number: Option<i64>,
    #[serde(default)]
    approximate_arrival_timestamp: Option<i64>,
    #[serde(default, borrow)]
    action: Option<&'a str>,
}

const NULL_CHECKPOINT: &[u8] =
    b"{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null}\n";

fn run() -> io::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    #[expect(clippy::disallowed_methods, reason = "stdout is its protocol")]
    let mut out = io::stdout().lock();
    let mut line = Vec::with_capacity(1 << 20);
    let mut payload = Vec::new();
    let (mut records, mut bytes, mut check) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            eprintln!(
                "decode_processor: {records} records, {bytes} payload bytes (check {check:x})"
            );
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let msg: Message = serde_json::from_slice(&line).map_err(io::Error::other)?;
        for r in msg.records.iter().flatten() {
            let data = r.data.unwrap_or("");
            payload.resize(data.len() / 4 * 3 + 3, 0);
            let n = b64
                .decode_slice(data, &mut payload)
                .map_err(io::Error::other)?;
            records += 1;
            bytes += n as u64;
            check = check.wrapping_add(u64::from(payload.first().copied().unwrap_or(0)));
        }
        if matches!(&*msg.action, "shardEnded" | "shutdownRequested") {
            out.write_all(NULL_CHECKPOINT)?;
            out.flush()?;
            let mut reply = Vec::new();
            if input.read_until(b'\n', &mut reply)? == 0 {
                return Ok(());
            }
            let reply: Message = serde_json::from_slice(&reply).map_err(io::Error::other)?;
            if let Some(e) = reply.error {
                eprintln!("decode_processor: checkpoint refused: {e}");
            }
        }
        let status = format!(
            "{{\"action\":\"status\",\"responseFor\":{}}}\n",
            serde_json::to_string(&*msg.action).map_err(io::Error::other)?
        );
        out.write_all(status.as_bytes())?;
        out.flush()?;
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decode_processor: {e}");
            ExitCode::FAILURE
        }
    }
}
