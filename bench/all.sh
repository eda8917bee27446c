#!/usr/bin/env bash
# Every benchmark in bench/, one after the other, then one table of figures
# and ratios (portico/peer) against granian, gunicorn, uWSGI and nginx, with
# each issue #6 target marked met or not met.
#
#   bash bench/all.sh               # from the repository root
#
# Steps (each script's own output goes to OUT/STEP.txt and to stdout):
#   static        bench/static.sh               portico vs nginx, HTTP/1.1
#   wsgi-w1       bench/wsgi.sh (WORKERS=1)     vs granian, gunicorn, uWSGI
#   wsgi-w2       bench/wsgi.sh (WORKERS=2)
#   h2            bench/h2.sh                   HTTP/2 + TLS vs nginx, granian
#   memory        bench/memory.sh               idle worker, 10,000 connections
#   instructions  bench/instructions.sh         callgrind instructions/request
#   uwsgi         bench/uwsgi.sh                split deployments (uwsgi protocol)
#
# Knobs (environment; DURATION, ROUNDS and the rest pass through to every
# script that has them):
#   STEPS="static wsgi-w1 wsgi-w2 h2 memory instructions uwsgi"   a subset
#   DURATION=5  ROUNDS=3     seconds per load run, rounds (medians)
#   NO_BUILD=1  skip the one `cargo build --release` done here
#   PORTICO=    a portico binary to use as it is (no build)
#   OUT=        directory for the outputs and summary.tsv (default: a new
#               bench-results.XXXXXX under TMPDIR or /tmp, kept)
# A step that fails is reported (its targets show "not run") and the others
# still run; the exit status is 1 when a step failed.
set -euo pipefail

STEPS=${STEPS:-static wsgi-w1 wsgi-w2 h2 memory instructions uwsgi}
. "$(dirname "$0")/lib.sh"
[[ -f Cargo.toml && -d src && -d bench/apps ]] || die "run from the repository root (bash bench/all.sh)"
read -r -a STEP_LIST <<<"$STEPS"
for s in "${STEP_LIST[@]}"; do
    [[ $s =~ ^(static|wsgi-w1|wsgi-w2|h2|memory|instructions|uwsgi)$ ]] ||
        die "unknown step '$s' (static wsgi-w1 wsgi-w2 h2 memory instructions uwsgi)"
done

# One build for all the steps; they get the binary as PORTICO.
build_portico
export PORTICO
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/bench-results.XXXXXX")}
mkdir -p "$OUT"
export SUMMARY=$OUT/summary.tsv
: >"$SUMMARY"

declare -A STATUS=()
FAILED=0
run_step() { # STEP
    local step=$1 env=() script
    case $step in
    static) script=static.sh ;;
    wsgi-w1) script=wsgi.sh env=(WORKERS=1) ;;
    wsgi-w2) script=wsgi.sh env=(WORKERS=2) ;;
    h2) script=h2.sh ;;
    memory) script=memory.sh ;;
    instructions) script=instructions.sh ;;
    uwsgi) script=uwsgi.sh ;;
    esac
    log "step $step: bash bench/$script ${env[*]}"
    local t0=$SECONDS
    if env "${env[@]}" bash "bench/$script" | tee "$OUT/$step.txt"; then
        STATUS[$step]="ok ($((SECONDS - t0)) s)"
    else
        STATUS[$step]="FAILED (exit ${PIPESTATUS[0]}; see $OUT/$step.txt)"
        FAILED=1
    fi
}
for s in "${STEP_LIST[@]}"; do run_step "$s"; done

# ---------------------------------------------------------------- table
# Looks a figure up in the summary: prints "portico peer ratio" or nothing.
fig() { # BENCH CASE WORKERS PEER METRIC
    awk -F'\t' -v b="$1" -v c="$2" -v w="$3" -v p="$4" -v m="$5" \
        '$1 == b && $2 == c && $3 == w && $4 == p && $5 == m { print $6, $7, $8; exit }' "$SUMMARY"
}
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "") print "-"; else printf "%.*f", d, v }'; }
ROWS=()
MET=0 NOT_MET=0 NOT_RUN=0
# A row: LABEL, the figures and the verdict. KIND is "ratio>=X", "ratio<=X",
# "value<X" (portico's own figure), "wsgi>=X" (req/s ratio >= X and p99
# ratio <= 1) or "info" (no target).
row() { # LABEL BENCH CASE WORKERS PEER METRIC DECIMALS KIND
    local label=$1 b=$2 c=$3 w=$4 p=$5 m=$6 d=$7 kind=$8 pv='' qv='' ratio='' verdict target
    read -r pv qv ratio < <(fig "$b" "$c" "$w" "$p" "$m") || true
    case $kind in
    info) target='' ;;
    wsgi*) target="≥ ${kind#wsgi>=}×, p99 ≤ peer's" ;;
    ratio'>='*) target="≥ ${kind#ratio>=}×" ;;
    ratio'<='*) target="≤ ${kind#ratio<=}×" ;;
    value'<'*) target="< ${kind#value<} MiB" ;;
    esac
    if [[ -z $pv ]]; then
        verdict=''
        if [[ $kind != info ]]; then verdict='not run'; NOT_RUN=$((NOT_RUN + 1)); fi
    else
        local ok
        case $kind in
        info) ok='' ;;
        wsgi*)
            local p99
            read -r _ _ p99 < <(fig "$b" "$c" "$w" "$p" p99_ms) || true
            ok=$(awk -v r="$ratio" -v q="${p99:-9}" -v t="${kind#wsgi>=}" 'BEGIN { print (r >= t && q <= 1) ? 1 : 0 }')
            ratio="$(fmt "$ratio" 2) (p99 $(fmt "$p99" 2))"
            ;;
        ratio'>='*) ok=$(awk -v r="$ratio" -v t="${kind#ratio>=}" 'BEGIN { print (r != "" && r >= t) ? 1 : 0 }') ;;
        ratio'<='*) ok=$(awk -v r="$ratio" -v t="${kind#ratio<=}" 'BEGIN { print (r != "" && r <= t) ? 1 : 0 }') ;;
        value'<'*)
            ok=$(awk -v v="$pv" -v t="${kind#value<}" 'BEGIN { print (v < t) ? 1 : 0 }')
            # The connections must all have been held for the figure to count.
            local held want
            read -r held want _ < <(fig "$b" "$c" "$w" requested held) || true
            if [[ -n $held && $held != "$want" ]]; then ok=0; label+=" (only $held of $want held)"; fi
            ;;
        esac
        case $ok in
        1) verdict='met'; MET=$((MET + 1)) ;;
        0) verdict='**NOT met**'; NOT_MET=$((NOT_MET + 1)) ;;
        *) verdict='' ;;
        esac
        [[ $kind == wsgi* ]] || ratio=$(fmt "$ratio" 2)
    fi
    ROWS+=("| $label | $(fmt "$pv" "$d") | $(fmt "$qv" "$d") | ${ratio:--} | $target | $verdict |")
}

