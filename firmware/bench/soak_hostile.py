"""The hostile side of firmware/bench/soak.sh (issue 10): 200 clients, each
from its own loopback address (127.0.0.2 and up, so the per-client caps,
which count an IPv4 address, never meet the legitimate sender on
127.0.0.1), each doing one kind of harm and reconnecting when dropped; an
RSS sampler over /proc/PID/status every 0.5 s; a probe from 127.0.0.1 that
checks every port's greeting every 5 s; and the RSS budget computed from
the server's effective configuration (`mxrack config show`).

    python3 soak_hostile.py seed  --ports ports.json --mailboxes h1@example.net:pw ...
    python3 soak_hostile.py soak  --ports ports.json --pid PID --stop FILE --out FILE ...

`soak` runs until FILE exists (soak.sh creates it when its last smtp-source
run ends), then stops the clients, checks every port once more, and writes
its figures as JSON to --out. Standard library only; everything connects to
127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import smtplib
import socket
import ssl
import threading
import time
import tomllib
from collections import defaultdict

HOST = "127.0.0.1"
SENDER = "hostile@attacker.example"
KIB = 1024
MIB = 1024 * 1024

# How many of the 200 clients do what; soak.sh can override with KINDS
# ("slow-smtp25=30,..."). Their sum is the number of hostile clients.
DEFAULT_KINDS = {
    "slow-smtp25": 30,      # one byte every SLOW_GAP s of an EHLO line that never ends
    "slow-smtp587": 20,
    "slow-imap143": 20,     # a command line trickled before login
    "slow-pop3": 20,
    "slow-ldap": 20,        # an LDAPMessage announcing 192 KiB, one byte at a time
    "literal-bomb": 25,     # `a LOGIN {50000000+}` before login, then bytes slowly
    "deep-mime": 15,        # DATA of 20,000 nested message/rfc822 (640 KB), repeatedly
    "long-line": 10,        # DATA of one 1 MB line, repeatedly
    "list-bomb": 25,        # logged in: LIST "" "%*"x100 and 60,000 `*` (literal)
    "fetch-deep": 15,       # logged in: FETCH BODYSTRUCTURE of a stored deep message
}

DEEP_LEVELS = 20_000
LONG_LINE_BYTES = 1_000_000


def nested_rfc822(depth: int, tag: str) -> bytes:
    head = f"From: <{SENDER}>\r\nSubject: deep {tag}\r\nMessage-ID: <deep-{tag}@attacker.example>\r\n"
    return head.encode() + b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: bottom\r\n\r\nthe end\r\n"


def long_line_message(tag: str) -> bytes:
    return (
        f"From: <{SENDER}>\r\nSubject: long line {tag}\r\nContent-Type: text/html\r\n\r\n".encode()
        + b"<p>" + b"x" * LONG_LINE_BYTES + b"</p>\r\n"
    )


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int, src: str, timeout: float, tls: bool = False) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=timeout, source_address=(src, 0))
    if tls:
        s = insecure_tls().wrap_socket(s, server_hostname="bench.example.net")
    return s


# --- counters -------------------------------------------------------------------------


class Stats:
    """Per kind: connections made, refused (busy line or connect error),
    answered (the server spoke its protocol), cut (the server closed), and
    operations done; the closing words the server used, and op latencies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.endings: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.held: dict[str, list[float]] = defaultdict(list)

    def add(self, kind: str, key: str, n: int = 1):
        with self.lock:
            self.c[kind][key] += n

    def ending(self, kind: str, words: str):
        with self.lock:
            self.endings[kind][words[:60]] += 1

    def lat(self, kind: str, secs: float):
        with self.lock:
            self.latency[kind].append(secs)

    def hold(self, kind: str, secs: float):
        with self.lock:
            self.held[kind].append(secs)


BUSY = (b"421 4.7.0", b"* BYE [UNAVAILABLE]", b"-ERR [SYS/TEMP]", b"1.3.6.1.4.1.1466.20036")


