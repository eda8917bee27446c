#!/usr/bin/env bash
# Memory, side by side: what one idle worker costs, and what 10,000 idle
# keep-alive connections add to it.
#
#   bash bench/memory.sh            # from the repository root
#
# Part 1, idle worker. Each server starts with one worker (and one Python
# thread), gets WARM_REQUESTS sequential keep-alive GETs, is left idle for
# IDLE seconds, then its processes' memory is read from /proc:
#   wsgi    the hello app (bench/apps/bench_app.py:app): portico, granian,
#           gunicorn (gthread), uWSGI
#   static  a 13-byte file: portico --static, nginx
# Master and workers are reported apart: VmRSS (status) and USS (private
# pages, smaps_rollup Private_Clean + Private_Dirty: what the process alone
# holds). For a server started with children (portico's master, granian's
# main process, gunicorn's arbiter, nginx's master) the children are the
# workers; uWSGI without --master is one process, its own worker.
#
# Part 2, idle connections. One worker of each server gets CONNS keep-alive
# connections from bench/hold_conns.py (each sends one GET, reads the answer,
# and stays open): the worker's RSS before, while they are held, and after
# they are closed; whether a new request is still answered meanwhile.
#   static  portico vs nginx (13-byte file)
#   wsgi    portico vs granian (hello app)
# portico runs with --max-connections CONNS+100 (its default is 10000 per
# worker) and --keepalive-timeout 600, nginx with worker_connections and
# worker_rlimit_nofile above CONNS, granian with --backpressure CONNS+100 (its
# default, 1024, leaves the other connections unanswered). The client gives
# up on connections not answered within 60 s (they count as not held).
#
# Knobs (environment):
#   WARM_REQUESTS=500   warm-up requests before the idle reading
#   IDLE=2          seconds idle before reading the memory
#   CONNS=10000     connections held in part 2 (0 = skip part 2)
#   SETTLE=2        seconds between the last connection and the reading
#   IDLE_SERVERS="portico granian gunicorn uwsgi"   part 1's WSGI servers
#   PARTS="idle conns"  a subset
#   VENV=bench/.venv    the peers' virtualenv (created and filled from PyPI
#                   when a package is missing; portico gets it as --venv)
#   PORTICO=        a portico binary to use as it is (no build)
#   NO_BUILD=1      skip `cargo build --release`
#   KEEP=1          keep the temp directory (logs, configs)
#   SUMMARY=FILE    also append the figures as tab-separated rows to FILE
#
# Raises the open-files limit to what CONNS needs (needs a hard limit of
# CONNS + a few hundred). Needs root only to install missing Debian packages
# (nginx, curl, python3-venv).
set -euo pipefail

WARM_REQUESTS=${WARM_REQUESTS:-500}
IDLE=${IDLE:-2}
CONNS=${CONNS:-10000}
SETTLE=${SETTLE:-2}
IDLE_SERVERS=${IDLE_SERVERS:-portico granian gunicorn uwsgi}
PARTS=${PARTS:-idle conns}
VENV=${VENV:-bench/.venv}
KEEP=${KEEP:-}

. "$(dirname "$0")/lib.sh"

[[ -f Cargo.toml && -d src && -d bench/apps ]] || die "run from the repository root (bash bench/memory.sh)"
whole_numbers WARM_REQUESTS IDLE CONNS SETTLE
read -r -a IDLE_LIST <<<"$IDLE_SERVERS"
read -r -a PART_LIST <<<"$PARTS"
for s in "${IDLE_LIST[@]}"; do
    [[ $s =~ ^(portico|granian|gunicorn|uwsgi)$ ]] || die "unknown server '$s' (portico granian gunicorn uwsgi)"
done
for p in "${PART_LIST[@]}"; do
    [[ $p =~ ^(idle|conns)$ ]] || die "unknown part '$p' (idle conns)"
done
want_part() { [[ " ${PART_LIST[*]} " == *" $1 "* ]]; }
((CONNS > 0)) || PART_LIST=("${PART_LIST[@]/conns/}")

