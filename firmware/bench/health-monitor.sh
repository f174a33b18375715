#!/usr/bin/env bash
# Health monitor cost (issue 6): the monitor alone, over a generated fixture
# tree of 24 SCSI disks in 4 RAID1 arrays (2 members + 4 spares each, sysfs
# and procfs laid out as the kernel does), looking once a second (ten times
# more often than the default health.interval_secs = 10) for 60 s. Prints
# the looks taken, CPU seconds per minute (getrusage of the process), CPU per
# look, the same scaled to the default interval, and peak RSS.
# Run on demand: bash firmware/bench/health-monitor.sh
# Options via environment: SECONDS_RUN (60), INTERVAL (1), DISKS (24), ARRAYS (4),
# SYS_ROOT (a tree of your own instead of the generated one).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_RUN=${SECONDS_RUN:-60}
INTERVAL=${INTERVAL:-1}
DISKS=${DISKS:-24}
ARRAYS=${ARRAYS:-4}

cargo build --release -p mxrack >/dev/null
BIN=$PWD/target/release/mxrack
args=(health bench --seconds "$SECONDS_RUN" --interval-secs "$INTERVAL" --disks "$DISKS" --arrays "$ARRAYS")
if [ -n "${SYS_ROOT:-}" ]; then
    args+=(--sys-root "$SYS_ROOT")
fi
# The embedded default's data folder is not used: the bench keeps its own.
cd "$(mktemp -d /tmp/mxrack-health-bench.XXXXXX)"
"$BIN" "${args[@]}"
