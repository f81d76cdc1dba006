# shellcheck shell=bash
# scripts/demo.sh --serve: sourced by demo.sh after its step 1 (build, install), with its
# variables (RSMLD_BIN, WORK, RUN_ID, PLAIN, AGGREGATES, PER_AGGREGATE, KCL_VERSION) and its
# cleanup (which stops the daemons in serve_run_dirs and the server in server_pid).
#
# One `rsmld serve` holds every lease of two streams: two 2-shard streams, two applications,
# two daemons whose executableName is `rsmld attach --socket S --properties <its file>`.

SOCK="$WORK/rsmld.sock" SOUT="$WORK/out"
APPS=("rsmld-demo-orders-$RUN_ID" "rsmld-demo-clicks-$RUN_ID")
STREAMS=("rsmld-demo-orders-$RUN_ID" "rsmld-demo-clicks-$RUN_ID")

step "2/6 start the emulators; create two 2-shard streams and their lease tables"
prune_runs "$RSMLD_STATE/demo" 5
mkdir -p "$WORK"
# shellcheck disable=SC2034  # read by demo.sh's cleanup
emulators_started=1
"$RSMLD_REPO/scripts/emulators.sh" start
eval "$("$RSMLD_REPO/scripts/emulators.sh" env)"
for i in 0 1; do
    tool create-stream "${STREAMS[$i]}" --shards 2
    tool leases create --app "${APPS[$i]}" --stream "${STREAMS[$i]}"
done

step "3/6 put $PLAIN plain records and $AGGREGATES KPL aggregates of $PER_AGGREGATE user records into each stream"
for i in 0 1; do
    tool put "${STREAMS[$i]}" --plain "$PLAIN" --spread --aggregated "$AGGREGATES" --per-aggregate "$PER_AGGREGATE" \
        --tag "app$i" --manifest "$WORK/manifest-$i.jsonl"
done

step "4/6 start one rsmld serve and two KCL $KCL_VERSION daemons whose children attach to it"
METRICS_PORT=""
# --metrics-listen: when this rsmld serve takes it (serve splits its own flags off; child
# mode's parser rejects one it does not know, so a command line with it and --help says).
if "$RSMLD_BIN" serve --socket "$WORK/probe.sock" --metrics-listen 127.0.0.1:1 --help >/dev/null 2>&1; then
    METRICS_PORT="$(free_port)"
fi
SERVER=("$RSMLD_BIN" serve --socket "$SOCK" ${METRICS_PORT:+--metrics-listen "127.0.0.1:$METRICS_PORT"}
    --workers 2 --checkpoint-interval 1 --handler file --output "$SOUT")
RUST_LOG="${RUST_LOG:-info}" setsid "${SERVER[@]}" </dev/null >"$WORK/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    grep -q "serving leases on" "$WORK/server.log" 2>/dev/null && break
    pid_alive "$server_pid" || die "rsmld serve exited at start: $(tail -n 3 "$WORK/server.log")"
    sleep 0.1
done
grep -q "serving leases on" "$WORK/server.log" || die "rsmld serve did not start listening"
log "server: ${SERVER[*]}"
pids=()
for i in 0 1; do
    run_dir="$WORK/run-$i"
    serve_run_dirs+=("$run_dir")
    # attach reads applicationName from the daemon's own properties file (run-daemon.sh writes
    # it as <run dir>/<app>.properties).
    exe="$RSMLD_BIN attach --socket $SOCK --properties $run_dir/${APPS[$i]}.properties"
    pids+=("$("$RSMLD_REPO/scripts/run-daemon.sh" --background --kcl "$RSMLD_KCL" --stream "${STREAMS[$i]}" \
        --app "${APPS[$i]}" --worker-id "demo-worker-$i" --run-dir "$run_dir" --executable "$exe" \
        --set failoverTimeMillis=3000 --set shardSyncIntervalMillis=1000 \
        --set parentShardPollIntervalMillis=500 --set shutdownGraceMillis=5000 --set timeoutInSeconds=60 |
        tail -n1)")
    log "daemon $i: executableName = $exe"
done
T_DAEMON=$(date +%s)

step "5/6 wait until each application's records are processed and checkpointed"
for i in 0 1; do
    # The server's one output directory holds both applications' files; a missing record is
    # missing whatever else is there (check-records below compares each application alone).
    tool wait-records --manifest "$WORK/manifest-$i.jsonl" --output "$SOUT" --timeout 150 --watch-pid "${pids[$i]}"
    tool wait-checkpoints --app "${APPS[$i]}" --manifest "$WORK/manifest-$i.jsonl" --timeout 60 --watch-pid "${pids[$i]}"
