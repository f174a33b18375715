#!/usr/bin/env bash
# imaptest (Dovecot's IMAP test tool) against mxrack and a private Dovecot,
# side by side, in one run (issue 17):
#   1. conformance: every scripted test group of imaptest (`test=` mode), one
#      group per imaptest run, and a per-group table: passed / failed /
#      skipped (with the capability the server lacks), failed/total commands,
#      and totals "N groups run, M failed (x/y base, z/w extension commands
#      failed), K skipped"; then the first failing exchange of each failing
#      group as imaptest printed it.
#   2. stress: imaptest's stress mode, 10 clients for 30 s on the same mbox
#      source and users: logins/s, commands/s, errors, and mxrack's RSS beside
#      the sum of Pss over Dovecot's processes (peaks, sampled every 100 ms).
#
# imaptest is in no package registry. Give the script its public source
# (https://github.com/dovecot/imaptest) as a git checkout or a bare git
# directory; the script never copies it into this repository. It builds in
# target/imaptest/ (IMAPTEST_WORK to change), reused on later runs.
#   - imaptest's newest source needs Dovecot 2.4's libraries; Debian 12 has
#     2.3.19. The newest commit that builds against Debian's dovecot-dev is
#     924f619 (2022-03-09): the next one (ba1d6ab) uses 2.4's three-argument
#     str_begins(), and the one after (f4f39aa) 2.4's
#     io_stream_create_ssl_client(). IMAPTEST_BUILD_COMMIT overrides.
#   - Debian's security updates of 2.3.19 (deb12u7) backported 2.4's
#     imap_parser_create() with a fourth argument (parser params); a force-
#     included header passes NULL (no limit, as imaptest had before), so the
#     imaptest source itself is built unchanged.
#   - The test scripts come from the newest commit (IMAPTEST_TESTS_COMMIT,
#     default HEAD), src/tests/: they hold fixes and groups the old build's
#     copy lacks. Two of them (append, pipeline-connections) use pipelined
#     commands on a numbered connection, which the old parser rejects ("All
#     pipelined commands must use the same connection", an off-by-one):
#     upstream's own parser fix f28e32f ("test-parser: Fix pipeline
#     commands") is applied to the build from the given git history
#     (IMAPTEST_PICKS, space-separated commits; empty for none).
#
#   mxrack   `mxrack run` with a plain [imap] listener on 127.0.0.1 (plaintext
#            LOGIN allowed on loopback), two mailboxes made with the CLI;
#            [auth] budgets wide so imaptest's many logins are not limited.
#   Dovecot  Debian's dovecot-imapd, `dovecot -F -c CONFIG` with a temporary
#            config: only 127.0.0.1 on a free port, ssl = no, passwd-file with
#            the *same* Argon2id hashes mxrack stored for the two users (read
#            from mxrack's data folder; if not found there, hashes made with
#            mxrack's parameters m=19456,t=2,p=1), maildir, separator "/"
#            (mxrack's), mail processes as nobody.
#
# Run on demand (not in CI), as root on a Debian 12 machine, about 5 minutes (the first build
# of imaptest about 1 more):
#     bash firmware/bench/imaptest.sh IMAPTEST_SOURCE [MXRACK_BINARY]
# e.g. with the mirrored bare git directory:
#     bash firmware/bench/imaptest.sh /work/.mirror/dovecot+imaptest/repo target/release/mxrack
# The binary: the argument, else $MXRACK_BIN, else target/release/mxrack.
# Environment: SERVERS (mxrack,dovecot), PARTS (conformance,stress),
# CLIENTS (10), SECS (30), IMAPTEST_WORK (target/imaptest),
# IMAPTEST_BUILD_COMMIT (924f619), IMAPTEST_TESTS_COMMIT (HEAD),
# IMAPTEST_PICKS (f28e32f),
# KEEP=1 to keep the temporary folder (servers' logs, JSON results).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SRC=${1:?usage: imaptest.sh IMAPTEST_SOURCE (git checkout or bare git dir) [MXRACK_BINARY]}
BIN=${2:-${MXRACK_BIN:-$ROOT/target/release/mxrack}}
BIN=$(realpath "$BIN")
SERVERS=${SERVERS:-mxrack,dovecot}
PARTS=${PARTS:-conformance,stress}
CLIENTS=${CLIENTS:-10}
SECS=${SECS:-30}
WORKDIR=${IMAPTEST_WORK:-$ROOT/target/imaptest}
BUILD_COMMIT=${IMAPTEST_BUILD_COMMIT:-924f619}
TESTS_COMMIT=${IMAPTEST_TESTS_COMMIT:-HEAD}
PICKS=${IMAPTEST_PICKS-f28e32f}
RUN=$ROOT/firmware/bench/imaptest_run.py
USER1=imaptest1@example.net
USER2=imaptest2@example.net
PASS=imaptest-pass-1234
[ -x "$BIN" ] || { echo "no mxrack binary at $BIN" >&2; exit 1; }

