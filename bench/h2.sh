#!/usr/bin/env bash
# HTTP/2 over TLS, side by side: portico vs nginx on a static file, portico
# vs granian on the WSGI hello app.
#
#   bash bench/h2.sh                # from the repository root
#
# Cases:
#   static  a 13-byte file (hello.txt): portico --static vs nginx
#           (listen ... ssl http2)
#   wsgi    bench/apps/bench_app.py:app ("Hello, world!", 13 B): portico vs
#           granian --interface wsgi with --ssl-certificate/--ssl-keyfile
# Both servers get the same self-signed ECDSA P-256 certificate (openssl,
# written to the temp directory); the client is h2load (nghttp2-client).
#
# Knobs (environment):
#   DURATION=5      seconds per h2load run (-D)
#   ROUNDS=3        rounds; each figure is the median of the rounds
#   CLIENTS=4       h2load connections (-c)
#   STREAMS=16      concurrent streams per connection (-m): 64 in flight
#   WORKERS=1       worker processes, the same for every server
#   THREADS=1       Python threads per worker (portico --threads, granian
#                   --blocking-threads)
#   WARMUP=1        seconds of unmeasured load before each server's first run
#                   of a case (0 = none)
#   CASES="static wsgi"   a subset, in this order
#   GRANIAN_HTTP=auto     granian --http (auto: ALPN h2 + http/1.1 like
#                   portico and nginx; 2: h2 only)
#   VENV=bench/.venv  granian's virtualenv (created and filled from PyPI when
#                   granian is missing; portico gets it as --venv)
#   PIN=            optional "SERVER_CPUS:CLIENT_CPUS" (taskset lists, e.g. "1:0")
#   PORTICO=        a portico binary to use as it is (no build)
#   NO_BUILD=1      skip `cargo build --release` (use the existing binary)
#   KEEP=1          keep the temp directory (configs, logs, h2load outputs)
#   SUMMARY=FILE    also append the medians as tab-separated rows to FILE
#                   (see summary_row in bench/lib.sh; bench/all.sh uses it)
#
# Needs root only to install missing Debian packages (nghttp2-client, nginx,
# openssl, curl, python3-venv). nginx runs from a config generated in the temp
# directory; nothing under /etc is read or written.
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-4}
STREAMS=${STREAMS:-16}
WORKERS=${WORKERS:-1}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-1}
CASES=${CASES:-static wsgi}
GRANIAN_HTTP=${GRANIAN_HTTP:-auto}
VENV=${VENV:-bench/.venv}
PIN=${PIN:-}
KEEP=${KEEP:-}

. "$(dirname "$0")/lib.sh"

[[ -f Cargo.toml && -d src && -d bench/apps ]] || die "run from the repository root (bash bench/h2.sh)"
whole_numbers DURATION ROUNDS CLIENTS STREAMS WORKERS THREADS WARMUP
(( ROUNDS >= 1 && DURATION >= 1 && CLIENTS >= 1 && STREAMS >= 1 && WORKERS >= 1 && THREADS >= 1 )) ||
    die "ROUNDS, DURATION, CLIENTS, STREAMS, WORKERS and THREADS must be at least 1"
