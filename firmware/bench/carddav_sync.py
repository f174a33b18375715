#!/usr/bin/env python3
"""CardDAV sync benchmark of firmware/bench/carddav-sync.sh (stdlib only;
the client is Debian's vdirsyncer, run as a subprocess).

    carddav_sync.py --mxrack BIN [--servers mxrack,radicale,xandikos]
                    [--cards 5000] [--changes 10] [--work DIR]

For each server, on 127.0.0.1 and a free port:

  1. upload     vdirsyncer initial sync of a local folder of --cards vCards
                (generated once, deterministic, every 10th with a 3 KiB JPEG
                PHOTO) to the server's empty address book;
  2. download   a fresh local folder, vdirsyncer initial sync from the server;
  3. changes    --changes changes made on the server side over plain CardDAV
                (60% edits with If-Match, 20% deletes, 20% new cards), not
                timed; then
  4. incremental  vdirsyncer sync of the folder of step 1.

Each step is checked (cards on the server after 1, files after 2, the edits,
deletions and additions in the local folder after 4), so the servers are
compared doing the same, correct, work. After each step the server's peak
RSS so far (VmHWM of /proc/PID/status) is read. Prints one table per step
with the time, the VmHWM and the ratio mxrack/other.

  mxrack    `mxrack run`, demo mailbox, the HTTPS web listener (self-signed
            certificate: vdirsyncer pins its SHA-256 fingerprint), book
            /dav/books/demo@example.net/personal/.
  Radicale  Debian's radicale 3, htpasswd (plain) auth, rights owner_only,
            plain HTTP, the address book made beforehand as a folder with
            .Radicale.props {"tag": "VADDRESSBOOK"}.
  Xandikos  Debian's xandikos (git-backed), --defaults, plain HTTP, no auth
            (it has none of its own), book /user/contacts/addressbook/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HOST = "127.0.0.1"
USER, PASSWORD = "bench", "bench-pass-1234"

# The smallest baseline JPEG (1x1 grey) with a COM segment that brings it to
# about 3 KiB: a valid, small photo.
_JPEG_1X1 = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////"
    "////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAA"
    "AAAAAAAAAAAAAP/aAAgBAQABPxA="
)


def photo(i: int) -> bytes:
    rnd = random.Random(i)
    comment = bytes(rnd.randrange(32, 127) for _ in range(3000))
    com = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return _JPEG_1X1[:2] + com + _JPEG_1X1[2:]


def fold(line: str) -> str:
    """RFC 6350 3.2 line folding at 75 octets (ASCII content here)."""
    out = [line[:75]]
    rest = line[75:]
    while rest:
        out.append(" " + rest[:74])
        rest = rest[74:]
    return "\r\n".join(out)


FIRST = ["Jo", "Joanna", "John", "Ann", "Bob", "Carl", "Dora", "Ed", "Fay", "Gus", "Hal", "Ida",
         "Kim", "Lea", "Max", "Ned", "Olga", "Pat", "Quin", "Rita", "Sam", "Tess", "Uma", "Vic"]
LAST = ["Jones", "Major", "Smith", "Brown", "Green", "White", "Black", "Gray", "Walker", "Lee",
        "Young", "King", "Wright", "Hill", "Scott", "Adams", "Baker", "Clark", "Evans", "Ford",
        "Hall", "Irwin", "Kerr", "Lane", "Moss", "Nash", "Owen", "Page", "Reed", "Shaw"]


def card(i: int, note: str = "") -> tuple[str, str]:
    """(uid, vCard 3.0 text) of contact i."""
    f, l = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
    uid = f"bench-{i:05d}"
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid}",
        f"FN:{f} {l} {i:05d}",
        f"N:{l};{f};;;",
        f"EMAIL;TYPE=INTERNET,WORK:{f.lower()}.{l.lower()}.{i}@example.org",
        f"TEL;TYPE=WORK,VOICE:+1 555 {i:04d}",
        f"TEL;TYPE=CELL:+1 555 9{i:04d}",
        f"ORG:Company {i % 97};Sales",
        f"TITLE:Title {i % 13}",
        f"ADR;TYPE=WORK:;;{i} Main Street;Springfield;IL;{62700 + i % 100};US",
        f"NOTE:Met at conference {i % 31}.{note}",
    ]
    if i % 10 == 0:
        lines.append(fold("PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(photo(i)).decode()))
    lines.append("END:VCARD")
    return uid, "\r\n".join(lines) + "\r\n"


def free_port() -> int:
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port: int, proc: subprocess.Popen, what: str, secs: float = 30):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}) before it listened")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within {secs}s")


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmHWM for pid {pid}")


# --- the servers ------------------------------------------------------------------


class Dav:
    """A CardDAV server under test: its process, its book URL and its login."""

    name = ""
    tls = False
    auth: tuple[str, str] | None = None

    def __init__(self, work: Path):
        self.work = work
        self.work.mkdir(parents=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.path = ""  # the book's path, with its trailing slash

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}{self.path}"

    def storage_lines(self) -> list[str]:
        lines = ['type = "carddav"', f'url = "{self.url}"']
        if self.auth:
            lines += [f'username = "{self.auth[0]}"', f'password = "{self.auth[1]}"']
        if self.tls:
            der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((HOST, self.port)))
            lines.append(f'verify_fingerprint = "{hashlib.sha256(der).hexdigest()}"')
        return lines

    def conn(self) -> http.client.HTTPConnection:
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(HOST, self.port, context=ctx, timeout=60)
        return http.client.HTTPConnection(HOST, self.port, timeout=60)

    def request(self, c, method: str, path: str, body: bytes | None = None, **headers):
        if self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()

    def listing(self) -> dict[str, str]:
        """href -> etag of the book's cards (PROPFIND Depth 1)."""
        c = self.conn()
        body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                b"<D:getetag/><D:resourcetype/></D:prop></D:propfind>")
        st, _, data = self.request(c, "PROPFIND", self.path, body, Depth="1",
                                   **{"Content-Type": "application/xml"})
        c.close()
        assert st == 207, (st, data[:300])
        out = {}
        for resp in ET.fromstring(data).iter("{DAV:}response"):
            href = resp.findtext("{DAV:}href")
            etag = None
            collection = False
            for ps in resp.iter("{DAV:}propstat"):
                if "200" not in (ps.findtext("{DAV:}status") or ""):
                    continue
                etag = ps.findtext("{DAV:}prop/{DAV:}getetag") or etag
                if ps.find("{DAV:}prop/{DAV:}resourcetype/{DAV:}collection") is not None:
                    collection = True
            if href and etag and not collection:
                out[href] = etag
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Mxrack(Dav):
    name = "mxrack"
    tls = True

    def __init__(self, work: Path, binary: str):
        super().__init__(work)
        self.binary = binary

    def start(self):
        http_port = free_port()
        conf = self.work / "mxrack.toml"
        conf.write_text(f"""[appliance]
hostname = "bench.example.net"
primary_domain = "example.net"
data_dir = "{self.work / 'data'}"
demo = true

[smtp]
mx = ["{HOST}:0"]

[web]
http = ["{HOST}:{http_port}"]
https = ["{HOST}:{self.port}"]

[health]
self_check_at_start = false

[log]
level = "warn"
""")
        out = open(self.work / "mx.out", "wb")
        self.proc = subprocess.Popen([self.binary, "--config", str(conf), "run"],
                                     stdout=out, stderr=open(self.work / "mx.err", "wb"))
        end = time.monotonic() + 60
        while b"mxrack ready" not in (self.work / "mx.out").read_bytes():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit("mxrack did not start:\n" + (self.work / "mx.err").read_text())
            time.sleep(0.1)
        pw = (self.work / "data" / "demo-password").read_text().strip()
        self.auth = ("demo@example.net", pw)
        self.path = "/dav/books/demo@example.net/personal/"


