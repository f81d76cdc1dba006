//! Metrics: a telemetry [`Sink`] that counts what every lease does, in the Prometheus text
//! format.
//!
//! An operator asks three questions all day: is every shard moving, how far behind is it,
//! and is anything failing. [`MetricsSink`] answers them from the same [`Event`]s the log
//! sink writes, so nothing is counted on a path of its own: per lease (labels
//! `application` and `shard`) records and items, lag, work in flight, checkpoints by
//! outcome, failures, retries, dead letters, handler batch durations; for the process the
//! leases attached and the workers' busy time. [`dir`] writes one lease's metrics to a file
//! for node_exporter's textfile collector (child mode, `--metrics-dir`); a server renders
//! them all at `GET /metrics` ([`MetricsSink::scrape`]).
//!
//! The format is the classic Prometheus text exposition (version 0.0.4) of the `prometheus`
//! crate (TiKV's), not OpenMetrics: node_exporter's textfile collector and the Prometheus
//! Python client's `text_string_to_metric_families` read the classic format, and in it a
//! counter's family is named with its `_total` suffix, as the names below are. (The
//! `prometheus-client` crate writes OpenMetrics only, whose counter families drop `_total`
//! and which the textfile collector reads as untyped.)
//!
//! Cheap on the hot path: `emit` is called per batch from the lease loop and from every
//! worker. Each lease's series are resolved once, when it starts, into atomic handles; an
//! event costs a hash of its lease, a read lock on one of a few lease-map shards (whose
//! only writers are lease start and end) and a few atomic adds. Nothing allocates per
//! event.
//!
//! Bounded: a lease's series exist from its `LeaseStarted` to its end. After
//! `LeaseEnded` they stay for one more [`scrape`](MetricsSink::scrape) (so its final
//! counts are seen once) and are then removed; without scrapes they are removed
//! [`ENDED_LINGER`] after the end. A long-running server that sees thousands of leases
//! come and go keeps only the live ones. Events of a lease that never started (or was
//! already removed) are not attributed to it: they are counted in
//! `rsmld_unattributed_events_total{event}`, so a wiring mistake shows.

pub mod dir;
pub mod status;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::telemetry::{Event, LeaseEnd, LeaseId, Sink};
use status::LeaseStatus;

/// The `Content-Type` of [`MetricsSink::scrape`]'s text (the classic format, 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// How long the series of an ended lease stay when nobody scrapes.
pub const ENDED_LINGER: Duration = Duration::from_secs(300);

/// The labels of every per-lease series, in this order.
pub const LEASE_LABELS: [&str; 2] = ["application", "shard"];

/// The `outcome` label values of `rsmld_checkpoints_total`: `stored`, the daemon's
/// checkpoint errors by name, and `other` for any error name not in this list (the daemon's
/// error text is not trusted to keep the label's values few).
pub const CHECKPOINT_OUTCOMES: [&str; 7] = [
    "stored",
    "ThrottlingException",
    "KinesisClientLibDependencyException",
    "ShutdownException",
    "InvalidStateException",
    "IllegalArgumentException",
    "other",
];

/// Upper bounds of the handler batch duration histogram, in seconds: from a sub-millisecond
/// in-process handler to an exec child or a remote call taking seconds.
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Lease-map shards: emits of different leases rarely touch the same lock's cache line.
const SHARDS: usize = 8;

/// A per-lease integer counter: its index in [`COUNTERS`].
#[derive(Clone, Copy)]
enum C {
    Records,
    ReceivedBytes,
    ItemsReceived,
    Items,
    ItemFailures,
    ItemRetries,
    DeadLetters,
    Abandoned,
    Duplicates,
    RecordNotes,
    KplLost,
    ChildRestarts,
}

