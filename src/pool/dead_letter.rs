//! The dead-letter sink of `--on-error skip`: failed items with their error, as JSON lines.
//!
//! A dead-lettered item counts as done — a checkpoint may cover it — so its line must be
//! as durable, and as surely at the path a user will read, as an archive line. The sink
//! is built on the same code as the file handler ([`crate::handler::durable`]): the directory is
//! held open and created durably, each worker creates its files (one set per lease, at
//! the lease's first dead letter on that worker) in it with
//! `O_CREAT|O_EXCL`, every write is `fdatasync`ed and then checked to be in the file at
//! its path, in the directory at `--dead-letter` (same device and inode, same file
//! system), and a file truncated by someone else is left to them. Any failure fails the
//! batch: the items are not done, and their lease fails (exit 1 in child mode) rather
//! than count them.
//!
//! # Names
//!
//! ```text
//! <shardId>.<yyyymmddThhmmss.mmmZ>.<nnnn>.w<k>.deadletter.jsonl
//! ```
//!
//! with the shard id made safe for a file name exactly as the archive makes it (an
//! `initialize` with `../x` or `/etc` as its shard id stays in the directory; a lease of a
//! named application, in `rsmld serve`, puts `<application>.` first), the UTC
//! time of creation, a counter bumped when the name exists, and the worker index. Each
//! run starts fresh files and never appends to an existing one: a file that a crash or a
//! write error left with a torn last line is never continued (the next record would be
//! glued to it), and a file that reached a size limit is not reopened by every restart.
//! After a write error the file is cut back to its last synced length and the next
//! dead letter starts a new file.

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use super::LeaseState;
use crate::handler::durable::{DurableDir, DurableFile};
use crate::handler::file::{name_prefix, utc_timestamp};

/// How many existing names a new file may run into before creation gives up.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// What to do about EFBIG, in the message.
const LIMIT_HINT: &str = "raise the limit for rsmld (a restart writes a new file)";

/// One worker's dead-letter files: the directory held open since start-up, and per lease
/// the file its dead letters go to.
pub(crate) struct DeadLetter {
    dir: DurableDir,
    worker: usize,
    /// Per lease that dead-lettered on this worker: its shard made safe for names, and
    /// its current file.
    leases: Vec<(Arc<LeaseState>, String, Option<DurableFile>)>,
}

impl DeadLetter {
    /// Holds the dead-letter directory `dir` open (creating it durably if missing) for
    /// worker `worker`. No file is created before a lease's first item.
    pub(crate) fn open(dir: &std::path::Path, worker: usize) -> Result<DeadLetter, String> {
        Ok(DeadLetter {
            dir: DurableDir::open(dir, "dead-letter directory")?,
            worker,
            leases: Vec::new(),
        })
    }

    fn who(&self) -> String {
        format!("worker {}", self.worker)
    }

    /// Forgets the files of leases that ended (their last line is durable already).
    pub(crate) fn forget_ended(&mut self) {
        self.leases.retain(|(lease, _, _)| !lease.ended());
    }

    /// Appends `lines` (whole JSON lines) of `lease` durably: `Ok` only when they are on
    /// disk in the lease's file at its path under the dead-letter directory.
    pub(crate) fn append(&mut self, lease: &Arc<LeaseState>, lines: &[u8]) -> Result<(), String> {
        let who = self.who();
        let at = match self
            .leases
            .iter()
            .position(|(l, _, _)| Arc::ptr_eq(l, lease))
        {
            Some(at) => at,
            None => {
                self.leases
                    .push((lease.clone(), name_prefix(&lease.id), None));
                self.leases.len() - 1
            }
        };
        let shard = self.leases[at].1.clone();
        let mut f = match self.leases[at].2.take() {
            Some(f) => match f.check_intact() {
                Ok(()) => f,
                Err(why) => {
                    log::warn!("{who}: {why}; leaving it and starting a new dead-letter file");
                    self.create(&shard)?
                }
            },
            None => self.create(&shard)?,
        };
        if let Err(e) = f
            .write(lines, LIMIT_HINT)
            .and_then(|()| f.sync().map(|_| ()))
        {
            f.abandon(&who);
            return Err(e);
        }
        self.dir.verify(&f)?;
        self.leases[at].2 = Some(f);
        Ok(())
    }

    fn create(&mut self, shard: &str) -> Result<DurableFile, String> {
        let pattern = format!(
            "{}/{shard}.*.w{}.deadletter.jsonl",
            self.dir.path().display(),
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
            let name = format!("{shard}.{stamp}.{seq:04}.w{}.deadletter.jsonl", self.worker);
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
