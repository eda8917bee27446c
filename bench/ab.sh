#!/usr/bin/env bash
# Two portico binaries side by side on one case: before and after a change.
# On a shared machine a few percent is below the noise of one run against a
# peer; alternating the two builds for several rounds and taking the median
# of the per-round ratios shows whether a change pays.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY      # from the repository root
#
# Each round starts OLD then NEW (`--no-master`, one process, so the CPU
# time read is the server's own), warms it up for 1 s, loads it with
# `wrk -t1 -c64` and prints both req/s, the ratio NEW/OLD, and the ratio of
# CPU time per request. Knobs: CASE=hello|flask|static|post10k|post32k (the
# WSGI hello app, Flask's hello from bench/.venv (made by bench/wsgi.sh), a
# 13-byte file, or a 10 KiB / 32 KiB POST to the WSGI echo app: under and
# past the request-buffering memory limit),
# ROUNDS=6, DURATION=4, THREADS=1 (Python threads).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[[ -f Cargo.toml && -d bench/apps ]] || die "run from the repository root"
(($# == 2)) || die "usage: bash bench/ab.sh OLD_BINARY NEW_BINARY"
for bin in "$@"; do [[ -x $bin ]] || die "$bin is not an executable"; done
command -v wrk >/dev/null || apt_install wrk
CASE=${CASE:-hello} ROUNDS=${ROUNDS:-6} DURATION=${DURATION:-4} THREADS=${THREADS:-1}
load=()
whole_numbers ROUNDS DURATION THREADS
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
case $CASE in
    hello) args=(bench_app:app --chdir bench/apps --threads "$THREADS"); path=/ ;;
    flask)
        [[ -x bench/.venv/bin/python ]] || die "no bench/.venv: run bench/wsgi.sh once to make it"
        args=(flask_app:app --chdir bench/apps --venv bench/.venv --threads "$THREADS"); path=/ ;;
    static) printf 'Hello, world!' >"$TMP/hello.txt"; args=(--static "/=$TMP"); path=/hello.txt ;;
    post10k | post32k)
        args=(bench_app:echo --chdir bench/apps --threads "$THREADS"); path=/
        load=(-s "bench/$CASE.lua") ;;
    *) die "unknown CASE '$CASE' (hello flask static post10k post32k)" ;;
esac

one_run() { # BINARY -> "rps ticks"
    local port pid t0 t1
    port=$(free_port)
    "$1" --no-master -b "127.0.0.1:$port" --access-log off "${args[@]}" >"$TMP/server.log" 2>&1 &
    pid=$!
    wait_up portico "$pid" "http://127.0.0.1:$port$path" "$TMP/server.log"
    wrk -t1 -c64 -d1s "${load[@]}" "http://127.0.0.1:$port$path" >/dev/null
    t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    wrk -t1 -c64 -d"${DURATION}s" "${load[@]}" "http://127.0.0.1:$port$path" >"$TMP/wrk.txt"
    t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    read -r rps _ _ bad _ _ _ < <(parse_wrk "$TMP/wrk.txt")
    ((bad == 0)) || die "$1 answered $bad non-2xx responses"
    echo "$rps $((t1 - t0))"
}

ratios=() cpu_ratios=()
for round in $(seq "$ROUNDS"); do
    read -r old_rps old_ticks < <(one_run "$1")
    read -r new_rps new_ticks < <(one_run "$2")
    ratio=$(awk -v a="$old_rps" -v b="$new_rps" 'BEGIN { printf "%.3f", b / a }')
    cpu=$(awk -v a="$old_rps" -v b="$new_rps" -v ta="$old_ticks" -v tb="$new_ticks" \
        'BEGIN { printf "%.3f", (tb / b) / (ta / a) }')
    ratios+=("$ratio") cpu_ratios+=("$cpu")
    printf 'round %d  old %8.0f req/s  new %8.0f req/s  new/old %s  CPU per request new/old %s\n' \
        "$round" "$old_rps" "$new_rps" "$ratio" "$cpu"
done
echo "$CASE, $ROUNDS rounds: median new/old req/s $(median "${ratios[@]}"), CPU per request $(median "${cpu_ratios[@]}")"