/// Name and help of each per-lease integer counter, in [`C`]'s order.
const COUNTERS: [(&str, &str); 12] = [
    ("rsmld_records_total", "Records received from the daemon (processRecords)."),
    ("rsmld_received_bytes_total", "Bytes of the daemon's processRecords lines (JSON, base64 payloads)."),
    ("rsmld_items_received_total", "Items the received records were split into and delivered to the workers."),
    ("rsmld_items_total", "Items completed by the workers (dead-lettered ones included)."),
    ("rsmld_item_failures_total", "Items a handler failed for good (no retry left): dead-lettered or failing the lease."),
    ("rsmld_item_retries_total", "Item retries scheduled after a handler failure."),
    ("rsmld_dead_letters_total", "Failed items written to the dead-letter directory (counted as done)."),
    ("rsmld_abandoned_items_total", "In-flight items dropped because the lease was lost."),
    ("rsmld_duplicate_records_total", "Records delivered again in the lease and skipped."),
    ("rsmld_record_notes_total", "Records delivered whole because they could not be split as configured, or KPL aggregates that broke off."),
    ("rsmld_kpl_user_records_lost_total", "KPL user records lost to corrupt aggregates."),
    ("rsmld_handler_child_restarts_total", "Exec handler children restarted."),
];

/// A per-lease integer gauge: its index in [`GAUGES`].
#[derive(Clone, Copy)]
enum G {
    MillisBehind,
    InFlightItems,
    InFlightBytes,
}

/// Name and help of each per-lease integer gauge, in [`G`]'s order.
const GAUGES: [(&str, &str); 3] = [
    ("rsmld_millis_behind_latest", "How far behind the tip of the shard the last batch was, as the daemon said (millisBehindLatest)."),
    ("rsmld_in_flight_items", "Items delivered and not yet completed."),
    ("rsmld_in_flight_bytes", "Bytes the unfinished records keep alive (what --max-in-flight-bytes bounds)."),
];

/// Why the metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The metrics library refused a definition or an encoding.
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The metrics directory could not be used.
    #[error("metrics directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// One lease's series, resolved once: every handle is an atomic shared with the registry.
struct LeaseMetrics {
    counters: [IntCounter; COUNTERS.len()],
    gauges: [IntGauge; GAUGES.len()],
    checkpoints: [IntCounter; CHECKPOINT_OUTCOMES.len()],
    last_checkpoint: Gauge,
    backpressure: Counter,
    batch_duration: Histogram,
    /// When the lease last had a problem (an item failure or retry, a dead letter, a
    /// checkpoint error, a child restart), in Unix milliseconds; 0: never. Not a series: the
    /// status page's "failing" state ([`status`]).
    last_problem: AtomicU64,
    /// A newer attachment of the same application+shard (`LeaseId::serial`) shares these
    /// series: the gauges are its to set, this one only counts.
    superseded: AtomicBool,
}

impl LeaseMetrics {
    fn count(&self, c: C, n: usize) {
        self.counters[c as usize].inc_by(n as u64);
    }

    fn set(&self, g: G, v: i64) {
        if !self.superseded.load(Ordering::Relaxed) {
            self.gauges[g as usize].set(v);
        }
    }

    /// Counts one event of this lease.
    fn record(&self, event: &Event) {
        if is_problem(event) {
            self.last_problem.store(unix_millis(), Ordering::Relaxed);
        }
        match event {
            Event::BatchReceived {
                records,
                bytes,
                millis_behind_latest,
                ..
            } => {
                self.count(C::Records, *records);
                self.count(C::ReceivedBytes, *bytes);
                if let Some(m) = millis_behind_latest {
                    self.set(G::MillisBehind, *m);
                }
            }
            Event::RecordsDelivered { items, .. } => self.count(C::ItemsReceived, *items),
            Event::InFlight { items, bytes, .. } => {
                self.set(G::InFlightItems, saturate(*items));
                self.set(G::InFlightBytes, saturate(*bytes));
            }
            Event::Draining { in_flight, .. } => self.set(G::InFlightItems, saturate(*in_flight)),
            Event::ItemsCompleted { items, .. } => self.count(C::Items, *items),
            Event::CheckpointStored { .. } => {
                self.checkpoints[0].inc();
                let now = SystemTime::now().duration_since(UNIX_EPOCH);
                self.last_checkpoint
                    .set(now.map_or(0.0, |d| d.as_secs_f64()));
            }
            Event::CheckpointFailed { error, .. } => {
                self.checkpoints[outcome_index(error)].inc();
            }
            Event::Abandoned { items, .. } => {
                self.count(C::Abandoned, *items);
                self.set(G::InFlightItems, 0);
                self.set(G::InFlightBytes, 0);
            }
            Event::ItemsFailed { items, retry, .. } => match retry {
                Some(_) => self.count(C::ItemRetries, *items),
                None => self.count(C::ItemFailures, *items),
            },
            Event::RetryScheduled { items, .. } => self.count(C::ItemRetries, *items),
            Event::DeadLettered { items, .. } => self.count(C::DeadLetters, *items),
            Event::BatchHandled { duration, .. } => {
                self.batch_duration.observe(duration.as_secs_f64());
            }
            Event::ChildRestarted { .. } => self.count(C::ChildRestarts, 1),
            Event::Backpressure { waited, .. } => self.backpressure.inc_by(waited.as_secs_f64()),
            Event::DuplicateSkipped { .. } => self.count(C::Duplicates, 1),
            Event::RecordNote {
                lost_user_records, ..
            } => {
                self.count(C::RecordNotes, 1);
                self.counters[C::KplLost as usize].inc_by(*lost_user_records);
            }
            _ => {}
        }
    }
}

