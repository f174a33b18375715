"""Scenario 7: metadata lost, damaged, and a power cut during reconstruct.

The seed's worst day (Cyrus metadata rebuilt from the message files), on the
image. Mail is delivered over SMTP into the demo mailbox, filed into
folders with flags over IMAPS (APPEND, STORE, MOVE, EXPUNGE) and read back
as a client sees it (every folder: UIDVALIDITY, UID, flags, bytes). Then,
inside the guest, with the supervisor on hold (`/run/mxrack/hold`):

1. meta.redb deleted: `mxrack run` refuses and names `mxrack reconstruct`;
   reconstruct; the appliance starts and IMAP shows exactly the same view;
2. meta.redb overwritten with garbage past its first page: the same;
3. meta.redb deleted, `mxrack reconstruct` started, and QEMU killed
   (SIGKILL) shortly after: the appliance boots again; if the cut came
   before the swap, mxrack refuses to start and the technician runs
   reconstruct once more; either way IMAP shows the same view.
"""

import imaplib
import random
import re
import smtplib
import time

from hil import clients
from hil.machine import HilError

TITLE = "meta.redb deleted, corrupted, power cut during reconstruct: every message back in its folder with its flags"

MESSAGES = 120
CONFIG = "/run/mxrack/mxrack.toml"
DATA = "/data/mxrack"


def imaps(m, password):
    c = imaplib.IMAP4_SSL(clients.HOST, m.host_port(993), ssl_context=clients.tls_context(), timeout=120)
    typ, _ = c.login(clients.DEMO, password)
    if typ != "OK":
        raise HilError("IMAP login failed")
    return c


def fill(m, password):
    with smtplib.SMTP(clients.HOST, m.host_port(25), timeout=120) as s:
        s.ehlo("client.example")
        for i in range(MESSAGES):
            token = clients.new_token(f"rec{i:03d}")
            s.sendmail("hil@client.example", [clients.DEMO], clients.make_message(token, f"reconstruct {i}"))
    c = imaps(m, password)
    try:
        for cmd in (
            lambda: c.create("Archive"),
            lambda: c.append("Sent", r"(\Seen)", None, clients.make_message(clients.new_token("sent"), "sent")),
            lambda: c.select("INBOX"),
            lambda: c.uid("STORE", "1:20", "+FLAGS", r"(\Seen $Label1)"),
            lambda: c.uid("STORE", "5", "+FLAGS", r"(\Flagged)"),
            lambda: c.uid("MOVE", "21:40", "Archive"),
            lambda: c.uid("STORE", "41:45", "+FLAGS", r"(\Deleted)"),
            lambda: c.expunge(),
            lambda: c.uid("COPY", "50:55", "Trash"),
        ):
            typ, data = cmd()
            if typ != "OK":
                raise HilError(f"IMAP set-up failed: {data}")
    finally:
        c.logout()


def view(m, password):
    c = imaps(m, password)
    try:
        typ, folders = c.list()
        out = {}
        for line in folders:
            name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
            typ, _ = c.select(f'"{name}"', readonly=True)
            if typ != "OK":
                raise HilError(f"SELECT {name} failed")
            validity = c.response("UIDVALIDITY")[1][0]
            msgs = []
            typ, data = c.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
            if typ == "OK" and data and data[0] is not None:
                for item in data:
                    if isinstance(item, tuple):
                        head = item[0].decode()
                        uid = int(re.search(r"UID (\d+)", head).group(1))
                        flags = tuple(sorted(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()))
                        msgs.append((uid, flags, item[1]))
            out[name] = (validity, sorted(msgs))
        return out
    finally:
        c.logout()


def describe(v):
    return ", ".join(f"{k}: {len(msgs)}" for k, (_, msgs) in sorted(v.items()))


def hold_and_stop(m):
    """Supervisor on hold, mxrack stopped (SIGTERM, waits until gone)."""
    m.shell.run(
        "touch /run/mxrack/hold; p=$(cat /run/mxrack/mxrack.pid 2>/dev/null); "
        '[ -n "$p" ] && kill "$p"; i=0; while [ -n "$p" ] && kill -0 "$p" 2>/dev/null; do '
        "sleep 1; i=$((i+1)); [ $i -gt 120 ] && exit 1; done; true",
        timeout=180,
    )


