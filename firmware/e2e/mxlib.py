"""Helpers of the end-to-end suite: the server under test (`Server`), a raw
SMTP client whose calls read like the protocol exchange (`Raw`), and the
parsing of stored messages (`split_stored`).

Everything binds or connects to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import smtplib
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
HOSTNAME = "mx.test.example"
PRIMARY_DOMAIN = "example.net"
DEMO = "demo@example.net"
REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MXRACK_BIN") or str(REPO / "target" / "debug" / "mxrack")

# Limits of the suite's servers, small where a test needs to reach them.
SMTP_DEFAULTS = {
    "max_message_bytes": 65536,  # the minimum allowed
    "max_recipients": 100,  # the minimum allowed
    "max_command_line_bytes": 512,  # the minimum allowed
    "max_bad_commands": 5,
    "max_connections": 50,
    "idle_timeout_secs": 30,
    "shutdown_grace_secs": 3,
}

# [auth] of the suite's servers: the one login limiter. Small pair budget
# (3) so lock-out tests are quick, wide network and account budgets so the
# suite's many logins from 127.0.0.1 do not add up, no failure delay.
AUTH_DEFAULTS = {
    "pair_attempts_max": 3,
    "network_attempts_max": 1000,
    "account_attempts_max": 1000,
    "failure_delay_ms": 0,
}

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
IO_TIMEOUT = 15.0

# Servers started and not yet torn down; conftest prints their stderr when a
# test fails.
LIVE_SERVERS: list["Server"] = []


def deadline_loop(seconds: float, what: str, interval: float = 0.02):
    """Yields until `seconds` have passed, then fails naming `what`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound to port 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table, e.g. relay.routes
        return "{ " + ", ".join(f"{toml_value(str(k))} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


class CliError(AssertionError):
    pass


class Server:
    """One `mxrack run` on a temporary data folder and free loopback ports."""

    def __init__(self, **smtp):
        # A short base path: DATA/admin.sock must fit in sun_path (108 bytes).
        self.base = Path(tempfile.mkdtemp(prefix="mxe2e-", dir="/tmp"))
        self.data = self.base / "data"
        self.config = self.base / "mxrack.toml"
        self.stderr_path = self.base / "server.stderr"
        self.mx_port, self.submission_port, self.submissions_port = free_ports(3)
        # POP3 (STLS) and POP3S listeners, on ports distinct from the above;
        # `pop3_limits` are written into [pop3] (set them before start()).
        taken = {self.mx_port, self.submission_port, self.submissions_port}
        self.pop3_port, self.pop3s_port = [p for p in free_ports(5) if p not in taken][:2]
        self.pop3_limits: dict = {}
        # LDAP (StartTLS) and LDAPS listeners; `ldap_limits` go into [ldap].
        taken |= {self.pop3_port, self.pop3s_port}
        self.ldap_port, self.ldaps_port = [p for p in free_ports(8) if p not in taken][:2]
        self.ldap_limits: dict = {}
        # Written into [auth] (the one login limiter of every service).
        self.auth: dict = dict(AUTH_DEFAULTS)
        # Written into [relay] and [forward] when not empty (set them, then
        # write_config(), before start()); e.g. relay = {"routes": {...}}.
        self.relay: dict = {}
        self.forward: dict = {}
        # [dns] and [mail_auth] (issue 16); by default [dns] names a loopback
        # port nobody answers on (see write_config).
        self.dns: dict = {}
        self.mail_auth: dict = {}
        # [spam] (e.g. {"spamassassin_rules": "/usr/share/spamassassin"}).
        self.spam: dict = {}
        # The web port (HTTP redirect + HTTPS status page; None: no [web]
        # listeners, see use_web()) and [health] (issue 6). The start-up
        # self-check is off here: its probe connections would count against
        # the small connection limits some tests set.
        self.http_port: int | None = None
        self.https_port: int | None = None
        # More [web] keys (public_https_port, ...), written with the listeners.
        self.web: dict = {}
        self.health: dict = {"self_check_at_start": False}
        self._taken = taken | {self.ldap_port, self.ldaps_port}
        # A loopback port left closed: the default smarthost (see write_config).
        self.closed_port = next(p for p in free_ports(4) if p not in self._taken)
        self._taken.add(self.closed_port)
        self.limits = dict(SMTP_DEFAULTS)
        self.limits.update(smtp)
        self.proc: subprocess.Popen | None = None
        self.stdout_lines: list[str] = []
        self.password = ""
        self.admin_listening_at_ready = False
        self.write_config()

    # --- configuration and life cycle ------------------------------------

    def write_config(self):
        lines = [
            "[appliance]",
            f"hostname = {toml_value(HOSTNAME)}",
            f"primary_domain = {toml_value(PRIMARY_DOMAIN)}",
            f"data_dir = {toml_value(str(self.data))}",
            "demo = true",
            "",
            "[smtp]",
            f'mx = ["{HOST}:{self.mx_port}"]',
            f'submission = ["{HOST}:{self.submission_port}"]',
            f'submissions = ["{HOST}:{self.submissions_port}"]',
        ]
        for k, v in self.limits.items():
            lines.append(f"{k} = {toml_value(v)}")
        lines += [
            "",
            "[pop3]",
            f'pop3 = ["{HOST}:{self.pop3_port}"]',
            f'pop3s = ["{HOST}:{self.pop3s_port}"]',
        ]
        for k, v in self.pop3_limits.items():
            lines.append(f"{k} = {toml_value(v)}")
        lines += [
            "",
            "[ldap]",
            f'ldap = ["{HOST}:{self.ldap_port}"]',
            f'ldaps = ["{HOST}:{self.ldaps_port}"]',
        ]
        for k, v in self.ldap_limits.items():
            lines.append(f"{k} = {toml_value(v)}")
        lines += ["", "[auth]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in self.auth.items()]
        if self.http_port is not None and self.https_port is not None:
            lines += [
                "",
                "[web]",
                f'http = ["{HOST}:{self.http_port}"]',
                f'https = ["{HOST}:{self.https_port}"]',
            ]
            lines += [f"{k} = {toml_value(v)}" for k, v in self.web.items()]
        if self.health:
            lines += ["", "[health]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in self.health.items()]
        # Tests never send mail off this machine: unless a test names its own,
        # the smarthost for every domain without a route is a loopback port
        # nobody listens on (delivery is deferred, no DNS lookup is made).
        # A test that sets "smarthost" to None delivers by MX records (its
        # own DNS server answers them; test_mta_sts.py).
        relay = {k: v for k, v in {"smarthost": f"{HOST}:{self.closed_port}", **self.relay}.items()
                 if v is not None}
        # Nor any DNS query: the resolver (SPF/DKIM/DMARC of inbound mail, MX
        # lookups) asks a loopback port nobody answers on, unless a test runs
        # its own DNS server (test_mailauth.py).
        dns = {"servers": [f"{HOST}:{self.closed_port}"], "timeout_ms": 200, "attempts": 1,
               **self.dns}
        for section, values in (("relay", relay), ("forward", self.forward), ("dns", dns),
                                ("mail_auth", self.mail_auth), ("spam", self.spam)):
            if values:
                lines += ["", f"[{section}]"]
                lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines += ["", "[log]", 'level = "info"', ""]
        self.config.write_text("\n".join(lines))

    def use_web(self, *other_ports: int):
        """Gives the server HTTP and HTTPS listeners on free ports (distinct
        from its other listeners and from `other_ports`), then rewrites the
        configuration."""
        taken = self._taken | set(other_ports)
        self.http_port, self.https_port = [p for p in free_ports(12) if p not in taken][:2]
        self.write_config()

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.stderr_path, "ab") as err:
            err.write(f"===== start at {time.strftime('%H:%M:%S')}\n".encode())
            err.flush()
            self.proc = subprocess.Popen(
                [BIN, "--config", str(self.config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        if self not in LIVE_SERVERS:
            LIVE_SERVERS.append(self)
        lines: queue.Queue = queue.Queue()
        proc = self.proc

        def drain():
            for raw in proc.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        end = time.monotonic() + READY_TIMEOUT
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"mxrack did not print 'mxrack ready:' within {READY_TIMEOUT}s\n"
                    + self.stderr_tail()
                )
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                rc = proc.wait(timeout=5)
                raise AssertionError(
                    f"mxrack exited ({rc}) before it was ready\n" + self.stderr_tail()
                )
            self.stdout_lines.append(line)
            if line.startswith("mxrack ready:"):
                break
        # Checked first thing: does the admin socket listen once "ready" is out?
        self.admin_listening_at_ready = self.admin_socket_accepts()
        self.password = (self.data / "demo-password").read_text().strip()
        assert self.password, "empty demo password"
        return self

    def admin_socket_accepts(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(self.data / "admin.sock"))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then wait; SIGKILL if it does not end in time. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"mxrack did not exit within {timeout}s of SIGTERM")

    def kill(self):
        """SIGKILL: the crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)

    def restart(self):
        self.stop()
        return self.start()

    def teardown(self, keep: bool = False):
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.stop()
                except AssertionError:
                    pass
        finally:
            if self in LIVE_SERVERS:
                LIVE_SERVERS.remove(self)
            if not keep and not os.environ.get("MXRACK_E2E_KEEP"):
                shutil.rmtree(self.base, ignore_errors=True)

    def stderr_tail(self, max_bytes: int = 20000) -> str:
        try:
            data = self.stderr_path.read_bytes()
        except OSError:
            return "(no stderr)"
        return data[-max_bytes:].decode("utf-8", "replace")

    # --- the CLI ------------------------------------------------------------

    def mx_run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [BIN, "--config", str(self.config), *args],
            input=input,
            capture_output=True,
            timeout=60,
        )

    def mx(self, *args: str, input: bytes | None = None) -> bytes:
        """Runs the CLI against this server's data; stdout bytes, or raises with stderr."""
        r = self.mx_run(*args, input=input)
        if r.returncode != 0:
            raise CliError(
                f"mxrack {' '.join(args)} exited {r.returncode}: "
                f"{r.stderr.decode('utf-8', 'replace')}"
            )
        return r.stdout

    def inbox(self, address: str = DEMO, folder: str = "INBOX") -> list["Listed"]:
        out = self.mx("message", "list", address, "--folder", folder).decode()
        return [Listed.parse(line) for line in out.splitlines() if line]

    def cat(self, address: str, uid: int) -> bytes:
        return self.mx("message", "cat", address, str(uid))

    def uids(self, address: str = DEMO) -> set[int]:
        return {m.uid for m in self.inbox(address)}

    def new_messages(self, address: str, before: set[int]) -> list[bytes]:
        """The stored bytes of each INBOX message whose UID is not in `before`,
        checking that the listed size is the stored size."""
        out = []
        for m in self.inbox(address):
            if m.uid in before:
                continue
            raw = self.cat(address, m.uid)
            assert m.size == len(raw), f"UID {m.uid}: listed size {m.size}, stored {len(raw)} bytes"
            out.append(raw)
        return out

    def one_new_message(self, address: str, before: set[int]) -> "Stored":
        new = self.new_messages(address, before)
        assert len(new) == 1, f"expected exactly one new message for {address}, found {len(new)}"
        return split_stored(new[0])

    def queue(self) -> list["Queued"]:
        out = self.mx("queue", "list").decode()
        return [Queued.parse(line) for line in out.splitlines() if line]

    def last_error(self, rcpt: str, wait: float = 30.0) -> str:
        """The reason of the first failed delivery attempt to `rcpt`, as
        `mxrack queue list` shows it (waits for one)."""
        for _ in deadline_loop(wait, f"a failed attempt for {rcpt}", interval=0.2):
            q = [q for q in self.queue() if rcpt in q.recipients]
            if q and q[0].attempts >= 1 and q[0].last_error:
                return q[0].last_error

    def submit_as_demo(self, rcpt: str, tag: str):
        """A small message from the demo mailbox to `rcpt` over
        authenticated submission, `tag` as its Subject and body."""
        body = (f"From: <{DEMO}>\r\nTo: <{rcpt}>\r\nSubject: {tag}\r\n"
                f"Message-ID: <{tag}@e2e.test>\r\n\r\n{tag}\r\n").encode()
        with self.submission(login=(DEMO, self.password)) as s:
            s.sendmail(DEMO, [rcpt], body)

    def add_domain(self, domain: str, account: str):
        if account not in self.mx("account", "list").decode().split():
            self.mx("account", "add", account)
        self.mx("domain", "add", domain, "--account", account)

    def add_mailbox(self, address: str, password: str):
        self.mx("mailbox", "add", address, "--password", password)

    # --- clients ---------------------------------------------------------------

    def raw(self, port: int | None = None, **kw) -> "Raw":
        return Raw(port or self.mx_port, **kw)

    def smtp(self, port: int | None = None) -> smtplib.SMTP:
        s = smtplib.SMTP(HOST, port or self.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT)
        return s

    def submission(self, login: tuple[str, str] | None = None) -> smtplib.SMTP:
        """smtplib on the submission port after STARTTLS (and AUTH when `login`)."""
        s = smtplib.SMTP(HOST, self.submission_port, local_hostname="e2e.test", timeout=IO_TIMEOUT)
        s.ehlo()
        s.starttls(context=insecure_tls())
        s.ehlo()
        if login:
            s.login(*login)
        return s

    def submissions(self) -> smtplib.SMTP_SSL:
        return smtplib.SMTP_SSL(
            HOST,
            self.submissions_port,
            local_hostname="e2e.test",
            timeout=IO_TIMEOUT,
            context=insecure_tls(),
        )


def insecure_tls() -> ssl.SSLContext:
    """The appliance's certificate is self-signed: no verification."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Listed:
    uid: int
    size: int
    date: int
    flags: str

    @staticmethod
    def parse(line: str) -> "Listed":
        parts = line.split("\t")
        assert len(parts) == 4, f"bad message list line {line!r}"
        return Listed(int(parts[0]), int(parts[1]), int(parts[2]), parts[3])


@dataclass
class Queued:
    id: str
    size: int
    mail_from: str
    recipients: list[str]
    attempts: int
    state: str
    transport: str | None = None  # outbound, forward, bounce (once the relay exists)
    last_error: str | None = None
    # A copy the forward gate held: why, until when (UTC), for which mailbox.
    reason: str | None = None
    expires: str | None = None
    mailbox: str | None = None

    @staticmethod
    def parse(line: str) -> "Queued":
        m = re.fullmatch(
            r"([0-9a-f]{16})\t(\d+)\tfrom=<([^>]*)>\tto=([^\t]*)(?:\ttransport=([^\t]*))?"
            r"\tattempts=(\d+)\t(waiting|held)(?:\treason=([^\t]*))?(?:\texpires=([^\t]*))?"
            r"(?:\tmailbox=([^\t]*))?(?:\t(.*))?",
            line,
        )
        assert m, f"bad queue list line {line!r}"
        return Queued(
            m[1], int(m[2]), m[3], m[4].split(","), int(m[6]), m[7], m[5], m[11], m[8], m[9], m[10]
        )


# --- the stored form ------------------------------------------------------------

RECEIVED_RE = re.compile(
    rb"Received: from (?P<helo>\S+) \(\[(?P<ip>[0-9.]+)\]\)\r\n"
    rb"\tby (?P<by>\S+) \(mxrack\) with (?P<proto>SMTP|ESMTP|ESMTPS|ESMTPA|ESMTPSA) id (?P<id>[0-9a-f]{16})"
    rb"(?:\r\n\tfor <(?P<for>[^>]+)>)?;\r\n"
    rb"\t(?P<date>(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4})\r\n"
)


@dataclass
class Stored:
    return_path: str
    helo: str
    ip: str
    by: str
    proto: str
    id: str
    for_: str | None
    body: bytes
    spam_score: float | None = None
    auth_results: str | None = None


# "X-Spam-Score: 2.3 (RULE=1.2, ...)" folded over lines that begin with white space.
# The Authentication-Results header the MX adds (RFC 8601), folded lines.
AUTH_RESULTS_RE = re.compile(
    rb"Authentication-Results: " + re.escape(HOSTNAME.encode()) + rb";[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*"
)
SPAM_SCORE_RE = re.compile(rb"X-Spam-Score: (-?[0-9]+\.[0-9])[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def split_stored(stored: bytes) -> Stored:
    """Splits a stored message into the added `Return-Path` + `Received`
    block and the bytes the client sent, checking the block's exact form."""
    m = re.match(rb"Return-Path: <([^>\r\n]*)>\r\n", stored)
    assert m, f"stored message does not start with Return-Path: {stored[:120]!r}"
    rest = stored[m.end():]
    r = RECEIVED_RE.match(rest)
    assert r, f"stored message has no well-formed Received header next: {rest[:300]!r}"
    body = rest[r.end():]
    assert not body.startswith((b"\t", b" ")), "Received header folded further than expected"
    # Authentication-Results (issue 16): inbound checks, or the login of a
    # submission.
    ar = AUTH_RESULTS_RE.match(body)
    auth_results = ar[0].decode() if ar else None
    if ar:
        body = body[ar.end():]
    # The spam score header the appliance adds to every inbound message.
    spam = SPAM_SCORE_RE.match(body)
    # Inbound mail is scored; authenticated submissions are not (RFC 4954 AUTH
    # shows as ESMTPA/ESMTPSA in the Received header).
    if r["proto"].endswith(b"A"):
        assert not spam, f"a submission got an X-Spam-Score header: {body[:200]!r}"
        spam_score = None
    else:
        assert spam, f"no X-Spam-Score header after Received: {body[:200]!r}"
        spam_score = float(spam[1])
        body = body[spam.end():]
    return Stored(
        return_path=m[1].decode(),
        helo=r["helo"].decode(),
        ip=r["ip"].decode(),
        by=r["by"].decode(),
        proto=r["proto"].decode(),
        id=r["id"].decode(),
        for_=r["for"].decode() if r["for"] else None,
        body=body,
        spam_score=spam_score,
        auth_results=auth_results,
    )


QUEUED_RE = re.compile(r"250 2\.0\.0 OK: queued as ([0-9a-f]{16})")


def queued_id(reply_text: str) -> str:
    m = QUEUED_RE.fullmatch(reply_text)
    assert m, f"not a 'queued as' reply: {reply_text!r}"
    return m[1]


# --- a raw SMTP client -------------------------------------------------------------


@dataclass
class Reply:
    code: int
    lines: list[str]  # each full line without CRLF, e.g. "250-PIPELINING"

    @property
    def last(self) -> str:
        return self.lines[-1]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Raw:
    """A line-level SMTP client over a plain or TLS socket.

        c = Raw(port); c.expect(220)
        c.send("EHLO e2e.test"); c.expect(250)
        c.send("VRFY demo"); c.expect("502 5.5.1 VRFY command is disabled")
    """

    def __init__(self, port: int, tls: bool = False, timeout: float = IO_TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        if tls:
            self.sock = insecure_tls().wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # sending
    def send(self, line: str | bytes):
        """One command line; CRLF is added."""
        if isinstance(line, str):
            line = line.encode()
        self.sock.sendall(line + b"\r\n")

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    # reading
    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self) -> bytes | None:
        """One reply line without CRLF, or None at end of stream."""
        while b"\r\n" not in self.buf:
            if not self._fill():
                if self.buf:
                    raise AssertionError(f"stream ended inside a line: {self.buf!r}")
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> Reply:
        lines = []
        while True:
            raw = self.line()
            if raw is None:
                raise AssertionError(
                    "connection closed while waiting for a reply"
                    + (f" (after {lines})" if lines else "")
                )
            text = raw.decode("utf-8")
            assert re.fullmatch(r"\d{3}[ -].*|\d{3}", text), f"malformed reply line {text!r}"
            lines.append(text)
            if len(text) == 3 or text[3] == " ":
                codes = {l[:3] for l in lines}
                assert len(codes) == 1, f"mixed codes in one reply: {lines}"
                return Reply(int(text[:3]), lines)

    def expect(self, want: int | str | None) -> Reply:
        """Reads one reply; `want` is its code, its exact (last) line, or None (any)."""
        r = self.reply()
        if want is None:
            pass
        elif isinstance(want, int):
            assert r.code == want, f"expected {want}, got {r.lines}"
        else:
            assert r.last == want, f"expected {want!r}, got {r.lines}"
        return r

    def cmd(self, line: str | bytes, want: int | str | None) -> Reply:
        self.send(line)
        return self.expect(want)

    def expect_closed(self, timeout: float = IO_TIMEOUT):
        """The server closes the connection with nothing more to say."""
        self.sock.settimeout(timeout)
        while self._fill():
            pass
        assert self.buf == b"", f"unexpected bytes before close: {self.buf!r}"

    def ehlo(self, name: str = "e2e.test") -> list[str]:
        """EHLO; returns the advertised extensions (the lines after the greeting)."""
        r = self.cmd(f"EHLO {name}", 250)
        assert r.lines[0] == f"250-{HOSTNAME}" or r.lines == [f"250 {HOSTNAME}"], r.lines
        return [l[4:] for l in r.lines[1:]]

    def starttls(self):
        self.cmd("STARTTLS", "220 2.0.0 Ready to start TLS")
        assert self.buf == b"", f"bytes after the STARTTLS reply: {self.buf!r}"
        self.sock = insecure_tls().wrap_socket(self.sock, server_hostname=HOSTNAME)

    def data(self, body: bytes) -> Reply:
        """DATA, 354, the body (dot-stuffed, CRLF.CRLF added) and its reply."""
        self.cmd("DATA", "354 End data with <CR><LF>.<CR><LF>")
        self.send_raw(dot_stuff(body) + b".\r\n")
        return self.reply()


def dot_stuff(body: bytes) -> bytes:
    assert body.endswith(b"\r\n") or body == b""
    return re.sub(rb"(?m)^\.", b"..", body)


def b64(s: str | bytes) -> str:
    import base64

    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def plain_token(user: str, password: str) -> str:
    return b64(b"\0" + user.encode() + b"\0" + password.encode())
