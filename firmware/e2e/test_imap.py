"""IMAP with real clients: Python's imaplib (STARTTLS on the plain port,
IMAP4_SSL on the TLS port), curl's imap:// and imaps:// URLs, and a
line-level client (`Imap`) where the exact exchange matters. Messages are
delivered by SMTP (or APPENDed) in the same test and read back over IMAP
byte for byte: a delivered message is stored as the added Return-Path +
Received block followed by exactly the bytes sent.

Every test works on a mailbox of its own on the module's server, so the
tests do not depend on each other's state; the login-failure test, which
locks 127.0.0.1 out, gets a server of its own.

Tests marked `xfail(strict=True)` document server bugs (the reason names the
RFC section): they fail today, and turn into an XPASS failure once the
server is fixed, as a reminder to drop the marker.
"""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass

import ldap3
import pytest

from mxlib import (
    HOST,
    HOSTNAME,
    IO_TIMEOUT,
    Server,
    free_ports,
    insecure_tls,
    split_stored,
    toml_value,
)

SENDER = "sender@example.org"

# [imap] of the servers of this module: max_literal_bytes at its minimum so
# the TOOBIG test is cheap (logins are limited by [auth], see mxlib).
IMAP_LIMITS = {
    "max_literal_bytes": 65536,
    "max_bad_commands": 50,
}

SYSTEM_FLAGS = r"\Answered \Flagged \Deleted \Seen \Draft"


# --- the server: mxlib's Server with an [imap] section ----------------------------


class ImapServer(Server):
    """mxlib's Server plus IMAP (STARTTLS) and IMAPS listeners on free
    loopback ports. If the generated configuration already has an [imap]
    table, it is replaced by this one (so the limits above apply)."""

    def write_config(self):
        super().write_config()
        if getattr(self, "imap_port", None) is None or getattr(self, "imaps_port", None) is None:
            taken = {
                getattr(self, a, None)
                for a in (
                    "mx_port",
                    "submission_port",
                    "submissions_port",
                    "pop3_port",
                    "pop3s_port",
                    "ldap_port",
                    "ldaps_port",
                )
            }
            self.imap_port, self.imaps_port = [p for p in free_ports(12) if p not in taken][:2]
        if not hasattr(self, "imap_limits"):
            self.imap_limits = dict(IMAP_LIMITS)
        kept, skipping = [], False
        for line in self.config.read_text().splitlines():
            if line.strip().startswith("["):
                skipping = line.strip() == "[imap]"
            if not skipping:
                kept.append(line)
        kept += [
            "",
            "[imap]",
            f'imap = ["{HOST}:{self.imap_port}"]',
            f'imaps = ["{HOST}:{self.imaps_port}"]',
        ]
        kept += [f"{k} = {toml_value(v)}" for k, v in self.imap_limits.items()]
        self.config.write_text("\n".join(kept) + "\n")


@pytest.fixture(scope="module")
def imap_server():
    s = ImapServer()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


@pytest.fixture
def make_imap_server():
    made: list[ImapServer] = []

    def make(auth: dict | None = None, **imap_limits) -> ImapServer:
        s = ImapServer()
        s.imap_limits.update(imap_limits)
        s.auth.update(auth or {})
        s.write_config()
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.teardown()


# --- mailboxes, delivery ------------------------------------------------------------


@dataclass
class Account:
    address: str
    password: str


_counter = [0]


def new_account(server: ImapServer, name: str) -> Account:
    """A fresh mailbox (INBOX, Sent, Drafts, Trash, Junk) for one test."""
    _counter[0] += 1
    address = f"{name}-{_counter[0]}@example.net"
    password = f"pw-{name}-{_counter[0]}-0123"
    server.add_mailbox(address, password)
    return Account(address, password)


def deliver(server: ImapServer, address: str, *bodies: bytes):
    with smtplib.SMTP(HOST, server.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT) as s:
        for b in bodies:
            assert s.sendmail(SENDER, [address], b) == {}


def simple(tag: str, extra_body: str = "") -> bytes:
    return (
        f"From: Sender <{SENDER}>\r\n"
        f"To: <someone@example.net>\r\n"
        f"Subject: {tag}\r\n"
        f"Message-ID: <{tag}@e2e.test>\r\n"
        "\r\n"
        f"body of {tag}\r\n"
        ".leading dot\r\n"
        f"{extra_body}"
        "last line\r\n"
    ).encode()


# A multipart/mixed message: a UTF-8 text part, a PDF attachment and an
# attached message/rfc822. The CRLF before each boundary line belongs to the
# boundary (RFC 2046 5.1.1), so it is not part of the preceding body.
PART1_TEXT = "Hello, the numbers are attached. Grüße\r\nsecond line".encode()
PDF_B64 = b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg=="
PART2_MIME = (
    b'Content-Type: application/pdf; name="report.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="report.pdf"\r\n'
    b"\r\n"
)
INNER_HEADER = (
    b"From: Inner Sender <inner@example.org>\r\n"
    b"To: demo@example.net\r\n"
    b"Subject: inner message\r\n"
    b"Date: Tue, 2 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <inner@e2e.test>\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
)
INNER_BODY = b"inner body line 1\r\nnested-only-word here\r\n"
INNER = INNER_HEADER + INNER_BODY
MULTI_HEADER = (
    b"From: Jo Sender <jo@example.org>\r\n"
    b"To: Demo <demo@example.net>\r\n"
    b"Cc: cc@example.org\r\n"
    b"Subject: quarterly report\r\n"
    b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
    b"Message-ID: <multi@e2e.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer-b"\r\n'
    b"\r\n"
)
MULTI = (
    MULTI_HEADER
    + b"This is a multi-part message in MIME format.\r\n"
    b"--outer-b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    + PART1_TEXT
    + b"\r\n--outer-b\r\n"
    + PART2_MIME
    + PDF_B64
    + b"\r\n--outer-b\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    + INNER
    + b"--outer-b--\r\n"
)

MULTI_ENVELOPE = (
    '("Mon, 1 Jan 2024 12:00:00 +0000" "quarterly report" '
    '(("Jo Sender" NIL "jo" "example.org")) '
    '(("Jo Sender" NIL "jo" "example.org")) '
    '(("Jo Sender" NIL "jo" "example.org")) '
    '(("Demo" NIL "demo" "example.net")) '
    '((NIL NIL "cc" "example.org")) '
    'NIL NIL "<multi@e2e.test>")'
)
INNER_ENVELOPE = (
    '("Tue, 2 Jan 2024 10:00:00 +0000" "inner message" '
    '(("Inner Sender" NIL "inner" "example.org")) '
    '(("Inner Sender" NIL "inner" "example.org")) '
    '(("Inner Sender" NIL "inner" "example.org")) '
    '((NIL NIL "demo" "example.net")) '
    'NIL NIL NIL "<inner@e2e.test>")'
)
# RFC 3501 7.4.2: sizes in octets of the body as transmitted, text lines.
INNER_LINES = INNER.count(b"\n")
MULTI_BODYSTRUCTURE = (
    "("
    f'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" {len(PART1_TEXT)} 2 NIL NIL NIL NIL)'
    f'("APPLICATION" "PDF" ("NAME" "report.pdf") NIL NIL "BASE64" {len(PDF_B64)} NIL '
    '("ATTACHMENT" ("FILENAME" "report.pdf")) NIL NIL)'
    f'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" {len(INNER) - 2} {INNER_ENVELOPE} '
    f'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" {len(INNER_BODY) - 2} 2 NIL NIL NIL NIL) '
    f"{INNER_LINES} NIL NIL NIL NIL)"
    ' "MIXED" ("BOUNDARY" "outer-b") NIL NIL NIL)'
)


# --- clients --------------------------------------------------------------------------


def imaps(server: ImapServer, acct: Account | None = None) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, server.imaps_port, ssl_context=insecure_tls(), timeout=IO_TIMEOUT)
    if acct:
        typ, _ = m.login(acct.address, acct.password)
        assert typ == "OK"
    return m


def close(m: imaplib.IMAP4):
    try:
        m.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def fetch_literals(data) -> list[bytes]:
    """The literal payloads of an imaplib FETCH answer, in order."""
    return [d[1] for d in data if isinstance(d, tuple)]


def fetch_text(data) -> str:
    """An imaplib FETCH answer with literals replaced by '{n}', as one string."""
    out = []
    for d in data:
        if isinstance(d, tuple):
            out.append(d[0].decode())
        else:
            out.append(d.decode())
    return "".join(out)


def uid_set(text: str) -> list[int]:
    """Expands an RFC 4315 uid-set ("1:3,7") into its UIDs, in order."""
    out = []
    for item in text.split(","):
        a, _, b = item.partition(":")
        lo, hi = int(a), int(b or a)
        step = 1 if hi >= lo else -1
        out.extend(range(lo, hi + step, step))
    return out