/// Whether an event is a problem of its lease (what makes the status page say "failing").
fn is_problem(event: &Event) -> bool {
    matches!(
        event,
        Event::CheckpointFailed { .. }
            | Event::ItemsFailed { .. }
            | Event::RetryScheduled { .. }
            | Event::DeadLettered { .. }
            | Event::ChildRestarted { .. }
    )
}

/// Now, in Unix milliseconds (0 if the clock is before 1970).
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn saturate(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The index in [`CHECKPOINT_OUTCOMES`] of a checkpoint error name.
fn outcome_index(error: &str) -> usize {
    let last = CHECKPOINT_OUTCOMES.len() - 1;
    CHECKPOINT_OUTCOMES[1..last]
        .iter()
        .position(|k| *k == error)
        .map_or(last, |i| i + 1)
}

/// A short, fixed name of an event's kind (the `event` label of unattributed events).
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::LeaseStarted { .. } => "LeaseStarted",
        Event::BatchReceived { .. } => "BatchReceived",
        Event::RecordsDelivered { .. } => "RecordsDelivered",
        Event::ItemsCompleted { .. } => "ItemsCompleted",
        Event::CheckpointStored { .. } => "CheckpointStored",
        Event::CheckpointFailed { .. } => "CheckpointFailed",
        Event::ItemsFailed { .. } => "ItemsFailed",
        Event::DeadLettered { .. } => "DeadLettered",
        Event::BatchHandled { .. } => "BatchHandled",
        Event::LeaseEnded { .. } => "LeaseEnded",
        _ => "other",
    }
}

/// The metric families, registered once.
struct Families {
    counters: Vec<IntCounterVec>,
    gauges: Vec<IntGaugeVec>,
    checkpoints: IntCounterVec,
    last_checkpoint: GaugeVec,
    backpressure: CounterVec,
    batch_duration: HistogramVec,
    leases_attached: IntGauge,
    workers: IntGauge,
    busy: Counter,
    lease_ends: IntCounterVec,
    unattributed: IntCounterVec,
}

