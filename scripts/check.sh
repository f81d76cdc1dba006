#!/usr/bin/env bash
# The project's checks, as CI runs them: formatting, lints, docs, every test.
# Usage: scripts/check.sh            (unit, property, transcript, binary tests)
#        RSMLD_E2E=1 scripts/check.sh (also the end-to-end tests under the real daemon)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
echo "== cargo test"
# The policy tests run the example processor as a real binary: build it as one
# (cargo test --all-targets builds examples only as test harnesses). The tools in src/bin
# (mld_sim, the baselines) are built by cargo test itself: the tests turn on `testkit`.
cargo build --locked --examples
cargo test --locked --all-targets
cargo test --locked --doc

if [ "${RSMLD_E2E:-0}" = 1 ]; then
    echo "== end-to-end tests under the real KCL 3.1.3 and 2.5.8 daemons (scripts/e2e.sh)"
    bash scripts/e2e.sh
fi
