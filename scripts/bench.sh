#!/usr/bin/env bash
# Throughput, scaling, memory and start-up benchmarks of rsmld against baselines, under the
# daemon simulator (src/bin/mld_sim.rs). One run, interleaved: every repetition runs every
# (scenario, processor) pair once, round-robin, so slow drifts of a noisy machine hit all
# processors alike; the report takes medians over the repetitions.
#
#   scripts/bench.sh                  # R=5; writes bench/results/<date>.json, .md, chart.png
#   scripts/bench.sh --reps 3
#   scripts/bench.sh --quick          # tiny scenarios, 1 repetition: checks the script only
#   scripts/bench.sh --baseline /tmp/rsmld-old   # also run an older rsmld build (c0) next to c
#   scripts/bench.sh --leases 1,4,16  # the many-leases scenario only (child vs serve; R=3)
#
# Options: --reps N (default 5, or $BENCH_REPS)   --quick   --no-kclpy (skip baseline e)
#          --no-chart   --out DIR (default bench/results)
#          --tag TAG (results go to <date>-TAG.json/.md and chart-TAG.png)
#          --only LIST (comma-separated scenarios, e.g. --only cpu,startup)
#          --baseline BIN (an older rsmld binary: processor c0, on c's scenarios, in the
#          same interleaved run; the report adds the ratios c/c0)
#          --leases LIST (the scenario "leases" instead of the others: LIST simulators at once,
#          each rsmld child mode against one `rsmld serve` with `rsmld attach` children, with
#          the discard handler and an exec handler (bench/naive_exec_child.py, batch framing);
#          items/s over all leases, peak RSS of everything rsmld started, CPU, exec children;
#          R=3 unless --reps; scripts/bench_leases.py; writes <date>-leases[-TAG].md, .json)
# Environment: RSMLD_CPU_ROUNDS (MD5 rounds per item for cpu_processor, default 20),
#              BENCH_NICE (run each simulator run in its own session whose scheduler
#              autogroup, and processes, get this nice level, e.g. -10 as root: on a shared
#              machine, other sessions' work then takes fewer of the benchmark's cores;
#              recorded in the results), RSMLD_STATE (where venvs live, default
#              <repo>/.state), CARGO_TARGET_DIR.
#
# Processors:
#   a null      src/bin/null_processor     status per line, no JSON parsing: the protocol limit
#   b decode    src/bin/decode_processor   serde_json + base64 of every record, 1 thread: the bare decode bound
#   c rsmld     target/release/rsmld --handler discard (default workers = cores)
#   c0 rsmld-baseline   BIN --handler discard, with --baseline BIN (runs right after c)
#   d cpu-1/N   src/bin/cpu_processor --workers 1 / N (N = nproc), RSMLD_CPU_ROUNDS of MD5 per item
#   e kclpy     the amazon_kclpy sample processor with a no-op process_record (bench/kclpy_sample_noop.py)
#   f exec-item / exec-batch   rsmld --handler exec [--exec-framing batch] running the naive
#               Python child bench/naive_exec_child.py (json.loads of each line, one flushed
#               answer per line) under the same interpreter as e (without e: python3's)
# Scenarios (mld_sim flags; all end with shardEnded):
#   plain-1k    --batches 200 --records 1000 --size 1024         a, b, c, c0, e
#   kpl-100     --batches 100 --records 10000 --size 100 --kpl 100   a, b, c, c0, e, f
#   big-10m     --batches 10 --records 10240 --size 1024  (10 MiB payload, ~16 MB lines)   a, b, c, c0
#   cpu         --batches 50 --records 1000 --size 1024          d at 1 and N workers
#   startup     --batches 1 --records 10 --size 100, 10 runs per repetition   a, b, c, c0, e
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RSMLD_REPO"

REPS="${BENCH_REPS:-5}"
QUICK=0
KCLPY=1
CHART=1
OUT="$RSMLD_REPO/bench/results"
TAG=""
ONLY=""
BASELINE=""
LEASES=""
REPS_SET=0
[ -n "${BENCH_REPS:-}" ] && REPS_SET=1
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS="$2"; REPS_SET=1; shift 2 ;;
        --reps=*) REPS="${1#*=}"; REPS_SET=1; shift ;;
        --quick) QUICK=1; shift ;;
        --no-kclpy) KCLPY=0; shift ;;
        --no-chart) CHART=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --baseline) BASELINE="$2"; shift 2 ;;
        --baseline=*) BASELINE="${1#*=}"; shift ;;
        --leases) LEASES="$2"; shift 2 ;;
        --leases=*) LEASES="${1#*=}"; shift ;;
        -h|--help) sed -n '2,46p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
