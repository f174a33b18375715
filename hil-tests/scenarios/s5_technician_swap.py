"""Scenario 5: the technician's swap.

Goes on from scenario 4's machine (disk MXHIL-0000 failed out of md0, the
spare rebuilt); run alone, it boots fresh disks and fails the disk the same
way first. The technician pulls the failing disk and puts a blank one in the
same slot: QMP `device_del` of disk0 (waiting for DEVICE_DELETED), its block
nodes deleted (d0, the blkdebug node bad0, f0), a raw node on a new blank
image added and `device_add` of a scsi-hd with serial MXHIL-NEW0 at the same
SCSI id. The health watch (`[health]` auto_add) must make the new disk md0's
hot spare with mdadm: md0 ends with 2 members in sync and 1 spare, the spare
being MXHIL-NEW0. The status page (status.json and the HTML /status) shows
the disk's incident, by serial, resolved; `mxrack disks` lists MXHIL-NEW0 as
the spare and no longer MXHIL-0000.
"""

import os

from hil import clients, guest
from hil.machine import HilError, wait_until
from scenarios import s4_drive_failure as s4

TITLE = "technician's swap: the failing disk pulled, a blank one becomes the hot spare"

NEW_SERIAL = "MXHIL-NEW0"
NEW_WWN = "0x5000c500a0b0cf00"
NEW_ID = "disk0new"
NEW_NODE = "new0"


def run(ctx):
    m = ctx.take_over(s4.HANDOVER)
    if m is not None:
        info = m.failed_disk
        ctx.note(f"goes on from scenario 4's machine: {info['serial']} failed out of md0, spare rebuilt")
    else:
        ctx.note("no machine from scenario 4: boots fresh disks and fails disk0 first")
        m = s4.boot(ctx)
        info = s4.fail_disk(ctx, m)
        s4.check_page_after_failure(ctx, m, info)
    old = m.disks[s4.FAILING]
    i = old.id[len("disk"):]

    # Pull it: the guest is told at once (virtio-scsi hot-unplug).
    m.qmp.execute("device_del", id=old.id)
    m.qmp.wait_event("DEVICE_DELETED", timeout=120, match=lambda d: d.get("device") == old.id)
    for node in (f"d{i}", f"bad{i}", f"f{i}"):
        m.qmp.execute("blockdev-del", **{"node-name": node})
    ctx.note(f"QMP: {old.id} ({info['serial']}) pulled from its slot; block nodes d{i}, bad{i}, f{i} deleted")
    wait_until(
        f"the guest no longer sees disk {info['serial']}",
        lambda: (lambda d: (info["serial"] not in d, d))(guest.disks(m.shell)),
        timeout=120,
    )

    # A new blank disk in the same slot (same SCSI id).
    plugged = m.console.mark()
    path = os.path.join(ctx.workdir, "new0.img")
    with open(path, "wb") as f:
        f.truncate(s4.DISK_SIZE)
    m.qmp.execute(
        "blockdev-add",
        driver="raw",
        **{"node-name": NEW_NODE, "file": {"driver": "file", "filename": path}},
    )
    m.qmp.execute(
        "device_add",
        driver="scsi-hd",
        bus="scsi0.0",
        drive=NEW_NODE,
        id=NEW_ID,
        serial=NEW_SERIAL,
        wwn=NEW_WWN,
        **{"scsi-id": s4.FAILING, "lun": 0},
    )
    ctx.note(f"QMP: blank disk {NEW_SERIAL} put in the same slot (scsi-id {s4.FAILING})")

    state = wait_until(
        "md0 has a hot spare again",
        lambda: (lambda s: (len(guest.roles(s)[1]) == 1, guest.describe(s)))(guest.md_state(m.shell)),
        timeout=180,
    )
    ctx.note(f"md0: {state}")
    state = wait_until(
        "md0: 2 members in sync + 1 spare, idle",
        lambda: (lambda s: (guest.redundant(s, spares=1), s))(guest.md_state(m.shell)),
        timeout=120,
    )
    serials = guest.disks(m.shell)
    spare = guest.roles(state)[1][0]
    if serials.get(NEW_SERIAL) != spare:
        raise HilError(f"md0's spare is {spare}, but {NEW_SERIAL} is {serials.get(NEW_SERIAL)} ({serials})")
    ctx.note(f"md0's spare is {spare}, serial {NEW_SERIAL}")

    # The page: the disk's incident resolved, by serial; nothing left open.
    title = s4.failing_title(info)

    def look():
        page = clients.status_json(m.host_port(443))
        e = clients.status_entry(page, title=title)
        snap = page.get("snapshot") or {}
        new = next((d for d in snap.get("disks", []) if d.get("serial") == NEW_SERIAL), None)
        ok = e is not None and e.get("resolved") and new is not None and page.get("open_incidents") == 0
        seen = (
            f"{title!r}: {'missing' if e is None else ('resolved' if e.get('resolved') else 'open')}; "
            f"{NEW_SERIAL}: {new and new.get('condition')}; summary {page.get('summary')!r}"
        )
        return bool(ok), (page if ok else seen)

    page = wait_until(f"status.json: {title!r} resolved, {NEW_SERIAL} watched, no open incident", look, timeout=120)
    e = clients.status_entry(page, title=title)
    new = next(d for d in page["snapshot"]["disks"] if d.get("serial") == NEW_SERIAL)
    if new.get("condition") != "spare":
        raise HilError(f"status.json: {NEW_SERIAL} is {new.get('condition')!r}, expected spare")
    for text in clients.entry_texts(e)[-2:]:
        ctx.note(f"  | {text}")
    ctx.note(f"status.json: {title!r} resolved; {NEW_SERIAL} spare; summary: {page['summary']}")
    # The watch's own event (mxrack logs every event to the console); it
    # names the disk by serial, WWN and bay (the pulled disk's bay).
    added = m.console.wait_for(
        rf"Disk {NEW_SERIAL} \(WWN [^)]+\) in bay \S+ added to md0 as its hot spare.*", 60, since=plugged,
        what=f"the event 'Disk {NEW_SERIAL} (WWN ...) in bay N added to md0 as its hot spare'",
    )
    ctx.note(f"console: {added.group(0)}")

    code, html = clients.https_get(m.host_port(443), "/status")
    if code != 200:
        raise HilError(f"/status answered {code}")
    got = clients.html_entry(html, title)
    if not got or not got[0].startswith("resolved") or info["serial"] not in got[1]:
        raise HilError(f"/status (HTML): entry {title!r} not shown resolved with its serial: {got}")
    ctx.note(f"/status (HTML): {title!r} {got[0]}")

    out, lines = s4.disks_cli(m)
    if NEW_SERIAL not in lines or "spare" not in lines[NEW_SERIAL]:
        raise HilError(f"`mxrack disks` does not list {NEW_SERIAL} as spare:\n{out}")
    if info["serial"] in lines:
        raise HilError(f"`mxrack disks` still lists the pulled disk {info['serial']}:\n{out}")
    ctx.note(f"mxrack disks: {' '.join(lines[NEW_SERIAL].split())}")
