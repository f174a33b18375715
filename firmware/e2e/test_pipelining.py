"""PIPELINING (RFC 2920) on a raw socket: a group of commands in one write
gets its replies in order; and the STARTTLS command-injection guard
(CVE-2011-0411): plaintext sent after STARTTLS is never executed."""

from __future__ import annotations

from mxlib import DEMO, HOSTNAME, Raw, insecure_tls, queued_id


def test_pipelined_group_gets_replies_in_order_then_the_message(server):
    before = server.uids(DEMO)
    body = b"Subject: pipelined\r\nMessage-ID: <pipelined@e2e.test>\r\n\r\n.one\r\ntwo\r\n"
    with Raw(server.mx_port) as c:
        c.expect(f"220 {HOSTNAME} ESMTP mxrack")
        assert "PIPELINING" in c.ehlo()
        c.send_raw(
            b"MAIL FROM:<p@b.example>\r\n"
            b"RCPT TO:<demo@example.net>\r\n"
            b"RCPT TO:<nobody@example.net>\r\n"
            b"RCPT TO:<x@other.example>\r\n"
            b"DATA\r\n"
        )
        c.expect("250 2.1.0 Sender OK")
        c.expect("250 2.1.5 Recipient OK")
        c.expect("550 5.1.1 Recipient address rejected: no such user here")
        c.expect("554 5.7.1 Relay access denied")
        c.expect("354 End data with <CR><LF>.<CR><LF>")
        # The message, its end and the next transaction in one write as well.
        c.send_raw(
            b"Subject: pipelined\r\nMessage-ID: <pipelined@e2e.test>\r\n\r\n..one\r\ntwo\r\n.\r\n"
            b"RSET\r\nMAIL FROM:<q@b.example>\r\nRCPT TO:<demo@example.net>\r\nNOOP\r\nQUIT\r\n"
        )
        qid = queued_id(c.expect(250).last)
        c.expect("250 2.0.0 OK")
        c.expect("250 2.1.0 Sender OK")
        c.expect("250 2.1.5 Recipient OK")
        c.expect("250 2.0.0 OK")
        c.expect(f"221 2.0.0 {HOSTNAME} closing connection")
        c.expect_closed()
    st = server.one_new_message(DEMO, before)
    assert (st.return_path, st.id, st.for_) == ("p@b.example", qid, DEMO)
    assert st.body == body


def test_whole_transaction_in_one_write(server):
    """A client that sends everything at once (not allowed before the 354,
    but seen in the wild) still gets the replies in order."""
    before = server.uids(DEMO)
    with Raw(server.mx_port) as c:
        c.send_raw(
            b"EHLO burst.test\r\nMAIL FROM:<b@b.example>\r\nRCPT TO:<demo@example.net>\r\nDATA\r\n"
            b"Subject: burst\r\n\r\nall at once\r\n.\r\nQUIT\r\n"
        )
        c.expect(f"220 {HOSTNAME} ESMTP mxrack")
        c.expect(250)
        c.expect("250 2.1.0 Sender OK")
        c.expect("250 2.1.5 Recipient OK")
        c.expect(354)
        c.expect(250)
        c.expect(221)
        c.expect_closed()
    st = server.one_new_message(DEMO, before)
    assert st.helo == "burst.test"
    assert st.body == b"Subject: burst\r\n\r\nall at once\r\n"


def test_plaintext_pipelined_after_starttls_is_discarded(server):
    """CVE-2011-0411: 'STARTTLS\\r\\nMAIL ...\\r\\n' in one write must not run
    MAIL inside TLS; the first reply inside TLS is the one to our NOOP."""
    with Raw(server.submission_port) as c:
        c.expect(220)
        c.ehlo()
        c.send_raw(b"STARTTLS\r\nMAIL FROM:<demo@example.net>\r\n")
        c.expect("220 2.0.0 Ready to start TLS")
        c.sock = insecure_tls().wrap_socket(c.sock, server_hostname=HOSTNAME)
        c.send("NOOP injected-check")
        c.expect("250 2.0.0 OK")
        exts = c.ehlo()
        assert "AUTH PLAIN LOGIN" in exts
        c.cmd("MAIL FROM:<demo@example.net>", "530 5.7.0 Authentication required")
