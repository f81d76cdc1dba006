//! `rsmld attach`'s command line, here so that `rsmld check` can read an
//! `executableName = rsmld attach ...` line with the parser attach itself uses.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// How long attach waits for a server by default.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(10);

/// `rsmld attach` flags.
#[derive(Debug, Parser)]
#[command(name = "rsmld attach", about = "Hands this lease to `rsmld serve`.")]
pub struct AttachArgs {
    /// The server's socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// The daemon's properties file: its `applicationName` names the lease's application.
    #[arg(long)]
    pub properties: Option<PathBuf>,
    /// How long to retry while no server answers (a duration: 10s, 500ms; 0s..=1h).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_retry_for)]
    pub retry_for: Duration,
}

fn parse_retry_for(s: &str) -> Result<Duration, String> {
    super::units::parse_seconds_in(s, 0.0, 3_600.0, true)
}
