"""One appliance under QEMU: the firmware image, three data disks with serial
numbers and WWNs on a virtio-scsi controller, the service ports forwarded to
127.0.0.1, and the three ways in that a technician or CI has:

- the serial console (ttyS0): QEMU's stdio, read line by line into
  `Machine.console` (and work/<scenario>/console.log);
- a second serial port (ttyS1) with a shell for commands (`Machine.shell`),
  so their output is never mixed with log lines;
- QMP (`Machine.qmp`): QEMU's control socket (device hot-plug, failure
  injection, quit).

Everything waits on events (a console line, a QMP reply or event, a port that
answers) with deadlines; nothing sleeps a fixed time.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

# Guest ports the image may serve (DESIGN.md, "Services and ports").
SERVICE_PORTS = [25, 587, 465, 143, 993, 110, 995, 389, 636, 80, 443]

READY_RE = re.compile(r"mxrack-appliance: READY uptime=([0-9.]+)s ?(.*)")
KERNEL_CMDLINE = "console=ttyS0,115200 panic=-1 quiet"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd"


class HilError(Exception):
    """A scenario's expectation was not met."""


def wait_until(what, probe, timeout, every=1.0):
    """Polls `probe` until it returns (True, value); returns value. `probe`
    returns (done, what it saw); what it saw last is in the error when the
    deadline passes. For conditions with no event of their own (a sysfs
    value, a status page entry); `every` is only the pause between looks."""
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        done, seen = probe()
        if done:
            return seen
        if time.monotonic() > deadline:
            raise HilError(f"{what}: not within {timeout:.0f}s (last seen: {seen})")
        time.sleep(every)


