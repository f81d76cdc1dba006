//! Child mode's logs, for operators: which child a line is from, its level, and one
//! progress line per lease per interval instead of a line per batch or checkpoint.
//!
//! The daemon logs every stderr line of every child at ERROR in its own log, interleaved,
//! so every line says which lease it is from and its real level (`rsmld[shardId-…] INFO
//! …`). A lease's own lines name it in their log target (as [`crate::telemetry::LogSink`]'s do); the lines of the
//! pool, the handlers and the program name the one lease of this child, learned from its
//! first event. Lines before `initialize` (start-up debug lines, a bad command line) say
//! `rsmld[-]`: there is no lease yet. A sink, so the library keeps no process-global state.
//!
//! At info a lease logs its lifecycle (start, end), problems (checkpoint errors, handler
//! failures, retries, restarts) and, every `--progress-interval`, one progress line: items
//! completed, their rate over the interval, the daemon's lag and the last stored
//! checkpoint — or a warning that the lease is stalled, when items are in flight and none
//! completed in the interval. Per batch and per checkpoint lines are debug.
//!
//! `--log-format json` writes one object per line (`ts`, `level`, `lease`, `shard`,
//! `message`, and for a line of an event its `event` name and fields), for log shippers.
//! The event's fields reach the formatter through a thread-local set just around the
//! `log!` call (the formatter runs on the logging thread, inside that call), so the `log`
//! crate needs no structured-logging feature.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::cli::config::{LogFormat, LogLevel};
use crate::telemetry::{log_line, quiet_at_info, Event, LeaseId, Sink};

/// Lag not known yet (no batch said it).
const NO_LAG: i64 = i64::MIN;

thread_local! {
    /// The fields of the event whose line is being logged on this thread (json format).
    static EVENT_FIELDS: RefCell<Option<serde_json::Value>> = const { RefCell::new(None) };
}

/// What the progress line reports, updated by the events of the child's lease.
#[derive(Default)]
struct Progress {
    started: AtomicBool,
    ended: AtomicBool,
    items: AtomicU64,
    in_flight: AtomicUsize,
    lag: AtomicI64,
    /// The last stored checkpoint and when (one lock per checkpoint: rare).
    checkpoint: Mutex<Option<(String, Instant)>>,
}

impl Progress {
    /// Whether [`Progress::record`] counts `event` (the others need no lease's progress).
    fn counts(event: &Event) -> bool {
        matches!(
            event,
            Event::LeaseStarted { .. }
                | Event::ItemsCompleted { .. }
                | Event::InFlight { .. }
                | Event::Abandoned { .. }
                | Event::BatchReceived { .. }
                | Event::CheckpointStored { .. }
                | Event::LeaseEnded { .. }
        )
    }

