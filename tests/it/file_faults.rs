//! The file archive under a hostile file system, through the real binary and a real
//! directory: the output directory removed, renamed or replaced (also behind a symlink),
//! the current file unlinked, renamed away or replaced while rsmld runs; a write past
//! RLIMIT_FSIZE (SIGXFSZ must not kill rsmld); a full file system (a 1 MiB tmpfs, where
//! mounting is possible). In every case rsmld fails the batch that is not in the archive,
//! exits non-zero with one clear error line, and every record covered by an accepted
//! checkpoint is in a file under the output path (or was there when the fault struck,
//! for the records the fault itself destroyed).
//!
//! On the code before issue 10 the fault runs exit 0 with about 2,500 of 4,000
//! checkpointed records in no file under the output path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    limit_file_size, process_records, record_with_text, shutdown_requested, Proc, SHARD7,
};
use rsmld::codec::message::Record;
use rsmld::handler::file::{FileFactory, FileOptions};
use rsmld::handler::{BatchError, Handler, HandlerFactory, WorkerContext};
use rsmld::pipeline::item::Item;
use rsmld::telemetry::LeaseId;

/// The record index encoded in a sequence number made by [`seq`].
fn index_of(seq: &str) -> u64 {
    seq[seq.len() - 27..].parse().unwrap()
}

fn record(i: u64) -> Record {
    // Keys spread the records over both workers.
    record_with_text(
        i,
        &format!("key-{}", i % 7),
        &format!("payload-{i}-{}", "p".repeat(40)),
    )
}

/// The record indexes in the `*.jsonl` files directly under `dir` (following a symlinked
/// `dir`); empty if `dir` is gone. Only complete lines count.
fn indexes_under(dir: &Path) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for l in complete.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            out.insert(index_of(v["sequenceNumber"].as_str().unwrap()));
        }
    }
    out
}

/// The newest archive file of worker `w` under `dir` (waiting up to 10 s for a first
/// one: with items in flight the worker may not have created it yet).
fn current_file(dir: &Path, w: usize) -> PathBuf {
    let tag = format!(".w{w}.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(&tag))
            .collect();
        names.sort();
        if let Some(newest) = names.pop() {
            return newest;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no file of worker {w} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the file system does to the archive between two batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `rm -rf DIR`.
    RemoveDir,
    /// `mv DIR elsewhere` (the files live on, not at the path).
    RenameDir,
    /// `rm -rf DIR; mkdir DIR`.
    ReplaceDir,
    /// DIR is a symlink to `a`; it is swapped (atomically) to point at an empty `b`.
    SwapSymlink,
    /// `rm` of worker 0's current file.
    UnlinkFile,
    /// `mv` of worker 0's current file out of DIR.
    RenameFileAway,
    /// Another file renamed over worker 0's current file.
    ReplaceFile,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::RemoveDir,
        Fault::RenameDir,
        Fault::ReplaceDir,
        Fault::SwapSymlink,
        Fault::UnlinkFile,
        Fault::RenameFileAway,
        Fault::ReplaceFile,
    ];

    /// What rsmld's error line must say.
    fn expected_error(self) -> &'static str {
        match self {
            Fault::RemoveDir => "was removed",
            Fault::RenameDir => "was renamed away",
            Fault::ReplaceDir | Fault::SwapSymlink => "was replaced",
            Fault::UnlinkFile => "was unlinked",
            Fault::RenameFileAway => "was renamed away",
            Fault::ReplaceFile => "was replaced by another file",
        }
    }

    fn strike(self, root: &Path, out: &Path) {
        match self {
            Fault::RemoveDir => std::fs::remove_dir_all(out).unwrap(),
            Fault::RenameDir => std::fs::rename(out, root.join("moved")).unwrap(),
            Fault::ReplaceDir => {
                std::fs::remove_dir_all(out).unwrap();
                std::fs::create_dir(out).unwrap();
            }
            Fault::SwapSymlink => {
                std::fs::create_dir(root.join("b")).unwrap();
                std::os::unix::fs::symlink("b", root.join("link.new")).unwrap();
                std::fs::rename(root.join("link.new"), out).unwrap();
            }
            Fault::UnlinkFile => std::fs::remove_file(current_file(out, 0)).unwrap(),
            Fault::RenameFileAway => {
                std::fs::rename(current_file(out, 0), root.join("away.jsonl")).unwrap()
            }
            Fault::ReplaceFile => {
                let other = root.join("other");
                std::fs::write(&other, "").unwrap();
                std::fs::rename(&other, current_file(out, 0)).unwrap();
            }
        }
    }
}

