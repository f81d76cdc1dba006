#!/usr/bin/env python3
"""The many-leases benchmark (issue 13): N leases at once, child mode against serve mode.

Called by `scripts/bench.sh --leases 1,4,16`; runnable alone:

    scripts/bench_leases.py --bin target/release --leases 1,4,16 --reps 3 \
        --out bench/results/DAY-leases.md --json bench/results/DAY-leases.json

One run of (mode, handler, N) starts N simulators (`mld_sim`, one lease each: its own shard
id, a fixed number of records) that spawn their processors at one instant (`--start-at`):

- child mode: each simulator spawns its own `rsmld [handler options]` (default workers);
- serve mode: one `rsmld serve --socket S [handler options]` started before the clock, and
  each simulator spawns `rsmld attach --socket S --properties P`.

Handlers: `discard`, and `exec --exec-framing batch` running bench/naive_exec_child.py
(json.loads of each line, one flushed answer per line).

Measured per run:

- items/s: all leases' items / (last simulator's exit - the common start instant);
- peak RSS: the largest sum, over samples every ~50 ms of /proc, of the resident sets of
  every process under this script except the simulators (rsmld children, server, attaches,
  exec children);
- CPU s: user + system time from wait4 of everything rsmld started: the simulators' reports
  of their children (an rsmld child with its reaped exec children, or an attach) plus, in
  serve mode, the server's rusage after SIGTERM (it reaps its exec children);
- peak exec children: the most Python processes alive in that tree in one sample.
- lease start: spawn of the processor (`rsmld`, or `rsmld attach`) to the status of
  `initialize`, as the simulators report it; the median lease of the run.

Also per run, over the timed interval only: the machine's CPU split from /proc/stat (idle,
steal) and the CPU of the kernel's DAMON threads (`kdamond*`, proactive reclaim, where the
kernel runs it), which compete with the run for the same cores and vary from minute to
minute; the report gives their medians so a reader can tell the machine's noise from rsmld.

Repetitions interleave the modes: for each repetition, handler and N, child then serve in
odd repetitions and serve then child in even ones (so neither mode always runs on the warmer
or the cooler machine). The report takes medians, and compares the modes by their paired
ratios: serve / child items/s of the runs of one repetition, which ran back to back, with a
bootstrap 95% interval of their median.

The control (`--control`, on by default for discard): each repetition runs child mode a
second time (`control`, the same command as `child`), in a rotating order of the three runs,
and the report gives control / child like serve / child. Two runs of one command differ on
this machine by several percent; the control shows by how much. The speed target
(`speed_verdict`): met when serve is faster (the interval above 1), when the paired median is
at least 1, or when the two are equal within 5% (serve / child's interval and the control's
both inside 0.95-1.05); not met when the interval lies below 1, or when the run cannot tell.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD = REPO / "bench" / "naive_exec_child.py"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def proc_stats():
    """Every process's /proc/<pid>/stat: (pid, comm, the fields after the comm)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        lp, rp = raw.find("("), raw.rfind(")")
        yield int(name), raw[lp + 1 : rp], raw[rp + 2 :].split()


def proc_table() -> dict[int, tuple[int, str, int]]:
    """Every process: pid -> (ppid, comm, rss bytes), from /proc/<pid>/stat."""
    # rest[0] is the state (field 3); ppid is field 4, rss (pages) field 24.
    return {pid: (int(rest[1]), comm, int(rest[21]) * PAGE) for pid, comm, rest in proc_stats()}


