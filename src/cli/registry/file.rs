//! `--handler file`: a durable, rotated archive of one JSON line per item under `--output`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{General, HandlerDescriptor, HandlerGroup, Need};
use crate::cli::error::ConfigError;
use crate::cli::units::{parse_bytes_in, parse_seconds_in};
use crate::handler::file::{FileFactory, FileOptions};
use crate::handler::HandlerFactory;

/// The file handler's flags.
#[derive(Clone, Debug, clap::Args)]
pub struct FileArgs {
    /// Output directory of the file handler.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// File handler: start a new file at this size (a size: 256MiB, 1GiB; plain bytes;
    /// 0: never; else 1KiB..=1TiB).
    #[arg(long, default_value = "256MiB", value_name = "SIZE", value_parser = parse_rotate_bytes)]
    pub rotate_bytes: u64,
    /// File handler: start a new file after this long (a duration: 1h, 15m; a plain number
    /// is seconds; 0: never; else 1s..=7d).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_rotate_secs)]
    pub rotate_secs: Duration,
}

fn parse_rotate_bytes(s: &str) -> Result<u64, String> {
    parse_bytes_in(s, 1 << 10, 1 << 40, true)
}
fn parse_rotate_secs(s: &str) -> Result<Duration, String> {
    parse_seconds_in(s, 1.0, 604_800.0, true)
}

impl HandlerGroup for FileArgs {
    fn check(&self, _: &General<'_>) -> Result<(), ConfigError> {
        match self.output {
            None => Err(ConfigError::NoOutput),
            Some(_) => Ok(()),
        }
    }

    fn needs(&self, _: &General<'_>) -> Vec<Need> {
        self.output
            .iter()
            .map(|path| Need::WritableDir {
                flag: "output",
                path: path.clone(),
            })
            .collect()
    }

    fn build(&self, _: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        Ok(Arc::new(FileFactory::new(FileOptions {
            dir: self.output.clone().ok_or(ConfigError::NoOutput)?,
            rotate_bytes: self.rotate_bytes,
            rotate_after: self.rotate_secs,
        })))
    }
}

/// The file handler.
pub fn descriptor() -> HandlerDescriptor {
    HandlerDescriptor::new::<FileArgs>(
        "file",
        "Append one JSON line per item under --output (a durable, rotated archive)",
    )
    .with_heading("File handler")
}