def first_words(data: bytes) -> str:
    line = data.split(b"\r\n", 1)[0]
    if data[:1] == b"\x30":  # LDAP: a notice of disconnection or a response
        return "ldap notice" if b"1.3.6.1.4.1.1466.20036" in data else f"ldap 0x{data[:8].hex()}"
    return line[:48].decode("latin-1")


def read_line(sock: socket.socket, buf: bytearray, limit: int = 1 << 20) -> bytes | None:
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > limit:
            raise OSError("line too long")
    i = buf.index(b"\r\n")
    line = bytes(buf[:i])
    del buf[: i + 2]
    return line


# --- the kinds ------------------------------------------------------------------------


class Client(threading.Thread):
    def __init__(self, kind: str, index: int, src: str, args, stats: Stats, stop: threading.Event):
        super().__init__(daemon=True, name=f"{kind}-{index}")
        self.kind, self.index, self.src, self.args, self.stats, self.stop = kind, index, src, args, stats, stop
        self.ports = args.port_map
        self.rng = random.Random(index)

    def run(self):
        # Spread the start over the first seconds, as clients would arrive.
        if self.stop.wait(self.rng.uniform(0, 5)):
            return
        fn = getattr(self, "k_" + self.kind.replace("-", "_"))
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                fn()
            except (OSError, ssl.SSLError, smtplib.SMTPException, EOFError) as e:
                self.stats.add(self.kind, "errors")
                self.stats.ending(self.kind, f"client error: {type(e).__name__}")
            self.stats.hold(self.kind, time.monotonic() - start)
            # Reconnect after a short pause (a real attacker would not pause;
            # the pause keeps this Python process from taking the CPU the
            # server and smtp-source share with it).
            self.stop.wait(self.args.reconnect_pause)

    # Opening a connection and reading the greeting.
    def open(self, port: int, tls: bool = False, greeting: bool = True):
        self.stats.add(self.kind, "made")
        try:
            s = connect(port, self.src, self.args.io_timeout, tls)
        except (OSError, ssl.SSLError):
            self.stats.add(self.kind, "refused")
            self.stats.ending(self.kind, "connect failed")
            return None, None
        buf = bytearray()
        if not greeting:
            return s, buf
        line = read_line(s, buf)
        if line is None or line.startswith(BUSY):
            self.stats.add(self.kind, "refused")
            self.stats.ending(self.kind, "busy: " + (line or b"closed").decode("latin-1")[:40])
            s.close()
            return None, None
        self.stats.add(self.kind, "answered")
        return s, buf

    def trickle(self, s: socket.socket, data_fn):
        """One byte every SLOW_GAP seconds until the server closes; records
        the server's last words."""
        gap = self.args.slow_gap
        s.settimeout(gap)
        got = b""
        i = 0
        try:
            while not self.stop.is_set():
                try:
                    s.sendall(data_fn(i))
                except OSError:
                    break
                i += 1
                end = time.monotonic() + gap
                closed = False
                while time.monotonic() < end and not self.stop.is_set():
                    try:
                        chunk = s.recv(4096)
                    except (socket.timeout, ssl.SSLWantReadError):
                        continue
                    except OSError:
                        closed = True
                        break
                    if not chunk:
                        closed = True
                        break
                    got += chunk
                if closed:
                    self.stats.add(self.kind, "cut")
                    self.stats.ending(self.kind, first_words(got) if got else "closed silently")
                    break
        finally:
            s.close()

    def slow_line(self, port: int, prefix: bytes):
        s, _ = self.open(port)
        if s is None:
            return
        self.trickle(s, lambda i: prefix[i : i + 1] if i < len(prefix) else b"a")

    def k_slow_smtp25(self):
        self.slow_line(self.ports["mx"], b"EHLO ")

    def k_slow_smtp587(self):
        self.slow_line(self.ports["submission"], b"EHLO ")

    def k_slow_imap143(self):
        self.slow_line(self.ports["imap"], b"a1 NOOP")

    def k_slow_pop3(self):
        self.slow_line(self.ports["pop3"], b"CAPA")

    def k_slow_ldap(self):
        s, _ = self.open(self.ports["ldap"], greeting=False)
        if s is None:
            return
        self.stats.add(self.kind, "answered")  # accepted; LDAP has no greeting
        # SEQUENCE with a 4-byte length: 196,608 bytes (under the 256 KiB
        # ldap.max_message_bytes, so it is a slow message, not a refused one).
        head = b"\x30\x84\x00\x03\x00\x00"
        self.trickle(s, lambda i: head[i : i + 1] if i < len(head) else b"\x04")

    def k_literal_bomb(self):
        s, buf = self.open(self.ports["imap"])
        if s is None:
            return
        s.sendall(b"a LOGIN {50000000+}\r\n")
        self.trickle(s, lambda i: b"x" * 1024)

    def smtp_send(self, body_fn, pause: float):
        self.stats.add(self.kind, "made")
        try:
            c = smtplib.SMTP(HOST, self.ports["mx"], local_hostname="hostile.example",
                             timeout=self.args.io_timeout * 4, source_address=(self.src, 0))
        except smtplib.SMTPConnectError as e:
            self.stats.add(self.kind, "refused")
            self.stats.ending(self.kind, f"busy: {e.smtp_code}")
            return
        except OSError:
            self.stats.add(self.kind, "refused")
            self.stats.ending(self.kind, "connect failed")
            return
        self.stats.add(self.kind, "answered")
        try:
            while not self.stop.is_set():
                rcpt = self.rng.choice(self.args.mailboxes)[0]
                body = body_fn(f"{self.index}-{time.time_ns()}")
                t0 = time.monotonic()
                c.ehlo_or_helo_if_needed()
                code, _ = c.mail(SENDER)
                if code == 250:
                    code, _ = c.rcpt(rcpt)
                if code == 250:
                    code, _ = c.data(body)
                self.stats.lat(self.kind, time.monotonic() - t0)
                self.stats.add(self.kind, f"reply {code}")
                if code == 250:
                    self.stats.add(self.kind, "ops")
                else:
                    c.rset()
                if self.stop.wait(pause):
                    break
            c.quit()
        except smtplib.SMTPServerDisconnected:
            self.stats.add(self.kind, "cut")
            self.stats.ending(self.kind, "disconnected")
        finally:
            c.close()

    def k_deep_mime(self):
        self.smtp_send(lambda tag: nested_rfc822(DEEP_LEVELS, tag), self.args.op_pause_data)

    def k_long_line(self):
        self.smtp_send(long_line_message, self.args.op_pause_data)

    # Logged-in IMAP over implicit TLS (LOGIN is refused in clear text).
    def imap_login(self):
        s, buf = self.open(self.ports["imaps"], tls=True)
        if s is None:
            return None, None
        s.settimeout(self.args.io_timeout * 4)
        addr, pw = self.args.mailboxes[self.index % len(self.args.mailboxes)]
        ok, last = imap_cmd(s, buf, "l", f'LOGIN "{addr}" "{pw}"')
        if not ok:
            self.stats.ending(self.kind, "login: " + last[:40])
            s.close()
            return None, None
        return s, buf

    def imap_loop(self, commands):
        s, buf = self.imap_login()
        if s is None:
            return
        n = 0
        try:
            while not self.stop.is_set():
                for tag, cmd in commands(n):
                    t0 = time.monotonic()
                    ok, last = imap_cmd(s, buf, tag, cmd)
                    self.stats.lat(self.kind, time.monotonic() - t0)
                    if last == "closed":
                        self.stats.add(self.kind, "cut")
                        self.stats.ending(self.kind, "closed")
                        return
                    self.stats.add(self.kind, "ops" if ok else "op refused")
                    if not ok:
                        self.stats.ending(self.kind, last[:50])
                n += 1
                if self.stop.wait(self.args.op_pause_imap):
                    break
        finally:
            s.close()

    def k_list_bomb(self):
        pairs = "%*" * 100 + "x"
        stars = b"*" * 60_000 + b"x"
        self.imap_loop(lambda n: [("p", f'LIST "" "{pairs}"'),
                                  ("s", (b'LIST "" {%d+}\r\n' % len(stars)) + stars)])

    def k_fetch_deep(self):
        first = [True]

        def cmds(n):
            out = []
            if first[0]:
                first[0] = False
                out.append(("e", "EXAMINE INBOX"))
            out.append(("f", "UID FETCH 1 (BODYSTRUCTURE ENVELOPE)"))
            return out

        self.imap_loop(cmds)


