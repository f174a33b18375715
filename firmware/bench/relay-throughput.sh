#!/usr/bin/env bash
# Live forwarding benchmark (issue 16), mxrack beside Postfix in one run.
#
# postfix's smtp-source sends MESSAGES messages of SIZE bytes over SESSIONS
# sessions to demo@example.net; the MTA forwards each to sink@bench.example,
# which goes to postfix's smtp-sink on 127.0.0.1:SINK_PORT. The clock runs
# from the first message sent until smtp-sink has counted MESSAGES (intake
# and forwarding together, as a forwarding appliance sees them).
#
#   mxrack: `mxrack run` (release build, fsync on, as always), demo mode,
#     inbound SPF/DKIM/DMARC off (Postfix checks none of them here),
#     `mxrack forward set demo@example.net sink@bench.example --no-local-copy`,
#     `[relay] routes` to the sink; relay settings at their defaults
#     (per_destination_concurrency 20, connection_cache_secs 2).
#   Postfix: a private instance (its own config, queue and data folders under
#     the work folder; /etc/postfix is not touched), master(8) in the
#     foreground, smtpd on 127.0.0.1:PF_PORT, virtual_alias_maps for the
#     forward, transport_maps to the sink; Postfix's defaults otherwise
#     (default_destination_concurrency_limit 20, connection cache on demand).
#   NO_REUSE=1 adds a run of mxrack with connection_cache_secs = 0 (one
#     session per message, as the relay was before issue 16).
#   CHECKS=1 adds a run of mxrack with its inbound SPF/DKIM/DMARC checks on,
#     its [dns] pointed at nxdns.py on 127.0.0.1:DNS_PORT, which answers
#     every query NXDOMAIN without an SOA (a sender that publishes no SPF or
#     DMARC, through a resolver that gives no negative TTL); the queries it
#     saw are printed. Postfix still checks nothing: this row is the cost of
#     the checks, not a like-for-like comparison. NEGATIVE_TTL_SECS sets
#     that run's [dns] negative_ttl_secs (default 60; 0: every message asks).
#
# A fresh smtp-sink per run; its own counters (-c: sess= and mesg=) give the
# sessions it saw from each MTA. Prints messages per second for each, the
# ratio, and the sessions. Run on demand: bash firmware/bench/relay-throughput.sh
# Options via environment: MESSAGES (5000), SIZE (2048), SESSIONS (20),
# MX_PORT (12535), PF_PORT (12536), SINK_PORT (12537), MXRACK_BIN (a release
# binary to use instead of building one), NO_REUSE=1, KEEP=1 (keep the work
# folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-20}
MX_PORT=${MX_PORT:-12535}
PF_PORT=${PF_PORT:-12536}
SINK_PORT=${SINK_PORT:-12537}
DNS_PORT=${DNS_PORT:-12538}
# Longest wait for the sink to count every message, per run.
RUN_TIMEOUT_SECS=${RUN_TIMEOUT_SECS:-600}

if [ ! -x /usr/sbin/smtp-sink ] || [ ! -x /usr/lib/postfix/sbin/master ]; then
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
PF_DAEMONS=$(postconf -dh daemon_directory 2>/dev/null || echo /usr/lib/postfix/sbin)
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody)   # smtp-sink refuses to run as root

if [ -n "${MXRACK_BIN:-}" ]; then
    BIN=$MXRACK_BIN
else
    cargo build --release -p mxrack >/dev/null
    BIN=$PWD/target/release/mxrack
fi
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$MX_PORT" "$PF_PORT" "$SINK_PORT"; do
    if port_open "$p"; then echo "port $p is in use: set MX_PORT, PF_PORT or SINK_PORT" >&2; exit 1; fi
done

WORK=$(mktemp -d /tmp/mxrack-relaybench.XXXXXX)
chmod 755 "$WORK"
SINK_PID= MX_PID= PF_PID= DNS_PID=
cleanup() {
    for p in $SINK_PID $MX_PID $PF_PID $DNS_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_sink() {   # $1: log file
    "$SMTP_SINK" "${SINK_USER[@]}" -c "127.0.0.1:$SINK_PORT" 1000 > "$1" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 1 50); do port_open "$SINK_PORT" && return; sleep 0.1; done
    echo "smtp-sink did not start" >&2
    exit 1
}
# smtp-sink -c prints "sess=S quit=Q mesg=M" as it goes.
sink_field() { tr '\r' '\n' < "$1" | { grep -o "$2=[0-9]*" || true; } | tail -1 | cut -d= -f2; }
stop_sink() { kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=; }

