#!/usr/bin/env bash
# Soak under hostile load (issue 10): legitimate SMTP throughput with and
# without 200 hostile clients, the server's peak RSS against the budget of
# ARCHITECTURE.md's memory invariants, and whether it is the same process,
# answering on every port, at the end. Not a timed test: a benchmark, run
# on demand: bash firmware/bench/soak.sh
#
# 1. `mxrack run` (release build) on 127.0.0.1 with MX, submission, IMAP,
#    IMAPS, POP3, LDAP and the status page on free ports, the default pools
#    and per-client caps; 8 hostile mailboxes, each seeded with a message
#    nesting 20,000 message/rfc822 levels.
# 2. Quiet: postfix's smtp-source, SESSIONS (20) sessions, MESSAGES (10000)
#    2 KiB messages to demo@example.net on the MX port, from 127.0.0.1.
# 3. Soak, SOAK_SECS (300): soak_hostile.py runs 200 hostile clients, each
#    from its own address 127.0.0.2-201 (so the per-client caps, counted per
#    IPv4 address, never meet smtp-source's 127.0.0.1) and reconnecting when
#    dropped: slowloris on MX, submission, IMAP, POP3, LDAP; IMAP literal
#    bombs before login; DATA of the 20,000-level message and of a 1 MB line;
#    logged-in LIST pattern bombs and FETCH BODYSTRUCTURE of the deep message
#    (KINDS="kind=n,..." changes the mix; see soak_hostile.py). Meanwhile
#    smtp-source runs again with the same MESSAGES, over and over until
#    SOAK_SECS have passed (the last run finishes under the load too); then
#    once more after the hostile clients have left (quiet after).
# 4. Prints quiet and soak msg/s, their ratio (soak over the mean of the
#    quiet runs before and after; PASS at 70 % or more), the
#    peak RSS (VmRSS every 0.5 s, VmHWM) against the budget, each hostile
#    kind's connections, the probes of every port from 127.0.0.1 during and
#    after the soak, and the count of legitimate messages stored.
# Environment: SOAK_SECS, MESSAGES, SESSIONS, KINDS, SLOW_GAP (3 s between a
# slowloris's bytes), DATA_PAUSE (10 s between a DATA client's messages),
# IMAP_PAUSE (1 s between a logged-in client's commands), RECONNECT_PAUSE
# (1 s), MXRACK_BIN (default: the release build, built here), KEEP=1 keeps
# the work folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
SOAK_SECS=${SOAK_SECS:-300}
MESSAGES=${MESSAGES:-10000}
SESSIONS=${SESSIONS:-20}
SIZE=2048
HERE=$PWD/firmware/bench

if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)

if [ -n "${MXRACK_BIN:-}" ]; then
    BIN=$MXRACK_BIN
else
    cargo build --release -p mxrack >/dev/null
    BIN=$PWD/target/release/mxrack
fi
WORK=$(mktemp -d /tmp/mxrack-soak.XXXXXX)
read -r MX SUB IMAP IMAPS POP3 LDAP HTTP HTTPS CLOSED < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
cat > "$WORK/ports.json" <<JSON
{"mx": $MX, "submission": $SUB, "imap": $IMAP, "imaps": $IMAPS, "pop3": $POP3,
 "ldap": $LDAP, "http": $HTTP, "https": $HTTPS}
JSON
cat > "$WORK/mxrack.toml" <<TOML
[appliance]
hostname = "bench.example.net"
primary_domain = "example.net"
data_dir = "$WORK/data"
demo = true

[smtp]
mx = ["127.0.0.1:$MX"]
submission = ["127.0.0.1:$SUB"]

[imap]
imap = ["127.0.0.1:$IMAP"]
imaps = ["127.0.0.1:$IMAPS"]

[pop3]
pop3 = ["127.0.0.1:$POP3"]

[ldap]
ldap = ["127.0.0.1:$LDAP"]

[web]
http = ["127.0.0.1:$HTTP"]
https = ["127.0.0.1:$HTTPS"]

# Nothing leaves the machine: the smarthost is a loopback port nobody serves.
[relay]
smarthost = "127.0.0.1:$CLOSED"

[log]
level = "warn"
TOML
"$BIN" --config "$WORK/mxrack.toml" run > "$WORK/out.log" 2> "$WORK/err.log" &
PID=$!
STARTED=$(awk '{print $22}' /proc/$PID/stat)
cleanup() {
    kill $PID 2>/dev/null || true
    wait $PID 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 300); do grep -q '^mxrack ready' "$WORK/out.log" && break; sleep 0.1; done
