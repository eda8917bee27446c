#!/usr/bin/env bash
# WSGI, portico vs granian, gunicorn (gthread) and uWSGI, side by side.
#
#   bash bench/wsgi.sh              # from the repository root
#
# Cases (the apps are in bench/apps/, the same code on every server):
#   hello    bench_app:app     GET, "Hello, world!" (13 B)
#   get10k   bench_app:get10k  GET, a fixed 10 KiB body
#   post10k  bench_app:echo    POST of 10 KiB (bench/post10k.lua), echoed back
#   flask    flask_app:app     Flask, GET "Hello, world!"
#
# Knobs (environment):
#   DURATION=5      seconds per wrk run
#   ROUNDS=3        rounds; each figure is the median of the rounds
#   CONNECTIONS=64  wrk connections (-c); wrk always runs one thread (-t1)
#   WORKERS=1       worker processes, the same for every server
#   THREADS=1       Python threads per worker, the same for every server
#                   (portico --threads, granian --blocking-threads,
#                   gunicorn --threads, uWSGI --threads when > 1)
#   TIMEOUT=10      wrk --timeout in seconds
#   WARMUP=1        seconds of unmeasured load before each server's first run
#                   of a case (0 = none)
#   CASES="hello get10k post10k flask"        a subset, in this order
#   SERVERS="portico granian gunicorn uwsgi"  a subset; ratios need portico
#   VENV=bench/.venv  the peers' virtualenv (created and filled from PyPI when
#                   a package is missing; portico gets it as --venv)
#   PIN=            optional: "SERVER_CPUS:WRK_CPUS" (taskset lists, e.g. "1:0")
#                   to pin the servers and wrk to separate CPUs
#   NO_BUILD=1      skip `cargo build --release` (use the existing binary)
#   PORTICO=        a portico binary to use as it is (no build)
#   KEEP=1          keep the temp directory (logs, wrk outputs) after the run
#   SUMMARY=FILE    also append the medians as tab-separated rows to FILE
#                   (see summary_row in bench/lib.sh; bench/all.sh uses it)
#
# Needs root only to install missing Debian packages (wrk, curl, python3-venv).
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-1}
TIMEOUT=${TIMEOUT:-10}
CASES=${CASES:-hello get10k post10k flask}
SERVERS=${SERVERS:-portico granian gunicorn uwsgi}
VENV=${VENV:-bench/.venv}
PIN=${PIN:-}
NO_BUILD=${NO_BUILD:-}
KEEP=${KEEP:-}

. "$(dirname "$0")/lib.sh"

[[ -f Cargo.toml && -d src && -d bench/apps ]] || die "run from the repository root (bash bench/wsgi.sh)"
whole_numbers DURATION ROUNDS CONNECTIONS WORKERS THREADS WARMUP TIMEOUT
(( ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= 1 && WORKERS >= 1 && THREADS >= 1 )) ||
    die "ROUNDS, DURATION, CONNECTIONS, WORKERS and THREADS must be at least 1"
read -r -a CASE_LIST <<<"$CASES"
read -r -a SERVER_LIST <<<"$SERVERS"
for c in "${CASE_LIST[@]}"; do
    [[ $c =~ ^(hello|get10k|post10k|flask)$ ]] || die "unknown case '$c' (hello get10k post10k flask)"
done
for s in "${SERVER_LIST[@]}"; do
    [[ $s =~ ^(portico|granian|gunicorn|uwsgi)$ ]] || die "unknown server '$s' (portico granian gunicorn uwsgi)"
