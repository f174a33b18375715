#!/usr/bin/env bash
# Outbound (relay) benchmark: how fast `mxrack run` (release build, fsync on,
# as always) empties a full queue into a local SMTP server, postfix's
# smtp-sink on 127.0.0.1.
#
# The queue is filled with MESSAGES messages of SIZE bytes while delivery is
# held back: postfix's smtp-source sends them over SESSIONS sessions to
# demo@example.net, which forwards (no local copy) to sink@bench.example;
# `[relay] routes` sends bench.example to 127.0.0.1:SINK_PORT. Then delivery
# is let go and the clock runs until `mxrack queue list | wc -l` is 0.
#
#   MODE=flush (default): nothing listens on SINK_PORT during the fill, so
#     every copy fails once (connection refused) and waits an hour
#     (retry_base_secs); then smtp-sink starts and `mxrack queue flush` makes
#     every entry due. The time includes the flush command itself (printed
#     apart): what an operator sees after an outage.
#   MODE=stopped: smtp-sink listens but is stopped (SIGSTOP) during the fill:
#     the relay's connections wait for a greeting and every other entry waits
#     for a connection slot; SIGCONT lets them go. The relay alone.
#
# Prints messages per second, what smtp-sink counted (more than MESSAGES
# means duplicate deliveries) and the server's peak RSS. Run on demand:
#   bash firmware/bench/outbound-throughput.sh
# Options via environment: MESSAGES (5000), SIZE (2048), SESSIONS (20),
# MODE (flush), CONCURRENCY (5: relay.per_destination_concurrency, its
# default), PORT (12525), SINK_PORT (12526), MXRACK_BIN (a release binary to
# use instead of building one), LOCAL_COPY=1 (the mailbox keeps a copy too,
# so every body file outlives its queue entry), KEEP=1 (keep the work folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-20}
MODE=${MODE:-flush}
CONCURRENCY=${CONCURRENCY:-5}
PORT=${PORT:-12525}
SINK_PORT=${SINK_PORT:-12526}
TOTAL=$(( CONCURRENCY > 50 ? CONCURRENCY : 50 ))
case "$MODE" in
    flush) RETRY_BASE=3600 ;;
    stopped) RETRY_BASE=300 ;;
    *) echo "MODE must be flush or stopped" >&2; exit 2 ;;
esac

if ! command -v smtp-sink >/dev/null && [ ! -x /usr/sbin/smtp-sink ]; then
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody)   # smtp-sink refuses to run as root

if [ -n "${MXRACK_BIN:-}" ]; then
    BIN=$MXRACK_BIN
else
    cargo build --release -p mxrack >/dev/null
    BIN=$PWD/target/release/mxrack
fi
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" "$SINK_PORT"; do
    if port_open "$p"; then echo "port $p is in use: set PORT or SINK_PORT" >&2; exit 1; fi
done

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
retry_base_secs = $RETRY_BASE
retry_max_secs = 3600
per_destination_concurrency = $CONCURRENCY
total_concurrency = $TOTAL
connect_timeout_secs = 5
command_timeout_secs = 3600

[log]
level = "warn"
TOML
MX=("$BIN" --config "$WORK/mxrack.toml")
"${MX[@]}" run > "$WORK/out.log" 2> "$WORK/err.log" &
PID=$!
SINK_PID=
cleanup() {
    if [ -n "$SINK_PID" ]; then kill -CONT "$SINK_PID" 2>/dev/null; kill "$SINK_PID" 2>/dev/null; fi
    kill "$PID" 2>/dev/null
    wait 2>/dev/null
    if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
for _ in $(seq 1 100); do grep -q '^mxrack ready' "$WORK/out.log" && break; sleep 0.1; done
grep -q '^mxrack ready' "$WORK/out.log" || { cat "$WORK/err.log"; exit 1; }

start_sink() {
    "$SMTP_SINK" "${SINK_USER[@]}" -c "127.0.0.1:$SINK_PORT" 200 > "$WORK/sink.log" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 1 50); do port_open "$SINK_PORT" && return; sleep 0.1; done
    echo "smtp-sink did not start" >&2
    exit 1
}
queued() { "${MX[@]}" queue list | wc -l; }

COPY_FLAG=(--no-local-copy)
[ -n "${LOCAL_COPY:-}" ] && COPY_FLAG=()
"${MX[@]}" forward set demo@example.net sink@bench.example "${COPY_FLAG[@]}" >/dev/null
if [ "$MODE" = stopped ]; then
    start_sink
    kill -STOP "$SINK_PID"
fi
fill_start=$(date +%s.%N)
"$SMTP_SOURCE" -c -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" -f bench@sender.example \
    -t demo@example.net "127.0.0.1:$PORT" > "$WORK/source.log" 2>&1
if [ "$MODE" = flush ]; then
    # Every entry through its first (failed) attempt.
    while [ "$("${MX[@]}" queue list | grep -c $'\tattempts=1\t' || true)" -lt "$MESSAGES" ]; do
        sleep 0.5
    done
fi
fill_end=$(date +%s.%N)
in_queue=$(queued)

flush_secs=""
start=$(date +%s.%N)
if [ "$MODE" = flush ]; then
    start_sink
    start=$(date +%s.%N)
    "${MX[@]}" queue flush > "$WORK/flush.log"
    flush_secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" \
        "$start" "$(date +%s.%N)")
else
    kill -CONT "$SINK_PID"
fi
while [ "$(queued)" -gt 0 ]; do sleep 0.2; done
end=$(date +%s.%N)
sleep 1  # smtp-sink prints its count as it goes
kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null || true
SINK_PID=
sunk=$(tr '\r' '\n' < "$WORK/sink.log" | { grep -o 'mesg=[0-9]*' || true; } | tail -1 | cut -d= -f2)
rss_kib=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
warnings=$(grep -c ' WARN \| ERROR ' "$WORK/err.log" || true)
python3 - "$fill_start" "$fill_end" "$start" "$end" "$MESSAGES" "$in_queue" "${sunk:-0}" \
    "$rss_kib" "$SIZE" "$CONCURRENCY" "$warnings" "$MODE" "$flush_secs" <<'PY'
import sys
fill_start, fill_end, start, end = map(float, sys.argv[1:5])
n, in_queue, sunk, rss, size, conc, warnings = map(int, sys.argv[5:12])
mode, flush_secs = sys.argv[12:14]
secs = end - start
print(f"outbound ({mode}): {n} forwarded messages of {size} bytes to smtp-sink, "
      f"per_destination_concurrency={conc}")
print(f"fill: {fill_end - fill_start:.1f} s, {in_queue} in the queue")
if flush_secs:
    print(f"`mxrack queue flush` itself: {flush_secs} s")
print(f"queue empty {secs:.2f} s after delivery was let go: {n / secs:.0f} msg/s; "
      f"smtp-sink counted {sunk}; server peak RSS {rss / 1024:.1f} MiB; "
      f"{warnings} WARN/ERROR log lines")
if sunk != n:
    print(f"MISMATCH: {n} queued, smtp-sink counted {sunk}"
          + (" (duplicate deliveries)" if sunk > n else ""))
    sys.exit(1)
PY
