//! The durable file archive (`--handler file`): rotation by size and age, names that sort
//! in creation order and tell shard and worker, workers that never share a file, IO errors
//! that fail the batch; through the binary: SIGKILL at random moments never loses a
//! checkpointed record, every checkpoint follows the fdatasync of the data it covers
//! (checked on the syscall trace), and a failing write (RLIMIT_FSIZE) is a worker failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{item_with, line, record_with_text, run_action, seq, CheckpointModel, Proc};
use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage, Record};
use rsmld::handler::file::{ArchiveName, FileFactory, FileOptions};
use rsmld::handler::{BatchError, Handler, HandlerFactory, WorkerContext};
use rsmld::pipeline::item::Item;
use rsmld::protocol::sequence::SequenceNumber;
use rsmld::telemetry::LeaseId;

const SHARD: &str = "shardId-000000000007";
/// The record index encoded in a sequence number made by [`seq`].
fn index_of(seq: &str) -> u64 {
    seq[seq.len() - 27..].parse().unwrap()
}

fn line_len(item: &Item) -> u64 {
    let mut v = Vec::new();
    item.write_json(SHARD, &mut v).unwrap();
    v.len() as u64 + 1
}

fn handler(factory: &FileFactory, worker: usize) -> Box<dyn Handler> {
    factory
        .create(&WorkerContext::new(worker, 4).for_lease(lease()))
        .unwrap()
}

/// One archive file, read back.
#[derive(Debug)]
struct ArchiveFile {
    name: String,
    len: u64,
    /// Complete lines, parsed (a complete line that does not parse fails the read).
    lines: Vec<serde_json::Value>,
    /// Bytes after the last newline: a torn final line.
    torn: Option<String>,
}