def imap_cmd(s: socket.socket, buf: bytearray, tag: str, cmd) -> tuple[bool, str]:
    """Sends one command and reads to its tagged response (literals in the
    responses are read and dropped). Returns (OK?, the tagged line)."""
    data = cmd.encode() if isinstance(cmd, str) else cmd
    s.sendall(tag.encode() + b" " + data + b"\r\n")
    want = tag.encode() + b" "
    while True:
        line = read_line(s, buf, limit=64 * MIB)
        if line is None:
            return False, "closed"
        while line.endswith(b"}") and b"{" in line:
            n = int(line[line.rindex(b"{") + 1 : -1].rstrip(b"+"))
            while len(buf) < n:
                chunk = s.recv(1 << 20)
                if not chunk:
                    return False, "closed"
                buf += chunk
            del buf[:n]
            line = read_line(s, buf, limit=64 * MIB)
            if line is None:
                return False, "closed"
        if line.startswith(want):
            text = line.decode("latin-1")
            return text.split(" ", 2)[1:2] == ["OK"], text
        if line.startswith(b"* BYE"):
            return False, line.decode("latin-1")


# --- greeting checks ------------------------------------------------------------------

LDAP_ROOTDSE = bytes.fromhex(
    # SearchRequest, msgid 1: base "", scope base, filter (objectClass=*), attrs ()
    "3025020101632004000a01000a0100020100020100010100870b6f626a656374436c6173733000"
)


