"""Refusals and limits, exchange by exchange on a raw socket: relay, unknown
users, size (declared and actual), bare LF/CR in DATA (SMTP smuggling),
AUTH and TLS order on submission, failed-AUTH limiting, recipients per
transaction, command line length, bad commands, VRFY/EXPN, sender ownership.

The module's server has max_message_bytes=65536, max_recipients=100,
max_command_line_bytes=512, max_bad_commands=5; [auth] pair_attempts_max=3.
Tests that spend AUTH failures start their own server: the limiter counts
per client address, and every test connects from 127.0.0.1."""

from __future__ import annotations

import pytest

from mxlib import DEMO, HOSTNAME, Raw, b64, plain_token, split_stored

MAX_BYTES = 65536
RELAY_DENIED = "554 5.7.1 Relay access denied"
UNKNOWN_USER = "550 5.1.1 Recipient address rejected: no such user here"
TOO_BIG = f"552 5.3.4 Message size exceeds fixed limit of {MAX_BYTES} bytes"
BARE_NEWLINE = "521 5.5.2 Bare <LF> or <CR> received, closing connection"
TLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_LIMITED = "454 4.7.0 Too many authentication attempts, try again later"
SENDER_OK = "250 2.1.0 Sender OK"
RCPT_OK = "250 2.1.5 Recipient OK"
NOT_OWNED = "553 5.7.1 Sender address rejected: not owned by the authenticated user"
UNRECOGNIZED = "500 5.5.2 Command unrecognized"
LINE_TOO_LONG = "500 5.5.2 Line too long"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"


def mx_session(server) -> Raw:
    c = Raw(server.mx_port)
    c.expect(f"220 {HOSTNAME} ESMTP mxrack")
    c.ehlo()
    return c


def authenticated(server, user: str = DEMO, password: str | None = None) -> Raw:
    """A submissions (implicit TLS) session after EHLO and AUTH PLAIN."""
    c = Raw(server.submissions_port, tls=True)
    c.expect(220)
    c.ehlo()
    c.cmd(f"AUTH PLAIN {plain_token(user, password or server.password)}", AUTH_OK)
    return c


def sized_body(n: int, tag: str = "big") -> bytes:
    """A message of exactly n bytes: CRLF line ends, lines of at most 82 bytes."""
    out = bytearray(f"Subject: {tag}\r\n\r\n".encode())
    while n - len(out) > 82:
        out += b"x" * 78 + b"\r\n"
    rest = n - len(out)
    assert rest >= 3
    out += b"y" * (rest - 2) + b"\r\n"
    assert len(out) == n
    return bytes(out)


@pytest.fixture(scope="module")
def users(server):
    """other@example.net (another mailbox) and sales@example.net (an alias of demo)."""
    server.add_mailbox("other@example.net", "other-secret-1")
    server.mx("alias", "add", "sales@example.net", DEMO)
    return server


def test_relay_is_denied_on_mx_and_the_session_goes_on(server):
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd("RCPT TO:<x@other.example>", RELAY_DENIED)
        c.cmd("RCPT TO:<postmaster@other.example>", RELAY_DENIED)
        c.cmd("DATA", "503 5.5.1 Bad sequence of commands: need RCPT before DATA")
        c.cmd("RCPT TO:<DEMO@Example.NET>", RCPT_OK)
        c.cmd("QUIT", f"221 2.0.0 {HOSTNAME} closing connection")
        c.expect_closed()


def test_unknown_user_in_hosted_domain(server):
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd("RCPT TO:<nobody@example.net>", UNKNOWN_USER)
        c.cmd("RCPT TO:<demo@example.net>", RCPT_OK)


def test_permanent_address_errors_get_permanent_replies(server):
    """An address this server will never take is a 5xx, never a 4xx the
    sender would retry for days. (Quoted local parts and address literals
    are valid RFC 5321 addresses; on the MX port they are not hosted here.)"""
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd('RCPT TO:<"john smith"@other.example>', RELAY_DENIED)
        c.cmd("RCPT TO:<x@[192.0.2.1]>", RELAY_DENIED)
    with authenticated(server) as c:
        c.cmd(f"MAIL FROM:<{DEMO}>", SENDER_OK)
        r = c.cmd('RCPT TO:<"john smith"@example.org>', None)
        assert r.code // 100 != 4, f"temporary failure for a valid external address: {r.lines}"


