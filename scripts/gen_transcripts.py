#!/usr/bin/env python3
"""Writes the hand-made protocol transcripts under tests/transcripts/.

Each transcript is JSON lines, the same shape as the recordings of the real daemon
(shared/transcripts/kcl258_*.jsonl) plus a few directives for the player:

  {"dir":"start","args":[...]}        rsmld flags for this run (after the binary name)
  {"dir":"d2p","line":"..."}          the daemon writes this line to rsmld's stdin
  {"dir":"p2d","line":"..."}          rsmld must write this next (compared as JSON)
  {"dir":"sleep","ms":N}              time passes (real time, for both players)
  {"dir":"d_eof"}                     the daemon closes rsmld's stdin
  {"dir":"exit","rc":N}               rsmld exits with this code
  {"dir":"p_err","contains":"..."}    rsmld's stderr (or error) mentions this

Message shapes follow the recordings: records carry data, partitionKey, sequenceNumber,
approximateArrivalTimestamp, subSequenceNumber, action="record"; checkpoint replies echo the
request and add "error". Regenerate with: python3 scripts/gen_transcripts.py
"""
import base64
import json
import os

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "transcripts")
BASE = 49680445498841953494698307936256227907416662446197178370
SHARD = "shardId-000000000001"

# rsmld's exit codes (README, "Exit codes"): 1 its own work failed, 3 the daemon broke the
# protocol.
FAILURE = 1
PROTOCOL_ERROR = 3


def seq(i):
    return str(BASE + i * 1208925819614629174706176)


def rec(i, sub=0, pk=None, data=None):
    return {
        "data": base64.b64encode((data or f"record-{i}-{sub}").encode()).decode(),
        "partitionKey": pk or f"pk-{i % 5}",
        "sequenceNumber": seq(i),
        "approximateArrivalTimestamp": 1795310498058 + i,
        "subSequenceNumber": sub,
        "action": "record",
    }


def d2p(obj):
    return {"dir": "d2p", "line": json.dumps(obj, separators=(",", ":"))}


def p2d(obj):
    return {"dir": "p2d", "line": json.dumps(obj, separators=(",", ":"))}


def init(seqno="TRIM_HORIZON", sub=0):
    return [d2p({"action": "initialize", "shardId": SHARD, "sequenceNumber": seqno, "subSequenceNumber": sub}),
            p2d({"action": "status", "responseFor": "initialize"})]


def batch(records, behind=0):
    return d2p({"action": "processRecords", "records": records, "millisBehindLatest": behind})


def status(action):
    return p2d({"action": "status", "responseFor": action})


def cp(s, sub):
    return p2d({"action": "checkpoint", "sequenceNumber": s, "subSequenceNumber": sub})


def cp_reply(s, sub, error=None):
    return d2p({"action": "checkpoint", "sequenceNumber": s, "subSequenceNumber": sub, "error": error})


def end(rc=0):
    return [{"dir": "d_eof"}, {"dir": "exit", "rc": rc}]


SYNC = ["--handler", "discard", "--workers", "3", "--max-in-flight", "0"]

T = {}

# Periodic checkpoints: interval 0.2 s; batches inside the interval do not checkpoint.
T["normal_periodic"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0.2"]},
    *init(),
    batch([rec(0), rec(1), rec(2)]),
    status("processRecords"),
    {"dir": "sleep", "ms": 300},
    batch([rec(3), rec(4)]),
    cp(seq(4), 0), cp_reply(seq(4), 0),
    status("processRecords"),
    batch([rec(5)]),
    status("processRecords"),
    {"dir": "sleep", "ms": 300},
    batch([]),
    cp(seq(5), 0), cp_reply(seq(5), 0),
    status("processRecords"),
    {"dir": "sleep", "ms": 300},
    batch([]),  # nothing new since the last checkpoint: no checkpoint
    status("processRecords"),
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

# De-aggregated KPL user records share a sequence number: the checkpoint keeps the sub.
T["aggregated_subsequence"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(seq(0), 1),
    batch([rec(0, 2), rec(0, 3), rec(1, 0), rec(1, 1)]),
    cp(seq(1), 1), cp_reply(seq(1), 1),
    status("processRecords"),
    d2p({"action": "shardEnded"}),
    cp(None, None), cp_reply(None, None),
    status("shardEnded"),
    *end(),
]

T["shard_ended"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(0), rec(1)]),
    status("processRecords"),
    d2p({"action": "shardEnded"}),
    cp(None, None), cp_reply(None, None),
    status("shardEnded"),
    *end(),
]