impl Families {
    fn register(registry: &Registry) -> Result<Self, MetricsError> {
        fn reg<T: Collector + Clone + 'static>(r: &Registry, c: T) -> Result<T, MetricsError> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let with_outcome = [LEASE_LABELS[0], LEASE_LABELS[1], "outcome"];
        let f = Families {
            counters: COUNTERS
                .iter()
                .map(|(n, h)| reg(registry, IntCounterVec::new(Opts::new(*n, *h), &LEASE_LABELS)?))
                .collect::<Result<_, _>>()?,
            gauges: GAUGES
                .iter()
                .map(|(n, h)| reg(registry, IntGaugeVec::new(Opts::new(*n, *h), &LEASE_LABELS)?))
                .collect::<Result<_, _>>()?,
            checkpoints: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("rsmld_checkpoints_total", "Checkpoint answers by outcome: stored, or the daemon's error name."),
                    &with_outcome,
                )?,
            )?,
            last_checkpoint: reg(
                registry,
                GaugeVec::new(
                    Opts::new("rsmld_last_checkpoint_timestamp_seconds", "When the daemon last stored a checkpoint of the lease (Unix time; 0: none yet)."),
                    &LEASE_LABELS,
                )?,
            )?,
            backpressure: reg(
                registry,
                CounterVec::new(
                    Opts::new("rsmld_backpressure_wait_seconds_total", "Time the lease waited under backpressure (the in-flight bounds)."),
                    &LEASE_LABELS,
                )?,
            )?,
            batch_duration: reg(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("rsmld_handler_batch_duration_seconds", "Wall time of a handler call, per batch.")
                        .buckets(DURATION_BUCKETS.to_vec()),
                    &LEASE_LABELS,
                )?,
            )?,
            leases_attached: reg(
                registry,
                IntGauge::new("rsmld_leases_attached", "Leases this process works on now.")?,
            )?,
            workers: reg(
                registry,
                IntGauge::new("rsmld_workers", "Worker threads of the pool.")?,
            )?,
            busy: reg(
                registry,
                Counter::new("rsmld_worker_busy_seconds_total", "Handler wall time of all workers: its rate is the number of workers busy on average.")?,
            )?,
            lease_ends: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("rsmld_lease_ends_total", "Leases that ended, by how."),
                    &["end"],
                )?,
            )?,
            unattributed: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("rsmld_unattributed_events_total", "Events of no lease, or of a lease that never started or was already removed: not counted per lease."),
                    &["event"],
                )?,
            )?,
        };
        for end in LEASE_ENDS {
            f.lease_ends.with_label_values(&[end_name(end)]);
        }
        Ok(f)
    }

    /// Creates a lease's series (at zero) and resolves their handles.
    fn lease(&self, id: &LeaseId) -> LeaseMetrics {
        let labels = [&*id.application, &*id.shard];
        let checkpoint = |outcome: &str| {
            self.checkpoints
                .with_label_values(&[labels[0], labels[1], outcome])
        };
        LeaseMetrics {
            counters: std::array::from_fn(|i| self.counters[i].with_label_values(&labels)),
            gauges: std::array::from_fn(|i| self.gauges[i].with_label_values(&labels)),
            checkpoints: std::array::from_fn(|i| checkpoint(CHECKPOINT_OUTCOMES[i])),
            last_checkpoint: self.last_checkpoint.with_label_values(&labels),
            backpressure: self.backpressure.with_label_values(&labels),
            batch_duration: self.batch_duration.with_label_values(&labels),
            last_problem: AtomicU64::new(0),
            superseded: AtomicBool::new(false),
        }
    }

    /// Removes a lease's series (handles still held keep counting into nothing).
    fn remove(&self, id: &LeaseId) {
        let labels = [&*id.application, &*id.shard];
        // A series that is already gone is no error here: removal is idempotent.
        for v in &self.counters {
            let _ = v.remove_label_values(&labels);
        }
        for v in &self.gauges {
            let _ = v.remove_label_values(&labels);
        }
        for outcome in CHECKPOINT_OUTCOMES {
            let _ = self
                .checkpoints
                .remove_label_values(&[labels[0], labels[1], outcome]);
        }
        let _ = self.last_checkpoint.remove_label_values(&labels);
        let _ = self.backpressure.remove_label_values(&labels);
        let _ = self.batch_duration.remove_label_values(&labels);
    }
}

const LEASE_ENDS: [LeaseEnd; 5] = [
    LeaseEnd::ShardEnded,
    LeaseEnd::ShutdownRequested,
    LeaseEnd::LeaseLost,
    LeaseEnd::Eof,
    LeaseEnd::Failed,
];

fn end_name(end: LeaseEnd) -> &'static str {
    match end {
        LeaseEnd::ShardEnded => "shard_ended",
        LeaseEnd::ShutdownRequested => "shutdown_requested",
        LeaseEnd::LeaseLost => "lease_lost",
        LeaseEnd::Eof => "eof",
        LeaseEnd::Failed => "failed",
    }
}

