#!/usr/bin/env bash
# SMTP intake benchmark (issue: appliance binary). postfix's smtp-source sends
# 2 KiB messages over 20 concurrent sessions to `mxrack run` (release build,
# fsync on, as always) on 127.0.0.1; prints messages per second and the
# server's peak RSS. Run on demand: bash firmware/bench/smtp-throughput.sh
# Options via environment: MESSAGES (20000), SESSIONS (20), SIZE (2048),
# REUSE=1 to send every message of a session over one connection (-d).
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
REUSE=${REUSE:-0}

if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)

if [ -n "${MXRACK_BIN:-}" ]; then
    BIN=$MXRACK_BIN    # e.g. the static image binary, target/x86_64-unknown-linux-gnu/release/mxrack
else
    cargo build --release -p mxrack >/dev/null
    BIN=$PWD/target/release/mxrack
fi
WORK=$(mktemp -d /tmp/mxrack-bench.XXXXXX)
PORT=${PORT:-12525}
cat > "$WORK/mxrack.toml" <<TOML
[appliance]
hostname = "bench.example.net"
primary_domain = "example.net"
data_dir = "$WORK/data"
demo = true

[smtp]
mx = ["127.0.0.1:$PORT"]
max_connections = 1000

[log]
level = "warn"
TOML
"$BIN" --config "$WORK/mxrack.toml" run > "$WORK/out.log" 2> "$WORK/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do grep -q '^mxrack ready' "$WORK/out.log" && break; sleep 0.1; done
grep -q '^mxrack ready' "$WORK/out.log" || { cat "$WORK/err.log"; exit 1; }

flags=(-c -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" -f bench@sender.example -t demo@example.net)
[ "$REUSE" = 1 ] && flags+=(-d)
start=$(date +%s.%N)
"$SMTP_SOURCE" "${flags[@]}" "127.0.0.1:$PORT" > "$WORK/source.log" 2>&1
end=$(date +%s.%N)
stored=$("$BIN" --config "$WORK/mxrack.toml" message list demo@example.net | wc -l)
rss_kib=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
python3 - "$start" "$end" "$MESSAGES" "$stored" "$rss_kib" "$SESSIONS" "$SIZE" "$REUSE" <<'PY'
import sys
start, end, n, stored, rss, sessions, size, reuse = sys.argv[1:]
secs = float(end) - float(start)
print(f"smtp-source: {n} messages of {size} bytes, {sessions} sessions, "
      f"{'one connection per session' if reuse == '1' else 'one connection per message'}")
print(f"elapsed {secs:.2f} s, {int(n)/secs:.0f} msg/s, stored {stored}, server peak RSS {int(rss)/1024:.1f} MiB")
if int(stored) != int(n):
    print(f"MISMATCH: sent {n}, stored {stored}")
    sys.exit(1)
PY
