//! A MultiLangDaemon simulator for benchmarks: plays a pre-generated scenario against any
//! record processor and measures it.
//!
//! ```text
//! mld_sim --batches K --records B --size S [--kpl A] [--end shutdown|shard-end]
//!         [--seed N] [--json] [--label NAME] [--shard-id ID] [--gate] -- CMD ARGS...
//! ```
//!
//! The scenario is `initialize`; K `processRecords` batches of B records with S random bytes
//! each (base64, as the daemon sends them); then `shardEnded` (default) or
//! `shutdownRequested` + `leaseLost`. With `--kpl A` the records are de-aggregated KPL user
//! records, as a KCL 2.x daemon delivers them: A user records (sub-sequence numbers
//! 0..A-1, each with its own partition key) share one sequence number; a batch holds whole
//! aggregates (the last one of a batch is shorter when A does not divide B).
//!
//! Every line is serialized before the clock starts, and each is written with one
//! `write_all`, so the simulator costs next to nothing while the processor runs.
//!
//! Checkpoints are answered by the daemon model the tests use too
//! (`rsmld::testkit::daemon::CheckpointModel`), as the Java daemon answers them: a request must lie in
//! [last stored checkpoint, largest delivered ESN] (SHARD_END is the upper bound during
//! `shardEnded`); `sequenceNumber: null` means the largest delivered ESN, or SHARD_END during
//! `shardEnded`; a request out of range is refused with `IllegalArgumentException`, one
//! during `initialize`/`leaseLost` with `InvalidStateException`; the reply echoes the
//! request. Processor lines are decoded strictly (unknown fields are errors, as with the
//! daemon's Jackson mapper); blank lines are skipped; non-JSON lines are counted as noise.
//!
//! Any protocol violation — a status for the wrong action, a refused checkpoint, a line the
//! daemon would skip, EOF while waiting, a line after the final status, a non-zero exit, a
//! final checkpoint that is not the last delivered record (or SHARD_END) — makes the run
//! fail (exit 1). Usage errors exit 2.
//!
//! Reported (human-readable, or one JSON object with `--json`): wall time from the first
//! `initialize` write to the final status, records/s, payload MB/s (decoded payload bytes,
//! 10^6), the child's CPU time (user + sys, from `wait4`), its peak RSS (`VmHWM` of the
//! child read at the final status; `ru_maxrss` is reported too, but it includes the
//! pre-`exec` copy of the simulator), the time from spawn to `status(initialize)`, and
//! per-batch round-trip percentiles. `--gate` lets many simulators (the many-leases
//! benchmark) spawn their processors at one instant: each says `ready` on stdout once its
//! scenario is generated and spawns on a line from stdin; the JSON report carries
//! `started_unix_s` (the spawn).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Parser, ValueEnum};
use rsmld::codec::message::{Action, DaemonMessage, ProcessorMessage, Record};
use rsmld::protocol::sequence::{Esn, Sentinel, SequenceNumber};
use rsmld::testkit::daemon::CheckpointModel;
use rsmld::testkit::encode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum End {
    /// `shutdownRequested`, then `leaseLost`: the final checkpoint must be the last record.
    Shutdown,
    /// `shardEnded`: the final checkpoint must be SHARD_END.
    ShardEnd,
}