def ldap_ops_until_done(s: socket.socket) -> int:
    """Reads LDAPMessages until SearchResultDone (0x65) or a notice; returns
    the last protocolOp tag (0 when the stream ended)."""
    buf = b""

    def need(n: int) -> bool:
        nonlocal buf
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                return False
            buf += chunk
        return True

    while True:
        if not need(2):
            return 0
        n, at = buf[1], 2
        if n & 0x80:
            k = n & 0x7F
            if not need(2 + k):
                return 0
            n, at = int.from_bytes(buf[2 : 2 + k], "big"), 2 + k
        if not need(at + n):
            return 0
        msg, buf = buf[at : at + n], buf[at + n :]
        op = msg[2 + msg[1]]  # after the messageID INTEGER
        if op in (0x65, 0x78):  # SearchResultDone, ExtendedResponse (a notice)
            return op


def greet(kind: str, port: int, timeout: float) -> tuple[bool, float, str]:
    t0 = time.monotonic()
    try:
        if kind in ("https", "imaps"):
            s = connect(port, HOST, timeout, tls=True)
        else:
            s = connect(port, HOST, timeout)
        with s:
            if kind == "ldap":
                s.sendall(LDAP_ROOTDSE)
                op = ldap_ops_until_done(s)
                return op == 0x65, time.monotonic() - t0, f"LDAP op 0x{op:02x}" if op else "closed"
            if kind in ("http", "https"):
                s.sendall(b"GET /status HTTP/1.1\r\nHost: bench.example.net\r\nConnection: close\r\n\r\n")
            line = read_line(s, bytearray(), limit=65536) or b""
            want = {"mx": b"220 ", "submission": b"220 ", "imap": b"* OK", "imaps": b"* OK",
                    "pop3": b"+OK", "http": b"HTTP/1.1 3", "https": b"HTTP/1.1 200"}[kind]
            return line.startswith(want), time.monotonic() - t0, line[:40].decode("latin-1")
    except (OSError, ssl.SSLError) as e:
        return False, time.monotonic() - t0, f"{type(e).__name__}: {e}"