def mutf7(name: str) -> str:
    """Modified UTF-7 (RFC 3501 5.1.3), as a client encodes mailbox names."""
    out: list[str] = []
    pending: list[str] = []

    def flush():
        if pending:
            b = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


@dataclass
class Reply:
    untagged: list[str]  # every response before the tagged one, CRLF removed, literals inline
    tagged: str  # the tagged status line without the tag: "OK [...] text"

    @property
    def status(self) -> str:
        return self.tagged.split(" ", 1)[0]

    @property
    def code(self) -> str | None:
        m = re.match(r"\w+ \[([^\]]*)\]", self.tagged)
        return m[1] if m else None


class Imap:
    """A line-level IMAP client: each response as text with its literals
    inline, so tests can assert the exact exchange.

        c = Imap(server.imaps_port, tls=True)
        c.login(acct)
        r = c.cmd("SELECT INBOX"); assert r.status == "OK"
    """

    def __init__(self, port: int, tls: bool = False):
        self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        if tls:
            self.sock = insecure_tls().wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.buf = b""
        self.n = 0
        self.greeting = self.response()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, timeout: float | None = None) -> bool:
        self.sock.settimeout(IO_TIMEOUT if timeout is None else timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def _line(self, timeout: float | None = None) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill(timeout):
                raise EOFError(f"connection closed; pending {self.buf!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed inside a literal")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, timeout: float | None = None) -> str:
        """One whole response (literals included), without the final CRLF."""
        out = b""
        while True:
            line = self._line(timeout)
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                out += line + self._exact(int(m[1]))
                continue
            return (out + line[:-2]).decode("utf-8", "surrogateescape")

    def send(self, data: bytes | str):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def tag(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def read_until_tagged(self, tag: str) -> Reply:
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + " "):
                return Reply(untagged, r[len(tag) + 1 :])
            assert not r.startswith("+"), f"unexpected continuation {r!r} (after {untagged})"
            untagged.append(r)

    def cmd(self, command: str | bytes) -> Reply:
        t = self.tag()
        if isinstance(command, str):
            command = command.encode()
        self.send(t.encode() + b" " + command + b"\r\n")
        return self.read_until_tagged(t)

    def ok(self, command: str | bytes) -> Reply:
        r = self.cmd(command)
        assert r.status == "OK", f"{command!r}: {r}"
        return r

    def login(self, acct: Account) -> Reply:
        return self.ok(f'LOGIN "{acct.address}" "{acct.password}"')

    def expect_closed(self, timeout: float = IO_TIMEOUT):
        while self._fill(timeout):
            pass

    def starttls(self):
        r = self.ok("STARTTLS")
        assert self.buf == b"", f"bytes after the STARTTLS reply: {self.buf!r}"
        self.sock = insecure_tls().wrap_socket(self.sock, server_hostname=HOSTNAME)
        return r


def raw_imaps(server: ImapServer, acct: Account | None = None) -> Imap:
    c = Imap(server.imaps_port, tls=True)
    if acct:
        c.login(acct)
    return c


def select_info(r: Reply) -> dict[str, str]:
    """EXISTS and the response codes of a SELECT/EXAMINE answer."""
    info = {}
    for line in r.untagged:
        m = re.fullmatch(r"\* (\d+) (EXISTS|RECENT)", line)
        if m:
            info[m[2]] = m[1]
            continue
        m = re.fullmatch(r"\* OK \[(\S+)(?: ([^\]]*))?\].*", line)
        if m:
            info[m[1]] = m[2] or ""
        m = re.fullmatch(r"\* FLAGS \((.*)\)", line)
        if m:
            info["FLAGS"] = m[1]
    return info


def status(c: Imap, mailbox: str, items: str = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN") -> dict[str, int]:
    r = c.ok(f"STATUS {mailbox} ({items})")
    assert len(r.untagged) == 1, r
    m = re.fullmatch(r"\* STATUS (\S+|\"[^\"]*\") \((.*)\)", r.untagged[0])
    assert m, r.untagged
    words = m[2].split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def flags_of(fetch_line: str) -> set[str]:
    m = re.search(r"FLAGS \(([^)]*)\)", fetch_line)
    assert m, fetch_line
    return set(m[1].split())


# --- capabilities, STARTTLS, login ------------------------------------------------------


def test_logindisabled_before_starttls_then_login_with_imaplib(imap_server):
    acct = new_account(imap_server, "tls")
    # The exact exchange on the plain port.
    with Imap(imap_server.imap_port) as c:
        m = re.fullmatch(rf"\* OK \[CAPABILITY ([^\]]*)\] {re.escape(HOSTNAME)} .*", c.greeting)
        assert m, c.greeting
        caps = m[1].split()
        assert caps[0] == "IMAP4rev1"
        assert "STARTTLS" in caps and "LOGINDISABLED" in caps
        assert not any(x.startswith("AUTH=") for x in caps), caps
        r = c.cmd("CAPABILITY")
        assert r.untagged == ["* CAPABILITY " + " ".join(caps)] and r.status == "OK"
        r = c.cmd(f'LOGIN "{acct.address}" "{acct.password}"')
        assert (r.status, r.code) == ("NO", "PRIVACYREQUIRED"), r
        r = c.cmd("AUTHENTICATE PLAIN " + base64.b64encode(
            f"\0{acct.address}\0{acct.password}".encode()).decode())
        assert (r.status, r.code) == ("NO", "PRIVACYREQUIRED"), r
        # Still not logged in: a command of the authenticated state is refused.
        assert c.cmd("SELECT INBOX").status == "BAD"
        c.starttls()
        r = c.ok("CAPABILITY")
        after = r.untagged[0].split()[2:]
        assert "STARTTLS" not in after and "LOGINDISABLED" not in after
        assert "AUTH=PLAIN" in after
        r = c.login(acct)
        assert r.code and r.code.startswith("CAPABILITY IMAP4rev1 "), r
        assert "AUTH=PLAIN" not in r.code.split()

    # imaplib: LOGIN in clear text is refused, after STARTTLS it works.
    m = imaplib.IMAP4(HOST, imap_server.imap_port, timeout=IO_TIMEOUT)
    try:
        assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error, match=r"\[PRIVACYREQUIRED\]"):
            m.login(acct.address, acct.password)
        typ, _ = m.starttls(ssl_context=insecure_tls())
        assert typ == "OK"
        assert "LOGINDISABLED" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
        typ, data = m.login(acct.address, acct.password)
        assert typ == "OK", data
        assert m.state == "AUTH"
    finally:
        close(m)


def test_imaps_login_and_authenticate_plain(imap_server):
    acct = new_account(imap_server, "ssl")
    m = imaps(imap_server)
    try:
        assert "AUTH=PLAIN" in m.capabilities and "STARTTLS" not in m.capabilities
        typ, data = m.login(acct.address, acct.password)
        assert typ == "OK" and data[0].startswith(b"[CAPABILITY IMAP4rev1 "), data
        typ, data = m.logout()
        assert typ == "BYE"
    finally:
        close(m)
    # AUTHENTICATE PLAIN after a "+" continuation, via imaplib...
    m = imaps(imap_server)
    try:
        typ, data = m.authenticate(
            "PLAIN", lambda _: f"\0{acct.address}\0{acct.password}".encode()
        )
        assert typ == "OK", data
    finally:
        close(m)
    # ...and with the initial response on the command line (SASL-IR, RFC 4959).
    token = base64.b64encode(f"\0{acct.address}\0{acct.password}".encode()).decode()
    with raw_imaps(imap_server) as c:
        r = c.ok(f"AUTHENTICATE PLAIN {token}")
        assert r.code and r.code.startswith("CAPABILITY IMAP4rev1 "), r
        assert c.ok("SELECT INBOX").code == "READ-WRITE"
    with raw_imaps(imap_server) as c:
        # A malformed PLAIN response is BAD. (Wrong passwords are tested on a
        # server of their own: they lock 127.0.0.1 out.)
        r = c.cmd("AUTHENTICATE PLAIN " + base64.b64encode(b"no-nul-separators").decode())
        assert r.status == "BAD", r


# --- LIST ------------------------------------------------------------------------------------


