#!/usr/bin/env python3
"""rsmld's end-to-end cases under the real KCL MultiLangDaemon (run them with scripts/e2e.sh).

    .state/venv/bin/python tests/e2e/cases.py                 # every case, under KCL 3.1.3
    .state/venv/bin/python tests/e2e/cases.py --kcl 2         # every case, under KCL 2.5.8
    .state/venv/bin/python tests/e2e/cases.py split sigterm   # some of them
    .state/venv/bin/python tests/e2e/cases.py --list

Every case runs rsmld (file handler) through scripts/record.py as the daemon's processor, on its
own stream and lease table, against emulators shared by the whole run (tests/e2e/harness.py).
Each case runs under the daemon versions in its `versions` (handoff: KCL 3.x only). The last line
printed is "N passed, M failed" (cases of that version).
"""

import collections
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Unsorted on purpose: importing harness puts scripts/ (kinesis_tool) on the path.
from harness import (SHARD0, SHARD1, AttachDaemon, CaseFailed, Case, Daemon, Producer, Server, Side,  # noqa: I001
                     esn, free_port, messages, pid_alive, proc_shard, read_metrics_files, run_suite, sample, say,
                     serve_supports_metrics_listen)
import kinesis_tool as kt


last_esn_by_shard = kt.last_esn_by_shard


def lease_esn(row):
    return esn(row.get("checkpoint"), row.get("checkpointSubSequenceNumber"))


def fmt_esn(e):
    return f"{str(e[0])[-12:]}/{e[1]}" if e[0] >= 0 else "TRIM_HORIZON"


def checkpoints_at(case, want):
    """True once every shard's lease checkpoint equals want[shard] (an ESN tuple)."""
    rows = case.leases()
    return all(s in rows and lease_esn(rows[s]) == e for s, e in want.items())


def processes_of(daemon, shard):
    return [evs for evs in daemon.transcripts().values() if proc_shard(evs) == shard]


def lease_metrics(files, shard):
    """The figures the records case checks, from one shard's parsed metrics file (None: absent)."""
    samples = files.get(f"rsmld-{shard}.prom", [])
    checkpoints = [(ls.get("outcome"), v) for n, ls, v in samples
                   if n == "rsmld_checkpoints_total" and ls.get("shard") == shard]
    return {
        "records": sample(samples, "rsmld_records_total", shard=shard),
        "items": sample(samples, "rsmld_items_total", shard=shard),
        "in_flight": sample(samples, "rsmld_in_flight_items", shard=shard),
        "stored": sum(v for o, v in checkpoints if o == "stored") if checkpoints else None,
        "checkpoint_errors": sum(v for o, v in checkpoints if o != "stored"),
        "lag_ms": sample(samples, "rsmld_millis_behind_latest", shard=shard),
        "batches": sample(samples, "rsmld_handler_batch_duration_seconds_count", shard=shard),
        "failures": sample(samples, "rsmld_item_failures_total", shard=shard),
        "last_checkpoint": sample(samples, "rsmld_last_checkpoint_timestamp_seconds", shard=shard),
    }


def check_metrics(case, d, metrics_dir, manifest):
    """While the daemon runs: each shard's metrics file (--metrics-dir), read by the Prometheus
    Python client, counts what was put into that shard, all completed and checkpointed."""
    want = collections.Counter(m["shard"] for m in manifest)
    state = {}

    def settled():
        files = state["files"] = read_metrics_files(metrics_dir)
        state["got"] = got = {s: lease_metrics(files, s) for s in want}
        return all(g["records"] == want[s] and g["items"] == want[s] and g["in_flight"] == 0
                   and (g["stored"] or 0) >= 1 for s, g in got.items())
    # The files are rewritten every --metrics-interval: wait (bounded) for the final totals; if
    # they never come, the checks below say which figure is wrong. A file the parser rejects, or
    # no parser, fails the case at once (read_metrics_files).
    t0 = time.monotonic()
    while not settled():
        if not d.alive():
            raise CaseFailed(f"daemon {d.name} exited while waiting for its metrics files")
        if time.monotonic() - t0 > 20:
            say(f"{case.name}: metrics files not at the expected totals after 20s")
            break
        time.sleep(0.5)
    else:
        say(f"{case.name}: metrics files at the expected totals ({time.monotonic() - t0:.1f}s)")
    files, got = state.get("files", {}), state.get("got", {})
    # A copy of the files as rsmld last wrote them, to look at after the run.
    seen = os.path.join(case.work, "metrics-seen")
    os.makedirs(seen, exist_ok=True)
    for name in files:
        try:
            shutil.copy(os.path.join(metrics_dir, name), seen)
        except FileNotFoundError:
            pass
    case.check(sorted(files) == sorted(f"rsmld-{s}.prom" for s in want),
               "one metrics file per lease, rsmld-<shardId>.prom, parsed by the Prometheus Python client",
               ", ".join(f"{n} ({len(v)} samples)" for n, v in sorted(files.items())))

    def per_shard(key, ok, label):
        vals = {s: got.get(s, {}).get(key) for s in sorted(want)}
        case.check(all(v is not None and ok(s, v) for s, v in vals.items()), label,
                   ", ".join(f"{s[-1]}: {v}" for s, v in vals.items()))
    per_shard("records", lambda s, v: v == want[s], "rsmld_records_total = user records put into the shard "
              f"({', '.join(f'{s[-1]}: {n}' for s, n in sorted(want.items()))})")
    per_shard("items", lambda s, v: v == want[s], "rsmld_items_total = the same (file handler: one item per record)")
    per_shard("in_flight", lambda s, v: v == 0, "rsmld_in_flight_items = 0")
    per_shard("stored", lambda s, v: v >= 1, 'rsmld_checkpoints_total{outcome="stored"} >= 1')
    per_shard("checkpoint_errors", lambda s, v: v == 0, "no checkpoint answered with an error")
    per_shard("last_checkpoint", lambda s, v: v > 0, "rsmld_last_checkpoint_timestamp_seconds set")
    per_shard("failures", lambda s, v: v == 0, "rsmld_item_failures_total = 0")
    per_shard("lag_ms", lambda s, v: v >= 0, "rsmld_millis_behind_latest present")
    per_shard("batches", lambda s, v: v > 0, "rsmld_handler_batch_duration_seconds_count > 0")
    case.note("metrics: " + "; ".join(f"{s[-1]}: " + " ".join(f"{k}={v:.15g}" if isinstance(v, (int, float))
                                                            else f"{k}={v}" for k, v in g.items())
                                      for s, g in sorted(got.items())))


