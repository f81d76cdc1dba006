//! The `file` handler: appends one item JSON line per item to
//! `DIR/<shardId>.worker-<k>.jsonl`, one file per shard and worker (so workers never
//! share a file and per-key order is visible in the file), and flushes each batch to the
//! file before reporting it complete.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
use crate::item::Item;

/// Settings of the file archive.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// The output directory (created if missing).
    pub dir: PathBuf,
    /// Start a new file when the current one reaches this size (0: never).
    pub rotate_bytes: u64,
    /// Start a new file when the current one is this old (zero: never).
    pub rotate_after: std::time::Duration,
}

impl FileOptions {
    /// Writes under `dir`, no rotation.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileOptions {
            dir: dir.into(),
            rotate_bytes: 0,
            rotate_after: std::time::Duration::ZERO,
        }
    }
}

/// Makes file handlers writing under one directory.
#[derive(Clone, Debug)]
pub struct FileFactory {
    dir: PathBuf,
}

impl FileFactory {
    /// Writes as `options` say.
    pub fn new(options: FileOptions) -> Self {
        FileFactory { dir: options.dir }
    }

    /// The file a worker of a shard writes.
    pub fn path_for(dir: &Path, shard_id: &str, worker: usize) -> PathBuf {
        dir.join(format!("{shard_id}.worker-{worker}.jsonl"))
    }
}

impl HandlerFactory for FileFactory {
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        fs::create_dir_all(&self.dir).map_err(|e| {
            HandlerError::batch(format!(
                "cannot create output directory {}: {e}",
                self.dir.display()
            ))
        })?;
        let path = Self::path_for(&self.dir, &ctx.shard_id, ctx.worker);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| HandlerError::batch(format!("cannot open {}: {e}", path.display())))?;
        Ok(Box::new(FileHandler {
            out: BufWriter::with_capacity(256 * 1024, file),
            path,
        }))
    }
}

struct FileHandler {
    out: BufWriter<File>,
    path: PathBuf,
}

impl Handler for FileHandler {
    fn process(&mut self, items: &[Item]) -> Result<(), BatchError> {
        let fail = |e: std::io::Error| {
            HandlerError::batch(format!("writing {}: {e}", self.path.display()))
        };
        for item in items {
            item.write_json(&mut self.out).map_err(fail)?;
            self.out.write_all(b"\n").map_err(fail)?;
        }
        // The batch is complete only once it has left our buffer.
        self.out.flush().map_err(fail)?;
        Ok(())
    }

    fn close(&mut self) -> Result<(), HandlerError> {
        self.out
            .flush()
            .map_err(|e| HandlerError::batch(format!("flushing {}: {e}", self.path.display())))
    }
}