class Radicale(Dav):
    name = "radicale"

    def start(self):
        (self.work / "users").write_text(f"{USER}:{PASSWORD}\n")
        book = self.work / "collections" / "collection-root" / USER / "book"
        book.mkdir(parents=True)
        (book / ".Radicale.props").write_text(json.dumps({"tag": "VADDRESSBOOK"}))
        (self.work / "config").write_text(f"""[server]
hosts = {HOST}:{self.port}
[auth]
type = htpasswd
htpasswd_filename = {self.work / 'users'}
htpasswd_encryption = plain
[rights]
type = owner_only
[storage]
filesystem_folder = {self.work / 'collections'}
[logging]
level = warning
""")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "radicale", "--config", str(self.work / "config")],
            stdout=open(self.work / "out", "wb"), stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "radicale")
        self.auth = (USER, PASSWORD)
        self.path = f"/{USER}/book/"


class Xandikos(Dav):
    name = "xandikos"

    def start(self):
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "/usr/bin/xandikos", "-d", str(self.work / "root"), "--defaults",
             "-l", HOST, "-p", str(self.port)],
            stdout=open(self.work / "out", "wb"), stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "xandikos")
        self.path = "/user/contacts/addressbook/"


# --- vdirsyncer -----------------------------------------------------------------------


