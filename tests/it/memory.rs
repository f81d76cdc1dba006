//! Peak memory of the real binary for the worst inputs: whatever one record or one line
//! holds, rsmld either processes it (the checkpoint after `shutdownRequested` covers its
//! last record) or delivers an unsplittable record whole with a warning naming it, and
//! its peak RSS (VmHWM, read from /proc before stdin closes) stays under
//! [`peak_rss_bound`], the README's formula for these settings.
//!
//! Each case prints its peak RSS (`cargo test --test it memory:: -- --nocapture`).

use crate::common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{init_line, seq, CheckpointModel, Proc, SHUTDOWN_REQUESTED};
use rsmld::codec::message::{Action, ProcessorMessage};
use rsmld::kpl::Aggregator;
use rsmld::pipeline::item::BASE64;
use rsmld::protocol::sequence::{Esn, SequenceNumber};

use base64::Engine;

/// The README's bound on peak RSS for the default settings, given the longest daemon line
/// `line` (L): 64 MiB + 4 L + 2 B + 3 I + 256 B x (M + 2 N), with B = 8 MiB
/// (`--max-in-flight-bytes`), I = 64 MiB (`--max-inflated-bytes`), M = 20 000
/// (`--max-in-flight`) and N = 100 000 (`--max-items-per-record`): 4 L + about 326 MiB.
/// Cases with small lines must also stay under 512 MiB.
fn peak_rss_bound(line: usize) -> u64 {
    let (b, i, m, n) = (8u64 << 20, 64u64 << 20, 20_000u64, 100_000u64);
    let formula = (64 << 20) + 4 * line as u64 + 2 * b + 3 * i + 256 * (m + 2 * n);
    if line < 32 << 20 {
        formula.min(512 << 20)
    } else {
        formula
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A `processRecords` line of records `(index, key, base64 payload)`, written directly
/// (a 150 MiB payload is not copied through a JSON value).
fn records_line(records: &[(u64, &str, String)]) -> String {
    let mut out = String::from(r#"{"action":"processRecords","millisBehindLatest":0,"records":["#);
    for (n, (i, key, data)) in records.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"action":"record","data":"{data}","partitionKey":"{key}","sequenceNumber":"{}","subSequenceNumber":0,"approximateArrivalTimestamp":1700000000000}}"#,
            seq(*i)
        ));
    }
    out.push_str("]}");
    out
}

/// Peak resident set size of `pid` so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Sends `line` and answers checkpoints until the status for `action` (long timeouts:
/// a debug build decodes 150 MiB slowly on a loaded machine).
fn act(p: &mut Proc, model: &mut CheckpointModel, line: &str, action: Action) {
    p.send(line);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = p.recv(left).unwrap();
        let msg = ProcessorMessage::decode(got.as_bytes()).unwrap();
        match &msg {
            ProcessorMessage::Status { response_for } => {
                assert_eq!(*response_for, action, "{}", p.stderr());
                return;
            }
            ProcessorMessage::Checkpoint { .. } => {
                let (reply, error) = model.answer(&msg);
                assert!(error.is_none(), "the daemon model rejected {got}");
                p.send(&reply);
            }
        }
    }
}

/// What one run showed (its peak RSS was checked and printed).
struct Outcome {
    stderr: String,
}

impl Outcome {
    /// Asserts that rsmld logged `text` (shows stderr if not).
    fn assert_logged(&self, text: &str) {
        assert!(self.stderr.contains(text), "{}", self.stderr);
    }

    /// Asserts that rsmld did not log `text` (shows stderr if it did).
    fn assert_not_logged(&self, text: &str) {
        assert!(!self.stderr.contains(text), "{}", self.stderr);
    }
}

/// Runs rsmld (discard handler, `extra` flags) over `lines` of `records` records in
/// total (numbered 1..=records), then `shutdownRequested`: every item must be done and
/// the checkpoint must cover the last record, and the peak RSS must stay under the bound.
fn run(name: &str, extra: &[&str], lines: &[String], records: u64) -> Outcome {
    let mut list = vec!["--handler", "discard", "--checkpoint-interval", "0"];
    list.extend(extra);
    let mut p = Proc::spawn(&common::args(&list));
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    act(&mut p, &mut model, &init_line(), Action::Initialize);
    for (i, line) in lines.iter().enumerate() {
        if i + 1 == lines.len() {
            model.deliver(esn(records));
        }
        act(&mut p, &mut model, line, Action::ProcessRecords);
    }
    act(
        &mut p,
        &mut model,
        SHUTDOWN_REQUESTED,
        Action::ShutdownRequested,
    );
    let peak = peak_rss(p.child.id());
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(30)).unwrap(),
        0,
        "{}",
        p.stderr()
    );
    let stderr = p.stderr();
    assert_eq!(
        model.stored.last(),
        Some(&esn(records)),
        "{name}: the checkpoint covers the last record; stderr:\n{stderr}"
    );
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    let bound = peak_rss_bound(longest);
    eprintln!(
        "{name}: peak RSS {} MiB (bound {} MiB, longest line {} MiB)",
        peak >> 20,
        bound >> 20,
        longest >> 20
    );
    assert!(
        peak < bound,
        "{name}: peak RSS {} MiB, bound {} MiB",
        peak >> 20,
        bound >> 20
    );
    Outcome { stderr }
}

