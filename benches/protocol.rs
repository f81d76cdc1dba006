//! Protocol micro-benchmarks: decoding daemon lines and encoding processor messages.
//!
//! `cargo bench --bench protocol` (criterion; throughput in bytes of daemon line per
//! second for decoding, messages per second for encoding). The lines are built with the
//! library's own daemon-side encoder, so they have the Java daemon's shape (nulls included,
//! `"action":"record"` inside every record, 56-digit sequence numbers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark set-up: a panic is how a bench fails"
)]

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage, Record};
use rsmld::codec::scan::{scan_process_records, scan_resumed, Prescan};
use rsmld::protocol::sequence::{Esn, SequenceNumber};

const HEAD: &str = "496804454988419534946983079362562279";

/// A processRecords line of `n` records with `size` random bytes each; with `per_agg` > 1,
/// de-aggregated KPL user records sharing a sequence number.
fn records_line(n: usize, size: usize, per_agg: usize) -> Vec<u8> {
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut counter = 10_000_000_000u64;
    let records = (0..n)
        .map(|j| {
            let sub = (j % per_agg) as i64;
            if sub == 0 {
                counter += 1 + next() % 4096;
            }
            let payload: Vec<u8> = (0..size).map(|_| next() as u8).collect();
            Record {
                data: Some(b64.encode(&payload).into()),
                partition_key: format!("pk-{:016x}", next()),
                sequence_number: SequenceNumber::parse(&format!("{HEAD}{counter:020}")).unwrap(),
                sub_sequence_number: Some(sub),
                approximate_arrival_timestamp: Some(1_795_310_498_058),
            }
        })
        .collect();
    rsmld::json::to_ascii_vec(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: Some(0),
    })
    .unwrap()
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, line) in [
        ("processRecords 1000 x 1 KiB", records_line(1000, 1024, 1)),
        (
            "processRecords 10000 x 100 B KPL user records",
            records_line(10_000, 100, 100),
        ),
    ] {
        g.throughput(Throughput::Bytes(line.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| DaemonMessage::decode(black_box(&line)).unwrap())
        });
        // What the driver does instead, on one thread here: the structural scan (which
        // parses records of the daemon's shape as it finds them), then each record's text.
        g.bench_function(format!("{name}: scan + parse (fast path)"), |b| {
            b.iter(|| {
                let layout = scan_process_records(black_box(&line)).unwrap();
                for k in 0..layout.records.len() {
                    black_box(layout.record(&line, k).unwrap());
                }
            })
        });
        // The stdin reader's share: the scan as 64 KiB pieces arrive, then its end.
        g.bench_function(format!("{name}: prescan in 64 KiB pieces"), |b| {
            b.iter(|| {
                let mut prescan = Prescan::default();
                let mut at = 0;
                while at < line.len() {
                    at = (at + 64 * 1024).min(line.len());
                    prescan.advance(black_box(&line[..at]));
                }
                black_box(scan_resumed(&line, prescan).unwrap());
            })
        });
    }
    let reply = br#"{"action":"checkpoint","sequenceNumber":"49680445498841953494698307936256227907416662446197178370","subSequenceNumber":7,"error":null}"#;
    g.throughput(Throughput::Elements(1));
    g.bench_function("checkpoint reply", |b| {
        b.iter(|| DaemonMessage::decode(black_box(reply)).unwrap())
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    let status = ProcessorMessage::Status {
        response_for: Action::ProcessRecords,
    };
    g.bench_function("status", |b| b.iter(|| black_box(&status).encode()));
    let esn = Esn::new(
        SequenceNumber::parse("49680445498841953494698307936256227907416662446197178370").unwrap(),
        7,
    );
    let checkpoint = ProcessorMessage::checkpoint_at(&esn);
    g.bench_function("checkpoint at ESN", |b| {
        b.iter(|| black_box(&checkpoint).encode())
    });
    // What the driver does per message: serialize into a reused buffer plus the newline.
    let mut buf = Vec::with_capacity(256);
    g.bench_function("checkpoint at ESN, reused buffer", |b| {
        b.iter(|| {
            buf.clear();
            rsmld::json::write_ascii(&mut buf, black_box(&checkpoint)).unwrap();
            buf.push(b'\n');
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