def test_list_special_use_and_list_return_status(imap_server):
    acct = new_account(imap_server, "list")
    deliver(imap_server, acct.address, simple("list-1"), simple("list-2"))
    m = imaps(imap_server, acct)
    try:
        typ, data = m.list('""', "*")
        assert typ == "OK"
        assert data == [
            b'(\\HasNoChildren) "/" INBOX',
            b'(\\HasNoChildren \\Sent) "/" Sent',
            b'(\\HasNoChildren \\Drafts) "/" Drafts',
            b'(\\HasNoChildren \\Trash) "/" Trash',
            b'(\\HasNoChildren \\Junk) "/" Junk',
        ]
    finally:
        close(m)
    with raw_imaps(imap_server, acct) as c:
        # RFC 6154: the SPECIAL-USE selection option lists only those.
        r = c.ok('LIST (SPECIAL-USE) "" "*"')
        assert r.untagged == [
            '* LIST (\\HasNoChildren \\Sent) "/" Sent',
            '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
            '* LIST (\\HasNoChildren \\Trash) "/" Trash',
            '* LIST (\\HasNoChildren \\Junk) "/" Junk',
        ]
        # RFC 5819: LIST-STATUS, each STATUS right after its LIST.
        r = c.ok('LIST "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES))')
        assert r.untagged == [
            '* LIST (\\HasNoChildren) "/" INBOX',
            "* STATUS INBOX (MESSAGES 2)",
            '* LIST (\\HasNoChildren \\Sent) "/" Sent',
            "* STATUS Sent (MESSAGES 0)",
            '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
            "* STATUS Drafts (MESSAGES 0)",
            '* LIST (\\HasNoChildren \\Trash) "/" Trash',
            "* STATUS Trash (MESSAGES 0)",
            '* LIST (\\HasNoChildren \\Junk) "/" Junk',
            "* STATUS Junk (MESSAGES 0)",
        ]
        # The hierarchy delimiter (RFC 3501 6.3.8), and INBOX matched case-insensitively.
        assert c.ok('LIST "" ""').untagged == ['* LIST (\\Noselect) "/" ""']
        assert c.ok('LIST "" inbox').untagged == ['* LIST (\\HasNoChildren) "/" INBOX']


# --- SELECT / EXAMINE ---------------------------------------------------------------------------


def test_select_and_examine(imap_server):
    acct = new_account(imap_server, "select")
    deliver(imap_server, acct.address, simple("sel-1"), simple("sel-2"))
    with raw_imaps(imap_server, acct) as c:
        st = status(c, "INBOX")
        assert st["MESSAGES"] == 2 and st["UIDNEXT"] == 3 and st["UNSEEN"] == 2
        r = c.ok("SELECT INBOX")
        assert r.code == "READ-WRITE"
        info = select_info(r)
        assert info["EXISTS"] == "2"
        assert info["UIDVALIDITY"] == str(st["UIDVALIDITY"])
        assert info["UIDNEXT"] == "3"
        assert info["UNSEEN"] == "1"
        assert info["FLAGS"] == SYSTEM_FLAGS
        assert info["PERMANENTFLAGS"] == f"({SYSTEM_FLAGS} \\*)"
        r = c.ok("EXAMINE INBOX")
        assert r.code == "READ-ONLY"
        info = select_info(r)
        assert info["EXISTS"] == "2" and info["UIDNEXT"] == "3"
        assert info["UIDVALIDITY"] == str(st["UIDVALIDITY"])
        assert info["PERMANENTFLAGS"] == "()"
        # EXAMINE: BODY[] does not set \Seen, STORE is refused.
        r = c.ok("FETCH 1 (BODY[])")
        assert flags_of(c.ok("FETCH 1 FLAGS").untagged[0]) == set()
        assert c.cmd("STORE 1 +FLAGS (\\Seen)").tagged.startswith("NO [READ-ONLY]")
        # A missing mailbox: NO [NONEXISTENT], and nothing stays selected.
        r = c.cmd("SELECT Nowhere")
        assert (r.status, r.code) == ("NO", "NONEXISTENT"), r
        assert c.cmd("FETCH 1 FLAGS").status == "BAD"

    m = imaps(imap_server, acct)
    try:
        typ, data = m.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        assert m.response("UIDVALIDITY") == ("UIDVALIDITY", [str(st["UIDVALIDITY"]).encode()])
        assert m.response("UIDNEXT") == ("UIDNEXT", [b"3"])
        typ, data = m.select("Trash", readonly=True)
        assert (typ, data) == ("OK", [b"0"])
    finally:
        close(m)


# --- FETCH -------------------------------------------------------------------------------------


def test_fetch_items_of_a_multipart_message(imap_server):
    acct = new_account(imap_server, "fetch")
    deliver(imap_server, acct.address, MULTI)
    stored = imap_server.cat(acct.address, 1)
    assert split_stored(stored).body == MULTI
    m = imaps(imap_server, acct)
    try:
        assert m.select("INBOX") == ("OK", [b"1"])
        typ, data = m.fetch("1", "(FLAGS UID RFC822.SIZE)")
        # This session was the first to SELECT after delivery: \\Recent.
        assert (typ, data) == ("OK", [f"1 (FLAGS (\\Recent) UID 1 RFC822.SIZE {len(stored)})".encode()])

        typ, data = m.fetch("1", "(ENVELOPE)")
        assert data == [f"1 (ENVELOPE {MULTI_ENVELOPE})".encode()]

        typ, data = m.fetch("1", "(BODYSTRUCTURE)")
        assert data == [f"1 (BODYSTRUCTURE {MULTI_BODYSTRUCTURE})".encode()]

        # Sections: a part, a part's MIME header, the encapsulated message and
        # its parts, header fields, and a partial fetch. All with PEEK.
        typ, data = m.fetch(
            "1",
            "(BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[3] BODY.PEEK[3.HEADER] BODY.PEEK[3.1] "
            "BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER] BODY.PEEK[]<0.10>)",
        )
        assert typ == "OK"
        assert fetch_text(data) == (
            f"1 (BODY[1] {{{len(PART1_TEXT)}}} BODY[2.MIME] {{{len(PART2_MIME)}}}"
            f" BODY[3] {{{len(INNER) - 2}}} BODY[3.HEADER] {{{len(INNER_HEADER)}}}"
            f" BODY[3.1] {{{len(INNER_BODY) - 2}}} BODY[HEADER.FIELDS (SUBJECT)] {{29}}"
            f" BODY[HEADER] {{{len(stored) - len(MULTI) + len(MULTI_HEADER)}}} BODY[]<0> {{10}})"
        )
        assert fetch_literals(data) == [
            PART1_TEXT,
            PART2_MIME,
            INNER[:-2],
            INNER_HEADER,
            INNER_BODY[:-2],
            b"Subject: quarterly report\r\n\r\n",
            stored[: len(stored) - len(MULTI) + len(MULTI_HEADER)],
            stored[:10],
        ]
        # PEEK left \Seen alone.
        assert m.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]

        # BODY[] (not PEEK) returns the stored bytes and sets \Seen; the new
        # flags come in the same FETCH response (RFC 3501 6.4.5).
        typ, data = m.fetch("1", "(BODY[])")
        assert fetch_literals(data) == [stored]
        assert fetch_text(data) == f"1 (BODY[] {{{len(stored)}}} FLAGS (\\Recent \\Seen))"
        assert m.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent \\Seen))"]
        typ, data = m.uid("FETCH", "1", "(RFC822.SIZE BODY.PEEK[TEXT])")
        assert fetch_literals(data) == [MULTI[len(MULTI_HEADER):]]
    finally:
        close(m)


def test_envelope_groups_routes_and_addresses_without_domain(imap_server):
    """RFC 3501 7.4.2: a group is a start marker (NIL NIL "name" NIL), its
    members and an end marker (NIL NIL NIL NIL); a source route is the adl
    field; an address without a domain is an address (host MISSING_DOMAIN,
    as Dovecot answers), never read as a group."""
    acct = new_account(imap_server, "envelope")
    msg = (
        b"From: <@relay.example:kim@example.org>\r\n"
        b"Sender: broken\r\n"
        b"To: team: a@example.org, b@example.net;, solo: (nobody) ;\r\n"
        b"Cc: lee@example.org (Lee Park)\r\n"
        b"Subject: groups\r\n"
        b"\r\n"
        b"body\r\n"
    )
    m = imaps(imap_server, acct)
    try:
        assert m.append("INBOX", None, None, msg)[0] == "OK"
        assert m.select("INBOX") == ("OK", [b"1"])
        typ, data = m.fetch("1", "(ENVELOPE)")
        kim = '((NIL "@relay.example" "kim" "example.org"))'
        assert (typ, data) == ("OK", [(
            '1 (ENVELOPE (NIL "groups" ' + kim + ' ((NIL NIL "broken" "MISSING_DOMAIN")) ' + kim + ' '
            '((NIL NIL "team" NIL)(NIL NIL "a" "example.org")(NIL NIL "b" "example.net")(NIL NIL NIL NIL)'
            '(NIL NIL "solo" NIL)(NIL NIL NIL NIL)) (("Lee Park" NIL "lee" "example.org")) NIL NIL NIL))'
        ).encode()])
    finally:
        close(m)


