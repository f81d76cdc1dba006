//! Test support: the transcript format and two players for it — one drives the pure
//! session in-process (virtual time, items completed synchronously), the other drives the
//! built binary through real pipes — plus a small daemon model that answers checkpoints
//! the way the Java daemon does (range checks, echo, SHARD_END).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage};
use rsmld::config::Cli;
use rsmld::handler::{Handler, WorkerContext};
use rsmld::pipeline::item::ItemBlock;
use rsmld::pipeline::mapper::Mapper;
use rsmld::protocol::budget::PartBudget;
use rsmld::protocol::sequence::{Esn, SequenceNumber};
use rsmld::protocol::session::{Next, Output, Session};
use rsmld::protocol::tracker::RecordId;
use rsmld::telemetry::LeaseId;

use clap::Parser;

/// One transcript entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Start(Vec<String>),
    D2p(String),
    P2d(String),
    Sleep(u64),
    DEof,
    Exit(i32),
    PErr(String),
}

pub fn load(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let line = || v["line"].as_str().unwrap().to_owned();
            match v["dir"].as_str().unwrap() {
                "start" => Entry::Start(
                    v["args"]
                        .as_array()
                        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default(),
                ),
                "d2p" => Entry::D2p(line()),
                "p2d" => Entry::P2d(line()),
                "sleep" => Entry::Sleep(v["ms"].as_u64().unwrap()),
                "d_eof" => Entry::DEof,
                "exit" => Entry::Exit(v["rc"].as_i64().unwrap() as i32),
                "p_err" => Entry::PErr(v["contains"].as_str().unwrap().to_owned()),
                other => panic!("unknown transcript entry {other}"),
            }
        })
        .collect()
}

pub fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

pub fn rsmld_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rsmld"))
}

