#!/usr/bin/env bash
# Memory per SMTP session during DATA (issue 10): SESSIONS sessions (default
# 20, then 100) each send MEGABYTES (default 24) of DATA slowly and never
# finish it; prints the server's RSS before, while they all hold their
# unfinished DATA, and its peak (VmHWM). Before streaming, 20 such sessions
# took 474 MiB (the whole message in memory, and a copy for scoring).
# Run on demand: bash firmware/bench/data-memory.sh   (SESSIONS="20 100")
# Environment: SESSIONS, MEGABYTES, SECONDS_PER_MESSAGE (how slowly: default
# 20), MXRACK_BIN (default the debug build, built here).
set -euo pipefail
cd "$(dirname "$0")/../.."
SESSIONS=${SESSIONS:-"20 100"}
MEGABYTES=${MEGABYTES:-24}
SECONDS_PER_MESSAGE=${SECONDS_PER_MESSAGE:-20}
if [ -z "${MXRACK_BIN:-}" ]; then
    cargo build -p mxrack >/dev/null
    export MXRACK_BIN=$PWD/target/debug/mxrack
fi
for n in $SESSIONS; do
    python3 - "$n" "$MEGABYTES" "$SECONDS_PER_MESSAGE" <<'PY'
import sys, threading, time
sys.path.insert(0, "firmware/e2e")
from mxlib import DEMO, Raw, Server

sessions, megabytes, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
MIB = 1024 * 1024

def rss(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        fields[k] = int(v.split()[0]) / 1024 if v.strip().endswith("kB") else v
    return fields["VmRSS"], fields["VmHWM"]

srv = Server(max_message_bytes=25 * MIB, max_connections=sessions + 10,
             idle_timeout_secs=600)
srv.start()
try:
    pid = srv.proc.pid
    time.sleep(1)  # let start-up settle before the first look
    before, _ = rss(pid)
    piece = (b"z" * 1022 + b"\r\n") * 64  # 64 KiB of 1 KiB lines
    pieces = megabytes * MIB // len(piece)
    pause = seconds / pieces
    sent = [0] * sessions
    clients = []
    ready = threading.Barrier(sessions + 1)
    hold = threading.Event()

    def session(i):
        c = Raw(srv.mx_port, timeout=600)
        clients.append(c)
        c.expect(220)
        c.cmd("EHLO bench.test", 250)
        c.cmd("MAIL FROM:<bench@example.org>", 250)
        c.cmd(f"RCPT TO:<{DEMO}>", 250)
        c.cmd("DATA", 354)
        c.send_raw(b"Subject: unfinished\r\n\r\n")
        for _ in range(pieces):
            c.send_raw(piece)
            sent[i] += len(piece)
            time.sleep(pause)
        ready.wait()
        hold.wait()  # never finish the DATA

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(sessions)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    peak_during = 0.0
    while ready.n_waiting < sessions:
        peak_during = max(peak_during, rss(pid)[0])
        time.sleep(0.2)
    time.sleep(1)  # what was sent is now read
    during, hwm = rss(pid)
    peak_during = max(peak_during, during)
    ready.wait()
    held = sum(sent) / MIB
    files = len(list((srv.data / "msg").iterdir()))
    print(f"{sessions} sessions x {megabytes} MB of unfinished DATA ({held:.0f} MiB sent "
          f"in {time.monotonic() - t0:.0f} s, {files} message files growing): "
          f"RSS before {before:.0f} MiB, while held {during:.0f} MiB, "
          f"highest seen while sending {peak_during:.0f} MiB, VmHWM {hwm:.0f} MiB; "
          f"{(during - before) / sessions * 1024:.0f} KiB per session")
    for c in clients:
        c.close()
finally:
    srv.teardown()
PY
done
