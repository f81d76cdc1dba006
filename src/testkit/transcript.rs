//! The transcript format, one player for it, and the daemon's side of one action.
//!
//! A transcript (`tests/transcripts/*.jsonl`) is one JSON object a line: `start` (the
//! processor's arguments), `d2p` (a daemon line to send), `p2d` (the processor line
//! expected next), `sleep`, `d_eof` (the daemon closes stdin), `exit` (the expected exit
//! code) and `p_err` (text the processor's stderr must contain). [`play`] plays one against
//! a [`Peer`]: the built binary through real pipes (the tests' `Proc`), or the production
//! loop in this process ([`crate::testkit::in_process::InProcess`]). Both run in real time:
//! no transcript needs virtual time, so there is no player that drives the bare session.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::codec::message::{Action, ProcessorMessage, Record};
use crate::testkit::daemon::CheckpointModel;
use crate::testkit::encode;

/// One transcript entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// The processor's command-line arguments.
    Start(Vec<String>),
    /// A line the daemon sends.
    D2p(String),
    /// The processor line expected next.
    P2d(String),
    /// A pause, in milliseconds.
    Sleep(u64),
    /// The daemon closes the processor's stdin.
    DEof,
    /// The processor's expected exit code.
    Exit(i32),
    /// Text the processor's stderr must contain.
    PErr(String),
}