def vdirsyncer(server: Dav, local: Path, status: Path, tag: str) -> float:
    """discover + sync of `local` with the server's book; the seconds of both."""
    cfg = status.parent / f"vdirsyncer-{tag}.conf"
    cfg.write_text("\n".join([
        "[general]",
        f'status_path = "{status}"',
        "",
        "[pair book]",
        'a = "local"',
        'b = "remote"',
        "collections = null",
        'conflict_resolution = "b wins"',
        "",
        "[storage local]",
        'type = "filesystem"',
        f'path = "{local}"',
        'fileext = ".vcf"',
        "",
        "[storage remote]",
        *server.storage_lines(),
        "",
    ]))
    t0 = time.monotonic()
    for cmd in (["discover", "book"], ["sync", "book"]):
        r = subprocess.run(["vdirsyncer", "-c", str(cfg), *cmd], capture_output=True, timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"{server.name}: vdirsyncer {' '.join(cmd)} failed ({r.returncode}):\n"
                             + r.stderr.decode(errors="replace")[-3000:])
    return time.monotonic() - t0


def local_cards(folder: Path) -> dict[str, str]:
    """UID -> vCard text of a vdirsyncer filesystem folder."""
    out = {}
    for p in folder.glob("*.vcf"):
        text = p.read_text()
        m = re.search(r"^UID:(.*?)\r?$", text, re.M)
        assert m, f"{p}: no UID"
        out[m[1]] = text
    return out


