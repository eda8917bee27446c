#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable for
# the same binary and inputs whatever else the machine is doing, so a change
# can be judged without the noise of req/s on a shared machine.
#
#   bash bench/instructions.sh          # from the repository root
#
# For each case, portico runs in one process (--no-master, --threads 1)
# under callgrind twice: once serving N requests on one keep-alive
# connection, once serving none; the difference divided by N is the cost of
# a request (start-up and shutdown cancel out). Cases: the WSGI hello app and
# a 13-byte static file. Knobs: REQUESTS=2000 NO_BUILD=1, PORTICO=BINARY
# (use it as it is, no build), SUMMARY=FILE (also append the counts as
# tab-separated rows to FILE, for bench/all.sh).
set -euo pipefail
REQUESTS=${REQUESTS:-2000}
. "$(dirname "$0")/lib.sh"
[[ -f Cargo.toml && -d bench/apps ]] || die "run from the repository root"
command -v valgrind >/dev/null || apt_install valgrind
build_portico
BIN=$PORTICO
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf 'Hello, world!' > "$WORK/hello.txt"

# Sends REQUESTS GETs on one keep-alive connection and checks each is a 200.
cat > "$WORK/client.py" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY

count() { # NAME REQUESTS PATH ARGS...
    local name=$1 n=$2 path=$3; shift 3
    local out=$WORK/$name-$n
    valgrind --tool=callgrind --callgrind-out-file="$out.cg" --trace-children=no \
        "$BIN" --no-master -b 127.0.0.1:0 --access-log off "$@" > "$out.log" 2> "$out.err" &
    local pid=$!
    local port=""
    for _ in $(seq 600); do
        port=$(grep -om1 '127.0.0.1:[0-9]*' "$out.log" 2>/dev/null | cut -d: -f2 || true)
        [[ -n $port ]] && break
        sleep 0.1
    done
    [[ -n $port ]] || { cat "$out.err" >&2; die "$name did not start"; }
    # The first request also waits for the app to be imported.
    python3 "$WORK/client.py" "$port" "$path" 1 >/dev/null
    if (( n > 0 )); then python3 "$WORK/client.py" "$port" "$path" "$n"; fi
    kill -TERM "$pid"; wait "$pid" || true
    callgrind_annotate "$out.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }'
}

echo "| case | instructions per request | requests counted |"
echo "|---|---:|---:|"
for case in wsgi-hello static-13b; do
    case $case in
        wsgi-hello) args=(bench_app:app --chdir bench/apps --threads 1); path=/ ;;
        static-13b) args=(--static "/=$WORK"); path=/hello.txt ;;
    esac
    base=$(count "$case" 0 "$path" "${args[@]}")
    full=$(count "$case" "$REQUESTS" "$path" "${args[@]}")
    echo "| $case | $(( (full - base) / REQUESTS )) | $REQUESTS |"
    summary_row instructions "$case" 0 '' instructions "$(( (full - base) / REQUESTS ))" ''
done
