#!/usr/bin/env python3
# rsmld exec handler in Python (item framing): appends each item's payload, decoded, as one
# line to the file $1, then answers for it. Plain print() is enough: rsmld starts its
# children with PYTHONUNBUFFERED=1 (unless you set it), so every answer leaves at once.
#
#   rsmld --handler exec -- /opt/app/handler.py /var/lib/out/payloads.txt
import base64
import json
import sys


def handle(item, out):
    out.write(base64.b64decode(item["data"], validate=True) + b"\n")


with open(sys.argv[1], "ab") as out:
    for n, line in enumerate(sys.stdin, start=1):  # n: this line's unit number
        try:
            handle(json.loads(line), out)
            out.flush()
            print(f"ok {n}")
        except Exception as e:  # noqa: BLE001  any failure is the answer; one line: no newline in the message
            print(f"err {n} {' '.join(str(e).split())}")