T["shutdown_requested"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(0), rec(1), rec(2)]),
    status("processRecords"),
    d2p({"action": "shutdownRequested"}),
    cp(seq(2), 0), cp_reply(seq(2), 0),
    status("shutdownRequested"),
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

# Nothing delivered since the last checkpoint: shutdownRequested answers without one.
T["shutdown_requested_nothing_new"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(seq(7), 0),
    batch([]),
    status("processRecords"),
    d2p({"action": "shutdownRequested"}),
    status("shutdownRequested"),
    d2p({"action": "shardEnded"}),
    cp(None, None), cp_reply(None, None),
    status("shardEnded"),
    *end(),
]

T["lease_lost"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(0), rec(1)]),
    status("processRecords"),
    d2p({"action": "leaseLost"}),
    status("leaseLost"),
    *end(),
]

T["checkpoint_throttled_then_ok"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0), rec(1)]),
    cp(seq(1), 0), cp_reply(seq(1), 0, "ThrottlingException"),
    cp(seq(1), 0), cp_reply(seq(1), 0, "ThrottlingException"),
    cp(seq(1), 0), cp_reply(seq(1), 0),
    status("processRecords"),
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

# Dependency failures are retried a bounded number of times, then given up until the next
# interval: status still answers, and the next batch tries again.
T["checkpoint_dependency_exhausted"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0", "--checkpoint-retries", "2"]},
    *init(),
    batch([rec(0)]),
    cp(seq(0), 0), cp_reply(seq(0), 0, "KinesisClientLibDependencyException"),
    cp(seq(0), 0), cp_reply(seq(0), 0, "KinesisClientLibDependencyException"),
    cp(seq(0), 0), cp_reply(seq(0), 0, "KinesisClientLibDependencyException"),
    status("processRecords"),
    batch([rec(1)]),
    cp(seq(1), 0), cp_reply(seq(1), 0),
    status("processRecords"),
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

# ShutdownException: the lease is gone; no checkpoint is attempted again by this process,
# not even at shutdownRequested.
T["checkpoint_shutdown_exception"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0)]),
    cp(seq(0), 0), cp_reply(seq(0), 0, "ShutdownException"),
    status("processRecords"),
    batch([rec(1)]),
    status("processRecords"),
    d2p({"action": "shutdownRequested"}),
    status("shutdownRequested"),
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

T["checkpoint_invalid_state"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0)]),
    cp(seq(0), 0), cp_reply(seq(0), 0, "InvalidStateException"),
    status("processRecords"),
    {"dir": "p_err", "contains": "InvalidStateException"},
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

T["checkpoint_illegal_argument"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0)]),
    cp(seq(0), 0), cp_reply(seq(0), 0, "IllegalArgumentException"),
    status("processRecords"),
    batch([rec(1)]),
    cp(seq(1), 0), cp_reply(seq(1), 0),
    status("processRecords"),
    {"dir": "p_err", "contains": "IllegalArgumentException"},
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

# SHARD_END that cannot be stored is fatal: exit non-zero so the daemon restarts and a new
# owner redoes the shard end (answering status would strand the child shards).
T["shard_end_invalid_state_is_fatal"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(0)]),
    status("processRecords"),
    d2p({"action": "shardEnded"}),
    cp(None, None), cp_reply(None, None, "InvalidStateException"),
    {"dir": "exit", "rc": 1},
    {"dir": "p_err", "contains": "SHARD_END"},
]

T["legacy_shutdown_terminate"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(0)]),
    status("processRecords"),
    d2p({"action": "shutdown", "reason": "TERMINATE"}),
    cp(None, None), cp_reply(None, None),
    status("shutdown"),
    *end(),
]

T["legacy_shutdown_zombie"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0)]),
    cp(seq(0), 0), cp_reply(seq(0), 0),
    status("processRecords"),
    d2p({"action": "shutdown", "reason": "ZOMBIE"}),
    status("shutdown"),
    *end(),
]

T["eof_mid_stream"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(0), rec(1)]),
    status("processRecords"),
    *end(0),
]

