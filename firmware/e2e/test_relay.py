"""Outbound delivery (the relay) end to end: the real server delivers its
queue to a scriptable SMTP sink (`sink.py`) on 127.0.0.1, reached through
`[relay] routes`. Submitted mail, forwarded copies with SRS senders, bounces
back through SRS addresses, retries, DSNs, the queue CLI and the sender
block lists.

Every wait is on a condition with a deadline. Where a test must look at the
queue between two attempts, the sink parks the next connection at its door
(`gate_after`) so the entry cannot move while the test looks.

Tests named `test_bug_*` fail against the server as it is (written
2026-11-29): each one's docstring names the RFC section or the behaviour it
checks and what the server does instead. `sink.transcripts` holds every
exchange line by line for a closer look.
"""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import os
import re
import subprocess
import time

import pytest

from mxlib import (
    AUTH_RESULTS_RE,
    BIN,
    DEMO,
    HOST,
    HOSTNAME,
    RECEIVED_RE,
    SPAM_SCORE_RE,
    CliError,
    Queued,
    Raw,
    Server,
    deadline_loop,
    free_ports,
    queued_id,
)
from sink import Sink

SRS_SECRET = "e2e-srs-secret-0123456789"
SRS_DOMAIN = "example.net"  # appliance.primary_domain: the default SRS domain
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SRS0_RE = re.compile(
    r"SRS0=(?P<hash>[A-Za-z0-9+/]{4})=(?P<tt>[A-Z2-7]{2})=(?P<domain>[^=@]+)=(?P<local>[^@]+)@"
    + re.escape(SRS_DOMAIN)
)
# Routes to the sink offering STARTTLS, and to the plain 7-bit one.
TLS_DOMAINS = ["example.org", "hotmail.com", "sender.example"]
PLAIN_DOMAINS = ["outlook.example"]
FAST = {
    "queue_interval_secs": 1,
    "retry_base_secs": 1,
    "retry_max_secs": 2,
    "connect_timeout_secs": 5,
    "command_timeout_secs": 30,
    # Each attempt over a session of its own, so the sink's gate (which
    # parks new connections) can hold a retry at its door; session reuse
    # has its own server below (`reuse_relay`).
    "connection_cache_secs": 0,
}
WAIT = 20.0
TEMPFAIL = "451 4.3.0 try later"
NO_SUCH_USER = "550 5.1.1 no such user"


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_sink(tmp_path_factory):
    s = Sink(tls=True, cert_dir=tmp_path_factory.mktemp("sink-certs")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def plain_sink():
    """No STARTTLS, no 8BITMIME, no SMTPUTF8: an old-fashioned 7-bit server."""
    s = Sink(tls=False, eight_bit_mime=False, smtputf8=False).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def closed_port():
    """A loopback port nothing listens on."""
    return free_ports(1)[0]


@pytest.fixture(scope="module")
def relay(tls_sink, plain_sink, closed_port):
    """The module's server: fast retries, every test domain routed to a sink."""
    s = Server()
    routes = {d: tls_sink.hop for d in TLS_DOMAINS}
    routes.update({d: plain_sink.hop for d in PLAIN_DOMAINS})
    routes["closed.example"] = f"{HOST}:{closed_port}"
    s.relay = dict(FAST, routes=routes)
    s.forward = {"srs_secret": SRS_SECRET}
    s.write_config()
    s.start()
    s.add_domain("acme.example", "acme")
    s.add_mailbox("jo@acme.example", ACME_PASSWORD)
    yield s
    s.teardown()


ACME_PASSWORD = "pw-jo-acme-0123"


@pytest.fixture
def sink(relay, tls_sink, plain_sink):
    """The TLS sink, reset; the queue and forwarding rules are left clean."""
    tls_sink.reset()
    plain_sink.reset()
    yield tls_sink
    tls_sink.reset()  # also opens the gate for a parked attempt
    plain_sink.reset()
    for line in relay.mx("forward", "list").decode().splitlines():
        relay.mx("forward", "remove", line.split("\t")[0])
    for q in relay.queue():
        try:
            relay.mx("queue", "delete", q.id)
        except CliError:
            pass  # delivered meanwhile
    # An attempt under way when its entry went ends without a retry; let it
    # end before the next test counts connections.
    tls_sink.wait_idle()
    plain_sink.wait_idle()


# --- helpers --------------------------------------------------------------------


def message(tag: str, sender: str = DEMO, to: str = "someone@example.org", extra: bytes = b"",
            date: bool = True) -> bytes:
    """A CRLF message with lines that need dot-stuffing on every hop. With
    its Date header it scores 0 (without, MISSING_DATE: over the 1.0 the
    forward gate allows to hotmail.com)."""
    return (
        ("Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n" if date else "")
        + f"From: <{sender}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {tag}\r\n"
        f"Message-ID: <{tag}@e2e.test>\r\n"
        "\r\n"
        f"body of {tag}\r\n"
        ".leading dot\r\n"
        "..two dots\r\n"
        ".\r\n"
        "last line\r\n"
    ).encode() + extra


def submit(server: Server, rcpts: list[str], body: bytes, sender: str = DEMO,
           login: tuple[str, str] | None = None, mail_options: list[str] = ()) -> str:
    """Authenticated submission (STARTTLS on the submission port); the queue id."""
    with server.submission(login=login or (DEMO, server.password)) as s:
        code, text = s.mail(sender, list(mail_options))
        assert code == 250, text
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, text)
        code, text = s.data(body)
        assert code == 250, text
    return queued_id("250 " + text.decode())


def mx_send(server: Server, sender: str, rcpts: list[str], body: bytes) -> str:
    """Mail from outside through the MX port; the queue id."""
    with Raw(server.mx_port) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"MAIL FROM:<{sender}>", 250)
        for r in rcpts:
            c.cmd(f"RCPT TO:<{r}>", "250 2.1.5 Recipient OK")
        reply = c.data(body)
        assert reply.code == 250, reply.lines
        c.cmd("QUIT", 221)
    return queued_id(reply.last)


def entry(server: Server, qid: str) -> Queued | None:
    return next((q for q in server.queue() if q.id == qid), None)


def wait_entry(server: Server, qid: str, pred, what: str, timeout: float = WAIT) -> Queued:
    for _ in deadline_loop(timeout, what, interval=0.1):
        q = entry(server, qid)
        if q is not None and pred(q):
            return q


def wait_gone(server: Server, qid: str, timeout: float = WAIT):
    for _ in deadline_loop(timeout, f"queue entry {qid} to leave the queue", interval=0.1):
        if entry(server, qid) is None:
            return


