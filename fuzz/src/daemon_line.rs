//! Invariants of the daemon line decoder, checked on any bytes:
//! - decoding never panics;
//! - the copying decoder and the shared-buffer decoder agree exactly (same message,
//!   or both an error);
//! - a decoded message re-encoded in the Java daemon's shape decodes to itself;
//! - the parallel path (structural scan + per-record parse) gives exactly the records
//!   of the full decoder whenever it accepts a line, and never completes a line the
//!   full decoder rejects;
//! - a scan begun while the line arrives (in pieces) and finished on the whole line
//!   finds exactly what one scan of the whole line finds.
#![allow(clippy::expect_used, reason = "a panic reports a broken invariant")]

use std::sync::Arc;

use rsmld::codec::message::{decode_record_at, DaemonMessage, LineBuf};
use rsmld::codec::scan::{scan_process_records, scan_resumed, Prescan};

/// Checks the invariants; returns whether `line` decoded as a message.
pub fn check_daemon_line(line: &[u8]) -> bool {
    let copied = DaemonMessage::decode(line);
    let mut padded = line.to_vec();
    padded.extend_from_slice(b"\r\n");
    let shared_buf = Arc::new(LineBuf::new(padded, None));
    let shared = DaemonMessage::decode_shared(&shared_buf, line.len());
    match (&copied, &shared) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "decode and decode_shared disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "one decoder accepted what the other refused: {:?} vs {:?}",
            copied.as_ref().map(|_| ()),
            shared.as_ref().map(|_| ())
        ),
    }
    let whole = scan_process_records(line);
    let step = 1 + line.len() / 7;
    let mut prescan = Prescan::default();
    let mut at = 0;
    while at < line.len() {
        at = (at + step).min(line.len());
        prescan.advance(&line[..at]);
    }
    let resumed = scan_resumed(line, prescan);
    assert_eq!(
        resumed
            .as_ref()
            .map(|l| (&l.records, l.millis_behind_latest)),
        whole.as_ref().map(|l| (&l.records, l.millis_behind_latest)),
        "a scan resumed after a prescan differs from a whole scan"
    );
    if let Some(layout) = whole {
        let fast: Result<Vec<_>, _> = layout
            .records
            .iter()
            .map(|r| decode_record_at(&shared_buf, r.clone(), None))
            .collect();
        match (&copied, fast) {
            (
                Ok(DaemonMessage::ProcessRecords {
                    records,
                    millis_behind_latest,
                }),
                Ok(fast),
            ) => {
                assert_eq!(
                    records, &fast,
                    "the parallel path decoded different records"
                );
                assert_eq!(
                    *millis_behind_latest, layout.millis_behind_latest,
                    "millisBehindLatest differs"
                );
            }
            (Ok(other), Ok(_)) => panic!("scan accepted a line that decodes as {other:?}"),
            (Err(_), Ok(_)) => panic!("the parallel path accepted a line the full decoder rejects"),
            (_, Err(_)) => {}
        }
    }
    let Ok(msg) = copied else {
        return false;
    };
    let again = serde_json::to_vec(&msg).expect("daemon messages serialize");
    let back = DaemonMessage::decode(&again).expect("re-encoded message decodes");
    assert_eq!(back, msg, "re-encoding changed the message");
    true
}
