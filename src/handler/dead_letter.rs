//! The dead-letter sink of `--on-error skip`: failed items with their error, as JSON lines.
//!
//! A dead-lettered item counts as done — a checkpoint may cover it — so its line must be
//! as durable, and as surely at the path a user will read, as an archive line. The sink
//! is built on the same code as the file handler ([`super::durable`]): the directory is
//! held open and created durably, each worker creates its files in it with
//! `O_CREAT|O_EXCL`, every write is `fdatasync`ed and then checked to be in the file at
//! its path, in the directory at `--dead-letter` (same device and inode, same file
//! system), and a file truncated by someone else is left to them. Any failure fails the
//! batch: the items are not done, and rsmld stops (exit 1) rather than count them.
//!
//! # Names
//!
//! ```text
//! <shardId>.<yyyymmddThhmmss.mmmZ>.<nnnn>.w<k>.deadletter.jsonl
//! ```
//!
//! with the shard id made safe for a file name exactly as the archive makes it (an
//! `initialize` with `../x` or `/etc` as its shard id stays in the directory), the UTC
//! time of creation, a counter bumped when the name exists, and the worker index. Each
//! run starts fresh files and never appends to an existing one: a file that a crash or a
//! write error left with a torn last line is never continued (the next record would be
//! glued to it), and a file that reached a size limit is not reopened by every restart.
//! After a write error the file is cut back to its last synced length and the next
//! dead letter starts a new file.

use std::time::{SystemTime, UNIX_EPOCH};

use super::durable::{DurableDir, DurableFile};
use super::file::{safe_shard, utc_timestamp};

/// How many existing names a new file may run into before creation gives up.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// What to do about EFBIG, in the message.
const LIMIT_HINT: &str = "raise the limit for rsmld (a restart writes a new file)";

/// One worker's dead-letter files.
pub(crate) struct DeadLetter {
    dir: DurableDir,
    shard: String,
    worker: usize,
    current: Option<DurableFile>,
}

impl DeadLetter {
    /// Holds the dead-letter directory `dir` open (creating it durably if missing) for
    /// worker `worker` of shard `shard_id`. No file is created before the first item.
    pub(crate) fn open(
        dir: &std::path::Path,
        shard_id: &str,
        worker: usize,
    ) -> Result<DeadLetter, String> {
        Ok(DeadLetter {
            dir: DurableDir::open(dir, "dead-letter directory")?,
            shard: safe_shard(shard_id),
            worker,
            current: None,
        })
    }

    fn who(&self) -> String {
        format!("worker {}", self.worker)
    }

    /// Appends `lines` (whole JSON lines) durably: `Ok` only when they are on disk in the
    /// file at its path under the dead-letter directory.
    pub(crate) fn append(&mut self, lines: &[u8]) -> Result<(), String> {
        let who = self.who();
        let mut f = match self.current.take() {
            Some(f) => match f.check_intact() {
                Ok(()) => f,
                Err(why) => {
                    log::warn!("{who}: {why}; leaving it and starting a new dead-letter file");
                    self.create()?
                }
            },
            None => self.create()?,
        };
        if let Err(e) = f
            .write(lines, LIMIT_HINT)
            .and_then(|()| f.sync().map(|_| ()))
        {
            f.abandon(&who);
            return Err(e);
        }
        self.dir.verify(&f)?;
        self.current = Some(f);
        Ok(())
    }

    fn create(&mut self) -> Result<DurableFile, String> {
        let pattern = format!(
            "{}/{}.*.w{}.deadletter.jsonl",
            self.dir.path().display(),
            self.shard,
            self.worker
        );
        self.dir
            .ensure(&self.who())
            .map_err(|why| format!("cannot create the next {pattern}: {why}"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let stamp = utc_timestamp(now);
        for seq in 0..MAX_NAME_ATTEMPTS {
            let name = format!(
                "{}.{stamp}.{seq:04}.w{}.deadletter.jsonl",
                self.shard, self.worker
            );
            if let Some(f) = self.dir.create(&name)? {
                log::info!("{}: dead letters go to {}", self.who(), f.path().display());
                return Ok(f);
            }
        }
        Err(format!(
            "cannot create the next {pattern}: {MAX_NAME_ATTEMPTS} names in a row exist already"
        ))
    }
}
