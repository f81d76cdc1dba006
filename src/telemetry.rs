//! Telemetry: the named events of a running lease, and the sinks that consume them.
//!
//! Everything an operator may want to count, graph or read about a lease passes through
//! one closed set of [`Event`]s, so that logs, metrics and a status page see the same facts
//! and none of them has to be threaded through the code separately. The session (pure)
//! returns events among its outputs; the lease, the pool and the handlers emit them to the
//! runtime's [`Sink`]. The default sink, [`LogSink`], writes the log lines rsmld has always
//! written; metrics and a status page are further sinks.
//!
//! This module is a leaf: events carry plain values (positions as text, counts, durations),
//! never protocol or pipeline types, so every layer may emit them.

use std::sync::Arc;
use std::time::Duration;

/// Which lease an event, an item or a block belongs to: the application (or stream) the
/// daemon consumes for, and the shard. In child mode the application may be unknown
/// (empty): the daemon does not tell its child.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LeaseId {
    /// The KCL application name or the stream, when known; empty otherwise.
    pub application: Arc<str>,
    /// The shard id, as `initialize` named it.
    pub shard: Arc<str>,
    /// Which attachment of this application and shard: a host server numbers its attaches
    /// (1, 2, ...), so a shard re-acquired while its previous lease's work is still pending
    /// is another lease (handlers keep their per-lease state apart). 0 in child mode. Not
    /// shown, and not a metrics label (metrics keep one series per application and shard).
    pub serial: u64,
}

impl LeaseId {
    /// The lease of `shard` in `application` (empty when unknown).
    pub fn new(application: &str, shard: &str) -> Self {
        LeaseId {
            application: Arc::from(application),
            shard: Arc::from(shard),
            serial: 0,
        }
    }

    /// This lease as attachment `serial` (see [`LeaseId::serial`]).
    pub fn with_serial(mut self, serial: u64) -> Self {
        self.serial = serial;
        self
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.application.is_empty() {
            f.write_str(&self.shard)
        } else {
            write!(f, "{}/{}", self.application, self.shard)
        }
    }
}

/// How a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum LeaseEnd {
    /// `shardEnded` (or 1.x `shutdown` TERMINATE): SHARD_END stored.
    ShardEnded,
    /// `shutdownRequested`: drained and checkpointed.
    ShutdownRequested,
    /// `leaseLost` (or 1.x `shutdown` ZOMBIE): queued work dropped, no checkpoint.
    LeaseLost,
    /// The daemon closed the input.
    Eof,
    /// The lease stopped with an error.
    Failed,
}

