//! The daemon's checkpoint bookkeeping, as the Java MultiLangDaemon keeps it
//! (shared/reference mld-protocol.md §2.1, "checkpoint"): one model for the tests and the
//! simulator.

use crate::codec::message::{Action, DaemonMessage, ProcessorMessage, Record};
use crate::protocol::sequence::{Esn, Sentinel, SequenceNumber};

/// Answers checkpoint requests the way the Java daemon does: a request must lie in
/// [last checkpoint, largest delivered] (SHARD_END is the upper bound during `shardEnded`);
/// null means "largest permitted" (SHARD_END during `shardEnded`); there is no checkpointer
/// during `initialize` and `leaseLost`; the reply echoes the request.
#[derive(Clone, Debug, Default)]
pub struct CheckpointModel {
    /// The last stored checkpoint (the lease's, from `initialize`, until one is stored).
    pub last: Option<Esn>,
    /// The largest ESN delivered so far (`largestPermitted`).
    pub largest: Option<Esn>,
    /// `shardEnded` was sent: SHARD_END is permitted (and what null means).
    pub shard_ended: bool,
    /// Every checkpoint stored, in order.
    pub stored: Vec<Esn>,
    /// How many requests were refused.
    pub refused: u64,
}

impl CheckpointModel {
    /// A model whose lease checkpoint is `initial`.
    pub fn at(initial: Esn) -> Self {
        CheckpointModel {
            last: Some(initial),
            ..CheckpointModel::default()
        }
    }

    /// Sets the lease checkpoint that `initialize` announces.
    pub fn initialize(&mut self, seq: Option<&str>, sub: Option<i64>) {
        self.last = seq.map(|s| {
            Esn::new(
                SequenceNumber::parse(s).expect("test sequence number"),
                sub.unwrap_or(0),
            )
        });
    }

    /// Notes every record of a batch as delivered (see [`CheckpointModel::deliver`]).
    pub fn deliver_all(&mut self, records: &[Record]) {
        for r in records {
            self.deliver(r.esn());
        }
    }

    /// Notes `esn` as delivered: the daemon raises `largestPermitted` before it sends a batch.
    pub fn deliver(&mut self, esn: Esn) {
        if self.largest.as_ref().is_none_or(|l| esn > *l) {
            self.largest = Some(esn);
        }
    }

    /// SHARD_END, as an ESN.
    pub fn shard_end() -> Esn {
        Esn::new(SequenceNumber::sentinel(Sentinel::ShardEnd), 0)
    }

