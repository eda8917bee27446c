#!/usr/bin/env bash
# Split deployments over the uwsgi protocol, side by side (hello app,
# bench/apps/bench_app.py:app, the same code everywhere):
#
#   portico        portico alone, HTTP (the baseline)
#   nginx-portico  nginx uwsgi_pass → portico --uwsgi-socket (unix socket)
#   nginx-uwsgi    nginx uwsgi_pass → uWSGI --uwsgi-socket (unix socket)
#   front-portico  portico --proxy → portico --uwsgi-socket (unix socket);
#                  only when this portico has --proxy
#
#   bash bench/uwsgi.sh              # from the repository root
#
# Knobs: DURATION=5 ROUNDS=3 CONNECTIONS=64 THREADS=1 (Python threads of the
# app server) SETUPS="portico nginx-portico nginx-uwsgi front-portico"
# VENV=bench/.venv (uWSGI from PyPI) NO_BUILD=1 KEEP=1.
# Each setup runs in turn, every round (alternated); figures are medians of
# the rounds: requests/s (with the ratio to nginx-portico), and each
# round's p99 latency.
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SETUPS=${SETUPS:-portico nginx-portico nginx-uwsgi front-portico}
VENV=${VENV:-bench/.venv}

die() { echo "uwsgi.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
[[ -f Cargo.toml && -d bench/apps ]] || die "run from the repository root"
for tool in wrk nginx curl; do
    command -v $tool >/dev/null || die "$tool missing (apt-get install wrk nginx-light curl)"
done
ROOT=$PWD
[[ $VENV == /* ]] || VENV=$ROOT/$VENV
if [[ ! -x $VENV/bin/uwsgi ]]; then
    log "pip install uwsgi (into $VENV)"
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check uwsgi
fi
[[ -n ${NO_BUILD:-} ]] || { log "cargo build --release"; cargo build --release --quiet; }
PORTICO=$ROOT/target/release/portico
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

start_nginx() { # SOCKET
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
  server {
    listen 127.0.0.1:18400;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass unix:$1; }
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

read -r -a LIST <<<"$SETUPS"
declare -A RPS P99
for round in $(seq "$ROUNDS"); do
    for s in "${LIST[@]}"; do
        [[ $s == front-portico && -z $HAS_PROXY ]] && continue
        start "$s"
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency http://127.0.0.1:18400/ >"$TMP/wrk.txt"
        stop_all
        rps=$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk.txt")
        RPS[$s]+="$rps "
        P99[$s]+="$(awk '$1 == "99%" {print $2}' "$TMP/wrk.txt") "
        log "round $round $s: $rps req/s"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${RPS[nginx-portico]:-}" | median)
printf '%-15s %12s %8s  %s\n' setup "req/s" ratio "p99 per round"
for s in "${LIST[@]}"; do
    [[ -n ${RPS[$s]:-} ]] || { printf '%-15s %12s\n' "$s" "(skipped)"; continue; }
    r=$(echo "${RPS[$s]}" | median)
    p=$(echo "${P99[$s]}" | tr -s ' ' ',' | sed 's/,$//')
    ratio=$([[ -n $base ]] && awk -v a="$r" -v b="$base" 'BEGIN {printf "%.2f", a / b}' || echo -)
    printf '%-15s %12s %8s  %s\n' "$s" "$r" "$ratio" "$p"
done
