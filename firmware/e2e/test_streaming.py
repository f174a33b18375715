"""Messages go to disk as they arrive (issue 10): large messages by real
clients (smtplib, imaplib) come back byte for byte, an over-limit DATA gets
552 and the session goes on, and a client that goes away mid-DATA or
mid-APPEND leaves no file in msg/ and, after a restart, nothing in
lost+found/."""

from __future__ import annotations

import socket
import smtplib

import pytest

from mxlib import HOST, IO_TIMEOUT, Raw, deadline_loop, split_stored
from test_imap import ImapServer, close, imaps, new_account

SENDER = "sender@example.org"
MB = 1024 * 1024


def big_message(size: int, tag: str) -> bytes:
    """A message of `size` bytes, CRLF lines, some starting with a dot."""
    head = (
        f"From: <{SENDER}>\r\nTo: <x@example.net>\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@e2e.test>\r\n\r\n"
    ).encode()
    lines, n, total = [head], 0, len(head)
    while total < size:
        line = (f".{n} dotted line\r\n" if n % 5 == 0 else f"line {n} " + "x" * (n % 120) + "\r\n").encode()
        lines.append(line)
        total += len(line)
        n += 1
    body = b"".join(lines)[: size - 2] + b"\r\n"
    assert len(body) == size
    return body


@pytest.fixture(scope="module")
def srv():
    s = ImapServer(max_message_bytes=25 * MB)
    s.imap_limits["max_literal_bytes"] = 50 * MB
    s.write_config()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


def msg_files(s: ImapServer) -> list[str]:
    return sorted(p.name for p in (s.data / "msg").iterdir())


def wait_for_files(s: ImapServer, want: list[str], what: str):
    for _ in deadline_loop(10, what):
        if msg_files(s) == want:
            return


def test_a_20_mb_message_by_smtplib_arrives_byte_for_byte(srv):
    acct = new_account(srv, "big")
    body = big_message(20 * MB, "big-20mb")
    before = srv.uids(acct.address)
    with smtplib.SMTP(HOST, srv.mx_port, local_hostname="e2e.test", timeout=120) as s:
        assert s.sendmail(SENDER, [acct.address], body) == {}
    stored = srv.one_new_message(acct.address, before)
    assert stored.body == body
    # And over IMAP.
    m = imaps(srv, acct)
    try:
        m.select("INBOX")
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        assert split_stored(data[0][1]).body == body
    finally:
        close(m)


def test_an_over_limit_message_gets_552_and_the_session_goes_on(srv):
    acct = new_account(srv, "over")
    files = msg_files(srv)
    with Raw(srv.mx_port) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{acct.address}>", 250)
        c.cmd("DATA", 354)
        chunk = (b"y" * 998 + b"\r\n") * 1024  # 1 MiB
        for _ in range(26):
            c.send_raw(chunk)
        c.send_raw(b".\r\n")
        c.expect(552)
        # The file went when the message passed the limit.
        assert msg_files(srv) == files
        c.cmd("NOOP", 250)
        c.cmd(f"MAIL FROM:<{SENDER}>", 250)
        c.cmd(f"RCPT TO:<{acct.address}>", 250)
        c.cmd("DATA", 354)
        c.send_raw(b"Subject: small\r\n\r\nafter the refusal\r\n.\r\n")
        c.expect(250)
    assert len(srv.uids(acct.address)) == 1


def test_an_append_of_10_mb_by_imaplib_is_read_back_byte_for_byte(srv):
    acct = new_account(srv, "append")
    body = big_message(10 * MB, "append-10mb")
    m = imaps(srv, acct)
    try:
        typ, data = m.append("INBOX", r"(\Seen)", None, body)
        assert typ == "OK" and b"APPENDUID" in data[0], data
        m.select("INBOX")
        typ, data = m.fetch("1", "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        assert b"\\Seen" in data[0][0]
        assert data[0][1] == body
    finally:
        close(m)


def test_a_client_gone_mid_data_or_mid_append_leaves_nothing(srv):
    acct = new_account(srv, "gone")
    files = msg_files(srv)
    # Mid-DATA, past the scorer's prefix: the message file exists, then goes.
    c = Raw(srv.mx_port)
    c.expect(220)
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{acct.address}>", 250)
    c.cmd("DATA", 354)
    c.send_raw(big_message(2 * MB, "gone-data"))
    for _ in deadline_loop(10, "the message file of the unfinished DATA"):
        if len(msg_files(srv)) == len(files) + 1:
            break
    c.close()
    wait_for_files(srv, files, "the file of the dropped DATA to go")

    # Mid-APPEND.
    m = imaps(srv, acct)
    tag = m._new_tag().decode()
    m.send(f"{tag} APPEND INBOX {{{5 * MB}}}\r\n".encode())
    assert m.readline().startswith(b"+ ")
    m.send(big_message(3 * MB, "gone-append"))
    for _ in deadline_loop(10, "the message file of the unfinished APPEND"):
        if len(msg_files(srv)) == len(files) + 1:
            break
    m.shutdown()
    wait_for_files(srv, files, "the file of the dropped APPEND to go")
    assert srv.uids(acct.address) == set()

    # A restart finds nothing to put in lost+found.
    srv.restart()
    lost = srv.data / "lost+found"
    assert not lost.exists() or not any(lost.iterdir()), list(lost.iterdir())
    assert msg_files(srv) == files
