#!/usr/bin/env bash
# End-to-end tests: rsmld (file handler) under the real KCL MultiLangDaemon -- KCL 3.1.3 and
# KCL 2.5.8 -- against local Kinesis and DynamoDB emulators on 127.0.0.1. Cases (tests/e2e/cases.py):
#   records   plain and KPL-aggregated records over 2 shards, all in the output, exact ESNs;
#             each lease's metrics file (--metrics-dir) counts them, and is removed at the end
#   split     a shard split mid-run: parent lease SHARD_END, children's records processed
#   sigterm   SIGTERM with shutdownGraceMillis: shutdownRequested checkpoint = last record
#   kill      rsmld SIGKILLed mid-stream: daemon exits non-zero, restart resumes, nothing lost
#   steal     a second worker takes a lease: leaseLost, no checkpoint after it, records move
#   bulk      a 1 MB line from the real daemon, acknowledged before it is decoded; all records once
#   handoff   (KCL 3.x only) a second worker joins and the lease balancer hands it a lease:
#             shutdownRequested checkpoint, then leaseLost; the new owner starts exactly there
#   serve     one `rsmld serve`, two daemons (two streams, two applications) whose children are
#             `rsmld attach`: plain + KPL records, a split on one stream, graceful stop of the
#             daemons then SIGTERM to the server (exit 0); every record once under its application,
#             every lease at its last record / SHARD_END; /metrics scraped twice during the run
#             (--metrics-listen; skipped loudly if this rsmld serve has no such flag)
#   serve-kill  the server SIGKILLed mid-stream: every attach exits non-zero at once, the daemons
#             exit; server (stale socket) and daemons restarted: nothing lost, checkpoints at the end
#
#   scripts/e2e.sh                 # build rsmld (release), install, run every case under both versions
#   scripts/e2e.sh --kcl 3         # only under KCL 3.1.3 (--kcl 2: only KCL 2.5.8; --kcl both)
#   scripts/e2e.sh split kill      # only these cases
#   scripts/e2e.sh --list
#
# The two versions run at the same time, each with its own emulators, and the slower KCL 3.1.3
# suite in RSMLD_E2E_KCL3_PARTS (default 2) runners that take every other case; each runner's
# lines are prefixed with [kcl3.1] / [kcl3.2] / [kcl2.1]. RSMLD_E2E_PARALLEL=0 runs one runner per
# version, one after the other.
# Environment: RSMLD_E2E_KCL=3|2|both (default both; --kcl wins); RSMLD_BIN=/abs/rsmld skips the
# build and tests that binary; RSMLD_STATE (default <repo>/.state) holds the installed daemons and
# emulators and each run's work dir ($RSMLD_STATE/e2e/<run id>: outputs, recorded transcripts,
# daemon logs); RSMLD_E2E_SAVE_RECORDINGS=DIR writes each case's transcript to DIR/<case>.jsonl
# (DIR/kcl313/ and DIR/kcl258/ when both versions run).
# The last line is "N passed, M failed" (cases x versions); the exit code is non-zero if any case
# failed. Nothing is left running when it ends, also on Ctrl-C or SIGTERM.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

KCLS="${RSMLD_E2E_KCL:-both}"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --kcl) KCLS="$2"; shift 2 ;;
        --kcl=*) KCLS="${1#--kcl=}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
case "$KCLS" in
    both | all) versions=(3 2) ;;
    3 | 2) versions=("$KCLS") ;;
    *) die "--kcl must be 3, 2 or both (got $KCLS)" ;;
esac

if [ "${args[0]:-}" = --list ]; then
    exec "$RSMLD_PY" "$RSMLD_REPO/tests/e2e/cases.py" --list
fi

# Runners are named V.K: part K of the cases under KCL V.
runners=()
if [ "${RSMLD_E2E_PARALLEL:-1}" = 1 ]; then
    for v in "${versions[@]}"; do
        n=1; [ "$v" = 3 ] && n="${RSMLD_E2E_KCL3_PARTS:-2}"
        for ((k = 1; k <= n; k++)); do runners+=("$v.$k/$n"); done
    done
else
    for v in "${versions[@]}"; do runners+=("$v.1/1"); done
fi

