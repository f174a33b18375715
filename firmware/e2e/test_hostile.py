"""Hostile inputs (issue 10): messages, commands and patterns anyone can send
that used to crash or freeze the whole appliance. Each test sends one to the
real binary with real clients (smtplib, a line-level IMAP client, raw
sockets), then checks that the server still answers on its ports and that a
legitimate message sent alongside arrives and can be read over IMAP.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
import threading
import time

import ldap3
import pytest

from mxlib import HOST, IO_TIMEOUT, Raw, insecure_tls
from test_imap import Imap, ImapServer, Reply, new_account, raw_imaps, simple

SENDER = "sender@example.org"


@pytest.fixture(scope="module")
def hostile_server():
    # Large enough for a 1.3 MB message nesting 40,000 levels.
    s = ImapServer(max_message_bytes=4_000_000)
    # The product's default: literals up to 50 MiB once logged in.
    s.imap_limits["max_literal_bytes"] = 50 * 1024 * 1024
    s.write_config()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


_legit = [0]


def assert_alive(server: ImapServer):
    """Every port answers, and a legitimate message is delivered and read."""
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    _legit[0] += 1
    tag = f"legit-{_legit[0]}"
    acct = new_account(server, "legit")
    with smtplib.SMTP(HOST, server.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT) as s:
        assert s.sendmail(SENDER, [acct.address], simple(tag)) == {}
    with smtplib.SMTP(HOST, server.submission_port, timeout=IO_TIMEOUT) as s:
        assert s.ehlo()[0] == 250
    with socket.create_connection((HOST, server.pop3_port), timeout=IO_TIMEOUT) as p:
        assert p.recv(100).startswith(b"+OK")
    with Imap(server.imap_port) as c:
        assert c.greeting.startswith("* OK")
    with raw_imaps(server, acct) as c:
        c.ok("SELECT INBOX")
        r = c.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert any(f"Subject: {tag}" in line for line in r.untagged), r


def send_raw_message(server: ImapServer, to: str, body: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA of `body` on the MX port: the reply after the dot."""
    with smtplib.SMTP(HOST, server.mx_port, local_hostname="e2e.test", timeout=60) as s:
        s.ehlo()
        assert s.mail(SENDER)[0] == 250
        code, _ = s.rcpt(to)
        assert code == 250
        return s.data(body)


def nested_rfc822(depth: int) -> bytes:
    head = b"From: <sender@example.org>\r\nSubject: deep\r\nMessage-ID: <deep@e2e.test>\r\n"
    return head + b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: bottom\r\n\r\nthe end\r\n"


# --- 1. MIME nesting -----------------------------------------------------------------


def test_forty_thousand_nested_messages_at_the_mx(hostile_server):
    acct = new_account(hostile_server, "deep40k")
    body = nested_rfc822(40_000)
    assert len(body) > 1_250_000
    code, _ = send_raw_message(hostile_server, acct.address, body)
    assert code == 250
    assert_alive(hostile_server)


def test_deeply_nested_message_over_imap(hostile_server):
    acct = new_account(hostile_server, "deep20k")
    code, _ = send_raw_message(hostile_server, acct.address, nested_rfc822(20_000))
    assert code == 250
    with raw_imaps(hostile_server, acct) as c:
        c.ok("SELECT INBOX")
        r = c.ok("UID FETCH 1 (BODYSTRUCTURE ENVELOPE)")
        text = "\n".join(r.untagged)
        assert text.count('"MESSAGE" "RFC822"') == 31, text[:500]
        assert '"APPLICATION" "OCTET-STREAM"' in text
        assert '"deep"' in text
        r = c.ok("UID FETCH 1 (BODY.PEEK[" + ".".join(["1"] * 31) + "])")
        assert "the end" in "\n".join(r.untagged)
        r = c.ok("UID SEARCH BODY bottom")
        assert r.untagged == ["* SEARCH"] or r.untagged[0].startswith("* SEARCH")
        r = c.ok("UID SEARCH SUBJECT deep")
        assert r.untagged[0].split()[2:] == ["1"], r
    assert_alive(hostile_server)