/// Reads a transcript file.
///
/// # Panics
/// If the file cannot be read or is not a transcript.
pub fn load(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_entry(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

fn parse_entry(l: &str) -> Result<Entry, String> {
    let v: serde_json::Value = serde_json::from_str(l).map_err(|e| e.to_string())?;
    let str_field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no string {k:?}"))
    };
    let num_field = |k: &str| v[k].as_i64().ok_or_else(|| format!("no number {k:?}"));
    Ok(match str_field("dir")?.as_str() {
        "start" => Entry::Start(
            v["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "d2p" => Entry::D2p(str_field("line")?),
        "p2d" => Entry::P2d(str_field("line")?),
        "sleep" => Entry::Sleep(num_field("ms")? as u64),
        "d_eof" => Entry::DEof,
        "exit" => Entry::Exit(num_field("rc")? as i32),
        "p_err" => Entry::PErr(str_field("contains")?),
        other => return Err(format!("unknown transcript entry {other}")),
    })
}

/// The processor arguments a transcript starts with (`--handler discard` if it names none).
pub fn start_args(entries: &[Entry]) -> Vec<String> {
    match entries.first() {
        Some(Entry::Start(a)) => a.clone(),
        _ => vec!["--handler".into(), "discard".into()],
    }
}

/// Compares a processor line with the expected one: same JSON value, ASCII, and accepted
/// by the strict (daemon-like) decoder.
pub fn check_p2d(got: &str, expected: &str) -> Result<(), String> {
    if !got.is_ascii() {
        return Err(format!("non-ASCII protocol line: {got}"));
    }
    ProcessorMessage::decode(got.as_bytes())
        .map_err(|e| format!("the daemon would skip {got:?}: {e}"))?;
    let g: serde_json::Value = serde_json::from_str(got).map_err(|e| format!("{got:?}: {e}"))?;
    let x: serde_json::Value =
        serde_json::from_str(expected).map_err(|e| format!("expected {expected:?}: {e}"))?;
    if g != x {
        return Err(format!("expected {expected}\n     got {got}"));
    }
    Ok(())
}

/// A record processor the daemon talks to: a child process, or the loop in this process.
pub trait Peer {
    /// Writes one daemon line (a newline is added). A processor that already exited makes
    /// this a no-op; the exit entry then checks why.
    fn send(&mut self, line: &str);
    /// The next non-blank protocol line, waiting at most `timeout`.
    fn recv(&mut self, timeout: Duration) -> Result<String, String>;
    /// Closes the processor's stdin (EOF).
    fn close_input(&mut self);
    /// Waits at most `timeout` for the processor to end; its exit code.
    fn wait(&mut self, timeout: Duration) -> Result<i32, String>;
    /// What the processor wrote to stderr so far (all of it once it has ended), or `None`
    /// if this peer cannot see its log lines.
    fn stderr_text(&mut self) -> Option<String>;
}

/// Plays `entries` against `peer` (already started with [`start_args`]).
pub fn play(entries: &[Entry], peer: &mut dyn Peer) -> Result<(), String> {
    let mut exited = false;
    for (i, entry) in entries.iter().enumerate() {
        let ctx = |m: String| format!("entry {}: {m}", i + 1);
        match entry {
            Entry::Start(_) => {}
            Entry::D2p(line) => peer.send(line),
            Entry::P2d(expected) => {
                let got = peer.recv(Duration::from_secs(10)).map_err(ctx)?;
                check_p2d(&got, expected).map_err(|e| {
                    ctx(format!(
                        "{e}\nstderr:\n{}",
                        peer.stderr_text().unwrap_or_default()
                    ))
                })?;
            }
            Entry::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Entry::DEof => peer.close_input(),
            Entry::Exit(rc) => {
                let got = peer.wait(Duration::from_secs(5)).map_err(ctx)?;
                exited = true;
                if got != *rc {
                    return Err(ctx(format!(
                        "exit code {got}, expected {rc}; stderr:\n{}",
                        peer.stderr_text().unwrap_or_default()
                    )));
                }
            }
            Entry::PErr(text) => {
                // Give a child's stderr reader a moment to catch up with its exit.
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    match peer.stderr_text() {
                        None => break,
                        Some(s) if s.contains(text.as_str()) => break,
                        Some(s) if Instant::now() >= deadline => {
                            return Err(ctx(format!("stderr does not mention {text:?}:\n{s}")))
                        }
                        Some(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        }
    }
    if !exited {
        return Err("transcript has no exit entry".into());
    }
    if let Ok(extra) = peer.recv(Duration::from_millis(100)) {
        return Err(format!("unexpected extra output {extra}"));
    }
    Ok(())
}

/// Drives `p` through one action as the daemon does: sends `line`, answers checkpoints with
/// `model`, and returns the checkpoint requests seen before the status (which must answer
/// `action`). A checkpoint during `initialize` or `leaseLost`, or one the model refuses, is
/// an error.
pub fn run_action<P: Peer + ?Sized>(
    p: &mut P,
    model: &mut CheckpointModel,
    line: &str,
    action: Action,
) -> Result<Vec<ProcessorMessage>, String> {
    p.send(line);
    let mut requests = Vec::new();
    loop {
        let got = p.recv(Duration::from_secs(20))?;
        let msg = ProcessorMessage::decode(got.as_bytes()).map_err(|e| format!("{got}: {e}"))?;
        match &msg {
            ProcessorMessage::Status { response_for } => {
                if *response_for != action {
                    return Err(format!("status for {response_for}, expected {action}"));
                }
                return Ok(requests);
            }
            ProcessorMessage::Checkpoint { .. } => {
                if matches!(action, Action::Initialize | Action::LeaseLost) {
                    return Err(format!("checkpoint during {action}: {got}"));
                }
                let (reply, error) = model.answer(&msg);
                if let Some(e) = error {
                    return Err(format!("the daemon model rejected {got}: {e}"));
                }
                requests.push(msg);
                p.send(&reply);
            }
        }
    }
}

/// Drives `p` through `shutdownRequested` (see [`run_action`]).
pub fn shutdown_requested<P: Peer + ?Sized>(
    p: &mut P,
    model: &mut CheckpointModel,
) -> Result<Vec<ProcessorMessage>, String> {
    run_action(
        p,
        model,
        encode::SHUTDOWN_REQUESTED,
        Action::ShutdownRequested,
    )
}

/// Drives `p` through `leaseLost` (see [`run_action`]).
pub fn lease_lost<P: Peer + ?Sized>(
    p: &mut P,
    model: &mut CheckpointModel,
) -> Result<Vec<ProcessorMessage>, String> {
    run_action(p, model, encode::LEASE_LOST, Action::LeaseLost)
}

/// Notes `records` as delivered in `model`, then drives `p` through their
/// `processRecords` line (millisBehindLatest 0; see [`run_action`]).
pub fn process_records<P: Peer + ?Sized>(
    p: &mut P,
    model: &mut CheckpointModel,
    records: Vec<Record>,
) -> Result<Vec<ProcessorMessage>, String> {
    model.deliver_all(&records);
    let l = encode::line(&encode::process_records(records, Some(0)));
    run_action(p, model, &l, Action::ProcessRecords)
}

/// Initializes `p` for [`encode::SHARD7`] at TRIM_HORIZON; returns the daemon model, told so.
pub fn initialize<P: Peer + ?Sized>(p: &mut P) -> Result<CheckpointModel, String> {
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(p, &mut model, &encode::init_line(), Action::Initialize)?;
    Ok(model)
}
