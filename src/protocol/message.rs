//! The wire messages, both directions, as the Java daemon (KCL 2.x/3.x, and 1.x's
//! `shutdown`) reads and writes them.
//!
//! Decoding is lenient, as the daemon may add fields and sends `null` freely: unknown
//! fields are ignored, and `subSequenceNumber`, `millisBehindLatest` and
//! `approximateArrivalTimestamp` may be missing or null. A daemon line is decoded through
//! one flat struct rather than serde's internally tagged enums, which would buffer a whole
//! 64 MiB `processRecords` line into an intermediate tree first.
//!
//! The types are generic over the record type `R` of `processRecords`: the protocol core
//! only counts records (it never sees a payload), while [`crate::codec`] decodes lines into
//! `DaemonMessage<codec::Record>` (payload views into the line's buffer) and the session
//! is fed the rest. The decoder itself (serde and the fast paths) lives in the codec.
//!
//! Encoding is strict, because the daemon's Jackson mapper fails on unknown properties and
//! then *skips the line*, leaving both sides waiting forever: a processor message carries
//! exactly the fields the daemon's model has, nothing more. The daemon-side encoders exist
//! for the test driver and the benchmark simulator, and reproduce the Java shapes (nulls
//! included).

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::sequence::{Esn, SequenceNumber};

/// The `action` of a message: what a `status` answers, and what the session is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// The first message: shard id and starting checkpoint.
    Initialize,
    /// A batch of records (possibly empty).
    ProcessRecords,
    /// A graceful shutdown (or KCL 3.x lease hand-off) is starting; checkpointing allowed.
    ShutdownRequested,
    /// The lease is gone; no checkpoint is possible.
    LeaseLost,
    /// The shard is closed and fully delivered; SHARD_END must be checkpointed.
    ShardEnded,
    /// KCL 1.x only: `shutdown` with a reason (TERMINATE or ZOMBIE).
    Shutdown,
    /// A checkpoint request (processor) or its reply (daemon).
    Checkpoint,
    /// The acknowledgement that ends every action.
    Status,
}

impl Action {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Initialize => "initialize",
            Action::ProcessRecords => "processRecords",
            Action::ShutdownRequested => "shutdownRequested",
            Action::LeaseLost => "leaseLost",
            Action::ShardEnded => "shardEnded",
            Action::Shutdown => "shutdown",
            Action::Checkpoint => "checkpoint",
            Action::Status => "status",
        }
    }

    /// The action of a wire spelling (`None`: not an action of the protocol).
    pub fn from_wire(s: &str) -> Option<Action> {
        Some(match s {
            "initialize" => Action::Initialize,
            "processRecords" => Action::ProcessRecords,
            "shutdownRequested" => Action::ShutdownRequested,
            "leaseLost" => Action::LeaseLost,
            "shardEnded" => Action::ShardEnded,
            "shutdown" => Action::Shutdown,
            "checkpoint" => Action::Checkpoint,
            "status" => Action::Status,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason of a KCL 1.x `shutdown`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The shard ended (2.x: `shardEnded`): checkpoint required.
    Terminate,
    /// The lease was lost (2.x: `leaseLost`): no checkpoint.
    Zombie,
    /// Any other reason string, kept for the error message.
    Other(String),
}

impl ShutdownReason {
    /// The reason of a wire spelling.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "TERMINATE" => ShutdownReason::Terminate,
            "ZOMBIE" => ShutdownReason::Zombie,
            other => ShutdownReason::Other(other.to_owned()),
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ShutdownReason::Terminate => "TERMINATE",
            ShutdownReason::Zombie => "ZOMBIE",
            ShutdownReason::Other(s) => s,
        }
    }
}

/// A message from the daemon to the processor; `R` is the record type of `processRecords`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonMessage<R> {
    /// `initialize`: the shard and the lease's current checkpoint.
    Initialize {
        /// The shard id, e.g. `shardId-000000000003`.
        shard_id: String,
        /// The lease checkpoint: digits or a sentinel; null only in theory.
        sequence_number: Option<SequenceNumber>,
        /// The checkpoint's sub-sequence number.
        sub_sequence_number: Option<i64>,
    },
    /// `processRecords`: a batch (possibly empty).
    ProcessRecords {
        /// The records, in shard order.
        records: Vec<R>,
        /// How far behind the tip of the shard this batch is.
        millis_behind_latest: Option<i64>,
    },
    /// `shutdownRequested`.
    ShutdownRequested,
    /// `leaseLost`.
    LeaseLost,
    /// `shardEnded`.
    ShardEnded,
    /// KCL 1.x `shutdown`.
    Shutdown {
        /// TERMINATE or ZOMBIE.
        reason: ShutdownReason,
    },
    /// The reply to a checkpoint request: an echo of the request plus `error`.
    Checkpoint {
        /// The requested sequence number, echoed.
        sequence_number: Option<String>,
        /// The requested sub-sequence number, echoed.
        sub_sequence_number: Option<i64>,
        /// null on success, else the Java exception's simple class name.
        error: Option<String>,
    },
}