/// How one run ended.
#[derive(Debug)]
struct Outcome {
    exit: i32,
    stderr: String,
    /// The highest record index an accepted checkpoint covers.
    checkpointed: u64,
    /// Records under DIR just before the fault.
    kept: BTreeSet<u64>,
    /// Records under DIR at the end.
    after: BTreeSet<u64>,
}

impl Outcome {
    /// Checkpointed records that are in no file under DIR, neither before the fault
    /// destroyed them nor at the end.
    fn lost(&self) -> Vec<u64> {
        (1..=self.checkpointed)
            .filter(|i| !self.kept.contains(i) && !self.after.contains(i))
            .collect()
    }
}

const BATCHES: u64 = 40;
const PER_BATCH: u64 = 100;
const FAULT_AFTER: u64 = 15;

/// 40 batches of 100 records to `--workers 2 --max-in-flight 0` (synchronous: when a
/// status arrives nothing is being written, so the archive before the fault is exact),
/// `fault` striking after batch 15; then shutdownRequested and EOF.
fn run_with_fault(fault: Fault, extra: &[&str]) -> Outcome {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    if fault == Fault::SwapSymlink {
        std::fs::create_dir(root.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", &out).unwrap();
    }
    let (mut p, mut model) = common::start_checkpointing(&out, extra);
    let mut kept = BTreeSet::new();
    for b in 0..BATCHES {
        let records: Vec<Record> = (b * PER_BATCH + 1..=(b + 1) * PER_BATCH)
            .map(record)
            .collect();
        if process_records(&mut p, &mut model, records).is_err() {
            break; // rsmld stopped: the exit code and stderr tell why
        }
        if b + 1 == FAULT_AFTER {
            kept = indexes_under(&out);
            fault.strike(root.path(), &out);
        }
    }
    // shutdownRequested waits for every item in flight, so a failure is seen before EOF
    // (on EOF rsmld exits at once, without waiting for its workers).
    let _ = shutdown_requested(&mut p, &mut model);
    p.close_stdin();
    let exit = p.wait(Duration::from_secs(30)).unwrap();
    let checkpointed = model.stored.last().map_or(0, |e| index_of(e.seq.as_str()));
    Outcome {
        exit,
        stderr: p.stderr(),
        checkpointed,
        kept,
        after: indexes_under(&out),
    }
}

/// Every fault: rsmld exits 1, its error names the output path and what happened, and no
/// accepted checkpoint covers a record that is in no file under DIR.
#[test]
fn a_vanishing_archive_fails_the_batch_and_loses_no_checkpointed_record() {
    let mut failures = Vec::new();
    for fault in Fault::ALL {
        let o = run_with_fault(fault, &[]);
        let lost = o.lost();
        eprintln!(
            "{fault:?}: exit {}, checkpointed up to record {}, {} checkpointed records in no file",
            o.exit,
            o.checkpointed,
            lost.len()
        );
        let errors: Vec<&str> = o.stderr.lines().filter(|l| l.contains("ERROR")).collect();
        for l in &errors {
            eprintln!("    {l}");
        }
        let mut wrong = Vec::new();
        if !lost.is_empty() {
            wrong.push(format!(
                "{} of {} checkpointed records are in no file under the output path (first {:?})",
                lost.len(),
                o.checkpointed,
                &lost[..lost.len().min(5)]
            ));
        }
        if o.exit != 1 {
            wrong.push(format!("exit {}, expected 1", o.exit));
        }
        // Synchronous: every batch before the fault was written and checkpointed.
        if o.checkpointed < FAULT_AFTER * PER_BATCH
            || o.kept.len() as u64 != FAULT_AFTER * PER_BATCH
        {
            wrong.push("the batches before the fault were not all written and checkpointed".into());
        }
        let says = |l: &&str| l.contains(fault.expected_error()) && l.contains("/out");
        if !errors.iter().any(says) {
            wrong.push(format!(
                "no error line saying {:?}: {errors:#?}",
                fault.expected_error()
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!("{fault:?}: {}", wrong.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same faults with `--max-in-flight 10000` (items still being written when the fault
/// strikes, checkpoints sent during later batches): records delivered before the fault may
/// be checkpointed or fail, but no checkpoint covers a record delivered after it unless
/// that record is in a file under DIR at the end.
#[test]
fn asynchronous_runs_checkpoint_nothing_after_the_fault_that_is_not_there() {
    for fault in [
        Fault::RemoveDir,
        Fault::ReplaceDir,
        Fault::UnlinkFile,
        Fault::ReplaceFile,
    ] {
        let o = run_with_fault(fault, &["--max-in-flight", "10000"]);
        let after_fault = FAULT_AFTER * PER_BATCH + 1..=o.checkpointed;
        let lost: Vec<u64> = after_fault.filter(|i| !o.after.contains(i)).collect();
        eprintln!(
            "{fault:?}: exit {}, checkpointed up to {}, {} delivered after the fault and lost",
            o.exit,
            o.checkpointed,
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "{fault:?}: lost {} records after the fault",
            lost.len()
        );
        assert_eq!(o.exit, 1, "{fault:?}: {}", o.stderr);
        // With items in flight a worker may sync while the fault is half done: between the
        // removal and the re-creation of DIR it rightly reports DIR removed.
        let also = match fault {
            Fault::ReplaceDir => Some(Fault::RemoveDir.expected_error()),
            _ => None,
        };
        assert!(
            o.stderr.contains(fault.expected_error()) || also.is_some_and(|m| o.stderr.contains(m)),
            "{fault:?}: {}",
            o.stderr
        );
    }
}

/// Under `--on-error retry` a replaced output directory costs one failed attempt: the
/// retry writes a fresh file into the directory now at the path, rsmld goes on and exits
/// 0, and every record is in a file under DIR (the ones before the fault were destroyed
/// with the old directory). A removed directory is not recreated: the retries fail and
/// rsmld exits 1.
#[test]
fn under_retry_a_replaced_directory_is_used_and_a_removed_one_is_not_recreated() {
    let retry = [
        "--on-error",
        "retry",
        "--retries",
        "2",
        "--retry-backoff",
        "0.05",
    ];
    let o = run_with_fault(Fault::ReplaceDir, &retry);
    assert_eq!(o.exit, 0, "{}", o.stderr);
    assert!(o.lost().is_empty(), "{:?}", o.lost());
    assert_eq!(o.checkpointed, BATCHES * PER_BATCH, "{}", o.stderr);
    let expected: BTreeSet<u64> = (FAULT_AFTER * PER_BATCH + 1..=BATCHES * PER_BATCH).collect();
    assert_eq!(o.after, expected, "{}", o.stderr);
    assert!(o.stderr.contains("retry 1 of 2"), "{}", o.stderr);

    let o = run_with_fault(Fault::RemoveDir, &retry);
    assert_eq!(o.exit, 1, "{}", o.stderr);
    assert!(o.lost().is_empty(), "{:?}", o.lost());
    assert_eq!(o.checkpointed, FAULT_AFTER * PER_BATCH, "{}", o.stderr);
    assert!(o.stderr.contains("retry 2 of 2"), "{}", o.stderr);
    assert!(o.stderr.contains("was removed"), "{}", o.stderr);
}

// ---------------------------------------------------------------- through the handler

/// A handler-level item of record `i`, key `k`, with a 7-byte payload.
fn item(i: u64) -> Item<'static> {
    common::item_with(i, "k", 7)
}

fn file_handler(out: &Path, rotate_bytes: u64) -> Box<dyn Handler> {
    FileFactory::new(FileOptions {
        rotate_bytes,
        ..FileOptions::new(out)
    })
    .create(&WorkerContext::new(0, 1).for_lease(lease()))
    .unwrap()
}

/// Each fault against one handler, with and without a rotation before every batch: the
/// batch after the fault fails with a message naming the path and what happened — unless
/// it went entirely into a new file in the directory now at the path, which is where a
/// reader looks (only possible with rotation, and only when a directory is there). The
/// next batch after a failure starts a fresh file: in the directory now at the path; a
/// removed or renamed directory is never recreated (the batch fails again, the path stays
/// empty). Every batch that returned Ok is in a file under the path (or was, when the
/// fault struck).
#[test]
fn the_handler_checks_its_file_and_directory_after_every_batch() {
    for rotate in [0, 1] {
        for fault in Fault::ALL {
            let root = tempfile::tempdir().unwrap();
            let out = root.path().join("out");
            if fault == Fault::SwapSymlink {
                std::fs::create_dir(root.path().join("a")).unwrap();
                std::os::unix::fs::symlink("a", &out).unwrap();
            }
            let ctx = format!("{fault:?}, rotate_bytes {rotate}");
            let mut h = file_handler(&out, rotate);
            h.process(&lease(), &[item(1)]).unwrap();
            h.process(&lease(), &[item(2)]).unwrap();
            let kept = indexes_under(&out);
            assert_eq!(kept, BTreeSet::from([1, 2]), "{ctx}");
            fault.strike(root.path(), &out);
            let dir_gone = matches!(fault, Fault::RemoveDir | Fault::RenameDir);
            let new_file_at_path = rotate > 0 && !dir_gone;
            let mut ok = BTreeSet::new();
            match h.process(&lease(), &[item(3)]) {
                Ok(()) if new_file_at_path => {
                    ok.insert(3);
                }
                Ok(()) => panic!("{ctx}: the batch after the fault counted as done"),
                Err(BatchError::Batch(e)) => {
                    assert!(!new_file_at_path, "{ctx}: {e}");
                    assert!(
                        e.message.contains(fault.expected_error())
                            && e.message.contains(out.to_str().unwrap()),
                        "{ctx}: {e}"
                    );
                }
                Err(e) => panic!("{ctx}: {e:?}"),
            }
            match h.process(&lease(), &[item(4)]) {
                Ok(()) => {
                    assert!(!dir_gone, "{ctx}: wrote into a directory not at the path");
                    ok.insert(4);
                }
                Err(e) => {
                    assert!(dir_gone, "{ctx}: no fresh file after the failure: {e}");
                    let e = e.to_string();
                    assert!(
                        e.contains("only at start-up") && e.contains(".w0.jsonl"),
                        "{ctx}: {e}"
                    );
                    assert!(!out.exists(), "{ctx}: the output directory was recreated");
                }
            }
            h.close().unwrap();
            let after = indexes_under(&out);
            for i in ok.iter().chain(&[1, 2]) {
                assert!(
                    kept.contains(i) || after.contains(i),
                    "{ctx}: item {i} was acknowledged but is in no file under the path"
                );
            }
            for i in &ok {
                assert!(after.contains(i), "{ctx}: item {i} not under the path");
            }
        }
    }
}

// ---------------------------------------------------------------- write failures

/// A process argument list for the file handler writing under `out`.
fn file_args(out: &Path) -> Vec<String> {
    common::args(&[
        "--handler",
        "file",
        "--output",
        out.to_str().unwrap(),
        "--workers",
        "1",
        "--checkpoint-interval",
        "0",
        "--max-in-flight",
        "0",
    ])
}

/// Feeds batches of 100 records with `payload`-byte texts until rsmld stops or 40 went
/// through, then EOF; returns the exit code, stderr and the highest checkpointed index.
fn feed_until_failure(mut p: Proc, payload: usize) -> (i32, String, u64) {
    let mut model = common::initialize(&mut p);
    for b in 0..40u64 {
        let records: Vec<Record> = (b * 100 + 1..=(b + 1) * 100)
            .map(|i| record_with_text(i, "k", &format!("{i:06}{}", "x".repeat(payload))))
            .collect();
        if process_records(&mut p, &mut model, records).is_err() {
            break;
        }
    }
    p.close_stdin();
    let exit = p.wait(Duration::from_secs(30)).unwrap();
    let checkpointed = model.stored.last().map_or(0, |e| index_of(e.seq.as_str()));
    (exit, p.stderr(), checkpointed)
}

/// The archive under `out` holds only whole lines, and every record up to `checkpointed`.
fn assert_whole_and_covering(out: &Path, checkpointed: u64, ctx: &str) {
    for entry in std::fs::read_dir(out).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "{ctx}: a torn line was left behind"
        );
    }
    let present = indexes_under(out);
    let missing: Vec<u64> = (1..=checkpointed)
        .filter(|i| !present.contains(i))
        .collect();
    assert!(
        missing.is_empty(),
        "{ctx}: checkpointed but missing {missing:?}"
    );
}

/// rsmld under a 64 KiB file size limit (RLIMIT_FSIZE, set between fork and exec, with
/// SIGXFSZ at its default: rsmld itself must ignore it). The write past the limit fails
/// with EFBIG instead of killing rsmld: exit 1, one error line naming the file and the
/// limit, everything checkpointed on disk, no torn line. Before issue 10 rsmld died of
/// SIGXFSZ without a word.
#[test]
fn a_write_past_the_file_size_limit_fails_the_batch_and_does_not_kill_rsmld() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut cmd = Command::new(common::rsmld_bin());
    cmd.args(file_args(&out));
    limit_file_size(&mut cmd, 64 << 10);
    let (exit, err, checkpointed) = feed_until_failure(Proc::from_command(cmd), 100);
    assert_eq!(
        exit, 1,
        "rsmld did not fail cleanly (-1: killed by a signal):\n{err}"
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.iter().any(|l| l.contains("File too large")
            && l.contains("RLIMIT_FSIZE")
            && l.contains("65536 bytes")
            && l.contains(".w0.jsonl")),
        "{err}"
    );
    assert!(checkpointed > 0 && checkpointed < 4000, "{checkpointed}");
    assert_whole_and_covering(&out, checkpointed, "EFBIG");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A full file system (a 1 MiB tmpfs; skipped, loudly, where mounting is not permitted):
/// ENOSPC fails the batch, rsmld exits 1 with one error line naming the file, every
/// checkpointed record is on the tmpfs and the failed batch's partial bytes are cut off.
#[test]
fn a_full_file_system_fails_the_batch() {
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let out = fs.dir.path().join("out");
    let (exit, err, checkpointed) = feed_until_failure(Proc::spawn(&file_args(&out)), 300);
    assert_eq!(exit, 1, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("No space left on device") && l.contains(".w0.jsonl")),
        "{err}"
    );
    assert!(checkpointed > 0 && checkpointed < 4000, "{checkpointed}");
    assert_whole_and_covering(&out, checkpointed, "ENOSPC");
}

// ---------------------------------------------------------------- truncation by others

/// Every line of every file directly under `dir`, as bytes (the last one may be torn).
fn raw_lines(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        for l in std::fs::read(&path).unwrap().split(|&b| b == b'\n') {
            if !l.is_empty() {
                out.push((path.clone(), l.to_vec()));
            }
        }
    }
    out
}

/// logrotate's `copytruncate` (and `: > file`) empties the current file between two
/// batches, keeping its inode. The next batch must not go to the stale offset (which
/// leaves NUL bytes glued to its first line): the handler leaves the truncated file to
/// whoever truncated it and writes the batch whole into a new file. Before, the file
/// held a hole of NULs and an unparseable line.
#[test]
fn a_file_truncated_by_someone_else_is_left_and_the_batch_goes_to_a_new_file() {
    for copy_first in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let mut h = file_handler(&out, 0);
        h.process(&lease(), &[item(1), item(2)]).unwrap();
        let first = current_file(&out, 0);
        if copy_first {
            std::fs::copy(&first, root.path().join("rotated.1")).unwrap();
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(0)
            .unwrap();
        h.process(&lease(), &[item(3)]).unwrap();
        h.process(&lease(), &[item(4)]).unwrap();
        h.close().unwrap();
        for (path, l) in raw_lines(&out) {
            assert!(
                !l.contains(&0),
                "NUL bytes in {}: {:?}",
                path.display(),
                String::from_utf8_lossy(&l)
            );
            serde_json::from_slice::<serde_json::Value>(&l).unwrap_or_else(|e| {
                panic!("{}: {e}: {:?}", path.display(), String::from_utf8_lossy(&l))
            });
        }
        assert_eq!(std::fs::metadata(&first).unwrap().len(), 0);
        assert_eq!(indexes_under(&out), BTreeSet::from([3, 4]));
        assert_ne!(
            current_file(&out, 0),
            first,
            "the batch went to the old file"
        );
    }
}

// ---------------------------------------------------------------- mounts

/// As root, a tmpfs mounted on the output directory and lazily unmounted between two
/// batches: the path now names the (empty) mount point on the file system below. The
/// batch after fails, and so does every later one, with a message saying the directory is
/// on another file system: rsmld never switches to the mount point, where its files would
/// vanish under the tmpfs again when it is remounted. Before, the third batch returned
/// Ok, written to the mount point. (Skipped, loudly, where mounting is not permitted.)
#[test]
fn an_unmounted_output_directory_is_not_replaced_by_its_mount_point() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&out)
        .output()
        .map_err(|e| e.to_string())
        .and_then(|o| {
            o.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        });
    if let Err(why) = mounted {
        eprintln!("SKIPPED: mount -t tmpfs failed: {why}");
        return;
    }
    let mut h = file_handler(&out, 0);
    h.process(&lease(), &[item(1)]).unwrap();
    let lazy = Command::new("umount").arg("-l").arg(&out).status().unwrap();
    assert!(lazy.success());
    for i in [2, 3, 4] {
        let e = h
            .process(&lease(), &[item(i)])
            .expect_err("a batch counted after the unmount")
            .to_string();
        assert!(
            e.contains("is now on another file system (unmounted?)")
                && e.contains(out.to_str().unwrap()),
            "item {i}: {e}"
        );
    }
    let _ = h.close();
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "files were written to the mount point"
    );
}

/// The lease every batch of these tests belongs to (the one the context names).
fn lease() -> LeaseId {
    LeaseId::new("", SHARD7)
}