grep -q '^mxrack ready' "$WORK/out.log" || { cat "$WORK/err.log"; exit 1; }
mx() { "$BIN" --config "$WORK/mxrack.toml" "$@"; }

BOXES=()
for i in 1 2 3 4 5 6 7 8; do
    mx mailbox add "h$i@example.net" --password "hostile-pw-$i" >/dev/null
    BOXES+=("h$i@example.net:hostile-pw-$i")
done
mx config show > "$WORK/config-show.toml"
python3 "$HERE/soak_hostile.py" seed --ports "$WORK/ports.json" --mailboxes "${BOXES[@]}"
IDLE_KIB=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)

source_run() {  # one smtp-source run; prints its seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$SMTP_SOURCE" -c -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" -f bench@sender.example \
        -t demo@example.net "127.0.0.1:$MX" >> "$WORK/source.log" 2>&1 || echo "smtp-source exit $?" >> "$WORK/source.err"
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}

echo "load before: $(uptime)"
QUIET_SECS=$(source_run)
QUIET_STORED=$(mx message list demo@example.net | wc -l)
HWM_QUIET=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)

python3 "$HERE/soak_hostile.py" soak --ports "$WORK/ports.json" --mailboxes "${BOXES[@]}" \
    --pid $PID --stop "$WORK/stop" --out "$WORK/hostile.json" --config-show "$WORK/config-show.toml" \
    --idle-kib "$IDLE_KIB" --legit-sessions "$SESSIONS" --max-secs $((SOAK_SECS * 3 + 600)) &
HOSTILE=$!
sleep 6  # the hostile clients arrive over 5 s
RUNS=0
SOAK_TOTAL=0
soak_start=$(date +%s)
while [ $(( $(date +%s) - soak_start )) -lt "$SOAK_SECS" ]; do
    secs=$(source_run)
    SOAK_TOTAL=$(python3 -c "print($SOAK_TOTAL + $secs)")
    RUNS=$((RUNS + 1))
done
touch "$WORK/stop"
wait $HOSTILE
# Quiet again, after the hostile clients left: the machine's other load
# drifts over minutes, and a server worn by the soak would show here.
AFTER_SECS=$(source_run)
STORED=$(mx message list demo@example.net | wc -l)
if kill -0 $PID 2>/dev/null && [ "$(awk '{print $22}' /proc/$PID/stat)" = "$STARTED" ]; then
    SAME="yes, PID $PID, running since start"
else
    SAME="NO: PID $PID is gone"
fi
PANICS=$(grep -c -i 'panick' "$WORK/err.log" || true)

echo "load after: $(uptime)"
python3 - "$MESSAGES" "$SESSIONS" "$QUIET_SECS" "$QUIET_STORED" "$RUNS" "$SOAK_TOTAL" "$STORED" \
    "$SAME" "$PANICS" "$HWM_QUIET" "$SOAK_SECS" "$AFTER_SECS" <<'PY'
import sys
(n, sessions, quiet_secs, quiet_stored, runs, soak_secs, stored, same, panics, hwm_quiet, soak_for,
 after_secs) = sys.argv[1:]
n, runs, stored = int(n), int(runs), int(stored)
before, after = n / float(quiet_secs), n / float(after_secs)
quiet = (before + after) / 2
soak = n * runs / float(soak_secs) if runs else 0.0
ratio = soak / quiet
print(f"quiet before: {n} messages of 2 KiB, {sessions} sessions, {float(quiet_secs):.1f} s: {before:.0f} msg/s "
      f"(stored {quiet_stored}); server VmHWM after it {int(hwm_quiet) / 1024:.0f} MiB")
print(f"soak ({soak_for} s asked): {runs} runs x {n} messages in {float(soak_secs):.1f} s of smtp-source: {soak:.0f} msg/s")
print(f"quiet after: {float(after_secs):.1f} s: {after:.0f} msg/s")
print(f"ratio soak / quiet (mean of before and after, {quiet:.0f} msg/s) {ratio:.2f}: "
      f"{'PASS' if ratio >= 0.70 else 'FAIL'} (at least 0.70); soak / quiet before {soak / before:.2f}")
sent = n * (runs + 2)
print(f"legitimate messages stored in demo@example.net: {stored} of {sent} sent"
      + ("" if stored == sent else f"  MISMATCH ({sent - stored} missing)"))
print(f"same server process at the end: {same}; panics in its log: {panics}")
PY
echo "smtp-source errors: $( (grep -ci 'error\|status' "$WORK/source.log" || true) ) lines$( [ -f "$WORK/source.err" ] && echo "; $(sort "$WORK/source.err" | uniq -c | tr '\n' ' ')")"
python3 "$HERE/soak_hostile.py" report --out "$WORK/hostile.json"
