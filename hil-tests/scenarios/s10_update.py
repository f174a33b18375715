"""Scenario 10: A/B updates (issue 14).

The appliance boots its own copy of the boot disk (disk.img: systemd-boot
and the image) under UEFI, so updates and the boot counter write to it. The
bundles come from the images image/build makes beside the main one:
<image>-next (a newer build) and <image>-broken (newer still, with
hil-tests/images/update-broken.toml: it never reaches ready). The guest
fetches them from an HTTP server on the host's 127.0.0.1 (QEMU's 10.0.2.2)
and pipes them into `mxrack update -`.

1. A bundle signed with a key the image does not trust is refused, and so is
   the next bundle with one byte of its image changed; the boot partition
   is left as it was.
2. The next bundle installs; after `reboot` systemd-boot starts it on trial,
   it reaches ready, the trial check confirms it, and `mxrack update status`
   names it.
3. The broken bundle installs with one trial boot; it never reaches ready, the
   trial check restarts the appliance after [update] trial_secs (45 s in that
   image), and the appliance comes back on the image before it by itself;
   `mxrack update status` reports the rollback.
"""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time

from hil.machine import OVMF_CODE, HilError, wait_until

TITLE = "A/B update: bad signatures refused, new image boots and is confirmed, a broken one rolls back by itself"


def bundle_of(image_dir):
    manifest = os.path.join(image_dir, "manifest.json")
    if not os.path.exists(manifest):
        raise HilError(f"{image_dir} missing: image/build --no-disk-image --name {os.path.basename(image_dir)} (see firmware/scripts/test.sh)")
    with open(manifest) as f:
        m = json.load(f)
    return os.path.join(image_dir, m["bundle"]), m["image_version"]


def version_key(v):
    return [int(p) for p in v.split(".")]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A refused bundle: mxrack stops reading after the signature, and
        # the guest's wget drops the connection. Expected.
        pass


class Server:
    """A static HTTP server on 127.0.0.1 for the guest (10.0.2.2)."""

    def __init__(self, folder):
        handler = functools.partial(QuietHandler, directory=folder)
        self.httpd = QuietServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name):
        return f"http://10.0.2.2:{self.port}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def status(m):
    _, out = m.shell.run("mxrack update status --json", timeout=60)
    return json.loads(out)


def install(m, server, name, extra=""):
    return m.shell.run(
        f"wget -q -O - {server.url(name)} | mxrack update - {extra} 2>&1",
        timeout=240, check=False,
    )


def entries_of(st):
    return sorted(e["file"] for e in st["entries"])


def restart(ctx, m, what, timeout):
    """Waits for the guest to restart (QEMU ends, as a machine resets) and
    starts it again on the same disks."""
    m.wait_ended(m.console.mark(), timeout, f"{what}: the guest did not restart")
    m.stop()
    m.start()


