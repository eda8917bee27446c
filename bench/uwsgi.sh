#!/usr/bin/env bash
# Split deployments over the uwsgi protocol, side by side (hello app,
# bench/apps/bench_app.py:app, the same code everywhere):
#
#   portico        portico alone, HTTP (the baseline)
#   nginx-portico  nginx uwsgi_pass → portico --uwsgi-socket (unix socket)
#   nginx-uwsgi    nginx uwsgi_pass → uWSGI --uwsgi-socket (unix socket)
#   nginx-gunicorn nginx proxy_pass (HTTP/1.1, upstream keepalive 16) →
#                  gunicorn -w 1 -k gthread --threads THREADS (unix socket)
#   front-portico  portico --proxy → portico --uwsgi-socket (unix socket);
#                  only when this portico has --proxy
#
#   bash bench/uwsgi.sh              # from the repository root
#
# Knobs: DURATION=5 ROUNDS=3 CONNECTIONS=64 THREADS=1 (Python threads of the
# app server)
# SETUPS="portico nginx-portico nginx-uwsgi nginx-gunicorn front-portico"
# VENV=bench/.venv (uWSGI and gunicorn from PyPI) NO_BUILD=1 KEEP=1
# PORTICO=/path/to/portico (use that binary, no build) SUMMARY=FILE (also
# append the medians as tab-separated rows to FILE, for bench/all.sh).
# Each setup runs in turn, every round (alternated); figures are medians of
# the rounds: requests/s (with the ratio to nginx-portico), CPU per request
# of all the setup's processes (user + system), and each round's p99 latency.
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SETUPS=${SETUPS:-portico nginx-portico nginx-uwsgi nginx-gunicorn front-portico}
VENV=${VENV:-bench/.venv}

