//! Several leases on one runtime, in one process: each lease a protocol session on its own
//! streams, all of them on the same worker pool. Their items interleave on the same
//! workers, each lease's checkpoints cover only its own processed items (a daemon model
//! checks every request), and `leaseLost` on one lease leaves the others running to
//! their final checkpoint.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rsmld::codec::message::{Base64Text, DaemonMessage, ProcessorMessage, Record};
use rsmld::handler::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
use rsmld::pipeline::item::Item;
use rsmld::pipeline::split::{SplitMode, Splitter};
use rsmld::pool::PoolConfig;
use rsmld::protocol::message::Action;
use rsmld::protocol::sequence::{Esn, SequenceNumber};
use rsmld::protocol::session::SessionConfig;
use rsmld::runtime::{Runtime, RuntimeConfig};
use rsmld::telemetry::{LeaseId, NullSink};

const WORKERS: usize = 2;
const BATCHES: u64 = 8;
const RECORDS: u64 = 40;
/// The batch after which the lost lease gets `leaseLost` (and the others wait for it).
const LOST_AFTER: u64 = 3;

/// What the handlers did: per lease (shard), the positions of the items processed; and
/// per worker, the leases whose batches it ran.
#[derive(Default)]
struct Journal {
    done: HashMap<String, HashSet<Esn>>,
    leases_on_worker: HashMap<usize, HashSet<String>>,
}

/// The journal, even after a failed assertion elsewhere (which must fail the test, not
/// every handler after it).
fn lock(journal: &Mutex<Journal>) -> MutexGuard<'_, Journal> {
    journal.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Recorder {
    journal: Arc<Mutex<Journal>>,
    worker: usize,
}

impl Handler for Recorder {
    fn process(&mut self, lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        // Slow enough that leases have work queued on the workers at the same time.
        std::thread::sleep(Duration::from_millis(1));
        let mut j = lock(&self.journal);
        let shard = lease.shard.to_string();
        j.leases_on_worker
            .entry(self.worker)
            .or_default()
            .insert(shard.clone());
        let done = j.done.entry(shard).or_default();
        for item in items {
            done.insert(Esn::new(
                SequenceNumber::parse(item.sequence_number).unwrap(),
                item.sub_sequence_number,
            ));
        }
        Ok(())
    }
}

struct Factory(Arc<Mutex<Journal>>);

impl HandlerFactory for Factory {
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Recorder {
            journal: self.0.clone(),
            worker: ctx.worker,
        }))
    }
}

fn seq(i: u64) -> String {
    format!("{}", 49_000_000_000_000_000_000u128 + u128::from(i))
}

fn record(i: u64) -> Record {
    Record {
        data: Some(Base64Text::from("aGk=")),
        partition_key: format!("key-{}", i % 17),
        sequence_number: SequenceNumber::parse(&seq(i)).unwrap(),
        sub_sequence_number: Some(0),
        approximate_arrival_timestamp: Some(0),
    }
}

/// The daemon's side of one lease: sends lines, answers checkpoint requests (checking
/// each against what the handlers finished for this lease), and says what was stored.
struct Daemon {
    shard: String,
    out: UnixStream,
    input: BufReader<UnixStream>,
    journal: Arc<Mutex<Journal>>,
    /// Delivered records, in order.
    delivered: Vec<Esn>,
    /// Every checkpoint stored, in order.
    stored: Vec<Esn>,
}

impl Daemon {
    /// The daemon of `shard` on `stream`, after `initialize` (from TRIM_HORIZON).
    fn initialized(shard: &str, stream: UnixStream, journal: Arc<Mutex<Journal>>) -> Daemon {
        let mut d = Daemon {
            shard: shard.to_owned(),
            input: BufReader::new(stream.try_clone().unwrap()),
            out: stream,
            journal,
            delivered: Vec::new(),
            stored: Vec::new(),
        };
        d.action(&DaemonMessage::Initialize {
            shard_id: shard.to_owned(),
            sequence_number: Some(SequenceNumber::parse("TRIM_HORIZON").unwrap()),
            sub_sequence_number: Some(0),
        });
        d
    }

    fn send(&mut self, msg: &DaemonMessage) {
        let mut line = rsmld::json::to_ascii_vec(msg).unwrap();
        line.push(b'\n');
        self.out.write_all(&line).unwrap();
    }

    /// Sends an action and answers checkpoint requests until its status.
    fn action(&mut self, msg: &DaemonMessage) {
        self.send(msg);
        self.await_status(msg.action());
    }