fn esn(i: u64) -> Esn {
    Esn::new(SequenceNumber::parse(&seq(i)).unwrap(), 0)
}

fn b64(data: &[u8]) -> String {
    BASE64.encode(data)
}

#[test]
fn a_gzip_bomb_of_tiny_lines_is_delivered_whole() {
    // 31 KiB of gzip, 32 MiB inflated (under --max-inflated-bytes), 16 million lines.
    let bomb = b64(&gzip(&b"a\n".repeat(16 << 20)));
    let line = records_line(&[(1, "k", bomb.clone()), (2, "k", bomb)]);
    let out = run("lines gzip bomb", &["--split", "lines"], &[line], 2);
    out.assert_logged(&format!("record {}/0 of shardId-000000000007 cannot be split as Lines (it holds more than 100000 items (--max-items-per-record)); delivering it whole", seq(1)));
}

#[test]
fn lines_at_the_item_limit_are_processed_in_parts() {
    // Eight records of 100 000 lines each (32 MiB inflated each): 800 000 items and
    // 256 MiB of item data in one line, all processed.
    let text: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("{i:0>334}\n").into_bytes())
        .collect();
    let data = b64(&gzip(&text));
    let records: Vec<(u64, &str, String)> = (1..=8).map(|i| (i, "k", data.clone())).collect();
    let out = run(
        "8 x 100k lines",
        &["--split", "lines"],
        &[records_line(&records)],
        8,
    );
    out.assert_not_logged("cannot be split");
}

#[test]
fn a_huge_json_array_of_tiny_elements_is_delivered_whole() {
    let mut text = b"[1".to_vec();
    text.extend(b",1".repeat(16 << 20));
    text.push(b']');
    let line = records_line(&[(1, "k", b64(&gzip(&text)))]);
    let out = run("json array bomb", &["--split", "json-array"], &[line], 1);
    out.assert_logged("cannot be split as JsonArray (it holds more than 100000 items");
}

fn kpl_aggregate(n: usize, key: &str) -> Vec<u8> {
    let mut agg = Aggregator::new(64 << 20);
    for i in 0..n {
        assert!(agg.push(key, None, &[(i % 251) as u8]).is_none());
    }
    agg.finish().unwrap()
}

#[test]
fn aggregates_of_100k_tiny_user_records_are_processed() {
    // Ten aggregates of 100 000 one-byte user records each (under 1 MiB each): a million
    // items from one 9 MiB line.
    let agg = b64(&kpl_aggregate(100_000, "k"));
    assert!(agg.len() < 4 << 20);
    let records: Vec<(u64, &str, String)> = (1..=10).map(|i| (i, "a", agg.clone())).collect();
    let out = run(
        "10 x 100k KPL user records",
        &[],
        &[records_line(&records)],
        10,
    );
    out.assert_not_logged("cannot be split");
}