/// A lease in the map: its handles, and when and how it ended (`None`: live).
struct Entry {
    metrics: LeaseMetrics,
    /// When this lease of the id started (a shard leased again gets a new entry).
    started: Instant,
    ended: Option<Instant>,
    end: Option<LeaseEnd>,
}

/// The Prometheus metrics of every lease of the process: a telemetry [`Sink`].
///
/// Construct one per process, put it in the runtime's sink (a [`Fanout`](crate::telemetry::Fanout)
/// with the log sink), and render it with [`scrape`](Self::scrape) (a server) or hand it
/// to [`dir::start`] (child mode).
pub struct MetricsSink {
    registry: Registry,
    families: Families,
    leases: [RwLock<HashMap<LeaseId, Entry>>; SHARDS],
    /// The final status of ended leases whose series are removed, newest last, for the
    /// status page ([`status`]): bounded in number and age.
    retired: Mutex<VecDeque<LeaseStatus>>,
}

impl std::fmt::Debug for MetricsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSink")
            .field("leases", &self.leases().len())
            .finish()
    }
}

/// Removes `id`'s series unless another attachment of its application+shard in `map` (its
/// shard of the leases) still uses them.
fn remove_unshared(families: &Families, map: &HashMap<LeaseId, Entry>, id: &LeaseId) {
    let shared = map
        .keys()
        .any(|o| o.application == id.application && o.shard == id.shard);
    if !shared {
        families.remove(id);
    }
}