for w in 1 2; do
    for c in hello get10k post10k; do
        row "WSGI $c, $w worker(s): req/s vs granian" wsgi "$c" "$w" granian req/s 0 'wsgi>=1.25'
    done
    row "WSGI flask, $w worker(s): req/s vs granian" wsgi flask "$w" granian req/s 0 'ratio>=1.3'
    for c in hello get10k post10k flask; do
        row "WSGI $c, $w worker(s): req/s vs gunicorn" wsgi "$c" "$w" gunicorn req/s 0 info
        row "WSGI $c, $w worker(s): req/s vs uWSGI" wsgi "$c" "$w" uwsgi req/s 0 info
    done
done
row "static 13 B: req/s vs nginx" static hello.txt 1 nginx req/s 0 'ratio>=1.3'
row "static 100 KiB: req/s vs nginx" static 100k.bin 1 nginx req/s 0 'ratio>=1.3'
row "static 10 MiB: MB/s vs nginx" static 10m.bin 1 nginx MB/s 1 'ratio>=1.0'
row "HTTP/2 + TLS static 13 B: req/s vs nginx" h2 static 1 nginx req/s 0 'ratio>=1.0'
row "HTTP/2 + TLS WSGI hello: req/s vs granian" h2 wsgi 1 granian req/s 0 'ratio>=1.0'
row "idle worker, hello app: RSS MiB vs granian" memory idle-wsgi 1 granian worker_rss_mib 1 'ratio<=1.0'
row "idle worker, hello app: RSS MiB vs gunicorn" memory idle-wsgi 1 gunicorn worker_rss_mib 1 info
row "idle worker, hello app: RSS MiB vs uWSGI" memory idle-wsgi 1 uwsgi worker_rss_mib 1 info
row "idle worker, static: RSS MiB vs nginx" memory idle-static 1 nginx worker_rss_mib 1 info
row "10k idle conns, static: worker growth MiB (peer: nginx)" memory conns-static 1 nginx growth_mib 1 'value<100'
row "10k idle conns, hello app: worker growth MiB (peer: granian)" memory conns-wsgi 1 granian growth_mib 1 'value<100'
row "nginx → portico vs nginx → uWSGI (uwsgi protocol): req/s" split nginx-front 1 uwsgi req/s 0 info
row "nginx → portico vs nginx → gunicorn (HTTP): req/s" split nginx-front 1 gunicorn req/s 0 info
row "portico front vs nginx front (→ portico, uwsgi): req/s" split portico-front 1 nginx req/s 0 info

echo
echo "================================================================ all benchmarks"
echo "portico $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;"
echo "DURATION=${DURATION:-5} ROUNDS=${ROUNDS:-3}; each step's full output and summary.tsv in $OUT"
echo
echo "Steps:"
for s in "${STEP_LIST[@]}"; do printf '  %-13s %s\n' "$s" "${STATUS[$s]}"; done
echo
echo "(ratio = portico/peer: above 1 favours portico for req/s and MB/s, below 1 for RSS; the WSGI rows also"
echo " give the p99 ratio, below 1 favours portico; rows without a target are for information)"
echo
echo "| figure | portico | peer | ratio | target | result |"
echo "|---|---:|---:|---:|---|---|"
printf '%s\n' "${ROWS[@]}"
ins_w=$(fig instructions wsgi-hello 0 '' instructions | cut -d' ' -f1)
ins_s=$(fig instructions static-13b 0 '' instructions | cut -d' ' -f1)
if [[ -n $ins_w || -n $ins_s ]]; then
    echo
    echo "Instructions per request (callgrind, one keep-alive client): WSGI hello ${ins_w:--}, static 13 B ${ins_s:--}"
fi
echo
echo "Targets: $MET met, $NOT_MET not met, $NOT_RUN not run."
exit "$FAILED"