/// A built example (cargo test builds examples next to the test binaries' target dir).
pub fn example_bin(name: &str) -> PathBuf {
    let bin = rsmld_bin();
    let path = bin.parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "example {name} not built at {}",
        path.display()
    );
    path
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
    let x: serde_json::Value = serde_json::from_str(expected).unwrap();
    if g != x {
        return Err(format!("expected {expected}\n     got {got}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- in-process player

/// Plays a transcript against the pure session: virtual time, items completed as soon as
/// they are dispatched by one handler per worker (created by the configured factory).
pub fn play_session(entries: &[Entry]) -> Result<(), String> {
    let args = match entries.first() {
        Some(Entry::Start(a)) => a.clone(),
        _ => vec!["--handler".into(), "discard".into()],
    };
    let cli = Cli::try_parse_from(std::iter::once("rsmld".to_owned()).chain(args))
        .map_err(|e| e.to_string())?;
    let config = cli.run.into_driver_config().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut now = start;
    let mut session = Session::new(config.session.clone(), now);
    let mut handlers: Vec<Box<dyn Handler>> = Vec::new();
    let mut sent: VecDeque<String> = VecDeque::new();
    let mut error: Option<String> = None;
    let mut exited = false;

    // Runs dispatched blocks on the handlers at once and feeds the completions back.
    let run = |session: &mut Session,
               now: &mut Instant,
               handlers: &mut Vec<Box<dyn Handler>>,
               blocks: Vec<(Option<usize>, ItemBlock)>|
     -> Result<(), String> {
        if blocks.is_empty() {
            return Ok(());
        }
        if handlers.is_empty() {
            for w in 0..config.pool.workers {
                let ctx = WorkerContext::new(w, config.pool.workers)
                    .for_lease(LeaseId::new("", session.shard_id()));
                handlers.push(config.handlers.create(&ctx).map_err(|e| e.to_string())?);
            }
        }
        let mut done: Vec<RecordId> = Vec::new();
        for item in blocks.iter().flat_map(|(_, b)| b.iter()) {
            let w = rsmld::pipeline::partition::partition(
                item.partition_key.as_bytes(),
                handlers.len(),
            );
            handlers[w]
                .process(
                    &LeaseId::new("", session.shard_id()),
                    std::slice::from_ref(&item),
                )
                .map_err(|e| e.to_string())?;
            done.push(item.record);
        }
        session
            .handle_completed(&done, *now)
            .map_err(|e| e.to_string())
    };
    let pump = |session: &mut Session,
                now: &mut Instant,
                sent: &mut VecDeque<String>|
     -> Result<(), String> {
        loop {
            while let Some(out) = session.poll_output() {
                match out {
                    Output::Send(m) => sent.push_back(String::from_utf8(m.encode()).unwrap()),
                    Output::Event(_) | Output::Abandon | Output::Flush => {}
                }
            }
            match session.next() {
                Next::WorkUntil(t) => {
                    *now = (*now).max(t);
                    session.handle_timeout(*now).map_err(|e| e.to_string())?;
                }
                Next::Work => return Err("session waits for work that was never dispatched".into()),
                Next::Message | Next::Exit => return Ok(()),
            }
        }
    };
    // One part per line, as the old pure session split a whole batch at once.
    let unbounded = PartBudget {
        items: usize::MAX,
        bytes: usize::MAX,
    };

    for (i, entry) in entries.iter().enumerate() {
        let ctx = |m: String| format!("entry {}: {m}", i + 1);
        match entry {
            Entry::Start(_) => {}
            Entry::D2p(line) => {
                if error.is_some() {
                    continue;
                }
                let trimmed = line.trim_end_matches(['\r', '\n']);
                if trimmed.trim().is_empty() {
                    continue;
                }
                let r = DaemonMessage::decode(trimmed.as_bytes())
                    .map_err(|e| e.to_string())
                    .and_then(|m| {
                        let shard = session.shard_id().to_owned();
                        let mapper =
                            Mapper::new(&config.splitter, &shard, config.pool.workers, unbounded);
                        rsmld::lease::feed(&mut session, &mapper, m, 0, now)
                            .map_err(|e| e.to_string())
                    })
                    .and_then(|blocks| run(&mut session, &mut now, &mut handlers, blocks))
                    .and_then(|()| pump(&mut session, &mut now, &mut sent));
                if let Err(e) = r {
                    error = Some(e);
                }
            }
            Entry::P2d(expected) => {
                let got = sent.pop_front().ok_or_else(|| {
                    ctx(format!(
                        "expected {expected}, the session sent nothing (error: {error:?})"
                    ))
                })?;
                check_p2d(&got, expected).map_err(ctx)?;
            }
            Entry::Sleep(ms) => now += Duration::from_millis(*ms),
            Entry::DEof => {
                session.handle_eof();
                if session.next() != Next::Exit {
                    return Err(ctx("session does not exit on EOF".into()));
                }
            }
            Entry::Exit(rc) => {
                exited = true;
                match (rc, &error) {
                    (0, Some(e)) => return Err(ctx(format!("expected success, got error: {e}"))),
                    (0, None) => {}
                    (_, None) => return Err(ctx(format!("expected exit {rc}, got no error"))),
                    (_, Some(_)) => {}
                }
            }
            Entry::PErr(_) => {} // stderr text is checked by the binary player
        }
    }
    if !exited {
        return Err("transcript has no exit entry".into());
    }
    if let Some(extra) = sent.pop_front() {
        return Err(format!("unexpected extra output {extra}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- binary player

/// A running rsmld with its pipes.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: mpsc::Receiver<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(args: &[String]) -> Proc {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[String], env: &[(&str, &str)]) -> Proc {
        Self::spawn_bin(&rsmld_bin(), args, env)
    }

    pub fn spawn_bin(bin: &Path, args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::from_command(cmd)
    }

    /// Spawns `cmd` with piped stdin/stdout/stderr and RUST_LOG=info (unless set, on `cmd`
    /// or in the test's own environment).
    pub fn from_command(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let on_cmd = cmd.get_envs().any(|(k, _)| k == "RUST_LOG");
        if !on_cmd && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().expect("spawn rsmld");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            // A child that already exited makes this fail; the exit entry then checks why.
            let _ = stdin
                .write_all(line.as_bytes())
                .and_then(|_| stdin.write_all(b"\n"))
                .and_then(|_| stdin.flush());
        }
    }

    /// The next non-blank protocol line.
    pub fn recv(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => return Ok(l),
                Err(_) => {
                    return Err(format!(
                        "no protocol line within {timeout:?}; stderr:\n{}",
                        self.stderr()
                    ))
                }
            }
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<i32, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                return Err(format!(
                    "rsmld did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the child wrote to stderr so far; once it has exited, all of it (the
    /// reader thread is joined, so nothing is still in flight).
    pub fn stderr(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
        }
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until stderr contains `text`; a live child's stderr is read by a
    /// thread that may lag behind its protocol output.
    pub fn stderr_contains(&mut self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.stderr().contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays a transcript against the built binary through real pipes and real time.
pub fn play_binary(entries: &[Entry]) -> Result<(), String> {
    let args = match entries.first() {
        Some(Entry::Start(a)) => a.clone(),
        _ => vec!["--handler".into(), "discard".into()],
    };
    let mut p = Proc::spawn(&args);
    let mut exited = false;
    for (i, entry) in entries.iter().enumerate() {
        let ctx = |m: String| format!("entry {}: {m}", i + 1);
        match entry {
            Entry::Start(_) => {}
            Entry::D2p(line) => p.send(line),
            Entry::P2d(expected) => {
                let got = p.recv(Duration::from_secs(10)).map_err(ctx)?;
                check_p2d(&got, expected)
                    .map_err(|e| ctx(format!("{e}\nstderr:\n{}", p.stderr())))?;
            }
            Entry::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Entry::DEof => p.close_stdin(),
            Entry::Exit(rc) => {
                let got = p.wait(Duration::from_secs(5)).map_err(ctx)?;
                exited = true;
                if got != *rc {
                    return Err(ctx(format!(
                        "exit code {got}, expected {rc}; stderr:\n{}",
                        p.stderr()
                    )));
                }
            }
            Entry::PErr(text) => {
                // Give the stderr reader a moment to catch up with a just-exited child.
                let deadline = Instant::now() + Duration::from_secs(2);
                while !p.stderr().contains(text.as_str()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if !p.stderr().contains(text.as_str()) {
                    return Err(ctx(format!(
                        "stderr does not mention {text:?}:\n{}",
                        p.stderr()
                    )));
                }
            }
        }
    }
    if !exited {
        return Err("transcript has no exit entry".into());
    }
    if let Ok(extra) = p.recv(Duration::from_millis(100)) {
        return Err(format!("unexpected extra output {extra}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- daemon model

/// Answers checkpoint requests the way the Java daemon does: a request must lie in
/// [last checkpoint, largest delivered]; null means "largest permitted" (SHARD_END during
/// shardEnded); the reply echoes the request.
#[derive(Debug, Default)]
pub struct CheckpointModel {
    pub last: Option<Esn>,
    pub largest: Option<Esn>,
    pub shard_ended: bool,
    pub stored: Vec<Esn>,
}

impl CheckpointModel {
    pub fn initialize(&mut self, seq: Option<&str>, sub: Option<i64>) {
        self.last = seq.map(|s| Esn::new(SequenceNumber::parse(s).unwrap(), sub.unwrap_or(0)));
    }

    /// Notes every record of a batch as delivered (see [`CheckpointModel::deliver`]).
    pub fn deliver_all(&mut self, records: &[rsmld::codec::message::Record]) {
        for r in records {
            self.deliver(r.esn());
        }
    }

    pub fn deliver(&mut self, esn: Esn) {
        if self.largest.as_ref().is_none_or(|l| esn > *l) {
            self.largest = Some(esn);
        }
    }

    /// Returns the reply line and whether it succeeded.
    pub fn answer(&mut self, request: &ProcessorMessage) -> (String, Option<&'static str>) {
        let ProcessorMessage::Checkpoint {
            sequence_number,
            sub_sequence_number,
        } = request
        else {
            panic!("not a checkpoint: {request:?}");
        };
        let target = match sequence_number {
            None if self.shard_ended => {
                Some(Esn::new(SequenceNumber::parse("SHARD_END").unwrap(), 0))
            }
            None => self.largest.clone(),
            Some(s) => Some(Esn::new(s.clone(), sub_sequence_number.unwrap_or(0))),
        };
        let upper = if self.shard_ended {
            Some(Esn::new(SequenceNumber::parse("SHARD_END").unwrap(), 0))
        } else {
            self.largest.clone()
        };
        let error = match &target {
            Some(t) if self.last.as_ref().is_some_and(|l| t < l) => {
                Some("IllegalArgumentException")
            }
            Some(t) if upper.as_ref().is_none_or(|u| t > u) => Some("IllegalArgumentException"),
            None => Some("IllegalArgumentException"),
            Some(t) => {
                self.last = Some(t.clone());
                self.stored.push(t.clone());
                None
            }
        };
        let reply = serde_json::json!({
            "action": "checkpoint",
            "sequenceNumber": sequence_number.as_ref().map(|s| s.as_str()),
            "subSequenceNumber": sub_sequence_number,
            "error": error,
        });
        (reply.to_string(), error)
    }
}

/// Drives `p` through one action: sends `line`, answers checkpoints with `model`, and
/// returns the checkpoint requests seen before the status (which must answer `action`).
pub fn run_action(
    p: &mut Proc,
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

/// The daemon's `shutdownRequested` line.
pub const SHUTDOWN_REQUESTED: &str = r#"{"action":"shutdownRequested"}"#;

/// Drives `p` through `shutdownRequested` (see [`run_action`]).
pub fn shutdown_requested(
    p: &mut Proc,
    model: &mut CheckpointModel,
) -> Result<Vec<ProcessorMessage>, String> {
    run_action(p, model, SHUTDOWN_REQUESTED, Action::ShutdownRequested)
}

/// Drives `p` through `leaseLost` (see [`run_action`]).
pub fn lease_lost(
    p: &mut Proc,
    model: &mut CheckpointModel,
) -> Result<Vec<ProcessorMessage>, String> {
    run_action(p, model, r#"{"action":"leaseLost"}"#, Action::LeaseLost)
}

/// Notes `records` as delivered in `model` and returns their `processRecords` line
/// (without millisBehindLatest).
pub fn batch(model: &mut CheckpointModel, records: Vec<rsmld::codec::message::Record>) -> String {
    model.deliver_all(&records);
    line(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: None,
    })
}

/// Notes `records` as delivered in `model`, then drives `p` through their
/// `processRecords` line (millisBehindLatest 0; see [`run_action`]).
pub fn process_records(
    p: &mut Proc,
    model: &mut CheckpointModel,
    records: Vec<rsmld::codec::message::Record>,
) -> Result<Vec<ProcessorMessage>, String> {
    model.deliver_all(&records);
    let l = line(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: Some(0),
    });
    run_action(p, model, &l, Action::ProcessRecords)
}

// ---------------------------------------------------------------- processes

/// The pids listed in /proc now.
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// `pid` is a live process (it exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Calls `find` every 20 ms until it finds nothing or 10 s have passed; returns what it
/// found last (empty unless time ran out).
pub fn poll_until_empty(find: impl Fn() -> Vec<i32>) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = find();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A marker unique to this test run.
pub fn marker(test: &str) -> String {
    format!("{test}-{}-{:?}", std::process::id(), Instant::now())
}

// ---------------------------------------------------------------- shared builders

/// Makes `cmd`'s child run under a file size limit of `bytes` (RLIMIT_FSIZE, set between
/// fork and exec) with SIGXFSZ at its default, as `ulimit -f` leaves a process: a write
/// past the limit kills a process that does not ignore the signal.
pub fn limit_file_size(cmd: &mut Command, bytes: libc::rlim_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// The shard the binary tests initialize.
pub const SHARD7: &str = "shardId-000000000007";

/// A realistic 56-digit sequence number ending in `i`.
pub fn seq(i: u64) -> String {
    format!("49680445498841953494698307936{i:027}")
}

/// A record with sequence number `seq(i)`, key `key` and payload `text`.
pub fn record_with_text(i: u64, key: &str, text: &str) -> rsmld::codec::message::Record {
    use base64::Engine;
    rsmld::codec::message::Record {
        data: Some(
            base64::engine::general_purpose::STANDARD
                .encode(text)
                .into(),
        ),
        partition_key: key.into(),
        sequence_number: SequenceNumber::parse(&seq(i)).unwrap(),
        sub_sequence_number: Some(0),
        approximate_arrival_timestamp: Some(1_700_000_000_000 + i as i64),
    }
}

/// A record with payload `payload-{i}`.
pub fn record(i: u64, key: &str) -> rsmld::codec::message::Record {
    record_with_text(i, key, &format!("payload-{i}"))
}

/// A daemon message as the Java daemon writes it.
pub fn line(msg: &DaemonMessage) -> String {
    serde_json::to_string(msg).unwrap()
}

/// `initialize` for `shard` at `at` (a sequence number or sentinel).
pub fn init_line_at(shard: &str, at: &str) -> String {
    line(&DaemonMessage::Initialize {
        shard_id: shard.into(),
        sequence_number: Some(SequenceNumber::parse(at).unwrap()),
        sub_sequence_number: Some(0),
    })
}

/// `initialize` for [`SHARD7`] at TRIM_HORIZON.
pub fn init_line() -> String {
    init_line_at(SHARD7, "TRIM_HORIZON")
}

/// Starts rsmld with the file handler writing under `out` plus `extra` flags (and `env`),
/// and initializes it at TRIM_HORIZON, as the returned model is told.
pub fn start_file_handler(
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, CheckpointModel) {
    let mut list = vec!["--handler", "file", "--output", out.to_str().unwrap()];
    list.extend(extra);
    let mut p = Proc::spawn_env(&args(&list), env);
    let model = initialize(&mut p);
    (p, model)
}

/// Two workers, synchronous (`--max-in-flight 0`), a checkpoint after every batch (so an
/// accepted batch shows as a checkpoint request before its status).
pub const CHECKPOINT_EVERY_BATCH: [&str; 6] = [
    "--workers",
    "2",
    "--checkpoint-interval",
    "0",
    "--max-in-flight",
    "0",
];

/// [`start_file_handler`] with [`CHECKPOINT_EVERY_BATCH`], then `extra` flags.
pub fn start_checkpointing(out: &Path, extra: &[&str]) -> (Proc, CheckpointModel) {
    let mut list = CHECKPOINT_EVERY_BATCH.to_vec();
    list.extend(extra);
    start_file_handler(out, &list, &[])
}

/// Initializes `p` for [`SHARD7`] at TRIM_HORIZON; returns the daemon model, told so.
pub fn initialize(p: &mut Proc) -> CheckpointModel {
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    run_action(p, &mut model, &init_line(), Action::Initialize).unwrap();
    model
}

/// Owned argument strings.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Every item line written under `dir`, parsed, with its file name.
pub fn written(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for l in std::fs::read_to_string(&path).unwrap().lines() {
            out.push((name.clone(), serde_json::from_str(l).unwrap()));
        }
    }
    out
}

/// A KPL aggregate record around `body` (an encoded `AggregatedRecord`): the magic, the
/// body and its MD5 digest.
pub fn kpl_framed(body: &[u8]) -> Vec<u8> {
    let mut out = rsmld::kpl::MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&<md5::Md5 as md5::Digest>::digest(body));
    out
}
/// A handler-level item: record `i` at `seq(i)` with partition key `key` and a payload of
/// `payload` bytes of `x`.
pub fn item_with(i: u64, key: &str, payload: usize) -> rsmld::pipeline::item::Item<'static> {
    rsmld::pipeline::item::Item {
        record: RecordId(i),
        sequence_number: leak(seq(i)),
        sub_sequence_number: 0,
        user_sub: 0,
        user_total: 1,
        partition_key: leak(key),
        explicit_hash_key: None,
        approximate_arrival_timestamp: Some(1_700_000_000_000),
        data: rsmld::pipeline::item::Payload::Bytes(leak_bytes(vec![b'x'; payload])),
    }
}

/// A `'static` copy of `s` (test items borrow their text; leaking a little is fine here).
pub fn leak(s: impl Into<String>) -> &'static str {
    Box::leak(s.into().into_boxed_str())
}

/// A `'static` copy of `b`.
pub fn leak_bytes(b: Vec<u8>) -> &'static [u8] {
    Box::leak(b.into_boxed_slice())
}
