# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts (sourced, not run). Each script
# runs from the repository root.

die() { echo "${0##*/}: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# Fails unless each named variable holds a whole number.
whole_numbers() { # VAR...
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
    done
}

# Installs Debian packages when a tool is missing (needs root).
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "missing $*; install it (apt-get install $*) or run as root"
    command -v apt-get >/dev/null || die "missing $* and no apt-get to install it"
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends "$@" >/dev/null
    }
}

# Builds the release binary unless NO_BUILD is set; sets PORTICO. A binary
# given as PORTICO=/path/to/portico in the environment is used as it is (no
# build); CARGO_TARGET_DIR is honoured for where the build lands.
build_portico() {
    if [[ -n ${PORTICO:-} ]]; then
        [[ $PORTICO == /* ]] || PORTICO=$PWD/$PORTICO
        [[ -x $PORTICO ]] || die "PORTICO=$PORTICO is not an executable"
        return 0
    fi
    if [[ -z ${NO_BUILD:-} ]]; then
        log "cargo build --release"
        cargo build --release --quiet
    fi
    local target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$PWD/$target
    PORTICO=$target/release/portico
    [[ -x $PORTICO ]] || die "$PORTICO not found (build it, or unset NO_BUILD)"
}

# A free TCP port on 127.0.0.1, never the same twice in one run. Picked
# below the kernel's ephemeral range (32768+ by default), where client
# sockets (wrk's, the memory client's 10,000) take their local ports, and
# unused in any state (a port still held by a closed connection's TIME-WAIT
# makes a bind without SO_REUSEADDR fail).
declare -A TAKEN=()
free_port() {
    local port lo=20000 hi
    hi=$(awk '{ print $1 - 1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32767)
    ((hi > lo + 1000)) || { lo=10000; hi=60000; }
    for _ in $(seq 200); do
        port=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
        [[ -n ${TAKEN[$port]:-} ]] && continue
        if ! ss -Htan "sport = :$port" 2>/dev/null | grep -q .; then
            TAKEN[$port]=1; echo "$port"; return 0
        fi
    done
    die "no free port found"
}

# Waits up to 15 s for URL to answer; fails with the server's log if the
# process died or never answered. CURL_ARGS go to curl (-k for a test
# certificate).
wait_up() { # NAME PID URL LOG [CURL_ARGS...]
    local name=$1 pid=$2 url=$3 logf=$4
    shift 4
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { cat "$logf" >&2 || true; die "$name exited at start"; }
        if curl -s "$@" -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    cat "$logf" >&2 || true
    die "$name did not answer on $url within 15 s"
}

# nginx's path, installing nginx-light (or nginx) when there is none; sets NGINX.
need_nginx() {
    local p
    for p in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
        [[ -n $p && -x $p ]] && { NGINX=$p; return 0; }
    done
    apt_install nginx-light 2>/dev/null || apt_install nginx
    NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
    [[ -x $NGINX ]] || die "nginx still not found after installing"
}

# Writes $TMP/nginx/nginx.conf for serving DOCROOT as static files, set up
# as nginx is deployed for speed (sendfile, tcp_nopush, open_file_cache, no
# access log). MAIN and HTTP are extra directives for those contexts, LISTEN
# the listen line's arguments, SERVER extra lines of the server block.
nginx_static_conf() { # WORKERS CONNECTIONS LISTEN MAIN HTTP SERVER
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $1;
$4
daemon off;
master_process on;
error_log $TMP/nginx/error.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections $2; }
http {
    types { text/plain txt; application/octet-stream bin; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000;
    access_log off;
    $5
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen $3;
        root $DOCROOT;
        $6
    }
}
EOF
}

# Checks $TMP/nginx/nginx.conf, then starts nginx on it in its own session
# (stdout and stderr to LOG), with an optional command prefix (taskset ...).
# The caller takes the pid from $!.
start_nginx() { # LOG [PREFIX...]
    local logf=$1; shift
    "$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" ||
        die "nginx rejected the generated config ($TMP/nginx/nginx.conf)"
    setsid "$@" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" >"$logf" 2>&1 &
}

# Median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# CPU time (clock ticks, user + system) of every process of session SID:
# a server started with setsid, its master and its workers.
# shellcheck disable=SC2034  # used by the scripts that source this file
CLK_TCK=$(getconf CLK_TCK)
session_ticks() { # SID
    local p t=0 stat f
    for p in $(pgrep -s "$1"); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        stat=${stat##*) }    # fields after "(comm) "; utime, stime are 12, 13
        read -r -a f <<<"$stat"
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}

# CPU µs per request from clock ticks spent over N requests ("0" for none).
cpu_us_per_request() { # TICKS REQUESTS
    awk -v d="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }'
}

# wrk --latency output -> plain numbers: requests/s, transfer in MB/s (MiB,
# as wrk prints), p99 latency in ms, non-2xx/3xx responses, socket errors
# (connect, write, timeout), read errors, requests.
parse_wrk() { # FILE -> "rps mbps p99ms non2xx errors readerrors requests"
    awk '
        function mb(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "B") return n / 1048576; if (u == "KB") return n / 1024
            if (u == "MB") return n; if (u == "GB") return n * 1024; return -1 }
        function ms(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000; if (u == "ms") return n
            if (u == "s") return n * 1000; if (u == "m") return n * 60000; return -1 }
        /^Requests\/sec:/            { rps = $2 }
        / requests in /              { n = $1 }
        /^Transfer\/sec:/            { tr = mb($2) }
        $1 == "99%"                  { p99 = ms($2) }
        /Non-2xx or 3xx responses:/  { bad = $NF }
        /Socket errors:/             { gsub(/,/, ""); err = $4 + $8 + $10; rerr = $6 }
        END { if (rps == "") exit 1
              printf "%s %.2f %.3f %d %d %d %d\n", rps, tr, p99, bad + 0, err + 0, rerr + 0, n + 0 }
    ' "$1"
}

# Machine-readable results: when SUMMARY names a file, each script appends
# one tab-separated row per figure (bench/all.sh reads them):
#   bench  case  workers  peer  metric  portico  peer_value  ratio
# ratio is portico/peer ("" when there is no peer figure).
summary_row() { # BENCH CASE WORKERS PEER METRIC PORTICO PEER_VALUE
    [[ -n ${SUMMARY:-} ]] || return 0
    local ratio=''
    if [[ -n $6 && -n $7 ]]; then
        ratio=$(awk -v a="$6" -v b="$7" 'BEGIN { if (b > 0) printf "%.3f", a / b }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$ratio" >>"$SUMMARY"
}

# Servers a script starts with setsid, by name (PID[name]=pid): each runs in
# its own session, so its process group is the server and its workers and
# nothing else.
declare -A PID=()
stop_server() { # NAME
    local pid=${PID[$1]:-}
    [[ -n $pid ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    PID[$1]=''
}

# On exit: runs the script's `cleanup_extra` if it has one, stops every
# server in PID, removes TMP unless KEEP is set, keeps the exit status.
cleanup_servers() {
    local rc=$?
    trap - EXIT INT TERM
    local s
    if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
    for s in "${!PID[@]}"; do stop_server "$s"; done
    if [[ -n ${KEEP:-} ]]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
stop_servers_on_exit() {
    trap cleanup_servers EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