def test_deep_multipart_and_many_parts(hostile_server):
    acct = new_account(hostile_server, "parts")
    deep = b"From: <sender@example.org>\r\nSubject: multipart\r\n"
    for i in range(5_000):
        deep += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
    deep += b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    many = b'From: <sender@example.org>\r\nSubject: many\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n'
    many += b"--p\r\n\r\nx\r\n" * 20_000 + b"--p--\r\n"
    for body in (deep, many):
        code, _ = send_raw_message(hostile_server, acct.address, body)
        assert code == 250
    with raw_imaps(hostile_server, acct) as c:
        c.ok("SELECT INBOX")
        r = c.ok("UID FETCH 1:2 (BODYSTRUCTURE)")
        assert len(r.untagged) >= 2
        c.ok("UID SEARCH TEXT leaf")
    assert_alive(hostile_server)


# --- 2. LIST patterns ----------------------------------------------------------------


def test_list_pattern_bombs(hostile_server):
    acct = new_account(hostile_server, "list")
    stars = b"*" * 60_000 + b"x"
    pairs = b"%*" * 100 + b"x"
    with raw_imaps(hostile_server, acct) as c, raw_imaps(hostile_server, acct) as d:
        started = time.monotonic()
        # As a literal: the pattern is longer than a command line.
        t = c.tag()
        c.send(f'{t} LIST "" {{{len(stars)}}}\r\n'.encode())
        assert c.response().startswith("+")
        c.send(stars + b"\r\n")
        r = c.read_until_tagged(t)
        assert r.status == "OK" and r.untagged == [], r
        # Two sessions at once, as in the report: both answer, and quickly.
        for conn in (c, d):
            conn.send(f'{conn.tag()} LIST "" "{pairs.decode()}"\r\n'.encode())
        for conn in (c, d):
            r = conn.read_until_tagged(f"t{conn.n}")
            assert r.status == "OK" and r.untagged == [], r
        r = c.ok(f'LSUB "" "{pairs.decode()}"')
        r = c.ok('LIST "" "%*%*%"')
        assert any("INBOX" in line for line in r.untagged), r
        assert time.monotonic() - started < 10
    assert_alive(hostile_server)


# --- 3. byte slicing of strings --------------------------------------------------------


def test_non_ascii_headers_and_folder_names(hostile_server):
    acct = new_account(hostile_server, "utf8")
    body = (
        "From: <sender@example.org>\r\n"
        "Subject: aé test\r\n"
        "Message-ID: <utf8@e2e.test>\r\n"
        "\r\n"
        "body\r\n"
    ).encode()
    code, _ = send_raw_message(hostile_server, acct.address, body)
    assert code == 250
    with raw_imaps(hostile_server, acct) as c:
        c.ok("SELECT INBOX")
        r = c.ok("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert "<utf8@e2e.test>" in "\n".join(r.untagged)
        # "abcdeé" (modified UTF-7): byte 6 of the name is inside "é".
        for name in ("abcde&AOk-", "abcde&AOk-/x", "inbox&AOk-"):
            c.ok(f'CREATE "{name}"')
        r = c.ok('LIST "" "abcde*"')
        assert len(r.untagged) == 2, r
    assert_alive(hostile_server)


# --- 4. literals before authentication ---------------------------------------------------


def rss_kib(server: ImapServer) -> int:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_literal_bombs_before_login(hostile_server):
    before = rss_kib(hostile_server)
    with Imap(hostile_server.imap_port) as c:
        caps = c.cmd("CAPABILITY").untagged[0]
        assert " LITERAL- " in caps and "LITERAL+" not in caps, caps
        # Synchronizing: refused before the "+", the session goes on.
        c.send("a LOGIN {50000000}\r\n")
        r = c.response()
        assert r.startswith("a NO [TOOBIG]"), r
        assert c.cmd("NOOP").status == "OK"
    # Non-synchronizing, from many connections that start sending at once:
    # BAD [TOOBIG], BYE, closed; nothing of it is buffered.
    socks = []
    for _ in range(40):
        s = socket.create_connection((HOST, hostile_server.imap_port), timeout=IO_TIMEOUT)
        socks.append(s)
    chunk = b"x" * (256 * 1024)
    for s in socks:
        assert s.recv(4096).startswith(b"* OK")
        s.sendall(b"a LOGIN {50000000+}\r\n")
        try:
            for _ in range(8):
                s.sendall(chunk)
        except OSError:
            pass  # the server closed: what is expected
    for s in socks:
        data = b""
        try:
            while True:
                got = s.recv(65536)
                if not got:
                    break
                data += got
        except ConnectionResetError:
            pass
        assert data.startswith(b"a BAD [TOOBIG]"), data[:200]
        assert b"* BYE" in data
        s.close()
    grown = rss_kib(hostile_server) - before
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB"
    assert_alive(hostile_server)


# --- 5. long lines in DATA ------------------------------------------------------------------


def test_long_body_lines_are_stored_not_bounced(hostile_server):
    acct = new_account(hostile_server, "long")
    html = b"<html><body>" + b"<p>unwrapped newsletter</p>" * 20_000 + b"</body></html>"
    body = (
        b"From: <news@example.org>\r\nSubject: newsletter\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html + b"\r\n"
    )
    assert len(html) > 500_000
    with smtplib.SMTP(HOST, hostile_server.mx_port, local_hostname="e2e.test", timeout=60) as s:
        assert s.sendmail(SENDER, [acct.address], body) == {}
        # The size limit still holds for one enormous line.
        s.ehlo()
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(acct.address)[0] == 250
        code, _ = s.data(b"Subject: huge\r\n\r\n" + b"z" * 4_100_000 + b"\r\n")
        assert code == 552
    with raw_imaps(hostile_server, acct) as c:
        c.ok("SELECT INBOX")
        r = c.ok("UID FETCH 1:* (RFC822.SIZE BODY.PEEK[TEXT])")
        text = "\n".join(r.untagged)
        assert html.decode() in text
        assert len(r.untagged) == 1
    assert_alive(hostile_server)


# --- recursive matchers elsewhere: LDAP filters --------------------------------------------


def _ber(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 128:
        return bytes([tag, n]) + value
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(b)]) + b + value