def greet_all(ports: dict, timeout: float) -> dict:
    return {k: greet(k, p, timeout) for k, p in ports.items()}


# --- RSS sampler and the budget -------------------------------------------------------


def cpu_secs(pid: int) -> float:
    """utime + stime of a process, in seconds (proc(5): fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


class Sampler(threading.Thread):
    def __init__(self, pid: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.pid, self.stop = pid, stop
        self.peak_rss = self.peak_threads = self.peak_fds = self.samples = 0
        self.hwm = 0
        self.gone = False

    def run(self):
        while not self.stop.is_set():
            try:
                st = proc_status(self.pid)
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except OSError:
                self.gone = True
                return
            self.samples += 1
            self.peak_rss = max(self.peak_rss, st["VmRSS"])
            self.hwm = st["VmHWM"]
            self.peak_threads = max(self.peak_threads, st["Threads"])
            self.peak_fds = max(self.peak_fds, fds)
            self.stop.wait(0.5)


# The per-session constants of ARCHITECTURE.md's memory invariants (KiB).
# "documented": the invariant names the buffers; "assumed": not documented,
# our estimate, said so in the output.
def session_kib(cfg: dict) -> dict[str, tuple[float, str]]:
    smtp, imap, ldap = cfg["smtp"], cfg["imap"], cfg["ldap"]
    per_conn = 32  # assumed: task, socket, TLS state (rustls record buffers)
    smtp_k = 2 * (smtp["max_data_line_bytes"] / KIB + 16) + 256 + 64 + 256 + per_conn
    imap_k = imap["max_line_bytes"] / KIB + 64 + 64 + 64 + per_conn
    pop3_k = 12 + 64 + per_conn
    ldap_k = ldap["max_message_bytes"] / KIB * (1 + 16) + per_conn
    web_k = 16 + 64 + per_conn
    return {
        "smtp": (smtp_k, "2 x (data line + 16 KiB chunk) + 256 KiB prefix + 64 KiB write buffer "
                 "+ 256 KiB for the scorer's parse of the prefix (assumed = one prefix) + 32 KiB conn (assumed)"),
        "imap": (imap_k, "command line + 64 KiB small literals + 64 KiB literal chunk + 64 KiB write buffer "
                 "+ 32 KiB conn (assumed); messages a FETCH reads are leased from [memory]"),
        "pop3": (pop3_k, "12 KiB credentials line + 64 KiB send chunk + 32 KiB conn (assumed); "
                 "RETR streams the file; TOP is leased from [memory]"),
        "ldap": (ldap_k, "one max_message_bytes frame + 16 entries in flight of at most that size "
                 "+ 32 KiB conn (assumed)"),
        "web": (web_k, "16 KiB request head + 64 KiB response (assumed) + 32 KiB conn (assumed)"),
    }


def budget(cfg: dict, idle_kib: int, data_dir: str, load: dict[str, int]) -> dict:
    per = session_kib(cfg)
    pools = []
    for service, listeners in (("smtp", ("mx", "submission", "submissions")),
                               ("imap", ("imap", "imaps")), ("pop3", ("pop3", "pop3s")),
                               ("ldap", ("ldap", "ldaps")), ("web", ("http", "https"))):
        for name in listeners:
            if cfg[service].get(name):
                pools.append((name, service, cfg[service]["max_connections"]))
    argon_kib = 2 * 19 * KIB  # the one Argon2 pool: 2 threads, 19 MiB each (README)
    try:
        redb_kib = os.path.getsize(os.path.join(data_dir, "meta.redb")) // KIB
    except OSError:
        redb_kib = 0
    # The store's redb page cache: DB_CACHE_BYTES (64 MiB), bounded by the file.
    redb_cache_kib = min(redb_kib, 64 * KIB)
    # The one budget for client data in flight, all services ([memory]).
    client_data_kib = cfg.get("memory", {}).get("client_data_bytes", 256 * MIB) // KIB
    fixed = idle_kib + argon_kib + redb_cache_kib + client_data_kib
    full = fixed + sum(n * per[svc][0] for _, svc, n in pools)
    at_load = fixed + sum(n * per[svc][0] for svc, n in load.items())
    return {
        "per_session_kib": {k: [round(v[0]), v[1]] for k, v in per.items()},
        "pools": [[name, svc, n] for name, svc, n in pools],
        "idle_kib": idle_kib, "argon_kib": argon_kib, "redb_file_kib": redb_kib,
        "redb_cache_kib": redb_cache_kib, "client_data_kib": client_data_kib, "full_pools_kib": round(full), "at_load_kib": round(at_load),
        "load_sessions": load,
    }


# --- commands -------------------------------------------------------------------------

SERVICE_OF_KIND = {
    "slow-smtp25": "smtp", "slow-smtp587": "smtp", "slow-imap143": "imap", "slow-pop3": "pop3",
    "slow-ldap": "ldap", "literal-bomb": "imap", "deep-mime": "smtp", "long-line": "smtp",
    "list-bomb": "imap", "fetch-deep": "imap",
}


def parse_kinds(text: str | None) -> dict[str, int]:
    kinds = dict(DEFAULT_KINDS)
    if text:
        for item in text.split(","):
            k, _, v = item.partition("=")
            assert k in kinds, f"unknown kind {k}"
            kinds[k] = int(v)
    return kinds


def cmd_seed(args):
    """One deep message in each hostile mailbox, so UID 1 of every INBOX is
    the message fetch-deep asks for."""
    for addr, _ in args.mailboxes:
        with smtplib.SMTP(HOST, args.port_map["mx"], local_hostname="seed.example", timeout=120) as c:
            errs = c.sendmail(SENDER, [addr], nested_rfc822(DEEP_LEVELS, f"seed-{addr}"))
            assert errs == {}, errs
    print(f"seeded {len(args.mailboxes)} mailboxes with a {DEEP_LEVELS}-level message "
          f"({len(nested_rfc822(DEEP_LEVELS, 'x'))} bytes)")


def cmd_soak(args):
    kinds = parse_kinds(args.kinds)
    total = sum(kinds.values())
    assert total <= 250, "source addresses run from 127.0.0.2 to 127.0.0.251"
    stats = Stats()
    stop_clients = threading.Event()
    stop_sampler = threading.Event()
    sampler = Sampler(args.pid, stop_sampler)
    sampler.start()
    clients = []
    i = 0
    for kind, n in kinds.items():
        for _ in range(n):
            clients.append(Client(kind, i, f"127.0.0.{2 + i}", args, stats, stop_clients))
            i += 1
    t0 = time.monotonic()
    server_cpu0 = cpu_secs(args.pid)
    for c in clients:
        c.start()
    probes = {"rounds": 0, "failures": [], "max_secs": defaultdict(float)}
    while not os.path.exists(args.stop) and time.monotonic() - t0 < args.max_secs:
        if sampler.gone:
            break
        res = greet_all(args.port_map, args.io_timeout)
        probes["rounds"] += 1
        for k, (ok, secs, words) in res.items():
            probes["max_secs"][k] = max(probes["max_secs"][k], secs)
            if not ok:
                probes["failures"].append([round(time.monotonic() - t0, 1), k, words])
        time.sleep(5)
    elapsed = time.monotonic() - t0
    try:
        server_cpu = cpu_secs(args.pid) - server_cpu0
    except OSError:
        server_cpu = -1.0
    own = resource.getrusage(resource.RUSAGE_SELF)
    own_cpu = own.ru_utime + own.ru_stime
    stop_clients.set()
    for c in clients:
        c.join(30)
    alive_threads = sum(c.is_alive() for c in clients)
    time.sleep(1)
    final = greet_all(args.port_map, args.io_timeout)
    stop_sampler.set()
    sampler.join(5)
    # Sessions at once, by service, for the budget at this load: every
    # hostile client plus smtp-source's sessions.
    load: dict[str, int] = defaultdict(int)
    for kind, n in kinds.items():
        load[SERVICE_OF_KIND[kind]] += n
    load["smtp"] += args.legit_sessions
    with open(args.config_show, "rb") as f:
        cfg = tomllib.load(f)
    out = {
        "elapsed": elapsed, "server_cpu": server_cpu, "hostile_cpu": own_cpu, "kinds": kinds, "clients": total,
        "stats": {k: dict(v) for k, v in stats.c.items()},
        "endings": {k: dict(v) for k, v in stats.endings.items()},
        "latency_max": {k: max(v) for k, v in stats.latency.items() if v},
        "latency_median": {k: sorted(v)[len(v) // 2] for k, v in stats.latency.items() if v},
        "held_max": {k: max(v) for k, v in stats.held.items() if v},
        "client_threads_left": alive_threads,
        "probes": {"rounds": probes["rounds"], "failures": probes["failures"],
                   "max_secs": dict(probes["max_secs"])},
        "final": final,
        "rss": {"peak_kib": sampler.peak_rss, "hwm_kib": sampler.hwm, "samples": sampler.samples,
                "peak_threads": sampler.peak_threads, "peak_fds": sampler.peak_fds,
                "gone": sampler.gone},
        "budget": budget(cfg, args.idle_kib, cfg["appliance"]["data_dir"], dict(load)),
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


def cmd_report(args):
    """Prints the hostile side's figures from the JSON `soak` wrote."""
    r = json.load(open(args.out))
    mib = lambda k: f"{k / KIB:.0f} MiB"
    print(f"hostile clients: {r['clients']} over {r['elapsed']:.0f} s, each from its own 127.0.0.x; "
          f"CPU seconds in that time: server {r['server_cpu']:.0f}, the hostile clients' Python "
          f"{r['hostile_cpu']:.0f} (of {os.cpu_count() * r['elapsed']:.0f} on {os.cpu_count()} cores)")
    print(f"  {'kind':13} {'n':>3} {'made':>6} {'refused':>7} {'answered':>8} {'cut':>6} "
          f"{'ops':>6} {'errors':>6}  max op s  longest held s  server's last words (count)")
    for kind, n in r["kinds"].items():
        s = r["stats"].get(kind, {})
        words = "; ".join(f"{w} ({c})" for w, c in sorted(r["endings"].get(kind, {}).items(),
                                                          key=lambda x: -x[1])[:3])
        lat = r["latency_max"].get(kind)
        print(f"  {kind:13} {n:>3} {s.get('made', 0):>6} {s.get('refused', 0):>7} "
              f"{s.get('answered', 0):>8} {s.get('cut', 0):>6} {s.get('ops', 0):>6} "
              f"{s.get('errors', 0):>6}  {('%.2f' % lat) if lat is not None else '-':>8}  "
              f"{r['held_max'].get(kind, 0):>14.0f}  {words}")
        other = {k: v for k, v in s.items() if k.startswith(("reply", "op refused"))}
        if other:
            print(f"  {'':13} replies: {other}")
    p = r["probes"]
    print(f"probes from 127.0.0.1 every 5 s: {p['rounds']} rounds, {len(p['failures'])} failures, "
          "slowest answer per port: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in p["max_secs"].items()))
    for f in p["failures"][:10]:
        print(f"  probe failure at {f[0]} s: {f[1]}: {f[2]}")
    print("after the soak, every port: "
          + ", ".join(f"{k} {'OK' if ok else 'FAIL'} ({words.strip()})" for k, (ok, _, words) in r["final"].items()))
    rss = r["rss"]
    b = r["budget"]
    print(f"server during the soak: peak VmRSS {mib(rss['peak_kib'])} ({rss['samples']} samples every 0.5 s), "
          f"VmHWM {mib(rss['hwm_kib'])}, peak threads {rss['peak_threads']}, peak open fds {rss['peak_fds']}")
    print("RSS budget (ARCHITECTURE.md memory invariants; per session, KiB):")
    for svc, (k, why) in b["per_session_kib"].items():
        print(f"  {svc:5} {k:>5}  {why}")
    print("  pools: " + ", ".join(f"{name} {n}" for name, _, n in b["pools"])
          + f"; fixed: idle RSS {mib(b['idle_kib'])} + Argon2 pool {mib(b['argon_kib'])} + redb cache "
          f"{mib(b['redb_cache_kib'])} (DB_CACHE_BYTES 64 MiB, bounded by meta.redb, now {mib(b['redb_file_kib'])})"
          f" + client data budget {mib(b['client_data_kib'])} ([memory])")
    print(f"  budget with every pool full: {mib(b['full_pools_kib'])}; at this soak's "
          f"{sum(b['load_sessions'].values())} sessions ({', '.join(f'{k} {v}' for k, v in b['load_sessions'].items())}): "
          f"{mib(b['at_load_kib'])}")
    verdict = "PASS" if max(rss["peak_kib"], rss["hwm_kib"]) <= b["full_pools_kib"] else "FAIL"
    print(f"  peak {mib(max(rss['peak_kib'], rss['hwm_kib']))} vs full-pool budget "
          f"{mib(b['full_pools_kib'])}: {verdict}; vs the at-load figure {mib(b['at_load_kib'])}: "
          f"{'under' if max(rss['peak_kib'], rss['hwm_kib']) <= b['at_load_kib'] else 'OVER'}")
    ok = verdict == "PASS" and all(v[0] for v in r["final"].values()) and not rss["gone"]
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=("seed", "soak", "report"))
    ap.add_argument("--ports", help="JSON: {mx, submission, imap, imaps, pop3, ldap, http, https}")
    ap.add_argument("--mailboxes", nargs="*", default=[], help="address:password of the hostile mailboxes")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--stop", help="soak ends when this file exists")
    ap.add_argument("--max-secs", type=float, default=3600)
    ap.add_argument("--out")
    ap.add_argument("--config-show", help="`mxrack config show` output (TOML)")
    ap.add_argument("--idle-kib", type=int, default=0)
    ap.add_argument("--legit-sessions", type=int, default=20)
    ap.add_argument("--kinds", default=os.environ.get("KINDS"))
    ap.add_argument("--slow-gap", type=float, default=float(os.environ.get("SLOW_GAP", 3)))
    ap.add_argument("--reconnect-pause", type=float, default=float(os.environ.get("RECONNECT_PAUSE", 1)))
    ap.add_argument("--op-pause-data", type=float, default=float(os.environ.get("DATA_PAUSE", 10)))
    ap.add_argument("--op-pause-imap", type=float, default=float(os.environ.get("IMAP_PAUSE", 1)))
    ap.add_argument("--io-timeout", type=float, default=30)
    args = ap.parse_args()
    if args.ports:
        args.port_map = json.load(open(args.ports))
    args.mailboxes = [tuple(m.split(":", 1)) for m in args.mailboxes]
    if args.command == "seed":
        cmd_seed(args)
    elif args.command == "soak":
        cmd_soak(args)
    else:
        raise SystemExit(cmd_report(args))


if __name__ == "__main__":
    main()