def stop_all(daemons, timeout=40):
    """SIGTERM every daemon at once, then wait for each."""
    for d in daemons:
        d.terminate()
    return [d.stop(timeout) for d in daemons]


# --------------------------------------------------------------------------------------------


class Records(Case):
    name = "records"
    title = "(a) plain and KPL-aggregated records over 2 shards"

    def body(self):
        self.create_stream(2)
        self.create_leases()
        self.put(plain=30, aggregated=6, per_aggregate=5, tag="a")
        # rsmld writes each lease's Prometheus metrics here (rsmld.metrics_dir), every second.
        metrics_dir = os.path.join(self.work, "metrics")
        os.makedirs(metrics_dir)
        d = Daemon(self, "daemon", "worker-a", ["--checkpoint-interval", "0.5", "--metrics-dir", metrics_dir,
                                                "--metrics-interval", "1s"],
                   {"shutdownGraceMillis": 3000}).start()
        self.wait_records()
        manifest, output, _ = self.check_records()

        # Aggregates: each user record under its own partition key, subSequenceNumber 0..n-1.
        got = {(o["partitionKey"], o["data"]): o for o in output}
        aggs = collections.defaultdict(list)
        for m in manifest:
            if m["kind"] == "aggregated":
                aggs[(m["shard"], m["sequenceNumber"])].append(m)
        bad = []
        for (shard, seq), users in aggs.items():
            outs = [got.get((u["partitionKey"], u["data"])) for u in users]
            if any(o is None for o in outs):
                bad.append(f"{seq[-8:]}: user records missing")
                continue
            subs = sorted(o["subSequenceNumber"] for o in outs)
            keys = {o["partitionKey"] for o in outs}
            if subs != list(range(len(users))) or len(keys) != len(users) \
                    or any(str(o["sequenceNumber"]) != seq or kt.output_shard(o) != shard for o in outs):
                bad.append(f"{seq[-8:]}: subs {subs}, {len(keys)} keys")
        shards_with_aggs = {s for s, _ in aggs}
        self.check(len(aggs) == 6 and shards_with_aggs == {SHARD0, SHARD1} and not bad,
                   "each aggregate's user records: own partition keys, the aggregate's sequenceNumber, "
                   "subSequenceNumber 0..n-1",
                   f"{len(aggs)} aggregates over {len(shards_with_aggs)} shards" + (f"; {bad[:3]}" if bad else ""))
        plain = [m for m in manifest if m["kind"] == "plain"]
        self.check(all(got[(m["partitionKey"], m["data"])]["subSequenceNumber"] == 0 for m in plain),
                   "plain records have subSequenceNumber 0", f"{len(plain)} plain records")

        want = last_esn_by_shard(manifest)
        self.wait_until("periodic checkpoints reached each shard's last record",
                        lambda: checkpoints_at(self, want), timeout=30, watch=[d])
        self.check(True, "lease checkpoints = last record of each shard (periodic checkpoints, 0.5 s)",
                   ", ".join(f"{s[-1]}: {fmt_esn(e)}" for s, e in sorted(want.items())))
        check_metrics(self, d, metrics_dir, manifest)
        rc = d.stop()
        self.note(f"daemon exit code after SIGTERM: {rc}")
        # rsmld removes its file when the lease ends (and whatever it wrote when it exits); the
        # daemon may exit a moment before its last child has: wait a little for that.
        t0 = time.monotonic()
        while os.listdir(metrics_dir) and time.monotonic() - t0 < 10:
            time.sleep(0.2)
        left = sorted(os.listdir(metrics_dir))
        self.check(not left, "metrics files (and their temporary files) gone after the graceful stop",
                   ", ".join(left))
        self.check_processes()
        self.check_daemon_logs()


