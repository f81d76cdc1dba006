#!/usr/bin/env python3
# Benchmark processor (f): the naive rsmld exec child, as a new user would write it: json.loads
# of each line, one flushed answer per line. The same file serves both framings: a line's
# number is its unit, an item under --exec-framing item and a whole batch under batch.
import json
import sys

for n, line in enumerate(sys.stdin, start=1):
    json.loads(line)
    print(f"ok {n}", flush=True)
