#!/usr/bin/env python3
# rsmld exec handler in Python (batch framing, `--exec-framing batch`): each line is one
# batch, {"batch":N,"items":[...]}. Appends each item's payload, decoded, as one line to the
# file $1; names every item that failed in an `err N.I message` line (I: the item's 1-based
# position in the batch), then answers `ok N` for the rest of the batch.
#
#   rsmld --handler exec --exec-framing batch -- /opt/app/batch.py /var/lib/out/payloads.txt
import base64
import json
import sys

with open(sys.argv[1], "ab") as out:
    for line in sys.stdin:
        batch = json.loads(line)
        n = batch["batch"]
        for i, item in enumerate(batch["items"], start=1):
            try:
                out.write(base64.b64decode(item["data"], validate=True) + b"\n")
            except Exception as e:  # noqa: BLE001  any failure is the answer; one line: no newline in the message
                print(f"err {n}.{i} {' '.join(str(e).split())}")
        out.flush()
        print(f"ok {n}")
