#!/usr/bin/env bash
# Every crate and every feature builds on its own, without warnings, on the declared
# minimum Rust version (MSRV, `rust-version` in Cargo.toml). The equivalent of
# `cargo hack check --each-feature` for the published crates, with a storage backend
# added where the crate needs one, plus a Postgres-only build of everything (once, on
# the facade crate `crmkit`: it builds each crate below it with the features that
# crate's own Postgres-only build would have, crm-core's webhooks added); the
# feature lists come from `cargo metadata`, so a new feature is checked without
# editing this file. Then every crate of the workspace with all features (the binary
# and the Python module too) on the MSRV; tests and benches are built by the test
# command's own toolchain (clippy and the tests), not here.
#   scripts/check-features.sh            # with the MSRV toolchain (installed by rustup if missing)
#   TOOLCHAIN=stable scripts/check-features.sh
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
toolchain=${TOOLCHAIN:-$msrv}
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$toolchain" --profile minimal
fi
# Its own target directory: a second compiler cannot reuse the first one's artifacts,
# and must not evict them.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/msrv-$toolchain
export RUSTFLAGS="-D warnings"
check() {
    local start=$SECONDS
    if ! cargo "+$toolchain" check --locked --quiet "$@"; then
        echo "  FAILED after $((SECONDS - start))s: cargo +$toolchain check $*"
        return 1
    fi
    echo "  $((SECONDS - start))s cargo +$toolchain check $*"
}

cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] in ("crmkit", "crm-core", "crm-http", "crm-integrations"):
        print(p["name"], " ".join(sorted(f for f in p["features"] if f != "default")))
' | while read -r pkg features; do
    echo "$pkg"
    check -p "$pkg"
    backend=""
    case " $features " in *" sqlite "*) backend="sqlite" ;; esac
    postgres_only=()
    for f in $features; do
        case "$f" in
            sqlite) check -p "$pkg" --no-default-features --features sqlite ;;
            postgres) check -p "$pkg" --no-default-features --features postgres ;;
            *) check -p "$pkg" --no-default-features --features "${backend:+$backend,}$f"
               [ "$f" = full ] || postgres_only+=("$f") ;;
        esac
    done
    if [ "$pkg" = crmkit ] && [[ " $features " == *" postgres "* ]]; then
        extra=$(IFS=,; echo "${postgres_only[*]:-}")
        check -p "$pkg" --no-default-features --features "postgres${extra:+,$extra}"
    fi
done

echo "workspace, all features"
check --workspace --all-features