def wait_queue_empty(server: Server, timeout: float = WAIT):
    for _ in deadline_loop(timeout, "the queue to be empty", interval=0.1):
        if not server.queue():
            return


def wait_only_held(server: Server, timeout: float = WAIT) -> list[Queued]:
    """Waits until every queue entry left is held by the forward gate."""
    for _ in deadline_loop(timeout, "only gate-held entries in the queue", interval=0.1):
        q = server.queue()
        if q and all(e.state == "held" and e.reason for e in q):
            return q


def wait_new_messages(server: Server, address: str, before: set[int], n: int = 1,
                      timeout: float = WAIT) -> list[bytes]:
    for _ in deadline_loop(timeout, f"{n} new message(s) for {address}", interval=0.1):
        new = server.new_messages(address, before)
        if len(new) >= n:
            return new


FORWARD_ID_RE = re.compile(rb"X-Mxrack-Forward-Id: [^\r\n]+\r\n")


def relayed_body(data: bytes, qid: str, proto: str, helo: str, rcpt: str | None,
                 forwarded: bool = False) -> bytes:
    """The relayed message is our Received header and, for inbound mail, the
    X-Spam-Score header (after a forwarded copy's X-Mxrack-Forward-Id trace header), then
    exactly what the client sent; the Return-Path of final delivery does not
    travel."""
    headers = data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"(?im)^return-path:", headers), f"Return-Path relayed: {data[:300]!r}"
    if forwarded:
        f = FORWARD_ID_RE.match(data)
        assert f, f"a forwarded copy starts with its trace header: {data[:200]!r}"
        data = data[f.end():]
    r = RECEIVED_RE.match(data)
    assert r, f"relayed message does not start with our Received header: {data[:300]!r}"
    assert (r["helo"].decode(), r["ip"].decode(), r["by"].decode(), r["proto"].decode(), r["id"].decode()) == (
        helo, HOST, HOSTNAME, proto, qid,
    )
    assert (r["for"].decode() if r["for"] else None) == rcpt
    # The MX's (or the submission's) Authentication-Results (issue 16).
    ar = AUTH_RESULTS_RE.match(data, r.end())
    assert ar, f"no Authentication-Results after Received: {data[r.end():r.end() + 200]!r}"
    data = data[:r.end()] + data[ar.end():]
    spam = SPAM_SCORE_RE.match(data, r.end())
    # Inbound mail is scored; customers' authenticated submissions are not
    # (the score would leak to the outside world with their mail).
    if proto.endswith("A"):
        assert not spam, f"a submission carries X-Spam-Score: {data[:300]!r}"
        return data[r.end():]
    assert spam, f"no X-Spam-Score header after Received: {data[r.end():r.end() + 200]!r}"
    return data[spam.end():]


def srs0(local: str, domain: str, day: int | None = None) -> str:
    """The SRS0 address postsrsd/libsrs2 make with our secret: HHHH is the
    first 4 base64 characters of HMAC-SHA1(secret, lower(TT + domain + local)),
    TT the day number modulo 1024 in two base32 characters."""
    if day is None:
        day = int(time.time()) // 86400
    d = day & 1023
    tt = BASE32[(d >> 5) & 31] + BASE32[d & 31]
    mac = hmac.new(SRS_SECRET.encode(), (tt + domain + local).lower().encode(), hashlib.sha1)
    h = base64.b64encode(mac.digest()).decode()[:4]
    return f"SRS0={h}={tt}={domain}={local}@{SRS_DOMAIN}"


def parse_dsn(raw: bytes):
    """(message, per-message fields, [per-recipient fields], returned headers)
    of a multipart/report; report-type=delivery-status message (RFC 3464/6522)."""
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/report", raw[:500]
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers",
    ], [p.get_content_type() for p in parts]
    blocks = parts[1].get_payload()
    returned = parts[2].get_payload(decode=True)
    return msg, blocks[0], blocks[1:], returned


def queue_show(server: Server, qid: str) -> dict[str, str]:
    out = server.mx("queue", "show", qid).decode()
    fields = {}
    for line in out.splitlines():
        k, _, v = line.partition(": ")
        fields[k] = v
    return fields


# --- submitted mail -------------------------------------------------------------


def test_submission_is_relayed_over_starttls_byte_for_byte(relay, sink):
    rcpt = "someone@example.org"
    body = message("relay-basic", extra="8-bit line: ünïcödé\r\n".encode())
    qid = submit(relay, [rcpt], body)
    [t] = sink.wait_delivered(1)
    assert (t.mail_from, t.rcpt_to, t.refused) == (DEMO, [rcpt], [])
    assert t.peer[0] == HOST
    assert t.ehlo == HOSTNAME, "EHLO names the appliance"
    assert t.tls and t.tls_version in ("TLSv1.2", "TLSv1.3"), "STARTTLS offered, so used"
    assert relayed_body(t.data, qid, "ESMTPSA", "e2e.test", rcpt) == body
    assert f"SIZE={len(t.data)}" in t.mail_params, t.mail_params
    assert "BODY=8BITMIME" in t.mail_params, "8-bit content is declared (RFC 6152)"
    wait_gone(relay, qid)
    assert len(sink.transactions) == 1


def test_a_server_without_starttls_gets_the_mail_in_plaintext(relay, sink, plain_sink):
    rcpt = "someone@outlook.example"
    body = message("relay-plain", to=rcpt)
    qid = submit(relay, [rcpt], body)
    [t] = plain_sink.wait_delivered(1)
    assert not t.tls
    assert (t.mail_from, t.rcpt_to) == (DEMO, [rcpt])
    assert relayed_body(t.data, qid, "ESMTPSA", "e2e.test", rcpt) == body
    assert not any(p.startswith("BODY=") for p in t.mail_params), t.mail_params
    wait_gone(relay, qid)
    assert sink.transactions == []


def test_recipients_in_two_domains_go_to_their_own_routes(relay, sink, plain_sink):
    body = message("two-routes")
    qid = submit(relay, ["a@example.org", "b@outlook.example", "c@example.org"], body)
    [t1] = sink.wait_delivered(1)
    [t2] = plain_sink.wait_delivered(1)
    assert sorted(t1.rcpt_to) == ["a@example.org", "c@example.org"], "one transaction per destination"
    assert t2.rcpt_to == ["b@outlook.example"]
    assert relayed_body(t1.data, qid, "ESMTPSA", "e2e.test", None) == body
    assert t1.data == t2.data
    wait_gone(relay, qid)


