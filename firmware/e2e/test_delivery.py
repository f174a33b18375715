"""Delivery with real clients: smtplib (plain MX, STARTTLS submission,
implicit-TLS submissions with AUTH PLAIN and LOGIN), swaks and curl. Every
stored message is read back with `mxrack message cat` and must be the added
Return-Path + Received block followed by exactly the bytes sent."""

from __future__ import annotations

import smtplib
import subprocess

from mxlib import (
    DEMO,
    HOST,
    HOSTNAME,
    Raw,
    b64,
    insecure_tls,
    plain_token,
    queued_id,
)

SENDER = "sender@example.org"

# CRLF line ends; lines starting with '.' (one of them only a dot) to check
# dot-stuffing both ways; 8-bit UTF-8; leading and trailing white space.
BODY_8BIT = (
    b"From: Sender <sender@example.org>\r\n"
    b"To: Demo <demo@example.net>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <e2e-plain-8bit@e2e.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two leading dots\r\n"
    b".\r\n"
    + "Grüße aus Köln – 東京 ✓ naïve café\r\n".encode()
    + b" leading space\r\n"
    b"trailing space and tab \t\r\n"
    b"\r\n"
    b"last line\r\n"
)


def body(tag: str) -> bytes:
    return (
        f"From: <{SENDER}>\r\n"
        f"To: <{DEMO}>\r\n"
        f"Subject: {tag}\r\n"
        f"Message-ID: <{tag}@e2e.test>\r\n"
        "\r\n"
        f"body of {tag}\r\n"
        ".dot line\r\n"
    ).encode()


def assert_trace(st, *, return_path: str, helo: str, proto: str, rcpt: str | None):
    assert st.return_path == return_path
    assert st.helo == helo
    assert st.ip == HOST
    assert st.by == HOSTNAME
    assert st.proto == proto
    assert st.for_ == rcpt


def test_smtplib_plain_mx_8bit_dot_stuffing_round_trip(server):
    before = server.uids(DEMO)
    with server.smtp() as s:
        code, _ = s.ehlo()
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "starttls"):
            assert s.has_extn(ext), f"EHLO does not advertise {ext}"
        assert s.esmtp_features["size"] == "65536"
        assert not s.has_extn("auth"), "AUTH must not be offered on the MX port"
        refused = s.sendmail(SENDER, [DEMO], BODY_8BIT, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=SENDER, helo="e2e.test", proto="ESMTP", rcpt=DEMO)
    assert st.body == BODY_8BIT


def test_smtplib_reply_codes_and_queue_id_in_received(server):
    """MAIL/RCPT/DATA one by one: exact replies, and the id in the 250 after
    DATA is the id in the Received header."""
    before = server.uids(DEMO)
    with server.smtp() as s:
        s.ehlo()
        assert s.mail(SENDER, ["SIZE=%d" % len(BODY_8BIT), "BODY=8BITMIME"]) == (250, b"2.1.0 Sender OK")
        assert s.rcpt(DEMO) == (250, b"2.1.5 Recipient OK")
        code, text = s.data(BODY_8BIT)
        assert code == 250
        qid = queued_id("250 " + text.decode())
        assert s.noop() == (250, b"2.0.0 OK")
        assert s.quit() == (221, f"2.0.0 {HOSTNAME} closing connection".encode())
    st = server.one_new_message(DEMO, before)
    assert st.id == qid
    assert st.body == BODY_8BIT


def test_starttls_on_the_mx_port_is_recorded_as_esmtps(server):
    before = server.uids(DEMO)
    with server.smtp() as s:
        s.ehlo()
        assert s.starttls(context=insecure_tls())[0] == 220
        s.ehlo()
        assert not s.has_extn("starttls") and not s.has_extn("auth")
        s.sendmail(SENDER, [DEMO], body("mx-tls"))
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=SENDER, helo="e2e.test", proto="ESMTPS", rcpt=DEMO)
    assert st.body == body("mx-tls")


def test_helo_gives_smtp_protocol_and_message_without_trailing_crlf_is_completed(server):
    """HELO (not EHLO) is recorded as SMTP. smtplib ends a body lacking a
    final CRLF with one, so exactly that CRLF is added."""
    before = server.uids(DEMO)
    with server.smtp() as s:
        assert s.helo()[0] == 250
        s.sendmail(SENDER, [DEMO], b"Subject: no final newline\r\n\r\nlast")
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=SENDER, helo="e2e.test", proto="SMTP", rcpt=DEMO)
    assert st.body == b"Subject: no final newline\r\n\r\nlast\r\n"