/// MultiLangDaemon simulator: plays a scenario against a record processor and measures it.
#[derive(Debug, Parser)]
#[command(name = "mld_sim")]
struct Args {
    /// Number of processRecords batches (K).
    #[arg(long, default_value_t = 100)]
    batches: usize,
    /// Records per batch (B); user records in KPL mode.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Payload bytes per record (S), before base64.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// KPL mode: A de-aggregated user records per aggregate (shared sequence number).
    #[arg(long)]
    kpl: Option<usize>,
    /// How the lease ends.
    #[arg(long, value_enum, default_value_t = End::ShardEnd)]
    end: End,
    /// Seed of the payload, partition key and sequence number generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    json: bool,
    /// A name for this run, copied into the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Shard id sent in initialize.
    #[arg(long, default_value = "shardId-000000000001")]
    shard_id: String,
    /// Longest wait for one processor line, in seconds (the daemon's timeoutInSeconds).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// After generating the scenario, print `ready` on stdout and wait for one line on stdin
    /// before spawning the processor: a benchmark running many simulators starts all their
    /// leases at one instant (its own, when it has seen every `ready`).
    #[arg(long)]
    gate: bool,
    /// Enlarge the pipe to the processor's stdin to this many bytes (F_SETPIPE_SZ, capped
    /// at /proc/sys/fs/pipe-max-size by the kernel): rsmld's child mode enlarges its own
    /// stdin to 4 MiB, a lease served by `rsmld serve` keeps the daemon's pipe as it is.
    #[arg(long)]
    pipe_size: Option<usize>,
    /// Copy the processor's stderr to ours (default: keep its last lines, shown on failure).
    #[arg(long)]
    child_stderr: bool,
    /// The processor command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// One pre-serialized daemon line and what the daemon knows when it sends it.
struct Line {
    bytes: Vec<u8>,
    action: Action,
    /// The largest ESN delivered once this line is sent (`processRecords` updates it).
    delivers: Option<Esn>,
}

struct Scenario {
    lines: Vec<Line>,
    records: u64,
    kinesis_records: u64,
    payload_bytes: u64,
    line_bytes: u64,
    largest_line: usize,
    last_esn: Option<Esn>,
    initial: Esn,
}

/// SplitMix64: small, fast, seedable; good enough for payloads and keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

#[expect(clippy::expect_used, reason = "seq is formatted digits")]
fn generate(args: &Args) -> Scenario {
    let mut rng = Rng(args.seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    // 56-digit sequence numbers, like real ones: a fixed 36-digit head and a 20-digit
    // counter that grows by a random step (strictly increasing, never fits a u64 whole).
    const HEAD: &str = "496804454988419534946983079362562279";
    let mut counter: u64 = 10_000_000_000 + (rng.next() % 1_000_000);
    let mut ts: i64 = 1_795_310_498_058;
    let per_agg = args.kpl.unwrap_or(1).max(1);
    let initial = Esn::new(SequenceNumber::sentinel(Sentinel::TrimHorizon), 0);

    let mut lines = Vec::with_capacity(args.batches + 3);
    lines.push(Line {
        bytes: encode::line_bytes(&encode::initialize(&args.shard_id, initial.seq.clone())),
        action: Action::Initialize,
        delivers: None,
    });
    let mut payload = vec![0u8; args.size];
    let mut last_esn: Option<Esn> = None;
    let mut kinesis_records = 0u64;
    for _ in 0..args.batches {
        let mut records = Vec::with_capacity(args.records);
        let mut seq = String::new();
        for j in 0..args.records {
            let sub = (j % per_agg) as i64;
            if sub == 0 {
                counter += 1 + rng.next() % 4096;
                ts += (rng.next() % 3) as i64;
                seq = format!("{HEAD}{counter:020}");
                kinesis_records += 1;
            }
            rng.fill(&mut payload);
            records.push(Record {
                data: Some(b64.encode(&payload).into()),
                partition_key: format!("pk-{:016x}", rng.next()),
                sequence_number: SequenceNumber::parse(&seq).expect("digits"),
                sub_sequence_number: Some(sub),
                approximate_arrival_timestamp: Some(ts),
            });
        }
        if let Some(r) = records.last() {
            last_esn = Some(r.esn());
        }
        lines.push(Line {
            bytes: encode::line_bytes(&encode::process_records(records, Some(0))),
            action: Action::ProcessRecords,
            delivers: last_esn.clone(),
        });
    }
    let tail: &[(DaemonMessage, Action)] = match args.end {
        End::ShardEnd => &[(DaemonMessage::ShardEnded, Action::ShardEnded)],
        End::Shutdown => &[
            (DaemonMessage::ShutdownRequested, Action::ShutdownRequested),
            (DaemonMessage::LeaseLost, Action::LeaseLost),
        ],
    };
    for (msg, action) in tail {
        lines.push(Line {
            bytes: encode::line_bytes(msg),
            action: *action,
            delivers: last_esn.clone(),
        });
    }
    let line_bytes = lines.iter().map(|l| l.bytes.len() as u64).sum();
    let largest_line = lines.iter().map(|l| l.bytes.len()).max().unwrap_or(0);
    Scenario {
        lines,
        records: (args.batches * args.records) as u64,
        kinesis_records,
        payload_bytes: (args.batches * args.records * args.size) as u64,
        line_bytes,
        largest_line,
        last_esn,
        initial,
    }
}

#[derive(Default)]
struct Measures {
    start_to_init_status: Option<Duration>,
    wall: Option<Duration>,
    batch_rtt: Vec<Duration>,
    noise_lines: u64,
    checkpoint_requests: u64,
}

struct Usage {
    exit: String,
    exit_ok: bool,
    user: f64,
    sys: f64,
    max_rss_kib: i64,
}

enum Event {
    Line(String),
    Eof,
    Error(String),
}

struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Event>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    timeout: Duration,
}

impl Run {
    fn spawn(cmd: &[String], copy_stderr: bool, pipe_size: Option<usize>) -> Result<Run, String> {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd[0]))?;
        if let (Some(bytes), Some(stdin)) = (pipe_size, child.stdin.as_ref()) {
            use std::os::fd::AsRawFd;
            let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on our end of the child's stdin pipe with an integer argument.
            if unsafe { libc::fcntl(stdin.as_raw_fd(), libc::F_SETPIPE_SZ, want) } < 0 {
                return Err(format!(
                    "--pipe-size {bytes}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        #[expect(clippy::expect_used, reason = "stdout was set to piped above")]
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, stdout);
            loop {
                let mut line = String::new();
                let ev = match r.read_line(&mut line) {
                    Ok(0) => Event::Eof,
                    Ok(_) => Event::Line(line),
                    Err(e) => Event::Error(e.to_string()),
                };
                let last = !matches!(ev, Event::Line(_));
                if tx.send(ev).is_err() || last {
                    return;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        #[expect(clippy::expect_used, reason = "stderr was set to piped above")]
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = tail.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(&mut err);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if copy_stderr {
                            eprint!("{line}");
                        }
                        let mut t = sink.lock().unwrap_or_else(PoisonError::into_inner);
                        if t.len() == 40 {
                            t.pop_front();
                        }
                        t.push_back(line.trim_end().to_owned());
                    }
                }
            }
        });
        Ok(Run {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            stderr_tail: tail,
            timeout: Duration::from_secs(1),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        stdin
            .write_all(bytes)
            .map_err(|e| format!("writing to the processor failed: {e}"))
    }

    /// The next non-blank line, with the time it arrived.
    fn next_line(&mut self, m: &mut Measures) -> Result<(String, Instant), String> {
        loop {
            match self.lines.recv_timeout(self.timeout) {
                Ok(Event::Line(l)) => {
                    let now = Instant::now();
                    let t = l.trim_end_matches(['\r', '\n']);
                    if t.is_empty() {
                        continue;
                    }
                    if serde_json::from_str::<serde_json::Value>(t).is_err() {
                        // The daemon logs and skips non-JSON lines.
                        m.noise_lines += 1;
                        continue;
                    }
                    return Ok((t.to_owned(), now));
                }
                Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => {
                    return Err("the processor closed its stdout while the daemon waited".into())
                }
                Ok(Event::Error(e)) => return Err(format!("reading the processor: {e}")),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no line from the processor within {:?} (timeoutInSeconds)",
                        self.timeout
                    ))
                }
            }
        }
    }

    /// Closes stdin, waits (bounded) for the exit and collects the child's rusage.
    fn finish(&mut self, grace: Duration) -> Usage {
        self.stdin.take();
        let pid = self.child.id() as libc::pid_t;
        let deadline = Instant::now() + grace;
        let mut killed = false;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: rusage is plain old data; wait4 fills it for our own child.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 for our own child, with pointers to locals.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == pid {
                let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                let (exit, ok) = if libc::WIFEXITED(status) {
                    let code = libc::WEXITSTATUS(status);
                    (format!("exit {code}"), code == 0 && !killed)
                } else if libc::WIFSIGNALED(status) {
                    (format!("signal {}", libc::WTERMSIG(status)), false)
                } else {
                    (format!("status {status}"), false)
                };
                let exit = if killed {
                    format!("{exit} (killed: no exit within {grace:?} of stdin EOF)")
                } else {
                    exit
                };
                return Usage {
                    exit,
                    exit_ok: ok,
                    user: tv(ru.ru_utime),
                    sys: tv(ru.ru_stime),
                    max_rss_kib: ru.ru_maxrss,
                };
            }
            if r < 0 {
                return Usage {
                    exit: format!("wait4 failed: {}", std::io::Error::last_os_error()),
                    exit_ok: false,
                    user: f64::NAN,
                    sys: f64::NAN,
                    max_rss_kib: 0,
                };
            }
            if !killed && Instant::now() >= deadline {
                // SAFETY: our own child, not yet reaped (wait4 returned 0).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stderr_tail(&self) -> String {
        let t = self
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        t.iter()
            .map(|l| format!("    | {l}\n"))
            .collect::<Vec<_>>()
            .concat()
    }
}