# --- retries ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_temporary_failure_is_retried_and_delivered_exactly_once(relay, sink, stage):
    rcpt = f"retry-{stage}@example.org"
    (sink.script_rcpt if stage == "rcpt" else sink.script_data)(TEMPFAIL)
    sink.gate_after(1)  # the retry waits at the sink's door while we look at the queue
    qid = submit(relay, [rcpt], message(f"retry-{stage}", to=rcpt))
    sink.wait_parked(1)

    [first] = sink.transactions
    assert not first.accepted
    if stage == "rcpt":
        assert (first.rcpt_to, first.refused, first.data) == ([], [(rcpt, TEMPFAIL)], None)
    else:
        assert (first.rcpt_to, first.reply) == ([rcpt], TEMPFAIL)
    q = entry(relay, qid)
    assert q is not None, "a deferred entry stays in the queue"
    assert (q.attempts, q.state, q.recipients, q.transport) == (1, "waiting", [rcpt], "outbound")
    assert TEMPFAIL in q.last_error, q.last_error
    shown = queue_show(relay, qid)
    assert (shown["attempts"], shown["held"], shown["to"]) == ("1", "false", rcpt)
    assert TEMPFAIL in shown["last error"]
    assert int(shown["next attempt"]) >= int(shown["created"])

    sink.open_gate()
    sink.wait_delivered(1)
    wait_gone(relay, qid)
    ts = sink.transactions
    assert [t.accepted for t in ts] == [False, True], ts
    assert len(sink.delivered()) == 1, "exactly one delivery"
    if stage == "data":
        assert ts[0].data == ts[1].data, "the retry sends the same message"


def test_an_unreachable_server_defers_with_the_connection_error(relay, sink):
    qid = submit(relay, ["x@closed.example"], message("closed", to="x@closed.example"))
    q = wait_entry(relay, qid, lambda q: q.attempts >= 1, "a failed connection attempt")
    assert q.state == "waiting"
    assert "cannot connect" in q.last_error, q.last_error
    relay.mx("queue", "delete", qid)
    assert entry(relay, qid) is None


# --- DSNs -----------------------------------------------------------------------


def bounce_to_demo(relay, sink, tag: str) -> tuple[str, bytes]:
    """demo submits to good@ and bad@example.org; the sink refuses bad@ with
    550 5.1.1. Returns the queue id and the stored DSN."""
    sink.rcpt_for["bad@example.org"] = NO_SUCH_USER
    before = relay.uids(DEMO)
    qid = submit(relay, ["good@example.org", "bad@example.org"], message(tag, to="bad@example.org"))
    [t] = sink.wait_delivered(1)
    assert t.rcpt_to == ["good@example.org"]
    assert t.refused == [("bad@example.org", NO_SUCH_USER)]
    wait_gone(relay, qid)
    # The DSN is stored before the entry leaves the queue.
    new = relay.new_messages(DEMO, before)
    assert len(new) == 1, f"expected one DSN for {DEMO}, found {len(new)}"
    return qid, new[0]


