//! The completion form for handlers that pipeline: a must-complete acknowledgement token.
//!
//! A handler that talks to something with its own latency and its own concurrency (an
//! HTTP sink, a database with asynchronous commits) should not hold its worker for a
//! round trip per batch. [`Handler::submit`](super::Handler::submit) takes a batch and an
//! [`Ack`], and may return at once: the handler sends the items on their way and resolves
//! the ack later, from any thread — [`Ack::done`] when every item is durably done,
//! [`Ack::fail`] with a [`BatchError`] otherwise. The worker meanwhile hands the handler
//! its next batches. What the ack says goes through the same failure policy as the
//! result of [`Handler::process`](super::Handler::process) (retry, dead letter, fail the
//! lease), and the items count as in flight until then, so `--max-in-flight` still bounds
//! everything a lease has outstanding.
//!
//! An `Ack` that is dropped unresolved **fails** its items (a handler that lost track of
//! a batch, a panic, a connection torn down with its callbacks): it never counts them as
//! done. That is what makes the form safe for at-least-once: no path through a handler
//! can make a batch "delivered" without saying so. With `--item-timeout`, an ack still
//! unresolved after that long fails its batch too (its late resolution is ignored); the
//! watchdog's interrupter only ever concerns the `submit` call itself.

use crossbeam_channel::Sender;

use super::{BatchError, HandlerError};

/// The message of the failure an unresolved, dropped [`Ack`] reports.
pub const DROPPED: &str =
    "the handler dropped the acknowledgement of this batch without resolving it; its items are not done";

/// How a batch ended, as its [`Ack`] says (sent to the worker that handed it out).
#[derive(Debug)]
pub(crate) struct Resolution {
    /// Which batch (the worker's number for it).
    pub(crate) batch: u64,
    /// What the handler said: done, or which items failed.
    pub(crate) result: Result<(), BatchError>,
}

/// The acknowledgement of one submitted batch: resolve it exactly once, from any thread.
/// Dropping it unresolved fails the batch (see the module docs).
#[must_use = "an Ack dropped unresolved fails its batch"]
#[derive(Debug)]
pub struct Ack {
    batch: u64,
    /// `None` once resolved.
    to: Option<Sender<Resolution>>,
}

impl Ack {
    /// The ack of batch `batch`, resolving to `to`.
    pub(crate) fn new(batch: u64, to: Sender<Resolution>) -> Ack {
        Ack {
            batch,
            to: Some(to),
        }
    }

    /// Every item of the batch is done (durably, as far as the handler promises): a
    /// checkpoint may cover them.
    pub fn done(self) {
        self.resolve(Ok(()));
    }

    /// The batch failed: every item ([`BatchError::Batch`]) or the items named
    /// ([`BatchError::Items`]; the others are done).
    pub fn fail(self, error: BatchError) {
        self.resolve(Err(error));
    }

    /// Resolves with the result of a synchronous call (what [`Handler::process`]
    /// returned).
    ///
    /// [`Handler::process`]: super::Handler::process
    pub fn resolve(mut self, result: Result<(), BatchError>) {
        self.send(result);
    }

    fn send(&mut self, result: Result<(), BatchError>) {
        if let Some(to) = self.to.take() {
            // The worker is gone (its pool shut down): nobody waits for the answer.
            let _ = to.send(Resolution {
                batch: self.batch,
                result,
            });
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.send(Err(BatchError::Batch(HandlerError::new(DROPPED))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_resolves_once_and_a_dropped_one_fails() {
        let (tx, rx) = crossbeam_channel::unbounded();
        Ack::new(1, tx.clone()).done();
        Ack::new(2, tx.clone()).fail(BatchError::Items(vec![(0, HandlerError::new("x"))]));
        drop(Ack::new(3, tx.clone()));
        let ack = Ack::new(4, tx);
        std::thread::spawn(move || ack.resolve(Ok(())))
            .join()
            .unwrap();
        let got: Vec<Resolution> = rx.try_iter().collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(
            got[0],
            Resolution {
                batch: 1,
                result: Ok(())
            }
        ));
        assert!(matches!(&got[1].result, Err(BatchError::Items(v)) if v.len() == 1));
        match &got[2] {
            Resolution {
                batch: 3,
                result: Err(BatchError::Batch(e)),
            } => assert_eq!(e.message, DROPPED),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            got[3],
            Resolution {
                batch: 4,
                result: Ok(())
            }
        ));
    }
}
