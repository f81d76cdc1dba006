#!/usr/bin/env python3
"""Writes the hand-made protocol transcripts under tests/transcripts/.

Each transcript is JSON lines, the same shape as the recordings of the real daemon
(shared/transcripts/kcl258_*.jsonl) plus a few directives for the player:

  {"dir":"start","args":[...]}        rsmld flags for this run (after the binary name)
  {"dir":"d2p","line":"..."}          the daemon writes this line to rsmld's stdin
  {"dir":"p2d","line":"..."}          rsmld must write this next (compared as JSON)
  {"dir":"sleep","ms":N}              time passes (real time for the binary, virtual in-process)
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
    {"dir": "exit", "rc": 1},
    {"dir": "p_err", "contains": "line 2"},
    {"dir": "p_err", "contains": "processRecords"},
]

T["unexpected_action"] = [
    {"dir": "start", "args": SYNC},
    d2p({"action": "processRecords", "records": [], "millisBehindLatest": 0}),
    {"dir": "exit", "rc": 1},
    {"dir": "p_err", "contains": "unexpected processRecords message while waiting for initialize"},
]

T["unsolicited_checkpoint_reply"] = [
    {"dir": "start", "args": SYNC},
    *init(),
    cp_reply(seq(0), 0),
    {"dir": "exit", "rc": 1},
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

os.makedirs(OUT, exist_ok=True)
for name, entries in T.items():
    with open(os.path.join(OUT, name + ".jsonl"), "w") as f:
        for e in entries:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
print(f"wrote {len(T)} transcripts to {os.path.normpath(OUT)}")
