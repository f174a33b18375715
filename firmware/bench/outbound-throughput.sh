#!/usr/bin/env bash
# Outbound (relay) benchmark: how fast `mxrack run` (release build, fsync on,
# as always) empties a full queue into a local SMTP server.
#
# 1. The queue is filled with MESSAGES messages of SIZE bytes while the
#    destination is down: postfix's smtp-source sends them over SESSIONS
#    sessions to demo@example.net, which forwards (no local copy) to
#    sink@bench.example; bench.example is routed to 127.0.0.1:SINK_PORT, where
#    nothing listens yet. Each copy fails once (connection refused) and waits
#    (retry_base_secs = 1 hour).
# 2. postfix's smtp-sink starts on SINK_PORT, `mxrack queue flush` makes every
#    entry due, and the clock runs until `mxrack queue list | wc -l` is 0.
#
# Prints messages per second from flush to empty queue, the flush command's
# own time, what smtp-sink counted (more than MESSAGES means duplicate
# deliveries) and the server's peak RSS. Run on demand:
#   bash firmware/bench/outbound-throughput.sh
# Options via environment: MESSAGES (5000), SIZE (2048), SESSIONS (20),
# CONCURRENCY (5: relay.per_destination_concurrency, its default), PORT (12525).
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-20}
CONCURRENCY=${CONCURRENCY:-5}
PORT=${PORT:-12525}
SINK_PORT=${SINK_PORT:-12526}
TOTAL=$(( CONCURRENCY > 50 ? CONCURRENCY : 50 ))

if ! command -v smtp-sink >/dev/null && [ ! -x /usr/sbin/smtp-sink ]; then
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody)   # smtp-sink refuses to run as root

cargo build --release -p mxrack >/dev/null
BIN=$PWD/target/release/mxrack
WORK=$(mktemp -d /tmp/mxrack-outbound.XXXXXX)
cat > "$WORK/mxrack.toml" <<TOML
[appliance]
hostname = "bench.example.net"
primary_domain = "example.net"
data_dir = "$WORK/data"
demo = true

[smtp]
mx = ["127.0.0.1:$PORT"]
max_connections = 1000

[relay]
routes = { "bench.example" = "127.0.0.1:$SINK_PORT" }
queue_interval_secs = 1
retry_base_secs = 3600
retry_max_secs = 3600
per_destination_concurrency = $CONCURRENCY
total_concurrency = $TOTAL
connect_timeout_secs = 5

[log]
level = "warn"
TOML
MX=("$BIN" --config "$WORK/mxrack.toml")
"${MX[@]}" run > "$WORK/out.log" 2> "$WORK/err.log" &
PID=$!
SINK_PID=
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    kill "$PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 100); do grep -q '^mxrack ready' "$WORK/out.log" && break; sleep 0.1; done
grep -q '^mxrack ready' "$WORK/out.log" || { cat "$WORK/err.log"; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null; then
    echo "port $SINK_PORT is in use: set SINK_PORT" >&2
    exit 1
fi

"${MX[@]}" forward set demo@example.net sink@bench.example --no-local-copy >/dev/null
fill_start=$(date +%s.%N)
"$SMTP_SOURCE" -c -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" -f bench@sender.example \
    -t demo@example.net "127.0.0.1:$PORT" > "$WORK/source.log" 2>&1
# Every entry queued and through its first (failed) attempt.
while :; do
    waiting=$("${MX[@]}" queue list | grep -c $'\tattempts=1\t' || true)
    [ "$waiting" -ge "$MESSAGES" ] && break
    sleep 0.5
done
fill_end=$(date +%s.%N)
queued=$("${MX[@]}" queue list | wc -l)

"$SMTP_SINK" "${SINK_USER[@]}" -c "127.0.0.1:$SINK_PORT" 200 > "$WORK/sink.log" 2>&1 &
SINK_PID=$!
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && break; sleep 0.1; done

start=$(date +%s.%N)
"${MX[@]}" queue flush > "$WORK/flush.log"
flushed=$(date +%s.%N)
while [ "$("${MX[@]}" queue list | wc -l)" -gt 0 ]; do sleep 0.2; done
end=$(date +%s.%N)
sleep 1  # let smtp-sink print its last count
kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null || true
SINK_PID=
sunk=$(tr '\r' '\n' < "$WORK/sink.log" | grep -o 'msg=[0-9]*' | tail -1 | cut -d= -f2)
rss_kib=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
errors=$(grep -c ' WARN \| ERROR ' "$WORK/err.log" || true)
python3 - "$fill_start" "$fill_end" "$start" "$flushed" "$end" "$MESSAGES" "$queued" \
    "${sunk:-0}" "$rss_kib" "$SIZE" "$CONCURRENCY" "$errors" "$(cat "$WORK/flush.log")" <<'PY'
import sys
fill_start, fill_end, start, flushed, end = map(float, sys.argv[1:6])
n, queued, sunk, rss, size, conc, errors = map(int, sys.argv[6:13])
flush_out = sys.argv[13]
secs = end - start
print(f"outbound: {n} forwarded messages of {size} bytes to smtp-sink, "
      f"per_destination_concurrency={conc}")
print(f"fill (smtp-source + first failed attempts): {fill_end - fill_start:.1f} s, queued {queued}")
print(f"flush command: {flushed - start:.2f} s ({flush_out.strip()})")
print(f"queue emptied in {secs:.2f} s after the flush started: {n / secs:.0f} msg/s; "
      f"smtp-sink counted {sunk}; server peak RSS {rss / 1024:.1f} MiB; "
      f"{errors} WARN/ERROR log lines")
if sunk != n:
    print(f"MISMATCH: queued {n}, smtp-sink counted {sunk}"
          + (" (duplicate deliveries)" if sunk > n else ""))
    sys.exit(1)
PY