/// An aggregate of `n` one-byte user records under one key (under 2 MiB), written
/// directly (the encoder hashes the key once per user record: slow in a debug build).
fn raw_aggregate(n: usize, key: &str) -> Vec<u8> {
    assert!(key.len() < 1 << 21);
    let len = key.len();
    let mut body = vec![0x0a];
    // The key's length as a varint (at most three bytes here).
    let mut v = len;
    while v >= 0x80 {
        body.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    body.push(v as u8);
    body.extend_from_slice(key.as_bytes());
    for i in 0..n {
        body.extend_from_slice(&[0x1a, 5, 0x08, 0, 0x1a, 1, (i % 251) as u8]);
    }
    common::kpl_framed(&body)
}

#[test]
fn an_aggregate_over_the_item_limit_or_with_a_huge_shared_key_is_delivered_whole() {
    // 150 000 user records (about 1 MiB); 100 000 user records sharing one 64 KiB
    // partition key, which as items would copy the key 100 000 times (6 GiB); and one
    // 13 MiB aggregate of 2 million user records (never collected: only counted).
    let many = b64(&raw_aggregate(150_000, "k"));
    let big_key = b64(&raw_aggregate(100_000, &"k".repeat(64 << 10)));
    let huge = b64(&raw_aggregate(2_000_000, "k"));
    let line = records_line(&[(1, "a", many), (2, "a", big_key), (3, "a", huge)]);
    let out = run("KPL over the limits", &[], &[line], 3);
    out.assert_logged(&format!("record {}/0 of shardId-000000000007 cannot be split as Kpl (it holds more than 100000 items", seq(1)));
    out.assert_logged(&format!("record {}/0 of shardId-000000000007 cannot be split as Kpl (its items would hold more than", seq(2)));
    out.assert_logged(&format!("record {}/0 of shardId-000000000007 cannot be split as Kpl (it holds more than 100000 items", seq(3)));
}

#[test]
fn one_150_mib_record_is_processed() {
    // One record of 150 MiB base64 (113 MiB of 2 KiB lines): the line alone is 150 MiB.
    let mut text = Vec::with_capacity(114 << 20);
    let mut i = 0u64;
    while text.len() < (113 << 20) {
        text.extend(format!("{i:0>2047}\n").into_bytes());
        i += 1;
    }
    let data = b64(&text);
    drop(text);
    let line = records_line(&[(1, "k", data)]);
    assert!(line.len() > 150 << 20);
    run(
        "one 150 MiB record (kpl)",
        &[],
        std::slice::from_ref(&line),
        1,
    );
    let lines = run(
        "one 150 MiB record (lines)",
        &["--split", "lines"],
        &[line],
        1,
    );
    lines.assert_not_logged("cannot be split");
}

#[test]
fn cloudwatch_logs_with_very_many_events() {
    let payload = |events: usize| {
        let mut text = String::from(
            r#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/"#,
        );
        text.push_str(&"g".repeat(400));
        text.push_str(r#"","logStream":"2026/12/01/[$LATEST]0123456789abcdef","subscriptionFilters":["f"],"logEvents":["#);
        for i in 0..events {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!(r#"{{"id":"{i}","timestamp":1,"message":"m"}}"#));
        }
        text.push_str("]}");
        b64(&gzip(text.as_bytes()))
    };
    // 100 000 events whose items repeat a 500-byte header (50 MiB of items), and a
    // million events (over the item limit).
    let line = records_line(&[(1, "k", payload(100_000)), (2, "k", payload(1_000_000))]);
    let out = run(
        "cloudwatch logs",
        &["--split", "cloudwatch-logs"],
        &[line],
        2,
    );
    out.assert_not_logged(&format!(
        "record {}/0 of shardId-000000000007 cannot be split",
        seq(1)
    ));
    out.assert_logged(&format!("record {}/0 of shardId-000000000007 cannot be split as CloudwatchLogs (it holds more than 100000 items", seq(2)));
}

/// A daemon line that never ends (a hostile or broken daemon) is refused once
/// `--max-line-bytes` of it have arrived, instead of being read into memory to its end:
/// exit 3 (a protocol error), one error line naming the bound, and peak RSS far below the
/// 256 MiB streamed at it. Before the bound the reader grew its buffer until the newline: a
/// 1.5 GB line of garbage took 1.4 GiB.
#[test]
fn a_line_that_never_ends_is_refused_at_the_line_bound() {
    let mut p =
        Proc::spawn(&["--handler", "discard", "--max-line-bytes", "4MiB"].map(String::from));
    p.send(&init_line());
    p.recv(Duration::from_secs(30)).unwrap();
    let chunk = vec![b'A'; 1 << 20];
    let mut sent = 0usize;
    let pid = p.child.id();
    let mut peak = 0;
    if let Some(stdin) = p.stdin.as_mut() {
        // Up to 256 MiB, or until rsmld stops reading (its stdin closes).
        while sent < 256 << 20 && stdin.write_all(&chunk).is_ok() {
            sent += chunk.len();
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if status.contains("VmHWM") {
                    peak = peak_rss(pid);
                }
            }
        }
    }
    p.close_stdin();
    let code = p.wait(Duration::from_secs(60)).unwrap();
    let err = p.stderr();
    println!(
        "line bound: sent {} MiB, peak RSS {} MiB",
        sent >> 20,
        peak >> 20
    );
    assert_eq!(code, 3, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("daemon line 2 is longer than --max-line-bytes (4194304 bytes)"),
        "{err}"
    );
    assert!(
        sent < 256 << 20,
        "rsmld read all {sent} bytes of the endless line"
    );
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}
