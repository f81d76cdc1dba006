#!/usr/bin/env bash
# Run the real KCL MultiLangDaemon, 3.1.3 or 2.5.8 (installed by scripts/install-daemon.sh),
# against the local emulators (scripts/emulators.sh), with a given processor command.
#
#   scripts/run-daemon.sh [run] --stream S --app A --executable "CMD ARGS" [options]
#   scripts/run-daemon.sh stop  --app A | --pid-file F  [--timeout SECONDS]
#
# run options:
#   --stream NAME            Kinesis stream (required)
#   --app NAME               applicationName = lease table name (required, >= 3 characters)
#   --executable "CMD ARGS"  the processor command line; the daemon splits it on spaces with no
#                            shell and no quoting, so no path or argument may contain a space
#   --kcl 3|2                the daemon: 3 = KCL 3.1.3 (default, or $RSMLD_KCL), 2 = KCL 2.5.8; picks
#                            the jars and the template lines tagged [kcl3] / [kcl2]. For 3, the
#                            lease table is created first (with the index KCL 3.x needs) if missing
#   --worker-id ID           workerId (default: rsmld-local-worker)
#   --set KEY=VALUE          append a property (repeatable; overrides the template's value)
#   --template FILE          default: properties/local.properties.template
#   --run-dir DIR            default: $RSMLD_STATE/run/<app>; holds <app>.properties, daemon.log, daemon.pid
#   --log FILE               daemon stdout+stderr (default: <run-dir>/daemon.log; "-" = this terminal)
#   --background             start detached in its own process group, write the pid file, print the pid
#   --pid-file FILE          default: <run-dir>/daemon.pid
#   --kinesis-endpoint URL / --dynamodb-endpoint URL
#                            default: $KINESIS_ENDPOINT / $DYNAMODB_ENDPOINT, else `emulators.sh env`
#   --render-only            write the properties file, print its path, do not start the daemon
#
# stop: SIGTERM to the daemon (graceful: shutdownRequested with shutdownGraceMillis > 0), wait up
# to --timeout seconds (default 40), then SIGKILL the daemon's whole process group (its processors).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

mode=run
case "${1:-}" in run | stop) mode="$1"; shift ;; -h | --help) usage ;; esac

STREAM="" APP="" EXECUTABLE="" WORKER_ID="rsmld-local-worker" TEMPLATE="$RSMLD_REPO/properties/local.properties.template"
RUN_DIR="" LOG="" PID_FILE="" BACKGROUND=0 RENDER_ONLY=0 TIMEOUT=40
KEP="${KINESIS_ENDPOINT:-}" DEP="${DYNAMODB_ENDPOINT:-}"
SETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --stream) STREAM="$2"; shift 2 ;;
        --app) APP="$2"; shift 2 ;;
        --executable) EXECUTABLE="$2"; shift 2 ;;
        --worker-id) WORKER_ID="$2"; shift 2 ;;
        --kcl) RSMLD_KCL="$2"; shift 2 ;;
        --set) SETS+=("$2"); shift 2 ;;
        --template) TEMPLATE="$2"; shift 2 ;;
        --run-dir) RUN_DIR="$2"; shift 2 ;;
        --log) LOG="$2"; shift 2 ;;
        --pid-file) PID_FILE="$2"; shift 2 ;;
        --background) BACKGROUND=1; shift ;;
        --render-only) RENDER_ONLY=1; shift ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --kinesis-endpoint) KEP="$2"; shift 2 ;;
        --dynamodb-endpoint) DEP="$2"; shift 2 ;;
        -h | --help) usage ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

if [ -z "$RUN_DIR" ]; then
    [ -n "$APP" ] || { [ "$mode" = stop ] && [ -n "$PID_FILE" ]; } || die "--app is required"
    RUN_DIR="$RSMLD_STATE/run/${APP:-unknown}"
fi
PID_FILE="${PID_FILE:-$RUN_DIR/daemon.pid}"

if [ "$mode" = stop ]; then
    [ -f "$PID_FILE" ] || { log "no pid file $PID_FILE: not running"; exit 0; }
    pid="$(cat "$PID_FILE")"
    if pid_alive "$pid"; then
        log "SIGTERM to daemon pid $pid (graceful shutdown, up to ${TIMEOUT}s)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < TIMEOUT * 10; i++)); do pid_alive "$pid" || break; sleep 0.1; done
        if pid_alive "$pid"; then
            log "daemon pid $pid still running after ${TIMEOUT}s: SIGKILL to its process group"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # Processors left over in the daemon's process group (they should have exited on stdin EOF).
    left="$(ps -eo pid=,pgid=,stat= | awk -v g="$pid" '$2 == g && $3 !~ /^Z/ { printf "%s ", $1 }')"
    if [ -n "$left" ]; then
        log "leftover processes in group $pid: ${left}- killing them"
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    log "daemon stopped"
    exit 0
fi

