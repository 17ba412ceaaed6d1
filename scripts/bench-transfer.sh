#!/usr/bin/env bash
# CSV import and export of leads at several sizes, each size in a process of its
# own so that its peak memory is its own (benches/transfer.rs). Postgres too when
# CRM_TEST_PG_URL is set.
#   scripts/bench-transfer.sh [SIZES]     (default: 10000 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-10000 100000 1000000}")
features=""
backends="sqlite"
if [ -n "${CRM_TEST_PG_URL:-}" ]; then
  features="--features postgres"
  backends="sqlite postgres"
fi
# shellcheck disable=SC2086
cargo bench $features --bench transfer --no-run
for backend in $backends; do
  for n in ${sizes[@]}; do
    # shellcheck disable=SC2086
    CRM_BENCH_BACKEND=$backend CRM_BENCH_ROWS=$n cargo bench -q $features --bench transfer 2>/dev/null
  done
done