T["malformed_line"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    {"dir": "d2p", "line": "{\"action\":\"processRecords\",\"records\":[{\"data\":\"aGk=\""},
    {"dir": "exit", "rc": PROTOCOL_ERROR},
    {"dir": "p_err", "contains": "line 2"},
    {"dir": "p_err", "contains": "processRecords"},
]

T["unexpected_action"] = [
    {"dir": "start", "args": SYNC},
    d2p({"action": "processRecords", "records": [], "millisBehindLatest": 0}),
    {"dir": "exit", "rc": PROTOCOL_ERROR},
    {"dir": "p_err", "contains": "unexpected processRecords message while waiting for initialize"},
]

T["unsolicited_checkpoint_reply"] = [
    {"dir": "start", "args": SYNC},
    *init(),
    cp_reply(seq(0), 0),
    {"dir": "exit", "rc": PROTOCOL_ERROR},
    {"dir": "p_err", "contains": "unexpected checkpoint message"},
]

T["empty_batches"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([]),
    status("processRecords"),
    batch([]),
    status("processRecords"),
    batch([rec(0)]),
    cp(seq(0), 0), cp_reply(seq(0), 0),
    status("processRecords"),
    batch([]),
    status("processRecords"),
    d2p({"action": "shardEnded"}),
    cp(None, None), cp_reply(None, None),
    status("shardEnded"),
    *end(),
]

# Unknown fields from a newer daemon are ignored; CRLF line ends and blank lines too.
T["lenient_decoding"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    d2p({"action": "initialize", "shardId": SHARD, "sequenceNumber": "LATEST", "subSequenceNumber": None, "future": 1}),
    status("initialize"),
    {"dir": "d2p", "line": ""},
    {"dir": "d2p", "line": json.dumps({"action": "processRecords", "records": [
        {"data": "aGk=", "partitionKey": "k", "sequenceNumber": seq(0), "extra": True},
    ], "millisBehindLatest": None}) + "\r"},
    cp(seq(0), 0), cp_reply(seq(0), 0),
    status("processRecords"),
    d2p({"action": "leaseLost", "reason": "whatever"}), status("leaseLost"),
    *end(),
]

# ---- Record order (issue 10): a duplicate is exactly a position delivered before in this
# lease; anything else at or below the last delivered record is a protocol error. Errors
# stop rsmld before the batch is dispatched: no checkpoint, no status.


def rec_with(i, **fields):
    r = rec(i)
    r.update(fields)
    return r


def fails(line_no, *texts, rc=PROTOCOL_ERROR):
    return [{"dir": "exit", "rc": rc}, {"dir": "p_err", "contains": f"daemon line {line_no}"},
            *({"dir": "p_err", "contains": t} for t in texts)]


# 5, 3, 4 in one batch: 3 and 4 were never delivered (today's main skipped them as
# duplicates and checkpointed 5).
T["order_backwards_in_batch"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(5), rec(3), rec(4)]),
    *fails(2, "goes backwards", seq(3) + "/0"),
]

# Backwards across batches (no checkpoint in between): 4 lies between delivered 2 and 5.
T["order_backwards_across_batches"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(2), rec(5)]),
    status("processRecords"),
    batch([rec(4)]),
    *fails(3, "goes backwards", seq(4) + "/0"),
]

# An aggregate's user records: sub 1 never came between delivered subs 0 and 2.
T["order_backwards_sub_sequence"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(1, 0), rec(1, 2), rec(1, 1)]),
    *fails(2, "goes backwards", seq(1) + "/1"),
]

# An exact re-delivery of positions above the checkpoint is a duplicate: skipped (warned),
# and the position still moves on to the new record after it.
T["order_redelivery_skipped"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(1), rec(2, 0), rec(2, 1), rec(3)]),
    status("processRecords"),
    batch([rec(2, 0), rec(2, 1), rec(3), rec(4)]),
    status("processRecords"),
    d2p({"action": "shutdownRequested"}),
    cp(seq(4), 0), cp_reply(seq(4), 0),
    status("shutdownRequested"),
    {"dir": "p_err", "contains": "delivered again"},
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

T["order_redelivery_fails_under_on_duplicate_fail"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60", "--on-duplicate", "fail"]},
    *init(),
    batch([rec(1), rec(2)]),
    status("processRecords"),
    batch([rec(2), rec(3)]),
    *fails(3, "delivered again", "--on-duplicate is fail", rc=FAILURE),
]

