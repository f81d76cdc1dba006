#!/usr/bin/env bash
# Install the linters scripts/check.sh runs besides cargo's -- ruff (Python) and shellcheck
# (shell) -- at the versions pinned in scripts/requirements-lint.txt, into a venv of their own
# at $RSMLD_STATE/lint-venv (default <repo>/.state/lint-venv). Idempotent: a second run only
# checks. About 5 s on a fresh machine (two wheels, no build).
#
#   scripts/install-lint.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQS="$RSMLD_REPO/scripts/requirements-lint.txt"
VENV="$RSMLD_STATE/lint-venv"

ensure_venv "$VENV" "$REQS"
"$VENV/bin/ruff" --version >/dev/null || die "ruff does not run; delete $VENV and rerun"
"$VENV/bin/shellcheck" --version >/dev/null || die "shellcheck does not run; delete $VENV and rerun"
log "$("$VENV/bin/ruff" --version), shellcheck $("$VENV/bin/shellcheck" --version | sed -n 's/^version: //p') in $VENV"