[ -n "$STREAM" ] || die "--stream is required"
[ -n "$APP" ] || die "--app is required"
[ -n "$EXECUTABLE" ] || die "--executable is required"
if [ -z "$KEP" ] || [ -z "$DEP" ]; then
    eval "$("$RSMLD_REPO/scripts/emulators.sh" env)" || die "no endpoints: start scripts/emulators.sh or pass them"
    KEP="${KEP:-$KINESIS_ENDPOINT}" DEP="${DEP:-$DYNAMODB_ENDPOINT}"
fi
KCL_VERSION="$(kcl_version "$RSMLD_KCL")" || die "--kcl must be 2 or 3"
KCL_MAJOR="${KCL_VERSION%%.*}"
JARS="$(kcl_jars_dir "$KCL_MAJOR")" || die "venv missing: run scripts/install-daemon.sh"
[ -d "$JARS" ] || die "no KCL $KCL_VERSION jars at $JARS: run scripts/install-daemon.sh"

mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
PROPS="$RUN_DIR/$APP.properties"
LOG="${LOG:-$RUN_DIR/daemon.log}"

# write_properties: render the template into $PROPS. This is the one place where the demo's and
# the e2e suite's daemon properties files are written (both start the daemon through this script),
# so a check of the rendered file belongs right after it. Python: no escaping trouble with paths,
# '&' or '/'.
write_properties() {
    python3 - "$TEMPLATE" "$PROPS" "$KCL_MAJOR" "$EXECUTABLE" "$STREAM" "$APP" "$WORKER_ID" "$KEP" "$DEP" "${SETS[@]+"${SETS[@]}"}" <<'PY'
import re, sys
template, out, kcl, executable, stream, app, worker, kep, dep, *sets = sys.argv[1:]
if "\t" in executable or "  " in executable.strip():
    print("run-daemon.sh: warning: the daemon splits executableName on spaces; "
          "tabs or repeated spaces are suspicious", file=sys.stderr)
values = {"EXECUTABLE": executable.strip(), "STREAM": stream, "APP": app, "WORKER_ID": worker,
          "KINESIS_ENDPOINT": kep, "DYNAMODB_ENDPOINT": dep}
text = open(template, encoding="utf-8").read()
# Lines tagged "[kcl2] " / "[kcl3] ": keep those of this daemon version (without the tag).
text = re.sub(r"^\[kcl([0-9])\] ?(.*\n?)", lambda m: m.group(2) if m.group(1) == kcl else "", text, flags=re.M)
text = re.sub(r"@([A-Z_]+)@", lambda m: values.get(m.group(1), m.group(0)), text)
left = sorted(set(m for m in re.findall(r"@([A-Z_]+)@", text)))
if left:
    sys.exit(f"run-daemon.sh: unknown placeholders in {template}: {', '.join(left)}")
if sets:
    text += "\n# --set overrides from run-daemon.sh\n"
    for kv in sets:
        if "=" not in kv:
            sys.exit(f"run-daemon.sh: --set needs KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        text += f"{k.strip()} = {v.strip()}\n"
open(out, "w", encoding="utf-8").write(text)
PY
}
write_properties
# Every file the demo and the e2e suite hand to a daemon passes `rsmld check` first: an error
# stops here, warnings are shown. The checker is $RSMLD_BIN (the e2e suite's executable is the
# transcript recorder wrapped around rsmld), else the executable's first word.
"${RSMLD_BIN:-${EXECUTABLE%% *}}" check --properties "$PROPS" --kcl "$KCL_MAJOR" ||
    die "rsmld check rejected $PROPS (rendered from $TEMPLATE)"

if [ "$RENDER_ONLY" = 1 ]; then
    echo "$PROPS"
    exit 0
fi

if [ "$KCL_MAJOR" = 3 ]; then
    # KCL 3.x adds an index to the lease table with UpdateTable, which dynalite does not do.
    "$RSMLD_PY" "$RSMLD_REPO/scripts/kinesis_tool.py" --dynamodb-endpoint "$DEP" leases create-table --app "$APP" ||
        die "could not create the lease table $APP at $DEP"
fi

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-fakeAccessKeyId}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-fakeSecretAccessKey}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true
CMD=(java -Dfile.encoding=UTF-8 -cp "$JARS/*:$RUN_DIR"
    software.amazon.kinesis.multilang.MultiLangDaemon --properties-file "$PROPS")

if [ "$BACKGROUND" = 1 ]; then
    if [ -f "$PID_FILE" ] && pid_alive "$(cat "$PID_FILE")"; then
        die "a daemon is already running with pid $(cat "$PID_FILE") ($PID_FILE)"
    fi
    [ "$LOG" != - ] || die "--background needs a log file"
    # Own process group: `stop` can kill the daemon and every processor it started at once.
    setsid "${CMD[@]}" </dev/null >>"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "KCL $KCL_VERSION daemon pid $pid; properties $PROPS; log $LOG"
    echo "$pid"
else
    log "KCL $KCL_VERSION daemon; properties $PROPS; log ${LOG/#-/this terminal}"
    if [ "$LOG" = - ]; then exec "${CMD[@]}"; else exec "${CMD[@]}" >>"$LOG" 2>&1; fi
fi
