#!/usr/bin/env python3
"""Replica pair benchmark (issue 13), on demand; prints figures.

    python3 hil-tests/bench_replica.py [--failovers N] [--messages N]

In one run, under QEMU (TCG unless HIL_ACCEL=kvm):

1. a single appliance (image/out/qemu-x86_64: no DRBD), once md's first
   resync and ext4's inode-table zeroing are over, takes --messages SMTP
   messages over 2 connections, twice: the rate without replication;
2. HIL scenario 9 runs on the replica image with N-1 manual failovers and
   one automatic one (N = --failovers, default 5): the rate with
   replication on (and with the peer disconnected), the time from the
   active's SIGKILL to IMAP answering on the promoted node for each
   failover, and the acknowledged messages lost (must be 0).

Build the two images first (README, "Firmware image").
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from hil.machine import Machine, wait_until  # noqa: E402
from scenarios import s9_replica  # noqa: E402


class Ctx:
    def __init__(self, name, image):
        self.workdir = os.path.join(HERE, "work", name)
        os.makedirs(self.workdir, exist_ok=True)
        self.image_dir = image
        self.accel = "kvm" if os.environ.get("HIL_ACCEL") == "kvm" else "tcg"
        self.echo = False
        self.boot_timeout = 300
        self.machines = []
        self.figures = {}

    def note(self, msg):
        print(f"    {msg}", flush=True)

    def figure(self, key, value):
        self.figures[key] = value
        print(f"    {key}: {value}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--messages", type=int, default=s9_replica.RATE_MESSAGES)
    ap.add_argument("--single-only", action="store_true", help="only the single appliance's rate")
    args = ap.parse_args()
    image = os.path.join(REPO, "image", "out", "qemu-x86_64")
    s9_replica.RATE_MESSAGES = args.messages

    print("== single appliance (no replication)", flush=True)
    ctx = Ctx("bench_replica_single", image)
    m = Machine(os.path.join(ctx.workdir, "single"), image, accel=ctx.accel,
                disk_size=s9_replica.DISK_SIZE)
    ctx.machines.append(m)
    try:
        m.start(fresh=True)
        m.wait_ready(ctx.boot_timeout)
        s9_replica.md_idle(m)
        # And the fresh ext4's background zeroing of its inode tables.
        wait_until("ext4lazyinit done", lambda: (lambda n: (n.strip() == "0", n.strip()))(
            m.shell.run("ps | grep -c '[e]xt4lazyinit'", check=False)[1]), 600)
        rates = [s9_replica.smtp_rate(m.host_port(25), args.messages, f"single{i}")[0] for i in range(2)]
    finally:
        m.stop()
    single = sum(rates) / len(rates)
    print(f"    SMTP messages/s, single appliance: {single:.1f} ({', '.join(f'{r:.1f}' for r in rates)})", flush=True)
    if args.single_only:
        return

    print(f"== replica pair, {args.failovers} failovers", flush=True)
    os.environ["HIL_REPLICA_FAILOVERS"] = str(max(0, args.failovers - 1))
    ctx = Ctx("bench_replica_pair", image)
    t0 = time.monotonic()
    try:
        s9_replica.run(ctx)
    finally:
        for mm in ctx.machines:
            mm.stop()
    print(f"== done in {time.monotonic() - t0:.0f}s; single appliance {single:.1f} messages/s", flush=True)


if __name__ == "__main__":
    main()