def free_ports(n):
    """n distinct free ports: all held open until each has its number (one
    at a time, the kernel may hand out the same port twice, and QEMU then
    cannot set up its forwarding)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Disk:
    """A data disk: a raw image file, a serial number and a WWN, at SCSI id
    `index` (its bay). `id`, `file_node` and `raw_node` are its QEMU device
    and block node names: disk{i}, f{i}, d{i} for the disks a machine
    starts with; Machine.swap_disk gives a disk put in later its own
    (disk{i}-{n}, f{i}-{n}, d{i}-{n}). `present` is False for a bay whose
    disk was pulled (Machine.pull_disk): the next boot leaves it empty."""

    def __init__(self, index, path, size, serial=None, wwn=None):
        self.index = index
        self.id = f"disk{index}"
        self.file_node = f"f{index}"
        self.raw_node = f"d{index}"
        self.path = path
        self.size = size
        self.serial = serial or f"MXHIL-{index:04d}"
        self.wwn = wwn or f"0x5000c500a0b0c{index:03x}"
        self.present = True
        self.generation = 0

    def create(self):
        if os.path.exists(self.path):
            os.remove(self.path)
        with open(self.path, "wb") as f:
            f.truncate(self.size)

    def qemu_args(self):
        if not self.present:
            return []
        # scsi-id explicit: a pulled bay before it must not move it to
        # another target (QEMU's automatic ids are 0, 1, 2 in order, the
        # same as long as every bay is filled).
        return [
            "-blockdev", f"driver=file,node-name={self.file_node},filename={self.path}",
            "-blockdev", f"driver=raw,node-name={self.raw_node},file={self.file_node}",
            "-device",
            f"scsi-hd,bus=scsi0.0,drive={self.raw_node},id={self.id},"
            f"scsi-id={self.index},lun=0,serial={self.serial},wwn={self.wwn}",
        ]


class Console:
    """The serial console (ttyS0), read by a thread into a list of lines."""

    def __init__(self, stream, log_path, echo=False):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.echo = echo
        self.log = open(log_path, "ab")
        self.log_lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        buf = b""
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            with self.log_lock:
                self.log.write(chunk)
                self.log.flush()
            buf += chunk
            *done, buf = re.split(rb"\r?\n|\r", buf)
            if done:
                text = [d.decode("utf-8", "replace") for d in done]
                with self.cond:
                    self.lines.extend(text)
                    self.cond.notify_all()
                if self.echo:
                    for t in text:
                        print(f"    | {t}", flush=True)
        with self.cond:
            if buf:
                self.lines.append(buf.decode("utf-8", "replace"))
            self.closed = True
            self.cond.notify_all()

    def switch_log(self, log_path, header=""):
        """Copies the console to another file from now on (a scenario that
        takes over a running machine keeps its own console.log)."""
        new = open(log_path, "ab")
        if header:
            new.write(header.encode())
            new.flush()
        with self.log_lock:
            old, self.log = self.log, new
        old.close()

    def mark(self):
        """Index of the next line: wait_for(..., since=mark) ignores older lines."""
        with self.cond:
            return len(self.lines)

    def wait_for(self, pattern, timeout, since=0, what=None):
        """The first match of `pattern` in a console line at or after `since`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                if self.closed:
                    raise HilError(f"QEMU ended before the console showed {what or pattern!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HilError(f"no {what or pattern!r} on the console within {timeout:.0f}s")
                self.cond.wait(left)

    def text(self, since=0):
        with self.cond:
            return "\n".join(self.lines[since:])


class Shell:
    """The command shell on the second serial port (ttyS1), over a unix socket.

    Each command is wrapped in begin/end markers. The markers are written in
    two quoted halves ("MXB""EGIN") so the terminal's echo of the command
    line can never match them; the exit status follows the end marker.
    """

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buf = b""
        self.seq = 0

    def _connect(self, deadline):
        while self.sock is None:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                self.sock = s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise HilError(f"cannot connect to the command port {self.path}")
                time.sleep(0.05)

    def _read_until(self, rx, deadline):
        while True:
            m = rx.search(self.buf)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise HilError("the command port closed (QEMU ended?)")
            self.buf += chunk

    def sync(self, timeout=120):
        """Waits until the shell on ttyS1 answers (it starts when the boot
        scripts are done), turning off echo so output stays clean."""
        deadline = time.monotonic() + timeout
        self._connect(deadline)
        while True:
            self.seq += 1
            tag = f"SYNC-{self.seq}"
            self.sock.sendall(f'\nstty -echo 2>/dev/null; echo "MX""{tag}"\n'.encode())
            if self._read_until(re.compile(rb"MX" + tag.encode() + rb"\r?\n"), min(deadline, time.monotonic() + 3)):
                self.buf = b""
                return
            if time.monotonic() > deadline:
                raise HilError(f"the shell on ttyS1 did not answer within {timeout}s")

    def run(self, command, timeout=60, check=True):
        """Runs a shell command in the guest; returns (status, output)."""
        self.seq += 1
        n = self.seq
        self.buf = b""
        self.sock.sendall(f'echo "MXB""EGIN-{n}"; {command}; echo "MXE""ND-{n} $?"\n'.encode())
        deadline = time.monotonic() + timeout
        end = self._read_until(re.compile(rb"MXEND-%d (\d+)" % n), deadline)
        if not end:
            raise HilError(f"guest command timed out after {timeout}s: {command}")
        begin = re.search(rb"MXBEGIN-%d\r?\n" % n, self.buf)
        out = self.buf[begin.end() if begin else 0 : end.start()]
        status = int(end.group(1))
        self.buf = self.buf[end.end():]
        text = out.replace(b"\r\n", b"\n").decode("utf-8", "replace")
        if check and status != 0:
            raise HilError(f"guest command failed ({status}): {command}\n{text}")
        return status, text

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


class QMP:
    """QEMU's machine protocol over its unix socket."""

    def __init__(self, path, timeout=90, alive=None):
        # A loaded CI host can take a while to start QEMU; `alive` lets a
        # QEMU that ended at once fail fast instead of timing out.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if alive is not None and not alive():
                    raise HilError(f"QEMU ended before its QMP socket {path} opened")
                if time.monotonic() > deadline:
                    raise HilError(f"cannot connect to QMP at {path}")
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.events = []
        self._recv()  # greeting
        self.execute("qmp_capabilities")

    def _recv(self):
        line = self.file.readline()
        if not line:
            raise HilError("QMP closed")
        return json.loads(line)

    def execute(self, command, timeout=60, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.settimeout(timeout)
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._recv()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise HilError(f"QMP {command}: {reply['error'].get('desc')}")
            return reply.get("return")

    def wait_event(self, name, timeout=60, match=None):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and (match is None or match(ev.get("data", {}))):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise HilError(f"no QMP event {name} within {timeout}s")
            self.sock.settimeout(left)
            try:
                self.events.append(self._recv())
            except socket.timeout:
                pass

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class Machine:
    """One QEMU run of the image. Disks persist in `workdir` between runs of
    the same Machine (power cut and boot again); `fresh=True` makes them
    blank first."""

    def __init__(self, workdir, image_dir, accel="tcg", memory_mib=512, cpus=1,
                 disk_count=3, disk_size=2 << 30, echo=False, uefi=False,
                 append="", extra_args=(), serial_base=0):
        self.workdir = os.path.abspath(workdir)
        self.image_dir = os.path.abspath(image_dir)
        self.accel = accel
        # uefi: boot disk.img (the boot disk a technician flashes) with OVMF
        # instead of -kernel/-initrd.
        self.uefi = uefi
        # A writable boot disk of this machine's own (A/B updates); None:
        # the image's disk.img under a snapshot.
        self.boot_disk = None
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.echo = echo
        os.makedirs(self.workdir, exist_ok=True)
        # append: more kernel arguments (mxrack.node=...); extra_args: more
        # QEMU arguments (a second network); serial_base: disk serials and
        # WWNs of a second machine differ from the first one's.
        self.append = append
        self.extra_args = list(extra_args)
        self.disks = [
            Disk(i, os.path.join(self.workdir, f"disk{i}.img"), disk_size,
                 serial=f"MXHIL-{serial_base + i:04d}", wwn=f"0x5000c500a0b0c{serial_base + i:03x}")
            for i in range(disk_count)
        ]
        self.proc = None
        self.console = None
        self.shell = None
        self.qmp = None
        self.ports = {}
        self.boots = 0
        self.started_at = None
        # The disk inventory (disks.json): what is in each bay now, after
        # swap_disk/pull_disk, so a later run (a new Machine on the same
        # workdir) attaches that instead of the original disk files.
        self.serial_base = serial_base
        self.disk_defaults = [
            {"path": d.path, "serial": d.serial, "wwn": d.wwn, "size": d.size} for d in self.disks
        ]
        self.inventory_loaded = self.load_inventory()

    # -- lifecycle -------------------------------------------------------

    def create_disks(self):
        """Blank disks in every bay: the inventory goes back to the disks a
        machine starts with (disk{i}.img, their default serials and WWNs);
        files of disks swapped in earlier are left where they are."""
        for d, default in zip(self.disks, self.disk_defaults):
            d.__init__(d.index, default["path"], default["size"], default["serial"], default["wwn"])
        for d in self.disks:
            d.create()
        self.save_inventory()

    # -- disk inventory, swap and pull -----------------------------------

    @property
    def inventory_path(self):
        return os.path.join(self.workdir, "disks.json")

    def inventory(self):
        """The inventory as written to disks.json: one entry per bay (SCSI
        id), paths relative to the workdir when inside it."""
        def rel(path):
            r = os.path.relpath(path, self.workdir)
            return path if r.startswith("..") else r

        bays = []
        for d in self.disks:
            bays.append({
                "index": d.index,
                "present": d.present,
                "path": rel(d.path) if d.present else None,
                "pulled": None if d.present else rel(d.path),
                "serial": d.serial if d.present else None,
                "wwn": d.wwn if d.present else None,
                "size": d.size,
                "device": d.id,
                "file_node": d.file_node,
                "raw_node": d.raw_node,
                "generation": d.generation,
            })
        return {"version": 1, "bays": bays}

    def save_inventory(self):
        """Writes disks.json atomically (a temporary file, then os.replace)."""
        tmp = self.inventory_path + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.inventory(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.inventory_path)

    def load_inventory(self):
        """Takes what disks.json records for each bay, when it exists;
        returns whether it did. A file that cannot be read is reported and
        ignored (the default disks stay)."""
        try:
            with open(self.inventory_path) as f:
                inv = json.load(f)
            entries = {int(b["index"]): b for b in inv["bays"]}
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"hil: {self.inventory_path} ignored: {e}", flush=True)
            return False
        for d in self.disks:
            b = entries.get(d.index)
            if not b:
                continue
            d.present = bool(b.get("present", True))
            path = b.get("path") if d.present else b.get("pulled")
            if path:
                d.path = os.path.join(self.workdir, path)
            if d.present:
                d.serial = b.get("serial") or d.serial
                d.wwn = b.get("wwn") or d.wwn
            d.size = int(b.get("size") or d.size)
            d.id = b.get("device") or d.id
            d.file_node = b.get("file_node") or d.file_node
            d.raw_node = b.get("raw_node") or d.raw_node
            d.generation = int(b.get("generation") or 0)
        return True

    def _disk(self, index):
        if not 0 <= index < len(self.disks):
            raise HilError(f"no bay with SCSI id {index} (0..{len(self.disks) - 1})")
        if self.qmp is None:
            raise HilError("no QMP connection to the running QEMU")
        return self.disks[index]

    def _unplug(self, d, timeout=120):
        """QMP: device_del, DEVICE_DELETED, then its block nodes."""
        self.qmp.execute("device_del", id=d.id)
        self.qmp.wait_event("DEVICE_DELETED", timeout=timeout, match=lambda e: e.get("device") == d.id)
        for node in (d.raw_node, d.file_node):
            self.qmp.execute("blockdev-del", **{"node-name": node})
        d.present = False
        self.save_inventory()

    def pull_disk(self, index, timeout=120):
        """Pulls the disk at SCSI id `index` out of the running machine (QMP
        device_del, waiting for DEVICE_DELETED, then blockdev-del of its
        nodes). The bay is recorded empty: the next boot has no disk there.
        The image file is kept; returns its path."""
        d = self._disk(index)
        if not d.present:
            raise HilError(f"bay with SCSI id {index} is already empty")
        self._unplug(d, timeout)
        return d.path

    def swap_disk(self, index, serial=None, wwn=None, size=None, timeout=120):
        """The technician's swap on the running machine: the disk at SCSI id
        `index` is pulled (as pull_disk; skipped when the bay is empty) and
        a blank one put in at the same SCSI id, on a new image file
        disk{index}-{n}.img (the old file is kept). Serial and WWN default
        to new unique ones (MXHIL-N{i}{nnn}, or MXQEMU-... under
        image/qemu); size to the pulled disk's. Returns the new file's
        path."""
        d = self._disk(index)
        n = d.generation + 1
        while os.path.exists(os.path.join(self.workdir, f"disk{index}-{n}.img")):
            n += 1
        path = os.path.join(self.workdir, f"disk{index}-{n}.img")
        prefix = self.disk_defaults[index]["serial"].rpartition("-")[0] or "MXHIL"
        serial = serial or f"{prefix}-N{self.serial_base + index}{n:03d}"
        wwn = wwn or f"0x5000c500a0d{(self.serial_base + index) & 0xff:02x}{n & 0xfff:03x}"
        size = size or d.size
        if d.present:
            self._unplug(d, timeout)
        with open(path, "xb") as f:
            f.truncate(size)
        dev, fnode, rnode = f"disk{index}-{n}", f"f{index}-{n}", f"d{index}-{n}"
        self.qmp.execute("blockdev-add", driver="file", filename=path, **{"node-name": fnode})
        self.qmp.execute("blockdev-add", driver="raw", file=fnode, **{"node-name": rnode})
        self.qmp.execute(
            "device_add", driver="scsi-hd", bus="scsi0.0", drive=rnode, id=dev,
            serial=serial, wwn=wwn, **{"scsi-id": index, "lun": 0},
        )
        d.id, d.file_node, d.raw_node = dev, fnode, rnode
        d.path, d.size, d.serial, d.wwn = path, size, serial, wwn
        d.generation, d.present = n, True
        self.save_inventory()
        return path

    def boot_args(self):
        if self.uefi:
            disk = self.boot_disk or os.path.join(self.image_dir, "disk.img")
            if not os.path.exists(disk):
                raise HilError(f"{disk} missing: build the image with its boot disk (image/build)")
            if not os.path.exists(OVMF_CODE):
                raise HilError(f"{OVMF_CODE} missing (apt-get install ovmf)")
            # The image's disk.img is never changed: a snapshot keeps it
            # pristine (updates and the boot counter write to the boot disk;
            # scenarios that test them give their own copy, `boot_disk`).
            # Its partitions keep the storage script off it.
            snapshot = "" if self.boot_disk else "snapshot=on,"
            return [
                "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=none,id=boot,format=raw,{snapshot}file={disk}",
                "-device", "virtio-blk-pci,drive=boot,bootindex=0",
            ]
        kernel = os.path.join(self.image_dir, "bzImage")
        initrd = os.path.join(self.image_dir, "rootfs.cpio.gz")
        for f in (kernel, initrd):
            if not os.path.exists(f):
                raise HilError(f"{f} missing: build the image first (image/build)")
        cmdline = KERNEL_CMDLINE + (" " + self.append if self.append else "")
        return ["-kernel", kernel, "-initrd", initrd, "-append", cmdline]

    def command(self, console="stdio,id=con0,signal=off"):
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in sorted(self.ports.items()))
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg"]
        cmd = [
            "qemu-system-x86_64", *accel,
            "-m", str(self.memory_mib), "-smp", str(self.cpus),
            "-nodefaults", "-display", "none", "-no-reboot",
            *self.boot_args(),
            "-chardev", console, "-serial", "chardev:con0",
            "-chardev", f"socket,id=ctl,path={self.ctl_path},server=on,wait=off",
            "-serial", "chardev:ctl",
            "-chardev", f"socket,id=qmp,path={self.qmp_path},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-device", "virtio-scsi-pci,id=scsi0",
        ]
        for d in self.disks:
            cmd += d.qemu_args()
        cmd += ["-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-pci,netdev=n0"]
        return cmd + self.extra_args

    @property
    def ctl_path(self):
        return os.path.join(self.workdir, "ctl.sock")

    @property
    def qmp_path(self):
        return os.path.join(self.workdir, "qmp.sock")

    def start(self, fresh=False, uefi=None):
        if uefi is not None:
            self.uefi = uefi
        if fresh or not all(os.path.exists(d.path) for d in self.disks):
            self.create_disks()
        for p in (self.ctl_path, self.qmp_path):
            if os.path.exists(p):
                os.remove(p)
        self.ports = dict(zip(SERVICE_PORTS, free_ports(len(SERVICE_PORTS))))
        self.boots += 1
        log = os.path.join(self.workdir, "console.log")
        with open(log, "ab") as f:
            f.write(f"\n===== boot {self.boots} =====\n".encode())
        # Twice at most: right after a power cut (SIGKILL) the host may not
        # yet have released the old QEMU's image locks, and the new QEMU then
        # exits at once ("Failed to get write lock"). A second failure is
        # reported with QEMU's own words.
        for attempt in (1, 2):
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
            self.console = Console(self.proc.stdout, log, echo=self.echo)
            try:
                self.qmp = QMP(self.qmp_path, alive=lambda: self.proc.poll() is None)
                break
            except HilError as e:
                ended = self.proc.poll() is not None
                if not ended:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=30)
                self.console.thread.join(timeout=10)
                said = " | ".join(line for line in self.console.lines[-6:] if line.strip())
                if attempt == 2 or not ended:
                    raise HilError(f"{e}; QEMU said: {said or '(nothing)'}")
                print(f"    QEMU ended at start ({said or 'no output'}); starting it again", flush=True)
                time.sleep(2)
        self.shell = Shell(self.ctl_path)
        return self

    def wait_ready(self, timeout=300):
        """Waits for the appliance's READY line; returns (wall seconds since
        QEMU started, guest uptime seconds, {listener key: guest port}).
        Fails at once when mxrack exits before it is ready."""
        since = 0  # a new Console per start: its lines are this boot only
        m = self.console.wait_for(
            READY_RE.pattern + "|mxrack-supervise: mxrack exited", timeout,
            since=since, what="mxrack-appliance: READY",
        )
        if not m.group(0).startswith("mxrack-appliance: READY"):
            tail = [line for line in self.console.text(since).splitlines() if line.strip()][-4:]
            raise HilError("mxrack exited before it was ready:\n      " + "\n      ".join(tail))
        wall = time.monotonic() - self.started_at
        listeners = {}
        for item in m.group(2).split():
            key, _, addr = item.partition("=")
            listeners.setdefault(key, int(addr.rpartition(":")[2]))
        self.shell.sync()
        return wall, float(m.group(1)), listeners

    def host_port(self, guest_port):
        return self.ports[guest_port]

    def power_cut(self):
        """SIGKILL to QEMU: the guest loses everything not yet written to
        its disks (what QEMU wrote to the image files stays)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close()

    def poweroff(self, timeout=180):
        """A clean shutdown from the command port (busybox poweroff: init's
        shutdown script stops mxrack, unmounts /data, stops the array);
        QEMU ends when the guest powers off. Returns the console lines of
        the shutdown."""
        since = self.console.mark()
        self.shell.sock.sendall(b"poweroff\n")
        return self.wait_ended(since, timeout, "the guest did not power off")

    def acpi_powerdown(self, timeout=120):
        """The power button (QMP system_powerdown: an ACPI power-button
        event, as a front-panel press or a BMC soft-off gives); QEMU ends
        when the guest powers off. Returns the console lines since."""
        since = self.console.mark()
        self.qmp.execute("system_powerdown")
        return self.wait_ended(since, timeout, "the guest ignored the power button")

    def wait_ended(self, since, timeout, what):
        """Waits for QEMU to end (a power-off, or a restart: QEMU runs with
        -no-reboot, so a guest's reboot ends it as a reset would), closes
        the connections, returns the console lines since `since`."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HilError(f"{what} within {timeout}s")
        self._close()
        return self.console.text(since)

    def stop(self):
        """Ends QEMU (QMP quit, SIGKILL if it does not go)."""
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp.execute("quit", timeout=10)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._close()

    def _close(self):
        for c in (self.shell, self.qmp):
            if c:
                c.close()
        if self.console:
            self.console.thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