case "$REPS" in ''|*[!0-9]*|0) die "--reps needs a positive number" ;; esac
BASELINE_VERSION=""
if [ -n "$BASELINE" ]; then
    [ -f "$BASELINE" ] && [ -x "$BASELINE" ] || die "--baseline $BASELINE is not an executable file"
    BASELINE="$(readlink -f "$BASELINE")"
    case "$BASELINE" in *[[:space:]]*) die "--baseline: the path must not contain white space ($BASELINE)" ;; esac
    BASELINE_VERSION="$("$BASELINE" --version 2>/dev/null | head -1 || true)"
    [ -n "$BASELINE_VERSION" ] || die "--baseline $BASELINE does not answer --version like rsmld"
fi
ROUNDS="${RSMLD_CPU_ROUNDS:-20}"
NPROC="$(nproc)"
NICE="${BENCH_NICE:-}"
RUN_PREFIX=()
if [ -n "$NICE" ]; then
    case "$NICE" in -[0-9]*|[0-9]*) ;; *) die "BENCH_NICE must be a number" ;; esac
    nice -n "$NICE" true 2>/dev/null || die "cannot run at nice $NICE (negative levels need root)"
    # With autogroup scheduling (kernel.sched_autogroup_enabled=1) CPU time is shared
    # between sessions first, and a plain nice only ranks processes inside one session:
    # each run gets its own session (setsid) whose autogroup gets the nice level.
    # shellcheck disable=SC2016 # expanded by the inner shell
    RUN_PREFIX=(setsid --wait bash -c 'n=$1; shift
        if [ -w /proc/self/autogroup ]; then echo "$n" >/proc/self/autogroup || exit 97; fi
        exec nice -n "$n" "$@"' _ "$NICE")
fi

# --- build -------------------------------------------------------------------------------------
log "building (release): rsmld, mld_sim, null_processor, decode_processor, cpu_processor"
# rsmld itself without the test support; the tools need the `testkit` feature (they are not
# installed by a plain `cargo install`).
cargo build --release --locked --quiet --bin rsmld
cargo build --release --locked --quiet --features testkit \
    --bin mld_sim --bin null_processor --bin decode_processor --bin cpu_processor
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release"
SIM="$BIN/mld_sim"

# --- the many-leases scenario (--leases): its own run and report --------------------------------
if [ -n "$LEASES" ]; then
    case "$LEASES" in *[!0-9,]*|,*|*,|*,,*) die "--leases needs a comma-separated list of counts, e.g. 1,4,16" ;; esac
    [ "$REPS_SET" = 1 ] || REPS=3
    mkdir -p "$OUT"
    DAY="$(date -u +%Y-%m-%d)-leases${TAG:+-$TAG}"
    LEASE_ARGS=(--bin "$BIN" --leases "$LEASES" --reps "$REPS"
        --out "$OUT/$DAY.md" --json "$OUT/$DAY.json"
        --python "$(python3 -c 'import sys; print(sys.executable)')")
    if [ "$QUICK" = 1 ]; then LEASE_ARGS+=(--reps 1 --batches 5 --quick); fi
    log "leases scenario: $LEASES leases, $REPS repetitions (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "${RUN_PREFIX[@]}" python3 "$RSMLD_REPO/scripts/bench_leases.py" "${LEASE_ARGS[@]}"
    log "wrote $OUT/$DAY.md and $OUT/$DAY.json"
    exit 0
fi