def test_text_of_an_attached_multipart_message_keeps_its_epilogue(imap_server):
    """RFC 3501 6.4.5: BODY[1.TEXT] of a message/rfc822 part is the attached
    message's body after its header, up to the end of the part: the
    epilogue after its closing boundary is part of it."""
    acct = new_account(imap_server, "ptext")
    inner_head = b'From: b@example.org\r\nContent-Type: multipart/mixed; boundary="d"\r\n\r\n'
    inner_body = b"--d\r\n\r\none\r\n--d--\r\n\r\nepilogue\r\n"
    msg = b"From: a@example.org\r\nContent-Type: message/rfc822\r\n\r\n" + inner_head + inner_body
    m = imaps(imap_server, acct)
    try:
        assert m.append("INBOX", None, None, msg)[0] == "OK"
        assert m.select("INBOX") == ("OK", [b"1"])
        typ, data = m.fetch("1", "(BODY.PEEK[1.TEXT] BODY.PEEK[1])")
        assert typ == "OK"
        assert fetch_literals(data) == [inner_body, inner_head + inner_body]
    finally:
        close(m)


# --- SEARCH ------------------------------------------------------------------------------------


OLD_NEWS = (
    b"From: Carol <carol@example.org>\r\n"
    b"Subject: old news\r\n"
    b"Date: Sat, 1 Feb 2020 08:00:00 +0000\r\n"
    b"\r\n"
    b"from the archive\r\n"
)
LUNCH = (
    b"From: Bob Builder <bob@example.org>\r\n"
    b"Subject: lunch on friday\r\n"
    b"\r\n"
    b"pizza or sushi?\r\n"
)


def search_setup(server: ImapServer, name: str) -> tuple[Account, imaplib.IMAP4_SSL]:
    """UID 1: MULTI (unseen), UID 2: LUNCH (unseen), UID 3: OLD_NEWS (\\Seen,
    internal date 2020)."""
    acct = new_account(server, name)
    deliver(server, acct.address, MULTI, LUNCH)
    m = imaps(server, acct)
    typ, data = m.append("INBOX", "(\\Seen)", '"01-Feb-2020 08:00:00 +0000"', OLD_NEWS)
    assert typ == "OK", data
    assert m.select("INBOX") == ("OK", [b"3"])
    return acct, m


def test_search(imap_server):
    _, m = search_setup(imap_server, "search")

    def search(*criteria: str, charset=None) -> list[int]:
        typ, data = m.search(charset, *criteria)
        assert typ == "OK", data
        assert len(data) == 1
        return [int(x) for x in data[0].split()]

    def uid_search(*criteria: str) -> list[int]:
        typ, data = m.uid("SEARCH", *criteria)
        assert typ == "OK", data
        return [int(x) for x in data[0].split()]

    try:
        assert search("ALL") == [1, 2, 3]
        assert search("UNSEEN") == [1, 2]
        assert search("SEEN") == [3]
        assert search("FROM", "jo@example.org") == [1]
        assert search("FROM", '"Bob Builder"') == [2]
        assert search("SUBJECT", "LUNCH") == [2]
        assert search("BODY", "pizza") == [2]
        assert search("BODY", "numbers") == [1]
        # BODY does not look at the header; TEXT does.
        assert search("BODY", "quarterly") == []
        assert search("TEXT", "quarterly") == [1]
        assert search("SINCE", "1-Jan-2024") == [1, 2]
        assert search("BEFORE", "1-Jan-2021") == [3]
        assert search("SENTBEFORE", "1-Jan-2021") == [3]
        assert search("OR", "FROM", "bob", "SUBJECT", "old") == [2, 3]
        assert search("NOT", "FROM", "jo") == [2, 3]
        assert search("NOT", "OR", "SEEN", "FROM", "jo") == [2]
        assert search("2:*", "UNSEEN") == [2]
        assert uid_search("UID", "2:*") == [2, 3]
        assert uid_search("UID", "1,3") == [1, 3]
        assert uid_search("UID", "5:*") == [3]  # "*" is the highest UID (RFC 3501 6.4.8)
        assert search("UID", "2:3", "NOT", "SEEN") == [2]
        assert search("LARGER", "1000") == [1]
        # A UTF-8 word, sent as a (synchronizing) literal, in a UTF-8 text part.
        m.literal = "Grüße".encode()
        assert search("BODY", charset="UTF-8") == [1]
        m.literal = "Köln".encode()
        assert search("BODY", charset="UTF-8") == []
        assert search("BODY", "sushi", charset="US-ASCII") == [2]
    finally:
        close(m)


def test_search_sent_dates_as_written_and_repeated_header_fields(imap_server):
    """RFC 3501 6.4.4: SENTON/SENTBEFORE/SENTSINCE take the Date: field's own
    date, its zone disregarded; HEADER matches any field of that name."""
    acct = new_account(imap_server, "sentdate")
    msg = (
        b"From: kim@example.org\r\n"
        b"Date: Mon, 1 Jan 2024 23:30:00 -0500\r\n"
        b"X-Extra: first\r\n"
        b"X-Extra: hello there\r\n"
        b"\r\n"
        b"body\r\n"
    )
    m = imaps(imap_server, acct)
    try:
        assert m.append("INBOX", None, None, msg)[0] == "OK"
        assert m.select("INBOX") == ("OK", [b"1"])
        for criteria, want in [
            ("SENTON 1-Jan-2024", [b"1"]),
            ("SENTON 2-Jan-2024", [b""]),
            ("SENTBEFORE 2-Jan-2024", [b"1"]),
            ("SENTSINCE 2-Jan-2024", [b""]),
            ("HEADER X-Extra hello", [b"1"]),
            ("HEADER X-Extra first", [b"1"]),
            ("HEADER X-Extra nowhere", [b""]),
        ]:
            assert m.search(None, criteria) == ("OK", want), criteria
    finally:
        close(m)


def test_search_body_looks_into_attachments_and_attached_messages(imap_server):
    acct = new_account(imap_server, "searchatt")
    att = (
        b"From: a@example.org\r\nSubject: att\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nvisible\r\n"
        b'--b\r\nContent-Type: text/plain; name="notes.txt"\r\n'
        b'Content-Disposition: attachment; filename="notes.txt"\r\n\r\n'
        b"attachedword in a text attachment\r\n--b--\r\n"
    )
    deliver(imap_server, acct.address, MULTI, att)
    with raw_imaps(imap_server, acct) as c:
        c.ok("SELECT INBOX")
        assert c.ok("SEARCH BODY visible").untagged == ["* SEARCH 2"]
        assert c.ok("SEARCH BODY nested-only-word").untagged == ["* SEARCH 1"]
        assert c.ok("SEARCH TEXT nested-only-word").untagged == ["* SEARCH 1"]
        assert c.ok("SEARCH BODY attachedword").untagged == ["* SEARCH 2"]


def test_search_unknown_charset_is_no_badcharset(imap_server):
    acct = new_account(imap_server, "charset")
    deliver(imap_server, acct.address, simple("cs"))
    with raw_imaps(imap_server, acct) as c:
        c.ok("SELECT INBOX")
        r = c.cmd("SEARCH CHARSET KOI8-R BODY x")
        assert r.status == "NO" and r.code.startswith("BADCHARSET"), r


# --- STORE, COPY, MOVE ----------------------------------------------------------------------------


def test_store_flags(imap_server):
    acct = new_account(imap_server, "store")
    deliver(imap_server, acct.address, simple("st-1"), simple("st-2"))
    with raw_imaps(imap_server, acct) as c:
        # An earlier session took the \\Recent flags (RFC 3501 2.3.2).
        assert select_info(c.ok("SELECT INBOX"))["RECENT"] == "2"
    with raw_imaps(imap_server, acct) as c:
        assert select_info(c.ok("SELECT INBOX"))["RECENT"] == "0"
        r = c.ok("STORE 1 +FLAGS (\\Flagged $Work)")
        # $Work is new to the mailbox: FLAGS and PERMANENTFLAGS come first
        # (RFC 3501 7.2.6).
        assert r.untagged[:2] == [
            f"* FLAGS ({SYSTEM_FLAGS} $Work)",
            f"* OK [PERMANENTFLAGS ({SYSTEM_FLAGS} $Work \\*)] Flags permitted",
        ], r
        assert len(r.untagged) == 3 and r.untagged[2].startswith("* 1 FETCH (FLAGS (")
        assert flags_of(r.untagged[2]) == {"\\Flagged", "$Work"}
        r = c.ok("STORE 1 -FLAGS (\\Flagged)")
        assert r.untagged == ["* 1 FETCH (FLAGS ($Work))"]
        # .SILENT: no untagged FETCH; FLAGS replaces the whole set.
        r = c.ok("STORE 1:2 FLAGS.SILENT (\\Answered \\Seen)")
        assert r.untagged == []
        r = c.ok("FETCH 1 (FLAGS)")
        assert flags_of(r.untagged[0]) == {"\\Answered", "\\Seen"}
        assert c.ok("STORE 1 +FLAGS.SILENT ($Work)").untagged == []
        r = c.ok("FETCH 1:2 (FLAGS)")
        assert [flags_of(x) for x in r.untagged] == [
            {"\\Answered", "\\Seen", "$Work"},
            {"\\Answered", "\\Seen"},
        ]
        # UID STORE answers with the UID (RFC 3501 6.4.8).
        r = c.ok("UID STORE 2 -FLAGS (\\Seen)")
        assert r.untagged == ["* 2 FETCH (FLAGS (\\Answered) UID 2)"]
        # \Recent cannot be set by a client.
        r = c.ok("STORE 2 +FLAGS (\\Recent)")
        assert r.untagged == ["* 2 FETCH (FLAGS (\\Answered))"]
        assert c.ok("SEARCH UNSEEN").untagged == ["* SEARCH 2"]
        assert c.ok("SEARCH KEYWORD $Work").untagged == ["* SEARCH 1"]
    # The flags are stored, not only in this session.
    with raw_imaps(imap_server, acct) as c:
        c.ok("EXAMINE INBOX")
        r = c.ok("FETCH 1:2 (FLAGS)")
        assert [flags_of(x) for x in r.untagged] == [{"\\Answered", "\\Seen", "$Work"}, {"\\Answered"}]


