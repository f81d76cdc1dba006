//! Test support: the test process's side of the shared test kit (`rsmld::testkit`, which
//! holds the daemon model, the daemon-side encoders, the transcript format and its player):
//! the built binary as a [`Peer`] ([`Proc`]), the two transcript players (the binary through
//! real pipes; the production loop in-process), the /proc helpers and handler-level
//! builders.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rsmld::protocol::tracker::RecordId;
// The test kit's pieces, under the names the tests have always used (`common::batch`, ...);
// tests/exec_guard.rs, the other includer of this file, uses few of them.
pub use rsmld::testkit::daemon::CheckpointModel;
#[allow(unused_imports)]
pub use rsmld::testkit::encode::{
    batch, init_line, init_line_at, kpl_framed, line, record, record_with_text, seq, SHARD7,
    SHUTDOWN_REQUESTED,
};
use rsmld::testkit::in_process::InProcess;
#[allow(unused_imports)]
pub use rsmld::testkit::transcript::{
    lease_lost, load, process_records, run_action, shutdown_requested, Entry, Peer,
};
use rsmld::testkit::transcript::{play, start_args};

pub fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

pub fn rsmld_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rsmld"))
}

/// The daemon simulator (`src/bin/mld_sim.rs`; `cargo test` builds it, the tests turn the
/// `testkit` feature on).
pub fn mld_sim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mld_sim"))
}

/// A built example (`cargo build --examples` puts them next to the test binaries' target dir).
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

// ---------------------------------------------------------------- players

/// Plays a transcript against the production loop in this process: the reader, the
/// structural scan, acknowledge-ahead and a real pool, over in-memory pipes, in real time.
pub fn play_in_process(entries: &[Entry]) -> Result<(), String> {
    let mut peer = InProcess::from_args(&start_args(entries))?;
    play(entries, &mut peer)
}

/// Plays a transcript against the built binary through real pipes and real time.
pub fn play_binary(entries: &[Entry]) -> Result<(), String> {
    let mut p = Proc::spawn(&start_args(entries));
    play(entries, &mut p)
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

impl Peer for Proc {
    fn send(&mut self, line: &str) {
        Proc::send(self, line)
    }

    fn recv(&mut self, timeout: Duration) -> Result<String, String> {
        Proc::recv(self, timeout)
    }

    fn close_input(&mut self) {
        self.close_stdin()
    }

    fn wait(&mut self, timeout: Duration) -> Result<i32, String> {
        Proc::wait(self, timeout)
    }

    fn stderr_text(&mut self) -> Option<String> {
        Some(self.stderr())
    }
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
    rsmld::testkit::transcript::initialize(p).unwrap()
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

/// Like [`written`], but for reading while the handler may still be appending: each file
/// is read up to its last `'\n'` and the rest (the part of a write in progress that is
/// already visible) is left out. Every line up to there must still parse. This is no
/// weaker for a check of what a checkpoint covers: the file handler appends each batch (each
/// item, under `--debug-delay-ms`) as whole lines in one write to a file only its worker
/// writes, and a batch counts as done, so can be covered, only after its write (and sync)
/// returned; an unfinished write is therefore always the file's tail and never holds an
/// item a checkpoint already covers.
pub fn written_so_far(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for l in std::str::from_utf8(&bytes[..complete]).unwrap().lines() {
            let v =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()));
            out.push((name.clone(), v));
        }
    }
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