def test_null_sender_is_accepted_and_recorded(server):
    before = server.uids(DEMO)
    with server.smtp() as s:
        s.ehlo()
        s.sendmail("<>", [DEMO], body("bounce"))
    st = server.one_new_message(DEMO, before)
    assert st.return_path == ""
    assert st.body == body("bounce")


def test_submission_starttls_auth_external_is_queued_and_local_is_delivered(server):
    login = (DEMO, server.password)
    with smtplib.SMTP(HOST, server.submission_port, local_hostname="e2e.test", timeout=15) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "AUTH offered before TLS"
        s.starttls(context=insecure_tls())
        s.ehlo()
        assert not s.has_extn("starttls"), "STARTTLS offered inside TLS"
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert s.login(*login) == (235, b"2.7.0 Authentication successful")

        queue_before = {q.id for q in server.queue()}
        assert s.mail(DEMO) == (250, b"2.1.0 Sender OK")
        assert s.rcpt("someone@example.org") == (250, b"2.1.5 Recipient OK")
        code, text = s.data(body("outbound"))
        assert code == 250
        qid = queued_id("250 " + text.decode())
        new = [q for q in server.queue() if q.id not in queue_before]
        assert len(new) == 1, new
        q = new[0]
        # The relay may already have tried (the test smarthost is a closed
        # loopback port), so the entry is waiting with 0 or 1 attempts.
        assert (q.id, q.mail_from, q.recipients, q.state) == (
            qid, DEMO, ["someone@example.org"], "waiting",
        )
        assert q.attempts in (0, 1)
        # The queued blob is the body plus the trace block (< 300 bytes).
        assert len(body("outbound")) < q.size < len(body("outbound")) + 300

        before = server.uids(DEMO)
        assert s.sendmail(DEMO, [DEMO], body("to-self")) == {}
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=DEMO, helo="e2e.test", proto="ESMTPSA", rcpt=DEMO)
    assert st.body == body("to-self")


def test_submission_mixed_local_and_external_recipients_share_one_id(server):
    before = server.uids(DEMO)
    queue_before = {q.id for q in server.queue()}
    with server.submission(login=(DEMO, server.password)) as s:
        s.mail(DEMO)
        assert s.rcpt("a@example.org")[0] == 250
        assert s.rcpt(DEMO)[0] == 250
        assert s.rcpt("b@example.com")[0] == 250
        code, text = s.data(body("mixed"))
        assert code == 250
        qid = queued_id("250 " + text.decode())
    st = server.one_new_message(DEMO, before)
    assert st.id == qid
    assert st.for_ is None, "several recipients: no 'for' clause"
    assert st.body == body("mixed")
    new = [q for q in server.queue() if q.id not in queue_before]
    assert [(q.id, q.recipients) for q in new] == [(qid, ["a@example.org", "b@example.com"])]
    assert new[0].size == len(server.cat(DEMO, max(server.uids(DEMO)))), "one blob, one size"


def test_submissions_implicit_tls_auth_login_via_smtplib(server):
    with server.submissions() as s:
        s.ehlo()
        assert not s.has_extn("starttls"), "STARTTLS offered on implicit TLS"
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        s.user, s.password = DEMO, server.password
        assert s.auth("LOGIN", s.auth_login, initial_response_ok=False) == (
            235, b"2.7.0 Authentication successful",
        )
        before = server.uids(DEMO)
        s.sendmail(DEMO, [DEMO], body("smtps-login"))
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=DEMO, helo="e2e.test", proto="ESMTPSA", rcpt=DEMO)
    assert st.body == body("smtps-login")


def test_submissions_implicit_tls_auth_plain_via_smtplib(server):
    with server.submissions() as s:
        s.ehlo()
        s.user, s.password = DEMO, server.password
        assert s.auth("PLAIN", s.auth_plain) == (235, b"2.7.0 Authentication successful")
        before = server.uids(DEMO)
        s.sendmail(DEMO, [DEMO], body("smtps-plain"))
    st = server.one_new_message(DEMO, before)
    assert st.body == body("smtps-plain")