    /// Decides a checkpoint request made while the daemon waits for `during`'s status
    /// (`None`: during an action that has a checkpointer), stores it if accepted, and
    /// returns the error the daemon replies with, if any.
    pub fn decide(
        &mut self,
        during: Option<Action>,
        sequence_number: Option<&SequenceNumber>,
        sub_sequence_number: Option<i64>,
    ) -> Option<&'static str> {
        if matches!(during, Some(Action::Initialize | Action::LeaseLost)) {
            self.refused += 1;
            return Some("InvalidStateException");
        }
        let target = match sequence_number {
            None if self.shard_ended => Some(Self::shard_end()),
            None => self.largest.clone(),
            Some(s) => Some(Esn::new(s.clone(), sub_sequence_number.unwrap_or(0))),
        };
        let upper = if self.shard_ended {
            Some(Self::shard_end())
        } else {
            self.largest.clone()
        };
        let in_range = |t: &Esn| {
            self.last.as_ref().is_none_or(|l| t >= l) && upper.as_ref().is_some_and(|u| t <= u)
        };
        match target {
            Some(t) if in_range(&t) => {
                self.last = Some(t.clone());
                self.stored.push(t);
                None
            }
            _ => {
                self.refused += 1;
                Some("IllegalArgumentException")
            }
        }
    }

    /// The daemon's reply: an echo of the request, plus `error`.
    pub fn reply(
        sequence_number: Option<&SequenceNumber>,
        sub_sequence_number: Option<i64>,
        error: Option<&str>,
    ) -> DaemonMessage {
        DaemonMessage::Checkpoint {
            sequence_number: sequence_number.map(|s| s.as_str().to_owned()),
            sub_sequence_number,
            error: error.map(str::to_owned),
        }
    }

    /// Answers `request` (a checkpoint request made while the daemon waits for `during`):
    /// the reply message and the error, if refused.
    ///
    /// # Panics
    /// If `request` is not a checkpoint request.
    pub fn answer_during(
        &mut self,
        during: Option<Action>,
        request: &ProcessorMessage,
    ) -> (DaemonMessage, Option<&'static str>) {
        let ProcessorMessage::Checkpoint {
            sequence_number,
            sub_sequence_number,
        } = request
        else {
            panic!("not a checkpoint: {request:?}");
        };
        let error = self.decide(during, sequence_number.as_ref(), *sub_sequence_number);
        (
            Self::reply(sequence_number.as_ref(), *sub_sequence_number, error),
            error,
        )
    }

    /// Answers `request` during an action with a checkpointer: the reply line (no newline)
    /// and the error, if refused.
    pub fn answer(&mut self, request: &ProcessorMessage) -> (String, Option<&'static str>) {
        let (reply, error) = self.answer_during(None, request);
        (crate::testkit::encode::line(&reply), error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esn(i: u64) -> Esn {
        Esn::new(SequenceNumber::parse(&format!("{i}")).unwrap(), 0)
    }

    fn request(seq: Option<u64>) -> ProcessorMessage {
        ProcessorMessage::Checkpoint {
            sequence_number: seq.map(|i| SequenceNumber::parse(&format!("{i}")).unwrap()),
            sub_sequence_number: seq.map(|_| 0),
        }
    }

    #[test]
    fn range_echo_null_and_shard_end() {
        let mut m = CheckpointModel::at(esn(5));
        // Nothing delivered: no upper bound, nothing is permitted.
        assert_eq!(m.answer(&request(None)).1, Some("IllegalArgumentException"));
        m.deliver(esn(10));
        m.deliver(esn(8)); // not larger: largest stays 10
        assert_eq!(m.largest, Some(esn(10)));
        assert_eq!(
            m.answer(&request(Some(4))).1,
            Some("IllegalArgumentException")
        );
        assert_eq!(
            m.answer(&request(Some(11))).1,
            Some("IllegalArgumentException")
        );
        let (reply, error) = m.answer(&request(Some(7)));
        assert_eq!(error, None);
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"action":"checkpoint","sequenceNumber":"7","subSequenceNumber":0,"error":null})
        );
        // Below the stored one now.
        assert_eq!(
            m.answer(&request(Some(6))).1,
            Some("IllegalArgumentException")
        );
        // Null: the largest delivered, echoed as null.
        let (reply, error) = m.answer(&request(None));
        assert_eq!(error, None);
        assert!(reply.contains(r#""sequenceNumber":null"#), "{reply}");
        assert_eq!(m.last, Some(esn(10)));
        m.shard_ended = true;
        assert_eq!(m.answer(&request(None)).1, None);
        assert_eq!(m.last, Some(CheckpointModel::shard_end()));
        assert_eq!(
            m.stored,
            vec![esn(7), esn(10), CheckpointModel::shard_end()]
        );
        assert_eq!(m.refused, 4);
    }

    #[test]
    fn no_checkpointer_during_initialize_and_lease_lost() {
        let mut m = CheckpointModel::at(esn(1));
        m.deliver(esn(3));
        for action in [Action::Initialize, Action::LeaseLost] {
            let (_, error) = m.answer_during(Some(action), &request(Some(2)));
            assert_eq!(error, Some("InvalidStateException"));
        }
        assert!(m.stored.is_empty());
        let (_, error) = m.answer_during(Some(Action::ShutdownRequested), &request(Some(2)));
        assert_eq!(error, None);
    }
}