def test_copy_with_copyuid_and_uid_move(imap_server):
    acct = new_account(imap_server, "copy")
    sent = [simple("cp-1"), simple("cp-2"), simple("cp-3")]
    deliver(imap_server, acct.address, *sent)
    with raw_imaps(imap_server, acct) as c:
        trash = status(c, "Trash")
        junk = status(c, "Junk")
        c.ok("SELECT INBOX")
        # COPY: the tagged OK carries [COPYUID destvalidity source-uids dest-uids] (RFC 4315).
        r = c.ok("COPY 1:2 Trash")
        m = re.fullmatch(r"COPYUID (\d+) (\S+) (\S+)", r.code or "")
        assert m, r
        assert int(m[1]) == trash["UIDVALIDITY"]
        assert uid_set(m[2]) == [1, 2] and uid_set(m[3]) == [1, 2]
        r = c.cmd("COPY 1 Nowhere")
        assert (r.status, r.code) == ("NO", "TRYCREATE"), r
        # UID MOVE (RFC 6851 4.3): an untagged OK [COPYUID], then EXPUNGE, then the tagged OK.
        r = c.ok("UID MOVE 2 Junk")
        assert len(r.untagged) == 2, r
        m = re.fullmatch(r"\* OK \[COPYUID (\d+) 2 1\].*", r.untagged[0])
        assert m and int(m[1]) == junk["UIDVALIDITY"], r
        assert r.untagged[1] == "* 2 EXPUNGE"
        assert c.ok("UID SEARCH ALL").untagged == ["* SEARCH 1 3"]
        r = c.cmd("MOVE 1 Nowhere")
        assert (r.status, r.code) == ("NO", "TRYCREATE"), r

    m = imaps(imap_server, acct)
    try:
        for folder, want in (("Trash", sent[:2]), ("Junk", [sent[1]]), ("INBOX", [sent[0], sent[2]])):
            typ, data = m.select(folder, readonly=True)
            assert (typ, data) == ("OK", [str(len(want)).encode()]), folder
            typ, data = m.fetch("1:*", "(BODY.PEEK[])")
            got = [split_stored(x).body for x in fetch_literals(data)]
            assert got == want, folder
    finally:
        close(m)


# --- APPEND ------------------------------------------------------------------------------------


