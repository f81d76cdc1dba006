//! The `file` handler: a durable, rotated JSON-lines archive, one series of files per
//! shard and worker.
//!
//! # What "durable" promises
//!
//! A worker reports items complete when [`Handler::process`] returns `Ok`, and from then
//! on a checkpoint may cover them: the daemon will never deliver them again. So `Ok` must
//! mean "on disk, surviving a crash of the process *and* of the machine", not "handed to
//! the kernel". Before `process` returns `Ok`:
//!
//! 1. the batch's lines are written with `write(2)` (no user-space buffer is left holding
//!    them), and
//! 2. the file is `fdatasync`ed (`File::sync_data`), which makes the data and the file
//!    size durable;
//! 3. whenever a new file was created for the batch (the first item, or a rotation), the
//!    output directory was `fsync`ed right after the creation, because a file's *name*
//!    lives in its directory: without that, a crash could keep the data blocks and lose
//!    the entry that points to them. When `DIR` itself (or missing parents) had to be
//!    created at start-up, the parent of each created directory is synced too;
//! 4. the bytes are where a reader will look: after the sync, the file at the file's path
//!    is still the one written (same device and inode, so it was neither unlinked, renamed
//!    away nor replaced) and the directory at `DIR` is still the one whose entries were
//!    synced (so `DIR` was neither removed, renamed nor replaced, and a symlink `DIR`
//!    still points at it). Durable bytes in an unlinked file, or in a directory nobody
//!    can reach by the configured path any more, are lost to every reader; and the file
//!    still holds every byte written to it (its size is at least what rsmld wrote: a
//!    truncation by someone else between the write and the sync would have cut the batch
//!    off).
//!
//! These checks are shared with the dead-letter sink: one implementation, in
//! `handler::durable`.
//!
//! # The directory
//!
//! Each handler holds `DIR` open and creates its files *in that directory* (`openat`,
//! `O_CREAT|O_EXCL`), so the directory it syncs is the one that holds the new name, even
//! if the path is swapped meanwhile; after the sync the directory is checked to be still
//! at `DIR` (point 4). Before it creates a file, a handler looks at the path again:
//!
//! - the same directory: it goes on;
//! - another directory on the same file system and mount (removed and created again,
//!   moved away and replaced, a symlink pointed elsewhere): it switches to that one (with
//!   a warning), after syncing the new directory's own entry in its parent, since nobody
//!   else may have;
//! - a directory on another file system or mount (the one held was unmounted, `umount
//!   -l`, and the path now names the mount point below; or something was mounted over
//!   the path): the batch fails ("… is now on another file system (unmounted?)"), now
//!   and at every later batch. Following it would write into a directory that a remount
//!   hides again, with everything written meanwhile;
//! - nothing, or no directory: the batch fails. rsmld creates `DIR` at start-up only, never
//!   behind the back of whoever removed it (that would hide the removal, and the loss of
//!   everything in it, from the operator).
//!
//! A checkpointed record can thus disappear only if the archive is destroyed *after* its
//! batch was checked, which no writer can prevent; rsmld never counts a batch that was
//! not there when it looked. The checks cost two `stat`s and two `fstat`s (the sizes)
//! per batch (a few µs, next to an `fdatasync` of 0.1 ms and more).
//!
//! # Errors
//!
//! Any IO error, and any of the changes above, fails the whole batch
//! ([`BatchError::Batch`]) with a message naming the file or directory and what happened
//! ("output file … was unlinked", "output directory … was removed"); nothing of it is
//! reported complete. Under `--on-error fail` rsmld stops there and exits non-zero; under
//! `retry` the next attempt writes a fresh file (into the directory now at `DIR`, if any).
//! A write past the file size limit (RLIMIT_FSIZE) fails with EFBIG rather than killing
//! rsmld with SIGXFSZ (rsmld ignores that signal), and the message names the limit.
//!
//! After an IO error the file is truncated back to its last synced length (best effort,
//! and never extended) and abandoned: the next batch starts a new file. A file that
//! someone else truncated (logrotate's `copytruncate`, `: > file`) or wrote to keeps its
//! inode, so only its size tells: before each write the size must be exactly what rsmld
//! wrote, otherwise the file is left to them (with a warning) and the batch goes whole
//! into a new file; writes are `O_APPEND`, so a truncation racing a write can never leave
//! NUL bytes before it. rsmld never reopens an existing file. A file whose `fsync` failed is never
//! trusted again (after a failed `fsync`, Linux may drop the dirty pages and report
//! success on the next call), and a partly written line can only ever be the *last* line
//! of a file. The same holds after a crash or `SIGKILL`: a reader may find a torn final
//! line (after a power loss, possibly NUL bytes), which belongs to a batch that was never
//! acknowledged, so no checkpoint covers it (the daemon re-delivers it). A file that
//! failed the check of point 4 is dropped as it is (its lines are whole, and it is not at
//! the path any more). Delivery stays at-least-once: the lines of a batch that failed or
//! was cut short by a crash may remain (whole) in the archive and appear again when the
//! batch is retried or re-delivered.
//!
//! The price is one `fdatasync` and four `stat`s per batch (plus a directory `fsync` per
//! new file): a few milliseconds on ordinary disks, whatever the batch size, so
//! throughput comes from batching — a busy worker hands its handler everything queued (up
//! to the pool's batch limit) in one call, which makes one sync cover many items.
//!
//! # Names
//!
//! Files are written flat into `DIR` (readers glob `DIR/*.jsonl`), named
//!
//! ```text
//! <shardId>.<yyyymmddThhmmss.mmmZ>.<nnnn>.w<k>.jsonl
//! shardId-000000000007.20250301T120501.042Z.0000.w2.jsonl
//! ```
//!
//! with the UTC creation time (formatted here, see [`utc_timestamp`]), a four-digit
//! counter and the worker index `k`. The pair (time, counter) comes from one logical clock
//! per shard shared by all workers of the process: it never goes backwards (a clock step
//! back reuses the last time and bumps the counter), and within one millisecond the
//! counter counts up (after 9999 the time advances by a millisecond). On the first file of
//! a shard the clock is seeded from the names already in `DIR`, so a restarted process
//! (even within the same millisecond, or after the wall clock stepped back) names its
//! files after its predecessor's. Files are created with `O_CREAT|O_EXCL`
//! (`OpenOptions::create_new`); a name that exists already (another process on the same
//! directory) bumps the clock and is tried again. Hence, for one shard, lexicographic
//! order of the names is creation order, and two handlers never share a file.
//!
//! A shard id is used verbatim except that characters outside `[A-Za-z0-9._-]` become
//! `_` (Kinesis shard ids never contain them). A lease that belongs to a named application
//! (a lease of `rsmld serve`, named by its attach) puts the application first, made safe
//! the same way: `orders.shardId-000000000007.20250301T120501.042Z.0000.w2.jsonl`, so
//! that two applications with the same shard ids never share a file or a name clock.
//!
//! # Rotation
//!
//! - **By size** (`rotate_bytes`, 0 = never): a batch is never split across files when it
//!   fits in `rotate_bytes`: if appending it would take a non-empty file past the limit,
//!   the batch goes to a new file. A batch that is itself larger than `rotate_bytes` is
//!   split at line boundaries over as many new files as needed. So a file exceeds
//!   `rotate_bytes` only when it holds a single line that is itself larger.
//! - **By age** (`rotate_after`, zero = never): a file older than `rotate_after` (since it
//!   was opened) is closed at the next batch or at the next [`Handler::flush`], which the
//!   worker calls when idle; an idle worker thus closes its file and opens none until its
//!   next item.
//!
//! No file is created before a worker's first item; [`Handler::close`] syncs and closes.
//! A worker of a pool shared by several leases keeps one current file per lease (each
//! named by its lease's shard, as above), opened at that lease's first item on the worker
//! and synced and closed at [`Handler::end_lease`].

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::durable::{DurableDir, DurableFile};
use super::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
use crate::pipeline::item::Item;
use crate::telemetry::LeaseId;

