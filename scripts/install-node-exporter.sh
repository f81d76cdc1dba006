#!/usr/bin/env bash
# Unpack node_exporter (Debian's prometheus-node-exporter) into $RSMLD_STATE/node-exporter
# (default <repo>/.state/node-exporter), for the test that has its textfile collector read
# the files rsmld's metrics-dir writer writes (src/metrics/dir.rs). The package is only
# unpacked, not installed: no service is set up or started. Idempotent: a second run only
# checks. A few seconds (one 4 MB package).
#
#   scripts/install-node-exporter.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEST="$RSMLD_STATE/node-exporter"
BIN="$DEST/prometheus-node-exporter"

if [ ! -x "$BIN" ]; then
    t0=$(date +%s)
    work="$(mktemp -d)"
    trap 'rm -rf -- "$work"' EXIT
    # apt-get download runs as the _apt user where it can; a world-writable directory lets it.
    chmod 777 "$work"
    (cd "$work" && apt-get download -q prometheus-node-exporter) ||
        { apt-get update -q && (cd "$work" && apt-get download -q prometheus-node-exporter); } ||
        die "could not download the prometheus-node-exporter package"
    dpkg-deb -x "$work"/prometheus-node-exporter_*.deb "$work/root"
    mkdir -p "$DEST"
    cp "$work/root/usr/bin/prometheus-node-exporter" "$BIN"
    log "unpacked node_exporter into $DEST in $(($(date +%s) - t0))s"
fi
"$BIN" --version 2>&1 | head -n1 | grep -q node_exporter || die "$BIN does not run; delete $DEST and rerun"
log "$("$BIN" --version 2>&1 | head -n1) in $DEST"
