"""Scenario 9: a replica pair (issue 13).

Two QEMU guests boot the replica image (image/out/qemu-x86_64-replica:
the same firmware with board/qemu-x86_64/replica.toml appended), each with
its own three RAID disks, told apart by `mxrack.node=mxa|mxb` and joined by
a QEMU socket network (UDP, so either side may die and come back). DRBD
(protocol C) mirrors the data volume from the active to the standby.

1. The pair forms on blank disks: mxa becomes active and syncs mxb; the
   service address 10.99.0.100 answers SMTP from the standby's side.
2. SMTP throughput on the active with the peer connected and with it
   disconnected (`drbdadm disconnect`), in the same run.
3. Failovers (HIL_REPLICA_FAILOVERS manual ones, default 1, then one
   automatic): SMTP load on the active, SIGKILL of its QEMU; `mxrack
   replica promote` on the standby at once (its automatic promotion paused
   by /run/mxrack/replica-no-auto), or nothing (the standby promotes
   itself: peer gone, witness 10.0.2.2 answers, service address silent);
   time to IMAP answering on the promoted node; every acknowledged message
   read back over IMAP there. The killed node boots again, stays standby
   (never active by itself) and resyncs.
4. Switch-back: `mxrack replica demote` on the active, `promote` on the
   other; the status page tells customers, as the seed's page did.
"""

import imaplib
import os
import smtplib
import socket
import threading
import time

from hil import clients
from hil.machine import HilError, Machine, wait_until

TITLE = "replica pair: forms and syncs, active killed under load, standby promoted, nothing acknowledged lost, old active rejoins, switch back"

DISK_SIZE = 512 << 20
SENDERS = 2
ACKED_BEFORE_KILL = 60
RATE_MESSAGES = 60
SERVICE_IP = "10.98.0.100"


def udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drbd(m):
    """(cs, ro, ds) of minor 0 in the guest's /proc/drbd."""
    _, out = m.shell.run("cat /proc/drbd 2>/dev/null", check=False)
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("0: cs:"):
            f = dict(w.split(":", 1) for w in line[3:].split() if ":" in w)
            return f.get("cs"), f.get("ro"), f.get("ds")
    return None, None, None


def wait_in_sync(m, timeout):
    return wait_until(
        "both copies UpToDate",
        lambda: (lambda s: (s[0] == "Connected" and s[2] == "UpToDate/UpToDate", s))(drbd(m)),
        timeout,
    )


def md_idle(m, timeout=600):
    """Waits until md0's first resync (after its creation) is over, so a
    rate measured next is not measured against it."""
    wait_until(
        "md0 idle",
        lambda: (lambda v: (v.strip() == "idle", v.strip()))(
            m.shell.run("cat /sys/block/md0/md/sync_action", check=False)[1]),
        timeout,
    )


def sender(port, n, prefix, acked, lock, stop, errors):
    seq = 0
    try:
        with smtplib.SMTP(clients.HOST, port, timeout=60) as s:
            s.ehlo("client.example")
            while not stop.is_set():
                seq += 1
                token = f"{prefix}-{n}-{seq:05d}"
                msg = clients.make_message(token, f"replica {token}", body_lines=10 + seq % 30)
                s.sendmail("hil@client.example", [clients.DEMO], msg)
                with lock:
                    acked[token] = msg
    except (smtplib.SMTPException, OSError) as e:
        if not stop.is_set():
            errors.append(f"sender {n}: {e!r}")