/// Settings of the file archive.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// The output directory (created at start-up if missing, never later).
    pub dir: PathBuf,
    /// Start a new file when the current one reaches this size (0: never).
    pub rotate_bytes: u64,
    /// Start a new file when the current one is this old (zero: never).
    pub rotate_after: Duration,
}

impl FileOptions {
    /// Writes under `dir`, no rotation.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileOptions {
            dir: dir.into(),
            rotate_bytes: 0,
            rotate_after: Duration::ZERO,
        }
    }
}

/// The largest counter value in a name; one more advances the clock by a millisecond.
const MAX_SEQ: u32 = 9999;

/// How many existing names a new file may run into before creation gives up.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// A scratch buffer larger than this is given back after its batch.
const KEEP_BUFFER: usize = 4 << 20;

/// Makes file handlers writing under one directory.
#[derive(Clone, Debug)]
pub struct FileFactory {
    options: FileOptions,
    clocks: Arc<Mutex<HashMap<String, NameClock>>>,
}

impl FileFactory {
    /// Writes as `options` say.
    pub fn new(options: FileOptions) -> Self {
        FileFactory {
            options,
            clocks: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The settings.
    pub fn options(&self) -> &FileOptions {
        &self.options
    }
}

impl HandlerFactory for FileFactory {
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        let dir =
            DurableDir::open(&self.options.dir, "output directory").map_err(HandlerError::batch)?;
        Ok(Box::new(FileHandler {
            dir,
            lease: None,
            shard: String::new(),
            shard_id: String::new(),
            parked: Vec::new(),
            worker: ctx.worker,
            rotate_bytes: self.options.rotate_bytes,
            rotate_after: self.options.rotate_after,
            clocks: self.clocks.clone(),
            current: None,
            buf: Vec::new(),
            ends: Vec::new(),
        }))
    }
}

/// The parts of an archive file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveName {
    /// The shard id (as written in the name).
    pub shard_id: String,
    /// Creation time, milliseconds since the Unix epoch (UTC).
    pub unix_ms: u64,
    /// The counter within that millisecond.
    pub seq: u32,
    /// The worker index.
    pub worker: usize,
}