ROOT=$PWD
APPS=$ROOT/bench/apps
HOLD=$ROOT/bench/hold_conns.py
[[ $VENV == /* ]] || VENV=$ROOT/$VENV

# ---------------------------------------------------------------- tools
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || die "python3 not found"
need_nginx

if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
fi
if ! "$VENV/bin/python" -c 'import granian, gunicorn' 2>/dev/null || [[ ! -x $VENV/bin/uwsgi ]]; then
    log "pip install granian gunicorn uwsgi (into $VENV)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check granian gunicorn uwsgi ||
        die "pip install failed (uWSGI builds from source: it needs a C compiler and python3-dev)"
fi

build_portico

# Every server and the client inherit this limit: CONNS sockets each, plus
# room for the listener, logs and Python's own files.
if want_part conns; then
    need=$((CONNS + 500))
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard < need)); then
        die "open-files hard limit is $hard; CONNS=$CONNS needs $need (lower CONNS or raise the limit)"
    fi
    if [[ $(ulimit -Sn) != unlimited ]] && (($(ulimit -Sn) < need)); then ulimit -n "$need"; fi
fi
NOFILE=$(ulimit -n)

# ---------------------------------------------------------------- fixtures
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-memory-bench.XXXXXX")
chmod 755 "$TMP"   # nginx's workers (user nobody when run as root) read the docroot
DOCROOT=$TMP/www
mkdir -p "$DOCROOT" "$TMP/nginx"
printf 'Hello, world\n' >"$DOCROOT/hello.txt"
chmod 755 "$DOCROOT"
chmod 644 "$DOCROOT/hello.txt"

# Sends N sequential GETs on a keep-alive connection; each must be a 200.
# (uWSGI's --http-socket closes after every response: reconnect then.)
cat >"$TMP/warm.py" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for _ in range(n):
    for attempt in (1, 2):
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            break
        except (http.client.RemoteDisconnected, ConnectionError):
            c.close()
            if attempt == 2:
                raise
    assert r.status == 200, r.status
c.close()
PY

declare -A URL=() PORT=() URLPATH=()
CLIENT_PID=''
stop_client() {
    [[ -n $CLIENT_PID ]] || return 0
    kill -TERM "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=''
}
cleanup_extra() { stop_client; }
stop_servers_on_exit

# Starts SERVER for CASE (wsgi: the hello app; static: hello.txt), one worker.
start_server() { # SERVER CASE
    local s=$1 c=$2 port logf=$TMP/$1.$2.log path=/
    port=$(free_port)
    [[ $c == static ]] && path=/hello.txt
    case $s.$c in
    portico.wsgi)
        setsid "$PORTICO" bench_app:app --chdir "$APPS" --venv "$VENV" -b "127.0.0.1:$port" -w 1 --threads 1 \
            --max-connections $((CONNS + 100)) --keepalive-timeout 600 \
            --access-log off --log-level warn --graceful-timeout 1 >"$logf" 2>&1 &
        ;;
    portico.static)
        setsid "$PORTICO" --static "/=$DOCROOT" -b "127.0.0.1:$port" -w 1 \
            --max-connections $((CONNS + 100)) --keepalive-timeout 600 \
            --access-log off --log-level warn --graceful-timeout 1 >"$logf" 2>&1 &
        ;;
    granian.wsgi)
        # granian's --backpressure (default: backlog/workers = 1024) caps the
        # connections a worker serves at once; the rest wait unanswered.
        setsid "$VENV/bin/granian" --interface wsgi --workers 1 --blocking-threads 1 --http 1 --no-ws \
            --backpressure $((CONNS + 100)) --no-access-log --log-level warning --working-dir "$APPS" --host 127.0.0.1 --port "$port" \
            bench_app:app >"$logf" 2>&1 &
        ;;
    gunicorn.wsgi)
        setsid "$VENV/bin/gunicorn" -w 1 -k gthread --threads 1 --chdir "$APPS" -b "127.0.0.1:$port" \
            --log-level warning bench_app:app >"$logf" 2>&1 &
        ;;
    uwsgi.wsgi)
        setsid "$VENV/bin/uwsgi" --http-socket "127.0.0.1:$port" --http-keepalive --processes 1 \
            --disable-logging --die-on-term --need-app --home "$VENV" --chdir "$APPS" \
            --module bench_app:app >"$logf" 2>&1 &
        ;;
    nginx.static)
        local conns=$((CONNS + 100))
        ((conns >= 1024)) || conns=1024
        nginx_static_conf 1 "$conns" "127.0.0.1:$port" "worker_rlimit_nofile $NOFILE;" \
            "keepalive_timeout 600s; keepalive_requests 100000;" ""
        start_nginx "$logf"
        ;;
    *) die "no $s server for case $c" ;;
    esac
    PID[$s]=$!
    PORT[$s]=$port URLPATH[$s]=$path URL[$s]=http://127.0.0.1:$port$path
    wait_up "$s" "${PID[$s]}" "${URL[$s]}" "$logf"
    "$VENV/bin/python" "$TMP/warm.py" "$port" "$path" "$WARM_REQUESTS" ||
        die "$s ($c): warm-up requests failed; log: $logf"
}

# ---------------------------------------------------------------- reading
# KiB of one process: "rss uss" (uss = Private_Clean + Private_Dirty).
proc_mem() { # PID
    local rss uss
    rss=$(awk '/^VmRSS:/ { print $2; exit }' "/proc/$1/status" 2>/dev/null || echo 0)
    uss=$(awk '/^Private_(Clean|Dirty):/ { s += $2 } END { print s + 0 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0)
    echo "${rss:-0} ${uss:-0}"
}
# A server's memory in KiB: "master_rss worker_rss worker_uss workers".
# Workers are the leader's descendants; with none, the leader is the worker.
server_mem() { # SERVER
    local leader=${PID[$1]} p n=0 mr=0 lu=0 wr=0 wu=0 r u
    for p in $(pgrep -s "$leader"); do
        read -r r u < <(proc_mem "$p")
        if [[ $p == "$leader" ]]; then mr=$r; lu=$u; else wr=$((wr + r)); wu=$((wu + u)); n=$((n + 1)); fi
    done
    if ((n == 0)); then wr=$mr wu=$lu mr=0 n=1; fi
    echo "$mr $wr $wu $n"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------- part 1
IDLE_ROWS=()
declare -A WRSS=()
if want_part idle; then
    for c in wsgi static; do
        if [[ $c == wsgi ]]; then servers=("${IDLE_LIST[@]}"); else servers=(portico nginx); fi
        for s in "${servers[@]}"; do
            log "idle $c: $s (1 worker, $WARM_REQUESTS warm-up requests, ${IDLE}s idle)"
            start_server "$s" "$c"
            sleep "$IDLE"
            read -r mr wr wu n < <(server_mem "$s")
            stop_server "$s"
            WRSS[$s.$c]=$wr
            IDLE_ROWS+=("$c $s $mr $wr $wu $n")
        done
    done
fi

# ---------------------------------------------------------------- part 2
CONN_ROWS=()
declare -A GROWTH=() HELD=()
if want_part conns; then
    for c in static wsgi; do
        if [[ $c == wsgi ]]; then servers=(portico granian); else servers=(portico nginx); fi
        for s in "${servers[@]}"; do
            log "$CONNS idle connections, $c: $s"
            start_server "$s" "$c"
            sleep "$IDLE"
            read -r _ before _ _ < <(server_mem "$s")
            out=$TMP/hold.$s.$c
            python3 "$HOLD" 127.0.0.1 "${PORT[$s]}" "${URLPATH[$s]}" "$CONNS" 200 60 >"$out" 2>&1 &
            CLIENT_PID=$!
            for _ in $(seq 1200); do
                grep -q '^READY' "$out" 2>/dev/null && break
                kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$out" >&2; die "the connection client exited"; }
                sleep 0.1
            done
            ready=$(grep '^READY' "$out") || die "$s ($c): the connection client did not report within 120 s"
            ok=$(sed -E 's/.* ok=([0-9]+).*/\1/' <<<"$ready")
            secs=$(sed -E 's/.* seconds=([0-9.]+).*/\1/' <<<"$ready")
            sleep "$SETTLE"
            read -r _ during _ _ < <(server_mem "$s")
            # A new client while the connections are held.
            if code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "${URL[$s]}"); then :; else code=none; fi
            stop_client
            sleep "$SETTLE"
            read -r _ after _ _ < <(server_mem "$s")
            stop_server "$s"
            GROWTH[$s.$c]=$((during - before)) HELD[$s.$c]=$ok
            CONN_ROWS+=("$c $s $ok $secs $before $during $after $code")
            [[ $ready == *failed=0* ]] || log "$s ($c): $ready"
        done
    done
fi

# ---------------------------------------------------------------- tables
pipver() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo '?'; }
echo
echo "Memory: portico $(git rev-parse --short HEAD 2>/dev/null || echo '?'), granian $(pipver granian), gunicorn $(pipver gunicorn), uWSGI $(pipver uwsgi), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
if want_part idle; then
    echo
    echo "Idle worker: 1 worker, 1 thread, after $WARM_REQUESTS sequential keep-alive requests and ${IDLE}s idle."
    echo "(RSS: VmRSS; USS: private pages only; ratio = portico worker RSS / peer worker RSS, below 1 favours portico)"
    echo
    echo "| case | server | master RSS MiB | worker RSS MiB | worker USS MiB | worker RSS ratio |"
    echo "|---|---|---:|---:|---:|---:|"
    for row in "${IDLE_ROWS[@]}"; do
        read -r c s mr wr wu n <<<"$row"
        ratio=''
        if [[ $s != portico && -n ${WRSS[portico.$c]:-} ]]; then
            ratio=$(awk -v a="${WRSS[portico.$c]}" -v b="$wr" 'BEGIN { printf "**%.2f**", a / b }')
            summary_row memory "idle-$c" 1 "$s" worker_rss_mib "$(mib "${WRSS[portico.$c]}")" "$(mib "$wr")"
        fi
        master=$(mib "$mr"); [[ $mr == 0 ]] && master='-'
        echo "| $c | $s | $master | $(mib "$wr") | $(mib "$wu") | $ratio |"
    done