class Sampler(threading.Thread):
    """Samples, every `period` s, the processes rsmld started under `root` (this script)."""

    def __init__(self, root: int, server: int | None, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.server = server
        self.period = period
        self.stop = threading.Event()
        self.peak_rss = 0
        self.peak_anon = 0
        self.peak_exec = 0
        self.peak_procs = 0
        self.peak_split: dict[str, int] = {}
        self.server_threads: dict[str, list[float]] = {}
        self.threads_seen: dict[str, tuple[str, float]] = {}
        self.samples = 0

    def sample(self) -> None:
        table = proc_table()
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            kids.setdefault(ppid, []).append(pid)
        rss = anon = execs = procs = 0
        split = {"server": 0, "lease": 0, "exec": 0, "other": 0}
        # Only what rsmld started: the server's tree, and the trees under each simulator
        # (not the simulators, nor this script's own forks before they exec).
        todo = []
        for pid in kids.get(self.root, []):
            if pid == self.server:
                todo.append((pid, "server"))
            elif table[pid][1] == "mld_sim":
                todo.extend((k, "lease") for k in kids.get(pid, []) if table[k][1] != "mld_sim")
        while todo:
            pid, role = todo.pop()
            todo.extend((k, "other") for k in kids.get(pid, []))
            _, comm, r = table[pid]
            rss += r
            anon += rss_anon(pid)
            procs += 1
            if comm.startswith("python"):
                execs += 1
                role = "exec"
            split[role] += r
        if self.server:
            self.sample_server_threads()
        self.samples += 1
        if rss > self.peak_rss:
            self.peak_split = split
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_anon = max(self.peak_anon, anon)
        self.peak_exec = max(self.peak_exec, execs)
        self.peak_procs = max(self.peak_procs, procs)

    def sample_server_threads(self) -> None:
        """CPU seconds of the server's threads by name (each thread's last sample kept)."""
        try:
            tids = os.listdir(f"/proc/{self.server}/task")
        except OSError:
            return
        for tid in tids:
            try:
                with open(f"/proc/{self.server}/task/{tid}/stat", "rb") as f:
                    raw = f.read().decode(errors="replace")
            except OSError:
                continue
            comm = raw[raw.find("(") + 1 : raw.rfind(")")]
            rest = raw[raw.rfind(")") + 2 :].split()
            self.threads_seen[tid] = (comm, (int(rest[11]) + int(rest[12])) / TICK)
        by: dict[str, list[float]] = {}
        for comm, cpu in self.threads_seen.values():
            e = by.setdefault(comm, [0, 0.0])
            e[0] += 1
            e[1] += cpu
        self.server_threads = by

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.period)


def rss_anon(pid: int) -> int:
    """RssAnon of a process in bytes (its private memory, not the shared pages of files)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_cpu() -> dict[str, int]:
    """The machine's CPU ticks so far: /proc/stat's idle (with iowait) and steal, and the
    kernel's DAMON threads (kdamond*, whose time /proc/stat counts as system time)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # utime and stime are fields 14 and 15 of a process's stat.
    reclaim = sum(int(rest[11]) + int(rest[12]) for _, comm, rest in proc_stats() if comm.startswith("kdamond"))
    return {"idle": fields[3] + fields[4], "steal": fields[7] if len(fields) > 7 else 0, "reclaim": reclaim}


def machine_shares(before: dict[str, int], after: dict[str, int], wall: float) -> dict[str, float]:
    """Idle, steal and reclaim (kdamond) CPU over an interval, in percent of every core's time."""
    span = (os.cpu_count() or 1) * wall * TICK
    return {k: 100.0 * (after[k] - before[k]) / span if span > 0 else 0.0
            for k in ("idle", "steal", "reclaim")}


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def handler_args(handler: str, python: str, extra: list[str]) -> list[str]:
    if handler == "discard":
        return ["--handler", "discard", *extra]
    return ["--handler", "exec", "--exec-framing", "batch", *extra, "--", python, str(CHILD)]


