"""One memory budget for client data in flight, shared by every service
(issue 10, `[memory]`). With a 2 MiB budget, six SMTP sessions holding an
unfinished DATA (320 KiB each: the scorer's prefix and the write buffer) and
one IMAP APPEND mid-literal (128 KiB) spend it all: a seventh DATA gets
451 4.3.2, another APPEND NO [UNAVAILABLE], a FETCH of a message NO
[UNAVAILABLE] and POP3 TOP -ERR [SYS/TEMP], each after the configured wait
and never an abort. POP3 RETR streams the file, so it still works. When the
sessions finish, the room comes back and the refused work succeeds."""

from __future__ import annotations

import smtplib

import pytest

from mxlib import HOST, IO_TIMEOUT, Raw
from test_imap import ImapServer, close, deliver, imaps, new_account, simple
from test_pop3 import pop3_ssl

SENDER = "sender@example.org"
MB = 1024 * 1024


class BudgetServer(ImapServer):
    def write_config(self):
        super().write_config()
        with self.config.open("a") as f:
            f.write("\n[memory]\nclient_data_bytes = 2097152\nwait_secs = 1\n")


@pytest.fixture(scope="module")
def srv():
    s = BudgetServer(max_message_bytes=1 * MB)
    s.imap_limits["max_literal_bytes"] = 1 * MB
    s.write_config()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


def open_data(srv, rcpt: str) -> Raw:
    """An SMTP session inside DATA, holding its lease."""
    c = Raw(srv.mx_port)
    c.expect(220)
    c.ehlo()
    c.cmd(f"MAIL FROM:<{SENDER}>", 250)
    c.cmd(f"RCPT TO:<{rcpt}>", 250)
    c.cmd("DATA", 354)
    c.send_raw(b"Subject: held\r\n\r\nfirst line\r\n")
    return c


def test_a_spent_budget_gives_temporary_errors_and_room_comes_back(srv):
    acct = new_account(srv, "budget")
    deliver(srv, acct.address, simple("budget-one"))
    held = [open_data(srv, acct.address) for _ in range(6)]
    # An APPEND mid-literal holds the last 128 KiB.
    app = imaps(srv, acct)
    tag = app._new_tag().decode()
    app.send(f"{tag} APPEND INBOX {{{512 * 1024}}}\r\n".encode())
    assert app.readline().startswith(b"+")
    app.send(b"Subject: half\r\n\r\n" + b"z" * 1000)

    # A seventh DATA: 451 4.3.2 after the wait, and the session goes on.
    late = Raw(srv.mx_port)
    late.expect(220)
    late.ehlo()
    late.cmd(f"MAIL FROM:<{SENDER}>", 250)
    late.cmd(f"RCPT TO:<{acct.address}>", 250)
    r = late.cmd("DATA", 451)
    assert "4.3.2" in r.last, r.lines
    late.cmd("RSET", 250)

    m = imaps(srv, acct)
    try:
        typ, data = m.append("INBOX", None, None, simple("budget-refused"))
        assert typ == "NO" and b"[UNAVAILABLE]" in data[0], data
        m.select("INBOX")
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        assert typ == "NO" and b"[UNAVAILABLE]" in data[0], data
        # Flags need no message read: no lease, no refusal.
        typ, data = m.fetch("1", "(FLAGS)")
        assert typ == "OK", data

        p = pop3_ssl(srv)
        try:
            p.user(acct.address)
            p.pass_(acct.password)
            with pytest.raises(Exception) as refused:
                p.top(1, 0)
            assert "[SYS/TEMP]" in str(refused.value)
            # RETR streams the file in chunks: it needs no lease.
            _, lines, _ = p.retr(1)
            assert b"body of budget-one" in b"\r\n".join(lines)
        finally:
            p.quit()

        # The held sessions finish: the room comes back.
        for c in held:
            c.send_raw(b".\r\n")
            c.expect(250)
            c.close()
        app.send(b"z" * (512 * 1024 - 1000 - len(b"Subject: half\r\n\r\n")) + b"\r\n")
        while True:
            line = app.readline()
            assert line, "APPEND answer"
            if line.startswith(tag.encode()):
                assert b" OK " in line, line
                break
        close(app)

        late.cmd(f"MAIL FROM:<{SENDER}>", 250)
        late.cmd(f"RCPT TO:<{acct.address}>", 250)
        late.cmd("DATA", 354)
        late.send_raw(b"Subject: after\r\n\r\nroom again\r\n.\r\n")
        late.expect(250)
        late.close()

        typ, data = m.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and b"body of budget-one" in data[0][1]
        typ, data = m.append("INBOX", None, None, simple("budget-after"))
        assert typ == "OK", data
    finally:
        close(m)
    # Six held messages, the APPEND, the late one, the one after: and the first.
    assert len(srv.uids(acct.address)) == 1 + 6 + 1 + 1 + 1
    with smtplib.SMTP(HOST, srv.mx_port, local_hostname="e2e.test", timeout=IO_TIMEOUT) as s:
        s.noop()
