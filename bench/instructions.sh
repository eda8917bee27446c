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
# a request (start-up and shutdown cancel out). Cases: the WSGI hello app, a
# 10 KiB POST echoed by a WSGI app (a body under the request-buffering
# memory limit, read before the app is called), a 32 KiB one (past it: a
# temporary file), and a 13-byte static file. Knobs: REQUESTS=2000 NO_BUILD=1,
# CASES="wsgi-post10k ..." (a subset), PORTICO=BINARY
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

# Sends REQUESTS GETs (POSTs of BODY bytes when given) on one keep-alive
# connection and checks each is a 200 (and echoes a POST's body).
cat > "$WORK/client.py" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = b"0123456789abcdef" * (int(sys.argv[4]) // 16) if len(sys.argv) > 4 else None
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST" if body else "GET", path, body=body)
    r = c.getresponse()
    got = r.read()
    assert r.status == 200, r.status
    assert body is None or got == body, len(got)
PY

count() { # NAME REQUESTS PATH BODY_BYTES ARGS...
    local name=$1 n=$2 path=$3 body=$4; shift 4
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
    python3 "$WORK/client.py" "$port" "$path" 1 $body >/dev/null
    if (( n > 0 )); then python3 "$WORK/client.py" "$port" "$path" "$n" $body; fi
    kill -TERM "$pid"; wait "$pid" || true
    callgrind_annotate "$out.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }'
}

echo "| case | instructions per request | requests counted |"
echo "|---|---:|---:|"
for case in ${CASES:-wsgi-hello wsgi-post10k wsgi-post32k static-13b}; do
    body=''
    case $case in
        wsgi-hello) args=(bench_app:app --chdir bench/apps --threads 1); path=/ ;;
        wsgi-post10k) args=(bench_app:echo --chdir bench/apps --threads 1); path=/; body=10240 ;;
        wsgi-post32k) args=(bench_app:echo --chdir bench/apps --threads 1); path=/; body=32768 ;;
        static-13b) args=(--static "/=$WORK"); path=/hello.txt ;;
        *) die "unknown case '$case' (wsgi-hello wsgi-post10k wsgi-post32k static-13b)" ;;
    esac
    base=$(count "$case" 0 "$path" "$body" "${args[@]}")
    full=$(count "$case" "$REQUESTS" "$path" "$body" "${args[@]}")
    echo "| $case | $(( (full - base) / REQUESTS )) | $REQUESTS |"
    summary_row instructions "$case" 0 '' instructions "$(( (full - base) / REQUESTS ))" ''
done
