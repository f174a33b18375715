"""Scenario 8: hot replace of a healthy member (issue 14).

Fresh disks (256 MiB, as scenario 4); once md0 is redundant (2 members in
sync + 1 hot spare) the technician asks for a preventive replacement of the
healthy disk MXHIL-0000: `mxrack disk replace MXHIL-0000`. The appliance
must use md's hot replace (`want_replacement`): md copies the member onto
the spare while it stays in service. Throughout, sampled every second from
/sys/block/md0/md/, `degraded` stays 0 and 2 members stay in sync; the
health watch never records "md0 is degraded" (console and status.json).
At the end md0 is 2 in sync (the old spare took the place), MXHIL-0000 is
out of md0, `mxrack disks` shows it "ready to remove" in bay 1, and every
message about it names bay 1 (the QEMU board's bay map: disk N at SCSI
target N is bay N+1).
"""

import re
import time

from hil import clients, guest
from hil.machine import HilError, wait_until
from scenarios import s4_drive_failure as s4

TITLE = "hot replace of a healthy member: md copies it onto the spare, never degraded, messages name the bay"

SERIAL = "MXHIL-0000"
BAY = "1"


def run(ctx):
    m = s4.boot(ctx)
    kernel = guest.disks(m.shell).get(SERIAL)
    if not kernel:
        raise HilError(f"the guest has no disk with serial {SERIAL}")
    s4.watched_disk(ctx, m, SERIAL)
    before = guest.md_state(m.shell)
    in_sync, spares, _ = guest.roles(before)
    if kernel not in in_sync or len(spares) != 1:
        raise HilError(f"{SERIAL} ({kernel}) is not an in-sync member beside one spare: {guest.describe(before)}")
    spare = spares[0]
    mark = m.console.mark()

    status, out = m.shell.run(f"{guest.MXRACK} disk replace {SERIAL}", timeout=180, check=False)
    ctx.note(f"mxrack disk replace {SERIAL} (exit {status}):")
    for line in out.strip().splitlines():
        ctx.note(f"  | {line}")
    if status != 0:
        raise HilError(f"`mxrack disk replace {SERIAL}` failed: {out}")
    if f"in bay {BAY}" not in out or "keeps both copies" not in out:
        raise HilError(f"`mxrack disk replace` does not name bay {BAY} or the hot replace: {out}")

    # Every second until the old member is gone and md0 is idle again:
    # degraded must read 0 and 2 members in sync in every sample.
    samples, copying = [], False
    started = time.time()

    def look():
        nonlocal copying
        s = guest.md_state(m.shell)
        samples.append(s)
        isync, _, _ = guest.roles(s)
        if s.get("degraded") != "0" or len(isync) < 2:
            raise HilError(
                f"md0 not redundant during the hot replace (+{time.time() - started:.0f}s): {guest.describe(s)}"
            )
        if s.get("sync_action") == "recover" or "replacement" in ",".join(s["members"].values()):
            copying = True
        done = kernel not in s["members"] and s.get("sync_action") == "idle"
        return done, guest.describe(s)

    state = wait_until(f"{SERIAL} copied onto the spare and out of md0, md0 redundant throughout", look, timeout=600)
    if not copying:
        raise HilError(f"no copy was seen in {len(samples)} samples: md's replace did not run")
    in_sync, spares, other = guest.roles(samples[-1])
    if spare not in in_sync or len(in_sync) != 2 or other:
        raise HilError(f"md0 after the hot replace: {state} (the spare was {spare})")
    ctx.note(f"md0 after {time.time() - started:.0f}s, {len(samples)} samples, degraded 0 in all: {state}")
    ctx.figure("hot replace", f"{time.time() - started:.0f}s for a 256 MiB member under TCG")

    # The watch's own words (every event goes to the console): the start,
    # the end of the copy, the removal, each naming bay 1; never degraded.
    for what, pattern in [
        ("the start", rf"Hot replace of disk {SERIAL} \(WWN [^)]*\) in bay {BAY} started by the operator"),
        ("the end of the copy", rf"md0: the copy of disk {SERIAL} \(WWN [^)]*\) in bay {BAY} is complete"),
        ("the removal", rf"Disk {SERIAL} \(WWN [^)]*\) in bay {BAY} removed from md0; it can be pulled"),
    ]:
        got = m.console.wait_for(pattern + ".*", 120, since=mark, what=f"the event for {what}")
        ctx.note(f"console: {got.group(0)}")
    degraded = [line for line in m.console.lines[mark:] if re.search(r"md0 \(raid1\) is degraded", line)]
    if degraded:
        raise HilError(f"the watch reported md0 degraded during a hot replace: {degraded}")

    page = clients.status_json(m.host_port(443))
    titles = [e["title"] for e in page.get("entries", [])]
    if s4.DEGRADED_TITLE in titles:
        raise HilError(f"status.json has {s4.DEGRADED_TITLE!r}: {titles}")
    disk = next((d for d in page["snapshot"]["disks"] if d.get("serial") == SERIAL), None)
    if not disk or disk.get("bay") != BAY or disk.get("condition") != "ready to remove":
        raise HilError(f"status.json: {SERIAL} is {disk and {k: disk.get(k) for k in ('bay', 'condition')}}")
    md0 = next(a for a in page["snapshot"]["arrays"] if a["name"] == "md0")
    for mem in md0["members"]:
        if mem.get("bay") is None or "member_index" not in mem:
            raise HilError(f"status.json: md0 member without bay/member_index: {mem}")
    ctx.note(f"status.json: {SERIAL} bay {disk['bay']}, {disk['condition']}; no degraded entry ({len(titles)} entries)")

    out, lines = s4.disks_cli(m)
    if SERIAL not in lines or "ready to remove" not in lines[SERIAL]:
        raise HilError(f"`mxrack disks` does not show {SERIAL} ready to remove:\n{out}")
    ctx.note(f"mxrack disks: {' '.join(lines[SERIAL].split())}")
