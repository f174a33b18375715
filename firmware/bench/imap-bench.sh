#!/usr/bin/env bash
# IMAP benchmark: mxrack against Dovecot on the same 10,000-message mailbox.
#
# Both servers run on 127.0.0.1 only, on free ports, without TLS (plain LOGIN
# allowed on loopback for both), with their default durability. The load
# client, firmware/bench/imap_load.py (stdlib), fills each server's INBOX with
# the same deterministic messages (2-8 KiB, some multipart; APPEND with
# LITERAL+, pipelined, 8 connections at once), then times SELECT, FETCH 1:*
# (FLAGS UID RFC822.SIZE), FETCH 1:* BODYSTRUCTURE, SEARCH BODY (a word in 1%
# of the messages) and 20 concurrent clients (SELECT, FETCH 1:* flags, 50
# random full messages each), samples the servers' memory (see imap_load.py:
# peak of the sum of VmRSS/Pss over the server's process tree, every 100 ms),
# and prints one table with both servers and the ratio mxrack/Dovecot.
#
#   mxrack:  `mxrack run` (release build) with an [imap] listener; the mailbox
#            is created with the CLI (`mxrack mailbox add`).
#   Dovecot: `dovecot -F -c CONFIG` (Debian's dovecot-imapd, installed when
#            missing, without letting the package start the system service),
#            a temporary config: listen = 127.0.0.1 and one inet_listener on
#            127.0.0.1 (imaps off), passwd-file passdb with an Argon2id hash of
#            mxrack's parameters (LOGIN costs the same on both) + static userdb
#            (mail processes run as nobody), maildir in a temporary folder,
#            ssl = no, disable_plaintext_auth = no. Stopped at the end.
#
# Run on demand (not in CI), as root on a Debian machine, about 3-5 minutes:
#     bash firmware/bench/imap-bench.sh
# Environment: MESSAGES (10000), CLIENTS (20), MXRACK_BIN (a release binary to
# use instead of building one), KEEP=1 to keep the temporary folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-10000}
CLIENTS=${CLIENTS:-20}
USER_ADDR=bench@example.net
USER_PASS=bench-pass-1234
LOAD=$PWD/firmware/bench/imap_load.py

# --- Dovecot, installed without starting the system service ---------------------------
if ! command -v dovecot >/dev/null || [ ! -e /usr/lib/dovecot/imap ]; then
    echo "== installing dovecot-imapd" >&2
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-imapd >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# --- mxrack ----------------------------------------------------------------------------------
if [ -n "${MXRACK_BIN:-}" ]; then
    BIN=$MXRACK_BIN
else
    cargo build --release -p mxrack >/dev/null
    BIN=$PWD/target/release/mxrack
fi

