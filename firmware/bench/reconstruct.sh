#!/usr/bin/env bash
# Reconstruct benchmark (issue 12): a data folder with MESSAGES messages in
# MAILBOXES mailboxes (default 100,000 in 1,000), meta.redb deleted, then
# `mxrack reconstruct` (release build) rebuilds it; prints the time, the
# rate and reconstruct's peak RSS, then `mxrack verify` on the result.
# Also the other way to lose metadata: meta.redb overwritten with garbage.
# Run on demand: bash firmware/bench/reconstruct.sh
# Environment: MESSAGES, MAILBOXES, WORK (a folder on the disk to measure;
# default a new one under /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-100000}
MAILBOXES=${MAILBOXES:-1000}
cargo build --release -p mxrack >/dev/null
cargo build --release -p mxrack-store --example recovery_fill >/dev/null
BIN=$PWD/target/release/mxrack
FILL=$PWD/target/release/examples/recovery_fill
WORK=${WORK:-$(mktemp -d /var/tmp/mxrack-reconstruct.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT
DATA=$WORK/data
rm -rf "$DATA"
"$FILL" "$DATA" "$MAILBOXES" "$MESSAGES"
du -sh "$DATA/msg" "$DATA/meta.redb" "$DATA/recovery" | sed 's/^/  /'

measure() {  # label, then the command; prints wall time and the child's peak RSS
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
r = subprocess.run(cmd, capture_output=True, text=True)
wall = time.monotonic() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{label}: exit {r.returncode}, {wall:.2f} s wall, peak RSS {rss:.0f} MiB")
for line in (r.stdout + r.stderr).strip().splitlines()[-6:]:
    print("    " + line)
PY
}

echo "== meta.redb deleted"
rm "$DATA/meta.redb"
sync
measure "reconstruct ($MESSAGES messages)" "$BIN" --data "$DATA" reconstruct
measure "verify" "$BIN" --data "$DATA" verify

echo "== meta.redb overwritten with garbage (after its first 4 KiB)"
size=$(stat -c %s "$DATA/meta.redb")
dd if=/dev/urandom of="$DATA/meta.redb" bs=4096 seek=1 count=$((size / 4096 - 1)) conv=notrunc status=none
sync
measure "reconstruct ($MESSAGES messages)" "$BIN" --data "$DATA" reconstruct

rm -rf "$WORK"
