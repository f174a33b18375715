"""The appliance watching itself (issue 6), end to end: the real binary's
health monitor runs over a fake sysfs/procfs tree that the test builds and
changes (a RAID1 md0 of two SCSI disks and a hot spare, known by serial),
and the test looks at what an operator would see:

- the status page over HTTPS (HTML), its JSON and its Atom feed (parsed with
  xml.etree), the Prometheus /metrics (every line parsed), the HTTP port
  redirecting to HTTPS, `mxrack status`, `mxrack disks`, `mxrack doctor`;
- an operator's maintenance note (`mxrack status note`);
- a disk whose error counters rise past the threshold: an incident naming
  its serial (on a fixture tree the monitor does not act; it says so);
- a data disk "full" by the configured thresholds (a ballast file makes the
  real data folder cross them): SMTP answers 452 and IMAP APPEND is refused,
  and both work again once the ballast is gone;
- the page in a real browser: headless Chromium takes a screenshot.

Everything listens on and connects to 127.0.0.1.
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import shutil
import struct
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mxlib import BIN, DEMO, HOST, REPO, IO_TIMEOUT, CliError, Server, deadline_loop, free_ports, insecure_tls

ATOM = "{http://www.w3.org/2005/Atom}"
SERIALS = ["SN-E2E-0", "SN-E2E-1", "SN-E2E-2"]


# --- a fake sysfs/procfs tree -----------------------------------------------------


def write(root: Path, rel: str, value: str | bytes):
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(value if isinstance(value, bytes) else value.encode())


def vpd_pg80(serial: str) -> bytes:
    return bytes([0, 0x80, 0, len(serial)]) + serial.encode()


def make_disk(root: Path, kernel: str, serial: str, target: int, ioerr: int = 2):
    """A SCSI disk as sysfs shows it (values in the kernel's formats), with a
    /dev/disk/by-path link as udev makes it."""
    dev = f"/sys/block/{kernel}/device"
    write(root, f"{dev}/state", "running\n")
    write(root, f"{dev}/ioerr_cnt", f"{ioerr:#x}\n")
    write(root, f"{dev}/iotmo_cnt", "0x0\n")
    write(root, f"{dev}/iodone_cnt", "0x1b0\n")
    write(root, f"{dev}/vendor", "QEMU    \n")
    write(root, f"{dev}/model", "QEMU HARDDISK   \n")
    write(root, f"{dev}/rev", "2.5+\n")
    write(root, f"{dev}/timeout", "30\n")
    write(root, f"{dev}/wwid", f"naa.5000c500a0b0c{target:03x}\n")
    write(root, f"{dev}/vpd_pg80", vpd_pg80(serial))
    write(root, f"/sys/block/{kernel}/size", "131072\n")
    write(root, f"/sys/block/{kernel}/holders/md0", "")
    link = root / "dev/disk/by-path" / f"pci-0000:00:02.0-scsi-0:0:{target}:0"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(f"../../{kernel}")


def make_tree(root: Path):
    """md0: RAID1 of sda and sdb, hot spare sdc; kernel limits well below."""
    for i, k in enumerate(["sda", "sdb", "sdc"]):
        make_disk(root, k, SERIALS[i], i)
    md = "/sys/block/md0/md"
    for attr, value in {
        "level": "raid1",
        "raid_disks": "2",
        "array_state": "clean",
        "degraded": "0",
        "sync_action": "idle",
        "sync_completed": "none",
        "sync_speed": "none",
        "component_size": "64512",
    }.items():
        write(root, f"{md}/{attr}", value + "\n")
    for dev, state, slot in [("sda", "in_sync", "0"), ("sdb", "in_sync", "1"), ("sdc", "spare", "none")]:
        write(root, f"{md}/dev-{dev}/state", state + "\n")
        write(root, f"{md}/dev-{dev}/slot", slot + "\n")
        write(root, f"{md}/dev-{dev}/errors", "0\n")
    write(
        root,
        "/proc/mdstat",
        "Personalities : [raid1] \n"
        "md0 : active raid1 sdc[2](S) sdb[1] sda[0]\n"
        "      64512 blocks super 1.2 [2/2] [UU]\n\n"
        "unused devices: <none>\n",
    )
    write(root, "/proc/sys/fs/file-nr", "1000\t0\t100000\n")
    write(root, "/proc/sys/kernel/pid_max", "32768\n")
    write(root, "/proc/sys/kernel/threads-max", "3540\n")
    write(root, "/proc/loadavg", "0.15 0.03 0.01 1/62 396\n")
    write(root, "/proc/net/netstat", "TcpExt: ListenOverflows ListenDrops\nTcpExt: 0 0\n")
    write(root, "/proc/net/sockstat", "sockets: used 6\nTCP: inuse 3 orphan 0 tw 0 alloc 3 mem 0\n")


# --- the server -----------------------------------------------------------------------


class StatusServer(Server):
    """mxlib's Server with the web port, an IMAP listener and [health] over
    a fixture tree."""

    def __init__(self, sys_root: Path, **health):
        super().__init__()
        taken = {self.mx_port, self.submission_port, self.submissions_port, self.pop3_port,
                 self.pop3s_port, self.ldap_port, self.ldaps_port}
        self.imap_port = [p for p in free_ports(12) if p not in taken][0]
        self.health = {
            "sys_root": str(sys_root),
            # The fixture tree is laid out as the QEMU board's disks are
            # (virtio-scsi host 0, disk N at target N): its bay map applies.
            "bay_map": str(REPO / "board/qemu-x86_64/rootfs-overlay/etc/mxrack/bays.toml"),
            "interval_secs": 1,
            "disk_error_threshold": 5,
            "auto_fail": True,
            "self_check_at_start": True,
            **health,
        }
        self.use_web(self.imap_port)

    def write_config(self):
        super().write_config()
        if getattr(self, "imap_port", None):
            text = self.config.read_text()
            text += f'\n[imap]\nimap = ["{HOST}:{self.imap_port}"]\n'
            self.config.write_text(text)


def https(server: Server, path: str) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"https://{HOST}:{server.https_port}{path}")
    with urllib.request.urlopen(req, context=insecure_tls(), timeout=IO_TIMEOUT) as r:
        return r.status, dict(r.headers), r.read()


def status_json(server: Server) -> dict:
    code, _, body = https(server, "/status.json")
    assert code == 200
    return json.loads(body)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysroot")
    make_tree(root)
    return root


@pytest.fixture(scope="module")
def st(tree):
    s = StatusServer(tree)
    try:
        s.start()
        # The monitor's first look.
        for _ in deadline_loop(30, "the monitor's first look"):
            if status_json(s).get("snapshot", {}).get("disks"):
                break
        yield s
    finally:
        s.teardown()


# --- tests ------------------------------------------------------------------------------


def test_ready_line_names_the_web_listeners(st):
    ready = next(l for l in st.stdout_lines if l.startswith("mxrack ready:"))
    assert f"http={HOST}:{st.http_port}" in ready.split()
    assert f"https={HOST}:{st.https_port}" in ready.split()


def test_status_page_json_and_plain_http_redirect(st):
    code, headers, body = https(st, "/status")
    assert code == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    html = body.decode()
    assert "<title>mx.test.example status</title>" in html
    assert "md0" in html and "SN-E2E-0" in html
    assert "src=" not in html and "http://" not in html.replace('"http://www.w3.org', "")

    j = status_json(st)
    md0 = j["snapshot"]["arrays"][0]
    assert (md0["name"], md0["level"], md0["in_sync"], md0["spares"]) == ("md0", "raid1", 2, 1)
    disks = {d["id"]: d for d in j["snapshot"]["disks"]}
    assert set(disks) == set(SERIALS)
    assert disks["SN-E2E-0"]["bay"] == "1"
    assert disks["SN-E2E-0"]["path"] == "pci-0000:00:02.0-scsi-0:0:0:0"
    assert "slot" not in disks["SN-E2E-0"], "one word per meaning: bay, member_index"
    # The boot's counter value is not an error of the disk.
    assert (disks["SN-E2E-0"]["ioerr"], disks["SN-E2E-0"]["errors"]) == (2, 0)
    assert disks["SN-E2E-0"]["errors_at_first_sight"] == 2
    members = {m["disk"]: m for m in md0["members"]}
    assert (members["SN-E2E-1"]["member_index"], members["SN-E2E-1"]["bay"]) == (1, "2")
    assert (members["SN-E2E-2"]["member_index"], members["SN-E2E-2"]["bay"]) == (None, "3")
    assert members["SN-E2E-1"]["wwn"] == "naa.5000c500a0b0c001"
    assert disks["SN-E2E-0"]["wwn"] == "naa.5000c500a0b0c000"
    assert disks["SN-E2E-2"]["condition"] == "spare"

    # Port 80's stand-in redirects to HTTPS, path kept.
    assert redirect(st.http_port, "/status.json?x=1", f"{HOST}:{st.http_port}") == (
        301,
        f"https://{HOST}:{st.https_port}/status.json?x=1",
    )


def redirect(http_port: int, path: str, host: str) -> tuple[int, str | None]:
    """The HTTP listener's answer to GET `path` with Host `host`: status
    and Location."""
    import http.client

    c = http.client.HTTPConnection(HOST, http_port, timeout=IO_TIMEOUT)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.getheader("Location")
    finally:
        c.close()


def test_the_redirect_names_the_public_https_port_behind_a_port_forward(make_server):
    # image/qemu forwards host 10443 to the guest's 443: the redirect must
    # send the browser to the port it can reach, not to the listener's.
    s = make_server(start=False)
    s.web = {"public_https_port": 10443}
    s.use_web()
    s.start()
    assert redirect(s.http_port, "/status?y=2", f"{HOST}:10080") == (301, f"https://{HOST}:10443/status?y=2")


PROM_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|NaN)$'
)


def metrics(server: Server) -> dict[str, list[tuple[str, float]]]:
    code, headers, body = https(server, "/metrics")
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, list[tuple[str, float]]] = {}
    types = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = PROM_LINE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        assert m[1] in types, f"{m[1]} has no # TYPE line"
        out.setdefault(m[1], []).append((m[2] or "", float(m[3])))
    return out


def test_metrics_parse_and_carry_the_figures(st):
    m = metrics(st)
    assert ('{array="md0",level="raid1"}', 0.0) in m["mxrack_md_degraded"]
    assert ('{array="md0",role="spare"}', 1.0) in m["mxrack_md_members"]
    limits = dict(m["mxrack_kernel_limit_max"])
    assert limits['{sysctl="fs.file-max"}'] == 100000
    assert limits['{sysctl="kernel.threads-max"}'] == 3540
    used = dict(m["mxrack_kernel_limit_used"])
    assert used['{sysctl="fs.file-max"}'] == 1000
    assert any('disk="SN-E2E-1"' in labels for labels, _ in m["mxrack_disk_io_errors_total"])
    assert m["mxrack_intake_refused"] == [("", 0.0)]
    assert m["mxrack_monitor_looks_total"][0][1] >= 1
    assert {labels for labels, _ in m["mxrack_fs_free_bytes"]} >= {
        f'{{fs="data",path="{st.data}"}}'
    }


def test_a_maintenance_note_reaches_page_feed_and_terminal(st):
    out = st.mx("status", "note", "Kernel update maintenance", "Reboot between 22:00 and 22:10 UTC.").decode()
    entry_id = int(re.match(r"status entry (\d+) ", out)[1])
    st.mx("status", "note", "--to", str(entry_id), "Back up at 22:06 UTC.")

    text = st.mx("status").decode()
    heading = re.search(r"^\d{4}-\d\d-\d\d: \d\d:\d\d UTC     Kernel update maintenance$", text, re.M)
    assert heading, text
    back = text.index("Back up at 22:06 UTC.")
    reboot = text.index("Reboot between 22:00 and 22:10 UTC.")
    assert heading.start() < back < reboot, "updates newest first:\n" + text

    code, headers, body = https(st, "/status.atom")
    assert code == 200 and headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(body)
    assert feed.tag == f"{ATOM}feed"
    assert feed.find(f"{ATOM}id").text == "urn:mxrack:mx.test.example:status"
    entries = feed.findall(f"{ATOM}entry")
    note = [e for e in entries if e.find(f"{ATOM}title").text == "Kernel update maintenance"]
    assert len(note) == 1
    content = note[0].find(f"{ATOM}content").text
    assert "Back up at 22:06 UTC." in content and "Reboot between" in content
    assert note[0].find(f"{ATOM}category").get("term") == "maintenance"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", feed.find(f"{ATOM}updated").text)


def test_rising_disk_errors_open_an_incident_naming_the_serial(st, tree):
    # sdb's SCSI error counter jumps by 30 (hex, as the kernel writes it).
    write(tree, "/sys/block/sdb/device/ioerr_cnt", "0x20\n")
    for _ in deadline_loop(30, "an incident for SN-E2E-1"):
        j = status_json(st)
        incidents = [e for e in j["entries"] if e["kind"] == "incident" and "SN-E2E-1" in e["title"]]
        if incidents:
            break
    inc = incidents[0]
    assert inc["resolved"] is None
    assert inc["title"].startswith("Disk SN-E2E-1 failing (bay 2)")
    texts = " ".join(u["text"] for u in inc["updates"])
    assert "Disk SN-E2E-1 (WWN naa.5000c500a0b0c001) in bay 2: 30 I/O errors and timeouts" in texts
    # A fixture tree: the monitor says what it would do instead of doing it.
    for _ in deadline_loop(15, "the 'would fail' update"):
        j = status_json(st)
        inc = next(e for e in j["entries"] if e["id"] == inc["id"])
        if any("Would fail disk SN-E2E-1 out of md0" in u["text"] for u in inc["updates"]):
            break
    assert (tree / "sys/block/md0/md/dev-sdb/state").read_text() == "in_sync\n", "nothing written"
    assert "open incident" in j["summary"]

    disks = st.mx("disks").decode()
    row = next(l for l in disks.splitlines() if l.startswith("SN-E2E-1"))
    assert "failing" in row and "md0:in_sync" in row and "naa.5000c500a0b0c001" in row, disks
    assert "md0 raid1 clean: 2/2 in sync, 1 spare" in disks
    # `mxrack status` shows the array in the same words.
    status = st.mx("status").decode()
    assert "md0 raid1 clean: 2/2 in sync, 1 spare" in status, status

    html = https(st, "/status")[2].decode()
    assert "Disk SN-E2E-1 failing" in html

    # The technician's command reaches the monitor, which refuses to touch
    # a fixture tree.
    with pytest.raises(CliError) as e:
        st.mx("disk", "replace", "SN-E2E-1")
    assert "nothing changed" in str(e.value) and "sys_root" in str(e.value)
    with pytest.raises(CliError) as e:
        st.mx("disk", "replace", "SN-NOPE")
    assert "no disk with serial or WWN" in str(e.value)


def test_locate_blinks_the_activity_led_and_stops(st, tree):
    # No enclosure in the tree: the disk is read in a rhythm (a fixture's
    # /dev/sdc is an ordinary file), in the background, until --off.
    dev = tree / "dev/sdc"
    dev.parent.mkdir(exist_ok=True)
    with open(dev, "wb") as f:
        f.truncate(4 << 20)
    out = st.mx("disk", "locate", "SN-E2E-2", "--seconds", "30").decode()
    assert "SN-E2E-2 (WWN naa.5000c500a0b0c002) in bay 3" in out, out
    assert "activity LED blinks (1 s of reads, 1 s rest) for 30 s" in out, out
    out = st.mx("disk", "locate", "SN-E2E-2", "--off").decode()
    assert "blink stopped" in out, out
    out = st.mx("disk", "locate", "SN-E2E-2", "--off").decode()
    assert "no locate was running" in out, out


def test_doctor_checks_every_listener_and_finds_a_dead_port(st, tmp_path):
    out = st.mx("doctor").decode()
    for key, port in [("smtp.mx", st.mx_port), ("imap.imap", st.imap_port),
                      ("web.http", st.http_port), ("web.https", st.https_port),
                      ("pop3.pop3s", st.pop3s_port)]:
        assert re.search(rf"^PASS  {re.escape(key)} {HOST}:{port}: answers from", out, re.M), out
    assert re.search(r"^PASS  certificate: ", out, re.M), out
    assert re.search(r"^PASS  data folder: ", out, re.M), out
    assert re.search(r"^PASS  file modes: ", out, re.M), out
    assert re.search(r"^PASS  clock: ", out, re.M), out

    # The seed's port-80 mistake: a configured web.http port that clients
    # cannot reach (here: nothing serves it) fails the check, naming it.
    dead = [p for p in free_ports(20) if p not in {st.http_port, st.https_port, st.mx_port}][0]
    cfg = tmp_path / "dead-http.toml"
    cfg.write_text(st.config.read_text().replace(f'http = ["{HOST}:{st.http_port}"]', f'http = ["{HOST}:{dead}"]'))
    r = subprocess.run([BIN, "--config", str(cfg), "doctor"], capture_output=True, timeout=60)
    text = r.stdout.decode()
    assert r.returncode == 1, text
    assert re.search(rf"^FAIL  web.http {HOST}:{dead}: no answer from {HOST}:{dead}", text, re.M), text
    assert f"no firewall blocks port {dead}" in text
    assert re.search(rf"^PASS  web.https {HOST}:{st.https_port}", text, re.M), text


def test_the_start_up_self_check_ran(st):
    assert "self-check passed" in st.stderr_tail()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_status_page_in_a_real_browser(st, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (firmware/scripts/test.sh installs it)"
    shot = tmp_path / "status.png"
    profile = tmp_path / "profile"
    r = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic", "--no-first-run", f"--user-data-dir={profile}",
            "--ignore-certificate-errors", "--hide-scrollbars", "--window-size=1200,1400",
            f"--screenshot={shot}", f"https://{HOST}:{st.https_port}/status",
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists(), f"no screenshot (exit {r.returncode}): {r.stderr.decode()[-2000:]}"
    data = shot.read_bytes()
    width, height = png_size(data)
    print(f"\nstatus page screenshot: {shot} ({width}x{height}, {len(data)} bytes)")
    assert (width, height) == (1200, 1400)
    # A blank page compresses to almost nothing; the page has text and colour.
    assert len(data) > 20_000, f"suspiciously small screenshot: {len(data)} bytes"


# --- a full data disk --------------------------------------------------------------------


def statvfs_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def make_ballast(path: Path, size: int) -> int:
    """A file taking `size` bytes of the file system (fallocate, else zeros)."""
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError:
            size = min(size, 256 << 20)
            chunk = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    return size


def smtp_mail_reply(port: int) -> str:
    import smtplib

    s = smtplib.SMTP(HOST, port, local_hostname="e2e.test", timeout=IO_TIMEOUT)
    try:
        s.ehlo()
        code, text = s.mail("sender@example.org")
        return f"{code} {text.decode()}"
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass


def imap_append(server: StatusServer) -> tuple[str, list]:
    c = imaplib.IMAP4(HOST, server.imap_port, timeout=IO_TIMEOUT)
    try:
        c.starttls(ssl_context=insecure_tls())
        c.login(DEMO, server.password)
        msg = b"From: a@example.org\r\nTo: demo@example.net\r\nSubject: append\r\n\r\nhello\r\n"
        typ, data = c.append("INBOX", None, None, msg)
        return typ, data
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def test_a_full_data_disk_gives_452_and_refused_append_until_space_returns(tmp_path, tree):
    # The thresholds are set so that the real data folder counts as full
    # while a ballast file takes space, and as fine again once it is gone.
    base = Path("/tmp")
    free = statvfs_free(base)
    ballast_size = max(min(4 << 30, free // 4), 64 << 20)
    ballast = base / f"mxe2e-ballast-{os.getpid()}"
    try:
        ballast_size = make_ballast(ballast, ballast_size)
        s = StatusServer(
            tree,
            space_refuse_free_bytes=free - ballast_size // 2,
            space_resume_free_bytes=free - ballast_size // 4,
            space_refuse_free_percent=0,
            space_resume_free_percent=0,
            space_warn_percent=100,
        )
        assert os.stat(s.base).st_dev == os.stat(base).st_dev, "the data folder is not under /tmp"
        try:
            s.start()
            for _ in deadline_loop(30, "SMTP to answer 452"):
                reply = smtp_mail_reply(s.mx_port)
                if reply.startswith("452"):
                    break
            assert reply.startswith("452 4.3.1"), reply
            typ, data = imap_append(s)
            assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
            j = status_json(s)
            assert j["intake_refusal"], j
            inc = next(e for e in j["entries"] if e["title"] == "Data disk nearly full: new mail refused")
            assert inc["resolved"] is None
            assert ("", 1.0) in metrics(s)["mxrack_intake_refused"]

            ballast.unlink()
            for _ in deadline_loop(30, "SMTP to take mail again"):
                reply = smtp_mail_reply(s.mx_port)
                if reply.startswith("250"):
                    break
            typ, data = imap_append(s)
            assert typ == "OK", (typ, data)
            j = status_json(s)
            inc = next(e for e in j["entries"] if e["id"] == inc["id"])
            assert inc["resolved"] is not None
            assert "New mail is accepted again" in inc["updates"][-1]["text"]
        finally:
            s.teardown()
    finally:
        if ballast.exists():
            ballast.unlink()