def test_submissions_auth_exchanges_raw(server):
    """The SASL exchanges on the wire: PLAIN and LOGIN with and without an
    initial response, cancel, unknown mechanism, AUTH twice."""
    pw = server.password
    with Raw(server.submissions_port, tls=True) as c:
        c.expect(f"220 {HOSTNAME} ESMTP mxrack")
        c.ehlo()
        c.cmd("AUTH PLAIN", "334 ")
        c.cmd("*", "501 5.0.0 Authentication cancelled")
        c.cmd("AUTH CRAM-MD5", "504 5.5.4 Unrecognized authentication mechanism")
        c.cmd("AUTH PLAIN", "334 ")
        c.cmd(plain_token(DEMO, pw), "235 2.7.0 Authentication successful")
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, pw)}", "503 5.5.1 Already authenticated")
        assert "AUTH PLAIN LOGIN" not in c.ehlo(), "AUTH offered after authentication"
    with Raw(server.submissions_port, tls=True) as c:
        c.expect(220)
        c.ehlo()
        c.cmd("AUTH LOGIN", "334 " + b64("Username:"))
        c.cmd(b64(DEMO), "334 " + b64("Password:"))
        c.cmd(b64(pw), "235 2.7.0 Authentication successful")
    with Raw(server.submissions_port, tls=True) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"AUTH LOGIN {b64(DEMO.upper())}", "334 " + b64("Password:"))
        c.cmd(b64(pw), "235 2.7.0 Authentication successful")
        c.cmd(f"MAIL FROM:<{DEMO}>", "250 2.1.0 Sender OK")


def write_eml(server, name: str, data: bytes):
    p = server.base / name
    p.write_bytes(data)
    return p


def test_swaks_to_mx_round_trip(server):
    data = body("swaks") + BODY_8BIT
    # With a closing dot swaks adds no line of its own; it dot-stuffs.
    eml = write_eml(server, "swaks.eml", data + b".\r\n")
    before = server.uids(DEMO)
    r = subprocess.run(
        ["swaks", "--server", f"{HOST}:{server.mx_port}", "--helo", "e2e.swaks",
         "--from", SENDER, "--to", DEMO, "--data", f"@{eml}"],
        capture_output=True, timeout=60,
    )
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out + r.stderr.decode()
    assert "<-  250 2.0.0 OK: queued as " in out
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=SENDER, helo="e2e.swaks", proto="ESMTP", rcpt=DEMO)
    assert st.body == data


def test_swaks_submission_starttls_auth(server):
    eml = write_eml(server, "swaks-sub.eml", body("swaks-sub") + b".\r\n")
    before = server.uids(DEMO)
    r = subprocess.run(
        ["swaks", "--server", f"{HOST}:{server.submission_port}", "--tls", "--helo", "e2e.swaks",
         "--auth-user", DEMO, "--auth-password", server.password,
         "--from", DEMO, "--to", DEMO, "--data", f"@{eml}"],
        capture_output=True, timeout=60,
    )
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out + r.stderr.decode()
    assert "<~  235 2.7.0 Authentication successful" in out
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=DEMO, helo="e2e.swaks", proto="ESMTPSA", rcpt=DEMO)
    assert st.body == body("swaks-sub")


def test_curl_to_mx_round_trip(server):
    data = body("curl") + BODY_8BIT
    eml = write_eml(server, "curl.eml", data)
    before = server.uids(DEMO)
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "30", f"smtp://{HOST}:{server.mx_port}/e2e.curl",
         "--mail-from", SENDER, "--mail-rcpt", DEMO, "--upload-file", str(eml)],
        capture_output=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=SENDER, helo="e2e.curl", proto="ESMTP", rcpt=DEMO)
    assert st.body == data


def test_curl_submissions_implicit_tls_auth(server):
    eml = write_eml(server, "curl-tls.eml", body("curl-smtps"))
    before = server.uids(DEMO)
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--insecure",
         f"smtps://{HOST}:{server.submissions_port}/e2e.curl",
         "--user", f"{DEMO}:{server.password}",
         "--mail-from", DEMO, "--mail-rcpt", DEMO, "--upload-file", str(eml)],
        capture_output=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()
    st = server.one_new_message(DEMO, before)
    assert_trace(st, return_path=DEMO, helo="e2e.curl", proto="ESMTPSA", rcpt=DEMO)
    assert st.body == body("curl-smtps")
