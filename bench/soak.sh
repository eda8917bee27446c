#!/usr/bin/env bash
# Soak: a long mixed load with hostile clients and reloads, watching for
# anything that grows or fails.
#
#   bash bench/soak.sh                       # 30 minutes, from the repository root
#   DURATION=300 RELOAD_EVERY=60 bash bench/soak.sh   # a short one
#
# portico serves one site: static files (13 B and 10 MiB), a WSGI app
# (GET, and POST echoing 1 KiB bodies; bench/apps/soak_app.py) with
# --max-requests churn, and a CGI script. Against it, all at once:
#   - wrk -t1 -c16 with keep-alive, cycling through the routes
#     (bench/soak.lua), one minute per run;
#   - bench/soak_clients.py: slowloris heads, trickled uploads, slow and
#     stalled readers, malformed requests, idle keep-alive connections;
#   - SIGHUP every RELOAD_EVERY seconds.
# Each minute prints the requests and the failed ones (wrk's socket errors
# and non-2xx answers), the RSS and open descriptors of the master and its
# workers. The targets: zero failed requests, RSS and descriptors flat
# (the last minute within GROWTH_PCT of the second; the first warms up).
# Exit status 1 when a target is missed.
#
# Knobs: DURATION=1800 RELOAD_EVERY=300 WORKERS=2 CONNECTIONS=16
#        GROWTH_PCT=10 PORTICO=/path NO_BUILD=1 KEEP=1
set -euo pipefail

DURATION=${DURATION:-1800}
RELOAD_EVERY=${RELOAD_EVERY:-300}
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-16}
GROWTH_PCT=${GROWTH_PCT:-10}

. "$(dirname "$0")/lib.sh"

[[ -f Cargo.toml && -d bench/apps ]] || die "run from the repository root (bash bench/soak.sh)"
whole_numbers DURATION RELOAD_EVERY WORKERS CONNECTIONS GROWTH_PCT
((DURATION >= 120 && RELOAD_EVERY >= 10 && WORKERS >= 1)) ||
    die "DURATION must be at least 120 s, RELOAD_EVERY at least 10 s, WORKERS at least 1"
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
build_portico

ROOT=$PWD
TMP=$(mktemp -d /tmp/portico-soak.XXXXXX)
stop_servers_on_exit
cleanup_extra() { kill "${CLIENTS_PID:-}" "${RELOADER_PID:-}" 2>/dev/null || true; }

mkdir -p "$TMP/site" "$TMP/cgi-bin"
printf 'Hello, world!' >"$TMP/site/hello.txt"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$TMP/site/big.bin"
cp "$ROOT/bench/apps/soak_app.py" "$TMP/"
cat >"$TMP/cgi-bin/hello.sh" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\nhello from CGI\n'
EOF
chmod +x "$TMP/cgi-bin/hello.sh"
PORT=$(free_port)
cat >"$TMP/soak.toml" <<EOF
workers = $WORKERS
chdir = "$TMP"
threads = 4
max_requests = 5000
max_requests_jitter = 1000

[log]
access_log = "off"

[[listen]]
address = "127.0.0.1:$PORT"

[[route]]
path = "/"
static = "site"

[[route]]
path = "/app"
wsgi = "soak_app:app"

[[route]]
path = "/cgi-bin"
cgi = "cgi-bin"
EOF

log "starting portico ($PORTICO) with $WORKERS workers on :$PORT for ${DURATION}s"
setsid "$PORTICO" -c "$TMP/soak.toml" >"$TMP/portico.log" 2>&1 &
PID[portico]=$!
MASTER=${PID[portico]}
wait_up portico "$MASTER" "http://127.0.0.1:$PORT/app/" "$TMP/portico.log"

python3 "$ROOT/bench/soak_clients.py" 127.0.0.1 "$PORT" "$DURATION" >"$TMP/clients.log" 2>&1 &
CLIENTS_PID=$!
(
    while sleep "$RELOAD_EVERY"; do
        kill -HUP "$MASTER" 2>/dev/null || exit 0
        echo "$(date +%T) SIGHUP" >>"$TMP/reloads.log"
    done
) &
RELOADER_PID=$!

# RSS (KiB) and open descriptors of the master and its workers.
process_totals() {
    local p rss=0 fds=0 n=0 kib
    for p in "$MASTER" $(pgrep -P "$MASTER" || true); do
        kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
        rss=$((rss + ${kib:-0}))
        fds=$((fds + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
        n=$((n + 1))
    done
    echo "$rss $fds $((n - 1))"
}

printf '%-6s %10s %9s %8s %8s %10s %6s %8s\n' minute requests req/s failed p99_ms rss_MiB fds workers
minutes=$((DURATION / 60))
total_failed=0
declare -a RSS_SERIES=() FD_SERIES=()
for m in $(seq 1 "$minutes"); do
    out=$TMP/wrk-$m.txt
    wrk -t1 -c"$CONNECTIONS" -d60s --latency --timeout 10s -s "$ROOT/bench/soak.lua" \
        "http://127.0.0.1:$PORT/" >"$out" 2>&1 || true
    read -r rps _ p99 non2xx errors readerrors requests < <(parse_wrk "$out" || echo "0 0 0 0 0 0 0")
    bad_echoes=$(awk '/^Bad echoes:/ { print $3 }' "$out")
    failed=$((non2xx + errors + readerrors + ${bad_echoes:-1}))
    total_failed=$((total_failed + failed))
    read -r rss fds workers < <(process_totals)
    RSS_SERIES+=("$rss")
    FD_SERIES+=("$fds")
    printf '%-6s %10s %9.0f %8s %8.1f %10.1f %6s %8s\n' "$m" "$requests" "$rps" "$failed" "$p99" \
        "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$fds" "$workers"
done
wait "$CLIENTS_PID" 2>/dev/null || true
CLIENTS_PID=
echo "hostile clients (bench/soak_clients.py):"
cat "$TMP/clients.log"
echo "reloads: $(wc -l <"$TMP/reloads.log" 2>/dev/null || echo 0)"

# Flat: the last minute against the second (the first fills caches).
verdict=0
if ((minutes >= 2)); then
    first_rss=${RSS_SERIES[1]} last_rss=${RSS_SERIES[-1]}
    first_fds=${FD_SERIES[1]} last_fds=${FD_SERIES[-1]}
    growth() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (a > 0 ? (b - a) * 100 / a : 0) }'; }
    rss_growth=$(growth "$first_rss" "$last_rss")
    fd_growth=$(growth "$first_fds" "$last_fds")
    echo "RSS: minute 2 $((first_rss / 1024)) MiB, last $((last_rss / 1024)) MiB (${rss_growth} %)"
    echo "fds: minute 2 $first_fds, last $last_fds (${fd_growth} %)"
    awk -v g="$rss_growth" -v l="$GROWTH_PCT" 'BEGIN { exit !(g > l) }' && { echo "RSS grew past ${GROWTH_PCT} %"; verdict=1; }
    awk -v g="$fd_growth" -v l="$GROWTH_PCT" 'BEGIN { exit !(g > l) }' && { echo "descriptors grew past ${GROWTH_PCT} %"; verdict=1; }
fi
echo "failed requests: $total_failed"
((total_failed == 0)) || verdict=1
grep -E "panicked|ERROR" "$TMP/portico.log" | tail -20 || true
if ((verdict == 0)); then echo "soak: OK (zero failed, flat)"; else echo "soak: FAILED"; fi
exit "$verdict"
