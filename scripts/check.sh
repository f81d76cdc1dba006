#!/usr/bin/env bash
# The project's checks, as CI runs them: formatting, lints, docs, every test.
# Usage: scripts/check.sh            (unit, property, transcript, binary tests)
#        RSMLD_E2E=1 scripts/check.sh (also the end-to-end tests under the real daemon)
# Besides cargo it needs ruff and shellcheck at the versions in scripts/requirements-lint.txt:
# scripts/install-lint.sh puts them in .state/lint-venv (CI runs it; about 5 s), which is
# looked in first, then PATH.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RSMLD_REPO"

# lint_tool NAME: the path of NAME (lint venv first, then PATH), or fail saying how to get it.
lint_tool() {
    local name="$1" path want have
    path="$RSMLD_STATE/lint-venv/bin/$name"
    [ -x "$path" ] || path="$(command -v "$name" 2>/dev/null)" || {
        echo "error: $name not found (neither in $RSMLD_STATE/lint-venv/bin nor on PATH):" \
            "run scripts/install-lint.sh, which installs the pinned ruff and shellcheck" >&2
        return 1
    }
    want="$(sed -n "s/^${name}\(-py\)\{0,1\}==\([0-9.]*\)$/\2/p" scripts/requirements-lint.txt)"
    have="$("$path" --version | grep -oE '[0-9]+(\.[0-9]+)+' | head -n1)"
    case "$want" in
        "$have" | "$have".*) ;;
        *) echo "warning: $path is $name $have, scripts/requirements-lint.txt pins $want:" \
            "its findings may differ from CI's (scripts/install-lint.sh)" >&2 ;;
    esac
    printf '%s\n' "$path"
}
RUFF="$(lint_tool ruff)"
SHELLCHECK="$(lint_tool shellcheck)"

# Every shell script of the repository: *.sh and the CI entry point.
mapfile -t shell_scripts < <(
    find . \( -path ./.git -o -path ./.state -o -path './target*' -o -path ./fuzz/target \) -prune \
        -o -type f \( -name '*.sh' -o -path ./.ci/run \) -print | sort
)

echo "== cargo fmt --check (and fuzz/)"
cargo fmt --all -- --check
cargo fmt --all --manifest-path fuzz/Cargo.toml -- --check
echo "== shellcheck (${#shell_scripts[@]} scripts)"
"$SHELLCHECK" "${shell_scripts[@]}"
echo "== ruff check (every Python file, .ruff.toml)"
"$RUFF" check --no-cache --quiet .
echo "== python unit tests (tests/bench: the benchmark scripts' pure parts)"
python3 -m unittest discover -s tests/bench -q
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --locked -- -D warnings
# fuzz/ is a Cargo workspace of its own (cargo-fuzz targets); checking them needs neither
# nightly nor cargo-fuzz, only libFuzzer's C++ build, which stable can do. Its lock file holds
# the main one's versions, so in the main target directory it reuses the dependencies built
# above (a handful of crates, seconds). After a dependency change in Cargo.toml, reseed it:
# `cp Cargo.lock fuzz/Cargo.lock && cargo check --manifest-path fuzz/Cargo.toml`.
echo "== cargo clippy fuzz/ --all-targets -D warnings"
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked \
    --target-dir "${CARGO_TARGET_DIR:-$RSMLD_REPO/target}" -- -D warnings
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