    fn record(&self, event: &Event) {
        match event {
            Event::LeaseStarted { .. } => {
                self.lag.store(NO_LAG, Ordering::Relaxed);
                self.started.store(true, Ordering::Relaxed);
            }
            Event::ItemsCompleted { items } => {
                self.items.fetch_add(*items as u64, Ordering::Relaxed);
            }
            Event::InFlight { items, .. } => self.in_flight.store(*items, Ordering::Relaxed),
            // Dropped, not stalled.
            Event::Abandoned { .. } => self.in_flight.store(0, Ordering::Relaxed),
            Event::BatchReceived {
                millis_behind_latest: Some(m),
                ..
            } => self.lag.store(*m, Ordering::Relaxed),
            Event::CheckpointStored { position } => {
                let mut c = self
                    .checkpoint
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *c = Some((position.clone(), Instant::now()));
            }
            Event::LeaseEnded { .. } => self.ended.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// The child's logging sink: names the lease on every line, keeps the progress line's
/// counts, and writes event lines (the lines of [`log_line`]) as text or json.
#[derive(Clone)]
pub(super) struct ChildLog(Arc<Inner>);

struct Inner {
    lease: OnceLock<(String, String)>,
    format: LogFormat,
    progress: Progress,
}

impl ChildLog {
    pub(super) fn new(format: LogFormat) -> Self {
        ChildLog(Arc::new(Inner {
            lease: OnceLock::new(),
            format,
            progress: Progress::default(),
        }))
    }

    /// `rsmld[<lease>]`, or `rsmld[-]` before the lease is known.
    fn prefix(&self) -> String {
        format!("rsmld[{}]", self.lease_text())
    }

    fn lease_text(&self) -> &str {
        self.0.lease.get().map_or("-", |(l, _)| l.as_str())
    }

    /// Writes a line that must be seen whatever the level (why the process stops).
    pub(super) fn print_error(&self, message: &str) {
        match self.0.format {
            LogFormat::Text => eprintln!("{} ERROR {message}", self.prefix()),
            LogFormat::Json => {
                let mut buf = Vec::new();
                let _ = self.write_json(&mut buf, log::Level::Error, message, None);
                let _ = std::io::stderr().write_all(&buf);
            }
        }
    }

    fn write_json(
        &self,
        out: &mut dyn Write,
        level: log::Level,
        message: &str,
        fields: Option<serde_json::Value>,
    ) -> std::io::Result<()> {
        let mut obj = match fields {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let (lease, shard) = self
            .0
            .lease
            .get()
            .map_or((None, None), |(l, s)| (Some(l.as_str()), Some(s.as_str())));
        obj.insert(
            "ts".into(),
            rfc3339_millis(std::time::SystemTime::now()).into(),
        );
        obj.insert("level".into(), level.as_str().into());
        obj.insert("lease".into(), lease.into());
        obj.insert("shard".into(), shard.into());
        obj.insert("message".into(), message.into());
        let mut line = serde_json::to_vec(&obj).map_err(std::io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)
    }

    /// Starts the progress line's thread: every `interval`, one line for the lease (once
    /// it started, until it ended).
    pub(super) fn start_progress(&self, interval: Duration) -> ProgressThread {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("rsmld-progress".into())
            .spawn(move || {
                let mut last = (Instant::now(), 0u64);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    last = me.progress_tick(last);
                }
            })
            .map_err(|e| log::debug!("no progress line: cannot start its thread: {e}"))
            .ok();
        ProgressThread {
            stop: Some(stop),
            thread,
        }
    }

    /// Logs the progress line (or the stall warning); the next tick's starting point.
    fn progress_tick(&self, last: (Instant, u64)) -> (Instant, u64) {
        let Some((lease, _)) = self.0.lease.get() else {
            return (
                Instant::now(),
                self.0.progress.items.load(Ordering::Relaxed),
            );
        };
        progress_tick(self.0.format, &self.0.progress, lease, None, last)
    }

    /// Formats one log record (the env_logger formatter).
    fn format(&self, buf: &mut dyn Write, record: &log::Record<'_>) -> std::io::Result<()> {
        let target = record.target();
        match self.0.format {
            LogFormat::Text if target.starts_with("rsmld[") => {
                writeln!(buf, "{target} {} {}", record.level(), record.args())
            }
            LogFormat::Text => writeln!(
                buf,
                "{} {} {}",
                self.prefix(),
                record.level(),
                record.args()
            ),
            LogFormat::Json => {
                let fields = EVENT_FIELDS.with(|f| f.borrow_mut().take());
                let message = record.args().to_string();
                self.write_json(buf, record.level(), &message, fields)
            }
        }
    }
}

/// Logs `lease`'s progress line (or the stall warning), with `extra` fields in json; the
/// next tick's starting point.
fn progress_tick(
    format: LogFormat,
    p: &Progress,
    lease: &str,
    extra: Option<&serde_json::Value>,
    (since, items_before): (Instant, u64),
) -> (Instant, u64) {
    let now = Instant::now();
    let items = p.items.load(Ordering::Relaxed);
    if !p.started.load(Ordering::Relaxed) || p.ended.load(Ordering::Relaxed) {
        return (now, items);
    }
    let done = items.saturating_sub(items_before);
    let elapsed = now.duration_since(since).as_secs_f64().max(1e-3);
    let rate = done as f64 / elapsed;
    let lag = p.lag.load(Ordering::Relaxed);
    let in_flight = p.in_flight.load(Ordering::Relaxed);
    let checkpoint = p
        .checkpoint
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let lag_text = match lag {
        NO_LAG => "lag unknown".to_owned(),
        m => format!("{m} ms behind"),
    };
    let checkpoint_text = match &checkpoint {
        Some((at, when)) => format!(
            "last checkpoint {at} {:.0} s ago",
            now.duration_since(*when).as_secs_f64()
        ),
        None => "no checkpoint stored yet".to_owned(),
    };
    let stalled = done == 0 && in_flight > 0;
    let (level, message) = if stalled {
        (
            log::Level::Warn,
            format!(
                "stalled: no item completed in {elapsed:.0} s with {in_flight} items in flight ({items} items so far, {lag_text}, {checkpoint_text})"
            ),
        )
    } else {
        (
            log::Level::Info,
            format!(
                "progress: {items} items ({rate:.1}/s), {in_flight} in flight, {lag_text}, {checkpoint_text}"
            ),
        )
    };
    let mut fields = serde_json::json!({
        "event": if stalled { "Stalled" } else { "Progress" },
        "items": items,
        "rate": (rate * 10.0).round() / 10.0,
        "in_flight": in_flight,
        "millis_behind_latest": (lag != NO_LAG).then_some(lag),
        "last_checkpoint": checkpoint.as_ref().map(|(at, _)| at.clone()),
        "last_checkpoint_age_seconds":
            checkpoint.as_ref().map(|(_, when)| now.duration_since(*when).as_secs_f64()),
    });
    if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(f)) =
        (extra, &mut fields)
    {
        f.extend(extra.clone());
    }
    let target = format!("rsmld[{lease}]");
    with_fields(format, fields, || {
        log::log!(target: &target, level, "{message}");
    });
    (now, items)
}

/// `2026-12-01T20:10:00.123Z` (UTC).
fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days (as in handler::file).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

/// Runs `log` with `fields` visible to the json formatter (nothing to do for text).
fn with_fields(format: LogFormat, fields: serde_json::Value, log: impl FnOnce()) {
    if format == LogFormat::Json {
        EVENT_FIELDS.with(|f| *f.borrow_mut() = Some(fields));
    }
    log();
    EVENT_FIELDS.with(|f| f.borrow_mut().take());
}

impl Sink for ChildLog {
    fn emit(&self, lease: Option<&LeaseId>, event: &Event) {
        if self.0.lease.get().is_none() {
            if let Some(lease) = lease {
                let _ = self
                    .0
                    .lease
                    .set((lease.to_string(), lease.shard.to_string()));
            } else if let Event::LeaseStarted { shard, .. } = event {
                let _ = self.0.lease.set((shard.clone(), shard.clone()));
            }
        }
        self.0.progress.record(event);
        let Some((level, mut text)) = enabled_line(event) else {
            return;
        };
        if let Event::LeaseEnded { .. } = event {
            // Per-checkpoint lines are debug: the end says where the lease stopped.
            let c = self.0.progress.checkpoint.lock();
            match &*c.unwrap_or_else(PoisonError::into_inner) {
                Some((at, _)) => text.push_str(&format!("; last checkpoint {at}")),
                None => text.push_str("; no checkpoint stored"),
            }
        }
        let fields = match self.0.format {
            LogFormat::Json => serde_json::to_value(event).unwrap_or_default(),
            LogFormat::Text => serde_json::Value::Null,
        };
        let target = lease.map_or_else(|| "rsmld".to_owned(), |l| format!("rsmld[{l}]"));
        with_fields(self.0.format, fields, || {
            log::log!(target: &target, level, "{text}");
        });
    }
}

/// `rsmld serve`'s logging sink: like [`ChildLog`], for many leases at once. Each lease's
/// lines say `rsmld[application/shard]` (their log target); in json they carry `lease`,
/// `application` and `shard`; lines of no lease say `rsmld[-]` (json: those fields null).
/// Each lease has its own progress line per interval, from its start to its end.
#[derive(Clone)]
pub(super) struct ServerLog(Arc<ServerInner>);

struct ServerInner {
    format: LogFormat,
    /// The leases started and not ended, with their progress counts. Read by every event
    /// that counts (from every lease's thread and every worker), written at a lease's start
    /// and end only: so a read-write lock.
    leases: RwLock<std::collections::HashMap<LeaseId, Arc<LeaseLog>>>,
    /// The stream each attach named, by its serial (`LeaseId::serial`), while attached.
    streams: Mutex<std::collections::HashMap<u64, String>>,
}

/// One lease's progress and its names, in a [`ServerLog`].
struct LeaseLog {
    progress: Progress,
    /// The json fields naming the lease.
    names: serde_json::Value,
    /// The progress line's starting point.
    last: Mutex<(Instant, u64)>,
}

impl ServerLog {
    pub(super) fn new(format: LogFormat) -> Self {
        ServerLog(Arc::new(ServerInner {
            format,
            leases: RwLock::new(std::collections::HashMap::new()),
            streams: Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// Attach `serial` named `stream` (`Some`), or has ended (`None`).
    pub(super) fn attach_stream(&self, serial: u64, stream: Option<&str>) {
        let mut streams = self
            .0
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match stream {
            Some(s) => streams.insert(serial, s.to_owned()),
            None => streams.remove(&serial),
        };
    }

    fn stream_of(&self, lease: &LeaseId) -> Option<String> {
        let streams = self
            .0
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams
            .get(&lease.serial)
            .filter(|s| !s.is_empty())
            .cloned()
    }

    fn names(lease: &LeaseId) -> serde_json::Value {
        serde_json::json!({
            "lease": lease.to_string(),
            "application": &*lease.application,
            "shard": &*lease.shard,
        })
    }

    /// Writes a line that must be seen whatever the level (why the server stops).
    pub(super) fn print_error(&self, message: &str) {
        match self.0.format {
            LogFormat::Text => eprintln!("rsmld[-] ERROR {message}"),
            LogFormat::Json => {
                let mut buf = Vec::new();
                let _ = write_server_json(&mut buf, log::Level::Error, message, None);
                let _ = std::io::stderr().write_all(&buf);
            }
        }
    }

    /// Starts the progress lines' thread: every `interval`, one line per running lease.
    pub(super) fn start_progress(&self, interval: Duration) -> ProgressThread {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("rsmld-progress".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    me.progress_tick();
                }
            })
            .map_err(|e| log::debug!("no progress lines: cannot start their thread: {e}"))
            .ok();
        ProgressThread {
            stop: Some(stop),
            thread,
        }
    }

    fn progress_tick(&self) {
        let leases: Vec<(LeaseId, Arc<LeaseLog>)> = self
            .0
            .leases
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect();
        for (id, l) in leases {
            let mut last = l.last.lock().unwrap_or_else(PoisonError::into_inner);
            *last = progress_tick(
                self.0.format,
                &l.progress,
                &id.to_string(),
                Some(&l.names),
                *last,
            );
        }
    }

    /// Formats one log record (the env_logger formatter).
    fn format(&self, buf: &mut dyn Write, record: &log::Record<'_>) -> std::io::Result<()> {
        let target = record.target();
        match self.0.format {
            LogFormat::Text if target.starts_with("rsmld[") => {
                writeln!(buf, "{target} {} {}", record.level(), record.args())
            }
            LogFormat::Text => writeln!(buf, "rsmld[-] {} {}", record.level(), record.args()),
            LogFormat::Json => {
                let fields = EVENT_FIELDS.with(|f| f.borrow_mut().take());
                let message = record.args().to_string();
                write_server_json(buf, record.level(), &message, fields)
            }
        }
    }
}

/// The log line of `event` if its level is enabled. The hot path (per batch, per
/// completion) formats nothing at the default level.
fn enabled_line(event: &Event) -> Option<(log::Level, String)> {
    if quiet_at_info(event) && log::max_level() < log::LevelFilter::Debug {
        return None;
    }
    log_line(event).filter(|(level, _)| *level <= log::max_level())
}

/// One json line of the server: `ts`, `level`, `lease`, `application`, `shard` (null on
/// lines of no lease), `message`, and the event's fields.
fn write_server_json(
    out: &mut dyn Write,
    level: log::Level,
    message: &str,
    fields: Option<serde_json::Value>,
) -> std::io::Result<()> {
    let mut obj = match fields {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    obj.insert(
        "ts".into(),
        rfc3339_millis(std::time::SystemTime::now()).into(),
    );
    obj.insert("level".into(), level.as_str().into());
    for key in ["lease", "application", "shard"] {
        obj.entry(key).or_insert(serde_json::Value::Null);
    }
    obj.insert("message".into(), message.into());
    let mut line = serde_json::to_vec(&obj).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

impl Sink for ServerLog {
    fn emit(&self, lease: Option<&LeaseId>, event: &Event) {
        let leases = &self.0.leases;
        let entry = lease
            .filter(|_| Progress::counts(event))
            .and_then(|id| match event {
                Event::LeaseStarted { .. } => Some(
                    leases
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(id.clone())
                        .or_insert_with(|| {
                            Arc::new(LeaseLog {
                                progress: Progress::default(),
                                names: Self::names(id),
                                last: Mutex::new((Instant::now(), 0)),
                            })
                        })
                        .clone(),
                ),
                Event::LeaseEnded { .. } => leases
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(id),
                _ => leases
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(id)
                    .cloned(),
            });
        if let Some(l) = &entry {
            l.progress.record(event);
        }
        let Some((level, mut text)) = enabled_line(event) else {
            return;
        };
        let stream = match event {
            Event::LeaseStarted { .. } => lease.and_then(|id| self.stream_of(id)),
            _ => None,
        };
        if let Some(stream) = &stream {
            text.push_str(&format!(" (stream {stream})"));
        }
        if let (Event::LeaseEnded { .. }, Some(l)) = (event, &entry) {
            let c = l.progress.checkpoint.lock();
            match &*c.unwrap_or_else(PoisonError::into_inner) {
                Some((at, _)) => text.push_str(&format!("; last checkpoint {at}")),
                None => text.push_str("; no checkpoint stored"),
            }
        }
        let fields = match self.0.format {
            LogFormat::Json => {
                let mut v = serde_json::to_value(event).unwrap_or_default();
                if let (serde_json::Value::Object(m), Some(id)) = (&mut v, lease) {
                    if let serde_json::Value::Object(names) = Self::names(id) {
                        m.extend(names);
                    }
                    if let Some(stream) = stream {
                        m.insert("stream".into(), stream.into());
                    }
                }
                v
            }
            LogFormat::Text => serde_json::Value::Null,
        };
        let target = lease.map_or_else(|| "rsmld".to_owned(), |l| format!("rsmld[{l}]"));
        with_fields(self.0.format, fields, || {
            log::log!(target: &target, level, "{text}");
        });
    }
}

/// The progress line's thread; dropping it stops it.
pub(super) struct ProgressThread {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ProgressThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the logger: `--log-level` (or `RUST_LOG` when set, which wins and may filter
/// per module), formatted by `child`.
pub(super) fn init(child: ChildLog, level: LogLevel) {
    init_with(move |buf, record| child.format(buf, record), level);
}

/// [`init`] for `rsmld serve`, formatted by `server`.
pub(super) fn init_server(server: ServerLog, level: LogLevel) {
    init_with(move |buf, record| server.format(buf, record), level);
}

fn init_with(
    format: impl Fn(&mut env_logger::fmt::Formatter, &log::Record<'_>) -> std::io::Result<()>
        + Send
        + Sync
        + 'static,
    level: LogLevel,
) {
    let mut builder = match std::env::var_os("RUST_LOG") {
        Some(v) if !v.is_empty() => env_logger::Builder::from_env(env_logger::Env::default()),
        _ => {
            let mut b = env_logger::Builder::new();
            b.filter_level(level.filter());
            b
        }
    };
    builder
        .format(format)
        .target(env_logger::Target::Stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_lease_and_the_event_fields() {
        let log = ChildLog::new(LogFormat::Json);
        let lease = LeaseId::new("", "shardId-000000000007");
        log.emit(Some(&lease), &Event::ItemsCompleted { items: 3 });
        let mut buf = Vec::new();
        let fields = serde_json::to_value(Event::Backpressure {
            waited: Duration::from_millis(1500),
        })
        .unwrap();
        log.write_json(&mut buf, log::Level::Warn, "hello", Some(fields))
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(line["shard"], "shardId-000000000007");
        assert_eq!(line["lease"], "shardId-000000000007");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "hello");
        assert_eq!(line["event"], "Backpressure");
        assert_eq!(line["waited"], 1.5);
        assert!(line["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_796_156_200_123);
        assert_eq!(rfc3339_millis(t), "2026-12-01T20:16:40.123Z");
        assert_eq!(
            rfc3339_millis(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(log.0.progress.items.load(Ordering::Relaxed), 3);
    }
}