def test_deeply_nested_ldap_filter(hostile_server):
    # (!(!(!...(cn=*)...))) 40,000 deep, in one 180 KB SearchRequest: refused
    # as undecodable (the filter decoder is depth-bounded), never recursed.
    f = _ber(0x87, b"cn")
    for _ in range(40_000):
        f = _ber(0xA2, f)
    req = (
        _ber(0x04, b"") + _ber(0x0A, b"\x00") + _ber(0x0A, b"\x00") + _ber(0x02, b"\x00")
        + _ber(0x02, b"\x00") + _ber(0x01, b"\x00") + f + _ber(0x30, b"")
    )
    msg = _ber(0x30, _ber(0x02, b"\x01") + _ber(0x63, req))
    with socket.create_connection((HOST, hostile_server.ldap_port), timeout=IO_TIMEOUT) as s:
        s.sendall(msg)
        reply = s.recv(4096)
        assert reply.startswith(b"0") and b"could not be decoded" in reply, reply
    assert_alive(hostile_server)


# --- 8. Connection pools, per-client caps, refusals inside TLS ------------------------

LDAP_NOTICE_OID = b"1.3.6.1.4.1.1466.20036"


def tls_socket(port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    return insecure_tls().wrap_socket(raw, server_hostname="mx.test.example")


def read_until_closed(sock: socket.socket) -> bytes:
    got = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        got += chunk
    return got


def first_line(sock: socket.socket) -> bytes:
    got = b""
    while b"\n" not in got:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture
def capped_server():
    """Small pools and per-client caps on every service."""
    s = ImapServer(max_connections=6, max_connections_per_client=3)
    s.imap_limits["max_connections_per_client"] = 2
    s.pop3_limits["max_connections_per_client"] = 2
    s.ldap_limits["max_connections_per_client"] = 2
    s.write_config()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


def test_per_client_cap_and_refusals_inside_tls_on_every_service(capped_server):
    s = capped_server
    held: list[socket.socket] = []
    try:
        # SMTP MX: 3 from 127.0.0.1, the 4th gets 421 4.7.0 and is closed.
        for _ in range(3):
            c = socket.create_connection((HOST, s.mx_port), timeout=IO_TIMEOUT)
            assert first_line(c).startswith(b"220 "), "a session within the cap"
            held.append(c)
        with socket.create_connection((HOST, s.mx_port), timeout=IO_TIMEOUT) as c:
            assert read_until_closed(c).startswith(b"421 4.7.0 ")
        # Port 465 over the per-client cap: the refusal comes inside TLS.
        for _ in range(3):
            c = tls_socket(s.submissions_port)
            assert first_line(c).startswith(b"220 ")
            held.append(c)
        with tls_socket(s.submissions_port) as c:
            assert read_until_closed(c).startswith(b"421 4.7.0 ")
        # Submission (587) is a pool of its own: still served.
        with smtplib.SMTP(HOST, s.submission_port, timeout=IO_TIMEOUT) as c:
            assert c.ehlo()[0] == 250
        # IMAPS: 2, then * BYE [UNAVAILABLE] inside TLS.
        for _ in range(2):
            c = tls_socket(s.imaps_port)
            assert first_line(c).startswith(b"* OK")
            held.append(c)
        with tls_socket(s.imaps_port) as c:
            assert read_until_closed(c).startswith(b"* BYE [UNAVAILABLE]")
        # POP3S: 2, then -ERR [SYS/TEMP] inside TLS.
        for _ in range(2):
            c = tls_socket(s.pop3s_port)
            assert first_line(c).startswith(b"+OK")
            held.append(c)
        with tls_socket(s.pop3s_port) as c:
            assert read_until_closed(c).startswith(b"-ERR [SYS/TEMP]")
        # LDAPS: 2 idle connections, then a notice of disconnection (busy, 51)
        # inside TLS.
        for _ in range(2):
            held.append(tls_socket(s.ldaps_port))
        time.sleep(0.5)  # let the server count the idle TLS connections
        with tls_socket(s.ldaps_port) as c:
            notice = read_until_closed(c)
        assert LDAP_NOTICE_OID in notice, notice
        assert b"\x0a\x01\x33" in notice, f"resultCode busy (51): {notice!r}"
        # Plain ports of IMAP and POP3 have their own pools.
        with socket.create_connection((HOST, s.imap_port), timeout=IO_TIMEOUT) as c:
            assert first_line(c).startswith(b"* OK")
        with socket.create_connection((HOST, s.pop3_port), timeout=IO_TIMEOUT) as c:
            assert first_line(c).startswith(b"+OK")
    finally:
        for c in held:
            c.close()
    # Places come back once the sessions end.
    for _ in range(100):
        try:
            with socket.create_connection((HOST, s.mx_port), timeout=IO_TIMEOUT) as c:
                if first_line(c).startswith(b"220 "):
                    break
        except OSError:
            pass
        time.sleep(0.05)
    time.sleep(0.5)
    assert_alive(s)


def test_an_mx_flood_does_not_starve_submission(capped_server):
    """More connections to port 25 than its pool holds, from one address:
    submission on 587 and 465 is still served and mail is delivered."""
    s = capped_server
    held = []
    try:
        for _ in range(10):
            c = socket.create_connection((HOST, s.mx_port), timeout=IO_TIMEOUT)
            held.append(c)
        with smtplib.SMTP(HOST, s.submission_port, timeout=IO_TIMEOUT) as c:
            assert c.ehlo()[0] == 250
        with Raw(s.submissions_port, tls=True) as c:
            assert c.reply().last.startswith("220 ")
    finally:
        for c in held:
            c.close()
    time.sleep(0.5)
    assert_alive(s)


# --- 9. Slow clients: deadlines per command and per phase -----------------------------


@pytest.fixture
def slow_server():
    """Short deadlines (the minimum allowed, 10 s) so slow clients are cut fast."""
    s = ImapServer(command_timeout_secs=10, envelope_timeout_secs=10, login_timeout_secs=10)
    s.imap_limits["login_timeout_secs"] = 10
    s.pop3_limits["login_timeout_secs"] = 10
    s.pop3_limits["command_timeout_secs"] = 10
    s.ldap_limits["command_timeout_secs"] = 10
    s.write_config()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


def slow_client(port: int, tls: bool, chunks: list[bytes], pause: float, out: dict, key: str):
    """Sends `chunks` over and over, one every `pause` seconds, until the
    server closes; records how long the connection lived."""
    start = time.monotonic()
    sock = tls_socket(port) if tls else socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.settimeout(pause)
    i = 0
    try:
        while time.monotonic() - start < 60:
            try:
                sock.sendall(chunks[i % len(chunks)])
            except OSError:
                break
            i += 1
            end = time.monotonic() + pause
            closed = False
            while time.monotonic() < end:
                try:
                    data = sock.recv(4096)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                except OSError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
            if closed:
                break
    finally:
        out[key] = time.monotonic() - start
        sock.close()


def test_slow_clients_are_cut_at_the_command_and_phase_deadlines(slow_server):
    """One byte every 2 s of a command line, or a whole line every 2 s
    forever: each is cut at its 10 s deadline (they used to hold the
    session as long as each line came within the 30 s idle timeout), and
    mail sent alongside arrives."""
    s = slow_server
    noop = [b"NOOP\r\n"]
    cases = {
        # A command line trickled byte by byte: the command deadline.
        "mx-bytes": (s.mx_port, False, [bytes([b]) for b in b"EHLO slow.example\r\n"]),
        # Whole lines, slowly: the envelope phase (MX) and login phases.
        "mx-lines": (s.mx_port, False, [b"EHLO slow.example\r\n"] + noop),
        "submission-before-starttls": (s.submission_port, False, [b"EHLO slow.example\r\n"] + noop),
        "submissions-before-auth": (s.submissions_port, True, [b"EHLO slow.example\r\n"] + noop),
        "pop3-bytes": (s.pop3_port, False, [bytes([b]) for b in b"CAPA\r\n"]),
        "pop3-lines": (s.pop3_port, False, [b"CAPA\r\n"]),
        "imap-lines": (s.imap_port, False, [b"a NOOP\r\n"]),
        "imaps-literal": (s.imaps_port, True, [b"a NOOP\r\n", b"b LOGIN {40}\r\n"] + [b"x"] * 40),
        # An LDAP bind trickled byte by byte (the idle timeout is 300 s):
        # the message deadline, from its first byte.
        "ldap-bytes": (
            s.ldap_port,
            False,
            [bytes([b]) for b in ldap_msg(1, ber(0x60, ber(0x02, b"\x03") + ber(0x04, b"cn=slow,dc=example,dc=net") + ber(0x80, b"secret")))],
        ),
    }
    out: dict[str, float] = {}
    threads = [
        threading.Thread(target=slow_client, args=(port, tls, chunks, 2.0, out, key))
        for key, (port, tls, chunks) in cases.items()
    ]
    for t in threads:
        t.start()
    # Legitimate mail while the slow clients hold their sessions.
    assert_alive(s)
    for t in threads:
        t.join(90)
    for key in cases:
        assert key in out, f"{key}: no result"
        assert out[key] <= 14, f"{key}: held for {out[key]:.1f}s, deadline 10 s"
    assert_alive(s)


# --- 10. LDAP search results streamed, not built whole --------------------------------


def ber(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(size)]) + size
    return bytes([tag]) + head + body