def test_append_with_flags_and_date_then_fetch_back(imap_server):
    acct = new_account(imap_server, "append")
    msg = (
        b"From: Me <me@example.net>\r\n"
        b"Subject: draft with an 8-bit body\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        + "Grüße aus Köln ✓\r\n".encode()
        + b".\r\n"
        b" leading space, trailing tab\t\r\n"
    )
    m = imaps(imap_server, acct)
    try:
        drafts = status_imaplib(m, "Drafts")
        typ, data = m.append("Drafts", "(\\Seen $Label1)", '"05-Mar-2024 10:20:30 +0100"', msg)
        assert typ == "OK"
        code = re.match(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
        assert code, data
        assert int(code[1]) == drafts["UIDVALIDITY"] and int(code[2]) == drafts["UIDNEXT"]
        uid = int(code[2])
        assert m.select("Drafts") == ("OK", [b"1"])
        typ, data = m.uid("FETCH", str(uid), "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        assert fetch_literals(data) == [msg]
        head = fetch_text(data)
        assert f"UID {uid}" in head and f"RFC822.SIZE {len(msg)}" in head
        assert flags_of(head) == {"\\Recent", "\\Seen", "$Label1"}
        date = re.search(r'INTERNALDATE "([^"]+)"', head)[1]
        assert time.mktime(imaplib.Internaldate2tuple(f'INTERNALDATE "{date}"'.encode())) == \
            time.mktime(imaplib.Internaldate2tuple(b'INTERNALDATE "05-Mar-2024 10:20:30 +0100"'))
        # A missing mailbox: NO [TRYCREATE] (RFC 3501 6.3.11).
        typ, data = m.append("Nowhere", None, None, msg)
        assert typ == "NO" and data[0].startswith(b"[TRYCREATE]"), data
    finally:
        close(m)
    # APPEND to the selected mailbox: the new message is announced before the tagged OK.
    with raw_imaps(imap_server, acct) as c:
        c.ok("SELECT Drafts")
        t = c.tag()
        c.send(f"{t} APPEND Drafts {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
        r = c.read_until_tagged(t)
        assert r.status == "OK" and r.code.startswith("APPENDUID ") and r.untagged == ["* 2 EXISTS", "* 1 RECENT"], r


def status_imaplib(m: imaplib.IMAP4, mailbox: str) -> dict[str, int]:
    typ, data = m.status(mailbox, "(MESSAGES UIDNEXT UIDVALIDITY)")
    assert typ == "OK", data
    inner = re.search(rb"\((.*)\)", data[0])[1].split()
    return {inner[i].decode(): int(inner[i + 1]) for i in range(0, len(inner), 2)}


# --- mailboxes: CREATE, RENAME, DELETE, SUBSCRIBE, names -------------------------------------


def test_create_rename_delete(imap_server):
    acct = new_account(imap_server, "folders")
    with raw_imaps(imap_server, acct) as c:
        # CREATE makes the missing parent too (RFC 3501 6.3.3).
        c.ok("CREATE Projects/2024")
        assert c.ok('LIST "" "Projects*"').untagged == [
            '* LIST (\\HasChildren) "/" Projects',
            '* LIST (\\HasNoChildren) "/" Projects/2024',
        ]
        assert c.ok('LIST "" "%"').untagged[-1] == '* LIST (\\HasChildren) "/" Projects'
        r = c.cmd("CREATE Projects")
        assert (r.status, r.code) == ("NO", "ALREADYEXISTS"), r
        r = c.cmd("CREATE inbox")
        assert (r.status, r.code) == ("NO", "ALREADYEXISTS"), r
        t = c.tag()
        c.send(f"{t} APPEND Projects/2024 {{{len(simple('f1'))}+}}\r\n".encode() + simple("f1") + b"\r\n")
        assert c.read_until_tagged(t).status == "OK"
        before = status(c, "Projects/2024")
        # RENAME takes the children along, with their messages and UIDVALIDITY.
        c.ok("RENAME Projects Archive")
        assert c.ok('LIST "" "*"').untagged[5:] == [
            # "Archive" is a role name: the folder gets \\Archive (RFC 6154).
            '* LIST (\\HasChildren \\Archive) "/" Archive',
            '* LIST (\\HasNoChildren) "/" Archive/2024',
        ]
        assert status(c, "Archive/2024")["MESSAGES"] == before["MESSAGES"] == 1
        r = c.cmd("RENAME Projects Other")
        assert (r.status, r.code) == ("NO", "NONEXISTENT"), r
        r = c.cmd("RENAME Archive Trash")
        assert (r.status, r.code) == ("NO", "ALREADYEXISTS"), r
        # DELETE: a folder with children is refused; children first.
        r = c.cmd("DELETE Archive")
        assert (r.status, r.code) == ("NO", "INUSE"), r
        c.ok("DELETE Archive/2024")
        c.ok("DELETE Archive")
        r = c.cmd("DELETE Archive")
        assert (r.status, r.code) == ("NO", "NONEXISTENT"), r
        r = c.cmd("DELETE INBOX")
        assert r.status == "NO", r
        assert len(c.ok('LIST "" "*"').untagged) == 5
        # A deleted and re-created name gets a new UIDVALIDITY (RFC 3501 2.3.1.1).
        c.ok("CREATE Projects/2024")
        assert status(c, "Projects/2024")["UIDVALIDITY"] != before["UIDVALIDITY"]


def test_rename_inbox_moves_messages_and_leaves_inbox_empty(imap_server):
    acct = new_account(imap_server, "renameinbox")
    sent = [simple("ri-1"), simple("ri-2")]
    deliver(imap_server, acct.address, *sent)
    m = imaps(imap_server, acct)
    try:
        before = status_imaplib(m, "INBOX")
        typ, data = m.rename("INBOX", "Old")
        assert typ == "OK", data
        # RFC 3501 6.3.5: the messages move to the new name, INBOX remains, empty.
        typ, data = m.list('""', "*")
        assert b'(\\HasNoChildren) "/" INBOX' in data and b'(\\HasNoChildren) "/" Old' in data
        after = status_imaplib(m, "INBOX")
        assert after["MESSAGES"] == 0
        # UIDs of INBOX are not reused under the same UIDVALIDITY.
        assert after["UIDVALIDITY"] != before["UIDVALIDITY"] or after["UIDNEXT"] >= before["UIDNEXT"]
        assert m.select("Old", readonly=True) == ("OK", [b"2"])
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        assert [split_stored(x).body for x in fetch_literals(data)] == sent
        # New mail still arrives in INBOX.
        deliver(imap_server, acct.address, simple("ri-3"))
        assert m.select("INBOX") == ("OK", [b"1"])
        typ, data = m.fetch("1", "(UID BODY.PEEK[])")
        assert split_stored(fetch_literals(data)[0]).body == simple("ri-3")
        uid = int(re.search(rb"UID (\d+)", data[0][0])[1])
        assert after["UIDVALIDITY"] != before["UIDVALIDITY"] or uid >= before["UIDNEXT"]
    finally:
        close(m)


def test_rename_never_overwrites_an_existing_child(imap_server):
    acct = new_account(imap_server, "renameclash")
    msg = simple("clash")
    with raw_imaps(imap_server, acct) as c:
        c.ok("CREATE A/x")
        c.ok("CREATE C/y")
        t = c.tag()
        c.send(f"{t} APPEND C/y {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
        assert c.read_until_tagged(t).status == "OK"
        c.ok("RENAME C/y B/x")  # B/x exists now, B does not
        assert status(c, "B/x")["MESSAGES"] == 1
        r = c.cmd("RENAME A B")  # would turn A/x into B/x
        assert r.status == "NO", r
        assert status(c, "B/x")["MESSAGES"] == 1


def test_rename_leaves_no_hole_in_the_hierarchy(imap_server):
    # RFC 3501 6.3.8: every level must be findable with "%". Like CREATE (and
    # Dovecot), RENAME creates the missing parent, so B lists with children.
    acct = new_account(imap_server, "noselect")
    with raw_imaps(imap_server, acct) as c:
        c.ok("CREATE C/y")
        c.ok("RENAME C/y B/x")
        lines = c.ok('LIST "" "%"').untagged
        assert any(re.fullmatch(r'\* LIST \([^)]*\\HasChildren[^)]*\) "/" B', x) for x in lines), lines


def test_subscribe_and_lsub(imap_server):
    acct = new_account(imap_server, "subs")
    m = imaps(imap_server, acct)
    try:
        # New mailboxes come with their default folders subscribed.
        typ, data = m.lsub('""', "*")
        assert typ == "OK"
        names = [d.rsplit(b" ", 1)[1] for d in data]
        assert names == [b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk"]
        assert m.create("Lists")[0] == "OK"
        assert m.subscribe("Lists")[0] == "OK"
        typ, data = m.lsub('""', "L*")
        assert data == [b'() "/" Lists']
        typ, data = m.list('""', "Lists")
        assert data == [b'(\\HasNoChildren) "/" Lists']
        assert m.unsubscribe("Lists")[0] == "OK"
        typ, data = m.lsub('""', "L*")
        assert data == [None]
        # A subscribed child of an unsubscribed parent: "%" cannot reach
        # the child, so LSUB shows the parent with \Noselect (RFC 3501 6.3.9).
        assert m.create("Lists/Rust")[0] == "OK"
        assert m.subscribe("Lists/Rust")[0] == "OK"
        assert m.lsub('""', "L%") == ("OK", [b'(\\Noselect) "/" Lists'])
        assert m.lsub('""', "Lists/%") == ("OK", [b'() "/" Lists/Rust'])
    finally:
        close(m)
    with raw_imaps(imap_server, acct) as c:
        r = c.ok('LIST "" "%" RETURN (SUBSCRIBED)')
        assert r.untagged[0] == '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX'
        assert r.untagged[-1] == '* LIST (\\HasChildren) "/" Lists'


def test_a_name_that_is_not_modified_utf7_gets_no(imap_server):
    """RFC 3501 5.1.3: "&'" is no modified UTF-7; the command is well formed,
    the name cannot exist: NO (as Dovecot answers), and LIST lists nothing."""
    acct = new_account(imap_server, "badutf7")
    m = imaps(imap_server, acct)
    try:
        typ, data = m.select("a&'b")
        assert typ == "NO" and data[0].startswith(b"[CANNOT]"), data
        assert m.list('""', "a&'b*") == ("OK", [None])
    finally:
        close(m)


def test_delete_keeps_the_subscription_and_listext(imap_server):
    """RFC 3501 6.3.6: DELETE leaves the subscription; LSUB shows the name
    (\\Noselect), LIST (SUBSCRIBED) marks it \\NonExistent (RFC 5258 3.4);
    RECURSIVEMATCH answers a parent with CHILDINFO (RFC 5258 3.5)."""
    acct = new_account(imap_server, "delsub")
    m = imaps(imap_server, acct)
    try:
        for name in ("box/t6", "box/t2/t1"):
            assert m.create(name)[0] == "OK"
            assert m.subscribe(name)[0] == "OK"
        assert m.delete("box/t6")[0] == "OK"
        assert m.lsub('""', "box/*") == ("OK", [b'() "/" box/t2/t1', b'(\\Noselect) "/" box/t6'])
        assert m.list('""', "box/*") == ("OK", [b'(\\HasChildren) "/" box/t2', b'(\\HasNoChildren) "/" box/t2/t1'])
        typ, data = m._simple_command("LIST", "(SUBSCRIBED)", '""', "box/*")
        assert typ == "OK"
        assert m.untagged_responses.pop("LIST") == [
            b'(\\HasNoChildren \\Subscribed) "/" box/t2/t1',
            b'(\\NonExistent \\Subscribed) "/" box/t6',
        ]
        typ, data = m._simple_command("LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "box/%")
        assert typ == "OK"
        assert m.untagged_responses.pop("LIST") == [
            b'(\\HasChildren) "/" box/t2 ("CHILDINFO" ("SUBSCRIBED"))',
            b'(\\NonExistent \\Subscribed) "/" box/t6',
        ]
        with pytest.raises(imaplib.IMAP4.error, match="RECURSIVEMATCH"):
            m._simple_command("LIST", "(RECURSIVEMATCH)", '""', '""')
    finally:
        close(m)


def test_a_recreated_junk_folder_is_junk_again(imap_server):
    """A Junk folder deleted and created again gets \\Junk back (RFC 6154),
    so clients find it and moves into it train the spam filter again."""
    acct = new_account(imap_server, "rejunk")
    m = imaps(imap_server, acct)
    try:
        assert m.delete("Junk")[0] == "OK"
        assert m.list('""', "Junk") == ("OK", [None])
        assert m.create("Junk")[0] == "OK"
        assert m.list('""', "Junk") == ("OK", [b'(\\HasNoChildren \\Junk) "/" Junk'])
    finally:
        close(m)


def test_recent_in_one_session_and_move_into_the_selected_mailbox(imap_server):
    """RFC 3501 2.3.2 as Dovecot: \\Recent in the first session that SELECTs
    after delivery only; COPY/MOVE into the selected mailbox work (RFC 6851
    3.3) and the copies are \\Recent there."""
    acct = new_account(imap_server, "recent")
    deliver(imap_server, acct.address, simple("r1"), simple("r2"))
    a, b = imaps(imap_server, acct), imaps(imap_server, acct)
    try:
        assert b.status("INBOX", "(RECENT)") == ("OK", [b"INBOX (RECENT 2)"])
        typ, data = a.select("INBOX")
        assert typ == "OK" and data == [b"2"]
        assert a.response("RECENT") == ("RECENT", [b"2"])
        typ, _ = b.select("INBOX")
        assert b.response("RECENT") == ("RECENT", [b"0"])
        assert a.search(None, "RECENT") == ("OK", [b"1 2"])
        assert b.search(None, "RECENT") == ("OK", [b""])
        assert b.search(None, "OLD") == ("OK", [b"1 2"])
        typ, data = a.fetch("1", "(FLAGS)")
        assert data == [b"1 (FLAGS (\\Recent))"]
        typ, data = a.copy("1", "INBOX")
        assert typ == "OK" and b"COPYUID" in data[0], data
        typ, data = a._simple_command("MOVE", "2", "INBOX")
        assert typ == "OK", data
        typ, data = a.fetch("1:*", "(UID FLAGS)")
        assert data == [
            b"1 (UID 1 FLAGS (\\Recent))",
            b"2 (UID 3 FLAGS (\\Recent))",
            b"3 (UID 4 FLAGS (\\Recent))",
        ], data
        assert a.search(None, "NEW") == ("OK", [b"1 2 3"])
        assert b.status("INBOX", "(RECENT)") == ("OK", [b"INBOX (RECENT 0)"])
    finally:
        close(a)
        close(b)


def test_nul_bytes_go_out_as_0x80_and_non_canonical_utf7_is_refused(imap_server):
    """RFC 3501 4.3 forbids NUL in a literal: as Dovecot, a NUL in a stored
    message goes out as 0x80 (same size). RFC 3501 5.1.3: a name that is not
    in canonical modified UTF-7 is refused, not rewritten."""
    acct = new_account(imap_server, "nul")
    msg = b"Subject: nul\r\n\r\na\x00b\r\n"
    deliver(imap_server, acct.address, msg)
    stored = imap_server.cat(acct.address, 1)
    assert b"\x00" in stored
    m = imaps(imap_server, acct)
    try:
        assert m.select("INBOX")[0] == "OK"
        typ, data = m.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        assert fetch_literals(data) == [stored.replace(b"\x00", b"\x80")]
        assert f"RFC822.SIZE {len(stored)}" in fetch_text(data)
        for name in ("&AGE-", "&AOQ-&APY-"):
            typ, data = m.create(name)
            assert typ == "NO" and data[0].startswith(b"[CANNOT]"), (name, data)
        assert m.create("&AOQA9g-")[0] == "OK"
        assert m.list('""', "&AOQA9g-") == ("OK", [b'(\\HasNoChildren) "/" &AOQA9g-'])
    finally:
        close(m)


def test_utf8_mailbox_name_in_modified_utf7(imap_server):
    acct = new_account(imap_server, "utf7")
    name = "Entwürfe"
    wire = mutf7(name)
    assert wire == "Entw&APw-rfe"
    assert mutf7("A & B/日本語") == "A &- B/&ZeVnLIqe-"
    m = imaps(imap_server, acct)
    try:
        assert m.create(wire)[0] == "OK"
        typ, data = m.list('""', "Entw*")
        assert data == [b'(\\HasNoChildren) "/" Entw&APw-rfe']
        assert m.append(wire, None, None, simple("utf7"))[0] == "OK"
        assert m.select(wire) == ("OK", [b"1"])
        assert m.create('"A &- B/&ZeVnLIqe-"')[0] == "OK"
        typ, data = m.list('""', "A*")
        assert data == [
            b'(\\HasChildren) "/" "A &- B"',
            b'(\\HasNoChildren) "/" "A &- B/&ZeVnLIqe-"',
        ]
    finally:
        close(m)
    with raw_imaps(imap_server, acct) as c:
        # Invalid modified UTF-7 is refused, not stored under a mangled name.
        assert c.cmd("CREATE Entw&APw").status in ("BAD", "NO")
        # With UTF8=ACCEPT (RFC 6855) the same mailbox is listed in UTF-8.
        assert c.ok("ENABLE UTF8=ACCEPT").untagged == ["* ENABLED UTF8=ACCEPT"]
        r = c.ok('LIST "" "Entw*"')
        assert r.untagged in (
            ['* LIST (\\HasNoChildren) "/" "Entwürfe"'],
            ['* LIST (\\HasNoChildren) "/" {9}\r\nEntwürfe'],
        ), r


# --- two sessions: EXPUNGE, IDLE -----------------------------------------------------------------


def test_expunge_is_seen_by_another_session(imap_server):
    acct = new_account(imap_server, "expunge")
    deliver(imap_server, acct.address, simple("ex-1"), simple("ex-2"), simple("ex-3"))
    with raw_imaps(imap_server, acct) as a, raw_imaps(imap_server, acct) as b:
        a.ok("SELECT INBOX")
        assert select_info(b.ok("SELECT INBOX"))["EXISTS"] == "3"
        r = a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        r = a.ok("EXPUNGE")
        assert r.untagged == ["* 2 EXPUNGE"]
        # During a FETCH (not UID FETCH) no EXPUNGE may be sent (RFC 3501 7.4.1).
        r = b.ok("FETCH 1:3 (UID)")
        assert not any("EXPUNGE" in x for x in r.untagged), r
        assert "* 2 FETCH (UID 2)" in r.untagged
        # The expunged message's content is still served to the session that
        # has not synced yet (the store keeps a released file readable for
        # a grace period; RFC 2180 4.1.3), as Dovecot does, not NO
        # [EXPUNGEISSUED].
        r = b.ok("FETCH 2 (BODY.PEEK[])")
        assert len(r.untagged) == 1 and "ex-2" in r.untagged[0], r
        # At the next NOOP session B learns of it.
        r = b.ok("NOOP")
        assert "* 2 EXPUNGE" in r.untagged, r
        assert all(x in ("* 2 EXPUNGE", "* 2 EXISTS") for x in r.untagged), r
        r = b.ok("FETCH 1:* (UID)")
        assert r.untagged == ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)"]
        assert b.cmd("FETCH 3 (UID)").status == "BAD"


def test_mailbox_deleted_under_a_session_bye_closes(imap_server):
    acct = new_account(imap_server, "gone")
    with raw_imaps(imap_server, acct) as a, raw_imaps(imap_server, acct) as b:
        a.ok("CREATE Gone")
        b.ok("SELECT Gone")
        a.ok("DELETE Gone")
        t = b.tag()
        b.send(f"{t} NOOP\r\n")
        first = b.response()
        assert first.startswith("* BYE"), first
        # After BYE the server closes the connection (a tagged reply may precede it).
        rest = b.buf
        b.sock.settimeout(3)
        try:
            while chunk := b.sock.recv(4096):
                rest += chunk
        except socket.timeout:
            raise AssertionError(f"connection still open 3 s after BYE; then got {rest!r}")


def test_idle_reports_new_mail_without_polling(imap_server):
    acct = new_account(imap_server, "idle")
    deliver(imap_server, acct.address, simple("idle-0"))
    with raw_imaps(imap_server, acct) as b:
        b.ok("SELECT INBOX")
        t = b.tag()
        b.send(f"{t} IDLE\r\n")
        assert b.response().startswith("+ "), "no continuation for IDLE"
        # Another client delivers; B, sending nothing, is told.
        deliver(imap_server, acct.address, simple("idle-1"))
        assert b.response(timeout=10) == "* 2 EXISTS"
        # B holds the mailbox: the new message is \\Recent in B (RFC 3501 2.3.2).
        assert b.response(timeout=10) == "* 2 RECENT"
        # ...and an APPEND by another session, too.
        m = imaps(imap_server, acct)
        try:
            assert m.append("INBOX", None, None, simple("idle-2"))[0] == "OK"
        finally:
            close(m)
        assert b.response(timeout=10) == "* 3 EXISTS"
        assert b.response(timeout=10) == "* 3 RECENT"
        b.send("DONE\r\n")
        r = b.read_until_tagged(t)
        assert r.status == "OK" and r.untagged == [], r
    m = imaps(imap_server, acct)
    try:
        assert m.select("INBOX", readonly=True) == ("OK", [b"3"])
        typ, data = m.fetch("2:3", "(BODY.PEEK[])")
        got = fetch_literals(data)
        assert split_stored(got[0]).body == simple("idle-1")
        assert got[1] == simple("idle-2")
    finally:
        close(m)


# --- quotas ----------------------------------------------------------------------------------------


def test_quota_getquotaroot_append_and_smtp(imap_server):
    acct = new_account(imap_server, "quota")
    out = imap_server.mx("mailbox", "quota", acct.address, "10K").decode()
    assert out == f"{acct.address}\tused=0\tmail=0\tcontacts=0\tquota=10240\n"
    small = simple("q-1", "x" * 3000 + "\r\n")  # about 3 KiB stored
    deliver(imap_server, acct.address, small)
    used = len(imap_server.cat(acct.address, 1))
    m = imaps(imap_server, acct)
    try:
        typ, data = m.getquotaroot("INBOX")
        assert typ == "OK"
        # RFC 9208: STORAGE in units of 1024 octets.
        assert data == [[b'INBOX ""'], [f'"" (STORAGE {-(-used // 1024)} 10)'.encode()]]
        typ, data = m.getquota('""')
        assert data == [f'"" (STORAGE {-(-used // 1024)} 10)'.encode()]
        # An APPEND that would go over: NO [OVERQUOTA] (RFC 9208 4.3 / RFC 5530).
        big = simple("q-2", ("y" * 998 + "\r\n") * 8)  # about 8 KiB
        typ, data = m.append("INBOX", None, None, big)
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    finally:
        close(m)
    # SMTP: a message that does not fit now is a temporary failure (mailbox
    # full, 452 4.2.2); one larger than the whole quota a permanent one (552 5.2.3).
    with smtplib.SMTP(HOST, imap_server.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail(SENDER, [acct.address], big)
        assert (e.value.smtp_code, e.value.smtp_error) == (452, b"4.2.2 Mailbox full, try again later")
    huge = simple("q-3", ("z" * 998 + "\r\n") * 11)  # over 10 KiB
    with smtplib.SMTP(HOST, imap_server.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail(SENDER, [acct.address], huge)
        assert e.value.smtp_code == 552 and e.value.smtp_error.startswith(b"5.2.3 "), e.value
    assert imap_server.mx("mailbox", "quota", acct.address).decode() == \
        f"{acct.address}\tused={used}\tmail={used}\tcontacts=0\tquota=10240\n"
    assert len(imap_server.inbox(acct.address)) == 1


def test_the_quota_counts_the_address_book(imap_server):
    """One number for mail and contacts (issue 10): a contact's photo added
    over LDAP shows in GETQUOTA and leaves less room for mail."""
    acct = new_account(imap_server, "abquota")
    imap_server.mx("mailbox", "quota", acct.address, "64K")
    imap_server.mx("ldap", "passwd", acct.address, "--password", "ab-ldap")
    tls = ldap3.Tls(validate=ssl.CERT_NONE)
    server = ldap3.Server(HOST, port=imap_server.ldaps_port, use_ssl=True, tls=tls)
    c = ldap3.Connection(
        server, user=f"cn={acct.address},ou=auth,dc=example,dc=net", password="ab-ldap",
        raise_exceptions=False, auto_bind=ldap3.AUTO_BIND_NONE,
    )
    c.open()
    assert c.bind(), c.result
    try:
        dn = f"cn=Pic,ou={acct.address},ou=ab,dc=example,dc=net"
        photo = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(range(256)) * 160  # 40 KiB
        assert c.add(dn, attributes={
            "objectClass": ["top", "person", "inetOrgPerson"], "cn": "Pic", "sn": "Pic", "jpegPhoto": photo,
        }), c.result
    finally:
        c.unbind()
    fields = dict(f.split("=", 1) for f in imap_server.mx("mailbox", "quota", acct.address).decode().split("\t")[1:])
    contacts = int(fields["contacts"])
    assert int(fields["mail"]) == 0 and int(fields["used"]) == contacts
    assert 40 * 1024 * 4 // 3 < contacts < 60 * 1024, contacts
    m = imaps(imap_server, acct)
    try:
        typ, data = m.getquota('""')
        assert typ == "OK" and data == [f'"" (STORAGE {-(-contacts // 1024)} 64)'.encode()], data
    finally:
        close(m)
    # 20 KiB of mail fits 64 KiB alone, not beside the contacts: 452 4.2.2.
    mail = simple("ab-1", ("m" * 998 + "\r\n") * 20)
    with smtplib.SMTP(HOST, imap_server.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail(SENDER, [acct.address], mail)
        assert (e.value.smtp_code, e.value.smtp_error) == (452, b"4.2.2 Mailbox full, try again later")
    assert imap_server.inbox(acct.address) == []


# --- bad input, limits ------------------------------------------------------------------------------


def test_bad_commands_and_the_literal_limit(imap_server):
    acct = new_account(imap_server, "bad")
    deliver(imap_server, acct.address, simple("bad-1"))
    with raw_imaps(imap_server, acct) as c:
        r = c.cmd("FROBNICATE now")
        assert r.status == "BAD", r
        c.ok("SELECT INBOX")
        assert c.cmd("FETCH 0 FLAGS").status == "BAD"
        assert c.cmd("FETCH 99 FLAGS").status == "BAD"
        assert c.cmd("FETCH 1 (FLAGS").status == "BAD"
        assert c.cmd("FETCH 1 NOTANITEM").status == "BAD"
        assert c.ok("UID FETCH 99 FLAGS").untagged == []  # no such UID: nothing, OK
        # A synchronizing literal over imap.max_literal_bytes is refused
        # before the client sends it: no "+", a tagged NO [TOOBIG].
        too_big = IMAP_LIMITS["max_literal_bytes"] + 1
        t = c.tag()
        c.send(f"{t} APPEND INBOX {{{too_big}}}\r\n")
        r = c.response()
        assert r.startswith(f"{t} NO [TOOBIG]"), r
        # The session goes on; one at the limit is accepted ("+" then the data).
        assert c.ok("NOOP").tagged.startswith("OK")
        at_limit = IMAP_LIMITS["max_literal_bytes"]
        t = c.tag()
        c.send(f"{t} APPEND INBOX {{{at_limit}}}\r\n")
        assert c.response().startswith("+ ")
        body = b"Subject: big\r\n\r\n" + b"a" * (at_limit - 18) + b"\r\n"
        assert len(body) == at_limit
        c.send(body + b"\r\n")
        r = c.read_until_tagged(t)
        assert r.status == "OK" and r.code.startswith("APPENDUID"), r
        # A non-synchronizing one (LITERAL+) over the limit: the client is
        # already sending, so NO [TOOBIG] and the connection ends with BYE.
        t = c.tag()
        c.send(f"{t} APPEND INBOX {{{too_big}+}}\r\nSubject: x\r\n")
        assert c.response().startswith(f"{t} NO [TOOBIG]")
        assert c.response().startswith("* BYE")
        c.expect_closed()


def test_wrong_passwords_then_locked_out(make_imap_server):
    server = make_imap_server()
    acct = new_account(server, "lock")
    for _ in range(3):
        m = imaps(server)
        try:
            with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
                m.login(acct.address, "wrong-password")
        finally:
            close(m)
    # The limit is reached: even the right password is refused for now.
    m = imaps(server)
    try:
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            m.login(acct.address, acct.password)
    finally:
        close(m)
    with Imap(server.imap_port) as c:
        c.starttls()
        r = c.cmd(f'LOGIN "{acct.address}" "{acct.password}"')
        assert (r.status, r.code) == ("NO", "UNAVAILABLE"), r


def vm_rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_concurrent_logins_do_not_keep_growing_memory(make_imap_server):
    import threading

    # 20 logins at once for one mailbox from one address: the pair budget
    # counts attempts in flight, so it is raised here (this test is about
    # memory; the budget is tested in test_auth.py).
    server = make_imap_server(auth={"pair_attempts_max": 100})
    acct = new_account(server, "mem")
    pid = server.proc.pid

    def round_of_logins(n: int = 20):
        errors = []

        def one():
            try:
                close(imaps(server, acct))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

    round_of_logins()
    warm = vm_rss_mib(pid)
    round_of_logins()
    round_of_logins()
    grown = vm_rss_mib(pid) - warm
    assert grown < 100, f"RSS grew by {grown} MiB over 40 more logins (from {warm} MiB)"


# --- curl ---------------------------------------------------------------------------------------


def test_curl_fetch_by_uid_and_uid_search(imap_server):
    acct = new_account(imap_server, "curl")
    sent = [simple("curl-1"), MULTI]
    deliver(imap_server, acct.address, *sent)
    stored = imap_server.cat(acct.address, 1)
    # imap:// with STARTTLS required.
    r = subprocess.run(
        [
            "curl", "-s", "-S", "-k", "--ssl-reqd", "--max-time", "20",
            "-u", f"{acct.address}:{acct.password}",
            f"imap://{HOST}:{imap_server.imap_port}/INBOX;UID=1",
        ],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == stored
    assert split_stored(r.stdout).body == sent[0]
    r = subprocess.run(
        [
            "curl", "-s", "-S", "-k", "--max-time", "20",
            "-u", f"{acct.address}:{acct.password}",
            f"imaps://{HOST}:{imap_server.imaps_port}/INBOX;UID=2",
        ],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert split_stored(r.stdout).body == MULTI
    r = subprocess.run(
        [
            "curl", "-s", "-S", "-k", "--max-time", "20",
            "-u", f"{acct.address}:{acct.password}",
            f"imaps://{HOST}:{imap_server.imaps_port}/INBOX",
            "-X", "UID SEARCH ALL",
        ],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"* SEARCH 1 2\r\n"
    # Without TLS curl's LOGIN is refused (LOGINDISABLED): curl fails.
    r = subprocess.run(
        [
            "curl", "-s", "--max-time", "20",
            "-u", f"{acct.address}:{acct.password}",
            f"imap://{HOST}:{imap_server.imap_port}/INBOX;UID=1",
        ],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode != 0 and r.stdout == b""
