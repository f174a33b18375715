"""Scenario 4: drive failure.

Fresh disks (256 MiB, so the first resync and the rebuild take seconds under
TCG); once md0 is redundant (2 members in sync + 1 hot spare) and a message
is stored, disk MXHIL-0000 (QEMU's disk0) starts failing every read and
write: QMP `blockdev-add` of a blkdebug node over its file node f0, then
`blockdev-reopen` of its raw node d0 onto it. Three direct reads of the disk
in the guest give the SCSI layer I/O errors. The health watch
(`[health]` auto_fail, threshold 5 errors) must fail the disk out of md0
and remove it; the hot spare rebuilds and md0 is redundant again (2 in sync,
no spare). The status page (status.json and the HTML /status, from the host
over HTTPS) must show the open incident "Disk MXHIL-0000 failing (bay 1)"
with the bay to pull it from (board/qemu-x86_64's bay map: disk N at SCSI
target N is bay N+1), and "RAID array md0 degraded" resolved;
`mxrack disks` names the disk by serial; mail taken before and after the
failure is in the store intact.

When scenario 5 runs next, the machine is handed to it as it is (disk still
failing, in its slot): the technician's swap goes on from here.
"""

import re
import time

from hil import clients, guest
from hil.machine import HilError, wait_until

TITLE = "drive failure: the failing disk is failed out, the spare rebuilds, the page names its serial"

DISK_SIZE = 256 << 20
FAILING = 0  # index of the disk that fails: disk0, serial MXHIL-0000
HANDOVER = "s4:failed-disk"
ERROR_READS = 3
DEGRADED_TITLE = "RAID array md0 degraded"


def boot(ctx):
    """A fresh appliance with small disks; waits until the health watch has
    seen md0 redundant. Returns the machine."""
    m = ctx.machine(disk_size=DISK_SIZE).start(fresh=True)
    wall, _, listeners = m.wait_ready(ctx.boot_timeout)
    ctx.figure("boot to ready", f"{wall:.1f}s wall")
    if 443 not in listeners.values():
        raise HilError("no HTTPS listener (guest port 443) in the ready line: the status page is needed")
    # The first boot's resync must end before a member may fail: until then
    # the second member does not hold a full copy.
    state = wait_until(
        "md0 redundant after the first resync (2 in sync + 1 spare, idle)",
        lambda: (lambda s: (guest.redundant(s), guest.describe(s)))(guest.md_state(m.shell)),
        timeout=300,
    )
    ctx.note(f"md0: {state}")
    return m


def watched_disk(ctx, m, serial):
    """The health watch's view of a disk (status.json snapshot), once it
    sees md0 with 2 members in sync and a spare."""

    def look():
        page = clients.status_json(m.host_port(443))
        snap = page.get("snapshot") or {}
        disk = next((d for d in snap.get("disks", []) if d.get("serial") == serial), None)
        md0 = next((a for a in snap.get("arrays", []) if a.get("name") == "md0"), None)
        ok = disk is not None and md0 is not None and md0.get("in_sync") == 2 and md0.get("spares") == 1
        seen = (
            f"disk {serial}: {disk and {k: disk.get(k) for k in ('kernel', 'bay', 'path', 'condition')}}, "
            f"md0: {md0 and {k: md0.get(k) for k in ('in_sync', 'spares', 'sync_action')}}"
        )
        return ok, (disk if ok else seen)

    return wait_until(f"the health watch sees disk {serial} in a redundant md0", look, timeout=120)


