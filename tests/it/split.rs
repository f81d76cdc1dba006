//! Record splitting through the session and the binary: the checkpoint waits for every
//! item of a record, whichever worker finishes last.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::time::{Duration, Instant};

use common::{batch, run_action, shutdown_requested, CheckpointModel, Proc};
use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage, Record};
use rsmld::kpl::Aggregator;
use rsmld::pipeline::item::{Item, ItemBlock, BASE64};
use rsmld::pipeline::mapper::Mapper;
use rsmld::pipeline::partition::partition;
use rsmld::pipeline::split::{SplitMode, Splitter};
use rsmld::protocol::budget::PartBudget;
use rsmld::protocol::sequence::SequenceNumber;
use rsmld::protocol::session::{Next, Output, Session, SessionConfig, SessionError};
use rsmld::protocol::tracker::RecordId;

use base64::Engine;

/// The `initialize` the binary tests send: shard 0 at TRIM_HORIZON.
const INIT: &str = r#"{"action":"initialize","shardId":"shardId-000000000000","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}"#;

/// Starts rsmld with `args` (and `env`) and initializes it with [`INIT`]; the model is
/// not told where the shard starts, so it bounds checkpoints from above only.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Proc, CheckpointModel) {
    let mut p = Proc::spawn_env(&common::args(args), env);
    let mut model = CheckpointModel::default();
    run_action(&mut p, &mut model, INIT, Action::Initialize).unwrap();
    (p, model)
}

const S1: &str = "49680445498841953494698307936256227907416662446197178370";
const S2: &str = "49680445498841953494698307936257436833236277075371884546";

fn aggregate(keys: &[&str]) -> Vec<u8> {
    let mut agg = Aggregator::new(1 << 20);
    for (i, k) in keys.iter().enumerate() {
        assert!(agg.push(k, None, format!("user-{i}").as_bytes()).is_none());
    }
    agg.finish().unwrap()
}

fn record(seq: &str, key: &str, data: &[u8]) -> Record {
    Record {
        data: Some(BASE64.encode(data).into()),
        partition_key: key.into(),
        sequence_number: SequenceNumber::parse(seq).unwrap(),
        sub_sequence_number: Some(0),
        approximate_arrival_timestamp: Some(1),
    }
}

