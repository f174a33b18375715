#!/usr/bin/env bash
# RSS of `mxrack run` before and after N (1,000) `mxrack mailbox add` over
# the admin socket (issue 11): each add hashes a password with Argon2id
# (19 MiB of working memory). On the one fixed pool of mxrack-auth the
# server's RSS must stay within 10 MiB of the start figure; before it, each
# add left about 19 MiB behind.
# Run on demand: bash firmware/bench/mailbox-add-rss.sh
# Environment: MXRACK_BIN (default target/debug/mxrack, built if missing),
# N (1000).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-1000}
BIN=${MXRACK_BIN:-$PWD/target/debug/mxrack}
if [ ! -x "$BIN" ]; then
    cargo build -p mxrack >/dev/null
fi
work=$(mktemp -d /tmp/mxrack-rss.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cat >"$work/mxrack.toml" <<TOML
[appliance]
hostname = "mx.bench.example"
primary_domain = "example.net"
data_dir = "$work/data"
demo = true

[smtp]
mx = ["127.0.0.1:$(port)"]

[health]
self_check_at_start = false
TOML
"$BIN" --config "$work/mxrack.toml" run >"$work/stdout" 2>"$work/stderr" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
    grep -q '^mxrack ready:' "$work/stdout" 2>/dev/null && break
    sleep 0.1
done
grep -q '^mxrack ready:' "$work/stdout" || { echo "mxrack did not start"; cat "$work/stderr"; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
mx() { "$BIN" --config "$work/mxrack.toml" "$@" >/dev/null; }
mx account add bench
mx domain add bench.example --account bench
# One add first, so the pool's threads and buffers exist in the start figure
# (they are the fixed cost: 2 threads x 19 MiB).
mx mailbox add warm@bench.example --password 'warm-password-0'
before=$(rss_kib)
start=$(date +%s)
for i in $(seq 1 "$N"); do
    mx mailbox add "user$i@bench.example" --password "password-$i-bench"
done
after=$(rss_kib)
secs=$(( $(date +%s) - start ))
[ -S "$work/data/admin.sock" ] || { echo "the adds did not go over the admin socket"; exit 1; }
echo "mailbox adds:      $N over the admin socket in ${secs} s"
echo "RSS before:        $((before / 1024)) MiB ($before KiB)"
echo "RSS after:         $((after / 1024)) MiB ($after KiB)"
echo "growth:            $(( (after - before) / 1024 )) MiB ($((after - before)) KiB)"
