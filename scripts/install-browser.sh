#!/usr/bin/env bash
# Install Chromium (Debian's `chromium` package) if it is missing, for the test that loads
# the status page of a running `rsmld serve --metrics-listen` in a headless browser and
# checks what its JavaScript rendered (tests/it/http.rs). Idempotent: a second run only
# checks. A minute or two on a fresh machine (the package and its libraries).
#
#   scripts/install-browser.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v chromium >/dev/null 2>&1; then
    t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; } ||
        die "could not install the chromium package"
    log "installed chromium in $(($(date +%s) - t0))s"
fi
version="$(chromium --version 2>/dev/null | head -n1)" || die "chromium does not run"
case "$version" in
    Chromium*) log "$version at $(command -v chromium)" ;;
    *) die "chromium --version says ${version:-nothing}; expected Chromium" ;;
esac
