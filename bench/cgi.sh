#!/usr/bin/env bash
# CGI: one process per request, measured. The same hello app as a Python CGI
# script under portico (--cgi) and under nginx + fcgiwrap (Debian's packages),
# alternated, plus the same app as a WSGI callable under portico (one worker,
# one Python thread: the interpreter stays up between requests). A second
# case runs the app as a /bin/sh script: a cheaper process, so the gateways'
# own cost shows more.
#
#   bash bench/cgi.sh            # from the repository root
#
# Knobs (environment):
#   DURATION=5      seconds per wrk run
#   ROUNDS=3        rounds, servers alternated; figures are medians of the rounds
#   CONNECTIONS=16  wrk connections (-c); wrk runs one thread (-t1)
#   PYTHON=/usr/bin/python3   interpreter in the script's shebang (the same
#                   file runs under both servers)
#   CASES="py sh"   which scripts: hello.py and/or hello.sh
#   WSGI=1          with the py case, also run hello as WSGI under portico
#                   (`portico hello:application`, after the two CGI servers
#                   each round); WSGI=0 skips it
#   NO_BUILD=1      skip `cargo build --release`
#   KEEP=1          keep the temp directory (configs, logs)
#
# Needs root only to install missing packages (nginx-light, fcgiwrap, wrk,
# curl). nginx and fcgiwrap run from files generated in the temp directory;
# nothing under /etc is read or written.
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16}
PYTHON=${PYTHON:-/usr/bin/python3}
CASES=${CASES:-py sh}
WSGI=${WSGI:-1}
[[ " $CASES " == *" py "* ]] || WSGI=0
NO_BUILD=${NO_BUILD:-}
KEEP=${KEEP:-}

. "$(dirname "$0")/lib.sh"

[[ -f Cargo.toml && -d src ]] || die "run from the repository root (bash bench/cgi.sh)"
[[ -x $PYTHON ]] || die "PYTHON=$PYTHON is not executable"

# ---------------------------------------------------------------- tools
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || { apt_install nginx-light || apt_install nginx; NGINX=/usr/sbin/nginx; }
FCGIWRAP=$(command -v fcgiwrap || echo /usr/sbin/fcgiwrap)
[[ -x $FCGIWRAP ]] || { apt_install fcgiwrap; FCGIWRAP=/usr/sbin/fcgiwrap; }
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl

build_portico