/// Every file of `dir`, sorted by name; panics on anything but flat `*.jsonl` files.
fn archive(dir: &Path) -> Vec<ArchiveFile> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        assert!(entry.file_type().unwrap().is_file(), "{entry:?} is no file");
        let name = entry.file_name().into_string().unwrap();
        assert!(name.ends_with(".jsonl"), "{name}");
        let bytes = std::fs::read(entry.path()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let (complete, torn) = match text.rfind('\n') {
            Some(i) if i + 1 == text.len() => (&text[..], None),
            Some(i) => (&text[..=i], Some(text[i + 1..].to_owned())),
            None if text.is_empty() => ("", None),
            None => ("", Some(text.clone())),
        };
        let lines = complete
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: bad line {l:?}: {e}"))
            })
            .collect();
        out.push(ArchiveFile {
            name,
            len: bytes.len() as u64,
            lines,
            torn,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The record indexes of a file's lines, in file order.
fn indexes(f: &ArchiveFile) -> Vec<u64> {
    f.lines
        .iter()
        .map(|v| index_of(v["sequenceNumber"].as_str().unwrap()))
        .collect()
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

// ---------------------------------------------------------------- through the handler

/// Batches of 1..=6 items under a 3000-byte limit: several files, each at most 3000
/// bytes, rotated only when the next batch would not fit; every batch whole in one file;
/// every item exactly once and in order when the files are read in name order; each new
/// file's name sorts after every earlier one.
#[test]
fn size_rotation_keeps_batches_whole_and_names_in_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 3000;
    let factory = FileFactory::new(FileOptions {
        rotate_bytes: limit,
        ..FileOptions::new(dir.path())
    });
    let mut h = handler(&factory, 1);
    let mut rng = Rng(0x5eed);
    let mut n = 0u64;
    // Each batch: its record indexes and its size in bytes.
    let mut batches: Vec<(Vec<u64>, u64)> = Vec::new();
    let mut seen = BTreeSet::new();
    while n < 300 {
        let batch: Vec<Item> = (0..1 + rng.below(6))
            .map(|_| {
                n += 1;
                item_with(n, "k", 20 + rng.below(60) as usize)
            })
            .collect();
        let bytes: u64 = batch.iter().map(line_len).sum();
        assert!(bytes <= limit, "the test wants batches that fit in a file");
        h.process(&lease(), &batch).unwrap();
        batches.push((batch.iter().map(|i| i.record.0).collect(), bytes));
        let now = names(dir.path());
        for new in now.difference(&seen) {
            assert!(
                seen.iter().all(|old| old < new),
                "{new} sorts before an older file: {seen:?}"
            );
        }
        seen = now;
    }
    h.close().unwrap();

    let files = archive(dir.path());
    assert!(files.len() >= 5, "only {} files", files.len());
    let all: Vec<u64> = files.iter().flat_map(indexes).collect();
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "items lost, repeated or reordered"
    );
    let file_of: HashMap<u64, usize> = files
        .iter()
        .enumerate()
        .flat_map(|(f, file)| indexes(file).into_iter().map(move |i| (i, f)))
        .collect();
    for (b, _) in &batches {
        let in_files: HashSet<usize> = b.iter().map(|i| file_of[i]).collect();
        assert_eq!(in_files.len(), 1, "batch {b:?} split over files");
    }
    for (f, file) in files.iter().enumerate() {
        assert!(file.torn.is_none(), "{}: torn line", file.name);
        assert!(file.len <= limit, "{} has {} bytes", file.name, file.len);
        if let Some(next) = files.get(f + 1) {
            // Rotated only because the next batch would not fit.
            let first = indexes(next)[0];
            let (_, bytes) = batches.iter().find(|(b, _)| b[0] == first).unwrap();
            assert!(
                file.len + bytes > limit,
                "{} rotated with room for {bytes} more bytes",
                file.name
            );
        }
    }
}

/// A batch larger than the limit is split at line boundaries over files that each stay
/// within the limit; a line longer than the limit gets a file of its own.
#[test]
fn a_batch_larger_than_the_limit_is_split_at_line_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 1000;
    let factory = FileFactory::new(FileOptions {
        rotate_bytes: limit,
        ..FileOptions::new(dir.path())
    });
    let mut h = handler(&factory, 0);
    let mut batch: Vec<Item> = (1..=20).map(|i| item_with(i, "k", 40)).collect();
    batch.insert(10, item_with(100, "k", 3000));
    let one = line_len(&batch[0]);
    assert!(3 * one <= limit && 4 * one > limit);
    h.process(&lease(), &batch).unwrap();
    h.close().unwrap();

    let files = archive(dir.path());
    let all: Vec<u64> = files.iter().flat_map(indexes).collect();
    let expected: Vec<u64> = batch.iter().map(|i| i.record.0).collect();
    assert_eq!(all, expected);
    for f in &files {
        assert!(f.torn.is_none());
        let idx = indexes(f);
        if idx.contains(&100) {
            assert_eq!(idx, vec![100], "the long line shares {}", f.name);
        } else {
            assert!(f.len <= limit, "{} has {} bytes", f.name, f.len);
        }
    }
    // 10 short lines: 3+3+3+1, the long one, 10 short lines: 3+3+3+1.
    assert_eq!(files.len(), 9, "{files:#?}");
}

/// With rotate_after 500 ms: flush() on a young file does nothing, flush() on an old one
/// closes it without opening another; the next batch opens a new file; a batch after the
/// age limit (no flush in between) rotates too. rotate_after zero never rotates.
#[test]
fn age_rotation_at_flush_and_at_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let age = Duration::from_millis(500);
    let factory = FileFactory::new(FileOptions {
        rotate_after: age,
        ..FileOptions::new(dir.path())
    });
    let mut h = handler(&factory, 0);
    h.flush().unwrap();
    assert!(names(dir.path()).is_empty(), "a file before the first item");

    h.process(&lease(), &[item_with(1, "k", 10)]).unwrap();
    h.flush().unwrap();
    h.process(&lease(), &[item_with(2, "k", 10)]).unwrap();
    assert_eq!(names(dir.path()).len(), 1);
    std::thread::sleep(age + Duration::from_millis(100));
    h.flush().unwrap();
    assert_eq!(names(dir.path()).len(), 1, "flush opened a file");
    h.process(&lease(), &[item_with(3, "k", 10)]).unwrap();
    assert_eq!(
        names(dir.path()).len(),
        2,
        "no new file after an age rotation"
    );
    std::thread::sleep(age + Duration::from_millis(100));
    h.process(&lease(), &[item_with(4, "k", 10)]).unwrap();
    h.close().unwrap();
    let files = archive(dir.path());
    let per_file: Vec<Vec<u64>> = files.iter().map(indexes).collect();
    assert_eq!(per_file, vec![vec![1, 2], vec![3], vec![4]]);

    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(&FileFactory::new(FileOptions::new(dir.path())), 0);
    h.process(&lease(), &[item_with(1, "k", 10)]).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    h.flush().unwrap();
    h.process(&lease(), &[item_with(2, "k", 10)]).unwrap();
    h.close().unwrap();
    assert_eq!(names(dir.path()).len(), 1);
}

