//! The transcript players themselves (`rsmld::testkit`): the in-process peer takes the
//! production path, acknowledge-ahead included, and both players fail a transcript whose
//! expectations the processor does not meet.

use crate::common;

use common::{load, play_binary, play_in_process, transcripts_dir};

/// The in-process player drives the production path, acknowledge-ahead included: a large
/// line (>= 64 KiB, >= 256 records) is answered while the pool's handler still holds every
/// one of its items, and the checkpoint after `shutdownRequested` covers the last record
/// only once they are all processed.
#[test]
fn in_process_peer_acknowledges_ahead_of_the_pool() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use rsmld::codec::message::{Action, ProcessorMessage};
    use rsmld::handler::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
    use rsmld::pipeline::item::Item;
    use rsmld::telemetry::LeaseId;
    use rsmld::testkit::encode::{batch, record_with_text};
    use rsmld::testkit::in_process::{config_from_args, InProcess};
    use rsmld::testkit::transcript::{initialize, shutdown_requested, Peer};

    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
        processed: AtomicUsize,
    }
    struct Gated(Arc<Gate>);
    impl Handler for Gated {
        fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
            let mut open = self.0.open.lock().unwrap();
            while !*open {
                open = self.0.opened.wait(open).unwrap();
            }
            self.0.processed.fetch_add(items.len(), Ordering::SeqCst);
            Ok(())
        }
    }
    struct GatedFactory(Arc<Gate>);
    impl HandlerFactory for GatedFactory {
        fn create(&self, _: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
            Ok(Box::new(Gated(self.0.clone())))
        }
    }

    let gate = Arc::new(Gate::default());
    let mut config =
        config_from_args(&common::args(&["--handler", "discard", "--workers", "2"])).unwrap();
    config.handlers = Arc::new(GatedFactory(gate.clone()));
    let mut peer = InProcess::start(config);
    let mut model = initialize(&mut peer).unwrap();
    let records: Vec<_> = (1..=300)
        .map(|i| record_with_text(i, &format!("key-{i}"), &"x".repeat(300)))
        .collect();
    let last = records.last().unwrap().esn();
    let l = batch(&mut model, records);
    assert!(l.len() >= 64 * 1024, "{} bytes", l.len());
    peer.send(&l);
    let got = peer.recv(Duration::from_secs(20)).unwrap();
    assert_eq!(
        ProcessorMessage::decode(got.as_bytes()).unwrap(),
        ProcessorMessage::Status {
            response_for: Action::ProcessRecords
        },
        "{got}"
    );
    assert_eq!(
        gate.processed.load(Ordering::SeqCst),
        0,
        "answered after the items"
    );
    *gate.open.lock().unwrap() = true;
    gate.opened.notify_all();
    let requests = shutdown_requested(&mut peer, &mut model).unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(model.last, Some(last));
    assert_eq!(gate.processed.load(Ordering::SeqCst), 300);
    peer.close_input();
    assert_eq!(peer.wait(Duration::from_secs(10)).unwrap(), 0);
    assert_eq!(peer.stats().unwrap().completed, 300);
}

/// Both players fail a transcript whose expectations the processor does not meet: a
/// different status, a different exit code, stderr text that is not there (the in-process
/// peer sees the error line of a failed run).
#[test]
fn players_reject_wrong_expectations() {
    use common::Entry;

    let dir = transcripts_dir();
    let normal = load(&dir.join("normal_periodic.jsonl"));
    let mut wrong_status = normal.clone();
    let at = wrong_status
        .iter()
        .position(|e| matches!(e, Entry::P2d(l) if l.contains("processRecords")))
        .unwrap();
    wrong_status[at] =
        Entry::P2d(r#"{"action":"status","responseFor":"shutdownRequested"}"#.into());
    let mut wrong_exit = normal.clone();
    for e in &mut wrong_exit {
        if let Entry::Exit(rc) = e {
            *rc = 3;
        }
    }
    let mut failing = load(&dir.join("malformed_line.jsonl"));
    assert!(failing.contains(&Entry::Exit(3)), "{failing:?}");
    failing.push(Entry::PErr("text no error line contains".into()));
    for (what, entries) in [
        ("wrong status", &wrong_status),
        ("wrong exit", &wrong_exit),
        ("missing stderr text", &failing),
    ] {
        assert!(play_in_process(entries).is_err(), "in-process: {what}");
        assert!(play_binary(entries).is_err(), "binary: {what}");
    }
    assert_eq!(play_in_process(&normal), Ok(()));
}