def test_non_ascii_address_needs_smtputf8(server):
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<jörg@b.example>", "553 5.6.7 Non-ASCII address requires SMTPUTF8")
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd("RCPT TO:<jörg@example.net>", "553 5.6.7 Non-ASCII address requires SMTPUTF8")
        c.cmd("RSET", "250 2.0.0 OK")
        c.cmd("MAIL FROM:<jörg@b.example> SMTPUTF8", SENDER_OK)
        c.cmd("RCPT TO:<jörg@example.net>", UNKNOWN_USER)


def test_declared_size_over_the_limit(server):
    with mx_session(server) as c:
        c.cmd(f"MAIL FROM:<a@b.example> SIZE={MAX_BYTES + 1}", TOO_BIG)
        c.cmd(f"MAIL FROM:<a@b.example> SIZE={MAX_BYTES}", SENDER_OK)


def test_actual_size_over_the_limit_then_the_next_message_is_accepted(server):
    before = server.uids(DEMO)
    at_limit = sized_body(MAX_BYTES, "at-limit")
    over = sized_body(MAX_BYTES + 1, "over")
    after = b"Subject: after\r\n\r\nthe session goes on\r\n"
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd(f"RCPT TO:<{DEMO}>", RCPT_OK)
        assert c.data(over).last == TOO_BIG
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd(f"RCPT TO:<{DEMO}>", RCPT_OK)
        assert c.data(at_limit).code == 250
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd(f"RCPT TO:<{DEMO}>", RCPT_OK)
        assert c.data(after).code == 250
    stored = [split_stored(m).body for m in server.new_messages(DEMO, before)]
    assert stored == [at_limit, after]


def test_over_long_data_line_is_stored_as_it_is(server):
    # Lines over smtp.max_data_line_bytes (unwrapped HTML newsletters) are
    # not bounced (Postfix accepts them): stored byte for byte (issue 10).
    before = server.uids(DEMO)
    body = b"Subject: long\r\n\r\n" + b"x" * 9000 + b"\r\n.dot " + b"y" * 20000 + b"\r\nend\r\n"
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd(f"RCPT TO:<{DEMO}>", RCPT_OK)
        assert c.data(body).code == 250
        c.cmd("NOOP", "250 2.0.0 OK")
    stored = [split_stored(m).body for m in server.new_messages(DEMO, before)]
    assert stored == [body]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"Subject: bare lf\r\n\r\nline\n.\r\n", id="bare-lf"),
        pytest.param(b"Subject: bare cr\r\n\r\nli\rne\r\n.\r\n", id="bare-cr"),
        pytest.param(
            b"Subject: smuggle\r\n\r\nhello\r\n\n.\n"
            b"MAIL FROM:<evil@other.example>\r\nRCPT TO:<demo@example.net>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n.\r\n",
            id="smuggling-lf-dot-lf",
        ),
        pytest.param(
            b"Subject: smuggle\r\n\r\nhello\r\n.\r"
            b"MAIL FROM:<evil@other.example>\r\nRCPT TO:<demo@example.net>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n.\r\n",
            id="smuggling-crlf-dot-cr",
        ),
    ],
)
def test_bare_newline_in_data_is_refused_and_the_connection_closed(server, payload):
    before = server.uids(DEMO)
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd(f"RCPT TO:<{DEMO}>", RCPT_OK)
        c.cmd("DATA", 354)
        c.send_raw(payload)
        c.expect(BARE_NEWLINE)
        c.expect_closed()
    assert server.new_messages(DEMO, before) == []


def test_submission_needs_tls_then_auth(server):
    with Raw(server.submission_port) as c:
        c.expect(f"220 {HOSTNAME} ESMTP mxrack")
        ext = c.ehlo()
        assert "STARTTLS" in ext and not any(e.startswith("AUTH") for e in ext)
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, server.password)}", TLS_FIRST)
        c.cmd(f"MAIL FROM:<{DEMO}>", TLS_FIRST)
        c.starttls()
        c.cmd(f"MAIL FROM:<{DEMO}>", "503 5.5.1 Bad sequence of commands: send HELO/EHLO first")
        ext = c.ehlo()
        assert "AUTH PLAIN LOGIN" in ext and "STARTTLS" not in ext
        c.cmd(f"MAIL FROM:<{DEMO}>", AUTH_REQUIRED)
        c.cmd("STARTTLS", "503 5.5.1 Bad sequence of commands: TLS already active")
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, server.password)}", AUTH_OK)
        c.cmd(f"MAIL FROM:<{DEMO}>", SENDER_OK)