# ---------------------------------------------------------------- fixtures
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-cgi-bench.XXXXXX")
chmod 755 "$TMP"
mkdir -p "$TMP/cgi-bin" "$TMP/nginx"
cat >"$TMP/cgi-bin/hello.py" <<EOF
#!$PYTHON
import sys
body = b"Hello, world\n"
sys.stdout.buffer.write(b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
EOF
cat >"$TMP/cgi-bin/hello.sh" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world\n'
EOF
chmod 755 "$TMP/cgi-bin" "$TMP/cgi-bin/hello.py" "$TMP/cgi-bin/hello.sh"
# The same app as a WSGI callable (same 13-byte body and headers).
mkdir -p "$TMP/wsgi"
cat >"$TMP/wsgi/hello.py" <<'EOF'
BODY = b"Hello, world\n"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
EOF

PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    # Each server runs in its own session: its process group is it and its
    # children (workers, CGI processes) and nothing else.
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    if [[ -n $KEEP ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Unlike lib.sh's wait_up, checks the body: the CGI scripts must run.
wait_hello() { # NAME URL LOG
    for _ in $(seq 100); do
        [[ $(curl -s --max-time 2 "$2" || true) == "Hello, world" ]] && return 0
        sleep 0.1
    done
    cat "$3" >&2 || true
    die "$1 did not answer Hello on $2"
}

# ---------------------------------------------------------------- servers
P_PORT=$(free_port)
setsid "$PORTICO" -b "127.0.0.1:$P_PORT" -w 1 --access-log off \
    --cgi "/cgi-bin=$TMP/cgi-bin" >"$TMP/portico.log" 2>&1 &
PIDS+=($!)
P_URL=http://127.0.0.1:$P_PORT/cgi-bin

# fcgiwrap forks one CGI process per request like portico does; one fcgiwrap
# process handles one request at a time, so it gets as many as wrk has
# connections (portico runs up to cgi_max_processes = 32 at once).
setsid "$FCGIWRAP" -c "$CONNECTIONS" -s "unix:$TMP/fcgiwrap.sock" >"$TMP/fcgiwrap.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [[ -S $TMP/fcgiwrap.sock ]] && break; sleep 0.1; done
chmod 666 "$TMP/fcgiwrap.sock"

N_PORT=$(free_port)
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    proxy_temp_path $TMP/nginx/proxy;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$N_PORT;
        location /cgi-bin/ {
            fastcgi_split_path_info ^(/cgi-bin/[^/]+)(.*)\$;
            fastcgi_pass unix:$TMP/fcgiwrap.sock;
            fastcgi_param SCRIPT_FILENAME $TMP\$fastcgi_script_name;
            fastcgi_param QUERY_STRING    \$query_string;
            fastcgi_param REQUEST_METHOD  \$request_method;
            fastcgi_param CONTENT_TYPE    \$content_type;
            fastcgi_param CONTENT_LENGTH  \$content_length;
            fastcgi_param SCRIPT_NAME     \$fastcgi_script_name;
            fastcgi_param REQUEST_URI     \$request_uri;
            fastcgi_param SERVER_PROTOCOL \$server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param REMOTE_ADDR     \$remote_addr;
            fastcgi_param REMOTE_PORT     \$remote_port;
            fastcgi_param SERVER_NAME     \$server_name;
            fastcgi_param SERVER_PORT     \$server_port;
        }
    }
}
EOF
setsid "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/stdout.log" 2>&1 &
PIDS+=($!)
N_URL=http://127.0.0.1:$N_PORT/cgi-bin

# portico as the WSGI application server, one worker, one Python thread (its
# embedded CPython, not $PYTHON: the interpreter it was built against).
if [[ $WSGI == 1 ]]; then
    W_PORT=$(free_port)
    setsid "$PORTICO" hello:application --chdir "$TMP/wsgi" -b "127.0.0.1:$W_PORT" -w 1 --threads 1 \
        --access-log off >"$TMP/wsgi.log" 2>&1 &
    PIDS+=($!)
    W_URL=http://127.0.0.1:$W_PORT/
    wait_hello portico-wsgi "$W_URL" "$TMP/wsgi.log"
fi

for c in $CASES; do
    wait_hello portico "$P_URL/hello.$c" "$TMP/portico.log"
    wait_hello nginx+fcgiwrap "$N_URL/hello.$c" "$TMP/nginx/error.log"
done

# ---------------------------------------------------------------- runs
# wrk's 99% latency → milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
        else print v }'
}

declare -A RPS P99
run() { # NAME URL ROUND
    local out rps p99 errors
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency "$2")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ' || true)
    RPS[$1]+="$rps "
    P99[$1]+="$p99 "
    printf '  round %d  %-18s %10s req/s   p99 %8s ms  %s\n' "$3" "$1" "$rps" "$p99" "$errors"
}


echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $CASES; do
    [[ $c == py ]] && echo "hello.py ($("$PYTHON" -V 2>&1))" || echo "hello.sh (/bin/sh -> $(readlink -f /bin/sh))"
    for round in $(seq "$ROUNDS"); do
        # Alternate the order each round so neither server always runs first.
        if (( round % 2 )); then
            run "portico-$c" "$P_URL/hello.$c" "$round"; run "nginx-fcgiwrap-$c" "$N_URL/hello.$c" "$round"
        else
            run "nginx-fcgiwrap-$c" "$N_URL/hello.$c" "$round"; run "portico-$c" "$P_URL/hello.$c" "$round"
        fi
        if [[ $c == py && $WSGI == 1 ]]; then run portico-wsgi "$W_URL" "$round"; fi
    done
done

echo
echo "medians"
for c in $CASES; do
    for name in "portico-$c" "nginx-fcgiwrap-$c"; do
        printf '  %-18s %10s req/s   p99 %8s ms\n' "$name" "$(median ${RPS[$name]})" "$(median ${P99[$name]})"
    done
    awk -v p="$(median ${RPS[portico-$c]})" -v n="$(median ${RPS[nginx-fcgiwrap-$c]})" -v c="$c" \
        'BEGIN { printf "  ratio portico / nginx+fcgiwrap (%s): %.2f\n", c, p / n }'
done
if [[ $WSGI == 1 ]]; then
    printf '  %-18s %10s req/s   p99 %8s ms\n' portico-wsgi "$(median ${RPS[portico-wsgi]})" "$(median ${P99[portico-wsgi]})"
    awk -v w="$(median ${RPS[portico-wsgi]})" -v p="$(median ${RPS[portico-py]})" \
        'BEGIN { printf "  ratio portico WSGI / portico CGI (py): %.1f\n", w / p }'
fi