WORK=$(mktemp -d /tmp/imap-bench.XXXXXX)
chmod 755 "$WORK"
MX_PID=""
DV_PID=""
cleanup() {
    [ -n "$MX_PID" ] && kill "$MX_PID" 2>/dev/null && wait "$MX_PID" 2>/dev/null
    [ -n "$DV_PID" ] && kill "$DV_PID" 2>/dev/null && wait "$DV_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

read -r SMTP_PORT MX_IMAP_PORT DV_PORT < <(python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
)

wait_port() {  # port, pid, what
    for _ in $(seq 1 200); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || { echo "$3 exited" >&2; return 1; }
        sleep 0.1
    done
    echo "$3 does not listen on $1" >&2
    return 1
}

only_loopback() {  # pids...: every listening TCP socket of these processes is on 127.0.0.1
    local pids="$*" bad
    bad=$(ss -ltnpH | awk -v pids=" $pids " '{
        if (match($0, /pid=[0-9]+/)) { p = substr($0, RSTART + 4, RLENGTH - 4); if (index(pids, " " p " ") && $4 !~ /^127\.0\.0\.1:/) print }
    }')
    if [ -n "$bad" ]; then echo "listening beyond 127.0.0.1: $bad" >&2; return 1; fi
}

cat > "$WORK/mxrack.toml" <<TOML
[appliance]
hostname = "bench.example.net"
primary_domain = "example.net"
data_dir = "$WORK/mxrack-data"
demo = false

[smtp]
mx = ["127.0.0.1:$SMTP_PORT"]

[imap]
imap = ["127.0.0.1:$MX_IMAP_PORT"]
allow_plaintext_auth = true

[log]
level = "warn"
TOML
echo "== mxrack ($BIN) on 127.0.0.1:$MX_IMAP_PORT" >&2
"$BIN" --config "$WORK/mxrack.toml" run > "$WORK/mxrack.out" 2> "$WORK/mxrack.err" &
MX_PID=$!
for _ in $(seq 1 300); do grep -q '^mxrack ready' "$WORK/mxrack.out" && break; sleep 0.1; done
grep -q '^mxrack ready' "$WORK/mxrack.out" || { cat "$WORK/mxrack.err" >&2; exit 1; }
wait_port "$MX_IMAP_PORT" "$MX_PID" mxrack
only_loopback "$MX_PID"
mxcli() {
    local i
    for i in $(seq 1 50); do  # the admin socket may lag "ready" by a moment
        "$BIN" --config "$WORK/mxrack.toml" "$@" >/dev/null 2>"$WORK/cli.err" && return 0
        sleep 0.1
    done
    cat "$WORK/cli.err" >&2
    return 1
}
mxcli account add bench
mxcli domain add example.net --account bench
mxcli mailbox add "$USER_ADDR" --password "$USER_PASS"
python3 "$LOAD" run --port "$MX_IMAP_PORT" --user "$USER_ADDR" --password "$USER_PASS" \
    --pid "$MX_PID" --label mxrack --out "$WORK/mxrack.json" --messages "$MESSAGES" --clients "$CLIENTS"
kill "$MX_PID"
wait "$MX_PID" 2>/dev/null || true
MX_PID=""

# --- Dovecot ---------------------------------------------------------------------------------
DV=$WORK/dovecot
mkdir -p "$DV/run" "$DV/state" "$DV/mail"
chown nobody:nogroup "$DV/mail"
# The same password cost as mxrack's (Argon2id m=19456 KiB, t=2, p=1, the
# argon2 crate's default) so LOGIN costs the same work on both servers;
# without python3-cryptography, Dovecot's own (heavier) ARGON2ID default.
DV_HASH=$(python3 - "$USER_PASS" 2>/dev/null <<'PY' || doveadm pw -s ARGON2ID -p "$USER_PASS" | sed 's/^{ARGON2ID}//'
import base64, os, sys
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
salt = os.urandom(16)
key = Argon2id(salt=salt, length=32, iterations=2, lanes=1, memory_cost=19456).derive(sys.argv[1].encode())
b64 = lambda x: base64.b64encode(x).decode().rstrip("=")
print(f"$argon2id$v=19$m=19456,t=2,p=1${b64(salt)}${b64(key)}")
PY
)
printf '%s:{ARGON2ID}%s\n' "$USER_ADDR" "$DV_HASH" > "$DV/passwd"
echo "== dovecot password hash: ${DV_HASH%%\$*}\$$(echo "$DV_HASH" | cut -d'$' -f2-4)" >&2
cat > "$DV/dovecot.conf" <<CONF
base_dir = $DV/run
state_dir = $DV/state
instance_name = imap-bench
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = $DV/dovecot.log
mail_location = maildir:$DV/mail/%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN $DV/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DV/mail/%u
}
namespace inbox {
  inbox = yes
  separator = /
}
protocol imap {
  mail_max_userip_connections = 100
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DV_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
echo "== dovecot $(dovecot --version | cut -d' ' -f1) on 127.0.0.1:$DV_PORT" >&2
dovecot -F -c "$DV/dovecot.conf" > "$DV/foreground.log" 2>&1 &
DV_PID=$!
wait_port "$DV_PORT" "$DV_PID" dovecot || { cat "$DV/foreground.log" "$DV/dovecot.log" >&2 || true; exit 1; }
dv_tree=$(python3 -c "import sys; sys.path.insert(0, '$(dirname "$LOAD")'); import imap_load; print(*imap_load.tree($DV_PID))")
only_loopback $dv_tree
python3 "$LOAD" run --port "$DV_PORT" --user "$USER_ADDR" --password "$USER_PASS" \
    --pid "$DV_PID" --label dovecot --out "$WORK/dovecot.json" --messages "$MESSAGES" --clients "$CLIENTS"
kill "$DV_PID"
wait "$DV_PID" 2>/dev/null || true
DV_PID=""

echo
python3 "$LOAD" report "$WORK/mxrack.json" "$WORK/dovecot.json"