# A checkout has .git; a bare repository is its own git dir.
if [ -d "$SRC/.git" ]; then GIT=(git --git-dir="$SRC/.git"); else GIT=(git --git-dir="$SRC"); fi
"${GIT[@]}" rev-parse -q --verify "$BUILD_COMMIT^{commit}" >/dev/null \
    || { echo "$SRC: no git history with commit $BUILD_COMMIT" >&2; exit 1; }
BUILD_SHA=$("${GIT[@]}" rev-parse "$BUILD_COMMIT^{commit}")
TESTS_SHA=$("${GIT[@]}" rev-parse "$TESTS_COMMIT^{commit}")

# --- packages: Dovecot (server and dev libraries) and the build tools --------------
need=()
for p in dovecot-dev dovecot-imapd dovecot-core autoconf automake libtool make gcc pkg-config; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}" >&2
    # The dovecot packages would start the system service: a policy-rc.d
    # that says no, only for this install.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# --- imaptest: build the old commit once, take the tests from the new one ----------
pick_shas=()
for c in $PICKS; do pick_shas+=("$("${GIT[@]}" rev-parse "$c^{commit}")"); done
BUILD=$WORKDIR/build-${BUILD_SHA:0:12}
for c in "${pick_shas[@]}"; do BUILD+="+${c:0:7}"; done
IMAPTEST=$BUILD/src/imaptest
if [ ! -x "$IMAPTEST" ]; then
    echo "== building imaptest ${BUILD_SHA:0:12} in $BUILD" >&2
    rm -rf "$BUILD"
    mkdir -p "$BUILD"
    "${GIT[@]}" archive "$BUILD_SHA" | tar -x -C "$BUILD"
    for c in "${pick_shas[@]}"; do  # upstream fixes of the C source (not its tests)
        "${GIT[@]}" diff "$c^" "$c" -- src ':!src/tests' | (cd "$BUILD" && patch -s -p1)
    done
    # build-aux/git-version-gen wants .git or a version file.
    echo "0.0.0+${BUILD_SHA:0:12}" > "$BUILD/version"
    cat > "$BUILD/debian-compat.h" <<'EOF'
/* Debian's 2.3.19 security updates carry 2.4's imap_parser_create() with
   a fourth (params) argument; NULL keeps the old behaviour (no list limit). */
#include "lib.h"
#include "imap-parser.h"
#define imap_parser_create(input, output, max_line_size) \
	(imap_parser_create)((input), (output), (max_line_size), NULL)
EOF
    compat=""
    grep -q 'imap_parser_params \*params' /usr/include/dovecot/imap-parser.h \
        && compat="-include $BUILD/debian-compat.h"
    (
        cd "$BUILD"
        autoreconf -i
        ./configure --with-dovecot=/usr/lib/dovecot
        make -j2 CPPFLAGS="$compat"
    ) > "$BUILD.log" 2>&1 || { tail -30 "$BUILD.log" >&2; echo "imaptest build failed, log: $BUILD.log" >&2; exit 1; }
