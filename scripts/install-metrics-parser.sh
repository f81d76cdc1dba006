#!/usr/bin/env bash
# Install the Prometheus Python client (its text-format parser is the independent check of
# rsmld's metrics exposition in src/metrics) at the version pinned in
# scripts/requirements-metrics.txt, into a venv of its own at $RSMLD_STATE/metrics-venv
# (default <repo>/.state/metrics-venv). Idempotent: a second run only checks. A few seconds on
# a fresh machine (one wheel, no build).
#
#   scripts/install-metrics-parser.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQS="$RSMLD_REPO/scripts/requirements-metrics.txt"
VENV="$RSMLD_STATE/metrics-venv"

ensure_venv "$VENV" "$REQS"
"$VENV/bin/python" -c 'import prometheus_client.parser' ||
    die "prometheus_client does not import; delete $VENV and rerun"
log "prometheus_client $("$VENV/bin/python" -c 'import prometheus_client, importlib.metadata as m; print(m.version("prometheus-client"))') in $VENV"