/// Four workers: files sit flat in DIR, end in .jsonl, start with the shard id, carry
/// `.w<k>.`, and each holds only its worker's items. A worker without items creates no
/// file.
#[test]
fn names_tell_shard_and_worker_and_sit_flat_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a/b/out");
    let factory = FileFactory::new(FileOptions {
        rotate_bytes: 600,
        ..FileOptions::new(&out)
    });
    let mut hs: Vec<Box<dyn Handler>> = (0..4).map(|w| handler(&factory, w)).collect();
    assert!(out.is_dir() && names(&out).is_empty());
    let mut n = 0;
    for round in 0..10 {
        for (w, h) in hs.iter_mut().enumerate().take(3) {
            n += 1;
            h.process(&lease(), &[item_with(n, &format!("w{w}"), 10 + round * 20)])
                .unwrap();
        }
    }
    for h in &mut hs {
        h.close().unwrap();
    }
    let files = archive(&out);
    assert!(files.len() > 3, "no rotation: {files:#?}");
    let mut workers = BTreeSet::new();
    for f in &files {
        let parsed = ArchiveName::parse(&f.name).unwrap();
        assert!(f.name.starts_with(&format!("{SHARD}.")), "{}", f.name);
        assert!(
            f.name.contains(&format!(".w{}.", parsed.worker)),
            "{}",
            f.name
        );
        assert_eq!(parsed.shard_id, SHARD);
        for v in &f.lines {
            assert_eq!(v["shardId"], SHARD);
            assert_eq!(
                v["partitionKey"],
                format!("w{}", parsed.worker),
                "{}",
                f.name
            );
        }
        workers.insert(parsed.worker);
    }
    assert_eq!(workers, BTreeSet::from([0, 1, 2]), "worker 3 had no item");
}

/// Two workers of one process, and the same worker index in a second process writing the
/// same directory at the same time: never one file for two handlers, nothing lost.
#[test]
fn handlers_never_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        rotate_bytes: 700,
        ..FileOptions::new(dir.path())
    };
    let first = FileFactory::new(options.clone());
    let second = FileFactory::new(options);
    let mut hs = [handler(&first, 0), handler(&first, 1), handler(&second, 0)];
    let mut n = 0;
    for _ in 0..60 {
        for (k, h) in hs.iter_mut().enumerate() {
            n += 1;
            h.process(&lease(), &[item_with(n, &format!("h{k}"), 30)])
                .unwrap();
        }
    }
    for h in &mut hs {
        h.close().unwrap();
    }
    let files = archive(dir.path());
    assert!(files.len() >= 6, "{} files", files.len());
    let mut total = 0;
    for f in &files {
        let keys: BTreeSet<&str> = f
            .lines
            .iter()
            .map(|v| v["partitionKey"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), 1, "{} shared by {keys:?}", f.name);
        total += f.lines.len();
    }
    assert_eq!(total, n as usize);
}

/// A restarted process (or one whose clock stepped back) names its files after the ones
/// already in DIR for its shard — including a name from the year 2999.
#[test]
fn a_restart_names_files_after_existing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let future = ArchiveName {
        shard_id: SHARD.into(),
        unix_ms: 32_472_144_000_000, // 2999-01-01
        seq: 9999,
        worker: 3,
    }
    .file_name();
    std::fs::write(dir.path().join(&future), "").unwrap();
    let factory = FileFactory::new(FileOptions {
        rotate_bytes: 300,
        ..FileOptions::new(dir.path())
    });
    let mut h = handler(&factory, 0);
    for i in 1..=5 {
        h.process(&lease(), &[item_with(i, "k", 100)]).unwrap();
    }
    h.close().unwrap();
    let files = archive(dir.path());
    assert_eq!(files.len(), 6);
    assert_eq!(files[0].name, future);
    let all: Vec<u64> = files.iter().flat_map(indexes).collect();
    assert_eq!(
        all,
        vec![1, 2, 3, 4, 5],
        "new files do not sort after {future}"
    );
}