def test_a_refused_recipient_bounces_to_the_local_sender(relay, sink):
    qid, raw = bounce_to_demo(relay, sink, "dsn-local")
    msg, per_message, per_rcpt, returned = parse_dsn(raw)
    assert msg["To"] == f"<{DEMO}>"
    assert msg["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert per_message["Reporting-MTA"] == f"dns; {HOSTNAME}"
    assert len(per_rcpt) == 1, "only the failed recipient is reported"
    r = per_rcpt[0]
    assert r["Final-Recipient"] == "rfc822; bad@example.org"
    assert r["Action"] == "failed"
    assert r["Status"] == "5.1.1"
    assert NO_SUCH_USER in r["Diagnostic-Code"]
    assert b"Subject: dsn-local\r\n" in returned
    assert b"Message-ID: <dsn-local@e2e.test>\r\n" in returned
    assert b"body of dsn-local" not in raw, "the headers come back, not the body"
    assert relay.queue() == [], "the DSN to a local sender is not queued"
    assert len(sink.transactions) == 1


def test_a_locally_delivered_dsn_has_an_empty_return_path(relay, sink):
    """Final delivery inserts a Return-Path line (RFC 5321 4.4); a DSN is
    sent with the null reverse-path (RFC 5321 4.5.5): `Return-Path: <>`."""
    _, raw = bounce_to_demo(relay, sink, "dsn-return-path")
    assert re.match(rb"Return-Path: <>\r\nReceived: by " + re.escape(HOSTNAME.encode()) + rb" \(mxrack\) id [0-9a-f]{16};\r\n\t", raw), raw[:160]


def test_dsn_diagnostic_code_is_the_servers_reply(relay, sink):
    """RFC 3464 2.3.6 and 2.3.5: `Diagnostic-Code: smtp; ...`
    carries "the actual diagnostic code issued by the mail transport", the
    SMTP reply; the server that said it belongs in `Remote-MTA`. The relay
    writes `Diagnostic-Code: smtp; 127.0.0.1:PORT said 550 5.1.1 ...`, which
    DSN parsers read as a reply with no code."""
    _, raw = bounce_to_demo(relay, sink, "dsn-diagnostic")
    _, _, [r], _ = parse_dsn(raw)
    assert r["Diagnostic-Code"] == f"smtp; {NO_SUCH_USER}", r["Diagnostic-Code"]


# --- forwarding and SRS -------------------------------------------------------------


def forward_from_alice(relay, sink, tag: str, *forward_args: str):
    """demo forwards to jo@hotmail.com; alice@sender.example writes to demo
    through the MX port. Returns (queue id, body, the sink's transaction)."""
    out = relay.mx("forward", "set", DEMO, "jo@hotmail.com", *forward_args).decode()
    assert out.startswith(f"{DEMO} forwards to jo@hotmail.com"), out
    body = message(tag, sender="alice@sender.example", to=DEMO)
    qid = mx_send(relay, "alice@sender.example", [DEMO], body)
    [t] = sink.wait_delivered(1)
    return qid, body, t


def test_forward_rewrites_the_sender_with_srs_and_keeps_a_local_copy(relay, sink):
    before = relay.uids(DEMO)
    qid, body, t = forward_from_alice(relay, sink, "fwd-keep")
    assert t.rcpt_to == ["jo@hotmail.com"]
    m = SRS0_RE.fullmatch(t.mail_from)
    assert m, f"not an SRS0 address: {t.mail_from!r}"
    assert (m["domain"], m["local"]) == ("sender.example", "alice")
    today = int(time.time()) // 86400
    assert t.mail_from in (srs0("alice", "sender.example", today),
                           srs0("alice", "sender.example", today - 1)), (
        "hash and timestamp as postsrsd/libsrs2 compute them with the configured secret"
    )
    assert t.ehlo == HOSTNAME and t.tls
    assert relayed_body(t.data, qid, "ESMTP", "e2e.test", DEMO, forwarded=True) == body
    st = relay.one_new_message(DEMO, before)
    assert (st.return_path, st.id, st.body) == ("alice@sender.example", qid, body)
    assert st.spam_score < 1.0
    wait_queue_empty(relay)
    assert relay.mx("forward", "list").decode() == f"{DEMO}\tjo@hotmail.com\tkeep_copy=yes\n"


def test_forward_without_local_copy(relay, sink):
    before = relay.uids(DEMO)
    _, body, t = forward_from_alice(relay, sink, "fwd-nocopy", "--no-local-copy")
    assert relay.mx("forward", "list").decode() == f"{DEMO}\tjo@hotmail.com\tkeep_copy=no\n"
    assert SRS0_RE.fullmatch(t.mail_from)
    assert t.data.endswith(body)
    wait_queue_empty(relay)
    # The local copy would have been stored before the 250 to alice.
    assert relay.uids(DEMO) == before, "no local copy"
    assert relay.mx("forward", "remove", DEMO) == f"forwarding of {DEMO} removed\n".encode()
    assert relay.mx("forward", "list") == b""


def test_the_forward_gate_discards_a_copy_scoring_over_its_destinations_threshold(relay, sink):
    """The seed's rule: forwarded copies to Hotmail are discarded from a
    score of 1.0, to other destinations from 6.0; the local copy stays."""
    relay.mx("forward", "set", DEMO, "jo@hotmail.com", "jo@example.org")
    before = relay.uids(DEMO)
    body = message("gate", sender="alice@sender.example", to=DEMO, date=False)
    qid = mx_send(relay, "alice@sender.example", [DEMO], body)
    st = relay.one_new_message(DEMO, before)
    assert (st.id, st.body) == (qid, body)
    assert 1.0 <= st.spam_score < 6.0, st.spam_score  # MISSING_DATE
    [t] = sink.wait_delivered(1)
    assert t.rcpt_to == ["jo@example.org"]
    # Copies are decided before the 250: the one to hotmail.com is queued
    # held (issue 16), the one to example.org leaves.
    [held] = wait_only_held(relay)
    assert (held.recipients, held.transport, held.mailbox) == (["jo@hotmail.com"], "forward", DEMO)
    assert len(sink.transactions) == 1, "nothing went to hotmail.com"


HELD_REASON_RE = re.compile(r"spam gate: score (\d+\.\d) at or over 1\.0 for hotmail\.com")


def test_a_copy_the_gate_discards_is_held_listed_and_released(relay, sink):
    """Issue 16: nothing discarded is lost. demo forwards to jo@hotmail.com
    without a local copy; a message over hotmail.com's threshold (1.0: no
    Date header, MISSING_DATE) is not sent but queued held with its reason,
    an expiry `forward.discard_keep_days` (14) away and the mailbox; the CLI
    lists it; released, it reaches the (routed) hotmail.com sink."""
    relay.mx("forward", "set", DEMO, "jo@hotmail.com", "--no-local-copy")
    before = relay.uids(DEMO)
    body = message("gate-held", sender="alice@sender.example", to=DEMO, date=False)
    t0 = time.time()
    qid = mx_send(relay, "alice@sender.example", [DEMO], body)
    [q] = wait_only_held(relay)
    assert q.id != qid, "the copy is its own queue entry"
    assert (q.recipients, q.transport, q.mailbox, q.attempts) == (["jo@hotmail.com"], "forward", DEMO, 0)
    m = HELD_REASON_RE.fullmatch(q.reason or "")
    assert m and float(m[1]) >= 1.0, q
    expires = time.mktime(time.strptime(q.expires, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert t0 + 14 * 86400 - 5 <= expires <= time.time() + 14 * 86400 + 5, q.expires
    assert SRS0_RE.fullmatch(q.mail_from), q.mail_from
    assert relay.uids(DEMO) == before, "no local copy: the held copy is the only one"

    # Passes go by (a later message is delivered) and the held copy stays.
    submit(relay, ["witness@example.org"], message("witness-held", to="witness@example.org"))
    sink.wait_delivered(1, rcpt="witness@example.org")
    assert [t.rcpt_to for t in sink.transactions] == [["witness@example.org"]]
    assert entry(relay, q.id).state == "held"

    # The user's view: their held copies, with reason and expiry.
    listed = relay.mx("forward", "held", DEMO).decode().splitlines()
    assert listed[0].split("\t") == [
        q.id, f"mailbox={DEMO}", "to=jo@hotmail.com", f"size={q.size}", f"expires={q.expires}", q.reason,
    ], listed
    assert listed[1] == "send one with: mxrack queue release ID"
    assert relay.mx("forward", "held", "jo@acme.example") == b"no forwarded copies held by the spam gate\n"
    shown = queue_show(relay, q.id)
    assert (shown["held"], shown["hold reason"], shown["expires"], shown["mailbox"]) == (
        "true", q.reason, q.expires, DEMO)

    # Released: sent like any forwarded copy (SRS sender, the message).
    out = relay.mx("queue", "release", q.id).decode()
    assert out == f"{q.id} released (was {q.reason})\n", out
    [t] = sink.wait_delivered(1, rcpt="jo@hotmail.com")
    assert t.rcpt_to == ["jo@hotmail.com"] and t.mail_from == q.mail_from
    assert relayed_body(t.data, qid, "ESMTP", "e2e.test", DEMO) == body
    wait_queue_empty(relay)
    assert relay.mx("forward", "held") == b"no forwarded copies held by the spam gate\n"
    assert relay.uids(DEMO) == before


def test_an_alias_to_an_outside_address_is_a_forward(relay, sink):
    """Issue 11: an alias pointing outside (out@ -> someone@hotmail.com) goes
    through the forwarding path like a forwarding rule: SRS sender, the
    forward gate with hotmail.com's threshold (1.0), the forward transport.
    Before, it was relayed from anyone with the original sender."""
    relay.mx("alias", "add", "out@example.net", "someone@hotmail.com")
    try:
        body = message("alias-out", sender="alice@sender.example", to="out@example.net")
        qid = mx_send(relay, "alice@sender.example", ["out@example.net"], body)
        [t] = sink.wait_delivered(1)
        assert t.rcpt_to == ["someone@hotmail.com"]
        m = SRS0_RE.fullmatch(t.mail_from)
        assert m and (m["domain"], m["local"]) == ("sender.example", "alice"), t.mail_from
        assert relayed_body(t.data, qid, "ESMTP", "e2e.test", "out@example.net", forwarded=True) == body
        wait_queue_empty(relay)
        # Without a Date header it scores MISSING_DATE (>= 1.0): the gate
        # discards the copy to hotmail.com, as it does a forwarding rule's.
        spammy = message("alias-spam", sender="alice@sender.example", to="out@example.net", date=False)
        mx_send(relay, "alice@sender.example", ["out@example.net"], spammy)
        [held] = wait_only_held(relay)
        # An alias's outside target has no mailbox whose rule made it.
        assert (held.recipients, held.mailbox) == (["someone@hotmail.com"], None)
        assert held.reason.startswith("spam gate: score "), held
        assert len(sink.transactions) == 1, "the gated copy is held, not sent"
        stats = relay.mx("forward", "stats").decode()
        assert "hotmail.com" in stats, stats
    finally:
        relay.mx("alias", "remove", "out@example.net")


def test_a_null_sender_from_an_authenticated_user_only_for_reports(relay, sink):
    """MAIL FROM:<> skips the sender-ownership check, so an authenticated
    user may use it only for a DSN, MDN or ARF report (multipart/report);
    anything else gets 553 5.7.1 after DATA."""
    plain = message("null-plain", sender=DEMO, to="someone@example.org")
    with relay.submission(login=(DEMO, relay.password)) as s:
        assert s.mail("")[0] == 250
        assert s.rcpt("someone@example.org")[0] == 250
        code, text = s.data(plain)
        assert code == 553 and text.startswith(b"5.7.1"), (code, text)
    mdn = (
        f"From: <{DEMO}>\r\nTo: <someone@example.org>\r\nSubject: Read: hello\r\n"
        "Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nMessage-ID: <mdn-1@e2e.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nDisplayed.\r\n"
        "--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        "Final-Recipient: rfc822; someone@example.org\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n"
        "--b--\r\n"
    ).encode()
    submit(relay, ["someone@example.org"], mdn, sender="")
    [t] = sink.wait_delivered(1)
    assert t.mail_from == "" and t.rcpt_to == ["someone@example.org"]
    assert t.data.endswith(mdn)


def test_a_bounce_to_the_srs_address_goes_back_to_the_original_sender(relay, sink):
    _, _, t = forward_from_alice(relay, sink, "fwd-bounce")
    srs = t.mail_from
    wait_queue_empty(relay)
    sink.reset()
    bounce = (
        "From: MAILER-DAEMON@hotmail.example\r\n"
        f"To: <{srs}>\r\n"
        "Subject: Undeliverable: fwd-bounce\r\n"
        "\r\n"
        "jo@hotmail.com does not exist.\r\n"
    ).encode()
    with Raw(relay.mx_port) as c:
        c.expect(220)
        c.ehlo("mx.hotmail.example")
        c.cmd("MAIL FROM:<>", 250)
        # Mail systems may change case: the hash is case-insensitive.
        c.cmd(f"RCPT TO:<{srs.lower()}>", "250 2.1.5 Recipient OK")
        c.cmd("RSET", 250)
        c.cmd("MAIL FROM:<>", 250)
        c.cmd(f"RCPT TO:<{srs}>", "250 2.1.5 Recipient OK")
        reply = c.data(bounce)
        assert reply.code == 250, reply.lines
        qid = queued_id(reply.last)
        c.cmd("QUIT", 221)
    [b] = sink.wait_delivered(1)
    assert (b.mail_from, b.rcpt_to) == ("", ["alice@sender.example"])
    assert relayed_body(b.data, qid, "ESMTP", "mx.hotmail.example", srs) == bounce
    wait_gone(relay, qid)


def test_a_forged_or_expired_srs_address_is_refused(relay, sink):
    good = srs0("alice", "sender.example")
    m = SRS0_RE.fullmatch(good)
    other_hash = "".join("B" if ch == "A" else "A" for ch in m["hash"])
    forged_hash = good.replace(f"SRS0={m['hash']}=", f"SRS0={other_hash}=")
    forged_domain = good.replace("=sender.example=", "=evil.example=")
    expired = srs0("alice", "sender.example", int(time.time()) // 86400 - 30)
    with Raw(relay.mx_port) as c:
        c.expect(220)
        c.ehlo()
        c.cmd("MAIL FROM:<>", 250)
        for bad in (forged_hash, forged_domain, expired):
            r = c.cmd(f"RCPT TO:<{bad}>", 550)
            assert r.last.startswith("550 5.1.1 "), (bad, r.lines)
        c.cmd(f"RCPT TO:<{good}>", "250 2.1.5 Recipient OK")
        c.cmd("QUIT", 221)


def test_a_refused_forward_bounces_to_the_original_sender_through_srs(relay, sink):
    sink.rcpt_for["jo@hotmail.com"] = NO_SUCH_USER
    relay.mx("forward", "set", DEMO, "jo@hotmail.com")
    mx_send(relay, "alice@sender.example", [DEMO], message("fwd-refused", sender="alice@sender.example", to=DEMO))
    [d] = sink.wait_delivered(1, "the DSN to alice")
    assert (d.mail_from, d.rcpt_to) == ("", ["alice@sender.example"]), "a DSN has the null sender"
    msg, _, [r], returned = parse_dsn(d.data)
    assert msg["To"] == "<alice@sender.example>"
    assert (r["Final-Recipient"], r["Action"], r["Status"]) == ("rfc822; jo@hotmail.com", "failed", "5.1.1")
    assert b"Subject: fwd-refused\r\n" in returned
    wait_queue_empty(relay)
    ts = sink.transactions
    # Exactly one attempt and one DSN. (Intermittent SERVER BUG seen here:
    # a queue pass woken by the DSN read the queue before the bounced entry
    # was removed and started it again: a second attempt and a second DSN.)
    assert len(ts) == 2, f"expected the refused attempt and one DSN, the sink saw {len(ts)}: {ts}"
    refused = ts[0]
    assert refused.refused == [("jo@hotmail.com", NO_SUCH_USER)] and SRS0_RE.fullmatch(refused.mail_from)


def test_a_message_with_the_null_sender_gets_no_dsn(relay, sink):
    sink.rcpt_for["jo@hotmail.com"] = NO_SUCH_USER
    relay.mx("forward", "set", DEMO, "jo@hotmail.com")
    before = relay.uids(DEMO)
    body = message("null-sender", sender="MAILER-DAEMON@elsewhere.example", to=DEMO)
    qid = mx_send(relay, "", [DEMO], body)
    [t] = sink.wait_for(lambda ts: [t for t in ts if t.refused], "the refused forward")
    assert t.mail_from == "", "the null sender is not rewritten"
    # The forwarded copy's entry is created before the 250 and removed only
    # after its outcome (and any DSN) is settled.
    wait_queue_empty(relay)
    st = relay.one_new_message(DEMO, before)  # the local copy, no DSN
    assert (st.id, st.return_path) == (qid, "")
    assert len(sink.transactions) == 1, "nothing was sent anywhere else"


# --- the queue CLI --------------------------------------------------------------


def test_queue_cli_on_a_deferred_entry(make_server, sink):
    """hold, flush, release, show, delete on a real entry. This server retries
    after an hour, so the entry only moves when the test flushes it."""
    s = make_server(start=False)
    s.relay = {"routes": {"example.org": sink.hop}, "queue_interval_secs": 1,
               "retry_base_secs": 3600, "retry_max_secs": 3600}
    s.write_config()
    s.start()
    rcpt = "later@example.org"
    sink.rcpt_for[rcpt] = TEMPFAIL
    qid = submit(s, [rcpt], message("queue-cli", to=rcpt))
    q = wait_entry(s, qid, lambda q: q.attempts == 1, "the first attempt")
    assert (q.mail_from, q.recipients, q.transport, q.state) == (DEMO, [rcpt], "outbound", "waiting")
    assert TEMPFAIL in q.last_error
    shown = queue_show(s, qid)
    assert {k: shown[k] for k in ("id", "from", "to", "transport", "size", "attempts", "held")} == {
        "id": qid, "from": f"<{DEMO}>", "to": rcpt, "transport": "outbound",
        "size": str(q.size), "attempts": "1", "held": "false",
    }
    assert TEMPFAIL in shown["last error"]
    assert int(shown["next attempt"]) >= time.time() + 0.8 * 3600 - 60

    assert s.mx("queue", "hold", qid) == f"{qid} held\n".encode()
    assert entry(s, qid).state == "held"
    assert queue_show(s, qid)["held"] == "true"
    assert s.mx("queue", "flush", qid) == b"0 queue entries due now\n", "flush leaves held entries"
    assert s.mx("queue", "flush") == b"0 queue entries due now\n"

    assert s.mx("queue", "release", qid) == f"{qid} released\n".encode()
    assert entry(s, qid).state == "waiting"
    assert len(sink.transactions) == 1
    assert s.mx("queue", "flush", qid) == b"1 queue entries due now\n"
    q = wait_entry(s, qid, lambda q: q.attempts == 2, "the flushed attempt")
    assert q.state == "waiting" and len(sink.transactions) == 2

    blob = s.data / "msg" / qid
    assert blob.exists()
    assert s.mx("queue", "delete", qid) == f"{qid} deleted\n".encode()
    assert entry(s, qid) is None
    assert not blob.exists(), "the message file goes with its last reference"
    for args in (("show", qid), ("hold", qid), ("delete", qid), ("show", "not-an-id")):
        r = s.mx_run("queue", *args)
        assert r.returncode != 0, args
    assert s.mx("queue", "list") == b""
    assert len(sink.transactions) == 2, "a deleted entry is neither delivered nor bounced"


def test_a_hold_given_during_an_attempt_is_kept(relay, sink):
    """Queue CLI: an operator's `queue hold` while a delivery
    attempt is in flight is undone when that attempt is deferred: the relay
    writes back the copy of the entry it read before the attempt (held:
    false), so the entry is retried although `queue hold` said "held"."""
    rcpt = "held@example.org"
    sink.rcpt_for[rcpt] = TEMPFAIL
    sink.gate_after(0)  # the first attempt waits at the sink's door
    qid = submit(relay, [rcpt], message("hold-in-flight", to=rcpt))
    sink.wait_parked(1)
    assert relay.mx("queue", "hold", qid) == f"{qid} held\n".encode()
    assert entry(relay, qid).state == "held"
    sink.open_gate()
    q = wait_entry(relay, qid, lambda q: q.attempts == 1, "the attempt to be deferred")
    assert q.state == "held", f"the hold was lost when the attempt was deferred: {q}"

    # Held and due: a pass that delivers a later message must skip it.
    shown = queue_show(relay, qid)
    for _ in deadline_loop(10, "the held entry to be due", interval=0.1):
        if time.time() > int(shown["next attempt"]) + 1:
            break
    submit(relay, ["witness@example.org"], message("witness", to="witness@example.org"))
    sink.wait_delivered(1, rcpt="witness@example.org")
    assert [t for t in sink.transactions if t.refused] != [], "the first attempt"
    assert len([t for t in sink.transactions if (rcpt, TEMPFAIL) in t.refused]) == 1, "no retry while held"
    assert entry(relay, qid).attempts == 1


# --- block lists ----------------------------------------------------------------


def rcpt_reply(server: Server, sender: str, rcpt: str) -> str:
    with Raw(server.mx_port) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"MAIL FROM:<{sender}>", 250)
        r = c.cmd(f"RCPT TO:<{rcpt}>", None)
        c.cmd("QUIT", 221)
    return r.last


def test_block_lists(relay, sink):
    jo = "jo@acme.example"
    try:
        assert relay.mx("block", "add", "spam.example").decode().startswith("spam.example blocked")
        assert relay.mx("block", "add", "news.example", "--account", "demo").decode().startswith(
            "news.example blocked for account demo"
        )
        listed = set(relay.mx("block", "list").decode().splitlines())
        assert listed == {"spam.example\t(global)", "news.example\tdemo"}, listed
        r = relay.mx_run("block", "add", "spam.example")
        assert r.returncode != 0, "duplicates are refused"

        # The global list: every mailbox, subdomains included.
        for rcpt in (DEMO, jo, f"postmaster@example.net"):
            assert rcpt_reply(relay, "x@mail.spam.example", rcpt).startswith("550 5.7.1 "), rcpt
        # The account's list: only that account's mailboxes.
        assert rcpt_reply(relay, "letters@news.example", DEMO).startswith("550 5.7.1 ")
        assert rcpt_reply(relay, "letters@news.example", jo) == "250 2.1.5 Recipient OK"
        assert rcpt_reply(relay, "x@ok.example", DEMO) == "250 2.1.5 Recipient OK"

        # A customer's own submission is not affected by a block on its domain.
        relay.mx("block", "add", "acme.example")
        assert rcpt_reply(relay, "someone@acme.example", DEMO).startswith("550 5.7.1 ")
        before = relay.uids(DEMO)
        submit(relay, [DEMO], message("from-blocked-domain", sender=jo, to=DEMO),
               sender=jo, login=(jo, ACME_PASSWORD))
        st = relay.one_new_message(DEMO, before)
        assert st.return_path == jo and st.proto == "ESMTPSA"

        # Removing lifts it.
        relay.mx("block", "remove", "spam.example")
        relay.mx("block", "remove", "news.example", "--account", "demo")
        relay.mx("block", "remove", "acme.example")
        assert relay.mx("block", "list") == b""
        assert rcpt_reply(relay, "x@mail.spam.example", DEMO) == "250 2.1.5 Recipient OK"
        assert rcpt_reply(relay, "letters@news.example", DEMO) == "250 2.1.5 Recipient OK"
        assert relay.mx_run("block", "remove", "spam.example").returncode != 0
    finally:
        for line in relay.mx("block", "list").decode().splitlines():
            domain, scope = line.split("\t")
            extra = () if scope == "(global)" else ("--account", scope)
            relay.mx("block", "remove", domain, *extra)


# --- what the relay must not send -------------------------------------------------


def test_smtputf8_mail_is_relayed_with_the_smtputf8_parameter(relay, sink):
    """RFC 6531 3.4: "If the envelope or message being sent
    requires the capabilities of the SMTPUTF8 extension, the SMTPUTF8-aware
    SMTP client MUST supply the SMTPUTF8 parameter with the MAIL command."
    The submission was made with SMTPUTF8 to a UTF-8 address; the relay sends
    `MAIL FROM:<demo@example.net> SIZE=.. BODY=8BITMIME` then the UTF-8
    `RCPT TO:<jösé@example.org>` without it."""
    rcpt = "jösé@example.org"
    body = "From: <demo@example.net>\r\nTo: <jösé@example.org>\r\nSubject: ü\r\n\r\nhi\r\n".encode()
    qid = submit(relay, [rcpt], body, mail_options=["SMTPUTF8"])
    [t] = sink.wait_delivered(1)
    assert t.rcpt_to == [rcpt]
    assert relayed_body(t.data, qid, "ESMTPSA", "e2e.test", rcpt) == body
    assert "SMTPUTF8" in t.mail_params, t.mail_params


def test_8bit_data_goes_as_it_is_to_a_server_without_8bitmime(relay, sink, plain_sink):
    """RFC 6152 3 would have the client downgrade to 7-bit MIME or bounce;
    like Postfix, the relay sends 8-bit content as it is instead (a
    downgrade changes signed content, and servers without 8BITMIME take
    8-bit mail in practice). It is delivered, once, byte for byte."""
    rcpt = "someone@outlook.example"
    qid = submit(relay, [rcpt], message("8bit-to-7bit", to=rcpt, extra="caf\u00e9\r\n".encode()))
    wait_gone(relay, qid)
    delivered = plain_sink.delivered()
    assert len(delivered) == 1, delivered
    assert "caf\u00e9".encode() in delivered[0].data
    assert "BODY=8BITMIME" not in delivered[0].mail_params


# --- sessions: reuse, batches, smarthost AUTH ------------------------------------

REUSE_SESSIONS = 3  # relay.per_destination_concurrency of the reuse server
SMART_USER, SMART_PASSWORD = "acct-17", "smarthost-pw-0123"


@pytest.fixture(scope="module")
def reuse_relay(tls_sink):
    """A server with session reuse on (connection_cache_secs = 2, the
    default), at most REUSE_SESSIONS sessions per destination, 150
    recipients per submitted message."""
    s = Server(max_recipients=150)
    s.relay = dict(FAST, connection_cache_secs=2, per_destination_concurrency=REUSE_SESSIONS,
                   total_concurrency=10, routes={"example.org": tls_sink.hop})
    s.write_config()
    s.start()
    yield s
    s.teardown()


def test_many_messages_to_one_destination_arrive_over_few_sessions(reuse_relay, sink):
    n = 40
    rcpts = [f"many-{i}@example.org" for i in range(n)]
    with reuse_relay.submission(login=(DEMO, reuse_relay.password)) as c:
        for i, rcpt in enumerate(rcpts):
            c.sendmail(DEMO, [rcpt], message(f"many-{i}", to=rcpt))
    sink.wait_delivered(n, timeout=60)
    wait_queue_empty(reuse_relay)
    delivered = sink.delivered()
    assert sorted(r for t in delivered for r in t.rcpt_to) == sorted(rcpts), "each exactly once"
    sessions = {t.connection for t in sink.transactions}
    assert 1 <= sink.connections <= REUSE_SESSIONS, (sink.connections, sessions)
    assert max(sum(t.connection == c for t in delivered) for c in sessions) >= n // REUSE_SESSIONS
    # After a completed DATA the next MAIL FROM follows directly (RFC 5321
    # 4.1.1.4): no RSET, no new EHLO.
    for number, lines in sink.transcripts.items():
        commands = [l for l in lines if l.startswith("C: ")]
        assert "C: RSET" not in commands, (number, commands)
        assert sum(l.startswith("C: EHLO") for l in commands) == 2, (number, commands)  # before and after STARTTLS
    # The idle sessions are closed after connection_cache_secs.
    sink.wait_idle(timeout=10)


def test_a_message_to_many_recipients_goes_in_transactions_of_100(reuse_relay, sink):
    rcpts = [f"crowd-{i}@example.org" for i in range(150)]
    submit(reuse_relay, rcpts, message("crowd"))
    sink.wait_delivered(2, timeout=30)
    wait_queue_empty(reuse_relay)
    delivered = sink.delivered()
    assert [len(t.rcpt_to) for t in delivered] == [100, 50], [len(t.rcpt_to) for t in delivered]
    assert [r for t in delivered for r in t.rcpt_to] == rcpts, "in order, each once"
    assert len({t.connection for t in delivered}) == 1, "over one session"
    assert delivered[0].data == delivered[1].data


def test_a_4xx_for_one_recipient_of_a_batch_retries_only_that_recipient(reuse_relay, sink):
    ok1, later, gone, ok2 = (f"{w}@example.org" for w in ("batch-ok1", "batch-later", "batch-gone", "batch-ok2"))
    sink.rcpt_for[later] = TEMPFAIL
    sink.rcpt_for[gone] = NO_SUCH_USER
    before = reuse_relay.uids(DEMO)
    qid = submit(reuse_relay, [ok1, later, gone, ok2], message("batch"))
    [first] = sink.wait_delivered(1)
    assert first.rcpt_to == [ok1, ok2]
    assert first.refused == [(later, TEMPFAIL), (gone, NO_SUCH_USER)]
    # The entry keeps the deferred recipient only; the refused one bounces alone.
    q = wait_entry(reuse_relay, qid, lambda q: q.attempts == 1, "the first attempt")
    assert q.recipients == [later], q
    [raw] = wait_new_messages(reuse_relay, DEMO, before)
    _, _, [r], _ = parse_dsn(raw)
    assert (r["Final-Recipient"], r["Action"]) == (f"rfc822; {gone}", "failed")
    del sink.rcpt_for[later]
    wait_gone(reuse_relay, qid)
    delivered = sink.delivered()
    assert [t.rcpt_to for t in delivered] == [[ok1, ok2], [later]], delivered
    assert delivered[0].data == delivered[1].data


@pytest.fixture
def auth_sink(tmp_path_factory):
    """A smarthost that wants AUTH (offered after STARTTLS only)."""
    s = Sink(tls=True, cert_dir=tmp_path_factory.mktemp("auth-sink-certs"),
             auth={SMART_USER: SMART_PASSWORD}).start()
    yield s
    s.stop()


def smarthost_server(make_server, hop: str):
    s = make_server(start=False)
    s.relay = dict(FAST, smarthost=hop, smarthost_username=SMART_USER,
                   smarthost_password=SMART_PASSWORD)
    s.write_config()
    s.start()
    return s


def test_the_smarthost_gets_auth_plain_inside_tls(make_server, auth_sink):
    s = smarthost_server(make_server, auth_sink.hop)
    rcpt = "someone@far-away.example"
    qid = submit(s, [rcpt], message("smarthost", to=rcpt))
    [t] = auth_sink.wait_delivered(1)
    wait_gone(s, qid)
    assert (t.tls, t.auth_user, t.rcpt_to) == (True, SMART_USER, [rcpt])
    assert auth_sink.auth_log == [(1, "PLAIN", SMART_USER, True, True)]
    # The password (plain or in the AUTH PLAIN token) is in no log line.
    token = base64.b64encode(f"\0{SMART_USER}\0{SMART_PASSWORD}".encode())
    log = s.stderr_path.read_bytes()
    assert b"delivered" in log and SMART_PASSWORD.encode() not in log and token not in log


def test_smarthost_credentials_are_never_sent_in_plaintext(make_server):
    """A smarthost that offers AUTH without STARTTLS gets neither the
    credentials nor the mail: the message waits, deferred, saying why."""
    with Sink(auth={SMART_USER: SMART_PASSWORD}, auth_in_clear=True) as careless:
        s = smarthost_server(make_server, careless.hop)
        rcpt = "someone@far-away.example"
        qid = submit(s, [rcpt], message("cleartext", to=rcpt))
        q = wait_entry(s, qid, lambda q: q.attempts >= 1, "the first attempt")
        assert "credentials are never sent in plaintext" in q.last_error, q.last_error
        assert careless.connections >= 1
        sent = [l for lines in careless.transcripts.values() for l in lines if l.startswith("C: ")]
        assert not any(l.upper().startswith(("C: AUTH", "C: MAIL")) for l in sent), sent
        assert careless.auth_log == [] and careless.transactions == []


# --- maximum age ----------------------------------------------------------------


def config_with_relay(tmp_path, relay_lines: str):
    mx, = free_ports(1)
    f = tmp_path / "mxrack.toml"
    f.write_text(
        "[appliance]\nhostname = \"mx.test.example\"\nprimary_domain = \"example.net\"\n"
        f"data_dir = \"{tmp_path / 'data'}\"\n\n[smtp]\nmx = [\"{HOST}:{mx}\"]\n\n"
        f"[relay]\n{relay_lines}\n"
    )
    return subprocess.run([BIN, "config", "check", str(f)], capture_output=True, timeout=30)


def test_relay_config_bounds(tmp_path):
    ok = config_with_relay(tmp_path, "max_age_secs = 60\nroutes = { \"example.org\" = \"127.0.0.1:2626\" }")
    assert ok.returncode == 0, ok.stderr
    for line, key in [
        ("max_age_secs = 59", "relay.max_age_secs"),
        ("retry_base_secs = 0", "relay.retry_base_secs"),
        ("retry_base_secs = 10\nretry_max_secs = 5", "relay.retry_base_secs"),
        ("queue_interval_secs = 0", "relay.queue_interval_secs"),
        ("routes = { \"example.org\" = \"nohost\" }", "relay.routes"),
        ("smarthost = \"127.0.0.1:0\"", "relay.smarthost"),
    ]:
        r = config_with_relay(tmp_path, line)
        assert r.returncode == 78, (line, r.stdout, r.stderr)
        assert key in r.stderr.decode(), (line, r.stderr)


@pytest.mark.skipif(
    not os.environ.get("MXRACK_E2E_SLOW"),
    reason="relay.max_age_secs is at least 60 s, so an expiry takes over a "
    "minute (over this suite's 30 s budget per test); MXRACK_E2E_SLOW=1 runs it",
)
def test_an_entry_older_than_max_age_bounces(make_server, sink):
    """A message deferred past max_age_secs bounces at its next attempt. The
    server retries after an hour, so the entry waits, untouched, until the
    test flushes it once it is older than the maximum age."""
    s = make_server(start=False)
    s.relay = {"routes": {"example.org": sink.hop}, "queue_interval_secs": 1,
               "retry_base_secs": 3600, "retry_max_secs": 3600, "max_age_secs": 60}
    s.write_config()
    s.start()
    rcpt = "slow@example.org"
    sink.rcpt_for[rcpt] = TEMPFAIL
    before = s.uids(DEMO)
    qid = submit(s, [rcpt], message("max-age", to=rcpt))
    wait_entry(s, qid, lambda q: q.attempts == 1, "the first attempt")
    created = int(queue_show(s, qid)["created"])
    for _ in deadline_loop(90, "the entry to pass max_age_secs", interval=0.5):
        if time.time() > created + 61:
            break
    assert s.mx("queue", "flush", qid) == b"1 queue entries due now\n"
    wait_gone(s, qid, timeout=30)
    [raw] = wait_new_messages(s, DEMO, before)
    _, _, [r], _ = parse_dsn(raw)
    assert (r["Final-Recipient"], r["Action"]) == (f"rfc822; {rcpt}", "failed")
    assert r["Status"] == "5.3.0", "the 4.3.0 made permanent"
    assert "gave up after 2 attempts" in r["Diagnostic-Code"]
    assert TEMPFAIL in r["Diagnostic-Code"]
    assert len(sink.transactions) == 2