/// A named fact about a lease (or, with no lease, the process).
///
/// Serializes (for `--log-format json`) as an object with its name in `event` and its
/// fields, durations in seconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event")]
#[non_exhaustive]
pub enum Event {
    /// `initialize` arrived: the lease starts at `checkpoint` (`None`: no checkpoint yet).
    LeaseStarted {
        /// The shard, as `initialize` named it.
        shard: String,
        /// The stored checkpoint the lease starts after, as text.
        checkpoint: Option<String>,
    },
    /// The pool and handlers are ready for this lease.
    WorkersStarted {
        /// Worker threads.
        workers: usize,
        /// `--max-in-flight`.
        max_in_flight: usize,
        /// `--checkpoint-interval`.
        #[serde(serialize_with = "secs")]
        checkpoint_interval: Duration,
    },
    /// A `processRecords` batch arrived.
    BatchReceived {
        /// Records in the batch.
        records: usize,
        /// Bytes of the daemon line.
        bytes: usize,
        /// How far behind the tip of the shard, as the daemon said.
        millis_behind_latest: Option<i64>,
    },
    /// A batch was answered before it was decoded (acknowledge-ahead).
    AcknowledgedAhead {
        /// Records in the batch.
        records: usize,
    },
    /// Records of a batch were delivered to the tracker (a batch may come in parts).
    RecordsDelivered {
        /// Records in this part.
        records: usize,
        /// Their items.
        items: usize,
        /// How far behind the tip of the shard, as the daemon said.
        millis_behind_latest: Option<i64>,
    },
    /// A drain began (`shutdownRequested`, `shardEnded`).
    Draining {
        /// What the daemon asked for: `"shutdownRequested"`, `"shardEnded"`, ...
        action: &'static str,
        /// Items still in flight.
        in_flight: usize,
    },
    /// Items were completed by the workers.
    ItemsCompleted {
        /// How many.
        items: usize,
    },
    /// A record delivered again in this lease was skipped.
    DuplicateSkipped {
        /// The record's position.
        position: String,
        /// The last position delivered before it.
        last_delivered: String,
    },
    /// A record could not be split as configured and was delivered whole, or a KPL
    /// aggregate broke off.
    RecordNote {
        /// The record's position (`seq/sub`).
        position: String,
        /// What happened, readable.
        note: String,
        /// KPL user records lost (0 unless an aggregate broke off).
        lost_user_records: u64,
    },
    /// A checkpoint request went out.
    CheckpointRequested {
        /// Where: a position, or `SHARD_END`.
        position: String,
        /// 1-based attempt.
        attempt: u32,
    },
    /// The daemon stored a checkpoint.
    CheckpointStored {
        /// Where: a position, or `SHARD_END`.
        position: String,
    },
    /// A checkpoint failed.
    CheckpointFailed {
        /// Where it was asked for.
        position: String,
        /// The daemon's error name (`ThrottlingException`, ...).
        error: String,
        /// What happens next.
        next: CheckpointRetry,
    },
    /// The lease is lost: queued work dropped.
    Abandoned {
        /// The action that said so (`leaseLost`, `shutdown`).
        action: &'static str,
        /// Items that were in flight.
        items: usize,
    },
    /// The daemon closed the protocol stream (stdin).
    InputClosed {
        /// In which state.
        when: InputClosed,
    },
    /// The lease ended.
    LeaseEnded {
        /// How.
        end: LeaseEnd,
    },
    /// A handler failed items of this lease.
    ItemsFailed {
        /// The worker.
        worker: usize,
        /// How many items.
        items: usize,
        /// The first error, readable.
        error: String,
        /// The retry about to happen: its number (1-based) and delay; `None`: no retry.
        #[serde(serialize_with = "retry_secs")]
        retry: Option<(u32, Duration)>,
    },
    /// Failed items were written to the dead-letter directory and count as done.
    DeadLettered {
        /// The worker.
        worker: usize,
        /// How many items.
        items: usize,
    },
    /// A handler call took this long (for a batch of `items`).
    BatchHandled {
        /// The worker.
        worker: usize,
        /// Items in the batch.
        items: usize,
        /// Wall time of the handler call.
        #[serde(serialize_with = "secs")]
        duration: Duration,
    },
    /// An exec handler child was (re)started.
    ChildRestarted {
        /// The worker.
        worker: usize,
        /// Why the previous child ended.
        reason: String,
    },
    /// The lease waited under backpressure (the in-flight bounds) this long.
    Backpressure {
        /// How long.
        #[serde(serialize_with = "secs")]
        waited: Duration,
    },
    /// A handler failed items of this lease and the policy retries them.
    RetryScheduled {
        /// The worker.
        worker: usize,
        /// How many items.
        items: usize,
        /// The first failed item and its error, readable.
        error: String,
        /// Which retry this is (1-based).
        number: u32,
        /// How many retries the policy allows.
        of: u32,
        /// The delay before it.
        #[serde(serialize_with = "secs")]
        delay: Duration,
    },
    /// The lease's unfinished work after it changed (a delivery, a completion): what the
    /// in-flight bounds count. Metrics show it as gauges.
    InFlight {
        /// Items delivered and not yet completed.
        items: usize,
        /// Bytes the unfinished records keep alive (lines and item memory).
        bytes: usize,
    },
}

/// What follows a failed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum CheckpointRetry {
    /// Retried (retry `retry` of `of`) after `delay`.
    RetryIn {
        /// 1-based retry number.
        retry: u32,
        /// Retries allowed.
        of: u32,
        /// The backoff delay.
        #[serde(serialize_with = "secs")]
        delay: Duration,
    },
    /// Retries exhausted: the next interval tries again.
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// Checkpointing stops for the rest of the lease (`ShutdownException`).
    Stopped,
    /// Not retried (an error retrying cannot fix).
    NotRetried {
        /// The last stored checkpoint, if any.
        last_stored: Option<String>,
    },
}

/// When the daemon closed the protocol stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum InputClosed {
    /// After the final status: the normal end.
    AfterFinalStatus,
    /// Between actions, without `leaseLost` or `shardEnded`.
    BetweenActions {
        /// Items still in flight.
        in_flight: usize,
    },
    /// In the middle of an action, which goes unanswered.
    InAction {
        /// The action.
        action: &'static str,
    },
}

