#!/usr/bin/env bash
# Workers coming and going under load: portico vs gunicorn gthread, the
# reference for losing nothing (DESIGN.md).
#
#   bash bench/churn.sh             # from the repository root
#
# Both servers run the same hello app (bench/apps/bench_app.py) with the
# same workers and threads, one at a time, alternating, under
# `wrk -t1 -c16 --latency` (keep-alive). Cases:
#   steady     nothing happens: the baseline
#   recycle    --max-requests 200 (+ jitter 50): workers recycle constantly
#   reload     SIGHUP at 1/3 and 2/3 of the run
# Printed per case and server: requests/s, p99 latency and failed requests
# (wrk's socket errors and non-2xx answers), the median of the rounds, and
# the ratio portico/gunicorn of requests/s and of p99. The target is zero
# failed requests for portico in every case.
#
# Knobs: DURATION=15 ROUNDS=3 WORKERS=2 THREADS=4 CONNECTIONS=16
#        MAX_REQUESTS=200 CASES="steady recycle reload" VENV=bench/.venv
#        NO_BUILD=1 PORTICO=/path KEEP=1 SUMMARY=FILE
set -euo pipefail

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-4}
CONNECTIONS=${CONNECTIONS:-16}
MAX_REQUESTS=${MAX_REQUESTS:-200}
CASES=${CASES:-steady recycle reload}
VENV=${VENV:-bench/.venv}

. "$(dirname "$0")/lib.sh"

[[ -f Cargo.toml && -d bench/apps ]] || die "run from the repository root (bash bench/churn.sh)"
whole_numbers DURATION ROUNDS WORKERS THREADS CONNECTIONS MAX_REQUESTS
((DURATION >= 3 && ROUNDS >= 1 && WORKERS >= 1 && THREADS >= 1 && MAX_REQUESTS >= 1)) ||
    die "DURATION must be at least 3; ROUNDS, WORKERS, THREADS, MAX_REQUESTS at least 1"
read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do
    [[ $c =~ ^(steady|recycle|reload)$ ]] || die "unknown case '$c' (steady recycle reload)"
done
ROOT=$PWD
APPS=$ROOT/bench/apps
[[ $VENV == /* ]] || VENV=$ROOT/$VENV

command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
fi
"$VENV/bin/python" -c 'import gunicorn' 2>/dev/null || {
    log "pip install gunicorn (into $VENV)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check gunicorn
}
build_portico

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-churn.XXXXXX")
stop_servers_on_exit

declare -A URL=()
start_server() { # SERVER CASE
    local s=$1 c=$2 port logf=$TMP/$1.$2.log churn=()
    port=$(free_port)
    URL[$s]=http://127.0.0.1:$port/
    [[ $c == recycle ]] && churn=(--max-requests "$MAX_REQUESTS" --max-requests-jitter 50)
    case $s in
    portico)
        setsid "$PORTICO" bench_app:app --chdir "$APPS" -b "127.0.0.1:$port" -w "$WORKERS" \
            --threads "$THREADS" --access-log off --log-level warn "${churn[@]}" >"$logf" 2>&1 &
        ;;
    gunicorn)
        setsid "$VENV/bin/gunicorn" -w "$WORKERS" -k gthread --threads "$THREADS" --chdir "$APPS" \
            -b "127.0.0.1:$port" --log-level warning "${churn[@]}" bench_app:app >"$logf" 2>&1 &
        ;;
    esac
    PID[$s]=$!
    wait_up "$s" "${PID[$s]}" "${URL[$s]}" "$logf"
    # The first request proves the app answers; workers may still be importing.
    sleep 1
}

# One wrk run; for the reload case, SIGHUP the master at 1/3 and 2/3.
measure() { # SERVER CASE OUT
    local s=$1 c=$2 out=$3 hup=()
    if [[ $c == reload ]]; then
        (
            sleep $((DURATION / 3)); kill -HUP "${PID[$s]}"
            sleep $((DURATION / 3)); kill -HUP "${PID[$s]}"
        ) &
        hup=($!)
    fi
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION"s --timeout 10s --latency "${URL[$s]}" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed against $s ($c)"; }
    [[ ${#hup[@]} -eq 0 ]] || wait "${hup[0]}" || true
}

declare -A RPS P99 FAILED
log "wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS round(s), workers=$WORKERS threads=$THREADS"
for c in "${CASE_LIST[@]}"; do
    declare -A series_rps=() series_p99=() series_failed=()
    for r in $(seq "$ROUNDS"); do
        order=(portico gunicorn)
        ((r % 2 == 0)) && order=(gunicorn portico)
        for s in "${order[@]}"; do
            start_server "$s" "$c"
            measure "$s" "$c" "$TMP/$s.$c.$r.txt"
            stop_server "$s"
            read -r rps _ p99 non2xx errors readerrors _ < <(parse_wrk "$TMP/$s.$c.$r.txt")
            series_rps[$s]+="$rps "
            series_p99[$s]+="$p99 "
            series_failed[$s]+="$((non2xx + errors + readerrors)) "
            log "$c round $r $s: $rps req/s, p99 $p99 ms, failed $((non2xx + errors + readerrors))"
        done
    done
    for s in portico gunicorn; do
        # shellcheck disable=SC2086
        RPS[$s.$c]=$(median ${series_rps[$s]})
        # shellcheck disable=SC2086
        P99[$s.$c]=$(median ${series_p99[$s]})
        FAILED[$s.$c]=${series_failed[$s]}
    done
    unset series_rps series_p99 series_failed
done

printf '\n%-8s %-9s %10s %9s  %s\n' case server req/s p99_ms "failed per round"
for c in "${CASE_LIST[@]}"; do
    for s in portico gunicorn; do
        printf '%-8s %-9s %10.0f %9.2f  %s\n' "$c" "$s" "${RPS[$s.$c]}" "${P99[$s.$c]}" "${FAILED[$s.$c]}"
    done
    ratio_rps=$(awk -v a="${RPS[portico.$c]}" -v b="${RPS[gunicorn.$c]}" 'BEGIN { printf "%.2f", a / b }')
    ratio_p99=$(awk -v a="${P99[portico.$c]}" -v b="${P99[gunicorn.$c]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-8s %-9s %10s %9s\n' "$c" "ratio" "${ratio_rps}x" "${ratio_p99}x"
    summary_row churn "$c" "$WORKERS" gunicorn req_per_s "${RPS[portico.$c]}" "${RPS[gunicorn.$c]}"
    summary_row churn "$c" "$WORKERS" gunicorn p99_ms "${P99[portico.$c]}" "${P99[gunicorn.$c]}"
done
lost=0
for c in "${CASE_LIST[@]}"; do
    for n in ${FAILED[portico.$c]}; do lost=$((lost + n)); done
done
echo "portico failed requests in all: $lost"
