#!/usr/bin/env bash
# End-to-end tests: rsmld (file handler) under the real KCL 2.5.8 MultiLangDaemon, against local
# Kinesis and DynamoDB emulators on 127.0.0.1. Cases (tests/e2e/cases.py):
#   records   plain and KPL-aggregated records over 2 shards, all in the output, exact ESNs
#   split     a shard split mid-run: parent lease SHARD_END, children's records processed
#   sigterm   SIGTERM with shutdownGraceMillis: shutdownRequested checkpoint = last record
#   kill      rsmld SIGKILLed mid-stream: daemon exits non-zero, restart resumes, nothing lost
#   steal     a second worker steals a lease: leaseLost, no checkpoint after it, records move
#   bulk      a 1 MB line from the real daemon, acknowledged before it is decoded; all records once
#
#   scripts/e2e.sh                 # build rsmld (release), install, run every case
#   scripts/e2e.sh split kill      # only these cases
#   scripts/e2e.sh --list
#
# Environment: RSMLD_BIN=/abs/rsmld skips the build and tests that binary; RSMLD_STATE (default
# <repo>/.state) holds the installed daemon and emulators and each run's work dir
# ($RSMLD_STATE/e2e/<run id>: outputs, recorded transcripts, daemon logs);
# RSMLD_E2E_SAVE_RECORDINGS=DIR writes each case's transcript to DIR/<case>.jsonl.
# The last line is "N passed, M failed" (cases); the exit code is non-zero if any case failed.
# Nothing is left running when it ends, also on Ctrl-C or SIGTERM.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

runner_pid=""
result_file="$(mktemp)"
cleanup() {
    local rc=$?
    if [ -n "$runner_pid" ] && pid_alive "$runner_pid"; then
        kill -TERM "$runner_pid" 2>/dev/null || true   # the runner stops its daemons and emulators
        for _ in $(seq 1 600); do pid_alive "$runner_pid" || break; sleep 0.1; done
        pid_alive "$runner_pid" && kill -KILL "$runner_pid" 2>/dev/null
    fi
    # The runner writes its "N passed, M failed" line to $result_file too; without it, it never
    # got to its summary (install, build or start-up failure).
    if ! grep -Eq '^[0-9]+ passed, [0-9]+ failed$' "$result_file" 2>/dev/null; then
        echo "0 passed, 1 failed"   # the suite did not get to its summary
        [ "$rc" = 0 ] && rc=1
    fi
    rm -f "$result_file"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$(date +%s)
if [ "${1:-}" != --list ]; then
    "$RSMLD_REPO/scripts/install-daemon.sh" >&2
    if [ -z "${RSMLD_BIN:-}" ]; then
        log "building rsmld (cargo build --release)"
        (cd "$RSMLD_REPO" && cargo build --release --quiet --bin rsmld)
        RSMLD_BIN="${CARGO_TARGET_DIR:-$RSMLD_REPO/target}/release/rsmld"
        case "$RSMLD_BIN" in /*) ;; *) RSMLD_BIN="$RSMLD_REPO/$RSMLD_BIN" ;; esac
    fi
    [ -x "$RSMLD_BIN" ] || die "no rsmld binary at $RSMLD_BIN"
    export RSMLD_BIN
    log "setup (install + build) took $(($(date +%s) - t0))s"
fi

prune_runs "$RSMLD_STATE/e2e" 10   # keep the work dirs of the last runs only
args=("$@")
[ -n "${RSMLD_E2E_SAVE_RECORDINGS:-}" ] && args=(--save-recordings "$RSMLD_E2E_SAVE_RECORDINGS" "${args[@]+"${args[@]}"}")
export RSMLD_STATE RSMLD_E2E_RESULT_FILE="$result_file"
# In the background so that a SIGTERM to this script is handled at once (cleanup stops the runner,
# which stops its daemons and the emulators).
"$RSMLD_PY" -u "$RSMLD_REPO/tests/e2e/cases.py" "${args[@]+"${args[@]}"}" &
runner_pid=$!
set +e
wait "$runner_pid"
rc=$?
set -e
runner_pid=""
[ "${1:-}" = --list ] && { echo "0 passed, 0 failed" >"$result_file"; exit 0; }
log "e2e.sh took $(($(date +%s) - t0))s in total"
exit "$rc"