done
((${#CASE_LIST[@]} && ${#SERVER_LIST[@]})) || die "CASES and SERVERS must not be empty"

ROOT=$PWD
APPS=$ROOT/bench/apps
LUA_POST=$ROOT/bench/post10k.lua
[[ $VENV == /* ]] || VENV=$ROOT/$VENV

# ---------------------------------------------------------------- tools

command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || die "python3 not found"

TASKSET_SRV=() TASKSET_WRK=()
if [[ -n $PIN ]]; then
    [[ $PIN == *:* ]] || die "PIN must look like SERVER_CPUS:WRK_CPUS, e.g. 1:0"
    command -v taskset >/dev/null || apt_install util-linux
    TASKSET_SRV=(taskset -c "${PIN%%:*}")
    TASKSET_WRK=(taskset -c "${PIN##*:}")
fi

# The peers and Flask come from PyPI into one venv; portico runs its app
# with the same venv (--venv), so every server imports the same packages.
if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
fi
if ! "$VENV/bin/python" -c 'import granian, gunicorn, flask' 2>/dev/null || [[ ! -x $VENV/bin/uwsgi ]]; then
    log "pip install granian gunicorn uwsgi flask (into $VENV)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check granian gunicorn uwsgi flask ||
        die "pip install failed (uWSGI builds from source: it needs a C compiler and python3-dev)"
fi

build_portico

# ---------------------------------------------------------------- fixtures
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-wsgi-bench.XXXXXX")
printf 'Hello, world!' >"$TMP/hello.body"
"$VENV/bin/python" -c 'import sys; sys.stdout.buffer.write(b"0123456789abcdef" * 640)' >"$TMP/10k.body"
[[ $(stat -c %s "$TMP/10k.body") == 10240 ]] || die "cannot write the 10 KiB fixture"

declare -A APP=([hello]=bench_app:app [get10k]=bench_app:get10k [post10k]=bench_app:echo [flask]=flask_app:app)
declare -A EXPECT=([hello]=$TMP/hello.body [get10k]=$TMP/10k.body [post10k]=$TMP/10k.body [flask]=$TMP/hello.body)

stop_servers_on_exit

# A port nothing listens on now (the small race with other programs is accepted).


declare -A URL=()
start_server() { # SERVER CASE
    local s=$1 c=$2 port app=${APP[$2]} logf=$TMP/$1.$2.log
    port=$(free_port)
    URL[$s]=http://127.0.0.1:$port/
    case $s in
    portico)
        setsid "${TASKSET_SRV[@]}" "$PORTICO" "$app" --chdir "$APPS" --venv "$VENV" \
            -b "127.0.0.1:$port" -w "$WORKERS" --threads "$THREADS" \
            --access-log off --log-level warn --graceful-timeout 1 >"$logf" 2>&1 &
        ;;
    granian)
        setsid "${TASKSET_SRV[@]}" "$VENV/bin/granian" --interface wsgi --workers "$WORKERS" \
            --blocking-threads "$THREADS" --http 1 --no-ws --no-access-log --log-level warning \
            --working-dir "$APPS" --host 127.0.0.1 --port "$port" "$app" >"$logf" 2>&1 &
        ;;
    gunicorn)
        # Access log is off unless --access-logfile is given.
        setsid "${TASKSET_SRV[@]}" "$VENV/bin/gunicorn" -w "$WORKERS" -k gthread --threads "$THREADS" \
            --chdir "$APPS" -b "127.0.0.1:$port" --log-level warning "$app" >"$logf" 2>&1 &
        ;;
    uwsgi)
        local threads=()
        ((THREADS > 1)) && threads=(--threads "$THREADS")
        setsid "${TASKSET_SRV[@]}" "$VENV/bin/uwsgi" --http-socket "127.0.0.1:$port" --http-keepalive \
            --processes "$WORKERS" "${threads[@]}" --disable-logging --die-on-term --need-app \
            --home "$VENV" --chdir "$APPS" --module "$app" >"$logf" 2>&1 &
        ;;
    esac
    PID[$s]=$!
    wait_up "$s" "${PID[$s]}" "${URL[$s]}" "$logf"
}

# ---------------------------------------------------------------- sanity check
check_server() { # SERVER CASE
    local s=$1 c=$2 got args=()
    # curl would send `Expect: 100-continue` for this body; wrk does not.
    [[ $c == post10k ]] && args=(-H 'Expect:' -H 'Content-Type: application/octet-stream' --data-binary "@$TMP/10k.body")
    got=$(curl -s -o "$TMP/check.body" -w '%{http_code} %{size_download}' "${args[@]}" "${URL[$s]}") ||
        die "$s ($c): request failed"
    local want="200 $(stat -c %s "${EXPECT[$c]}")"
    [[ $got == "$want" ]] || die "$s ($c): answered '$got' (status bytes), expected '$want'; log: $TMP/$s.$c.log"
    cmp -s "$TMP/check.body" "${EXPECT[$c]}" || die "$s ($c): body differs from the expected one"
    rm -f "$TMP/check.body"
}

# ---------------------------------------------------------------- measuring
# CPU per request: see session_ticks (lib.sh).

# Memory: VmRSS of the worker processes (every process of the session but
# the one we started, when it has children: portico's master, gunicorn's
# arbiter, granian's main process; uWSGI without --master is one process that
# is its own worker) -> "per-worker-MiB total-MiB-of-all-processes".
rss_kib() { awk '/^VmRSS:/ { print $2; exit }' "/proc/$1/status" 2>/dev/null || echo 0; }
memory() { # SERVER
    local leader=${PID[$1]} p n=0 w=0 all=0 r
    for p in $(pgrep -s "$leader"); do
        r=$(rss_kib "$p"); all=$((all + r))
        if [[ $p != "$leader" ]]; then w=$((w + r)); n=$((n + 1)); fi
    done
    if ((n == 0)); then w=$all; n=1; fi
    awk -v w="$w" -v n="$n" -v a="$all" 'BEGIN { printf "%.1f %.1f\n", w / n / 1024, a / 1024 }'
}

run_wrk() { # SERVER CASE SECONDS OUT
    local script=()
    [[ $2 == post10k ]] && script=(-s "$LUA_POST")
    "${TASKSET_WRK[@]}" wrk -t1 -c"$CONNECTIONS" -d"$3"s --timeout "$TIMEOUT"s --latency "${script[@]}" "${URL[$1]}" >"$4" 2>&1 ||
        { cat "$4" >&2; die "wrk failed against $1 ($2)"; }
}

declare -A RPS P99 CPU MEM
WARNINGS=()
ROUND_LINES=()
UWSGI_CLOSES=
log "wrk -t1 -c$CONNECTIONS -d${DURATION}s --timeout ${TIMEOUT}s --latency, $ROUNDS round(s), workers=$WORKERS threads=$THREADS"
for c in "${CASE_LIST[@]}"; do
    log "case $c (${APP[$c]}): starting ${SERVER_LIST[*]}"
    for s in "${SERVER_LIST[@]}"; do start_server "$s" "$c"; done
    for s in "${SERVER_LIST[@]}"; do check_server "$s" "$c"; done
    n_srv=${#SERVER_LIST[@]}
    for r in $(seq "$ROUNDS"); do
        # Rotate who goes first, so a drift in the machine's load is shared.
        order=()
        for i in $(seq 0 $((n_srv - 1))); do order+=("${SERVER_LIST[$(((i + r - 1) % n_srv))]}"); done
        for s in "${order[@]}"; do
            if (( r == 1 && WARMUP > 0 )); then run_wrk "$s" "$c" "$WARMUP" "$TMP/warmup.out"; fi
            out=$TMP/wrk.$s.$c.$r
            t0=$(session_ticks "${PID[$s]}")
            run_wrk "$s" "$c" "$DURATION" "$out"
            t1=$(session_ticks "${PID[$s]}")
            read -r rps _ p99 bad err rerr n < <(parse_wrk "$out") || { cat "$out" >&2; die "cannot parse wrk output"; }
            cpu=$(cpu_us_per_request $((t1 - t0)) "$n")
            (( bad == 0 )) || WARNINGS+=("$s $c round $r: $bad non-2xx/3xx responses")
            (( err == 0 )) || WARNINGS+=("$s $c round $r: $err socket errors (connect/write/timeout)")
            # uWSGI's --http-socket closes the connection after every response
            # (see below): wrk counts each close as a read error, and reconnects.
            if [[ $s == uwsgi ]]; then
                UWSGI_CLOSES+=$((rerr * 100 / (n > 0 ? n : 1)))" "
            elif (( rerr > 0 )); then
                WARNINGS+=("$s $c round $r: $rerr read errors")
            fi
            RPS[$s.$c]+="$rps " P99[$s.$c]+="$p99 " CPU[$s.$c]+="$cpu "
            line=$(printf 'round %d  %-8s %-8s %9.0f req/s  p99 %8.2f ms  server CPU %7.2f us/req' \
                "$r" "$s" "$c" "$rps" "$p99" "$cpu")
            ROUND_LINES+=("$line")
            echo "   $line" >&2
        done
    done
    for s in "${SERVER_LIST[@]}"; do MEM[$s.$c]=$(memory "$s"); done
    for s in "${SERVER_LIST[@]}"; do stop_server "$s"; done
done

# ---------------------------------------------------------------- table
pyver=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')
pipver() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo '?'; }
echo
echo "WSGI: wrk -t1 -c$CONNECTIONS -d${DURATION}s --timeout ${TIMEOUT}s --latency, workers=$WORKERS threads=$THREADS, median of $ROUNDS round(s)"
echo "portico $(git rev-parse --short HEAD 2>/dev/null || echo '?'), Python $pyver, granian $(pipver granian), gunicorn $(pipver gunicorn), uWSGI $(pipver uwsgi), Flask $(pipver flask)"
echo "(ratio = portico/peer: req/s above 1 and p99 below 1 favour portico; CPU us/req: user + system time of all"
echo " the server's processes during the runs, per request; RSS: per worker process after the runs, and all processes)"
echo
echo "| case | server | req/s | p99 ms | CPU us/req | worker RSS MiB | all RSS MiB | req/s ratio | p99 ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for c in "${CASE_LIST[@]}"; do
    pr='' pp='' pu='' pw=''
    if [[ -n ${RPS[portico.$c]:-} ]]; then
        # shellcheck disable=SC2086  # word splitting of the per-round lists is intended
        pr=$(median ${RPS[portico.$c]}) pp=$(median ${P99[portico.$c]}) pu=$(median ${CPU[portico.$c]})
        read -r pw _ <<<"${MEM[portico.$c]}"
    fi
    for s in "${SERVER_LIST[@]}"; do
        # shellcheck disable=SC2086
        { r=$(median ${RPS[$s.$c]}); p=$(median ${P99[$s.$c]}); u=$(median ${CPU[$s.$c]}); }
        read -r wm am <<<"${MEM[$s.$c]}"
        awk -v c="$c" -v s="$s" -v r="$r" -v p="$p" -v u="$u" -v wm="$wm" -v am="$am" -v pr="$pr" -v pp="$pp" '
            BEGIN {
                rr = (s == "portico" || pr == "" || r <= 0) ? "" : sprintf("**%.2f**", pr / r)
                pq = (s == "portico" || pp == "" || p <= 0) ? "" : sprintf("%.2f", pp / p)
                printf "| %s | %s | %.0f | %.2f | %.1f | %.1f | %.1f | %s | %s |\n", c, s, r, p, u, wm, am, rr, pq
            }'
        if [[ $s != portico && -n $pr ]]; then
            summary_row wsgi "$c" "$WORKERS" "$s" req/s "$pr" "$r"
            summary_row wsgi "$c" "$WORKERS" "$s" p99_ms "$pp" "$p"
            summary_row wsgi "$c" "$WORKERS" "$s" cpu_us "$pu" "$u"
            summary_row wsgi "$c" "$WORKERS" "$s" worker_rss_mib "$pw" "$wm"
        fi
    done
done
echo
echo "Rounds:"
printf '  %s\n' "${ROUND_LINES[@]}"
if [[ -n $UWSGI_CLOSES ]]; then
    echo
    echo "uWSGI closed the connection after a response (wrk: read errors per 100 requests, per run): $UWSGI_CLOSES"
    echo "(uWSGI 2.0's --http-socket ignores --http-keepalive: every request pays a new connection.)"
fi
if ((${#WARNINGS[@]})); then
    echo
    printf 'WARNING: %s\n' "${WARNINGS[@]}"
fi
