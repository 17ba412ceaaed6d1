#!/usr/bin/env bash
# The HTTP benchmark: the release server (`crm serve`, crm-server) on SQLite and on a
# throwaway Postgres (fsync on, as in production; or CRM_TEST_PG_URL), driven by wrk
# at 64 connections (3 s warm-up, then the run):
#   GET  /api/v1/health           (the floor: routing and middleware, no database)
#   POST /api/v1/leads            (API key, rate limiter, one write transaction)
#   GET  /api/v1/leads?limit=20   (API key, rate limiter, one keyset page; runs after
#                                  the create run, so the table holds its leads)
# Prints requests/s, p50/p99 latency and non-2xx answers per backend, and the
# server's peak RSS. The API-key rate limit is raised so that the benchmark measures
# the work, not 429s. With CRM_PEER_SBS set to the side-by-side script of the
# FastAPI peer (kept outside this repository), it runs next with the same server
# binary, for the table against the peer:
#   CRM_PEER_SBS=/path/to/peers/sbs.sh scripts/bench-http.sh
#
#   scripts/bench-http.sh [seconds per run, default 15]
#
# Needs wrk (installed with apt-get when missing) and, for Postgres, the server
# binaries scripts/pg-throwaway.sh uses. Client and server share the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}

if ! command -v wrk >/dev/null; then
    apt-get install -y wrk >/dev/null
fi
cargo build --release -p crm-server
server=target/release/crm
password='Bench-Password-123!'
port=3917
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

run() { # label, lua script or "", path
    local label=$1 script=$2 path=$3 out
    local args=("http://127.0.0.1:$port$path")
    [ -n "$script" ] && args=(-s "$script" "${args[@]}")
    wrk -t2 -c64 -d3s "${args[@]}" >/dev/null
    out=$(wrk -t2 -c64 -d"${secs}s" --latency "${args[@]}")
    local rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    printf '%-10s %-28s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' \
        "$backend" "$label" "$rps" "$p50" "$p99" "${errors:-0}"
}

bench_backend() { # backend name, DATABASE_URL or ""
    backend=$1
    local dir="$work/$backend"
    mkdir -p "$dir"
    DATABASE_URL=$2 CRM_DATA_DIR=$dir CRM_ADDR=127.0.0.1:$port \
        CRM_ADMIN_EMAIL=bench@example.com CRM_ADMIN_PASSWORD=$password \
        CRM_API_KEY_PER_MINUTE=10000000 CRM_ANON_PER_MINUTE=10000000 \
        "$server" serve >"$dir/server.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    trap 'cat "$dir/server.log" >&2' ERR
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/api/v1/health" >/dev/null && break
        sleep 0.1
    done
    local cookie key
    cookie=$(curl -fs -i -X POST "http://127.0.0.1:$port/api/auth/login" \
        -H 'content-type: application/json' -H 'x-crm-csrf: 1' \
        -d "{\"email\":\"bench@example.com\",\"password\":\"$password\"}" |
        grep -io '__Host-crm_session=[^;]*')
    key=$(curl -fs -X POST "http://127.0.0.1:$port/api/admin/api-keys" \
        -H "cookie: $cookie" -H 'x-crm-csrf: 1' -H 'content-type: application/json' \
        -d '{"name":"bench","scopes":["leads:*"]}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')
    export CRM_KEY=$key
    run "GET /api/v1/health" "" /api/v1/health
    run "POST /api/v1/leads" scripts/bench/create-lead.lua /api/v1/leads
    run "GET /api/v1/leads?limit=20" scripts/bench/auth-get.lua "/api/v1/leads?limit=20"
    printf '%-10s peak RSS %s MB\n' "$backend" \
        "$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

echo "wrk -t2 -c64 -d${secs}s, $(nproc) cores shared by client and server"
bench_backend sqlite ""
if [ -z "${CRM_TEST_PG_URL:-}" ]; then
    # shellcheck source=scripts/pg-throwaway.sh
    CRM_PG_DURABLE=1 source scripts/pg-throwaway.sh >/dev/null
    trap 'cleanup; crm_pg_stop' EXIT
fi
bench_backend postgres "$CRM_TEST_PG_URL"

if [ -n "${CRM_PEER_SBS:-}" ]; then
    echo
    echo "side by side with the FastAPI peer ($CRM_PEER_SBS)"
    bash "$CRM_PEER_SBS" "$server serve" "$secs"
fi