    /// Answers checkpoint requests until the status of `action`.
    fn await_status(&mut self, action: Action) {
        loop {
            let mut line = String::new();
            assert!(
                self.input.read_line(&mut line).unwrap() > 0,
                "{}: stream closed before the status of {action:?}",
                self.shard,
            );
            match ProcessorMessage::decode(line.trim_end().as_bytes()).unwrap() {
                ProcessorMessage::Status { response_for } => {
                    assert_eq!(response_for, action, "{}", self.shard);
                    return;
                }
                ProcessorMessage::Checkpoint {
                    sequence_number,
                    sub_sequence_number,
                } => {
                    let at = Esn::new(
                        sequence_number.clone().expect("no SHARD_END in this test"),
                        sub_sequence_number.unwrap(),
                    );
                    self.check_checkpoint(&at);
                    self.stored.push(at);
                    self.send(&DaemonMessage::Checkpoint {
                        sequence_number: sequence_number.map(|s| s.as_str().to_owned()),
                        sub_sequence_number,
                        error: None,
                    });
                }
            }
        }
    }

    /// At-least-once, per lease: a checkpoint is a delivered position of this lease, never
    /// behind the last one, and every record up to it was processed by a handler *as an
    /// item of this lease*.
    fn check_checkpoint(&self, at: &Esn) {
        assert!(
            self.delivered.contains(at),
            "{}: {at} never delivered",
            self.shard
        );
        if let Some(last) = self.stored.last() {
            assert!(at >= last, "{}: checkpoint {at} behind {last}", self.shard);
        }
        let missing = {
            let j = lock(&self.journal);
            let done = j.done.get(&self.shard);
            self.delivered
                .iter()
                .filter(|e| *e <= at)
                .find(|e| !done.is_some_and(|d| d.contains(*e)))
                .cloned()
        };
        if let Some(esn) = missing {
            panic!(
                "{}: checkpoint {at} passes {esn}, which no handler finished for this lease",
                self.shard
            );
        }
    }

    fn batch(&mut self, b: u64) {
        self.batch_without_status(b);
        self.await_status(Action::ProcessRecords);
    }

    /// Sends batch `b` without waiting for its status.
    fn batch_without_status(&mut self, b: u64) {
        let records: Vec<Record> = (b * RECORDS..(b + 1) * RECORDS).map(record).collect();
        self.delivered.extend(records.iter().map(Record::esn));
        self.send(&DaemonMessage::ProcessRecords {
            records,
            millis_behind_latest: Some(0),
        });
    }
}

#[test]
fn leases_share_one_runtime_and_a_lost_lease_leaves_the_others_alone() {
    let journal = Arc::new(Mutex::new(Journal::default()));
    let config = RuntimeConfig {
        session: SessionConfig {
            checkpoint_interval: Duration::ZERO,
            max_in_flight: 30,
            ..SessionConfig::default()
        },
        pool: PoolConfig {
            workers: WORKERS,
            max_batch: 8,
            ..PoolConfig::default()
        },
        splitter: Splitter::new(SplitMode::None),
        handlers: Arc::new(Factory(journal.clone())),
        shutdown_timeout: Duration::from_secs(10),
        max_line_bytes: 1 << 20,
    };
    let rt = Runtime::start(config, Arc::new(NullSink)).unwrap();
    let shards = [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    ];
    let lost = shards[2];
    // Every lease stops after batch LOST_AFTER until the lost lease has its status (a
    // channel with a timeout, not a barrier: a failing lease must fail the test, not hang it).
    let (lost_tx, lost_rx) = mpsc::channel::<()>();
    let lost_rx = Mutex::new(lost_rx);
    let waiters = shards.len() - 1;
    let results: Vec<(String, Vec<Esn>, Vec<Esn>)> = std::thread::scope(|s| {
        let mut daemons = Vec::new();
        for shard in shards {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let rt = &rt;
            let input = theirs.try_clone().unwrap();
            s.spawn(move || {
                let stats = rt.run_lease(input, theirs).expect("lease fails");
                assert!(stats.records > 0);
            });
            let (journal, lost_tx, lost_rx) = (journal.clone(), lost_tx.clone(), &lost_rx);
            daemons.push(s.spawn(move || {
                let mut d = Daemon::initialized(shard, ours, journal);
                for b in 0..BATCHES {
                    d.batch(b);
                    if b == LOST_AFTER {
                        if shard == lost {
                            let stored = d.stored.len();
                            d.action(&DaemonMessage::LeaseLost);
                            assert_eq!(d.stored.len(), stored, "checkpoint after leaseLost");
                            for _ in 0..waiters {
                                lost_tx.send(()).unwrap();
                            }
                            break;
                        }
                        let got = lost_rx
                            .lock()
                            .unwrap()
                            .recv_timeout(Duration::from_secs(60));
                        got.expect("the lost lease never got its status");
                    }
                }
                if shard != lost {
                    d.action(&DaemonMessage::ShutdownRequested);
                    d.action(&DaemonMessage::LeaseLost);
                }
                d.out.shutdown(std::net::Shutdown::Write).unwrap();
                // The lease ends on EOF: nothing more comes.
                let mut rest = String::new();
                assert_eq!(d.input.read_line(&mut rest).unwrap(), 0, "{shard}: {rest}");
                (d.shard, d.delivered, d.stored)
            }));
        }
        daemons.into_iter().map(|d| d.join().unwrap()).collect()
    });
    for (shard, delivered, stored) in &results {
        if shard == lost {
            // Only what was checkpointed before the loss, all of it within its first batches.
            assert!(stored.iter().all(|e| delivered.contains(e)));
        } else {
            // Untouched by the other lease's loss: every record processed, and the final
            // checkpoint is the last record.
            assert_eq!(
                stored.last(),
                delivered.last(),
                "{shard}: final checkpoint is not the last record"
            );
            let j = lock(&journal);
            let done = &j.done[shard.as_str()];
            assert!(delivered.iter().all(|e| done.contains(e)), "{shard}");
        }
    }
    {
        let j = lock(&journal);
        // Interleaved on the same workers: every worker ran batches of every lease that
        // got past its first batch.
        for w in 0..WORKERS {
            let leases = &j.leases_on_worker[&w];
            assert!(
                leases.len() >= 2,
                "worker {w} ran only {leases:?}: leases do not share workers"
            );
        }
    }
    rt.shutdown().unwrap();
}