/// An IO error fails the whole batch with a message naming the file or directory; once
/// the cause is gone the next batch starts a new file.
#[test]
fn io_errors_fail_the_batch_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let factory = FileFactory::new(FileOptions::new(&out));
    let mut h = handler(&factory, 2);
    std::fs::remove_dir(&out).unwrap();
    match h.process(&lease(), &[item_with(1, "k", 10)]) {
        Err(BatchError::Batch(e)) => {
            assert!(e.message.contains(out.to_str().unwrap()), "{e}");
            assert!(e.message.contains(".w2.jsonl"), "{e}");
        }
        other => panic!("expected a batch error, got {other:?}"),
    }
    std::fs::create_dir(&out).unwrap();
    h.process(&lease(), &[item_with(2, "k", 10)]).unwrap();
    h.close().unwrap();
    let files = archive(&out);
    assert_eq!(files.len(), 1);
    assert_eq!(indexes(&files[0]), vec![2]);
}

// ---------------------------------------------------------------- through the binary

fn record(i: u64, key: &str, payload: usize) -> Record {
    record_with_text(i, key, &format!("payload-{i}-{}", "p".repeat(payload)))
}

fn init_line(at: Option<u64>) -> String {
    let s = at.map_or_else(|| "TRIM_HORIZON".to_owned(), seq);
    line(&DaemonMessage::Initialize {
        shard_id: SHARD.into(),
        sequence_number: Some(SequenceNumber::parse(&s).unwrap()),
        sub_sequence_number: Some(0),
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The record index a checkpoint request names (None for a null checkpoint).
fn checkpoint_index(msg: &ProcessorMessage) -> Option<u64> {
    match msg {
        ProcessorMessage::Checkpoint {
            sequence_number: Some(s),
            ..
        } => Some(index_of(s.as_str())),
        _ => None,
    }
}

/// What one SIGKILL run saw.
#[derive(Default)]
struct KillRun {
    delivered: u64,
    answered: Option<u64>,
    requested: Option<u64>,
    checkpoints: usize,
}

/// Feeds batches to a running rsmld under the daemon model and SIGKILLs it a random few
/// milliseconds after sending batch `kill_at` (or the first batch after a checkpoint),
/// without waiting for that batch's status.
fn feed_and_kill(p: &mut Proc, rng: &mut Rng, kill_at: usize) -> KillRun {
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(p, &mut model, &init_line(None), Action::Initialize).unwrap();
    let mut run = KillRun::default();
    for batch in 0.. {
        let records: Vec<Record> = (0..20 + rng.below(40))
            .map(|_| {
                run.delivered += 1;
                let i = run.delivered;
                record(
                    i,
                    &format!("key-{}", rng.below(13)),
                    rng.below(200) as usize,
                )
            })
            .collect();
        model.deliver_all(&records);
        p.send(&line(&DaemonMessage::ProcessRecords {
            records,
            millis_behind_latest: Some(0),
        }));
        if batch >= kill_at && run.checkpoints > 0 {
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            p.child.kill().unwrap();
            p.child.wait().unwrap();
            // Checkpoint requests sent before the kill: rsmld believed them durable.
            while let Ok(l) = p.recv(Duration::from_millis(100)) {
                let msg = ProcessorMessage::decode(l.as_bytes()).unwrap();
                if let Some(i) = checkpoint_index(&msg) {
                    run.requested = run.requested.max(Some(i));
                }
            }
            return run;
        }
        loop {
            let got = p.recv(Duration::from_secs(20)).unwrap();
            let msg = ProcessorMessage::decode(got.as_bytes()).unwrap();
            match &msg {
                ProcessorMessage::Status { response_for } => {
                    assert_eq!(*response_for, Action::ProcessRecords);
                    break;
                }
                ProcessorMessage::Checkpoint { .. } => {
                    let i = checkpoint_index(&msg).expect("a positioned checkpoint");
                    run.requested = run.requested.max(Some(i));
                    let (reply, error) = model.answer(&msg);
                    assert_eq!(error, None, "{got}");
                    run.answered = Some(i);
                    run.checkpoints += 1;
                    p.send(&reply);
                }
            }
        }
        assert!(batch < 500, "no checkpoint in 500 batches");
        // Let some items finish, so that checkpoints move between batches.
        std::thread::sleep(Duration::from_millis(rng.below(30)));
    }
    unreachable!()
}

/// Five runs of `--workers 3 --debug-delay-ms 2 --rotate-bytes 4096`, each SIGKILLed at a
/// random moment after a random number of batches (in flight: items being written,
/// completions and checkpoint requests on their way): every record up to the highest
/// checkpoint rsmld requested (so, up to the last one answered) is on disk; only a file's
/// final line may be torn; no record is written twice. Then a second process on the same
/// directory resumes from the last answered checkpoint: its files sort after the first
/// process's, and afterwards every record is there.
#[test]
fn sigkill_between_write_and_ack_loses_nothing() {
    let seed = time_seed();
    eprintln!("seed {seed:#x}");
    let mut rng = Rng(seed);
    let (mut checked, mut torn_lines, mut files_total) = (0u64, 0, 0);
    for run_no in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let max_in_flight = if run_no % 2 == 0 { "10000" } else { "0" };
        let argv = args(&[
            "--handler",
            "file",
            "--output",
            out.to_str().unwrap(),
            "--workers",
            "3",
            "--checkpoint-interval",
            "0",
            "--debug-delay-ms",
            "2",
            "--rotate-bytes",
            "4096",
            "--max-in-flight",
            max_in_flight,
        ]);
        let mut p = Proc::spawn(&argv);
        let kill_at = 2 + rng.below(8) as usize;
        let run = feed_and_kill(&mut p, &mut rng, kill_at);
        let ctx = format!(
            "seed {seed:#x} run {run_no}: killed in batch {kill_at}, {} delivered, \
             checkpoint answered {:?} requested {:?}",
            run.delivered, run.answered, run.requested
        );
        assert!(run.checkpoints >= 1, "{ctx}: no checkpoint before the kill");

        let files = archive(&out);
        let mut count: BTreeMap<u64, usize> = BTreeMap::new();
        for f in &files {
            for i in indexes(f) {
                *count.entry(i).or_default() += 1;
            }
            if let Some(t) = &f.torn {
                torn_lines += 1;
                eprintln!("{ctx}: torn final line in {} ({} bytes)", f.name, t.len());
                assert!(
                    serde_json::from_str::<serde_json::Value>(t).is_err(),
                    "{ctx}: a complete item without its newline in {}",
                    f.name
                );
            }
        }
        assert!(
            files.len() > 3,
            "{ctx}: no rotation ({} files)",
            files.len()
        );
        let covered = run.requested.unwrap_or(0);
        for i in 1..=covered {
            assert_eq!(
                count.get(&i).copied().unwrap_or(0),
                1,
                "{ctx}: record {i} is covered by a checkpoint but written {:?} times",
                count.get(&i)
            );
        }
        assert!(
            count.values().all(|&c| c == 1),
            "{ctx}: a record written twice"
        );
        checked += covered;
        files_total += files.len();

        // Restart from the last answered checkpoint, as the daemon would.
        let before = names(&out);
        let mut p = Proc::spawn(&argv);
        let mut model = CheckpointModel::default();
        let resume = run.answered;
        model.initialize(Some(&resume.map_or("TRIM_HORIZON".into(), seq)), Some(0));
        run_action(&mut p, &mut model, &init_line(resume), Action::Initialize).unwrap();
        let from = resume.unwrap_or(0) + 1;
        let records: Vec<Record> = (from..=run.delivered)
            .map(|i| record(i, &format!("key-{}", i % 13), 50))
            .collect();
        model.deliver_all(&records);
        let l = line(&DaemonMessage::ProcessRecords {
            records,
            millis_behind_latest: None,
        });
        run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
        run_action(
            &mut p,
            &mut model,
            r#"{"action":"shutdownRequested"}"#,
            Action::ShutdownRequested,
        )
        .unwrap();
        assert_eq!(
            model.last.as_ref().unwrap().seq.as_str(),
            seq(run.delivered)
        );
        p.close_stdin();
        assert_eq!(p.wait(Duration::from_secs(10)).unwrap(), 0, "{ctx}");
        let after = archive(&out);
        let mut present = BTreeSet::new();
        for f in &after {
            if !before.contains(&f.name) {
                let last_old = before.iter().next_back().unwrap();
                assert!(
                    &f.name > last_old,
                    "{ctx}: {} sorts before {last_old}",
                    f.name
                );
            }
            present.extend(indexes(f));
        }
        let missing: Vec<u64> = (1..=run.delivered)
            .filter(|i| !present.contains(i))
            .collect();
        assert!(
            missing.is_empty(),
            "{ctx}: missing after restart {missing:?}"
        );
    }
    eprintln!(
        "5 SIGKILL runs: {checked} checkpointed records found on disk, {files_total} files, \
         {torn_lines} torn final line(s)"
    );
    assert!(checked > 0);
}

/// Under strace (skipped, loudly, where strace is missing or cannot trace): with --max-in-flight 0
/// nothing is in flight when rsmld writes a checkpoint, so at that moment every byte
/// written to an archive file must already be fdatasync'ed and then found at its path
/// again (a stat of the path after the sync), and every archive file created must have
/// been followed by an fsync of DIR.
#[test]
fn checkpoints_follow_fdatasync_and_directory_fsync() {
    let Some(strace) = ["/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!("SKIPPED: strace is not installed");
        return;
    };
    let works = Command::new(&strace)
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("SKIPPED: strace cannot trace here (ptrace not permitted?)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let trace = dir.path().join("trace");
    let mut cmd = Command::new(strace);
    cmd.args(["-f", "-qq", "-s", "64", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,write,fdatasync,fsync,close,statx,newfstatat,stat",
        ])
        .arg(common::rsmld_bin())
        .args(args(&[
            "--handler",
            "file",
            "--output",
            out.to_str().unwrap(),
            "--workers",
            "3",
            "--checkpoint-interval",
            "0",
            "--max-in-flight",
            "0",
            "--rotate-bytes",
            "3000",
        ]));
    let mut p = spawn_command(cmd);
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(&mut p, &mut model, &init_line(None), Action::Initialize).unwrap();
    let mut n = 0;
    for _ in 0..15 {
        let records: Vec<Record> = (0..12)
            .map(|j| {
                n += 1;
                record(n, &format!("key-{j}"), 60)
            })
            .collect();
        model.deliver_all(&records);
        let l = line(&DaemonMessage::ProcessRecords {
            records,
            millis_behind_latest: None,
        });
        let reqs = run_action(&mut p, &mut model, &l, Action::ProcessRecords).unwrap();
        assert_eq!(reqs.len(), 1);
    }
    p.close_stdin();
    assert_eq!(p.wait(Duration::from_secs(20)).unwrap(), 0);

    let text = std::fs::read_to_string(&trace).unwrap();
    let out_dir = out.to_str().unwrap().to_owned();
    let report = check_trace(&text, &out_dir);
    eprintln!("{report:?}");
    assert_eq!(report.checkpoints, 15, "{report:?}");
    assert!(report.created > 3, "no rotation: {report:?}");
    assert!(report.datasyncs >= 15, "{report:?}");
    assert!(report.dir_syncs >= report.created, "{report:?}");
    assert!(report.path_checks >= report.datasyncs, "{report:?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

#[derive(Debug, Default)]
struct TraceReport {
    checkpoints: usize,
    created: usize,
    datasyncs: usize,
    dir_syncs: usize,
    /// Stats of an archive file's path after its sync.
    path_checks: usize,
    violations: Vec<String>,
}

/// What a replay of the trace knows at a point in time.
#[derive(Default)]
struct TraceState {
    out_dir: String,
    /// Open fds and the paths they name.
    fds: HashMap<i64, String>,
    /// Archive files with writes not yet fdatasync'ed.
    dirty: BTreeSet<String>,
    /// Archive files created and not yet covered by an fsync of DIR.
    unnamed: BTreeSet<String>,
    /// Archive files synced but not yet looked up at their path since.
    unchecked: BTreeSet<String>,
    report: TraceReport,
}

/// Replays an `strace -f` log: archive writes make their file dirty until an fdatasync
/// (or fsync) of it returns 0, after which it is unchecked until a stat of its path
/// returns; a created archive file needs an fsync of DIR that started after the creation
/// returned; a checkpoint write must find nothing dirty, unchecked or unnamed.
fn check_trace(text: &str, out_dir: &str) -> TraceReport {
    let mut st = TraceState {
        out_dir: out_dir.to_owned(),
        ..TraceState::default()
    };
    // Per thread: the call that has not returned yet, and for a directory fsync, the
    // files it covers.
    let mut pending: HashMap<String, (String, BTreeSet<String>)> = HashMap::new();
    for l in text.lines() {
        let Some((pid, rest)) = l.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let (call, result): (String, Option<&str>) =
            if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
                (start.to_owned(), None)
            } else if let Some(resumed) = rest.strip_prefix("<... ") {
                let Some((c, covered)) = pending.remove(pid) else {
                    continue;
                };
                let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
                let Some((_, res)) = tail.rsplit_once(" = ") else {
                    continue;
                };
                st.finish(&c, res, &covered);
                continue;
            } else if let Some((c, res)) = rest.rsplit_once(" = ") {
                (c.to_owned(), Some(res))
            } else {
                continue;
            };
        let covered = st.start(&call);
        match result {
            None => {
                pending.insert(pid.to_owned(), (call, covered));
            }
            Some(res) => st.finish(&call, res, &covered),
        }
    }
    st.report
}

fn fd_arg(call: &str) -> Option<i64> {
    let args = call.split_once('(')?.1;
    args.split([',', ')']).next()?.trim().parse().ok()
}

impl TraceState {
    fn is_archive(&self, path: &str) -> bool {
        path.starts_with(&format!("{}/", self.out_dir)) && path.ends_with(".jsonl")
    }

    /// The path an `*at` call names: its string argument, relative to its directory fd
    /// (or the cwd for AT_FDCWD, which these tests never rely on).
    fn at_path(&self, call: &str) -> Option<String> {
        let name = call.split('"').nth(1)?;
        if name.starts_with('/') {
            return Some(name.to_owned());
        }
        let dir = fd_arg(call).and_then(|fd| self.fds.get(&fd))?;
        Some(format!("{dir}/{name}"))
    }

    /// Effects at the start of a call; returns what a directory fsync covers.
    fn start(&mut self, call: &str) -> BTreeSet<String> {
        let name = call.split('(').next().unwrap_or("");
        let fd = fd_arg(call);
        let path = fd.and_then(|fd| self.fds.get(&fd)).cloned();
        match name {
            "write" => {
                if let Some(p) = path.filter(|p| self.is_archive(p)) {
                    self.dirty.insert(p);
                } else if call.contains(r#"{\"action\":\"checkpoint\""#) {
                    self.report.checkpoints += 1;
                    if !self.dirty.is_empty()
                        || !self.unnamed.is_empty()
                        || !self.unchecked.is_empty()
                    {
                        self.report.violations.push(format!(
                            "checkpoint {} while unsynced: data {:?}, names {:?}, \
                             not checked at their path {:?}",
                            self.report.checkpoints, self.dirty, self.unnamed, self.unchecked
                        ));
                    }
                }
                BTreeSet::new()
            }
            "fsync" if path.is_some_and(|p| p == self.out_dir) => self.unnamed.clone(),
            "close" => {
                // At the start: once close has begun, another thread may get the number.
                if let Some(fd) = fd {
                    self.fds.remove(&fd);
                }
                BTreeSet::new()
            }
            _ => BTreeSet::new(),
        }
    }

    /// Effects when a call returns `res`.
    fn finish(&mut self, call: &str, res: &str, covered: &BTreeSet<String>) {
        let name = call.split('(').next().unwrap_or("");
        let ret: Option<i64> = res.split_whitespace().next().and_then(|r| r.parse().ok());
        match name {
            "openat" => {
                let (Some(fd), Some(path)) = (ret.filter(|&r| r >= 0), self.at_path(call)) else {
                    return;
                };
                if self.is_archive(&path) && call.contains("O_EXCL") {
                    self.report.created += 1;
                    self.unnamed.insert(path.clone());
                }
                self.fds.insert(fd, path);
            }
            "fdatasync" | "fsync" if ret == Some(0) => {
                let Some(path) = fd_arg(call).and_then(|fd| self.fds.get(&fd)).cloned() else {
                    return;
                };
                if path == self.out_dir {
                    self.report.dir_syncs += 1;
                    for c in covered {
                        self.unnamed.remove(c);
                    }
                } else if self.dirty.remove(&path) || self.is_archive(&path) {
                    self.report.datasyncs += usize::from(name == "fdatasync");
                    self.unchecked.insert(path);
                }
            }
            "statx" | "newfstatat" | "stat" if ret == Some(0) => {
                if let Some(path) = self.at_path(call).filter(|p| self.is_archive(p)) {
                    if self.unchecked.remove(&path) {
                        self.report.path_checks += 1;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Spawns `cmd` with the pipes of a [`Proc`].
fn spawn_command(cmd: Command) -> Proc {
    Proc::from_command(cmd)
}

/// The replacement for the `/dev/full` symlink trick: rsmld runs with a 300-byte file size
/// limit (RLIMIT_FSIZE, which binds root too; SIGXFSZ left at its default, rsmld ignores
/// it itself), so the first write past it fails with EFBIG. That is a worker failure: exit 1, the error names the file, no
/// checkpoint, no status in synchronous mode, and the failed batch's partial bytes are cut
/// back off the file.
#[test]
fn a_failing_write_is_a_worker_failure() {
    for max_in_flight in ["10000", "0"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(common::rsmld_bin());
        cmd.args(args(&[
            "--handler",
            "file",
            "--output",
            dir.path().to_str().unwrap(),
            "--workers",
            "1",
            "--checkpoint-interval",
            "0",
            "--max-in-flight",
            max_in_flight,
        ]));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 300,
                    rlim_max: 300,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut p = spawn_command(cmd);
        let mut model = CheckpointModel::default();
        run_action(&mut p, &mut model, &init_line(None), Action::Initialize).unwrap();
        let records: Vec<Record> = (1..=3).map(|i| record(i, "k", 100)).collect();
        p.send(&line(&DaemonMessage::ProcessRecords {
            records,
            millis_behind_latest: None,
        }));
        std::thread::sleep(Duration::from_millis(100));
        p.send(&line(&DaemonMessage::ProcessRecords {
            records: vec![record(4, "j", 10)],
            millis_behind_latest: None,
        }));
        assert_eq!(p.wait(Duration::from_secs(5)).unwrap(), 1, "{}", p.stderr());
        let mut statuses = 0;
        while let Ok(l) = p.recv(Duration::from_millis(200)) {
            match ProcessorMessage::decode(l.as_bytes()).unwrap() {
                ProcessorMessage::Status { .. } => statuses += 1,
                other => panic!("{other:?} after a worker failure"),
            }
        }
        if max_in_flight == "0" {
            assert_eq!(statuses, 0, "synchronous mode acknowledged a failed batch");
        }
        let err = p.stderr();
        assert!(
            err.contains("worker 0 failed") && err.contains("File too large"),
            "{err}"
        );
        assert!(
            err.contains(&format!("{SHARD}.")) && err.contains(".w0.jsonl"),
            "{err}"
        );
        for f in archive(dir.path()) {
            assert_eq!(
                f.len, 0,
                "{}: the failed batch was left in the file",
                f.name
            );
        }
    }
}

/// The lease every batch of these tests belongs to (the one the context names).
fn lease() -> LeaseId {
    LeaseId::new("", SHARD)
}