/// A duration as seconds (a float), as log shippers and Prometheus count time.
fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A retry (number, delay) as `{"number": n, "delay": seconds}`, or null.
fn retry_secs<S: serde::Serializer>(r: &Option<(u32, Duration)>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match r {
        None => s.serialize_none(),
        Some((number, delay)) => {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("number", number)?;
            m.serialize_entry("delay", &delay.as_secs_f64())?;
            m.end()
        }
    }
}

/// Consumes events. Called from the lease loop, the workers and the handlers, so it must
/// be cheap and must never block for long: a sink that needs IO buffers it.
pub trait Sink: Send + Sync {
    /// One event, of `lease` (`None`: of the process).
    fn emit(&self, lease: Option<&LeaseId>, event: &Event);
}

/// Discards every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn emit(&self, _lease: Option<&LeaseId>, _event: &Event) {}
}

/// Sends every event to each of several sinks, in order.
#[derive(Default)]
pub struct Fanout(pub Vec<Arc<dyn Sink>>);

impl Sink for Fanout {
    fn emit(&self, lease: Option<&LeaseId>, event: &Event) {
        for sink in &self.0 {
            sink.emit(lease, event);
        }
    }
}

/// Writes the log lines of events (through the `log` crate, so `RUST_LOG` applies).
///
/// Every line of a lease names the lease (its log target is `rsmld[<lease>]`), since the
/// daemon interleaves the stderr of all its children in its own log.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn emit(&self, lease: Option<&LeaseId>, event: &Event) {
        if quiet_at_info(event) && log::max_level() < log::LevelFilter::Debug {
            // The hot path (per batch, per completion) formats nothing at the default level.
            return;
        }
        let Some((level, text)) = log_line(event) else {
            return;
        };
        match lease {
            Some(lease) => {
                let target = format!("rsmld[{lease}]");
                log::log!(target: &target, level, "{text}");
            }
            None => log::log!(level, "{text}"),
        }
    }
}

/// Whether an event's line is below info (debug) or it has none: the events of the hot
/// path, which at the default level must cost no formatting (tests check this agrees with
/// [`log_line`]).
pub fn quiet_at_info(event: &Event) -> bool {
    matches!(
        event,
        Event::BatchReceived { .. }
            | Event::RecordsDelivered { .. }
            | Event::CheckpointRequested { .. }
            | Event::CheckpointStored { .. }
            | Event::AcknowledgedAhead { .. }
            | Event::InFlight { .. }
            | Event::ItemsCompleted { .. }
            | Event::BatchHandled { .. }
            | Event::Backpressure { .. }
            | Event::ItemsFailed { retry: None, .. }
            | Event::InputClosed {
                when: InputClosed::AfterFinalStatus
            }
    )
}

