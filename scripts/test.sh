#!/usr/bin/env bash
# The one test command: everything CI runs, from a fresh clone.
#   fmt, clippy (all features, -D warnings), the storage layering (scripts/check-layers.py),
#   rustdoc (-D warnings),
#   every crate and feature alone on the minimum Rust version (scripts/check-features.sh,
#   in the background from the start until after cargo deny),
#   cargo deny (licenses, bans, sources; built from crates.io into cargo's bin
#   directory once, like any cargo tool),
#   the tests on SQLite and on Postgres (CRM_TEST_PG_URL, or a throwaway cluster),
#   the S3 storage against a local S3 server (CRM_TEST_S3_URL, or moto from PyPI),
#   and the admin web app in headless chromium (installed from Debian when missing;
#   screenshots in target/test-artifacts/browser),
#   then the Python module: its abi3 wheel built by `maturin build` (the dev profile:
#   about a minute where --release took over seven, with overflow checks on) and
#   installed into a fresh virtualenv (.venv), its pytest suite (both backends, the
#   FastAPI example) and mypy.stubtest; and the same wheel installed into a second
#   virtualenv with no Rust toolchain on PATH, where a smoke test runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step is announced with the minutes and seconds the run has taken so far, so
# a slow run shows which step grew.
step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "toolchain components"
for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

# The feature checks run in the background, beside clippy, the docs and cargo deny
# (their own toolchain and target directory): most of their time is one crate at a
# time on one core, which leaves the other to the foreground (on two cores they were
# about a third of the run when they ran in turn). Their output is printed, and
# their result taken, after cargo deny: before the throwaway servers (whose scripts
# set their own EXIT trap) and the tests, which then have the machine to themselves.
step "each crate and feature alone, on the minimum Rust version: started in the background"
mkdir -p target
features_log=target/check-features.log
setsid -w scripts/check-features.sh > "$features_log" 2>&1 &
features=$!
trap 'kill -- -"$features" 2>/dev/null || true' EXIT
echo "its output goes to $features_log"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "layers: storage imports models, never a service"
python3 scripts/check-layers.py > /dev/null

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

step "cargo deny check licenses bans sources"
# Advisories are left out: their database is fetched from GitHub, which CI cannot reach.
# Installed where `cargo install` puts tools, so that every clone on a machine shares
# one build of it (building it takes minutes on two cores).
deny_version=0.20.2
deny="${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deny"
if ! "$deny" --version 2>/dev/null | grep -q "$deny_version"; then
    # Built without its fat LTO: a tool we run once a test, not a binary we ship.
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install --quiet --locked cargo-deny --version "$deny_version"
fi
"$deny" check --hide-inclusion-graph licenses bans sources

step "each crate and feature alone, on the minimum Rust version (waiting for the background checks)"
features_status=0
wait "$features" || features_status=$?
trap - EXIT
cat "$features_log"
if [ "$features_status" != 0 ]; then
    echo "the feature checks failed (above)"
    exit 1
fi

if [ -z "${CRM_TEST_PG_URL:-}" ]; then
    step "throwaway Postgres"
    # shellcheck source=scripts/pg-throwaway.sh
    source scripts/pg-throwaway.sh
fi

if [ -z "${CRM_TEST_S3_URL:-}" ]; then
    step "local S3 (moto server, for the S3 storage tests)"
    # shellcheck source=scripts/s3-throwaway.sh
    source scripts/s3-throwaway.sh
fi

step "browser: Debian's chromium and chromedriver (tests/browser.rs drives them headless)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q chromium chromium-driver ||
        { $sudo apt-get update -q && $sudo apt-get install -y -q chromium chromium-driver; }
fi
artifacts="$(pwd)/target/test-artifacts/browser"
echo "screenshots of every admin page (and of a failed step): $artifacts"

step "tests (SQLite and Postgres)"
cargo test --workspace --all-features --locked
echo "browser screenshots: $artifacts"

step "Python: the abi3 wheel (maturin build, dev profile), installed into a fresh virtualenv"
rm -rf .venv target/wheels
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r crm-py/requirements-test.txt
.venv/bin/maturin build --locked -q -m crm-py/Cargo.toml -o target/wheels
wheel=$(ls target/wheels/crmkit-*-cp39-abi3-*.whl)
.venv/bin/python -m pip install -q "$wheel"

step "Python: the wheel installs and runs with no Rust toolchain on PATH"
rm -rf target/wheel-venv
python3 -m venv target/wheel-venv
env PATH=/usr/local/bin:/usr/bin:/bin target/wheel-venv/bin/python -m pip install -q --no-index "$wheel"
env PATH=/usr/local/bin:/usr/bin:/bin target/wheel-venv/bin/python crm-py/tests/smoke/wheel_smoke.py

step "Python: pytest (SQLite and Postgres, the FastAPI example)"
# Any non-zero exit fails the run, 5 (no tests collected) included.
(cd crm-py && ../.venv/bin/python -m pytest -q -p no:cacheprovider)

step "Python: the stubs match the module (mypy.stubtest), and type-check"
.venv/bin/python -m mypy.stubtest crm --allowlist crm-py/stubtest-allowlist.txt
.venv/bin/python -m mypy --strict crm-py/python/crm examples/fastapi/app.py

echo
echo "all checks passed in $((SECONDS / 60))m$((SECONDS % 60))s"
