#!/usr/bin/env python3
"""IMAP load client of firmware/bench/imap-bench.sh (stdlib only, raw sockets).

    imap_load.py run --port P --user U --password PW --pid PID --label NAME --out FILE.json
    imap_load.py report mxrack.json dovecot.json

`run` fills the INBOX with --messages deterministic messages (APPEND with
LITERAL+, pipelined 16 deep, over 8 connections at once: the same bytes
for every server),
then times, each on its own logged-in connection:

    SELECT INBOX
    FETCH 1:* (FLAGS UID RFC822.SIZE)
    FETCH 1:* BODYSTRUCTURE          (first run, then a second run)
    SEARCH BODY <needle>             (first and second run; the needle is in 1%)
    20 clients at once, each: login, SELECT, FETCH 1:* (FLAGS UID RFC822.SIZE),
      then 50 x UID FETCH <random uid> BODY.PEEK[]

and checks the answers (message counts, needle hits, bytes fetched), so both
servers are compared doing the same, correct, work.

Memory: a sampler thread reads /proc every 100 ms and keeps, per phase, the
peak of the SUM of VmRSS (and of Pss, from smaps_rollup) over the server's
process tree (--pid and all its descendants). mxrack is one process;
Dovecot is a master with login, auth, config, log and one imap process per
session, which come and go, so the sampled sum is the comparable figure.
VmRSS counts shared pages (libraries) once per process; Pss splits them.
At the end the VmHWM (kernel-kept peak RSS) of the root process is also
recorded (for mxrack: the peak of the whole run, population included).

Messages are 2-8 KiB: 70% text/plain, 20% multipart/alternative (text and
HTML), 10% multipart/mixed with a base64 attachment, a third of those also
with an attached message/rfc822.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import socket
import statistics
import sys
import threading
import time

NEEDLE = "zyzzyvabench"
WORDS = (
    "the of and to in is was for on that with as by at from this be or are an it "
    "not have has had were which but their been one all would there will more if "
    "about when who so what can out up into time only new some could these two may "
    "first then do any like my now over such our man me even most made after also "
    "did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still "
    "own see men work long get here between both life being under never day same "
    "another know while last might us great old year off come since against go came "
    "right used take three invoice report meeting budget project quarter delivery "
    "schedule contract server backup mailbox customer support ticket release update "
    "network storage invoice payment order shipping review draft agenda minutes"
).split()
FIRST = "Anna Ben Carla Dirk Emma Felix Greta Hugo Ines Jonas Kim Lena Max Nora Otto Paula".split()
LAST = "Meyer Schmidt Novak Rossi Dubois Jensen Silva Kowalski Berg Larsen Costa Weber".split()


# --- messages ------------------------------------------------------------------------


def words(rng: random.Random, nbytes: int) -> bytes:
    """Lines of random words (at most about 72 characters), about nbytes long, CRLF line ends."""
    out, line, width, total = [], [], 0, 0
    for w in rng.choices(WORDS, k=nbytes // 4 + 16):
        line.append(w)
        width += len(w) + 1
        if width > 60:
            out.append(" ".join(line))
            total += width + 1
            line, width = [], 0
            if total >= nbytes:
                break
    if line:
        out.append(" ".join(line))
    return ("\r\n".join(out) + "\r\n").encode()


def message(i: int, seed: int) -> bytes:
    rng = random.Random(seed * 1_000_003 + i)
    size = rng.randint(2200, 8000)
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    addr = f"{name.split()[0].lower()}.{i % 97}@example.org"
    day = 1 + i % 28
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
    head = (
        f"From: {name} <{addr}>\r\n"
        f"To: Bench <bench@example.net>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Mon, {day} Jan 2024 {i % 24:02d}:{i % 60:02d}:00 +0000\r\n"
        f"Message-ID: <{seed}.{i}@bench.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    kind = rng.random()
    budget = max(512, size - len(head) - 200)
    text = words(rng, budget if kind < 0.7 else budget // 2)
    if i % 100 == 42:  # 1% of the messages carry the needle in their text
        j = text.find(b"\r\n", 150) + 2  # at the start of a line
        text = text[:j] + f"{NEEDLE} ".encode() + text[j:]
    if kind < 0.7:
        return head + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text
    if kind < 0.9:
        html = b"<html><body><p>" + text.replace(b"\r\n", b"</p>\r\n<p>") + b"</p></body></html>\r\n"
        html = html[: html.rfind(b"\r\n", 0, budget // 2) + 2]  # whole lines only
        b = f"alt-{seed}-{i}".encode()
        return (
            head
            + b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n'
            + b"--" + b + b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + text
            + b"--" + b + b"\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n" + html
            + b"--" + b + b"--\r\n"
        )
    blob = rng.randbytes(max(256, (size - len(head) - len(text) - 450) * 3 // 4))
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    b = f"mix-{seed}-{i}".encode()
    parts = (
        b"--" + b + b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + text
        + b"--" + b + b'\r\nContent-Type: application/pdf; name="doc.pdf"\r\n'
        b'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="doc.pdf"\r\n\r\n'
        + b64
    )
    if i % 3 == 0:
        inner = (
            f"From: {name} <{addr}>\r\nSubject: Fwd: {subject}\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        ).encode() + words(rng, 300)
        parts += b"--" + b + b"\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    return head + b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n' + parts + b"--" + b + b"--\r\n"


# --- a raw IMAP connection ---------------------------------------------------------------


class Imap:
    def __init__(self, host: str, port: int, timeout: float = 300):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.pos = 0
        self.n = 0
        self.greeting = self._line()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        if self.pos > (1 << 20):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos : i])
                self.pos = i + 2
                return line
            self._fill()

    def _skip(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            self._fill()
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def read_tagged(self, tag: bytes, keep: bool = False) -> tuple[bytes, list[bytes], int]:
        """Reads responses up to the tagged one: (tagged line, kept untagged
        responses, bytes of literals seen)."""
        kept: list[bytes] = []
        literal_bytes = 0
        prefix = tag + b" "
        while True:
            line = self._line()
            resp = line
            while line.endswith(b"}"):
                j = line.rfind(b"{")
                n = int(line[j + 1 : -1])
                lit = self._skip(n)
                literal_bytes += n
                line = self._line()
                if keep:
                    resp += b"\r\n" + lit + line
            if resp.startswith(prefix):
                return resp, kept, literal_bytes
            if keep:
                kept.append(resp)

    def tag(self) -> bytes:
        self.n += 1
        return b"b%d" % self.n

    def cmd(self, command: str | bytes, keep: bool = False) -> tuple[list[bytes], int]:
        t = self.tag()
        if isinstance(command, str):
            command = command.encode()
        self.sock.sendall(t + b" " + command + b"\r\n")
        tagged, kept, lits = self.read_tagged(t, keep)
        if not tagged[len(t) + 1 :].startswith(b"OK"):
            raise RuntimeError(f"{command[:80]!r}: {tagged!r}")
        return kept, lits

    def login(self, user: str, password: str):
        self.cmd(f'LOGIN "{user}" "{password}"')


# --- memory sampling -------------------------------------------------------------------------


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kib(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.phase = "idle"
        self.peaks: dict[str, dict[str, int]] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            pids = tree(self.root)
            rss = sum(kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
            pss = sum(kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
            peak = self.peaks.setdefault(self.phase, {"rss_kib": 0, "pss_kib": 0, "processes": 0})
            peak["rss_kib"] = max(peak["rss_kib"], rss)
            peak["pss_kib"] = max(peak["pss_kib"], pss)
            peak["processes"] = max(peak["processes"], len(pids))
            self.stop.wait(self.interval)


# --- the run ----------------------------------------------------------------------------------


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def append_all(a, msgs: list[bytes], window: int = 16):
    """APPENDs msgs over one connection, `window` commands in flight (LITERAL+)."""
    c = Imap(a.host, a.port)
    c.login(a.user, a.password)
    for i in range(0, len(msgs), window):
        tags, out = [], []
        for m in msgs[i : i + window]:
            t = c.tag()
            tags.append(t)
            out.append(t + b" APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\n")
        c.sock.sendall(b"".join(out))
        for t in tags:
            tagged, _, _ = c.read_tagged(t)
            if not tagged[len(t) + 1 :].startswith(b"OK"):
                raise RuntimeError(f"APPEND: {tagged!r}")
    c.close()


def populate(a, msgs: list[bytes]) -> float:
    """--append-connections connections at once, each APPENDing its share."""
    n = a.append_connections
    errors: list[BaseException] = []

    def work(k):
        try:
            append_all(a, msgs[k::n])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def logged_in(a) -> Imap:
    c = Imap(a.host, a.port)
    c.login(a.user, a.password)
    return c


def client_work(a, seed: int, uids: list[int], sizes: dict[int, int], out: list, barrier):
    rng = random.Random(seed)
    picks = [rng.choice(uids) for _ in range(50)]
    barrier.wait()
    t0 = time.perf_counter()
    c = logged_in(a)
    c.cmd("SELECT INBOX")
    kept, _ = c.cmd("FETCH 1:* (FLAGS UID RFC822.SIZE)", keep=True)
    assert len(kept) == len(uids), len(kept)
    got = 0
    for u in picks:
        _, lits = c.cmd(f"UID FETCH {u} BODY.PEEK[]")
        assert lits == sizes[u], (u, lits, sizes[u])
        got += lits
    c.close()
    out.append((time.perf_counter() - t0, got))


def run(a):
    msgs = [message(i, a.seed) for i in range(a.messages)]
    for m in msgs:  # CRLF line ends only: no server may normalise anything
        assert m.count(b"\r") == m.count(b"\n") == m.count(b"\r\n"), m[:200]
    needle_hits = sum(1 for m in msgs if NEEDLE.encode() in m)
    total_bytes = sum(len(m) for m in msgs)
    sampler = Sampler(a.pid)
    sampler.start()
    res: dict = {
        "label": a.label,
        "messages": a.messages,
        "bytes": total_bytes,
        "clients": a.clients,
        "append_connections": a.append_connections,
    }

    sampler.phase = "populate"
    res["populate_s"] = populate(a, msgs)

    sampler.phase = "measure"
    c = logged_in(a)
    sel = []
    for _ in range(3):
        d = logged_in(a)
        t, (kept, _) = timed(lambda: d.cmd("SELECT INBOX", keep=True))
        assert any(k.endswith(b" %d EXISTS" % a.messages) for k in kept), kept
        sel.append(t)
        d.close()
    res["select_s"] = statistics.median(sel)
    c.cmd("SELECT INBOX")

    t, (kept, _) = timed(lambda: c.cmd("FETCH 1:* (FLAGS UID RFC822.SIZE)", keep=True))
    assert len(kept) == a.messages, len(kept)
    res["fetch_flags_s"] = t
    sizes, uids = {}, []
    for k in kept:
        m = re.search(rb"UID (\d+)", k)
        s = re.search(rb"RFC822\.SIZE (\d+)", k)
        uids.append(int(m[1]))
        sizes[int(m[1])] = int(s[1])
    assert sum(sizes.values()) == total_bytes, (sum(sizes.values()), total_bytes)
    t, _ = timed(lambda: c.cmd("FETCH 1:* (FLAGS UID RFC822.SIZE)"))
    res["fetch_flags_2_s"] = t

    for key in ("bodystructure_s", "bodystructure_2_s"):
        t, (kept, _) = timed(lambda: c.cmd("FETCH 1:* BODYSTRUCTURE", keep=True))
        assert len(kept) == a.messages, len(kept)
        res[key] = t

    for key in ("search_s", "search_2_s"):
        t, (kept, _) = timed(lambda: c.cmd(f"SEARCH BODY {NEEDLE}", keep=True))
        hits = [x for k in kept if k.startswith(b"* SEARCH") for x in k.split()[2:]]
        assert len(hits) == needle_hits, (len(hits), needle_hits)
        res[key] = t
    res["needle_hits"] = needle_hits
    c.close()

    sampler.phase = "concurrent"
    out: list = []
    barrier = threading.Barrier(a.clients + 1)
    threads = [
        threading.Thread(target=client_work, args=(a, a.seed + k, uids, sizes, out, barrier))
        for k in range(a.clients)
    ]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    res["concurrent_s"] = time.perf_counter() - t0
    assert len(out) == a.clients, "a client failed"
    res["concurrent_client_median_s"] = statistics.median(x[0] for x in out)
    res["concurrent_bytes"] = sum(x[1] for x in out)

    time.sleep(0.3)
    sampler.stop.set()
    sampler.join()
    res["memory"] = sampler.peaks
    res["root_vmhwm_kib"] = kib(f"/proc/{a.pid}/status", "VmHWM:")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"{a.label}: done ({res['populate_s']:.1f} s to populate)", file=sys.stderr)


# --- the report ---------------------------------------------------------------------------------


def report(files: list[str]):
    a, b = (json.load(open(f)) for f in files)
    rows = [
        ("populate: APPEND x%d (%d conns, LITERAL+)" % (a["messages"], a["append_connections"]), "populate_s", "s"),
        ("SELECT INBOX (median of 3)", "select_s", "s"),
        ("FETCH 1:* (FLAGS UID RFC822.SIZE)", "fetch_flags_s", "s"),
        ("  same, again", "fetch_flags_2_s", "s"),
        ("FETCH 1:* BODYSTRUCTURE, first", "bodystructure_s", "s"),
        ("  same, again", "bodystructure_2_s", "s"),
        ("SEARCH BODY (1% match), first", "search_s", "s"),
        ("  same, again", "search_2_s", "s"),
        ("%d clients: SELECT+FETCH 1:*+50 msgs, wall" % a["clients"], "concurrent_s", "s"),
        ("  per client, median", "concurrent_client_median_s", "s"),
    ]
    la, lb = a["label"], b["label"]
    w = 46
    print(f"{a['messages']} messages, {a['bytes'] / 2**20:.1f} MiB; needle hits {a['needle_hits']} / {b['needle_hits']}")
    print(f"{'':{w}} {la:>10} {lb:>10} {la + '/' + lb:>16}")
    for name, key, unit in rows:
        x, y = a[key], b[key]
        print(f"{name:{w}} {x:>9.3f}{unit} {y:>9.3f}{unit} {x / y:>16.2f}")
    for phase in ("populate", "measure", "concurrent"):
        ma, mb = a["memory"].get(phase, {}), b["memory"].get(phase, {})
        for key, what in (("rss_kib", "sum VmRSS"), ("pss_kib", "sum Pss")):
            x, y = ma.get(key, 0) / 1024, mb.get(key, 0) / 1024
            name = f"peak {what}, {phase} (procs {ma.get('processes', 0)}/{mb.get('processes', 0)})"
            ratio = f"{x / y:16.2f}" if y else f"{'-':>16}"
            print(f"{name:{w}} {x:>7.1f}MiB {y:>7.1f}MiB {ratio}")
    print(f"{'VmHWM of the root process (whole run)':{w}} {a['root_vmhwm_kib'] / 1024:>7.1f}MiB "
          f"{b['root_vmhwm_kib'] / 1024:>7.1f}MiB   ({lb}: master process only)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    r.add_argument("--pid", type=int, required=True, help="the server's (master) process")
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--messages", type=int, default=10_000)
    r.add_argument("--clients", type=int, default=20)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--append-connections", type=int, default=8)
    rep = sub.add_parser("report")
    rep.add_argument("files", nargs=2)
    a = p.parse_args()
    if a.cmd == "run":
        run(a)
    else:
        report(a.files)


if __name__ == "__main__":
    main()