done
T_DONE=$(date +%s)
scrape=""
if [ -n "$METRICS_PORT" ]; then
    if scrape="$(python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode())' \
        "$METRICS_PORT" 2>"$WORK/scrape.err")"; then
        printf '%s\n' "$scrape" >"$WORK/metrics.prom"
    else
        log "WARNING: GET http://127.0.0.1:$METRICS_PORT/metrics failed: $(tail -n 1 "$WORK/scrape.err")"
        scrape=""
    fi
fi

step "6/6 stop the daemons (SIGTERM, graceful), then the server (SIGTERM)"
T_STOP=$(date +%s)
for d in "${serve_run_dirs[@]}"; do "$RSMLD_REPO/scripts/run-daemon.sh" stop --run-dir "$d" --timeout 30; done
serve_run_dirs=()
kill -TERM "$server_pid"
server_rc=0
wait "$server_pid" || server_rc=$?
server_pid=""
[ "$server_rc" = 0 ] || die "rsmld serve exited $server_rc after SIGTERM (log $WORK/server.log)"
STOP_S=$(($(date +%s) - T_STOP))

# Per application: the records put, its lines in the output (its files are
# <application>.<shardId>....jsonl, each line starting {"application":...}), the comparison.
per_app="$(RSMLD_REPO="$RSMLD_REPO" "$RSMLD_PY" - "$SOUT" "$WORK" "${APPS[@]}" <<'PY'
import glob, json, os, sys
sys.path.insert(0, os.path.join(os.environ["RSMLD_REPO"], "scripts"))
import kinesis_tool as kt
out, work, apps = sys.argv[1], sys.argv[2], sys.argv[3:]
bad = 0
for i, app in enumerate(apps):
    manifest = kt.read_manifest(os.path.join(work, f"manifest-{i}.jsonl"))
    files = sorted(glob.glob(os.path.join(out, f"{app}.*.jsonl")))
    lines = [line for f in files for line in open(f, encoding="utf-8")]
    output = [json.loads(line) for line in lines]
    missing, dups, unexpected, wrong = kt.compare(manifest, output)
    named = sum(o.get("application") == app for o in output)
    ok = not missing and not unexpected and not wrong and named == len(output)
    bad += not ok
    print(f"{app}: {len(manifest)} records put, {len(output)} lines in {len(files)} files "
          f"({named} name the application), {len(missing)} missing, {len(dups)} twice: "
          f"{'OK' if ok else 'FAILED'}")
sys.exit(1 if bad else 0)
PY
)" || { printf '%s\n' "$per_app" >&2; die "an application's output does not match what was put"; }

# shellcheck disable=SC2001  # sed indents every line of $per_app, which ${var//} cannot anchor
cat <<SUMMARY

========================================================================================
rsmld demo (serve mode): OK   (two KCL $KCL_VERSION daemons -> rsmld attach -> one rsmld serve)
----------------------------------------------------------------------------------------
server            ${SERVER[*]}
                  log $WORK/server.log; exit code $server_rc after SIGTERM
per application   (${STREAMS[0]} and ${STREAMS[1]}: 2 shards each)
$(sed 's/^/  /' <<<"$per_app")
output            $SOUT/  (<application>.<shardId>.<time>.<nnnn>.w<k>.jsonl)
SUMMARY
for i in 0 1; do
    echo "lease table       ${APPS[$i]}  (checkpoint = last record of each shard)"
    tool leases dump --app "${APPS[$i]}" | sed 's/^/  /'
done
if [ -n "$scrape" ]; then
    echo "/metrics          GET http://127.0.0.1:$METRICS_PORT/metrics while the leases ran ($WORK/metrics.prom), excerpt:"
    grep -E '^rsmld_(records_total|items_total|checkpoints_total\{[^}]*outcome="stored"|millis_behind_latest)' <<<"$scrape" |
        sed 's/^/  /' | head -n 16
else
    echo "/metrics          (no scrape: this rsmld serve has no --metrics-listen, or GET /metrics failed)"
fi
cat <<SUMMARY
time              $(elapsed) in total; from the daemons' start: every record processed and checkpointed
                  in $((T_DONE - T_DAEMON))s; graceful stop (daemons, then server) ${STOP_S}s
========================================================================================
SUMMARY