# --- Python: kclpy (baseline e) and matplotlib (chart) -------------------------------------------
BENCH_VENV="$RSMLD_STATE/bench-venv"
BENCH_PY="$BENCH_VENV/bin/python"
BENCH_REQS="$RSMLD_REPO/scripts/requirements-bench.txt"
ensure_bench_venv() {
    local stamp
    stamp="$BENCH_VENV/.rsmld-bench-requirements-$(sha256sum "$BENCH_REQS" | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        [ -x "$BENCH_PY" ] || { log "creating venv $BENCH_VENV"; python3 -m venv "$BENCH_VENV"; }
        log "installing $BENCH_REQS into $BENCH_VENV"
        "$BENCH_PY" -m pip install --quiet --disable-pip-version-check -r "$BENCH_REQS"
        rm -f "$BENCH_VENV"/.rsmld-bench-requirements-*
        touch "$stamp"
    fi
}
has_kclpy() { [ -x "$1" ] && "$1" -c 'import amazon_kclpy.kcl, samples.sample_kclpy_app' 2>/dev/null; }
KCLPY_PY=""
if [ "$KCLPY" = 1 ]; then
    if has_kclpy "$RSMLD_PY"; then
        KCLPY_PY="$RSMLD_PY"        # the e2e venv (scripts/install-daemon.sh) has the same wheel
    else
        ensure_bench_venv
        has_kclpy "$BENCH_PY" || die "amazon_kclpy or its sample is missing from $BENCH_VENV"
        KCLPY_PY="$BENCH_PY"
    fi
    log "kclpy baseline: $KCLPY_PY bench/kclpy_sample_noop.py"
fi
if [ "$CHART" = 1 ]; then ensure_bench_venv; fi
# The naive exec child (f) runs under e's interpreter, resolved to the real binary (a pyenv
# shim would add a shell script to every child start).
NAIVE_PY="${KCLPY_PY:-$(python3 -c 'import sys; print(sys.executable)')}"

# --- scenarios and processors ------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    REPS=1
    S_PLAIN="--batches 20 --records 1000 --size 1024"
    S_KPL="--batches 10 --records 10000 --size 100 --kpl 100"
    S_BIG="--batches 2 --records 10240 --size 1024"
    S_CPU="--batches 5 --records 1000 --size 1024"
    STARTUP_RUNS=3
else
    S_PLAIN="--batches 200 --records 1000 --size 1024"
    S_KPL="--batches 100 --records 10000 --size 100 --kpl 100"
    S_BIG="--batches 10 --records 10240 --size 1024"
    S_CPU="--batches 50 --records 1000 --size 1024"
    STARTUP_RUNS=10
fi
S_START="--batches 1 --records 10 --size 100"

proc_cmd() {
    case "$1" in
        null) echo "$BIN/null_processor" ;;
        decode) echo "$BIN/decode_processor" ;;
        rsmld) echo "$BIN/rsmld --handler discard" ;;
        rsmld-baseline) echo "$BASELINE --handler discard" ;;
        kclpy) echo "$KCLPY_PY $RSMLD_REPO/bench/kclpy_sample_noop.py" ;;
        exec-item) echo "$BIN/rsmld --handler exec -- $NAIVE_PY $RSMLD_REPO/bench/naive_exec_child.py" ;;
        exec-batch) echo "$BIN/rsmld --handler exec --exec-framing batch -- $NAIVE_PY $RSMLD_REPO/bench/naive_exec_child.py" ;;
        cpu-1) echo "env RSMLD_CPU_ROUNDS=$ROUNDS $BIN/cpu_processor --workers 1" ;;
        cpu-N) echo "env RSMLD_CPU_ROUNDS=$ROUNDS $BIN/cpu_processor --workers $NPROC" ;;
    esac
}
# c0 right after c: the pair sees the same machine state.
RSMLD_PROCS="rsmld${BASELINE:+ rsmld-baseline}"
MAIN_PROCS="null decode $RSMLD_PROCS"
[ -n "$KCLPY_PY" ] && MAIN_PROCS="$MAIN_PROCS kclpy"

want() { [ -z "$ONLY" ] || case ",$ONLY," in *",$1,"*) true ;; *) false ;; esac; }

