//! Signals through the binary: SIGHUP, SIGINT and SIGTERM (a closing terminal, Ctrl-C, a
//! service manager signalling the whole process group) do not stop rsmld — shutdown is
//! the daemon's to drive — and stdin EOF still ends it with exit 0.

use crate::common;

use std::time::Duration;

use common::{args, initialize, process_records, record, seq, Proc};

/// Sends `sig` to the running rsmld.
fn signal(p: &Proc, sig: libc::c_int) {
    let pid = p.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Each signal in turn, each followed by a batch that rsmld must process and checkpoint;
/// then EOF: exit 0. Before issue 10 the SIGHUP killed rsmld.
#[test]
fn sighup_sigint_and_sigterm_are_ignored_and_eof_still_exits_0() {
    let mut p = Proc::spawn(&args(&[
        "--handler",
        "discard",
        "--checkpoint-interval",
        "0",
        "--max-in-flight",
        "0",
    ]));
    let mut model = initialize(&mut p);
    let mut n = 0;
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal(&p, sig);
        // The signal is delivered before kill returns (to a process that is not blocking
        // it); give a default disposition time to act anyway.
        std::thread::sleep(Duration::from_millis(100));
        let records: Vec<_> = (0..10)
            .map(|_| {
                n += 1;
                record(n, "k")
            })
            .collect();
        let reqs = process_records(&mut p, &mut model, records)
            .unwrap_or_else(|e| panic!("after signal {sig}: {e}"));
        assert_eq!(reqs.len(), 1, "after signal {sig}: {reqs:?}");
        assert_eq!(
            model.last.as_ref().unwrap().seq.as_str(),
            seq(n),
            "after signal {sig}"
        );
    }
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(10)).unwrap(),
        0,
        "{}",
        p.stderr()
    );
}
