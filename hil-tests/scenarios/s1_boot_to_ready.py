"""Scenario 1: boot to ready, with the time taken; every service port answers.

Fresh blank disks: the first boot creates the RAID1 (2 members + hot spare)
and its file system, then mxrack starts. Checks that every listener in the
ready line answers through its forwarded port with its protocol's greeting,
that the SMTP ports are among them, and that the array is as designed; then
powers off cleanly (mxrack stopped, /data unmounted) and boots again from the
boot disk (disk.img under UEFI) on the same data disks, which are assembled;
then the power button (QMP system_powerdown, ACPI) shuts it down as cleanly.
After the reboot, `mxrack logs --boot previous` shows the first boot's
mxrack, start-up and kernel lines up to its shutdown (the persistent log on
/data).
Prints the boot-to-ready time (wall clock from QEMU's start, and the guest's
uptime), the image's and the binary's sizes.
"""

import os
import time

from hil import clients
from hil.machine import OVMF_CODE, HilError

TITLE = "boot to ready; every service port answers"

REQUIRED_LISTENERS = {25, 587, 465}


def run(ctx):
    manifest = ctx.manifest()
    if manifest:
        s = manifest["sizes"]
        ctx.figure("mxrack binary", f"{s['mxrack'] / 1048576:.1f} MiB")
        ctx.figure(
            "image (bzImage + rootfs.cpio.gz)",
            f"{(s['bzImage'] + s['rootfs.cpio.gz']) / 1048576:.1f} MiB",
        )
    m = ctx.machine().start(fresh=True)
    wall, uptime, listeners = m.wait_ready(ctx.boot_timeout)
    ctx.figure("boot to ready (first boot, creates the RAID)", f"{wall:.1f}s wall, guest uptime {uptime:.1f}s")
    ctx.note("listeners: " + " ".join(f"{k}={p}" for k, p in listeners.items()))

    ports = set(listeners.values())
    missing = REQUIRED_LISTENERS - ports
    if missing:
        raise HilError(f"the ready line lacks the SMTP listeners on {sorted(missing)}")
    for port in sorted(ports):
        if port not in clients.PORTS:
            raise HilError(f"listener on guest port {port} is not a known service port")
        greeting = clients.probe(port, m.host_port(port))
        ctx.note(f"port {port} ({clients.PORTS[port][0]}) answers: {greeting[:60]}")

    # The console asks for a login; no password is printed on it.
    m.console.wait_for(r"login: ", 60, what="the console's login prompt")
    _, demo = m.shell.run("cat /data/mxrack/demo-password")
    if demo.strip() and demo.strip() in m.console.text():
        raise HilError("the demo password is printed on the console")
    login = "/usr/libexec/mxrack/console-login"
    _, out = m.shell.run(
        f"printf 'admin\\n%s\\necho LOGGED-IN-$((20+22))\\n' \"$(cat /data/mxrack/admin-password)\" | {login}",
        timeout=60, check=False)
    if "LOGGED-IN-42" not in out:
        raise HilError(f"the admin password did not log in on the console:\n{out}")
    status, out = m.shell.run(f"printf 'admin\\nwrong\\necho LOGGED-IN-$((20+22))\\n' | {login}",
                              timeout=60, check=False)
    if "LOGGED-IN-42" in out or "Login incorrect" not in out or status == 0:
        raise HilError(f"a wrong password was not refused on the console:\n{out}")
    ctx.note("console: asks for a login; the admin password opens a shell, a wrong one is refused")

    # The technician's view: the array and the data file system.
    _, mdstat = m.shell.run("cat /proc/mdstat")
    md0 = [line for line in mdstat.splitlines() if line.startswith("md0")]
    if not md0 or "raid1" not in md0[0]:
        raise HilError(f"no RAID1 md0:\n{mdstat}")
    if md0[0].count("(S)") != 1 or "[2/2]" not in mdstat:
        raise HilError(f"md0 is not 2 active members + 1 spare:\n{mdstat}")
    _, mounts = m.shell.run("grep ' /data ' /proc/mounts")
    if "/dev/md0" not in mounts or "ext4" not in mounts:
        raise HilError(f"/data is not ext4 on md0: {mounts}")
    ctx.note(f"md0: {md0[0].strip()}")

    # A clean shutdown stops mxrack, unmounts /data and stops the array.
    t = time.monotonic()
    shutdown = m.poweroff()
    for expected in ("stopping mxrack", "/data unmounted"):
        if expected not in shutdown:
            raise HilError(f"no '{expected}' in the shutdown:\n{shutdown[-2000:]}")
    ctx.figure("clean shutdown", f"{time.monotonic() - t:.1f}s")

    # A second boot on the same disks assembles the array instead. It boots
    # the boot disk a technician flashes (disk.img, UEFI with OVMF) when the
    # image has one.
    uefi = os.path.exists(os.path.join(ctx.image_dir, "disk.img")) and os.path.exists(OVMF_CODE)
    if not uefi:
        ctx.note(f"no disk.img or {OVMF_CODE}: the second boot uses -kernel/-initrd too")
    m.start(uefi=uefi)
    wall, uptime, _ = m.wait_ready(ctx.boot_timeout)
    how = "from disk.img under UEFI" if uefi else "-kernel/-initrd"
    ctx.figure(
        f"boot to ready (second boot, {how}, assembles the RAID)",
        f"{wall:.1f}s wall, guest uptime {uptime:.1f}s",
    )
    if "storage: assembled /dev/md0" not in m.console.text():
        raise HilError("the second boot did not assemble the existing array")
    _, cmdline = m.shell.run("cat /proc/cmdline")
    ctx.note(f"kernel command line: {cmdline.strip()}")

    # The first boot's log outlived the reboot: mxrack's lines, the
    # start-up scripts' and the kernel's, up to the clean shutdown.
    _, previous = m.shell.run("mxrack logs --boot previous -n 5000", timeout=60)
    for source, expected in (
        ("mxrack", " mxrack: mxrack ready:"),
        ("boot", " boot: mxrack-init: storage: first boot: creating"),
        ("kernel", " kernel: ["),
        ("shutdown", " boot: mxrack-init: stopping mxrack"),
    ):
        if expected not in previous:
            tail = "\n".join(previous.splitlines()[-15:])
            raise HilError(f"mxrack logs --boot previous has no {source} line ({expected!r}):\n{tail}")
    _, listing = m.shell.run("ls -l /data/mxrack/log/")
    ctx.note(f"mxrack logs --boot previous: {len(previous.splitlines())} lines (mxrack, boot, kernel, shutdown)")
    ctx.note("log folder: " + " ".join(listing.split()[-5:]))

    # The power button (ACPI, QMP system_powerdown) is the same clean stop.
    t = time.monotonic()
    shutdown = m.acpi_powerdown()
    for expected in ("power button pressed", "stopping mxrack", "/data unmounted"):
        if expected not in shutdown:
            raise HilError(f"no '{expected}' after the power button:\n{shutdown[-2000:]}")
    ctx.figure("power button to powered off", f"{time.monotonic() - t:.1f}s")