declare -A runner_pid=() result_file=() started=()
# shellcheck disable=SC2329  # invoked by the EXIT trap below
cleanup() {
    local rc=$? v
    for v in "${!runner_pid[@]}"; do
        pid_alive "${runner_pid[$v]}" && kill -TERM "${runner_pid[$v]}" 2>/dev/null   # it stops its daemons and emulators
    done
    for v in "${!runner_pid[@]}"; do
        for _ in $(seq 1 600); do pid_alive "${runner_pid[$v]}" || break; sleep 0.1; done
        pid_alive "${runner_pid[$v]}" && kill -KILL "${runner_pid[$v]}" 2>/dev/null
    done
    # Each runner writes its "N passed, M failed" line to its result file; without one, it never
    # got to its summary (install, build or start-up failure) and counts as one failure.
    local passed=0 failed=0 line
    for v in "${runners[@]}"; do
        line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "${result_file[$v]:-/nonexistent}" 2>/dev/null || true)"
        if [ -n "$line" ]; then
            passed=$((passed + ${line%% *})); line="${line#*, }"; failed=$((failed + ${line%% *}))
        else
            failed=$((failed + 1))
        fi
        rm -f "${result_file[$v]:-}"
    done
    [ "$passed" = 0 ] && [ "$failed" = 0 ] && failed=1   # no case ran at all
    [ "$failed" != 0 ] && [ "$rc" = 0 ] && rc=1
    echo "$passed passed, $failed failed"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$(date +%s)
"$RSMLD_REPO/scripts/install-daemon.sh" >&2
# The records case reads rsmld's metrics files with the Prometheus Python client's parser.
"$RSMLD_REPO/scripts/install-metrics-parser.sh" >&2
if [ -z "${RSMLD_BIN:-}" ]; then
    log "building rsmld (cargo build --release)"
    (cd "$RSMLD_REPO" && cargo build --release --quiet --bin rsmld)
    RSMLD_BIN="${CARGO_TARGET_DIR:-$RSMLD_REPO/target}/release/rsmld"
    case "$RSMLD_BIN" in /*) ;; *) RSMLD_BIN="$RSMLD_REPO/$RSMLD_BIN" ;; esac
fi
[ -x "$RSMLD_BIN" ] || die "no rsmld binary at $RSMLD_BIN"
export RSMLD_BIN RSMLD_STATE
log "setup (install + build) took $(($(date +%s) - t0))s"
prune_runs "$RSMLD_STATE/e2e" 10   # keep the work dirs of the last runs only

# start_runner V.K/N: run part K of N of the cases under KCL V in the background (so that a
# SIGTERM to this script is handled at once: cleanup stops the runners, which stop their daemons
# and emulators).
start_runner() {
    local id="$1" v="${1%%.*}" part="${1#*.}" full extra=()
    full="$(kcl_version "$v")"
    result_file[$id]="$(mktemp)"
    if [ -n "${RSMLD_E2E_SAVE_RECORDINGS:-}" ]; then
        if [ "${#versions[@]}" = 1 ]; then extra=(--save-recordings "$RSMLD_E2E_SAVE_RECORDINGS")
        else extra=(--save-recordings "$RSMLD_E2E_SAVE_RECORDINGS/kcl${full//./}"); fi
    fi
    started[$id]=$(date +%s)
    RSMLD_E2E_RESULT_FILE="${result_file[$id]}" \
        "$RSMLD_PY" -u "$RSMLD_REPO/tests/e2e/cases.py" --kcl "$v" --part "$part" "${extra[@]+"${extra[@]}"}" \
        "${args[@]+"${args[@]}"}" > >(sed -u "s|^|[kcl${id%/*}] |") 2>&1 &
    runner_pid[$id]=$!
    log "KCL $full cases, part $part, started (runner pid ${runner_pid[$id]})"
}

# wait_runner V: wait for it and say how long it took (the runner writes its summary and its own
# time to its result file); its exit code is the return value.
wait_runner() {
    local id="$1" rc=0 summary
    wait "${runner_pid[$id]}" || rc=$?
    unset 'runner_pid[$id]'
    summary="$(tr '\n' ' ' <"${result_file[$id]}" 2>/dev/null)"
    log "KCL $(kcl_version "${id%%.*}") cases, part ${id#*.}: ${summary:-no summary (after $(($(date +%s) - ${started[$id]}))s)}"
    return "$rc"
}

rc=0
if [ "${RSMLD_E2E_PARALLEL:-1}" = 1 ]; then
    for id in "${runners[@]}"; do start_runner "$id"; done
    for id in "${runners[@]}"; do wait_runner "$id" || rc=1; done
else
    for id in "${runners[@]}"; do start_runner "$id"; wait_runner "$id" || rc=1; done
fi
sleep 0.2   # let the prefixing sed flush the runners' last lines
log "e2e.sh took $(($(date +%s) - t0))s in total"
exit "$rc"
