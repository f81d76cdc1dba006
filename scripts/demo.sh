#!/usr/bin/env bash
# rsmld demo: the real Amazon KCL MultiLangDaemon (3.1.3; or 2.5.8) runs rsmld on a local Kinesis stream.
#
#   scripts/demo.sh             # KCL 3.1.3
#   scripts/demo.sh --kcl 2     # KCL 2.5.8 (or RSMLD_KCL=2)
#   scripts/demo.sh --serve     # serve mode: two streams, two daemons, one `rsmld serve` (below)
#
# On a machine with Rust, Java 17, Python 3 and Node.js, everything on 127.0.0.1:
#   1. builds rsmld (cargo build --release) and installs the daemons, the emulators and the
#      Python clients from the package registries (scripts/install-daemon.sh; once)
#   2. starts local Kinesis and DynamoDB emulators, creates a 2-shard stream and its lease table
#   3. puts plain records and KPL-aggregated records (made by aws-kinesis-agg)
#   4. runs the daemon with rsmld (file handler: one JSON line per record) as its processor
#   5. splits a shard while it runs and puts more records, which go to the new child shards
#   6. waits until every record is in rsmld's output and checkpointed, then prints a summary:
#      the daemon version, records put, items processed, the lease table (checkpoints, SHARD_END),
#      where the output is
# It stops everything it started when it ends (also on Ctrl-C) and exits non-zero if a record is
# missing, the parent shard did not reach SHARD_END or a checkpoint did not catch up.
#
# --serve: one `rsmld serve --socket S --handler file --output DIR` holds every lease of two
# streams (two 2-shard streams, two applications, two daemons); each daemon's executableName is
# `rsmld attach --socket S --properties <its properties file>`. It puts records into both,
# waits until each application's records are processed and checkpointed, scrapes /metrics
# (when this rsmld serve takes --metrics-listen), stops the daemons and then the server
# (SIGTERM), and prints per application what was processed and checkpointed, and a /metrics
# excerpt.
#
# Environment: RSMLD_KCL=3|2 (the daemon; default 3, --kcl wins), RSMLD_STATE (default
# <repo>/.state; the run's files go to $RSMLD_STATE/demo/<id>), RSMLD_BIN=/abs/rsmld to skip the
# build, DEMO_PLAIN / DEMO_AGGREGATES / DEMO_PER_AGGREGATE for the number of records put before
# the split (the same again after it).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVE=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --serve) SERVE=1; shift ;;
        --kcl) RSMLD_KCL="$2"; shift 2 ;;
        --kcl=*) RSMLD_KCL="${1#--kcl=}"; shift ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
KCL_VERSION="$(kcl_version "$RSMLD_KCL")" || die "--kcl must be 3 or 2"
export RSMLD_KCL="${KCL_VERSION%%.*}"

PLAIN="${DEMO_PLAIN:-200}" AGGREGATES="${DEMO_AGGREGATES:-20}" PER_AGGREGATE="${DEMO_PER_AGGREGATE:-10}"
RUN_ID="$(date +%Y%m%d-%H%M%S)-$$"
WORK="$RSMLD_STATE/demo/$RUN_ID"
OUT="$WORK/out" MANIFEST="$WORK/manifest.jsonl" RUN_DIR="$WORK/run"
STREAM="rsmld-demo-$RUN_ID" APP="rsmld-demo-app-$RUN_ID" PARENT=shardId-000000000000
export RSMLD_STATE RSMLD_EMU_STATE="$WORK/emulators.env"

T0=$(date +%s)
step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
elapsed() { echo "$(($(date +%s) - T0))s"; }