/// The log line of an event, and its level; `None` for events that are only counted.
pub fn log_line(event: &Event) -> Option<(log::Level, String)> {
    use log::Level::{Debug, Error, Info, Warn};
    Some(match event {
        Event::LeaseStarted { shard, checkpoint } => (
            Info,
            format!(
                "initialize: shard {shard} from checkpoint {}",
                checkpoint.as_deref().unwrap_or("null")
            ),
        ),
        Event::WorkersStarted {
            workers,
            max_in_flight,
            checkpoint_interval,
        } => (
            Info,
            format!(
                "started {workers} workers (max in flight {max_in_flight}, checkpoint interval {:.3} s)",
                checkpoint_interval.as_secs_f64()
            ),
        ),
        Event::BatchReceived {
            records,
            millis_behind_latest,
            ..
        } => (
            Debug,
            format!(
                "processRecords: {records} records, {} ms behind",
                millis_behind_latest.map_or("?".to_owned(), |m| m.to_string())
            ),
        ),
        Event::RecordsDelivered {
            records,
            items,
            millis_behind_latest,
        } => (
            Debug,
            format!(
                "processRecords: {records} records, {items} items, {} ms behind",
                millis_behind_latest.map_or("?".to_owned(), |m| m.to_string())
            ),
        ),
        Event::CheckpointRequested { position, attempt } => (
            Debug,
            format!("checkpoint request at {position} (attempt {attempt})"),
        ),
        Event::InputClosed { when } => match when {
            // The normal end: `lease ended` says it at info.
            InputClosed::AfterFinalStatus => {
                (Debug, "stdin closed after the final status; exiting".to_owned())
            }
            InputClosed::BetweenActions { in_flight } => (
                Warn,
                format!("stdin closed without leaseLost or shardEnded; exiting without a further checkpoint ({in_flight} items in flight)"),
            ),
            InputClosed::InAction { action } => (
                Warn,
                format!("stdin closed in the middle of {action}; exiting without answering it"),
            ),
        },
        Event::AcknowledgedAhead { .. }
        | Event::InFlight { .. }
        | Event::ItemsCompleted { .. }
        | Event::BatchHandled { .. }
        | Event::Backpressure { .. } => return None,
        Event::Draining { action, in_flight } => {
            (Info, format!("{action}: draining {in_flight} in-flight items"))
        }
        Event::DuplicateSkipped {
            position,
            last_delivered,
        } => (
            Warn,
            format!("record {position} delivered again (last delivered: {last_delivered}); skipping it"),
        ),
        Event::RecordNote { position, note, .. } => (Warn, format!("record {position}: {note}")),
        // Per checkpoint: the progress line carries the last one at info.
        Event::CheckpointStored { position } => (Debug, format!("checkpointed {position}")),
        Event::CheckpointFailed {
            position,
            error,
            next,
        } => match next {
            CheckpointRetry::RetryIn { retry, of, delay } => (
                Warn,
                format!(
                    "checkpoint at {position} failed with {error}; retry {retry} of {of} in {} ms",
                    delay.as_millis()
                ),
            ),
            CheckpointRetry::GaveUp { attempts } => (
                Error,
                format!("checkpoint at {position} failed with {error} after {attempts} attempts; giving up until the next interval"),
            ),
            CheckpointRetry::Stopped => (
                Warn,
                format!("checkpoint at {position} failed with {error}: the lease is gone; no more checkpoints in this process"),
            ),
            CheckpointRetry::NotRetried { last_stored } => (
                Error,
                format!(
                    "checkpoint at {position} failed with {error} (last stored: {}); not retrying it",
                    last_stored.as_deref().unwrap_or("none")
                ),
            ),
        },
        Event::Abandoned { action, items } => (
            Info,
            format!("{action} (lease lost): abandoning {items} in-flight items, no checkpoint"),
        ),
        Event::LeaseEnded { end } => (Info, format!("lease ended ({end:?})")),
        Event::ItemsFailed {
            worker,
            items,
            error,
            retry: Some((n, delay)),
        } => (
            Warn,
            format!(
                "worker {worker}: {items} item(s) failed (first: {error}); retry {n} in {} ms",
                delay.as_millis()
            ),
        ),
        // What follows (the lease's failure, a dead letter) has its own line.
        Event::ItemsFailed {
            worker,
            items,
            error,
            retry: None,
        } => (
            Debug,
            format!("worker {worker}: {items} item(s) failed (first: {error})"),
        ),
        Event::DeadLettered { worker, items } => {
            (Warn, format!("worker {worker}: {items} item(s) dead-lettered"))
        }
        Event::ChildRestarted { worker, reason } => (
            Warn,
            format!("worker {worker}: handler child restarted ({reason})"),
        ),
        Event::RetryScheduled {
            worker,
            items,
            error,
            number,
            of,
            delay,
        } => (
            Warn,
            format!(
                "worker {worker}: {items} item(s) failed (first: {error}); retry {number} of {of} in {} ms",
                delay.as_millis()
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Option<LeaseId>, Event)>>);

    impl Sink for Recorder {
        fn emit(&self, lease: Option<&LeaseId>, event: &Event) {
            self.0.lock().unwrap().push((lease.cloned(), event.clone()));
        }
    }

    #[test]
    fn fanout_reaches_every_sink_in_order() {
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        let fan = Fanout(vec![a.clone(), b.clone()]);
        let lease = LeaseId::new("app", "shardId-0");
        fan.emit(Some(&lease), &Event::ItemsCompleted { items: 3 });
        fan.emit(
            None,
            &Event::Backpressure {
                waited: Duration::ZERO,
            },
        );
        for r in [a, b] {
            let got = r.0.lock().unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].0.as_ref(), Some(&lease));
            assert_eq!(got[1].0, None);
        }
    }

    #[test]
    fn lease_ids_name_application_and_shard() {
        assert_eq!(LeaseId::new("", "shardId-1").to_string(), "shardId-1");
        assert_eq!(
            LeaseId::new("app", "shardId-1").to_string(),
            "app/shardId-1"
        );
    }

    #[test]
    fn checkpoint_lines_say_what_happens_next() {
        let retry = Event::CheckpointFailed {
            position: "1/0".into(),
            error: "ThrottlingException".into(),
            next: CheckpointRetry::RetryIn {
                retry: 1,
                of: 5,
                delay: Duration::from_millis(200),
            },
        };
        assert_eq!(
            log_line(&retry),
            Some((
                log::Level::Warn,
                "checkpoint at 1/0 failed with ThrottlingException; retry 1 of 5 in 200 ms".into()
            ))
        );
        assert_eq!(log_line(&Event::ItemsCompleted { items: 1 }), None);
    }

    /// The hot path's shortcut says "quiet" exactly for the events whose line is below
    /// info or absent, and checkpoints are per-checkpoint lines (debug).
    #[test]
    fn quiet_at_info_agrees_with_the_lines() {
        let d = Duration::from_millis(5);
        let events = [
            Event::LeaseStarted {
                shard: "s".into(),
                checkpoint: None,
            },
            Event::WorkersStarted {
                workers: 1,
                max_in_flight: 1,
                checkpoint_interval: d,
            },
            Event::BatchReceived {
                records: 1,
                bytes: 1,
                millis_behind_latest: None,
            },
            Event::AcknowledgedAhead { records: 1 },
            Event::RecordsDelivered {
                records: 1,
                items: 1,
                millis_behind_latest: Some(1),
            },
            Event::Draining {
                action: "shardEnded",
                in_flight: 0,
            },
            Event::ItemsCompleted { items: 1 },
            Event::DuplicateSkipped {
                position: "1/0".into(),
                last_delivered: "2/0".into(),
            },
            Event::RecordNote {
                position: "1/0".into(),
                note: "n".into(),
                lost_user_records: 0,
            },
            Event::CheckpointRequested {
                position: "1/0".into(),
                attempt: 1,
            },
            Event::CheckpointStored {
                position: "1/0".into(),
            },
            Event::CheckpointFailed {
                position: "1/0".into(),
                error: "e".into(),
                next: CheckpointRetry::Stopped,
            },
            Event::Abandoned {
                action: "leaseLost",
                items: 0,
            },
            Event::InputClosed {
                when: InputClosed::AfterFinalStatus,
            },
            Event::InputClosed {
                when: InputClosed::BetweenActions { in_flight: 0 },
            },
            Event::InputClosed {
                when: InputClosed::InAction {
                    action: "shardEnded",
                },
            },
            Event::LeaseEnded { end: LeaseEnd::Eof },
            Event::ItemsFailed {
                worker: 0,
                items: 1,
                error: "e".into(),
                retry: Some((1, d)),
            },
            Event::ItemsFailed {
                worker: 0,
                items: 1,
                error: "e".into(),
                retry: None,
            },
            Event::DeadLettered {
                worker: 0,
                items: 1,
            },
            Event::BatchHandled {
                worker: 0,
                items: 1,
                duration: d,
            },
            Event::ChildRestarted {
                worker: 0,
                reason: "r".into(),
            },
            Event::Backpressure { waited: d },
            Event::RetryScheduled {
                worker: 0,
                items: 1,
                error: "e".into(),
                number: 1,
                of: 2,
                delay: d,
            },
            Event::InFlight { items: 1, bytes: 1 },
        ];
        for e in &events {
            let below_info = log_line(e).is_none_or(|(level, _)| level > log::Level::Info);
            assert_eq!(quiet_at_info(e), below_info, "{e:?}");
        }
        assert_eq!(
            log_line(&Event::CheckpointStored {
                position: "1/0".into()
            })
            .map(|l| l.0),
            Some(log::Level::Debug)
        );
    }

    #[test]
    fn events_serialize_with_their_name_and_durations_in_seconds() {
        let e = Event::ItemsFailed {
            worker: 2,
            items: 3,
            error: "boom".into(),
            retry: Some((1, Duration::from_millis(250))),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"event": "ItemsFailed", "worker": 2, "items": 3,
                "error": "boom", "retry": {"number": 1, "delay": 0.25}})
        );
    }
}