def smtp_rate(port, count, prefix):
    """Messages per second for `count` messages over SENDERS connections."""
    acked, lock, stop, errors = {}, threading.Lock(), threading.Event(), []
    threads = [threading.Thread(target=sender, args=(port, n, prefix, acked, lock, stop, errors), daemon=True)
               for n in range(SENDERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while True:
        with lock:
            if len(acked) >= count:
                break
        if errors:
            raise HilError(f"sending failed: {errors}")
        if time.monotonic() - t0 > 300:
            raise HilError(f"only {len(acked)} messages in 300 s")
        time.sleep(0.02)
    rate = len(acked) / (time.monotonic() - t0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return rate, acked


def imap_messages(port, password, timeout=120):
    """Every INBOX message over IMAP (STARTTLS), by X-HIL-Id."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = imaplib.IMAP4(clients.HOST, port, timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        c.starttls(ssl_context=clients.tls_context())
        c.login(clients.DEMO, password)
        c.select("INBOX", readonly=True)
        typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
        if typ != "OK":
            raise HilError(f"IMAP FETCH failed: {data}")
        out = {}
        for item in data:
            if isinstance(item, tuple):
                raw = item[1]
                out[clients.header_value(raw, "X-HIL-Id")] = raw
        return out
    finally:
        try:
            c.logout()
        except Exception:
            pass


def imap_answers(port, timeout):
    """Seconds until the IMAP port greets with * OK."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        try:
            with socket.create_connection((clients.HOST, port), timeout=5) as s:
                if s.recv(64).startswith(b"* OK"):
                    return time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise HilError(f"IMAP did not answer within {timeout}s")
        time.sleep(0.1)


def wait_ready_since(m, since, timeout):
    m.console.wait_for(r"mxrack-appliance: READY", timeout, since=since, what="READY after promotion")


def run(ctx):
    image = os.environ.get("HIL_REPLICA_IMAGE") or ctx.image_dir.rstrip("/") + "-replica"
    if not os.path.exists(os.path.join(image, "rootfs.cpio.gz")):
        raise HilError(
            f"{image} missing: image/build --no-disk-image --extra-config "
            "board/qemu-x86_64/replica.toml --name qemu-x86_64-replica"
        )
    failovers = int(os.environ.get("HIL_REPLICA_FAILOVERS", "1"))
    # eth1: replication; eth2: the service network (the service address).
    ports = {(n, net): udp_port() for n in ("mxa", "mxb") for net in ("r", "s")}
    nodes = {}
    for name, other, i, base in (("mxa", "mxb", 1, 0), ("mxb", "mxa", 2, 100)):
        net = []
        for k, (kind, tag) in enumerate((("r", "99"), ("s", "98"))):
            net += ["-netdev", f"socket,id={kind}0,udp=127.0.0.1:{ports[(other, kind)]},"
                               f"localaddr=127.0.0.1:{ports[(name, kind)]}",
                    "-device", f"virtio-net-pci,netdev={kind}0,mac=52:54:00:{tag}:00:0{i}"]
        m = Machine(os.path.join(ctx.workdir, name), image, accel=ctx.accel, echo=ctx.echo,
                    disk_size=DISK_SIZE, append=f"mxrack.node={name}", extra_args=net,
                    serial_base=base)
        ctx.machines.append(m)
        nodes[name] = m

    # 1. The pair forms.
    t0 = time.monotonic()
    nodes["mxa"].start(fresh=True)
    nodes["mxb"].start(fresh=True)
    wall, _, _ = nodes["mxa"].wait_ready(ctx.boot_timeout)
    nodes["mxb"].console.wait_for(r"replica: standby", ctx.boot_timeout, what="mxb standby")
    nodes["mxb"].shell.sync()
    ctx.figure("pair formed, mxa ready", f"{wall:.1f}s wall")
    wait_in_sync(nodes["mxa"], 600)
    ctx.figure("first sync done", f"{time.monotonic() - t0:.1f}s after start ({DISK_SIZE >> 20} MiB disks)")
    # The console tells the technician (progress every 10 s, then the end).
    nodes["mxa"].console.wait_for(r"replica: in sync with mxb", 30, what="first sync end on mxa's console")
    _, st = nodes["mxa"].shell.run("mxrack replica status")
    if "role Primary" not in st or "in sync" not in st:
        raise HilError(f"mxrack replica status on mxa:\n{st}")
    _, st = nodes["mxb"].shell.run("mxrack replica status")
    if "role Secondary (peer Primary)" not in st:
        raise HilError(f"mxrack replica status on mxb:\n{st}")
    # The service address: the standby reaches the active's SMTP through it.
    _, banner = nodes["mxb"].shell.run(f"echo QUIT | nc -w 5 {SERVICE_IP} 25", check=False)
    if "220 " not in banner:
        raise HilError(f"service address {SERVICE_IP}:25 from mxb: {banner!r}")
    ctx.note(f"service address {SERVICE_IP} answers SMTP from the standby: {banner.splitlines()[0]}")
    _, password = nodes["mxa"].shell.run("cat /data/mxrack/demo-password")
    password = password.strip()
    page = clients.status_json(nodes["mxa"].host_port(443))
    rep = page.get("snapshot", {}).get("replica") or {}
    if rep.get("role") != "Primary" or rep.get("connection") != "Connected":
        raise HilError(f"status.json replica: {rep}")
    code, metrics = clients.https_get(nodes["mxa"].host_port(443), "/metrics")
    if "mxrack_replica_in_sync 1" not in metrics:
        raise HilError("mxrack_replica_in_sync 1 not in /metrics")

    # 2. Throughput with replication on and off, same run, same node.
    # on, off, on: the two "on" runs bracket the "off" one on a shared host;
    # after both arrays' own first resync.
    md_idle(nodes["mxa"])
    md_idle(nodes["mxb"])
    on1, _ = smtp_rate(nodes["mxa"].host_port(25), RATE_MESSAGES, "on1")
    nodes["mxa"].shell.run("drbdadm disconnect data")
    off, _ = smtp_rate(nodes["mxa"].host_port(25), RATE_MESSAGES, "off")
    nodes["mxa"].shell.run("drbdadm connect data")
    wait_in_sync(nodes["mxa"], 300)
    on2, _ = smtp_rate(nodes["mxa"].host_port(25), RATE_MESSAGES, "on2")
    on = (on1 + on2) / 2
    ctx.figure("SMTP messages/s, replication on vs off",
               f"{on:.1f} ({on1:.1f}, {on2:.1f}) vs {off:.1f}: on/off {on / off:.2f}")

    # 3. Failovers under load.
    acked_all = {}
    active, standby = "mxa", "mxb"
    for round_no in range(1, failovers + 2):
        auto = round_no == failovers + 1
        a, b = nodes[active], nodes[standby]
        if not auto:
            b.shell.run("touch /run/mxrack/replica-no-auto")
        acked, lock, stop, errors = {}, threading.Lock(), threading.Event(), []
        threads = [threading.Thread(target=sender, args=(a.host_port(25), n, f"f{round_no}", acked, lock, stop, errors),
                                    daemon=True) for n in range(SENDERS)]
        for t in threads:
            t.start()
        t_load = time.monotonic()
        while True:
            with lock:
                if len(acked) >= ACKED_BEFORE_KILL:
                    break
            if errors:
                raise HilError(f"sending failed before the kill: {errors}")
            if time.monotonic() - t_load > 300:
                raise HilError("load did not reach its count")
            time.sleep(0.02)
        a.power_cut()
        t_kill = time.monotonic()
        stop.set()
        for t in threads:
            t.join(timeout=60)
        with lock:
            acked_all.update(acked)
        since = b.console.mark()
        if auto:
            b.console.wait_for(r"replica: automatic failover", 120, since=since, what="automatic failover")
            how = "automatic promotion"
        else:
            b.shell.run("mxrack replica promote; rm -f /run/mxrack/replica-no-auto", timeout=120)
            how = f"promote done after {time.monotonic() - t_kill:.1f}s"
        wait_ready_since(b, since, 120)
        imap_answers(b.host_port(143), 120)
        t_imap = time.monotonic() - t_kill
        ctx.figure(f"failover {round_no}: {active} killed -> IMAP on {standby}", f"{t_imap:.1f}s ({how})")
        got = imap_messages(b.host_port(143), password)
        lost = [t for t in acked_all if t not in got]
        altered = [t for t in acked_all if t in got and not got[t].endswith(acked_all[t])]
        if lost or altered:
            raise HilError(f"failover {round_no}: lost {len(lost)} {sorted(lost)[:5]}, altered {len(altered)}")
        ctx.note(f"failover {round_no}: {len(acked)} acknowledged this round, all {len(acked_all)} read over IMAP on {standby}")

        # The old active boots again: standby, never active by itself.
        a.start()
        a.console.wait_for(r"replica: standby", ctx.boot_timeout, what=f"{active} back as standby")
        a.shell.sync()
        _, ro, _ = drbd(a)
        if ro != "Secondary/Primary":
            raise HilError(f"{active} after its reboot: ro {ro}")
        if "mxrack-appliance: READY" in a.console.text(0):
            raise HilError(f"{active} started mxrack after its reboot (it must stay standby)")
        wait_in_sync(b, 600)
        ctx.note(f"{active} rejoined as standby and resynced")
        active, standby = standby, active

    # 4. Switch back with demote / promote.
    a, b = nodes[active], nodes[standby]
    t_switch = time.monotonic()
    a.shell.run("mxrack replica demote", timeout=120)
    since = b.console.mark()
    b.shell.run("mxrack replica promote", timeout=120)
    wait_ready_since(b, since, 120)
    imap_answers(b.host_port(143), 120)
    ctx.figure(f"switch-over {active} -> {standby}", f"{time.monotonic() - t_switch:.1f}s to IMAP")
    token = clients.new_token("back")
    clients.smtp_send_mx(b.host_port(25), clients.make_message(token, "after the switch-back"))
    got = imap_messages(b.host_port(143), password)
    lost = [t for t in acked_all if t not in got]
    if lost or token not in got:
        raise HilError(f"after the switch-back: lost {len(lost)}, new message {'in' if token in got else 'missing'}")
    page = clients.status_json(b.host_port(443))
    entry = clients.status_entry(page, title="Services switched to the replica")
    if not entry:
        raise HilError("no 'Services switched to the replica' entry on the status page")
    ctx.note(f"status page: {entry['title']}: {clients.entry_texts(entry)[:1]}")
    ctx.figure("acknowledged messages lost", f"0 of {len(acked_all)} over {failovers + 1} failover(s)")