impl ArchiveName {
    /// The file name: `<shardId>.<yyyymmddThhmmss.mmmZ>.<nnnn>.w<k>.jsonl`.
    pub fn file_name(&self) -> String {
        format!(
            "{}.{}.{:04}.w{}.jsonl",
            safe_shard(&self.shard_id),
            utc_timestamp(self.unix_ms),
            self.seq,
            self.worker
        )
    }

    /// Reads a name written by [`ArchiveName::file_name`]; `None` for any other name.
    pub fn parse(name: &str) -> Option<ArchiveName> {
        let stem = name.strip_suffix(".jsonl")?;
        let (rest, worker) = stem.rsplit_once('.')?;
        let worker = worker.strip_prefix('w')?;
        if worker.is_empty() || !worker.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let worker: usize = worker.parse().ok()?;
        let (rest, seq) = rest.rsplit_once('.')?;
        if seq.len() != 4 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq: u32 = seq.parse().ok()?;
        // The timestamp has a fixed width of 20 and contains a dot itself.
        let split = rest.len().checked_sub(TIMESTAMP_LEN + 1)?;
        let (shard, ts) = rest.split_at(split);
        let ts = ts.strip_prefix('.')?;
        if shard.is_empty() {
            return None;
        }
        Some(ArchiveName {
            shard_id: shard.to_owned(),
            unix_ms: parse_utc_timestamp(ts)?,
            seq,
            worker,
        })
    }
}

/// The length of [`utc_timestamp`]'s output (for years 0000..=9999).
const TIMESTAMP_LEN: usize = 20;

