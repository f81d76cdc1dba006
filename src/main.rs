//! The `rsmld` binary: parse flags, set up the process, run the protocol loop, exit.

use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;

use rsmld::config::{Cli, Command, KplCommand};

static SHARD: OnceLock<String> = OnceLock::new();

fn main() -> ExitCode {
    let cli = match Cli::parse_with_properties(std::env::args().collect()) {
        Ok(cli) => cli,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => {
                eprintln!("rsmld[-] ERROR {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Always visible, whatever RUST_LOG says: this is why the process stops.
            eprintln!("{} ERROR {e:#}", prefix());
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Kpl { command }) => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            match command {
                KplCommand::Decode => rsmld::kpl::cli::decode_lines(stdin, stdout)?,
                KplCommand::Encode { max_bytes } => {
                    rsmld::kpl::cli::encode_lines(stdin, stdout, max_bytes)?
                }
            }
            Ok(())
        }
        None => {
            let mut config = cli.run.into_driver_config()?;
            rsmld::sys::ignore_termination_signals();
            let protocol_out = rsmld::sys::guard_stdout()?;
            config.on_shard = Some(Box::new(|shard| {
                let _ = SHARD.set(shard.to_owned());
            }));
            let stats = rsmld::driver::run(config, std::io::stdin(), protocol_out)?;
            log::info!(
                "exiting: {} records, {} items dispatched, {} completed, {} checkpoints",
                stats.records,
                stats.items,
                stats.completed,
                stats.checkpoints
            );
            Ok(())
        }
    }
}

/// `rsmld[shardId-000000000001]`: the daemon logs every stderr line of every child at
/// ERROR, so each of our lines says which child it is and its real level.
fn prefix() -> String {
    format!("rsmld[{}]", SHARD.get().map_or("-", String::as_str))
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| writeln!(buf, "{} {} {}", prefix(), record.level(), record.args()))
        .target(env_logger::Target::Stderr)
        .init();
}