fi
# libdovecot.so lives in /usr/lib/dovecot, not on the loader's path.
export LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
TESTS=$WORKDIR/tests-${TESTS_SHA:0:12}
if [ ! -d "$TESTS" ]; then
    mkdir -p "$TESTS.tmp"
    "${GIT[@]}" archive "$TESTS_SHA" src/tests | tar -x -C "$TESTS.tmp"
    mv "$TESTS.tmp/src/tests" "$TESTS"
    rm -rf "$TESTS.tmp"
fi
echo "== imaptest built from ${BUILD_SHA:0:12}${PICKS:+ with upstream fix(es) $PICKS}, tests from ${TESTS_SHA:0:12} ($(ls "$TESTS" | grep -vc '\.mbox$') entries)"

WORK=$(mktemp -d /tmp/imaptest.XXXXXX)
chmod 755 "$WORK"
MX_PID=""
DV_PID=""
cleanup() {
    [ -n "$MX_PID" ] && kill "$MX_PID" 2>/dev/null && wait "$MX_PID" 2>/dev/null
    [ -n "$DV_PID" ] && kill "$DV_PID" 2>/dev/null && wait "$DV_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The stress source: 200 deterministic messages with unique Message-IDs
# (imaptest tracks messages by Message-ID; see imaptest_run.py make_mbox).
STRESS_MBOX=$WORK/stress.mbox
python3 "$RUN" mbox --count 200 --out "$STRESS_MBOX"

read -r SMTP_PORT MX_PORT DV_PORT < <(python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
)

wait_port() {  # port, pid, what
    for _ in $(seq 1 200); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null; then
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

run_parts() {  # label, port, pid, memory field (Rss|Pss)
    if [[ ",$PARTS," == *",conformance,"* ]]; then
        echo "== $1: conformance (imaptest test=, one group at a time)" >&2
        python3 "$RUN" conformance --imaptest "$IMAPTEST" --port "$2" --user "$USER1" \
            --user2 "$USER2" --password "$PASS" --label "$1" --tests "$TESTS" --out "$WORK/$1.conformance.json"
    fi
    if [[ ",$PARTS," == *",stress,"* ]]; then
        echo "== $1: stress ($CLIENTS clients, $SECS s)" >&2
        python3 "$RUN" stress --imaptest "$IMAPTEST" --port "$2" --user "$USER1" --user2 "$USER2" \
            --password "$PASS" --label "$1" --pid "$3" --mbox "$STRESS_MBOX" --clients "$CLIENTS" \
            --secs "$SECS" --memory "$4" --out "$WORK/$1.stress.json"
    fi
}

# --- mxrack --------------------------------------------------------------------------------
# mxrack goes first even when only Dovecot is measured: Dovecot's passwd-file
# takes the hashes mxrack stored.
cat > "$WORK/mxrack.toml" <<TOML
[appliance]
hostname = "imaptest.example.net"
primary_domain = "example.net"
data_dir = "$WORK/mxrack-data"
demo = false

[smtp]
mx = ["127.0.0.1:$SMTP_PORT"]

[imap]
imap = ["127.0.0.1:$MX_PORT"]
allow_plaintext_auth = true

# imaptest logs in for every group and, in stress mode, again and again:
# successful logins give their count back, but wide budgets keep a failing
# group from locking the next ones out.
[auth]
network_attempts_max = 100000
account_attempts_max = 100000
pair_attempts_max = 100000
failure_delay_ms = 0

[log]
level = "warn"
TOML
echo "== mxrack ($BIN) on 127.0.0.1:$MX_PORT" >&2
"$BIN" --config "$WORK/mxrack.toml" run > "$WORK/mxrack.out" 2> "$WORK/mxrack.err" &
MX_PID=$!
for _ in $(seq 1 300); do grep -q '^mxrack ready' "$WORK/mxrack.out" && break; sleep 0.1; done
grep -q '^mxrack ready' "$WORK/mxrack.out" || { cat "$WORK/mxrack.err" >&2; exit 1; }
wait_port "$MX_PORT" "$MX_PID" mxrack
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
mxcli account add imaptest
mxcli domain add example.net --account imaptest
mxcli mailbox add "$USER1" --password "$PASS"
mxcli mailbox add "$USER2" --password "$PASS"
if [[ ",$SERVERS," == *",mxrack,"* ]]; then
    run_parts mxrack "$MX_PORT" "$MX_PID" Rss
fi
kill "$MX_PID"
wait "$MX_PID" 2>/dev/null || true
MX_PID=""

# --- Dovecot -------------------------------------------------------------------------------
if [[ ",$SERVERS," == *",dovecot,"* ]]; then
    DV=$WORK/dovecot
    mkdir -p "$DV/run" "$DV/state" "$DV/mail"
    chown nobody:nogroup "$DV/mail"
    # The same Argon2id PHC strings mxrack stored (so LOGIN costs the same on
    # both); when the store's format hides them, fresh ones with mxrack's
    # parameters (the argon2 crate's default: m=19456 KiB, t=2, p=1).
    : > "$DV/passwd"
    mapfile -t stored < <(grep -rhaoE '\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+' "$WORK/mxrack-data" 2>/dev/null | sort -u || true)
    verified=()
    for s in "${stored[@]}"; do  # a stored hash counts when Dovecot's own check accepts it
        doveadm pw -t "{ARGON2ID}$s" -p "$PASS" >/dev/null 2>&1 && verified+=("$s")
    done
    i=0
    for u in "$USER1" "$USER2"; do
        h=${verified[$i]:-}
        i=$((i + 1))
        if [ -z "$h" ]; then
            h=$(python3 - "$PASS" <<'PY'
import base64, os, sys
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
salt = os.urandom(16)
key = Argon2id(salt=salt, length=32, iterations=2, lanes=1, memory_cost=19456).derive(sys.argv[1].encode())
b64 = lambda x: base64.b64encode(x).decode().rstrip("=")
print(f"$argon2id$v=19$m=19456,t=2,p=1${b64(salt)}${b64(key)}")
PY
)
            echo "== dovecot: $u gets a fresh Argon2id hash (none found in mxrack's store)" >&2
        else
            echo "== dovecot: $u gets mxrack's stored hash ${h%\$*\$*}\$..." >&2
        fi
        printf '%s:{ARGON2ID}%s\n' "$u" "$h" >> "$DV/passwd"
    done
    cat > "$DV/dovecot.conf" <<CONF
base_dir = $DV/run
state_dir = $DV/state
instance_name = imaptest-bench
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = $DV/dovecot.log
mail_location = maildir:$DV/mail/%u
passdb {
  driver = passwd-file
  args = $DV/passwd
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
  # imaptest's stress clients all log in as one user from one address.
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
    only_loopback $(python3 -c "import sys; sys.path.insert(0, '$(dirname "$RUN")'); import imaptest_run; print(*imaptest_run.tree($DV_PID))")
    run_parts dovecot "$DV_PORT" "$DV_PID" Pss
    kill "$DV_PID"
    wait "$DV_PID" 2>/dev/null || true
    DV_PID=""
fi

# --- report --------------------------------------------------------------------------------
labels=()
for s in dovecot mxrack; do [[ ",$SERVERS," == *",$s,"* ]] && labels+=("$s"); done
if [[ ",$PARTS," == *",conformance,"* ]]; then
    echo
    echo "=== imaptest conformance (build ${BUILD_SHA:0:12}${PICKS:+ + $PICKS}, tests ${TESTS_SHA:0:12})"
    (cd "$WORK" && python3 "$RUN" report "${labels[@]/%/.conformance.json}")
fi
if [[ ",$PARTS," == *",stress,"* ]]; then
    echo
    echo "=== imaptest stress ($CLIENTS clients, $SECS s, mbox: $(grep -c '^From ' "$STRESS_MBOX") generated messages)"
    (cd "$WORK" && python3 "$RUN" stress-report "${labels[@]/%/.stress.json}")
fi