# One run: smtp-source into port $2, wait for the sink; sets MEASURED to
# "secs intake-secs sessions sunk" (intake: until smtp-source had every
# message accepted).
measure() {   # $1: name, $2: port
    local log="$WORK/sink-$1.log"
    start_sink "$log"
    local start end
    start=$(date +%s.%N)
    "$SMTP_SOURCE" -c -l "$SIZE" -m "$MESSAGES" -s "$SESSIONS" -f bench@sender.example \
        -t demo@example.net "127.0.0.1:$2" > "$WORK/source-$1.log" 2>&1
    local taken
    taken=$(date +%s.%N)
    local deadline=$(( $(date +%s) + RUN_TIMEOUT_SECS ))
    while [ "$(sink_field "$log" mesg)" != "$MESSAGES" ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then echo "$1: timed out; sink: $(sink_field "$log" mesg)" >&2; break; fi
        sleep 0.05
    done
    end=$(date +%s.%N)
    sleep 3   # idle cached sessions close (both MTAs keep one a few seconds)
    MEASURED="$(python3 -c "import sys; a, b, c = map(float, sys.argv[1:]); print(f'{c - a:.3f} {b - a:.3f}')" \
        "$start" "$taken" "$end") $(sink_field "$log" sess) $(sink_field "$log" mesg)"
    stop_sink
}

# Each run sets RESULT to "secs intake-secs sessions sunk left-in-queue warnings".
run_mxrack() {   # $1: name, $2: extra [relay] lines, $3: [mail_auth] and [dns] lines
    local dir="$WORK/$1"
    mkdir -p "$dir"
    cat > "$dir/mxrack.toml" <<TOML
[appliance]
hostname = "bench.example.net"
primary_domain = "example.net"
data_dir = "$dir/data"
demo = true

[smtp]
mx = ["127.0.0.1:$MX_PORT"]
max_connections = 1000

[relay]
routes = { "bench.example" = "127.0.0.1:$SINK_PORT" }
queue_interval_secs = 1
$2

${3:-# Postfix here checks no SPF, DKIM or DMARC: neither does mxrack, so both
# do the same work (and no DNS answer, slow or missing, sets the pace).
[mail_auth]
verify_inbound = false}

[log]
level = "warn"
TOML
    local mx=("$BIN" --config "$dir/mxrack.toml")
    "${mx[@]}" run > "$dir/out.log" 2> "$dir/err.log" &
    MX_PID=$!
    for _ in $(seq 1 100); do grep -q '^mxrack ready' "$dir/out.log" && break; sleep 0.1; done
    grep -q '^mxrack ready' "$dir/out.log" || { cat "$dir/err.log" >&2; exit 1; }
    "${mx[@]}" forward set demo@example.net sink@bench.example --no-local-copy >/dev/null
    measure "$1" "$MX_PORT"
    local left
    left=$("${mx[@]}" queue list | wc -l)
    kill "$MX_PID"; wait "$MX_PID" 2>/dev/null || true; MX_PID=
    RESULT="$MEASURED $left $(grep -c ' WARN \| ERROR ' "$dir/err.log" || true)"
}

run_postfix() {
    local dir="$WORK/postfix"
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    chown postfix "$dir/data"
    cat > "$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
myhostname = pf.bench.example
mydomain = bench.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.net
virtual_alias_maps = inline:{ demo@example.net=sink@bench.example }
transport_maps = inline:{ bench.example=smtp:[127.0.0.1]:$SINK_PORT }
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
CF
    # The distribution's master.cf: smtpd on our loopback port, nothing
    # chrooted (the private queue has no chroot files).
    sed -e "s/^smtp      inet  n       -       y/127.0.0.1:$PF_PORT inet n - n/" \
        -e 's/^\([a-z]*[[:space:]]\+unix\(-dgram\)\?[[:space:]]\+[-n][[:space:]]\+[-n][[:space:]]\+\)y/\1n/' \
        /etc/postfix/master.cf > "$dir/etc/master.cf"
    # What the postfix(1) command exports to postfix-script, for this
    # configuration; post-install makes the queue folders.
    (
        set -a
        for v in config_directory command_directory daemon_directory queue_directory data_directory \
                 mail_owner setgid_group meta_directory shlib_directory sendmail_path newaliases_path \
                 mailq_path manpage_directory sample_directory readme_directory html_directory; do
            eval "$v=\$(postconf -c \"$dir/etc\" -hx $v)"
        done
        MAIL_CONFIG=$dir/etc
        "$PF_DAEMONS/post-install" create-missing >/dev/null 2>&1 || true
    )
    MAIL_CONFIG=$dir/etc "$PF_DAEMONS/master" -d -c "$dir/etc" > "$dir/master.log" 2>&1 &
    PF_PID=$!
    for _ in $(seq 1 100); do port_open "$PF_PORT" && break; sleep 0.1; done
    port_open "$PF_PORT" || { cat "$dir/master.log" "$dir/maillog" >&2; exit 1; }
    measure postfix "$PF_PORT"
    local left
    left=$(find "$dir/queue/incoming" "$dir/queue/active" "$dir/queue/deferred" -type f | wc -l)
    kill "$PF_PID"; wait "$PF_PID" 2>/dev/null || true; PF_PID=
    RESULT="$MEASURED $left 0"
}

run_mxrack mxrack ""
mx=$RESULT
run_postfix
pf=$RESULT
before=""
if [ -n "${NO_REUSE:-}" ]; then
    run_mxrack mxrack-no-reuse "connection_cache_secs = 0"
    before=$RESULT
fi
checks="" dns_seen=""
if [ -n "${CHECKS:-}" ]; then
    python3 firmware/bench/nxdns.py "$DNS_PORT" "$WORK/dns-count" &
    DNS_PID=$!
    sleep 0.5
    run_mxrack mxrack-checks "" "[mail_auth]
verify_inbound = true

[dns]
servers = [\"127.0.0.1:$DNS_PORT\"]
negative_ttl_secs = ${NEGATIVE_TTL_SECS:-60}"
    checks=$RESULT
    kill "$DNS_PID"; wait "$DNS_PID" 2>/dev/null || true; DNS_PID=
    dns_seen=$(cat "$WORK/dns-count")
fi
python3 - "$MESSAGES" "$SIZE" "$SESSIONS" "$mx" "$pf" "$before" "$checks" "$dns_seen" <<'PY'
import sys
n, size, sessions = map(int, sys.argv[1:4])
rows = [("mxrack", sys.argv[4]), ("Postfix 3.7", sys.argv[5])]
if sys.argv[6]:
    rows.append(("mxrack, connection_cache_secs=0", sys.argv[6]))
if sys.argv[7]:
    rows.append(("mxrack, SPF/DKIM/DMARC on", sys.argv[7]))
print(f"live forwarding: smtp-source, {n} messages of {size} bytes over {sessions} sessions "
      f"-> MTA -> smtp-sink, all on 127.0.0.1")
print(f"{'MTA':34} {'seconds':>8} {'msg/s':>8} {'intake s':>9} {'sink sessions':>14} {'sink msgs':>10} {'left queued':>12}")
rate = {}
bad = False
for name, text in rows:
    secs, intake, sess, sunk, left, warnings = text.split()
    secs, intake, sess, sunk, left = float(secs), float(intake), int(sess or 0), int(sunk or 0), int(left)
    rate[name] = n / secs
    print(f"{name:34} {secs:8.2f} {n / secs:8.0f} {intake:9.2f} {sess:14} {sunk:10} {left:12}"
          + (f"  ({warnings} WARN/ERROR log lines)" if warnings != "0" else ""))
    bad |= sunk != n
print(f"mxrack / Postfix: {rate['mxrack'] / rate['Postfix 3.7']:.2f}x")
if sys.argv[7]:
    q, names = sys.argv[8].split()
    print(f"with the checks on: {rate['mxrack, SPF/DKIM/DMARC on'] / rate['Postfix 3.7']:.2f}x Postfix "
          f"(which checks nothing); DNS queries {q} for {names} names over {n} messages")
if bad:
    print("MISMATCH: a sink count differs from the messages sent")
    sys.exit(1)
PY
