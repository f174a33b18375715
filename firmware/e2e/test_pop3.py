"""POP3 with real clients: Python's poplib (STLS on the plain port, POP3_SSL
on the TLS port) and curl's pop3:// and pop3s:// URLs. Messages are
delivered by SMTP in the same test and must come back over POP3 byte for
byte: the stored message is the added Return-Path + Received block followed
by exactly the bytes sent."""

from __future__ import annotations

import poplib
import re
import socket
import subprocess

import pytest

from mxlib import (
    HOST,
    HOSTNAME,
    IO_TIMEOUT,
    dot_stuff,
    insecure_tls,
    split_stored,
)

SENDER = "sender@example.org"
GREETING = f"+OK {HOSTNAME} POP3 mxrack ready"
UNIQUE_ID = re.compile(r"\d+\.(\d+)")


def body(tag: str) -> bytes:
    """A message with lines that need byte-stuffing on the way out."""
    return (
        f"From: <{SENDER}>\r\n"
        f"Subject: {tag}\r\n"
        f"Message-ID: <{tag}@e2e.test>\r\n"
        "\r\n"
        f"body of {tag}\r\n"
        ".leading dot\r\n"
        "..two dots\r\n"
        ".\r\n"
        "last line\r\n"
    ).encode()


def new_mailbox(server, name: str) -> tuple[str, str]:
    address = f"{name}@example.net"
    password = f"pw-{name}-0123"
    server.add_mailbox(address, password)
    return address, password


def deliver(server, address: str, *bodies: bytes):
    with server.smtp() as s:
        for b in bodies:
            assert s.sendmail(SENDER, [address], b) == {}


def stored_by_uid(server, address: str) -> dict[int, bytes]:
    return {m.uid: server.cat(address, m.uid) for m in server.inbox(address)}


def joined(lines: list[bytes]) -> bytes:
    """poplib's lines (unstuffed, CRLF removed) as the message bytes."""
    return b"".join(line + b"\r\n" for line in lines)


def pop3_stls(server) -> poplib.POP3:
    p = poplib.POP3(HOST, server.pop3_port, timeout=IO_TIMEOUT)
    p.stls(context=insecure_tls())
    return p


def pop3_ssl(server) -> poplib.POP3_SSL:
    return poplib.POP3_SSL(HOST, server.pop3s_port, timeout=IO_TIMEOUT, context=insecure_tls())


def test_poplib_stls_uidl_top_retr_then_dele_and_quit_removes(server):
    address, password = new_mailbox(server, "pop-stls")
    sent = [body("stls-1"), body("stls-2")]
    deliver(server, address, *sent)
    stored = stored_by_uid(server, address)
    uids = sorted(stored)
    assert len(uids) == 2

    p = poplib.POP3(HOST, server.pop3_port, timeout=IO_TIMEOUT)
    try:
        assert p.getwelcome().decode() == GREETING
        caps = p.capa()
        assert "STLS" in caps and "UIDL" in caps and "TOP" in caps
        assert "USER" not in caps and "SASL" not in caps, f"credentials offered before TLS: {caps}"
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
            p.user(address)
        p.stls(context=insecure_tls())
        caps = p.capa()
        assert "USER" in caps and caps.get("SASL") == ["PLAIN"], caps
        assert "STLS" not in caps
        p.user(address)
        assert p.pass_(password).decode().startswith("+OK maildrop has 2 messages")
        count, octets = p.stat()
        assert (count, octets) == (2, sum(len(stored[u]) for u in uids))

        _, listing, _ = p.uidl()
        ids = [line.decode().split() for line in listing]
        assert [n for n, _ in ids] == ["1", "2"]
        assert [int(UNIQUE_ID.fullmatch(uid)[1]) for _, uid in ids] == uids
        assert p.uidl(2).decode() == f"+OK 2 {ids[1][1]}"

        _, sizes, _ = p.list()
        assert [line.decode() for line in sizes] == [
            f"{n} {len(stored[u])}" for n, u in ((1, uids[0]), (2, uids[1]))
        ]

        for n, uid in ((1, uids[0]), (2, uids[1])):
            resp, lines, _ = p.retr(n)
            assert resp.decode() == f"+OK {len(stored[uid])} octets"
            got = joined(lines)
            assert got == stored[uid]
            assert split_stored(got).body == sent[n - 1]

        _, top, _ = p.top(1, 0)
        header = stored[uids[0]].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        assert joined(top) == header
        _, top, _ = p.top(1, 2)
        assert joined(top) == header + b"body of stls-1\r\n.leading dot\r\n"

        p.dele(1)
        with pytest.raises(poplib.error_proto, match="already deleted"):
            p.retr(1)
        # Nothing is removed before QUIT.
        assert sorted(stored_by_uid(server, address)) == uids
        assert p.quit().decode() == f"+OK {HOSTNAME} POP3 server signing off (1 messages left)"
    finally:
        p.close()
    assert sorted(stored_by_uid(server, address)) == uids[1:]


def test_poplib_pop3_ssl_rset_and_quit_removes_nothing(server):
    address, password = new_mailbox(server, "pop-ssl")
    sent = body("ssl-1")
    deliver(server, address, sent)
    stored = stored_by_uid(server, address)
    (uid,) = stored

    p = pop3_ssl(server)
    try:
        assert p.getwelcome().decode() == GREETING
        caps = p.capa()
        assert "USER" in caps and "STLS" not in caps
        p.user(address)
        p.pass_(password)
        _, lines, _ = p.retr(1)
        assert joined(lines) == stored[uid]
        assert split_stored(joined(lines)).body == sent
        p.dele(1)
        assert p.stat() == (0, 0)
        assert p.rset().decode().startswith("+OK maildrop has 1 messages")
        p.quit()
    finally:
        p.close()
    assert list(stored_by_uid(server, address)) == [uid]