/// Holds every batch while `gate` is closed, then records it like [`Recorder`].
struct Gated {
    inner: Recorder,
    gate: Arc<AtomicBool>,
}

impl Handler for Gated {
    fn process(&mut self, lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        while !self.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.process(lease, items)
    }
}

struct GatedFactory(Arc<Mutex<Journal>>, Arc<AtomicBool>);

impl HandlerFactory for GatedFactory {
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Gated {
            inner: Recorder {
                journal: self.0.clone(),
                worker: ctx.worker,
            },
            gate: self.1.clone(),
        }))
    }
}

/// Items of `shard` the handlers finished.
fn done_of(journal: &Mutex<Journal>, shard: &str) -> usize {
    lock(journal).done.get(shard).map_or(0, HashSet::len)
}

/// A daemon for `shard` on a lease of `rt`, initialized; its lease's thread.
fn daemon_on<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    rt: &'s Runtime,
    shard: &str,
    journal: &Arc<Mutex<Journal>>,
) -> (Daemon, std::thread::ScopedJoinHandle<'s, ()>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let input = theirs.try_clone().unwrap();
    let lease = s.spawn(move || {
        rt.run_lease(input, theirs).expect("lease fails");
    });
    // Long enough for any machine; a status that never comes fails the test here.
    ours.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    (Daemon::initialized(shard, ours, journal.clone()), lease)
}

/// On a host server two leases per worker (`OVERLAP_PER_WORKER`) overlap a batch with the
/// next (answer before their items are done); the others answer once their items are
/// done, so that a host of many leases holds one line per lease, not two. A lease that
/// ends gives its slot back.
#[test]
fn on_a_host_only_two_leases_per_worker_answer_before_their_items_are_done() {
    assert_eq!(rsmld::runtime::OVERLAP_PER_WORKER, 2);
    let journal = Arc::new(Mutex::new(Journal::default()));
    let gate = Arc::new(AtomicBool::new(false));
    let config = RuntimeConfig {
        session: SessionConfig::default(),
        pool: PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        splitter: Splitter::new(SplitMode::None),
        handlers: Arc::new(GatedFactory(journal.clone(), gate.clone())),
        shutdown_timeout: Duration::from_secs(10),
        max_line_bytes: 1 << 20,
    };
    let rt = Runtime::start(config, Arc::new(NullSink)).unwrap();
    std::thread::scope(|s| {
        let (mut a, lease_a) = daemon_on(s, &rt, "shardId-000000000000", &journal);
        let (mut b, lease_b) = daemon_on(s, &rt, "shardId-000000000001", &journal);
        let (mut c, lease_c) = daemon_on(s, &rt, "shardId-000000000002", &journal);
        // A and B take the two slots: their statuses come while the handler holds their
        // items.
        a.batch(0);
        b.batch(0);
        assert_eq!(done_of(&journal, &a.shard) + done_of(&journal, &b.shard), 0);
        // C has none: no status while its items wait.
        c.batch_without_status(0);
        c.out
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut early = String::new();
        let got = c.input.read_line(&mut early);
        assert!(
            got.is_err(),
            "C answered before its items were done: {early:?}"
        );
        c.out
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        gate.store(true, Ordering::SeqCst);
        c.await_status(Action::ProcessRecords);
        assert_eq!(done_of(&journal, &c.shard), RECORDS as usize);
        // A ends and gives its slot back; C's next batch overlaps.
        a.action(&DaemonMessage::ShutdownRequested);
        a.out.shutdown(std::net::Shutdown::Write).unwrap();
        lease_a.join().unwrap();
        gate.store(false, Ordering::SeqCst);
        c.batch(1);
        assert_eq!(done_of(&journal, &c.shard), RECORDS as usize);
        gate.store(true, Ordering::SeqCst);
        for (d, lease) in [(b, lease_b), (c, lease_c)] {
            let mut d = d;
            d.action(&DaemonMessage::ShutdownRequested);
            assert_eq!(d.stored.last(), d.delivered.last());
            d.out.shutdown(std::net::Shutdown::Write).unwrap();
            lease.join().unwrap();
        }
    });
    rt.shutdown().unwrap();
}
