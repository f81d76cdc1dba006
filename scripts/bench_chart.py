#!/usr/bin/env python3
"""Chart of a scripts/bench.sh result: throughput per processor, and scaling per worker count.

    python scripts/bench_chart.py bench/results/<date>.json bench/results/chart.png

Needs matplotlib (scripts/requirements-bench.txt; bench.sh installs it in .state/bench-venv).
Bars are medians over the repetitions; the whiskers span the fastest and slowest run.
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PROCS = [
    ("null", "(a) null_processor\nprotocol limit", "#9e9e9e"),
    ("decode", "(b) decode_processor\nbare decode bound", "#6a8caf"),
    ("rsmld", "(c) rsmld\n--handler discard", "#d9822b"),
    ("kclpy", "(e) kclpy sample\nno-op process_record", "#5aa05a"),
]
SCENARIOS = [
    ("plain-1k", "1 KiB records"),
    ("kpl-100", "100 B KPL user records"),
    ("big-10m", "10 MiB batches"),
]


def rates(runs, label):
    return [r["records_per_s"] for r in runs if r["label"] == label and r.get("ok") and r.get("records_per_s")]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        result = json.load(f)
    runs, meta = result["runs"], result["meta"]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [2.3, 1]})

    # Throughput per processor, per scenario (log scale: the baselines span 3 decades).
    width = 0.8 / len(PROCS)
    for i, (proc, name, color) in enumerate(PROCS):
        xs, ys, lo, hi = [], [], [], []
        for j, (scen, _) in enumerate(SCENARIOS):
            vals = rates(runs, f"{scen}/{proc}")
            if not vals:
                continue
            m = statistics.median(vals)
            xs.append(j + (i - (len(PROCS) - 1) / 2) * width)
            ys.append(m)
            lo.append(m - min(vals))
            hi.append(max(vals) - m)
        if not xs:
            continue
        ax1.bar(xs, ys, width * 0.95, color=color, label=name, yerr=[lo, hi], capsize=2, ecolor="#333333")
        for x, y, h in zip(xs, ys, hi):
            text = f"{y / 1e6:.2f}M" if y >= 1e6 else f"{y / 1e3:.0f}k"
            ax1.text(x, (y + h) * 1.1, text, ha="center", va="bottom", fontsize=7, rotation=90)
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(SCENARIOS)))
    ax1.set_xticklabels([s[1] for s in SCENARIOS])
    ax1.set_ylabel("records per second (log scale)")
    ax1.set_title("Throughput under mld_sim (median of runs; whiskers: min-max)")
    top = ax1.get_ylim()[1]
    ax1.set_ylim(top=top * 4)
    ax1.legend(fontsize=8, loc="upper right", ncol=2)
    ax1.grid(axis="y", which="both", alpha=0.3)

    # Scaling of a CPU-bound handler with the worker count.
    nproc = meta.get("nproc", 2)
    points, used = [], {}
    for workers, label in ((1, "cpu/cpu-1"), (nproc, "cpu/cpu-N")):
        vals = rates(runs, label)
        if vals:
            points.append((workers, statistics.median(vals), min(vals), max(vals)))
            used[workers] = statistics.median(
                [r["cpu_s"] / r["wall_s"] for r in runs if r["label"] == label and r.get("ok") and r.get("wall_s")])
    if points:
        ws = [p[0] for p in points]
        ms = [p[1] for p in points]
        ax2.errorbar(ws, ms, yerr=[[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]],
                     marker="o", color="#d9822b", capsize=3, label="cpu_processor (measured)")
        base = points[0][1] if points[0][0] == 1 else None
        if base:
            ax2.plot(ws, [base * w for w in ws], "--", color="#777777", label="linear from 1 worker")
            for w, m in zip(ws, ms):
                ax2.annotate(f"{m / 1e3:.1f}k/s ({m / base:.2f}x)\n{used[w]:.2f} cores used", (w, m),
                             textcoords="offset points", xytext=(6, -24), fontsize=8)
        ax2.set_xticks(ws)
        ax2.set_xlim(0.5, max(ws) + 0.7)
        ax2.set_ylim(bottom=0, top=max(ms + ([base * max(ws)] if base else [])) * 1.25)
    ax2.set_xlabel("--workers")
    ax2.set_ylabel("records per second")
    ax2.set_title(f"Scaling: {meta.get('cpu_rounds', '?')} MD5 rounds per 1 KiB item")
    ax2.legend(fontsize=8, loc="upper left")
    ax2.grid(alpha=0.3)

    nice = meta.get("nice")
    fig.suptitle(
        f"rsmld benchmarks, {meta.get('started', '')[:10]}: {nproc} x {meta.get('cpu_model', '?')}, "
        f"{meta.get('repetitions', '?')} interleaved repetitions, load avg before {meta.get('load_average_before', '?')}"
        + ("" if nice is None else f", run at nice {nice}"),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
