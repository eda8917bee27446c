#!/usr/bin/env bash
# Static files, portico vs nginx, side by side.
#
#   bash bench/static.sh            # from the repository root
#
# Knobs (environment):
#   DURATION=5      seconds per wrk run
#   ROUNDS=3        rounds; each figure is the median of the rounds
#   CONNECTIONS=64  wrk connections (-c); wrk always runs one thread (-t1)
#   WORKERS=1       worker processes, the same for both servers
#   TIMEOUT=10      wrk --timeout in seconds (wrk's own default, 2 s, counts
#                   the slowest 10 MiB responses as errors and drops their
#                   latency)
#   WARMUP=1        seconds of unmeasured load before each server's first run
#                   of a case (0 = none)
#   PIN=            optional: "SERVER_CPUS:WRK_CPUS" (taskset lists, e.g. "1:0")
#                   to pin the servers and wrk to separate CPUs
#   NO_BUILD=1      skip `cargo build --release` (use the existing binary)
#   PORTICO=        a portico binary to use as it is (no build)
#   KEEP=1          keep the temp directory (configs, logs) after the run
#   SUMMARY=FILE    also append the medians as tab-separated rows to FILE
#                   (see summary_row in bench/lib.sh; bench/all.sh uses it)
#
# Needs root only to install missing packages (nginx-light or nginx, wrk, curl).
# nginx runs from a config generated in the temp directory; nothing under /etc
# is read or written.
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
WARMUP=${WARMUP:-1}
TIMEOUT=${TIMEOUT:-10}
PIN=${PIN:-}
NO_BUILD=${NO_BUILD:-}
KEEP=${KEEP:-}

. "$(dirname "$0")/lib.sh"

[[ -f Cargo.toml && -d src ]] || die "run from the repository root (bash bench/static.sh)"
whole_numbers DURATION ROUNDS CONNECTIONS WORKERS WARMUP TIMEOUT
(( ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= 1 && WORKERS >= 1 )) ||
    die "ROUNDS, DURATION, CONNECTIONS and WORKERS must be at least 1"

# ---------------------------------------------------------------- tools
find_nginx() {
    local p
    for p in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
        [[ -n $p && -x $p ]] && { echo "$p"; return 0; }
    done
    return 1
}


if ! NGINX=$(find_nginx); then
    apt_install nginx-light 2>/dev/null || apt_install nginx
    NGINX=$(find_nginx) || die "nginx still not found after installing"
fi
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl

TASKSET_SRV=() TASKSET_WRK=()
if [[ -n $PIN ]]; then
    [[ $PIN == *:* ]] || die "PIN must look like SERVER_CPUS:WRK_CPUS, e.g. 1:0"
    command -v taskset >/dev/null || apt_install util-linux
    TASKSET_SRV=(taskset -c "${PIN%%:*}")
    TASKSET_WRK=(taskset -c "${PIN##*:}")
fi

build_portico