daemon_started=0 emulators_started=0 server_pid="" serve_run_dirs=()
cleanup() {
    local rc=$? d
    trap - EXIT INT TERM
    if [ "$daemon_started" = 1 ]; then
        "$RSMLD_REPO/scripts/run-daemon.sh" stop --run-dir "$RUN_DIR" --timeout 20 || true
    fi
    for d in "${serve_run_dirs[@]+"${serve_run_dirs[@]}"}"; do
        "$RSMLD_REPO/scripts/run-daemon.sh" stop --run-dir "$d" --timeout 20 || true
    done
    if [ -n "$server_pid" ]; then stop_pid "$server_pid" 40 || true; fi
    if [ "$emulators_started" = 1 ]; then
        "$RSMLD_REPO/scripts/emulators.sh" stop || true
    fi
    if [ "$rc" != 0 ]; then
        log "FAILED (exit $rc) after $(elapsed); the run's files: $WORK"
        if [ -f "$WORK/server.log" ]; then
            log "server log: $WORK/server.log; its last lines:"
            tail -n 5 "$WORK/server.log" | cut -c1-240 >&2 || true
        fi
        if [ -f "$RUN_DIR/daemon.log" ]; then
            log "daemon log: $RUN_DIR/daemon.log; its last errors:"
            grep -E ' ERROR | WARN |Exception' "$RUN_DIR/daemon.log" | grep -v 'Received error line' |
                cut -c1-240 | tail -n 8 >&2 || true
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tool() { "$RSMLD_PY" "$RSMLD_REPO/scripts/kinesis_tool.py" "$@"; }

# --- 1. build and install -----------------------------------------------------------------
step "1/6 build rsmld (release) and install the KCL daemons, emulators and clients"
if [ -z "${RSMLD_BIN:-}" ]; then
    (cd "$RSMLD_REPO" && cargo build --release --bin rsmld)
    RSMLD_BIN="${CARGO_TARGET_DIR:-$RSMLD_REPO/target}/release/rsmld"
    case "$RSMLD_BIN" in /*) ;; *) RSMLD_BIN="$RSMLD_REPO/$RSMLD_BIN" ;; esac
fi
[ -x "$RSMLD_BIN" ] || die "no rsmld binary at $RSMLD_BIN"
export RSMLD_BIN   # run-daemon.sh checks the properties file with it
"$RSMLD_REPO/scripts/install-daemon.sh"
case "$RSMLD_BIN$WORK" in *" "*) die "the daemon cannot run a path with a space: $RSMLD_BIN / $WORK" ;; esac
T_SETUP=$(date +%s)

if [ "$SERVE" = 1 ]; then
    # shellcheck source=demo-serve.sh
    . "$RSMLD_REPO/scripts/demo-serve.sh"
    exit 0
fi

# --- 2. emulators, stream, leases -----------------------------------------------------------
step "2/6 start the emulators; create a 2-shard stream and its lease table"
prune_runs "$RSMLD_STATE/demo" 5   # keep the last runs' files only
mkdir -p "$WORK"
emulators_started=1
"$RSMLD_REPO/scripts/emulators.sh" start
eval "$("$RSMLD_REPO/scripts/emulators.sh" env)"
tool create-stream "$STREAM" --shards 2
# One lease per shard up front: the daemon then skips its random 5-30 s wait for an empty table.
tool leases create --app "$APP" --stream "$STREAM"

# --- 3. records -------------------------------------------------------------------------------
step "3/6 put $PLAIN plain records and $AGGREGATES KPL aggregates of $PER_AGGREGATE user records"
tool put "$STREAM" --plain "$PLAIN" --spread --aggregated "$AGGREGATES" --per-aggregate "$PER_AGGREGATE" \
    --tag before-split --manifest "$MANIFEST"

# --- 4. the daemon ----------------------------------------------------------------------------
step "4/6 run the KCL $KCL_VERSION MultiLangDaemon with rsmld as its processor"
EXECUTABLE="$RSMLD_BIN --workers 2 --checkpoint-interval 1 --handler file --output $OUT"
# Short lease, shard-sync and poll intervals so that the split shows within seconds.
# run-daemon.sh writes the daemon's properties file (its write_properties) and starts the daemon.
daemon_pid="$("$RSMLD_REPO/scripts/run-daemon.sh" --background --kcl "$RSMLD_KCL" --stream "$STREAM" --app "$APP" \
    --worker-id demo-worker --run-dir "$RUN_DIR" --executable "$EXECUTABLE" \
    --set failoverTimeMillis=3000 --set shardSyncIntervalMillis=1000 \
    --set parentShardPollIntervalMillis=500 --set shutdownGraceMillis=5000 --set timeoutInSeconds=60 |
    tail -n1)"
daemon_started=1
log "executableName = $EXECUTABLE"
T_DAEMON=$(date +%s)
tool wait-records --manifest "$MANIFEST" --output "$OUT" --timeout 120 --watch-pid "$daemon_pid"
FIRST_BATCH_S=$(($(date +%s) - T_DAEMON))

# --- 5. split mid-run -------------------------------------------------------------------------
step "5/6 split $PARENT while the daemon runs; put as many records again"
tool split-shard "$STREAM" --shard "$PARENT" >/dev/null
tool put "$STREAM" --plain "$PLAIN" --spread --aggregated "$AGGREGATES" --per-aggregate "$PER_AGGREGATE" \
    --tag after-split --manifest "$MANIFEST"
tool wait-lease --app "$APP" --shard "$PARENT" --checkpoint SHARD_END --timeout 90 --watch-pid "$daemon_pid"

# --- 6. wait, check, summarize ------------------------------------------------------------------
step "6/6 wait until every record is processed and checkpointed"
tool wait-records --manifest "$MANIFEST" --output "$OUT" --timeout 120 --watch-pid "$daemon_pid"
tool wait-checkpoints --app "$APP" --manifest "$MANIFEST" --timeout 60 --watch-pid "$daemon_pid"
T_DONE=$(date +%s)
report="$(tool check-records --manifest "$MANIFEST" --output "$OUT" --allow-duplicates)"
leases="$(tool leases dump --app "$APP")"
shards="$(tool shards "$STREAM")"

put_total=$(grep -c . "$MANIFEST")
put_plain=$(grep -c '"kind": "plain"' "$MANIFEST" || true)
items=$(cat "$OUT"/*.jsonl | grep -c . || true)
files=$(find "$OUT" -maxdepth 1 -name '*.jsonl' | wc -l)
dups=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["duplicated"])' "$report")
open_shards=$(grep -c '"open": true' <<<"$shards" || true)

T_STOP=$(date +%s)
"$RSMLD_REPO/scripts/run-daemon.sh" stop --run-dir "$RUN_DIR" --timeout 20
daemon_started=0
STOP_S=$(($(date +%s) - T_STOP))

# shellcheck disable=SC2001  # sed indents every line of $leases, which ${var//} cannot anchor
cat <<SUMMARY

========================================================================================
rsmld demo: OK   (KCL $KCL_VERSION MultiLangDaemon -> rsmld, local emulators on 127.0.0.1)
----------------------------------------------------------------------------------------
records put       $put_total user records into $STREAM:
                  $put_plain plain + $((put_total - put_plain)) in $((2 * AGGREGATES)) KPL aggregates of $PER_AGGREGATE;
                  half before and half after splitting $PARENT (2 shards -> $open_shards open)
items processed   $items lines written by rsmld ($dups records delivered twice), every record put is there
output            $OUT/  ($files files: <shardId>.worker-<k>.jsonl)
lease table       $APP  (checkpoint = last record of each shard; the parent: SHARD_END)
$(sed 's/^/  /' <<<"$leases")
daemon            KCL $KCL_VERSION ($(cd "$(kcl_jars_dir "$RSMLD_KCL")" && ls amazon-kinesis-client-multilang-*.jar))
                  log $RUN_DIR/daemon.log, properties $RUN_DIR/$APP.properties
time              $(elapsed) in total; build + install $((T_SETUP - T0))s; from the daemon's start:
                  first $((PLAIN + AGGREGATES * PER_AGGREGATE)) records processed in ${FIRST_BATCH_S}s, all $put_total processed and
                  checkpointed in $((T_DONE - T_DAEMON))s; graceful stop (SIGTERM) ${STOP_S}s
========================================================================================
SUMMARY
