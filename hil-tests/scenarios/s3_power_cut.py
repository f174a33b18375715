"""Scenario 3: power cut.

Two SMTP clients send messages in a loop through the MX port; once enough
have been acknowledged (250 after DATA), QEMU is killed with SIGKILL while
they are still sending: the guest's caches are lost as in a power cut (what
QEMU already wrote to the disk image files stays, as on a disk that honours
flushes). The appliance boots again on the same disks (journal replay, RAID
resync from its bitmap) and every message that got a 250 must be in the
store, byte for byte.
"""

import random
import smtplib
import threading
import time

from hil import clients
from hil.machine import HilError

TITLE = "power cut mid-stream: every acknowledged message survives intact"

SENDERS = 2
ACKED_BEFORE_CUT = 150
SEND_DEADLINE = 240  # seconds to reach ACKED_BEFORE_CUT



def sender(host_port, n, acked, lock, stop, errors):
    seq = 0
    try:
        with smtplib.SMTP(clients.HOST, host_port, timeout=60) as s:
            s.ehlo("client.example")
            while not stop.is_set():
                seq += 1
                token = f"cut-{n}-{seq:05d}"
                msg = clients.make_message(token, f"power cut {token}", body_lines=20 + seq % 40)
                s.sendmail("hil@client.example", [clients.DEMO], msg)
                # sendmail returned: the server said 250 after DATA.
                with lock:
                    acked[token] = msg
    except (smtplib.SMTPException, OSError) as e:
        if not stop.is_set():
            errors.append(f"sender {n}: {e!r}")


def run(ctx):
    m = ctx.machine().start(fresh=True)
    m.wait_ready(ctx.boot_timeout)

    acked, lock, stop, errors = {}, threading.Lock(), threading.Event(), []
    threads = [
        threading.Thread(target=sender, args=(m.host_port(25), n, acked, lock, stop, errors), daemon=True)
        for n in range(SENDERS)
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while True:
        with lock:
            count = len(acked)
        if count >= ACKED_BEFORE_CUT:
            # Cut at a random moment of the following transactions.
            time.sleep(random.uniform(0, 0.3))
            break
        if errors:
            raise HilError(f"sending failed before the power cut: {errors}")
        if time.monotonic() - t0 > SEND_DEADLINE:
            raise HilError(f"only {count} messages acknowledged in {SEND_DEADLINE}s")
        time.sleep(0.05)
    # The cut comes while both clients are inside transactions; then they
    # stop, and what they recorded as acknowledged is final.
    m.power_cut()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    with lock:
        survivors = dict(acked)
    rate = len(survivors) / (time.monotonic() - t0)
    ctx.note(f"power cut after {len(survivors)} acknowledged messages ({rate:.1f}/s); senders were mid-stream")

    m.start()
    wall, _, _ = m.wait_ready(ctx.boot_timeout)
    ctx.figure("boot to ready after the power cut", f"{wall:.1f}s wall")
    stored = clients.store_messages(m.shell)
    by_id = {}
    for uid, data in stored.items():
        by_id.setdefault(clients.header_value(data, "X-HIL-Id"), []).append(data)
    lost = [t for t in survivors if t not in by_id]
    altered = [t for t, msg in survivors.items() if t in by_id and not any(d.endswith(msg) for d in by_id[t])]
    unacked_kept = len([t for t in by_id if t and t not in survivors])
    ctx.note(
        f"after reboot: {len(stored)} messages stored, {len(survivors)} acknowledged, "
        f"{unacked_kept} unacknowledged kept too"
    )
    if lost or altered:
        raise HilError(
            f"acknowledged messages lost: {sorted(lost)[:10]} ({len(lost)}), "
            f"altered: {sorted(altered)[:10]} ({len(altered)})"
        )

    # And the appliance takes mail again.
    token = clients.new_token("after")
    clients.smtp_send_mx(m.host_port(25), clients.make_message(token, "after the power cut"))
    ctx.note("mail accepted again after the reboot")
    _, mdstat = m.shell.run("cat /proc/mdstat")
    md0 = [line.strip() for line in mdstat.splitlines() if "md0" in line or "blocks" in line]
    ctx.note("md0 after the cut: " + " ".join(md0))