[[ $GRANIAN_HTTP =~ ^(auto|2)$ ]] || die "GRANIAN_HTTP must be auto or 2"
read -r -a CASE_LIST <<<"$CASES"
((${#CASE_LIST[@]})) || die "CASES must not be empty"
for c in "${CASE_LIST[@]}"; do
    [[ $c =~ ^(static|wsgi)$ ]] || die "unknown case '$c' (static wsgi)"
done

ROOT=$PWD
APPS=$ROOT/bench/apps
[[ $VENV == /* ]] || VENV=$ROOT/$VENV

# ---------------------------------------------------------------- tools
command -v h2load >/dev/null || apt_install nghttp2-client
command -v openssl >/dev/null || apt_install openssl
command -v curl >/dev/null || apt_install curl
need_nginx

TASKSET_SRV=() TASKSET_CLI=()
if [[ -n $PIN ]]; then
    [[ $PIN == *:* ]] || die "PIN must look like SERVER_CPUS:CLIENT_CPUS, e.g. 1:0"
    command -v taskset >/dev/null || apt_install util-linux
    TASKSET_SRV=(taskset -c "${PIN%%:*}")
    TASKSET_CLI=(taskset -c "${PIN##*:}")
fi

if [[ " ${CASE_LIST[*]} " == *" wsgi "* ]]; then
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
    fi
    if ! "$VENV/bin/python" -c 'import granian' 2>/dev/null; then
        log "pip install granian (into $VENV)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check granian ||
            die "pip install granian failed"
    fi
fi

build_portico

# ---------------------------------------------------------------- fixtures
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-h2-bench.XXXXXX")
# nginx workers drop to `nobody` when started as root: they must be able to
# read the files (the key is read by nginx's master, before it drops).
chmod 755 "$TMP"
DOCROOT=$TMP/www
mkdir -p "$DOCROOT" "$TMP/nginx"
printf 'Hello, world\n' >"$DOCROOT/hello.txt"        # 13 bytes
printf 'Hello, world!' >"$TMP/hello.body"            # the app's 13 bytes
chmod 755 "$DOCROOT"
chmod 644 "$DOCROOT/hello.txt"
# PKCS#8 (granian reads no other key format), ECDSA P-256: the handshake is
# paid CLIENTS times per run, so the key type hardly matters.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1 || die "openssl could not make a certificate"

declare -A URL=() EXPECT=()
# Each case's two servers; the first is portico.
declare -A PEER=([static]=nginx [wsgi]=granian)

stop_servers_on_exit

start_server() { # SERVER CASE
    local s=$1 c=$2 port logf=$TMP/$1.$2.log
    port=$(free_port)
    case $s.$c in
    portico.static)
        URL[$s]=https://127.0.0.1:$port/hello.txt
        EXPECT[$s]=$DOCROOT/hello.txt
        setsid "${TASKSET_SRV[@]}" "$PORTICO" -b "127.0.0.1:$port" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
            --static "/=$DOCROOT" -w "$WORKERS" --access-log off --log-level warn --graceful-timeout 1 >"$logf" 2>&1 &
        ;;
    portico.wsgi)
        URL[$s]=https://127.0.0.1:$port/
        EXPECT[$s]=$TMP/hello.body
        setsid "${TASKSET_SRV[@]}" "$PORTICO" bench_app:app --chdir "$APPS" --venv "$VENV" \
            -b "127.0.0.1:$port" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
            -w "$WORKERS" --threads "$THREADS" --access-log off --log-level warn --graceful-timeout 1 >"$logf" 2>&1 &
        ;;
    nginx.static)
        URL[$s]=https://127.0.0.1:$port/hello.txt
        EXPECT[$s]=$DOCROOT/hello.txt
        # static.sh's settings, plus TLS and h2. keepalive_requests also caps
        # the requests of an h2 connection in nginx 1.19.7+: set high, so
        # nginx does not close h2load's connections mid-run.
        # nginx 1.22's default leaves TLS 1.3 out; portico and granian
        # negotiate 1.3, so nginx gets it too.
        nginx_static_conf "$WORKERS" 4096 "127.0.0.1:$port ssl http2" "" \
            "keepalive_requests 100000000;" \
            "ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;"
        start_nginx "$logf" "${TASKSET_SRV[@]}"
        logf=$TMP/nginx/error.log
        ;;
    granian.wsgi)
        URL[$s]=https://127.0.0.1:$port/
        EXPECT[$s]=$TMP/hello.body
        setsid "${TASKSET_SRV[@]}" "$VENV/bin/granian" --interface wsgi --workers "$WORKERS" \
            --blocking-threads "$THREADS" --http "$GRANIAN_HTTP" --no-ws --no-access-log --log-level warning \
            --ssl-certificate "$TMP/cert.pem" --ssl-keyfile "$TMP/key.pem" \
            --working-dir "$APPS" --host 127.0.0.1 --port "$port" bench_app:app >"$logf" 2>&1 &
        ;;
    *) die "no $s server for case $c" ;;
    esac
    PID[$s]=$!
    # These servers speak TLS only, with a test certificate.
    wait_up "$s" "${PID[$s]}" "${URL[$s]}" "$logf" -k
}

# ---------------------------------------------------------------- sanity check
check_server() { # SERVER CASE
    local s=$1 c=$2 got want
    got=$(curl -sk --http2 -o "$TMP/check.body" -w '%{http_code} %{size_download} %{http_version}' "${URL[$s]}") ||
        die "$s ($c): request failed"
    want="200 $(stat -c %s "${EXPECT[$s]}") 2"
    [[ $got == "$want" ]] ||
        die "$s ($c): answered '$got' (status bytes HTTP-version), expected '$want'; log: $TMP/$s.$c.log"
    cmp -s "$TMP/check.body" "${EXPECT[$s]}" || die "$s ($c): body differs from the expected one"
    rm -f "$TMP/check.body"
}

# ---------------------------------------------------------------- measuring
# h2load's report -> "rps succeeded failed non2xx mean_ms protocol tls-version/cipher"
parse_h2load() { # FILE
    awk '
        function ms(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000; if (u == "ms") return n
            if (u == "s") return n * 1000; return -1 }
        /^finished in /              { rps = $4 }
        /^requests: /                { ok = $8; fail = $10 + $12 + $14 }
        /^status codes: /            { bad = $5 + $7 + $9 }
        /^time for request:/         { mean = ms($6) }
        /^Application protocol:/     { proto = $3 }
        /^TLS Protocol:/             { tls = $3 }
        /^Cipher:/                   { cipher = $2 }
        END { if (rps == "") exit 1
              printf "%s %d %d %d %.3f %s %s/%s\n", rps, ok, fail, bad, mean, proto, tls, cipher }
    ' "$1"
}

# 99th percentile (ms) of the per-request durations h2load logged (µs, 3rd column).
p99_of_log() { # FILE
    cut -f3 "$1" | sort -n | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print 0; exit }
        i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f\n", a[i] / 1000 }'
}

run_h2load() { # SERVER SECONDS OUT [LOGFILE]
    local log=()
    [[ -n ${4:-} ]] && log=(--log-file="$4")
    "${TASKSET_CLI[@]}" h2load -c"$CLIENTS" -m"$STREAMS" -D "$2" "${log[@]}" "${URL[$1]}" >"$3" 2>&1 ||
        { cat "$3" >&2; die "h2load failed against $1"; }
}

declare -A RPS P99 MEAN CPU TLS
WARNINGS=()
ROUND_LINES=()
log "h2load -c$CLIENTS -m$STREAMS -D $DURATION (TLS, h2), $ROUNDS round(s), workers=$WORKERS threads=$THREADS"
for c in "${CASE_LIST[@]}"; do
    servers=(portico "${PEER[$c]}")
    log "case $c: starting ${servers[*]}"
    for s in "${servers[@]}"; do start_server "$s" "$c"; done
    for s in "${servers[@]}"; do check_server "$s" "$c"; done
    for r in $(seq "$ROUNDS"); do
        # Alternate who goes first, so a drift in the machine's load is shared.
        if (( r % 2 )); then order=("${servers[@]}"); else order=("${servers[1]}" "${servers[0]}"); fi
        for s in "${order[@]}"; do
            if (( r == 1 && WARMUP > 0 )); then run_h2load "$s" "$WARMUP" "$TMP/warmup.out"; fi
            out=$TMP/h2load.$s.$c.$r
            t0=$(session_ticks "${PID[$s]}")
            run_h2load "$s" "$DURATION" "$out" "$out.log"
            t1=$(session_ticks "${PID[$s]}")
            read -r rps ok fail bad mean proto cipher < <(parse_h2load "$out") ||
                { cat "$out" >&2; die "cannot parse h2load output"; }
            [[ $proto == h2 ]] || die "$s ($c): h2load negotiated '$proto', not h2"
            p99=$(p99_of_log "$out.log")
            rm -f "$out.log"
            cpu=$(cpu_us_per_request $((t1 - t0)) "$ok")
            (( fail == 0 )) || WARNINGS+=("$s $c round $r: $fail failed/errored/timed-out requests")
            (( bad == 0 )) || WARNINGS+=("$s $c round $r: $bad non-2xx responses")
            RPS[$s.$c]+="$rps " P99[$s.$c]+="$p99 " MEAN[$s.$c]+="$mean " CPU[$s.$c]+="$cpu "
            TLS[$s.$c]=$cipher
            line=$(printf 'round %d  %-8s %-7s %9.0f req/s  mean %6.2f ms  p99 %6.2f ms  server CPU %7.2f us/req' \
                "$r" "$s" "$c" "$rps" "$mean" "$p99" "$cpu")
            ROUND_LINES+=("$line")
            echo "   $line" >&2
        done
    done
    for s in "${servers[@]}"; do stop_server "$s"; done
done

# ---------------------------------------------------------------- table
pipver() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo '?'; }
echo
echo "HTTP/2 over TLS: h2load -c$CLIENTS -m$STREAMS -D $DURATION ($((CLIENTS * STREAMS)) streams in flight), workers=$WORKERS threads=$THREADS, median of $ROUNDS round(s)"
echo "portico $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), granian $(pipver granian) (--http $GRANIAN_HTTP), $(h2load --version 2>&1 | head -1)"
echo "(ratio = portico/peer: req/s above 1 and p99 below 1 favour portico; p99 from h2load's per-request log;"
echo " CPU us/req: user + system time of all the server's processes during the run, per request)"
echo
echo "| case | server | req/s | mean ms | p99 ms | CPU us/req | TLS | req/s ratio | p99 ratio | CPU ratio |"
echo "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"
for c in "${CASE_LIST[@]}"; do
    peer=${PEER[$c]}
    # shellcheck disable=SC2086  # word splitting of the per-round lists is intended
    {
        pr=$(median ${RPS[portico.$c]}) pp=$(median ${P99[portico.$c]}) pc=$(median ${CPU[portico.$c]})
    }
    for s in portico "$peer"; do
        # shellcheck disable=SC2086
        { r=$(median ${RPS[$s.$c]}); m=$(median ${MEAN[$s.$c]}); p=$(median ${P99[$s.$c]}); u=$(median ${CPU[$s.$c]}); }
        awk -v c="$c" -v s="$s" -v r="$r" -v m="$m" -v p="$p" -v u="$u" -v t="${TLS[$s.$c]}" \
            -v pr="$pr" -v pp="$pp" -v pc="$pc" '
            BEGIN {
                peer = (s != "portico")
                rr = (peer && r > 0) ? sprintf("**%.2f**", pr / r) : ""
                pq = (peer && p > 0) ? sprintf("%.2f", pp / p) : ""
                cq = (peer && u > 0) ? sprintf("%.2f", pc / u) : ""
                printf "| %s | %s | %.0f | %.2f | %.2f | %.1f | %s | %s | %s | %s |\n", c, s, r, m, p, u, t, rr, pq, cq
            }'
        if [[ $s != portico ]]; then
            summary_row h2 "$c" "$WORKERS" "$s" req/s "$pr" "$r"
            summary_row h2 "$c" "$WORKERS" "$s" p99_ms "$pp" "$p"
            summary_row h2 "$c" "$WORKERS" "$s" cpu_us "$pc" "$u"
        fi
    done
done
echo
echo "Rounds:"
printf '  %s\n' "${ROUND_LINES[@]}"
if ((${#WARNINGS[@]})); then
    echo
    printf 'WARNING: %s\n' "${WARNINGS[@]}"
fi