/// Plays the scenario. Protocol failures that stop the exchange are `Err`; refused
/// checkpoints and other non-fatal violations go to `violations`.
#[expect(clippy::expect_used, reason = "t0 is set when the first line is sent")]
fn play(
    run: &mut Run,
    sc: &Scenario,
    spawned: Instant,
    cps: &mut CheckpointModel,
    m: &mut Measures,
    violations: &mut Vec<String>,
) -> Result<(), String> {
    let mut t0 = None;
    for (i, line) in sc.lines.iter().enumerate() {
        // The daemon updates largestPermitted before it sends the batch, and sets it to
        // SHARD_END before shardEnded.
        if line.action == Action::ProcessRecords {
            cps.largest = line.delivers.clone();
        }
        if line.action == Action::ShardEnded {
            cps.shard_ended = true;
        }
        let sent = Instant::now();
        t0.get_or_insert(sent);
        run.write(&line.bytes)
            .map_err(|e| format!("line {} ({}): {e}", i + 1, line.action))?;
        loop {
            let (got, at) = run
                .next_line(m)
                .map_err(|e| format!("during {} (line {}): {e}", line.action, i + 1))?;
            let msg = ProcessorMessage::decode(got.as_bytes()).map_err(|e| {
                format!(
                    "during {}: the daemon would skip {got:?} ({e}) and wait forever",
                    line.action
                )
            })?;
            match msg {
                ProcessorMessage::Status { response_for } => {
                    if response_for != line.action {
                        return Err(format!(
                            "status for {response_for} while the daemon waits for {}",
                            line.action
                        ));
                    }
                    match line.action {
                        Action::Initialize => {
                            m.start_to_init_status = Some(at - spawned);
                        }
                        Action::ProcessRecords => m.batch_rtt.push(at - sent),
                        _ => {}
                    }
                    if i + 1 == sc.lines.len() {
                        m.wall = Some(at - t0.expect("set"));
                    }
                    break;
                }
                ProcessorMessage::Checkpoint {
                    sequence_number,
                    sub_sequence_number,
                } => {
                    m.checkpoint_requests += 1;
                    let error = cps.decide(
                        Some(line.action),
                        sequence_number.as_ref(),
                        sub_sequence_number,
                    );
                    let reply = encode::line_bytes(&CheckpointModel::reply(
                        sequence_number.as_ref(),
                        sub_sequence_number,
                        error,
                    ));
                    if let Some(e) = error {
                        violations.push(format!(
                            "checkpoint {got} during {} refused: {e} (last {}, largest {})",
                            line.action,
                            last(cps),
                            cps.largest
                                .as_ref()
                                .map_or("none".to_owned(), |l| l.to_string())
                        ));
                    }
                    run.write(&reply)
                        .map_err(|e| format!("checkpoint reply: {e}"))?;
                }
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e3
}

#[expect(clippy::print_stdout, reason = "the report is the output")]
fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if args.kpl == Some(0) {
        eprintln!("mld_sim: --kpl needs at least 1 user record per aggregate");
        return ExitCode::from(2);
    }
    let prep = Instant::now();
    let sc = generate(&args);
    let prep = prep.elapsed();

    let mut cps = CheckpointModel::at(sc.initial.clone());
    let mut m = Measures::default();
    let mut violations = Vec::new();

    if args.gate {
        if let Err(e) = wait_for_gate() {
            eprintln!("mld_sim: --gate: {e}");
            return ExitCode::from(2);
        }
    }
    let started_unix = unix_now();
    let spawned = Instant::now();
    let mut run = match Run::spawn(&args.command, args.child_stderr, args.pipe_size) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mld_sim: {e}");
            return ExitCode::from(2);
        }
    };
    run.timeout = Duration::from_secs(args.timeout.max(1));
    let result = play(&mut run, &sc, spawned, &mut cps, &mut m, &mut violations);
    if let Err(e) = &result {
        violations.push(e.clone());
    }
    // Peak RSS of the processor's own image, read while it still waits for EOF.
    let hwm_kib = vm_hwm_kib(run.child.id());
    // The daemon closes stdin after the final status and drains stdout to EOF.
    let usage = run.finish(Duration::from_secs(10));
    let mut after = 0u64;
    while let Ok(ev) = run.lines.recv_timeout(Duration::from_secs(2)) {
        match ev {
            Event::Line(l) if !l.trim().is_empty() => {
                if result.is_ok() {
                    after += 1;
                    violations.push(format!("line after the final status: {}", l.trim_end()));
                }
            }
            Event::Line(_) => {}
            Event::Eof | Event::Error(_) => break,
        }
    }
    if !usage.exit_ok {
        violations.push(format!("the processor ended with {}", usage.exit));
    }
    let expected_final = match args.end {
        End::ShardEnd => CheckpointModel::shard_end(),
        End::Shutdown => sc.last_esn.clone().unwrap_or_else(|| sc.initial.clone()),
    };
    if result.is_ok() && cps.last.as_ref() != Some(&expected_final) {
        violations.push(format!(
            "final checkpoint is {}, expected {expected_final}",
            last(&cps)
        ));
    }

    let wall = m.wall.map_or(f64::NAN, |w| w.as_secs_f64());
    let mut rtt = m.batch_rtt.clone();
    rtt.sort();
    let records_per_s = sc.records as f64 / wall;
    let payload_mb_s = sc.payload_bytes as f64 / 1e6 / wall;
    let line_mb_s = sc.line_bytes as f64 / 1e6 / wall;
    let cpu = usage.user + usage.sys;
    let ru_maxrss_mib = usage.max_rss_kib as f64 / 1024.0;
    let rss_mib = hwm_kib.map_or(f64::NAN, |k| k as f64 / 1024.0);
    let init_ms = m
        .start_to_init_status
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let ok = violations.is_empty();

    if args.json {
        let report = serde_json::json!({
            "label": args.label,
            "command": args.command,
            "ok": ok,
            "violations": violations,
            "scenario": {
                "batches": args.batches,
                "records_per_batch": args.records,
                "size": args.size,
                "kpl": args.kpl,
                "end": match args.end { End::ShardEnd => "shard-end", End::Shutdown => "shutdown" },
                "seed": args.seed,
                "records": sc.records,
                "kinesis_records": sc.kinesis_records,
                "payload_bytes": sc.payload_bytes,
                "line_bytes": sc.line_bytes,
                "largest_line_bytes": sc.largest_line,
                "prepare_s": prep.as_secs_f64(),
            },
            "started_unix_s": started_unix,
            "wall_s": nan_null(wall),
            "records_per_s": nan_null(records_per_s),
            "items_per_s": nan_null(records_per_s),
            "payload_mb_s": nan_null(payload_mb_s),
            "line_mb_s": nan_null(line_mb_s),
            "cpu_user_s": nan_null(usage.user),
            "cpu_sys_s": nan_null(usage.sys),
            "cpu_s": nan_null(cpu),
            "peak_rss_mib": nan_null(rss_mib),
            "ru_maxrss_mib": ru_maxrss_mib,
            "start_to_init_status_ms": nan_null(init_ms),
            "batch_rtt_ms": {
                "p50": nan_null(percentile(&rtt, 0.5)),
                "p99": nan_null(percentile(&rtt, 0.99)),
                "max": nan_null(percentile(&rtt, 1.0)),
            },
            "checkpoints": {
                "requests": m.checkpoint_requests,
                "accepted": cps.stored.len(),
                "refused": cps.refused,
                "final": last(&cps),
            },
            "noise_lines": m.noise_lines,
            "lines_after_final_status": after,
            "exit": usage.exit,
        });
        println!("{report}");
    } else {
        let kpl = args.kpl.map_or(String::new(), |a| {
            format!(", KPL {a} user records/aggregate")
        });
        println!(
            "mld_sim {}{}",
            args.command.join(" "),
            if args.label.is_empty() {
                String::new()
            } else {
                format!("  [{}]", args.label)
            }
        );
        println!(
            "  scenario   {} batches x {} records x {} B{kpl}; {:.1} MB of lines (largest {:.2} MB), prepared in {:.2} s",
            args.batches,
            args.records,
            args.size,
            sc.line_bytes as f64 / 1e6,
            sc.largest_line as f64 / 1e6,
            prep.as_secs_f64()
        );
        println!("  start -> status(initialize)  {init_ms:.2} ms");
        println!(
            "  wall {wall:.3} s   {records_per_s:.0} records/s   {payload_mb_s:.1} MB/s payload   {line_mb_s:.1} MB/s lines"
        );
        println!(
            "  processor CPU {cpu:.3} s (user {:.3}, sys {:.3})   peak RSS {rss_mib:.1} MiB (VmHWM; ru_maxrss {ru_maxrss_mib:.1} MiB)   {}",
            usage.user, usage.sys, usage.exit
        );
        println!(
            "  batch round trip p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            percentile(&rtt, 0.5),
            percentile(&rtt, 0.99),
            percentile(&rtt, 1.0)
        );
        println!(
            "  checkpoints {} requested, {} accepted, {} refused; final {}; {} noise lines",
            m.checkpoint_requests,
            cps.stored.len(),
            cps.refused,
            last(&cps),
            m.noise_lines
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("mld_sim: FAILED ({} violations):", violations.len());
        for v in &violations {
            eprintln!("  - {v}");
        }
        let tail = run.stderr_tail();
        if !tail.is_empty() {
            eprintln!("  processor stderr (last lines):\n{tail}");
        }
        ExitCode::FAILURE
    }
}

/// `VmHWM` of a live process: the peak resident set of its current image. (`ru_maxrss`
/// from `wait4` is not used for this: Linux carries the high-water mark of the pre-`exec`
/// address space — a copy of the simulator, hundreds of MB of pre-serialized lines — into
/// the child's `ru_maxrss`.)
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The model's last checkpoint, for the report.
fn last(cps: &CheckpointModel) -> String {
    cps.last
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string)
}

/// The wall clock in Unix seconds (0 before 1970: a broken clock only skews a report).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `--gate`: says `ready` on stdout, then waits for one line (or EOF) on stdin.
#[expect(clippy::print_stdout, reason = "the gate's handshake is on stdout")]
fn wait_for_gate() -> std::io::Result<()> {
    // Rust's stdout is line-buffered: the line is out when println! returns.
    println!("ready");
    std::io::stdin().read_line(&mut String::new())?;
    Ok(())
}

fn nan_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}