def ldap_msg(msgid: int, op: bytes) -> bytes:
    return ber(0x30, ber(0x02, bytes([msgid])) + op)


def test_four_full_searches_of_a_large_book_do_not_each_hold_the_book(make_server):
    """300 contacts with 120 KiB photos (36 MiB): four clients search the
    whole book and do not read. The results used to be built whole in
    memory for each search (4 x 36 MiB); now at most a few entries per
    connection are in flight."""
    s = make_server()
    s.ldap_limits["allow_plaintext_bind"] = True
    s.stop()
    s.write_config()
    s.start()
    s.add_domain("acme.example", "acme")
    s.add_mailbox("jo@acme.example", "jo-mail")
    s.mx("ldap", "passwd", "jo@acme.example", input=b"jo-ldap\n")
    base = "dc=example,dc=net"
    mine = f"ou=jo@acme.example,ou=ab,{base}"
    who = f"cn=jo@acme.example,ou=auth,{base}"
    server = ldap3.Server(HOST, port=s.ldap_port)
    c = ldap3.Connection(server, user=who, password="jo-ldap", auto_bind=True)
    photo = os.urandom(120 * 1024)
    for i in range(300):
        assert c.add(f"cn=P{i:03},{mine}", attributes={
            "objectClass": ["inetOrgPerson"], "cn": f"P{i:03}", "sn": "P", "jpegPhoto": photo,
        }), c.result
    # One full search first: the book is decoded into the server's cache once.
    assert c.search(mine, "(objectClass=*)", search_scope=ldap3.LEVEL, attributes=["*"])
    assert len(c.entries) == 300
    c.unbind()
    before = rss_kib(s)
    bind = ldap_msg(1, ber(0x60, ber(0x02, b"\x03") + ber(0x04, who.encode()) + ber(0x80, b"jo-ldap")))
    search = ldap_msg(2, ber(0x63, ber(0x04, mine.encode()) + b"\x0a\x01\x01\x0a\x01\x00"
                             + b"\x02\x01\x00\x02\x01\x00\x01\x01\x00" + ber(0x87, b"objectClass")
                             + ber(0x30, b"")))
    socks = []
    try:
        for _ in range(4):
            sock = socket.create_connection((HOST, s.ldap_port), timeout=IO_TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(bind)
            assert b"\x61" in sock.recv(4096), "bind response"
            sock.sendall(search)  # and never read the results
            socks.append(sock)
        time.sleep(3)
        grown_mib = (rss_kib(s) - before) / 1024
        assert grown_mib < 36, f"RSS grew {grown_mib:.0f} MiB for 4 searches of a 36 MiB book"
        # The searches run: entries wait in the sockets.
        first = socks[0].recv(4096)
        assert first[:1] == b"\x30" and b"\x64" in first[:16], first[:16]
        # The other services still answer meanwhile.
        assert_alive_basic(s)
    finally:
        for sock in socks:
            sock.close()


def assert_alive_basic(s):
    with smtplib.SMTP(HOST, s.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT) as c:
        assert c.ehlo()[0] == 250
    with socket.create_connection((HOST, s.pop3_port), timeout=IO_TIMEOUT) as p:
        assert p.recv(100).startswith(b"+OK")


# --- 9. IMAP extensions: SORT, THREAD, MULTIAPPEND, CATENATE, NOTIFY, BINARY, SEARCHRES ----


def multiappend(c: Imap, mailbox: str, messages: list[bytes]) -> Reply:
    """One APPEND of all `messages` (MULTIAPPEND, RFC 3502), each as a
    non-synchronizing literal (LITERAL+), sent at once."""
    t = c.tag()
    cmd = f"{t} APPEND {mailbox}".encode()
    for m in messages:
        cmd += f" {{{len(m)}+}}\r\n".encode() + m
    c.send(cmd + b"\r\n")
    return c.read_until_tagged(t)


def chain_message(i: int) -> bytes:
    """Message i of a reference chain with a side branch at every level:
    even ones form the chain (c0 <- c1 <- ...), each odd one answers the
    chain message before it, so every chain message has two children and
    the thread tree is 2,500 levels deep."""
    k = i // 2
    if i % 2 == 0:
        mid, parent = f"c{k}", (f"c{k - 1}" if k else None)
    else:
        mid, parent = f"l{k}", f"c{k}"
    refs = f"References: <{parent}@chain.test>\r\nIn-Reply-To: <{parent}@chain.test>\r\n" if parent else ""
    return (
        f"From: <sender@example.org>\r\nSubject: {'Re: ' if parent else ''}chain\r\n"
        f"Message-ID: <{mid}@chain.test>\r\n{refs}"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(1_600_000_000 + i * 60))}\r\n"
        f"\r\nlink {i}\r\n"
    ).encode()