def test_submissions_needs_auth_and_refuses_starttls(server):
    with Raw(server.submissions_port, tls=True) as c:
        c.expect(220)
        c.ehlo()
        c.cmd("STARTTLS", "503 5.5.1 Bad sequence of commands: TLS already active")
        c.cmd(f"MAIL FROM:<{DEMO}>", AUTH_REQUIRED)


def test_no_auth_on_the_mx_port(server):
    with mx_session(server) as c:
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, server.password)}", "502 5.5.1 AUTH is not available on this port")


def test_wrong_passwords_then_the_pair_is_limited(make_server):
    s = make_server()
    with Raw(s.submissions_port, tls=True) as c:
        c.expect(220)
        c.ehlo()
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, 'wrong-1')}", AUTH_FAILED)
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, 'wrong-2')}", AUTH_FAILED)
        c.cmd(f"AUTH PLAIN {plain_token('nobody@example.net', 'x')}", AUTH_FAILED)
    # The count is per (network, account), across sessions and ports.
    with Raw(s.submissions_port, tls=True) as c:
        c.expect(220)
        c.ehlo()
        c.cmd("AUTH LOGIN", 334)
        c.cmd(b64(DEMO), 334)
        c.cmd(b64("wrong-3"), AUTH_FAILED)
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, s.password)}", AUTH_LIMITED)
        c.cmd(f"MAIL FROM:<{DEMO}>", AUTH_REQUIRED)
    with Raw(s.submission_port) as c:
        c.expect(220)
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.cmd(f"AUTH PLAIN {plain_token(DEMO, s.password)}", AUTH_LIMITED)


def test_over_long_auth_response_gets_a_reply(server):
    """Invariant 'every input has a limit': an AUTH response over the AUTH
    line limit (12288 + CRLF) gets an SMTP reply, not a silent close."""
    with Raw(server.submissions_port, tls=True) as c:
        c.expect(220)
        c.ehlo()
        c.cmd("AUTH PLAIN", "334 ")
        c.send("A" * 13_000)
        r = c.expect(None)
        assert r.code // 100 == 5, r.lines
        c.cmd("NOOP", "250 2.0.0 OK")


def test_a_success_resets_its_own_pair(make_server):
    s = make_server()
    for _ in range(3):
        with Raw(s.submissions_port, tls=True) as c:
            c.expect(220)
            c.ehlo()
            c.cmd(f"AUTH PLAIN {plain_token(DEMO, 'wrong')}", AUTH_FAILED)
            c.cmd(f"AUTH PLAIN {plain_token(DEMO, 'wrong')}", AUTH_FAILED)
            c.cmd(f"AUTH PLAIN {plain_token(DEMO, s.password)}", AUTH_OK)


def test_too_many_recipients_and_duplicates_deliver_once(server):
    before = server.uids(DEMO)
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        # PIPELINING: all 101 RCPTs in one write, then the 101 replies.
        c.send_raw(b"".join(f"RCPT TO:<{DEMO}>\r\n".encode() for _ in range(101)))
        for i in range(100):
            c.expect(RCPT_OK)
        c.expect("452 4.5.3 Too many recipients")
        r = c.data(b"Subject: 100 rcpts\r\n\r\none copy\r\n")
        assert r.code == 250, r.lines
    new = server.new_messages(DEMO, before)
    assert len(new) == 1, "100 RCPTs of one mailbox must deliver one copy"
    st = split_stored(new[0])
    assert st.for_ is None and st.body == b"Subject: 100 rcpts\r\n\r\none copy\r\n"


def test_command_line_limit_and_the_session_goes_on(server):
    limit = 512  # CRLF included
    with mx_session(server) as c:
        fits = "NOOP " + "x" * (limit - 2 - 5)
        assert len(fits) + 2 == limit
        c.cmd(fits, "250 2.0.0 OK")
        c.cmd(fits + "x", LINE_TOO_LONG)
        c.cmd("NOOP", "250 2.0.0 OK")
        c.cmd("NOOP " + "y" * 200_000, LINE_TOO_LONG)
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd(f"RCPT TO:<{DEMO}>", RCPT_OK)