def wait_for_socket(path: Path, server: subprocess.Popen, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if server.poll() is not None:
            raise RuntimeError(f"rsmld serve exited with {server.returncode} before its socket")
        if time.monotonic() > deadline:
            raise RuntimeError(f"rsmld serve made no socket at {path} in {limit:.0f} s")
        time.sleep(0.01)


def one_run(a: argparse.Namespace, mode: str, handler: str, n: int, rep: int) -> dict:
    rsmld = str(Path(a.bin) / "rsmld")
    sim = str(Path(a.bin) / "mld_sim")
    hargs = handler_args(handler, a.python, a.rsmld_args.split())
    batches = a.discard_batches if handler == "discard" else a.exec_batches
    # The control is child mode again: the same command, another run.
    kind = "child" if mode == "control" else mode
    with tempfile.TemporaryDirectory(prefix="rsmld-leases.") as tmp:
        tmpd = Path(tmp)
        props = tmpd / "app.properties"
        props.write_text("applicationName = bench-leases\nexecutableName = rsmld attach\n")
        server = None
        server_log = open(tmpd / "server.log", "wb")  # noqa: SIM115 (closed in finally)
        try:
            if kind == "serve":
                sock = tmpd / "rsmld.sock"
                server = subprocess.Popen(
                    [rsmld, "serve", "--socket", str(sock), *hargs], stderr=server_log
                )
                wait_for_socket(sock, server)
                cmd = [rsmld, "attach", "--socket", str(sock), "--properties", str(props)]
            else:
                cmd = [rsmld, *hargs]
            sampler = Sampler(os.getpid(), server.pid if server else None)
            sampler.start()
            sims = []
            for i in range(n):
                sims.append(subprocess.Popen(
                    [sim, "--batches", str(batches), "--records", str(a.records),
                     "--size", str(a.size), "--seed", str(rep * 1000 + i),
                     "--shard-id", f"shardId-{i:012d}", "--gate",
                     "--json", "--label", f"leases/{mode}/{handler}/{n}/{i}",
                     *a.sim_args.split(), "--", *cmd],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                ))
            for p in sims:  # every scenario generated: the leases start at one instant
                if p.stdout.readline() != b"ready\n":
                    raise RuntimeError("mld_sim --gate did not say ready")
            cpu0 = machine_cpu()
            t0 = time.time()
            for p in sims:
                p.stdin.write(b"go\n")
                p.stdin.close()
            outs = [p.stdout.read() for p in sims]
            codes = [p.wait() for p in sims]
            end = time.time()
            cpu1 = machine_cpu()
            sampler.stop.set()
            sampler.join()
            reports = []
            for out in outs:
                text = out.decode(errors="replace").strip()
                reports.append(json.loads(text) if text else {"ok": False, "violations": ["no report"]})
            server_cpu = 0.0
            server_exit = None
            if server is not None:
                server.send_signal(signal.SIGTERM)
                _, status, ru = os.wait4(server.pid, 0)
                server.returncode = os.waitstatus_to_exitcode(status)
                server_exit = server.returncode
                server_cpu = ru.ru_utime + ru.ru_stime
                server = None
        finally:
            if server is not None:
                server.kill()
                server.wait()
            server_log.close()
        log_tail = (tmpd / "server.log").read_text(errors="replace")[-2000:]
    items = sum(r["scenario"]["records"] for r in reports if r.get("scenario"))
    violations = [v for r in reports for v in r.get("violations", [])]
    ok = all(c == 0 for c in codes) and all(r.get("ok") for r in reports) and server_exit in (None, 0)
    if not ok:
        print(f"FAILED {mode}/{handler}/{n} rep {rep}: exits {codes}, server {server_exit}, "
              f"{violations[:3]}\n{log_tail if kind == 'serve' else ''}", file=sys.stderr)
    wall = end - t0
    return {
        "mode": mode, "handler": handler, "leases": n, "rep": rep, "ok": ok,
        "items": items, "wall_s": wall, "items_per_s": items / wall if wall > 0 else None,
        "peak_rss_mib": sampler.peak_rss / 2**20,
        "cpu_s": sum(r.get("cpu_s") or 0.0 for r in reports) + server_cpu,
        "server_cpu_s": server_cpu if kind == "serve" else None,
        "machine_pct": machine_shares(cpu0, cpu1, wall),
        "peak_anon_mib": sampler.peak_anon / 2**20,
        "peak_rss_split_mib": {k: v / 2**20 for k, v in sampler.peak_split.items()},
        "server_threads_cpu_s": sampler.server_threads,
        "peak_exec_children": sampler.peak_exec,
        "peak_processes": sampler.peak_procs,
        "samples": sampler.samples,
        "spawn_spread_s": (max(st) - min(st)) if (st := [r["started_unix_s"] for r in reports if r.get("started_unix_s")]) else None,
        "lease_wall_s_max": max((r.get("wall_s") or 0.0 for r in reports), default=None),
        "start_to_init_ms": statistics.median(inits) if (inits := [r["start_to_init_status_ms"] for r in reports if r.get("start_to_init_status_ms") is not None]) else None,
        "exits": codes, "server_exit": server_exit, "violations": violations[:5],
    }


def med(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r["ok"] and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def paired_ratios(runs: list[dict], handler: str, n: int, mode: str = "serve") -> list[float]:
    """`mode` / child items/s of each repetition where both runs of (handler, n) succeeded."""
    by_rep: dict[object, dict[str, float]] = {}  # a repetition, or (report, repetition) pooled
    for r in runs:
        if r["handler"] == handler and r["leases"] == n and r["ok"] and r.get("items_per_s"):
            by_rep.setdefault(r["rep"], {})[r["mode"]] = r["items_per_s"]
    return [m[mode] / m["child"] for m in by_rep.values() if mode in m and "child" in m]


def run_order(rep: int, control: bool) -> tuple[str, ...]:
    """The modes of one repetition, in the order they run: child and serve alternate which
    goes first; with the control, the three rotate through all six orders."""
    if not control:
        return ("child", "serve") if rep % 2 else ("serve", "child")
    return list(itertools.permutations(("child", "serve", "control")))[(rep - 1) % 6]


#: How close two speeds must be to count as equal: a paired interval inside 1 -/+ this. Two
#: runs of one command (the control) come out within about 5% of each other here in a run
#: of 24 repetitions, so a closer margin would be below what the machine can resolve.
EQUAL_WITHIN = 0.05

#: The lease count issue 13's memory target is set at.
RSS_AT = 16


def within_margin(ci: tuple[float, float] | None) -> bool:
    return ci is not None and 1 - EQUAL_WITHIN <= ci[0] and ci[1] <= 1 + EQUAL_WITHIN


def speed_verdict(ci: tuple[float, float] | None, median: float | None,
                  control_ci: tuple[float, float] | None) -> tuple[str, bool | None]:
    """Reads serve / child's paired median and interval: what the machine shows, and
    whether the target "serve at least as fast as child" is met (None: too few pairs).

    Met when serve is faster (the interval above 1), when the median is at least 1, or when
    serve and child are equal within EQUAL_WITHIN (both the interval and the control's
    inside the margin: the control shows the run could resolve it). Not met when the
    interval lies below 1, however close, or when the run cannot tell."""
    if ci is None or median is None:
        return "too few pairs", None
    if ci[0] > 1:
        return "serve faster", True
    if ci[1] < 1:
        return "serve slower", False
    if median >= 1:
        return "no difference resolved, median >= 1", True
    if not within_margin(control_ci):
        return f"not resolved: the control's interval is not within {EQUAL_WITHIN:.0%}", False
    if within_margin(ci):
        return f"equal within {EQUAL_WITHIN:.0%} (as the control)", True
    return f"not shown within {EQUAL_WITHIN:.0%}", False


def median_interval(xs: list[float], rounds: int = 2000) -> tuple[float, float] | None:
    """A bootstrap 95% interval of the median of `xs` (percentile method, fixed seed, so a
    report is reproducible from its JSON)."""
    if len(xs) < 3:
        return None
    rng = random.Random(13)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(rounds))
    return meds[int(0.025 * rounds)], meds[int(0.975 * rounds) - 1]


def med_machine(rows: list[dict], key: str) -> float | None:
    vals = [r["machine_pct"][key] for r in rows if r["ok"] and r.get("machine_pct")]
    return statistics.median(vals) if vals else None


def num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def group_runs(runs: list[dict]) -> dict[tuple[str, int, str], list[dict]]:
    """The runs by (handler, leases, mode)."""
    groups: dict[tuple[str, int, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["handler"], r["leases"], r["mode"]), []).append(r)
    return groups


def speed_section(runs: list[dict], handlers: list[str], leases: list[int]
                  ) -> tuple[list[str], dict[tuple[str, int], tuple[float | None, bool | None]]]:
    """The speed table (serve / child and control / child, paired) and each row's verdict."""
    groups = group_runs(runs)
    medians = {k: med(v, "items_per_s") for k, v in groups.items()}
    md = ["", ("Speed, serve / child: the median of the paired ratios (the runs of one repetition), "
               "its bootstrap 95% interval, the repetitions serve won, and the ratio of the medians above. "
               "Control / child: the same for child mode run twice (`--control`), which shows how far two runs "
               "of one command differ here. What the machine shows: serve faster or slower when the interval "
               f"lies above or below 1; otherwise whether the two are equal within {EQUAL_WITHIN:.0%} (the interval and "
               "the control's inside that margin)."),
          "", ("| handler | leases | paired median | 95% interval | serve faster | ratio of medians "
               "| control / child | control's interval | what the machine shows |"),
          "|---|---|---|---|---|---|---|---|---|"]
    verdicts: dict[tuple[str, int], tuple[float | None, bool | None]] = {}
    fmt_ci = lambda ci: "n/a" if ci is None else f"{ci[0]:.3f}x - {ci[1]:.3f}x"
    for h in handlers:
        for n in leases:
            rs = paired_ratios(runs, h, n)
            median = statistics.median(rs) if rs else None
            ci = median_interval(rs)
            cs = paired_ratios(runs, h, n, "control")
            control_ci = median_interval(cs)
            shows, met = speed_verdict(ci, median, control_ci)
            verdicts[(h, n)] = (median, met)
            c, s = medians.get((h, n, "child")), medians.get((h, n, "serve"))
            r = s / c if c and s else None
            md.append(f"| {h} | {n} | {num(median, '.3f')}x | {fmt_ci(ci)} | "
                      f"{sum(1 for x in rs if x >= 1)} of {len(rs)} | {num(r, '.3f')}x | "
                      f"{num(statistics.median(cs) if cs else None, '.3f')}{'x' if cs else ''} | "
                      f"{fmt_ci(control_ci) if cs else '-'} | {shows} |")
    return md, verdicts


def pooled_report(paths: list[str]) -> str:
    """The speed table over the runs of several reports (`--pool`): the same parameters, each
    report's repetitions kept apart (a pair never spans two reports)."""
    runs: list[dict] = []
    params = None
    for i, path in enumerate(paths):
        d = json.loads(Path(path).read_text())
        if params is not None and d["meta"]["params"] != params:
            raise SystemExit(f"{path}: other parameters than {paths[0]} ({d['meta']['params']} != {params})")
        params = d["meta"]["params"]
        runs += [{**r, "rep": (i, r["rep"])} for r in d["runs"]]
    handlers = sorted({r["handler"] for r in runs})
    leases = sorted({r["leases"] for r in runs})
    speed, _ = speed_section(runs, handlers, leases)
    head = (f"Pooled: the runs of {', '.join(paths)} ({len({r['rep'] for r in runs})} repetitions in all; "
            f"parameters {params}).")
    return "\n".join([head, *speed]) + "\n"


def report(a: argparse.Namespace, runs: list[dict], meta: dict) -> str:
    groups = group_runs(runs)
    m = {k: {key: med(v, key) for key in
             ("items_per_s", "wall_s", "peak_rss_mib", "peak_anon_mib", "cpu_s", "peak_exec_children", "peak_processes",
              "start_to_init_ms")}
         for k, v in groups.items()}
    md = [
        (f"Many-leases benchmark (issue 13), run {meta['started']}: {meta['reps']} interleaved "
        f"repetitions ({'with discard, child, serve and the control (child again) in a rotating order; with exec, ' if a.control else ''}child then serve in odd ones, serve then child in even ones), medians. {meta['nproc']} x {meta['cpu_model']}, "
        f"Linux {meta['kernel']}; load average at start {meta['load_start']}, at end {meta['load_end']}; "
        f"commit {meta['commit'][:10]}{' (dirty)' if meta['dirty'] else ''}"
        f"{'; rsmld options added: `' + a.rsmld_args + '`' if a.rsmld_args else ''}"
        f"{'; mld_sim options added: `' + a.sim_args + '`' if a.sim_args else ''}"
        f"{'; environment ' + env_note if (env_note := ' '.join(k + '=' + v for k, v in os.environ.items() if k.startswith('MALLOC_'))) else ''}"
        f"{'; QUICK run (not comparable)' if a.quick else ''}."),
        "",
        (f"Each lease: one `mld_sim --batches K --records {a.records} --size {a.size}` (K = "
        f"{a.discard_batches} with discard: {a.discard_batches * a.records:,} items; {a.exec_batches} with exec: "
        f"{a.exec_batches * a.records:,} items; shardEnded), its own shard id; all leases start at one "
        "instant (`mld_sim --gate`: when every scenario is generated). Child mode: each simulator spawns `rsmld HANDLER` (default workers = cores). "
        "Serve mode: one `rsmld serve --socket S HANDLER`, each simulator spawns `rsmld attach "
        "--socket S --properties P`. HANDLER: `--handler discard`, or `--handler exec "
        "--exec-framing batch -- python3 bench/naive_exec_child.py`. items/s: all items / (last "
        "simulator exit - start). Lease start: from the simulator's spawn of its processor to the "
        "status of `initialize` (the median lease of a run). RSS: peak over ~50 ms /proc samples of the sum over every "
        "process rsmld started (children, server, attaches, exec children; simulators excluded). "
        "CPU: user+sys from wait4 of the rsmld children / attaches (with their reaped exec "
        "children) and of the server. Machine, over each timed interval, in percent of all "
        "cores' time: idle, steal (the hypervisor's), and reclaim (the kernel's DAMON threads, "
        "`kdamond*`, which compete for the same cores; 0 where the kernel runs none)."),
        "",
        "| handler | leases | mode | items/s | wall s | lease start ms | peak RSS MiB | peak anon RSS MiB | CPU s | peak exec children | peak processes | idle % | steal % | reclaim % | runs (failed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (h, n, mode), rows in sorted(groups.items(), key=lambda kv: (kv[0][0] != "discard", kv[0][1], kv[0][2])):
        t = m[(h, n, mode)]
        md.append(
            f"| {h} | {n} | {mode} | {num(t['items_per_s'], ',.0f')} | {num(t['wall_s'], '.3f')} | "
            f"{num(t['start_to_init_ms'], '.1f')} | "
            f"{num(t['peak_rss_mib'], '.1f')} | {num(t['peak_anon_mib'], '.1f')} | {num(t['cpu_s'], '.2f')} | "
            f"{num(t['peak_exec_children'], '.0f') if h == 'exec' else '-'} | {num(t['peak_processes'], '.0f')} | "
            f"{num(med_machine(rows, 'idle'), '.1f')} | {num(med_machine(rows, 'steal'), '.1f')} | "
            f"{num(med_machine(rows, 'reclaim'), '.1f')} | "
            f"{len(rows)} ({sum(1 for r in rows if not r['ok'])}) |"
        )
    speed, verdicts = speed_section(runs, a.handlers, a.leases)
    md += speed
    md += ["", "| target (issue 13) | handler | leases | value | met |", "|---|---|---|---|---|"]
    for h in a.handlers:
        for n in a.leases:
            r, met = verdicts[(h, n)]
            md.append(f"| serve items/s >= child items/s (paired median; interval against 1 and the control) "
                      f"| {h} | {n} | {num(r, '.3f')}x | {'n/a' if met is None else ('yes' if met else '**no**')} |")
        if RSS_AT not in a.leases:
            continue
        c, s = m.get((h, RSS_AT, "child")), m.get((h, RSS_AT, "serve"))
        r = (s["peak_rss_mib"] / c["peak_rss_mib"]) if c and s and c["peak_rss_mib"] and s["peak_rss_mib"] else None
        md.append(f"| serve RSS <= 1/3 of child RSS at {RSS_AT} leases | {h} | {RSS_AT} | {num(r, '.2f')}{'' if r is None else 'x'} | "
                  f"{'n/a' if r is None else ('yes' if r <= 1 / 3 else '**no**')} |")
    if "exec" in a.handlers:
        for n in a.leases:
            s, c = m.get(("exec", n, "serve")), m.get(("exec", n, "child"))
            v = s["peak_exec_children"] if s else None
            cv = c["peak_exec_children"] if c else None
            md.append(f"| serve exec children == server workers ({meta['nproc']}); child mode: {num(cv, '.0f')} "
                      f"(leases x workers = {n * meta['nproc']}) | exec | {n} | {num(v, '.0f')} | "
                      f"{'n/a' if v is None else ('yes' if v == meta['nproc'] else '**no**')} |")
    return "\n".join(md) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", help="directory with rsmld and mld_sim (required unless --pool)")
    p.add_argument("--leases", default="1,4,16", help="comma-separated lease counts")
    p.add_argument("--handlers", default="discard,exec")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batches", type=int, help="batches per lease, both handlers")
    p.add_argument("--discard-batches", type=int, default=200)
    p.add_argument("--exec-batches", type=int, default=50)
    p.add_argument("--records", type=int, default=1000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--python", default=sys.executable, help="interpreter of the exec child")
    p.add_argument("--rsmld-args", default="", help="more rsmld options, both modes (experiments)")
    p.add_argument("--sim-args", default="", help="more mld_sim options, e.g. --pipe-size 4194304")
    p.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                   help="with discard, run child mode a second time per repetition (the control)")
    p.add_argument("--quick", action="store_true", help="marks the report as a script check")
    p.add_argument("--pool", nargs="+", metavar="JSON",
                   help="print the speed table over these reports' runs (same parameters), run nothing")
    p.add_argument("--out", help="markdown report (required unless --pool)")
    p.add_argument("--json", help="raw runs and medians")
    a = p.parse_args()
    if a.pool:
        print(pooled_report(a.pool), end="")
        return 0
    if not a.out or not a.bin:
        p.error("--bin and --out are required")
    if a.batches is not None:
        a.discard_batches = a.exec_batches = a.batches
    a.leases = [int(x) for x in a.leases.split(",") if x]
    a.handlers = [x for x in a.handlers.split(",") if x]
    if not a.leases or min(a.leases) < 1 or a.reps < 1:
        p.error("--leases needs positive counts, --reps a positive number")
    for h in a.handlers:
        if h not in ("discard", "exec"):
            p.error(f"unknown handler {h} (discard, exec)")
    # 16 simulators, 16 children, their pipes and exec children: well under the usual limits,
    # but raise the soft descriptor limit anyway.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    cpu_model = next((ln.split(":", 1)[1].strip() for ln in read("/proc/cpuinfo").splitlines() if ln.startswith("model name")), "")
    meta = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reps": a.reps, "nproc": os.cpu_count(), "cpu_model": cpu_model, "kernel": platform.release(),
        "load_start": " ".join(read("/proc/loadavg").split()[:3]),
        "commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "--untracked-files=no") != "",
        "params": {"discard_batches": a.discard_batches, "exec_batches": a.exec_batches, "records": a.records, "size": a.size, "python": a.python},
    }
    runs = []
    for rep in range(1, a.reps + 1):
        for h in a.handlers:
            for n in a.leases:
                for mode in run_order(rep, a.control and h == "discard"):
                    r = one_run(a, mode, h, n, rep)
                    runs.append(r)
                    print(f"[rep {rep}] {h:7} {n:3} leases {mode:5}: {num(r['items_per_s'], ',.0f')} items/s, "
                          f"{r['peak_rss_mib']:.1f} MiB, {r['cpu_s']:.2f} CPU s, "
                          f"{r['peak_exec_children']} python{'' if r['ok'] else ' FAILED'}", file=sys.stderr)
    meta["load_end"] = " ".join(read("/proc/loadavg").split()[:3])
    md = report(a, runs, meta)
    Path(a.out).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    print(md)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