/// Three keys that land on three different workers out of three.
fn keys_on_distinct_workers() -> [String; 3] {
    let mut found: [Option<String>; 3] = [None, None, None];
    for i in 0.. {
        let k = format!("user-{i}");
        let w = partition(k.as_bytes(), 3);
        if found[w].is_none() {
            found[w] = Some(k);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.map(Option::unwrap)
}

/// The pure session with a lease's mapper in front of it ([`rsmld::lease::feed`]; one
/// worker, so the dispatched items stay in record order): what it dispatches waits for
/// [`drain`].
struct Core {
    session: Session,
    splitter: Splitter,
    dispatched: Vec<(Option<usize>, ItemBlock)>,
}

impl Core {
    fn new(config: SessionConfig, splitter: Splitter, now: Instant) -> Self {
        Core {
            session: Session::new(config, now),
            splitter,
            dispatched: Vec::new(),
        }
    }

    fn handle_message(&mut self, msg: DaemonMessage, now: Instant) -> Result<(), SessionError> {
        self.handle_line(msg, 0, now)
    }

    /// A message whose payloads pin `line_bytes` of their line.
    fn handle_line(
        &mut self,
        msg: DaemonMessage,
        line_bytes: usize,
        now: Instant,
    ) -> Result<(), SessionError> {
        let shard = self.session.shard_id().to_owned();
        let budget = PartBudget {
            items: usize::MAX,
            bytes: usize::MAX,
        };
        let mapper = Mapper::new(&self.splitter, &shard, 1, budget);
        let blocks = rsmld::lease::feed(&mut self.session, &mapper, msg, line_bytes, now)?;
        self.dispatched.extend(blocks);
        Ok(())
    }
}

impl std::ops::Deref for Core {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl std::ops::DerefMut for Core {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// The dispatched items (merged into one block, in order) and the messages sent.
fn drain(core: &mut Core) -> (ItemBlock, Vec<ProcessorMessage>) {
    let (mut items, mut sent) = (ItemBlock::default(), Vec::new());
    for item in core.dispatched.iter().flat_map(|(_, b)| b.iter()) {
        items.push(&item);
    }
    core.dispatched.clear();
    while let Some(out) = core.poll_output() {
        match out {
            Output::Send(m) => sent.push(m),
            Output::Abandon => panic!("abandon"),
            Output::Event(_) | Output::Flush => {}
        }
    }
    (items, sent)
}

fn empty_batch() -> DaemonMessage {
    DaemonMessage::ProcessRecords {
        records: vec![],
        millis_behind_latest: Some(0),
    }
}

#[test]
fn checkpoint_waits_for_the_last_item_of_a_record() {
    let now = Instant::now();
    let config = SessionConfig {
        checkpoint_interval: Duration::ZERO,
        ..SessionConfig::default()
    };
    let mut s = Core::new(config, Splitter::new(SplitMode::Kpl), now);
    s.handle_message(
        DaemonMessage::Initialize {
            shard_id: "shardId-0".into(),
            sequence_number: Some(SequenceNumber::parse("TRIM_HORIZON").unwrap()),
            sub_sequence_number: Some(0),
        },
        now,
    )
    .unwrap();
    drain(&mut s);

    let keys = keys_on_distinct_workers();
    let agg = aggregate(&[&keys[0], &keys[1], &keys[2]]);
    s.handle_message(
        DaemonMessage::ProcessRecords {
            records: vec![record(S1, "a", &agg), record(S2, "plain", b"p")],
            millis_behind_latest: Some(0),
        },
        now,
    )
    .unwrap();
    let (block, sent) = drain(&mut s);
    let items: Vec<Item> = block.iter().collect();
    // 3 user records + 1 plain record; nothing complete yet, so no checkpoint, just status.
    assert_eq!(items.len(), 4);
    assert_eq!(
        sent,
        vec![ProcessorMessage::Status {
            response_for: Action::ProcessRecords
        }]
    );
    let workers: std::collections::HashSet<_> = items[..3]
        .iter()
        .map(|i| partition(i.partition_key.as_bytes(), 3))
        .collect();
    assert_eq!(
        workers.len(),
        3,
        "the aggregate's items go to three different workers"
    );
    for (i, item) in items[..3].iter().enumerate() {
        assert_eq!(
            (item.user_sub, item.user_total, item.record),
            (i as u32, 3, RecordId(0))
        );
    }
    assert_eq!((items[3].user_total, items[3].record), (1, RecordId(1)));

    // Worker 2 and the plain record's worker finish first, then worker 0.
    s.handle_completed(&[items[2].record, items[3].record, items[0].record], now)
        .unwrap();
    s.handle_message(empty_batch(), now).unwrap();
    let (_, sent) = drain(&mut s);
    assert_eq!(
        sent,
        vec![ProcessorMessage::Status {
            response_for: Action::ProcessRecords
        }],
        "checkpoint before the aggregate's last item finished"
    );
    assert_eq!(s.tracker().position(), None);

    // The last item (worker 1) finishes: now both records are done.
    s.handle_completed(&[items[1].record], now).unwrap();
    s.handle_message(empty_batch(), now).unwrap();
    let (_, sent) = drain(&mut s);
    assert_eq!(
        sent,
        vec![ProcessorMessage::Checkpoint {
            sequence_number: Some(SequenceNumber::parse(S2).unwrap()),
            sub_sequence_number: Some(0)
        }]
    );
    assert_eq!(s.next(), Next::Message);
}

/// An aggregate delivered whole (as a KCL 1.x daemon would) is split into items with
/// their own partition keys and userSub/userTotal, and the checkpoint covers the record.
#[test]
fn binary_splits_aggregates_into_items() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut p, mut model) = start(
        &[
            "--handler",
            "file",
            "--output",
            out.to_str().unwrap(),
            "--workers",
            "3",
            "--split",
            "kpl",
            "--max-in-flight",
            "0",
            "--checkpoint-interval",
            "0",
        ],
        &[],
    );
    let keys = keys_on_distinct_workers();
    let records = vec![
        record(
            S1,
            "a",
            &aggregate(&[&keys[0], &keys[1], &keys[2], &keys[0]]),
        ),
        record(S2, "plain", b"p"),
    ];
    let line = batch(&mut model, records);
    let reqs = run_action(&mut p, &mut model, &line, Action::ProcessRecords).unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(model.last.as_ref().unwrap().seq.as_str(), S2);
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);

    let mut items: Vec<serde_json::Value> = Vec::new();
    for f in std::fs::read_dir(&out).unwrap() {
        for l in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            items.push(serde_json::from_str(l).unwrap());
        }
    }
    items.sort_by_key(|v| {
        (
            v["sequenceNumber"].as_str().unwrap().to_owned(),
            v["userSub"].as_u64().unwrap(),
        )
    });
    let got: Vec<(String, u64, u64, String)> = items
        .iter()
        .map(|v| {
            let data = BASE64.decode(v["data"].as_str().unwrap()).unwrap();
            (
                v["partitionKey"].as_str().unwrap().to_owned(),
                v["userSub"].as_u64().unwrap(),
                v["userTotal"].as_u64().unwrap(),
                String::from_utf8(data).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (keys[0].clone(), 0, 4, "user-0".into()),
            (keys[1].clone(), 1, 4, "user-1".into()),
            (keys[2].clone(), 2, 4, "user-2".into()),
            (keys[0].clone(), 3, 4, "user-3".into()),
            ("plain".into(), 0, 1, "p".into()),
        ]
    );
}

/// Payloads point into their daemon line, so unfinished items keep whole lines alive:
/// processRecords waits (no status) while earlier lines pinned by unfinished items exceed
/// max_in_flight_bytes, and answers once they are done.
#[test]
fn pinned_line_bytes_hold_the_status() {
    let now = Instant::now();
    let config = SessionConfig {
        checkpoint_interval: Duration::from_secs(3600),
        max_in_flight_bytes: 8 << 20,
        ..SessionConfig::default()
    };
    let splitter = Splitter::new(SplitMode::None);
    let mut s = Core::new(config, splitter, now);
    s.handle_message(
        DaemonMessage::Initialize {
            shard_id: "shardId-0".into(),
            sequence_number: None,
            sub_sequence_number: None,
        },
        now,
    )
    .unwrap();
    drain(&mut s);
    let batch = |seq: &str| DaemonMessage::ProcessRecords {
        records: vec![record(seq, "k", b"x")],
        millis_behind_latest: None,
    };
    // A 14 MiB line: its own bytes never hold its own status.
    s.handle_line(batch(S1), 14 << 20, now).unwrap();
    let (first, sent) = drain(&mut s);
    let first: Vec<Item> = first.iter().collect();
    assert_eq!(
        sent,
        vec![ProcessorMessage::Status {
            response_for: Action::ProcessRecords
        }]
    );
    // The next line: the first one is still pinned by its unfinished item (14 MiB > 8 MiB).
    s.handle_line(batch(S2), 14 << 20, now).unwrap();
    let (_, sent) = drain(&mut s);
    assert!(
        sent.is_empty(),
        "acknowledged while 14 MiB of an earlier line were pinned: {sent:?}"
    );
    assert_eq!(s.next(), Next::Work);
    s.handle_completed(&[first[0].record], now).unwrap();
    let (_, sent) = drain(&mut s);
    assert_eq!(
        sent,
        vec![ProcessorMessage::Status {
            response_for: Action::ProcessRecords
        }]
    );
}

/// An aggregate of `n` user records whose record `bad_at` points past its one-key table.
fn broken_aggregate(n: usize, bad_at: usize) -> Vec<u8> {
    use prost::Message;
    use rsmld::kpl::proto;
    let records = (0..n)
        .map(|i| proto::Record {
            partition_key_index: if i == bad_at { 9 } else { 0 },
            explicit_hash_key_index: None,
            data: format!("user-{i}").into_bytes(),
            tags: vec![],
        })
        .collect();
    let body = proto::AggregatedRecord {
        partition_key_table: vec!["k".into()],
        explicit_hash_key_table: vec![],
        records,
    }
    .encode_to_vec();
    common::kpl_framed(&body)
}

/// A KPL aggregate that breaks off part-way loses its remaining user records, exactly
/// as the Java KCL does; rsmld says so once, at WARN, with the record's sequence number
/// and how many were lost, and checkpoints past the record (the Java result).
#[test]
fn binary_warns_once_about_a_broken_aggregate() {
    let (mut p, mut model) = start(&["--handler", "discard", "--checkpoint-interval", "0"], &[]);
    let records = vec![
        record(S1, "a", &broken_aggregate(10, 4)),
        record(S2, "plain", b"p"),
    ];
    let line = batch(&mut model, records);
    run_action(&mut p, &mut model, &line, Action::ProcessRecords).unwrap();
    shutdown_requested(&mut p, &mut model).unwrap();
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 0);
    assert_eq!(model.last.as_ref().unwrap().seq.as_str(), S2);
    let stderr = p.stderr();
    let warn = format!(
        "WARN record {S1}/0 of shardId-000000000000: KPL aggregate broke off (KPL sub-record 4: partition key index 9 is out of range (the table has 1 keys); it and the following sub-records are lost); 6 user records lost, 4 delivered, as the Java KCL does"
    );
    assert_eq!(stderr.matches(&warn).count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("KPL aggregate broke off").count(),
        1,
        "{stderr}"
    );
    // The 4 kept user records and the plain record were processed.
    assert!(
        stderr.contains("2 records, 5 items dispatched, 5 completed"),
        "{stderr}"
    );
}