def test_too_many_commands_in_one_transaction_close_the_session(server):
    """max_commands_per_transaction = 200 (the default): MAIL opens the
    transaction, the 200 commands after it are answered, the 201st closes."""
    with mx_session(server) as c:
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.send_raw(b"NOOP\r\n" * 201)
        for _ in range(200):
            c.expect("250 2.0.0 OK")
        c.expect("421 4.7.0 Too many commands in one transaction, closing connection")
        c.expect_closed()
    with mx_session(server) as c:
        # RSET ends the transaction: the count starts again with the next MAIL.
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.send_raw(b"NOOP\r\n" * 199 + b"RSET\r\n")
        for _ in range(200):
            c.expect("250 2.0.0 OK")
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.send_raw(b"NOOP\r\n" * 200)
        for _ in range(200):
            c.expect("250 2.0.0 OK")


def test_too_many_bad_commands_close_the_session(server):
    with mx_session(server) as c:
        c.cmd("FOO", UNRECOGNIZED)
        c.cmd("MAIL FROM:nobrackets@b.example",
              "501 5.5.4 Syntax error: the address must be in angle brackets")
        c.cmd("NOOP " + "x" * 600, LINE_TOO_LONG)
        c.cmd("EHLO", "501 5.5.4 Syntax error: a host name is required")
        # Replies that refuse a good command do not count.
        c.cmd("RCPT TO:<demo@example.net>", "503 5.5.1 Bad sequence of commands: need MAIL before RCPT")
        c.cmd("VRFY demo", "502 5.5.1 VRFY command is disabled")
        c.cmd("BAR", UNRECOGNIZED)
        c.expect(TOO_MANY_ERRORS)
        c.expect_closed()


def test_vrfy_and_expn_are_disabled(server):
    with mx_session(server) as c:
        c.cmd(f"VRFY {DEMO}", "502 5.5.1 VRFY command is disabled")
        c.cmd("EXPN staff", "502 5.5.1 EXPN command is disabled")
        c.cmd("HELP", "214 2.0.0 See RFC 5321")


def test_sequence_errors(server):
    with Raw(server.mx_port) as c:
        c.expect(220)
        c.cmd("MAIL FROM:<a@b.example>", "503 5.5.1 Bad sequence of commands: send HELO/EHLO first")
        c.ehlo()
        c.cmd("RCPT TO:<demo@example.net>", "503 5.5.1 Bad sequence of commands: need MAIL before RCPT")
        c.cmd("DATA", "503 5.5.1 Bad sequence of commands: need MAIL before DATA")
        c.cmd("MAIL FROM:<a@b.example>", SENDER_OK)
        c.cmd("MAIL FROM:<a@b.example>", "503 5.5.1 Bad sequence of commands: nested MAIL command")
        c.cmd("MAIL FROM:<a@b.example> RET=FULL", "555 5.5.4 Unsupported parameter RET=FULL")


def test_foreign_protocol_is_closed(server):
    with Raw(server.mx_port) as c:
        c.expect(220)
        c.cmd("GET / HTTP/1.1", "521 5.7.0 This is an SMTP server, closing connection")
        c.expect_closed()


def test_sender_must_be_owned_by_the_authenticated_user(users):
    server = users
    with authenticated(server) as c:
        c.cmd("MAIL FROM:<other@example.net>", NOT_OWNED)
        c.cmd("MAIL FROM:<someone@example.org>", NOT_OWNED)
        c.cmd("MAIL FROM:<nobody@example.net>", NOT_OWNED)
        c.cmd("MAIL FROM:<sales@example.net>", SENDER_OK)  # an alias of demo
        c.cmd("RSET", "250 2.0.0 OK")
        c.cmd("MAIL FROM:<Demo@Example.NET>", SENDER_OK)
    with authenticated(server, "other@example.net", "other-secret-1") as c:
        c.cmd(f"MAIL FROM:<{DEMO}>", NOT_OWNED)
        c.cmd("MAIL FROM:<sales@example.net>", NOT_OWNED)
        c.cmd("MAIL FROM:<other@example.net>", SENDER_OK)
