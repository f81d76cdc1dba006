#!/usr/bin/env python3
"""A minimal stand-in record processor for the end-to-end harness (until rsmld runs there).

    stub_processor.py --output DIR [--no-batch-checkpoint]

Speaks the MultiLangDaemon protocol on stdin/stdout:
  initialize        -> status
  processRecords    -> append every record to DIR/<shardId>.jsonl, checkpoint at the last record
                       of a non-empty batch (unless --no-batch-checkpoint), then status
  shutdownRequested -> checkpoint(sequenceNumber null), status
  shardEnded        -> checkpoint(sequenceNumber null) -> SHARD_END, status
  leaseLost         -> status
  stdin EOF         -> exit 0
Output lines: {"shard", "partitionKey", "data" (base64 as received), "sequenceNumber",
"subSequenceNumber", "approximateArrivalTimestamp", "pid"}. SIGINT and SIGTERM are ignored: the
daemon ends a processor by closing its stdin.
"""
import json
import os
import signal
import sys


def main():
    out_dir, batch_checkpoint = None, True
    args = sys.argv[1:]
    while args:
        a = args.pop(0)
        if a == "--output" and args:
            out_dir = args.pop(0)
        elif a == "--no-batch-checkpoint":
            batch_checkpoint = False
        else:
            sys.exit(f"stub_processor: unknown argument {a!r}")
    if out_dir is None:
        sys.exit("usage: stub_processor.py --output DIR [--no-batch-checkpoint]")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.makedirs(out_dir, exist_ok=True)

    stdin, stdout = sys.stdin.buffer, sys.stdout
    shard, out = None, None

    def log(msg):
        print(f"stub[{shard}]: {msg}", file=sys.stderr, flush=True)

    def send(obj):
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    def read_message():
        while True:
            line = stdin.readline()
            if not line:
                return None
            if line.strip():
                return json.loads(line)

    def checkpoint(seq, sub=None):
        req = {"action": "checkpoint", "sequenceNumber": seq}
        if sub is not None:
            req["subSequenceNumber"] = sub
        send(req)
        reply = read_message()
        if reply is None:
            log("stdin EOF while waiting for a checkpoint reply")
            sys.exit(0)
        if reply.get("action") != "checkpoint":
            log(f"expected a checkpoint reply, got {reply!r}")
            sys.exit(1)
        if reply.get("error"):
            log(f"checkpoint {seq}/{sub} failed: {reply['error']}")

    while True:
        msg = read_message()
        if msg is None:
            log("stdin EOF, exiting")
            return 0
        action = msg.get("action")
        if action == "initialize":
            shard = msg.get("shardId")
            out = open(os.path.join(out_dir, f"{shard}.jsonl"), "a", encoding="utf-8")
        elif action == "processRecords":
            records = msg.get("records") or []
            for r in records:
                out.write(json.dumps({
                    "shard": shard,
                    "partitionKey": r.get("partitionKey"),
                    "data": r.get("data"),
                    "sequenceNumber": r.get("sequenceNumber"),
                    "subSequenceNumber": r.get("subSequenceNumber"),
                    "approximateArrivalTimestamp": r.get("approximateArrivalTimestamp"),
                    "pid": os.getpid(),
                }) + "\n")
            out.flush()
            if records and batch_checkpoint:
                last = records[-1]
                checkpoint(last.get("sequenceNumber"), last.get("subSequenceNumber"))
        elif action in ("shutdownRequested", "shardEnded"):
            if out is not None:
                out.flush()
            checkpoint(None)
            log(f"{action}: checkpointed")
        elif action == "leaseLost":
            log("leaseLost")
        else:
            log(f"unexpected action {action!r}")
        send({"action": "status", "responseFor": action})


if __name__ == "__main__":
    sys.exit(main())
