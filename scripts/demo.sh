#!/usr/bin/env bash
# make demo: generated sample images served on 127.0.0.1, dls and cs run until
# every sample pair is merged, then both stop. Everything lives under .demo/
# (wiped at each run), in the database two_micros_demo and on the topics
# demo.super_heros / demo.alter_egos, so a demo never mixes with real data.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${DEMO_PAIRS:-12}
DEMO=${DEMO_DIR:-$PWD/.demo}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/debug
TIMEOUT_S=${DEMO_TIMEOUT_S:-180}

log() { printf '[demo] %s\n' "$*"; }

eval "$(bash scripts/infra.sh env)"

log "building dls, cs and the sample generator (the first build takes about 6 minutes on 2 cores)"
# The same command as `make build`, so the two never rebuild each other.
cargo build --workspace --bins --examples

# Stop what an interrupted earlier demo left running: by pid file, and only
# if that pid is still the program we started (pids get reused).
ours() { # pidfile pattern
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" && echo "$pid"
}
for spec in "http.pid:http.server" "cs.pid:/cs run"; do
    if pid=$(ours "$DEMO/${spec%%:*}" "${spec#*:}"); then
        kill "$pid" 2>/dev/null || true
    fi
done
rm -rf "$DEMO"
mkdir -p "$DEMO"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TARGET/examples/demo_samples" "$DEMO" "http://127.0.0.1:$PORT" "$COUNT" | sed 's/^/[demo] /'
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$DEMO/samples" >"$DEMO/http.log" 2>&1 &
echo $! >"$DEMO/http.pid"
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

cs_pid=""
cleanup() {
    if [[ -n $cs_pid ]] && kill -0 "$cs_pid" 2>/dev/null; then
        kill -TERM "$cs_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$cs_pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$cs_pid" 2>/dev/null; then
            log "cs did not stop within 20 s; killing it"
            kill -KILL "$cs_pid" 2>/dev/null || true
        fi
    fi
    if [[ -f $DEMO/http.pid ]]; then
        kill "$(cat "$DEMO/http.pid")" 2>/dev/null || true
        rm -f "$DEMO/http.pid" "$DEMO/cs.pid"
    fi
}
trap cleanup EXIT

# A database of its own, made afresh: the demo never writes into real data.
DEMO_DB_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/two_micros_demo")))' "$DATABASE_URL")
if ! psql -q "$DATABASE_URL" -c 'DROP DATABASE IF EXISTS two_micros_demo WITH (FORCE)' \
    -c 'CREATE DATABASE two_micros_demo' >/dev/null 2>"$DEMO/psql.log"; then
    log "could not create the database two_micros_demo with DATABASE_URL's user:"
    cat "$DEMO/psql.log"
    exit 1
fi
export DATABASE_URL=$DEMO_DB_URL

export STORAGE_ROOT=$DEMO/data
export TWO_MICROS__SOURCES="[{name=\"super_heros\", csv=\"$DEMO/input/super_heros.csv\", topic=\"demo.super_heros\"}, {name=\"alter_egos\", csv=\"$DEMO/input/alter_egos.csv\", topic=\"demo.alter_egos\"}]"
export TWO_MICROS__CONSUMER__GROUP_ID=two-micros-demo
export RUST_LOG=${RUST_LOG:-info}

log "starting cs (log: $DEMO/cs.log)"
"$TARGET/cs" run >"$DEMO/cs.log" 2>&1 &
cs_pid=$!
echo "$cs_pid" >"$DEMO/cs.pid"

log "running dls over $COUNT pairs (log: $DEMO/dls.log)"
"$TARGET/dls" 2>"$DEMO/dls.log"

log "waiting for cs to merge every pair"
deadline=$((SECONDS + TIMEOUT_S))
while :; do
    if ! kill -0 "$cs_pid" 2>/dev/null; then
        log "cs exited early; its log:"; tail -n 30 "$DEMO/cs.log"; exit 1
    fi
    status=$("$TARGET/cs" status 2>/dev/null || true)
    merged=$(sed -n 's/.*merged=\([0-9]*\).*/\1/p' <<<"$status")
    failed=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$status")
    if [[ -n $merged && $((merged + failed)) -ge $COUNT ]]; then
        break
    fi
    if ((SECONDS > deadline)); then
        log "timed out after ${TIMEOUT_S}s: $status (cs log: $DEMO/cs.log)"; exit 1
    fi
    sleep 0.5
done
log "cs status: $status"
cleanup
cs_pid=""
if [[ ${failed:-0} -gt 0 ]]; then
    "$TARGET/cs" failures
    exit 1
fi
log "done: $merged pairs merged into $DEMO/data/concat/, for example:"
find "$DEMO/data/concat" -type f | sort -V | head -n 3 | sed 's/^/[demo]   /'