/// A line whose items exceed one part (here 300 aggregates of 100 user records: 30 000
/// items, over the 10 000 / `--max-in-flight` budget of a part) is split and delivered in
/// parts: every user record is written exactly once, the checkpoint covers the last
/// record, and a broken aggregate before or after the first part's end warns once. Both
/// with the line acknowledged before decoding and in synchronous mode (status only after
/// the last part is done).
#[test]
fn binary_delivers_a_heavy_line_in_parts() {
    for max_in_flight in ["20000", "0"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (mut p, mut model) = start(
            &[
                "--handler",
                "file",
                "--output",
                out.to_str().unwrap(),
                "--workers",
                "2",
                "--max-in-flight",
                max_in_flight,
                "--checkpoint-interval",
                "0",
            ],
            &[("RUST_LOG", "debug")],
        );
        let keys: Vec<String> = (0..100).map(|i| format!("key-{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let agg = aggregate(&keys);
        let broken = broken_aggregate(10, 4);
        let seqs: Vec<String> = (0..300u64)
            .map(|i| format!("49680445498841953494698307936{:027}", 1000 + i))
            .collect();
        let records: Vec<Record> = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| record(s, "a", if i == 5 || i == 250 { &broken } else { &agg }))
            .collect();
        let line = batch(&mut model, records);
        assert!(line.len() > 64 << 10);
        run_action(&mut p, &mut model, &line, Action::ProcessRecords).unwrap();
        shutdown_requested(&mut p, &mut model).unwrap();
        p.close_stdin();
        assert_eq!(p.wait(Duration::from_secs(30)).unwrap(), 0);
        assert_eq!(model.last.as_ref().unwrap().seq.as_str(), seqs[299]);
        let stderr = p.stderr();
        for i in [5, 250] {
            let warn = format!(
                "record {}/0 of shardId-000000000000: KPL aggregate broke off",
                seqs[i]
            );
            assert_eq!(
                stderr.matches(&warn).count(),
                1,
                "{max_in_flight}: {stderr}"
            );
        }
        assert_eq!(
            stderr.matches("KPL aggregate broke off").count(),
            2,
            "{stderr}"
        );
        let parts = stderr.matches("as one part; the rest follows").count();
        assert!(parts >= 1, "{max_in_flight}: delivered in one part");
        let mut got: Vec<(String, u64, u64)> = Vec::new();
        for f in std::fs::read_dir(&out).unwrap() {
            for l in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                got.push((
                    v["sequenceNumber"].as_str().unwrap().to_owned(),
                    v["userSub"].as_u64().unwrap(),
                    v["userTotal"].as_u64().unwrap(),
                ));
            }
        }
        got.sort();
        let mut expected: Vec<(String, u64, u64)> = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            let total = if i == 5 || i == 250 { 4 } else { 100 };
            expected.extend((0..total).map(|sub| (s.clone(), sub, total)));
        }
        assert_eq!(got.len(), expected.len(), "{max_in_flight}");
        assert!(got == expected, "{max_in_flight}: items differ");
    }
}