impl<R> DaemonMessage<R> {
    /// The message's action.
    pub fn action(&self) -> Action {
        match self {
            DaemonMessage::Initialize { .. } => Action::Initialize,
            DaemonMessage::ProcessRecords { .. } => Action::ProcessRecords,
            DaemonMessage::ShutdownRequested => Action::ShutdownRequested,
            DaemonMessage::LeaseLost => Action::LeaseLost,
            DaemonMessage::ShardEnded => Action::ShardEnded,
            DaemonMessage::Shutdown { .. } => Action::Shutdown,
            DaemonMessage::Checkpoint { .. } => Action::Checkpoint,
        }
    }
}

/// A message from the processor to the daemon. Exactly the daemon model's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// `status`: ends the action named by `response_for`.
    Status {
        /// The action being acknowledged.
        response_for: Action,
    },
    /// `checkpoint` request. `sequence_number: None` means "everything delivered so far"
    /// (SHARD_END during `shardEnded`).
    Checkpoint {
        /// The sequence number to checkpoint at, or null.
        sequence_number: Option<SequenceNumber>,
        /// The sub-sequence number; always sent with a sequence number.
        sub_sequence_number: Option<i64>,
    },
}

impl ProcessorMessage {
    /// A checkpoint request at an extended sequence number.
    pub fn checkpoint_at(esn: &Esn) -> Self {
        ProcessorMessage::Checkpoint {
            sequence_number: Some(esn.seq.clone()),
            sub_sequence_number: Some(esn.sub),
        }
    }

    /// A checkpoint request with null fields (SHARD_END at shard end).
    pub fn checkpoint_null() -> Self {
        ProcessorMessage::Checkpoint {
            sequence_number: None,
            sub_sequence_number: None,
        }
    }

    /// Encodes the message as one compact ASCII JSON line, without the newline.
    #[expect(clippy::expect_used, reason = "messages serialize infallibly")]
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: these types serialize infallibly (strings, integers, null).
        crate::json::to_ascii_vec(self).expect("processor messages always serialize")
    }

    /// Decodes a processor line strictly, as the daemon does: unknown fields are errors.
    /// (Used by the test driver and the benchmark simulator.)
    pub fn decode(line: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
        enum Strict {
            Status {
                #[serde(rename = "responseFor")]
                response_for: Action,
            },
            Checkpoint {
                #[serde(rename = "sequenceNumber", default)]
                sequence_number: Option<SequenceNumber>,
                #[serde(rename = "subSequenceNumber", default)]
                sub_sequence_number: Option<i64>,
            },
        }
        Ok(match serde_json::from_slice::<Strict>(line)? {
            Strict::Status { response_for } => ProcessorMessage::Status { response_for },
            Strict::Checkpoint {
                sequence_number,
                sub_sequence_number,
            } => ProcessorMessage::Checkpoint {
                sequence_number,
                sub_sequence_number,
            },
        })
    }
}

impl Serialize for ProcessorMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ProcessorMessage::Status { response_for } => {
                let mut st = s.serialize_struct("status", 2)?;
                st.serialize_field("action", "status")?;
                st.serialize_field("responseFor", response_for.as_str())?;
                st.end()
            }
            ProcessorMessage::Checkpoint {
                sequence_number,
                sub_sequence_number,
            } => {
                let mut st = s.serialize_struct("checkpoint", 3)?;
                st.serialize_field("action", "checkpoint")?;
                st.serialize_field("sequenceNumber", sequence_number)?;
                st.serialize_field("subSequenceNumber", sub_sequence_number)?;
                st.end()
            }
        }
    }
}

impl<R: Serialize> Serialize for DaemonMessage<R> {
    /// The Java daemon's shapes, nulls included (used by test drivers and the simulator).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DaemonMessage::Initialize {
                shard_id,
                sequence_number,
                sub_sequence_number,
            } => {
                let mut st = s.serialize_struct("initialize", 4)?;
                st.serialize_field("action", "initialize")?;
                st.serialize_field("shardId", shard_id)?;
                st.serialize_field("sequenceNumber", sequence_number)?;
                st.serialize_field("subSequenceNumber", sub_sequence_number)?;
                st.end()
            }
            DaemonMessage::ProcessRecords {
                records,
                millis_behind_latest,
            } => {
                let mut st = s.serialize_struct("processRecords", 3)?;
                st.serialize_field("action", "processRecords")?;
                st.serialize_field("records", records)?;
                st.serialize_field("millisBehindLatest", millis_behind_latest)?;
                st.end()
            }
            DaemonMessage::ShutdownRequested
            | DaemonMessage::LeaseLost
            | DaemonMessage::ShardEnded => {
                let mut st = s.serialize_struct("action", 1)?;
                st.serialize_field("action", self.action().as_str())?;
                st.end()
            }
            DaemonMessage::Shutdown { reason } => {
                let mut st = s.serialize_struct("shutdown", 2)?;
                st.serialize_field("action", "shutdown")?;
                st.serialize_field("reason", reason.as_str())?;
                st.end()
            }
            DaemonMessage::Checkpoint {
                sequence_number,
                sub_sequence_number,
                error,
            } => {
                let mut st = s.serialize_struct("checkpoint", 4)?;
                st.serialize_field("action", "checkpoint")?;
                st.serialize_field("sequenceNumber", sequence_number)?;
                st.serialize_field("subSequenceNumber", sub_sequence_number)?;
                st.serialize_field("error", error)?;
                st.end()
            }
        }
    }
}