/// Formats milliseconds since the Unix epoch as `yyyymmddThhmmss.mmmZ` (UTC, proleptic
/// Gregorian calendar), a fixed-width form whose lexicographic order is time order.
///
/// No date crate: file names need UTC only (no time zones, no leap seconds, no locale), one
/// fixed format and its inverse, which the two day-count functions below give exactly;
/// `jiff`, `time` or `chrono` would add a dependency (and its time-zone machinery) for them.
pub fn utc_timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Reads [`utc_timestamp`]'s format back; `None` if it is not exactly that.
fn parse_utc_timestamp(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    if b.len() != TIMESTAMP_LEN || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = ts.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss, ms) = (num(9..11)?, num(11..13)?, num(13..15)?, num(16..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days = days_from_civil(y as i64, m as u32, d as u32);
    let days = u64::try_from(days).ok()?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31); Howard Hinnant's
/// `civil_from_days`, exact over the whole proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01; the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a lease's file names start with: its shard id (see [`safe_shard`]), after its
/// application when the lease has one (`orders.shardId-000000000001`), so that two
/// applications with the same shard ids on one server never share a name or a clock.
pub(crate) fn name_prefix(lease: &LeaseId) -> String {
    if lease.application.is_empty() {
        safe_shard(&lease.shard)
    } else {
        format!(
            "{}.{}",
            safe_shard(&lease.application),
            safe_shard(&lease.shard)
        )
    }
}

/// The shard id as it appears in file names (of the archive and the dead letters): never
/// a path, never hidden.
pub(crate) fn safe_shard(shard_id: &str) -> String {
    let s: String = shard_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The logical clock behind the names of one shard: (milliseconds, counter), strictly
/// increasing.
#[derive(Clone, Debug, Default)]
struct NameClock {
    seeded: bool,
    last: Option<(u64, u32)>,
}

impl NameClock {
    /// Never again returns anything at or below `at`.
    fn advance_past(&mut self, at: (u64, u32)) {
        if self.last.is_none_or(|l| l < at) {
            self.last = Some(at);
        }
    }

    fn next(&mut self, now_ms: u64) -> (u64, u32) {
        let next = match self.last {
            Some((ms, seq)) if now_ms <= ms => {
                if seq < MAX_SEQ {
                    (ms, seq + 1)
                } else {
                    (ms + 1, 0)
                }
            }
            _ => (now_ms, 0),
        };
        self.last = Some(next);
        next
    }
}

/// What to do about EFBIG, in the message.
const LIMIT_HINT: &str = "set --rotate-bytes below it or raise the limit";

struct FileHandler {
    /// The output directory, held open.
    dir: DurableDir,
    /// The lease whose output `shard`, `shard_id` and `current` are (the last one that
    /// had a batch here); the other leases' are in `parked`.
    lease: Option<LeaseId>,
    /// The shard id made safe for file names.
    shard: String,
    /// The shard id as the daemon named it (items carry it in their JSON).
    shard_id: String,
    /// The outputs of the other leases this worker wrote for.
    parked: Vec<Parked>,
    worker: usize,
    rotate_bytes: u64,
    rotate_after: Duration,
    clocks: Arc<Mutex<HashMap<String, NameClock>>>,
    current: Option<DurableFile>,
    /// The batch's lines.
    buf: Vec<u8>,
    /// The end offset of each line in `buf`.
    ends: Vec<usize>,
}

/// A lease's output while another lease's batches are written.
struct Parked {
    lease: LeaseId,
    shard: String,
    shard_id: String,
    current: Option<DurableFile>,
}

impl FileHandler {
    /// Makes `lease`'s output the current one (its own file, named by its shard), parking
    /// the previous lease's.
    fn activate(&mut self, lease: &LeaseId) {
        if self.lease.as_ref() == Some(lease) {
            return;
        }
        if let Some(previous) = self.lease.take() {
            self.parked.push(Parked {
                lease: previous,
                shard: std::mem::take(&mut self.shard),
                shard_id: std::mem::take(&mut self.shard_id),
                current: self.current.take(),
            });
        }
        match self.parked.iter().position(|p| &p.lease == lease) {
            Some(at) => {
                let p = self.parked.swap_remove(at);
                (self.shard, self.shard_id, self.current) = (p.shard, p.shard_id, p.current);
            }
            None => {
                self.shard = name_prefix(lease);
                self.shard_id = lease.shard.to_string();
                self.current = None;
            }
        }
        self.lease = Some(lease.clone());
    }

    /// Every lease with an output here.
    fn leases(&self) -> Vec<LeaseId> {
        self.lease
            .iter()
            .chain(self.parked.iter().map(|p| &p.lease))
            .cloned()
            .collect()
    }

    fn expired(&self, f: &DurableFile) -> bool {
        !self.rotate_after.is_zero() && f.opened().elapsed() >= self.rotate_after
    }

    /// How log lines name this handler.
    fn who(&self) -> String {
        format!("worker {}", self.worker)
    }

    /// The pattern of this handler's names, for messages.
    fn pattern(&self) -> String {
        format!(
            "{}/{}.*.w{}.jsonl",
            self.dir.path().display(),
            self.shard,
            self.worker
        )
    }

    /// Creates the next file of this shard and worker in the output directory now at the
    /// path (see [`DurableDir::ensure`] and [`DurableDir::create`]).
    fn open_new(&mut self) -> Result<DurableFile, HandlerError> {
        let who = self.who();
        self.dir.ensure(&who).map_err(|why| {
            HandlerError::batch(format!("cannot create the next {}: {why}", self.pattern()))
        })?;
        let mut attempts = 0;
        loop {
            let (unix_ms, seq) = self.next_name()?;
            let name = ArchiveName {
                shard_id: self.shard.clone(),
                unix_ms,
                seq,
                worker: self.worker,
            }
            .file_name();
            if let Some(f) = self.dir.create(&name).map_err(HandlerError::batch)? {
                log::debug!("{who}: writing {}", f.path().display());
                return Ok(f);
            }
            attempts += 1;
            if attempts >= MAX_NAME_ATTEMPTS {
                return Err(HandlerError::batch(format!(
                    "cannot create {}: {attempts} names in a row exist already",
                    self.dir.path().join(&name).display()
                )));
            }
        }
    }

    /// The next (time, counter) of this shard, seeding the clock from `DIR` at first use.
    fn next_name(&self) -> Result<(u64, u32), HandlerError> {
        let mut clocks = self
            .clocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let clock = clocks.entry(self.shard.clone()).or_default();
        if !clock.seeded {
            let entries = fs::read_dir(self.dir.path()).map_err(|e| {
                HandlerError::batch(format!(
                    "cannot list {} before creating the next {}: {e}",
                    self.dir.path().display(),
                    self.pattern()
                ))
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(n) = name.to_str().and_then(ArchiveName::parse) {
                    if n.shard_id == self.shard {
                        clock.advance_past((n.unix_ms, n.seq));
                    }
                }
            }
            clock.seeded = true;
        }
        Ok(clock.next(now_unix_ms()))
    }

    /// Appends `buf[range]` to the current file, opening one if there is none, or if
    /// someone else truncated (or wrote to) the current one: that file is theirs now.
    fn append(&mut self, range: std::ops::Range<usize>) -> Result<(), HandlerError> {
        let mut f = match self.current.take() {
            Some(f) => match f.check_intact() {
                Ok(()) => f,
                Err(why) => {
                    log::warn!("{}: {why}; leaving it and starting a new file", self.who());
                    self.open_new()?
                }
            },
            None => self.open_new()?,
        };
        if let Err(msg) = f.write(&self.buf[range], LIMIT_HINT) {
            f.abandon(&self.who());
            return Err(HandlerError::batch(msg));
        }
        self.current = Some(f);
        Ok(())
    }

    /// Makes everything written to the current file durable, then checks that it is
    /// still at its path ([`DurableDir::verify`]). A file that is not is dropped (its
    /// whole lines stay wherever it is now) and the batch fails.
    fn sync(&mut self) -> Result<(), HandlerError> {
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        let synced = match f.sync() {
            Ok(synced) => synced,
            Err(msg) => {
                f.abandon(&self.who());
                return Err(HandlerError::batch(msg));
            }
        };
        if synced {
            if let Err(problem) = self.dir.verify(&f) {
                return Err(HandlerError::batch(format!(
                    "{problem}: the batch is not in the archive readers see, so it fails"
                )));
            }
        }
        self.current = Some(f);
        Ok(())
    }

    /// Syncs and closes the current file (the next batch opens a new one).
    fn finish(&mut self) -> Result<(), HandlerError> {
        self.sync()?;
        if let Some(f) = self.current.take() {
            log::debug!("{}: closed {}", self.who(), f.path().display());
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), HandlerError> {
        let total = self.buf.len() as u64;
        let limit = self.rotate_bytes;
        if let Some(f) = &self.current {
            let full = limit > 0 && f.len() > 0 && f.len() + total > limit;
            if full || self.expired(f) {
                self.finish()?;
            }
        }
        if limit == 0 || total <= limit {
            self.append(0..self.buf.len())?;
            return self.sync();
        }
        // Larger than a whole file: split at line boundaries, filling each file as far as
        // the limit allows (a single longer line gets a file of its own).
        let ends = std::mem::take(&mut self.ends);
        let result = (|| {
            let mut start = 0;
            let mut last = 0;
            for &end in &ends {
                if (end - start) as u64 > limit && last > start {
                    self.append(start..last)?;
                    self.finish()?;
                    start = last;
                }
                last = end;
            }
            self.append(start..last)?;
            self.sync()
        })();
        self.ends = ends;
        result
    }
}

impl Handler for FileHandler {
    fn process(&mut self, lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        self.activate(lease);
        self.buf.clear();
        self.ends.clear();
        for item in items {
            let application = self.lease.as_ref().map_or("", |l| &*l.application);
            if let Err(e) = item.write_json_in(application, &self.shard_id, &mut self.buf) {
                return Err(HandlerError::batch(format!(
                    "encoding an item for {}: {e}",
                    self.pattern()
                ))
                .into());
            }
            self.buf.push(b'\n');
            self.ends.push(self.buf.len());
        }
        let result = self.write_batch();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        result.map_err(BatchError::Batch)
    }

    fn flush(&mut self) -> Result<(), HandlerError> {
        let mut result = Ok(());
        for lease in self.leases() {
            self.activate(&lease);
            if let Some(f) = &self.current {
                if self.expired(f) {
                    result = result.and(self.finish());
                }
            }
        }
        result
    }

    fn close(&mut self) -> Result<(), HandlerError> {
        let mut result = Ok(());
        for lease in self.leases() {
            self.activate(&lease);
            result = result.and(self.finish());
        }
        result
    }

    fn end_lease(&mut self, lease: &LeaseId) -> Result<(), HandlerError> {
        if !self.leases().contains(lease) {
            return Ok(());
        }
        self.activate(lease);
        let result = self.finish();
        self.lease = None;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps_of_known_dates() {
        let cases = [
            (0, "19700101T000000.000Z"),
            (999, "19700101T000000.999Z"),
            (86_399_999, "19700101T235959.999Z"),
            (951_782_400_000, "20000229T000000.000Z"), // leap day of a /400 year
            (951_868_800_000, "20000301T000000.000Z"),
            (1_000_000_000_123, "20010909T014640.123Z"),
            (1_709_164_800_000, "20240229T000000.000Z"),
            (1_735_689_599_999, "20241231T235959.999Z"),
            (1_735_689_600_000, "20250101T000000.000Z"),
            (4_107_542_400_000, "21000301T000000.000Z"), // 2100 is no leap year
            (4_107_456_000_000, "21000228T000000.000Z"),
            (253_402_300_799_999, "99991231T235959.999Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(utc_timestamp(ms), text, "{ms}");
            assert_eq!(parse_utc_timestamp(text), Some(ms), "{text}");
        }
    }

    #[test]
    fn civil_days_round_trip() {
        let mut prev = civil_from_days(-1);
        for days in 0..1_000_000i64 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            // Consecutive days: next day of the month, or the 1st of the next month.
            assert!(
                (y, m, d) > prev && (d == prev.2 + 1 || d == 1),
                "{prev:?} → {:?}",
                (y, m, d)
            );
            prev = (y, m, d);
        }
    }

    #[test]
    fn names_round_trip_and_sort_by_time_then_counter() {
        let n = ArchiveName {
            shard_id: "shardId-000000000007".into(),
            unix_ms: 1_740_830_701_042,
            seq: 3,
            worker: 12,
        };
        assert_eq!(
            n.file_name(),
            "shardId-000000000007.20250301T120501.042Z.0003.w12.jsonl"
        );
        assert_eq!(ArchiveName::parse(&n.file_name()), Some(n.clone()));
        for bad in [
            "shardId-000000000007.worker-0.jsonl",
            "x.20250301T120501.042Z.003.w1.jsonl",
            "x.20250301T120501.042Z.0003.w.jsonl",
            ".20250301T120501.042Z.0003.w1.jsonl",
            "x.20251301T120501.042Z.0003.w1.jsonl",
        ] {
            assert_eq!(ArchiveName::parse(bad), None, "{bad}");
        }
        let mut clock = NameClock::default();
        let mut names = Vec::new();
        for now in [5, 5, 5, 4, 7, 7, 1] {
            let (ms, seq) = clock.next(now);
            names.push(
                ArchiveName {
                    unix_ms: 1_740_830_701_000 + ms,
                    seq,
                    ..n.clone()
                }
                .file_name(),
            );
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn clock_rolls_over_into_the_next_millisecond() {
        let mut clock = NameClock::default();
        clock.advance_past((10, MAX_SEQ - 1));
        assert_eq!(clock.next(3), (10, MAX_SEQ));
        assert_eq!(clock.next(3), (11, 0));
        assert_eq!(clock.next(20), (20, 0));
    }

    #[test]
    fn odd_shard_ids_stay_in_the_directory() {
        assert_eq!(safe_shard("shardId-000000000001"), "shardId-000000000001");
        assert_eq!(safe_shard("../a/b"), "_.._a_b");
        assert_eq!(safe_shard(""), "_");
    }
}