def nesting(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def test_thread_and_sort_of_a_five_thousand_message_reference_chain(hostile_server):
    """5,000 messages linked by References: THREAD REFERENCES builds one
    thread 2,500 levels deep. The output nests at most THREAD_DEPTH_MAX (64) deep,
    the server's memory stays within bounds, and the session goes on."""
    acct = new_account(hostile_server, "chain")
    n = 5_000
    with raw_imaps(hostile_server, acct) as c:
        for start in range(0, n, 1_000):
            r = multiappend(c, "INBOX", [chain_message(i) for i in range(start, start + 1_000)])
            assert r.status == "OK", r
        c.ok("SELECT INBOX")
        before = rss_kib(hostile_server)
        started = time.monotonic()
        r = c.ok("THREAD REFERENCES UTF-8 ALL")
        (line,) = r.untagged
        assert line.startswith("* THREAD (1 (2)(3 (4)(5 (6)"), line[:80]
        assert len(re.findall(r"\d+", line)) == n
        # One thread, nested THREAD_DEPTH_MAX deep, then flat.
        assert 60 < nesting(line) <= 66, nesting(line)
        r = c.ok("THREAD ORDEREDSUBJECT UTF-8 ALL")
        (line,) = r.untagged
        assert len(re.findall(r"\d+", line)) == n
        r = c.ok("SORT (REVERSE DATE) UTF-8 ALL")
        assert r.untagged == ["* SORT " + " ".join(str(i) for i in range(n, 0, -1))]
        r = c.ok("UID SORT RETURN (MIN MAX COUNT) (SUBJECT ARRIVAL) UTF-8 ALL")
        assert r.untagged[0].endswith(f"UID MIN 1 MAX {n} COUNT {n}"), r
        assert time.monotonic() - started < 120
        # A few hundred bytes of keys per message, read one at a time.
        assert rss_kib(hostile_server) - before < 64 * 1024
        c.ok("NOOP")
    assert_alive(hostile_server)


def test_multiappend_past_its_message_limit(hostile_server):
    """RFC 3502 lets a server bound a MULTIAPPEND: 1,001 tiny messages get
    NO [LIMIT] (APPEND_MESSAGES_MAX = 1,000) and none is stored."""
    acct = new_account(hostile_server, "multi")
    tiny = [f"Subject: {i}\r\n\r\nx\r\n".encode() for i in range(1_001)]
    with raw_imaps(hostile_server, acct) as c:
        r = multiappend(c, "INBOX", tiny)
        assert r.status == "NO" and r.code == "LIMIT", r
        r = c.ok("STATUS INBOX (MESSAGES)")
        assert r.untagged == ["* STATUS INBOX (MESSAGES 0)"], r
        # At the limit it is one transaction, all stored.
        r = multiappend(c, "INBOX", tiny[:1_000])
        assert r.status == "OK" and r.code.startswith("APPENDUID ") and r.code.endswith(" 1:1000"), r
        # Synchronizing literals: the refusal comes instead of the "+".
        t = c.tag()
        cmd = f"{t} APPEND INBOX".encode()
        for m in tiny[:1_000]:
            cmd += f" {{{len(m)}+}}\r\n".encode() + m
        c.send(cmd + f" {{{len(tiny[0])}}}\r\n".encode())
        r = c.read_until_tagged(t)
        assert r.status == "NO" and r.code == "LIMIT", r
        r = c.ok("STATUS INBOX (MESSAGES)")
        assert r.untagged == ["* STATUS INBOX (MESSAGES 1000)"], r
    assert_alive(hostile_server)


def test_catenate_many_parts_and_urls_to_nothing(hostile_server):
    """CATENATE: more URL parts than CATENATE_PARTS_MAX (256) is NO [LIMIT];
    a URL naming the message being appended itself (the folder's UIDNEXT),
    a URL relative to no selected mailbox and one into another user's
    mailbox are NO [BADURL]; nothing is stored for any of them."""
    acct = new_account(hostile_server, "cat")
    with raw_imaps(hostile_server, acct) as c:
        r = multiappend(c, "INBOX", [b"Subject: part\r\n\r\nabc\r\n"])
        assert r.status == "OK", r
        url = ' URL "/INBOX/;UID=1"'
        r = c.cmd("APPEND INBOX CATENATE (" + (url * 257).strip() + ")")
        assert r.status == "NO" and r.code == "LIMIT", r
        r = c.ok("APPEND INBOX CATENATE (" + (url * 256).strip() + ")")
        assert r.code.endswith(" 2"), r
        for bad in ('"/INBOX/;UID=3"', '";UID=1"', '"imap://other@mx.e2e.test/INBOX/;UID=1"'):
            r = c.cmd(f"APPEND INBOX CATENATE (TEXT {{4+}}\r\nhead URL {bad})")
            assert r.status == "NO" and r.code.startswith("BADURL"), (bad, r)
        r = c.ok("STATUS INBOX (MESSAGES)")
        assert r.untagged == ["* STATUS INBOX (MESSAGES 2)"], r
        c.ok("SELECT INBOX")
        r = c.ok("FETCH 2 (RFC822.SIZE)")
        assert r.untagged == [f"* 2 FETCH (RFC822.SIZE {256 * 22})"], r
    assert_alive(hostile_server)


def test_notify_with_too_many_mailbox_names(hostile_server):
    """NOTIFY takes at most NOTIFY_MAILBOXES_MAX (100) names: 101 is a BAD
    naming the limit, 100 works, and the session goes on."""
    acct = new_account(hostile_server, "notify")
    names = " ".join(f"box{i}" for i in range(101))
    with raw_imaps(hostile_server, acct) as c:
        r = c.cmd(f"NOTIFY SET (mailboxes ({names}) (MessageNew MessageExpunge))")
        assert r.status == "BAD" and "[LIMIT]" in r.tagged, r
        names = " ".join(f"box{i}" for i in range(100))
        c.ok(f"NOTIFY SET (mailboxes ({names}) (MessageNew MessageExpunge))")
        c.ok("NOTIFY NONE")
        c.ok("NOOP")
    assert_alive(hostile_server)


def test_binary_fetch_of_malformed_base64(hostile_server):
    """FETCH BINARY of a part whose base64 is broken (stray characters,
    padding in the middle, a cut group) decodes it as readers do (RFC 2045
    6.8: characters outside the alphabet are ignored, padding ends the
    data); an encoding nobody knows is NO [UNKNOWN-CTE]; the session goes on."""
    acct = new_account(hostile_server, "b64")
    body = (
        b"From: <sender@example.org>\r\nSubject: b64\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"SGVs*!bG8\x01 gd2\r\n9y bGQ=ZZZZ\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJDR\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-rot13\r\n\r\nuryyb\r\n"
        b"--b--\r\n"
    )
    with raw_imaps(hostile_server, acct) as c:
        assert multiappend(c, "INBOX", [body]).status == "OK"
        c.ok("SELECT INBOX")
        r = c.ok("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2])")
        assert r.untagged == ["* 1 FETCH (BINARY[1] {11}\r\nHello world BINARY.SIZE[1] 11 BINARY[2] {3}\r\nABC)"], r
        r = c.cmd("FETCH 1 (BINARY.PEEK[3])")
        assert r.status == "NO" and r.code == "UNKNOWN-CTE", r
        r = c.ok("FETCH 1 (FLAGS)")
        assert "\\Seen" not in r.untagged[0], r
    assert_alive(hostile_server)


def test_searchres_dollar_with_no_saved_result(hostile_server):
    """`$` with nothing saved is the empty set (RFC 5182 2.1): every
    command that takes it answers as for no messages; outside a mailbox it
    is the usual state BAD."""
    acct = new_account(hostile_server, "dollar")
    with raw_imaps(hostile_server, acct) as c:
        assert c.cmd("FETCH $ (UID)").status == "BAD"
        assert multiappend(c, "INBOX", [b"Subject: one\r\n\r\nx\r\n"]).status == "OK"
        c.ok("SELECT INBOX")
        assert c.ok("FETCH $ (UID)").untagged == []
        assert c.ok("UID SEARCH UID $").untagged == ["* SEARCH"]
        assert c.ok("SORT (SUBJECT) UTF-8 $").untagged == ["* SORT"]
        assert c.ok("STORE $ +FLAGS (\\Deleted)").untagged == []
        assert c.ok("UID EXPUNGE $").untagged == []
        r = c.cmd("COPY $ Trash")
        assert r.status in ("OK", "NO"), r
        # A search that saves, then $ is that result.
        c.ok("SEARCH RETURN (SAVE) ALL")
        assert c.ok("FETCH $ (UID)").untagged == ["* 1 FETCH (UID 1)"]
        c.ok("NOOP")
    assert_alive(hostile_server)