. "$(dirname "$0")/lib.sh"
[[ -f Cargo.toml && -d bench/apps ]] || die "run from the repository root"
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v nginx >/dev/null || apt_install nginx-light 2>/dev/null || apt_install nginx
ROOT=$PWD
[[ $VENV == /* ]] || VENV=$ROOT/$VENV
if [[ ! -x $VENV/bin/uwsgi || ! -x $VENV/bin/gunicorn ]]; then
    log "pip install uwsgi gunicorn (into $VENV)"
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check uwsgi gunicorn
fi
build_portico
HAS_PROXY=$("$PORTICO" --help | grep -q -- '--proxy' && echo 1 || echo)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-uwsgi-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${KEEP:-} ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
ROOT_USER=$([[ $(id -u) -eq 0 ]] && echo "user root;" || true)

wait_http() { # URL
    for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
    die "nothing answers $1 (logs in $TMP; KEEP=1 keeps them)"
}

# nginx in front of SOCKET: uwsgi_pass (the default) or, with a second
# argument "http", proxy_pass over HTTP/1.1 with an upstream keepalive pool
# (what one would deploy in front of gunicorn; uwsgi_pass has no keepalive).
start_nginx() { # SOCKET [http]
    local upstream='' location="include /etc/nginx/uwsgi_params; uwsgi_pass unix:$1;"
    if [[ ${2:-} == http ]]; then
        upstream="upstream app { server unix:$1; keepalive 16; }"
        location='proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host;'
    fi
    mkdir -p "$TMP/nginx/tmp"
    cat >"$TMP/nginx/nginx.conf" <<EOF
$ROOT_USER
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/tmp/body;
  uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
  proxy_temp_path $TMP/nginx/tmp/proxy;
  fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
  scgi_temp_path $TMP/nginx/tmp/scgi;
  $upstream
  server {
    listen 127.0.0.1:18400;
    location / { $location }
  }
}
EOF
    nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
    PIDS+=($!)
}

start_app_portico() { # SOCKET
    "$PORTICO" bench_app:app --chdir "$ROOT/bench/apps" -w 1 --threads "$THREADS" \
        --access-log off --uwsgi-socket "unix:$1" >"$TMP/app.log" 2>&1 &
    PIDS+=($!)
}

# Starts SETUP; the URL to load is http://127.0.0.1:18400/
start() {
    local sock=$TMP/app.sock
    case $1 in
    portico)
        "$PORTICO" bench_app:app --chdir "$ROOT/bench/apps" -w 1 --threads "$THREADS" \
            --access-log off -b 127.0.0.1:18400 >"$TMP/app.log" 2>&1 &
        PIDS+=($!) ;;
    nginx-portico) start_app_portico "$sock"; start_nginx "$sock" ;;
    nginx-uwsgi)
        local threads=(); ((THREADS > 1)) && threads=(--threads "$THREADS")
        (cd "$ROOT/bench/apps" && exec "$VENV/bin/uwsgi" --uwsgi-socket "$sock" \
            --wsgi-file bench_app.py --callable app --master --processes 1 "${threads[@]}" \
            --disable-logging --die-on-term) >"$TMP/app.log" 2>&1 &
        PIDS+=($!)
        start_nginx "$sock" ;;
    nginx-gunicorn)
        "$VENV/bin/gunicorn" -w 1 -k gthread --threads "$THREADS" --chdir "$ROOT/bench/apps" \
            -b "unix:$sock" --log-level warning bench_app:app >"$TMP/app.log" 2>&1 &
        PIDS+=($!)
        start_nginx "$sock" http ;;
    front-portico)
        start_app_portico "$sock"
        "$PORTICO" -w 1 --access-log off -b 127.0.0.1:18400 \
            --proxy "/=uwsgi+unix:$sock" >"$TMP/front.log" 2>&1 &
        PIDS+=($!) ;;
    esac
    wait_http http://127.0.0.1:18400/
}

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
    rm -f "$TMP/app.sock"
}

# CPU time (clock ticks, user + system) of every process of the setup: the
# ones started here and their children (nginx's worker, portico's worker,
# gunicorn's worker). Per request, it is the whole deployment's cost, much
# steadier than req/s on a shared machine.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local p t=0 stat f all=()
    for p in "${PIDS[@]}"; do all+=("$p"); all+=($(pgrep -P "$p" || true)); done
    for p in "${all[@]}"; do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        read -r -a f <<<"$stat"
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}

read -r -a LIST <<<"$SETUPS"
declare -A RPS P99 CPU
for round in $(seq "$ROUNDS"); do
    for s in "${LIST[@]}"; do
        [[ $s == front-portico && -z $HAS_PROXY ]] && continue
        start "$s"
        t0=$(cpu_ticks)
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency http://127.0.0.1:18400/ >"$TMP/wrk.txt"
        t1=$(cpu_ticks)
        stop_all
        rps=$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk.txt")
        n=$(awk '/ requests in / {print $1}' "$TMP/wrk.txt")
        grep -q 'Socket errors\|Non-2xx' "$TMP/wrk.txt" && log "$s: $(grep 'Socket errors\|Non-2xx' "$TMP/wrk.txt" | tr -s ' ')"
        cpu=$(cpu_us_per_request $((t1 - t0)) "$n")
        RPS[$s]+="$rps " CPU[$s]+="$cpu "
        P99[$s]+="$(awk '$1 == "99%" {print $2}' "$TMP/wrk.txt") "
        log "round $round $s: $rps req/s, CPU $cpu us/req (all processes of the setup)"
    done
done

med() { if [[ -n ${1:-} ]]; then median $1; fi; }
base=$(med "${RPS[nginx-portico]:-}")
printf '%-15s %12s %8s %12s  %s\n' setup "req/s" ratio "CPU us/req" "p99 per round"
for s in "${LIST[@]}"; do
    [[ -n ${RPS[$s]:-} ]] || { printf '%-15s %12s\n' "$s" "(skipped)"; continue; }
    r=$(median ${RPS[$s]})
    u=$(median ${CPU[$s]})
    p=$(echo "${P99[$s]}" | tr -s ' ' ',' | sed 's/,$//')
    ratio=$([[ -n $base ]] && awk -v a="$r" -v b="$base" 'BEGIN {printf "%.2f", a / b}' || echo -)
    printf '%-15s %12s %8s %12s  %s\n' "$s" "$r" "$ratio" "$u" "$p"
done
# Machine-readable rows: portico as the WAS behind nginx vs uWSGI and
# gunicorn behind the same nginx, and portico's front vs nginx's.
np=$(med "${RPS[nginx-portico]:-}") nu=$(med "${RPS[nginx-uwsgi]:-}")
ng=$(med "${RPS[nginx-gunicorn]:-}") fp=$(med "${RPS[front-portico]:-}")
npc=$(med "${CPU[nginx-portico]:-}") nuc=$(med "${CPU[nginx-uwsgi]:-}")
ngc=$(med "${CPU[nginx-gunicorn]:-}") fpc=$(med "${CPU[front-portico]:-}")
if [[ -n $np && -n $nu ]]; then
    summary_row split nginx-front 1 uwsgi req/s "$np" "$nu"
    summary_row split nginx-front 1 uwsgi cpu_us "$npc" "$nuc"
fi
if [[ -n $np && -n $ng ]]; then
    summary_row split nginx-front 1 gunicorn req/s "$np" "$ng"
    summary_row split nginx-front 1 gunicorn cpu_us "$npc" "$ngc"
fi
if [[ -n $np && -n $fp ]]; then
    summary_row split portico-front 1 nginx req/s "$fp" "$np"
    summary_row split portico-front 1 nginx cpu_us "$fpc" "$npc"
fi
