"""Sessions at once, idle timeout, and SIGTERM: open sessions get 421 4.3.2,
a transaction in DATA is finished and acknowledged first, and the process
exits 0 in time."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from mxlib import DEMO, HOST, HOSTNAME, Raw, deadline_loop, split_stored

BANNER = f"220 {HOSTNAME} ESMTP mxrack"
TOO_MANY = f"421 4.7.0 {HOSTNAME} too many connections, try again later"
SHUTTING_DOWN = f"421 4.3.2 {HOSTNAME} service shutting down, closing connection"


def test_each_listener_has_its_own_pool_and_permits_come_back(make_server):
    s = make_server(max_connections=2)
    c1 = Raw(s.mx_port)
    c1.expect(BANNER)
    c2 = Raw(s.mx_port)
    c2.expect(BANNER)
    with Raw(s.mx_port) as c3:
        c3.expect(TOO_MANY)
        c3.expect_closed()
    # A full MX pool takes nothing from submission or submissions.
    with Raw(s.submission_port) as c4:
        c4.expect(BANNER)
        c4.ehlo()
    t1, t2 = Raw(s.submissions_port, tls=True), Raw(s.submissions_port, tls=True)
    t1.expect(BANNER)
    t2.expect(BANNER)
    # Over its cap, port 465 answers inside TLS (the handshake succeeds,
    # then the 421 is read through it).
    with Raw(s.submissions_port, tls=True) as t3:
        t3.expect(TOO_MANY)
        t3.expect_closed()
    t1.close()
    t2.close()
    # The two sessions still work.
    c1.ehlo()
    c2.ehlo()
    c1.cmd("QUIT", f"221 2.0.0 {HOSTNAME} closing connection")
    c1.expect_closed()
    c1.close()
    # Its permit comes back (asynchronously): a new session gets a banner.
    for _ in deadline_loop(5, "a connection permit to be returned"):
        with Raw(s.mx_port) as c:
            if c.reply().last == BANNER:
                c.ehlo()
                break
    c2.close()


def test_idle_session_times_out(make_server):
    s = make_server(idle_timeout_secs=10)
    with Raw(s.mx_port, timeout=30) as c:
        c.expect(BANNER)
        c.ehlo()
        start = time.monotonic()
        c.expect(f"421 4.4.2 {HOSTNAME} timeout exceeded, closing connection")
        waited = time.monotonic() - start
        c.expect_closed()
    assert 9 <= waited <= 20, f"idle timeout after {waited:.1f}s, configured 10s"


def test_sigterm_gives_open_sessions_421_and_exits_0(make_server):
    s = make_server(shutdown_grace_secs=5)
    idle = Raw(s.mx_port)
    idle.expect(BANNER)
    mid = Raw(s.submissions_port, tls=True)
    mid.expect(BANNER)
    mid.ehlo()
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    idle.expect(SHUTTING_DOWN)
    idle.expect_closed()
    mid.expect(SHUTTING_DOWN)
    mid.expect_closed()
    rc = s.proc.wait(timeout=10)
    elapsed = time.monotonic() - start
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert elapsed < 4, f"exit took {elapsed:.1f}s with every session gone"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, s.mx_port), timeout=5)
    idle.close()
    mid.close()


def test_sigterm_during_data_acknowledges_the_message_then_421(make_server):
    s = make_server(shutdown_grace_secs=5)
    body = b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    before = s.uids(DEMO)
    with Raw(s.mx_port) as c:
        c.expect(BANNER)
        c.ehlo()
        c.cmd("MAIL FROM:<a@b.example>", "250 2.1.0 Sender OK")
        c.cmd(f"RCPT TO:<{DEMO}>", "250 2.1.5 Recipient OK")
        c.cmd("DATA", 354)
        c.send_raw(body[:30])
        s.proc.send_signal(signal.SIGTERM)
        for _ in deadline_loop(5, "the server to log that it is stopping"):
            if "stopping: no new connections" in s.stderr_tail():
                break
        c.send_raw(body[30:] + b".\r\n")
        assert c.expect(250).last.startswith("250 2.0.0 OK: queued as ")
        c.expect(SHUTTING_DOWN)
        c.expect_closed()
    assert s.proc.wait(timeout=10) == 0
    # The server is gone: the CLI opens the store itself.
    st = split_stored(s.new_messages(DEMO, before)[0])
    assert st.body == body


def test_admin_socket_listens_when_ready_is_printed(make_server):
    """README: 'mxrack ready' is printed when every listener is up, and while
    the server runs the CLI goes through DATA/admin.sock. If the socket is
    not listening yet, a CLI command falls back to opening the store, which
    the server holds: 'Database already open. Cannot acquire lock.'"""
    s = make_server(start=False)
    late = []
    for i in range(20):
        s.start()
        if not s.admin_listening_at_ready:
            late.append(i)
        s.stop()  # its exit code is test_sigterm_right_after_ready_exits_0's business
    assert not late, (
        f"{len(late)} of 20 starts: DATA/admin.sock did not accept a connection "
        f"when 'mxrack ready:' was printed (starts {late})"
    )


def test_sigterm_right_after_ready_exits_0(make_server):
    """SIGTERM as soon as 'mxrack ready:' is out must be the orderly stop
    (exit 0), not the default action of the signal (killed, -15)."""
    s = make_server(start=False)
    codes = []
    for _ in range(10):
        s.start()
        codes.append(s.stop())
    assert codes == [0] * 10, (
        f"exit codes of 10 starts stopped right after 'mxrack ready:': {codes} "
        "(-15: killed by SIGTERM before its handler was installed)"
    )
