//! A [`Peer`] that runs the production loop in this process.
//!
//! The loop gets the same streams a child gets, only in memory: its input is a pipe fed by
//! [`Peer::send`] (read by the production reader thread, so lines arrive in pieces and are
//! scanned while they arrive, as from stdin), its output a pipe that [`Peer::recv`] reads
//! line by line; items go to a real worker pool with the configured handler. So a
//! transcript played here takes the production path — reader, structural scan,
//! acknowledge-ahead, the pool — and the exit code is the one the binary would exit with.
//! Only the log lines are not seen (they go to this process's logger): [`Peer::stderr_text`]
//! is the error line that ends a failed run, and `None` otherwise (a transcript's `p_err`
//! entries are then checked by the binary player only).

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;

use crate::app::{EXIT_FAILURE, EXIT_PROTOCOL};
use crate::lease::LeaseError;
use crate::protocol::session::Stats;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::telemetry::LogSink;
use crate::testkit::transcript::Peer;

/// The production entry point, in one place: one lease served over `input` and `output`
/// until `input` ends, as `rsmld` serves stdin and stdout.
fn serve<R, W>(config: RuntimeConfig, input: R, output: W) -> Result<Stats, LeaseError>
where
    R: Read + Send + 'static,
    W: Write,
{
    Runtime::new(config, std::sync::Arc::new(LogSink)).run_child(input, output)
}

/// The loop's configuration from `rsmld`'s command line (without the program name).
pub fn config_from_args(args: &[String]) -> Result<RuntimeConfig, String> {
    let cli = crate::cli::config::Cli::try_parse_from(
        std::iter::once("rsmld".to_owned()).chain(args.iter().cloned()),
    )
    .map_err(|e| e.to_string())?;
    cli.run.into_runtime_config().map_err(|e| e.to_string())
}

/// The exit code `rsmld` ends a run with (see `app`).
pub fn exit_code(result: &Result<Stats, LeaseError>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) if e.is_protocol_violation() => i32::from(EXIT_PROTOCOL),
        Err(_) => i32::from(EXIT_FAILURE),
    }
}

/// The reading end of an in-memory pipe: blocks for the next chunk; EOF once every sender
/// is gone.
struct PipeReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.chunks.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The writing end of an in-memory pipe that hands on complete lines; a write after the
/// reader went away fails like a write to a closed pipe.
struct LineWriter {
    lines: mpsc::Sender<String>,
    partial: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]).into_owned();
            if self.lines.send(text).is_err() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The production loop running on a thread of this process (see the module docs).
pub struct InProcess {
    input: Option<mpsc::Sender<Vec<u8>>>,
    lines: mpsc::Receiver<String>,
    done: mpsc::Receiver<Result<Stats, LeaseError>>,
    outcome: Option<(i32, Option<String>, Option<Stats>)>,
}

impl InProcess {
    /// Starts the loop with `config`.
    pub fn start(config: RuntimeConfig) -> InProcess {
        let (input, chunks) = mpsc::channel();
        let (out, lines) = mpsc::channel();
        let (finished, done) = mpsc::channel();
        let reader = PipeReader {
            chunks,
            chunk: Vec::new(),
            at: 0,
        };
        let writer = LineWriter {
            lines: out,
            partial: Vec::new(),
        };
        std::thread::spawn(move || {
            let result = serve(config, reader, writer);
            let _ = finished.send(result);
        });
        InProcess {
            input: Some(input),
            lines,
            done,
            outcome: None,
        }
    }

    /// Starts the loop configured by `rsmld`'s command line `args`.
    pub fn from_args(args: &[String]) -> Result<InProcess, String> {
        Ok(Self::start(config_from_args(args)?))
    }

    /// The run's statistics, once it has ended successfully.
    pub fn stats(&self) -> Option<&Stats> {
        self.outcome.as_ref().and_then(|(_, _, s)| s.as_ref())
    }

    fn note(&mut self, result: Result<Stats, LeaseError>) -> i32 {
        let code = exit_code(&result);
        let (error, stats) = match result {
            Ok(s) => (None, Some(s)),
            Err(e) => (Some(format!("rsmld ERROR {e}")), None),
        };
        self.outcome = Some((code, error, stats));
        code
    }
}

impl Peer for InProcess {
    fn send(&mut self, line: &str) {
        if let Some(input) = &self.input {
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            // A loop that already ended makes this fail; the exit entry then checks why.
            let _ = input.send(bytes);
        }
    }

    fn recv(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => return Ok(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no protocol line within {timeout:?}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let why = self.stderr_text().unwrap_or_default();
                    return Err(format!("the loop closed its output; {why}"));
                }
            }
        }
    }

    fn close_input(&mut self) {
        self.input.take();
    }

    fn wait(&mut self, timeout: Duration) -> Result<i32, String> {
        if let Some((code, _, _)) = &self.outcome {
            return Ok(*code);
        }
        match self.done.recv_timeout(timeout) {
            Ok(result) => Ok(self.note(result)),
            Err(_) => Err(format!("the loop did not end within {timeout:?}")),
        }
    }

    fn stderr_text(&mut self) -> Option<String> {
        if self.outcome.is_none() {
            if let Ok(result) = self.done.try_recv() {
                self.note(result);
            }
        }
        // Running, or ended well: its log lines went to this process's logger.
        self.outcome
            .as_ref()
            .and_then(|(_, error, _)| error.clone())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // EOF ends the loop (queued work is dropped, as at the daemon's EOF); its thread is
        // not joined, so a test that fails mid-action does not hang on it.
        self.input.take();
    }
}
