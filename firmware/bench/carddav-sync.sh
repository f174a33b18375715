#!/usr/bin/env bash
# CardDAV sync benchmark (issue 18): mxrack beside Radicale and Xandikos
# (both Debian), one run, the same client (Debian's vdirsyncer) and the same
# 5,000-card book (deterministic vCards 3.0 with name, two phones, work
# address, org, title, note; every 10th with a 3 KiB JPEG PHOTO).
#
# For each server, on 127.0.0.1 and a free port (details in
# firmware/bench/carddav_sync.py, which does the work):
#   upload       vdirsyncer initial sync: 5,000 cards local -> empty server book
#   download     a fresh local folder, vdirsyncer initial sync server -> local
#   incremental  10 changes on the server side over CardDAV (6 edits with
#                If-Match, 2 deletes, 2 new cards), then vdirsyncer sync of the
#                upload folder (checked: edits, deletions, additions arrive)
# and prints the time of each step, the server's peak RSS (VmHWM of
# /proc/PID/status) after each step, and the ratios mxrack/Radicale and
# mxrack/Xandikos.
#
#   mxrack    `mxrack run` with the HTTPS web listener, demo mailbox (its
#             password: data/demo-password), book /dav/books/<mailbox>/personal/;
#             vdirsyncer pins the self-signed certificate's fingerprint
#   Radicale  radicale 3 (Debian), htpasswd auth (plain), plain HTTP
#   Xandikos  xandikos (Debian), git-backed, --defaults, plain HTTP, no auth
# The servers differ in transport: mxrack serves DAV over TLS only, the other
# two run over plain HTTP here, which favours them slightly.
#
# Run on demand (not in CI), as root on a Debian machine, a few minutes:
#     bash firmware/bench/carddav-sync.sh [MXRACK_BINARY]
# The binary: the argument, else $MXRACK_BIN, else target/release/mxrack
# (built with `cargo build --release -p mxrack` when missing).
# Environment: CARDS (5000), CHANGES (10), SERVERS (mxrack,radicale,xandikos),
# KEEP=1 to keep the temporary folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARDS=${CARDS:-5000}
CHANGES=${CHANGES:-10}
SERVERS=${SERVERS:-mxrack,radicale,xandikos}
BIN=${1:-${MXRACK_BIN:-$PWD/target/release/mxrack}}

need=()
command -v vdirsyncer >/dev/null || need+=(vdirsyncer)
command -v radicale >/dev/null || need+=(radicale)
command -v xandikos >/dev/null || need+=(xandikos)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}" >&2
    apt-get update -qq
    # Radicale's package would start the system service: a policy-rc.d that
    # says no, only for this install.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
if [[ ",$SERVERS," == *",mxrack,"* ]] && [ ! -x "$BIN" ]; then
    if [ "$BIN" = "$PWD/target/release/mxrack" ]; then
        cargo build --release --locked -p mxrack >/dev/null
    else
        echo "no mxrack binary at $BIN" >&2
        exit 1
    fi
fi

exec python3 firmware/bench/carddav_sync.py --mxrack "$BIN" --servers "$SERVERS" \
    --cards "$CARDS" --changes "$CHANGES"