def run(ctx):
    if not os.path.exists(OVMF_CODE):
        raise HilError(f"{OVMF_CODE} missing (apt-get install ovmf)")
    base = ctx.image_dir.rstrip("/")
    v1 = ctx.manifest()["image_version"]
    next_bundle, v2 = bundle_of(base + "-next")
    broken_bundle, v3 = bundle_of(base + "-broken")
    if not version_key(v1) < version_key(v2) < version_key(v3):
        raise HilError(f"image versions out of order: main {v1}, next {v2}, broken {v3}: build them in that order")
    ctx.note(f"images: running {v1}, next {v2}, broken {v3}")

    os.makedirs(ctx.workdir, exist_ok=True)
    served = os.path.join(ctx.workdir, "served")
    shutil.rmtree(served, ignore_errors=True)
    os.makedirs(served)
    shutil.copyfile(next_bundle, os.path.join(served, "next.mxb"))
    shutil.copyfile(broken_bundle, os.path.join(served, "broken.mxb"))
    # One byte of the image changed (the signed manifest still names the
    # original's SHA-256).
    data = bytearray(open(next_bundle, "rb").read())
    data[-4096] ^= 0x01
    open(os.path.join(served, "tampered.mxb"), "wb").write(data)
    # A bundle signed with a key of our own, which the image does not trust.
    host_mxrack = os.path.join(base, "rootfs", "usr", "bin", "mxrack")
    rogue = os.path.join(ctx.workdir, "rogue")
    for ext in (".key", ".pub"):
        if os.path.exists(rogue + ext):
            os.remove(rogue + ext)
    subprocess.run([host_mxrack, "update", "keygen", "--out", rogue], check=True, capture_output=True)
    uki = os.path.join(base + "-next", "efi-part", "EFI", "Linux", f"mxrack-{v2}.efi")
    subprocess.run(
        [host_mxrack, "update", "bundle", "--key", rogue + ".key", "--out", os.path.join(served, "rogue.mxb"), uki],
        check=True, capture_output=True,
    )

    boot = os.path.join(ctx.workdir, "boot.img")
    shutil.copyfile(os.path.join(base, "disk.img"), boot)
    m = ctx.machine(memory_mib=768)
    m.boot_disk = boot
    server = Server(served)
    try:
        m.start(fresh=True, uefi=True)
        m.wait_ready(ctx.boot_timeout)
        st = status(m)
        if (st.get("running") or {}).get("version") != v1 or st["on_trial"]:
            raise HilError(f"mxrack update status on the flashed disk: {st}")
        before = entries_of(st)
        ctx.note(f"flashed boot disk: running {v1}; boot partition {before}")

        # 1. Refusals.
        rc, out = install(m, server, "rogue.mxb")
        if rc == 0 or "not signed by a trusted key" not in out:
            raise HilError(f"a bundle signed by an untrusted key was not refused (exit {rc}):\n{out}")
        ctx.note("untrusted key refused: " + out.strip().splitlines()[-1][:150])
        rc, out = install(m, server, "tampered.mxb")
        if rc == 0 or "SHA-256" not in out:
            raise HilError(f"a bundle with a changed image byte was not refused (exit {rc}):\n{out}")
        ctx.note("changed image byte refused: " + out.strip().splitlines()[-1][:150])
        if entries_of(status(m)) != before:
            raise HilError(f"a refused bundle changed the boot partition: {entries_of(status(m))}")

        # 2. The next image: installed, booted on trial, confirmed.
        t = time.monotonic()
        rc, out = install(m, server, "next.mxb")
        if rc != 0 or "installed" not in out:
            raise HilError(f"the next bundle was not installed (exit {rc}):\n{out}")
        ctx.note(f"installed {v2}: " + " / ".join(line.strip() for line in out.splitlines()[1:3]))
        m.shell.sock.sendall(b"reboot\n")
        restart(ctx, m, "reboot into the update", 180)
        m.wait_ready(ctx.boot_timeout)
        m.console.wait_for(rf"mxrack-update: mxrack {re.escape(v2)} reached ready .*confirmed", 60,
                           what="the trial check's confirmation")
        ctx.figure("update: install + reboot + ready on the new image", f"{time.monotonic() - t:.1f}s")
        st = status(m)
        if (st.get("running") or {}).get("version") != v2 or (st["running"] or {}).get("state") != "good":
            raise HilError(f"after the update, mxrack update status: {st}")
        ctx.note(f"running {v2}, confirmed; boot partition {entries_of(st)}")

        # 3. The broken image: on trial, never ready, rolled back.
        rc, out = install(m, server, "broken.mxb", "--tries 1")
        if rc != 0 or "installed" not in out:
            raise HilError(f"the broken bundle was not installed (exit {rc}):\n{out}")
        t = time.monotonic()
        m.shell.sock.sendall(b"reboot\n")
        restart(ctx, m, "reboot into the broken update", 180)
        m.console.wait_for(rf"mxrack-update: mxrack {re.escape(v3)} is on trial", ctx.boot_timeout,
                           what="the broken image booting on trial")
        m.console.wait_for(r"mxrack: cannot listen on 192\.0\.2\.1", 120, what="the broken image failing")
        m.console.wait_for(rf"mxrack-update: mxrack {re.escape(v3)} did not reach ready", 180,
                           what="the trial check giving up")
        restart(ctx, m, "restart after the failed trial", 180)
        m.wait_ready(ctx.boot_timeout)
        ctx.figure("rollback: reboot into a broken image to ready on the previous one", f"{time.monotonic() - t:.1f}s")
        st = wait_until(
            "mxrack update status reports the rollback",
            lambda: (lambda s: (
                (s.get("running") or {}).get("version") == v2
                and any(e["version"] == v3 for e in s["rolled_back"]), s))(status(m)),
            timeout=60, every=2,
        )
        _, text = m.shell.run("mxrack update status")
        ctx.note("mxrack update status: " + " | ".join(line.strip() for line in text.splitlines()[:4]))
        if f"rolled back: the update to {v3}" not in text:
            raise HilError(f"mxrack update status does not name the rollback:\n{text}")
        m.poweroff()
    finally:
        server.close()
