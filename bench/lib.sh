# Helpers shared by the bench/*.sh scripts (sourced, not run). Each script
# runs from the repository root.

die() { echo "${0##*/}: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

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

# Builds the release binary unless NO_BUILD is set; sets PORTICO.
build_portico() {
    if [[ -z ${NO_BUILD:-} ]]; then
        log "cargo build --release"
        cargo build --release --quiet
    fi
    PORTICO=$PWD/target/release/portico
    [[ -x $PORTICO ]] || die "$PORTICO not found (build it, or unset NO_BUILD)"
}

# A free TCP port on 127.0.0.1, never the same twice in one run.
declare -A TAKEN=()
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        [[ -n ${TAKEN[$port]:-} ]] && continue
        if ! ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
            TAKEN[$port]=1; echo "$port"; return 0
        fi
    done
    die "no free port found"
}

# Waits up to 15 s for URL to answer; fails with the server's log if the
# process died or never answered.
wait_up() { # NAME PID URL LOG
    local name=$1 pid=$2 url=$3 logf=$4
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { cat "$logf" >&2 || true; die "$name exited at start"; }
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    cat "$logf" >&2 || true
    die "$name did not answer on $url within 15 s"
}
