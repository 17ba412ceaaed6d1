#!/usr/bin/env bash
# The one test command: everything CI runs, from a fresh clone.
#   fmt, clippy (all features, -D warnings), rustdoc (-D warnings),
#   the tests on SQLite and on Postgres (CRM_TEST_PG_URL, or a throwaway cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

if [ -z "${CRM_TEST_PG_URL:-}" ]; then
    step "throwaway Postgres"
    # shellcheck source=scripts/pg-throwaway.sh
    source scripts/pg-throwaway.sh
fi

step "tests (SQLite and Postgres)"
cargo test --workspace --all-features --locked

echo
echo "all checks passed"