def run_server(server: Dav, cards: Path, n: int, changes: int) -> dict:
    res: dict = {}
    server.start()
    pid = server.proc.pid
    res["rss_start"] = vm_hwm_kib(pid)
    work = server.work
    up = work / "up"
    shutil.copytree(cards, up)

    res["upload"] = vdirsyncer(server, up, work / "status-up", "up")
    res["rss_upload"] = vm_hwm_kib(pid)
    listed = server.listing()
    assert len(listed) == n, f"{server.name}: {len(listed)} cards on the server after upload, not {n}"

    down = work / "down"
    down.mkdir()
    res["download"] = vdirsyncer(server, down, work / "status-down", "down")
    res["rss_download"] = vm_hwm_kib(pid)
    got = local_cards(down)
    assert len(got) == n, f"{server.name}: {len(got)} cards downloaded, not {n}"
    assert all(f"bench-{i:05d}" in got for i in range(0, n, max(1, n // 50)))

    # The changes on the server side, over plain CardDAV.
    rnd = random.Random(18)
    hrefs = sorted(listed)
    picked = rnd.sample(hrefs, changes)
    n_add = max(1, changes // 5)
    n_del = max(1, changes // 5)
    edits, deletes = picked[: changes - n_add - n_del], picked[changes - n_add - n_del: changes - n_add]
    c = server.conn()
    edited, deleted = set(), set()
    for href in edits:
        st, h, body = server.request(c, "GET", href)
        assert st == 200, (server.name, "GET", href, st)
        text = body.decode()
        uid = re.search(r"^UID:(.*?)\r?$", text, re.M)[1]
        text = text.replace("NOTE:", "NOTE:edited on the server. ", 1)
        st, _, b = server.request(c, "PUT", href, text.encode(), **{
            "If-Match": listed[href], "Content-Type": "text/vcard; charset=utf-8"})
        assert st in (200, 201, 204), (server.name, "PUT", href, st, b[:300])
        edited.add(uid)
    for href in deletes:
        st, _, body = server.request(c, "GET", href)
        deleted.add(re.search(r"^UID:(.*?)\r?$", body.decode(), re.M)[1])
        st, _, b = server.request(c, "DELETE", href, **{"If-Match": listed[href]})
        assert st in (200, 204), (server.name, "DELETE", href, st, b[:300])
    added = set()
    for k in range(n_add):
        uid, text = card(n + k)
        st, _, b = server.request(c, "PUT", f"{server.path}{uid}.vcf", text.encode(), **{
            "If-None-Match": "*", "Content-Type": "text/vcard; charset=utf-8"})
        assert st == 201, (server.name, "PUT new", st, b[:300])
        added.add(uid)
    c.close()

    res["incremental"] = vdirsyncer(server, up, work / "status-up", "up")
    res["rss_incremental"] = vm_hwm_kib(pid)
    after = local_cards(up)
    assert len(after) == n - len(deleted) + len(added), (server.name, len(after))
    assert not (deleted & after.keys()), f"{server.name}: deleted cards still local"
    assert added <= after.keys(), f"{server.name}: added cards not local"
    for uid in edited:
        assert "edited on the server" in after[uid], f"{server.name}: edit of {uid} not synced"
    server.stop()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mxrack", required=True)
    ap.add_argument("--servers", default="mxrack,radicale,xandikos")
    ap.add_argument("--cards", type=int, default=5000)
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="mxrack-carddav-bench."))
    cards = work / "cards"
    cards.mkdir(parents=True)
    size = 0
    for i in range(a.cards):
        uid, text = card(i)
        (cards / f"{uid}.vcf").write_text(text)
        size += len(text)
    print(f"== {a.cards} vCards 3.0 ({size / 1048576:.1f} MiB, every 10th with a "
          f"{len(photo(0))}-byte JPEG PHOTO), {a.changes} server-side changes; "
          f"vdirsyncer {subprocess.run(['vdirsyncer', '--version'], capture_output=True, text=True).stdout.split()[-1]}",
          flush=True)
    results = {}
    for name in a.servers.split(","):
        if name == "mxrack":
            s: Dav = Mxrack(work / name, a.mxrack)
        elif name == "radicale":
            s = Radicale(work / name)
        elif name == "xandikos":
            s = Xandikos(work / name)
        else:
            raise SystemExit(f"unknown server {name}")
        try:
            results[name] = run_server(s, cards, a.cards, a.changes)
        except SystemExit as e:  # one server failing does not hide the others' figures
            print(f"{name:9s} FAILED: {e}", flush=True)
            continue
        finally:
            s.stop()
        r = results[name]
        print(f"{name:9s} upload {r['upload']:7.1f} s   download {r['download']:6.1f} s   "
              f"incremental {r['incremental']:5.2f} s   VmHWM start {r['rss_start'] / 1024:.0f} MiB, "
              f"after upload {r['rss_upload'] / 1024:.0f}, download {r['rss_download'] / 1024:.0f}, "
              f"incremental {r['rss_incremental'] / 1024:.0f} MiB", flush=True)
    if "mxrack" in results:
        m = results["mxrack"]
        for other, r in results.items():
            if other == "mxrack":
                continue
            print(f"mxrack/{other}: upload {m['upload'] / r['upload']:.2f}x  "
                  f"download {m['download'] / r['download']:.2f}x  "
                  f"incremental {m['incremental'] / r['incremental']:.2f}x  "
                  f"peak RSS {m['rss_incremental'] / r['rss_incremental']:.2f}x  (time and RSS: lower is better for mxrack)")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    if not os.environ.get("KEEP"):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