RAW="$(mktemp "${TMPDIR:-/tmp}/rsmld-bench.XXXXXX.jsonl")"
FAILED=0
run_one() { # scenario proc rep sim-args...
    local scenario="$1" proc="$2" rep="$3"
    shift 3
    local cmd
    cmd="$(proc_cmd "$proc")"
    # shellcheck disable=SC2086 # word splitting of the command is intended
    if ! "${RUN_PREFIX[@]}" "$SIM" "$@" --seed "$rep" --json --label "$scenario/$proc" -- $cmd >>"$RAW"; then
        FAILED=$((FAILED + 1))
        log "FAILED: $scenario/$proc (repetition $rep); see the violations above"
    fi
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "running $REPS repetitions (load average $LOAD_BEFORE)${BASELINE:+; baseline c0: $BASELINE ($BASELINE_VERSION)}"
for rep in $(seq 1 "$REPS"); do
    log "repetition $rep/$REPS"
    if want plain-1k; then
        for p in $MAIN_PROCS; do
            # shellcheck disable=SC2086
            run_one plain-1k "$p" "$rep" $S_PLAIN
        done
    fi
    if want kpl-100; then
        for p in $MAIN_PROCS exec-item exec-batch; do
            # shellcheck disable=SC2086
            run_one kpl-100 "$p" "$rep" $S_KPL
        done
    fi
    if want big-10m; then
        for p in null decode $RSMLD_PROCS; do
            # shellcheck disable=SC2086
            run_one big-10m "$p" "$rep" $S_BIG
        done
    fi
    if want cpu; then
        for p in cpu-1 cpu-N; do
            # shellcheck disable=SC2086
            run_one cpu "$p" "$rep" $S_CPU
        done
    fi
    if want startup; then
        for i in $(seq 1 "$STARTUP_RUNS"); do
            for p in $MAIN_PROCS; do
                # shellcheck disable=SC2086
                run_one startup "$p" "$rep" $S_START
            done
        done
    fi
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- summary -------------------------------------------------------------------------------------
mkdir -p "$OUT"
DAY="$(date -u +%Y-%m-%d)${TAG:+-$TAG}"
JSON_OUT="$OUT/$DAY.json"
MD_OUT="$OUT/$DAY.md"
CHART_OUT="$OUT/chart${TAG:+-$TAG}.png"
export BENCH_RAW="$RAW" BENCH_JSON="$JSON_OUT" BENCH_MD="$MD_OUT" BENCH_REPS_DONE="$REPS" \
    BENCH_STARTED="$STARTED" BENCH_LOAD_BEFORE="$LOAD_BEFORE" BENCH_LOAD_AFTER="$LOAD_AFTER" \
    BENCH_NPROC="$NPROC" BENCH_BASELINE="$BASELINE" BENCH_BASELINE_VERSION="$BASELINE_VERSION" BENCH_NICE_LEVEL="$NICE" BENCH_ROUNDS="$ROUNDS" BENCH_QUICK="$QUICK" BENCH_KCLPY="$KCLPY_PY" \
    BENCH_SCENARIOS="plain-1k=$S_PLAIN;kpl-100=$S_KPL;big-10m=$S_BIG;cpu=$S_CPU;startup=$S_START x $STARTUP_RUNS"
python3 - <<'PY'
import json, os, platform, statistics, subprocess

env = os.environ
runs = [json.loads(l) for l in open(env["BENCH_RAW"]) if l.strip()]

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return ""

cpu_model = ""
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu_model = line.split(":", 1)[1].strip()
        break
meta = {
    "started": env["BENCH_STARTED"],
    "repetitions": int(env["BENCH_REPS_DONE"]),
    "quick": env["BENCH_QUICK"] == "1",
    "nproc": int(env["BENCH_NPROC"]),
    "cpu_model": cpu_model,
    "kernel": platform.release(),
    "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    "load_average_before": env["BENCH_LOAD_BEFORE"],
    "load_average_after": env["BENCH_LOAD_AFTER"],
    "rustc": sh("rustc", "--version"),
    "git_commit": sh("git", "rev-parse", "HEAD"),
    "git_dirty": sh("git", "status", "--porcelain", "--untracked-files=no") != "",
    "cpu_rounds": int(env["BENCH_ROUNDS"]),
    "nice": int(env["BENCH_NICE_LEVEL"]) if env.get("BENCH_NICE_LEVEL") else None,
    "kclpy_python": env["BENCH_KCLPY"],
    "baseline": {"binary": env["BENCH_BASELINE"], "version": env["BENCH_BASELINE_VERSION"]} if env.get("BENCH_BASELINE") else None,
    "scenarios": dict(s.split("=", 1) for s in env["BENCH_SCENARIOS"].split(";")),
}

groups = {}
for r in runs:
    scen, proc = r["label"].split("/", 1)
    groups.setdefault((scen, proc), []).append(r)

def med(scen, proc, key, agg=statistics.median):
    vals = [r[key] for r in groups.get((scen, proc), []) if r.get("ok") and r.get(key) is not None]
    return agg(vals) if vals else None

table = {}
for (scen, proc), rs in sorted(groups.items()):
    table[f"{scen}/{proc}"] = {
        "runs": len(rs),
        "failed": sum(1 for r in rs if not r.get("ok")),
        "records_per_s": med(scen, proc, "records_per_s"),
        "payload_mb_s": med(scen, proc, "payload_mb_s"),
        "line_mb_s": med(scen, proc, "line_mb_s"),
        "wall_s": med(scen, proc, "wall_s"),
        "cpu_s": med(scen, proc, "cpu_s"),
        "records_per_cpu_s": (lambda rs: statistics.median(rs) if rs else None)(
            [r["scenario"]["records"] / r["cpu_s"] for r in rs if r.get("ok") and r.get("cpu_s")]),
        "cores_used": (lambda xs: statistics.median(xs) if xs else None)(
            [r["cpu_s"] / r["wall_s"] for r in rs if r.get("ok") and r.get("cpu_s") and r.get("wall_s")]),
        "peak_rss_mib": med(scen, proc, "peak_rss_mib"),
        "peak_rss_mib_max": med(scen, proc, "peak_rss_mib", max),
        "start_to_init_status_ms": med(scen, proc, "start_to_init_status_ms"),
    }

def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None

def g(key, field):
    return table.get(key, {}).get(field)

startup_all = [r["start_to_init_status_ms"] for r in runs
               if r["label"] == "startup/rsmld" and r.get("ok") and r.get("start_to_init_status_ms") is not None]
ratios = [
    ("(c)/(b) rsmld vs bare decode, 1 KiB plain", "x", ratio(g("plain-1k/rsmld", "records_per_s"), g("plain-1k/decode", "records_per_s")), ">=", 1.25),
    ("(c)/(b) rsmld vs bare decode, 100 B KPL user records", "x", ratio(g("kpl-100/rsmld", "records_per_s"), g("kpl-100/decode", "records_per_s")), ">=", 1.25),
    ("(c)/(e) rsmld vs kclpy sample, 1 KiB plain", "x", ratio(g("plain-1k/rsmld", "records_per_s"), g("plain-1k/kclpy", "records_per_s")), ">=", 10),
    ("(c)/(e) rsmld vs kclpy sample, 100 B KPL user records", "x", ratio(g("kpl-100/rsmld", "records_per_s"), g("kpl-100/kclpy", "records_per_s")), ">=", 10),
    ("(f)/(e) naive Python exec child, batch framing, vs kclpy sample, 100 B KPL user records", "x", ratio(g("kpl-100/exec-batch", "records_per_s"), g("kpl-100/kclpy", "records_per_s")), ">=", 2),
    ("(f)/(e) naive Python exec child, item framing, vs kclpy sample, 100 B KPL user records", "x", ratio(g("kpl-100/exec-item", "records_per_s"), g("kpl-100/kclpy", "records_per_s")), None, None),
    ("(c) peak RSS, 10 MiB batches (max over runs)", "MiB", g("big-10m/rsmld", "peak_rss_mib_max"), "<=", 64),
    (f"(d) cpu_processor {meta['nproc']} workers / 1 worker", "x", ratio(g("cpu/cpu-N", "records_per_s"), g("cpu/cpu-1", "records_per_s")), ">=", 1.8),
    ("(c) start -> status(initialize)", "ms", statistics.median(startup_all) if startup_all else None, "<=", 5),
]
if meta["baseline"]:
    # c/c0: this build against the older one (--baseline), same scenarios, same run.
    for scen, what in [("plain-1k", "1 KiB plain"), ("kpl-100", "100 B KPL user records"), ("big-10m", "10 MiB batches")]:
        ratios.append((f"(c)/(c0) rsmld vs baseline, records/s, {what}", "x",
                       ratio(g(f"{scen}/rsmld", "records_per_s"), g(f"{scen}/rsmld-baseline", "records_per_s")), None, None))
    ratios.append(("(c)/(c0) rsmld vs baseline, CPU s, 1 KiB plain", "x",
                   ratio(g("plain-1k/rsmld", "cpu_s"), g("plain-1k/rsmld-baseline", "cpu_s")), None, None))
    ratios.append(("(c)/(c0) rsmld vs baseline, peak RSS, 10 MiB batches (max over runs)", "x",
                   ratio(g("big-10m/rsmld", "peak_rss_mib_max"), g("big-10m/rsmld-baseline", "peak_rss_mib_max")), None, None))
    ratios.append(("(c)/(c0) rsmld vs baseline, start -> status(initialize)", "x",
                   ratio(g("startup/rsmld", "start_to_init_status_ms"), g("startup/rsmld-baseline", "start_to_init_status_ms")), None, None))
summary = []
for name, unit, value, op, target in ratios:
    met = None if value is None or op is None else (value >= target if op == ">=" else value <= target)
    summary.append({"what": name, "value": value, "unit": unit, "target": f"{op} {target}" if op else "-", "met": met})

result = {"meta": meta, "summary": summary, "medians": table, "runs": runs}
with open(env["BENCH_JSON"], "w") as f:
    json.dump(result, f, indent=1)

def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"

nice_note = "" if meta["nice"] is None else f"; simulator and processors at nice {meta['nice']}"


def num(v, digits):
    return "n/a" if v is None else f"{v:.{digits}f}"

md = []
md.append(f"Run {meta['started']}: {meta['repetitions']} interleaved repetitions, medians. "
          f"{meta['nproc']} x {meta['cpu_model']}, {meta['mem_total_gib']} GiB, Linux {meta['kernel']}, {meta['rustc']}; "
          f"load average before/after {meta['load_average_before']} / {meta['load_average_after']}; "
          f"commit {meta['git_commit'][:10]}{' (dirty)' if meta['git_dirty'] else ''}"
          f"{nice_note}"
          f"{'; baseline c0 ' + meta['baseline']['binary'] + ' (' + meta['baseline']['version'] + ')' if meta['baseline'] else ''}"
          f"{'; QUICK run (not comparable)' if meta['quick'] else ''}.")
md.append("")
md.append("| ratio | value | target | met |")
md.append("|---|---|---|---|")
for s in summary:
    met = "n/a" if s["met"] is None else ("yes" if s["met"] else "**no**")
    md.append(f"| {s['what']} | {fmt(s['value'], s['unit'])} | {s['target']} | {met} |")
md.append("")
md.append("| scenario / processor | records/s | payload MB/s | wall s | CPU s | cores used (CPU/wall) | records per CPU-s | peak RSS MiB | start->init ms | runs (failed) |")
md.append("|---|---|---|---|---|---|---|---|---|---|")
for key, t in table.items():
    md.append(f"| {key} | {fmt(t['records_per_s'])} | {fmt(t['payload_mb_s'])} | "
              f"{num(t['wall_s'], 3)} | {num(t['cpu_s'], 3)} | {num(t['cores_used'], 2)} | {fmt(t['records_per_cpu_s'])} | "
              f"{num(t['peak_rss_mib'], 1)} | {num(t['start_to_init_status_ms'], 2)} | "
              f"{t['runs']} ({t['failed']}) |")
md.append("")
md.append("Scenarios (mld_sim flags): " + "; ".join(f"`{k}`: `{v}`" for k, v in meta["scenarios"].items())
          + f". cpu_processor: RSMLD_CPU_ROUNDS={meta['cpu_rounds']}.")
with open(env["BENCH_MD"], "w") as f:
    f.write("\n".join(md) + "\n")
print("\n".join(md))
PY
rm -f "$RAW"
log "wrote $JSON_OUT and $MD_OUT"

if [ "$CHART" = 1 ]; then
    "$BENCH_PY" "$RSMLD_REPO/scripts/bench_chart.py" "$JSON_OUT" "$CHART_OUT"
    log "wrote $CHART_OUT"
fi
if [ "$FAILED" -gt 0 ]; then
    die "$FAILED run(s) failed the simulator's protocol checks (recorded as failed in $JSON_OUT)"
fi