def release_and_wait(m, timeout):
    since = m.console.mark()
    m.shell.run("rm -f /run/mxrack/hold")
    m.console.wait_for(r"mxrack-appliance: READY", timeout, since=since, what="READY after the hold")


def refused_then_reconstruct(m, ctx, what):
    status, out = m.shell.run(f"mxrack --config {CONFIG} run 2>&1 | tail -3", timeout=120, check=False)
    if "mxrack reconstruct" not in out:
        raise HilError(f"{what}: mxrack run did not refuse with the hint:\n{out}")
    t0 = time.monotonic()
    _, out = m.shell.run(f"mxrack --config {CONFIG} reconstruct", timeout=600)
    ctx.note(f"{what}: refused with the hint; reconstruct took {time.monotonic() - t0:.1f}s wall: "
             + " ".join(out.split())[:300])


def run(ctx):
    m = ctx.machine().start(fresh=True)
    m.wait_ready(ctx.boot_timeout)
    _, password = m.shell.run(f"cat {DATA}/demo-password")
    password = password.strip()
    fill(m, password)
    before = view(m, password)
    ctx.note(f"filed: {describe(before)}")

    # 1. meta.redb deleted.
    hold_and_stop(m)
    m.shell.run(f"rm {DATA}/meta.redb")
    refused_then_reconstruct(m, ctx, "meta.redb deleted")
    release_and_wait(m, ctx.boot_timeout)
    if view(m, password) != before:
        raise HilError("after reconstruct (deleted meta.redb) IMAP shows a different view")
    ctx.note("deleted meta.redb: every message back in its folder with UID and flags")

    # 2. meta.redb overwritten with garbage.
    hold_and_stop(m)
    m.shell.run(
        f"s=$(wc -c < {DATA}/meta.redb); dd if=/dev/urandom of={DATA}/meta.redb bs=4096 seek=1 "
        f"count=$(( s / 4096 )) conv=notrunc 2>/dev/null; sync"
    )
    refused_then_reconstruct(m, ctx, "meta.redb corrupted")
    release_and_wait(m, ctx.boot_timeout)
    if view(m, password) != before:
        raise HilError("after reconstruct (corrupt meta.redb) IMAP shows a different view")
    ctx.note("corrupt meta.redb: every message back in its folder with UID and flags")

    # 3. Power cut during reconstruct.
    hold_and_stop(m)
    m.shell.run(f"rm {DATA}/meta.redb; sync")
    m.shell.sock.sendall(f"mxrack --config {CONFIG} reconstruct >/dev/null 2>&1 &\n".encode())
    delay = random.uniform(0.0, 0.4)
    time.sleep(delay)
    m.power_cut()
    ctx.note(f"power cut {delay:.2f}s after reconstruct started")
    m.start()
    since = 0
    hit = m.console.wait_for(
        r"mxrack-appliance: READY|mxrack reconstruct", ctx.boot_timeout, since=since,
        what="READY or the reconstruct hint after the cut",
    )
    if hit.group(0).startswith("mxrack-appliance: READY"):
        m.shell.sync()
        ctx.note("the cut came after the swap: the appliance started on the rebuilt database")
    else:
        m.shell.sync()
        hold_and_stop(m)
        _, out = m.shell.run(f"mxrack --config {CONFIG} reconstruct", timeout=600)
        ctx.note("the cut came before the swap: mxrack refused to start; reconstruct run again: "
                 + " ".join(out.split())[:200])
        release_and_wait(m, ctx.boot_timeout)
    if view(m, password) != before:
        raise HilError("after the power cut during reconstruct IMAP shows a different view")
    _, out = m.shell.run(f"mxrack --config {CONFIG} verify", timeout=300)
    ctx.note("power cut during reconstruct: every message back; verify: " + " ".join(out.split())[:200])