impl MetricsSink {
    /// A sink with every family registered and no lease yet.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let families = Families::register(&registry)?;
        Ok(MetricsSink {
            registry,
            families,
            leases: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            retired: Mutex::new(VecDeque::new()),
        })
    }

    fn shard(&self, id: &LeaseId) -> &RwLock<HashMap<LeaseId, Entry>> {
        // By the labels only: every attachment of one application+shard (`LeaseId::serial`)
        // is in the same map, which tells whether their shared series are still in use.
        let mut h = DefaultHasher::new();
        (&id.application, &id.shard).hash(&mut h);
        &self.leases[(h.finish() as usize) % SHARDS]
    }

    /// Runs `f` on the lease's handles, under the read lock of its shard (no clone of an
    /// `Arc` whose count every thread would write); `None` if the lease has no series.
    fn with_lease<R>(&self, id: &LeaseId, f: impl FnOnce(&LeaseMetrics) -> R) -> Option<R> {
        let map = self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(id).map(|e| f(&e.metrics))
    }

    /// A lease starts: fresh series (a previous, ended lease of the same id is removed
    /// first, so a shard leased again starts from zero: a counter reset, as for a restart).
    fn start(&self, id: &LeaseId) {
        let mut map = self
            .shard(id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(id) {
            Some(Entry { ended: None, .. }) => return, // started twice: keep counting
            Some(_) => self.families.remove(id),
            None => {}
        }
        // Another attachment of the same application+shard (`LeaseId::serial`) shares the
        // series: ended ones go now (a fresh start, as above), a live one keeps counting
        // (and leaves the gauges, a value each, to the new one).
        let same = |other: &LeaseId| other.application == id.application && other.shard == id.shard;
        if map
            .iter()
            .any(|(other, e)| same(other) && e.ended.is_none())
        {
            for (_, e) in map.iter().filter(|(other, _)| same(other)) {
                e.metrics.superseded.store(true, Ordering::Relaxed);
            }
        } else {
            let before = map.len();
            map.retain(|other, _| !same(other));
            if map.len() < before {
                self.families.remove(id);
            }
        }
        let metrics = self.families.lease(id);
        map.insert(
            id.clone(),
            Entry {
                metrics,
                started: Instant::now(),
                ended: None,
                end: None,
            },
        );
        drop(map);
        self.families.leases_attached.inc();
        self.retire_ended(|ended| ended.elapsed() >= ENDED_LINGER);
    }

    fn end(&self, id: &LeaseId, end: LeaseEnd) {
        let mut map = self
            .shard(id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(id) {
            if entry.ended.is_none() {
                entry.ended = Some(Instant::now());
                entry.end = Some(end);
                self.families.leases_attached.dec();
                self.families
                    .lease_ends
                    .with_label_values(&[end_name(end)])
                    .inc();
            }
        }
        drop(map);
        self.retire_ended(|ended| ended.elapsed() >= ENDED_LINGER);
    }

    /// Removes the series of ended leases for which `due(end)` holds; how many.
    fn retire_ended(&self, due: impl Fn(Instant) -> bool) -> usize {
        let mut n = 0;
        for shard in &self.leases {
            let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
            let mut gone = Vec::new();
            map.retain(|id, e| match e.ended {
                Some(at) if due(at) => {
                    self.keep_retired(id, e);
                    gone.push(id.clone());
                    n += 1;
                    false
                }
                _ => true,
            });
            for id in gone {
                remove_unshared(&self.families, &map, &id);
            }
        }
        n
    }

    /// Removes the series of `lease` if it has ended; whether it did.
    pub fn retire(&self, lease: &LeaseId) -> bool {
        let mut map = self
            .shard(lease)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(lease).is_some_and(|e| e.ended.is_some()) {
            if let Some(e) = map.remove(lease) {
                self.keep_retired(lease, &e);
            }
            remove_unshared(&self.families, &map, lease);
            return true;
        }
        false
    }

    /// The leases that have series now, each with whether it has ended, sorted.
    pub fn leases(&self) -> Vec<(LeaseId, bool)> {
        let mut all: Vec<(LeaseId, bool)> = self
            .leases
            .iter()
            .flat_map(|s| {
                let map = s.read().unwrap_or_else(PoisonError::into_inner);
                map.iter()
                    .map(|(id, e)| (id.clone(), e.ended.is_some()))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    /// Every series (the process's and every lease's) in the text format.
    pub fn render(&self) -> Result<String, MetricsError> {
        encode(self.registry.gather())
    }

    /// What `GET /metrics` answers: [`render`](Self::render), after which the leases that
    /// had ended before it are removed (their final counts were in this scrape).
    pub fn scrape(&self) -> Result<String, MetricsError> {
        let before = Instant::now();
        let text = self.render()?;
        self.retire_ended(|ended| ended <= before);
        Ok(text)
    }

    /// One lease's series only (no process series: node_exporter rejects a series that two
    /// files of its directory both hold); `None` if the lease has none.
    pub fn render_lease(&self, lease: &LeaseId) -> Result<Option<String>, MetricsError> {
        if self.with_lease(lease, |_| ()).is_none() {
            return Ok(None);
        }
        let mut families = self.registry.gather();
        for f in &mut families {
            f.mut_metric().retain(|m| {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                };
                label(LEASE_LABELS[0]).as_deref() == Some(&*lease.application)
                    && label(LEASE_LABELS[1]).as_deref() == Some(&*lease.shard)
            });
        }
        encode(families).map(Some)
    }
}

/// The text exposition of `families`, leaving out the ones with no series.
fn encode(mut families: Vec<MetricFamily>) -> Result<String, MetricsError> {
    families.retain(|f| !f.get_metric().is_empty());
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf)?;
    // The text encoder writes only UTF-8 (names, escaped label values, numbers).
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

impl Sink for MetricsSink {
    fn emit(&self, lease: Option<&LeaseId>, event: &Event) {
        match event {
            Event::BatchHandled { duration, .. } => {
                self.families.busy.inc_by(duration.as_secs_f64())
            }
            Event::WorkersStarted { workers, .. } => self.families.workers.set(saturate(*workers)),
            _ => {}
        }
        let Some(id) = lease else {
            if !matches!(
                event,
                Event::WorkersStarted { .. } | Event::BatchHandled { .. }
            ) {
                self.unattributed(event);
            }
            return;
        };
        if let Event::LeaseStarted { .. } = event {
            self.start(id);
        }
        if self.with_lease(id, |m| m.record(event)).is_none() {
            self.unattributed(event);
            return;
        }
        if let Event::LeaseEnded { end, .. } = event {
            self.end(id, *end);
        }
    }
}

impl MetricsSink {
    fn unattributed(&self, event: &Event) {
        self.families
            .unattributed
            .with_label_values(&[event_name(event)])
            .inc();
    }
}

#[cfg(test)]
mod tests;