# The daemon drops records at or below the lease's checkpoint before it sends a batch.
T["order_at_the_lease_checkpoint"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(seq(5), 0),
    batch([rec(5), rec(6)]),
    *fails(2, "at or below the lease's checkpoint", seq(5) + "/0"),
]

# A checkpoint does not change what a duplicate is: a re-delivery of a checkpointed record
# is skipped (it was processed) ...
T["order_redelivery_after_a_checkpoint_skipped"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(1), rec(2)]),
    cp(seq(2), 0), cp_reply(seq(2), 0),
    status("processRecords"),
    batch([rec(2), rec(3)]),
    cp(seq(3), 0), cp_reply(seq(3), 0),
    status("processRecords"),
    {"dir": "p_err", "contains": "delivered again"},
    d2p({"action": "leaseLost"}), status("leaseLost"),
    *end(),
]

# ... and a record below a stored checkpoint that was never delivered still goes backwards.
T["order_backwards_below_a_stored_checkpoint"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(1), rec(3)]),
    cp(seq(3), 0), cp_reply(seq(3), 0),
    status("processRecords"),
    batch([rec(2)]),
    *fails(4, "goes backwards", seq(2) + "/0"),
]

# A sentinel is a lease position, never a record's (today's main took a SHARD_END record
# as the position, asked for a SHARD_END checkpoint inside processRecords and skipped
# every later record).
for sentinel in ["SHARD_END", "LATEST", "TRIM_HORIZON", "AT_TIMESTAMP"]:
    T[f"order_sentinel_{sentinel.lower()}_as_record"] = [
        {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
        *init(),
        batch([rec_with(0, sequenceNumber=sentinel), rec(1)]),
        *fails(2, "sentinel", sentinel),
    ]

T["order_negative_sub_sequence"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0, -1), rec(1)]),
    *fails(2, "negative sub-sequence number"),
]

# ---- Checkpoint replies echo the request, errors and the SHARD_END null request included
# (MultiLangProtocol.checkpoint writes the request's own fields back); one that does not is
# a reply to something else: a protocol error, whatever its verdict.
T["checkpoint_reply_other_sequence"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0), rec(1)]),
    cp(seq(1), 0), cp_reply(seq(0), 0),
    *fails(3, "does not echo the request", seq(1) + "/0"),
]

T["checkpoint_reply_other_sub_sequence"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(1, 0), rec(1, 1)]),
    cp(seq(1), 1), cp_reply(seq(1), 0),
    *fails(3, "does not echo the request"),
]

T["checkpoint_reply_error_other_sequence"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0"]},
    *init(),
    batch([rec(0), rec(1)]),
    cp(seq(1), 0), cp_reply(seq(0), 0, "ThrottlingException"),
    *fails(3, "does not echo the request"),
]

T["checkpoint_reply_shard_end_not_null"] = [
    {"dir": "start", "args": SYNC + ["--checkpoint-interval", "60"]},
    *init(),
    batch([rec(0)]),
    status("processRecords"),
    d2p({"action": "shardEnded"}),
    cp(None, None), cp_reply(seq(0), 0),
    *fails(4, "does not echo the request SHARD_END"),
]

# ---- `data` is standard padded base64, whatever --split does with it (none and kpl pass
# a plain payload through without decoding it; lines would deliver it whole).
for mode, data in [("none", "aGk"), ("none", "not base64!"), ("kpl", "aGk"), ("kpl", "84maw!!!"),
                   ("lines", "aGVsbG8")]:
    name = "base64_invalid_split_" + mode + ("_aggregate_magic" if data.startswith("84maw") else "")
    if name in T:
        name += "_text"
    T[name] = [
        {"dir": "start", "args": SYNC + ["--checkpoint-interval", "0", "--split", mode]},
        *init(),
        batch([rec(0), rec_with(1, data=data), rec(2)]),
        *fails(2, "not valid base64", seq(1) + "/0"),
    ]

os.makedirs(OUT, exist_ok=True)
for name, entries in T.items():
    with open(os.path.join(OUT, name + ".jsonl"), "w") as f:
        f.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
print(f"wrote {len(T)} transcripts to {os.path.normpath(OUT)}")