fi
if want_part conns; then
    echo
    echo "$CONNS idle keep-alive connections on one worker: each sent one GET and stays open (bench/hold_conns.py)."
    echo "(worker RSS before, while they are held (after ${SETTLE}s), and ${SETTLE}s after they closed; new request: a fresh curl's status while held)"
    echo
    echo "| case | server | held | open s | RSS before MiB | RSS held MiB | growth MiB | KiB per conn | RSS after close MiB | new request |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for row in "${CONN_ROWS[@]}"; do
        read -r c s ok secs before during after code <<<"$row"
        growth=$((during - before))
        per=$(awk -v g="$growth" -v n="$ok" 'BEGIN { printf "%.1f", (n > 0 ? g / n : 0) }')
        echo "| $c | $s | $ok | $secs | $(mib "$before") | $(mib "$during") | **$(mib "$growth")** | $per | $(mib "$after") | $code |"
    done
    for c in static wsgi; do
        if [[ $c == wsgi ]]; then peer=granian; else peer=nginx; fi
        [[ -n ${GROWTH[portico.$c]:-} ]] || continue
        pg=''
        [[ -n ${GROWTH[$peer.$c]:-} ]] && pg=$(mib "${GROWTH[$peer.$c]}")
        summary_row memory "conns-$c" 1 "$peer" growth_mib "$(mib "${GROWTH[portico.$c]}")" "$pg"
        summary_row memory "conns-$c" 1 requested held "${HELD[portico.$c]}" "$CONNS"
    done
fi