def read_until(sock, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {end!r}: {data[-200:]!r}"
        data += chunk
    return data


def test_retr_on_the_wire_is_byte_stuffed_and_ends_with_a_dot_line(server):
    """What poplib hides: the exact bytes, stuffed, on the pop3s port."""
    address, password = new_mailbox(server, "pop-wire")
    deliver(server, address, body("wire-1"))
    (stored,) = stored_by_uid(server, address).values()

    raw = socket.create_connection((HOST, server.pop3s_port), timeout=IO_TIMEOUT)
    with insecure_tls().wrap_socket(raw, server_hostname=HOSTNAME) as s:
        assert read_until(s, b"\r\n") == f"{GREETING}\r\n".encode()
        # Pipelined: one write, the replies in order.
        s.sendall(f"USER {address}\r\nPASS {password}\r\nRETR 1\r\nQUIT\r\n".encode())
        data = read_until(s, b"signing off (1 messages left)\r\n")
    status = f"+OK {len(stored)} octets\r\n".encode()
    start = data.index(status) + len(status)
    end = data.index(b"+OK " + HOSTNAME.encode() + b" POP3 server signing off")
    assert data[start:end] == dot_stuff(stored) + b".\r\n"
    assert b"\r\n..leading dot\r\n...two dots\r\n..\r\n" in data[start:end]


def curl(server, url: str, address: str, password: str, *args: str) -> bytes:
    r = subprocess.run(
        ["curl", "-sS", "-k", "--ssl-reqd", "--max-time", "30", *args, url, "-u", f"{address}:{password}"],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, f"curl {url} {args}: exit {r.returncode}: {r.stderr.decode()}"
    return r.stdout


def test_curl_pop3_with_stls_and_pop3s(server):
    address, password = new_mailbox(server, "pop-curl")
    sent = [body("curl-1"), body("curl-2")]
    deliver(server, address, *sent)
    stored = stored_by_uid(server, address)
    uids = sorted(stored)
    plain = f"pop3://{HOST}:{server.pop3_port}"
    tls = f"pop3s://{HOST}:{server.pop3s_port}"

    for base in (plain, tls):
        got = curl(server, f"{base}/1", address, password)
        assert got == stored[uids[0]]
        assert split_stored(got).body == sent[0]
        assert curl(server, f"{base}/2", address, password) == stored[uids[1]]

    listing = curl(server, f"{plain}/", address, password, "-X", "UIDL").decode()
    lines = listing.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"]
    assert [int(UNIQUE_ID.fullmatch(line.split()[1])[1]) for line in lines] == uids
    # The unique ids are the same in the next session, and over pop3s.
    assert curl(server, f"{tls}/", address, password, "-X", "UIDL").decode() == listing

    top = curl(server, f"{plain}/", address, password, "-X", "TOP 1 0")
    assert top == stored[uids[0]].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"

    sizes = curl(server, f"{tls}/", address, password).decode().splitlines()
    assert sizes == [f"1 {len(stored[uids[0]])}", f"2 {len(stored[uids[1]])}"]
    # curl only reads: nothing was removed.
    assert sorted(stored_by_uid(server, address)) == uids


def test_a_second_session_on_a_held_maildrop_gets_in_use(server):
    address, password = new_mailbox(server, "pop-lock")
    deliver(server, address, body("lock-1"))
    first = pop3_ssl(server)
    try:
        first.user(address)
        first.pass_(password)
        second = pop3_stls(server)
        try:
            second.user(address)
            with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
                second.pass_(password)
        finally:
            second.close()
        first.quit()
    finally:
        first.close()
    # Released at QUIT: the next session gets the maildrop.
    again = pop3_ssl(server)
    try:
        again.user(address)
        assert again.pass_(password).decode().startswith("+OK maildrop has 1 messages")
        again.quit()
    finally:
        again.close()


def test_failed_logins_are_limited_per_network_and_account(make_server):
    s = make_server(start=False)
    s.auth["pair_attempts_max"] = 2
    s.write_config()
    s.start()
    address, password = new_mailbox(s, "pop-limit")
    p = pop3_ssl(s)
    try:
        for _ in range(2):
            p.user(address)
            with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] invalid user name or password"):
                p.pass_("wrong")
        p.user(address)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\] too many login attempts"):
            p.pass_(password)
    finally:
        p.close()


def test_sigterm_closes_a_session_with_sys_temp_and_deletes_nothing(make_server):
    s = make_server()
    address, password = new_mailbox(s, "pop-term")
    deliver(s, address, body("term-1"))
    uids = sorted(stored_by_uid(s, address))
    p = pop3_ssl(s)
    try:
        p.user(address)
        p.pass_(password)
        p.dele(1)
        assert s.stop() == 0
        # The session was told before the connection closed.
        assert p.file.readline() == b"-ERR [SYS/TEMP] server shutting down\r\n"
        assert p.file.readline() == b""
    finally:
        p.close()
    s.start()
    assert sorted(stored_by_uid(s, address)) == uids