class Split(Case):
    name = "split"
    title = "(b) shard split mid-run: parent reaches SHARD_END, children processed"

    def body(self):
        self.create_stream(2)
        self.create_leases()
        self.put(plain=20, aggregated=2, per_aggregate=5, tag="pre")
        d = Daemon(self, "daemon", "worker-b", ["--checkpoint-interval", "0.5"],
                   {"shutdownGraceMillis": 2000, "cleanupLeasesUponShardCompletion": "false"}).start()
        self.wait_records()

        kc = self.emu.kinesis
        parent = next(s for s in self.shards() if s["ShardId"] == SHARD0)
        lo, hi = int(parent["HashKeyRange"]["StartingHashKey"]), int(parent["HashKeyRange"]["EndingHashKey"])
        t_split = time.time()
        kc.split_shard(StreamName=self.stream, ShardToSplit=SHARD0, NewStartingHashKey=str((lo + hi + 1) // 2))
        kt.wait_stream_active(kc, self.stream)
        children = sorted(s["ShardId"] for s in self.shards() if s.get("ParentShardId") == SHARD0)
        say(f"{self.name}: split {SHARD0} into {children}")
        self.require(len(children) == 2, "the split made two child shards", ", ".join(children))
        post = self.put(plain=24, aggregated=3, per_aggregate=4, tag="post")

        self.wait_until(f"{SHARD0} lease checkpoint is SHARD_END",
                        lambda: self.leases().get(SHARD0, {}).get("checkpoint") == "SHARD_END", watch=[d])
        self.wait_records()
        rows = self.leases()
        self.check(rows.get(SHARD0, {}).get("checkpoint") == "SHARD_END",
                   "parent lease checkpoint is SHARD_END",
                   f"{rows.get(SHARD0, {}).get('checkpoint')}/{rows.get(SHARD0, {}).get('checkpointSubSequenceNumber')}")
        self.check(all(rows.get(c, {}).get("parentShardId") == [SHARD0] for c in children),
                   "child leases exist and name the parent", ", ".join(children))

        _manifest, output, _ = self.check_records()
        per_shard = collections.Counter(kt.output_shard(o) for o in output)
        post_in_children = collections.Counter(m["shard"] for m in post if m["shard"] in children)
        self.check(all(per_shard[c] > 0 and per_shard[c] == post_in_children[c] for c in children),
                   "children's records were processed by the children's rsmld",
                   ", ".join(f"{c[-1]}: {per_shard[c]} of {post_in_children[c]}" for c in children))

        # The parent's transcript: shardEnded -> checkpoint(null) -> reply without error -> status.
        procs = processes_of(d, SHARD0)
        steps = []
        for evs in procs:
            msgs = messages(evs)
            for i, (e, m) in enumerate(msgs):
                if e["dir"] == "d2p" and m.get("action") == "shardEnded":
                    steps = [(x["dir"], y.get("action"), y.get("sequenceNumber", "-"), y.get("error", "-"),
                              y.get("responseFor", "-")) for x, y in msgs[i + 1:i + 4]]
                    t_end = e["ts"]
        want = [("p2d", "checkpoint", None, "-", "-"), ("d2p", "checkpoint", None, None, "-"),
                ("p2d", "status", "-", "-", "shardEnded")]
        self.check(steps == want, "parent's rsmld answered shardEnded with checkpoint(null), accepted, then status",
                   str(steps))
        firsts = [evs[0]["ts"] for c in children for evs in processes_of(d, c)]
        self.check(len(firsts) == 2 and steps and min(firsts) > t_end,
                   "child processors started only after the parent's shardEnded",
                   f"{min(firsts) - t_end:.1f}s after" if firsts and steps else "")
        self.note(f"split to SHARD_END: {t_end - t_split:.1f}s; split to first child processor: "
                  f"{min(firsts) - t_split:.1f}s" if firsts and steps else "no timing")
        rc = d.stop()
        self.note(f"daemon exit code after SIGTERM: {rc}")
        self.check_processes()
        self.check_daemon_logs()


class Sigterm(Case):
    name = "sigterm"
    title = "(c) SIGTERM with shutdownGraceMillis: shutdownRequested checkpoint is exact"

    def body(self):
        self.create_stream(2)
        self.create_leases()
        # Plain records first, then aggregates: each shard's last record is a sub-record > 0.
        self.put(plain=20, tag="c")
        self.put(aggregated=4, per_aggregate=5, tag="c")
        # No periodic checkpoint: only shutdownRequested can move the checkpoint.
        d = Daemon(self, "daemon", "worker-c", ["--checkpoint-interval", "3600"],
                   {"shutdownGraceMillis": 10000}).start()
        self.wait_records()
        before = self.leases()
        t0 = time.monotonic()
        rc = d.stop(timeout=40)
        stop_s = time.monotonic() - t0
        self.note(f"graceful stop took {stop_s:.1f}s; daemon exit code {rc}; checkpoints before SIGTERM: "
                  + ", ".join(f"{s[-1]}: {fmt_esn(lease_esn(r))}" for s, r in sorted(before.items())))
        manifest, output, _ = self.check_records()
        want_m = last_esn_by_shard(manifest)
        want_o = last_esn_by_shard([{"shard": kt.output_shard(o), "sequenceNumber": str(o["sequenceNumber"]),
                                     "subSequenceNumber": o["subSequenceNumber"]} for o in output])
        self.check(all(e[1] > 0 for e in want_m.values()) and len(want_m) == 2,
                   "each shard's last record is an aggregate's sub-record > 0",
                   ", ".join(f"{s[-1]}: {fmt_esn(e)}" for s, e in sorted(want_m.items())))
        after = self.leases()
        bad, from_transcript = [], {}
        for shard in (SHARD0, SHARD1):
            procs = processes_of(d, shard)
            seq = []
            for evs in procs:
                msgs = messages(evs)
                for i, (e, m) in enumerate(msgs):
                    if e["dir"] == "d2p" and m.get("action") == "shutdownRequested":
                        seq = msgs[i:i + 5]
            acts = [(e["dir"], m.get("action"), m.get("responseFor")) for e, m in seq]
            if acts != [("d2p", "shutdownRequested", None), ("p2d", "checkpoint", None),
                        ("d2p", "checkpoint", None), ("p2d", "status", "shutdownRequested"),
                        ("d2p", "leaseLost", None)]:
                bad.append(f"{shard}: {acts}")
                continue
            req, reply = seq[1][1], seq[2][1]
            if reply.get("error") is not None:
                bad.append(f"{shard}: checkpoint error {reply.get('error')}")
            from_transcript[shard] = esn(req.get("sequenceNumber"), req.get("subSequenceNumber")) \
                if req.get("sequenceNumber") is not None else None
        self.check(not bad, "transcript: shutdownRequested -> rsmld checkpoint -> accepted -> status -> leaseLost",
                   "; ".join(bad) or "both shards")
        exact = {s: (lease_esn(after.get(s, {})), want_o.get(s), want_m.get(s)) for s in (SHARD0, SHARD1)}
        self.check(all(a == o == m for a, o, m in exact.values()),
                   "final lease checkpoint = last processed record (sequenceNumber and subSequenceNumber)",
                   "; ".join(f"{s[-1]}: lease {fmt_esn(a)} output {fmt_esn(o) if o else None}"
                             for s, (a, o, m) in sorted(exact.items())))
        self.check(all(from_transcript.get(s) in (None, exact[s][0]) for s in (SHARD0, SHARD1)),
                   "rsmld's checkpoint request names that record",
                   ", ".join(f"{s[-1]}: {fmt_esn(e) if e else 'null'}" for s, e in sorted(from_transcript.items())))
        self.check_processes()
        self.check_daemon_logs()


class Kill(Case):
    name = "kill"
    title = "(d) rsmld SIGKILLed mid-stream: daemon exits, restart resumes, nothing lost"

    def body(self):
        self.create_stream(2)
        self.create_leases()
        self.put(plain=20, tag="k")
        args = ["--checkpoint-interval", "0.5"]
        props = {"shutdownGraceMillis": 3000}
        producer = Producer(self, batch=4, period=0.25, tag="live")
        d1 = Daemon(self, "run1", "worker-d", args, props).start()
        producer.start()
        try:
            def progressed():
                rows = self.leases()
                return len(self.output([d1])) >= 60 and all(lease_esn(rows[s])[0] >= 0 for s in (SHARD0, SHARD1))
            self.wait_until("records processed and checkpointed on both shards", progressed, watch=[d1])
            pids = d1.rsmld_pids()
            self.require(len(pids) == 2, "pgrep finds the two rsmld processes by their output dir",
                         " ".join(map(str, pids)))
            victim = pids[0]
            shard = next((proc_shard(evs) for evs in d1.transcripts().values()
                          if any(e.get("child_pid") == victim for e in evs)), "?")
            say(f"{self.name}: SIGKILL to rsmld pid {victim} ({shard})")
            os.kill(victim, signal.SIGKILL)
            t_kill = time.monotonic()
            rc = d1.wait_exit(60)
            self.check(rc is not None and rc != 0, "the daemon exits non-zero after its rsmld died",
                       f"exit code {rc} after {time.monotonic() - t_kill:.1f}s")
            if rc is None:
                raise CaseFailed("daemon still running 60 s after the kill")
            d1.reap_group()
            ckpt = {s: lease_esn(r) for s, r in self.leases().items()}
            self.note("checkpoints after run1: " + ", ".join(f"{s[-1]}: {fmt_esn(e)}" for s, e in sorted(ckpt.items())))
            time.sleep(1)  # records keep coming while the daemon is down

            d2 = Daemon(self, "run2", "worker-d", args, props).start()

            def initialized():
                inits = {}
                for evs in d2.transcripts().values():
                    for e, m in messages(evs):
                        if m.get("action") == "initialize":
                            inits[m["shardId"]] = esn(m.get("sequenceNumber"), m.get("subSequenceNumber"))
                return inits if len(inits) == 2 else None
            inits = self.wait_until("the restarted daemon initialized both shards", initialized, watch=[d2])
            self.check(inits == {s: ckpt[s] for s in (SHARD0, SHARD1)},
                       "restart with the same workerId resumes each shard from its checkpoint",
                       ", ".join(f"{s[-1]}: init {fmt_esn(e)}" for s, e in sorted(inits.items())))
            time.sleep(2)
        finally:
            n = producer.stop()
        self.note(f"producer put {n} records while the daemons ran")
        self.wait_records(watch=[d2])
        manifest, _output, rep = self.check_records(allow_duplicates=True)
        by_key = {(m["partitionKey"], m["data"]): m for m in manifest}
        dups = rep["duplicated"]
        early = [k for k in dups if esn(by_key[k]["sequenceNumber"], by_key[k]["subSequenceNumber"])
                 <= ckpt[by_key[k]["shard"]]]
        run2_early = [o for o in d2.output() if esn(str(o["sequenceNumber"]), o["subSequenceNumber"])
                      <= ckpt[kt.output_shard(o)]]
        dup_shards = collections.Counter(by_key[k]["shard"] for k in dups)
        self.check(not early and not run2_early,
                   "nothing at or below a checkpoint was delivered again (duplicates only after it)",
                   f"{len(dups)} duplicated (at-least-once), by shard {dict(dup_shards)}")
        self.note(f"duplicates: {len(dups)} of {len(manifest)} records")
        rc2 = d2.stop()
        self.note(f"restarted daemon exit code after SIGTERM: {rc2}")
        self.check_processes(killed={victim})
        bad = {"run1": d1.fatal_log_lines(allowed=("Reached end of STDIN of child process",
                                                     "Encountered an error while running daemon")),
               "run2": d2.fatal_log_lines()}
        self.check(not any(bad.values()) and "Child process exited with value: 137" in d1.log_text(),
                   "daemon logs: run1 reports its processor's death (137), nothing else fatal", str(bad))


class Steal(Case):
    name = "steal"
    title = "(e) a second worker steals a lease: leaseLost, no checkpoint after it, records move"

    def body(self):
        self.create_stream(2)
        self.create_leases()
        self.put(plain=20, tag="pre")
        args = ["--checkpoint-interval", "0.5"]
        props = {"shutdownGraceMillis": 3000}
        a = Daemon(self, "worker-A", "worker-A", args, props).start()
        self.wait_until("worker-A holds both leases and processed every record",
                        lambda: self.all_in_output([a]) and all(r.get("leaseOwner") == "worker-A"
                                                                for r in self.leases().values()), watch=[a])
        producer = Producer(self, batch=2, period=0.25, tag="live")
        producer.start()
        try:
            b = Daemon(self, "worker-B", "worker-B", args, props).start()

            def b_took_a_lease():
                r = self.leases()
                return r if any(x.get("leaseOwner") == "worker-B" for x in r.values()) else None

            rows = self.wait_until("worker-B took a lease", b_took_a_lease, timeout=120, watch=[a, b])
            stolen = next(s for s, r in rows.items() if r.get("leaseOwner") == "worker-B")

            def lost():
                for evs in processes_of(a, stolen):
                    if any(e["dir"] == "exit" for e in evs) and \
                            any(e["dir"] == "d2p" and m.get("action") == "leaseLost" for e, m in messages(evs)):
                        return True
                return False
            self.wait_until(f"worker-A's rsmld for {stolen} got leaseLost and exited", lost, timeout=60, watch=[a, b])
            time.sleep(1.5)
        finally:
            producer.stop()
        after = self.put(plain=20, tag="after")
        self.wait_records()
        final_rows = self.leases()
        self.note("lease owners: " + ", ".join(f"{s[-1]}: {r.get('leaseOwner')}" for s, r in sorted(final_rows.items())))
        self.check(final_rows[stolen].get("leaseOwner") == "worker-B" and
                   {r.get("leaseOwner") for r in final_rows.values()} == {"worker-A", "worker-B"},
                   "each worker holds one lease", stolen)

        # worker-A's transcript for the stolen shard: leaseLost answered, no checkpoint after it.
        problems, seen = [], 0
        for evs in processes_of(a, stolen):
            msgs = messages(evs)
            idx = [i for i, (e, m) in enumerate(msgs) if e["dir"] == "d2p" and m.get("action") == "leaseLost"]
            if not idx:
                continue
            seen += 1
            tail = msgs[idx[0] + 1:]
            if any(e["dir"] == "p2d" and m.get("action") == "checkpoint" for e, m in tail):
                problems.append("checkpoint after leaseLost")
            if [(e["dir"], m.get("action"), m.get("responseFor")) for e, m in tail] != \
                    [("p2d", "status", "leaseLost")]:
                problems.append(f"after leaseLost: {[(e['dir'], m.get('action')) for e, m in tail]}")
        self.check(seen == 1 and not problems,
                   "worker-A's rsmld got leaseLost, answered with status only, sent no checkpoint after it",
                   f"{stolen}; " + ("; ".join(problems) or "ok"))

        moved = [m for m in after if m["shard"] == stolen]
        in_b = {(o["partitionKey"], o["data"]) for o in b.output()}
        in_a = {(o["partitionKey"], o["data"]) for o in a.output()}
        self.check(moved and all((m["partitionKey"], m["data"]) in in_b for m in moved)
                   and not any((m["partitionKey"], m["data"]) in in_a for m in moved),
                   "records put after the steal into that shard were written by worker-B only",
                   f"{len(moved)} records")
        manifest, _output, rep = self.check_records(allow_duplicates=True)
        self.note(f"duplicates: {len(rep['duplicated'])} of {len(manifest)} records (at-least-once across the move)")
        rcs = stop_all([a, b])
        self.note(f"daemon exit codes after SIGTERM: {rcs}")
        self.check_processes()
        self.check_daemon_logs()


class Bulk(Case):
    name = "bulk"
    title = "(f) large batches: lines over 64 KiB acknowledged before they are decoded"

    def body(self):
        self.create_stream(1)
        self.create_leases()
        # Put before the daemon starts: its first GetRecords returns them in one batch.
        self.put(plain=1500, tag="b", size=400)
        self.put(aggregated=3, per_aggregate=100, tag="c")
        d = Daemon(self, "daemon", "worker-a", ["--checkpoint-interval", "0.5"],
                   {"shutdownGraceMillis": 3000}, env={"RUST_LOG": "rsmld::driver=trace"}).start()
        self.wait_records()
        manifest, _, _ = self.check_records()
        want = last_esn_by_shard(manifest)
        self.wait_until("periodic checkpoints reached the last record",
                        lambda: checkpoints_at(self, want), timeout=30, watch=[d])
        self.check(True, "lease checkpoint = last record", ", ".join(fmt_esn(e) for e in want.values()))
        # The real daemon's lines were large, and rsmld answered them before decoding them.
        sizes, ahead = [], 0
        for evs in d.transcripts().values():
            for e, msg in messages(evs):
                if msg.get("action") == "processRecords":
                    sizes.append((len(e["line"]), len(msg.get("records") or [])))
            ahead += sum("acknowledged before decoding" in e.get("line", "")
                         for e in evs if e["dir"] == "p_err")
        large = [s for s in sizes if s[0] >= 64 * 1024 and s[1] >= 256]
        self.check(large and ahead >= len(large),
                   "lines of >= 64 KiB and >= 256 records were acknowledged before decoding",
                   f"{len(large)} large of {len(sizes)} processRecords lines (largest "
                   f"{max(sizes)[0] if sizes else 0} bytes); {ahead} acknowledged ahead")
        rc = d.stop()
        self.note(f"daemon exit code after SIGTERM: {rc}")
        self.check_processes()
        self.check_daemon_logs()


class Handoff(Case):
    name = "handoff"
    title = "(g) KCL 3.x graceful lease handoff: shutdownRequested checkpoint, new owner starts there"
    versions = ("3",)  # KCL 2.x has no lease balancer and no graceful handoff (its steal is case e)

    def body(self):
        self.create_stream(2)
        self.create_leases()
        self.put(plain=20, tag="pre")
        # No periodic checkpoint: only the handoff's shutdownRequested can move the checkpoint.
        args = ["--checkpoint-interval", "3600"]
        props = {"shutdownGraceMillis": 3000, "gracefulLeaseHandoffTimeoutMillis": 30000}
        a = Daemon(self, "worker-A", "worker-A", args, props).start()
        self.wait_until("worker-A holds both leases and processed every record",
                        lambda: self.all_in_output([a]) and all(r.get("leaseOwner") == "worker-A"
                                                                for r in self.leases().values()),
                        timeout=120, watch=[a])
        # Records keep flowing, so that the leases carry throughput: KCL 3.x's lease balancer
        # (on the leader, every 2 x failoverTimeMillis; variance balancing every 3rd run) moves
        # leases from the worker above the fleet's average to the one below it. A worker that
        # joins is below it: the balancer hands it a lease gracefully.
        producer = Producer(self, batch=2, period=0.25, tag="live")
        producer.start()
        try:
            b = Daemon(self, "worker-B", "worker-B", args, props).start()

            def handed_off():
                for shard in (SHARD0, SHARD1):
                    old = [evs for evs in processes_of(a, shard) if any(e["dir"] == "exit" for e in evs)]
                    new = [evs for evs in processes_of(b, shard)
                           if any(e["dir"] == "d2p" and m.get("action") == "initialize" for e, m in messages(evs))]
                    if old and new:
                        return shard
                return None
            moved = self.wait_until("worker-A's rsmld for a shard exited and worker-B's rsmld initialized it",
                                    handed_off, timeout=180, watch=[a, b])
            time.sleep(2)
        finally:
            n = producer.stop()
        self.note(f"moved {moved}; producer put {n} records while both daemons ran")
        after = self.put(plain=20, tag="after")
        self.wait_records(timeout=120)

        # worker-A's rsmld for the moved shard: shutdownRequested -> checkpoint -> accepted ->
        # status -> leaseLost -> status, and nothing after that.
        old = next(evs for evs in processes_of(a, moved) if any(e["dir"] == "exit" for e in evs))
        msgs = messages(old)
        i = next((i for i, (e, m) in enumerate(msgs) if e["dir"] == "d2p" and m.get("action") == "shutdownRequested"),
                 None)
        seq = msgs[i:] if i is not None else []
        acts = [(e["dir"], m.get("action"), m.get("responseFor")) for e, m in seq]
        want = [("d2p", "shutdownRequested", None), ("p2d", "checkpoint", None), ("d2p", "checkpoint", None),
                ("p2d", "status", "shutdownRequested"), ("d2p", "leaseLost", None), ("p2d", "status", "leaseLost")]
        self.check(acts == want, "old owner's rsmld: shutdownRequested -> checkpoint -> accepted -> status -> "
                   "leaseLost -> status, nothing after", str(acts))
        handoff = None
        if acts == want:
            req, reply = seq[1][1], seq[2][1]
            self.check(reply.get("error") is None, "the handoff checkpoint was accepted", str(reply.get("error")))
            handoff = esn(req.get("sequenceNumber"), req.get("subSequenceNumber"))
        last_a = max((esn(str(o["sequenceNumber"]), o["subSequenceNumber"]) for o in a.output()
                      if kt.output_shard(o) == moved), default=None)
        self.check(handoff is not None and handoff[0] >= 0 and handoff == last_a,
                   "the handoff checkpoint is the last record the old owner wrote for that shard",
                   f"checkpoint {fmt_esn(handoff) if handoff else None}, last written {fmt_esn(last_a) if last_a else None}")

        # worker-B's first rsmld for the moved shard starts exactly there.
        new = [evs for evs in processes_of(b, moved)
               if any(e["dir"] == "d2p" and m.get("action") == "initialize" for e, m in messages(evs))]
        init = next(m for e, m in messages(min(new, key=lambda evs: evs[0]["ts"]))
                    if m.get("action") == "initialize")
        start = esn(init.get("sequenceNumber"), init.get("subSequenceNumber"))
        self.check(handoff is not None and start == handoff,
                   "the new owner's rsmld initialized at exactly that checkpoint", f"initialize {fmt_esn(start)}")
        if acts == want:
            t_init = min(e["ts"] for evs in new for e in evs)
            self.note(f"old owner's shutdownRequested to leaseLost: {seq[4][0]['ts'] - seq[0][0]['ts']:.1f}s; "
                      f"leaseLost to the new owner's start: {t_init - seq[4][0]['ts']:.1f}s")
        early = [o for o in b.output() if kt.output_shard(o) == moved
                 and esn(str(o["sequenceNumber"]), o["subSequenceNumber"]) <= (handoff or (-1, 0))]
        self.check(not early, "the new owner wrote nothing at or below the handoff checkpoint", f"{len(early)} records")
        moved_after = [m for m in after if m["shard"] == moved]
        in_b = {(o["partitionKey"], o["data"]) for o in b.output()}
        self.check(moved_after and all((m["partitionKey"], m["data"]) in in_b for m in moved_after),
                   "records put into that shard after the handoff were written by the new owner",
                   f"{len(moved_after)} records")
        rows = self.leases()
        self.note("lease owners: " + ", ".join(f"{s[-1]}: {r.get('leaseOwner')}" for s, r in sorted(rows.items())))
        # A graceful handoff re-delivers nothing: every record once, none lost.
        self.check_records()
        rcs = stop_all([a, b])
        self.note(f"daemon exit codes after SIGTERM: {rcs}")
        self.check_processes()
        self.check_daemon_logs()


# --------------------------------------------------------------------------------------------
# Serve mode: one `rsmld serve` holds every lease; the daemons' children are `rsmld attach`.


def lease_problems(side, closed=()):
    """Each shard of the side's manifest has a lease checkpointed at its last record (the
    shards in `closed`: SHARD_END); no other lease in its table. [] when all are."""
    want = last_esn_by_shard(side.read_manifest())
    rows = side.leases()
    problems = [f"lease {s[-1]} not in the table" for s in want if s not in rows]
    problems += [f"lease {s} has no record" for s in rows if s not in want]
    for s, e in want.items():
        if s not in rows:
            continue
        got = rows[s].get("checkpoint") if s in closed else lease_esn(rows[s])
        if got != ("SHARD_END" if s in closed else e):
            problems.append(f"{s[-1]}: {got if s in closed else fmt_esn(got)} != "
                            f"{'SHARD_END' if s in closed else fmt_esn(e)}")
    return problems


def describe_leases(side):
    return ", ".join(f"{s[-1]}: {r.get('checkpoint') if r.get('checkpoint') == 'SHARD_END' else fmt_esn(lease_esn(r))}"
                     for s, r in sorted(side.leases().items()))


def delivered(daemon, shard):
    """The records the daemon sent in processRecords to the live (not exited) processors of
    `shard`, from their recorded transcripts."""
    return sum(len(m.get("records") or []) for evs in processes_of(daemon, shard)
               if not any(e["dir"] == "exit" for e in evs)
               for e, m in messages(evs) if e["dir"] == "d2p" and m.get("action") == "processRecords")


def check_scrape(case, server, sides, when):
    """GET /metrics during the run, parsed by the Prometheus Python client: per (application,
    shard) of every open shard's lease, rsmld_records_total = the records its daemon delivered (= put
    into the shard), rsmld_items_total = its lines in the output, at least one stored
    checkpoint, rsmld_millis_behind_latest present."""
    state = {}

    def figures():
        text, samples = server.scrape()
        got, want = {}, {}
        for side, d in sides:
            manifest = collections.Counter(m["shard"] for m in side.read_manifest())
            lines = collections.Counter(kt.output_shard(o) for o in side.output())
            # The open shards' leases (a split parent's lease has ended; its series may be gone).
            for shard in sorted(sh["ShardId"] for sh in side.shards() if kt.is_open(sh)):
                lab = {"application": side.app, "shard": shard}
                stored = [v for n, ls, v in samples if n == "rsmld_checkpoints_total"
                          and ls.get("application") == side.app and ls.get("shard") == shard
                          and ls.get("outcome") == "stored"]
                got[(side.label, shard)] = {
                    "records": sample(samples, "rsmld_records_total", **lab),
                    "items": sample(samples, "rsmld_items_total", **lab),
                    "stored": sum(stored) if stored else None,
                    "lag_ms": sample(samples, "rsmld_millis_behind_latest", **lab),
                }
                want[(side.label, shard)] = {"delivered": delivered(d, shard), "put": manifest[shard],
                                             "lines": lines[shard]}
        state.update(text=text, got=got, want=want)
        return got and all(g["records"] == want[k]["delivered"] and g["items"] == want[k]["lines"]
                           and (g["stored"] or 0) >= 1 for k, g in got.items())
    # Counters move as the leases work: wait (bounded) until they settle; if they never do,
    # the checks below say which figure is wrong.
    t0 = time.monotonic()
    while not figures() and time.monotonic() - t0 < 20:
        time.sleep(0.5)
    text, got, want = state["text"], state["got"], state["want"]
    path = os.path.join(case.work, f"scrape-{when.replace(' ', '-')}.prom")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    present = [k for k, g in got.items() if g["records"] is not None]
    case.check(len(got) >= 4 and len(present) == len(got),
               f"/metrics {when}: a series for the lease of every open shard of both applications",
               f"{len(present)} of {len(got)} ({', '.join(f'{a}/{s[-1]}' for a, s in sorted(present))}); {path}")

    def per_lease(label, ok, show):
        case.check(got and all(ok(g, want[k]) for k, g in got.items()), f"/metrics {when}: {label}",
                   ", ".join(f"{a}/{s[-1]}: {show(g, want[(a, s)])}" for (a, s), g in sorted(got.items())))
    per_lease("rsmld_records_total = records the daemon delivered = records put",
              lambda g, w: g["records"] is not None and g["records"] == w["delivered"] == w["put"],
              lambda g, w: f"{g['records']} / {w['delivered']} / {w['put']}")
    per_lease("rsmld_items_total = the lease's lines in the output",
              lambda g, w: g["items"] is not None and g["items"] == w["lines"],
              lambda g, w: f"{g['items']} / {w['lines']}")
    per_lease('rsmld_checkpoints_total{outcome="stored"} >= 1', lambda g, w: (g["stored"] or 0) >= 1,
              lambda g, w: f"{g['stored']}")
    per_lease("rsmld_millis_behind_latest present", lambda g, w: g["lag_ms"] is not None and g["lag_ms"] >= 0,
              lambda g, w: f"{g['lag_ms']}")
    excerpt = [line for line in text.splitlines() if line.startswith(("rsmld_records_total", "rsmld_items_total"))]
    case.note(f"/metrics {when} ({len(text.splitlines())} lines), excerpt: " + " | ".join(excerpt[:4]))


def metrics_port_or_skip(case):
    """A free port for --metrics-listen, or None (loudly) when this rsmld has no such flag."""
    if serve_supports_metrics_listen(case.work):
        return free_port()
    say("!" * 78)
    say(f"{case.name}: SKIPPING the /metrics scrape: this rsmld serve does not take --metrics-listen")
    say("!" * 78)
    case.note("SKIPPED: the /metrics scrape (rsmld serve has no --metrics-listen)")
    return None


class ServeCase(Case):
    """A case with one rsmld serve (self.server): killed at cleanup, counted in the leftover check."""

    server = None

    def cleanup(self):
        super().cleanup()
        if self.server:
            self.server.kill()

    def our_pids(self):
        return super().our_pids() | ({p.pid for p in self.server.procs} if self.server else set())


class Serve(ServeCase):
    name = "serve"
    title = "(h) rsmld serve: two streams (two daemons, two applications) on one server, split, graceful stop"

    def body(self):
        port = metrics_port_or_skip(self)
        server = self.server = Server(self, args=["--checkpoint-interval", "0.5"], metrics_port=port)
        a, b = Side(self, "a", server), Side(self, "b", server)
        for s in (a, b):
            s.create_stream(2)
            s.create_leases()
            s.put(plain=16, aggregated=3, per_aggregate=4, tag=f"{s.label}1")
        server.start()
        props = {"shutdownGraceMillis": 5000, "cleanupLeasesUponShardCompletion": "false"}
        da = AttachDaemon(a, "daemon-a", "worker-a", server, props).start()
        db = AttachDaemon(b, "daemon-b", "worker-b", server, props).start()
        for s in (a, b):
            s.wait_records(timeout=150)
        self.wait_until("both applications' leases checkpointed at their last records",
                        lambda: not lease_problems(a) and not lease_problems(b), timeout=30, watch=[da, db])
        if port:
            check_scrape(self, server, [(a, da), (b, db)], "before the split")

        kc = self.emu.kinesis
        parent = next(s for s in a.shards() if s["ShardId"] == SHARD0)
        lo, hi = int(parent["HashKeyRange"]["StartingHashKey"]), int(parent["HashKeyRange"]["EndingHashKey"])
        kc.split_shard(StreamName=a.stream, ShardToSplit=SHARD0, NewStartingHashKey=str((lo + hi + 1) // 2))
        kt.wait_stream_active(kc, a.stream)
        children = sorted(s["ShardId"] for s in a.shards() if s.get("ParentShardId") == SHARD0)
        self.require(len(children) == 2, "[a] the split made two child shards", ", ".join(children))
        for s in (a, b):
            s.put(plain=16, aggregated=2, per_aggregate=4, tag=f"{s.label}2")
        a.wait_until(f"[a] {SHARD0} lease checkpoint is SHARD_END",
                     lambda: a.leases().get(SHARD0, {}).get("checkpoint") == "SHARD_END", watch=[da, db])
        for s in (a, b):
            s.wait_records(timeout=90)
        self.wait_until("every lease checkpointed at its last record (the split parent: SHARD_END)",
                        lambda: not lease_problems(a, {SHARD0}) and not lease_problems(b), timeout=30, watch=[da, db])
        if port:
            check_scrape(self, server, [(a, da), (b, db)], "after the split")

        rcs = stop_all([da, db])
        self.note(f"daemon exit codes after SIGTERM: {rcs}")
        rc = server.terminate(60)
        self.check(rc == 0, "rsmld serve exits 0 on SIGTERM once its leases ended", f"exit code {rc}")
        self.check(not os.path.exists(server.socket), "the server removed its socket", server.socket)

        for s in (a, b):
            s.check_records()
        names = server.naming_problems({a.app, b.app})
        n_lines = sum(len(lines) for _, lines in server.files())
        n_apps = len(a.output()) + len(b.output())
        self.check(not names and n_lines == n_apps,
                   'output files <application>.<shardId>.…jsonl, each line {"application":"<it>",… of that shard',
                   f"{len(server.files())} files, {n_lines} lines ({n_apps} of the two applications)"
                   + (f"; {names[:3]}" if names else ""))
        in_children = collections.Counter(kt.output_shard(o) for o in a.output())
        self.check(all(in_children[c] > 0 for c in children), "[a] the child shards' records were processed",
                   ", ".join(f"{c[-1]}: {in_children[c]}" for c in children))
        for s, closed in ((a, {SHARD0}), (b, set())):
            bad = lease_problems(s, closed)
            s.check(not bad, "every lease checkpointed at its last record" + (" (the split parent: SHARD_END)"
                                                                              if closed else ""),
                    "; ".join(bad) or describe_leases(s))
        self.check_processes()
        self.check_daemon_logs()
        errors = [line for line in server.log_text().splitlines() if " ERROR " in line]
        self.check(not errors, "server log free of ERROR lines", " | ".join(e[:200] for e in errors[:3]))


class ServeKill(ServeCase):
    name = "serve-kill"
    title = "(i) rsmld serve SIGKILLed mid-stream: every attach exits at once, restarts lose nothing"

    def body(self):
        server = self.server = Server(self, args=["--checkpoint-interval", "0.5"])
        a, b = Side(self, "a", server), Side(self, "b", server)
        for s in (a, b):
            s.create_stream(2)
            s.create_leases()
            s.put(plain=12, tag=f"{s.label}k")
        server.start()
        props = {"shutdownGraceMillis": 3000}
        d1 = [AttachDaemon(s, f"run1-{s.label}", f"worker-{s.label}", server, props).start() for s in (a, b)]
        producers = [Producer(s, batch=2, period=0.25, tag="live") for s in (a, b)]
        for p in producers:
            p.start()
        try:
            def progressed():
                return all(len(s.output()) >= 30 and all(lease_esn(r)[0] >= 0 for r in s.leases().values())
                           for s in (a, b))
            self.wait_until("both applications: records processed and checkpointed on every shard", progressed,
                            timeout=150, watch=d1)
            attaches = {d.name: d.rsmld_pids() for d in d1}
            self.require(all(len(p) == 2 for p in attaches.values()), "pgrep finds two rsmld attach per daemon",
                         str(attaches))
            say(f"{self.name}: SIGKILL to rsmld serve (pid {server.pid})")
            t_kill = time.time()
            server.kill()
            pids = [p for ps in attaches.values() for p in ps]
            deadline = time.monotonic() + 10
            while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = [p for p in pids if pid_alive(p)]
            self.check(not left, "every rsmld attach exited within 10 s of the server's SIGKILL",
                       f"{len(pids)} attaches" + (f"; still running: {left}" if left else ""))
            rcs = [d.wait_exit(60) for d in d1]
            self.check(all(rc is not None and rc != 0 for rc in rcs),
                       "each daemon saw its children die and exited non-zero", f"exit codes {rcs}")
            for d in d1:
                d.reap_group()
            exits = []
            for d in d1:
                for evs in d.transcripts().values():
                    start = next((e for e in evs if e["dir"] == "start"), {})
                    if start.get("child_pid") in pids:
                        x = [e for e in evs if e["dir"] == "exit"]
                        exits.append((proc_shard(evs), x[-1]["rc"] if x else None,
                                      round(x[-1]["ts"] - t_kill, 1) if x else None))
            self.check(len(exits) == 4 and all(rc not in (None, 0) and t < 10 for _, rc, t in exits),
                       "recorded: each attach alive at the kill exited non-zero, seconds after it",
                       ", ".join(f"{s[-1] if s else '?'}: rc {rc} after {t}s" for s, rc, t in exits))
            ckpt = {s.label: {k: lease_esn(r) for k, r in s.leases().items()} for s in (a, b)}
            self.note("checkpoints after run1: " + "; ".join(
                f"{k}: " + ", ".join(f"{sh[-1]}: {fmt_esn(e)}" for sh, e in sorted(v.items())) for k, v in ckpt.items()))
            time.sleep(1)  # records keep coming while everything is down

            server.start()
            self.check("removing stale socket" in server.log_text(), "the restarted server removed the stale socket",
                       server.log_paths[-1])
            d2 = [AttachDaemon(s, f"run2-{s.label}", f"worker-{s.label}", server, props).start() for s in (a, b)]

            def initialized():
                inits = {}
                for s, d in zip((a, b), d2):
                    for evs in d.transcripts().values():
                        for e, m in messages(evs):
                            if m.get("action") == "initialize":
                                inits[(s.label, m["shardId"])] = esn(m.get("sequenceNumber"),
                                                                     m.get("subSequenceNumber"))
                return inits if len(inits) == 4 else None
            inits = self.wait_until("the restarted daemons initialized every shard", initialized, timeout=150, watch=d2)
            self.check(all(inits[(k, sh)] == e for k, v in ckpt.items() for sh, e in v.items()),
                       "each shard resumes from its checkpoint",
                       ", ".join(f"{k}/{sh[-1]}: {fmt_esn(e)}" for (k, sh), e in sorted(inits.items())))
            time.sleep(2)
        finally:
            counts = [p.stop() for p in producers]
        self.note(f"producers put {counts} records while the daemons ran")
        for s in (a, b):
            s.wait_records(timeout=90, watch=d2)
        self.wait_until("every lease checkpointed at its last record",
                        lambda: not lease_problems(a) and not lease_problems(b), timeout=30, watch=d2)
        for s in (a, b):
            manifest, _output, rep = s.check_records(allow_duplicates=True)
            by_key = {(m["partitionKey"], m["data"]): m for m in manifest}
            early = [k for k in rep["duplicated"] if esn(by_key[k]["sequenceNumber"], by_key[k]["subSequenceNumber"])
                     <= ckpt[s.label].get(by_key[k]["shard"], (-1, 0))]
            s.check(not early, "nothing at or below a checkpoint was written twice (duplicates only after it)",
                    f"{len(rep['duplicated'])} of {len(manifest)} records twice (at-least-once across the kill)"
                    + (f"; {len(early)} at or below the checkpoint" if early else ""))
            bad = lease_problems(s)
            s.check(not bad, "every lease checkpointed at its last record", "; ".join(bad) or describe_leases(s))
        rcs = stop_all(d2)
        self.note(f"restarted daemons' exit codes after SIGTERM: {rcs}")
        rc = server.terminate(60)
        self.check(rc == 0, "the restarted rsmld serve exits 0 on SIGTERM", f"exit code {rc}")
        self.check_processes(daemons=d2)
        allowed = ("Reached end of STDIN of child process", "Encountered an error while running daemon")
        bad = {d.name: d.fatal_log_lines(allowed) for d in d1}
        bad.update({d.name: d.fatal_log_lines() for d in d2})
        self.check(not any(bad.values()), "daemon logs: nothing fatal beyond run1's dead children", str(bad))


# e2e.sh runs the KCL 3.x cases in two runners side by side, every other case each (--part): this
# order gives each runner one of the two long two-daemon cases (steal, handoff).
CASES = [Records, Split, Sigterm, Kill, Steal, Handoff, Bulk, Serve, ServeKill]

if __name__ == "__main__":
    sys.exit(run_suite(CASES, description=__doc__.split("\n\n")[0]))