def fail_disk(ctx, m):
    """Makes disk FAILING fail (blkdebug), reads it until it errs, and waits
    until the watch failed it out and the spare rebuilt. Returns
    {serial, kernel, bay}."""
    disk = m.disks[FAILING]
    serial = disk.serial
    kernel = guest.disks(m.shell).get(serial)
    if not kernel:
        raise HilError(f"the guest has no disk with serial {serial}")
    view = watched_disk(ctx, m, serial)
    bay = view.get("bay")
    path = view.get("path", "")
    if view.get("kernel") != kernel:
        raise HilError(f"the watch calls disk {serial} {view.get('kernel')}, the guest {kernel}")
    if not re.fullmatch(r"pci-0000:00:[0-9a-f]{2}\.[0-7]-scsi-0:0:%d:0" % FAILING, path):
        raise HilError(f"disk {serial}: unexpected path {path!r}")
    if bay != str(FAILING + 1):
        raise HilError(f"disk {serial} at {path}: bay {bay!r}, the QEMU board's map says {FAILING + 1}")
    ctx.note(f"disk {serial} is {kernel} in bay {bay} ({path}), condition {view.get('condition')}")

    # A fresh ext4 zeroes its inode tables in the background (ext4lazyinit,
    # large writes). A member that fails under such a write stalls every
    # write to md0 for a minute or more under TCG while md retries it sector
    # by sector for its bad block log (kernel md, not mxrack). An appliance
    # in service is long past that: wait until it is done and flush.
    wait_until(
        "ext4lazyinit done on /data",
        lambda: (lambda out: (out.strip() == "0", out.strip()))(
            m.shell.run("ps | grep -c '[e]xt4lazyinit'", check=False)[1]
        ),
        timeout=180,
    )
    m.shell.run("sync", timeout=120)

    i = disk.id[len("disk"):]
    m.qmp.execute(
        "blockdev-add",
        driver="blkdebug",
        **{
            "node-name": f"bad{i}",
            "image": f"f{i}",
            "inject-error": [
                {"event": "read_aio", "errno": 5},
                {"event": "write_aio", "errno": 5},
            ],
        },
    )
    m.qmp.execute(
        "blockdev-reopen",
        options=[{"driver": "raw", "node-name": f"d{i}", "file": f"bad{i}"}],
    )
    injected = time.time()
    nodes = {n["node-name"]: n for n in m.qmp.execute("query-named-block-nodes", flat=True)}
    if nodes.get(f"d{i}", {}).get("file", "").find('"blkdebug"') < 0:
        raise HilError(f"QMP: node d{i} is not on the blkdebug node after blockdev-reopen: {nodes.get(f'd{i}')}")
    ctx.note(f"QMP: {disk.id} ({serial}) fails every read and write from now on (blkdebug EIO)")

    # Direct reads of the disk until ERROR_READS of them failed.
    dd = f"dd if=/dev/{kernel} of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null"
    tries, errs = 0, 0
    while errs < ERROR_READS:
        if tries >= ERROR_READS + 5:
            raise HilError(
                f"only {errs} of {tries} direct reads of /dev/{kernel} failed after the failure injection "
                f"(QMP d{i}: {nodes.get(f'd{i}', {}).get('file')})"
            )
        status, _ = m.shell.run(dd, timeout=180, check=False)
        tries += 1
        errs += status != 0
    ioerr = guest.read_value(m.shell, f"/sys/block/{kernel}/device/ioerr_cnt")
    ctx.note(f"{errs} of {tries} direct reads of /dev/{kernel} failed; ioerr_cnt={ioerr}")

    state = wait_until(
        f"dev-{kernel} ({serial}) gone from /sys/block/md0/md/",
        lambda: (lambda s: (kernel not in s["members"], guest.describe(s)))(guest.md_state(m.shell)),
        timeout=180,
    )
    ctx.note(f"md0 after the fail-out (+{time.time() - injected:.0f}s): {state}")
    state = wait_until(
        "md0 rebuilt onto the spare (idle, degraded 0, 2 in sync)",
        lambda: (lambda s: (guest.redundant(s, spares=0), guest.describe(s)))(guest.md_state(m.shell)),
        timeout=300,
    )
    ctx.note(f"md0 rebuilt (+{time.time() - injected:.0f}s): {state}")
    return {"serial": serial, "kernel": kernel, "bay": bay, "injected": injected}


def failing_title(info):
    return f"Disk {info['serial']} failing (bay {info['bay']})"


