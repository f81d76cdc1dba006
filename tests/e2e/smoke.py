#!/usr/bin/env python3
"""End-to-end smoke test: a record processor under the real KCL 2.5.8 MultiLangDaemon.

    python3 tests/e2e/smoke.py                                  # with the Python stub processor
    python3 tests/e2e/smoke.py --processor "/abs/target/release/rsmld --handler file --output {output}"

What it does, on loopback only, with nothing left running afterwards:
  1. scripts/install-daemon.sh (idempotent; --skip-install to skip)
  2. scripts/emulators.sh start, with a state file private to this run
  3. a 2-shard stream; the lease table and one lease per shard created up front (so the daemon
     skips its random 5-30 s wait for an empty table); plain records and KPL aggregates put by
     aws-kinesis-agg, every user record written to a manifest
  4. scripts/run-daemon.sh with scripts/record.py wrapped around the processor (--no-record to
     run it bare); wait until every manifest record is in the output directory
  5. split shardId-000000000000, wait for SHARD_END in its lease, put more records, wait until the
     child shards' processors have written them too
  6. SIGTERM the daemon (shutdownGraceMillis > 0: every processor gets shutdownRequested, then
     leaseLost and EOF), then stop the emulators
  7. checks: every record exactly in its shard's output; transcripts (shardEnded answered with a
     successful checkpoint, shutdownRequested answered by every live processor, every status
     matching its action, every processor exited 0); lease table; daemon log free of fatal
     errors; no process of this run left alive
It exits 0 only if every check passed and prints a summary with timings.

--processor is the processor's command line. "{output}" in it is replaced by the output directory
(the processor must append one JSON line per user record there, in *.jsonl files, with at least
"partitionKey" and "data" as received, and preferably "shard" or "shardId"). No path may contain a space: the
daemon splits its executableName on spaces.
"""

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")
STATE = os.environ.get("RSMLD_STATE") or os.path.join(REPO, ".state")
VENV_PY = os.path.join(STATE, "venv", "bin", "python")
STUB = os.path.join(REPO, "tests", "e2e", "stub_processor.py")

FATAL_LOG_PATTERNS = [
    "Timedout to get status message",        # timeoutInSeconds expired: Runtime.halt
    "Encountered an error while running daemon",
    "Failed to start client executable",
    "Reached end of STDIN of child process",  # a processor died mid-protocol
    "Received error in response to",
]


def pid_alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _terminate(signum, _frame):
    raise SystemExit(f"terminated by signal {signum}")