# ---------------------------------------------------------------- fixtures
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-bench.XXXXXX")
# nginx workers drop to `nobody` when started as root: they must be able to
# read the files.
chmod 755 "$TMP"
DOCROOT=$TMP/www
mkdir -p "$DOCROOT" "$TMP/nginx"
printf 'Hello, world\n' >"$DOCROOT/hello.txt"                      # 13 bytes
head -c $((100 * 1024)) /dev/urandom >"$DOCROOT/100k.bin"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$DOCROOT/10m.bin"
chmod 755 "$DOCROOT"
chmod 644 "$DOCROOT"/*
FILES=(hello.txt 100k.bin 10m.bin)

PORTICO_PID='' NGINX_PID=''
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    # Each server runs in its own session (setsid), so its process group is
    # the server and its workers and nothing else.
    for pid in "$PORTICO_PID" "$NGINX_PID"; do
        [[ -n $pid ]] && kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "$PORTICO_PID" "$NGINX_PID"; do
        [[ -n $pid ]] || continue
        for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $KEEP ]]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nothing listens on now (the small race with other programs is accepted).


# ---------------------------------------------------------------- servers
P_PORT=$(free_port)
setsid "${TASKSET_SRV[@]}" "$PORTICO" -b "127.0.0.1:$P_PORT" --static "/=$DOCROOT" \
    -w "$WORKERS" --access-log off --log-level warn --graceful-timeout 1 >"$TMP/portico.log" 2>&1 &
PORTICO_PID=$!
wait_up portico "$PORTICO_PID" "http://127.0.0.1:$P_PORT/" "$TMP/portico.log"

N_PORT=$(free_port)
while [[ $N_PORT == "$P_PORT" ]]; do N_PORT=$(free_port); done
nginx_static_conf "$WORKERS" 4096 "127.0.0.1:$N_PORT" "" "keepalive_requests 100000;" ""
start_nginx "$TMP/nginx/stdout.log" "${TASKSET_SRV[@]}"
NGINX_PID=$!
wait_up nginx "$NGINX_PID" "http://127.0.0.1:$N_PORT/" "$TMP/nginx/error.log"

declare -A URL=([portico]="http://127.0.0.1:$P_PORT" [nginx]="http://127.0.0.1:$N_PORT")

# ---------------------------------------------------------------- sanity check
log "checking both servers answer 200 with the same bytes"
for f in "${FILES[@]}"; do
    want=$(stat -c %s "$DOCROOT/$f")
    for s in portico nginx; do
        got=$(curl -s -o "$TMP/check.$s" -w '%{http_code} %{size_download}' "${URL[$s]}/$f") ||
            die "$s: request for /$f failed"
        [[ $got == "200 $want" ]] ||
            die "$s: GET /$f answered '$got' (status bytes), expected '200 $want'"
        cmp -s "$TMP/check.$s" "$DOCROOT/$f" || die "$s: /$f body differs from the file"
    done
done
rm -f "$TMP"/check.*

# ---------------------------------------------------------------- measuring
# CPU time of every process of a server's session (the master and its
# workers), divided by the requests wrk counted: the server's CPU cost per
# request, much less sensitive than req/s to other load on a shared machine.
declare -A SID=([portico]="$PORTICO_PID" [nginx]="$NGINX_PID")

run_wrk() { # SERVER FILE SECONDS OUT
    "${TASKSET_WRK[@]}" wrk -t1 -c"$CONNECTIONS" -d"$3"s --timeout "$TIMEOUT"s --latency "${URL[$1]}/$2" >"$4" 2>&1 ||
        { cat "$4" >&2; die "wrk failed against $1 /$2"; }
}

declare -A RPS MBS P99 CPU
WARNINGS=()
log "wrk -t1 -c$CONNECTIONS -d${DURATION}s --timeout ${TIMEOUT}s --latency, $ROUNDS round(s), workers=$WORKERS"
for r in $(seq "$ROUNDS"); do
    # Alternate who goes first, so a drift in the machine's load is shared.
    if (( r % 2 )); then order=(portico nginx); else order=(nginx portico); fi
    for f in "${FILES[@]}"; do
        for s in "${order[@]}"; do
            if (( r == 1 && WARMUP > 0 )); then run_wrk "$s" "$f" "$WARMUP" "$TMP/warmup.out"; fi
            out=$TMP/wrk.$s.$f.$r
            t0=$(session_ticks "${SID[$s]}")
            run_wrk "$s" "$f" "$DURATION" "$out"
            t1=$(session_ticks "${SID[$s]}")
            read -r rps mbs p99 bad err rerr n < <(parse_wrk "$out") || { cat "$out" >&2; die "cannot parse wrk output"; }
            cpu=$(cpu_us_per_request $((t1 - t0)) "$n")
            err=$((err + rerr))
            (( bad == 0 )) || WARNINGS+=("$s /$f round $r: $bad non-2xx/3xx responses")
            (( err == 0 )) || WARNINGS+=("$s /$f round $r: $err socket errors")
            RPS[$s.$f]+="$rps " MBS[$s.$f]+="$mbs " P99[$s.$f]+="$p99 " CPU[$s.$f]+="$cpu "
            printf '   round %d  %-8s %-10s %12.0f req/s %9.1f MB/s  p99 %8.2f ms  server CPU %9.2f us/req\n' \
                "$r" "$s" "$f" "$rps" "$mbs" "$p99" "$cpu" >&2
        done
    done
done

# ---------------------------------------------------------------- table
echo
echo "portico vs nginx, static files: wrk -t1 -c$CONNECTIONS -d${DURATION}s --timeout ${TIMEOUT}s, workers=$WORKERS, median of $ROUNDS round(s)"
echo "(CPU us/req: user + system time of all the server's processes during the run, per request)"
echo
echo "| case | portico req/s | nginx req/s | portico/nginx | portico MB/s | nginx MB/s | portico p99 ms | nginx p99 ms | portico CPU us/req | nginx CPU us/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for f in "${FILES[@]}"; do
    # shellcheck disable=SC2086  # word splitting of the per-round lists is intended
    {
        pr=$(median ${RPS[portico.$f]}) nr=$(median ${RPS[nginx.$f]})
        pm=$(median ${MBS[portico.$f]}) nm=$(median ${MBS[nginx.$f]})
        pp=$(median ${P99[portico.$f]}) np=$(median ${P99[nginx.$f]})
        pc=$(median ${CPU[portico.$f]}) nc=$(median ${CPU[nginx.$f]})
    }
    summary_row static "$f" "$WORKERS" nginx req/s "$pr" "$nr"
    summary_row static "$f" "$WORKERS" nginx MB/s "$pm" "$nm"
    summary_row static "$f" "$WORKERS" nginx p99_ms "$pp" "$np"
    summary_row static "$f" "$WORKERS" nginx cpu_us "$pc" "$nc"
    size=$(stat -c %s "$DOCROOT/$f")
    awk -v f="$f" -v size="$size" -v pr="$pr" -v nr="$nr" -v pm="$pm" -v nm="$nm" -v pp="$pp" -v np="$np" \
        -v pc="$pc" -v nc="$nc" \
        'BEGIN { printf "| %s (%d B) | %.0f | %.0f | %.2f | %.1f | %.1f | %.2f | %.2f | %.1f | %.1f |\n",
                 f, size, pr, nr, (nr > 0 ? pr / nr : 0), pm, nm, pp, np, pc, nc }'
done
if ((${#WARNINGS[@]})); then
    echo
    printf 'WARNING: %s\n' "${WARNINGS[@]}"
fi
