#!/usr/bin/env python3
"""Transparent recorder between the KCL MultiLangDaemon and a record processor.

Use it as the daemon's executableName (the daemon splits that value on spaces, with no shell and
no quoting, so no path may contain a space):

    executableName = python3 /abs/scripts/record.py --out /abs/rec -- /abs/processor --arg value

It starts the processor and relays, byte for byte and without buffering,
    its own stdin   -> the processor's stdin   (EOF is forwarded by closing the processor's stdin)
    processor stdout -> its own stdout
    processor stderr -> its own stderr
and exits with the processor's exit code (128+N if the processor died of signal N).

Every event is appended as one JSON object per line to OUT/<shardId>.jsonl (the shard comes from
the daemon's `initialize` message; events before it are held back and written then; a process
that never sees `initialize` writes OUT/pid-<pid>.jsonl). Fields, as in shared/transcripts:
    ts    wall-clock time (epoch seconds, float)      mono  monotonic clock (seconds)
    wpid  this recorder's pid                          seq   1, 2, ... per recorder process
    shard shard id, null until initialize is seen      dir   one of:
      start   the processor was started: cmd (argv), child_pid
      d2p     a line from the daemon to the processor: line, nl
      p2d     a line from the processor to the daemon: line, nl
      p_err   a line the processor wrote to stderr: line, nl
      d_eof   the daemon closed the processor's stdin
      p_eof   the processor closed its stdout
      exit    the processor exited: rc (negative = killed by that signal)
`line` is the text without its terminating "\\n" (a "\\r" before it is kept); `nl` is false only
for a last line that had no newline. Bytes that are not UTF-8 are replaced by U+FFFD in `line`
and the exact bytes are added as `b64`.

A line is logged before it is forwarded, so a response can never precede its request in the
file. SIGTERM and SIGHUP sent to the recorder are passed on to the processor; SIGINT is ignored
(a terminal's Ctrl-C reaches the processor directly, through the process group).
"""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

CHUNK = 1 << 16


class Recorder:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.lock = threading.Lock()
        self.seq = 0
        self.shard = None
        self.pending = []  # events (serialized) held back until the shard is known
        self.file = None
        self.wpid = os.getpid()

    def event(self, direction, **fields):
        with self.lock:
            self.seq += 1
            obj = {"ts": time.time(), "mono": time.monotonic(), "wpid": self.wpid, "seq": self.seq,
                   "shard": self.shard, "dir": direction}
            obj.update(fields)
            text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
            if self.file is None:
                self.pending.append(text)
            else:
                self._write(text)

    def _write(self, text):
        try:
            self.file.write(text)
            self.file.flush()
        except OSError as e:  # a full disk must not break the relay
            print(f"record.py: cannot write transcript: {e}", file=sys.stderr, flush=True)

    def set_shard(self, shard):
        with self.lock:
            if self.file is not None:
                return
            self.shard = shard
            self._open(shard)

    def _open(self, name):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "unknown"
        os.makedirs(self.out_dir, exist_ok=True)
        # kept open across writes; close() closes it
        self.file = open(os.path.join(self.out_dir, safe + ".jsonl"), "a", encoding="utf-8")  # noqa: SIM115
        for text in self.pending:
            self._write(text)
        self.pending = []

    def close(self):
        with self.lock:
            if self.file is None:
                self._open(f"pid-{self.wpid}")
            self.file.close()


def line_fields(raw, nl):
    text = raw.decode("utf-8", errors="replace")
    fields = {"line": text, "nl": nl}
    if "\ufffd" in text and text.encode("utf-8") != raw:
        fields["b64"] = base64.b64encode(raw).decode("ascii")
    return fields


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pump(src_fd, dst_fd, rec, direction, on_line=None, on_eof=None):
    """Copy src_fd to dst_fd chunk by chunk. Complete lines in a chunk are logged before the
    chunk is forwarded. If dst_fd breaks, keep draining src_fd (and logging) anyway."""
    parts = []  # pieces of the current, not yet terminated line (kept as a list: lines can be huge)
    dst_ok = True
    while True:
        try:
            chunk = os.read(src_fd, CHUNK)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if start < len(chunk):
                    parts.append(chunk[start:])
                break
            parts.append(chunk[start:end])
            raw = b"".join(parts)
            parts = []
            start = end + 1
            if on_line is not None:
                on_line(raw)
            rec.event(direction, **line_fields(raw, True))
        if dst_ok:
            try:
                write_all(dst_fd, chunk)
            except OSError:
                dst_ok = False
    if parts:
        raw = b"".join(parts)
        if on_line is not None:
            on_line(raw)
        rec.event(direction, **line_fields(raw, False))
    if on_eof is not None:
        on_eof()


def main(argv):
    out_dir = None
    args = list(argv)
    while args and args[0] != "--":
        a = args.pop(0)
        if a == "--out" and args:
            out_dir = args.pop(0)
        elif a.startswith("--out="):
            out_dir = a[len("--out="):]
        else:
            print(f"record.py: unknown argument {a!r}", file=sys.stderr)
            return 2
    if not args or out_dir is None or len(args) < 2:
        print("usage: record.py --out DIR -- PROCESSOR [ARGS...]", file=sys.stderr)
        return 2
    cmd = args[1:]

    rec = Recorder(os.path.abspath(out_dir))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, bufsize=0)
    except OSError as e:
        rec.event("start", cmd=cmd, child_pid=None, error=str(e))
        rec.close()
        print(f"record.py: cannot start {cmd[0]}: {e}", file=sys.stderr, flush=True)
        return 127
    rec.event("start", cmd=cmd, child_pid=child.pid)

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)

    def on_daemon_line(raw):
        if rec.shard is None and b'"initialize"' in raw:
            try:
                msg = json.loads(raw)
            except ValueError:
                return
            if isinstance(msg, dict) and msg.get("action") == "initialize" and msg.get("shardId"):
                rec.set_shard(str(msg["shardId"]))

    def stdin_eof():
        rec.event("d_eof")
        try:
            child.stdin.close()
        except OSError:
            pass

    child_in = child.stdin.fileno()
    threads = [
        threading.Thread(target=pump, args=(0, child_in, rec, "d2p", on_daemon_line, stdin_eof), daemon=True),
        threading.Thread(target=pump, args=(child.stdout.fileno(), 1, rec, "p2d", None,
                                            lambda: rec.event("p_eof")), daemon=True),
        threading.Thread(target=pump, args=(child.stderr.fileno(), 2, rec, "p_err"), daemon=True),
    ]
    for t in threads:
        t.start()
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    # Drain the processor's stdout and stderr to EOF before reporting the exit (bounded, in case
    # a grandchild inherited them and keeps them open).
    threads[1].join(10)
    threads[2].join(10)
    rec.event("exit", rc=rc)
    rec.close()
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