/// While a line waits for the items in flight before splitting its next part, stdin is
/// still watched: EOF ends the session at once (here the remaining parts would take
/// minutes with a 10 ms-per-item handler), and nothing is checkpointed.
#[test]
fn binary_notices_eof_while_a_line_waits_between_parts() {
    let (mut p, _) = start(
        &[
            "--handler",
            "discard",
            "--debug-delay-ms",
            "20",
            "--workers",
            "1",
            "--max-in-flight",
            "100",
        ],
        &[],
    );
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let agg = aggregate(&keys);
    let records: Vec<Record> = (0..40u64)
        .map(|i| {
            let s = format!("49680445498841953494698307936{:027}", 1000 + i);
            record(&s, "a", &agg)
        })
        .collect();
    let line = serde_json::to_string(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: None,
    })
    .unwrap();
    p.send(&line);
    std::thread::sleep(Duration::from_millis(500));
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(20)).unwrap(),
        0,
        "{}",
        p.stderr()
    );
    let stderr = p.stderr();
    // The first part (10 of the 40 records, 10 000 items) was delivered; the rest waited.
    assert!(
        stderr.contains("exiting without a further checkpoint (10000 items in flight)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("exiting: 10 records, 10000 items dispatched"),
        "{stderr}"
    );
    assert!(!stderr.contains("checkpointed"), "{stderr}");
    assert!(
        p.recv(Duration::from_millis(100)).is_err(),
        "no status, no checkpoint"
    );
}