class Smoke:
    def __init__(self, args):
        self.args = args
        self.timings = []  # (label, seconds)
        self.checks = []   # (ok, label, detail)
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
        self.work = os.path.abspath(args.work_dir or os.path.join(STATE, "smoke", self.run_id))
        self.out_dir = os.path.join(self.work, "out")
        self.rec_dir = os.path.join(self.work, "rec")
        self.run_dir = os.path.join(self.work, "run")
        self.manifest = os.path.join(self.work, "manifest.jsonl")
        self.stream = f"smoke-{self.run_id}"
        self.app = f"rsmld-smoke-{self.run_id}"
        self.env = dict(os.environ)
        self.env["RSMLD_STATE"] = STATE
        self.env["RSMLD_EMU_STATE"] = os.path.join(self.work, "emulators.env")
        for k, v in (("AWS_ACCESS_KEY_ID", "fakeAccessKeyId"), ("AWS_SECRET_ACCESS_KEY", "fakeSecretAccessKey"),
                     ("AWS_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
            self.env.setdefault(k, v)
        self.emulators_started = False
        self.daemon_pid = None
        self.emulator_pids = []

    # ---------------------------------------------------------------------------------- helpers

    def say(self, msg):
        print(f"[smoke {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def sh(self, cmd, timeout=600, capture=False, check=True):
        self.say("$ " + " ".join(shlex.quote(c) for c in cmd))
        r = subprocess.run(cmd, env=self.env, timeout=timeout, text=True,
                           stdout=subprocess.PIPE if capture else None)
        if check and r.returncode != 0:
            raise RuntimeError(f"command failed with exit code {r.returncode}: {cmd[0]} {cmd[1] if len(cmd) > 1 else ''}")
        return r

    def tool(self, *args, timeout=300, capture=False, check=True):
        return self.sh([VENV_PY, os.path.join(SCRIPTS, "kinesis_tool.py"), *args],
                       timeout=timeout, capture=capture, check=check)

    def tool_wait(self, *args):
        """A kinesis_tool wait-* command that fails fast if the daemon dies meanwhile."""
        cmd = [VENV_PY, os.path.join(SCRIPTS, "kinesis_tool.py"), *args]
        self.say("$ " + " ".join(shlex.quote(c) for c in cmd))
        p = subprocess.Popen(cmd, env=self.env)
        while p.poll() is None:
            if self.daemon_pid and not pid_alive(self.daemon_pid):
                p.kill()
                p.wait()
                raise RuntimeError(f"the daemon (pid {self.daemon_pid}) exited while waiting: {args[0]}")
            time.sleep(0.3)
        if p.returncode != 0:
            raise RuntimeError(f"{args[0]} failed with exit code {p.returncode}")

    def timed(self, label, fn, *a, **kw):
        t0 = time.monotonic()
        try:
            return fn(*a, **kw)
        finally:
            dt = time.monotonic() - t0
            self.timings.append((label, dt))
            self.say(f"{label}: {dt:.1f}s")

    def check(self, ok, label, detail=""):
        self.checks.append((bool(ok), label, detail))
        self.say(f"{'PASS' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")
        return ok

    # ---------------------------------------------------------------------------------- steps

    def install(self):
        self.sh([os.path.join(SCRIPTS, "install-daemon.sh")])

    def start_emulators(self):
        self.emulators_started = True
        self.sh([os.path.join(SCRIPTS, "emulators.sh"), "start"])
        out = self.sh([os.path.join(SCRIPTS, "emulators.sh"), "env"], capture=True).stdout
        for m in re.finditer(r"^export (KINESIS_ENDPOINT|DYNAMODB_ENDPOINT)=(\S+)$", out, re.M):
            self.env[m.group(1)] = m.group(2)
        with open(self.env["RSMLD_EMU_STATE"]) as f:
            st = dict(line.strip().split("=", 1) for line in f if "=" in line)
        self.emulator_pids = [int(st["KINESIS_PID"]), int(st["DYNAMODB_PID"])]

    def prepare_stream(self):
        self.tool("create-stream", self.stream, "--shards", "2")
        self.tool("leases", "create", "--app", self.app, "--stream", self.stream)
        self.tool("put", self.stream, "--plain", str(self.args.plain), "--aggregated", str(self.args.aggregated),
                  "--per-aggregate", str(self.args.per_aggregate), "--tag", "pre", "--manifest", self.manifest)

    def executable(self):
        proc = self.args.processor.replace("{output}", self.out_dir)
        if self.args.no_record:
            return proc
        return f"{sys.executable} {os.path.join(SCRIPTS, 'record.py')} --out {self.rec_dir} -- {proc}"

    def start_daemon(self):
        exe = self.executable()
        r = self.sh([os.path.join(SCRIPTS, "run-daemon.sh"), "--stream", self.stream, "--app", self.app,
                     "--worker-id", "smoke-worker", "--run-dir", self.run_dir, "--background",
                     "--executable", exe, "--set", f"shutdownGraceMillis={self.args.grace_millis}"],
                    capture=True)
        self.daemon_pid = int(r.stdout.strip().splitlines()[-1])

    def wait_records(self):
        self.tool_wait("wait-records", "--manifest", self.manifest, "--output", self.out_dir,
                  "--timeout", str(self.args.timeout))

    def split(self):
        self.tool("split-shard", self.stream, "--shard", "shardId-000000000000")
        self.tool_wait("wait-lease", "--app", self.app, "--shard", "shardId-000000000000",
                  "--checkpoint", "SHARD_END", "--timeout", str(self.args.timeout))

    def put_after_split(self):
        self.tool("put", self.stream, "--plain", str(self.args.plain_after_split), "--spread", "--tag", "post",
                  "--manifest", self.manifest)

    def stop_daemon(self):
        pid = self.daemon_pid
        self.sh([os.path.join(SCRIPTS, "run-daemon.sh"), "stop", "--run-dir", self.run_dir,
                 "--timeout", str(self.args.grace_millis // 1000 + 30)])
        return pid

    def stop_emulators(self):
        self.sh([os.path.join(SCRIPTS, "emulators.sh"), "stop"], check=False)
        self.emulators_started = False

    # ---------------------------------------------------------------------------------- checks

    def check_records(self):
        r = self.tool("check-records", "--manifest", self.manifest, "--output", self.out_dir,
                      "--allow-duplicates", capture=True, check=False)
        try:
            rep = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return self.check(False, "records", "check-records printed no report")
        self.check(r.returncode == 0 and rep["missing"] == 0 and rep["unexpected"] == 0 and rep["wrong_shard"] == 0,
                   "every manifest record is in the output, in its own shard",
                   f"{rep['manifest']} put, {rep['output']} written, missing {rep['missing']}, "
                   f"unexpected {rep['unexpected']}, wrong shard {rep['wrong_shard']}")
        dup_ok = rep["duplicated"] == 0 or not self.args.strict_duplicates
        self.check(dup_ok, "no duplicates" + ("" if self.args.strict_duplicates else " (warning only)"),
                   f"{rep['duplicated']} duplicated")

    def load_transcripts(self):
        procs = {}  # wpid -> list of events
        for name in sorted(os.listdir(self.rec_dir)) if os.path.isdir(self.rec_dir) else []:
            if not name.endswith(".jsonl"):
                continue
            with open(os.path.join(self.rec_dir, name), encoding="utf-8") as f:
                for line in f:
                    e = json.loads(line)
                    procs.setdefault(e["wpid"], []).append(e)
        for evs in procs.values():
            evs.sort(key=lambda e: e["seq"])
        return procs

    def check_transcripts(self):
        if self.args.no_record:
            self.say("transcript checks skipped (--no-record)")
            return
        procs = self.load_transcripts()
        self.check(len(procs) >= 4, "one processor per shard lease (2 parents + 2 children)",
                   f"{len(procs)} processors recorded")
        problems, shard_end_ok, shutdown_shards, ended_shards = [], False, set(), set()
        for wpid, evs in procs.items():
            shard = next((e["shard"] for e in evs if e["shard"]), None)
            exits = [e for e in evs if e["dir"] == "exit"]
            if not exits:
                problems.append(f"{shard} (recorder {wpid}): no exit event")
            elif exits[-1]["rc"] != 0:
                problems.append(f"{shard}: processor exited {exits[-1]['rc']}")
            if not any(e["dir"] == "d_eof" for e in evs):
                problems.append(f"{shard}: daemon never closed stdin")
            # walk the exchange: every action must get a matching status
            pending, last_ckpt_reply, phase = None, None, None
            for e in evs:
                if e["dir"] not in ("d2p", "p2d") or not e["line"].strip():
                    continue
                try:
                    msg = json.loads(e["line"])
                except ValueError:
                    if e["dir"] == "p2d":
                        problems.append(f"{shard}: non-JSON stdout line {e['line'][:80]!r}")
                    continue
                act = msg.get("action")
                if e["dir"] == "d2p" and act != "checkpoint":
                    if pending is not None:
                        problems.append(f"{shard}: {act} sent while {pending} unanswered")
                    pending, phase, last_ckpt_reply = act, act, None
                    if act == "shutdownRequested":
                        shutdown_shards.add(shard)
                elif e["dir"] == "d2p" and act == "checkpoint":
                    last_ckpt_reply = msg
                elif e["dir"] == "p2d" and act == "status":
                    if msg.get("responseFor") != pending:
                        problems.append(f"{shard}: status for {msg.get('responseFor')} while {pending} pending")
                    if pending == "shardEnded":
                        ended_shards.add(shard)
                        if last_ckpt_reply and last_ckpt_reply.get("error") is None \
                                and last_ckpt_reply.get("sequenceNumber") is None:
                            shard_end_ok = True
                        else:
                            problems.append(f"{shard}: shardEnded answered without a successful "
                                            f"checkpoint(null): {last_ckpt_reply}")
                    pending = None
            if pending is not None and phase not in (None,):
                problems.append(f"{shard}: {pending} never answered")
        self.check("shardId-000000000000" in ended_shards and shard_end_ok,
                   "parent shard got shardEnded and checkpointed SHARD_END", ", ".join(sorted(ended_shards)))
        live = {"shardId-000000000001", "shardId-000000000002", "shardId-000000000003"}
        self.check(live <= shutdown_shards, "SIGTERM: every live processor got shutdownRequested",
                   ", ".join(sorted(shutdown_shards)) or "none")
        self.check(not problems, "protocol exchange well-formed, every processor exited 0",
                   "; ".join(problems[:6]))

    def check_leases(self):
        r = self.tool("leases", "dump", "--app", self.app, "--json", capture=True, check=False)
        rows = {}
        for line in (r.stdout or "").splitlines():
            try:
                o = json.loads(line)
                rows[o["leaseKey"]] = o
            except (ValueError, KeyError):
                pass
        self.lease_rows = rows
        parent = rows.get("shardId-000000000000", {}).get("checkpoint")
        # cleanupLeasesUponShardCompletion may already have deleted the finished parent's lease
        self.check(parent in ("SHARD_END", None), "parent lease checkpoint is SHARD_END (or cleaned up)", str(parent))
        # After a graceful stop every other shard must be checkpointed at its last user record.
        last = {}
        with open(self.manifest, encoding="utf-8") as f:
            for line in f:
                m = json.loads(line)
                esn = (int(m["sequenceNumber"]), m["subSequenceNumber"])
                last[m["shard"]] = max(last.get(m["shard"], esn), esn)
        bad = []
        for shard in ("shardId-000000000001", "shardId-000000000002", "shardId-000000000003"):
            row = rows.get(shard, {})
            got = (row.get("checkpoint"), row.get("checkpointSubSequenceNumber"))
            want = (str(last[shard][0]), last[shard][1]) if shard in last else ("TRIM_HORIZON", 0)
            if got != want:
                bad.append(f"{shard}: {got[0]}/{got[1]} != {want[0]}/{want[1]}")
        self.check(not bad, "every other lease checkpointed exactly at its shard's last record",
                   "; ".join(bad) or f"{len(last) - ('shardId-000000000000' in last)} shards")

    def show_daemon_errors(self, n=12):
        log_path = os.path.join(self.run_dir, "daemon.log")
        self.say(f"daemon log: {log_path}")
        if not os.path.exists(log_path):
            return
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [l.rstrip()[:300] for l in f if (" ERROR " in l or " WARN " in l or "Exception" in l)
                     and "Received error line" not in l]
        for l in lines[-n:]:
            print("    " + l)

    def check_daemon_log(self):
        log_path = os.path.join(self.run_dir, "daemon.log")
        text = open(log_path, encoding="utf-8", errors="replace").read() if os.path.exists(log_path) else ""
        found = [p for p in FATAL_LOG_PATTERNS if p in text]
        self.check(text and not found, "daemon log has no fatal errors", ", ".join(found))

    def our_pids(self):
        pids = set(self.emulator_pids)
        if self.daemon_pid:
            pids.add(self.daemon_pid)
        if not self.args.no_record:
            for evs in self.load_transcripts().values():
                for e in evs:
                    pids.add(e["wpid"])
                    if e.get("child_pid"):
                        pids.add(e["child_pid"])
        return pids

    def check_nothing_left(self):
        alive = [pid for pid in sorted(self.our_pids()) if pid_alive(pid)]
        self.check(not alive, "no process of this run is left", " ".join(map(str, alive)))
        others = []
        for pat in ("kinesis-local", "dynalite", "MultiLangDaemon"):
            r = subprocess.run(["pgrep", "-f", pat], stdout=subprocess.PIPE, text=True)
            others += [f"{pat}:{p}" for p in r.stdout.split() if int(p) != os.getpid()]
        if others:
            self.say(f"note: pgrep finds processes not started by this run: {' '.join(others)}")
        self.global_left = others

    # ---------------------------------------------------------------------------------- main

    def cleanup(self):
        if self.daemon_pid:
            try:
                pgid = os.getpgid(self.daemon_pid)
                if pgid == self.daemon_pid:
                    os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.emulators_started:
            self.stop_emulators()

    def run(self):
        for path in (self.work, SCRIPTS, sys.executable):
            if " " in path:
                raise SystemExit(f"smoke: path contains a space, which the daemon cannot run: {path!r}")
        os.makedirs(self.work, exist_ok=True)
        self.say(f"work dir {self.work}")
        t_all = time.monotonic()
        try:
            if not self.args.skip_install:
                self.timed("install (install-daemon.sh)", self.install)
            self.timed("emulators start", self.start_emulators)
            self.timed("stream + leases + put", self.prepare_stream)
            t_daemon = time.monotonic()
            self.timed("daemon start (run-daemon.sh)", self.start_daemon)
            self.timed("first records processed (after run-daemon.sh returned)", self.wait_records)
            self.timings.append(("  = daemon start to all records processed", time.monotonic() - t_daemon))
            self.timed("split shard until SHARD_END", self.split)
            self.timed("post-split records processed by child shards", lambda: (self.put_after_split(), self.wait_records()))
            self.timed("daemon graceful stop (SIGTERM)", self.stop_daemon)
            self.check_records()
            self.check_transcripts()
            self.check_leases()
            self.check_daemon_log()
        except (RuntimeError, subprocess.TimeoutExpired, SystemExit) as e:
            self.check(False, "run completed", str(e))
            self.show_daemon_errors()
        finally:
            if self.daemon_pid:
                self.sh([os.path.join(SCRIPTS, "run-daemon.sh"), "stop", "--run-dir", self.run_dir, "--timeout", "5"],
                        check=False)
            self.cleanup()
            time.sleep(0.5)
            self.check_nothing_left()
        total = time.monotonic() - t_all
        return self.summary(total)

    def summary(self, total):
        ok = all(c[0] for c in self.checks)
        print()
        print("=" * 78)
        print(f"rsmld e2e smoke: {'PASSED' if ok else 'FAILED'}   processor: {self.args.processor}")
        print(f"work dir: {self.work}")
        print("-" * 78)
        for label, dt in self.timings:
            print(f"  {dt:7.1f}s  {label}")
        print(f"  {total:7.1f}s  total")
        print("-" * 78)
        for good, label, detail in self.checks:
            print(f"  {'PASS' if good else 'FAIL'}  {label}" + (f"  [{detail}]" if detail else ""))
        passed = sum(1 for c in self.checks if c[0])
        print("-" * 78)
        print(f"smoke: {passed} passed, {len(self.checks) - passed} failed")
        return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--processor", default=f"{sys.executable} {STUB} --output {{output}}",
                   help='processor command line; "{output}" is replaced by the output dir (default: the stub)')
    p.add_argument("--work-dir", help="default: $RSMLD_STATE/smoke/<run id>")
    p.add_argument("--skip-install", action="store_true")
    p.add_argument("--no-record", action="store_true", help="run the processor without scripts/record.py")
    p.add_argument("--plain", type=int, default=20, help="plain records before the split")
    p.add_argument("--aggregated", type=int, default=4, help="KPL aggregates before the split")
    p.add_argument("--per-aggregate", type=int, default=5)
    p.add_argument("--plain-after-split", type=int, default=10)
    p.add_argument("--grace-millis", type=int, default=15000, help="shutdownGraceMillis")
    p.add_argument("--timeout", type=int, default=90, help="seconds for each wait")
    p.add_argument("--strict-duplicates", action="store_true", help="fail on redelivered records")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _terminate)  # clean up (finally) on SIGTERM/SIGHUP too
    signal.signal(signal.SIGHUP, _terminate)
    sys.exit(Smoke(args).run())


if __name__ == "__main__":
    main()
