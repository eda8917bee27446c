#!/usr/bin/env bash
# The split deployment: one front portico (static files + reverse proxy) and
# two portico application servers behind it, over uwsgi on unix sockets.
#
#   ./run.sh                 start all three; Ctrl-C stops them
#   ./run.sh restart b1      (from another shell) rolling restart of one backend
#
# Then:  curl http://127.0.0.1:8000/static/hello.txt   (the front itself)
#        curl http://127.0.0.1:8000/anything           (a backend, alternating)
#
# PORTICO names the binary (default: target/release/portico, built if missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
run="${RUN_DIR:-$here/run}"
mkdir -p "$run"
portico="${PORTICO:-$root/target/release/portico}"
if [ ! -x "$portico" ]; then
  (cd "$root" && cargo build --release --quiet)
fi

backend() { # NAME: start one application server in the background
  local name=$1
  BACKEND=$name "$portico" -c "$here/backend.toml" \
    --uwsgi-socket "unix:$run/$name.sock" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
  # Ready when the socket accepts (the app is imported before workers serve).
  for _ in $(seq 100); do
    grep -q "ready:" "$run/$name.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "backend $name did not start; see $run/$name.log" >&2
  return 1
}

stop() { # NAME: graceful stop (in-flight requests finish)
  local pidfile="$run/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  # Our own child is reaped by wait (a zombie would pass kill -0); one
  # started by another run.sh is polled.
  wait "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$pidfile"
}

if [ "${1:-}" = restart ]; then
  name=${2:?which backend: b1 or b2}
  stop "$name"
  backend "$name"
  echo "restarted $name"
  exit 0
fi

trap 'stop front; stop b1; stop b2' EXIT INT TERM
backend b1
backend b2
"$portico" -c "$here/front.toml" \
  --proxy "/=uwsgi+unix:$run/b1.sock,uwsgi+unix:$run/b2.sock" \
  ${FRONT_BIND:+--bind "$FRONT_BIND"} &
echo $! >"$run/front.pid"
wait "$(cat "$run/front.pid")"
