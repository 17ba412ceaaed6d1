# Sourced by scripts/test.sh (and usable by hand: `source scripts/pg-throwaway.sh`).
# Starts a throwaway PostgreSQL cluster in a temporary directory on a free port and
# exports CRM_TEST_PG_URL; an EXIT trap stops it and removes the directory.
# Postgres refuses to run as root, so as root the server runs as the `postgres` user.

pg_bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin /usr/local/pgsql/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then pg_bindir=$d; break; fi
done
if [ -z "$pg_bindir" ] && command -v initdb >/dev/null 2>&1; then
    pg_bindir=$(dirname "$(command -v initdb)")
fi
if [ -z "$pg_bindir" ]; then
    echo "error: the Postgres tests need a server. Either set CRM_TEST_PG_URL=postgres://user@host:port/db" >&2
    echo "       or install the PostgreSQL server binaries (Debian/Ubuntu: apt-get install postgresql;" >&2
    echo "       macOS: brew install postgresql) so this script can start a throwaway cluster." >&2
    exit 1
fi

pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/crm-pg.XXXXXX")
pg_as=()
if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "error: running as root, and there is no 'postgres' user to run the throwaway server as." >&2
        exit 1
    fi
    chown postgres "$pg_dir"
    chmod 700 "$pg_dir"
    pg_as=(runuser -u postgres --)
fi
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"${pg_as[@]}" "$pg_bindir/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 --no-sync >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; exit 1; }
# Tests need no durability; a benchmark does (CRM_PG_DURABLE=1 keeps fsync on).
pg_speed="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
[ "${CRM_PG_DURABLE:-}" = 1 ] && pg_speed=""
"${pg_as[@]}" "$pg_bindir/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 $pg_speed -c max_connections=300" \
    start >/dev/null || { cat "$pg_dir/server.log" >&2; exit 1; }

crm_pg_stop() {
    "${pg_as[@]}" "$pg_bindir/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
}
trap crm_pg_stop EXIT
export CRM_TEST_PG_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "throwaway Postgres on 127.0.0.1:$pg_port ($pg_dir)"
