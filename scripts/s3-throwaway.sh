# Sourced by scripts/test.sh (and usable by hand: `source scripts/s3-throwaway.sh`).
# Starts a local S3-compatible server (moto, from PyPI, in a virtualenv of its own) on
# a free port of 127.0.0.1 and exports CRM_TEST_S3_URL; an EXIT trap stops it (and
# the throwaway Postgres, when scripts/pg-throwaway.sh started one). Nothing leaves
# the machine: the tests make their own buckets in it.

# The virtualenv is a tool, like cargo-deny in cargo's bin directory: kept in the
# user's cache, one per moto version, so every clone on a machine shares one install
# (about a minute on two cores) instead of making its own under target/.
s3_moto=5.2.5
s3_venv="${XDG_CACHE_HOME:-$HOME/.cache}/crm-test/moto-$s3_moto"
mkdir -p "$(dirname "$s3_venv")"
# Under a lock: two clones starting at once must not build one virtualenv together.
(
    flock 9
    if ! "$s3_venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$s3_moto')" 2>/dev/null; then
        rm -rf "$s3_venv"
        python3 -m venv "$s3_venv"
        "$s3_venv/bin/python" -m pip install -q "moto[s3,server]==$s3_moto"
    fi
) 9>"$s3_venv.lock"
s3_dir=$(mktemp -d "${TMPDIR:-/tmp}/crm-s3.XXXXXX")
s3_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$s3_venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$s3_dir/server.log" 2>&1 &
s3_pid=$!
for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$s3_port/', timeout=1)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$s3_pid" 2>/dev/null; then cat "$s3_dir/server.log" >&2; exit 1; fi
    sleep 0.1
done

crm_s3_stop() {
    kill "$s3_pid" 2>/dev/null || true
    rm -rf "$s3_dir"
}
if declare -F crm_pg_stop >/dev/null; then
    trap 'crm_s3_stop; crm_pg_stop' EXIT
else
    trap crm_s3_stop EXIT
fi
export CRM_TEST_S3_URL="http://127.0.0.1:$s3_port"
echo "local S3 (moto $s3_moto) on 127.0.0.1:$s3_port"
