//! Benchmark baseline: the cheapest correct record processor ("the protocol limit").
//!
//! It answers every daemon line with `{"action":"status","responseFor":X}` without parsing
//! JSON: the action is found by a substring scan for the first `"action"` key, which the
//! daemon's Jackson mapper writes first (it is the type id). At `shardEnded` it sends a null
//! checkpoint (SHARD_END) and reads the reply before its status; at `shutdownRequested` it
//! checkpoints nothing, so with `mld_sim --end shutdown` the final-checkpoint check fails by
//! design: use the default `--end shard-end`. Single-threaded; one write and one flush per
//! message. Exits 0 at stdin EOF.

use std::io::{self, BufRead, BufReader, Write};
use std::process::ExitCode;

const SHARD_END_CHECKPOINT: &[u8] =
    b"{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null}\n";

/// The value of the first `"action"` key, found without parsing.
fn action_of(line: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"action\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &line[at..];
    let colon = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let rest = &rest[colon + 1..];
    let open = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
    if rest[open] != b'"' {
        return None;
    }
    let rest = &rest[open + 1..];
    let close = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..close])
}

fn run() -> io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    #[expect(clippy::disallowed_methods, reason = "stdout is its protocol")]
    let mut out = io::stdout().lock();
    let mut line = Vec::with_capacity(1 << 20);
    let mut msg = Vec::with_capacity(128);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let Some(action) = action_of(&line) else {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Err(io::Error::other(format!(
                "no action in line starting {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )));
        };
        if action == b"shardEnded" {
            out.write_all(SHARD_END_CHECKPOINT)?;
            out.flush()?;
            let mut reply = Vec::new();
            if input.read_until(b'\n', &mut reply)? == 0 {
                return Ok(());
            }
        }
        msg.clear();
        msg.extend_from_slice(b"{\"action\":\"status\",\"responseFor\":\"");
        msg.extend_from_slice(action);
        msg.extend_from_slice(b"\"}\n");
        out.write_all(&msg)?;
        out.flush()?;
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("null_processor: {e}");
            ExitCode::FAILURE
        }
    }
}