def check_page_after_failure(ctx, m, info):
    """status.json: the disk's incident open, md0's resolved; /status shows
    the same."""
    title = failing_title(info)

    def look():
        page = clients.status_json(m.host_port(443))
        disk_e = clients.status_entry(page, title=title)
        md_e = clients.status_entry(page, title=DEGRADED_TITLE)
        pullable = disk_e is not None and any(
            f"in bay {info['bay']} removed from md0; it can be pulled" in t for t in clients.entry_texts(disk_e)
        )
        ok = disk_e is not None and pullable and md_e is not None and md_e.get("resolved")
        seen = f"summary {page.get('summary')!r}; titles {[e['title'] for e in page.get('entries', [])]}"
        return bool(ok), (page if ok else seen)

    page = wait_until(f"status.json: {title!r} saying where to pull it, {DEGRADED_TITLE!r} resolved", look, timeout=120)
    disk_e = clients.status_entry(page, title=title)
    if disk_e.get("resolved"):
        raise HilError(f"{title!r} is resolved while the disk is still in its bay")
    ctx.note(f"status.json: {title!r} open, {len(disk_e['updates'])} updates; {DEGRADED_TITLE!r} resolved")
    # Update times (guest clock, UTC like the host's) after the injection.
    for u in disk_e["updates"]:
        ctx.note(f"  | +{max(0, u['time'] - info['injected']):.0f}s {u['text']}")
    # Who took it out: the watch (auto_fail, on its error counters) or md on
    # its own, when a write to the disk failed first.
    by_watch = any("failed out of md0" in t for t in clients.entry_texts(disk_e))
    ctx.note("failed out by " + ("the health watch (auto_fail)" if by_watch else "md itself, before the watch acted"))
    ctx.note(f"summary: {page['summary']}")

    code, html = clients.https_get(m.host_port(443), "/status")
    if code != 200:
        raise HilError(f"/status answered {code}")
    got = clients.html_entry(html, title)
    if not got:
        raise HilError(f"/status (HTML) has no entry {title!r}")
    if got[0] != "open" or info["serial"] not in got[1]:
        raise HilError(f"/status (HTML): entry {title!r} is {got[0]!r}, expected open: {got[1][:300]}")
    md = clients.html_entry(html, DEGRADED_TITLE)
    if not md or not md[0].startswith("resolved"):
        raise HilError(f"/status (HTML): {DEGRADED_TITLE!r} is not shown resolved: {md}")
    ctx.note(f"/status (HTML): {title!r} open; {DEGRADED_TITLE!r} {md[0]}")


def disks_cli(m):
    """`mxrack disks` in the guest: {serial: its line}."""
    _, out = m.shell.run(f"{guest.MXRACK} disks", timeout=60)
    return out, {w: line for line in out.splitlines() for w in line.split() if w.startswith("MXHIL-")}


def run(ctx):
    m = boot(ctx)
    # Mail taken while redundant, and after the failure, is kept.
    before = clients.new_token("s4-before")
    msg_before = clients.make_message(before, "before the drive failure")
    clients.smtp_send_mx(m.host_port(25), msg_before)

    info = fail_disk(ctx, m)
    check_page_after_failure(ctx, m, info)

    out, lines = disks_cli(m)
    line = lines.get(info["serial"])
    if not line or "ready to remove" not in line:
        raise HilError(f"`mxrack disks` does not list {info['serial']} as ready to remove:\n{out}")
    ctx.note(f"mxrack disks: {' '.join(line.split())}")

    after = clients.new_token("s4-after")
    msg_after = clients.make_message(after, "after the drive failure")
    clients.smtp_send_mx(m.host_port(25), msg_after)
    stored = {clients.header_value(v, "X-HIL-Id"): v for v in clients.store_messages(m.shell).values()}
    for token, sent in ((before, msg_before), (after, msg_after)):
        if token not in stored or not stored[token].endswith(sent):
            raise HilError(f"message {token} is {'altered' if token in stored else 'missing'} in the store")
    ctx.note("mail taken before and after the failure is in the store, intact")

    m.failed_disk = info
    if ctx.hand_over(HANDOVER, m, to="s5_technician_swap"):
        ctx.note("machine left running for scenario 5 (the technician's swap)")
